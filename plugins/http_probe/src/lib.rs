//! An HTTP handler for the integration tests, not an example: it exposes
//! the host's HTTP side over the wire so tests can observe and drive it.
//!
//! Routes `probe-http/<str:action>/` and `probe-http/<str:action>/<int:n>/`;
//! what happens depends on `action`:
//!
//! | action            | answer                                                         |
//! | ----------------- | -------------------------------------------------------------- |
//! | `context`         | 200, JSON: `route`, `url_route` (object), `user`, `claims`, `request_id`, `method`, `path`, `headers` (object), `body_len` |
//! | `stream` (`n`)    | 200, `text/plain`: `n` lines `line <i>`, each written and flushed on its own |
//! | `trap`            | panics before answering (the host answers 500)                 |
//! | `spin`            | loops forever before answering (504 at the epoch deadline)     |
//! | `sleep`           | blocks on the clock for a minute (504 at the call timeout)     |
//! | `silent`          | returns without answering (500)                                |
//! | `cut`             | answers 200, writes `partial`, then panics                     |
//! | `count`           | 200, JSON `{"count": n}`: requests this instance has served, this one included |
//! | `hold`            | 200, `text/plain`: `held`, then waits (up to 30 s) for an event to the group `probe_hold`, then `released` |
//! | anything else     | 404, JSON `{"error": "unknown_action"}`                        |
//!
//! Every request, whatever its action, counts towards `count`: a global
//! that persists only while the host reuses the instance
//! (`[http] reuse-instances`).

#[allow(unsafe_code)] // wit-bindgen's canonical-ABI glue needs `unsafe`.
mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "http-handler",
        generate_all,
    });

    use super::Probe;
    export!(Probe);
}

use bindings::exports::wasi::http::incoming_handler::Guest;
use bindings::switchyard::consumer::http_context;
use bindings::wasi::clocks::monotonic_clock;
use bindings::wasi::http::types::{
    Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};
use bindings::wasi::io::streams::{OutputStream, StreamError};
use serde_json::{Map, Value, json};
use std::sync::atomic::{AtomicU64, Ordering};

/// Requests this instance has served.
static SERVED: AtomicU64 = AtomicU64::new(0);

struct Probe;

impl Guest for Probe {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let served = SERVED.fetch_add(1, Ordering::Relaxed) + 1;
        let kwargs: Map<String, Value> = http_context::url_route()
            .into_iter()
            .map(|(name, value)| (name, Value::String(value)))
            .collect();
        let action = kwargs
            .get("action")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        match action.as_str() {
            "context" => {
                let body = context(&request, kwargs);
                let (stream, body_handle) = start(out, 200, "application/json");
                let _ = write(&stream, body.to_string().as_bytes());
                finish(stream, body_handle);
            }
            "stream" => {
                let n = kwargs
                    .get("n")
                    .and_then(Value::as_str)
                    .and_then(|n| n.parse::<u32>().ok())
                    .unwrap_or(1);
                let (stream, body) = start(out, 200, "text/plain");
                for i in 0..n {
                    if write(&stream, format!("line {i}\n").as_bytes()).is_err() {
                        // The client went away: return cleanly (the
                        // stream, the body's child, goes first).
                        drop(stream);
                        drop(body);
                        return;
                    }
                }
                finish(stream, body);
            }
            "count" => {
                let (stream, body) = start(out, 200, "application/json");
                let _ = write(&stream, json!({"count": served}).to_string().as_bytes());
                finish(stream, body);
            }
            "hold" => {
                let _ = http_context::group_add("probe_hold");
                let (stream, body) = start(out, 200, "text/plain");
                let _ = write(&stream, b"held\n");
                let _ = http_context::next_event(30_000);
                let _ = write(&stream, b"released\n");
                finish(stream, body);
            }
            "trap" => panic!("http_probe: trap before answering"),
            "spin" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "sleep" => monotonic_clock::subscribe_duration(60_000_000_000).block(),
            "silent" => {}
            "cut" => {
                let (stream, _body) = start(out, 200, "text/plain");
                let _ = write(&stream, b"partial");
                panic!("http_probe: trap mid-body");
            }
            _ => {
                let (stream, body) = start(out, 404, "application/json");
                let _ = write(&stream, br#"{"error":"unknown_action"}"#);
                finish(stream, body);
            }
        }
    }
}

fn context(request: &IncomingRequest, kwargs: Map<String, Value>) -> Value {
    let headers: Map<String, Value> = request
        .headers()
        .entries()
        .into_iter()
        .map(|(name, value)| (name, Value::String(String::from_utf8_lossy(&value).into())))
        .collect();
    let method = match request.method() {
        Method::Get => "GET".to_owned(),
        Method::Post => "POST".to_owned(),
        Method::Put => "PUT".to_owned(),
        Method::Delete => "DELETE".to_owned(),
        other => format!("{other:?}"),
    };
    let mut body_len = 0;
    if let Ok(body) = request.consume() {
        // The stream is the body's child: it goes first.
        if let Ok(stream) = body.stream() {
            while let Ok(chunk) = stream.blocking_read(64 * 1024) {
                body_len += chunk.len();
            }
        }
    }
    json!({
        "route": http_context::route(),
        "url_route": Value::Object(kwargs),
        "user": http_context::user(),
        "claims": http_context::claims(),
        "request_id": http_context::request_id(),
        "method": method,
        "path": request.path_with_query(),
        "headers": headers,
        "body_len": body_len,
    })
}

fn start(out: ResponseOutparam, status: u16, content_type: &str) -> (OutputStream, OutgoingBody) {
    let headers = Fields::new();
    let _ = headers.append("content-type", content_type.as_bytes());
    let response = OutgoingResponse::new(headers);
    let _ = response.set_status_code(status);
    let Ok(body) = response.body() else {
        unreachable!("a new response's body is taken once");
    };
    let Ok(stream) = body.write() else {
        unreachable!("a new body's stream is taken once");
    };
    ResponseOutparam::set(out, Ok(response));
    (stream, body)
}

fn write(stream: &OutputStream, bytes: &[u8]) -> Result<(), StreamError> {
    for chunk in bytes.chunks(4096) {
        stream.blocking_write_and_flush(chunk)?;
    }
    Ok(())
}

fn finish(stream: OutputStream, body: OutgoingBody) {
    drop(stream);
    let _ = OutgoingBody::finish(body, None);
}
