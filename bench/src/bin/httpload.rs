//! The HTTP benchmark client: keep-alive HTTP/1.1 connections, each in a
//! closed loop (send a GET, read the whole answer, send the next), for a
//! fixed time after a warm-up. Prints one JSON line: requests/s, latency
//! p50/p99/p999, non-200 answers and failed connections.
//!
//! ```text
//! httpload --url http://127.0.0.1:8000/api/hello/bench/ --conns 50 --secs 10
//! ```

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt as _, Empty};
use hyper::body::Bytes;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::sync::watch;

#[derive(Debug, Parser)]
struct Cli {
    /// The `http://host:port/path` to GET.
    #[arg(long)]
    url: String,
    /// Keep-alive connections, each with one request in flight.
    #[arg(long, default_value_t = 50)]
    conns: usize,
    /// Measured seconds (after the warm-up).
    #[arg(long, default_value_t = 10.0)]
    secs: f64,
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
}

/// What one connection measured.
struct Tally {
    latency: Histogram<u64>,
    not_ok: u64,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let out = runtime.block_on(run(cli))?;
    println!("{out}");
    Ok(())
}

async fn run(cli: Cli) -> anyhow::Result<serde_json::Value> {
    let uri: hyper::Uri = cli.url.parse().context("--url")?;
    let authority = uri.authority().context("--url needs host:port")?.clone();
    let warm_until = Instant::now() + Duration::from_secs_f64(cli.warmup);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    for _ in 0..cli.conns {
        let stream = tokio::net::TcpStream::connect(authority.as_str()).await?;
        stream.set_nodelay(true)?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        tasks.push(tokio::spawn(request_loop(
            sender,
            uri.clone(),
            warm_until,
            stop_rx.clone(),
        )));
    }
    tokio::time::sleep_until(warm_until.into()).await;
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(cli.secs)).await;
    let _ = stop_tx.send(true);
    let elapsed = started.elapsed().as_secs_f64();
    let mut latency = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    let (mut not_ok, mut failed) = (0, 0);
    for task in tasks {
        match task.await? {
            Ok(tally) => {
                latency.add(&tally.latency)?;
                not_ok += tally.not_ok;
            }
            Err(_) => failed += 1,
        }
    }
    Ok(json!({
        "scenario": "http",
        "conns": cli.conns,
        "secs": elapsed,
        "requests": latency.len(),
        "requests_per_s": latency.len() as f64 / elapsed,
        "latency": {
            "samples": latency.len(),
            "p50_us": latency.value_at_quantile(0.5),
            "p99_us": latency.value_at_quantile(0.99),
            "p999_us": latency.value_at_quantile(0.999),
            "mean_us": latency.mean(),
            "max_us": latency.max(),
        },
        "not_ok": not_ok,
        "failed_conns": failed,
    }))
}

async fn request_loop(
    mut sender: http1::SendRequest<Empty<Bytes>>,
    uri: hyper::Uri,
    warm_until: Instant,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<Tally> {
    let host = uri.authority().map(ToString::to_string).unwrap_or_default();
    let path = uri
        .path_and_query()
        .map_or("/", |pq| pq.as_str())
        .to_owned();
    let mut tally = Tally {
        latency: Histogram::new_with_bounds(1, 600_000_000, 3)?,
        not_ok: 0,
    };
    while !*stop.borrow() {
        let request = hyper::Request::get(path.as_str())
            .header(hyper::header::HOST, host.as_str())
            .body(Empty::<Bytes>::new())?;
        sender.ready().await?;
        let sent = Instant::now();
        let response = sender.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        if body.is_empty() {
            bail!("empty body");
        }
        if sent >= warm_until {
            let micros = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
            tally.latency.record(micros.max(1))?;
            if status != hyper::StatusCode::OK {
                tally.not_ok += 1;
            }
        }
    }
    Ok(tally)
}
