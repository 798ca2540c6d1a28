//! Circuit breakers per upstream: over `max_requests`, `max_connections` or
//! `max_pending_requests` a request is answered 503 at once, naming the breaker, and the
//! counts come back when requests and connections end.

use std::time::Duration;

use crate::common::{self, get, start_yaml, Running};
use steady_testkit::Backend;

fn config(backend: std::net::SocketAddr, breakers: &str) -> String {
    format!(
        "listeners: [{{name: web, bind: 127.0.0.1:0}}]
routes: [{{name: api, listener: web, upstream: app, timeout: 5s}}]
upstreams:
  - name: app
    circuit_breakers: {breakers}
    endpoints: [{{address: {backend}}}]
"
    )
}

/// Starts a slow request and waits until it holds an active-request slot.
async fn hold_one(steady: &Running, ms: u64) -> tokio::task::JoinHandle<common::Answer> {
    let addr = steady.addr;
    let slow = tokio::spawn(async move { get(addr, &format!("/delay/{ms}")).await });
    let breakers = steady.gateway.upstreams()[0].breakers.clone();
    for _ in 0..400 {
        if breakers.current(steady_proxy::breakers::Breaker::Requests) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        breakers.current(steady_proxy::breakers::Breaker::Requests),
        1
    );
    slow
}

#[tokio::test]
async fn max_requests_refuses_at_once_and_recovers() {
    let backend = Backend::start("a").await;
    let steady = start_yaml(&config(backend.addr(), "{max_requests: 1}")).await;
    let slow = hold_one(&steady, 400).await;
    let refused = get(steady.addr, "/").await;
    assert_eq!(refused.status, 503);
    assert_eq!(refused.headers["x-steady-error"], "circuit-open");
    assert_eq!(refused.headers["x-steady-circuit-breaker"], "max_requests");
    assert_eq!(refused.json()["error"], "circuit-open");
    assert_eq!(slow.await.unwrap().status, 200);
    assert_eq!(
        get(steady.addr, "/").await.status,
        200,
        "the slot came back"
    );
    let metrics = steady.gateway.metrics().encode();
    assert!(
        metrics.contains(
            "steady_circuit_breaker_overflows_total{upstream=\"app\",breaker=\"max_requests\"} 1"
        ),
        "{metrics}"
    );
    assert!(metrics
        .contains("steady_circuit_breaker_limit{upstream=\"app\",breaker=\"max_requests\"} 1"));
    assert!(metrics.contains("steady_upstream_active_requests{upstream=\"app\"} 0"));
}

#[tokio::test]
async fn max_connections_caps_upstream_connections_across_requests() {
    let backend = Backend::start("a").await;
    let steady = start_yaml(&config(backend.addr(), "{max_connections: 1}")).await;
    // The only connection is busy with the slow request: a second one may not open.
    let slow = hold_one(&steady, 400).await;
    let refused = get(steady.addr, "/").await;
    assert_eq!(refused.status, 503);
    assert_eq!(
        refused.headers["x-steady-circuit-breaker"],
        "max_connections"
    );
    assert_eq!(slow.await.unwrap().status, 200);
    // Back in the pool, the one connection serves request after request.
    for _ in 0..5 {
        assert_eq!(get(steady.addr, "/").await.status, 200);
    }
    let breakers = &steady.gateway.upstreams()[0].breakers;
    assert_eq!(
        breakers.current(steady_proxy::breakers::Breaker::Connections),
        1
    );
    // The endpoint did nothing wrong: it is still available.
    let endpoints = steady.gateway.upstreams()[0].endpoints();
    assert!(endpoints.endpoints()[0].is_available());
}

#[tokio::test]
async fn without_limits_the_counts_are_still_reported() {
    let backend = Backend::start("a").await;
    let steady = start_yaml(&config(backend.addr(), "{}")).await;
    let slow = hold_one(&steady, 200).await;
    let metrics = steady.gateway.metrics().encode();
    assert!(
        metrics.contains("steady_upstream_active_requests{upstream=\"app\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("steady_upstream_connections{upstream=\"app\"} 1"));
    assert!(!metrics.contains("steady_circuit_breaker_limit{"));
    assert_eq!(slow.await.unwrap().status, 200);
}

#[tokio::test]
async fn an_idle_connection_makes_room_under_max_connections() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let yaml = format!(
        "listeners: [{{name: web, bind: 127.0.0.1:0}}]
routes: [{{name: api, listener: web, upstream: app}}]
upstreams:
  - name: app
    balance: round-robin
    circuit_breakers: {{max_connections: 1}}
    endpoints: [{{address: {}}}, {{address: {}}}]
",
        a.addr(),
        b.addr()
    );
    let steady = start_yaml(&yaml).await;
    for _ in 0..6 {
        assert_eq!(get(steady.addr, "/").await.status, 200);
    }
    assert_eq!((a.hits(), b.hits()), (3, 3));
    let breakers = &steady.gateway.upstreams()[0].breakers;
    assert_eq!(
        breakers.current(steady_proxy::breakers::Breaker::Connections),
        1
    );
}
