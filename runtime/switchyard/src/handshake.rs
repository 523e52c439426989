//! Every request lands here. WebSocket handshakes are routed to a plugin,
//! whose `connect` decides the answer before the upgrade, as Daphne does:
//! no route is 404, a reject is 403, a plugin failure is 500, no free
//! instance slot is 503. Plain HTTP has no routes yet (ProtocolTypeRouter
//! keeps the two apart): a WebSocket path asked for over plain HTTP is 426,
//! anything else 404.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{WebSocketUpgrade, rejection::WebSocketUpgradeRejection};
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use percent_encoding::percent_decode_str;
use switchyard_host::{ConnectRequest, Handshake, StartError, Started};
use tokio::sync::{mpsc, oneshot};

use crate::server::AppState;
use crate::socket;

/// An HTTP answer with a one-line plain-text body.
fn plain(status: StatusCode, body: &'static str) -> Response {
    (status, body).into_response()
}

pub(crate) async fn handle(
    State(app): State<AppState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    uri: Uri,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let Ok(path) = percent_decode_str(uri.path()).decode_utf8() else {
        return plain(StatusCode::BAD_REQUEST, "path is not valid UTF-8\n");
    };
    let Some(matched) = app.host.resolve(&path) else {
        tracing::info!(path = %path, "WSREJECT 404: no route");
        return plain(StatusCode::NOT_FOUND, "no route for this path\n");
    };
    let Ok(upgrade) = upgrade else {
        return plain(
            StatusCode::UPGRADE_REQUIRED,
            "this path serves WebSocket connections only\n",
        );
    };
    let request = ConnectRequest {
        path: path.into_owned(),
        query_string: uri.query().unwrap_or_default().to_owned(),
        headers: scope_headers(&headers),
        client: Some(client.to_string()),
        subprotocols: requested_subprotocols(&headers),
        user: None,
        claims: None,
    };
    let ws = &app.config.websocket;
    let (outbound_tx, outbound_rx) = mpsc::channel(ws.outbound_queue);
    let timeout = Duration::from_secs(ws.handshake_timeout_secs);
    let started = tokio::time::timeout(
        timeout,
        app.host.start(&matched, request, outbound_tx.clone()),
    )
    .await;
    let Started {
        consumer,
        inbox,
        handshake,
    } = match started {
        Ok(Ok(started)) => started,
        Ok(Err(StartError::AtCapacity(slots))) => {
            tracing::warn!(slots, "WSREJECT 503: every instance slot is in use");
            return plain(StatusCode::SERVICE_UNAVAILABLE, "server at capacity\n");
        }
        Ok(Err(err)) => {
            tracing::error!(route = %matched.route, "WSREJECT 500: {err}");
            return plain(StatusCode::INTERNAL_SERVER_ERROR, "consumer failed\n");
        }
        Err(_elapsed) => {
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
            app.tasks.spawn(consumer.disconnect(1006));
            return plain(StatusCode::FORBIDDEN, "rejected by the consumer\n");
        }
        Handshake::Pending => {
            // `start` never returns a pending handshake; treat it as a reject.
            app.tasks.spawn(consumer.disconnect(1006));
            return plain(StatusCode::FORBIDDEN, "rejected by the consumer\n");
        }
    };
    let mut upgrade = upgrade
        .max_message_size(ws.max_message_size)
        .max_frame_size(ws.max_frame_size)
        .read_buffer_size(socket::READ_BUFFER)
        .write_buffer_size(socket::WRITE_BUFFER);
    if let Some(protocol) = subprotocol {
        upgrade = upgrade.protocols([protocol]);
    }
    let (socket_tx, socket_rx) = oneshot::channel();
    let connection = socket::Connection {
        consumer,
        inbox,
        outbound_tx,
        outbound_rx,
        shutdown: app.shutdown.clone(),
        host: Arc::clone(&app.host),
    };
    app.tasks.spawn(connection.run(socket_rx));
    upgrade
        .on_failed_upgrade(|err| tracing::info!("WebSocket upgrade failed: {err}"))
        .on_upgrade(move |socket| async move {
            // If the connection task is gone the socket just closes.
            let _ = socket_tx.send(socket);
        })
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
