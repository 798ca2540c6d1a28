//! Weighted random.
//!
//! Draws against precomputed prefix sums of the configured weights and redraws when the
//! draw does not qualify, or, for an endpoint that reports load, with probability
//! `1 − load scale` (rejection keeps the distribution proportional to effective weight
//! among qualifying endpoints). During slow start, or after a few misses, it scans with the
//! effective weights instead.

use std::sync::Arc;

use super::Ctx;
use crate::{slow_start::WEIGHT_SCALE, Endpoint};

/// Prefix sums of the configured weights.
#[derive(Debug)]
pub(crate) struct WeightedRandom {
    /// `prefix[i]` is the sum of the weights of endpoints `0..=i`.
    prefix: Vec<u64>,
}

impl WeightedRandom {
    /// Builds the prefix sums for `endpoints`.
    pub fn new(endpoints: &[Arc<Endpoint>]) -> Self {
        let mut sum = 0;
        let prefix = endpoints
            .iter()
            .map(|e| {
                sum += u64::from(e.weight()) * WEIGHT_SCALE;
                sum
            })
            .collect();
        Self { prefix }
    }

    /// Picks a candidate with probability proportional to its effective weight.
    pub fn pick(&self, ctx: &Ctx<'_>) -> Option<usize> {
        let total = *self.prefix.last()?;
        if ctx.slow_start.is_none() {
            for _ in 0..4 {
                let r = fastrand::u64(..total);
                let i = self.prefix.partition_point(|&p| p <= r);
                if ctx.ok(i) && accept(ctx.endpoints[i].load_scale()) {
                    return Some(i);
                }
            }
        }
        scan(ctx)
    }
}

/// Returns true with probability `p` (always for `p >= 1`, the common case).
fn accept(p: f64) -> bool {
    p >= 1.0 || fastrand::f64() < p
}

/// Picks proportionally to effective weight with two scans over the candidates.
pub(crate) fn scan(ctx: &Ctx<'_>) -> Option<usize> {
    let n = ctx.endpoints.len();
    let total: u64 = (0..n).filter(|&i| ctx.ok(i)).map(|i| ctx.weight(i)).sum();
    if total == 0 {
        return None;
    }
    let mut r = fastrand::u64(..total);
    let mut last = None;
    for i in 0..n {
        if !ctx.ok(i) {
            continue;
        }
        let w = ctx.weight(i);
        if r < w {
            return Some(i);
        }
        r -= w;
        last = Some(i);
    }
    // Availability changed between the scans.
    last
}
