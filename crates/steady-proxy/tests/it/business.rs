//! Business metrics: a route counts the responses that match a condition (`POST`
//! answered 201 as "orders completed") as a named counter, kept across reloads that
//! keep its definition.

use crate::common::{get, send, start_yaml};
use bytes::Bytes;
use http_body_util::Full;
use steady_testkit::Backend;

fn count_of(text: &str, event: &str) -> u64 {
    let prefix = format!("steady_business_events_total{{route=\"orders\",event=\"{event}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {event} in:\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn matching_responses_count_as_named_events() {
    let backend = Backend::start("shop").await;
    let yaml = |extra: &str| {
        format!(
            "listeners: [{{name: web, bind: 127.0.0.1:0}}]
routes:
  - name: orders
    listener: web
    upstream: app
    count:
      - {{name: orders_completed, methods: [POST], status: [201]}}
      - {{name: orders_failed, status: [5xx]}}
{extra}upstreams: [{{name: app, endpoints: [{{address: {}}}]}}]
",
            backend.addr()
        )
    };
    let steady = start_yaml(&yaml("")).await;
    let post = |path: &str| {
        http::Request::post(format!("http://{}{path}", steady.addr))
            .body(Full::new(Bytes::from_static(b"{}")))
            .unwrap()
    };
    assert_eq!(send(post("/status/201")).await.status, 201);
    assert_eq!(send(post("/status/201")).await.status, 201);
    assert_eq!(send(post("/status/200")).await.status, 200); // not a 201
    assert_eq!(get(steady.addr, "/status/201").await.status, 201); // not a POST
    assert_eq!(get(steady.addr, "/status/503").await.status, 503);

    let text = steady.gateway.metrics().encode_prometheus();
    assert_eq!(count_of(&text, "orders_completed"), 2);
    assert_eq!(count_of(&text, "orders_failed"), 1);

    // A reload that keeps the definition keeps the count.
    let config = steady_config::parse(&yaml("    timeout: 20s\n"), "<test>").unwrap();
    steady.gateway.reload(&config).await.unwrap();
    let text = steady.gateway.metrics().encode_prometheus();
    assert_eq!(count_of(&text, "orders_completed"), 2);
}

#[test]
fn bad_event_definitions_are_reported() {
    let yaml = "listeners: [{name: web, bind: 127.0.0.1:0}]
routes:
  - name: orders
    listener: web
    upstream: app
    count:
      - {name: a, methods: ['PO ST'], status: [201]}
      - {name: a}
      - {name: b, status: [2xy]}
upstreams: [{name: app, endpoints: [{address: 127.0.0.1:9}]}]
";
    let err = steady_config::parse(yaml, "<test>")
        .unwrap_err()
        .to_string();
    assert!(err.contains("`2xy` is not a status"), "{err}");
    let fixed = yaml.replace("[2xy]", "[2xx]");
    let err = steady_config::parse(&fixed, "<test>")
        .unwrap_err()
        .to_string();
    assert!(err.contains("`PO ST` is not an HTTP method"), "{err}");
    assert!(err.contains("`a` is counted twice"), "{err}");
}
