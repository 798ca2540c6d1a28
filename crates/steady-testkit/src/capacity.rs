//! A backend with fixed capacity, for overload benchmarks and tests.
//!
//! It behaves like a server with a fixed pool of workers: at most `capacity` requests are
//! served at once, each for `service_time`, and the rest wait in arrival order. Under
//! overload the wait grows without bound, so latency climbs while throughput stays at
//! `capacity / service_time` — the shape a proxy's admission control has to cope with.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

/// Counters and the worker pool, shared by every connection.
struct Shared {
    /// One permit per worker; tokio's semaphore is fair, so waiters are served FIFO.
    slots: Semaphore,
    capacity: usize,
    service_time: Duration,
    /// Requests that arrived (on any path but `/_stats`).
    received: AtomicU64,
    /// Requests answered after a full service time.
    served: AtomicU64,
    /// Requests holding a worker right now.
    in_service: AtomicUsize,
    /// Requests waiting for a worker right now.
    waiting: AtomicUsize,
    /// Highest `in_service` seen; never above `capacity`.
    max_in_service: AtomicUsize,
    /// Highest `waiting` seen.
    max_waiting: AtomicUsize,
}

/// An HTTP/1.1 backend on `127.0.0.1:0` that serves at most `capacity` requests at once,
/// each taking `service_time`.
///
/// Every request first takes one of `capacity` worker slots, waiting in FIFO order when
/// all are busy, then sleeps `service_time` and answers `200 ok`. A request whose client
/// goes away gives up its place (or its slot) at once. The exception is `GET /_stats`,
/// answered at once with the counters as JSON, so a harness can read them from another
/// process.
///
/// The listener has a deep backlog (4096), so bursts of new connections wait in the
/// kernel rather than being refused.
pub struct CapacityBackend {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for CapacityBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CapacityBackend")
            .field("addr", &self.addr)
            .field("capacity", &self.shared.capacity)
            .field("service_time", &self.shared.service_time)
            .finish_non_exhaustive()
    }
}

impl CapacityBackend {
    /// Starts a backend of `capacity` workers, each request taking `service_time`, on a
    /// free loopback port.
    ///
    /// # Panics
    ///
    /// If `capacity` is 0 or no loopback port can be bound.
    pub async fn start(capacity: usize, service_time: Duration) -> CapacityBackend {
        Self::start_on(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            capacity,
            service_time,
        )
        .await
        .expect("bind capacity backend")
    }

    /// Starts a backend on the given address (port 0 picks a free one).
    ///
    /// # Panics
    ///
    /// If `capacity` is 0.
    pub async fn start_on(
        addr: SocketAddr,
        capacity: usize,
        service_time: Duration,
    ) -> std::io::Result<CapacityBackend> {
        assert!(capacity > 0, "a backend needs at least one worker");
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        let listener = socket.listen(4096)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            slots: Semaphore::new(capacity),
            capacity,
            service_time,
            received: AtomicU64::new(0),
            served: AtomicU64::new(0),
            in_service: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            max_in_service: AtomicUsize::new(0),
            max_waiting: AtomicUsize::new(0),
        });
        let task = tokio::spawn(accept_loop(listener, shared.clone()));
        Ok(CapacityBackend { addr, shared, task })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Most requests served at once.
    pub fn capacity(&self) -> usize {
        self.shared.capacity
    }

    /// How long each request holds a worker.
    pub fn service_time(&self) -> Duration {
        self.shared.service_time
    }

    /// Requests served per second when every worker is busy.
    pub fn max_throughput(&self) -> f64 {
        self.shared.capacity as f64 / self.shared.service_time.as_secs_f64()
    }

    /// Requests received so far (served, waiting, or abandoned by their client).
    pub fn received(&self) -> u64 {
        self.shared.received.load(Ordering::Relaxed)
    }

    /// Requests answered so far after a full service time.
    pub fn served(&self) -> u64 {
        self.shared.served.load(Ordering::Relaxed)
    }

    /// Requests holding a worker right now.
    pub fn in_service(&self) -> usize {
        self.shared.in_service.load(Ordering::Relaxed)
    }

    /// Requests waiting for a worker right now.
    pub fn waiting(&self) -> usize {
        self.shared.waiting.load(Ordering::Relaxed)
    }

    /// The most requests served at once so far (at most [`capacity`](Self::capacity)).
    pub fn max_concurrent_seen(&self) -> usize {
        self.shared.max_in_service.load(Ordering::Relaxed)
    }

    /// The longest queue of waiting requests seen so far.
    pub fn max_waiting_seen(&self) -> usize {
        self.shared.max_waiting.load(Ordering::Relaxed)
    }

    /// The counters as JSON, as `GET /_stats` returns them.
    pub fn stats_json(&self) -> serde_json::Value {
        stats_json(&self.shared)
    }
}

impl Drop for CapacityBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(_) => {
                // EMFILE and friends: back off instead of spinning; the backlog holds clients.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| handle(shared.clone(), req));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Decrements a gauge when dropped, so abandoned requests are counted out too.
struct Gauge<'a>(&'a AtomicUsize);

impl<'a> Gauge<'a> {
    fn enter(gauge: &'a AtomicUsize, max: &AtomicUsize) -> Self {
        let now = gauge.fetch_add(1, Ordering::Relaxed) + 1;
        max.fetch_max(now, Ordering::Relaxed);
        Gauge(gauge)
    }
}

impl Drop for Gauge<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    if req.uri().path() == "/_stats" {
        let body = stats_json(&shared).to_string();
        return Ok(response(StatusCode::OK, "application/json", body));
    }
    shared.received.fetch_add(1, Ordering::Relaxed);
    // Read the whole request first, as a worker would before starting on it.
    let _ = req.into_body().collect().await;

    let permit = {
        let _waiting = Gauge::enter(&shared.waiting, &shared.max_waiting);
        shared
            .slots
            .acquire()
            .await
            .expect("semaphore never closed")
    };
    let _serving = Gauge::enter(&shared.in_service, &shared.max_in_service);
    tokio::time::sleep(shared.service_time).await;
    drop(permit);
    shared.served.fetch_add(1, Ordering::Relaxed);
    Ok(response(StatusCode::OK, "text/plain", "ok\n"))
}

fn response(
    status: StatusCode,
    content_type: &str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(body.into()))
        .expect("valid response")
}

fn stats_json(shared: &Shared) -> serde_json::Value {
    serde_json::json!({
        "capacity": shared.capacity,
        "service_time_ms": shared.service_time.as_secs_f64() * 1000.0,
        "received": shared.received.load(Ordering::Relaxed),
        "served": shared.served.load(Ordering::Relaxed),
        "in_service": shared.in_service.load(Ordering::Relaxed),
        "waiting": shared.waiting.load(Ordering::Relaxed),
        "max_concurrent_seen": shared.max_in_service.load(Ordering::Relaxed),
        "max_waiting_seen": shared.max_waiting.load(Ordering::Relaxed),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    use tokio::time::Instant;

    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
        stream.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        stream.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn serves_at_most_capacity_at_once_and_queues_the_rest() {
        let backend = CapacityBackend::start(2, Duration::from_millis(50)).await;
        let started = Instant::now();
        let answers: Vec<_> = (0..5)
            .map(|_| tokio::spawn(get(backend.addr(), "/")))
            .collect();
        for answer in answers {
            assert!(answer.await.unwrap().starts_with("HTTP/1.1 200"));
        }
        // 5 requests over 2 workers take three rounds of 50 ms.
        assert!(started.elapsed() >= Duration::from_millis(150));
        assert_eq!(backend.served(), 5);
        assert_eq!(backend.received(), 5);
        assert_eq!(backend.max_concurrent_seen(), 2);
        assert!(backend.max_waiting_seen() >= 1);
        assert_eq!(backend.in_service() + backend.waiting(), 0);
    }

    #[tokio::test]
    async fn abandoned_requests_give_up_their_place() {
        let backend = CapacityBackend::start(1, Duration::from_millis(200)).await;
        let mut first = TcpStream::connect(backend.addr()).await.unwrap();
        first
            .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(backend.in_service(), 1);
        drop(first);
        // hyper notices the closed connection and drops the request, freeing the slot.
        let deadline = Instant::now() + Duration::from_secs(2);
        while backend.in_service() != 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(backend.in_service(), 0);
        assert_eq!(backend.served(), 0);
    }

    #[tokio::test]
    async fn stats_are_answered_without_a_worker() {
        let backend = CapacityBackend::start(1, Duration::from_secs(5)).await;
        let _busy = tokio::spawn(get(backend.addr(), "/"));
        tokio::time::sleep(Duration::from_millis(20)).await;
        let started = Instant::now();
        let stats = get(backend.addr(), "/_stats").await;
        assert!(started.elapsed() < Duration::from_secs(1));
        assert!(stats.contains("\"in_service\":1"), "{stats}");
        assert!(stats.contains("\"capacity\":1"), "{stats}");
    }
}
