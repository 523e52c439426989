//! `GET /_switchyard/metrics`: real traffic (echo and chat sockets, a
//! rejected handshake, a trapping guest, a group send, HTTP requests),
//! then a scrape parsed line by line and checked for exact values; the
//! admin token's 401/404, and `[metrics] enabled = false`; plugin loads,
//! load errors, a hot swap and a migration.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;
use switchyard::config::{AdminConfig, MetricsSection};
use switchyard_tests::http_client::{Reply, request};
use switchyard_tests::plugin_dir::{Build, PluginDir};
use switchyard_tests::{Client, PATIENCE, TestServer, handshake_status, test_config};
use tokio_tungstenite::tungstenite::Message;

const TOKEN: &str = "metrics-test-token-0123456789";
const PATH: &str = "/_switchyard/metrics";

async fn start(enabled: bool) -> TestServer {
    TestServer::start_with(switchyard::Config {
        admin: AdminConfig {
            token: Some(TOKEN.to_owned()),
            ..AdminConfig::default()
        },
        metrics: MetricsSection { enabled },
        ..test_config()
    })
    .await
}

async fn get_metrics(server: &TestServer, token: Option<&str>) -> Reply {
    let bearer = token.map(|token| format!("Bearer {token}"));
    let headers: Vec<(&str, &str)> = bearer
        .as_deref()
        .map(|value| ("authorization", value))
        .into_iter()
        .collect();
    request(server, "GET", PATH, &headers, b"").await
}

/// One sample: its labels and value.
type Samples = Vec<(String, BTreeMap<String, String>, f64)>;

/// Parse the Prometheus text format: `name{k="v",...} value` lines; `#`
/// lines are skipped. Panics on a line it cannot read.
fn parse(text: &str) -> Samples {
    let mut samples = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value in {line:?}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            other => other
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        let (name, labels) = match series.split_once('{') {
            None => (series, BTreeMap::new()),
            Some((name, rest)) => {
                let body = rest
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("unclosed labels in {line:?}"));
                (name, parse_labels(body, line))
            }
        };
        samples.push((name.to_owned(), labels, value));
    }
    samples
}

fn parse_labels(mut body: &str, line: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    while !body.is_empty() {
        let (key, rest) = body
            .split_once("=\"")
            .unwrap_or_else(|| panic!("bad label in {line:?}"));
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => {
                    if let Some((_, escaped)) = chars.next() {
                        value.push(if escaped == 'n' { '\n' } else { escaped });
                    }
                }
                Some((i, '"')) => break i,
                Some((_, c)) => value.push(c),
                None => panic!("unterminated label value in {line:?}"),
            }
        };
        labels.insert(key.to_owned(), value);
        body = rest[end + 1..].trim_start_matches(',');
    }
    labels
}

/// The value of `name` with exactly `labels`; 0 when there is no such
/// sample (a labelled counter appears once first counted).
fn value(samples: &Samples, name: &str, labels: &[(&str, &str)]) -> f64 {
    let wanted: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    samples
        .iter()
        .find(|(n, l, _)| n == name && *l == wanted)
        .map_or(0.0, |(_, _, v)| *v)
}

async fn scrape(server: &TestServer) -> Samples {
    let reply = get_metrics(server, Some(TOKEN)).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    parse(&reply.body)
}

/// Scrape until `done` holds (the server counts a close after the client
/// saw it); panics naming `what` after [`PATIENCE`].
async fn scrape_until(server: &TestServer, what: &str, done: impl Fn(&Samples) -> bool) -> Samples {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let samples = scrape(server).await;
        if done(&samples) {
            return samples;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} never showed in the metrics: {samples:#?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

const ECHO: [(&str, &str); 2] = [("plugin", "echo"), ("route", "ws/echo/")];

#[tokio::test]
async fn a_scrape_after_traffic_has_exact_counts() {
    let server = start(true).await;

    // Echo: three text messages of 5 bytes and one binary of 4, each echoed.
    let mut echo = Client::connect(&server, "/ws/echo/").await;
    for _ in 0..3 {
        echo.send_text("hello").await;
        assert_eq!(echo.recv_text().await, "hello");
    }
    echo.send_binary(b"\x00\x01\x02\x03").await;
    assert_eq!(echo.recv_binary().await, b"\x00\x01\x02\x03");
    let open = scrape(&server).await;
    assert_eq!(
        value(&open, "switchyard_websocket_open_connections", &ECHO),
        1.0
    );
    echo.close().await;

    // Chat: two sockets in one room; one message fans out to both by a
    // group send.
    let mut alice = Client::connect(&server, "/ws/chat/lobby/").await;
    let mut bob = Client::connect(&server, "/ws/chat/lobby/").await;
    alice.send_json(&json!({"message": "hi"})).await;
    assert_eq!(alice.recv_json().await["message"], "hi");
    assert_eq!(bob.recv_json().await["message"], "hi");

    // A handshake the consumer rejects (403), and one with no route (404).
    assert_eq!(handshake_status(&server, "/probe/reject/").await, 403);
    assert_eq!(handshake_status(&server, "/no/such/route/").await, 404);

    // A guest that traps: closed with 1011.
    let mut trapping = Client::connect(&server, "/probe/any/trap").await;
    let _hello = trapping.recv_json().await;
    trapping.send_json(&json!({"cmd": "panic"})).await;
    assert_eq!(trapping.recv_close().await.expect("close").0, 1011);

    // HTTP: one answered 200, one the plugin trapped in (500).
    let ok = request(&server, "GET", "/probe-http/context/", &[], b"").await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    let failed = request(&server, "GET", "/probe-http/trap/", &[], b"").await;
    assert_eq!(failed.status, 500, "{}", failed.body);

    // The echo client closed without a code (1005), the trap ended 1011;
    // their instances are gone once `disconnect` returned.
    let m = scrape_until(&server, "the echo and trap closes", |m| {
        value(m, "switchyard_websocket_closes_total", &[("code", "1005")]) == 1.0
            && value(m, "switchyard_websocket_closes_total", &[("code", "1011")]) == 1.0
            && value(m, "switchyard_instances_live", &[]) == 2.0
    })
    .await;

    // Messages and bytes, both ways, on the echo route.
    assert_eq!(
        value(&m, "switchyard_websocket_messages_received_total", &ECHO),
        4.0
    );
    assert_eq!(
        value(&m, "switchyard_websocket_messages_sent_total", &ECHO),
        4.0
    );
    assert_eq!(
        value(&m, "switchyard_websocket_received_bytes_total", &ECHO),
        19.0
    );
    assert_eq!(
        value(&m, "switchyard_websocket_sent_bytes_total", &ECHO),
        19.0
    );
    assert_eq!(
        value(&m, "switchyard_websocket_open_connections", &ECHO),
        0.0
    );
    assert_eq!(
        value(&m, "switchyard_websocket_handshakes_total", &ECHO),
        1.0
    );
    let chat = [("plugin", "chat"), ("route", "ws/chat/<str:room_name>/")];
    assert_eq!(
        value(&m, "switchyard_websocket_open_connections", &chat),
        2.0
    );
    assert_eq!(
        value(&m, "switchyard_websocket_messages_received_total", &chat),
        1.0
    );
    assert_eq!(
        value(&m, "switchyard_websocket_messages_sent_total", &chat),
        2.0
    );

    // Handshake answers: echo, two chats, the trapping probe accepted;
    // one 403, one 404.
    let status = |code: &str| {
        value(
            &m,
            "switchyard_websocket_handshake_responses_total",
            &[("status", code)],
        )
    };
    assert_eq!(status("101"), 4.0);
    assert_eq!(status("403"), 1.0);
    assert_eq!(status("404"), 1.0);
    assert_eq!(
        value(
            &m,
            "switchyard_websocket_handshakes_total",
            &[("plugin", "probe"), ("route", "probe/reject/")]
        ),
        1.0
    );

    // The layer: exactly one group send, delivered to both members.
    assert_eq!(value(&m, "switchyard_layer_group_sends_total", &[]), 1.0);
    // No TLS here: the reload counters are exported all the same, at zero.
    for name in [
        "switchyard_tls_reloads_total",
        "switchyard_tls_reload_failures_total",
    ] {
        assert!(m.iter().any(|(n, _, v)| n == name && *v == 0.0), "{name}");
    }
    assert!(value(&m, "switchyard_layer_deliveries_total", &[]) >= 2.0);

    // The trap: counted for the probe plugin, and as a forced close.
    assert_eq!(
        value(&m, "switchyard_guest_traps_total", &[("plugin", "probe")]),
        1.0
    );
    assert_eq!(
        value(
            &m,
            "switchyard_forced_closes_total",
            &[("reason", "plugin_failure")]
        ),
        1.0
    );

    // Guest calls: echo had connect and four receives at least.
    let echo_calls = value(
        &m,
        "switchyard_guest_call_duration_seconds_count",
        &[("plugin", "echo")],
    );
    assert!(echo_calls >= 5.0, "echo calls {echo_calls}");
    assert_eq!(
        value(
            &m,
            "switchyard_guest_call_duration_seconds_bucket",
            &[("plugin", "echo"), ("le", "+Inf")]
        ),
        echo_calls
    );
    assert!(
        value(
            &m,
            "switchyard_guest_call_duration_seconds_sum",
            &[("plugin", "echo")]
        ) > 0.0
    );

    // HTTP requests by plugin and status.
    let http = |code: &str| {
        value(
            &m,
            "switchyard_http_requests_total",
            &[("plugin", "http_probe"), ("status", code)],
        )
    };
    assert_eq!((http("200"), http("500")), (1.0, 1.0));

    // Plugins loaded at start, none failed.
    assert!(value(&m, "switchyard_plugin_loads_total", &[]) >= 5.0);
    assert_eq!(value(&m, "switchyard_plugin_load_errors_total", &[]), 0.0);

    alice.close().await;
    bob.close().await;
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn metrics_need_the_admin_token() {
    let server = start(true).await;
    assert_eq!(get_metrics(&server, None).await.status, 401);
    assert_eq!(get_metrics(&server, Some("wrong-token")).await.status, 401);
    let reply = get_metrics(&server, Some(TOKEN)).await;
    assert_eq!(reply.status, 200);
    assert!(
        reply
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/plain; version=0.0.4")),
        "{:?}",
        reply.headers
    );
    assert!(
        reply
            .body
            .contains("# TYPE switchyard_guest_call_duration_seconds histogram"),
        "{}",
        reply.body
    );
    server.shutdown().await.expect("clean shutdown");

    // No admin token: the admin API, metrics included, is not there.
    let server = TestServer::start_with(test_config()).await;
    assert_eq!(get_metrics(&server, Some(TOKEN)).await.status, 404);
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn metrics_disabled_answer_404_and_the_server_serves() {
    let server = start(false).await;
    assert_eq!(get_metrics(&server, Some(TOKEN)).await.status, 404);
    let mut echo = Client::connect(&server, "/ws/echo/").await;
    echo.send_message(Message::text("still echoing")).await;
    assert_eq!(echo.recv_text().await, "still echoing");
    echo.close().await;
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn loads_load_errors_swaps_and_migrations_are_counted() {
    let dir = PluginDir::new();
    let manifest = "routes = [\"test/counter/\"]\non-replace = \"migrate\"\n";
    dir.install("counter", Build::V1, manifest);
    let server = TestServer::start_with(switchyard::Config {
        plugins: dir.path().to_path_buf(),
        // Reconciled by hand below: no waiting on the watcher.
        watch_plugins: false,
        admin: AdminConfig {
            token: Some(TOKEN.to_owned()),
            ..AdminConfig::default()
        },
        ..test_config()
    })
    .await;
    let mut client = Client::connect(&server, "/test/counter/").await;
    client.send_text("a").await;
    assert_eq!(client.recv_json().await["version"], "v1");

    dir.write("broken.wasm", b"not a component");
    dir.install("counter", Build::V2, manifest);
    let report = server.host.load_dir(dir.path()).await.expect("reconcile");
    assert_eq!((report.loaded.len(), report.failed.len()), (1, 1));
    // The open socket moves to v2 on its next turn.
    let m = scrape_until(&server, "the migration", |m| {
        value(m, "switchyard_plugin_migrations_total", &[("result", "ok")]) == 1.0
    })
    .await;
    assert_eq!(value(&m, "switchyard_plugin_loads_total", &[]), 2.0);
    assert_eq!(value(&m, "switchyard_plugin_swaps_total", &[]), 1.0);
    assert_eq!(value(&m, "switchyard_plugin_load_errors_total", &[]), 1.0);
    assert_eq!(
        value(
            &m,
            "switchyard_plugin_migrations_total",
            &[("result", "failed")]
        ),
        0.0
    );
    client.send_text("b").await;
    assert_eq!(client.recv_json().await["version"], "v2");
    client.close().await;
    server.shutdown().await.expect("clean shutdown");
}
