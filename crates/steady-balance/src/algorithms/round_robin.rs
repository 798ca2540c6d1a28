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
    /// An endpoint after an unavailable one takes its turns too, as NGINX does.
    pub fn pick(&self, ctx: &Ctx<'_>) -> Option<usize> {
        let n = ctx.endpoints.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        (0..n).map(|k| (start + k) % n).find(|&i| ctx.ok(i))
    }
}
