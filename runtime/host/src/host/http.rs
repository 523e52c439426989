//! Serving one HTTP request through a plugin's `wasi:http/incoming-handler`
//! export, as wasmtime's `serve` and Spin do: a fresh instance per request
//! (or, for a plugin that opted in, an idle one kept from an earlier
//! request: see `crate::http_pool`), run in a task of its own so the guest
//! can go on writing the body after it has set the response.
//!
//! Deadlines: the response head must come within the plugin's call timeout
//! (else 504) and the guest's running time is bounded by the epoch deadline
//! throughout; a body that streams (Server-Sent Events) lives as long as
//! the client reads it and the guest writes it. When the client goes away
//! before the body ends, the guest task is aborted and its instance
//! dropped (never kept for reuse).

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
use wasmtime::Store;
use wasmtime::component::ResourceTable;
use wasmtime_wasi_http::WasiHttpView as _;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;

use super::PluginHost;
use super::start::StartError;
use crate::bindings::IncomingHandler;
use crate::engine::epoch_ticks;
use crate::failures::FailureCounter;
use crate::http_context::{RequestCtx, RequestInfo};
use crate::http_pool::PooledHandler;
use crate::registry::RouteMatch;
use crate::state::ConsumerState;
use crate::version::Version;

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
    /// slot, take an idle instance (when the plugin opted into reuse) or
    /// instantiate, call `handle`, and return the response the guest sets,
    /// its body streaming from the guest.
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
        let reuse = plugin.manifest().http.reuse_instances;
        let (mut store, idle_handler) = match reuse.then(|| plugin.http_pool.take()).flatten() {
            Some(PooledHandler { store, handler }) => (store, Some(handler)),
            None => (self.new_store(&plugin, ResourceTable::new(), 0), None),
        };
        // A reused store starts the request as a fresh one does: the whole
        // call budget, and no request of an earlier call.
        store.data_mut().ticks_left = epoch_ticks(timeout);
        store.set_epoch_deadline(1);
        let resources_before = store.data_mut().wasi_resources();
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
        let (ended, mut end) = oneshot::channel();
        let version = Arc::clone(&plugin);
        // One task runs the guest to the end of `handle` and reports how it
        // ended: to `serve_http` while it waits for a response head, to the
        // log once the head has gone (`end` is closed by then).
        let task = tokio::spawn(async move {
            let _permits = permits;
            let running = clock.running();
            let result = async {
                let handler = match idle_handler {
                    Some(handler) => handler,
                    None => {
                        let instance = pre.instantiate_async(&mut store).await?;
                        indices.load(&mut store, &instance)?
                    }
                };
                handler.call_handle(&mut store, incoming, outparam).await?;
                wasmtime::Result::Ok(handler)
            }
            .await;
            drop(running);
            let outcome = match result {
                Ok(handler) => {
                    if reuse {
                        keep_if_clean(&version, store, handler, resources_before);
                    }
                    Ended::Returned
                }
                Err(err) => Ended::Failed(guest_failure(&err, &failures)),
            };
            if let Err(Ended::Failed(failure)) = ended.send(outcome) {
                log_after_head(version.name(), &failure, timeout);
            }
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
                let message = match end.await {
                    Ok(Ended::Returned) => {
                        "the handler returned without setting a response".to_owned()
                    }
                    Ok(Ended::Failed(Failure::Deadline)) => {
                        return Err(HttpError::Deadline {
                            plugin: name,
                            timeout,
                        });
                    }
                    Ok(Ended::Failed(Failure::Trap(message))) => message,
                    Err(_) => match task.await {
                        Err(join) => format!("the handler task failed: {join}"),
                        Ok(()) => "the handler task ended without a word".to_owned(),
                    },
                };
                return Err(failed(message));
            }
            Err(_elapsed) => {
                self.failures.counter(&name).deadline();
                return Err(HttpError::Deadline {
                    plugin: name,
                    timeout,
                });
            }
        };
        // From here the task logs how the guest ends; an end it reported
        // already is logged here.
        end.close();
        if let Ok(Ended::Failed(failure)) = end.try_recv() {
            log_after_head(&name, &failure, timeout);
        }
        Ok(response.map(|body| GuardedBody { inner: body, guest }.boxed_unsync()))
    }
}

/// Back to the version's pool with `handler`, if the request left nothing
/// behind: its request context is cleared, and the store's resource table
/// must hold no more than before the request (else it is dropped).
fn keep_if_clean(
    version: &Version,
    mut store: Store<ConsumerState>,
    handler: IncomingHandler,
    resources_before: usize,
) {
    // Leaves the groups the request's channel joined.
    store.data_mut().request = None;
    let left = store.data_mut().wasi_resources();
    if left > resources_before {
        tracing::debug!(
            plugin = version.name(),
            left,
            resources_before,
            "HTTP instance not reused: the request left resources behind"
        );
        return;
    }
    version
        .http_pool
        .give_back(PooledHandler { store, handler });
}

/// How the guest's `handle` ended.
enum Ended {
    /// It returned.
    Returned,
    /// It trapped or ran past its deadline.
    Failed(Failure),
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

/// Log a guest failure after its response head went out.
fn log_after_head(plugin: &str, failure: &Failure, timeout: Duration) {
    match failure {
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
