//! W3C Trace Context: continue the client's trace (or start one) and hand each upstream
//! attempt its own span id.
//!
//! A request with a valid `traceparent` continues that trace: steady's request span is
//! a child of the client's span, and every attempt (retries and hedges included) goes
//! upstream as a child of the request span, with a fresh span id in `traceparent` and
//! the client's `tracestate` unchanged. A request without one starts a new trace, not
//! sampled (`-00`) since steady exports no spans yet, so the backend can still join
//! its logs to steady's access log by `trace_id`. Parsing and formatting are the
//! `opentelemetry_sdk` propagator's.

use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use opentelemetry::Context;
use opentelemetry_sdk::propagation::TraceContextPropagator;

/// The trace a request belongs to and its own span in it.
#[derive(Debug, Clone)]
pub struct RequestTrace {
    trace_id: TraceId,
    /// steady's span for the whole request.
    span_id: SpanId,
    /// The client's span, when the request continued a trace.
    parent: Option<SpanId>,
    flags: TraceFlags,
    state: TraceState,
}

struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

struct HeadersMut<'a>(&'a mut HeaderMap);

impl Injector for HeadersMut<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

fn random_span_id() -> SpanId {
    // Zero is invalid in W3C Trace Context.
    SpanId::from(fastrand::u64(1..))
}

impl RequestTrace {
    /// Continues the trace in `headers` (`traceparent`, `tracestate`), or starts one.
    pub fn from_headers(headers: &HeaderMap) -> RequestTrace {
        let cx = TraceContextPropagator::new().extract(&Headers(headers));
        let remote = cx.span().span_context().clone();
        if remote.is_valid() {
            RequestTrace {
                trace_id: remote.trace_id(),
                span_id: random_span_id(),
                parent: Some(remote.span_id()),
                flags: remote.trace_flags(),
                state: remote.trace_state().clone(),
            }
        } else {
            RequestTrace {
                trace_id: TraceId::from(fastrand::u128(1..)),
                span_id: random_span_id(),
                parent: None,
                flags: TraceFlags::default(),
                state: TraceState::default(),
            }
        }
    }

    /// The trace id and steady's request span id.
    pub fn ids(&self) -> (TraceId, SpanId) {
        (self.trace_id, self.span_id)
    }

    /// The trace id, 32 lowercase hex digits.
    pub fn trace_id(&self) -> String {
        self.trace_id.to_string()
    }

    /// steady's request span id, 16 lowercase hex digits.
    pub fn span_id(&self) -> String {
        self.span_id.to_string()
    }

    /// The client's span id, if the request continued a trace.
    pub fn parent_span_id(&self) -> Option<String> {
        self.parent.map(|p| p.to_string())
    }

    /// Sets `traceparent` (a new span id for this attempt, child of the request span)
    /// and `tracestate` on an upstream request's headers; returns the attempt's span id.
    pub fn inject_attempt(&self, headers: &mut HeaderMap) -> SpanId {
        let span = random_span_id();
        let context = SpanContext::new(self.trace_id, span, self.flags, true, self.state.clone());
        let cx = Context::new().with_remote_span_context(context);
        headers.remove("tracestate");
        TraceContextPropagator::new().inject_context(&cx, &mut HeadersMut(headers));
        span
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn a_valid_traceparent_is_continued_with_new_span_ids() {
        let incoming = headers(&[
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
            ("tracestate", "vendor=abc"),
        ]);
        let trace = RequestTrace::from_headers(&incoming);
        assert_eq!(trace.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(trace.parent_span_id().as_deref(), Some("00f067aa0ba902b7"));
        assert_ne!(trace.span_id(), "00f067aa0ba902b7");

        let mut out = incoming.clone();
        let first = trace.inject_attempt(&mut out);
        let parent = out["traceparent"].to_str().unwrap().to_string();
        assert_eq!(
            parent,
            format!("00-4bf92f3577b34da6a3ce929d0e0e4736-{first}-01"),
            "same trace, the attempt's span, the client's sampling"
        );
        assert_eq!(out["tracestate"], "vendor=abc");
        let second = trace.inject_attempt(&mut out);
        assert_ne!(first, second, "each attempt is its own span");
    }

    #[test]
    fn a_missing_or_broken_traceparent_starts_a_new_unsampled_trace() {
        for bad in [
            headers(&[]),
            headers(&[("traceparent", "garbage")]),
            headers(&[(
                "traceparent",
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            )]),
            headers(&[(
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            )]),
        ] {
            let trace = RequestTrace::from_headers(&bad);
            assert_eq!(trace.trace_id().len(), 32);
            assert_ne!(trace.trace_id(), "0".repeat(32));
            assert!(trace.parent_span_id().is_none());
            let mut out = bad.clone();
            trace.inject_attempt(&mut out);
            let header = out["traceparent"].to_str().unwrap();
            assert!(
                header.starts_with(&format!("00-{}-", trace.trace_id())),
                "{header}"
            );
            assert!(header.ends_with("-00"), "not sampled: {header}");
        }
    }
}
