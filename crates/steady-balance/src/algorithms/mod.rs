//! The balancing algorithms, one module each, behind one internal enum.
//!
//! Each algorithm returns an index into the set's endpoint slice. Non-hash algorithms see
//! one [`Ctx`] per pass: the set tries first with the request's `avoid` list and, if
//! nothing qualifies, again without it. The hash balancers handle `avoid` and bounded load
//! themselves in [`hashed`] so that keys walk deterministically.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use crate::{slow_start::scaled_weight, Endpoint};

pub(crate) mod hashed;
pub(crate) mod least_conn;
pub(crate) mod maglev;
pub(crate) mod p2c_ewma;
pub(crate) mod random;
pub(crate) mod ring_hash;
pub(crate) mod round_robin;
pub(crate) mod smooth_wrr;

/// What one pass of a pick sees.
pub(crate) struct Ctx<'a> {
    /// The set's endpoints.
    pub endpoints: &'a [Arc<Endpoint>],
    /// The request's clock.
    pub now: Instant,
    /// Addresses to skip in this pass (empty in the fallback pass).
    pub avoid: &'a [SocketAddr],
    /// Slow-start window, `None` when no endpoint is ramping at `now`.
    pub slow_start: Option<Duration>,
    /// Panic mode: too few endpoints are available, so ejections are ignored (active
    /// health checks still count).
    pub panic: bool,
}

impl Ctx<'_> {
    /// Returns whether endpoint `i` may be picked in this pass.
    #[inline]
    pub fn ok(&self, i: usize) -> bool {
        let e = &self.endpoints[i];
        (e.is_available() || (self.panic && e.is_healthy()))
            && (self.avoid.is_empty() || !self.avoid.contains(&e.addr()))
    }

    /// Returns endpoint `i`'s scaled, slow-started weight.
    #[inline]
    pub fn weight(&self, i: usize) -> u64 {
        scaled_weight(&self.endpoints[i], self.now, self.slow_start)
    }
}

/// Returns a uniformly random index in `0..n` other than `exclude` for which `ok` holds.
///
/// Tries a few random draws first (cheap when most endpoints qualify), then counts.
pub(crate) fn random_index(
    n: usize,
    exclude: Option<usize>,
    ok: impl Fn(usize) -> bool,
) -> Option<usize> {
    if n == 0 {
        return None;
    }
    let allowed = |i: usize| Some(i) != exclude && ok(i);
    for _ in 0..4 {
        let i = fastrand::usize(..n);
        if allowed(i) {
            return Some(i);
        }
    }
    let count = (0..n).filter(|&i| allowed(i)).count();
    if count == 0 {
        return None;
    }
    let mut k = fastrand::usize(..count);
    for i in 0..n {
        if allowed(i) {
            if k == 0 {
                return Some(i);
            }
            k -= 1;
        }
    }
    // Availability changed between the two scans; take any that still qualifies.
    (0..n).find(|&i| allowed(i))
}

/// Algorithm state built once per [`EndpointSet`](crate::EndpointSet).
#[derive(Debug)]
pub(crate) enum Balancer {
    RoundRobin(round_robin::RoundRobin),
    WeightedRoundRobin(smooth_wrr::SmoothWrr),
    LeastConnections(least_conn::LeastConn),
    P2cEwma,
    Random(random::WeightedRandom),
    RingHash(ring_hash::Ring),
    Maglev(maglev::Maglev),
}
