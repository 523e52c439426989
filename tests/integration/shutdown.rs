//! Graceful shutdown: every socket closes with 1001.

use switchyard_tests::{Client, TestServer};

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
