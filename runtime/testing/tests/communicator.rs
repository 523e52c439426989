//! The harness driving real components: the example chat (written with the
//! Rust SDK), the counter test plugin (SDK, migratable) and the probe, as
//! `cargo xtask plugins` installs them in `target/test-plugins/` (or the
//! directory in `SWITCHYARD_TEST_PLUGINS`).

use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;
use switchyard_testing::{CommunicatorError, ConnectError, Message, TestHost};

/// How long a test waits for something that should happen.
const PATIENCE: Duration = Duration::from_secs(10);
/// How long a test waits for something that should not happen.
const QUIET: Duration = Duration::from_millis(300);

fn plugin(name: &str) -> PathBuf {
    let dir = std::env::var_os("SWITCHYARD_TEST_PLUGINS").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/test-plugins"),
        PathBuf::from,
    );
    let wasm = dir.join(format!("{name}.wasm"));
    assert!(
        wasm.is_file(),
        "{} not found: run `cargo xtask plugins` first",
        wasm.display()
    );
    wasm
}

async fn chat() -> TestHost {
    TestHost::load(plugin("chat")).await.expect("chat loads")
}

#[tokio::test]
async fn two_members_of_a_room_exchange_a_message_and_another_room_hears_nothing() {
    let host = chat().await;
    let mut alice = host.connect("/ws/chat/lobby/").await.expect("alice");
    let mut bob = host.connect("/ws/chat/lobby/").await.expect("bob");
    let mut carol = host.connect("/ws/chat/kitchen/").await.expect("carol");

    alice
        .send_json_to(&json!({"message": "hi"}))
        .await
        .expect("send");
    for member in [&mut alice, &mut bob] {
        let got = member.receive_json_from(PATIENCE).await.expect("a frame");
        assert_eq!(got, json!({"message": "hi"}));
    }
    assert!(
        carol.receive_nothing(QUIET).await,
        "the kitchen heard the lobby"
    );
    // Order proves it too: carol's first frame is her own room's message.
    carol
        .send_json_to(&json!({"message": "soup"}))
        .await
        .expect("send");
    let got = carol.receive_json_from(PATIENCE).await.expect("a frame");
    assert_eq!(got, json!({"message": "soup"}));
    assert!(
        alice.receive_nothing(QUIET).await,
        "the lobby heard the kitchen"
    );

    alice.disconnect(1000).await;
    bob.disconnect(1000).await;
    carol.disconnect(1000).await;
}

#[tokio::test]
async fn bad_input_is_answered_and_the_connection_stays_open() {
    let host = chat().await;
    let mut alice = host.connect("/ws/chat/lobby/").await.expect("alice");
    alice.send_text("not json").await.expect("send");
    let got = alice.receive_json_from(PATIENCE).await.expect("a frame");
    assert_eq!(got["error"], "invalid_json", "{got}");
    alice
        .send_to(Message::Binary(vec![1, 2]))
        .await
        .expect("send");
    let got = alice.receive_json_from(PATIENCE).await.expect("a frame");
    assert_eq!(got["error"], "binary_not_supported", "{got}");
    alice
        .send_json_to(&json!({"text": "x"}))
        .await
        .expect("send");
    let got = alice.receive_json_from(PATIENCE).await.expect("a frame");
    assert_eq!(got["error"], "missing_message", "{got}");
    alice
        .send_json_to(&json!({"message": 1}))
        .await
        .expect("send");
    let got = alice.receive_json_from(PATIENCE).await.expect("a frame");
    assert_eq!(got, json!({"message": 1}));
}

#[tokio::test]
async fn refused_handshakes_and_unknown_paths_are_visible() {
    let host = chat().await;
    // A room name that cannot be part of a group name: closed with 4400
    // before accepting, which the server answers with 403.
    let err = host
        .connect("/ws/chat/no%room/")
        .await
        .expect_err("an invalid room is refused");
    assert!(
        matches!(err, ConnectError::Rejected { code: 4400, .. }),
        "{err}"
    );
    assert_eq!(err.status(), 403);
    let err = host.connect("/nowhere/").await.expect_err("no route");
    assert!(matches!(err, ConnectError::NoRoute(_)), "{err}");
    assert_eq!(err.status(), 404);
}

#[tokio::test]
async fn group_send_from_the_test_reaches_the_handler_of_its_type() {
    let host = chat().await;
    let mut alice = host.connect("/ws/chat/lobby/").await.expect("alice");
    host.group_send(
        "chat_lobby",
        &json!({"type": "chat.message", "message": "from the test"}),
    )
    .await
    .expect("group send");
    let got = alice.receive_json_from(PATIENCE).await.expect("a frame");
    assert_eq!(got, json!({"message": "from the test"}));
    // No handler for this type: logged by the SDK, nothing sent, and the
    // connection carries on.
    host.group_send(
        "chat_lobby",
        &json!({"type": "chat.unknown", "message": "x"}),
    )
    .await
    .expect("group send");
    host.channel_send(
        alice.channel_name(),
        &json!({"type": "chat.message", "message": "direct"}),
    )
    .await
    .expect("channel send");
    let got = alice.receive_json_from(PATIENCE).await.expect("a frame");
    assert_eq!(
        got,
        json!({"message": "direct"}),
        "the unknown type was not skipped"
    );
}

#[tokio::test]
async fn disconnect_leaves_the_room_and_frees_the_instance() {
    let host = chat().await;
    let mut alice = host.connect("/ws/chat/lobby/").await.expect("alice");
    let bob = host.connect("/ws/chat/lobby/").await.expect("bob");
    let event = json!({"type": "chat.message", "message": "roll call"});
    let report = host.group_send("chat_lobby", &event).await.expect("send");
    assert_eq!(report.delivered, 2, "both joined the room");
    let slots = host.host().instance_slots().0;
    bob.disconnect(1000).await;
    assert_eq!(
        host.host().instance_slots().0,
        slots - 1,
        "bob's instance is gone"
    );
    let report = host.group_send("chat_lobby", &event).await.expect("send");
    assert_eq!(report.delivered, 1, "bob left the room");
    for _ in 0..2 {
        let got = alice.receive_json_from(PATIENCE).await.expect("a frame");
        assert_eq!(got, json!({"message": "roll call"}));
    }
}

#[tokio::test]
async fn sdk_state_is_per_connection_in_a_shared_instance() {
    let manifest = "routes = [\"test/counter/\"]\ninstance = \"shared\"\n";
    let host = TestHost::load_with_manifest(plugin("counter"), manifest)
        .await
        .expect("counter loads");
    let mut one = host.connect("/test/counter/").await.expect("one");
    let mut two = host.connect("/test/counter/").await.expect("two");
    for expected in 1..=3 {
        one.send_text("a").await.expect("send");
        let got = one.receive_json_from(PATIENCE).await.expect("a frame");
        assert_eq!(got["count"], expected, "{got}");
    }
    two.send_text("b").await.expect("send");
    let got = two.receive_json_from(PATIENCE).await.expect("a frame");
    assert_eq!(
        got["count"], 1,
        "the second connection has its own count: {got}"
    );
    // A new connection after one leaves starts from the default state.
    one.disconnect(1000).await;
    let mut three = host.connect("/test/counter/").await.expect("three");
    three.send_text("c").await.expect("send");
    let got = three.receive_json_from(PATIENCE).await.expect("a frame");
    assert_eq!(got["count"], 1, "{got}");
    two.send_text("b").await.expect("send");
    let got = two.receive_json_from(PATIENCE).await.expect("a frame");
    assert_eq!(got["count"], 2, "{got}");
}

#[tokio::test]
async fn a_trap_closes_the_connection_with_1011() {
    let host = TestHost::load(plugin("probe")).await.expect("probe loads");
    let err = host
        .connect("/probe/trap/")
        .await
        .expect_err("a trap in connect");
    assert_eq!(err.status(), 500, "{err}");
    let mut probe = host.connect("/probe/any/x").await.expect("probe");
    let scope = probe.receive_json_from(PATIENCE).await.expect("the scope");
    assert_eq!(scope["path"], "/probe/any/x");
    probe
        .send_json_to(&json!({"cmd": "panic"}))
        .await
        .expect("send");
    let closed = probe.receive_close(PATIENCE).await.expect("a close");
    assert_eq!(closed.code, 1011, "{closed:?}");
    let after = probe.send_text("more").await;
    assert!(matches!(after, Err(CommunicatorError::Gone)), "{after:?}");
}

#[tokio::test]
async fn subprotocols_query_strings_and_refusals_reach_the_consumer() {
    let host = TestHost::load(plugin("probe")).await.expect("probe loads");
    let offered = vec!["chat.v2".to_owned(), "chat.v1".to_owned()];
    let mut probe = host
        .connect_with("/probe/any/x?token=abc", offered, Vec::new())
        .await
        .expect("probe");
    assert_eq!(probe.subprotocol(), Some("chat.v2"));
    let scope = probe.receive_json_from(PATIENCE).await.expect("the scope");
    assert_eq!(scope["query_string"], "token=abc");
    assert_eq!(scope["subprotocols"], json!(["chat.v2", "chat.v1"]));
    assert_eq!(scope["channel_name"], probe.channel_name());
    let err = host
        .connect("/probe/refuse/?status=429&retry=7")
        .await
        .expect_err("refused");
    assert!(
        matches!(
            err,
            ConnectError::Refused {
                status: 429,
                retry_after_secs: Some(7)
            }
        ),
        "{err}"
    );
    assert_eq!(err.status(), 429);
}
