//! Prometheus metrics of the request path.
//!
//! Handles are created once per route when the gateway starts, so recording a request is
//! a few atomic increments with no label lookups. Endpoint gauges are read from the
//! balancer's own counters at scrape time.

use std::sync::Arc;

use arc_swap::{ArcSwap, ArcSwapOption};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use steady_limit::RedisStore;

use crate::upstream::Upstream;

type Labels = Vec<(&'static str, String)>;

/// The live upstream list, swapped whole by a config reload; scrape-time collectors read
/// the current one.
pub type SharedUpstreams = Arc<ArcSwap<Vec<Arc<Upstream>>>>;

/// The Redis store of global rate limits, if any; a reload may replace it.
pub type SharedRedis = Arc<ArcSwapOption<RedisStore>>;

/// All metric families of one gateway.
pub struct Metrics {
    registry: Registry,
    /// Every route's requests, failures and latency histogram.
    routes: crate::route_stats::RouteTable,
    /// Whether per-endpoint series are exported (`metrics.per_endpoint`).
    per_endpoint: Arc<std::sync::atomic::AtomicBool>,
    /// Client connections currently open, per listener.
    pub connections: Family<Labels, Gauge>,
    /// Client connections accepted, per listener.
    pub connections_total: Family<Labels, Counter>,
    rate_limited: Family<Labels, Counter>,
    rate_limit_fallback: Family<Labels, Counter>,
    shed: Family<Labels, Counter>,
    faults: Family<Labels, Counter>,
    retries: Family<Labels, Counter>,
    /// Config reloads by result (`success`, `failure`).
    reloads: Family<Labels, Counter>,
    /// 1 if the last reload applied (or none was tried since start), else 0.
    last_reload_successful: Gauge,
    /// Unix time of the last config that applied (start or reload).
    last_reload_success: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// Span export counters; every exporter a reload starts counts into them.
    trace_stats: Arc<crate::otel::TraceStats>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    /// Creates the registry; `upstreams` feed the endpoint and concurrency gauges,
    /// `redis` the Redis availability of global rate limits. Both are read at scrape
    /// time, so they follow reloads.
    pub fn new(
        upstreams: SharedUpstreams,
        redis: SharedRedis,
        access_log: crate::http::SharedAccessLog,
        slos: Arc<crate::slo::Slos>,
    ) -> Metrics {
        let mut registry = Registry::default();
        let routes = crate::route_stats::RouteTable::default();
        registry.register_collector(Box::new(crate::route_stats::RouteCollector(routes.clone())));
        let connections = Family::<Labels, Gauge>::default();
        let connections_total = Family::<Labels, Counter>::default();
        registry.register(
            "steady_downstream_connections",
            "Client connections open, by listener",
            connections.clone(),
        );
        registry.register(
            "steady_downstream_connections_accepted",
            "Client connections accepted, by listener",
            connections_total.clone(),
        );
        let rate_limited = Family::<Labels, Counter>::default();
        let rate_limit_fallback = Family::<Labels, Counter>::default();
        let shed = Family::<Labels, Counter>::default();
        let faults = Family::<Labels, Counter>::default();
        let retries = Family::<Labels, Counter>::default();
        registry.register(
            "steady_retries",
            "Retries by route and reason (connect-failure, reset, timeout, status), and retries not made (budget-exhausted, no-other-endpoint)",
            retries.clone(),
        );
        registry.register(
            "steady_faults_injected",
            "Requests delayed or aborted by fault injection, by route and kind",
            faults.clone(),
        );
        registry.register(
            "steady_rate_limited",
            "Requests over a rate limit (refused with 429, or only counted in shadow mode), by route, limit, scope and mode",
            rate_limited.clone(),
        );
        registry.register(
            "steady_rate_limit_fallback",
            "Global rate-limit decisions taken without Redis (per on_failure), by route and limit",
            rate_limit_fallback.clone(),
        );
        registry.register(
            "steady_requests_shed",
            "Requests refused with 503 by the adaptive concurrency limit, by upstream, priority and reason",
            shed.clone(),
        );
        registry.register_collector(Box::new(crate::process::ProcessCollector));
        slos.notify_metrics().register(&mut registry);
        registry.register_collector(Box::new(crate::slo::SloCollector(slos)));
        registry.register_collector(Box::new(crate::access_log::AccessLogCollector(access_log)));
        let trace_stats = Arc::new(crate::otel::TraceStats::default());
        registry.register_collector(Box::new(crate::otel::TraceCollector(trace_stats.clone())));
        let per_endpoint = Arc::new(std::sync::atomic::AtomicBool::new(true));
        registry.register_collector(Box::new(EndpointCollector {
            upstreams: upstreams.clone(),
            per_endpoint: per_endpoint.clone(),
        }));
        registry.register_collector(Box::new(BreakerCollector {
            upstreams: upstreams.clone(),
        }));
        registry.register_collector(Box::new(ConcurrencyCollector { upstreams }));
        registry.register_collector(Box::new(RedisCollector { redis }));
        // Prometheus' own names for its config reloads, with steady's prefix.
        let reloads = Family::<Labels, Counter>::default();
        let last_reload_successful = Gauge::default();
        let last_reload_success = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "steady_config_reloads",
            "Config reloads tried, by result (success, failure)",
            reloads.clone(),
        );
        registry.register(
            "steady_config_last_reload_successful",
            "1 if the last config reload applied (or none was tried), 0 if it failed and the previous config still runs",
            last_reload_successful.clone(),
        );
        registry.register(
            "steady_config_last_reload_success_timestamp_seconds",
            "Unix time the running config was applied (at start or by a reload)",
            last_reload_success.clone(),
        );
        for result in ["success", "failure"] {
            let _ = reloads.get_or_create(&vec![("result", result.to_string())]);
        }
        last_reload_successful.set(1);
        last_reload_success.set(unix_now());
        Metrics {
            registry,
            routes,
            per_endpoint,
            connections,
            connections_total,
            rate_limited,
            rate_limit_fallback,
            shed,
            faults,
            retries,
            reloads,
            last_reload_successful,
            last_reload_success,
            trace_stats,
        }
    }

    /// The span export counters (`steady_trace_spans_*`).
    pub fn trace_stats(&self) -> &Arc<crate::otel::TraceStats> {
        &self.trace_stats
    }

    /// Records a config reload's outcome.
    pub fn config_reloaded(&self, success: bool) {
        let result = if success { "success" } else { "failure" };
        self.reloads
            .get_or_create(&vec![("result", result.to_string())])
            .inc();
        self.last_reload_successful.set(i64::from(success));
        if success {
            self.last_reload_success.set(unix_now());
        }
    }

    /// Returns the stats of one route (kept across reloads that keep the route and its
    /// upstream).
    pub fn route(&self, route: &str, upstream: &str) -> RouteMetrics {
        self.routes.get_or_create(route, upstream)
    }

    /// Every route's stats, for the admin API.
    pub fn routes(&self) -> Vec<RouteMetrics> {
        self.routes.all()
    }

    /// Turns the series with an `endpoint` label on or off (off: per-upstream sums).
    pub fn set_per_endpoint(&self, on: bool) {
        self.per_endpoint
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// Sets the bucket bounds (seconds) `/metrics` derives from the latency histograms.
    pub fn set_latency_buckets(&self, bounds: Vec<f64>) {
        self.routes.set_buckets(bounds);
    }

    /// Pre-creates the counters of one rate limit: `(limited, fallback)`.
    pub fn rate_limit(
        &self,
        route: &str,
        limit: &str,
        scope: steady_config::limits::Scope,
        mode: steady_config::limits::LimitMode,
    ) -> (Counter, Counter) {
        let labels = vec![
            ("route", route.to_string()),
            ("limit", limit.to_string()),
            ("scope", scope.as_str().to_string()),
            ("mode", mode.as_str().to_string()),
        ];
        let limited = self.rate_limited.get_or_create(&labels).clone();
        let fallback = self
            .rate_limit_fallback
            .get_or_create(&labels[..2].to_vec())
            .clone();
        (limited, fallback)
    }

    /// Counts a retry of `route` (or one not made) for `reason` (rare path).
    pub fn retry(&self, route: &str, reason: &str) {
        self.retries
            .get_or_create(&vec![
                ("route", route.to_string()),
                ("reason", reason.to_string()),
            ])
            .inc();
    }

    /// Pre-creates the fault counters of one route: `(delayed, aborted)`.
    pub fn faults(&self, route: &str) -> (Counter, Counter) {
        let kind = |k: &str| {
            self.faults
                .get_or_create(&vec![("route", route.to_string()), ("kind", k.to_string())])
                .clone()
        };
        (kind("delay"), kind("abort"))
    }

    /// Counts a request shed by `upstream`'s concurrency limit (rare path: label
    /// lookup is fine).
    pub fn shed(&self, upstream: &str, priority: steady_limit::Priority, reason: &str) {
        self.shed
            .get_or_create(&vec![
                ("upstream", upstream.to_string()),
                ("priority", priority.as_str().to_string()),
                ("reason", reason.to_string()),
            ])
            .inc();
    }

    /// Renders the registry in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(4096);
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Renders the registry in the classic Prometheus text format (0.0.4), for scrapers
    /// and tools that do not ask for OpenMetrics (curl, `promtool check metrics`).
    pub fn encode_prometheus(&self) -> String {
        openmetrics_to_prometheus(&self.encode())
    }
}

/// Seconds since the Unix epoch, now.
fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The golden signals of one route, recorded without lookups or locks.
pub type RouteMetrics = Arc<crate::route_stats::RouteStats>;

/// Reads one gauge value off an endpoint.
type ReadGauge = fn(&steady_balance::Endpoint) -> i64;

/// Reads per-endpoint gauges from the balancers at scrape time.
#[derive(Debug)]
struct EndpointCollector {
    upstreams: SharedUpstreams,
    /// Whether series carry an `endpoint` label (`metrics.per_endpoint`).
    per_endpoint: Arc<std::sync::atomic::AtomicBool>,
}

impl Collector for EndpointCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let upstreams = self.upstreams.load();
        let now = std::time::Instant::now();
        if self.per_endpoint.load(std::sync::atomic::Ordering::Relaxed) {
            let gauges: [(&str, &str, ReadGauge); 5] = [
                (
                    "steady_endpoint_in_flight",
                    "Requests in flight to the endpoint",
                    |e| e.in_flight() as i64,
                ),
                (
                    "steady_endpoint_available",
                    "1 if the endpoint may receive traffic",
                    |e| e.is_available() as i64,
                ),
                (
                    "steady_endpoint_weight",
                    "Configured weight of the endpoint",
                    |e| e.weight() as i64,
                ),
                (
                    "steady_endpoint_healthy",
                    "1 if active health checks (when configured) see the endpoint up",
                    |e| e.is_healthy() as i64,
                ),
                (
                    "steady_endpoint_ejected",
                    "1 if passive outlier detection has ejected the endpoint",
                    |e| e.is_ejected() as i64,
                ),
            ];
            for (name, help, read) in gauges {
                let mut family = encoder.encode_descriptor(
                    name,
                    help,
                    None,
                    prometheus_client::metrics::MetricType::Gauge,
                )?;
                for upstream in upstreams.iter() {
                    for ep in upstream.endpoints().endpoints() {
                        let labels: Labels = vec![
                            ("upstream", upstream.name.to_string()),
                            ("endpoint", ep.addr().to_string()),
                        ];
                        let gauge = Gauge::<i64>::default();
                        gauge.set(read(ep));
                        gauge.encode(family.encode_family(&labels)?)?;
                    }
                }
            }
            let samples = upstreams.iter().flat_map(|u| {
                u.endpoints()
                    .endpoints()
                    .iter()
                    .map(|ep| {
                        (
                            vec![
                                ("upstream", u.name.to_string()),
                                ("endpoint", ep.addr().to_string()),
                            ],
                            ep.ewma_latency(now).as_secs_f64(),
                        )
                    })
                    .collect::<Vec<_>>()
            });
            encode_gauges(
                &mut encoder,
                "steady_endpoint_latency_ewma",
                "Peak-EWMA latency estimate the balancers use for the endpoint",
                Some(&prometheus_client::registry::Unit::Seconds),
                samples,
            )?;
            let samples = upstreams.iter().flat_map(|u| {
                u.endpoints()
                    .endpoints()
                    .iter()
                    .flat_map(|ep| {
                        let (ok, failed) = ep.outcomes();
                        let labels = |outcome: &str| {
                            vec![
                                ("upstream", u.name.to_string()),
                                ("endpoint", ep.addr().to_string()),
                                ("outcome", outcome.to_string()),
                            ]
                        };
                        [(labels("success"), ok), (labels("failure"), failed)]
                    })
                    .collect::<Vec<_>>()
            });
            encode_counters(
                &mut encoder,
                "steady_endpoint_attempts",
                "Upstream attempts the endpoint finished, by outcome (failure: connect error, reset, timeout, 502/503/504)",
                samples,
            )?;
            let samples = upstreams.iter().flat_map(|u| {
                u.health_checks()
                    .map(|h| h.reports())
                    .unwrap_or_default()
                    .into_iter()
                    .flat_map(|(addr, r)| {
                        let labels = |result: &str| {
                            vec![
                                ("upstream", u.name.to_string()),
                                ("endpoint", addr.to_string()),
                                ("result", result.to_string()),
                            ]
                        };
                        [(labels("pass"), r.passes), (labels("fail"), r.failures)]
                    })
                    .collect::<Vec<_>>()
            });
            encode_counters(
                &mut encoder,
                "steady_health_checks",
                "Active health check probes, by endpoint and result",
                samples,
            )?;
        } else {
            // Bounded cardinality: the same signals summed per upstream.
            let per_upstream = |read: fn(&steady_balance::Endpoint) -> bool| {
                upstreams
                    .iter()
                    .map(move |u| {
                        let n = u.endpoints().endpoints().iter().filter(|e| read(e)).count();
                        (vec![("upstream", u.name.to_string())], n as f64)
                    })
                    .collect::<Vec<_>>()
            };
            encode_gauges(
                &mut encoder,
                "steady_upstream_endpoints_available",
                "Endpoints that may receive traffic",
                None,
                per_upstream(|e| e.is_available()).into_iter(),
            )?;
            encode_gauges(
                &mut encoder,
                "steady_upstream_endpoints_ejected",
                "Endpoints passive outlier detection has ejected",
                None,
                per_upstream(|e| e.is_ejected()).into_iter(),
            )?;
            let samples = upstreams.iter().flat_map(|u| {
                let (ok, failed) = u
                    .endpoints()
                    .endpoints()
                    .iter()
                    .map(|e| e.outcomes())
                    .fold((0, 0), |(a, b), (c, d)| (a + c, b + d));
                let labels = |outcome: &str| {
                    vec![
                        ("upstream", u.name.to_string()),
                        ("outcome", outcome.to_string()),
                    ]
                };
                [(labels("success"), ok), (labels("failure"), failed)]
            });
            encode_counters(
                &mut encoder,
                "steady_upstream_attempts",
                "Upstream attempts finished, by outcome",
                samples,
            )?;
        }
        let samples = upstreams.iter().map(|u| {
            (
                vec![("upstream", u.name.to_string())],
                u.endpoints().len() as f64,
            )
        });
        encode_gauges(
            &mut encoder,
            "steady_upstream_endpoints",
            "Endpoints the upstream has (after DNS resolution)",
            None,
            samples,
        )?;
        let samples = upstreams
            .iter()
            .map(|u| (vec![("upstream", u.name.to_string())], u.ejections()));
        encode_counters(
            &mut encoder,
            "steady_outlier_ejections",
            "Endpoints ejected by passive outlier detection, by upstream",
            samples,
        )?;
        let samples = upstreams.iter().map(|u| {
            (
                vec![("upstream", u.name.to_string())],
                u.ejections_skipped(),
            )
        });
        encode_counters(
            &mut encoder,
            "steady_outlier_ejections_skipped",
            "Ejections outlier detection wanted but max_ejection_percent refused, by upstream",
            samples,
        )
    }
}

/// Writes one counter family with one sample per `(labels, value)`.
fn encode_counters(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl Iterator<Item = (Labels, u64)>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(
        name,
        help,
        None,
        prometheus_client::metrics::MetricType::Counter,
    )?;
    for (labels, value) in samples {
        let counter = Counter::<u64>::default();
        counter.inc_by(value);
        counter.encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// Writes one gauge family with one sample per `(labels, value)`.
fn encode_gauges<'a>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&prometheus_client::registry::Unit>,
    samples: impl Iterator<Item = (Labels, f64)> + 'a,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(
        name,
        help,
        unit,
        prometheus_client::metrics::MetricType::Gauge,
    )?;
    for (labels, value) in samples {
        let gauge = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        gauge.set(value);
        gauge.encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// Reads each upstream's adaptive concurrency limit at scrape time.
#[derive(Debug)]
struct ConcurrencyCollector {
    upstreams: SharedUpstreams,
}

type ReadLimiter = fn(&steady_limit::ConcurrencyLimiter) -> f64;

impl Collector for ConcurrencyCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let limited: Vec<_> = self
            .upstreams
            .load()
            .iter()
            .filter_map(|u| Some((u.name.to_string(), u.concurrency.clone()?)))
            .collect();
        if limited.is_empty() {
            return Ok(());
        }
        let gauges: [(&str, &str, ReadLimiter); 4] = [
            (
                "steady_concurrency_limit",
                "Current adaptive concurrency limit of the upstream",
                |l| f64::from(l.limit()),
            ),
            (
                "steady_concurrency_in_flight",
                "Requests holding a concurrency slot of the upstream",
                |l| f64::from(l.in_flight()),
            ),
            (
                "steady_concurrency_queue_length",
                "Requests waiting for a concurrency slot of the upstream",
                |l| l.queued() as f64,
            ),
            (
                "steady_upstream_saturation",
                "In-flight requests relative to the learned concurrency limit (1 = at the limit); an autoscaling signal",
                |l| f64::from(l.in_flight()) / f64::from(l.learned_limit().max(1)),
            ),
        ];
        for (name, help, read) in gauges {
            let samples = limited
                .iter()
                .map(|(u, l)| (vec![("upstream", u.clone())], read(l)));
            encode_gauges(&mut encoder, name, help, None, samples)?;
        }
        let samples = limited
            .iter()
            .map(|(u, l)| (vec![("upstream", u.clone())], l.min_rtt().as_secs_f64()));
        encode_gauges(
            &mut encoder,
            "steady_concurrency_min_rtt",
            "Minimum round-trip time the concurrency limit is measured against",
            Some(&prometheus_client::registry::Unit::Seconds),
            samples,
        )
    }
}

/// Reads each upstream's circuit-breaker counts and overflows at scrape time.
#[derive(Debug)]
struct BreakerCollector {
    upstreams: SharedUpstreams,
}

impl Collector for BreakerCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use crate::breakers::Breaker;
        let gauges = [
            (
                "steady_upstream_connections",
                "Open HTTP/1.1 connections to the upstream, across workers",
                Breaker::Connections,
            ),
            (
                "steady_upstream_pending_requests",
                "Requests waiting for a new connection to the upstream",
                Breaker::Pending,
            ),
            (
                "steady_upstream_active_requests",
                "Requests in flight to the upstream (until the response head)",
                Breaker::Requests,
            ),
        ];
        let upstreams = self.upstreams.load();
        for (name, help, breaker) in gauges {
            let samples = upstreams.iter().map(|u| {
                (
                    vec![("upstream", u.name.to_string())],
                    u.breakers.current(breaker) as f64,
                )
            });
            encode_gauges(&mut encoder, name, help, None, samples)?;
        }
        let samples = upstreams.iter().flat_map(|u| {
            Breaker::ALL.into_iter().filter_map(move |b| {
                let limit = u.breakers.limit(b)?;
                Some((
                    vec![
                        ("upstream", u.name.to_string()),
                        ("breaker", b.as_str().to_string()),
                    ],
                    limit as f64,
                ))
            })
        });
        encode_gauges(
            &mut encoder,
            "steady_circuit_breaker_limit",
            "Configured circuit-breaker limits of the upstream",
            None,
            samples,
        )?;
        let samples = upstreams.iter().flat_map(|u| {
            Breaker::ALL.into_iter().map(move |b| {
                let labels: Labels = vec![
                    ("upstream", u.name.to_string()),
                    ("breaker", b.as_str().to_string()),
                ];
                (labels, u.breakers.overflows(b))
            })
        });
        encode_counters(
            &mut encoder,
            "steady_circuit_breaker_overflows",
            "Requests refused with 503 because a circuit breaker of the upstream was full",
            samples,
        )
    }
}

/// Reports whether global rate limits can reach Redis.
#[derive(Debug)]
struct RedisCollector {
    redis: SharedRedis,
}

impl Collector for RedisCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(redis) = self.redis.load_full() else {
            return Ok(());
        };
        let up = Gauge::<i64>::default();
        up.set(i64::from(redis.available()));
        up.encode(encoder.encode_descriptor(
            "steady_rate_limit_redis_up",
            "Whether the last round trip to the rate-limit Redis succeeded (1) or not (0)",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?)?;
        let errors = Counter::<u64>::default();
        errors.inc_by(redis.errors());
        errors.encode(encoder.encode_descriptor(
            "steady_rate_limit_redis_errors",
            "Round trips to the rate-limit Redis that failed or timed out",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?)?;
        let late = Counter::<u64>::default();
        late.inc_by(redis.late());
        late.encode(encoder.encode_descriptor(
            "steady_rate_limit_redis_late",
            "Global rate-limit decisions that waited longer than redis.timeout in all and fell back to on_failure",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?)
    }
}

/// Rewrites OpenMetrics text as Prometheus text 0.0.4: the samples are the same, but a
/// counter's `# HELP`/`# TYPE` name carries its `_total` suffix, `# UNIT` and `# EOF`
/// go, and `unknown` is `untyped`.
pub fn openmetrics_to_prometheus(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)));
        match meta {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                out.push_str(prefix);
                out.push_str(name);
                if counters.contains(name) {
                    out.push_str("_total");
                }
                out.push(' ');
                out.push_str(if tail == "unknown" { "untyped" } else { tail });
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openmetrics_counters_get_their_total_names_back() {
        let om = "# HELP steady_requests Requests.\n# TYPE steady_requests counter\n\
                  steady_requests_total{code=\"2xx\"} 1\n# HELP steady_x_seconds X.\n\
                  # TYPE steady_x_seconds gauge\n# UNIT steady_x_seconds seconds\n\
                  steady_x_seconds 0.5\n# EOF\n";
        assert_eq!(
            openmetrics_to_prometheus(om),
            "# HELP steady_requests_total Requests.\n# TYPE steady_requests_total counter\n\
             steady_requests_total{code=\"2xx\"} 1\n# HELP steady_x_seconds X.\n\
             # TYPE steady_x_seconds gauge\nsteady_x_seconds 0.5\n"
        );
    }
}
