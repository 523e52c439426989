//! The plugin manifest: `<name>.toml` beside `<name>.wasm`.
//!
//! ```toml
//! # Django path() patterns, without a leading slash.
//! routes = ["ws/chat/<str:room_name>/"]
//! # Optional: HTTP routes, served by the component's
//! # `wasi:http/incoming-handler` export. HTTP and WebSocket are routed
//! # separately (as Channels' ProtocolTypeRouter does); a manifest needs
//! # at least one route of either kind.
//! http-routes = ["api/rooms/<str:room_name>/messages/"]
//! # Optional: "per-connection" (default; an instance per connection, as
//! # Channels has a consumer per connection) or "shared" (one instance for
//! # every connection of this version, calls taking turns).
//! instance = "per-connection"
//! # Optional: what happens to open connections when this file replaces
//! # the live version: "drain" (default), "restart" or "migrate".
//! on-replace = "drain"
//!
//! # Optional; each key defaults to the server's `[guest]` setting.
//! [limits]
//! memory-bytes = 16777216   # at most the server's guest.memory-bytes
//! call-timeout-ms = 1000    # epoch deadline and tokio timeout per call
//! max-instances = 100       # live instances of this plugin (503 past it)
//! max-core-instances = 64   # core instances per component instance (1 to 1024)
//! ```
//!
//! `[http] reuse-instances = true` (default `false`) keeps a small pool of
//! idle instances per version and serves each HTTP request with one of
//! them instead of a fresh instance: much cheaper, but the guest's globals
//! and memory persist from one request to the next (see `http_pool`).
//!
//! `hibernate-after-secs = 30` (a top-level key, off by default) lets an
//! idle connection give its instance back: after that many seconds without
//! a frame, an event or a send, the host snapshots it through the
//! `migration` exports, keeps only the bytes and drops the instance; the
//! next frame or event restores it first (see `hibernate`). 1 to
//! [`MAX_HIBERNATE_AFTER_SECS`]. No effect on a plugin without `migration`
//! or with `instance = "shared"` (logged at load).
//!
//! `keyvalue = true` (a top-level key, default `false`) opts the plugin
//! into `wasi:keyvalue` @0.2.0-draft and @0.2.0-draft2 (store, atomics,
//! batch): its buckets live in the plugin's own namespace, in memory or in
//! Redis as the server decides. A component that imports `wasi:keyvalue`
//! without it is refused at load.
//!
//! Unknown keys are errors, so a typo never silently changes behaviour. A
//! plugin without a manifest serves `ws/<name>/`.

use std::path::Path;

use serde::Deserialize;

use crate::route::{RouteError, RoutePattern};

/// Paths the server keeps for itself (the admin API).
pub(crate) const RESERVED_PREFIX: &str = "_switchyard/";
/// Single paths the server keeps for itself: liveness and readiness probes
/// (`/healthz`, `/readyz`), with or without a trailing slash.
pub(crate) const RESERVED_PATHS: [&str; 4] = ["healthz", "healthz/", "readyz", "readyz/"];

/// The longest `hibernate-after-secs` accepted: a week.
pub const MAX_HIBERNATE_AFTER_SECS: u64 = 7 * 24 * 3600;

/// How instances of a plugin map to connections.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InstanceMode {
    /// One instance per connection: Channels semantics (the default).
    #[default]
    PerConnection,
    /// One instance for every connection of the version; calls take turns
    /// on it. For stateless consumers (or ones keeping state per connection
    /// id): each connection then costs no instance of its own. A trap or a
    /// deadline breaks the instance for all of its connections (each is
    /// closed with 1011 at its next call); new connections get a fresh one.
    /// Such a version never migrates (`on-replace = "migrate"` drains).
    Shared,
}

/// What happens to the open connections of the live version when a new
/// version replaces it (the new version's manifest decides) or the plugin
/// is removed (the old version's manifest decides).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReplacePolicy {
    /// Open connections finish on the old version; new ones get the new.
    #[default]
    Drain,
    /// Open connections are closed with 1012 (service restart) so clients
    /// reconnect to the new version.
    Restart,
    /// Open connections move to the new version through the `migration`
    /// exports, without a disconnect; where that is not possible they drain.
    Migrate,
}

/// A parsed, validated manifest.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Manifest {
    /// The WebSocket routes this plugin serves.
    #[serde(default)]
    pub routes: Vec<RoutePattern>,
    /// The HTTP routes this plugin serves (`http-routes`).
    #[serde(default)]
    pub http_routes: Vec<RoutePattern>,
    /// `instance`: an instance per connection (the default) or one shared.
    #[serde(default)]
    pub instance: InstanceMode,
    /// `on-replace`: what open connections do when a new version arrives.
    #[serde(default)]
    pub on_replace: ReplacePolicy,
    /// `[limits]`: the plugin's own guest limits.
    #[serde(default)]
    pub limits: PluginLimits,
    /// `keyvalue`: whether the plugin may use `wasi:keyvalue`.
    #[serde(default)]
    pub keyvalue: bool,
    /// `hibernate-after-secs`: idle seconds after which a connection's
    /// instance is snapshotted and dropped; `None` (the default) never.
    #[serde(default)]
    pub hibernate_after_secs: Option<u64>,
    /// `[http]`: how the plugin's HTTP routes are served.
    #[serde(default)]
    pub http: HttpOptions,
}

/// A plugin's `[http]` table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct HttpOptions {
    /// `reuse-instances`: serve requests with idle instances kept from
    /// earlier requests instead of a fresh instance each (default `false`).
    /// The guest's globals and memory then persist across requests.
    pub reuse_instances: bool,
}

/// A plugin's own guest limits (`[limits]`); `None` takes the server's.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PluginLimits {
    /// Most linear memory one instance may grow to; at most the server's
    /// `guest.memory-bytes`.
    pub memory_bytes: Option<usize>,
    /// Longest one call into the guest may run.
    pub call_timeout_ms: Option<u64>,
    /// Most live instances of this plugin; within the server-wide cap.
    pub max_instances: Option<u32>,
    /// Most core instances one instance of the component may create
    /// (default 64, at most 1024): interpreters built by componentize-py
    /// with `--stub-wasi` need 38.
    pub max_core_instances: Option<u32>,
}

/// Why a manifest could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The manifest exists but could not be read.
    #[error("cannot read manifest {path}: {source}")]
    Read {
        /// The manifest's path.
        path: String,
        /// Why it could not be read.
        source: std::io::Error,
    },
    /// The manifest is not valid TOML for [`Manifest`], or a route in it is
    /// not a valid pattern.
    #[error("invalid manifest {path}: {message}")]
    Invalid {
        /// The manifest's path.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// Both `routes` and `http-routes` are empty.
    #[error("manifest {path} declares no routes (neither `routes` nor `http-routes`)")]
    NoRoutes {
        /// The manifest's path.
        path: String,
    },
}

impl Manifest {
    /// The manifest used when a plugin has none: it serves `ws/<name>/`.
    pub(crate) fn default_for(name: &str) -> Result<Self, RouteError> {
        Ok(Self {
            routes: vec![RoutePattern::parse(&format!("ws/{name}/"))?],
            http_routes: Vec::new(),
            instance: InstanceMode::default(),
            on_replace: ReplacePolicy::default(),
            limits: PluginLimits::default(),
            keyvalue: false,
            http: HttpOptions::default(),
            hibernate_after_secs: None,
        })
    }

    /// Parse manifest text; `path` only names the file in errors.
    pub(crate) fn parse(text: &str, path: &Path) -> Result<Self, ManifestError> {
        let manifest: Manifest = toml::from_str(text).map_err(|err| ManifestError::Invalid {
            path: path.display().to_string(),
            message: err.message().to_owned(),
        })?;
        if manifest.routes.is_empty() && manifest.http_routes.is_empty() {
            return Err(ManifestError::NoRoutes {
                path: path.display().to_string(),
            });
        }
        if let Some(route) = manifest
            .routes
            .iter()
            .chain(&manifest.http_routes)
            .find(|r| r.as_str().starts_with(RESERVED_PREFIX))
        {
            return Err(ManifestError::Invalid {
                path: path.display().to_string(),
                message: format!(
                    "route `{route}`: paths under /{RESERVED_PREFIX} are reserved for the server"
                ),
            });
        }
        if let Some(route) = manifest
            .routes
            .iter()
            .find(|r| RESERVED_PATHS.contains(&r.as_str()))
        {
            return Err(ManifestError::Invalid {
                path: path.display().to_string(),
                message: format!(
                    "route `{route}`: /healthz and /readyz are reserved for the server"
                ),
            });
        }
        if let Some(secs) = manifest.hibernate_after_secs
            && !(1..=MAX_HIBERNATE_AFTER_SECS).contains(&secs)
        {
            return Err(ManifestError::Invalid {
                path: path.display().to_string(),
                message: format!(
                    "hibernate-after-secs = {secs}: must be 1 to {MAX_HIBERNATE_AFTER_SECS} \
                     (leave the key out to never hibernate)"
                ),
            });
        }
        Ok(manifest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Manifest, ManifestError> {
        Manifest::parse(text, Path::new("chat.toml"))
    }

    #[test]
    fn parses_routes_and_mode() {
        let m = parse("routes = [\"ws/chat/<str:room_name>/\"]\ninstance = \"per-connection\"\n")
            .expect("valid manifest");
        assert_eq!(m.routes.len(), 1);
        assert_eq!(m.routes[0].as_str(), "ws/chat/<str:room_name>/");
        assert_eq!(m.instance, InstanceMode::PerConnection);
    }

    #[test]
    fn unknown_keys_are_errors() {
        let err = parse("routes = [\"ws/a/\"]\nrouts = []\n").expect_err("typo must fail");
        assert!(err.to_string().contains("routs"), "{err}");
        assert!(err.to_string().contains("chat.toml"), "{err}");
    }

    #[test]
    fn bad_pattern_names_the_pattern() {
        let err = parse("routes = [\"ws/<float:x>/\"]\n").expect_err("bad converter");
        assert!(err.to_string().contains("float"), "{err}");
    }

    #[test]
    fn empty_routes_are_an_error() {
        let err = parse("routes = []\n").expect_err("no routes");
        assert!(matches!(err, ManifestError::NoRoutes { .. }), "{err}");
    }

    #[test]
    fn http_routes_parse_and_may_stand_alone() {
        let m = parse("http-routes = [\"api/hello/<str:name>/\"]\n").expect("valid");
        assert!(m.routes.is_empty());
        assert_eq!(m.http_routes[0].as_str(), "api/hello/<str:name>/");
        let err = parse("http-routes = [\"_switchyard/x\"]\n").expect_err("reserved");
        assert!(err.to_string().contains("reserved"), "{err}");
    }

    #[test]
    fn server_paths_are_reserved() {
        let err = parse("routes = [\"_switchyard/plugins\"]\n").expect_err("reserved");
        assert!(err.to_string().contains("reserved"), "{err}");
        for probe in ["healthz", "readyz/"] {
            let err = parse(&format!("routes = [\"ws/a/\", \"{probe}\"]\n")).expect_err(probe);
            assert!(err.to_string().contains("reserved"), "{err}");
        }
    }

    #[test]
    fn the_shared_instance_mode_parses() {
        let m = parse("routes = [\"ws/echo/\"]\ninstance = \"shared\"\n").expect("valid");
        assert_eq!(m.instance, InstanceMode::Shared);
    }

    #[test]
    fn unknown_instance_mode_is_an_error() {
        let err = parse("routes = [\"ws/a/\"]\ninstance = \"pooled\"\n").expect_err("bad mode");
        assert!(err.to_string().contains("pooled"), "{err}");
    }

    #[test]
    fn limits_table_is_optional_and_strict() {
        let m = parse("routes = [\"ws/a/\"]\n").expect("no limits");
        assert_eq!(m.limits, PluginLimits::default());
        let m = parse(
            "routes = [\"ws/a/\"]\n[limits]\nmemory-bytes = 1048576\ncall-timeout-ms = 300\nmax-instances = 3\n",
        )
        .expect("limits");
        assert_eq!(m.limits.memory_bytes, Some(1 << 20));
        assert_eq!(m.limits.call_timeout_ms, Some(300));
        assert_eq!(m.limits.max_instances, Some(3));
        let err = parse("routes = [\"ws/a/\"]\n[limits]\nmemory = 1\n").expect_err("typo");
        assert!(err.to_string().contains("memory"), "{err}");
    }

    #[test]
    fn replace_policy_defaults_to_drain_and_parses() {
        let m = parse("routes = [\"ws/a/\"]\n").expect("valid");
        assert_eq!(m.on_replace, ReplacePolicy::Drain);
        let m = parse("routes = [\"ws/a/\"]\non-replace = \"migrate\"\n").expect("valid");
        assert_eq!(m.on_replace, ReplacePolicy::Migrate);
        let err = parse("routes = [\"ws/a/\"]\non-replace = \"reload\"\n").expect_err("bad");
        assert!(err.to_string().contains("reload"), "{err}");
    }

    #[test]
    fn keyvalue_is_opt_in() {
        assert!(!parse("routes = [\"ws/a/\"]\n").expect("valid").keyvalue);
        assert!(
            parse("routes = [\"ws/a/\"]\nkeyvalue = true\n")
                .expect("valid")
                .keyvalue
        );
        assert!(parse("routes = [\"ws/a/\"]\nkeyvalue = \"yes\"\n").is_err());
    }

    #[test]
    fn instance_reuse_is_opt_in_and_strict() {
        let m = parse("http-routes = [\"api/a/\"]\n").expect("valid");
        assert!(!m.http.reuse_instances);
        let m =
            parse("http-routes = [\"api/a/\"]\n[http]\nreuse-instances = true\n").expect("valid");
        assert!(m.http.reuse_instances);
        let err = parse("http-routes = [\"api/a/\"]\n[http]\nreuse = true\n").expect_err("typo");
        assert!(err.to_string().contains("reuse"), "{err}");
    }

    #[test]
    fn hibernate_after_is_off_by_default_and_bounded() {
        assert_eq!(
            parse("routes = [\"ws/a/\"]\n")
                .expect("valid")
                .hibernate_after_secs,
            None
        );
        let m = parse("routes = [\"ws/a/\"]\nhibernate-after-secs = 30\n").expect("valid");
        assert_eq!(m.hibernate_after_secs, Some(30));
        for bad in ["0", "604801"] {
            let err = parse(&format!(
                "routes = [\"ws/a/\"]\nhibernate-after-secs = {bad}\n"
            ))
            .expect_err(bad);
            let text = err.to_string();
            assert!(text.contains("chat.toml"), "{text}");
            assert!(text.contains("hibernate-after-secs"), "{text}");
        }
        for bad in ["-1", "\"30\""] {
            let err = parse(&format!(
                "routes = [\"ws/a/\"]\nhibernate-after-secs = {bad}\n"
            ))
            .expect_err(bad);
            assert!(err.to_string().contains("chat.toml"), "{err}");
        }
    }

    #[test]
    fn default_manifest_serves_ws_name() {
        let m = Manifest::default_for("echo").expect("valid name");
        assert_eq!(m.routes[0].as_str(), "ws/echo/");
    }
}
