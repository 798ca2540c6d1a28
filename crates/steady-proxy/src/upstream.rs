//! Upstreams at run time: the endpoint set (re-resolved from DNS), the balancer over it,
//! the hash key a request is balanced by, and the pooled HTTP client.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::request::Parts;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use steady_balance::{
    Algorithm, BalancerConfig, Endpoint, EndpointSet, Locality, OutlierDetector, OutlierEvent,
    Pick, RequestResult,
};
use steady_config::{Balance, HashKeySource, UpstreamProtocol};
use steady_limit::{AdaptiveConfig, ConcurrencyLimiter};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::body::RequestBody;
use crate::events::{EventKind, Events};

/// The pooled client steady forwards h2c requests with.
pub type HttpClient = Client<HttpConnector, RequestBody>;

/// How one worker reaches an upstream's endpoints.
pub enum Transport {
    /// steady's own pool of HTTP/1.1 connections.
    Http1(Arc<crate::pool::Pool>),
    /// hyper-util's client, which multiplexes HTTP/2 (h2c) streams (boxed: it is large
    /// and built once per worker).
    H2c(Box<HttpClient>),
}

/// Builds the h2c client of one worker.
fn h2c_client(config: &steady_config::Upstream) -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(config.connect_timeout));
    connector.set_keepalive(Some(Duration::from_secs(60)));
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(config.pool_idle_timeout)
        .pool_max_idle_per_host(config.pool_max_idle_per_endpoint)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .http2_only(true)
        .build(connector)
}

/// One configured upstream, live.
pub struct Upstream {
    /// Name from the config.
    pub name: Arc<str>,
    /// Current endpoints and balancer; swapped whole when DNS answers change.
    set: ArcSwap<EndpointSet>,
    balancer: BalancerConfig,
    hash: Option<HashKeySource>,
    /// Pooled keep-alive connections to every endpoint, one pool per worker so a
    /// request and its upstream connection stay on one thread.
    transports: Vec<Transport>,
    /// Deadline for a TCP connect to one endpoint.
    pub connect_timeout: Duration,
    configured: Vec<steady_config::Endpoint>,
    dns_refresh: Duration,
    /// Passive health: ejects endpoints that keep failing live requests. Shared with
    /// the upstream that replaces this one on a reload when `health.passive` stays.
    outlier: Option<Arc<Mutex<OutlierDetector>>>,
    /// Below this share of available endpoints, balance over all (with `outlier`).
    panic_threshold: Option<u32>,
    /// Adaptive concurrency limit shared by every worker, if configured.
    pub concurrency: Option<Arc<ConcurrencyLimiter>>,
    /// Circuit breakers (and the counts behind them), shared by every worker.
    pub breakers: Arc<crate::breakers::Breakers>,
    /// Ejections by outlier detection since start.
    ejections: std::sync::atomic::AtomicU64,
    /// Active health checks: their config and the checkers running now (replaced when
    /// DNS changes the endpoints, so new addresses are probed too).
    health: Option<ActiveChecks>,
    /// Ejections outlier detection wanted but `max_ejection_percent` refused.
    skipped: std::sync::atomic::AtomicU64,
    /// `skipped` when a skip was last logged, and when: skips are
    /// logged at most every [`SKIP_LOG_EVERY`] so a failing fleet does not flood logs.
    skip_log: Mutex<(u64, Option<std::time::Instant>)>,
    /// The gateway's own zone and region, for zone-aware failover.
    local: Locality,
    /// Envoy's overprovisioning factor for locality tiers.
    overprovisioning: f64,
    /// The config this upstream was built from, to tell on reload what changed.
    config: steady_config::Upstream,
    /// Stops this upstream's background tasks (DNS refresh, outlier evaluation, health
    /// checks) when it is removed or replaced; a child of the gateway's shutdown token.
    tasks: CancellationToken,
    /// The gateway's recent events, set when the upstream starts serving; ejections,
    /// readmissions and health flips are recorded there.
    events: OnceLock<Arc<Events>>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("name", &self.name)
            .finish()
    }
}

fn algorithm(b: Balance) -> Algorithm {
    match b {
        Balance::RoundRobin => Algorithm::RoundRobin,
        Balance::WeightedRoundRobin => Algorithm::WeightedRoundRobin,
        Balance::LeastConnections => Algorithm::LeastConnections,
        Balance::P2cEwma => Algorithm::P2cEwma,
        Balance::Random => Algorithm::Random,
        Balance::RingHash => Algorithm::RingHash,
        Balance::Maglev => Algorithm::Maglev,
    }
}

impl Upstream {
    /// Builds an upstream, resolving DNS names once (failures leave those endpoints out
    /// until a later refresh succeeds). Its background tasks stop when `parent` fires or
    /// the upstream is [retired](Self::retire).
    ///
    /// With `previous` (the upstream of the same name this one replaces on a config
    /// reload), endpoints whose address, name and weight stay are the same `Arc`s, so
    /// their in-flight counts, latency, health, ejection and slow start carry over; so
    /// do the outlier detector, the circuit breakers and the concurrency limiter when
    /// their own settings are unchanged. Pools and the balancer's rotation are new.
    /// `local` is the gateway's own zone and region, for zone-aware failover.
    pub async fn build(
        config: &steady_config::Upstream,
        workers: usize,
        previous: Option<&Upstream>,
        parent: &CancellationToken,
        local: Option<&steady_config::Locality>,
    ) -> Arc<Upstream> {
        let passive = config.health.as_ref().and_then(|h| h.passive.as_ref());
        let old_passive = previous.and_then(|p| p.config.health.as_ref()?.passive.as_ref());
        let balancer = BalancerConfig {
            algorithm: algorithm(config.balance),
            slow_start: config.slow_start,
            bounded_load: config.hash.as_ref().and_then(|h| h.bounded_load),
        };
        let breakers = match previous {
            Some(p) if p.config.circuit_breakers == config.circuit_breakers => p.breakers.clone(),
            _ => crate::breakers::Breakers::new(config.circuit_breakers.as_ref()),
        };
        let transports = (0..workers.max(1))
            .map(|_| match config.protocol {
                UpstreamProtocol::Http1 => Transport::Http1(Arc::new(crate::pool::Pool::new(
                    config.connect_timeout,
                    config.pool_idle_timeout,
                    config.pool_max_idle_per_endpoint,
                    breakers.clone(),
                ))),
                UpstreamProtocol::H2c => Transport::H2c(Box::new(h2c_client(config))),
            })
            .collect();
        let concurrency = match previous {
            Some(p) if p.config.concurrency == config.concurrency => p.concurrency.clone(),
            _ => config
                .concurrency
                .as_ref()
                .map(|c| ConcurrencyLimiter::new(adaptive_config(c))),
        };
        // Resolving starts from the previous endpoints so that those that stay are reused.
        let start = previous.map_or_else(Vec::new, |p| p.endpoints().endpoints().to_vec());
        let mut upstream = Upstream {
            name: config.name.as_str().into(),
            set: ArcSwap::from_pointee(EndpointSet::new(start, &balancer)),
            balancer,
            hash: config.hash.as_ref().map(|h| h.key_source()),
            transports,
            connect_timeout: config.connect_timeout,
            configured: config.endpoints.clone(),
            dns_refresh: config.dns_refresh,
            // Unchanged passive settings keep the detector: ejections, their multipliers
            // and the counters of endpoints that stay.
            outlier: match previous {
                Some(p) if passive.is_some() && old_passive == passive => p.outlier.clone(),
                _ => None,
            },
            panic_threshold: passive.map(|p| p.panic_threshold),
            concurrency,
            breakers,
            ejections: std::sync::atomic::AtomicU64::new(previous.map_or(0, |p| p.ejections())),
            skipped: std::sync::atomic::AtomicU64::new(
                previous.map_or(0, |p| p.ejections_skipped()),
            ),
            skip_log: Mutex::new((0, None)),
            health: config
                .health
                .as_ref()
                .and_then(|h| h.active.clone())
                .map(|config| ActiveChecks {
                    config,
                    running: Mutex::new(None),
                }),
            config: config.clone(),
            tasks: parent.child_token(),
            local: gateway_locality(local),
            overprovisioning: config.overprovisioning,
            events: OnceLock::new(),
        };
        upstream.resolve_with(previous.is_some()).await;
        if upstream.outlier.is_none() {
            // Nothing would ever readmit an endpoint that a detector no longer running
            // ejected.
            for endpoint in upstream.endpoints().endpoints() {
                endpoint.set_ejected(false);
            }
        }
        if let (Some(passive), None) = (passive, &upstream.outlier) {
            let endpoints = upstream.endpoints().endpoints().to_vec();
            match OutlierDetector::try_new(passive.outlier_config(), endpoints, fastrand::u64(..)) {
                Ok(detector) => upstream.outlier = Some(Arc::new(Mutex::new(detector))),
                // Validation rejects such configs; never take traffic down over it.
                Err(e) => {
                    tracing::error!(upstream = %upstream.name, error = %e, "outlier detection off")
                }
            }
        }
        Arc::new(upstream)
    }

    /// The gateway's own zone and region this upstream balances from.
    pub fn local(&self) -> &Locality {
        &self.local
    }

    /// How the current worker reaches this upstream.
    pub fn transport(&self) -> &Transport {
        &self.transports[crate::worker::current() % self.transports.len()]
    }

    /// The current endpoint set.
    pub fn endpoints(&self) -> arc_swap::Guard<Arc<EndpointSet>> {
        self.set.load()
    }

    /// Whether any endpoint is named by DNS (and so needs refreshing).
    fn has_dns_names(&self) -> bool {
        self.configured
            .iter()
            .any(|e| e.address.parse::<SocketAddr>().is_err())
    }

    /// The config this upstream was built from.
    pub fn config(&self) -> &steady_config::Upstream {
        &self.config
    }

    /// Records this upstream's state changes in `events` from now on (the gateway's
    /// ring; set once, before the background tasks start).
    pub fn set_events(&self, events: Arc<Events>) {
        let _ = self.events.set(events);
    }

    /// Records an event about one of this upstream's endpoints, if events are wired.
    fn event(&self, kind: EventKind, addr: SocketAddr, message: String) {
        if let Some(events) = self.events.get() {
            events.push(kind, Some(&self.name), Some(addr.to_string()), message);
        }
    }

    /// The token that stops this upstream's background tasks.
    pub fn tasks(&self) -> &CancellationToken {
        &self.tasks
    }

    /// Stops this upstream's background tasks and its feeding of outlier detection: it
    /// was removed or replaced by a reload. Requests already holding it finish.
    pub fn retire(&self) {
        self.tasks.cancel();
    }

    /// Resolves every endpoint address and swaps in a new set if the answers changed.
    /// Endpoints that stay keep their state (in-flight counts, latency estimates).
    pub async fn resolve(&self) {
        self.resolve_with(false).await
    }

    /// [`resolve`](Self::resolve), swapping in a new set even when the addresses are
    /// unchanged if `force` (a new upstream whose set came from its predecessor).
    async fn resolve_with(&self, force: bool) {
        let current = self.set.load_full();
        let now = Instant::now().into_std();
        let mut next: Vec<Arc<Endpoint>> = Vec::with_capacity(self.configured.len());
        for ep in &self.configured {
            let addrs: Vec<SocketAddr> = match ep.address.parse::<SocketAddr>() {
                Ok(a) => vec![a],
                Err(_) => match tokio::net::lookup_host(ep.address.as_str()).await {
                    Ok(it) => it.collect(),
                    Err(e) => {
                        tracing::warn!(upstream = %self.name, endpoint = %ep.address, error = %e, "DNS resolution failed; keeping previous addresses");
                        // Keep what we had for this name rather than dropping capacity.
                        current
                            .endpoints()
                            .iter()
                            .filter(|x| x.name() == ep.address)
                            .map(|x| x.addr())
                            .collect()
                    }
                },
            };
            for addr in addrs {
                if next.iter().any(|x| x.addr() == addr) {
                    continue;
                }
                let locality = Locality {
                    region: ep.region.as_deref().map(Into::into),
                    zone: ep.zone.as_deref().map(Into::into),
                    priority: ep.priority,
                };
                let reused = current
                    .endpoints()
                    .iter()
                    .find(|x| {
                        x.addr() == addr
                            && x.name() == ep.address
                            && x.weight() == ep.weight
                            && *x.locality() == locality
                    })
                    .cloned();
                next.push(reused.unwrap_or_else(|| {
                    Arc::new(
                        Endpoint::new(ep.address.as_str(), addr, ep.weight, now)
                            .with_locality(locality),
                    )
                }));
            }
        }
        self.install(next, &current, force);
    }

    /// Swaps in `next` as the endpoint set if it differs from `current` (or `force`),
    /// and points outlier detection and active health checks at it.
    fn install(&self, next: Vec<Arc<Endpoint>>, current: &EndpointSet, force: bool) {
        let changed = next.len() != current.endpoints().len()
            || next
                .iter()
                .zip(current.endpoints())
                .any(|(a, b)| !Arc::ptr_eq(a, b));
        // A retired upstream's late DNS answer must not rewrite a detector it shares
        // with its successor.
        if (changed || force) && !self.tasks.is_cancelled() {
            if changed {
                tracing::info!(upstream = %self.name, endpoints = next.len(), "endpoint set updated");
            }
            if let Some(outlier) = &self.outlier {
                lock(outlier).set_endpoints(next.clone());
            }
            let set = EndpointSet::new(next, &self.balancer)
                .with_panic_threshold(self.panic_threshold)
                .with_locality(&self.local, self.overprovisioning);
            self.set.store(Arc::new(set));
            // Running checkers probe the old list: replace them, keeping the verdicts of
            // endpoints that stay, so new addresses are probed before they are trusted
            // (per `health.active.initial`).
            if changed {
                if let Some(running) = self.health_checks() {
                    self.restart_health(&running.reports());
                }
            }
        }
    }

    /// Runs `tick` on this upstream every `every` until `shutdown` fires.
    fn spawn_every<F, Fut>(self: &Arc<Self>, every: Duration, shutdown: CancellationToken, tick: F)
    where
        F: Fn(Arc<Self>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(every) => tick(this.clone()).await,
                }
            }
        });
    }

    /// Starts the background tasks of this upstream (DNS refresh, outlier evaluation);
    /// they stop when it is retired or the gateway shuts down.
    pub fn spawn_background(self: &Arc<Self>) {
        self.spawn_dns_refresh();
        self.spawn_outlier_evaluation();
    }

    /// Re-resolves DNS names every `dns_refresh` until retired.
    fn spawn_dns_refresh(self: &Arc<Self>) {
        if self.has_dns_names() {
            self.spawn_every(self.dns_refresh, self.tasks.clone(), |this| async move {
                this.resolve().await
            });
        }
    }

    /// Feeds one request's result, known at `now`, to outlier detection, if it is on.
    /// `trace` is the request's trace id: an ejection it causes is logged with it, so
    /// the log line leads to the request (access log, spans) that tipped the balance.
    pub fn record(
        &self,
        addr: SocketAddr,
        now: std::time::Instant,
        result: RequestResult,
        trace: Option<opentelemetry::trace::TraceId>,
    ) {
        if let Some(outlier) = &self.outlier {
            // Once retired its detector may be gone from service (nothing would readmit
            // what it ejects) or shared with the successor; either way stay out.
            if self.tasks.is_cancelled() {
                return;
            }
            let events = lock(outlier).record(addr, now, result);
            self.log_events(events, trace);
        }
    }

    /// Logs outlier detection's decisions and counts the ejections; `trace` is the id
    /// of the request that caused them, if any.
    fn log_events(&self, events: Vec<OutlierEvent>, trace: Option<opentelemetry::trace::TraceId>) {
        let trace_id = trace.map(tracing::field::display);
        let upstream = &self.name;
        for event in events {
            match event {
                OutlierEvent::Ejected {
                    addr,
                    reason,
                    duration,
                    multiplier,
                } => {
                    self.ejections
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::warn!(
                        %upstream, endpoint = %addr, ?reason, ?duration, multiplier, trace_id, "endpoint ejected"
                    );
                    self.event(
                        EventKind::Ejection,
                        addr,
                        format!("ejected ({reason:?}) for {duration:?}, multiplier {multiplier}"),
                    );
                }
                OutlierEvent::EjectionSkipped { addr, reason } => {
                    let total = self
                        .skipped
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                        + 1;
                    let now = std::time::Instant::now();
                    let mut last = self.skip_log.lock().unwrap_or_else(PoisonError::into_inner);
                    if last
                        .1
                        .is_none_or(|at| now.duration_since(at) >= SKIP_LOG_EVERY)
                    {
                        let since_last_log = total - last.0;
                        *last = (total, Some(now));
                        tracing::info!(
                            %upstream, endpoint = %addr, ?reason, since_last_log, trace_id,
                            "ejection skipped: max_ejection_percent reached"
                        );
                    }
                }
                OutlierEvent::Readmitted { addr, reason } => {
                    tracing::info!(%upstream, endpoint = %addr, ?reason, trace_id, "endpoint readmitted");
                    self.event(
                        EventKind::Readmission,
                        addr,
                        format!("readmitted ({reason:?})"),
                    );
                }
            }
        }
    }

    /// Readmits ejected endpoints whose active health check passed after they were
    /// ejected (Envoy's `successful_active_health_check_uneject_host`), every `every`
    /// until retired. Does nothing without outlier detection.
    fn spawn_readmit_on_health(self: &Arc<Self>, every: Duration) {
        if self.outlier.is_none() {
            return;
        }
        self.spawn_every(every, self.tasks.clone(), move |this| {
            async move {
                let Some(outlier) = &this.outlier else { return };
                if !this.endpoints().endpoints().iter().any(|e| e.is_ejected()) {
                    return;
                }
                let Some(health) = this.health_checks() else {
                    return;
                };
                let reports = health.reports();
                let events: Vec<OutlierEvent> = {
                    let mut detector = lock(outlier);
                    let mut events = Vec::new();
                    for (addr, report) in reports {
                        // A probe that passed after the ejection began readmits.
                        let passed_since = |at: std::time::Instant| {
                            report.last_error.is_none() && report.last_check.is_some_and(|c| c > at)
                        };
                        if detector.ejected_at(addr).is_some_and(passed_since) {
                            events.extend(detector.readmit(addr));
                        }
                    }
                    events
                };
                this.log_events(events, None);
            }
        });
    }

    /// Starts active health checks of the current endpoints, if configured: endpoints
    /// with a report in `previous` resume from it. Returns the checkers' handle.
    ///
    /// Also starts the watcher that lets a passing check readmit an ejected endpoint.
    /// The checkers stop when the upstream is retired, and are replaced (resuming their
    /// own reports) whenever DNS re-resolution changes the endpoints.
    pub fn start_health(
        self: &Arc<Self>,
        previous: &[(SocketAddr, steady_health::HealthReport)],
    ) -> Option<steady_health::HealthHandle> {
        let interval = self.health.as_ref()?.config.interval;
        let handle = self.restart_health(previous)?;
        self.spawn_readmit_on_health(interval);
        self.spawn_health_events(interval, &handle.reports());
        Some(handle)
    }

    /// Records health flips and drain changes in the recent events: every `every`
    /// until retired, compares the checkers' reports with those seen last. Polling keeps
    /// steady-health free of steady-proxy; a flip and flop within one interval is missed.
    fn spawn_health_events(
        self: &Arc<Self>,
        every: Duration,
        start: &[(SocketAddr, steady_health::HealthReport)],
    ) {
        if self.events.get().is_none() {
            return;
        }
        let seen: HashMap<SocketAddr, (bool, bool)> = start
            .iter()
            .map(|(addr, r)| (*addr, (r.healthy, r.draining)))
            .collect();
        let seen = Arc::new(Mutex::new(seen));
        self.spawn_every(every, self.tasks.clone(), move |this| {
            let seen = seen.clone();
            async move {
                let Some(health) = this.health_checks() else {
                    return;
                };
                let mut seen = seen.lock().unwrap_or_else(PoisonError::into_inner);
                for (addr, report) in health.reports() {
                    let now = (report.healthy, report.draining);
                    // An endpoint new to the set (DNS) is recorded silently first.
                    let Some(before) = seen.insert(addr, now) else {
                        continue;
                    };
                    if before.0 != now.0 {
                        let message = match (now.0, &report.last_error) {
                            (true, _) => "became healthy".to_owned(),
                            (false, Some(e)) => format!("became unhealthy: {e}"),
                            (false, None) => "became unhealthy".to_owned(),
                        };
                        this.event(EventKind::Health, addr, message);
                    }
                    if before.1 != now.1 {
                        let message = if now.1 {
                            "asked to drain"
                        } else {
                            "ended its drain"
                        };
                        this.event(EventKind::Drain, addr, message.to_owned());
                    }
                }
            }
        });
    }

    /// (Re)starts the checkers over the current endpoint set, stopping the old ones.
    fn restart_health(
        &self,
        previous: &[(SocketAddr, steady_health::HealthReport)],
    ) -> Option<steady_health::HealthHandle> {
        let checks = self.health.as_ref()?;
        if self.tasks.is_cancelled() {
            return None;
        }
        let endpoints = self.endpoints().endpoints().to_vec();
        let stop = self.tasks.child_token();
        let span = tracing::info_span!("health", upstream = %self.name);
        let handle = span.in_scope(|| {
            steady_health::spawn_resuming(endpoints, checks.config.clone(), stop.clone(), previous)
        });
        let old = checks
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .replace((handle.clone(), stop));
        if let Some((_, old_stop)) = old {
            old_stop.cancel();
        }
        Some(handle)
    }

    /// The running active health checkers, if the upstream has them.
    pub fn health_checks(&self) -> Option<steady_health::HealthHandle> {
        let checks = self.health.as_ref()?;
        let running = checks
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        running.as_ref().map(|(handle, _)| handle.clone())
    }

    /// Ejections by outlier detection since start.
    pub fn ejections(&self) -> u64 {
        self.ejections.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Ejections refused by `max_ejection_percent` since start.
    pub fn ejections_skipped(&self) -> u64 {
        self.skipped.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Runs outlier detection's interval step (success rate, expiries) until retired.
    fn spawn_outlier_evaluation(self: &Arc<Self>) {
        let Some(outlier) = &self.outlier else { return };
        let interval = lock(outlier).config().interval;
        self.spawn_every(interval, self.tasks.clone(), |this| async move {
            if let Some(outlier) = &this.outlier {
                let events = lock(outlier).evaluate(Instant::now().into_std());
                this.log_events(events, None);
            }
        });
    }

    /// Computes the hash a hash balancer uses for this request, if it has one.
    pub fn request_hash(&self, parts: &Parts, client: IpAddr) -> Option<u64> {
        let source = self.hash.as_ref()?;
        match source {
            HashKeySource::Header(name) => parts
                .headers
                .get(name.as_str())
                .map(|v| steady_balance::hash_key(v.as_bytes())),
            HashKeySource::Cookie(name) => cookie(parts, name).map(steady_balance::hash_key),
            HashKeySource::ClientIp => Some(ip_hash(client)),
            HashKeySource::Path => Some(steady_balance::hash_key(parts.uri.path().as_bytes())),
        }
    }

    /// Hash of a client address, for L4 routes balanced by client IP.
    pub fn client_hash(&self, client: IpAddr) -> Option<u64> {
        self.hash.as_ref().map(|_| ip_hash(client))
    }

    /// Picks an endpoint for a request arriving at `now` (slow start reads it).
    pub fn pick(
        &self,
        hash: Option<u64>,
        avoid: &[SocketAddr],
        now: std::time::Instant,
    ) -> Option<Arc<Endpoint>> {
        self.set.load().pick(&Pick { hash, now, avoid })
    }
}

/// The limiter settings a `concurrency` block stands for.
/// An upstream's active health checks.
struct ActiveChecks {
    config: steady_config::health::ActiveHealth,
    /// The checkers and the token that stops them.
    running: Mutex<Option<(steady_health::HealthHandle, CancellationToken)>>,
}

/// How often an upstream logs ejections that `max_ejection_percent` refused.
pub const SKIP_LOG_EVERY: Duration = Duration::from_secs(10);

/// The gateway's locality (`runtime.locality`) as the balancer compares it.
pub fn gateway_locality(local: Option<&steady_config::Locality>) -> Locality {
    local.map_or_else(Locality::default, |l| Locality {
        region: l.region.as_deref().map(Into::into),
        zone: l.zone.as_deref().map(Into::into),
        priority: 0,
    })
}

fn adaptive_config(c: &steady_config::limits::Concurrency) -> AdaptiveConfig {
    AdaptiveConfig {
        min_limit: c.min_limit,
        max_limit: c.max_limit,
        initial_limit: c.initial_limit,
        sample_window: c.sample_window,
        sample_percentile: c.percentile.0,
        min_rtt_interval: c.min_rtt_interval,
        min_rtt_samples: c.min_rtt_samples,
        buffer: c.buffer.0,
        queue_size: c.queue_size,
        queue_timeout: c.queue_timeout,
    }
}

fn lock(m: &Mutex<OutlierDetector>) -> std::sync::MutexGuard<'_, OutlierDetector> {
    // A panic elsewhere while holding it leaves counters, not broken invariants.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn ip_hash(ip: IpAddr) -> u64 {
    match ip {
        IpAddr::V4(v4) => steady_balance::hash_key(&v4.octets()),
        IpAddr::V6(v6) => steady_balance::hash_key(&v6.octets()),
    }
}

pub(crate) fn cookie<'a>(parts: &'a Parts, name: &str) -> Option<&'a [u8]> {
    for header in parts.headers.get_all(http::header::COOKIE) {
        for pair in header.as_bytes().split(|b| *b == b';') {
            let pair = pair.trim_ascii();
            if let Some(rest) = pair.strip_prefix(name.as_bytes()) {
                if let Some(value) = rest.strip_prefix(b"=") {
                    return Some(value);
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_cookies() {
        let req = http::Request::builder()
            .header("cookie", "a=1; session=xyz; b=2")
            .body(())
            .unwrap();
        let (parts, _) = req.into_parts();
        assert_eq!(cookie(&parts, "session"), Some(&b"xyz"[..]));
        assert_eq!(cookie(&parts, "sess"), None);
        assert_eq!(cookie(&parts, "c"), None);
    }

    fn config(yaml: &str) -> steady_config::Upstream {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    /// DNS answers that change (simulated by installing a new set, as `resolve` does)
    /// get health-checked: the new address is probed, the kept one keeps its verdict.
    #[tokio::test]
    async fn endpoints_added_by_dns_are_health_checked() {
        let live = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let live_addr = live.local_addr().unwrap();
        tokio::spawn(async move { while live.accept().await.is_ok() {} });
        let dead = steady_testkit::dead_addr();
        let upstream = Upstream::build(
            &config(&format!(
                "{{name: app, endpoints: [{{address: '{live_addr}'}}], health: {{active: \
                 {{tcp: {{}}, interval: 20ms, timeout: 10ms, healthy_threshold: 1, \
                 unhealthy_threshold: 1}}}}}}"
            )),
            1,
            None,
            &CancellationToken::new(),
            None,
        )
        .await;
        let first = upstream
            .start_health(&[])
            .expect("active checks configured");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !first.first_round_done() {
            assert!(Instant::now() < deadline, "first round never finished");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }

        // DNS now also answers an address nothing listens on.
        let current = upstream.endpoints();
        let mut next = current.endpoints().to_vec();
        let kept = next[0].clone();
        next.push(Arc::new(Endpoint::new(
            "app.internal:1",
            dead,
            1,
            Instant::now().into_std(),
        )));
        upstream.install(next, &current, false);

        let checks = upstream.health_checks().unwrap();
        let addrs: Vec<SocketAddr> = checks.reports().iter().map(|(a, _)| *a).collect();
        assert_eq!(addrs, [live_addr, dead], "the checkers follow the new set");
        assert!(kept.is_available(), "the kept endpoint keeps its verdict");
        let added = upstream.endpoints().get(dead).unwrap().clone();
        while added.is_available() {
            assert!(
                Instant::now() < deadline,
                "the added endpoint was never probed"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(kept.is_available());
        upstream.retire();
    }
}
