//! The chat consumer of the Django Channels tutorial, as a component.
//!
//! Route: `ws/chat/<str:room_name>/`. A connection joins the group
//! `chat_<room_name>` and is accepted without a subprotocol. If the room name
//! cannot be part of a group name the handshake is rejected (HTTP 403) with
//! close code 4400; if the channel layer is unavailable (Redis is down) it is
//! refused with HTTP 503 and `Retry-After: 5`, so clients and balancers try
//! again later.
//!
//! Wire protocol, as the tutorial's `ChatConsumer`:
//!
//! * client → server: a text frame `{"message": m}`, `m` any JSON value, is
//!   sent to the room's group as the event `{"type": "chat.message",
//!   "message": m}`;
//! * server → client: each `chat.message` event of the group (including the
//!   sender's own) arrives as the text frame `{"message": m}`.
//!
//! Where the tutorial's consumer would crash on bad input, this one answers
//! with an error frame `{"error": code, "detail": text}` and keeps the
//! connection open:
//!
//! | input                                       | `error`                |
//! | ------------------------------------------- | ---------------------- |
//! | a text frame that is not JSON               | `invalid_json`         |
//! | JSON that is not an object with `message`   | `missing_message`      |
//! | a binary frame                              | `binary_not_supported` |
//! | a message the channel layer refused         | `group_send_failed`    |
//!
//! Channel-layer events of other types are logged and ignored.
//!
//! Written with the Rust SDK (`switchyard-sdk`, see docs/plugins.md): the
//! consumer is a `JsonWebsocketConsumer` whose value is one connection's
//! state (its group), kept by the SDK in both the `per-connection` and the
//! `shared` instance modes.
//!
//! Host-side broadcast: a client's message goes to the room with
//! `group_send_frame`, the event together with the `{"message": m}` frame
//! every member would send for it, so the host writes that frame to the
//! members' sockets without calling the consumer for each (Django consumers
//! in the room still get the `chat.message` event). `chat_message` still
//! turns a `chat.message` from elsewhere (Django, the publish API) into the
//! frame.
//!
//! Hot swap: the state is a serde type (`MigrationState`), so with
//! `on-replace = "migrate"` open connections move to a new version without
//! a disconnect. Built with the `v2` feature (the test build `chat_v2`), every
//! frame it sends carries `"version": "v2"`, so tests can tell versions apart.

#![forbid(unsafe_code)]

use serde::{Deserialize, Serialize};
use switchyard_sdk::{
    Frame, JsonWebsocketConsumer, LayerError, MigrationState, Scope, Socket, Value, json, log,
};

/// Close code for a room the server refuses (the handshake answers 403).
const REJECT_CODE: u16 = 4400;
/// `Retry-After` of the 503 answered while the channel layer is unavailable.
const RETRY_AFTER_SECS: u32 = 5;

/// One connection of the chat: the group of its room.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Chat {
    group: String,
}

/// The `chat.message` event the room's group carries.
#[derive(Debug, Deserialize)]
struct ChatMessage {
    message: Value,
}

impl JsonWebsocketConsumer for Chat {
    fn connect(&mut self, socket: &Socket<'_>, scope: &Scope) {
        let Some(room_name) = scope.kwarg("room_name") else {
            log::error("route has no `room_name` parameter");
            socket.close(REJECT_CODE, Some("no room name"));
            return;
        };
        let group = format!("chat_{room_name}");
        if let Err(err) = socket.channel_layer().group_add(&group) {
            log::warn(&format!("cannot join {group:?}: {err}"));
            let reason = match err {
                LayerError::Unavailable(_) => {
                    socket.refuse(503, Some(RETRY_AFTER_SECS));
                    return;
                }
                LayerError::InvalidName(_) => "invalid room name",
                _ => "cannot join the room",
            };
            socket.close(REJECT_CODE, Some(reason));
            return;
        }
        self.group = group;
        socket.accept();
    }

    fn receive_json(&mut self, socket: &Socket<'_>, content: Value) {
        // `get` finds nothing in a value that is not an object.
        let Some(message) = content.get("message") else {
            let detail = r#"expected a JSON object with a "message" key"#;
            send_error(socket, "missing_message", detail);
            return;
        };
        let event = json!({"type": "chat.message", "message": message});
        let frame = Frame::Text(frame_text(json!({"message": message})));
        let sent = socket
            .channel_layer()
            .group_send_frame(&self.group, &event, &frame);
        if let Err(err) = sent {
            send_error(socket, "group_send_failed", &err.to_string());
        }
    }

    fn invalid_json(&mut self, socket: &Socket<'_>, error: &serde_json::Error) {
        send_error(socket, "invalid_json", &error.to_string());
    }

    fn receive_bytes(&mut self, socket: &Socket<'_>, _bytes: Vec<u8>) {
        send_error(
            socket,
            "binary_not_supported",
            "only text frames are accepted",
        );
    }

    fn disconnect(&mut self, socket: &Socket<'_>, _code: u16) {
        // The host leaves the groups of a closed connection itself; this is
        // the tutorial's `group_discard`, kept for parity.
        if !self.group.is_empty() {
            let _ = socket.channel_layer().group_discard(&self.group);
        }
    }
}

impl Chat {
    /// Each `chat.message` event of the room goes to the client as
    /// `{"message": m}`.
    fn chat_message(&mut self, socket: &Socket<'_>, ChatMessage { message }: ChatMessage) {
        send(socket, json!({"message": message}));
    }
}

/// The state that moves on hot swap is the group: version 1 of its shape.
impl MigrationState for Chat {}

switchyard_sdk::export!(Chat, events[chat_message], migrate);

/// Sends `value` as a JSON text frame.
fn send(socket: &Socket<'_>, value: Value) {
    socket.send_text(&frame_text(value));
}

/// `value` as the text of a frame (tagged `"version": "v2"` in the v2 test
/// build).
fn frame_text(mut value: Value) -> String {
    if cfg!(feature = "v2")
        && let Value::Object(fields) = &mut value
    {
        fields.insert("version".to_owned(), Value::from("v2"));
    }
    value.to_string()
}

/// Sends the error frame `{"error": code, "detail": detail}`.
fn send_error(socket: &Socket<'_>, code: &str, detail: &str) {
    send(socket, json!({"error": code, "detail": detail}));
}
