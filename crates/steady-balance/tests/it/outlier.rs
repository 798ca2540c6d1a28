//! Outlier detection: the ejection rules, ejection time, `max_ejection_percent`,
//! readmission, multiplier decay, and the healthy-panic threshold in picks.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use crate::common::{self, addr, eps, ALL};
use proptest::prelude::*;
use steady_balance::{
    seed_rng, Algorithm, BalancerConfig, EjectReason, Endpoint, EndpointSet, FailurePercentage,
    OutlierConfig, OutlierConfigError, OutlierDetector, OutlierEvent, Pick, ReadmitReason,
    RequestResult, SuccessRate,
};

const S: Duration = Duration::from_secs(1);

/// Only the consecutive-failure rule, no jitter, no percent limit.
fn consecutive_only() -> OutlierConfig {
    OutlierConfig {
        consecutive_failures: Some(5),
        success_rate: None,
        failure_percentage: None,
        max_ejection_percent: 100,
        jitter: Duration::ZERO,
        ..OutlierConfig::default()
    }
}

fn detector(n: usize, config: OutlierConfig, t0: Instant) -> (OutlierDetector, Vec<Arc<Endpoint>>) {
    let endpoints = eps(&vec![1; n], t0);
    let d = OutlierDetector::try_new(config, endpoints.clone(), 7).expect("valid config");
    (d, endpoints)
}

/// Records `n` results on endpoint `i` at `now`, returning all events.
fn feed(
    d: &mut OutlierDetector,
    i: usize,
    n: usize,
    now: Instant,
    r: RequestResult,
) -> Vec<OutlierEvent> {
    (0..n).flat_map(|_| d.record(addr(i), now, r)).collect()
}

fn ejections(events: &[OutlierEvent]) -> Vec<(SocketAddr, EjectReason)> {
    events
        .iter()
        .filter_map(|e| match *e {
            OutlierEvent::Ejected { addr, reason, .. } => Some((addr, reason)),
            _ => None,
        })
        .collect()
}

fn ejected_duration(events: &[OutlierEvent]) -> Duration {
    match events.last() {
        Some(OutlierEvent::Ejected { duration, .. }) => *duration,
        other => panic!("expected an ejection, got {other:?}"),
    }
}

#[test]
fn defaults_are_envoys_and_validate() {
    let c = OutlierConfig::default();
    assert_eq!(c.consecutive_failures, Some(5));
    assert_eq!(c.consecutive_gateway_failures, None);
    assert_eq!(c.success_rate, Some(SuccessRate::default()));
    assert_eq!(c.failure_percentage, None);
    assert_eq!(c.interval, 10 * S);
    assert_eq!(c.base_ejection, 30 * S);
    assert_eq!(c.max_ejection, 300 * S);
    assert_eq!(c.max_ejection_percent, 10);
    assert!(!c.always_eject_one);
    assert_eq!(c.panic_threshold, 50);
    assert_eq!(c.validate(), Ok(()));
    let fp = FailurePercentage::default();
    assert_eq!((fp.threshold, fp.min_hosts, fp.request_volume), (85, 5, 50));
    let sr = SuccessRate::default();
    assert_eq!(
        (sr.min_hosts, sr.request_volume, sr.stdev_factor),
        (5, 100, 1.9)
    );
}

#[test]
fn validate_rejects_bad_settings() {
    let ok = OutlierConfig::default();
    let bad = [
        OutlierConfig {
            consecutive_failures: Some(0),
            ..ok
        },
        OutlierConfig {
            consecutive_gateway_failures: Some(0),
            ..ok
        },
        OutlierConfig {
            interval: Duration::ZERO,
            ..ok
        },
        OutlierConfig {
            base_ejection: Duration::ZERO,
            ..ok
        },
        OutlierConfig {
            max_ejection: 10 * S,
            ..ok
        },
        OutlierConfig {
            max_ejection_percent: 101,
            ..ok
        },
        OutlierConfig {
            panic_threshold: 101,
            ..ok
        },
        OutlierConfig {
            success_rate: Some(SuccessRate {
                stdev_factor: f64::NAN,
                ..SuccessRate::default()
            }),
            ..ok
        },
        OutlierConfig {
            success_rate: Some(SuccessRate {
                min_hosts: 0,
                ..SuccessRate::default()
            }),
            ..ok
        },
        OutlierConfig {
            failure_percentage: Some(FailurePercentage {
                threshold: 120,
                ..FailurePercentage::default()
            }),
            ..ok
        },
        OutlierConfig {
            failure_percentage: Some(FailurePercentage {
                request_volume: 0,
                ..FailurePercentage::default()
            }),
            ..ok
        },
    ];
    for c in bad {
        assert!(c.validate().is_err(), "{c:?} should be rejected");
        assert!(OutlierDetector::try_new(c, Vec::new(), 0).is_err());
    }
    assert_eq!(
        OutlierConfig {
            max_ejection: 10 * S,
            ..ok
        }
        .validate(),
        Err(OutlierConfigError::MaxBelowBase {
            base: 30 * S,
            max: 10 * S
        })
    );
}

#[test]
fn status_codes_sort_into_results() {
    assert_eq!(RequestResult::from_status(200), RequestResult::Success);
    assert_eq!(RequestResult::from_status(404), RequestResult::Success);
    assert_eq!(RequestResult::from_status(500), RequestResult::Failure5xx);
    for s in [502, 503, 504] {
        assert_eq!(RequestResult::from_status(s), RequestResult::GatewayFailure);
    }
    assert!(RequestResult::ConnectFailure.is_gateway_failure());
    assert!(!RequestResult::Failure5xx.is_gateway_failure());
}

#[test]
fn consecutive_failures_eject_at_once_and_success_resets_the_run() {
    let t0 = Instant::now();
    let (mut d, endpoints) = detector(4, consecutive_only(), t0);
    assert!(feed(&mut d, 0, 4, t0, RequestResult::Failure5xx).is_empty());
    d.record(addr(0), t0, RequestResult::Success);
    assert!(feed(&mut d, 0, 4, t0, RequestResult::GatewayFailure).is_empty());
    let events = d.record(addr(0), t0, RequestResult::ConnectFailure);
    assert_eq!(
        events,
        vec![OutlierEvent::Ejected {
            addr: addr(0),
            reason: EjectReason::ConsecutiveFailures,
            duration: 30 * S,
            multiplier: 1,
        }]
    );
    assert!(endpoints[0].is_ejected());
    assert!(!endpoints[0].is_available());
    assert!(
        endpoints[0].is_healthy(),
        "ejection leaves the health flag alone"
    );
    assert!(d.is_ejected(addr(0)));
    assert_eq!(d.ejected_until(addr(0)), Some(t0 + 30 * S));
    assert_eq!(d.ejected_count(), 1);
    // Late results of an ejected endpoint do not eject it again.
    assert!(feed(&mut d, 0, 10, t0, RequestResult::Failure5xx).is_empty());
    // Unknown addresses are ignored.
    assert!(feed(&mut d, 99, 10, t0, RequestResult::Failure5xx).is_empty());
}

#[test]
fn consecutive_gateway_failures_count_only_gateway_failures() {
    let t0 = Instant::now();
    let config = OutlierConfig {
        consecutive_failures: None,
        consecutive_gateway_failures: Some(3),
        ..consecutive_only()
    };
    let (mut d, _) = detector(4, config, t0);
    feed(&mut d, 0, 2, t0, RequestResult::GatewayFailure);
    // A plain 5xx ends the gateway run.
    assert!(feed(&mut d, 0, 1, t0, RequestResult::Failure5xx).is_empty());
    assert!(feed(&mut d, 0, 2, t0, RequestResult::ConnectFailure).is_empty());
    let events = d.record(addr(0), t0, RequestResult::GatewayFailure);
    assert_eq!(
        ejections(&events),
        vec![(addr(0), EjectReason::ConsecutiveGatewayFailures)]
    );
    // Plain 5xx never eject under this rule alone.
    assert!(feed(&mut d, 1, 50, t0, RequestResult::Failure5xx).is_empty());
}

#[test]
fn ejection_time_grows_with_each_ejection_and_is_capped() {
    let t0 = Instant::now();
    let config = OutlierConfig {
        base_ejection: 30 * S,
        max_ejection: 100 * S,
        ..consecutive_only()
    };
    let (mut d, _) = detector(2, config, t0);
    let mut now = t0;
    let mut durations = Vec::new();
    for _ in 0..6 {
        let events = feed(&mut d, 0, 5, now, RequestResult::Failure5xx);
        let duration = ejected_duration(&events);
        durations.push(duration);
        // Back exactly when the time passes, found by the next record.
        now += duration;
        let events = d.record(addr(1), now, RequestResult::Success);
        assert_eq!(
            events,
            vec![OutlierEvent::Readmitted {
                addr: addr(0),
                reason: ReadmitReason::Expired
            }]
        );
    }
    assert_eq!(
        durations,
        [30 * S, 60 * S, 90 * S, 100 * S, 100 * S, 100 * S]
    );
    // The multiplier stops at ceil(max / base).
    assert_eq!(d.multiplier(addr(0)), Some(4));
}

#[test]
fn jitter_is_added_after_the_cap_and_repeats_with_the_seed() {
    let t0 = Instant::now();
    let config = OutlierConfig {
        base_ejection: 30 * S,
        max_ejection: 30 * S,
        jitter: S,
        ..consecutive_only()
    };
    let run = || {
        let (mut d, _) = detector(20, config, t0);
        (0..20)
            .map(|i| ejected_duration(&feed(&mut d, i, 5, t0, RequestResult::Failure5xx)))
            .collect::<Vec<_>>()
    };
    let a = run();
    assert_eq!(a, run(), "same seed, same jitter");
    assert!(a.iter().all(|&d| d >= 30 * S && d <= 31 * S), "{a:?}");
    assert!(a.iter().any(|&d| d != a[0]), "jitter varies: {a:?}");
}

#[test]
fn multiplier_decays_by_one_per_interval_not_ejected() {
    let t0 = Instant::now();
    let config = OutlierConfig {
        base_ejection: 10 * S,
        max_ejection: 300 * S,
        ..consecutive_only()
    };
    let (mut d, _) = detector(2, config, t0);
    let mut now = t0;
    for k in 1..=3u32 {
        let events = feed(&mut d, 0, 5, now, RequestResult::Failure5xx);
        assert_eq!(ejected_duration(&events), 10 * S * k);
        now += 10 * S * k;
        // Readmitted at this evaluate: no decay for this interval (as Envoy).
        let events = d.evaluate(now);
        assert!(matches!(
            events[..],
            [OutlierEvent::Readmitted {
                reason: ReadmitReason::Expired,
                ..
            }]
        ));
        assert_eq!(d.multiplier(addr(0)), Some(k));
    }
    // One healthy interval forgives one ejection.
    now += 10 * S;
    d.evaluate(now);
    assert_eq!(d.multiplier(addr(0)), Some(2));
    let events = feed(&mut d, 0, 5, now, RequestResult::Failure5xx);
    assert_eq!(ejected_duration(&events), 30 * S, "multiplier 2 + 1");
    // An ejected endpoint does not decay; afterwards it decays to zero and stays there.
    d.evaluate(now + 10 * S);
    assert_eq!(d.multiplier(addr(0)), Some(3));
    for k in 0..6 {
        d.evaluate(now + 30 * S + 10 * S * k);
    }
    assert_eq!(d.multiplier(addr(0)), Some(0));
    let events = feed(&mut d, 0, 5, now + 100 * S, RequestResult::Failure5xx);
    assert_eq!(ejected_duration(&events), 10 * S, "fully forgiven");
}

#[test]
fn readmit_lets_an_ejected_endpoint_back_early_and_keeps_the_multiplier() {
    let t0 = Instant::now();
    let (mut d, endpoints) = detector(2, consecutive_only(), t0);
    assert_eq!(d.readmit(addr(0)), None, "not ejected");
    assert_eq!(d.readmit(addr(42)), None, "unknown");
    feed(&mut d, 0, 5, t0, RequestResult::GatewayFailure);
    assert!(!endpoints[0].is_available());
    assert_eq!(
        d.readmit(addr(0)),
        Some(OutlierEvent::Readmitted {
            addr: addr(0),
            reason: ReadmitReason::HealthCheck
        })
    );
    assert!(endpoints[0].is_available());
    assert_eq!(d.ejected_count(), 0);
    assert_eq!(d.ejected_until(addr(0)), None);
    // Failing again right away: the second ejection is longer.
    let events = feed(&mut d, 0, 5, t0 + S, RequestResult::GatewayFailure);
    assert_eq!(ejected_duration(&events), 60 * S);
}

#[test]
fn health_flag_and_ejection_are_independent() {
    let t0 = Instant::now();
    let (mut d, endpoints) = detector(2, consecutive_only(), t0);
    let e = &endpoints[0];
    feed(&mut d, 0, 5, t0, RequestResult::Failure5xx);
    e.set_available(true);
    assert!(!e.is_available(), "a health flag does not undo an ejection");
    e.set_available(false);
    d.readmit(addr(0));
    assert!(
        !e.is_available(),
        "readmission does not undo a failed health check"
    );
    e.set_available(true);
    assert!(e.is_available());
}

/// Records `ok` successes and `bad` failures (gateway) on endpoint `i`, interleaved so no
/// run reaches a consecutive threshold.
fn volume(d: &mut OutlierDetector, i: usize, ok: usize, bad: usize, now: Instant) {
    let total = ok + bad;
    for k in 0..total {
        let fail = k * bad / total != (k + 1) * bad / total;
        let r = if fail {
            RequestResult::GatewayFailure
        } else {
            RequestResult::Success
        };
        assert!(ejections(&d.record(addr(i), now, r)).is_empty());
    }
}

fn success_rate_only() -> OutlierConfig {
    OutlierConfig {
        consecutive_failures: None,
        success_rate: Some(SuccessRate::default()),
        failure_percentage: None,
        max_ejection_percent: 100,
        jitter: Duration::ZERO,
        ..OutlierConfig::default()
    }
}

#[test]
fn success_rate_ejects_the_one_bad_endpoint_among_good_ones() {
    let t0 = Instant::now();
    let (mut d, endpoints) = detector(6, success_rate_only(), t0);
    for i in 0..5 {
        volume(&mut d, i, 198, 2, t0);
    }
    volume(&mut d, 5, 100, 100, t0);
    let events = d.evaluate(t0 + 10 * S);
    assert_eq!(
        ejections(&events),
        vec![(addr(5), EjectReason::SuccessRate)]
    );
    assert!(endpoints[5].is_ejected());
    // Counts start afresh each interval: nothing more to eject.
    assert!(d.evaluate(t0 + 20 * S).is_empty());
}

#[test]
fn success_rate_leaves_an_even_fleet_alone() {
    let t0 = Instant::now();
    let (mut d, _) = detector(6, success_rate_only(), t0);
    // Same rates everywhere (stdev 0), then a mild spread within 1.9 stdev.
    for i in 0..6 {
        volume(&mut d, i, 150, 50, t0);
    }
    assert!(d.evaluate(t0 + 10 * S).is_empty());
    for (i, bad) in [10, 12, 14, 16, 18, 20].into_iter().enumerate() {
        volume(&mut d, i, 200 - bad, bad, t0 + 10 * S);
    }
    assert!(d.evaluate(t0 + 20 * S).is_empty());
}

#[test]
fn success_rate_respects_request_volume_and_min_hosts() {
    let t0 = Instant::now();
    // Only 4 endpoints reach 100 requests: below min_hosts 5.
    let (mut d, _) = detector(6, success_rate_only(), t0);
    for i in 0..3 {
        volume(&mut d, i, 200, 0, t0);
    }
    volume(&mut d, 3, 0, 200, t0);
    volume(&mut d, 4, 99, 0, t0);
    volume(&mut d, 5, 99, 0, t0);
    assert!(d.evaluate(t0 + 10 * S).is_empty());

    // Five reach it; the bad one with 99 requests is not judged.
    let (mut d, _) = detector(6, success_rate_only(), t0);
    for i in 0..5 {
        volume(&mut d, i, 100, 0, t0);
    }
    volume(&mut d, 5, 0, 99, t0);
    assert!(d.evaluate(t0 + 10 * S).is_empty());
}

fn failure_percentage_only() -> OutlierConfig {
    OutlierConfig {
        consecutive_failures: None,
        success_rate: None,
        failure_percentage: Some(FailurePercentage::default()),
        max_ejection_percent: 100,
        jitter: Duration::ZERO,
        ..OutlierConfig::default()
    }
}

#[test]
fn failure_percentage_ejects_at_or_above_the_threshold() {
    let t0 = Instant::now();
    let (mut d, _) = detector(7, failure_percentage_only(), t0);
    for i in 0..4 {
        volume(&mut d, i, 50, 0, t0);
    }
    volume(&mut d, 4, 16, 84, t0); // 84%: stays
    volume(&mut d, 5, 15, 85, t0); // 85%: out
    volume(&mut d, 6, 2, 98, t0); // 98%: out, first (worst first)
    let events = d.evaluate(t0 + 10 * S);
    assert_eq!(
        ejections(&events),
        vec![
            (addr(6), EjectReason::FailurePercentage),
            (addr(5), EjectReason::FailurePercentage)
        ]
    );
}

#[test]
fn failure_percentage_respects_request_volume_and_min_hosts() {
    let t0 = Instant::now();
    // Four endpoints with 50 requests: below min_hosts 5.
    let (mut d, _) = detector(5, failure_percentage_only(), t0);
    for i in 0..3 {
        volume(&mut d, i, 50, 0, t0);
    }
    volume(&mut d, 3, 0, 50, t0);
    volume(&mut d, 4, 49, 0, t0);
    assert!(d.evaluate(t0 + 10 * S).is_empty());

    // Five reach it, but the failing one has only 49 requests.
    let (mut d, _) = detector(6, failure_percentage_only(), t0);
    for i in 0..5 {
        volume(&mut d, i, 50, 0, t0);
    }
    volume(&mut d, 5, 0, 49, t0);
    assert!(d.evaluate(t0 + 10 * S).is_empty());
}

#[test]
fn both_rules_flagging_one_endpoint_eject_it_once() {
    let t0 = Instant::now();
    let config = OutlierConfig {
        success_rate: Some(SuccessRate::default()),
        ..failure_percentage_only()
    };
    let (mut d, _) = detector(6, config, t0);
    for i in 0..5 {
        volume(&mut d, i, 200, 0, t0);
    }
    volume(&mut d, 5, 10, 190, t0);
    let events = d.evaluate(t0 + 10 * S);
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(
        ejections(&events),
        vec![(addr(5), EjectReason::SuccessRate)]
    );
}

/// Fails every endpoint 5 times in a row and returns how many got ejected.
fn eject_all(n: usize, percent: u32, always_eject_one: bool) -> usize {
    let t0 = Instant::now();
    let config = OutlierConfig {
        max_ejection_percent: percent,
        always_eject_one,
        ..consecutive_only()
    };
    let (mut d, endpoints) = detector(n, config, t0);
    for i in 0..n {
        feed(&mut d, i, 5, t0, RequestResult::Failure5xx);
    }
    let flagged = endpoints.iter().filter(|e| e.is_ejected()).count();
    assert_eq!(flagged, d.ejected_count());
    flagged
}

#[test]
fn max_ejection_percent_is_exact_even_for_the_first_ejection() {
    // (ejected + 1) × 100 <= percent × total.
    assert_eq!(eject_all(3, 50, false), 1);
    assert_eq!(eject_all(3, 10, false), 0, "10% of 3 rounds to nobody");
    assert_eq!(eject_all(3, 33, false), 0, "one of 3 is 33.3% > 33%");
    assert_eq!(eject_all(3, 34, false), 1);
    assert_eq!(eject_all(3, 67, false), 2);
    assert_eq!(eject_all(3, 100, false), 3);
    assert_eq!(eject_all(10, 10, false), 1);
    assert_eq!(eject_all(10, 25, false), 2);
    assert_eq!(eject_all(1, 50, false), 0);
    assert_eq!(eject_all(4, 0, false), 0);
    // The opt-in allows one ejection when the percentage rounds to nobody, never more.
    assert_eq!(eject_all(3, 10, true), 1);
    assert_eq!(eject_all(1, 0, true), 1);
    assert_eq!(eject_all(10, 25, true), 2);
}

#[test]
fn blocked_ejection_is_reported_and_happens_once_there_is_room() {
    let t0 = Instant::now();
    let config = OutlierConfig {
        max_ejection_percent: 50,
        ..consecutive_only()
    };
    let (mut d, _) = detector(3, config, t0);
    feed(&mut d, 0, 5, t0, RequestResult::Failure5xx);
    let events = feed(&mut d, 1, 5, t0, RequestResult::Failure5xx);
    assert_eq!(
        events,
        vec![OutlierEvent::EjectionSkipped {
            addr: addr(1),
            reason: EjectReason::ConsecutiveFailures
        }]
    );
    d.readmit(addr(0));
    // Endpoint 1 is still failing: its next failure ejects it.
    let events = d.record(addr(1), t0 + S, RequestResult::Failure5xx);
    assert_eq!(
        ejections(&events),
        vec![(addr(1), EjectReason::ConsecutiveFailures)]
    );
}

#[test]
fn max_ejection_percent_limits_interval_rules_to_the_worst() {
    let t0 = Instant::now();
    let config = OutlierConfig {
        max_ejection_percent: 10,
        ..failure_percentage_only()
    };
    let (mut d, _) = detector(10, config, t0);
    for i in 0..7 {
        volume(&mut d, i, 50, 0, t0);
    }
    volume(&mut d, 7, 5, 95, t0);
    volume(&mut d, 8, 1, 99, t0);
    volume(&mut d, 9, 10, 90, t0);
    let events = d.evaluate(t0 + 10 * S);
    assert_eq!(
        ejections(&events),
        vec![(addr(8), EjectReason::FailurePercentage)]
    );
    let skipped = events
        .iter()
        .filter(|e| matches!(e, OutlierEvent::EjectionSkipped { .. }))
        .count();
    assert_eq!(skipped, 2);
}

#[test]
fn set_endpoints_keeps_state_of_endpoints_that_stay() {
    let t0 = Instant::now();
    let (mut d, endpoints) = detector(3, consecutive_only(), t0);
    feed(&mut d, 0, 5, t0, RequestResult::Failure5xx);
    feed(&mut d, 1, 5, t0, RequestResult::Failure5xx);
    assert_eq!(d.ejected_count(), 2);
    // Endpoint 0 stays (as a new Arc), 1 leaves, 3 joins.
    let fresh0 = common::ep(0, 1, t0);
    let joined = common::ep(3, 1, t0);
    d.set_endpoints(vec![
        Arc::clone(&fresh0),
        Arc::clone(&endpoints[2]),
        Arc::clone(&joined),
    ]);
    assert_eq!(d.len(), 3);
    assert_eq!(d.ejected_count(), 1);
    assert!(d.is_ejected(addr(0)));
    assert!(fresh0.is_ejected());
    assert!(!endpoints[0].is_ejected(), "the replaced Arc is let go");
    assert!(!endpoints[1].is_ejected(), "a removed endpoint is let go");
    assert!(!d.is_ejected(addr(1)));
    let events = d.evaluate(t0 + 30 * S);
    assert_eq!(
        events,
        vec![OutlierEvent::Readmitted {
            addr: addr(0),
            reason: ReadmitReason::Expired
        }]
    );
    assert!(fresh0.is_available());
}

#[test]
fn ejected_endpoints_are_not_picked() {
    let t0 = Instant::now();
    for algorithm in ALL {
        let endpoints = eps(&[1; 4], t0);
        let mut d =
            OutlierDetector::try_new(consecutive_only(), endpoints.clone(), 1).expect("valid");
        let s = EndpointSet::new(endpoints, &BalancerConfig::new(algorithm));
        feed(&mut d, 2, 5, t0, RequestResult::Failure5xx);
        for k in 0..200u64 {
            let pick = Pick::at(t0).with_hash(k.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let e = s.pick(&pick).expect("others are available");
            assert_ne!(
                e.addr(),
                addr(2),
                "{algorithm:?} picked an ejected endpoint"
            );
        }
    }
}

fn panic_set(algorithm: Algorithm, n: usize, down: usize, threshold: Option<u32>) -> EndpointSet {
    let t0 = Instant::now();
    let endpoints = eps(&vec![1; n], t0);
    for e in &endpoints[..down] {
        e.set_ejected(true);
    }
    EndpointSet::new(endpoints, &BalancerConfig::new(algorithm)).with_panic_threshold(threshold)
}

#[test]
fn panic_threshold_decides_when_picks_ignore_availability() {
    // Panic iff available × 100 < threshold × total.
    assert!(!panic_set(Algorithm::RoundRobin, 4, 2, Some(50)).in_panic());
    assert!(panic_set(Algorithm::RoundRobin, 4, 3, Some(50)).in_panic());
    assert!(panic_set(Algorithm::RoundRobin, 4, 4, Some(50)).in_panic());
    assert!(!panic_set(Algorithm::RoundRobin, 4, 4, Some(0)).in_panic());
    assert!(!panic_set(Algorithm::RoundRobin, 4, 4, None).in_panic());
    assert!(panic_set(Algorithm::RoundRobin, 4, 1, Some(100)).in_panic());
    assert!(panic_set(Algorithm::RoundRobin, 4, 1, Some(250)).in_panic());
    assert_eq!(
        panic_set(Algorithm::RoundRobin, 4, 1, Some(250)).panic_threshold(),
        Some(100)
    );
    assert!(!panic_set(Algorithm::RoundRobin, 0, 0, Some(50)).in_panic());
    assert_eq!(
        panic_set(Algorithm::RoundRobin, 4, 0, None).panic_threshold(),
        None,
        "off by default"
    );
}

#[test]
fn panic_mode_balances_over_all_endpoints() {
    seed_rng(5);
    let now = Instant::now();
    for algorithm in ALL {
        // 3 of 4 out, threshold 50%: all four get traffic.
        let s = panic_set(algorithm, 4, 3, Some(50));
        let mut seen = [0usize; 4];
        for k in 0..400u64 {
            let pick = Pick::at(now).with_hash(k.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let e = s.pick(&pick).expect("panic mode always picks");
            seen[common::index_of(&s, &e)] += 1;
        }
        assert!(seen.iter().all(|&c| c > 0), "{algorithm:?}: {seen:?}");

        // All out: panic still picks, where the default gives None.
        let s = panic_set(algorithm, 4, 4, Some(50));
        assert!(s.pick(&Pick::at(now)).is_some(), "{algorithm:?}");
        let s = panic_set(algorithm, 4, 4, None);
        assert!(s.pick(&Pick::at(now)).is_none(), "{algorithm:?}");

        // Panic ignores ejections, not active health checks: endpoints whose probes
        // fail stay out, and with all of them down nothing is picked.
        let s = panic_set(algorithm, 4, 3, Some(50));
        s.endpoints()[0].set_available(false);
        for _ in 0..50 {
            let e = s.pick(&Pick::at(now)).expect("three ejected but healthy");
            assert_ne!(e.addr(), s.endpoints()[0].addr(), "{algorithm:?}");
        }
        for e in s.endpoints() {
            e.set_available(false);
        }
        assert!(s.pick(&Pick::at(now)).is_none(), "{algorithm:?}");

        // Above the threshold the unavailable endpoint is skipped as usual.
        let s = panic_set(algorithm, 4, 1, Some(50));
        for _ in 0..200 {
            let e = s.pick(&Pick::at(now)).expect("available");
            assert!(e.is_available(), "{algorithm:?}");
        }
    }
}

#[test]
fn panic_mode_still_prefers_not_avoided_endpoints() {
    seed_rng(9);
    let now = Instant::now();
    for algorithm in ALL {
        let s = panic_set(algorithm, 3, 3, Some(50));
        let avoid = [addr(0), addr(1)];
        for k in 0..100u64 {
            let pick = Pick::at(now).with_hash(k).avoiding(&avoid);
            let e = s.pick(&pick).expect("panic mode always picks");
            assert_eq!(e.addr(), addr(2), "{algorithm:?}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever the outcomes and timing, ejected endpoints stay within
    /// `max_ejection_percent` of the fleet, and the endpoints' flags match the detector.
    #[test]
    fn ejected_fraction_never_exceeds_max_ejection_percent(
        n in 1usize..12,
        percent in 0u32..=100,
        seed in any::<u64>(),
        steps in prop::collection::vec((0usize..12, 0u8..6, 0u64..4_000), 1..400),
    ) {
        let t0 = Instant::now();
        let config = OutlierConfig {
            consecutive_failures: Some(3),
            consecutive_gateway_failures: Some(2),
            success_rate: Some(SuccessRate { min_hosts: 2, request_volume: 5, stdev_factor: 1.0 }),
            failure_percentage: Some(FailurePercentage { threshold: 50, min_hosts: 2, request_volume: 5 }),
            interval: S,
            base_ejection: 2 * S,
            max_ejection: 10 * S,
            max_ejection_percent: percent,
            always_eject_one: false,
            jitter: S,
            panic_threshold: 50,
        };
        let endpoints = eps(&vec![1; n], t0);
        let mut d = OutlierDetector::try_new(config, endpoints.clone(), seed).unwrap();
        let mut now = t0;
        for (i, kind, dt_ms) in steps {
            now += Duration::from_millis(dt_ms);
            match kind {
                0 => { d.evaluate(now); }
                1 => { d.readmit(addr(i % n)); }
                _ => {
                    let r = [
                        RequestResult::Success,
                        RequestResult::Failure5xx,
                        RequestResult::GatewayFailure,
                        RequestResult::ConnectFailure,
                    ][usize::from(kind - 2)];
                    d.record(addr(i % n), now, r);
                }
            }
            let flagged = endpoints.iter().filter(|e| e.is_ejected()).count();
            prop_assert_eq!(flagged, d.ejected_count());
            prop_assert!(
                flagged * 100 <= percent as usize * n,
                "{} of {} ejected with max {}%", flagged, n, percent
            );
        }
    }
}
