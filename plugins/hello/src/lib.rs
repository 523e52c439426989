//! The example HTTP plugin: JSON views served through the standard
//! `wasi:http/incoming-handler`, and the "publish from a view" pattern of
//! Channels apps.
//!
//! Routes (`hello.toml`, `http-routes`):
//!
//! | route                                   | method | answer                                        |
//! | --------------------------------------- | ------ | --------------------------------------------- |
//! | `api/hello/<str:name>/`                 | GET    | `{"hello": name}`                             |
//! | `api/rooms/<str:room_name>/messages/`   | POST   | `{"message": m}` goes to the chat room: 202   |
//! | `api/rooms/<str:room_name>/events/`     | GET    | the room's messages as Server-Sent Events     |
//!
//! A POST of `{"message": m}` sends the event `{"type": "chat.message",
//! "message": m}` to the group `chat_<room_name>`, so every tutorial chat
//! socket in that room (in any process sharing the layer) receives
//! `{"message": m}`. A body that is not JSON, or lacks `message`, is 400
//! with `{"error": ...}`; a room name that cannot be part of a group name
//! is 400; a layer that is down is 503 with `Retry-After`.
//!
//! The events route joins the same group with the request's own channel
//! and writes each `chat.message` as `event: message` / `data: {"message":
//! m}`, with a comment line every 15 s of quiet to keep proxies from
//! closing the stream. It ends when the client goes away.

#[allow(unsafe_code)] // wit-bindgen's canonical-ABI glue needs `unsafe`.
mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "http-handler",
        generate_all,
    });

    use super::Hello;
    export!(Hello);
}

// The wasi:http plumbing the HTTP plugins share; it names `crate::bindings`,
// which each plugin generates for its own world.
#[path = "../../shared/http.rs"]
mod http;

use bindings::exports::wasi::http::incoming_handler::Guest;
use bindings::switchyard::consumer::host;
use bindings::switchyard::consumer::http_context;
use bindings::switchyard::consumer::types::LayerError;
use bindings::wasi::http::types::{IncomingRequest, Method, ResponseOutparam};
use serde_json::{Value, json};

/// How long the events stream waits for an event before a keep-alive.
const KEEP_ALIVE_MS: u32 = 15_000;

/// Seconds a client should wait before retrying when the layer is down.
const RETRY_AFTER_SECS: &str = "5";

struct Hello;

impl Guest for Hello {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let kwarg = |key: &str| {
            http_context::url_route()
                .into_iter()
                .find_map(|(name, value)| (name == key).then_some(value))
                .unwrap_or_default()
        };
        let method = request.method();
        match http_context::route().as_str() {
            "api/hello/<str:name>/" => match method {
                Method::Get => http::json(out, 200, &json!({"hello": kwarg("name")})),
                _ => http::method_not_allowed(out, "GET"),
            },
            "api/rooms/<str:room_name>/messages/" => match method {
                Method::Post => post_message(&request, out, &kwarg("room_name")),
                _ => http::method_not_allowed(out, "POST"),
            },
            "api/rooms/<str:room_name>/events/" => match method {
                Method::Get => stream_events(out, &kwarg("room_name")),
                _ => http::method_not_allowed(out, "GET"),
            },
            route => http::json(out, 404, &json!({"error": "no_view", "route": route})),
        }
    }
}

fn group_of(room: &str) -> String {
    format!("chat_{room}")
}

/// Answer a layer error: the client's fault (400) or the layer's (503).
fn layer_failed(out: ResponseOutparam, err: &LayerError) {
    let (status, code, detail) = match err {
        LayerError::InvalidName(why) => (400, "invalid_room", why.clone()),
        LayerError::InvalidEvent(why) => (400, "invalid_message", why.clone()),
        LayerError::ChannelFull => (503, "channel_full", String::new()),
        LayerError::Unavailable(why) => (503, "layer_unavailable", why.clone()),
        LayerError::Other(why) => (503, "layer_error", why.clone()),
    };
    let body = json!({"error": code, "detail": detail}).to_string();
    let extra: &[(&str, &str)] = if status == 503 {
        &[("retry-after", RETRY_AFTER_SECS)]
    } else {
        &[]
    };
    let writer = http::Writer::start(out, status, "application/json", extra);
    let _ = writer.write(body.as_bytes());
    writer.finish();
}

fn post_message(request: &IncomingRequest, out: ResponseOutparam, room: &str) {
    let body = match http::read_body(request) {
        Ok(body) => body,
        Err(why) => return http::json(out, 400, &json!({"error": "bad_body", "detail": why})),
    };
    let message = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(mut object)) => match object.remove("message") {
            Some(message) => message,
            None => {
                return http::json(out, 400, &json!({"error": "missing_message"}));
            }
        },
        Ok(_) => return http::json(out, 400, &json!({"error": "missing_message"})),
        Err(err) => {
            return http::json(
                out,
                400,
                &json!({"error": "invalid_json", "detail": err.to_string()}),
            );
        }
    };
    let event = json!({"type": "chat.message", "message": message});
    match host::group_send(&group_of(room), &event.to_string()) {
        Ok(()) => http::json(out, 202, &json!({"room": room, "message": message})),
        Err(err) => layer_failed(out, &err),
    }
}

fn stream_events(out: ResponseOutparam, room: &str) {
    if let Err(err) = http_context::group_add(&group_of(room)) {
        return layer_failed(out, &err);
    }
    let writer = http::Writer::start(
        out,
        200,
        "text/event-stream",
        &[("cache-control", "no-cache")],
    );
    if writer.write(b": connected\n\n").is_err() {
        return;
    }
    loop {
        let chunk = match http_context::next_event(KEEP_ALIVE_MS) {
            Some(event) => match serde_json::from_str::<Value>(&event) {
                Ok(event) if event["type"] == "chat.message" => {
                    let data = json!({"message": event["message"]});
                    format!("event: message\ndata: {data}\n\n")
                }
                _ => continue,
            },
            None => ": keep-alive\n\n".to_owned(),
        };
        if writer.write(chunk.as_bytes()).is_err() {
            // The client went away.
            return;
        }
    }
}
