//! What the admin API shows of the plugins: every live, retired or failed
//! plugin and its versions.

use std::sync::Arc;

use serde::Serialize;

use super::{LoadingStatus, PluginHost, lock, unix_secs};
use crate::manifest::ReplacePolicy;
use crate::plugin::Precompiled;
use crate::version::Version;

/// A plugin file that failed to load, as the admin API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct LoadFailure {
    /// The file that failed.
    pub file: String,
    /// Why.
    pub error: String,
    /// Seconds since the Unix epoch.
    pub at: u64,
}

/// One version of a plugin, as the admin API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct VersionStatus {
    /// The version's id (component and manifest).
    pub version: String,
    /// Seconds since the Unix epoch.
    pub loaded_at: u64,
    /// Whether new connections get this version.
    pub live: bool,
    /// Connections it serves now.
    pub open_connections: usize,
    /// Whether connections can migrate to it.
    pub migratable: bool,
    /// Whether its code was loaded from the `.cwasm` beside the `.wasm`.
    pub precompiled: bool,
    /// Why the `.cwasm` beside the `.wasm` was refused (the `.wasm` was
    /// compiled instead).
    pub precompiled_error: Option<String>,
}

/// One plugin, as the admin API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PluginStatus {
    /// The plugin's name.
    pub name: String,
    /// The live version's id, if the plugin is live.
    pub version: Option<String>,
    /// The live version's file.
    pub source: Option<String>,
    /// The live version's WebSocket routes.
    pub routes: Vec<String>,
    /// The live version's HTTP routes.
    pub http_routes: Vec<String>,
    /// The live version's `on-replace` policy.
    pub on_replace: Option<ReplacePolicy>,
    /// The live version first, then retired versions that still serve
    /// connections.
    pub versions: Vec<VersionStatus>,
    /// The last load failure, if its file has not loaded since.
    pub last_error: Option<LoadFailure>,
    /// `ready` (a version is live), `loading` (none is live yet, one is
    /// being compiled), `failed` (none is live, the last load failed) or
    /// `removed` (its file is gone; connections remain on an old version).
    pub state: &'static str,
    /// The version being compiled now, if any (beside a live one during a
    /// hot swap).
    pub loading: Option<LoadingStatus>,
}

fn patterns(routes: &[crate::route::RoutePattern]) -> Vec<String> {
    routes.iter().map(ToString::to_string).collect()
}

impl PluginHost {
    /// Every plugin that is live, serves connections on a retired version,
    /// or failed to load, for the admin API.
    pub fn status(&self) -> Vec<PluginStatus> {
        let table = self.table.load();
        let retired = {
            let mut retired = lock(&self.retired);
            retired.retain(|version| version.open_connections() > 0);
            retired.clone()
        };
        let failures = lock(&self.load_failures).clone();
        let mut loading = self.loading_status();
        let mut names: Vec<String> = table.plugins().map(|p| p.name().to_owned()).collect();
        names.extend(retired.iter().map(|p| p.name().to_owned()));
        names.extend(failures.keys().cloned());
        names.extend(loading.keys().cloned());
        names.sort();
        names.dedup();
        names
            .into_iter()
            .map(|name| {
                let live = table.get(&name);
                let version = |plugin: &Arc<Version>, is_live: bool| VersionStatus {
                    version: plugin.hash().to_owned(),
                    loaded_at: unix_secs(plugin.artifact().loaded_at()),
                    live: is_live,
                    open_connections: plugin.open_connections(),
                    migratable: plugin.artifact().migratable(),
                    precompiled: *plugin.artifact().precompiled() == Precompiled::Used,
                    precompiled_error: match plugin.artifact().precompiled() {
                        Precompiled::Refused(why) => Some(why.clone()),
                        Precompiled::No | Precompiled::Used => None,
                    },
                };
                let mut versions: Vec<VersionStatus> =
                    live.iter().map(|p| version(p, true)).collect();
                versions.extend(
                    retired
                        .iter()
                        .filter(|p| p.name() == name)
                        .map(|p| version(p, false)),
                );
                let loading = loading.remove(&name);
                let state = match (live, &loading) {
                    (Some(_), _) => "ready",
                    (None, Some(_)) => "loading",
                    (None, None) if failures.contains_key(&name) => "failed",
                    // Removed, with connections still on a retired version.
                    (None, None) => "removed",
                };
                PluginStatus {
                    state,
                    loading,
                    version: live.map(|p| p.hash().to_owned()),
                    source: live.map(|p| p.artifact().source().display().to_string()),
                    routes: live
                        .map(|p| patterns(&p.manifest().routes))
                        .unwrap_or_default(),
                    http_routes: live
                        .map(|p| patterns(&p.manifest().http_routes))
                        .unwrap_or_default(),
                    on_replace: live.map(|p| p.manifest().on_replace),
                    versions,
                    last_error: failures.get(&name).cloned(),
                    name,
                }
            })
            .collect()
    }
}
