//! What ring hash and Maglev share: walking past unavailable, avoided or overloaded
//! endpoints, and bounded load.
//!
//! A key whose first endpoint qualifies always gets it, so keys of healthy endpoints never
//! move; other keys walk on deterministically (the next distinct endpoint on the ring, a
//! rehash in the Maglev table).
//!
//! Bounded load is "consistent hashing with bounded loads" (Mirrokni, Thorup, Zadimoghaddam
//! 2018) weighted as HAProxy's `hash-balance-factor`: endpoint `i` qualifies only while
//! `in_flight_i + 1 <= ceil(c × (total_in_flight + 1) × weight_i / total_weight)`, over
//! the available endpoints. With `c >= 1` some endpoint always qualifies.

use std::{net::SocketAddr, sync::Arc};

use crate::Endpoint;

/// A consistent-hash lookup structure.
pub(crate) trait HashWalk {
    /// Returns the endpoint `hash` maps to, `None` when there are no endpoints.
    fn primary(&self, hash: u64) -> Option<usize>;

    /// Calls `f` on endpoints in the key's deterministic order, starting with the primary,
    /// and returns the first for which it holds.
    fn walk(&self, hash: u64, f: impl FnMut(usize) -> bool) -> Option<usize>;
}

/// Picks the endpoint for `hash`, honouring availability (unless `panic`), `avoid` and
/// bounded load.
pub(crate) fn pick(
    table: &impl HashWalk,
    endpoints: &[Arc<Endpoint>],
    hash: u64,
    avoid: &[SocketAddr],
    bounded_load: Option<f64>,
    panic: bool,
) -> Option<usize> {
    let up = |e: &Endpoint| e.is_available() || (panic && e.is_healthy());
    let first = table.primary(hash)?;
    if avoid.is_empty() && bounded_load.is_none() && up(&endpoints[first]) {
        return Some(first);
    }

    // One scan tells whether a walk can succeed and gives the totals for the bound, so a
    // walk never runs the whole ring when nothing qualifies.
    let (mut n_available, mut n_preferred, mut total_in_flight, mut total_weight) =
        (0usize, 0usize, 0u64, 0u64);
    for e in endpoints {
        if up(e) {
            n_available += 1;
            total_in_flight += u64::from(e.in_flight());
            total_weight += u64::from(e.weight());
            if !avoid.contains(&e.addr()) {
                n_preferred += 1;
            }
        }
    }
    if n_available == 0 {
        return None;
    }
    let use_avoid = !avoid.is_empty() && n_preferred > 0;
    let base = |i: usize| {
        let e = &endpoints[i];
        up(e) && !(use_avoid && avoid.contains(&e.addr()))
    };

    if let Some(c) = bounded_load {
        let per_weight = c * (total_in_flight + 1) as f64 / total_weight as f64;
        let under_bound = |i: usize| {
            let e = &endpoints[i];
            // The epsilon keeps float error from rounding an exact integer bound up.
            let bound = (per_weight * f64::from(e.weight()) - 1e-9).ceil();
            f64::from(e.in_flight()) + 1.0 <= bound
        };
        if let Some(i) = table.walk(hash, |i| base(i) && under_bound(i)) {
            return Some(i);
        }
    }
    table.walk(hash, base)
}

/// Hashes an endpoint's address (its identity on the ring and in the table) with `seed`.
pub(crate) fn addr_hash(addr: &SocketAddr, seed: u64) -> u64 {
    let ip = match addr.ip() {
        std::net::IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        std::net::IpAddr::V6(v6) => v6.octets(),
    };
    let mut buf = [0u8; 18];
    buf[..16].copy_from_slice(&ip);
    buf[16..].copy_from_slice(&addr.port().to_be_bytes());
    xxhash_rust::xxh3::xxh3_64_with_seed(&buf, seed)
}

/// Mixes `hash` with probe number `k` (splitmix64's finalizer).
pub(crate) fn rehash(hash: u64, k: u64) -> u64 {
    let mut z = hash.wrapping_add(k.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
