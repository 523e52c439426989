//! The Redis channel layer against a real redis-server: interop with the real
//! channels_redis (Python), several Switchyard processes on one Redis, Redis
//! faults, and wire details (capacity, malformed entries).

use std::collections::HashMap;
use std::time::Duration;

use serde_json::json;
use switchyard::Config;
use switchyard_layer::{ChannelLayer, Event, LayerError, RedisConfig, RedisLayer};
use switchyard_tests::redis_support::{
    PythonListener, RedisServer, ServerProcess, python_config, python_run, refusing_port,
};
use switchyard_tests::{Client, TestServer, test_config};

fn redis_config(redis: &RedisServer, keys: &[&str]) -> Config {
    let mut config = test_config();
    config.redis_url = Some(redis.url());
    config.redis.symmetric_encryption_keys = keys.iter().map(|k| (*k).to_owned()).collect();
    config
}

async fn probe(server: &TestServer) -> (Client, String) {
    let mut client = Client::connect(server, "/probe/layer/").await;
    let scope = client.recv_json().await;
    let channel = scope["channel_name"].as_str().expect("channel").to_owned();
    (client, channel)
}

/// A chat client that has joined its room (the join is done before accept).
async fn chat(server: &TestServer, room: &str) -> Client {
    Client::connect(server, &format!("/ws/chat/{room}/")).await
}

/// Python's group_send reaches Rust chat clients, and a Rust chat message
/// reaches a Python channel in the same group; with and without encryption.
async fn chat_interop(keys: &[&str]) {
    let redis = RedisServer::start();
    let server = TestServer::start_with(redis_config(&redis, keys)).await;
    let py = python_config(&redis.url(), keys);
    let mut listener = PythonListener::start(&py, "chat_lobby", 2).await;
    let mut a = chat(&server, "lobby").await;
    let mut b = chat(&server, "lobby").await;

    let event = json!({"type": "chat.message", "message": "from django"});
    python_run(&py, &["group_send", "chat_lobby", &event.to_string()]).await;
    assert_eq!(a.recv_json().await, json!({"message": "from django"}));
    assert_eq!(b.recv_json().await, json!({"message": "from django"}));
    assert_eq!(listener.next().await["message"], event);

    a.send_json(&json!({"message": "from switchyard"})).await;
    assert_eq!(a.recv_json().await, json!({"message": "from switchyard"}));
    assert_eq!(b.recv_json().await, json!({"message": "from switchyard"}));
    let got = listener.next().await;
    // The chat sends with `group-send-frame`: Django gets the event plus the
    // ready frame under `__frame__`, which Channels' dispatch ignores.
    assert_eq!(
        got["message"],
        json!({"type": "chat.message", "message": "from switchyard",
            "__frame__": r#"{"message":"from switchyard"}"#})
    );
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn python_and_rust_chat_share_a_group() {
    chat_interop(&[]).await;
}

#[tokio::test]
async fn encrypted_python_and_rust_layers_interoperate() {
    chat_interop(&["first key", "older key"]).await;
}

#[tokio::test]
async fn direct_sends_and_bytes_round_trip_with_python() {
    let redis = RedisServer::start();
    let server = TestServer::start_with(redis_config(&redis, &[])).await;
    let py = python_config(&redis.url(), &[]);
    let (mut client, channel) = probe(&server).await;

    // Python send() to a Rust connection's channel, with every value type.
    let event = json!({"type": "probe.data", "data": {"__bytes__": "AP8A"}, "n": -1,
        "big": 300, "f": 0.5, "none": null, "ok": false, "list": [1, "two", {"__bytes__": ""}]});
    python_run(&py, &["send", &channel, &event.to_string()]).await;
    assert_eq!(client.recv_json().await, json!({"event": event}));

    // Rust channel_send and group_send to Python channels: bytes arrive as bytes.
    let mut listener = PythonListener::start(&py, "bytes_back", 2).await;
    let direct = json!({"type": "x.direct", "raw": {"__bytes__": "3q2+7w=="}, "f": 1.5});
    client
        .send_json(&json!({"cmd": "channel_send", "channel": listener.channel, "event": direct}))
        .await;
    assert_eq!(client.recv_json().await, json!({"ok": true}));
    let got = listener.next().await;
    assert_eq!(got["message"], direct);
    assert_eq!(got["bytes_keys"], json!(["raw"]));

    let grouped = json!({"type": "x.group", "payload": {"__bytes__": "AQID"}});
    client
        .send_json(&json!({"cmd": "group_send", "group": "bytes_back", "event": grouped}))
        .await;
    assert_eq!(client.recv_json().await, json!({"ok": true}));
    let got = listener.next().await;
    assert_eq!(got["message"], grouped);
    assert_eq!(got["bytes_keys"], json!(["payload"]));
    server.shutdown().await.expect("clean shutdown");
}

/// Reads chat messages until each sender's `count` messages arrived; returns
/// them per sender, in arrival order.
async fn collect(client: &mut Client, senders: usize, count: usize) -> HashMap<String, Vec<u64>> {
    let mut got: HashMap<String, Vec<u64>> = HashMap::new();
    while got.values().map(Vec::len).sum::<usize>() < senders * count {
        let message = client.recv_json().await;
        let text = message["message"].as_str().expect("chat text").to_owned();
        let (sender, seq) = text.split_once('#').expect("sender#seq");
        got.entry(sender.to_owned())
            .or_default()
            .push(seq.parse().expect("seq"));
    }
    got
}

#[tokio::test]
async fn two_switchyard_processes_share_a_chat_room() {
    let redis = RedisServer::start();
    let first = ServerProcess::start(&redis.url());
    let second = ServerProcess::start(&redis.url());
    let url = |addr: std::net::SocketAddr| format!("ws://{addr}/ws/chat/both/");
    let mut clients = Vec::new();
    for addr in [first.addr, second.addr, first.addr, second.addr] {
        clients.push(Client::connect_url(&url(addr)).await);
    }
    const COUNT: u64 = 20;
    for seq in 0..COUNT {
        for (i, client) in clients.iter_mut().enumerate() {
            client
                .send_json(&json!({"message": format!("c{i}#{seq}")}))
                .await;
        }
    }
    let expected: Vec<u64> = (0..COUNT).collect();
    for client in &mut clients {
        let got = collect(client, 4, COUNT as usize).await;
        assert_eq!(got.len(), 4, "{got:?}");
        for (sender, seqs) in got {
            assert_eq!(seqs, expected, "messages of {sender} lost or out of order");
        }
    }
    // No copies: each sender's last word comes after its messages, so a
    // duplicate of any of them would arrive before it.
    let markers: Vec<_> = (0..clients.len())
        .map(|i| json!({"message": format!("c{i}#end")}))
        .collect();
    for (client, marker) in clients.iter_mut().zip(&markers) {
        client.send_json(marker).await;
    }
    for client in &mut clients {
        client.expect_nothing_before(&markers).await;
    }
}

#[tokio::test]
async fn chat_recovers_after_redis_restarts_without_reconnecting() {
    let mut redis = RedisServer::start();
    let one = TestServer::start_with(redis_config(&redis, &[])).await;
    let two = TestServer::start_with(redis_config(&redis, &[])).await;
    let mut a = chat(&one, "restart").await;
    let mut b = chat(&two, "restart").await;
    a.send_json(&json!({"message": "before"})).await;
    assert_eq!(a.recv_json().await["message"], "before");
    assert_eq!(b.recv_json().await["message"], "before");

    redis.kill();
    // While Redis is down the guest sees a layer error; the socket stays open.
    a.send_json(&json!({"message": "during"})).await;
    let reply = a.recv_json().await;
    assert_eq!(reply["error"], "group_send_failed", "{reply}");
    redis.restart();

    // Memberships come back by themselves (Redis lost them): retry a marker
    // until both members see one, then check a clean run.
    let mut round = 0;
    'recovered: loop {
        round += 1;
        assert!(round < 60, "chat did not recover after Redis restarted");
        a.send_json(&json!({"message": format!("marker{round}")}))
            .await;
        tokio::time::sleep(Duration::from_millis(250)).await;
        let is_marker = |m: &serde_json::Value| {
            m["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("marker"))
        };
        let (mut a_saw, mut b_saw) = (false, false);
        while let Some(message) = b.try_recv_json(Duration::from_millis(50)).await {
            b_saw |= is_marker(&message);
        }
        while let Some(message) = a.try_recv_json(Duration::from_millis(50)).await {
            a_saw |= is_marker(&message);
        }
        // Both members back in the group (a's own copy also comes by the group).
        if a_saw && b_saw {
            break 'recovered;
        }
    }
    for i in 0..10 {
        b.send_json(&json!({"message": format!("after{i}")})).await;
    }
    for i in 0..10 {
        assert_eq!(a.recv_json().await["message"], format!("after{i}"));
        assert_eq!(b.recv_json().await["message"], format!("after{i}"));
    }
    one.shutdown().await.expect("clean shutdown");
    two.shutdown().await.expect("clean shutdown");
}

fn layer_config(redis: &RedisServer, capacity: usize) -> RedisConfig {
    let mut config = RedisConfig::single(redis.url());
    config.layer.capacity = capacity;
    config
}

#[tokio::test]
async fn a_full_remote_channel_is_channel_full_and_bad_entries_are_skipped() {
    let redis = RedisServer::start();
    let layer = RedisLayer::new(layer_config(&redis, 2)).expect("layer");
    let event = Event::from_json(r#"{"type": "job.run"}"#).expect("event");
    // A normal channel nobody reads holds `capacity` events, then refuses.
    layer.send("jobs", event.clone()).await.expect("1st");
    layer.send("jobs", event.clone()).await.expect("2nd");
    assert!(matches!(
        layer.send("jobs", event.clone()).await,
        Err(LayerError::ChannelFull { .. })
    ));

    // Garbage in a process inbox is skipped; the next good entry arrives.
    let receiver = RedisLayer::new(layer_config(&redis, 100)).expect("layer");
    let mut inbox = receiver.new_channel();
    let mut conn = redis.connection().await;
    for garbage in [&b"short"[..], &[0u8; 12][..], b"123456789012\x81\x01\xa1x"] {
        let () = redis::cmd("ZADD")
            .arg(receiver.inbox_key())
            .arg(1)
            .arg(garbage)
            .query_async(&mut conn)
            .await
            .expect("plant garbage");
    }
    let good = Event::from_json(r#"{"type": "after.garbage"}"#).expect("event");
    layer.send(inbox.name(), good.clone()).await.expect("send");
    let got = tokio::time::timeout(Duration::from_secs(10), inbox.recv())
        .await
        .expect("delivered despite garbage")
        .expect("event");
    assert_eq!(got.to_value(), good.to_value());
}

#[tokio::test]
async fn an_unreachable_redis_is_unavailable_not_a_crash() {
    let (_refusing, port) = refusing_port();
    let layer = RedisLayer::new(RedisConfig::single(format!("redis://127.0.0.1:{port}/0")))
        .expect("starts without Redis");
    let event = Event::from_json(r#"{"type": "x"}"#).expect("event");
    let error = layer
        .group_send("g", event)
        .await
        .expect_err("Redis is down");
    assert!(
        matches!(&error, LayerError::Unavailable(why) if why.contains(&port.to_string())),
        "{error}"
    );
    let error = layer
        .group_add("g", "specific.x!y")
        .await
        .expect_err("down");
    assert!(matches!(error, LayerError::Unavailable(_)), "{error}");
}

/// A membership of a layer that is gone is pruned once the group expiry
/// passes; one of a live layer is refreshed and stays. The pruning of the
/// abandoned one is the sign that the expiry has passed.
#[tokio::test]
async fn live_memberships_are_refreshed_past_the_group_expiry() {
    let redis = RedisServer::start();
    let mut config = layer_config(&redis, 100);
    config.layer.group_expiry = Duration::from_secs(2);
    let member = RedisLayer::new(config.clone()).expect("layer");
    let sender = RedisLayer::new(config).expect("layer");
    let mut inbox = member.new_channel();
    member.group_add("long", inbox.name()).await.expect("join");
    // Joined after the live member, by no process that refreshes it: were
    // the live membership not refreshed, it would be pruned first.
    sender
        .group_add("long", "specific.abandoned!x")
        .await
        .expect("join");

    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    for tick in 0.. {
        let event =
            Event::from_json(&json!({"type": "tick", "n": tick}).to_string()).expect("event");
        let report = sender
            .group_send("long", event.clone())
            .await
            .expect("send");
        let members = report.delivered + report.over_capacity;
        assert!(members >= 1, "every membership was pruned: {report:?}");
        let got = tokio::time::timeout(Duration::from_secs(10), inbox.recv())
            .await
            .expect("the live member got the tick")
            .expect("event");
        assert_eq!(got.to_value(), event.to_value());
        if members == 1 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the abandoned membership was never pruned: {report:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Past the expiry: the live member still gets what the group is sent.
    let event = Event::from_json(r#"{"type": "still.here"}"#).expect("event");
    let report = sender
        .group_send("long", event.clone())
        .await
        .expect("send");
    assert_eq!(report.delivered, 1, "{report:?}");
    let got = tokio::time::timeout(Duration::from_secs(10), inbox.recv())
        .await
        .expect("delivered")
        .expect("event");
    assert_eq!(got.to_value(), event.to_value());
}

/// `rediss://` builds a TLS client (rustls with ring); against a plain-text
/// Redis the handshake fails as `Unavailable`, never a panic or a hang.
#[tokio::test]
async fn rediss_urls_use_tls() {
    let redis = RedisServer::start_with_tcp();
    let layer = RedisLayer::new(RedisConfig::single(format!(
        "rediss://127.0.0.1:{}/0",
        redis.tcp_port()
    )))
    .expect("a rediss:// URL is accepted");
    let error = layer
        .group_add("g", "specific.x!y")
        .await
        .expect_err("no TLS on this Redis");
    assert!(matches!(error, LayerError::Unavailable(_)), "{error}");
}
