//! Exponential back-off with jitter between delivery attempts. Pure.

use std::time::Duration;

/// Delays between attempts: `base`, `2·base`, `4·base`… capped at `cap`, each drawn
/// from the upper half of its step ("equal jitter") so retries of many notifiers
/// spread out but never come sooner than half the step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Backoff {
    /// The first step.
    pub base: Duration,
    /// The largest step.
    pub cap: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(60),
        }
    }
}

impl Backoff {
    /// The wait after failed attempt number `failed` (1 for the first), with
    /// `jitter` in `[0, 1)`.
    pub fn delay(&self, failed: u32, jitter: f64) -> Duration {
        let doublings = failed.saturating_sub(1).min(31);
        let step = self
            .base
            .checked_mul(1 << doublings)
            .unwrap_or(self.cap)
            .min(self.cap);
        let half = step / 2;
        half + half.mul_f64(jitter.clamp(0.0, 1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn never_above_the_cap_nor_below_half_a_step(
            base_ms in 1u64..20_000,
            cap_ms in 1u64..120_000,
            failed in 1u32..100,
            jitter in 0.0f64..1.0,
        ) {
            let b = Backoff {
                base: Duration::from_millis(base_ms),
                cap: Duration::from_millis(cap_ms),
            };
            let d = b.delay(failed, jitter);
            prop_assert!(d <= b.cap);
            prop_assert!(d >= b.base.min(b.cap) / 2);
            // Later failures never wait less at the same jitter.
            prop_assert!(b.delay(failed + 1, jitter) >= d);
        }
    }

    #[test]
    fn doubles_then_caps() {
        let b = Backoff::default();
        let full = |n| b.delay(n, 1.0);
        assert_eq!(full(1), Duration::from_secs(1));
        assert_eq!(full(2), Duration::from_secs(2));
        assert_eq!(full(3), Duration::from_secs(4));
        assert_eq!(full(7), Duration::from_secs(60));
        assert_eq!(full(u32::MAX), Duration::from_secs(60));
    }

    #[test]
    fn jitter_stays_in_the_upper_half() {
        let b = Backoff::default();
        for n in 1..40 {
            for j in [0.0, 0.25, 0.5, 0.999] {
                let d = b.delay(n, j);
                let step = b.delay(n, 1.0);
                assert!(d >= step / 2 && d <= step, "{n} {j} {d:?}");
            }
        }
    }
}
