//! Background probing: one [`Checker`] per endpoint, each in its own task.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use steady_balance::Endpoint;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, Instrument};

use crate::config::{ActiveHealth, Check};
use crate::probe::probe;
use crate::state::{HealthState, Transition};

/// What the checker last learned about one endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthReport {
    /// The thresholded verdict (not the last probe's result alone).
    pub healthy: bool,
    /// Load from the latest response that reported one, `0.0..=1.0`.
    pub load: Option<f64>,
    /// Whether the endpoint asked for no new traffic; kept until a response says otherwise.
    pub draining: bool,
    /// Why the latest probe failed; `None` after a pass.
    pub last_error: Option<String>,
    /// When the latest probe finished; `None` before the first.
    pub last_check: Option<Instant>,
    /// Probes that passed so far.
    pub passes: u64,
    /// Probes that failed so far.
    pub failures: u64,
}

impl HealthReport {
    /// Returns whether balancers should pick the endpoint: healthy and not draining.
    pub fn available(&self) -> bool {
        self.healthy && !self.draining
    }
}

/// Probes one endpoint and keeps its state, report and availability in step.
///
/// [`spawn`] drives one per endpoint on a timer; tests and `steady check` can call
/// [`check_once`](Self::check_once) directly.
#[derive(Debug)]
pub struct Checker {
    /// The endpoint probed and whose availability this checker sets.
    endpoint: Arc<Endpoint>,
    /// What each probe does.
    check: Arc<Check>,
    /// Deadline of one probe.
    timeout: Duration,
    /// Rise/fall thresholds.
    state: HealthState,
    /// Latest findings.
    report: HealthReport,
}

impl Checker {
    /// Creates the checker and sets the endpoint's availability to `config.initial`.
    pub fn new(endpoint: Arc<Endpoint>, config: &ActiveHealth) -> Self {
        Self::with_check(endpoint, Arc::new(config.kind.clone()), config, None)
    }

    fn with_check(
        endpoint: Arc<Endpoint>,
        check: Arc<Check>,
        config: &ActiveHealth,
        previous: Option<&HealthReport>,
    ) -> Self {
        // A checker taking over from an earlier one (config reload) starts from that
        // one's verdict, so an endpoint that stays does not flap back to `initial`.
        let initial = match previous {
            Some(report) if report.healthy => crate::config::Initial::Healthy,
            Some(_) => crate::config::Initial::Unhealthy,
            None => config.initial,
        };
        let state = HealthState::new(
            initial,
            config.healthy_threshold,
            config.unhealthy_threshold,
        );
        let report = previous.cloned().unwrap_or(HealthReport {
            healthy: state.is_healthy(),
            load: None,
            draining: false,
            last_error: None,
            last_check: None,
            passes: 0,
            failures: 0,
        });
        endpoint.set_available(report.available());
        Self {
            endpoint,
            check,
            timeout: config.timeout,
            state,
            report,
        }
    }

    /// Returns the endpoint this checker probes.
    pub fn endpoint(&self) -> &Arc<Endpoint> {
        &self.endpoint
    }

    /// Returns the latest findings.
    pub fn report(&self) -> &HealthReport {
        &self.report
    }

    /// Probes once, updates the report and the endpoint's availability, and logs changes.
    ///
    /// Returns the health transition this probe completed, if any.
    pub async fn check_once(&mut self) -> Option<Transition> {
        let outcome = probe(
            &self.check,
            self.endpoint.addr(),
            self.endpoint.name(),
            self.timeout,
        )
        .await;
        let was_available = self.report.available();
        let passed = outcome.result.is_ok();
        if passed {
            self.report.passes += 1;
        } else {
            self.report.failures += 1;
        }
        let transition = self.state.observe(passed);
        let report = &mut self.report;
        report.healthy = self.state.is_healthy();
        if let Some(load) = outcome.signals.load {
            report.load = Some(load);
            // Weighted balancers send a loaded endpoint less (steady-balance `set_load`).
            self.endpoint.set_load(Some(load));
        }
        let drain_before = report.draining;
        if let Some(drain) = outcome.signals.drain {
            report.draining = drain;
        }
        report.last_error = outcome.result.err().map(|e| e.to_string());
        // tokio's clock, so that tests with paused time see it move.
        report.last_check = Some(tokio::time::Instant::now().into_std());

        let endpoint = self.endpoint.name();
        let addr = self.endpoint.addr();
        let reason = report.last_error.as_deref().unwrap_or("check passed");
        match transition {
            Some(Transition::BecameUnhealthy) => {
                info!(%endpoint, %addr, reason, "endpoint became unhealthy");
            }
            Some(Transition::BecameHealthy) => {
                info!(%endpoint, %addr, reason, "endpoint became healthy");
            }
            None => {
                if let Some(error) = &report.last_error {
                    debug!(%endpoint, %addr, error, "health check failed");
                }
            }
        }
        if report.draining != drain_before {
            let reason = if report.draining {
                "endpoint asked to drain"
            } else {
                "endpoint ended its drain"
            };
            info!(%endpoint, %addr, reason, "endpoint drain changed");
        }
        if report.available() != was_available {
            self.endpoint.set_available(report.available());
        }
        transition
    }
}

/// Handle on running health checks: reports, readiness and shutdown.
#[derive(Debug, Clone)]
pub struct HealthHandle {
    /// Shared with the tasks.
    shared: Arc<Shared>,
    /// The per-endpoint tasks, to wait for after shutdown.
    tasks: TaskTracker,
}

#[derive(Debug)]
struct Shared {
    /// One slot per endpoint, in the order given to [`spawn`].
    slots: Vec<(SocketAddr, Mutex<HealthReport>)>,
    /// Endpoints not yet probed once.
    unchecked: AtomicUsize,
}

impl HealthHandle {
    /// Returns every endpoint's latest report, in the order given to [`spawn`].
    pub fn reports(&self) -> Vec<(SocketAddr, HealthReport)> {
        self.shared
            .slots
            .iter()
            .map(|(addr, slot)| (*addr, lock(slot).clone()))
            .collect()
    }

    /// Returns whether every endpoint has been probed at least once.
    pub fn first_round_done(&self) -> bool {
        self.shared.unchecked.load(Ordering::Acquire) == 0
    }

    /// Waits until every task has stopped (after the shutdown token is cancelled).
    pub async fn stopped(&self) {
        self.tasks.wait().await;
    }
}

/// Starts one checking task per endpoint on the current tokio runtime.
///
/// Sets each endpoint's availability to `config.initial` at once, then to
/// `healthy && !draining` whenever that changes. The first probe runs after a random
/// fraction (up to `jitter`) of the interval; each next one `interval ± jitter` after the
/// previous one finished. Tasks stop when `shutdown` is cancelled. They run in the
/// caller's current span, so call this inside one naming the upstream.
///
/// `config` should have passed [`ActiveHealth::validate`].
pub fn spawn(
    endpoints: Vec<Arc<Endpoint>>,
    config: ActiveHealth,
    shutdown: CancellationToken,
) -> HealthHandle {
    spawn_resuming(endpoints, config, shutdown, &[])
}

/// Like [`spawn`], but endpoints with a report in `previous` (from the checkers this
/// set replaces, on a config reload) keep that report, verdict and availability, and
/// count as checked already; only new endpoints start from `config.initial`.
pub fn spawn_resuming(
    endpoints: Vec<Arc<Endpoint>>,
    config: ActiveHealth,
    shutdown: CancellationToken,
    previous: &[(SocketAddr, HealthReport)],
) -> HealthHandle {
    let check = Arc::new(config.kind.clone());
    let checkers: Vec<(Checker, bool)> = endpoints
        .into_iter()
        .map(|endpoint| {
            let before = previous
                .iter()
                .find(|(addr, _)| *addr == endpoint.addr())
                .map(|(_, report)| report)
                // A report before any probe says nothing worth keeping.
                .filter(|report| report.last_check.is_some());
            let resumed = before.is_some();
            let checker = Checker::with_check(endpoint, Arc::clone(&check), &config, before);
            (checker, resumed)
        })
        .collect();
    let shared = Arc::new(Shared {
        slots: checkers
            .iter()
            .map(|(c, _)| (c.endpoint.addr(), Mutex::new(c.report.clone())))
            .collect(),
        unchecked: AtomicUsize::new(checkers.iter().filter(|(_, resumed)| !resumed).count()),
    });
    let tasks = TaskTracker::new();
    let span = tracing::Span::current();
    for (index, (checker, resumed)) in checkers.into_iter().enumerate() {
        let task = run(
            checker,
            index,
            resumed,
            Arc::clone(&shared),
            config.interval,
            config.jitter,
            shutdown.clone(),
        );
        tasks.spawn(task.instrument(span.clone()));
    }
    tasks.close();
    HealthHandle { shared, tasks }
}

async fn run(
    mut checker: Checker,
    index: usize,
    resumed: bool,
    shared: Arc<Shared>,
    interval: Duration,
    jitter: f64,
    shutdown: CancellationToken,
) {
    // Unvalidated config must not turn into a busy loop or a panic.
    let interval = interval.max(MIN_INTERVAL);
    let jitter = sane_jitter(jitter);
    // Spread the first round so many endpoints are not probed in one burst.
    let mut wait = interval.mul_f64(fastrand::f64() * jitter);
    // A resumed checker was counted as checked when it was created.
    let mut first = !resumed;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = checker.check_once() => {}
        }
        *lock(&shared.slots[index].1) = checker.report.clone();
        if first {
            first = false;
            shared.unchecked.fetch_sub(1, Ordering::AcqRel);
        }
        wait = jittered(interval, jitter, fastrand::f64());
    }
}

/// Returns `interval` scaled by a factor in `[1 - jitter, 1 + jitter]`; `unit` is in `[0, 1)`.
fn jittered(interval: Duration, jitter: f64, unit: f64) -> Duration {
    interval.mul_f64(1.0 + sane_jitter(jitter) * (2.0 * unit - 1.0))
}

/// Shortest interval the runner uses, whatever the config says.
const MIN_INTERVAL: Duration = Duration::from_millis(1);

fn sane_jitter(jitter: f64) -> f64 {
    if jitter.is_finite() {
        jitter.clamp(0.0, 1.0)
    } else {
        0.0
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A report is plain data, valid even if a writer panicked.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_in_bounds() {
        let interval = Duration::from_secs(10);
        assert_eq!(jittered(interval, 0.1, 0.0), Duration::from_secs(9));
        assert_eq!(jittered(interval, 0.1, 0.5), interval);
        assert!(jittered(interval, 0.1, 0.999_999) < Duration::from_secs(11));
        assert_eq!(jittered(interval, 0.0, 0.3), interval);
        assert_eq!(jittered(interval, f64::NAN, 0.3), interval);
    }
}
