//! Slow start: a new endpoint's weight ramps up linearly over a window.
//!
//! Follows Envoy's `slow_start_config` with aggression 1.0:
//! `weight × max(min_weight_percent, age / window)` while `age < window`.

use std::time::{Duration, Instant};

use crate::Endpoint;

/// Fraction of its weight an endpoint gets at the start of its window.
pub const MIN_WEIGHT_FRACTION: f64 = 0.1;

/// Weights are scaled by this so slow-start fractions stay integers.
pub(crate) const WEIGHT_SCALE: u64 = 1000;

/// Returns the fraction (0.1..=1.0) of its weight an endpoint added at `added_at` gets.
pub fn slow_start_factor(added_at: Instant, now: Instant, window: Duration) -> f64 {
    let age = now.saturating_duration_since(added_at);
    if window.is_zero() || age >= window {
        return 1.0;
    }
    (age.as_secs_f64() / window.as_secs_f64()).max(MIN_WEIGHT_FRACTION)
}

/// Returns the endpoint's weight × [`WEIGHT_SCALE`], scaled by its reported load and
/// ramped by slow start (at least 1).
pub(crate) fn scaled_weight(e: &Endpoint, now: Instant, window: Option<Duration>) -> u64 {
    let full = ((e.effective_weight() * WEIGHT_SCALE as f64) as u64).max(1);
    match window {
        None => full,
        Some(w) => {
            let f = slow_start_factor(e.added_at(), now, w);
            if f >= 1.0 {
                full
            } else {
                ((full as f64 * f) as u64).max(1)
            }
        }
    }
}
