//! The `http` side of the protocol router: a plain HTTP request (not a
//! WebSocket handshake) goes to the plugin whose `http-routes` match its
//! path, else to the static files under `[static] prefix`, else it is 426
//! (a WebSocket route asked for over plain HTTP) or 404.
//!
//! Before a plugin sees a request: a token where `[auth]` requires one
//! (401 when missing or invalid; HTTP has no handshake to reject with 403),
//! and the whole body, at most `http.max-body-bytes` (413 past it, read
//! from `Content-Length` before anything else) within
//! `http.body-timeout-secs` (408). The plugin's own failures: 500 on a
//! trap, 503 with `Retry-After` when no instance slot is free, 504 when no
//! response came within its call timeout. Every answer carries an
//! `x-request-id`, which the log lines of the request name too.

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt as _, Full, LengthLimitError, Limited};
use switchyard_host::{HttpCall, HttpError, Protocol, RouteMatch};

use crate::auth::AuthError;
use crate::server::AppState;

/// Seconds a client is told to wait when no instance slot is free.
const RETRY_AFTER_SECS: &str = "1";

/// An answer with a one-line plain-text body and the request id.
fn plain(status: StatusCode, body: &'static str, request_id: &str) -> Response {
    let mut response = (status, body).into_response();
    set_request_id(response.headers_mut(), request_id);
    response
}

fn set_request_id(headers: &mut HeaderMap, request_id: &str) {
    if let Ok(value) = HeaderValue::from_str(request_id) {
        headers.insert("x-request-id", value);
    }
}

/// Route a plain HTTP request whose decoded path is `path`.
pub(crate) async fn route(
    app: &AppState,
    peer: SocketAddr,
    path: &str,
    request: Request,
) -> Response {
    if let Some(matched) = app.host.resolve_http(path) {
        let plugin = app
            .metrics
            .as_ref()
            .map(|_| matched.plugin.name().to_owned());
        let response = serve(app, peer, matched, request).await;
        if let (Some(metrics), Some(plugin)) = (&app.metrics, plugin) {
            metrics.http_answered(&plugin, response.status());
        }
        return response;
    }
    if let Some(statics) = &app.statics
        && let Some(response) = statics.serve(path, request).await
    {
        return response;
    }
    if app.host.resolve(path).is_some() {
        return (
            StatusCode::UPGRADE_REQUIRED,
            "this path serves WebSocket connections only\n",
        )
            .into_response();
    }
    if let Some(response) = crate::loading::still_loading(&app.host, Protocol::Http, path) {
        return response;
    }
    tracing::info!(path, "HTTP 404: no route");
    (StatusCode::NOT_FOUND, "no route for this path\n").into_response()
}

async fn serve(
    app: &AppState,
    peer: SocketAddr,
    matched: RouteMatch,
    request: Request,
) -> Response {
    let request_id = uuid::Uuid::new_v4().simple().to_string();
    let plugin = matched.plugin.name().to_owned();
    let route = matched.route.to_string();
    let method = request.method().clone();
    tracing::Span::current()
        .record("plugin", &plugin)
        .record("route", &route)
        .record("request_id", &request_id);
    let query = request.uri().query().unwrap_or_default().to_owned();
    let identity = match app.verifier.authenticate(request.headers(), &query) {
        Ok(identity) => identity,
        Err(err) => {
            tracing::info!(plugin, route, request_id, %peer, "HTTP 401: {err}");
            return unauthorized(&request_id, "invalid token\n");
        }
    };
    if identity.is_none() && app.verifier.requires(&plugin, &route) {
        tracing::info!(plugin, route, request_id, %peer, "HTTP 401: {}", AuthError::Missing);
        return unauthorized(&request_id, "authentication required\n");
    }
    let (user, claims) = identity.map_or((None, None), |id| (id.user, Some(id.claims)));
    let limits = &app.config.http;
    let (mut parts, body) = request.into_parts();
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limits.max_body_bytes as u64) {
        return too_large(&plugin, &route, &request_id);
    }
    let timeout = Duration::from_secs(limits.body_timeout_secs);
    let collected =
        tokio::time::timeout(timeout, Limited::new(body, limits.max_body_bytes).collect()).await;
    let bytes = match collected {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(err)) if err.downcast_ref::<LengthLimitError>().is_some() => {
            return too_large(&plugin, &route, &request_id);
        }
        Ok(Err(err)) => {
            tracing::debug!(plugin, route, request_id, "request body failed: {err}");
            return plain(
                StatusCode::BAD_REQUEST,
                "request body failed\n",
                &request_id,
            );
        }
        Err(_elapsed) => {
            tracing::info!(
                plugin,
                route,
                request_id,
                "HTTP 408: body not received within {timeout:?}"
            );
            let mut response = plain(
                StatusCode::REQUEST_TIMEOUT,
                "request body too slow\n",
                &request_id,
            );
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            return response;
        }
    };
    // wasi:http needs an authority; an HTTP/1.0 request may have sent none.
    if !parts.headers.contains_key(header::HOST) {
        parts
            .headers
            .insert(header::HOST, HeaderValue::from_static("localhost"));
    }
    let call = HttpCall {
        user,
        claims,
        request_id: request_id.clone(),
    };
    let request = hyper::Request::from_parts(parts, Full::new(bytes));
    match app.host.serve_http(&matched, request, call).await {
        Ok(response) => {
            let mut response = response.map(Body::new);
            tracing::debug!(plugin, route, request_id, %method,
                status = response.status().as_u16(), "HTTP answered");
            set_request_id(response.headers_mut(), &request_id);
            response
        }
        Err(err) => failed(&err, &plugin, &route, &request_id),
    }
}

/// 413: the body is over `http.max-body-bytes`, by its `Content-Length`
/// or once read.
fn too_large(plugin: &str, route: &str, request_id: &str) -> Response {
    tracing::info!(
        plugin,
        route,
        request_id,
        "HTTP 413: body over http.max-body-bytes"
    );
    plain(
        StatusCode::PAYLOAD_TOO_LARGE,
        "request body too large\n",
        request_id,
    )
}

fn unauthorized(request_id: &str, body: &'static str) -> Response {
    let mut response = plain(StatusCode::UNAUTHORIZED, body, request_id);
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

/// The answer for a plugin that gave none.
fn failed(err: &HttpError, plugin: &str, route: &str, request_id: &str) -> Response {
    match err {
        HttpError::AtCapacity(_) => {
            tracing::warn!(plugin, route, request_id, "HTTP 503: {err}");
            let mut response = plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "no instance free, retry shortly\n",
                request_id,
            );
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(RETRY_AFTER_SECS),
            );
            response
        }
        HttpError::Failed { .. } => {
            tracing::error!(plugin, route, request_id, "HTTP 500: {err}");
            plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                "plugin failed\n",
                request_id,
            )
        }
        HttpError::Deadline { .. } => {
            tracing::error!(plugin, route, request_id, "HTTP 504: {err}");
            plain(
                StatusCode::GATEWAY_TIMEOUT,
                "plugin timed out\n",
                request_id,
            )
        }
    }
}
