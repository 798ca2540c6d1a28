//! SLOs in a running gateway: requests feed the SLIs, burn-rate alerts fire and show
//! on `/api/slos`, `/api/events` and `/metrics`, and the state file carries the
//! budget across a restart.

use std::time::Duration;

use crate::common::{self, get, get_json, start_yaml};
use serde_json::Value;
use steady_testkit::Backend;

/// A fresh directory under the system's temp dir.
fn temp_dir(name: &str) -> std::path::PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let dir = std::env::temp_dir().join(format!("steady-{name}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn config(backend: std::net::SocketAddr, state: &std::path::Path) -> String {
    format!(
        "listeners: [{{name: web, bind: 127.0.0.1:0}}]
routes: [{{name: api, listener: web, upstream: app}}]
upstreams: [{{name: app, endpoints: [{{address: {backend}}}]}}]
slos:
  - {{name: avail, routes: [api], objective: 99.9%, min_events: 10}}
  - {{name: fast, routes: [api], objective: 99%, sli: {{latency_below: 30ms}}, min_events: 10}}
  - {{name: other, routes: [api], objective: 99%, sli: {{availability: {{errors: [5xx, 404]}}}}}}
slo_state: {{path: {}, save_every: 1s}}
",
        state.display()
    )
}

/// Polls `/api/slos` until `done` holds for the SLO named `name` (bounded: 15 s).
async fn wait_slo(admin: std::net::SocketAddr, name: &str, done: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..150 {
        let (status, v) = get_json(admin, "/api/slos").await;
        assert_eq!(status, 200);
        if let Some(slo) = v.as_array().unwrap().iter().find(|s| s["name"] == name) {
            if done(slo) {
                return slo.clone();
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, v) = get_json(admin, "/api/slos").await;
    panic!("SLO {name} never reached the expected state: {v:#}");
}

fn window_total(slo: &Value, secs: u64) -> u64 {
    slo["status"]["windows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["window_secs"] == secs)
        .map_or(0, |w| w["total"].as_u64().unwrap())
}

#[tokio::test]
async fn errors_page_and_show_everywhere_then_state_survives_a_restart() {
    let dir = temp_dir("slo");
    let state = dir.join("slo-state.json");
    let backend = Backend::start("a").await;
    let admin = start_yaml(&config(backend.addr(), &state)).await;

    for _ in 0..100 {
        assert_eq!(get(admin.web, "/ok").await.0, 200);
    }
    for _ in 0..10 {
        assert_eq!(get(admin.web, "/status/500").await.0, 500);
    }
    for _ in 0..5 {
        assert_eq!(get(admin.web, "/delay/80").await.0, 200);
    }
    assert_eq!(get(admin.web, "/status/404").await.0, 404);

    // 10 of 116 failed: burn rate ~86 over every window, above 14.4: the page fires.
    let avail = wait_slo(admin.admin, "avail", |s| s["status"]["worst"] == "page").await;
    assert_eq!(avail["events_total"], 116);
    assert_eq!(avail["bad_events_total"], 10);
    assert_eq!(window_total(&avail, 300), 116);
    assert!(avail["status"]["budget_remaining"].as_f64().unwrap() < 0.0);
    let history = avail["history"].as_array().unwrap();
    assert!(history
        .iter()
        .any(|e| e["alert"] == "page-1h-5m" && e["transition"] == "firing"));
    assert_eq!(avail["report"]["period"]["met"], false);
    // The latency SLO counts the 5 slow requests; the custom one counts the 404 too.
    let fast = wait_slo(admin.admin, "fast", |s| s["bad_events_total"] == 5).await;
    assert_eq!(fast["events_total"], 116);
    let other = wait_slo(admin.admin, "other", |s| s["bad_events_total"] == 11).await;
    // Its default min_events (100) is met too; 11 of 116 is far above 1% of budget.
    assert_eq!(other["events_total"], 116);

    let (status, one) = get_json(admin.admin, "/api/slos/avail").await;
    assert_eq!(status, 200);
    assert_eq!(one["name"], "avail");
    let (status, missing) = get_json(admin.admin, "/api/slos/nope").await;
    assert_eq!(status, 404);
    assert!(missing["error"].as_str().unwrap().contains("nope"));

    let (_, events) = get_json(admin.admin, "/api/events").await;
    assert!(
        events["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "alert" && e["message"].as_str().unwrap().contains("avail")),
        "{events:#}"
    );

    let (_, metrics) = get(admin.admin, "/metrics").await;
    for line in [
        "steady_slo_events_total{slo=\"avail\"} 116",
        "steady_slo_bad_events_total{slo=\"avail\"} 10",
        "steady_slo_objective_ratio{slo=\"avail\"} 0.999",
        "steady_slo_alert_firing{slo=\"avail\",alert=\"page-1h-5m\",severity=\"page\"} 1",
        "steady_slo_burn_rate_ratio{slo=\"avail\",window=\"5m\"}",
        // The latency SLO's threshold is a bucket bound.
        "steady_request_duration_seconds_bucket{le=\"0.03\",route=\"api\",upstream=\"app\"}",
    ] {
        assert!(metrics.contains(line), "no {line:?} in:\n{metrics}");
    }

    // Shutdown saves; a new gateway on the same state file starts with the budget spent.
    assert!(admin.gateway.shutdown(Duration::from_secs(1)).await);
    let saved: Value = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    assert!(saved["slos"]["avail"].is_object(), "{saved:#}");
    drop(admin);
    let again = start_yaml(&config(backend.addr(), &state)).await;
    let avail = wait_slo(again.admin, "avail", |s| window_total(s, 300) == 116).await;
    assert_eq!(avail["events_total"], 0, "a new process counts from zero");
    assert!(avail["status"]["budget_remaining"].as_f64().unwrap() < 0.0);
    assert_eq!(
        avail["status"]["worst"], "page",
        "the alert state is kept too"
    );
}

#[tokio::test]
async fn a_corrupt_state_file_starts_empty_and_is_replaced() {
    let dir = temp_dir("slo");
    let state = dir.join("slo-state.json");
    std::fs::write(&state, b"{not json").unwrap();
    let backend = Backend::start("a").await;
    let admin = start_yaml(&config(backend.addr(), &state)).await;
    for _ in 0..3 {
        assert_eq!(get(admin.web, "/ok").await.0, 200);
    }
    let avail = wait_slo(admin.admin, "avail", |s| window_total(s, 300) == 3).await;
    assert_eq!(avail["status"]["worst"], Value::Null);
    // The next save replaces the corrupt file with good state.
    for _ in 0..50 {
        if let Ok(bytes) = std::fs::read(&state) {
            if serde_json::from_slice::<Value>(&bytes).is_ok() {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the state file was never rewritten");
}

#[tokio::test]
async fn without_slos_the_api_is_empty_and_nothing_is_written() {
    let admin = common::start().await;
    let (status, v) = get_json(admin.admin, "/api/slos").await;
    assert_eq!(status, 200);
    assert_eq!(v, serde_json::json!([]));
    let (_, metrics) = get(admin.admin, "/metrics").await;
    assert!(!metrics.contains("steady_slo_"));
}

#[tokio::test]
async fn a_notifier_whose_key_is_missing_refuses_the_config_without_showing_keys() {
    let yaml = "listeners: [{name: web, bind: 127.0.0.1:0}]
routes: [{name: api, listener: web, upstream: app}]
upstreams: [{name: app, endpoints: [{address: 127.0.0.1:9}]}]
slos: [{name: a, routes: [api], objective: 99%}]
alerts: {page: {severity: critical, notify: [pd]}}
notifiers: [{name: pd, type: pagerduty, routing_key_env: STEADY_TEST_NO_SUCH_KEY, url: \"http://127.0.0.1:9\"}]
";
    let config = steady_config::parse(yaml, "<test>").unwrap();
    let err = steady_proxy::Gateway::start(&config)
        .await
        .err()
        .expect("a missing key refuses the config")
        .to_string();
    assert!(err.contains("pd"), "{err}");
    assert!(err.contains("STEADY_TEST_NO_SUCH_KEY"), "{err}");

    // Set: the gateway starts, and a reload that drops the key's variable is refused
    // while the running notifiers stay.
    std::env::set_var("STEADY_TEST_KEY_SET", "secret-value-123");
    let yaml = yaml.replace("STEADY_TEST_NO_SUCH_KEY", "STEADY_TEST_KEY_SET");
    let admin = start_yaml(&yaml).await;
    let bad = steady_config::parse(
        &yaml.replace("STEADY_TEST_KEY_SET", "STEADY_TEST_NO_SUCH_KEY"),
        "<test>",
    )
    .unwrap();
    let refused = admin.gateway.reload(&bad).await.expect_err("refused");
    let message = refused.to_string();
    assert!(message.contains("STEADY_TEST_NO_SUCH_KEY"), "{message}");
    assert!(!message.contains("secret-value-123"));
    let (_, metrics) = get(admin.admin, "/metrics").await;
    assert!(!metrics.contains("secret-value-123"));
}
