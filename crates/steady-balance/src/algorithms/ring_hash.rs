//! Ketama-style consistent-hash ring.
//!
//! Each endpoint gets [`VNODES_PER_WEIGHT`] × weight points, point `k` at
//! `xxh3(address, seed = k)`, so an endpoint's points do not depend on the others: removing
//! one endpoint moves only the keys that were on it. A key maps to the first point at or
//! after its hash (wrapping), found by binary search. Rings over
//! [`MAX_RING_ENTRIES`] points are scaled down (at least one point each), which gives up
//! that exactness for very large sets.

use std::sync::Arc;

use super::hashed::{addr_hash, HashWalk};
use crate::Endpoint;

/// Ring points per unit of weight (ketama uses 160 per server).
pub const VNODES_PER_WEIGHT: u64 = 160;

/// Most points on one ring.
pub const MAX_RING_ENTRIES: u64 = 1 << 17;

/// The ring, sorted by point.
#[derive(Debug)]
pub(crate) struct Ring {
    /// Point hashes, ascending.
    points: Vec<u64>,
    /// `owners[j]` is the endpoint index of `points[j]`.
    owners: Vec<u32>,
}

impl Ring {
    /// Builds the ring for `endpoints`.
    pub fn new(endpoints: &[Arc<Endpoint>]) -> Self {
        let total: u64 = endpoints
            .iter()
            .map(|e| u64::from(e.weight()) * VNODES_PER_WEIGHT)
            .sum();
        let scale = if total > MAX_RING_ENTRIES {
            MAX_RING_ENTRIES as f64 / total as f64
        } else {
            1.0
        };
        let mut entries: Vec<(u64, u32)> = Vec::with_capacity(total.min(MAX_RING_ENTRIES) as usize);
        for (i, e) in endpoints.iter().enumerate() {
            let vnodes = u64::from(e.weight()) * VNODES_PER_WEIGHT;
            let count = ((vnodes as f64 * scale) as u64).max(1);
            entries.extend((0..count).map(|k| (addr_hash(&e.addr(), k), i as u32)));
        }
        entries.sort_unstable();
        let (points, owners) = entries.into_iter().unzip();
        Self { points, owners }
    }

    /// Returns the ring position of the first point at or after `hash`.
    fn position(&self, hash: u64) -> usize {
        let pos = self.points.partition_point(|&p| p < hash);
        if pos == self.points.len() {
            0
        } else {
            pos
        }
    }
}

impl HashWalk for Ring {
    fn primary(&self, hash: u64) -> Option<usize> {
        if self.points.is_empty() {
            return None;
        }
        Some(self.owners[self.position(hash)] as usize)
    }

    fn walk(&self, hash: u64, mut f: impl FnMut(usize) -> bool) -> Option<usize> {
        let len = self.owners.len();
        if len == 0 {
            return None;
        }
        let start = self.position(hash);
        let mut last = None;
        for k in 0..len {
            let owner = self.owners[(start + k) % len];
            // Consecutive points often share an owner that was already refused.
            if last == Some(owner) {
                continue;
            }
            last = Some(owner);
            if f(owner as usize) {
                return Some(owner as usize);
            }
        }
        None
    }
}
