//! Hot reload: turns a config into running listeners, routes and upstreams, and
//! replaces a running config with a new one without dropping a connection.
//!
//! [`Gateway::start_on`] applies its config onto an empty gateway; [`Gateway::reload`]
//! and [`Gateway::reload_file`] apply a new one onto the running gateway. Either way
//! [`Gateway::apply`] does it in four steps, so that a config that cannot apply changes
//! nothing:
//!
//! 1. **check and bind**: every step that can fail (route references, TLS files,
//!    trusted proxies, binding new listeners) runs first; an error drops what was bound
//!    and leaves the running config untouched;
//! 2. **upstreams**: an upstream whose config is unchanged is kept whole (pools,
//!    breakers, limiter, outlier detector, health checkers, balancer state); a changed
//!    one is rebuilt by [`Upstream::build`] from its predecessor, reusing the `Arc`s of
//!    endpoints that stay so their state survives;
//! 3. **routes**: each listener gets a new routing table; a route whose config, upstream
//!    and listener settings are unchanged is the same `Arc<Route>` (its rate-limit
//!    buckets survive);
//! 4. **commit**: replaced upstreams retire (their background tasks stop), new ones
//!    start theirs, listeners whose `bind`, `protocol` and `tls` stay keep their sockets
//!    and get the new table and limits in one atomic swap each, new listeners start
//!    accepting, removed ones stop accepting and drain their connections.
//!
//! `admin` and `runtime.workers` cannot change live: a reload keeps the old values
//! and says so ([`ReloadSummary::needs_restart`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use arc_swap::{ArcSwap, ArcSwapOption};
use steady_config::{Config, ListenerProtocol};
use steady_limit::{RedisOptions, RedisStore};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::admit::Admission;
use crate::gateway::{bind_listener, serve_http, Accept, ConnSettings, StartError, View};
use crate::http::HttpListener;
use crate::router::{Route, Router};
use crate::upstream::{gateway_locality, Upstream};
use crate::Gateway;

/// What a reload did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadSummary {
    /// Listeners bound by this reload.
    pub listeners_added: Vec<String>,
    /// Listeners that stopped accepting (their connections drain).
    pub listeners_removed: Vec<String>,
    /// Listeners that kept their sockets and connections and got new routes and limits.
    pub listeners_kept: Vec<String>,
    /// Upstreams new in this config.
    pub upstreams_added: Vec<String>,
    /// Upstreams no longer in the config.
    pub upstreams_removed: Vec<String>,
    /// Upstreams whose config changed: rebuilt, keeping the endpoints that stay.
    pub upstreams_changed: Vec<String>,
    /// Upstreams whose config is unchanged, kept whole.
    pub upstreams_kept: Vec<String>,
    /// Endpoints of changed upstreams carried over with their state.
    pub endpoints_kept: usize,
    /// Settings that changed but only apply on restart (`admin`, `runtime.workers`).
    pub needs_restart: Vec<&'static str>,
}

/// Why a reload was refused; the running config stays in force.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file could not be read, parsed or validated.
    #[error("{count} problem(s) in the config file:\n{0}", count = .0.len())]
    Load(steady_config::Diagnostics),
    /// The config failed validation.
    #[error("invalid config: {}", problems(.0))]
    Invalid(Vec<steady_config::Problem>),
    /// The config is valid but cannot apply (a listener cannot bind, TLS files unusable).
    #[error("cannot apply config: {0}")]
    Apply(#[from] StartError),
}

fn problems(problems: &[steady_config::Problem]) -> String {
    let all: Vec<String> = problems
        .iter()
        .map(|p| format!("{}: {}", p.path, p.message))
        .collect();
    all.join("; ")
}

/// The running config and what it built, owned by the reload lock.
pub(crate) struct Control {
    /// The config in force (with the `admin` and `runtime.workers` of the start).
    config: Config,
    listeners: Vec<RunningListener>,
    upstreams: HashMap<String, RunningUpstream>,
    /// The store global rate limits share, and what they do without it.
    redis: Option<(Arc<RedisStore>, steady_config::limits::OnFailure)>,
}

impl Control {
    /// Nothing running yet; `start` is the config the process starts with, whose
    /// restart-only settings later reloads are compared against.
    pub(crate) fn empty(start: &Config) -> Control {
        Control {
            config: Config {
                runtime: start.runtime.clone(),
                admin: start.admin.clone(),
                ..Config::default()
            },
            listeners: Vec::new(),
            upstreams: HashMap::new(),
            redis: None,
        }
    }
}

/// A listener accepting now.
struct RunningListener {
    config: steady_config::Listener,
    addr: SocketAddr,
    /// Stops its accept loops and drains its connections; child of the gateway's token.
    stop: CancellationToken,
    /// Client timeouts and TLS of connections accepted from now on.
    settings: Arc<ArcSwap<ConnSettings>>,
    /// `max_connections` of connections accepted from now on.
    limit: Arc<ArcSwapOption<Semaphore>>,
    kind: ListenerKind,
}

enum ListenerKind {
    /// Requests find their route in the listener's swappable table.
    Http(Arc<HttpListener>),
    /// Connections go to the upstream of the listener's route.
    Tcp(Arc<ArcSwap<Upstream>>),
}

/// An upstream in service (it owns its health checkers).
struct RunningUpstream {
    upstream: Arc<Upstream>,
}

/// What step 1 prepared for one listener of the new config.
struct ListenerPlan<'a> {
    config: &'a steady_config::Listener,
    tls: Option<TlsAcceptor>,
    trusted: Arc<[ipnet::IpNet]>,
    /// Sockets bound for a listener that is new (or whose socket settings changed).
    bound: Option<(Vec<std::net::TcpListener>, SocketAddr)>,
}

/// Whether a running listener can keep its sockets under a new config.
fn same_sockets(old: &steady_config::Listener, new: &steady_config::Listener) -> bool {
    old.name == new.name
        && old.bind == new.bind
        && old.protocol == new.protocol
        && old.tls == new.tls
}

/// Applies a changed `max_connections` to a kept listener; open connections keep their
/// permits.
fn resize_limit(
    limit: &ArcSwapOption<Semaphore>,
    from: Option<usize>,
    to: Option<usize>,
    stop: &CancellationToken,
) {
    if from == to {
        return;
    }
    match (limit.load_full(), from, to) {
        // Resized in place, so an accept loop waiting for a permit sees the change.
        (Some(sem), Some(from), Some(to)) if to > from => sem.add_permits(to - from),
        (Some(sem), Some(from), Some(to)) => {
            let deficit = from - to;
            let rest = deficit - sem.forget_permits(deficit);
            if rest > 0 {
                // Open connections hold the rest: retire their permits as they close.
                let stop = stop.clone();
                let rest = u32::try_from(rest).unwrap_or(u32::MAX);
                tokio::spawn(async move {
                    tokio::select! {
                        permits = sem.acquire_many_owned(rest) => {
                            if let Ok(permits) = permits {
                                permits.forget();
                            }
                        }
                        _ = stop.cancelled() => {}
                    }
                });
            }
        }
        (old, _, to) => {
            limit.store(to.map(|n| Arc::new(Semaphore::new(n))));
            // An accept loop waiting on the old limit moves on to the new one.
            if let Some(old) = old {
                old.close();
            }
        }
    }
}

impl Gateway {
    /// Validates `config` and applies it in place of the running one (see the
    /// [module docs](crate::reload)). On error nothing changed. Reloads run one at a time.
    pub async fn reload(&self, config: &Config) -> Result<ReloadSummary, ReloadError> {
        let problems = steady_config::validate(config);
        if !problems.is_empty() {
            for p in &problems {
                tracing::error!(path = %p.path, message = %p.message, "config reload rejected");
            }
            self.metrics.config_reloaded(false);
            let error = ReloadError::Invalid(problems);
            self.reload_event(&Err(&error));
            return Err(error);
        }
        self.apply_reload(config).await
    }

    /// The config running now (with the `admin` and `runtime.workers` it started with).
    pub async fn running_config(&self) -> Config {
        self.control.lock().await.config.clone()
    }

    /// Loads the config file at `path` (syntax, types, semantics: every problem is logged
    /// with file:line:column) and applies it in place of the running one. On error
    /// nothing changed.
    pub async fn reload_file(&self, path: &Path) -> Result<ReloadSummary, ReloadError> {
        match steady_config::load(path) {
            Ok(config) => self.apply_reload(&config).await,
            Err(diagnostics) => {
                for d in diagnostics.iter() {
                    tracing::error!(
                        file = %d.file,
                        line = d.line,
                        column = d.column,
                        path = %d.path,
                        message = %d.message,
                        "config reload rejected, the previous config keeps running: {d}"
                    );
                }
                self.metrics.config_reloaded(false);
                let error = ReloadError::Load(diagnostics);
                self.reload_event(&Err(&error));
                Err(error)
            }
        }
    }

    /// Applies a valid config, counts the outcome and logs it.
    async fn apply_reload(&self, config: &Config) -> Result<ReloadSummary, ReloadError> {
        let mut control = self.control.lock().await;
        match self.apply(&mut control, config).await {
            Ok(summary) => {
                self.metrics.config_reloaded(true);
                for setting in &summary.needs_restart {
                    tracing::warn!(
                        setting,
                        "changed setting needs a restart; the old value stays in force"
                    );
                }
                tracing::info!(
                    listeners_added = ?summary.listeners_added,
                    listeners_removed = ?summary.listeners_removed,
                    upstreams_added = ?summary.upstreams_added,
                    upstreams_removed = ?summary.upstreams_removed,
                    upstreams_changed = ?summary.upstreams_changed,
                    endpoints_kept = summary.endpoints_kept,
                    "config reloaded"
                );
                self.reload_event(&Ok(&summary));
                Ok(summary)
            }
            Err(e) => {
                self.metrics.config_reloaded(false);
                tracing::error!(error = %e, "config reload rejected, previous config still running");
                let error = e.into();
                self.reload_event(&Err(&error));
                Err(error)
            }
        }
    }

    /// Records a reload's outcome in the recent events.
    fn reload_event(&self, outcome: &Result<&ReloadSummary, &ReloadError>) {
        let message = match outcome {
            Ok(s) => {
                let mut parts = Vec::new();
                for (what, names) in [
                    ("listeners added", &s.listeners_added),
                    ("listeners removed", &s.listeners_removed),
                    ("upstreams added", &s.upstreams_added),
                    ("upstreams removed", &s.upstreams_removed),
                    ("upstreams changed", &s.upstreams_changed),
                ] {
                    if !names.is_empty() {
                        parts.push(format!("{what}: {}", names.join(", ")));
                    }
                }
                if !s.needs_restart.is_empty() {
                    parts.push(format!("needs restart: {}", s.needs_restart.join(", ")));
                }
                if parts.is_empty() {
                    "config reloaded: nothing changed".to_owned()
                } else {
                    format!("config reloaded; {}", parts.join("; "))
                }
            }
            Err(e) => format!("config reload rejected, previous config still running: {e}"),
        };
        self.events
            .push(crate::events::EventKind::Reload, None, None, message);
    }

    /// Makes `config` the running config; `control` holds the current one (empty at
    /// start). Fails, having changed nothing, if a listener cannot bind or its TLS
    /// files are unusable.
    pub(crate) async fn apply(
        &self,
        control: &mut Control,
        config: &Config,
    ) -> Result<ReloadSummary, StartError> {
        let mut summary = ReloadSummary::default();
        if control.config.admin != config.admin {
            summary.needs_restart.push("admin");
        }
        if control.config.runtime.workers != config.runtime.workers {
            summary.needs_restart.push("runtime.workers");
        }
        let n_workers = self.workers.len();

        // 1. Everything that can fail, before anything changes.
        let new_access_log = if control.config.access_log != config.access_log {
            Some(match &config.access_log {
                Some(c) => Some(crate::access_log::AccessLog::start(c).map_err(|source| {
                    StartError::AccessLog {
                        path: c.path.clone(),
                        source,
                    }
                })?),
                None => None,
            })
        } else {
            None
        };
        crate::slo::Slos::check(config).map_err(|e| StartError::Invalid(e.to_string()))?;
        // Notifiers read their keys now: a missing one refuses the config.
        let new_notifiers = if control.config.notifiers != config.notifiers
            || control.config.alerts != config.alerts
        {
            Some(self.slos.build_notifiers(config)?)
        } else {
            None
        };
        let new_tracer = if control.config.tracing != config.tracing {
            Some(match &config.tracing {
                Some(c) => Some(crate::otel::Tracer::start(
                    c,
                    self.metrics.trace_stats().clone(),
                )?),
                None => None,
            })
        } else {
            None
        };
        for r in &config.routes {
            if !config.upstreams.iter().any(|u| u.name == r.upstream) {
                return Err(StartError::Invalid(format!(
                    "route `{}`: unknown upstream `{}`",
                    r.name, r.upstream
                )));
            }
        }
        let mut plans = Vec::with_capacity(config.listeners.len());
        for l in &config.listeners {
            let tls = match (&l.protocol, &l.tls) {
                // Built anew even for a kept listener: a reload picks up rotated certs.
                (ListenerProtocol::Https, Some(tls)) => {
                    Some(crate::tls::acceptor(&tls.cert, &tls.key).map_err(|source| {
                        StartError::Tls {
                            name: l.name.clone(),
                            source,
                        }
                    })?)
                }
                (ListenerProtocol::Https, None) => {
                    return Err(StartError::Invalid(format!(
                        "listener `{}`: https needs tls",
                        l.name
                    )))
                }
                _ => None,
            };
            let trusted: Arc<[ipnet::IpNet]> = l
                .try_trusted_proxies()
                .map_err(|e| StartError::Invalid(format!("listener `{}`: {e}", l.name)))?
                .into();
            if l.protocol == ListenerProtocol::Tcp
                && !config.routes.iter().any(|r| r.listener == l.name)
            {
                return Err(StartError::Invalid(format!(
                    "tcp listener `{}` has no route",
                    l.name
                )));
            }
            let kept = control
                .listeners
                .iter()
                .any(|old| same_sockets(&old.config, l));
            let bound = if kept {
                None
            } else {
                Some(bind_listener(l, n_workers)?)
            };
            plans.push(ListenerPlan {
                config: l,
                tls,
                trusted,
                bound,
            });
        }

        // 2. Upstreams: kept whole, rebuilt from their predecessor, or new. A change of
        // the gateway's own locality rebuilds them all (their tiers depend on it).
        let local = config.runtime.locality.as_ref();
        let mut upstreams: HashMap<&str, Arc<Upstream>> = HashMap::new();
        for u in &config.upstreams {
            let old = control.upstreams.get(&u.name);
            let upstream = match old {
                Some(old)
                    if old.upstream.config() == u
                        && *old.upstream.local() == gateway_locality(local) =>
                {
                    summary.upstreams_kept.push(u.name.clone());
                    old.upstream.clone()
                }
                _ => {
                    let previous = old.map(|o| &*o.upstream);
                    let built =
                        Upstream::build(u, n_workers, previous, &self.shutdown, local).await;
                    if let Some(previous) = previous {
                        let before = previous.endpoints();
                        summary.endpoints_kept += built
                            .endpoints()
                            .endpoints()
                            .iter()
                            .filter(|e| before.endpoints().iter().any(|b| Arc::ptr_eq(b, e)))
                            .count();
                        summary.upstreams_changed.push(u.name.clone());
                    } else {
                        summary.upstreams_added.push(u.name.clone());
                    }
                    built
                }
            };
            upstreams.insert(u.name.as_str(), upstream);
        }
        // Global rate limits share one Redis connection (it connects lazily: a Redis that
        // is down is a fallback, not a failure).
        let redis_same = control.config.redis == config.redis;
        let redis = if redis_same {
            control.redis.clone()
        } else {
            config.redis.as_ref().map(|r| {
                let store = Arc::new(RedisStore::new(RedisOptions {
                    url: r.url.clone(),
                    timeout: r.timeout,
                    key_prefix: r.key_prefix.clone(),
                }));
                (store, r.on_failure)
            })
        };

        // 3. Routing tables.
        let mut tables: Vec<Router> = Vec::new();
        let mut tcp_upstreams: Vec<Option<Arc<Upstream>>> = Vec::new();
        for plan in &plans {
            let l = plan.config;
            let old = control.listeners.iter().find(|o| o.config.name == l.name);
            let routes = config.routes.iter().filter(|r| r.listener == l.name);
            if l.protocol == ListenerProtocol::Tcp {
                let upstream = routes
                    .clone()
                    .next()
                    .and_then(|r| upstreams.get(r.upstream.as_str()))
                    .cloned();
                tcp_upstreams.push(upstream);
                tables.push(Router::default());
                continue;
            }
            let old_routes = match old {
                Some(RunningListener {
                    kind: ListenerKind::Http(ctx),
                    config: old_config,
                    ..
                }) if redis_same && old_config.trusted_proxies == l.trusted_proxies => {
                    Some(ctx.router.load_full())
                }
                _ => None,
            };
            let mut table = Vec::new();
            for r in routes {
                let Some(upstream) = upstreams.get(r.upstream.as_str()).cloned() else {
                    continue; // checked in step 1
                };
                let same = old_routes.as_ref().and_then(|router| {
                    router
                        .routes()
                        .iter()
                        .find(|o| o.config == *r && Arc::ptr_eq(&o.upstream, &upstream))
                        .cloned()
                });
                let route = same.unwrap_or_else(|| {
                    let route_metrics = self.metrics.route(&r.name, &r.upstream);
                    route_metrics.set_events(&r.count);
                    let admission =
                        Admission::new(r, plan.trusted.clone(), redis.as_ref(), &self.metrics);
                    let faults = r.fault.as_ref().map(|f| {
                        crate::fault::Faults::new(f, r.timeout, self.metrics.faults(&r.name))
                    });
                    Arc::new(Route::new(r, upstream, route_metrics, admission, faults))
                });
                table.push(route);
            }
            tables.push(Router::new(table));
            tcp_upstreams.push(None);
        }

        // 4. Commit. A new or changed access log takes over; the old one writes what
        // it accepted and closes when the last request holding it ends.
        if let Some(log) = new_access_log {
            self.access_log.store(log);
        }
        // Likewise a new span exporter: the old one exports what it queued and ends
        // when the last request holding it ends.
        if let Some(tracer) = new_tracer {
            self.tracer.store(tracer);
        }
        // The latency buckets `/metrics` derives (the histograms keep
        // everything, so a new layout loses nothing).
        self.metrics.set_per_endpoint(config.metrics.per_endpoint);
        // SLOs: counters of kept SLOs carry on; each route gets the taps of the SLOs
        // that name it.
        self.slos
            .configure(config)
            .map_err(|e| StartError::Invalid(e.to_string()))?;
        for r in &config.routes {
            self.metrics
                .route(&r.name, &r.upstream)
                .set_slis(self.slos.taps_for(&r.name));
        }
        if let Some(notifiers) = new_notifiers {
            // The old ones deliver what they queued, in the background.
            if let Some(old) = self.slos.set_notifiers(notifiers) {
                if let Ok(old) = Arc::try_unwrap(old) {
                    tokio::spawn(old.shutdown(std::time::Duration::from_secs(30)));
                }
            }
        }
        // Every latency SLO's threshold is a bucket bound, so Prometheus sees the
        // same split the SLO does.
        self.metrics.set_latency_buckets(
            config
                .metrics
                .latency_buckets
                .iter()
                .copied()
                .chain(self.slos.thresholds())
                .map(|d| d.as_secs_f64())
                .collect(),
        );
        // Upstreams first, so that new endpoints have their initial health
        // before any request can reach them.
        let mut old_upstreams = std::mem::take(&mut control.upstreams);
        let mut running_upstreams = HashMap::new();
        for u in &config.upstreams {
            let upstream = upstreams[u.name.as_str()].clone();
            if let Some(old) = old_upstreams.remove(&u.name) {
                if Arc::ptr_eq(&old.upstream, &upstream) {
                    running_upstreams.insert(u.name.clone(), old);
                    continue;
                }
                // Replaced: stop its checkers before new ones take over its reports.
                old.upstream.retire();
                let old_health = old.upstream.health_checks();
                let previous = old_health.as_ref().map(|h| h.reports()).unwrap_or_default();
                let health = self.start_upstream(&upstream, &previous);
                if health.is_none() && old_health.is_some() {
                    // No more active checks: nothing would mark them up again.
                    for e in upstream.endpoints().endpoints() {
                        e.set_available(true);
                    }
                }
                running_upstreams.insert(u.name.clone(), RunningUpstream { upstream });
            } else {
                self.start_upstream(&upstream, &[]);
                running_upstreams.insert(u.name.clone(), RunningUpstream { upstream });
            }
        }
        for (name, old) in old_upstreams {
            old.upstream.retire();
            summary.upstreams_removed.push(name);
        }
        summary.upstreams_removed.sort();
        control.upstreams = running_upstreams;
        self.upstreams.store(Arc::new(
            config
                .upstreams
                .iter()
                .map(|u| upstreams[u.name.as_str()].clone())
                .collect(),
        ));
        self.redis
            .store(redis.as_ref().map(|(store, _)| store.clone()));
        control.redis = redis;

        let mut old_listeners: Vec<Option<RunningListener>> =
            std::mem::take(&mut control.listeners)
                .into_iter()
                .map(Some)
                .collect();
        let mut running = Vec::with_capacity(plans.len());
        for ((plan, table), tcp_upstream) in plans.into_iter().zip(tables).zip(tcp_upstreams) {
            let l = plan.config;
            let settings = ConnSettings::new(l, plan.tls);
            match plan.bound {
                None => {
                    let Some(mut kept) = old_listeners
                        .iter_mut()
                        .find(|o| o.as_ref().is_some_and(|o| same_sockets(&o.config, l)))
                        .and_then(Option::take)
                    else {
                        continue; // found in step 1
                    };
                    kept.settings.store(Arc::new(settings));
                    resize_limit(
                        &kept.limit,
                        kept.config.limits.max_connections,
                        l.limits.max_connections,
                        &kept.stop,
                    );
                    match &kept.kind {
                        ListenerKind::Http(ctx) => {
                            ctx.set_limits(&l.limits);
                            ctx.router.store(Arc::new(table));
                        }
                        ListenerKind::Tcp(target) => {
                            if let Some(upstream) = tcp_upstream {
                                target.store(upstream);
                            }
                        }
                    }
                    kept.config = l.clone();
                    summary.listeners_kept.push(l.name.clone());
                    running.push(kept);
                }
                Some((sockets, local)) => {
                    let started =
                        self.start_listener(l, sockets, local, settings, table, tcp_upstream);
                    tracing::info!(listener = %l.name, addr = %local, protocol = ?l.protocol, "listening");
                    summary.listeners_added.push(l.name.clone());
                    running.push(started);
                }
            }
        }
        for old in old_listeners.into_iter().flatten() {
            // Stops accepting; its HTTP connections finish their request and close.
            old.stop.cancel();
            tracing::info!(listener = %old.config.name, addr = %old.addr, "listener removed; draining its connections");
            summary.listeners_removed.push(old.config.name);
        }
        self.http_listeners.store(Arc::new(
            running
                .iter()
                .filter_map(|l| match &l.kind {
                    ListenerKind::Http(ctx) => Some(ctx.clone()),
                    ListenerKind::Tcp(_) => None,
                })
                .collect(),
        ));
        {
            let mut view = self.view.write().unwrap_or_else(|e| e.into_inner());
            *view = View {
                addrs: running
                    .iter()
                    .map(|l| (l.config.name.clone(), l.addr))
                    .collect(),
                health: config
                    .upstreams
                    .iter()
                    .map(|u| control.upstreams[&u.name].upstream.clone())
                    .filter(|u| u.health_checks().is_some())
                    .collect(),
            };
        }
        control.listeners = running;
        let (admin, workers) = (control.config.admin.take(), control.config.runtime.workers);
        control.config = config.clone();
        control.config.admin = admin;
        control.config.runtime.workers = workers;
        Ok(summary)
    }

    /// Starts a new upstream's background tasks and its health checkers (resuming from
    /// `previous` reports of endpoints that stay); returns the checkers' handle.
    fn start_upstream(
        &self,
        upstream: &Arc<Upstream>,
        previous: &[(SocketAddr, steady_health::HealthReport)],
    ) -> Option<steady_health::HealthHandle> {
        upstream.set_events(self.events.clone());
        upstream.spawn_background();
        upstream.start_health(previous)
    }

    /// Starts the accept loops of a newly bound listener, one per worker.
    fn start_listener(
        &self,
        l: &steady_config::Listener,
        sockets: Vec<std::net::TcpListener>,
        local: SocketAddr,
        settings: ConnSettings,
        table: Router,
        tcp_upstream: Option<Arc<Upstream>>,
    ) -> RunningListener {
        let stop = self.shutdown.child_token();
        let scheme = if settings.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let settings = Arc::new(ArcSwap::from_pointee(settings));
        let limit = Arc::new(ArcSwapOption::from(
            l.limits
                .max_connections
                .map(|n| Arc::new(Semaphore::new(n))),
        ));
        let conn_labels = vec![("listener", l.name.clone())];
        let open = self.metrics.connections.get_or_create(&conn_labels).clone();
        let accepted = self
            .metrics
            .connections_total
            .get_or_create(&conn_labels)
            .clone();
        let accepts = sockets.into_iter().map(|socket| Accept {
            socket,
            limit: limit.clone(),
            shutdown: stop.clone(),
            tracker: self.tracker.clone(),
            open: open.clone(),
            accepted: accepted.clone(),
        });
        let runtimes = self.workers.iter().cycle();
        let kind = match tcp_upstream {
            Some(upstream) => {
                let target = Arc::new(ArcSwap::new(upstream));
                for (accept, runtime) in accepts.zip(runtimes) {
                    let (target, settings) = (target.clone(), settings.clone());
                    runtime.spawn(self.tracker.track_future(accept.run(move |stream, peer| {
                        let idle = settings.load().idle_timeout;
                        crate::tcp::serve(target.load_full(), stream, peer, idle)
                    })));
                }
                ListenerKind::Tcp(target)
            }
            None => {
                let ctx = Arc::new(HttpListener::new(
                    &l.name,
                    table,
                    scheme,
                    &l.limits,
                    self.tracker.clone(),
                    self.metrics.clone(),
                    self.access_log.clone(),
                    self.tracer.clone(),
                ));
                for (accept, runtime) in accepts.zip(runtimes) {
                    let (ctx, settings, token) = (ctx.clone(), settings.clone(), stop.clone());
                    runtime.spawn(self.tracker.track_future(accept.run(move |stream, peer| {
                        serve_http(
                            ctx.clone(),
                            settings.load_full(),
                            stream,
                            peer,
                            token.clone(),
                        )
                    })));
                }
                ListenerKind::Http(ctx)
            }
        };
        RunningListener {
            config: l.clone(),
            addr: local,
            stop,
            settings,
            limit,
            kind,
        }
    }
}
