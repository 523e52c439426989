//! `[static]`: a directory of files served under a path prefix, through
//! tower-http's `ServeDir` (content types from the extension, `ETag` and
//! `Last-Modified` with conditional requests, `Range`, `index.html` for a
//! directory, no path escapes out of the directory).

use std::path::Path;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use tower_http::services::ServeDir;
use tower_service::Service as _;

/// The static files of the server.
#[derive(Debug, Clone)]
pub(crate) struct StaticFiles {
    prefix: String,
    dir: ServeDir,
}

impl StaticFiles {
    /// Serve `dir` under `prefix` (which starts and ends with `/`).
    pub(crate) fn new(dir: &Path, prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
            dir: ServeDir::new(dir),
        }
    }

    /// The file for a GET or HEAD of `path` (percent-decoded) under the
    /// prefix; `None` when the path is not under it, the method is another,
    /// or there is no such file, so the request goes on to the next router.
    pub(crate) async fn serve(&self, path: &str, request: Request) -> Option<Response> {
        if !matches!(*request.method(), Method::GET | Method::HEAD) {
            return None;
        }
        // `path` is decoded; ServeDir decodes again, so hand it the raw one.
        let raw = request.uri().path();
        let rest = raw.strip_prefix(&self.prefix)?;
        path.strip_prefix(&self.prefix)?;
        let target = match request.uri().query() {
            Some(query) => format!("/{rest}?{query}"),
            None => format!("/{rest}"),
        };
        let uri: Uri = target.parse().ok()?;
        let (mut parts, body) = request.into_parts();
        parts.uri = uri;
        let request = Request::from_parts(parts, body);
        let response = match self.dir.clone().call(request).await {
            Ok(response) => response.map(Body::new),
            Err(infallible) => match infallible {},
        };
        if response.status() == StatusCode::NOT_FOUND {
            return None;
        }
        Some(response.into_response())
    }
}
