//! [`Inbox`]: the receiving end of one process-local channel.

use std::fmt;
use std::sync::{Arc, Weak};

use tokio::time::Instant;

use crate::Event;
use crate::local::Registry;
use crate::queue::Receiver;
use crate::stats::{self, StatCounters};

/// An event waiting in a channel, with the instant after which it is stale.
///
/// `tokio::time::Instant` rather than std's, so tests can drive expiry with paused
/// time.
#[derive(Debug)]
pub(crate) struct Envelope {
    pub(crate) event: Event,
    /// `None` when the expiry is too long to represent: the event never expires.
    pub(crate) expires_at: Option<Instant>,
}

impl Envelope {
    /// Channels drops an event once its expiry time is *before* now, so an event
    /// read exactly at its expiry instant is still delivered.
    fn is_expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|expires_at| expires_at < now)
    }
}

/// The receiving end of one channel, created by
/// [`ChannelLayer::new_channel`](crate::ChannelLayer::new_channel).
///
/// Events wait in a bounded queue whose size is the channel's capacity: a bound
/// is what lets a sender see `ChannelFull` instead of the process growing without
/// limit behind a slow consumer. Events older than the layer's expiry are dropped
/// when they reach the front, and counted in
/// [`LayerStats::expired`](crate::LayerStats::expired); like Channels, an expired
/// event occupies capacity until then.
///
/// Dropping the inbox removes the channel from the layer: later sends to its name
/// are undeliverable, and the name is never handed out again.
pub struct Inbox {
    name: Arc<str>,
    receiver: Receiver<Envelope>,
    /// Weak, so that dropping the layer drops every sender and ends `recv`.
    registry: Weak<Registry>,
    stats: Arc<StatCounters>,
}

impl Inbox {
    pub(crate) fn new(
        name: Arc<str>,
        receiver: Receiver<Envelope>,
        registry: Weak<Registry>,
        stats: Arc<StatCounters>,
    ) -> Self {
        Self {
            name,
            receiver,
            registry,
            stats,
        }
    }

    /// The channel's name, valid by Channels' rules; give it to others so they can
    /// `send` to this channel or add it to groups.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How many events the channel holds before sends fail with `ChannelFull`.
    pub fn capacity(&self) -> usize {
        self.receiver.capacity()
    }

    /// The next unexpired event, waiting for one if the channel is empty.
    ///
    /// Returns `None` once the layer has been dropped and every queued event read.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it may be used as a branch of `tokio::select!`. A cancelled
    /// `recv` has taken no event off the queue (expired events it skipped are gone,
    /// as they would be anyway).
    pub async fn recv(&mut self) -> Option<Event> {
        loop {
            // `Receiver::recv` is cancel safe, and nothing below awaits.
            let envelope = self.receiver.recv().await?;
            if let Some(event) = self.unexpired(envelope) {
                return Some(event);
            }
        }
    }

    /// The next unexpired event if one is queued now; `None` if the channel is
    /// empty (or the layer is gone).
    pub fn try_recv(&mut self) -> Option<Event> {
        loop {
            let envelope = self.receiver.try_recv()?;
            if let Some(event) = self.unexpired(envelope) {
                return Some(event);
            }
        }
    }

    fn unexpired(&self, envelope: Envelope) -> Option<Event> {
        if envelope.is_expired(Instant::now()) {
            stats::add(&self.stats.expired, 1);
            tracing::debug!(channel = %self.name, event_type = envelope.event.event_type(),
                "dropped an expired event");
            return None;
        }
        Some(envelope.event)
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        if let Some(registry) = self.registry.upgrade() {
            registry.remove(&self.name);
        }
    }
}

impl fmt::Debug for Inbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inbox")
            .field("name", &self.name)
            .field("capacity", &self.capacity())
            .field("queued", &self.receiver.len())
            .finish_non_exhaustive()
    }
}
