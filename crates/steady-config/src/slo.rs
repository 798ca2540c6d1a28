//! SLOs, their alert policy and the notifiers that deliver alerts (`slos`, `alerts`,
//! `notifiers`, `slo_state`).
//!
//! These are plain settings; the engine that evaluates them is `steady-slo`, the
//! senders are `steady-notify`.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use crate::limits::Percent;
use crate::units::{de_duration, parse_duration};
use crate::StatusMatch;

/// One service level objective over one or more routes.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Slo {
    /// Name used in alerts, metrics (`slo` label) and the admin API.
    pub name: String,
    /// What the SLO is about, shown in alerts.
    #[serde(default)]
    pub description: Option<String>,
    /// Routes whose requests the SLI counts.
    pub routes: Vec<String>,
    /// Share of good requests to achieve, e.g. `99.9%`.
    pub objective: Percent,
    /// Period the error budget covers.
    #[serde(default = "defaults::period", deserialize_with = "de_duration")]
    pub period: Duration,
    /// Which requests are good.
    #[serde(default)]
    pub sli: Sli,
    /// Requests a rule's long window must hold before the rule may fire.
    #[serde(default = "defaults::min_events")]
    pub min_events: u64,
    /// A route that had traffic and then none for this long opens a ticket; `off`
    /// turns the signal off.
    #[serde(default = "defaults::no_traffic", deserialize_with = "de_off_duration")]
    pub no_traffic: Option<Duration>,
    /// Burn-rate rules; absent: the Google SRE Workbook's four (page 1h/5m × 14.4 and
    /// 6h/30m × 6, ticket 1d/2h × 3 and 3d/6h × 1).
    #[serde(default)]
    pub rules: Option<Vec<BurnRateRule>>,
    /// Ticket-level alerts when traffic, error rate or latency leave their recent
    /// baseline; absent: off.
    #[serde(default)]
    pub anomaly: Option<Anomaly>,
}

/// Which requests an SLO counts as good.
#[derive(Debug, Clone, PartialEq)]
pub enum Sli {
    /// Good unless the status matches one of `errors` (default `5xx`, which includes
    /// every failure steady produces itself: 502, 503, 504).
    Availability {
        /// Statuses that count as errors.
        errors: Vec<StatusMatch>,
    },
    /// Good when the response head came within this long of the request head.
    LatencyBelow(Duration),
}

impl Default for Sli {
    fn default() -> Self {
        Sli::Availability {
            errors: defaults::errors(),
        }
    }
}

impl<'de> Deserialize<'de> for Sli {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Availability {
            #[serde(default = "defaults::errors")]
            errors: Vec<StatusMatch>,
        }
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Form {
            #[serde(default)]
            availability: Option<Availability>,
            #[serde(default, deserialize_with = "crate::units::de_opt_duration")]
            latency_below: Option<Duration>,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Name(String),
            Form(Form),
        }
        const HINT: &str =
            "use `availability`, `{availability: {errors: [5xx, 429]}}` or `{latency_below: 300ms}`";
        match Raw::deserialize(deserializer).map_err(|_| de::Error::custom(HINT))? {
            Raw::Name(name) if name == "availability" => Ok(Sli::default()),
            Raw::Name(name) => Err(de::Error::custom(format!("`{name}` is not an SLI; {HINT}"))),
            Raw::Form(Form {
                availability: Some(a),
                latency_below: None,
            }) => Ok(Sli::Availability { errors: a.errors }),
            Raw::Form(Form {
                availability: None,
                latency_below: Some(d),
            }) => Ok(Sli::LatencyBelow(d)),
            Raw::Form(_) => Err(de::Error::custom(format!("name exactly one SLI; {HINT}"))),
        }
    }
}

/// How urgent an alert is.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Someone should look within a working day (`alerts.ticket`).
    Ticket,
    /// Someone should look now (`alerts.page`).
    Page,
}

/// One multi-window burn-rate rule.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BurnRateRule {
    /// `page` or `ticket`.
    pub severity: Severity,
    /// The window that shows the budget is really being spent.
    #[serde(deserialize_with = "de_duration")]
    pub long_window: Duration,
    /// The window that shows it is still being spent now.
    #[serde(deserialize_with = "de_duration")]
    pub short_window: Duration,
    /// Burn rate both windows must exceed (1 spends the budget exactly over the period).
    pub factor: f64,
    /// How long the condition must hold before the alert fires (Prometheus `for`).
    #[serde(default, rename = "for", deserialize_with = "de_duration")]
    pub for_duration: Duration,
    /// How long the condition must stay clear before a firing alert resolves.
    #[serde(default, deserialize_with = "de_duration")]
    pub keep_firing_for: Duration,
}

/// Baseline tracking for proactive (ticket) alerts.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Anomaly {
    /// Width of the normal band, in standard deviations of the baseline.
    #[serde(default = "defaults::sigmas")]
    pub sigmas: f64,
    /// How fast the baseline follows the signal: an observation's weight halves
    /// after this long.
    #[serde(default = "defaults::half_life", deserialize_with = "de_duration")]
    pub half_life: Duration,
    /// How long the signal must stay outside the band before the alert fires.
    #[serde(
        default = "defaults::anomaly_for",
        rename = "for",
        deserialize_with = "de_duration"
    )]
    pub for_duration: Duration,
    /// Baseline learnt before any anomaly alert may fire.
    #[serde(default = "defaults::warmup", deserialize_with = "de_duration")]
    pub warmup: Duration,
}

impl Default for Anomaly {
    fn default() -> Self {
        Self {
            sigmas: defaults::sigmas(),
            half_life: defaults::half_life(),
            for_duration: defaults::anomaly_for(),
            warmup: defaults::warmup(),
        }
    }
}

/// Who hears about alerts of each severity.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Alerts {
    /// Page-level alerts (fast burns).
    #[serde(default = "defaults::page")]
    pub page: AlertRoute,
    /// Ticket-level alerts (slow burns, no traffic, anomalies).
    #[serde(default = "defaults::ticket")]
    pub ticket: AlertRoute,
}

impl Default for Alerts {
    fn default() -> Self {
        Self {
            page: defaults::page(),
            ticket: defaults::ticket(),
        }
    }
}

/// Where alerts of one severity go, and how they are labelled.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct AlertRoute {
    /// The `severity` label (Alertmanager), PagerDuty severity, Opsgenie priority
    /// source: `critical`, `error`, `warning` or `info`.
    pub severity: String,
    /// Names of `notifiers` that receive these alerts.
    #[serde(default)]
    pub notify: Vec<String>,
    /// Extra labels added to every alert of this severity.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// One alert receiver.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Notifier {
    /// Name that `alerts.*.notify` refers to.
    pub name: String,
    /// Which API it speaks.
    #[serde(rename = "type")]
    pub kind: NotifierKind,
    /// Where to send; required for `alertmanager` and `webhook`, defaults to the
    /// public API for `pagerduty` and `opsgenie`.
    #[serde(default)]
    pub url: Option<String>,
    /// Environment variable holding the PagerDuty routing (integration) key.
    #[serde(default)]
    pub routing_key_env: Option<String>,
    /// File holding the PagerDuty routing key.
    #[serde(default)]
    pub routing_key_file: Option<String>,
    /// Environment variable holding the Opsgenie API key.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// File holding the Opsgenie API key.
    #[serde(default)]
    pub api_key_file: Option<String>,
    /// Timeout of one delivery attempt.
    #[serde(default = "defaults::notify_timeout", deserialize_with = "de_duration")]
    pub timeout: Duration,
    /// Attempts per notification (with exponential back-off between them).
    #[serde(default = "defaults::notify_attempts")]
    pub max_attempts: u32,
}

/// The API a notifier speaks.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum NotifierKind {
    /// Alertmanager API v2 (`POST /api/v2/alerts`).
    Alertmanager,
    /// Alertmanager's webhook format (version 4), to any URL.
    Webhook,
    /// PagerDuty Events API v2.
    Pagerduty,
    /// Opsgenie Alert API (create and close).
    Opsgenie,
}

impl NotifierKind {
    /// The `type` as written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            NotifierKind::Alertmanager => "alertmanager",
            NotifierKind::Webhook => "webhook",
            NotifierKind::Pagerduty => "pagerduty",
            NotifierKind::Opsgenie => "opsgenie",
        }
    }
}

/// Where the SLO engine keeps its state across restarts.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SloState {
    /// The state file (relative to the working directory); written atomically.
    #[serde(default = "defaults::state_path")]
    pub path: String,
    /// How often the state is saved; a crash loses at most this much of the SLIs.
    #[serde(default = "defaults::save_every", deserialize_with = "de_duration")]
    pub save_every: Duration,
}

impl Default for SloState {
    fn default() -> Self {
        Self {
            path: defaults::state_path(),
            save_every: defaults::save_every(),
        }
    }
}

/// Deserializes a duration, or `off` for none.
fn de_off_duration<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Duration>, D::Error> {
    struct OffVisitor;
    impl Visitor<'_> for OffVisitor {
        type Value = Option<Duration>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a duration like `10m`, or `off`")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            if v.trim() == "off" {
                return Ok(None);
            }
            parse_duration(v).map(Some).map_err(E::custom)
        }
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
            // YAML 1.1 reads a bare `off` as false.
            if v {
                Err(E::custom("use a duration like `10m`, or `off`"))
            } else {
                Ok(None)
            }
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
    }
    deserializer.deserialize_any(OffVisitor)
}

impl Notifier {
    /// Every problem of this notifier, as `(field, message)`.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        let needs_url = matches!(
            self.kind,
            NotifierKind::Alertmanager | NotifierKind::Webhook
        );
        match &self.url {
            None if needs_url => out.push((
                "url",
                format!("a `{}` notifier needs a `url`", self.kind.as_str()),
            )),
            Some(url) if !(url.starts_with("http://") || url.starts_with("https://")) => {
                out.push(("url", format!("`{url}` is not an http:// or https:// URL")))
            }
            _ => {}
        }
        let (env, file, what) = match self.kind {
            NotifierKind::Pagerduty => {
                (&self.routing_key_env, &self.routing_key_file, "routing_key")
            }
            NotifierKind::Opsgenie => (&self.api_key_env, &self.api_key_file, "api_key"),
            _ => (&None, &None, ""),
        };
        if !what.is_empty() && env.is_some() == file.is_some() {
            out.push((
                "type",
                format!("a `{}` notifier needs exactly one of `{what}_env` and `{what}_file` (secrets are never written in the config)", self.kind.as_str()),
            ));
        }
        let foreign = [
            (
                "routing_key_env",
                self.routing_key_env.is_some(),
                NotifierKind::Pagerduty,
            ),
            (
                "routing_key_file",
                self.routing_key_file.is_some(),
                NotifierKind::Pagerduty,
            ),
            (
                "api_key_env",
                self.api_key_env.is_some(),
                NotifierKind::Opsgenie,
            ),
            (
                "api_key_file",
                self.api_key_file.is_some(),
                NotifierKind::Opsgenie,
            ),
        ];
        for (field, set, kind) in foreign {
            if set && self.kind != kind {
                out.push((field, format!("applies only to `type: {}`", kind.as_str())));
            }
        }
        if self.timeout.is_zero() {
            out.push(("timeout", "must be greater than 0s".to_string()));
        }
        if self.max_attempts == 0 {
            out.push(("max_attempts", "must be at least 1".to_string()));
        }
        out
    }
}

impl Slo {
    /// The burn-rate rules in force: the configured ones, or the workbook's four.
    pub fn rules(&self) -> Vec<BurnRateRule> {
        self.rules
            .clone()
            .unwrap_or_else(BurnRateRule::workbook_defaults)
    }

    /// Every range problem of this SLO, as `(field, message)`; references to routes
    /// are checked by the caller.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if self.routes.is_empty() {
            out.push(("routes", "name at least one route".to_string()));
        }
        let objective = self.objective.0;
        if !(objective > 0.0 && objective < 1.0) {
            out.push((
                "objective",
                "must be strictly between 0% and 100%, e.g. `99.9%`".to_string(),
            ));
        }
        if !(3600..=400 * 86_400).contains(&self.period.as_secs()) {
            out.push(("period", "must be between 1h and 400d".to_string()));
        }
        if let Sli::LatencyBelow(d) = &self.sli {
            if d.is_zero() {
                out.push(("sli", "`latency_below` must be greater than 0s".to_string()));
            }
        }
        if self.no_traffic.is_some_and(|d| d.as_secs() == 0) {
            out.push(("no_traffic", "must be at least 1s, or `off`".to_string()));
        }
        let rules = self.rules.as_deref().unwrap_or_default();
        for (i, rule) in rules.iter().enumerate() {
            if rules[..i].iter().any(|r| {
                r.severity == rule.severity
                    && r.long_window == rule.long_window
                    && r.short_window == rule.short_window
            }) {
                out.push((
                    "rules",
                    "two rules have the same severity and windows; merge them".to_string(),
                ));
            }
        }
        for rule in self.rules.iter().flatten() {
            let (long, short) = (rule.long_window.as_secs(), rule.short_window.as_secs());
            if short == 0 || long < short {
                out.push((
                    "rules",
                    "each rule's `short_window` must be non-zero and at most its `long_window`"
                        .to_string(),
                ));
            }
            if long > self.period.as_secs().max(3 * 86_400) {
                out.push((
                    "rules",
                    "a `long_window` may not exceed the period (or 3d)".to_string(),
                ));
            }
            if !(rule.factor.is_finite() && rule.factor > 0.0) {
                out.push((
                    "rules",
                    "each `factor` must be a positive number".to_string(),
                ));
            }
        }
        if let Some(a) = &self.anomaly {
            if !(a.sigmas.is_finite() && a.sigmas > 0.0) {
                out.push(("anomaly", "`sigmas` must be a positive number".to_string()));
            }
            if a.half_life.as_secs() == 0 {
                out.push(("anomaly", "`half_life` must be at least 1s".to_string()));
            }
        }
        out
    }
}

impl BurnRateRule {
    /// The Google SRE Workbook's rules for a 30-day period (chapter 5, "Alerting on
    /// SLOs"): page on 1h & 5m > 14.4 or 6h & 30m > 6; ticket on 1d & 2h > 3 or
    /// 3d & 6h > 1.
    pub fn workbook_defaults() -> Vec<BurnRateRule> {
        let rule = |severity, long, short, factor| BurnRateRule {
            severity,
            long_window: Duration::from_secs(long),
            short_window: Duration::from_secs(short),
            factor,
            for_duration: Duration::ZERO,
            keep_firing_for: Duration::ZERO,
        };
        vec![
            rule(Severity::Page, 3600, 300, 14.4),
            rule(Severity::Page, 6 * 3600, 1800, 6.0),
            rule(Severity::Ticket, 86_400, 2 * 3600, 3.0),
            rule(Severity::Ticket, 3 * 86_400, 6 * 3600, 1.0),
        ]
    }
}

mod defaults {
    use super::*;

    pub(super) fn period() -> Duration {
        Duration::from_secs(30 * 86_400)
    }
    pub(super) fn errors() -> Vec<StatusMatch> {
        vec![StatusMatch::Class(5)]
    }
    pub(super) fn min_events() -> u64 {
        100
    }
    pub(super) fn no_traffic() -> Option<Duration> {
        Some(Duration::from_secs(600))
    }
    pub(super) fn sigmas() -> f64 {
        4.0
    }
    pub(super) fn half_life() -> Duration {
        Duration::from_secs(3600)
    }
    pub(super) fn anomaly_for() -> Duration {
        Duration::from_secs(600)
    }
    pub(super) fn warmup() -> Duration {
        Duration::from_secs(3600)
    }
    pub(super) fn page() -> AlertRoute {
        AlertRoute {
            severity: "critical".into(),
            ..AlertRoute::default()
        }
    }
    pub(super) fn ticket() -> AlertRoute {
        AlertRoute {
            severity: "warning".into(),
            ..AlertRoute::default()
        }
    }
    pub(super) fn notify_timeout() -> Duration {
        Duration::from_secs(10)
    }
    pub(super) fn notify_attempts() -> u32 {
        5
    }
    pub(super) fn state_path() -> String {
        "steady-slo-state.json".into()
    }
    pub(super) fn save_every() -> Duration {
        Duration::from_secs(10)
    }
}
