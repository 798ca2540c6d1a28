//! Formats access-log lines in a loop, for counting instructions per line:
//! `valgrind --tool=callgrind target/release/examples/line_cost 100000`.
use std::time::{Duration, SystemTime};

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);
    let config: steady_config::access_log::AccessLog =
        serde_yaml_ng::from_str("{path: /tmp/linecost/access.log}").unwrap();
    let log = steady_proxy::access_log::AccessLog::start(&config).unwrap();
    let mut total = 0usize;
    for i in 0..n {
        let entry = steady_proxy::access_log::Entry {
            time: Some(SystemTime::now()),
            trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736"),
            span_id: Some("00f067aa0ba902b7"),
            request_id: Some("9f86d081884c7d659a2feaa0c55ad015"),
            client: Some("127.0.0.1:53422".parse().unwrap()),
            method: "GET",
            host: Some("127.0.0.1:8080"),
            path: "/",
            status: 200,
            route: Some("all"),
            upstream: Some("backend"),
            endpoint: Some("127.0.0.1:43211".parse().unwrap()),
            attempts: 1,
            bytes_in: 0,
            bytes_out: 3 + i % 2,
            duration: Duration::from_micros(412),
            upstream_duration: Some(Duration::from_micros(301)),
            ttfb: Some(Duration::from_micros(398)),
            failure: None,
        };
        total += log.format(&entry).len();
    }
    println!("{total}");
}
