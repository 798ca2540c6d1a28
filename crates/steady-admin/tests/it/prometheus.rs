//! A real Prometheus (Debian's `prometheus` package) scrapes steady's admin `/metrics`,
//! and its query API returns steady's series: traffic per route and status class, the
//! latency histogram usable by `histogram_quantile`, and per-endpoint gauges.

use crate::common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Kills Prometheus when the test ends, however it ends.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    _dir: TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A directory removed at drop.
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Starts Prometheus on a free loopback port, scraping `target` every second.
fn start_prometheus(target: SocketAddr) -> Prometheus {
    let dir = std::env::temp_dir().join(format!("steady-prom-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
             scrape_configs:\n  - job_name: steady\n    static_configs: [{{targets: ['{target}']}}]\n"
        ),
    )
    .unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{}", steady_testkit::free_port())
        .parse()
        .unwrap();
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address={addr}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("prometheus not found ({e}): install Debian's prometheus package (.ci/run does)")
        });
    Prometheus {
        child,
        addr,
        _dir: TempDir(dir),
    }
}

/// GETs `path` and returns the body (empty if the server is not up yet).
async fn http_get(addr: SocketAddr, path: &str) -> String {
    common::get(addr, path).await.1
}

/// Queries Prometheus until `query` returns at least one series (bounded), and returns
/// the result vector.
async fn query_until_present(prom: &Prometheus, query: &str) -> Vec<serde_json::Value> {
    let path = format!("/api/v1/query?query={}", encode(query));
    let mut last = String::new();
    for _ in 0..120 {
        let body = http_get(prom.addr, &path).await;
        // Chunked or not, the JSON object is the part between the outer braces.
        if let (Some(start), Some(end)) = (body.find('{'), body.rfind('}')) {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&body[start..=end]) {
                if let Some(result) = v["data"]["result"].as_array() {
                    if !result.is_empty() {
                        return result.clone();
                    }
                }
            }
        }
        last = body;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("Prometheus never returned `{query}`; last answer: {last}");
}

/// Percent-encodes a PromQL query for a URL.
fn encode(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'.' | b'-' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_steady_and_answers_queries() {
    let steady = common::start().await;
    let (web, admin_addr) = (steady.web, steady.admin);

    for _ in 0..20 {
        assert!(http_get(web, "/").await.contains("\"backend\""));
    }
    let prom = start_prometheus(admin_addr);

    let up = query_until_present(&prom, "up{job=\"steady\"} == 1").await;
    assert_eq!(up[0]["value"][1], "1", "the scrape succeeded: {up:?}");

    let requests = query_until_present(&prom, "steady_requests_total{route=\"api\"}").await;
    let twoxx = requests
        .iter()
        .find(|s| s["metric"]["code"] == "2xx")
        .unwrap_or_else(|| panic!("no 2xx series: {requests:?}"));
    assert_eq!(twoxx["value"][1], "20", "{twoxx:?}");

    // The latency histogram works with PromQL's histogram_quantile.
    let p99 = query_until_present(
        &prom,
        "histogram_quantile(0.99, sum by (le) (steady_request_duration_seconds_bucket{route=\"api\"}))",
    )
    .await;
    let seconds: f64 = p99[0]["value"][1].as_str().unwrap().parse().unwrap();
    assert!(seconds.is_finite() && seconds > 0.0, "{p99:?}");

    let available = query_until_present(&prom, "steady_endpoint_available{upstream=\"app\"}").await;
    assert_eq!(available[0]["value"][1], "1");
    let rss = query_until_present(&prom, "process_resident_memory_bytes{job=\"steady\"}").await;
    let bytes: f64 = rss[0]["value"][1].as_str().unwrap().parse().unwrap();
    assert!(bytes > 1e6, "{rss:?}");
}
