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
//!
//! [`watch_dirs`], [`settle`] and [`changes_files`] serve the TLS
//! certificate watcher too (`switchyard::tls`).

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

/// Whether an event can change what a watched file holds or which files
/// there are. Opens, reads and closes after reading are not changes: the
/// host reading a plugin must not make it reload (inotify reports those
/// too). A write that finished is one.
pub fn changes_files(kind: EventKind) -> bool {
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
        let watcher = watch_dirs(
            handler,
            std::slice::from_ref(&dir),
            "the plugin directory",
            options.poll_interval,
            options.force_polling,
        )?;
        let task = tokio::spawn(reconcile_loop(host, dir, rx, options));
        Ok(Self {
            _watcher: watcher,
            task,
        })
    }
}

/// A watcher on `dirs` (not recursive) that calls `handler` on every
/// event: inotify where it works, else polling every `poll_interval` with
/// contents compared (or polling at once with `force_polling`). `what`
/// names the watched files in the log lines. Shared by the plugin
/// directory and the TLS certificate watchers.
///
/// # Errors
/// Neither inotify nor polling can watch a directory.
pub fn watch_dirs<F>(
    handler: F,
    dirs: &[PathBuf],
    what: &str,
    poll_interval: Duration,
    force_polling: bool,
) -> anyhow::Result<Box<dyn notify::Watcher + Send>>
where
    F: notify::EventHandler + Clone,
{
    let watch_all = |watcher: &mut dyn notify::Watcher| -> notify::Result<()> {
        for dir in dirs {
            watcher.watch(dir, RecursiveMode::NonRecursive)?;
        }
        Ok(())
    };
    if !force_polling {
        match RecommendedWatcher::new(handler.clone(), notify::Config::default()) {
            Ok(mut watcher) => match watch_all(&mut watcher) {
                Ok(()) => {
                    tracing::info!(dirs = ?dirs, "watching {what}");
                    return Ok(Box::new(watcher));
                }
                Err(err) => tracing::warn!(
                    dirs = ?dirs,
                    "cannot watch {what} with inotify ({err}); polling instead"
                ),
            },
            Err(err) => tracing::warn!("inotify unavailable ({err}); polling {what} instead"),
        }
    }
    let config = notify::Config::default()
        .with_poll_interval(poll_interval)
        .with_compare_contents(true);
    let mut watcher = PollWatcher::new(handler, config)
        .with_context(|| format!("starting the polling watcher for {what}"))?;
    watch_all(&mut watcher).with_context(|| format!("polling {what} in {dirs:?}"))?;
    tracing::info!(dirs = ?dirs, interval = ?poll_interval, "polling {what}");
    Ok(Box::new(watcher))
}

/// After a change signal: waits until `rx` has been quiet for `debounce`,
/// or until `max_delay` has passed, so a burst of writes (a file written
/// in pieces, a certificate and then its key) is taken as one change.
/// Returns `false` once the channel is closed.
pub async fn settle(rx: &mut mpsc::Receiver<()>, debounce: Duration, max_delay: Duration) -> bool {
    let deadline = Instant::now() + max_delay;
    loop {
        match tokio::time::timeout(debounce, rx.recv()).await {
            Ok(Some(())) if Instant::now() < deadline => {}
            Ok(None) => return false,
            _ => return true,
        }
    }
}

async fn reconcile_loop(
    host: Arc<PluginHost>,
    dir: PathBuf,
    mut rx: mpsc::Receiver<()>,
    options: WatchOptions,
) {
    while rx.recv().await.is_some() {
        if !settle(&mut rx, options.debounce, options.max_delay).await {
            return;
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
