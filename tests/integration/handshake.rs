//! Handshake answers, the scope, and subprotocols (the `probe` test plugin).

use serde_json::json;
use switchyard_tests::{Client, TestServer, handshake_status};

#[tokio::test]
async fn unknown_path_is_404() {
    let server = TestServer::start().await;
    assert_eq!(handshake_status(&server, "/ws/nope/").await, 404);
    assert_eq!(
        handshake_status(&server, "/ws/echo").await,
        404,
        "trailing slash matters"
    );
    assert_eq!(
        handshake_status(&server, "/probe/scope/x/y/").await,
        404,
        "int converter"
    );
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn reject_before_accept_is_403() {
    let server = TestServer::start().await;
    assert_eq!(handshake_status(&server, "/probe/reject/").await, 403);
    // Returning from connect without deciding is a reject too.
    assert_eq!(handshake_status(&server, "/probe/silent/").await, 403);
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn a_trap_in_connect_is_500_and_harms_no_one_else() {
    let server = TestServer::start().await;
    let mut echo = Client::connect(&server, "/ws/echo/").await;
    assert_eq!(handshake_status(&server, "/probe/trap/").await, 500);
    echo.send_text("still alive").await;
    assert_eq!(echo.recv_text().await, "still alive");
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn plain_http_to_a_websocket_route_is_426_and_elsewhere_404() {
    let server = TestServer::start().await;
    let get = |path: &str| {
        let addr = server.addr;
        let path = path.to_owned();
        async move {
            use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
            let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
            let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            stream.write_all(request.as_bytes()).await.expect("write");
            let mut response = String::new();
            stream.read_to_string(&mut response).await.expect("read");
            response
        }
    };
    assert!(get("/ws/echo/").await.starts_with("HTTP/1.1 426"));
    // (`/` itself is the stations example's dashboard page.)
    assert!(get("/no/such/page/").await.starts_with("HTTP/1.1 404"));
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn the_scope_carries_path_query_headers_and_url_route() {
    let server = TestServer::start().await;
    let uuid = "3f2504e0-4f89-41d3-9a0c-0305e82c3301";
    let mut client = Client::connect(&server, "/probe/scope/007/my-slug/?token=a%20b&x=1").await;
    let scope = client.recv_json().await;
    assert_eq!(scope["path"], "/probe/scope/007/my-slug/");
    assert_eq!(scope["query_string"], "token=a%20b&x=1");
    assert_eq!(scope["route"], "probe/scope/<int:n>/<slug:s>/");
    // Django converts `int` kwargs with int(): "007" becomes 7.
    assert_eq!(scope["url_route"], json!({"n": "7", "s": "my-slug"}));
    assert!(
        scope["client"]
            .as_str()
            .expect("client")
            .starts_with("127.0.0.1:")
    );
    let headers = scope["headers"].as_array().expect("headers");
    assert!(
        headers.iter().any(|h| h[0] == "host"),
        "lower-case header names: {headers:?}"
    );
    let channel = scope["channel_name"].as_str().expect("channel name");
    assert!(
        channel.starts_with("specific.") && channel.contains('!'),
        "{channel}"
    );
    assert!(scope["user"].is_null());
    // ASGI's `scheme`, `http_version` and `server` (added in 0.2.0): plain
    // ws over HTTP/1.1, accepted on the server's own listening socket.
    assert_eq!(scope["scheme"], "ws");
    assert_eq!(scope["http_version"], "1.1");
    assert_eq!(
        scope["server"],
        json!([server.addr.ip().to_string(), server.addr.port()])
    );

    let mut any = Client::connect(&server, &format!("/probe/any/a/b/{uuid}")).await;
    let scope = any.recv_json().await;
    assert_eq!(scope["url_route"], json!({"rest": format!("a/b/{uuid}")}));
    // Two connections never share an id or a channel.
    assert_ne!(scope["channel_name"], channel);
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn the_consumer_chooses_the_subprotocol() {
    let server = TestServer::start().await;
    let client =
        Client::connect_with_protocols(&server, "/probe/scope/1/a/", &["battery.v2", "battery.v1"])
            .await;
    // The probe picks the first one offered.
    assert_eq!(client.subprotocol.as_deref(), Some("battery.v2"));
    let plain = Client::connect(&server, "/probe/scope/1/a/").await;
    assert_eq!(plain.subprotocol, None);
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn a_panic_after_accept_closes_that_socket_with_1011_only() {
    let server = TestServer::start().await;
    let mut victim = Client::connect(&server, "/probe/layer/").await;
    let _ = victim.recv_json().await;
    let mut bystander = Client::connect(&server, "/probe/layer/").await;
    let _ = bystander.recv_json().await;
    victim.send_json(&json!({"cmd": "panic"})).await;
    let (code, _) = victim.recv_close().await.expect("close frame");
    assert_eq!(code, 1011);
    bystander
        .send_json(&json!({"cmd": "echo", "text": "fine"}))
        .await;
    assert_eq!(bystander.recv_json().await, json!({"echo": "fine"}));
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn a_plugin_close_reaches_the_client_with_its_code_and_reason() {
    let server = TestServer::start().await;
    let mut client = Client::connect(&server, "/probe/layer/").await;
    let _ = client.recv_json().await;
    client
        .send_json(&json!({"cmd": "close", "code": 4321, "reason": "bye now"}))
        .await;
    let (code, reason) = client.recv_close().await.expect("close frame");
    assert_eq!((code, reason.as_str()), (4321, "bye now"));
    server.shutdown().await.expect("clean shutdown");
}
