//! The `active:` block of an upstream's health settings: serde types with defaults, then
//! an explicit [`ActiveHealth::validate`].
//!
//! ```yaml
//! active:
//!   http: {path: /healthz, expect_status: [200], host: app.internal}
//!   interval: 1s
//!   timeout: 500ms
//!   healthy_threshold: 2
//!   unhealthy_threshold: 2
//! ```
//!
//! The check kind is one key among the others (`http`, `tcp: {}` or `grpc: {service: ""}`).

use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::units::de_duration;

/// Active health checking of every endpoint of one upstream.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "RawActiveHealth")]
pub struct ActiveHealth {
    /// What one probe does and what counts as a pass.
    pub kind: Check,
    /// Time between the end of one probe and the start of the next (before jitter).
    pub interval: Duration,
    /// Deadline for one whole probe: connect, request and response.
    pub timeout: Duration,
    /// Consecutive passes that bring an unhealthy endpoint back.
    pub healthy_threshold: u32,
    /// Consecutive failures that take a healthy endpoint out.
    pub unhealthy_threshold: u32,
    /// Each wait is `interval` times a random factor in `[1 - jitter, 1 + jitter]`, so
    /// many steady instances do not probe in lockstep.
    pub jitter: f64,
    /// State of an endpoint before its thresholds are met for the first time.
    pub initial: Initial,
}

/// One kind of probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// HTTP/1.1 `GET` on a fresh connection.
    Http {
        /// Request path (origin form), starting with `/`.
        path: String,
        /// Statuses that count as a pass.
        expect_status: Vec<u16>,
        /// `Host` header; `None` sends the endpoint's configured name.
        host: Option<String>,
        /// Text the response body must contain (the first 64 KiB are read).
        body_contains: Option<String>,
    },
    /// A TCP connect that completes in time.
    Tcp,
    /// `grpc.health.v1.Health/Check` over HTTP/2 without TLS (h2c).
    Grpc {
        /// Service to ask about; empty asks about the server as a whole.
        service: String,
    },
}

/// What an endpoint is before health checks have decided.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Initial {
    /// Takes traffic at once and needs `unhealthy_threshold` failures to leave (HAProxy's
    /// default): no traffic is lost when steady starts or an endpoint is added.
    #[default]
    Healthy,
    /// Takes no traffic until `healthy_threshold` passes (close to Envoy, which needs
    /// one pass for a new host).
    Unhealthy,
}

/// Default time between probes.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);
/// Default deadline of one probe.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
/// Default consecutive passes to come back.
pub const DEFAULT_HEALTHY_THRESHOLD: u32 = 2;
/// Default consecutive failures to leave.
pub const DEFAULT_UNHEALTHY_THRESHOLD: u32 = 3;
/// Default jitter fraction of the interval.
pub const DEFAULT_JITTER: f64 = 0.1;

impl ActiveHealth {
    /// Returns settings with every default and the given check.
    pub fn new(kind: Check) -> Self {
        Self {
            kind,
            interval: DEFAULT_INTERVAL,
            timeout: DEFAULT_TIMEOUT,
            healthy_threshold: DEFAULT_HEALTHY_THRESHOLD,
            unhealthy_threshold: DEFAULT_UNHEALTHY_THRESHOLD,
            jitter: DEFAULT_JITTER,
            initial: Initial::default(),
        }
    }

    /// Checks ranges and relations serde cannot; returns every problem found.
    pub fn validate(&self) -> Result<(), Vec<ConfigError>> {
        let mut errors = Vec::new();
        if self.healthy_threshold == 0 {
            errors.push(ConfigError::ZeroThreshold("healthy_threshold"));
        }
        if self.unhealthy_threshold == 0 {
            errors.push(ConfigError::ZeroThreshold("unhealthy_threshold"));
        }
        if self.interval.is_zero() {
            errors.push(ConfigError::ZeroInterval);
        }
        if self.timeout.is_zero() {
            errors.push(ConfigError::ZeroTimeout);
        } else if self.timeout >= self.interval && !self.interval.is_zero() {
            errors.push(ConfigError::TimeoutNotBelowInterval {
                timeout: self.timeout,
                interval: self.interval,
            });
        }
        if !(self.jitter.is_finite() && (0.0..1.0).contains(&self.jitter)) {
            errors.push(ConfigError::Jitter(self.jitter));
        }
        if let Check::Http {
            path,
            expect_status,
            ..
        } = &self.kind
        {
            if !path.starts_with('/') {
                errors.push(ConfigError::PathNotAbsolute(path.clone()));
            } else if path.parse::<http::uri::PathAndQuery>().is_err() {
                errors.push(ConfigError::BadPath(path.clone()));
            }
            if expect_status.is_empty() {
                errors.push(ConfigError::NoExpectedStatus);
            }
            for &status in expect_status {
                if !(100..=599).contains(&status) {
                    errors.push(ConfigError::BadStatus(status));
                }
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

/// A setting that deserialized but makes no sense.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A threshold of 0 would flip state without any result.
    #[error("`{0}` must be at least 1")]
    ZeroThreshold(&'static str),
    /// An interval of 0 would probe in a busy loop.
    #[error("`interval` must be more than 0s")]
    ZeroInterval,
    /// A timeout of 0 fails every probe.
    #[error("`timeout` must be more than 0s")]
    ZeroTimeout,
    /// Probes would overlap or run back to back.
    #[error(
        "`timeout` ({}) must be shorter than `interval` ({})",
        humantime::format_duration(*.timeout),
        humantime::format_duration(*.interval)
    )]
    TimeoutNotBelowInterval {
        /// The configured timeout.
        timeout: Duration,
        /// The configured interval.
        interval: Duration,
    },
    /// Jitter outside `[0, 1)` could make a wait zero or negative.
    #[error("`jitter` ({0}) must be a fraction from 0 up to (not including) 1, like 0.1")]
    Jitter(f64),
    /// The HTTP path is not in origin form.
    #[error("`http.path` (`{0}`) must start with `/`")]
    PathNotAbsolute(String),
    /// The HTTP path has characters a request line cannot carry.
    #[error("`http.path` (`{0}`) is not a valid request path")]
    BadPath(String),
    /// No status could ever pass.
    #[error("`http.expect_status` must list at least one status")]
    NoExpectedStatus,
    /// Not an HTTP status code.
    #[error("`http.expect_status` has {0}, which is not an HTTP status (100 to 599)")]
    BadStatus(u16),
}

impl ConfigError {
    /// Returns the offending key, relative to the `active:` block, for error locations.
    pub fn field(&self) -> &'static str {
        match self {
            Self::ZeroThreshold(field) => field,
            Self::ZeroInterval => "interval",
            Self::ZeroTimeout | Self::TimeoutNotBelowInterval { .. } => "timeout",
            Self::Jitter(_) => "jitter",
            Self::PathNotAbsolute(_) | Self::BadPath(_) => "http.path",
            Self::NoExpectedStatus | Self::BadStatus(_) => "http.expect_status",
        }
    }
}

/// The YAML shape, with the check kind as one optional key per kind.
///
/// serde cannot combine `flatten` with `deny_unknown_fields`, hence this detour.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawActiveHealth {
    #[serde(default)]
    http: Option<RawHttp>,
    #[serde(default, deserialize_with = "de_present")]
    tcp: Option<RawTcp>,
    #[serde(default, deserialize_with = "de_present")]
    grpc: Option<RawGrpc>,
    #[serde(default = "default_interval", deserialize_with = "de_duration")]
    interval: Duration,
    #[serde(default = "default_timeout", deserialize_with = "de_duration")]
    timeout: Duration,
    #[serde(default = "default_healthy_threshold")]
    healthy_threshold: u32,
    #[serde(default = "default_unhealthy_threshold")]
    unhealthy_threshold: u32,
    #[serde(default = "default_jitter")]
    jitter: f64,
    #[serde(default)]
    initial: Initial,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    path: String,
    #[serde(default = "default_expect_status")]
    expect_status: Vec<u16>,
    #[serde(default)]
    host: Option<String>,
    #[serde(default)]
    body_contains: Option<String>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTcp {}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGrpc {
    #[serde(default)]
    service: String,
}

impl TryFrom<RawActiveHealth> for ActiveHealth {
    type Error = String;

    fn try_from(raw: RawActiveHealth) -> Result<Self, String> {
        let mut kinds = Vec::new();
        if let Some(http) = raw.http {
            kinds.push(Check::Http {
                path: http.path,
                expect_status: http.expect_status,
                host: http.host,
                body_contains: http.body_contains,
            });
        }
        if raw.tcp.is_some() {
            kinds.push(Check::Tcp);
        }
        if let Some(grpc) = raw.grpc {
            kinds.push(Check::Grpc {
                service: grpc.service,
            });
        }
        if kinds.len() != 1 {
            return Err(format!(
                "give exactly one check kind: `http: {{path: /healthz}}`, `tcp: {{}}` or \
                 `grpc: {{service: \"\"}}` (found {})",
                kinds.len()
            ));
        }
        Ok(Self {
            kind: kinds.remove(0),
            interval: raw.interval,
            timeout: raw.timeout,
            healthy_threshold: raw.healthy_threshold,
            unhealthy_threshold: raw.unhealthy_threshold,
            jitter: raw.jitter,
            initial: raw.initial,
        })
    }
}

fn default_interval() -> Duration {
    DEFAULT_INTERVAL
}
fn default_timeout() -> Duration {
    DEFAULT_TIMEOUT
}
fn default_healthy_threshold() -> u32 {
    DEFAULT_HEALTHY_THRESHOLD
}
fn default_unhealthy_threshold() -> u32 {
    DEFAULT_UNHEALTHY_THRESHOLD
}
fn default_jitter() -> f64 {
    DEFAULT_JITTER
}
fn default_expect_status() -> Vec<u16> {
    vec![200]
}

/// Treats a present key with an empty value (`tcp:` or `tcp: null`) like `tcp: {}`.
fn de_present<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Option::<T>::deserialize(deserializer).map(|v| Some(v.unwrap_or_default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<ActiveHealth, String> {
        serde_yaml_ng::from_str(yaml).map_err(|e| e.to_string())
    }

    #[test]
    fn http_shape_from_the_docs() {
        let got = parse(
            "{http: {path: /healthz, expect_status: [200], host: app.internal}, \
             interval: 1s, timeout: 500ms, healthy_threshold: 2, unhealthy_threshold: 2}",
        )
        .unwrap();
        assert_eq!(
            got.kind,
            Check::Http {
                path: "/healthz".into(),
                expect_status: vec![200],
                host: Some("app.internal".into()),
                body_contains: None,
            }
        );
        assert_eq!(got.interval, Duration::from_secs(1));
        assert_eq!(got.timeout, Duration::from_millis(500));
        assert_eq!((got.healthy_threshold, got.unhealthy_threshold), (2, 2));
        assert_eq!(got.jitter, DEFAULT_JITTER);
        assert_eq!(got.initial, Initial::Healthy);
        assert_eq!(got.validate(), Ok(()));
    }

    #[test]
    fn defaults_and_other_kinds() {
        let tcp = parse("tcp: {}").unwrap();
        assert_eq!(tcp, ActiveHealth::new(Check::Tcp));
        assert_eq!(parse("tcp:").unwrap().kind, Check::Tcp);
        let grpc = parse("{grpc: {service: \"\"}, initial: unhealthy}").unwrap();
        assert_eq!(
            grpc.kind,
            Check::Grpc {
                service: String::new()
            }
        );
        assert_eq!(grpc.initial, Initial::Unhealthy);
        assert_eq!(
            parse("grpc: {service: app.v1.Api}").unwrap().kind,
            Check::Grpc {
                service: "app.v1.Api".into()
            }
        );
        let http = parse("http: {path: /}").unwrap();
        let Check::Http { expect_status, .. } = http.kind else {
            panic!("not http")
        };
        assert_eq!(expect_status, vec![200]);
        assert_eq!(ActiveHealth::new(Check::Tcp).validate(), Ok(()));
    }

    #[test]
    fn shape_errors_read_well() {
        let err = parse("{tcp: {}, http: {path: /}}").unwrap_err();
        assert!(err.contains("exactly one check kind"), "{err}");
        let err = parse("interval: 1s").unwrap_err();
        assert!(err.contains("exactly one check kind"), "{err}");
        let err = parse("{tcp: {}, intervall: 1s}").unwrap_err();
        assert!(err.contains("unknown field `intervall`"), "{err}");
        let err = parse("http: {path: /, status: [200]}").unwrap_err();
        assert!(err.contains("unknown field `status`"), "{err}");
        let err = parse("{tcp: {}, interval: 5}").unwrap_err();
        assert!(err.contains("`5s`"), "{err}");
        let err = parse("{tcp: {}, timeout: soon}").unwrap_err();
        assert!(err.contains("not a duration"), "{err}");
    }

    #[test]
    fn validate_reports_every_problem() {
        let mut config = ActiveHealth::new(Check::Http {
            path: "healthz".into(),
            expect_status: vec![200, 999],
            host: None,
            body_contains: None,
        });
        config.healthy_threshold = 0;
        config.unhealthy_threshold = 0;
        config.timeout = Duration::from_secs(5);
        config.jitter = 1.5;
        let errors = config.validate().unwrap_err();
        let fields: Vec<_> = errors.iter().map(ConfigError::field).collect();
        assert_eq!(
            fields,
            [
                "healthy_threshold",
                "unhealthy_threshold",
                "timeout",
                "jitter",
                "http.path",
                "http.expect_status"
            ]
        );
        let shown = errors[2].to_string();
        assert_eq!(shown, "`timeout` (5s) must be shorter than `interval` (5s)");

        let mut config = ActiveHealth::new(Check::Tcp);
        config.interval = Duration::ZERO;
        config.jitter = f64::NAN;
        let errors = config.validate().unwrap_err();
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert_eq!(errors[0], ConfigError::ZeroInterval);
        assert!(matches!(errors[1], ConfigError::Jitter(j) if j.is_nan()));

        let http = ActiveHealth::new(Check::Http {
            path: "/a b".into(),
            expect_status: vec![],
            host: None,
            body_contains: None,
        });
        let errors = http.validate().unwrap_err();
        assert_eq!(
            errors,
            [
                ConfigError::BadPath("/a b".into()),
                ConfigError::NoExpectedStatus
            ]
        );
    }
}
