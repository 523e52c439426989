//! `instance = "shared"`: one instance serves every connection of a plugin
//! version, each connection still its own (replies, groups, close), and a
//! failure breaks that instance only.

use serde_json::json;
use switchyard_layer::Event;
use switchyard_tests::{Client, PATIENCE, TestServer, test_config, test_plugins_dir};
use tempfile::TempDir;

/// The probe on one shared instance, capped at one instance: a second
/// per-connection instance would be refused (503).
fn shared_probe() -> TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::copy(
        test_plugins_dir().join("probe.wasm"),
        dir.path().join("probe.wasm"),
    )
    .expect("copy plugin");
    let manifest = "routes = [\"probe/any/<path:rest>\"]\ninstance = \"shared\"\n\n\
                    [limits]\nmax-instances = 1\n";
    std::fs::write(dir.path().join("probe.toml"), manifest).expect("write manifest");
    dir
}

async fn start(dir: &TempDir) -> TestServer {
    TestServer::start_with(switchyard::Config {
        plugins: dir.path().to_path_buf(),
        ..test_config()
    })
    .await
}

/// Connect to the probe; returns the client and its connection id.
async fn open(server: &TestServer, name: &str) -> (Client, u64) {
    let mut client = Client::connect(server, &format!("/probe/any/{name}")).await;
    let hello = client.recv_json().await;
    let id = hello["id"].as_u64().expect("connection id in the hello");
    (client, id)
}

#[tokio::test]
async fn one_shared_instance_serves_every_connection_as_its_own() {
    let dir = shared_probe();
    let server = start(&dir).await;
    let (mut a, id_a) = open(&server, "a").await;
    let (mut b, id_b) = open(&server, "b").await;
    let (mut c, id_c) = open(&server, "c").await;
    assert!(id_a != id_b && id_b != id_c && id_a != id_c);

    // Each reply reaches the connection that asked, however they interleave.
    for round in 0..20 {
        for (client, name) in [(&mut a, "a"), (&mut b, "b"), (&mut c, "c")] {
            client
                .send_json(&json!({"cmd": "echo", "text": format!("{name}{round}")}))
                .await;
        }
        for (client, name) in [(&mut c, "c"), (&mut a, "a"), (&mut b, "b")] {
            assert_eq!(
                client.recv_json().await,
                json!({"echo": format!("{name}{round}")})
            );
        }
    }

    // Groups are per connection: a joins, b sends, only a hears it.
    a.send_json(&json!({"cmd": "group_add", "group": "room"}))
        .await;
    assert_eq!(a.recv_json().await, json!({"ok": true}));
    b.send_json(&json!({"cmd": "group_send", "group": "room", "event": {"type": "note", "n": 1}}))
        .await;
    assert_eq!(b.recv_json().await, json!({"ok": true}));
    assert_eq!(a.recv_json().await["event"]["n"], 1);
    c.assert_probe_echoes("c heard nothing").await;

    // A plugin's close closes that connection only.
    b.send_json(&json!({"cmd": "close", "code": 4000, "reason": "bye"}))
        .await;
    assert_eq!(b.recv_close().await.expect("close").0, 4000);
    a.assert_probe_echoes("still").await;
    drop(b);

    // New connections join the same instance (max-instances = 1).
    let (mut d, _) = open(&server, "d").await;
    d.assert_probe_echoes("d").await;
    // a, c and d (b's task ends soon after its close).
    let live = server.host.resolve("/probe/any/x").expect("probe routed");
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while live.plugin.open_connections() != 3 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(live.plugin.open_connections(), 3);
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn a_trap_breaks_the_shared_instance_for_its_connections_and_a_fresh_one_serves_new_ones() {
    let dir = shared_probe();
    let server = start(&dir).await;
    let (mut a, _) = open(&server, "a").await;
    let (mut b, _) = open(&server, "b").await;
    b.assert_probe_echoes("before").await;
    b.send_json(&json!({"cmd": "group_add", "group": "room"}))
        .await;
    assert_eq!(b.recv_json().await, json!({"ok": true}));

    a.send_json(&json!({"cmd": "panic"})).await;
    assert_eq!(a.recv_close().await.expect("close").0, 1011);
    // b shared the broken instance: it is closed too, without sending.
    assert_eq!(b.recv_close().await.expect("close").0, 1011);

    // And it left its group, though its instance can no longer be called.
    // (A member still in the group either receives, or counts as
    // undeliverable once its channel is gone.)
    let layer = server.host.layer();
    let event = Event::from_json(r#"{"type": "note"}"#).expect("event");
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let undeliverable = layer.stats().undeliverable;
        let report = layer
            .group_send("room", event.clone())
            .await
            .expect("group_send");
        if report.delivered == 0 && layer.stats().undeliverable == undeliverable {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "b never left its group"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }

    // A new connection gets a fresh instance (the broken one gave its slot
    // back, or max-instances = 1 would refuse it).
    let (mut c, _) = open(&server, "c").await;
    c.assert_probe_echoes("fresh").await;
    let failures = server.host.failures();
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(
        (failures[0].traps, failures[0].deadlines),
        (1, 0),
        "{failures:?}"
    );
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn the_shipped_shared_echo_answers_each_client_on_one_instance() {
    let server = TestServer::start().await;
    let mut clients = Vec::new();
    for _ in 0..5 {
        clients.push(Client::connect(&server, "/ws/echo-shared/").await);
    }
    for (i, client) in clients.iter_mut().enumerate() {
        client.send_text(&format!("hello {i}")).await;
    }
    for (i, client) in clients.iter_mut().enumerate().rev() {
        assert_eq!(client.recv_text().await, format!("hello {i}"));
    }
    let live = server.host.resolve("/ws/echo-shared/").expect("routed");
    assert_eq!(
        live.plugin.manifest().instance,
        switchyard_host::InstanceMode::Shared
    );
    assert_eq!(live.plugin.open_connections(), 5);
    server.shutdown().await.expect("clean shutdown");
}
