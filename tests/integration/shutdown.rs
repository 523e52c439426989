//! Graceful shutdown: readiness turns 503 first, every socket gets the
//! events already queued for it, then closes with 1001.

use std::sync::Arc;

use serde_json::{Value, json};
use switchyard_layer::Event;
use switchyard_tests::{Client, TestServer, http_get};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn shutdown_closes_every_socket_with_1001() {
    let server = TestServer::start().await;
    let mut echo = Client::connect(&server, "/ws/echo/").await;
    let mut chat = Client::connect(&server, "/ws/chat/lobby/").await;
    echo.send_text("ping").await;
    assert_eq!(echo.recv_text().await, "ping");

    let stopping = tokio::spawn(server.shutdown());
    for client in [&mut echo, &mut chat] {
        let (code, _) = client.recv_close().await.expect("close frame");
        assert_eq!(code, 1001);
    }
    echo.close().await;
    chat.close().await;
    stopping
        .await
        .expect("shutdown task")
        .expect("server stopped cleanly");
}

#[tokio::test]
async fn events_queued_for_a_socket_reach_it_before_its_1001() {
    const MEMBERS: usize = 10;
    const BURST: u64 = 50;
    let server = TestServer::start().await;
    let mut clients = Vec::new();
    for _ in 0..MEMBERS {
        let mut client = Client::connect(&server, "/probe/layer/").await;
        client.recv_json().await; // the probe's description of the connection
        client
            .send_json(&json!({"cmd": "group_add", "group": "bye"}))
            .await;
        assert_eq!(client.recv_json().await, json!({"ok": true}));
        clients.push(client);
    }
    // Every consumer is busy while the burst arrives and the shutdown
    // starts, so the events are still queued when the sockets hear of it.
    let mut observer = Client::connect(&server, "/probe/layer/").await;
    observer.recv_json().await;
    observer
        .send_json(&json!({"cmd": "group_add", "group": "sleeping"}))
        .await;
    assert_eq!(observer.recv_json().await, json!({"ok": true}));
    for client in &mut clients {
        client
            .send_json(&json!({"cmd": "sleep", "ms": 500, "announce": "sleeping"}))
            .await;
    }
    for _ in 0..MEMBERS {
        let announced = observer.recv_json().await;
        assert_eq!(announced["event"]["type"], "probe.sleeping", "{announced}");
    }
    let layer = Arc::clone(server.host.layer());
    for seq in 0..BURST {
        let event = Event::from_value(json!({"type": "test.burst", "seq": seq})).expect("event");
        let report = layer.group_send("bye", event).await.expect("group send");
        assert_eq!(report.delivered, MEMBERS, "the layer accepted event {seq}");
    }
    let stopping = tokio::spawn(server.shutdown());
    for (member, client) in clients.iter_mut().enumerate() {
        let mut seqs = Vec::new();
        let code = loop {
            match client.next().await {
                Ok(Message::Text(text)) => {
                    let frame: Value = serde_json::from_str(text.as_str()).expect("JSON");
                    if let Some(seq) = frame["event"]["seq"].as_u64() {
                        seqs.push(seq);
                    }
                }
                Ok(Message::Close(frame)) => break frame.map(|f| u16::from(f.code)),
                other => panic!("member {member}: {other:?} after {} events", seqs.len()),
            }
        };
        assert_eq!(
            seqs,
            (0..BURST).collect::<Vec<_>>(),
            "member {member}: every queued event, in order, before the close"
        );
        assert_eq!(code, Some(1001), "member {member}");
    }
    for client in clients {
        client.close().await;
    }
    stopping
        .await
        .expect("shutdown task")
        .expect("server stopped cleanly");
}

#[tokio::test]
async fn readiness_turns_503_when_shutdown_starts_and_liveness_stays() {
    let server = TestServer::start().await;
    let (status, _, body) = http_get(server.addr, "/healthz").await;
    assert_eq!(status, 200, "{body}");
    let (status, _, body) = http_get(server.addr, "/readyz").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["ready"], true, "{body}");

    let mut client = Client::connect(&server, "/ws/echo/").await;
    let addr = server.addr;
    let url = server.url("/ws/echo/");
    let stopping = tokio::spawn(server.shutdown());
    let (code, _) = client.recv_close().await.expect("close frame");
    assert_eq!(code, 1001);
    // The 1001 is out, and the server drains (this client has not answered
    // the close yet): readiness already says 503, liveness 200, and a new
    // handshake is turned away.
    let (status, _, body) = http_get(addr, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["shutting_down"], true, "{body}");
    let (status, _, _) = http_get(addr, "/healthz").await;
    assert_eq!(status, 200);
    match tokio_tungstenite::connect_async(&url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status().as_u16(), 503);
        }
        other => panic!("a handshake during the drain: {other:?}"),
    }
    client.close().await;
    stopping
        .await
        .expect("shutdown task")
        .expect("server stopped cleanly");
}
