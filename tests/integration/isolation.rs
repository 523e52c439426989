//! Guest isolation: a plugin that spins, hogs memory or traps closes only
//! its own connection (1011); per-plugin `[limits]` from the manifest; no
//! ambient authority; a plugin importing what the host lacks fails to load.

use std::path::Path;

use serde_json::json;
use switchyard_tests::{Client, PATIENCE, TestServer, test_config, test_plugins_dir};
use tempfile::TempDir;

/// A plugin directory with the probe under its own manifest (routes as in
/// the shared one, plus `limits`) and the echo plugin.
fn probe_with_limits(limits: &str) -> TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let plugins = test_plugins_dir();
    for name in ["probe.wasm", "echo.wasm", "echo.toml"] {
        std::fs::copy(plugins.join(name), dir.path().join(name)).expect("copy plugin");
    }
    let manifest = format!("routes = [\"probe/any/<path:rest>\"]\n\n[limits]\n{limits}\n");
    std::fs::write(dir.path().join("probe.toml"), manifest).expect("write manifest");
    dir
}

async fn start_in(dir: &Path) -> TestServer {
    TestServer::start_with(switchyard::Config {
        plugins: dir.to_path_buf(),
        ..test_config()
    })
    .await
}

async fn open_probe(server: &TestServer, name: &str) -> Client {
    let mut client = Client::connect(server, &format!("/probe/any/{name}")).await;
    let hello = client.recv_json().await;
    assert_eq!(hello["route"], "probe/any/<path:rest>");
    client
}

async fn assert_echoes(client: &mut Client, text: &str) {
    client
        .send_json(&json!({"cmd": "echo", "text": text}))
        .await;
    assert_eq!(client.recv_json().await, json!({"echo": text}));
}

// Two workers: the spinning guest holds one, the other keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spinning_plugin_gets_1011_while_another_connection_keeps_echoing() {
    let dir = probe_with_limits("call-timeout-ms = 300");
    let server = start_in(dir.path()).await;
    let limits = server
        .host
        .resolve("/probe/any/x")
        .expect("probe routed")
        .plugin
        .limits()
        .clone();
    assert_eq!(
        limits.call_timeout.as_millis(),
        300,
        "manifest limit applies"
    );

    let mut spinner = open_probe(&server, "spin").await;
    let mut neighbour = open_probe(&server, "neighbour").await;
    spinner.send_json(&json!({"cmd": "spin"})).await;
    // While the guest spins, the other instance of the same plugin answers.
    assert_echoes(&mut neighbour, "during").await;
    let (code, reason) = spinner.recv_close().await.expect("close frame");
    assert_eq!(code, 1011, "{reason}");
    assert_echoes(&mut neighbour, "after").await;

    let failures = server.host.failures();
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0].plugin, "probe");
    assert_eq!(failures[0].deadlines, 1);
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn a_memory_hog_gets_1011_and_the_server_is_unharmed() {
    let dir = probe_with_limits("memory-bytes = 16777216");
    let server = start_in(dir.path()).await;
    let mut hog = open_probe(&server, "hog").await;
    hog.send_json(&json!({"cmd": "hog"})).await;
    let (code, _) = hog.recv_close().await.expect("close frame");
    assert_eq!(code, 1011);

    // Same plugin, new instance: fresh memory, works.
    let mut next = open_probe(&server, "next").await;
    assert_echoes(&mut next, "fine").await;
    let mut echo = Client::connect(&server, "/ws/echo/").await;
    echo.send_text("still here").await;
    assert_eq!(echo.recv_text().await, "still here");

    let failures = server.host.failures();
    assert_eq!(failures[0].traps, 1, "{failures:?}");
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn a_plugin_that_keeps_trapping_is_counted() {
    let server = TestServer::start().await;
    for round in 0..3 {
        let mut client = open_probe(&server, &format!("trap{round}")).await;
        client.send_json(&json!({"cmd": "panic"})).await;
        assert_eq!(client.recv_close().await.expect("close").0, 1011);
    }
    let failures = server.host.failures();
    assert_eq!(failures.len(), 1);
    assert_eq!((failures[0].traps, failures[0].deadlines), (3, 0));
    assert_eq!(
        switchyard::Counters::get(&server.counters.plugin_failures),
        3
    );
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn per_plugin_max_instances_is_503_past_the_cap() {
    let dir = probe_with_limits("max-instances = 2");
    let server = start_in(dir.path()).await;
    let _a = open_probe(&server, "a").await;
    let b = open_probe(&server, "b").await;
    assert_eq!(
        switchyard_tests::handshake_status(&server, "/probe/any/c").await,
        503
    );
    // Other plugins are not affected by the probe's cap.
    let _echo = Client::connect(&server, "/ws/echo/").await;
    b.close().await;
    // The slot comes back once the closed connection's task ends.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while let Err(status) = Client::try_connect_with_headers(&server, "/probe/any/c", &[]).await {
        assert_eq!(status, 503);
        assert!(
            tokio::time::Instant::now() < deadline,
            "slot never came back"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn a_manifest_asking_for_more_memory_than_the_server_allows_is_refused() {
    let dir = probe_with_limits("memory-bytes = 1073741824");
    let server = start_in(dir.path()).await;
    assert!(
        server.host.resolve("/probe/any/x").is_none(),
        "the probe must not load"
    );
    let err = server
        .host
        .compile(&dir.path().join("probe.wasm"))
        .await
        .expect_err("refused");
    assert!(err.to_string().contains("memory-bytes"), "{err}");
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn guests_have_no_ambient_authority() {
    let server = TestServer::start().await;
    let mut client = open_probe(&server, "ambient").await;
    client.send_json(&json!({"cmd": "ambient"})).await;
    let answer = client.recv_json().await;
    assert_eq!(answer["env"], 0, "{answer}");
    assert_eq!(answer["args"], 0, "{answer}");
    assert_eq!(answer["read_dir"], false, "{answer}");
    assert_eq!(answer["tcp"], false, "{answer}");
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn a_plugin_importing_what_the_host_lacks_fails_naming_the_import() {
    let dir = tempfile::tempdir().expect("temp dir");
    let component = wat::parse_str(
        r#"(component
             (import "evil:net/raw-socket" (instance
               (export "open" (func (param "port" u16) (result u32)))))
           )"#,
    )
    .expect("valid component text");
    let path = dir.path().join("evil.wasm");
    std::fs::write(&path, component).expect("write component");
    let server = TestServer::start().await;
    let err = server.host.compile(&path).await.expect_err("must not load");
    let message = err.to_string();
    assert!(message.contains("evil:net/raw-socket"), "{message}");
    assert!(message.contains("evil.wasm"), "{message}");
    tokio::time::timeout(PATIENCE, server.shutdown())
        .await
        .expect("in time")
        .expect("clean shutdown");
}
