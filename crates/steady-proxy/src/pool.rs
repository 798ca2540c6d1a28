//! steady's own pool of HTTP/1.1 upstream connections, one per upstream and worker.
//!
//! hyper-util's pooled client cost ~2 µs per request in the benchmark (a checkout
//! future, a SipHash-keyed map behind a mutex, a mapped connection future, a pooled
//! handle whose drop re-inserts it), and it hides the connections from steady, which
//! later needs their counts for circuit breakers. Here a worker keeps its idle
//! connections in a plain list per endpoint; a connection goes back to the list when the
//! response body it carried has been read to the end ([`Lease`]), and is dropped when
//! the response was cut short, the upstream closed it, or it sat idle too long.
//! HTTP/2 (h2c) upstreams still use hyper-util's client, which multiplexes.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::body::RequestBody;
use crate::breakers::{Breaker, Breakers, Slot};

/// Why a request could not be sent on a pooled connection.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// The TCP connect failed or timed out.
    #[error("connect to {addr}: {reason}")]
    Connect {
        /// The endpoint.
        addr: SocketAddr,
        /// What went wrong.
        reason: String,
    },
    /// The exchange failed after the connection was up.
    #[error("upstream: {0}")]
    Http(#[from] hyper::Error),
    /// A circuit breaker refused a new connection.
    #[error("circuit breaker {} is open", .0.as_str())]
    Breaker(Breaker),
}

/// A connection's request handle with its `max_connections` unit: dropping it closes
/// the connection and frees the unit at once.
struct Conn {
    sender: SendRequest<RequestBody>,
    _slot: Slot,
}

struct Idle {
    addr: SocketAddr,
    conn: Conn,
    since: Instant,
}

/// Idle HTTP/1.1 connections of one upstream on one worker.
pub struct Pool {
    idle: Mutex<Vec<Idle>>,
    connect_timeout: Duration,
    idle_timeout: Duration,
    max_idle_per_endpoint: usize,
    /// The upstream's circuit breakers: open connections and requests waiting for one.
    breakers: Arc<Breakers>,
}

impl Pool {
    /// Creates an empty pool counting against `breakers`.
    pub fn new(
        connect_timeout: Duration,
        idle_timeout: Duration,
        max_idle_per_endpoint: usize,
        breakers: Arc<Breakers>,
    ) -> Pool {
        Pool {
            idle: Mutex::new(Vec::new()),
            connect_timeout,
            idle_timeout,
            max_idle_per_endpoint,
            breakers,
        }
    }

    /// Takes the most recently used live connection to `addr`, dropping stale ones.
    fn checkout(&self, addr: SocketAddr) -> Option<Conn> {
        let now = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        // Newest last: reuse warm connections and let old ones age out. `remove` keeps
        // the list in check-in order (and is a pop for the usual last entry).
        while let Some(pos) = idle.iter().rposition(|i| i.addr == addr) {
            let entry = idle.remove(pos);
            if self.stale(&entry, now) {
                continue;
            }
            return Some(entry.conn);
        }
        None
    }

    fn stale(&self, entry: &Idle, now: Instant) -> bool {
        entry.conn.sender.is_closed() || now.duration_since(entry.since) > self.idle_timeout
    }

    /// Puts a connection whose exchange finished back for reuse, dropping idle ones that
    /// died or aged out meanwhile (each holds a `max_connections` unit).
    fn checkin(&self, addr: SocketAddr, conn: Conn) {
        if conn.sender.is_closed() {
            return;
        }
        let now = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        // The list is in check-in order, so aged-out connections are at its front: one
        // clock comparison per check-in instead of one per idle connection.
        let aged = idle
            .iter()
            .position(|entry| now.duration_since(entry.since) <= self.idle_timeout)
            .unwrap_or(idle.len());
        idle.drain(..aged);
        idle.retain(|entry| !entry.conn.sender.is_closed());
        if idle.iter().filter(|i| i.addr == addr).count() >= self.max_idle_per_endpoint {
            return;
        }
        idle.push(Idle {
            addr,
            conn,
            since: now,
        });
    }

    /// Closes this worker's oldest idle connection (to any endpoint) to free a
    /// `max_connections` unit; returns whether there was one.
    fn evict_idle(&self) -> bool {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        // Check-in order: the oldest is first.
        (!idle.is_empty()).then(|| drop(idle.remove(0))).is_some()
    }

    /// Idle connections held right now.
    pub fn idle_count(&self) -> usize {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    async fn connect(&self, addr: SocketAddr) -> Result<Conn, PoolError> {
        // Waiting for a new connection is what `max_pending_requests` bounds; the
        // connection itself holds a `max_connections` unit for as long as it lives. At
        // the limit, an idle connection of this worker makes room.
        let _pending = self
            .breakers
            .take(Breaker::Pending)
            .map_err(PoolError::Breaker)?;
        let open = match self.breakers.take(Breaker::Connections) {
            Ok(slot) => slot,
            Err(_) if self.evict_idle() => self
                .breakers
                .take(Breaker::Connections)
                .map_err(PoolError::Breaker)?,
            Err(breaker) => return Err(PoolError::Breaker(breaker)),
        };
        let connect_error = |reason: String| PoolError::Connect { addr, reason };
        let stream = tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| connect_error(format!("timed out after {:?}", self.connect_timeout)))?
            .map_err(|e| connect_error(e.to_string()))?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = hyper::client::conn::http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await?;
        // The connection task lives on this worker; it ends when the sender is dropped
        // or the upstream closes.
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(%addr, error = %e, "upstream connection ended with error");
            }
        });
        Ok(Conn {
            sender,
            _slot: open,
        })
    }

    /// Sends `req` to `addr` on a pooled connection (or a new one) and returns the
    /// response with the lease that returns the connection once its body is read.
    ///
    /// A pooled connection the upstream closed before the request went out is replaced
    /// by a fresh one, so a keep-alive race never fails a request.
    pub async fn send(
        self: &Arc<Self>,
        addr: SocketAddr,
        mut req: Request<RequestBody>,
    ) -> Result<(Response<Incoming>, Lease), PoolError> {
        loop {
            let (mut conn, reused) = match self.checkout(addr) {
                Some(c) => (c, true),
                // Boxed: the connect and handshake futures are large and rarely run;
                // inline, they would grow every request future that awaits this one.
                None => (Box::pin(self.connect(addr)).await?, false),
            };
            if reused && conn.sender.ready().await.is_err() {
                continue;
            }
            match conn.sender.try_send_request(req).await {
                Ok(response) => {
                    let lease = Lease {
                        pool: Some(self.clone()),
                        addr,
                        conn: Some(conn),
                    };
                    return Ok((response, lease));
                }
                Err(mut e) => match e.take_message() {
                    // Not written: safe to try again on a fresh connection.
                    Some(unsent) if reused => req = unsent,
                    _ => return Err(PoolError::Http(e.into_error())),
                },
            }
        }
    }
}

/// A connection lent to one exchange; goes back to its pool when the response body has
/// been read to the end ([`Lease::release`]), and is closed if dropped before that.
pub struct Lease {
    pool: Option<Arc<Pool>>,
    addr: SocketAddr,
    conn: Option<Conn>,
}

impl Lease {
    /// Returns the connection to the pool: its response is complete.
    pub fn release(&mut self) {
        if let (Some(pool), Some(conn)) = (self.pool.take(), self.conn.take()) {
            pool.checkin(self.addr, conn);
        }
    }

    /// Keeps the connection out of the pool for good (an upgraded connection; its
    /// `max_connections` unit is freed here, so tunnels are not counted).
    pub fn detach(&mut self) {
        self.pool = None;
        self.conn = None;
    }
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease").field("addr", &self.addr).finish()
    }
}
