//! Chaos on tokio's paused clock: the timers of failure handling (per-try timeouts,
//! ejection time) run in virtual time, so the test takes milliseconds and its timing
//! assertions are exact instead of lucky. The real-binary chaos tests are in
//! `crates/steady/tests/it/chaos.rs`.

use std::net::SocketAddr;
use std::time::Duration;

use crate::common::{get, start_yaml, Running};
use steady_testkit::{Backend, Fault};

fn ejected(steady: &Running, addr: SocketAddr) -> bool {
    steady.gateway.upstreams()[0]
        .endpoints()
        .endpoints()
        .iter()
        .any(|e| e.addr() == addr && e.is_ejected())
}

#[tokio::test(start_paused = true)]
async fn a_staller_is_ejected_after_three_per_try_timeouts_and_retried_after_its_ejection() {
    let good = Backend::start("good").await;
    let other = Backend::start("other").await;
    let staller = Backend::start("staller").await;
    staller.set_fault(Fault::Stall);
    let yaml = format!(
        "listeners: [{{name: web, bind: 127.0.0.1:0}}]
routes:
  - name: api
    listener: web
    upstream: app
    timeout: 30s
    retries: {{attempts: 2, on: [timeout], per_try_timeout: 2s, backoff: 1ms}}
upstreams:
  - name: app
    balance: round-robin
    health:
      passive: {{consecutive_failures: 3, base_ejection: 30s, max_ejection_percent: 50, interval: 10m}}
    endpoints: [{{address: '{}'}}, {{address: '{}'}}, {{address: '{}'}}]
",
        good.addr(),
        other.addr(),
        staller.addr()
    );
    let steady = start_yaml(&yaml).await;

    // One request at a time: each one that meets the staller waits out its 2 s per-try
    // timeout, then is retried elsewhere and succeeds.
    let started = tokio::time::Instant::now();
    let mut sent = 0;
    while !ejected(&steady, staller.addr()) {
        assert_eq!(get(steady.addr, "/").await.status, 200);
        sent += 1;
        assert!(sent < 30, "the staller was never ejected");
    }
    assert_eq!(staller.hits(), 3, "ejected on its third timeout");
    assert!(
        started.elapsed() >= Duration::from_secs(6),
        "three 2 s timeouts took {:?}",
        started.elapsed()
    );

    // Ejected: no request goes to it any more.
    for _ in 0..10 {
        assert_eq!(get(steady.addr, "/").await.status, 200);
    }
    assert_eq!(staller.hits(), 3);

    // After base_ejection (30 s, plus at most 1 s of jitter) it is tried again.
    tokio::time::advance(Duration::from_secs(32)).await;
    for _ in 0..3 {
        assert_eq!(get(steady.addr, "/").await.status, 200);
    }
    assert!(staller.hits() > 3, "the ejection never ended");
}
