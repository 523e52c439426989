//! What the admin API shows of the plugins: every live, retired or failed
//! plugin and its versions.

use std::sync::Arc;

use serde::Serialize;

use super::{PluginHost, lock, unix_secs};
use crate::manifest::ReplacePolicy;
use crate::version::Version;

/// A plugin file that failed to load, as the admin API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct LoadFailure {
    pub file: String,
    pub error: String,
    /// Seconds since the Unix epoch.
    pub at: u64,
}

/// One version of a plugin, as the admin API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct VersionStatus {
    pub version: String,
    /// Seconds since the Unix epoch.
    pub loaded_at: u64,
    pub live: bool,
    pub open_connections: usize,
    pub migratable: bool,
}

/// One plugin, as the admin API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PluginStatus {
    pub name: String,
    /// The live version's hash, if the plugin is live.
    pub version: Option<String>,
    pub source: Option<String>,
    pub routes: Vec<String>,
    pub on_replace: Option<ReplacePolicy>,
    /// The live version first, then retired versions that still serve
    /// connections.
    pub versions: Vec<VersionStatus>,
    pub last_error: Option<LoadFailure>,
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
        let mut names: Vec<String> = table.plugins().map(|p| p.name().to_owned()).collect();
        names.extend(retired.iter().map(|p| p.name().to_owned()));
        names.extend(failures.keys().cloned());
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
                };
                let mut versions: Vec<VersionStatus> =
                    live.iter().map(|p| version(p, true)).collect();
                versions.extend(
                    retired
                        .iter()
                        .filter(|p| p.name() == name)
                        .map(|p| version(p, false)),
                );
                PluginStatus {
                    version: live.map(|p| p.hash().to_owned()),
                    source: live.map(|p| p.artifact().source().display().to_string()),
                    routes: live
                        .map(|p| {
                            p.manifest()
                                .routes
                                .iter()
                                .map(ToString::to_string)
                                .collect()
                        })
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
