//! [`Summary`]: a condition that can recur on every send (a dead process's
//! full inbox, a group member that is not UTF-8), counted and logged as one
//! line per period instead of one line per occurrence.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::lock_unpoisoned;

/// How often a recurring condition is logged at most.
pub(crate) const SUMMARY_PERIOD: Duration = Duration::from_secs(10);
/// The most distinct keys (inboxes, groups) named in one summary line; the
/// rest are counted together.
const MAX_NAMED: usize = 8;

/// Occurrences of one condition since it was last logged, by key. The first
/// occurrence after a quiet period is logged at once; later ones are logged
/// together once the period has passed, by the next occurrence or by
/// [`flush`](Self::flush), which the heartbeat loop calls every beat.
pub(crate) struct Summary {
    /// What happened, for the log line.
    what: &'static str,
    period: Duration,
    /// A std mutex: a map update, never held across an `.await`.
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Occurrences per key since the last line, at most [`MAX_NAMED`] keys.
    pending: BTreeMap<String, u64>,
    /// Occurrences at keys beyond the first [`MAX_NAMED`].
    others: u64,
    last_logged: Option<Instant>,
}

impl Summary {
    pub(crate) fn new(what: &'static str, period: Duration) -> Self {
        Self {
            what,
            period,
            state: Mutex::default(),
        }
    }

    /// Counts `count` occurrences at `key`, and logs them (with those not yet
    /// logged) unless a line was logged within the period.
    pub(crate) fn record(&self, key: &str, count: u64) {
        self.record_at(key, count, Instant::now());
    }

    /// Logs the occurrences not yet logged, if any, once the period since the
    /// last line has passed.
    pub(crate) fn flush(&self) {
        self.flush_at(Instant::now());
    }

    fn record_at(&self, key: &str, count: u64, now: Instant) {
        let mut state = lock_unpoisoned(&self.state);
        if let Some(pending) = state.pending.get_mut(key) {
            *pending += count;
        } else if state.pending.len() < MAX_NAMED {
            state.pending.insert(key.to_owned(), count);
        } else {
            state.others += count;
        }
        self.log_if_due(&mut state, now);
    }

    fn flush_at(&self, now: Instant) {
        let mut state = lock_unpoisoned(&self.state);
        if !state.pending.is_empty() {
            self.log_if_due(&mut state, now);
        }
    }

    fn log_if_due(&self, state: &mut State, now: Instant) {
        if state
            .last_logged
            .is_some_and(|last| now.duration_since(last) < self.period)
        {
            return;
        }
        let pending = std::mem::take(&mut state.pending);
        let others = std::mem::take(&mut state.others);
        let total = pending.values().sum::<u64>() + others;
        state.last_logged = Some(now);
        tracing::info!(occurrences = total, at = ?pending, elsewhere = others,
            "{} (summed over at most {:?}; counted in the layer's stats)", self.what, self.period);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redis::count_events::CountEvents;

    /// A thousand occurrences within one period log one line, the next
    /// period's occurrences one more, and a flush before the period is over
    /// logs nothing.
    #[test]
    fn logs_at_most_once_per_period() {
        let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let logged = || count.load(std::sync::atomic::Ordering::Relaxed);
        tracing::subscriber::with_default(CountEvents(std::sync::Arc::clone(&count)), || {
            let summary = Summary::new("skipped", Duration::from_secs(10));
            let start = Instant::now();
            for i in 0..1_000 {
                summary.record_at(&format!("inbox{}", i % 20), 1, start);
            }
            assert_eq!(logged(), 1);
            summary.flush_at(start + Duration::from_secs(5));
            assert_eq!(logged(), 1);
            {
                let state = lock_unpoisoned(&summary.state);
                assert_eq!(state.pending.len(), MAX_NAMED);
                assert_eq!(state.pending.values().sum::<u64>() + state.others, 999);
            }
            summary.flush_at(start + Duration::from_secs(10));
            assert_eq!(logged(), 2);
            summary.flush_at(start + Duration::from_secs(30));
            assert_eq!(logged(), 2, "nothing new to log");
            summary.record_at("inbox", 1, start + Duration::from_secs(31));
            assert_eq!(logged(), 3, "the first after a quiet period logs at once");
        });
    }
}
