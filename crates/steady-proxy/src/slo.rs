//! SLOs in the running gateway: per-request SLI taps, the engine's clock and state
//! file, and what the admin API and `/metrics` read.
//!
//! The request path only touches [`SliTap`]s: each route holds one tap per SLO that
//! counts it, and a tap is two relaxed atomic adds. Once a second a task on the
//! gateway's runtime calls [`Slos::tick`], which reads each SLO's counters, records the
//! difference in the `steady-slo` engine (time buckets), evaluates the burn-rate
//! alerts and anomaly bands, and hands the alert changes to the notifiers. Every
//! `slo_state.save_every` (and at shutdown) the engines' state is written to the state
//! file, so a restart keeps the period's budget.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use serde::Serialize;
use steady_config::slo::{Sli, Slo as SloSettings};
use steady_config::{Config, StatusMatch};
use steady_slo::anomaly::{AnomalyConfig, Watch};
use steady_slo::{AlertEvent, Severity, Signal, Slo, SloConfig, SloStatus, Transition};

use arc_swap::ArcSwapOption;
use steady_notify::{Alert, Notifiers};

use crate::events::{EventKind, Events};

/// Alert changes kept per SLO for the admin API.
const HISTORY: usize = 100;
/// Version of the state file's outer format (each SLO's part has its own).
const FILE_VERSION: u32 = 1;

/// Returns the wall clock in whole seconds since the Unix epoch: SLO buckets are
/// stamped in wall time so that they mean the same after a restart.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// One SLO's event counters since the process started (`steady_slo_events_total`,
/// `steady_slo_bad_events_total`).
#[derive(Debug, Default)]
pub struct SliCounter {
    total: AtomicU64,
    bad: AtomicU64,
}

impl SliCounter {
    /// `(total, bad)` so far.
    pub fn get(&self) -> (u64, u64) {
        // Bad first: a request counted between the two loads can only make total
        // larger, never bad larger than total.
        let bad = self.bad.load(Ordering::Relaxed);
        (self.total.load(Ordering::Relaxed).max(bad), bad)
    }
}

/// What makes a request bad for one SLO.
#[derive(Debug, Clone, PartialEq)]
enum BadWhen {
    Status(Vec<StatusMatch>),
    SlowerThan(Duration),
}

impl BadWhen {
    fn new(sli: &Sli) -> BadWhen {
        match sli {
            Sli::Availability { errors } => BadWhen::Status(errors.clone()),
            Sli::LatencyBelow(d) => BadWhen::SlowerThan(*d),
        }
    }
}

/// Counts one route's requests for one SLO; called on the request path.
#[derive(Debug, Clone)]
pub struct SliTap {
    bad_when: Arc<BadWhen>,
    counter: Arc<SliCounter>,
}

impl SliTap {
    /// Counts a request answered with `status` after `elapsed` (to response head).
    #[inline]
    pub fn record(&self, status: u16, elapsed: Duration) {
        self.counter.total.fetch_add(1, Ordering::Relaxed);
        let bad = match &*self.bad_when {
            BadWhen::Status(list) => list.iter().any(|s| s.matches(status)),
            BadWhen::SlowerThan(limit) => elapsed > *limit,
        };
        if bad {
            self.counter.bad.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Every SLO of the running config.
pub struct Slos {
    inner: Mutex<Inner>,
    events: Arc<Events>,
    /// Where alert changes are delivered; replaced when `notifiers` or `alerts` change.
    notifiers: ArcSwapOption<Notifiers>,
    /// Delivery metrics, registered once and shared by every set of notifiers.
    notify_metrics: steady_notify::Metrics,
    /// Held while the state file is written.
    saving: Mutex<()>,
}

impl std::fmt::Debug for Slos {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slos").finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Inner {
    entries: Vec<Entry>,
    state_path: Option<PathBuf>,
    save_every: Duration,
    /// Saved state read from the file at start, by SLO name, until an SLO claims it.
    loaded: BTreeMap<String, serde_json::Value>,
    file_read: bool,
}

struct Entry {
    settings: SloSettings,
    bad_when: Arc<BadWhen>,
    counter: Arc<SliCounter>,
    /// Counter values already recorded in the engine.
    seen: (u64, u64),
    engine: Slo,
    history: VecDeque<AlertEvent>,
    anomaly: Option<Watch>,
}

impl Entry {
    /// The firing alerts: name, severity and since when.
    fn firing(&self) -> Vec<(String, Severity, u64)> {
        let engine = self.engine.alerts().into_iter();
        let anomaly = self
            .anomaly
            .iter()
            .flat_map(Watch::alerts)
            .map(|a| (a.name, a.severity, a.state));
        engine
            .chain(anomaly)
            .filter_map(|(name, severity, state)| match state {
                steady_slo::AlertState::Firing { since, .. } => Some((name, severity, since)),
                _ => None,
            })
            .collect()
    }
}

/// The resolve of an alert that no longer exists (its SLO, rule or detector went away).
fn resolved(
    settings: &SloSettings,
    (alert, severity, since): (String, Severity, u64),
    now: u64,
    budget_remaining: f64,
) -> AlertEvent {
    AlertEvent {
        slo: settings.name.clone(),
        alert,
        severity,
        transition: Transition::Resolved,
        since,
        at: now,
        signal: Signal::Removed,
        budget_remaining,
    }
}

/// Why the SLOs of a config could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SloError {
    /// The SLO's settings are out of range (validation should have caught it).
    #[error("slo `{0}`: {1}")]
    Invalid(String, String),
}

/// Turns config settings into the engine's.
pub fn engine_config(s: &SloSettings) -> SloConfig {
    let mut c = SloConfig::new(s.name.clone(), s.objective.0);
    c.period = s.period;
    c.min_events = s.min_events;
    c.no_traffic = s.no_traffic;
    c.rules = s
        .rules()
        .into_iter()
        .map(|r| steady_slo::BurnRateRule {
            severity: match r.severity {
                steady_config::slo::Severity::Page => Severity::Page,
                steady_config::slo::Severity::Ticket => Severity::Ticket,
            },
            long_window: r.long_window,
            short_window: r.short_window,
            factor: r.factor,
            for_duration: r.for_duration,
            keep_firing_for: r.keep_firing_for,
        })
        .collect();
    c
}

fn anomaly_watch(a: &steady_config::slo::Anomaly) -> Watch {
    Watch::new(AnomalyConfig {
        sigmas: a.sigmas,
        half_life: a.half_life,
        for_duration: a.for_duration,
        warmup: a.warmup,
    })
}

/// The worst p99 latency (seconds) over the last minute among `names`' routes.
fn recent_p99(routes: &[crate::metrics::RouteMetrics], names: &[String]) -> Option<f64> {
    let now = std::time::Instant::now();
    routes
        .iter()
        .filter(|r| names.iter().any(|n| n == r.route()))
        .filter_map(|r| {
            r.latency()
                .recent(Duration::from_secs(60), now)
                .quantile(0.99)
        })
        .map(|d| d.as_secs_f64())
        .max_by(f64::total_cmp)
}

impl Slos {
    /// No SLOs yet; [`Slos::configure`] sets them.
    pub fn new(events: Arc<Events>) -> Slos {
        Slos {
            inner: Mutex::new(Inner::default()),
            events,
            notifiers: ArcSwapOption::empty(),
            notify_metrics: steady_notify::Metrics::default(),
            saving: Mutex::new(()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Builds the notifiers `config` names (reading their keys now), counting into the
    /// gateway's delivery metrics.
    pub fn build_notifiers(
        &self,
        config: &Config,
    ) -> Result<Option<Notifiers>, steady_notify::NotifyError> {
        if config.notifiers.is_empty() {
            return Ok(None);
        }
        Notifiers::with_metrics(
            &config.notifiers,
            &config.alerts,
            self.notify_metrics.clone(),
        )
        .map(Some)
    }

    /// The delivery metrics, to register once.
    pub fn notify_metrics(&self) -> &steady_notify::Metrics {
        &self.notify_metrics
    }

    /// Takes the notifiers out (at shutdown), so they can flush.
    pub fn take_notifiers(&self) -> Option<Arc<Notifiers>> {
        self.notifiers.swap(None)
    }

    /// Sets where alert changes go from now on and returns the previous notifiers
    /// (to be shut down, so what they queued is still delivered). Alerts firing now
    /// are sent to the new ones, so that Alertmanager keeps receiving them and a
    /// newly added receiver learns of them (PagerDuty and Opsgenie deduplicate by key).
    pub fn set_notifiers(&self, notifiers: Option<Notifiers>) -> Option<Arc<Notifiers>> {
        let old = self.notifiers.swap(notifiers.map(Arc::new));
        if let Some(new) = self.notifiers.load_full() {
            let now = unix_now();
            let inner = self.lock();
            for e in &inner.entries {
                for (name, severity, since) in e.firing() {
                    let last = e
                        .history
                        .iter()
                        .rev()
                        .find(|h| h.alert == name && h.transition == Transition::Firing);
                    // After a restart the history is empty but the state says firing:
                    // send what the engine knows now.
                    let event = last.cloned().unwrap_or_else(|| AlertEvent {
                        transition: Transition::Firing,
                        signal: Signal::Restored,
                        ..resolved(
                            &e.settings,
                            (name, severity, since),
                            now,
                            e.engine.budget_remaining(now),
                        )
                    });
                    new.send(notification(&e.settings, &event));
                }
            }
        }
        old
    }

    /// Checks that every SLO of `config` can be built, changing nothing; a reload
    /// calls it before it commits anything.
    pub fn check(config: &Config) -> Result<(), SloError> {
        for settings in &config.slos {
            engine_config(settings)
                .validate()
                .map_err(|err| SloError::Invalid(settings.name.clone(), err.to_string()))?;
        }
        Ok(())
    }

    /// Takes the SLOs of `config`. An SLO whose SLI and routes are unchanged keeps its
    /// counts and alert states (its objective, period and rules may change); a new or
    /// redefined one starts empty, or from the state file (read when SLOs first
    /// appear). On error nothing changes.
    ///
    /// Alerts that stop existing (an SLO or rule removed, an SLO redefined, anomaly
    /// settings changed) are resolved with the notifiers, so no incident stays open.
    pub fn configure(&self, config: &Config) -> Result<(), SloError> {
        Self::check(config)?;
        let now = unix_now();
        let mut inner = self.lock();
        if !inner.file_read && !config.slos.is_empty() {
            inner.file_read = true;
            inner.loaded = read_state_file(std::path::Path::new(&config.slo_state.path));
        }
        inner.state_path = (!config.slos.is_empty()).then(|| config.slo_state.path.clone().into());
        inner.save_every = config.slo_state.save_every;
        let mut old: Vec<Entry> = std::mem::take(&mut inner.entries);
        let mut gone: Vec<(SloSettings, AlertEvent)> = Vec::new();
        let mut entries = Vec::with_capacity(config.slos.len());
        for settings in &config.slos {
            let engine_config = engine_config(settings);
            let kept = old.iter().position(|e| {
                e.settings.name == settings.name
                    && e.settings.sli == settings.sli
                    && e.settings.routes == settings.routes
            });
            let entry = match kept.map(|i| old.swap_remove(i)) {
                Some(mut e) => {
                    if e.settings != *settings {
                        let before = e.firing();
                        // Validated by `check`: loading its own state cannot fail.
                        if let Ok(engine) = Slo::load(engine_config, &e.engine.save()) {
                            e.engine = engine;
                        }
                        if e.settings.anomaly != settings.anomaly {
                            e.anomaly = settings.anomaly.as_ref().map(anomaly_watch);
                        }
                        let after: Vec<String> =
                            e.firing().into_iter().map(|(n, _, _)| n).collect();
                        let budget = e.engine.budget_remaining(now);
                        for alert in before {
                            if !after.contains(&alert.0) {
                                gone.push((
                                    e.settings.clone(),
                                    resolved(&e.settings, alert, now, budget),
                                ));
                            }
                        }
                        e.settings = settings.clone();
                    }
                    e
                }
                None => {
                    let fresh = || Slo::try_new(engine_config.clone());
                    let engine = match inner.loaded.remove(&settings.name) {
                        Some(saved) => {
                            let bytes = serde_json::to_vec(&saved).unwrap_or_default();
                            match Slo::load(engine_config.clone(), &bytes) {
                                Ok(engine) => engine,
                                Err(err) => {
                                    tracing::warn!(slo = %settings.name, error = %err, "SLO state not used; starting empty");
                                    fresh().map_err(|err| {
                                        SloError::Invalid(settings.name.clone(), err.to_string())
                                    })?
                                }
                            }
                        }
                        None => fresh().map_err(|err| {
                            SloError::Invalid(settings.name.clone(), err.to_string())
                        })?,
                    };
                    Entry {
                        bad_when: Arc::new(BadWhen::new(&settings.sli)),
                        counter: Arc::default(),
                        seen: (0, 0),
                        engine,
                        history: VecDeque::new(),
                        anomaly: settings.anomaly.as_ref().map(anomaly_watch),
                        settings: settings.clone(),
                    }
                }
            };
            entries.push(entry);
        }
        // What is left was removed or redefined: its alerts end, and its counts go back
        // to the saved state, so an SLO commented out for a while keeps its month.
        for e in old {
            let budget = e.engine.budget_remaining(now);
            for alert in e.firing() {
                gone.push((
                    e.settings.clone(),
                    resolved(&e.settings, alert, now, budget),
                ));
            }
            if !config.slos.iter().any(|s| s.name == e.settings.name) {
                if let Ok(state) = serde_json::from_slice(&e.engine.save()) {
                    inner.loaded.insert(e.settings.name.clone(), state);
                }
            }
        }
        inner.entries = entries;
        drop(inner);
        for (settings, event) in gone {
            self.announce(&settings, &event);
            if let Some(n) = self.notifiers.load_full() {
                n.send(notification(&settings, &event));
            }
        }
        Ok(())
    }

    /// The taps `route` records into: one per SLO that names it.
    pub fn taps_for(&self, route: &str) -> Vec<SliTap> {
        self.lock()
            .entries
            .iter()
            .filter(|e| e.settings.routes.iter().any(|r| r == route))
            .map(|e| SliTap {
                bad_when: e.bad_when.clone(),
                counter: e.counter.clone(),
            })
            .collect()
    }

    /// Latency thresholds of the latency SLOs, so `/metrics` buckets include them.
    pub fn thresholds(&self) -> Vec<Duration> {
        self.lock()
            .entries
            .iter()
            .filter_map(|e| match &*e.bad_when {
                BadWhen::SlowerThan(d) => Some(*d),
                BadWhen::Status(_) => None,
            })
            .collect()
    }

    /// How often the state is saved, if there are SLOs.
    pub fn save_every(&self) -> Option<Duration> {
        let inner = self.lock();
        inner.state_path.as_ref().map(|_| inner.save_every)
    }

    /// Records what the counters gained since the last tick at `now` (seconds), then
    /// evaluates every alert; returns the alert changes (also sent to the sink, the
    /// recent events and the log).
    ///
    /// `samples` gives each route's recent latency, for the anomaly bands.
    pub fn tick(&self, now: u64, routes: &[crate::metrics::RouteMetrics]) -> Vec<AlertEvent> {
        let mut inner = self.lock();
        let notifiers = self.notifiers.load_full();
        let mut out = Vec::new();
        for e in &mut inner.entries {
            let (total, bad) = e.counter.get();
            let d_total = total.saturating_sub(e.seen.0);
            // A request counted in `total` by one read may reach `bad` only by the
            // next: what does not fit now is recorded with the next requests.
            let d_bad = bad.saturating_sub(e.seen.1).min(d_total);
            e.seen = (total, e.seen.1 + d_bad);
            e.engine.record(now, d_total - d_bad, d_total);
            let mut events = e.engine.evaluate(now);
            if let Some(watch) = &mut e.anomaly {
                let latency = recent_p99(routes, &e.settings.routes);
                events.extend(watch.observe(
                    now,
                    &e.settings.name,
                    d_total,
                    d_bad,
                    latency,
                    e.engine.budget_remaining(now),
                ));
            }
            for event in events {
                self.announce(&e.settings, &event);
                if let Some(n) = &notifiers {
                    n.send(notification(&e.settings, &event));
                }
                if e.history.len() == HISTORY {
                    e.history.pop_front();
                }
                e.history.push_back(event.clone());
                out.push(event);
            }
        }
        out
    }

    fn announce(&self, settings: &SloSettings, event: &AlertEvent) {
        let what = match event.transition {
            Transition::Firing => "firing",
            Transition::Resolved => "resolved",
        };
        let severity = match event.severity {
            Severity::Page => "page",
            Severity::Ticket => "ticket",
        };
        let message = format!(
            "slo {} alert {} ({severity}) {what}; budget remaining {:.1}%",
            settings.name,
            event.alert,
            event.budget_remaining * 100.0
        );
        match event.transition {
            Transition::Firing => {
                tracing::warn!(slo = %settings.name, alert = %event.alert, severity, budget_remaining = event.budget_remaining, "SLO alert firing")
            }
            Transition::Resolved => {
                tracing::info!(slo = %settings.name, alert = %event.alert, severity, "SLO alert resolved")
            }
        }
        self.events.push(EventKind::Alert, None, None, message);
    }

    /// Writes every SLO's state to the state file (a temporary file, then a rename).
    pub fn save(&self) -> std::io::Result<()> {
        // One save at a time (the periodic one and the one at shutdown may meet).
        let _saving = self.saving.lock().unwrap_or_else(PoisonError::into_inner);
        let inner = self.lock();
        let Some(path) = inner.state_path.clone() else {
            return Ok(());
        };
        let mut slos = serde_json::Map::new();
        for e in &inner.entries {
            let state: serde_json::Value =
                serde_json::from_slice(&e.engine.save()).unwrap_or_default();
            slos.insert(e.settings.name.clone(), state);
        }
        // Keep what was loaded but is not configured now (an SLO commented out for a
        // while keeps its month).
        for (name, state) in &inner.loaded {
            slos.entry(name.clone()).or_insert_with(|| state.clone());
        }
        drop(inner);
        let file = serde_json::json!({
            "version": FILE_VERSION,
            "saved_at": unix_now(),
            "slos": slos,
        });
        let bytes = serde_json::to_vec(&file).map_err(std::io::Error::other)?;
        // A name of this process's own, so two processes on one path (an old and a new
        // one during a restart) never write into each other's temporary file.
        let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        {
            use std::io::Write as _;
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(&bytes)?;
            // On disk before the rename makes it the state: a power cut leaves the old
            // file or the new one, never an empty one.
            file.sync_all()?;
        }
        std::fs::rename(&tmp, &path)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if let Ok(dir) = std::fs::File::open(dir) {
                let _ = dir.sync_all();
            }
        }
        Ok(())
    }

    /// Every SLO's status at `now`, for the admin API.
    pub fn views(&self, now: u64) -> Vec<SloView> {
        self.lock()
            .entries
            .iter()
            .map(|e| {
                let counts = e.counter.get();
                let mut status = e.engine.status(now);
                if let Some(watch) = &e.anomaly {
                    status.alerts.extend(watch.alerts());
                    if watch.firing() && status.worst.is_none() {
                        status.worst = Some(Severity::Ticket);
                    }
                }
                SloView {
                    name: e.settings.name.clone(),
                    description: e.settings.description.clone(),
                    routes: e.settings.routes.clone(),
                    sli: match &e.settings.sli {
                        Sli::Availability { .. } => "availability".into(),
                        Sli::LatencyBelow(d) => {
                            format!(
                                "latency_below {}",
                                steady_config::units::format_duration(*d)
                            )
                        }
                    },
                    events_total: counts.0,
                    bad_events_total: counts.1,
                    status,
                    report: report(&e.engine, now),
                    history: e.history.iter().rev().cloned().collect(),
                }
            })
            .collect()
    }

    /// Writes the `steady_slo_*` series.
    pub(crate) fn encode(&self, encoder: &mut DescriptorEncoder) -> std::fmt::Result {
        let now = unix_now();
        let views = self.views(now);
        if views.is_empty() {
            return Ok(());
        }
        {
            let mut enc = encoder.encode_descriptor(
                "steady_slo_events",
                "Requests counted by each SLO since start.",
                None,
                MetricType::Counter,
            )?;
            for v in &views {
                ConstCounter::new(v.events_total)
                    .encode(enc.encode_family(&[("slo", v.name.as_str())])?)?;
            }
        }
        {
            let mut enc = encoder.encode_descriptor(
                "steady_slo_bad_events",
                "Requests each SLO counted as bad (errors, or slower than its threshold) since start.",
                None,
                MetricType::Counter,
            )?;
            for v in &views {
                ConstCounter::new(v.bad_events_total)
                    .encode(enc.encode_family(&[("slo", v.name.as_str())])?)?;
            }
        }
        let gauges: [(&str, &str, GaugeOf); 2] = [
            (
                "steady_slo_objective_ratio",
                "Each SLO's objective (share of good requests).",
                |v| v.status.objective,
            ),
            (
                "steady_slo_error_budget_remaining_ratio",
                "Share of the period's error budget left (negative when overspent).",
                |v| v.status.budget_remaining,
            ),
        ];
        for (name, help, value) in gauges {
            let mut enc = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for v in &views {
                ConstGauge::new(value(v))
                    .encode(enc.encode_family(&[("slo", v.name.as_str())])?)?;
            }
        }
        {
            let mut enc = encoder.encode_descriptor(
                "steady_slo_burn_rate_ratio",
                "Error-budget burn rate over each alert window and the period (1 spends the budget in exactly one period).",
                None,
                MetricType::Gauge,
            )?;
            for v in &views {
                for w in &v.status.windows {
                    let window =
                        steady_config::units::format_duration(Duration::from_secs(w.window_secs));
                    ConstGauge::new(w.burn_rate).encode(enc.encode_family(&[
                        ("slo", v.name.as_str()),
                        ("window", window.as_str()),
                    ])?)?;
                }
            }
        }
        {
            let mut enc = encoder.encode_descriptor(
                "steady_slo_alert_firing",
                "1 while an SLO alert fires, else 0.",
                None,
                MetricType::Gauge,
            )?;
            for v in &views {
                for a in &v.status.alerts {
                    let severity = match a.severity {
                        Severity::Page => "page",
                        Severity::Ticket => "ticket",
                    };
                    ConstGauge::new(i64::from(a.state.is_firing())).encode(enc.encode_family(
                        &[
                            ("slo", v.name.as_str()),
                            ("alert", a.name.as_str()),
                            ("severity", severity),
                        ],
                    )?)?;
                }
            }
        }
        Ok(())
    }
}

/// Reads one gauge's value from a view.
type GaugeOf = fn(&SloView) -> f64;

/// What notifiers receive for one alert change.
pub fn notification(settings: &SloSettings, event: &AlertEvent) -> Alert {
    let at = |secs: u64| UNIX_EPOCH + Duration::from_secs(secs);
    let routes = settings.routes.join(",");
    let budget = format!("{:.1}%", event.budget_remaining * 100.0);
    let window = |secs: u64| steady_config::units::format_duration(Duration::from_secs(secs));
    let (summary, description) = match &event.signal {
        Signal::BurnRate { long, short, factor } => (
            format!(
                "{}: error budget burning {:.1}x over {} and {:.1}x over {} (threshold {factor}x)",
                settings.name,
                long.burn_rate,
                window(long.window_secs),
                short.burn_rate,
                window(short.window_secs),
            ),
            format!(
                "{} of {} requests failed the SLO over the last {} ({} of {} over {}); objective {}%, {budget} of the error budget left over {}.",
                long.bad,
                long.total,
                window(long.window_secs),
                short.bad,
                short.total,
                window(short.window_secs),
                settings.objective.0 * 100.0,
                window(settings.period.as_secs()),
            ),
        ),
        Signal::NoTraffic { last_traffic } => (
            format!("{}: no requests on routes {routes}", settings.name),
            format!(
                "Routes {routes} have had no requests since {}.",
                last_traffic.map_or("start".to_string(), |t| humantime::format_rfc3339_seconds(at(t)).to_string())
            ),
        ),
        Signal::Restored => (
            format!("{}: alert {} is firing (state restored at start)", settings.name, event.alert),
            format!("steady restarted while this alert was firing; {budget} of the error budget is left."),
        ),
        Signal::Removed => (
            format!("{}: alert {} ended by a config change", settings.name, event.alert),
            "The SLO, the rule or the anomaly detector behind this alert was removed or redefined.".to_string(),
        ),
        Signal::Anomaly { metric, value, baseline, band } => (
            format!("{}: {metric} left its baseline", settings.name),
            format!(
                "{metric} was {value:.4} over the last minute; its baseline is {baseline:.4} ± {band:.4}."
            ),
        ),
    };
    let severity = match event.severity {
        Severity::Page => steady_config::slo::Severity::Page,
        Severity::Ticket => steady_config::slo::Severity::Ticket,
    };
    let firing = event.transition == Transition::Firing;
    let mut annotations = BTreeMap::new();
    annotations.insert("budget_remaining".to_string(), budget);
    if let Some(d) = &settings.description {
        annotations.insert("slo_description".to_string(), d.clone());
    }
    Alert {
        slo: settings.name.clone(),
        name: event.alert.clone(),
        severity,
        firing,
        starts_at: at(event.since),
        ends_at: (!firing).then(|| at(event.at)),
        summary,
        description,
        labels: BTreeMap::from([("routes".to_string(), routes)]),
        annotations,
    }
}

/// Exports [`Slos`] at scrape time.
#[derive(Debug)]
pub(crate) struct SloCollector(pub(crate) Arc<Slos>);

impl Collector for SloCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        self.0.encode(&mut encoder)
    }
}

/// One SLO as the admin API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct SloView {
    /// The SLO's name.
    pub name: String,
    /// Its description, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Routes it counts.
    pub routes: Vec<String>,
    /// `availability` or `latency_below 300ms`.
    pub sli: String,
    /// Requests counted since this process started.
    pub events_total: u64,
    /// Bad requests counted since this process started.
    pub bad_events_total: u64,
    /// Objective, budget, burn rates and alert states.
    pub status: SloStatus,
    /// Achieved versus objective over the period and the calendar month so far.
    pub report: Report,
    /// Alert changes, newest first.
    pub history: Vec<AlertEvent>,
}

/// An SLA-style report of one SLO.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The objective.
    pub objective: f64,
    /// Over the rolling period.
    pub period: ReportWindow,
    /// Over the calendar month (UTC) so far, within what the period's buckets hold.
    pub month_to_date: ReportWindow,
}

/// Achieved availability over one window.
#[derive(Debug, Clone, Serialize)]
pub struct ReportWindow {
    /// Start of the window (seconds since the epoch).
    pub from: u64,
    /// End of the window.
    pub to: u64,
    /// Requests in the window.
    pub total: u64,
    /// Bad requests in the window.
    pub bad: u64,
    /// `good / total`, or `None` without requests.
    pub achieved: Option<f64>,
    /// Whether `achieved` meets the objective (`None` without requests).
    pub met: Option<bool>,
    /// Share of the window's budget spent (`bad / (budget × total)`).
    pub budget_spent: Option<f64>,
}

fn report(engine: &Slo, now: u64) -> Report {
    let objective = engine.config().objective;
    let period = engine.config().period.as_secs();
    let window = |from: u64| {
        let c = engine.counts(now, now - from);
        let achieved = c.error_rate().map(|r| 1.0 - r);
        ReportWindow {
            from,
            to: now,
            total: c.total,
            bad: c.bad(),
            achieved,
            met: achieved.map(|a| a >= objective),
            budget_spent: c.error_rate().map(|r| r / (1.0 - objective)),
        }
    };
    let month_start = month_start(now).max(now.saturating_sub(period));
    Report {
        objective,
        period: window(now.saturating_sub(period)),
        month_to_date: window(month_start),
    }
}

/// The first second of `now`'s calendar month, UTC.
fn month_start(now: u64) -> u64 {
    let days = now / 86_400;
    // Civil-from-days (Howard Hinnant's algorithm), then back to the 1st.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day_of_month = doy - (153 * mp + 2) / 5; // 0-based
    (days as i64 - day_of_month) as u64 * 86_400
}

fn read_state_file(path: &std::path::Path) -> BTreeMap<String, serde_json::Value> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return BTreeMap::new(),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read the SLO state file; SLOs start empty");
            return BTreeMap::new();
        }
    };
    #[derive(serde::Deserialize)]
    struct File {
        version: u32,
        slos: BTreeMap<String, serde_json::Value>,
    }
    match serde_json::from_slice::<File>(&bytes) {
        Ok(f) if f.version == FILE_VERSION => {
            tracing::info!(path = %path.display(), slos = f.slos.len(), "SLO state loaded");
            f.slos
        }
        Ok(f) => {
            tracing::warn!(path = %path.display(), version = f.version, "SLO state file has an unknown version; SLOs start empty");
            BTreeMap::new()
        }
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "SLO state file is corrupt; SLOs start empty");
            BTreeMap::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(slos: &str) -> Config {
        let yaml = format!(
            "listeners: [{{name: web, bind: 127.0.0.1:0}}]
routes: [{{name: api, listener: web, upstream: app}}, {{name: admin, listener: web, upstream: app}}]
upstreams: [{{name: app, endpoints: [{{address: 127.0.0.1:9}}]}}]
slo_state: {{path: /dev/null/steady-test-state.json}}
slos: {slos}
"
        );
        steady_config::parse(&yaml, "<test>").unwrap()
    }

    fn period_total(slos: &Slos, now: u64) -> u64 {
        let v = slos.views(now);
        let w = v[0].status.windows.last().unwrap();
        w.total
    }

    #[test]
    fn taps_count_by_sli_and_a_reload_keeps_or_resets_counts() {
        let slos = Slos::new(Arc::new(Events::default()));
        slos.configure(&config("[{name: a, routes: [api], objective: 99%}]"))
            .unwrap();
        assert!(slos.taps_for("admin").is_empty());
        let taps = slos.taps_for("api");
        assert_eq!(taps.len(), 1);
        for status in [200, 201, 404, 500, 503] {
            taps[0].record(status, Duration::from_millis(1));
        }
        let t = 1_800_000_000;
        slos.tick(t, &[]);
        assert_eq!(period_total(&slos, t), 5);
        assert_eq!(slos.views(t)[0].bad_events_total, 2);

        // A new objective keeps the counts (and the tap keeps counting).
        slos.configure(&config("[{name: a, routes: [api], objective: 99.9%}]"))
            .unwrap();
        taps[0].record(200, Duration::ZERO);
        slos.tick(t + 1, &[]);
        assert_eq!(period_total(&slos, t + 1), 6);
        assert!((slos.views(t + 1)[0].status.objective - 0.999).abs() < 1e-12);

        // A new SLI means new counts.
        slos.configure(&config(
            "[{name: a, routes: [api], objective: 99.9%, sli: {latency_below: 10ms}}]",
        ))
        .unwrap();
        assert_eq!(period_total(&slos, t + 1), 0);
        let taps = slos.taps_for("api");
        taps[0].record(200, Duration::from_millis(5));
        taps[0].record(500, Duration::from_millis(50));
        slos.tick(t + 2, &[]);
        let v = slos.views(t + 2);
        assert_eq!((v[0].events_total, v[0].bad_events_total), (2, 1));
        assert_eq!(slos.thresholds(), [Duration::from_millis(10)]);
    }

    #[test]
    fn a_refused_config_changes_nothing() {
        let slos = Slos::new(Arc::new(Events::default()));
        slos.configure(&config("[{name: a, routes: [api], objective: 99%}]"))
            .unwrap();
        let taps = slos.taps_for("api");
        taps[0].record(500, Duration::ZERO);
        slos.tick(1_800_000_000, &[]);
        let mut bad = config("[{name: a, routes: [api], objective: 99.9%}]");
        let rule = bad.slos[0].rules()[0].clone();
        bad.slos[0].rules = Some(vec![rule.clone(), rule]);
        assert!(slos.configure(&bad).is_err());
        let v = slos.views(1_800_000_000);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].status.windows[0].total, 1);
        assert!((v[0].status.objective - 0.99).abs() < 1e-12);
    }

    #[test]
    fn a_bad_request_seen_before_its_total_is_not_lost() {
        let slos = Slos::new(Arc::new(Events::default()));
        slos.configure(&config("[{name: a, routes: [api], objective: 99%}]"))
            .unwrap();
        let counter = slos.lock().entries[0].counter.clone();
        // One tick reads the total of a failing request before its bad count lands.
        counter.total.fetch_add(1, Ordering::Relaxed);
        slos.tick(1_800_000_000, &[]);
        counter.bad.fetch_add(1, Ordering::Relaxed);
        slos.tick(1_800_000_001, &[]);
        counter.total.fetch_add(1, Ordering::Relaxed);
        slos.tick(1_800_000_002, &[]);
        let w = &slos.views(1_800_000_002)[0].status.windows[0];
        assert_eq!((w.total, w.bad), (2, 1));
    }

    #[test]
    fn removing_a_firing_slo_resolves_its_alerts_and_keeps_its_state() {
        let dir = std::env::temp_dir().join(format!("steady-slo-unit-{}", std::process::id()));
        let path = dir.join("state.json");
        let with = |slos: &str| {
            let mut c = config(slos);
            c.slo_state.path = path.display().to_string();
            c
        };
        let events = Arc::new(Events::default());
        let slos = Slos::new(events.clone());
        // Start without SLOs: the state file is read when they first appear.
        slos.configure(&with("[]")).unwrap();
        slos.configure(&with(
            "[{name: a, routes: [api], objective: 99%, min_events: 1}]",
        ))
        .unwrap();
        let taps = slos.taps_for("api");
        taps[0].record(500, Duration::ZERO);
        let t = unix_now();
        let fired = slos.tick(t, &[]);
        assert!(fired.iter().any(|e| e.transition == Transition::Firing));
        slos.configure(&with("[]")).unwrap();
        let recent = events.recent();
        assert!(
            recent
                .iter()
                .any(|e| e.kind == EventKind::Alert && e.message.contains("resolved")),
            "{recent:?}"
        );
        // The removed SLO's counts are still saved, and come back with it.
        slos.configure(&with("[{name: b, routes: [api], objective: 99%}]"))
            .unwrap();
        slos.save().unwrap();
        let again = Slos::new(Arc::new(Events::default()));
        again
            .configure(&with(
                "[{name: a, routes: [api], objective: 99%, min_events: 1}]",
            ))
            .unwrap();
        let v = again.views(t);
        assert_eq!(v[0].status.windows[0].total, 1);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_unwritable_state_path_is_an_error_not_a_panic() {
        let slos = Slos::new(Arc::new(Events::default()));
        slos.configure(&config("[{name: a, routes: [api], objective: 99%}]"))
            .unwrap();
        assert!(slos.save().is_err());
    }

    #[test]
    fn month_start_is_the_first_of_the_month_utc() {
        // 2026-11-25T19:20:00Z → 2026-11-01T00:00:00Z.
        assert_eq!(month_start(1_795_634_400), 1_793_491_200);
        // 2024-03-01 stays; 2024-02-29 goes to 2024-02-01.
        assert_eq!(month_start(1_709_251_200), 1_709_251_200);
        assert_eq!(month_start(1_709_164_800), 1_706_745_600);
    }
}
