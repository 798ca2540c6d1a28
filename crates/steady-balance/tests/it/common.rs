//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use steady_balance::{Algorithm, BalancerConfig, Endpoint, EndpointSet, InFlight, Outcome, Pick};

/// Every algorithm, for tests that hold for all.
pub const ALL: [Algorithm; 7] = [
    Algorithm::RoundRobin,
    Algorithm::WeightedRoundRobin,
    Algorithm::LeastConnections,
    Algorithm::P2cEwma,
    Algorithm::Random,
    Algorithm::RingHash,
    Algorithm::Maglev,
];

/// Returns a loopback address unique to `i` (never connected to).
pub fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([127, 1, (i >> 8) as u8, i as u8], 9000))
}

/// Creates endpoint `i` with `weight`, added at `at`.
pub fn ep(i: usize, weight: u32, at: Instant) -> Arc<Endpoint> {
    Arc::new(Endpoint::new(
        format!("backend-{i}:9000"),
        addr(i),
        weight,
        at,
    ))
}

/// Creates one endpoint per weight, all added at `at`.
pub fn eps(weights: &[u32], at: Instant) -> Vec<Arc<Endpoint>> {
    weights
        .iter()
        .enumerate()
        .map(|(i, &w)| ep(i, w, at))
        .collect()
}

/// Builds a set with `algorithm` and no options.
pub fn set(endpoints: Vec<Arc<Endpoint>>, algorithm: Algorithm) -> EndpointSet {
    EndpointSet::new(endpoints, &BalancerConfig::new(algorithm))
}

/// Returns the index of `e` in `set`.
pub fn index_of(set: &EndpointSet, e: &Arc<Endpoint>) -> usize {
    set.endpoints()
        .iter()
        .position(|x| Arc::ptr_eq(x, e))
        .expect("picked endpoint is in the set")
}

/// Picks `n` times at `now` (guards dropped at once) and counts picks per endpoint.
pub fn count_picks(set: &EndpointSet, n: usize, now: Instant) -> Vec<usize> {
    let mut counts = vec![0; set.len()];
    for _ in 0..n {
        let e = set.pick(&Pick::at(now)).expect("an endpoint is available");
        counts[index_of(set, &e)] += 1;
    }
    counts
}

/// Asserts each endpoint's share of `counts` is within `rel` (relative) of `expected`.
pub fn assert_shares(counts: &[usize], expected: &[f64], rel: f64) {
    let total: usize = counts.iter().sum();
    let sum: f64 = expected.iter().sum();
    for (i, (&c, &e)) in counts.iter().zip(expected).enumerate() {
        let share = c as f64 / total as f64;
        let want = e / sum;
        assert!(
            (share - want).abs() <= rel * want,
            "endpoint {i}: share {share:.4}, want {want:.4} ± {:.0}% (counts {counts:?})",
            rel * 100.0
        );
    }
}

/// Per-endpoint behaviour in [`simulate`]: latency and outcome of each request.
pub type Behaviour = fn(usize) -> (Duration, Outcome);

/// Runs `requests` arrivals `gap` apart through `set` on a virtual clock from `t0`; each
/// request on endpoint `i` finishes after `behaviour(i)`. Returns picks per endpoint.
pub fn simulate(
    set: &EndpointSet,
    t0: Instant,
    requests: usize,
    gap: Duration,
    behaviour: Behaviour,
) -> Vec<usize> {
    let mut counts = vec![0; set.len()];
    let mut pending: Vec<(Instant, InFlight, Outcome)> = Vec::new();
    for k in 0..requests {
        let now = t0 + gap * k as u32;
        let mut j = 0;
        while j < pending.len() {
            if pending[j].0 <= now {
                let (done, guard, outcome) = pending.swap_remove(j);
                guard.finish(done, outcome);
            } else {
                j += 1;
            }
        }
        let e = set.pick(&Pick::at(now)).expect("an endpoint is available");
        let i = index_of(set, &e);
        counts[i] += 1;
        let (latency, outcome) = behaviour(i);
        pending.push((now + latency, e.start(now), outcome));
    }
    counts
}
