//! Fan-out through Redis across two `switchyard` processes (a measurement, not
//! a test): one chat room with `MEMBERS` sockets on each process, one sender on
//! the first; messages go out in bursts (default 20, below the default
//! capacity of 100), each burst waited for at every member. A burst of 1
//! measures latency without queueing.
//!
//! ```text
//! cargo xtask plugins && cargo test --workspace --no-run   # builds target/debug/switchyard
//! cargo run -p switchyard-tests --example redis_fanout [members-per-process] [messages] [burst]
//! ```
//!
//! Needs `redis-server` on PATH; `SWITCHYARD_BIN` may name a release binary.

use std::time::{Duration, Instant};

use serde_json::json;
use switchyard_tests::Client;
use switchyard_tests::redis_support::{RedisServer, ServerProcess};
use tokio::sync::mpsc;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    // A rank within a slice's length: small, non-negative, exactly representable.
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let index = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[index]
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let members: usize = args.next().map_or(50, |a| a.parse().expect("members"));
    let messages: usize = args.next().map_or(500, |a| a.parse().expect("messages"));
    let burst_size: usize = args.next().map_or(20, |a| a.parse().expect("burst"));
    let redis = RedisServer::start();
    let first = ServerProcess::start(&redis.url());
    let second = ServerProcess::start(&redis.url());
    let start = Instant::now();

    // (is_remote, sequence number, latency) for every delivery.
    let (tx, mut rx) = mpsc::unbounded_channel::<(bool, u64, Duration)>();
    let mut sender = None;
    for (remote, addr) in [(false, first.addr), (true, second.addr)] {
        for i in 0..members {
            let mut client = Client::connect_url(&format!("ws://{addr}/ws/chat/fanout/")).await;
            if !remote && i == 0 {
                sender = Some(client);
                continue;
            }
            let tx = tx.clone();
            tokio::spawn(async move {
                // Ends when the servers go away at the end of the run.
                while let Some(message) = client.try_recv_json(Duration::from_secs(30)).await {
                    let text = message["message"].as_str().unwrap_or_default().to_owned();
                    let Some((seq, sent_ns)) = text.split_once(':') else {
                        continue;
                    };
                    let sent = Duration::from_nanos(sent_ns.parse().unwrap_or(0));
                    let latency = start.elapsed().saturating_sub(sent);
                    if tx
                        .send((remote, seq.parse().unwrap_or(0), latency))
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    }
    let mut sender = sender.expect("a sender");
    let receivers = 2 * members - 1;
    // Let the joins settle.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut local = Vec::new();
    let mut remote = Vec::new();
    let began = Instant::now();
    let mut seq = 0u64;
    while (seq as usize) < messages {
        let burst = burst_size.min(messages - seq as usize);
        for _ in 0..burst {
            let now = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
            sender
                .send_json(&json!({"message": format!("{seq}:{now}")}))
                .await;
            seq += 1;
        }
        let wanted = burst * receivers;
        for _ in 0..wanted {
            let (is_remote, _, latency) = tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .expect("every member got the burst within 10 s (a loss?)")
                .expect("receivers alive");
            if is_remote {
                remote.push(latency)
            } else {
                local.push(latency)
            }
        }
        // The sender's own copies.
        for _ in 0..burst {
            let _ = sender.recv_json().await;
        }
    }
    let elapsed = began.elapsed();
    local.sort();
    remote.sort();
    let deliveries = local.len() + remote.len();
    // A count far below 2^52: exact as f64.
    #[allow(clippy::cast_precision_loss)]
    let rate = deliveries as f64 / elapsed.as_secs_f64();
    println!(
        "members: {members} per process x 2 processes, messages: {messages} (bursts of {burst_size})"
    );
    println!("deliveries: {deliveries} in {elapsed:.2?} = {rate:.0} deliveries/s");
    for (name, lat) in [("same process", &local), ("other process", &remote)] {
        println!(
            "latency {name:>13}: p50 {:.2?}  p99 {:.2?}  max {:.2?}  (n={})",
            percentile(lat, 0.5),
            percentile(lat, 0.99),
            lat.last().copied().unwrap_or_default(),
            lat.len()
        );
    }
}
