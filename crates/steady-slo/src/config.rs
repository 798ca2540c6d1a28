//! What an SLO is: objective, period and alert policy, validated before use.

use std::time::Duration;

use serde::{Deserialize, Serialize};

const MINUTE: u64 = 60;
const HOUR: u64 = 3600;
const DAY: u64 = 86_400;
/// Longest period accepted, in days (a year and some slack).
const MAX_PERIOD_DAYS: u64 = 400;

/// How urgent an alert is. Orders `Ticket < Page`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Someone should look within a working day.
    Ticket,
    /// Someone should look now.
    Page,
}

/// One multi-window burn-rate rule: fires while the burn rate over both windows is
/// above `factor` (and the long window has enough events).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BurnRateRule {
    /// What a firing alert asks for.
    pub severity: Severity,
    /// The window that shows the budget is really being spent.
    pub long_window: Duration,
    /// The window that shows it is still being spent now, so the alert resolves soon
    /// after the errors stop.
    pub short_window: Duration,
    /// Burn rate both windows must exceed.
    pub factor: f64,
    /// How long the condition must hold before the alert fires (pending until then);
    /// zero fires at once.
    #[serde(default)]
    pub for_duration: Duration,
    /// How long the condition must stay clear before a firing alert resolves (as
    /// Prometheus's `keep_firing_for`), so a burn rate wobbling around the factor does
    /// not fire and resolve over and over; zero resolves at once.
    #[serde(default)]
    pub keep_firing_for: Duration,
}

impl BurnRateRule {
    /// Makes a rule that fires at once.
    pub fn new(
        severity: Severity,
        long_window: Duration,
        short_window: Duration,
        factor: f64,
    ) -> Self {
        Self {
            severity,
            long_window,
            short_window,
            factor,
            for_duration: Duration::ZERO,
            keep_firing_for: Duration::ZERO,
        }
    }

    /// Returns a name that identifies the rule within its SLO, as `page-1h-5m`.
    pub fn name(&self) -> String {
        let sev = match self.severity {
            Severity::Page => "page",
            Severity::Ticket => "ticket",
        };
        format!(
            "{sev}-{}-{}",
            fmt_secs(self.long_window.as_secs()),
            fmt_secs(self.short_window.as_secs())
        )
    }

    /// The Google SRE Workbook's rules for a 30-day period (chapter 5, "Alerting on
    /// SLOs", recommendation 6): page on 1h & 5m > 14.4 or 6h & 30m > 6; ticket on
    /// 1d & 2h > 3 or 3d & 6h > 1.
    pub fn workbook_defaults() -> Vec<BurnRateRule> {
        let s = Duration::from_secs;
        vec![
            Self::new(Severity::Page, s(HOUR), s(5 * MINUTE), 14.4),
            Self::new(Severity::Page, s(6 * HOUR), s(30 * MINUTE), 6.0),
            Self::new(Severity::Ticket, s(DAY), s(2 * HOUR), 3.0),
            Self::new(Severity::Ticket, s(3 * DAY), s(6 * HOUR), 1.0),
        ]
    }
}

fn fmt_secs(s: u64) -> String {
    if s.is_multiple_of(DAY) {
        format!("{}d", s / DAY)
    } else if s.is_multiple_of(HOUR) {
        format!("{}h", s / HOUR)
    } else if s.is_multiple_of(MINUTE) {
        format!("{}m", s / MINUTE)
    } else {
        format!("{s}s")
    }
}

/// One service level objective and its alert policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SloConfig {
    /// Name shown in alerts and reports, e.g. `checkout-availability`.
    pub name: String,
    /// Share of good events to achieve, in `(0, 1)`, e.g. `0.999`.
    pub objective: f64,
    /// Period the error budget covers (30 days by default).
    pub period: Duration,
    /// Burn-rate rules; [`BurnRateRule::workbook_defaults`] by default.
    pub rules: Vec<BurnRateRule>,
    /// Events a rule's long window must hold before the rule may fire, so one failure
    /// on an idle route does not page.
    pub min_events: u64,
    /// A route that has had traffic and then none for this long raises a ticket-level
    /// no-traffic alert; `None` turns the signal off.
    pub no_traffic: Option<Duration>,
}

impl SloConfig {
    /// Makes an SLO with the defaults: 30-day period, the workbook rules, at least 100
    /// events per long window, no-traffic after 10 minutes.
    pub fn new(name: impl Into<String>, objective: f64) -> Self {
        Self {
            name: name.into(),
            objective,
            period: Duration::from_secs(30 * DAY),
            rules: BurnRateRule::workbook_defaults(),
            min_events: 100,
            no_traffic: Some(Duration::from_secs(10 * MINUTE)),
        }
    }

    /// Checks the settings, naming the first bad one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.name.is_empty() {
            return Err(ConfigError::EmptyName);
        }
        if !(self.objective > 0.0 && self.objective < 1.0) {
            return Err(ConfigError::Objective(self.objective));
        }
        // The coarse ring holds one bucket per hour of the period: bound it.
        if !(HOUR..=MAX_PERIOD_DAYS * DAY).contains(&self.period.as_secs()) {
            return Err(ConfigError::Period(self.period));
        }
        let mut names = std::collections::HashSet::new();
        for rule in &self.rules {
            let name = rule.name();
            let (long, short) = (rule.long_window.as_secs(), rule.short_window.as_secs());
            if short == 0 || long < short || long > self.period.as_secs().max(3 * DAY) {
                return Err(ConfigError::Windows(name));
            }
            if !(rule.factor.is_finite() && rule.factor > 0.0) {
                return Err(ConfigError::Factor(name, rule.factor));
            }
            if !names.insert(name.clone()) {
                return Err(ConfigError::DuplicateRule(name));
            }
        }
        if self.no_traffic.is_some_and(|d| d.as_secs() == 0) {
            return Err(ConfigError::NoTraffic);
        }
        Ok(())
    }

    /// Returns the error budget as a share of events: `1 − objective`.
    pub fn budget(&self) -> f64 {
        1.0 - self.objective
    }
}

/// Why an [`SloConfig`] was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// The SLO has no name.
    #[error("an SLO needs a name")]
    EmptyName,
    /// The objective is not strictly between 0 and 1.
    #[error("objective {0} must be strictly between 0 and 1 (e.g. 0.999 for 99.9%)")]
    Objective(f64),
    /// The period is shorter than one hour or longer than 400 days.
    #[error("period {0:?} must be between 1h and 400d")]
    Period(Duration),
    /// A rule's windows are zero, swapped, or longer than the period (and 3d).
    #[error("rule {0}: the short window must be non-zero and at most the long one, and the long one at most the period (or 3d)")]
    Windows(String),
    /// A rule's factor is not a positive number.
    #[error("rule {0}: factor {1} must be a positive number")]
    Factor(String, f64),
    /// Two rules have the same severity and windows.
    #[error("rule {0} appears twice")]
    DuplicateRule(String),
    /// The no-traffic delay is zero.
    #[error("the no-traffic delay must be at least 1s")]
    NoTraffic,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_named() {
        let c = SloConfig::new("checkout", 0.999);
        c.validate().unwrap();
        let names: Vec<_> = c.rules.iter().map(BurnRateRule::name).collect();
        assert_eq!(
            names,
            ["page-1h-5m", "page-6h-30m", "ticket-1d-2h", "ticket-3d-6h"]
        );
    }

    #[test]
    fn bad_settings_are_named() {
        let mut c = SloConfig::new("x", 1.0);
        assert_eq!(c.validate(), Err(ConfigError::Objective(1.0)));
        c.objective = 0.99;
        c.period = Duration::from_secs(u64::MAX);
        assert_eq!(c.validate(), Err(ConfigError::Period(c.period)));
        c.period = Duration::from_secs(30 * DAY);
        c.rules[0].short_window = Duration::from_secs(2 * HOUR);
        assert_eq!(c.validate(), Err(ConfigError::Windows("page-1h-2h".into())));
        c.rules[0] = c.rules[1].clone();
        assert_eq!(
            c.validate(),
            Err(ConfigError::DuplicateRule("page-6h-30m".into()))
        );
    }
}
