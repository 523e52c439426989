//! `switchyard compile` and the `.cwasm` files it writes: the loader uses a
//! matching one, and refuses a garbage, truncated, stale or foreign one
//! with an error naming the file, compiling the `.wasm` instead. Also the
//! per-plugin `[limits] max-core-instances`.

use std::path::Path;

use sha2::{Digest as _, Sha256};
use switchyard::Config;
use switchyard_host::VersionStatus;
use switchyard_tests::plugin_dir::{Build, PluginDir};
use switchyard_tests::redis_support::switchyard_bin;
use switchyard_tests::{Client, TestServer, handshake_status, test_config};

fn config_for(dir: &PluginDir) -> Config {
    Config {
        plugins: dir.path().to_path_buf(),
        compile_cache: None,
        ..test_config()
    }
}

/// An echo plugin in a fresh directory.
fn echo_dir() -> PluginDir {
    let dir = PluginDir::new();
    dir.install("echo", Build::V1, "routes = [\"ws/echo/\"]\n");
    dir
}

/// Run `switchyard compile --plugins DIR` and check it wrote echo.cwasm.
async fn compile(dir: &Path) {
    let output = tokio::process::Command::new(switchyard_bin())
        .args(["compile", "--plugins"])
        .arg(dir)
        .env_remove("SWITCHYARD_CONFIG")
        .output()
        .await
        .expect("run switchyard compile");
    assert!(
        output.status.success(),
        "switchyard compile failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("echo.cwasm"), "{stdout}");
    assert!(dir.join("echo.cwasm").is_file());
}

/// Start a server on `dir`, check echo serves, and return echo's live
/// version as the admin view shows it.
async fn live_echo(dir: &PluginDir) -> VersionStatus {
    let server = TestServer::start_with(config_for(dir)).await;
    let mut client = Client::connect(&server, "/ws/echo/").await;
    client.send_text("still served").await;
    assert_eq!(client.recv_text().await, "still served");
    client.close().await;
    let status = server.host.status();
    let echo = status
        .iter()
        .find(|p| p.name == "echo")
        .expect("echo listed");
    let version = echo.versions.first().expect("a live version").clone();
    server.shutdown().await.expect("clean shutdown");
    version
}

fn refused_because(version: &VersionStatus, why: &str) {
    assert!(!version.precompiled, "{version:?}");
    let error = version
        .precompiled_error
        .as_deref()
        .unwrap_or_else(|| panic!("no refusal in {version:?}"));
    assert!(error.contains("echo.cwasm"), "names the file: {error}");
    assert!(error.contains(why), "{error}");
}

#[tokio::test]
async fn a_compiled_cwasm_is_used() {
    let dir = echo_dir();
    let without = live_echo(&dir).await;
    assert!(!without.precompiled);
    assert_eq!(without.precompiled_error, None);
    compile(dir.path()).await;
    let with = live_echo(&dir).await;
    assert!(with.precompiled, "{with:?}");
    assert_eq!(with.precompiled_error, None);
}

#[tokio::test]
async fn garbage_and_truncated_cwasm_files_are_refused() {
    let dir = echo_dir();
    dir.write("echo.cwasm", b"not machine code at all");
    refused_because(
        &live_echo(&dir).await,
        "not written by `switchyard compile`",
    );

    compile(dir.path()).await;
    let whole = std::fs::read(dir.path().join("echo.cwasm")).expect("read");
    dir.write("echo.cwasm", &whole[..whole.len() / 2]);
    refused_because(&live_echo(&dir).await, "does not fit this server's engine");
}

#[tokio::test]
async fn a_stale_cwasm_is_refused() {
    let dir = echo_dir();
    compile(dir.path()).await;
    // Another build of the component: the same bytes plus a custom section
    // (id 0: its size, a name, no data).
    let mut wasm = std::fs::read(dir.path().join("echo.wasm")).expect("read");
    wasm.extend_from_slice(&[0, 6, 5, b's', b't', b'a', b'l', b'e']);
    dir.write("echo.wasm", &wasm);
    refused_because(&live_echo(&dir).await, "is stale");
}

#[tokio::test]
async fn a_cwasm_from_another_engine_configuration_is_refused() {
    let dir = echo_dir();
    let wasm = std::fs::read(dir.path().join("echo.wasm")).expect("read");
    // wasmtime's default configuration, not the server's, in a file with
    // a correct header and hash.
    let engine = wasmtime::Engine::default();
    let code = engine.precompile_component(&wasm).expect("precompile");
    let mut cwasm = b"switchyard-cwasm-1\n".to_vec();
    cwasm.extend_from_slice(&Sha256::digest(&wasm));
    cwasm.extend_from_slice(&code);
    dir.write("echo.cwasm", &cwasm);
    refused_because(&live_echo(&dir).await, "does not fit this server's engine");
}

#[tokio::test]
async fn core_instances_are_limited_per_plugin() {
    let dir = PluginDir::new();
    // One core instance is too few for any component: instantiation fails
    // (500), the plugin with the default serves.
    dir.install(
        "echo",
        Build::V1,
        "routes = [\"ws/echo/\"]\n[limits]\nmax-core-instances = 1\n",
    );
    dir.install("counter", Build::V1, "routes = [\"ws/counter/\"]\n");
    let server = TestServer::start_with(config_for(&dir)).await;
    assert_eq!(handshake_status(&server, "/ws/echo/").await, 500);
    assert_eq!(handshake_status(&server, "/ws/counter/").await, 101);
    server.shutdown().await.expect("clean shutdown");

    // Out of range: refused at load, naming the key.
    let dir = PluginDir::new();
    dir.install(
        "echo",
        Build::V1,
        "routes = [\"ws/echo/\"]\n[limits]\nmax-core-instances = 5000\n",
    );
    let server = TestServer::start_with(config_for(&dir)).await;
    let status = server.host.status();
    let echo = status
        .iter()
        .find(|p| p.name == "echo")
        .expect("echo listed");
    let error = &echo.last_error.as_ref().expect("a load error").error;
    assert!(
        error.contains("limits.max-core-instances = 5000"),
        "{error}"
    );
    server.shutdown().await.expect("clean shutdown");
}
