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
//! Host-side broadcast: a client's message goes to the room with
//! `group-send-frame`, the event together with the `{"message": m}` frame
//! every member would send for it, so the host writes that frame to the
//! members' sockets without calling `event` for each (Django consumers in the
//! room still get the `chat.message` event). `event` still turns a
//! `chat.message` from elsewhere (Django, the publish API) into the frame.
//!
//! The room of each connection is kept in a map keyed by `connection.id`, so
//! the plugin works in both the `per-connection` and the `shared` instance
//! modes.
//!
//! Hot swap: the plugin exports `migration` (world `migratable-consumer`):
//! `snapshot` hands over the connection's group name, so with
//! `on-replace = "migrate"` open connections move to a new version without
//! a disconnect. Built with the `v2` feature (the test build `chat_v2`), every
//! frame it sends carries `"version": "v2"`, so tests can tell versions apart.

#[allow(unsafe_code)] // wit-bindgen's canonical-ABI glue needs `unsafe`.
mod bindings {
    wit_bindgen::generate!({ path: "../../wit", world: "migratable-consumer" });

    use super::Chat;
    export!(Chat);
}

use std::cell::RefCell;
use std::collections::BTreeMap;

use bindings::exports::switchyard::consumer::migration::Guest as Migration;
use bindings::exports::switchyard::consumer::websocket_consumer::Guest;
use bindings::switchyard::consumer::host::{self, Connection, Level};
use bindings::switchyard::consumer::types::{Frame, LayerError, Scope};
use serde_json::{Value, json};

/// Close code for a room the server refuses (the handshake answers 403).
const REJECT_CODE: u16 = 4400;
/// `Retry-After` of the 503 answered while the channel layer is unavailable.
const RETRY_AFTER_SECS: u32 = 5;

thread_local! {
    /// The group of each open connection, by connection id.
    static GROUPS: RefCell<BTreeMap<u64, String>> = const { RefCell::new(BTreeMap::new()) };
}

struct Chat;

impl Guest for Chat {
    fn connect(conn: &Connection, scope: Scope) {
        let Some((_, room_name)) = scope.url_route.iter().find(|(k, _)| k == "room_name") else {
            host::log(Level::Error, "route has no `room_name` parameter");
            conn.close(REJECT_CODE, Some("no room name"));
            return;
        };
        let group = format!("chat_{room_name}");
        if let Err(err) = conn.group_add(&group) {
            host::log(
                Level::Warn,
                &format!("cannot join {group:?}: {}", describe(&err)),
            );
            if let LayerError::Unavailable(_) = err {
                conn.refuse(503, Some(RETRY_AFTER_SECS));
                return;
            }
            let reason = match err {
                LayerError::InvalidName(_) => "invalid room name",
                _ => "cannot join the room",
            };
            conn.close(REJECT_CODE, Some(reason));
            return;
        }
        GROUPS.with_borrow_mut(|groups| groups.insert(conn.id(), group));
        conn.accept(None);
    }

    fn receive(conn: &Connection, message: Frame) {
        let Frame::Text(text) = message else {
            send_error(
                conn,
                "binary_not_supported",
                "only text frames are accepted",
            );
            return;
        };
        let data: Value = match serde_json::from_str(&text) {
            Ok(data) => data,
            Err(err) => {
                send_error(conn, "invalid_json", &err.to_string());
                return;
            }
        };
        // `get` finds nothing in a value that is not an object.
        let Some(message) = data.get("message") else {
            let detail = r#"expected a JSON object with a "message" key"#;
            send_error(conn, "missing_message", detail);
            return;
        };
        let Some(group) = group_of(conn) else {
            host::log(Level::Error, "receive on a connection that joined no room");
            return;
        };
        let event = json!({"type": "chat.message", "message": message});
        let frame = Frame::Text(frame_text(&json!({"message": message})));
        if let Err(err) = host::group_send_frame(&group, &event.to_string(), &frame) {
            send_error(conn, "group_send_failed", &describe(&err));
        }
    }

    fn event(conn: &Connection, event: String) {
        let event: Value = match serde_json::from_str(&event) {
            Ok(event) => event,
            Err(err) => {
                host::log(
                    Level::Warn,
                    &format!("ignoring event that is not JSON: {err}"),
                );
                return;
            }
        };
        match (&event["type"], event.get("message")) {
            (Value::String(kind), Some(message)) if kind == "chat.message" => {
                send_text(conn, &json!({"message": message}));
            }
            _ => host::log(Level::Warn, &format!("ignoring event {event}")),
        }
    }

    fn disconnect(conn: &Connection, _code: u16) {
        if let Some(group) = GROUPS.with_borrow_mut(|groups| groups.remove(&conn.id())) {
            // The host leaves the groups of a closed connection itself; this is
            // the tutorial's `group_discard`, kept for parity.
            let _ = conn.group_discard(&group);
        }
    }
}

/// The group the connection joined in `connect`.
fn group_of(conn: &Connection) -> Option<String> {
    GROUPS.with_borrow(|groups| groups.get(&conn.id()).cloned())
}

impl Migration for Chat {
    /// The state of a connection is its group name, as UTF-8.
    fn snapshot(conn: &Connection) -> Vec<u8> {
        group_of(conn).unwrap_or_default().into_bytes()
    }

    fn restore(conn: &Connection, state: Vec<u8>) -> Result<(), String> {
        let group = String::from_utf8(state).map_err(|_| "state is not UTF-8".to_owned())?;
        if !group.starts_with("chat_") {
            return Err(format!("unexpected state {group:?}"));
        }
        GROUPS.with_borrow_mut(|groups| groups.insert(conn.id(), group));
        Ok(())
    }
}

/// Sends `value` as a JSON text frame.
fn send_text(conn: &Connection, value: &Value) {
    conn.send(&Frame::Text(frame_text(value)));
}

/// `value` as the text of a frame (tagged `"version": "v2"` in the v2 test
/// build).
fn frame_text(value: &Value) -> String {
    let mut value = value.clone();
    if cfg!(feature = "v2")
        && let Value::Object(fields) = &mut value
    {
        fields.insert("version".to_owned(), Value::from("v2"));
    }
    value.to_string()
}

/// Sends the error frame `{"error": code, "detail": detail}`.
fn send_error(conn: &Connection, code: &str, detail: &str) {
    send_text(conn, &json!({"error": code, "detail": detail}));
}

/// A channel-layer error as a sentence.
fn describe(err: &LayerError) -> String {
    match err {
        LayerError::ChannelFull => "channel full".to_owned(),
        LayerError::InvalidName(why) => format!("invalid name: {why}"),
        LayerError::InvalidEvent(why) => format!("invalid event: {why}"),
        LayerError::Unavailable(why) => format!("channel layer unavailable: {why}"),
    }
}
