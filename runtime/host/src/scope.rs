//! The host side of the WIT `scope` resource
//! (`switchyard:consumer/host.scope`): what a consumer learns about its
//! handshake during `connect`, ASGI's `scope`. A 0.1 guest gets the same
//! data as the 0.1 contract's `scope` record.

use wasmtime::component::Resource;

use crate::bindings::{HostScope, v0_1};
use crate::state::HostCtx;

/// The scope of one handshake: what the server knew, and the route.
#[expect(
    unreachable_pub,
    reason = "bindgen!'s `with` names this type from the generated bindings module"
)]
#[derive(Debug, Clone)]
pub struct ScopeInfo {
    pub(crate) path: String,
    pub(crate) query_string: String,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) url_route: Vec<(String, String)>,
    pub(crate) route: String,
    pub(crate) client: Option<String>,
    pub(crate) subprotocols: Vec<String>,
    pub(crate) user: Option<String>,
    pub(crate) claims: Option<String>,
    /// `ws` or `wss`.
    pub(crate) scheme: &'static str,
    /// E.g. `1.1`.
    pub(crate) http_version: String,
    /// Host and port of the listening socket.
    pub(crate) server: Option<(String, u16)>,
}

impl ScopeInfo {
    /// The 0.1 contract's record: every field but those 0.2 added.
    pub(crate) fn into_v0_1(self) -> v0_1::Scope {
        v0_1::Scope {
            path: self.path,
            query_string: self.query_string,
            headers: self.headers,
            url_route: self.url_route,
            route: self.route,
            client: self.client,
            subprotocols: self.subprotocols,
            user: self.user,
            claims: self.claims,
        }
    }
}

impl HostCtx {
    fn scope(&self, handle: &Resource<ScopeInfo>) -> wasmtime::Result<&ScopeInfo> {
        Ok(self.connections.get(handle)?)
    }
}

impl HostScope for HostCtx {
    async fn path(&mut self, handle: Resource<ScopeInfo>) -> wasmtime::Result<String> {
        Ok(self.scope(&handle)?.path.clone())
    }

    async fn query_string(&mut self, handle: Resource<ScopeInfo>) -> wasmtime::Result<String> {
        Ok(self.scope(&handle)?.query_string.clone())
    }

    async fn headers(
        &mut self,
        handle: Resource<ScopeInfo>,
    ) -> wasmtime::Result<Vec<(String, String)>> {
        Ok(self.scope(&handle)?.headers.clone())
    }

    async fn url_route(
        &mut self,
        handle: Resource<ScopeInfo>,
    ) -> wasmtime::Result<Vec<(String, String)>> {
        Ok(self.scope(&handle)?.url_route.clone())
    }

    async fn route(&mut self, handle: Resource<ScopeInfo>) -> wasmtime::Result<String> {
        Ok(self.scope(&handle)?.route.clone())
    }

    async fn client(&mut self, handle: Resource<ScopeInfo>) -> wasmtime::Result<Option<String>> {
        Ok(self.scope(&handle)?.client.clone())
    }

    async fn subprotocols(&mut self, handle: Resource<ScopeInfo>) -> wasmtime::Result<Vec<String>> {
        Ok(self.scope(&handle)?.subprotocols.clone())
    }

    async fn user(&mut self, handle: Resource<ScopeInfo>) -> wasmtime::Result<Option<String>> {
        Ok(self.scope(&handle)?.user.clone())
    }

    async fn claims(&mut self, handle: Resource<ScopeInfo>) -> wasmtime::Result<Option<String>> {
        Ok(self.scope(&handle)?.claims.clone())
    }

    async fn scheme(&mut self, handle: Resource<ScopeInfo>) -> wasmtime::Result<String> {
        Ok(self.scope(&handle)?.scheme.to_owned())
    }

    async fn http_version(&mut self, handle: Resource<ScopeInfo>) -> wasmtime::Result<String> {
        Ok(self.scope(&handle)?.http_version.clone())
    }

    async fn server(
        &mut self,
        handle: Resource<ScopeInfo>,
    ) -> wasmtime::Result<Option<(String, u16)>> {
        Ok(self.scope(&handle)?.server.clone())
    }

    async fn drop(&mut self, handle: Resource<ScopeInfo>) -> wasmtime::Result<()> {
        // The host lends the scope for `connect` and deletes it afterwards;
        // a guest only ever borrows it, so there is nothing to drop here.
        tracing::debug!(plugin = %self.plugin, rep = handle.rep(), "scope handle dropped");
        Ok(())
    }
}
