//! HTTP instance reuse (`[http] reuse-instances`): an idle instance serves
//! the next request; a trap, a deadline or a client that goes away drops
//! it; slots, 503 answers and hot swap behave as without reuse.
//!
//! The `http_probe` plugin counts the requests an instance has served in a
//! global (`/probe-http/count/` answers it), so a count above 1 proves the
//! instance was reused and a 1 proves it is fresh.

use serde_json::json;
use switchyard_layer::Event;
use switchyard_tests::http_client::{LineStream, get};
use switchyard_tests::plugin_dir::{Build, PluginDir};
use switchyard_tests::{TestServer, test_config, wait_until};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const PROBE_ROUTES: &str =
    "http-routes = [\"probe-http/<str:action>/\", \"probe-http/<str:action>/<int:n>/\"]\n";

/// The probe's manifest with reuse on or off and `limits` (a TOML table
/// body, may be empty).
fn probe_manifest(reuse: bool, limits: &str) -> String {
    format!(
        "{PROBE_ROUTES}[http]\nreuse-instances = {reuse}\n[limits]\ncall-timeout-ms = 1000\n{limits}"
    )
}

/// A server whose plugin directory holds only `http_probe` with
/// `manifest`; `max_instances` is the server-wide cap.
async fn probe_alone(manifest: &str, max_instances: Option<u32>) -> (PluginDir, TestServer) {
    let dir = PluginDir::new();
    dir.install("http_probe", Build::V1, manifest);
    let mut config = test_config();
    config.plugins = dir.path().to_path_buf();
    if let Some(cap) = max_instances {
        config.guest.max_instances = cap;
    }
    let server = TestServer::start_with(config).await;
    (dir, server)
}

/// What `/probe-http/count/` answers.
async fn count(server: &TestServer) -> u64 {
    let reply = get(server, "/probe-http/count/").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.json()["count"].as_u64().expect("a count")
}

/// `count` once the plugin's slot is free again (503 until then).
async fn count_when_free(server: &TestServer) -> u64 {
    loop {
        let reply = get(server, "/probe-http/count/").await;
        match reply.status {
            200 => return reply.json()["count"].as_u64().expect("a count"),
            503 => tokio::task::yield_now().await,
            other => panic!("unexpected {other}: {}", reply.body),
        }
    }
}

/// Lets every `/probe-http/hold/` request go: the probe's held requests
/// wait for a `release` event on the `probe_hold` group.
async fn release_holds(server: &TestServer) {
    let event = Event::from_json(r#"{"type": "release"}"#).expect("an event");
    server
        .host
        .layer()
        .group_send("probe_hold", event)
        .await
        .expect("group send");
}

#[tokio::test]
async fn with_reuse_an_instance_serves_request_after_request() {
    let (_dir, server) = probe_alone(&probe_manifest(true, ""), None).await;
    for expected in 1..=4 {
        assert_eq!(count(&server).await, expected);
    }
    // Idle instances hold no slot.
    assert_eq!(server.host.instance_slots().0, 0);
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn without_reuse_every_request_gets_a_fresh_instance() {
    let (_dir, server) = probe_alone(&probe_manifest(false, ""), None).await;
    for _ in 0..4 {
        assert_eq!(count(&server).await, 1);
    }
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn a_trap_or_a_deadline_drops_the_instance_and_the_next_request_succeeds() {
    let (_dir, server) = probe_alone(&probe_manifest(true, ""), None).await;
    for (action, status) in [("trap", 500), ("spin", 504), ("sleep", 504)] {
        assert_eq!(count(&server).await, 1, "before {action}");
        assert_eq!(count(&server).await, 2, "before {action}");
        // The failing request takes the idle instance (its third request).
        let reply = get(&server, &format!("/probe-http/{action}/")).await;
        assert_eq!(reply.status, status, "{action}: {}", reply.body);
        // Dropped: the next request runs on a fresh instance.
        assert_eq!(count(&server).await, 1, "after {action}");
        assert_eq!(count(&server).await, 2, "after {action}");
        // Start the next round on a fresh instance as well.
        let reply = get(&server, "/probe-http/trap/").await;
        assert_eq!(reply.status, 500);
    }
    // A trap after the response head (the body is cut) drops it too.
    assert_eq!(count(&server).await, 1);
    assert_eq!(count(&server).await, 2);
    let mut stream = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    stream
        .write_all(b"GET /probe-http/cut/ HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut answer = Vec::new();
    // The connection is cut where the body stopped (an error or an end).
    let _ = stream.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(count(&server).await, 1, "after cut");
    let failures = server.host.failures();
    let probe = failures
        .iter()
        .find(|f| f.plugin == "http_probe")
        .expect("http_probe failures counted");
    assert_eq!(probe.deadlines, 2, "{probe:?}");
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn a_client_that_leaves_mid_body_does_not_give_its_instance_back() {
    let (_dir, server) = probe_alone(&probe_manifest(true, "max-instances = 1\n"), None).await;
    assert_eq!(count(&server).await, 1);
    assert_eq!(count(&server).await, 2);
    // A long stream on the idle instance (its third request); the client
    // reads its first line and goes away.
    let mut stream = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    stream
        .write_all(b"GET /probe-http/stream/100000000/ HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .expect("write");
    let mut seen = Vec::new();
    let mut buf = [0_u8; 1024];
    while !String::from_utf8_lossy(&seen).contains("line 0") {
        let n = stream.read(&mut buf).await.expect("read");
        assert!(n > 0, "closed early");
        seen.extend_from_slice(&buf[..n]);
    }
    drop(stream);
    // Its slot comes back, its instance does not: the next request is the
    // first of a fresh instance.
    assert_eq!(count_when_free(&server).await, 1);
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn over_capacity_is_503_as_without_reuse_and_idle_instances_hold_no_slot() {
    // Two slots for the plugin and two for the whole server.
    let (_dir, server) = probe_alone(&probe_manifest(true, "max-instances = 2\n"), Some(2)).await;
    let mut first = LineStream::open(&server, "/probe-http/hold/").await;
    first.expect_line("held").await;
    let mut second = LineStream::open(&server, "/probe-http/hold/").await;
    second.expect_line("held").await;
    let reply = get(&server, "/probe-http/count/").await;
    assert_eq!(reply.status, 503, "{}", reply.body);
    assert_eq!(reply.header("retry-after"), Some("1"));
    // Release both; they end cleanly and go back to the pool.
    release_holds(&server).await;
    first.expect_line("released").await;
    second.expect_line("released").await;
    assert_eq!(first.next_line().await, None);
    assert_eq!(second.next_line().await, None);
    wait_until(&server, "both slots given back", |s| {
        s.host.instance_slots().0 == 0
    })
    .await;
    // Two idle instances and no slot held: two requests at once both get
    // a slot, and a third is 503 again.
    let (a, b) = tokio::join!(
        LineStream::open(&server, "/probe-http/hold/"),
        LineStream::open(&server, "/probe-http/hold/")
    );
    assert_eq!((a.status, b.status), (200, 200));
    let reply = get(&server, "/probe-http/count/").await;
    assert_eq!(reply.status, 503, "{}", reply.body);
    let (mut a, mut b) = (a, b);
    a.expect_line("held").await;
    b.expect_line("held").await;
    release_holds(&server).await;
    a.expect_line("released").await;
    b.expect_line("released").await;
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn a_swap_with_reuse_serves_new_requests_with_the_new_version() {
    let (dir, server) = probe_alone(&probe_manifest(true, ""), None).await;
    assert_eq!(count(&server).await, 1);
    assert_eq!(count(&server).await, 2);
    let old = server.host.status()[0].version.clone().expect("live");
    // The same component under a changed manifest is a new version.
    dir.install(
        "http_probe",
        Build::V1,
        &format!("{}# v2\n", probe_manifest(true, "")),
    );
    wait_until(&server, "the new version is live", |s| {
        s.host.status()[0].version.as_deref() != Some(old.as_str())
    })
    .await;
    // The old version's idle instance is gone with it: the new version
    // starts from a fresh instance and reuses its own.
    assert_eq!(count(&server).await, 1);
    assert_eq!(count(&server).await, 2);
    assert_eq!(
        get(&server, "/probe-http/nothing/").await.json(),
        json!({"error": "unknown_action"})
    );
    server.shutdown().await.expect("clean shutdown");
}
