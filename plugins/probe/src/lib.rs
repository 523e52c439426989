//! A consumer for the integration tests, not an example: it exposes the host's
//! behaviour over the wire so that tests can observe and drive it.
//!
//! What `connect` does depends on the route that matched:
//!
//! * `probe/reject/`: closes with 4003 before accepting (HTTP 403);
//! * `probe/silent/`: returns without accepting or closing (HTTP 403);
//! * `probe/trap/`: panics (HTTP 500);
//! * `probe/refuse/`: refuses with the query string's `status=N` (503 when
//!   absent) and, when given, `retry=S` seconds (`connection.refuse`);
//! * `probe/slow/<str:group>/`: joins `group`, sends `{"type": "probe.entered"}`
//!   to the group `<group>-entered` (so a test knows `connect` is under way),
//!   sleeps for the query string's `ms=N` milliseconds (400 when absent),
//!   then accepts like any other route;
//! * any other route: accepts with the first subprotocol the client offered
//!   (if any) and sends one text frame describing the connection:
//!   `{"path", "query_string", "headers": [[name, value], ...],
//!   "url_route": {name: value, ...}, "route", "client", "subprotocols",
//!   "user", "claims", "scheme", "http_version", "server", "channel_name",
//!   "id"}`. Values are the scope's as
//!   given; `client`, `user` and `claims` are strings or `null` (`claims`
//!   is the JSON text the host passed, not parsed); `server` is
//!   `[host, port]` or `null`.
//!
//! Each text frame from the client is a JSON command, answered with at most
//! one text frame:
//!
//! | command                                              | reply                     |
//! | ---------------------------------------------------- | ------------------------- |
//! | `{"cmd": "group_add", "group": g}`                   | layer reply (see below)   |
//! | `{"cmd": "group_discard", "group": g}`               | layer reply               |
//! | `{"cmd": "group_send", "group": g, "event": e}`      | layer reply               |
//! | `{"cmd": "channel_send", "channel": c, "event": e}`  | layer reply               |
//! | `{"cmd": "close", "code": n, "reason": r or null}`   | none: the host closes     |
//! | `{"cmd": "echo", "text": t}`                         | `{"echo": t}`             |
//! | `{"cmd": "send_many", "count": n}`                   | `n` frames `{"seq": i}`   |
//! | `{"cmd": "sleep", "ms": n, "announce": g}`           | `{"slept": n}`, `n` ms later; first `{"type": "probe.sleeping"}` to the group `g`, if given |
//! | `{"cmd": "panic"}`                                   | none: the guest traps     |
//! | `{"cmd": "spin"}`                                    | none: loops forever       |
//! | `{"cmd": "hog"}`                                     | none: grows memory until it traps |
//! | `{"cmd": "ambient"}`                                 | `{"env": n, "args": n, "read_dir": ok, "tcp": ok}` |
//! | a text frame that is not JSON                        | `{"error": "invalid_json"}` |
//! | any other JSON                                       | `{"error": "bad_command", "detail": text}` |
//!
//! A layer reply is `{"ok": true}` or `{"error": text, "kind": k}`, `k` one of
//! `channel_full`, `invalid_name`, `invalid_event`, `unavailable`, `other`. An event
//! `e` that is a JSON string is passed to the layer as that string, verbatim,
//! so tests can send malformed events; any other value is serialized.
//!
//! A binary frame is echoed back. A channel-layer event arrives as the text
//! frame `{"event": e}`, `e` the event parsed as JSON (or the raw text when it
//! is not JSON); for an event of type `probe.count`, as `{"event": e,
//! "received": n}`, `n` the frames `receive` had on this instance so far. `disconnect` logs `disconnect <code>` at info level.

#[allow(unsafe_code)] // wit-bindgen's canonical-ABI glue needs `unsafe`.
mod bindings {
    wit_bindgen::generate!({ path: "../../wit", world: "consumer", generate_all });

    use super::Probe;
    export!(Probe);
}

use bindings::exports::switchyard::consumer::websocket_consumer::Guest;
use bindings::switchyard::consumer::host::{self, Connection, Level};
use bindings::switchyard::consumer::types::{Frame, LayerError};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::atomic::{AtomicU64, Ordering};

struct Probe;

/// The scope, copied out of the host's resource (lent for `connect` only).
struct Scope {
    path: String,
    query_string: String,
    headers: Vec<(String, String)>,
    url_route: Vec<(String, String)>,
    route: String,
    client: Option<String>,
    subprotocols: Vec<String>,
    user: Option<String>,
    claims: Option<String>,
    scheme: String,
    http_version: String,
    server: Option<(String, u16)>,
}

impl Scope {
    fn read(scope: &host::Scope) -> Self {
        Self {
            path: scope.path(),
            query_string: scope.query_string(),
            headers: scope.headers(),
            url_route: scope.url_route(),
            route: scope.route(),
            client: scope.client(),
            subprotocols: scope.subprotocols(),
            user: scope.user(),
            claims: scope.claims(),
            scheme: scope.scheme(),
            http_version: scope.http_version(),
            server: scope.server(),
        }
    }
}

/// Frames `receive` has had on this instance (one per connection unless
/// the manifest shares it).
static RECEIVED: AtomicU64 = AtomicU64::new(0);

impl Guest for Probe {
    fn connect(conn: &Connection, scope: &host::Scope) {
        let scope = Scope::read(scope);
        match scope.route.as_str() {
            "probe/reject/" => conn.close(4003, Some("rejected by probe")),
            "probe/silent/" => {}
            "probe/trap/" => panic!("probe trap in connect"),
            "probe/refuse/" => {
                let param = |name: &str| {
                    scope.query_string.split('&').find_map(|pair| {
                        pair.strip_prefix(name)
                            .and_then(|rest| rest.strip_prefix('='))
                            .map(str::to_owned)
                    })
                };
                let status = param("status").and_then(|s| s.parse().ok()).unwrap_or(503);
                let retry = param("retry").and_then(|s| s.parse().ok());
                conn.refuse(status, retry);
            }
            "probe/slow/<str:group>/" => {
                slow_connect(conn, &scope);
                conn.accept(None);
                send_json(conn, &describe_connection(conn, scope));
            }
            _ => {
                conn.accept(scope.subprotocols.first().map(String::as_str));
                send_json(conn, &describe_connection(conn, scope));
            }
        }
    }

    fn receive(conn: &Connection, message: Frame) {
        RECEIVED.fetch_add(1, Ordering::Relaxed);
        let text = match message {
            Frame::Text(text) => text,
            binary @ Frame::Binary(_) => {
                conn.send(&binary);
                return;
            }
        };
        let Ok(value) = serde_json::from_str::<Value>(&text) else {
            send_json(conn, &json!({"error": "invalid_json"}));
            return;
        };
        match serde_json::from_value::<Command>(value) {
            Ok(command) => run(conn, command),
            Err(err) => {
                let detail = err.to_string();
                send_json(conn, &json!({"error": "bad_command", "detail": detail}));
            }
        }
    }

    fn event(conn: &Connection, event: String) {
        let event = serde_json::from_str(&event).unwrap_or(Value::String(event));
        if event["type"] == "probe.count" {
            let received = RECEIVED.load(Ordering::Relaxed);
            send_json(conn, &json!({"event": event, "received": received}));
            return;
        }
        send_json(conn, &json!({"event": event}));
    }

    fn disconnect(_conn: &Connection, code: u16) {
        host::log(Level::Info, &format!("disconnect {code}"));
    }
}

/// A command sent by the test client; see the module documentation.
#[derive(Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
enum Command {
    GroupAdd { group: String },
    GroupDiscard { group: String },
    GroupSend { group: String, event: Value },
    ChannelSend { channel: String, event: Value },
    Close { code: u16, reason: Option<String> },
    Echo { text: Value },
    SendMany { count: u32 },
    Sleep { ms: u64, announce: Option<String> },
    Panic,
    Spin,
    Hog,
    Ambient,
}

fn run(conn: &Connection, command: Command) {
    match command {
        Command::GroupAdd { group } => reply(conn, conn.group_add(&group)),
        Command::GroupDiscard { group } => reply(conn, conn.group_discard(&group)),
        Command::GroupSend { group, event } => {
            reply(conn, host::group_send(&group, &event_text(event)));
        }
        Command::ChannelSend { channel, event } => {
            reply(conn, host::channel_send(&channel, &event_text(event)));
        }
        Command::Close { code, reason } => conn.close(code, reason.as_deref()),
        Command::Echo { text } => send_json(conn, &json!({"echo": text})),
        Command::SendMany { count } => {
            for seq in 0..count {
                send_json(conn, &json!({"seq": seq}));
            }
        }
        Command::Sleep { ms, announce } => {
            if let Some(group) = announce {
                let _ = host::group_send(&group, &json!({"type": "probe.sleeping"}).to_string());
            }
            std::thread::sleep(std::time::Duration::from_millis(ms));
            send_json(conn, &json!({"slept": ms}));
        }
        Command::Panic => panic!("probe panic on request"),
        Command::Spin => spin(),
        Command::Hog => hog(),
        Command::Ambient => send_json(conn, &ambient()),
    }
}

/// Join the route's group, say so, and take the query string's time.
fn slow_connect(conn: &Connection, scope: &Scope) {
    let group = scope
        .url_route
        .iter()
        .find(|(name, _)| name == "group")
        .map_or("slow", |(_, value)| value.as_str());
    let _ = conn.group_add(group);
    let ms = scope
        .query_string
        .split('&')
        .find_map(|pair| pair.strip_prefix("ms="))
        .and_then(|ms| ms.parse().ok())
        .unwrap_or(400);
    let _ = host::group_send(
        &format!("{group}-entered"),
        &json!({"type": "probe.entered"}).to_string(),
    );
    std::thread::sleep(std::time::Duration::from_millis(ms));
}

/// Loops until the host's deadline stops it.
fn spin() {
    let mut n: u64 = 0;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

/// Grows memory 1 MiB at a time until an allocation fails (the host's
/// memory cap makes `memory.grow` trap).
fn hog() {
    let mut held: Vec<Vec<u8>> = Vec::new();
    loop {
        held.push(std::hint::black_box(vec![1u8; 1 << 20]));
    }
}

/// What the guest can reach without being given it: environment
/// variables, arguments, the file system, the network.
fn ambient() -> Value {
    json!({
        "env": std::env::vars_os().count(),
        "args": std::env::args_os().count(),
        "read_dir": std::fs::read_dir("/").is_ok() || std::fs::read_dir(".").is_ok(),
        "tcp": std::net::TcpStream::connect(("127.0.0.1", 80)).is_ok(),
    })
}

/// The connect frame: the scope, the channel name and the connection id.
fn describe_connection(conn: &Connection, scope: Scope) -> Value {
    let url_route: serde_json::Map<String, Value> = scope
        .url_route
        .into_iter()
        .map(|(name, value)| (name, Value::String(value)))
        .collect();
    json!({
        "path": scope.path,
        "query_string": scope.query_string,
        "headers": scope.headers,
        "url_route": url_route,
        "route": scope.route,
        "client": scope.client,
        "subprotocols": scope.subprotocols,
        "user": scope.user,
        "claims": scope.claims,
        "scheme": scope.scheme,
        "http_version": scope.http_version,
        "server": scope.server,
        "channel_name": conn.channel_name(),
        "id": conn.id(),
    })
}

/// The text given to the layer for a command's `event`: a JSON string as is,
/// anything else serialized.
fn event_text(event: Value) -> String {
    match event {
        Value::String(text) => text,
        other => other.to_string(),
    }
}

/// Answers a layer command with `{"ok": true}` or `{"error", "kind"}`.
fn reply(conn: &Connection, result: Result<(), LayerError>) {
    let answer = match result {
        Ok(()) => json!({"ok": true}),
        Err(LayerError::ChannelFull) => json!({"error": "channel full", "kind": "channel_full"}),
        Err(LayerError::InvalidName(why)) => json!({"error": why, "kind": "invalid_name"}),
        Err(LayerError::InvalidEvent(why)) => json!({"error": why, "kind": "invalid_event"}),
        Err(LayerError::Unavailable(why)) => json!({"error": why, "kind": "unavailable"}),
        Err(LayerError::Other(why)) => json!({"error": why, "kind": "other"}),
    };
    send_json(conn, &answer);
}

fn send_json(conn: &Connection, value: &Value) {
    conn.send(&Frame::Text(value.to_string()));
}
