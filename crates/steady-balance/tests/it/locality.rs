//! Zone, region and priority failover: traffic stays local while enough of the local
//! zone is available, spills in proportion to lost capacity, and comes back.
//!
//! Tolerance: tier shares within 0.02 (absolute) over 20 000 picks with a fixed seed.

use std::{sync::Arc, time::Instant};

use crate::common::{addr, ALL};
use steady_balance::{
    seed_rng, BalancerConfig, Endpoint, EndpointSet, Locality, Pick, Proximity,
    DEFAULT_OVERPROVISIONING,
};

fn here() -> Locality {
    Locality {
        region: Some("eu".into()),
        zone: Some("eu-a".into()),
        priority: 0,
    }
}

/// Endpoint `i` in `region`/`zone` at `priority`.
fn ep(i: usize, region: &str, zone: &str, priority: u32, at: Instant) -> Arc<Endpoint> {
    Arc::new(
        Endpoint::new(format!("e{i}:9000"), addr(i), 1, at).with_locality(Locality {
            region: Some(region.into()),
            zone: Some(zone.into()),
            priority,
        }),
    )
}

/// Four endpoints in the local zone (0..4), four in another zone of the region (4..8),
/// two in another region (8..10), two at priority 1 locally (10..12).
fn fleet(algorithm: steady_balance::Algorithm) -> EndpointSet {
    let t0 = Instant::now();
    let mut eps = Vec::new();
    for i in 0..4 {
        eps.push(ep(i, "eu", "eu-a", 0, t0));
    }
    for i in 4..8 {
        eps.push(ep(i, "eu", "eu-b", 0, t0));
    }
    for i in 8..10 {
        eps.push(ep(i, "us", "us-a", 0, t0));
    }
    for i in 10..12 {
        eps.push(ep(i, "eu", "eu-a", 1, t0));
    }
    EndpointSet::new(eps, &BalancerConfig::new(algorithm))
        .with_locality(&here(), DEFAULT_OVERPROVISIONING)
}

/// Share of `n` picks landing in each group of endpoint indices.
fn group_shares(set: &EndpointSet, n: usize, groups: &[std::ops::Range<usize>]) -> Vec<f64> {
    let now = Instant::now();
    let mut counts = vec![0usize; groups.len()];
    for _ in 0..n {
        let e = set.pick(&Pick::at(now)).expect("something is available");
        let i = set
            .endpoints()
            .iter()
            .position(|x| Arc::ptr_eq(x, &e))
            .unwrap();
        let g = groups.iter().position(|r| r.contains(&i)).unwrap();
        counts[g] += 1;
    }
    counts.iter().map(|&c| c as f64 / n as f64).collect()
}

fn assert_close(got: &[f64], want: &[f64], what: &str) {
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() < 0.02, "{what}: got {got:?}, want {want:?}");
    }
}

const GROUPS: [std::ops::Range<usize>; 4] = [0..4, 4..8, 8..10, 10..12];

#[test]
fn tiers_are_ordered_nearest_first() {
    let set = fleet(steady_balance::Algorithm::RoundRobin);
    let tiers: Vec<(u32, Proximity, usize)> = set
        .tier_shares()
        .iter()
        .map(|t| (t.priority, t.proximity, t.endpoints))
        .collect();
    assert_eq!(
        tiers,
        vec![
            (0, Proximity::Zone, 4),
            (0, Proximity::Region, 4),
            (0, Proximity::Remote, 2),
            (1, Proximity::Zone, 2),
        ]
    );
}

#[test]
fn zone_failover_spills_in_proportion_and_returns() {
    for algorithm in ALL {
        seed_rng(3);
        let set = fleet(algorithm);
        let e = set.endpoints();
        let what = format!("{algorithm:?}");

        // All healthy: everything stays in the local zone.
        assert_close(
            &group_shares(&set, 20_000, &GROUPS),
            &[1.0, 0.0, 0.0, 0.0],
            &what,
        );

        // Half the zone gone: it keeps 1.4 × 0.5 = 70%; 30% spills to the region.
        e[0].set_available(false);
        e[1].set_available(false);
        assert_close(
            &group_shares(&set, 20_000, &GROUPS),
            &[0.7, 0.3, 0.0, 0.0],
            &what,
        );

        // The whole zone gone: the region's other zone takes all of it.
        e[2].set_available(false);
        e[3].set_available(false);
        assert_close(
            &group_shares(&set, 20_000, &GROUPS),
            &[0.0, 1.0, 0.0, 0.0],
            &what,
        );

        // And most of that zone too (1.4 × 1/4 = 35%): the rest crosses regions.
        for ep in &e[4..7] {
            ep.set_available(false);
        }
        assert_close(
            &group_shares(&set, 20_000, &GROUPS),
            &[0.0, 0.35, 0.65, 0.0],
            &what,
        );

        // Priority 0 entirely down: priority 1 serves.
        for ep in &e[7..10] {
            ep.set_available(false);
        }
        assert_close(
            &group_shares(&set, 20_000, &GROUPS),
            &[0.0, 0.0, 0.0, 1.0],
            &what,
        );

        // Recovery moves traffic back home.
        for ep in &e[..10] {
            ep.set_available(true);
        }
        assert_close(
            &group_shares(&set, 20_000, &GROUPS),
            &[1.0, 0.0, 0.0, 0.0],
            &what,
        );
    }
}

#[test]
fn shares_match_what_the_admin_api_reports() {
    let set = fleet(steady_balance::Algorithm::Random);
    set.endpoints()[0].set_available(false);
    set.endpoints()[1].set_available(false);
    let shares: Vec<f64> = set.tier_shares().iter().map(|t| t.share).collect();
    assert_close(&shares, &[0.7, 0.3, 0.0, 0.0], "tier_shares");
    assert_eq!(set.tier_shares()[0].available, 2);
}

#[test]
fn a_retry_leaves_the_zone_it_failed_in() {
    let t0 = Instant::now();
    let set = EndpointSet::new(
        vec![ep(0, "eu", "eu-a", 0, t0), ep(1, "eu", "eu-b", 0, t0)],
        &BalancerConfig::new(steady_balance::Algorithm::RoundRobin),
    )
    .with_locality(&here(), DEFAULT_OVERPROVISIONING);
    let avoid = [addr(0)];
    for _ in 0..100 {
        let e = set.pick(&Pick::at(t0).avoiding(&avoid)).unwrap();
        assert_eq!(e.addr(), addr(1), "the other zone, not the one just tried");
    }
    // With nowhere else to go, the avoided endpoint is still better than nothing.
    set.endpoints()[1].set_available(false);
    assert_eq!(
        set.pick(&Pick::at(t0).avoiding(&avoid)).unwrap().addr(),
        addr(0)
    );
}

#[test]
fn panic_threshold_overrides_tiers() {
    let set = fleet(steady_balance::Algorithm::RoundRobin).with_panic_threshold(Some(50));
    for ep in &set.endpoints()[..10] {
        ep.set_ejected(true);
    }
    // 2 of 12 available (< 50%): panic mode balances over all twelve.
    let shares = group_shares(&set, 12_000, &GROUPS);
    assert_close(
        &shares,
        &[4.0 / 12.0, 4.0 / 12.0, 2.0 / 12.0, 2.0 / 12.0],
        "panic",
    );
}

#[test]
fn one_tier_or_no_locality_changes_nothing() {
    let t0 = Instant::now();
    let eps = vec![ep(0, "eu", "eu-a", 0, t0), ep(1, "eu", "eu-b", 0, t0)];
    let cfg = BalancerConfig::new(steady_balance::Algorithm::RoundRobin);
    // The gateway has no locality: both endpoints are local.
    let set = EndpointSet::new(eps, &cfg).with_locality(&Locality::default(), 1.4);
    assert!(set.tier_shares().is_empty());
    let shares = group_shares(&set, 1000, &[0..1, 1..2]);
    assert_close(&shares, &[0.5, 0.5], "no locality");
}

#[test]
fn nothing_available_is_none() {
    let set = fleet(steady_balance::Algorithm::LeastConnections);
    for ep in set.endpoints() {
        ep.set_available(false);
    }
    assert!(set.pick(&Pick::at(Instant::now())).is_none());
}
