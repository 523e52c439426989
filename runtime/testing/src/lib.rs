//! Test a Switchyard consumer without a server, in the spirit of Django
//! Channels' `WebsocketCommunicator`.
//!
//! [`TestHost`] loads a component (any language) into the real plugin host
//! (`switchyard-host`) over the in-memory channel layer; each
//! [`WebsocketCommunicator`] is one connection to it, driven the way the
//! server drives a socket, with no HTTP or WebSocket framing in between.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use std::time::Duration;
//! use serde_json::json;
//! use switchyard_testing::TestHost;
//!
//! let host = TestHost::load("target/plugins/chat.wasm").await?;
//! let mut alice = host.connect("/ws/chat/lobby/").await?;
//! let mut bob = host.connect("/ws/chat/lobby/").await?;
//! alice.send_json_to(&json!({"message": "hi"})).await?;
//! assert_eq!(bob.receive_json_from(Duration::from_secs(5)).await?, json!({"message": "hi"}));
//! assert!(host.connect("/ws/chat/bad%20room/").await.is_err());
//! alice.disconnect(1000).await;
//! # Ok(())
//! # }
//! ```
//!
//! Events from the layer are delivered to a connection's consumer by a
//! task of its own, as the server's socket loop does, so a test needs a
//! tokio runtime (`#[tokio::test]`).

mod communicator;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, bail};
use serde_json::Value;
use switchyard_host::{
    ConnectRequest, GuestLimits, Handshake, PluginHost, RouteMatch, StartError, outbound_queue,
};
use switchyard_layer::{
    ChannelLayer, Event, GroupSendReport, LayerConfig, LayerError, MemoryLayer,
};

pub use communicator::{Closed, CommunicatorError, Message, WebsocketCommunicator};

/// Frames a connection's outbound queue holds before the consumer is told
/// the client reads too slowly (as the server's default).
const OUTBOUND_QUEUE: usize = 1024;

/// One or more plugins loaded in-process with the real host and the
/// in-memory channel layer.
#[derive(Debug)]
pub struct TestHost {
    host: Arc<PluginHost>,
    layer: Arc<MemoryLayer>,
    /// The directory the plugins were loaded from (kept alive for a
    /// [`TestHost::load_with_manifest`]).
    _dir: Option<tempfile::TempDir>,
}

/// Why [`TestHost::connect`] did not open a connection.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// No WebSocket route of the loaded plugins matches the path.
    #[error("no WebSocket route matches {0:?}")]
    NoRoute(String),
    /// The consumer closed before accepting (the server answers HTTP 403).
    #[error("the consumer rejected the handshake (close code {code}, reason {reason:?})")]
    Rejected {
        /// The code it closed with.
        code: u16,
        /// The reason it gave.
        reason: Option<String>,
    },
    /// The consumer refused with an HTTP status (`connection.refuse`).
    #[error("the consumer refused the handshake with HTTP {status}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// The `Retry-After` seconds, if any.
        retry_after_secs: Option<u32>,
    },
    /// The consumer could not be started: `connect` trapped (HTTP 500),
    /// or no instance slot was free (503).
    #[error(transparent)]
    Start(#[from] StartError),
}

impl ConnectError {
    /// The HTTP status the server would answer the handshake with.
    pub fn status(&self) -> u16 {
        match self {
            Self::NoRoute(_) => 404,
            Self::Rejected { .. } => 403,
            Self::Refused { status, .. } => *status,
            Self::Start(StartError::AtCapacity(_) | StartError::PluginAtCapacity { .. }) => 503,
            Self::Start(_) => 500,
        }
    }
}

impl TestHost {
    /// Load one component with the manifest beside it (`chat.wasm` with
    /// `chat.toml`; without one, the plugin's default route).
    pub async fn load(wasm: impl AsRef<Path>) -> anyhow::Result<Self> {
        let wasm = wasm.as_ref();
        let dir = tempfile::tempdir().context("making a plugin directory")?;
        let name = link_component(wasm, dir.path())?;
        let manifest = wasm.with_extension("toml");
        if manifest.is_file() {
            let to = dir.path().join(format!("{name}.toml"));
            std::fs::copy(&manifest, &to)
                .with_context(|| format!("copying {}", manifest.display()))?;
        }
        let path = dir.path().to_path_buf();
        Self::from_dir(&path, Some(dir)).await
    }

    /// Load one component under the manifest `manifest` (TOML, as
    /// `<plugin>.toml`), e.g. to give it other routes or `instance =
    /// "shared"`.
    pub async fn load_with_manifest(
        wasm: impl AsRef<Path>,
        manifest: &str,
    ) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir().context("making a plugin directory")?;
        let name = link_component(wasm.as_ref(), dir.path())?;
        std::fs::write(dir.path().join(format!("{name}.toml")), manifest)
            .context("writing the manifest")?;
        let path = dir.path().to_path_buf();
        Self::from_dir(&path, Some(dir)).await
    }

    /// Load every plugin of a directory, as the server does.
    pub async fn load_dir(dir: impl AsRef<Path>) -> anyhow::Result<Self> {
        Self::from_dir(dir.as_ref(), None).await
    }

    async fn from_dir(dir: &Path, keep: Option<tempfile::TempDir>) -> anyhow::Result<Self> {
        let layer = Arc::new(MemoryLayer::new(LayerConfig::default())?);
        let shared: Arc<dyn ChannelLayer> = layer.clone();
        let host = PluginHost::new(shared, GuestLimits::default())?;
        let report = host.load_dir(dir).await?;
        if let Some((path, err)) = report.failed.first() {
            bail!("plugin {} did not load: {err}", path.display());
        }
        if report.loaded.is_empty() {
            bail!("no plugin found in {}", dir.display());
        }
        Ok(Self {
            host: Arc::new(host),
            layer,
            _dir: keep,
        })
    }

    /// The host, for what the communicator does not cover.
    pub fn host(&self) -> &Arc<PluginHost> {
        &self.host
    }

    /// The channel layer every connection of this host shares.
    pub fn layer(&self) -> &Arc<MemoryLayer> {
        &self.layer
    }

    /// Open a connection to the plugin that routes `path` (with its
    /// leading `/`; a `?query` is split off), as a client handshake would.
    pub async fn connect(&self, path: &str) -> Result<WebsocketCommunicator, ConnectError> {
        self.connect_with(path, Vec::new(), Vec::new()).await
    }

    /// [`TestHost::connect`] with the subprotocols the client offers and
    /// request headers (names in lower case).
    pub async fn connect_with(
        &self,
        path: &str,
        subprotocols: Vec<String>,
        headers: Vec<(String, String)>,
    ) -> Result<WebsocketCommunicator, ConnectError> {
        let (path, query) = path.split_once('?').unwrap_or((path, ""));
        let matched: RouteMatch = self
            .host
            .resolve(path)
            .ok_or_else(|| ConnectError::NoRoute(path.to_owned()))?;
        let request = ConnectRequest {
            path: path.to_owned(),
            query_string: query.to_owned(),
            headers,
            client: Some("127.0.0.1:0".to_owned()),
            subprotocols,
            ..ConnectRequest::default()
        };
        let (outbound_tx, outbound_rx) = outbound_queue(OUTBOUND_QUEUE);
        let started = self
            .host
            .start(&matched, request, outbound_tx.clone())
            .await?;
        let refusal = match started.handshake {
            Handshake::Accepted { subprotocol } => {
                return Ok(WebsocketCommunicator::start(
                    started.consumer,
                    started.inbox,
                    outbound_tx,
                    outbound_rx,
                    subprotocol,
                ));
            }
            Handshake::Rejected { code, reason } => ConnectError::Rejected { code, reason },
            Handshake::Refused {
                status,
                retry_after_secs,
            } => ConnectError::Refused {
                status,
                retry_after_secs,
            },
            Handshake::Pending => ConnectError::Rejected {
                code: 1006,
                reason: None,
            },
        };
        // As the server does: a turned-away consumer still gets its
        // disconnect (1006) and leaves its groups.
        started.consumer.disconnect(1006).await;
        Err(refusal)
    }

    /// Send an event to a group from the test (Channels'
    /// `channel_layer.group_send`); `event` is a JSON object with a string
    /// `type`. The report counts the members reached.
    pub async fn group_send(
        &self,
        group: &str,
        event: &Value,
    ) -> Result<GroupSendReport, LayerError> {
        let event = Event::from_value(event.clone())?;
        self.layer.group_send(group, event).await
    }

    /// Send an event to one channel from the test, e.g. a communicator's
    /// [`WebsocketCommunicator::channel_name`].
    pub async fn channel_send(&self, channel: &str, event: &Value) -> Result<(), LayerError> {
        let event = Event::from_value(event.clone())?;
        self.layer.send(channel, event).await
    }
}

/// Copies `wasm` into `dir` under its own name; returns the
/// plugin name.
fn link_component(wasm: &Path, dir: &Path) -> anyhow::Result<String> {
    if !wasm.is_file() {
        bail!("component {} not found", wasm.display());
    }
    let name = wasm
        .file_stem()
        .and_then(|stem| stem.to_str())
        .with_context(|| format!("{} has no UTF-8 file name", wasm.display()))?
        .to_owned();
    let wasm: PathBuf =
        std::fs::canonicalize(wasm).with_context(|| format!("resolving {}", wasm.display()))?;
    let to = dir.join(format!("{name}.wasm"));
    std::fs::copy(&wasm, &to)
        .with_context(|| format!("copying {} into {}", wasm.display(), dir.display()))?;
    Ok(name)
}
