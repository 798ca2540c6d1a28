//! The HTTP request path: route, pick, forward, answer.
//!
//! One call of [`handle`] per request. It runs the phases of `docs/ARCHITECTURE.md` in
//! order (route match, pick, forward, record) as plain function calls; later phases
//! (admit, split, cache) slot in between.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;
use futures_util::future::Either;
use futures_util::FutureExt as _;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use http_body_util::BodyExt as _;
use std::time::Duration;
use steady_balance::{Outcome, RequestResult};
use tokio_util::task::TaskTracker;

use crate::body::{BodyVerdict, ClientBody, RequestBody, ResponseBody};
use crate::conn::ConnState;
use crate::error::{error_response, Kind};
use crate::headers::{self, X_REQUEST_ID};
use crate::router::{Route, Router};
use crate::upstream::Transport;
use opentelemetry::trace::TraceId;

/// Everything a request on one HTTP listener needs.
pub struct HttpListener {
    /// Listener name from the config.
    pub name: Arc<str>,
    /// Routes of this listener, swapped whole by a config reload: a request loads it
    /// once and keeps the `Arc<Route>` it matched until it is done.
    pub router: ArcSwap<Router>,
    /// `http` or `https`, for `X-Forwarded-Proto`.
    pub scheme: &'static str,
    /// Largest request body accepted (`u64::MAX` for no limit); reloadable.
    max_body: AtomicU64,
    /// Longest pause between two reads of a request body, in nanoseconds; reloadable.
    body_read_timeout: AtomicU64,
    /// Where upgraded (WebSocket) connections are tracked so shutdown can wait for them.
    pub tracker: TaskTracker,
    /// The gateway's metrics, for the rare-path counters (shed requests).
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The gateway's access log, if on (shared by every listener; a reload swaps it).
    pub access_log: SharedAccessLog,
    /// The gateway's span exporter, if on (shared by every listener; a reload swaps it).
    pub tracer: SharedTracer,
}

/// The access log every listener writes to, swapped whole by a reload.
pub type SharedAccessLog = Arc<arc_swap::ArcSwapOption<crate::access_log::AccessLog>>;

/// The span exporter every listener hands its requests' spans to, swapped by a reload.
pub type SharedTracer = Arc<arc_swap::ArcSwapOption<crate::otel::Tracer>>;

impl HttpListener {
    /// Creates a listener's request context.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: &str,
        router: Router,
        scheme: &'static str,
        limits: &steady_config::ListenerLimits,
        tracker: TaskTracker,
        metrics: Arc<crate::metrics::Metrics>,
        access_log: SharedAccessLog,
        tracer: SharedTracer,
    ) -> HttpListener {
        let listener = HttpListener {
            name: name.into(),
            router: ArcSwap::from_pointee(router),
            scheme,
            max_body: AtomicU64::new(u64::MAX),
            body_read_timeout: AtomicU64::new(0),
            tracker,
            metrics,
            access_log,
            tracer,
        };
        listener.set_limits(limits);
        listener
    }

    /// Applies the body limits of `limits` to requests that start from now on.
    pub fn set_limits(&self, limits: &steady_config::ListenerLimits) {
        let max_body = limits.max_body_bytes.map_or(u64::MAX, |b| b.0);
        let timeout = u64::try_from(limits.body_read_timeout.as_nanos()).unwrap_or(u64::MAX);
        self.max_body.store(max_body, Ordering::Relaxed);
        self.body_read_timeout.store(timeout, Ordering::Relaxed);
    }

    /// Largest request body accepted (`u64::MAX` for no limit).
    pub fn max_body(&self) -> u64 {
        self.max_body.load(Ordering::Relaxed)
    }

    /// Longest pause between two reads of a request body.
    pub fn body_read_timeout(&self) -> Duration {
        Duration::from_nanos(self.body_read_timeout.load(Ordering::Relaxed))
    }
}

/// Decrements a connection's in-flight count even when the client goes away mid-request.
struct InFlightOnConn<'a>(&'a ConnState);

impl Drop for InFlightOnConn<'_> {
    fn drop(&mut self) {
        self.0.request_finished();
    }
}

/// Serves one request from `client` on a connection described by `conn`.
///
/// This and the phases below it (`proxy`, `attempt`, `exchange`) are plain functions
/// that return an `async move` block, not `async fn`s: an `async fn` keeps each
/// argument twice in its future (as passed, and as moved into its body;
/// rust-lang/rust#62958), and the request's future is the largest part of a
/// connection's task, whose every move is a `memcpy` of it.
pub fn handle(
    listener: Arc<HttpListener>,
    client: SocketAddr,
    conn: Arc<ConnState>,
    req: Request<ClientBody>,
) -> impl Future<Output = Result<Response<ResponseBody>, Infallible>> {
    let (parts, body) = req.into_parts();
    async move {
        conn.request_started(parts.version == Version::HTTP_2);
        let _guard = InFlightOnConn(&conn);
        // One clock read serves the pick, the endpoint's latency sample, the metrics and
        // the access log's and span's start.
        let start = tokio::time::Instant::now().into_std();
        let log = listener.access_log.load_full();
        let tracer = listener.tracer.load_full();
        if log.is_none() && tracer.is_none() {
            let observer = Observer::default();
            return Ok(proxy(&listener, client, parts, body, start, observer).await);
        }
        // With an access log or span export: the phases note what they learn in the
        // line's facts and the span's record (through the `Observer`), and the line is
        // written (the span decided) when the response body ends.
        let arrived = (crate::clock::wall_time(start), start);
        let host = parts.headers.get(header::HOST);
        let line = log.map(|log| {
            // The announced length (`Content-Length`).
            let bytes_in = body.size_hint().exact().unwrap_or(0);
            crate::access_log::PendingLine::new(
                log,
                &parts,
                bytes_in,
                client,
                arrived,
                host.cloned(),
            )
        });
        let span = tracer.map(|t| {
            let peer = (client, listener.scheme);
            crate::otel::PendingSpan::new(t, &parts, peer, arrived, host.cloned())
        });
        let observation = crate::body::Observation::new(line, span);
        let observer = Observer {
            facts: observation.line().map(|l| l.facts()),
            spans: observation.span().map(|s| s.record()),
            trace: None,
        };
        let response = proxy(&listener, client, parts, body, start, observer).await;
        if let Some(kind) = response.extensions().get::<Kind>() {
            observer.fail(kind.reason());
        }
        Ok(observation.watch(response))
    }
}

/// Where a request's phases note what they learn for its access-log line and its span,
/// when either is on, and the request's trace; handed down the phases (three
/// references, copied).
#[derive(Clone, Copy, Default)]
struct Observer<'a> {
    facts: Option<&'a crate::access_log::RequestFacts>,
    spans: Option<&'a crate::otel::RequestSpans>,
    /// Set by `proxy` before any attempt (not kept in the request's extensions, whose
    /// map would cost two allocations per request).
    trace: Option<&'a crate::trace::RequestTrace>,
}

impl Observer<'_> {
    /// The request's trace: the span takes its head sampling decision first.
    fn trace(&self, trace: &mut crate::trace::RequestTrace) {
        if let Some(spans) = self.spans {
            spans.begin(trace);
        }
        if let Some(facts) = self.facts {
            facts.set_trace(trace);
        }
    }

    fn route(&self, route: &Route) {
        if let Some(facts) = self.facts {
            facts.set_route(&route.name, &route.upstream.name);
        }
        if let Some(spans) = self.spans {
            spans.set_route(&route.name, &route.upstream.name);
        }
    }

    fn request_id(&self, id: &HeaderValue) {
        if let Some(facts) = self.facts {
            facts.set_request_id(id);
        }
    }

    fn body(&self, verdict: &Arc<BodyVerdict>) {
        if let Some(facts) = self.facts {
            facts.set_body(verdict);
        }
    }

    fn fail(&self, reason: &'static str) {
        if let Some(facts) = self.facts {
            facts.fail(reason);
        }
        if let Some(spans) = self.spans {
            spans.fail(reason);
        }
    }

    /// Whether the request's attempts are recorded for its spans.
    fn recording(&self) -> bool {
        self.spans.is_some_and(|s| s.recording())
    }
}

// Not an `async fn`, which would keep its arguments twice (see `handle`).
#[allow(clippy::manual_async_fn)]
fn proxy<'a>(
    listener: &'a HttpListener,
    client: SocketAddr,
    mut parts: http::request::Parts,
    body: ClientBody,
    start: std::time::Instant,
    obs: Observer<'a>,
) -> impl Future<Output = Response<ResponseBody>> + 'a {
    async move {
        // The fields read below, found in one pass.
        let mut fields = headers::RequestFields::of(&parts.headers);
        let request_id = headers::request_id(fields.request_id.take().as_ref());
        obs.request_id(&request_id);

        if let Err(kind) = check_request(&parts, &fields) {
            return error_response(kind, Some(&request_id));
        }
        // The request's place in a trace: continued from the client's `traceparent`, or new.
        let mut trace = crate::trace::RequestTrace::from_fields(&parts.headers, fields.traceparent);
        obs.trace(&mut trace);
        let obs = Observer {
            trace: Some(&trace),
            ..obs
        };

        // Route match: one load of the listener's table; the matched route stays alive
        // for this request even if a reload swaps the table meanwhile.
        let Some(route) = listener
            .router
            .load()
            .find(&parts, fields.host.as_ref())
            .cloned()
        else {
            return error_response(Kind::NoRoute, Some(&request_id));
        };
        let route = &*route;
        obs.route(route);

        // Fault injection, when configured: rehearsed failures happen before admission.
        if let Some(faults) = &route.faults {
            if let Some(mut response) = faults.apply::<ResponseBody>(&parts).await {
                response
                    .headers_mut()
                    .insert(X_REQUEST_ID.clone(), request_id.clone());
                route
                    .metrics
                    .record(&parts.method, response.status().as_u16(), start.elapsed());
                return response;
            }
        }

        // Admit: the route's rate limits, then the upstream's concurrency limit.
        let rate = if route.admission.has_limits() {
            let verdict = route.admission.check(&parts, client.ip()).await;
            if verdict.refused.is_some() {
                return refuse(
                    route,
                    &parts.method,
                    Kind::RateLimited,
                    &request_id,
                    Some(&verdict),
                    start,
                );
            }
            Some(verdict)
        } else {
            None
        };
        let permit = match &route.upstream.concurrency {
            None => None,
            Some(limiter) => {
                let priority = route.admission.priority(&parts);
                match limiter.acquire(priority).await {
                    Ok(permit) => Some(permit),
                    Err(shed) => {
                        listener
                            .metrics
                            .shed(&route.upstream.name, priority, shed.reason());
                        let mut response = refuse(
                            route,
                            &parts.method,
                            Kind::Overload,
                            &request_id,
                            rate.as_ref(),
                            start,
                        );
                        response.headers_mut().insert(
                            header::RETRY_AFTER,
                            crate::admit::retry_after_value(limiter.retry_after()),
                        );
                        return response;
                    }
                }
            }
        };
        let admitted = permit.as_ref().map(|_| std::time::Instant::now());
        // Circuit breaker on requests in flight to the upstream (until the response head).
        let _active = match route
            .upstream
            .breakers
            .take_ref(crate::breakers::Breaker::Requests)
        {
            Ok(slot) => slot,
            Err(breaker) => {
                let kind = Kind::from_breaker(breaker);
                return refuse(
                    route,
                    &parts.method,
                    kind,
                    &request_id,
                    rate.as_ref(),
                    start,
                );
            }
        };

        let response = forward(
            listener,
            route,
            client,
            (&mut parts, &mut fields),
            body,
            &request_id,
            start,
            obs,
        )
        .await;
        if let (Some(permit), Some(admitted), Some(limiter)) =
            (permit, admitted, &route.upstream.concurrency)
        {
            // The latency sample is the time to the response head; failures that never
            // reached the endpoint say nothing about its latency. A timeout is what overload
            // looks like, but it is the route's deadline, not a round trip: it must not
            // become the minimum RTT.
            let sample = match &response {
                Ok(_) | Err(Kind::UpstreamProtocol) => Some(admitted.elapsed()),
                Err(Kind::Timeout) if !limiter.measuring_min_rtt() => Some(admitted.elapsed()),
                Err(_) => None,
            };
            permit.finish(sample);
        }
        match response {
            Ok(mut response) => {
                if let Some(rate) = &rate {
                    rate.decorate(response.headers_mut());
                }
                route
                    .metrics
                    .record(&parts.method, response.status().as_u16(), start.elapsed());
                response
            }
            Err(kind) => refuse(
                route,
                &parts.method,
                kind,
                &request_id,
                rate.as_ref(),
                start,
            ),
        }
    }
}

/// Answers a failure on a matched route: counted by reason and status, with the route's
/// rate-limit headers.
fn refuse(
    route: &Route,
    method: &http::Method,
    kind: Kind,
    request_id: &HeaderValue,
    rate: Option<&crate::admit::RateVerdict>,
    start: std::time::Instant,
) -> Response<ResponseBody> {
    route.metrics.failure(kind);
    let mut response = error_response(kind, Some(request_id));
    if let Some(rate) = rate {
        rate.decorate(response.headers_mut());
    }
    route
        .metrics
        .record(method, response.status().as_u16(), start.elapsed());
    response
}

/// Refuses requests no route may see: ambiguous or missing hosts, and CONNECT, which
/// would turn steady into an open tunnel.
fn check_request(
    parts: &http::request::Parts,
    fields: &headers::RequestFields,
) -> Result<(), Kind> {
    if parts.method == http::Method::CONNECT {
        return Err(Kind::MethodNotAllowed);
    }
    // Two Host headers would let routing and the backend see different hosts
    // (RFC 9112 §3.2).
    if fields.hosts > 1 {
        return Err(Kind::BadRequest);
    }
    if parts.version == Version::HTTP_11 && fields.hosts == 0 && parts.uri.authority().is_none() {
        return Err(Kind::BadRequest);
    }
    Ok(())
}

/// Sends the request to an endpoint of the route's upstream and returns its response.
#[allow(clippy::too_many_arguments)]
async fn forward(
    listener: &HttpListener,
    route: &Route,
    client: SocketAddr,
    (parts, fields): (&mut http::request::Parts, &mut headers::RequestFields),
    body: ClientBody,
    request_id: &HeaderValue,
    start: std::time::Instant,
    obs: Observer<'_>,
) -> Result<Response<ResponseBody>, Kind> {
    // Refuse an announced oversized body before touching the upstream.
    if let Some(len) = body.size_hint().exact() {
        if len > listener.max_body() {
            return Err(Kind::BodyTooLarge);
        }
    }

    // Pick.
    let upstream = &route.upstream;
    let hash = upstream.request_hash(parts, client.ip());
    let endpoint = upstream.pick(hash, &[], start).ok_or(Kind::NoEndpoint)?;

    // Rewrite the request for the upstream.
    let upgrade = if parts.version == Version::HTTP_11 {
        fields.upgrade_protocol(&parts.headers)
    } else {
        None
    };
    let client_upgrade = upgrade
        .as_ref()
        .and_then(|_| parts.extensions.remove::<crate::server::OnUpgrade>());
    // X-Forwarded-Host carries the host exactly as the client sent it, port included
    // (a clone of the parsed value: no copy).
    let host = match parts.uri.authority() {
        Some(a) => HeaderValue::from_str(a.as_str()).ok(),
        None => fields.host.take(),
    };
    // The target's authority wins over Host: HTTP/2 carries the host only in :authority,
    // and an absolute-form HTTP/1.1 target replaces Host (RFC 9112 §3.2.2). Routing
    // used the same value.
    if let Some(authority) = parts.uri.authority() {
        if let Ok(v) = HeaderValue::from_str(authority.as_str()) {
            parts.headers.insert(header::HOST, v);
        }
    }
    fields.strip_hop_by_hop(&mut parts.headers, upgrade.clone());
    // `X-Forwarded-*` and `X-Request-Id` (and each attempt's trace context) go into the
    // upstream's head beside the client's headers, not into their map; `Expect` is
    // dropped there too, since steady answers `100-continue` itself when it starts
    // reading the body.
    let added = headers::Added::new(
        fields.forwarded_for.take(),
        client.ip(),
        listener.scheme,
        host,
        request_id.clone(),
    );
    let added = &added;

    // Retries need a body they can send again, and never apply to upgrades.
    let policy = route.retries.as_ref().filter(|_| upgrade.is_none());
    let Some(policy) = policy else {
        return forward_streamed(
            listener,
            route,
            &endpoint,
            parts,
            body,
            added,
            start,
            (client_upgrade, upgrade),
            obs,
        )
        .await;
    };

    // With retries: a separate, boxed future, so the common path's future stays small.
    Box::pin(forward_retrying(
        listener,
        route,
        policy,
        parts,
        body,
        added,
        endpoint,
        hash,
        (client_upgrade, upgrade),
        obs,
    ))
    .await
}

/// The forward phase of a route with retries: buffers a small body, then attempts on
/// endpoint after endpoint while the policy, the budget and the deadline allow.
#[allow(clippy::too_many_arguments)]
async fn forward_retrying(
    listener: &HttpListener,
    route: &Route,
    policy: &steady_config::retry::Retries,
    parts: &mut http::request::Parts,
    body: ClientBody,
    added: &headers::Added,
    endpoint: Arc<steady_balance::Endpoint>,
    hash: Option<u64>,
    (client_upgrade, upgrade): (Option<crate::server::OnUpgrade>, Option<HeaderValue>),
    obs: Observer<'_>,
) -> Result<Response<ResponseBody>, Kind> {
    let upstream = &route.upstream;
    let transport = upstream.transport();
    let request_id = &added.request_id;
    let start = std::time::Instant::now();
    // With retries: read a small body in full first so every attempt can send it.
    let replayable = if body.is_end_stream() {
        Some(Bytes::new())
    } else if body
        .size_hint()
        .exact()
        .is_some_and(|len| len <= policy.buffer.bytes())
    {
        let verdict = Arc::new(BodyVerdict::default());
        obs.body(&verdict);
        let reading = RequestBody::new(
            body,
            listener.max_body(),
            listener.body_read_timeout(),
            Some(verdict.clone()),
        );
        match tokio::time::timeout(route.timeout, reading.collect()).await {
            Ok(Ok(collected)) => Some(collected.to_bytes()),
            Ok(Err(_)) if verdict.too_large() => return Err(Kind::BodyTooLarge),
            Ok(Err(_)) if verdict.timed_out() => return Err(Kind::ClientTimeout),
            Ok(Err(_)) => return Err(Kind::ClientAborted),
            Err(_) => return Err(Kind::ClientTimeout),
        }
    } else {
        // Too large (or of unknown size) to keep: one attempt, streamed.
        return forward_streamed(
            listener,
            route,
            &endpoint,
            parts,
            body,
            added,
            start,
            (client_upgrade, upgrade),
            obs,
        )
        .await;
    };
    let body = replayable.unwrap_or_default();
    let idempotent = is_idempotent(&parts.method) || policy.non_idempotent;
    // The route's timeout covers the upstream's part, as without retries: it starts
    // now, not when the request arrived (faults, queueing and the body read are not
    // the upstream's time).
    let deadline = std::time::Instant::now() + route.timeout;
    let mut endpoint = endpoint;
    let mut tried: Vec<SocketAddr> = Vec::new();
    let mut attempt_no = 1;
    // Holds the budget of the retry in flight, if any.
    let mut _retry_guard = None;
    loop {
        let uri = upstream_uri(transport, parts, endpoint.addr(), false)?;
        let upstream_req = upstream_request(
            &parts.method,
            uri,
            parts.headers.clone(),
            RequestBody::buffered(body.clone()),
            added,
            obs,
        );
        let now = std::time::Instant::now();
        let left = deadline.saturating_duration_since(now);
        if left.is_zero() {
            // Out of time before this attempt: nothing to blame the endpoint for.
            return Err(Kind::Timeout);
        }
        let per_try = policy.per_try_timeout.map_or(left, |t| t.min(left));
        let hedge_delay = route
            .hedge
            .as_ref()
            .filter(|_| idempotent)
            .and_then(|h| h.delay(now))
            .filter(|d| *d < per_try);
        let result = match hedge_delay {
            None => attempt(route, &endpoint, upstream_req, None, per_try, now, obs).await,
            Some(delay) => {
                let hedge = Hedged {
                    listener,
                    route,
                    policy,
                    parts,
                    added,
                    body: &body,
                    hash,
                    idempotent,
                    obs,
                };
                hedge
                    .run(&endpoint, upstream_req, per_try, delay, now, &mut tried)
                    .await
            }
        };
        if let (Ok(_), Some(h)) = (&result, &route.hedge) {
            h.record(now.elapsed());
        }
        let Some(reason) = retry_reason(policy, &result, idempotent) else {
            return answer(listener, result?, request_id, client_upgrade, upgrade);
        };
        if attempt_no >= policy.attempts {
            return answer(listener, result?, request_id, client_upgrade, upgrade);
        }
        // The budget: retries in flight may be a share of the requests in flight. This
        // request's previous retry is over, so it does not count against the next.
        drop(_retry_guard.take());
        let Some(guard) = upstream
            .breakers
            .try_retry(policy.budget.0, policy.min_retries)
        else {
            listener.metrics.retry(&route.name, "budget-exhausted");
            return answer(listener, result?, request_id, client_upgrade, upgrade);
        };
        let backoff = backoff(policy, attempt_no);
        if std::time::Instant::now() + backoff >= deadline {
            return answer(listener, result?, request_id, client_upgrade, upgrade);
        }
        // A retry goes to another endpoint; with none left, the last answer stands.
        tried.push(endpoint.addr());
        let next = upstream
            .pick(hash, &tried, std::time::Instant::now())
            .filter(|e| !tried.contains(&e.addr()));
        let Some(next) = next else {
            listener.metrics.retry(&route.name, "no-other-endpoint");
            return answer(listener, result?, request_id, client_upgrade, upgrade);
        };
        drop(result);
        _retry_guard = Some(guard);
        tokio::time::sleep(backoff).await;
        listener.metrics.retry(&route.name, reason);
        tracing::debug!(route = %route.name, from = %endpoint.addr(), to = %next.addr(), reason, attempt = attempt_no + 1, "retrying");
        endpoint = next;
        attempt_no += 1;
    }
}

/// One hedged attempt: what it needs of the request besides the first endpoint.
struct Hedged<'a> {
    listener: &'a HttpListener,
    route: &'a Route,
    policy: &'a steady_config::retry::Retries,
    parts: &'a http::request::Parts,
    added: &'a headers::Added,
    body: &'a Bytes,
    hash: Option<u64>,
    idempotent: bool,
    obs: Observer<'a>,
}

impl Hedged<'_> {
    /// Sends `upstream_req` to `endpoint`; if no response head came after `delay`, sends
    /// a copy to another endpoint (within the retry budget) and returns the first usable
    /// answer, cancelling the other attempt. A copy's endpoint joins `tried`.
    async fn run(
        &self,
        endpoint: &Arc<steady_balance::Endpoint>,
        upstream_req: Outgoing,
        per_try: Duration,
        delay: Duration,
        start: std::time::Instant,
        tried: &mut Vec<SocketAddr>,
    ) -> Result<Exchanged, Kind> {
        let (route, upstream) = (self.route, &self.route.upstream);
        let obs = self.obs;
        let first = attempt(route, endpoint, upstream_req, None, per_try, start, obs);
        tokio::pin!(first);
        tokio::select! {
            biased;
            result = &mut first => return result,
            _ = tokio::time::sleep(delay) => {}
        }
        // Hedges share the retry budget, so they cannot multiply load in an outage.
        let Some(_guard) = upstream
            .breakers
            .try_retry(self.policy.budget.0, self.policy.min_retries)
        else {
            self.listener
                .metrics
                .retry(&route.name, "hedge-budget-exhausted");
            return first.await;
        };
        let mut avoid = tried.clone();
        avoid.push(endpoint.addr());
        let now = std::time::Instant::now();
        let Some(other) = upstream
            .pick(self.hash, &avoid, now)
            .filter(|e| !avoid.contains(&e.addr()))
        else {
            return first.await;
        };
        let mut parts = self.parts.clone();
        let Ok(uri) = upstream_uri(upstream.transport(), &mut parts, other.addr(), false) else {
            return first.await;
        };
        let mut copy = upstream_request(
            &parts.method,
            uri,
            parts.headers,
            RequestBody::buffered(self.body.clone()),
            self.added,
            obs,
        );
        if let Some(span) = &mut copy.recorded {
            span.hedge = true;
        }
        self.listener.metrics.retry(&route.name, "hedge");
        tracing::debug!(route = %route.name, slow = %endpoint.addr(), copy = %other.addr(), ?delay, "hedging");
        tried.push(other.addr());
        let second = attempt(
            route,
            &other,
            copy,
            None,
            per_try.saturating_sub(delay),
            now,
            obs,
        );
        tokio::pin!(second);
        let usable =
            |r: &Result<Exchanged, Kind>| retry_reason(self.policy, r, self.idempotent).is_none();
        tokio::select! {
            result = &mut first => {
                if usable(&result) { return result; }
                let copy = second.await;
                if usable(&copy) {
                    self.listener.metrics.retry(&route.name, "hedge-won");
                }
                copy
            }
            result = &mut second => {
                if usable(&result) {
                    self.listener.metrics.retry(&route.name, "hedge-won");
                    return result;
                }
                first.await
            }
        }
    }
}

/// Sends the request to `endpoint` once, streaming the client's body (which then cannot
/// be sent again), and answers with what comes back.
#[allow(clippy::too_many_arguments)]
async fn forward_streamed(
    listener: &HttpListener,
    route: &Route,
    endpoint: &Arc<steady_balance::Endpoint>,
    parts: &mut http::request::Parts,
    body: ClientBody,
    added: &headers::Added,
    start: std::time::Instant,
    (client_upgrade, upgrade): (Option<crate::server::OnUpgrade>, Option<HeaderValue>),
    obs: Observer<'_>,
) -> Result<Response<ResponseBody>, Kind> {
    let uri = upstream_uri(route.upstream.transport(), parts, endpoint.addr(), true)?;
    let verdict = (!body.is_end_stream()).then(|| Arc::new(BodyVerdict::default()));
    if let Some(v) = &verdict {
        obs.body(v);
    }
    let body = RequestBody::new(
        body,
        listener.max_body(),
        listener.body_read_timeout(),
        verdict.clone(),
    );
    let upstream_req = upstream_request(
        &parts.method,
        uri,
        std::mem::take(&mut parts.headers),
        body,
        added,
        obs,
    );
    let exchanged = attempt(
        route,
        endpoint,
        upstream_req,
        verdict.as_deref(),
        route.timeout,
        start,
        obs,
    )
    .await?;
    answer(
        listener,
        exchanged,
        &added.request_id,
        client_upgrade,
        upgrade,
    )
}

/// The request an endpoint is sent: the client's method, the rewritten target and
/// headers, HTTP/1.1 toward the transport (hyper-util's client speaks h2c on its own),
/// with the headers steady adds (and this attempt's trace context).
fn upstream_request(
    method: &http::Method,
    uri: Uri,
    headers: http::HeaderMap,
    body: RequestBody,
    added: &headers::Added,
    obs: Observer<'_>,
) -> Outgoing {
    let mut added = added.clone();
    // Each attempt is its own span in the request's trace.
    let span = obs.trace.map(|trace| trace.inject_attempt(&mut added));
    let mut req = Request::new(body);
    *req.method_mut() = method.clone();
    *req.uri_mut() = uri;
    *req.version_mut() = Version::HTTP_11;
    *req.headers_mut() = headers;
    let recorded = span
        .filter(|_| obs.recording())
        .map(|id| crate::otel::AttemptSpan { id, hedge: false });
    Outgoing {
        req,
        recorded,
        added,
    }
}

/// An upstream request: its headers steady adds, and its attempt's span when the
/// request's spans are recorded.
struct Outgoing {
    req: Request<RequestBody>,
    recorded: Option<crate::otel::AttemptSpan>,
    added: headers::Added,
}

/// Methods that may be sent twice without changing the outcome (RFC 9110 §9.2.2).
pub(crate) fn is_idempotent(method: &http::Method) -> bool {
    use http::Method;
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// Why `result` may be retried under `policy`, or `None`.
fn retry_reason(
    policy: &steady_config::retry::Retries,
    result: &Result<Exchanged, Kind>,
    idempotent: bool,
) -> Option<&'static str> {
    use steady_config::retry::RetryOn;
    let wants = |on: RetryOn| policy.on.contains(&on);
    match result {
        // Never sent: safe for any method.
        Err(Kind::Connect) if wants(RetryOn::ConnectFailure) => Some("connect-failure"),
        Err(Kind::UpstreamProtocol) if idempotent && wants(RetryOn::Reset) => Some("reset"),
        Err(Kind::Timeout) if idempotent && wants(RetryOn::Timeout) => Some("timeout"),
        Ok(response) if idempotent => {
            let code = response.status().as_u16();
            let listed = wants(RetryOn::Status(code))
                || ((500..=599).contains(&code) && wants(RetryOn::Any5xx));
            listed.then_some("status")
        }
        _ => None,
    }
}

/// Full-jitter exponential back-off before retry number `attempt` (1 = first retry).
fn backoff(policy: &steady_config::retry::Retries, attempt: u32) -> Duration {
    let cap = policy.effective_max_backoff();
    let grown = policy
        .backoff
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
        .min(cap);
    grown.mul_f64(fastrand::f64())
}

/// The target the transport sends: origin-form on steady's HTTP/1.1 pool (no copy when
/// the client sent origin-form), an absolute URI for hyper-util's h2c client, which picks
/// its pool by it.
/// With `last`, the request's own URI is moved out instead of copied (its final use).
fn upstream_uri(
    transport: &Transport,
    parts: &mut http::request::Parts,
    endpoint: SocketAddr,
    last: bool,
) -> Result<Uri, Kind> {
    if let Transport::Http1(_) = transport {
        if parts.uri.scheme().is_none() && parts.uri.authority().is_none() {
            Ok(if last {
                std::mem::take(&mut parts.uri)
            } else {
                parts.uri.clone()
            })
        } else {
            let pq = parts.uri.path_and_query().cloned();
            Ok(Uri::from(pq.unwrap_or_else(|| {
                http::uri::PathAndQuery::from_static("/")
            })))
        }
    } else {
        let path_and_query = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
        format!("http://{endpoint}{path_and_query}")
            .parse()
            .map_err(|_| Kind::BadRequest)
    }
}

/// An upstream's response, its body still to be read from the upstream.
type Exchanged = Response<ResponseBody>;

/// Sends one attempt to `endpoint` within `deadline` and records what it says about the
/// endpoint (latency, outlier detection) and, with span export on, the attempt's span.
// Not an `async fn`, which would keep its arguments twice (see `handle`).
#[allow(clippy::manual_async_fn)]
fn attempt<'a>(
    route: &'a Route,
    endpoint: &'a Arc<steady_balance::Endpoint>,
    Outgoing {
        req: upstream_req,
        recorded: span,
        added,
    }: Outgoing,
    verdict: Option<&'a BodyVerdict>,
    deadline: Duration,
    start: std::time::Instant,
    obs: Observer<'a>,
) -> impl Future<Output = Result<Exchanged, Kind>> + 'a {
    // The request's trace id, for the operational logs of what the attempt causes (an
    // ejection).
    let trace = obs.trace.map(|t| t.ids().0);
    // Made here, not in the block below, which would then keep the request beside the
    // exchange that owns it.
    let exchange = exchange(
        route,
        endpoint,
        (upstream_req, added),
        verdict,
        (deadline, start),
        trace,
    );
    async move {
        // Noted when dropped, so a cancelled attempt (a lost hedge race) has its span.
        // `span` is there only if `upstream_request` found the request's spans recording.
        let span = span.and_then(|span| Some((obs.spans?, span)));
        let mut note = (obs.facts.is_some() || span.is_some()).then(|| AttemptNote {
            facts: obs.facts,
            span,
            endpoint: endpoint.addr(),
            // Now, not `start`: queueing and injected delays are not the upstream's time.
            // (Tokio's clock, as the exchange's end reading is.)
            start: tokio::time::Instant::now().into_std(),
            end: None,
            outcome: None,
        });
        let (result, ended) = exchange.await;
        if let Some(note) = &mut note {
            note.end = Some(ended);
            note.outcome = Some(match &result {
                Ok(response) => Ok(response.status().as_u16()),
                Err(kind) => Err(*kind),
            });
        }
        result
    }
}

/// One attempt's exchange: see [`attempt`]. Also gives the clock reading taken when the
/// attempt ended (the response head, a failure or the deadline).
// Not an `async fn`, which would keep its arguments twice (see `handle`).
#[allow(clippy::manual_async_fn)]
fn exchange<'a>(
    route: &'a Route,
    endpoint: &'a Arc<steady_balance::Endpoint>,
    (mut upstream_req, added): (Request<RequestBody>, headers::Added),
    verdict: Option<&'a BodyVerdict>,
    (deadline, start): (Duration, std::time::Instant),
    trace: Option<TraceId>,
) -> impl Future<Output = (Result<Exchanged, Kind>, std::time::Instant)> + 'a {
    let upstream = &route.upstream;
    let transport = upstream.transport();
    let addr = endpoint.addr();
    let pause_limit = route.response_body_timeout;
    // Boxed: the request and its timer are most of a request's future (about 1 KB).
    // Inline, every phase above (`attempt`, `forward_streamed`, `forward`, `proxy`,
    // `handle`) carried them and copied them when it built its callee's future: some
    // 13 KB of `memcpy` per request, against one allocation. The box owns the request,
    // so no phase keeps a copy of it. The HTTP/1.1 exchange is the pool's future itself
    // (a map, not an `async` block, which would keep the request beside it): the box
    // then stays within the allocator's small sizes, whose allocation costs a fifth.
    let sent = match transport {
        Transport::Http1(pool) => {
            let sent = pool
                .send(addr, upstream_req, added)
                .map(move |sent| match sent {
                    Ok(response) => Ok(response.map(|b| ResponseBody::h1(b, pause_limit))),
                    Err(crate::pool::PoolError::Breaker(breaker)) => Err(Err(breaker)),
                    Err(e) => Err(Ok((
                        matches!(e, crate::pool::PoolError::Connect { .. }),
                        e.to_string(),
                    ))),
                });
            Box::pin(crate::timer::Deadline::new(deadline, Either::Left(sent)))
        }
        Transport::H2c(client) => {
            let sent = async move {
                added.apply(upstream_req.headers_mut());
                match client.request(upstream_req).await {
                    Ok(response) => Ok(response.map(|b| ResponseBody::h2(b, pause_limit))),
                    Err(e) => Err(Ok((e.is_connect(), e.to_string()))),
                }
            };
            Box::pin(crate::timer::Deadline::new(deadline, Either::Right(sent)))
        }
    };
    async move {
        let in_flight = endpoint.start(start);
        let result = sent.await;
        let now = tokio::time::Instant::now().into_std();
        let response = match result {
            Err(_elapsed) => {
                // Still waiting for the client's body: the client is slow, not the endpoint.
                if verdict.is_some_and(|v| !v.complete()) {
                    drop(in_flight);
                    return (Err(Kind::ClientTimeout), now);
                }
                in_flight.finish(now, Outcome::Failure);
                upstream.record(addr, now, RequestResult::GatewayFailure, trace);
                return (Err(Kind::Timeout), now);
            }
            // A circuit breaker refused a connection: the endpoint did nothing wrong.
            Ok(Err(Err(breaker))) => {
                drop(in_flight);
                return (Err(Kind::from_breaker(breaker)), now);
            }
            Ok(Err(Ok((is_connect, e)))) => {
                let kind = match verdict {
                    Some(v) if v.too_large() => Kind::BodyTooLarge,
                    Some(v) if v.broken() => Kind::ClientAborted,
                    Some(v) if v.timed_out() => Kind::ClientTimeout,
                    _ if is_connect => Kind::Connect,
                    _ => Kind::UpstreamProtocol,
                };
                tracing::debug!(upstream = %upstream.name, endpoint = %addr, error = %e, reason = kind.reason(), "upstream request failed");
                // A client's fault says nothing about the endpoint: record no sample.
                if kind.source() == crate::error::Source::Client {
                    drop(in_flight);
                } else {
                    in_flight.finish(now, Outcome::Failure);
                    let result = if kind == Kind::Connect {
                        RequestResult::ConnectFailure
                    } else {
                        RequestResult::GatewayFailure
                    };
                    upstream.record(addr, now, result, trace);
                }
                return (Err(kind), now);
            }
            Ok(Ok(exchanged)) => exchanged,
        };
        let status = response.status();
        let outcome = if matches!(status.as_u16(), 502..=504) {
            Outcome::Failure
        } else {
            Outcome::Success
        };
        in_flight.finish(now, outcome);
        upstream.record(
            addr,
            now,
            RequestResult::from_status(status.as_u16()),
            trace,
        );
        (Ok(response), now)
    }
}

/// Notes one attempt when it ends, however it ends (a lost hedge race drops it): its
/// endpoint and time for the access log, its span for span export; one clock read.
struct AttemptNote<'a> {
    facts: Option<&'a crate::access_log::RequestFacts>,
    span: Option<(&'a crate::otel::RequestSpans, crate::otel::AttemptSpan)>,
    endpoint: SocketAddr,
    start: std::time::Instant,
    /// The exchange's own reading of when the attempt ended; `None` if it was cancelled.
    end: Option<std::time::Instant>,
    /// Set when the attempt returns; left `None` if it was cancelled.
    outcome: Option<Result<u16, Kind>>,
}

impl Drop for AttemptNote<'_> {
    fn drop(&mut self) {
        let end = self.end.unwrap_or_else(std::time::Instant::now);
        if let Some(facts) = self.facts {
            facts.attempt(self.endpoint, end.saturating_duration_since(self.start));
        }
        if let Some((spans, span)) = self.span {
            spans.attempt(span, self.endpoint, (self.start, end), self.outcome);
        }
    }
}

/// Turns an upstream's response into the client's: upgrades spliced, hop-by-hop headers
/// gone, the request id echoed, the body streamed (returning its connection to the pool
/// at the end).
fn answer(
    listener: &HttpListener,
    mut response: Exchanged,
    request_id: &HeaderValue,
    client_upgrade: Option<crate::server::OnUpgrade>,
    upgrade: Option<HeaderValue>,
) -> Result<Response<ResponseBody>, Kind> {
    let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
    if switching {
        let (Some(client_upgrade), Some(proto)) = (client_upgrade, upgrade) else {
            // An upstream may not switch protocols unasked.
            return Err(Kind::UpstreamProtocol);
        };
        // The upgraded connection belongs to the tunnel now, never to the pool.
        let Some(upstream) = response.body_mut().take_upgraded() else {
            return Err(Kind::UpstreamProtocol);
        };
        listener.tracker.spawn(splice(client_upgrade, upstream));
        headers::strip_hop_by_hop(response.headers_mut(), Some(proto));
    } else {
        headers::strip_hop_by_hop(response.headers_mut(), None);
    }
    match response.body_mut().received_mut() {
        Some(received) => received.set_request_id(request_id.clone()),
        None => {
            response
                .headers_mut()
                .insert(X_REQUEST_ID.clone(), request_id.clone());
        }
    }
    Ok(response)
}

/// Copies bytes both ways between an upgraded client and upstream until either closes;
/// `early` is what the upstream sent right after its `101` head.
async fn splice(
    client: crate::server::OnUpgrade,
    (mut upstream, early): (tokio::net::TcpStream, bytes::Bytes),
) {
    use tokio::io::AsyncWriteExt;
    let Some(crate::server::Upgraded {
        io: mut client,
        read,
    }) = client.upgraded().await
    else {
        tracing::debug!("client upgrade failed");
        return;
    };
    // What each side sent right after its head is already the new protocol's.
    if !early.is_empty() && client.write_all(&early).await.is_err() {
        return;
    }
    if !read.is_empty() && upstream.write_all(&read).await.is_err() {
        return;
    }
    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
}
