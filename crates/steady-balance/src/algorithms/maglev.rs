//! Google's Maglev lookup table (Eisenbud et al., NSDI 2016), weighted as Envoy does.
//!
//! Endpoint `i` has a permutation of the `M` slots, `(offset_i + j × skip_i) mod M`, from
//! two hashes of its address. Endpoints take turns claiming their next free slot until the
//! table is full; a heavier endpoint takes a turn more often (Envoy's
//! `iteration × weight < target` rule), so slot shares follow weights. A key maps to
//! `table[hash mod M]`. When that endpoint does not qualify, the key re-probes
//! `table[rehash(hash, k) mod M]` for `k = 1..=`[`MAX_PROBES`], then scans the endpoints
//! from `hash mod n`; all deterministic, so keys of healthy endpoints never move.
//! Endpoints beyond the table size (65537) get no slots.

use std::sync::Arc;

use super::hashed::{addr_hash, rehash, HashWalk};
use crate::Endpoint;

/// Table size: prime, and the size Maglev and Envoy default to.
pub const MAGLEV_TABLE_SIZE: usize = 65537;

/// Rehash probes before falling back to a scan of the endpoints.
pub const MAX_PROBES: u64 = 32;

const OFFSET_SEED: u64 = 0x6d61_676c_6576_6f66;
const SKIP_SEED: u64 = 0x6d61_676c_6576_736b;
const EMPTY: u32 = u32::MAX;

/// The filled lookup table.
#[derive(Debug)]
pub(crate) struct Maglev {
    /// Endpoint index per slot; empty when there are no endpoints.
    table: Vec<u32>,
    /// Number of endpoints.
    n: usize,
}

impl Maglev {
    /// Builds a table of `size` slots (a prime) for `endpoints`.
    pub fn new(endpoints: &[Arc<Endpoint>], size: usize) -> Self {
        let n = endpoints.len();
        if n == 0 || size == 0 {
            return Self {
                table: Vec::new(),
                n,
            };
        }
        let m = size as u64;
        struct Build {
            pos: u64,
            skip: u64,
            weight: u64,
            target: u64,
        }
        let mut build: Vec<Build> = endpoints
            .iter()
            .map(|e| Build {
                pos: addr_hash(&e.addr(), OFFSET_SEED) % m,
                skip: if m > 1 {
                    addr_hash(&e.addr(), SKIP_SEED) % (m - 1) + 1
                } else {
                    1
                },
                weight: u64::from(e.weight()),
                target: 0,
            })
            .collect();
        let max_weight = build.iter().map(|b| b.weight).max().unwrap_or(1);
        let mut table = vec![EMPTY; size];
        let mut filled = 0;
        let mut iteration: u64 = 0;
        'fill: loop {
            for (i, b) in build.iter_mut().enumerate() {
                // An endpoint of weight max_weight / k takes a turn every k iterations.
                if iteration * b.weight < b.target {
                    continue;
                }
                b.target += max_weight;
                // The permutation visits every slot (m is prime), so this ends.
                while table[b.pos as usize] != EMPTY {
                    b.pos = (b.pos + b.skip) % m;
                }
                table[b.pos as usize] = i as u32;
                b.pos = (b.pos + b.skip) % m;
                filled += 1;
                if filled == size {
                    break 'fill;
                }
            }
            iteration += 1;
        }
        Self { table, n }
    }
}

impl HashWalk for Maglev {
    fn primary(&self, hash: u64) -> Option<usize> {
        if self.table.is_empty() {
            return None;
        }
        Some(self.table[(hash % self.table.len() as u64) as usize] as usize)
    }

    fn walk(&self, hash: u64, mut f: impl FnMut(usize) -> bool) -> Option<usize> {
        let first = self.primary(hash)?;
        if f(first) {
            return Some(first);
        }
        let m = self.table.len() as u64;
        for k in 1..=MAX_PROBES {
            let i = self.table[(rehash(hash, k) % m) as usize] as usize;
            if f(i) {
                return Some(i);
            }
        }
        let start = (hash % self.n as u64) as usize;
        (0..self.n).map(|k| (start + k) % self.n).find(|&i| f(i))
    }
}
