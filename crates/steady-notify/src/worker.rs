//! One task per notifier: takes alerts off its queue in order, delivers each with
//! retries, and keeps Alertmanager's firing alerts alive by re-sending them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::alert::Labelled;
use crate::backoff::Backoff;
use crate::client::{self, HttpClient};
use crate::metrics::NotifierMetrics;
use crate::receiver::{alertmanager, Call, Receiver};

/// Everything one notifier's task needs.
#[derive(Debug)]
pub(crate) struct Worker {
    /// The notifier's name, for logs.
    pub name: String,
    /// Its API, URL and key.
    pub receiver: Receiver,
    /// The shared client.
    pub client: ClientDebug,
    /// Timeout of one attempt.
    pub timeout: Duration,
    /// Attempts per notification (at least 1).
    pub max_attempts: u32,
    /// Waits between attempts.
    pub backoff: Backoff,
    /// How often Alertmanager hears again of each firing alert.
    pub resend_every: Duration,
    /// This notifier's series.
    pub metrics: NotifierMetrics,
}

/// The client, with a `Debug` that prints nothing of its state.
#[derive(Clone)]
pub(crate) struct ClientDebug(pub HttpClient);

impl std::fmt::Debug for ClientDebug {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HttpClient")
    }
}

/// Alertmanager forgets a firing alert at its `endsAt`; as Prometheus does, steady
/// sets it this many re-send intervals ahead, so three lost re-sends in a row are
/// survived.
const ENDS_AT_RESENDS: u32 = 4;

impl Worker {
    /// Runs until the queue's senders are all gone and the queue is empty.
    pub async fn run(self, mut queue: mpsc::Receiver<Arc<Labelled>>) {
        let am_base = match &self.receiver {
            Receiver::Alertmanager { base } => Some(base.clone()),
            _ => None,
        };
        // Alertmanager only: firing alerts by dedup key.
        let mut active: BTreeMap<String, Arc<Labelled>> = BTreeMap::new();
        let mut next_resend = Instant::now() + self.resend_every;
        loop {
            let resend_due = !active.is_empty();
            tokio::select! {
                biased;
                next = queue.recv() => {
                    let Some(alert) = next else { break };
                    self.metrics.queue.dec();
                    let call = match &am_base {
                        Some(base) if alert.alert.firing => {
                            active.insert(alert.dedup_key.clone(), alert.clone());
                            // Every post carries all firing alerts, so each post
                            // restarts the re-send clock.
                            next_resend = Instant::now() + self.resend_every;
                            self.alertmanager_batch(base, &active)
                        }
                        Some(_) => {
                            active.remove(&alert.dedup_key);
                            self.receiver.call(&alert, SystemTime::now())
                        }
                        None => self.receiver.call(&alert, SystemTime::now()),
                    };
                    self.deliver(&call, &alert.dedup_key).await;
                }
                () = tokio::time::sleep_until(next_resend), if resend_due => {
                    next_resend = Instant::now() + self.resend_every;
                    if let Some(base) = &am_base {
                        let call = self.alertmanager_batch(base, &active);
                        self.deliver(&call, "re-send").await;
                    }
                }
            }
        }
    }

    /// One post of every firing alert, each ending a few re-sends from now.
    fn alertmanager_batch(&self, base: &str, active: &BTreeMap<String, Arc<Labelled>>) -> Call {
        let ends_at = SystemTime::now() + self.resend_every * ENDS_AT_RESENDS;
        let items: Vec<_> = active.values().map(|a| (&**a, Some(ends_at))).collect();
        alertmanager::post(base, &items)
    }

    /// Makes `call` until it succeeds, is refused, or attempts run out.
    async fn deliver(&self, call: &Call, what: &str) {
        let max = self.max_attempts.max(1);
        for attempt in 1..=max {
            match client::attempt(&self.client.0, call, self.timeout).await {
                Ok(()) => {
                    self.metrics.attempt_ok.inc();
                    self.metrics.sent.inc();
                    tracing::debug!(notifier = %self.name, alert = what, attempt, "notification sent");
                    return;
                }
                Err(error) => {
                    self.metrics.attempt_error.inc();
                    if !error.retryable() {
                        self.metrics.failed.inc();
                        tracing::warn!(notifier = %self.name, alert = what, attempt, %error, "notification refused; not retrying");
                        return;
                    }
                    if attempt == max {
                        self.metrics.failed.inc();
                        tracing::warn!(notifier = %self.name, alert = what, attempt, %error, "notification failed; giving up");
                        return;
                    }
                    let wait = self.backoff.delay(attempt, fastrand::f64());
                    tracing::info!(notifier = %self.name, alert = what, attempt, %error, ?wait, "notification failed; retrying");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}
