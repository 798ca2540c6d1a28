//! Admission settings: rate limits per route, the Redis that global limits share,
//! the adaptive concurrency limit of an upstream, and request priorities.
//!
//! `steady-limit` enforces these; the proxy's *admit* phase applies them in the order
//! rate limits, then concurrency.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use crate::units::de_duration;

/// One rate limit of a route (`routes[].rate_limit[]`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// What is counted: `client_ip`, `header:NAME`, `cookie:NAME`, `path`, `route`,
    /// `method`, or several joined with `+` (`client_ip+header:x-api-key`).
    pub key: String,
    /// How many requests per period, such as `100/s`, `1000/m` or `50/10s`.
    pub rate: Rate,
    /// Requests allowed at once after a quiet spell; defaults to the rate's count.
    #[serde(default)]
    pub burst: Option<u32>,
    /// `local` (each steady instance counts alone) or `global` (all instances share
    /// one count through Redis).
    #[serde(default)]
    pub scope: Scope,
    /// `enforce` answers 429 over the limit; `shadow` only counts and logs.
    #[serde(default)]
    pub mode: LimitMode,
    /// Name in metrics and in the `RateLimit-Policy` header; defaults to
    /// `ROUTE-INDEX`.
    #[serde(default)]
    pub name: Option<String>,
    /// Most keys tracked at once (memory bound), per instance.
    #[serde(default = "default_max_keys")]
    pub max_keys: usize,
}

fn default_max_keys() -> usize {
    100_000
}

impl RateLimit {
    /// The burst in effect: the configured one, or the rate's count.
    pub fn effective_burst(&self) -> u32 {
        self.burst.unwrap_or(self.rate.count).max(1)
    }

    /// Parses [`RateLimit::key`].
    pub fn try_key_parts(&self) -> Result<Vec<KeyPart>, String> {
        parse_key(&self.key)
    }

    /// The parts of the key.
    ///
    /// # Panics
    ///
    /// If the key is invalid, which [`crate::validate()`] rules out.
    pub fn key_parts(&self) -> Vec<KeyPart> {
        self.try_key_parts()
            .unwrap_or_else(|e| panic!("rate limit key was not validated: {e}"))
    }
}

/// One part of a rate-limit key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KeyPart {
    /// The client's IP address, taken from `X-Forwarded-For` when the connection comes
    /// from one of the listener's `trusted_proxies`.
    ClientIp,
    /// A request header's value (lower-case name). A missing header is an empty value.
    Header(String),
    /// A cookie's value (case-sensitive name).
    Cookie(String),
    /// The path without the query.
    Path,
    /// The route's name: one bucket for the whole route.
    Route,
    /// The request method.
    Method,
}

fn parse_key(key: &str) -> Result<Vec<KeyPart>, String> {
    if key.trim().is_empty() {
        return Err(
            "empty key; use `client_ip`, `header:NAME`, `cookie:NAME`, `path`, \
                    `route` or `method`, or several joined with `+`"
                .into(),
        );
    }
    key.split('+')
        .map(|part| parse_key_part(part.trim()))
        .collect()
}

fn parse_key_part(part: &str) -> Result<KeyPart, String> {
    match part {
        "route" => return Ok(KeyPart::Route),
        "method" => return Ok(KeyPart::Method),
        _ => {}
    }
    // The hash balancers' keys are a subset: parse those the same way.
    match part.parse::<crate::HashKeySource>() {
        Ok(crate::HashKeySource::ClientIp) => Ok(KeyPart::ClientIp),
        Ok(crate::HashKeySource::Path) => Ok(KeyPart::Path),
        Ok(crate::HashKeySource::Header(name)) => Ok(KeyPart::Header(name)),
        Ok(crate::HashKeySource::Cookie(name)) => Ok(KeyPart::Cookie(name)),
        Err(e) if part.starts_with("header:") || part.starts_with("cookie:") => Err(e),
        Err(_) => Err(format!(
            "`{part}` is not a rate-limit key; use `client_ip`, `header:NAME`, `cookie:NAME`, \
             `path`, `route` or `method`, or several joined with `+`"
        )),
    }
}

/// A rate: `count` requests per `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Requests per period, at least 1.
    pub count: u32,
    /// The period.
    pub per: Duration,
}

impl FromStr for Rate {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let hint = "write a count and a period, like `100/s`, `1000/m`, `10/h` or `50/10s`";
        let (count, period) = text
            .trim()
            .split_once('/')
            .ok_or_else(|| format!("`{text}` is not a rate; {hint}"))?;
        let count: u32 = count
            .trim()
            .parse()
            .map_err(|_| format!("`{count}` is not a whole number of requests; {hint}"))?;
        if count == 0 {
            return Err(format!(
                "`{text}` allows nothing; a rate is at least 1 per period"
            ));
        }
        let period = period.trim();
        let per = match period {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            "d" | "day" => Duration::from_secs(86_400),
            other => crate::units::parse_duration(other)
                .map_err(|_| format!("`{other}` is not a period; {hint}"))?,
        };
        if per.is_zero() {
            return Err(format!("`{text}` has an empty period; {hint}"));
        }
        Ok(Rate { count, per })
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct RateVisitor;
        impl Visitor<'_> for RateVisitor {
            type Value = Rate;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a rate such as `100/s` or `1000/m`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Rate, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Rate, E> {
                Err(E::custom(format!(
                    "`{v}` has no period; write `{v}/s` for per second or `{v}/m` for per minute"
                )))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Rate, E> {
                Err(E::custom(format!(
                    "`{v}` is not a rate; write it like `100/s`"
                )))
            }
        }
        deserializer.deserialize_any(RateVisitor)
    }
}

/// Where a limit is counted.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Each steady instance counts on its own: N instances admit N times the rate.
    #[default]
    Local,
    /// All instances share one count in Redis (needs the top-level `redis` section).
    Global,
}

impl Scope {
    /// The name used in the config file and in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Local => "local",
            Scope::Global => "global",
        }
    }
}

/// What happens over the limit.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LimitMode {
    /// Answer 429 Too Many Requests.
    #[default]
    Enforce,
    /// Let the request through; count and log it as limited.
    Shadow,
}

impl LimitMode {
    /// The name used in the config file and in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            LimitMode::Enforce => "enforce",
            LimitMode::Shadow => "shadow",
        }
    }
}

/// The Redis server global limits share (top-level `redis`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Redis {
    /// `redis://host:port` or `redis://host:port/db`.
    pub url: String,
    /// What global limits do while Redis cannot be reached.
    #[serde(default)]
    pub on_failure: OnFailure,
    /// Longest wait for one Redis round trip.
    #[serde(default = "default_redis_timeout", deserialize_with = "de_duration")]
    pub timeout: Duration,
    /// Prefix of every key steady writes.
    #[serde(default = "default_key_prefix")]
    pub key_prefix: String,
}

fn default_redis_timeout() -> Duration {
    Duration::from_millis(50)
}

fn default_key_prefix() -> String {
    "steady:".into()
}

/// Behaviour of global limits while Redis is unreachable.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    /// Each instance enforces the limit on its own (the same quota, per instance).
    #[default]
    Local,
    /// Admit every request.
    Allow,
    /// Refuse every request with 429.
    Deny,
}

impl OnFailure {
    /// The name used in the config file, metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            OnFailure::Local => "local",
            OnFailure::Allow => "allow",
            OnFailure::Deny => "deny",
        }
    }
}

/// How important a route's requests are when their upstream is saturated.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// Shed first.
    Sheddable,
    /// The default.
    #[default]
    Normal,
    /// Shed last.
    Critical,
}

impl FromStr for Priority {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        match s.trim() {
            v if v.eq_ignore_ascii_case("critical") => Ok(Priority::Critical),
            v if v.eq_ignore_ascii_case("normal") => Ok(Priority::Normal),
            v if v.eq_ignore_ascii_case("sheddable") => Ok(Priority::Sheddable),
            _ => Err(()),
        }
    }
}

/// The adaptive concurrency limit of an upstream (`upstreams[].concurrency`); every
/// field has a default, so `concurrency: {}` turns it on.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Concurrency {
    /// Lowest limit, and the limit while the minimum RTT is re-measured.
    #[serde(default = "defaults::min_limit")]
    pub min_limit: u32,
    /// Highest limit.
    #[serde(default = "defaults::max_limit")]
    pub max_limit: u32,
    /// Limit before the first measurement.
    #[serde(default = "defaults::initial_limit")]
    pub initial_limit: u32,
    /// How long latency samples are gathered before the limit is recomputed.
    #[serde(default = "defaults::sample_window", deserialize_with = "de_duration")]
    pub sample_window: Duration,
    /// Which percentile of a window's samples stands for its latency.
    #[serde(default = "defaults::percentile")]
    pub percentile: Percent,
    /// How often the minimum RTT is re-measured (jittered by ±15%).
    #[serde(
        default = "defaults::min_rtt_interval",
        deserialize_with = "de_duration"
    )]
    pub min_rtt_interval: Duration,
    /// Samples taken at `min_limit` to measure the minimum RTT.
    #[serde(default = "defaults::min_rtt_samples")]
    pub min_rtt_samples: u32,
    /// Latency tolerated over the minimum RTT before the limit shrinks.
    #[serde(default = "defaults::buffer")]
    pub buffer: Percent,
    /// Requests that may wait for a slot; 0 sheds at once.
    #[serde(default = "defaults::queue_size")]
    pub queue_size: usize,
    /// How long a request may wait in the queue.
    #[serde(default = "defaults::queue_timeout", deserialize_with = "de_duration")]
    pub queue_timeout: Duration,
}

impl Default for Concurrency {
    fn default() -> Self {
        Self {
            min_limit: defaults::min_limit(),
            max_limit: defaults::max_limit(),
            initial_limit: defaults::initial_limit(),
            sample_window: defaults::sample_window(),
            percentile: defaults::percentile(),
            min_rtt_interval: defaults::min_rtt_interval(),
            min_rtt_samples: defaults::min_rtt_samples(),
            buffer: defaults::buffer(),
            queue_size: defaults::queue_size(),
            queue_timeout: defaults::queue_timeout(),
        }
    }
}

impl Concurrency {
    /// Every range problem, as `(field, message)`.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if self.min_limit == 0 {
            out.push(("min_limit", "must be at least 1".to_string()));
        }
        if self.max_limit < self.min_limit {
            out.push((
                "max_limit",
                format!("{} is below min_limit {}", self.max_limit, self.min_limit),
            ));
        }
        if !(self.min_limit..=self.max_limit.max(self.min_limit)).contains(&self.initial_limit) {
            out.push((
                "initial_limit",
                format!(
                    "{} is outside min_limit..=max_limit ({}..={})",
                    self.initial_limit, self.min_limit, self.max_limit
                ),
            ));
        }
        if self.sample_window.is_zero() {
            out.push(("sample_window", "must be greater than 0s".to_string()));
        }
        if self.min_rtt_interval.is_zero() {
            out.push(("min_rtt_interval", "must be greater than 0s".to_string()));
        }
        if self.min_rtt_samples == 0 {
            out.push(("min_rtt_samples", "must be at least 1".to_string()));
        }
        if !(self.percentile.0 > 0.0 && self.percentile.0 <= 1.0) {
            out.push((
                "percentile",
                "must be above 0% and at most 100%".to_string(),
            ));
        }
        if !(self.buffer.0 >= 0.0 && self.buffer.0 <= 10.0) {
            out.push(("buffer", "must be between 0% and 1000%".to_string()));
        }
        if self.queue_size > 0 && self.queue_timeout.is_zero() {
            out.push((
                "queue_timeout",
                "must be greater than 0s when queue_size is above 0".to_string(),
            ));
        }
        out
    }
}

/// Fixed limits on what one upstream may be asked to carry (`upstreams[].circuit_breakers`),
/// as Envoy's circuit breakers: over a limit, a request is answered 503 at once instead of
/// piling onto an upstream that is already struggling. Each limit is for the whole
/// upstream, across worker threads; absent means no limit.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CircuitBreakers {
    /// Most upstream connections open at once (HTTP/1.1 upstreams).
    #[serde(default)]
    pub max_connections: Option<usize>,
    /// Most requests waiting for a new upstream connection at once.
    #[serde(default)]
    pub max_pending_requests: Option<usize>,
    /// Most requests in flight to the upstream at once.
    #[serde(default)]
    pub max_requests: Option<usize>,
    /// Most retries (and hedged copies) in flight to the upstream at once, whatever the
    /// routes' retry budgets allow (Envoy's `max_retries`).
    #[serde(default)]
    pub max_retries: Option<usize>,
}

impl CircuitBreakers {
    /// Every range problem, as `(field, message)`.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        [
            ("max_connections", self.max_connections),
            ("max_pending_requests", self.max_pending_requests),
            ("max_requests", self.max_requests),
            ("max_retries", self.max_retries),
        ]
        .into_iter()
        .filter(|(_, v)| *v == Some(0))
        .map(|(field, _)| {
            (
                field,
                "must be at least 1; leave it out for no limit".to_string(),
            )
        })
        .collect()
    }
}

/// A share written `25%` (or a bare number of percent, `25`); held as a fraction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Percent(pub f64);

impl<'de> Deserialize<'de> for Percent {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PercentVisitor;
        impl Visitor<'_> for PercentVisitor {
            type Value = Percent;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a percentage such as `25%`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Percent, E> {
                let number = v.trim().strip_suffix('%').unwrap_or(v).trim();
                number
                    .parse::<f64>()
                    .ok()
                    .filter(|p| p.is_finite())
                    .map(|p| Percent(p / 100.0))
                    .ok_or_else(|| E::custom(format!("`{v}` is not a percentage like `25%`")))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Percent, E> {
                Ok(Percent(v / 100.0))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Percent, E> {
                Ok(Percent(v as f64 / 100.0))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Percent, E> {
                Ok(Percent(v as f64 / 100.0))
            }
        }
        deserializer.deserialize_any(PercentVisitor)
    }
}

mod defaults {
    use super::*;

    pub(super) fn min_limit() -> u32 {
        3
    }
    pub(super) fn max_limit() -> u32 {
        1000
    }
    pub(super) fn initial_limit() -> u32 {
        20
    }
    pub(super) fn sample_window() -> Duration {
        Duration::from_millis(100)
    }
    pub(super) fn percentile() -> Percent {
        Percent(0.9)
    }
    pub(super) fn min_rtt_interval() -> Duration {
        Duration::from_secs(60)
    }
    pub(super) fn min_rtt_samples() -> u32 {
        50
    }
    pub(super) fn buffer() -> Percent {
        Percent(0.25)
    }
    pub(super) fn queue_size() -> usize {
        16
    }
    pub(super) fn queue_timeout() -> Duration {
        Duration::from_millis(100)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates() {
        let r: Rate = "100/s".parse().unwrap();
        assert_eq!((r.count, r.per), (100, Duration::from_secs(1)));
        let r: Rate = "1000/m".parse().unwrap();
        assert_eq!(r.per, Duration::from_secs(60));
        let r: Rate = "50/10s".parse().unwrap();
        assert_eq!((r.count, r.per), (50, Duration::from_secs(10)));
        assert!("0/s".parse::<Rate>().unwrap_err().contains("at least 1"));
        assert!("100".parse::<Rate>().unwrap_err().contains("100/s"));
        assert!("100/fortnight"
            .parse::<Rate>()
            .unwrap_err()
            .contains("period"));
        assert!("x/s".parse::<Rate>().is_err());
    }

    #[test]
    fn keys() {
        assert_eq!(parse_key("client_ip").unwrap(), vec![KeyPart::ClientIp]);
        assert_eq!(
            parse_key("client_ip+header:X-Api-Key").unwrap(),
            vec![KeyPart::ClientIp, KeyPart::Header("x-api-key".into())]
        );
        assert_eq!(
            parse_key("cookie:sid+route").unwrap(),
            vec![KeyPart::Cookie("sid".into()), KeyPart::Route]
        );
        assert!(parse_key("client-ip").is_err());
        assert!(parse_key("").is_err());
        assert!(parse_key("header:bad header").is_err());
    }

    #[test]
    fn priorities_parse_case_insensitively() {
        assert_eq!("Critical".parse(), Ok(Priority::Critical));
        assert_eq!(" sheddable ".parse(), Ok(Priority::Sheddable));
        assert_eq!("urgent".parse::<Priority>(), Err(()));
    }

    #[test]
    fn concurrency_ranges() {
        assert!(Concurrency::default().problems().is_empty());
        let c = Concurrency {
            min_limit: 10,
            max_limit: 5,
            initial_limit: 20,
            ..Concurrency::default()
        };
        let fields: Vec<_> = c.problems().into_iter().map(|(f, _)| f).collect();
        assert_eq!(fields, ["max_limit", "initial_limit"]);
    }
}
