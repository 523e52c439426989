//! [`MemoryLayer`]: the single-process layer, Channels' `InMemoryChannelLayer`
//! (4.2+ semantics).
//!
//! - Each channel has its own bounded queue sized by [`CapacityRules`]; `send` to a
//!   full channel is `ChannelFull`, never a wait and never a silent drop.
//! - Events expire `expiry` after they were sent; an expired event is dropped when
//!   the receiver reaches it.
//! - A group membership lasts `group_expiry` from its last `group_add`; stale
//!   memberships are dropped when the group is next sent to.
//! - `group_send` skips members whose channel is full, and counts them.
//!
//! Differences from Channels: a name with no local inbox is not an error, but it
//! is counted (Channels creates a queue for any name and lets it fill up); the
//! expiry of an event does not remove its channel from groups, but dropping its
//! inbox does (the host also removes a closed connection from its groups itself).

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::local::{Delivery, LocalChannels};
use crate::memberships::Memberships;
use crate::names::{validate_channel_name, validate_group_name};
use crate::stats::{self, StatCounters};
use crate::{
    CapacityRules, ChannelLayer, Event, GroupSendReport, Inbox, LayerConfig, LayerConfigError,
    LayerError, LayerStats, lock_unpoisoned,
};

/// Group name → member channel → time of its last `group_add`.
type Groups = Memberships<Instant>;

/// A channel layer within one process.
pub struct MemoryLayer {
    local: LocalChannels,
    /// A std mutex: it guards map work only and is never held across an `.await`
    /// (or while delivering), so an async mutex would only add cost. Shared
    /// with the inbox close hook, which removes a dropped channel.
    groups: Arc<Mutex<Groups>>,
    group_expiry: Duration,
    stats: Arc<StatCounters>,
}

impl MemoryLayer {
    /// A layer with the given options.
    ///
    /// # Errors
    /// [`LayerConfigError::Capacity`] naming the bad setting when a capacity is
    /// 0 or too large (see [`CapacityRules::new`]).
    pub fn new(config: LayerConfig) -> Result<Self, LayerConfigError> {
        let LayerConfig {
            expiry,
            group_expiry,
            capacity,
            channel_capacity,
        } = config;
        let capacity = CapacityRules::new(capacity, &channel_capacity)?;
        Ok(Self::with_rules(capacity, expiry, group_expiry))
    }

    fn with_rules(capacity: CapacityRules, expiry: Duration, group_expiry: Duration) -> Self {
        let stats = Arc::new(StatCounters::default());
        let groups: Arc<Mutex<Groups>> = Arc::default();
        let on_close = {
            let groups = Arc::clone(&groups);
            Box::new(move |channel: &str| {
                lock_unpoisoned(&groups).remove_channel(channel);
            })
        };
        Self {
            local: LocalChannels::new(capacity, expiry, Arc::clone(&stats), on_close),
            groups,
            group_expiry,
            stats,
        }
    }

    /// The members of `group` whose membership has not expired, after dropping the
    /// expired ones (and the group itself, if that empties it).
    fn current_members(&self, group: &str) -> Vec<Arc<str>> {
        let now = Instant::now();
        // Channels keeps a membership while `joined >= now - group_expiry`.
        lock_unpoisoned(&self.groups).retain_members(group, |joined| {
            now.saturating_duration_since(*joined) <= self.group_expiry
        })
    }
}

/// Channels' defaults (see [`LayerConfig::default`]).
impl Default for MemoryLayer {
    fn default() -> Self {
        Self::with_rules(
            CapacityRules::default(),
            LayerConfig::DEFAULT_EXPIRY,
            LayerConfig::DEFAULT_GROUP_EXPIRY,
        )
    }
}

#[async_trait::async_trait]
impl ChannelLayer for MemoryLayer {
    fn new_channel(&self) -> Inbox {
        self.local.new_channel()
    }

    async fn send(&self, channel: &str, event: Event) -> Result<(), LayerError> {
        validate_channel_name(channel)?;
        stats::add(&self.stats.sent, 1);
        match self.local.deliver(channel, event) {
            Ok(Delivery::Delivered) => stats::add(&self.stats.delivered, 1),
            Ok(Delivery::NoInbox) => {
                stats::add(&self.stats.undeliverable, 1);
                tracing::debug!(channel, "send to a channel with no inbox");
            }
            Err(error) => {
                stats::add(&self.stats.channel_full, 1);
                return Err(error);
            }
        }
        Ok(())
    }

    async fn group_add(&self, group: &str, channel: &str) -> Result<(), LayerError> {
        validate_group_name(group)?;
        validate_channel_name(channel)?;
        let now = Instant::now();
        let mut groups = lock_unpoisoned(&self.groups);
        // Under the groups lock, so an inbox dropped meanwhile either is seen
        // closed here or has its close hook remove this membership after.
        if self.local.is_local(channel) && !self.local.is_open(channel) {
            tracing::debug!(group, channel, "group_add of a closed channel ignored");
            return Ok(());
        }
        groups.insert(group, channel, now);
        Ok(())
    }

    async fn group_discard(&self, group: &str, channel: &str) -> Result<(), LayerError> {
        validate_group_name(group)?;
        validate_channel_name(channel)?;
        lock_unpoisoned(&self.groups).remove(group, channel);
        Ok(())
    }

    async fn group_send(&self, group: &str, event: Event) -> Result<GroupSendReport, LayerError> {
        validate_group_name(group)?;
        stats::add(&self.stats.sent, 1);
        stats::add(&self.stats.group_sends, 1);
        let members = self.current_members(group);
        let outcomes = self.local.deliver_each(&members, &event);

        let mut report = GroupSendReport::default();
        let mut undeliverable = 0;
        for (channel, outcome) in members.iter().zip(outcomes) {
            match outcome {
                Ok(Delivery::Delivered) => report.delivered += 1,
                Ok(Delivery::NoInbox) => undeliverable += 1,
                // `deliver_each` refuses only full channels.
                Err(_) => {
                    report.over_capacity += 1;
                    tracing::debug!(
                        group,
                        channel = &**channel,
                        event_type = event.event_type(),
                        "group_send skipped a member whose channel is full"
                    );
                }
            }
        }
        stats::add(&self.stats.delivered, report.delivered as u64);
        stats::add(&self.stats.group_over_capacity, report.over_capacity as u64);
        stats::add(&self.stats.undeliverable, undeliverable);
        Ok(report)
    }

    fn stats(&self) -> LayerStats {
        self.stats.snapshot()
    }
}

impl fmt::Debug for MemoryLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryLayer")
            .field("local", &self.local)
            .field("groups", &lock_unpoisoned(&self.groups).group_count())
            .field("group_expiry", &self.group_expiry)
            .field("stats", &self.stats.snapshot())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use tokio::time::advance;

    use super::*;
    use crate::names::non_local_name;

    fn event(text: &str) -> Event {
        Event::from_json(&format!(r#"{{"type":"chat.message","text":"{text}"}}"#))
            .expect("valid event")
    }

    fn text_of(event: &Event) -> String {
        event.to_value()["text"]
            .as_str()
            .expect("test events carry text")
            .to_owned()
    }

    fn layer_with(config: LayerConfig) -> MemoryLayer {
        MemoryLayer::new(config).expect("valid config")
    }

    #[tokio::test(start_paused = true)]
    async fn send_then_recv() {
        let layer = MemoryLayer::default();
        let mut inbox = layer.new_channel();
        layer
            .send(inbox.name(), event("hello"))
            .await
            .expect("send");
        let received = inbox.recv().await.expect("an event");
        assert_eq!(received, event("hello"));
        assert_eq!(inbox.try_recv(), None);
        assert_eq!(
            layer.stats(),
            LayerStats {
                sent: 1,
                delivered: 1,
                ..LayerStats::default()
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn events_arrive_in_order() {
        let layer = MemoryLayer::default();
        let mut inbox = layer.new_channel();
        for i in 0..10 {
            layer
                .send(inbox.name(), event(&i.to_string()))
                .await
                .expect("send");
        }
        for i in 0..10 {
            let received = inbox.recv().await.expect("an event");
            assert_eq!(text_of(&received), i.to_string());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn channel_full_at_default_capacity() {
        let layer = MemoryLayer::default();
        let mut inbox = layer.new_channel();
        assert_eq!(inbox.capacity(), 100);
        for i in 0..100 {
            layer
                .send(inbox.name(), event(&i.to_string()))
                .await
                .expect("below capacity");
        }
        let error = layer
            .send(inbox.name(), event("101st"))
            .await
            .expect_err("the 101st send must fail");
        assert_eq!(
            error,
            LayerError::ChannelFull {
                channel: inbox.name().to_owned()
            }
        );
        assert_eq!(
            error.to_string(),
            format!("channel {:?} is full", inbox.name())
        );

        assert_eq!(
            inbox.recv().await.map(|e| text_of(&e)),
            Some("0".to_owned())
        );
        layer
            .send(inbox.name(), event("after recv"))
            .await
            .expect("room again after one recv");
        let stats = layer.stats();
        assert_eq!(stats.sent, 102);
        assert_eq!(stats.delivered, 101);
        assert_eq!(stats.channel_full, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn per_pattern_capacity() {
        let layer = layer_with(LayerConfig {
            channel_capacity: vec![("other.*".to_owned(), 50), ("specific.*".to_owned(), 3)],
            ..LayerConfig::default()
        });
        let inbox = layer.new_channel();
        assert_eq!(inbox.capacity(), 3);
        for _ in 0..3 {
            layer.send(inbox.name(), event("x")).await.expect("send");
        }
        assert!(matches!(
            layer.send(inbox.name(), event("x")).await,
            Err(LayerError::ChannelFull { .. })
        ));

        let unmatched = layer_with(LayerConfig {
            channel_capacity: vec![("other.*".to_owned(), 3)],
            ..LayerConfig::default()
        });
        assert_eq!(unmatched.new_channel().capacity(), 100);
    }

    #[tokio::test]
    async fn zero_capacity_is_refused() {
        let error = MemoryLayer::new(LayerConfig {
            capacity: 0,
            ..LayerConfig::default()
        })
        .expect_err("capacity 0 is invalid");
        assert!(
            matches!(&error, LayerConfigError::Capacity(_))
                && error.to_string().contains("default channel capacity is 0"),
            "{error}"
        );
        assert!(
            MemoryLayer::new(LayerConfig {
                channel_capacity: vec![("specific.*".to_owned(), 0)],
                ..LayerConfig::default()
            })
            .is_err()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn events_expire_after_expiry() {
        let layer = MemoryLayer::default();
        let mut inbox = layer.new_channel();
        layer
            .send(inbox.name(), event("stale"))
            .await
            .expect("send");
        advance(Duration::from_secs(61)).await;
        layer
            .send(inbox.name(), event("fresh"))
            .await
            .expect("send");

        let received = inbox.recv().await.expect("the fresh event");
        assert_eq!(text_of(&received), "fresh");
        assert_eq!(layer.stats().expired, 1);

        // try_recv skips expired events too.
        layer
            .send(inbox.name(), event("stale"))
            .await
            .expect("send");
        advance(Duration::from_secs(61)).await;
        assert_eq!(inbox.try_recv(), None);
        assert_eq!(layer.stats().expired, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn event_at_exactly_its_expiry_is_delivered() {
        let layer = MemoryLayer::default();
        let mut inbox = layer.new_channel();
        layer.send(inbox.name(), event("edge")).await.expect("send");
        advance(LayerConfig::DEFAULT_EXPIRY).await;
        assert!(inbox.try_recv().is_some());
        assert_eq!(layer.stats().expired, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn huge_expiry_never_expires() {
        let layer = layer_with(LayerConfig {
            expiry: Duration::MAX,
            ..LayerConfig::default()
        });
        let mut inbox = layer.new_channel();
        layer.send(inbox.name(), event("kept")).await.expect("send");
        advance(Duration::from_secs(365 * 86_400)).await;
        assert!(inbox.try_recv().is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn group_send_reaches_every_member_once() {
        let layer = MemoryLayer::default();
        let mut inboxes: Vec<Inbox> = (0..3).map(|_| layer.new_channel()).collect();
        let outsider = layer.new_channel();
        for inbox in &inboxes {
            layer.group_add("chat", inbox.name()).await.expect("add");
        }
        // Adding twice is one membership.
        layer
            .group_add("chat", inboxes[0].name())
            .await
            .expect("add");

        let report = layer.group_send("chat", event("all")).await.expect("send");
        assert_eq!(
            report,
            GroupSendReport {
                delivered: 3,
                over_capacity: 0
            }
        );
        for inbox in &mut inboxes {
            assert_eq!(
                inbox.try_recv().map(|e| text_of(&e)),
                Some("all".to_owned())
            );
            assert_eq!(inbox.try_recv(), None, "exactly once");
        }
        drop(outsider);
        let stats = layer.stats();
        assert_eq!((stats.sent, stats.delivered), (1, 3));
    }

    #[tokio::test(start_paused = true)]
    async fn group_send_to_unknown_group_reaches_nobody() {
        let layer = MemoryLayer::default();
        let report = layer.group_send("empty", event("x")).await.expect("send");
        assert_eq!(report, GroupSendReport::default());
    }

    #[tokio::test(start_paused = true)]
    async fn group_discard_stops_delivery() {
        let layer = MemoryLayer::default();
        let mut stays = layer.new_channel();
        let mut leaves = layer.new_channel();
        layer.group_add("chat", stays.name()).await.expect("add");
        layer.group_add("chat", leaves.name()).await.expect("add");
        layer
            .group_discard("chat", leaves.name())
            .await
            .expect("discard");
        // Discarding a non-member, or from an unknown group, is fine.
        layer
            .group_discard("chat", leaves.name())
            .await
            .expect("discard");
        layer
            .group_discard("nobody", leaves.name())
            .await
            .expect("discard");

        let report = layer.group_send("chat", event("x")).await.expect("send");
        assert_eq!(report.delivered, 1);
        assert!(stays.try_recv().is_some());
        assert_eq!(leaves.try_recv(), None);

        layer
            .group_discard("chat", stays.name())
            .await
            .expect("discard");
        assert_eq!(
            lock_unpoisoned(&layer.groups).group_count(),
            0,
            "empty group removed"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn group_membership_expires_and_re_add_refreshes() {
        let layer = MemoryLayer::default();
        let mut old = layer.new_channel();
        let mut refreshed = layer.new_channel();
        layer.group_add("chat", old.name()).await.expect("add");
        layer
            .group_add("chat", refreshed.name())
            .await
            .expect("add");

        advance(Duration::from_secs(86_000)).await;
        layer
            .group_add("chat", refreshed.name())
            .await
            .expect("re-add");
        advance(Duration::from_secs(401)).await; // 86401 s after the first adds

        let report = layer.group_send("chat", event("x")).await.expect("send");
        assert_eq!(report.delivered, 1);
        assert_eq!(old.try_recv(), None);
        assert!(refreshed.try_recv().is_some());

        advance(Duration::from_secs(86_401)).await;
        let report = layer.group_send("chat", event("y")).await.expect("send");
        assert_eq!(report, GroupSendReport::default());
        assert_eq!(refreshed.try_recv(), None);
        assert_eq!(
            lock_unpoisoned(&layer.groups).group_count(),
            0,
            "expired group removed"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn group_send_skips_full_members() {
        let layer = layer_with(LayerConfig {
            capacity: 1,
            ..LayerConfig::default()
        });
        let mut full = layer.new_channel();
        let mut others: Vec<Inbox> = (0..2).map(|_| layer.new_channel()).collect();
        layer.send(full.name(), event("first")).await.expect("send");
        layer.group_add("chat", full.name()).await.expect("add");
        for inbox in &others {
            layer.group_add("chat", inbox.name()).await.expect("add");
        }

        let report = layer
            .group_send("chat", event("group"))
            .await
            .expect("group_send never fails for a full member");
        assert_eq!(
            report,
            GroupSendReport {
                delivered: 2,
                over_capacity: 1
            }
        );
        for inbox in &mut others {
            assert_eq!(
                inbox.try_recv().map(|e| text_of(&e)),
                Some("group".to_owned())
            );
        }
        assert_eq!(
            full.try_recv().map(|e| text_of(&e)),
            Some("first".to_owned())
        );
        assert_eq!(full.try_recv(), None);
        let stats = layer.stats();
        assert_eq!(stats.group_over_capacity, 1);
        assert_eq!(stats.channel_full, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn invalid_names_are_rejected_by_every_operation() {
        let layer = MemoryLayer::default();
        let inbox = layer.new_channel();
        let bad_channel = "bad channel";
        let bad_group = "a!b";

        assert!(matches!(
            layer.send(bad_channel, event("x")).await,
            Err(LayerError::InvalidChannelName { name, .. }) if name == bad_channel
        ));
        assert!(matches!(
            layer.send(&"a".repeat(100), event("x")).await,
            Err(LayerError::InvalidChannelName { .. })
        ));
        assert!(matches!(
            layer.group_add(bad_group, inbox.name()).await,
            Err(LayerError::InvalidGroupName { name, .. }) if name == bad_group
        ));
        assert!(matches!(
            layer.group_add("chat", bad_channel).await,
            Err(LayerError::InvalidChannelName { .. })
        ));
        assert!(matches!(
            layer.group_discard(bad_group, inbox.name()).await,
            Err(LayerError::InvalidGroupName { .. })
        ));
        assert!(matches!(
            layer.group_discard("chat", bad_channel).await,
            Err(LayerError::InvalidChannelName { .. })
        ));
        assert!(matches!(
            layer.group_send(bad_group, event("x")).await,
            Err(LayerError::InvalidGroupName { .. })
        ));
        assert!(matches!(
            layer.group_send(":group:x", event("x")).await,
            Err(LayerError::InvalidGroupName { .. })
        ));
        assert_eq!(layer.stats(), LayerStats::default());
        assert_eq!(lock_unpoisoned(&layer.groups).group_count(), 0);
    }

    /// A dropped inbox's channel leaves its groups at once (a consumer dropped
    /// without `group_discard` is not a member until the group expiry), and is
    /// not added to one afterwards.
    #[tokio::test(start_paused = true)]
    async fn dropped_inbox_leaves_its_groups_and_sends_are_undeliverable() {
        let layer = MemoryLayer::default();
        let inbox = layer.new_channel();
        let name = inbox.name().to_owned();
        let live = layer.new_channel();
        layer.group_add("chat", &name).await.expect("add");
        layer.group_add("other", &name).await.expect("add");
        layer.group_add("chat", live.name()).await.expect("add");
        drop(inbox);
        {
            let groups = lock_unpoisoned(&layer.groups);
            assert!(!groups.contains("chat", &name));
            assert!(groups.contains("chat", live.name()));
            assert_eq!(groups.group_count(), 1, "\"other\" is empty and gone");
        }
        layer.group_add("late", &name).await.expect("add");
        assert_eq!(lock_unpoisoned(&layer.groups).group_count(), 1);
        layer
            .group_discard("chat", live.name())
            .await
            .expect("discard");

        layer
            .send(&name, event("x"))
            .await
            .expect("a send nobody receives is not an error");
        let report = layer.group_send("chat", event("x")).await.expect("send");
        assert_eq!(report, GroupSendReport::default());
        // A valid name that was never created here is undeliverable as well.
        layer
            .send("thumbnails-generate", event("x"))
            .await
            .expect("send");
        let stats = layer.stats();
        assert_eq!(stats.undeliverable, 2);
        assert_eq!(stats.delivered, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn new_channel_names_are_valid_unique_and_share_a_prefix() {
        let layer = MemoryLayer::default();
        let inboxes: Vec<Inbox> = (0..10_000).map(|_| layer.new_channel()).collect();
        let mut names = HashSet::new();
        let prefix = non_local_name(inboxes[0].name()).to_owned();
        assert_eq!(prefix.len(), "specific.".len() + 32 + 1);
        assert!(prefix.starts_with("specific."));
        for inbox in &inboxes {
            let name = inbox.name();
            validate_channel_name(name).expect("generated names are valid");
            assert_eq!(name.len(), 74);
            assert_eq!(non_local_name(name), prefix);
            let local = &name[prefix.len()..];
            assert!(
                local
                    .chars()
                    .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)),
                "{name}"
            );
            assert!(names.insert(name.to_owned()), "duplicate {name}");
        }
        drop(inboxes);
        // Names are never reused, even after their inboxes are gone.
        for _ in 0..1000 {
            assert!(names.insert(layer.new_channel().name().to_owned()));
        }
        let other = MemoryLayer::default();
        assert_ne!(non_local_name(other.new_channel().name()), prefix);
    }

    #[tokio::test(start_paused = true)]
    async fn recv_ends_when_the_layer_is_dropped() {
        let layer = MemoryLayer::default();
        let mut inbox = layer.new_channel();
        layer
            .send(inbox.name(), event("queued"))
            .await
            .expect("send");
        drop(layer);
        assert_eq!(
            inbox.recv().await.map(|e| text_of(&e)),
            Some("queued".to_owned())
        );
        assert_eq!(inbox.recv().await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn cancelled_recv_loses_nothing() {
        let layer = MemoryLayer::default();
        let mut inbox = layer.new_channel();
        let timed_out = tokio::time::timeout(Duration::from_secs(1), inbox.recv()).await;
        assert!(timed_out.is_err());
        layer
            .send(inbox.name(), event("later"))
            .await
            .expect("send");
        let received = tokio::time::timeout(Duration::from_secs(1), inbox.recv())
            .await
            .expect("no timeout");
        assert_eq!(received.map(|e| text_of(&e)), Some("later".to_owned()));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_group_sends_deliver_everything() {
        let layer = Arc::new(MemoryLayer::default());
        let mut inboxes: Vec<Inbox> = (0..4).map(|_| layer.new_channel()).collect();
        for inbox in &inboxes {
            layer.group_add("chat", inbox.name()).await.expect("add");
        }
        let senders: Vec<_> = (0..4)
            .map(|task| {
                let layer = Arc::clone(&layer);
                tokio::spawn(async move {
                    for i in 0..20 {
                        let report = layer
                            .group_send("chat", event(&format!("{task}-{i}")))
                            .await
                            .expect("send");
                        assert_eq!(report.delivered, 4);
                    }
                })
            })
            .collect();
        for sender in senders {
            sender.await.expect("sender task");
        }
        for inbox in &mut inboxes {
            let mut count = 0;
            while inbox.try_recv().is_some() {
                count += 1;
            }
            assert_eq!(count, 80);
        }
    }

    #[test]
    fn layer_and_inbox_are_send_sync_debug() {
        fn assert_send<T: Send + fmt::Debug>() {}
        fn assert_layer<T: ChannelLayer>() {}
        assert_send::<Inbox>();
        assert_layer::<MemoryLayer>();
        let layer: Arc<dyn ChannelLayer> = Arc::new(MemoryLayer::default());
        let inbox = layer.new_channel();
        assert!(format!("{inbox:?}").contains(inbox.name()));
        assert!(format!("{layer:?}").starts_with("MemoryLayer"));
    }
}
