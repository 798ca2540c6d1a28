//! Smooth weighted round robin, as NGINX's `ngx_http_upstream_get_peer`.
//!
//! Each pick adds every candidate's effective weight to its current weight, takes the
//! candidate with the highest current weight (the first on ties) and subtracts the total
//! from it. Weights 5, 1, 1 give `a a b a c a a`; any window of `sum(weights)` picks holds
//! each endpoint exactly `weight` times.

use std::sync::{Mutex, PoisonError};

use super::Ctx;

/// Current weights, one per endpoint.
#[derive(Debug)]
pub(crate) struct SmoothWrr {
    /// NGINX's `peer->current_weight`, scaled like the effective weights.
    current: Mutex<Vec<i64>>,
}

impl SmoothWrr {
    /// Creates the state for `n` endpoints.
    pub fn new(n: usize) -> Self {
        Self {
            current: Mutex::new(vec![0; n]),
        }
    }

    /// Picks the candidate with the highest current weight.
    pub fn pick(&self, ctx: &Ctx<'_>) -> Option<usize> {
        // Plain integers: a panicking holder cannot leave them invalid.
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        let mut best: Option<(usize, i64)> = None;
        let mut total: i64 = 0;
        for (i, cw) in current.iter_mut().enumerate() {
            if !ctx.ok(i) {
                continue;
            }
            let w = ctx.weight(i) as i64;
            *cw += w;
            total += w;
            match best {
                Some((_, best_cw)) if *cw <= best_cw => {}
                _ => best = Some((i, *cw)),
            }
        }
        let (b, _) = best?;
        current[b] -= total;
        Some(b)
    }
}
