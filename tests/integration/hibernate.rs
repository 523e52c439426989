//! Hibernation (`hibernate-after-secs`): an idle connection's instance is
//! snapshotted and dropped, and restored at its next frame or event, with
//! nothing lost. Each test waits for the host's hibernation gauge, never a
//! fixed sleep.

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use switchyard::{Config, Counters};
use switchyard_tests::plugin_dir::{Build, PluginDir};
use switchyard_tests::{Client, PATIENCE, TestServer, test_config, wait_until, wait_until_within};
use tokio_tungstenite::tungstenite::Message;

fn chat_manifest() -> &'static str {
    "routes = [\"ws/chat/<str:room_name>/\"]\nhibernate-after-secs = 1\n"
}

fn counter_manifest() -> &'static str {
    "routes = [\"test/counter/\"]\non-replace = \"migrate\"\nhibernate-after-secs = 1\n"
}

async fn serve_with(dir: &PluginDir, tune: impl FnOnce(&mut Config)) -> TestServer {
    let mut config = Config {
        plugins: dir.path().to_path_buf(),
        ..test_config()
    };
    tune(&mut config);
    TestServer::start_with(config).await
}

async fn serve(dir: &PluginDir) -> TestServer {
    serve_with(dir, |_| {}).await
}

/// Wait until `n` connections hibernate at once.
async fn wait_hibernated(server: &TestServer, n: u64) {
    wait_until(server, &format!("{n} connections hibernating"), |s| {
        s.host.events().hibernated == n
    })
    .await;
}

async fn count(client: &mut Client, text: &str) -> Value {
    client.send_text(text).await;
    client.recv_json().await
}

#[tokio::test]
async fn a_hibernated_chat_member_receives_group_messages_in_order_and_sends_after_waking() {
    let dir = PluginDir::new();
    dir.install("chat", Build::V1, chat_manifest());
    let server = serve(&dir).await;
    let mut sleeper = Client::connect(&server, "/ws/chat/lobby/").await;
    let mut talker = Client::connect(&server, "/ws/chat/lobby/").await;
    wait_hibernated(&server, 2).await;
    // Asleep, the two members hold no instance slot.
    assert_eq!(server.host.instance_slots().0, 0);

    for n in 0..20 {
        talker.send_json(&json!({"message": format!("m{n}")})).await;
    }
    for n in 0..20 {
        assert_eq!(
            talker.recv_json().await,
            json!({"message": format!("m{n}")})
        );
    }
    for n in 0..20 {
        assert_eq!(
            sleeper.recv_json().await,
            json!({"message": format!("m{n}")}),
            "the hibernated member gets every message, in order"
        );
    }
    sleeper.send_json(&json!({"message": "awake"})).await;
    assert_eq!(talker.recv_json().await, json!({"message": "awake"}));
    assert_eq!(sleeper.recv_json().await, json!({"message": "awake"}));
    let events = server.host.events();
    assert!(events.wakes >= 2, "{events:?}");
    assert_eq!(events.failed_wakes, 0);

    // And again: both fall asleep and wake once more.
    wait_hibernated(&server, 2).await;
    sleeper.send_json(&json!({"message": "again"})).await;
    assert_eq!(talker.recv_json().await, json!({"message": "again"}));
    assert_eq!(sleeper.recv_json().await, json!({"message": "again"}));
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn a_hibernated_counter_keeps_its_count_across_cycles() {
    let dir = PluginDir::new();
    dir.install("counter", Build::V1, counter_manifest());
    let server = serve(&dir).await;
    let mut client = Client::connect(&server, "/test/counter/").await;
    for n in 1..=3 {
        assert_eq!(count(&mut client, "x").await["count"], n);
    }
    for cycle in 1..=3 {
        wait_hibernated(&server, 1).await;
        assert_eq!(server.host.instance_slots().0, 0, "the slot went back");
        assert_eq!(server.host.events().hibernations, cycle);
        assert_eq!(
            count(&mut client, "y").await,
            json!({"count": 3 + cycle, "version": "v1", "echo": "y"})
        );
    }
    assert_eq!(server.host.events().wakes, 3);
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn a_swap_while_hibernated_wakes_into_the_new_version() {
    let dir = PluginDir::new();
    dir.install("counter", Build::V1, counter_manifest());
    let server = serve(&dir).await;
    let mut client = Client::connect(&server, "/test/counter/").await;
    assert_eq!(count(&mut client, "x").await["count"], 1);
    assert_eq!(count(&mut client, "x").await["count"], 2);
    wait_hibernated(&server, 1).await;
    dir.install("counter", Build::V2, counter_manifest());
    // The move is made without waking: the snapshot is already taken.
    wait_until_within(
        &server,
        std::time::Duration::from_secs(60),
        "the hibernated connection's move to v2",
        |server| server.host.events().migrations > 0,
    )
    .await;
    let events = server.host.events();
    assert_eq!((events.wakes, events.hibernated), (0, 1), "{events:?}");
    assert_eq!(
        count(&mut client, "y").await,
        json!({"count": 3, "version": "v2", "echo": "y"})
    );
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn a_restore_that_fails_closes_that_socket_with_1011_and_is_counted() {
    let dir = PluginDir::new();
    dir.install("counter", Build::V1, counter_manifest());
    let server = serve(&dir).await;
    let mut doomed = Client::connect(&server, "/test/counter/").await;
    let mut other = Client::connect(&server, "/test/counter/").await;
    assert_eq!(count(&mut doomed, "trap in restore").await["count"], 1);
    assert_eq!(count(&mut other, "x").await["count"], 1);
    wait_hibernated(&server, 2).await;

    doomed.send_text("wake up").await;
    let (code, _) = doomed.recv_close().await.expect("a close frame");
    assert_eq!(code, 1011);
    let events = server.host.events();
    assert_eq!(events.failed_wakes, 1, "{events:?}");
    assert_eq!(Counters::get(&server.counters.plugin_failures), 1);
    let traps: u64 = server.host.failures().iter().map(|f| f.traps).sum();
    assert_eq!(traps, 1, "the trap in `restore` is counted");

    assert_eq!(
        count(&mut other, "x").await["count"],
        2,
        "others unaffected"
    );
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn closing_a_hibernated_connection_wakes_it_for_disconnect() {
    let dir = PluginDir::new();
    dir.install("counter", Build::V1, counter_manifest());
    let server = serve(&dir).await;
    let mut leaver = Client::connect(&server, "/test/counter/").await;
    let mut stayer = Client::connect(&server, "/test/counter/").await;
    count(&mut leaver, "announce room").await;
    count(&mut stayer, "join room").await;
    wait_hibernated(&server, 2).await;
    leaver.close().await;
    // `disconnect` ran in a woken instance: it told the group.
    let said = stayer.recv_json().await;
    assert!(
        said["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("left ")),
        "{said}"
    );
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn keepalive_goes_on_while_hibernated() {
    let dir = PluginDir::new();
    dir.install("counter", Build::V1, counter_manifest());
    let server = serve_with(&dir, |c| {
        c.websocket.ping_interval_secs = 2;
        c.websocket.ping_timeout_secs = 2;
    })
    .await;
    let (mut reader, _) = tokio_tungstenite::connect_async(server.url("/test/counter/"))
        .await
        .expect("connect");
    let mut deaf = Client::connect(&server, "/test/counter/").await;
    count(&mut deaf, "announce room").await;
    reader.send(Message::text("join room")).await.expect("send");
    wait_hibernated(&server, 2).await;
    let woken = server.host.events().wakes;

    // The reader gets pings while asleep and answers them (its client
    // library does); the pongs do not wake it.
    let mut pings = 0;
    let mut left = None;
    while left.is_none() {
        let message = tokio::time::timeout(PATIENCE, reader.next())
            .await
            .expect("a message in time")
            .expect("open")
            .expect("a frame");
        match message {
            Message::Ping(_) => {
                pings += 1;
                // A few pings come before the deaf client's timeout; a
                // stream of them without the "left" means it never came.
                assert!(
                    pings < 10,
                    "the deaf client's `disconnect` never told the group"
                );
            }
            Message::Text(text) => {
                let value: Value = serde_json::from_str(text.as_str()).expect("json");
                if value["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("left "))
                {
                    left = Some(value);
                }
            }
            _ => {}
        }
    }
    // The deaf client answered no ping: closed while asleep, and woken for
    // its `disconnect`, which told the group.
    assert!(pings >= 1, "the hibernated reader was pinged");
    assert_eq!(Counters::get(&server.counters.ping_timeouts), 1);
    let (code, reason) = deaf.recv_close().await.expect("close frame");
    assert_eq!((code, reason.as_str()), (1001, "ping timeout"));
    assert!(server.host.events().wakes > woken);
    server.shutdown().await.expect("clean shutdown");
}
