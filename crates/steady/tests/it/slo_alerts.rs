//! End to end: real traffic through the real binary, a fault injected in the backend,
//! the SLO's page alert delivered to a real Alertmanager (Debian's
//! `prometheus-alertmanager`), then resolved once the errors stop.
//!
//! Wall time is used only to report the figures; every wait is a bounded poll.

use std::time::{Duration, Instant};

use steady_testkit::alertmanager::Alertmanager;
use steady_testkit::harness::{metric_sum, Load, SteadyProcess};
use steady_testkit::{Backend, Fault};

const BIN: &str = env!("CARGO_BIN_EXE_steady");
const SLO: &str = "checkout-availability";

/// Polls `f` every 100 ms, at most `polls` times, until it returns true.
async fn wait_until<F, Fut>(polls: usize, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..polls {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fault_pages_through_alertmanager_and_resolves_once() {
    let am = Alertmanager::start().await;
    let backend = Backend::start("checkout").await;
    let dir = std::env::temp_dir().join(format!("steady-slo-e2e-{}", std::process::id()));
    let yaml = format!(
        "admin: {{bind: \"{{admin}}\"}}
listeners: [{{name: web, bind: \"{{listen}}\"}}]
routes: [{{name: checkout, listener: web, upstream: app}}]
upstreams: [{{name: app, endpoints: [{{address: {backend}}}]}}]
slos:
  - name: {SLO}
    routes: [checkout]
    objective: 99.9%
    min_events: 50
    no_traffic: off
    rules: [{{severity: page, long_window: 1h, short_window: 5m, factor: 14.4}}]
alerts:
  page: {{severity: critical, notify: [am], labels: {{team: payments}}}}
notifiers:
  - {{name: am, type: alertmanager, url: \"{am}\"}}
slo_state: {{path: {state}}}
",
        backend = backend.addr(),
        am = am.url(),
        state = dir.join("slo-state.json").display(),
    );
    let steady = SteadyProcess::start(BIN.as_ref(), &dir, "slo", &yaml)
        .await
        .unwrap();

    // A healthy start: no alert.
    let load = Load::start(steady.addr, "/ok", 2, 300, Duration::from_secs(30));
    assert!(load.wait_completed(300).await);
    load.stop().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(am.active(SLO).await.is_empty(), "{}", steady.logs());

    // The fault: the backend answers 500 to 100 requests.
    backend.set_fault(Fault::Status(500));
    let fault = Instant::now();
    let load = Load::start(steady.addr, "/ok", 2, 100, Duration::from_secs(30));
    assert!(load.wait_completed(100).await);
    let failed = load.stop().await.iter().filter(|s| !s.ok()).count();
    assert_eq!(failed, 100);
    let paged = wait_until(300, || async { !am.active(SLO).await.is_empty() }).await;
    assert!(paged, "no page reached Alertmanager:\n{}", steady.logs());
    let detect = fault.elapsed();
    let alert = am.active(SLO).await.remove(0);
    let labels = &alert["labels"];
    assert_eq!(labels["alertname"], "SteadySLOBurnRate");
    assert_eq!(labels["alert"], "page-1h-5m");
    assert_eq!(labels["severity"], "critical");
    assert_eq!(labels["team"], "payments");
    assert_eq!(labels["routes"], "checkout");
    assert!(alert["annotations"]["summary"]
        .as_str()
        .unwrap()
        .contains("error budget burning"));

    // Recovery: good traffic until the 5m window's burn rate falls under 14.4
    // (100 bad requests need about 7,000 good ones), then the resolve.
    backend.set_fault(Fault::None);
    let recovered = Instant::now();
    let load = Load::start(steady.addr, "/ok", 4, 60_000, Duration::from_secs(120));
    let resolved = wait_until(1200, || async { am.active(SLO).await.is_empty() }).await;
    let resolve = recovered.elapsed();
    let good = load.stop().await.len();
    assert!(resolved, "the page never resolved:\n{}", steady.logs());

    // Exactly one episode: fired once, resolved once.
    let slos = steady.admin_get("/api/slos").await.unwrap();
    let slos: serde_json::Value = serde_json::from_str(&slos.body).unwrap();
    let history = slos[0]["history"].as_array().unwrap();
    let transitions: Vec<&str> = history
        .iter()
        .rev()
        .filter(|e| e["alert"] == "page-1h-5m")
        .map(|e| e["transition"].as_str().unwrap())
        .collect();
    assert_eq!(transitions, ["firing", "resolved"], "{slos:#}");
    let metrics = steady.metrics().await;
    let sent = metric_sum(
        &metrics,
        "steady_notifications_total",
        &["notifier=\"am\"", "result=\"sent\""],
    );
    assert!(sent >= 2.0, "{metrics}");
    eprintln!(
        "SLO e2e: 100 errors after 300 good requests; page visible in Alertmanager after {} ms; \
         resolved in Alertmanager {} ms after the fault ended ({good} good requests sent)",
        detect.as_millis(),
        resolve.as_millis()
    );
}
