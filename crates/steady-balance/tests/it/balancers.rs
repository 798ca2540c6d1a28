//! Distribution and behaviour of the non-hash balancers, and slow start.
//!
//! Tolerances: deterministic balancers (round robin, smooth WRR, least connections) must
//! hit the expected share exactly or within 2% (relative); random ones within 5%
//! (relative) over 40 000 picks with a fixed seed.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use crate::common::{self, assert_shares, count_picks, ep, eps, index_of, set, simulate};
use proptest::prelude::*;
use steady_balance::{seed_rng, Algorithm, BalancerConfig, EndpointSet, Outcome, Pick};

const MS: Duration = Duration::from_millis(1);

#[test]
fn round_robin_takes_turns_ignoring_weights() {
    let t0 = Instant::now();
    let s = set(eps(&[5, 1, 1], t0), Algorithm::RoundRobin);
    let seq: Vec<usize> = (0..6)
        .map(|_| index_of(&s, &s.pick(&Pick::at(t0)).unwrap()))
        .collect();
    assert_eq!(seq, [0, 1, 2, 0, 1, 2]);
    assert_eq!(count_picks(&s, 3000, t0), [1000, 1000, 1000]);
}

#[test]
fn round_robin_shares_evenly_around_an_unavailable_endpoint() {
    let t0 = Instant::now();
    let endpoints = eps(&[1, 1, 1, 1], t0);
    endpoints[0].set_available(false);
    let s = set(endpoints, Algorithm::RoundRobin);
    assert_eq!(count_picks(&s, 3000, t0), [0, 1000, 1000, 1000]);
}

#[test]
fn smooth_wrr_matches_nginx_sequence() {
    let t0 = Instant::now();
    let s = set(eps(&[5, 1, 1], t0), Algorithm::WeightedRoundRobin);
    let seq: String = (0..14)
        .map(|_| (b'a' + index_of(&s, &s.pick(&Pick::at(t0)).unwrap()) as u8) as char)
        .collect();
    assert_eq!(seq, "aabacaaaabacaa");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Any window of sum(weights) consecutive picks holds exactly weight_i picks of each.
    #[test]
    fn smooth_wrr_windows_are_exact(weights in prop::collection::vec(1u32..8, 1..7)) {
        let t0 = Instant::now();
        let s = set(eps(&weights, t0), Algorithm::WeightedRoundRobin);
        let total: usize = weights.iter().map(|&w| w as usize).sum();
        let seq: Vec<usize> = (0..3 * total)
            .map(|_| index_of(&s, &s.pick(&Pick::at(t0)).unwrap()))
            .collect();
        for start in 0..=2 * total {
            let mut counts = vec![0u32; weights.len()];
            for &i in &seq[start..start + total] {
                counts[i] += 1;
            }
            prop_assert_eq!(&counts, &weights, "window at {}", start);
        }
    }

    /// Least connections keeps in-flight counts proportional to weight (within one
    /// request) while every request is held.
    #[test]
    fn least_connections_spreads_held_load_by_weight(
        weights in prop::collection::vec(1u32..5, 1..6),
        rounds in 1usize..20,
    ) {
        let t0 = Instant::now();
        let s = set(eps(&weights, t0), Algorithm::LeastConnections);
        let total: u32 = weights.iter().sum();
        let mut held = Vec::new();
        for _ in 0..rounds * total as usize {
            held.push(s.pick(&Pick::at(t0)).unwrap().start(t0));
        }
        for (e, &w) in s.endpoints().iter().zip(&weights) {
            let want = rounds as f64 * f64::from(w);
            prop_assert!((f64::from(e.in_flight()) - want).abs() <= 1.0,
                "weight {} has {} in flight, want {}", w, e.in_flight(), want);
        }
    }
}

#[test]
fn smooth_wrr_shares_are_exact() {
    let t0 = Instant::now();
    let s = set(eps(&[1, 2, 3, 4], t0), Algorithm::WeightedRoundRobin);
    assert_eq!(count_picks(&s, 10_000, t0), [1000, 2000, 3000, 4000]);
}

#[test]
fn least_connections_prefers_fewer_in_flight() {
    let t0 = Instant::now();
    let s = set(eps(&[1, 1, 1], t0), Algorithm::LeastConnections);
    let e = s.endpoints();
    let _held = [e[0].start(t0), e[0].start(t0), e[1].start(t0)];
    for _ in 0..10 {
        assert_eq!(index_of(&s, &s.pick(&Pick::at(t0)).unwrap()), 2);
    }
}

#[test]
fn least_connections_breaks_ties_in_turn() {
    // At low load every endpoint is idle; ties must not all go to the first one.
    let t0 = Instant::now();
    let s = set(eps(&[1, 1, 1, 1], t0), Algorithm::LeastConnections);
    assert_shares(&count_picks(&s, 4000, t0), &[1.0; 4], 0.02);
}

#[test]
fn random_honours_weights() {
    seed_rng(7);
    let t0 = Instant::now();
    let s = set(eps(&[1, 2, 3, 4], t0), Algorithm::Random);
    assert_shares(&count_picks(&s, 40_000, t0), &[1.0, 2.0, 3.0, 4.0], 0.05);
}

#[test]
fn p2c_spreads_equal_endpoints_evenly() {
    seed_rng(11);
    let t0 = Instant::now();
    let s = set(eps(&[1, 1, 1, 1], t0), Algorithm::P2cEwma);
    let counts = simulate(&s, t0, 40_000, MS, |_| (10 * MS, Outcome::Success));
    assert_shares(&counts, &[1.0; 4], 0.05);
}

#[test]
fn p2c_sends_more_to_heavier_endpoints() {
    seed_rng(12);
    let t0 = Instant::now();
    let s = set(eps(&[1, 3], t0), Algorithm::P2cEwma);
    let counts = simulate(&s, t0, 20_000, MS, |_| (10 * MS, Outcome::Success));
    assert!(counts[1] > 2 * counts[0], "{counts:?}");
}

#[test]
fn p2c_sends_less_to_slow_endpoint() {
    seed_rng(13);
    let t0 = Instant::now();
    let s = set(eps(&[1, 1, 1], t0), Algorithm::P2cEwma);
    let counts = simulate(&s, t0, 20_000, MS, |i| {
        let latency = if i == 2 { 50 * MS } else { 10 * MS };
        (latency, Outcome::Success)
    });
    // The slow one gets well under its third; the fast ones share the rest.
    assert!(
        counts[2] * 2 < counts[0] && counts[2] * 2 < counts[1],
        "{counts:?}"
    );
}

#[test]
fn p2c_starves_fast_failing_endpoint() {
    seed_rng(14);
    let t0 = Instant::now();
    let s = set(eps(&[1, 1, 1], t0), Algorithm::P2cEwma);
    let counts = simulate(&s, t0, 20_000, MS, |i| {
        if i == 0 {
            (Duration::from_micros(100), Outcome::Failure)
        } else {
            (10 * MS, Outcome::Success)
        }
    });
    let share = counts[0] as f64 / 20_000.0;
    assert!(share < 0.01, "fast-failing share {share} ({counts:?})");
}

#[test]
fn p2c_probes_new_endpoint_neutrally() {
    // An endpoint without samples must neither take all traffic nor none.
    seed_rng(15);
    let t0 = Instant::now();
    let old = eps(&[1, 1], t0);
    for e in &old {
        e.record(t0, 10 * MS, Outcome::Success);
    }
    let mut all = old.clone();
    all.push(ep(2, 1, t0));
    let s = set(all, Algorithm::P2cEwma);
    let counts = simulate(&s, t0, 3_000, MS, |_| (10 * MS, Outcome::Success));
    assert_shares(&counts, &[1.0; 3], 0.10);
}

/// Shares of a new endpoint (index 1, weight 1) beside an old one, at `age` into a 60 s
/// slow-start window.
fn new_endpoint_share(algorithm: Algorithm, age: Duration) -> f64 {
    let window = Duration::from_secs(60);
    let t0 = Instant::now() + Duration::from_secs(3600);
    let endpoints = vec![ep(0, 1, t0 - Duration::from_secs(3600)), ep(1, 1, t0)];
    let config = BalancerConfig {
        algorithm,
        slow_start: Some(window),
        bounded_load: None,
    };
    let s = EndpointSet::new(endpoints, &config);
    let now = t0 + age;
    let counts = if algorithm == Algorithm::LeastConnections {
        // Held requests split by effective weight.
        let held: Vec<_> = (0..2200)
            .map(|_| s.pick(&Pick::at(now)).unwrap().start(now))
            .collect();
        let c = vec![
            s.endpoints()[0].in_flight() as usize,
            s.endpoints()[1].in_flight() as usize,
        ];
        drop(held);
        c
    } else {
        count_picks(&s, 22_000, now)
    };
    counts[1] as f64 / (counts[0] + counts[1]) as f64
}

#[test]
fn slow_start_ramps_new_endpoint_share() {
    seed_rng(21);
    // Effective weight of the new endpoint: max(10%, age / window).
    let expected = |f: f64| f / (1.0 + f);
    for algorithm in [
        Algorithm::WeightedRoundRobin,
        Algorithm::LeastConnections,
        Algorithm::Random,
    ] {
        let tolerance = if algorithm == Algorithm::Random {
            0.05
        } else {
            0.02
        };
        let mut last = 0.0;
        for (age_s, f) in [
            (0, 0.1),
            (3, 0.1),
            (15, 0.25),
            (30, 0.5),
            (45, 0.75),
            (60, 1.0),
            (600, 1.0),
        ] {
            let share = new_endpoint_share(algorithm, Duration::from_secs(age_s));
            let want = expected(f);
            assert!(
                (share - want).abs() <= tolerance * want,
                "{algorithm:?} at {age_s}s: share {share:.4}, want {want:.4}"
            );
            assert!(
                share + tolerance * want >= last,
                "{algorithm:?}: share fell at {age_s}s"
            );
            last = share;
        }
    }
}

#[test]
fn slow_start_lowers_new_endpoint_share_under_p2c() {
    seed_rng(22);
    let t0 = Instant::now() + Duration::from_secs(3600);
    let endpoints = vec![ep(0, 1, t0 - Duration::from_secs(3600)), ep(1, 1, t0)];
    let config = BalancerConfig {
        algorithm: Algorithm::P2cEwma,
        slow_start: Some(Duration::from_secs(60)),
        bounded_load: None,
    };
    let s = EndpointSet::new(endpoints, &config);
    // 2 s of traffic at the start of the window, then 2 s after it.
    let early = simulate(&s, t0, 2_000, MS, |_| (10 * MS, Outcome::Success));
    let late = simulate(&s, t0 + Duration::from_secs(60), 2_000, MS, |_| {
        (10 * MS, Outcome::Success)
    });
    let share = |c: &[usize]| c[1] as f64 / (c[0] + c[1]) as f64;
    assert!(share(&early) < 0.35, "early {early:?}");
    assert!(share(&late) > 0.4, "late {late:?}");
}

#[test]
fn slow_start_does_not_apply_to_hash_or_round_robin() {
    let t0 = Instant::now();
    for algorithm in [
        Algorithm::RoundRobin,
        Algorithm::RingHash,
        Algorithm::Maglev,
    ] {
        let config = BalancerConfig {
            algorithm,
            slow_start: Some(Duration::from_secs(60)),
            bounded_load: None,
        };
        let with = EndpointSet::new(eps(&[1, 1, 1], t0), &config);
        let without = set(eps(&[1, 1, 1], t0), algorithm);
        for k in 0..500u64 {
            let p = Pick::at(t0).with_hash(steady_balance::hash_key(&k.to_le_bytes()));
            let a = index_of(&with, &with.pick(&p).unwrap());
            let b = index_of(&without, &without.pick(&p).unwrap());
            assert_eq!(a, b, "{algorithm:?}");
        }
        assert_eq!(with.effective_weight(&with.endpoints()[0], t0), 1.0);
    }
}

#[test]
fn empty_set_picks_nothing() {
    let t0 = Instant::now();
    for algorithm in common::ALL {
        let s = set(Vec::new(), algorithm);
        assert!(s.is_empty());
        assert!(
            s.pick(&Pick::at(t0).with_hash(1)).is_none(),
            "{algorithm:?}"
        );
    }
}

#[test]
fn rebuilt_set_keeps_endpoint_counters() {
    let t0 = Instant::now();
    let s = set(eps(&[1, 1], t0), Algorithm::LeastConnections);
    let held = s.endpoints()[0].start(t0);
    let kept = Arc::clone(s.get(common::addr(0)).unwrap());
    let rebuilt = set(vec![kept, ep(5, 1, t0)], Algorithm::LeastConnections);
    assert_eq!(rebuilt.endpoints()[0].in_flight(), 1);
    // The idle new endpoint is preferred.
    assert_eq!(index_of(&rebuilt, &rebuilt.pick(&Pick::at(t0)).unwrap()), 1);
    drop(held);
}

#[test]
fn reported_load_scales_weighted_shares() {
    // Loads 0, 0.5, 0.75 and 1.0 keep 1, 0.5, 0.25 and MIN_LOAD_SCALE of each weight.
    let loads = [None, Some(0.5), Some(0.75), Some(1.0)];
    let want = [1.0, 0.5, 0.25, steady_balance::MIN_LOAD_SCALE];
    for algorithm in [
        Algorithm::WeightedRoundRobin,
        Algorithm::Random,
        Algorithm::LeastConnections,
    ] {
        seed_rng(5);
        let t0 = Instant::now();
        let s = set(eps(&[1, 1, 1, 1], t0), algorithm);
        for (e, load) in s.endpoints().iter().zip(loads) {
            e.set_load(load);
        }
        let tolerance = if algorithm == Algorithm::Random {
            0.05
        } else {
            0.02
        };
        if algorithm == Algorithm::LeastConnections {
            // Least connections weighs held requests: hold picks open as a steady load would.
            let held: Vec<_> = (0..2000)
                .map(|_| s.pick(&Pick::at(t0)).unwrap().start(t0))
                .collect();
            let in_flight: Vec<usize> = s
                .endpoints()
                .iter()
                .map(|e| e.in_flight() as usize)
                .collect();
            assert_shares(&in_flight, &want, 0.05);
            drop(held);
            continue;
        }
        assert_shares(&count_picks(&s, 40_000, t0), &want, tolerance);
    }
    // A report that is no longer sent (None) restores the full weight.
    let t0 = Instant::now();
    let s = set(eps(&[1, 1], t0), Algorithm::WeightedRoundRobin);
    s.endpoints()[0].set_load(Some(0.9));
    s.endpoints()[0].set_load(None);
    assert_eq!(count_picks(&s, 1000, t0), [500, 500]);
}
