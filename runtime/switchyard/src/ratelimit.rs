//! Admission and rate limits: a cap on open connections (503), limits per
//! client IP on new and concurrent connections (429), and a message rate
//! per connection (close 1008). Token buckets are `governor`'s GCRA.
//!
//! Every per-IP limit is off unless configured: a benchmark or a reverse
//! proxy without `trusted-proxies` sends everything from one address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::Config;

/// Why a handshake was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// `websocket.max-connections` reached: 503.
    AtCapacity,
    /// `rate-limit.connections-per-minute-per-ip` exceeded: 429.
    TooFast,
    /// `rate-limit.concurrent-connections-per-ip` reached: 429.
    TooMany,
}

/// The gate every handshake passes before any plugin work.
#[derive(Debug)]
pub(crate) struct Admission {
    open: Arc<Semaphore>,
    max_open: usize,
    new_per_ip: Option<DefaultKeyedRateLimiter<IpAddr>>,
    /// The per-IP cap and the open connections by IP.
    per_ip: Option<(u32, OpenByIp)>,
    checks: AtomicU64,
}

/// Open connections by client IP, shared with each connection's guard.
type OpenByIp = Arc<Mutex<HashMap<IpAddr, u32>>>;

/// Held for a connection's life; gives its places back when dropped.
#[derive(Debug)]
pub(crate) struct Ticket {
    _open: OwnedSemaphorePermit,
    _per_ip: Option<IpGuard>,
}

#[derive(Debug)]
struct IpGuard {
    ip: IpAddr,
    map: OpenByIp,
}

impl Drop for IpGuard {
    fn drop(&mut self) {
        // A std mutex: only a map update, never held across an await.
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = map.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// How often (in handshakes) the per-IP buckets of idle clients are
/// forgotten, so the map does not grow with every address ever seen.
const FORGET_EVERY: u64 = 1024;

impl Admission {
    pub(crate) fn new(config: &Config) -> Self {
        let rl = &config.rate_limit;
        let max_open = config.websocket.max_connections.min(Semaphore::MAX_PERMITS);
        Self {
            open: Arc::new(Semaphore::new(max_open)),
            max_open,
            new_per_ip: rl
                .connections_per_minute_per_ip
                .and_then(NonZeroU32::new)
                .map(|n| RateLimiter::keyed(Quota::per_minute(n))),
            per_ip: rl
                .concurrent_connections_per_ip
                .map(|n| (n, Arc::new(Mutex::new(HashMap::new())))),
            checks: AtomicU64::new(0),
        }
    }

    pub(crate) fn max_open(&self) -> usize {
        self.max_open
    }

    /// Admit a handshake from `ip`, or say why not.
    pub(crate) fn admit(&self, ip: IpAddr) -> Result<Ticket, Refusal> {
        if let Some(limiter) = &self.new_per_ip {
            if self
                .checks
                .fetch_add(1, Ordering::Relaxed)
                .is_multiple_of(FORGET_EVERY)
            {
                limiter.retain_recent();
            }
            if limiter.check_key(&ip).is_err() {
                return Err(Refusal::TooFast);
            }
        }
        let open = Arc::clone(&self.open)
            .try_acquire_owned()
            .map_err(|_| Refusal::AtCapacity)?;
        let per_ip = match &self.per_ip {
            None => None,
            Some((cap, map)) => {
                let mut counts = map.lock().unwrap_or_else(PoisonError::into_inner);
                let count = counts.entry(ip).or_insert(0);
                if *count >= *cap {
                    return Err(Refusal::TooMany);
                }
                *count += 1;
                Some(IpGuard {
                    ip,
                    map: Arc::clone(map),
                })
            }
        };
        Ok(Ticket {
            _open: open,
            _per_ip: per_ip,
        })
    }
}

/// A connection's message budget (`rate-limit.messages-per-second`).
#[derive(Debug)]
pub(crate) struct MessageLimit(DefaultDirectRateLimiter);

impl MessageLimit {
    /// `None` when no message rate is configured.
    pub(crate) fn new(config: &Config) -> Option<Self> {
        let rate = NonZeroU32::new(config.rate_limit.messages_per_second?)?;
        let burst = config
            .rate_limit
            .message_burst
            .and_then(NonZeroU32::new)
            .unwrap_or(rate);
        Some(Self(RateLimiter::direct(
            Quota::per_second(rate).allow_burst(burst),
        )))
    }

    /// Take one message from the budget; `false` when it is spent.
    pub(crate) fn allow(&self) -> bool {
        self.0.check().is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(f: impl FnOnce(&mut Config)) -> Config {
        let mut config = Config::default();
        f(&mut config);
        config
    }

    #[test]
    fn concurrent_per_ip_counts_tickets_alive() {
        let admission = Admission::new(&config(|c| {
            c.rate_limit.concurrent_connections_per_ip = Some(2);
        }));
        let a: IpAddr = "10.0.0.1".parse().expect("ip");
        let b: IpAddr = "10.0.0.2".parse().expect("ip");
        let first = admission.admit(a).expect("1st");
        let _second = admission.admit(a).expect("2nd");
        assert_eq!(admission.admit(a).expect_err("3rd"), Refusal::TooMany);
        let _other = admission.admit(b).expect("another IP is not affected");
        drop(first);
        let _again = admission.admit(a).expect("a place was given back");
    }

    #[test]
    fn total_cap_is_503_material() {
        let admission = Admission::new(&config(|c| c.websocket.max_connections = 1));
        let ip: IpAddr = "10.0.0.1".parse().expect("ip");
        let held = admission.admit(ip).expect("1st");
        assert_eq!(admission.admit(ip).expect_err("2nd"), Refusal::AtCapacity);
        drop(held);
        assert!(admission.admit(ip).is_ok());
    }

    #[test]
    fn new_connections_per_minute_per_ip() {
        let admission = Admission::new(&config(|c| {
            c.rate_limit.connections_per_minute_per_ip = Some(3);
        }));
        let ip: IpAddr = "10.0.0.1".parse().expect("ip");
        for _ in 0..3 {
            drop(admission.admit(ip).expect("within the burst"));
        }
        assert_eq!(admission.admit(ip).expect_err("4th"), Refusal::TooFast);
        assert!(admission.admit("10.0.0.9".parse().expect("ip")).is_ok());
    }

    #[test]
    fn message_budget_is_spent_by_a_burst() {
        let limit = MessageLimit::new(&config(|c| {
            c.rate_limit.messages_per_second = Some(5);
        }))
        .expect("configured");
        let allowed = (0..20).filter(|_| limit.allow()).count();
        assert!((5..=6).contains(&allowed), "{allowed}");
        assert!(
            MessageLimit::new(&Config::default()).is_none(),
            "off by default"
        );
    }
}
