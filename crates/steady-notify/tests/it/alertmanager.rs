//! Delivery to a real Alertmanager (Debian's `prometheus-alertmanager`): the alert
//! appears with steady's labels, and disappears once resolved.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use steady_config::slo::{AlertRoute, Alerts, Notifier, NotifierKind, Severity};
use steady_notify::{Alert, Notifiers};
use steady_testkit::alertmanager::Alertmanager;

/// Polls of Alertmanager before a test gives up (each 100 ms apart).
const POLLS: usize = 300;

#[tokio::test]
async fn a_real_alertmanager_shows_the_alert_until_it_resolves() {
    let am = Alertmanager::start().await;

    let notifier = Notifier {
        name: "am".into(),
        kind: NotifierKind::Alertmanager,
        url: Some(am.url()),
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
