//! Delivery to a real Alertmanager (Debian's `prometheus-alertmanager`): the alert
//! appears with steady's labels, and disappears once resolved.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use steady_config::slo::{AlertRoute, Alerts, Notifier, NotifierKind, Severity};
use steady_notify::{Alert, Notifiers};

const BINARY: &str = "/usr/bin/prometheus-alertmanager";

/// Polls of Alertmanager before a test gives up (each 100 ms apart).
const POLLS: usize = 300;

/// An Alertmanager on a free loopback port, killed on drop.
struct Alertmanager {
    child: Child,
    dir: PathBuf,
    base: String,
}

impl Alertmanager {
    fn start() -> Alertmanager {
        assert!(
            Path::new(BINARY).exists(),
            "{BINARY} is missing: install Debian's `prometheus-alertmanager` package \
             (`apt-get install prometheus-alertmanager`; .ci/run does)"
        );
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let dir =
            std::env::temp_dir().join(format!("steady-notify-am-{}-{port}", std::process::id()));
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let config = dir.join("alertmanager.yml");
        std::fs::write(
            &config,
            "route:\n  receiver: blackhole\nreceivers:\n  - name: blackhole\n",
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("log")).unwrap();
        let child = Command::new(BINARY)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {BINARY}: {e}"));
        Alertmanager {
            child,
            dir,
            base: format!("http://127.0.0.1:{port}"),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }

    /// `GET path`: status and body.
    async fn get(&self, path: &str) -> Option<(u16, Bytes)> {
        let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
        let uri = format!("{}{path}", self.base).parse().unwrap();
        let resp = client.get(uri).await.ok()?;
        let status = resp.status().as_u16();
        Some((status, resp.into_body().collect().await.ok()?.to_bytes()))
    }

    async fn wait_ready(&mut self) {
        for _ in 0..POLLS {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("alertmanager exited ({status}):\n{}", self.log());
            }
            if matches!(self.get("/-/ready").await, Some((200, _))) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("alertmanager never became ready:\n{}", self.log());
    }

    /// The active alerts of SLO `slo`.
    async fn active(&self, slo: &str) -> Vec<Value> {
        let (status, body) = self
            .get("/api/v2/alerts?active=true")
            .await
            .expect("GET /api/v2/alerts");
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        let alerts: Vec<Value> = serde_json::from_slice(&body).unwrap();
        alerts
            .into_iter()
            .filter(|a| a["labels"]["slo"] == slo && a["status"]["state"] == "active")
            .collect()
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test]
async fn a_real_alertmanager_shows_the_alert_until_it_resolves() {
    let mut am = Alertmanager::start();
    am.wait_ready().await;

    let notifier = Notifier {
        name: "am".into(),
        kind: NotifierKind::Alertmanager,
        url: Some(am.base.clone()),
        routing_key_env: None,
        routing_key_file: None,
        api_key_env: None,
        api_key_file: None,
        timeout: Duration::from_secs(10),
        max_attempts: 3,
    };
    let alerts = Alerts {
        page: AlertRoute {
            severity: "critical".into(),
            notify: vec!["am".into()],
            labels: BTreeMap::from([("team".into(), "payments".into())]),
        },
        ticket: AlertRoute::default(),
    };
    let n = Notifiers::from_config(&[notifier], &alerts).unwrap();
    let alert = Alert {
        slo: "checkout-availability".into(),
        name: "page-1h-5m".into(),
        severity: Severity::Page,
        firing: true,
        starts_at: SystemTime::now() - Duration::from_secs(60),
        ends_at: None,
        summary: "checkout-availability: error budget burning 20x (1h) / 19x (5m)".into(),
        description: "99.9% objective".into(),
        labels: BTreeMap::from([("route".into(), "checkout".into())]),
        annotations: BTreeMap::new(),
    };
    n.send(alert.clone());

    let mut shown = Vec::new();
    for _ in 0..POLLS {
        shown = am.active("checkout-availability").await;
        if !shown.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        shown.len(),
        1,
        "the alert never became active:\n{}",
        am.log()
    );
    let labels = &shown[0]["labels"];
    assert_eq!(labels["alertname"], "SteadySLOBurnRate");
    assert_eq!(labels["slo"], "checkout-availability");
    assert_eq!(labels["alert"], "page-1h-5m");
    assert_eq!(labels["severity"], "critical");
    assert_eq!(labels["steady_severity"], "page");
    assert_eq!(labels["team"], "payments");
    assert_eq!(labels["route"], "checkout");
    assert_eq!(
        shown[0]["annotations"]["summary"],
        "checkout-availability: error budget burning 20x (1h) / 19x (5m)"
    );

    n.send(Alert {
        firing: false,
        ends_at: Some(SystemTime::now()),
        ..alert
    });
    let mut gone = false;
    for _ in 0..POLLS {
        if am.active("checkout-availability").await.is_empty() {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        gone,
        "the alert stayed active after its resolve:\n{}",
        am.log()
    );
    n.shutdown(Duration::from_secs(10)).await;
}
