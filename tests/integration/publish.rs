//! Publishing from outside: `POST /_switchyard/send` and `/group-send`,
//! and the `switchyard send` / `group-send` commands, through the HTTP
//! endpoint and straight into a real Redis.

use std::process::Output;

use serde_json::{Value, json};
use switchyard_tests::http_client::{Reply, request};
use switchyard_tests::redis_support::{RedisServer, ServerProcess, refusing_port, switchyard_bin};
use switchyard_tests::{Client, TestServer, test_config};

const TOKEN: &str = "publish-test-token-0123456";

async fn server_with_token() -> TestServer {
    let mut config = test_config();
    config.admin.token = Some(TOKEN.to_owned());
    TestServer::start_with(config).await
}

async fn post(server: &TestServer, path: &str, token: &str, body: &Value) -> Reply {
    let auth = format!("Bearer {token}");
    request(
        server,
        "POST",
        path,
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        body.to_string().as_bytes(),
    )
    .await
}

/// Runs the built `switchyard` binary with `args` and no publishing
/// settings from the environment; never blocks the test's runtime.
async fn switchyard(args: &[&str]) -> Output {
    tokio::process::Command::new(switchyard_bin())
        .args(args)
        .env_remove("SWITCHYARD_URL")
        .env_remove("SWITCHYARD_ADMIN_TOKEN")
        .env_remove("REDIS_URL")
        .env_remove("SWITCHYARD_CONFIG")
        .env("NO_COLOR", "1")
        .output()
        .await
        .expect("run the switchyard binary")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test]
async fn the_endpoint_reaches_a_group_and_a_channel() {
    let server = server_with_token().await;
    let mut chat = Client::connect(&server, "/ws/chat/outside/").await;
    let event = json!({"type": "chat.message", "message": "from another service"});
    let reply = post(
        &server,
        "/_switchyard/group-send",
        TOKEN,
        &json!({"group": "chat_outside", "event": event}),
    )
    .await;
    assert_eq!(reply.status, 202, "{}", reply.body);
    assert_eq!(reply.json()["delivered"], 1, "{}", reply.body);
    // The chat plugin turns `chat.message` into `{"message": ...}`.
    assert_eq!(
        chat.recv_json().await,
        json!({"message": "from another service"})
    );

    let mut probe = Client::connect(&server, "/probe/layer/").await;
    let scope = probe.recv_json().await;
    let channel = scope["channel_name"].as_str().expect("a channel name");
    let event = json!({"type": "probe.hello", "n": 7});
    let reply = post(
        &server,
        "/_switchyard/send",
        TOKEN,
        &json!({"channel": channel, "event": event}),
    )
    .await;
    assert_eq!(reply.status, 202, "{}", reply.body);
    assert_eq!(reply.json(), json!({"sent": true}));
    assert_eq!(probe.recv_json().await, json!({"event": event}));
    chat.close().await;
    probe.close().await;
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn bad_tokens_and_bad_input_are_refused_naming_the_rule() {
    let server = server_with_token().await;
    let mut chat = Client::connect(&server, "/ws/chat/guarded/").await;
    let good = json!({"group": "chat_guarded", "event": {"type": "chat.message", "message": "no"}});
    let reply = post(
        &server,
        "/_switchyard/group-send",
        "wrong-token-wrong-token",
        &good,
    )
    .await;
    assert_eq!(reply.status, 401, "{}", reply.body);
    let reply = request(
        &server,
        "POST",
        "/_switchyard/group-send",
        &[],
        good.to_string().as_bytes(),
    )
    .await;
    assert_eq!(reply.status, 401, "{}", reply.body);

    for (body, error, words) in [
        (
            json!({"group": "chat_guarded", "event": {"message": "no type"}}),
            "invalid_event",
            "\"type\"",
        ),
        (
            json!({"group": "chat_guarded", "event": "chat.message"}),
            "invalid_event",
            "must be a JSON object",
        ),
        (
            json!({"group": "not a valid group!", "event": {"type": "chat.message"}}),
            "invalid_group_name",
            "not a valid group!",
        ),
    ] {
        let reply = post(&server, "/_switchyard/group-send", TOKEN, &body).await;
        assert_eq!(reply.status, 400, "{body}: {}", reply.body);
        let answer = reply.json();
        assert_eq!(answer["error"], error, "{answer}");
        assert!(
            answer["message"].as_str().expect("message").contains(words),
            "{answer}"
        );
    }
    let reply = post(
        &server,
        "/_switchyard/send",
        TOKEN,
        &json!({"channel": "bad channel", "event": {"type": "x"}}),
    )
    .await;
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert_eq!(
        reply.json()["error"],
        "invalid_channel_name",
        "{}",
        reply.body
    );
    let auth = format!("Bearer {TOKEN}");
    let reply = request(
        &server,
        "POST",
        "/_switchyard/send",
        &[("authorization", &auth)],
        b"{nope",
    )
    .await;
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert_eq!(reply.json()["error"], "invalid_json", "{}", reply.body);

    // Nothing refused reached the room, and the server still publishes.
    let ok = json!({"group": "chat_guarded", "event": {"type": "chat.message", "message": "yes"}});
    let reply = post(&server, "/_switchyard/group-send", TOKEN, &ok).await;
    assert_eq!(reply.status, 202, "{}", reply.body);
    chat.expect_nothing_before(&[json!({"message": "yes"})])
        .await;
    chat.close().await;
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn the_endpoint_is_off_without_an_admin_token() {
    let server = TestServer::start().await;
    let body = json!({"group": "g", "event": {"type": "t"}});
    let reply = post(&server, "/_switchyard/group-send", TOKEN, &body).await;
    assert_eq!(reply.status, 404, "{}", reply.body);
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn the_cli_publishes_through_the_endpoint_with_exit_codes() {
    let server = server_with_token().await;
    let mut chat = Client::connect(&server, "/ws/chat/cli/").await;
    let url = format!("http://{}", server.addr);
    let event = r#"{"type": "chat.message", "message": "from the shell"}"#;
    let sent = switchyard(&[
        "group-send",
        "chat_cli",
        event,
        "--url",
        &url,
        "--token",
        TOKEN,
    ])
    .await;
    assert_eq!(sent.status.code(), Some(0), "{}", stderr(&sent));
    assert_eq!(chat.recv_json().await, json!({"message": "from the shell"}));

    let refused = switchyard(&[
        "group-send",
        "chat_cli",
        event,
        "--url",
        &url,
        "--token",
        "not-the-token-at-all",
    ])
    .await;
    assert_eq!(refused.status.code(), Some(3), "{}", stderr(&refused));
    assert!(stderr(&refused).contains("401"), "{}", stderr(&refused));

    let bad_event = switchyard(&[
        "group-send",
        "chat_cli",
        r#"{"message": "no type"}"#,
        "--url",
        &url,
        "--token",
        TOKEN,
    ])
    .await;
    assert_eq!(bad_event.status.code(), Some(2), "{}", stderr(&bad_event));
    assert!(
        stderr(&bad_event).contains("\"type\""),
        "{}",
        stderr(&bad_event)
    );

    let bad_name = switchyard(&[
        "send",
        "no spaces allowed",
        r#"{"type": "x"}"#,
        "--url",
        &url,
        "--token",
        TOKEN,
    ])
    .await;
    assert_eq!(bad_name.status.code(), Some(2), "{}", stderr(&bad_name));
    assert!(stderr(&bad_name).contains("400"), "{}", stderr(&bad_name));

    let nowhere = switchyard(&["send", "x", r#"{"type": "x"}"#]).await;
    assert_eq!(nowhere.status.code(), Some(2), "{}", stderr(&nowhere));
    assert!(stderr(&nowhere).contains("--url"), "{}", stderr(&nowhere));

    // Nothing refused reached the room: the next event is the first it sees.
    let last = r#"{"type": "chat.message", "message": "last"}"#;
    let sent = switchyard(&[
        "group-send",
        "chat_cli",
        last,
        "--url",
        &url,
        "--token",
        TOKEN,
    ])
    .await;
    assert_eq!(sent.status.code(), Some(0), "{}", stderr(&sent));
    chat.expect_nothing_before(&[json!({"message": "last"})])
        .await;
    chat.close().await;
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn the_cli_publishes_straight_into_redis_with_no_server() {
    let redis = RedisServer::start();
    let server = ServerProcess::start(&redis.url());
    let mut chat = Client::connect_url(&format!("ws://{}/ws/chat/redis/", server.addr)).await;
    let mut probe = Client::connect_url(&format!("ws://{}/probe/layer/", server.addr)).await;
    let scope = probe.recv_json().await;
    let channel = scope["channel_name"]
        .as_str()
        .expect("a channel name")
        .to_owned();

    let url = redis.url();
    let event = r#"{"type": "chat.message", "message": "via redis"}"#;
    let sent = switchyard(&["group-send", "chat_redis", event, "--redis-url", &url]).await;
    assert_eq!(sent.status.code(), Some(0), "{}", stderr(&sent));
    assert_eq!(chat.recv_json().await, json!({"message": "via redis"}));

    let sent = switchyard(&[
        "send",
        &channel,
        r#"{"type": "probe.hello", "n": 1}"#,
        "--redis-url",
        &url,
    ])
    .await;
    assert_eq!(sent.status.code(), Some(0), "{}", stderr(&sent));
    assert_eq!(
        probe.recv_json().await,
        json!({"event": {"type": "probe.hello", "n": 1}})
    );

    // A config file naming Redis works the same way.
    let dir = tempfile::tempdir().expect("a temporary directory");
    let file = dir.path().join("switchyard.toml");
    std::fs::write(&file, format!("[redis]\nhosts = [{url:?}]\n")).expect("write the config");
    let file = file.to_str().expect("a UTF-8 path");
    let sent = switchyard(&[
        "group-send",
        "chat_redis",
        r#"{"type": "chat.message", "message": "via config"}"#,
        "-c",
        file,
    ])
    .await;
    assert_eq!(sent.status.code(), Some(0), "{}", stderr(&sent));
    assert_eq!(chat.recv_json().await, json!({"message": "via config"}));

    // Bad input and an unreachable Redis have their own exit codes.
    let bad = switchyard(&[
        "group-send",
        "bad group name",
        r#"{"type": "x"}"#,
        "--redis-url",
        &url,
    ])
    .await;
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));
    assert!(
        stderr(&bad).contains("invalid group name"),
        "{}",
        stderr(&bad)
    );
    let (_held, port) = refusing_port();
    let down = format!("redis://127.0.0.1:{port}/0");
    let unavailable = switchyard(&["group-send", "chat_redis", event, "--redis-url", &down]).await;
    assert_eq!(
        unavailable.status.code(),
        Some(4),
        "{}",
        stderr(&unavailable)
    );
    drop(server);
}

#[tokio::test]
async fn a_full_channel_is_429_and_its_own_exit_code() {
    let mut config = test_config();
    config.admin.token = Some(TOKEN.to_owned());
    config.layer.capacity = 1;
    // The consumer below sleeps in a call for as long as the test needs.
    config.guest.call_timeout_ms = 60_000;
    let server = TestServer::start_with(config).await;
    let mut watcher = Client::connect(&server, "/probe/layer/").await;
    watcher.recv_json().await;
    watcher
        .send_json(&json!({"cmd": "group_add", "group": "sleepers"}))
        .await;
    assert_eq!(watcher.recv_json().await, json!({"ok": true}));
    let mut sleeper = Client::connect(&server, "/probe/layer/").await;
    let scope = sleeper.recv_json().await;
    let channel = scope["channel_name"]
        .as_str()
        .expect("a channel name")
        .to_owned();
    // Busy in one call, it takes no event from its channel meanwhile.
    sleeper
        .send_json(&json!({"cmd": "sleep", "ms": 30_000, "announce": "sleepers"}))
        .await;
    assert_eq!(
        watcher.recv_json().await,
        json!({"event": {"type": "probe.sleeping"}})
    );

    let body = json!({"channel": channel, "event": {"type": "probe.hello"}});
    let first = post(&server, "/_switchyard/send", TOKEN, &body).await;
    assert_eq!(first.status, 202, "{}", first.body);
    let full = post(&server, "/_switchyard/send", TOKEN, &body).await;
    assert_eq!(full.status, 429, "{}", full.body);
    assert_eq!(full.json()["error"], "channel_full", "{}", full.body);
    assert_eq!(full.header("retry-after"), Some("1"));

    let url = format!("http://{}", server.addr);
    let cli = switchyard(&[
        "send",
        &channel,
        r#"{"type": "probe.hello"}"#,
        "--url",
        &url,
        "--token",
        TOKEN,
    ])
    .await;
    assert_eq!(cli.status.code(), Some(5), "{}", stderr(&cli));
    // Not shut down: the sleeping call would hold the drain.
    drop(server);
}
