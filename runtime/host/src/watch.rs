//! Watching the plugin directory, so dropping, replacing or removing a
//! plugin takes effect while the server runs.
//!
//! inotify (notify's recommended watcher) where it works, a polling watcher
//! where it does not. Events are debounced: the directory is reconciled
//! ([`PluginHost::load_dir`]) once it has been quiet for a moment, so a
//! burst of writes loads once. Files whose names start with `.` are never
//! loaded; operators should write a new version beside the old one under a
//! hidden name and rename it into place (`cp chat.wasm .chat.wasm.tmp && mv
//! .chat.wasm.tmp chat.wasm`), which is atomic.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use notify::event::{AccessKind, AccessMode, MetadataKind, ModifyKind};
use notify::{EventKind, PollWatcher, RecommendedWatcher, RecursiveMode, Watcher as _};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::host::PluginHost;

/// How the watcher behaves.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// Quiet time after the last event before the directory is reconciled.
    pub debounce: Duration,
    /// Longest a steady stream of events may delay a reconcile.
    pub max_delay: Duration,
    /// Interval of the polling fallback.
    pub poll_interval: Duration,
    /// Poll even where inotify works (for file systems that do not report
    /// changes, such as some network mounts).
    pub force_polling: bool,
}

impl Default for WatchOptions {
    fn default() -> Self {
        Self {
            debounce: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            poll_interval: Duration::from_millis(500),
            force_polling: false,
        }
    }
}

/// A running watcher; dropping it stops watching.
pub struct PluginWatcher {
    _watcher: Box<dyn notify::Watcher + Send>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for PluginWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginWatcher").finish_non_exhaustive()
    }
}

impl Drop for PluginWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Whether a changed path can affect a plugin: a `.wasm` or `.toml` whose
/// name does not start with `.`.
fn relevant(path: &Path) -> bool {
    let visible = path
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| !n.starts_with('.'));
    visible
        && path
            .extension()
            .is_some_and(|ext| ext == "wasm" || ext == "toml")
}

/// Whether an event can change what a plugin file holds or which files
/// there are. Opens, reads and closes after reading are not changes: the
/// host reading a plugin must not make it reload (inotify reports those
/// too). A write that finished is one.
fn changes_files(kind: EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        EventKind::Modify(ModifyKind::Metadata(MetadataKind::AccessTime)) => false,
        EventKind::Any
        | EventKind::Create(_)
        | EventKind::Modify(_)
        | EventKind::Remove(_)
        | EventKind::Other => true,
    }
}

impl PluginWatcher {
    /// Start watching `dir`. Must be called inside a tokio runtime.
    pub fn start(
        host: Arc<PluginHost>,
        dir: PathBuf,
        options: WatchOptions,
    ) -> anyhow::Result<Self> {
        // Capacity 1: a pending signal already means "reconcile soon".
        let (tx, rx) = mpsc::channel::<()>(1);
        // One reconcile right away covers changes made before the watch began.
        let _ = tx.try_send(());
        let handler = move |event: notify::Result<notify::Event>| match event {
            Ok(event) => {
                let rescan = event.need_rescan()
                    || changes_files(event.kind) && event.paths.iter().any(|p| relevant(p));
                if rescan {
                    let _ = tx.try_send(());
                }
            }
            Err(err) => tracing::warn!("plugin directory watch error: {err}"),
        };
        let watcher = make_watcher(handler, &dir, &options)?;
        let task = tokio::spawn(reconcile_loop(host, dir, rx, options));
        Ok(Self {
            _watcher: watcher,
            task,
        })
    }
}

fn make_watcher<F>(
    handler: F,
    dir: &Path,
    options: &WatchOptions,
) -> anyhow::Result<Box<dyn notify::Watcher + Send>>
where
    F: notify::EventHandler + Clone,
{
    if !options.force_polling {
        match RecommendedWatcher::new(handler.clone(), notify::Config::default()) {
            Ok(mut watcher) => match watcher.watch(dir, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    tracing::info!(dir = %dir.display(), "watching the plugin directory");
                    return Ok(Box::new(watcher));
                }
                Err(err) => tracing::warn!(
                    dir = %dir.display(),
                    "cannot watch the plugin directory with inotify ({err}); polling instead"
                ),
            },
            Err(err) => tracing::warn!("inotify unavailable ({err}); polling instead"),
        }
    }
    let config = notify::Config::default()
        .with_poll_interval(options.poll_interval)
        .with_compare_contents(true);
    let mut watcher = PollWatcher::new(handler, config).context("starting the polling watcher")?;
    watcher
        .watch(dir, RecursiveMode::NonRecursive)
        .with_context(|| format!("polling the plugin directory {}", dir.display()))?;
    tracing::info!(dir = %dir.display(), interval = ?options.poll_interval, "polling the plugin directory");
    Ok(Box::new(watcher))
}

async fn reconcile_loop(
    host: Arc<PluginHost>,
    dir: PathBuf,
    mut rx: mpsc::Receiver<()>,
    options: WatchOptions,
) {
    while rx.recv().await.is_some() {
        let deadline = Instant::now() + options.max_delay;
        // Wait for a quiet moment (or the deadline).
        loop {
            let quiet = tokio::time::timeout(options.debounce, rx.recv()).await;
            match quiet {
                Ok(Some(())) if Instant::now() < deadline => {}
                Ok(None) => return,
                _ => break,
            }
        }
        match host.load_dir(&dir).await {
            Ok(report) => {
                if !(report.loaded.is_empty()
                    && report.removed.is_empty()
                    && report.failed.is_empty())
                {
                    tracing::info!(
                        loaded = ?report.loaded,
                        removed = ?report.removed,
                        failed = report.failed.len(),
                        "plugin directory reconciled"
                    );
                }
            }
            Err(err) => tracing::error!("reconciling the plugin directory: {err:#}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_visible_wasm_and_toml_files_matter() {
        assert!(relevant(Path::new("/p/chat.wasm")));
        assert!(relevant(Path::new("/p/chat.toml")));
        assert!(!relevant(Path::new("/p/.chat.wasm.tmp")));
        assert!(!relevant(Path::new("/p/.chat.wasm")));
        assert!(!relevant(Path::new("/p/chat.wasm~")));
        assert!(!relevant(Path::new("/p/chat.wasm.swp")));
    }

    #[test]
    fn reading_a_plugin_is_not_a_change() {
        use notify::event::{CreateKind, DataChange, RemoveKind, RenameMode};
        assert!(!changes_files(EventKind::Access(AccessKind::Open(
            AccessMode::Any
        ))));
        assert!(!changes_files(EventKind::Access(AccessKind::Read)));
        assert!(!changes_files(EventKind::Access(AccessKind::Close(
            AccessMode::Read
        ))));
        assert!(!changes_files(EventKind::Modify(ModifyKind::Metadata(
            MetadataKind::AccessTime
        ))));
        assert!(changes_files(EventKind::Access(AccessKind::Close(
            AccessMode::Write
        ))));
        assert!(changes_files(EventKind::Create(CreateKind::File)));
        assert!(changes_files(EventKind::Modify(ModifyKind::Data(
            DataChange::Any
        ))));
        assert!(changes_files(EventKind::Modify(ModifyKind::Name(
            RenameMode::To
        ))));
        assert!(changes_files(EventKind::Remove(RemoveKind::File)));
    }
}
