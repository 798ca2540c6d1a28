//! Which algorithm a set balances with, and its options.

use std::time::Duration;

/// Load-balancing algorithm of an [`EndpointSet`](crate::EndpointSet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Algorithm {
    /// Each available endpoint in turn, ignoring weights.
    #[default]
    RoundRobin,
    /// Smooth weighted round robin, as NGINX's `ngx_http_upstream_get_peer`.
    WeightedRoundRobin,
    /// Lowest `(in_flight + 1) / weight`, ties taken in turn (HAProxy `leastconn`).
    LeastConnections,
    /// Power of two random choices over peak-EWMA latency × load (linkerd, Finagle).
    ///
    /// Failures record a penalty latency (see [`Endpoint::record`](crate::Endpoint::record)).
    /// An endpoint without samples is compared on load alone, so it neither attracts nor
    /// repels traffic until its first request finishes.
    P2cEwma,
    /// Weighted random.
    Random,
    /// Ketama-style consistent-hash ring; random without a hash.
    RingHash,
    /// Google's Maglev lookup table; random without a hash.
    Maglev,
}

impl Algorithm {
    /// Returns whether the algorithm picks by request hash (ring hash, Maglev).
    pub fn is_hash(self) -> bool {
        matches!(self, Self::RingHash | Self::Maglev)
    }

    /// Returns whether slow start changes this algorithm's picks.
    ///
    /// Round robin ignores weights and the hash balancers keep keys where they are, so
    /// slow start applies only to weighted round robin, least connections, P2C and random.
    pub fn uses_slow_start(self) -> bool {
        matches!(
            self,
            Self::WeightedRoundRobin | Self::LeastConnections | Self::P2cEwma | Self::Random
        )
    }
}

/// How an [`EndpointSet`](crate::EndpointSet) balances.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct BalancerConfig {
    /// The algorithm.
    pub algorithm: Algorithm,
    /// New endpoints ramp their weight from 10% to full over this window (Envoy
    /// `slow_start_config`, aggression 1.0); only for weighted algorithms.
    pub slow_start: Option<Duration>,
    /// Bounded-load factor `c > 1` for ring hash and Maglev (HAProxy
    /// `hash-balance-factor` / 100); ignored by other algorithms.
    pub bounded_load: Option<f64>,
}

/// A [`BalancerConfig`] that [`BalancerConfig::validate`] rejects.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// The bounded-load factor is not a finite number above 1.
    #[error("bounded load factor must be a finite number above 1, got {0}")]
    BoundedLoad(f64),
    /// The slow-start window is zero.
    #[error("slow start window must be longer than zero")]
    SlowStartZero,
}

impl BalancerConfig {
    /// Creates a config for `algorithm` without slow start or bounded load.
    pub fn new(algorithm: Algorithm) -> Self {
        Self {
            algorithm,
            ..Self::default()
        }
    }

    /// Checks the options; [`EndpointSet::new`](crate::EndpointSet::new) never fails and
    /// instead ignores a zero window and raises a factor below 1 to 1.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(c) = self.bounded_load {
            if !c.is_finite() || c <= 1.0 {
                return Err(ConfigError::BoundedLoad(c));
            }
        }
        if self.slow_start == Some(Duration::ZERO) {
            return Err(ConfigError::SlowStartZero);
        }
        Ok(())
    }

    /// Returns the slow-start window to apply, if any.
    pub(crate) fn effective_slow_start(&self) -> Option<Duration> {
        self.slow_start
            .filter(|w| !w.is_zero() && self.algorithm.uses_slow_start())
    }

    /// Returns the bounded-load factor to apply, if any (at least 1).
    pub(crate) fn effective_bounded_load(&self) -> Option<f64> {
        match self.bounded_load {
            Some(c) if self.algorithm.is_hash() && !c.is_nan() => Some(c.max(1.0)),
            _ => None,
        }
    }
}
