//! The "what must be shown": alert scenarios on a 99.9% SLO with an injected
//! clock. Traffic is 100 requests a second, recorded every 10 s as one count
//! (the gateway records every second; the buckets are 10 s wide either way).

use std::time::Duration;

use steady_slo::{
    AlertEvent, AlertState, BurnRateRule, Severity, Slo, SloConfig, StateError, Transition,
};

const T0: u64 = 1_700_000_000;
const MIN: u64 = 60;
const HOUR: u64 = 3600;
const DAY: u64 = 86_400;
/// Requests per 10 s step.
const PER_STEP: u64 = 1000;

fn slo() -> Slo {
    Slo::try_new(SloConfig::new("checkout", 0.999)).unwrap()
}

/// Records `bad` errors per 1000 requests every 10 s over `[from, to)` (stamped at the
/// end of each step) and evaluates every `eval_every` seconds; returns the events.
fn run(slo: &mut Slo, from: u64, to: u64, bad: u64, eval_every: u64) -> Vec<AlertEvent> {
    let mut events = Vec::new();
    let mut t = from + 10;
    while t <= to {
        slo.record(t, PER_STEP - bad, PER_STEP);
        if (t - from).is_multiple_of(eval_every) {
            events.extend(slo.evaluate(t));
        }
        t += 10;
    }
    events
}

fn fired(events: &[AlertEvent], severity: Severity) -> Vec<&AlertEvent> {
    events
        .iter()
        .filter(|e| e.severity == severity && e.transition == Transition::Firing)
        .collect()
}

/// Every alert that fired fired once and resolved once, in that order.
fn assert_one_episode_each(events: &[AlertEvent]) {
    let mut names: Vec<&str> = events.iter().map(|e| e.alert.as_str()).collect();
    names.sort();
    names.dedup();
    for name in names {
        let seq: Vec<Transition> = events
            .iter()
            .filter(|e| e.alert == name)
            .map(|e| e.transition)
            .collect();
        assert_eq!(seq, [Transition::Firing, Transition::Resolved], "{name}");
    }
}

#[test]
fn two_percent_errors_page_within_minutes_from_a_cold_start() {
    let mut s = slo();
    let events = run(&mut s, T0, T0 + HOUR, 20, 10);
    let pages = fired(&events, Severity::Page);
    let first = pages.iter().map(|e| e.at).min().expect("paged");
    // Every window holds only the failing hour, so the 1h/5m rule (burn 20 > 14.4)
    // fires at the first evaluation with at least `min_events` events.
    assert!(first - T0 <= 5 * MIN, "first page after {}s", first - T0);
    assert_eq!(first - T0, 10);
    let page = pages.iter().find(|e| e.alert == "page-1h-5m").unwrap();
    match &page.signal {
        steady_slo::Signal::BurnRate { long, short, .. } => {
            assert!((long.burn_rate - 20.0).abs() < 1e-6);
            assert!((short.burn_rate - 20.0).abs() < 1e-6);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(s.worst(), Some(Severity::Page));
}

#[test]
fn two_percent_errors_after_a_healthy_day_page_when_the_hour_burns_past_14_4() {
    let mut s = slo();
    assert!(run(&mut s, T0, T0 + DAY, 0, 10).is_empty());
    let start = T0 + DAY;
    let events = run(&mut s, start, start + HOUR, 20, 10);
    let first = fired(&events, Severity::Page)
        .iter()
        .map(|e| e.at)
        .min()
        .expect("paged");
    // With a healthy hour before, the 1h error rate reaches 1.44% after
    // 0.0144 / 0.02 × 60 min = 43.2 min (the workbook's detection time for this rule);
    // the window's old edge may hold up to 10 s more of healthy traffic.
    let after = first - start;
    eprintln!("2% after a healthy day: first page after {after}s");
    assert!(
        (43 * MIN..=44 * MIN).contains(&after),
        "first page after {after}s"
    );
}

#[test]
fn recovery_resolves_each_alert_exactly_once() {
    let mut s = slo();
    let mut events = run(&mut s, T0, T0 + HOUR, 20, 10);
    events.extend(run(&mut s, T0 + HOUR, T0 + 9 * HOUR, 0, 10));
    assert!(!fired(&events, Severity::Page).is_empty());
    assert_one_episode_each(&events);
    let resolved_page = events
        .iter()
        .find(|e| e.alert == "page-1h-5m" && e.transition == Transition::Resolved)
        .unwrap();
    eprintln!(
        "2% for an hour: page-1h-5m resolved {}s after recovery",
        resolved_page.at - (T0 + HOUR)
    );
    // The 5m window drops under 14.4 once 84 s of healthy traffic is in it.
    assert!(resolved_page.at - (T0 + HOUR) <= 2 * MIN);
    assert_eq!(resolved_page.since, T0 + 10);
    assert_eq!(s.worst(), None);
    assert!(s.evaluate(T0 + 9 * HOUR + 10).is_empty());
}

#[test]
fn one_tenth_percent_errors_for_days_never_alert() {
    let mut s = slo();
    // 0.1% is exactly the budget (burn 1.0); no rule's factor is below 1.
    let events = run(&mut s, T0, T0 + 4 * DAY, 1, 60);
    assert!(events.is_empty(), "{events:?}");
    let burn = s.burn_rate(T0 + 4 * DAY, 3 * DAY).unwrap();
    assert!((burn - 1.0).abs() < 1e-9);
}

#[test]
fn one_tenth_percent_random_errors_never_page() {
    // Errors drawn at random (0.1% per request, seeded) rather than evenly spread:
    // windows then hover around burn 1, so the 3d/6h ticket (factor 1) may fire on
    // noise, but nothing comes near a page.
    let mut s = slo();
    let mut rng: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut events = Vec::new();
    for t in (T0 + 10..=T0 + 2 * DAY).step_by(10) {
        let mut bad = 0;
        for _ in 0..PER_STEP {
            rng = rng
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            bad += u64::from((rng >> 33).is_multiple_of(1000));
        }
        s.record(t, PER_STEP - bad, PER_STEP);
        if (t - T0).is_multiple_of(60) {
            events.extend(s.evaluate(t));
        }
    }
    assert!(fired(&events, Severity::Page).is_empty(), "{events:?}");
    eprintln!(
        "0.1% random errors: {} ticket firings in 2 days",
        fired(&events, Severity::Ticket).len()
    );
    let burn = s.burn_rate(T0 + 2 * DAY, DAY).unwrap();
    assert!((0.8..1.2).contains(&burn), "burn {burn}");
}

#[test]
fn keep_firing_for_stops_a_ticket_flapping_at_burn_one() {
    // The same random 0.1% errors: at burn ~1 the 3d/6h ticket fires and resolves
    // on noise; keeping it firing for 6 h after it clears turns that into few episodes.
    let count = |keep: u64| {
        let mut config = SloConfig::new("checkout", 0.999);
        for rule in &mut config.rules {
            rule.keep_firing_for = Duration::from_secs(keep);
        }
        let mut s = Slo::try_new(config).unwrap();
        let mut rng: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut firings = 0;
        for t in (T0 + 10..=T0 + 2 * DAY).step_by(10) {
            let mut bad = 0;
            for _ in 0..PER_STEP {
                rng = rng
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                bad += u64::from((rng >> 33).is_multiple_of(1000));
            }
            s.record(t, PER_STEP - bad, PER_STEP);
            if (t - T0).is_multiple_of(60) {
                firings += fired(&s.evaluate(t), Severity::Ticket).len();
            }
        }
        firings
    };
    let (flapping, kept) = (count(0), count(6 * HOUR));
    eprintln!("0.1% random errors: {flapping} ticket firings, {kept} with keep_firing_for 6h");
    assert!(kept * 4 <= flapping, "{kept} vs {flapping}");
}

#[test]
fn four_tenths_percent_for_a_day_opens_a_ticket_and_never_pages() {
    let mut s = slo();
    assert!(run(&mut s, T0, T0 + 3 * DAY, 0, 60).is_empty());
    let start = T0 + 3 * DAY;
    let events = run(&mut s, start, start + DAY, 4, 60);
    assert!(fired(&events, Severity::Page).is_empty());
    let tickets = fired(&events, Severity::Ticket);
    let first = tickets.iter().map(|e| e.at).min().expect("ticket");
    // Burn 4: the 1d window passes 3× after 18 h, and the 3d window passes 1× after
    // 18 h too (0.4% × 18 h / 72 h = 0.1%).
    let after = first - start;
    eprintln!("0.4% after 3 healthy days: first ticket after {after}s");
    assert!(
        (18 * HOUR..=18 * HOUR + 10 * MIN).contains(&after),
        "after {after}s"
    );
    assert!(tickets.iter().all(|e| e.alert.starts_with("ticket-")));
    assert_eq!(s.worst(), Some(Severity::Ticket));
}

#[test]
fn min_events_keep_a_single_failure_on_an_idle_route_quiet() {
    let mut s = slo();
    s.record_event(T0, false);
    assert!(s.burn_rate(T0, HOUR).unwrap() > 14.4);
    for t in (T0..T0 + 2 * HOUR).step_by(10) {
        let events = s.evaluate(t);
        assert!(events.iter().all(|e| e.alert == "no-traffic"), "{events:?}");
    }
    // The same failures with enough events do page.
    for t in T0 + 2 * HOUR..T0 + 2 * HOUR + 100 {
        s.record_event(t, false);
    }
    assert!(!fired(&s.evaluate(T0 + 2 * HOUR + 100), Severity::Page).is_empty());
}

#[test]
fn a_route_that_stops_receiving_traffic_raises_no_traffic_once() {
    let mut s = slo();
    // Never had traffic: nothing to miss.
    assert!(s.evaluate(T0 + DAY).is_empty());
    let start = T0 + DAY;
    assert!(run(&mut s, start, start + HOUR, 0, 10).is_empty());
    let last = start + HOUR;
    let mut events = Vec::new();
    for t in (last + 10..=last + 30 * MIN).step_by(10) {
        events.extend(s.evaluate(t));
    }
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].alert, "no-traffic");
    assert_eq!(events[0].severity, Severity::Ticket);
    assert_eq!(events[0].transition, Transition::Firing);
    assert_eq!(events[0].at - last, 10 * MIN);
    // Traffic comes back: resolved once.
    events.extend(run(&mut s, last + 30 * MIN, last + 40 * MIN, 0, 10));
    assert_one_episode_each(&events);
}

#[test]
fn pending_for_duration_delays_firing_and_ignores_short_blips() {
    let mut config = SloConfig::new("checkout", 0.999);
    config.rules = vec![BurnRateRule {
        for_duration: Duration::from_secs(10 * MIN),
        ..BurnRateRule::new(
            Severity::Page,
            Duration::from_secs(HOUR),
            Duration::from_secs(5 * MIN),
            14.4,
        )
    }];
    let mut s = Slo::try_new(config).unwrap();
    let events = run(&mut s, T0, T0 + HOUR, 20, 10);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].at - T0, 10 + 10 * MIN);

    // A 1-minute outage after a healthy hour: the 5m window burns above 14.4 for
    // about 5 minutes, less than the 10 required, so the alert is pending, never firing.
    let mut s = Slo::try_new(s.config().clone()).unwrap();
    run(&mut s, T0, T0 + HOUR, 0, 10);
    let mut events = run(&mut s, T0 + HOUR, T0 + HOUR + MIN, 1000, 10);
    assert!(matches!(s.alerts()[0].2, AlertState::Pending { .. }));
    events.extend(run(&mut s, T0 + HOUR + MIN, T0 + 2 * HOUR, 0, 10));
    assert!(events.is_empty(), "{events:?}");
}

#[test]
fn bucket_memory_is_constant_over_sixty_days() {
    let mut s = slo();
    s.record(T0, 1, 1);
    let buckets = s.bucket_count();
    let mut sizes = Vec::new();
    for day in 0..60 {
        for t in (T0 + day * DAY..T0 + (day + 1) * DAY).step_by(60) {
            s.record(t, 5_999 + t % 2, 6_000);
        }
        if day >= 35 {
            sizes.push(s.save().len());
        }
        assert_eq!(s.bucket_count(), buckets);
    }
    assert_eq!(buckets, 2161 + 865 + 721);
    // Once every ring is full the saved state stops growing (give or take digits).
    let (lo, hi) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
    assert!(hi - lo < hi / 50, "saved sizes {lo}..{hi}");
}

#[test]
fn save_and_load_round_trip_buckets_and_alert_states() {
    let mut s = slo();
    let events = run(&mut s, T0, T0 + HOUR, 20, 10);
    assert!(!events.is_empty());
    let now = T0 + HOUR;
    let bytes = s.save();
    let mut back = Slo::load(s.config().clone(), &bytes).unwrap();
    for w in [
        5 * MIN,
        30 * MIN,
        HOUR,
        2 * HOUR,
        6 * HOUR,
        DAY,
        3 * DAY,
        30 * DAY,
    ] {
        assert_eq!(back.counts(now, w), s.counts(now, w), "window {w}");
    }
    assert_eq!(back.alerts(), s.alerts());
    assert_eq!(back.budget_remaining(now), s.budget_remaining(now));
    // Still firing after the restart: no second Firing event.
    let next = back.evaluate(now + 10);
    assert!(next.iter().all(|e| e.transition == Transition::Resolved));
    assert_eq!(next, s.evaluate(now + 10));
}

#[test]
fn corrupt_or_foreign_state_is_refused_with_a_clear_error() {
    let mut s = slo();
    run(&mut s, T0, T0 + HOUR, 20, 10);
    let good = s.save();
    let config = s.config().clone();
    let load = |bytes: &[u8]| Slo::load(config.clone(), bytes).unwrap_err();

    assert!(matches!(load(b"not json"), StateError::Corrupt(_)));
    assert!(matches!(
        load(&good[..good.len() / 2]),
        StateError::Corrupt(_)
    ));
    let text = String::from_utf8(good.clone()).unwrap();
    let v2 = text.replacen("\"version\":1", "\"version\":2", 1);
    assert_eq!(load(v2.as_bytes()), StateError::Version(2));
    let other = Slo::try_new(SloConfig::new("search", 0.999))
        .unwrap()
        .save();
    assert_eq!(load(&other), StateError::OtherSlo("search".into()));
    let width = text.replacen("\"width\":10,", "\"width\":7,", 1);
    assert!(matches!(load(width.as_bytes()), StateError::Corrupt(_)));
    let counts = text.replacen("\"good\":980", "\"good\":1980", 1);
    let err = load(counts.as_bytes());
    assert!(err.to_string().contains("more good events"), "{err}");
}

#[test]
fn a_changed_period_keeps_what_fits() {
    let mut s = slo();
    run(&mut s, T0, T0 + HOUR, 20, 10);
    let mut config = s.config().clone();
    config.period = Duration::from_secs(7 * DAY);
    let back = Slo::load(config, &s.save()).unwrap();
    assert_eq!(back.counts(T0 + HOUR, HOUR), s.counts(T0 + HOUR, HOUR));
    assert_eq!(back.availability(T0 + HOUR), s.availability(T0 + HOUR));
}

#[test]
fn budget_and_availability_report_the_period() {
    let mut s = slo();
    assert_eq!(s.budget_remaining(T0), 1.0);
    assert_eq!(s.availability(T0), None);
    // 0.05% errors: half the budget spent.
    s.record(T0, 19_990, 20_000);
    assert!((s.budget_remaining(T0) - 0.5).abs() < 1e-9);
    assert!((s.availability(T0).unwrap() - 0.9995).abs() < 1e-12);
    // The month ends and the hour leaves the period.
    assert_eq!(s.budget_remaining(T0 + 31 * DAY), 1.0);
}

#[test]
fn status_shows_every_window_and_alert() {
    let mut s = slo();
    run(&mut s, T0, T0 + HOUR, 20, 10);
    let status = s.status(T0 + HOUR);
    let windows: Vec<u64> = status.windows.iter().map(|w| w.window_secs).collect();
    assert_eq!(
        windows,
        [
            5 * MIN,
            30 * MIN,
            HOUR,
            2 * HOUR,
            6 * HOUR,
            DAY,
            3 * DAY,
            30 * DAY
        ]
    );
    assert!(status
        .windows
        .iter()
        .all(|w| (w.burn_rate - 20.0).abs() < 1e-6));
    assert_eq!(status.alerts.len(), 5);
    let mut quiet = SloConfig::new("checkout", 0.999);
    quiet.no_traffic = None;
    assert_eq!(Slo::try_new(quiet).unwrap().status(T0).alerts.len(), 4);
    assert_eq!(status.worst, Some(Severity::Page));
    assert!((status.availability.unwrap() - 0.98).abs() < 1e-9);
    // It serializes for the admin API.
    let json = serde_json::to_string(&status).unwrap();
    assert!(json.contains("\"state\":\"firing\""), "{json}");
}

mod never_panics {
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn loading_arbitrary_bytes_errors_or_succeeds(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let config = steady_slo::SloConfig::new("checkout", 0.999);
            let _ = steady_slo::Slo::load(config, &bytes);
        }
    }
}

mod dedup {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// Whatever the traffic, each alert alternates Firing, Resolved, Firing, ...
        /// starting with Firing, and a resolve names the episode it ends.
        #[test]
        fn alerts_alternate_firing_and_resolved(
            phases in proptest::collection::vec((0u64..=1000, 0u64..=1000, 1u64..=90), 1..8),
        ) {
            let mut config = SloConfig::new("checkout", 0.999);
            config.rules[0].for_duration = Duration::from_secs(MIN);
            let mut s = Slo::try_new(config).unwrap();
            let mut t = T0;
            let mut events = Vec::new();
            // Each phase: `minutes` of `total` requests per 10 s with `bad` of them bad
            // (total 0 is a silent phase).
            for (total, bad, minutes) in phases {
                for _ in 0..minutes * 6 {
                    t += 10;
                    s.record(t, total - bad.min(total), total);
                    events.extend(s.evaluate(t));
                }
            }
            let mut open: std::collections::HashMap<String, u64> = Default::default();
            for e in &events {
                match e.transition {
                    Transition::Firing => {
                        prop_assert!(open.insert(e.alert.clone(), e.since).is_none(), "{e:?}");
                    }
                    Transition::Resolved => {
                        prop_assert_eq!(open.remove(&e.alert), Some(e.since), "{:?}", e);
                    }
                }
            }
            for (name, _) in open {
                let state = s.alerts().into_iter().find(|a| a.0 == name).unwrap().2;
                prop_assert!(state.is_firing());
            }
        }
    }
}
