//! Endpoint sets and load balancers for steady: pure logic, no I/O, no async.
//!
//! The proxy builds an [`EndpointSet`] per upstream from shared [`Endpoint`]s, calls
//! [`EndpointSet::pick`] on every request and holds the returned endpoint's [`InFlight`]
//! guard until the response ends. Picks allocate nothing and take no global lock (smooth
//! weighted round robin takes the set's small mutex); counters are atomics.
//!
//! ```
//! use std::{sync::Arc, time::Instant};
//! use steady_balance::{Algorithm, BalancerConfig, Endpoint, EndpointSet, Outcome, Pick};
//!
//! let now = Instant::now();
//! let endpoints = vec![
//!     Arc::new(Endpoint::new("a:80", "127.0.0.1:8001".parse().unwrap(), 5, now)),
//!     Arc::new(Endpoint::new("b:80", "127.0.0.1:8002".parse().unwrap(), 1, now)),
//! ];
//! let set = EndpointSet::new(endpoints, &BalancerConfig::new(Algorithm::WeightedRoundRobin));
//! let endpoint = set.pick(&Pick::at(now)).expect("an endpoint is available");
//! let request = endpoint.start(now);
//! request.finish(Instant::now(), Outcome::Success);
//! ```
//!
//! # Layout
//!
//! - [`endpoint`]: [`Endpoint`] (address, weight, in-flight count, health and ejection
//!   flags, peak-EWMA latency) and the [`InFlight`] guard that counts a request and records
//!   its outcome.
//! - [`config`]: [`Algorithm`] and [`BalancerConfig`] (slow start, bounded load).
//! - [`set`]: [`EndpointSet`], which builds the algorithm's state and runs a [`Pick`]:
//!   availability, `avoid` as a preference, slow start, the healthy-panic threshold,
//!   and, with [`EndpointSet::with_locality`], one sub-set per locality tier.
//! - [`locality`]: [`Locality`] (zone, region, priority) and the tier shares of
//!   zone, region and priority failover (Envoy's priority load with overprovisioning).
//! - [`outlier`]: [`OutlierDetector`], passive outlier ejection as Envoy's (consecutive
//!   failures, success rate, failure percentage; growing jittered ejection time,
//!   `max_ejection_percent`).
//! - [`slow_start`]: the linear weight ramp for new endpoints (Envoy's
//!   `slow_start_config`).
//! - `algorithms`: one module per algorithm (`round_robin`, `smooth_wrr`, `least_conn`,
//!   `p2c_ewma`, `random`, `ring_hash`, `maglev`) and `hashed`, which walks hash
//!   balancers past unavailable endpoints and applies bounded load.
//!
//! Randomness comes from a thread-local `fastrand` generator; [`seed_rng`] makes a test's
//! picks repeatable.

pub mod config;
pub mod endpoint;
pub mod locality;
pub mod outlier;
pub mod set;
pub mod slow_start;

mod algorithms;

pub use algorithms::{
    maglev::{MAGLEV_TABLE_SIZE, MAX_PROBES},
    ring_hash::{MAX_RING_ENTRIES, VNODES_PER_WEIGHT},
};
pub use config::{Algorithm, BalancerConfig, ConfigError};
pub use endpoint::{Endpoint, InFlight, Outcome, MIN_LOAD_SCALE};
pub use locality::{Locality, Proximity, DEFAULT_OVERPROVISIONING};
pub use outlier::{
    EjectReason, FailurePercentage, OutlierConfig, OutlierConfigError, OutlierDetector,
    OutlierEvent, ReadmitReason, RequestResult, SuccessRate,
};
pub use set::{EndpointSet, Pick, TierShare};

/// Hashes request key bytes (header value, cookie, client IP, path) for ring hash and
/// Maglev, with xxh3.
pub fn hash_key(bytes: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(bytes)
}

/// Seeds this thread's random generator, so the random picks that follow on this thread
/// repeat from run to run.
pub fn seed_rng(seed: u64) {
    fastrand::seed(seed);
}
