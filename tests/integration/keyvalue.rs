//! `wasi:keyvalue` for plugins: per-plugin namespaces, values that outlive
//! a hot swap and a server, Redis shared by processes, atomic increments,
//! size limits, a Redis outage as an error, and the manifest opt-in. The
//! `kvprobe` test plugin answers each text command with `{"ok": ...}` or
//! `{"err": ...}`.

use serde_json::{Value, json};
use switchyard::Config;
use switchyard_tests::plugin_dir::PluginDir;
use switchyard_tests::redis_support::{RedisServer, ServerProcess};
use switchyard_tests::{Client, TestServer, test_config, test_plugins_dir};

/// Run one kvprobe command and return its answer.
async fn kv(client: &mut Client, command: &str) -> Value {
    client.send_text(command).await;
    client.recv_json().await
}

/// `{"ok": value}`, a successful answer.
fn ok(value: Value) -> Value {
    Value::Object([("ok".to_owned(), value)].into_iter().collect())
}

/// The error text of an answer; panics if it is not an error.
fn err(answer: &Value) -> &str {
    answer["err"]
        .as_str()
        .unwrap_or_else(|| panic!("expected an error, got {answer}"))
}

fn kv_manifest(name: &str, opt_in: bool) -> String {
    format!("routes = [\"test/{name}/\"]\nkeyvalue = {opt_in}\n")
}

/// A plugin directory holding the kvprobe component under each of `names`,
/// each opted in and routed at `test/<name>/`.
fn kv_dir(names: &[&str]) -> PluginDir {
    let dir = PluginDir::new();
    let wasm = std::fs::read(test_plugins_dir().join("kvprobe.wasm")).expect("built kvprobe");
    for name in names {
        dir.write(&format!("{name}.toml"), kv_manifest(name, true).as_bytes());
        dir.write(&format!("{name}.wasm"), &wasm);
    }
    dir
}

fn config_for(dir: &PluginDir, redis: Option<&RedisServer>) -> Config {
    Config {
        plugins: dir.path().to_path_buf(),
        // The tests reload the directory themselves, so each swap is one
        // known reconcile.
        watch_plugins: false,
        redis_url: redis.map(RedisServer::url),
        ..test_config()
    }
}

/// Two copies of one component under different names share nothing, not
/// even a bucket of the same name; bucket identifiers cannot escape the
/// namespace.
async fn plugins_are_isolated(redis: Option<&RedisServer>) {
    let dir = kv_dir(&["kv_a", "kv_b"]);
    let server = TestServer::start_with(config_for(&dir, redis)).await;
    let mut a = Client::connect(&server, "/test/kv_a/").await;
    let mut b = Client::connect(&server, "/test/kv_b/").await;

    assert_eq!(kv(&mut a, "set secret from-a").await, ok(Value::Null));
    assert_eq!(kv(&mut a, "get secret").await, ok(json!("from-a")));
    assert_eq!(kv(&mut b, "get secret").await, ok(Value::Null));
    assert_eq!(kv(&mut b, "exists secret").await, ok(json!(false)));
    assert_eq!(kv(&mut b, "keys").await, ok(json!([])));
    assert_eq!(kv(&mut b, "set secret from-b").await, ok(Value::Null));
    assert_eq!(kv(&mut a, "get secret").await, ok(json!("from-a")));
    assert_eq!(kv(&mut b, "get secret").await, ok(json!("from-b")));

    // Same bucket name, other plugin: still apart.
    assert_eq!(kv(&mut a, "bucket shared").await, ok(Value::Null));
    assert_eq!(kv(&mut b, "bucket shared").await, ok(Value::Null));
    assert_eq!(kv(&mut a, "incr n 5").await, ok(json!(5)));
    assert_eq!(kv(&mut b, "incr n 1").await, ok(json!(1)));
    assert_eq!(kv(&mut a, "getmany n").await, ok(json!([["n", "5"]])));

    // Identifiers that would reach into the key layout are refused.
    for escape in ["bucket kv_a:", "bucket :kv_a", "bucket ../kv_a", "bucket *"] {
        let answer = kv(&mut b, escape).await;
        assert!(
            err(&answer).contains("may only contain"),
            "{escape}: {answer}"
        );
    }
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn plugins_never_see_each_others_keys_in_memory() {
    plugins_are_isolated(None).await;
}

#[tokio::test]
async fn plugins_never_see_each_others_keys_in_redis() {
    let redis = RedisServer::start();
    plugins_are_isolated(Some(&redis)).await;
    // The documented layout: <prefix>:<plugin>:<bucket>:<key>.
    let mut conn = redis.connection().await;
    let mut keys: Vec<String> = ::redis::cmd("KEYS")
        .arg("switchyard:kv:*")
        .query_async(&mut conn)
        .await
        .expect("KEYS");
    keys.sort();
    assert_eq!(
        keys,
        [
            "switchyard:kv:kv_a::secret",
            "switchyard:kv:kv_a:shared:n",
            "switchyard:kv:kv_b::secret",
            "switchyard:kv:kv_b:shared:n",
        ]
    );
}

/// Values belong to the server, not to an instance or a version.
#[tokio::test]
async fn values_survive_a_hot_swap_of_the_plugin() {
    let dir = kv_dir(&["kv_a"]);
    let server = TestServer::start_with(config_for(&dir, None)).await;
    let mut before = Client::connect(&server, "/test/kv_a/").await;
    assert_eq!(kv(&mut before, "set kept yes").await, ok(Value::Null));
    assert_eq!(kv(&mut before, "incr visits 1").await, ok(json!(1)));
    let old_version = version_of(&server, "kv_a");

    // A new version: the same component under a changed manifest.
    let manifest = format!("{}# v2\n", kv_manifest("kv_a", true));
    dir.write("kv_a.toml", manifest.as_bytes());
    let report = server.host.load_dir(dir.path()).await.expect("reconcile");
    assert_eq!(report.loaded, ["kv_a"], "{:?}", report.failed);
    assert_ne!(version_of(&server, "kv_a"), old_version);

    let mut after = Client::connect(&server, "/test/kv_a/").await;
    assert_eq!(kv(&mut after, "get kept").await, ok(json!("yes")));
    assert_eq!(kv(&mut after, "incr visits 1").await, ok(json!(2)));
    // The old version's open connection sees the same store.
    assert_eq!(kv(&mut before, "get visits").await, ok(json!("2")));
    server.shutdown().await.expect("clean shutdown");
}

fn version_of(server: &TestServer, plugin: &str) -> String {
    server
        .host
        .status()
        .into_iter()
        .find(|status| status.name == plugin)
        .and_then(|status| status.version)
        .unwrap_or_else(|| panic!("{plugin} is not live"))
}

/// On Redis, another server process sees the values at once, and they
/// outlive the server that wrote them.
#[tokio::test]
async fn processes_on_one_redis_share_values_and_they_survive_a_restart() {
    let redis = RedisServer::start();
    let config = Config {
        redis_url: Some(redis.url()),
        ..test_config()
    };
    let first = TestServer::start_with(config.clone()).await;
    let other = ServerProcess::start(&redis.url());
    let other_url = format!("ws://{}/test/kv/", other.addr);

    let mut here = Client::connect(&first, "/test/kv/").await;
    let mut there = Client::connect_url(&other_url).await;
    assert_eq!(kv(&mut here, "set greeting hello").await, ok(Value::Null));
    assert_eq!(kv(&mut there, "get greeting").await, ok(json!("hello")));
    assert_eq!(kv(&mut there, "setmany a=1 b=2").await, ok(Value::Null));
    assert_eq!(
        kv(&mut here, "getmany a b c").await,
        ok(json!([["a", "1"], ["b", "2"], null]))
    );
    assert_eq!(
        kv(&mut here, "keys").await,
        ok(json!(["a", "b", "greeting"]))
    );
    assert_eq!(kv(&mut there, "delmany a b").await, ok(Value::Null));
    assert_eq!(kv(&mut here, "exists a").await, ok(json!(false)));

    here.close().await;
    first.shutdown().await.expect("clean shutdown");
    let restarted = TestServer::start_with(config).await;
    let mut again = Client::connect(&restarted, "/test/kv/").await;
    assert_eq!(kv(&mut again, "get greeting").await, ok(json!("hello")));
    restarted.shutdown().await.expect("clean shutdown");
}

/// Many connections incrementing one counter at once, spread over two
/// processes on one Redis (and over one process in memory), lose no update.
#[tokio::test]
async fn concurrent_increments_give_the_exact_total() {
    const CLIENTS: usize = 8;
    const EACH: u64 = 25;
    let redis = RedisServer::start();
    let redis_server = TestServer::start_with(Config {
        redis_url: Some(redis.url()),
        ..test_config()
    })
    .await;
    let other = ServerProcess::start(&redis.url());
    let memory_server = TestServer::start().await;

    for (servers, label) in [
        (
            vec![
                redis_server.url("/test/kv/"),
                format!("ws://{}/test/kv/", other.addr),
            ],
            "redis",
        ),
        (vec![memory_server.url("/test/kv/")], "memory"),
    ] {
        let tasks: Vec<_> = (0..CLIENTS)
            .map(|i| {
                let url = servers[i % servers.len()].clone();
                tokio::spawn(async move {
                    let mut client = Client::connect_url(&url).await;
                    for _ in 0..EACH {
                        let answer = kv(&mut client, "incr hits 1").await;
                        assert!(answer["ok"].is_u64(), "{answer}");
                    }
                    client.close().await;
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("client task");
        }
        let mut client = Client::connect_url(&servers[0]).await;
        let total = CLIENTS as u64 * EACH;
        assert_eq!(
            kv(&mut client, "get hits").await,
            ok(json!(total.to_string())),
            "{label}"
        );
        // A value that is not a counter is refused, not clobbered.
        assert_eq!(kv(&mut client, "set word abc").await, ok(Value::Null));
        let answer = kv(&mut client, "incr word 1").await;
        assert!(err(&answer).contains("not an integer"), "{label}: {answer}");
        assert_eq!(
            kv(&mut client, "get word").await,
            ok(json!("abc")),
            "{label}"
        );
    }
    redis_server.shutdown().await.expect("clean shutdown");
    memory_server.shutdown().await.expect("clean shutdown");
}

/// Compare-and-swap (wasi:keyvalue@0.2.0-draft2): a write between `cas.new`
/// and `swap` is detected, the fresh handle retries; CAS retry loops from
/// many connections on two processes lose no update.
#[tokio::test]
async fn compare_and_swap_detects_a_conflict_and_retry_loops_are_exact() {
    const CLIENTS: usize = 6;
    const EACH: u64 = 15;
    let redis = RedisServer::start();
    let server = TestServer::start_with(Config {
        redis_url: Some(redis.url()),
        ..test_config()
    })
    .await;
    let other = ServerProcess::start(&redis.url());
    let urls = [
        server.url("/test/kv/"),
        format!("ws://{}/test/kv/", other.addr),
    ];
    let mut a = Client::connect_url(&urls[0]).await;
    let mut b = Client::connect_url(&urls[1]).await;

    assert_eq!(kv(&mut a, "set k 1").await, ok(Value::Null));
    assert_eq!(kv(&mut a, "casbegin k").await, ok(json!("1")));
    assert_eq!(kv(&mut b, "set k 2").await, ok(Value::Null));
    assert_eq!(
        kv(&mut a, "casswap 3").await,
        json!({"err": "cas-failed", "current": "2"})
    );
    assert_eq!(kv(&mut a, "get k").await, ok(json!("2")));
    // The fresh handle holds the latest value, so the retry stores.
    assert_eq!(kv(&mut a, "casswap 3").await, ok(Value::Null));
    assert_eq!(kv(&mut b, "get k").await, ok(json!("3")));
    // A handle on an absent key swaps only while it stays absent.
    assert_eq!(kv(&mut a, "casbegin fresh").await, ok(Value::Null));
    assert_eq!(kv(&mut b, "set fresh taken").await, ok(Value::Null));
    let answer = kv(&mut a, "casswap mine").await;
    assert_eq!(answer["err"], "cas-failed", "{answer}");
    assert_eq!(kv(&mut a, "get fresh").await, ok(json!("taken")));
    // draft2's increment is signed.
    assert_eq!(kv(&mut b, "incr2 n -3").await, ok(json!(-3)));
    a.close().await;
    b.close().await;

    let tasks: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let url = urls[i % urls.len()].clone();
            tokio::spawn(async move {
                let mut client = Client::connect_url(&url).await;
                for _ in 0..EACH {
                    let answer = kv(&mut client, "casincr total").await;
                    assert!(answer["ok"].is_u64(), "{answer}");
                }
                client.close().await;
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("client task");
    }
    let mut client = Client::connect(&server, "/test/kv/").await;
    let total = CLIENTS as u64 * EACH;
    assert_eq!(
        kv(&mut client, "get total").await,
        ok(json!(total.to_string()))
    );
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn oversized_keys_values_and_buckets_are_errors_and_store_nothing() {
    let mut config = test_config();
    config.keyvalue.max_key_bytes = 8;
    config.keyvalue.max_value_bytes = 100;
    config.keyvalue.max_bucket_bytes = 6;
    let server = TestServer::start_with(config).await;
    let mut client = Client::connect(&server, "/test/kv/").await;

    assert_eq!(kv(&mut client, "setn big 100").await, ok(Value::Null));
    let answer = kv(&mut client, "setn big2 101").await;
    assert!(
        err(&answer).contains("101 bytes, over the limit of 100 bytes"),
        "{answer}"
    );
    assert_eq!(kv(&mut client, "exists big2").await, ok(json!(false)));

    let answer = kv(&mut client, "set ninechars v").await;
    assert!(
        err(&answer).contains("over the limit of 8 bytes"),
        "{answer}"
    );
    assert_eq!(kv(&mut client, "keys").await, ok(json!(["big"])));

    // One oversized pair in a batch stores none of the batch.
    let answer = kv(&mut client, "setmany a=1 ninechars=2").await;
    assert!(err(&answer).contains("over the limit"), "{answer}");
    assert_eq!(kv(&mut client, "get a").await, ok(Value::Null));

    let answer = kv(&mut client, "bucket sevenxx").await;
    assert!(
        err(&answer).contains("over the limit of 6 bytes"),
        "{answer}"
    );
    assert_eq!(kv(&mut client, "bucket sixxxx").await, ok(Value::Null));
    server.shutdown().await.expect("clean shutdown");
}

/// Redis killed while connections use it: each call answers with the
/// interface's error (no hang, no closed socket), the server keeps
/// serving, and once Redis is back the store works again.
#[tokio::test]
async fn a_redis_outage_is_an_error_not_a_hang() {
    let mut redis = RedisServer::start();
    let server = TestServer::start_with(Config {
        redis_url: Some(redis.url()),
        ..test_config()
    })
    .await;
    let mut client = Client::connect(&server, "/test/kv/").await;
    assert_eq!(kv(&mut client, "set k v").await, ok(Value::Null));

    redis.kill();
    for command in ["get k", "set k w", "incr n 1", "keys", "getmany k"] {
        let answer = kv(&mut client, command).await;
        assert!(err(&answer).contains("unavailable"), "{command}: {answer}");
    }
    // The same socket and new ones are still served.
    assert_eq!(kv(&mut client, "bucket other").await, ok(Value::Null));
    let mut echo = Client::connect(&server, "/ws/echo/").await;
    echo.send_text("still up").await;
    assert_eq!(echo.recv_text().await, "still up");

    redis.restart();
    // The connection comes back on a later call (the restarted Redis is empty).
    let mut answer = kv(&mut client, "set k back").await;
    while answer != ok(Value::Null) {
        assert!(err(&answer).contains("unavailable"), "{answer}");
        answer = kv(&mut client, "set k back").await;
    }
    assert_eq!(kv(&mut client, "get k").await, ok(json!("back")));

    // A Redis that takes the command and never answers: the call's own
    // timeout turns it into the same error, long before the guest's.
    redis.freeze();
    let answer = kv(&mut client, "get k").await;
    assert!(err(&answer).contains("unavailable"), "{answer}");
    redis.thaw();
    let mut answer = kv(&mut client, "get k").await;
    while answer != ok(json!("back")) {
        assert!(err(&answer).contains("unavailable"), "{answer}");
        answer = kv(&mut client, "get k").await;
    }
    server.shutdown().await.expect("clean shutdown");
}

/// A component importing wasi:keyvalue without `keyvalue = true` is
/// refused with an error naming the key, and never replaces a working
/// version.
#[tokio::test]
async fn without_the_manifest_opt_in_the_plugin_is_refused() {
    let dir = kv_dir(&["kv_a"]);
    let wasm = std::fs::read(test_plugins_dir().join("kvprobe.wasm")).expect("built kvprobe");
    dir.write("kv_off.toml", kv_manifest("kv_off", false).as_bytes());
    dir.write("kv_off.wasm", &wasm);
    let server = TestServer::start_with(config_for(&dir, None)).await;
    let mut client = Client::connect(&server, "/test/kv_a/").await;
    assert_eq!(kv(&mut client, "set k v").await, ok(Value::Null));

    // The new plugin never went live.
    assert!(server.host.resolve("/test/kv_off/").is_none());
    let status = server
        .host
        .status()
        .into_iter()
        .find(|status| status.name == "kv_off")
        .expect("kv_off is listed with its error");
    assert!(status.version.is_none());
    let message = status.last_error.expect("a load error").error;
    assert!(message.contains("keyvalue = true"), "{message}");
    assert!(message.contains("wasi:keyvalue/"), "{message}");

    // Withdrawing the opt-in from the live plugin keeps the working version.
    let live = version_of(&server, "kv_a");
    dir.write("kv_a.toml", kv_manifest("kv_a", false).as_bytes());
    let report = server.host.load_dir(dir.path()).await.expect("reconcile");
    assert!(report.loaded.is_empty(), "{:?}", report.loaded);
    let failed: Vec<String> = report.failed.iter().map(|(_, e)| e.to_string()).collect();
    assert!(failed.iter().any(|e| e.contains("kv_a.toml")), "{failed:?}");
    assert_eq!(version_of(&server, "kv_a"), live);
    let mut fresh = Client::connect(&server, "/test/kv_a/").await;
    assert_eq!(kv(&mut fresh, "get k").await, ok(json!("v")));
    server.shutdown().await.expect("clean shutdown");
}
