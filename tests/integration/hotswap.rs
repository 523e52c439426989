//! Hot swap: plugins dropped in, replaced and removed while the server
//! runs, under each `on-replace` policy, with clients talking throughout.

use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use switchyard::Config;
use switchyard_tests::plugin_dir::{Build, PluginDir};
use switchyard_tests::{Client, TestServer, handshake_status, test_config};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// How long a hot swap may take to go live, compile included: generous,
/// because it only turns a hang into a failure on a slow, busy machine.
const SWAP_PATIENCE: Duration = Duration::from_secs(60);

fn chat_manifest(policy: &str) -> String {
    format!("routes = [\"ws/chat/<str:room_name>/\"]\non-replace = \"{policy}\"\n")
}

fn counter_manifest(policy: &str) -> String {
    format!("routes = [\"test/counter/\"]\non-replace = \"{policy}\"\n")
}

async fn serve(dir: &PluginDir) -> TestServer {
    TestServer::start_with(Config {
        plugins: dir.path().to_path_buf(),
        admin: switchyard::config::AdminConfig {
            token: Some(ADMIN_TOKEN.into()),
            ..Default::default()
        },
        ..test_config()
    })
    .await
}

/// Connect to a chat room and say one thing; the version that answers.
async fn chat_version(server: &TestServer, room: &str) -> Option<String> {
    let mut client = Client::connect(server, &format!("/ws/chat/{room}/")).await;
    client
        .send_json(&json!({"message": "which version?"}))
        .await;
    let reply = client.recv_json().await;
    client.close().await;
    reply["version"].as_str().map(str::to_owned)
}

/// Wait until new chat connections are served by `expected` (None = v1).
async fn wait_for_chat_version(server: &TestServer, expected: Option<&str>) {
    let start = Instant::now();
    while chat_version(server, "probe").await.as_deref() != expected {
        assert!(
            start.elapsed() < SWAP_PATIENCE,
            "new connections never reached {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What one chat member saw: every frame, and whether the socket closed.
#[derive(Debug)]
struct Seen {
    frames: Vec<Value>,
    closed: Option<Message>,
}

/// What one chat member has seen so far, as its reader goes.
#[derive(Debug, Clone, Default)]
struct Progress {
    frames: usize,
    /// The version tag of the latest frame (None: v1, which has none).
    version: Option<String>,
    /// How many of the member's own messages came back.
    own: usize,
}

/// How many of its messages a member may have on the way at once: traffic
/// keeps flowing without ever outrunning the channels' capacity.
const IN_FLIGHT: usize = 8;

/// Two members chat continuously while `swaps` installs the given builds one
/// after another. Each swap is made while messages flow, and the next only
/// once both members have received messages after it went live, on the
/// version the policy puts open sockets on. Then each member says a last
/// word; returns what each member saw and how many messages each sent.
async fn chat_through_swaps(policy: &str, swaps: &[Build]) -> (Vec<Seen>, Vec<usize>) {
    let dir = PluginDir::new();
    dir.install("chat", Build::V1, &chat_manifest(policy));
    let server = serve(&dir).await;
    let url = server.url("/ws/chat/swap/");

    // Both members join before anyone speaks.
    let mut sockets = Vec::new();
    for _ in 0..2 {
        let (ws, _) = tokio_tungstenite::connect_async(&url)
            .await
            .expect("connect");
        sockets.push(ws);
    }
    let stop = CancellationToken::new();
    let mut readers = Vec::new();
    let mut writers = Vec::new();
    let mut progress = Vec::new();
    for (member, ws) in sockets.into_iter().enumerate() {
        let (mut sink, mut stream) = ws.split();
        let (progress_tx, mut own_rx) = watch::channel(Progress::default());
        progress.push(progress_tx.subscribe());
        readers.push(tokio::spawn(async move {
            let mut seen = Seen {
                frames: Vec::new(),
                closed: None,
            };
            // Until the last word of both senders.
            let mut ended = [false; 2];
            while !ended.iter().all(|ended| *ended) {
                match tokio::time::timeout(SWAP_PATIENCE, stream.next()).await {
                    Ok(Some(Ok(Message::Text(text)))) => {
                        let frame: Value = serde_json::from_str(text.as_str()).expect("JSON frame");
                        let from = frame["message"]["from"]
                            .as_u64()
                            .and_then(|from| usize::try_from(from).ok())
                            .expect("sender");
                        if frame["message"].get("end").is_some() {
                            ended[from] = true;
                            continue;
                        }
                        progress_tx.send_modify(|progress| {
                            progress.frames += 1;
                            progress.version = frame["version"].as_str().map(str::to_owned);
                            progress.own += usize::from(from == member);
                        });
                        seen.frames.push(frame);
                    }
                    Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => {}
                    Ok(Some(Ok(other))) => {
                        seen.closed = Some(other);
                        break;
                    }
                    _ => break,
                }
            }
            seen
        }));
        let stop = stop.clone();
        writers.push(tokio::spawn(async move {
            let mut sent = 0;
            while !stop.is_cancelled() {
                // A lost message never comes back: stop, and let the
                // check of what arrived tell.
                let caught_up = own_rx.wait_for(|progress| progress.own + IN_FLIGHT > sent);
                if !matches!(
                    tokio::time::timeout(SWAP_PATIENCE, caught_up).await,
                    Ok(Ok(_))
                ) {
                    break;
                }
                let message = json!({"message": {"from": member, "seq": sent}});
                if sink.send(Message::text(message.to_string())).await.is_err() {
                    break;
                }
                sent += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let last = json!({"message": {"from": member, "end": sent}});
            let _ = sink.send(Message::text(last.to_string())).await;
            (sink, sent)
        }));
    }

    // Traffic flows before the first swap...
    wait_for_progress(&mut progress, "before the first swap", |_, p| {
        p.frames >= 20
    })
    .await;
    for build in swaps {
        dir.install("chat", *build, &chat_manifest(policy));
        let expected = match build {
            Build::V1 => None,
            Build::V2 => Some("v2"),
        };
        wait_for_chat_version(&server, expected).await;
        // ...and through each: open sockets get messages after it, from the
        // version their policy puts them on.
        let on = if policy == "migrate" { expected } else { None };
        let marks: Vec<usize> = progress.iter().map(|p| p.borrow().frames).collect();
        wait_for_progress(&mut progress, "after a swap", |member, p| {
            p.frames > marks[member] && p.version.as_deref() == on
        })
        .await;
    }
    stop.cancel();
    let mut sinks = Vec::new();
    let mut sent = Vec::new();
    for writer in writers {
        let (sink, count) = writer.await.expect("writer");
        sinks.push(sink);
        sent.push(count);
    }
    let mut seen = Vec::new();
    for reader in readers {
        seen.push(reader.await.expect("reader"));
    }
    drop(sinks);
    server.shutdown().await.expect("clean shutdown");
    (seen, sent)
}

/// Waits until every member's progress satisfies `done(member, progress)`.
async fn wait_for_progress(
    members: &mut [watch::Receiver<Progress>],
    when: &str,
    done: impl Fn(usize, &Progress) -> bool,
) {
    for (member, progress) in members.iter_mut().enumerate() {
        let reached = tokio::time::timeout(SWAP_PATIENCE, progress.wait_for(|p| done(member, p)))
            .await
            .map(|reached| reached.is_ok());
        match reached {
            Ok(true) => {}
            Ok(false) => panic!("member {member}: the socket ended {when}"),
            Err(_) => panic!(
                "member {member}: messages stopped {when}: {:?}",
                *progress.borrow()
            ),
        }
    }
}

/// Every member got every message of every sender exactly once, in each
/// sender's order, and no socket closed.
fn assert_complete(seen: &[Seen], sent: &[usize]) {
    for (member, seen) in seen.iter().enumerate() {
        assert!(
            seen.closed.is_none(),
            "member {member} saw {:?}",
            seen.closed
        );
        for (sender, &count) in sent.iter().enumerate() {
            let seqs: Vec<usize> = seen
                .frames
                .iter()
                .filter(|f| f["message"]["from"] == sender)
                .map(|f| {
                    f["message"]["seq"]
                        .as_u64()
                        .and_then(|seq| usize::try_from(seq).ok())
                        .expect("seq")
                })
                .collect();
            let expected: Vec<usize> = (0..count).collect();
            assert_eq!(
                seqs, expected,
                "member {member}, messages of sender {sender}"
            );
        }
    }
}

#[tokio::test]
async fn drain_keeps_open_sockets_on_the_old_version_and_loses_nothing() {
    let (seen, sent) = chat_through_swaps("drain", &[Build::V2, Build::V1, Build::V2]).await;
    assert_complete(&seen, &sent);
    for seen in &seen {
        assert!(
            seen.frames.iter().all(|f| f.get("version").is_none()),
            "open sockets stay on v1 under drain"
        );
    }
}

#[tokio::test]
async fn migrate_moves_open_sockets_without_a_disconnect_or_a_lost_message() {
    let (seen, sent) = chat_through_swaps("migrate", &[Build::V2, Build::V1, Build::V2]).await;
    assert_complete(&seen, &sent);
    for seen in &seen {
        let tagged = seen.frames.iter().filter(|f| f["version"] == "v2").count();
        assert!(tagged > 0, "open sockets moved to v2");
    }
}

async fn count(client: &mut Client, text: &str) -> Value {
    client.send_text(text).await;
    client.recv_json().await
}

#[tokio::test]
async fn a_stateful_plugin_keeps_counting_across_a_migrate_swap() {
    let dir = PluginDir::new();
    dir.install("counter", Build::V1, &counter_manifest("migrate"));
    let server = serve(&dir).await;
    let mut client = Client::connect(&server, "/test/counter/").await;
    for n in 1..=3 {
        assert_eq!(
            count(&mut client, "x").await,
            json!({"count": n, "version": "v1", "echo": "x"})
        );
    }
    dir.install("counter", Build::V2, &counter_manifest("migrate"));
    let start = Instant::now();
    let mut n = 4;
    loop {
        let reply = count(&mut client, "y").await;
        assert_eq!(reply["count"], n, "the count carries on: {reply}");
        n += 1;
        if reply["version"] == "v2" {
            break;
        }
        assert!(
            start.elapsed() < SWAP_PATIENCE,
            "the connection never moved to v2"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(count(&mut client, "z").await["count"], n);
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn migrate_falls_back_to_drain_when_the_new_version_cannot_restore() {
    let dir = PluginDir::new();
    dir.install("counter", Build::V1, &counter_manifest("migrate"));
    let server = serve(&dir).await;
    let mut client = Client::connect(&server, "/test/counter/").await;
    assert_eq!(count(&mut client, "a").await["count"], 1);
    // The echo plugin under the counter's name: no `migration` exports.
    let echo = std::fs::read(switchyard_tests::test_plugins_dir().join("echo.wasm")).expect("echo");
    dir.write("counter.wasm", &echo);
    let start = Instant::now();
    loop {
        let mut fresh = Client::connect(&server, "/test/counter/").await;
        fresh.send_text("who").await;
        if fresh.recv_text().await == "who" {
            break;
        }
        assert!(
            start.elapsed() < SWAP_PATIENCE,
            "the echo version never went live"
        );
    }
    // The open connection stayed on the counter, still counting.
    assert_eq!(count(&mut client, "b").await["count"], 2);
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn restart_closes_open_sockets_with_1012_and_they_reconnect_to_the_new_version() {
    let dir = PluginDir::new();
    dir.install("counter", Build::V1, &counter_manifest("restart"));
    let server = serve(&dir).await;
    let mut client = Client::connect(&server, "/test/counter/").await;
    assert_eq!(count(&mut client, "a").await["version"], "v1");
    dir.install("counter", Build::V2, &counter_manifest("restart"));
    let (code, reason) = client.recv_close().await.expect("a close frame");
    assert_eq!(code, 1012, "{reason}");
    let mut again = Client::connect(&server, "/test/counter/").await;
    assert_eq!(
        count(&mut again, "b").await,
        json!({"count": 1, "version": "v2", "echo": "b"})
    );
    server.shutdown().await.expect("clean shutdown");
}

async fn admin(server: &TestServer, token: Option<&str>) -> (u16, Value) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    let auth = token.map_or_else(String::new, |t| format!("Authorization: Bearer {t}\r\n"));
    let request =
        format!("GET /_switchyard/plugins HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    let status: u16 = response[9..12].parse().expect("status code");
    let body = response.split("\r\n\r\n").nth(1).unwrap_or_default();
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

fn plugin<'a>(listing: &'a Value, name: &str) -> &'a Value {
    listing["plugins"]
        .as_array()
        .and_then(|plugins| plugins.iter().find(|p| p["name"] == name))
        .unwrap_or(&Value::Null)
}

#[tokio::test]
async fn a_broken_file_never_replaces_the_working_version_and_fixing_it_recovers() {
    let dir = PluginDir::new();
    dir.install("chat", Build::V1, &chat_manifest("drain"));
    let server = serve(&dir).await;
    let mut open = Client::connect(&server, "/ws/chat/keep/").await;

    dir.write("chat.wasm", b"\0asm this is not a component");
    let start = Instant::now();
    let error = loop {
        let (status, listing) = admin(&server, Some(ADMIN_TOKEN)).await;
        assert_eq!(status, 200);
        let chat = plugin(&listing, "chat");
        if !chat["last_error"].is_null() {
            break chat.clone();
        }
        assert!(
            start.elapsed() < SWAP_PATIENCE,
            "the admin API never showed the error"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let message = error["last_error"]["error"].as_str().expect("error text");
    assert!(message.contains("chat.wasm"), "{message}");
    assert!(
        error["last_error"]["file"]
            .as_str()
            .expect("file")
            .ends_with("chat.wasm")
    );
    assert!(
        error["version"].is_string(),
        "the old version is still live: {error}"
    );

    // The old version keeps serving, open and new connections alike.
    assert_eq!(chat_version(&server, "fresh").await, None);
    open.send_json(&json!({"message": "still here"})).await;
    assert_eq!(open.recv_json().await, json!({"message": "still here"}));

    // Fixing the file recovers without a restart.
    dir.install("chat", Build::V2, &chat_manifest("drain"));
    wait_for_chat_version(&server, Some("v2")).await;
    let (_, listing) = admin(&server, Some(ADMIN_TOKEN)).await;
    assert!(
        plugin(&listing, "chat")["last_error"].is_null(),
        "{listing}"
    );
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn removal_unroutes_new_handshakes_and_open_sockets_follow_the_policy() {
    let dir = PluginDir::new();
    dir.install("counter", Build::V1, &counter_manifest("drain"));
    dir.install("chat", Build::V1, &chat_manifest("restart"));
    let server = serve(&dir).await;
    let mut counter = Client::connect(&server, "/test/counter/").await;
    let mut chat = Client::connect(&server, "/ws/chat/gone/").await;
    assert_eq!(count(&mut counter, "a").await["count"], 1);

    dir.remove("counter");
    dir.remove("chat");
    let start = Instant::now();
    while handshake_status(&server, "/test/counter/").await != 404 {
        assert!(
            start.elapsed() < SWAP_PATIENCE,
            "the removed plugin still routes"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(handshake_status(&server, "/ws/chat/gone/").await, 404);
    // drain: the open counter connection carries on.
    assert_eq!(count(&mut counter, "b").await["count"], 2);
    // restart: the open chat connection is closed so its client reconnects.
    let (code, _) = chat.recv_close().await.expect("close frame");
    assert_eq!(code, 1012);

    let (_, listing) = admin(&server, Some(ADMIN_TOKEN)).await;
    let counter_status = plugin(&listing, "counter");
    assert!(
        counter_status["version"].is_null(),
        "not live: {counter_status}"
    );
    assert_eq!(
        counter_status["versions"][0]["open_connections"], 1,
        "{counter_status}"
    );
    assert_eq!(counter_status["versions"][0]["live"], false);
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn the_admin_api_lists_versions_and_needs_the_token() {
    let dir = PluginDir::new();
    dir.install("counter", Build::V1, &counter_manifest("drain"));
    let server = serve(&dir).await;
    assert_eq!(admin(&server, None).await.0, 401);
    assert_eq!(admin(&server, Some("wrong-token-wrong-token")).await.0, 401);

    let mut old = Client::connect(&server, "/test/counter/").await;
    assert_eq!(count(&mut old, "a").await["version"], "v1");
    dir.install("counter", Build::V2, &counter_manifest("drain"));
    let start = Instant::now();
    let counter = loop {
        let (status, listing) = admin(&server, Some(ADMIN_TOKEN)).await;
        assert_eq!(status, 200);
        let counter = plugin(&listing, "counter").clone();
        if counter["versions"].as_array().is_some_and(|v| v.len() == 2) {
            break counter;
        }
        assert!(
            start.elapsed() < SWAP_PATIENCE,
            "never saw two versions: {listing}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(counter["routes"], json!(["test/counter/"]));
    assert_eq!(counter["on_replace"], "drain");
    let versions = counter["versions"].as_array().expect("versions");
    assert_eq!(versions[0]["live"], true);
    assert_eq!(versions[0]["open_connections"], 0);
    assert_eq!(versions[1]["live"], false);
    assert_eq!(versions[1]["open_connections"], 1);
    assert_ne!(versions[0]["version"], versions[1]["version"]);
    assert_eq!(counter["version"], versions[0]["version"]);
    assert!(versions[0]["loaded_at"].as_u64().expect("time") > 1_700_000_000);

    // Without a token configured the API does not exist.
    let plain = TestServer::start().await;
    assert_eq!(admin(&plain, Some(ADMIN_TOKEN)).await.0, 404);
    plain.shutdown().await.expect("clean shutdown");
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn a_restart_with_unchanged_plugins_skips_compilation() {
    let cache = PluginDir::new();
    let config = Config {
        compile_cache: Some(cache.path().to_path_buf()),
        watch_plugins: false,
        ..test_config()
    };
    let first = switchyard::Server::build(config.clone())
        .await
        .expect("first start");
    let (first_hits, misses) = first.host().compile_cache_stats().expect("cache on");
    // echo_shared is echo's component under another manifest: compiled once.
    assert_eq!(first_hits, 1, "only echo_shared repeats a component");
    assert!(misses >= 3, "every other plugin compiled once: {misses}");
    drop(first);
    let second = switchyard::Server::build(config)
        .await
        .expect("second start");
    let (hits, misses_again) = second.host().compile_cache_stats().expect("cache on");
    assert_eq!(misses_again, 0, "nothing compiled again");
    assert_eq!(
        hits,
        misses + first_hits,
        "every plugin came from the cache"
    );
}

#[tokio::test]
async fn a_plugin_dropped_into_the_directory_goes_live() {
    let dir = PluginDir::new();
    let server = serve(&dir).await;
    assert_eq!(handshake_status(&server, "/test/counter/").await, 404);
    dir.install("counter", Build::V1, &counter_manifest("drain"));
    let start = Instant::now();
    while handshake_status(&server, "/test/counter/").await != 101 {
        assert!(
            start.elapsed() < SWAP_PATIENCE,
            "the new plugin never went live"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut client = Client::connect(&server, "/test/counter/").await;
    assert_eq!(count(&mut client, "hi").await["count"], 1);
    server.shutdown().await.expect("clean shutdown");
}

fn shared_counter_manifest(policy: &str) -> String {
    format!("routes = [\"test/counter/\"]\ninstance = \"shared\"\non-replace = \"{policy}\"\n")
}

#[tokio::test]
async fn shared_instances_drain_instead_of_migrating_and_restart_with_1012() {
    let dir = PluginDir::new();
    dir.install("counter", Build::V1, &shared_counter_manifest("migrate"));
    let server = serve(&dir).await;
    let mut a = Client::connect(&server, "/test/counter/").await;
    assert_eq!(count(&mut a, "a1").await["version"], "v1");

    // A shared version never migrates: `migrate` drains, so `a` stays on v1
    // while new connections get v2's shared instance.
    dir.install("counter", Build::V2, &shared_counter_manifest("migrate"));
    let start = Instant::now();
    let mut b = loop {
        let mut b = Client::connect(&server, "/test/counter/").await;
        if count(&mut b, "b1").await["version"] == "v2" {
            break b;
        }
        assert!(start.elapsed() < SWAP_PATIENCE, "v2 never went live");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(count(&mut a, "a2").await["version"], "v1");
    assert_eq!(count(&mut b, "b2").await["version"], "v2");

    // Restart retires v2: its connection is closed with 1012; `a`, on the
    // version retired before, carries on.
    dir.install("counter", Build::V1, &shared_counter_manifest("restart"));
    let (code, reason) = b.recv_close().await.expect("a close frame");
    assert_eq!(code, 1012, "{reason}");
    assert_eq!(count(&mut a, "a3").await["version"], "v1");
    server.shutdown().await.expect("clean shutdown");
}
