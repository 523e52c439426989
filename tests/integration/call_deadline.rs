//! The tokio half of a guest call's deadline: a guest suspended awaiting
//! the host (here the WASI clock, through `std::thread::sleep`) runs no
//! wasm, so the epoch deadline cannot stop it; the host's timer must, and
//! since calls that finish in their first poll no longer build a timer
//! (`call_deadline::within`), one that waits must still get it.

use serde_json::json;
use switchyard_tests::{Client, TestServer, test_config, test_plugins_dir};

#[tokio::test]
async fn a_guest_waiting_on_the_host_past_its_deadline_gets_1011() {
    let dir = tempfile::tempdir().expect("temp dir");
    let plugins = test_plugins_dir();
    std::fs::copy(plugins.join("probe.wasm"), dir.path().join("probe.wasm")).expect("copy probe");
    std::fs::write(
        dir.path().join("probe.toml"),
        "routes = [\"probe/any/<path:rest>\"]\n\n[limits]\ncall-timeout-ms = 300\n",
    )
    .expect("write manifest");
    let server = TestServer::start_with(switchyard::Config {
        plugins: dir.path().to_path_buf(),
        ..test_config()
    })
    .await;

    let mut sleeper = Client::connect(&server, "/probe/any/sleeper").await;
    let _hello = sleeper.recv_json().await;
    let mut neighbour = Client::connect(&server, "/probe/any/neighbour").await;
    let _hello = neighbour.recv_json().await;

    // Far past the 300 ms deadline (and past the client's patience): only
    // the host's timer ends this call in time for the close to arrive.
    sleeper
        .send_json(&json!({"cmd": "sleep", "ms": 600_000}))
        .await;
    let (code, reason) = sleeper.recv_close().await.expect("close frame");
    assert_eq!(code, 1011, "{reason}");
    let failures = server.host.failures();
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0].deadlines, 1, "{failures:?}");
    assert_eq!(failures[0].traps, 0, "{failures:?}");

    // A call that waits and finishes within its deadline is not cut short.
    neighbour.send_json(&json!({"cmd": "sleep", "ms": 1})).await;
    assert_eq!(neighbour.recv_json().await, json!({"slept": 1}));
    server.shutdown().await.expect("clean shutdown");
}
