//! Liveness and readiness for load balancers and orchestrators, on the
//! public port (or only on the admin listener, `[admin] bind`), without a
//! token:
//!
//! - `GET /healthz`: 200 while the process serves at all (liveness).
//! - `GET /readyz`: 200 when the server should be sent traffic: it is not
//!   shutting down, the initial load of the plugin directory has finished
//!   (plugins compile in the background after the server binds), at least
//!   one plugin route is live, and the channel layer reaches its backend ([`ChannelLayer::health`]); otherwise 503.
//!   Readiness turns to 503 at the very start of a shutdown, before any
//!   socket is closed with 1001, so a balancer stops sending new
//!   connections while the old ones drain.
//!
//! Both answer a small JSON body saying why. The paths are the server's:
//! a plugin manifest cannot claim them (see `switchyard_host`'s manifest
//! rules), and the server's own routes are matched before plugin routes.
//!
//! [`ChannelLayer::health`]: switchyard_layer::ChannelLayer::health

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::server::AppState;

/// The liveness path.
pub(crate) const HEALTHZ_PATH: &str = "/healthz";
/// The readiness path.
pub(crate) const READYZ_PATH: &str = "/readyz";

/// Whether the server has begun to shut down, as readiness sees it. Set
/// before the sockets are told to close.
#[derive(Debug, Clone, Default)]
pub(crate) struct Draining(Arc<AtomicBool>);

impl Draining {
    /// From now on, readiness answers 503.
    pub(crate) fn start(&self) {
        self.0.store(true, Ordering::Release);
    }

    /// Whether [`Draining::start`] was called.
    pub(crate) fn is_draining(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// `GET /healthz`.
pub(crate) async fn healthz() -> Response {
    Json(json!({"status": "alive"})).into_response()
}

/// `GET /readyz`.
pub(crate) async fn readyz(State(app): State<AppState>) -> Response {
    let shutting_down = app.draining.is_draining();
    let routes = app.host.routes().len();
    let layer_healthy = app.host.layer().health().is_healthy();
    let plugins_loaded = app.host.initial_load_done();
    let ready = !shutting_down && plugins_loaded && routes > 0 && layer_healthy;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "ready": ready,
        "shutting_down": shutting_down,
        "routes": routes,
        "plugins_loaded": plugins_loaded,
        "plugins_loading": app.host.loading_count(),
        "layer_healthy": layer_healthy,
    });
    (status, Json(body)).into_response()
}
