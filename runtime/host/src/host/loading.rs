//! Plugins being compiled: what the admin API and the logs report as
//! `loading` (n of m, elapsed), the routes that answer 503 with
//! `Retry-After` meanwhile, and whether the initial load of the plugin
//! directory has finished (readiness waits for it).
//!
//! A plugin is in the book from the moment its files are read until its
//! compiled version is live (or its load failed). A route is only looked up
//! here when the live table has no match, so a hot swap keeps serving the
//! old version while the new one compiles.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Instant, SystemTime};

use serde::Serialize;

use super::{PluginHost, lock, unix_secs};
use crate::manifest::Manifest;
use crate::registry::Protocol;
use crate::route::RoutePattern;

/// A plugin being loaded, as the admin API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct LoadingStatus {
    /// The file being compiled.
    pub file: String,
    /// Its place in this reconcile's batch of plugins to compile (1-based).
    pub n: usize,
    /// How many plugins this reconcile compiles.
    pub of: usize,
    /// Seconds since the Unix epoch when it was queued.
    pub since: u64,
    /// Milliseconds since it was queued.
    pub elapsed_ms: u64,
}

#[derive(Debug)]
struct Entry {
    file: PathBuf,
    routes: Vec<RoutePattern>,
    http_routes: Vec<RoutePattern>,
    n: usize,
    of: usize,
    since: SystemTime,
    started: Instant,
}

/// The plugins being loaded, by name.
#[derive(Debug, Default)]
pub(super) struct LoadingBook {
    entries: Mutex<BTreeMap<String, Entry>>,
    /// Set once the first reconcile of the plugin directory has finished.
    initial_done: AtomicBool,
}

/// A plugin's place in the book; dropping it takes the plugin out.
#[derive(Debug)]
pub(super) struct Loading<'a> {
    book: &'a LoadingBook,
    name: String,
    started: Instant,
    n: usize,
    of: usize,
}

impl Loading<'_> {
    /// The plugin's place in its batch, and the batch's size.
    pub(super) fn progress(&self) -> (usize, usize) {
        (self.n, self.of)
    }

    /// How long since the plugin was queued.
    pub(super) fn elapsed(&self) -> std::time::Duration {
        self.started.elapsed()
    }
}

impl Drop for Loading<'_> {
    fn drop(&mut self) {
        lock(&self.book.entries).remove(&self.name);
    }
}

impl LoadingBook {
    /// Put a plugin in the book until the returned guard drops.
    pub(super) fn begin(
        &self,
        name: &str,
        file: &Path,
        manifest: &Manifest,
        n: usize,
        of: usize,
    ) -> Loading<'_> {
        let started = Instant::now();
        lock(&self.entries).insert(
            name.to_owned(),
            Entry {
                file: file.to_path_buf(),
                routes: manifest.routes.clone(),
                http_routes: manifest.http_routes.clone(),
                n,
                of,
                since: SystemTime::now(),
                started,
            },
        );
        Loading {
            book: self,
            name: name.to_owned(),
            started,
            n,
            of,
        }
    }

    pub(super) fn finish_initial(&self) {
        self.initial_done.store(true, Ordering::Release);
    }
}

impl PluginHost {
    /// The plugin being loaded (not yet live) that will serve `path`, if
    /// any: the server answers 503 with `Retry-After` rather than 404.
    pub fn loading_route(&self, protocol: Protocol, path: &str) -> Option<String> {
        let entries = lock(&self.loading.entries);
        entries
            .iter()
            .find(|(_, entry)| {
                let routes = match protocol {
                    Protocol::Websocket => &entry.routes,
                    Protocol::Http => &entry.http_routes,
                };
                routes.iter().any(|route| route.matches(path).is_some())
            })
            .map(|(name, _)| name.clone())
    }

    /// Whether the first load of the plugin directory has finished (with
    /// [`crate::PluginHost::load_dir`], each plugin loaded or failed).
    /// Until then readiness answers 503, and a path no plugin serves yet
    /// answers 503 rather than 404, since its plugin may not have been
    /// read yet.
    pub fn initial_load_done(&self) -> bool {
        self.loading.initial_done.load(Ordering::Acquire)
    }

    /// How many plugins are being loaded now.
    pub fn loading_count(&self) -> usize {
        lock(&self.loading.entries).len()
    }

    /// Every plugin being loaded, by name, for the admin API.
    pub(super) fn loading_status(&self) -> BTreeMap<String, LoadingStatus> {
        lock(&self.loading.entries)
            .iter()
            .map(|(name, entry)| {
                (
                    name.clone(),
                    LoadingStatus {
                        file: entry.file.display().to_string(),
                        n: entry.n,
                        of: entry.of,
                        since: unix_secs(entry.since),
                        elapsed_ms: u64::try_from(entry.started.elapsed().as_millis())
                            .unwrap_or(u64::MAX),
                    },
                )
            })
            .collect()
    }
}
