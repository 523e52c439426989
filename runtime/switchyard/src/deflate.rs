//! permessage-deflate (RFC 7692): the negotiation, and the socket of a
//! connection that negotiated it.
//!
//! tungstenite (the server's WebSocket stack) has no permessage-deflate: its
//! frame parser refuses a frame with RSV1 set. So a connection that
//! negotiates deflate runs on `yawc`, which implements RFC 7692 with
//! bounded inflation, behind [`DeflateSocket`]: a stream of tungstenite
//! [`Message`]s and a sink for them, so the socket loop stays one loop and
//! every other connection keeps running on tungstenite unchanged.
//!
//! Negotiation ([`Deflate::negotiate`]) takes the first
//! `permessage-deflate` offer in `Sec-WebSocket-Extensions` whose
//! parameters are all known, valid and given once, and answers with what
//! the server agrees to; an offer it cannot take is declined (the
//! connection opens without the extension, as RFC 7692 §5 allows), never
//! refused.
//! - `server_max_window_bits`: what the client offered, lowered to
//!   `websocket.deflate-server-max-window-bits`; when the client offered
//!   none, the server's own limit when below 15. An offer of 8 is declined:
//!   zlib cannot compress with a 256-byte window.
//! - `client_max_window_bits`: only when the client offered it (RFC 7692
//!   §7.1.2.2), lowered to `websocket.deflate-client-max-window-bits`.
//! - `server_no_context_takeover`: when the client asked for it or
//!   `websocket.deflate-server-no-context-takeover` is set.
//! - `client_no_context_takeover`: when
//!   `websocket.deflate-client-no-context-takeover` is set (a server may
//!   ask it of any client).

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, ready};

use axum::http::{HeaderMap, HeaderValue, header};
use bytes::Bytes;
use futures_util::{Sink, SinkExt as _, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tungstenite::error::{CapacityError, ProtocolError};
use tungstenite::protocol::CloseFrame;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Message, Utf8Bytes};
use yawc::{CompressionLevel, DeflatePool, Frame, OpCode, Options, WebSocketError};

use crate::config::WebSocketConfig;
use crate::upgrade::{Metered, OverBudget};

/// The window sizes the server takes (RFC 7692 allows 8, which zlib
/// cannot compress with).
pub(crate) const WINDOW_BITS: std::ops::RangeInclusive<u8> = 9..=15;

/// Idle deflate states kept for connections without context takeover:
/// about the messages compressed at one moment (the worker threads), not
/// the connections.
const POOL_CAPACITY: usize = 64;

/// The server's permessage-deflate settings (`[websocket]`), parsed once.
#[derive(Debug)]
pub(crate) struct Deflate {
    server_max_window_bits: u8,
    client_max_window_bits: u8,
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
    threshold: usize,
    max_message_size: usize,
    /// Shared deflate and inflate state for the directions that keep no
    /// context, so an idle connection holds none of its own.
    pool: DeflatePool,
}

/// What the server agreed to for one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Agreed {
    server_max_window_bits: Option<u8>,
    client_max_window_bits: Option<u8>,
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
}

impl Agreed {
    /// The `Sec-WebSocket-Extensions` answer.
    pub(crate) fn header_value(&self) -> String {
        let mut value = String::from("permessage-deflate");
        if self.server_no_context_takeover {
            value.push_str("; server_no_context_takeover");
        }
        if self.client_no_context_takeover {
            value.push_str("; client_no_context_takeover");
        }
        if let Some(bits) = self.server_max_window_bits {
            value.push_str(&format!("; server_max_window_bits={bits}"));
        }
        if let Some(bits) = self.client_max_window_bits {
            value.push_str(&format!("; client_max_window_bits={bits}"));
        }
        value
    }

    /// Put the answer on the 101.
    pub(crate) fn answer(&self, headers: &mut HeaderMap) {
        if let Ok(value) = HeaderValue::from_str(&self.header_value()) {
            headers.insert(header::SEC_WEBSOCKET_EXTENSIONS, value);
        }
    }
}

/// One `permessage-deflate` offer's parameters.
#[derive(Debug, Default, Clone, Copy)]
struct Offer {
    server_max_window_bits: Option<u8>,
    /// `Some(None)`: offered without a value.
    client_max_window_bits: Option<Option<u8>>,
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
}

impl Offer {
    /// The parameters of one offer; `None` for one the server must decline
    /// (an unknown parameter, a bad value, a parameter given twice).
    fn parse<'a>(params: impl Iterator<Item = &'a str>) -> Option<Self> {
        let mut offer = Self::default();
        for param in params {
            let (name, value) = match param.split_once('=') {
                Some((name, value)) => (name.trim(), Some(unquote(value.trim()))),
                None => (param.trim(), None),
            };
            match (name.to_ascii_lowercase().as_str(), value) {
                ("server_no_context_takeover", None) if !offer.server_no_context_takeover => {
                    offer.server_no_context_takeover = true;
                }
                ("client_no_context_takeover", None) if !offer.client_no_context_takeover => {
                    offer.client_no_context_takeover = true;
                }
                ("server_max_window_bits", Some(value))
                    if offer.server_max_window_bits.is_none() =>
                {
                    offer.server_max_window_bits = Some(window_bits(value)?);
                }
                ("client_max_window_bits", value) if offer.client_max_window_bits.is_none() => {
                    offer.client_max_window_bits = Some(match value {
                        Some(value) => Some(window_bits(value)?),
                        None => None,
                    });
                }
                _ => return None,
            }
        }
        Some(offer)
    }
}

/// A quoted-string value (RFC 7692 §7.1: `"10"` means 10).
fn unquote(value: &str) -> &str {
    value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value)
}

/// RFC 7692 §7.1.2: a decimal 8 to 15, no leading zero.
fn window_bits(value: &str) -> Option<u8> {
    if value.starts_with('0') || value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok().filter(|bits| (8..=15).contains(bits))
}

impl Deflate {
    /// The settings, when `websocket.permessage-deflate` is on.
    pub(crate) fn new(ws: &WebSocketConfig) -> Option<Self> {
        ws.permessage_deflate.then(|| Self {
            server_max_window_bits: ws.deflate_server_max_window_bits,
            client_max_window_bits: ws.deflate_client_max_window_bits,
            server_no_context_takeover: ws.deflate_server_no_context_takeover,
            client_no_context_takeover: ws.deflate_client_no_context_takeover,
            threshold: ws.deflate_threshold,
            max_message_size: ws.max_message_size,
            pool: DeflatePool::new(POOL_CAPACITY),
        })
    }

    /// The answer to the client's `Sec-WebSocket-Extensions`, if it offered
    /// permessage-deflate in a form the server takes.
    pub(crate) fn negotiate(&self, headers: &HeaderMap) -> Option<Agreed> {
        headers
            .get_all(header::SEC_WEBSOCKET_EXTENSIONS)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .find_map(|extension| {
                let mut parts = extension.split(';');
                let name = parts.next()?.trim();
                if !name.eq_ignore_ascii_case("permessage-deflate") {
                    return None;
                }
                self.accept(Offer::parse(parts.filter(|p| !p.trim().is_empty()))?)
            })
    }

    /// The server's answer to one valid offer, or `None` to decline it.
    fn accept(&self, offer: Offer) -> Option<Agreed> {
        let server_max_window_bits = match offer.server_max_window_bits {
            // The server's compressor cannot honour a 256-byte window.
            Some(bits) if bits < *WINDOW_BITS.start() => return None,
            Some(bits) => Some(bits.min(self.server_max_window_bits)),
            None => (self.server_max_window_bits < 15).then_some(self.server_max_window_bits),
        };
        let client_max_window_bits = match offer.client_max_window_bits {
            // Not offered: the client may use any window; the server
            // inflates with 32 KiB.
            None => None,
            Some(offered) => {
                let offered = offered.unwrap_or(15);
                (self.client_max_window_bits < offered).then_some(self.client_max_window_bits)
            }
        };
        Some(Agreed {
            server_max_window_bits,
            client_max_window_bits,
            server_no_context_takeover: offer.server_no_context_takeover
                || self.server_no_context_takeover,
            client_no_context_takeover: self.client_no_context_takeover,
        })
    }

    /// The socket of a connection that agreed to `agreed`.
    pub(crate) fn socket(&self, io: Metered, agreed: &Agreed) -> DeflateSocket {
        let over_budget = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Mutex::new(io));
        let io = BudgetIo {
            io: Arc::clone(&shared),
            over_budget: Arc::clone(&over_budget),
        };
        // yawc's limits are exclusive, tungstenite's (and the config's)
        // inclusive. Inflation stops at the limit: a small compressed frame
        // never allocates past `max-message-size`.
        let limit = self.max_message_size.saturating_add(1);
        let options = Options::default()
            .with_limits(limit, limit)
            .with_utf8()
            .with_read_buffer_capacity(crate::socket::READ_BUFFER)
            .with_write_buffer_capacity(crate::socket::WRITE_BUFFER)
            .with_compression_level(CompressionLevel::default())
            .with_compression_threshold(self.threshold)
            .with_deflate_pool(self.pool.clone());
        let extensions = agreed.header_value();
        let ws = yawc::WebSocket::from_stream_with_extensions(
            io,
            yawc::Role::Server,
            Some(&extensions),
            options,
        )
        .expect("compression is enabled in the options");
        DeflateSocket {
            ws,
            io: shared,
            over_budget,
            close_sent: false,
            ended: false,
            max_message_size: self.max_message_size,
        }
    }
}

/// The metered connection under yawc. A read over the unfinished-message
/// budget does not fail, it stalls: yawc answers a read error with a close
/// frame of its own (1011), and the socket loop closes such a connection
/// with 1013. [`DeflateSocket`] reports the refusal in the same poll.
///
/// The connection is shared with [`DeflateSocket`] (under a std mutex,
/// locked only inside a poll, never across an `.await`), so that after a
/// protocol error the socket loop can drain what the client still sends
/// ([`crate::upgrade::drain`]) while yawc keeps the connection otherwise.
#[derive(Debug)]
struct BudgetIo {
    io: SharedIo,
    over_budget: Arc<AtomicBool>,
}

/// The connection, shared by yawc's [`BudgetIo`] and [`Unmetered`].
type SharedIo = Arc<Mutex<Metered>>;

fn lock(io: &SharedIo) -> MutexGuard<'_, Metered> {
    io.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Reads from the connection under yawc, past the meter: for draining.
#[derive(Debug)]
pub(crate) struct Unmetered(SharedIo);

impl AsyncRead for Unmetered {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        lock(&self.0).poll_read_unmetered(cx, buf)
    }
}

impl AsyncRead for BudgetIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut *lock(&self.io)).poll_read(cx, buf);
        match ready!(polled) {
            Err(err) if err.get_ref().is_some_and(|inner| inner.is::<OverBudget>()) => {
                // The refused bytes are thrown away, and yawc sees nothing
                // more to read (an end of stream mid-frame would be an
                // error it answers with 1011); the socket reports it.
                buf.set_filled(before);
                self.over_budget.store(true, Ordering::Relaxed);
                Poll::Pending
            }
            other => Poll::Ready(other),
        }
    }
}

impl AsyncWrite for BudgetIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *lock(&self.io)).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *lock(&self.io)).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *lock(&self.io)).poll_shutdown(cx)
    }
}

/// A connection that negotiated permessage-deflate, speaking tungstenite's
/// [`Message`] and [`tungstenite::Error`] so the socket loop treats it as
/// any other: the errors map to the same close codes.
///
/// yawc answers a ping and a close by itself, as tungstenite does, and
/// answers a protocol error with its own close frame (1002, 1007, 1009, as
/// the socket loop would); the loop's close frame after that is dropped,
/// so the client gets one.
pub(crate) struct DeflateSocket {
    ws: yawc::WebSocket<BudgetIo>,
    io: SharedIo,
    over_budget: Arc<AtomicBool>,
    /// A close frame went out or is queued: nothing more is sent.
    close_sent: bool,
    /// The stream ended.
    ended: bool,
    /// `websocket.max-message-size`, for the 1009's error.
    max_message_size: usize,
}

impl std::fmt::Debug for DeflateSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeflateSocket")
            .field("close_sent", &self.close_sent)
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

impl DeflateSocket {
    /// The connection's reads past yawc and the meter, for
    /// [`crate::upgrade::drain`].
    pub(crate) fn unmetered(&self) -> Unmetered {
        Unmetered(Arc::clone(&self.io))
    }

    /// yawc's error as tungstenite's, for the socket loop's close codes.
    fn read_error(&mut self, err: WebSocketError) -> Option<tungstenite::Error> {
        use tungstenite::Error as E;
        // The refused read ended the stream, perhaps mid-frame (then yawc
        // reports the bytes left over as an I/O error).
        if self.over_budget.load(Ordering::Relaxed) {
            self.ended = true;
            return Some(E::Io(io::Error::other(OverBudget)));
        }
        let mapped = match err {
            WebSocketError::ConnectionClosed => {
                self.ended = true;
                return None;
            }
            WebSocketError::IoError(err) => return Some(E::Io(err)),
            // yawc does not say how large: past the limit.
            WebSocketError::FrameTooLarge => E::Capacity(CapacityError::MessageTooLong {
                size: self.max_message_size.saturating_add(1),
                max_size: self.max_message_size,
            }),
            WebSocketError::InvalidUTF8 => E::Utf8("invalid UTF-8 in a text message".into()),
            WebSocketError::ReservedBitsNotZero | WebSocketError::CompressionNotSupported => {
                E::Protocol(ProtocolError::NonZeroReservedBits)
            }
            WebSocketError::ControlFrameFragmented => {
                E::Protocol(ProtocolError::FragmentedControlFrame)
            }
            WebSocketError::PingFrameTooLarge => E::Protocol(ProtocolError::ControlFrameTooBig),
            WebSocketError::InvalidOpCode(op) => E::Protocol(ProtocolError::InvalidOpcode(op)),
            WebSocketError::InvalidCloseFrame | WebSocketError::InvalidCloseCode => {
                E::Protocol(ProtocolError::InvalidCloseSequence)
            }
            _ => E::Protocol(ProtocolError::UnexpectedContinueFrame),
        };
        // yawc queued a close frame for it.
        self.close_sent = true;
        Some(mapped)
    }
}

/// A frame yawc read, as a tungstenite message.
fn message(frame: Frame) -> Result<Message, tungstenite::Error> {
    let (opcode, _fin, payload) = frame.into_parts();
    Ok(match opcode {
        OpCode::Text => Message::Text(Utf8Bytes::try_from(payload)?),
        OpCode::Binary => Message::Binary(payload),
        OpCode::Ping => Message::Ping(payload),
        OpCode::Pong => Message::Pong(payload),
        OpCode::Close => Message::Close(close_frame(&payload)),
        // yawc reassembles fragments: never seen.
        OpCode::Continuation => {
            return Err(tungstenite::Error::Protocol(
                ProtocolError::UnexpectedContinueFrame,
            ));
        }
    })
}

/// A close frame's code and reason (already checked by yawc).
fn close_frame(payload: &Bytes) -> Option<CloseFrame> {
    let code = u16::from_be_bytes([*payload.first()?, *payload.get(1)?]);
    let reason = Utf8Bytes::try_from(payload.slice(2..)).unwrap_or_default();
    Some(CloseFrame {
        code: CloseCode::from(code),
        reason,
    })
}

/// A tungstenite message as a yawc frame.
fn frame(message: Message) -> Result<Frame, tungstenite::Error> {
    Ok(match message {
        Message::Text(text) => Frame::text(Bytes::from(text)),
        Message::Binary(bytes) => Frame::binary(bytes),
        Message::Ping(bytes) => Frame::ping(bytes),
        Message::Pong(bytes) => Frame::pong(bytes),
        Message::Close(Some(close)) => Frame::close(
            yawc::close::CloseCode::from(u16::from(close.code)),
            close.reason.as_bytes(),
        ),
        Message::Close(None) => Frame::close(yawc::close::CloseCode::Normal, []),
        Message::Frame(_) => {
            return Err(tungstenite::Error::Protocol(
                ProtocolError::UnknownDataFrameType(0),
            ));
        }
    })
}

/// yawc's write error as tungstenite's.
fn write_error(err: WebSocketError) -> tungstenite::Error {
    match err {
        WebSocketError::IoError(err) => tungstenite::Error::Io(err),
        WebSocketError::ConnectionClosed => tungstenite::Error::AlreadyClosed,
        other => tungstenite::Error::Io(io::Error::other(other)),
    }
}

impl Stream for DeflateSocket {
    type Item = Result<Message, tungstenite::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.ended {
            return Poll::Ready(None);
        }
        let polled = self.ws.poll_next_frame(cx);
        if self.over_budget.load(Ordering::Relaxed) {
            self.ended = true;
            return Poll::Ready(Some(Err(tungstenite::Error::Io(io::Error::other(
                OverBudget,
            )))));
        }
        match ready!(polled) {
            Ok(frame) => {
                if frame.opcode() == OpCode::Close {
                    // yawc queued the reply.
                    self.close_sent = true;
                }
                Poll::Ready(Some(message(frame)))
            }
            Err(err) => Poll::Ready(self.read_error(err).map(Err)),
        }
    }
}

impl Sink<Message> for DeflateSocket {
    type Error = tungstenite::Error;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.ws.poll_ready_unpin(cx).map_err(write_error)
    }

    fn start_send(mut self: Pin<&mut Self>, item: Message) -> Result<(), Self::Error> {
        if self.close_sent {
            return Err(tungstenite::Error::Protocol(
                ProtocolError::SendAfterClosing,
            ));
        }
        if item.is_close() {
            self.close_sent = true;
        }
        let frame = frame(item)?;
        self.ws.start_send_unpin(frame).map_err(write_error)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.ws.poll_flush_unpin(cx).map_err(write_error)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.ws.poll_close_unpin(cx).map_err(write_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderName;

    fn settings(server_bits: u8, client_bits: u8, server_nct: bool, client_nct: bool) -> Deflate {
        Deflate {
            server_max_window_bits: server_bits,
            client_max_window_bits: client_bits,
            server_no_context_takeover: server_nct,
            client_no_context_takeover: client_nct,
            threshold: 0,
            max_message_size: 1 << 20,
            pool: DeflatePool::new(0),
        }
    }

    fn answer(deflate: &Deflate, offers: &[&'static str]) -> Option<String> {
        let mut headers = HeaderMap::new();
        for offer in offers {
            headers.append(
                HeaderName::from_static("sec-websocket-extensions"),
                HeaderValue::from_static(offer),
            );
        }
        deflate.negotiate(&headers).map(|a| a.header_value())
    }

    #[test]
    fn the_answer_takes_only_what_the_client_offered() {
        let open = settings(15, 15, false, false);
        assert_eq!(answer(&open, &[]), None);
        assert_eq!(answer(&open, &["x-webkit-deflate-frame"]), None);
        assert_eq!(
            answer(&open, &["permessage-deflate"]).as_deref(),
            Some("permessage-deflate")
        );
        // Python websockets' default offer.
        assert_eq!(
            answer(&open, &["permessage-deflate; client_max_window_bits"]).as_deref(),
            Some("permessage-deflate")
        );
        assert_eq!(
            answer(&open, &["permessage-deflate; server_no_context_takeover"]).as_deref(),
            Some("permessage-deflate; server_no_context_takeover")
        );
        let tight = settings(10, 11, true, true);
        assert_eq!(
            answer(&tight, &["permessage-deflate; client_max_window_bits"]).as_deref(),
            Some(
                "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
                 server_max_window_bits=10; client_max_window_bits=11"
            )
        );
        // No client_max_window_bits offered: the server may not limit it.
        assert_eq!(
            answer(&tight, &["permessage-deflate; server_max_window_bits=12"]).as_deref(),
            Some(
                "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
                 server_max_window_bits=10"
            )
        );
        // Lower offers stay as offered.
        assert_eq!(
            answer(
                &tight,
                &["permessage-deflate; server_max_window_bits=9; client_max_window_bits=9"]
            )
            .as_deref(),
            Some(
                "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
                 server_max_window_bits=9"
            )
        );
    }

    #[test]
    fn offers_the_server_cannot_take_are_declined_not_refused() {
        let open = settings(15, 15, false, false);
        for bad in [
            "permessage-deflate; unknown_param",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=08",
            "permessage-deflate; server_max_window_bits=8",
            "permessage-deflate; client_max_window_bits=7",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
        ] {
            assert_eq!(answer(&open, &[bad]), None, "{bad}");
        }
        // The next acceptable offer is taken (RFC 7692 §5.1).
        assert_eq!(
            answer(
                &open,
                &["permessage-deflate; server_max_window_bits=8, permessage-deflate; server_max_window_bits=\"10\""]
            )
            .as_deref(),
            Some("permessage-deflate; server_max_window_bits=10")
        );
        assert_eq!(
            answer(
                &open,
                &["foo", "PerMessage-Deflate ; client_max_window_bits=12"]
            )
            .as_deref(),
            Some("permessage-deflate")
        );
    }
}
