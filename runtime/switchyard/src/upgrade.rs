//! The WebSocket opening handshake (RFC 6455 §4.2) and the upgraded socket.
//!
//! The server does the handshake itself, on tokio-tungstenite, rather than
//! through axum's `WebSocketUpgrade`, so that it owns the socket's bytes:
//! - it checks the request as the RFC asks: a `Sec-WebSocket-Key` that is
//!   not a base64 16-byte nonce is 400, a `Sec-WebSocket-Version` other
//!   than 13 is 426 with `Sec-WebSocket-Version: 13`;
//! - every connection's unfinished message (the bytes read since its last
//!   complete message) counts against one server-wide budget,
//!   `websocket.max-unfinished-bytes` ([`UnfinishedBudget`]);
//! - after closing a socket for a protocol error it can drain what the
//!   client is still sending ([`drain`]), so the close frame reaches the
//!   client instead of being lost to the TCP reset that closing a socket with
//!   unread bytes causes.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use futures_util::{Sink, SinkExt as _, Stream, StreamExt as _};
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, ReadBuf};
use tokio_tungstenite::WebSocketStream;
use tungstenite::Message;
use tungstenite::handshake::derive_accept_key;
use tungstenite::protocol::{Role, WebSocketConfig};

use crate::deflate::{Agreed, Deflate, DeflateSocket};

/// An upgraded WebSocket whose reads are metered: on tungstenite, or on
/// yawc when the connection negotiated permessage-deflate (see
/// [`crate::deflate`]). Both read and take tungstenite's messages.
#[derive(Debug)]
#[allow(
    clippy::large_enum_variant,
    reason = "one per connection, in the split halves' shared allocation: boxing the \
              plain socket would cost every connection an allocation; the deflate one \
              (912 bytes) is boxed so plain connections do not carry its size"
)]
pub(crate) enum Socket {
    Plain(WebSocketStream<Metered>),
    Deflate(Box<DeflateSocket>),
}

impl Stream for Socket {
    type Item = Result<Message, tungstenite::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.get_mut() {
            Self::Plain(ws) => ws.poll_next_unpin(cx),
            Self::Deflate(ws) => ws.poll_next_unpin(cx),
        }
    }
}

impl Sink<Message> for Socket {
    type Error = tungstenite::Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        match self.get_mut() {
            Self::Plain(ws) => ws.poll_ready_unpin(cx),
            Self::Deflate(ws) => ws.poll_ready_unpin(cx),
        }
    }

    fn start_send(self: Pin<&mut Self>, item: Message) -> Result<(), Self::Error> {
        match self.get_mut() {
            Self::Plain(ws) => ws.start_send_unpin(item),
            Self::Deflate(ws) => ws.start_send_unpin(item),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        match self.get_mut() {
            Self::Plain(ws) => ws.poll_flush_unpin(cx),
            Self::Deflate(ws) => ws.poll_flush_unpin(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        match self.get_mut() {
            Self::Plain(ws) => ws.poll_close_unpin(cx),
            Self::Deflate(ws) => ws.poll_close_unpin(cx),
        }
    }
}

/// A handshake that passed the RFC's checks, waiting for the 101.
#[derive(Debug)]
pub(crate) struct Upgrade {
    accept: HeaderValue,
    on_upgrade: OnUpgrade,
}

/// Why a request is not a WebSocket handshake the server can take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum BadHandshake {
    /// No `Upgrade: websocket`: plain HTTP.
    #[error("not a WebSocket handshake")]
    NotWebSocket,
    #[error("a WebSocket handshake must be a GET with `Connection: upgrade`")]
    Malformed,
    #[error("Sec-WebSocket-Version must be 13")]
    Version,
    #[error("Sec-WebSocket-Key must be a base64-encoded 16-byte nonce")]
    Key,
    #[error("this connection cannot be upgraded")]
    NotUpgradable,
}

impl BadHandshake {
    /// The HTTP answer, with a one-line plain-text body.
    pub(crate) fn response(self) -> Response {
        let status = match self {
            Self::NotWebSocket | Self::Version => StatusCode::UPGRADE_REQUIRED,
            Self::Malformed | Self::Key | Self::NotUpgradable => StatusCode::BAD_REQUEST,
        };
        let body = format!("{self}\n");
        match self {
            // RFC 6455 §4.4: tell the client which version the server speaks.
            Self::Version => (
                status,
                [(
                    header::SEC_WEBSOCKET_VERSION,
                    HeaderValue::from_static("13"),
                )],
                body,
            )
                .into_response(),
            _ => (status, body).into_response(),
        }
    }
}

/// Whether a comma-separated header holds `token` (case-insensitive).
fn has_token(headers: &HeaderMap, name: &HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|item| item.trim().eq_ignore_ascii_case(token))
}

/// Whether a request asks for a WebSocket (`Upgrade: websocket`).
pub(crate) fn wants_websocket(headers: &HeaderMap) -> bool {
    has_token(headers, &header::UPGRADE, "websocket")
}

impl Upgrade {
    /// Check a request for a WebSocket handshake and take its upgrade.
    pub(crate) fn check(
        method: &Method,
        headers: &HeaderMap,
        on_upgrade: Option<OnUpgrade>,
    ) -> Result<Self, BadHandshake> {
        if !wants_websocket(headers) {
            return Err(BadHandshake::NotWebSocket);
        }
        if method != Method::GET || !has_token(headers, &header::CONNECTION, "upgrade") {
            return Err(BadHandshake::Malformed);
        }
        if headers
            .get(header::SEC_WEBSOCKET_VERSION)
            .is_none_or(|version| version.as_bytes() != b"13")
        {
            return Err(BadHandshake::Version);
        }
        let key = headers
            .get(header::SEC_WEBSOCKET_KEY)
            .filter(|key| is_nonce(key.as_bytes()))
            .ok_or(BadHandshake::Key)?;
        let accept = HeaderValue::from_str(&derive_accept_key(key.as_bytes()))
            .map_err(|_| BadHandshake::Key)?;
        let on_upgrade = on_upgrade.ok_or(BadHandshake::NotUpgradable)?;
        Ok(Self { accept, on_upgrade })
    }

    /// The 101 answer, with the subprotocol the consumer chose; the socket
    /// comes from [`Upgrade::socket`] once hyper has sent it.
    pub(crate) fn response(&self, subprotocol: Option<&str>) -> Response {
        let mut response = (
            StatusCode::SWITCHING_PROTOCOLS,
            [
                (header::CONNECTION, HeaderValue::from_static("upgrade")),
                (header::UPGRADE, HeaderValue::from_static("websocket")),
                (header::SEC_WEBSOCKET_ACCEPT, self.accept.clone()),
            ],
        )
            .into_response();
        if let Some(protocol) = subprotocol.and_then(|p| HeaderValue::from_str(p).ok()) {
            response
                .headers_mut()
                .insert(header::SEC_WEBSOCKET_PROTOCOL, protocol);
        }
        response
    }

    /// The WebSocket, once the 101 went out; its reads count against
    /// `budget`. With `deflate` (what the 101 agreed to), on yawc.
    pub(crate) async fn socket(
        self,
        config: WebSocketConfig,
        budget: Arc<UnfinishedBudget>,
        deflate: Option<(Arc<Deflate>, Agreed)>,
    ) -> Result<(Socket, Arc<Meter>), hyper::Error> {
        let upgraded = self.on_upgrade.await?;
        let meter = Arc::new(Meter {
            pending: AtomicUsize::new(0),
            budget,
        });
        let io = Metered {
            io: TokioIo::new(upgraded),
            meter: Arc::clone(&meter),
        };
        let socket = match deflate {
            Some((deflate, agreed)) => Socket::Deflate(Box::new(deflate.socket(io, &agreed))),
            None => Socket::Plain(
                WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await,
            ),
        };
        Ok((socket, meter))
    }
}

/// RFC 6455 §4.1: the key is a randomly selected 16-byte value, base64.
fn is_nonce(key: &[u8]) -> bool {
    key.len() == 24
        && base64::engine::general_purpose::STANDARD
            .decode(key)
            .is_ok_and(|nonce| nonce.len() == 16)
}

/// Bytes held in unfinished messages (read from a socket, not yet part of a
/// complete message) across every connection of the server.
///
/// A connection may always hold [`ALWAYS_ALLOWED`] bytes (a small message
/// and the start of the next in one read), so the total stays below the
/// budget plus that much per connection.
#[derive(Debug)]
pub(crate) struct UnfinishedBudget {
    held: AtomicUsize,
    max: usize,
}

/// What one connection may hold whatever the budget: two read buffers.
const ALWAYS_ALLOWED: usize = 8 << 10;

impl UnfinishedBudget {
    pub(crate) fn new(max: usize) -> Self {
        Self {
            held: AtomicUsize::new(0),
            max,
        }
    }

    /// Bytes held now, across the server.
    #[cfg(test)]
    fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }
}

/// One connection's share of the [`UnfinishedBudget`].
#[derive(Debug)]
pub(crate) struct Meter {
    pending: AtomicUsize,
    budget: Arc<UnfinishedBudget>,
}

impl Meter {
    /// `n` more bytes read; false when they take the server over its budget
    /// and this connection holds more than [`ALWAYS_ALLOWED`]. A refused
    /// connection's bytes are given back at once (they are thrown away), so
    /// the connections within the budget carry on.
    fn read(&self, n: usize) -> bool {
        let pending = self.pending.fetch_add(n, Ordering::Relaxed) + n;
        let held = self.budget.held.fetch_add(n, Ordering::Relaxed) + n;
        if held <= self.budget.max || pending <= ALWAYS_ALLOWED {
            return true;
        }
        self.message_done();
        false
    }

    /// A whole message arrived: what the connection held is free again
    /// (less the start of the next message if it came in the same read,
    /// which is at most one read buffer).
    pub(crate) fn message_done(&self) {
        let pending = self.pending.swap(0, Ordering::Relaxed);
        self.budget.held.fetch_sub(pending, Ordering::Relaxed);
    }
}

impl Drop for Meter {
    fn drop(&mut self) {
        self.message_done();
    }
}

/// The error a read returns when the server's unfinished-message budget is
/// spent; the socket loop closes that connection with 1013.
#[derive(Debug, thiserror::Error)]
#[error("the server's budget for unfinished messages (websocket.max-unfinished-bytes) is spent")]
pub(crate) struct OverBudget;

/// The upgraded connection, counting what it reads.
#[derive(Debug)]
pub(crate) struct Metered {
    io: TokioIo<Upgraded>,
    meter: Arc<Meter>,
}

impl Metered {
    /// A read that bypasses the meter (for [`drain`]).
    pub(crate) fn poll_read_unmetered(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncRead for Metered {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        if read > 0 && !self.meter.read(read) {
            return Poll::Ready(Err(io::Error::other(OverBudget)));
        }
        polled
    }
}

impl AsyncWrite for Metered {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// How long a draining socket may be silent before the server hangs up: a
/// client still sending a large message sends without pause, one that has
/// answered the close (and waits for the server to end the connection, as
/// RFC 6455 §7.1.1 prefers) sends nothing more.
const DRAIN_QUIET: std::time::Duration = std::time::Duration::from_millis(200);

/// After the server closed a socket for a protocol error: read and drop
/// what the client still sends until it hangs up or goes quiet (the caller
/// bounds the whole time), so the close frame is not lost to a TCP reset.
/// Bypasses the meter: these bytes are thrown away, not held.
pub(crate) async fn drain(socket: &mut Socket) {
    match socket {
        Socket::Plain(socket) => drain_from(&mut socket.get_mut().io).await,
        Socket::Deflate(socket) => drain_from(&mut socket.unmetered()).await,
    }
}

async fn drain_from(io: &mut (impl AsyncRead + Unpin)) {
    // On the heap: an array here would be part of every connection task's
    // future, 8 KiB more per idle socket for a path rarely taken.
    let mut scrap = vec![0u8; 8 << 10];
    while let Ok(Ok(n)) = tokio::time::timeout(DRAIN_QUIET, io.read(&mut scrap)).await
        && n > 0
    {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(name, value)| {
                (
                    HeaderName::from_static(name),
                    HeaderValue::from_static(value),
                )
            })
            .collect()
    }

    const GOOD: &[(&str, &str)] = &[
        ("upgrade", "websocket"),
        ("connection", "keep-alive, Upgrade"),
        ("sec-websocket-version", "13"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];

    fn refusal(pairs: &[(&'static str, &'static str)]) -> BadHandshake {
        Upgrade::check(&Method::GET, &headers(pairs), None).expect_err("refused")
    }

    #[test]
    fn the_handshake_is_checked_as_rfc_6455_asks() {
        // Everything right but hyper's upgrade handle: the checks passed.
        assert_eq!(refusal(GOOD), BadHandshake::NotUpgradable);
        assert_eq!(refusal(&GOOD[1..]), BadHandshake::NotWebSocket);
        let mut no_connection = GOOD.to_vec();
        no_connection[1] = ("connection", "keep-alive");
        assert_eq!(refusal(&no_connection), BadHandshake::Malformed);
        assert_eq!(
            Upgrade::check(&Method::POST, &headers(GOOD), None).expect_err("post"),
            BadHandshake::Malformed
        );
        for version in ["8", "", "13, 8"] {
            let mut other = GOOD.to_vec();
            other[2] = ("sec-websocket-version", version);
            assert_eq!(refusal(&other), BadHandshake::Version, "{version:?}");
        }
        assert_eq!(refusal(&GOOD[..3]), BadHandshake::Key);
        for key in [
            "abc",
            "",
            "YWJjZGVmZ2hpamtsbW5vcHFyc3Q=",
            "!!!!!!!!!!!!!!!!!!!!!!==",
        ] {
            let mut other = GOOD.to_vec();
            other[3] = ("sec-websocket-key", key);
            assert_eq!(refusal(&other), BadHandshake::Key, "{key:?}");
        }
    }

    #[test]
    fn a_version_refusal_names_the_version_spoken() {
        let response = BadHandshake::Version.response();
        assert_eq!(response.status(), StatusCode::UPGRADE_REQUIRED);
        assert_eq!(response.headers()[header::SEC_WEBSOCKET_VERSION], "13");
        assert_eq!(
            BadHandshake::Key.response().status(),
            StatusCode::BAD_REQUEST
        );
    }

    #[test]
    fn the_budget_refuses_only_connections_holding_more_than_a_little() {
        let budget = Arc::new(UnfinishedBudget::new(100 << 10));
        let meter = |budget: &Arc<UnfinishedBudget>| Meter {
            pending: AtomicUsize::new(0),
            budget: Arc::clone(budget),
        };
        let big = meter(&budget);
        let small = meter(&budget);
        assert!(big.read(99 << 10));
        assert!(small.read(4 << 10), "a small message always passes");
        assert!(!big.read(4 << 10), "over the budget and holding much");
        assert_eq!(budget.held(), 4 << 10, "the refused bytes are given back");
        assert!(small.read(90 << 10), "within the budget again");
        assert_eq!(budget.held(), 94 << 10);
        drop(small);
        assert_eq!(budget.held(), 0);
    }
}
