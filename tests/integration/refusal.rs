//! Refusing a handshake with a status of the plugin's choice
//! (`connection.refuse`, WIT 0.1.1): the chat example answers 503 with
//! `Retry-After` while the channel layer is unreachable, and components
//! built against 0.1.0 keep loading.

use std::time::Duration;

use switchyard::Config;
use switchyard_tests::plugin_dir::PluginDir;
use switchyard_tests::redis_support::{RedisServer, refusing_port};
use switchyard_tests::{Client, TestServer, handshake_status, http_get, test_config};
use tokio::time::Instant;

/// How long a poll may wait before the test fails as hung.
const PATIENCE: Duration = Duration::from_secs(60);

/// The status and `Retry-After` header a handshake got.
async fn refusal(server: &TestServer, path: &str) -> (u16, Option<String>) {
    match tokio_tungstenite::connect_async(server.url(path)).await {
        Ok((_, response)) => panic!("{path}: accepted ({})", response.status()),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => (
            response.status().as_u16(),
            response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        ),
        Err(other) => panic!("{path}: no HTTP answer: {other}"),
    }
}

fn redis_config(url: String) -> Config {
    Config {
        redis_url: Some(url),
        ..test_config()
    }
}

#[tokio::test]
async fn chat_answers_503_with_retry_after_while_redis_is_unreachable() {
    let (_refusing, port) = refusing_port();
    let server = TestServer::start_with(redis_config(format!("redis://127.0.0.1:{port}/0"))).await;
    assert_eq!(
        refusal(&server, "/ws/chat/lobby/").await,
        (503, Some("5".to_owned())),
        "group_add fails with `unavailable`: 503, not 403"
    );
    // Readiness says so too, once the layer's loops have failed.
    let start = Instant::now();
    loop {
        let (status, _, body) = http_get(server.addr, "/readyz").await;
        if status == 503 {
            assert_eq!(body["layer_healthy"], false, "{body}");
            break;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "readiness stayed {status}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn chat_accepts_while_redis_is_up() {
    let redis = RedisServer::start();
    let server = TestServer::start_with(redis_config(redis.url())).await;
    assert_eq!(handshake_status(&server, "/ws/chat/lobby/").await, 101);
    let (status, _, body) = http_get(server.addr, "/readyz").await;
    assert_eq!(status, 200, "{body}");
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn a_plugin_refuses_with_its_status_and_retry_after() {
    let server = TestServer::start().await;
    assert_eq!(
        refusal(&server, "/probe/refuse/?status=503&retry=7").await,
        (503, Some("7".to_owned()))
    );
    assert_eq!(
        refusal(&server, "/probe/refuse/?status=429&retry=2").await,
        (429, Some("2".to_owned()))
    );
    // Retry-After only where it means something.
    assert_eq!(
        refusal(&server, "/probe/refuse/?status=404&retry=2").await,
        (404, None)
    );
    assert_eq!(
        refusal(&server, "/probe/refuse/?status=503").await,
        (503, None)
    );
    // A status a plugin may not use is a plugin error: the call traps.
    assert_eq!(
        refusal(&server, "/probe/refuse/?status=418").await,
        (500, None)
    );
    assert_eq!(
        refusal(&server, "/probe/refuse/?status=101").await,
        (500, None)
    );
    server.shutdown().await.expect("clean shutdown");
}

/// `tests/fixtures/echo-consumer-0.1.0.wasm` is the echo plugin as built
/// against `switchyard:consumer@0.1.0`, before `refuse` was added: the
/// host (0.1.1) still loads and serves it.
#[tokio::test]
async fn a_component_built_against_wit_0_1_0_still_loads() {
    let fixture = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/echo-consumer-0.1.0.wasm"),
    )
    .expect("the 0.1.0 fixture");
    let imports = |bytes: &[u8], version: &str| {
        let name = format!("switchyard:consumer/host@{version}");
        bytes.windows(name.len()).any(|w| w == name.as_bytes())
    };
    assert!(imports(&fixture, "0.1.0"), "the fixture is a 0.1.0 build");
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
