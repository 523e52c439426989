//! Idle HTTP instances of one plugin version, kept for the next request
//! when the manifest opts in (`[http] reuse-instances = true`).
//!
//! wasmtime's `serve` and Spin instantiate afresh for every request, so a
//! guest can never see another request's state. Reuse trades that promise
//! for speed (no new store, no instantiation, no fresh linear memory): the
//! guest's globals and memory persist from one request to the next, so a
//! plugin opts in only when it keeps no per-request state of its own.
//!
//! An instance goes back to the pool only after a clean request: `handle`
//! returned without trapping, within its deadline, the client did not go
//! away, and the store's resource table holds no more entries than when the
//! request began (the request, its body and the response outparam are all
//! gone). Anything else drops it. Idle instances hold no instance slot:
//! each request takes its slots as a fresh one does, so 503 answers are
//! exactly those without reuse; the pool never holds more than the
//! version's `limits.max-instances`.

use std::sync::Mutex;

use wasmtime::Store;

use crate::bindings::IncomingHandler;
use crate::state::ConsumerState;

/// A store and its instance's `incoming-handler` export, idle between
/// requests.
pub(crate) struct PooledHandler {
    pub(crate) store: Store<ConsumerState>,
    pub(crate) handler: IncomingHandler,
}

/// The idle instances of one plugin version.
pub(crate) struct HttpPool {
    /// `None` once the version is retired: nothing goes back any more.
    /// A std mutex: held for a push or a pop, never across an `.await`.
    idle: Mutex<Option<Vec<PooledHandler>>>,
    /// Most idle instances kept (`limits.max-instances`).
    capacity: usize,
}

impl std::fmt::Debug for HttpPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpPool")
            .field("idle", &self.idle())
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl HttpPool {
    /// An empty pool keeping at most `capacity` idle instances.
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            idle: Mutex::new(Some(Vec::new())),
            capacity,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Vec<PooledHandler>>> {
        // A panic while holding the lock cannot leave the vector half
        // changed (push and pop only), so a poisoned lock is still usable.
        self.idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// An idle instance, if there is one.
    pub(crate) fn take(&self) -> Option<PooledHandler> {
        self.lock().as_mut().and_then(Vec::pop)
    }

    /// Keep `handler` for the next request; dropped instead when the pool
    /// is full or retired. Whether it was kept.
    pub(crate) fn give_back(&self, handler: PooledHandler) -> bool {
        let refused = match self.lock().as_mut() {
            Some(idle) if idle.len() < self.capacity => {
                idle.push(handler);
                None
            }
            _ => Some(handler),
        };
        // Dropped outside the lock: freeing an instance unmaps its memory.
        let kept = refused.is_none();
        drop(refused);
        kept
    }

    /// Drop every idle instance and keep none from now on (the version
    /// was replaced or removed).
    pub(crate) fn retire(&self) {
        let idle = self.lock().take();
        drop(idle);
    }

    /// How many instances are idle now.
    pub(crate) fn idle(&self) -> usize {
        self.lock().as_ref().map_or(0, Vec::len)
    }
}
