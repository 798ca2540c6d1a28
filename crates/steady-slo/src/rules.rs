//! Prometheus recording and alerting rules for SLOs, in the shape Sloth generates.
//!
//! The in-process engine sees one instance's traffic; a fleet of steady instances is
//! judged in Prometheus instead, from the two counters every instance exports:
//! [`EVENTS_METRIC`] and [`BAD_EVENTS_METRIC`], both labelled `slo`. [`rule_file`]
//! turns SLOs into rules over those counters, summed across instances:
//!
//! - one group `sloth-slo-sli-recordings-ID`: `slo:sli_error:ratio_rateW` for every
//!   window a burn-rate rule uses and for the period;
//! - one group `sloth-slo-meta-recordings-ID`: objective, budget, period, current and
//!   period burn rate, budget remaining and `sloth_slo_info`;
//! - one group `sloth-slo-alerts-ID`: [`PAGE_ALERT`] and [`TICKET_ALERT`], each firing
//!   when any rule of its severity holds, with the same windows, factors and
//!   minimum-events guard as [`Slo::evaluate`](crate::Slo::evaluate).
//!
//! Names, labels (`sloth_id`, `sloth_service`, `sloth_slo`, `sloth_window`,
//! `sloth_severity`) and expressions follow Sloth, so its Grafana dashboards work on
//! them unchanged. `docs/slo.md` shows a generated file and the few departures.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use crate::{BurnRateRule, Severity, SloConfig};

/// Counter of every request an SLO counts, labelled `slo`.
pub const EVENTS_METRIC: &str = "steady_slo_events_total";
/// Counter of the bad ones (errors, or slower than the latency threshold), labelled `slo`.
pub const BAD_EVENTS_METRIC: &str = "steady_slo_bad_events_total";
/// Name of the page-level burn-rate alert of every SLO (told apart by `sloth_slo`).
pub const PAGE_ALERT: &str = "SteadySLOPageBurn";
/// Name of the ticket-level burn-rate alert of every SLO.
pub const TICKET_ALERT: &str = "SteadySLOTicketBurn";
/// Label naming the burn-rate rule when one severity's rules become separate alerts.
pub const RULE_LABEL: &str = "steady_rule";

const WINDOW_LABEL: &str = "sloth_window";

/// Labels that alerts of one severity carry.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AlertRoute {
    /// Value of the `severity` label (`critical`, `warning`, ...).
    pub severity: String,
    /// Extra labels; `severity`, `sloth_severity` and `slo` win over these.
    pub labels: BTreeMap<String, String>,
}

/// What every SLO's rules share.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleOptions {
    /// The `sloth_service` label, and the prefix of `sloth_id` (`SERVICE-SLO`).
    pub service: String,
    /// The `sloth_version` label of `sloth_slo_info`.
    pub version: String,
    /// Labels of page-level alerts.
    pub page: AlertRoute,
    /// Labels of ticket-level alerts.
    pub ticket: AlertRoute,
}

/// One SLO to generate rules for.
#[derive(Debug, Clone, PartialEq)]
pub struct SloSpec {
    /// Name, objective, period, burn-rate rules and minimum events.
    pub config: SloConfig,
    /// Shown in the alerts' `description` annotation.
    pub description: Option<String>,
}

/// A Prometheus rule file (`rule_files:` in `prometheus.yml`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuleFile {
    /// The rule groups, three per SLO.
    pub groups: Vec<RuleGroup>,
}

/// A named group of rules, evaluated together.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuleGroup {
    /// Unique within the file.
    pub name: String,
    /// Rules in evaluation order.
    pub rules: Vec<Rule>,
}

/// A recording or an alerting rule.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Rule {
    /// Stores an expression's value as a new series.
    Record(RecordingRule),
    /// Fires an alert while an expression returns anything.
    Alert(AlertingRule),
}

/// A recording rule.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecordingRule {
    /// Name of the series it records.
    pub record: String,
    /// The PromQL expression.
    pub expr: String,
    /// Labels added to the result.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// An alerting rule.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertingRule {
    /// The `alertname`.
    pub alert: String,
    /// The PromQL expression; each series it returns is one alert.
    pub expr: String,
    /// How long the expression must hold before the alert fires.
    #[serde(rename = "for", skip_serializing_if = "Option::is_none")]
    pub for_duration: Option<String>,
    /// How long a firing alert stays firing after the expression stops holding.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_firing_for: Option<String>,
    /// Labels added to the alert.
    pub labels: BTreeMap<String, String>,
    /// Annotations (`title`, `summary`, `description`).
    pub annotations: BTreeMap<String, String>,
}

impl RuleFile {
    /// Renders the file as YAML.
    pub fn to_yaml(&self) -> String {
        // Plain strings and maps: serialization cannot fail.
        serde_yaml_ng::to_string(self).expect("rule file serializes")
    }
}

/// Returns the rules of all `slos`: three groups per SLO, in order.
pub fn rule_file(slos: &[SloSpec], options: &RuleOptions) -> RuleFile {
    let mut groups = Vec::with_capacity(3 * slos.len());
    for slo in slos {
        let ids = Ids::new(&slo.config.name, &options.service);
        groups.push(RuleGroup {
            name: format!("sloth-slo-sli-recordings-{}", ids.id),
            rules: sli_rules(&slo.config, &ids),
        });
        groups.push(RuleGroup {
            name: format!("sloth-slo-meta-recordings-{}", ids.id),
            rules: meta_rules(&slo.config, &ids, options),
        });
        groups.push(RuleGroup {
            name: format!("sloth-slo-alerts-{}", ids.id),
            rules: alert_rules(slo, &ids, options),
        });
    }
    RuleFile { groups }
}

/// The Sloth identity labels of one SLO.
struct Ids {
    slo: String,
    id: String,
    service: String,
}

impl Ids {
    fn new(slo: &str, service: &str) -> Self {
        Self {
            slo: slo.to_string(),
            id: format!("{service}-{slo}"),
            service: service.to_string(),
        }
    }

    fn labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("sloth_id".to_string(), self.id.clone()),
            ("sloth_service".to_string(), self.service.clone()),
            ("sloth_slo".to_string(), self.slo.clone()),
        ])
    }

    /// `{sloth_id="...", sloth_service="...", sloth_slo="..."}`, as Sloth writes it.
    fn filter(&self) -> String {
        let pairs: Vec<String> = self
            .labels()
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
            .collect();
        format!("{{{}}}", pairs.join(", "))
    }

    /// `{slo="..."}`: selects the SLO's raw counters.
    fn counter_filter(&self) -> String {
        format!("{{slo=\"{}\"}}", escape(&self.slo))
    }
}

/// Escapes a PromQL double-quoted string.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"")
}

/// Name of the recorded error ratio over `window`: `slo:sli_error:ratio_rate5m`.
pub fn sli_error_metric(window: Duration) -> String {
    format!("slo:sli_error:ratio_rate{}", prom_duration(window))
}

/// Writes a duration as Prometheus does (`5m`, `1h30m`, `1d`, `1w`, `500ms`): years
/// and weeks only when exact, then days down to milliseconds.
pub fn prom_duration(d: Duration) -> String {
    let mut ms = d.as_millis();
    if ms == 0 {
        return "0s".to_string();
    }
    const S: u128 = 1000;
    const UNITS: [(&str, u128, bool); 7] = [
        ("y", 365 * 86_400 * S, true),
        ("w", 7 * 86_400 * S, true),
        ("d", 86_400 * S, false),
        ("h", 3600 * S, false),
        ("m", 60 * S, false),
        ("s", S, false),
        ("ms", 1, false),
    ];
    let mut out = String::new();
    for (unit, size, exact_only) in UNITS {
        if exact_only && !ms.is_multiple_of(size) {
            continue;
        }
        let n = ms / size;
        if n > 0 {
            let _ = write!(out, "{n}{unit}");
            ms -= n * size;
        }
    }
    out
}

/// Writes a number briefly: rounded to 12 decimals, so `1 - 0.999` is `0.001`.
fn num(x: f64) -> String {
    let s = format!("{x:.12}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".to_string()
    } else {
        s.to_string()
    }
}

/// Every window the burn-rate rules use, shortest first.
fn rule_windows(config: &SloConfig) -> BTreeSet<Duration> {
    config
        .rules
        .iter()
        .flat_map(|r| [r.short_window, r.long_window])
        .collect()
}

/// The window the current burn rate and the period ratio are computed from: the
/// shortest any rule uses (`5m` by default), as Sloth uses the fast page rule's short
/// window.
fn base_window(config: &SloConfig) -> Duration {
    rule_windows(config)
        .first()
        .copied()
        .unwrap_or(Duration::from_secs(300))
}

fn sli_rules(config: &SloConfig, ids: &Ids) -> Vec<Rule> {
    let mut windows = rule_windows(config);
    let base = base_window(config);
    windows.insert(base);
    let mut rules: Vec<Rule> = windows
        .iter()
        .map(|&w| Rule::Record(ratio_rule(ids, w)))
        .collect();
    if !windows.contains(&config.period) {
        // A mean of the base ratio over the period, as Sloth does: far cheaper than a
        // rate over 30 days of raw counters. The SLO's labels come from the base
        // series anyway; Sloth leaves them out of the rule, which promtool then reports
        // as duplicate rules once a file holds two SLOs, so they are set here too.
        let base_series = format!("{}{}", sli_error_metric(base), ids.filter());
        let period = prom_duration(config.period);
        let mut labels = ids.labels();
        labels.insert(WINDOW_LABEL.to_string(), period.clone());
        rules.push(Rule::Record(RecordingRule {
            record: sli_error_metric(config.period),
            expr: format!(
                "sum_over_time({base_series}[{period}])\n/ ignoring ({WINDOW_LABEL})\ncount_over_time({base_series}[{period}])\n"
            ),
            labels,
        }));
    }
    rules
}

/// The error ratio of the fleet over `window`, from the raw counters.
fn ratio_rule(ids: &Ids, window: Duration) -> RecordingRule {
    let w = prom_duration(window);
    let f = ids.counter_filter();
    let mut labels = ids.labels();
    labels.insert(WINDOW_LABEL.to_string(), w.clone());
    RecordingRule {
        record: sli_error_metric(window),
        expr: format!(
            "(sum(rate({BAD_EVENTS_METRIC}{f}[{w}])))\n/\n(sum(rate({EVENTS_METRIC}{f}[{w}])))\n"
        ),
        labels,
    }
}

fn meta_rules(config: &SloConfig, ids: &Ids, options: &RuleOptions) -> Vec<Rule> {
    let labels = ids.labels();
    let filter = ids.filter();
    let record = |name: &str, expr: String| {
        Rule::Record(RecordingRule {
            record: name.to_string(),
            expr,
            labels: labels.clone(),
        })
    };
    let burn_rate = |window: Duration| {
        format!(
            "{}{filter}\n/ on(sloth_id, sloth_slo, sloth_service) group_left\nslo:error_budget:ratio{filter}\n",
            sli_error_metric(window)
        )
    };
    let objective = num(config.objective);
    let mut info = labels.clone();
    info.extend([
        ("sloth_mode".to_string(), "cli-gen-prom".to_string()),
        ("sloth_objective".to_string(), num(config.objective * 100.0)),
        ("sloth_spec".to_string(), "steady/v1".to_string()),
        ("sloth_version".to_string(), options.version.clone()),
    ]);
    vec![
        record("slo:objective:ratio", format!("vector({objective})")),
        record("slo:error_budget:ratio", format!("vector(1-{objective})")),
        record(
            "slo:time_period:days",
            format!("vector({})", num(config.period.as_secs_f64() / 86_400.0)),
        ),
        record(
            "slo:current_burn_rate:ratio",
            burn_rate(base_window(config)),
        ),
        record("slo:period_burn_rate:ratio", burn_rate(config.period)),
        record(
            "slo:period_error_budget_remaining:ratio",
            format!("1 - slo:period_burn_rate:ratio{filter}"),
        ),
        Rule::Record(RecordingRule {
            record: "sloth_slo_info".to_string(),
            expr: "vector(1)".to_string(),
            labels: info,
        }),
    ]
}

fn alert_rules(slo: &SloSpec, ids: &Ids, options: &RuleOptions) -> Vec<Rule> {
    let config = &slo.config;
    let mut out = Vec::new();
    for (severity, alert, route) in [
        (Severity::Page, PAGE_ALERT, &options.page),
        (Severity::Ticket, TICKET_ALERT, &options.ticket),
    ] {
        let rules: Vec<&BurnRateRule> = config
            .rules
            .iter()
            .filter(|r| r.severity == severity)
            .collect();
        let Some(first) = rules.first() else {
            continue;
        };
        let timing = |r: &BurnRateRule| (r.for_duration, r.keep_firing_for);
        // One alert per severity with the rules OR-ed, as Sloth does, needs one `for`;
        // rules that differ in timing become one alert each, told apart by RULE_LABEL.
        let batches: Vec<Vec<&BurnRateRule>> = if rules.iter().all(|r| timing(r) == timing(first)) {
            vec![rules]
        } else {
            rules.into_iter().map(|r| vec![r]).collect()
        };
        let split = batches.len() > 1;
        for batch in batches {
            let mut labels = route.labels.clone();
            labels.insert("severity".to_string(), route.severity.clone());
            labels.insert("sloth_severity".to_string(), severity_name(severity).into());
            labels.insert("slo".to_string(), ids.slo.clone());
            if split {
                labels.insert(RULE_LABEL.to_string(), batch[0].name());
            }
            let duration = |d: Duration| (!d.is_zero()).then(|| prom_duration(d));
            out.push(Rule::Alert(AlertingRule {
                alert: alert.to_string(),
                expr: alert_expr(config, ids, &batch),
                for_duration: duration(batch[0].for_duration),
                keep_firing_for: duration(batch[0].keep_firing_for),
                labels,
                annotations: annotations(severity, slo.description.as_deref()),
            }));
        }
    }
    out
}

fn severity_name(severity: Severity) -> &'static str {
    match severity {
        Severity::Page => "page",
        Severity::Ticket => "ticket",
    }
}

/// The rules OR-ed; each holds when both windows burn faster than its factor and the
/// long window saw at least `min_events` requests, as in the engine.
fn alert_expr(config: &SloConfig, ids: &Ids, rules: &[&BurnRateRule]) -> String {
    let filter = ids.filter();
    let budget = num(config.budget());
    let parts: Vec<String> = rules
        .iter()
        .map(|r| {
            let factor = num(r.factor);
            let above =
                |w: Duration| format!("({}{filter} > ({factor} * {budget}))", sli_error_metric(w));
            let mut part = format!(
                "(\n    {}\n    and ignoring ({WINDOW_LABEL})\n    {}\n",
                above(r.short_window),
                above(r.long_window)
            );
            if config.min_events > 0 {
                let _ = writeln!(
                    part,
                    "    and on ()\n    (sum(increase({EVENTS_METRIC}{}[{}])) >= {})",
                    ids.counter_filter(),
                    prom_duration(r.long_window),
                    config.min_events
                );
            }
            part.push(')');
            part
        })
        .collect();
    parts.join(&format!("\nor ignoring ({WINDOW_LABEL})\n")) + "\n"
}

fn annotations(severity: Severity, description: Option<&str>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::from([
        (
            "title".to_string(),
            format!(
                "({}) {{{{$labels.sloth_service}}}} {{{{$labels.sloth_slo}}}} SLO error budget burn rate is too fast.",
                severity_name(severity)
            ),
        ),
        (
            "summary".to_string(),
            "{{$labels.sloth_service}} {{$labels.sloth_slo}} SLO error budget burn rate is over expected.".to_string(),
        ),
    ]);
    if let Some(d) = description {
        out.insert("description".to_string(), d.to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> RuleOptions {
        RuleOptions {
            service: "steady".into(),
            version: "0.1.0".into(),
            page: AlertRoute {
                severity: "critical".into(),
                labels: BTreeMap::from([("team".into(), "payments".into())]),
            },
            ticket: AlertRoute {
                severity: "warning".into(),
                labels: BTreeMap::new(),
            },
        }
    }

    fn spec(config: SloConfig) -> SloSpec {
        SloSpec {
            config,
            description: None,
        }
    }

    fn records(group: &RuleGroup) -> Vec<&RecordingRule> {
        group
            .rules
            .iter()
            .filter_map(|r| match r {
                Rule::Record(r) => Some(r),
                Rule::Alert(_) => None,
            })
            .collect()
    }

    fn alerts(group: &RuleGroup) -> Vec<&AlertingRule> {
        group
            .rules
            .iter()
            .filter_map(|r| match r {
                Rule::Alert(a) => Some(a),
                Rule::Record(_) => None,
            })
            .collect()
    }

    #[test]
    fn durations_are_written_as_prometheus_does() {
        let s = Duration::from_secs;
        assert_eq!(prom_duration(s(300)), "5m");
        assert_eq!(prom_duration(s(5400)), "1h30m");
        assert_eq!(prom_duration(s(86_400)), "1d");
        assert_eq!(prom_duration(s(3 * 86_400)), "3d");
        assert_eq!(prom_duration(s(7 * 86_400)), "1w");
        assert_eq!(prom_duration(s(28 * 86_400)), "4w");
        assert_eq!(prom_duration(s(30 * 86_400)), "30d");
        assert_eq!(prom_duration(s(90)), "1m30s");
        assert_eq!(prom_duration(Duration::from_millis(1500)), "1s500ms");
        assert_eq!(prom_duration(Duration::ZERO), "0s");
    }

    #[test]
    fn numbers_are_rounded_for_reading() {
        assert_eq!(num(1.0 - 0.999), "0.001");
        assert_eq!(num(99.9 / 100.0), "0.999");
        assert_eq!(num(14.4), "14.4");
        assert_eq!(num(6.0), "6");
        assert_eq!(num(0.999 * 100.0), "99.9");
    }

    #[test]
    fn sli_recordings_cover_every_rule_window_and_the_period() {
        let file = rule_file(
            &[spec(SloConfig::new("checkout-availability", 0.999))],
            &options(),
        );
        let names: Vec<&str> = file.groups.iter().map(|g| g.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "sloth-slo-sli-recordings-steady-checkout-availability",
                "sloth-slo-meta-recordings-steady-checkout-availability",
                "sloth-slo-alerts-steady-checkout-availability",
            ]
        );
        let sli = records(&file.groups[0]);
        let recorded: Vec<&str> = sli.iter().map(|r| r.record.as_str()).collect();
        assert_eq!(
            recorded,
            [
                "slo:sli_error:ratio_rate5m",
                "slo:sli_error:ratio_rate30m",
                "slo:sli_error:ratio_rate1h",
                "slo:sli_error:ratio_rate2h",
                "slo:sli_error:ratio_rate6h",
                "slo:sli_error:ratio_rate1d",
                "slo:sli_error:ratio_rate3d",
                "slo:sli_error:ratio_rate30d",
            ]
        );
        assert_eq!(
            sli[0].expr,
            "(sum(rate(steady_slo_bad_events_total{slo=\"checkout-availability\"}[5m])))\n/\n\
             (sum(rate(steady_slo_events_total{slo=\"checkout-availability\"}[5m])))\n"
        );
        assert_eq!(
            sli[0].labels,
            BTreeMap::from([
                ("sloth_id".into(), "steady-checkout-availability".into()),
                ("sloth_service".into(), "steady".into()),
                ("sloth_slo".into(), "checkout-availability".into()),
                ("sloth_window".into(), "5m".into()),
            ])
        );
        let f = "{sloth_id=\"steady-checkout-availability\", sloth_service=\"steady\", sloth_slo=\"checkout-availability\"}";
        assert_eq!(
            sli[7].expr,
            format!(
                "sum_over_time(slo:sli_error:ratio_rate5m{f}[30d])\n/ ignoring (sloth_window)\n\
                 count_over_time(slo:sli_error:ratio_rate5m{f}[30d])\n"
            )
        );
        assert_eq!(sli[7].labels["sloth_window"], "30d");
        assert_eq!(sli[7].labels["sloth_id"], "steady-checkout-availability");
    }

    #[test]
    fn a_period_that_is_also_a_rule_window_is_recorded_once_from_the_counters() {
        let mut c = SloConfig::new("x", 0.99);
        c.period = Duration::from_secs(86_400);
        c.rules = vec![BurnRateRule::new(
            Severity::Page,
            Duration::from_secs(86_400),
            Duration::from_secs(3600),
            2.0,
        )];
        let file = rule_file(&[spec(c)], &options());
        let sli = records(&file.groups[0]);
        let recorded: Vec<&str> = sli.iter().map(|r| r.record.as_str()).collect();
        assert_eq!(
            recorded,
            ["slo:sli_error:ratio_rate1h", "slo:sli_error:ratio_rate1d"]
        );
        assert!(sli[1].expr.starts_with("(sum(rate("));
        let meta = records(&file.groups[1]);
        assert_eq!(meta[2].expr, "vector(1)");
    }

    #[test]
    fn metadata_follows_sloth() {
        let file = rule_file(&[spec(SloConfig::new("api", 0.99))], &options());
        let meta = records(&file.groups[1]);
        let f = "{sloth_id=\"steady-api\", sloth_service=\"steady\", sloth_slo=\"api\"}";
        let got: Vec<(&str, &str)> = meta
            .iter()
            .map(|r| (r.record.as_str(), r.expr.as_str()))
            .collect();
        let current = format!(
            "slo:sli_error:ratio_rate5m{f}\n/ on(sloth_id, sloth_slo, sloth_service) group_left\nslo:error_budget:ratio{f}\n"
        );
        let period = current.replace("rate5m", "rate30d");
        let remaining = format!("1 - slo:period_burn_rate:ratio{f}");
        assert_eq!(
            got,
            [
                ("slo:objective:ratio", "vector(0.99)"),
                ("slo:error_budget:ratio", "vector(1-0.99)"),
                ("slo:time_period:days", "vector(30)"),
                ("slo:current_burn_rate:ratio", current.as_str()),
                ("slo:period_burn_rate:ratio", period.as_str()),
                (
                    "slo:period_error_budget_remaining:ratio",
                    remaining.as_str()
                ),
                ("sloth_slo_info", "vector(1)"),
            ]
        );
        assert_eq!(meta[6].labels["sloth_objective"], "99");
        assert_eq!(meta[6].labels["sloth_version"], "0.1.0");
        assert!(!meta[0].labels.contains_key("sloth_window"));
    }

    #[test]
    fn page_alert_ors_the_page_rules_with_the_min_events_guard() {
        let file = rule_file(&[spec(SloConfig::new("api", 0.999))], &options());
        let alerts = alerts(&file.groups[2]);
        assert_eq!(alerts.len(), 2);
        let page = alerts[0];
        assert_eq!(page.alert, PAGE_ALERT);
        let f = "{sloth_id=\"steady-api\", sloth_service=\"steady\", sloth_slo=\"api\"}";
        let expected = format!(
            "(\n    (slo:sli_error:ratio_rate5m{f} > (14.4 * 0.001))\n    and ignoring (sloth_window)\n    \
             (slo:sli_error:ratio_rate1h{f} > (14.4 * 0.001))\n    and on ()\n    \
             (sum(increase(steady_slo_events_total{{slo=\"api\"}}[1h])) >= 100)\n)\n\
             or ignoring (sloth_window)\n\
             (\n    (slo:sli_error:ratio_rate30m{f} > (6 * 0.001))\n    and ignoring (sloth_window)\n    \
             (slo:sli_error:ratio_rate6h{f} > (6 * 0.001))\n    and on ()\n    \
             (sum(increase(steady_slo_events_total{{slo=\"api\"}}[6h])) >= 100)\n)\n"
        );
        assert_eq!(page.expr, expected);
        assert_eq!(page.for_duration, None);
        assert_eq!(page.keep_firing_for, None);
        assert_eq!(
            page.labels,
            BTreeMap::from([
                ("severity".into(), "critical".into()),
                ("sloth_severity".into(), "page".into()),
                ("slo".into(), "api".into()),
                ("team".into(), "payments".into()),
            ])
        );
        let ticket = alerts[1];
        assert_eq!(ticket.alert, TICKET_ALERT);
        assert_eq!(ticket.labels["severity"], "warning");
        assert!(ticket.expr.contains("ratio_rate3d"));
        assert!(ticket.expr.contains("(1 * 0.001)"));
        assert!(ticket.expr.contains("[1d])) >= 100)"));
        assert!(ticket.annotations["title"].starts_with("(ticket) {{$labels.sloth_service}}"));
    }

    #[test]
    fn no_guard_without_min_events() {
        let mut c = SloConfig::new("api", 0.999);
        c.min_events = 0;
        let file = rule_file(&[spec(c)], &options());
        assert!(alerts(&file.groups[2])
            .iter()
            .all(|a| !a.expr.contains("increase")));
    }

    #[test]
    fn rules_with_different_timing_become_separate_alerts() {
        let mut c = SloConfig::new("api", 0.999);
        c.rules[1].for_duration = Duration::from_secs(120);
        c.rules[2].keep_firing_for = Duration::from_secs(600);
        c.rules[3].keep_firing_for = Duration::from_secs(600);
        let file = rule_file(
            &[SloSpec {
                config: c,
                description: Some("Checkout works".into()),
            }],
            &options(),
        );
        let alerts = alerts(&file.groups[2]);
        // alertname, rule label, for, keep_firing_for
        let got: Vec<String> = alerts
            .iter()
            .map(|a| {
                format!(
                    "{} {:?} {:?} {:?}",
                    a.alert,
                    a.labels.get(RULE_LABEL),
                    a.for_duration,
                    a.keep_firing_for
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                r#"SteadySLOPageBurn Some("page-1h-5m") None None"#,
                r#"SteadySLOPageBurn Some("page-6h-30m") Some("2m") None"#,
                r#"SteadySLOTicketBurn None None Some("10m")"#,
            ]
        );
        assert!(!alerts[0].expr.contains(" or "));
        assert!(alerts[2].expr.contains("or ignoring (sloth_window)"));
        assert_eq!(alerts[0].annotations["description"], "Checkout works");
    }

    #[test]
    fn a_severity_without_rules_has_no_alert() {
        let mut c = SloConfig::new("api", 0.999);
        c.rules.retain(|r| r.severity == Severity::Ticket);
        let file = rule_file(&[spec(c)], &options());
        let names: Vec<&str> = alerts(&file.groups[2])
            .iter()
            .map(|a| a.alert.as_str())
            .collect();
        assert_eq!(names, [TICKET_ALERT]);
    }

    #[test]
    fn yaml_has_the_prometheus_shape() {
        let yaml = rule_file(&[spec(SloConfig::new("api", 0.999))], &options()).to_yaml();
        let back: serde_yaml_ng::Value = serde_yaml_ng::from_str(&yaml).unwrap();
        let group = &back["groups"][0];
        assert_eq!(group["rules"][0]["record"], "slo:sli_error:ratio_rate5m");
        assert!(group["rules"][0]["expr"]
            .as_str()
            .unwrap()
            .contains("steady_slo_bad_events_total"));
        let alert = &back["groups"][2]["rules"][0];
        assert_eq!(alert["alert"], PAGE_ALERT);
        assert!(alert.get("for").is_none());
        assert_eq!(rule_file(&[], &options()).to_yaml().trim(), "groups: []");
    }
}
