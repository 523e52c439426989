//! The Redis layer behind Redis Sentinel, against real processes on
//! loopback: a master, two replicas (`--replicaof`: one to promote, one
//! left to confirm writes after the failover), one sentinel (quorum 1,
//! down after 300 ms), a Switchyard server configured with the Sentinel
//! entry, and a second layer in the test standing for another process.
//!
//! "Acknowledged" is the layer's promise with `wait-for-replicas = 1`: a
//! `send`/`group_send` that returned `Ok` was confirmed by a replica
//! (`WAIT`), so it survives the master's death (Sentinel promotes the
//! replica with the largest replication offset); one that failed may or may
//! not have been written. The tests wait for events (the sentinel naming a
//! new master, a send succeeding) by polling, never for a fixed time.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use switchyard_layer::redis::hosts::{ConnectionOptions, SentinelEntry};
use switchyard_layer::{ChannelLayer, Event, HostEntry, LayerError, RedisConfig, RedisLayer};
use switchyard_tests::redis_support::{PythonListener, RedisServer, SentinelProcess, python_run};
use switchyard_tests::{Client, TestServer, redis_support, test_config};

/// How long a poll may wait before the test fails as hung.
const PATIENCE: Duration = Duration::from_secs(90);
/// How long a write waits for its replica's confirmation.
const WAIT_TIMEOUT: Duration = Duration::from_millis(500);

/// Polls `probe` until it gives `Some`; fails after [`PATIENCE`].
async fn wait_for<T, F: Future<Output = Option<T>>>(what: &str, probe: impl FnMut() -> F) -> T {
    redis_support::wait_for_within(PATIENCE, what, probe).await
}

/// The next chat message's text, waiting up to [`PATIENCE`]: after a
/// failover the server's receive loop may still be in its backoff (up to
/// 5 s a step) when the entry arrives.
async fn next_chat(member: &mut Client) -> String {
    let message = member
        .try_recv_json(PATIENCE)
        .await
        .expect("a chat message within the patience");
    message["message"].as_str().expect("chat text").to_owned()
}

fn event(json: &str) -> Event {
    Event::from_json(json).expect("event")
}

fn chat(text: &str) -> Event {
    event(&format!(
        r#"{{"type": "chat.message", "message": "{text}"}}"#
    ))
}

fn sentinel_entry(sentinel: &SentinelProcess) -> HostEntry {
    HostEntry::Sentinel(SentinelEntry {
        sentinels: vec![("127.0.0.1".to_owned(), sentinel.port())],
        master_name: SentinelProcess::MASTER_NAME.to_owned(),
        sentinel_kwargs: ConnectionOptions::default(),
        options: ConnectionOptions::default(),
    })
}

/// Another process: a layer on the same Sentinel entry that waits for one
/// replica's confirmation.
fn other_process(sentinel: &SentinelProcess) -> RedisLayer {
    let mut config = RedisConfig::with_host(sentinel_entry(sentinel));
    config.wait_for_replicas = 1;
    config.wait_timeout = WAIT_TIMEOUT;
    RedisLayer::new(config).expect("layer")
}

async fn connection(port: u16) -> Option<redis::aio::MultiplexedConnection> {
    redis::Client::open(format!("redis://127.0.0.1:{port}"))
        .ok()?
        .get_multiplexed_async_connection()
        .await
        .ok()
}

/// `INFO replication` of the server on `port`, as a map.
async fn replication(port: u16) -> Option<HashMap<String, String>> {
    let mut conn = connection(port).await?;
    let info: String = redis::cmd("INFO")
        .arg("replication")
        .query_async(&mut conn)
        .await
        .ok()?;
    Some(
        info.lines()
            .filter_map(|line| line.trim().split_once(':'))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
    )
}

/// Whether the sentinel sees the replica on `replica_port` healthy (flags
/// just `slave`, link to the master up): only such a replica is promoted.
async fn sentinel_sees_healthy_replica(sentinel: &SentinelProcess, replica_port: u16) -> bool {
    let Some(mut conn) = connection(sentinel.port()).await else {
        return false;
    };
    let replicas: Vec<Vec<String>> = match redis::cmd("SENTINEL")
        .arg("replicas")
        .arg(SentinelProcess::MASTER_NAME)
        .query_async(&mut conn)
        .await
    {
        Ok(replicas) => replicas,
        Err(_) => return false,
    };
    replicas.iter().any(|fields| {
        let map: HashMap<&str, &str> = fields
            .chunks(2)
            .filter_map(|pair| Some((pair.first()?.as_str(), pair.get(1)?.as_str())))
            .collect();
        map.get("port") == Some(&replica_port.to_string().as_str())
            && map.get("flags") == Some(&"slave")
            && map.get("master-link-status") == Some(&"ok")
    })
}

/// The layer's `send` until it is not `Unavailable` (the other process
/// may not know the master yet); its result.
async fn send_when_available(
    layer: &RedisLayer,
    channel: &str,
    json: &str,
) -> Result<(), LayerError> {
    wait_for("a send that is not unavailable", || async {
        match layer.send(channel, event(json)).await {
            Err(LayerError::Unavailable(_)) => None,
            other => Some(other),
        }
    })
    .await
}

/// Kill -9 the master: the sentinel promotes the replica, the server and
/// the other process follow it, group sends reach the chat socket again,
/// and every send acknowledged before the kill is on the new master. A
/// send the replica could not confirm (frozen) fails as `unavailable`
/// instead of returning Ok.
#[tokio::test]
async fn a_sentinel_failover_keeps_every_acknowledged_send_and_chat_resumes() {
    let (mut master, replicas, replica_ports, sentinel) = sentinel_setup().await;
    let replicas_healthy = || async {
        for &port in &replica_ports {
            if !sentinel_sees_healthy_replica(&sentinel, port).await {
                return None;
            }
        }
        Some(())
    };
    wait_for("the sentinel sees the replicas", replicas_healthy).await;

    let mut config = test_config();
    config.redis.hosts = vec![sentinel_entry(&sentinel)];
    config.redis.wait_for_replicas = 1;
    config.redis.wait_timeout_ms = 500;
    let server = TestServer::start_with(config).await;
    let other = other_process(&sentinel);
    // The server's layer finds the master through the sentinel.
    let probe = server.host.layer();
    wait_for_master(probe).await;
    let mut member = Client::connect(&server, "/ws/chat/failover/").await;
    let report = wait_for("a group send before the failover", || async {
        match other.group_send("chat_failover", chat("before")).await {
            Ok(report) => Some(report),
            Err(LayerError::Unavailable(_)) => None,
            Err(error) => panic!("{error}"),
        }
    })
    .await;
    assert_eq!(report.delivered, 1, "{report:?}");
    assert_eq!(member.recv_json().await["message"], "before");

    // Acknowledged sends to channels nobody reads: they stay in Redis.
    let acknowledged: Vec<String> = (0..20).map(|i| format!("task.{i}")).collect();
    for channel in &acknowledged {
        send_when_available(&other, channel, r#"{"type": "task"}"#)
            .await
            .expect("acknowledged");
    }
    // Frozen replicas confirm nothing: the send is not acknowledged.
    for replica in &replicas {
        replica.freeze();
    }
    let unconfirmed = other
        .send("task.unconfirmed", event(r#"{"type": "task"}"#))
        .await;
    for replica in &replicas {
        replica.thaw();
    }
    match unconfirmed {
        Err(LayerError::Unavailable(message)) => {
            assert!(message.contains("replicas confirmed"), "{message}");
        }
        other => panic!("a send no replica confirmed returned {other:?}"),
    }
    wait_for(
        "the sentinel sees the replicas healthy again",
        replicas_healthy,
    )
    .await;

    master.kill();
    let new_master = wait_for("the sentinel naming a replica as master", || async {
        let (host, port) = sentinel.master().await?;
        (host == "127.0.0.1" && replica_ports.contains(&port)).then_some(port)
    })
    .await;

    // Group sends reach the socket again; attempts that failed may or may
    // not have been delivered, so the socket reads up to the acknowledged one.
    let mut attempt = 0;
    let acked = wait_for("a group send after the failover", || {
        attempt += 1;
        let text = format!("after {attempt}");
        let other = &other;
        async move {
            match other.group_send("chat_failover", chat(&text)).await {
                Ok(report) if report.delivered == 1 => Some(text),
                Ok(_) | Err(LayerError::Unavailable(_)) => None,
                Err(error) => panic!("{error}"),
            }
        }
    })
    .await;
    loop {
        let text = next_chat(&mut member).await;
        assert!(text.starts_with("after"), "{text}");
        if text == acked {
            break;
        }
    }

    // Every acknowledged send is on the new master.
    let mut conn = connection(new_master).await.expect("the new master");
    for channel in &acknowledged {
        let count: usize = redis::cmd("ZCARD")
            .arg(format!("asgi{channel}"))
            .query_async(&mut conn)
            .await
            .expect("ZCARD");
        assert_eq!(
            count, 1,
            "{channel} was acknowledged and lost in the failover"
        );
    }
    server.shutdown().await.expect("clean shutdown");
}

/// Waits until `layer` reaches the master the sentinel names (a send goes
/// through).
async fn wait_for_master(layer: &Arc<dyn ChannelLayer>) {
    wait_for("the server's layer reaching the master", || async {
        layer
            .send("probe", event(r#"{"type": "probe"}"#))
            .await
            .ok()
    })
    .await;
}

/// A master, two replicas and a sentinel, with every replica in sync and
/// seen healthy by the sentinel; returns the master, the replicas, their
/// ports and the sentinel.
async fn sentinel_setup() -> (RedisServer, Vec<RedisServer>, Vec<u16>, SentinelProcess) {
    let master = RedisServer::start_with_tcp();
    let master_port = master.tcp_port();
    let replicas: Vec<RedisServer> = (0..2)
        .map(|_| {
            RedisServer::start_with_tcp_args(&[
                "--replicaof",
                "127.0.0.1",
                &master_port.to_string(),
            ])
        })
        .collect();
    let ports: Vec<u16> = replicas.iter().map(RedisServer::tcp_port).collect();
    for &port in &ports {
        wait_for("the replicas in sync", || async {
            let info = replication(port).await?;
            (info.get("master_link_status").map(String::as_str) == Some("up")).then_some(())
        })
        .await;
    }
    let sentinel = SentinelProcess::start(master_port);
    for &port in &ports {
        wait_for("the sentinel sees the replicas", || async {
            sentinel_sees_healthy_replica(&sentinel, port)
                .await
                .then_some(())
        })
        .await;
    }
    (master, replicas, ports, sentinel)
}

/// A membership the replicas never got (they were frozen when the socket
/// joined, and the master died before they thawed) is not lost: the
/// server re-adds its memberships on the new master, so another process's
/// group send still reaches the socket.
#[tokio::test]
async fn after_a_failover_the_server_re_adds_memberships_the_replicas_never_got() {
    let (mut master, replicas, replica_ports, sentinel) = sentinel_setup().await;
    let mut config = test_config();
    config.redis.hosts = vec![sentinel_entry(&sentinel)];
    // A heartbeat that outlives the test: the re-add checked here is the
    // one made on connecting to the new master, not the heartbeat's (which
    // re-adds once the heartbeat key, replicated with its expiry, is gone).
    config.redis.heartbeat_ttl_secs = 300;
    let server = TestServer::start_with(config).await;
    let layer = server.host.layer();
    wait_for_master(layer).await;

    // The replicas frozen and cut off (what the master had sent them
    // before would still sit in their socket buffers), the join is written
    // to the master alone.
    for replica in &replicas {
        replica.freeze();
    }
    let mut conn = connection(master.tcp_port()).await.expect("the master");
    let () = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("replica")
        .query_async(&mut conn)
        .await
        .expect("CLIENT KILL TYPE replica");
    let mut member = Client::connect(&server, "/ws/chat/rejoin/").await;
    master.kill();
    for replica in &replicas {
        replica.thaw();
    }
    let new_master = wait_for("the sentinel naming a replica as master", || async {
        let (host, port) = sentinel.master().await?;
        (host == "127.0.0.1" && replica_ports.contains(&port)).then_some(port)
    })
    .await;

    let other = RedisLayer::new(RedisConfig::with_host(sentinel_entry(&sentinel))).expect("layer");
    let report = wait_for("a group send that reaches the member", || async {
        match other.group_send("chat_rejoin", chat("after")).await {
            Ok(report) if report.delivered == 1 => Some(report),
            Ok(_) | Err(LayerError::Unavailable(_)) => None,
            Err(error) => panic!("{error}"),
        }
    })
    .await;
    assert_eq!(report.delivered, 1, "{report:?}");
    assert_eq!(next_chat(&mut member).await, "after");
    // The membership is on whichever server is master now: Sentinel may
    // have moved on from the replica it named first (a second failover when
    // the first promotion times out), and a demoted one resyncs from the
    // new master, so the count is read where the sentinel points, and read
    // again until a moving master settles.
    let members = wait_for("the membership on the current master", || async {
        let (_, port) = sentinel.master().await?;
        let mut conn = connection(port).await?;
        let role: Vec<redis::Value> = redis::cmd("ROLE").query_async(&mut conn).await.ok()?;
        let is_master =
            matches!(role.first(), Some(redis::Value::BulkString(kind)) if kind == b"master");
        let members: usize = redis::cmd("ZCARD")
            .arg("asgi:group:chat_rejoin")
            .query_async(&mut conn)
            .await
            .ok()?;
        (is_master && members > 0).then_some((port, members))
    })
    .await;
    assert_eq!(
        members.1, 1,
        "{members:?} (first named master: {new_master})"
    );
    server.shutdown().await.expect("clean shutdown");
}

/// The only sentinel is down when the server starts: the server serves
/// (a chat handshake is answered 503, the layer's calls fail as
/// `unavailable` and its health says why); once the sentinel is up, the
/// same server reaches the master without a restart.
#[tokio::test]
async fn a_server_started_while_the_sentinels_are_down_serves_and_recovers() {
    let master = RedisServer::start_with_tcp();
    let mut sentinel = SentinelProcess::start(master.tcp_port());
    sentinel.kill();

    let mut config = test_config();
    config.redis.hosts = vec![sentinel_entry(&sentinel)];
    let server = TestServer::start_with(config).await;
    let layer = server.host.layer();
    let error = layer
        .send("task", event(r#"{"type": "task"}"#))
        .await
        .expect_err("no master known");
    assert!(matches!(error, LayerError::Unavailable(_)), "{error}");
    match tokio_tungstenite::connect_async(server.url("/ws/chat/late/")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 503);
        }
        other => panic!("a chat join without a layer: {:?}", other.map(|_| ())),
    }
    let health = wait_for("the receive loop reporting the failure", || async {
        let health = layer.health();
        health.shards[0].receive.failing.then_some(health)
    })
    .await;
    let shard = &health.shards[0];
    assert!(
        shard.url.starts_with("sentinel://mymaster@127.0.0.1:"),
        "{shard:?}"
    );
    assert!(
        shard
            .receive
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("cannot find the master")),
        "{shard:?}"
    );

    sentinel.restart();
    wait_for("a send once the sentinel is up", || async {
        layer.send("task", event(r#"{"type": "task"}"#)).await.ok()
    })
    .await;
    let mut member = Client::connect(&server, "/ws/chat/late/").await;
    // Another process (no replica here, so no WAIT).
    let plain = RedisLayer::new(RedisConfig::with_host(sentinel_entry(&sentinel))).expect("layer");
    let report = wait_for("a group send from another process", || async {
        plain.group_send("chat_late", chat("hello")).await.ok()
    })
    .await;
    assert_eq!(report.delivered, 1, "{report:?}");
    assert_eq!(member.recv_json().await["message"], "hello");
    server.shutdown().await.expect("clean shutdown");
}

/// channels_redis with its Sentinel `hosts` entry and Switchyard with the
/// same entry in TOML form share a chat group both ways: the entry means
/// the same master on both sides.
#[tokio::test]
async fn django_and_switchyard_share_a_group_through_the_same_sentinel() {
    let master = RedisServer::start_with_tcp();
    let sentinel = SentinelProcess::start(master.tcp_port());
    let mut config = test_config();
    config.redis.hosts = vec![sentinel_entry(&sentinel)];
    let server = TestServer::start_with(config).await;
    let layer = server.host.layer();
    wait_for_master(layer).await;
    // The host dict channels_redis takes (no socket timeout: see
    // `python_config`).
    let py = serde_json::json!({"hosts": [{
        "sentinels": [["127.0.0.1", sentinel.port()]],
        "master_name": SentinelProcess::MASTER_NAME,
        "socket_timeout": null,
    }]});
    let mut listener = PythonListener::start(&py, "chat_sentinel", 2).await;
    let mut member = Client::connect(&server, "/ws/chat/sentinel/").await;

    let from_django = serde_json::json!({"type": "chat.message", "message": "from django"});
    python_run(
        &py,
        &["group_send", "chat_sentinel", &from_django.to_string()],
    )
    .await;
    assert_eq!(member.recv_json().await["message"], "from django");
    assert_eq!(listener.next().await["message"], from_django);

    member
        .send_json(&serde_json::json!({"message": "from switchyard"}))
        .await;
    assert_eq!(member.recv_json().await["message"], "from switchyard");
    let got = listener.next().await;
    assert_eq!(got["message"]["message"], "from switchyard", "{got}");
    server.shutdown().await.expect("clean shutdown");
}
