//! Precompiled components (`.cwasm`): what `switchyard compile` writes and
//! the loader prefers, so a deployment neither compiles at start nor keeps
//! the memory compiling leaves behind.
//!
//! A `.cwasm` is a short header followed by wasmtime's serialised form
//! (`Engine::precompile_component`, built with the server's own engine
//! configuration):
//!
//! ```text
//! "switchyard-cwasm-1\n"   magic, 19 bytes
//! SHA-256 of the .wasm     32 bytes
//! wasmtime's bytes         the rest
//! ```
//!
//! The loader takes `<name>.cwasm` beside `<name>.wasm` only when its
//! recorded hash is that of the `.wasm` now there; it refuses a stale,
//! truncated, foreign or differently configured one with an error naming
//! the file, and compiles the `.wasm` instead. Files are written under a
//! hidden name and renamed into place, so a loader never sees half a file.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use crate::engine::{GuestLimits, build_engine};

const MAGIC: &[u8] = b"switchyard-cwasm-1\n";
const HASH_LEN: usize = 32;

/// The extension of a precompiled component.
pub(crate) const EXTENSION: &str = "cwasm";

/// Why a `.cwasm` was not used. Every message names the file.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PrecompiledError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} was not written by `switchyard compile` (no switchyard-cwasm header)")]
    Foreign { path: String },
    #[error(
        "{path} is stale: it was compiled from another version of {wasm}; run `switchyard compile` again"
    )]
    Stale { path: String, wasm: String },
    #[error("{path} does not fit this server's engine: {source:#}")]
    Engine {
        path: String,
        source: wasmtime::Error,
    },
}

/// The `.cwasm` beside a `.wasm`.
pub(crate) fn beside(wasm_path: &Path) -> PathBuf {
    wasm_path.with_extension(EXTENSION)
}

/// Load `cwasm_path` for `engine` if it was compiled from a `.wasm` with
/// this SHA-256.
pub(crate) fn load(
    engine: &Engine,
    cwasm_path: &Path,
    wasm_path: &Path,
    wasm_sha256: &[u8],
) -> Result<Component, PrecompiledError> {
    let path = cwasm_path.display().to_string();
    let bytes = std::fs::read(cwasm_path).map_err(|source| PrecompiledError::Read {
        path: path.clone(),
        source,
    })?;
    let Some(rest) = bytes.strip_prefix(MAGIC) else {
        return Err(PrecompiledError::Foreign { path });
    };
    if rest.len() < HASH_LEN {
        return Err(PrecompiledError::Foreign { path });
    }
    let (hash, code) = rest.split_at(HASH_LEN);
    if hash != wasm_sha256 {
        return Err(PrecompiledError::Stale {
            path,
            wasm: wasm_path.display().to_string(),
        });
    }
    switchyard_cwasm::deserialize_component(engine, code)
        .map_err(|source| PrecompiledError::Engine { path, source })
}

/// Precompile `wasm_path` with the engine the server builds from `limits`
/// and write `<name>.cwasm` into `out_dir` (beside the `.wasm` when
/// `None`), under a hidden name first, then renamed into place. Returns
/// the file written.
pub fn precompile_file(
    limits: &GuestLimits,
    wasm_path: &Path,
    out_dir: Option<&Path>,
) -> anyhow::Result<PathBuf> {
    let (engine, _) = build_engine(limits, None)?;
    let wasm =
        std::fs::read(wasm_path).with_context(|| format!("reading {}", wasm_path.display()))?;
    let code = engine
        .precompile_component(&wasm)
        .map_err(anyhow::Error::from)
        .with_context(|| {
            format!(
                "{} is not a valid WebAssembly component",
                wasm_path.display()
            )
        })?;
    let mut bytes = Vec::with_capacity(MAGIC.len() + HASH_LEN + code.len());
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&Sha256::digest(&wasm));
    bytes.extend_from_slice(&code);
    let file_name = beside(wasm_path)
        .file_name()
        .map(ToOwned::to_owned)
        .with_context(|| format!("{} has no file name", wasm_path.display()))?;
    let dir = match out_dir {
        Some(dir) => dir.to_path_buf(),
        None => wasm_path
            .parent()
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let target = dir.join(&file_name);
    let hidden = dir.join(format!(".{}.tmp", file_name.to_string_lossy()));
    std::fs::write(&hidden, &bytes).with_context(|| format!("writing {}", hidden.display()))?;
    std::fs::rename(&hidden, &target)
        .with_context(|| format!("renaming {} to {}", hidden.display(), target.display()))?;
    Ok(target)
}
