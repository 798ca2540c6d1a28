//! Round robin: each available endpoint in turn, weights ignored.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::Ctx;

/// Round-robin cursor.
#[derive(Debug, Default)]
pub(crate) struct RoundRobin {
    /// Position of the next pick; wraps modulo the endpoint count.
    next: AtomicUsize,
}

impl RoundRobin {
    /// Picks the next endpoint at or after the cursor that qualifies.
    ///
    /// When it has to skip unavailable endpoints, the cursor moves past the one picked,
    /// so the endpoints that remain share the traffic evenly (with `a` down, `a, b, c`
    /// rotates `b, c, b, c`, not `b, b, c`), as Envoy's rebuilt healthy list does.
    pub fn pick(&self, ctx: &Ctx<'_>) -> Option<usize> {
        let n = ctx.endpoints.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        let picked = (0..n).map(|k| (start + k) % n).find(|&i| ctx.ok(i))?;
        if picked != start {
            self.next.store(picked + 1, Ordering::Relaxed);
        }
        Some(picked)
    }
}
