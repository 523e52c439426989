//! `switchyard compile`: precompile components to `.cwasm` with the engine
//! configuration the server builds from the same config file, written
//! under a hidden name and renamed into place. The server prefers a
//! `.cwasm` beside a `.wasm` when it was compiled from that very `.wasm`
//! (see `switchyard_host`'s `precompiled` module).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context as _;

use crate::cli::CompileArgs;
use crate::config::Config;

/// Precompile every file `args` names (or every `*.wasm` of the plugin
/// directory); prints one line per file written. Fails on the first file
/// that does not compile, naming it.
pub fn run(args: &CompileArgs) -> anyhow::Result<()> {
    let mut config = match &args.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    if let Some(plugins) = &args.plugins {
        config.plugins.clone_from(plugins);
    }
    config.validate()?;
    let files = if args.files.is_empty() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&config.plugins)
            .with_context(|| format!("reading plugin directory {}", config.plugins.display()))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|path| {
                path.extension().is_some_and(|ext| ext == "wasm")
                    && path
                        .file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| !n.starts_with('.'))
            })
            .collect();
        files.sort();
        files
    } else {
        args.files.clone()
    };
    if files.is_empty() {
        anyhow::bail!("no .wasm files to compile in {}", config.plugins.display());
    }
    let limits = config.guest_limits();
    for file in &files {
        let started = Instant::now();
        let written = switchyard_host::precompile_file(&limits, file, args.out_dir.as_deref())?;
        println!(
            "{} -> {} ({:.1?})",
            file.display(),
            written.display(),
            started.elapsed()
        );
    }
    Ok(())
}
