//! The admin API and its client.
//!
//! `GET /_switchyard/plugins` with `Authorization: Bearer <admin.token>`
//! answers JSON: every plugin with its live version (hash, load time,
//! routes, policy), the versions still serving connections and how many,
//! and the last load error. Off unless `admin.token` is set. The
//! `switchyard plugins` subcommand prints it.
//!
//! `GET /_switchyard/layer`, with the same token, answers whether the
//! channel layer reaches its backend: `{"healthy", "shards": [{"url",
//! "receive", "refresh", "heartbeat", "processes"}]}`, each loop as
//! `{"failing", "failures", "total_failures", "last_error"}`, `processes`
//! the Switchyard processes seen alive on that host (no shards for the
//! in-memory layer).
//!
//! `POST /_switchyard/send` and `POST /_switchyard/group-send`, with the
//! same token, publish an event (see the `publish` module).
//!
//! `routes()` is every path of the admin side: the API above and health
//! (`/healthz`, `/readyz`). Without `[admin] bind` they are served on the
//! public port beside the plugins; with it, only on the admin listener, and
//! the public port answers them (and anything under `/_switchyard/`) 404
//! without ever routing them to a plugin (`hidden()`).

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use serde_json::{Value, json};
use switchyard_layer::{LayerHealth, LoopHealth};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cli::PluginsArgs;
use crate::counters::Counters;
use crate::health;
use crate::metrics;
use crate::publish;
use crate::server::{self, AppState};

/// The path of the plugin listing.
pub(crate) const PLUGINS_PATH: &str = "/_switchyard/plugins";
/// The path of the channel layer's health.
pub(crate) const LAYER_PATH: &str = "/_switchyard/layer";
/// Where every admin path lives.
const ADMIN_PREFIX: &str = "/_switchyard";

/// Every route of the admin side: the admin API and health. Served on the
/// public port, or only on the admin listener when `[admin] bind` is set;
/// a route added here goes wherever the others go.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route(health::HEALTHZ_PATH, get(health::healthz))
        .route(health::READYZ_PATH, get(health::readyz))
        .route(PLUGINS_PATH, get(plugins))
        .route(LAYER_PATH, get(layer))
        .route(publish::SEND_PATH, post(publish::send))
        .route(publish::GROUP_SEND_PATH, post(publish::group_send))
        .route(metrics::METRICS_PATH, get(metrics::scrape))
}

/// The public port's answer to the admin side's paths while an admin
/// listener serves them: 404, never a plugin.
pub(crate) fn hidden() -> Router<AppState> {
    let not_found = || async { (StatusCode::NOT_FOUND, "not found\n") };
    Router::new()
        .route(health::HEALTHZ_PATH, any(not_found))
        .route(health::READYZ_PATH, any(not_found))
        .route(ADMIN_PREFIX, any(not_found))
        .route(&format!("{ADMIN_PREFIX}/"), any(not_found))
        .route(&format!("{ADMIN_PREFIX}/{{*rest}}"), any(not_found))
}

/// Accepts on the admin listener until `stop` (when the public listener
/// closes, after the drain): through the drain it keeps answering, so
/// `/readyz` says 503 rather than refusing the connection.
///
/// # Cancel safety
/// Both branches are cancel safe: `accept` loses no connection.
pub(crate) async fn serve_listener(
    listener: TcpListener,
    app: Router,
    header_timeout: Duration,
    stop: CancellationToken,
    connections: TaskTracker,
    counters: Arc<Counters>,
) {
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let accepted = server::Accepted { local: stream.local_addr().ok(), tls: false };
                    connections.spawn(server::serve_http(
                        stream,
                        (peer, accepted),
                        app.clone(),
                        header_timeout,
                        stop.clone(),
                        Arc::clone(&counters),
                    ));
                }
                Err(error) => server::accept_failed(&error).await,
            },
        }
    }
}

/// Compare without leaking where the first difference is.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn authorized(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|given| constant_time_eq(given.trim().as_bytes(), token.as_bytes()))
}

/// The answer to an admin request that may not go on: 404 while the admin
/// API is off, 401 without the right token.
pub(crate) fn refusal(app: &AppState, headers: &HeaderMap) -> Option<Response> {
    let Some(token) = app.config.admin.token.as_deref() else {
        return Some(StatusCode::NOT_FOUND.into_response());
    };
    if !authorized(headers, token) {
        return Some(
            (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                "admin token required\n",
            )
                .into_response(),
        );
    }
    None
}

pub(crate) async fn plugins(State(app): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(refused) = refusal(&app, &headers) {
        return refused;
    }
    Json(json!({ "plugins": app.host.status() })).into_response()
}

pub(crate) async fn layer(State(app): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(refused) = refusal(&app, &headers) {
        return refused;
    }
    Json(health_json(&app.host.layer().health())).into_response()
}

/// The layer's health as the admin API shows it.
fn health_json(health: &LayerHealth) -> Value {
    let looped = |state: &LoopHealth| {
        json!({
            "failing": state.failing,
            "failures": state.failures,
            "total_failures": state.total_failures,
            "last_error": state.last_error,
        })
    };
    let shards: Vec<Value> = health
        .shards
        .iter()
        .map(|shard| {
            json!({
                "url": shard.url,
                "receive": looped(&shard.receive),
                "refresh": looped(&shard.refresh),
                "heartbeat": looped(&shard.heartbeat),
                "processes": shard.processes,
            })
        })
        .collect();
    json!({ "healthy": health.is_healthy(), "shards": shards })
}

/// `switchyard plugins`: fetch the listing and print it.
pub fn print_plugins(args: &PluginsArgs) -> anyhow::Result<()> {
    let url = format!("{}{PLUGINS_PATH}", args.url.trim_end_matches('/'));
    let mut response = ureq::get(&url)
        .header("Authorization", &format!("Bearer {}", args.token))
        .config()
        .http_status_as_error(false)
        .build()
        .call()
        .with_context(|| format!("requesting {url}"))?;
    let status = response.status();
    let body: String = response
        .body_mut()
        .read_to_string()
        .context("reading the answer")?;
    if !status.is_success() {
        bail!("{url} answered {status}: {}", body.trim());
    }
    if args.json {
        println!("{body}");
        return Ok(());
    }
    let listing: Value = serde_json::from_str(&body).context("the answer is not JSON")?;
    print!("{}", render(&listing));
    Ok(())
}

/// A plain-text table of a listing.
fn render(listing: &Value) -> String {
    let mut out = String::new();
    let empty = Vec::new();
    let plugins = listing["plugins"].as_array().unwrap_or(&empty);
    if plugins.is_empty() {
        out.push_str("no plugins\n");
    }
    for plugin in plugins {
        let name = plugin["name"].as_str().unwrap_or("?");
        let version = plugin["version"].as_str().unwrap_or("(not live)");
        let policy = plugin["on_replace"].as_str().unwrap_or("-");
        let state = plugin["state"].as_str().unwrap_or("?");
        let _ = writeln!(
            out,
            "{name}  {state}  version {version}  on-replace {policy}"
        );
        if let Some(loading) = plugin["loading"].as_object() {
            let _ = writeln!(
                out,
                "  loading  {} of {}, {:.1} s",
                loading["n"],
                loading["of"],
                loading["elapsed_ms"].as_f64().unwrap_or(0.0) / 1000.0
            );
        }
        for route in plugin["routes"].as_array().unwrap_or(&empty) {
            let _ = writeln!(out, "  route    /{}", route.as_str().unwrap_or("?"));
        }
        for route in plugin["http_routes"].as_array().unwrap_or(&empty) {
            let _ = writeln!(out, "  http     /{}", route.as_str().unwrap_or("?"));
        }
        for v in plugin["versions"].as_array().unwrap_or(&empty) {
            let _ = writeln!(
                out,
                "  version  {} {}  open connections {}{}",
                v["version"].as_str().unwrap_or("?"),
                if v["live"].as_bool() == Some(true) {
                    "live   "
                } else {
                    "retired"
                },
                v["open_connections"],
                if v["migratable"].as_bool() == Some(true) {
                    "  (migratable)"
                } else {
                    ""
                },
            );
        }
        if let Some(error) = plugin["last_error"].as_object() {
            let _ = writeln!(
                out,
                "  error    {}: {}",
                error.get("file").and_then(Value::as_str).unwrap_or("?"),
                error.get("error").and_then(Value::as_str).unwrap_or("?"),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_token_must_match_exactly() {
        let mut headers = HeaderMap::new();
        assert!(!authorized(&headers, "secret-token-123456"));
        headers.insert(
            header::AUTHORIZATION,
            "Bearer secret-token-123456".parse().expect("header"),
        );
        assert!(authorized(&headers, "secret-token-123456"));
        assert!(!authorized(&headers, "secret-token-1234567"));
        headers.insert(
            header::AUTHORIZATION,
            "Basic secret-token-123456".parse().expect("header"),
        );
        assert!(!authorized(&headers, "secret-token-123456"));
    }

    #[test]
    fn the_table_shows_versions_and_errors() {
        let listing = json!({"plugins": [{
            "name": "chat", "state": "ready", "version": "abc", "on_replace": "migrate",
            "loading": {"file": "/p/chat.wasm", "n": 1, "of": 2, "since": 0, "elapsed_ms": 1500},
            "routes": ["ws/chat/<str:room_name>/"],
            "versions": [
                {"version": "abc", "live": true, "open_connections": 2, "migratable": true},
                {"version": "old", "live": false, "open_connections": 1, "migratable": false}
            ],
            "last_error": {"file": "/p/chat.wasm", "error": "not a component", "at": 0}
        }]});
        let text = render(&listing);
        assert!(
            text.contains("chat  ready  version abc  on-replace migrate"),
            "{text}"
        );
        assert!(text.contains("loading  1 of 2, 1.5 s"), "{text}");
        assert!(text.contains("/ws/chat/<str:room_name>/"), "{text}");
        assert!(text.contains("old retired  open connections 1"), "{text}");
        assert!(
            text.contains("error    /p/chat.wasm: not a component"),
            "{text}"
        );
    }
}
