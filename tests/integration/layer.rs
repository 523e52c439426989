//! The channel layer as plugins see it, through the `probe` test plugin:
//! groups, direct sends, layer errors, and the host leaving groups on close.

use std::time::Duration;

use serde_json::{Value, json};
use switchyard_layer::Event;
use switchyard_tests::{Client, PATIENCE, TestServer};

async fn probe(server: &TestServer) -> (Client, String) {
    let mut client = Client::connect(server, "/probe/layer/").await;
    let scope = client.recv_json().await;
    let channel = scope["channel_name"].as_str().expect("channel").to_owned();
    (client, channel)
}

async fn command(client: &mut Client, cmd: Value) -> Value {
    client.send_json(&cmd).await;
    client.recv_json().await
}

#[tokio::test]
async fn group_send_and_channel_send_reach_the_event_handler() {
    let server = TestServer::start().await;
    let (mut a, a_channel) = probe(&server).await;
    let (mut b, b_channel) = probe(&server).await;
    for client in [&mut a, &mut b] {
        let reply = command(client, json!({"cmd": "group_add", "group": "stations"})).await;
        assert_eq!(reply, json!({"ok": true}));
    }
    let event = json!({"type": "inventory.update", "station": 7, "charged": 12});
    let reply = command(
        &mut a,
        json!({"cmd": "group_send", "group": "stations", "event": event}),
    )
    .await;
    assert_eq!(reply, json!({"ok": true}));
    assert_eq!(a.recv_json().await, json!({"event": event}));
    assert_eq!(b.recv_json().await, json!({"event": event}));

    let direct = json!({"type": "swap.ready", "bay": 3});
    let reply = command(
        &mut a,
        json!({"cmd": "channel_send", "channel": b_channel, "event": direct}),
    )
    .await;
    assert_eq!(reply, json!({"ok": true}));
    assert_eq!(b.recv_json().await, json!({"event": direct}));
    // The direct send went to b only: a's next event is one sent to a after it.
    let marker = json!({"type": "marker.a"});
    let reply = command(
        &mut a,
        json!({"cmd": "channel_send", "channel": a_channel, "event": marker}),
    )
    .await;
    assert_eq!(reply, json!({"ok": true}));
    a.expect_nothing_before(&[json!({"event": marker})]).await;

    let reply = command(&mut b, json!({"cmd": "group_discard", "group": "stations"})).await;
    assert_eq!(reply, json!({"ok": true}));
    let reply = command(
        &mut a,
        json!({"cmd": "group_send", "group": "stations", "event": event}),
    )
    .await;
    assert_eq!(reply, json!({"ok": true}));
    assert_eq!(a.recv_json().await, json!({"event": event}));
    // b left the group: its next event is one sent to it after the group send.
    let marker = json!({"type": "marker.b"});
    let reply = command(
        &mut a,
        json!({"cmd": "channel_send", "channel": b_channel, "event": marker}),
    )
    .await;
    assert_eq!(reply, json!({"ok": true}));
    b.expect_nothing_before(&[json!({"event": marker})]).await;
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn bad_names_and_events_are_layer_errors_the_guest_sees() {
    let server = TestServer::start().await;
    let (mut a, _) = probe(&server).await;
    let reply = command(&mut a, json!({"cmd": "group_add", "group": "no spaces"})).await;
    assert_eq!(reply["kind"], "invalid_name", "{reply}");
    assert!(
        reply["error"].as_str().expect("text").contains("no spaces"),
        "{reply}"
    );

    let reply = command(
        &mut a,
        json!({"cmd": "group_add", "group": "x".repeat(100)}),
    )
    .await;
    assert_eq!(reply["kind"], "invalid_name", "{reply}");

    let reply = command(
        &mut a,
        json!({"cmd": "channel_send", "channel": "bad:name", "event": {"type": "a"}}),
    )
    .await;
    assert_eq!(reply["kind"], "invalid_name", "{reply}");

    // Events must be JSON objects with a string "type".
    for event in [
        json!({"no": "type"}),
        json!({"type": 5}),
        json!("not json at all"),
    ] {
        let reply = command(
            &mut a,
            json!({"cmd": "group_send", "group": "g", "event": event}),
        )
        .await;
        assert_eq!(reply["kind"], "invalid_event", "{event} -> {reply}");
    }
    // The connection is unharmed.
    assert_eq!(
        command(&mut a, json!({"cmd": "echo", "text": "ok"})).await,
        json!({"echo": "ok"})
    );
    server.shutdown().await.expect("clean shutdown");
}

/// Poll a group send from outside until it reaches `expected` members.
async fn wait_for_members(server: &TestServer, group: &str, expected: usize) {
    let layer = server.host.layer();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let event = Event::from_json(r#"{"type":"test.count"}"#).expect("valid event");
        let report = layer.group_send(group, event).await.expect("group send");
        if report.delivered == expected {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "group {group} still reaches {} members, expected {expected}",
            report.delivered
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_host_removes_a_closed_connection_from_its_groups() {
    let server = TestServer::start().await;
    let (mut stays, _) = probe(&server).await;
    let (mut leaves, _) = probe(&server).await;
    let (mut crashes, _) = probe(&server).await;
    for client in [&mut stays, &mut leaves, &mut crashes] {
        let reply = command(client, json!({"cmd": "group_add", "group": "dock"})).await;
        assert_eq!(reply, json!({"ok": true}));
    }
    wait_for_members(&server, "dock", 3).await;
    let _ = stays.recv_json().await;
    let _ = leaves.recv_json().await;
    let _ = crashes.recv_json().await;

    let undeliverable_before = server.host.layer().stats().undeliverable;
    // The probe never calls group_discard itself: the host must.
    leaves.close().await;
    crashes.send_json(&json!({"cmd": "panic"})).await;
    let (code, _) = crashes.recv_close().await.expect("close");
    assert_eq!(code, 1011);

    wait_for_members(&server, "dock", 1).await;
    assert_eq!(
        server.host.layer().stats().undeliverable,
        undeliverable_before,
        "no event went to a channel that is gone"
    );
    assert_eq!(stays.recv_json().await["event"]["type"], "test.count");
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn a_burst_of_frames_arrives_complete_and_in_order() {
    let server = TestServer::start().await;
    let (mut a, _) = probe(&server).await;
    a.send_json(&json!({"cmd": "send_many", "count": 500}))
        .await;
    for i in 0..500 {
        assert_eq!(a.recv_json().await, json!({"seq": i}));
    }
    server.shutdown().await.expect("clean shutdown");
}
