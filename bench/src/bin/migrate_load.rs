//! Live migration under load (issue 11): chat members receive a steady
//! stream of room events while the chat plugin is swapped back and forth
//! (`chat` and `chat_v2`) under an `on-replace` policy; counts the
//! deliveries lost and the delivery latency.
//!
//! Run: `cargo xtask plugins && cargo run --release -p switchyard-bench
//! --bin migrate_load -- [--members 200] [--rate 100] [--swaps 20]
//! [--policy migrate]`. Writes bench/results/migrate_load-<policy>.json.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser;
use futures_util::{SinkExt as _, StreamExt as _};
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use switchyard::{Config, Server};
use switchyard_layer::Event;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

#[derive(Parser, Debug)]
struct Args {
    /// Chat members in the room.
    #[arg(long, default_value_t = 200)]
    members: usize,
    /// Room events per second (each reaches every member).
    #[arg(long, default_value_t = 100)]
    rate: u64,
    /// Swaps, alternating chat_v2 and chat.
    #[arg(long, default_value_t = 20)]
    swaps: usize,
    /// Seconds of traffic in all.
    #[arg(long, default_value_t = 25)]
    secs: u64,
    /// `on-replace` policy.
    #[arg(long, default_value = "migrate")]
    policy: String,
}

fn install(dir: &Path, source: &Path, policy: &str) -> anyhow::Result<()> {
    let manifest = format!("routes = [\"ws/chat/<str:room_name>/\"]\non-replace = \"{policy}\"\n");
    std::fs::write(dir.join(".chat.toml.tmp"), manifest)?;
    std::fs::rename(dir.join(".chat.toml.tmp"), dir.join("chat.toml"))?;
    std::fs::copy(source, dir.join(".chat.wasm.tmp"))?;
    std::fs::rename(dir.join(".chat.wasm.tmp"), dir.join("chat.wasm"))?;
    Ok(())
}

/// The version a new connection is served by ("v1" when untagged).
async fn version_of_new_connection(url: &str) -> anyhow::Result<String> {
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await?;
    ws.send(Message::text(r#"{"message": "version?"}"#)).await?;
    loop {
        match ws.next().await.context("stream ended")?? {
            Message::Text(text) => {
                let reply: Value = serde_json::from_str(text.as_str())?;
                let _ = ws.close(None).await;
                return Ok(reply["version"].as_str().unwrap_or("v1").to_owned());
            }
            Message::Close(frame) => bail!("closed: {frame:?}"),
            _ => {}
        }
    }
}

/// What one member saw.
struct Seen {
    seqs: Vec<u64>,
    latency: Histogram<u64>,
    closed: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let plugins = root.join("target/test-plugins");
    let (v1, v2) = (plugins.join("chat.wasm"), plugins.join("v2/chat.wasm"));
    if !v2.is_file() {
        bail!(
            "no test plugins in {}: run `cargo xtask plugins` first",
            plugins.display()
        );
    }
    let dir = std::env::temp_dir().join(format!("switchyard-migrate-load-{}", std::process::id()));
    let cache = dir.with_extension("cache");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let config = Config {
        port: 0,
        plugins: dir.clone(),
        compile_cache: Some(cache.clone()),
        ..Config::default()
    };
    // Warm the compile cache with both versions, as an operator's second
    // swap would find it.
    for source in [&v2, &v1] {
        install(&dir, source, &args.policy)?;
        drop(
            Server::build(Config {
                watch_plugins: false,
                ..config.clone()
            })
            .await?,
        );
    }
    let listener = TcpListener::bind((config.bind, 0)).await?;
    let base = format!("ws://{}", listener.local_addr()?);
    let server = Server::build(config).await?;
    let layer = Arc::clone(server.host().layer());
    let (stop_server, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.serve(listener, async {
        let _ = stopped.await;
    }));

    let epoch = Instant::now();
    let mut readers = Vec::new();
    let (last_tx, last_rx) = tokio::sync::watch::channel(None::<u64>);
    for _ in 0..args.members {
        let (ws, _) = tokio_tungstenite::connect_async(format!("{base}/ws/chat/load/")).await?;
        let mut last = last_rx.clone();
        readers.push(tokio::spawn(async move {
            let (_sink, mut stream) = ws.split();
            let mut seen = Seen {
                seqs: Vec::new(),
                latency: Histogram::new(3).expect("histogram"),
                closed: false,
            };
            loop {
                if let Some(end) = *last.borrow_and_update()
                    && seen.seqs.last().is_some_and(|&seq| seq >= end)
                {
                    break;
                }
                let next = tokio::select! {
                    next = tokio::time::timeout(Duration::from_secs(5), stream.next()) => next,
                    Ok(()) = last.changed() => continue,
                };
                match next {
                    Ok(Some(Ok(Message::Text(text)))) => {
                        let frame: Value = serde_json::from_str(text.as_str()).expect("JSON");
                        let (Some(seq), Some(t)) = (
                            frame["message"]["seq"].as_u64(),
                            frame["message"]["t"].as_u64(),
                        ) else {
                            continue;
                        };
                        let now = u64::try_from(epoch.elapsed().as_micros()).unwrap_or(u64::MAX);
                        let _ = seen.latency.record(now.saturating_sub(t));
                        seen.seqs.push(seq);
                    }
                    Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => {}
                    Ok(Some(Ok(_)) | Some(Err(_)) | None) => {
                        seen.closed = true;
                        break;
                    }
                    // Nothing for 5 s after the sender stopped: the rest is lost.
                    Err(_) => break,
                }
            }
            seen
        }));
    }

    let tick = Duration::from_micros(1_000_000 / args.rate.max(1));
    let stop_sending = Arc::new(AtomicBool::new(false));
    let sender = tokio::spawn({
        let stop = Arc::clone(&stop_sending);
        async move {
            let mut seq = 0u64;
            let mut skipped = 0u64;
            let mut ticks = tokio::time::interval(tick);
            while !stop.load(Ordering::Acquire) {
                ticks.tick().await;
                let t = u64::try_from(epoch.elapsed().as_micros()).unwrap_or(u64::MAX);
                let event = json!({"type": "chat.message", "message": {"seq": seq, "t": t}});
                let report = layer
                    .group_send("chat_load", Event::from_value(event)?)
                    .await?;
                skipped += report.over_capacity as u64;
                seq += 1;
            }
            anyhow::Ok((seq.saturating_sub(1), skipped))
        }
    });

    let traffic = Duration::from_secs(args.secs);
    let warmup = Duration::from_secs(2);
    tokio::time::sleep(warmup).await;
    let every = (traffic - warmup) / u32::try_from(args.swaps.max(1)).unwrap_or(1);
    let mut landing = Histogram::<u64>::new(3)?;
    for swap in 0..args.swaps {
        let began = Instant::now();
        let (source, expected) = if swap % 2 == 0 {
            (&v2, "v2")
        } else {
            (&v1, "v1")
        };
        install(&dir, source, &args.policy)?;
        loop {
            if version_of_new_connection(&format!("{base}/ws/chat/probe/")).await? == expected {
                landing.record(u64::try_from(began.elapsed().as_micros()).unwrap_or(u64::MAX))?;
                break;
            }
            if began.elapsed() > Duration::from_secs(20) {
                bail!("swap {swap} never went live");
            }
        }
        if let Some(rest) = every.checked_sub(began.elapsed()) {
            tokio::time::sleep(rest).await;
        }
    }
    stop_sending.store(true, Ordering::Release);
    let (last, skipped) = sender.await??;
    last_tx.send_replace(Some(last));
    let mut latency = Histogram::<u64>::new(3)?;
    let (mut received, mut lost, mut members_losing, mut closed) = (0u64, 0u64, 0usize, 0usize);
    for reader in readers {
        let seen = reader.await?;
        latency.add(&seen.latency)?;
        received += seen.seqs.len() as u64;
        let missing = (last + 1).saturating_sub(seen.seqs.len() as u64);
        lost += missing;
        members_losing += usize::from(missing > 0);
        closed += usize::from(seen.closed);
    }
    let _ = stop_server.send(());
    serving.await??;
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&cache);
    let expected = (last + 1) * args.members as u64;
    let report = json!({
        "benchmark": "migrate_load",
        "policy": args.policy,
        "members": args.members,
        "rate_per_s": args.rate,
        "swaps": args.swaps,
        "events_sent": last + 1,
        "deliveries_expected": expected,
        "deliveries_received": received,
        "deliveries_lost": lost,
        "group_send_over_capacity": skipped,
        "members_losing": members_losing,
        "sockets_closed": closed,
        "latency_p50_ms": latency.value_at_quantile(0.5) as f64 / 1000.0,
        "latency_p99_ms": latency.value_at_quantile(0.99) as f64 / 1000.0,
        "latency_max_ms": latency.max() as f64 / 1000.0,
        "swap_landing_p50_ms": landing.value_at_quantile(0.5) as f64 / 1000.0,
        "swap_landing_max_ms": landing.max() as f64 / 1000.0,
        "note": "one process: the server and its clients share the machine's cores",
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    let out = root.join(format!("bench/results/migrate_load-{}.json", args.policy));
    std::fs::write(&out, serde_json::to_string_pretty(&report)? + "\n")?;
    println!("wrote {}", out.display());
    Ok(())
}
