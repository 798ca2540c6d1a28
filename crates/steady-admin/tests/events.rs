//! `/api/events` lists state changes newest first: an outlier ejection, a health check
//! flip, and reloads (applied and refused).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use steady_proxy::Gateway;
use steady_testkit::{Backend, Fault};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// GETs `path` over HTTP/1.1 and returns the status and body.
async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out))
        .await
        .expect("answer in time")
        .unwrap();
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_string());
    (status, body.unwrap_or_default())
}

/// The events the admin API lists now.
async fn events(admin: SocketAddr) -> Vec<serde_json::Value> {
    let (status, body) = http_get(admin, "/api/events").await;
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["events"].as_array().unwrap().clone()
}

/// Polls `/api/events` (bounded) until one matches `want`.
async fn wait_for_event(
    admin: SocketAddr,
    what: &str,
    want: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let mut last = Vec::new();
    for _ in 0..200 {
        last = events(admin).await;
        if let Some(e) = last.iter().find(|e| want(e)) {
            return e.clone();
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("no {what} event; events: {last:#?}");
}

fn yaml(good: SocketAddr, bad: SocketAddr, checked: SocketAddr, route: &str) -> String {
    format!(
        "listeners: [{{name: web, bind: 127.0.0.1:0}}]
routes: [{{name: {route}, listener: web, upstream: app}}]
upstreams:
  - name: app
    endpoints: [{{address: {good}}}, {{address: {bad}}}]
    health:
      passive: {{consecutive_failures: 3, base_ejection: 60s, max_ejection_percent: 50}}
  - name: checked
    endpoints: [{{address: {checked}}}]
    health:
      active: {{http: {{path: /}}, interval: 100ms, timeout: 80ms, healthy_threshold: 1, unhealthy_threshold: 1}}
"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ejections_health_flips_and_reloads_show_up_newest_first() {
    let (good, bad, checked) = (
        Backend::start("good").await,
        Backend::start("bad").await,
        Backend::start("checked").await,
    );
    bad.set_fault(Fault::Status(500));
    let text = yaml(good.addr(), bad.addr(), checked.addr(), "api");
    let config = steady_config::parse(&text, "<test>").unwrap();
    let gateway: Arc<Gateway> = Gateway::start(&config).await.unwrap();
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
    assert!(events(admin).await.is_empty(), "starting is not an event");

    // Round robin sends every other request to the 500-er: three in a row eject it.
    for _ in 0..10 {
        http_get(web, "/").await;
    }
    let bad_addr = bad.addr().to_string();
    let ejection = wait_for_event(admin, "ejection", |e| e["kind"] == "ejection").await;
    assert_eq!(ejection["upstream"], "app");
    assert_eq!(ejection["endpoint"], bad_addr.as_str());
    assert!(ejection["time"].as_str().unwrap().ends_with('Z'));

    // The actively checked backend starts failing its checks.
    checked.set_fault(Fault::Status(503));
    let flip = wait_for_event(admin, "health", |e| {
        e["kind"] == "health"
            && e["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("became unhealthy"))
    })
    .await;
    assert_eq!(flip["upstream"], "checked");
    assert_eq!(flip["endpoint"], checked.addr().to_string().as_str());

    // An applied reload, then a refused one.
    let renamed = yaml(good.addr(), bad.addr(), checked.addr(), "api2");
    gateway
        .reload(&steady_config::parse(&renamed, "<test>").unwrap())
        .await
        .unwrap();
    let mut invalid = steady_config::parse(&renamed, "<test>").unwrap();
    invalid.routes[0].upstream = "nowhere".into();
    assert!(gateway.reload(&invalid).await.is_err());

    let list = events(admin).await;
    assert_eq!(list[0]["kind"], "reload", "{list:#?}");
    assert!(
        list[0]["message"].as_str().unwrap().contains("rejected"),
        "{list:#?}"
    );
    assert_eq!(list[1]["kind"], "reload");
    assert!(
        list[1]["message"]
            .as_str()
            .unwrap()
            .starts_with("config reloaded"),
        "{list:#?}"
    );
    let times: Vec<&str> = list.iter().map(|e| e["time"].as_str().unwrap()).collect();
    let mut sorted = times.clone();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(times, sorted, "newest first");

    // Draining is an event too.
    gateway.stop_ready();
    let drain = wait_for_event(admin, "drain", |e| e["kind"] == "drain").await;
    assert!(drain.get("upstream").is_none(), "{drain}");
    stop.cancel();
}
