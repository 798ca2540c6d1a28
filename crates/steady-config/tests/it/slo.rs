//! The SLO sections: `slos`, `alerts`, `notifiers` and `slo_state`.

use crate::common;

use std::time::Duration;

use crate::common::has;
use steady_config::slo::{NotifierKind, Severity, Sli};
use steady_config::{parse, StatusMatch};

const BASE: &str = "listeners: [{name: web, bind: 127.0.0.1:8080}]\n\
upstreams: [{name: app, endpoints: [{address: 127.0.0.1:9001}]}]\n\
routes: [{name: checkout, listener: web, upstream: app}]\n";

fn errors(yaml: &str) -> Vec<String> {
    common::errors_raw(&format!("{BASE}{yaml}"))
}

#[test]
fn the_issue_example_parses_as_written() {
    let yaml = format!(
        "{BASE}{}",
        r#"
slos:
  - name: checkout-availability
    routes: [checkout]
    objective: 99.9%
    period: 30d
    sli: availability          # errors: 5xx and steady's own failures; configurable (e.g. count 429 or not)
  - name: checkout-latency
    routes: [checkout]
    objective: 99%
    period: 30d
    sli: {latency_below: 300ms}
alerts:
  page:   {severity: critical, notify: [pagerduty]}
  ticket: {severity: warning,  notify: [alertmanager]}
notifiers:
  - {name: alertmanager, type: alertmanager, url: http://127.0.0.1:9093}
  - {name: pagerduty, type: pagerduty, routing_key_env: PD_ROUTING_KEY}
  - {name: ops, type: opsgenie, api_key_env: OPSGENIE_KEY}
  - {name: hook, type: webhook, url: http://127.0.0.1:9000/alerts}
"#
    );
    let config = parse(&yaml, "steady.yaml").unwrap();
    assert_eq!(config.slos.len(), 2);
    let a = &config.slos[0];
    assert!((a.objective.0 - 0.999).abs() < 1e-12);
    assert_eq!(a.period, Duration::from_secs(30 * 86_400));
    assert_eq!(
        a.sli,
        Sli::Availability {
            errors: vec![StatusMatch::Class(5)]
        }
    );
    assert_eq!(a.rules().len(), 4);
    assert_eq!(a.no_traffic, Some(Duration::from_secs(600)));
    assert_eq!(
        config.slos[1].sli,
        Sli::LatencyBelow(Duration::from_millis(300))
    );
    assert_eq!(config.alerts.page.notify, ["pagerduty"]);
    assert_eq!(config.alerts.ticket.severity, "warning");
    assert_eq!(config.notifiers[2].kind, NotifierKind::Opsgenie);
    assert_eq!(config.slo_state.save_every, Duration::from_secs(10));
}

#[test]
fn errors_rules_and_switches_are_configurable() {
    let yaml = format!(
        "{BASE}{}",
        r#"
slos:
  - name: checkout
    routes: [checkout]
    objective: 99.5
    sli: {availability: {errors: [5xx, 429]}}
    no_traffic: off
    min_events: 10
    rules:
      - {severity: page, long_window: 1h, short_window: 5m, factor: 14.4, for: 1m}
    anomaly: {}
slo_state: {path: /tmp/x.json, save_every: 5s}
"#
    );
    let config = parse(&yaml, "steady.yaml").unwrap();
    let slo = &config.slos[0];
    assert!((slo.objective.0 - 0.995).abs() < 1e-12);
    assert_eq!(
        slo.sli,
        Sli::Availability {
            errors: vec![StatusMatch::Class(5), StatusMatch::Code(429)]
        }
    );
    assert_eq!(slo.no_traffic, None);
    let rules = slo.rules();
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0].severity, Severity::Page);
    assert_eq!(rules[0].for_duration, Duration::from_secs(60));
    assert_eq!(slo.anomaly.as_ref().unwrap().sigmas, 4.0);
}

#[test]
fn bad_slos_are_located_and_explained() {
    let e = errors(
        r#"
slos:
  - {name: a, routes: [chekout], objective: 100%}
  - {name: a, routes: [], objective: 99%, sli: fast}
  - {name: b, routes: [checkout], objective: 99%, period: 10m,
     rules: [{severity: page, long_window: 5m, short_window: 1h, factor: 0}]}
"#,
    );
    has(&e, "slos[0].routes[0]: no route is named `chekout`");
    has(&e, "did you mean `checkout`");
    has(
        &e,
        "slos[0].objective: must be strictly between 0% and 100%",
    );
    has(&e, "slos[1].sli");
    has(&e, "`fast` is not an SLI");
    let e = errors(
        r#"
slos:
  - {name: a, routes: [checkout], objective: 99%}
  - {name: a, routes: [], objective: 99%}
  - {name: b, routes: [checkout], objective: 99%, period: 10m,
     rules: [{severity: page, long_window: 5m, short_window: 1h, factor: 0}]}
"#,
    );
    has(&e, "slos[1].name: SLO name `a` is already used");
    has(&e, "slos[1].routes: name at least one route");
    has(&e, "slos[2].period: must be between 1h and 400d");
    has(&e, "slos[2].rules: each rule's `short_window`");
    has(&e, "slos[2].rules: each `factor` must be a positive number");
    let e = errors(
        r#"
slos:
  - {name: a, routes: [checkout], objective: 99%, rules: [
      {severity: page, long_window: 1h, short_window: 5m, factor: 14.4},
      {severity: page, long_window: 1h, short_window: 5m, factor: 10}]}
"#,
    );
    has(
        &e,
        "slos[0].rules: two rules have the same severity and windows",
    );
}

#[test]
fn notifiers_need_their_url_and_secret_source() {
    let e = errors(
        r#"
alerts:
  page: {severity: urgent, notify: [pagerdty]}
notifiers:
  - {name: am, type: alertmanager}
  - {name: pagerduty, type: pagerduty}
  - {name: og, type: opsgenie, api_key_env: K, api_key_file: /k, routing_key_env: R}
  - {name: hook, type: webhook, url: "ftp://x"}
  - {name: sms, type: sms}
"#,
    );
    has(
        &e,
        "notifiers[0].url: a `alertmanager` notifier needs a `url`",
    );
    has(&e, "notifiers[1].type: a `pagerduty` notifier needs exactly one of `routing_key_env` and `routing_key_file`");
    has(
        &e,
        "notifiers[2].type: a `opsgenie` notifier needs exactly one",
    );
    has(
        &e,
        "notifiers[2].routing_key_env: applies only to `type: pagerduty`",
    );
    has(&e, "notifiers[3].url: `ftp://x` is not an http");
    has(&e, "notifiers[4].type");
    has(&e, "alerts.page.severity: `urgent` is not a severity");
}

#[test]
fn alert_routes_name_existing_notifiers() {
    let e = errors(
        r#"
alerts:
  ticket: {severity: warning, notify: [alertmanagr]}
notifiers:
  - {name: alertmanager, type: alertmanager, url: "http://127.0.0.1:9093"}
"#,
    );
    has(
        &e,
        "alerts.ticket.notify[0]: no notifier is named `alertmanagr`",
    );
    has(&e, "did you mean `alertmanager`");
}
