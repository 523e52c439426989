//! WebSocket limits with a real client: message size (1009), invalid UTF-8
//! (1007), slow readers (1008, the others keep receiving), pings, the cap on
//! open connections (503), oversized paths and headers (414, 431), and the
//! handshake timeout for a client that never finishes its request.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use switchyard::{Config, Counters};
use switchyard_tests::{Client, TestServer, handshake_status, test_config};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

fn config(f: impl FnOnce(&mut Config)) -> Config {
    let mut config = test_config();
    f(&mut config);
    config
}

#[tokio::test]
async fn an_oversized_message_is_closed_with_1009() {
    let server = TestServer::start_with(config(|c| {
        c.websocket.max_message_size = 64 << 10;
        c.websocket.max_frame_size = 64 << 10;
    }))
    .await;
    let mut client = Client::connect(&server, "/ws/echo/").await;
    client.send_text(&"a".repeat(32 << 10)).await;
    assert_eq!(client.recv_text().await.len(), 32 << 10, "within the limit");
    client.send_text(&"a".repeat(100 << 10)).await;
    let (code, reason) = client.recv_close().await.expect("close frame");
    assert_eq!(code, 1009, "{reason}");
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn the_default_limit_is_one_mebibyte() {
    let server = TestServer::start().await;
    let mut client = Client::connect(&server, "/ws/echo/").await;
    client.send_binary(&vec![7u8; (1 << 20) + 1]).await;
    assert_eq!(client.recv_close().await.expect("close frame").0, 1009);
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn invalid_utf8_in_a_text_frame_is_closed_with_1007() {
    let server = TestServer::start().await;
    let mut client = Client::connect(&server, "/ws/echo/").await;
    let frame = Frame::message(&b"caf\xc3"[..], OpCode::Data(Data::Text), true);
    client.send_message(Message::Frame(frame)).await;
    let (code, reason) = client.recv_close().await.expect("close frame");
    assert_eq!(code, 1007, "{reason}");
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_is_closed_while_its_group_keeps_receiving() {
    const EVENTS: usize = 300;
    let server = TestServer::start_with(config(|c| {
        c.websocket.outbound_queue = 8;
        c.layer.capacity = 1000;
    }))
    .await;
    let join = |name: &'static str| {
        let server = &server;
        async move {
            let mut client = Client::connect(server, &format!("/probe/any/{name}")).await;
            client.recv_json().await;
            client
                .send_json(&json!({"cmd": "group_add", "group": "room"}))
                .await;
            assert_eq!(client.recv_json().await, json!({"ok": true}));
            client
        }
    };
    let mut slow = join("slow").await;
    let mut fast = join("fast").await;
    let mut sender = Client::connect(&server, "/probe/any/sender").await;
    sender.recv_json().await;

    // The fast member reads everything, concurrently; the sender stays at
    // most a few events ahead of it, so only the slow one can fall behind.
    let read = Arc::new(Semaphore::new(4));
    let reader = tokio::spawn({
        let read = Arc::clone(&read);
        async move {
            let mut seen = 0;
            while seen < EVENTS {
                let message = fast.recv_json().await;
                assert_eq!(message["event"]["n"], seen, "in order, none lost");
                seen += 1;
                read.add_permits(1);
            }
            seen
        }
    });
    // The slow member reads as soon as the server gives up on it: the
    // server gives a closed client a grace period (2 s) to take its close
    // frame, and the rest of this test can outlast that on a busy machine.
    let slow_close = tokio::spawn({
        let counters = Arc::clone(&server.counters);
        async move {
            while Counters::get(&counters.slow_readers) == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            // Its close frame comes after what was already sent.
            loop {
                match slow.next().await.expect("a message before the close") {
                    Message::Close(frame) => break frame.expect("a close frame with a code"),
                    _ => continue,
                }
            }
        }
    });
    let pad = "x".repeat(64 << 10);
    for n in 0..EVENTS {
        read.acquire().await.expect("open").forget();
        let event = json!({"type": "chat", "n": n, "pad": pad});
        sender
            .send_json(&json!({"cmd": "group_send", "group": "room", "event": event}))
            .await;
        assert_eq!(sender.recv_json().await, json!({"ok": true}));
    }
    assert_eq!(reader.await.expect("reader"), EVENTS);
    assert_eq!(Counters::get(&server.counters.slow_readers), 1);

    let close = slow_close.await.expect("the slow reader's task");
    assert_eq!(u16::from(close.code), 1008);
    assert!(close.reason.contains("slow reader"), "{}", close.reason);
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn a_client_that_answers_no_ping_is_closed_and_one_that_does_is_not() {
    let server = TestServer::start_with(config(|c| {
        c.websocket.ping_interval_secs = 1;
        c.websocket.ping_timeout_secs = 1;
    }))
    .await;
    let mut deaf = Client::connect(&server, "/ws/echo/").await;
    let mut alive = Client::connect(&server, "/ws/echo/").await;
    // `alive` reads (so its client library answers pings); `deaf` does not.
    let listening = tokio::time::timeout(Duration::from_millis(3500), alive.next()).await;
    assert!(listening.is_err(), "no data expected: {listening:?}");
    let (code, reason) = deaf.recv_close().await.expect("close frame");
    assert_eq!((code, reason.as_str()), (1001, "ping timeout"));
    alive.send_text("still open").await;
    assert_eq!(alive.recv_text().await, "still open");
    assert_eq!(Counters::get(&server.counters.ping_timeouts), 1);
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn past_max_connections_the_handshake_is_503() {
    let server = TestServer::start_with(config(|c| c.websocket.max_connections = 2)).await;
    let _a = Client::connect(&server, "/ws/echo/").await;
    let b = Client::connect(&server, "/ws/echo/").await;
    assert_eq!(handshake_status(&server, "/ws/echo/").await, 503);
    b.close().await;
    let mut reopened = false;
    for _ in 0..50 {
        if Client::try_connect_with_headers(&server, "/ws/echo/", &[])
            .await
            .is_ok()
        {
            reopened = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(reopened, "a closed connection gives its place back");
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn oversized_paths_and_headers_are_refused() {
    let server = TestServer::start_with(config(|c| {
        c.websocket.max_path_bytes = 256;
        c.websocket.max_header_bytes = 4096;
    }))
    .await;
    let long = format!("/probe/any/{}", "a".repeat(300));
    assert_eq!(handshake_status(&server, &long).await, 414);
    let big = "b".repeat(5000);
    let status = Client::try_connect_with_headers(&server, "/ws/echo/", &[("x-big", &big)])
        .await
        .expect_err("refused");
    assert_eq!(status, 431);
    let _fine = Client::connect(&server, "/ws/echo/").await;
    assert_eq!(Counters::get(&server.counters.oversized_requests), 2);
    server.shutdown().await.expect("clean shutdown");
}

/// Reads until the server closes `stream`; `None` if it is still open when
/// `deadline` passes. Whatever the server sends first (if anything) is
/// skipped.
async fn closed_by(stream: &mut TcpStream, deadline: Instant) -> Option<Instant> {
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_elapsed) => return None,
            Ok(Ok(0) | Err(_)) => return Some(Instant::now()),
            Ok(Ok(_)) => continue,
        }
    }
}

#[tokio::test]
async fn a_client_that_never_finishes_its_request_is_dropped_at_the_handshake_timeout() {
    let server = TestServer::start_with(config(|c| c.websocket.handshake_timeout_secs = 1)).await;
    let start = Instant::now();
    let mut silent = TcpStream::connect(server.addr).await.expect("connect");
    let mut partial = TcpStream::connect(server.addr).await.expect("connect");
    // A slowloris client: the start of an upgrade request, never its end.
    partial
        .write_all(b"GET /ws/echo/ HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n")
        .await
        .expect("write a partial request");
    // Meanwhile a normal client upgrades and echoes.
    let url = server.url("/ws/echo/");
    let normal = tokio::spawn(async move {
        let mut normal = Client::connect_url(&url).await;
        normal.send_text("meanwhile").await;
        assert_eq!(normal.recv_text().await, "meanwhile");
        normal
    });

    let half = start + Duration::from_millis(500);
    assert_eq!(
        closed_by(&mut silent, half).await,
        None,
        "silent: open at 0.5 s"
    );
    assert_eq!(
        closed_by(&mut partial, half).await,
        None,
        "partial: open at 0.5 s"
    );
    let limit = start + Duration::from_secs(3);
    for (name, stream) in [("silent", &mut silent), ("partial", &mut partial)] {
        let closed = closed_by(stream, limit)
            .await
            .unwrap_or_else(|| panic!("{name}: still open after 3 s"));
        let after = closed - start;
        assert!(
            after >= Duration::from_millis(900),
            "{name}: closed after {after:?}, before the 1 s timeout"
        );
    }

    // The normal client was never held up, and is not closed by the timeout.
    let mut normal = normal.await.expect("the normal client upgraded and echoed");
    normal.send_text("after").await;
    assert_eq!(normal.recv_text().await, "after");
    assert_eq!(Counters::get(&server.counters.request_timeouts), 2);
    server.shutdown().await.expect("clean shutdown");
}
