//! [`LocalChannels`]: this process's channels, by name, and delivery into them.
//!
//! Every layer ends in a local delivery: the memory layer delivers every event
//! here, and a Redis layer delivers the events it pops from its process inbox key
//! here too. So naming (`specific.<client prefix>!<local>`), capacity, expiry and
//! the `ChannelFull` rule live in this one place.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::inbox::{Envelope, Inbox};
use crate::names::non_local_name;
use crate::queue::{self, Sender, TrySendError};
use crate::stats::StatCounters;
use crate::{CapacityRules, Event, LayerError, lock_unpoisoned};

/// What happened to an event that was not refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Delivery {
    /// The event is queued in the channel's inbox.
    Delivered,
    /// No local inbox has that name (never created here, or already dropped).
    NoInbox,
}

/// What a layer does when an inbox is dropped, given the channel's name: leave
/// the channel's groups, so a consumer dropped without a `group_discard` does
/// not stay a member until the group expiry (or forever, where the layer
/// refreshes its memberships). Runs inside `Inbox::drop`: it must not block
/// or await.
pub(crate) type CloseHook = Box<dyn Fn(&str) + Send + Sync>;

/// The name → sender map that inboxes remove themselves from.
///
/// A std mutex, because every critical section is a map lookup, insert or
/// removal, and `Inbox::drop` (which cannot await) needs it too.
pub(crate) struct Registry {
    senders: Mutex<HashMap<Arc<str>, Sender<Envelope>>>,
    on_close: CloseHook,
}

impl Registry {
    /// Removes a dropped inbox's channel, then runs the close hook (with the
    /// registry unlocked, so the hook may take the layer's locks).
    pub(crate) fn remove(&self, name: &str) {
        lock_unpoisoned(&self.senders).remove(name);
        (self.on_close)(name);
    }

    fn contains(&self, name: &str) -> bool {
        lock_unpoisoned(&self.senders).contains_key(name)
    }

    fn sender(&self, name: &str) -> Option<Sender<Envelope>> {
        lock_unpoisoned(&self.senders).get(name).cloned()
    }

    fn len(&self) -> usize {
        lock_unpoisoned(&self.senders).len()
    }
}

/// The local channels of one layer instance.
pub(crate) struct LocalChannels {
    registry: Arc<Registry>,
    /// `specific.<client prefix>!`: the non-local part shared by every channel of
    /// this layer instance.
    channel_prefix: String,
    /// Counts channels from a random start; its value makes each name unique.
    next_local: AtomicU64,
    capacity: CapacityRules,
    expiry: Duration,
    stats: Arc<StatCounters>,
}

impl LocalChannels {
    /// An empty registry with a fresh random client prefix: 32 lowercase hex
    /// characters, like channels_redis's `uuid4().hex` `client_prefix`.
    /// `on_close` runs for each inbox dropped.
    pub(crate) fn new(
        capacity: CapacityRules,
        expiry: Duration,
        stats: Arc<StatCounters>,
        on_close: CloseHook,
    ) -> Self {
        Self {
            registry: Arc::new(Registry {
                senders: Mutex::default(),
                on_close,
            }),
            channel_prefix: format!("specific.{:032x}!", rand::random::<u128>()),
            next_local: AtomicU64::new(rand::random()),
            capacity,
            expiry,
            stats,
        }
    }

    /// `specific.<client prefix>!`: the non-local name of every channel created
    /// here (the Redis layer's process inbox name).
    pub(crate) fn channel_prefix(&self) -> &str {
        &self.channel_prefix
    }

    /// Creates a channel and returns its inbox.
    ///
    /// The name is `specific.<32 hex>!<32 hex>` (74 characters, the shape of
    /// channels_redis's names). The local part is 16 hex digits of a counter, which
    /// cannot repeat within this layer, then 16 random hex digits, so names cannot
    /// be guessed from one another.
    pub(crate) fn new_channel(&self) -> Inbox {
        let local = self.next_local.fetch_add(1, Ordering::Relaxed);
        let name: Arc<str> = Arc::from(format!(
            "{}{local:016x}{:016x}",
            self.channel_prefix,
            rand::random::<u64>()
        ));
        let (sender, receiver) = queue::channel(self.capacity.capacity_for(&name));
        lock_unpoisoned(&self.registry.senders).insert(Arc::clone(&name), sender);
        Inbox::new(
            name,
            receiver,
            Arc::downgrade(&self.registry),
            Arc::clone(&self.stats),
        )
    }

    /// Whether `channel` is named as one of this layer's channels (open or not).
    pub(crate) fn is_local(&self, channel: &str) -> bool {
        non_local_name(channel) == self.channel_prefix
    }

    /// Whether a local inbox named `channel` is open.
    pub(crate) fn is_open(&self, channel: &str) -> bool {
        self.registry.contains(channel)
    }

    /// Queues `event` in the inbox named `channel`, without waiting.
    ///
    /// # Errors
    /// [`LayerError::ChannelFull`] when the inbox is at capacity.
    pub(crate) fn deliver(&self, channel: &str, event: Event) -> Result<Delivery, LayerError> {
        let sender = self.registry.sender(channel);
        self.try_deliver(channel, sender.as_ref(), event)
    }

    /// Queues `event` in each named inbox, without waiting; one result per name, in
    /// order, as [`deliver`](Self::deliver) gives. The registry lock is held only
    /// to look the senders up, not while queueing.
    pub(crate) fn deliver_each(
        &self,
        channels: &[Arc<str>],
        event: &Event,
    ) -> Vec<Result<Delivery, LayerError>> {
        let senders: Vec<Option<Sender<Envelope>>> = {
            let map = lock_unpoisoned(&self.registry.senders);
            channels
                .iter()
                .map(|channel| map.get(channel).cloned())
                .collect()
        };
        channels
            .iter()
            .zip(senders)
            .map(|(channel, sender)| self.try_deliver(channel, sender.as_ref(), event.clone()))
            .collect()
    }

    fn try_deliver(
        &self,
        channel: &str,
        sender: Option<&Sender<Envelope>>,
        event: Event,
    ) -> Result<Delivery, LayerError> {
        let Some(sender) = sender else {
            return Ok(Delivery::NoInbox);
        };
        let envelope = Envelope {
            event,
            expires_at: Instant::now().checked_add(self.expiry),
        };
        match sender.try_send(envelope) {
            Ok(()) => Ok(Delivery::Delivered),
            Err(TrySendError::Full(_)) => Err(LayerError::ChannelFull {
                channel: channel.to_owned(),
            }),
            // The inbox is being dropped and has not yet removed itself.
            Err(TrySendError::Closed(_)) => Ok(Delivery::NoInbox),
        }
    }
}

impl fmt::Debug for LocalChannels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalChannels")
            .field("channel_prefix", &self.channel_prefix)
            .field("channels", &self.registry.len())
            .field("capacity", &self.capacity)
            .field("expiry", &self.expiry)
            .finish_non_exhaustive()
    }
}
