//! `cargo xtask simulate`: drives the `stations` example through its HTTP
//! API with random swaps, charge starts and completions, faults and
//! restocks at a steady rate, so a dashboard moves.
//!
//! Requests go out on a fixed schedule (`--rate` per second) from a few
//! worker threads; a 409 (nothing to swap, nothing charging) is the
//! inventory speaking, not an error, and is counted as such. Every second
//! it prints what went out and how it was answered.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};

const USAGE: &str = "\
usage: cargo xtask simulate [--url URL] [--rate PER_SECOND] [--stations N]
                            [--duration SECS] [--token JWT]

  --url       the server (default http://127.0.0.1:8000)
  --rate      changes per second (default 10)
  --stations  drive stations 1..=N (default: every station the API lists)
  --duration  stop after SECS seconds (default: run until interrupted)
  --token     a JWT with \"operator\": true, when writes need one
";

/// Worker threads sending requests: enough that a slow answer does not
/// hold up the schedule at a few hundred requests per second.
const WORKERS: usize = 8;

/// The changes and how often each is picked, out of 100: swaps dominate,
/// charging keeps up with them, faults and restocks are rare.
const MIX: &[(&str, &str, u32)] = &[
    ("swaps", "{}", 40),
    ("charging", "{}", 26),
    ("charged", "{}", 26),
    ("faults", r#"{"state": "charging"}"#, 4),
    ("restock", "{}", 4),
];

#[derive(Debug)]
struct Options {
    url: String,
    rate: f64,
    stations: Option<u64>,
    duration: Option<Duration>,
    token: Option<String>,
}

fn parse(args: &[String]) -> Result<Options> {
    let mut options = Options {
        url: "http://127.0.0.1:8000".into(),
        rate: 10.0,
        stations: None,
        duration: None,
        token: None,
    };
    let mut args = args.iter();
    while let Some(flag) = args.next() {
        let mut value = || {
            args.next()
                .with_context(|| format!("{flag} needs a value\n\n{USAGE}"))
        };
        match flag.as_str() {
            "--url" => options.url = value()?.trim_end_matches('/').to_owned(),
            "--rate" => {
                options.rate = value()?.parse().context("--rate takes a number")?;
                if !(options.rate > 0.0 && options.rate.is_finite()) {
                    bail!("--rate must be above 0");
                }
            }
            "--stations" => {
                options.stations = Some(value()?.parse().context("--stations takes a count")?);
            }
            "--duration" => {
                let secs: f64 = value()?.parse().context("--duration takes seconds")?;
                options.duration = Some(Duration::from_secs_f64(secs));
            }
            "--token" => options.token = Some(value()?.clone()),
            "-h" | "--help" => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown option {other}\n\n{USAGE}"),
        }
    }
    Ok(options)
}

/// A small xorshift generator: the simulation needs variety, not quality.
struct Rng(u64);

impl Rng {
    fn new() -> Self {
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0x9e37_79b9_7f4a_7c15, |d| d.as_nanos() as u64);
        Self(seed | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[derive(Debug, Default)]
struct Tally {
    sent: AtomicU64,
    ok: AtomicU64,
    conflict: AtomicU64,
    failed: AtomicU64,
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

/// The ids of the stations the API lists.
fn station_ids(agent: &ureq::Agent, url: &str) -> Result<Vec<u64>> {
    let list: serde_json::Value = agent
        .get(format!("{url}/api/stations/"))
        .call()
        .with_context(|| format!("cannot reach {url}: is `cargo xtask serve` running?"))?
        .body_mut()
        .read_json()
        .context("GET /api/stations/ did not answer JSON: is the stations plugin served?")?;
    let ids: Vec<u64> = list
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|station| station["id"].as_u64())
        .collect();
    if ids.is_empty() {
        bail!("GET {url}/api/stations/ listed no stations");
    }
    Ok(ids)
}

/// `cargo xtask simulate [options]`.
pub(crate) fn run(args: &[String]) -> Result<()> {
    let options = parse(args)?;
    let agent = agent();
    let mut ids = station_ids(&agent, &options.url)?;
    if let Some(n) = options.stations {
        ids.retain(|id| *id <= n);
    }
    println!(
        "simulate: {} changes/s on stations {ids:?} at {}",
        options.rate, options.url
    );

    let tally = Arc::new(Tally::default());
    let (tx, rx) = mpsc::sync_channel::<(String, &'static str)>(WORKERS * 4);
    let rx = Arc::new(std::sync::Mutex::new(rx));
    for _ in 0..WORKERS {
        let rx = Arc::clone(&rx);
        let tally = Arc::clone(&tally);
        let agent = agent.clone();
        let token = options.token.clone();
        std::thread::spawn(move || {
            loop {
                // A std mutex around `recv` only: the workers take turns
                // waiting for the next request.
                let next = rx.lock().map(|rx| rx.recv());
                let Ok(Ok((url, body))) = next else { return };
                let mut request = agent.post(&url).header("content-type", "application/json");
                if let Some(token) = &token {
                    request = request.header("authorization", format!("Bearer {token}"));
                }
                let counter = match request.send(body) {
                    Ok(reply) if reply.status() == 200 => &tally.ok,
                    Ok(reply) if reply.status() == 409 => &tally.conflict,
                    _ => &tally.failed,
                };
                counter.fetch_add(1, Ordering::Relaxed);
            }
        });
    }

    let mut rng = Rng::new();
    let total: u32 = MIX.iter().map(|(_, _, weight)| weight).sum();
    let interval = Duration::from_secs_f64(1.0 / options.rate);
    let started = Instant::now();
    let mut next = started;
    let mut report = started + Duration::from_secs(1);
    loop {
        if options.duration.is_some_and(|d| started.elapsed() >= d) {
            break;
        }
        let station = ids[rng.below(ids.len() as u64) as usize];
        let mut pick = rng.below(u64::from(total)) as u32;
        let (action, body) = MIX
            .iter()
            .find_map(|(action, body, weight)| {
                if pick < *weight {
                    Some((*action, *body))
                } else {
                    pick -= weight;
                    None
                }
            })
            .unwrap_or(("swaps", "{}"));
        let url = format!("{}/api/stations/{station}/{action}/", options.url);
        tally.sent.fetch_add(1, Ordering::Relaxed);
        if tx.send((url, body)).is_err() {
            bail!("every worker thread stopped");
        }
        next += interval;
        let now = Instant::now();
        if now >= report {
            println!(
                "simulate: sent {}  ok {}  409 {}  failed {}",
                tally.sent.load(Ordering::Relaxed),
                tally.ok.load(Ordering::Relaxed),
                tally.conflict.load(Ordering::Relaxed),
                tally.failed.load(Ordering::Relaxed),
            );
            report += Duration::from_secs(1);
        }
        if next > now {
            std::thread::sleep(next - now);
        }
    }
    drop(tx);
    Ok(())
}
