//! Fault injection per route (`routes[].fault`): delay or abort a share of requests, or
//! the requests that ask for it by header, so users can rehearse failures.

use std::time::Duration;

use serde::Deserialize;

use crate::limits::Percent;
use crate::units::de_duration;

/// The faults of one route.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    /// Hold a share of requests before forwarding them.
    #[serde(default)]
    pub delay: Option<Delay>,
    /// Answer a share of requests with a status instead of forwarding them.
    #[serde(default)]
    pub abort: Option<Abort>,
    /// Let requests ask for a fault with `x-steady-fault-delay: MS` and
    /// `x-steady-fault-abort: STATUS` (as Envoy's `x-envoy-fault-*` headers).
    #[serde(default)]
    pub headers: bool,
}

/// A delay fault.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Delay {
    /// How long to hold the request.
    #[serde(deserialize_with = "de_duration")]
    pub duration: Duration,
    /// Share of requests delayed.
    #[serde(default = "all")]
    pub percent: Percent,
}

/// An abort fault.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Abort {
    /// The status answered, 200 to 599.
    pub status: u16,
    /// Share of requests aborted.
    #[serde(default = "all")]
    pub percent: Percent,
}

fn all() -> Percent {
    Percent(1.0)
}

impl Fault {
    /// Every range problem, as `(field, message)`.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        let share = |p: Percent| p.0.is_finite() && (0.0..=1.0).contains(&p.0);
        if let Some(delay) = &self.delay {
            if delay.duration.is_zero() {
                out.push(("delay.duration", "must be greater than 0s".to_string()));
            }
            if !share(delay.percent) {
                out.push(("delay.percent", "must be between 0% and 100%".to_string()));
            }
        }
        if let Some(abort) = &self.abort {
            if !(200..=599).contains(&abort.status) || matches!(abort.status, 204 | 205 | 304) {
                out.push((
                    "abort.status",
                    format!(
                        "{} is not a status an abort can answer (200 to 599, with a body: not 204, 205 or 304)",
                        abort.status
                    ),
                ));
            }
            if !share(abort.percent) {
                out.push(("abort.percent", "must be between 0% and 100%".to_string()));
            }
        }
        out
    }
}
