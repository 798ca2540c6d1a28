//! The shape of `steady.yaml`: plain serde types with defaults.
//!
//! Field names are the user-facing contract; every field is documented in
//! `docs/configuration.md`. Semantic checks (references, ranges) live in
//! [`mod@crate::validate`], not here.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{AddrParseError, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
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
    /// The Redis server that `scope: global` rate limits share.
    #[serde(default)]
    pub redis: Option<crate::limits::Redis>,
    /// The JSON access log; none: no access log.
    #[serde(default)]
    pub access_log: Option<crate::access_log::AccessLog>,
    /// What `/metrics` exports.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// Service level objectives over routes.
    #[serde(default)]
    pub slos: Vec<crate::slo::Slo>,
    /// Who hears about page- and ticket-level alerts.
    #[serde(default)]
    pub alerts: crate::slo::Alerts,
    /// Alert receivers (Alertmanager, webhook, PagerDuty, Opsgenie).
    #[serde(default)]
    pub notifiers: Vec<crate::slo::Notifier>,
    /// Where SLO state is kept across restarts.
    #[serde(default)]
    pub slo_state: crate::slo::SloState,
    /// Span export over OTLP; none: spans are not exported (trace context is still
    /// propagated).
    #[serde(default)]
    pub tracing: Option<crate::tracing::Tracing>,
}

/// A named counter of a route's responses that match (`steady_business_events_total`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CountEvent {
    /// The event's name, the `event` label (e.g. `orders_completed`).
    pub name: String,
    /// Methods that count (any when empty).
    #[serde(default)]
    pub methods: Vec<String>,
    /// Statuses that count: codes (`201`) or classes (`2xx`); any when empty.
    #[serde(default)]
    pub status: Vec<StatusMatch>,
}

/// A status code or a class of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusMatch {
    /// Exactly this code.
    Code(u16),
    /// Any code of this hundred (`2` for `2xx`).
    Class(u16),
}

impl StatusMatch {
    /// Whether `status` matches.
    pub fn matches(self, status: u16) -> bool {
        match self {
            StatusMatch::Code(c) => status == c,
            StatusMatch::Class(h) => status / 100 == h,
        }
    }

    fn parse(text: &str) -> Result<StatusMatch, String> {
        let t = text.trim().to_ascii_lowercase();
        if let Some(h) = t.strip_suffix("xx") {
            if let Ok(h @ 1..=5) = h.parse::<u16>() {
                return Ok(StatusMatch::Class(h));
            }
        } else if let Ok(c @ 100..=599) = t.parse::<u16>() {
            return Ok(StatusMatch::Code(c));
        }
        Err(format!(
            "`{text}` is not a status; use a code such as `201` or a class such as `2xx`"
        ))
    }
}

impl<'de> Deserialize<'de> for StatusMatch {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Code(u64),
            Text(String),
        }
        let text = match Raw::deserialize(deserializer)? {
            Raw::Code(c) => c.to_string(),
            Raw::Text(t) => t,
        };
        StatusMatch::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// What `/metrics` exports.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Upper bounds of the `steady_request_duration_seconds` buckets, derived from the
    /// full latency histograms (so any layout works, and changing it loses nothing).
    #[serde(
        default = "defaults::latency_buckets",
        deserialize_with = "crate::units::de_durations"
    )]
    pub latency_buckets: Vec<Duration>,
    /// Export series per endpoint (an `endpoint` label); `false` sums them per upstream
    /// to bound cardinality on large fleets.
    #[serde(default = "defaults::per_endpoint")]
    pub per_endpoint: bool,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            latency_buckets: defaults::latency_buckets(),
            per_endpoint: defaults::per_endpoint(),
        }
    }
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
    /// After SIGTERM, how long `/readyz` answers 503 while steady still accepts and
    /// serves, so load balancers stop sending before the listeners close (HAProxy's
    /// `grace`).
    #[serde(default, deserialize_with = "de_duration")]
    pub drain_delay: Duration,
    /// Where this gateway runs; endpoints in the same zone are preferred (see
    /// `Endpoint::zone`). `None`: every endpoint counts as local.
    #[serde(default)]
    pub locality: Option<Locality>,
}

/// The gateway's own region and zone, for zone-aware balancing.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct Locality {
    /// Region, e.g. `eu-west-1`.
    #[serde(default)]
    pub region: Option<String>,
    /// Zone, e.g. `eu-west-1a`.
    #[serde(default)]
    pub zone: Option<String>,
}

impl Default for Runtime {
    fn default() -> Self {
        Self {
            workers: None,
            drain_timeout: defaults::drain_timeout(),
            drain_delay: Duration::ZERO,
            locality: None,
        }
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
    /// Addresses (`10.0.0.5`) or networks (`10.0.0.0/8`) of proxies in front of steady
    /// whose `X-Forwarded-For` is believed when finding the client IP for rate limits.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
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
    #[serde(
        default = "defaults::header_read_timeout",
        deserialize_with = "de_duration"
    )]
    pub header_read_timeout: Duration,
    /// Longest pause between two reads of a request body; over it: 408.
    #[serde(
        default = "defaults::body_read_timeout",
        deserialize_with = "de_duration"
    )]
    pub body_read_timeout: Duration,
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
            body_read_timeout: defaults::body_read_timeout(),
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
    /// Longest pause between two reads of the upstream's response body, once its head
    /// has arrived (nginx's `proxy_read_timeout`, haproxy's `timeout server`); over it
    /// the client's response is cut off.
    #[serde(
        default = "defaults::response_body_timeout",
        deserialize_with = "de_duration"
    )]
    pub response_body_timeout: Duration,
    /// Rate limits, all checked in order; the first that refuses answers 429.
    #[serde(default)]
    pub rate_limit: Vec<crate::limits::RateLimit>,
    /// How important this route's requests are when the upstream is saturated.
    #[serde(default)]
    pub priority: crate::limits::Priority,
    /// A request header whose value (`critical`, `normal`, `sheddable`) overrides
    /// `priority`. Only for callers you trust.
    #[serde(default)]
    pub priority_header: Option<String>,
    /// Faults to inject, to rehearse failures.
    #[serde(default)]
    pub fault: Option<crate::fault::Fault>,
    /// Retries of failed attempts on other endpoints; absent means none.
    #[serde(default)]
    pub retries: Option<crate::retry::Retries>,
    /// Business events: named counters of the responses that match a condition.
    #[serde(default)]
    pub count: Vec<CountEvent>,
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
    /// Header name to exact value. Names are lower-cased by [`crate::parse`].
    #[serde(default, deserialize_with = "de_header_map")]
    pub headers: BTreeMap<String, String>,
    /// Allowed methods, upper case.
    #[serde(default)]
    pub methods: Vec<String>,
}

/// Reads header values that YAML typed as numbers or booleans (`x-version: 2`)
/// as the text they were written as.
fn de_header_map<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scalar {
        Text(String),
        Int(i64),
        Uint(u64),
        Float(f64),
        Bool(bool),
    }
    #[derive(Deserialize)]
    struct HeaderValue(#[serde(deserialize_with = "de_scalar")] String);
    fn de_scalar<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        use serde::de::Error;
        match Scalar::deserialize(d) {
            Ok(Scalar::Text(s)) => Ok(s),
            Ok(Scalar::Int(n)) => Ok(n.to_string()),
            Ok(Scalar::Uint(n)) => Ok(n.to_string()),
            Ok(Scalar::Float(n)) => Ok(n.to_string()),
            Ok(Scalar::Bool(b)) => Ok(b.to_string()),
            Err(_) => Err(D::Error::custom(
                "a header value must be text, like `blue` or `\"2\"`",
            )),
        }
    }
    let map = BTreeMap::<String, HeaderValue>::deserialize(deserializer)?;
    Ok(map.into_iter().map(|(k, v)| (k, v.0)).collect())
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
    #[serde(
        default = "defaults::connect_timeout",
        deserialize_with = "de_duration"
    )]
    pub connect_timeout: Duration,
    /// Pooled idle connections are closed after this long.
    #[serde(
        default = "defaults::pool_idle_timeout",
        deserialize_with = "de_duration"
    )]
    pub pool_idle_timeout: Duration,
    /// Most idle pooled connections kept per endpoint.
    #[serde(default = "defaults::pool_max_idle")]
    pub pool_max_idle_per_endpoint: usize,
    /// How often DNS names in `endpoints` are resolved again.
    #[serde(default = "defaults::dns_refresh", deserialize_with = "de_duration")]
    pub dns_refresh: Duration,
    /// How steady checks its endpoints' health.
    #[serde(default)]
    pub health: Option<Health>,
    /// Adaptive concurrency limit with a small priority queue; absent means no limit.
    #[serde(default)]
    pub concurrency: Option<crate::limits::Concurrency>,
    /// Fixed limits on connections, pending and active requests; absent means none.
    #[serde(default)]
    pub circuit_breakers: Option<crate::limits::CircuitBreakers>,
    /// Envoy's overprovisioning factor for zone and priority failover: a locality tier
    /// keeps all its traffic until fewer than `1 / factor` of its endpoints are available.
    #[serde(default = "defaults::overprovisioning")]
    pub overprovisioning: f64,
    /// The instances that serve this upstream.
    pub endpoints: Vec<Endpoint>,
}

/// Health checking of an upstream's endpoints.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Health {
    /// Probes steady sends to every endpoint (HTTP, TCP or gRPC) with rise/fall
    /// thresholds; an endpoint that fails them gets no traffic until it passes again.
    #[serde(default)]
    pub active: Option<crate::health::ActiveHealth>,
    /// Outlier detection from live traffic: endpoints that keep failing requests are
    /// ejected for a growing, jittered time.
    #[serde(default)]
    pub passive: Option<Passive>,
}

/// Passive health checking (Envoy's outlier detection) of an upstream's endpoints.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Passive {
    /// Failed requests in a row (5xx, connect failure, reset, timeout) that eject an
    /// endpoint; `null` turns the rule off.
    #[serde(default = "defaults::consecutive_failures")]
    pub consecutive_failures: Option<u32>,
    /// Gateway failures in a row (502/503/504, connect failure, reset, timeout) that
    /// eject an endpoint; off unless set.
    #[serde(default)]
    pub consecutive_gateway_failures: Option<u32>,
    /// How often success-rate ejection is evaluated and ejections expire.
    #[serde(
        default = "defaults::outlier_interval",
        deserialize_with = "de_duration"
    )]
    pub interval: Duration,
    /// Ejection time of a first ejection; the n-th ejection lasts n times as long.
    #[serde(default = "defaults::base_ejection", deserialize_with = "de_duration")]
    pub base_ejection: Duration,
    /// Longest ejection (before up to 1s of jitter).
    #[serde(default = "defaults::max_ejection", deserialize_with = "de_duration")]
    pub max_ejection: Duration,
    /// Largest share of endpoints ejected at once, in percent.
    #[serde(default = "defaults::max_ejection_percent")]
    pub max_ejection_percent: u32,
    /// Below this share of available endpoints (percent), balance over all of them.
    #[serde(default = "defaults::panic_threshold")]
    pub panic_threshold: u32,
    /// Success-rate ejection each `interval`; on with Envoy's settings unless `null`.
    #[serde(default = "defaults::success_rate")]
    pub success_rate: Option<SuccessRate>,
    /// Failure-percentage ejection each `interval`; off unless set.
    #[serde(default)]
    pub failure_percentage: Option<FailurePercentage>,
}

/// Success-rate ejection (Envoy's `success_rate_*`): endpoints whose success rate over
/// an interval is more than `stdev_factor` standard deviations below the mean.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SuccessRate {
    /// Endpoints with `request_volume` needed before the rule runs at all.
    #[serde(default = "defaults::sr_min_hosts")]
    pub min_hosts: u32,
    /// Requests in one interval an endpoint needs to be judged.
    #[serde(default = "defaults::sr_request_volume")]
    pub request_volume: u32,
    /// Ejects below `mean − stdev_factor × stdev`.
    #[serde(default = "defaults::sr_stdev_factor")]
    pub stdev_factor: f64,
}

/// Failure-percentage ejection (Envoy's `failure_percentage_*`): endpoints failing at
/// least `threshold` of their requests over an interval.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FailurePercentage {
    /// Share of failed requests that ejects, in percent.
    #[serde(default = "defaults::fp_threshold")]
    pub threshold: u32,
    /// Endpoints with `request_volume` needed before the rule runs at all.
    #[serde(default = "defaults::fp_min_hosts")]
    pub min_hosts: u32,
    /// Requests in one interval an endpoint needs to be judged.
    #[serde(default = "defaults::fp_request_volume")]
    pub request_volume: u32,
}

impl Passive {
    /// The detector settings these stand for.
    pub fn outlier_config(&self) -> steady_balance::OutlierConfig {
        steady_balance::OutlierConfig {
            consecutive_failures: self.consecutive_failures,
            consecutive_gateway_failures: self.consecutive_gateway_failures,
            interval: self.interval,
            base_ejection: self.base_ejection,
            max_ejection: self.max_ejection,
            max_ejection_percent: self.max_ejection_percent,
            panic_threshold: self.panic_threshold,
            success_rate: self
                .success_rate
                .as_ref()
                .map(|r| steady_balance::SuccessRate {
                    min_hosts: r.min_hosts,
                    request_volume: r.request_volume,
                    stdev_factor: r.stdev_factor,
                }),
            failure_percentage: self.failure_percentage.as_ref().map(|f| {
                steady_balance::FailurePercentage {
                    threshold: f.threshold,
                    min_hosts: f.min_hosts,
                    request_volume: f.request_volume,
                }
            }),
            ..steady_balance::OutlierConfig::default()
        }
    }
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
    /// Zone the endpoint runs in; compared with `runtime.locality.zone`.
    #[serde(default)]
    pub zone: Option<String>,
    /// Region the endpoint runs in; compared with `runtime.locality.region`.
    #[serde(default)]
    pub region: Option<String>,
    /// Failover priority: 0 (the default) takes traffic first, 1 only as 0 fails, and so on.
    #[serde(default)]
    pub priority: u32,
}

impl Config {
    /// Returns the listener called `name`.
    pub fn listener(&self, name: &str) -> Option<&Listener> {
        self.listeners.iter().find(|l| l.name == name)
    }

    /// Returns the upstream called `name`.
    pub fn upstream(&self, name: &str) -> Option<&Upstream> {
        self.upstreams.iter().find(|u| u.name == name)
    }

    /// Returns the routes of listener `listener`, in the order they are tried.
    pub fn routes_for<'a>(&'a self, listener: &'a str) -> impl Iterator<Item = &'a Route> + 'a {
        self.routes.iter().filter(move |r| r.listener == listener)
    }
}

impl Admin {
    /// Parses [`Admin::bind`].
    pub fn try_bind_addr(&self) -> Result<SocketAddr, AddrParseError> {
        self.bind.parse()
    }

    /// Returns [`Admin::bind`] as a socket address.
    ///
    /// # Panics
    ///
    /// If `bind` is not a socket address, which [`crate::validate()`] rules out:
    /// call this only on a validated config (anything from [`crate::parse`] or
    /// [`crate::load`] is).
    pub fn bind_addr(&self) -> SocketAddr {
        self.try_bind_addr()
            .unwrap_or_else(|_| panic!("admin.bind `{}` was not validated", self.bind))
    }
}

impl Listener {
    /// Parses [`Listener::trusted_proxies`]; a bare address is a network of one.
    pub fn try_trusted_proxies(&self) -> Result<Vec<ipnet::IpNet>, String> {
        self.trusted_proxies
            .iter()
            .map(|text| {
                let text = text.trim();
                text.parse::<ipnet::IpNet>()
                    .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| format!("`{text}` is not an address or network like `10.0.0.0/8`"))
            })
            .collect()
    }

    /// Parses [`Listener::bind`].
    pub fn try_bind_addr(&self) -> Result<SocketAddr, AddrParseError> {
        self.bind.parse()
    }

    /// Returns [`Listener::bind`] as a socket address.
    ///
    /// # Panics
    ///
    /// If `bind` is not a socket address, which [`crate::validate()`] rules out:
    /// call this only on a validated config (anything from [`crate::parse`] or
    /// [`crate::load`] is).
    pub fn bind_addr(&self) -> SocketAddr {
        self.try_bind_addr().unwrap_or_else(|_| {
            panic!(
                "listener `{}` bind `{}` was not validated",
                self.name, self.bind
            )
        })
    }
}

impl ListenerProtocol {
    /// The name used in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            ListenerProtocol::Http => "http",
            ListenerProtocol::Https => "https",
            ListenerProtocol::Tcp => "tcp",
        }
    }
}

impl fmt::Display for ListenerProtocol {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Balance {
    /// The name used in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            Balance::RoundRobin => "round-robin",
            Balance::WeightedRoundRobin => "weighted-round-robin",
            Balance::LeastConnections => "least-connections",
            Balance::P2cEwma => "p2c-ewma",
            Balance::Random => "random",
            Balance::RingHash => "ring-hash",
            Balance::Maglev => "maglev",
        }
    }

    /// Whether the balancer picks by a hash key and so needs [`Upstream::hash`].
    pub fn uses_hash(self) -> bool {
        matches!(self, Balance::RingHash | Balance::Maglev)
    }
}

impl fmt::Display for Balance {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a hash balancer hashes, parsed from [`Hash::key`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HashKeySource {
    /// The value of a request header (`header:NAME`); the name is lower case.
    Header(String),
    /// The value of a cookie (`cookie:NAME`); the name is case-sensitive.
    Cookie(String),
    /// The client's IP address (`client_ip`), without the port.
    ClientIp,
    /// The request path without the query (`path`).
    Path,
}

impl FromStr for HashKeySource {
    type Err = String;

    fn from_str(key: &str) -> Result<Self, String> {
        match key {
            "client_ip" => return Ok(HashKeySource::ClientIp),
            "path" => return Ok(HashKeySource::Path),
            _ => {}
        }
        if let Some(name) = key.strip_prefix("header:") {
            return http::HeaderName::from_bytes(name.as_bytes())
                .map(|h| HashKeySource::Header(h.as_str().to_owned()))
                .map_err(|_| format!("`{name}` is not a valid header name"));
        }
        if let Some(name) = key.strip_prefix("cookie:") {
            let valid = !name.is_empty() && name.bytes().all(crate::validate::is_token_byte);
            return if valid {
                Ok(HashKeySource::Cookie(name.to_owned()))
            } else {
                Err(format!("`{name}` is not a valid cookie name"))
            };
        }
        Err(format!(
            "`{key}` is not a hash key; use `header:NAME`, `cookie:NAME`, `client_ip` or `path`"
        ))
    }
}

impl Hash {
    /// Parses [`Hash::key`].
    pub fn try_key_source(&self) -> Result<HashKeySource, String> {
        self.key.parse()
    }

    /// Returns what to hash.
    ///
    /// # Panics
    ///
    /// If `key` is invalid, which [`crate::validate()`] rules out: call this only
    /// on a validated config.
    pub fn key_source(&self) -> HashKeySource {
        self.try_key_source()
            .unwrap_or_else(|e| panic!("hash key was not validated: {e}"))
    }
}

/// An endpoint address, parsed from [`Endpoint::address`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EndpointAddr {
    /// An IP literal with a port; connect to it directly.
    Ip(SocketAddr),
    /// A DNS name with a port; resolve it every [`Upstream::dns_refresh`].
    Dns {
        /// The name, for example `backend.internal`.
        host: String,
        /// The port, never 0.
        port: u16,
    },
}

impl Endpoint {
    /// Parses [`Endpoint::address`]: `ip:port`, `[ipv6]:port` or `dns-name:port`.
    pub fn parse_address(&self) -> Result<EndpointAddr, String> {
        crate::validate::parse_endpoint_address(&self.address)
    }
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
    pub(crate) fn body_read_timeout() -> Duration {
        Duration::from_secs(30)
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
    pub(crate) fn response_body_timeout() -> Duration {
        Duration::from_secs(60)
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
    pub(crate) fn consecutive_failures() -> Option<u32> {
        Some(5)
    }
    pub(crate) fn outlier_interval() -> Duration {
        Duration::from_secs(10)
    }
    pub(crate) fn base_ejection() -> Duration {
        Duration::from_secs(30)
    }
    pub(crate) fn max_ejection() -> Duration {
        Duration::from_secs(300)
    }
    pub(crate) fn max_ejection_percent() -> u32 {
        10
    }
    pub(crate) fn panic_threshold() -> u32 {
        50
    }
    pub(crate) fn weight() -> u32 {
        1
    }
    pub(crate) fn overprovisioning() -> f64 {
        1.4
    }
    pub(crate) fn per_endpoint() -> bool {
        true
    }
    pub(crate) fn latency_buckets() -> Vec<Duration> {
        [
            500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
            2_500_000, 5_000_000, 10_000_000,
        ]
        .into_iter()
        .map(Duration::from_micros)
        .collect()
    }
    pub(crate) fn success_rate() -> Option<SuccessRate> {
        Some(SuccessRate {
            min_hosts: sr_min_hosts(),
            request_volume: sr_request_volume(),
            stdev_factor: sr_stdev_factor(),
        })
    }
    pub(crate) fn sr_min_hosts() -> u32 {
        5
    }
    pub(crate) fn sr_request_volume() -> u32 {
        100
    }
    pub(crate) fn sr_stdev_factor() -> f64 {
        1.9
    }
    pub(crate) fn fp_threshold() -> u32 {
        85
    }
    pub(crate) fn fp_min_hosts() -> u32 {
        5
    }
    pub(crate) fn fp_request_volume() -> u32 {
        50
    }
}
