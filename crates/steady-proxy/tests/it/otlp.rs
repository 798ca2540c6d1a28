//! Span export end to end: steady sends its request and attempt spans to a real OTLP
//! receiver (gRPC and HTTP/protobuf), which decodes them; parent/child links, retries,
//! the head ratio and the tail rules, and a receiver that is down or stalled.

use std::time::Duration;

use crate::common::{self, get, start_yaml, Running};
use bytes::Bytes;
use http_body_util::Full;
use steady_testkit::{Backend, Fault, OtlpProtocol, OtlpReceiver, ReceivedSpan};

/// Generous bound for spans to arrive; tests normally see them within one interval.
const WAIT: Duration = Duration::from_secs(10);

/// Waits (bounded by [`WAIT`]) until `done` holds.
async fn eventually(done: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !done() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn protocol(p: OtlpProtocol) -> &'static str {
    match p {
        OtlpProtocol::Grpc => "grpc",
        OtlpProtocol::Http => "http",
    }
}

/// A gateway exporting to `receiver` (or `endpoint`) with `tracing_extra` added to the
/// `tracing` block, one route `api` to `backends`.
fn config(
    endpoint: &str,
    proto: OtlpProtocol,
    tracing_extra: &str,
    route_extra: &str,
    backends: &[std::net::SocketAddr],
) -> String {
    let endpoints: Vec<String> = backends
        .iter()
        .map(|a| format!("{{address: \"{a}\"}}"))
        .collect();
    format!(
        "tracing:
  otlp: {{endpoint: \"{endpoint}\", protocol: {proto}, timeout: 2s}}
  service_name: edge
  batch: {{max_queue: 256, max_batch: 64, interval: 20ms}}
{tracing_extra}
listeners: [{{name: web, bind: 127.0.0.1:0}}]
routes: [{{name: api, listener: web, upstream: app, timeout: 5s {route_extra}}}]
upstreams: [{{name: app, balance: round-robin, endpoints: [{endpoints}]}}]
",
        proto = protocol(proto),
        endpoints = endpoints.join(", "),
    )
}

async fn get_traced(steady: &Running, path: &str, traceparent: &str) -> common::Answer {
    let req = http::Request::get(format!("http://{}{path}", steady.addr))
        .header("traceparent", traceparent)
        .body(Full::new(Bytes::new()))
        .unwrap();
    common::send(req).await
}

fn by_kind<'a>(spans: &'a [ReceivedSpan], kind: &str) -> Vec<&'a ReceivedSpan> {
    spans.iter().filter(|s| s.kind == kind).collect()
}

async fn links_server_and_attempt_spans(proto: OtlpProtocol) {
    let receiver = OtlpReceiver::start(proto).await;
    let backend = Backend::start("b").await;
    let steady = start_yaml(&config(
        &receiver.endpoint(),
        proto,
        "  sample: 0%",
        "",
        &[backend.addr()],
    ))
    .await;
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let answer = get_traced(
        &steady,
        "/hello",
        &format!("00-{trace}-00f067aa0ba902b7-01"),
    )
    .await;
    assert_eq!(answer.status, 200);
    let seen = answer.json();
    let upstream = seen["headers"]["traceparent"].as_str().unwrap().to_string();
    let upstream_span = upstream.split('-').nth(2).unwrap().to_string();

    let spans = receiver.wait_for(2, WAIT).await;
    assert_eq!(spans.len(), 2, "{spans:#?}");
    let server = by_kind(&spans, "SERVER");
    let client = by_kind(&spans, "CLIENT");
    assert_eq!((server.len(), client.len()), (1, 1), "{spans:#?}");
    let (server, client) = (server[0], client[0]);
    assert_eq!(server.trace_id, trace);
    assert_eq!(
        server.parent_span_id, "00f067aa0ba902b7",
        "the client's span is the parent"
    );
    assert_eq!(server.service.as_deref(), Some("edge"));
    assert_eq!(server.name, "GET api");
    assert_eq!(server.attr("http.request.method"), Some("GET"));
    assert_eq!(server.attr("url.path"), Some("/hello"));
    assert_eq!(server.attr("http.route"), Some("api"));
    assert_eq!(server.attr("http.response.status_code"), Some("200"));
    assert_eq!(server.attr("network.peer.address"), Some("127.0.0.1"));
    assert_eq!(client.trace_id, trace);
    assert_eq!(
        client.parent_span_id, server.span_id,
        "attempts are children"
    );
    assert_eq!(
        client.span_id, upstream_span,
        "the backend's parent is the attempt span"
    );
    assert_eq!(
        client.attr("server.address"),
        Some(backend.addr().ip().to_string().as_str())
    );
    assert_eq!(client.attr("http.response.status_code"), Some("200"));
    assert!(client.attr("http.request.resend_count").is_none());
    assert!(server.start_nanos <= client.start_nanos && client.end_nanos <= server.end_nanos);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_export_links_server_and_attempt_spans() {
    links_server_and_attempt_spans(OtlpProtocol::Grpc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_protobuf_export_links_server_and_attempt_spans() {
    links_server_and_attempt_spans(OtlpProtocol::Http).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_are_visible_as_attempt_spans() {
    let receiver = OtlpReceiver::start(OtlpProtocol::Grpc).await;
    let flaky = Backend::start("flaky").await;
    flaky.set_fault(Fault::Status(503));
    let good = Backend::start("good").await;
    let steady = start_yaml(&config(
        &receiver.endpoint(),
        OtlpProtocol::Grpc,
        "  sample: 100%",
        ", retries: {attempts: 2, on: [503], backoff: 1ms}",
        &[flaky.addr(), good.addr()],
    ))
    .await;
    // Round robin: one of two requests starts on the failing endpoint.
    for _ in 0..2 {
        assert_eq!(get(steady.addr, "/").await.status, 200);
    }
    let spans = receiver.wait_for(5, WAIT).await;
    let retried = by_kind(&spans, "SERVER")
        .into_iter()
        .find(|server| {
            spans
                .iter()
                .filter(|s| s.parent_span_id == server.span_id)
                .count()
                == 2
        })
        .unwrap_or_else(|| panic!("a request with two attempts: {spans:#?}"));
    let mut attempts: Vec<&ReceivedSpan> = spans
        .iter()
        .filter(|s| s.parent_span_id == retried.span_id)
        .collect();
    attempts.sort_by_key(|s| s.start_nanos);
    assert!(attempts.iter().all(|a| a.kind == "CLIENT"));
    assert_eq!(attempts[0].attr("http.response.status_code"), Some("503"));
    assert_eq!(attempts[0].attr("error.type"), Some("503"));
    assert_eq!(attempts[0].status, 2, "error status");
    assert_eq!(
        attempts[0].attr("server.port"),
        Some(flaky.addr().port().to_string().as_str())
    );
    assert_eq!(attempts[1].attr("http.response.status_code"), Some("200"));
    assert_eq!(attempts[1].attr("http.request.resend_count"), Some("1"));
    assert_eq!(retried.attr("http.response.status_code"), Some("200"));
    assert_eq!(retried.attr("steady.attempts"), Some("2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_zero_percent_only_errors_and_slow_requests_are_exported() {
    let receiver = OtlpReceiver::start(OtlpProtocol::Http).await;
    let mut backend = Backend::start("b").await;
    let steady = start_yaml(&config(
        &receiver.endpoint(),
        OtlpProtocol::Http,
        "  sample: 0%\n  always_sample_errors: true\n  slow_threshold: 150ms",
        "",
        &[backend.addr()],
    ))
    .await;

    // Fast successes, new traces: not sampled, not kept; the backend is told `-00`.
    for _ in 0..10 {
        let seen = get(steady.addr, "/fast").await.json();
        let tp = seen["headers"]["traceparent"].as_str().unwrap().to_string();
        assert!(tp.ends_with("-00"), "{tp}");
    }
    // An unsampled parent stays unsampled.
    let answer = get_traced(
        &steady,
        "/fast",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
    )
    .await;
    assert_eq!(answer.status, 200);

    backend.set_fault(Fault::Status(503));
    assert_eq!(get(steady.addr, "/failing").await.status, 503);
    backend.set_fault(Fault::Delay(Duration::from_millis(300)));
    assert_eq!(get(steady.addr, "/slow").await.status, 200);
    backend.set_fault(Fault::None);
    // steady's own failure: the endpoint died.
    backend.kill().await;
    assert_eq!(get(steady.addr, "/down").await.status, 502);

    let spans = receiver.wait_for(6, WAIT).await;
    let servers = by_kind(&spans, "SERVER");
    let mut paths: Vec<&str> = servers.iter().filter_map(|s| s.attr("url.path")).collect();
    paths.sort();
    assert_eq!(paths, ["/down", "/failing", "/slow"], "{spans:#?}");
    let down = servers
        .iter()
        .find(|s| s.attr("url.path") == Some("/down"))
        .unwrap();
    assert!(
        matches!(down.attr("error.type"), Some("connect" | "upstream-reset")),
        "{down:#?}"
    );
    assert_eq!(down.status, 2);
    let failing = servers
        .iter()
        .find(|s| s.attr("url.path") == Some("/failing"))
        .unwrap();
    assert_eq!(failing.attr("http.response.status_code"), Some("503"));
    assert_eq!(
        spans.len(),
        6,
        "each kept request has one attempt: {spans:#?}"
    );
}

#[tokio::test]
async fn a_response_cut_after_its_head_is_an_error_span() {
    let receiver = OtlpReceiver::start(OtlpProtocol::Http).await;
    let backend = Backend::start("b").await;
    let steady = start_yaml(&config(
        &receiver.endpoint(),
        OtlpProtocol::Http,
        "  sample: 0%\n  always_sample_errors: true",
        "",
        &[backend.addr()],
    ))
    .await;
    // The head (200) goes out, then the upstream resets in the middle of the body.
    backend.set_fault(Fault::ResetMidResponse);
    let mut s = tokio::net::TcpStream::connect(steady.addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut s, b"GET /cut HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(
        WAIT,
        tokio::io::AsyncReadExt::read_to_end(&mut s, &mut answer),
    )
    .await;
    assert!(read.is_ok(), "the cut response ends the connection");
    assert!(answer.starts_with(b"HTTP/1.1 200"));

    // Unsampled at 0 %, kept by the tail rule: its server span and its attempt.
    let spans = receiver.wait_for(2, WAIT).await;
    let servers = by_kind(&spans, "SERVER");
    assert_eq!(servers.len(), 1, "{spans:#?}");
    let cut = servers[0];
    assert_eq!(cut.attr("url.path"), Some("/cut"), "{cut:#?}");
    assert_eq!(
        cut.attr("http.response.status_code"),
        Some("200"),
        "{cut:#?}"
    );
    assert_eq!(cut.attr("error.type"), Some("upstream-reset"), "{cut:#?}");
    assert_eq!(cut.status, 2, "{cut:#?}");
}

/// A gateway exporting every request to a TLS `receiver`, trusting `ca_pem` (written
/// to a file of the test's own) when given.
async fn start_exporting_over_tls(
    receiver: &OtlpReceiver,
    ca_pem: Option<&str>,
    backend: &Backend,
    tag: &str,
) -> Running {
    let tls = match ca_pem {
        Some(pem) => {
            let dir =
                std::env::temp_dir().join(format!("steady-otlp-{tag}-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join("ca.pem");
            std::fs::write(&path, pem).unwrap();
            format!(", tls: {{ca_file: '{}'}}", path.display())
        }
        None => String::new(),
    };
    let yaml = config(
        &receiver.endpoint(),
        receiver.protocol(),
        "  sample: 100%",
        "",
        &[backend.addr()],
    )
    .replace("timeout: 2s}", &format!("timeout: 2s{tls}}}"));
    start_yaml(&yaml).await
}

async fn exports_over_tls(proto: OtlpProtocol) {
    let receiver = OtlpReceiver::start_tls(proto).await;
    assert!(receiver.endpoint().starts_with("https://"));
    let backend = Backend::start("b").await;
    let tag = protocol(proto);
    let steady = start_exporting_over_tls(&receiver, receiver.cert_pem(), &backend, tag).await;
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let answer = get_traced(&steady, "/tls", &format!("00-{trace}-00f067aa0ba902b7-01")).await;
    assert_eq!(answer.status, 200);
    let spans = receiver.wait_for(2, WAIT).await;
    assert_eq!(spans.len(), 2, "{spans:#?}");
    let (server, client) = (by_kind(&spans, "SERVER"), by_kind(&spans, "CLIENT"));
    assert_eq!((server.len(), client.len()), (1, 1), "{spans:#?}");
    assert_eq!(server[0].trace_id, trace);
    assert_eq!(client[0].parent_span_id, server[0].span_id);
    assert_eq!(server[0].attr("url.path"), Some("/tls"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_export_over_tls_trusts_the_configured_ca() {
    exports_over_tls(OtlpProtocol::Grpc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_protobuf_export_over_tls_trusts_the_configured_ca() {
    exports_over_tls(OtlpProtocol::Http).await;
}

/// A receiver whose certificate is not trusted gets nothing; requests are unaffected
/// and the failed exports are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_receiver_certificate_fails_export_not_requests() {
    for proto in [OtlpProtocol::Grpc, OtlpProtocol::Http] {
        let receiver = OtlpReceiver::start_tls(proto).await;
        let backend = Backend::start("b").await;
        // Another receiver's certificate: valid PEM, the wrong CA.
        let other = OtlpReceiver::start_tls(proto).await;
        let steady = start_exporting_over_tls(
            &receiver,
            other.cert_pem(),
            &backend,
            &format!("untrusted-{}", protocol(proto)),
        )
        .await;
        for _ in 0..5 {
            assert_eq!(get(steady.addr, "/").await.status, 200);
        }
        let stats = steady.gateway.metrics().trace_stats().clone();
        eventually(|| stats.dropped_export_failed() >= 10).await;
        assert_eq!(
            stats.dropped_export_failed(),
            10,
            "{proto:?}: 5 requests, 2 spans each"
        );
        assert_eq!(stats.exported(), 0);
        assert!(receiver.spans().is_empty(), "{proto:?}");
    }
}

/// A `ca_file` without a certificate stops the start with the reason, for either
/// protocol.
#[tokio::test]
async fn a_ca_file_without_a_certificate_fails_the_start_with_the_reason() {
    let dir = std::env::temp_dir().join(format!("steady-otlp-badca-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("ca.pem");
    std::fs::write(&path, "not a certificate\n").unwrap();
    for proto in [OtlpProtocol::Grpc, OtlpProtocol::Http] {
        let yaml = config(
            "https://127.0.0.1:4317",
            proto,
            "",
            "",
            &[steady_testkit::dead_addr()],
        )
        .replace(
            "timeout: 2s}",
            &format!("timeout: 2s, tls: {{ca_file: '{}'}}}}", path.display()),
        );
        let config = steady_config::parse(&yaml, "steady.yaml").unwrap();
        let err = steady_proxy::Gateway::start(&config)
            .await
            .err()
            .expect("refused")
            .to_string();
        assert!(err.contains("holds no certificate"), "{proto:?}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_is_down_costs_requests_nothing() {
    let backend = Backend::start("b").await;
    let dead = steady_testkit::dead_addr();
    let steady = start_yaml(&config(
        &format!("http://{dead}"),
        OtlpProtocol::Grpc,
        "  sample: 100%",
        "",
        &[backend.addr()],
    ))
    .await;
    for _ in 0..20 {
        assert_eq!(get(steady.addr, "/").await.status, 200);
    }
    let stats = steady.gateway.metrics().trace_stats().clone();
    eventually(|| stats.dropped_export_failed() >= 40).await;
    assert_eq!(
        stats.dropped_export_failed(),
        40,
        "20 requests, 2 spans each"
    );
    assert_eq!(stats.exported(), 0);
    let text = steady.gateway.metrics().encode();
    assert!(
        text.contains("steady_trace_spans_dropped_total{reason=\"export-failed\"} 40"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_receiver_fills_a_bounded_queue_and_requests_go_on() {
    let receiver = OtlpReceiver::start(OtlpProtocol::Grpc).await;
    receiver.stall(true);
    let backend = Backend::start("b").await;
    let yaml = config(
        &receiver.endpoint(),
        OtlpProtocol::Grpc,
        "  sample: 100%",
        "",
        &[backend.addr()],
    )
    .replace(
        "batch: {max_queue: 256, max_batch: 64, interval: 20ms}",
        "batch: {max_queue: 8, max_batch: 2, interval: 20ms}",
    )
    .replace("timeout: 2s}", "timeout: 60s}");
    let steady = start_yaml(&yaml).await;
    // The first batch is held by the receiver; while it is, at most 8 spans wait.
    assert_eq!(get(steady.addr, "/").await.status, 200);
    eventually(|| receiver.requests() >= 1).await;
    assert_eq!(receiver.requests(), 1, "the first export is stalled");
    for _ in 0..30 {
        assert_eq!(get(steady.addr, "/").await.status, 200);
    }
    let stats = steady.gateway.metrics().trace_stats().clone();
    // 60 spans offered while one batch is stuck: 8 queued, the rest dropped. (The last
    // request's spans may be decided just after its client saw the answer.)
    eventually(|| stats.dropped_queue_full() >= 60 - 8).await;
    assert_eq!(stats.dropped_queue_full(), 60 - 8, "bounded queue");
    receiver.stall(false);
    let spans = receiver.wait_for(2 + 8, WAIT).await;
    assert_eq!(spans.len(), 10, "the stalled batch and the queued spans");
    eventually(|| stats.exported() >= 10).await;
    assert_eq!(stats.exported(), 10, "counted once answered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_flushes_queued_spans() {
    let receiver = OtlpReceiver::start(OtlpProtocol::Http).await;
    let backend = Backend::start("b").await;
    let yaml = config(
        &receiver.endpoint(),
        OtlpProtocol::Http,
        "  sample: 100%",
        "",
        &[backend.addr()],
    )
    .replace("interval: 20ms", "interval: 1h");
    let steady = start_yaml(&yaml).await;
    assert_eq!(get(steady.addr, "/").await.status, 200);
    assert!(receiver.spans().is_empty(), "waiting for its batch");
    steady.gateway.shutdown(Duration::from_secs(5)).await;
    assert_eq!(receiver.spans().len(), 2, "flushed at shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_turns_export_on_and_off() {
    let receiver = OtlpReceiver::start(OtlpProtocol::Grpc).await;
    let backend = Backend::start("b").await;
    let with = config(
        &receiver.endpoint(),
        OtlpProtocol::Grpc,
        "  sample: 100%",
        "",
        &[backend.addr()],
    );
    let without = with[with.find("listeners:").unwrap()..].to_string();
    let steady = start_yaml(&without).await;
    let seen = get(steady.addr, "/").await.json();
    assert!(seen["headers"]["traceparent"]
        .as_str()
        .unwrap()
        .ends_with("-00"));

    let config = steady_config::parse(&with, "<test>").unwrap();
    steady.gateway.reload(&config).await.expect("reload");
    let seen = get(steady.addr, "/").await.json();
    assert!(
        seen["headers"]["traceparent"]
            .as_str()
            .unwrap()
            .ends_with("-01"),
        "sampled at 100%"
    );
    assert_eq!(receiver.wait_for(2, WAIT).await.len(), 2);

    let config = steady_config::parse(&without, "<test>").unwrap();
    steady.gateway.reload(&config).await.expect("reload");
    assert_eq!(get(steady.addr, "/").await.status, 200);
    // The old exporter ended; nothing more arrives (checked after a bounded pause).
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(receiver.spans().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hedged_copy_is_its_own_attempt_span() {
    let receiver = OtlpReceiver::start(OtlpProtocol::Grpc).await;
    let slow = Backend::start("slow").await;
    slow.set_fault(Fault::Delay(Duration::from_secs(5)));
    let fast = Backend::start("fast").await;
    let steady = start_yaml(&config(
        &receiver.endpoint(),
        OtlpProtocol::Grpc,
        "  sample: 100%",
        ", retries: {attempts: 1, hedge_after: 20ms, min_retries: 10}",
        &[slow.addr(), fast.addr()],
    ))
    .await;
    // Round robin: one of two requests starts on the slow endpoint and is hedged.
    for _ in 0..2 {
        assert_eq!(get(steady.addr, "/").await.status, 200);
    }
    let spans = receiver.wait_for(5, WAIT).await;
    let hedged = spans
        .iter()
        .find(|s| s.attr("steady.hedge") == Some("true"))
        .unwrap_or_else(|| panic!("a hedged attempt: {spans:#?}"));
    assert_eq!(hedged.kind, "CLIENT");
    assert_eq!(
        hedged.attr("server.port"),
        Some(fast.addr().port().to_string().as_str())
    );
    assert_eq!(hedged.attr("http.response.status_code"), Some("200"));
    let first = spans
        .iter()
        .find(|s| s.parent_span_id == hedged.parent_span_id && s.span_id != hedged.span_id)
        .expect("the slow attempt's span, under the same request");
    assert_eq!(
        first.attr("error.type"),
        Some("cancelled"),
        "it lost the race"
    );
    assert_eq!(hedged.attr("http.request.resend_count"), Some("1"));
}
