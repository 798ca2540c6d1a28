//! Span export: one SERVER span per request and one CLIENT span per upstream attempt,
//! kept or not when the request ends, sent over OTLP in batches by a thread of its own.
//!
//! While a request runs, its phases note what a span needs in a small [`RequestSpans`]
//! (handed down the phases by `http.rs`'s `Observer`, beside the access log's facts,
//! both inside the request's one observation box): the trace, the route, the failure,
//! and per attempt its span id (the one `trace.rs` put in the upstream `traceparent`),
//! endpoint, times and outcome. Nothing is built for the exporter yet. When the
//! response body ends, [`PendingSpan::finish`] applies the keep rule ([`KeepRule`]):
//! the head decision (the `sampled` flag), or the tail rules (a 5xx or a failure of
//! steady's own, a request slower than `slow_threshold`). Only a kept request becomes
//! `SpanData` (`opentelemetry_sdk`), offered to a bounded queue that never blocks: when
//! it holds `batch.max_queue` spans, new ones are dropped and counted. The export
//! thread groups spans into batches of `batch.max_batch` (or whatever waited
//! `batch.interval`) and sends them with `opentelemetry-otlp` (gRPC through tonic, or
//! HTTP/protobuf through hyper), each export bounded by `otlp.timeout`. An `https://`
//! endpoint is reached over rustls, verified against the system's roots and
//! `otlp.tls.ca_file`.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use opentelemetry::trace::{SpanContext, SpanId, SpanKind, Status, TraceFlags};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::trace::{SpanData, SpanExporter as _};
use steady_config::tracing::{Otlp, Protocol, Tracing as Config};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio_util::sync::CancellationToken;

use crate::error::Kind;
use crate::trace::RequestTrace;

/// Why span export could not start.
#[derive(Debug, thiserror::Error)]
pub enum TracerError {
    /// A `headers_env` variable is not set.
    #[error("tracing: header `{header}`: environment variable `{var}` is not set")]
    MissingEnv {
        /// The header.
        header: String,
        /// The variable it names.
        var: String,
    },
    /// A header name or value is not valid.
    #[error("tracing: header `{0}` is not a valid header")]
    BadHeader(String),
    /// `opentelemetry-otlp` refused the exporter settings.
    #[error("tracing: cannot build the OTLP exporter: {0}")]
    Exporter(String),
    /// The TLS settings for an `https://` receiver cannot be used.
    #[error("tracing: {0}")]
    Tls(String),
    /// The export thread or its runtime could not start.
    #[error("tracing: cannot start the export thread: {0}")]
    Thread(#[from] std::io::Error),
}

/// Which finished requests are exported.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KeepRule {
    /// Export every 5xx and every failure of steady's own.
    pub errors: bool,
    /// Export every request at least this slow.
    pub slow: Option<Duration>,
}

impl KeepRule {
    /// Whether a request is exported: head-sampled, or caught by a tail rule.
    pub fn keeps(&self, sampled: bool, status: u16, failed: bool, took: Duration) -> bool {
        sampled
            || (self.errors && (status >= 500 || failed))
            || self.slow.is_some_and(|slow| took >= slow)
    }
}

/// Export counters, kept by the gateway across reloads (`steady_trace_spans_*`).
#[derive(Debug, Default)]
pub struct TraceStats {
    exported: AtomicU64,
    queue_full: AtomicU64,
    export_failed: AtomicU64,
    /// Whether the last export failed, so a failing receiver is logged once.
    failing: AtomicBool,
}

impl TraceStats {
    /// Spans the receiver accepted.
    pub fn exported(&self) -> u64 {
        self.exported.load(Ordering::Relaxed)
    }

    /// Spans dropped because the queue was full.
    pub fn dropped_queue_full(&self) -> u64 {
        self.queue_full.load(Ordering::Relaxed)
    }

    /// Spans dropped because their export failed or timed out.
    pub fn dropped_export_failed(&self) -> u64 {
        self.export_failed.load(Ordering::Relaxed)
    }
}

/// The running exporter: the keep rule, the queue, and the export thread behind it.
pub struct Tracer {
    ratio: f64,
    rule: KeepRule,
    scope: InstrumentationScope,
    tx: UnboundedSender<Vec<SpanData>>,
    /// Spans in the channel; bounded by `max_queue` before sending.
    queued: Arc<AtomicUsize>,
    max_queue: usize,
    stats: Arc<TraceStats>,
    /// Tells the export thread to send what it has and end.
    stop: CancellationToken,
    /// Fires when the export thread has ended.
    done: Mutex<Option<tokio::sync::oneshot::Receiver<()>>>,
}

impl std::fmt::Debug for Tracer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracer")
            .field("ratio", &self.ratio)
            .field("rule", &self.rule)
            .finish_non_exhaustive()
    }
}

impl Tracer {
    /// Builds the OTLP exporter and starts the export thread; counts into `stats`.
    pub fn start(config: &Config, stats: Arc<TraceStats>) -> Result<Arc<Tracer>, TracerError> {
        let headers = resolve_headers(&config.otlp)?;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let (built_tx, built_rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let stop = CancellationToken::new();
        let queued = Arc::new(AtomicUsize::new(0));
        let export = Export {
            batch: config.batch.max_batch.max(1),
            interval: config.batch.interval,
            timeout: config.otlp.timeout,
            queued: queued.clone(),
            stats: stats.clone(),
        };
        let (otlp, service) = (config.otlp.clone(), config.service_name.clone());
        let thread_stop = stop.clone();
        std::thread::Builder::new()
            .name("steady-otlp".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = built_tx.send(Err(TracerError::Thread(e)));
                        return;
                    }
                };
                runtime.block_on(async move {
                    // Built on this runtime: tonic's channel lives on it.
                    match build_exporter(&otlp, headers, &service) {
                        Ok(exporter) => {
                            let _ = built_tx.send(Ok(()));
                            export.run(exporter, rx, thread_stop).await;
                        }
                        Err(e) => {
                            let _ = built_tx.send(Err(e));
                        }
                    }
                });
                let _ = done_tx.send(());
            })?;
        match built_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(TracerError::Exporter("the export thread ended".into())),
        }
        Ok(Arc::new(Tracer {
            ratio: config.sample.0,
            rule: KeepRule {
                errors: config.always_sample_errors,
                slow: config.slow_threshold,
            },
            scope: InstrumentationScope::builder("steady")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
            tx,
            queued,
            max_queue: config.batch.max_queue.max(1),
            stats,
            stop,
            done: Mutex::new(Some(done_rx)),
        }))
    }

    /// The head sampling ratio of traces steady starts.
    pub fn ratio(&self) -> f64 {
        self.ratio
    }

    /// Queues a request's spans for export, or drops and counts them if the queue is
    /// full. Never blocks.
    fn offer(&self, spans: Vec<SpanData>) {
        let n = spans.len();
        let before = self.queued.fetch_add(n, Ordering::Relaxed);
        if before + n > self.max_queue || self.stop.is_cancelled() {
            self.queued.fetch_sub(n, Ordering::Relaxed);
            self.stats.queue_full.fetch_add(n as u64, Ordering::Relaxed);
            return;
        }
        if self.tx.send(spans).is_err() {
            self.queued.fetch_sub(n, Ordering::Relaxed);
            self.stats.queue_full.fetch_add(n as u64, Ordering::Relaxed);
        }
    }

    /// Sends what is queued and stops the export thread, waiting for it up to
    /// `deadline`; returns whether it finished in time.
    pub async fn close(&self, deadline: Duration) -> bool {
        self.stop.cancel();
        let done = self.done.lock().unwrap_or_else(|e| e.into_inner()).take();
        match done {
            Some(done) => tokio::time::timeout(deadline, done).await.is_ok(),
            None => true,
        }
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        // A reload replaced this exporter: the thread sends what it holds, then ends.
        self.stop.cancel();
    }
}

/// Resolves `headers` and `headers_env` into one map.
fn resolve_headers(otlp: &Otlp) -> Result<http::HeaderMap, TracerError> {
    let mut out = http::HeaderMap::new();
    let mut add = |name: &str, value: &str| {
        let name = http::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| TracerError::BadHeader(name.to_string()))?;
        let value = http::HeaderValue::from_str(value)
            .map_err(|_| TracerError::BadHeader(name.to_string()))?;
        out.insert(name, value);
        Ok::<_, TracerError>(())
    };
    for (name, value) in &otlp.headers {
        add(name, value)?;
    }
    for (name, var) in &otlp.headers_env {
        let value = std::env::var(var).map_err(|_| TracerError::MissingEnv {
            header: name.clone(),
            var: var.clone(),
        })?;
        add(name, &value)?;
    }
    Ok(out)
}

fn build_exporter(
    otlp: &Otlp,
    headers: http::HeaderMap,
    service: &str,
) -> Result<opentelemetry_otlp::SpanExporter, TracerError> {
    let builder = opentelemetry_otlp::SpanExporter::builder();
    let ca = match otlp.tls.as_ref().and_then(|t| t.ca_file.as_deref()) {
        Some(path) if otlp.is_tls() => Some(read_ca(path)?),
        _ => None,
    };
    let built = match otlp.protocol {
        Protocol::Grpc => {
            let mut grpc = builder
                .with_tonic()
                .with_endpoint(otlp.url())
                .with_timeout(otlp.timeout)
                .with_metadata(
                    opentelemetry_otlp::tonic_types::metadata::MetadataMap::from_headers(headers),
                );
            if otlp.is_tls() {
                use opentelemetry_otlp::tonic_types::transport::{Certificate, ClientTlsConfig};
                let mut tls = ClientTlsConfig::new().with_native_roots();
                if let Some((pem, _)) = &ca {
                    tls = tls.ca_certificate(Certificate::from_pem(pem));
                }
                grpc = grpc.with_tls_config(tls);
            }
            grpc.build()
        }
        Protocol::Http => builder
            .with_http()
            .with_endpoint(otlp.url())
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_timeout(otlp.timeout)
            .with_http_client(http_client(otlp, ca.map(|(_, certs)| certs))?)
            .with_headers(
                headers
                    .iter()
                    .filter_map(|(k, v)| Some((k.to_string(), v.to_str().ok()?.to_string())))
                    .collect(),
            )
            .build(),
    };
    let mut exporter = built.map_err(|e| TracerError::Exporter(e.to_string()))?;
    exporter.set_resource(
        &opentelemetry_sdk::Resource::builder_empty()
            .with_service_name(service.to_string())
            .build(),
    );
    Ok(exporter)
}

/// The HTTP/protobuf exporter's client: HTTP/1.1 through hyper, plain or TLS (rustls
/// with ring, trusting the system's roots and `ca` when given).
fn http_client(
    otlp: &Otlp,
    ca: Option<Vec<rustls_pki_types::CertificateDer<'static>>>,
) -> Result<opentelemetry_http::hyper::HyperClient<HttpsConnector>, TracerError> {
    let mut roots = rustls::RootCertStore::empty();
    if otlp.is_tls() {
        roots = steady_notify::system_roots();
        if let Some(certs) = ca {
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(TracerError::Tls(
                    "`tls.ca_file` holds no usable certificate".into(),
                ));
            }
        }
        if roots.is_empty() {
            return Err(TracerError::Tls(
                "no root certificates to verify the receiver: install the system's \
                 (ca-certificates) or set `tls.ca_file`"
                    .into(),
            ));
        }
    }
    let connector =
        steady_notify::https_connector(roots).map_err(|e| TracerError::Tls(e.to_string()))?;
    Ok(opentelemetry_http::hyper::HyperClient::new(
        connector,
        otlp.timeout,
        None,
    ))
}

/// Reads `tls.ca_file`: its PEM text (for tonic) and its certificates (for rustls); a
/// file that cannot be read or holds no certificate is an error at start (or reload),
/// for either protocol.
fn read_ca(
    path: &std::path::Path,
) -> Result<(Vec<u8>, Vec<rustls_pki_types::CertificateDer<'static>>), TracerError> {
    use rustls_pki_types::pem::PemObject as _;
    let shown = path.display();
    let pem = std::fs::read(path)
        .map_err(|e| TracerError::Tls(format!("cannot read `tls.ca_file` {shown}: {e}")))?;
    let certs: Vec<_> = rustls_pki_types::CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TracerError::Tls(format!("`tls.ca_file` {shown} is not PEM: {e}")))?;
    if certs.is_empty() {
        return Err(TracerError::Tls(format!(
            "`tls.ca_file` {shown} holds no certificate (PEM `BEGIN CERTIFICATE`)"
        )));
    }
    Ok((pem, certs))
}

type HttpsConnector =
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>;

/// The export thread's loop settings.
struct Export {
    batch: usize,
    interval: Duration,
    timeout: Duration,
    queued: Arc<AtomicUsize>,
    stats: Arc<TraceStats>,
}

impl Export {
    async fn run(
        &self,
        mut exporter: opentelemetry_otlp::SpanExporter,
        mut rx: UnboundedReceiver<Vec<SpanData>>,
        stop: CancellationToken,
    ) {
        let mut pending: Vec<SpanData> = Vec::with_capacity(self.batch);
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                received = rx.recv() => match received {
                    Some(spans) => self.take(&exporter, &mut pending, spans).await,
                    None => break,
                },
                _ = tick.tick() => {
                    if !pending.is_empty() {
                        self.export(&exporter, std::mem::take(&mut pending)).await;
                    }
                }
                _ = stop.cancelled() => break,
            }
        }
        // Stopping: what was queued before, then the last partial batch.
        rx.close();
        while let Ok(spans) = rx.try_recv() {
            self.take(&exporter, &mut pending, spans).await;
        }
        if !pending.is_empty() {
            self.export(&exporter, pending).await;
        }
        let _ = exporter.shutdown();
    }

    /// Adds a request's spans to the batch, exporting every full batch.
    async fn take(
        &self,
        exporter: &opentelemetry_otlp::SpanExporter,
        pending: &mut Vec<SpanData>,
        spans: Vec<SpanData>,
    ) {
        self.queued.fetch_sub(spans.len(), Ordering::Relaxed);
        pending.extend(spans);
        while pending.len() >= self.batch {
            let rest = pending.split_off(self.batch);
            let full = std::mem::replace(pending, rest);
            self.export(exporter, full).await;
        }
    }

    async fn export(&self, exporter: &opentelemetry_otlp::SpanExporter, batch: Vec<SpanData>) {
        let n = batch.len() as u64;
        let result = match tokio::time::timeout(self.timeout, exporter.export(batch)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {:?}", self.timeout)),
        };
        let stats = &self.stats;
        match result {
            Ok(()) => {
                stats.exported.fetch_add(n, Ordering::Relaxed);
                if stats.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!("span export works again");
                }
            }
            Err(error) => {
                stats.export_failed.fetch_add(n, Ordering::Relaxed);
                if !stats.failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(%error, spans = n, "span export failed; dropping spans until it works");
                } else {
                    tracing::debug!(%error, spans = n, "span export failed");
                }
            }
        }
    }
}

/// The span id of one upstream attempt, from where `traceparent` is written to where
/// the attempt is sent.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AttemptSpan {
    /// The span id in the attempt's `traceparent`.
    pub(crate) id: SpanId,
    /// Whether the attempt is a hedged copy.
    pub(crate) hedge: bool,
}

/// One finished (or cancelled) attempt.
#[derive(Debug)]
struct Attempt {
    span: AttemptSpan,
    endpoint: SocketAddr,
    start: Instant,
    end: Instant,
    /// The response status, the failure, or `None` if the attempt was cancelled (a
    /// hedge race lost, the client gone).
    outcome: Option<Result<u16, Kind>>,
}

/// What a request's phases record for its spans.
#[derive(Debug)]
pub struct RequestSpans {
    ratio: f64,
    /// Whether a tail rule could keep a request that is not head-sampled.
    tail: bool,
    /// Whether this request could be kept at all; when not, attempts are not recorded.
    keepable: AtomicBool,
    inner: Mutex<Recorded>,
}

#[derive(Debug, Default)]
struct Recorded {
    trace: Option<RequestTrace>,
    route: Option<(Arc<str>, Arc<str>)>,
    failure: Option<&'static str>,
    /// Almost every request makes one attempt: kept inline, no allocation.
    attempts: smallvec::SmallVec<[Attempt; 1]>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl RequestSpans {
    /// Whether the request records its attempts: it is head-sampled or a tail rule
    /// could still keep it.
    #[inline]
    pub(crate) fn recording(&self) -> bool {
        self.keepable.load(Ordering::Relaxed)
    }

    /// Takes the head sampling decision for `trace` and remembers it.
    pub(crate) fn begin(&self, trace: &mut RequestTrace) {
        trace.head_sample(self.ratio);
        self.keepable
            .store(self.tail || trace.sampled(), Ordering::Relaxed);
        lock(&self.inner).trace = Some(trace.clone());
    }

    /// The route (and its upstream) that matched.
    pub(crate) fn set_route(&self, route: &Arc<str>, upstream: &Arc<str>) {
        lock(&self.inner).route = Some((route.clone(), upstream.clone()));
    }

    /// The failure steady answered with.
    pub(crate) fn fail(&self, reason: &'static str) {
        lock(&self.inner).failure = Some(reason);
    }

    /// One attempt, `span`, to `endpoint` from `start` to `end`; `outcome` is the
    /// response status, the failure, or `None` if the attempt was cancelled.
    pub(crate) fn attempt(
        &self,
        span: AttemptSpan,
        endpoint: SocketAddr,
        (start, end): (Instant, Instant),
        outcome: Option<Result<u16, Kind>>,
    ) {
        lock(&self.inner).attempts.push(Attempt {
            span,
            endpoint,
            start,
            end,
            outcome,
        });
    }
}

/// A request's span while its response is sent; decided and exported at the end.
pub struct PendingSpan {
    tracer: Arc<Tracer>,
    record: RequestSpans,
    start: Instant,
    time: SystemTime,
    method: http::Method,
    /// The request target and `Host` (reference-counted clones, no copy).
    uri: http::Uri,
    host: Option<http::HeaderValue>,
    scheme: &'static str,
    version: http::Version,
    client: SocketAddr,
    status: u16,
    done: bool,
}

impl std::fmt::Debug for PendingSpan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingSpan").finish_non_exhaustive()
    }
}

impl PendingSpan {
    /// Starts a request's record.
    /// `arrived` is when the request head arrived, on both clocks (read once for the
    /// line and the span), and `host` its `Host` header.
    pub(crate) fn new(
        tracer: Arc<Tracer>,
        req: &http::request::Parts,
        (client, scheme): (SocketAddr, &'static str),
        arrived: (SystemTime, Instant),
        host: Option<http::HeaderValue>,
    ) -> PendingSpan {
        PendingSpan {
            record: RequestSpans {
                ratio: tracer.ratio,
                tail: tracer.rule.errors || tracer.rule.slow.is_some(),
                keepable: AtomicBool::new(false),
                inner: Mutex::default(),
            },
            tracer,
            start: arrived.1,
            time: arrived.0,
            method: req.method.clone(),
            uri: req.uri.clone(),
            host,
            scheme,
            version: req.version,
            client,
            status: 0,
            done: false,
        }
    }

    /// The record the request's phases write to.
    pub(crate) fn record(&self) -> &RequestSpans {
        &self.record
    }

    /// Notes the response status.
    pub(crate) fn head<B>(&mut self, response: &http::Response<B>) {
        self.status = response.status().as_u16();
    }

    /// Decides and, if kept, exports (once).
    pub(crate) fn finish(&mut self) {
        self.finish_at(Instant::now());
    }

    /// Decides and, if kept, exports (once) a request that ended at `end`.
    pub(crate) fn finish_at(&mut self, end: Instant) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let mut recorded = std::mem::take(&mut *lock(&self.record.inner));
        // Refused before a trace was read (a malformed request): no span.
        let Some(trace) = recorded.trace.take() else {
            return;
        };
        let took = end.saturating_duration_since(self.start);
        let failed = recorded.failure.is_some();
        if !self
            .tracer
            .rule
            .keeps(trace.sampled(), self.status, failed, took)
        {
            return;
        }
        let spans = self.build(&trace, recorded, end);
        self.tracer.offer(spans);
    }

    fn at(&self, instant: Instant) -> SystemTime {
        self.time + instant.saturating_duration_since(self.start)
    }

    /// The request's SERVER span and its attempts' CLIENT spans.
    fn build(&self, trace: &RequestTrace, mut recorded: Recorded, end: Instant) -> Vec<SpanData> {
        let (trace_id, span_id) = trace.ids();
        let method = self.method.as_str().to_string();
        let route = recorded.route.as_ref().map(|(r, _)| r.to_string());
        let mut attributes = vec![
            KeyValue::new("http.request.method", method.clone()),
            KeyValue::new("url.path", self.uri.path().to_string()),
            KeyValue::new("url.scheme", self.scheme),
            KeyValue::new("network.protocol.version", version(self.version)),
            KeyValue::new("network.peer.address", self.client.ip().to_string()),
            KeyValue::new("network.peer.port", i64::from(self.client.port())),
            KeyValue::new("client.address", self.client.ip().to_string()),
        ];
        let host = self
            .uri
            .authority()
            .map(|a| a.as_str().to_string())
            .or_else(|| Some(self.host.as_ref()?.to_str().ok()?.to_string()));
        if let Some(host) = host {
            let (name, port) = split_host(&host);
            attributes.push(KeyValue::new("server.address", name.to_string()));
            if let Some(port) = port {
                attributes.push(KeyValue::new("server.port", port));
            }
        }
        if self.status != 0 {
            attributes.push(KeyValue::new(
                "http.response.status_code",
                i64::from(self.status),
            ));
        }
        if let Some((route, upstream)) = &recorded.route {
            attributes.push(KeyValue::new("http.route", route.to_string()));
            attributes.push(KeyValue::new("steady.upstream", upstream.to_string()));
        }
        let error = recorded
            .failure
            .map(str::to_string)
            .or_else(|| (self.status >= 500).then(|| self.status.to_string()));
        if let Some(error) = &error {
            attributes.push(KeyValue::new("error.type", error.clone()));
        }
        attributes.push(KeyValue::new(
            "steady.attempts",
            recorded.attempts.len() as i64,
        ));
        let sampled = TraceFlags::SAMPLED;
        let mut spans = Vec::with_capacity(1 + recorded.attempts.len());
        spans.push(SpanData {
            span_context: SpanContext::new(
                trace_id,
                span_id,
                sampled,
                false,
                trace.state().clone(),
            ),
            parent_span_id: trace.parent().unwrap_or(SpanId::INVALID),
            parent_span_is_remote: trace.parent().is_some(),
            span_kind: SpanKind::Server,
            name: Cow::Owned(match &route {
                Some(route) => format!("{method} {route}"),
                None => method.clone(),
            }),
            start_time: self.time,
            end_time: self.at(end),
            attributes,
            dropped_attributes_count: 0,
            events: Default::default(),
            links: Default::default(),
            status: match error {
                Some(error) => Status::error(error),
                None => Status::Unset,
            },
            instrumentation_scope: self.tracer.scope.clone(),
        });
        recorded.attempts.sort_by_key(|a| a.start);
        for (n, attempt) in recorded.attempts.iter().enumerate() {
            let mut attributes = vec![
                KeyValue::new("http.request.method", method.clone()),
                KeyValue::new("server.address", attempt.endpoint.ip().to_string()),
                KeyValue::new("server.port", i64::from(attempt.endpoint.port())),
                KeyValue::new("network.peer.address", attempt.endpoint.ip().to_string()),
                KeyValue::new("network.peer.port", i64::from(attempt.endpoint.port())),
            ];
            if n > 0 {
                attributes.push(KeyValue::new("http.request.resend_count", n as i64));
            }
            if attempt.span.hedge {
                attributes.push(KeyValue::new("steady.hedge", true));
            }
            if let Some((_, upstream)) = &recorded.route {
                attributes.push(KeyValue::new("steady.upstream", upstream.to_string()));
            }
            let error = match attempt.outcome {
                Some(Ok(status)) => {
                    attributes.push(KeyValue::new(
                        "http.response.status_code",
                        i64::from(status),
                    ));
                    // A client span fails on 4xx too (OpenTelemetry HTTP conventions).
                    (status >= 400).then(|| status.to_string())
                }
                Some(Err(kind)) => Some(kind.reason().to_string()),
                None => Some("cancelled".to_string()),
            };
            if let Some(error) = &error {
                attributes.push(KeyValue::new("error.type", error.clone()));
            }
            spans.push(SpanData {
                span_context: SpanContext::new(
                    trace_id,
                    attempt.span.id,
                    sampled,
                    false,
                    trace.state().clone(),
                ),
                parent_span_id: span_id,
                parent_span_is_remote: false,
                span_kind: SpanKind::Client,
                name: Cow::Owned(method.clone()),
                start_time: self.at(attempt.start),
                end_time: self.at(attempt.end),
                attributes,
                dropped_attributes_count: 0,
                events: Default::default(),
                links: Default::default(),
                status: match error {
                    Some(error) => Status::error(error),
                    None => Status::Unset,
                },
                instrumentation_scope: self.tracer.scope.clone(),
            });
        }
        spans
    }
}

impl Drop for PendingSpan {
    fn drop(&mut self) {
        // The client went away before the body ended: still decided.
        self.finish();
    }
}

fn version(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_09 => "0.9",
        http::Version::HTTP_10 => "1.0",
        http::Version::HTTP_2 => "2",
        http::Version::HTTP_3 => "3",
        _ => "1.1",
    }
}

/// Splits `host[:port]` (IPv6 in brackets) into the name and the port.
fn split_host(host: &str) -> (&str, Option<i64>) {
    match host.rsplit_once(':') {
        Some((name, port)) if !port.contains(']') => match port.parse::<u16>() {
            Ok(port) => (name, Some(i64::from(port))),
            Err(_) => (host, None),
        },
        _ => (host, None),
    }
}

/// `steady_trace_spans_*` for `/metrics`.
pub(crate) struct TraceCollector(pub(crate) Arc<TraceStats>);

impl std::fmt::Debug for TraceCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TraceCollector")
    }
}

impl prometheus_client::collector::Collector for TraceCollector {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::counter::ConstCounter;
        use prometheus_client::metrics::MetricType;
        let stats = &self.0;
        let exported = encoder.encode_descriptor(
            "steady_trace_spans_exported",
            "Spans the OTLP receiver accepted",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(stats.exported()).encode(exported)?;
        let mut dropped = encoder.encode_descriptor(
            "steady_trace_spans_dropped",
            "Spans not exported: the queue was full, or their export failed or timed out",
            None,
            MetricType::Counter,
        )?;
        for (reason, n) in [
            ("queue-full", stats.dropped_queue_full()),
            ("export-failed", stats.dropped_export_failed()),
        ] {
            ConstCounter::new(n).encode(dropped.encode_family(&[("reason", reason)])?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn the_keep_rule_takes_head_decisions_errors_and_slow_requests() {
        let rule = KeepRule {
            errors: true,
            slow: Some(500 * MS),
        };
        assert!(rule.keeps(true, 200, false, MS), "head-sampled");
        assert!(!rule.keeps(false, 200, false, MS), "fast success");
        assert!(
            !rule.keeps(false, 404, false, MS),
            "4xx is not an error of the service"
        );
        assert!(rule.keeps(false, 503, false, MS));
        assert!(
            rule.keeps(false, 429, true, MS),
            "a failure of steady's own"
        );
        assert!(rule.keeps(false, 200, false, 500 * MS));
        let off = KeepRule {
            errors: false,
            slow: None,
        };
        assert!(!off.keeps(false, 503, true, Duration::from_secs(60)));
        assert!(off.keeps(true, 200, false, MS));
    }

    #[test]
    fn hosts_split_into_name_and_port() {
        assert_eq!(split_host("a.example:8080"), ("a.example", Some(8080)));
        assert_eq!(split_host("a.example"), ("a.example", None));
        assert_eq!(split_host("[::1]:443"), ("[::1]", Some(443)));
        assert_eq!(split_host("[::1]"), ("[::1]", None));
    }
}
