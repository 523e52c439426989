//! `[admin] bind`: the admin API and health on their own listener, and
//! nowhere on the public port.

use std::net::SocketAddr;

use serde_json::json;
use switchyard::{Config, Server};
use switchyard_tests::http_client::{Reply, request_at};
use switchyard_tests::{Client, test_config};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const TOKEN: &str = "admin-listener-token-0123";

/// A server with its admin side on a port of its own.
struct AdminServer {
    public: SocketAddr,
    admin: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl AdminServer {
    async fn start() -> Self {
        let mut config: Config = test_config();
        config.admin.token = Some(TOKEN.to_owned());
        config.admin.bind = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
        let listener = tokio::net::TcpListener::bind((config.bind, 0))
            .await
            .expect("bind a free loopback port");
        let public = listener.local_addr().expect("local address");
        let mut server = Server::build(config).await.expect("server builds");
        let admin = server
            .bind_admin()
            .await
            .expect("the admin listener binds")
            .expect("admin.bind is set");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(listener, async {
            let _ = stopped.await;
        }));
        Self {
            public,
            admin,
            stop,
            task,
        }
    }

    async fn shutdown(self) {
        let _ = self.stop.send(());
        self.task
            .await
            .expect("server task")
            .expect("server stopped cleanly");
    }
}

async fn get(addr: SocketAddr, path: &str) -> Reply {
    let auth = format!("Bearer {TOKEN}");
    request_at(addr, "GET", path, &[("authorization", &auth)], b"").await
}

#[tokio::test]
async fn admin_and_health_answer_on_the_admin_port_only() {
    let server = AdminServer::start().await;
    assert_ne!(server.public.port(), server.admin.port());
    for path in [
        "/healthz",
        "/readyz",
        "/_switchyard/plugins",
        "/_switchyard/layer",
    ] {
        let reply = get(server.admin, path).await;
        assert_eq!(
            reply.status, 200,
            "{path} on the admin port: {}",
            reply.body
        );
        let reply = get(server.public, path).await;
        assert_eq!(
            reply.status, 404,
            "{path} on the public port: {}",
            reply.body
        );
    }
    // Every admin path is hidden from the public port, one added later too.
    let reply = get(server.public, "/_switchyard/metrics").await;
    assert_eq!(reply.status, 404, "{}", reply.body);
    let auth = format!("Bearer {TOKEN}");
    let publish = json!({"group": "chat_lobby", "event": {"type": "chat.message", "message": "x"}});
    let reply = request_at(
        server.public,
        "POST",
        "/_switchyard/group-send",
        &[("authorization", &auth)],
        publish.to_string().as_bytes(),
    )
    .await;
    assert_eq!(reply.status, 404, "{}", reply.body);
    // Publishing works on the admin port.
    let reply = request_at(
        server.admin,
        "POST",
        "/_switchyard/group-send",
        &[("authorization", &auth)],
        publish.to_string().as_bytes(),
    )
    .await;
    assert_eq!(reply.status, 202, "{}", reply.body);
    // The admin token still guards the admin API on its own port.
    let reply = request_at(server.admin, "GET", "/_switchyard/plugins", &[], b"").await;
    assert_eq!(reply.status, 401, "{}", reply.body);

    // Plugins stay on the public port and never reach the admin one.
    let mut chat = Client::connect_url(&format!("ws://{}/ws/chat/lobby/", server.public)).await;
    chat.send_json(&json!({"message": "still public"})).await;
    assert_eq!(chat.recv_json().await, json!({"message": "still public"}));
    let refused =
        tokio_tungstenite::connect_async(format!("ws://{}/ws/chat/lobby/", server.admin)).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status().as_u16(), 404);
        }
        other => panic!("a handshake on the admin port: {other:?}"),
    }
    chat.close().await;
    server.shutdown().await;
}

#[tokio::test]
async fn readiness_on_the_admin_port_turns_503_when_shutdown_starts() {
    let server = AdminServer::start().await;
    let reply = get(server.admin, "/readyz").await;
    assert_eq!(reply.status, 200, "{}", reply.body);

    let mut client = Client::connect_url(&format!("ws://{}/ws/echo/", server.public)).await;
    let admin = server.admin;
    let stopping = tokio::spawn(server.shutdown());
    let (code, _) = client.recv_close().await.expect("close frame");
    assert_eq!(code, 1001);
    // The drain waits for this client's answer to the close: the admin
    // listener still answers, not ready, and alive.
    let reply = get(admin, "/readyz").await;
    assert_eq!(reply.status, 503, "{}", reply.body);
    assert_eq!(reply.json()["shutting_down"], true, "{}", reply.body);
    let reply = get(admin, "/healthz").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    client.close().await;
    stopping.await.expect("shutdown task");
    // Stopped with the server.
    assert!(
        tokio::net::TcpStream::connect(admin).await.is_err(),
        "the admin listener outlived the server"
    );
}

#[tokio::test]
async fn an_admin_address_in_use_is_an_error_naming_it() {
    let taken = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a free loopback port");
    let addr = taken.local_addr().expect("local address");
    let mut config: Config = test_config();
    config.admin.bind = Some(addr);
    let mut server = Server::build(config).await.expect("server builds");
    let err = server.bind_admin().await.expect_err("the port is taken");
    let message = format!("{err:#}");
    assert!(message.contains(&addr.to_string()), "{message}");
    assert!(message.contains("admin.bind"), "{message}");
}
