//! Delivers steady's SLO alerts to receivers: Alertmanager (API v2), any webhook
//! taking Alertmanager's webhook payload, PagerDuty (Events API v2) and Opsgenie.
//!
//! The SLO engine hands each alert change to [`Notifiers::send`], which never waits:
//! it labels the alert for its route (`alerts.page` or `alerts.ticket`) and puts it
//! on the bounded queue of every notifier the route names. One task per notifier
//! delivers its queue in order, retrying with back-off, so a resolve never overtakes
//! its trigger. `docs/alerting.md` describes the payloads, labels and metrics.
//!
//! # Layout
//!
//! - [`alert`]: the receiver-neutral [`Alert`], and the labelled form receivers send
//!   (`alertname`, `slo`, `alert`, `severity`, `steady_severity`, route labels).
//! - `receiver`: one module per API, building the request for an alert change.
//!   Pure: no I/O.
//! - `worker`: the per-notifier task: queue, retries, Alertmanager re-sends.
//! - `client`: the shared HTTP(S) client (hyper, rustls with ring) and one attempt;
//!   its connector ([`https_connector`], [`system_roots`]) also serves steady's OTLP/HTTP
//!   span export.
//! - `backoff`: exponential back-off with jitter. Pure.
//! - `secret`: keys read from the environment or a file, never printed.
//! - `metrics`: `steady_notifications_total` and friends.
//! - [`error`]: [`NotifyError`] for setup.

pub mod alert;
mod backoff;
mod client;
pub mod error;
mod metrics;
mod receiver;
mod secret;
mod worker;

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::Uri;
use prometheus_client::registry::Registry;
use steady_config::slo::{AlertRoute, Alerts, Notifier, NotifierKind, Severity};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

pub use crate::alert::Alert;
pub use crate::client::{https_connector, system_roots};
pub use crate::error::NotifyError;
pub use crate::metrics::Metrics;

use crate::alert::Labelled;
use crate::backoff::Backoff;
use crate::metrics::NotifierMetrics;
use crate::receiver::Receiver;
use crate::secret::Secret;
use crate::worker::{ClientDebug, Worker};

/// Alerts a notifier holds before it drops new ones.
pub const QUEUE_CAPACITY: usize = 1024;

/// How often a firing alert is re-sent to Alertmanager (Prometheus' default
/// `--rules.alert.resend-delay`); its `endsAt` is four of these ahead.
pub const ALERTMANAGER_RESEND: Duration = Duration::from_secs(60);

/// PagerDuty's and Opsgenie's public APIs, used when `url` is not set.
const PAGERDUTY_URL: &str = "https://events.pagerduty.com";
const OPSGENIE_URL: &str = "https://api.opsgenie.com";

/// The configured notifiers and the routes to them.
pub struct Notifiers {
    /// One per configured notifier, in config order.
    targets: Vec<Target>,
    /// Indexes into `targets` of `alerts.page.notify`.
    page: Vec<usize>,
    /// Indexes into `targets` of `alerts.ticket.notify`.
    ticket: Vec<usize>,
    /// The routes' severities and labels.
    alerts: Alerts,
    /// The metric families, shared with every target.
    metrics: Metrics,
}

/// One notifier: its queue and the task that drains it.
struct Target {
    /// The notifier's name.
    name: String,
    /// Its type.
    kind: NotifierKind,
    /// The queue's sending end.
    tx: mpsc::Sender<Arc<Labelled>>,
    /// Its series.
    metrics: NotifierMetrics,
    /// The task and the queue's receiving end until the first send spawns it (so
    /// building needs no runtime).
    idle: Mutex<Option<(Worker, mpsc::Receiver<Arc<Labelled>>)>>,
    /// The task once spawned.
    task: Mutex<Option<JoinHandle<()>>>,
}

impl fmt::Debug for Notifiers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = |idx: &[usize]| -> Vec<String> {
            idx.iter().map(|&i| self.targets[i].name.clone()).collect()
        };
        f.debug_struct("Notifiers")
            .field(
                "notifiers",
                &self
                    .targets
                    .iter()
                    .map(|t| (t.name.as_str(), t.kind.as_str()))
                    .collect::<Vec<_>>(),
            )
            .field("page", &names(&self.page))
            .field("ticket", &names(&self.ticket))
            .finish()
    }
}

impl Notifiers {
    /// Builds the notifiers, reading their keys (environment variable or file) now.
    ///
    /// Errors name the notifier and the variable or file, never a key. No task is
    /// started until the first [`send`](Self::send), so this needs no runtime.
    pub fn from_config(notifiers: &[Notifier], alerts: &Alerts) -> Result<Notifiers, NotifyError> {
        Self::with_metrics(notifiers, alerts, Metrics::default())
    }

    /// As [`from_config`](Self::from_config), counting into `metrics` (families
    /// registered once, shared by the notifiers each reload builds).
    pub fn with_metrics(
        notifiers: &[Notifier],
        alerts: &Alerts,
        metrics: Metrics,
    ) -> Result<Notifiers, NotifyError> {
        let receivers = notifiers
            .iter()
            .map(receiver_for)
            .collect::<Result<Vec<_>, _>>()?;
        let tls = notifiers.iter().find(|n| {
            matches!(
                receivers_base(n).as_deref(),
                Some(url) if url.starts_with("https://")
            )
        });
        let client = client::build(tls.is_some()).map_err(|()| NotifyError::NoRoots {
            notifier: tls.map(|n| n.name.clone()).unwrap_or_default(),
        })?;
        let targets = notifiers
            .iter()
            .zip(receivers)
            .map(|(n, receiver)| {
                let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
                let m = metrics.notifier(&n.name, n.kind.as_str());
                let worker = Worker {
                    name: n.name.clone(),
                    receiver,
                    client: ClientDebug(client.clone()),
                    timeout: n.timeout,
                    max_attempts: n.max_attempts,
                    backoff: Backoff::default(),
                    resend_every: ALERTMANAGER_RESEND,
                    metrics: m.clone(),
                };
                Target {
                    name: n.name.clone(),
                    kind: n.kind,
                    tx,
                    metrics: m,
                    idle: Mutex::new(Some((worker, rx))),
                    task: Mutex::new(None),
                }
            })
            .collect::<Vec<_>>();
        let route = |which: &'static str, r: &AlertRoute| {
            r.notify
                .iter()
                .map(|name| {
                    targets.iter().position(|t| &t.name == name).ok_or_else(|| {
                        NotifyError::UnknownNotifier {
                            route: which,
                            name: name.clone(),
                        }
                    })
                })
                .collect::<Result<Vec<_>, _>>()
        };
        let page = route("page", &alerts.page)?;
        let ticket = route("ticket", &alerts.ticket)?;
        Ok(Notifiers {
            targets,
            page,
            ticket,
            alerts: alerts.clone(),
            metrics,
        })
    }

    /// Queues `alert` for every notifier of its route. Never blocks or waits for the
    /// network: a notifier whose queue is full drops it (counted as `dropped`).
    ///
    /// Spawns the delivery tasks on the current tokio runtime at first use; called
    /// outside a runtime, alerts wait in the queues until a later call inside one.
    pub fn send(&self, alert: Alert) {
        let (route, targets) = match alert.severity {
            Severity::Page => (&self.alerts.page, &self.page),
            Severity::Ticket => (&self.alerts.ticket, &self.ticket),
        };
        if targets.is_empty() {
            tracing::debug!(slo = %alert.slo, alert = %alert.name, "no notifier for this severity");
            return;
        }
        let labelled = Arc::new(Labelled::new(alert, route));
        for &i in targets {
            let target = &self.targets[i];
            target.start();
            target.metrics.queue.inc();
            if let Err(e) = target.tx.try_send(labelled.clone()) {
                target.metrics.queue.dec();
                target.metrics.dropped.inc();
                let why = match e {
                    mpsc::error::TrySendError::Full(_) => "queue full",
                    mpsc::error::TrySendError::Closed(_) => "notifier stopped",
                };
                tracing::warn!(notifier = %target.name, alert = %labelled.dedup_key, why, "notification dropped");
            }
        }
    }

    /// Adds `steady_notifications_total{notifier,type,result}`,
    /// `steady_notification_attempts_total{notifier,type,result}` and
    /// `steady_notification_queue_length{notifier,type}` to `registry`.
    pub fn register(&self, registry: &mut Registry) {
        self.metrics.register(registry);
    }

    /// Closes the queues and waits until `deadline` has passed for what is queued to
    /// be delivered (retries included); what is left then is counted as `dropped`.
    pub async fn shutdown(self, deadline: Duration) {
        let end = tokio::time::Instant::now() + deadline;
        let mut running = Vec::new();
        for target in self.targets {
            target.start();
            let Target {
                name,
                tx,
                metrics,
                task,
                ..
            } = target;
            drop(tx);
            match task.into_inner().unwrap_or_else(|e| e.into_inner()) {
                Some(handle) => running.push((name, metrics, handle)),
                None => forget_queued(&name, &metrics),
            }
        }
        for (name, metrics, mut handle) in running {
            if tokio::time::timeout_at(end, &mut handle).await.is_err() {
                handle.abort();
                forget_queued(&name, &metrics);
            }
        }
    }

    /// Sets the first back-off step (default 1 s; the cap stays 60 s). For tests.
    #[doc(hidden)]
    pub fn with_backoff(self, base: Duration) -> Self {
        self.configure(|w| w.backoff.base = base)
    }

    /// Sets how often firing alerts are re-sent to Alertmanager. For tests.
    #[doc(hidden)]
    pub fn with_resend_interval(self, every: Duration) -> Self {
        self.configure(|w| w.resend_every = every)
    }

    /// Changes every worker not yet started.
    fn configure(self, f: impl Fn(&mut Worker)) -> Self {
        for t in &self.targets {
            if let Some((w, _)) = t.idle.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
                f(w);
            }
        }
        self
    }
}

impl Target {
    /// Spawns the delivery task if it is not running and a runtime is at hand.
    fn start(&self) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.is_none() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if let Some((worker, rx)) = idle.take() {
            *self.task.lock().unwrap_or_else(|e| e.into_inner()) =
                Some(runtime.spawn(worker.run(rx)));
        }
    }
}

/// Counts what is still queued as dropped.
fn forget_queued(name: &str, metrics: &NotifierMetrics) {
    let left = metrics.queue.get().max(0);
    if left > 0 {
        metrics.dropped.inc_by(left as u64);
        metrics.queue.set(0);
        tracing::warn!(notifier = %name, left, "shutdown deadline passed; notifications dropped");
    }
}

/// The base URL a notifier sends to, with the public default where there is one.
fn receivers_base(n: &Notifier) -> Option<String> {
    match (&n.url, n.kind) {
        (Some(url), _) => Some(url.clone()),
        (None, NotifierKind::Pagerduty) => Some(PAGERDUTY_URL.into()),
        (None, NotifierKind::Opsgenie) => Some(OPSGENIE_URL.into()),
        (None, _) => None,
    }
}

/// Checks `n`'s URL and reads its key.
fn receiver_for(n: &Notifier) -> Result<Receiver, NotifyError> {
    let base = receivers_base(n).ok_or_else(|| NotifyError::BadUrl {
        notifier: n.name.clone(),
        url: String::new(),
        reason: format!("a `{}` notifier needs a `url`", n.kind.as_str()),
    })?;
    let check = |path: &str| parse_url(n, &base, path);
    Ok(match n.kind {
        NotifierKind::Alertmanager => {
            check("/api/v2/alerts")?;
            Receiver::Alertmanager { base }
        }
        NotifierKind::Webhook => Receiver::Webhook {
            url: check("")?,
            receiver: n.name.clone(),
        },
        NotifierKind::Pagerduty => {
            let routing_key = Secret::load(
                &n.name,
                "routing_key",
                n.routing_key_env.as_deref(),
                n.routing_key_file.as_deref(),
            )?;
            // Accept the full enqueue URL as well as the API's base.
            let path = if base.trim_end_matches('/').ends_with("/v2/enqueue") {
                ""
            } else {
                "/v2/enqueue"
            };
            let url = check(path)?;
            Receiver::PagerDuty { url, routing_key }
        }
        NotifierKind::Opsgenie => {
            let api_key = Secret::load(
                &n.name,
                "api_key",
                n.api_key_env.as_deref(),
                n.api_key_file.as_deref(),
            )?;
            check("/v2/alerts")?;
            Receiver::Opsgenie { base, api_key }
        }
    })
}

/// `base` + `path` as an absolute http(s) URI.
fn parse_url(n: &Notifier, base: &str, path: &str) -> Result<Uri, NotifyError> {
    let bad = |reason: String| NotifyError::BadUrl {
        notifier: n.name.clone(),
        url: base.to_string(),
        reason,
    };
    let full = if path.is_empty() {
        base.to_string()
    } else {
        format!("{}{path}", base.trim_end_matches('/'))
    };
    let uri: Uri = full
        .parse()
        .map_err(|e: http::uri::InvalidUri| bad(e.to_string()))?;
    match (uri.scheme_str(), uri.authority()) {
        (Some("http" | "https"), Some(_)) => Ok(uri),
        _ => Err(bad("needs http:// or https:// and a host".into())),
    }
}
