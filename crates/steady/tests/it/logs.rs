//! steady's own logs name the request that caused a state change: an ejection logs
//! the trace id of the request whose failure tipped it, so the operator can find that
//! request in the access log and its spans.

use std::time::Duration;

use steady_testkit::harness::{http_client, SteadyProcess};
use steady_testkit::{Backend, Fault};

const BIN: &str = env!("CARGO_BIN_EXE_steady");
const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

#[tokio::test]
async fn an_ejection_log_carries_the_trace_id_of_the_request_that_caused_it() {
    let failing = Backend::start("failing").await;
    failing.set_fault(Fault::Status(500));
    let ok = Backend::start("ok").await;
    let dir = std::env::temp_dir().join(format!("steady-logs-{}", std::process::id()));
    let yaml = format!(
        "admin: {{bind: \"{{admin}}\"}}
listeners: [{{name: web, bind: \"{{listen}}\"}}]
routes: [{{name: api, listener: web, upstream: app}}]
upstreams:
  - name: app
    balance: round-robin
    health: {{passive: {{consecutive_failures: 1, max_ejection_percent: 50}}}}
    endpoints: [{{address: {}}}, {{address: {}}}]
",
        failing.addr(),
        ok.addr()
    );
    // Structured logs, as a log pipeline would take them (the child inherits this).
    std::env::set_var("STEADY_LOG_FORMAT", "json");
    let steady = SteadyProcess::start(BIN.as_ref(), &dir, "logs", &yaml)
        .await
        .unwrap();
    let client = http_client();
    // Round robin: one of the first two requests meets the failing endpoint.
    for _ in 0..2 {
        let req = http::Request::get(format!("http://{}/", steady.addr))
            .header("traceparent", format!("00-{TRACE}-00f067aa0ba902b7-01"))
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        let _ = client.request(req).await.unwrap();
    }
    let mut line = None;
    for _ in 0..50 {
        line = steady
            .logs()
            .lines()
            .find(|l| l.contains("endpoint ejected"))
            .map(str::to_owned);
        if line.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let line = line.unwrap_or_else(|| panic!("no ejection logged:\n{}", steady.logs()));
    let json: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    assert_eq!(json["trace_id"], TRACE, "{line}");
    assert_eq!(json["endpoint"], failing.addr().to_string(), "{line}");
    assert_eq!(json["level"], "WARN", "{line}");
}
