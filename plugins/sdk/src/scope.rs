//! [`Scope`]: the connection scope, copied out of the host's `scope`
//! resource when `connect` is called, so a consumer may keep it.

use crate::bindings::switchyard::consumer::host::Scope as WitScope;

/// The connection scope, as ASGI's `scope` for a `websocket` connection
/// (Channels' `self.scope`). See `wit/consumer.wit` for each field.
///
/// `#[non_exhaustive]`: later 0.2.x contracts add fields.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Scope {
    /// The request path, percent-decoded, e.g. `/ws/chat/lobby/`.
    pub path: String,
    /// The raw query string without the `?`, not decoded.
    pub query_string: String,
    /// Request headers in the order received; names lower-case, values
    /// decoded as ISO-8859-1.
    pub headers: Vec<(String, String)>,
    /// The route's keyword arguments, in pattern order.
    pub url_route: Vec<(String, String)>,
    /// The route pattern that matched, e.g. `ws/chat/<str:room_name>/`.
    pub route: String,
    /// The client address as `ip:port`, when known.
    pub client: Option<String>,
    /// Subprotocols the client asked for, in its order.
    pub subprotocols: Vec<String>,
    /// The authenticated user, if the host authenticated one.
    pub user: Option<String>,
    /// Claims of the authenticated user as a JSON object, if any.
    pub claims: Option<String>,
    /// `ws`, or `wss` over TLS (ASGI `scheme`).
    pub scheme: String,
    /// The handshake's HTTP version, e.g. `1.1` (ASGI `http_version`).
    pub http_version: String,
    /// Host and port of the server's listening socket (ASGI `server`).
    pub server: Option<(String, u16)>,
}

impl Scope {
    /// Copies every field out of the host's resource.
    pub(crate) fn read(scope: &WitScope) -> Self {
        Self {
            path: scope.path(),
            query_string: scope.query_string(),
            headers: scope.headers(),
            url_route: scope.url_route(),
            route: scope.route(),
            client: scope.client(),
            subprotocols: scope.subprotocols(),
            user: scope.user(),
            claims: scope.claims(),
            scheme: scope.scheme(),
            http_version: scope.http_version(),
            server: scope.server(),
        }
    }

    /// The value of a keyword argument captured by the route (Channels'
    /// `scope["url_route"]["kwargs"][name]`), e.g. `room_name`.
    pub fn kwarg(&self, name: &str) -> Option<&str> {
        self.url_route
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// The first value of a request header; `name` in lower case.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}
