//! Fault injection per route: aborts and delays by share or by header, rehearsed
//! without touching the upstream.

use std::time::{Duration, Instant};

use crate::common::{get, send, start_yaml};
use bytes::Bytes;
use http_body_util::Full;
use steady_testkit::Backend;

fn config(backend: std::net::SocketAddr, fault: &str) -> String {
    format!(
        "listeners: [{{name: web, bind: 127.0.0.1:0}}]
routes:
  - name: api
    listener: web
    upstream: app
    timeout: 2s
    fault: {fault}
upstreams:
  - name: app
    endpoints: [{{address: {backend}}}]
"
    )
}

#[tokio::test]
async fn an_abort_for_every_request_never_reaches_the_upstream() {
    let backend = Backend::start("a").await;
    let steady = start_yaml(&config(
        backend.addr(),
        "{abort: {status: 503, percent: 100}}",
    ))
    .await;
    for _ in 0..3 {
        let a = get(steady.addr, "/").await;
        assert_eq!(a.status, 503);
        assert_eq!(a.headers["x-steady-error"], "fault-injected");
        assert_eq!(a.json()["error"], "fault-injected");
        assert!(a.headers.contains_key("x-request-id"));
    }
    assert_eq!(backend.hits(), 0);
    let metrics = steady.gateway.metrics().encode();
    assert!(
        metrics.contains("steady_faults_injected_total{route=\"api\",kind=\"abort\"} 3"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_share_of_requests_is_aborted() {
    let backend = Backend::start("a").await;
    let steady = start_yaml(&config(
        backend.addr(),
        "{abort: {status: 500, percent: 50%}}",
    ))
    .await;
    let mut aborted = 0;
    for _ in 0..200 {
        if get(steady.addr, "/").await.status == 500 {
            aborted += 1;
        }
    }
    // Binomial(200, 0.5): outside 60..=140 has probability below 1e-8.
    assert!((60..=140).contains(&aborted), "{aborted} of 200 aborted");
    assert_eq!(backend.hits(), 200 - aborted);
}

#[tokio::test]
async fn headers_ask_for_faults_only_when_allowed() {
    let backend = Backend::start("a").await;
    let with = |addr: std::net::SocketAddr, name: &'static str, value: &'static str| {
        let req = http::Request::get(format!("http://{addr}/"))
            .header(name, value)
            .body(Full::new(Bytes::new()))
            .unwrap();
        send(req)
    };

    // Not allowed: the headers are ordinary headers.
    let steady = start_yaml(&config(backend.addr(), "{}")).await;
    assert_eq!(
        with(steady.addr, "x-steady-fault-abort", "418")
            .await
            .status,
        200
    );

    let steady = start_yaml(&config(backend.addr(), "{headers: true}")).await;
    assert_eq!(
        with(steady.addr, "x-steady-fault-abort", "418")
            .await
            .status,
        418
    );
    // Out of range or garbage: ignored.
    assert_eq!(
        with(steady.addr, "x-steady-fault-abort", "99").await.status,
        200
    );
    assert_eq!(
        with(steady.addr, "x-steady-fault-abort", "abc")
            .await
            .status,
        200
    );
    let started = Instant::now();
    assert_eq!(
        with(steady.addr, "x-steady-fault-delay", "200")
            .await
            .status,
        200
    );
    assert!(started.elapsed() >= Duration::from_millis(200));
    // A header delay never outlasts the route's timeout (2s).
    let started = Instant::now();
    assert_eq!(
        with(steady.addr, "x-steady-fault-delay", "999999999")
            .await
            .status,
        200
    );
    assert!(started.elapsed() < Duration::from_secs(9));
}

#[tokio::test]
async fn a_delay_holds_the_request_then_forwards_it() {
    let backend = Backend::start("a").await;
    let steady = start_yaml(&config(backend.addr(), "{delay: {duration: 150ms}}")).await;
    let started = Instant::now();
    assert_eq!(get(steady.addr, "/").await.status, 200);
    assert!(started.elapsed() >= Duration::from_millis(150));
    assert_eq!(backend.hits(), 1);
    let metrics = steady.gateway.metrics().encode();
    assert!(metrics.contains("steady_faults_injected_total{route=\"api\",kind=\"delay\"} 1"));
}
