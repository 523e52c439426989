//! One strict configuration: defaults, then the file, then the environment
//! and flags (see [`crate::cli`]), validated before anything binds.
//!
//! The file is TOML with kebab-case keys; unknown keys are errors:
//!
//! ```toml
//! bind = "127.0.0.1"
//! port = 8000
//! plugins = "plugins"
//! shutdown-timeout-secs = 10
//! watch-plugins = true          # hot swap: reload the plugin directory on change
//! compile-cache = "/var/cache/switchyard"   # "" disables; default: $XDG_CACHE_HOME/switchyard
//!
//! [admin]
//! token = "..."                # enables GET /_switchyard/plugins (Bearer token)
//! bind = "127.0.0.1:9100"      # admin API and health here only; unset: the public port
//!
//! [websocket]
//! max-message-size = 1048576   # bytes; larger messages close with 1009
//! max-frame-size = 1048576
//! handshake-timeout-secs = 5   # for the request head, then for the plugin's answer
//! outbound-queue = 1024        # frames queued per connection
//! ping-interval-secs = 20      # ping an idle client this often (Daphne's)
//! ping-timeout-secs = 30       # close (1001) when silent this long after a ping
//! max-connections = 20000      # open sockets and handshakes; 503 past it
//! max-path-bytes = 2048        # longer request paths: 414
//! max-header-bytes = 16384     # larger request headers (names + values): 431
//! permessage-deflate = false   # RFC 7692 with clients that offer it
//! deflate-threshold = 64       # smaller messages go uncompressed
//!
//! [http]                       # plain HTTP requests to plugins' http-routes
//! max-body-bytes = 1048576     # larger request bodies: 413
//! body-timeout-secs = 30       # a body not received in full by then: 408
//!
//! [static]                     # a directory of files served under a prefix
//! dir = "web"                  # absent: no static files
//! prefix = "/static/"          # "/" serves the directory at the root
//!
//! [layer]                      # Channels' CHANNEL_LAYERS CONFIG
//! capacity = 100
//! expiry = 60
//! group-expiry = 86400
//! channel-capacity = [{ pattern = "specific.*", capacity = 200 }]
//!
//! [redis]                      # channels_redis's RedisChannelLayer CONFIG
//! hosts = ["redis://127.0.0.1:6379/0"]   # REDIS_URL replaces this with one host
//! # also ["127.0.0.1", 6379], { address = "redis://h", db = 1, password = "..." },
//! # { host = "h", port = 6380, ssl = true },
//! # { sentinels = [["127.0.0.1", 26379]], master-name = "mymaster" }
//! prefix = "asgi"
//! symmetric-encryption-keys = []
//! random-prefix-length = 12
//! heartbeat-ttl-secs = 10          # a killed process's members go this long after
//! wait-for-replicas = 0            # >0: a send is Ok once this many replicas have it
//! wait-timeout-ms = 1000           # ... or fails as unavailable after this long
//! # cluster = ["redis://127.0.0.1:7000", "redis://127.0.0.1:7001"]  # Redis Cluster
//! #   seed nodes instead of hosts: Switchyard processes only (no Django peers)
//!
//! [keyvalue]                   # wasi:keyvalue for plugins with `keyvalue = true`
//! max-key-bytes = 512          # longer keys: error, nothing stored
//! max-value-bytes = 1048576    # larger values: error, nothing stored
//! max-bucket-bytes = 64        # longer bucket identifiers: error
//! redis-prefix = "switchyard:kv"   # keys <prefix>:<plugin>:<bucket>:<key>
//! redis-timeout-ms = 1000      # a Redis call past this fails as unavailable
//!
//! [guest]
//! memory-bytes = 67108864
//! call-timeout-ms = 5000
//! max-instances = 20000
//! max-wasm-stack-bytes = 1048576 # wasm stack per call, every plugin (engine-wide)
//!
//! [access]
//! # Channels' OriginValidator; absent = every origin (and none) allowed.
//! allowed-origins = ["https://example.com", ".example.org"]
//! # Peers whose X-Forwarded-For is believed; everyone else's is ignored.
//! # Addresses or CIDR blocks; ::ffff:a.b.c.d peers match as a.b.c.d.
//! trusted-proxies = ["127.0.0.1", "::1", "10.0.0.0/8", "fd00::/8"]
//!
//! [auth]                       # JWT verified by the host; see crate::auth
//! keys = [{ algorithm = "HS256", secret = "..." },
//!         { algorithm = "ES256", public-key-file = "/etc/switchyard/es256.pem" }]
//! from-header = true           # Authorization: Bearer <token>
//! cookie = "token"             # optional cookie name
//! query-param = "token"        # optional query parameter name
//! leeway-secs = 30
//! required-plugins = ["chat"]  # "*" for every plugin
//! required-routes = ["ws/private/<str:room>/"]
//!
//! [tls]                        # https:// and wss:// only; both or neither
//! cert = "/etc/switchyard/cert.pem"   # PEM chain, end-entity first; reloaded on change
//! key = "/etc/switchyard/key.pem"     # PEM private key (PKCS#8, RSA or EC), unencrypted
//!
//! [rate-limit]                 # every limit is off unless set
//! connections-per-minute-per-ip = 600   # 429 on the handshake past it
//! concurrent-connections-per-ip = 200   # 429 on the handshake past it
//! messages-per-second = 50              # per connection; close 1008 past it
//! message-burst = 100
//!
//! [metrics]                    # GET /_switchyard/metrics, admin token
//! enabled = true               # false: 404, and nothing counted for it
//! ```

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use switchyard_host::{GuestLimits, WASM_STACK_RANGE};
use switchyard_kv::{KvLimits, RedisKvConfig};
use switchyard_layer::{CapacityRules, HostEntry, LayerConfig, RedisConfig};

use crate::access::{OriginPolicy, TrustedProxies};
use crate::auth::Verifier;

/// Why a configuration was refused. Each names the key or file at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why it could not be read.
        source: std::io::Error,
    },
    /// The config file is not valid TOML for [`Config`] (an unknown key, a
    /// value of the wrong type).
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// The parser's message, with the line.
        message: String,
    },
    /// A value is out of range or inconsistent with another.
    #[error("invalid value for `{key}`: {message}")]
    Invalid {
        /// The key, as written in the file (`websocket.max-frame-size`).
        key: &'static str,
        /// What is wrong with its value.
        message: String,
    },
}

fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        message: message.into(),
    }
}

/// The whole configuration of a server process.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct Config {
    /// Address to bind (Daphne's `-b`).
    pub bind: IpAddr,
    /// Port to bind (Daphne's `-p`); 0 picks a free port.
    pub port: u16,
    /// The plugin directory.
    pub plugins: PathBuf,
    /// One Redis host for the Redis channel layer (`REDIS_URL`); replaces
    /// `[redis] hosts`.
    pub redis_url: Option<String>,
    /// How long open sockets get to close after a shutdown signal.
    pub shutdown_timeout_secs: u64,
    /// Watch the plugin directory and swap plugins while serving.
    pub watch_plugins: bool,
    /// Where compiled components are cached by content hash; an empty path
    /// disables the cache.
    pub compile_cache: Option<PathBuf>,
    /// `[admin]`: the admin API.
    pub admin: AdminConfig,
    /// `[websocket]`: limits of sockets and handshakes.
    pub websocket: WebSocketConfig,
    /// `[http]`: plain HTTP requests to plugins.
    pub http: HttpSection,
    /// `[static]`: a directory of static files.
    #[serde(rename = "static")]
    pub static_files: StaticSection,
    /// `[layer]`: the channel layer's options, as Channels names them.
    pub layer: LayerSection,
    /// `[guest]`: limits on every guest instance.
    pub guest: GuestSection,
    /// `[redis]`: the Redis channel layer.
    pub redis: RedisSection,
    /// `[keyvalue]`: plugin key-value state (in Redis with the Redis layer,
    /// else in memory).
    pub keyvalue: KeyValueSection,
    /// `[access]`: allowed origins and trusted proxies.
    pub access: AccessSection,
    /// `[auth]`: JWT verification.
    pub auth: AuthSection,
    /// `[rate-limit]`: per-IP and per-connection rates.
    pub rate_limit: RateLimitSection,
    /// `[metrics]`: the Prometheus endpoint.
    pub metrics: MetricsSection,
    /// `[tls]`: serve `https://` and `wss://` on the public listener.
    pub tls: TlsSection,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            bind: IpAddr::from([127, 0, 0, 1]),
            port: 8000,
            plugins: PathBuf::from("plugins"),
            redis_url: None,
            shutdown_timeout_secs: 10,
            watch_plugins: true,
            compile_cache: default_compile_cache(),
            admin: AdminConfig::default(),
            websocket: WebSocketConfig::default(),
            http: HttpSection::default(),
            static_files: StaticSection::default(),
            layer: LayerSection::default(),
            guest: GuestSection::default(),
            redis: RedisSection::default(),
            keyvalue: KeyValueSection::default(),
            access: AccessSection::default(),
            auth: AuthSection::default(),
            rate_limit: RateLimitSection::default(),
            metrics: MetricsSection::default(),
            tls: TlsSection::default(),
        }
    }
}

/// `[metrics]`: `GET /_switchyard/metrics` (with the admin token).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct MetricsSection {
    /// Count and serve metrics; when false the endpoint answers 404 and
    /// nothing is counted for it on the hot paths.
    pub enabled: bool,
}

impl Default for MetricsSection {
    fn default() -> Self {
        Self { enabled: true }
    }
}

/// The Redis channel layer's own options (channels_redis's CONFIG keys; the
/// shared ones, `capacity`, `expiry`, `group-expiry` and `channel-capacity`,
/// stay in `[layer]`). The Redis layer is used when `hosts` (or `redis-url` /
/// `REDIS_URL`) names a host; otherwise the in-memory layer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct RedisSection {
    /// Hosts in channels_redis's forms: `redis://`, `rediss://` or
    /// `unix://` URLs, `[host, port]` pairs, tables with `address` or
    /// `host`/`port` and options, Sentinel tables (see
    /// `docs/channel-layer.md`); a host's position is its shard index, so
    /// list them in the Django processes' order.
    pub hosts: Vec<HostEntry>,
    /// Seed nodes (`redis://`/`rediss://`) of a Redis Cluster, instead of
    /// `hosts`: a layer that only Switchyard processes can share.
    pub cluster: Vec<String>,
    /// Key prefix (channels_redis's `prefix`, default `asgi`).
    pub prefix: String,
    /// Fernet keys (channels_redis's `symmetric_encryption_keys`); the
    /// first encrypts, all decrypt.
    pub symmetric_encryption_keys: Vec<String>,
    /// Random characters in this process's channel prefix
    /// (channels_redis's `random_prefix_length`).
    pub random_prefix_length: usize,
    /// Seconds a dead Switchyard process's heartbeat outlives it: the live
    /// processes remove its group members this long after it stopped
    /// beating (at most a third more). At least 1.
    pub heartbeat_ttl_secs: u64,
    /// Replicas that must confirm a send (`WAIT`) before it returns Ok;
    /// 0: none (asynchronous replication, channels_redis's behaviour).
    pub wait_for_replicas: usize,
    /// How long a send waits for those confirmations, in milliseconds.
    pub wait_timeout_ms: u64,
}

impl Default for RedisSection {
    fn default() -> Self {
        Self {
            hosts: Vec::new(),
            cluster: Vec::new(),
            prefix: RedisConfig::DEFAULT_PREFIX.to_owned(),
            symmetric_encryption_keys: Vec::new(),
            random_prefix_length: RedisConfig::DEFAULT_RANDOM_PREFIX_LENGTH,
            heartbeat_ttl_secs: RedisConfig::DEFAULT_HEARTBEAT_TTL.as_secs(),
            wait_for_replicas: 0,
            wait_timeout_ms: 1000,
        }
    }
}

/// Plugin key-value state (`wasi:keyvalue`): its limits, and where it
/// lives in Redis when the Redis layer is on (the layer's first host).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct KeyValueSection {
    /// Longest key, in bytes.
    pub max_key_bytes: usize,
    /// Largest value, in bytes.
    pub max_value_bytes: usize,
    /// Longest bucket identifier, in bytes.
    pub max_bucket_bytes: usize,
    /// Keys are `<redis-prefix>:<plugin>:<bucket>:<key>`.
    pub redis_prefix: String,
    /// Longest one key-value call waits for Redis before it fails as
    /// unavailable; below `guest.call-timeout-ms`, so the plugin sees the
    /// error instead of its call timing out.
    pub redis_timeout_ms: u64,
}

impl Default for KeyValueSection {
    fn default() -> Self {
        let limits = KvLimits::default();
        Self {
            max_key_bytes: limits.max_key_bytes,
            max_value_bytes: limits.max_value_bytes,
            max_bucket_bytes: limits.max_bucket_bytes,
            redis_prefix: RedisKvConfig::DEFAULT_PREFIX.to_owned(),
            redis_timeout_ms: 1000,
        }
    }
}

impl KeyValueSection {
    /// The size limits.
    pub fn limits(&self) -> KvLimits {
        KvLimits {
            max_key_bytes: self.max_key_bytes,
            max_value_bytes: self.max_value_bytes,
            max_bucket_bytes: self.max_bucket_bytes,
        }
    }

    fn validate(&self, guest_call_timeout_ms: u64) -> Result<(), ConfigError> {
        if self.max_key_bytes == 0 || self.max_value_bytes == 0 {
            return Err(invalid(
                "keyvalue.max-key-bytes",
                "key and value limits must be at least 1 byte",
            ));
        }
        if self.redis_timeout_ms == 0 || self.redis_timeout_ms >= guest_call_timeout_ms {
            return Err(invalid(
                "keyvalue.redis-timeout-ms",
                format!(
                    "must be from 1 to below guest.call-timeout-ms ({guest_call_timeout_ms}), \
                     so a plugin sees a Redis outage as an error, not a timed-out call"
                ),
            ));
        }
        if self.redis_prefix.is_empty() {
            return Err(invalid("keyvalue.redis-prefix", "must not be empty"));
        }
        Ok(())
    }
}

/// `$XDG_CACHE_HOME/switchyard`, else `$HOME/.cache/switchyard`, else none.
fn default_compile_cache() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|home| PathBuf::from(home).join(".cache"))
        })?;
    Some(base.join("switchyard"))
}

/// The admin API: JSON about plugins, behind a bearer token.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct AdminConfig {
    /// The bearer token; the admin API is off without one.
    pub token: Option<String>,
    /// Serve the admin API and health on this address only (see
    /// [`crate::admin`]); unset, they share the public port.
    pub bind: Option<std::net::SocketAddr>,
}

/// WebSocket limits, with Daphne's defaults where Daphne has one.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct WebSocketConfig {
    /// Largest message a client may send; larger: 1009.
    pub max_message_size: usize,
    /// Largest frame a client may send; larger: 1009.
    pub max_frame_size: usize,
    /// Applies twice: a client must send a complete request head within
    /// this after connecting (or after its previous request, on a keep-alive
    /// connection), or the connection is closed without an answer; then the
    /// plugin must accept or reject within this (Daphne's
    /// `--websocket_connect_timeout`), or the handshake is answered 403.
    /// It never cuts a guest call short: `connect` runs on to its own
    /// deadline, and the consumer is then disconnected (1006).
    pub handshake_timeout_secs: u64,
    /// Frames queued for one client before it counts as a slow reader and
    /// is closed (1008); a bound, so one slow client never holds memory or
    /// stalls a group send for the others.
    pub outbound_queue: usize,
    /// A client silent this long is pinged (Daphne's `--ping-interval`).
    pub ping_interval_secs: u64,
    /// A client silent this long after a ping is closed with 1001
    /// (Daphne's `--ping-timeout`).
    pub ping_timeout_secs: u64,
    /// Open sockets plus handshakes in progress; past it the handshake is
    /// answered 503. Distinct from `guest.max-instances`, which counts
    /// instances.
    pub max_connections: usize,
    /// Longest request path (before percent-decoding); longer: 414.
    pub max_path_bytes: usize,
    /// Most bytes of request header names and values; more: 431.
    pub max_header_bytes: usize,
    /// Most bytes all connections together may hold in messages not yet
    /// complete (fragments, or a large frame still arriving). Past it, a
    /// connection holding more than 8 KiB of an unfinished message is
    /// closed with 1013 (try again later); smaller ones always pass.
    pub max_unfinished_bytes: usize,
    /// Negotiate permessage-deflate (RFC 7692) with clients that offer it;
    /// see `crate::deflate` (private) for what is agreed.
    pub permessage_deflate: bool,
    /// Largest LZ77 window the server compresses with, as a power of two
    /// (9-15); smaller saves memory per connection.
    pub deflate_server_max_window_bits: u8,
    /// Largest window the server lets a client compress with (9-15), when
    /// the client offers to be limited.
    pub deflate_client_max_window_bits: u8,
    /// Compress every message on its own (no memory between messages).
    pub deflate_server_no_context_takeover: bool,
    /// Ask clients to compress every message on its own.
    pub deflate_client_no_context_takeover: bool,
    /// Messages smaller than this many bytes go uncompressed.
    pub deflate_threshold: usize,
}

impl Default for WebSocketConfig {
    fn default() -> Self {
        Self {
            max_message_size: 1 << 20,
            max_frame_size: 1 << 20,
            handshake_timeout_secs: 5,
            outbound_queue: 1024,
            ping_interval_secs: 20,
            ping_timeout_secs: 30,
            max_connections: 20_000,
            max_path_bytes: 2048,
            max_header_bytes: 16 << 10,
            max_unfinished_bytes: 64 << 20,
            permessage_deflate: false,
            deflate_server_max_window_bits: 15,
            deflate_client_max_window_bits: 15,
            deflate_server_no_context_takeover: false,
            deflate_client_no_context_takeover: false,
            deflate_threshold: 64,
        }
    }
}

/// Channels' layer options, with Channels' defaults.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct LayerSection {
    /// Channels' `capacity`: events a channel holds before `ChannelFull`.
    pub capacity: usize,
    /// Message expiry in seconds.
    pub expiry: u64,
    /// Group membership expiry in seconds.
    pub group_expiry: u64,
    /// Per-pattern capacities (globs, first match wins).
    pub channel_capacity: Vec<ChannelCapacity>,
}

impl Default for LayerSection {
    fn default() -> Self {
        let defaults = LayerConfig::default();
        Self {
            capacity: defaults.capacity,
            expiry: defaults.expiry.as_secs(),
            group_expiry: defaults.group_expiry.as_secs(),
            channel_capacity: Vec::new(),
        }
    }
}

/// One `[[layer.channel-capacity]]` entry (Channels' `channel_capacity`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelCapacity {
    /// An `fnmatch` glob matched against the full channel name.
    pub pattern: String,
    /// The capacity of the channels it matches.
    pub capacity: usize,
}

/// Limits on every guest instance.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct GuestSection {
    /// Most linear memory one instance may grow to.
    pub memory_bytes: usize,
    /// Longest one guest call may run (epoch deadline and tokio timeout).
    pub call_timeout_ms: u64,
    /// Most live instances in the process; past it, handshakes get 503.
    pub max_instances: u32,
    /// Most wasm stack one guest call may use, for every plugin (wasmtime
    /// sets it per engine).
    pub max_wasm_stack_bytes: usize,
}

impl Default for GuestSection {
    fn default() -> Self {
        let defaults = GuestLimits::default();
        Self {
            memory_bytes: defaults.memory_bytes,
            call_timeout_ms: u64::try_from(defaults.call_timeout.as_millis()).unwrap_or(u64::MAX),
            max_instances: defaults.max_instances,
            max_wasm_stack_bytes: defaults.max_wasm_stack,
        }
    }
}

/// Plain HTTP requests to plugins' `http-routes`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct HttpSection {
    /// Largest request body a plugin is given; larger is 413 and never
    /// reaches the plugin.
    pub max_body_bytes: usize,
    /// A request body not received in full within this is 408.
    pub body_timeout_secs: u64,
}

impl Default for HttpSection {
    fn default() -> Self {
        Self {
            max_body_bytes: 1 << 20,
            body_timeout_secs: 30,
        }
    }
}

/// A directory of static files served under a path prefix (ETag,
/// `If-None-Match`, `Range`, content types from the file extension).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct StaticSection {
    /// The directory; `None` serves no static files.
    pub dir: Option<PathBuf>,
    /// The path prefix, starting and ending with `/`.
    pub prefix: String,
}

impl Default for StaticSection {
    fn default() -> Self {
        Self {
            dir: None,
            prefix: "/static/".to_owned(),
        }
    }
}

/// Who may connect: origins and trusted proxies (see [`crate::access`]).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct AccessSection {
    /// Channels' `OriginValidator` list; `None` = no origin check.
    pub allowed_origins: Option<Vec<String>>,
    /// Peers whose `X-Forwarded-For` header is believed: IP addresses
    /// (`"127.0.0.1"`, `"::1"`) or CIDR blocks (`"10.0.0.0/8"`,
    /// `"fd00::/8"`). An IPv4-mapped IPv6 peer (`::ffff:10.0.0.1`) matches
    /// as its IPv4 address.
    pub trusted_proxies: Vec<String>,
}

/// JWT authentication (see [`crate::auth`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct AuthSection {
    /// Verification keys; a token is checked against those of its `alg`.
    pub keys: Vec<JwtKey>,
    /// Take the token from `Authorization: Bearer <token>`.
    pub from_header: bool,
    /// Take the token from this cookie.
    pub cookie: Option<String>,
    /// Take the token from this query-string parameter.
    pub query_param: Option<String>,
    /// Required `iss`, if set.
    pub issuer: Option<String>,
    /// Required `aud`, if set.
    pub audience: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`.
    pub leeway_secs: u64,
    /// Plugins whose routes need a valid token (403 without); `"*"` = all.
    pub required_plugins: Vec<String>,
    /// Route patterns (as the plugins' manifests spell them) that need a
    /// valid token.
    pub required_routes: Vec<String>,
}

impl Default for AuthSection {
    fn default() -> Self {
        Self {
            keys: Vec::new(),
            from_header: true,
            cookie: None,
            query_param: None,
            issuer: None,
            audience: None,
            leeway_secs: 30,
            required_plugins: Vec::new(),
            required_routes: Vec::new(),
        }
    }
}

/// One JWT verification key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct JwtKey {
    /// `HS256`, `RS256` or `ES256`.
    pub algorithm: String,
    /// The HS256 shared secret.
    pub secret: Option<String>,
    /// PEM public key (RS256, ES256), inline.
    pub public_key: Option<String>,
    /// PEM public key (RS256, ES256), from a file.
    pub public_key_file: Option<PathBuf>,
}

/// Rate limits (see [`crate::ratelimit`]); each is off unless set.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct RateLimitSection {
    /// New connections one client IP may open per minute (429 past it).
    pub connections_per_minute_per_ip: Option<u32>,
    /// Connections one client IP may hold open at once (429 past it).
    pub concurrent_connections_per_ip: Option<u32>,
    /// Messages per second one connection may send (close 1008 past it).
    pub messages_per_second: Option<u32>,
    /// Messages a connection may send in a burst; defaults to
    /// `messages-per-second`.
    pub message_burst: Option<u32>,
}

/// TLS on the public listener (see `crate::tls`): with both files set it
/// serves `https://` and `wss://` only.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct TlsSection {
    /// The certificate chain (PEM), end-entity certificate first; reloaded
    /// when the file changes.
    pub cert: Option<PathBuf>,
    /// The certificate's private key (PEM: PKCS#8, RSA or EC), not
    /// encrypted; reloaded when the file changes.
    pub key: Option<PathBuf>,
}

impl TlsSection {
    /// Both files read and checked, or `None` without TLS.
    fn load(&self) -> Result<Option<crate::tls::Tls>, ConfigError> {
        let files = match (&self.cert, &self.key) {
            (None, None) => return Ok(None),
            (Some(cert), Some(key)) => crate::tls::TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            },
            (Some(_), None) => return Err(invalid("tls.key", "tls.cert is set without it")),
            (None, Some(_)) => return Err(invalid("tls.cert", "tls.key is set without it")),
        };
        let loaded = files
            .load()
            .map_err(|err| invalid(err.key(), err.to_string()))?;
        crate::tls::Tls::new(files, loaded)
            .map(Some)
            .map_err(|err| invalid("tls", format!("{err:#}")))
    }
}

impl Config {
    /// Parse a config file's text; `path` names it in errors.
    pub fn from_toml(text: &str, path: &Path) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|err| ConfigError::Parse {
            path: path.display().to_string(),
            message: err.to_string(),
        })
    }

    /// Read a config file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml(&text, path)
    }

    /// Check everything that can be checked before binding.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.settings().map(drop)
    }

    /// Check everything that can be checked before binding, and parse each
    /// part the server needs once.
    pub(crate) fn settings(&self) -> Result<Settings, ConfigError> {
        let layer = match self.redis_config()? {
            Some(redis) => LayerSettings::Redis(redis),
            None => LayerSettings::Memory(self.layer_config()?),
        };
        if !self.plugins.is_dir() {
            return Err(invalid(
                "plugins",
                format!("{} is not a directory", self.plugins.display()),
            ));
        }
        let ws = &self.websocket;
        if ws.max_message_size == 0 || ws.max_frame_size == 0 {
            return Err(invalid(
                "websocket.max-message-size",
                "message and frame size limits must be at least 1 byte",
            ));
        }
        if ws.max_frame_size > ws.max_message_size {
            return Err(invalid(
                "websocket.max-frame-size",
                "must not exceed websocket.max-message-size",
            ));
        }
        // The upper bound keeps hyper's header deadline (now + timeout) from
        // overflowing an `Instant`.
        if !(1..=86_400).contains(&ws.handshake_timeout_secs) {
            return Err(invalid(
                "websocket.handshake-timeout-secs",
                "must be from 1 to 86400 (a day)",
            ));
        }
        if ws.outbound_queue == 0 {
            return Err(invalid("websocket.outbound-queue", "must be at least 1"));
        }
        self.validate_http()?;
        for (key, bits) in [
            (
                "websocket.deflate-server-max-window-bits",
                ws.deflate_server_max_window_bits,
            ),
            (
                "websocket.deflate-client-max-window-bits",
                ws.deflate_client_max_window_bits,
            ),
        ] {
            if !crate::deflate::WINDOW_BITS.contains(&bits) {
                return Err(invalid(key, format!("must be from 9 to 15, not {bits}")));
            }
        }
        if ws.max_unfinished_bytes < ws.max_message_size {
            return Err(invalid(
                "websocket.max-unfinished-bytes",
                "must be at least websocket.max-message-size",
            ));
        }
        if self.layer.expiry == 0 || self.layer.group_expiry == 0 {
            return Err(invalid(
                "layer.expiry",
                "expiry and group-expiry must be at least 1 s",
            ));
        }
        if self.admin.token.as_deref().is_some_and(|t| t.len() < 16) {
            return Err(invalid(
                "admin.token",
                "must be at least 16 characters (or unset to disable the admin API)",
            ));
        }
        if let Some(admin) = self.admin.bind
            && admin.port() != 0
            && admin.port() == self.port
            && (admin.ip() == self.bind
                || admin.ip().is_unspecified()
                || self.bind.is_unspecified())
        {
            return Err(invalid(
                "admin.bind",
                format!("{admin} is the public address; give the admin listener its own port"),
            ));
        }
        if self.guest.call_timeout_ms == 0 {
            return Err(invalid("guest.call-timeout-ms", "must be at least 1"));
        }
        if self.guest.max_instances == 0 {
            return Err(invalid("guest.max-instances", "must be at least 1"));
        }
        if !WASM_STACK_RANGE.contains(&self.guest.max_wasm_stack_bytes) {
            return Err(invalid(
                "guest.max-wasm-stack-bytes",
                format!(
                    "{} is out of range: it must be between {} and {}",
                    self.guest.max_wasm_stack_bytes,
                    WASM_STACK_RANGE.start(),
                    WASM_STACK_RANGE.end()
                ),
            ));
        }
        if self.guest.memory_bytes < (1 << 16) {
            return Err(invalid(
                "guest.memory-bytes",
                "must be at least one wasm page (65536)",
            ));
        }
        self.validate_limits()?;
        self.keyvalue.validate(self.guest.call_timeout_ms)?;
        let origins = match &self.access.allowed_origins {
            Some(origins) => Some(
                OriginPolicy::new(origins)
                    .map_err(|message| invalid("access.allowed-origins", message))?,
            ),
            None => None,
        };
        Ok(Settings {
            layer,
            origins,
            trusted_proxies: self.trusted_proxies()?,
            verifier: Verifier::new(&self.auth)?,
            tls: self.tls.load()?,
        })
    }

    /// Check the connection limits and rate limits.
    fn validate_http(&self) -> Result<(), ConfigError> {
        if !(1..=86_400).contains(&self.http.body_timeout_secs) {
            return Err(invalid(
                "http.body-timeout-secs",
                "must be from 1 to 86400 (a day)",
            ));
        }
        let statics = &self.static_files;
        if let Some(dir) = &statics.dir
            && !dir.is_dir()
        {
            return Err(invalid(
                "static.dir",
                format!("{} is not a directory", dir.display()),
            ));
        }
        if !statics.prefix.starts_with('/') || !statics.prefix.ends_with('/') {
            return Err(invalid("static.prefix", "must start and end with `/`"));
        }
        if statics.prefix.starts_with("/_switchyard/") {
            return Err(invalid(
                "static.prefix",
                "paths under /_switchyard/ are reserved for the server",
            ));
        }
        Ok(())
    }

    fn validate_limits(&self) -> Result<(), ConfigError> {
        let ws = &self.websocket;
        if ws.ping_interval_secs == 0 || ws.ping_timeout_secs == 0 {
            return Err(invalid(
                "websocket.ping-interval-secs",
                "ping interval and timeout must be at least 1 s",
            ));
        }
        if ws.max_connections == 0 {
            return Err(invalid("websocket.max-connections", "must be at least 1"));
        }
        if ws.max_path_bytes == 0 || ws.max_header_bytes == 0 {
            return Err(invalid(
                "websocket.max-path-bytes",
                "path and header limits must be at least 1 byte",
            ));
        }
        let rl = &self.rate_limit;
        let zero = |v: Option<u32>| v == Some(0);
        if zero(rl.connections_per_minute_per_ip)
            || zero(rl.concurrent_connections_per_ip)
            || zero(rl.messages_per_second)
            || zero(rl.message_burst)
        {
            return Err(invalid(
                "rate-limit",
                "a limit of 0 would refuse everything; leave it out to turn it off",
            ));
        }
        Ok(())
    }

    /// The channel layer's options.
    pub fn layer_config(&self) -> Result<LayerConfig, ConfigError> {
        let patterns: Vec<(String, usize)> = self
            .layer
            .channel_capacity
            .iter()
            .map(|c| (c.pattern.clone(), c.capacity))
            .collect();
        CapacityRules::new(self.layer.capacity, &patterns)
            .map_err(|err| invalid("layer.channel-capacity", err.to_string()))?;
        Ok(LayerConfig {
            expiry: Duration::from_secs(self.layer.expiry),
            group_expiry: Duration::from_secs(self.layer.group_expiry),
            capacity: self.layer.capacity,
            channel_capacity: patterns,
        })
    }

    /// The Redis layer's options, or `None` for the in-memory layer.
    pub fn redis_config(&self) -> Result<Option<RedisConfig>, ConfigError> {
        let hosts = match &self.redis_url {
            Some(url) => vec![HostEntry::from(url.as_str())],
            None => self.redis.hosts.clone(),
        };
        let cluster = self.cluster_seeds(&hosts)?;
        if hosts.is_empty() && cluster.is_empty() {
            return Ok(None);
        }
        for (index, host) in hosts.iter().enumerate() {
            let known = ["redis://", "rediss://", "unix://", "redis+unix://"];
            if let HostEntry::Address { url, .. } = host
                && !known.iter().any(|scheme| url.starts_with(scheme))
            {
                return Err(invalid(
                    "redis.hosts",
                    format!(
                        "entry {index}: {} is not a redis://, rediss:// or unix:// URL",
                        redact_url(url)
                    ),
                ));
            }
            host.validate().map_err(|error| {
                invalid(
                    "redis.hosts",
                    format!("entry {index} ({}): {error}", host.label()),
                )
            })?;
        }
        if self.redis.wait_for_replicas > 0 && self.redis.wait_timeout_ms == 0 {
            return Err(invalid(
                "redis.wait-timeout-ms",
                "must be at least 1 when wait-for-replicas is set (0 would make WAIT block forever)",
            ));
        }
        if self
            .redis
            .symmetric_encryption_keys
            .iter()
            .any(String::is_empty)
        {
            return Err(invalid(
                "redis.symmetric-encryption-keys",
                "keys must not be empty",
            ));
        }
        if self.redis.heartbeat_ttl_secs == 0 {
            return Err(invalid(
                "redis.heartbeat-ttl-secs",
                "must be at least 1 second",
            ));
        }
        Ok(Some(RedisConfig {
            layer: self.layer_config()?,
            hosts,
            cluster,
            prefix: self.redis.prefix.clone(),
            symmetric_encryption_keys: self.redis.symmetric_encryption_keys.clone(),
            random_prefix_length: self.redis.random_prefix_length,
            heartbeat_ttl: Duration::from_secs(self.redis.heartbeat_ttl_secs),
            wait_for_replicas: self.redis.wait_for_replicas,
            wait_timeout: Duration::from_millis(self.redis.wait_timeout_ms),
        }))
    }

    /// `[redis] cluster`, checked: not beside `hosts` (or `redis-url` /
    /// `REDIS_URL`, which replace them), and only `redis://`/`rediss://` URLs.
    fn cluster_seeds(&self, hosts: &[HostEntry]) -> Result<Vec<String>, ConfigError> {
        let seeds = &self.redis.cluster;
        if seeds.is_empty() {
            return Ok(Vec::new());
        }
        if !hosts.is_empty() {
            let other = if self.redis_url.is_some() {
                "redis-url (REDIS_URL)"
            } else {
                "redis.hosts"
            };
            return Err(invalid(
                "redis.cluster",
                format!(
                    "cannot be combined with {other}: a layer is one Redis Cluster or a list of hosts"
                ),
            ));
        }
        for seed in seeds {
            if !(seed.starts_with("redis://") || seed.starts_with("rediss://")) {
                return Err(invalid(
                    "redis.cluster",
                    format!(
                        "{} is not a redis:// or rediss:// URL (cluster nodes are reached over TCP)",
                        redact_url(seed)
                    ),
                ));
            }
        }
        Ok(seeds.clone())
    }

    /// `[access] trusted-proxies`, parsed.
    pub(crate) fn trusted_proxies(&self) -> Result<TrustedProxies, ConfigError> {
        TrustedProxies::new(&self.access.trusted_proxies)
            .map_err(|message| invalid("access.trusted-proxies", message))
    }

    /// The limits every guest runs under.
    pub fn guest_limits(&self) -> GuestLimits {
        GuestLimits {
            memory_bytes: self.guest.memory_bytes,
            call_timeout: Duration::from_millis(self.guest.call_timeout_ms),
            max_instances: self.guest.max_instances,
            max_wasm_stack: self.guest.max_wasm_stack_bytes,
            ..GuestLimits::default()
        }
    }

    /// The compile cache directory, if enabled.
    pub fn compile_cache_dir(&self) -> Option<&Path> {
        self.compile_cache
            .as_deref()
            .filter(|dir| !dir.as_os_str().is_empty())
    }

    /// How long open sockets get to close after a shutdown signal.
    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs(self.shutdown_timeout_secs)
    }
}

use switchyard_layer::redis::config::redact_url;

/// A [`Config`] checked, with every part the server builds from parsed
/// once ([`Config::settings`]).
#[derive(Debug)]
pub(crate) struct Settings {
    pub(crate) layer: LayerSettings,
    /// `[access] allowed-origins`, when set.
    pub(crate) origins: Option<OriginPolicy>,
    pub(crate) trusted_proxies: TrustedProxies,
    pub(crate) verifier: Verifier,
    /// `[tls]`, with its certificate loaded.
    pub(crate) tls: Option<crate::tls::Tls>,
}

/// Which channel layer to build, with its options.
#[derive(Debug)]
pub(crate) enum LayerSettings {
    Memory(LayerConfig),
    Redis(RedisConfig),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(text, Path::new("switchyard.toml"))
    }

    #[test]
    fn keyvalue_limits_and_timeout_are_checked() {
        let config =
            parse("[keyvalue]\nmax-value-bytes = 10\nredis-timeout-ms = 200\n").expect("valid");
        assert_eq!(config.keyvalue.limits().max_value_bytes, 10);
        assert!(config.keyvalue.validate(5000).is_ok());
        let err = config.keyvalue.validate(200).expect_err("not below");
        assert!(
            err.to_string().contains("keyvalue.redis-timeout-ms"),
            "{err}"
        );
        assert!(parse("[keyvalue]\nmax-values = 1\n").is_err());
    }

    #[test]
    fn defaults_match_daphne_and_channels() {
        let config = Config::default();
        assert_eq!(config.port, 8000);
        assert_eq!(config.bind.to_string(), "127.0.0.1");
        assert_eq!(config.websocket.max_message_size, 1 << 20);
        assert_eq!(config.layer.capacity, 100);
        assert_eq!(config.layer.expiry, 60);
        assert_eq!(config.layer.group_expiry, 86400);
    }

    #[test]
    fn file_values_override_defaults() {
        let config = parse(
            "port = 9000\n[layer]\ncapacity = 5\nchannel-capacity = [{ pattern = \"specific.*\", capacity = 7 }]\n",
        )
        .expect("valid");
        assert_eq!(config.port, 9000);
        assert_eq!(config.layer.capacity, 5);
        let layer = config.layer_config().expect("valid layer");
        assert_eq!(layer.channel_capacity, vec![("specific.*".to_owned(), 7)]);
    }

    #[test]
    fn metrics_are_on_by_default_and_can_be_turned_off() {
        assert!(Config::default().metrics.enabled);
        assert!(
            !parse("[metrics]\nenabled = false\n")
                .expect("valid")
                .metrics
                .enabled
        );
        let err = parse("[metrics]\nenable = false\n").expect_err("typo");
        assert!(err.to_string().contains("enable"), "{err}");
    }

    #[test]
    fn unknown_keys_are_errors_naming_the_key() {
        let err = parse("prot = 9000\n").expect_err("typo");
        assert!(err.to_string().contains("prot"), "{err}");
        let err = parse("[layer]\ncapacty = 1\n").expect_err("nested typo");
        assert!(err.to_string().contains("capacty"), "{err}");
    }

    #[test]
    fn validation_names_the_key() {
        let dir = std::env::temp_dir();
        let mut config = Config {
            plugins: dir.clone(),
            ..Config::default()
        };
        config
            .validate()
            .expect("defaults with an existing dir are valid");

        config.layer.capacity = 0;
        let err = config.validate().expect_err("capacity 0");
        assert!(err.to_string().contains("layer.channel-capacity"), "{err}");

        let config = Config {
            plugins: dir.join("no-such-dir-for-switchyard"),
            ..Config::default()
        };
        let err = config.validate().expect_err("missing dir");
        assert!(err.to_string().contains("plugins"), "{err}");
    }

    #[test]
    fn trusted_proxies_take_addresses_and_cidr_blocks() {
        let config = Config {
            plugins: std::env::temp_dir(),
            ..parse(
                "[access]\ntrusted-proxies = [\"10.0.0.0/8\", \"::1\", \"127.0.0.1\", \"fd00::/8\"]\n",
            )
            .expect("valid")
        };
        config.validate().expect("addresses and blocks are valid");
        let trusted = config.trusted_proxies().expect("valid");
        assert!(trusted.contains("10.20.30.40".parse().expect("ip")));
        assert!(trusted.contains("fd00::1".parse().expect("ip")));
        assert!(!trusted.contains("192.168.0.1".parse().expect("ip")));

        let config = Config {
            plugins: std::env::temp_dir(),
            ..parse("[access]\ntrusted-proxies = [\"10.0.0.1\", \"10.0.0.0/33\"]\n")
                .expect("parses: entries are checked by validate")
        };
        let err = config.validate().expect_err("bad prefix").to_string();
        assert!(err.contains("access.trusted-proxies"), "{err}");
        assert!(err.contains("`10.0.0.0/33`"), "{err}");
    }

    #[test]
    fn redis_url_selects_the_redis_layer_and_replaces_hosts() {
        let mut config = parse(
            "[redis]\nhosts = [\"redis://a:6379\", \"redis://b:6379\"]\nprefix = \"p\"\n\
             symmetric-encryption-keys = [\"k\"]\n[layer]\ncapacity = 7\n",
        )
        .expect("valid");
        let redis = config.redis_config().expect("valid").expect("redis");
        assert_eq!(redis.hosts.len(), 2);
        assert_eq!(redis.prefix, "p");
        assert_eq!(redis.layer.capacity, 7);
        config.redis_url = Some("redis://u:pw@c:6379/1".into());
        let redis = config.redis_config().expect("valid").expect("redis");
        assert_eq!(redis.hosts, vec![HostEntry::from("redis://u:pw@c:6379/1")]);
        assert!(Config::default().redis_config().expect("valid").is_none());
    }

    #[test]
    fn a_redis_cluster_is_read_and_refused_beside_hosts() {
        let mut config =
            parse("[redis]\ncluster = [\"redis://a:7000\", \"rediss://b:7001\"]\n").expect("valid");
        let redis = config.redis_config().expect("valid").expect("redis");
        assert_eq!(redis.cluster.len(), 2);
        assert!(redis.hosts.is_empty());
        config.redis_url = Some("redis://c:6379".into());
        let err = config.redis_config().expect_err("both").to_string();
        assert!(
            err.contains("redis.cluster") && err.contains("REDIS_URL"),
            "{err}"
        );
        let config = parse("[redis]\nhosts = [\"redis://a\"]\ncluster = [\"redis://b:7000\"]\n")
            .expect("parses");
        let err = config.redis_config().expect_err("both").to_string();
        assert!(
            err.contains("redis.cluster") && err.contains("redis.hosts"),
            "{err}"
        );
        let config = parse("[redis]\ncluster = [\"unix:///tmp/r.sock\"]\n").expect("parses");
        let err = config.redis_config().expect_err("unix").to_string();
        assert!(err.contains("unix:///tmp/r.sock"), "{err}");
    }

    #[test]
    fn host_entries_of_every_form_parse_from_toml() {
        let config = parse(
            "[redis]\nhosts = [\n  \"redis://a:6379\",\n  [\"b\", 6380],\n  \
             { address = \"redis://c\", db = 2, password = \"pw\" },\n  \
             { sentinels = [[\"127.0.0.1\", 26379]], master-name = \"mymaster\", \
             sentinel-kwargs = { password = \"spw\" } },\n]\n\
             wait-for-replicas = 1\nwait-timeout-ms = 250\n",
        )
        .expect("valid");
        let redis = config.redis_config().expect("valid").expect("redis");
        assert_eq!(redis.hosts.len(), 4);
        assert!(matches!(redis.hosts[1], HostEntry::Tcp { port: 6380, .. }));
        assert!(matches!(redis.hosts[3], HostEntry::Sentinel(_)));
        assert_eq!(redis.wait_for_replicas, 1);
        assert_eq!(redis.wait_timeout, Duration::from_millis(250));
        let shown = format!("{redis:?}");
        assert!(!shown.contains("pw\"") && !shown.contains("spw"), "{shown}");
    }

    #[test]
    fn a_bad_host_entry_is_refused_naming_it() {
        let err = parse(
            "[redis]\nhosts = [{ sentinels = [[\"s\", 1]], master-name = \"m\", socket-timeout = 5 }]\n",
        )
        .expect_err("unknown key")
        .to_string();
        assert!(err.contains("socket-timeout"), "{err}");
        assert!(err.contains("switchyard.toml"), "{err}");
        let err = parse("[redis]\nhosts = [{ master-name = \"m\" }]\n")
            .expect_err("no sentinels")
            .to_string();
        assert!(err.contains("the Sentinel entry for m"), "{err}");
        let config = parse("[redis]\nhosts = [\"redis://a\", { address = \"http://u:pw@b\" }]\n")
            .expect("parses");
        let err = config.redis_config().expect_err("bad scheme").to_string();
        assert!(err.contains("entry 1") && !err.contains("pw@"), "{err}");
        let config =
            parse("[redis]\nhosts = [\"redis://a\"]\nwait-for-replicas = 1\nwait-timeout-ms = 0\n")
                .expect("parses");
        let err = config.redis_config().expect_err("0 ms").to_string();
        assert!(err.contains("redis.wait-timeout-ms"), "{err}");
    }

    #[test]
    fn the_heartbeat_ttl_is_read_and_zero_is_refused() {
        let config = parse("[redis]\nhosts = [\"redis://a:6379\"]\nheartbeat-ttl-secs = 2\n")
            .expect("valid");
        let redis = config.redis_config().expect("valid").expect("redis");
        assert_eq!(redis.heartbeat_ttl, Duration::from_secs(2));
        let config = parse("[redis]\nhosts = [\"redis://a:6379\"]\nheartbeat-ttl-secs = 0\n")
            .expect("parses");
        let err = config.redis_config().expect_err("0 is refused").to_string();
        assert!(err.contains("redis.heartbeat-ttl-secs"), "{err}");
    }

    #[test]
    fn the_handshake_timeout_is_from_one_second_to_a_day() {
        let mut config = Config {
            plugins: std::env::temp_dir(),
            ..Config::default()
        };
        for (secs, valid) in [(0, false), (1, true), (86_400, true), (u64::MAX, false)] {
            config.websocket.handshake_timeout_secs = secs;
            match config.validate() {
                Ok(()) => assert!(valid, "{secs} accepted"),
                Err(err) => {
                    assert!(!valid, "{secs} refused: {err}");
                    assert!(err.to_string().contains("handshake-timeout-secs"), "{err}");
                }
            }
        }
    }

    #[test]
    fn the_admin_listener_is_read_and_may_not_be_the_public_port() {
        let mut config = Config {
            plugins: std::env::temp_dir(),
            ..parse("port = 8000\n[admin]\nbind = \"127.0.0.1:9100\"\n").expect("valid")
        };
        assert_eq!(
            config.admin.bind,
            Some(std::net::SocketAddr::from(([127, 0, 0, 1], 9100)))
        );
        config.validate().expect("its own port is valid");
        config.admin.bind = Some(std::net::SocketAddr::from(([0, 0, 0, 0], 8000)));
        let err = config.validate().expect_err("the public port").to_string();
        assert!(err.contains("admin.bind"), "{err}");
        let err = parse("[admin]\nbind = \"localhost\"\n").expect_err("not an address");
        assert!(err.to_string().contains("bind"), "{err}");
    }

    #[test]
    fn deflate_window_bits_are_from_9_to_15() {
        let config = parse(
            "[websocket]\npermessage-deflate = true\ndeflate-server-max-window-bits = 10\n\
             deflate-client-no-context-takeover = true\ndeflate-threshold = 0\n",
        )
        .expect("the deflate keys parse");
        assert!(config.websocket.permessage_deflate);
        assert_eq!(config.websocket.deflate_server_max_window_bits, 10);
        assert_eq!(config.websocket.deflate_threshold, 0);
        let mut config = Config {
            plugins: std::env::temp_dir(),
            ..config
        };
        for (bits, valid) in [(8, false), (9, true), (15, true), (16, false)] {
            config.websocket.deflate_client_max_window_bits = bits;
            match config.validate() {
                Ok(()) => assert!(valid, "{bits} accepted"),
                Err(err) => {
                    assert!(!valid, "{bits} refused: {err}");
                    let err = err.to_string();
                    assert!(err.contains("deflate-client-max-window-bits"), "{err}");
                    assert!(err.contains(&bits.to_string()), "{err}");
                }
            }
        }
    }

    #[test]
    fn a_bad_redis_url_is_refused_with_password_redacted() {
        let config = Config {
            plugins: std::env::temp_dir(),
            redis_url: Some("http://user:secret@127.0.0.1:6379/0".into()),
            ..Config::default()
        };
        let err = config.validate().expect_err("not a redis URL").to_string();
        assert!(err.contains("redis.hosts"), "{err}");
        assert!(!err.contains("secret"), "{err}");
        assert!(err.contains("user:***@127.0.0.1"), "{err}");
    }
}
