//! Alert states and the events that report their changes.

use serde::{Deserialize, Serialize};

use crate::Severity;

/// Where one alert stands.
///
/// `Inactive → Pending → Firing → Inactive`; `Pending` is skipped when the rule's
/// `for_duration` is zero, and a pending alert whose condition clears goes back to
/// `Inactive` without any event. A firing alert resolves once its condition has been
/// clear for the rule's `keep_firing_for` (at once when zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum AlertState {
    /// The condition does not hold.
    #[default]
    Inactive,
    /// The condition has held since `since` (seconds), not yet for `for_duration`.
    Pending {
        /// When the condition started to hold.
        since: u64,
    },
    /// The alert is firing, since `since` (seconds).
    Firing {
        /// When the alert fired.
        since: u64,
        /// When the condition stopped holding, while `keep_firing_for` runs.
        #[serde(default)]
        clear_since: Option<u64>,
    },
}

impl AlertState {
    /// Returns whether the alert is firing.
    pub fn is_firing(&self) -> bool {
        matches!(self, Self::Firing { .. })
    }
}

/// What an alert is about.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Signal {
    /// A burn-rate rule: the budget burns too fast over both windows.
    BurnRate {
        /// Burn rate over the long window, at the time of the event.
        long: WindowBurn,
        /// Burn rate over the short window, at the time of the event.
        short: WindowBurn,
        /// The rule's threshold.
        factor: f64,
    },
    /// A signal left its baseline band (see [`crate::anomaly`]).
    Anomaly {
        /// `traffic` (requests per minute), `errors` (bad share) or `latency` (p99
        /// seconds).
        metric: String,
        /// The last minute's value.
        value: f64,
        /// The baseline (EWMA mean) it departed from.
        baseline: f64,
        /// Half-width of the normal band around the baseline.
        band: f64,
    },
    /// A firing alert re-sent from saved state after a restart (no measurement yet).
    Restored,
    /// The alert ended because its SLO, rule or detector was removed or redefined
    /// (only in resolves).
    Removed,
    /// The route had traffic and has had none since `last_traffic` (seconds).
    NoTraffic {
        /// Timestamp of the last recorded event, if any.
        last_traffic: Option<u64>,
    },
}

/// The burn rate over one window, with the counts behind it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct WindowBurn {
    /// The window length, in seconds.
    pub window_secs: u64,
    /// Events in the window.
    pub total: u64,
    /// Bad events in the window.
    pub bad: u64,
    /// `error_rate / (1 − objective)`; 0 without events.
    pub burn_rate: f64,
}

/// Whether an alert started or stopped firing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transition {
    /// The alert fired; reported once per episode.
    Firing,
    /// The alert stopped firing; reported exactly once per episode.
    Resolved,
}

/// One change of one alert, for notifiers.
///
/// `(slo, alert)` identifies an alert across episodes (a stable dedup key); `since`
/// identifies the episode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertEvent {
    /// The SLO's name.
    pub slo: String,
    /// The alert's name within the SLO: a rule's name (`page-1h-5m`) or `no-traffic`.
    pub alert: String,
    /// How urgent the alert is.
    pub severity: Severity,
    /// Fired or resolved.
    pub transition: Transition,
    /// When the episode started firing (seconds).
    pub since: u64,
    /// When this change was seen (seconds): `since` for firing, the resolve time for
    /// resolved.
    pub at: u64,
    /// What the alert measures, with the values at `at`.
    pub signal: Signal,
    /// Error budget remaining over the period at `at` (see
    /// [`Slo::budget_remaining`](crate::Slo::budget_remaining)).
    pub budget_remaining: f64,
}

/// The name of the no-traffic alert.
pub const NO_TRAFFIC: &str = "no-traffic";
