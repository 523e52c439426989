//! Components built against the 0.1 contract (`wit/v0.1`) on the current
//! host: the `legacy_chat` test plugin imports `switchyard:consumer/host@0.1.2`
//! and exports `websocket-consumer@0.1.2` (and, for HTTP, imports
//! `http-context@0.1.2`), and must load and behave as before.

use serde_json::json;
use switchyard_tests::http_client::get;
use switchyard_tests::{Client, TestServer};

#[tokio::test]
async fn a_0_1_component_gets_the_record_scope_and_chats_through_its_group() {
    let server = TestServer::start().await;
    let mut alice = Client::connect(&server, "/legacy/chat/lobby/?x=1").await;
    let scope = alice.recv_json().await;
    assert_eq!(
        (
            &scope["path"],
            &scope["query_string"],
            &scope["route"],
            &scope["url_route"],
        ),
        (
            &json!("/legacy/chat/lobby/"),
            &json!("x=1"),
            &json!("legacy/chat/<str:room_name>/"),
            &json!({"room_name": "lobby"}),
        )
    );
    assert!(
        scope["client"]
            .as_str()
            .is_some_and(|client| client.starts_with("127.0.0.1:")),
        "{scope}"
    );
    let mut bob = Client::connect(&server, "/legacy/chat/lobby/").await;
    bob.recv_json().await;

    // receive → group-send@0.1.2 → event@0.1.2 on every member.
    alice.send_text("hello from 0.1").await;
    assert_eq!(
        alice.recv_json().await,
        json!({"message": "hello from 0.1"})
    );
    assert_eq!(bob.recv_json().await, json!({"message": "hello from 0.1"}));

    // A binary frame crosses the 0.1 `frame` unchanged.
    bob.send_binary(&[0, 1, 255]).await;
    assert_eq!(bob.recv_binary().await, vec![0, 1, 255]);
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn a_0_2_component_reaches_a_0_1_component_through_the_layer() {
    let server = TestServer::start().await;
    let mut legacy = Client::connect(&server, "/legacy/chat/mixed/").await;
    legacy.recv_json().await;
    // The probe is built against 0.2: its group-send reaches the 0.1
    // consumer's `event` export.
    let mut probe = Client::connect(&server, "/probe/scope/1/a/").await;
    probe.recv_json().await;
    probe
        .send_json(&json!({
            "cmd": "group_send",
            "group": "legacy_mixed",
            "event": {"type": "chat.message", "message": "from 0.2"},
        }))
        .await;
    assert_eq!(probe.recv_json().await, json!({"ok": true}));
    assert_eq!(legacy.recv_json().await, json!({"message": "from 0.2"}));

    // And the other way: the 0.1 consumer's group-send reaches the probe.
    probe
        .send_json(&json!({"cmd": "group_add", "group": "legacy_mixed"}))
        .await;
    assert_eq!(probe.recv_json().await, json!({"ok": true}));
    legacy.send_text("from 0.1").await;
    assert_eq!(legacy.recv_json().await, json!({"message": "from 0.1"}));
    let event = probe.recv_json().await;
    assert_eq!(
        event,
        json!({"event": {"type": "chat.message", "message": "from 0.1"}})
    );
    server.shutdown().await.expect("clean shutdown");
}

/// The 0.1 `http-context` and `host` reach an HTTP handler built against
/// 0.1: the view learns its route and kwargs and publishes to a room whose
/// 0.1 WebSocket member gets the message.
#[tokio::test]
async fn a_0_1_http_handler_sees_its_context_and_publishes_to_the_room() {
    let server = TestServer::start().await;
    let mut member = Client::connect(&server, "/legacy/chat/http/").await;
    member.recv_json().await;
    let reply = get(&server, "/legacy/say/http/hello/").await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.json(),
        json!({
            "ok": true,
            "route": "legacy/say/<str:room_name>/<str:message>/",
            "url_route": {"room_name": "http", "message": "hello"},
        })
    );
    assert_eq!(member.recv_json().await, json!({"message": "hello"}));
    // A layer error reaches the 0.1 view as its 0.1 case.
    let reply = get(&server, "/legacy/say/a%20b/x/").await;
    assert_eq!(
        (reply.status, reply.json()["kind"].clone()),
        (400, json!("invalid_name"))
    );
    server.shutdown().await.expect("clean shutdown");
}
