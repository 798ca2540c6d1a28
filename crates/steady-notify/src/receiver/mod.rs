//! What each receiver API expects: one [`Call`] per alert change. Pure: no I/O.
//!
//! - [`alertmanager`]: Alertmanager API v2, `POST /api/v2/alerts`.
//! - [`webhook`]: Alertmanager's webhook payload, version 4.
//! - [`pagerduty`]: PagerDuty Events API v2, `POST /v2/enqueue`.
//! - [`opsgenie`]: Opsgenie Alert API, create and close by alias.

pub(crate) mod alertmanager;
pub(crate) mod opsgenie;
pub(crate) mod pagerduty;
pub(crate) mod webhook;

use std::fmt;
use std::time::SystemTime;

use http::{HeaderValue, Method, Uri};

use crate::alert::Labelled;
use crate::secret::Secret;

/// `source` of PagerDuty and Opsgenie events.
pub(crate) const SOURCE: &str = "steady";

/// One HTTP request to make. Holds keys, so `Debug` shows only the method and URL.
pub(crate) struct Call {
    /// `POST` for every API here.
    pub method: Method,
    /// Full URL.
    pub uri: Uri,
    /// The `Authorization` header, when the API wants one.
    pub authorization: Option<HeaderValue>,
    /// JSON body.
    pub body: Vec<u8>,
}

impl fmt::Debug for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Call")
            .field("method", &self.method)
            .field("uri", &self.uri)
            .finish_non_exhaustive()
    }
}

/// A configured receiver: its API, where it is, and its key.
#[derive(Debug, Clone)]
pub(crate) enum Receiver {
    /// Alertmanager at `base` (`/api/v2/alerts` is appended).
    Alertmanager { base: String },
    /// Any URL taking Alertmanager's webhook payload; `receiver` is the notifier name.
    Webhook { url: Uri, receiver: String },
    /// PagerDuty's enqueue URL and routing key.
    PagerDuty { url: Uri, routing_key: Secret },
    /// Opsgenie's base URL and API key.
    Opsgenie { base: String, api_key: Secret },
}

impl Receiver {
    /// The request that tells this receiver about one alert change. Alertmanager's is
    /// built by [`alertmanager::post`] instead, since it carries `endsAt` of re-sends.
    pub fn call(&self, alert: &Labelled, now: SystemTime) -> Call {
        match self {
            Receiver::Alertmanager { base } => {
                let ends_at = if alert.alert.firing {
                    None
                } else {
                    Some(alert.alert.ends_at.unwrap_or(now))
                };
                alertmanager::post(base, &[(alert, ends_at)])
            }
            Receiver::Webhook { url, receiver } => webhook::post(url, receiver, alert, now),
            Receiver::PagerDuty { url, routing_key } => pagerduty::post(url, routing_key, alert),
            Receiver::Opsgenie { base, api_key } => opsgenie::post(base, api_key, alert),
        }
    }
}

/// RFC 3339 in UTC with milliseconds, as Alertmanager and PagerDuty read it.
pub(crate) fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// `base` without a trailing `/`, then `path`, as a URI (already checked to parse).
pub(crate) fn join(base: &str, path: &str) -> Uri {
    let s = format!("{}{path}", base.trim_end_matches('/'));
    s.parse()
        .unwrap_or_else(|_| Uri::from_static("http://invalid."))
}

/// Percent-encodes everything but RFC 3986's unreserved characters, for a path segment.
pub(crate) fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_slashes_and_spaces() {
        assert_eq!(encode_segment("steady/a b/ü"), "steady%2Fa%20b%2F%C3%BC");
    }

    #[test]
    fn joins_without_double_slash() {
        assert_eq!(
            join("http://127.0.0.1:9093/", "/api/v2/alerts").to_string(),
            "http://127.0.0.1:9093/api/v2/alerts"
        );
    }
}
