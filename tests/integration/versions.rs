//! Plugin versions: a version is the component and its manifest, and a
//! `snapshot` that traps during a migrate swap closes that one connection
//! (1011), since a trapped instance cannot be entered again.

use switchyard::Config;
use switchyard_tests::plugin_dir::{Build, PluginDir};
use switchyard_tests::{Client, PATIENCE, TestServer, test_config, wait_until};

const MIGRATE: &str = "routes = [\"test/counter/\"]\non-replace = \"migrate\"\n";

async fn serve(dir: &PluginDir) -> TestServer {
    TestServer::start_with(Config {
        plugins: dir.path().to_path_buf(),
        ..test_config()
    })
    .await
}

#[tokio::test]
async fn a_manifest_change_is_a_version_with_its_own_id() {
    let dir = PluginDir::new();
    let drain = "routes = [\"test/counter/\"]\non-replace = \"drain\"\n";
    dir.install("counter", Build::V1, drain);
    let server = serve(&dir).await;
    // An open connection keeps the first version alive (drain).
    let mut client = Client::connect(&server, "/test/counter/").await;
    client.send_text("a").await;
    assert_eq!(client.recv_json().await["count"], 1);

    dir.write(
        "counter.toml",
        format!("{drain}# the same component\n").as_bytes(),
    );
    wait_until(&server, "the second version", |server| {
        server
            .host
            .status()
            .iter()
            .any(|p| p.name == "counter" && p.versions.len() == 2)
    })
    .await;
    let status = server.host.status();
    let counter = status
        .iter()
        .find(|p| p.name == "counter")
        .expect("counter");
    assert_ne!(counter.versions[0].version, counter.versions[1].version);
    assert_eq!(counter.version.as_ref(), Some(&counter.versions[0].version));
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn a_snapshot_that_traps_closes_only_its_connection_with_1011() {
    let dir = PluginDir::new();
    dir.install("counter", Build::V1, MIGRATE);
    let server = serve(&dir).await;
    let mut trapping = Client::connect(&server, "/test/counter/").await;
    trapping.send_text("trap in snapshot").await;
    assert_eq!(trapping.recv_json().await["count"], 1);
    let mut healthy = Client::connect(&server, "/test/counter/").await;
    healthy.send_text("a").await;
    assert_eq!(healthy.recv_json().await["count"], 1);

    dir.install("counter", Build::V2, MIGRATE);
    let (code, _) = trapping.recv_close().await.expect("a close frame");
    assert_eq!(code, 1011);
    // The other connection moved to the new version with its count.
    tokio::time::timeout(PATIENCE * 6, async {
        let mut n = 2;
        loop {
            healthy.send_text("b").await;
            let reply = healthy.recv_json().await;
            assert_eq!(reply["count"], n, "{reply}");
            if reply["version"] == "v2" {
                break;
            }
            n += 1;
        }
    })
    .await
    .expect("the healthy connection moved to v2");
    assert_eq!(
        server.host.failures()[0].traps,
        1,
        "{:?}",
        server.host.failures()
    );
    server.shutdown().await.expect("clean shutdown");
}
