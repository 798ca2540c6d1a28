//! Global rate limits through a real `redis-server` (Debian's package): three steady
//! instances share one limit, and a Redis outage falls back per `on_failure` without
//! hanging, then recovers without a restart.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::{self, get, start_yaml, Running};
use steady_testkit::{Backend, RedisServer};

fn config(backend: std::net::SocketAddr, redis: &str, on_failure: &str, rate: &str) -> String {
    config_keyed(backend, redis, on_failure, rate, "route")
}

fn config_keyed(
    backend: std::net::SocketAddr,
    redis: &str,
    on_failure: &str,
    rate: &str,
    key: &str,
) -> String {
    format!(
        "listeners: [{{name: web, bind: 127.0.0.1:0}}]
routes:
  - name: api
    listener: web
    upstream: app
    rate_limit:
      - {{key: \"{key}\", rate: {rate}, scope: global, name: shared}}
redis: {{url: \"{redis}\", on_failure: {on_failure}, timeout: 100ms}}
upstreams:
  - name: app
    endpoints: [{{address: {backend}}}]
"
    )
}

/// Sends requests from `loops` tasks per instance until `deadline`; returns (admitted, refused).
async fn hammer(instances: &[Running], loops: usize, duration: Duration) -> (u64, u64) {
    let admitted = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + duration;
    let mut tasks = Vec::new();
    for steady in instances {
        for _ in 0..loops {
            let (addr, admitted, refused) = (steady.addr, admitted.clone(), refused.clone());
            tasks.push(tokio::spawn(async move {
                // Bounded: stops at the deadline or after 100k requests.
                for _ in 0..100_000 {
                    if Instant::now() >= deadline {
                        break;
                    }
                    match get(addr, "/").await.status {
                        200 => admitted.fetch_add(1, Ordering::Relaxed),
                        429 => refused.fetch_add(1, Ordering::Relaxed),
                        other => panic!("unexpected status {other}"),
                    };
                }
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    (
        admitted.load(Ordering::Relaxed),
        refused.load(Ordering::Relaxed),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_share_one_global_limit() {
    let redis = RedisServer::start();
    let backend = Backend::start("a").await;
    let yaml = config(backend.addr(), &redis.url(), "deny", "200/s");
    let mut instances = Vec::new();
    for _ in 0..3 {
        instances.push(start_yaml(&yaml).await);
    }
    let duration = Duration::from_secs(3);
    let started = Instant::now();
    let (admitted, refused) = hammer(&instances, 4, duration).await;
    let elapsed = started.elapsed().as_secs_f64();
    // The bucket starts full (burst = 200), then refills at 200/s.
    let expected = 200.0 + 200.0 * elapsed;
    let error = (admitted as f64 - expected) / expected;
    println!(
        "admitted {admitted} of {} in {elapsed:.2}s; expected {expected:.0} ({:+.2}%)",
        admitted + refused,
        error * 100.0
    );
    assert!(
        refused > admitted,
        "the load must exceed the limit to test it"
    );
    assert!(
        error.abs() <= 0.05,
        "admitted {admitted}, expected {expected:.0}"
    );
    for steady in &instances {
        let metrics = steady.gateway.metrics().encode();
        assert!(
            metrics.contains("steady_rate_limit_redis_up 1"),
            "{metrics}"
        );
        assert!(
            metrics.contains("steady_rate_limit_fallback_total{route=\"api\",limit=\"shared\"} 0")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_falls_back_to_local_limits_and_recovers() {
    let mut redis = RedisServer::start();
    let backend = Backend::start("a").await;
    let yaml = config_keyed(
        backend.addr(),
        &redis.url(),
        "local",
        "5/m",
        "header:x-tenant",
    );
    let steady = start_yaml(&yaml).await;
    let tenant = |name: &'static str| {
        let addr = steady.addr;
        async move {
            let req = http::Request::get(format!("http://{addr}/"))
                .header("x-tenant", name)
                .body(http_body_util::Full::new(bytes::Bytes::new()))
                .unwrap();
            common::send(req).await.status
        }
    };

    // With Redis: the global bucket of 5.
    let mut statuses = Vec::new();
    for _ in 0..7 {
        statuses.push(tenant("a").await);
    }
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429, 429]);

    redis.kill();
    // Without Redis: a tenant the instance has no lease or cached answer for gets the
    // local fallback bucket (the same quota, per instance); answers come at once.
    let started = Instant::now();
    let mut statuses = Vec::new();
    for _ in 0..20 {
        statuses.push(tenant("b").await);
    }
    println!("20 requests during the outage in {:?}", started.elapsed());
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        5,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 429),
        "{statuses:?}"
    );
    // What Redis already refused stays refused.
    assert_eq!(tenant("a").await, 429);
    let metrics = steady.gateway.metrics().encode();
    assert!(
        metrics.contains("steady_rate_limit_redis_up 0"),
        "{metrics}"
    );
    assert!(!metrics.contains("steady_rate_limit_fallback_total{route=\"api\",limit=\"shared\"} 0"));

    // Redis comes back (empty: its state died with it): the global limit is enforced
    // again, without restarting steady.
    redis.restart();
    let mut recovered = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let _ = get(steady.addr, "/").await;
        if steady
            .gateway
            .metrics()
            .encode()
            .contains("steady_rate_limit_redis_up 1")
        {
            recovered = true;
            break;
        }
    }
    assert!(recovered, "steady went back to Redis by itself");
    let fallbacks = || {
        steady
            .gateway
            .metrics()
            .encode()
            .lines()
            .find(|l| l.starts_with("steady_rate_limit_fallback_total{"))
            .map(str::to_owned)
    };
    let before = fallbacks();
    let mut statuses = Vec::new();
    for _ in 0..7 {
        statuses.push(tenant("c").await);
    }
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429, 429]);
    assert_eq!(
        fallbacks(),
        before,
        "decided by Redis again, not by the fallback"
    );
}

#[tokio::test]
async fn on_failure_allow_and_deny_do_what_they_say() {
    let backend = Backend::start("a").await;
    // Nothing listens here: Redis is down from the start.
    let dead = format!("redis://{}", steady_testkit::dead_addr());
    for (policy, status) in [("allow", 200), ("deny", 429)] {
        let steady = start_yaml(&config(backend.addr(), &dead, policy, "1/m")).await;
        for _ in 0..3 {
            assert_eq!(
                get(steady.addr, "/").await.status,
                status,
                "on_failure: {policy}"
            );
        }
    }
}
