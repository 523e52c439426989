//! Host-side broadcast (`host.group-send-frame`): members' sockets get the
//! ready frame from the host with no guest call, in order with the
//! connection's other frames and events, in one process, across two
//! processes on Redis, beside a channels_redis (Python) consumer; slow
//! readers are still closed; the chat example's protocol is unchanged.
//!
//! The `broadcast` test plugin answers every `event` call with
//! `{"guest_event": e, "calls": n}`, so a frame that arrives as itself (not
//! wrapped) and a later `calls` count that did not grow show that the guest
//! was not called for it.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use switchyard::{Config, Counters};
use switchyard_tests::plugin_dir::PluginDir;
use switchyard_tests::redis_support::{
    PythonListener, RedisServer, ServerProcess, python_config, python_run,
};
use switchyard_tests::{Client, TestServer, test_config};
use tokio_tungstenite::tungstenite::Message;

/// A `broadcast` member of `group`; joined once connected (the join is done
/// before accept).
async fn member(server: &TestServer, group: &str) -> Client {
    Client::connect(server, &format!("/broadcast/{group}/")).await
}

fn frame_cmd(text: &str, event: &Value) -> Value {
    json!({"cmd": "frame", "event": event, "text": text})
}

/// The frame and event of a chat message, as the chat example sends them.
fn chat_message(message: &str) -> (String, Value) {
    (
        json!({"message": message}).to_string(),
        json!({"type": "chat.message", "message": message}),
    )
}

#[tokio::test]
async fn members_get_the_frame_without_a_guest_call_in_order() {
    let server = TestServer::start().await;
    let mut a = member(&server, "room").await;
    let mut b = member(&server, "room").await;

    let (text, event) = chat_message("hi");
    a.send_json(&json!({"cmd": "send", "text": "before"})).await;
    a.send_json(&frame_cmd(&text, &event)).await;
    a.send_json(&json!({"cmd": "event", "event": {"type": "plain", "n": 1}}))
        .await;
    a.send_json(&json!({"cmd": "frame", "event": {"type": "bin"}, "binary": [0, 1, 255]}))
        .await;
    a.send_json(&json!({"cmd": "event", "event": {"type": "plain", "n": 2}}))
        .await;

    // The sender: its own send, then the group's frames and events in the
    // order they were sent.
    assert_eq!(a.recv_text().await, "before");
    for client in [&mut a, &mut b] {
        assert_eq!(client.recv_text().await, text, "the frame, byte for byte");
        assert_eq!(
            client.recv_json().await,
            json!({"guest_event": {"type": "plain", "n": 1}, "calls": 1}),
            "the guest was not called for the frame"
        );
        assert_eq!(client.recv_binary().await, vec![0, 1, 255]);
        assert_eq!(
            client.recv_json().await,
            json!({"guest_event": {"type": "plain", "n": 2}, "calls": 2}),
            "the guest was not called for the binary frame"
        );
    }
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn bad_frame_events_are_refused_with_a_clear_error() {
    let server = TestServer::start().await;
    let mut a = member(&server, "bad").await;
    // The event must not carry the reserved key itself.
    a.send_json(&frame_cmd("x", &json!({"type": "t", "__frame__": "y"})))
        .await;
    let error = a.recv_json().await;
    let text = error["error"].as_str().expect("an error");
    assert!(text.contains("__frame__"), "{text}");
    a.send_json(&frame_cmd("x", &json!({"no": "type"}))).await;
    let error = a.recv_json().await;
    assert!(error["error"].as_str().expect("an error").contains("type"));
    // The connection keeps working.
    a.send_json(&frame_cmd("ok", &json!({"type": "t"}))).await;
    assert_eq!(a.recv_text().await, "ok");
    server.shutdown().await.expect("clean shutdown");
}

/// A member whose client does not read is closed as a slow reader (1008)
/// by the frames the host writes for it, and the others get every frame.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_of_frames_is_closed_while_the_group_keeps_receiving() {
    const FRAMES: usize = 300;
    let mut config = test_config();
    config.websocket.outbound_queue = 8;
    config.layer.capacity = 1000;
    let server = TestServer::start_with(config).await;
    let slow = member(&server, "room").await;
    let mut fast = member(&server, "room").await;
    let mut sender = member(&server, "sender").await;

    let read = Arc::new(tokio::sync::Semaphore::new(4));
    let reader = tokio::spawn({
        let read = Arc::clone(&read);
        async move {
            for n in 0..FRAMES {
                let text = fast.recv_text().await;
                assert!(text.starts_with(&format!("{n}:")), "in order, none lost");
                read.add_permits(1);
            }
        }
    });
    let slow_close = tokio::spawn({
        let counters = Arc::clone(&server.counters);
        let mut slow = slow;
        async move {
            while Counters::get(&counters.slow_readers) == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            loop {
                match slow.next().await.expect("a message before the close") {
                    Message::Close(frame) => break frame.expect("a close frame with a code"),
                    _ => continue,
                }
            }
        }
    });
    let pad = "x".repeat(64 << 10);
    for n in 0..FRAMES {
        read.acquire().await.expect("open").forget();
        let mut command = frame_cmd(&format!("{n}:{pad}"), &json!({"type": "t", "n": n}));
        command["group"] = json!("room");
        sender.send_json(&command).await;
    }
    reader
        .await
        .expect("the fast member got every frame in order");
    assert_eq!(Counters::get(&server.counters.slow_readers), 1);
    let close = slow_close.await.expect("the slow reader's task");
    assert_eq!(u16::from(close.code), 1008);
    assert!(close.reason.contains("slow reader"), "{}", close.reason);
    server.shutdown().await.expect("clean shutdown");
}

/// The chat example's clients see the tutorial protocol byte for byte.
#[tokio::test]
async fn chat_frames_are_the_tutorial_protocol() {
    let server = TestServer::start().await;
    let mut a = Client::connect(&server, "/ws/chat/fast/").await;
    let mut b = Client::connect(&server, "/ws/chat/fast/").await;
    let message = json!({"text": "hé \"quoted\"", "n": [1, 2.5]});
    a.send_json(&json!({"message": message})).await;
    let expected = json!({"message": message}).to_string();
    assert_eq!(a.recv_text().await, expected);
    assert_eq!(b.recv_text().await, expected);
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn frames_cross_two_processes_on_redis() {
    let redis = RedisServer::start();
    let first = ServerProcess::start(&redis.url());
    let second = ServerProcess::start(&redis.url());
    let url = |addr: std::net::SocketAddr| format!("ws://{addr}/broadcast/both/");
    let mut clients = Vec::new();
    for addr in [first.addr, second.addr, second.addr] {
        clients.push(Client::connect_url(&url(addr)).await);
    }
    let (text, event) = chat_message("across");
    clients[0].send_json(&frame_cmd(&text, &event)).await;
    clients[0]
        .send_json(&json!({"cmd": "frame", "event": {"type": "bin"}, "binary": [7, 0, 200]}))
        .await;
    clients[0]
        .send_json(&json!({"cmd": "event", "event": {"type": "plain"}}))
        .await;
    for client in &mut clients {
        assert_eq!(client.recv_text().await, text);
        assert_eq!(client.recv_binary().await, vec![7, 0, 200]);
        assert_eq!(
            client.recv_json().await,
            json!({"guest_event": {"type": "plain"}, "calls": 1}),
            "no guest call for either frame"
        );
    }
}

/// A channels_redis consumer in the group gets the event with its type and
/// fields plus `__frame__` (str or bytes); a Python `group_send` with a
/// `__frame__` reaches Switchyard members as the frame.
#[tokio::test]
async fn python_members_get_the_event_and_python_can_send_frames() {
    let redis = RedisServer::start();
    let mut config = test_config();
    config.redis_url = Some(redis.url());
    let server = TestServer::start_with(config).await;
    let py = python_config(&redis.url(), &[]);
    let mut listener = PythonListener::start(&py, "mixed", 2).await;
    let mut a = member(&server, "mixed").await;

    let (text, event) = chat_message("to django");
    a.send_json(&frame_cmd(&text, &event)).await;
    assert_eq!(a.recv_text().await, text);
    let got = listener.next().await;
    assert_eq!(
        got["message"],
        json!({"type": "chat.message", "message": "to django", "__frame__": text})
    );
    a.send_json(&json!({"cmd": "frame", "event": {"type": "bin", "k": 1}, "binary": [1, 2]}))
        .await;
    assert_eq!(a.recv_binary().await, vec![1, 2]);
    let got = listener.next().await;
    assert_eq!(
        got["message"],
        json!({"type": "bin", "k": 1, "__frame__": {"__bytes__": "AQI="}})
    );
    assert_eq!(got["bytes_keys"], json!(["__frame__"]));

    let from_python = json!({"type": "chat.message", "message": "from django",
        "__frame__": "{\"message\": \"from django\"}"});
    python_run(&py, &["group_send", "mixed", &from_python.to_string()]).await;
    assert_eq!(a.recv_text().await, "{\"message\": \"from django\"}");
    a.send_json(&json!({"cmd": "event", "event": {"type": "plain"}}))
        .await;
    assert_eq!(
        a.recv_json().await,
        json!({"guest_event": {"type": "plain"}, "calls": 1}),
        "no guest call for Python's frame"
    );
    server.shutdown().await.expect("clean shutdown");
}

/// `tests/fixtures/echo-consumer-0.1.1.wasm` is the echo plugin as built
/// against `switchyard:consumer@0.1.1`, before `group-send-frame` was added:
/// the host (0.1.2) still loads and serves it.
#[tokio::test]
async fn a_component_built_against_wit_0_1_1_still_loads() {
    let fixture = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/echo-consumer-0.1.1.wasm"),
    )
    .expect("the 0.1.1 fixture");
    let name = b"switchyard:consumer/host@0.1.1";
    assert!(
        fixture.windows(name.len()).any(|w| w == name),
        "the fixture is a 0.1.1 build"
    );
    let dir = PluginDir::new();
    dir.write("old_echo.toml", b"routes = [\"ws/old-echo/\"]\n");
    dir.write("old_echo.wasm", &fixture);
    let server = TestServer::start_with(Config {
        plugins: dir.path().to_path_buf(),
        ..test_config()
    })
    .await;
    let mut client = Client::connect(&server, "/ws/old-echo/").await;
    client.send_text("still here").await;
    assert_eq!(client.recv_text().await, "still here");
    client.close().await;
    server.shutdown().await.expect("clean shutdown");
}
