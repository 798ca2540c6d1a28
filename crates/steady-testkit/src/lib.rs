//! Backends for steady's tests and demo, with faults that can be switched on at run time.
//!
//! Every server binds `127.0.0.1:0` and stops when its handle is dropped, so tests never
//! collide on ports and never leave processes behind.
//!
//! # Layout
//!
//! - [`Backend`]: an HTTP/1.1 + h2c server that answers with JSON describing the request
//!   it saw, echoes bodies, serves WebSocket-style upgrades, and misbehaves on demand
//!   ([`Fault`]); [`Backend::kill`] makes it die at once, as a crashed process does.
//! - [`TcpEcho`]: an L4 server that echoes bytes back, prefixed by its name.
//! - [`RawServer`]: a TCP server that runs a caller-supplied script per connection, for
//!   protocol faults hyper would refuse to produce (resets mid-response, garbage).
//! - [`CapacityBackend`]: a backend that serves at most N requests at once, each taking a
//!   fixed time, and queues the rest (the overload benchmark's service).
//! - [`RedisServer`]: a real `redis-server` process on a free loopback port, which tests
//!   can kill and restart to rehearse an outage.
//! - [`alertmanager::Alertmanager`]: a real Alertmanager (Debian's
//!   `prometheus-alertmanager`) on a free loopback port, for the alerting tests.
//! - [`OtlpReceiver`] ([`otlp`]): an OTLP trace receiver (gRPC via tonic, or
//!   HTTP/protobuf on `/v1/traces`, plain or TLS) that decodes real export requests,
//!   keeps the spans and can stall.
//! - [`free_port`]: a currently free loopback port, for processes that need one up front.
//! - [`harness`]: runs the real `steady serve` binary, reads its admin API and logs, and
//!   drives it with a bounded load (chaos tests and `bench/chaos.sh`).

use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Response body type of the test backends.
pub type Body = BoxBody<Bytes, std::io::Error>;

/// A misbehaviour a [`Backend`] applies to every request until changed.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Fault {
    /// Answer normally.
    #[default]
    None,
    /// Answer every request with this status.
    Status(u16),
    /// Wait this long before answering.
    Delay(Duration),
    /// Never answer (the connection stays open).
    Stall,
    /// Send the response head and part of the body, then reset the connection.
    ResetMidResponse,
    /// Send the response head (`content-length: 1000`) and `partial`, then nothing for
    /// 30 s, the connection open.
    StallMidResponse,
    /// Close the connection as soon as a request arrives, without answering.
    Close,
}

struct Shared {
    name: String,
    fault: Mutex<Fault>,
    hits: AtomicU64,
    /// Open connections: their serving task and a duplicate of their socket, which the
    /// task owns (so a normal close stays a normal close) and [`Backend::kill`] reaches
    /// to reset them.
    conns: Mutex<Vec<(JoinHandle<()>, Weak<OwnedFd>)>>,
}

/// An HTTP backend on `127.0.0.1:0` speaking HTTP/1.1 and h2c.
///
/// Paths it understands (any method):
/// - `/echo`: streams the request body back.
/// - `/status/NNN`: answers with that status.
/// - `/delay/MS`: answers after `MS` milliseconds.
/// - `/stream/N`: answers with `N` chunks of 1 KiB, flushed one by one.
/// - `/upgrade`: accepts `Upgrade: echo` (or `websocket`) with 101 and echoes bytes.
/// - `/fault/STATUS/SECONDS`: answers STATUS to every request for SECONDS, then recovers
///   (`steady demo` uses it to show health checks taking a backend out).
/// - anything else: a JSON description of the request (`backend`, `method`, `path`,
///   `headers`, `version`).
pub struct Backend {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Backend {
    /// Starts a backend named `name` on a free loopback port.
    pub async fn start(name: &str) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind backend");
        Self::serve(name, listener)
    }

    /// Starts a backend on the given address (used by `steady demo` to restart on a known port).
    pub async fn start_on(name: &str, addr: SocketAddr) -> std::io::Result<Backend> {
        let listener = TcpListener::bind(addr).await?;
        Ok(Self::serve(name, listener))
    }

    fn serve(name: &str, listener: TcpListener) -> Backend {
        let addr = listener.local_addr().expect("local addr");
        let shared = Arc::new(Shared {
            name: name.to_string(),
            fault: Mutex::new(Fault::None),
            hits: AtomicU64::new(0),
            conns: Mutex::new(Vec::new()),
        });
        let state = shared.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let fd = stream.as_fd().try_clone_to_owned().ok().map(Arc::new);
                let weak = fd.as_ref().map_or_else(Weak::new, Arc::downgrade);
                let conn_state = state.clone();
                let conn = tokio::spawn(async move {
                    // Closed right after the stream when the connection ends.
                    let _fd = fd;
                    let state = conn_state;
                    let service = hyper::service::service_fn(move |req| handle(state.clone(), req));
                    let builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    let _ = builder
                        .serve_connection_with_upgrades(TokioIo::new(stream), service)
                        .await;
                });
                let mut conns = state.conns.lock().expect("conns lock");
                conns.retain(|(task, _)| !task.is_finished());
                conns.push((conn, weak));
            }
        });
        Backend { addr, shared, task }
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its name, as reported in every JSON answer.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Requests received so far.
    pub fn hits(&self) -> u64 {
        self.shared.hits.load(Ordering::Relaxed)
    }

    /// Switches the fault applied to the following requests.
    pub fn set_fault(&self, fault: Fault) {
        *self.shared.fault.lock().expect("fault lock") = fault;
    }

    /// Stops accepting; connections already open keep running until dropped by peers.
    pub fn stop(&self) {
        self.task.abort();
    }

    /// Dies at once, as a crashed or `kill -9`ed process: the listener closes (new
    /// connects are refused) and every open connection is reset (RST), requests in
    /// flight included (upgraded tunnels, which have left their connection task, are
    /// not). Returns once the port is free again, so [`Backend::start_on`] can restart a
    /// backend on the same address.
    pub async fn kill(&mut self) {
        self.task.abort();
        let conns = std::mem::take(&mut *self.shared.conns.lock().expect("conns lock"));
        for (task, fd) in &conns {
            if let Some(fd) = fd.upgrade() {
                // Zero linger turns the close into a reset, as the kernel does for a dead
                // process.
                let _ = socket2::SockRef::from(&*fd).set_linger(Some(Duration::ZERO));
            }
            task.abort();
        }
        if !self.task.is_finished() {
            let _ = (&mut self.task).await;
        }
        for (task, _) in conns {
            let _ = task.await;
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn full(body: impl Into<Bytes>) -> Body {
    Full::new(body.into())
        .map_err(|never| match never {})
        .boxed()
}

fn json_response(status: StatusCode, value: serde_json::Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(full(value.to_string()))
        .expect("valid response")
}

async fn handle(
    state: Arc<Shared>,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, std::io::Error> {
    state.hits.fetch_add(1, Ordering::Relaxed);
    let fault = state.fault.lock().expect("fault lock").clone();
    match fault {
        Fault::None => {}
        Fault::Status(code) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return Ok(json_response(
                status,
                serde_json::json!({"backend": state.name, "fault": code}),
            ));
        }
        Fault::Delay(d) => tokio::time::sleep(d).await,
        Fault::Stall => std::future::pending::<()>().await,
        Fault::ResetMidResponse | Fault::StallMidResponse => {
            let reset = fault == Fault::ResetMidResponse;
            let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(2);
            tokio::spawn(async move {
                let _ = tx
                    .send(Ok(Frame::data(Bytes::from_static(b"partial"))))
                    .await;
                if !reset {
                    // Holding the sender keeps the body open and silent.
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
                let _ = tx
                    .send(Err(std::io::Error::new(
                        std::io::ErrorKind::ConnectionReset,
                        "injected reset",
                    )))
                    .await;
            });
            let stream = tokio_stream_from(rx);
            return Ok(Response::builder()
                .header("content-length", "1000")
                .body(BodyExt::boxed(StreamBody::new(stream)))
                .expect("valid response"));
        }
        Fault::Close => {
            // A service error makes hyper drop the connection unanswered.
            return Err(std::io::Error::other("injected close"));
        }
    }

    let path = req.uri().path().to_string();
    let mut segments = path.trim_start_matches('/').splitn(2, '/');
    match (segments.next(), segments.next()) {
        (Some("fault"), Some(rest)) => {
            // `/fault/STATUS/SECONDS`: answer STATUS to everything for SECONDS (max 600).
            let mut it = rest.splitn(2, '/');
            let code = it
                .next()
                .and_then(|c| c.parse::<u16>().ok())
                .filter(|c| (200..600).contains(c));
            let secs = it
                .next()
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or(10)
                .min(600);
            let Some(code) = code else {
                return Ok(json_response(
                    StatusCode::BAD_REQUEST,
                    serde_json::json!({"error": "use /fault/STATUS/SECONDS"}),
                ));
            };
            *state.fault.lock().expect("fault lock") = Fault::Status(code);
            let shared = state.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(secs)).await;
                let mut fault = shared.fault.lock().expect("fault lock");
                if *fault == Fault::Status(code) {
                    *fault = Fault::None;
                }
            });
            Ok(json_response(
                StatusCode::OK,
                serde_json::json!({"backend": state.name, "fault": code, "seconds": secs}),
            ))
        }
        (Some("echo"), _) => {
            let mut builder = Response::builder().header("x-backend", state.name.as_str());
            if let Some(ct) = req.headers().get("content-type") {
                builder = builder.header("content-type", ct);
            }
            let body = req.into_body().map_err(std::io::Error::other).boxed();
            Ok(builder.body(body).expect("valid response"))
        }
        (Some("status"), Some(code)) => {
            let status = code
                .parse::<u16>()
                .ok()
                .and_then(|c| StatusCode::from_u16(c).ok());
            let status = status.unwrap_or(StatusCode::BAD_REQUEST);
            Ok(json_response(
                status,
                serde_json::json!({"backend": state.name, "status": status.as_u16()}),
            ))
        }
        (Some("delay"), Some(ms)) => {
            let ms = ms.parse::<u64>().unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok(json_response(
                StatusCode::OK,
                serde_json::json!({"backend": state.name, "delayed_ms": ms}),
            ))
        }
        (Some("stream"), Some(n)) => {
            let n = n.parse::<usize>().unwrap_or(1).min(100_000);
            let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(1);
            tokio::spawn(async move {
                for _ in 0..n {
                    if tx
                        .send(Ok(Frame::data(Bytes::from(vec![b'x'; 1024]))))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
            Ok(Response::builder()
                .header("x-backend", state.name.as_str())
                .body(BodyExt::boxed(StreamBody::new(tokio_stream_from(rx))))
                .expect("valid response"))
        }
        (Some("upgrade"), _) => {
            let proto = req
                .headers()
                .get(http::header::UPGRADE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            if proto.is_empty() {
                return Ok(json_response(
                    StatusCode::BAD_REQUEST,
                    serde_json::json!({"error": "no upgrade"}),
                ));
            }
            let on_upgrade = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                if let Ok(upgraded) = on_upgrade.await {
                    let mut io = TokioIo::new(upgraded);
                    let mut buf = [0u8; 4096];
                    loop {
                        match io.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                if io.write_all(&buf[..n]).await.is_err() {
                                    break;
                                }
                            }
                        }
                    }
                }
            });
            Ok(Response::builder()
                .status(StatusCode::SWITCHING_PROTOCOLS)
                .header(http::header::CONNECTION, "upgrade")
                .header(http::header::UPGRADE, proto)
                .body(full(""))
                .expect("valid response"))
        }
        _ => {
            let headers: serde_json::Map<String, serde_json::Value> = req
                .headers()
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into(),
                    )
                })
                .collect();
            let version = format!("{:?}", req.version());
            let method = req.method().to_string();
            // Drain the body so keep-alive works for requests that carry one.
            let _ = req.into_body().collect().await;
            Ok(json_response(
                StatusCode::OK,
                serde_json::json!({
                    "backend": state.name,
                    "method": method,
                    "path": path,
                    "headers": headers,
                    "version": version,
                }),
            ))
        }
    }
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send + 'static {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// A TCP server that echoes every byte back after sending `NAME\n` on connect.
pub struct TcpEcho {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl TcpEcho {
    /// Starts an echo server named `name` on a free loopback port.
    pub async fn start(name: &str) -> TcpEcho {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind echo");
        let addr = listener.local_addr().expect("local addr");
        let greeting = format!("{name}\n");
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    continue;
                };
                let greeting = greeting.clone();
                tokio::spawn(async move {
                    if stream.write_all(greeting.as_bytes()).await.is_err() {
                        return;
                    }
                    let (mut r, mut w) = stream.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        TcpEcho { addr, task }
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for TcpEcho {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A TCP server that hands each accepted connection to a script.
pub struct RawServer {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl RawServer {
    /// Starts a server on a free loopback port running `script` for every connection.
    pub async fn start<F, Fut>(script: F) -> RawServer
    where
        F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind raw");
        let addr = listener.local_addr().expect("local addr");
        let script = Arc::new(script);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let script = script.clone();
                tokio::spawn(async move { script(stream).await });
            }
        });
        RawServer { addr, task }
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for RawServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads from `stream` until a blank line ends an HTTP/1 request head (or EOF); returns it.
pub async fn read_head(stream: &mut TcpStream) -> std::io::Result<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await? == 0 {
            break;
        }
        head.push(byte[0]);
        if head.len() > 1 << 20 {
            break;
        }
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

/// Returns a loopback port that was free a moment ago (racy by nature; prefer `:0` binds).
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind probe");
    listener.local_addr().expect("local addr").port()
}

/// Address on which nothing listens: a port bound and released, so connects are refused.
pub fn dead_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// `n` different addresses on which nothing listens. (Calls of [`dead_addr`] one after
/// another can get the same port back: each is released before the next is bound.)
pub fn dead_addrs(n: usize) -> Vec<SocketAddr> {
    let held: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind probe"))
        .collect();
    held.iter()
        .map(|l| l.local_addr().expect("local addr"))
        .collect()
}

pub mod alertmanager;
mod capacity;
pub mod harness;
pub mod otlp;
mod redis;

pub use capacity::CapacityBackend;
pub use otlp::{OtlpProtocol, OtlpReceiver, ReceivedSpan};
pub use redis::RedisServer;
