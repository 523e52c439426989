//! The answer for a path whose plugin is still compiling: 503 with
//! `Retry-After`, never a hang and never a 404 that a client would take as
//! final. Plugins load in the background once the server has bound (see
//! [`crate::Server::load_in_background`]); until the initial load has
//! finished, a path that no plugin serves yet answers the same, since its
//! plugin may not have been read yet.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use switchyard_host::{PluginHost, Protocol};

/// Seconds a client is told to wait before trying again.
pub(crate) const RETRY_AFTER_SECS: u32 = 2;

/// 503 with `Retry-After` when `path` (with no live route) belongs to a
/// plugin being loaded, or the initial load is still running; `None` when
/// the path is simply not routed.
pub(crate) fn still_loading(host: &PluginHost, protocol: Protocol, path: &str) -> Option<Response> {
    let body = match host.loading_route(protocol, path) {
        Some(plugin) => format!("plugin `{plugin}` is loading, try again shortly\n"),
        None if !host.initial_load_done() => "plugins are loading, try again shortly\n".to_owned(),
        None => return None,
    };
    tracing::info!(path, "{} 503: {}", protocol.as_str(), body.trim_end());
    Some(
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, RETRY_AFTER_SECS.to_string())],
            body,
        )
            .into_response(),
    )
}
