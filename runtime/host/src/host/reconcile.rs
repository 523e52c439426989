//! Reconciling the plugin directory: read and compile new and changed
//! plugin files off the async threads, remember each file's stamp so an
//! unchanged file is not read again, unroute plugins whose files are gone,
//! and keep every load failure for the admin API.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use anyhow::Context as _;
use sha2::{Digest as _, Sha256};

use super::loading::Loading;
use super::{LoadFailure, PluginHost, lock, unix_secs};
use crate::metrics::EventCounters;
use crate::plugin::{self, Artifact, PluginError, PluginFiles};

/// The outcome of loading a plugin directory.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// Plugins made live: new, or changed since they were last loaded.
    pub loaded: Vec<String>,
    /// Plugins whose files had not changed.
    pub unchanged: Vec<String>,
    /// Plugins unrouted because their `.wasm` is gone.
    pub removed: Vec<String>,
    /// Files that failed to load, and why.
    pub failed: Vec<(PathBuf, PluginError)>,
}

impl PluginHost {
    /// Read and compile one plugin off the async threads.
    pub async fn compile(&self, wasm_path: &Path) -> Result<Arc<Artifact>, PluginError> {
        let engine = self.engine.clone();
        let linker = self.linker.clone();
        let limits = self.limits.clone();
        let path = wasm_path.to_path_buf();
        tokio::task::spawn_blocking(move || {
            let files = PluginFiles::read(&path)?;
            plugin::compile(&engine, &linker, &limits, files)
        })
        .await
        .map_err(|source| PluginError::Join {
            path: wasm_path.display().to_string(),
            source,
        })?
        .map(Arc::new)
    }

    fn record_failure(&self, path: &Path, err: &PluginError) {
        tracing::error!(path = %path.display(), "plugin not loaded: {err}");
        EventCounters::bump(&self.events.load_errors);
        let name = failure_key(path);
        lock(&self.load_failures).insert(
            name,
            LoadFailure {
                file: path.display().to_string(),
                error: err.to_string(),
                at: unix_secs(SystemTime::now()),
            },
        );
    }

    /// Bring the live plugins in line with `dir`: load new and changed
    /// plugins (a version is the component plus its manifest), unroute the
    /// ones whose `.wasm` is gone. Files whose names start with `.` are
    /// ignored: that is where editors and copy tools keep partial files. A
    /// plugin that fails to load never replaces its live version: the error
    /// is logged and kept for the admin API.
    ///
    /// Every changed file is read first (each plugin is then `loading`,
    /// its routes answering 503), then compiled, as many at once as there
    /// are cores, each going live as soon as it is ready. Reconciles take
    /// turns.
    pub async fn load_dir(&self, dir: &Path) -> anyhow::Result<LoadReport> {
        let _turn = self.reconciling.lock().await;
        let result = self.reconcile(dir).await;
        self.loading.finish_initial();
        result
    }

    async fn reconcile(&self, dir: &Path) -> anyhow::Result<LoadReport> {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
            .with_context(|| format!("reading plugin directory {}", dir.display()))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|path| is_plugin_file(path))
            .collect();
        paths.sort();
        let mut report = LoadReport::default();
        let mut present = Vec::new();
        let mut seen = HashMap::new();
        let mut changed = Vec::new();
        for path in paths {
            present.push(failure_key(&path));
            let before = file_stamp(&path);
            let last = lock(&self.stamps).get(&path).cloned();
            if let Some((stamp, outcome)) = last
                && stamp == before
                && self.still_holds(&path, outcome)
            {
                // Neither file changed since it was last read, so it is not
                // read again: a plugin that failed is retried only once it
                // changes (or another plugin comes or goes).
                if outcome == Outcome::Loaded {
                    report
                        .unchanged
                        .push(plugin::plugin_name(&path).unwrap_or_default());
                }
                seen.insert(path, (stamp, outcome));
                continue;
            }
            changed.push((path, before));
        }
        // Read every changed file, so that each is `loading` before any
        // compiles; a file equal to its live version is done here.
        let mut to_compile = Vec::new();
        for (path, before) in changed {
            match self.read_file(&path).await {
                Ok(Some(files)) => to_compile.push((path, before, files)),
                Ok(None) => {
                    report
                        .unchanged
                        .push(plugin::plugin_name(&path).unwrap_or_default());
                    seen.insert(path, (before, Outcome::Loaded));
                }
                Err(err) => self.file_failed(&mut report, &mut seen, path, before, err),
            }
        }
        let of = to_compile.len();
        let queued: Vec<_> = to_compile
            .into_iter()
            .enumerate()
            .map(|(i, (path, before, files))| {
                let loading = self
                    .loading
                    .begin(&files.name, &path, &files.manifest, i + 1, of);
                (path, before, files, loading)
            })
            .collect();
        // Compiles run on the blocking pool, as many at once as there are
        // cores (wasmtime spreads each one's functions over the cores too).
        let parallel = std::thread::available_parallelism().map_or(1, usize::from);
        let permits = tokio::sync::Semaphore::new(parallel);
        // Plugins sharing one component compile one after the other, so
        // the later ones find it in the compile cache.
        let mut same_component: HashMap<Vec<u8>, Arc<tokio::sync::Mutex<()>>> = HashMap::new();
        let mut compiles = Vec::with_capacity(queued.len());
        for (path, before, files, loading) in queued {
            let turn = Arc::clone(
                same_component
                    .entry(Sha256::digest(&files.wasm).to_vec())
                    .or_default(),
            );
            compiles.push(self.compile_queued(&permits, turn, path, before, files, loading));
        }
        let results = futures_util::future::join_all(compiles).await;
        for (path, before, result) in results {
            match result {
                Ok(name) => {
                    report.loaded.push(name);
                    seen.insert(path, (before, Outcome::Loaded));
                }
                Err(err) => self.file_failed(&mut report, &mut seen, path, before, err),
            }
        }
        report.loaded.sort();
        report.unchanged.sort();
        *lock(&self.stamps) = seen;
        let live: Vec<String> = self
            .table
            .load()
            .plugins()
            .map(|p| p.name().to_owned())
            .collect();
        for name in live {
            if !present.contains(&name) {
                self.remove(&name);
                report.removed.push(name);
            }
        }
        lock(&self.load_failures).retain(|name, _| present.contains(name));
        Ok(report)
    }

    /// A file that failed to read, compile or install: recorded, unless it
    /// changed meanwhile (the watcher will see the next write).
    fn file_failed(
        &self,
        report: &mut LoadReport,
        seen: &mut HashMap<PathBuf, (FileStamp, Outcome)>,
        path: PathBuf,
        before: FileStamp,
        err: PluginError,
    ) {
        if file_stamp(&path) != before {
            tracing::debug!(path = %path.display(), "plugin file changed while loading: {err}");
            return;
        }
        // Only a route conflict can be cured by another plugin coming or
        // going; anything else waits for the file.
        let generation = matches!(err, PluginError::RouteConflict { .. })
            .then(|| self.generation.load(Ordering::Relaxed));
        self.record_failure(&path, &err);
        report.failed.push((path.clone(), err));
        seen.insert(path, (before, Outcome::Failed { generation }));
    }

    /// Whether what the last reconcile found for an unchanged file still
    /// holds: the plugin it loaded is still live, or it failed, and for a
    /// route conflict nothing was installed or removed since.
    fn still_holds(&self, path: &Path, outcome: Outcome) -> bool {
        match outcome {
            Outcome::Loaded => {
                plugin::plugin_name(path).is_ok_and(|name| self.table.load().get(&name).is_some())
            }
            Outcome::Failed { generation } => {
                generation.is_none_or(|at| at == self.generation.load(Ordering::Relaxed))
            }
        }
    }

    /// Read one plugin's files off the async threads; `Ok(None)` when the
    /// live version is the same.
    async fn read_file(&self, path: &Path) -> Result<Option<PluginFiles>, PluginError> {
        let owned = path.to_path_buf();
        let table = self.table.load_full();
        self.files_read.fetch_add(1, Ordering::Relaxed);
        tokio::task::spawn_blocking(move || {
            let files = PluginFiles::read(&owned)?;
            let same = table
                .get(&files.name)
                .is_some_and(|live| live.artifact().fingerprint() == files.fingerprint);
            Ok((!same).then_some(files))
        })
        .await
        .map_err(|source| PluginError::Join {
            path: path.display().to_string(),
            source,
        })?
    }

    /// [`PluginHost::compile_and_install`] once a compile slot is free; the
    /// plugin stays `loading` until then.
    async fn compile_queued(
        &self,
        permits: &tokio::sync::Semaphore,
        same_component: Arc<tokio::sync::Mutex<()>>,
        path: PathBuf,
        before: FileStamp,
        files: PluginFiles,
        loading: Loading<'_>,
    ) -> (PathBuf, FileStamp, Result<String, PluginError>) {
        let _turn = same_component.lock().await;
        let _permit = permits.acquire().await;
        let result = self.compile_and_install(files, &loading).await;
        (path, before, result)
    }

    /// Compile one plugin off the async threads and make it live; its name.
    async fn compile_and_install(
        &self,
        files: PluginFiles,
        loading: &Loading<'_>,
    ) -> Result<String, PluginError> {
        let engine = self.engine.clone();
        let linker = self.linker.clone();
        let limits = self.limits.clone();
        let path = files.wasm_path.clone();
        let (n, of) = loading.progress();
        tracing::info!(plugin = %files.name, file = %path.display(), "plugin loading ({n} of {of})");
        let plugin =
            tokio::task::spawn_blocking(move || plugin::compile(&engine, &linker, &limits, files))
                .await
                .map_err(|source| PluginError::Join {
                    path: path.display().to_string(),
                    source,
                })??;
        let name = plugin.name().to_owned();
        self.install(Arc::new(plugin))?;
        let elapsed = loading.elapsed();
        tracing::info!(
            plugin = %name,
            elapsed_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
            "plugin ready ({n} of {of}, {elapsed:.1?})"
        );
        Ok(name)
    }
}

/// The name a file's load failure is kept under: its plugin name, or the
/// file name when that cannot name a plugin.
fn failure_key(path: &Path) -> String {
    plugin::plugin_name(path).unwrap_or_else(|_| {
        path.file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
    })
}

/// What the last reconcile made of a plugin file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    Loaded,
    /// It failed; for a route conflict, while the table was at this
    /// generation.
    Failed {
        generation: Option<u64>,
    },
}

/// What identifies the content of a plugin file and its manifest without
/// reading them: size, inode and modification and change times (a rename
/// into place changes the inode; a write, the times).
pub(super) type FileStamp = [Option<(u64, u64, i64, i64, i64, i64)>; 2];

/// The [`FileStamp`] of a plugin file and its manifest, to notice a file
/// that changed since it was last read or while it is being loaded.
fn file_stamp(path: &Path) -> FileStamp {
    use std::os::unix::fs::MetadataExt as _;
    let stamp = |p: &Path| {
        std::fs::metadata(p).ok().map(|m| {
            (
                m.len(),
                m.ino(),
                m.mtime(),
                m.mtime_nsec(),
                m.ctime(),
                m.ctime_nsec(),
            )
        })
    };
    [stamp(path), stamp(&path.with_extension("toml"))]
}

/// `*.wasm` files whose names do not start with `.`.
fn is_plugin_file(path: &Path) -> bool {
    let hidden = path
        .file_name()
        .and_then(|n| n.to_str())
        .is_none_or(|n| n.starts_with('.'));
    !hidden && path.is_file() && path.extension().is_some_and(|ext| ext == "wasm")
}
