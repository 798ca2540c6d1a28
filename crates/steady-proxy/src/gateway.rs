//! Starting and stopping: binds every listener, runs accept loops, drains on shutdown.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use steady_config::{Config, ListenerProtocol};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use steady_limit::{RedisOptions, RedisStore};

use crate::admit::Admission;
use crate::conn::{ConnIo, ConnState};
use crate::http::{handle, HttpListener};
use crate::metrics::Metrics;
use crate::router::{Route, Router};
use crate::upstream::Upstream;

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener's address could not be bound.
    #[error("listener `{name}`: cannot bind {addr}: {source}")]
    Bind {
        /// Listener name.
        name: String,
        /// Address from the config.
        addr: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A TLS listener's certificate or key is unusable.
    #[error("listener `{name}`: {source}")]
    Tls {
        /// Listener name.
        name: String,
        /// What was wrong.
        source: crate::tls::TlsError,
    },
    /// The config refers to something that does not exist (validation should catch it).
    #[error("invalid config: {0}")]
    Invalid(String),
}

/// A running gateway: listeners accepting, upstreams live.
pub struct Gateway {
    addrs: HashMap<String, SocketAddr>,
    upstreams: Vec<Arc<Upstream>>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    ready: AtomicBool,
    /// Active health checkers, by upstream name.
    health: Vec<(Arc<str>, steady_health::HealthHandle)>,
}

/// Binds a listening socket with a deep backlog and `SO_REUSEADDR`.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

/// Binds one of a listener's per-worker sockets: `SO_REUSEPORT` lets every worker
/// accept on the same address while the kernel spreads connections between them.
fn bind_worker_socket(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    Ok(socket.into())
}

impl Gateway {
    /// Starts the gateway on the current runtime with one worker (tests, embedding).
    pub async fn start(config: &Config) -> Result<Arc<Gateway>, StartError> {
        Self::start_on(config, &[tokio::runtime::Handle::current()]).await
    }

    /// Builds upstreams and routes from a validated config, binds every listener once
    /// per worker runtime in `workers` and starts accepting on each. Fails without
    /// accepting anything if any listener cannot bind.
    pub async fn start_on(
        config: &Config,
        workers: &[tokio::runtime::Handle],
    ) -> Result<Arc<Gateway>, StartError> {
        let current;
        let workers = if workers.is_empty() {
            current = [tokio::runtime::Handle::current()];
            &current[..]
        } else {
            workers
        };
        let n_workers = workers.len();
        let mut upstreams: HashMap<&str, Arc<Upstream>> = HashMap::new();
        for u in &config.upstreams {
            upstreams.insert(
                u.name.as_str(),
                Upstream::build(u, n_workers, config.runtime.locality.as_ref()).await,
            );
        }
        let all_upstreams: Vec<Arc<Upstream>> = config
            .upstreams
            .iter()
            .map(|u| upstreams[u.name.as_str()].clone())
            .collect();
        // Global rate limits share one Redis connection (it connects lazily: a Redis that
        // is down at start is a fallback, not a start failure).
        let redis = config.redis.as_ref().map(|r| {
            let store = Arc::new(RedisStore::new(RedisOptions {
                url: r.url.clone(),
                timeout: r.timeout,
                key_prefix: r.key_prefix.clone(),
            }));
            (store, r.on_failure)
        });
        let metrics = Arc::new(Metrics::new(
            all_upstreams.clone(),
            redis.as_ref().map(|(store, _)| store.clone()),
        ));
        let mut http_listeners: Vec<Arc<HttpListener>> = Vec::new();
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();

        // Bind everything first so a bad address fails the start, not half of it.
        let mut bound = Vec::new();
        for l in &config.listeners {
            let addr: SocketAddr = l.bind.parse().map_err(|_| {
                StartError::Invalid(format!("listener `{}`: bad bind `{}`", l.name, l.bind))
            })?;
            let bind_err = |source| StartError::Bind {
                name: l.name.clone(),
                addr: l.bind.clone(),
                source,
            };
            let first = bind_worker_socket(addr).map_err(bind_err)?;
            // Port 0 picks a port for the first socket; the other workers join it there.
            let local = first.local_addr().map_err(bind_err)?;
            let mut sockets = vec![first];
            for _ in 1..n_workers {
                sockets.push(bind_worker_socket(local).map_err(bind_err)?);
            }
            let tls = match (&l.protocol, &l.tls) {
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
            bound.push((l, sockets, local, tls));
        }

        let mut addrs = HashMap::new();
        for (l, sockets, local, tls) in bound {
            addrs.insert(l.name.clone(), local);
            let limit = l
                .limits
                .max_connections
                .map(|n| Arc::new(Semaphore::new(n)));
            let conn_labels = vec![("listener", l.name.clone())];
            let open = metrics.connections.get_or_create(&conn_labels).clone();
            let accepted = metrics
                .connections_total
                .get_or_create(&conn_labels)
                .clone();
            let accepts = sockets.into_iter().map(|socket| Accept {
                socket,
                limit: limit.clone(),
                shutdown: shutdown.clone(),
                tracker: tracker.clone(),
                open: open.clone(),
                accepted: accepted.clone(),
            });
            let runtimes = workers.iter().cycle();
            match l.protocol {
                ListenerProtocol::Tcp => {
                    let route = config.routes.iter().find(|r| r.listener == l.name);
                    let upstream = route
                        .and_then(|r| upstreams.get(r.upstream.as_str()))
                        .cloned()
                        .ok_or_else(|| {
                            StartError::Invalid(format!("tcp listener `{}` has no route", l.name))
                        })?;
                    let idle = l.limits.idle_timeout;
                    for (accept, runtime) in accepts.zip(runtimes) {
                        let upstream = upstream.clone();
                        runtime.spawn(tracker.track_future(accept.run(move |stream, peer| {
                            crate::tcp::serve(upstream.clone(), stream, peer, idle)
                        })));
                    }
                }
                ListenerProtocol::Http | ListenerProtocol::Https => {
                    let trusted: Arc<[ipnet::IpNet]> = l
                        .try_trusted_proxies()
                        .map_err(|e| StartError::Invalid(format!("listener `{}`: {e}", l.name)))?
                        .into();
                    let mut routes = Vec::new();
                    for r in config.routes.iter().filter(|r| r.listener == l.name) {
                        let upstream =
                            upstreams.get(r.upstream.as_str()).cloned().ok_or_else(|| {
                                StartError::Invalid(format!(
                                    "route `{}`: unknown upstream `{}`",
                                    r.name, r.upstream
                                ))
                            })?;
                        let route_metrics = metrics.route(&r.name, &r.upstream);
                        let admission =
                            Admission::new(r, trusted.clone(), redis.as_ref(), &metrics);
                        let faults = r.fault.as_ref().map(|f| {
                            crate::fault::Faults::new(f, r.timeout, metrics.faults(&r.name))
                        });
                        routes.push(Route::new(r, upstream, route_metrics, admission, faults));
                    }
                    let ctx = Arc::new(HttpListener {
                        name: l.name.as_str().into(),
                        router: Router::new(routes),
                        scheme: if tls.is_some() { "https" } else { "http" },
                        max_body: l.limits.max_body_bytes.map_or(u64::MAX, |b| b.0),
                        body_read_timeout: l.limits.body_read_timeout,
                        tracker: tracker.clone(),
                        metrics: metrics.clone(),
                    });
                    http_listeners.push(ctx.clone());
                    let settings = Arc::new(ConnSettings {
                        header_timeout: l.limits.header_read_timeout,
                        idle_timeout: l.limits.idle_timeout,
                        max_header_bytes: l.limits.max_header_bytes.0 as usize,
                        max_headers: l.limits.max_headers,
                        tls,
                    });
                    for (accept, runtime) in accepts.zip(runtimes) {
                        let (ctx, settings, token) =
                            (ctx.clone(), settings.clone(), shutdown.clone());
                        runtime.spawn(tracker.track_future(accept.run(move |stream, peer| {
                            serve_http(ctx.clone(), settings.clone(), stream, peer, token.clone())
                        })));
                    }
                }
            }
            tracing::info!(listener = %l.name, addr = %local, protocol = ?l.protocol, "listening");
        }
        spawn_rate_limit_sweep(http_listeners, shutdown.clone());
        for u in &all_upstreams {
            u.spawn_dns_refresh(shutdown.clone());
            u.spawn_outlier_evaluation(shutdown.clone());
        }
        // Active health checks run on the control runtime, beside DNS refresh.
        let mut health = Vec::new();
        for u in &config.upstreams {
            if let Some(active) = u.health.as_ref().and_then(|h| h.active.as_ref()) {
                let upstream = upstreams[u.name.as_str()].clone();
                let endpoints = upstream.endpoints().endpoints().to_vec();
                let span = tracing::info_span!("health", upstream = %u.name);
                let handle = span.in_scope(|| {
                    steady_health::spawn(endpoints, active.clone(), shutdown.child_token())
                });
                // A passing check readmits an endpoint passive detection ejected.
                upstream.spawn_readmit_on_health(
                    handle.clone(),
                    active.interval,
                    shutdown.child_token(),
                );
                health.push((upstream.name.clone(), handle));
            }
        }
        Ok(Arc::new(Gateway {
            addrs,
            upstreams: all_upstreams,
            metrics,
            shutdown,
            tracker,
            ready: AtomicBool::new(true),
            health,
        }))
    }

    /// The bound address of a listener (useful when the config says port 0).
    pub fn listener_addr(&self, name: &str) -> Option<SocketAddr> {
        self.addrs.get(name).copied()
    }

    /// Live upstreams, in config order.
    pub fn upstreams(&self) -> &[Arc<Upstream>] {
        &self.upstreams
    }

    /// The metrics registry.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// True once listeners accept traffic and every endpoint has had its first health
    /// check; false once draining has begun.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed) && self.health.iter().all(|(_, h)| h.first_round_done())
    }

    /// Latest active health check results of an upstream's endpoints, if it has checks.
    pub fn health_reports(
        &self,
        upstream: &str,
    ) -> Option<Vec<(SocketAddr, steady_health::HealthReport)>> {
        self.health
            .iter()
            .find(|(name, _)| &**name == upstream)
            .map(|(_, h)| h.reports())
    }

    /// Answers `/readyz` with 503 from now on, while listeners keep accepting: the first
    /// step of a graceful stop, before [`Gateway::shutdown`].
    pub fn stop_ready(&self) {
        self.ready.store(false, Ordering::Relaxed);
    }

    /// Stops accepting, lets in-flight requests finish for up to `deadline`, and returns
    /// whether everything finished in time.
    pub async fn shutdown(&self, deadline: Duration) -> bool {
        self.ready.store(false, Ordering::Relaxed);
        self.shutdown.cancel();
        self.tracker.close();
        let drained = tokio::time::timeout(deadline, self.tracker.wait())
            .await
            .is_ok();
        if drained {
            tracing::info!("drained all connections");
        } else {
            tracing::warn!(deadline = ?deadline, "drain deadline passed; closing remaining connections");
        }
        drained
    }
}

/// An accept loop of one worker for one listener.
struct Accept {
    /// Registered with the worker's reactor when the loop starts on that worker.
    socket: std::net::TcpListener,
    limit: Option<Arc<Semaphore>>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    open: prometheus_client::metrics::gauge::Gauge,
    accepted: prometheus_client::metrics::counter::Counter,
}

impl Accept {
    async fn run<F, Fut>(self, serve: F)
    where
        F: Fn(TcpStream, SocketAddr) -> Fut,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let socket = match TcpListener::from_std(self.socket) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot register listener with the worker runtime");
                return;
            }
        };
        loop {
            let permit = match &self.limit {
                Some(sem) => tokio::select! {
                    p = sem.clone().acquire_owned() => p.ok(),
                    _ = self.shutdown.cancelled() => return,
                },
                None => None,
            };
            let accepted = tokio::select! {
                r = socket.accept() => r,
                _ = self.shutdown.cancelled() => return,
            };
            let (stream, peer) = match accepted {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning; the backlog holds clients.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            self.accepted.inc();
            let open = self.open.clone();
            open.inc();
            let fut = serve(stream, peer);
            self.tracker.spawn(async move {
                fut.await;
                open.dec();
                drop(permit);
            });
        }
    }
}

/// Per-listener settings of client connections.
struct ConnSettings {
    header_timeout: Duration,
    idle_timeout: Duration,
    max_header_bytes: usize,
    max_headers: usize,
    tls: Option<TlsAcceptor>,
}

async fn serve_http(
    ctx: Arc<HttpListener>,
    settings: Arc<ConnSettings>,
    stream: TcpStream,
    peer: SocketAddr,
    shutdown: CancellationToken,
) {
    match &settings.tls {
        None => {
            // h2c with prior knowledge starts with the `PRI` of the HTTP/2 preface; look
            // without consuming, so neither protocol needs a rewinding wrapper.
            let h2 = match tokio::time::timeout(settings.idle_timeout, sniff_h2(&stream)).await {
                Ok(Some(h2)) => h2,
                // Closed, or nothing sent before the idle timeout.
                _ => return,
            };
            serve_http_io(ctx, &settings, stream, h2, peer, shutdown).await
        }
        Some(acceptor) => {
            let handshake = tokio::time::timeout(settings.header_timeout, acceptor.accept(stream));
            match handshake.await {
                Ok(Ok(tls)) => {
                    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                    serve_http_io(ctx, &settings, tls, h2, peer, shutdown).await
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        }
    }
}

/// Whether a new plain-text connection speaks HTTP/2 (prior knowledge); `None` if it
/// closed before saying.
async fn sniff_h2(stream: &TcpStream) -> Option<bool> {
    const PREFIX: &[u8] = b"PRI";
    let mut buf = [0u8; 3];
    loop {
        let n = stream.peek(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        if buf[..n] != PREFIX[..n] {
            return Some(false);
        }
        if n == PREFIX.len() {
            return Some(true);
        }
        // A prefix of `PRI` so far: peek returns at once while bytes wait, so give the
        // client a moment to send the rest (rare: real clients send the preface whole).
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn serve_http_io<T>(
    ctx: Arc<HttpListener>,
    settings: &ConnSettings,
    io: T,
    h2: bool,
    peer: SocketAddr,
    shutdown: CancellationToken,
) where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let state = ConnState::new();
    let io = TokioIo::new(ConnIo::new(
        io,
        state.clone(),
        settings.header_timeout,
        settings.idle_timeout,
    ));
    let service =
        hyper::service::service_fn(move |req| handle(ctx.clone(), peer, state.clone(), req));
    if h2 {
        let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .max_header_list_size(settings.max_header_bytes.min(u32::MAX as usize) as u32)
            .max_concurrent_streams(256);
        let conn = builder.serve_connection(io, service);
        drive(conn, shutdown, peer, |c| c.graceful_shutdown()).await
    } else {
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(None)
            .keep_alive(true)
            .max_header_size(settings.max_header_bytes)
            .max_headers(settings.max_headers);
        let conn = builder.serve_connection(io, service).with_upgrades();
        drive(conn, shutdown, peer, |c| c.graceful_shutdown()).await
    }
}

/// Runs a client connection to completion, asking it to finish its current request and
/// close once `shutdown` fires.
async fn drive<C, E>(
    conn: C,
    shutdown: CancellationToken,
    peer: SocketAddr,
    drain: impl Fn(Pin<&mut C>),
) where
    C: std::future::Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    tokio::pin!(conn);
    tokio::select! {
        biased;
        res = conn.as_mut() => {
            if let Err(e) = res {
                tracing::debug!(%peer, error = %e, "client connection ended with error");
            }
            return;
        }
        _ = shutdown.cancelled() => drain(conn.as_mut()),
    }
    if let Err(e) = conn.await {
        tracing::debug!(%peer, error = %e, "client connection ended with error while draining");
    }
}

/// Drops idle rate-limit buckets every few seconds so memory follows active keys.
fn spawn_rate_limit_sweep(listeners: Vec<Arc<HttpListener>>, shutdown: CancellationToken) {
    let limited: Vec<Arc<HttpListener>> = listeners
        .into_iter()
        .filter(|l| l.router.routes().iter().any(|r| r.admission.has_limits()))
        .collect();
    if limited.is_empty() {
        return;
    }
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            for listener in &limited {
                for route in listener.router.routes() {
                    route.admission.sweep();
                }
            }
        }
    });
}
