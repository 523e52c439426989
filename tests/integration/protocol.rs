//! The WebSocket protocol at its edges, on raw sockets: handshakes the RFC
//! refuses, a protocol error closed with 1002, a message far over the limit
//! closed with 1009 while the client is still sending it, and the
//! server-wide budget for unfinished messages (1013).

use futures_util::{SinkExt as _, StreamExt as _};
use switchyard::Config;
use switchyard_tests::{PATIENCE, TestServer, ping_until_pong, test_config};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

const GOOD_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// Send a handshake for `path` with `key` and `version`; returns the
/// response head (status line and headers, lower-cased) and the socket.
async fn handshake(
    server: &TestServer,
    path: &str,
    key: &str,
    version: &str,
) -> (String, TcpStream) {
    let mut socket = TcpStream::connect(server.addr).await.expect("connect");
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: {version}\r\n\r\n",
        server.addr
    );
    socket.write_all(request.as_bytes()).await.expect("send");
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let byte = tokio::time::timeout(PATIENCE, socket.read_u8())
            .await
            .expect("response head in time")
            .expect("response head");
        head.push(byte);
    }
    (String::from_utf8_lossy(&head).to_lowercase(), socket)
}

fn status(head: &str) -> u16 {
    head.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("status code")
}

/// Read server frames until a close; its code.
async fn read_close_code(socket: &mut (impl AsyncRead + Unpin)) -> std::io::Result<u16> {
    loop {
        let mut head = [0u8; 2];
        socket.read_exact(&mut head).await?;
        let opcode = head[0] & 0x0f;
        let len = match head[1] & 0x7f {
            126 => u64::from(socket.read_u16().await?),
            127 => socket.read_u64().await?,
            short => u64::from(short),
        };
        let mut payload = vec![0u8; usize::try_from(len).expect("frame length")];
        socket.read_exact(&mut payload).await?;
        if opcode == 0x8 {
            return Ok(u16::from_be_bytes([payload[0], payload[1]]));
        }
    }
}

#[tokio::test]
async fn a_key_that_is_not_a_16_byte_nonce_is_400() {
    let server = TestServer::start().await;
    for key in ["abc", "", "YWJjZGVmZ2hpamtsbW5vcHFyc3Q="] {
        let (head, _) = handshake(&server, "/ws/echo/", key, "13").await;
        assert_eq!(status(&head), 400, "key {key:?}: {head}");
    }
    let (head, _) = handshake(&server, "/ws/echo/", GOOD_KEY, "13").await;
    assert_eq!(status(&head), 101, "{head}");
    assert!(
        head.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "{head}"
    );
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn an_unsupported_version_is_426_naming_version_13() {
    let server = TestServer::start().await;
    let (head, _) = handshake(&server, "/ws/echo/", GOOD_KEY, "8").await;
    assert_eq!(status(&head), 426, "{head}");
    assert!(head.contains("sec-websocket-version: 13\r\n"), "{head}");
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn an_unmasked_frame_is_closed_with_1002() {
    let server = TestServer::start().await;
    let (head, mut socket) = handshake(&server, "/ws/echo/", GOOD_KEY, "13").await;
    assert_eq!(status(&head), 101, "{head}");
    // A client's frames must be masked (RFC 6455 §5.1).
    socket.write_all(b"\x81\x02hi").await.expect("send");
    let code = tokio::time::timeout(PATIENCE, read_close_code(&mut socket))
        .await
        .expect("a close in time")
        .expect("a close frame, not a dropped connection");
    assert_eq!(code, 1002);
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn a_message_far_over_the_limit_is_closed_with_1009_while_it_is_still_sent() {
    let server = TestServer::start().await;
    let (head, mut socket) = handshake(&server, "/ws/echo/", GOOD_KEY, "13").await;
    assert_eq!(status(&head), 101, "{head}");
    // A 16 MiB binary frame (16 times the limit), masked with a zero key,
    // sent in full before reading, as a simple client (or Autobahn's case
    // 9.2.6) does. A server that closed the socket with these bytes unread
    // would reset the connection, and the reset would discard its close
    // frame before the client read it.
    let len: u64 = 16 << 20;
    let mut frame_head = vec![0x82, 0x80 | 127];
    frame_head.extend_from_slice(&len.to_be_bytes());
    frame_head.extend_from_slice(&[0, 0, 0, 0]);
    let chunk = vec![0u8; 64 << 10];
    let sent = async {
        socket.write_all(&frame_head).await?;
        for _ in 0..(len / (64 << 10)) {
            socket.write_all(&chunk).await?;
        }
        std::io::Result::Ok(())
    };
    tokio::time::timeout(PATIENCE * 2, sent)
        .await
        .expect("the server takes the bytes")
        .expect("the connection stays up while the client sends");
    let code = tokio::time::timeout(PATIENCE, read_close_code(&mut socket))
        .await
        .expect("a close in time")
        .expect("a close frame, not a reset connection");
    assert_eq!(code, 1009);
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn unfinished_messages_share_one_budget() {
    let mut config = test_config();
    config.websocket.max_unfinished_bytes = 1 << 20;
    let server = TestServer::start_with(Config { ..config }).await;
    let connect = || async {
        let (ws, _) = tokio_tungstenite::connect_async(server.url("/ws/echo/"))
            .await
            .expect("handshake");
        ws
    };
    let mut holder = connect().await;
    let mut other = connect().await;
    let first = Frame::message(vec![1u8; 700 << 10], OpCode::Data(Data::Binary), false);
    holder
        .send(Message::Frame(first))
        .await
        .expect("first part");
    // A ping after the part: its pong says the server has read the part.
    ping_until_pong(&mut holder, b"read?").await;

    // Another client's unfinished message takes the server over its
    // budget: that client is told to come back later.
    let part = Frame::message(vec![2u8; 700 << 10], OpCode::Data(Data::Binary), false);
    let _ = other.send(Message::Frame(part)).await;
    let closed = loop {
        match tokio::time::timeout(PATIENCE, other.next())
            .await
            .expect("close in time")
        {
            Some(Ok(Message::Close(frame))) => break frame,
            Some(Ok(_)) => {}
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(closed.map(|f| u16::from(f.code)), Some(1013));

    // The first client, within the budget, finishes its message.
    let last = Frame::message(vec![3u8; 10], OpCode::Data(Data::Continue), true);
    holder.send(Message::Frame(last)).await.expect("last part");
    let echoed = loop {
        match tokio::time::timeout(PATIENCE, holder.next())
            .await
            .expect("echo in time")
            .expect("open")
            .expect("frame")
        {
            Message::Binary(bytes) => break bytes,
            _ => continue,
        }
    };
    assert_eq!(echoed.len(), (700 << 10) + 10);
    server.shutdown().await.expect("clean shutdown");
}
