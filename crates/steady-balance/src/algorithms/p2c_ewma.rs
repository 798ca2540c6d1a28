//! Power of two random choices over peak-EWMA cost, as linkerd and Finagle do.
//!
//! Cost is `estimate × (in_flight + 1) / weight`. The estimate is the endpoint's decayed
//! peak-EWMA latency ([`Endpoint::ewma_latency`](crate::Endpoint::ewma_latency)); failures
//! record a penalty there. An endpoint without samples borrows the other choice's
//! estimate, so the two are compared on load alone and a new endpoint neither floods nor
//! starves.

use super::{random_index, Ctx};

/// Picks two distinct random candidates and returns the cheaper.
pub(crate) fn pick(ctx: &Ctx<'_>) -> Option<usize> {
    let n = ctx.endpoints.len();
    let a = random_index(n, None, |i| ctx.ok(i))?;
    let Some(b) = random_index(n, Some(a), |i| ctx.ok(i)) else {
        return Some(a);
    };
    let (ea, eb) = (&ctx.endpoints[a], &ctx.endpoints[b]);
    let (la, lb) = (ea.ewma_ns(ctx.now), eb.ewma_ns(ctx.now));
    let (la, lb) = match (la, lb) {
        (Some(x), Some(y)) => (x, y),
        (Some(x), None) => (x, x),
        (None, Some(y)) => (y, y),
        (None, None) => (1.0, 1.0),
    };
    let cost = |lat: f64, i: usize| {
        lat * (f64::from(ctx.endpoints[i].in_flight()) + 1.0) / ctx.weight(i) as f64
    };
    // `a` is already random, so ties may go to it.
    if cost(lb, b) < cost(la, a) {
        Some(b)
    } else {
        Some(a)
    }
}
