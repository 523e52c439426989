//! A guest's stdout and stderr, turned into log lines tagged with the plugin
//! and connection, so `println!` and panic messages reach the operator.

use std::pin::Pin;
use std::sync::Arc;
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

/// One guest stream of one store.
#[derive(Debug, Clone)]
pub(crate) struct GuestOutput {
    plugin: Arc<str>,
    connection: u64,
    stream: Stream,
}

impl GuestOutput {
    pub(crate) fn new(plugin: Arc<str>, connection: u64, stream: Stream) -> Self {
        Self {
            plugin,
            connection,
            stream,
        }
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
        let GuestOutput {
            plugin,
            connection,
            stream,
        } = &self.target;
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
