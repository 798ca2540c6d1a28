//! Proactive (ticket-level) alerts: traffic, error rate and latency leaving their
//! recent baseline.
//!
//! Each signal is sampled once a minute and compared with an exponentially weighted
//! moving average and variance of its past samples (an EWMA band, as in Holt-Winters
//! without seasonality). A sample is anomalous when it is more than `sigmas` standard
//! deviations from the mean, with a floor on the deviation so a perfectly flat baseline
//! does not turn every wobble into an alert: 10% of the mean, and at least one request
//! per minute, one percentage point of errors or one millisecond of latency. Traffic
//! is anomalous both ways (a drop is as telling as a spike); errors and latency only
//! upwards. The alert fires once a signal has been anomalous for `for_duration`, after
//! a `warmup` in which the baselines learn, and resolves as soon as it is back in band.
//!
//! The mean keeps learning while a signal is anomalous, so a lasting change of level
//! becomes the new normal after a few half-lives and the alert resolves; the variance
//! learns only from samples in band, so an anomaly cannot widen its own band.

use std::time::Duration;

use crate::alert::{AlertEvent, AlertState, Signal};
use crate::slo::{step, AlertStatus};
use crate::Severity;

/// Sampling step of the baselines, in seconds.
pub const STEP_SECS: u64 = 60;
/// Error ratios are judged only on minutes with at least this many requests.
const MIN_REQUESTS_FOR_RATIO: u64 = 20;

/// Settings of the anomaly bands.
#[derive(Debug, Clone, PartialEq)]
pub struct AnomalyConfig {
    /// Band half-width, in standard deviations.
    pub sigmas: f64,
    /// A sample's weight in the baseline halves after this long.
    pub half_life: Duration,
    /// How long a signal must stay out of band before its alert fires.
    pub for_duration: Duration,
    /// Time the baselines learn before any alert may fire.
    pub warmup: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Both,
    Up,
}

/// The three watched signals, in alert order.
const SIGNALS: [(&str, Direction, f64); 3] = [
    ("traffic", Direction::Both, 1.0),
    ("errors", Direction::Up, 0.01),
    ("latency", Direction::Up, 0.001),
];

/// An EWMA mean and variance.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Baseline {
    mean: f64,
    var: f64,
    samples: u64,
}

impl Baseline {
    /// Folds in one sample with weight `alpha`; the variance learns only from
    /// samples in band (`normal`), so an anomaly cannot widen its own band.
    pub fn update(&mut self, x: f64, alpha: f64, normal: bool) {
        if self.samples == 0 {
            self.mean = x;
            self.var = 0.0;
        } else {
            let diff = x - self.mean;
            self.mean += alpha * diff;
            if normal {
                self.var = (1.0 - alpha) * (self.var + alpha * diff * diff);
            }
        }
        self.samples += 1;
    }

    /// The mean.
    pub fn mean(&self) -> f64 {
        self.mean
    }

    /// Half-width of the normal band: `sigmas` standard deviations, floored.
    pub fn band(&self, sigmas: f64, floor: f64) -> f64 {
        (sigmas * self.var.sqrt())
            .max(0.1 * self.mean.abs())
            .max(floor)
    }
}

/// The anomaly alerts of one SLO.
#[derive(Debug, Clone)]
pub struct Watch {
    config: AnomalyConfig,
    baselines: [Baseline; 3],
    states: [AlertState; 3],
    /// First sample time, for the warm-up.
    started: Option<u64>,
    /// The minute being accumulated: start, requests, bad ones.
    minute: Option<(u64, u64, u64)>,
}

impl Watch {
    /// Starts learning.
    pub fn new(config: AnomalyConfig) -> Watch {
        Watch {
            config,
            baselines: Default::default(),
            states: Default::default(),
            started: None,
            minute: None,
        }
    }

    /// Adds `total` requests of which `bad` failed, seen up to `now`, with the routes'
    /// recent p99 latency in seconds (if any); once a minute has been gathered, judges
    /// it and returns the alert changes.
    pub fn observe(
        &mut self,
        now: u64,
        slo: &str,
        total: u64,
        bad: u64,
        p99: Option<f64>,
        budget_remaining: f64,
    ) -> Vec<AlertEvent> {
        self.started.get_or_insert(now);
        let (start, t, b) = self.minute.get_or_insert((now, 0, 0));
        *t += total;
        *b += bad.min(total);
        if now < *start + STEP_SECS {
            return Vec::new();
        }
        let (requests, failed) = (*t, *b);
        self.minute = Some((now, 0, 0));
        let warm = now.saturating_sub(self.started.unwrap_or(now)) >= self.config.warmup.as_secs();
        let alpha = 1.0 - 0.5f64.powf(STEP_SECS as f64 / self.config.half_life.as_secs_f64());
        let samples = [
            Some(requests as f64),
            (requests >= MIN_REQUESTS_FOR_RATIO).then(|| failed as f64 / requests as f64),
            p99.filter(|_| requests > 0),
        ];
        let mut events = Vec::new();
        for (i, sample) in samples.into_iter().enumerate() {
            let (name, direction, floor) = SIGNALS[i];
            let delays = (self.config.for_duration.as_secs(), 0);
            // The anomaly's state and what the signal showed: (out of band, value,
            // baseline, band).
            let (out, value, baseline, band) = match sample {
                // Too few requests to judge: no evidence of an anomaly, so a firing
                // alert resolves rather than waiting for traffic to come back.
                None => (false, 0.0, self.baselines[i].mean(), 0.0),
                Some(x) => {
                    let base = self.baselines[i];
                    let band = base.band(self.config.sigmas, floor);
                    let deviation = x - base.mean();
                    let out = warm
                        && base.samples >= 2
                        && match direction {
                            Direction::Both => deviation.abs() > band,
                            Direction::Up => deviation > band,
                        };
                    self.baselines[i].update(x, alpha, !out);
                    (out, x, base.mean(), band)
                }
            };
            if let Some((transition, since)) = step(&mut self.states[i], out, now, delays) {
                events.push(AlertEvent {
                    slo: slo.to_owned(),
                    alert: format!("anomaly-{name}"),
                    severity: Severity::Ticket,
                    transition,
                    since,
                    at: now,
                    signal: Signal::Anomaly {
                        metric: name.to_owned(),
                        value,
                        baseline,
                        band,
                    },
                    budget_remaining,
                });
            }
        }
        events
    }

    /// Each anomaly alert's state, for [`crate::SloStatus::alerts`].
    pub fn alerts(&self) -> Vec<AlertStatus> {
        SIGNALS
            .iter()
            .zip(&self.states)
            .map(|((name, _, _), state)| AlertStatus {
                name: format!("anomaly-{name}"),
                severity: Severity::Ticket,
                state: *state,
            })
            .collect()
    }

    /// Whether any anomaly alert fires.
    pub fn firing(&self) -> bool {
        self.states.iter().any(AlertState::is_firing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Transition;

    fn watch() -> Watch {
        Watch::new(AnomalyConfig {
            sigmas: 4.0,
            half_life: Duration::from_secs(3600),
            for_duration: Duration::from_secs(300),
            warmup: Duration::from_secs(3600),
        })
    }

    /// Feeds one sample per second for `secs` seconds at `rate` requests/s with `bad`
    /// per second and latency `p99`; returns the events.
    fn feed(w: &mut Watch, from: u64, secs: u64, rate: u64, bad: u64, p99: f64) -> Vec<AlertEvent> {
        let mut out = Vec::new();
        for t in from..from + secs {
            // A little noise so the variance is not zero.
            let jitter = (t * 7919) % 3;
            out.extend(w.observe(t, "s", rate + jitter, bad, Some(p99), 1.0));
        }
        out
    }

    #[test]
    fn steady_traffic_never_alerts() {
        let mut w = watch();
        assert!(feed(&mut w, 0, 6 * 3600, 100, 0, 0.020).is_empty());
    }

    #[test]
    fn nothing_fires_during_the_warmup() {
        let mut w = watch();
        feed(&mut w, 0, 600, 100, 0, 0.020);
        assert!(feed(&mut w, 600, 1200, 100, 50, 0.5).is_empty());
    }

    #[test]
    fn an_error_spike_fires_after_for_and_resolves_once() {
        let mut w = watch();
        let t0 = 2 * 3600;
        assert!(feed(&mut w, 0, t0, 100, 0, 0.020).is_empty());
        let events = feed(&mut w, t0, 900, 100, 10, 0.020);
        let fired: Vec<_> = events
            .iter()
            .filter(|e| e.transition == Transition::Firing)
            .collect();
        assert_eq!(fired.len(), 1, "{events:?}");
        assert_eq!(fired[0].alert, "anomaly-errors");
        // Fired after `for` (5 min) of anomalous minutes, not at once.
        assert!(
            fired[0].at >= t0 + 300 && fired[0].at <= t0 + 420,
            "{}",
            fired[0].at
        );
        let events = feed(&mut w, t0 + 900, 600, 100, 0, 0.020);
        assert_eq!(
            events
                .iter()
                .filter(|e| e.transition == Transition::Resolved)
                .count(),
            1,
            "{events:?}"
        );
    }

    #[test]
    fn a_traffic_drop_and_a_latency_rise_fire() {
        let mut w = watch();
        let t0 = 2 * 3600;
        feed(&mut w, 0, t0, 100, 0, 0.020);
        let events = feed(&mut w, t0, 600, 10, 0, 0.020);
        assert!(
            events.iter().any(|e| e.alert == "anomaly-traffic"),
            "{events:?}"
        );
        let mut w = watch();
        feed(&mut w, 0, t0, 100, 0, 0.020);
        let events = feed(&mut w, t0, 600, 100, 0, 0.400);
        assert!(
            events.iter().any(|e| e.alert == "anomaly-latency"),
            "{events:?}"
        );
        // Faster than usual is not an alert.
        let mut w = watch();
        feed(&mut w, 0, t0, 100, 0, 0.400);
        assert!(feed(&mut w, t0, 600, 100, 0, 0.020).is_empty());
    }

    #[test]
    fn a_firing_error_alert_resolves_when_traffic_stops() {
        let mut w = watch();
        let t0 = 2 * 3600;
        feed(&mut w, 0, t0, 100, 0, 0.020);
        let fired = feed(&mut w, t0, 600, 100, 20, 0.020);
        assert!(fired.iter().any(|e| e.alert == "anomaly-errors"));
        // No requests at all: no error or latency sample, so both must not stay firing.
        let mut events = Vec::new();
        for t in t0 + 600..t0 + 900 {
            events.extend(w.observe(t, "s", 0, 0, None, 1.0));
        }
        assert!(
            events
                .iter()
                .any(|e| e.alert == "anomaly-errors" && e.transition == Transition::Resolved),
            "{events:?}"
        );
        assert!(!w
            .alerts()
            .iter()
            .any(|a| a.name == "anomaly-errors" && a.state.is_firing()));
    }

    #[test]
    fn a_lasting_change_becomes_the_new_normal() {
        let mut w = watch();
        feed(&mut w, 0, 2 * 3600, 100, 0, 0.020);
        let events = feed(&mut w, 2 * 3600, 8 * 3600, 300, 0, 0.020);
        let fired = events
            .iter()
            .filter(|e| e.transition == Transition::Firing)
            .count();
        let resolved = events
            .iter()
            .filter(|e| e.transition == Transition::Resolved)
            .count();
        assert_eq!((fired, resolved), (1, 1), "{events:?}");
    }
}
