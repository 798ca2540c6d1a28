//! [`EndpointSet`]: an immutable endpoint list plus the balancer state over it.

use std::{
    fmt,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use crate::{
    algorithms::{
        hashed, least_conn::LeastConn, maglev, maglev::Maglev, p2c_ewma, random::WeightedRandom,
        ring_hash::Ring, round_robin::RoundRobin, smooth_wrr::SmoothWrr, Balancer, Ctx,
    },
    locality::{pick_tier, tier_shares, Locality, Proximity},
    slow_start::{scaled_weight, WEIGHT_SCALE},
    Algorithm, BalancerConfig, Endpoint,
};

/// Per-request input to a pick.
#[derive(Debug, Clone, Copy)]
pub struct Pick<'a> {
    /// Request key hash for ring hash and Maglev (see [`hash_key`](crate::hash_key));
    /// `None` picks at random. Other algorithms ignore it.
    pub hash: Option<u64>,
    /// The request's clock, for slow start and latency decay.
    pub now: Instant,
    /// Addresses to prefer not to pick, e.g. those a retry already tried.
    pub avoid: &'a [SocketAddr],
}

impl Pick<'static> {
    /// Creates a pick at `now` with no hash and nothing to avoid.
    pub fn at(now: Instant) -> Self {
        Self {
            hash: None,
            now,
            avoid: &[],
        }
    }
}

impl<'a> Pick<'a> {
    /// Sets the request key hash.
    pub fn with_hash(self, hash: u64) -> Self {
        Self {
            hash: Some(hash),
            ..self
        }
    }

    /// Sets the addresses to avoid.
    pub fn avoiding<'b>(self, avoid: &'b [SocketAddr]) -> Pick<'b> {
        Pick {
            hash: self.hash,
            now: self.now,
            avoid,
        }
    }
}

/// An immutable list of endpoints plus the balancer state over it.
///
/// Rebuild it when the list changes (e.g. after DNS re-resolution), passing the same
/// `Arc<Endpoint>`s for endpoints that stay so their counters and latency survive.
/// Building a Maglev set fills a 65537-slot table (a few milliseconds); the others are
/// cheap.
pub struct EndpointSet {
    /// The endpoints, in the order given.
    endpoints: Vec<Arc<Endpoint>>,
    /// The config the set was built with.
    config: BalancerConfig,
    /// Slow-start window, if it applies to the algorithm.
    slow_start: Option<Duration>,
    /// Until when some endpoint is ramping (latest `added_at` + window).
    ramp_until: Option<Instant>,
    /// Bounded-load factor, if it applies to the algorithm.
    bounded_load: Option<f64>,
    /// Healthy-panic threshold in percent (at most 100); `None` never panics.
    panic_threshold: Option<u32>,
    /// Algorithm state.
    balancer: Balancer,
    /// Locality tiers, when endpoints span more than one (see [`EndpointSet::with_locality`]).
    tiers: Option<Box<Tiers>>,
}

/// The set split by locality: each tier balances its own endpoints.
struct Tiers {
    /// Nearest first: `(priority, proximity)` ascending.
    tiers: Vec<Tier>,
    /// Envoy's overprovisioning factor.
    overprovisioning: f64,
}

/// One locality tier.
struct Tier {
    priority: u32,
    proximity: Proximity,
    /// The tier's endpoints with their own balancer state.
    set: EndpointSet,
    /// Index in the parent set of each of `set`'s endpoints.
    parent_index: Vec<usize>,
}

/// One locality tier as the admin API reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct TierShare {
    /// Failover priority.
    pub priority: u32,
    /// How close the tier is to the gateway.
    pub proximity: Proximity,
    /// Endpoints in the tier.
    pub endpoints: usize,
    /// Of which available now.
    pub available: usize,
    /// Share of new requests the tier gets now, `0.0..=1.0`.
    pub share: f64,
}

impl EndpointSet {
    /// Builds a set over `endpoints` balanced as `config` says.
    ///
    /// Never fails: options that do not apply to the algorithm are ignored, a zero slow-start
    /// window is ignored, and a bounded-load factor below 1 counts as 1.
    pub fn new(endpoints: Vec<Arc<Endpoint>>, config: &BalancerConfig) -> Self {
        let slow_start = config.effective_slow_start();
        let ramp_until = slow_start.and_then(|w| {
            endpoints
                .iter()
                .map(|e| e.added_at())
                .max()
                .and_then(|t| t.checked_add(w))
        });
        let balancer = match config.algorithm {
            Algorithm::RoundRobin => Balancer::RoundRobin(RoundRobin::default()),
            Algorithm::WeightedRoundRobin => {
                Balancer::WeightedRoundRobin(SmoothWrr::new(endpoints.len()))
            }
            Algorithm::LeastConnections => Balancer::LeastConnections(LeastConn::default()),
            Algorithm::P2cEwma => Balancer::P2cEwma,
            Algorithm::Random => Balancer::Random(WeightedRandom::new(&endpoints)),
            Algorithm::RingHash => Balancer::RingHash(Ring::new(&endpoints)),
            Algorithm::Maglev => {
                Balancer::Maglev(Maglev::new(&endpoints, maglev::MAGLEV_TABLE_SIZE))
            }
        };
        Self {
            endpoints,
            config: *config,
            slow_start,
            ramp_until,
            bounded_load: config.effective_bounded_load(),
            panic_threshold: None,
            balancer,
            tiers: None,
        }
    }

    /// Splits picks by locality relative to a gateway at `local`: the local zone first,
    /// spilling to other zones, other regions and lower priorities as endpoints become
    /// unavailable, in proportion to the capacity lost (see [`crate::locality`]).
    ///
    /// Endpoints in one tier only (the usual case without zones or priorities) leave the
    /// set as it was. Each tier balances with the set's algorithm over its own endpoints.
    /// The healthy-panic threshold still applies to the whole set: in panic, picks ignore
    /// tiers and ejections alike.
    pub fn with_locality(mut self, local: &Locality, overprovisioning: f64) -> Self {
        let mut keys: Vec<(u32, Proximity)> = self
            .endpoints
            .iter()
            .map(|e| (e.locality().priority, e.locality().proximity(local)))
            .collect();
        let mut distinct = keys.clone();
        distinct.sort_unstable();
        distinct.dedup();
        if distinct.len() < 2 {
            self.tiers = None;
            return self;
        }
        let tiers = distinct
            .into_iter()
            .map(|(priority, proximity)| {
                let parent_index: Vec<usize> = (0..keys.len())
                    .filter(|&i| keys[i] == (priority, proximity))
                    .collect();
                let members = parent_index
                    .iter()
                    .map(|&i| Arc::clone(&self.endpoints[i]))
                    .collect();
                Tier {
                    priority,
                    proximity,
                    set: EndpointSet::new(members, &self.config),
                    parent_index,
                }
            })
            .collect();
        keys.clear();
        let overprovisioning = if overprovisioning.is_finite() && overprovisioning >= 1.0 {
            overprovisioning
        } else {
            crate::locality::DEFAULT_OVERPROVISIONING
        };
        self.tiers = Some(Box::new(Tiers {
            tiers,
            overprovisioning,
        }));
        self
    }

    /// Returns each locality tier with its share of traffic now; empty without tiers.
    pub fn tier_shares(&self) -> Vec<TierShare> {
        let Some(tiers) = &self.tiers else {
            return Vec::new();
        };
        let counts: Vec<(usize, usize)> = tiers.tiers.iter().map(Tier::counts).collect();
        let shares = tier_shares(&counts, tiers.overprovisioning);
        tiers
            .tiers
            .iter()
            .zip(counts)
            .zip(shares)
            .map(|((t, (available, endpoints)), share)| TierShare {
                priority: t.priority,
                proximity: t.proximity,
                endpoints,
                available,
                share,
            })
            .collect()
    }

    /// Sets the healthy-panic threshold in percent (Envoy's `healthy_panic_threshold`):
    /// while fewer than `percent`% of the endpoints are available, picks ignore outlier
    /// ejections and balance over every endpoint that active health checks (if any) see
    /// up, since ejecting most of an upstream on traffic alone usually says more about
    /// the traffic than the endpoints. Unlike Envoy's, panic does not override active
    /// checks: an endpoint whose probes fail is down, so with all of them down picks
    /// find nothing (and the proxy answers 503 at once) instead of trying dead
    /// endpoints.
    ///
    /// `None` (the default) never panics. `Some(0)` never panics either; values above 100
    /// count as 100. Each pick then scans the endpoints' availability once.
    pub fn with_panic_threshold(mut self, percent: Option<u32>) -> Self {
        self.panic_threshold = percent.map(|p| p.min(100));
        self
    }

    /// Returns the healthy-panic threshold in percent, if set.
    pub fn panic_threshold(&self) -> Option<u32> {
        self.panic_threshold
    }

    /// Returns whether picks are in panic mode now: a threshold is set and
    /// `available × 100 < threshold × len`. An empty set is never in panic.
    pub fn in_panic(&self) -> bool {
        let Some(threshold) = self.panic_threshold else {
            return false;
        };
        let total = self.endpoints.len() as u64;
        let available = self.endpoints.iter().filter(|e| e.is_available()).count() as u64;
        available * 100 < u64::from(threshold) * total
    }

    /// Returns the endpoints in the order given.
    pub fn endpoints(&self) -> &[Arc<Endpoint>] {
        &self.endpoints
    }

    /// Returns the config the set was built with.
    pub fn config(&self) -> &BalancerConfig {
        &self.config
    }

    /// Returns the number of endpoints.
    pub fn len(&self) -> usize {
        self.endpoints.len()
    }

    /// Returns whether the set has no endpoints.
    pub fn is_empty(&self) -> bool {
        self.endpoints.is_empty()
    }

    /// Returns the endpoint with address `addr`, e.g. to reuse its `Arc` in a rebuilt set.
    pub fn get(&self, addr: SocketAddr) -> Option<&Arc<Endpoint>> {
        self.endpoints.iter().find(|e| e.addr() == addr)
    }

    /// Returns the weight `endpoint` has at `now` after slow start (e.g. 0.5 for weight 5
    /// at the start of its ramp).
    pub fn effective_weight(&self, endpoint: &Endpoint, now: Instant) -> f64 {
        scaled_weight(endpoint, now, self.slow_start) as f64 / WEIGHT_SCALE as f64
    }

    /// Picks an available endpoint not in `avoid`.
    ///
    /// `avoid` is a preference: if only avoided endpoints are available, picks among them.
    /// Returns `None` when no endpoint is available. In [panic mode](Self::in_panic) every
    /// endpoint that is not down by active checks counts as available.
    pub fn pick(&self, pick: &Pick<'_>) -> Option<Arc<Endpoint>> {
        self.pick_index(pick)
            .map(|i| Arc::clone(&self.endpoints[i]))
    }

    /// Like [`pick`](Self::pick) but returns the endpoint's index in
    /// [`endpoints`](Self::endpoints).
    pub fn pick_index(&self, pick: &Pick<'_>) -> Option<usize> {
        if self.endpoints.is_empty() {
            return None;
        }
        let panic = self.in_panic();
        if let (Some(tiers), false) = (&self.tiers, panic) {
            if let Some(i) = tiers.pick(pick) {
                return Some(i);
            }
            // Nothing available in any tier: fall through (None, as without tiers).
        }
        match &self.balancer {
            Balancer::RingHash(ring) => self.pick_hashed(ring, pick, panic),
            Balancer::Maglev(table) => self.pick_hashed(table, pick, panic),
            _ => {
                let slow_start = match self.ramp_until {
                    Some(until) if pick.now < until => self.slow_start,
                    _ => None,
                };
                let mut ctx = Ctx {
                    endpoints: &self.endpoints,
                    now: pick.now,
                    avoid: pick.avoid,
                    slow_start,
                    panic,
                };
                if !pick.avoid.is_empty() {
                    if let Some(i) = self.pick_pass(&ctx) {
                        return Some(i);
                    }
                    ctx.avoid = &[];
                }
                self.pick_pass(&ctx)
            }
        }
    }

    fn pick_pass(&self, ctx: &Ctx<'_>) -> Option<usize> {
        match &self.balancer {
            Balancer::RoundRobin(rr) => rr.pick(ctx),
            Balancer::WeightedRoundRobin(wrr) => wrr.pick(ctx),
            Balancer::LeastConnections(lc) => lc.pick(ctx),
            Balancer::P2cEwma => p2c_ewma::pick(ctx),
            Balancer::Random(r) => r.pick(ctx),
            Balancer::RingHash(_) | Balancer::Maglev(_) => None,
        }
    }

    fn pick_hashed(
        &self,
        table: &impl hashed::HashWalk,
        pick: &Pick<'_>,
        panic: bool,
    ) -> Option<usize> {
        let hash = pick.hash.unwrap_or_else(|| fastrand::u64(..));
        hashed::pick(
            table,
            &self.endpoints,
            hash,
            pick.avoid,
            self.bounded_load,
            panic,
        )
    }
}

impl Tier {
    /// Returns `(available, total)` endpoints.
    fn counts(&self) -> (usize, usize) {
        let e = self.set.endpoints();
        (e.iter().filter(|e| e.is_available()).count(), e.len())
    }
}

impl Tiers {
    /// Picks a tier by share, then an endpoint in it; returns a parent-set index.
    ///
    /// When the tier's choice is one the request wants to avoid (a retry), the nearest
    /// other tier with a non-avoided available endpoint serves instead, so retries leave
    /// a failing zone rather than repeat in it.
    fn pick(&self, pick: &Pick<'_>) -> Option<usize> {
        // One scan of availability per pick, shared by every tier's share.
        let counts: Vec<(usize, usize)> = self.tiers.iter().map(Tier::counts).collect();
        let shares = tier_shares(&counts, self.overprovisioning);
        let t = pick_tier(&shares, fastrand::f64())?;
        let chosen = self.tiers[t].pick(pick);
        if pick.avoid.is_empty() {
            return chosen.map(|(i, _)| i);
        }
        if let Some((i, false)) = chosen {
            return Some(i);
        }
        self.tiers
            .iter()
            .enumerate()
            .filter(|&(other, _)| other != t)
            .find_map(|(_, tier)| match tier.pick(pick) {
                Some((i, false)) => Some(i),
                _ => None,
            })
            .or(chosen.map(|(i, _)| i))
    }
}

impl Tier {
    /// Picks in this tier; returns the parent index and whether the request avoids it.
    fn pick(&self, pick: &Pick<'_>) -> Option<(usize, bool)> {
        let j = self.set.pick_index(pick)?;
        let avoided = pick.avoid.contains(&self.set.endpoints()[j].addr());
        Some((self.parent_index[j], avoided))
    }
}

impl fmt::Debug for EndpointSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EndpointSet")
            .field("config", &self.config)
            .field("panic_threshold", &self.panic_threshold)
            .field("endpoints", &self.endpoints)
            .finish_non_exhaustive()
    }
}
