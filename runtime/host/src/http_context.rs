//! The `switchyard:consumer/http-context` interface: what an HTTP handler
//! learns about the request it serves (route, kwargs, user, request id),
//! and the request's own channel on the layer, for responses that stream
//! live events (Server-Sent Events).

use std::sync::Arc;
use std::time::Duration;

use switchyard_layer::{ChannelLayer, Inbox};

use crate::bindings::{HttpContextHost, WitLayerError};
use crate::engine::epoch_ticks;
use crate::host_api::to_wit;
use crate::state::ConsumerState;

/// The longest `next-event` waits in one call.
const MAX_EVENT_WAIT: Duration = Duration::from_secs(60);

/// What the host knows of the HTTP request a store serves.
#[derive(Debug, Clone, Default)]
pub(crate) struct RequestInfo {
    /// The route pattern that matched.
    pub(crate) route: String,
    /// The route's kwargs, in pattern order.
    pub(crate) kwargs: Vec<(String, String)>,
    /// The authenticated user, if any.
    pub(crate) user: Option<String>,
    /// The user's claims as JSON, if any.
    pub(crate) claims: Option<String>,
    /// The request's id (logs and the `x-request-id` header).
    pub(crate) request_id: String,
}

/// The store's slice for the `http-context` interface: the request and,
/// once the guest asks for it, the request's channel.
pub(crate) struct RequestCtx {
    pub(crate) info: RequestInfo,
    layer: Arc<dyn ChannelLayer>,
    /// Made on the first `channel-name` or `group-add`; dropping it (with
    /// the store, when the request ends) leaves its groups.
    inbox: Option<Inbox>,
    /// The call deadline in epoch ticks, given back after each wait.
    call_ticks: u64,
}

impl std::fmt::Debug for RequestCtx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestCtx")
            .field("info", &self.info)
            .field("inbox", &self.inbox)
            .finish_non_exhaustive()
    }
}

impl RequestCtx {
    pub(crate) fn new(info: RequestInfo, layer: Arc<dyn ChannelLayer>, call: Duration) -> Self {
        Self {
            info,
            layer,
            inbox: None,
            call_ticks: epoch_ticks(call),
        }
    }

    fn inbox(&mut self) -> &mut Inbox {
        self.inbox.get_or_insert_with(|| self.layer.new_channel())
    }
}

impl ConsumerState {
    fn request(&mut self) -> wasmtime::Result<&mut RequestCtx> {
        match self.request.as_mut() {
            Some(request) => Ok(request),
            None => wasmtime::bail!("http-context is only valid while serving an HTTP request"),
        }
    }
}

impl HttpContextHost for ConsumerState {
    async fn route(&mut self) -> wasmtime::Result<String> {
        Ok(self.request()?.info.route.clone())
    }

    async fn url_route(&mut self) -> wasmtime::Result<Vec<(String, String)>> {
        Ok(self.request()?.info.kwargs.clone())
    }

    async fn user(&mut self) -> wasmtime::Result<Option<String>> {
        Ok(self.request()?.info.user.clone())
    }

    async fn claims(&mut self) -> wasmtime::Result<Option<String>> {
        Ok(self.request()?.info.claims.clone())
    }

    async fn request_id(&mut self) -> wasmtime::Result<String> {
        Ok(self.request()?.info.request_id.clone())
    }

    async fn channel_name(&mut self) -> wasmtime::Result<Result<String, WitLayerError>> {
        Ok(Ok(self.request()?.inbox().name().to_owned()))
    }

    async fn group_add(&mut self, group: String) -> wasmtime::Result<Result<(), WitLayerError>> {
        let request = self.request()?;
        let channel = request.inbox().name().to_owned();
        let layer = Arc::clone(&request.layer);
        Ok(layer.group_add(&group, &channel).await.map_err(to_wit))
    }

    async fn group_discard(
        &mut self,
        group: String,
    ) -> wasmtime::Result<Result<(), WitLayerError>> {
        let request = self.request()?;
        let Some(inbox) = &request.inbox else {
            return Ok(Ok(()));
        };
        let channel = inbox.name().to_owned();
        let layer = Arc::clone(&request.layer);
        Ok(layer.group_discard(&group, &channel).await.map_err(to_wit))
    }

    async fn next_event(&mut self, timeout_ms: u32) -> wasmtime::Result<Option<String>> {
        let request = self.request()?;
        let call_ticks = request.call_ticks;
        let Some(inbox) = request.inbox.as_mut() else {
            return Ok(None);
        };
        let wait = Duration::from_millis(u64::from(timeout_ms)).min(MAX_EVENT_WAIT);
        let event = tokio::time::timeout(wait, inbox.recv())
            .await
            .ok()
            .flatten();
        // Waiting is not running: the guest gets its whole call budget for
        // what it does with the event.
        self.ticks_left = call_ticks;
        Ok(event.map(|event| event.as_str().to_owned()))
    }
}
