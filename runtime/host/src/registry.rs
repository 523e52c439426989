//! The route table: which plugin version serves which path.
//!
//! A table is immutable once built; the host swaps whole tables through an
//! atomic pointer, so resolving a path never takes a lock and a new table is
//! validated beside the old one before it goes live.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::plugin::PluginError;
use crate::route::RoutePattern;
use crate::version::Version;

/// A resolved route: the plugin version to instantiate and the kwargs.
#[derive(Debug, Clone)]
pub struct RouteMatch {
    /// The plugin version serving the route.
    pub plugin: Arc<Version>,
    /// The pattern that matched (shared with the route table: resolving
    /// copies no pattern).
    pub route: Arc<RoutePattern>,
    /// Keyword arguments in pattern order (the scope's url route).
    pub kwargs: Vec<(String, String)>,
}

/// Which side of the protocol router a route is on (Channels'
/// `ProtocolTypeRouter` keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// A WebSocket route (`routes` in the manifest).
    Websocket,
    /// An HTTP route (`http-routes` in the manifest).
    Http,
}

impl Protocol {
    /// `"websocket"` or `"http"`, as ASGI names the scope types.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Websocket => "websocket",
            Self::Http => "http",
        }
    }
}

/// One live route, for listings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteInfo {
    /// The pattern.
    pub route: String,
    /// The plugin serving it.
    pub plugin: String,
    /// WebSocket or HTTP.
    pub protocol: Protocol,
}

/// Routes of one protocol, in the order they are tried.
type Routes = Vec<(Arc<RoutePattern>, Arc<Version>)>;

/// An immutable set of plugins and the routes they serve.
#[derive(Debug, Default)]
pub(crate) struct RouteTable {
    plugins: BTreeMap<String, Arc<Version>>,
    /// WebSocket routes, tried in order: more literal characters first (so
    /// `ws/echo/` wins over `ws/<str:name>/`), then plugin name, then
    /// manifest order.
    routes: Routes,
    /// HTTP routes, in the same order.
    http_routes: Routes,
}

impl RouteTable {
    /// A table with `plugin` added (or replacing the plugin of the same
    /// name). Fails, naming both plugins, when one of its routes has the
    /// same shape as a route of another plugin.
    pub(crate) fn with_plugin(&self, plugin: Arc<Version>) -> Result<Self, PluginError> {
        let manifest = plugin.manifest();
        let sides = [
            (&manifest.routes, &self.routes),
            (&manifest.http_routes, &self.http_routes),
        ];
        for (own, live) in sides {
            for route in own {
                for (other_route, other) in live {
                    if other.name() != plugin.name() && other_route.shape() == route.shape() {
                        return Err(PluginError::RouteConflict {
                            route: route.to_string(),
                            plugin: plugin.name().to_owned(),
                            other_route: other_route.to_string(),
                            other: other.name().to_owned(),
                        });
                    }
                }
            }
        }
        let mut plugins = self.plugins.clone();
        plugins.insert(plugin.name().to_owned(), plugin);
        Ok(Self::from_plugins(plugins))
    }

    /// A table without the plugin called `name`.
    pub(crate) fn without_plugin(&self, name: &str) -> Self {
        let mut plugins = self.plugins.clone();
        plugins.remove(name);
        Self::from_plugins(plugins)
    }

    fn from_plugins(plugins: BTreeMap<String, Arc<Version>>) -> Self {
        let collect = |protocol: Protocol| {
            let mut routes: Routes = plugins
                .values()
                .flat_map(|plugin| {
                    let manifest = plugin.manifest();
                    let own = match protocol {
                        Protocol::Websocket => &manifest.routes,
                        Protocol::Http => &manifest.http_routes,
                    };
                    own.iter()
                        .map(move |route| (Arc::new(route.clone()), Arc::clone(plugin)))
                })
                .collect();
            // A stable sort keeps plugin-name and manifest order among equals.
            routes.sort_by_key(|(route, _)| std::cmp::Reverse(route.literal_len()));
            routes
        };
        Self {
            routes: collect(Protocol::Websocket),
            http_routes: collect(Protocol::Http),
            plugins,
        }
    }

    fn side(&self, protocol: Protocol) -> &Routes {
        match protocol {
            Protocol::Websocket => &self.routes,
            Protocol::Http => &self.http_routes,
        }
    }

    /// The plugin version and kwargs for a request path on one side of the
    /// protocol router, if any of its routes matches.
    pub(crate) fn resolve(&self, protocol: Protocol, path: &str) -> Option<RouteMatch> {
        self.side(protocol).iter().find_map(|(route, plugin)| {
            route.matches(path).map(|kwargs| RouteMatch {
                plugin: Arc::clone(plugin),
                route: Arc::clone(route),
                kwargs,
            })
        })
    }

    pub(crate) fn plugins(&self) -> impl Iterator<Item = &Arc<Version>> {
        self.plugins.values()
    }

    pub(crate) fn get(&self, name: &str) -> Option<&Arc<Version>> {
        self.plugins.get(name)
    }

    /// Live routes in the order they are tried: WebSocket, then HTTP.
    pub(crate) fn routes(&self) -> Vec<RouteInfo> {
        [Protocol::Websocket, Protocol::Http]
            .into_iter()
            .flat_map(|protocol| {
                self.side(protocol)
                    .iter()
                    .map(move |(route, plugin)| RouteInfo {
                        route: route.to_string(),
                        plugin: plugin.name().to_owned(),
                        protocol,
                    })
            })
            .collect()
    }
}
