//! Hedging: when to send a second copy of a slow idempotent request.
//!
//! A route with `retries.hedge_after` sends a copy of an attempt that has not answered
//! after a fixed delay, or after a percentile of the route's recent attempt latency (the
//! "backup request" of Dean and Barroso's *The Tail at Scale*). The percentile is read
//! from the route's lock-free [`Latency`] histogram over the last [`WINDOW`]; the first
//! request after each [`REFRESH`] recomputes it, and the others read it with one atomic
//! load.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use steady_config::retry::HedgeAfter;

use crate::latency::Latency;

/// How often a percentile delay is recomputed.
pub const REFRESH: Duration = Duration::from_secs(1);
/// The latency window a percentile is read from (at least; see [`Latency::recent`]).
pub const WINDOW: Duration = Duration::from_secs(10);
/// Fewer samples than this in the window: no percentile yet, so no hedging.
pub const MIN_SAMPLES: u64 = 20;
/// Floor of a percentile-based delay, so a very fast route does not hedge everything.
pub const MIN_DELAY: Duration = Duration::from_millis(1);

/// The hedging policy of one route.
#[derive(Debug)]
pub struct Hedge {
    after: HedgeAfter,
    /// Where latency is recorded and read.
    latency: Arc<Latency>,
    /// The percentile delay in nanoseconds; 0 while unknown.
    delay_ns: AtomicU64,
    /// Nanoseconds after `origin` of the next recomputation.
    next_refresh_ns: AtomicU64,
    origin: Instant,
    /// Held by the one request recomputing.
    refreshing: Mutex<()>,
}

impl Hedge {
    /// Creates the policy reading (and recording, see [`record`](Self::record)) `latency`.
    pub fn new(after: HedgeAfter, latency: Arc<Latency>, origin: Instant) -> Self {
        Self {
            after,
            latency,
            delay_ns: AtomicU64::new(0),
            next_refresh_ns: AtomicU64::new(REFRESH.as_nanos() as u64),
            origin,
            refreshing: Mutex::new(()),
        }
    }

    /// Returns how long to wait before hedging a request starting at `now`, or `None`
    /// while the window has too few samples to say.
    pub fn delay(&self, now: Instant) -> Option<Duration> {
        let p = match self.after {
            HedgeAfter::Delay(d) => return Some(d),
            HedgeAfter::Percentile(p) => p,
        };
        let since = now.saturating_duration_since(self.origin).as_nanos() as u64;
        if since >= self.next_refresh_ns.load(Ordering::Relaxed) {
            self.refresh(p, now, since);
        }
        match self.delay_ns.load(Ordering::Relaxed) {
            0 => None,
            ns => Some(Duration::from_nanos(ns).max(MIN_DELAY)),
        }
    }

    /// Records the time to response head of an attempt that got one.
    pub fn record(&self, latency: Duration) {
        self.latency.record(latency);
    }

    /// Recomputes the percentile; one caller at a time, the others keep the old value.
    fn refresh(&self, percentile: f64, now: Instant, since: u64) {
        let Ok(_one) = self.refreshing.try_lock() else {
            return;
        };
        if since < self.next_refresh_ns.load(Ordering::Relaxed) {
            return;
        }
        let window = self.latency.recent(WINDOW, now);
        let ns = match window.quantile(percentile / 100.0) {
            Some(d) if window.count() >= MIN_SAMPLES => (d.as_nanos() as u64).max(1),
            _ => 0,
        };
        self.delay_ns.store(ns, Ordering::Relaxed);
        self.next_refresh_ns
            .store(since + REFRESH.as_nanos() as u64, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn hedge(after: HedgeAfter, t0: Instant) -> Hedge {
        Hedge::new(after, Latency::new(t0), t0)
    }

    #[test]
    fn fixed_delay_needs_no_samples() {
        let h = hedge(HedgeAfter::Delay(40 * MS), Instant::now());
        assert_eq!(h.delay(Instant::now()), Some(40 * MS));
    }

    #[test]
    fn percentile_waits_for_samples_then_follows_latency() {
        let t0 = Instant::now();
        let h = hedge(HedgeAfter::Percentile(90.0), t0);
        assert_eq!(h.delay(t0), None, "no samples yet");
        for i in 1..=100u64 {
            h.record(Duration::from_millis(i));
        }
        assert_eq!(h.delay(t0), None, "recomputed only once a second");
        let d = h.delay(t0 + REFRESH).expect("a refresh gives a delay");
        assert!((89 * MS..=91 * MS).contains(&d), "p90 of 1..=100 ms: {d:?}");

        // Once a snapshot holds them and the window has moved past it, they are gone.
        h.latency.snapshot(t0 + 2 * REFRESH);
        assert_eq!(h.delay(t0 + 2 * REFRESH + WINDOW), None);
    }

    #[test]
    fn few_samples_do_not_hedge() {
        let t0 = Instant::now();
        let h = hedge(HedgeAfter::Percentile(99.0), t0);
        for _ in 0..(MIN_SAMPLES - 1) {
            h.record(5 * MS);
        }
        assert_eq!(h.delay(t0 + REFRESH), None);
        h.record(5 * MS);
        assert_eq!(h.delay(t0 + REFRESH * 2).map(|d| d >= 4 * MS), Some(true));
    }

    #[test]
    fn very_fast_routes_get_the_floor() {
        let t0 = Instant::now();
        let h = hedge(HedgeAfter::Percentile(50.0), t0);
        for _ in 0..100 {
            h.record(Duration::from_nanos(10));
        }
        assert_eq!(h.delay(t0 + REFRESH), Some(MIN_DELAY));
    }
}
