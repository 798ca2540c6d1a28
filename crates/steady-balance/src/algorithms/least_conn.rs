//! Weighted least connections: the lowest `(in_flight + 1) / weight`.
//!
//! Ties go round robin (the scan starts one further each pick), as HAProxy's `leastconn`
//! does; always taking the first would send all light load to endpoint 0.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::Ctx;

/// Rotating scan start for tie-breaking.
#[derive(Debug, Default)]
pub(crate) struct LeastConn {
    /// Where the next scan starts; wraps modulo the endpoint count.
    next: AtomicUsize,
}

impl LeastConn {
    /// Picks the candidate with the lowest weighted load.
    pub fn pick(&self, ctx: &Ctx<'_>) -> Option<usize> {
        let n = ctx.endpoints.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        // Best as (index, load + 1, weight); compare a/b < c/d as a*d < c*b.
        let mut best: Option<(usize, u128, u128)> = None;
        for k in 0..n {
            let i = (start + k) % n;
            if !ctx.ok(i) {
                continue;
            }
            let load = u128::from(ctx.endpoints[i].in_flight()) + 1;
            let w = u128::from(ctx.weight(i));
            match best {
                Some((_, bl, bw)) if load * bw >= bl * w => {}
                _ => best = Some((i, load, w)),
            }
        }
        best.map(|(i, _, _)| i)
    }
}
