//! Fault injection: delays and aborts a share of a route's requests (or those that ask
//! by header), before admission, as Envoy's fault filter does, so users can rehearse
//! failures.

use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Response, StatusCode};
use prometheus_client::metrics::counter::Counter;

/// Asks for a delay of this many milliseconds (with `fault.headers: true`).
pub const DELAY_HEADER: &str = "x-steady-fault-delay";
/// Asks for this status instead of the upstream's answer (with `fault.headers: true`).
pub const ABORT_HEADER: &str = "x-steady-fault-abort";

/// The faults of one route, live.
#[derive(Debug)]
pub struct Faults {
    delay: Option<(Duration, f64)>,
    abort: Option<(StatusCode, f64)>,
    headers: bool,
    /// Header delays never exceed this (the route's timeout).
    max_delay: Duration,
    delayed: Counter,
    aborted: Counter,
}

impl Faults {
    /// Builds the faults of a route whose timeout is `max_delay`; `counters` are the
    /// `(delayed, aborted)` series.
    pub fn new(
        config: &steady_config::fault::Fault,
        max_delay: Duration,
        counters: (Counter, Counter),
    ) -> Faults {
        Faults {
            delay: config.delay.as_ref().map(|d| (d.duration, d.percent.0)),
            abort: config
                .abort
                .as_ref()
                .and_then(|a| Some((StatusCode::from_u16(a.status).ok()?, a.percent.0))),
            headers: config.headers,
            max_delay,
            delayed: counters.0,
            aborted: counters.1,
        }
    }

    /// Delays and/or aborts this request; returns the response of an abort.
    pub async fn apply<B: From<Bytes>>(&self, parts: &Parts) -> Option<Response<B>> {
        let header = |name: &str| {
            self.headers
                .then(|| {
                    parts
                        .headers
                        .get(name)?
                        .to_str()
                        .ok()?
                        .trim()
                        .parse::<u64>()
                        .ok()
                })
                .flatten()
        };
        let delay = match header(DELAY_HEADER) {
            Some(ms) => Some(Duration::from_millis(ms).min(self.max_delay)),
            None => self
                .delay
                .and_then(|(d, share)| (fastrand::f64() < share).then_some(d)),
        };
        if let Some(delay) = delay.filter(|d| !d.is_zero()) {
            self.delayed.inc();
            tokio::time::sleep(delay).await;
        }
        // A header asking for an unusable status is ignored like a missing one.
        let asked = header(ABORT_HEADER)
            .and_then(|code| u16::try_from(code).ok())
            .filter(|code| abortable(*code))
            .and_then(|code| StatusCode::from_u16(code).ok());
        let abort = asked.or_else(|| {
            self.abort
                .and_then(|(status, share)| (fastrand::f64() < share).then_some(status))
        })?;
        self.aborted.inc();
        let body = format!(
            "{{\"error\":\"fault-injected\",\"status\":{},\"source\":\"internal\"}}\n",
            abort.as_u16()
        );
        let mut response = Response::new(B::from(Bytes::from(body)));
        *response.status_mut() = abort;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert("x-steady-error", HeaderValue::from_static("fault-injected"));
        Some(response)
    }
}

/// Statuses an abort may answer: final, and allowed to carry the JSON body.
pub fn abortable(code: u16) -> bool {
    (200..=599).contains(&code) && !matches!(code, 204 | 205 | 304)
}
