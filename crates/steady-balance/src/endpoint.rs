//! One upstream instance, its live counters and its peak-EWMA latency estimate.

use std::{
    fmt,
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering},
        Arc, Mutex, PoisonError,
    },
    time::{Duration, Instant},
};

use crate::locality::Locality;

/// Time constant of the peak-EWMA decay: a sample's weight falls to 1/e after this long.
///
/// 10 s, as linkerd's and Finagle's peak-EWMA balancers use.
pub const EWMA_DECAY: Duration = Duration::from_secs(10);

/// Latency reported by [`Endpoint::ewma_latency`] before the first sample.
///
/// P2C does not use it: it compares an endpoint without samples on load alone (see
/// [`Algorithm::P2cEwma`](crate::Algorithm::P2cEwma)).
pub const DEFAULT_RTT: Duration = Duration::from_millis(30);

/// Smallest latency a [`Outcome::Failure`] records.
pub const FAILURE_PENALTY: Duration = Duration::from_secs(1);

/// A failure records at least this many times the endpoint's current estimate.
pub const FAILURE_PENALTY_FACTOR: f64 = 3.0;

/// Largest penalty a failure records (unless the failure itself took longer).
pub const FAILURE_PENALTY_CAP: Duration = Duration::from_secs(30);

/// Smallest share of its weight a fully loaded endpoint keeps, so it still gets a
/// trickle of traffic and all-saturated upstreams stay balanced by configured weight.
pub const MIN_LOAD_SCALE: f64 = 0.05;

/// `load_scale` of an endpoint that reported no load, in thousandths.
const LOAD_SCALE_FULL: u32 = 1000;

/// How a finished request went, as far as the balancer cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The upstream answered (any status but 502/503/504).
    Success,
    /// Connect error, timeout, reset, or 502/503/504 from the upstream.
    Failure,
}

/// One resolved instance of an upstream.
///
/// Shared (`Arc`) between [`EndpointSet`](crate::EndpointSet)s and in-flight requests, so
/// its counters survive when a set is rebuilt around the same `Arc`.
pub struct Endpoint {
    /// Name as configured, e.g. `backend.internal:9003`; several endpoints may share it.
    name: Arc<str>,
    /// Resolved address; also the endpoint's identity for the hash balancers.
    addr: SocketAddr,
    /// Configured weight, at least 1.
    weight: u32,
    /// When the endpoint joined; slow start ramps from here.
    added_at: Instant,
    /// Zone, region and failover priority.
    locality: Locality,
    /// Requests started and not yet finished or dropped.
    in_flight: AtomicU32,
    /// Whether active health checks (or the operator) consider it up; see
    /// [`Endpoint::set_available`].
    available: AtomicBool,
    /// Whether outlier detection has ejected it; kept apart from `available` so a health
    /// check passing does not undo an ejection by accident, nor the reverse.
    ejected: AtomicBool,
    /// Share of its weight the endpoint keeps given the load it reports, in thousandths
    /// (1000 until it reports any); see [`Endpoint::set_load`].
    load_scale: AtomicU32,
    /// Finished requests by [`Outcome`], for metrics.
    succeeded: AtomicU64,
    failed: AtomicU64,
    /// Peak-EWMA state; `None` until the first finished request.
    ewma: Mutex<Option<Ewma>>,
}

/// Peak-EWMA latency state, as tower's and linkerd's `PeakEwma`.
#[derive(Debug, Clone, Copy)]
struct Ewma {
    /// Estimate in nanoseconds as of `at`.
    estimate_ns: f64,
    /// When `estimate_ns` was last updated.
    at: Instant,
}

impl Ewma {
    /// Returns the estimate at `now`, decayed towards zero since the last update.
    ///
    /// Idle endpoints thus look cheaper over time and get probed again, as in tower.
    fn decayed(&self, now: Instant) -> f64 {
        self.estimate_ns * self.weight(now)
    }

    /// How much of the estimate is left at `now`: `e^(-elapsed / EWMA_DECAY)`.
    fn weight(&self, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        (-elapsed / EWMA_DECAY.as_secs_f64()).exp()
    }

    /// Folds in one latency sample taken at `now`.
    fn observe(&mut self, now: Instant, sample_ns: f64) {
        // One weight for both the decay and the blend (an `exp` each cost 50
        // instructions on every request).
        let w = self.weight(now);
        let decayed = self.estimate_ns * w;
        self.estimate_ns = if sample_ns > decayed {
            // Peak-sensitive: a slow sample takes effect at once.
            sample_ns
        } else {
            decayed + sample_ns * (1.0 - w)
        };
        self.at = self.at.max(now);
    }
}

impl Endpoint {
    /// Creates an available endpoint with no requests in flight.
    ///
    /// A `weight` of 0 is treated as 1; take an endpoint out with
    /// [`set_available`](Self::set_available) instead.
    pub fn new(
        name: impl Into<Arc<str>>,
        addr: SocketAddr,
        weight: u32,
        added_at: Instant,
    ) -> Self {
        Self {
            name: name.into(),
            addr,
            weight: weight.max(1),
            added_at,
            locality: Locality::default(),
            in_flight: AtomicU32::new(0),
            available: AtomicBool::new(true),
            ejected: AtomicBool::new(false),
            load_scale: AtomicU32::new(LOAD_SCALE_FULL),
            succeeded: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            ewma: Mutex::new(None),
        }
    }

    /// Places the endpoint in a zone, region and priority level (builder style, before it
    /// is shared).
    pub fn with_locality(mut self, locality: Locality) -> Self {
        self.locality = locality;
        self
    }

    /// Returns the endpoint's zone, region and priority.
    pub fn locality(&self) -> &Locality {
        &self.locality
    }

    /// Returns the name as configured, e.g. `backend.internal:9003`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Returns the resolved address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Returns the configured weight (at least 1).
    pub fn weight(&self) -> u32 {
        self.weight
    }

    /// Returns when the endpoint joined its upstream.
    pub fn added_at(&self) -> Instant {
        self.added_at
    }

    /// Returns the number of requests in flight.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Returns whether balancers may pick this endpoint: it is marked available and not
    /// ejected (true unless set otherwise).
    pub fn is_available(&self) -> bool {
        self.available.load(Ordering::Relaxed) && !self.ejected.load(Ordering::Relaxed)
    }

    /// Marks the endpoint as up or down, as active health checks see it.
    ///
    /// An [ejected](Self::is_ejected) endpoint stays unavailable whatever this says.
    pub fn set_available(&self, up: bool) {
        self.available.store(up, Ordering::Relaxed);
    }

    /// Returns whether the endpoint is marked up by [`set_available`](Self::set_available),
    /// ignoring ejection.
    pub fn is_healthy(&self) -> bool {
        self.available.load(Ordering::Relaxed)
    }

    /// Returns whether outlier detection has ejected the endpoint.
    pub fn is_ejected(&self) -> bool {
        self.ejected.load(Ordering::Relaxed)
    }

    /// Ejects the endpoint from balancing or lets it back; normally only the
    /// [`OutlierDetector`](crate::outlier::OutlierDetector) calls this.
    pub fn set_ejected(&self, ejected: bool) {
        self.ejected.store(ejected, Ordering::Relaxed);
    }

    /// Scales the endpoint's weight by the load it reports about itself (the
    /// `X-Steady-Load` health-check signal): a load of `0.0..=1.0` keeps
    /// `max(1 − load, MIN_LOAD_SCALE)` of the weight; `None` (no report) keeps all of it.
    ///
    /// Weighted balancers (weighted round robin, least connections, P2C, random) follow
    /// it at once; round robin ignores weights and the hash balancers keep keys where
    /// they are, as with slow start.
    pub fn set_load(&self, load: Option<f64>) {
        let scale = match load {
            Some(l) if l.is_finite() => (1.0 - l.clamp(0.0, 1.0)).max(MIN_LOAD_SCALE),
            _ => 1.0,
        };
        self.load_scale.store(
            (scale * LOAD_SCALE_FULL as f64).round() as u32,
            Ordering::Relaxed,
        );
    }

    /// Returns the share of its weight the endpoint keeps given its reported load
    /// (`1.0` until it reports one).
    pub fn load_scale(&self) -> f64 {
        f64::from(self.load_scale.load(Ordering::Relaxed)) / LOAD_SCALE_FULL as f64
    }

    /// Returns the weight balancers use now: configured weight × load scale (before
    /// slow start).
    pub fn effective_weight(&self) -> f64 {
        f64::from(self.weight) * self.load_scale()
    }

    /// Returns how many finished requests succeeded and failed (see [`Outcome`]).
    pub fn outcomes(&self) -> (u64, u64) {
        (
            self.succeeded.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }

    /// Returns the current peak-EWMA latency estimate, decayed to `now`.
    ///
    /// Before the first sample this is [`DEFAULT_RTT`].
    pub fn ewma_latency(&self, now: Instant) -> Duration {
        match self.ewma_ns(now) {
            Some(ns) => Duration::from_nanos(ns as u64),
            None => DEFAULT_RTT,
        }
    }

    /// Returns whether at least one request on this endpoint has finished.
    pub fn has_latency_sample(&self) -> bool {
        self.lock_ewma().is_some()
    }

    /// Counts a request as in flight until the guard is finished or dropped.
    pub fn start(self: &Arc<Self>, now: Instant) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight {
            endpoint: Arc::clone(self),
            started: now,
        }
    }

    /// Records one finished request's latency in the peak-EWMA estimate.
    ///
    /// A failure records `max(latency, min(max(FAILURE_PENALTY, FAILURE_PENALTY_FACTOR ×
    /// estimate), FAILURE_PENALTY_CAP))`: at least a second, so an endpoint that fails fast
    /// looks slow rather than attractive, and several times the current estimate, so it
    /// also looks slow when the upstream is slow anyway.
    pub fn record(&self, now: Instant, latency: Duration, outcome: Outcome) {
        match outcome {
            Outcome::Success => &self.succeeded,
            Outcome::Failure => &self.failed,
        }
        .fetch_add(1, Ordering::Relaxed);
        let mut ewma = self.lock_ewma();
        // (Through u64: converting a u128 to a float is a library call.)
        let mut sample = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX) as f64;
        if outcome == Outcome::Failure {
            let current = ewma.map_or(0.0, |e| e.decayed(now));
            let penalty = (current * FAILURE_PENALTY_FACTOR)
                .max(FAILURE_PENALTY.as_nanos() as f64)
                .min(FAILURE_PENALTY_CAP.as_nanos() as f64);
            sample = sample.max(penalty);
        }
        match ewma.as_mut() {
            Some(e) => e.observe(now, sample),
            None => {
                *ewma = Some(Ewma {
                    estimate_ns: sample,
                    at: now,
                })
            }
        }
    }

    /// Returns the decayed estimate in nanoseconds, `None` before the first sample.
    pub(crate) fn ewma_ns(&self, now: Instant) -> Option<f64> {
        self.lock_ewma().map(|e| e.decayed(now))
    }

    fn lock_ewma(&self) -> std::sync::MutexGuard<'_, Option<Ewma>> {
        // The state is two plain numbers, valid even if a holder panicked.
        self.ewma.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("name", &self.name)
            .field("addr", &self.addr)
            .field("weight", &self.weight)
            .field("in_flight", &self.in_flight())
            .field("available", &self.is_available())
            .field("ejected", &self.is_ejected())
            .finish_non_exhaustive()
    }
}

/// Guard for one request on one endpoint.
///
/// Dropping it without [`finish`](Self::finish) only decrements the in-flight count: a
/// cancelled request says nothing about latency.
#[derive(Debug)]
#[must_use = "dropping the guard ends the request at once"]
pub struct InFlight {
    /// The endpoint whose in-flight count this guard holds.
    endpoint: Arc<Endpoint>,
    /// When the request started, for its latency.
    started: Instant,
}

impl InFlight {
    /// Returns the endpoint the request went to.
    pub fn endpoint(&self) -> &Arc<Endpoint> {
        &self.endpoint
    }

    /// Returns when the request started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Ends the request at `now`, recording its latency and outcome.
    pub fn finish(self, now: Instant, outcome: Outcome) {
        let latency = now.saturating_duration_since(self.started);
        self.endpoint.record(now, latency, outcome);
        // Drop decrements in-flight.
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.endpoint.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}
