//! The plugin directory watcher reacts to changes, not to the host's own
//! reads: an unchanged plugin is read once, and one that failed to load is
//! not retried until it changes.

use switchyard::Config;
use switchyard_tests::plugin_dir::{Build, PluginDir};
use switchyard_tests::{TestServer, test_config, test_plugins_dir, wait_until};

#[tokio::test]
async fn plugins_are_read_again_only_when_they_change() {
    let dir = PluginDir::new();
    dir.install("echo", Build::V1, "routes = [\"ws/echo/\"]\n");
    dir.write("broken.wasm", b"not a component");
    let server = TestServer::start_with(Config {
        plugins: dir.path().to_path_buf(),
        ..test_config()
    })
    .await;
    wait_until(&server, "the broken plugin's failure", |server| {
        server
            .host
            .status()
            .iter()
            .any(|p| p.name == "broken" && p.last_error.is_some())
    })
    .await;
    let read = server.host.files_read();
    assert!(read >= 2, "echo and broken were read: {read}");

    // A new plugin is the only file read: loading it (and the reads that
    // involves) makes nothing else reload, and the broken file, unchanged,
    // is not retried.
    dir.install("probe", Build::V1, "routes = [\"probe/layer/\"]\n");
    wait_until(&server, "the new plugin going live", |server| {
        server.host.routes().iter().any(|r| r.plugin == "probe")
    })
    .await;
    assert_eq!(server.host.files_read(), read + 1);

    // Fixing the broken file makes it load.
    dir.write("broken.toml", b"routes = [\"ws/fixed/\"]\n");
    let echo = std::fs::read(test_plugins_dir().join("echo.wasm")).expect("read echo.wasm");
    dir.write("broken.wasm", &echo);
    wait_until(&server, "the fixed plugin going live", |server| {
        server.host.routes().iter().any(|r| r.plugin == "broken")
    })
    .await;
    server.shutdown().await.expect("clean shutdown");
}
