//! Delivery metrics, per notifier: `steady_notifications_total`,
//! `steady_notification_attempts_total`, `steady_notification_queue_length`.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Label pairs: `notifier`, `type`, and `result` where it applies.
type Labels = Vec<(String, String)>;

/// The metric families of all notifiers. Cloning shares the families, so notifiers
/// rebuilt by a config reload keep adding to the series registered once.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    notifications: Family<Labels, Counter>,
    attempts: Family<Labels, Counter>,
    queue: Family<Labels, Gauge>,
}

/// One notifier's series, resolved once so the hot path does no lookups.
#[derive(Debug, Clone)]
pub(crate) struct NotifierMetrics {
    /// Delivered (2xx).
    pub sent: Counter,
    /// Given up on: a non-retryable answer or `max_attempts` used up.
    pub failed: Counter,
    /// Not queued because the queue was full, or left queued at shutdown.
    pub dropped: Counter,
    /// Attempts answered 2xx.
    pub attempt_ok: Counter,
    /// Attempts that failed.
    pub attempt_error: Counter,
    /// Alerts waiting in the queue.
    pub queue: Gauge,
}

impl Metrics {
    /// The series of notifier `name` of type `kind`.
    pub(crate) fn notifier(&self, name: &str, kind: &str) -> NotifierMetrics {
        let labels = |result: Option<&str>| {
            let mut l = vec![
                ("notifier".to_string(), name.to_string()),
                ("type".to_string(), kind.to_string()),
            ];
            if let Some(r) = result {
                l.push(("result".to_string(), r.to_string()));
            }
            l
        };
        let n = |r| self.notifications.get_or_create(&labels(Some(r))).clone();
        let a = |r| self.attempts.get_or_create(&labels(Some(r))).clone();
        NotifierMetrics {
            sent: n("sent"),
            failed: n("failed"),
            dropped: n("dropped"),
            attempt_ok: a("ok"),
            attempt_error: a("error"),
            queue: self.queue.get_or_create(&labels(None)).clone(),
        }
    }

    /// Adds the three families to `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "steady_notifications",
            "Alert notifications by outcome: sent, failed (rejected or out of attempts), dropped (queue full)",
            self.notifications.clone(),
        );
        registry.register(
            "steady_notification_attempts",
            "Delivery attempts by outcome (ok, error)",
            self.attempts.clone(),
        );
        registry.register(
            "steady_notification_queue_length",
            "Alert notifications waiting to be delivered",
            self.queue.clone(),
        );
    }
}
