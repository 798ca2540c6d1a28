//! Chaos: the real binary in front of testkit backends that die, come back, fail, stall,
//! or all go away at once, and a SIGTERM under load.
//!
//! Every test starts its own backends and `steady serve` on free loopback ports, bounds
//! its load in requests and time, and stops everything it started. Timings are printed
//! as figures (run with `--nocapture` to see them), never asserted: a test waits for an
//! event with a generous deadline and then checks counts. A real process and real
//! sockets cannot run on tokio's paused clock, so these tests use wall time only to give
//! up, never to decide whether something was fast enough.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use steady_testkit::harness::{http_client, metric_sum, Load, Sample, SteadyProcess};
use steady_testkit::{Backend, Fault};

const BIN: &str = env!("CARGO_BIN_EXE_steady");

fn workdir(test: &str) -> PathBuf {
    std::env::temp_dir().join(format!("steady-chaos-{}-{test}", std::process::id()))
}

async fn start(test: &str, yaml: &str) -> SteadyProcess {
    SteadyProcess::start(BIN.as_ref(), &workdir(test), test, yaml)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

fn endpoints(backends: &[&Backend]) -> String {
    backends
        .iter()
        .map(|b| format!("{{address: '{}'}}", b.addr()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The user's config for scenarios 1, 2 and 4: active HTTP checks, passive outlier
/// detection, and retries of idempotent requests on connect failures, resets, 502, 503.
///
/// `passive_extra` adds fields to `health.passive` (flow style, with a leading comma).
fn resilient_config(backends: &[&Backend], retries: &str, passive_extra: &str) -> String {
    format!(
        "runtime: {{workers: 1}}
admin: {{bind: '{{admin}}'}}
listeners: [{{name: web, bind: '{{listen}}'}}]
routes:
  - name: api
    listener: web
    upstream: app
    timeout: 30s
    retries: {retries}
upstreams:
  - name: app
    balance: round-robin
    connect_timeout: 1s
    health:
      active:
        http: {{path: /healthz}}
        interval: 300ms
        timeout: 250ms
        healthy_threshold: 2
        unhealthy_threshold: 2
      passive: {{consecutive_failures: 3, max_ejection_percent: 50{passive_extra}}}
    endpoints: [{}]
",
        endpoints(backends)
    )
}

const RETRIES: &str = "{attempts: 3, on: [connect-failure, reset, 502, 503], backoff: 10ms}";

/// Polls `check` every 20 ms until it holds; panics with `what` after `limit`.
async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "gave up after {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn endpoint(upstreams: &serde_json::Value, addr: SocketAddr) -> &serde_json::Value {
    upstreams["upstreams"][0]["endpoints"]
        .as_array()
        .and_then(|eps| {
            eps.iter()
                .find(|e| e["address"] == serde_json::json!(addr.to_string()))
        })
        .unwrap_or(&serde_json::Value::Null)
}

/// Attempts steady sent that failed and were retried elsewhere: the requests that went
/// to a dead endpoint.
fn failed_attempts(metrics: &str) -> f64 {
    metric_sum(
        metrics,
        "steady_retries_total",
        &["reason=\"connect-failure\""],
    ) + metric_sum(metrics, "steady_retries_total", &["reason=\"reset\""])
        + metric_sum(metrics, "steady_retries_total", &["reason=\"status\""])
}

fn failures(samples: &[Sample]) -> Vec<String> {
    samples
        .iter()
        .filter(|s| !s.ok())
        .map(|s| match &s.result {
            Ok(r) => format!("{} {:?} {}", r.status, r.error, r.body),
            Err(e) => e.clone(),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_killed_mid_run_costs_no_request_and_returns_after_restart() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let mut c = Backend::start("c").await;
    // A little service time, so requests are in flight on c when it dies.
    for backend in [&a, &b, &c] {
        backend.set_fault(Fault::Delay(Duration::from_millis(5)));
    }
    let c_addr = c.addr();
    let steady = start("kill", &resilient_config(&[&a, &b, &c], RETRIES, "")).await;

    let load = Load::start(steady.addr, "/work", 3, 20_000, Duration::from_secs(40));
    assert!(
        load.wait_completed(150).await,
        "warm-up load did not finish"
    );

    // 1. Kill c hard, under load.
    let before = failed_attempts(&steady.metrics().await);
    c.kill().await;
    let killed_at = load.elapsed();
    eventually(
        Duration::from_secs(15),
        "c taken out of rotation",
        || async { endpoint(&steady.upstreams().await, c_addr)["available"] == false },
    )
    .await;
    let out_at = load.elapsed();
    // Attempts to c stop: the retry counter stays still while 150 more requests pass.
    let (mut last, mut last_change, mut still_since) = (before, killed_at, load.completed());
    loop {
        let now = failed_attempts(&steady.metrics().await);
        if now != last {
            (last, last_change, still_since) = (now, load.elapsed(), load.completed());
        } else if load.completed() >= still_since + 150 {
            break;
        }
        assert!(
            load.elapsed() < killed_at + Duration::from_secs(20),
            "steady kept trying the dead endpoint"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let to_dead = last - before;
    let logs = steady.logs();
    assert!(
        logs.contains("endpoint ejected") || logs.contains("unhealthy"),
        "no log says c went out: {logs}"
    );

    // 2. Restart c on the same port: it gets traffic again.
    let c = Backend::start_on("c", c_addr)
        .await
        .expect("rebind c's port");
    let restarted_at = load.elapsed();
    let first_c = loop {
        let samples = load.samples();
        if let Some(s) = samples
            .iter()
            .find(|s| s.sent > restarted_at && s.backend() == Some("c"))
        {
            break s.done;
        }
        assert!(
            load.elapsed() < restarted_at + Duration::from_secs(15),
            "restarted c got no traffic: {:?}",
            steady.upstreams().await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let samples = load.stop().await;

    let failed = failures(&samples);
    println!(
        "kill: {} requests, {} failed; {to_dead} attempts went to the dead endpoint; \
         out of rotation {:?} after the kill, last failed attempt seen {:?} after it; \
         restarted endpoint served again {:?} after the restart",
        samples.len(),
        failed.len(),
        out_at - killed_at,
        last_change.saturating_sub(killed_at),
        first_c - restarted_at,
    );
    assert!(failed.is_empty(), "failed requests: {failed:?}");
    assert!(c.hits() > 0);
    for name in ["a", "b", "c"] {
        assert!(samples.iter().any(|s| s.backend() == Some(name)), "{name}");
    }
}

/// Scenario 3: passive detection only, four endpoints, at most half ejected.
fn outlier_config(backends: &[&Backend]) -> String {
    format!(
        "runtime: {{workers: 1}}
admin: {{bind: '{{admin}}'}}
listeners: [{{name: web, bind: '{{listen}}'}}]
routes:
  - name: api
    listener: web
    upstream: app
    timeout: 30s
    retries: {{attempts: 3, on: [connect-failure, reset, 5xx, timeout], per_try_timeout: 500ms, backoff: 10ms}}
upstreams:
  - name: app
    balance: round-robin
    health:
      passive:
        consecutive_failures: 3
        base_ejection: 30s
        max_ejection_percent: 50
    endpoints: [{}]
",
        endpoints(backends)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_500_backend_and_a_staller_are_ejected_and_max_ejection_percent_holds() {
    let good = Backend::start("good").await;
    let flaky = Backend::start("flaky").await;
    let erring = Backend::start("erring").await;
    erring.set_fault(Fault::Status(500));
    let staller = Backend::start("staller").await;
    staller.set_fault(Fault::Stall);
    let steady = start(
        "eject",
        &outlier_config(&[&good, &flaky, &erring, &staller]),
    )
    .await;

    let load = Load::start(steady.addr, "/work", 2, 5_000, Duration::from_secs(40));
    for (who, addr) in [("erring", erring.addr()), ("staller", staller.addr())] {
        eventually(
            Duration::from_secs(15),
            &format!("{who} ejected"),
            || async {
                let ups = steady.upstreams().await;
                let ep = endpoint(&ups, addr);
                ep["ejected"] == true && ep["available"] == false
            },
        )
        .await;
        println!("eject: {who} ejected {:?} into the load", load.elapsed());
    }
    let logs = steady.logs();
    for addr in [erring.addr(), staller.addr()] {
        assert!(
            logs.lines()
                .any(|l| l.contains("endpoint ejected") && l.contains(&addr.to_string())),
            "no ejection log for {addr}: {logs}"
        );
    }

    // A third endpoint fails: ejecting it would pass 50 %, so it stays in.
    flaky.set_fault(Fault::Status(500));
    let seen = load.completed();
    assert!(load.wait_completed(seen + 100).await);
    let metrics = steady.metrics().await;
    let ups = steady.upstreams().await;
    let samples = load.stop().await;
    assert_eq!(metric_sum(&metrics, "steady_endpoint_ejected", &[]), 2.0);
    assert_eq!(endpoint(&ups, flaky.addr())["ejected"], false, "{ups}");
    assert!(
        steady
            .logs()
            .contains("ejection skipped: max_ejection_percent reached"),
        "no log of the skipped ejection"
    );
    assert!(samples.iter().any(|s| s.backend() == Some("good")));
}

/// Kills both endpoints of the resilient config, sends 20 requests, restarts one.
/// Returns the statuses and `x-steady-error`s seen while all were down.
async fn all_down(test: &str, passive_extra: &str) -> Vec<(u16, Option<String>)> {
    let mut a = Backend::start("a").await;
    let mut b = Backend::start("b").await;
    let steady = start(test, &resilient_config(&[&a, &b], RETRIES, passive_extra)).await;
    let client = http_client();
    let get = |path: &'static str| {
        let client = client.clone();
        let addr = steady.addr;
        async move { steady_testkit::harness::get(&client, addr, path, Duration::from_secs(10)).await }
    };
    assert_eq!(get("/").await.unwrap().status, 200);

    let (a_addr, b_addr) = (a.addr(), b.addr());
    a.kill().await;
    b.kill().await;
    eventually(Duration::from_secs(15), "both endpoints out", || async {
        let ups = steady.upstreams().await;
        endpoint(&ups, a_addr)["available"] == false && endpoint(&ups, b_addr)["available"] == false
    })
    .await;
    // The route allows 30 s; an answer inside the 10 s client timeout means no hang.
    let mut slowest = Duration::ZERO;
    let mut seen = Vec::new();
    for _ in 0..20 {
        let sent = Instant::now();
        let reply = get("/").await.expect("an answer, not a hang");
        slowest = slowest.max(sent.elapsed());
        let body: serde_json::Value = serde_json::from_str(&reply.body).expect("JSON body");
        assert!(body["error"].is_string(), "{body}");
        assert_eq!(body["status"], reply.status, "{body}");
        seen.push((reply.status, reply.error));
    }
    println!(
        "{test}: 20 requests while all down, first answer {:?}, slowest in {slowest:?}",
        seen[0]
    );

    let b = Backend::start_on("b", b_addr).await.expect("rebind b");
    let restarted = Instant::now();
    eventually(Duration::from_secs(15), "service resumes", || async {
        get("/").await.is_ok_and(|r| r.status == 200)
    })
    .await;
    println!(
        "{test}: 200 again {:?} after one endpoint returned",
        restarted.elapsed()
    );
    assert!(b.hits() > 0);
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_endpoint_down_and_no_panic_routing_clients_get_a_fast_503() {
    let seen = all_down("alldown-503", ", panic_threshold: 0").await;
    for (status, error) in seen {
        assert_eq!(status, 503);
        assert_eq!(error.as_deref(), Some("no-endpoint"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_endpoint_down_the_default_panic_threshold_still_gives_a_fast_503() {
    // Below `panic_threshold` (50 % by default) steady ignores ejections, but never an
    // endpoint its active checks see down: with all of them down, no endpoint is left.
    let seen = all_down("alldown-panic", "").await;
    for (status, error) in seen {
        assert_eq!(status, 503);
        assert_eq!(error.as_deref(), Some("no-endpoint"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_finishes_in_flight_requests_and_readyz_flips_first() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let yaml = format!(
        "runtime: {{workers: 1, drain_delay: 1s, drain_timeout: 10s}}
admin: {{bind: '{{admin}}'}}
listeners: [{{name: web, bind: '{{listen}}'}}]
routes: [{{name: api, listener: web, upstream: app, timeout: 30s}}]
upstreams: [{{name: app, endpoints: [{}]}}]
",
        endpoints(&[&a, &b])
    );
    let mut steady = start("sigterm", &yaml).await;
    // Each request takes 1.5 s, longer than the drain delay: requests sent just before
    // /readyz flips are still in flight when steady stops accepting.
    let load = Load::start(
        steady.addr,
        "/delay/1500",
        4,
        2_000,
        Duration::from_secs(30),
    );
    assert!(load.wait_completed(4).await);
    steady.sigterm();
    // As a load balancer would: stop sending once /readyz says so.
    eventually(Duration::from_secs(5), "/readyz answers 503", || async {
        steady
            .admin_get("/readyz")
            .await
            .is_ok_and(|r| r.status == 503)
    })
    .await;
    load.pause();
    let flipped = load.elapsed();
    let in_flight = load.sent() as usize - load.completed();
    let samples = load.stop().await;
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = steady.try_exit() {
            break status;
        }
        assert!(Instant::now() < deadline, "steady did not exit");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let failed = failures(&samples);
    println!(
        "sigterm: {} requests, {} failed, {in_flight} in flight when /readyz flipped ({flipped:?} into the load)",
        samples.len(),
        failed.len()
    );
    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(status.code(), Some(0));
    let logs = steady.logs();
    let not_ready = logs
        .find("not ready, still serving")
        .expect("drain delay logged");
    let drained = logs.find("drained all connections").expect("drain logged");
    assert!(not_ready < drained, "{logs}");
}
