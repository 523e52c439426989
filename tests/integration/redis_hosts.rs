//! `[redis] hosts` entries other than a URL, against real `redis-server`s:
//! a table's options reach Redis (`password`, `db`), and a `[host, port]`
//! pair is a host like any other.

use switchyard_layer::HostEntry;
use switchyard_layer::redis::hosts::ConnectionOptions;
use switchyard_tests::redis_support::RedisServer;
use switchyard_tests::{Client, TestServer, test_config};

/// Whether `key` exists in database `db` of the server on `port`.
async fn exists(port: u16, password: Option<&str>, db: i64, key: &str) -> bool {
    let auth = password.map(|pw| format!(":{pw}@")).unwrap_or_default();
    let client = redis::Client::open(format!("redis://{auth}127.0.0.1:{port}/{db}")).expect("URL");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    redis::cmd("EXISTS")
        .arg(key)
        .query_async::<bool>(&mut conn)
        .await
        .expect("EXISTS")
}

/// A table entry with `address`, `password` and `db`: the server
/// authenticates (the Redis requires a password) and writes to that
/// database. Without the options the chat join would fail (NOAUTH) and the
/// handshake would be refused.
#[tokio::test]
async fn a_table_entrys_password_and_db_reach_redis() {
    let redis = RedisServer::start_with_tcp_args(&["--requirepass", "s3cret"]);
    let port = redis.tcp_port();
    let mut config = test_config();
    config.redis.hosts = vec![HostEntry::Address {
        url: format!("redis://127.0.0.1:{port}"),
        options: ConnectionOptions {
            db: Some(3),
            password: Some("s3cret".into()),
            ..ConnectionOptions::default()
        },
    }];
    let server = TestServer::start_with(config).await;
    let mut a = Client::connect(&server, "/ws/chat/tables/").await;
    let mut b = Client::connect(&server, "/ws/chat/tables/").await;
    let key = "asgi:group:chat_tables";
    assert!(exists(port, Some("s3cret"), 3, key).await, "group in db 3");
    assert!(!exists(port, Some("s3cret"), 0, key).await, "not in db 0");
    a.send_text(r#"{"message": "hi"}"#).await;
    assert_eq!(b.recv_json().await["message"], "hi");
    server.shutdown().await.expect("clean shutdown");
}

/// A `["127.0.0.1", port]` pair is a host: the chat group lives there.
#[tokio::test]
async fn a_host_port_pair_is_a_host() {
    let redis = RedisServer::start_with_tcp();
    let port = redis.tcp_port();
    let mut config = test_config();
    config.redis.hosts = vec![HostEntry::Tcp {
        host: "127.0.0.1".into(),
        port,
        options: ConnectionOptions::default(),
    }];
    let server = TestServer::start_with(config).await;
    let _member = Client::connect(&server, "/ws/chat/pairs/").await;
    assert!(exists(port, None, 0, "asgi:group:chat_pairs").await);
    server.shutdown().await.expect("clean shutdown");
}
