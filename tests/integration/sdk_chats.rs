//! The tutorial chat written with the Python and JavaScript SDKs (`chat_py`,
//! `chat_js`, built by `cargo xtask plugins` into
//! `target/test-plugins/sdk/`) passes the Rust chat's tests: the tutorial
//! protocol, rooms kept apart, bad input answered, a bad room name
//! rejected; and an exception in a handler closes that one connection with
//! 1011 while the shared instance serves the others. Like the Rust chat,
//! they broadcast host-side (`group_send_frame`).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::json;
use switchyard::Config;
use switchyard_layer::Event;
use switchyard_tests::plugin_dir::PluginDir;
use switchyard_tests::{
    Client, PATIENCE, TestServer, handshake_status, test_config, test_plugins_dir,
};

/// The chats, by route prefix.
const CHATS: [&str; 2] = ["/ws/chat-py/", "/ws/chat-js/"];

/// `target/test-plugins/sdk/`, with instructions when it was not built.
fn sdk_plugins_dir() -> PathBuf {
    let dir = test_plugins_dir().join("sdk");
    assert!(
        dir.join("chat_py.wasm").is_file() && dir.join("chat_js.wasm").is_file(),
        "chat_py/chat_js not found in {}: run `cargo xtask plugins` (it builds them \
         with componentize-py and componentize-js)",
        dir.display()
    );
    dir
}

/// A server on the SDK chats only.
async fn start() -> TestServer {
    let mut config = test_config();
    config.plugins = sdk_plugins_dir();
    TestServer::start_with(config).await
}

/// Connects to `path` once the chat answers: the first connection may wait
/// for an 18 MB interpreter component to be compiled (a server that binds
/// first answers 503 meanwhile) and its shared instance to be made, which
/// takes seconds to minutes on a busy machine, so the first handshake (to a
/// room of its own) is retried with far more patience than the test client
/// has. The bound only ends a hung test; it decides no assertion.
async fn first_client(server: &TestServer, path: &str) -> Client {
    let chat = &path[..path.trim_end_matches('/').rfind('/').expect("a room") + 1];
    let url = server.url(&format!("{chat}warmup/"));
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let attempt =
            tokio::time::timeout(PATIENCE, tokio_tungstenite::connect_async(url.as_str())).await;
        if let Ok(Ok((mut ws, _))) = attempt {
            let _ = ws.close(None).await;
            break;
        }
        if Instant::now() > deadline {
            break;
        }
        // Polling a server that is still loading: give it a moment.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Client::connect(server, path).await
}

#[tokio::test]
async fn rooms_fan_out_to_every_member_and_stay_isolated() {
    let server = start().await;
    for chat in CHATS {
        let lobby_path = format!("{chat}lobby/");
        let mut lobby = vec![first_client(&server, &lobby_path).await];
        for _ in 0..2 {
            lobby.push(Client::connect(&server, &lobby_path).await);
        }
        let mut other = Client::connect(&server, &format!("{chat}other/")).await;

        lobby[0].send_json(&json!({"message": "hello lobby"})).await;
        for client in &mut lobby {
            assert_eq!(
                client.recv_json().await,
                json!({"message": "hello lobby"}),
                "{chat}"
            );
        }
        other.send_json(&json!({"message": "hello other"})).await;
        other
            .expect_nothing_before(&[json!({"message": "hello other"})])
            .await;
        lobby[0]
            .send_json(&json!({"message": {"nested": [1, 2]}}))
            .await;
        for client in &mut lobby {
            client
                .expect_nothing_before(&[json!({"message": {"nested": [1, 2]}})])
                .await;
        }
    }
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn each_senders_messages_arrive_in_order() {
    let server = start().await;
    for chat in CHATS {
        let path = format!("{chat}order/");
        let mut a = first_client(&server, &path).await;
        let mut b = Client::connect(&server, &path).await;
        for i in 0..30 {
            a.send_json(&json!({"message": i})).await;
        }
        for i in 0..30 {
            assert_eq!(b.recv_json().await, json!({"message": i}), "{chat}");
            assert_eq!(a.recv_json().await, json!({"message": i}), "{chat}");
        }
    }
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn invalid_input_gets_an_error_frame_and_the_socket_stays_open() {
    let server = start().await;
    for chat in CHATS {
        let mut client = first_client(&server, &format!("{chat}errors/")).await;

        client.send_text("{not json").await;
        let reply = client.recv_json().await;
        assert_eq!(reply["error"], "invalid_json", "{chat}: {reply}");
        assert!(reply["detail"].is_string(), "{chat}: {reply}");

        client.send_json(&json!({"text": "no message key"})).await;
        assert_eq!(
            client.recv_json().await["error"],
            "missing_message",
            "{chat}"
        );

        client.send_json(&json!(["not", "an", "object"])).await;
        assert_eq!(
            client.recv_json().await["error"],
            "missing_message",
            "{chat}"
        );

        client.send_binary(b"\x00\x01").await;
        assert_eq!(
            client.recv_json().await["error"],
            "binary_not_supported",
            "{chat}"
        );

        client.send_json(&json!({"message": "still here"})).await;
        assert_eq!(client.recv_json().await, json!({"message": "still here"}));
    }
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn a_room_name_invalid_as_a_group_name_is_rejected_with_403() {
    let server = start().await;
    for chat in CHATS {
        // Make the shared instance first, so the 403 below is the chat's.
        first_client(&server, &format!("{chat}fine/"))
            .await
            .close()
            .await;
        // "café" is not a valid Channels group name.
        let status = handshake_status(&server, &format!("{chat}caf%C3%A9/")).await;
        assert_eq!(status, 403, "{chat}");
    }
    server.shutdown().await.expect("clean shutdown");
}

/// An event type with no handler raises in the SDK's dispatch (as in
/// Channels): the SDK logs it and closes that connection with 1011; the
/// other connections of the same shared instance chat on, and new ones join.
#[tokio::test]
async fn an_exception_in_a_handler_closes_only_that_connection_with_1011() {
    let server = start().await;
    let layer = server.host.layer();
    for chat in CHATS {
        let mut doomed = first_client(&server, &format!("{chat}boom/")).await;
        let mut calm = Client::connect(&server, &format!("{chat}calm/")).await;

        let event = Event::from_json(r#"{"type":"chat.explode"}"#).expect("valid event");
        let report = layer
            .group_send("chat_boom", event)
            .await
            .expect("group send");
        assert_eq!(report.delivered, 1, "{chat}: {report:?}");
        let (code, _) = doomed.recv_close().await.expect("a close frame");
        assert_eq!(code, 1011, "{chat}");

        calm.send_json(&json!({"message": "still chatting"})).await;
        assert_eq!(calm.recv_json().await, json!({"message": "still chatting"}));
        let mut again = Client::connect(&server, &format!("{chat}boom/")).await;
        again.send_json(&json!({"message": "back"})).await;
        assert_eq!(
            again.recv_json().await,
            json!({"message": "back"}),
            "{chat}"
        );
    }
    server.shutdown().await.expect("clean shutdown");
}

/// The SDK chats broadcast as the Rust chat does, with `group_send_frame`:
/// a Switchyard member of the room that is not a chat (the probe, whose
/// `event` export would answer `{"event": e}`) gets the `{"message": m}`
/// frame written by the host, not an event; an event sent to the room from
/// elsewhere still reaches the chat's `chat_message` handler.
#[tokio::test]
async fn the_sdk_chats_send_host_side_broadcasts() {
    let dir = PluginDir::new();
    let sdk = sdk_plugins_dir();
    for name in ["chat_py", "chat_js"] {
        for ext in ["toml", "wasm"] {
            let file = format!("{name}.{ext}");
            dir.write(
                &file,
                &std::fs::read(sdk.join(&file)).expect("a built SDK chat"),
            );
        }
    }
    for ext in ["toml", "wasm"] {
        let file = format!("probe.{ext}");
        let bytes = std::fs::read(test_plugins_dir().join(&file)).expect("the built probe");
        dir.write(&file, &bytes);
    }
    let server = TestServer::start_with(Config {
        plugins: dir.path().to_path_buf(),
        ..test_config()
    })
    .await;
    for (chat, room) in CHATS.into_iter().zip(["fastpy", "fastjs"]) {
        let mut member = first_client(&server, &format!("{chat}{room}/")).await;
        let mut probe = Client::connect(&server, "/probe/layer/").await;
        probe.recv_json().await;
        let group = format!("chat_{room}");
        probe
            .send_json(&json!({"cmd": "group_add", "group": group}))
            .await;
        assert_eq!(probe.recv_json().await, json!({"ok": true}));

        member.send_json(&json!({"message": "hi"})).await;
        assert_eq!(member.recv_json().await, json!({"message": "hi"}), "{chat}");
        assert_eq!(
            probe.recv_json().await,
            json!({"message": "hi"}),
            "{chat}: the probe got the frame, not the event"
        );

        probe
            .send_json(&json!({
                "cmd": "group_send",
                "group": group,
                "event": {"type": "chat.message", "message": "from elsewhere"},
            }))
            .await;
        assert_eq!(probe.recv_json().await, json!({"ok": true}));
        assert_eq!(
            member.recv_json().await,
            json!({"message": "from elsewhere"}),
            "{chat}: chat_message still handles events"
        );
    }
    server.shutdown().await.expect("clean shutdown");
}
