//! The admission sections: rate limits, Redis, priorities, concurrency, trusted proxies.

use std::time::Duration;

use crate::common::{errors_raw, has};
use steady_config::limits::{KeyPart, LimitMode, OnFailure, Priority, Scope};
use steady_config::parse;

const BASE: &str = "listeners: [{name: web, bind: 127.0.0.1:8080}]\n\
upstreams: [{name: app, endpoints: [{address: 127.0.0.1:9001}]}]\n";

fn errors(yaml: &str) -> Vec<String> {
    errors_raw(&format!("{BASE}{yaml}"))
}

#[test]
fn the_issue_example_parses_as_written() {
    let yaml = r#"
listeners:
  - name: web
    bind: 127.0.0.1:8080
    trusted_proxies: [10.0.0.0/8, 127.0.0.1]
routes:
  - name: api
    listener: web
    upstream: app
    priority: critical
    priority_header: x-steady-priority
    rate_limit:
      - {key: client_ip, rate: 100/s, burst: 200}
      - {key: "header:x-api-key", rate: 1000/m, scope: global}   # global = shared through Redis
      - {key: route, rate: 5000/s, mode: shadow}                 # counts, does not enforce
redis:
  url: redis://127.0.0.1:6379
  on_failure: local          # local (fall back to per-instance limits) | allow | deny
upstreams:
  - name: app
    endpoints: [{address: 127.0.0.1:9001}]
    concurrency: {min_limit: 2, queue_size: 4, buffer: 50%, percentile: 95}
"#;
    let config = parse(yaml, "steady.yaml").unwrap();
    let route = &config.routes[0];
    assert_eq!(route.priority, Priority::Critical);
    assert_eq!(route.rate_limit.len(), 3);
    let first = &route.rate_limit[0];
    assert_eq!(first.key_parts(), vec![KeyPart::ClientIp]);
    assert_eq!(first.effective_burst(), 200);
    assert_eq!(first.scope, Scope::Local);
    let second = &route.rate_limit[1];
    assert_eq!(second.scope, Scope::Global);
    assert_eq!(second.rate.per, Duration::from_secs(60));
    assert_eq!(second.effective_burst(), 1000);
    assert_eq!(route.rate_limit[2].mode, LimitMode::Shadow);
    let redis = config.redis.as_ref().unwrap();
    assert_eq!(redis.on_failure, OnFailure::Local);
    assert_eq!(redis.timeout, Duration::from_millis(50));
    let concurrency = config.upstreams[0].concurrency.as_ref().unwrap();
    assert_eq!(concurrency.min_limit, 2);
    assert_eq!(concurrency.buffer.0, 0.5);
    assert_eq!(concurrency.percentile.0, 0.95);
    assert_eq!(concurrency.max_limit, 1000);
    assert_eq!(config.listeners[0].try_trusted_proxies().unwrap().len(), 2);
}

#[test]
fn an_empty_concurrency_block_turns_the_limit_on_with_defaults() {
    let config = parse(
        "listeners: [{name: web, bind: 127.0.0.1:8080}]\n\
         routes: [{name: r, listener: web, upstream: app}]\n\
         upstreams: [{name: app, endpoints: [{address: 127.0.0.1:9001}], concurrency: {}}]\n",
        "steady.yaml",
    )
    .unwrap();
    let c = config.upstreams[0].concurrency.as_ref().unwrap();
    assert_eq!((c.min_limit, c.initial_limit, c.queue_size), (3, 20, 16));
}

#[test]
fn bad_rates_and_keys_are_located_and_explained() {
    let e = errors(
        "routes: [{name: r, listener: web, upstream: app, rate_limit: [\
         {key: client-ip, rate: 100/s}, {key: path, rate: 100}, {key: route, rate: 0/s}, \
         {key: route, rate: 5/s, burst: 0}]}]\n",
    );
    has(&e, "rate_limit[0].key: `client-ip` is not a rate-limit key");
    has(&e, "did you mean `client_ip`");
    has(&e, "rate_limit[1].rate: `100` has no period");
    has(&e, "rate_limit[2].rate: `0/s` allows nothing");
    has(&e, "rate_limit[3].burst: must be at least 1");
}

#[test]
fn a_global_limit_needs_redis() {
    let e = errors(
        "routes: [{name: r, listener: web, upstream: app, rate_limit: [\
         {key: route, rate: 5/s, scope: global}]}]\n",
    );
    has(
        &e,
        "rate_limit[0].scope: `scope: global` shares the count through Redis",
    );
}

#[test]
fn bad_redis_priority_and_proxies_are_reported() {
    let e = errors(
        "redis: {url: localhost:6379, on_failure: maybe}\n\
         routes: [{name: r, listener: web, upstream: app, priority: urgent, priority_header: 'bad header'}]\n",
    );
    has(&e, "redis.on_failure");
    has(&e, "priority");
    let e = errors("redis: {url: 'localhost:6379'}\n");
    has(&e, "redis.url: `localhost:6379` is not a Redis URL");
    let e = errors(
        "routes: [{name: r, listener: web, upstream: app, priority_header: 'bad header'}]\n",
    );
    has(
        &e,
        "priority_header: `bad header` is not a valid header name",
    );
}

#[test]
fn concurrency_ranges_are_checked() {
    let e = errors_raw(
        "listeners: [{name: web, bind: 127.0.0.1:8080}]\n\
         routes: [{name: r, listener: web, upstream: app}]\n\
         upstreams: [{name: app, endpoints: [{address: 127.0.0.1:9001}], \
         concurrency: {min_limit: 10, max_limit: 5, percentile: 0, sample_window: 0s}}]\n",
    );
    has(&e, "concurrency.max_limit: 5 is below min_limit 10");
    has(&e, "concurrency.percentile: must be above 0%");
    has(&e, "concurrency.sample_window: must be greater than 0s");
}

#[test]
fn trusted_proxies_must_be_networks() {
    let e = errors_raw(
        "listeners: [{name: web, bind: 127.0.0.1:8081, trusted_proxies: [10.0.0.0/33]}]\n",
    );
    has(
        &e,
        "trusted_proxies: `10.0.0.0/33` is not an address or network",
    );
}

#[test]
fn redis_urls_are_checked_before_start() {
    let e = errors("redis: {url: 'rediss://cache:6380'}\n");
    has(
        &e,
        "redis.url: TLS to Redis (`rediss://`) is not supported yet",
    );
    let e = errors("redis: {url: 'redis://:6379'}\n");
    has(&e, "is not a Redis URL");
    let e = errors("redis: {url: 'redis://127.0.0.1:6379/zero'}\n");
    has(&e, "`/zero` is not a database number");
    for good in [
        "redis://127.0.0.1:6379",
        "redis://user:secret@cache.internal:6379/2",
        "redis://[::1]:6379",
        "unix:///run/redis.sock",
    ] {
        let yaml = format!(
            "{BASE}redis: {{url: '{good}'}}\nroutes: [{{name: r, listener: web, upstream: app}}]\n"
        );
        assert!(parse(&yaml, "steady.yaml").is_ok(), "{good}");
    }
}

#[test]
fn admission_settings_on_tcp_traffic_are_refused_not_ignored() {
    let e = errors_raw(
        "listeners: [{name: db, bind: 127.0.0.1:5433, protocol: tcp}]\n\
         routes: [{name: r, listener: db, upstream: pg, rate_limit: [{key: client_ip, rate: 5/s}]}]\n\
         upstreams: [{name: pg, endpoints: [{address: 127.0.0.1:5432}], concurrency: {}}]\n",
    );
    has(
        &e,
        "routes[0].rate_limit: rate limits apply to HTTP requests",
    );
    has(
        &e,
        "upstreams[0].concurrency: the concurrency limit applies to HTTP requests",
    );
}

#[test]
fn faults_are_checked() {
    let e = errors(
        "routes: [{name: r, listener: web, upstream: app, fault: \
         {abort: {status: 99, percent: 150%}, delay: {duration: 0s}}}]\n",
    );
    has(
        &e,
        "routes[0].fault.abort.status: 99 is not a status an abort can answer",
    );
    has(
        &e,
        "routes[0].fault.abort.percent: must be between 0% and 100%",
    );
    has(
        &e,
        "routes[0].fault.delay.duration: must be greater than 0s",
    );
    let e = errors("routes: [{name: r, listener: web, upstream: app, fault: {abrot: {}}}]\n");
    has(&e, "did you mean `abort`");
}

#[test]
fn circuit_breakers_are_checked() {
    let config = parse(
        "listeners: [{name: web, bind: 127.0.0.1:8080}]\n\
         routes: [{name: r, listener: web, upstream: app}]\n\
         upstreams: [{name: app, endpoints: [{address: 127.0.0.1:9001}], \
         circuit_breakers: {max_connections: 100, max_requests: 50}}]\n",
        "steady.yaml",
    )
    .unwrap();
    let b = config.upstreams[0].circuit_breakers.as_ref().unwrap();
    assert_eq!(
        (b.max_connections, b.max_pending_requests, b.max_requests),
        (Some(100), None, Some(50))
    );
    let e = errors_raw(
        "listeners: [{name: web, bind: 127.0.0.1:8080}]\n\
         routes: [{name: r, listener: web, upstream: app}]\n\
         upstreams: [{name: app, endpoints: [{address: 127.0.0.1:9001}], \
         circuit_breakers: {max_pending_requests: 0, max_conections: 5}}]\n",
    );
    has(&e, "did you mean `max_connections`");
    let e = errors_raw(
        "listeners: [{name: web, bind: 127.0.0.1:8080}]\n\
         routes: [{name: r, listener: web, upstream: app}]\n\
         upstreams: [{name: app, endpoints: [{address: 127.0.0.1:9001}], \
         circuit_breakers: {max_pending_requests: 0}}]\n",
    );
    has(
        &e,
        "circuit_breakers.max_pending_requests: must be at least 1",
    );
}

#[test]
fn retries_parse_as_the_issue_writes_them() {
    use steady_config::retry::RetryOn;
    let yaml = format!(
        "{BASE}routes: [{{name: r, listener: web, upstream: app, retries: \
         {{attempts: 3, on: [connect-failure, reset, 502, 503, 504], per_try_timeout: 2s, \
         budget: 20%, backoff: 25ms}}}}]\n"
    );
    let config = parse(&yaml, "steady.yaml").unwrap();
    let r = config.routes[0].retries.as_ref().unwrap();
    assert_eq!(r.attempts, 3);
    assert_eq!(
        r.on,
        [
            RetryOn::ConnectFailure,
            RetryOn::Reset,
            RetryOn::Status(502),
            RetryOn::Status(503),
            RetryOn::Status(504)
        ]
    );
    assert_eq!(r.per_try_timeout, Some(Duration::from_secs(2)));
    assert_eq!(r.budget.0, 0.2);
    assert_eq!(r.effective_max_backoff(), Duration::from_millis(250));
    let e = errors(
        "routes: [{name: r, listener: web, upstream: app, retries: \
         {attempts: 0, on: [oops, 200], per_try_timeout: 0s}}]\n",
    );
    has(&e, "`oops` is not a retry condition");
    let e = errors(
        "routes: [{name: r, listener: web, upstream: app, retries: {attempts: 0, per_try_timeout: 0s}}]\n",
    );
    has(&e, "retries.attempts: 0 is out of range");
    has(&e, "retries.per_try_timeout: must be greater than 0s");
}

#[test]
fn retry_policies_that_cannot_work_are_refused() {
    let e = errors("routes: [{name: r, listener: web, upstream: app, retries: {on: []}}]\n");
    has(&e, "retries.on: retries nothing");
    let e = errors("routes: [{name: r, listener: web, upstream: app, retries: {on: [timeout]}}]\n");
    has(&e, "`timeout` needs `per_try_timeout`");
    let e = errors(
        "routes: [{name: r, listener: web, upstream: app, timeout: 1s, retries: {per_try_timeout: 2s}}]\n",
    );
    has(
        &e,
        "retries.per_try_timeout: is longer than the route's `timeout` (1s)",
    );
    let e = errors_raw(
        "listeners: [{name: db, bind: 127.0.0.1:5433, protocol: tcp}]\n\
         routes: [{name: r, listener: db, upstream: pg, retries: {}}]\n\
         upstreams: [{name: pg, endpoints: [{address: 127.0.0.1:5432}]}]\n",
    );
    has(&e, "routes[0].retries: retries apply to HTTP requests");
    let e = errors(
        "routes: [{name: r, listener: web, upstream: app, fault: {abort: {status: 204}}}]\n",
    );
    has(&e, "204 is not a status an abort can answer");
}

#[test]
fn hedge_after_is_a_duration_or_a_percentile() {
    use steady_config::retry::HedgeAfter;
    for (text, want) in [
        ("p95", HedgeAfter::Percentile(95.0)),
        ("p99.9", HedgeAfter::Percentile(99.9)),
        ("40ms", HedgeAfter::Delay(Duration::from_millis(40))),
    ] {
        let yaml = format!(
            "{BASE}routes: [{{name: r, listener: web, upstream: app, retries: {{hedge_after: {text}}}}}]\n"
        );
        let config = parse(&yaml, "steady.yaml").unwrap();
        assert_eq!(
            config.routes[0].retries.as_ref().unwrap().hedge_after,
            Some(want)
        );
    }
    for (text, message) in [
        ("p30", "`p30` is not a percentile from p50 to p99.99"),
        ("p100", "`p100` is not a percentile"),
        ("0s", "must be greater than 0s"),
        ("soon", "or a percentile such as `p95`"),
    ] {
        let e = errors(&format!(
            "routes: [{{name: r, listener: web, upstream: app, retries: {{hedge_after: {text}}}}}]\n"
        ));
        has(&e, message);
    }
}
