//! The server: builds the channel layer and the plugin host from a
//! [`Config`], then serves a listener until shutdown.
//!
//! Each accepted connection is served by hyper's HTTP/1 connection (rather
//! than `axum::serve`) so that it has a header read timeout: a client must
//! send a complete request head within `websocket.handshake-timeout-secs`,
//! or the connection is closed. Without it, a client that connects and
//! sends nothing, or trickles its headers (slowloris), would hold a socket
//! forever without ever reaching a limit.
//!
//! Shutdown is signal, drain, deadline: when the shutdown future resolves,
//! readiness (`/readyz`) turns to 503 first, then every socket is told to
//! close: it hands its consumer the events already queued for it, writes
//! the frames queued for its client, and closes with 1001 (its consumer
//! gets `disconnect(1001)`). The server waits for the sockets up to the
//! configured deadline; meanwhile it still accepts HTTP connections, so
//! probes hear 503 rather than a refused connection, and answers new
//! WebSocket handshakes with 503. Then it stops accepting, and open HTTP
//! connections finish the request they are in.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::Request;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use switchyard_host::{
    GuestMetrics, HostOptions, LoadReport, PluginHost, PluginWatcher, RouteInfo, WatchOptions,
};
use switchyard_kv::{KeyValue, KvBackend, MemoryBackend, RedisBackend, RedisKvConfig};
use switchyard_layer::{ChannelLayer, MemoryLayer, RedisLayer};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_service::Service as _;

use crate::access::{OriginPolicy, TrustedProxies};
use crate::auth::Verifier;
use crate::config::{Config, LayerSettings, Settings};
use crate::counters::Counters;
use crate::health::Draining;
use crate::metrics::{GuestCalls, Metrics};
use crate::ratelimit::Admission;
use crate::statics::StaticFiles;
use crate::tls::{HandshakeError, Tls};
use crate::upgrade::UnfinishedBudget;
use crate::{admin, handshake};

/// How long open HTTP connections get to finish their request once the
/// sockets have drained.
const HTTP_GRACE: Duration = Duration::from_secs(1);

/// Everything a request handler needs, cheap to clone: one reference
/// count, because axum clones the state for every request (a struct of a
/// dozen `Arc`s cost a dozen shared counters bumped and dropped each time).
#[derive(Debug, Clone)]
pub(crate) struct AppState(Arc<AppParts>);

impl std::ops::Deref for AppState {
    type Target = AppParts;

    fn deref(&self) -> &AppParts {
        &self.0
    }
}

/// What [`AppState`] shares.
#[derive(Debug)]
pub(crate) struct AppParts {
    pub(crate) host: Arc<PluginHost>,
    pub(crate) config: Arc<Config>,
    /// Cancelled when the server shuts down: sockets close with 1001.
    pub(crate) shutdown: CancellationToken,
    /// Set when the server starts to shut down, before `shutdown` is
    /// cancelled: readiness answers 503 from then on.
    pub(crate) draining: Draining,
    /// Tracks open sockets and consumer starts: the shutdown drain waits
    /// for these.
    pub(crate) tasks: TaskTracker,
    /// `[access] allowed-origins`, when set.
    pub(crate) origins: Option<Arc<OriginPolicy>>,
    /// `[access] trusted-proxies`.
    pub(crate) trusted_proxies: Arc<TrustedProxies>,
    pub(crate) verifier: Arc<Verifier>,
    pub(crate) admission: Arc<Admission>,
    pub(crate) counters: Arc<Counters>,
    /// `websocket.max-unfinished-bytes`, shared by every socket.
    pub(crate) unfinished: Arc<UnfinishedBudget>,
    /// `[static]`, when a directory is configured.
    pub(crate) statics: Option<Arc<StaticFiles>>,
    /// `None` with `[metrics] enabled = false`.
    pub(crate) metrics: Option<Arc<Metrics>>,
    /// `websocket.permessage-deflate`, when on.
    pub(crate) deflate: Option<Arc<crate::deflate::Deflate>>,
}

/// The store behind `wasi:keyvalue`: in Redis (the layer's first host)
/// when the Redis layer is on, else in this process's memory.
fn keyvalue_store(
    section: &crate::config::KeyValueSection,
    redis_url: Option<&str>,
) -> anyhow::Result<KeyValue> {
    let backend: Arc<dyn KvBackend> = match redis_url {
        Some(url) => Arc::new(
            RedisBackend::new(RedisKvConfig {
                url: url.to_owned(),
                prefix: section.redis_prefix.clone(),
                timeout: Duration::from_millis(section.redis_timeout_ms),
            })
            .context("configuring the Redis key-value store")?,
        ),
        None => Arc::new(MemoryBackend::default()),
    };
    Ok(KeyValue::new(backend, section.limits()))
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
    /// `[admin] bind`, once [`Server::bind_admin`] has bound it.
    admin_listener: Option<TcpListener>,
    metrics: Option<Arc<Metrics>>,
    /// `[tls]`: when set, the listener serves `https://` and `wss://` only.
    tls: Option<Arc<Tls>>,
}

impl Server {
    /// [`Server::build_unloaded`], then load the plugin directory before
    /// returning. A plugin that fails to load is logged and left out; the
    /// others serve.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let server = Self::build_unloaded(config).await?;
        let report = server.host.load_dir(&server.config.plugins).await?;
        log_loaded(&server.config, &report);
        Ok(server)
    }

    /// Load the plugin directory in the background (what `switchyard
    /// serve` does once it has bound): the server serves what is ready;
    /// a route whose plugin is still compiling answers 503 with
    /// `Retry-After`, and `/readyz` answers 503 until the load finishes.
    pub fn load_in_background(&self) -> tokio::task::JoinHandle<anyhow::Result<LoadReport>> {
        let host = Arc::clone(&self.host);
        let config = Arc::clone(&self.config);
        tokio::spawn(async move {
            let report = host.load_dir(&config.plugins).await?;
            log_loaded(&config, &report);
            Ok(report)
        })
    }

    /// Create the channel layer (Redis when configured, else in-memory) and
    /// the plugin host, and check that the plugin directory can be read,
    /// without loading it: see [`Server::load_in_background`].
    ///
    /// Redis need not be reachable: the server serves meanwhile, layer
    /// operations fail as `unavailable`, and the layer logs each failed
    /// connection (URL redacted) and keeps retrying.
    pub async fn build_unloaded(config: Config) -> anyhow::Result<Self> {
        let Settings {
            layer,
            origins,
            trusted_proxies,
            verifier,
            tls,
        } = config.settings()?;
        let redis_url = match &layer {
            LayerSettings::Redis(redis) => {
                let first = redis.hosts.first();
                let url = first.and_then(switchyard_layer::HostEntry::plain_url);
                if url.is_none()
                    && let Some(first) = first
                {
                    tracing::warn!(host = %first.label(),
                        "plugin key-value state stays in memory: it takes the first Redis \
                         host as a plain URL or [host, port] pair, and this one is not");
                }
                url
            }
            LayerSettings::Memory(_) => None,
        };
        let layer: Arc<dyn ChannelLayer> = match layer {
            LayerSettings::Redis(redis) => {
                Arc::new(RedisLayer::new(redis).context("configuring the Redis channel layer")?)
            }
            LayerSettings::Memory(options) => {
                Arc::new(MemoryLayer::new(options).context("configuring the in-memory layer")?)
            }
        };
        let calls = config
            .metrics
            .enabled
            .then(|| Arc::new(GuestCalls::default()));
        let options = HostOptions {
            limits: config.guest_limits(),
            compile_cache: config.compile_cache_dir().map(Into::into),
            keyvalue: keyvalue_store(&config.keyvalue, redis_url.as_deref())?,
            metrics: calls.clone().map(|calls| calls as Arc<dyn GuestMetrics>),
        };
        let host = Arc::new(PluginHost::with_options(layer, options)?);
        let counters = Arc::new(Counters::default());
        let metrics = calls.map(|calls| {
            Arc::new(Metrics::new(
                Arc::clone(&host),
                Arc::clone(&counters),
                calls,
            ))
        });
        std::fs::read_dir(&config.plugins)
            .with_context(|| format!("reading plugin directory {}", config.plugins.display()))?;
        Ok(Self {
            host,
            config: Arc::new(config),
            origins: origins.map(Arc::new),
            trusted_proxies: Arc::new(trusted_proxies),
            verifier: Arc::new(verifier),
            counters,
            metrics,
            admin_listener: None,
            tls: tls.map(Arc::new),
        })
    }

    /// Bind `[admin] bind`, if set, and return the address it got (port 0
    /// picks one). [`Server::serve`] binds it itself when this was not
    /// called.
    pub async fn bind_admin(&mut self) -> anyhow::Result<Option<SocketAddr>> {
        let Some(addr) = self.config.admin.bind else {
            return Ok(None);
        };
        if self.admin_listener.is_none() {
            let listener = TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding the admin listener (admin.bind) {addr}"))?;
            self.admin_listener = Some(listener);
        }
        Ok(self
            .admin_listener
            .as_ref()
            .map(TcpListener::local_addr)
            .transpose()?)
    }

    /// Whether the listener serves `https://` and `wss://` (`[tls]`).
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
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
        mut self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        self.bind_admin().await?;
        let token = CancellationToken::new();
        let tasks = TaskTracker::new();
        // HTTP connections (not yet upgraded) are tracked apart from the
        // sockets, and stopped only once the sockets have drained.
        let http_stop = CancellationToken::new();
        let connections = TaskTracker::new();
        let draining = Draining::default();
        let counters = Arc::clone(&self.counters);
        let state = AppState(Arc::new(AppParts {
            host: self.host,
            config: Arc::clone(&self.config),
            shutdown: token.clone(),
            draining: draining.clone(),
            tasks: tasks.clone(),
            origins: self.origins,
            trusted_proxies: self.trusted_proxies,
            verifier: self.verifier,
            admission: Arc::new(Admission::new(&self.config)),
            counters: self.counters,
            unfinished: Arc::new(UnfinishedBudget::new(
                self.config.websocket.max_unfinished_bytes,
            )),
            statics: self
                .config
                .static_files
                .dir
                .as_ref()
                .map(|dir| Arc::new(StaticFiles::new(dir, &self.config.static_files.prefix))),
            metrics: self.metrics,
            deflate: crate::deflate::Deflate::new(&self.config.websocket).map(Arc::new),
        }));
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
        // Dropping it (when serving ends) stops certificate reloads.
        let _tls_watcher = match &self.tls {
            Some(tls) => {
                tls.log_start();
                Some(tls.watch(Arc::clone(&counters))?)
            }
            None => None,
        };
        // The admin side lives on the public port unless it has its own.
        let admin_app = self
            .admin_listener
            .is_some()
            .then(|| admin::routes().with_state(state.clone()));
        let public = match admin_app {
            Some(_) => admin::hidden(),
            None => admin::routes(),
        };
        let app = public.fallback(handshake::handle).with_state(state);
        let header_timeout = Duration::from_secs(self.config.websocket.handshake_timeout_secs);
        if let (Some(admin_listener), Some(admin_app)) = (self.admin_listener.take(), admin_app) {
            connections.spawn(admin::serve_listener(
                admin_listener,
                admin_app,
                header_timeout,
                http_stop.clone(),
                connections.clone(),
                Arc::clone(&counters),
            ));
        }
        let accept = |stream, peer| {
            connections.spawn(serve_tcp(
                stream,
                peer,
                app.clone(),
                header_timeout,
                http_stop.clone(),
                Arc::clone(&counters),
                self.tls.clone(),
            ));
        };
        let mut shutdown = pin!(shutdown);
        loop {
            // Both branches are cancel safe: `accept` loses no connection.
            tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => accept(stream, peer),
                    Err(error) => accept_failed(&error).await,
                },
            }
        }
        // Readiness first, so a balancer stops sending before any socket
        // hears its 1001.
        draining.start();
        tracing::info!("shutting down: delivering queued events, then closing sockets with 1001");
        token.cancel();
        tasks.close();
        let deadline = self.config.shutdown_timeout();
        let mut drained = pin!(tasks.wait());
        let mut expired = pin!(tokio::time::sleep(deadline));
        loop {
            // All cancel safe: the drain and the deadline are polled by
            // reference, and `accept` loses no connection.
            tokio::select! {
                () = &mut drained => break,
                () = &mut expired => {
                    tracing::warn!(
                        open = tasks.len(),
                        "shutdown deadline of {deadline:?} passed with sockets still open"
                    );
                    break;
                }
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => accept(stream, peer),
                    Err(error) => accept_failed(&error).await,
                },
            }
        }
        drop(listener);
        http_stop.cancel();
        connections.close();
        // Requests in flight finish; idle connections close at once.
        let _ = tokio::time::timeout(HTTP_GRACE, connections.wait()).await;
        Ok(())
    }
}

fn log_loaded(config: &Config, report: &LoadReport) {
    tracing::info!(
        dir = %config.plugins.display(),
        loaded = report.loaded.len(),
        failed = report.failed.len(),
        "plugins loaded"
    );
}

/// The listening side of an accepted connection, as a request extension:
/// the scope's `server` (ASGI) and `scheme` (`wss` over TLS).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Accepted {
    /// The address of the listening socket, when the OS told it.
    pub(crate) local: Option<SocketAddr>,
    /// Whether the connection speaks TLS.
    pub(crate) tls: bool,
}

/// Serves one TCP connection: with `tls`, its TLS handshake first, which
/// must finish within `header_timeout` (a silent client is closed and
/// counted as a request timeout); then [`serve_http`].
async fn serve_tcp(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    header_timeout: Duration,
    shutdown: CancellationToken,
    counters: Arc<Counters>,
    tls: Option<Arc<Tls>>,
) {
    let local = stream.local_addr().ok();
    let Some(tls) = tls else {
        let accepted = Accepted { local, tls: false };
        return serve_http(
            stream,
            (peer, accepted),
            app,
            header_timeout,
            shutdown,
            counters,
        )
        .await;
    };
    // Cancel safe: a handshake cut short by shutdown loses only itself.
    let handshake = tokio::select! {
        handshake = tls.accept(stream, header_timeout) => handshake,
        () = shutdown.cancelled() => return,
    };
    match handshake {
        Ok(stream) => {
            let accepted = Accepted { local, tls: true };
            serve_http(
                stream,
                (peer, accepted),
                app,
                header_timeout,
                shutdown,
                counters,
            )
            .await;
        }
        Err(HandshakeError::TimedOut) => {
            let total = Counters::bump(&counters.request_timeouts);
            tracing::info!(%peer, total,
                "closed: no TLS handshake within the handshake timeout of {header_timeout:?}");
        }
        Err(error) => tracing::debug!(%peer, "{error}"),
    }
}

/// Serves one connection (TCP, or TLS over TCP): HTTP/1.1 requests until the client closes it,
/// it upgrades to a WebSocket (whose task then owns the socket), or no
/// complete request head arrives within `header_timeout` (also counted from
/// the end of the previous request on a keep-alive connection).
///
/// # Cancel safety
/// `select!` polls the pinned connection by reference, so the cancelled
/// branch goes on to drive the same connection through a graceful shutdown.
pub(crate) async fn serve_http<S>(
    stream: S,
    (peer, accepted): (SocketAddr, Accepted),
    app: Router,
    header_timeout: Duration,
    shutdown: CancellationToken,
    counters: Arc<Counters>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let service = service_fn(move |mut request: Request<Incoming>| {
        // What `Router::into_make_service_with_connect_info` would insert.
        request.extensions_mut().insert(ConnectInfo(peer));
        request.extensions_mut().insert(accepted);
        // A `Router` is always ready; `poll_ready` need not be called.
        app.clone().call(request)
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    let mut connection = pin!(
        builder
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades()
    );
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    match result {
        Ok(()) => {}
        Err(error) if error.is_timeout() => {
            let total = Counters::bump(&counters.request_timeouts);
            tracing::info!(%peer, total,
                "closed: no complete request within the handshake timeout of {header_timeout:?}");
        }
        Err(error) => tracing::debug!(%peer, "connection ended: {error}"),
    }
}

/// After a failed `accept`: a connection reset or aborted before it was
/// accepted costs nothing; anything else (out of file descriptors, say) is
/// logged and retried after a second, as `axum::serve` does.
pub(crate) async fn accept_failed(error: &std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        error.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::error!("accept failed: {error}; retrying in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// Build a server from `config` and serve `listener` until `shutdown`.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    Server::build(config).await?.serve(listener, shutdown).await
}
