//! Delivery to local receivers that check each API's documented schema, and the
//! failure paths: retries, refusals, stalls, full queues, missing keys.

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::registry::Registry;
use serde_json::Value;
use steady_config::slo::{AlertRoute, Alerts, Notifier, NotifierKind, Severity};
use steady_notify::{Alert, Notifiers};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// Generous bound on waiting for one request; the tests never rely on it being short.
const PATIENCE: Duration = Duration::from_secs(20);

/// How the fake receiver answers one request.
#[derive(Clone)]
enum Reply {
    Status(u16, &'static str),
    /// Never answers.
    Stall,
}

/// One request as the receiver saw it.
#[derive(Debug)]
struct Seen {
    method: String,
    path: String,
    authorization: Option<String>,
    content_type: Option<String>,
    body: Value,
}

/// A local HTTP receiver answering from a script (then `default`), recording requests.
struct FakeReceiver {
    addr: SocketAddr,
    seen: mpsc::UnboundedReceiver<Seen>,
}

impl FakeReceiver {
    async fn start(script: Vec<Reply>, default: u16) -> FakeReceiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, seen) = mpsc::unbounded_channel();
        let script = Arc::new(Mutex::new(VecDeque::from(script)));
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (tx, script) = (tx.clone(), script.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let (tx, script) = (tx.clone(), script.clone());
                        async move {
                            let header = |name: &str| {
                                req.headers()
                                    .get(name)
                                    .map(|v| v.to_str().unwrap().to_string())
                            };
                            let method = req.method().to_string();
                            let path = req.uri().path_and_query().unwrap().to_string();
                            let authorization = header("authorization");
                            let content_type = header("content-type");
                            let bytes = req.into_body().collect().await.unwrap().to_bytes();
                            let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                            let _ = tx.send(Seen {
                                method,
                                path,
                                authorization,
                                content_type,
                                body,
                            });
                            let reply = script
                                .lock()
                                .unwrap()
                                .pop_front()
                                .unwrap_or(Reply::Status(default, "{}"));
                            let (status, text) = match reply {
                                Reply::Status(s, t) => (s, t),
                                Reply::Stall => {
                                    std::future::pending::<()>().await;
                                    unreachable!()
                                }
                            };
                            let mut resp = Response::new(Full::new(Bytes::from(text)));
                            *resp.status_mut() = StatusCode::from_u16(status).unwrap();
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        FakeReceiver { addr, seen }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn next(&mut self) -> Seen {
        tokio::time::timeout(PATIENCE, self.seen.recv())
            .await
            .expect("the receiver heard nothing")
            .unwrap()
    }

    /// Everything received so far (call after `Notifiers::shutdown`).
    fn drain(&mut self) -> Vec<Seen> {
        let mut out = Vec::new();
        while let Ok(s) = self.seen.try_recv() {
            out.push(s);
        }
        out
    }
}

fn notifier(name: &str, kind: NotifierKind, url: Option<String>) -> Notifier {
    Notifier {
        name: name.into(),
        kind,
        url,
        routing_key_env: None,
        routing_key_file: None,
        api_key_env: None,
        api_key_file: None,
        timeout: Duration::from_secs(10),
        max_attempts: 5,
    }
}

fn alerts(page: &[&str], ticket: &[&str]) -> Alerts {
    Alerts {
        page: AlertRoute {
            severity: "critical".into(),
            notify: page.iter().map(|s| s.to_string()).collect(),
            labels: BTreeMap::from([("team".into(), "payments".into())]),
        },
        ticket: AlertRoute {
            severity: "warning".into(),
            notify: ticket.iter().map(|s| s.to_string()).collect(),
            labels: BTreeMap::new(),
        },
    }
}

fn firing(name: &str, severity: Severity) -> Alert {
    Alert {
        slo: "checkout-availability".into(),
        name: name.into(),
        severity,
        firing: true,
        starts_at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        ends_at: None,
        summary: "checkout-availability: error budget burning 20x (1h) / 19x (5m)".into(),
        description: "99.9% objective; 2% of requests failed in the last hour".into(),
        labels: BTreeMap::from([("route".into(), "checkout".into())]),
        annotations: BTreeMap::from([("runbook_url".into(), "https://runbooks/slo".into())]),
    }
}

fn resolved(mut alert: Alert) -> Alert {
    alert.firing = false;
    alert.ends_at = Some(alert.starts_at + Duration::from_secs(600));
    alert
}

/// The value of the series `name` whose labels include `labels`.
fn metric(registry: &Registry, name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .find(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|l| l.rsplit(' ').next())
        .map(|v| v.parse().unwrap())
        .unwrap_or_else(|| panic!("no series {name} {labels:?} in\n{text}"))
}

fn registered(n: &Notifiers) -> Registry {
    let mut registry = Registry::default();
    n.register(&mut registry);
    registry
}

fn rfc3339(v: &Value) -> SystemTime {
    humantime::parse_rfc3339(v.as_str().expect("a time is a string"))
        .unwrap_or_else(|e| panic!("{v} is not RFC 3339: {e}"))
}

fn string_map(v: &Value) -> &serde_json::Map<String, Value> {
    let map = v.as_object().expect("an object");
    assert!(
        map.values().all(Value::is_string),
        "values must be strings: {v}"
    );
    map
}

/// Checks one webhook message against Alertmanager's version 4 schema.
fn check_webhook(msg: &Value, status: &str) {
    let obj = msg.as_object().unwrap();
    for field in [
        "version",
        "groupKey",
        "truncatedAlerts",
        "status",
        "receiver",
        "groupLabels",
        "commonLabels",
        "commonAnnotations",
        "externalURL",
        "alerts",
    ] {
        assert!(obj.contains_key(field), "missing {field}: {msg}");
    }
    assert_eq!(msg["version"], "4");
    assert!(msg["groupKey"].as_str().unwrap().starts_with("{}:{"));
    assert_eq!(msg["truncatedAlerts"], 0);
    assert_eq!(msg["status"], status);
    assert_eq!(msg["receiver"], "hook");
    assert!(msg["externalURL"].is_string());
    string_map(&msg["groupLabels"]);
    string_map(&msg["commonAnnotations"]);
    let common = string_map(&msg["commonLabels"]);
    assert_eq!(common["alertname"], "SteadySLONoTraffic");
    let alerts = msg["alerts"].as_array().unwrap();
    assert_eq!(alerts.len(), 1);
    let a = &alerts[0];
    assert_eq!(a["status"], status);
    let labels = string_map(&a["labels"]);
    assert_eq!(labels["alertname"], "SteadySLONoTraffic");
    assert_eq!(labels["slo"], "checkout-availability");
    assert_eq!(labels["alert"], "no-traffic");
    assert_eq!(labels["severity"], "warning");
    assert_eq!(labels["steady_severity"], "ticket");
    assert_eq!(labels["route"], "checkout");
    let annotations = string_map(&a["annotations"]);
    assert!(annotations["summary"].as_str().unwrap().contains("burning"));
    assert_eq!(annotations["runbook_url"], "https://runbooks/slo");
    let starts = rfc3339(&a["startsAt"]);
    if status == "firing" {
        assert_eq!(a["endsAt"], "0001-01-01T00:00:00Z");
    } else {
        assert!(rfc3339(&a["endsAt"]) > starts);
    }
    assert!(a["generatorURL"].is_string());
    let fp = a["fingerprint"].as_str().unwrap();
    assert!(
        fp.len() == 16 && fp.chars().all(|c| c.is_ascii_hexdigit()),
        "{fp}"
    );
}

#[tokio::test]
async fn webhook_gets_alertmanager_version_4_messages_in_order() {
    let mut rx = FakeReceiver::start(vec![], 200).await;
    let hook = notifier("hook", NotifierKind::Webhook, Some(rx.url("/alerts")));
    let n = Notifiers::from_config(&[hook], &alerts(&[], &["hook"])).unwrap();
    let alert = firing("no-traffic", Severity::Ticket);
    n.send(alert.clone());
    n.send(resolved(alert));
    let registry = registered(&n);
    n.shutdown(PATIENCE).await;

    let (first, second) = (rx.next().await, rx.next().await);
    for seen in [&first, &second] {
        assert_eq!(seen.method, "POST");
        assert_eq!(seen.path, "/alerts");
        assert_eq!(seen.content_type.as_deref(), Some("application/json"));
    }
    check_webhook(&first.body, "firing");
    check_webhook(&second.body, "resolved");
    assert_eq!(
        first.body["alerts"][0]["fingerprint"],
        second.body["alerts"][0]["fingerprint"]
    );
    assert_eq!(first.body["groupKey"], second.body["groupKey"]);
    let labels = [
        ("notifier", "hook"),
        ("type", "webhook"),
        ("result", "sent"),
    ];
    assert_eq!(
        metric(&registry, "steady_notifications_total", &labels),
        2.0
    );
}

#[tokio::test]
async fn alerts_go_only_to_their_severitys_notifiers() {
    let mut pager = FakeReceiver::start(vec![], 200).await;
    let mut ticketer = FakeReceiver::start(vec![], 200).await;
    let n = Notifiers::from_config(
        &[
            notifier("pager", NotifierKind::Webhook, Some(pager.url("/"))),
            notifier("ticketer", NotifierKind::Webhook, Some(ticketer.url("/"))),
        ],
        &alerts(&["pager"], &["ticketer"]),
    )
    .unwrap();
    n.send(firing("page-1h-5m", Severity::Page));
    n.shutdown(PATIENCE).await;
    let paged = pager.drain();
    assert_eq!(paged.len(), 1);
    let labels = &paged[0].body["alerts"][0]["labels"];
    assert_eq!(labels["alertname"], "SteadySLOBurnRate");
    assert_eq!(labels["severity"], "critical");
    assert_eq!(labels["steady_severity"], "page");
    assert_eq!(labels["team"], "payments", "route labels are added");
    assert!(ticketer.drain().is_empty());
}

#[tokio::test]
async fn pagerduty_events_follow_events_api_v2() {
    const KEY: &str = "pd-routing-key-0123456789abcdef";
    std::env::set_var("STEADY_NOTIFY_TEST_PD_KEY", KEY);
    let mut rx = FakeReceiver::start(vec![], 202).await;
    let mut pd = notifier("pd", NotifierKind::Pagerduty, Some(rx.url("")));
    pd.routing_key_env = Some("STEADY_NOTIFY_TEST_PD_KEY".into());
    let n = Notifiers::from_config(&[pd], &alerts(&["pd"], &[])).unwrap();
    assert!(!format!("{n:?}").contains(KEY), "{n:?}");
    let alert = firing("page-1h-5m", Severity::Page);
    n.send(alert.clone());
    n.send(resolved(alert));
    n.shutdown(PATIENCE).await;

    let trigger = rx.next().await;
    let resolve = rx.next().await;
    for seen in [&trigger, &resolve] {
        assert_eq!(
            (seen.method.as_str(), seen.path.as_str()),
            ("POST", "/v2/enqueue")
        );
        assert_eq!(seen.content_type.as_deref(), Some("application/json"));
        assert_eq!(seen.body["routing_key"], KEY);
    }
    let t = &trigger.body;
    assert_eq!(t["event_action"], "trigger");
    let dedup = t["dedup_key"].as_str().unwrap();
    assert_eq!(dedup, "steady/checkout-availability/page-1h-5m");
    let p = &t["payload"];
    let summary = p["summary"].as_str().unwrap();
    assert!(!summary.is_empty() && summary.chars().count() <= 1024);
    assert!(!p["source"].as_str().unwrap().is_empty());
    assert!(["critical", "error", "warning", "info"].contains(&p["severity"].as_str().unwrap()));
    assert_eq!(p["severity"], "critical");
    assert_eq!(
        rfc3339(&p["timestamp"]),
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    );
    assert_eq!(p["component"], "checkout-availability");
    assert_eq!(p["group"], "checkout");
    assert_eq!(p["class"], "page-1h-5m");
    assert!(p["custom_details"].is_object());

    let r = &resolve.body;
    assert_eq!(r["event_action"], "resolve");
    assert_eq!(r["dedup_key"], dedup);
    assert!(
        r.get("payload").is_none(),
        "resolve carries no payload: {r}"
    );
}

#[tokio::test]
async fn opsgenie_creates_then_closes_by_alias() {
    const KEY: &str = "eb243592-faa2-4ba2-a551q-1afdf565c889";
    let dir = std::env::temp_dir().join(format!("steady-notify-og-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key_file = dir.join("opsgenie");
    std::fs::write(&key_file, format!("{KEY}\n")).unwrap();
    let mut rx = FakeReceiver::start(vec![], 202).await;
    let mut og = notifier("ops", NotifierKind::Opsgenie, Some(rx.url("/")));
    og.api_key_file = Some(key_file.display().to_string());
    let n = Notifiers::from_config(&[og], &alerts(&[], &["ops"])).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(!format!("{n:?}").contains(KEY));
    let mut alert = firing("no-traffic", Severity::Ticket);
    alert.summary = "x".repeat(300);
    n.send(alert.clone());
    n.send(resolved(alert));
    n.shutdown(PATIENCE).await;

    let create = rx.next().await;
    let close = rx.next().await;
    for seen in [&create, &close] {
        assert_eq!(seen.method, "POST");
        assert_eq!(
            seen.authorization.as_deref(),
            Some(&*format!("GenieKey {KEY}"))
        );
        assert_eq!(seen.content_type.as_deref(), Some("application/json"));
    }
    assert_eq!(create.path, "/v2/alerts");
    let c = &create.body;
    assert!(c["message"].as_str().unwrap().chars().count() <= 130);
    assert_eq!(c["alias"], "steady/checkout-availability/no-traffic");
    assert!(c["alias"].as_str().unwrap().len() <= 512);
    assert!(c["description"].is_string());
    assert_eq!(c["priority"], "P3", "warning maps to P3");
    let tags = c["tags"].as_array().unwrap();
    assert!(tags.iter().all(Value::is_string) && !tags.is_empty());
    assert_eq!(string_map(&c["details"])["slo"], "checkout-availability");
    assert!(c["source"].is_string());

    assert_eq!(
        close.path,
        "/v2/alerts/steady%2Fcheckout-availability%2Fno-traffic/close?identifierType=alias"
    );
    assert!(close.body["source"].is_string());
    assert!(close.body["note"].is_string());
}

/// A PagerDuty notifier with a key, pointed at `rx`.
fn pagerduty(rx: &FakeReceiver, var: &str, max_attempts: u32) -> Notifiers {
    std::env::set_var(var, "k");
    let mut pd = notifier("pd", NotifierKind::Pagerduty, Some(rx.url("")));
    pd.routing_key_env = Some(var.into());
    pd.max_attempts = max_attempts;
    Notifiers::from_config(&[pd], &alerts(&["pd"], &[]))
        .unwrap()
        .with_backoff(Duration::from_millis(1))
}

const PD_SENT: [(&str, &str); 2] = [("notifier", "pd"), ("result", "sent")];
const PD_FAILED: [(&str, &str); 2] = [("notifier", "pd"), ("result", "failed")];
const PD_OK: [(&str, &str); 2] = [("notifier", "pd"), ("result", "ok")];
const PD_ERROR: [(&str, &str); 2] = [("notifier", "pd"), ("result", "error")];

#[tokio::test]
async fn server_errors_and_429_are_retried_until_delivered() {
    let mut rx = FakeReceiver::start(
        vec![Reply::Status(500, "oops"), Reply::Status(429, "slow down")],
        202,
    )
    .await;
    let n = pagerduty(&rx, "STEADY_NOTIFY_TEST_RETRY", 5);
    let registry = registered(&n);
    n.send(firing("page-1h-5m", Severity::Page));
    n.shutdown(PATIENCE).await;
    assert_eq!(rx.drain().len(), 3);
    assert_eq!(
        metric(&registry, "steady_notification_attempts_total", &PD_ERROR),
        2.0
    );
    assert_eq!(
        metric(&registry, "steady_notification_attempts_total", &PD_OK),
        1.0
    );
    assert_eq!(
        metric(&registry, "steady_notifications_total", &PD_SENT),
        1.0
    );
    assert_eq!(
        metric(&registry, "steady_notifications_total", &PD_FAILED),
        0.0
    );
}

#[tokio::test]
async fn attempts_run_out_and_count_as_failed() {
    let mut rx = FakeReceiver::start(vec![], 503).await;
    let n = pagerduty(&rx, "STEADY_NOTIFY_TEST_GIVE_UP", 3);
    let registry = registered(&n);
    n.send(firing("page-1h-5m", Severity::Page));
    n.shutdown(PATIENCE).await;
    assert_eq!(rx.drain().len(), 3);
    assert_eq!(
        metric(&registry, "steady_notifications_total", &PD_FAILED),
        1.0
    );
    assert_eq!(
        metric(&registry, "steady_notification_attempts_total", &PD_ERROR),
        3.0
    );
}

#[tokio::test]
async fn client_errors_are_not_retried() {
    let mut rx = FakeReceiver::start(vec![Reply::Status(400, "invalid routing key")], 202).await;
    let n = pagerduty(&rx, "STEADY_NOTIFY_TEST_400", 5);
    let registry = registered(&n);
    n.send(firing("page-1h-5m", Severity::Page));
    n.shutdown(PATIENCE).await;
    assert_eq!(rx.drain().len(), 1);
    assert_eq!(
        metric(&registry, "steady_notifications_total", &PD_FAILED),
        1.0
    );
    assert_eq!(
        metric(&registry, "steady_notifications_total", &PD_SENT),
        0.0
    );
    assert_eq!(
        metric(&registry, "steady_notification_attempts_total", &PD_ERROR),
        1.0
    );
}

#[tokio::test]
async fn a_stalled_receiver_times_out_and_the_retry_delivers() {
    let mut rx = FakeReceiver::start(vec![Reply::Stall], 200).await;
    let mut hook = notifier("hook", NotifierKind::Webhook, Some(rx.url("/")));
    hook.timeout = Duration::from_millis(500);
    hook.max_attempts = 10;
    let n = Notifiers::from_config(&[hook], &alerts(&["hook"], &[]))
        .unwrap()
        .with_backoff(Duration::from_millis(1));
    let registry = registered(&n);
    let alert = firing("page-1h-5m", Severity::Page);
    n.send(alert.clone());
    n.send(resolved(alert));
    n.shutdown(PATIENCE).await;
    let statuses: Vec<_> = rx
        .drain()
        .iter()
        .map(|s| s.body["status"].as_str().unwrap().to_string())
        .collect();
    // The stalled first attempt, its retry, the resolve; a slow machine may time out
    // more attempts, never reorder them.
    assert!(statuses.len() >= 3, "{statuses:?}");
    assert_eq!(statuses.last().unwrap(), "resolved", "{statuses:?}");
    assert!(
        statuses[..statuses.len() - 1].iter().all(|s| s == "firing"),
        "{statuses:?}"
    );
    let hook = |r| [("notifier", "hook"), ("result", r)];
    let errors = metric(
        &registry,
        "steady_notification_attempts_total",
        &hook("error"),
    );
    let oks = metric(&registry, "steady_notification_attempts_total", &hook("ok"));
    assert!(errors >= 1.0, "the stall counts as a failed attempt");
    assert_eq!(oks, 2.0);
    assert_eq!(errors + oks, statuses.len() as f64);
    assert_eq!(
        metric(&registry, "steady_notifications_total", &hook("sent")),
        2.0
    );
    assert_eq!(
        metric(&registry, "steady_notifications_total", &hook("failed")),
        0.0
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_full_queue_drops_and_counts() {
    let rx = FakeReceiver::start(vec![], 200).await;
    let hook = notifier("hook", NotifierKind::Webhook, Some(rx.url("/")));
    let n = Notifiers::from_config(&[hook], &alerts(&["hook"], &[])).unwrap();
    let registry = registered(&n);
    // On one thread the delivery task cannot run between these sends.
    let extra = 7;
    for _ in 0..steady_notify::QUEUE_CAPACITY + extra {
        n.send(firing("page-1h-5m", Severity::Page));
    }
    let hook = |r| [("notifier", "hook"), ("result", r)];
    assert_eq!(
        metric(&registry, "steady_notifications_total", &hook("dropped")),
        extra as f64
    );
    assert_eq!(
        metric(
            &registry,
            "steady_notification_queue_length",
            &[("notifier", "hook")]
        ),
        steady_notify::QUEUE_CAPACITY as f64
    );
    n.shutdown(Duration::ZERO).await;
    let total: f64 = ["sent", "failed", "dropped"]
        .iter()
        .map(|r| metric(&registry, "steady_notifications_total", &hook(r)))
        .sum();
    // All accounted for but the one in flight when the deadline cut it.
    assert!(
        total >= (steady_notify::QUEUE_CAPACITY + extra - 1) as f64,
        "{total}"
    );
    assert_eq!(
        metric(
            &registry,
            "steady_notification_queue_length",
            &[("notifier", "hook")]
        ),
        0.0
    );
}

#[test]
fn missing_keys_are_named_and_never_shown() {
    std::env::remove_var("STEADY_NOTIFY_TEST_UNSET");
    let mut pd = notifier("pd", NotifierKind::Pagerduty, None);
    pd.routing_key_env = Some("STEADY_NOTIFY_TEST_UNSET".into());
    let err = Notifiers::from_config(&[pd], &alerts(&[], &[]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`pd`") && err.contains("STEADY_NOTIFY_TEST_UNSET"),
        "{err}"
    );

    let mut og = notifier(
        "ops",
        NotifierKind::Opsgenie,
        Some("http://127.0.0.1:1".into()),
    );
    og.api_key_file = Some("/nonexistent/steady/opsgenie-key".into());
    let err = Notifiers::from_config(&[og], &alerts(&[], &[]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`ops`") && err.contains("/nonexistent/steady/opsgenie-key"),
        "{err}"
    );

    std::env::set_var("STEADY_NOTIFY_TEST_BLANK", "  \n");
    let mut og = notifier(
        "ops",
        NotifierKind::Opsgenie,
        Some("http://127.0.0.1:1".into()),
    );
    og.api_key_env = Some("STEADY_NOTIFY_TEST_BLANK".into());
    let err = Notifiers::from_config(&[og], &alerts(&[], &[]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("STEADY_NOTIFY_TEST_BLANK") && err.contains("empty"),
        "{err}"
    );

    const KEY: &str = "top-secret-value-42";
    std::env::set_var("STEADY_NOTIFY_TEST_SET", format!("{KEY}\nwith a newline"));
    let mut og = notifier(
        "ops",
        NotifierKind::Opsgenie,
        Some("http://127.0.0.1:1".into()),
    );
    og.api_key_env = Some("STEADY_NOTIFY_TEST_SET".into());
    let err = Notifiers::from_config(&[og], &alerts(&[], &[])).unwrap_err();
    assert!(!err.to_string().contains(KEY) && !format!("{err:?}").contains(KEY));
}

#[test]
fn unknown_notifier_in_a_route_is_an_error() {
    let err = Notifiers::from_config(&[], &alerts(&["nobody"], &[])).unwrap_err();
    assert!(err.to_string().contains("nobody"), "{err}");
}

#[tokio::test]
async fn alertmanager_hears_firing_alerts_again_until_they_resolve() {
    let mut rx = FakeReceiver::start(vec![], 200).await;
    let am = notifier("am", NotifierKind::Alertmanager, Some(rx.url("/")));
    let every = Duration::from_millis(50);
    let n = Notifiers::from_config(&[am], &alerts(&["am"], &[]))
        .unwrap()
        .with_resend_interval(every);
    let alert = firing("page-1h-5m", Severity::Page);
    let mut last_ends_at = SystemTime::now();
    n.send(alert.clone());
    // The first post and two re-sends, each pushing `endsAt` further ahead.
    for _ in 0..3 {
        let seen = rx.next().await;
        assert_eq!(
            (seen.method.as_str(), seen.path.as_str()),
            ("POST", "/api/v2/alerts")
        );
        let items = seen.body.as_array().unwrap();
        assert_eq!(items.len(), 1);
        let item = &items[0];
        assert_eq!(item["labels"]["alertname"], "SteadySLOBurnRate");
        let ends_at = rfc3339(&item["endsAt"]);
        assert!(ends_at > last_ends_at, "endsAt moves ahead");
        last_ends_at = ends_at;
        assert!(rfc3339(&item["startsAt"]) < ends_at);
    }
    let done = resolved(alert);
    let ends_at = done.ends_at.unwrap();
    n.send(done);
    loop {
        let seen = rx.next().await;
        if rfc3339(&seen.body[0]["endsAt"]) == ends_at {
            break;
        }
    }
    n.shutdown(PATIENCE).await;
    assert!(rx.drain().is_empty(), "no re-send after the resolve");
}
