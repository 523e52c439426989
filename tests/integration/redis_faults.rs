//! The Redis layer against a real redis-server that misbehaves: consumers
//! dropped without `group_discard`, a Redis that refuses every command
//! (NOAUTH, READONLY, WRONGTYPE), foreign data in the layer's keys (a group
//! member that is not UTF-8, an entry nested ~1,000 deep).
//!
//! Nothing here asserts a wall-clock bound. Tests wait for what they look for
//! by polling, with a generous deadline that only turns a hang into a failure;
//! the backoff tests compare attempts with the time they took, which only a
//! loop without backoff can break (a slow machine makes fewer attempts).

use std::time::{Duration, Instant};

use switchyard_layer::{
    ChannelLayer, Event, Inbox, LayerError, LoopHealth, RedisConfig, RedisLayer,
};
use switchyard_tests::redis_support::{RedisServer, ServerProcess, refusing_port};
use switchyard_tests::{Client, TestServer, redis_support, test_config};

/// How long a poll may wait before the test fails as hung.
const PATIENCE: Duration = Duration::from_secs(60);
/// Half the layer's first backoff step: no two attempts of a loop that backs
/// off are closer than this.
const MIN_DELAY: Duration = Duration::from_millis(50);

/// Polls `probe` until it gives `Some`; fails after [`PATIENCE`].
async fn wait_for<T, F: Future<Output = Option<T>>>(what: &str, probe: impl FnMut() -> F) -> T {
    redis_support::wait_for_within(PATIENCE, what, probe).await
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64()
}

/// The next event's type; fails after [`PATIENCE`].
async fn next_type(inbox: &mut Inbox) -> String {
    tokio::time::timeout(PATIENCE, inbox.recv())
        .await
        .expect("an event within the patience")
        .expect("the layer is alive")
        .event_type()
        .to_owned()
}

fn event(json: &str) -> Event {
    Event::from_json(json).expect("event")
}

async fn members(conn: &mut redis::aio::MultiplexedConnection, group: &str) -> Vec<String> {
    let mut members: Vec<String> = redis::cmd("ZRANGE")
        .arg(format!("asgi:group:{group}"))
        .arg(0)
        .arg(-1)
        .query_async(conn)
        .await
        .expect("ZRANGE");
    members.sort();
    members
}

async fn score(
    conn: &mut redis::aio::MultiplexedConnection,
    group: &str,
    member: &str,
) -> Option<f64> {
    redis::cmd("ZSCORE")
        .arg(format!("asgi:group:{group}"))
        .arg(member)
        .query_async(conn)
        .await
        .expect("ZSCORE")
}

/// Consumers dropped without `group_discard` leave their groups: once the
/// membership refresh has run (seen as the live member's fresh join time,
/// written in the same transaction as the removals), Redis holds only the
/// live member. Before the fix the refresh re-added the abandoned ones, every
/// half group expiry, forever.
#[tokio::test]
async fn abandoned_consumers_leave_no_stale_members_once_the_refresh_has_run() {
    let redis = RedisServer::start();
    let mut config = RedisConfig::single(redis.url());
    config.layer.group_expiry = Duration::from_secs(2);
    let layer = RedisLayer::new(config).expect("layer");
    let live = layer.new_channel();
    layer.group_add("room", live.name()).await.expect("join");
    let abandoned: Vec<_> = (0..5).map(|_| layer.new_channel()).collect();
    for inbox in &abandoned {
        layer.group_add("room", inbox.name()).await.expect("join");
        layer.group_add("lobby", inbox.name()).await.expect("join");
    }
    let mut conn = redis.connection().await;
    assert_eq!(members(&mut conn, "room").await.len(), 6);
    let joined = score(&mut conn, "room", live.name())
        .await
        .expect("a member");
    drop(abandoned);

    wait_for("the membership refresh", || {
        let mut conn = conn.clone();
        let live = live.name().to_owned();
        async move {
            (score(&mut conn, "room", &live)
                .await
                .expect("still a member")
                > joined)
                .then_some(())
        }
    })
    .await;
    assert_eq!(members(&mut conn, "room").await, [live.name().to_owned()]);
    assert!(members(&mut conn, "lobby").await.is_empty());
}

/// A consumer dropped while Redis is down is not re-added by the resync
/// after Redis comes back, while a live one is.
#[tokio::test]
async fn consumers_dropped_during_an_outage_are_not_re_added() {
    let mut redis = RedisServer::start();
    let layer = RedisLayer::new(RedisConfig::single(redis.url())).expect("layer");
    let live = layer.new_channel();
    let gone = layer.new_channel();
    let gone_name = gone.name().to_owned();
    layer.group_add("room", live.name()).await.expect("join");
    layer.group_add("room", &gone_name).await.expect("join");
    redis.kill();
    drop(gone);
    redis.restart();
    let mut conn = redis.connection().await;
    wait_for("the resync after the restart", || {
        let mut conn = conn.clone();
        let live = live.name().to_owned();
        async move { score(&mut conn, "room", &live).await.map(|_| ()) }
    })
    .await;
    assert_eq!(members(&mut conn, "room").await, [live.name().to_owned()]);
}

async fn connections_received(conn: &mut redis::aio::MultiplexedConnection) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("stats")
        .query_async(conn)
        .await
        .expect("INFO stats");
    info.lines()
        .find_map(|line| line.strip_prefix("total_connections_received:"))
        .and_then(|count| count.trim().parse().ok())
        .expect("total_connections_received in INFO stats")
}

/// Waits until the layer reports its receive loop failing with `expected` in
/// the error, then for four more failed attempts, and checks that the loop
/// backed off meanwhile: attempts, and connections Redis accepted, are no
/// more than the elapsed time allows at one attempt per [`MIN_DELAY`]. A loop
/// without backoff makes its four attempts within milliseconds.
async fn assert_backs_off(
    layer: &RedisLayer,
    admin: &mut redis::aio::MultiplexedConnection,
    expected: &str,
) {
    let receive = || -> LoopHealth { layer.health().shards[0].receive.clone() };
    let first = wait_for("the failure to be reported", || {
        let health = receive();
        async move { health.failing.then_some(health) }
    })
    .await;
    assert!(!layer.health().is_healthy());
    let error = first.last_error.clone().unwrap_or_default();
    assert!(error.contains(expected), "{error}");

    let connections_before = connections_received(admin).await;
    let started = Instant::now();
    let failures_before = receive().failures;
    let after = wait_for("four more attempts", || {
        let health = receive();
        async move { (health.failures >= failures_before + 4).then_some(health) }
    })
    .await;
    let elapsed = started.elapsed();
    let connections = connections_received(admin).await - connections_before;
    // One for the poll's own INFO connection, one for an attempt under way.
    let allowed = 2 + u64::try_from(elapsed.as_millis() / MIN_DELAY.as_millis()).expect("u64");
    let attempts = after.failures - failures_before;
    assert!(
        attempts <= allowed,
        "{attempts} attempts in {elapsed:?}: no backoff"
    );
    assert!(
        connections <= 2 * allowed,
        "{connections} connections in {elapsed:?} for {attempts} attempts: no backoff"
    );
    assert!(after.failing);
    assert_eq!(after.total_failures, after.failures);
}

/// A URL without the password of a Redis with `requirepass`: every command
/// is refused with NOAUTH. The receive loop backs off, reports the failure,
/// and recovers when Redis stops asking for a password.
#[tokio::test]
async fn a_redis_refusing_auth_is_retried_with_backoff_and_reported() {
    let redis = RedisServer::start_with_args(&["--requirepass", "secret"]);
    let layer = RedisLayer::new(RedisConfig::single(redis.url())).expect("layer");
    let mut admin = redis::Client::open(format!("{}?pass=secret", redis.url()))
        .expect("URL")
        .get_multiplexed_async_connection()
        .await
        .expect("admin connection");
    assert_backs_off(&layer, &mut admin, "NOAUTH").await;

    let () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg("")
        .query_async(&mut admin)
        .await
        .expect("drop the password");
    assert_recovers(&layer, &redis, "after.auth").await;
}

/// Once Redis accepts the layer's commands again, the layer reports itself
/// healthy and delivers: an event of `event_type` sent by another process
/// reaches one of its inboxes.
async fn assert_recovers(layer: &RedisLayer, redis: &RedisServer, event_type: &str) {
    wait_for("the recovery", || {
        let healthy = layer.health().is_healthy();
        async move { healthy.then_some(()) }
    })
    .await;
    let mut inbox = layer.new_channel();
    let other = RedisLayer::new(RedisConfig::single(redis.url())).expect("layer");
    other
        .send(
            inbox.name(),
            event(&format!(r#"{{"type": "{event_type}"}}"#)),
        )
        .await
        .expect("send");
    assert_eq!(inbox.recv().await.expect("event").event_type(), event_type);
}

/// A replica (of a master nobody runs) refuses the pops with READONLY.
#[tokio::test]
async fn a_read_only_replica_is_retried_with_backoff_and_reported() {
    let (_refusing, port) = refusing_port();
    let redis = RedisServer::start_with_args(&["--replicaof", "127.0.0.1", &port.to_string()]);
    let layer = RedisLayer::new(RedisConfig::single(redis.url())).expect("layer");
    let mut admin = redis.connection().await;
    assert_backs_off(&layer, &mut admin, "read only replica").await;
}

/// The process's inbox key replaced by a string: the pops fail with
/// WRONGTYPE. The layer reports it, deletes the foreign key (the key is this
/// process's own inbox, named by its random prefix: nothing else may store
/// anything there), and delivers again without anyone's help.
#[tokio::test]
async fn an_inbox_key_of_the_wrong_type_is_reported_and_removed() {
    let redis = RedisServer::start();
    let layer = RedisLayer::new(RedisConfig::single(redis.url())).expect("layer");
    let mut admin = redis.connection().await;
    let () = redis::cmd("SET")
        .arg(layer.inbox_key())
        .arg("not a sorted set")
        .query_async(&mut admin)
        .await
        .expect("SET");
    wait_for("the foreign inbox key to be removed", || {
        let mut admin = admin.clone();
        let key = layer.inbox_key().to_owned();
        async move {
            let kind: String = redis::cmd("TYPE")
                .arg(&key)
                .query_async(&mut admin)
                .await
                .expect("TYPE");
            (kind != "string").then_some(())
        }
    })
    .await;
    let receive = layer.health().shards[0].receive.clone();
    assert!(receive.total_failures >= 1, "{receive:?}");
    let error = receive.last_error.unwrap_or_default();
    assert!(error.contains("WRONGTYPE"), "{error}");
    assert_recovers(&layer, &redis, "after.wrongtype").await;
}

/// One member name that is not UTF-8, written into the group by another
/// client, is skipped: the other ten members still get every group send.
#[tokio::test]
async fn a_group_member_that_is_not_utf8_is_skipped() {
    let redis = RedisServer::start();
    let receiver = RedisLayer::new(RedisConfig::single(redis.url())).expect("layer");
    let sender = RedisLayer::new(RedisConfig::single(redis.url())).expect("layer");
    let mut inboxes: Vec<_> = (0..10).map(|_| receiver.new_channel()).collect();
    for inbox in &inboxes {
        receiver
            .group_add("room", inbox.name())
            .await
            .expect("join");
    }
    let mut conn = redis.connection().await;
    let () = redis::cmd("ZADD")
        .arg("asgi:group:room")
        .arg(unix_now())
        .arg(&b"specific.\xff\xfe!bad"[..])
        .query_async(&mut conn)
        .await
        .expect("plant a bad member");

    let report = sender
        .group_send("room", event(r#"{"type": "chat.message"}"#))
        .await
        .expect("the group send succeeds");
    assert_eq!(report.delivered, 10, "{report:?}");
    for inbox in &mut inboxes {
        assert_eq!(
            inbox.recv().await.expect("event").event_type(),
            "chat.message"
        );
    }
    assert_eq!(sender.stats().undeliverable, 1);
}

/// An inbox entry nested 1,000 deep (under the msgpack decoder's default
/// limit of 1,024) is skipped as malformed; before the fix it overflowed the
/// stack of the debug build and aborted the process. The next entry arrives.
#[tokio::test]
async fn an_entry_nested_a_thousand_deep_is_skipped() {
    let redis = RedisServer::start();
    let receiver = RedisLayer::new(RedisConfig::single(redis.url())).expect("layer");
    let sender = RedisLayer::new(RedisConfig::single(redis.url())).expect("layer");
    let mut inbox = receiver.new_channel();
    let name = inbox.name().as_bytes();

    // 12 random-prefix bytes, then {"__asgi_channel__": name, "type": "deep",
    // "x": [[[...nil...]]]}.
    let mut entry = vec![b'0'; 12];
    entry.push(0x83);
    entry.push(0xb0);
    entry.extend_from_slice(b"__asgi_channel__");
    entry.push(0xd9);
    entry.push(u8::try_from(name.len()).expect("a short name"));
    entry.extend_from_slice(name);
    entry.extend_from_slice(b"\xa4type\xa4deep\xa1x");
    entry.extend(std::iter::repeat_n(0x91, 1_000));
    entry.push(0xc0);
    // Scored now: an entry scored older than the expiry would be pruned by
    // the sender's `send` (channels_redis's ZREMRANGEBYSCORE) if it got
    // there before the receive loop, leaving nothing to skip (the flake of
    // `undeliverable == 0` under load).
    let mut conn = redis.connection().await;
    let () = redis::cmd("ZADD")
        .arg(receiver.inbox_key())
        .arg(unix_now())
        .arg(entry)
        .query_async(&mut conn)
        .await
        .expect("plant the deep entry");

    sender
        .send(inbox.name(), event(r#"{"type": "after.deep"}"#))
        .await
        .expect("send");
    assert_eq!(
        inbox.recv().await.expect("event").event_type(),
        "after.deep"
    );
    let stats = receiver.stats();
    assert_eq!(stats.undeliverable, 1, "{stats:?}");
    assert!(receiver.health().is_healthy());
}

/// `GET /_switchyard/layer` with the admin token.
async fn layer_health(server: &TestServer) -> serde_json::Value {
    redis_support::layer_health(server.addr, ADMIN_TOKEN).await
}

const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// The admin API tells an operator that the Redis layer cannot reach its
/// host, naming the host and the error, and that the memory layer is fine.
#[tokio::test]
async fn the_admin_api_tells_when_redis_is_unreachable() {
    let (_refusing, port) = refusing_port();
    let url = format!("redis://127.0.0.1:{port}/0");
    let mut config = test_config();
    config.redis_url = Some(url.clone());
    config.admin.token = Some(ADMIN_TOKEN.into());
    let server = TestServer::start_with(config).await;
    let health = tokio::time::timeout(PATIENCE, async {
        loop {
            let health = layer_health(&server).await;
            if health["shards"][0]["receive"]["failing"] == true {
                break health;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the failure is reported");
    assert_eq!(health["healthy"], false, "{health}");
    assert_eq!(health["shards"][0]["url"], url.as_str(), "{health}");
    assert!(
        health["shards"][0]["receive"]["last_error"].is_string(),
        "{health}"
    );
    assert!(
        health["shards"][0]["heartbeat"]["failing"].is_boolean(),
        "{health}"
    );
    assert_eq!(health["shards"][0]["processes"], 0, "{health}");
    server.shutdown().await.expect("clean shutdown");

    let mut memory = test_config();
    memory.admin.token = Some(ADMIN_TOKEN.into());
    let server = TestServer::start_with(memory).await;
    assert_eq!(
        layer_health(&server).await,
        serde_json::json!({"healthy": true, "shards": []})
    );
    server.shutdown().await.expect("clean shutdown");
}

/// A Switchyard process killed with SIGKILL leaves its chat member in the
/// group. The live processes see its heartbeat expire and remove its
/// members, so group sends stop skipping its full inbox; a member of a
/// process that never heartbeated (a Django process) stays.
#[tokio::test]
async fn a_killed_processs_members_are_purged_by_the_live_processes() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().expect("a config directory");
    let config_file = dir.path().join("switchyard.toml");
    std::fs::write(&config_file, "[redis]\nheartbeat-ttl-secs = 1\n").expect("write config");
    let config_arg = config_file.to_str().expect("a UTF-8 path");
    let mut doomed = ServerProcess::start_with_args(&redis.url(), &["-c", config_arg]);
    let _chat = Client::connect_url(&format!("ws://{}/ws/chat/lobby/", doomed.addr)).await;
    let mut conn = redis.connection().await;
    let doomed_member = wait_for("the chat member in the group", || {
        let mut conn = conn.clone();
        async move { members(&mut conn, "chat_lobby").await.pop() }
    })
    .await;
    let doomed_inbox = doomed_member[..=doomed_member.find('!').expect("a ! name")].to_owned();
    let django = "specific.0123456789abcdef0123456789abcdef!django";
    let () = redis::cmd("ZADD")
        .arg("asgi:group:chat_lobby")
        .arg(unix_now())
        .arg(django)
        .query_async(&mut conn)
        .await
        .expect("a Django member");

    let mut config = RedisConfig::single(redis.url());
    config.heartbeat_ttl = Duration::from_secs(1);
    // The killed process's inbox holds one event, the Django one plenty.
    config.layer.channel_capacity = vec![(format!("{doomed_inbox}*"), 1)];
    let live = RedisLayer::new(config).expect("layer");
    doomed.kill();

    let send = || async {
        live.group_send(
            "chat_lobby",
            event(r#"{"type": "chat.message", "message": "hi"}"#),
        )
        .await
        .expect("group_send")
    };
    // Until the purge, the full inbox of the dead process is skipped (and
    // counted) by every send after the first.
    let deadline = Instant::now() + PATIENCE;
    let mut skipped = 0;
    let first = send().await;
    assert_eq!(first.delivered, 2, "{first:?}");
    while members(&mut conn, "chat_lobby").await != [django.to_owned()] {
        assert!(
            Instant::now() < deadline,
            "the killed process's members were never purged"
        );
        skipped += send().await.over_capacity;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let skips = live.stats().full_inbox_skips;
    assert_eq!(skips, u64::try_from(skipped).expect("u64"));
    let report = send().await;
    assert_eq!(
        (report.delivered, report.over_capacity),
        (1, 0),
        "{report:?}"
    );
    assert_eq!(live.stats().full_inbox_skips, skips);
    // The dead process's bookkeeping is gone too.
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg("asgi:switchyard:*")
        .query_async(&mut conn)
        .await
        .expect("KEYS");
    keys.sort();
    assert!(
        keys.iter().all(|key| !key.contains(&doomed_inbox)),
        "{keys:?}"
    );
}

/// Redis restarts (same address, empty). A group send while it is down
/// fails as `unavailable`; the first one after it is back reaches this
/// process's member (from the layer's own membership map) and, once the
/// other process has re-added its membership, the remote member: the send
/// waits for that rather than miss it.
#[tokio::test]
async fn a_group_send_right_after_a_redis_restart_reaches_every_member() {
    let mut redis = RedisServer::start();
    let fast = |redis: &RedisServer| {
        let mut config = RedisConfig::single(redis.url());
        config.heartbeat_ttl = Duration::from_secs(1);
        RedisLayer::new(config).expect("layer")
    };
    let sender = fast(&redis);
    let remote = fast(&redis);
    let mut here = sender.new_channel();
    let mut there = remote.new_channel();
    sender.group_add("room", here.name()).await.expect("join");
    remote.group_add("room", there.name()).await.expect("join");
    // The sender has seen the other process alive: it knows whom to wait for.
    wait_for("both processes seen alive", || {
        let seen = sender.health().shards[0].processes;
        async move { (seen == 2).then_some(()) }
    })
    .await;
    let report = sender
        .group_send("room", event(r#"{"type": "before"}"#))
        .await
        .expect("send");
    assert_eq!(report.delivered, 2, "{report:?}");
    assert_eq!(next_type(&mut here).await, "before");
    assert_eq!(next_type(&mut there).await, "before");

    redis.kill();
    let error = sender
        .group_send("room", event(r#"{"type": "during"}"#))
        .await
        .expect_err("Redis is down");
    assert!(matches!(error, LayerError::Unavailable(_)), "{error}");
    let error = sender
        .send(there.name(), event(r#"{"type": "during"}"#))
        .await
        .expect_err("Redis is down");
    assert!(matches!(error, LayerError::Unavailable(_)), "{error}");
    redis.restart();

    // The send waits for the other process's re-add; should that take
    // longer than the layer waits, it fails as `unavailable`, having
    // delivered nothing, and is tried again.
    let report = wait_for("a group send after the restart", || async {
        match sender
            .group_send("room", event(r#"{"type": "after"}"#))
            .await
        {
            Ok(report) => Some(report),
            Err(LayerError::Unavailable(_)) => None,
            Err(other) => panic!("{other}"),
        }
    })
    .await;
    assert_eq!(report.delivered, 2, "{report:?}");
    // The first event each gets is the one after the restart: nothing sent
    // during the outage arrives late.
    assert_eq!(next_type(&mut here).await, "after");
    assert_eq!(next_type(&mut there).await, "after");
}

/// Another process slow to come back after a Redis restart (here frozen
/// through it): once the layer's wait for it has passed, group sends keep
/// failing as `unavailable`, never reporting success while its members are
/// missing; once it is back and has re-added them, they reach it again.
#[tokio::test]
async fn sends_fail_while_another_process_has_not_re_added_after_a_restart() {
    let mut redis = RedisServer::start();
    let remote = ServerProcess::start(&redis.url());
    let mut member = Client::connect_url(&format!("ws://{}/ws/chat/slow/", remote.addr)).await;
    // A long heartbeat: the layer gives up on a missing process only this
    // long after the loss, well after the sends below.
    let mut config = RedisConfig::single(redis.url());
    config.heartbeat_ttl = Duration::from_secs(30);
    let sender = RedisLayer::new(config).expect("layer");
    wait_for("the sender sees the other process alive", || {
        let seen = sender.health().shards[0].processes;
        async move { (seen == 2).then_some(()) }
    })
    .await;
    let chat = |text: &str| {
        event(&format!(
            r#"{{"type": "chat.message", "message": "{text}"}}"#
        ))
    };
    let report = sender
        .group_send("chat_slow", chat("before"))
        .await
        .expect("send");
    assert_eq!(report.delivered, 1, "{report:?}");
    assert_eq!(member.recv_json().await["message"], "before");

    remote.freeze();
    redis.restart();
    // The first send waits for the frozen process, then fails; so do the
    // next ones, at once, while it is still missing.
    for attempt in 0..3 {
        let result = sender.group_send("chat_slow", chat("lost")).await;
        assert!(
            matches!(result, Err(LayerError::Unavailable(_))),
            "send {attempt} while the other process is missing: {result:?}"
        );
    }
    remote.thaw();
    let report = wait_for("a send that reaches the process again", || async {
        match sender.group_send("chat_slow", chat("after")).await {
            Ok(report) => Some(report),
            Err(LayerError::Unavailable(_)) => None,
            Err(other) => panic!("{other}"),
        }
    })
    .await;
    assert_eq!(report.delivered, 1, "{report:?}");
    assert_eq!(member.recv_json().await["message"], "after");
}

/// A group key deleted under live members (`DEL`, `FLUSHDB`, an eviction):
/// the next group send still reaches this process's ten members, puts them
/// back in Redis, and tells the other processes to put theirs back.
#[tokio::test]
async fn a_deleted_group_key_is_re_added_and_local_members_still_get_the_send() {
    let redis = RedisServer::start();
    let fast = |redis: &RedisServer| {
        let mut config = RedisConfig::single(redis.url());
        config.heartbeat_ttl = Duration::from_secs(1);
        RedisLayer::new(config).expect("layer")
    };
    let sender = fast(&redis);
    let remote = fast(&redis);
    let mut inboxes: Vec<_> = (0..10).map(|_| sender.new_channel()).collect();
    for inbox in &inboxes {
        sender.group_add("room", inbox.name()).await.expect("join");
    }
    let mut there = remote.new_channel();
    remote.group_add("room", there.name()).await.expect("join");
    let mut conn = redis.connection().await;
    let () = redis::cmd("DEL")
        .arg("asgi:group:room")
        .query_async(&mut conn)
        .await
        .expect("DEL");

    let report = sender
        .group_send("room", event(r#"{"type": "after.del"}"#))
        .await
        .expect("send");
    assert_eq!(report.delivered, 10, "{report:?}");
    for inbox in &mut inboxes {
        assert_eq!(next_type(inbox).await, "after.del");
    }
    let mut expected: Vec<String> = inboxes.iter().map(|i| i.name().to_owned()).collect();
    expected.push(there.name().to_owned());
    expected.sort();
    wait_for("every member back in Redis", || {
        let mut conn = conn.clone();
        let expected = expected.clone();
        async move { (members(&mut conn, "room").await == expected).then_some(()) }
    })
    .await;
    sender
        .group_send("room", event(r#"{"type": "after.readd"}"#))
        .await
        .expect("send");
    assert_eq!(next_type(&mut there).await, "after.readd");
}

/// With two Redis hosts, a process that stops beating (its layer dropped
/// without leaving its groups, as a crash leaves them) loses its members on
/// both: each host's record lists the groups on that host.
#[tokio::test]
async fn a_dead_processs_members_are_purged_on_every_shard() {
    let hosts = [RedisServer::start(), RedisServer::start()];
    let config = || {
        let mut config = RedisConfig::single(hosts[0].url());
        config.hosts.push(hosts[1].url().into());
        config.heartbeat_ttl = Duration::from_secs(1);
        config
    };
    // channels_redis's hash puts "chat" on the first of two hosts and
    // "key_one" on the second (docs/channels_redis_wire.md 1.11).
    let groups = ["chat", "key_one"];
    let doomed = RedisLayer::new(config()).expect("layer");
    let live = RedisLayer::new(config()).expect("layer");
    let gone = doomed.new_channel();
    let stays = live.new_channel();
    for group in groups {
        doomed.group_add(group, gone.name()).await.expect("join");
        live.group_add(group, stays.name()).await.expect("join");
    }
    let inbox = &gone.name()[..=gone.name().find('!').expect("a ! name")];
    let mut conns = [hosts[0].connection().await, hosts[1].connection().await];
    for conn in &conns {
        wait_for("the doomed process's heartbeat on each host", || {
            let mut conn = conn.clone();
            async move {
                let alive: bool = redis::cmd("EXISTS")
                    .arg(format!("asgi:switchyard:alive:{inbox}"))
                    .query_async(&mut conn)
                    .await
                    .expect("EXISTS");
                alive.then_some(())
            }
        })
        .await;
    }
    for (conn, group) in conns.iter_mut().zip(groups) {
        let mut expected = vec![gone.name().to_owned(), stays.name().to_owned()];
        expected.sort();
        assert_eq!(members(conn, group).await, expected, "{group}");
    }
    drop(doomed);

    for (conn, group) in conns.iter().zip(groups) {
        wait_for("the dead process's members to be purged", || {
            let mut conn = conn.clone();
            let stays = stays.name().to_owned();
            async move { (members(&mut conn, group).await == [stays]).then_some(()) }
        })
        .await;
    }
}
