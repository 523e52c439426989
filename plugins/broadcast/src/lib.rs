//! FOR TESTS ONLY: a consumer that drives host-side broadcast
//! (`host.group-send-frame`) and shows every guest call it gets.
//!
//! Route: `broadcast/<str:group>/`. A connection joins `group` in `connect`
//! and is accepted. Text frames from the client are commands:
//!
//! | client sends                                        | the plugin                                   |
//! |-----------------------------------------------------|----------------------------------------------|
//! | `{"cmd": "frame", "event": e, "text": t}`            | `group-send-frame(group, e, text(t))`        |
//! | `{"cmd": "frame", "event": e, "binary": [u8, ...]}`  | `group-send-frame(group, e, binary(..))`     |
//! | `{"cmd": "event", "event": e}`                       | `group-send(group, e)`                       |
//! | `{"cmd": "send", "text": t}`                         | sends the text frame `t` to its own client   |
//!
//! `frame` and `event` take an optional `"group": g` to send to another group
//! than the connection's own. A layer error is answered with `{"error": text}`; success with nothing
//! (the sender is a member and gets the frame or event itself).
//!
//! Every channel-layer event reaches the client as
//! `{"guest_event": e, "calls": n}`, `n` the `event` calls this instance has
//! had so far (one instance per connection), so a test sees whether the
//! guest was called for an event and how often.

#[allow(unsafe_code)] // wit-bindgen's canonical-ABI glue needs `unsafe`.
mod bindings {
    wit_bindgen::generate!({ path: "../../wit", world: "consumer", generate_all });

    use super::Broadcast;
    export!(Broadcast);
}

use std::cell::{Cell, RefCell};

use bindings::exports::switchyard::consumer::websocket_consumer::Guest;
use bindings::switchyard::consumer::host::{self, Connection, Scope};
use bindings::switchyard::consumer::types::{Frame, LayerError};
use serde_json::{Value, json};

thread_local! {
    /// The group this connection joined.
    static GROUP: RefCell<String> = const { RefCell::new(String::new()) };
    /// `event` calls so far.
    static EVENT_CALLS: Cell<u64> = const { Cell::new(0) };
}

struct Broadcast;

impl Guest for Broadcast {
    fn connect(conn: &Connection, scope: &Scope) {
        let group = scope
            .url_route()
            .into_iter()
            .find(|(name, _)| name == "group")
            .map(|(_, value)| value)
            .unwrap_or_default();
        if conn.group_add(&group).is_err() {
            conn.close(4400, Some("cannot join the group"));
            return;
        }
        GROUP.with_borrow_mut(|g| *g = group);
        conn.accept(None);
    }

    fn receive(conn: &Connection, message: Frame) {
        let Frame::Text(text) = message else {
            return send_json(conn, &json!({"error": "binary commands are not supported"}));
        };
        let Ok(command) = serde_json::from_str::<Value>(&text) else {
            return send_json(conn, &json!({"error": "not JSON"}));
        };
        let group = match command["group"].as_str() {
            Some(group) => group.to_owned(),
            None => GROUP.with_borrow(Clone::clone),
        };
        let event = command["event"].to_string();
        let result = match command["cmd"].as_str() {
            Some("frame") => {
                let frame = match (&command["text"], &command["binary"]) {
                    (Value::String(text), _) => Frame::Text(text.clone()),
                    (_, Value::Array(bytes)) => Frame::Binary(
                        bytes
                            .iter()
                            .map(|b| u8::try_from(b.as_u64().unwrap_or(0)).unwrap_or(0))
                            .collect(),
                    ),
                    _ => return send_json(conn, &json!({"error": "no text or binary"})),
                };
                host::group_send_frame(&group, &event, &frame)
            }
            Some("event") => host::group_send(&group, &event),
            Some("send") => {
                conn.send(&Frame::Text(
                    command["text"].as_str().unwrap_or("").to_owned(),
                ));
                Ok(())
            }
            _ => return send_json(conn, &json!({"error": "bad command"})),
        };
        if let Err(err) = result {
            send_json(conn, &json!({"error": describe(&err)}));
        }
    }

    fn event(conn: &Connection, event: String) {
        let calls = EVENT_CALLS.get() + 1;
        EVENT_CALLS.set(calls);
        let event: Value = serde_json::from_str(&event).unwrap_or(Value::String(event));
        send_json(conn, &json!({"guest_event": event, "calls": calls}));
    }

    fn disconnect(_conn: &Connection, _code: u16) {}
}

fn send_json(conn: &Connection, value: &Value) {
    conn.send(&Frame::Text(value.to_string()));
}

fn describe(err: &LayerError) -> String {
    match err {
        LayerError::ChannelFull => "channel full".to_owned(),
        LayerError::InvalidName(why) => format!("invalid name: {why}"),
        LayerError::InvalidEvent(why) => format!("invalid event: {why}"),
        LayerError::Unavailable(why) => format!("unavailable: {why}"),
        LayerError::Other(why) => format!("other: {why}"),
    }
}
