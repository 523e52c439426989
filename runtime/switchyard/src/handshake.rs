//! Every request lands here. WebSocket handshakes are routed to a plugin,
//! whose `connect` decides the answer before the upgrade, as Daphne does:
//! no route is 404, a reject is 403 (a refusal the status the plugin
//! chose, e.g. 503 with `Retry-After`), a plugin failure is 500, no free
//! instance slot is 503.
//!
//! Before any plugin work, the server's own gates, in this order: a request
//! target longer than `websocket.max-path-bytes` is 414, headers larger
//! than `websocket.max-header-bytes` 431; `websocket.max-connections`
//! reached is 503 and a per-IP limit 429 (see `ratelimit`); then, for a
//! routed WebSocket request, a disallowed origin is 403 and a missing
//! (where required) or invalid token is 403 (see `access`, `auth`).
//!
//! A request that does not ask for a WebSocket goes to the `http` side of
//! the router (`http_consumer`), as ProtocolTypeRouter keeps the two apart;
//! the connection limits above are for sockets and do not apply to it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use hyper::upgrade::OnUpgrade;
use percent_encoding::percent_decode_str;
use switchyard_host::{
    ConnectRequest, Handshake, OutboundSender, Protocol, RouteMatch, StartError, Started,
    outbound_queue,
};
use tokio::sync::oneshot;
use tracing::Instrument as _;
use tungstenite::protocol::WebSocketConfig;

use crate::access;
use crate::auth::AuthError;
use crate::counters::Counters;
use crate::http_consumer;
use crate::loading;
use crate::ratelimit::Refusal;
use crate::server::{Accepted, AppState};
use crate::socket;
use crate::upgrade::{self, Upgrade};

/// ASGI's `http_version` for a request's version.
fn http_version(version: axum::http::Version) -> &'static str {
    match version {
        axum::http::Version::HTTP_09 => "0.9",
        axum::http::Version::HTTP_10 => "1.0",
        axum::http::Version::HTTP_2 => "2",
        axum::http::Version::HTTP_3 => "3",
        _ => "1.1",
    }
}

/// An HTTP answer with a one-line plain-text body.
fn plain(status: StatusCode, body: &'static str) -> Response {
    (status, body).into_response()
}

/// Every request not on the admin side, inside a `request` span whose
/// `plugin`, `route` and `connection` (or `request_id`) fields are filled
/// in once known, so every log line about the request, its consumer and
/// its socket names them (see `--log-format json`).
pub(crate) async fn handle(
    state: State<AppState>,
    peer: ConnectInfo<SocketAddr>,
    uri: Uri,
    headers: HeaderMap,
    request: Request,
) -> Response {
    // At error level so that no level filter (`RUST_LOG=warn`) disables
    // it: a disabled span would drop these fields from the warnings and
    // errors logged inside it.
    let span = tracing::error_span!(
        "request",
        plugin = tracing::field::Empty,
        route = tracing::field::Empty,
        connection = tracing::field::Empty,
        request_id = tracing::field::Empty,
    );
    route_request(state, peer, uri, headers, request)
        .instrument(span)
        .await
}

async fn route_request(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    uri: Uri,
    headers: HeaderMap,
    request: Request,
) -> Response {
    let metrics = app
        .metrics
        .clone()
        .filter(|_| upgrade::wants_websocket(&headers));
    let response = answer(app, peer, uri, headers, request).await;
    if let Some(metrics) = metrics {
        metrics.handshake_answered(response.status());
    }
    response
}

/// The answer to any request: a WebSocket handshake's, or the `http` side's.
async fn answer(
    app: AppState,
    peer: SocketAddr,
    uri: Uri,
    headers: HeaderMap,
    mut request: Request,
) -> Response {
    let ws = &app.config.websocket;
    let target_len = uri.path_and_query().map_or(0, |pq| pq.as_str().len());
    if target_len > ws.max_path_bytes {
        let total = Counters::bump(&app.counters.oversized_requests);
        tracing::info!(peer = %peer, bytes = target_len, total, "WSREJECT 414: path too long");
        return plain(StatusCode::URI_TOO_LONG, "request path too long\n");
    }
    let header_len = header_bytes(&headers);
    if header_len > ws.max_header_bytes {
        let total = Counters::bump(&app.counters.oversized_requests);
        tracing::info!(peer = %peer, bytes = header_len, total, "WSREJECT 431: headers too large");
        return plain(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "request headers too large\n",
        );
    }
    let Ok(path) = percent_decode_str(uri.path()).decode_utf8() else {
        return plain(StatusCode::BAD_REQUEST, "path is not valid UTF-8\n");
    };
    if !upgrade::wants_websocket(&headers) {
        return http_consumer::route(&app, peer, &path, request).await;
    }
    if app.draining.is_draining() {
        tracing::info!(peer = %peer, "WSREJECT 503: the server is shutting down");
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "1")],
            "server shutting down\n",
        )
            .into_response();
    }
    let client = access::client_addr(peer, &headers, &app.trusted_proxies);
    let ticket = match app.admission.admit(client.ip()) {
        Ok(ticket) => ticket,
        Err(Refusal::AtCapacity) => {
            let total = Counters::bump(&app.counters.at_capacity);
            tracing::warn!(
                max = app.admission.max_open(),
                total,
                "WSREJECT 503: websocket.max-connections reached"
            );
            return plain(StatusCode::SERVICE_UNAVAILABLE, "server at capacity\n");
        }
        Err(refusal @ (Refusal::TooFast | Refusal::TooMany)) => {
            let total = Counters::bump(&app.counters.ip_limited);
            let why = if refusal == Refusal::TooFast {
                "too many new connections from this address\n"
            } else {
                "too many open connections from this address\n"
            };
            tracing::info!(client = %client.ip(), total, "WSREJECT 429: {}", why.trim_end());
            return plain(StatusCode::TOO_MANY_REQUESTS, why);
        }
    };
    let Some(matched) = app.host.resolve(&path) else {
        if let Some(response) = loading::still_loading(&app.host, Protocol::Websocket, &path) {
            return response;
        }
        tracing::info!(path = %path, "WSREJECT 404: no route");
        return plain(StatusCode::NOT_FOUND, "no route for this path\n");
    };
    let on_upgrade = request.extensions_mut().remove::<OnUpgrade>();
    let upgrade = match Upgrade::check(request.method(), &headers, on_upgrade) {
        Ok(upgrade) => upgrade,
        Err(bad) => {
            let response = bad.response();
            tracing::info!(path = %path, client = %client, "WSREJECT {}: {bad}", response.status().as_u16());
            return response;
        }
    };
    let plugin = matched.plugin.name();
    let route = matched.route.to_string();
    let span = tracing::Span::current();
    span.record("plugin", plugin).record("route", &route);
    if let Some(metrics) = &app.metrics {
        metrics.handshake(plugin, &route);
    }
    if let Some(origins) = &app.origins
        && !origins.allows(access::origin_header(&headers))
    {
        let total = Counters::bump(&app.counters.bad_origin);
        tracing::info!(plugin, route, client = %client, total, "WSREJECT 403: origin not allowed");
        return plain(StatusCode::FORBIDDEN, "origin not allowed\n");
    }
    let query = uri.query().unwrap_or_default();
    let identity = match app.verifier.authenticate(&headers, query) {
        Ok(Some(identity)) => Some(identity),
        Ok(None) if app.verifier.requires(plugin, &route) => {
            let total = Counters::bump(&app.counters.unauthenticated);
            tracing::info!(plugin, route, client = %client, total, "WSREJECT 403: {}", AuthError::Missing);
            return plain(StatusCode::FORBIDDEN, "authentication required\n");
        }
        Ok(None) => None,
        Err(err) => {
            let total = Counters::bump(&app.counters.unauthenticated);
            tracing::info!(plugin, route, client = %client, total, "WSREJECT 403: {err}");
            return plain(StatusCode::FORBIDDEN, "invalid token\n");
        }
    };
    let (user, claims) = identity.map_or((None, None), |id| (id.user, Some(id.claims)));
    let accepted = request.extensions().get::<Accepted>().copied();
    let request = ConnectRequest {
        path: path.into_owned(),
        query_string: query.to_owned(),
        headers: scope_headers(&headers),
        client: Some(client.to_string()),
        subprotocols: requested_subprotocols(&headers),
        user,
        claims,
        tls: accepted.is_some_and(|accepted| accepted.tls),
        http_version: http_version(request.version()).to_owned(),
        server: accepted.and_then(|accepted| accepted.local),
    };
    let (outbound_tx, outbound_rx) = outbound_queue(ws.outbound_queue);
    let timeout = Duration::from_secs(ws.handshake_timeout_secs);
    let answer = start_consumer(&app, &matched, request, outbound_tx.clone());
    let Started {
        consumer,
        inbox,
        handshake,
    } = match tokio::time::timeout(timeout, answer).await {
        Ok(Err(_task_gone)) => {
            tracing::error!(route = %matched.route, "WSREJECT 500: the consumer's start task ended without an answer");
            return plain(StatusCode::INTERNAL_SERVER_ERROR, "consumer failed\n");
        }
        Ok(Ok(Ok(started))) => started,
        Ok(Ok(Err(StartError::AtCapacity(slots)))) => {
            let total = Counters::bump(&app.counters.at_capacity);
            tracing::warn!(slots, total, "WSREJECT 503: every instance slot is in use");
            return plain(StatusCode::SERVICE_UNAVAILABLE, "server at capacity\n");
        }
        Ok(Ok(Err(err @ StartError::PluginAtCapacity { .. }))) => {
            let total = Counters::bump(&app.counters.at_capacity);
            tracing::warn!(total, "WSREJECT 503: {err}");
            return plain(StatusCode::SERVICE_UNAVAILABLE, "plugin at capacity\n");
        }
        Ok(Ok(Err(err))) => {
            tracing::error!(route = %matched.route, "WSREJECT 500: {err}");
            return plain(StatusCode::INTERNAL_SERVER_ERROR, "consumer failed\n");
        }
        Err(_elapsed) => {
            // The start task carries on to the call's own end and then
            // disconnects the consumer (see `start_consumer`).
            tracing::warn!(
                route = %matched.route,
                "WSREJECT 403: consumer did not answer the handshake within {timeout:?}"
            );
            return plain(StatusCode::FORBIDDEN, "handshake timed out\n");
        }
    };
    let subprotocol = match handshake {
        Handshake::Accepted { subprotocol } => subprotocol,
        Handshake::Rejected { code, .. } => {
            tracing::info!(route = %matched.route, code, "WSREJECT 403: rejected by consumer");
            // As under Daphne, a rejected consumer still gets its disconnect
            // (1006: the socket never opened), and leaves its groups.
            app.tasks
                .spawn(consumer.disconnect(1006).instrument(span.clone()));
            return plain(StatusCode::FORBIDDEN, "rejected by the consumer\n");
        }
        Handshake::Refused {
            status,
            retry_after_secs,
        } => {
            tracing::info!(route = %matched.route, status, retry_after_secs, "WSREJECT {status}: refused by consumer");
            app.tasks
                .spawn(consumer.disconnect(1006).instrument(span.clone()));
            return refused(status, retry_after_secs);
        }
        Handshake::Pending => {
            // `start` never returns a pending handshake; treat it as a reject.
            app.tasks
                .spawn(consumer.disconnect(1006).instrument(span.clone()));
            return plain(StatusCode::FORBIDDEN, "rejected by the consumer\n");
        }
    };
    let mut response = upgrade.response(subprotocol.as_deref());
    let deflate = app.deflate.as_ref().and_then(|deflate| {
        let agreed = deflate.negotiate(&headers)?;
        agreed.answer(response.headers_mut());
        Some((Arc::clone(deflate), agreed))
    });
    let metrics = app
        .metrics
        .as_ref()
        .map(|metrics| metrics.connection(plugin, &route));
    let accepted = socket::Accepted {
        metrics,
        consumer,
        inbox,
        outbound_tx,
        outbound_rx,
        shutdown: app.shutdown.clone(),
        host: Arc::clone(&app.host),
        route,
        ticket,
        limits: socket::Limits::new(&app.config),
        counters: Arc::clone(&app.counters),
    };
    let config = socket_config(ws);
    let budget = Arc::clone(&app.unfinished);
    let socket = Box::pin(upgrade.socket(config, budget, deflate));
    app.tasks.spawn(accepted.run(socket).instrument(span));
    response
}

/// The answer to a handshake the consumer refused with `status` (one of
/// `REFUSAL_STATUSES`, checked by the host), with `Retry-After` on a 429
/// or 503 when the consumer gave one.
fn refused(status: u16, retry_after_secs: Option<u32>) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN);
    let mut response = (status, "refused by the consumer\n").into_response();
    if let Some(secs) = retry_after_secs
        && matches!(
            status,
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS
        )
    {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, secs.into());
    }
    response
}

/// The WebSocket's limits and buffer sizes.
fn socket_config(ws: &crate::config::WebSocketConfig) -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(ws.max_message_size))
        .max_frame_size(Some(ws.max_frame_size))
        .read_buffer_size(socket::READ_BUFFER)
        .write_buffer_size(socket::WRITE_BUFFER)
}

/// Start the consumer (instantiate, `connect`) in a task of its own that the
/// server tracks, and return where its answer will come.
///
/// A guest call dropped halfway leaves an instance wasmtime cannot enter
/// again, and hyper drops a request's future when the client goes away
/// mid-handshake. So the call never runs on the request's future: it runs
/// to its return, or to its own deadline, whatever happens to the request.
/// When nobody waits for the answer any more (the client left, or
/// `websocket.handshake-timeout-secs` passed first), the task gives the
/// consumer its `disconnect` (1006) itself, so it leaves the groups it
/// joined in `connect`, and counts it.
fn start_consumer(
    app: &AppState,
    matched: &RouteMatch,
    request: ConnectRequest,
    outbound: OutboundSender,
) -> oneshot::Receiver<Result<Started, StartError>> {
    let (answer_tx, answer_rx) = oneshot::channel();
    let host = Arc::clone(&app.host);
    let counters = Arc::clone(&app.counters);
    let matched = matched.clone();
    let span = tracing::Span::current();
    let task = async move {
        let started = host.start(&matched, request, outbound).await;
        if let Err(Ok(started)) = answer_tx.send(started) {
            let total = Counters::bump(&counters.abandoned_handshakes);
            tracing::info!(
                plugin = started.consumer.plugin(),
                route = %matched.route,
                total,
                "the handshake was abandoned while the consumer connected; disconnecting it (1006)"
            );
            started.consumer.disconnect(1006).await;
        }
    };
    app.tasks.spawn(task.instrument(span));
    answer_rx
}

/// Bytes of header names and values, as the limit counts them.
fn header_bytes(headers: &HeaderMap) -> usize {
    headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum()
}

/// Header names lower-case (as HTTP/1 parsing gives them), values decoded
/// as ISO-8859-1 so every byte survives.
fn scope_headers(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(name, value)| {
            let value: String = value.as_bytes().iter().map(|&b| char::from(b)).collect();
            (name.as_str().to_owned(), value)
        })
        .collect()
}

/// The subprotocols a client offered, in its order.
fn requested_subprotocols(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn subprotocols_keep_client_order() {
        let mut headers = HeaderMap::new();
        headers.append(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("a, b"),
        );
        headers.append(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("c"),
        );
        assert_eq!(requested_subprotocols(&headers), ["a", "b", "c"]);
    }

    #[test]
    fn header_values_survive_as_latin1() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-name",
            HeaderValue::from_bytes(b"caf\xe9").expect("obs-text is allowed"),
        );
        assert_eq!(
            scope_headers(&headers),
            [("x-name".to_owned(), "caf\u{e9}".to_owned())]
        );
    }
}
