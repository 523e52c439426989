//! A plugin version at run time: its immutable [`Artifact`] and the state
//! that changes while it serves connections (instance slots, open
//! connections, retirement, the shared instance).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{Semaphore, watch};

use crate::engine::GuestLimits;
use crate::http_pool::HttpPool;
use crate::instance::SharedInstance;
use crate::manifest::Manifest;
use crate::plugin::Artifact;

/// What the host asks of a version's open connections once a newer version
/// (or nothing) took its place.
#[derive(Debug, Clone)]
pub(crate) enum Retirement {
    /// The version is live.
    Live,
    /// Finish on this version.
    Drain,
    /// Close with 1012 so the client reconnects.
    Restart,
    /// Move to this version through the `migration` exports.
    Migrate(Arc<Version>),
}

/// What [`crate::Consumer::retirement`] resolves to: the connection must
/// leave its instance.
#[derive(Debug, Clone)]
pub enum Retired {
    /// The version was replaced with `restart`: close with 1012 so the
    /// client reconnects.
    Restart,
    /// The version was replaced with `migrate`: move to this version through
    /// the `migration` exports.
    Migrate(Arc<Version>),
    /// The shared instance the connection runs on failed in another
    /// connection's call: close with 1011.
    Broken,
}

/// A plugin version that went live: its compiled artifact and the state of
/// the connections it serves. Open connections keep their version alive
/// after a newer one replaced it.
pub struct Version {
    artifact: Arc<Artifact>,
    /// This version's instance slots (`limits.max-instances`).
    pub(crate) slots: Arc<Semaphore>,
    /// Connections served by this version right now.
    open: AtomicUsize,
    retirement: watch::Sender<Retirement>,
    /// The instance every connection shares (`instance = "shared"`),
    /// started with the first connection and again after one broke.
    pub(crate) shared: tokio::sync::Mutex<Option<Arc<SharedInstance>>>,
    /// Idle HTTP instances kept for the next request (`[http]
    /// reuse-instances`); emptied when the version is retired.
    pub(crate) http_pool: HttpPool,
}

impl std::fmt::Debug for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Version")
            .field("artifact", &self.artifact)
            .field("open", &self.open_connections())
            .finish_non_exhaustive()
    }
}

impl Version {
    /// A live version of `artifact`, serving no connection yet.
    pub(crate) fn new(artifact: Arc<Artifact>) -> Self {
        let slots = usize::try_from(artifact.limits().max_instances)
            .unwrap_or(usize::MAX)
            .min(Semaphore::MAX_PERMITS);
        Self {
            artifact,
            slots: Arc::new(Semaphore::new(slots)),
            http_pool: HttpPool::new(slots),
            open: AtomicUsize::new(0),
            retirement: watch::Sender::new(Retirement::Live),
            shared: tokio::sync::Mutex::new(None),
        }
    }

    /// The compiled plugin this version runs.
    pub(crate) fn artifact(&self) -> &Arc<Artifact> {
        &self.artifact
    }

    /// The plugin's name: its file name without `.wasm`.
    pub fn name(&self) -> &str {
        self.artifact.name()
    }

    /// The version's id (see [`Artifact::hash`]).
    pub(crate) fn hash(&self) -> &str {
        self.artifact.hash()
    }

    /// The manifest the version was loaded with.
    pub fn manifest(&self) -> &Manifest {
        self.artifact.manifest()
    }

    /// The limits this version's instances run under.
    pub fn limits(&self) -> &GuestLimits {
        self.artifact.limits()
    }

    /// Connections this version serves now.
    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    pub(crate) fn opened(&self) {
        self.open.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn closed(&self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }

    pub(crate) fn retire(&self, how: Retirement) {
        self.retirement.send_replace(how);
        self.http_pool.retire();
    }

    pub(crate) fn watch_retirement(&self) -> watch::Receiver<Retirement> {
        self.retirement.subscribe()
    }
}
