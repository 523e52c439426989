//! A chat consumer built against `switchyard:consumer@0.1.2` (`wit/v0.1`),
//! not the current contract: a test plugin that proves a 0.1.x component
//! still loads and behaves on the current host. Do not move it to 0.2.
//!
//! Route: `legacy/chat/<str:room_name>/`. `connect` joins the group
//! `legacy_<room_name>`, accepts, and sends one text frame describing the
//! 0.1 scope record: `{"path", "query_string", "route", "url_route":
//! {name: value}, "client", "subprotocols"}`. A text frame from the client
//! is sent to the group as `{"type": "chat.message", "message": text}`; an
//! event of that type comes back to each member as `{"message": text}`. A
//! layer error is answered with `{"error": text, "kind": k}` (`k` one of
//! the 0.1 kinds). A binary frame is echoed back.
//!
//! HTTP (the 0.1 `http-context`): `GET legacy/say/<str:room_name>/<str:message>/`
//! sends `{"type": "chat.message", "message": message}` to the room's group
//! and answers `{"ok": true, "route": r, "url_route": {name: value}}`, or
//! `{"error": text, "kind": k}` with 400 or 503 on a layer error.
//!
//! The world is 0.1's `consumer-and-http`, which includes `migration`:
//! this plugin does not migrate (`restore` refuses).

#[allow(unsafe_code)] // wit-bindgen's canonical-ABI glue needs `unsafe`.
mod bindings {
    wit_bindgen::generate!({
        path: "../../wit/v0.1",
        world: "consumer-and-http",
        generate_all,
    });

    use super::LegacyChat;
    export!(LegacyChat);
}

// The wasi:http plumbing the HTTP plugins share; it names `crate::bindings`.
#[allow(
    dead_code,
    reason = "the shared file has helpers this plugin does not use"
)]
#[path = "../../shared/http.rs"]
mod http;

use std::cell::RefCell;

use bindings::exports::switchyard::consumer::migration::Guest as Migration;
use bindings::exports::switchyard::consumer::websocket_consumer::Guest;
use bindings::exports::wasi::http::incoming_handler::Guest as HttpHandler;
use bindings::switchyard::consumer::host::{self, Connection};
use bindings::switchyard::consumer::http_context;
use bindings::switchyard::consumer::types::{Frame, LayerError, Scope};
use bindings::wasi::http::types::{IncomingRequest, ResponseOutparam};
use serde_json::{Value, json};

thread_local! {
    /// The group this connection joined.
    static GROUP: RefCell<String> = const { RefCell::new(String::new()) };
}

struct LegacyChat;

impl Guest for LegacyChat {
    fn connect(conn: &Connection, scope: Scope) {
        let room = scope
            .url_route
            .iter()
            .find(|(name, _)| name == "room_name")
            .map_or("lobby", |(_, value)| value.as_str());
        let group = format!("legacy_{room}");
        if let Err(err) = conn.group_add(&group) {
            conn.close(4400, Some(&describe(&err).0));
            return;
        }
        GROUP.with_borrow_mut(|g| g.clone_from(&group));
        conn.accept(None);
        let url_route: serde_json::Map<String, Value> = scope
            .url_route
            .iter()
            .map(|(name, value)| (name.clone(), Value::String(value.clone())))
            .collect();
        send_json(
            conn,
            &json!({
                "path": scope.path,
                "query_string": scope.query_string,
                "route": scope.route,
                "url_route": url_route,
                "client": scope.client,
                "subprotocols": scope.subprotocols,
            }),
        );
    }

    fn receive(conn: &Connection, message: Frame) {
        let text = match message {
            Frame::Text(text) => text,
            binary @ Frame::Binary(_) => return conn.send(&binary),
        };
        let event = json!({"type": "chat.message", "message": text}).to_string();
        let group = GROUP.with_borrow(Clone::clone);
        if let Err(err) = host::group_send(&group, &event) {
            let (error, kind) = describe(&err);
            send_json(conn, &json!({"error": error, "kind": kind}));
        }
    }

    fn event(conn: &Connection, event: String) {
        let Ok(event) = serde_json::from_str::<Value>(&event) else {
            return;
        };
        if event["type"] == "chat.message" {
            send_json(conn, &json!({"message": event["message"]}));
        }
    }

    fn disconnect(_conn: &Connection, _code: u16) {}
}

impl Migration for LegacyChat {
    fn snapshot(_conn: &Connection) -> Vec<u8> {
        Vec::new()
    }

    fn restore(_conn: &Connection, _state: Vec<u8>) -> Result<(), String> {
        Err("legacy_chat does not migrate".to_owned())
    }
}

impl HttpHandler for LegacyChat {
    fn handle(_request: IncomingRequest, out: ResponseOutparam) {
        let url_route = http_context::url_route();
        let kwarg = |key: &str| {
            url_route
                .iter()
                .find_map(|(name, value)| (name == key).then_some(value.as_str()))
                .unwrap_or_default()
        };
        let group = format!("legacy_{}", kwarg("room_name"));
        let event = json!({"type": "chat.message", "message": kwarg("message")}).to_string();
        match host::group_send(&group, &event) {
            Ok(()) => {
                let kwargs: serde_json::Map<String, Value> = url_route
                    .iter()
                    .map(|(name, value)| (name.clone(), Value::String(value.clone())))
                    .collect();
                let route = http_context::route();
                http::json(
                    out,
                    200,
                    &json!({"ok": true, "route": route, "url_route": kwargs}),
                );
            }
            Err(err) => {
                let status = if matches!(err, LayerError::Unavailable(_)) {
                    503
                } else {
                    400
                };
                let (error, kind) = describe(&err);
                http::json(out, status, &json!({"error": error, "kind": kind}));
            }
        }
    }
}

/// A 0.1 layer error's text and kind.
fn describe(err: &LayerError) -> (String, &'static str) {
    match err {
        LayerError::ChannelFull => ("channel full".to_owned(), "channel_full"),
        LayerError::InvalidName(why) => (why.clone(), "invalid_name"),
        LayerError::InvalidEvent(why) => (why.clone(), "invalid_event"),
        LayerError::Unavailable(why) => (why.clone(), "unavailable"),
    }
}

fn send_json(conn: &Connection, value: &Value) {
    conn.send(&Frame::Text(value.to_string()));
}
