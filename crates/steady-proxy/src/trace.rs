//! W3C Trace Context: continue the client's trace (or start one) and hand each upstream
//! attempt its own span id.
//!
//! A request with a valid `traceparent` continues that trace: steady's request span is
//! a child of the client's span, and every attempt (retries and hedges included) goes
//! upstream as a child of the request span, with a fresh span id in `traceparent` and
//! the client's `tracestate` unchanged. A request without one starts a new trace, not
//! sampled (`-00`) unless span export is on and its head ratio picks the trace
//! ([`RequestTrace::head_sample`]); either way the backend can join its logs to
//! steady's access log by `trace_id`. A client's `traceparent` is parsed by the
//! `opentelemetry_sdk` propagator; the one sent upstream is formatted here, on the
//! stack, once per attempt (the propagator's `format!` and context plumbing cost about
//! 3,000 instructions per request), and a test checks it against the propagator's.

use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
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

/// Whether a trace id falls within `ratio`: its lower 64 bits, halved, below
/// `ratio * 2^63` (OpenTelemetry's `TraceIdRatioBased`, so every participant using it
/// decides alike).
pub fn ratio_keeps(trace_id: TraceId, ratio: f64) -> bool {
    if ratio >= 1.0 {
        return true;
    }
    if ratio.is_nan() || ratio <= 0.0 {
        return false;
    }
    let bytes = trace_id.to_bytes();
    let mut low = [0u8; 8];
    low.copy_from_slice(&bytes[8..]);
    let bound = (ratio * (1u64 << 63) as f64) as u64;
    (u64::from_be_bytes(low) >> 1) < bound
}

fn random_span_id() -> SpanId {
    // Zero is invalid in W3C Trace Context.
    SpanId::from(fastrand::u64(1..))
}

impl RequestTrace {
    /// Continues the trace in `headers` (`traceparent`, `tracestate`), or starts one.
    pub fn from_headers(headers: &HeaderMap) -> RequestTrace {
        RequestTrace::from_fields(headers, headers.contains_key(TRACEPARENT))
    }

    /// [`from_headers`](RequestTrace::from_headers) when whether `headers` has a
    /// `traceparent` is known (`headers::RequestFields`).
    pub fn from_fields(headers: &HeaderMap, traceparent: bool) -> RequestTrace {
        if !traceparent {
            return RequestTrace::start();
        }
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
            RequestTrace::start()
        }
    }

    /// A new trace, not sampled until [`head_sample`](RequestTrace::head_sample) says so.
    fn start() -> RequestTrace {
        RequestTrace {
            trace_id: TraceId::from(fastrand::u128(1..)),
            span_id: random_span_id(),
            parent: None,
            flags: TraceFlags::default(),
            state: TraceState::default(),
        }
    }

    /// Decides whether a trace steady started is sampled: by `ratio` of the trace id,
    /// as OpenTelemetry's `TraceIdRatioBased` sampler does. A continued trace keeps the
    /// client's decision (`ParentBased`): the flag sent upstream is the head decision.
    pub fn head_sample(&mut self, ratio: f64) {
        if self.parent.is_none() {
            self.flags = if ratio_keeps(self.trace_id, ratio) {
                TraceFlags::SAMPLED
            } else {
                TraceFlags::default()
            };
        }
    }

    /// Whether the trace is sampled (the `-01` flag).
    pub fn sampled(&self) -> bool {
        self.flags.is_sampled()
    }

    /// The client's span, if the request continued a trace.
    pub fn parent(&self) -> Option<SpanId> {
        self.parent
    }

    /// The trace's `tracestate`.
    pub fn state(&self) -> &TraceState {
        &self.state
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
    /// and `tracestate` among the headers added to an upstream request; returns the
    /// attempt's span id.
    pub fn inject_attempt(&self, added: &mut crate::headers::Added) -> SpanId {
        let span = random_span_id();
        // `00-<trace id>-<span id>-<flags>`: 55 bytes, version 00 (W3C Trace Context §3.2).
        let mut buf = [0u8; 55];
        buf[..3].copy_from_slice(b"00-");
        crate::text::hex_into(&self.trace_id.to_bytes(), &mut buf[3..35]);
        buf[35] = b'-';
        crate::text::hex_into(&span.to_bytes(), &mut buf[36..52]);
        buf[52] = b'-';
        crate::text::hex_into(&[self.flags.to_u8()], &mut buf[53..55]);
        added.traceparent = Some(buf);
        let state = self.state.header();
        added.tracestate = if state.is_empty() {
            None
        } else {
            HeaderValue::from_str(&state).ok()
        };
        span
    }
}

pub(crate) const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub(crate) const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::propagation::Injector;
    use opentelemetry::trace::SpanContext;
    use opentelemetry::Context;

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
        let first = inject(&trace, &mut out);
        let parent = out["traceparent"].to_str().unwrap().to_string();
        assert_eq!(
            parent,
            format!("00-4bf92f3577b34da6a3ce929d0e0e4736-{first}-01"),
            "same trace, the attempt's span, the client's sampling"
        );
        assert_eq!(out["tracestate"], "vendor=abc");
        let second = inject(&trace, &mut out);
        assert_ne!(first, second, "each attempt is its own span");
    }

    /// The attempt's trace headers, set on `out` as the h2c client gets them.
    fn inject(trace: &RequestTrace, out: &mut HeaderMap) -> SpanId {
        let id = HeaderValue::from_static("id");
        let prior = crate::headers::RequestFields::of(out).forwarded_for;
        let mut added = crate::headers::Added::new(prior, [127, 0, 0, 1].into(), "http", None, id);
        let span = trace.inject_attempt(&mut added);
        added.apply(out);
        span
    }

    /// What the propagator would send for the same trace and span.
    fn propagator_headers(trace: &RequestTrace, span: SpanId) -> HeaderMap {
        let context =
            SpanContext::new(trace.trace_id, span, trace.flags, true, trace.state.clone());
        let cx = Context::new().with_remote_span_context(context);
        let mut out = HeaderMap::new();
        TraceContextPropagator::new().inject_context(&cx, &mut HeadersMut(&mut out));
        out
    }

    #[test]
    fn hand_formatted_traceparent_is_the_propagators() {
        for incoming in [
            headers(&[]),
            headers(&[(
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            )]),
            headers(&[
                (
                    "traceparent",
                    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00",
                ),
                ("tracestate", "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"),
            ]),
        ] {
            let trace = RequestTrace::from_headers(&incoming);
            let mut out = incoming.clone();
            let span = inject(&trace, &mut out);
            let expected = propagator_headers(&trace, span);
            assert_eq!(out.get("traceparent"), expected.get("traceparent"));
            // The propagator sends an empty `tracestate`; steady leaves it out.
            let state = expected.get("tracestate").filter(|v| !v.is_empty());
            assert_eq!(out.get("tracestate"), state);
        }
    }

    #[test]
    fn head_sampling_picks_new_traces_by_ratio_and_keeps_the_parents_decision() {
        let mut kept = 0;
        for _ in 0..2000 {
            let mut trace = RequestTrace::from_headers(&headers(&[]));
            trace.head_sample(0.25);
            kept += usize::from(trace.sampled());
            let mut out = HeaderMap::new();
            inject(&trace, &mut out);
            let flag = if trace.sampled() { "-01" } else { "-00" };
            assert!(out["traceparent"].to_str().unwrap().ends_with(flag));
        }
        assert!((300..700).contains(&kept), "about 25% of 2000: {kept}");

        for (incoming, sampled) in [("01", true), ("00", false)] {
            let tp = format!("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-{incoming}");
            let mut trace = RequestTrace::from_headers(&headers(&[("traceparent", &tp)]));
            trace.head_sample(if sampled { 0.0 } else { 1.0 });
            assert_eq!(trace.sampled(), sampled, "the parent decides");
        }
    }

    #[test]
    fn the_ratio_is_the_opentelemetry_one() {
        let id = |low: u64| TraceId::from(u128::from(low));
        assert!(ratio_keeps(id(u64::MAX), 1.0));
        assert!(!ratio_keeps(id(0), 0.0));
        assert!(ratio_keeps(id(0), 0.01));
        // Halved low bits 2^62 are at exactly half the range.
        assert!(!ratio_keeps(id(1 << 63), 0.5));
        assert!(ratio_keeps(id((1 << 63) - 2), 0.5));
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
            inject(&trace, &mut out);
            let header = out["traceparent"].to_str().unwrap();
            assert!(
                header.starts_with(&format!("00-{}-", trace.trace_id())),
                "{header}"
            );
            assert!(header.ends_with("-00"), "not sampled: {header}");
        }
    }
}
