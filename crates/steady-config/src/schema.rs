//! The shape of `steady.yaml`: plain serde types with defaults.
//!
//! Field names are the user-facing contract; every field is documented in
//! `docs/configuration.md`. Semantic checks (references, ranges) live in
//! [`crate::validate`], not here.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::units::{de_duration, de_opt_duration, ByteSize};

/// The whole configuration file.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Process-wide settings (worker threads, drain deadline).
    #[serde(default)]
    pub runtime: Runtime,
    /// The admin listener (probes, metrics, JSON API); absent means none.
    #[serde(default)]
    pub admin: Option<Admin>,
    /// Sockets steady accepts traffic on.
    #[serde(default)]
    pub listeners: Vec<Listener>,
    /// Rules that send a listener's traffic to an upstream, tried in order.
    #[serde(default)]
    pub routes: Vec<Route>,
    /// Named groups of endpoints and how to balance over them.
    #[serde(default)]
    pub upstreams: Vec<Upstream>,
}

/// Process-wide settings.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Runtime {
    /// Worker threads; `None` means one per core.
    #[serde(default)]
    pub workers: Option<usize>,
    /// How long SIGTERM waits for in-flight requests before exiting.
    #[serde(default = "defaults::drain_timeout", deserialize_with = "de_duration")]
    pub drain_timeout: Duration,
}

impl Default for Runtime {
    fn default() -> Self {
        Self { workers: None, drain_timeout: defaults::drain_timeout() }
    }
}

/// The admin listener.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    /// Address to bind, for example `127.0.0.1:9901`.
    pub bind: String,
}

/// What a listener speaks.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ListenerProtocol {
    /// HTTP/1.1 and HTTP/2 with prior knowledge (h2c) on plain TCP.
    Http,
    /// HTTP over TLS; HTTP/2 negotiated by ALPN.
    Https,
    /// Raw bytes forwarded to an upstream (L4).
    Tcp,
}

/// A socket steady accepts traffic on.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    /// Unique name that routes refer to.
    pub name: String,
    /// Address to bind, for example `127.0.0.1:8080` or `[::1]:8080`.
    pub bind: String,
    /// `http`, `https` or `tcp`.
    #[serde(default = "defaults::listener_protocol")]
    pub protocol: ListenerProtocol,
    /// Certificate and key; required for `https`.
    #[serde(default)]
    pub tls: Option<Tls>,
    /// Client-side limits and timeouts.
    #[serde(default)]
    pub limits: ListenerLimits,
}

/// PEM files for a TLS listener.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    /// Certificate chain, PEM.
    pub cert: PathBuf,
    /// Private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Limits that protect steady from bad or slow clients.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ListenerLimits {
    /// Largest request head (request line plus headers); over it: 431.
    #[serde(default = "defaults::max_header_bytes")]
    pub max_header_bytes: ByteSize,
    /// Most request headers; over it: 431.
    #[serde(default = "defaults::max_headers")]
    pub max_headers: usize,
    /// Largest request body; over it: 413. `None` means unlimited.
    #[serde(default = "defaults::max_body_bytes")]
    pub max_body_bytes: Option<ByteSize>,
    /// Time a client has to send a complete request head; over it: 408.
    #[serde(default = "defaults::header_read_timeout", deserialize_with = "de_duration")]
    pub header_read_timeout: Duration,
    /// A connection with no request in flight for this long is closed.
    #[serde(default = "defaults::idle_timeout", deserialize_with = "de_duration")]
    pub idle_timeout: Duration,
    /// Most concurrent client connections; further ones wait in the kernel backlog.
    #[serde(default)]
    pub max_connections: Option<usize>,
}

impl Default for ListenerLimits {
    fn default() -> Self {
        Self {
            max_header_bytes: defaults::max_header_bytes(),
            max_headers: defaults::max_headers(),
            max_body_bytes: defaults::max_body_bytes(),
            header_read_timeout: defaults::header_read_timeout(),
            idle_timeout: defaults::idle_timeout(),
            max_connections: None,
        }
    }
}

/// A rule sending matching traffic of one listener to one upstream.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Unique name, used in metrics and logs.
    pub name: String,
    /// The listener whose traffic this route takes.
    pub listener: String,
    /// Conditions a request must meet; empty matches everything.
    #[serde(default, rename = "match")]
    pub matcher: Match,
    /// The upstream that serves matching traffic.
    pub upstream: String,
    /// Whole-request deadline (connect to last response byte header); over it: 504.
    #[serde(default = "defaults::route_timeout", deserialize_with = "de_duration")]
    pub timeout: Duration,
}

/// Request conditions; all given ones must hold.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Match {
    /// Host (without port), exact or with a leading `*.` wildcard.
    #[serde(default)]
    pub host: Option<String>,
    /// Path prefix, matched on segment boundaries (`/v1` matches `/v1/x`, not `/v10`).
    #[serde(default)]
    pub path_prefix: Option<String>,
    /// Exact path.
    #[serde(default)]
    pub path: Option<String>,
    /// Header name to exact value.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Allowed methods, upper case.
    #[serde(default)]
    pub methods: Vec<String>,
}

/// Load-balancing algorithm of an upstream.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Balance {
    /// Each endpoint in turn, ignoring weights.
    RoundRobin,
    /// Smooth weighted round robin, as NGINX does it.
    WeightedRoundRobin,
    /// Fewest in-flight requests relative to weight.
    LeastConnections,
    /// Power of two choices over peak-EWMA latency; failures count as slow.
    P2cEwma,
    /// Uniformly random, weighted.
    Random,
    /// Consistent hashing on a ring (ketama).
    RingHash,
    /// Maglev consistent hashing.
    Maglev,
}

/// Protocol steady speaks to an upstream's endpoints.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamProtocol {
    /// HTTP/1.1 with keep-alive.
    Http1,
    /// HTTP/2 over plain TCP with prior knowledge.
    H2c,
}

/// Where a hash balancer takes its key from.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Hash {
    /// `header:NAME`, `cookie:NAME`, `client_ip` or `path`.
    pub key: String,
    /// Bounded load factor (for example `1.25`): no endpoint takes more than this
    /// times the mean in-flight load; `None` disables the bound.
    #[serde(default)]
    pub bounded_load: Option<f64>,
}

/// A named group of endpoints.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    /// Unique name that routes refer to.
    pub name: String,
    /// Balancing algorithm.
    #[serde(default = "defaults::balance")]
    pub balance: Balance,
    /// Hash key for `ring-hash` and `maglev`.
    #[serde(default)]
    pub hash: Option<Hash>,
    /// New endpoints ramp their weight up over this window.
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub slow_start: Option<Duration>,
    /// `http1` or `h2c`.
    #[serde(default = "defaults::upstream_protocol")]
    pub protocol: UpstreamProtocol,
    /// TCP connect deadline per attempt; over it: 502.
    #[serde(default = "defaults::connect_timeout", deserialize_with = "de_duration")]
    pub connect_timeout: Duration,
    /// Pooled idle connections are closed after this long.
    #[serde(default = "defaults::pool_idle_timeout", deserialize_with = "de_duration")]
    pub pool_idle_timeout: Duration,
    /// Most idle pooled connections kept per endpoint.
    #[serde(default = "defaults::pool_max_idle")]
    pub pool_max_idle_per_endpoint: usize,
    /// How often DNS names in `endpoints` are resolved again.
    #[serde(default = "defaults::dns_refresh", deserialize_with = "de_duration")]
    pub dns_refresh: Duration,
    /// The instances that serve this upstream.
    pub endpoints: Vec<Endpoint>,
}

/// One instance of an upstream.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    /// `ip:port` or `dns-name:port`.
    pub address: String,
    /// Relative share of traffic, at least 1.
    #[serde(default = "defaults::weight")]
    pub weight: u32,
}

/// Default values, one function per field so serde and docs agree.
pub mod defaults {
    use super::*;

    pub(crate) fn drain_timeout() -> Duration {
        Duration::from_secs(30)
    }
    pub(crate) fn listener_protocol() -> ListenerProtocol {
        ListenerProtocol::Http
    }
    pub(crate) fn max_header_bytes() -> ByteSize {
        ByteSize(64 * 1024)
    }
    pub(crate) fn max_headers() -> usize {
        100
    }
    pub(crate) fn max_body_bytes() -> Option<ByteSize> {
        Some(ByteSize(10 * 1024 * 1024))
    }
    pub(crate) fn header_read_timeout() -> Duration {
        Duration::from_secs(10)
    }
    pub(crate) fn idle_timeout() -> Duration {
        Duration::from_secs(60)
    }
    pub(crate) fn route_timeout() -> Duration {
        Duration::from_secs(15)
    }
    pub(crate) fn balance() -> Balance {
        Balance::RoundRobin
    }
    pub(crate) fn upstream_protocol() -> UpstreamProtocol {
        UpstreamProtocol::Http1
    }
    pub(crate) fn connect_timeout() -> Duration {
        Duration::from_secs(2)
    }
    pub(crate) fn pool_idle_timeout() -> Duration {
        Duration::from_secs(60)
    }
    pub(crate) fn pool_max_idle() -> usize {
        256
    }
    pub(crate) fn dns_refresh() -> Duration {
        Duration::from_secs(30)
    }
    pub(crate) fn weight() -> u32 {
        1
    }
}
