//! Hot-swap figures: how long from a plugin file landing (renamed into
//! place) to new connections being served by the new version, with and
//! without the compile cache; and what a swap adds to the latency of
//! traffic in flight.
//!
//! Run: `cargo xtask plugins && cargo run --release -p switchyard-bench --bin hotswap`
//! (needs the test builds in target/test-plugins, which `cargo xtask
//! plugins` installs). Writes bench/results/hotswap.json.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures_util::{SinkExt as _, StreamExt as _};
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use switchyard::{Config, Server};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

const SWAPS: usize = 30;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn histogram() -> anyhow::Result<Histogram<u64>> {
    Ok(Histogram::new(3)?)
}

fn micros(elapsed: Duration) -> u64 {
    u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX)
}

fn summary(name: &str, hist: &Histogram<u64>) -> Value {
    json!({
        "name": name,
        "samples": hist.len(),
        "p50_ms": hist.value_at_quantile(0.5) as f64 / 1000.0,
        "p99_ms": hist.value_at_quantile(0.99) as f64 / 1000.0,
        "max_ms": hist.max() as f64 / 1000.0,
    })
}

/// Install `build` of the counter plugin (v1 or v2) by rename into place.
fn install(dir: &Path, source: &Path, policy: &str) -> anyhow::Result<()> {
    let manifest = format!("routes = [\"test/counter/\"]\non-replace = \"{policy}\"\n");
    std::fs::write(dir.join(".counter.toml.tmp"), manifest)?;
    std::fs::rename(dir.join(".counter.toml.tmp"), dir.join("counter.toml"))?;
    std::fs::copy(source, dir.join(".counter.wasm.tmp"))?;
    std::fs::rename(dir.join(".counter.wasm.tmp"), dir.join("counter.wasm"))?;
    Ok(())
}

async fn ask(ws: &mut Ws) -> anyhow::Result<Value> {
    ws.send(Message::text("x")).await?;
    loop {
        match ws.next().await.context("stream ended")?? {
            Message::Text(text) => return Ok(serde_json::from_str(text.as_str())?),
            Message::Close(frame) => bail!("closed: {frame:?}"),
            _ => {}
        }
    }
}

/// The version a new connection is served by.
async fn version_of_new_connection(url: &str) -> anyhow::Result<String> {
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await?;
    let reply = ask(&mut ws).await?;
    let _ = ws.close(None).await;
    Ok(reply["version"].as_str().unwrap_or_default().to_owned())
}

struct Run {
    landing: Histogram<u64>,
    in_flight_quiet: Histogram<u64>,
    in_flight_swapping: Histogram<u64>,
}

async fn run(plugins: &Path, cache: Option<PathBuf>, policy: &str) -> anyhow::Result<Run> {
    let dir = std::env::temp_dir().join(format!("switchyard-hotswap-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let v1 = plugins.join("counter.wasm");
    let v2 = plugins.join("v2").join("counter.wasm");
    install(&dir, &v1, policy)?;
    let config = Config {
        port: 0,
        plugins: dir.clone(),
        compile_cache: cache.clone(),
        ..Config::default()
    };
    if let Some(cache) = &cache {
        // Warm the cache with both versions.
        for source in [&v2, &v1] {
            install(&dir, source, policy)?;
            let warm = Server::build(Config {
                compile_cache: Some(cache.clone()),
                watch_plugins: false,
                ..config.clone()
            })
            .await?;
            drop(warm);
        }
    }
    let listener = TcpListener::bind((config.bind, 0)).await?;
    let url = format!("ws://{}/test/counter/", listener.local_addr()?);
    let server = Server::build(config).await?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.serve(listener, async {
        let _ = stopped.await;
    }));

    // Traffic in flight: one connection in a closed loop the whole time.
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await?;
    let mut quiet = histogram()?;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(2) {
        let t = Instant::now();
        ask(&mut ws).await?;
        quiet.record(micros(t.elapsed()))?;
    }
    let (tx, mut rx) = tokio::sync::watch::channel(false);
    let in_flight = tokio::spawn(async move {
        let mut swapping = histogram()?;
        while !*rx.borrow_and_update() {
            let t = Instant::now();
            ask(&mut ws).await?;
            swapping.record(micros(t.elapsed()))?;
        }
        anyhow::Ok(swapping)
    });

    let mut landing = histogram()?;
    for swap in 0..SWAPS {
        let (source, expected) = if swap % 2 == 0 {
            (&v2, "v2")
        } else {
            (&v1, "v1")
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        install(&dir, source, policy)?;
        let landed = Instant::now();
        loop {
            if version_of_new_connection(&url).await? == expected {
                landing.record(micros(landed.elapsed()))?;
                break;
            }
            if landed.elapsed() > Duration::from_secs(10) {
                bail!("swap {swap} never went live");
            }
        }
    }
    tx.send(true)?;
    let in_flight_swapping = in_flight.await??;
    let _ = stop.send(());
    serving.await??;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Run {
        landing,
        in_flight_quiet: quiet,
        in_flight_swapping,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let plugins = root.join("target/test-plugins");
    if !plugins.join("v2/counter.wasm").is_file() {
        bail!(
            "no test plugins in {}: run `cargo xtask plugins` first",
            plugins.display()
        );
    }
    let cache =
        std::env::temp_dir().join(format!("switchyard-hotswap-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&cache);

    let cold = run(&plugins, None, "migrate").await?;
    let cached = run(&plugins, Some(cache.clone()), "migrate").await?;
    let _ = std::fs::remove_dir_all(&cache);

    let rows = vec![
        summary(
            "file landing -> new version serving (cold: compiled)",
            &cold.landing,
        ),
        summary(
            "file landing -> new version serving (compile cache)",
            &cached.landing,
        ),
        summary("in-flight round trip, no swaps", &cached.in_flight_quiet),
        summary(
            "in-flight round trip during swaps (migrate)",
            &cached.in_flight_swapping,
        ),
    ];
    println!(
        "{:<56} {:>8} {:>8} {:>8} {:>8}",
        "measurement", "p50 ms", "p99 ms", "max ms", "samples"
    );
    for row in &rows {
        println!(
            "{:<56} {:>8.2} {:>8.2} {:>8.2} {:>8}",
            row["name"].as_str().unwrap_or_default(),
            row["p50_ms"].as_f64().unwrap_or_default(),
            row["p99_ms"].as_f64().unwrap_or_default(),
            row["max_ms"].as_f64().unwrap_or_default(),
            row["samples"],
        );
    }
    let out = root.join("bench/results/hotswap.json");
    let report =
        json!({"benchmark": "hotswap", "plugin": "counter (83 KB)", "swaps": SWAPS, "rows": rows});
    std::fs::write(&out, serde_json::to_string_pretty(&report)? + "\n")?;
    println!("wrote {}", out.display());
    Ok(())
}
