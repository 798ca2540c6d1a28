//! `promtool check metrics` (Debian's prometheus package) finds nothing to complain
//! about in steady's `/metrics`, with every kind of series present: routes, failures,
//! endpoints, rate limits, the Redis fallback and the concurrency limit.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::common::{get, start_yaml};
use steady_testkit::Backend;

#[tokio::test]
async fn promtool_finds_nothing_wrong_with_the_metrics() {
    let backend = Backend::start("a").await;
    let yaml = format!(
        "listeners: [{{name: web, bind: 127.0.0.1:0}}]
routes:
  - name: api
    listener: web
    upstream: app
    rate_limit:
      - {{key: client_ip, rate: 2/m, burst: 2}}
      - {{key: route, rate: 1/m, scope: global, mode: shadow}}
redis: {{url: \"redis://{dead}\", on_failure: local}}
upstreams:
  - name: app
    concurrency: {{}}
    circuit_breakers: {{max_connections: 10, max_requests: 10}}
    health: {{passive: {{consecutive_failures: 3}}}}
    endpoints: [{{address: {backend}}}, {{address: {dead}}}]
slos:
  - {{name: api-availability, routes: [api], objective: 99.9%, anomaly: {{}}}}
  - {{name: api-latency, routes: [api], objective: 99%, sli: {{latency_below: 300ms}}}}
slo_state: {{path: {state}}}
",
        backend = backend.addr(),
        dead = steady_testkit::dead_addr(),
        state = std::env::temp_dir()
            .join(format!("steady-promtool-{}.json", std::process::id()))
            .display(),
    );
    let steady = start_yaml(&yaml).await;
    for _ in 0..4 {
        get(steady.addr, "/").await;
    }
    let text = steady.gateway.metrics().encode_prometheus();
    assert!(text.contains("steady_rate_limited_total"), "{text}");
    assert!(text.contains("steady_concurrency_limit"), "{text}");
    assert!(text.contains("steady_circuit_breaker_limit"), "{text}");
    assert!(text.contains("steady_slo_burn_rate_ratio"), "{text}");

    promtool_check(&text);
}

/// Runs `promtool check metrics` on `text` and fails on any complaint.
fn promtool_check(text: &str) {
    let mut promtool = match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => {
            panic!("promtool not found ({e}): install Debian's prometheus package (.ci/run does)")
        }
    };
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && report.trim().is_empty(),
        "promtool check metrics:\n{report}\n--- metrics ---\n{text}"
    );
}

#[tokio::test]
async fn per_endpoint_series_can_be_summed_per_upstream() {
    let backend = Backend::start("a").await;
    let config = |per_endpoint: bool| {
        format!(
            "metrics: {{per_endpoint: {per_endpoint}}}
listeners: [{{name: web, bind: 127.0.0.1:0}}]
routes: [{{name: api, listener: web, upstream: app}}]
upstreams:
  - name: app
    health: {{active: {{tcp: {{}}, interval: 50ms, timeout: 40ms}}}}
    endpoints: [{{address: {}}}]
",
            backend.addr()
        )
    };
    let steady = start_yaml(&config(true)).await;
    for _ in 0..3 {
        get(steady.addr, "/").await;
    }
    let endpoint = backend.addr().to_string();
    let mut text = String::new();
    for _ in 0..100 {
        text = steady.gateway.metrics().encode_prometheus();
        if text.contains(&format!(
            "steady_health_checks_total{{upstream=\"app\",endpoint=\"{endpoint}\",result=\"pass\"}}"
        )) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    for want in [
        format!("steady_endpoint_attempts_total{{upstream=\"app\",endpoint=\"{endpoint}\",outcome=\"success\"}} 3"),
        format!("steady_endpoint_latency_ewma_seconds{{upstream=\"app\",endpoint=\"{endpoint}\"}}"),
        format!("steady_health_checks_total{{upstream=\"app\",endpoint=\"{endpoint}\",result=\"pass\"}}"),
        "steady_upstream_endpoints{upstream=\"app\"} 1".to_string(),
    ] {
        assert!(text.contains(&want), "missing {want}:\n{text}");
    }
    promtool_check(&text);

    // Large fleets: no endpoint label anywhere, the same signals per upstream.
    steady
        .gateway
        .reload(&steady_config::parse(&config(false), "<test>").unwrap())
        .await
        .unwrap();
    let text = steady.gateway.metrics().encode_prometheus();
    assert!(!text.contains("endpoint=\""), "{text}");
    assert!(
        text.contains("steady_upstream_attempts_total{upstream=\"app\",outcome=\"success\"} 3"),
        "{text}"
    );
    assert!(
        text.contains("steady_upstream_endpoints_available{upstream=\"app\"} 1"),
        "{text}"
    );
    promtool_check(&text);
}
