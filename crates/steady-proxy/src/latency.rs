//! Full latency distributions: lock-free HDR-style histograms with recent windows.
//!
//! Each [`Latency`] counts microseconds in an atomic log-linear histogram (the
//! `histogram` crate's h2 layout, a base-2 variant of HdrHistogram) with grouping power
//! 10: every value from 1 µs to 71 minutes is kept within 0.1% (three significant
//! digits). Recording is one `fetch_add` on one bucket plus one on the sum: no lock.
//!
//! A background task per histogram (holding only a `Weak`, so it ends when the
//! histogram is dropped, e.g. after a reload) snapshots the cumulative counts every
//! [`SNAPSHOT_EVERY`] into a ring covering [`MAX_WINDOW`]. A window's distribution is
//! the counts now minus the counts at the snapshot just before the window started; so
//! "the last 5 minutes" costs one subtraction, not a re-aggregation. Snapshots are kept
//! sparse (only non-empty buckets).
//!
//! From a distribution, [`Distribution`] gives percentiles, classic cumulative buckets
//! for Prometheus (at any bounds, since the counts are kept at full resolution), and
//! HdrHistogram's `.hgrm` percentile-distribution text.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use histogram::{AtomicHistogram, Histogram, SparseHistogram};

/// Buckets per power of two: 2^10, so the relative error is at most 2^-10 (< 0.1%).
pub const GROUPING_POWER: u8 = 10;
/// Values up to 2^32 − 1 µs (about 71.6 minutes) are recorded exactly; larger ones
/// count in the last bucket.
pub const MAX_VALUE_POWER: u8 = 32;
/// How often the cumulative counts are snapshotted for windows.
pub const SNAPSHOT_EVERY: Duration = Duration::from_secs(5);
/// The longest window kept.
pub const MAX_WINDOW: Duration = Duration::from_secs(15 * 60);
/// Largest value recorded, in microseconds.
const MAX_MICROS: u64 = (1 << MAX_VALUE_POWER) - 1;

/// A lock-free latency histogram with snapshots for recent windows.
pub struct Latency {
    counts: AtomicHistogram,
    sum_micros: AtomicU64,
    /// Cumulative snapshots, oldest first; the first is the empty start.
    ring: Mutex<VecDeque<(Instant, SparseHistogram)>>,
}

impl std::fmt::Debug for Latency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Latency").finish_non_exhaustive()
    }
}

impl Latency {
    /// Creates an empty histogram; call [`spawn_snapshots`](Self::spawn_snapshots) (or
    /// [`snapshot`](Self::snapshot) yourself) for windows.
    pub fn new(now: Instant) -> Arc<Latency> {
        let counts = AtomicHistogram::new(GROUPING_POWER, MAX_VALUE_POWER)
            .expect("static histogram parameters are valid");
        let empty = SparseHistogram::from(&counts.load());
        let mut ring = VecDeque::with_capacity(ring_capacity() + 1);
        ring.push_back((now, empty));
        Arc::new(Latency {
            counts,
            sum_micros: AtomicU64::new(0),
            ring: Mutex::new(ring),
        })
    }

    /// Creates the histogram and, on the current tokio runtime, its snapshot task.
    pub fn spawn(now: Instant) -> Arc<Latency> {
        let latency = Latency::new(now);
        latency.spawn_snapshots();
        latency
    }

    /// Snapshots every [`SNAPSHOT_EVERY`] until the histogram is dropped.
    pub fn spawn_snapshots(self: &Arc<Self>) {
        let weak: Weak<Latency> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SNAPSHOT_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(latency) = weak.upgrade() else {
                    return;
                };
                latency.snapshot(tokio::time::Instant::now().into_std());
            }
        });
    }

    /// Records one latency (clamped to 1 µs ..= 71 minutes).
    #[inline]
    pub fn record(&self, latency: Duration) {
        let micros = (latency.as_micros() as u64).clamp(1, MAX_MICROS);
        // Cannot fail: the value is within the configured range.
        let _ = self.counts.increment(micros);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// Takes a cumulative snapshot at `now` for the windows; drops those older than
    /// [`MAX_WINDOW`] (keeping one at or before the window's start).
    pub fn snapshot(&self, now: Instant) {
        let snap = SparseHistogram::from(&self.counts.load());
        let mut ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
        ring.push_back((now, snap));
        while ring.len() > 1 && now.saturating_duration_since(ring[1].0) >= MAX_WINDOW {
            ring.pop_front();
        }
        while ring.len() > ring_capacity() {
            ring.pop_front();
        }
    }

    /// Returns the distribution since start.
    pub fn total(&self) -> Distribution {
        Distribution {
            counts: self.counts.load(),
            sum_micros: Some(self.sum_micros.load(Ordering::Relaxed)),
            window: None,
        }
    }

    /// Returns the distribution of about the last `window` before `now`: counts now
    /// minus those at the newest snapshot taken at or before `now − window` (or the
    /// oldest kept). [`Distribution::window`] says how long it really covers.
    pub fn recent(&self, window: Duration, now: Instant) -> Distribution {
        let counts = self.counts.load();
        let ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
        let start = now.checked_sub(window);
        let base = ring
            .iter()
            .rev()
            .find(|(at, _)| start.is_some_and(|s| *at <= s))
            .or_else(|| ring.front());
        let Some((at, base)) = base else {
            return self.total();
        };
        let base = Histogram::from(base);
        let counts = counts.checked_sub(&base).unwrap_or(counts);
        Distribution {
            counts,
            sum_micros: None,
            window: Some(now.saturating_duration_since(*at)),
        }
    }
}

/// Snapshots kept: enough for [`MAX_WINDOW`] plus the one before it.
fn ring_capacity() -> usize {
    (MAX_WINDOW.as_secs() / SNAPSHOT_EVERY.as_secs()) as usize + 2
}

/// A latency distribution: all of it or a recent window.
#[derive(Debug, Clone)]
pub struct Distribution {
    counts: Histogram,
    /// Exact sum in µs when known (totals; windows estimate it from buckets).
    sum_micros: Option<u64>,
    /// How long the distribution covers, for windows.
    window: Option<Duration>,
}

impl Distribution {
    /// Returns both distributions together (a window covers the longer of the two).
    pub fn merged(&self, other: &Distribution) -> Distribution {
        Distribution {
            counts: self
                .counts
                .wrapping_add(&other.counts)
                .unwrap_or_else(|_| self.counts.clone()),
            sum_micros: self.sum_micros.zip(other.sum_micros).map(|(a, b)| a + b),
            window: self.window.max(other.window),
        }
    }

    /// Returns how many values it holds.
    pub fn count(&self) -> u64 {
        self.counts.iter().map(|b| b.count()).sum()
    }

    /// Returns how long a window really covers (`None` for since-start).
    pub fn window(&self) -> Option<Duration> {
        self.window
    }

    /// Returns the sum of the values in seconds (exact for totals, bucket midpoints for
    /// windows).
    pub fn sum_seconds(&self) -> f64 {
        let micros = self.sum_micros.unwrap_or_else(|| {
            self.counts
                .iter()
                .filter(|b| b.count() > 0)
                .map(|b| b.count() * midpoint(b.start(), b.end()))
                .sum()
        });
        micros as f64 / 1e6
    }

    /// Returns the value at quantile `q` (0.0..=1.0), as the upper end of its bucket
    /// (HdrHistogram reports the highest equivalent value too); `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let bucket = self.counts.quantile_bucket(q.clamp(0.0, 1.0)).ok()??;
        Some(Duration::from_micros(bucket.end()))
    }

    /// Returns the largest value recorded (upper end of its bucket).
    pub fn max(&self) -> Option<Duration> {
        self.quantile(1.0)
    }

    /// Returns the mean in seconds, `None` when empty.
    pub fn mean_seconds(&self) -> Option<f64> {
        let n = self.count();
        (n > 0).then(|| self.sum_seconds() / n as f64)
    }

    /// Returns how many values are at most each bound (seconds, ascending): Prometheus'
    /// cumulative `le` buckets. A bucket straddling a bound counts below it only if its
    /// upper end is within the bound (so counts err low by at most 0.1% of a value).
    pub fn cumulative(&self, bounds: &[f64]) -> Vec<u64> {
        let mut out = vec![0u64; bounds.len()];
        for b in self.counts.iter().filter(|b| b.count() > 0) {
            let upper = b.end() as f64 / 1e6;
            let first = bounds.partition_point(|&le| le < upper);
            for slot in &mut out[first..] {
                *slot += b.count();
            }
        }
        out
    }

    /// Renders HdrHistogram's percentile distribution (`.hgrm`) with values in
    /// milliseconds, as `outputPercentileDistribution(out, 5, 1000.0)` writes it; the
    /// HdrHistogram plotter reads it as is.
    pub fn hgrm(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:>12} {:>14} {:>10} {:>14}\n",
            "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
        );
        let total = self.count();
        if total > 0 {
            for (q, value, below) in self.distribution_points() {
                let ms = value.as_secs_f64() * 1e3;
                if q >= 1.0 {
                    let _ = writeln!(out, "{ms:>12.3} {:>2.12} {below:>10}", 1.0);
                } else {
                    let _ = writeln!(
                        out,
                        "{ms:>12.3} {q:>2.12} {below:>10} {:>14.2}",
                        1.0 / (1.0 - q)
                    );
                }
            }
        }
        let mean = self.mean_seconds().unwrap_or(0.0) * 1e3;
        let std_dev = self.std_dev_seconds() * 1e3;
        let max = self.max().map_or(0.0, |m| m.as_secs_f64() * 1e3);
        let _ = writeln!(
            out,
            "#[Mean    = {mean:>12.3}, StdDeviation   = {std_dev:>12.3}]"
        );
        let _ = writeln!(
            out,
            "#[Max     = {max:>12.3}, Total count    = {total:>12}]"
        );
        let _ = writeln!(
            out,
            "#[Buckets = {:>12}, SubBuckets     = {:>12}]",
            u32::from(MAX_VALUE_POWER - GROUPING_POWER) + 1,
            1u32 << GROUPING_POWER
        );
        out
    }

    /// The percentile distribution at HdrHistogram's reporting levels (5 ticks per
    /// halving of the distance to 100%), as `(quantile, value, values at most it)`,
    /// ending with quantile 1.0 once every value is covered; empty when empty.
    pub fn distribution_points(&self) -> Vec<(f64, Duration, u64)> {
        const TICKS_PER_HALF: u32 = 5;
        let total = self.count();
        let mut out = Vec::new();
        if total == 0 {
            return out;
        }
        // As HdrHistogram's percentile iterator: stop once the last value is reached,
        // then report 100%.
        for q in percentile_ticks(TICKS_PER_HALF) {
            let value = self.quantile(q).unwrap_or_default();
            let below = self.cumulative_micros(value.as_micros() as u64);
            if q >= 1.0 || below >= total {
                out.push((1.0, value, total));
                break;
            }
            out.push((q, value, below));
        }
        out
    }

    /// Values at most `micros` (by bucket upper end).
    fn cumulative_micros(&self, micros: u64) -> u64 {
        self.counts
            .iter()
            .filter(|b| b.end() <= micros)
            .map(|b| b.count())
            .sum()
    }

    fn std_dev_seconds(&self) -> f64 {
        let n = self.count();
        let Some(mean) = self.mean_seconds() else {
            return 0.0;
        };
        let var: f64 = self
            .counts
            .iter()
            .filter(|b| b.count() > 0)
            .map(|b| {
                let d = midpoint(b.start(), b.end()) as f64 / 1e6 - mean;
                d * d * b.count() as f64
            })
            .sum::<f64>()
            / n as f64;
        var.sqrt()
    }
}

fn midpoint(start: u64, end: u64) -> u64 {
    start + (end - start) / 2
}

/// HdrHistogram's percentile reporting levels: `ticks` steps per halving of the distance
/// to 100%, then 100% itself (0, 10, …, 50, 55, …, 75, 77.5, …).
fn percentile_ticks(ticks: u32) -> Vec<f64> {
    let mut out = Vec::new();
    let mut level = 0.0f64;
    // Stop where a step would no longer change an f64 in the printed precision.
    while level < 0.999_999 {
        out.push(level);
        let half_distance = 2f64.powi(((1.0 / (1.0 - level)).log2().floor() as i32) + 1);
        level += 1.0 / (half_distance * f64::from(ticks));
    }
    out.push(1.0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn filled(values_ms: impl IntoIterator<Item = u64>) -> Arc<Latency> {
        let l = Latency::new(Instant::now());
        for v in values_ms {
            l.record(Duration::from_millis(v));
        }
        l
    }

    #[test]
    fn quantiles_are_within_a_tenth_of_a_percent() {
        let l = filled(1..=1000);
        let d = l.total();
        assert_eq!(d.count(), 1000);
        for (q, want) in [(0.5, 500.0), (0.9, 900.0), (0.99, 990.0), (1.0, 1000.0)] {
            let got = d.quantile(q).unwrap().as_secs_f64() * 1e3;
            assert!(
                (got - want).abs() <= want * 0.001 + 0.001,
                "q{q}: {got} vs {want}"
            );
        }
        assert!((d.sum_seconds() - 500.5).abs() < 1e-9, "exact sum");
        assert_eq!(Latency::new(Instant::now()).total().quantile(0.5), None);
    }

    #[test]
    fn extremes_are_clamped_not_lost() {
        let l = Latency::new(Instant::now());
        l.record(Duration::ZERO);
        l.record(Duration::from_secs(3 * 3600));
        let d = l.total();
        assert_eq!(d.count(), 2);
        assert_eq!(d.quantile(0.0), Some(Duration::from_micros(1)));
        assert!(d.max().unwrap() > Duration::from_secs(3600));
    }

    #[test]
    fn windows_subtract_older_snapshots() {
        let t0 = Instant::now();
        let l = Latency::new(t0);
        for _ in 0..100 {
            l.record(100 * MS);
        }
        l.snapshot(t0 + Duration::from_secs(60));
        for _ in 0..10 {
            l.record(5 * MS);
        }
        let now = t0 + Duration::from_secs(90);
        let recent = l.recent(Duration::from_secs(30), now);
        assert_eq!(recent.count(), 10, "only what came after the snapshot");
        assert_eq!(recent.window(), Some(Duration::from_secs(30)));
        assert!(recent.quantile(1.0).unwrap() < 6 * MS);
        // A window reaching before the first snapshot covers everything kept.
        let all = l.recent(Duration::from_secs(600), now);
        assert_eq!(all.count(), 110);
        assert_eq!(all.window(), Some(Duration::from_secs(90)));
    }

    #[test]
    fn the_ring_is_bounded() {
        let t0 = Instant::now();
        let l = Latency::new(t0);
        for i in 1..=1000u64 {
            l.snapshot(t0 + SNAPSHOT_EVERY * i as u32);
        }
        let kept = l.ring.lock().unwrap().len();
        assert!(kept <= ring_capacity(), "{kept}");
    }

    #[test]
    fn cumulative_buckets_count_at_most_each_bound() {
        let l = filled([1, 2, 3, 10, 100]);
        let got = l.total().cumulative(&[0.0015, 0.005, 0.05, 1.0]);
        assert_eq!(got, vec![1, 3, 4, 5]);
    }

    #[test]
    fn hgrm_has_the_hdrhistogram_shape() {
        let text = filled(1..=100).total().hgrm();
        let mut lines = text.lines();
        let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
        assert_eq!(
            header,
            ["Value", "Percentile", "TotalCount", "1/(1-Percentile)"]
        );
        assert_eq!(lines.next(), Some(""));
        let rows: Vec<Vec<f64>> = text
            .lines()
            .skip(2)
            .take_while(|l| !l.starts_with('#'))
            .map(|l| l.split_whitespace().map(|x| x.parse().unwrap()).collect())
            .collect();
        assert!(rows.len() > 20);
        assert_eq!(rows[0][1], 0.0);
        let last = rows.last().unwrap();
        assert_eq!(
            (last[1], last[2]),
            (1.0, 100.0),
            "ends at 100% with every value"
        );
        assert!(rows
            .windows(2)
            .all(|w| w[0][0] <= w[1][0] && w[0][1] < w[1][1]));
        assert!(text.contains("Total count    =          100]"), "{text}");
        assert!(
            text.contains("#[Max     =      100.031"),
            "upper end of the bucket: {text}"
        );
    }

    #[test]
    fn percentile_ticks_halve_toward_one() {
        let t = percentile_ticks(5);
        assert_eq!(&t[..6], &[0.0, 0.1, 0.2, 0.30000000000000004, 0.4, 0.5]);
        assert!((t[6] - 0.55).abs() < 1e-12);
        assert_eq!(*t.last().unwrap(), 1.0);
    }
}
