//! One SLO's live state: its buckets, its alerts, the queries and the evaluation.

use serde::{Deserialize, Serialize};

use crate::{
    alert::{AlertEvent, AlertState, Signal, Transition, WindowBurn, NO_TRAFFIC},
    buckets::{Buckets, Counts, Slot},
    config::{ConfigError, Severity, SloConfig},
};

/// One SLO: records good/total counts and evaluates its alert rules.
///
/// Time is always passed in as seconds (e.g. since the Unix epoch); the engine never
/// reads a clock.
#[derive(Debug, Clone)]
pub struct Slo {
    config: SloConfig,
    buckets: Buckets,
    /// One state per rule of `config.rules`, in order.
    rules: Vec<AlertState>,
    no_traffic: AlertState,
    /// Timestamp of the newest recording with at least one event.
    last_traffic: Option<u64>,
}

impl Slo {
    /// Makes an SLO with no history, after validating its config.
    pub fn try_new(config: SloConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self {
            buckets: Buckets::new(config.period.as_secs()),
            rules: vec![AlertState::Inactive; config.rules.len()],
            no_traffic: AlertState::Inactive,
            last_traffic: None,
            config,
        })
    }

    /// Returns the config.
    pub fn config(&self) -> &SloConfig {
        &self.config
    }

    /// Records `total` events stamped `now`, of which `good` met the objective
    /// (`good` above `total` counts as `total`).
    ///
    /// A latency SLI is recorded the same way: good is the count under the threshold.
    pub fn record(&mut self, now: u64, good: u64, total: u64) {
        if total == 0 {
            return;
        }
        self.buckets.add(
            now,
            Counts {
                good: good.min(total),
                total,
            },
        );
        self.last_traffic = Some(self.last_traffic.map_or(now, |t| t.max(now)));
    }

    /// Records one event stamped `now`.
    pub fn record_event(&mut self, now: u64, ok: bool) {
        self.record(now, u64::from(ok), 1);
    }

    /// Returns the counts over the last `window_secs` at `now` (see
    /// [`buckets`](crate::buckets) for the precision).
    pub fn counts(&self, now: u64, window_secs: u64) -> Counts {
        self.buckets.sum(now, window_secs)
    }

    /// Returns the share of bad events over the window, or `None` without events.
    pub fn error_rate(&self, now: u64, window_secs: u64) -> Option<f64> {
        self.counts(now, window_secs).error_rate()
    }

    /// Returns how fast the window spends the budget, `error_rate / (1 − objective)`
    /// (1.0 spends exactly the budget over the period), or `None` without events.
    pub fn burn_rate(&self, now: u64, window_secs: u64) -> Option<f64> {
        self.error_rate(now, window_secs)
            .map(|r| r / self.config.budget())
    }

    /// Returns the share of the period's error budget left: `1 − bad / (budget × total)`
    /// over the period. 1.0 without events; negative once the budget is overspent.
    pub fn budget_remaining(&self, now: u64) -> f64 {
        match self.burn_rate(now, self.config.period.as_secs()) {
            Some(burn) => 1.0 - burn,
            None => 1.0,
        }
    }

    /// Returns the achieved availability over the period (good / total), for an
    /// SLA-style report, or `None` without events.
    pub fn availability(&self, now: u64) -> Option<f64> {
        self.error_rate(now, self.config.period.as_secs())
            .map(|r| 1.0 - r)
    }

    /// Returns the number of buckets held (fixed at construction, whatever the traffic).
    pub fn bucket_count(&self) -> usize {
        self.buckets.bucket_count()
    }

    /// Returns each alert's name, severity and state: the rules in config order, then
    /// `no-traffic` when it is on.
    pub fn alerts(&self) -> Vec<(String, Severity, AlertState)> {
        let mut out: Vec<_> = self
            .config
            .rules
            .iter()
            .zip(&self.rules)
            .map(|(r, s)| (r.name(), r.severity, *s))
            .collect();
        if self.config.no_traffic.is_some() {
            out.push((NO_TRAFFIC.to_owned(), Severity::Ticket, self.no_traffic));
        }
        out
    }

    /// Returns the most severe firing alert's severity, which is what a user sees for
    /// this SLO, or `None` when nothing fires.
    pub fn worst(&self) -> Option<Severity> {
        self.alerts()
            .into_iter()
            .filter(|(_, _, s)| s.is_firing())
            .map(|(_, sev, _)| sev)
            .max()
    }

    /// Returns everything the admin API and dashboard show for this SLO at `now`:
    /// objective, budget, availability, the burn rate over every alert window and the
    /// period (shortest first), and each alert's state.
    pub fn status(&self, now: u64) -> SloStatus {
        let period = self.config.period.as_secs();
        let mut windows: Vec<u64> = self
            .config
            .rules
            .iter()
            .flat_map(|r| [r.long_window.as_secs(), r.short_window.as_secs()])
            .chain([period])
            .collect();
        windows.sort_unstable();
        windows.dedup();
        SloStatus {
            name: self.config.name.clone(),
            objective: self.config.objective,
            period_secs: period,
            at: now,
            budget_remaining: self.budget_remaining(now),
            availability: self.availability(now),
            windows: windows.into_iter().map(|w| self.window(now, w)).collect(),
            alerts: self
                .alerts()
                .into_iter()
                .map(|(name, severity, state)| AlertStatus {
                    name,
                    severity,
                    state,
                })
                .collect(),
            worst: self.worst(),
        }
    }

    fn window(&self, now: u64, window_secs: u64) -> WindowBurn {
        let c = self.counts(now, window_secs);
        WindowBurn {
            window_secs,
            total: c.total,
            bad: c.bad(),
            burn_rate: c.error_rate().map_or(0.0, |r| r / self.config.budget()),
        }
    }

    /// Evaluates every alert at `now` and returns the changes: each alert reports
    /// [`Transition::Firing`] once when it fires and [`Transition::Resolved`] once when
    /// it stops. Call it periodically (e.g. every 10 s); calling it more often changes
    /// nothing but the detection delay.
    ///
    /// A burn-rate rule's condition holds while both windows burn faster than its
    /// factor and its long window holds at least `min_events` events. Each rule is
    /// its own alert (so a page and a ticket can fire together); [`Slo::worst`] gives
    /// the one to show.
    pub fn evaluate(&mut self, now: u64) -> Vec<AlertEvent> {
        let mut events = Vec::new();
        let budget_remaining = self.budget_remaining(now);
        for i in 0..self.config.rules.len() {
            let rule = &self.config.rules[i];
            let long = self.window(now, rule.long_window.as_secs());
            let short = self.window(now, rule.short_window.as_secs());
            let holds = long.total >= self.config.min_events
                && long.burn_rate > rule.factor
                && short.burn_rate > rule.factor;
            let signal = Signal::BurnRate {
                long,
                short,
                factor: rule.factor,
            };
            let (name, severity) = (rule.name(), rule.severity);
            let delays = (rule.for_duration.as_secs(), rule.keep_firing_for.as_secs());
            if let Some(event) =
                step(&mut self.rules[i], holds, now, delays).map(|(t, since)| AlertEvent {
                    slo: self.config.name.clone(),
                    alert: name,
                    severity,
                    transition: t,
                    since,
                    at: now,
                    signal,
                    budget_remaining,
                })
            {
                events.push(event);
            }
        }
        if let Some(after) = self.config.no_traffic {
            let holds = self
                .last_traffic
                .is_some_and(|t| now.saturating_sub(t) >= after.as_secs());
            if let Some((t, since)) = step(&mut self.no_traffic, holds, now, (0, 0)) {
                events.push(AlertEvent {
                    slo: self.config.name.clone(),
                    alert: NO_TRAFFIC.to_owned(),
                    severity: Severity::Ticket,
                    transition: t,
                    since,
                    at: now,
                    signal: Signal::NoTraffic {
                        last_traffic: self.last_traffic,
                    },
                    budget_remaining,
                });
            }
        }
        events
    }

    /// Serializes the buckets and alert states (JSON), to be written to a state file.
    ///
    /// The gateway saves every few seconds and at shutdown; a crash loses what was
    /// recorded since the last save, and nothing else.
    pub fn save(&self) -> Vec<u8> {
        let state = SavedState {
            version: STATE_VERSION,
            name: self.config.name.clone(),
            tiers: self
                .buckets
                .tiers()
                .iter()
                .map(|t| SavedTier {
                    width: t.width(),
                    slots: t
                        .slots()
                        .iter()
                        .filter(|s| s.counts.total > 0)
                        .copied()
                        .collect(),
                })
                .collect(),
            alerts: self
                .config
                .rules
                .iter()
                .zip(&self.rules)
                .map(|(r, s)| (r.name(), *s))
                .chain([(NO_TRAFFIC.to_owned(), self.no_traffic)])
                .collect(),
            last_traffic: self.last_traffic,
        };
        // Serializing plain structs of numbers and strings to a Vec cannot fail.
        serde_json::to_vec(&state).unwrap_or_default()
    }

    /// Makes an SLO from `config` and state written by [`Slo::save`].
    ///
    /// The config may have changed since the save: a longer or shorter period keeps the
    /// buckets that still fit, and alerts are matched by name (rules that are new start
    /// inactive). State that does not parse, is from another format version or another
    /// SLO, or has impossible counts is refused with a [`StateError`].
    pub fn load(config: SloConfig, bytes: &[u8]) -> Result<Self, StateError> {
        let mut slo = Self::try_new(config)?;
        let state: SavedState =
            serde_json::from_slice(bytes).map_err(|e| StateError::Corrupt(e.to_string()))?;
        if state.version != STATE_VERSION {
            return Err(StateError::Version(state.version));
        }
        if state.name != slo.config.name {
            return Err(StateError::OtherSlo(state.name));
        }
        for saved in &state.tiers {
            let Some(tier) = slo
                .buckets
                .tiers_mut()
                .iter_mut()
                .find(|t| t.width() == saved.width)
            else {
                return Err(StateError::Corrupt(format!(
                    "no bucket ring of width {}s",
                    saved.width
                )));
            };
            for slot in &saved.slots {
                if slot.counts.good > slot.counts.total {
                    return Err(StateError::Corrupt(format!(
                        "bucket {} has more good events than events",
                        slot.index
                    )));
                }
                let at = slot.index.checked_mul(saved.width).ok_or_else(|| {
                    StateError::Corrupt(format!("bucket index {} out of range", slot.index))
                })?;
                tier.add(at, slot.counts);
            }
        }
        for (name, state) in state.alerts {
            if name == NO_TRAFFIC {
                slo.no_traffic = state;
            } else if let Some(i) = slo.config.rules.iter().position(|r| r.name() == name) {
                slo.rules[i] = state;
            }
        }
        slo.last_traffic = state.last_traffic;
        Ok(slo)
    }
}

/// One SLO at one moment, for the admin API, the dashboard and SLA reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SloStatus {
    /// The SLO's name.
    pub name: String,
    /// Share of good events to achieve.
    pub objective: f64,
    /// The period the budget covers, in seconds.
    pub period_secs: u64,
    /// When this status was taken (seconds).
    pub at: u64,
    /// See [`Slo::budget_remaining`].
    pub budget_remaining: f64,
    /// See [`Slo::availability`].
    pub availability: Option<f64>,
    /// Burn rate over every rule window and the period, shortest first.
    pub windows: Vec<WindowBurn>,
    /// Each alert's state: the rules in config order, then `no-traffic` when it is on.
    pub alerts: Vec<AlertStatus>,
    /// See [`Slo::worst`].
    pub worst: Option<Severity>,
}

/// One alert's state in an [`SloStatus`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertStatus {
    /// The alert's name (`page-1h-5m`, `no-traffic`).
    pub name: String,
    /// How urgent it is.
    pub severity: Severity,
    /// Where it stands.
    pub state: AlertState,
}

/// Moves one alert's state, given whether its condition holds and its
/// `(for_duration, keep_firing_for)` in seconds; returns the transition to report and
/// the episode start.
pub(crate) fn step(
    state: &mut AlertState,
    holds: bool,
    now: u64,
    (delay, keep): (u64, u64),
) -> Option<(Transition, u64)> {
    let firing = |since| AlertState::Firing {
        since,
        clear_since: None,
    };
    match (*state, holds) {
        (AlertState::Inactive, true) if delay == 0 => {
            *state = firing(now);
            Some((Transition::Firing, now))
        }
        (AlertState::Inactive, true) => {
            *state = AlertState::Pending { since: now };
            None
        }
        (AlertState::Pending { since }, true) if now.saturating_sub(since) >= delay => {
            *state = firing(now);
            Some((Transition::Firing, now))
        }
        (AlertState::Firing { since, .. }, true) => {
            *state = firing(since);
            None
        }
        (AlertState::Firing { since, clear_since }, false) => {
            let clear = clear_since.unwrap_or(now);
            if now.saturating_sub(clear) >= keep {
                *state = AlertState::Inactive;
                Some((Transition::Resolved, since))
            } else {
                *state = AlertState::Firing {
                    since,
                    clear_since: Some(clear),
                };
                None
            }
        }
        (AlertState::Pending { .. }, false) => {
            *state = AlertState::Inactive;
            None
        }
        _ => None,
    }
}

const STATE_VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct SavedState {
    version: u32,
    name: String,
    tiers: Vec<SavedTier>,
    alerts: Vec<(String, AlertState)>,
    last_traffic: Option<u64>,
}

#[derive(Serialize, Deserialize)]
struct SavedTier {
    width: u64,
    /// Only the buckets with events, so a quiet SLO saves small.
    slots: Vec<Slot>,
}

/// Why saved state could not be loaded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StateError {
    /// The config given with the state is invalid.
    #[error("invalid SLO config: {0}")]
    Config(#[from] ConfigError),
    /// The bytes are not state written by [`Slo::save`].
    #[error("corrupt SLO state: {0}")]
    Corrupt(String),
    /// The state was written by another format version.
    #[error("SLO state format version {0} is not supported (expected {STATE_VERSION})")]
    Version(u32),
    /// The state belongs to another SLO.
    #[error("SLO state belongs to SLO {0:?}")]
    OtherSlo(String),
}
