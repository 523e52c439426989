//! Serving one HTTP request through a plugin's `wasi:http/incoming-handler`
//! export, as wasmtime's `serve` and Spin do: a fresh instance per request
//! (or, for a plugin that opted in, an idle one kept from an earlier
//! request: see `crate::http_pool`). The guest runs in the request's own
//! task: until it sets the response head, then inside the response body,
//! which runs it on whenever hyper asks for the next frame, so the guest
//! can go on writing the body after it has set the response. A task of its
//! own per request (as before) cost a spawn, a timer and a wake-up on
//! another thread for every request, most of which set their head, write
//! their body and return in one poll.
//!
//! Deadlines: the response head must come within the plugin's call timeout
//! (else 504) and the guest's running time is bounded by the epoch deadline
//! throughout; a body that streams (Server-Sent Events) lives as long as
//! the client reads it and the guest writes it. When the client goes away
//! before the body ends, the guest is dropped mid-call and its instance
//! with it (never kept for reuse).

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt as _;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::oneshot;
use tokio::time::Instant;
use wasmtime::Store;
use wasmtime::component::ResourceTable;
use wasmtime_wasi_http::WasiHttpView as _;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;

use super::PluginHost;
use super::start::StartError;
use crate::bindings::IncomingHandler;
use crate::call_deadline::{Elapsed, within};
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
        let version = Arc::clone(&plugin);
        // The guest runs to the end of `handle` in the request's own task,
        // not a task of its own: first while this function waits for the
        // response head, then inside the response body (see `GuardedBody`).
        // A small view sets its head, writes its body and returns in one
        // poll, with no task to spawn and no thread to wake.
        let guest: Guest = Box::pin(async move {
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
            match result {
                Ok(handler) => {
                    if reuse {
                        keep_if_clean(&version, store, handler, resources_before);
                    }
                    Ended::Returned
                }
                Err(err) => Ended::Failed(guest_failure(&err, &failures)),
            }
        });
        let mut guest = Some(guest);
        let mut ended = None;
        let mut receiver = receiver;
        // The head must come within the call timeout; the timer is made only
        // if the guest has not set it in the first poll (`within`).
        let head = within(
            Instant::now() + timeout,
            poll_fn(|cx| {
                if let Some(running) = guest.as_mut()
                    && let Poll::Ready(end) = running.as_mut().poll(cx)
                {
                    guest = None;
                    ended = Some(end);
                }
                match Pin::new(&mut receiver).poll(cx) {
                    Poll::Ready(head) => Poll::Ready(head.ok()),
                    // The guest is done and set nothing (the outparam is
                    // dropped with the store, or kept in an idle one).
                    Poll::Pending if ended.is_some() => Poll::Ready(None),
                    Poll::Pending => Poll::Pending,
                }
            }),
        )
        .await;
        // Returning early drops `guest`, which stops it (its store and
        // instance are dropped, never kept for reuse).
        let response = match head {
            Ok(Some(Ok(response))) => response,
            Ok(Some(Err(code))) => {
                return Err(failed(format!("the plugin answered with error {code:?}")));
            }
            // The guest returned (or trapped) without setting a response.
            Ok(None) => {
                let end = match (ended, guest) {
                    (Some(end), _) => Some(end),
                    // The outparam went before the guest ended: wait for
                    // the end, within what is left of the call timeout.
                    (None, Some(running)) => within(Instant::now() + timeout, running).await.ok(),
                    (None, None) => None,
                };
                let message = match end {
                    Some(Ended::Returned) => {
                        "the handler returned without setting a response".to_owned()
                    }
                    Some(Ended::Failed(Failure::Trap(message))) => message,
                    Some(Ended::Failed(Failure::Deadline)) | None => {
                        return Err(HttpError::Deadline {
                            plugin: name,
                            timeout,
                        });
                    }
                };
                return Err(failed(message));
            }
            Err(Elapsed) => {
                self.failures.counter(&name).deadline();
                return Err(HttpError::Deadline {
                    plugin: name,
                    timeout,
                });
            }
        };
        // From here the body runs the guest on and logs how it ends; an
        // end that came already is logged here.
        if let Some(Ended::Failed(failure)) = &ended {
            log_after_head(&name, failure, timeout);
        }
        let plugin = plugin.artifact().name_arc();
        Ok(response.map(|inner| {
            GuardedBody {
                inner,
                guest,
                plugin,
                timeout,
            }
            .boxed_unsync()
        }))
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

/// A guest call to the end of `handle`, with how it ended.
type Guest = Pin<Box<dyn Future<Output = Ended> + Send>>;

/// The guest's response body, and the guest itself until it has ended:
/// each poll for a frame runs the guest on first, so it writes the body
/// in the task that sends it. Dropped before the guest ended (the client
/// went away), it stops the guest, whose store and instance go with it.
struct GuardedBody {
    inner: wasmtime_wasi_http::p2::body::HyperOutgoingBody,
    /// `None` once the guest has ended.
    guest: Option<Guest>,
    plugin: Arc<str>,
    timeout: Duration,
}

impl GuardedBody {
    fn guest_ended(&self, end: &Ended) {
        if let Ended::Failed(failure) = end {
            log_after_head(&self.plugin, failure, self.timeout);
        }
    }
}

impl Body for GuardedBody {
    type Data = Bytes;
    type Error = HttpBodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, HttpBodyError>>> {
        if let Some(guest) = self.guest.as_mut()
            && let Poll::Ready(end) = guest.as_mut().poll(cx)
        {
            self.guest = None;
            self.guest_ended(&end);
        }
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(None) = polled
            && let Some(guest) = self.guest.take()
        {
            // The body is whole but the guest runs on after it: it
            // finishes in a task of its own, as nobody polls this any more.
            let plugin = Arc::clone(&self.plugin);
            let timeout = self.timeout;
            tokio::spawn(async move {
                if let Ended::Failed(failure) = guest.await {
                    log_after_head(&plugin, &failure, timeout);
                }
            });
        }
        polled.map_err(HttpBodyError)
    }

    fn is_end_stream(&self) -> bool {
        self.guest.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
