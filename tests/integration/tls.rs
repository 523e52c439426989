//! TLS on the public listener (`[tls] cert`, `key`): `wss://` and `https://`
//! with certificates made here (rcgen), a rustls client trusting the test
//! CA, and certificate reload while the server runs.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures_util::{SinkExt as _, StreamExt as _};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use switchyard::{Config, Counters, Server};
use switchyard_tests::{PATIENCE, TestServer, test_config, wait_until};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

/// A test CA that signs server certificates for `localhost`.
struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    der: CertificateDer<'static>,
}

/// A server certificate (PEM) and its key (PEM), and the certificate's DER.
struct Leaf {
    cert_pem: String,
    key_pem: String,
    der: Vec<u8>,
}

impl TestCa {
    fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Switchyard test CA");
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("CA certificate");
        Self {
            der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A certificate for `localhost` with subject `name`.
    fn leaf(&self, name: &str) -> Leaf {
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("certificate");
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }

    /// A rustls client that trusts only this CA, offering ALPN `http/1.1`.
    fn connector(&self) -> TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.der.clone()).expect("trust the test CA");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        // A resumed session carries the certificate of the session it
        // resumes: every connection here must see what the server serves now.
        config.resumption = rustls::client::Resumption::disabled();
        TlsConnector::from(Arc::new(config))
    }
}

/// The certificate and key files of a server, in their own directory.
struct Files {
    _dir: tempfile::TempDir,
    cert: PathBuf,
    key: PathBuf,
}

impl Files {
    fn new(leaf: &Leaf) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let files = Self {
            cert: dir.path().join("cert.pem"),
            key: dir.path().join("key.pem"),
            _dir: dir,
        };
        std::fs::write(&files.cert, &leaf.cert_pem).expect("write cert");
        std::fs::write(&files.key, &leaf.key_pem).expect("write key");
        files
    }

    /// Replace both files as deploy tools do: write beside, rename over.
    fn rename_in(&self, cert_pem: &str, key_pem: &str) {
        for (path, text) in [(&self.cert, cert_pem), (&self.key, key_pem)] {
            let tmp = path.with_extension("pem.tmp");
            std::fs::write(&tmp, text).expect("write temp file");
            std::fs::rename(&tmp, path).expect("rename into place");
        }
    }

    /// Overwrite both files in place.
    fn write_in_place(&self, cert_pem: &str, key_pem: &str) {
        std::fs::write(&self.cert, cert_pem).expect("write cert");
        std::fs::write(&self.key, key_pem).expect("write key");
    }

    fn config(&self) -> Config {
        let mut config = test_config();
        config.tls.cert = Some(self.cert.clone());
        config.tls.key = Some(self.key.clone());
        config
    }
}

/// A TLS connection to `addr`, verified as `localhost` against the test CA.
async fn tls_connect(addr: SocketAddr, connector: &TlsConnector) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::try_from("localhost").expect("server name");
    tokio::time::timeout(PATIENCE, connector.connect(name, tcp))
        .await
        .expect("TLS handshake in time")
        .expect("TLS handshake")
}

/// The DER of the certificate the server presented.
fn peer_cert(stream: &TlsStream<TcpStream>) -> Vec<u8> {
    let (_, session) = stream.get_ref();
    session.peer_certificates().expect("a server certificate")[0].to_vec()
}

type Wss = WebSocketStream<TlsStream<TcpStream>>;

/// A `wss://` connection to `path`, and the certificate it was served.
async fn wss(addr: SocketAddr, connector: &TlsConnector, path: &str) -> (Wss, Vec<u8>) {
    let stream = tls_connect(addr, connector).await;
    let cert = peer_cert(&stream);
    let url = format!("wss://localhost:{}{path}", addr.port());
    let (ws, response) =
        tokio::time::timeout(PATIENCE, tokio_tungstenite::client_async(url, stream))
            .await
            .expect("WebSocket handshake in time")
            .expect("WebSocket handshake");
    assert_eq!(response.status().as_u16(), 101);
    (ws, cert)
}

async fn send_json(ws: &mut Wss, value: &Value) {
    ws.send(Message::text(value.to_string()))
        .await
        .expect("send");
}

async fn recv_json(ws: &mut Wss) -> Value {
    loop {
        let message = tokio::time::timeout(PATIENCE, ws.next())
            .await
            .expect("a message in time")
            .expect("socket open")
            .expect("a frame");
        match message {
            Message::Text(text) => return serde_json::from_str(text.as_str()).expect("JSON"),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// A chat message goes round through the room: sent by `ws`, heard back.
async fn chat_round_trip(ws: &mut Wss, text: &str) {
    send_json(ws, &json!({"message": text})).await;
    assert_eq!(recv_json(ws).await, json!({"message": text}));
}

#[tokio::test]
async fn wss_chat_and_https_get_work_with_alpn_http1() {
    let ca = TestCa::new();
    let leaf = ca.leaf("first");
    let files = Files::new(&leaf);
    let server = TestServer::start_with(files.config()).await;
    let connector = ca.connector();

    let (mut alice, cert) = wss(server.addr, &connector, "/ws/chat/tls/").await;
    assert_eq!(cert, leaf.der, "the configured certificate is served");
    let (mut bob, _) = wss(server.addr, &connector, "/ws/chat/tls/").await;
    send_json(&mut alice, &json!({"message": "over TLS"})).await;
    assert_eq!(recv_json(&mut alice).await, json!({"message": "over TLS"}));
    assert_eq!(recv_json(&mut bob).await, json!({"message": "over TLS"}));

    let mut stream = tls_connect(server.addr, &connector).await;
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut response = Vec::new();
    // The server closes after its answer; what was read counts whether or
    // not a close_notify came first.
    let _ = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut response))
        .await
        .expect("an answer in time");
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains(r#""status":"alive""#), "{response}");
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn the_scope_of_a_wss_connection_says_wss() {
    let ca = TestCa::new();
    let files = Files::new(&ca.leaf("scope"));
    let server = TestServer::start_with(files.config()).await;
    let (mut ws, _) = wss(server.addr, &ca.connector(), "/probe/scope/1/a/").await;
    let scope = recv_json(&mut ws).await;
    assert_eq!(scope["scheme"], "wss");
    assert_eq!(scope["http_version"], "1.1");
    assert_eq!(
        scope["server"],
        json!([server.addr.ip().to_string(), server.addr.port()])
    );
    drop(ws);
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn plain_ws_and_http_to_the_tls_port_get_no_answer() {
    let ca = TestCa::new();
    let files = Files::new(&ca.leaf("first"));
    let server = TestServer::start_with(files.config()).await;

    let plain = tokio::time::timeout(
        PATIENCE,
        tokio_tungstenite::connect_async(server.url("/ws/chat/x/")),
    )
    .await
    .expect("refused in time");
    assert!(
        plain.is_err(),
        "a plain ws:// handshake succeeded on the TLS port"
    );

    let mut tcp = TcpStream::connect(server.addr).await.expect("connect");
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut response = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, tcp.read_to_end(&mut response))
        .await
        .expect("closed in time");
    assert!(
        !response.starts_with(b"HTTP/"),
        "plain HTTP answered on the TLS port: {}",
        String::from_utf8_lossy(&response)
    );

    // And the server still serves TLS clients.
    let (mut ws, _) = wss(server.addr, &ca.connector(), "/ws/chat/x/").await;
    chat_round_trip(&mut ws, "still serving").await;
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn a_silent_client_is_closed_at_the_handshake_timeout() {
    let ca = TestCa::new();
    let files = Files::new(&ca.leaf("first"));
    let mut config = files.config();
    config.websocket.handshake_timeout_secs = 1;
    let server = TestServer::start_with(config).await;
    // The port speaks TLS...
    let (mut ws, _) = wss(server.addr, &ca.connector(), "/ws/chat/silent/").await;
    chat_round_trip(&mut ws, "a TLS client").await;

    // ...and a client that never starts its handshake is closed and counted.
    let mut silent = TcpStream::connect(server.addr).await.expect("connect");
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(PATIENCE, silent.read(&mut buf))
        .await
        .expect("the server closes a silent client");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    wait_until(&server, "the silent client counted", |s| {
        Counters::get(&s.counters.request_timeouts) == 1
    })
    .await;
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn a_new_certificate_reaches_new_connections_and_old_sockets_stay() {
    let ca = TestCa::new();
    let first = ca.leaf("first");
    let files = Files::new(&first);
    let server = TestServer::start_with(files.config()).await;
    let connector = ca.connector();
    let (mut old, cert) = wss(server.addr, &connector, "/ws/chat/reload/").await;
    assert_eq!(cert, first.der);

    // Write-then-rename, as certbot and most deploy tools do.
    let second = ca.leaf("second");
    files.rename_in(&second.cert_pem, &second.key_pem);
    wait_until(&server, "the renamed certificate reloaded", |s| {
        Counters::get(&s.counters.tls_reloads) >= 1
    })
    .await;
    let (mut new, cert) = wss(server.addr, &connector, "/ws/chat/reload/").await;
    assert_eq!(
        cert, second.der,
        "a new connection gets the new certificate"
    );

    // The socket opened before the reload is untouched and in the same room.
    send_json(&mut old, &json!({"message": "from the old socket"})).await;
    assert_eq!(
        recv_json(&mut old).await,
        json!({"message": "from the old socket"})
    );
    assert_eq!(
        recv_json(&mut new).await,
        json!({"message": "from the old socket"})
    );

    // A write in place counts too.
    let third = ca.leaf("third");
    files.write_in_place(&third.cert_pem, &third.key_pem);
    wait_until(&server, "the rewritten certificate reloaded", |s| {
        Counters::get(&s.counters.tls_reloads) >= 2
    })
    .await;
    let (_, cert) = wss(server.addr, &connector, "/ws/chat/reload/").await;
    assert_eq!(cert, third.der, "an in-place write is reloaded");
    chat_round_trip(&mut old, "old socket still fine").await;
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn a_bad_reload_keeps_the_previous_certificate() {
    let ca = TestCa::new();
    let first = ca.leaf("first");
    let files = Files::new(&first);
    let server = TestServer::start_with(files.config()).await;
    let connector = ca.connector();

    files.rename_in("garbage\n", "more garbage\n");
    wait_until(&server, "the garbage reload failed", |s| {
        Counters::get(&s.counters.tls_reload_failures) >= 1
    })
    .await;
    let (mut ws, cert) = wss(server.addr, &connector, "/ws/chat/bad/").await;
    assert_eq!(cert, first.der, "the previous certificate is still served");
    chat_round_trip(&mut ws, "serving").await;

    // A certificate with another certificate's key: refused, still the first.
    let second = ca.leaf("second");
    let third = ca.leaf("third");
    let failures = Counters::get(&server.counters.tls_reload_failures);
    files.rename_in(&second.cert_pem, &third.key_pem);
    wait_until(&server, "the mismatched reload failed", |s| {
        Counters::get(&s.counters.tls_reload_failures) > failures
    })
    .await;
    let (_, cert) = wss(server.addr, &connector, "/ws/chat/bad/").await;
    assert_eq!(cert, first.der, "a mismatched key is never served");
    assert_eq!(Counters::get(&server.counters.tls_reloads), 0);
    server.shutdown().await.expect("clean shutdown");
}

/// The startup error for `config`, as text.
async fn startup_error(config: Config) -> String {
    let err = Server::build(config)
        .await
        .expect_err("the server refuses to start");
    format!("{err:#}")
}

fn path_text(path: &Path) -> String {
    path.display().to_string()
}

#[tokio::test]
async fn bad_files_are_startup_errors_naming_the_file_and_reason() {
    let ca = TestCa::new();
    let first = ca.leaf("first");
    let files = Files::new(&first);

    let mut config = files.config();
    config.tls.key = Some(files.key.with_file_name("missing.pem"));
    let err = startup_error(config).await;
    assert!(
        err.contains("tls.key") && err.contains("missing.pem"),
        "{err}"
    );
    assert!(err.contains("No such file"), "{err}");

    std::fs::write(&files.key, "not a key\n").expect("write");
    let err = startup_error(files.config()).await;
    assert!(err.contains(&path_text(&files.key)), "{err}");
    assert!(err.contains("no private key found"), "{err}");

    std::fs::write(
        &files.key,
        "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIBvTBXBgkqhkiG9w0BBQ0wSjAp\n-----END ENCRYPTED PRIVATE KEY-----\n",
    )
    .expect("write");
    let err = startup_error(files.config()).await;
    assert!(err.contains(&path_text(&files.key)), "{err}");
    assert!(err.contains("encrypted"), "{err}");

    std::fs::write(&files.key, ca.leaf("other").key_pem).expect("write");
    let err = startup_error(files.config()).await;
    assert!(err.contains("does not match"), "{err}");
    assert!(err.contains(&path_text(&files.cert)), "{err}");

    std::fs::write(&files.key, &first.key_pem).expect("write");
    std::fs::write(&files.cert, &first.key_pem).expect("write");
    let err = startup_error(files.config()).await;
    assert!(
        err.contains("tls.cert") && err.contains("no certificate found"),
        "{err}"
    );
    assert!(err.contains(&path_text(&files.cert)), "{err}");

    let mut config = test_config();
    config.tls.cert = Some(files.cert.clone());
    let err = startup_error(config).await;
    assert!(err.contains("tls.key"), "{err}");
}
