//! The `stations` example app end to end: its JSON API with a real HTTP
//! client, its live feeds with a real WebSocket client, its dashboard page
//! at `/`, and two server processes sharing inventory and feeds on a real
//! Redis.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use switchyard::Config;
use switchyard::config::JwtKey;
use switchyard_tests::http_client::{Reply, get, post_json, request, request_at};
use switchyard_tests::redis_support::{RedisServer, ServerProcess, python};
use switchyard_tests::{Client, PATIENCE, TestServer, handshake_status, test_config};

/// The seeded stations: `(id, charged, charging, depleted, faulty)`.
const SEEDED: &[(u64, u64, u64, u64, u64)] = &[
    (1, 6, 2, 1, 1),
    (2, 4, 2, 2, 0),
    (3, 8, 1, 2, 1),
    (4, 2, 3, 2, 1),
    (5, 5, 1, 1, 1),
];

fn inventory(charged: u64, charging: u64, depleted: u64, faulty: u64) -> Value {
    json!({"charged": charged, "charging": charging, "depleted": depleted, "faulty": faulty})
}

fn post(server: &TestServer, path: &str, body: &str) -> impl Future<Output = Reply> {
    request(
        server,
        "POST",
        path,
        &[("content-type", "application/json")],
        body.as_bytes(),
    )
}

/// Asserts an error answer: its status and `error` code.
fn assert_refused(reply: &Reply, status: u16, code: &str) {
    assert_eq!(reply.status, status, "{}", reply.body);
    let body = reply.json();
    assert_eq!(body["error"], code, "{body}");
    assert!(
        body["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "{body}"
    );
}

#[tokio::test]
async fn the_api_lists_the_seeded_stations_and_reads_one() {
    let server = TestServer::start().await;
    let reply = get(&server, "/api/stations/").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let list = reply.json();
    let list = list.as_array().expect("a JSON array");
    assert_eq!(list.len(), SEEDED.len());
    for (station, &(id, charged, charging, depleted, faulty)) in list.iter().zip(SEEDED) {
        assert_eq!(station["id"], id);
        assert!(station["name"].as_str().is_some_and(|n| !n.is_empty()));
        assert!(station["location"]["address"].is_string());
        assert_eq!(
            station["inventory"],
            inventory(charged, charging, depleted, faulty)
        );
        assert_eq!(
            station["capacity"],
            charged + charging + depleted + faulty,
            "one battery per slot"
        );
        assert_eq!(station["low"], charged <= 2);
    }

    let one = get(&server, "/api/stations/3/").await;
    assert_eq!(one.status, 200);
    assert_eq!(one.json(), list[2]);
    // `int` kwargs are canonical: 003 is station 3.
    assert_eq!(get(&server, "/api/stations/003/").await.json(), list[2]);

    assert_refused(
        &get(&server, "/api/stations/99/").await,
        404,
        "unknown_station",
    );
    let reply = request(&server, "DELETE", "/api/stations/", &[], b"").await;
    assert_eq!(reply.status, 405);
    assert_eq!(reply.header("allow"), Some("GET"));
    let reply = get(&server, "/api/stations/1/swaps/").await;
    assert_eq!(reply.status, 405);
    assert_eq!(reply.header("allow"), Some("POST"));
    let reply = post_json(&server, "/api/stations/1/", &json!({})).await;
    assert_eq!(reply.status, 405);
    assert_eq!(reply.header("allow"), Some("GET"));
    let reply = post_json(&server, "/", &json!({})).await;
    assert_eq!(reply.status, 405);
    // Not an int: no route at all.
    assert_eq!(get(&server, "/api/stations/one/").await.status, 404);
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn the_dashboard_page_is_served_at_the_root() {
    let server = TestServer::start().await;
    let reply = get(&server, "/").await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert!(reply.body.contains("/ws/stations/"), "{}", reply.body);
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn a_swap_takes_a_charged_battery_out_and_a_depleted_one_in() {
    let server = TestServer::start().await;
    let reply = post_json(&server, "/api/stations/1/swaps/", &json!({})).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let station = reply.json();
    assert_eq!(station["id"], 1);
    assert_eq!(station["inventory"], inventory(5, 2, 2, 1));
    assert_eq!(station["version"], 2);

    // Naming the batteries: S1-B02 (charged) out, R-77 in, in its slot.
    let reply = post(
        &server,
        "/api/stations/1/swaps/",
        r#"{"battery_out": "S1-B02", "battery_in": "R-77"}"#,
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let station = reply.json();
    assert_eq!(station["inventory"], inventory(4, 2, 3, 1));
    let batteries = station["batteries"].as_array().expect("batteries");
    assert!(batteries.contains(&json!({"slot": 2, "id": "R-77", "state": "depleted"})));
    // An empty body is `{}`.
    let reply = post(&server, "/api/stations/1/swaps/", "").await;
    assert_eq!(reply.json()["inventory"], inventory(3, 2, 4, 1));
    assert_eq!(get(&server, "/api/stations/1/").await.json(), reply.json());

    // The errors.
    assert_refused(
        &post(
            &server,
            "/api/stations/1/swaps/",
            r#"{"battery_out": "R-77"}"#,
        )
        .await,
        409,
        "no_charged_battery",
    );
    assert_refused(
        &post(
            &server,
            "/api/stations/1/swaps/",
            r#"{"battery_in": "R-77"}"#,
        )
        .await,
        409,
        "battery_already_here",
    );
    assert_refused(
        &post(
            &server,
            "/api/stations/1/swaps/",
            r#"{"battery_out": "S9-B01"}"#,
        )
        .await,
        409,
        "battery_not_here",
    );
    for malformed in [
        "{",
        "[]",
        "42",
        r#"{"battery_out": 7}"#,
        r#"{"rider": "x"}"#,
    ] {
        let reply = post(&server, "/api/stations/1/swaps/", malformed).await;
        assert_refused(&reply, 400, "bad_request");
        assert!(
            reply.json()["detail"]
                .as_str()
                .is_some_and(|d| d.contains("malformed body"))
        );
    }
    assert_refused(
        &post(&server, "/api/stations/42/swaps/", "{}").await,
        404,
        "unknown_station",
    );
    // Station 4 has 2 charged batteries: the third swap finds none.
    for _ in 0..2 {
        assert_eq!(
            post(&server, "/api/stations/4/swaps/", "{}").await.status,
            200
        );
    }
    let reply = post(&server, "/api/stations/4/swaps/", "{}").await;
    assert_refused(&reply, 409, "no_charged_battery");
    let station = get(&server, "/api/stations/4/").await.json();
    assert_eq!(
        station["inventory"],
        inventory(0, 3, 4, 1),
        "a refusal changes nothing"
    );
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn charging_faults_and_restock_move_batteries_between_states() {
    let server = TestServer::start().await;
    let path = |action: &str| format!("/api/stations/2/{action}/");
    // Station 2: 4 charged, 2 charging, 2 depleted, 0 faulty.
    let reply = post(&server, &path("charging"), "{}").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["inventory"], inventory(4, 3, 1, 0));
    let reply = post(&server, &path("charged"), r#"{"battery": "S2-B05"}"#).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["inventory"], inventory(5, 2, 1, 0));
    assert_refused(
        &post(&server, &path("charged"), r#"{"battery": "S2-B05"}"#).await,
        409,
        "no_charging_battery",
    );

    let reply = post(&server, &path("faults"), r#"{"battery": "S2-B01"}"#).await;
    assert_eq!(reply.json()["inventory"], inventory(4, 2, 1, 1));
    let reply = post(&server, &path("faults"), r#"{"state": "depleted"}"#).await;
    assert_eq!(reply.json()["inventory"], inventory(4, 2, 0, 2));
    assert_refused(
        &post(&server, &path("faults"), r#"{"battery": "S2-B01"}"#).await,
        409,
        "already_faulty",
    );
    assert_refused(
        &post(&server, &path("faults"), r#"{"state": "depleted"}"#).await,
        409,
        "no_battery_in_state",
    );
    assert_refused(
        &post(&server, &path("faults"), "{}").await,
        400,
        "bad_request",
    );
    assert_refused(
        &post(&server, &path("faults"), r#"{"state": "melted"}"#).await,
        400,
        "bad_request",
    );

    let reply = post(&server, &path("restock"), r#"{"count": 1}"#).await;
    assert_eq!(reply.json()["inventory"], inventory(5, 2, 0, 1));
    let reply = post(&server, &path("restock"), "{}").await;
    assert_eq!(reply.json()["inventory"], inventory(6, 2, 0, 0));
    assert_refused(
        &post(&server, &path("restock"), "{}").await,
        409,
        "no_faulty_battery",
    );
    assert_refused(
        &post(&server, &path("restock"), r#"{"count": 0}"#).await,
        400,
        "bad_request",
    );
    // Charging with nothing depleted.
    assert_refused(
        &post(&server, &path("charging"), "{}").await,
        409,
        "no_depleted_battery",
    );
    for action in ["charging", "charged", "faults", "restock"] {
        assert_refused(
            &post(&server, &format!("/api/stations/77/{action}/"), "{}").await,
            404,
            "unknown_station",
        );
    }
    server.shutdown().await.expect("clean shutdown");
}

/// Many swaps at once on one station: exactly as many succeed as it had
/// charged batteries, the rest are 409, and the counts add up exactly.
#[tokio::test]
async fn concurrent_swaps_on_one_station_keep_the_counts_exact() {
    const SWAPS: usize = 40;
    let server = TestServer::start().await;
    // Station 3: 8 charged, 1 charging, 2 depleted, 1 faulty.
    let replies = futures_util::future::join_all(
        (0..SWAPS).map(|_| post(&server, "/api/stations/3/swaps/", "{}")),
    )
    .await;
    let ok: Vec<&Reply> = replies.iter().filter(|r| r.status == 200).collect();
    let conflicts = replies.iter().filter(|r| r.status == 409).count();
    assert_eq!(ok.len(), 8, "one success per charged battery");
    assert_eq!(conflicts, SWAPS - 8, "every other swap found none");
    // Each success saw a different state: the versions 2..=9, once each.
    let mut versions: Vec<u64> = ok
        .iter()
        .map(|r| r.json()["version"].as_u64().expect("version"))
        .collect();
    versions.sort_unstable();
    assert_eq!(versions, (2..=9).collect::<Vec<u64>>());
    for reply in &ok {
        let station = reply.json();
        for state in ["charged", "charging", "depleted", "faulty"] {
            assert!(station["inventory"][state].as_u64().is_some(), "{station}");
        }
    }
    let station = get(&server, "/api/stations/3/").await.json();
    assert_eq!(station["inventory"], inventory(0, 1, 10, 1));
    assert_eq!(station["version"], 9);
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn feeds_send_a_snapshot_then_each_change() {
    let server = TestServer::start().await;
    let mut all = Client::connect(&server, "/ws/stations/").await;
    let mut two = Client::connect(&server, "/ws/stations/2/").await;
    let mut three = Client::connect(&server, "/ws/stations/3/").await;

    let snapshot = all.recv_json().await;
    assert_eq!(snapshot["type"], "snapshot");
    let listed = get(&server, "/api/stations/").await.json();
    assert_eq!(snapshot["stations"], listed);
    let snapshot = two.recv_json().await;
    assert_eq!(snapshot["type"], "snapshot");
    assert_eq!(snapshot["stations"], json!([listed[1]]));
    assert_eq!(three.recv_json().await["stations"], json!([listed[2]]));

    let station = post(&server, "/api/stations/2/swaps/", "{}").await.json();
    let update = json!({"type": "update", "change": "swap", "station": station});
    assert_eq!(all.recv_json().await, update);
    assert_eq!(two.recv_json().await, update);
    let station = post(
        &server,
        "/api/stations/3/faults/",
        r#"{"state": "charged"}"#,
    )
    .await
    .json();
    let update3 = json!({"type": "update", "change": "fault", "station": station});
    assert_eq!(all.recv_json().await, update3);
    // Station 3's feed got nothing of station 2 before its own update.
    three.expect_nothing_before(&[update3]).await;

    // A refused write publishes nothing.
    let _ = post(&server, "/api/stations/2/restock/", "{}").await;
    let station = post(&server, "/api/stations/2/charged/", "{}").await.json();
    let update = json!({"type": "update", "change": "charged", "station": station});
    two.expect_nothing_before(std::slice::from_ref(&update))
        .await;

    // A feed takes no messages, and an unknown station is refused.
    two.send_text("hello").await;
    assert_eq!(two.recv_json().await["error"], "read_only");
    assert_eq!(handshake_status(&server, "/ws/stations/99/").await, 403);
    server.shutdown().await.expect("clean shutdown");
}

fn hs256(claims: &Value) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(b"a stations test secret, thirty-two bytes or more"),
    )
    .expect("encode")
}

/// With `[auth]` and the write routes in `required-routes` (as the README
/// says), writes need a token with `"operator": true`; reads stay open.
#[tokio::test]
async fn writes_need_an_operator_token_when_auth_is_configured() {
    let mut config = test_config();
    config.auth.keys = vec![JwtKey {
        algorithm: "HS256".into(),
        secret: Some("a stations test secret, thirty-two bytes or more".into()),
        public_key: None,
        public_key_file: None,
    }];
    config.auth.required_routes = ["swaps", "charging", "charged", "faults", "restock"]
        .iter()
        .map(|action| format!("api/stations/<int:station_id>/{action}/"))
        .collect();
    let server = TestServer::start_with(config).await;
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
        + 600;
    let rider = format!("Bearer {}", hs256(&json!({"sub": "rider", "exp": exp})));
    let operator = format!(
        "Bearer {}",
        hs256(&json!({"sub": "op", "exp": exp, "operator": true}))
    );

    assert_eq!(get(&server, "/api/stations/").await.status, 200);
    assert_eq!(get(&server, "/api/stations/1/").await.status, 200);
    let reply = post(&server, "/api/stations/1/swaps/", "{}").await;
    assert_eq!(reply.status, 401);
    let reply = request(
        &server,
        "POST",
        "/api/stations/1/swaps/",
        &[("authorization", &rider)],
        b"{}",
    )
    .await;
    assert_refused(&reply, 403, "operator_required");
    let reply = request(
        &server,
        "POST",
        "/api/stations/1/swaps/",
        &[("authorization", &operator)],
        b"{}",
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["inventory"], inventory(5, 2, 2, 1));
    server.shutdown().await.expect("clean shutdown");
}

/// Two processes on one Redis: one inventory, and a change recorded on
/// either reaches the feeds of both; concurrent swaps spread over both
/// still add up exactly.
#[tokio::test]
async fn two_processes_on_one_redis_share_inventory_and_feeds() {
    let redis = RedisServer::start();
    let here = TestServer::start_with(Config {
        redis_url: Some(redis.url()),
        ..test_config()
    })
    .await;
    let there = ServerProcess::start(&redis.url());

    let mut feed_here = Client::connect(&here, "/ws/stations/").await;
    let mut feed_there = Client::connect_url(&format!("ws://{}/ws/stations/5/", there.addr)).await;
    let snapshot = feed_here.recv_json().await;
    assert_eq!(snapshot["stations"][4]["inventory"], inventory(5, 1, 1, 1));
    let snapshot = feed_there.recv_json().await;
    assert_eq!(snapshot["stations"][0]["inventory"], inventory(5, 1, 1, 1));

    let swapped = request_at(there.addr, "POST", "/api/stations/5/swaps/", &[], b"{}").await;
    assert_eq!(swapped.status, 200, "{}", swapped.body);
    let station = swapped.json();
    assert_eq!(station["inventory"], inventory(4, 1, 2, 1));
    let update = json!({"type": "update", "change": "swap", "station": station});
    assert_eq!(
        feed_here.recv_json().await,
        update,
        "there's swap, here's feed"
    );
    assert_eq!(feed_there.recv_json().await, update);
    assert_eq!(get(&here, "/api/stations/5/").await.json(), station);

    // Swaps from both processes at once: station 5 has 4 charged left.
    let replies = futures_util::future::join_all((0..20).map(|i| {
        let addr = if i % 2 == 0 { here.addr } else { there.addr };
        request_at(addr, "POST", "/api/stations/5/swaps/", &[], b"{}")
    }))
    .await;
    assert_eq!(replies.iter().filter(|r| r.status == 200).count(), 4);
    assert_eq!(replies.iter().filter(|r| r.status == 409).count(), 16);
    let station = request_at(there.addr, "GET", "/api/stations/5/", &[], b"")
        .await
        .json();
    assert_eq!(station["inventory"], inventory(0, 1, 6, 1));
    // The feed over there saw each of the four changes once.
    let mut versions = Vec::new();
    for _ in 0..4 {
        let update = feed_there.recv_json().await;
        versions.push(update["station"]["version"].as_u64().expect("version"));
    }
    versions.sort_unstable();
    assert_eq!(versions, [3, 4, 5, 6]);
    here.shutdown().await.expect("clean shutdown");
}

/// `python manage.py ARGS` in the Django project of `examples/`, on `redis`.
fn django(redis: &RedisServer, args: &[&str]) -> tokio::process::Command {
    let project =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/django_stations");
    let mut command = tokio::process::Command::new(python());
    command
        .arg("manage.py")
        .args(args)
        .current_dir(project)
        .env("REDIS_URL", redis.url())
        .kill_on_drop(true);
    command
}

/// The Django project of `examples/django_stations` (Django, Channels and
/// channels_redis from PyPI) and Switchyard on one Redis: a swap the Django
/// view records (and publishes with `group_send("station_3", ...)`) shows
/// on Switchyard's feed, and a swap Switchyard records reaches the Django
/// consumer subscribed to the same group.
#[tokio::test]
async fn django_and_switchyard_share_stations_both_ways() {
    let redis = RedisServer::start();
    let server = TestServer::start_with(Config {
        redis_url: Some(redis.url()),
        ..test_config()
    })
    .await;
    let mut feed = Client::connect(&server, "/ws/stations/3/").await;
    let snapshot = feed.recv_json().await;
    assert_eq!(snapshot["stations"][0]["inventory"], inventory(8, 1, 2, 1));

    // Django to Switchyard.
    let output = django(&redis, &["record_swap", "3"])
        .output()
        .await
        .expect("run manage.py record_swap");
    assert!(
        output.status.success(),
        "manage.py record_swap failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let station: Value = serde_json::from_slice(&output.stdout).expect("the view's JSON");
    assert_eq!(station["inventory"], inventory(7, 1, 3, 1));
    assert_eq!(station["version"], 2);
    let update = feed.recv_json().await;
    assert_eq!(
        update,
        json!({"type": "update", "change": "swap", "station": station})
    );
    assert_eq!(get(&server, "/api/stations/3/").await.json(), station);

    // Switchyard to Django.
    let mut watcher = django(&redis, &["watch_station", "3", "1"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run manage.py watch_station");
    let stdout = watcher.stdout.take().expect("piped stdout");
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
    let mut next = async || -> Value {
        let line = tokio::time::timeout(PATIENCE * 6, lines.next_line())
            .await
            .expect("the Django consumer says something")
            .expect("read its output")
            .expect("manage.py watch_station ended early (its stderr is above)");
        serde_json::from_str(&line).unwrap_or_else(|err| panic!("it printed {line:?}: {err}"))
    };
    // Its snapshot comes after it joined the group.
    let snapshot = next().await;
    assert_eq!(snapshot, json!({"type": "snapshot", "stations": [station]}));
    let swapped = post(&server, "/api/stations/3/swaps/", "{}").await.json();
    assert_eq!(swapped["inventory"], inventory(6, 1, 4, 1));
    assert_eq!(
        next().await,
        json!({"type": "update", "change": "swap", "station": swapped})
    );
    let status = watcher.wait().await.expect("watch_station's status");
    assert!(status.success(), "watch_station failed: {status}");
    server.shutdown().await.expect("clean shutdown");
}
