//! The `switchyard` binary itself. Having an integration test here also makes
//! `cargo test --workspace` build the binary (with the test build's features),
//! which the multi-process Redis tests in `tests/` run.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// How long the test waits for the server to do what it should: generous,
/// because it only turns a hang into a failure on a slow machine.
const PATIENCE: Duration = Duration::from_secs(60);

/// A loopback port that refuses connections for as long as the returned
/// socket lives: bound but never listening, so no other process can take
/// the port and answer on it.
fn refusing_port() -> (tokio::net::TcpSocket, u16) {
    let socket = tokio::net::TcpSocket::new_v4().expect("a TCP socket");
    socket
        .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .expect("bind a loopback port");
    let port = socket.local_addr().expect("the bound address").port();
    (socket, port)
}

/// A running server's output, stdout and stderr, line by line as it comes.
struct Output {
    lines: Receiver<String>,
    seen: String,
}

impl Output {
    fn capture(child: &mut Child) -> Self {
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        for stream in [
            Box::new(stdout) as Box<dyn std::io::Read + Send>,
            Box::new(stderr),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        return;
                    }
                }
            });
        }
        Self {
            lines,
            seen: String::new(),
        }
    }

    /// Reads lines until `done` holds for everything seen so far.
    fn wait_for(&mut self, what: &str, done: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + PATIENCE;
        while !done(&self.seen) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push_str(&line);
                    self.seen.push('\n');
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!(
                        "no {what} within {PATIENCE:?}; the server said:\n{}",
                        self.seen
                    )
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("the server ended before {what}; it said:\n{}", self.seen)
                }
            }
        }
    }

    /// Everything, once the server has ended.
    fn rest(mut self) -> String {
        self.seen.extend(self.lines.iter().map(|line| line + "\n"));
        self.seen
    }
}

/// The address in the start-up line `Switchyard listening on http://ADDR (...)`.
fn listening_addr(output: &str) -> Option<SocketAddr> {
    output.lines().find_map(|line| {
        let rest = line.strip_prefix("Switchyard listening on http://")?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// With Redis unreachable the server still starts, says it runs the Redis
/// layer, and logs an error naming the Redis URL with its password
/// redacted, then keeps retrying. Its log, written to a pipe, has no colour
/// codes, and a plain HTTP request is not logged as a WebSocket refusal.
#[test]
fn unreachable_redis_is_logged_with_the_url_redacted_and_the_server_serves() {
    let (_refusing, redis_port) = refusing_port();
    let plugins = std::env::temp_dir();
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["serve", "-b", "127.0.0.1", "-p", "0", "--plugins"])
        .arg(&plugins)
        .env(
            "REDIS_URL",
            format!("redis://user:hunter2@127.0.0.1:{redis_port}/0"),
        )
        .env("RUST_LOG", "info")
        .env_remove("NO_COLOR")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start switchyard");
    let mut output = Output::capture(&mut child);

    // Serving while Redis is down: an HTTP request gets an HTTP answer.
    // The server binds first and loads its plugins in the background (a
    // path answers 503 until then): wait until they are loaded.
    output.wait_for("start-up line", |seen| {
        listening_addr(seen).is_some() && seen.contains("  plugins loaded:")
    });
    let addr = listening_addr(&output.seen).expect("the address");
    assert!(
        output.seen.contains("(Redis channel layer)"),
        "{}",
        output.seen
    );
    let mut stream = TcpStream::connect(addr).expect("the server accepts connections");
    stream.set_read_timeout(Some(PATIENCE)).expect("a timeout");
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .expect("send a request");
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    assert!(response.starts_with("HTTP/1.1 "), "{response:?}");

    let redacted = format!("redis://user:***@127.0.0.1:{redis_port}/0");
    output.wait_for("Redis connection error", |seen| {
        assert!(!seen.contains("hunter2"), "{seen}");
        seen.contains("cannot connect to Redis") && seen.contains(&redacted)
    });
    let _ = child.kill();
    let _ = child.wait();
    let output = output.rest();
    assert!(!output.contains("hunter2"), "{output}");
    assert!(
        !output.contains('\x1b'),
        "colour codes in a pipe: {output:?}"
    );
    assert!(output.contains("HTTP 404: no route"), "{output}");
    assert!(!output.contains("WSREJECT"), "{output}");
}
