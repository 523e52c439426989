//! Isolation figure: echo round-trip latency with and without a spinning
//! plugin beside it, from one run of one server.
//!
//! Phase 1: `ECHO_CLIENTS` clients do echo round trips on `/ws/echo/` for
//! `PHASE`. Phase 2: the same, while `SPINNERS` other connections keep
//! sending the probe plugin `{"cmd": "spin"}` (an endless loop, stopped by
//! its 250 ms call deadline and closed with 1011) and reconnecting.
//!
//! Run: `cargo xtask plugins && cargo run -p switchyard-bench --bin isolation`
//! (add `--release` for absolute figures; optional args: the test plugin
//! directory, the JSON output path).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures_util::{SinkExt as _, StreamExt as _};
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use switchyard::{Config, Server};
use tokio_tungstenite::tungstenite::Message;

const ECHO_CLIENTS: usize = 16;
const SPINNERS: usize = 1;
const PHASE: Duration = Duration::from_secs(5);
const SPIN_DEADLINE_MS: u64 = 250;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(url: &str) -> anyhow::Result<Ws> {
    let (ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .with_context(|| format!("connecting to {url}"))?;
    Ok(ws)
}

/// Echo round trips until `PHASE` has passed; latencies in ns.
async fn echo_client(url: String) -> anyhow::Result<Histogram<u64>> {
    let mut hist = Histogram::<u64>::new(3)?;
    let mut ws = connect(&url).await?;
    let payload = "x".repeat(64);
    let start = Instant::now();
    while start.elapsed() < PHASE {
        let sent = Instant::now();
        ws.send(Message::text(payload.clone())).await?;
        match ws.next().await {
            Some(Ok(Message::Text(text))) if text.len() == payload.len() => {}
            other => bail!("unexpected echo answer: {other:?}"),
        }
        hist.record(u64::try_from(sent.elapsed().as_nanos()).unwrap_or(u64::MAX))?;
    }
    let _ = ws.close(None).await;
    Ok(hist)
}

/// Connect, spin, wait for the 1011 close, again, until `stop`.
async fn spinner(url: String, stop: Arc<AtomicBool>, spins: Arc<AtomicU64>) -> anyhow::Result<()> {
    while !stop.load(Ordering::Relaxed) {
        let mut ws = connect(&url).await?;
        ws.next().await.context("hello frame")??;
        ws.send(Message::text(r#"{"cmd":"spin"}"#)).await?;
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(Some(frame)))) if u16::from(frame.code) == 1011 => {
                    spins.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Some(Ok(Message::Close(other))) => bail!("spinner closed with {other:?}"),
                Some(Ok(_)) => continue,
                Some(Err(err)) => bail!("spinner socket: {err}"),
                None => bail!("spinner socket ended without a close frame"),
            }
        }
    }
    Ok(())
}

async fn echo_phase(base: &str) -> anyhow::Result<Histogram<u64>> {
    let mut tasks = Vec::new();
    for _ in 0..ECHO_CLIENTS {
        tasks.push(tokio::spawn(echo_client(format!("{base}/ws/echo/"))));
    }
    let mut total = Histogram::<u64>::new(3)?;
    for task in tasks {
        total.add(task.await??)?;
    }
    Ok(total)
}

fn summary(name: &str, hist: &Histogram<u64>) -> Value {
    let us = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    json!({
        "phase": name,
        "round_trips": hist.len(),
        "p50_us": us(0.5),
        "p99_us": us(0.99),
        "p999_us": us(0.999),
        "max_us": hist.max() as f64 / 1000.0,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let plugins = args.next().map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-plugins"),
        PathBuf::from,
    );
    let output = args.next().map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("results/isolation.json"),
        PathBuf::from,
    );
    // The echo plugin as built; the probe under a manifest with a short
    // call deadline, so each spin ends in 250 ms.
    let dir = std::env::temp_dir().join(format!("switchyard-isolation-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    for name in ["echo.wasm", "echo.toml", "probe.wasm"] {
        std::fs::copy(plugins.join(name), dir.join(name)).with_context(|| {
            format!(
                "{name} in {} (run `cargo xtask plugins`)",
                plugins.display()
            )
        })?;
    }
    std::fs::write(
        dir.join("probe.toml"),
        format!(
            "routes = [\"probe/any/<path:rest>\"]\n[limits]\ncall-timeout-ms = {SPIN_DEADLINE_MS}\n"
        ),
    )?;
    let config = Config {
        port: 0,
        plugins: dir.clone(),
        ..Config::default()
    };
    let listener = tokio::net::TcpListener::bind((config.bind, 0)).await?;
    let base = format!("ws://{}", listener.local_addr()?);
    let server = Server::build(config).await?;
    let (stop_server, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.serve(listener, async {
        let _ = stopped.await;
    }));

    let alone = echo_phase(&base).await?;

    let stop = Arc::new(AtomicBool::new(false));
    let spins = Arc::new(AtomicU64::new(0));
    let spinners: Vec<_> = (0..SPINNERS)
        .map(|i| {
            tokio::spawn(spinner(
                format!("{base}/probe/any/spin{i}"),
                Arc::clone(&stop),
                Arc::clone(&spins),
            ))
        })
        .collect();
    let beside = echo_phase(&base).await?;
    stop.store(true, Ordering::Relaxed);
    for task in spinners {
        task.await??;
    }

    let _ = stop_server.send(());
    serving.await??;
    let _ = std::fs::remove_dir_all(&dir);

    let workers = std::thread::available_parallelism().map_or(0, usize::from);
    let rows = [
        summary("echo alone", &alone),
        summary("echo beside a spinning plugin", &beside),
    ];
    println!(
        "{ECHO_CLIENTS} echo clients, {PHASE:?} per phase, {SPINNERS} spinner(s) with a {SPIN_DEADLINE_MS} ms deadline, {workers} tokio workers"
    );
    println!(
        "{:<32} {:>11} {:>10} {:>10} {:>10} {:>10}",
        "phase", "round trips", "p50 us", "p99 us", "p99.9 us", "max us"
    );
    for row in &rows {
        println!(
            "{:<32} {:>11} {:>10.0} {:>10.0} {:>10.0} {:>10.0}",
            row["phase"].as_str().unwrap_or_default(),
            row["round_trips"],
            row["p50_us"].as_f64().unwrap_or_default(),
            row["p99_us"].as_f64().unwrap_or_default(),
            row["p999_us"].as_f64().unwrap_or_default(),
            row["max_us"].as_f64().unwrap_or_default(),
        );
    }
    println!(
        "spins stopped by the deadline (closed 1011): {}",
        spins.load(Ordering::Relaxed)
    );
    let report = json!({
        "bench": "isolation",
        "profile": if cfg!(debug_assertions) { "debug" } else { "release" },
        "echo_clients": ECHO_CLIENTS,
        "spinners": SPINNERS,
        "spin_deadline_ms": SPIN_DEADLINE_MS,
        "phase_secs": PHASE.as_secs(),
        "workers": workers,
        "spins": spins.load(Ordering::Relaxed),
        "rows": rows,
    });
    if let Some(parent) = output.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&output, serde_json::to_string_pretty(&report)?)?;
    println!("wrote {}", output.display());
    Ok(())
}
