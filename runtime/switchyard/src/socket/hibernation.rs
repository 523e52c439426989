//! Hibernation, the socket's side: when the consumer may hibernate
//! (`hibernate-after-secs`), how long the connection has idled (no frame,
//! no event, no call into the guest), and waking it before a call.
//!
//! The idle deadline shares the keepalive's timer: the timer wakes at the
//! earlier of the two deadlines, and a call only records the time (the
//! timer is not moved on every frame, as for the keepalive).

use std::pin::Pin;
use std::time::Duration;

use switchyard_host::{Consumer, GuestError, PluginHost};
use tokio::time::{Instant, Sleep};

/// How long the connection has idled, and for how long it may.
#[derive(Debug)]
pub(super) struct Idle {
    /// The consumer's `hibernate-after`; `None` never hibernates.
    after: Option<Duration>,
    /// When the last call returned.
    since: Instant,
    /// Set while the consumer hibernates, so the first call after waking
    /// sets the timer again.
    asleep: bool,
}

impl Idle {
    pub(super) fn new(consumer: &Consumer) -> Self {
        Self {
            after: consumer.hibernate_after(),
            since: Instant::now(),
            asleep: false,
        }
    }

    /// When the consumer should hibernate; `None` while it cannot or
    /// already does.
    fn deadline(&self) -> Option<Instant> {
        self.after
            .filter(|_| !self.asleep)
            .map(|after| self.since + after)
    }

    /// The earlier of `keepalive` and the hibernation deadline: when the
    /// shared timer should wake.
    pub(super) fn timer_deadline(&self, keepalive: Instant) -> Instant {
        self.deadline()
            .map_or(keepalive, |idle| idle.min(keepalive))
    }

    /// A call into the consumer returned: the connection is busy now. If
    /// it woke for the call, the timer is set for its next hibernation.
    pub(super) fn called(
        &mut self,
        consumer: &Consumer,
        timer: Pin<&mut Sleep>,
        keepalive: Instant,
    ) {
        if self.asleep && !consumer.is_hibernated() {
            self.asleep = false;
            self.after = consumer.hibernate_after();
            self.since = Instant::now();
            timer.reset(self.timer_deadline(keepalive));
        } else if self.after.is_some() {
            self.since = Instant::now();
        }
    }

    /// The consumer changed (a migration): take its `hibernate-after`.
    pub(super) fn replaced(&mut self, consumer: &Consumer) {
        self.asleep = consumer.is_hibernated();
        self.after = consumer.hibernate_after();
        self.since = Instant::now();
    }

    /// At the timer: hibernate the consumer if it idled long enough.
    /// Boxed: a rare path whose future would otherwise grow every
    /// connection's task by the size of a snapshot call.
    pub(super) async fn due(
        &mut self,
        now: Instant,
        host: &PluginHost,
        consumer: &mut Consumer,
    ) -> Result<(), GuestError> {
        if self.deadline().is_some_and(|deadline| now >= deadline) {
            self.asleep = Box::pin(host.hibernate(consumer)).await?;
            if !self.asleep {
                // It cannot (any more): stop asking.
                self.after = None;
            }
        }
        Ok(())
    }
}

/// Wake the consumer if it hibernates, before a call into it. Boxed: the
/// wake instantiates, a rare path whose future would otherwise grow every
/// connection's task.
pub(super) async fn awake(host: &PluginHost, consumer: &mut Consumer) -> Result<(), GuestError> {
    if !consumer.is_hibernated() {
        return Ok(());
    }
    Box::pin(host.wake(consumer)).await
}
