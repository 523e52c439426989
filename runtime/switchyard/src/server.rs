//! The server: builds the channel layer and the plugin host from a
//! [`Config`], then serves a listener until shutdown.
//!
//! Shutdown is signal, drain, deadline: when the shutdown future resolves
//! the listener stops accepting, every socket is closed with 1001 (its
//! consumer gets `disconnect(1001)`), and the server waits for them up to
//! the configured deadline.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use axum::Router;
use switchyard_host::{HostOptions, PluginHost, PluginWatcher, RouteInfo, WatchOptions};
use switchyard_layer::{ChannelLayer, MemoryLayer, RedisLayer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::access::{OriginPolicy, TrustedProxies};
use crate::auth::Verifier;
use crate::config::{Config, ConfigError};
use crate::counters::Counters;
use crate::ratelimit::Admission;
use crate::{admin, handshake};

/// Everything a request handler needs, cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct AppState {
    pub(crate) host: Arc<PluginHost>,
    pub(crate) config: Arc<Config>,
    /// Cancelled when the server shuts down.
    pub(crate) shutdown: CancellationToken,
    /// Tracks every connection task.
    pub(crate) tasks: TaskTracker,
    /// `[access] allowed-origins`, when set.
    pub(crate) origins: Option<Arc<OriginPolicy>>,
    /// `[access] trusted-proxies`.
    pub(crate) trusted_proxies: Arc<TrustedProxies>,
    pub(crate) verifier: Arc<Verifier>,
    pub(crate) admission: Arc<Admission>,
    pub(crate) counters: Arc<Counters>,
}

/// A configured server with its plugins loaded, not yet serving.
#[derive(Debug)]
pub struct Server {
    host: Arc<PluginHost>,
    config: Arc<Config>,
    origins: Option<Arc<OriginPolicy>>,
    trusted_proxies: Arc<TrustedProxies>,
    verifier: Arc<Verifier>,
    counters: Arc<Counters>,
}

impl Server {
    /// Create the channel layer (Redis when configured, else in-memory) and
    /// the plugin host, and load the plugin directory. A plugin that fails to
    /// load is logged and left out; the others serve.
    ///
    /// Redis need not be reachable: the server serves meanwhile, layer
    /// operations fail as `unavailable`, and the layer logs each failed
    /// connection (URL redacted) and keeps retrying.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        config.validate()?;
        let layer: Arc<dyn ChannelLayer> = match config.redis_config()? {
            Some(redis) => {
                Arc::new(RedisLayer::new(redis).context("configuring the Redis channel layer")?)
            }
            None => Arc::new(
                MemoryLayer::new(config.layer_config()?)
                    .context("configuring the in-memory layer")?,
            ),
        };
        let options = HostOptions {
            limits: config.guest_limits(),
            compile_cache: config.compile_cache_dir().map(Into::into),
        };
        let host = Arc::new(PluginHost::with_options(layer, options)?);
        let report = host.load_dir(&config.plugins).await?;
        tracing::info!(
            dir = %config.plugins.display(),
            loaded = report.loaded.len(),
            failed = report.failed.len(),
            "plugins loaded"
        );
        let origins = match &config.access.allowed_origins {
            Some(list) => Some(Arc::new(OriginPolicy::new(list).map_err(|message| {
                ConfigError::Invalid {
                    key: "access.allowed-origins",
                    message,
                }
            })?)),
            None => None,
        };
        let trusted_proxies = Arc::new(config.trusted_proxies()?);
        let verifier = Arc::new(Verifier::new(&config.auth)?);
        Ok(Self {
            host,
            config: Arc::new(config),
            origins,
            trusted_proxies,
            verifier,
            counters: Arc::new(Counters::default()),
        })
    }

    /// The plugin host (for tests and tools).
    pub fn host(&self) -> &Arc<PluginHost> {
        &self.host
    }

    /// Refusals and forced closes counted since the server was built.
    pub fn counters(&self) -> &Arc<Counters> {
        &self.counters
    }

    /// Live routes, in the order they are tried.
    pub fn routes(&self) -> Vec<RouteInfo> {
        self.host.routes()
    }

    /// Serve `listener` until `shutdown` resolves, then close every socket
    /// with 1001 and wait for them up to the configured deadline.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let token = CancellationToken::new();
        let tasks = TaskTracker::new();
        let state = AppState {
            host: self.host,
            config: Arc::clone(&self.config),
            shutdown: token.clone(),
            tasks: tasks.clone(),
            origins: self.origins,
            trusted_proxies: self.trusted_proxies,
            verifier: self.verifier,
            admission: Arc::new(Admission::new(&self.config)),
            counters: self.counters,
        };
        // Dropping the watcher (when serving ends) stops hot swap.
        let _watcher = if self.config.watch_plugins {
            Some(PluginWatcher::start(
                Arc::clone(&state.host),
                self.config.plugins.clone(),
                WatchOptions::default(),
            )?)
        } else {
            None
        };
        let app = Router::new()
            .route(admin::PLUGINS_PATH, axum::routing::get(admin::plugins))
            .fallback(handshake::handle)
            .with_state(state)
            .into_make_service_with_connect_info::<SocketAddr>();
        let cancel = token.clone();
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                shutdown.await;
                tracing::info!("shutting down: closing sockets with 1001");
                cancel.cancel();
            })
            .await
            .context("serving")?;
        tasks.close();
        let deadline = self.config.shutdown_timeout();
        if tokio::time::timeout(deadline, tasks.wait()).await.is_err() {
            tracing::warn!(
                open = tasks.len(),
                "shutdown deadline of {deadline:?} passed with sockets still open"
            );
        }
        Ok(())
    }
}

/// Build a server from `config` and serve `listener` until `shutdown`.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    Server::build(config).await?.serve(listener, shutdown).await
}
