//! Retries per route: to another endpoint, only for what the policy names, only for
//! idempotent requests unless allowed, with small bodies replayed, within a budget.

use std::net::SocketAddr;
use std::time::Duration;

use crate::common::{self, get, retries_of, send, start_yaml};
use bytes::Bytes;
use http_body_util::Full;
use steady_testkit::{Backend, Fault};

fn config(endpoints: &[SocketAddr], retries: &str) -> String {
    common::retry_config(endpoints, retries, "5s")
}

async fn post(addr: SocketAddr, path: &str, body: &'static [u8]) -> common::Answer {
    let req = http::Request::post(format!("http://{addr}{path}"))
        .body(Full::new(Bytes::from_static(body)))
        .unwrap();
    send(req).await
}

#[tokio::test]
async fn a_connect_failure_is_retried_on_another_endpoint() {
    let live = Backend::start("live").await;
    let dead = steady_testkit::dead_addr();
    let steady = start_yaml(&config(&[dead, live.addr()], "{attempts: 2, backoff: 1ms}")).await;
    for _ in 0..6 {
        assert_eq!(get(steady.addr, "/").await.status, 200);
    }
    assert!(retries_of(&steady, "connect-failure") >= 1);
    // Never sent, so even a POST is retried.
    assert_eq!(post(steady.addr, "/", b"x").await.status, 200);
}

#[tokio::test]
async fn listed_statuses_are_retried_elsewhere_and_the_body_is_replayed() {
    let broken = Backend::start("broken").await;
    broken.set_fault(Fault::Status(503));
    let good = Backend::start("good").await;
    let steady = start_yaml(&config(
        &[broken.addr(), good.addr()],
        "{attempts: 2, on: [503], backoff: 1ms, non_idempotent: true}",
    ))
    .await;
    for _ in 0..4 {
        let a = post(steady.addr, "/echo", b"replay me").await;
        assert_eq!(a.status, 200);
        assert_eq!(
            &a.body[..],
            b"replay me",
            "the buffered body went out again"
        );
    }
    assert!(retries_of(&steady, "status") >= 1);
}

#[tokio::test]
async fn non_idempotent_requests_are_not_retried_unless_allowed() {
    let broken = Backend::start("broken").await;
    broken.set_fault(Fault::Status(503));
    let good = Backend::start("good").await;
    let steady = start_yaml(&config(
        &[broken.addr(), good.addr()],
        "{attempts: 2, on: [503], backoff: 1ms}",
    ))
    .await;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(post(steady.addr, "/", b"order").await.status);
    }
    assert!(statuses.contains(&503), "{statuses:?}");
    assert_eq!(retries_of(&steady, "status"), 0);
    // GET is idempotent: retried.
    for _ in 0..4 {
        assert_eq!(get(steady.addr, "/").await.status, 200);
    }
}

#[tokio::test]
async fn attempts_are_bounded_and_the_last_answer_stands() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let c = Backend::start("c").await;
    for backend in [&a, &b, &c] {
        backend.set_fault(Fault::Status(502));
    }
    let steady = start_yaml(&config(
        &[a.addr(), b.addr(), c.addr()],
        "{attempts: 2, on: [5xx], backoff: 1ms}",
    ))
    .await;
    assert_eq!(get(steady.addr, "/").await.status, 502);
    assert_eq!(
        a.hits() + b.hits() + c.hits(),
        2,
        "two attempts, on two endpoints"
    );
}

#[tokio::test]
async fn an_attempt_over_per_try_timeout_is_retried() {
    let slow = Backend::start("slow").await;
    slow.set_fault(Fault::Delay(Duration::from_secs(3)));
    let fast = Backend::start("fast").await;
    let steady = start_yaml(&config(
        &[slow.addr(), fast.addr()],
        "{attempts: 2, on: [timeout], per_try_timeout: 200ms, backoff: 1ms}",
    ))
    .await;
    for _ in 0..2 {
        let a = get(steady.addr, "/").await;
        assert_eq!(a.status, 200);
        assert_eq!(a.json()["backend"], "fast");
    }
    assert!(retries_of(&steady, "timeout") >= 1);
}

#[tokio::test]
async fn an_empty_budget_allows_no_retry() {
    let broken = Backend::start("broken").await;
    broken.set_fault(Fault::Status(503));
    let good = Backend::start("good").await;
    let steady = start_yaml(&config(
        &[broken.addr(), good.addr()],
        "{attempts: 3, on: [503], budget: 0%, min_retries: 0}",
    ))
    .await;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(get(steady.addr, "/").await.status);
    }
    assert!(statuses.contains(&503), "{statuses:?}");
    assert!(retries_of(&steady, "budget-exhausted") >= 1);
    assert_eq!(retries_of(&steady, "status"), 0);
}

#[tokio::test]
async fn bodies_over_the_buffer_stream_once_and_are_not_retried() {
    let broken = Backend::start("broken").await;
    broken.set_fault(Fault::Status(503));
    let good = Backend::start("good").await;
    let steady = start_yaml(&config(
        &[broken.addr(), good.addr()],
        "{attempts: 2, on: [503], non_idempotent: true, buffer: 4}",
    ))
    .await;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(post(steady.addr, "/echo", b"longer than four").await.status);
    }
    assert!(statuses.contains(&503), "{statuses:?}");
    assert_eq!(retries_of(&steady, "status"), 0);
}

#[tokio::test]
async fn a_requests_own_earlier_retry_does_not_use_up_its_budget() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    a.set_fault(Fault::Status(503));
    b.set_fault(Fault::Status(503));
    let good = Backend::start("good").await;
    let steady = start_yaml(&config(
        &[a.addr(), b.addr(), good.addr()],
        "{attempts: 3, on: [503], budget: 0%, min_retries: 1, backoff: 1ms}",
    ))
    .await;
    for _ in 0..3 {
        assert_eq!(get(steady.addr, "/").await.status, 200);
    }
    assert_eq!(retries_of(&steady, "budget-exhausted"), 0);
}

#[tokio::test]
async fn time_before_forwarding_does_not_eat_the_upstream_timeout() {
    let backend = Backend::start("a").await;
    let yaml = config(&[backend.addr()], "{attempts: 2}")
        .replace("timeout: 5s", "timeout: 300ms\n    fault: {headers: true}");
    let steady = start_yaml(&yaml).await;
    let req = http::Request::get(format!("http://{}/", steady.addr))
        .header("x-steady-fault-delay", "300")
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(send(req).await.status, 200);
}
