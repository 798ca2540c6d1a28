//! Happy paths of the data plane over real sockets: balancing, routing, header rewriting,
//! streaming, upgrades, 100-continue, HTTP/2, TLS, TCP, DNS names and draining.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::common::*;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use steady_testkit::{Backend, Fault, TcpEcho};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn backends(n: usize) -> Vec<Backend> {
    let mut v = Vec::new();
    for i in 0..n {
        v.push(Backend::start(&format!("b{i}")).await);
    }
    v
}

async fn tally(addr: std::net::SocketAddr, n: usize) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for _ in 0..n {
        let a = get(addr, "/").await;
        assert_eq!(a.status, 200);
        *seen
            .entry(a.json()["backend"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    seen
}

#[tokio::test]
async fn round_robin_spreads_evenly() {
    let bs = backends(3).await;
    let gw = start(&bs.iter().map(Backend::addr).collect::<Vec<_>>()).await;
    let seen = tally(gw.addr, 30).await;
    assert_eq!(seen.len(), 3);
    assert!(seen.values().all(|&n| n == 10), "{seen:?}");
}

#[tokio::test]
async fn weighted_round_robin_honours_weights() {
    let bs = backends(2).await;
    let yaml = format!(
        "listeners: [{{name: web, bind: '127.0.0.1:0'}}]
routes: [{{name: all, listener: web, upstream: app}}]
upstreams:
  - name: app
    balance: weighted-round-robin
    endpoints:
      - {{address: '{}', weight: 1}}
      - {{address: '{}', weight: 3}}
",
        bs[0].addr(),
        bs[1].addr()
    );
    let gw = start_yaml(&yaml).await;
    let seen = tally(gw.addr, 40).await;
    assert_eq!(seen["b0"], 10, "{seen:?}");
    assert_eq!(seen["b1"], 30, "{seen:?}");
}

#[tokio::test]
async fn ring_hash_keeps_a_key_on_one_endpoint() {
    let bs = backends(3).await;
    let addrs: Vec<_> = bs.iter().map(Backend::addr).collect();
    let gw = start_yaml(&simple_config(
        "ring-hash",
        &addrs,
        "    hash: {key: 'header:x-user'}",
        "",
    ))
    .await;
    for user in ["alice", "bob", "carol", "dave"] {
        let mut names = std::collections::HashSet::new();
        for _ in 0..5 {
            let req = http::Request::get(format!("http://{}/", gw.addr))
                .header("x-user", user)
                .body(Full::new(Bytes::new()))
                .unwrap();
            names.insert(
                send(req).await.json()["backend"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            );
        }
        assert_eq!(names.len(), 1, "{user} moved between {names:?}");
    }
}

#[tokio::test]
async fn routes_match_host_path_headers_and_methods() {
    let (api, blue, web) = (
        Backend::start("api").await,
        Backend::start("blue").await,
        Backend::start("web").await,
    );
    let yaml = format!(
        "listeners: [{{name: web, bind: '127.0.0.1:0'}}]
routes:
  - name: blue
    listener: web
    match: {{host: api.example.com, path_prefix: /v1, headers: {{x-tenant: blue}}, methods: [GET, POST]}}
    upstream: blue
  - name: api
    listener: web
    match: {{host: '*.example.com', path_prefix: /v1}}
    upstream: api
  - name: rest
    listener: web
    match: {{path_prefix: /}}
    upstream: web
upstreams:
  - {{name: blue, endpoints: [{{address: '{}'}}]}}
  - {{name: api, endpoints: [{{address: '{}'}}]}}
  - {{name: web, endpoints: [{{address: '{}'}}]}}
",
        blue.addr(),
        api.addr(),
        web.addr()
    );
    let gw = start_yaml(&yaml).await;
    let ask = |method: &str, host: &str, path: &str, tenant: Option<&str>| {
        let mut b = http::Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", gw.addr))
            .header("host", host);
        if let Some(t) = tenant {
            b = b.header("x-tenant", t);
        }
        b.body(Full::new(Bytes::new())).unwrap()
    };
    let name = |a: Answer| a.json()["backend"].as_str().unwrap().to_string();
    assert_eq!(
        name(send(ask("GET", "api.example.com", "/v1/users", Some("blue"))).await),
        "blue"
    );
    assert_eq!(
        name(send(ask("DELETE", "api.example.com", "/v1/users", Some("blue"))).await),
        "api"
    );
    assert_eq!(
        name(send(ask("GET", "api.example.com:8080", "/v1", Some("blue"))).await),
        "blue"
    );
    assert_eq!(
        name(send(ask("GET", "api.example.com", "/v1/users", Some("green"))).await),
        "api"
    );
    assert_eq!(
        name(send(ask("GET", "shop.example.com", "/v1/x", None)).await),
        "api"
    );
    // `/v10` is not under the `/v1` prefix.
    assert_eq!(
        name(send(ask("GET", "shop.example.com", "/v10", None)).await),
        "web"
    );
    assert_eq!(
        name(send(ask("GET", "example.com", "/v1/x", None)).await),
        "web"
    );
}

#[tokio::test]
async fn no_route_is_404_json() {
    let b = Backend::start("b").await;
    let yaml = format!(
        "listeners: [{{name: web, bind: '127.0.0.1:0'}}]
routes: [{{name: only, listener: web, match: {{host: only.example}}, upstream: app}}]
upstreams: [{{name: app, endpoints: [{{address: '{}'}}]}}]
",
        b.addr()
    );
    let gw = start_yaml(&yaml).await;
    let a = get(gw.addr, "/").await;
    assert_eq!(a.status, 404);
    assert_eq!(a.json()["error"], "no-route");
    assert!(a.headers.contains_key("x-request-id"));
}

#[tokio::test]
async fn forwarded_headers_request_id_and_hop_by_hop() {
    let b = Backend::start("b").await;
    let gw = start(&[b.addr()]).await;
    let req = http::Request::get(format!("http://{}/", gw.addr))
        .header("host", "shop.example:8443")
        .header("x-forwarded-for", "203.0.113.9")
        .header("x-request-id", "req-42")
        .header("connection", "x-private")
        .header("x-private", "secret")
        .header("proxy-connection", "keep-alive")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let a = send(req).await;
    let h = &a.json()["headers"];
    assert_eq!(h["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "shop.example:8443");
    assert_eq!(h["host"], "shop.example:8443");
    assert_eq!(h["x-request-id"], "req-42");
    assert!(
        h.get("x-private").is_none(),
        "header named by Connection leaked: {h}"
    );
    assert!(h.get("proxy-connection").is_none());
    assert_eq!(a.headers["x-request-id"], "req-42");

    // Without one, steady makes an id and returns it.
    let a = get(gw.addr, "/").await;
    let id = a.headers["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(id.len(), 32);
    assert_eq!(a.json()["headers"]["x-request-id"], id.as_str());
}

#[tokio::test]
async fn bodies_stream_both_ways() {
    let b = Backend::start("b").await;
    let gw = start(&[b.addr()]).await;
    // 3 MiB up and back, chunked from a stream (no content-length).
    let payload: Vec<u8> = (0..3 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let chunks: Vec<Result<hyper::body::Frame<Bytes>, std::io::Error>> = payload
        .chunks(64 * 1024)
        .map(|c| Ok(hyper::body::Frame::data(Bytes::copy_from_slice(c))))
        .collect();
    let body = http_body_util::StreamBody::new(futures_util::stream::iter(chunks));
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http();
    let req = http::Request::post(format!("http://{}/echo", gw.addr))
        .body(body)
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let back = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(back.len(), payload.len());
    assert!(back[..] == payload[..]);

    // A long streamed response arrives whole.
    let a = get(gw.addr, "/stream/2048").await;
    assert_eq!(a.status, 200);
    assert_eq!(a.body.len(), 2048 * 1024);
}

#[tokio::test]
async fn upstream_statuses_pass_through_and_keepalive_reuses_connections() {
    let b = Backend::start("b").await;
    let gw = start(&[b.addr()]).await;
    assert_eq!(get(gw.addr, "/status/503").await.status, 503);
    assert_eq!(get(gw.addr, "/status/201").await.status, 201);
    // Many sequential requests over one client connection all succeed.
    for _ in 0..50 {
        assert_eq!(get(gw.addr, "/").await.status, 200);
    }
}

#[tokio::test]
async fn websocket_style_upgrade_is_spliced() {
    let b = Backend::start("b").await;
    let gw = start(&[b.addr()]).await;
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(
        b"GET /upgrade HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut byte))
            .await
            .unwrap()
            .unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    s.write_all(b"ping over the tunnel").await.unwrap();
    let mut buf = [0u8; 20];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"ping over the tunnel");
}

#[tokio::test]
async fn expect_100_continue_is_honoured() {
    let b = Backend::start("b").await;
    let gw = start(&[b.addr()]).await;
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
    )
    .await
    .unwrap();
    let mut buf = vec![0u8; 25];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 100 Continue"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    s.write_all(b"hello").await.unwrap();
    let rest = read_until_close(&mut s, Duration::from_millis(500)).await;
    assert!(rest.contains("200 OK"), "{rest}");
    assert!(rest.ends_with("hello"), "{rest}");
}

#[tokio::test]
async fn h2c_clients_and_h2c_upstreams() {
    let b = Backend::start("b").await;
    // Client speaks h2c to steady; steady speaks HTTP/1.1 upstream.
    let gw = start(&[b.addr()]).await;
    let h2 = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    let req = http::Request::get(format!("http://{}/h2", gw.addr))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = h2.request(req).await.unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["version"], "HTTP/1.1");
    assert_eq!(v["path"], "/h2");
    assert!(v["headers"]["host"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1:"));

    // steady speaks h2c upstream.
    let gw = start_yaml(&simple_config(
        "round-robin",
        &[b.addr()],
        "    protocol: h2c",
        "",
    ))
    .await;
    let a = get(gw.addr, "/up").await;
    assert_eq!(a.status, 200);
    assert_eq!(a.json()["version"], "HTTP/2.0");
}

#[tokio::test]
async fn https_listener_negotiates_h2_and_http11() {
    let dir = std::env::temp_dir().join(format!("steady-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    std::fs::write(dir.join("cert.pem"), cert.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), cert.key_pair.serialize_pem()).unwrap();
    let b = Backend::start("b").await;
    let listener = format!(
        "    protocol: https\n    tls: {{cert: '{}', key: '{}'}}",
        dir.join("cert.pem").display(),
        dir.join("key.pem").display()
    );
    let gw = start_yaml(&simple_config("round-robin", &[b.addr()], "", &listener)).await;

    for alpn in [&b"h2"[..], &b"http/1.1"[..]] {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.cert.der().clone()).unwrap();
        let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        cfg.alpn_protocols = vec![alpn.to_vec()];
        let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
        let tcp = TcpStream::connect(gw.addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let tls = connector.connect(name, tcp).await.unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(alpn));
        let io = hyper_util::rt::TokioIo::new(tls);
        let req = http::Request::get("/tls")
            .header("host", "localhost")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = if alpn == b"h2" {
            let (mut send, conn) =
                hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
                    .await
                    .unwrap();
            tokio::spawn(conn);
            let req = http::Request::get(format!("https://localhost:{}/tls", gw.addr.port()))
                .body(Full::new(Bytes::new()))
                .unwrap();
            send.send_request(req).await.unwrap()
        } else {
            let (mut send, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
            tokio::spawn(conn);
            send.send_request(req).await.unwrap()
        };
        assert_eq!(resp.status(), 200);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["headers"]["x-forwarded-proto"], "https");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn tcp_listener_forwards_bytes_with_balancing() {
    let (e1, e2) = (TcpEcho::start("one").await, TcpEcho::start("two").await);
    let yaml = format!(
        "listeners: [{{name: web, bind: '127.0.0.1:0', protocol: tcp}}]
routes: [{{name: l4, listener: web, upstream: echo}}]
upstreams:
  - name: echo
    balance: round-robin
    endpoints: [{{address: '{}'}}, {{address: '{}'}}, {{address: '{}'}}]
",
        e1.addr(),
        steady_testkit::dead_addr(),
        e2.addr()
    );
    let gw = start_yaml(&yaml).await;
    let mut greetings = HashMap::new();
    for _ in 0..4 {
        let mut s = TcpStream::connect(gw.addr).await.unwrap();
        s.write_all(b"hello\n").await.unwrap();
        let mut buf = vec![0u8; 10];
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut buf))
            .await
            .unwrap()
            .unwrap();
        let text = String::from_utf8(buf).unwrap();
        assert!(text.ends_with("\nhello\n"), "{text:?}");
        *greetings.entry(text[..3].to_string()).or_insert(0) += 1;
    }
    // The dead endpoint is skipped by trying another one; both live ones served.
    assert_eq!(greetings.len(), 2, "{greetings:?}");
}

#[tokio::test]
async fn dns_names_are_resolved() {
    let b = Backend::start("b").await;
    let yaml = simple_config("round-robin", &[], "", "").replace(
        "    endpoints:\n",
        &format!(
            "    dns_refresh: 1s\n    endpoints:\n      - address: 'localhost:{}'\n",
            b.addr().port()
        ),
    );
    let gw = start_yaml(&yaml).await;
    let a = get(gw.addr, "/").await;
    // localhost may resolve to ::1 first, where the backend does not listen; one of the
    // answers is 127.0.0.1 and round robin reaches it.
    let a = if a.status == 200 {
        a
    } else {
        get(gw.addr, "/").await
    };
    assert_eq!(a.status, 200);
    let ups = gw.gateway.upstreams();
    assert!(ups[0]
        .endpoints()
        .endpoints()
        .iter()
        .all(|e| e.name() == format!("localhost:{}", b.addr().port())));
}

#[tokio::test]
async fn shutdown_drains_in_flight_requests() {
    let b = Backend::start("b").await;
    b.set_fault(Fault::Delay(Duration::from_millis(400)));
    let gw = start(&[b.addr()]).await;
    let addr = gw.addr;
    let slow = tokio::spawn(async move { get(addr, "/").await.status });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let gateway = gw.gateway.clone();
    let drained = tokio::spawn(async move { gateway.shutdown(Duration::from_secs(5)).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!gw.gateway.is_ready());
    // New connections are refused once the listener is closed.
    assert!(TcpStream::connect(addr).await.is_err());
    assert_eq!(slow.await.unwrap(), 200, "in-flight request finished");
    assert!(drained.await.unwrap(), "drained before the deadline");
}

#[tokio::test]
async fn drain_deadline_bounds_shutdown() {
    let b = Backend::start("b").await;
    b.set_fault(Fault::Stall);
    let yaml =
        simple_config("round-robin", &[b.addr()], "", "").replace("timeout: 2s", "timeout: 60s");
    let gw = start_yaml(&yaml).await;
    let addr = gw.addr;
    let _stuck = tokio::spawn(async move { get(addr, "/").await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!gw.gateway.shutdown(Duration::from_millis(300)).await);
}

/// Starts `n` single-threaded worker runtimes on their own threads, as `steady serve` does.
fn worker_runtimes(
    n: usize,
) -> (
    Vec<tokio::runtime::Handle>,
    tokio_util::sync::CancellationToken,
) {
    let stop = tokio_util::sync::CancellationToken::new();
    let handles = (0..n)
        .map(|i| {
            let (tx, rx) = std::sync::mpsc::channel();
            let stop = stop.clone();
            std::thread::spawn(move || {
                steady_proxy::worker::set_current(i);
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                tx.send(rt.handle().clone()).unwrap();
                rt.block_on(stop.cancelled());
            });
            rx.recv().unwrap()
        })
        .collect();
    (handles, stop)
}

#[tokio::test]
async fn several_workers_share_a_listener_and_drain_together() {
    let bs = backends(2).await;
    let addrs: Vec<_> = bs.iter().map(Backend::addr).collect();
    let config =
        steady_config::parse(&simple_config("round-robin", &addrs, "", ""), "<test>").unwrap();
    let (workers, stop) = worker_runtimes(2);
    let gateway = steady_proxy::Gateway::start_on(&config, &workers)
        .await
        .unwrap();
    let addr = gateway.listener_addr("web").unwrap();
    // Many fresh connections: SO_REUSEPORT spreads them over both workers' sockets.
    let mut tasks = Vec::new();
    for _ in 0..40 {
        tasks.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .await
                .unwrap();
            read_until_close(&mut s, Duration::from_secs(5)).await
        }));
    }
    for t in tasks {
        let answer = t.await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    assert_eq!(bs[0].hits() + bs[1].hits(), 40);
    assert!(gateway.shutdown(Duration::from_secs(5)).await);
    assert!(TcpStream::connect(addr).await.is_err());
    stop.cancel();
}

#[tokio::test]
async fn tcp_connections_close_after_idle_timeout() {
    let echo = TcpEcho::start("one").await;
    let yaml = format!(
        "listeners: [{{name: web, bind: '127.0.0.1:0', protocol: tcp, limits: {{idle_timeout: 300ms}}}}]
routes: [{{name: l4, listener: web, upstream: echo}}]
upstreams: [{{name: echo, endpoints: [{{address: '{}'}}]}}]
",
        echo.addr()
    );
    let gw = start_yaml(&yaml).await;
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    let mut buf = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"one\n");
    // Traffic keeps it open past the idle timeout...
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        s.write_all(b"x").await.unwrap();
        let mut one = [0u8; 1];
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut one))
            .await
            .unwrap()
            .unwrap();
    }
    // ...silence closes it.
    let mut byte = [0u8; 1];
    let closed = tokio::time::timeout(Duration::from_secs(10), s.read(&mut byte)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "idle TCP connection not closed: {closed:?}"
    );
}

#[tokio::test]
async fn active_health_checks_take_failing_endpoints_out_and_back() {
    let bs = backends(2).await;
    let addrs: Vec<_> = bs.iter().map(Backend::addr).collect();
    let health = "    health:\n      active:\n        http: {path: /healthz}\n        interval: 100ms\n        timeout: 50ms\n        healthy_threshold: 1\n        unhealthy_threshold: 1";
    let gw = start_yaml(&simple_config("round-robin", &addrs, health, "")).await;
    let wait_for = |want_healthy: bool| {
        let gateway = gw.gateway.clone();
        let addr = addrs[0];
        async move {
            for _ in 0..200 {
                let reports = gateway.health_reports("app").unwrap();
                let r = reports.iter().find(|(a, _)| *a == addr).unwrap();
                if r.1.last_check.is_some() && r.1.healthy == want_healthy {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            panic!("endpoint never became healthy={want_healthy}");
        }
    };
    wait_for(true).await;
    assert!(
        gw.gateway.is_ready(),
        "ready after the first round of checks"
    );

    bs[0].set_fault(Fault::Status(500));
    wait_for(false).await;
    let seen = tally(gw.addr, 10).await;
    assert_eq!(
        seen.get("b1"),
        Some(&10),
        "all traffic on the healthy endpoint: {seen:?}"
    );

    bs[0].set_fault(Fault::None);
    wait_for(true).await;
    let seen = tally(gw.addr, 10).await;
    assert_eq!(seen.len(), 2, "back in rotation: {seen:?}");
}

/// A keep-alive HTTP/1.1 backend that counts the connections it accepts and, when
/// `close_after` is set, closes each connection after that many responses (without
/// saying so), as backends with short keep-alive timeouts do.
async fn counting_backend(
    close_after: Option<usize>,
) -> (
    steady_testkit::RawServer,
    Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let conns = Arc::new(AtomicUsize::new(0));
    let counter = conns.clone();
    let server = steady_testkit::RawServer::start(move |mut s: TcpStream| {
        counter.fetch_add(1, Ordering::SeqCst);
        async move {
            let mut served = 0;
            loop {
                let head = steady_testkit::read_head(&mut s).await.unwrap_or_default();
                if head.is_empty() {
                    return;
                }
                if s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await
                    .is_err()
                {
                    return;
                }
                served += 1;
                if close_after == Some(served) {
                    return;
                }
            }
        }
    })
    .await;
    (server, conns)
}

#[tokio::test]
async fn upstream_connections_are_reused() {
    let (server, conns) = counting_backend(None).await;
    let gw = start(&[server.addr()]).await;
    for _ in 0..20 {
        let a = get(gw.addr, "/").await;
        assert_eq!(a.status, 200);
        assert_eq!(&a.body[..], b"ok");
    }
    assert_eq!(
        conns.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "one pooled connection serves them all"
    );
}

#[tokio::test]
async fn a_pooled_connection_the_upstream_closed_is_replaced_transparently() {
    let (server, conns) = counting_backend(Some(1)).await;
    let gw = start(&[server.addr()]).await;
    for _ in 0..10 {
        let a = get(gw.addr, "/").await;
        assert_eq!(a.status, 200, "{:?}", String::from_utf8_lossy(&a.body));
        // Let the backend's close arrive before the next request, as a keep-alive
        // timeout would.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(conns.load(std::sync::atomic::Ordering::SeqCst), 10);
}

#[tokio::test]
async fn passive_outlier_detection_ejects_an_endpoint_that_keeps_failing() {
    let bs = backends(2).await;
    let addrs: Vec<_> = bs.iter().map(Backend::addr).collect();
    let passive = "    health:\n      passive: {consecutive_failures: 3, base_ejection: 30s, max_ejection_percent: 50}";
    let gw = start_yaml(&simple_config("round-robin", &addrs, passive, "")).await;
    bs[0].set_fault(Fault::Status(500));
    // Round robin alternates, so six requests give b0 its three failures in a row.
    let mut errors = 0;
    for _ in 0..6 {
        if get(gw.addr, "/").await.status == 500 {
            errors += 1;
        }
    }
    assert_eq!(errors, 3);
    let ep = gw.gateway.upstreams()[0]
        .endpoints()
        .endpoints()
        .iter()
        .find(|e| e.addr() == addrs[0])
        .cloned()
        .unwrap();
    assert!(ep.is_ejected(), "b0 ejected after 3 failures in a row");
    let seen = tally(gw.addr, 10).await;
    assert_eq!(
        seen.get("b1"),
        Some(&10),
        "ejected endpoint gets no traffic: {seen:?}"
    );
    let metrics = gw.gateway.metrics().encode();
    assert!(
        metrics.contains(&format!(
            "steady_endpoint_ejected{{upstream=\"app\",endpoint=\"{}\"}} 1",
            addrs[0]
        )),
        "{metrics}"
    );
    assert!(metrics.contains("steady_outlier_ejections_total{upstream=\"app\"} 1"));
}

#[tokio::test]
async fn a_passing_active_check_readmits_an_ejected_endpoint() {
    let bs = backends(2).await;
    let addrs: Vec<_> = bs.iter().map(Backend::addr).collect();
    let health = "    health:\n      active: {http: {path: /}, interval: 100ms, timeout: 80ms}\n      passive: {consecutive_failures: 3, base_ejection: 60s, max_ejection_percent: 50}";
    let gw = start_yaml(&simple_config("round-robin", &addrs, health, "")).await;
    let ep = gw.gateway.upstreams()[0]
        .endpoints()
        .endpoints()
        .iter()
        .find(|e| e.addr() == addrs[0])
        .cloned()
        .unwrap();
    bs[0].set_fault(Fault::Status(500));
    for _ in 0..20 {
        if ep.is_ejected() {
            break;
        }
        get(gw.addr, "/").await;
    }
    assert!(ep.is_ejected(), "b0 ejected by passive detection");
    // The endpoint recovers: its next passing check readmits it long before the 60s
    // ejection would end.
    bs[0].set_fault(Fault::None);
    for _ in 0..100 {
        if !ep.is_ejected() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!ep.is_ejected(), "a passing active check readmitted b0");
}

/// More idle keep-alive connections than a worker lets keep their request's box
/// (`server::idle_box::KEEP`, 256): those past it give the box up while idle and make a
/// new one for their next request, which is served like any other.
#[tokio::test]
async fn many_idle_keep_alive_connections_are_each_served_again() {
    let b = Backend::start("b").await;
    let gw = start(&[b.addr()]).await;
    let mut conns = Vec::new();
    for _ in 0..300 {
        conns.push(TcpStream::connect(gw.addr).await.unwrap());
    }
    for round in 0..2 {
        for (i, s) in conns.iter_mut().enumerate() {
            let path = format!("/r{round}-{i}");
            let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
            s.write_all(req.as_bytes()).await.unwrap();
            let head = tokio::time::timeout(Duration::from_secs(5), steady_testkit::read_head(s))
                .await
                .expect("a response head within 5 s")
                .unwrap();
            assert!(head.starts_with("HTTP/1.1 200"), "{path}: {head}");
            let length: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .expect("a content-length");
            let mut body = vec![0u8; length];
            s.read_exact(&mut body).await.unwrap();
            let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(json["path"], path.as_str());
        }
    }
}
