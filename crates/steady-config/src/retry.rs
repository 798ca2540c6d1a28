//! Retries per route (`routes[].retries`): which failures are retried, how often, how
//! fast, and the budget that keeps retries from multiplying load in an outage.

use std::time::Duration;

use serde::de::{self, Deserializer};
use serde::Deserialize;

use crate::limits::Percent;
use crate::units::{de_duration, de_opt_duration, ByteSize};

/// The retry policy of one route.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Retries {
    /// Attempts in all, the first included (so `3` is up to two retries).
    #[serde(default = "defaults::attempts")]
    pub attempts: u32,
    /// Failures that are retried.
    #[serde(default = "defaults::on")]
    pub on: Vec<RetryOn>,
    /// Deadline of each attempt (within the route's `timeout`); none: the route's.
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub per_try_timeout: Option<Duration>,
    /// Retries in flight may be at most this share of the upstream's requests in flight
    /// (but `min_retries` are always allowed), as Envoy's retry budgets.
    #[serde(default = "defaults::budget")]
    pub budget: Percent,
    /// Retries in flight always allowed, whatever the budget says.
    #[serde(default = "defaults::min_retries")]
    pub min_retries: u32,
    /// Base of the exponential back-off between attempts (full jitter).
    #[serde(default = "defaults::backoff", deserialize_with = "de_duration")]
    pub backoff: Duration,
    /// Longest back-off; defaults to ten times `backoff`.
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub max_backoff: Option<Duration>,
    /// Also retry methods that are not idempotent (POST, PATCH) after the request may
    /// have reached the endpoint. Connect failures are always retried.
    #[serde(default)]
    pub non_idempotent: bool,
    /// Request bodies up to this size are read in full first, so a retry can send them
    /// again; larger (or unsized) bodies stream and are not retried once sent.
    #[serde(default = "defaults::buffer")]
    pub buffer: ByteSize,
    /// Hedging: when an idempotent request's attempt has not answered after this long,
    /// send a copy to another endpoint and take whichever answers first. A duration
    /// (`40ms`) or a percentile of the route's recent upstream latency (`p95`).
    #[serde(default)]
    pub hedge_after: Option<HedgeAfter>,
}

/// When to send a hedged copy of a request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum HedgeAfter {
    /// After a fixed delay.
    Delay(Duration),
    /// After this percentile (`50.0..=99.99`) of the route's recent attempt latency.
    Percentile(f64),
}

impl HedgeAfter {
    fn parse(text: &str) -> Result<HedgeAfter, String> {
        if let Some(p) = text.strip_prefix('p') {
            return match p.parse::<f64>() {
                Ok(p) if (50.0..100.0).contains(&p) => Ok(HedgeAfter::Percentile(p)),
                _ => Err(format!(
                    "`{text}` is not a percentile from p50 to p99.99, like `p95`"
                )),
            };
        }
        match crate::units::parse_duration(text) {
            Ok(d) if !d.is_zero() => Ok(HedgeAfter::Delay(d)),
            Ok(_) => Err("must be greater than 0s".to_string()),
            Err(e) => Err(format!("{e}; or a percentile such as `p95`")),
        }
    }
}

impl<'de> Deserialize<'de> for HedgeAfter {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        HedgeAfter::parse(text.trim()).map_err(de::Error::custom)
    }
}

/// A failure a route may retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryOn {
    /// The TCP connect failed (the request never left steady).
    ConnectFailure,
    /// The connection was reset or the endpoint spoke broken HTTP.
    Reset,
    /// An attempt ran out of `per_try_timeout`.
    Timeout,
    /// Any 5xx answer.
    Any5xx,
    /// This status.
    Status(u16),
}

impl RetryOn {
    fn parse(text: &str) -> Result<RetryOn, String> {
        match text {
            "connect-failure" => Ok(RetryOn::ConnectFailure),
            "reset" => Ok(RetryOn::Reset),
            "timeout" => Ok(RetryOn::Timeout),
            "5xx" => Ok(RetryOn::Any5xx),
            _ => match text.parse::<u16>() {
                Ok(code) if (400..=599).contains(&code) => Ok(RetryOn::Status(code)),
                Ok(code) => Err(format!("{code} is not an error status (400 to 599)")),
                Err(_) => Err(format!(
                    "`{text}` is not a retry condition; use `connect-failure`, `reset`, \
                     `timeout`, `5xx` or a status such as `503`"
                )),
            },
        }
    }
}

impl<'de> Deserialize<'de> for RetryOn {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Code(u64),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Code(code) => RetryOn::parse(&code.to_string()).map_err(de::Error::custom),
            Raw::Text(text) => RetryOn::parse(text.trim()).map_err(de::Error::custom),
        }
    }
}

impl Retries {
    /// Every range problem, as `(field, message)`.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if !(1..=10).contains(&self.attempts) {
            out.push((
                "attempts",
                format!(
                    "{} is out of range; attempts (the first included) are 1 to 10",
                    self.attempts
                ),
            ));
        }
        if self.per_try_timeout == Some(Duration::ZERO) {
            out.push(("per_try_timeout", "must be greater than 0s".to_string()));
        }
        if !(self.budget.0.is_finite() && (0.0..=1.0).contains(&self.budget.0)) {
            out.push(("budget", "must be between 0% and 100%".to_string()));
        }
        if self.max_backoff.is_some_and(|m| m < self.backoff) {
            out.push(("max_backoff", "must be at least `backoff`".to_string()));
        }
        out
    }

    /// The longest back-off in effect.
    pub fn effective_max_backoff(&self) -> Duration {
        self.max_backoff.unwrap_or(self.backoff * 10)
    }
}

mod defaults {
    use super::*;

    pub(super) fn attempts() -> u32 {
        2
    }
    pub(super) fn on() -> Vec<RetryOn> {
        vec![
            RetryOn::ConnectFailure,
            RetryOn::Reset,
            RetryOn::Status(503),
        ]
    }
    pub(super) fn budget() -> Percent {
        Percent(0.2)
    }
    pub(super) fn min_retries() -> u32 {
        3
    }
    pub(super) fn backoff() -> Duration {
        Duration::from_millis(25)
    }
    pub(super) fn buffer() -> ByteSize {
        ByteSize(64 * 1024)
    }
}
