//! permessage-deflate (RFC 7692), with a client that speaks it: Python's
//! `websockets` (pinned in tests/python/requirements.txt), which counts
//! the bytes on the wire below its protocol layer, so compressed sizes.

use std::process::Stdio;

use serde_json::{Value, json};
use switchyard::Config;
use switchyard::config::WebSocketConfig;
use switchyard_tests::redis_support::{python, repo_root};
use switchyard_tests::{Client, TestServer, ping_until_pong, test_config};
use tokio::io::AsyncWriteExt as _;

/// A test server configuration with `websocket` changed by `change`.
fn config(change: impl FnOnce(&mut WebSocketConfig)) -> Config {
    let mut config = test_config();
    change(&mut config.websocket);
    config
}

/// Deflate on, with the other settings at their defaults.
fn deflate_on() -> Config {
    config(|ws| ws.permessage_deflate = true)
}

/// Run tests/python/deflate_client.py with `plan` (its docstring says how)
/// and return what it printed.
async fn python_client(server: &TestServer, path: &str, mut plan: Value) -> Value {
    plan["url"] = json!(server.url(path));
    let mut child = tokio::process::Command::new(python())
        .arg(repo_root().join("tests/python/deflate_client.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run deflate_client.py");
    // On stdin: a plan holds megabytes, more than a command line takes.
    let mut stdin = child.stdin.take().expect("piped stdin");
    stdin
        .write_all(plan.to_string().as_bytes())
        .await
        .expect("write the plan");
    drop(stdin);
    let output = child
        .wait_with_output()
        .await
        .expect("deflate_client.py runs");
    assert!(
        output.status.success(),
        "deflate_client.py failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("deflate_client.py prints JSON")
}

/// Websockets' default offer: `permessage-deflate; client_max_window_bits`.
fn default_offer() -> Value {
    json!({})
}

/// `n` characters that compress badly on their own (a pseudo-random
/// sequence) but perfectly against an earlier copy of themselves.
fn noise(n: usize) -> String {
    let alphabet: Vec<char> = ('a'..='z').chain('A'..='Z').chain('0'..='9').collect();
    let mut state: u32 = 12345;
    (0..n)
        .map(|_| {
            state = state.wrapping_mul(1_103_515_245).wrapping_add(12345);
            alphabet[(state >> 16) as usize % alphabet.len()]
        })
        .collect()
}

fn sizes(result: &Value, key: &str) -> Vec<u64> {
    result[key]
        .as_array()
        .unwrap_or_else(|| panic!("{key} in {result}"))
        .iter()
        .map(|n| n.as_u64().expect("a byte count"))
        .collect()
}

#[tokio::test]
async fn negotiated_only_when_configured_and_offered() {
    let text = "a".repeat(4000);
    let plan = |offer: Value| json!({"offer": offer, "send": [text]});

    // Off (the default): the offer is ignored and nothing is compressed.
    let off = TestServer::start().await;
    let result = python_client(&off, "/ws/echo/", plan(default_offer())).await;
    assert_eq!(result["extensions"], Value::Null, "{result}");
    assert_eq!(result["replies"], json!([text]));
    assert!(sizes(&result, "received_bytes")[0] > 4000, "{result}");
    off.shutdown().await.expect("clean shutdown");

    let on = TestServer::start_with(deflate_on()).await;
    // On, but the client offers nothing: a plain connection.
    let result = python_client(&on, "/ws/echo/", plan(Value::Null)).await;
    assert_eq!(result["extensions"], Value::Null, "{result}");
    assert_eq!(result["replies"], json!([text]));
    assert!(sizes(&result, "received_bytes")[0] > 4000, "{result}");
    // On and offered: agreed, answering only what the client offered.
    let result = python_client(&on, "/ws/echo/", plan(default_offer())).await;
    assert_eq!(result["extensions"], "permessage-deflate", "{result}");
    assert_eq!(result["replies"], json!([text]));
    let result = python_client(
        &on,
        "/ws/echo/",
        plan(json!({"server_no_context_takeover": true, "server_max_window_bits": 12})),
    )
    .await;
    assert_eq!(
        result["extensions"],
        "permessage-deflate; server_no_context_takeover; server_max_window_bits=12",
        "{result}"
    );
    assert_eq!(result["replies"], json!([text]));
    // A plain tungstenite client beside them is unaffected.
    let mut plain = Client::connect(&on, "/ws/echo/").await;
    plain.send_text("plain").await;
    assert_eq!(plain.recv_text().await, "plain");
    plain.close().await;
    on.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn echo_and_chat_travel_compressed_both_ways() {
    let server = TestServer::start_with(deflate_on()).await;
    let chat = json!({"message": format!("hello {}", "la ".repeat(1000))}).to_string();
    let texts = ["x".repeat(10_000), "hello ".repeat(500)];
    let result = python_client(
        &server,
        "/ws/echo/",
        json!({"offer": default_offer(), "send": texts}),
    )
    .await;
    assert_eq!(result["extensions"], "permessage-deflate", "{result}");
    assert_eq!(result["replies"], json!(texts), "decompressed both ways");
    for (i, text) in texts.iter().enumerate() {
        let sent = sizes(&result, "sent_bytes")[i];
        let received = sizes(&result, "received_bytes")[i];
        assert!(
            sent * 10 < text.len() as u64,
            "client→server {sent} B: {result}"
        );
        assert!(
            received * 10 < text.len() as u64,
            "server→client {received} B: {result}"
        );
    }

    let result = python_client(
        &server,
        "/ws/chat/deflate/",
        json!({"offer": default_offer(), "send": [chat]}),
    )
    .await;
    assert_eq!(result["extensions"], "permessage-deflate", "{result}");
    let reply: Value = serde_json::from_str(result["replies"][0].as_str().expect("a reply"))
        .expect("chat replies JSON");
    assert_eq!(reply.to_string(), chat);
    let received = sizes(&result, "received_bytes")[0];
    assert!(
        received * 10 < chat.len() as u64,
        "chat reply {received} B: {result}"
    );
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn messages_below_the_threshold_go_uncompressed() {
    let text = "b".repeat(50);
    let plan = json!({"offer": default_offer(), "send": [text]});
    let server = TestServer::start_with(deflate_on()).await;
    let result = python_client(&server, "/ws/echo/", plan.clone()).await;
    assert_eq!(result["replies"], json!([text]));
    // 2 header bytes and the 50 bytes as they are.
    assert_eq!(sizes(&result, "received_bytes"), [52], "{result}");
    server.shutdown().await.expect("clean shutdown");

    let server = TestServer::start_with(config(|ws| {
        ws.permessage_deflate = true;
        ws.deflate_threshold = 0;
    }))
    .await;
    let result = python_client(&server, "/ws/echo/", plan).await;
    assert_eq!(result["replies"], json!([text]));
    assert!(sizes(&result, "received_bytes")[0] < 20, "{result}");
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn a_message_inflating_past_the_limit_closes_with_1009() {
    let server = TestServer::start_with(config(|ws| {
        ws.permessage_deflate = true;
        ws.max_message_size = 64 << 10;
        ws.max_frame_size = 64 << 10;
    }))
    .await;
    // 4 MiB of one letter: about 4 KiB on the wire.
    let bomb = "z".repeat(4 << 20);
    let result = python_client(
        &server,
        "/ws/echo/",
        json!({"offer": default_offer(), "send": [bomb]}),
    )
    .await;
    assert!(sizes(&result, "sent_bytes")[0] < 64 << 10, "{result}");
    assert_eq!(result["close_code"], 1009, "{result}");
    assert_eq!(result["replies"], json!([]));

    // At the limit passes; the server serves on.
    let fits = "z".repeat(64 << 10);
    let result = python_client(
        &server,
        "/ws/echo/",
        json!({"offer": default_offer(), "send": [fits]}),
    )
    .await;
    assert_eq!(result["replies"], json!([fits]), "{result}");
    assert_eq!(result["close_code"], Value::Null);
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn context_takeover_carries_over_unless_switched_off() {
    // The same 3000 characters twice: the second compresses to almost
    // nothing against the first, unless each message starts afresh.
    let text = noise(3000);
    let plan = json!({"offer": default_offer(), "send": [text, text]});

    let server = TestServer::start_with(deflate_on()).await;
    let result = python_client(&server, "/ws/echo/", plan.clone()).await;
    assert_eq!(result["replies"], json!([text, text]));
    let received = sizes(&result, "received_bytes");
    let sent = sizes(&result, "sent_bytes");
    assert!(
        received[1] * 10 < received[0],
        "server keeps context: {result}"
    );
    assert!(
        sent[1] * 10 < sent[0],
        "server inflates with context: {result}"
    );
    server.shutdown().await.expect("clean shutdown");

    let server = TestServer::start_with(config(|ws| {
        ws.permessage_deflate = true;
        ws.deflate_server_no_context_takeover = true;
        ws.deflate_client_no_context_takeover = true;
    }))
    .await;
    let result = python_client(&server, "/ws/echo/", plan).await;
    assert_eq!(
        result["extensions"],
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
        "{result}"
    );
    assert_eq!(result["replies"], json!([text, text]));
    let received = sizes(&result, "received_bytes");
    let sent = sizes(&result, "sent_bytes");
    assert_eq!(received[0], received[1], "each message afresh: {result}");
    assert_eq!(
        sent[0], sent[1],
        "the client was told to start afresh: {result}"
    );
    assert!(received[0] < 3000, "still compressed: {result}");
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn the_server_window_is_held_to_what_was_agreed() {
    // A 1 KiB window: the repeat of a 3000-character message lies beyond
    // it, so a server compressing with a larger window would send
    // references the client's 1 KiB inflater rejects.
    let server = TestServer::start_with(config(|ws| {
        ws.permessage_deflate = true;
        ws.deflate_server_max_window_bits = 10;
        ws.deflate_client_max_window_bits = 9;
    }))
    .await;
    let text = noise(3000);
    let result = python_client(
        &server,
        "/ws/echo/",
        json!({"offer": {"client_max_window_bits": true}, "send": [text, text]}),
    )
    .await;
    assert_eq!(
        result["extensions"],
        "permessage-deflate; server_max_window_bits=10; client_max_window_bits=9",
        "{result}"
    );
    assert_eq!(result["replies"], json!([text, text]), "{result}");
    assert_eq!(result["close_code"], Value::Null);
    server.shutdown().await.expect("clean shutdown");
}

/// A tungstenite client offering permessage-deflate: the server serves it
/// on its deflate socket. Its own frames go uncompressed (RSV1 clear),
/// which RFC 7692 allows, so it can send raw frames the test shapes.
async fn offering_tungstenite_client(
    server: &TestServer,
    path: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
    let mut request = server.url(path).into_client_request().expect("a request");
    request.headers_mut().insert(
        "sec-websocket-extensions",
        "permessage-deflate".parse().expect("a header value"),
    );
    let (ws, response) = tokio_tungstenite::connect_async(request)
        .await
        .expect("handshake");
    assert_eq!(
        response.headers()["sec-websocket-extensions"],
        "permessage-deflate"
    );
    ws
}

#[tokio::test]
async fn deflate_sockets_count_against_the_unfinished_budget() {
    use futures_util::{SinkExt as _, StreamExt as _};
    use switchyard_tests::PATIENCE;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

    let server = TestServer::start_with(config(|ws| {
        ws.permessage_deflate = true;
        ws.max_unfinished_bytes = 1 << 20;
    }))
    .await;
    let mut holder = offering_tungstenite_client(&server, "/ws/echo/").await;
    let mut other = offering_tungstenite_client(&server, "/ws/echo/").await;
    let part = |byte: u8| {
        Message::Frame(Frame::message(
            vec![byte; 700 << 10],
            OpCode::Data(Data::Binary),
            false,
        ))
    };
    holder.send(part(1)).await.expect("first part");
    // Its pong says the server has read the part.
    ping_until_pong(&mut holder, b"read?").await;
    let _ = other.send(part(2)).await;
    let closed = loop {
        match tokio::time::timeout(PATIENCE, other.next())
            .await
            .expect("close in time")
        {
            Some(Ok(Message::Close(frame))) => break frame,
            Some(Ok(_)) => {}
            unexpected => panic!("expected a close frame, got {unexpected:?}"),
        }
    };
    assert_eq!(closed.map(|f| u16::from(f.code)), Some(1013));
    // The holder, within the budget, is still served.
    ping_until_pong(&mut holder, b"still?").await;
    server.shutdown().await.expect("clean shutdown");
}
