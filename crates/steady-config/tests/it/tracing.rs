//! The `tracing` section: OTLP export, sampling and batching.

use std::time::Duration;

use crate::common::{errors_raw, has, BASE};
use steady_config::parse;
use steady_config::tracing::Protocol;

fn errors(yaml: &str) -> Vec<String> {
    errors_raw(&format!("{BASE}{yaml}"))
}

#[test]
fn the_documented_example_parses() {
    let yaml = format!(
        "{BASE}{}",
        r#"
tracing:
  otlp: {endpoint: "http://127.0.0.1:4318", protocol: http, timeout: 2s, headers: {x-api-key: abc}, headers_env: {authorization: OTLP_AUTH}}
  sample: 1%
  always_sample_errors: true
  slow_threshold: 500ms
  service_name: edge
  batch: {max_queue: 2048, max_batch: 512, interval: 5s}
"#
    );
    let config = parse(&yaml, "steady.yaml").unwrap();
    let t = config.tracing.unwrap();
    assert_eq!(t.otlp.protocol, Protocol::Http);
    assert_eq!(t.otlp.url(), "http://127.0.0.1:4318/v1/traces");
    assert!((t.sample.0 - 0.01).abs() < 1e-12);
    assert_eq!(t.slow_threshold, Some(Duration::from_millis(500)));
    assert_eq!(t.batch.interval, Duration::from_secs(5));
    assert_eq!(t.service_name, "edge");
}

#[test]
fn defaults_need_only_an_endpoint() {
    let config = parse(
        &format!("{BASE}tracing: {{otlp: {{endpoint: \"http://127.0.0.1:4317\"}}}}\n"),
        "steady.yaml",
    )
    .unwrap();
    let t = config.tracing.unwrap();
    assert_eq!(t.otlp.protocol, Protocol::Grpc);
    assert_eq!(t.sample.0, 1.0);
    assert!(t.always_sample_errors);
    assert_eq!(t.slow_threshold, None);
    assert_eq!(t.batch.max_queue, 2048);
    assert_eq!(t.batch.max_batch, 512);
    assert_eq!(t.otlp.timeout, Duration::from_secs(10));
}

#[test]
fn bad_values_are_located() {
    let e = errors("tracing:\n  otlp: {endpoint: \"http://127.0.0.1:4317\", protocol: ftp}\n");
    has(&e, "steady.yaml:5:");
    has(&e, "ftp");

    let e = errors(
        "tracing:\n  otlp: {endpoint: \"http://127.0.0.1:4317\"}\n  sample: 150%\n  batch: {max_queue: 10, max_batch: 20, interval: 0s}\n  slow_threshold: 0s\n",
    );
    has(&e, "steady.yaml:6:");
    has(&e, "tracing.sample");
    has(&e, "between 0% and 100%");
    has(&e, "`max_batch` must not be larger than `max_queue`");
    has(&e, "`interval` must be greater than 0s");
    has(&e, "tracing.slow_threshold");

    let e = errors("tracing:\n  otlp: {endpoint: \"127.0.0.1 4317\"}\n");
    has(&e, "steady.yaml:5:");
    has(&e, "not an OTLP endpoint");

    let e =
        errors("tracing:\n  otlp: {endpoint: \"http://collector:4317\", tls: {ca_file: ca.pem}}\n");
    has(&e, "`tls` applies only to an `https://` endpoint");
    let e = errors("tracing:\n  otlp: {endpoint: \"https://c:4317\", tls: {ca_fle: ca.pem}}\n");
    has(&e, "ca_fle");

    let e =
        errors("tracing:\n  otlp: {endpoint: \"http://c:4317\", headers: {\"bad header\": x}}\n");
    has(&e, "is not a header name");

    let e = errors("tracing:\n  otlp: {endpoint: \"http://c:4317\"}\n  smaple: 1%\n");
    has(&e, "smaple");
}

#[test]
fn an_https_endpoint_takes_a_private_ca_relative_to_the_config() {
    let dir = std::env::temp_dir().join(format!("steady-cfg-ca-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("ca.pem"), "-----BEGIN CERTIFICATE-----\n").unwrap();
    let file = dir.join("steady.yaml");
    std::fs::write(
        &file,
        format!(
            "{BASE}tracing:\n  otlp: {{endpoint: \"https://collector.example:4318\", protocol: http, tls: {{ca_file: ca.pem}}}}\n"
        ),
    )
    .unwrap();
    let config = steady_config::load(&file).unwrap();
    let otlp = config.tracing.unwrap().otlp;
    assert!(otlp.is_tls());
    assert_eq!(otlp.url(), "https://collector.example:4318/v1/traces");
    assert_eq!(otlp.tls.unwrap().ca_file, Some(dir.join("ca.pem")));

    // A CA file that is not there is reported where it is named.
    let e = errors(
        "tracing:\n  otlp: {endpoint: \"https://c:4317\", tls: {ca_file: /nonexistent/ca.pem}}\n",
    );
    has(&e, "tracing.otlp.tls.ca_file");
    has(
        &e,
        "CA certificate file `/nonexistent/ca.pem` does not exist",
    );
}
