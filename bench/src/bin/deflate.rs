//! permessage-deflate: what it costs the server and what it saves on the
//! wire, side by side in one run with the same client (yawc, which speaks
//! deflate), against three servers in turn: deflate off, deflate on, and
//! deflate on without context takeover.
//!
//! - idle: `--idle` connections to the echo plugin, each after one
//!   chat-sized message (so its deflate state exists), then idle: server
//!   RSS per connection (VmRSS after - before, / count).
//! - chat: one client in a room of the chat plugin sends `--messages`
//!   chat-sized messages (`{"message": "..."}`, 40-200 characters of
//!   words), closed loop: bytes the client reads per message on the wire,
//!   the ratio to the plain server, and server CPU per message
//!   (utime + stime from /proc, so 10 ms ticks over the whole run).
//!
//! Run (release): `cargo xtask plugins && cargo build --release -p switchyard -p switchyard-bench
//! && target/release/deflate --server target/release/switchyard`.
//! Prints a table and writes JSON (`--json`, default
//! bench/results/<date>-deflate.json). Not a test: nothing is asserted.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser;
use futures_util::SinkExt as _;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use yawc::{Frame, OpCode, Options, WebSocket};

#[derive(Parser, Debug)]
struct Args {
    /// The switchyard binary.
    #[arg(long, default_value = "target/release/switchyard")]
    server: PathBuf,
    /// The example plugins (echo, chat).
    #[arg(long, default_value = "target/plugins")]
    plugins: PathBuf,
    /// Idle connections per server.
    #[arg(long, default_value_t = 1000)]
    idle: usize,
    /// Chat messages per server.
    #[arg(long, default_value_t = 5000)]
    messages: usize,
    /// Where to write the JSON.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// One server configuration under test.
struct Variant {
    name: &'static str,
    websocket: &'static str,
}

const VARIANTS: [Variant; 3] = [
    Variant {
        name: "plain",
        websocket: "permessage-deflate = false",
    },
    Variant {
        name: "deflate",
        websocket: "permessage-deflate = true",
    },
    Variant {
        name: "deflate-no-context",
        websocket: "permessage-deflate = true\ndeflate-server-no-context-takeover = true\n\
                    deflate-client-no-context-takeover = true",
    },
];

/// A server process, killed on drop.
struct ServerProcess {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ServerProcess {
    async fn start(args: &Args, variant: &Variant) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let dir = tempfile::tempdir()?;
        let config = dir.path().join("switchyard.toml");
        std::fs::write(
            &config,
            format!(
                "watch-plugins = false\n\n[websocket]\n{}\n",
                variant.websocket
            ),
        )?;
        let child = Command::new(&args.server)
            .arg("serve")
            .args(["-c".as_ref(), config.as_os_str()])
            .args(["--plugins".as_ref(), args.plugins.as_os_str()])
            .args(["-b", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("start {}", args.server.display()))?;
        let server = Self {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        while Client::connect(port, "/ws/echo/").await.is_err() {
            if Instant::now() > deadline {
                bail!("{} did not open /ws/echo/ within 120 s", variant.name);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(server)
    }

    fn status(&self, key: &str) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        status
            .lines()
            .find_map(|line| line.strip_prefix(key))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse().ok())
            .with_context(|| format!("{key} in /proc/<pid>/status"))
    }

    fn rss_kib(&self) -> anyhow::Result<u64> {
        self.status("VmRSS:")
    }

    /// User + system CPU time in clock ticks.
    fn cpu_ticks(&self) -> anyhow::Result<u64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))?;
        let after_name = stat.rsplit_once(')').context("/proc/<pid>/stat")?.1;
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        // Fields 14 and 15 of stat(5), counted after the name (field 2).
        Ok(fields[11].parse::<u64>()? + fields[12].parse::<u64>()?)
    }
}

/// Bytes read from the socket, below the WebSocket protocol.
#[derive(Debug)]
struct Counted {
    io: TcpStream,
    read: Arc<AtomicU64>,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        self.read
            .fetch_add((buf.filled().len() - before) as u64, Ordering::Relaxed);
        polled
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

struct Client {
    ws: WebSocket<Counted>,
    read: Arc<AtomicU64>,
}

impl Client {
    /// Connect, offering permessage-deflate with no parameters, as a
    /// browser does; the server's configuration decides.
    async fn connect(port: u16, path: &str) -> anyhow::Result<Self> {
        let io = TcpStream::connect(("127.0.0.1", port)).await?;
        io.set_nodelay(true)?;
        let read = Arc::new(AtomicU64::new(0));
        let io = Counted {
            io,
            read: Arc::clone(&read),
        };
        let url = format!("ws://127.0.0.1:{port}{path}").parse()?;
        let options = Options::default().with_balanced_compression();
        let ws = WebSocket::handshake(url, io, options).await?;
        Ok(Self { ws, read })
    }

    async fn round_trip(&mut self, text: &str) -> anyhow::Result<()> {
        self.ws.send(Frame::text(text.to_owned())).await?;
        loop {
            let frame = self.ws.next_frame().await?;
            match frame.opcode() {
                OpCode::Text => return Ok(()),
                OpCode::Close => bail!("closed by the server"),
                _ => {}
            }
        }
    }
}

/// Chat-sized messages: `{"message": "..."}` with 40-200 characters of
/// words, varied but from one vocabulary, as a chat room's are.
fn chat_messages(n: usize) -> Vec<String> {
    const WORDS: &[&str] = &[
        "the", "meeting", "is", "at", "three", "today", "can", "you", "send", "me", "report",
        "thanks", "sure", "I", "will", "check", "later", "deploy", "went", "fine", "build",
        "failed", "again", "looks", "good", "to", "merge", "please", "review", "my", "branch",
        "lunch", "anyone", "coffee", "in", "five", "minutes", "server", "is", "down", "back", "up",
        "now", "what", "about", "tomorrow", "morning", "ok", "great", "ticket", "closed",
        "customer", "called", "about", "the", "invoice", "weekend", "release", "notes", "draft",
    ];
    let mut state: u32 = 7;
    let mut next = |bound: usize| {
        state = state.wrapping_mul(1_103_515_245).wrapping_add(12345);
        (state >> 16) as usize % bound
    };
    (0..n)
        .map(|_| {
            let len = 40 + next(161);
            let mut text = String::new();
            while text.len() < len {
                if !text.is_empty() {
                    text.push(' ');
                }
                text.push_str(WORDS[next(WORDS.len())]);
            }
            json!({ "message": text }).to_string()
        })
        .collect()
}

async fn measure(args: &Args, variant: &Variant, messages: &[String]) -> anyhow::Result<Value> {
    let server = ServerProcess::start(args, variant).await?;
    // Warm: the plugins' first instances, the allocator's first arenas.
    let mut warm = Client::connect(server.port, "/ws/echo/").await?;
    warm.round_trip(&messages[0]).await?;

    let before = server.rss_kib()?;
    let mut idle = Vec::with_capacity(args.idle);
    for (i, message) in messages.iter().cycle().take(args.idle).enumerate() {
        let mut client = Client::connect(server.port, "/ws/echo/")
            .await
            .with_context(|| format!("idle connection {i}"))?;
        client.round_trip(message).await?;
        idle.push(client);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = server.rss_kib()?;
    let per_connection_kib = (after.saturating_sub(before)) as f64 / args.idle as f64;
    drop(idle);

    let mut chat = Client::connect(server.port, "/ws/chat/bench/").await?;
    chat.round_trip(&messages[0]).await?;
    let payload: usize = messages.iter().map(String::len).sum();
    let read_before = chat.read.load(Ordering::Relaxed);
    let cpu_before = server.cpu_ticks()?;
    let started = Instant::now();
    for message in messages {
        chat.round_trip(message).await?;
    }
    let elapsed = started.elapsed();
    let cpu = server.cpu_ticks()? - cpu_before;
    let wire = chat.read.load(Ordering::Relaxed) - read_before;
    let ticks_per_sec = 100.0; // USER_HZ on Linux
    let cpu_us_per_message = cpu as f64 / ticks_per_sec * 1e6 / messages.len() as f64;
    Ok(json!({
        "server": variant.name,
        "idle_connections": args.idle,
        "rss_before_kib": before,
        "rss_after_kib": after,
        "idle_kib_per_connection": per_connection_kib,
        "chat_messages": messages.len(),
        "chat_payload_bytes": payload,
        "chat_wire_bytes_received": wire,
        "wire_bytes_per_message": wire as f64 / messages.len() as f64,
        "server_cpu_us_per_message": cpu_us_per_message,
        "messages_per_sec": messages.len() as f64 / elapsed.as_secs_f64(),
    }))
}

fn default_json() -> PathBuf {
    let date = Command::new("date")
        .args(["-u", "+%Y-%m-%d"])
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .map_or_else(|| "undated".to_owned(), |d| d.trim().to_owned());
    Path::new("bench/results").join(format!("{date}-deflate.json"))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let messages = chat_messages(args.messages);
    let mut rows = Vec::new();
    for variant in &VARIANTS {
        eprintln!("== {}", variant.name);
        rows.push(measure(&args, variant, &messages).await?);
    }
    let plain_wire = rows[0]["chat_wire_bytes_received"].as_f64().unwrap_or(1.0);
    println!(
        "{:<20} {:>10} {:>12} {:>12} {:>12} {:>10}",
        "server", "idle KiB", "wire B/msg", "vs plain", "cpu us/msg", "msg/s"
    );
    for row in &mut rows {
        let wire = row["chat_wire_bytes_received"].as_f64().unwrap_or(0.0);
        row["wire_ratio_vs_plain"] = json!(wire / plain_wire);
        println!(
            "{:<20} {:>10.1} {:>12.1} {:>12.3} {:>12.1} {:>10.0}",
            row["server"].as_str().unwrap_or("?"),
            row["idle_kib_per_connection"].as_f64().unwrap_or(0.0),
            row["wire_bytes_per_message"].as_f64().unwrap_or(0.0),
            wire / plain_wire,
            row["server_cpu_us_per_message"].as_f64().unwrap_or(0.0),
            row["messages_per_sec"].as_f64().unwrap_or(0.0),
        );
    }
    let out = args.json.clone().unwrap_or_else(default_json);
    let report = json!({
        "bench": "deflate",
        "server_binary": args.server.display().to_string(),
        "rows": rows,
    });
    std::fs::write(&out, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("write {}", out.display()))?;
    eprintln!("wrote {}", out.display());
    Ok(())
}
