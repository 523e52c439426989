//! First figures: what one connection and one message cost the server.
//!
//! In process (no sockets): connect-to-accept with a fresh instance
//! (`PluginHost::start`: instance slot, channel, `Store::new`, instantiate
//! from `instantiate_pre`, the guest's `connect`), and one message through
//! the guest (`Consumer::receive` for echo; for chat, `receive` with its
//! `group_send` plus the `event` call that delivers it back).
//!
//! Over loopback (real server, real client): the WebSocket handshake as the
//! client sees it, and echo round trips on one connection.
//!
//! Run: `cargo xtask plugins && cargo run --release -p switchyard-bench --bin foundation`
//! (optional args: the plugin directory, the JSON output path).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures_util::{SinkExt as _, StreamExt as _};
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use switchyard::{Config, Server};
use switchyard_host::{ConnectRequest, GuestLimits, Handshake, InFrame, PluginHost};
use switchyard_layer::{ChannelLayer, MemoryLayer};
use tokio_tungstenite::tungstenite::Message;

const CONNECTS: usize = 3000;
const MESSAGES: usize = 20_000;
const SOCKET_CONNECTS: usize = 1000;

struct Row {
    name: &'static str,
    hist: Histogram<u64>,
}

impl Row {
    fn new(name: &'static str) -> anyhow::Result<Self> {
        Ok(Self {
            name,
            hist: Histogram::new(3)?,
        })
    }

    fn record(&mut self, elapsed: Duration) -> anyhow::Result<()> {
        self.hist
            .record(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX))?;
        Ok(())
    }

    fn us(&self, q: f64) -> f64 {
        self.hist.value_at_quantile(q) as f64 / 1000.0
    }

    fn json(&self) -> Value {
        json!({
            "name": self.name,
            "samples": self.hist.len(),
            "p50_us": self.us(0.5),
            "p99_us": self.us(0.99),
            "p999_us": self.us(0.999),
            "mean_us": self.hist.mean() / 1000.0,
        })
    }
}

fn request(path: &str) -> ConnectRequest {
    ConnectRequest {
        path: path.to_owned(),
        client: Some("127.0.0.1:50000".into()),
        headers: vec![("host".into(), "127.0.0.1:8000".into())],
        ..ConnectRequest::default()
    }
}

async fn in_process(dir: &std::path::Path) -> anyhow::Result<Vec<Row>> {
    let layer: Arc<dyn ChannelLayer> = Arc::new(MemoryLayer::default());
    let host = PluginHost::new(layer, GuestLimits::default())?;
    let mut compile = Row::new("compile + instantiate_pre (chat.wasm, cold)")?;
    let started = Instant::now();
    host.compile(&dir.join("chat.wasm")).await?;
    compile.record(started.elapsed())?;
    let report = host.load_dir(dir).await?;
    if !report.failed.is_empty() {
        bail!("plugins failed to load: {:?}", report.failed);
    }

    let mut connect_echo = Row::new("connect-to-accept, fresh instance (echo)")?;
    let mut connect_chat = Row::new("connect-to-accept, fresh instance (chat, joins a group)")?;
    let mut echo_message = Row::new("one message through the guest (echo receive)")?;
    let mut chat_message = Row::new("one message through the guest (chat receive + event)")?;

    let echo = host.resolve("/ws/echo/").context("echo route")?;
    let chat = host.resolve("/ws/chat/bench/").context("chat route")?;
    let messages_per_connection = MESSAGES / CONNECTS + 1;
    for round in 0..CONNECTS {
        let (tx, mut rx) = switchyard_host::outbound_queue(1024);
        let t = Instant::now();
        let mut started = host.start(&echo, request("/ws/echo/"), tx).await?;
        connect_echo.record(t.elapsed())?;
        if !matches!(started.handshake, Handshake::Accepted { .. }) {
            bail!("echo did not accept");
        }
        for i in 0..messages_per_connection {
            let t = Instant::now();
            started
                .consumer
                .receive(InFrame::Text(format!("message {round}/{i}")))
                .await?;
            echo_message.record(t.elapsed())?;
            rx.try_recv().context("echo reply")?;
        }
        started.consumer.disconnect(1000).await;

        let (tx, mut rx) = switchyard_host::outbound_queue(1024);
        let t = Instant::now();
        let mut started = host.start(&chat, request("/ws/chat/bench/"), tx).await?;
        connect_chat.record(t.elapsed())?;
        for i in 0..messages_per_connection {
            let t = Instant::now();
            started
                .consumer
                .receive(InFrame::Text(format!(r#"{{"message": "m{round}/{i}"}}"#)))
                .await?;
            let event = started.inbox.try_recv().context("group event")?;
            started.consumer.event(&event).await?;
            chat_message.record(t.elapsed())?;
            rx.try_recv().context("chat reply")?;
        }
        started.consumer.disconnect(1000).await;
    }
    Ok(vec![
        compile,
        connect_echo,
        connect_chat,
        echo_message,
        chat_message,
    ])
}

async fn over_loopback(dir: PathBuf) -> anyhow::Result<Vec<Row>> {
    let config = Config {
        port: 0,
        plugins: dir,
        ..Config::default()
    };
    let listener = tokio::net::TcpListener::bind((config.bind, 0)).await?;
    let addr = listener.local_addr()?;
    let server = Server::build(config).await?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.serve(listener, async {
        let _ = stop_rx.await;
    }));
    let url = format!("ws://{addr}/ws/echo/");

    let mut handshake = Row::new("WebSocket handshake over loopback, client-side (echo)")?;
    for _ in 0..SOCKET_CONNECTS {
        let t = Instant::now();
        let (mut ws, _) = tokio_tungstenite::connect_async(&url).await?;
        handshake.record(t.elapsed())?;
        ws.close(None).await?;
        while ws.next().await.is_some() {}
    }

    let mut rtt = Row::new("echo round trip over loopback, one connection")?;
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await?;
    for i in 0..MESSAGES {
        let text = format!("round trip {i}");
        let t = Instant::now();
        ws.send(Message::text(text.clone())).await?;
        match ws.next().await.context("stream ended")?? {
            Message::Text(reply) if reply.as_str() == text => rtt.record(t.elapsed())?,
            other => bail!("unexpected reply {other:?}"),
        }
    }
    ws.close(None).await?;
    let _ = stop_tx.send(());
    serving.await??;
    Ok(vec![handshake, rtt])
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut args = std::env::args().skip(1);
    let dir = args
        .next()
        .map_or_else(|| root.join("target/plugins"), PathBuf::from);
    let out = args
        .next()
        .map_or_else(|| root.join("bench/results/foundation.json"), PathBuf::from);
    if !dir.join("echo.wasm").is_file() {
        bail!(
            "no echo.wasm in {}: run `cargo xtask plugins` first",
            dir.display()
        );
    }
    let mut rows = in_process(&dir).await?;
    rows.extend(over_loopback(dir).await?);

    println!(
        "{:<58} {:>9} {:>9} {:>9} {:>9}",
        "measurement", "p50 µs", "p99 µs", "p99.9 µs", "samples"
    );
    for row in &rows {
        println!(
            "{:<58} {:>9.1} {:>9.1} {:>9.1} {:>9}",
            row.name,
            row.us(0.5),
            row.us(0.99),
            row.us(0.999),
            row.hist.len()
        );
    }
    let report = json!({
        "benchmark": "foundation",
        "machine": format!("{} cores", std::thread::available_parallelism().map_or(0, |n| n.get())),
        "profile": if cfg!(debug_assertions) { "debug" } else { "release" },
        "rows": rows.iter().map(Row::json).collect::<Vec<_>>(),
    });
    std::fs::write(&out, serde_json::to_string_pretty(&report)? + "\n")
        .with_context(|| format!("writing {}", out.display()))?;
    println!("wrote {}", out.display());
    Ok(())
}
