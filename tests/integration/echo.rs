//! The echo example plugin.

use switchyard_tests::{Client, TestServer};

#[tokio::test]
async fn echoes_text_and_binary_in_order() {
    let server = TestServer::start().await;
    let mut client = Client::connect(&server, "/ws/echo/").await;
    client.send_text("hello").await;
    client.send_binary(&[0, 1, 2, 255]).await;
    client.send_text("h\u{e9}llo \u{1f50b}").await;
    assert_eq!(client.recv_text().await, "hello");
    assert_eq!(client.recv_binary().await, vec![0, 1, 2, 255]);
    assert_eq!(client.recv_text().await, "h\u{e9}llo \u{1f50b}");
    client.close().await;
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn many_connections_echo_independently() {
    let server = TestServer::start().await;
    let mut clients = Vec::new();
    for _ in 0..20 {
        clients.push(Client::connect(&server, "/ws/echo/").await);
    }
    for (i, client) in clients.iter_mut().enumerate() {
        client.send_text(&format!("client {i}")).await;
    }
    for (i, client) in clients.iter_mut().enumerate() {
        assert_eq!(client.recv_text().await, format!("client {i}"));
    }
    server.shutdown().await.expect("clean shutdown");
}
