//! The admit phase end to end: rate limits answer 429 with `Retry-After` and the IETF
//! `RateLimit` headers, shadow limits only count, trusted proxies decide the client IP,
//! and the adaptive concurrency limit sheds with 503 by priority.

use std::time::Duration;

use crate::common::{get, send, start_yaml, Answer};
use bytes::Bytes;
use http_body_util::Full;
use steady_testkit::Backend;

fn config(backend: std::net::SocketAddr, route_extra: &str, upstream_extra: &str) -> String {
    format!(
        "listeners:
  - name: web
    bind: 127.0.0.1:0
    trusted_proxies: [127.0.0.0/8]
routes:
  - name: api
    listener: web
    upstream: app
    timeout: 5s
{route_extra}
upstreams:
  - name: app
    endpoints: [{{address: {backend}}}]
{upstream_extra}
"
    )
}

async fn get_with(addr: std::net::SocketAddr, path: &str, headers: &[(&str, &str)]) -> Answer {
    let mut req = http::Request::get(format!("http://{addr}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    send(req.body(Full::new(Bytes::new())).unwrap()).await
}

#[tokio::test]
async fn over_a_local_limit_answers_429_with_retry_after_and_ratelimit_headers() {
    let backend = Backend::start("a").await;
    let yaml = config(
        backend.addr(),
        "    rate_limit:\n      - {key: client_ip, rate: 1/m, burst: 3, name: per-ip}",
        "",
    );
    let steady = start_yaml(&yaml).await;

    for remaining in [2, 1, 0] {
        let a = get(steady.addr, "/").await;
        assert_eq!(a.status, 200);
        assert_eq!(a.headers["ratelimit-policy"], "\"per-ip\";q=1;w=60");
        let state = a.headers["ratelimit"].to_str().unwrap();
        assert!(
            state.starts_with(&format!("\"per-ip\";r={remaining};t=")),
            "{state}"
        );
    }
    let refused = get(steady.addr, "/").await;
    assert_eq!(refused.status, 429);
    assert_eq!(refused.headers["x-steady-error"], "rate-limited");
    assert_eq!(refused.json()["error"], "rate-limited");
    let retry: u64 = refused.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "retry-after {retry}");
    assert!(refused.headers["ratelimit"]
        .to_str()
        .unwrap()
        .starts_with("\"per-ip\";r=0;t="));
    assert!(refused.headers.contains_key("x-request-id"));
    assert_eq!(
        backend.hits(),
        3,
        "the refused request never reached the backend"
    );

    let metrics = steady.gateway.metrics().encode();
    assert!(
        metrics.contains(
            "steady_rate_limited_total{route=\"api\",limit=\"per-ip\",scope=\"local\",mode=\"enforce\"} 1"
        ),
        "{metrics}"
    );
    assert!(metrics.contains(
        "steady_requests_total{route=\"api\",upstream=\"app\",method=\"GET\",code=\"4xx\"} 1"
    ));
}

#[tokio::test]
async fn keys_from_headers_and_forwarded_clients_get_their_own_buckets() {
    let backend = Backend::start("a").await;
    let yaml = config(
        backend.addr(),
        "    rate_limit:\n      - {key: \"client_ip+header:x-api-key\", rate: 1/m, burst: 1}",
        "",
    );
    let steady = start_yaml(&yaml).await;
    let first = |key: &'static str, xff: &'static str| {
        let addr = steady.addr;
        async move { get_with(addr, "/", &[("x-api-key", key), ("x-forwarded-for", xff)]).await }
    };
    assert_eq!(first("k1", "192.0.2.1").await.status, 200);
    assert_eq!(first("k1", "192.0.2.1").await.status, 429);
    // Another API key, same client: its own bucket.
    assert_eq!(first("k2", "192.0.2.1").await.status, 200);
    // Same key from another client behind the trusted proxy (127.0.0.1): its own bucket.
    assert_eq!(first("k1", "192.0.2.2").await.status, 200);
    // A spoofed hop in front of the real client does not change who the client is.
    assert_eq!(first("k1", "6.6.6.6, 192.0.2.2").await.status, 429);
}

#[tokio::test]
async fn an_untrusted_peer_cannot_pick_its_client_ip() {
    let backend = Backend::start("a").await;
    let yaml = config(
        backend.addr(),
        "    rate_limit:\n      - {key: client_ip, rate: 1/m, burst: 1}",
        "",
    )
    .replace(
        "trusted_proxies: [127.0.0.0/8]",
        "trusted_proxies: [10.0.0.0/8]",
    );
    let steady = start_yaml(&yaml).await;
    assert_eq!(
        get_with(steady.addr, "/", &[("x-forwarded-for", "192.0.2.1")])
            .await
            .status,
        200
    );
    // A fresh X-Forwarded-For from an untrusted peer is ignored: same bucket.
    assert_eq!(
        get_with(steady.addr, "/", &[("x-forwarded-for", "192.0.2.9")])
            .await
            .status,
        429
    );
}

#[tokio::test]
async fn shadow_limits_count_but_let_requests_through() {
    let backend = Backend::start("a").await;
    let yaml = config(
        backend.addr(),
        "    rate_limit:\n      - {key: route, rate: 1/m, burst: 1, mode: shadow, name: trial}",
        "",
    );
    let steady = start_yaml(&yaml).await;
    for _ in 0..4 {
        let a = get(steady.addr, "/").await;
        assert_eq!(a.status, 200);
        assert!(
            !a.headers.contains_key("ratelimit"),
            "shadow limits stay invisible"
        );
    }
    let metrics = steady.gateway.metrics().encode();
    assert!(
        metrics.contains(
            "steady_rate_limited_total{route=\"api\",limit=\"trial\",scope=\"local\",mode=\"shadow\"} 3"
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn limits_are_checked_in_order_and_the_first_refusal_wins() {
    let backend = Backend::start("a").await;
    let yaml = config(
        backend.addr(),
        "    rate_limit:
      - {key: route, rate: 100/s, burst: 100, name: wide}
      - {key: path, rate: 1/m, burst: 1, name: narrow}",
        "",
    );
    let steady = start_yaml(&yaml).await;
    let a = get(steady.addr, "/x").await;
    assert_eq!(a.status, 200);
    // The tightest limit is the one advertised.
    assert!(a.headers["ratelimit"]
        .to_str()
        .unwrap()
        .starts_with("\"narrow\";r=0"));
    assert_eq!(
        get(steady.addr, "/y").await.status,
        200,
        "paths are separate keys"
    );
    let refused = get(steady.addr, "/x").await;
    assert_eq!(refused.status, 429);
    assert_eq!(refused.headers["ratelimit-policy"], "\"narrow\";q=1;w=60");
}

#[tokio::test]
async fn a_saturated_upstream_sheds_with_503_and_retry_after() {
    let backend = Backend::start("slow").await;
    let yaml = config(
        backend.addr(),
        "",
        "    concurrency: {min_limit: 1, initial_limit: 1, max_limit: 1, queue_size: 0}",
    );
    let steady = start_yaml(&yaml).await;
    let addr = steady.addr;
    let slow = tokio::spawn(async move { get(addr, "/delay/600").await });
    // Wait until the slow request holds the only slot.
    let limiter = steady.gateway.upstreams()[0].concurrency.clone().unwrap();
    for _ in 0..200 {
        if limiter.in_flight() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(limiter.in_flight(), 1);
    let shed = get(addr, "/").await;
    assert_eq!(shed.status, 503);
    assert_eq!(shed.headers["x-steady-error"], "overload");
    assert!(shed.headers.contains_key("retry-after"));
    assert_eq!(
        slow.await.unwrap().status,
        200,
        "the admitted request is not hurt"
    );
    assert_eq!(limiter.in_flight(), 0, "the slot came back");
    assert_eq!(get(addr, "/").await.status, 200);

    let metrics = steady.gateway.metrics().encode();
    assert!(
        metrics.contains("steady_concurrency_limit{upstream=\"app\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("steady_requests_shed_total{upstream=\"app\",priority=\"normal\",reason=\"queue-full\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("steady_upstream_saturation{upstream=\"app\"}"));
}

#[tokio::test]
async fn critical_requests_wait_for_a_slot_while_sheddable_ones_are_shed() {
    let backend = Backend::start("slow").await;
    let yaml = config(
        backend.addr(),
        "    priority: normal\n    priority_header: x-steady-priority",
        "    concurrency: {min_limit: 1, initial_limit: 1, max_limit: 1, queue_size: 4, queue_timeout: 5s}",
    );
    let steady = start_yaml(&yaml).await;
    let addr = steady.addr;
    let limiter = steady.gateway.upstreams()[0].concurrency.clone().unwrap();
    let slow = tokio::spawn(async move { get(addr, "/delay/300").await });
    for _ in 0..200 {
        if limiter.in_flight() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let critical =
        tokio::spawn(
            async move { get_with(addr, "/", &[("x-steady-priority", "critical")]).await },
        );
    let sheddable = get_with(addr, "/", &[("x-steady-priority", "sheddable")]).await;
    assert_eq!(sheddable.status, 503, "sheddable requests do not wait");
    assert_eq!(
        critical.await.unwrap().status,
        200,
        "critical requests wait for a slot"
    );
    assert_eq!(slow.await.unwrap().status, 200);
    let metrics = steady.gateway.metrics().encode();
    assert!(!metrics.contains("priority=\"critical\""), "{metrics}");
}

#[tokio::test]
async fn an_unknown_priority_value_falls_back_to_the_routes_priority() {
    let backend = Backend::start("a").await;
    let yaml = config(
        backend.addr(),
        "    priority: sheddable\n    priority_header: x-steady-priority",
        "    concurrency: {min_limit: 1, initial_limit: 1, max_limit: 1, queue_size: 4}",
    );
    let steady = start_yaml(&yaml).await;
    let a = get_with(steady.addr, "/", &[("x-steady-priority", "CRITICAL!!")]).await;
    assert_eq!(a.status, 200);
    let a = get_with(steady.addr, "/", &[("x-steady-priority", "urgent")]).await;
    assert_eq!(a.status, 200);
}

/// The autoscaling examples and the Grafana dashboards in `deploy/` must query series
/// steady really exports.
#[tokio::test]
async fn deploy_examples_use_metrics_steady_exports() {
    let backend = Backend::start("a").await;
    let yaml = config(backend.addr(), "", "    concurrency: {}");
    let steady = start_yaml(&yaml).await;
    assert_eq!(get(steady.addr, "/").await.status, 200);
    let exported = steady.gateway.metrics().encode();
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy");
    let mut files = vec!["hpa.yaml".to_string(), "keda-scaledobject.yaml".to_string()];
    let mut dashboards: Vec<String> = std::fs::read_dir(format!("{root}/grafana"))
        .expect("deploy/grafana")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".json"))
        .map(|name| format!("grafana/{name}"))
        .collect();
    assert!(
        !dashboards.is_empty(),
        "no Grafana dashboard in deploy/grafana"
    );
    dashboards.sort();
    files.extend(dashboards);
    let mut checked = 0;
    for file in &files {
        let text = std::fs::read_to_string(format!("{root}/{file}")).expect(file);
        if file.ends_with(".json") {
            serde_json::from_str::<serde_json::Value>(&text)
                .unwrap_or_else(|e| panic!("{file} is not valid JSON: {e}"));
        }
        for word in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            // Names the adapter invents for the HPA are not steady's.
            if !word.starts_with("steady_") || word == "steady_upstream_requests_per_second" {
                continue;
            }
            // Counters are exported as NAME_total, histograms as NAME_bucket/_sum/_count;
            // shed counters only once something is shed.
            let base = ["_total", "_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| word.strip_suffix(suffix))
                .unwrap_or(word);
            assert!(
                exported.contains(&format!("# TYPE {base} ")),
                "{file} queries `{word}`, which steady does not export"
            );
            checked += 1;
        }
    }
    assert!(checked >= 15, "found only {checked} metric names");
}
