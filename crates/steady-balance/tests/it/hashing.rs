//! Ring hash and Maglev: stickiness, weights, disruption on change, bounded load.
//!
//! Tolerances: shares within 25% (relative) of the weight's share for the ring (160
//! points per unit of weight give a standard deviation near 8%) and within 2% for Maglev;
//! removing one of N endpoints moves no other key on the ring and at most 2% of other
//! keys in Maglev; adding one moves between 0.6 and 1.4 × 1/(N+1) of the keys.

use std::{net::SocketAddr, time::Instant};

use crate::common::{self, addr, assert_shares, ep, eps, index_of, set};
use proptest::prelude::*;
use steady_balance::{hash_key, seed_rng, Algorithm, BalancerConfig, EndpointSet, Pick};

const HASHES: [Algorithm; 2] = [Algorithm::RingHash, Algorithm::Maglev];

fn key(k: u64) -> u64 {
    hash_key(&k.to_le_bytes())
}

/// Maps keys `0..keys` to endpoint addresses.
fn map(s: &EndpointSet, keys: u64, now: Instant) -> Vec<SocketAddr> {
    (0..keys)
        .map(|k| s.pick(&Pick::at(now).with_hash(key(k))).unwrap().addr())
        .collect()
}

#[test]
fn hash_key_is_xxh3() {
    assert_eq!(hash_key(b""), 0x2d06_8005_38d3_94c2);
    assert_ne!(hash_key(b"user-1"), hash_key(b"user-2"));
}

#[test]
fn shares_follow_weights() {
    let t0 = Instant::now();
    let weights = [1, 1, 2, 4];
    for (algorithm, tolerance) in [(Algorithm::RingHash, 0.25), (Algorithm::Maglev, 0.02)] {
        let s = set(eps(&weights, t0), algorithm);
        let mut counts = vec![0; weights.len()];
        for k in 0..100_000 {
            counts[index_of(&s, &s.pick(&Pick::at(t0).with_hash(key(k))).unwrap())] += 1;
        }
        assert_shares(&counts, &[1.0, 1.0, 2.0, 4.0], tolerance);
    }
}

#[test]
fn without_hash_picks_at_random() {
    seed_rng(3);
    let t0 = Instant::now();
    for algorithm in HASHES {
        let s = set(eps(&[1, 1, 1, 1], t0), algorithm);
        let counts = common::count_picks(&s, 20_000, t0);
        assert_shares(&counts, &[1.0; 4], 0.25);
    }
}

#[test]
fn unavailable_endpoint_moves_only_its_own_keys() {
    let t0 = Instant::now();
    for algorithm in HASHES {
        let s = set(eps(&[1; 6], t0), algorithm);
        let before = map(&s, 5000, t0);
        s.endpoints()[2].set_available(false);
        let after = map(&s, 5000, t0);
        for (b, a) in before.iter().zip(&after) {
            assert_ne!(*a, addr(2), "{algorithm:?}");
            if *b != addr(2) {
                assert_eq!(a, b, "{algorithm:?}: a healthy endpoint's key moved");
            }
        }
        // Its keys spread over the others rather than all landing on one.
        let mut heirs: Vec<_> = before
            .iter()
            .zip(&after)
            .filter(|(b, _)| **b == addr(2))
            .map(|(_, a)| *a)
            .collect();
        heirs.sort();
        heirs.dedup();
        assert!(heirs.len() >= 3, "{algorithm:?}: heirs {heirs:?}");
        s.endpoints()[2].set_available(true);
        assert_eq!(map(&s, 5000, t0), before, "{algorithm:?}: keys come back");
    }
}

#[test]
fn avoided_endpoint_walks_on_deterministically() {
    let t0 = Instant::now();
    for algorithm in HASHES {
        let s = set(eps(&[1; 5], t0), algorithm);
        for k in 0..500 {
            let p = Pick::at(t0).with_hash(key(k));
            let first = s.pick(&p).unwrap().addr();
            let avoid = [first];
            let retry = s.pick(&p.avoiding(&avoid)).unwrap().addr();
            assert_ne!(retry, first, "{algorithm:?}");
            assert_eq!(
                s.pick(&p.avoiding(&avoid)).unwrap().addr(),
                retry,
                "{algorithm:?}"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    /// The same key maps to the same endpoint, also in a set rebuilt from equal endpoints.
    #[test]
    fn same_key_same_endpoint(n in 1usize..12, keys in prop::collection::vec(any::<u64>(), 1..200)) {
        let t0 = Instant::now();
        for algorithm in HASHES {
            let a = set(eps(&vec![1; n], t0), algorithm);
            let b = set(eps(&vec![1; n], t0), algorithm);
            for &k in &keys {
                let p = Pick::at(t0).with_hash(k);
                let x = a.pick(&p).unwrap().addr();
                prop_assert_eq!(x, a.pick(&p).unwrap().addr());
                prop_assert_eq!(x, b.pick(&p).unwrap().addr());
            }
        }
    }

    /// Removing one endpoint moves only its keys (ring exactly, Maglev ≤ 2% of the rest).
    #[test]
    fn removing_one_moves_little(n in 2usize..16, removed in any::<prop::sample::Index>()) {
        let t0 = Instant::now();
        let r = removed.index(n);
        for algorithm in HASHES {
            let all = eps(&vec![1; n], t0);
            let before = map(&set(all.clone(), algorithm), 4000, t0);
            let mut fewer = all;
            fewer.remove(r);
            let after = map(&set(fewer, algorithm), 4000, t0);
            let others = before.iter().filter(|b| **b != addr(r)).count();
            let moved = before.iter().zip(&after).filter(|(b, a)| **b != addr(r) && b != a).count();
            let limit = if algorithm == Algorithm::RingHash { 0.0 } else { 0.02 };
            prop_assert!(moved as f64 <= limit * others as f64,
                "{:?}: {} of {} other keys moved", algorithm, moved, others);
        }
    }

    /// Adding one endpoint to N moves about 1/(N+1) of the keys, nearly all to it.
    #[test]
    fn adding_one_moves_its_share(n in 2usize..16) {
        let t0 = Instant::now();
        for algorithm in HASHES {
            let all = eps(&vec![1; n], t0);
            let before = map(&set(all.clone(), algorithm), 8000, t0);
            let mut more = all;
            more.push(ep(n, 1, t0));
            let after = map(&set(more, algorithm), 8000, t0);
            let moved = before.iter().zip(&after).filter(|(b, a)| b != a).count() as f64 / 8000.0;
            let to_new = after.iter().filter(|a| **a == addr(n)).count() as f64 / 8000.0;
            let want = 1.0 / (n as f64 + 1.0);
            prop_assert!(moved >= 0.6 * want && moved <= 1.4 * want,
                "{:?}: moved {:.4}, want about {:.4}", algorithm, moved, want);
            prop_assert!(moved - to_new <= 0.02, "{:?}: {:.4} moved elsewhere", algorithm, moved - to_new);
        }
    }

    /// With guards held, no endpoint's in-flight count exceeds
    /// ceil(c × total_in_flight × weight / total_weight).
    #[test]
    fn bounded_load_holds_with_guards(
        weights in prop::collection::vec(1u32..4, 2..8),
        c_percent in 110u64..300,
        hot_keys in 1u64..4,
        requests in 1usize..150,
    ) {
        let t0 = Instant::now();
        let c = c_percent as f64 / 100.0;
        for algorithm in HASHES {
            let config = BalancerConfig { algorithm, slow_start: None, bounded_load: Some(c) };
            let s = EndpointSet::new(eps(&weights, t0), &config);
            let total_weight: u64 = weights.iter().map(|&w| u64::from(w)).sum();
            let mut held = Vec::new();
            for r in 0..requests {
                // A few hot keys: without the bound they would pile onto few endpoints.
                let p = Pick::at(t0).with_hash(key(r as u64 % hot_keys));
                held.push(s.pick(&p).unwrap().start(t0));
                let total = held.len() as u64;
                for (e, &w) in s.endpoints().iter().zip(&weights) {
                    // Exact integer ceil of c_percent/100 × total × w / W.
                    let num = c_percent * total * u64::from(w);
                    let den = 100 * total_weight;
                    let bound = num.div_ceil(den);
                    prop_assert!(u64::from(e.in_flight()) <= bound,
                        "{:?}: {} in flight > bound {} at total {}", algorithm, e.in_flight(), bound, total);
                }
            }
        }
    }
}

#[test]
fn bounded_load_keeps_keys_home_when_load_is_even() {
    // Under the bound a key stays on its own endpoint.
    let t0 = Instant::now();
    for algorithm in HASHES {
        let config = BalancerConfig {
            algorithm,
            slow_start: None,
            bounded_load: Some(1.25),
        };
        let bounded = EndpointSet::new(eps(&[1; 4], t0), &config);
        let plain = set(eps(&[1; 4], t0), algorithm);
        assert_eq!(
            map(&bounded, 2000, t0),
            map(&plain, 2000, t0),
            "{algorithm:?}"
        );
    }
}

#[test]
fn bounded_load_spreads_a_hot_key() {
    let t0 = Instant::now();
    for algorithm in HASHES {
        let config = BalancerConfig {
            algorithm,
            slow_start: None,
            bounded_load: Some(1.25),
        };
        let s = EndpointSet::new(eps(&[1; 4], t0), &config);
        let p = Pick::at(t0).with_hash(key(42));
        let home = s.pick(&p).unwrap().addr();
        let held: Vec<_> = (0..40).map(|_| s.pick(&p).unwrap().start(t0)).collect();
        for e in s.endpoints() {
            // ceil(1.25 × 40 / 4) = 13.
            assert!(e.in_flight() <= 13, "{algorithm:?}: {}", e.in_flight());
        }
        assert_eq!(
            s.get(home).unwrap().in_flight(),
            13,
            "{algorithm:?}: home fills first"
        );
        drop(held);
    }
}
