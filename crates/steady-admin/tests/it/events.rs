//! `/api/events` lists state changes newest first: an outlier ejection, a health check
//! flip, and reloads (applied and refused).

use crate::common;

use std::net::SocketAddr;
use std::time::Duration;

use crate::common::get as http_get;
use steady_testkit::{Backend, Fault};

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
    let steady = common::start_yaml(&text).await;
    let (gateway, web, admin) = (steady.gateway.clone(), steady.web, steady.admin);
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
    drop(steady);
}
