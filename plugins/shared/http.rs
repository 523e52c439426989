//! The `wasi:http` plumbing the example HTTP plugins share (`hello`,
//! `stations`, each including this file with `#[path]`): reading a request
//! body, answering with a whole body, and streaming one. It uses
//! `crate::bindings`, the plugin's own wit-bindgen output for a world that
//! exports `wasi:http/incoming-handler`.

use crate::bindings::wasi::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};
use crate::bindings::wasi::io::streams::{OutputStream, StreamError};

/// Most bytes one `blocking-write-and-flush` may take.
const WRITE_CHUNK: usize = 4096;

/// Read the whole request body (the host has already bounded its size).
pub(crate) fn read_body(request: &IncomingRequest) -> Result<Vec<u8>, String> {
    let body = request
        .consume()
        .map_err(|()| "body already taken".to_owned())?;
    let stream = body
        .stream()
        .map_err(|()| "body stream already taken".to_owned())?;
    let mut bytes = Vec::new();
    loop {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) => bytes.extend_from_slice(&chunk),
            Err(StreamError::Closed) => break,
            Err(StreamError::LastOperationFailed(err)) => return Err(err.to_debug_string()),
        }
    }
    Ok(bytes)
}

fn headers(content_type: &str, extra: &[(&str, &str)]) -> Fields {
    let mut list = vec![("content-type".to_owned(), content_type.as_bytes().to_vec())];
    list.extend(
        extra
            .iter()
            .map(|(name, value)| ((*name).to_owned(), value.as_bytes().to_vec())),
    );
    // Names and values here are the plugin's own constants: valid.
    Fields::from_list(&list).unwrap_or_else(|_| Fields::new())
}

/// A response being written: its body stream is open until [`Writer::finish`].
pub(crate) struct Writer {
    stream: OutputStream,
    body: OutgoingBody,
}

impl Writer {
    /// Send the status and headers now; the body follows in pieces.
    pub(crate) fn start(
        out: ResponseOutparam,
        status: u16,
        content_type: &str,
        extra: &[(&str, &str)],
    ) -> Self {
        let response = OutgoingResponse::new(headers(content_type, extra));
        // A status in 100-999 is always accepted.
        let _ = response.set_status_code(status);
        let Ok(body) = response.body() else {
            unreachable!("a new response's body is taken once");
        };
        let Ok(stream) = body.write() else {
            unreachable!("a new body's stream is taken once");
        };
        ResponseOutparam::set(out, Ok(response));
        Self { stream, body }
    }

    /// Write and flush `bytes`; an error means the client has gone.
    pub(crate) fn write(&self, bytes: &[u8]) -> Result<(), StreamError> {
        for chunk in bytes.chunks(WRITE_CHUNK) {
            self.stream.blocking_write_and_flush(chunk)?;
        }
        Ok(())
    }

    /// End the body.
    pub(crate) fn finish(self) {
        drop(self.stream);
        let _ = OutgoingBody::finish(self.body, None);
    }
}

/// Answer with a whole body.
pub(crate) fn respond(out: ResponseOutparam, status: u16, content_type: &str, body: &[u8]) {
    let writer = Writer::start(out, status, content_type, &[]);
    // A client gone mid-body is nobody's error here.
    let _ = writer.write(body);
    writer.finish();
}

/// Answer with JSON.
pub(crate) fn json(out: ResponseOutparam, status: u16, value: &serde_json::Value) {
    respond(
        out,
        status,
        "application/json",
        value.to_string().as_bytes(),
    );
}

/// Answer 405 with the allowed method.
pub(crate) fn method_not_allowed(out: ResponseOutparam, allow: &str) {
    let writer = Writer::start(out, 405, "application/json", &[("allow", allow)]);
    let _ = writer.write(
        serde_json::json!({"error": "method_not_allowed", "allow": allow})
            .to_string()
            .as_bytes(),
    );
    writer.finish();
}
