//! Logs access-log lines in a loop through the request path's own call (format into the
//! thread's batch; the writer thread writes them to a file), for counting instructions
//! per line: `valgrind --tool=callgrind target/release/examples/line_cost 100000`, then
//! divide the total by the count (the setup is a few hundred thousand instructions).
use opentelemetry::trace::{SpanId, TraceId};
use std::time::{Duration, SystemTime};

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);
    let dir = std::env::temp_dir().join(format!("steady-line-cost-{}", std::process::id()));
    let yaml = format!("{{path: {}/access.log, buffer: {n}}}", dir.display());
    let config: steady_config::access_log::AccessLog = serde_yaml_ng::from_str(&yaml).unwrap();
    let log = steady_proxy::access_log::AccessLog::start(&config).unwrap();
    let mut entry = steady_proxy::access_log::Entry {
        time: Some(SystemTime::now()),
        trace_id: TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").ok(),
        span_id: SpanId::from_hex("00f067aa0ba902b7").ok(),
        request_id: Some(b"9f86d081884c7d659a2feaa0c55ad015"),
        client: Some("127.0.0.1:53422".parse().unwrap()),
        method: "GET",
        host: Some(b"127.0.0.1:8080"),
        path: "/",
        status: 200,
        route: Some("all"),
        upstream: Some("backend"),
        endpoint: Some("127.0.0.1:43211".parse().unwrap()),
        attempts: 1,
        bytes_in: 0,
        bytes_out: 0,
        duration: Duration::from_micros(412),
        upstream_duration: Some(Duration::from_micros(301)),
        ttfb: Some(Duration::from_micros(398)),
        failure: None,
    };
    for i in 0..n {
        entry.bytes_out = 3 + i % 2;
        log.log(&entry);
    }
    log.close(Duration::from_secs(10));
    println!("{} lines written, {} dropped", log.written(), log.dropped());
    let _ = std::fs::remove_dir_all(&dir);
}
