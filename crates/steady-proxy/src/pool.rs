//! steady's own pool of HTTP/1.1 upstream connections, one per upstream and worker.
//!
//! hyper-util's pooled client cost ~2 µs per request in the benchmark (a checkout
//! future, a SipHash-keyed map behind a mutex, a mapped connection future, a pooled
//! handle whose drop re-inserts it), and it hides the connections from steady, which
//! later needs their counts for circuit breakers. Here a worker keeps its idle
//! connections in a plain list per endpoint; a connection goes back to the list when the
//! response body it carried has been read to the end ([`Lease`]), and is dropped when
//! the response was cut short, the upstream closed it, or it sat idle too long.
//! The exchanges themselves are [`crate::h1`]'s, run by the request's own task.
//! HTTP/2 (h2c) upstreams still use hyper-util's client, which multiplexes.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response};
use http_body::Body as _;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::body::RequestBody;
use crate::breakers::{Breaker, Breakers, Slot};
use crate::h1::Connection;

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
    Http(#[from] crate::h1::Error),
    /// A circuit breaker refused a new connection.
    #[error("circuit breaker {} is open", .0.as_str())]
    Breaker(Breaker),
}

/// An idle connection with its `max_connections` unit, freed when the connection is
/// dropped.
struct Idle {
    addr: SocketAddr,
    conn: Box<Connection>,
    slot: Slot,
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
    fn checkout(&self, addr: SocketAddr) -> Option<(Box<Connection>, Slot)> {
        let now = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        // Newest last: reuse warm connections and let old ones age out. `remove` keeps
        // the list in check-in order (and is a pop for the usual last entry).
        while let Some(pos) = idle.iter().rposition(|i| i.addr == addr) {
            let entry = idle.remove(pos);
            if entry.conn.is_dead() || now.duration_since(entry.since) > self.idle_timeout {
                continue;
            }
            return Some((entry.conn, entry.slot));
        }
        None
    }

    /// Puts a connection whose exchange finished back for reuse, dropping idle ones that
    /// aged out meanwhile (each holds a `max_connections` unit). One the upstream closed
    /// is found at checkout.
    fn checkin(&self, addr: SocketAddr, conn: Box<Connection>, slot: Slot) {
        let now = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        // The list is in check-in order, so aged-out connections are at its front: one
        // clock comparison per check-in instead of one per idle connection.
        let aged = idle
            .iter()
            .position(|entry| now.duration_since(entry.since) <= self.idle_timeout)
            .unwrap_or(idle.len());
        idle.drain(..aged);
        // (Counted only when the whole list could hold that many: a scan of every idle
        // connection per check-in cost some 300 instructions at 64 of them.)
        if idle.len() >= self.max_idle_per_endpoint
            && idle.iter().filter(|i| i.addr == addr).count() >= self.max_idle_per_endpoint
        {
            return;
        }
        idle.push(Idle {
            addr,
            conn,
            slot,
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

    async fn connect(&self, addr: SocketAddr) -> Result<(Box<Connection>, Slot), PoolError> {
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
        Ok((Box::new(Connection::new(stream)), open))
    }

    /// Sends `req` to `addr` on a pooled connection (or a new one) and returns the
    /// response; its body returns the connection to the pool once read to the end.
    ///
    /// A pooled connection found closed before the request went out is replaced by a
    /// fresh one. One that closes without answering is too, for a request that may be
    /// sent twice (an idempotent method, no body): the upstream closing an idle
    /// connection as the request arrives never fails it.
    ///
    /// (Not an `async fn`, which would keep the request twice in its future: as passed,
    /// and as its parts.)
    pub fn send<'a>(
        self: &'a Arc<Self>,
        addr: SocketAddr,
        req: Request<RequestBody>,
        added: crate::headers::Added,
    ) -> impl Future<Output = Result<Response<crate::h1::Body>, PoolError>> + 'a {
        let (parts, mut body) = req.into_parts();
        async move {
            let repeatable = crate::http::is_idempotent(&parts.method) && body.is_end_stream();
            loop {
                let ((mut conn, slot), reused) = match self.checkout(addr) {
                    Some(c) => (c, true),
                    // Boxed: the connect future is large and rarely runs; inline, it would
                    // grow every request future that awaits this one.
                    None => (Box::pin(self.connect(addr)).await?, false),
                };
                match conn.exchange(&parts, &added, &mut body, addr).await {
                    Ok((head, upload)) => {
                        let lease = Lease {
                            pool: Some(self.clone()),
                            addr,
                            slot: Some(slot),
                        };
                        return Ok(crate::h1::Body::new(conn, head, upload, lease));
                    }
                    Err(e) if reused && repeatable && e.is_closed() => continue,
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
}

/// A connection's place in its pool while one exchange uses it: the response body hands
/// the connection back ([`Lease::release`]) when it has been read to the end. Dropped
/// unreleased, it frees the connection's `max_connections` unit.
pub struct Lease {
    pool: Option<Arc<Pool>>,
    addr: SocketAddr,
    slot: Option<Slot>,
}

impl Lease {
    /// Returns `conn` to the pool: its response is complete.
    pub fn release(&mut self, conn: Box<Connection>) {
        if let (Some(pool), Some(slot)) = (self.pool.take(), self.slot.take()) {
            pool.checkin(self.addr, conn, slot);
        }
    }

    /// Keeps the connection out of the pool for good (an upgraded connection; its
    /// `max_connections` unit is freed here, so tunnels are not counted).
    pub fn detach(&mut self) {
        self.pool = None;
        self.slot = None;
    }
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease").field("addr", &self.addr).finish()
    }
}
