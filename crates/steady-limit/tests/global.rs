//! Global limits against a real `redis-server` (see `steady_testkit::RedisServer`).
//!
//! Each store is created on a "control" runtime of its own thread, as steady does, and
//! checked from other runtimes, so every test also exercises cross-runtime use.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use steady_limit::global::bucket_key;
use steady_limit::{GlobalLimit, Quota, RedisOptions, RedisStore, Unavailable};
use steady_testkit::RedisServer;
use tokio::runtime::Handle;

/// A current-thread runtime on its own thread that runs until dropped, like steady's
/// control runtime.
struct Control {
    handle: Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Control {
    fn start() -> Control {
        let (handle_tx, handle_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("control runtime");
            handle_tx
                .send(runtime.handle().clone())
                .expect("send handle");
            let _ = runtime.block_on(stopped);
        });
        Control {
            handle: handle_rx.recv().expect("control handle"),
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// A store whose Redis I/O runs on this runtime.
    fn store(&self, url: &str, timeout: Duration) -> Arc<RedisStore> {
        let _guard = self.handle.enter();
        Arc::new(RedisStore::new(RedisOptions {
            url: url.to_string(),
            timeout,
            key_prefix: "steady:test:".into(),
        }))
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn limit(name: &str, rate: u32, per: Duration, burst: u32) -> GlobalLimit {
    GlobalLimit {
        name: name.into(),
        quota: Quota { rate, per, burst },
    }
}

/// Waits (bounded) until the store's background ping has reached Redis.
async fn until_available(store: &RedisStore) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !store.available() {
        assert!(Instant::now() < deadline, "store never became available");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_burst_is_allowed_then_limited() {
    let redis = RedisServer::start();
    let control = Control::start();
    let store = control.store(&redis.url(), Duration::from_millis(500));
    // 5 per minute: one token every 12 s, so nothing refills during the test.
    let lim = limit("burst", 5, Duration::from_secs(60), 5);

    for i in 0..5u32 {
        let d = store.check(&lim, "client").await.expect("redis is up");
        assert!(d.allowed, "request {i} of the burst: {d:?}");
        assert_eq!(d.remaining, 4 - i, "request {i}");
        assert_eq!(d.retry_after, Duration::ZERO);
    }
    let d = store.check(&lim, "client").await.expect("redis is up");
    assert!(!d.allowed, "{d:?}");
    assert_eq!(d.remaining, 0);
    assert!(d.retry_after > Duration::from_secs(10), "{d:?}");
    assert!(d.retry_after <= Duration::from_secs(12), "{d:?}");

    // The denial is cached: asking again costs no round trip.
    let calls = store.redis_calls();
    for _ in 0..100 {
        let d = store.check(&lim, "client").await.expect("cached");
        assert!(!d.allowed);
    }
    assert_eq!(
        store.redis_calls(),
        calls,
        "cached denials never reach redis"
    );
    assert!(store.available());
    assert_eq!(store.errors(), 0);
}

#[tokio::test]
async fn buckets_expire_when_idle() {
    let redis = RedisServer::start();
    let control = Control::start();
    let store = control.store(&redis.url(), Duration::from_millis(500));
    let lim = limit("expiry", 10, Duration::from_secs(1), 10);
    assert!(store.check(&lim, "k").await.expect("up").allowed);

    let client = redis::Client::open(redis.url()).expect("url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let key = bucket_key("steady:test:", "expiry", "k");
    let pttl: i64 = redis::cmd("PTTL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .expect("pttl");
    // One token taken from a bucket refilling at 10/s: full again in 100 ms.
    assert!((1..=101).contains(&pttl), "PTTL {pttl}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let exists: i64 = redis::cmd("EXISTS")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .expect("exists");
    assert_eq!(exists, 0, "an idle bucket vanishes");
}

/// Per instance: a control runtime for Redis I/O and two worker threads, each with a
/// current-thread runtime running several request loops.
const WORKERS: usize = 2;
const TASKS_PER_WORKER: usize = 4;

#[derive(Default)]
struct Tally {
    admitted: AtomicU64,
    denied: AtomicU64,
    unavailable: AtomicU64,
}

#[test]
fn three_instances_enforce_one_global_limit() {
    let redis = RedisServer::start();
    let rate = 1000u32;
    let burst = 100u32;
    let duration = Duration::from_millis(2500);
    let lim = Arc::new(limit("shared", rate, Duration::from_secs(1), burst));

    let controls: Vec<Control> = (0..3).map(|_| Control::start()).collect();
    let stores: Vec<Arc<RedisStore>> = controls
        .iter()
        .map(|c| c.store(&redis.url(), Duration::from_millis(500)))
        .collect();
    for store in &stores {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !store.available() {
            assert!(Instant::now() < deadline, "store never became available");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    let tally = Arc::new(Tally::default());
    // Every loop starts at the same instant and stops by itself at `end`.
    let start = Instant::now() + Duration::from_millis(200);
    let end = start + duration;
    let mut threads = Vec::new();
    for store in &stores {
        for _ in 0..WORKERS {
            let (store, lim, tally) = (Arc::clone(store), Arc::clone(&lim), Arc::clone(&tally));
            threads.push(std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("worker runtime");
                runtime.block_on(async move {
                    let mut tasks = Vec::new();
                    for _ in 0..TASKS_PER_WORKER {
                        let (store, lim, tally) =
                            (Arc::clone(&store), Arc::clone(&lim), Arc::clone(&tally));
                        tasks.push(tokio::spawn(async move {
                            tokio::time::sleep_until(start.into()).await;
                            while Instant::now() < end {
                                match store.check(&lim, "hot-key").await {
                                    Ok(d) if d.allowed => &tally.admitted,
                                    Ok(_) => &tally.denied,
                                    Err(Unavailable) => &tally.unavailable,
                                }
                                .fetch_add(1, Ordering::Relaxed);
                                // ~1000 checks/s per loop: 24 loops, ~24x the rate.
                                tokio::time::sleep(Duration::from_micros(500)).await;
                            }
                        }));
                    }
                    for task in tasks {
                        task.await.expect("request loop");
                    }
                });
            }));
        }
    }
    for thread in threads {
        thread.join().expect("worker thread");
    }

    let admitted = tally.admitted.load(Ordering::Relaxed);
    let denied = tally.denied.load(Ordering::Relaxed);
    let unavailable = tally.unavailable.load(Ordering::Relaxed);
    let requests = admitted + denied + unavailable;
    let calls: u64 = stores.iter().map(|s| s.redis_calls()).sum();
    let expected = f64::from(rate) * duration.as_secs_f64() + f64::from(burst);
    let error = (admitted as f64 - expected) / expected;
    println!(
        "3 instances, {rate}/s burst {burst} for {duration:?}: {requests} requests, \
         {admitted} admitted (expected {expected}, {:+.2}%), {denied} denied, \
         {unavailable} unavailable, {calls} redis round trips ({:.1} requests per trip)",
        error * 100.0,
        requests as f64 / calls as f64,
    );
    assert_eq!(unavailable, 0, "redis was up all along");
    assert!(
        requests as f64 > 5.0 * expected,
        "the load must be well above the limit: {requests} requests"
    );
    assert!(
        error.abs() <= 0.05,
        "admitted {admitted}, expected {expected} ({:+.2}%)",
        error * 100.0
    );
    assert!(
        calls * 5 < requests,
        "leases must spare redis most round trips: {calls} trips for {requests} requests"
    );
}

#[tokio::test]
async fn an_outage_fails_fast_and_recovery_needs_no_restart() {
    let mut redis = RedisServer::start();
    let control = Control::start();
    let store = control.store(&redis.url(), Duration::from_millis(200));
    let lim = limit("outage", 1000, Duration::from_secs(1), 1000);
    until_available(&store).await;
    for _ in 0..10 {
        assert!(store.check(&lim, "k").await.expect("up").allowed);
    }
    assert_eq!(store.errors(), 0);

    redis.kill();
    // Leased tokens may still serve a few requests; after that, every check fails.
    let outcome = tokio::time::timeout(Duration::from_secs(10), async {
        let mut last = Ok(());
        for _ in 0..100 {
            last = store.check(&lim, "k").await.map(|_| ());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        last
    })
    .await
    .expect("100 checks during an outage finish within 10 s");
    assert_eq!(outcome, Err(Unavailable));
    assert!(!store.available());
    assert!(store.errors() > 0);

    // While backing off, checks fail without waiting on the dead server.
    let errors = store.errors();
    let results = tokio::time::timeout(Duration::from_secs(10), async {
        let mut failed = 0;
        for _ in 0..100 {
            failed += usize::from(store.check(&lim, "k").await.is_err());
        }
        failed
    })
    .await
    .expect("100 back-to-back checks finish within 10 s");
    assert_eq!(results, 100);
    assert!(
        store.errors() - errors <= 2,
        "back-off keeps most checks away from redis: {} new errors",
        store.errors() - errors
    );

    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match store.check(&lim, "k").await {
            Ok(d) => {
                assert!(d.allowed, "a fresh bucket admits: {d:?}");
                break;
            }
            Err(Unavailable) => {
                assert!(Instant::now() < deadline, "checks never recovered");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    assert!(store.available());
}

#[tokio::test]
async fn redis_down_at_start_comes_up_later() {
    let mut redis = RedisServer::start();
    redis.kill();
    let control = Control::start();
    let began = Instant::now();
    let store = control.store(&redis.url(), Duration::from_millis(200));
    assert!(
        began.elapsed() < Duration::from_secs(1),
        "new never waits on redis"
    );
    let lim = limit("late", 100, Duration::from_secs(1), 100);
    assert_eq!(store.check(&lim, "k").await, Err(Unavailable));
    assert!(!store.available());

    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.check(&lim, "k").await.is_err() {
        assert!(Instant::now() < deadline, "checks never succeeded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(store.available());
}

#[tokio::test]
async fn keys_and_limits_are_independent() {
    let redis = RedisServer::start();
    let control = Control::start();
    let store = control.store(&redis.url(), Duration::from_millis(500));
    let a = limit("a", 1, Duration::from_secs(60), 2);
    let b = limit("b", 1, Duration::from_secs(60), 2);

    for _ in 0..2 {
        assert!(store.check(&a, "k1").await.expect("up").allowed);
    }
    assert!(!store.check(&a, "k1").await.expect("up").allowed);
    assert!(
        store.check(&a, "k2").await.expect("up").allowed,
        "another key"
    );
    assert!(
        store.check(&b, "k1").await.expect("up").allowed,
        "another limit"
    );
    assert!(store.check(&b, "k1").await.expect("up").allowed);
    assert!(!store.check(&b, "k1").await.expect("up").allowed);
    assert!(store.check(&a, "k2").await.expect("up").allowed);
    assert!(!store.check(&a, "k2").await.expect("up").allowed);
}

#[tokio::test]
async fn odd_keys_are_safe() {
    let redis = RedisServer::start();
    let control = Control::start();
    let store = control.store(&redis.url(), Duration::from_millis(500));
    let lim = limit("odd", 1, Duration::from_secs(60), 1);

    let huge = "x".repeat(1 << 20);
    let huge_too = format!("{}y", "x".repeat((1 << 20) - 1));
    let keys = [
        "",
        " ",
        "\0\r\n*1\r\n$4\r\nPING\r\n",
        "ключ🔑",
        "a:b:c",
        &huge,
        &huge_too,
    ];
    for key in keys {
        let first = store.check(&lim, key).await.expect("up");
        assert!(
            first.allowed,
            "first request of {:?}",
            &key[..key.len().min(16)]
        );
        let second = store.check(&lim, key).await.expect("up");
        assert!(
            !second.allowed,
            "second request of {:?}",
            &key[..key.len().min(16)]
        );
    }
    assert_eq!(store.errors(), 0);
}

#[tokio::test]
async fn a_stopped_control_runtime_fails_checks_instead_of_hanging() {
    let redis = RedisServer::start();
    let control = Control::start();
    let store = control.store(&redis.url(), Duration::from_millis(500));
    drop(control);
    let lim = limit("orphan", 100, Duration::from_secs(1), 100);
    let outcome = tokio::time::timeout(Duration::from_secs(10), store.check(&lim, "k"))
        .await
        .expect("a check whose round trip cannot run still returns");
    assert_eq!(outcome, Err(Unavailable));
}

/// Many requests for one key of a small limit (leased one token at a time) queue behind
/// each other's round trips; none may wait longer than the timeout in all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_never_waits_longer_than_the_timeout_in_all() {
    let redis = RedisServer::start();
    let control = Control::start();
    let store = control.store(&redis.url(), Duration::from_millis(2));
    until_available(&store).await;
    let limit = Arc::new(limit("queue", 1000, Duration::from_secs(60), 1000));
    let mut tasks = Vec::new();
    for _ in 0..500 {
        let (store, limit) = (store.clone(), limit.clone());
        tasks.push(tokio::spawn(async move { store.check(&limit, "k").await }));
    }
    let mut answered = 0;
    let mut fell_back = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => answered += 1,
            Err(Unavailable) => fell_back += 1,
        }
    }
    println!(
        "answered {answered}, fell back {fell_back}, late {}",
        store.late()
    );
    assert_eq!(answered + fell_back, 500);
    // 500 serial round trips cannot all fit in 2 ms: the rest fell back, either late
    // (queued behind other fetches) or because a round trip itself timed out.
    assert!(fell_back > 0);
    assert!(store.late() + store.errors() > 0);
}
