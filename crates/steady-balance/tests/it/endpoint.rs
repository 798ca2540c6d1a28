//! Endpoint counters, the in-flight guard and the peak-EWMA estimate.

use std::time::{Duration, Instant};

use crate::common::ep;
use proptest::prelude::*;
use steady_balance::{
    endpoint::{DEFAULT_RTT, FAILURE_PENALTY},
    Outcome,
};

#[test]
fn guard_counts_up_and_down_on_finish_and_drop() {
    let t0 = Instant::now();
    let e = ep(0, 1, t0);
    let a = e.start(t0);
    let b = e.start(t0);
    assert_eq!(e.in_flight(), 2);
    assert!(std::sync::Arc::ptr_eq(a.endpoint(), &e));
    a.finish(t0 + Duration::from_millis(5), Outcome::Success);
    assert_eq!(e.in_flight(), 1);
    drop(b);
    assert_eq!(e.in_flight(), 0);
}

#[test]
fn dropped_guard_records_no_latency() {
    let t0 = Instant::now();
    let e = ep(0, 1, t0);
    drop(e.start(t0));
    assert!(!e.has_latency_sample());
    assert_eq!(e.ewma_latency(t0), DEFAULT_RTT);
    e.start(t0)
        .finish(t0 + Duration::from_millis(7), Outcome::Success);
    assert!(e.has_latency_sample());
    assert_eq!(
        e.ewma_latency(t0 + Duration::from_millis(7)),
        Duration::from_millis(7)
    );
}

#[test]
fn defaults_and_availability() {
    let t0 = Instant::now();
    let e = ep(3, 0, t0);
    assert_eq!(e.weight(), 1, "weight 0 counts as 1");
    assert_eq!(e.name(), "backend-3:9000");
    assert_eq!(e.added_at(), t0);
    assert!(e.is_available());
    e.set_available(false);
    assert!(!e.is_available());
    e.set_available(true);
    assert!(e.is_available());
}

#[test]
fn ewma_is_peak_sensitive_and_decays() {
    let t0 = Instant::now();
    let ms = Duration::from_millis;
    let e = ep(0, 1, t0);
    e.record(t0, ms(10), Outcome::Success);
    e.record(t0 + ms(1), ms(100), Outcome::Success);
    // A peak replaces the estimate at once.
    assert_eq!(e.ewma_latency(t0 + ms(1)), ms(100));
    // A fast sample right after barely moves it (EWMA over time, tau = 10 s).
    e.record(t0 + ms(2), ms(10), Outcome::Success);
    let est = e.ewma_latency(t0 + ms(2)).as_secs_f64();
    assert!(est > 0.099 && est <= 0.100, "{est}");
    // Idle, it decays towards zero: 1/e after 10 s, within 1%.
    let later = e
        .ewma_latency(t0 + ms(2) + Duration::from_secs(10))
        .as_secs_f64();
    let want = est / std::f64::consts::E;
    assert!((later - want).abs() < 0.01 * want, "{later} vs {want}");
}

#[test]
fn fast_failure_records_a_penalty() {
    let t0 = Instant::now();
    let e = ep(0, 1, t0);
    e.start(t0)
        .finish(t0 + Duration::from_micros(50), Outcome::Failure);
    assert!(e.ewma_latency(t0 + Duration::from_micros(50)) >= FAILURE_PENALTY);
    // Several times the estimate when the upstream is slow anyway.
    let s = ep(1, 1, t0);
    s.record(t0, Duration::from_secs(2), Outcome::Success);
    s.record(t0, Duration::from_millis(1), Outcome::Failure);
    assert!(s.ewma_latency(t0) >= Duration::from_secs(6));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// In-flight always equals the number of live guards.
    #[test]
    fn in_flight_matches_live_guards(ops in prop::collection::vec(0u8..3, 0..200)) {
        let t0 = Instant::now();
        let e = ep(0, 1, t0);
        let mut guards = Vec::new();
        for op in ops {
            match op {
                0 => guards.push(e.start(t0)),
                1 => if let Some(g) = guards.pop() { g.finish(t0, Outcome::Success) },
                _ => { guards.pop(); }
            }
            prop_assert_eq!(e.in_flight() as usize, guards.len());
        }
    }
}
