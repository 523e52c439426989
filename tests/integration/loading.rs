//! Bind first, compile in the background: while a large plugin compiles,
//! the server serves the plugins that are ready, answers the large one's
//! route with 503 and `Retry-After`, reports it `loading` (n of m) in the
//! admin view, and keeps `/readyz` at 503 until the initial load is done.

use std::time::Duration;

use switchyard::Config;
use switchyard_host::Protocol;
use switchyard_tests::plugin_dir::{Build, PluginDir};
use switchyard_tests::{Client, TestServer, http_get, test_config, wait_until_within};

/// A component that takes seconds to compile: `base` (a real consumer
/// component) with one more core module appended, unused but compiled
/// like every module of a component, made of `functions` functions of
/// arithmetic. `salt` makes its content unique, so no compile cache holds
/// it.
pub(crate) fn slow_component(base: &[u8], functions: usize, salt: u64) -> Vec<u8> {
    use std::fmt::Write as _;
    let mut wat = String::from("(module\n");
    for f in 0..functions {
        let _ = write!(
            wat,
            "(func (export \"f{f}\") (param i64) (result i64) local.get 0"
        );
        for i in 0..60u64 {
            let _ = write!(
                wat,
                " i64.const {} i64.mul i64.const {} i64.xor",
                salt ^ (i * 7919 + f as u64),
                i + 3
            );
        }
        wat.push_str(")\n");
    }
    wat.push(')');
    let module = wat::parse_str(&wat).expect("the generated module parses");
    let mut component = base.to_vec();
    // A component's core module section: id 1, its size, the module.
    component.push(1);
    let mut size = module.len();
    loop {
        let byte = u8::try_from(size & 0x7f).expect("seven bits");
        size >>= 7;
        if size == 0 {
            component.push(byte);
            break;
        }
        component.push(byte | 0x80);
    }
    component.extend_from_slice(&module);
    component
}

fn salt() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// How long a slow compile may take on a busy machine before the test
/// gives up (a hang turned into a failure, not a timing assertion).
const COMPILE_PATIENCE: Duration = Duration::from_secs(300);

async fn wait_for(server: &TestServer, what: &str, done: impl Fn(&TestServer) -> bool) {
    wait_until_within(server, COMPILE_PATIENCE, what, done).await;
}

/// The status and `Retry-After` of a WebSocket handshake refused by HTTP.
async fn refused_handshake(server: &TestServer, path: &str) -> (u16, Option<String>) {
    match tokio_tungstenite::connect_async(server.url(path)).await {
        Ok(_) => panic!("{path}: the handshake succeeded"),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => (
            response.status().as_u16(),
            response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        ),
        Err(err) => panic!("{path}: {err}"),
    }
}

#[tokio::test]
async fn a_compiling_plugin_answers_503_while_the_others_serve() {
    let dir = PluginDir::new();
    dir.install("echo", Build::V1, "routes = [\"ws/echo/\"]\n");
    let base = std::fs::read(dir.path().join("echo.wasm")).expect("echo.wasm");
    dir.write("slow.toml", b"routes = [\"ws/slow/\"]\n");
    dir.write("slow.wasm", &slow_component(&base, 3000, salt()));
    let config = Config {
        plugins: dir.path().to_path_buf(),
        // Nothing cached: the slow plugin really compiles.
        compile_cache: None,
        ..test_config()
    };
    let server = TestServer::start_loading(config).await;

    // The server answers at once; not ready until every plugin is loaded.
    let (status, _, body) = http_get(server.addr, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["plugins_loaded"], false, "{body}");

    // The small plugin goes live and serves while the large one compiles.
    wait_for(&server, "echo live", |s| {
        s.host.resolve("/ws/echo/").is_some()
    })
    .await;
    let mut client = Client::connect(&server, "/ws/echo/").await;
    client
        .send_text("served while another plugin compiles")
        .await;
    assert_eq!(
        client.recv_text().await,
        "served while another plugin compiles"
    );
    assert!(
        server.host.resolve("/ws/slow/").is_none(),
        "the slow plugin compiled before the test could look: make it larger"
    );

    // Its route answers 503 with Retry-After, never 404 and never a hang.
    let (status, retry_after) = refused_handshake(&server, "/ws/slow/").await;
    assert_eq!(status, 503);
    assert_eq!(retry_after.as_deref(), Some("2"));
    assert_eq!(
        server.host.loading_route(Protocol::Websocket, "/ws/slow/"),
        Some("slow".to_owned())
    );
    // A path nobody serves is still a 404 once the plugins are known... but
    // during the initial load it is a 503: its plugin may not be read yet.
    let (status, _) = refused_handshake(&server, "/ws/nobody/").await;
    assert_eq!(status, 503);

    // The admin view says `loading`, with its place in the batch.
    let status = server.host.status();
    let slow = status
        .iter()
        .find(|p| p.name == "slow")
        .expect("slow listed");
    assert_eq!(slow.state, "loading");
    let loading = slow.loading.as_ref().expect("loading progress");
    assert_eq!(loading.of, 2, "{loading:?}");
    assert!(loading.file.ends_with("slow.wasm"), "{loading:?}");
    let echo = status
        .iter()
        .find(|p| p.name == "echo")
        .expect("echo listed");
    assert_eq!(echo.state, "ready");

    // Then it is live and ready.
    wait_for(&server, "slow live", |s| {
        s.host.resolve("/ws/slow/").is_some()
    })
    .await;
    let mut slow_client = Client::connect(&server, "/ws/slow/").await;
    slow_client.send_text("now served").await;
    assert_eq!(slow_client.recv_text().await, "now served");
    wait_for(&server, "initial load done", |s| s.host.initial_load_done()).await;
    let (status, _, body) = http_get(server.addr, "/readyz").await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = refused_handshake(&server, "/ws/nobody/").await;
    assert_eq!(status, 404);
    let slow = server.host.status();
    let slow = slow.iter().find(|p| p.name == "slow").expect("slow listed");
    assert_eq!(slow.state, "ready");
    assert!(slow.loading.is_none());
    client.close().await;
    slow_client.close().await;
    server.shutdown().await.expect("clean shutdown");
}
