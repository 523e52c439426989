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
//! Run: `ceiling [PORT] [CERT KEY]` (0 or no argument picks a free port); it
//! prints `listening on <addr>` once bound. With CERT and KEY (PEM files) it
//! serves `https://` and `wss://` only, through rustls (ring, ALPN
//! `http/1.1`) and hyper's HTTP/1 connection, as Switchyard does with
//! `[tls]`: the ceiling for the TLS rows.

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
    let tls = match (std::env::args().nth(2), std::env::args().nth(3)) {
        (Some(cert), Some(key)) => Some(tls_acceptor(&cert, &key)?),
        _ => None,
    };
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await?;
    println!("listening on {}", listener.local_addr()?);
    match tls {
        None => axum::serve(listener, app).await?,
        Some(acceptor) => serve_tls(listener, acceptor, app).await,
    }
    Ok(())
}

fn tls_acceptor(cert: &str, key: &str) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    use anyhow::Context as _;
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading {cert}"))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing {cert}"))?;
    let key = PrivateKeyDer::from_pem_file(key).with_context(|| format!("reading {key}"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Accept, TLS handshake, then HTTP/1.1 with upgrades: no limits, no
/// timeouts, one task per connection.
async fn serve_tls(
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    app: Router,
) {
    use tower_service::Service as _;
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        tokio::spawn(async move {
            let Ok(stream) = acceptor.accept(stream).await else {
                return;
            };
            let service = hyper::service::service_fn(move |request| app.clone().call(request));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .with_upgrades()
                .await;
        });
    }
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
