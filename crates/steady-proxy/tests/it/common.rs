//! Shared helpers of the proxy's integration tests: start a gateway from YAML on
//! `127.0.0.1:0`, and talk to it with a real HTTP client or raw bytes.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use steady_proxy::Gateway;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A gateway started from YAML whose listener `web` is bound to a free port.
pub struct Running {
    pub gateway: Arc<Gateway>,
    pub addr: SocketAddr,
}

/// Starts a gateway from a full YAML config.
pub async fn start_yaml(yaml: &str) -> Running {
    let config = steady_config::parse(yaml, "<test>").unwrap_or_else(|d| panic!("config:\n{d}"));
    let gateway = Gateway::start(&config).await.expect("gateway starts");
    let addr = gateway.listener_addr("web").expect("listener web");
    Running { gateway, addr }
}

/// YAML for one `http` listener `web` with one catch-all route to `backends`.
pub fn simple_config(
    balance: &str,
    backends: &[SocketAddr],
    upstream_extra: &str,
    listener_extra: &str,
) -> String {
    let endpoints: String = backends
        .iter()
        .map(|a| format!("      - address: {a}\n"))
        .collect();
    format!(
        "listeners:
  - name: web
    bind: 127.0.0.1:0
{listener_extra}
routes:
  - name: all
    listener: web
    upstream: app
    timeout: 2s
upstreams:
  - name: app
    balance: {balance}
    connect_timeout: 500ms
{upstream_extra}
    endpoints:
{endpoints}"
    )
}

/// Starts a round-robin gateway in front of `backends`.
pub async fn start(backends: &[SocketAddr]) -> Running {
    start_yaml(&simple_config("round-robin", backends, "", "")).await
}

/// A plain HTTP/1.1 client.
pub fn client() -> Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// A response with its body collected.
pub struct Answer {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

/// Sends `req` and collects the answer.
pub async fn send(req: http::Request<Full<Bytes>>) -> Answer {
    let resp = tokio::time::timeout(Duration::from_secs(10), client().request(req))
        .await
        .expect("answer within 10s")
        .expect("request succeeds");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    Answer {
        status,
        headers,
        body,
    }
}

/// GETs `path` from the gateway.
pub async fn get(addr: SocketAddr, path: &str) -> Answer {
    let req = http::Request::get(format!("http://{addr}{path}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    send(req).await
}

/// Writes raw bytes, then reads until the server closes or `wait` passes; returns what came back.
pub async fn raw(addr: SocketAddr, bytes: &[u8], wait: Duration) -> String {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(bytes).await.expect("write");
    read_until_close(&mut s, wait).await
}

/// Reads until EOF or `wait` passes.
pub async fn read_until_close(s: &mut TcpStream, wait: Duration) -> String {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(wait, async {
        let mut buf = [0u8; 8192];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    String::from_utf8_lossy(&out).into_owned()
}

/// YAML for route `api` on listener `web` to a round-robin upstream `app` over
/// `endpoints`, with `retries` (a YAML map) and the route `timeout`.
pub fn retry_config(endpoints: &[SocketAddr], retries: &str, timeout: &str) -> String {
    let endpoints: Vec<String> = endpoints
        .iter()
        .map(|a| format!("{{address: {a}}}"))
        .collect();
    format!(
        "listeners: [{{name: web, bind: 127.0.0.1:0}}]
routes:
  - name: api
    listener: web
    upstream: app
    timeout: {timeout}
    retries: {retries}
upstreams:
  - name: app
    balance: round-robin
    connect_timeout: 500ms
    endpoints: [{}]
",
        endpoints.join(", ")
    )
}

/// `steady_retries_total{route="api",reason}` now (0 if absent).
pub fn retries_of(steady: &Running, reason: &str) -> u64 {
    let metrics = steady.gateway.metrics().encode();
    let prefix = format!("steady_retries_total{{route=\"api\",reason=\"{reason}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0, |v| v.trim().parse().unwrap())
}
