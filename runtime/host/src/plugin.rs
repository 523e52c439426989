//! Loading one plugin version: its files read, compiled once, imports
//! resolved once (`instantiate_pre`), exports checked before it goes live.
//! The product, an [`Artifact`], is immutable.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::{Component, InstancePre, Linker};

use crate::bindings::IncomingHandlerIndices;
use crate::engine::GuestLimits;
use crate::guest_exports::{ConsumerIndices, MigrationIndicesAny};
use crate::keyvalue;
use crate::manifest::{InstanceMode, Manifest, ManifestError};
use crate::precompiled;
use crate::route::RouteError;
use crate::state::ConsumerState;

/// Why a plugin could not be loaded. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The file name does not make a plugin name.
    #[error("plugin file name {path}: {reason}")]
    BadName {
        /// The file.
        path: String,
        /// What is wrong with its name.
        reason: String,
    },
    /// The file could not be read.
    #[error("cannot read plugin {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why it could not be read.
        source: std::io::Error,
    },
    /// wasmtime could not compile the file.
    #[error("{path} is not a valid WebAssembly component: {source:#}")]
    Compile {
        /// The file.
        path: String,
        /// wasmtime's error.
        source: wasmtime::Error,
    },
    /// The component imports what the linker does not define.
    #[error("{path} needs imports the host does not provide: {source:#}")]
    Imports {
        /// The file.
        path: String,
        /// The linker's error, naming the import.
        source: wasmtime::Error,
    },
    /// The manifest has WebSocket routes but the component lacks the
    /// `websocket-consumer` exports.
    #[error(
        "{path} does not export the switchyard:consumer/websocket-consumer interface (0.2.x, or 0.1.x) \
         (is it built for the `consumer` world of wit/consumer.wit?): {source:#}"
    )]
    Exports {
        /// The file.
        path: String,
        /// What is missing.
        source: wasmtime::Error,
    },
    /// The component imports `wasi:keyvalue` but its manifest does not opt in.
    #[error(
        "{path} imports {interface} but its manifest does not opt in: add `{key} = true` to {manifest}"
    )]
    KeyValueNotEnabled {
        /// The file.
        path: String,
        /// The `wasi:keyvalue` import found.
        interface: String,
        /// The manifest key that opts in (`keyvalue`).
        key: &'static str,
        /// The manifest file to add it to.
        manifest: String,
    },
    /// The manifest has `http-routes` but the component lacks the
    /// `wasi:http/incoming-handler` export.
    #[error(
        "{path} has http-routes but does not export wasi:http/incoming-handler@0.2.x \
         (build it for the `http-handler` world of wit/consumer.wit, or any wasi:http/proxy \
         toolchain): {source:#}"
    )]
    HttpExports {
        /// The file.
        path: String,
        /// What is missing.
        source: wasmtime::Error,
    },
    /// The manifest beside the file is invalid.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// With no manifest, the route made from the name is invalid.
    #[error("default route for {path}: {source}")]
    DefaultRoute {
        /// The file.
        path: String,
        /// Why the route is invalid.
        source: RouteError,
    },
    /// A route is already served by another live plugin.
    #[error(
        "route `{route}` of plugin `{plugin}` is already served by plugin `{other}` (as `{other_route}`)"
    )]
    RouteConflict {
        /// The route of the plugin being loaded.
        route: String,
        /// The plugin being loaded.
        plugin: String,
        /// The live plugin's route that matches the same paths.
        other_route: String,
        /// The live plugin.
        other: String,
    },
    /// The manifest's `[limits]` are out of range.
    #[error("invalid [limits] in the manifest of {path}: {message}")]
    Limits {
        /// The file.
        path: String,
        /// What is out of range.
        message: String,
    },
    /// The blocking compile task panicked or was cancelled.
    #[error("compiling {path} panicked or was cancelled")]
    Join {
        /// The file.
        path: String,
        /// The task's error.
        source: tokio::task::JoinError,
    },
}

/// A compiled, validated plugin version, ready to instantiate. Immutable:
/// the runtime state of the version (its open connections, instance slots,
/// retirement and shared instance) is [`crate::version::Version`]'s.
pub struct Artifact {
    name: Arc<str>,
    manifest: Manifest,
    hash: String,
    /// Identifies the version: the component and the manifest it came with.
    fingerprint: String,
    source: PathBuf,
    loaded_at: SystemTime,
    /// The server's guest limits narrowed by the manifest's `[limits]`.
    limits: GuestLimits,
    /// Where the code came from: the `.cwasm` beside the `.wasm`, or why
    /// that was refused.
    precompiled: Precompiled,
    pub(crate) pre: InstancePre<ConsumerState>,
    /// Present when the manifest has WebSocket routes (checked at load).
    pub(crate) consumer_exports: Option<ConsumerIndices>,
    /// Present when the manifest has HTTP routes (checked at load).
    pub(crate) http_exports: Option<IncomingHandlerIndices>,
    /// Present when the component exports `migration`.
    pub(crate) migration_exports: Option<MigrationIndicesAny>,
}

impl std::fmt::Debug for Artifact {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Artifact")
            .field("name", &self.name)
            .field("hash", &self.hash)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl Artifact {
    /// The plugin's name: its file name without `.wasm`.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn name_arc(&self) -> Arc<str> {
        Arc::clone(&self.name)
    }

    /// The manifest the plugin came with (or the default one).
    pub(crate) fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The version's id: the first 16 hex digits of its fingerprint, so
    /// the same component under another manifest is another version.
    pub(crate) fn hash(&self) -> &str {
        &self.hash
    }

    /// The component's and the manifest's hashes: equal fingerprints are the
    /// same version.
    pub(crate) fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Whether connections can move to this version: the component exports
    /// the `migration` interface and each connection has its own instance.
    pub(crate) fn migratable(&self) -> bool {
        self.migration_exports.is_some() && self.manifest.instance == InstanceMode::PerConnection
    }

    /// How long a connection may idle before its instance hibernates:
    /// `hibernate-after-secs` when the version can migrate (its own
    /// instance per connection, the `migration` exports), else never.
    pub(crate) fn hibernate_after(&self) -> Option<std::time::Duration> {
        self.manifest
            .hibernate_after_secs
            .filter(|_| self.migratable())
            .map(std::time::Duration::from_secs)
    }

    /// The `.wasm` file the artifact was compiled from.
    pub(crate) fn source(&self) -> &Path {
        &self.source
    }

    /// When the artifact was compiled.
    pub(crate) fn loaded_at(&self) -> SystemTime {
        self.loaded_at
    }

    /// The limits this plugin's instances run under.
    pub(crate) fn limits(&self) -> &GuestLimits {
        &self.limits
    }

    /// Whether the code came from a `.cwasm`, and why one was refused.
    pub(crate) fn precompiled(&self) -> &Precompiled {
        &self.precompiled
    }
}

/// Where a version's code came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Precompiled {
    /// Compiled from the `.wasm` (no `.cwasm` beside it).
    No,
    /// Loaded from the `.cwasm` beside the `.wasm`.
    Used,
    /// Compiled from the `.wasm` because the `.cwasm` was refused: why.
    Refused(String),
}

/// The component of a plugin: from the `.cwasm` beside its `.wasm` when
/// that was compiled from this very `.wasm` for this engine, else compiled
/// from the `.wasm` (saying why the `.cwasm` was refused).
fn load_component(
    engine: &Engine,
    files: &PluginFiles,
) -> Result<(Component, Precompiled), PluginError> {
    let cwasm = precompiled::beside(&files.wasm_path);
    let mut outcome = Precompiled::No;
    if cwasm.is_file() {
        let sha = Sha256::digest(&files.wasm);
        match precompiled::load(engine, &cwasm, &files.wasm_path, &sha) {
            Ok(component) => {
                tracing::info!(plugin = %files.name, file = %cwasm.display(), "using the precompiled component");
                return Ok((component, Precompiled::Used));
            }
            Err(err) => {
                tracing::warn!(plugin = %files.name, "{err}; compiling {} instead", files.wasm_path.display());
                outcome = Precompiled::Refused(err.to_string());
            }
        }
    }
    let component = Component::new(engine, &files.wasm).map_err(|source| PluginError::Compile {
        path: files.wasm_path.display().to_string(),
        source,
    })?;
    Ok((component, outcome))
}

/// Check that a file stem can name a plugin: it shows up in logs, routes
/// and (later) the admin API, so keep it plain.
pub(crate) fn plugin_name(path: &Path) -> Result<String, PluginError> {
    let bad = |reason: &str| PluginError::BadName {
        path: path.display().to_string(),
        reason: reason.to_owned(),
    };
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .ok_or_else(|| bad("not valid UTF-8"))?;
    if stem.is_empty() || stem.len() > 64 {
        return Err(bad("must be 1 to 64 characters"));
    }
    if !stem
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(bad("may only contain ASCII letters, digits, '-' and '_'"));
    }
    Ok(stem.to_owned())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The files of one plugin version as read from the plugin directory.
#[derive(Debug, Clone)]
pub(crate) struct PluginFiles {
    pub(crate) name: String,
    pub(crate) wasm_path: PathBuf,
    pub(crate) wasm: Vec<u8>,
    pub(crate) manifest: Manifest,
    pub(crate) fingerprint: String,
}

impl PluginFiles {
    /// Read `<name>.wasm` and its manifest `<name>.toml` (or the default
    /// manifest when there is none).
    pub(crate) fn read(wasm_path: &Path) -> Result<Self, PluginError> {
        let name = plugin_name(wasm_path)?;
        let manifest_path = wasm_path.with_extension("toml");
        let manifest_text = match std::fs::read_to_string(&manifest_path) {
            Ok(text) => Some(text),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => None,
            Err(source) => {
                return Err(ManifestError::Read {
                    path: manifest_path.display().to_string(),
                    source,
                }
                .into());
            }
        };
        let manifest = match &manifest_text {
            Some(text) => Manifest::parse(text, &manifest_path)?,
            None => Manifest::default_for(&name).map_err(|source| PluginError::DefaultRoute {
                path: wasm_path.display().to_string(),
                source,
            })?,
        };
        let wasm = std::fs::read(wasm_path).map_err(|source| PluginError::Read {
            path: wasm_path.display().to_string(),
            source,
        })?;
        let mut hasher = Sha256::new();
        hasher.update(Sha256::digest(&wasm));
        hasher.update(Sha256::digest(manifest_text.unwrap_or_default()));
        Ok(Self {
            name,
            wasm_path: wasm_path.to_path_buf(),
            fingerprint: hex(&hasher.finalize()[..16]),
            wasm,
            manifest,
        })
    }
}

/// Compile and pre-instantiate a plugin. Blocking and CPU-heavy: call it
/// from `spawn_blocking`, never on an async worker. With the engine's cache
/// (keyed by the component's content hash) an unchanged component is not
/// compiled again, even across restarts.
pub(crate) fn compile(
    engine: &Engine,
    linker: &Linker<ConsumerState>,
    server_limits: &GuestLimits,
    files: PluginFiles,
) -> Result<Artifact, PluginError> {
    let path = files.wasm_path.display().to_string();
    let limits = server_limits
        .for_plugin(&files.manifest.limits)
        .map_err(|message| PluginError::Limits {
            path: path.clone(),
            message,
        })?;
    // The version's id: the component and its manifest, as the fingerprint.
    let hash = files.fingerprint[..16].to_owned();
    let (component, precompiled) = load_component(engine, &files)?;
    if !files.manifest.keyvalue
        && let Some(interface) = keyvalue::imported_interface(&component, engine)
    {
        return Err(PluginError::KeyValueNotEnabled {
            path,
            interface,
            key: keyvalue::MANIFEST_KEY,
            manifest: files.wasm_path.with_extension("toml").display().to_string(),
        });
    }
    let pre = linker
        .instantiate_pre(&component)
        .map_err(|source| PluginError::Imports {
            path: path.clone(),
            source,
        })?;
    let consumer_exports = if files.manifest.routes.is_empty() {
        None
    } else {
        Some(
            ConsumerIndices::new(&pre).map_err(|source| PluginError::Exports {
                path: path.clone(),
                source,
            })?,
        )
    };
    if let Some(exports) = &consumer_exports {
        tracing::debug!(
            plugin = files.name,
            contract = exports.contract(),
            "{path}: built against switchyard:consumer {}",
            exports.contract()
        );
    }
    let http_exports = if files.manifest.http_routes.is_empty() {
        None
    } else {
        Some(
            IncomingHandlerIndices::new(&pre).map_err(|source| PluginError::HttpExports {
                path: path.clone(),
                source,
            })?,
        )
    };
    let migration_exports = MigrationIndicesAny::new(&pre);
    if files.manifest.hibernate_after_secs.is_some() {
        if migration_exports.is_none() {
            tracing::warn!(
                plugin = files.name,
                "{path}: hibernate-after-secs has no effect: the component does not export `migration`"
            );
        } else if files.manifest.instance == InstanceMode::Shared {
            tracing::warn!(
                plugin = files.name,
                "{path}: hibernate-after-secs has no effect with instance = \"shared\""
            );
        }
    }
    Ok(Artifact {
        name: files.name.into(),
        manifest: files.manifest,
        hash,
        fingerprint: files.fingerprint,
        source: files.wasm_path,
        loaded_at: SystemTime::now(),
        limits,
        precompiled,
        pre,
        consumer_exports,
        http_exports,
        migration_exports,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_names_are_plain() {
        assert_eq!(plugin_name(Path::new("/p/chat.wasm")).expect("ok"), "chat");
        assert_eq!(
            plugin_name(Path::new("chat-v2_x.wasm")).expect("ok"),
            "chat-v2_x"
        );
        let err = plugin_name(Path::new("my chat.wasm")).expect_err("space");
        assert!(err.to_string().contains("my chat.wasm"), "{err}");
        assert!(plugin_name(Path::new("caf\u{e9}.wasm")).is_err());
    }
}
