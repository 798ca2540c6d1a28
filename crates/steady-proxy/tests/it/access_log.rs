//! The JSON access log end to end: one line per request with route, endpoint,
//! attempts, bytes and timings; steady's own failures named; written off the request
//! path and flushed when the log closes.

use std::time::Duration;

use crate::common::{self, get, start_yaml};
use steady_testkit::{Backend, Fault};

/// A new, empty directory for one test's log (`NAME-PID` under the temp dir, emptied
/// first), and the log's path in it.
fn fresh_log(name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let path = dir.join("access.log");
    (dir, path)
}

fn lines(path: &std::path::Path, want: usize) -> Vec<serde_json::Value> {
    // The writer thread flushes within ~100 ms; poll (bounded) for the lines.
    for _ in 0..200 {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("each line is one JSON object"))
            .collect();
        if lines.len() >= want {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("fewer than {want} lines in {}", path.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_gets_one_line_with_what_happened() {
    let (dir, path) = fresh_log("steady-access");
    let flaky = Backend::start("flaky").await;
    flaky.set_fault(Fault::Status(503));
    let good = Backend::start("good").await;
    let yaml = format!(
        "access_log: {{path: {path}}}
listeners: [{{name: web, bind: 127.0.0.1:0}}]
routes:
  - {{name: nowhere, listener: web, upstream: empty, match: {{path_prefix: /none}}}}
  - {{name: api, listener: web, upstream: app, match: {{path_prefix: /}}, retries: {{attempts: 2, on: [503], backoff: 1ms}}}}
upstreams:
  - name: app
    balance: round-robin
    endpoints: [{{address: {flaky}}}, {{address: {good}}}]
  - name: empty
    health: {{passive: {{panic_threshold: 0}}}}
    endpoints: [{{address: {dead}}}]
",
        path = path.display(),
        flaky = flaky.addr(),
        good = good.addr(),
        dead = steady_testkit::dead_addr(),
    );
    let steady = start_yaml(&yaml).await;
    let first = get(steady.addr, "/stream/3").await;
    assert_eq!(first.status, 200);
    let second = get(steady.addr, "/stream/3").await;
    assert_eq!(second.status, 200);
    let _ = get(steady.addr, "/none").await;

    // Each worker thread's lines are written in batches, so lines of requests served
    // by different workers can come in either order.
    let log = lines(&path, 3);
    let (served, failed): (Vec<_>, Vec<_>) = log.iter().partition(|l| l["path"] == "/stream/3");
    assert_eq!((served.len(), failed.len()), (2, 1), "{log:?}");
    for line in &served {
        assert_eq!(line["route"], "api", "{line}");
        assert_eq!(line["upstream"], "app");
        assert_eq!(line["method"], "GET");
        assert_eq!(line["path"], "/stream/3");
        assert_eq!(line["status"], 200);
        assert_eq!(line["endpoint"], good.addr().to_string(), "{line}");
        assert_eq!(line["bytes_out"], 3 * 1024, "{line}");
        assert!(line["client"].as_str().unwrap().starts_with("127.0.0.1:"));
        assert!(line["request_id"].as_str().is_some_and(|id| !id.is_empty()));
        assert!(line["time"].as_str().unwrap().ends_with('Z'));
        let (ttfb, total) = (
            line["ttfb"].as_f64().unwrap(),
            line["duration"].as_f64().unwrap(),
        );
        assert!(0.0 < ttfb && ttfb <= total, "{line}");
        assert!(line.get("failure").is_none());
    }
    // Round robin starts one of the two on the 503-er: that one took two attempts.
    let attempts: Vec<u64> = served
        .iter()
        .map(|l| l["attempts"].as_u64().unwrap())
        .collect();
    assert!(
        attempts.contains(&2) && attempts.iter().all(|&a| a >= 1),
        "{attempts:?}"
    );

    let metrics = steady.gateway.metrics().encode();
    assert!(
        metrics.contains("steady_access_log_lines_total{result=\"written\"} 3"),
        "{metrics}"
    );
    assert!(metrics.contains("steady_access_log_lines_total{result=\"dropped\"} 0"));

    let failed = failed[0];
    assert_eq!(failed["route"], "nowhere");
    assert_eq!(failed["status"], 502, "{failed}");
    assert_eq!(failed["failure"], "connect");
    assert_eq!(failed["attempts"], 1);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn an_unopenable_access_log_fails_the_start_with_the_reason() {
    let yaml = "access_log: {path: /proc/steady-no/access.log}
listeners: [{name: web, bind: 127.0.0.1:0}]
routes: [{name: r, listener: web, upstream: app}]
upstreams: [{name: app, endpoints: [{address: 127.0.0.1:9}]}]
";
    let config = steady_config::parse(yaml, "<test>").unwrap();
    let err = steady_proxy::Gateway::start(&config)
        .await
        .err()
        .expect("refused");
    assert!(
        err.to_string()
            .starts_with("access_log: cannot open /proc/steady-no/access.log"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_trace_continues_upstream_and_lands_in_the_log() {
    let (dir, path) = fresh_log("steady-trace");
    let backend = Backend::start("b").await;
    let yaml = format!(
        "access_log: {{path: {path}, fields: [trace_id, span_id, status]}}
listeners: [{{name: web, bind: 127.0.0.1:0}}]
routes: [{{name: api, listener: web, upstream: app}}]
upstreams: [{{name: app, endpoints: [{{address: {backend}}}]}}]
",
        path = path.display(),
        backend = backend.addr(),
    );
    let steady = start_yaml(&yaml).await;
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let req = http::Request::get(format!("http://{}/", steady.addr))
        .header("traceparent", format!("00-{trace}-00f067aa0ba902b7-01"))
        .header("tracestate", "vendor=abc")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let seen = common::send(req).await.json();
    let upstream = seen["headers"]["traceparent"].as_str().unwrap().to_string();
    let parts: Vec<&str> = upstream.split('-').collect();
    assert_eq!(parts[0], "00");
    assert_eq!(parts[1], trace, "same trace upstream");
    assert_ne!(
        parts[2], "00f067aa0ba902b7",
        "the attempt is steady's span, not the client's"
    );
    assert_eq!(parts[3], "01", "the client's sampling decision");
    assert_eq!(seen["headers"]["tracestate"], "vendor=abc");

    // No traceparent: steady starts a trace, and the backend sees it.
    let plain = get(steady.addr, "/").await.json();
    let started = plain["headers"]["traceparent"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        started.starts_with("00-") && started.ends_with("-00"),
        "{started}"
    );

    // The two requests may be served by different workers, whose lines are written in
    // either order: find each by its trace.
    let log = lines(&path, 2);
    let by_trace = |id: &str| log.iter().find(|l| l["trace_id"] == id).cloned();
    let continued = by_trace(trace).unwrap_or_else(|| panic!("{log:?}"));
    assert_eq!(continued["span_id"].as_str().unwrap().len(), 16);
    let started_id = started.split('-').nth(1).unwrap();
    assert!(by_trace(started_id).is_some(), "{log:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_in_counts_a_chunked_body_and_a_retried_one() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (dir, path) = fresh_log("steady-access-in");
    let backend = Backend::start("echo").await;
    let yaml = format!(
        "access_log: {{path: {path}, fields: [path, method, bytes_in, status]}}
listeners: [{{name: web, bind: 127.0.0.1:0}}]
routes:
  - {{name: retried, listener: web, upstream: app, match: {{path_prefix: /retried}}, retries: {{attempts: 2}}}}
  - {{name: api, listener: web, upstream: app}}
upstreams: [{{name: app, endpoints: [{{address: {backend}}}]}}]
",
        path = path.display(),
        backend = backend.addr(),
    );
    let steady = start_yaml(&yaml).await;
    // Chunked (no Content-Length): 5 + 7 bytes, streamed upstream; then 4 bytes with a
    // Content-Length on a route that buffers bodies for retries.
    let mut s = tokio::net::TcpStream::connect(steady.addr).await.unwrap();
    s.write_all(
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n7\r\n, world\r\n0\r\n\r\n\
          POST /retried/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nConnection: close\r\n\r\nabcd",
    )
    .await
    .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut answer)).await;
    let log = lines(&path, 2);
    assert_eq!(log[0]["path"], "/echo", "{log:?}");
    assert_eq!(log[0]["bytes_in"], 12, "{log:?}");
    assert_eq!(log[1]["path"], "/retried/echo", "{log:?}");
    assert_eq!(log[1]["bytes_in"], 4, "{log:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_cut_after_its_head_names_why_in_failure() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (dir, path) = fresh_log("steady-access-cut");
    // Head and 7 of 1,000 body bytes, then silence with the connection open.
    let stalling = Backend::start("stalls").await;
    stalling.set_fault(Fault::StallMidResponse);
    let resetting = Backend::start("reset").await;
    resetting.set_fault(Fault::ResetMidResponse);
    let yaml = format!(
        "access_log: {{path: {path}, fields: [path, status, bytes_out, failure]}}
listeners: [{{name: web, bind: 127.0.0.1:0}}]
routes:
  - {{name: stalls, listener: web, upstream: stalling, match: {{path_prefix: /stalls}}, response_body_timeout: 200ms}}
  - {{name: resets, listener: web, upstream: resetting}}
upstreams:
  - {{name: stalling, endpoints: [{{address: {stalling}}}]}}
  - {{name: resetting, endpoints: [{{address: {resetting}}}]}}
",
        path = path.display(),
        stalling = stalling.addr(),
        resetting = resetting.addr(),
    );
    let steady = start_yaml(&yaml).await;
    for target in ["/stalls", "/resets"] {
        let mut s = tokio::net::TcpStream::connect(steady.addr).await.unwrap();
        s.write_all(format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut answer = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut answer)).await;
        assert!(
            read.is_ok(),
            "{target}: the cut response ends the connection"
        );
    }
    let log = lines(&path, 2);
    let line = |p: &str| {
        log.iter()
            .find(|l| l["path"] == p)
            .unwrap_or_else(|| panic!("no line for {p}: {log:?}"))
            .clone()
    };
    let stalled = line("/stalls");
    assert_eq!(stalled["status"], 200, "{stalled}");
    assert_eq!(stalled["bytes_out"], 7, "{stalled}");
    assert_eq!(stalled["failure"], "upstream-body-timeout", "{stalled}");
    let reset = line("/resets");
    assert_eq!(reset["status"], 200, "{reset}");
    assert_eq!(reset["failure"], "upstream-reset", "{reset}");
    let _ = std::fs::remove_dir_all(&dir);
}
