//! `--log-format json`: every line of the server's output is a JSON object,
//! and the lines about a connection carry its plugin, route and id.

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

use serde_json::{Value, json};
use switchyard_tests::redis_support::switchyard_bin;
use switchyard_tests::{Client, PATIENCE, test_plugins_dir};

/// The binary with `--log-format json`, its stdout read line by line.
struct JsonServer {
    child: Child,
    lines: mpsc::Receiver<String>,
    /// Every line read so far.
    seen: Vec<String>,
}

impl JsonServer {
    fn start() -> (Self, SocketAddr) {
        let mut child = Command::new(switchyard_bin())
            .args([
                "--log-format",
                "json",
                "serve",
                "-b",
                "127.0.0.1",
                "-p",
                "0",
                "--plugins",
            ])
            .arg(test_plugins_dir())
            // Warnings and errors only: the connection's fields must survive
            // a level filter that leaves out the span's own level.
            .env("RUST_LOG", "warn")
            .env_remove("REDIS_URL")
            .env_remove("SWITCHYARD_ADMIN_BIND")
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the switchyard binary");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut server = Self {
            child,
            lines,
            seen: Vec::new(),
        };
        let banner = server.wait_for("the start-up line", |line| {
            line["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("Switchyard listening on http://"))
        });
        let addr = banner["message"]
            .as_str()
            .and_then(|m| m.strip_prefix("Switchyard listening on http://"))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|addr| addr.parse().ok())
            .unwrap_or_else(|| panic!("no address in {banner}"));
        // Plugins load in the background once the server has bound.
        server.wait_for("the plugins loaded line", |line| {
            line["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("  plugins loaded:"))
        });
        (server, addr)
    }

    /// The next line that `wanted` picks, each line on the way parsed as
    /// JSON (a line that is not JSON fails the test).
    fn wait_for(&mut self, what: &str, wanted: impl Fn(&Value) -> bool) -> Value {
        loop {
            let line = self
                .lines
                .recv_timeout(PATIENCE)
                .unwrap_or_else(|_| panic!("{what} was never logged; saw {:#?}", self.seen));
            let value: Value = serde_json::from_str(&line)
                .unwrap_or_else(|err| panic!("a log line is not JSON ({err}): {line}"));
            assert!(value.is_object(), "a log line is not a JSON object: {line}");
            self.seen.push(line);
            if wanted(&value) {
                return value;
            }
        }
    }
}

impl Drop for JsonServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn message_contains(line: &Value, text: &str) -> bool {
    line["message"].as_str().is_some_and(|m| m.contains(text))
}

/// Blocking waits run off the test's runtime.
async fn wait_for(
    server: JsonServer,
    what: &'static str,
    wanted: impl Fn(&Value) -> bool + Send + 'static,
) -> (JsonServer, Value) {
    tokio::task::spawn_blocking(move || {
        let mut server = server;
        let line = server.wait_for(what, wanted);
        (server, line)
    })
    .await
    .expect("the reading thread")
}

#[tokio::test]
async fn json_lines_name_the_plugin_route_and_connection() {
    let (server, addr) = tokio::task::spawn_blocking(JsonServer::start)
        .await
        .expect("start");

    // A guest that panics: its stderr and the trap are logged from the
    // socket's task.
    let mut client = Client::connect_url(&format!("ws://{addr}/probe/any/json-logs")).await;
    let scope = client.recv_json().await;
    let id = scope["id"].as_u64().expect("the connection id");
    client.send_json(&json!({"cmd": "panic"})).await;
    let (code, _) = client.recv_close().await.expect("a close frame");
    assert_eq!(code, 1011);
    let (server, line) = wait_for(server, "the guest's panic", |line| {
        message_contains(line, "probe panic on request")
    })
    .await;
    let span = &line["span"];
    assert_eq!(span["plugin"], "probe", "{line}");
    assert_eq!(span["route"], "probe/any/<path:rest>", "{line}");
    assert_eq!(span["connection"], id, "{line}");

    // A failed handshake: logged by the request, before any socket.
    let refused = tokio_tungstenite::connect_async(format!("ws://{addr}/probe/trap/")).await;
    assert!(
        refused.is_err(),
        "the probe traps in connect on /probe/trap/"
    );
    let (server, line) = wait_for(server, "the failed handshake", |line| {
        message_contains(line, "WSREJECT 500")
    })
    .await;
    let span = &line["span"];
    assert_eq!(span["plugin"], "probe", "{line}");
    assert_eq!(span["route"], "probe/trap/", "{line}");
    assert!(
        span["connection"].as_u64().is_some_and(|other| other > id),
        "{line}"
    );
    drop(server);
}
