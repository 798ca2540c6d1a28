//! Starting and stopping: binds every listener, runs accept loops, drains on shutdown.
//! What a config builds and how a new one replaces it live is in [`crate::reload`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use steady_config::Config;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::body::ClientBody;
use crate::conn::{ConnIo, ConnState};
use crate::events::{EventKind, Events};
use crate::http::{handle, HttpListener};
use crate::metrics::{Metrics, SharedRedis, SharedUpstreams};
use crate::reload::Control;
use crate::upstream::Upstream;

/// Why the gateway could not start (or a reload could not apply).
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
    /// A notifier cannot be built (its key's environment variable or file is missing).
    #[error("notifiers: {0}")]
    Notifier(#[from] steady_notify::NotifyError),
    /// The config refers to something that does not exist (validation should catch it).
    #[error("invalid config: {0}")]
    Invalid(String),
    /// The access log file cannot be opened.
    #[error("access_log: cannot open {path}: {source}")]
    AccessLog {
        /// The configured path.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// Span export cannot start.
    #[error(transparent)]
    Tracing(#[from] crate::otel::TracerError),
}

/// Longest wait at shutdown for queued spans to be exported.
pub const TRACE_FLUSH_DEADLINE: Duration = Duration::from_secs(5);

/// A running gateway: listeners accepting, upstreams live.
pub struct Gateway {
    /// The worker runtimes accept loops run on (one socket per worker per listener).
    pub(crate) workers: Vec<tokio::runtime::Handle>,
    /// Upstreams in config order; the metrics collectors read the same list.
    pub(crate) upstreams: SharedUpstreams,
    /// The Redis store of global rate limits; the metrics collector reads it.
    pub(crate) redis: SharedRedis,
    /// HTTP listeners, for the rate-limit sweep.
    pub(crate) http_listeners: Arc<ArcSwap<Vec<Arc<HttpListener>>>>,
    /// Listener addresses and health checkers, for the admin API; replaced by reloads.
    pub(crate) view: RwLock<View>,
    pub(crate) metrics: Arc<Metrics>,
    /// The access log, if configured; every HTTP listener shares it.
    pub(crate) access_log: crate::http::SharedAccessLog,
    /// The span exporter, if configured; every HTTP listener shares it.
    pub(crate) tracer: crate::http::SharedTracer,
    /// Recent state changes for the admin API; upstreams get a handle when they start.
    pub(crate) events: Arc<Events>,
    /// The SLOs of the running config, their engines and state file.
    pub(crate) slos: Arc<crate::slo::Slos>,
    pub(crate) shutdown: CancellationToken,
    pub(crate) tracker: TaskTracker,
    ready: AtomicBool,
    /// Set once every endpoint had its first health check: readiness waits for that
    /// at start only, so a reload that adds endpoints does not flip `/readyz`.
    warmed: AtomicBool,
    /// The running config and what it built; locked for a whole reload, so reloads
    /// run one at a time.
    pub(crate) control: tokio::sync::Mutex<Control>,
}

/// What the admin API reads about listeners and health checks.
#[derive(Default)]
pub(crate) struct View {
    /// Bound address of each listener, by name.
    pub(crate) addrs: HashMap<String, SocketAddr>,
    /// Upstreams with active health checks (each owns its current checkers).
    pub(crate) health: Vec<Arc<Upstream>>,
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
/// accept on the same address while the kernel spreads connections between them (and
/// lets a reload bind a replacement listener before the old one closes).
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

/// Binds one socket per worker for `listener`; returns them and the bound address.
pub(crate) fn bind_listener(
    listener: &steady_config::Listener,
    workers: usize,
) -> Result<(Vec<std::net::TcpListener>, SocketAddr), StartError> {
    let addr: SocketAddr = listener.bind.parse().map_err(|_| {
        StartError::Invalid(format!(
            "listener `{}`: bad bind `{}`",
            listener.name, listener.bind
        ))
    })?;
    let bind_err = |source| StartError::Bind {
        name: listener.name.clone(),
        addr: listener.bind.clone(),
        source,
    };
    let first = bind_worker_socket(addr).map_err(bind_err)?;
    // Port 0 picks a port for the first socket; the other workers join it there.
    let local = first.local_addr().map_err(bind_err)?;
    let mut sockets = vec![first];
    for _ in 1..workers {
        sockets.push(bind_worker_socket(local).map_err(bind_err)?);
    }
    Ok((sockets, local))
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
        let workers = if workers.is_empty() {
            vec![tokio::runtime::Handle::current()]
        } else {
            workers.to_vec()
        };
        let upstreams: SharedUpstreams = Arc::new(ArcSwap::from_pointee(Vec::new()));
        let redis: SharedRedis = Arc::new(ArcSwapOption::empty());
        let access_log: crate::http::SharedAccessLog = Arc::new(ArcSwapOption::empty());
        let events = Arc::new(Events::default());
        let slos = Arc::new(crate::slo::Slos::new(events.clone()));
        let metrics = Arc::new(Metrics::new(
            upstreams.clone(),
            redis.clone(),
            access_log.clone(),
            slos.clone(),
        ));
        let gateway = Arc::new(Gateway {
            workers,
            upstreams,
            redis,
            http_listeners: Arc::new(ArcSwap::from_pointee(Vec::new())),
            view: RwLock::new(View::default()),
            metrics,
            access_log,
            events,
            slos,
            tracer: Arc::new(ArcSwapOption::empty()),
            shutdown: CancellationToken::new(),
            tracker: TaskTracker::new(),
            ready: AtomicBool::new(true),
            warmed: AtomicBool::new(false),
            control: tokio::sync::Mutex::new(Control::empty(config)),
        });
        {
            let mut control = gateway.control.lock().await;
            gateway.apply(&mut control, config).await?;
        }
        spawn_rate_limit_sweep(gateway.http_listeners.clone(), gateway.shutdown.clone());
        spawn_slo_ticks(
            gateway.slos.clone(),
            gateway.metrics.clone(),
            gateway.shutdown.clone(),
        );
        Ok(gateway)
    }

    /// The bound address of a listener (useful when the config says port 0).
    pub fn listener_addr(&self, name: &str) -> Option<SocketAddr> {
        self.view().addrs.get(name).copied()
    }

    /// Live upstreams, in config order (the list of the config running now).
    pub fn upstreams(&self) -> Arc<Vec<Arc<Upstream>>> {
        self.upstreams.load_full()
    }

    /// The metrics registry.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Recent state changes (health flips, ejections, reloads, drains, SLO alerts).
    pub fn events(&self) -> &Events {
        &self.events
    }

    /// The SLOs, their budgets and alerts.
    pub fn slos(&self) -> &Arc<crate::slo::Slos> {
        &self.slos
    }

    pub(crate) fn view(&self) -> std::sync::RwLockReadGuard<'_, View> {
        // Plain data, valid even if a writer panicked.
        self.view.read().unwrap_or_else(|e| e.into_inner())
    }

    /// True once listeners accept traffic and every endpoint has had its first health
    /// check (at start; endpoints added by a reload do not gate it); false once draining
    /// has begun.
    pub fn is_ready(&self) -> bool {
        if !self.ready.load(Ordering::Relaxed) {
            return false;
        }
        if self.warmed.load(Ordering::Relaxed) {
            return true;
        }
        let done = self
            .view()
            .health
            .iter()
            .all(|u| u.health_checks().is_none_or(|h| h.first_round_done()));
        if done {
            self.warmed.store(true, Ordering::Relaxed);
        }
        done
    }

    /// Latest active health check results of an upstream's endpoints, if it has checks.
    pub fn health_reports(
        &self,
        upstream: &str,
    ) -> Option<Vec<(SocketAddr, steady_health::HealthReport)>> {
        self.view()
            .health
            .iter()
            .find(|u| &*u.name == upstream)
            .and_then(|u| u.health_checks())
            .map(|h| h.reports())
    }

    /// Answers `/readyz` with 503 from now on, while listeners keep accepting: the first
    /// step of a graceful stop, before [`Gateway::shutdown`].
    pub fn stop_ready(&self) {
        if self.ready.swap(false, Ordering::Relaxed) {
            self.events.push(
                EventKind::Drain,
                None,
                None,
                "gateway draining: /readyz answers 503",
            );
        }
    }

    /// Stops accepting, lets in-flight requests finish for up to `deadline`, and returns
    /// whether everything finished in time.
    pub async fn shutdown(&self, deadline: Duration) -> bool {
        self.stop_ready();
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
        // The last requests count, then the state survives the restart.
        self.slos
            .tick(crate::slo::unix_now(), &self.metrics.routes());
        if let Err(e) = self.slos.save() {
            tracing::warn!(error = %e, "cannot save the SLO state");
        }
        // Alerts already queued (the last resolves, say) get a short while to go out.
        if let Some(mut notifiers) = self.slos.take_notifiers() {
            // A tick still running holds the notifiers for a moment; it has stopped
            // ticking (the shutdown token is cancelled), so wait for it briefly.
            for _ in 0..100 {
                match Arc::try_unwrap(notifiers) {
                    Ok(n) => {
                        n.shutdown(Duration::from_secs(5)).await;
                        break;
                    }
                    Err(shared) => notifiers = shared,
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        // The drained requests' spans, sent (or given up on) within a bound.
        if let Some(tracer) = self.tracer.load_full() {
            if !tracer.close(TRACE_FLUSH_DEADLINE).await {
                tracing::warn!(deadline = ?TRACE_FLUSH_DEADLINE, "span export did not finish; queued spans are lost");
            }
        }
        drained
    }
}

/// Feeds the SLO engines once a second and saves their state every
/// `slo_state.save_every`, until shutdown (which does the last tick and save itself).
fn spawn_slo_ticks(
    slos: Arc<crate::slo::Slos>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(1));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_save = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = every.tick() => {}
                _ = shutdown.cancelled() => return,
            }
            slos.tick(crate::slo::unix_now(), &metrics.routes());
            let Some(save_every) = slos.save_every() else {
                continue;
            };
            if last_save.elapsed() >= save_every {
                last_save = tokio::time::Instant::now();
                let slos = slos.clone();
                let saved = tokio::task::spawn_blocking(move || slos.save()).await;
                if let Ok(Err(e)) = saved {
                    tracing::warn!(error = %e, "cannot save the SLO state");
                }
            }
        }
    });
}

/// An accept loop of one worker for one listener.
pub(crate) struct Accept {
    /// Registered with the worker's reactor when the loop starts on that worker.
    pub(crate) socket: std::net::TcpListener,
    /// `max_connections`, if set; a reload may swap it (connections keep the permit of
    /// the semaphore they were accepted under).
    pub(crate) limit: Arc<ArcSwapOption<Semaphore>>,
    /// Fires when the gateway shuts down or a reload removes the listener.
    pub(crate) shutdown: CancellationToken,
    pub(crate) tracker: TaskTracker,
    pub(crate) open: prometheus_client::metrics::gauge::Gauge,
    pub(crate) accepted: prometheus_client::metrics::counter::Counter,
}

impl Accept {
    pub(crate) async fn run<F, Fut>(self, serve: F)
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
            let permit = match self.limit.load_full() {
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
            let open = OpenConn::new(&self.open, permit);
            // Not `async move { fut.await; .. }`: an async block keeps a future it
            // captured beside the copy it awaits, which doubled every connection's task
            // (13.5 KiB instead of 6.7 for a plain-text HTTP connection). Boxed: the
            // spawn moves its future through several layers (the tracker's wrapper,
            // tokio's task cell and stages), each a copy of all of it; a box is 8
            // bytes to move (1,100 fewer instructions a new connection, the same
            // memory per connection).
            self.tracker.spawn(Box::pin(futures_util::FutureExt::map(
                serve(stream, peer),
                move |()| drop(open),
            )));
        }
    }
}

/// A connection counted in the listener's open gauge, holding its `max_connections`
/// permit, until its task ends or is dropped.
struct OpenConn {
    open: prometheus_client::metrics::gauge::Gauge,
    _permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl OpenConn {
    /// Counts a connection open in `open` until the value is dropped.
    fn new(
        open: &prometheus_client::metrics::gauge::Gauge,
        permit: Option<tokio::sync::OwnedSemaphorePermit>,
    ) -> Self {
        open.inc();
        OpenConn {
            open: open.clone(),
            _permit: permit,
        }
    }
}

impl Drop for OpenConn {
    fn drop(&mut self) {
        self.open.dec();
    }
}

/// Per-listener settings of client connections; a reload swaps them for connections
/// accepted afterwards.
pub(crate) struct ConnSettings {
    pub(crate) header_timeout: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) max_header_bytes: usize,
    pub(crate) max_headers: usize,
    pub(crate) tls: Option<TlsAcceptor>,
}

impl ConnSettings {
    /// The settings `listener` asks for, with its TLS acceptor already built.
    pub(crate) fn new(listener: &steady_config::Listener, tls: Option<TlsAcceptor>) -> Self {
        let l = &listener.limits;
        ConnSettings {
            header_timeout: l.header_read_timeout,
            idle_timeout: l.idle_timeout,
            max_header_bytes: l.max_header_bytes.0 as usize,
            max_headers: l.max_headers,
            tls,
        }
    }
}

pub(crate) async fn serve_http(
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
        // Boxed, as HTTP/2 is below: the TLS session and its handshake are large, and
        // a connection task is as big as its largest branch, for as long as it lives
        // (10,000 idle plain-text connections held 25 KiB each before).
        Some(acceptor) => {
            Box::pin(serve_tls(ctx, &settings, acceptor, stream, peer, shutdown)).await
        }
    }
}

async fn serve_tls(
    ctx: Arc<HttpListener>,
    settings: &ConnSettings,
    acceptor: &tokio_rustls::TlsAcceptor,
    stream: TcpStream,
    peer: SocketAddr,
    shutdown: CancellationToken,
) {
    let handshake = tokio::time::timeout(settings.header_timeout, acceptor.accept(stream));
    match handshake.await {
        Ok(Ok(tls)) => {
            let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
            serve_http_io(ctx, settings, tls, h2, peer, shutdown).await
        }
        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
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
    let io = ConnIo::new(
        io,
        state.clone(),
        settings.header_timeout,
        settings.idle_timeout,
    );
    if h2 {
        let service = hyper::service::service_fn(move |req: http::Request<_>| {
            let req = req.map(ClientBody::H2);
            // hyper writes the map: an HTTP/1.1 upstream's received fields join it.
            futures_util::FutureExt::map(handle(ctx.clone(), peer, state.clone(), req), |r| {
                r.map(crate::body::with_all_headers)
            })
        });
        let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .max_header_list_size(settings.max_header_bytes.min(u32::MAX as usize) as u32)
            .max_concurrent_streams(256);
        let conn = builder.serve_connection(TokioIo::new(io), service);
        // Boxed: hyper's HTTP/2 connection is several KiB, which every HTTP/1.1
        // connection's task would otherwise carry too.
        Box::pin(drive(conn, shutdown, peer, |c| c.graceful_shutdown())).await
    } else {
        let limits = crate::server::Limits {
            max_head: settings.max_header_bytes,
            max_headers: settings.max_headers,
        };
        let service = |req| handle_h1(ctx.clone(), peer, state.clone(), req);
        crate::server::serve(io, limits, service, &shutdown).await
    }
}

/// [`handle`] for steady's own HTTP/1.1 server, which takes the response itself.
/// (A map, not an async fn, which would keep its arguments beside `handle`'s future.)
fn handle_h1(
    ctx: Arc<HttpListener>,
    peer: SocketAddr,
    state: Arc<ConnState>,
    req: http::Request<ClientBody>,
) -> impl std::future::Future<Output = http::Response<crate::body::ResponseBody>> {
    futures_util::FutureExt::map(handle(ctx, peer, state, req), |response| match response {
        Ok(response) => response,
        Err(never) => match never {},
    })
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
fn spawn_rate_limit_sweep(
    listeners: Arc<ArcSwap<Vec<Arc<HttpListener>>>>,
    shutdown: CancellationToken,
) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            for listener in listeners.load().iter() {
                for route in listener.router.load().routes() {
                    if route.admission.has_limits() {
                        route.admission.sweep();
                    }
                }
            }
        }
    });
}
