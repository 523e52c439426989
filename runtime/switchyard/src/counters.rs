//! What the server refused or cut off, counted since start: every
//! protection that fires is counted (and logged with the running count),
//! never silent. [`crate::Server::counters`] hands them to tests and, later,
//! an admin API.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of refusals and forced closes.
#[derive(Debug, Default)]
pub struct Counters {
    /// Clients closed because their outbound queue filled (1008).
    pub slow_readers: AtomicU64,
    /// Connections closed for sending too many messages (1008).
    pub message_rate: AtomicU64,
    /// Connections closed for not answering pings.
    pub ping_timeouts: AtomicU64,
    /// Connections closed because the plugin failed (1011).
    pub plugin_failures: AtomicU64,
    /// Handshakes refused: wrong origin (403).
    pub bad_origin: AtomicU64,
    /// Handshakes refused: missing or invalid token (403).
    pub unauthenticated: AtomicU64,
    /// Handshakes refused by per-IP limits (429).
    pub ip_limited: AtomicU64,
    /// Handshakes refused at `max-connections` or instance caps (503).
    pub at_capacity: AtomicU64,
    /// Requests refused for oversized paths or headers (414, 431).
    pub oversized_requests: AtomicU64,
    /// Handshakes whose client left (or whose handshake timeout passed)
    /// while the consumer's `connect` ran; the consumer was disconnected
    /// (1006) when `connect` returned.
    pub abandoned_handshakes: AtomicU64,
    /// Connections closed because no complete request head arrived within
    /// `websocket.handshake-timeout-secs` (slow or silent clients, idle
    /// keep-alive).
    pub request_timeouts: AtomicU64,
    /// TLS certificates reloaded after their files changed.
    pub tls_reloads: AtomicU64,
    /// TLS reloads that failed (the previous certificate kept serving).
    pub tls_reload_failures: AtomicU64,
}

impl Counters {
    /// Add one to `counter` and return the new total.
    pub(crate) fn bump(counter: &AtomicU64) -> u64 {
        counter.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Read a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
