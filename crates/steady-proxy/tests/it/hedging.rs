//! Hedging (`retries.hedge_after`): a slow idempotent attempt gets a copy on another
//! endpoint and the first answer wins; never for POST, never past the budget.
//!
//! No timing is asserted: which backend answered (each names itself) shows whether a
//! hedge was sent and won.

use std::net::SocketAddr;
use std::time::Duration;

use crate::common::{self, get, send, start_yaml, Running};
use bytes::Bytes;
use http_body_util::Full;
use steady_testkit::{Backend, Fault};

fn config(endpoints: &[SocketAddr], retries: &str) -> String {
    common::retry_config(endpoints, retries, "10s")
}

async fn answered_by(steady: &Running, method: http::Method) -> String {
    let req = http::Request::builder()
        .method(method)
        .uri(format!("http://{}/", steady.addr))
        .body(Full::new(Bytes::from_static(b"x")))
        .unwrap();
    let answer = send(req).await;
    assert_eq!(answer.status, 200);
    answer.json()["backend"].as_str().unwrap().to_string()
}

/// One backend that takes `slow` to answer and one that answers at once.
async fn slow_and_fast(slow: Duration) -> (Backend, Backend) {
    let s = Backend::start("slow").await;
    s.set_fault(Fault::Delay(slow));
    (s, Backend::start("fast").await)
}

#[tokio::test]
async fn a_slow_attempt_is_hedged_and_the_fast_copy_wins() {
    let (slow, fast) = slow_and_fast(Duration::from_secs(5)).await;
    let steady = start_yaml(&config(
        &[slow.addr(), fast.addr()],
        "{attempts: 1, hedge_after: 20ms, min_retries: 10}",
    ))
    .await;
    for _ in 0..6 {
        assert_eq!(answered_by(&steady, http::Method::GET).await, "fast");
    }
    // Every request the slow backend got was hedged, and the copy won.
    assert!(slow.hits() >= 1, "the slow backend got its turns");
    assert_eq!(common::retries_of(&steady, "hedge"), slow.hits());
    assert_eq!(common::retries_of(&steady, "hedge-won"), slow.hits());
}

#[tokio::test]
async fn post_is_not_hedged() {
    let (slow, fast) = slow_and_fast(Duration::from_millis(300)).await;
    let steady = start_yaml(&config(
        &[slow.addr(), fast.addr()],
        "{attempts: 1, hedge_after: 20ms, min_retries: 10}",
    ))
    .await;
    let mut by = Vec::new();
    for _ in 0..2 {
        by.push(answered_by(&steady, http::Method::POST).await);
    }
    by.sort();
    assert_eq!(by, ["fast", "slow"], "each endpoint answered its own POST");
    assert_eq!(common::retries_of(&steady, "hedge"), 0);
}

#[tokio::test]
async fn hedges_stay_within_the_retry_budget() {
    let (slow, fast) = slow_and_fast(Duration::from_millis(300)).await;
    let steady = start_yaml(&config(
        &[slow.addr(), fast.addr()],
        "{attempts: 1, hedge_after: 20ms, budget: 0%, min_retries: 0}",
    ))
    .await;
    let mut by = Vec::new();
    for _ in 0..2 {
        by.push(answered_by(&steady, http::Method::GET).await);
    }
    by.sort();
    assert_eq!(by, ["fast", "slow"], "no budget, no hedge");
    assert_eq!(common::retries_of(&steady, "hedge-budget-exhausted"), 1);
}

#[tokio::test]
async fn a_percentile_hedge_learns_the_route_latency_first() {
    let (slow, fast) = slow_and_fast(Duration::ZERO).await;
    let steady = start_yaml(&config(
        &[slow.addr(), fast.addr()],
        "{attempts: 1, hedge_after: p90, min_retries: 10}",
    ))
    .await;
    // Fast answers fill the window; it rolls once a second.
    for _ in 0..40 {
        assert_eq!(get(steady.addr, "/").await.status, 200);
    }
    assert_eq!(
        common::retries_of(&steady, "hedge"),
        0,
        "nothing is slow yet"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    slow.set_fault(Fault::Delay(Duration::from_secs(5)));
    let before = slow.hits();
    for _ in 0..4 {
        assert_eq!(answered_by(&steady, http::Method::GET).await, "fast");
    }
    assert!(slow.hits() > before);
    assert_eq!(
        common::retries_of(&steady, "hedge-won"),
        slow.hits() - before
    );
}
