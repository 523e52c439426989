//! Access control with a real client: allowed origins, JWT authentication,
//! rate limits and trusted proxy headers.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use switchyard::config::JwtKey;
use switchyard::{Config, Counters};
use switchyard_tests::{Client, TestServer, test_config};

const SECRET: &str = "a test-only secret of at least thirty-two bytes";
/// A P-256 key pair made for these tests only.
const ES256_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQga0TJv8ruqVSxpU90
BeUWSe7w/6OLieDxNkWUxWSoU0ShRANCAAQtx1BJLaXiyovoS+c2UvDE6UysjOQL
iMY4cf5Q20VFCJLNUb3Fmxoe16wa7gooNod9BmfH3BkEAHl36BtZiK6O
-----END PRIVATE KEY-----
";
const ES256_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAELcdQSS2l4sqL6EvnNlLwxOlMrIzk
C4jGOHH+UNtFRQiSzVG9xZsaHtesGu4KKDaHfQZnx9wZBAB5d+gbWYiujg==
-----END PUBLIC KEY-----
";

fn config(f: impl FnOnce(&mut Config)) -> Config {
    let mut config = test_config();
    f(&mut config);
    config
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

fn hs256(claims: &Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("encode")
}

fn es256(claims: &Value) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::ES256),
        claims,
        &EncodingKey::from_ec_pem(ES256_PRIVATE.as_bytes()).expect("test key"),
    )
    .expect("encode")
}

fn auth_config() -> Config {
    config(|c| {
        c.auth.keys = vec![
            JwtKey {
                algorithm: "HS256".into(),
                secret: Some(SECRET.into()),
                public_key: None,
                public_key_file: None,
            },
            JwtKey {
                algorithm: "ES256".into(),
                secret: None,
                public_key: Some(ES256_PUBLIC.into()),
                public_key_file: None,
            },
        ];
        c.auth.cookie = Some("token".into());
        c.auth.query_param = Some("access_token".into());
        c.auth.required_plugins = vec!["echo".into()];
        c.auth.leeway_secs = 0;
    })
}

async fn status(server: &TestServer, path: &str, headers: &[(&str, &str)]) -> u16 {
    match Client::try_connect_with_headers(server, path, headers).await {
        Ok(client) => {
            client.close().await;
            101
        }
        Err(status) => status,
    }
}

#[tokio::test]
async fn origins_are_checked_like_channels_origin_validator() {
    let server = TestServer::start_with(config(|c| {
        c.access.allowed_origins =
            Some(vec!["http://allowed.example".into(), ".trusted.org".into()]);
    }))
    .await;
    let path = "/ws/echo/";
    assert_eq!(
        status(&server, path, &[("origin", "http://allowed.example")]).await,
        101
    );
    assert_eq!(
        status(&server, path, &[("origin", "https://a.trusted.org")]).await,
        101
    );
    assert_eq!(
        status(&server, path, &[("origin", "http://evil.example")]).await,
        403
    );
    assert_eq!(
        status(&server, path, &[("origin", "https://allowed.example")]).await,
        403,
        "scheme"
    );
    assert_eq!(status(&server, path, &[]).await, 403, "no Origin header");
    assert_eq!(Counters::get(&server.counters.bad_origin), 3);
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn a_required_route_refuses_missing_bad_and_expired_tokens() {
    let server = TestServer::start_with(auth_config()).await;
    let path = "/ws/echo/";
    let good = hs256(&json!({"sub": "alice", "exp": now() + 600}), SECRET);
    let forged = hs256(
        &json!({"sub": "alice", "exp": now() + 600}),
        "another secret, also long enough",
    );
    let expired = hs256(&json!({"sub": "alice", "exp": now() - 600}), SECRET);
    let bearer = |t: &str| format!("Bearer {t}");

    assert_eq!(status(&server, path, &[]).await, 403, "missing");
    assert_eq!(
        status(&server, path, &[("authorization", &bearer(&forged))]).await,
        403,
        "bad signature"
    );
    assert_eq!(
        status(&server, path, &[("authorization", &bearer(&expired))]).await,
        403,
        "expired"
    );
    assert_eq!(
        status(&server, path, &[("authorization", "Bearer not.a.jwt")]).await,
        403,
        "garbage"
    );
    let no_exp = hs256(&json!({"sub": "alice"}), SECRET);
    assert_eq!(
        status(&server, path, &[("authorization", &bearer(&no_exp))]).await,
        403,
        "exp is required"
    );
    assert_eq!(
        status(&server, path, &[("authorization", &bearer(&good))]).await,
        101
    );
    let cookie = format!("theme=dark; token={good}");
    assert_eq!(
        status(&server, path, &[("cookie", &cookie)]).await,
        101,
        "cookie"
    );
    assert_eq!(
        status(&server, &format!("{path}?access_token={good}"), &[]).await,
        101,
        "query"
    );
    let es = es256(&json!({"sub": "bob", "exp": now() + 600}));
    assert_eq!(
        status(&server, path, &[("authorization", &bearer(&es))]).await,
        101,
        "ES256"
    );
    assert_eq!(Counters::get(&server.counters.unauthenticated), 5);
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn subject_and_claims_reach_the_scope_and_optional_routes_stay_open() {
    let server = TestServer::start_with(auth_config()).await;
    let token = es256(&json!({"sub": "bob", "exp": now() + 600, "role": "admin"}));
    let mut client = Client::try_connect_with_headers(
        &server,
        "/probe/any/me",
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await
    .expect("accepted");
    let scope = client.recv_json().await;
    assert_eq!(scope["user"], "bob");
    let claims: Value = serde_json::from_str(scope["claims"].as_str().expect("claims text"))
        .expect("claims are JSON");
    assert_eq!(claims["role"], "admin");
    assert_eq!(claims["sub"], "bob");

    // The probe does not require a token: without one, no user.
    let mut anonymous = Client::connect(&server, "/probe/any/anon").await;
    let scope = anonymous.recv_json().await;
    assert_eq!(
        (scope["user"].clone(), scope["claims"].clone()),
        (Value::Null, Value::Null)
    );
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn too_many_messages_per_second_is_closed_with_1008() {
    let server = TestServer::start_with(config(|c| {
        c.rate_limit.messages_per_second = Some(5);
        c.rate_limit.message_burst = Some(5);
    }))
    .await;
    let mut client = Client::connect(&server, "/ws/echo/").await;
    for n in 0..30 {
        client.send_text(&n.to_string()).await;
    }
    let close = loop {
        match client.next().await.expect("messages, then a close") {
            tokio_tungstenite::tungstenite::Message::Close(frame) => {
                break frame.expect("with a code");
            }
            _ => continue,
        }
    };
    assert_eq!(u16::from(close.code), 1008);
    assert!(close.reason.contains("rate limit"), "{}", close.reason);
    assert_eq!(Counters::get(&server.counters.message_rate), 1);
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn per_ip_connection_limits_are_429() {
    let server = TestServer::start_with(config(|c| {
        c.rate_limit.concurrent_connections_per_ip = Some(2);
    }))
    .await;
    let _a = Client::connect(&server, "/ws/echo/").await;
    let _b = Client::connect(&server, "/ws/echo/").await;
    assert_eq!(status(&server, "/ws/echo/", &[]).await, 429);
    server.shutdown().await.expect("clean shutdown");

    let server = TestServer::start_with(config(|c| {
        c.rate_limit.connections_per_minute_per_ip = Some(3);
    }))
    .await;
    for _ in 0..3 {
        assert_eq!(status(&server, "/ws/echo/", &[]).await, 101);
    }
    assert_eq!(status(&server, "/ws/echo/", &[]).await, 429);
    assert_eq!(Counters::get(&server.counters.ip_limited), 1);
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn forwarded_for_is_believed_only_from_trusted_proxies() {
    let forwarded = [("x-forwarded-for", "198.51.100.1, 203.0.113.7")];
    let server = TestServer::start().await;
    let mut direct = Client::try_connect_with_headers(&server, "/probe/any/x", &forwarded)
        .await
        .expect("accepted");
    let client = direct.recv_json().await["client"].clone();
    assert!(
        client.as_str().is_some_and(|c| c.starts_with("127.0.0.1:")),
        "untrusted peer's header ignored: {client}"
    );
    server.shutdown().await.expect("clean shutdown");

    let server = TestServer::start_with(config(|c| {
        c.access.trusted_proxies = vec!["127.0.0.0/8".to_owned()];
        c.rate_limit.concurrent_connections_per_ip = Some(1);
    }))
    .await;
    let mut proxied = Client::try_connect_with_headers(&server, "/probe/any/x", &forwarded)
        .await
        .expect("accepted");
    assert_eq!(proxied.recv_json().await["client"], "203.0.113.7:0");
    // Per-IP limits apply to the forwarded address, not the proxy's.
    let other = [("x-forwarded-for", "203.0.113.8")];
    let _second = Client::try_connect_with_headers(&server, "/probe/any/y", &other)
        .await
        .expect("another client behind the same proxy");
    assert_eq!(status(&server, "/probe/any/z", &forwarded).await, 429);
    server.shutdown().await.expect("clean shutdown");
}
