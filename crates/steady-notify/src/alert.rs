//! The receiver-neutral [`Alert`] and the labelled form every receiver sends.

use std::collections::BTreeMap;
use std::time::SystemTime;

use steady_config::slo::{AlertRoute, Severity};

/// One alert change, receiver-neutral.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    /// SLO name.
    pub slo: String,
    /// Alert name within the SLO: `page-1h-5m`, `no-traffic`, `anomaly-traffic`...
    pub name: String,
    /// Which `alerts` route delivers it.
    pub severity: Severity,
    /// `true` while firing, `false` once resolved.
    pub firing: bool,
    /// When the episode started firing.
    pub starts_at: SystemTime,
    /// When it resolved (`None` while firing; a resolve without it uses the send time).
    pub ends_at: Option<SystemTime>,
    /// One line, e.g. `checkout-availability: error budget burning 20x (1h) / 19x (5m)`.
    pub summary: String,
    /// Longer text.
    pub description: String,
    /// Extra labels (the gateway adds the route and the like).
    pub labels: BTreeMap<String, String>,
    /// Extra annotations.
    pub annotations: BTreeMap<String, String>,
}

impl Alert {
    /// The key that ties a trigger to its resolve: `steady/<slo>/<name>`.
    pub fn dedup_key(&self) -> String {
        format!("steady/{}/{}", self.slo, self.name)
    }

    /// The `alertname` label: `SteadySLONoTraffic` for `no-traffic`,
    /// `SteadySLOAnomaly` for `anomaly-*`, `SteadySLOBurnRate` for everything else.
    pub fn alertname(&self) -> &'static str {
        if self.name.starts_with("no-traffic") {
            "SteadySLONoTraffic"
        } else if self.name.starts_with("anomaly") {
            "SteadySLOAnomaly"
        } else {
            "SteadySLOBurnRate"
        }
    }
}

/// An alert with the labels and severity of its route: what every receiver sends.
#[derive(Debug, Clone)]
pub(crate) struct Labelled {
    /// The alert as the caller gave it.
    pub alert: Alert,
    /// Route labels, then the alert's, then steady's own (which win).
    pub labels: BTreeMap<String, String>,
    /// The alert's annotations plus `summary` and `description`.
    pub annotations: BTreeMap<String, String>,
    /// `critical`, `error`, `warning` or `info`, from the route.
    pub severity: &'static str,
    /// [`Alert::dedup_key`].
    pub dedup_key: String,
}

impl Labelled {
    /// Applies `route` to `alert`.
    pub fn new(alert: Alert, route: &AlertRoute) -> Labelled {
        let severity = route_severity(&route.severity, alert.severity);
        let mut labels = route.labels.clone();
        labels.extend(alert.labels.clone());
        let steady_severity = match alert.severity {
            Severity::Page => "page",
            Severity::Ticket => "ticket",
        };
        for (k, v) in [
            ("alertname", alert.alertname()),
            ("slo", &alert.slo),
            ("alert", &alert.name),
            ("severity", severity),
            ("steady_severity", steady_severity),
        ] {
            labels.insert(k.to_string(), v.to_string());
        }
        let mut annotations = alert.annotations.clone();
        annotations.insert("summary".into(), alert.summary.clone());
        if !alert.description.is_empty() {
            annotations.insert("description".into(), alert.description.clone());
        }
        Labelled {
            dedup_key: alert.dedup_key(),
            alert,
            labels,
            annotations,
            severity,
        }
    }
}

/// The route's severity if it is one of the four known ones (config validation makes
/// sure), else the usual one for the alert's level.
fn route_severity(configured: &str, level: Severity) -> &'static str {
    match configured {
        "critical" => "critical",
        "error" => "error",
        "warning" => "warning",
        "info" => "info",
        _ if level == Severity::Page => "critical",
        _ => "warning",
    }
}

/// Cuts `s` to at most `max` characters (not bytes), marking the cut with `…`.
pub(crate) fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(name: &str) -> Alert {
        Alert {
            slo: "checkout".into(),
            name: name.into(),
            severity: Severity::Page,
            firing: true,
            starts_at: SystemTime::UNIX_EPOCH,
            ends_at: None,
            summary: "s".into(),
            description: String::new(),
            labels: BTreeMap::from([("alertname".into(), "spoofed".into())]),
            annotations: BTreeMap::new(),
        }
    }

    #[test]
    fn steady_labels_win_and_route_labels_are_added() {
        let route = AlertRoute {
            severity: "error".into(),
            notify: vec![],
            labels: BTreeMap::from([("team".into(), "payments".into())]),
        };
        let l = Labelled::new(alert("page-1h-5m"), &route);
        assert_eq!(l.labels["alertname"], "SteadySLOBurnRate");
        assert_eq!(l.labels["team"], "payments");
        assert_eq!(l.labels["severity"], "error");
        assert_eq!(l.labels["steady_severity"], "page");
        assert_eq!(l.dedup_key, "steady/checkout/page-1h-5m");
        assert!(!l.annotations.contains_key("description"));
    }

    #[test]
    fn alertnames() {
        assert_eq!(alert("no-traffic").alertname(), "SteadySLONoTraffic");
        assert_eq!(alert("anomaly-latency").alertname(), "SteadySLOAnomaly");
    }

    #[test]
    fn truncate_counts_chars() {
        assert_eq!(truncate("abc", 3), "abc");
        assert_eq!(truncate("ééééé", 3), "éé…");
    }
}
