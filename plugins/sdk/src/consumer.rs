//! The consumer traits a plugin implements: [`WebsocketConsumer`] (frames),
//! [`JsonWebsocketConsumer`] (JSON text frames), and [`MigrationState`] for
//! consumers whose connections move to a new version on hot swap.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::{Frame, Scope, Socket, log};

/// A WebSocket consumer, as Channels' `WebsocketConsumer`.
///
/// The implementing type is the state of one connection: the SDK makes one
/// with `Default` when a client connects, hands it (`&mut self`) to every
/// handler of that connection, and drops it after `disconnect`. This holds
/// in both instance modes (`per-connection` and `shared`), so a consumer
/// never keys maps by connection id.
///
/// Channel-layer events are dispatched by their `type` to the handlers
/// named in [`crate::export!`] (`chat.message` → `chat_message`); an event
/// with no handler goes to [`WebsocketConsumer::no_handler`].
pub trait WebsocketConsumer: Default + 'static {
    /// A client asks to connect. The default accepts without a
    /// subprotocol; call [`Socket::close`] (HTTP 403) or [`Socket::refuse`]
    /// to turn the client away. Returning without either accepting or
    /// closing also rejects (403).
    fn connect(&mut self, socket: &Socket<'_>, scope: &Scope) {
        let _ = scope;
        socket.accept();
    }

    /// The client sent a frame. The default ignores it.
    fn receive(&mut self, socket: &Socket<'_>, frame: Frame) {
        let _ = (socket, frame);
    }

    /// The connection closed with `code` (by the client, the plugin or the
    /// server). The last call for this connection; the host leaves its
    /// groups afterwards. The default does nothing.
    fn disconnect(&mut self, socket: &Socket<'_>, code: u16) {
        let _ = (socket, code);
    }

    /// A channel-layer event whose `type` has no handler. Channels raises
    /// `ValueError("No handler for message type ...")`, which kills the
    /// consumer; the default here logs a warning and keeps the connection.
    fn no_handler(&mut self, socket: &Socket<'_>, event: Value) {
        let _ = socket;
        let kind = event.get("type").and_then(Value::as_str).unwrap_or("");
        log::warn(&format!("No handler for message type {kind}"));
    }
}

/// A consumer that speaks JSON in text frames, as Channels'
/// `JsonWebsocketConsumer`: each text frame is decoded and handed to
/// [`receive_json`](JsonWebsocketConsumer::receive_json); send with
/// [`Socket::send_json`].
///
/// Every `JsonWebsocketConsumer` is a [`WebsocketConsumer`] (a blanket
/// implementation forwards to these handlers).
pub trait JsonWebsocketConsumer: Default + 'static {
    /// As [`WebsocketConsumer::connect`]: the default accepts.
    fn connect(&mut self, socket: &Socket<'_>, scope: &Scope) {
        let _ = scope;
        socket.accept();
    }

    /// The client sent a text frame holding this JSON value.
    fn receive_json(&mut self, socket: &Socket<'_>, content: Value);

    /// The client sent a text frame that is not JSON. Where Channels
    /// raises (and the connection dies), the default answers
    /// `{"error": "invalid_json", "detail": <serde_json's message>}` and
    /// keeps the connection open.
    fn invalid_json(&mut self, socket: &Socket<'_>, error: &serde_json::Error) {
        socket.send_json(&json!({"error": "invalid_json", "detail": error.to_string()}));
    }

    /// The client sent a binary frame. The default answers
    /// `{"error": "binary_not_supported", "detail": "only text frames are
    /// accepted"}` and keeps the connection open.
    fn receive_bytes(&mut self, socket: &Socket<'_>, bytes: Vec<u8>) {
        let _ = bytes;
        socket.send_json(
            &json!({"error": "binary_not_supported", "detail": "only text frames are accepted"}),
        );
    }

    /// As [`WebsocketConsumer::disconnect`].
    fn disconnect(&mut self, socket: &Socket<'_>, code: u16) {
        let _ = (socket, code);
    }
}

impl<T: JsonWebsocketConsumer> WebsocketConsumer for T {
    fn connect(&mut self, socket: &Socket<'_>, scope: &Scope) {
        JsonWebsocketConsumer::connect(self, socket, scope);
    }

    fn receive(&mut self, socket: &Socket<'_>, frame: Frame) {
        match frame {
            Frame::Text(text) => match serde_json::from_str(&text) {
                Ok(content) => self.receive_json(socket, content),
                Err(err) => self.invalid_json(socket, &err),
            },
            Frame::Binary(bytes) => self.receive_bytes(socket, bytes),
        }
    }

    fn disconnect(&mut self, socket: &Socket<'_>, code: u16) {
        JsonWebsocketConsumer::disconnect(self, socket, code);
    }
}

/// A consumer whose per-connection state moves to the next version of the
/// plugin on hot swap (`on-replace = "migrate"`). Derive `Serialize` and
/// `Deserialize` on the consumer and implement this trait (often empty),
/// then register with `export!(Type, ..., migrate)`.
///
/// The SDK writes the state as JSON in an envelope that carries
/// [`STATE_VERSION`](MigrationState::STATE_VERSION); a new version reading
/// an older one's state gets it through
/// [`upgrade`](MigrationState::upgrade). Fields marked `#[serde(skip)]`
/// start from their `Default` in the new version.
pub trait MigrationState: Serialize + DeserializeOwned {
    /// The version of the state's shape. Bump it when the fields change in
    /// a way the previous version's JSON does not deserialize into, and
    /// read the old shape in [`upgrade`](MigrationState::upgrade).
    const STATE_VERSION: u32 = 1;

    /// Make the state from an older (or newer) version's, `state` being
    /// its JSON. The default refuses, which keeps the connection on the old
    /// version (the host logs the message).
    fn upgrade(version: u32, state: Value) -> Result<Self, String> {
        let _ = state;
        Err(format!(
            "state version {version} cannot be read by this version (it reads version {})",
            Self::STATE_VERSION
        ))
    }

    /// Called on the old version just before its state is serialized.
    /// The default does nothing. A panic here closes the connection (1011).
    fn before_snapshot(&mut self) {}
}
