//! Prometheus metrics of the request path.
//!
//! Handles are created once per route when the gateway starts, so recording a request is
//! a few atomic increments with no label lookups. Endpoint gauges are read from the
//! balancer's own counters at scrape time.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::error::Kind;
use crate::upstream::Upstream;

type Labels = Vec<(&'static str, String)>;

/// Latency buckets (seconds) of the request duration histogram.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// All metric families of one gateway.
pub struct Metrics {
    registry: Registry,
    requests: Family<Labels, Counter>,
    failures: Family<Labels, Counter>,
    duration: Family<Labels, Histogram>,
    /// Client connections currently open, per listener.
    pub connections: Family<Labels, Gauge>,
    /// Client connections accepted, per listener.
    pub connections_total: Family<Labels, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    /// Creates the registry; `upstreams` feed the endpoint gauges.
    pub fn new(upstreams: Vec<Arc<Upstream>>) -> Metrics {
        let mut registry = Registry::default();
        let requests = Family::<Labels, Counter>::default();
        let failures = Family::<Labels, Counter>::default();
        let duration = Family::<Labels, Histogram>::new_with_constructor(
            (|| Histogram::new(BUCKETS.iter().copied())) as fn() -> Histogram,
        );
        let connections = Family::<Labels, Gauge>::default();
        let connections_total = Family::<Labels, Counter>::default();
        registry.register(
            "steady_requests",
            "Requests answered, by route, upstream and status class",
            requests.clone(),
        );
        registry.register(
            "steady_request_failures",
            "Requests steady failed itself, by route and reason",
            failures.clone(),
        );
        registry.register(
            "steady_request_duration_seconds",
            "Time from request head to response head, by route",
            duration.clone(),
        );
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
        registry.register_collector(Box::new(EndpointCollector { upstreams }));
        Metrics {
            registry,
            requests,
            failures,
            duration,
            connections,
            connections_total,
        }
    }

    /// Pre-creates the series of one route.
    pub fn route(&self, route: &str, upstream: &str) -> RouteMetrics {
        let class = |c: &str| {
            self.requests
                .get_or_create(&vec![
                    ("route", route.to_string()),
                    ("upstream", upstream.to_string()),
                    ("code", c.to_string()),
                ])
                .clone()
        };
        RouteMetrics {
            by_class: [
                class("1xx"),
                class("2xx"),
                class("3xx"),
                class("4xx"),
                class("5xx"),
            ],
            duration: self
                .duration
                .get_or_create(&vec![("route", route.to_string())])
                .clone(),
            failures: self.failures.clone(),
            route: route.to_string(),
        }
    }

    /// Renders the registry in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(4096);
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Series of one route, recorded without lookups.
#[derive(Clone)]
pub struct RouteMetrics {
    by_class: [Counter; 5],
    duration: Histogram,
    failures: Family<Labels, Counter>,
    route: String,
}

impl RouteMetrics {
    /// Records an answered request.
    pub fn record(&self, status: u16, elapsed: Duration) {
        let idx = (status / 100).clamp(1, 5) as usize - 1;
        self.by_class[idx].inc();
        self.duration.observe(elapsed.as_secs_f64());
    }

    /// Records a failure steady produced itself (rare path: label lookup is fine).
    pub fn failure(&self, kind: Kind) {
        self.failures
            .get_or_create(&vec![
                ("route", self.route.clone()),
                ("reason", kind.reason().to_string()),
            ])
            .inc();
    }
}

/// Reads one gauge value off an endpoint.
type ReadGauge = fn(&steady_balance::Endpoint) -> i64;

/// Reads per-endpoint gauges from the balancers at scrape time.
#[derive(Debug)]
struct EndpointCollector {
    upstreams: Vec<Arc<Upstream>>,
}

impl Collector for EndpointCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let gauges: [(&str, &str, ReadGauge); 3] = [
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
        ];
        for (name, help, read) in gauges {
            let mut family = encoder.encode_descriptor(
                name,
                help,
                None,
                prometheus_client::metrics::MetricType::Gauge,
            )?;
            for upstream in &self.upstreams {
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
        Ok(())
    }
}
