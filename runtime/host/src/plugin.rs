//! One loaded plugin version: compiled once, imports resolved once
//! (`instantiate_pre`), exports checked before it goes live.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;
use wasmtime::Engine;
use wasmtime::component::{Component, Linker};

use crate::bindings::ConsumerPre;
use crate::engine::GuestLimits;
use crate::manifest::{Manifest, ManifestError};
use crate::route::RouteError;
use crate::state::ConsumerState;

/// Why a plugin could not be loaded. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("plugin file name {path}: {reason}")]
    BadName { path: String, reason: String },
    #[error("cannot read plugin {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not a valid WebAssembly component: {message}")]
    Compile { path: String, message: String },
    #[error("{path} needs imports the host does not provide: {message}")]
    Imports { path: String, message: String },
    #[error(
        "{path} does not export the switchyard:consumer/websocket-consumer@0.1.0 interface \
         (is it built for the `consumer` world of wit/consumer.wit?): {message}"
    )]
    Exports { path: String, message: String },
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("default route for {path}: {source}")]
    DefaultRoute { path: String, source: RouteError },
    #[error(
        "route `{route}` of plugin `{plugin}` is already served by plugin `{other}` (as `{other_route}`)"
    )]
    RouteConflict {
        route: String,
        plugin: String,
        other_route: String,
        other: String,
    },
    #[error("invalid [limits] in the manifest of {path}: {message}")]
    Limits { path: String, message: String },
    #[error("compiling {path} panicked or was cancelled")]
    Join { path: String },
}

/// A compiled, validated plugin version, ready to instantiate.
pub struct Plugin {
    name: Arc<str>,
    manifest: Manifest,
    hash: String,
    source: PathBuf,
    loaded_at: SystemTime,
    /// The server's guest limits narrowed by the manifest's `[limits]`.
    limits: GuestLimits,
    /// This version's instance slots (`limits.max-instances`).
    pub(crate) slots: Arc<Semaphore>,
    pub(crate) pre: ConsumerPre<ConsumerState>,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.name)
            .field("hash", &self.hash)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl Plugin {
    /// The plugin's name: its file name without `.wasm`.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn name_arc(&self) -> Arc<str> {
        Arc::clone(&self.name)
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The first 16 hex digits of the SHA-256 of the component bytes.
    pub fn hash(&self) -> &str {
        &self.hash
    }

    pub fn source(&self) -> &Path {
        &self.source
    }

    pub fn loaded_at(&self) -> SystemTime {
        self.loaded_at
    }

    /// The limits this plugin's instances run under.
    pub fn limits(&self) -> &GuestLimits {
        &self.limits
    }
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

/// Read the manifest beside `wasm_path` (`<name>.toml`), or the default one.
pub(crate) fn read_manifest(wasm_path: &Path, name: &str) -> Result<Manifest, PluginError> {
    let manifest_path = wasm_path.with_extension("toml");
    if manifest_path.exists() {
        Ok(Manifest::read(&manifest_path)?)
    } else {
        Manifest::default_for(name).map_err(|source| PluginError::DefaultRoute {
            path: wasm_path.display().to_string(),
            source,
        })
    }
}

/// Compile and pre-instantiate a plugin. Blocking and CPU-heavy: call it
/// from `spawn_blocking`, never on an async worker.
pub(crate) fn compile(
    engine: &Engine,
    linker: &Linker<ConsumerState>,
    server_limits: &GuestLimits,
    wasm_path: &Path,
) -> Result<Plugin, PluginError> {
    let path = wasm_path.display().to_string();
    let name = plugin_name(wasm_path)?;
    let manifest = read_manifest(wasm_path, &name)?;
    let limits = server_limits
        .for_plugin(&manifest.limits)
        .map_err(|message| PluginError::Limits {
            path: path.clone(),
            message,
        })?;
    let slots = usize::try_from(limits.max_instances)
        .unwrap_or(usize::MAX)
        .min(Semaphore::MAX_PERMITS);
    let bytes = std::fs::read(wasm_path).map_err(|source| PluginError::Read {
        path: path.clone(),
        source,
    })?;
    let digest = Sha256::digest(&bytes);
    let hash: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    let component = Component::new(engine, &bytes).map_err(|err| PluginError::Compile {
        path: path.clone(),
        message: format!("{err:#}"),
    })?;
    let instance_pre = linker
        .instantiate_pre(&component)
        .map_err(|err| PluginError::Imports {
            path: path.clone(),
            message: format!("{err:#}"),
        })?;
    let pre = ConsumerPre::new(instance_pre).map_err(|err| PluginError::Exports {
        path: path.clone(),
        message: format!("{err:#}"),
    })?;
    Ok(Plugin {
        name: name.into(),
        manifest,
        hash,
        source: wasm_path.to_path_buf(),
        loaded_at: SystemTime::now(),
        limits,
        slots: Arc::new(Semaphore::new(slots)),
        pre,
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
