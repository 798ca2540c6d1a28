//! Hedging: when to send a second copy of a slow idempotent request.
//!
//! A route with `retries.hedge_after` sends a copy of an attempt that has not answered
//! after a fixed delay, or after a percentile of the route's recent attempt latency (the
//! "backup request" of Dean and Barroso's *The Tail at Scale*). The percentile comes
//! from HDR histograms: each worker records into its own slot (an uncontended lock),
//! and once a second the first request to notice rolls the slots into a ten-second
//! window and recomputes the delay, which requests then read with one atomic load.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use steady_config::retry::HedgeAfter;

/// Recording slots; workers beyond this many share them.
const SLOTS: usize = 8;
/// How often the window rolls.
const ROLL: Duration = Duration::from_secs(1);
/// Rolls kept: the percentile covers about this many seconds.
const WINDOW_ROLLS: usize = 10;
/// Fewer samples than this in the window: no percentile yet, so no hedging.
pub const MIN_SAMPLES: u64 = 20;
/// Floor of a percentile-based delay, so a very fast route does not hedge everything.
pub const MIN_DELAY: Duration = Duration::from_millis(1);
/// Highest latency recorded, in microseconds (one hour).
const MAX_MICROS: u64 = 3_600_000_000;

/// The hedging policy of one route.
#[derive(Debug)]
pub struct Hedge {
    after: HedgeAfter,
    /// Recent latency, for a percentile policy.
    window: Option<LatencyWindow>,
}

impl Hedge {
    /// Creates the policy; `start` is when the window's clock starts.
    pub fn new(after: HedgeAfter, start: Instant) -> Self {
        let window = match after {
            HedgeAfter::Percentile(p) => Some(LatencyWindow::new(p / 100.0, start)),
            HedgeAfter::Delay(_) => None,
        };
        Self { after, window }
    }

    /// Returns how long to wait before hedging a request starting at `now`, or `None`
    /// while the window has too few samples to say.
    pub fn delay(&self, now: Instant) -> Option<Duration> {
        match (&self.after, &self.window) {
            (HedgeAfter::Delay(d), _) => Some(*d),
            (_, Some(window)) => window.delay(now),
            _ => None,
        }
    }

    /// Records the time to response head of an attempt that got one.
    pub fn record(&self, latency: Duration) {
        if let Some(window) = &self.window {
            window.record(latency);
        }
    }
}

/// Per-worker histograms rolled into a sliding window once a second.
#[derive(Debug)]
struct LatencyWindow {
    /// The quantile, `0.5..1.0`.
    quantile: f64,
    /// What workers recorded since the last roll.
    slots: Vec<Mutex<Histogram<u64>>>,
    /// The last [`WINDOW_ROLLS`] rolls and the time of the next one.
    rolled: Mutex<Rolled>,
    /// The delay in nanoseconds; 0 until the window has [`MIN_SAMPLES`].
    delay_ns: AtomicU64,
    /// Nanoseconds after `origin` of the next roll.
    next_roll_ns: AtomicU64,
    origin: Instant,
}

#[derive(Debug)]
struct Rolled {
    seconds: VecDeque<Histogram<u64>>,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_MICROS, 2).expect("static bounds are valid")
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl LatencyWindow {
    fn new(quantile: f64, origin: Instant) -> Self {
        Self {
            quantile,
            slots: (0..SLOTS).map(|_| Mutex::new(histogram())).collect(),
            rolled: Mutex::new(Rolled {
                seconds: VecDeque::with_capacity(WINDOW_ROLLS + 1),
            }),
            delay_ns: AtomicU64::new(0),
            next_roll_ns: AtomicU64::new(ROLL.as_nanos() as u64),
            origin,
        }
    }

    fn record(&self, latency: Duration) {
        let micros = (latency.as_micros() as u64).clamp(1, MAX_MICROS);
        let slot = &self.slots[crate::worker::current() % SLOTS];
        // Saturating record: a value past the bounds was clamped above.
        let _ = lock(slot).record(micros);
    }

    fn delay(&self, now: Instant) -> Option<Duration> {
        let since = now.saturating_duration_since(self.origin).as_nanos() as u64;
        if since >= self.next_roll_ns.load(Ordering::Relaxed) {
            self.roll(since);
        }
        match self.delay_ns.load(Ordering::Relaxed) {
            0 => None,
            ns => Some(Duration::from_nanos(ns).max(MIN_DELAY)),
        }
    }

    /// Moves the slots into the window and recomputes the delay; one caller at a time,
    /// the others go on with the delay they read.
    fn roll(&self, since: u64) {
        let Ok(mut rolled) = self.rolled.try_lock() else {
            return;
        };
        if since < self.next_roll_ns.load(Ordering::Relaxed) {
            return;
        }
        let mut second = histogram();
        for slot in &self.slots {
            let mut h = lock(slot);
            let _ = second.add(&*h);
            h.reset();
        }
        rolled.seconds.push_back(second);
        while rolled.seconds.len() > WINDOW_ROLLS {
            rolled.seconds.pop_front();
        }
        let mut all = histogram();
        for h in &rolled.seconds {
            let _ = all.add(h);
        }
        let ns = if all.len() >= MIN_SAMPLES {
            all.value_at_quantile(self.quantile).max(1) * 1000
        } else {
            0
        };
        self.delay_ns.store(ns, Ordering::Relaxed);
        self.next_roll_ns
            .store(since + ROLL.as_nanos() as u64, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn fixed_delay_needs_no_samples() {
        let h = Hedge::new(HedgeAfter::Delay(40 * MS), Instant::now());
        assert_eq!(h.delay(Instant::now()), Some(40 * MS));
    }

    #[test]
    fn percentile_waits_for_samples_then_follows_latency() {
        let t0 = Instant::now();
        let h = Hedge::new(HedgeAfter::Percentile(90.0), t0);
        assert_eq!(h.delay(t0), None, "no samples yet");
        for i in 1..=100u64 {
            h.record(Duration::from_millis(i));
        }
        assert_eq!(h.delay(t0), None, "samples count only after a roll");
        let d = h.delay(t0 + ROLL).expect("a roll gives a delay");
        assert!((89 * MS..=91 * MS).contains(&d), "p90 of 1..=100 ms: {d:?}");

        // Ten seconds later the old samples have left the window.
        for k in 2..=(WINDOW_ROLLS as u32 + 1) {
            let _ = h.delay(t0 + ROLL * k);
        }
        assert_eq!(h.delay(t0 + ROLL * (WINDOW_ROLLS as u32 + 2)), None);
    }

    #[test]
    fn few_samples_do_not_hedge() {
        let t0 = Instant::now();
        let h = Hedge::new(HedgeAfter::Percentile(99.0), t0);
        for _ in 0..(MIN_SAMPLES - 1) {
            h.record(5 * MS);
        }
        assert_eq!(h.delay(t0 + ROLL), None);
        h.record(5 * MS);
        assert_eq!(h.delay(t0 + ROLL * 2).map(|d| d >= 4 * MS), Some(true));
    }

    #[test]
    fn very_fast_routes_get_the_floor() {
        let t0 = Instant::now();
        let h = Hedge::new(HedgeAfter::Percentile(50.0), t0);
        for _ in 0..100 {
            h.record(Duration::from_nanos(10));
        }
        assert_eq!(h.delay(t0 + ROLL), Some(MIN_DELAY));
    }
}
