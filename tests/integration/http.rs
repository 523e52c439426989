//! The `http` side of the protocol router: plain HTTP requests served by
//! plugins' `wasi:http/incoming-handler`, with a real HTTP client.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use switchyard::Config;
use switchyard::config::JwtKey;
use switchyard_tests::http_client::{LineStream, get, post_json, request};
use switchyard_tests::plugin_dir::{Build, PluginDir};
use switchyard_tests::redis_support::{PythonListener, RedisServer, python_config, refusing_port};
use switchyard_tests::{Client, TestServer, test_config, wait_until};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const HELLO_MANIFEST: &str = "http-routes = [\"api/hello/<str:name>/\", \
     \"api/rooms/<str:room_name>/messages/\", \"api/rooms/<str:room_name>/events/\"]\n";

/// A server whose plugin directory holds only `hello`, its manifest
/// [`HELLO_MANIFEST`] followed by `extra`.
async fn hello_alone(extra: &str) -> (PluginDir, TestServer) {
    let dir = PluginDir::new();
    dir.install("hello", Build::V1, &format!("{HELLO_MANIFEST}{extra}"));
    let mut config = test_config();
    config.plugins = dir.path().to_path_buf();
    let server = TestServer::start_with(config).await;
    (dir, server)
}

#[tokio::test]
async fn a_get_reaches_the_plugin_with_its_route_kwargs() {
    let server = TestServer::start().await;
    let reply = get(&server, "/api/hello/world/").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(reply.json(), json!({"hello": "world"}));
    assert!(reply.header("x-request-id").is_some());

    let reply = request(
        &server,
        "POST",
        "/probe-http/context/7/?q=1",
        &[("x-test", "yes")],
        b"abc",
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let context = reply.json();
    assert_eq!(context["route"], "probe-http/<str:action>/<int:n>/");
    assert_eq!(context["url_route"], json!({"action": "context", "n": "7"}));
    assert_eq!(context["method"], "POST");
    assert_eq!(context["path"], "/probe-http/context/7/?q=1");
    assert_eq!(context["headers"]["x-test"], "yes");
    assert_eq!(context["body_len"], 3);
    assert_eq!(context["user"], json!(null));
    assert_eq!(
        context["request_id"].as_str(),
        reply.header("x-request-id"),
        "the plugin sees the id the client gets"
    );
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn a_post_publishes_to_the_chat_room_and_bad_bodies_are_400() {
    let server = TestServer::start().await;
    let mut a = Client::connect(&server, "/ws/chat/lobby/").await;
    let mut b = Client::connect(&server, "/ws/chat/lobby/").await;
    let mut other = Client::connect(&server, "/ws/chat/other/").await;

    let reply = post_json(
        &server,
        "/api/rooms/lobby/messages/",
        &json!({"message": "hi"}),
    )
    .await;
    assert_eq!(reply.status, 202, "{}", reply.body);
    assert_eq!(a.recv_json().await, json!({"message": "hi"}));
    assert_eq!(b.recv_json().await, json!({"message": "hi"}));
    other.send_json(&json!({"message": "mine"})).await;
    other
        .expect_nothing_before(&[json!({"message": "mine"})])
        .await;

    let reply = request(
        &server,
        "POST",
        "/api/rooms/lobby/messages/",
        &[],
        b"{not json",
    )
    .await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.json()["error"], "invalid_json");
    let reply = post_json(&server, "/api/rooms/lobby/messages/", &json!({"text": 1})).await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.json()["error"], "missing_message");
    let reply = post_json(
        &server,
        "/api/rooms/bad%20room/messages/",
        &json!({"message": 1}),
    )
    .await;
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert_eq!(reply.json()["error"], "invalid_room");
    let reply = request(&server, "DELETE", "/api/hello/x/", &[], b"").await;
    assert_eq!(reply.status, 405);
    assert_eq!(reply.header("allow"), Some("GET"));
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn server_sent_events_stream_live_group_messages() {
    let server = TestServer::start().await;
    let mut events = LineStream::open(&server, "/api/rooms/sse/events/").await;
    assert_eq!(events.status, 200);
    assert_eq!(events.content_type, "text/event-stream");
    // The stream has joined the room once its first comment arrives.
    events.expect_line(": connected").await;
    for i in 0..3 {
        let reply = post_json(&server, "/api/rooms/sse/messages/", &json!({"message": i})).await;
        assert_eq!(reply.status, 202);
        events.expect_line("event: message").await;
        assert_eq!(
            events.next_line().await.as_deref(),
            Some(format!("data: {}", json!({"message": i})).as_str())
        );
    }
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn a_streamed_body_arrives_whole() {
    let server = TestServer::start().await;
    let reply = get(&server, "/probe-http/stream/500/").await;
    assert_eq!(reply.status, 200);
    let expected: String = (0..500).map(|i| format!("line {i}\n")).collect();
    assert_eq!(reply.body, expected);
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn routing_answers_404_and_426_and_keeps_the_sides_apart() {
    let server = TestServer::start().await;
    assert_eq!(get(&server, "/api/nothing/").await.status, 404);
    // A WebSocket route asked for over plain HTTP.
    assert_eq!(get(&server, "/ws/chat/lobby/").await.status, 426);
    // An HTTP route asked for as a WebSocket.
    assert_eq!(
        switchyard_tests::handshake_status(&server, "/api/hello/x/").await,
        404
    );
    let routes = server.host.routes();
    assert!(
        routes
            .iter()
            .any(|r| r.route == "api/hello/<str:name>/" && r.protocol.as_str() == "http"),
        "{routes:?}"
    );
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn guest_failures_answer_500_and_504_and_the_server_keeps_serving() {
    let server = TestServer::start().await;
    for (action, status) in [
        ("trap", 500),
        ("silent", 500),
        ("spin", 504),
        ("sleep", 504),
    ] {
        let reply = get(&server, &format!("/probe-http/{action}/")).await;
        assert_eq!(reply.status, status, "{action}: {}", reply.body);
        assert!(reply.header("x-request-id").is_some());
        assert_eq!(get(&server, "/api/hello/after/").await.status, 200);
    }
    let failures = server.host.failures();
    let probe = failures
        .iter()
        .find(|f| f.plugin == "http_probe")
        .expect("http_probe failures counted");
    assert_eq!(probe.traps, 1, "{probe:?}");
    assert_eq!(probe.deadlines, 2, "{probe:?}");
    server.shutdown().await.expect("clean shutdown");
}

/// Send `head` (and `body`) on a raw connection and read the answer's
/// status line.
async fn raw_status(server: &TestServer, head: &str, body: &[u8]) -> String {
    let mut stream = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    stream.write_all(head.as_bytes()).await.expect("write head");
    stream.write_all(body).await.expect("write body");
    let mut answer = Vec::new();
    let mut buf = [0_u8; 1024];
    while !answer.windows(2).any(|w| w == b"\r\n") {
        let n = stream.read(&mut buf).await.expect("read");
        assert!(n > 0, "connection closed without an answer");
        answer.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&answer);
    text.lines().next().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn oversized_and_slow_bodies_never_reach_the_plugin() {
    let mut config = test_config();
    config.http.max_body_bytes = 1000;
    config.http.body_timeout_secs = 1;
    let server = TestServer::start_with(config).await;
    // Declared too large: refused before the body is read.
    let status = raw_status(
        &server,
        "POST /probe-http/context/ HTTP/1.1\r\nhost: x\r\ncontent-length: 5000\r\n\r\n",
        b"",
    )
    .await;
    assert!(status.contains(" 413 "), "{status}");
    // Chunked, and larger than the limit once read.
    let big = vec![b'a'; 3000];
    let reply = request(
        &server,
        "POST",
        "/probe-http/context/",
        &[("transfer-encoding", "chunked")],
        &big,
    )
    .await;
    assert_eq!(reply.status, 413);
    // At the limit: the plugin sees all of it.
    let reply = request(&server, "POST", "/probe-http/context/", &[], &big[..1000]).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["body_len"], 1000);
    // A body that never arrives in full.
    let status = raw_status(
        &server,
        "POST /probe-http/context/ HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\n",
        b"abc",
    )
    .await;
    assert!(status.contains(" 408 "), "{status}");
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn a_plugin_at_its_instance_limit_answers_503_with_retry_after() {
    let (_dir, server) = hello_alone(
        "[limits]
max-instances = 1
",
    )
    .await;
    // An open event stream holds the plugin's one instance.
    let mut events = LineStream::open(&server, "/api/rooms/full/events/").await;
    events.expect_line(": connected").await;
    let reply = get(&server, "/api/hello/x/").await;
    assert_eq!(reply.status, 503, "{}", reply.body);
    assert_eq!(reply.header("retry-after"), Some("1"));
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn a_client_that_leaves_a_stream_gives_its_instance_back() {
    let (_dir, server) = hello_alone(
        "[limits]
max-instances = 1
",
    )
    .await;
    let mut stream = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    stream
        .write_all(b"GET /api/rooms/gone/events/ HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .expect("write");
    let mut seen = Vec::new();
    let mut buf = [0_u8; 1024];
    while !String::from_utf8_lossy(&seen).contains(": connected") {
        let n = stream.read(&mut buf).await.expect("read");
        assert!(n > 0, "closed early");
        seen.extend_from_slice(&buf[..n]);
    }
    assert_eq!(get(&server, "/api/hello/x/").await.status, 503);
    drop(stream);
    // The guest is stopped and its slot given back.
    let mut answered = 0;
    while answered != 200 {
        answered = get(&server, "/api/hello/x/").await.status;
        assert!(answered == 200 || answered == 503, "{answered}");
        tokio::task::yield_now().await;
    }
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn a_swap_serves_new_requests_while_a_stream_on_the_old_version_goes_on() {
    let (dir, server) = hello_alone("").await;
    let mut events = LineStream::open(&server, "/api/rooms/swap/events/").await;
    events.expect_line(": connected").await;
    let before = server.host.status();
    let old = before[0].version.clone().expect("live");
    // The same component under a changed manifest is a new version.
    dir.install("hello", Build::V1, &format!("{HELLO_MANIFEST}# v2\n"));
    wait_until(&server, "the new version is live", |s| {
        s.host.status()[0].version.as_deref() != Some(old.as_str())
    })
    .await;
    assert_eq!(
        get(&server, "/api/hello/new/").await.json(),
        json!({"hello": "new"})
    );
    let reply = post_json(
        &server,
        "/api/rooms/swap/messages/",
        &json!({"message": "still"}),
    )
    .await;
    assert_eq!(reply.status, 202);
    events.expect_line("event: message").await;
    assert_eq!(
        events.next_line().await.as_deref(),
        Some(r#"data: {"message":"still"}"#)
    );
    server.shutdown().await.expect("clean shutdown");
}

fn hs256(claims: &serde_json::Value) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(b"an http test secret of thirty-two bytes or more"),
    )
    .expect("encode")
}

#[tokio::test]
async fn required_routes_cover_http_routes() {
    let mut config = test_config();
    config.auth.keys = vec![JwtKey {
        algorithm: "HS256".into(),
        secret: Some("an http test secret of thirty-two bytes or more".into()),
        public_key: None,
        public_key_file: None,
    }];
    config.auth.required_routes = vec!["probe-http/<str:action>/".into()];
    let server = TestServer::start_with(config).await;
    let reply = get(&server, "/probe-http/context/").await;
    assert_eq!(reply.status, 401);
    assert_eq!(reply.header("www-authenticate"), Some("Bearer"));
    let reply = request(
        &server,
        "GET",
        "/probe-http/context/",
        &[("authorization", "Bearer junk")],
        b"",
    )
    .await;
    assert_eq!(reply.status, 401);
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
        + 600;
    let token = hs256(&json!({"sub": "ada", "exp": exp, "operator": true}));
    let bearer = format!("Bearer {token}");
    let reply = request(
        &server,
        "GET",
        "/probe-http/context/",
        &[("authorization", &bearer)],
        b"",
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let context = reply.json();
    assert_eq!(context["user"], "ada");
    let claims: serde_json::Value =
        serde_json::from_str(context["claims"].as_str().expect("claims")).expect("JSON claims");
    assert_eq!(claims["operator"], true);
    // Routes not listed stay open.
    assert_eq!(get(&server, "/api/hello/x/").await.status, 200);
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn static_files_have_etags_conditional_gets_and_ranges() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("index.html"), "<h1>dashboard</h1>").expect("write");
    std::fs::write(dir.path().join("app.js"), "console.log('0123456789');").expect("write");
    // Plugin routes come first, and the stations example serves `/`
    // itself: this server has only hello and chat, so `/` is the index.
    let plugins = PluginDir::new();
    plugins.install("hello", Build::V1, HELLO_MANIFEST);
    plugins.install(
        "chat",
        Build::V1,
        "routes = [\"ws/chat/<str:room_name>/\"]\n",
    );
    let mut config: Config = test_config();
    config.plugins = plugins.path().to_path_buf();
    config.static_files.dir = Some(dir.path().to_path_buf());
    config.static_files.prefix = "/".into();
    let server = TestServer::start_with(config).await;
    let index = get(&server, "/").await;
    assert_eq!(index.status, 200);
    assert_eq!(index.body, "<h1>dashboard</h1>");
    assert!(
        index
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/html"))
    );
    let js = get(&server, "/app.js").await;
    assert_eq!(js.status, 200);
    assert!(
        js.header("content-type")
            .is_some_and(|t| t.contains("javascript")),
        "{js:?}"
    );
    let validator = js
        .header("etag")
        .or(js.header("last-modified"))
        .expect("a validator")
        .to_owned();
    let condition = if js.header("etag").is_some() {
        "if-none-match"
    } else {
        "if-modified-since"
    };
    let again = request(&server, "GET", "/app.js", &[(condition, &validator)], b"").await;
    assert_eq!(again.status, 304);
    let part = request(&server, "GET", "/app.js", &[("range", "bytes=0-6")], b"").await;
    assert_eq!(part.status, 206);
    assert_eq!(part.body, "console");
    // Plugin routes still win, and a missing file falls through to 404/426.
    assert_eq!(get(&server, "/api/hello/x/").await.status, 200);
    assert_eq!(get(&server, "/missing.txt").await.status, 404);
    assert_eq!(get(&server, "/ws/chat/lobby/").await.status, 426);
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn a_post_on_one_process_reaches_sockets_on_another_through_redis() {
    let redis = RedisServer::start();
    let config = || {
        let mut config = test_config();
        config.redis_url = Some(redis.url());
        config
    };
    let a = TestServer::start_with(config()).await;
    let b = TestServer::start_with(config()).await;
    let mut on_a = Client::connect(&a, "/ws/chat/shared/").await;
    let mut on_b = Client::connect(&b, "/ws/chat/shared/").await;
    let reply = post_json(
        &a,
        "/api/rooms/shared/messages/",
        &json!({"message": "both"}),
    )
    .await;
    assert_eq!(reply.status, 202, "{}", reply.body);
    assert_eq!(on_a.recv_json().await, json!({"message": "both"}));
    assert_eq!(on_b.recv_json().await, json!({"message": "both"}));
    // And an event stream on B hears a POST on A.
    let mut events = LineStream::open(&b, "/api/rooms/shared/events/").await;
    events.expect_line(": connected").await;
    post_json(
        &a,
        "/api/rooms/shared/messages/",
        &json!({"message": "sse"}),
    )
    .await;
    events.expect_line("event: message").await;
    assert_eq!(
        events.next_line().await.as_deref(),
        Some(r#"data: {"message":"sse"}"#)
    );
    a.shutdown().await.expect("clean shutdown");
    b.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn the_admin_api_lists_http_routes() {
    let mut config = test_config();
    config.admin.token = Some("an-admin-token-for-tests".into());
    let server = TestServer::start_with(config).await;
    let reply = request(
        &server,
        "GET",
        "/_switchyard/plugins",
        &[("authorization", "Bearer an-admin-token-for-tests")],
        b"",
    )
    .await;
    assert_eq!(reply.status, 200);
    let listing = reply.json();
    let hello = listing["plugins"]
        .as_array()
        .expect("plugins")
        .iter()
        .find(|p| p["name"] == "hello")
        .expect("hello listed")
        .clone();
    assert_eq!(hello["routes"], json!([]));
    assert!(
        hello["http_routes"]
            .as_array()
            .expect("http_routes")
            .contains(&json!("api/hello/<str:name>/")),
        "{hello}"
    );
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn a_post_reaches_a_django_consumer_through_channels_redis() {
    let redis = RedisServer::start();
    let mut config = test_config();
    config.redis_url = Some(redis.url());
    let server = TestServer::start_with(config).await;
    let mut django =
        PythonListener::start(&python_config(&redis.url(), &[]), "chat_django", 1).await;
    let reply = post_json(
        &server,
        "/api/rooms/django/messages/",
        &json!({"message": "to django"}),
    )
    .await;
    assert_eq!(reply.status, 202, "{}", reply.body);
    assert_eq!(
        django.next().await["message"],
        json!({"type": "chat.message", "message": "to django"})
    );
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn a_layer_that_is_down_reads_as_503_with_retry_after() {
    let (_refusing, port) = refusing_port();
    let mut config = test_config();
    config.redis_url = Some(format!("redis://127.0.0.1:{port}/0"));
    let server = TestServer::start_with(config).await;
    let reply = post_json(&server, "/api/rooms/down/messages/", &json!({"message": 1})).await;
    assert_eq!(reply.status, 503, "{}", reply.body);
    assert_eq!(reply.header("retry-after"), Some("5"));
    assert_eq!(reply.json()["error"], "layer_unavailable");
    // Views that do not need the layer go on.
    assert_eq!(get(&server, "/api/hello/up/").await.status, 200);
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn requests_in_flight_across_swaps_all_get_answers() {
    let (dir, server) = hello_alone("").await;
    let server = std::sync::Arc::new(server);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for c in 0..4 {
        let server = std::sync::Arc::clone(&server);
        let stop = std::sync::Arc::clone(&stop);
        clients.push(tokio::spawn(async move {
            let mut answered = 0_u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let reply = get(&server, &format!("/api/hello/c{c}n{answered}/")).await;
                assert_eq!(reply.status, 200, "{}", reply.body);
                assert_eq!(reply.json(), json!({"hello": format!("c{c}n{answered}")}));
                answered += 1;
            }
            answered
        }));
    }
    for swap in 0..3 {
        let old = server.host.status()[0].version.clone().expect("live");
        dir.install(
            "hello",
            Build::V1,
            &format!("{HELLO_MANIFEST}# swap {swap}\n"),
        );
        wait_until(&server, "the new version is live", |s| {
            s.host.status()[0].version.as_deref() != Some(old.as_str())
        })
        .await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for client in clients {
        assert!(client.await.expect("client task") > 0);
    }
}
