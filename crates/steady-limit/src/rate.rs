//! Per-instance rate limits by key: GCRA (the `governor` crate) over a bounded key table.
//!
//! A limit allows `rate` requests per `per` with bursts of up to `burst`. Each distinct
//! key (a client IP, an API key, a route...) has its own bucket. Keys are hashed into a
//! table of at most `max_keys` slots, so memory is bounded whatever the key cardinality;
//! two keys that land in one slot share a bucket, which can only make a limit stricter,
//! never looser. [`LocalLimiter::sweep`] drops buckets that have refilled completely (an
//! idle key is indistinguishable from a new one), so the table holds active keys only.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::RateLimiter;

/// How much a key may send: `rate` requests per `per`, in bursts of up to `burst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Requests per period.
    pub rate: u32,
    /// The period `rate` is counted over.
    pub per: Duration,
    /// Requests that may arrive at once after a quiet spell (at least 1).
    pub burst: u32,
}

impl Quota {
    /// The time one request's worth of quota takes to come back.
    pub fn emission_interval(&self) -> Duration {
        self.per / self.rate.max(1)
    }

    /// Requests per second.
    pub fn per_second(&self) -> f64 {
        f64::from(self.rate) / self.per.as_secs_f64()
    }
}

/// The answer to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request may go on.
    pub allowed: bool,
    /// Requests the key may still send right now.
    pub remaining: u32,
    /// How long until one more request would be allowed (zero when allowed).
    pub retry_after: Duration,
}

type Keyed =
    RateLimiter<u64, DefaultKeyedStateStore<u64>, DefaultClock, StateInformationMiddleware>;

/// One rate limit, enforced by this instance alone.
pub struct LocalLimiter {
    quota: Quota,
    limiter: Keyed,
    slots: u64,
}

impl std::fmt::Debug for LocalLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalLimiter")
            .field("quota", &self.quota)
            .field("keys", &self.limiter.len())
            .finish()
    }
}

impl LocalLimiter {
    /// A limiter for `quota` that keeps at most `max_keys` buckets.
    pub fn new(quota: Quota, max_keys: usize) -> Self {
        let rate = quota.rate.max(1);
        // governor wants a period per cell; keep nanosecond precision for high rates.
        let period = Duration::from_nanos((quota.per.as_nanos() / u128::from(rate)).max(1) as u64);
        let burst = NonZeroU32::new(quota.burst.max(1)).unwrap_or(NonZeroU32::MIN);
        let gquota = governor::Quota::with_period(period)
            .unwrap_or_else(|| governor::Quota::per_second(NonZeroU32::MIN))
            .allow_burst(burst);
        let limiter = RateLimiter::dashmap(gquota).with_middleware::<StateInformationMiddleware>();
        Self {
            quota,
            limiter,
            slots: max_keys.max(1) as u64,
        }
    }

    /// The limit this limiter enforces.
    pub fn quota(&self) -> Quota {
        self.quota
    }

    /// Takes one request's worth of quota from the bucket of `key` (a hash of the key's
    /// value), or says how long to wait.
    pub fn check(&self, key: u64) -> Decision {
        match self.limiter.check_key(&(key % self.slots)) {
            Ok(snapshot) => Decision {
                allowed: true,
                remaining: snapshot.remaining_burst_capacity(),
                retry_after: Duration::ZERO,
            },
            Err(not_until) => Decision {
                allowed: false,
                remaining: 0,
                retry_after: not_until.wait_time_from(DefaultClock::default().now()),
            },
        }
    }

    /// Drops buckets that have refilled completely and returns how many keys remain.
    pub fn sweep(&self) -> usize {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
        self.limiter.len()
    }

    /// Keys currently tracked.
    pub fn keys(&self) -> usize {
        self.limiter.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quota(rate: u32, per: Duration, burst: u32) -> Quota {
        Quota { rate, per, burst }
    }

    #[test]
    fn a_burst_is_allowed_then_limited() {
        let l = LocalLimiter::new(quota(1, Duration::from_secs(60), 5), 100);
        for i in 0..5 {
            let d = l.check(7);
            assert!(d.allowed, "request {i} of the burst");
            assert_eq!(d.remaining, 4 - i);
        }
        let d = l.check(7);
        assert!(!d.allowed);
        assert!(d.retry_after > Duration::from_secs(50), "{d:?}");
        assert!(d.retry_after <= Duration::from_secs(60), "{d:?}");
    }

    #[test]
    fn keys_are_independent() {
        let l = LocalLimiter::new(quota(1, Duration::from_secs(60), 1), 1000);
        assert!(l.check(1).allowed);
        assert!(!l.check(1).allowed);
        assert!(l.check(2).allowed);
        assert_eq!(l.keys(), 2);
    }

    #[test]
    fn the_key_table_is_bounded() {
        let l = LocalLimiter::new(quota(10, Duration::from_secs(1), 10), 64);
        for key in 0..10_000u64 {
            l.check(key.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        }
        assert!(l.keys() <= 64, "{} keys", l.keys());
    }

    #[test]
    fn refilled_keys_are_swept() {
        let l = LocalLimiter::new(quota(1000, Duration::from_secs(1), 1), 1000);
        for key in 0..100 {
            l.check(key);
        }
        assert_eq!(l.keys(), 100);
        // One emission interval (1 ms) refills every bucket of burst 1.
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(l.sweep(), 0);
    }

    #[test]
    fn high_rates_keep_their_precision() {
        let q = quota(1_000_000, Duration::from_secs(1), 1);
        assert_eq!(q.emission_interval(), Duration::from_micros(1));
        let l = LocalLimiter::new(quota(3, Duration::from_secs(1), 3), 10);
        assert_eq!(l.quota().per_second(), 3.0);
    }
}
