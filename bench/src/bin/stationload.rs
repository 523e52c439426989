//! The stations benchmark client: dashboard sockets subscribed to the
//! per-station feeds (`ws/stations/<id>/`), and one closed-loop writer per
//! station cycling swap → charging → charged through the HTTP API, each
//! write a change published to that station's sockets. Measures changes
//! (and swaps) recorded per second and the latency from sending the POST
//! to each socket receiving the change. The same client runs against
//! Switchyard's `stations` plugin and the Django project of
//! `examples/django_stations` under Daphne (same routes, same messages).
//! Prints one JSON line.
//!
//! ```text
//! stationload --base http://127.0.0.1:8000 --subs 1000 --secs 10
//! ```

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser;
use futures_util::StreamExt as _;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

#[derive(Debug, Parser)]
struct Cli {
    /// The server, `http://host:port`.
    #[arg(long)]
    base: String,
    /// Dashboard sockets, spread evenly over the stations.
    #[arg(long, default_value_t = 1000)]
    subs: usize,
    /// Stations 1..=N, one writer each.
    #[arg(long, default_value_t = 5)]
    stations: u64,
    /// Measured seconds (after the warm-up).
    #[arg(long, default_value_t = 10.0)]
    secs: f64,
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Seconds to wait after the writers stop for changes still on their
    /// way to sockets (not a timing: past it they count as lost).
    #[arg(long, default_value_t = 3.0)]
    drain: f64,
}

/// The actions a writer cycles through: each moves one battery on, so
/// the station comes back to where it started every three writes.
const CYCLE: [&str; 3] = ["swaps", "charging", "charged"];

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let out = runtime.block_on(run(cli))?;
    println!("{out}");
    Ok(())
}

/// `"version": n` of the station in a feed message, without parsing the
/// rest (the client must not be what is measured).
fn version_of(text: &str) -> Option<u64> {
    let at = text.find("\"version\"")? + "\"version\"".len();
    let digits: String = text[at..]
        .chars()
        .skip_while(|c| *c == ':' || c.is_whitespace())
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// What one socket saw after its snapshot: `(version, when)`.
type Seen = Vec<(u64, Instant)>;

async fn subscriber(
    url: String,
    ready: tokio::sync::mpsc::Sender<()>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<Seen> {
    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .with_context(|| format!("connect {url}"))?;
    match ws.next().await {
        Some(Ok(Message::Text(text))) if text.contains("snapshot") => {}
        other => bail!("expected a snapshot from {url}, got {other:?}"),
    }
    let _ = ready.send(()).await;
    let mut seen = Vec::new();
    loop {
        tokio::select! {
            // Cancel safety: `changed` and `next` are both cancel-safe.
            _ = stop.changed() => return Ok(seen),
            message = ws.next() => match message {
                Some(Ok(Message::Text(text))) => {
                    if let Some(version) = version_of(text.as_str()) {
                        seen.push((version, Instant::now()));
                    }
                }
                Some(Ok(_)) => {}
                _ => return Ok(seen),
            },
        }
    }
}

/// What one writer did: `(version, sent)` of each change it made while
/// measuring, and the count of answers that were not 200.
struct Written {
    sent: Vec<(u64, Instant)>,
    swaps: u64,
    not_ok: u64,
}

async fn writer(
    authority: String,
    station: u64,
    warm_until: Instant,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<Written> {
    let stream = tokio::net::TcpStream::connect(authority.as_str()).await?;
    stream.set_nodelay(true)?;
    let (mut sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let mut written = Written {
        sent: Vec::new(),
        swaps: 0,
        not_ok: 0,
    };
    for action in CYCLE.iter().cycle() {
        if *stop.borrow() {
            break;
        }
        let request = hyper::Request::post(format!("/api/stations/{station}/{action}/"))
            .header(hyper::header::HOST, authority.as_str())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from_static(b"{}")))?;
        sender.ready().await?;
        let sent = Instant::now();
        let response = sender.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        if sent < warm_until {
            continue;
        }
        if status != hyper::StatusCode::OK {
            written.not_ok += 1;
            continue;
        }
        let station: Value = serde_json::from_slice(&body).context("a station as JSON")?;
        let version = station["version"]
            .as_u64()
            .context("the station's version")?;
        written.sent.push((version, sent));
        if *action == "swaps" {
            written.swaps += 1;
        }
    }
    Ok(written)
}

async fn run(cli: Cli) -> anyhow::Result<Value> {
    let uri: hyper::Uri = cli.base.parse().context("--base")?;
    let authority = uri
        .authority()
        .context("--base needs host:port")?
        .to_string();
    let (stop_tx, stop_rx) = watch::channel(false);

    // The sockets, 50 handshakes at a time; each waits for its snapshot.
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel(cli.subs.max(1));
    let mut subscribers = Vec::new();
    for i in 0..cli.subs {
        let station = i as u64 % cli.stations + 1;
        let url = format!("ws://{authority}/ws/stations/{station}/");
        subscribers.push((
            station,
            tokio::spawn(subscriber(url, ready_tx.clone(), stop_rx.clone())),
        ));
        if i % 50 == 49 {
            for _ in 0..50 {
                ready_rx
                    .recv()
                    .await
                    .context("a socket failed before its snapshot")?;
            }
        }
    }
    for _ in 0..cli.subs % 50 {
        ready_rx
            .recv()
            .await
            .context("a socket failed before its snapshot")?;
    }

    let warm_until = Instant::now() + Duration::from_secs_f64(cli.warmup);
    let (writers_stop, writers_rx) = watch::channel(false);
    let writers: Vec<_> = (1..=cli.stations)
        .map(|station| {
            tokio::spawn(writer(
                authority.clone(),
                station,
                warm_until,
                writers_rx.clone(),
            ))
        })
        .collect();
    tokio::time::sleep_until(warm_until.into()).await;
    tokio::time::sleep(Duration::from_secs_f64(cli.secs)).await;
    // Writers stop first; the sockets get the drain time for changes still
    // on their way.
    let _ = writers_stop.send(true);
    let mut sent: HashMap<(u64, u64), Instant> = HashMap::new();
    let (mut swaps, mut not_ok) = (0, 0);
    for (station, task) in (1..=cli.stations).zip(writers) {
        let written = task.await??;
        swaps += written.swaps;
        not_ok += written.not_ok;
        for (version, at) in written.sent {
            sent.insert((station, version), at);
        }
    }
    tokio::time::sleep(Duration::from_secs_f64(cli.drain)).await;
    let _ = stop_tx.send(true);
    let mut latency = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    let mut delivered = 0u64;
    let subs_per_station: HashMap<u64, u64> =
        subscribers
            .iter()
            .fold(HashMap::new(), |mut map, (station, _)| {
                *map.entry(*station).or_default() += 1;
                map
            });
    for (station, task) in subscribers {
        for (version, at) in task.await?? {
            if let Some(sent) = sent.get(&(station, version)) {
                delivered += 1;
                let micros =
                    u64::try_from(at.duration_since(*sent).as_micros()).unwrap_or(u64::MAX);
                latency.record(micros.max(1))?;
            }
        }
    }
    let changes = sent.len() as u64;
    let expected: u64 = sent
        .keys()
        .map(|(station, _)| subs_per_station.get(station).copied().unwrap_or(0))
        .sum();
    Ok(json!({
        "scenario": "stations",
        "subs": cli.subs,
        "stations": cli.stations,
        "secs": cli.secs,
        "changes": changes,
        "changes_per_s": changes as f64 / cli.secs,
        "swaps_per_s": swaps as f64 / cli.secs,
        "not_ok": not_ok,
        "deliveries": delivered,
        "deliveries_per_s": delivered as f64 / cli.secs,
        "lost": expected.saturating_sub(delivered),
        "latency": {
            "samples": latency.len(),
            "p50_us": latency.value_at_quantile(0.5),
            "p99_us": latency.value_at_quantile(0.99),
            "max_us": latency.max(),
        },
    }))
}
