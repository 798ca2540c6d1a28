//! L4 proxying: each accepted connection is spliced to one endpoint of the upstream.

use std::net::SocketAddr;
use std::sync::Arc;

use steady_balance::Outcome;
use tokio::net::TcpStream;

use crate::conn::{ConnIo, ConnState};
use crate::upstream::Upstream;

/// Connects `client` to an endpoint of `upstream` and copies bytes both ways until
/// either side closes or no byte moves for `idle_timeout`. A failed connect tries other
/// endpoints (each at most once).
pub async fn serve(
    upstream: Arc<Upstream>,
    client: TcpStream,
    peer: SocketAddr,
    idle_timeout: std::time::Duration,
) {
    let hash = upstream.client_hash(peer.ip());
    let mut tried: Vec<SocketAddr> = Vec::new();
    let attempts = upstream.endpoints().endpoints().len().clamp(1, 3);
    for _ in 0..attempts {
        let now = tokio::time::Instant::now().into_std();
        let Some(endpoint) = upstream.pick(hash, &tried, now) else {
            break;
        };
        if tried.contains(&endpoint.addr()) {
            break;
        }
        tried.push(endpoint.addr());
        let in_flight = endpoint.start(now);
        let connect = tokio::time::timeout(
            upstream.connect_timeout,
            TcpStream::connect(endpoint.addr()),
        );
        let mut server = match connect.await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::debug!(upstream = %upstream.name, endpoint = %endpoint.addr(), error = %e, "tcp connect failed");
                in_flight.finish(tokio::time::Instant::now().into_std(), Outcome::Failure);
                continue;
            }
            Err(_) => {
                tracing::debug!(upstream = %upstream.name, endpoint = %endpoint.addr(), "tcp connect timed out");
                in_flight.finish(tokio::time::Instant::now().into_std(), Outcome::Failure);
                continue;
            }
        };
        let _ = server.set_nodelay(true);
        in_flight.finish(tokio::time::Instant::now().into_std(), Outcome::Success);
        // Keep the endpoint counted as busy while bytes flow, for least-connections.
        let _busy = endpoint.start(tokio::time::Instant::now().into_std());
        // The client socket's wrapper sees bytes both ways and enforces the idle timeout.
        let state = ConnState::headless();
        let mut client = ConnIo::new(client, state, idle_timeout, idle_timeout);
        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
        return;
    }
    tracing::debug!(upstream = %upstream.name, %peer, "no endpoint reachable for tcp connection; closing");
}
