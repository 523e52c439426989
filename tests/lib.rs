//! The end-to-end test harness: the real server on `127.0.0.1:0`, driven
//! by a real WebSocket client (tokio-tungstenite).
//!
//! The plugins under test are built by `cargo xtask test` into
//! `target/test-plugins/` (or the directory in `SWITCHYARD_TEST_PLUGINS`).

pub mod redis_support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::Value;
use switchyard::{Config, Counters, Server};
use switchyard_host::PluginHost;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Bytes, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long a test waits for something that should happen.
pub const PATIENCE: Duration = Duration::from_secs(5);

/// The directory of built test plugins. Panics with instructions when the
/// plugins have not been built.
pub fn test_plugins_dir() -> PathBuf {
    let dir = std::env::var_os("SWITCHYARD_TEST_PLUGINS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-plugins")
        });
    assert!(
        dir.join("echo.wasm").is_file() && dir.join("probe.wasm").is_file(),
        "test plugins not found in {}: run `cargo xtask test` (it builds them), \
         or `cargo xtask plugins` before `cargo test`",
        dir.display()
    );
    dir
}

pub mod http_client;
pub mod plugin_dir;

/// A compile cache under `target/`, shared by the tests (and never the
/// user's own cache).
pub fn test_compile_cache() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-compile-cache")
}

/// A configuration for tests: a free port on loopback, the test plugins.
pub fn test_config() -> Config {
    Config {
        port: 0,
        plugins: test_plugins_dir(),
        shutdown_timeout_secs: 5,
        compile_cache: Some(test_compile_cache()),
        ..Config::default()
    }
}

/// A running server, shut down (and awaited) by [`TestServer::shutdown`];
/// dropped without it, the server task is aborted.
#[derive(Debug)]
pub struct TestServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its plugin host, to look at plugins, routes, failures and the layer.
    pub host: Arc<PluginHost>,
    /// The server's refusal and forced-close counters.
    pub counters: Arc<Counters>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestServer {
    /// A server with [`test_config`].
    pub async fn start() -> Self {
        Self::start_with(test_config()).await
    }

    /// A server with `config`, its plugins loaded before it serves.
    pub async fn start_with(config: Config) -> Self {
        let listener = Self::bind(&config).await;
        let server = Server::build(config).await.expect("server builds");
        Self::serve(listener, server)
    }

    /// A server with `config` that serves at once and loads its plugins in
    /// the background, as `switchyard serve` does.
    pub async fn start_loading(config: Config) -> Self {
        let listener = Self::bind(&config).await;
        let server = Server::build_unloaded(config).await.expect("server builds");
        let _loading = server.load_in_background();
        Self::serve(listener, server)
    }

    async fn bind(config: &Config) -> tokio::net::TcpListener {
        tokio::net::TcpListener::bind((config.bind, config.port))
            .await
            .expect("bind a free loopback port")
    }

    fn serve(listener: tokio::net::TcpListener, server: Server) -> Self {
        let addr = listener.local_addr().expect("local address");
        let host = Arc::clone(server.host());
        let counters = Arc::clone(server.counters());
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(listener, async {
            let _ = rx.await;
        }));
        Self {
            addr,
            host,
            counters,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// The `ws://` URL of `path` on this server.
    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }

    /// Signal shutdown and wait for the server to finish draining.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let task = self.task.take().context("already shut down")?;
        tokio::time::timeout(Duration::from_secs(15), task)
            .await
            .context("server did not stop within 15 s")?
            .context("server task panicked")?
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

type Stream = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A WebSocket client with helpers that fail after [`PATIENCE`].
#[derive(Debug)]
pub struct Client {
    ws: Stream,
    /// The subprotocol the server chose, if any.
    pub subprotocol: Option<String>,
}

/// Sends a ping carrying `payload` and reads until a pong comes back: the
/// server has then read everything sent before the ping. Frames before the
/// pong are dropped; panics after [`PATIENCE`].
pub async fn ping_until_pong(ws: &mut Stream, payload: &[u8]) {
    ws.send(Message::Ping(payload.to_vec().into()))
        .await
        .expect("ping");
    loop {
        let message = tokio::time::timeout(PATIENCE, ws.next())
            .await
            .expect("pong in time")
            .expect("open")
            .expect("frame");
        if message.is_pong() {
            break;
        }
    }
}

/// Wait until `done` holds for the server, checking every 10 ms; panics
/// naming `what` after [`PATIENCE`] (a hang turned into a failure, not a
/// timing assertion).
pub async fn wait_until(server: &TestServer, what: &str, done: impl Fn(&TestServer) -> bool) {
    wait_until_within(server, PATIENCE, what, done).await;
}

/// [`wait_until`] with its own patience, for events that take long on a
/// busy machine (a compile, a migration): still a hang turned into a
/// failure, never a timing assertion.
pub async fn wait_until_within(
    server: &TestServer,
    patience: Duration,
    what: &str,
    done: impl Fn(&TestServer) -> bool,
) {
    tokio::time::timeout(patience, async {
        while !done(server) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{what} never happened"));
}

/// A plain `GET path` over its own connection: the status, the headers
/// (names lower-case) and the body parsed as JSON (`Null` when it is not).
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, Vec<(String, String)>, Value) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = String::new();
    tokio::time::timeout(PATIENCE, stream.read_to_string(&mut response))
        .await
        .expect("an answer in time")
        .expect("read");
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|line| line.get(9..12))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {response:?}"));
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    (
        status,
        headers,
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}

/// The HTTP status a handshake got: 101 when it succeeded.
pub async fn handshake_status(server: &TestServer, path: &str) -> u16 {
    match tokio_tungstenite::connect_async(server.url(path)).await {
        Ok((mut ws, response)) => {
            let _ = ws.close(None).await;
            response.status().as_u16()
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(other) => panic!("handshake to {path} failed without an HTTP answer: {other}"),
    }
}

impl Client {
    /// Connect to `path`; panics when the handshake fails.
    pub async fn connect(server: &TestServer, path: &str) -> Self {
        Self::connect_with_protocols(server, path, &[]).await
    }

    /// Connect to `path` offering `protocols` as subprotocols.
    pub async fn connect_with_protocols(
        server: &TestServer,
        path: &str,
        protocols: &[&str],
    ) -> Self {
        let mut request = server
            .url(path)
            .into_client_request()
            .expect("valid request");
        if !protocols.is_empty() {
            request.headers_mut().insert(
                "sec-websocket-protocol",
                HeaderValue::from_str(&protocols.join(", ")).expect("valid header"),
            );
        }
        let (ws, response) =
            tokio::time::timeout(PATIENCE, tokio_tungstenite::connect_async(request))
                .await
                .unwrap_or_else(|_| panic!("handshake to {path} timed out"))
                .unwrap_or_else(|err| panic!("handshake to {path} failed: {err}"));
        let subprotocol = response
            .headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Self { ws, subprotocol }
    }

    /// Connects to a full `ws://` URL (e.g. a server in another process).
    pub async fn connect_url(url: &str) -> Self {
        let (ws, _) = tokio::time::timeout(PATIENCE, tokio_tungstenite::connect_async(url))
            .await
            .unwrap_or_else(|_| panic!("handshake to {url} timed out"))
            .unwrap_or_else(|err| panic!("handshake to {url} failed: {err}"));
        Self {
            ws,
            subprotocol: None,
        }
    }

    /// The next text frame as JSON if one arrives within `wait`.
    pub async fn try_recv_json(&mut self, wait: Duration) -> Option<Value> {
        loop {
            let message = tokio::time::timeout(wait, self.ws.next())
                .await
                .ok()??
                .ok()?;
            match message {
                Message::Text(text) => return serde_json::from_str(text.as_str()).ok(),
                Message::Ping(_) | Message::Pong(_) => continue,
                _ => return None,
            }
        }
    }

    /// Open a connection with extra request headers; `Err(status)` when the
    /// handshake got an HTTP answer instead of 101.
    pub async fn try_connect_with_headers(
        server: &TestServer,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<Self, u16> {
        let mut request = server
            .url(path)
            .into_client_request()
            .expect("valid request");
        for (name, value) in headers {
            request.headers_mut().append(
                tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(name.as_bytes())
                    .expect("valid header name"),
                HeaderValue::from_str(value).expect("valid header value"),
            );
        }
        let result = tokio::time::timeout(PATIENCE, tokio_tungstenite::connect_async(request))
            .await
            .unwrap_or_else(|_| panic!("handshake to {path} timed out"));
        match result {
            Ok((ws, _)) => Ok(Self {
                ws,
                subprotocol: None,
            }),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                Err(response.status().as_u16())
            }
            Err(other) => panic!("handshake to {path} failed without an HTTP answer: {other}"),
        }
    }

    /// Send any message, raw frames included.
    pub async fn send_message(&mut self, message: Message) {
        self.ws.send(message).await.expect("send a message");
    }

    /// Send a text frame.
    pub async fn send_text(&mut self, text: &str) {
        self.ws
            .send(Message::text(text))
            .await
            .expect("send text frame");
    }

    /// Send `value` as a text frame.
    pub async fn send_json(&mut self, value: &Value) {
        self.send_text(&value.to_string()).await;
    }

    /// Ask the probe plugin to echo `text`, and check that it does.
    pub async fn assert_probe_echoes(&mut self, text: &str) {
        self.send_json(&serde_json::json!({"cmd": "echo", "text": text}))
            .await;
        assert_eq!(self.recv_json().await, serde_json::json!({"echo": text}));
    }

    /// Send a binary frame.
    pub async fn send_binary(&mut self, bytes: &[u8]) {
        self.ws
            .send(Message::Binary(Bytes::copy_from_slice(bytes)))
            .await
            .expect("send binary frame");
    }

    /// The next data or close message (pings and pongs are skipped).
    pub async fn next(&mut self) -> anyhow::Result<Message> {
        loop {
            let message = tokio::time::timeout(PATIENCE, self.ws.next())
                .await
                .map_err(|_| anyhow!("no message within {PATIENCE:?}"))?
                .context("stream ended")??;
            if !matches!(message, Message::Ping(_) | Message::Pong(_)) {
                return Ok(message);
            }
        }
    }

    /// The next text frame (pings and pongs skipped); panics on anything
    /// else or after [`PATIENCE`].
    pub async fn recv_text(&mut self) -> String {
        match self.next().await.expect("a message") {
            Message::Text(text) => text.as_str().to_owned(),
            other => panic!("expected a text frame, got {other:?}"),
        }
    }

    /// The next text frame, parsed as JSON.
    pub async fn recv_json(&mut self) -> Value {
        let text = self.recv_text().await;
        serde_json::from_str(&text).unwrap_or_else(|err| panic!("not JSON ({err}): {text}"))
    }

    /// The next binary frame.
    pub async fn recv_binary(&mut self) -> Vec<u8> {
        match self.next().await.expect("a message") {
            Message::Binary(bytes) => bytes.to_vec(),
            other => panic!("expected a binary frame, got {other:?}"),
        }
    }

    /// Wait for the server's close frame; returns its code and reason.
    pub async fn recv_close(&mut self) -> anyhow::Result<(u16, String)> {
        match self.next().await? {
            Message::Close(Some(CloseFrame { code, reason })) => {
                Ok((u16::from(code), reason.as_str().to_owned()))
            }
            Message::Close(None) => Ok((1005, String::new())),
            other => bail!("expected a close frame, got {other:?}"),
        }
    }

    /// Asserts that the next messages are `markers` and nothing else (in any
    /// order, each once): proves that nothing arrived ahead of them.
    ///
    /// This is how a test shows that something did *not* arrive, on any
    /// machine however slow: send a marker the client must get, after the
    /// thing it must not get and on the same ordered path, so that the
    /// unwanted message, had it been sent, would come first. Waiting a while
    /// and seeing nothing proves nothing when the machine is slow.
    pub async fn expect_nothing_before(&mut self, markers: &[Value]) {
        let mut awaited = markers.to_vec();
        while !awaited.is_empty() {
            let message = self.next().await.unwrap_or_else(|err| {
                panic!("expected the markers {awaited:?}, got no message: {err}")
            });
            let got = match &message {
                Message::Text(text) => serde_json::from_str::<Value>(text.as_str()).ok(),
                _ => None,
            };
            match got.and_then(|got| awaited.iter().position(|m| *m == got)) {
                Some(found) => {
                    awaited.swap_remove(found);
                }
                None => panic!("expected nothing before the markers {awaited:?}, got {message:?}"),
            }
        }
    }

    /// Close from the client side and wait for the server's reply.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
        let _ = tokio::time::timeout(PATIENCE, async {
            while let Some(Ok(_)) = self.ws.next().await {}
        })
        .await;
    }
}
