//! A guest's stdout and stderr, turned into log lines tagged with the plugin
//! and connection, so `println!` and panic messages reach the operator.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

/// Longest line kept; a guest writing without newlines is cut into pieces
/// of this size rather than buffered without bound.
const MAX_LINE: usize = 4096;

/// Which stream a line came from.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Stream {
    Stdout,
    Stderr,
}

/// The id of the connection the store's current call is about: set before
/// every call, so a shared instance's output names the connection it ran
/// for.
pub(crate) type CurrentConnectionId = Arc<AtomicU64>;

/// The tracing span of the store's current call (the server's span of the
/// connection it runs for), set before every call like
/// [`CurrentConnectionId`]: guest output is written from a task of
/// wasmtime's own, which does not inherit the caller's span, so each line
/// is logged inside this one instead.
pub(crate) type CurrentSpan = Arc<Mutex<tracing::Span>>;

/// A [`CurrentSpan`] with no span yet.
pub(crate) fn no_span() -> CurrentSpan {
    Arc::new(Mutex::new(tracing::Span::none()))
}

/// Makes the caller's span the one guest output is logged in.
pub(crate) fn set_span(current: &CurrentSpan) {
    *current.lock().unwrap_or_else(PoisonError::into_inner) = tracing::Span::current();
}

/// One guest stream of one store.
#[derive(Debug, Clone)]
pub(crate) struct GuestOutput {
    plugin: Arc<str>,
    connection_id: CurrentConnectionId,
    span: CurrentSpan,
    stream: Stream,
}

impl GuestOutput {
    pub(crate) fn new(
        plugin: Arc<str>,
        connection_id: CurrentConnectionId,
        span: CurrentSpan,
        stream: Stream,
    ) -> Self {
        Self {
            plugin,
            connection_id,
            span,
            stream,
        }
    }
}

impl GuestOutput {
    /// The id of the connection the store's current call is about.
    fn current(&self) -> u64 {
        self.connection_id.load(Ordering::Relaxed)
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(LineWriter {
            target: self.clone(),
            line: Vec::new(),
        })
    }
}

#[derive(Debug)]
struct LineWriter {
    target: GuestOutput,
    line: Vec<u8>,
}

impl LineWriter {
    fn emit(&mut self) {
        if self.line.is_empty() {
            return;
        }
        let text = String::from_utf8_lossy(&self.line);
        let text = text.trim_end_matches(['\r', '\n']);
        let connection = self.target.current();
        let GuestOutput {
            plugin,
            stream,
            span,
            ..
        } = &self.target;
        let span = span.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let _entered = span.enter();
        match stream {
            Stream::Stdout => tracing::info!(plugin = %plugin, connection, "guest stdout: {text}"),
            Stream::Stderr => tracing::warn!(plugin = %plugin, connection, "guest stderr: {text}"),
        }
        self.line.clear();
    }
}

impl AsyncWrite for LineWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        for &byte in buf {
            this.line.push(byte);
            if byte == b'\n' || this.line.len() >= MAX_LINE {
                this.emit();
            }
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.get_mut().emit();
        Poll::Ready(Ok(()))
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        self.emit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_names_the_connection_of_the_current_call() {
        // A shared instance's store is made with no connection (0); each
        // call sets the one it runs for.
        let current = CurrentConnectionId::default();
        let output = GuestOutput::new(
            "echo".into(),
            Arc::clone(&current),
            no_span(),
            Stream::Stdout,
        );
        assert_eq!(output.current(), 0);
        current.store(7, Ordering::Relaxed);
        assert_eq!(output.current(), 7);
    }
}
