//! Passive outlier detection, with Envoy's `outlier_detection` semantics.
//!
//! The proxy feeds every finished request's [`RequestResult`] to an [`OutlierDetector`]
//! with [`record`](OutlierDetector::record) and calls
//! [`evaluate`](OutlierDetector::evaluate) once per [`OutlierConfig::interval`]. The
//! detector ejects endpoints by setting [`Endpoint::set_ejected`], which takes them out
//! of every [`EndpointSet`](crate::EndpointSet) that shares the `Arc`, and lets them back
//! when their ejection time passes or an active health check passes
//! ([`readmit`](OutlierDetector::readmit)). Every change comes back as an
//! [`OutlierEvent`] for logs and metrics.
//!
//! Rules, as Envoy's:
//! - **Consecutive failures** eject at once when an endpoint's run of failures reaches
//!   [`consecutive_failures`](OutlierConfig::consecutive_failures) (any failure) or
//!   [`consecutive_gateway_failures`](OutlierConfig::consecutive_gateway_failures)
//!   (502/503/504, reset, timeout, connect failure). A success ends both runs; a plain
//!   5xx ends the gateway run. Unlike Envoy, which tries once when the run reaches the
//!   threshold, every further failure tries again, so an ejection that
//!   `max_ejection_percent` blocked happens as soon as there is room.
//! - **Success rate**, at `evaluate`: over the endpoints with at least `request_volume`
//!   requests this interval, if there are at least `min_hosts` of them, eject those whose
//!   success rate is below `mean − stdev_factor × stdev` (population standard deviation,
//!   rates in percent).
//! - **Failure percentage**, at `evaluate`: over the endpoints with at least
//!   `request_volume` requests this interval, if there are at least `min_hosts` of them,
//!   eject those whose failure percentage is at least `threshold`.
//!
//! Each rule is on when its option is `Some`; Envoy's `enforcing_*` percentages are not
//! modelled (a rule that is on always enforces).
//!
//! **Ejection time.** The `k`-th ejection in a row lasts
//! `min(base_ejection × k, max(base_ejection, max_ejection))` plus a jitter drawn
//! uniformly from `0..=jitter` (added after the cap, as Envoy does, so endpoints ejected at
//! the cap still come back spread out). `k` is a multiplier that grows by one per ejection
//! (but not past the cap) and shrinks by one at each `evaluate` the endpoint starts not
//! ejected, so an endpoint that stays healthy is soon forgiven.
//!
//! **`max_ejection_percent`.** An ejection happens only if, afterwards, ejected endpoints
//! would be at most `max_ejection_percent`% of the endpoints:
//! `(ejected + 1) × 100 <= max_ejection_percent × total`, in integers. With 3 endpoints and
//! 50% at most 1 is ejected; with 3 endpoints and 10% none is, unless
//! [`always_eject_one`](OutlierConfig::always_eject_one) (Envoy's `always_eject_one_host`,
//! off by default) allows one ejection while none is in force.
//!
//! Everything is pure: time comes in as an [`Instant`] and jitter from a generator seeded
//! at construction.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use crate::Endpoint;

/// How one finished request went, as outlier detection sorts it.
///
/// Map responses with [`RequestResult::from_status`]; local errors by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestResult {
    /// The upstream answered with anything but a 5xx.
    Success,
    /// The upstream answered with a 5xx other than 502, 503 or 504.
    Failure5xx,
    /// 502, 503 or 504 from the upstream, a reset or a timeout.
    GatewayFailure,
    /// The connection to the upstream could not be made.
    ///
    /// Counts as a gateway failure (Envoy maps it to 503 unless
    /// `split_external_local_origin_errors` is on, which is not modelled).
    ConnectFailure,
}

impl RequestResult {
    /// Sorts an upstream's HTTP status code.
    pub fn from_status(status: u16) -> Self {
        match status {
            502..=504 => Self::GatewayFailure,
            500..=599 => Self::Failure5xx,
            _ => Self::Success,
        }
    }

    /// Returns whether the request failed.
    pub fn is_failure(self) -> bool {
        self != Self::Success
    }

    /// Returns whether the failure counts towards
    /// [`consecutive_gateway_failures`](OutlierConfig::consecutive_gateway_failures).
    pub fn is_gateway_failure(self) -> bool {
        matches!(self, Self::GatewayFailure | Self::ConnectFailure)
    }
}

/// Success-rate ejection settings (Envoy's `success_rate_*`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SuccessRate {
    /// Endpoints with enough volume needed before the rule runs at all.
    pub min_hosts: u32,
    /// Requests in one interval an endpoint needs to be judged.
    pub request_volume: u32,
    /// Endpoints below `mean − stdev_factor × stdev` are ejected.
    pub stdev_factor: f64,
}

impl Default for SuccessRate {
    /// Envoy's defaults: 5 hosts, 100 requests, factor 1.9.
    fn default() -> Self {
        Self {
            min_hosts: 5,
            request_volume: 100,
            stdev_factor: 1.9,
        }
    }
}

/// Failure-percentage ejection settings (Envoy's `failure_percentage_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailurePercentage {
    /// Endpoints failing at least this percentage of requests are ejected.
    pub threshold: u32,
    /// Endpoints with enough volume needed before the rule runs at all.
    pub min_hosts: u32,
    /// Requests in one interval an endpoint needs to be judged.
    pub request_volume: u32,
}

impl Default for FailurePercentage {
    /// Envoy's defaults: 85%, 5 hosts, 50 requests.
    fn default() -> Self {
        Self {
            threshold: 85,
            min_hosts: 5,
            request_volume: 50,
        }
    }
}

/// Outlier detection settings; [`Default`] gives Envoy's defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OutlierConfig {
    /// Failures in a row (of any [`RequestResult`] but success) that eject; default 5.
    pub consecutive_failures: Option<u32>,
    /// Gateway failures in a row that eject; default off (Envoy's is not enforced by
    /// default).
    pub consecutive_gateway_failures: Option<u32>,
    /// Success-rate ejection; default on with [`SuccessRate::default`].
    pub success_rate: Option<SuccessRate>,
    /// Failure-percentage ejection; default off (Envoy's is not enforced by default).
    pub failure_percentage: Option<FailurePercentage>,
    /// How often the caller runs [`OutlierDetector::evaluate`]; default 10 s.
    pub interval: Duration,
    /// Ejection time of a first ejection, multiplied for repeat ejections; default 30 s.
    pub base_ejection: Duration,
    /// Longest ejection before jitter; default 300 s.
    pub max_ejection: Duration,
    /// Largest share of endpoints ejected at once, in percent; default 10.
    pub max_ejection_percent: u32,
    /// Allow one ejection while none is in force even if `max_ejection_percent` rounds
    /// to zero endpoints (Envoy's `always_eject_one_host`); default false.
    pub always_eject_one: bool,
    /// Largest random time added to each ejection; default 1 s.
    pub jitter: Duration,
    /// Healthy-panic threshold in percent for the endpoint sets the detector serves;
    /// default 50. The detector does not read it: pass it to
    /// [`EndpointSet::with_panic_threshold`](crate::EndpointSet::with_panic_threshold).
    pub panic_threshold: u32,
}

impl Default for OutlierConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: Some(5),
            consecutive_gateway_failures: None,
            success_rate: Some(SuccessRate::default()),
            failure_percentage: None,
            interval: Duration::from_secs(10),
            base_ejection: Duration::from_secs(30),
            max_ejection: Duration::from_secs(300),
            max_ejection_percent: 10,
            always_eject_one: false,
            jitter: Duration::from_secs(1),
            panic_threshold: 50,
        }
    }
}

/// An [`OutlierConfig`] that [`OutlierConfig::validate`] rejects.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OutlierConfigError {
    /// A consecutive-failure threshold is zero.
    #[error("{0} must be at least 1")]
    ZeroThreshold(&'static str),
    /// A duration that must be positive is zero.
    #[error("{0} must be longer than zero")]
    ZeroDuration(&'static str),
    /// `max_ejection` is shorter than `base_ejection`.
    #[error("max ejection time ({max:?}) is shorter than base ejection time ({base:?})")]
    MaxBelowBase {
        /// The configured base ejection time.
        base: Duration,
        /// The configured max ejection time.
        max: Duration,
    },
    /// A percentage is above 100.
    #[error("{name} must be a percentage from 0 to 100, got {value}")]
    Percent {
        /// Which setting.
        name: &'static str,
        /// The value given.
        value: u32,
    },
    /// The success-rate standard-deviation factor is negative or not finite.
    #[error("success rate stdev factor must be a finite number of at least 0, got {0}")]
    StdevFactor(f64),
}

impl OutlierConfig {
    /// Checks the settings: thresholds, volumes and host minimums at least 1, interval and
    /// base ejection above zero, `max_ejection >= base_ejection`, percentages at most 100,
    /// a finite non-negative stdev factor.
    pub fn validate(&self) -> Result<(), OutlierConfigError> {
        use OutlierConfigError::*;
        let at_least_one = |v: Option<u32>, name| match v {
            Some(0) => Err(ZeroThreshold(name)),
            _ => Ok(()),
        };
        let percent = |value: u32, name| {
            if value > 100 {
                Err(Percent { name, value })
            } else {
                Ok(())
            }
        };
        at_least_one(self.consecutive_failures, "consecutive_failures")?;
        at_least_one(
            self.consecutive_gateway_failures,
            "consecutive_gateway_failures",
        )?;
        if let Some(sr) = &self.success_rate {
            at_least_one(Some(sr.min_hosts), "success_rate.min_hosts")?;
            at_least_one(Some(sr.request_volume), "success_rate.request_volume")?;
            if !sr.stdev_factor.is_finite() || sr.stdev_factor < 0.0 {
                return Err(StdevFactor(sr.stdev_factor));
            }
        }
        if let Some(fp) = &self.failure_percentage {
            percent(fp.threshold, "failure_percentage.threshold")?;
            at_least_one(Some(fp.min_hosts), "failure_percentage.min_hosts")?;
            at_least_one(Some(fp.request_volume), "failure_percentage.request_volume")?;
        }
        if self.interval.is_zero() {
            return Err(ZeroDuration("interval"));
        }
        if self.base_ejection.is_zero() {
            return Err(ZeroDuration("base_ejection"));
        }
        if self.max_ejection < self.base_ejection {
            return Err(MaxBelowBase {
                base: self.base_ejection,
                max: self.max_ejection,
            });
        }
        percent(self.max_ejection_percent, "max_ejection_percent")?;
        percent(self.panic_threshold, "panic_threshold")?;
        Ok(())
    }
}

/// Why an endpoint was ejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EjectReason {
    /// [`OutlierConfig::consecutive_failures`] failures in a row.
    ConsecutiveFailures,
    /// [`OutlierConfig::consecutive_gateway_failures`] gateway failures in a row.
    ConsecutiveGatewayFailures,
    /// Success rate below the fleet's `mean − stdev_factor × stdev`.
    SuccessRate,
    /// Failure percentage at or above [`FailurePercentage::threshold`].
    FailurePercentage,
}

/// Why an endpoint came back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReadmitReason {
    /// Its ejection time passed.
    Expired,
    /// An active health check passed ([`OutlierDetector::readmit`]).
    HealthCheck,
}

/// A change the detector made (or would have), for the caller to log and count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutlierEvent {
    /// The endpoint was ejected.
    Ejected {
        /// The endpoint.
        addr: SocketAddr,
        /// Which rule ejected it.
        reason: EjectReason,
        /// How long it stays out, jitter included.
        duration: Duration,
        /// The ejection-time multiplier applied (1 for a first ejection).
        multiplier: u32,
    },
    /// A rule called for an ejection that `max_ejection_percent` did not allow (Envoy's
    /// `ejections_overflow`).
    EjectionSkipped {
        /// The endpoint.
        addr: SocketAddr,
        /// Which rule called for it.
        reason: EjectReason,
    },
    /// The endpoint was let back in.
    Readmitted {
        /// The endpoint.
        addr: SocketAddr,
        /// Why.
        reason: ReadmitReason,
    },
}

/// What the detector knows about one endpoint.
#[derive(Debug)]
struct Host {
    /// The shared endpoint whose ejected flag the detector sets.
    endpoint: Arc<Endpoint>,
    /// Failures of any kind in a row.
    consecutive_failures: u32,
    /// Gateway failures in a row.
    consecutive_gateway_failures: u32,
    /// Successes since the last `evaluate`.
    successes: u64,
    /// Failures since the last `evaluate`.
    failures: u64,
    /// End of the current ejection; `None` when not ejected.
    ejected_until: Option<Instant>,
    /// Start of the current ejection; `None` when not ejected.
    ejected_at: Option<Instant>,
    /// Ejection-time multiplier: ejections in a row, less one per healthy interval.
    multiplier: u32,
}

impl Host {
    fn new(endpoint: Arc<Endpoint>) -> Self {
        Self {
            endpoint,
            consecutive_failures: 0,
            consecutive_gateway_failures: 0,
            successes: 0,
            failures: 0,
            ejected_until: None,
            ejected_at: None,
            multiplier: 0,
        }
    }

    fn volume(&self) -> u64 {
        self.successes + self.failures
    }

    /// Success rate this interval in percent; call only with volume > 0.
    fn success_rate(&self) -> f64 {
        self.successes as f64 * 100.0 / self.volume() as f64
    }
}

/// Passive outlier detection over one upstream's endpoints.
///
/// Not shared: wrap it in a mutex (one per upstream) if several threads record.
#[derive(Debug)]
pub struct OutlierDetector {
    /// The settings, validated.
    config: OutlierConfig,
    /// One entry per distinct endpoint address.
    hosts: Vec<Host>,
    /// Index into `hosts` by address.
    index: HashMap<SocketAddr, usize>,
    /// Hosts currently ejected.
    ejected: usize,
    /// Earliest `ejected_until` among ejected hosts, so `record` checks expiry cheaply.
    next_expiry: Option<Instant>,
    /// Jitter source.
    rng: fastrand::Rng,
}

impl OutlierDetector {
    /// Creates a detector over `endpoints` (later duplicates of an address are ignored),
    /// drawing jitter from a generator seeded with `seed`.
    pub fn try_new(
        config: OutlierConfig,
        endpoints: Vec<Arc<Endpoint>>,
        seed: u64,
    ) -> Result<Self, OutlierConfigError> {
        config.validate()?;
        let mut detector = Self {
            config,
            hosts: Vec::new(),
            index: HashMap::new(),
            ejected: 0,
            next_expiry: None,
            rng: fastrand::Rng::with_seed(seed),
        };
        detector.set_endpoints(endpoints);
        Ok(detector)
    }

    /// Returns the settings.
    pub fn config(&self) -> &OutlierConfig {
        &self.config
    }

    /// Replaces the endpoint list (e.g. after DNS re-resolution).
    ///
    /// Endpoints whose address stays keep their counters, ejection and multiplier (the
    /// new `Arc` takes over the ejected flag). Removed endpoints have their ejected flag
    /// cleared, since nothing would clear it later. Ejections in force stay even if the
    /// smaller fleet now puts them over `max_ejection_percent`; new ejections wait.
    pub fn set_endpoints(&mut self, endpoints: Vec<Arc<Endpoint>>) {
        let mut old: HashMap<SocketAddr, Host> = self
            .hosts
            .drain(..)
            .map(|h| (h.endpoint.addr(), h))
            .collect();
        self.index.clear();
        for endpoint in endpoints {
            let addr = endpoint.addr();
            if self.index.contains_key(&addr) {
                continue;
            }
            let host = match old.remove(&addr) {
                Some(mut h) => {
                    if !Arc::ptr_eq(&h.endpoint, &endpoint) {
                        h.endpoint.set_ejected(false);
                        endpoint.set_ejected(h.ejected_until.is_some());
                        h.endpoint = endpoint;
                    }
                    h
                }
                None => {
                    endpoint.set_ejected(false);
                    Host::new(endpoint)
                }
            };
            self.index.insert(addr, self.hosts.len());
            self.hosts.push(host);
        }
        for gone in old.into_values() {
            gone.endpoint.set_ejected(false);
        }
        self.recount();
    }

    /// Returns the number of endpoints tracked.
    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    /// Returns whether no endpoint is tracked.
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    /// Returns the number of endpoints ejected now.
    pub fn ejected_count(&self) -> usize {
        self.ejected
    }

    /// Returns whether the endpoint at `addr` is ejected.
    pub fn is_ejected(&self, addr: SocketAddr) -> bool {
        self.host(addr).is_some_and(|h| h.ejected_until.is_some())
    }

    /// Returns until when the endpoint at `addr` is ejected, `None` if it is not.
    pub fn ejected_until(&self, addr: SocketAddr) -> Option<Instant> {
        self.host(addr).and_then(|h| h.ejected_until)
    }

    /// Returns the endpoint's ejection-time multiplier (0 for one never ejected or
    /// fully forgiven), `None` for an unknown address.
    pub fn multiplier(&self, addr: SocketAddr) -> Option<u32> {
        self.host(addr).map(|h| h.multiplier)
    }

    /// Records one finished request on the endpoint at `addr` (unknown addresses are
    /// ignored) and applies the consecutive-failure rules.
    ///
    /// First readmits any endpoint whose ejection time has passed at `now`.
    pub fn record(
        &mut self,
        addr: SocketAddr,
        now: Instant,
        result: RequestResult,
    ) -> Vec<OutlierEvent> {
        let mut events = Vec::new();
        if self.next_expiry.is_some_and(|t| t <= now) {
            self.readmit_expired(now, &mut events);
        }
        let Some(&i) = self.index.get(&addr) else {
            return events;
        };
        let host = &mut self.hosts[i];
        if result.is_failure() {
            host.failures += 1;
            host.consecutive_failures = host.consecutive_failures.saturating_add(1);
            if result.is_gateway_failure() {
                host.consecutive_gateway_failures =
                    host.consecutive_gateway_failures.saturating_add(1);
            } else {
                host.consecutive_gateway_failures = 0;
            }
        } else {
            host.successes += 1;
            host.consecutive_failures = 0;
            host.consecutive_gateway_failures = 0;
        }
        if host.ejected_until.is_some() {
            // Requests started before the ejection still finish; they add to the
            // interval's counts but cannot eject it again.
            return events;
        }
        let reached = |limit: Option<u32>, run: u32| limit.is_some_and(|n| run >= n);
        let reason = if reached(self.config.consecutive_failures, host.consecutive_failures) {
            Some(EjectReason::ConsecutiveFailures)
        } else if reached(
            self.config.consecutive_gateway_failures,
            host.consecutive_gateway_failures,
        ) {
            Some(EjectReason::ConsecutiveGatewayFailures)
        } else {
            None
        };
        if let Some(reason) = reason {
            events.push(self.try_eject(i, now, reason));
        }
        events
    }

    /// Runs one interval's step at `now`: readmits endpoints whose time has passed,
    /// lowers the multiplier of endpoints that were not ejected, applies the
    /// success-rate and failure-percentage rules to this interval's counts, and starts a
    /// new interval.
    pub fn evaluate(&mut self, now: Instant) -> Vec<OutlierEvent> {
        let mut events = Vec::new();
        for host in &mut self.hosts {
            if host.ejected_until.is_none() {
                host.multiplier = host.multiplier.saturating_sub(1);
            }
        }
        self.readmit_expired(now, &mut events);

        let mut candidates: Vec<(f64, usize, EjectReason)> = Vec::new();
        if let Some(sr) = self.config.success_rate {
            let judged: Vec<(usize, f64)> = self
                .judged(sr.request_volume)
                .map(|i| (i, self.hosts[i].success_rate()))
                .collect();
            if judged.len() >= sr.min_hosts as usize {
                let n = judged.len() as f64;
                let mean = judged.iter().map(|&(_, r)| r).sum::<f64>() / n;
                let variance = judged.iter().map(|&(_, r)| (r - mean).powi(2)).sum::<f64>() / n;
                let threshold = mean - sr.stdev_factor * variance.sqrt();
                candidates.extend(
                    judged
                        .iter()
                        .filter(|&&(_, r)| r < threshold)
                        .map(|&(i, r)| (r, i, EjectReason::SuccessRate)),
                );
            }
        }
        if let Some(fp) = self.config.failure_percentage {
            let judged: Vec<(usize, f64)> = self
                .judged(fp.request_volume)
                .map(|i| (i, self.hosts[i].success_rate()))
                .collect();
            if judged.len() >= fp.min_hosts as usize {
                candidates.extend(
                    judged
                        .iter()
                        .filter(|&&(_, r)| 100.0 - r >= f64::from(fp.threshold))
                        .map(|&(i, r)| (r, i, EjectReason::FailurePercentage)),
                );
            }
        }
        // Worst first, so the worst get the room `max_ejection_percent` leaves.
        candidates.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        // Both rules may flag one endpoint (same rate, so adjacent): try it once.
        candidates.dedup_by_key(|c| c.1);
        for (_, i, reason) in candidates {
            if self.hosts[i].ejected_until.is_none() {
                events.push(self.try_eject(i, now, reason));
            }
        }

        for host in &mut self.hosts {
            host.successes = 0;
            host.failures = 0;
        }
        events
    }

    /// When the endpoint at `addr` was ejected, if it is ejected now.
    pub fn ejected_at(&self, addr: SocketAddr) -> Option<Instant> {
        self.host(addr)?.ejected_at
    }

    /// Readmits the endpoint at `addr` early, e.g. because an active health check passed.
    ///
    /// Returns `None` if it was not ejected or is unknown. The multiplier is kept, so a
    /// readmitted endpoint that fails again stays out longer.
    pub fn readmit(&mut self, addr: SocketAddr) -> Option<OutlierEvent> {
        let &i = self.index.get(&addr)?;
        self.hosts[i].ejected_until?;
        self.uneject(i);
        self.next_expiry = self.hosts.iter().filter_map(|h| h.ejected_until).min();
        Some(OutlierEvent::Readmitted {
            addr,
            reason: ReadmitReason::HealthCheck,
        })
    }

    fn host(&self, addr: SocketAddr) -> Option<&Host> {
        self.index.get(&addr).map(|&i| &self.hosts[i])
    }

    /// Indexes of hosts with at least `volume` requests this interval.
    fn judged(&self, volume: u32) -> impl Iterator<Item = usize> + '_ {
        let volume = u64::from(volume.max(1));
        (0..self.hosts.len()).filter(move |&i| self.hosts[i].volume() >= volume)
    }

    /// Returns whether one more ejection keeps within `max_ejection_percent`.
    fn may_eject(&self) -> bool {
        let total = self.hosts.len() as u64;
        let ejected = self.ejected as u64;
        (ejected + 1) * 100 <= u64::from(self.config.max_ejection_percent) * total
            || (self.config.always_eject_one && ejected == 0)
    }

    /// Ejects host `i` (not ejected) if `max_ejection_percent` allows.
    fn try_eject(&mut self, i: usize, now: Instant, reason: EjectReason) -> OutlierEvent {
        let addr = self.hosts[i].endpoint.addr();
        if !self.may_eject() {
            return OutlierEvent::EjectionSkipped { addr, reason };
        }
        let base = self.config.base_ejection;
        let cap = self.config.max_ejection.max(base);
        // The multiplier stops growing at the cap, so forgiving takes bounded time.
        let max_multiplier = u32::try_from(cap.as_nanos().div_ceil(base.as_nanos().max(1)))
            .unwrap_or(u32::MAX)
            .max(1);
        let jitter_ns = u64::try_from(self.config.jitter.as_nanos()).unwrap_or(u64::MAX);
        let jitter = Duration::from_nanos(self.rng.u64(0..=jitter_ns));

        let host = &mut self.hosts[i];
        host.multiplier = (host.multiplier + 1).min(max_multiplier);
        let duration = base.saturating_mul(host.multiplier).min(cap) + jitter;
        // Only absurd settings overflow an `Instant`; they get no ejection time, not a panic.
        let until = now
            .checked_add(duration)
            .or_else(|| now.checked_add(cap))
            .unwrap_or(now);
        host.ejected_until = Some(until);
        host.ejected_at = Some(now);
        host.consecutive_failures = 0;
        host.consecutive_gateway_failures = 0;
        host.endpoint.set_ejected(true);
        let multiplier = host.multiplier;
        self.ejected += 1;
        self.next_expiry = Some(self.next_expiry.map_or(until, |t| t.min(until)));
        OutlierEvent::Ejected {
            addr,
            reason,
            duration,
            multiplier,
        }
    }

    /// Readmits every host whose ejection has ended at `now`.
    fn readmit_expired(&mut self, now: Instant, events: &mut Vec<OutlierEvent>) {
        for i in 0..self.hosts.len() {
            if self.hosts[i].ejected_until.is_some_and(|t| t <= now) {
                self.uneject(i);
                events.push(OutlierEvent::Readmitted {
                    addr: self.hosts[i].endpoint.addr(),
                    reason: ReadmitReason::Expired,
                });
            }
        }
        self.next_expiry = self.hosts.iter().filter_map(|h| h.ejected_until).min();
    }

    fn uneject(&mut self, i: usize) {
        let host = &mut self.hosts[i];
        host.ejected_until = None;
        host.ejected_at = None;
        host.consecutive_failures = 0;
        host.consecutive_gateway_failures = 0;
        host.endpoint.set_ejected(false);
        self.ejected -= 1;
    }

    fn recount(&mut self) {
        self.ejected = self
            .hosts
            .iter()
            .filter(|h| h.ejected_until.is_some())
            .count();
        self.next_expiry = self.hosts.iter().filter_map(|h| h.ejected_until).min();
    }
}
