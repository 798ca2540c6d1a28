//! SLI accounting: good/total counts in fixed rings of time buckets.
//!
//! Every recording goes into three rings ([`Tier`]s) of different bucket widths, and a
//! window query reads the finest ring that spans the window:
//!
//! | ring | bucket width | buckets | spans | serves windows up to |
//! |---|---|---|---|---|
//! | fine | 10 s | 2 161 | 6 h | 6 h (5m, 30m, 1h, 2h, 6h) |
//! | medium | 5 min | 865 | 3 d | 3 d (1d, 3d) |
//! | coarse | 1 h | `period / 1h + 1` (721 for 30 d) | the period | the period (30d) |
//!
//! Memory is the bucket count times 24 bytes (about 88 KiB per SLO with a 30 d period),
//! fixed at construction and independent of traffic.
//!
//! **Precision.** A bucket is counted whole or not at all. A query for window `w` at
//! time `now` (seconds) counts every event whose bucket starts at or after
//! `now − w − (now − w) mod width`, up to `now`: it never misses an event inside the
//! window and may add the events of less than one bucket width before it. So a window's
//! old edge is off by less than 10 s for windows up to 6 h, less than 5 min up to 3 d,
//! and less than 1 h for the period. Events in a bucket later than `now`'s are not
//! counted.
//!
//! Timestamps should move forward: a clock stepped back finds buckets stamped in its
//! future, which keep their slots (and make events mapping to those slots be dropped)
//! until time catches up.

use serde::{Deserialize, Serialize};

/// Width of the fine ring's buckets, in seconds.
pub const FINE_WIDTH: u64 = 10;
/// Span of the fine ring, in seconds (6 h).
pub const FINE_SPAN: u64 = 6 * 3600;
/// Width of the medium ring's buckets, in seconds.
pub const MEDIUM_WIDTH: u64 = 300;
/// Span of the medium ring, in seconds (3 d).
pub const MEDIUM_SPAN: u64 = 3 * 86_400;
/// Width of the coarse ring's buckets, in seconds.
pub const COARSE_WIDTH: u64 = 3600;

/// Good and total event counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Events that met the objective.
    pub good: u64,
    /// All events.
    pub total: u64,
}

impl Counts {
    /// Returns the events that did not meet the objective.
    pub fn bad(&self) -> u64 {
        self.total - self.good
    }

    /// Returns the share of bad events, or `None` without events.
    pub fn error_rate(&self) -> Option<f64> {
        (self.total > 0).then(|| self.bad() as f64 / self.total as f64)
    }

    fn add(&mut self, other: Counts) {
        self.good = self.good.saturating_add(other.good);
        self.total = self.total.saturating_add(other.total);
    }
}

/// One bucket of a ring: which bucket of all time it holds, and its counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Slot {
    /// `timestamp / width` of the events counted here; a slot whose index is not the
    /// one asked for holds nothing of that bucket.
    pub(crate) index: u64,
    pub(crate) counts: Counts,
}

/// A ring of equal-width time buckets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tier {
    width: u64,
    slots: Vec<Slot>,
}

impl Tier {
    /// Makes a ring of `width`-second buckets that can answer windows up to `span`
    /// seconds (one bucket more than `span / width`, for the partly filled current one).
    pub fn new(width: u64, span: u64) -> Self {
        let width = width.max(1);
        let len = span.div_ceil(width) + 1;
        Self {
            width,
            slots: vec![Slot::default(); len as usize],
        }
    }

    /// Returns the bucket width in seconds.
    pub fn width(&self) -> u64 {
        self.width
    }

    /// Returns the longest window, in seconds, this ring answers.
    pub fn span(&self) -> u64 {
        (self.slots.len() as u64 - 1) * self.width
    }

    /// Returns the number of buckets (fixed at construction).
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Returns whether the ring has no buckets (never: it has at least one).
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Adds counts stamped `at` (seconds). Counts older than the ring holds are dropped.
    pub fn add(&mut self, at: u64, counts: Counts) {
        let index = at / self.width;
        let len = self.slots.len() as u64;
        let slot = &mut self.slots[(index % len) as usize];
        if slot.index == index {
            slot.counts.add(counts);
        } else if slot.index < index || slot.counts.total == 0 {
            // The slot holds an older bucket that has left the ring: reuse it.
            *slot = Slot { index, counts };
        }
        // Otherwise the slot already holds a newer bucket, so this one is too old.
    }

    /// Sums the buckets from the one holding `now − window` to the one holding `now`.
    pub fn sum(&self, now: u64, window: u64) -> Counts {
        let last = now / self.width;
        let first = now.saturating_sub(window) / self.width;
        let len = self.slots.len() as u64;
        // Never read more buckets than the ring has, so a window longer than the span
        // is cut to the span instead of counting a slot twice.
        let first = first.max(last.saturating_sub(len - 1));
        let mut sum = Counts::default();
        for index in first..=last {
            let slot = &self.slots[(index % len) as usize];
            if slot.index == index {
                sum.add(slot.counts);
            }
        }
        sum
    }

    pub(crate) fn slots(&self) -> &[Slot] {
        &self.slots
    }
}

/// The three rings of one SLO.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Buckets {
    tiers: [Tier; 3],
}

impl Buckets {
    /// Makes empty rings whose coarse ring spans `period` seconds.
    pub fn new(period: u64) -> Self {
        Self {
            tiers: [
                Tier::new(FINE_WIDTH, FINE_SPAN),
                Tier::new(MEDIUM_WIDTH, MEDIUM_SPAN),
                Tier::new(COARSE_WIDTH, period.max(COARSE_WIDTH)),
            ],
        }
    }

    /// Adds counts stamped `at` (seconds) to every ring.
    pub fn add(&mut self, at: u64, counts: Counts) {
        if counts.total == 0 {
            return;
        }
        for tier in &mut self.tiers {
            tier.add(at, counts);
        }
    }

    /// Returns the ring that answers a window of `window` seconds: the finest whose span
    /// covers it, else the coarse one (which then counts only its span).
    pub fn tier_for(&self, window: u64) -> &Tier {
        self.tiers
            .iter()
            .find(|t| t.span() >= window)
            .unwrap_or(&self.tiers[2])
    }

    /// Sums the events of the last `window` seconds at `now`, within the precision in
    /// the [module docs](self).
    pub fn sum(&self, now: u64, window: u64) -> Counts {
        self.tier_for(window).sum(now, window)
    }

    /// Returns the number of buckets held, over all rings (fixed at construction).
    pub fn bucket_count(&self) -> usize {
        self.tiers.iter().map(Tier::len).sum()
    }

    pub(crate) fn tiers(&self) -> &[Tier; 3] {
        &self.tiers
    }

    pub(crate) fn tiers_mut(&mut self) -> &mut [Tier; 3] {
        &mut self.tiers
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const DAY: u64 = 86_400;

    fn c(good: u64, total: u64) -> Counts {
        Counts { good, total }
    }

    #[test]
    fn layout_matches_the_docs() {
        let b = Buckets::new(30 * DAY);
        assert_eq!(b.tiers[0].len(), 2161);
        assert_eq!(b.tiers[1].len(), 865);
        assert_eq!(b.tiers[2].len(), 721);
        assert_eq!(b.tier_for(300).width(), 10);
        assert_eq!(b.tier_for(6 * 3600).width(), 10);
        assert_eq!(b.tier_for(DAY).width(), 300);
        assert_eq!(b.tier_for(3 * DAY).width(), 300);
        assert_eq!(b.tier_for(30 * DAY).width(), 3600);
    }

    #[test]
    fn window_edge_is_off_by_less_than_one_bucket() {
        let mut b = Buckets::new(30 * DAY);
        let now = 1_000_000_005; // 5 s into a 10 s bucket
        b.add(now - 300, c(1, 1)); // exactly on the edge: counted
        b.add(now - 305, c(0, 1)); // 5 s before the edge, same bucket: counted
        b.add(now - 306, c(0, 1)); // previous bucket: not counted
        assert_eq!(b.sum(now, 300), c(1, 2));
    }

    #[test]
    fn old_buckets_are_forgotten_and_late_events_dropped() {
        let mut t = Tier::new(10, 60);
        t.add(100, c(1, 1));
        t.add(200, c(2, 2)); // bucket 10 is now out of the window's reach
        assert_eq!(t.sum(200, 60), c(2, 2));
        t.add(130, c(5, 5)); // ring has moved past it: dropped
        assert_eq!(t.sum(200, 60), c(2, 2));
        assert_eq!(t.sum(200, 1000), c(2, 2));
    }

    #[test]
    fn memory_is_fixed() {
        let mut b = Buckets::new(30 * DAY);
        let before = b.bucket_count();
        for s in (0..60 * DAY).step_by(3600) {
            b.add(s, c(5, 10));
        }
        assert_eq!(b.bucket_count(), before);
        assert!(b.tiers.iter().all(|t| t.slots.capacity() == t.slots.len()));
    }

    proptest! {
        /// A window's count equals the exact count over the documented interval:
        /// `[now − w − (now − w) mod width, now]`, and the error rate therefore lies
        /// between the rates over `[now − w, now]` and one bucket width more.
        #[test]
        fn window_counts_match_exact_within_precision(
            events in proptest::collection::vec((0u64..4 * DAY, any::<bool>()), 1..400),
            window_pick in 0usize..8,
            extra in 0u64..DAY,
        ) {
            let windows = [300, 1800, 3600, 7200, 6 * 3600, DAY, 3 * DAY, 30 * DAY];
            let w = windows[window_pick];
            let now = 30 * DAY + extra;
            let base = now - 4 * DAY;
            let mut b = Buckets::new(30 * DAY);
            let mut sorted: Vec<(u64, bool)> =
                events.iter().map(|&(t, ok)| (base + t, ok)).collect();
            // Feed in time order, as the gateway does.
            sorted.sort_by_key(|e| e.0);
            for &(t, ok) in &sorted {
                b.add(t, c(u64::from(ok), 1));
            }
            let width = b.tier_for(w).width();
            let from = (now - w) - (now - w) % width;
            let exact = |from: u64| {
                let mut s = Counts::default();
                for &(t, ok) in &sorted {
                    if t >= from && t <= now {
                        s.add(c(u64::from(ok), 1));
                    }
                }
                s
            };
            let got = b.sum(now, w);
            prop_assert_eq!(got, exact(from));
            // Never misses an event of the window, never adds more than one bucket's.
            let inner = exact(now - w);
            let outer = exact((now - w).saturating_sub(width));
            prop_assert!(got.total >= inner.total && got.total <= outer.total);
            prop_assert!(got.bad() >= inner.bad() && got.bad() <= outer.bad());
        }
    }
}
