//! The ceiling of the benchmark suite: a bare axum server with Switchyard's
//! two example endpoints and no plugin layer, no channel layer, no limits.
//!
//! - `ws/echo/`: every frame back to its sender.
//! - `ws/chat/<room>/`: the Channels tutorial protocol; a text frame
//!   `{"message": m}` goes to every member of the room (sender included) as
//!   `{"message": m}`, through an in-process `tokio::sync::broadcast`.
//! - `api/hello/<name>/` (HTTP GET): `{"hello": name}` as JSON, the hello
//!   plugin's view.
//!
//! Same WebSocket buffers as Switchyard (4 KiB read, 8 KiB write). Whatever
//! Switchyard does on top of this (wasm instance per connection, channel
//! layer, bounded queues, timeouts) is what the ratio against it measures.
//!
//! Run: `ceiling [PORT]` (0 or no argument picks a free port); it prints
//! `listening on <addr>` once bound.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::get;
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio::sync::broadcast;

/// Frames a room member may fall behind before it misses some (counted as
/// lost by the load generator).
const ROOM_BACKLOG: usize = 1024;

#[derive(Clone, Default)]
struct Rooms(Arc<Mutex<HashMap<String, broadcast::Sender<Utf8Bytes>>>>);

impl Rooms {
    fn join(&self, room: &str) -> broadcast::Sender<Utf8Bytes> {
        // A poisoned lock only means another handler panicked mid-insert;
        // the map itself is still usable.
        let mut rooms = self.0.lock().unwrap_or_else(|e| e.into_inner());
        rooms
            .entry(room.to_owned())
            .or_insert_with(|| broadcast::channel(ROOM_BACKLOG).0)
            .clone()
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let port: u16 = match std::env::args().nth(1) {
        Some(port) => port.parse()?,
        None => 0,
    };
    let app = Router::new()
        .route("/ws/echo/", get(echo))
        .route("/ws/chat/{room}/", get(chat))
        .route("/api/hello/{name}/", get(hello))
        .with_state(Rooms::default());
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await?;
    println!("listening on {}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}

async fn hello(Path(name): Path<String>) -> axum::Json<Value> {
    axum::Json(json!({ "hello": name }))
}

fn upgrade(ws: WebSocketUpgrade) -> WebSocketUpgrade {
    ws.read_buffer_size(4 << 10).write_buffer_size(8 << 10)
}

async fn echo(ws: WebSocketUpgrade) -> Response {
    upgrade(ws).on_upgrade(|mut socket: WebSocket| async move {
        while let Some(Ok(message)) = socket.recv().await {
            let reply = match message {
                Message::Text(_) | Message::Binary(_) => message,
                Message::Close(_) => break,
                Message::Ping(_) | Message::Pong(_) => continue,
            };
            if socket.send(reply).await.is_err() {
                break;
            }
        }
    })
}

async fn chat(
    ws: WebSocketUpgrade,
    Path(room): Path<String>,
    State(rooms): State<Rooms>,
) -> Response {
    let room = rooms.join(&room);
    // Subscribe before the upgrade so no message sent after the handshake
    // is missed (Channels joins the group in connect, before accept).
    let mut inbox = room.subscribe();
    upgrade(ws).on_upgrade(move |socket: WebSocket| async move {
        let (mut sink, mut stream) = socket.split();
        let writer = tokio::spawn(async move {
            loop {
                match inbox.recv().await {
                    Ok(text) => {
                        if sink.send(Message::Text(text)).await.is_err() {
                            break;
                        }
                    }
                    // Missed frames: the client sees them as lost.
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => break,
                }
            }
        });
        while let Some(Ok(message)) = stream.next().await {
            match message {
                Message::Text(text) => {
                    let Ok(Value::Object(mut object)) = serde_json::from_str::<Value>(&text) else {
                        continue;
                    };
                    let Some(body) = object.remove("message") else {
                        continue;
                    };
                    let out = json!({ "message": body }).to_string();
                    let _ = room.send(Utf8Bytes::from(out));
                }
                Message::Close(_) => break,
                _ => {}
            }
        }
        writer.abort();
    })
}
