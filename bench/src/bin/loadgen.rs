//! The load generator of the benchmark suite: one WebSocket client for every
//! server under test (Switchyard, the bare axum ceiling, Daphne + Channels).
//!
//! Each scenario is a subcommand that connects to a URL, runs for a bounded
//! time and prints one JSON object on stdout (the `idle` scenario prints two
//! lines: one when every connection is open, one at the end). It is what
//! `bench/run.sh` drives; it can be run by hand against any server speaking
//! the Channels tutorial protocol:
//!
//! ```text
//! loadgen echo   --url ws://127.0.0.1:8000/ws/echo/ --conns 50 --secs 10
//! loadgen echo   --url ws://127.0.0.1:8000/ws/chat/ --rooms --conns 50 --secs 10
//! loadgen fanout --url ws://127.0.0.1:8000/ws/chat/bench/ --subs 1000 --rate 100 --secs 10
//! loadgen idle   --url ws://127.0.0.1:8000/ws/echo/ --conns 3750 --src 127.0.0.2 --hold-file /tmp/x
//! loadgen churn  --url ws://127.0.0.1:8000/ws/echo/ --workers 16 --secs 10
//! loadgen wake   --url ws://127.0.0.1:8000/ws/chat/ --conns 200 --go-file /tmp/y
//! loadgen --ca-file ca.pem echo --url wss://127.0.0.1:8443/ws/echo/ --conns 50 --secs 10
//! ```
//!
//! `wss://` URLs are verified against the PEM certificates in `--ca-file`
//! (rustls, ring, ALPN `http/1.1`), by the URL's host name or IP address.
//!
//! Benchmarks are not tests: nothing here asserts a timing.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand};
use futures_util::{SinkExt as _, StreamExt as _};
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

type Ws = WebSocketStream<Conn>;

#[derive(Debug, Parser)]
#[command(name = "loadgen", about = "WebSocket load generator for bench/run.sh")]
struct Cli {
    /// Trust the PEM certificates in this file for `wss://` URLs.
    #[arg(long, global = true)]
    ca_file: Option<PathBuf>,
    #[command(subcommand)]
    scenario: Scenario,
}

/// A client connection: plain TCP for `ws://`, TLS for `wss://`. An enum
/// rather than a boxed trait object, so plain runs pay one branch per read
/// or write and nothing more.
enum Conn {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl tokio::io::AsyncRead for Conn {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => std::pin::Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl tokio::io::AsyncWrite for Conn {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => std::pin::Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => std::pin::Pin::new(s).poll_flush(cx),
            Self::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => std::pin::Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The TLS client for `wss://` URLs, from `--ca-file`.
static TLS: OnceLock<tokio_rustls::TlsConnector> = OnceLock::new();

fn tls_connector(ca_file: &std::path::Path) -> anyhow::Result<tokio_rustls::TlsConnector> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_file)
        .with_context(|| format!("reading {}", ca_file.display()))?
    {
        roots.add(cert.with_context(|| format!("parsing {}", ca_file.display()))?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// Closed-loop echo round trips: each connection sends a text frame and
    /// waits for it to come back before sending the next.
    Echo(EchoArgs),
    /// One chat room of many subscribers and one publisher at a fixed rate.
    Fanout(FanoutArgs),
    /// Open many connections, report, and hold them until told to stop.
    Idle(IdleArgs),
    /// Connect, close, repeat, from several workers at once.
    Churn(ChurnArgs),
    /// First-call latency after idling: chat connections, each alone in
    /// its own room, wait (for hibernation) until told to go, then each in
    /// turn sends one message and times its reply, then a second one.
    Wake(WakeArgs),
}

#[derive(Debug, Args)]
struct WakeArgs {
    /// The chat URL prefix; connection `i` uses `<url>wake-<i>/`.
    #[arg(long)]
    url: String,
    #[arg(long, default_value_t = 200)]
    conns: usize,
    /// Start sending once this file exists ...
    #[arg(long)]
    go_file: PathBuf,
    /// ... or after this many seconds at most.
    #[arg(long, default_value_t = 120.0)]
    max_wait: f64,
}

#[derive(Debug, Args)]
struct EchoArgs {
    #[arg(long)]
    url: String,
    #[arg(long, default_value_t = 50)]
    conns: usize,
    /// Measured seconds (after the warm-up).
    #[arg(long, default_value_t = 10.0)]
    secs: f64,
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Payload bytes per frame.
    #[arg(long, default_value_t = 32)]
    size: usize,
    /// Chat rooms: `--url` is a chat URL prefix, connection `i` joins its
    /// own room `<url>rtt<i>/` and sends `{"message": payload}`, and a round
    /// trip ends at the room's broadcast back to it (the chat's echo path).
    #[arg(long)]
    rooms: bool,
}

#[derive(Debug, Args)]
struct FanoutArgs {
    /// The room URL the publisher uses (and the subscribers, unless
    /// `--sub-url` is given).
    #[arg(long)]
    url: String,
    /// Room URLs the subscribers use, round robin (e.g. two processes
    /// sharing a Redis layer). Repeatable.
    #[arg(long)]
    sub_url: Vec<String>,
    #[arg(long, default_value_t = 1000)]
    subs: usize,
    /// Messages per second from the publisher.
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// Seconds of publishing.
    #[arg(long, default_value_t = 10.0)]
    secs: f64,
    /// After publishing: stop waiting for deliveries once none arrived for
    /// this long ...
    #[arg(long, default_value_t = 3.0)]
    quiet: f64,
    /// ... or this long after the last publish at the latest.
    #[arg(long, default_value_t = 20.0)]
    max_drain: f64,
}

#[derive(Debug, Args)]
struct IdleArgs {
    #[arg(long)]
    url: String,
    #[arg(long)]
    conns: usize,
    /// Source addresses (127.0.0.x), round robin. Repeatable.
    #[arg(long)]
    src: Vec<IpAddr>,
    /// Handshakes in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Hold the connections until this file exists ...
    #[arg(long)]
    hold_file: Option<PathBuf>,
    /// ... or for this many seconds at most.
    #[arg(long, default_value_t = 120.0)]
    max_hold: f64,
    /// Connections not open this many seconds after the start count as
    /// failed (a server that slows down as it fills up still ends the run).
    #[arg(long, default_value_t = 150.0)]
    deadline: f64,
}

#[derive(Debug, Args)]
struct ChurnArgs {
    #[arg(long)]
    url: String,
    #[arg(long, default_value_t = 16)]
    workers: usize,
    #[arg(long, default_value_t = 10.0)]
    secs: f64,
    /// Source addresses (127.0.0.x), round robin over workers. Repeatable.
    #[arg(long)]
    src: Vec<IpAddr>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(ca_file) = &cli.ca_file {
        let _ = TLS.set(tls_connector(ca_file)?);
    }
    let _ = epoch();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let out = runtime.block_on(async {
        match cli.scenario {
            Scenario::Echo(args) => echo(args).await,
            Scenario::Fanout(args) => fanout(args).await,
            Scenario::Idle(args) => idle(args).await,
            Scenario::Churn(args) => churn(args).await,
            Scenario::Wake(args) => wake(args).await,
        }
    })?;
    println!("{out}");
    // Idle connections may still be open: do not wait for their tasks.
    runtime.shutdown_background();
    Ok(())
}

/// The process-wide time base for timestamps carried in frames.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_us() -> u64 {
    u64::try_from(epoch().elapsed().as_micros()).unwrap_or(u64::MAX)
}

fn histogram() -> anyhow::Result<Histogram<u64>> {
    // 1 µs .. 10 min, 3 significant digits.
    Ok(Histogram::new_with_bounds(1, 600_000_000, 3)?)
}

fn quantiles_us(hist: &Histogram<u64>) -> Value {
    json!({
        "samples": hist.len(),
        "p50_us": hist.value_at_quantile(0.5),
        "p99_us": hist.value_at_quantile(0.99),
        "p999_us": hist.value_at_quantile(0.999),
        "mean_us": hist.mean(),
        "max_us": hist.max(),
    })
}

/// Small client buffers: the client is not what is measured, and 15,000
/// connections at tungstenite's 128 KiB defaults would cost gigabytes.
fn client_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(16 << 10)
        .write_buffer_size(0)
}

/// One handshake may take this long before it counts as failed.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);

async fn connect(url: &str, src: Option<IpAddr>) -> anyhow::Result<Ws> {
    tokio::time::timeout(HANDSHAKE_TIMEOUT, connect_once(url, src))
        .await
        .with_context(|| format!("no handshake within {HANDSHAKE_TIMEOUT:?}"))?
}

async fn connect_once(url: &str, src: Option<IpAddr>) -> anyhow::Result<Ws> {
    let (tls, rest) = match (url.strip_prefix("ws://"), url.strip_prefix("wss://")) {
        (Some(rest), _) => (None, rest),
        (None, Some(rest)) => (Some(TLS.get().context("wss:// URLs need --ca-file")?), rest),
        (None, None) => bail!("only ws:// and wss:// URLs: {url}"),
    };
    let authority = rest.split('/').next().unwrap_or(rest);
    let addr: SocketAddr = match authority.parse() {
        Ok(addr) => addr,
        Err(_) => tokio::net::lookup_host(authority)
            .await?
            .next()
            .with_context(|| format!("cannot resolve {authority}"))?,
    };
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(ip) = src {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    socket.set_nodelay(true)?;
    let stream = socket.connect(addr).await?;
    let stream = match tls {
        None => Conn::Plain(stream),
        Some(connector) => {
            let host = authority
                .rsplit_once(':')
                .map_or(authority, |(host, _)| host)
                .trim_start_matches('[')
                .trim_end_matches(']');
            let name = rustls::pki_types::ServerName::try_from(host.to_owned())
                .with_context(|| format!("{host} is not a TLS server name"))?;
            Conn::Tls(Box::new(connector.connect(name, stream).await?))
        }
    };
    let (ws, _) =
        tokio_tungstenite::client_async_with_config(url, stream, Some(client_config())).await?;
    Ok(ws)
}

async fn connect_retry(url: &str, src: Option<IpAddr>) -> anyhow::Result<Ws> {
    let mut last = None;
    for attempt in 0..3u64 {
        match connect(url, src).await {
            Ok(ws) => return Ok(ws),
            Err(error) => last = Some(error),
        }
        tokio::time::sleep(Duration::from_millis(100 * (attempt + 1))).await;
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("connect failed")))
}

// ---------------------------------------------------------------- echo

async fn echo(args: EchoArgs) -> anyhow::Result<Value> {
    let text = "x".repeat(args.size);
    let payload = if args.rooms {
        json!({ "message": text }).to_string()
    } else {
        text
    };
    let warm_until = Instant::now() + Duration::from_secs_f64(args.warmup);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    for i in 0..args.conns {
        let url = if args.rooms {
            // `\w+` room names: Channels' tutorial routes take no `-`.
            format!("{}rtt{i}/", args.url)
        } else {
            args.url.clone()
        };
        let ws = connect_retry(&url, None).await?;
        let payload = payload.clone();
        let stop = stop_rx.clone();
        tasks.push(tokio::spawn(echo_loop(ws, payload, warm_until, stop)));
    }
    tokio::time::sleep_until(warm_until.into()).await;
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(args.secs)).await;
    let _ = stop_tx.send(true);
    let elapsed = started.elapsed().as_secs_f64();
    let mut hist = histogram()?;
    let mut errors = 0u64;
    for task in tasks {
        match task.await? {
            Ok(h) => hist.add(&h)?,
            Err(_) => errors += 1,
        }
    }
    Ok(json!({
        "scenario": "echo",
        "conns": args.conns,
        "rooms": args.rooms,
        "secs": elapsed,
        "messages": hist.len(),
        "messages_per_s": hist.len() as f64 / elapsed,
        "rtt": quantiles_us(&hist),
        "failed_conns": errors,
    }))
}

async fn echo_loop(
    mut ws: Ws,
    payload: String,
    warm_until: Instant,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<Histogram<u64>> {
    let mut hist = histogram()?;
    while !*stop.borrow() {
        let sent = Instant::now();
        ws.send(Message::text(payload.as_str())).await?;
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(_))) => break,
                Some(Ok(Message::Close(frame))) => bail!("closed: {frame:?}"),
                Some(Ok(_)) => {}
                Some(Err(error)) => return Err(error.into()),
                None => bail!("connection ended"),
            }
        }
        if sent >= warm_until {
            let us = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
            hist.record(us.max(1))?;
        }
    }
    let _ = ws.close(None).await;
    Ok(hist)
}

// ---------------------------------------------------------------- fan-out

struct FanoutShared {
    received: AtomicU64,
    last_us: AtomicU64,
}

async fn fanout(args: FanoutArgs) -> anyhow::Result<Value> {
    let sub_urls = if args.sub_url.is_empty() {
        vec![args.url.clone()]
    } else {
        args.sub_url.clone()
    };
    let shared = Arc::new(FanoutShared {
        received: AtomicU64::new(0),
        last_us: AtomicU64::new(0),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let connect_started = Instant::now();
    let gate = Arc::new(Semaphore::new(32));
    let mut connecting = Vec::new();
    for i in 0..args.subs {
        let url = sub_urls[i % sub_urls.len()].clone();
        let gate = gate.clone();
        connecting.push(tokio::spawn(async move {
            let _permit = gate.acquire().await?;
            connect_retry(&url, None).await
        }));
    }
    let mut subs = Vec::new();
    let mut failed_subs = 0u64;
    for task in connecting {
        match task.await? {
            Ok(ws) => {
                let shared = shared.clone();
                let stop = stop_rx.clone();
                subs.push(tokio::spawn(subscriber(ws, shared, stop)));
            }
            Err(_) => failed_subs += 1,
        }
    }
    let connect_secs = connect_started.elapsed().as_secs_f64();
    if subs.is_empty() {
        bail!("no subscriber could connect to {}", sub_urls.join(", "));
    }
    // Let the last joins settle (and an axum on_upgrade subscribe) before
    // the first message.
    tokio::time::sleep(Duration::from_millis(1000)).await;

    let publisher = connect_retry(&args.url, None).await?;
    let (mut pub_tx, mut pub_rx) = publisher.split();
    // The publisher is in the room too: read (and drop) its copies so the
    // server never sees it as a slow reader.
    let drain = tokio::spawn(async move { while let Some(Ok(_)) = pub_rx.next().await {} });

    let period = Duration::from_secs_f64(1.0 / args.rate);
    let total = (args.rate * args.secs).round() as u64;
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let first_publish = now_us();
    let mut published = 0u64;
    let mut publish_errors = 0u64;
    for seq in 0..total {
        ticker.tick().await;
        let body = json!({ "message": format!("{seq} {}", now_us()) }).to_string();
        match pub_tx.send(Message::text(body)).await {
            Ok(()) => published += 1,
            Err(_) => {
                publish_errors += 1;
                break;
            }
        }
    }
    let publish_secs = (now_us() - first_publish) as f64 / 1e6;
    let expected = published * subs.len() as u64;

    // Drain: until everything arrived, or nothing arrived for `quiet`
    // seconds, or `max_drain` seconds passed.
    let drain_deadline = Instant::now() + Duration::from_secs_f64(args.max_drain);
    let mut last_seen = shared.received.load(Ordering::Relaxed);
    let mut last_change = Instant::now();
    while Instant::now() < drain_deadline {
        let now = shared.received.load(Ordering::Relaxed);
        if now >= expected {
            break;
        }
        if now != last_seen {
            last_seen = now;
            last_change = Instant::now();
        } else if last_change.elapsed().as_secs_f64() >= args.quiet {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stop_tx.send(true);
    let mut hist = histogram()?;
    let mut closed_subs = 0u64;
    for sub in subs {
        let (h, closed) = sub.await??;
        hist.add(&h)?;
        closed_subs += u64::from(closed);
    }
    let _ = pub_tx.close().await;
    drain.abort();
    let received = shared.received.load(Ordering::Relaxed);
    let last = shared.last_us.load(Ordering::Relaxed);
    let window = (last.saturating_sub(first_publish)) as f64 / 1e6;
    Ok(json!({
        "scenario": "fanout",
        "subs": args.subs,
        "sub_urls": sub_urls,
        "failed_subs": failed_subs,
        "closed_subs": closed_subs,
        "subs_connect_secs": connect_secs,
        "rate": args.rate,
        "published": published,
        "publish_errors": publish_errors,
        "publish_secs": publish_secs,
        "expected": expected,
        "received": received,
        "lost": expected.saturating_sub(received),
        "deliveries_per_s": if window > 0.0 { received as f64 / window } else { 0.0 },
        "delivery_window_secs": window,
        "latency": quantiles_us(&hist),
    }))
}

/// Read a subscriber's frames until told to stop; returns its latency
/// histogram and whether the server closed it early.
async fn subscriber(
    mut ws: Ws,
    shared: Arc<FanoutShared>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<(Histogram<u64>, bool)> {
    let mut hist = histogram()?;
    let mut closed = false;
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            frame = ws.next() => match frame {
                Some(Ok(Message::Text(text))) => {
                    let now = now_us();
                    if let Some(sent) = sent_us(&text) {
                        hist.record(now.saturating_sub(sent).max(1))?;
                        shared.received.fetch_add(1, Ordering::Relaxed);
                        shared.last_us.fetch_max(now, Ordering::Relaxed);
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => {
                    closed = true;
                    break;
                }
            },
        }
    }
    let _ = ws.close(None).await;
    Ok((hist, closed))
}

/// The publish timestamp in `{"message": "<seq> <us>"}`.
fn sent_us(text: &str) -> Option<u64> {
    let value: Value = serde_json::from_str(text).ok()?;
    let message = value.get("message")?.as_str()?;
    message.split(' ').nth(1)?.parse().ok()
}

// ---------------------------------------------------------------- idle

async fn idle(args: IdleArgs) -> anyhow::Result<Value> {
    let gate = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let dropped = Arc::new(AtomicU64::new(0));
    let (stop_tx, stop_rx) = watch::channel(false);
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(args.deadline);
    let mut connecting = Vec::with_capacity(args.conns);
    for i in 0..args.conns {
        let src = (!args.src.is_empty()).then(|| args.src[i % args.src.len()]);
        let url = args.url.clone();
        let gate = gate.clone();
        let dropped = dropped.clone();
        let stop = stop_rx.clone();
        connecting.push(tokio::spawn(async move {
            let ws = tokio::time::timeout_at(deadline, async {
                let _permit = gate.acquire().await?;
                connect_retry(&url, src).await
            })
            .await
            .context("not connected before the deadline")??;
            let done = Instant::now();
            tokio::spawn(hold(ws, dropped, stop));
            anyhow::Ok(done)
        }));
    }
    let mut connected = 0u64;
    let mut failed = 0u64;
    let mut first_error = None;
    let mut last_done = started;
    for task in connecting {
        match task.await? {
            Ok(done) => {
                connected += 1;
                last_done = last_done.max(done);
            }
            Err(error) => {
                failed += 1;
                first_error.get_or_insert_with(|| format!("{error:#}"));
            }
        }
    }
    let connect_secs = (last_done - started).as_secs_f64();
    let report = json!({
        "phase": "connected",
        "connected": connected,
        "failed": failed,
        "connect_secs": connect_secs,
        "first_error": first_error,
    });
    // The first line: the orchestrator reads the server's RSS now.
    println!("{report}");

    let hold_until = Instant::now() + Duration::from_secs_f64(args.max_hold);
    while Instant::now() < hold_until {
        if args.hold_file.as_ref().is_some_and(|path| path.exists()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let dropped_during_hold = dropped.load(Ordering::Relaxed);
    let _ = stop_tx.send(true);
    Ok(json!({
        "scenario": "idle",
        "phase": "done",
        "conns": args.conns,
        "connected": connected,
        "failed": failed,
        "dropped_during_hold": dropped_during_hold,
        "connect_secs": connect_secs,
        "connects_per_s": if connect_secs > 0.0 { connected as f64 / connect_secs } else { 0.0 },
        "first_error": first_error,
    }))
}

/// Keep one idle connection open (answering pings) and count it if the
/// server drops it before the end.
async fn hold(mut ws: Ws, dropped: Arc<AtomicU64>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            frame = ws.next() => match frame {
                Some(Ok(Message::Close(_)) | Err(_)) | None => {
                    dropped.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Some(Ok(_)) => {}
            },
        }
    }
}

// ---------------------------------------------------------------- wake

async fn wake(args: WakeArgs) -> anyhow::Result<Value> {
    let mut sockets = Vec::with_capacity(args.conns);
    for i in 0..args.conns {
        sockets.push(connect_retry(&format!("{}wake-{i}/", args.url), None).await?);
    }
    println!(
        "{}",
        json!({"phase": "connected", "connected": sockets.len()})
    );
    let wait_until = Instant::now() + Duration::from_secs_f64(args.max_wait);
    while Instant::now() < wait_until && !args.go_file.exists() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut first = histogram()?;
    let mut second = histogram()?;
    for ws in &mut sockets {
        for hist in [&mut first, &mut second] {
            let t = Instant::now();
            ws.send(Message::text(r#"{"message": "wake"}"#)).await?;
            loop {
                match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
                    Ok(Some(Ok(Message::Text(_)))) => break,
                    Ok(Some(Ok(_))) => {}
                    other => bail!("no reply after waking: {other:?}"),
                }
            }
            let us = u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX);
            hist.record(us.max(1))?;
        }
    }
    for mut ws in sockets {
        let _ = ws.close(None).await;
    }
    Ok(json!({
        "scenario": "wake",
        "phase": "done",
        "conns": args.conns,
        "first_call": quantiles_us(&first),
        "awake_call": quantiles_us(&second),
    }))
}

// ---------------------------------------------------------------- churn

async fn churn(args: ChurnArgs) -> anyhow::Result<Value> {
    let deadline = Instant::now() + Duration::from_secs_f64(args.secs);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..args.workers {
        let src = (!args.src.is_empty()).then(|| args.src[i % args.src.len()]);
        let url = args.url.clone();
        tasks.push(tokio::spawn(async move {
            let mut cycles = 0u64;
            let mut failures = 0u64;
            let mut hist = histogram()?;
            while Instant::now() < deadline {
                let t = Instant::now();
                match connect(&url, src).await {
                    Ok(mut ws) => {
                        let _ = ws.close(None).await;
                        // Wait for the server's close (bounded).
                        let _ = tokio::time::timeout(Duration::from_secs(2), async {
                            while let Some(Ok(_)) = ws.next().await {}
                        })
                        .await;
                        cycles += 1;
                        let us = u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX);
                        hist.record(us.max(1))?;
                    }
                    Err(_) => {
                        failures += 1;
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            anyhow::Ok((cycles, failures, hist))
        }));
    }
    let mut cycles = 0u64;
    let mut failures = 0u64;
    let mut hist = histogram()?;
    for task in tasks {
        let (c, f, h) = task.await??;
        cycles += c;
        failures += f;
        hist.add(&h)?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    Ok(json!({
        "scenario": "churn",
        "workers": args.workers,
        "secs": elapsed,
        "cycles": cycles,
        "cycles_per_s": cycles as f64 / elapsed,
        "failures": failures,
        "cycle": quantiles_us(&hist),
    }))
}
