//! Shared helpers of the admin tests: a gateway and its admin listener in-process, in
//! front of one testkit backend, and a plain HTTP/1.1 GET.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use steady_proxy::Gateway;
use steady_testkit::Backend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// A gateway with listener `web` (route `api` to upstream `app`) and its admin listener.
pub struct Admin {
    pub gateway: Arc<Gateway>,
    pub web: SocketAddr,
    pub admin: SocketAddr,
    pub backend: Option<Backend>,
    stop: CancellationToken,
}

impl Drop for Admin {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Starts a backend, a gateway routing everything to it, and the admin listener.
pub async fn start() -> Admin {
    let backend = Backend::start("a").await;
    let yaml = format!(
        "listeners: [{{name: web, bind: 127.0.0.1:0}}]
routes: [{{name: api, listener: web, upstream: app}}]
upstreams: [{{name: app, endpoints: [{{address: {}}}]}}]
",
        backend.addr()
    );
    let mut admin = start_yaml(&yaml).await;
    admin.backend = Some(backend);
    admin
}

/// Starts a gateway from `yaml` (with a listener `web`) and its admin listener.
pub async fn start_yaml(yaml: &str) -> Admin {
    let config = steady_config::parse(yaml, "<test>").unwrap();
    let gateway = Gateway::start(&config).await.unwrap();
    let web = gateway.listener_addr("web").unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(steady_admin::serve(
        listener,
        gateway.clone(),
        None,
        stop.clone(),
    ));
    Admin {
        gateway,
        web,
        admin,
        backend: None,
        stop,
    }
}

/// GETs `path` over HTTP/1.1 and returns `(status, body)`; status 0 if the server is
/// not up.
pub async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let Ok(mut s) = TcpStream::connect(addr).await else {
        return (0, String::new());
    };
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).await.is_err() {
        return (0, String::new());
    }
    let mut out = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out)).await;
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default();
    (status, body)
}

/// GETs `path` and parses the body as JSON.
pub async fn get_json(addr: SocketAddr, path: &str) -> (u16, serde_json::Value) {
    let (status, body) = get(addr, path).await;
    let json =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {body}"));
    (status, json)
}
