//! A client that hangs up while its consumer's `connect` runs: the call
//! runs on to its end in a task of the server's own, so a shared instance is
//! never left halfway through a call, and the consumer is disconnected
//! afterwards, leaving the groups it joined (memory and Redis layers).

use std::sync::Arc;

use serde_json::json;
use switchyard::Counters;
use switchyard_layer::{ChannelLayer, Event, Inbox};
use switchyard_tests::redis_support::RedisServer;
use switchyard_tests::{Client, PATIENCE, TestServer, test_config, test_plugins_dir, wait_until};
use tempfile::TempDir;
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;

/// The probe under `manifest`, in a directory of its own.
fn probe_dir(manifest: &str) -> TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::copy(
        test_plugins_dir().join("probe.wasm"),
        dir.path().join("probe.wasm"),
    )
    .expect("copy plugin");
    std::fs::write(dir.path().join("probe.toml"), manifest).expect("write manifest");
    dir
}

const ROUTES: &str = "routes = [\"probe/any/<path:rest>\", \"probe/slow/<str:group>/\"]\n";

/// A channel of the test's own in `<group>-entered`, where the probe's
/// slow `connect` says it has joined `group` and is under way.
async fn watch_connect(layer: &Arc<dyn ChannelLayer>, group: &str) -> Inbox {
    let inbox = layer.new_channel();
    layer
        .group_add(&format!("{group}-entered"), inbox.name())
        .await
        .expect("join the marker group");
    inbox
}

/// Send a WebSocket handshake for `path` on a raw socket, wait until the
/// consumer's `connect` is under way, then hang up.
async fn hang_up_during_connect(server: &TestServer, path: &str, entered: &mut Inbox) {
    let mut socket = TcpStream::connect(server.addr).await.expect("connect");
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        server.addr
    );
    socket
        .write_all(request.as_bytes())
        .await
        .expect("send the handshake");
    let marker = tokio::time::timeout(PATIENCE, entered.recv())
        .await
        .expect("connect began")
        .expect("marker channel open");
    assert_eq!(marker.to_value(), json!({"type": "probe.entered"}));
    drop(socket);
}

/// Wait until the server has disconnected `count` abandoned consumers.
async fn abandoned(server: &TestServer, count: u64) {
    wait_until(server, "the abandoned consumer's disconnect", |server| {
        Counters::get(&server.counters.abandoned_handshakes) >= count
    })
    .await;
}

#[tokio::test]
async fn a_client_leaving_mid_connect_leaves_a_shared_instance_working() {
    let dir = probe_dir(&format!("{ROUTES}instance = \"shared\"\n"));
    let server = TestServer::start_with(switchyard::Config {
        plugins: dir.path().to_path_buf(),
        ..test_config()
    })
    .await;
    let layer = Arc::clone(server.host.layer());
    let mut open = Client::connect(&server, "/probe/any/open").await;
    let hello = open.recv_json().await;

    let mut entered = watch_connect(&layer, "shared").await;
    hang_up_during_connect(&server, "/probe/slow/shared/?ms=500", &mut entered).await;

    // The next handshake is served by the same, healthy instance, and the
    // connection that was open before keeps working.
    let mut next = Client::connect(&server, "/probe/any/next").await;
    let next_hello = next.recv_json().await;
    assert_ne!(next_hello["id"], hello["id"]);
    next.assert_probe_echoes("after").await;
    open.assert_probe_echoes("still here").await;
    abandoned(&server, 1).await;
    assert!(
        server.host.failures().is_empty(),
        "no guest failure: {:?}",
        server.host.failures()
    );
    open.assert_probe_echoes("and after the disconnect").await;
    server.shutdown().await.expect("clean shutdown");
}

/// After an abandoned `connect`, a group send reaches no member: the
/// consumer left the group it joined.
async fn assert_group_empty(layer: &Arc<dyn ChannelLayer>, group: &str) {
    let before = layer.stats();
    let event = Event::from_json(r#"{"type":"probe.after"}"#).expect("valid event");
    let report = layer.group_send(group, event).await.expect("group send");
    let after = layer.stats();
    assert_eq!(report.delivered + report.over_capacity, 0, "{report:?}");
    assert_eq!(
        after.undeliverable, before.undeliverable,
        "a member with no inbox is left in {group}"
    );
}

#[tokio::test]
async fn a_consumer_abandoned_in_connect_leaves_its_groups_in_memory() {
    let dir = probe_dir(ROUTES);
    let server = TestServer::start_with(switchyard::Config {
        plugins: dir.path().to_path_buf(),
        ..test_config()
    })
    .await;
    let layer = Arc::clone(server.host.layer());
    let mut entered = watch_connect(&layer, "memory").await;
    hang_up_during_connect(&server, "/probe/slow/memory/?ms=300", &mut entered).await;
    abandoned(&server, 1).await;
    assert_group_empty(&layer, "memory").await;
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn a_consumer_abandoned_in_connect_leaves_its_groups_in_redis() {
    let redis = RedisServer::start();
    let dir = probe_dir(ROUTES);
    let mut config = test_config();
    config.plugins = dir.path().to_path_buf();
    config.redis_url = Some(redis.url());
    let server = TestServer::start_with(config).await;
    let layer = Arc::clone(server.host.layer());
    let mut entered = watch_connect(&layer, "redis").await;
    hang_up_during_connect(&server, "/probe/slow/redis/?ms=300", &mut entered).await;
    abandoned(&server, 1).await;

    let mut connection = redis.connection().await;
    let members: Vec<String> = redis::cmd("ZRANGE")
        .arg("asgi:group:redis")
        .arg(0)
        .arg(-1)
        .query_async(&mut connection)
        .await
        .expect("read the group");
    assert_eq!(members, Vec::<String>::new(), "members left in Redis");
    assert_group_empty(&layer, "redis").await;
    server.shutdown().await.expect("clean shutdown");
}
