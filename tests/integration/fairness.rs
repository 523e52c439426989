//! A client that streams frames as fast as it can does not starve its own
//! connection's other inputs: channel-layer events still reach it, and a
//! `restart` swap still closes it with 1012.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use switchyard::Config;
use switchyard_layer::Event;
use switchyard_tests::plugin_dir::{Build, PluginDir};
use switchyard_tests::{PATIENCE, TestServer, test_config};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

/// At most this many frames per flood, so the test stops by itself.
const MAX_FRAMES: u32 = 5_000_000;

/// Stops the writer when the test ends, passed or failed.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// What the reading half saw, as it saw it.
#[derive(Debug)]
enum Seen {
    /// The first binary echo: the flood is under way.
    Flooding,
    /// A text frame: `{"event": ..., ...}`.
    Event(Value),
    Close(Option<u16>),
}

/// On a thread and runtime of its own, beside the server's: connect to the
/// probe at `path`, join `group`, then send binary frames (which the probe
/// echoes) in batches of 256 per write, as fast as the socket takes them,
/// until `stop` or the connection ends; the server always has the next
/// frame waiting. Returns what the reading half sees, and the thread, which
/// returns how many frames it sent. (On the test's own runtime the client
/// would take turns with the test and never keep the server busy.)
fn flood(
    url: String,
    group: &str,
    stop: Arc<AtomicBool>,
) -> (mpsc::UnboundedReceiver<Seen>, std::thread::JoinHandle<u32>) {
    let (seen_tx, seen_rx) = mpsc::unbounded_channel();
    let join = json!({"cmd": "group_add", "group": group}).to_string();
    let client = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("client runtime");
        runtime.block_on(async move {
            let (ws, _) = tokio_tungstenite::connect_async(url)
                .await
                .expect("handshake");
            let (mut sink, mut stream) = ws.split();
            let hello = stream.next().await.expect("hello").expect("hello frame");
            assert!(hello.is_text(), "{hello:?}");
            sink.send(Message::text(join)).await.expect("join");
            let joined = stream.next().await.expect("reply").expect("reply frame");
            assert_eq!(
                serde_json::from_str::<Value>(joined.to_text().expect("text")).expect("json"),
                json!({"ok": true})
            );
            tokio::spawn(read(stream, seen_tx));
            let mut sent = 0;
            while sent < MAX_FRAMES && !stop.load(Ordering::Relaxed) {
                for _ in 0..256 {
                    if sink.feed(Message::binary(vec![7u8; 16])).await.is_err() {
                        return sent;
                    }
                    sent += 1;
                }
                if sink.flush().await.is_err() {
                    break;
                }
            }
            sent
        })
    });
    (seen_rx, client)
}

/// The reading half: the first echo, then every event and the close.
async fn read(
    mut stream: futures_util::stream::SplitStream<
        tokio_tungstenite::WebSocketStream<
            tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
        >,
    >,
    seen: mpsc::UnboundedSender<Seen>,
) {
    let mut flooding = false;
    while let Some(Ok(message)) = stream.next().await {
        let next = match message {
            Message::Binary(_) if !flooding => {
                flooding = true;
                Seen::Flooding
            }
            Message::Text(text) => Seen::Event(serde_json::from_str(&text).expect("json")),
            Message::Close(frame) => Seen::Close(frame.map(|f| f.code.into())),
            _ => continue,
        };
        if seen.send(next).is_err() {
            break;
        }
    }
}

async fn next_seen(seen: &mut mpsc::UnboundedReceiver<Seen>) -> Seen {
    tokio::time::timeout(PATIENCE * 2, seen.recv())
        .await
        .expect("the flooding client saw nothing more")
        .expect("reader alive")
}

/// A server on a runtime of its own with one worker thread, as a busy
/// server's worker is: the flooding connection competes with nothing of the
/// test's, and a server task that never yielded would hang only the server,
/// so the test fails instead of hanging.
struct OwnRuntime {
    runtime: Option<tokio::runtime::Runtime>,
}

impl OwnRuntime {
    async fn start(config: Config) -> (Self, TestServer) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("server runtime");
        let server = runtime
            .spawn(TestServer::start_with(config))
            .await
            .expect("server started");
        let own = Self {
            runtime: Some(runtime),
        };
        (own, server)
    }
}

impl Drop for OwnRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

#[tokio::test]
async fn a_flooding_client_still_receives_its_group_events() {
    let (_runtime, server) = OwnRuntime::start(test_config()).await;
    let stop = StopOnDrop(Arc::new(AtomicBool::new(false)));
    let (mut seen, writer) = flood(server.url("/probe/layer/"), "flood", Arc::clone(&stop.0));
    assert!(matches!(next_seen(&mut seen).await, Seen::Flooding));

    // Twenty events reach the inbox at once. Each tells how many frames the
    // consumer had had when it handled it: with every source getting its
    // turn, the flood gets a few frames in between, not hundreds.
    let layer = server.host.layer();
    for n in 0..20 {
        let event = Event::from_value(json!({"type": "probe.count", "n": n})).expect("event");
        let report = layer.group_send("flood", event).await.expect("group send");
        assert_eq!(report.delivered, 1, "event {n}: {report:?}");
    }
    let mut received = Vec::new();
    for n in 0..20 {
        match next_seen(&mut seen).await {
            Seen::Event(reply) => {
                assert_eq!(reply["event"], json!({"type": "probe.count", "n": n}));
                received.push(reply["received"].as_u64().expect("frame count"));
            }
            other => panic!("expected event {n}, saw {other:?}"),
        }
    }
    let gaps: Vec<u64> = received.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        gaps.iter().all(|&gap| gap < 256),
        "frames handled between consecutive events: {gaps:?}"
    );
    assert!(
        !writer.is_finished(),
        "the events must arrive while the client floods"
    );
    drop(stop);
    writer.join().expect("writer");
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn a_restart_swap_reaches_a_flooding_client() {
    let dir = PluginDir::new();
    let manifest = "routes = [\"probe/layer/\"]\non-replace = \"restart\"\n";
    dir.install("probe", Build::V1, manifest);
    let (_runtime, server) = OwnRuntime::start(Config {
        plugins: dir.path().to_path_buf(),
        ..test_config()
    })
    .await;
    let stop = StopOnDrop(Arc::new(AtomicBool::new(false)));
    let (mut seen, writer) = flood(server.url("/probe/layer/"), "restart", Arc::clone(&stop.0));
    assert!(matches!(next_seen(&mut seen).await, Seen::Flooding));

    // A manifest change is a new version: the swap restarts open sockets.
    dir.write("probe.toml", format!("{manifest}# v2\n").as_bytes());
    loop {
        match next_seen(&mut seen).await {
            Seen::Close(code) => {
                assert_eq!(code, Some(1012));
                break;
            }
            Seen::Flooding | Seen::Event(_) => {}
        }
    }
    drop(stop);
    writer.join().expect("writer");
    server.shutdown().await.expect("clean shutdown");
}
