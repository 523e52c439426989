//! Serving one HTTP request through a plugin's `wasi:http/incoming-handler`
//! export, as wasmtime's `serve` and Spin do: a fresh instance per request,
//! run in a task of its own so the guest can go on writing the body after
//! it has set the response.
//!
//! Deadlines: the response head must come within the plugin's call timeout
//! (else 504) and the guest's running time is bounded by the epoch deadline
//! throughout; a body that streams (Server-Sent Events) lives as long as
//! the client reads it and the guest writes it. When the client goes away
//! before the body ends, the guest task is aborted and its instance
//! dropped.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt as _;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::oneshot;
use tokio::task::AbortHandle;
use wasmtime::component::ResourceTable;
use wasmtime_wasi_http::WasiHttpView as _;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;

use super::PluginHost;
use super::start::StartError;
use crate::failures::FailureCounter;
use crate::http_context::{RequestCtx, RequestInfo};
use crate::registry::RouteMatch;

/// What the server knows of an HTTP request beyond the request itself.
#[derive(Debug, Clone, Default)]
pub struct HttpCall {
    /// The authenticated user, if the server authenticated one.
    pub user: Option<String>,
    /// Claims of the authenticated user as a JSON object.
    pub claims: Option<String>,
    /// The request's id, for logs and `x-request-id`.
    pub request_id: String,
}

/// A response body as the guest writes it.
pub type HttpBody = UnsyncBoxBody<Bytes, HttpBodyError>;

/// The guest failed while writing a response body: the connection is cut
/// where the body stopped.
#[derive(Debug, thiserror::Error)]
#[error("the plugin's response body failed: {0:?}")]
pub struct HttpBodyError(wasmtime_wasi_http::Error);

/// Why a plugin gave no response. Each maps to one status.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// No instance slot was free (503).
    #[error(transparent)]
    AtCapacity(StartError),
    /// The instance could not be made, or the guest trapped before it set
    /// a response (500).
    #[error("plugin `{plugin}` failed: {message}")]
    Failed {
        /// The plugin.
        plugin: String,
        /// What failed.
        message: String,
    },
    /// The guest set no response within its call timeout (504).
    #[error("plugin `{plugin}` set no response within {timeout:?}")]
    Deadline {
        /// The plugin.
        plugin: String,
        /// The call timeout.
        timeout: Duration,
    },
}

impl HttpError {
    /// The HTTP status the server answers with.
    pub fn status(&self) -> u16 {
        match self {
            Self::AtCapacity(_) => 503,
            Self::Failed { .. } => 500,
            Self::Deadline { .. } => 504,
        }
    }
}

impl PluginHost {
    /// Serve `request` with the plugin `matched` names: take an instance
    /// slot, instantiate, call `handle`, and return the response the guest
    /// sets, its body streaming from the guest.
    pub async fn serve_http<B>(
        &self,
        matched: &RouteMatch,
        request: hyper::Request<B>,
        call: HttpCall,
    ) -> Result<hyper::Response<HttpBody>, HttpError>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        let plugin = Arc::clone(&matched.plugin);
        let name = plugin.name().to_owned();
        let failed = |message: String| HttpError::Failed {
            plugin: name.clone(),
            message,
        };
        let Some(indices) = plugin.artifact().http_exports.clone() else {
            return Err(failed("the plugin serves no HTTP routes".to_owned()));
        };
        let permits = self.take_slots(&plugin).map_err(HttpError::AtCapacity)?;
        let timeout = plugin.limits().call_timeout;
        let mut store = self.new_store(&plugin, ResourceTable::new(), 0);
        let info = RequestInfo {
            route: matched.route.to_string(),
            kwargs: matched.kwargs.clone(),
            user: call.user,
            claims: call.claims,
            request_id: call.request_id,
        };
        store.data_mut().request = Some(RequestCtx::new(info, Arc::clone(&self.layer), timeout));
        let (sender, receiver) = oneshot::channel();
        let mut http = store.data_mut().http();
        let incoming = http
            .new_incoming_request(Scheme::Http, request)
            .map_err(|err| failed(format!("{err:#}")))?;
        let outparam = http
            .new_response_outparam(sender)
            .map_err(|err| failed(format!("{err:#}")))?;
        let pre = plugin.artifact().pre.clone();
        let failures = self.failures.counter(plugin.name());
        let clock = self.ticker.clock();
        let task = tokio::spawn(async move {
            let _running = clock.running();
            let _permits = permits;
            let instance = pre.instantiate_async(&mut store).await?;
            let handler = indices.load(&mut store, &instance)?;
            handler.call_handle(&mut store, incoming, outparam).await
        });
        // Dropped before the response is handed on (the client went away,
        // or the request failed), it stops the guest.
        let guest = AbortOnDrop(Some(task.abort_handle()));
        let outcome = tokio::time::timeout(timeout, receiver).await;
        let response = match outcome {
            Ok(Ok(Ok(response))) => response,
            Ok(Ok(Err(code))) => {
                return Err(failed(format!("the plugin answered with error {code:?}")));
            }
            // The guest returned (or trapped) without setting a response.
            Ok(Err(_dropped)) => {
                let message = match task.await {
                    Ok(Ok(())) => "the handler returned without setting a response".to_owned(),
                    Ok(Err(err)) => match guest_failure(&err, &failures) {
                        Failure::Deadline => {
                            return Err(HttpError::Deadline {
                                plugin: name,
                                timeout,
                            });
                        }
                        Failure::Trap(message) => message,
                    },
                    Err(join) => format!("the handler task failed: {join}"),
                };
                return Err(failed(message));
            }
            Err(_elapsed) => {
                failures.deadline();
                return Err(HttpError::Deadline {
                    plugin: name,
                    timeout,
                });
            }
        };
        tokio::spawn(watch_rest(task, failures, name, timeout));
        Ok(response.map(|body| GuardedBody { inner: body, guest }.boxed_unsync()))
    }
}

/// How a guest call failed.
enum Failure {
    /// It ran past its epoch deadline.
    Deadline,
    /// It trapped; the trap's description.
    Trap(String),
}

/// Count and classify a guest failure.
fn guest_failure(err: &wasmtime::Error, failures: &FailureCounter) -> Failure {
    if matches!(
        err.downcast_ref::<wasmtime::Trap>(),
        Some(wasmtime::Trap::Interrupt)
    ) {
        failures.deadline();
        Failure::Deadline
    } else {
        failures.trap();
        Failure::Trap(format!("trapped: {err:#}"))
    }
}

/// After the response head: log how the rest of the guest call ends.
async fn watch_rest(
    task: tokio::task::JoinHandle<wasmtime::Result<()>>,
    failures: Arc<FailureCounter>,
    plugin: String,
    timeout: Duration,
) {
    match task.await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => match guest_failure(&err, &failures) {
            Failure::Deadline => tracing::warn!(
                plugin,
                "HTTP handler ran past its deadline of {timeout:?} after its response head"
            ),
            Failure::Trap(message) => {
                tracing::warn!(
                    plugin,
                    "HTTP handler failed after its response head: {message}"
                );
            }
        },
        Err(join) if join.is_cancelled() => {
            tracing::debug!(plugin, "HTTP handler stopped: the client went away");
        }
        Err(join) => tracing::warn!(plugin, "HTTP handler task failed: {join}"),
    }
}

/// Aborts the guest's task when dropped, unless disarmed first.
struct AbortOnDrop(Option<AbortHandle>);

impl AbortOnDrop {
    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(guest) = self.0.take() {
            guest.abort();
        }
    }
}

/// The guest's response body; dropped before its end (the client went
/// away), it aborts the guest's task, whose store and instance go with it.
struct GuardedBody {
    inner: wasmtime_wasi_http::p2::body::HyperOutgoingBody,
    /// Disarmed once the body has ended.
    guest: AbortOnDrop,
}

impl Body for GuardedBody {
    type Data = Bytes;
    type Error = HttpBodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, HttpBodyError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            self.guest.disarm();
        }
        polled.map_err(HttpBodyError)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
