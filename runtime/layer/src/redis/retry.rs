//! How the Redis layer's background loops retry: [`Backoff`] (exponential,
//! jittered) and [`LoopMonitor`] (the loop's [`LoopHealth`], logged once per
//! change of state).
//!
//! Every error path of every loop waits a backoff delay before trying again:
//! a Redis that accepts connections but refuses every command (NOAUTH,
//! READONLY on a replica, WRONGTYPE on the inbox key) must not turn a loop
//! into a connection storm.

use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use crate::health::LoopHealth;
use crate::lock_unpoisoned;

/// The first delay after a failure.
pub(crate) const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// The longest delay between attempts.
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Exponential backoff from [`MIN_BACKOFF`] to [`MAX_BACKOFF`] with "equal
/// jitter": each delay is drawn from the upper half of the current step, so
/// processes that lost Redis together do not retry in step, and no delay is
/// shorter than half a step.
#[derive(Debug)]
pub(crate) struct Backoff {
    step: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { step: MIN_BACKOFF }
    }
}

impl Backoff {
    /// The delay before the next attempt; doubles the step.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let step = self.step;
        self.step = (step * 2).min(MAX_BACKOFF);
        let half = step / 2;
        // Millisecond steps below 5 s always fit a u64.
        let half_ms = u64::try_from(half.as_millis()).unwrap_or(u64::MAX);
        half + Duration::from_millis(rand::random_range(0..=half_ms))
    }

    /// Back to the first step, after a success.
    pub(crate) fn reset(&mut self) {
        self.step = MIN_BACKOFF;
    }
}

/// One background loop's health, logged when it changes: the first failure,
/// a different error, and the recovery, each with the running count of
/// failed attempts. A loop failing the same way for hours logs one line.
pub(crate) struct LoopMonitor {
    /// The shard's redacted URL.
    url: String,
    /// Which loop, for the log: `receive` or `refresh`.
    name: &'static str,
    /// A std mutex: a few field updates, never held across an `.await`.
    state: Mutex<LoopHealth>,
}

impl LoopMonitor {
    pub(crate) fn new(url: String, name: &'static str) -> Self {
        Self {
            url,
            name,
            state: Mutex::default(),
        }
    }

    pub(crate) fn snapshot(&self) -> LoopHealth {
        lock_unpoisoned(&self.state).clone()
    }

    /// Records a failed attempt; `retry_in` is the backoff delay before the next.
    pub(crate) fn failed(&self, error: &dyn fmt::Display, retry_in: Duration) {
        let error = error.to_string();
        let mut state = lock_unpoisoned(&self.state);
        state.failures += 1;
        state.total_failures += 1;
        let changed = !state.failing || state.last_error.as_deref() != Some(error.as_str());
        state.failing = true;
        if changed {
            tracing::error!(redis = %self.url, r#loop = self.name, %error,
                failures = state.failures,
                "Redis channel layer loop failing; retrying with backoff (next in {retry_in:?}), \
                 logged again when the error changes or it recovers");
        }
        state.last_error = Some(error);
    }

    /// Records a successful attempt.
    pub(crate) fn succeeded(&self) {
        let mut state = lock_unpoisoned(&self.state);
        if state.failing {
            tracing::info!(redis = %self.url, r#loop = self.name, failures = state.failures,
                "Redis channel layer loop recovered");
            state.failing = false;
            state.failures = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redis::count_events::CountEvents;

    #[test]
    fn delays_grow_with_jitter_within_bounds() {
        let mut backoff = Backoff::default();
        let mut step = MIN_BACKOFF;
        for _ in 0..10 {
            let delay = backoff.next_delay();
            assert!(
                delay >= step / 2 && delay <= step,
                "{delay:?} for step {step:?}"
            );
            step = (step * 2).min(MAX_BACKOFF);
        }
        backoff.reset();
        assert!(backoff.next_delay() <= MIN_BACKOFF);
    }

    /// A loop failing the same way logs once, not once per attempt; a new
    /// error and the recovery log once each.
    #[test]
    fn logs_once_per_change_of_state() {
        let count = std::sync::Arc::default();
        let logged = || count_of(&count);
        tracing::subscriber::with_default(CountEvents(std::sync::Arc::clone(&count)), || {
            let monitor = LoopMonitor::new("redis://h".into(), "receive");
            for _ in 0..1_000 {
                monitor.failed(&"NOAUTH Authentication required.", Duration::ZERO);
            }
            assert_eq!(logged(), 1);
            for _ in 0..1_000 {
                monitor.failed(&"READONLY", Duration::ZERO);
            }
            assert_eq!(logged(), 2);
            monitor.succeeded();
            monitor.succeeded();
            assert_eq!(logged(), 3);
            assert_eq!(monitor.snapshot().total_failures, 2_000);
        });
    }

    fn count_of(count: &std::sync::atomic::AtomicUsize) -> usize {
        count.load(std::sync::atomic::Ordering::Relaxed)
    }

    #[test]
    fn failures_count_until_a_success() {
        let monitor = LoopMonitor::new("redis://h".into(), "receive");
        monitor.failed(&"NOAUTH", Duration::ZERO);
        monitor.failed(&"NOAUTH", Duration::ZERO);
        let health = monitor.snapshot();
        assert!(health.failing);
        assert_eq!((health.failures, health.total_failures), (2, 2));
        monitor.succeeded();
        let health = monitor.snapshot();
        assert!(!health.failing);
        assert_eq!((health.failures, health.total_failures), (0, 2));
        assert_eq!(health.last_error.as_deref(), Some("NOAUTH"));
    }
}
