//! [`Socket`]: what a handler can do with its connection (Channels'
//! `self.accept()`, `self.send()`, `self.close()`, `self.channel_name`), and
//! [`ChannelLayer`]: the channel-layer helpers (Channels'
//! `self.channel_layer`).

use std::fmt;

use serde::Serialize;

use crate::bindings::switchyard::consumer::host;
use crate::bindings::switchyard::consumer::types::LayerError as RawLayerError;
use crate::{Frame, log};

/// The connection a handler is called for. Handed to every handler; it is
/// valid for the length of the call only.
pub struct Socket<'a> {
    conn: &'a host::Connection,
}

impl fmt::Debug for Socket<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Socket").field("id", &self.id()).finish()
    }
}

impl<'a> Socket<'a> {
    pub(crate) fn new(conn: &'a host::Connection) -> Self {
        Self { conn }
    }

    /// A number that identifies the connection within the server process.
    /// The SDK already keeps each connection's state apart; this is for
    /// logs.
    pub fn id(&self) -> u64 {
        self.conn.id()
    }

    /// The connection's channel name on the layer (Channels'
    /// `self.channel_name`): [`ChannelLayer::send`] to it reaches this
    /// connection's event handlers from anywhere.
    pub fn channel_name(&self) -> String {
        self.conn.channel_name()
    }

    /// Accept the handshake without a subprotocol (Channels'
    /// `self.accept()`). Only meaningful in `connect`.
    pub fn accept(&self) {
        self.conn.accept(None);
    }

    /// Accept the handshake choosing `subprotocol`, one the client offered
    /// (`scope.subprotocols`).
    pub fn accept_subprotocol(&self, subprotocol: &str) {
        self.conn.accept(Some(subprotocol));
    }

    /// Send a frame. Sending before `accept` traps (a plugin error);
    /// sending after `close` does nothing.
    pub fn send(&self, frame: &Frame) {
        self.conn.send(frame);
    }

    /// Send a text frame (Channels' `self.send(text_data=...)`).
    pub fn send_text(&self, text: &str) {
        self.conn.send(&Frame::Text(text.to_owned()));
    }

    /// Send a binary frame (Channels' `self.send(bytes_data=...)`).
    pub fn send_bytes(&self, bytes: &[u8]) {
        self.conn.send(&Frame::Binary(bytes.to_vec()));
    }

    /// Send `content` as JSON in a text frame (Channels'
    /// `self.send_json(content)`). A value that cannot be serialized (a
    /// map with non-string keys) is logged and not sent.
    pub fn send_json<T: Serialize + ?Sized>(&self, content: &T) {
        match serde_json::to_string(content) {
            Ok(text) => self.conn.send(&Frame::Text(text)),
            Err(err) => log::error(&format!("send_json: cannot serialize the frame: {err}")),
        }
    }

    /// Close the connection with `code` (1000, or 3000-4999) and an
    /// optional reason (Channels' `self.close(code)`). Before `accept` this
    /// rejects the handshake with HTTP 403.
    pub fn close(&self, code: u16, reason: Option<&str>) {
        self.conn.close(code, reason);
    }

    /// Refuse the handshake with an HTTP status (400, 401, 403, 404, 429,
    /// 500 or 503; another traps), e.g. 503 with `Retry-After` while
    /// something the consumer needs is down. Only meaningful in `connect`.
    pub fn refuse(&self, status: u16, retry_after_secs: Option<u32>) {
        self.conn.refuse(status, retry_after_secs);
    }

    /// The channel layer, as seen from this connection (Channels'
    /// `self.channel_layer`).
    pub fn channel_layer(&self) -> ChannelLayer<'a> {
        ChannelLayer { conn: self.conn }
    }
}

/// The channel layer as seen from one connection. Group membership is the
/// connection's own (Channels passes `self.channel_name`; here it is
/// implied); the host leaves every group of a connection when it closes.
pub struct ChannelLayer<'a> {
    conn: &'a host::Connection,
}

impl fmt::Debug for ChannelLayer<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChannelLayer")
            .field("connection", &self.conn.id())
            .finish()
    }
}

impl ChannelLayer<'_> {
    /// Add this connection to `group` (Channels' `group_add`).
    pub fn group_add(&self, group: &str) -> Result<(), LayerError> {
        self.conn.group_add(group).map_err(LayerError::from)
    }

    /// Remove this connection from `group` (Channels' `group_discard`);
    /// leaving a group one is not in is not an error.
    pub fn group_discard(&self, group: &str) -> Result<(), LayerError> {
        self.conn.group_discard(group).map_err(LayerError::from)
    }

    /// Send `event` to every member of `group` (Channels' `group_send`).
    /// `event` must serialize to a JSON object with a string `type`, e.g.
    /// `json!({"type": "chat.message", "message": m})`; each member's
    /// handler for that type (here `chat_message`) gets it.
    pub fn group_send<T: Serialize + ?Sized>(
        &self,
        group: &str,
        event: &T,
    ) -> Result<(), LayerError> {
        host::group_send(group, &event_text(event)?).map_err(LayerError::from)
    }

    /// Host-side broadcast (`group-send-frame`): every Switchyard member of
    /// `group` receives `frame` on its socket straight from the host, with
    /// no call to its consumer; members that need the event (Django
    /// consumers on a shared Redis layer, HTTP request channels) get `event`
    /// as from [`ChannelLayer::group_send`]. Use it when `frame` is exactly
    /// what each member's handler would send for `event`.
    pub fn group_send_frame<T: Serialize + ?Sized>(
        &self,
        group: &str,
        event: &T,
        frame: &Frame,
    ) -> Result<(), LayerError> {
        host::group_send_frame(group, &event_text(event)?, frame).map_err(LayerError::from)
    }

    /// Send `event` to one channel (Channels' `channel_layer.send`), e.g.
    /// another connection's [`Socket::channel_name`].
    pub fn send<T: Serialize + ?Sized>(&self, channel: &str, event: &T) -> Result<(), LayerError> {
        host::channel_send(channel, &event_text(event)?).map_err(LayerError::from)
    }

    /// [`ChannelLayer::send`] under the name of the host function.
    pub fn channel_send<T: Serialize + ?Sized>(
        &self,
        channel: &str,
        event: &T,
    ) -> Result<(), LayerError> {
        self.send(channel, event)
    }
}

/// An event as the text the host takes.
fn event_text<T: Serialize + ?Sized>(event: &T) -> Result<String, LayerError> {
    serde_json::to_string(event)
        .map_err(|err| LayerError::InvalidEvent(format!("cannot serialize the event: {err}")))
}

/// Why a channel-layer operation failed; the operation did nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayerError {
    /// The destination channel is at capacity (Channels' `ChannelFull`).
    ChannelFull,
    /// A channel or group name breaks the Channels naming rules.
    InvalidName(String),
    /// The event is not a JSON object with a string `type`, or too large.
    InvalidEvent(String),
    /// The layer cannot be reached now (e.g. Redis is down); retrying
    /// later may succeed.
    Unavailable(String),
    /// Any other failure (the WIT's catch-all `other`, where kinds of
    /// failure a later host knows go): the operation failed for a reason
    /// the consumer cannot act on.
    Other(String),
}

impl From<RawLayerError> for LayerError {
    fn from(err: RawLayerError) -> Self {
        match err {
            RawLayerError::ChannelFull => Self::ChannelFull,
            RawLayerError::InvalidName(why) => Self::InvalidName(why),
            RawLayerError::InvalidEvent(why) => Self::InvalidEvent(why),
            RawLayerError::Unavailable(why) => Self::Unavailable(why),
            RawLayerError::Other(why) => Self::Other(why),
        }
    }
}

impl fmt::Display for LayerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ChannelFull => f.write_str("channel full"),
            Self::InvalidName(why) => write!(f, "invalid name: {why}"),
            Self::InvalidEvent(why) => write!(f, "invalid event: {why}"),
            Self::Unavailable(why) => write!(f, "channel layer unavailable: {why}"),
            Self::Other(why) => write!(f, "channel layer error: {why}"),
        }
    }
}

impl std::error::Error for LayerError {}
