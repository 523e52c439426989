//! The Redis layer on a Redis Cluster (`[redis] cluster`, the
//! Switchyard-only mode): three real `redis-server --cluster-enabled yes`
//! masters, two in-process servers, groups and inboxes spread over the
//! masters; sends, capacity, the purge of a dead process, and a master
//! killed (no replicas: its slots fail as `unavailable`, the others serve).

use std::future::Future;
use std::time::Duration;

use serde_json::{Value, json};
use switchyard::Config;
use switchyard_layer::{ChannelLayer, RedisConfig, RedisLayer};
use switchyard_tests::redis_support::RedisCluster;
use switchyard_tests::{Client, TestServer, redis_support, test_config};
use tokio::time::Instant;

const PATIENCE: Duration = Duration::from_secs(60);
const ADMIN_TOKEN: &str = "test-admin-token-0123456789";
/// A process inbox no process reads: its key only fills up.
const NOBODYS_CHANNEL: &str = "specific.00000000000000000000000000000000!gone";

fn cluster_config(cluster: &RedisCluster) -> Config {
    let mut config = test_config();
    config.redis.cluster = cluster.seeds();
    config.redis.heartbeat_ttl_secs = 1;
    config.admin.token = Some(ADMIN_TOKEN.into());
    config
}

/// Polls `probe` until it gives `Some`; fails after [`PATIENCE`].
async fn wait_for<T, F: Future<Output = Option<T>>>(what: &str, probe: impl FnMut() -> F) -> T {
    redis_support::wait_for_within(PATIENCE, what, probe).await
}

/// One group name per master, `groups[i]` served by master `i`:
/// `name(candidate)` for the first candidates that land there.
async fn group_per_master(cluster: &RedisCluster, name: impl Fn(usize) -> String) -> Vec<String> {
    let mut found: Vec<Option<String>> = vec![None; cluster.nodes.len()];
    for candidate in 0..200 {
        let group = name(candidate);
        let master = cluster.master_of(&format!("asgi:group:{group}")).await;
        found[master].get_or_insert(group);
        if found.iter().all(Option::is_some) {
            break;
        }
    }
    found
        .into_iter()
        .map(|group| group.expect("a group on every master"))
        .collect()
}

/// The Redis key of a process inbox: the prefix and the channel up to its `!`.
fn inbox_key(channel: &str) -> String {
    let (process, _) = channel.split_once('!').expect("a process channel");
    format!("asgi{process}!")
}

/// A probe socket and its channel name.
async fn probe(server: &TestServer) -> (Client, String) {
    let mut client = Client::connect(server, "/probe/layer/").await;
    let scope = client.recv_json().await;
    let channel = scope["channel_name"].as_str().expect("channel").to_owned();
    (client, channel)
}

/// Sends a probe command and returns its reply.
async fn command(client: &mut Client, command: Value) -> Value {
    client.send_json(&command).await;
    client.recv_json().await
}

/// `GET /_switchyard/layer` with the admin token.
async fn layer_health(server: &TestServer) -> Value {
    redis_support::layer_health(server.addr, ADMIN_TOKEN).await
}

async fn members(cluster: &RedisCluster, group: &str) -> Vec<String> {
    let mut conn = cluster.connection().await;
    redis::cmd("ZRANGE")
        .arg(format!("asgi:group:{group}"))
        .arg(0)
        .arg(-1)
        .query_async(&mut conn)
        .await
        .expect("ZRANGE")
}

/// Chat sockets on two servers, in rooms whose group keys are on each of
/// the three masters, hear each other, and so does a third process's
/// channel in every room (so each group send writes the inboxes of two
/// other processes, in two slots); the admin API reports the cluster as
/// one healthy shard with all three processes alive.
#[tokio::test]
async fn chat_rooms_on_every_master_reach_every_process() {
    let cluster = RedisCluster::start(3);
    let rooms: Vec<String> = group_per_master(&cluster, |i| format!("chat_room{i}"))
        .await
        .into_iter()
        .map(|group| group.trim_start_matches("chat_").to_owned())
        .collect();
    let a = TestServer::start_with(cluster_config(&cluster)).await;
    let b = TestServer::start_with(cluster_config(&cluster)).await;
    let third = RedisLayer::new(RedisConfig::cluster(cluster.seeds())).expect("layer");
    let mut heard = third.new_channel();
    for room in &rooms {
        third
            .group_add(&format!("chat_{room}"), heard.name())
            .await
            .expect("join");
    }
    for room in &rooms {
        let mut on_a = Client::connect(&a, &format!("/ws/chat/{room}/")).await;
        let mut on_b = Client::connect(&b, &format!("/ws/chat/{room}/")).await;
        on_a.send_json(&json!({"message": format!("from a in {room}")}))
            .await;
        let from_a = json!({"message": format!("from a in {room}")});
        assert_eq!(on_a.recv_json().await, from_a);
        assert_eq!(on_b.recv_json().await, from_a);
        on_b.send_json(&json!({"message": format!("from b in {room}")}))
            .await;
        let from_b = json!({"message": format!("from b in {room}")});
        assert_eq!(on_b.recv_json().await, from_b);
        assert_eq!(on_a.recv_json().await, from_b);
        for expected in [&from_a, &from_b] {
            let event = tokio::time::timeout(PATIENCE, heard.recv())
                .await
                .expect("an event within the patience")
                .expect("the layer is alive");
            assert_eq!(event.to_value()["message"], expected["message"], "{room}");
        }
        on_a.close().await;
        on_b.close().await;
    }

    let health = wait_for("both processes in the health report", || async {
        let health = layer_health(&a).await;
        (health["shards"][0]["processes"] == 3).then_some(health)
    })
    .await;
    assert_eq!(health["healthy"], true, "{health}");
    let shards = health["shards"].as_array().expect("shards");
    assert_eq!(shards.len(), 1, "{health}");
    let name = shards[0]["url"].as_str().expect("url");
    assert!(name.starts_with("cluster redis://127.0.0.1:"), "{health}");
    drop(third);
    a.shutdown().await.expect("clean shutdown");
    b.shutdown().await.expect("clean shutdown");
}

/// A channel send crosses from one process to the other; a process inbox
/// nobody reads takes `capacity` events and then refuses with
/// `channel_full`.
#[tokio::test]
async fn channel_sends_cross_processes_and_a_full_inbox_is_channel_full() {
    let cluster = RedisCluster::start(3);
    let mut config = cluster_config(&cluster);
    config.layer.capacity = 3;
    let a = TestServer::start_with(config).await;
    let b = TestServer::start_with(cluster_config(&cluster)).await;
    let (mut on_a, _) = probe(&a).await;
    let (mut on_b, channel_b) = probe(&b).await;

    let event = json!({"type": "probe.hello", "n": 1});
    let reply = command(
        &mut on_a,
        json!({"cmd": "channel_send", "channel": channel_b, "event": event}),
    )
    .await;
    assert_eq!(reply, json!({"ok": true}));
    assert_eq!(on_b.recv_json().await, json!({"event": event}));

    for n in 0..3 {
        let reply = command(
            &mut on_a,
            json!({"cmd": "channel_send", "channel": NOBODYS_CHANNEL,
                   "event": {"type": "probe.fill", "n": n}}),
        )
        .await;
        assert_eq!(reply, json!({"ok": true}), "send {n}");
    }
    let reply = command(
        &mut on_a,
        json!({"cmd": "channel_send", "channel": NOBODYS_CHANNEL,
               "event": {"type": "probe.fill", "n": 3}}),
    )
    .await;
    assert_eq!(reply["kind"], "channel_full", "{reply}");
    let mut conn = cluster.connection().await;
    let queued: u64 = redis::cmd("ZCARD")
        .arg(inbox_key(NOBODYS_CHANNEL))
        .query_async(&mut conn)
        .await
        .expect("ZCARD");
    assert_eq!(queued, 3);
    a.shutdown().await.expect("clean shutdown");
    b.shutdown().await.expect("clean shutdown");
}

/// A Switchyard process that stops without leaving its groups (its layer
/// dropped: no more heartbeats, its members left in Redis) has its members
/// removed by the live process, in groups on every master; the live
/// process's own members stay and still get group sends.
#[tokio::test]
async fn a_dead_processs_members_are_purged_on_every_master() {
    let cluster = RedisCluster::start(3);
    let groups = group_per_master(&cluster, |i| format!("purged{i}")).await;
    let server = TestServer::start_with(cluster_config(&cluster)).await;
    let (mut live, live_channel) = probe(&server).await;

    let mut doomed_config = RedisConfig::cluster(cluster.seeds());
    doomed_config.heartbeat_ttl = Duration::from_secs(1);
    let doomed = RedisLayer::new(doomed_config).expect("layer");
    let doomed_inbox = doomed.new_channel();
    for group in &groups {
        let reply = command(&mut live, json!({"cmd": "group_add", "group": group})).await;
        assert_eq!(reply, json!({"ok": true}));
        doomed
            .group_add(group, doomed_inbox.name())
            .await
            .expect("join");
        assert_eq!(members(&cluster, group).await.len(), 2, "{group}");
    }
    wait_for("the doomed process's heartbeat", || async {
        (layer_health(&server).await["shards"][0]["processes"] == 2).then_some(())
    })
    .await;
    drop(doomed);

    for group in &groups {
        let left = wait_for("the dead process's members to be purged", || async {
            let left = members(&cluster, group).await;
            (!left.iter().any(|m| m == doomed_inbox.name())).then_some(left)
        })
        .await;
        assert_eq!(left, std::slice::from_ref(&live_channel), "{group}");
        let reply = command(
            &mut live,
            json!({"cmd": "group_send", "group": group, "event": {"type": "probe.after"}}),
        )
        .await;
        assert_eq!(reply, json!({"ok": true}));
        assert_eq!(
            live.recv_json().await,
            json!({"event": {"type": "probe.after"}})
        );
    }
    drop(doomed_inbox);
    server.shutdown().await.expect("clean shutdown");
}

/// With no replicas, a killed master's slots are lost until it is back:
/// group sends and joins of groups on it fail as `unavailable`, while groups
/// on the live masters and channel sends between processes whose inboxes
/// are on live masters keep working.
#[tokio::test]
async fn a_killed_master_fails_its_slots_as_unavailable_and_the_others_serve() {
    let mut cluster = RedisCluster::start(3);
    let groups = group_per_master(&cluster, |i| format!("killed{i}")).await;
    let heartbeats = cluster.master_of("{asgi:switchyard}:processes").await;
    let a = TestServer::start_with(cluster_config(&cluster)).await;
    let b = TestServer::start_with(cluster_config(&cluster)).await;
    let (mut on_a, channel_a) = probe(&a).await;
    let (mut on_b, channel_b) = probe(&b).await;
    // The master holding neither inbox dies; preferably not the one
    // holding the heartbeat keys either.
    let inboxes = [
        cluster.master_of(&inbox_key(&channel_a)).await,
        cluster.master_of(&inbox_key(&channel_b)).await,
    ];
    let candidates: Vec<usize> = (0..3).filter(|m| !inboxes.contains(m)).collect();
    let victim = candidates
        .iter()
        .copied()
        .find(|&m| m != heartbeats)
        .unwrap_or(candidates[0]);
    for group in &groups {
        for client in [&mut on_a, &mut on_b] {
            let reply = command(client, json!({"cmd": "group_add", "group": group})).await;
            assert_eq!(reply, json!({"ok": true}));
        }
    }

    cluster.kill(victim);

    let lost = &groups[victim];
    let reply = command(
        &mut on_a,
        json!({"cmd": "group_send", "group": lost, "event": {"type": "probe.lost"}}),
    )
    .await;
    assert_eq!(reply["kind"], "unavailable", "{reply}");
    let reply = command(&mut on_a, json!({"cmd": "group_add", "group": lost})).await;
    assert_eq!(reply["kind"], "unavailable", "{reply}");

    for (master, group) in groups.iter().enumerate() {
        if master == victim {
            continue;
        }
        let event = json!({"type": "probe.alive", "group": group});
        let reply = command(
            &mut on_a,
            json!({"cmd": "group_send", "group": group, "event": event}),
        )
        .await;
        assert_eq!(reply, json!({"ok": true}), "{group}");
        assert_eq!(on_a.recv_json().await, json!({"event": event}));
        assert_eq!(on_b.recv_json().await, json!({"event": event}));
    }
    let event = json!({"type": "probe.direct"});
    let reply = command(
        &mut on_b,
        json!({"cmd": "channel_send", "channel": channel_a, "event": event}),
    )
    .await;
    assert_eq!(reply, json!({"ok": true}));
    assert_eq!(on_a.recv_json().await, json!({"event": event}));
    a.shutdown().await.expect("clean shutdown");
    b.shutdown().await.expect("clean shutdown");
}

/// Nodes that are not a cluster yet when the server starts: the server
/// serves, layer calls fail as `unavailable` and the admin API reports the
/// cluster failing; once the nodes are joined, the same server's sockets
/// join groups and hear group sends, without a restart.
#[tokio::test]
async fn a_cluster_formed_after_the_server_started_is_used_once_up() {
    let mut cluster = RedisCluster::start_unjoined(3);
    let server = TestServer::start_with(cluster_config(&cluster)).await;
    let (mut client, _) = probe(&server).await;
    let reply = command(&mut client, json!({"cmd": "group_add", "group": "late"})).await;
    assert_eq!(reply["kind"], "unavailable", "{reply}");
    let health = wait_for("the receive loop to report failing", || async {
        let health = layer_health(&server).await;
        (health["shards"][0]["receive"]["failing"] == true).then_some(health)
    })
    .await;
    assert_eq!(health["healthy"], false, "{health}");

    cluster.join();
    // A group served by a master other than the first seed.
    let group = group_per_master(&cluster, |i| format!("late{i}")).await[1].clone();
    // Each try is one round trip (at most the layer's 5 s timeout).
    let deadline = Instant::now() + PATIENCE;
    loop {
        let reply = command(&mut client, json!({"cmd": "group_add", "group": group})).await;
        if reply == json!({"ok": true}) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the joined cluster is still unavailable: {reply}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let event = json!({"type": "probe.late"});
    let reply = command(
        &mut client,
        json!({"cmd": "group_send", "group": group, "event": event}),
    )
    .await;
    assert_eq!(reply, json!({"ok": true}));
    assert_eq!(client.recv_json().await, json!({"event": event}));
    wait_for("the layer to report healthy", || async {
        (layer_health(&server).await["healthy"] == true).then_some(())
    })
    .await;
    server.shutdown().await.expect("clean shutdown");
}
