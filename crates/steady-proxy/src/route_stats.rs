//! Per-route traffic, errors and latency: the golden signals of one route, recorded
//! with a few relaxed atomic adds and no lock, read by `/metrics` and the admin API.
//!
//! Requests count by method and status class, failures steady produced itself by
//! reason, and latency (request head to response head) goes into the route's lock-free
//! HDR-style [`Latency`] histogram, from which `/metrics` derives classic buckets at the
//! configured bounds and the admin API the full percentile distribution.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use http::Method;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;

use crate::error::Kind;
use crate::latency::Latency;

/// Methods counted by name; any other counts as `OTHER` (bounded cardinality).
pub const METHODS: [&str; 8] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "OTHER",
];

/// Status classes, in counter order.
pub const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Default latency bucket bounds (seconds) of `steady_request_duration_seconds`.
pub const DEFAULT_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

fn method_index(method: &Method) -> usize {
    match *method {
        Method::GET => 0,
        Method::HEAD => 1,
        Method::POST => 2,
        Method::PUT => 3,
        Method::DELETE => 4,
        Method::PATCH => 5,
        Method::OPTIONS => 6,
        _ => 7,
    }
}

/// The golden signals of one (route, upstream).
pub struct RouteStats {
    route: String,
    upstream: String,
    /// `[method][class]`.
    requests: [[AtomicU64; 5]; METHODS.len()],
    /// Failures steady produced itself, by reason (rare path: a small locked map).
    failures: Mutex<BTreeMap<&'static str, u64>>,
    latency: Arc<Latency>,
    /// Business events counted on this route (`count:`), replaced by reloads,
    /// and the SLOs that count its requests: one load per request for both.
    taps: ArcSwap<Taps>,
}

/// What a request is counted into besides the golden signals.
#[derive(Debug, Default)]
struct Taps {
    events: Vec<Arc<Event>>,
    slis: Vec<crate::slo::SliTap>,
}

/// One business event: a named counter of the responses that match.
#[derive(Debug)]
pub struct Event {
    config: steady_config::CountEvent,
    methods: Vec<Method>,
    count: AtomicU64,
}

impl Event {
    fn matches(&self, method: &Method, status: u16) -> bool {
        (self.methods.is_empty() || self.methods.contains(method))
            && (self.config.status.is_empty()
                || self.config.status.iter().any(|s| s.matches(status)))
    }
}

impl std::fmt::Debug for RouteStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteStats")
            .field("route", &self.route)
            .field("upstream", &self.upstream)
            .finish_non_exhaustive()
    }
}

impl RouteStats {
    fn new(route: &str, upstream: &str) -> RouteStats {
        RouteStats {
            route: route.to_string(),
            upstream: upstream.to_string(),
            requests: Default::default(),
            failures: Mutex::new(BTreeMap::new()),
            latency: Latency::spawn(Instant::now()),
            taps: ArcSwap::from_pointee(Taps::default()),
        }
    }

    /// Sets the SLOs this route's requests count for.
    pub fn set_slis(&self, taps: Vec<crate::slo::SliTap>) {
        let events = self.taps.load().events.clone();
        self.taps.store(Arc::new(Taps { events, slis: taps }));
    }

    /// Counts the business events `config` names from now on; an event whose
    /// definition is unchanged keeps its count.
    pub fn set_events(&self, config: &[steady_config::CountEvent]) {
        let current = self.taps.load_full();
        let old = &current.events;
        let next = config
            .iter()
            .map(|c| {
                old.iter()
                    .find(|e| e.config == *c)
                    .cloned()
                    .unwrap_or_else(|| {
                        Arc::new(Event {
                            config: c.clone(),
                            methods: c.methods.iter().filter_map(|m| m.parse().ok()).collect(),
                            count: AtomicU64::new(0),
                        })
                    })
            })
            .collect();
        self.taps.store(Arc::new(Taps {
            events: next,
            slis: current.slis.clone(),
        }));
    }

    /// Business events by name and count.
    pub fn events(&self) -> Vec<(String, u64)> {
        self.taps
            .load()
            .events
            .iter()
            .map(|e| (e.config.name.clone(), e.count.load(Ordering::Relaxed)))
            .collect()
    }

    /// Records an answered request: its method, status and time to response head.
    #[inline]
    pub fn record(&self, method: &Method, status: u16, elapsed: Duration) {
        let class = (status / 100).clamp(1, 5) as usize - 1;
        self.requests[method_index(method)][class].fetch_add(1, Ordering::Relaxed);
        self.latency.record(elapsed);
        let taps = self.taps.load();
        for event in &taps.events {
            if event.matches(method, status) {
                event.count.fetch_add(1, Ordering::Relaxed);
            }
        }
        for tap in &taps.slis {
            tap.record(status, elapsed);
        }
    }

    /// Records a failure steady produced itself (rare path).
    pub fn failure(&self, kind: Kind) {
        *self
            .failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(kind.reason())
            .or_insert(0) += 1;
    }

    /// Route name.
    pub fn route(&self) -> &str {
        &self.route
    }

    /// Upstream name.
    pub fn upstream(&self) -> &str {
        &self.upstream
    }

    /// Requests answered by status class (`1xx` .. `5xx`), all methods together.
    pub fn by_class(&self) -> [u64; 5] {
        let mut out = [0; 5];
        for per_method in &self.requests {
            for (slot, n) in out.iter_mut().zip(per_method) {
                *slot += n.load(Ordering::Relaxed);
            }
        }
        out
    }

    /// Failures by reason.
    pub fn failures(&self) -> BTreeMap<&'static str, u64> {
        self.failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The route's latency histogram.
    pub fn latency(&self) -> &Arc<Latency> {
        &self.latency
    }
}

/// Stats by (route, upstream).
type ByRoute = BTreeMap<(String, String), Arc<RouteStats>>;

/// Every route's stats, kept across reloads (as counters are), keyed by route and
/// upstream, with the bucket layout `/metrics` exports.
#[derive(Debug, Clone)]
pub struct RouteTable {
    routes: Arc<Mutex<ByRoute>>,
    buckets: Arc<ArcSwap<Vec<f64>>>,
}

impl Default for RouteTable {
    fn default() -> Self {
        Self {
            routes: Arc::default(),
            buckets: Arc::new(ArcSwap::from_pointee(DEFAULT_BUCKETS.to_vec())),
        }
    }
}

impl RouteTable {
    /// Returns the stats of (`route`, `upstream`), created on first use; a reload that
    /// keeps the pair keeps its counts and histogram.
    pub fn get_or_create(&self, route: &str, upstream: &str) -> Arc<RouteStats> {
        let mut routes = self.routes.lock().unwrap_or_else(PoisonError::into_inner);
        routes
            .entry((route.to_string(), upstream.to_string()))
            .or_insert_with(|| Arc::new(RouteStats::new(route, upstream)))
            .clone()
    }

    /// Every route's stats, by route then upstream name.
    pub fn all(&self) -> Vec<Arc<RouteStats>> {
        self.routes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    /// Sets the bucket bounds (seconds) of the exported histogram; sorted, deduplicated.
    pub fn set_buckets(&self, mut bounds: Vec<f64>) {
        bounds.retain(|b| b.is_finite() && *b > 0.0);
        bounds.sort_by(f64::total_cmp);
        bounds.dedup();
        self.buckets.store(Arc::new(bounds));
    }

    /// The bucket bounds in use.
    pub fn buckets(&self) -> Arc<Vec<f64>> {
        self.buckets.load_full()
    }
}

/// Writes `steady_requests_total`, `steady_request_failures_total` and the
/// `steady_request_duration_seconds` histogram at scrape time.
#[derive(Debug)]
pub(crate) struct RouteCollector(pub(crate) RouteTable);

impl Collector for RouteCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let routes = self.0.all();
        let mut family = encoder.encode_descriptor(
            "steady_requests",
            "Requests answered, by route, upstream, method and status class",
            None,
            MetricType::Counter,
        )?;
        for stats in &routes {
            for (m, per_class) in stats.requests.iter().enumerate() {
                let counts: Vec<u64> = per_class
                    .iter()
                    .map(|c| c.load(Ordering::Relaxed))
                    .collect();
                // GET always (so every route has its series from the start), other
                // methods once seen.
                if m != 0 && counts.iter().all(|&c| c == 0) {
                    continue;
                }
                for (class, count) in CLASSES.iter().zip(counts) {
                    let labels = [
                        ("route", stats.route.as_str()),
                        ("upstream", stats.upstream.as_str()),
                        ("method", METHODS[m]),
                        ("code", class),
                    ];
                    ConstCounter::new(count).encode(family.encode_family(&labels)?)?;
                }
            }
        }

        let mut family = encoder.encode_descriptor(
            "steady_request_failures",
            "Requests steady failed itself, by route and reason",
            None,
            MetricType::Counter,
        )?;
        for stats in &routes {
            for (reason, count) in stats.failures() {
                let labels = [("route", stats.route.as_str()), ("reason", reason)];
                ConstCounter::new(count).encode(family.encode_family(&labels)?)?;
            }
        }

        let mut family = encoder.encode_descriptor(
            "steady_business_events",
            "Responses matching a route's `count` conditions, by route and event name",
            None,
            MetricType::Counter,
        )?;
        for stats in &routes {
            for (event, count) in stats.events() {
                let labels = [("route", stats.route.as_str()), ("event", event.as_str())];
                ConstCounter::new(count).encode(family.encode_family(&labels)?)?;
            }
        }

        let bounds = self.0.buckets();
        let mut family = encoder.encode_descriptor(
            "steady_request_duration",
            "Time from request head to response head, by route and upstream",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        for stats in &routes {
            let total = stats.latency.total();
            let count = total.count();
            let cumulative = total.cumulative(&bounds);
            let mut buckets = Vec::with_capacity(bounds.len() + 1);
            let mut below = 0;
            for (&le, &c) in bounds.iter().zip(&cumulative) {
                buckets.push((le, c - below));
                below = c;
            }
            // prometheus-client writes `f64::MAX` as `+Inf`.
            buckets.push((f64::MAX, count - below));
            let labels = [
                ("route", stats.route.as_str()),
                ("upstream", stats.upstream.as_str()),
            ];
            family
                .encode_family(&labels)?
                .encode_histogram::<Vec<(String, String)>>(
                    total.sum_seconds(),
                    count,
                    &buckets,
                    None,
                )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn series_follow_what_was_recorded() {
        let table = RouteTable::default();
        let s = table.get_or_create("api", "app");
        assert!(Arc::ptr_eq(&s, &table.get_or_create("api", "app")));
        s.record(&Method::GET, 200, Duration::from_millis(3));
        s.record(&Method::POST, 503, Duration::from_millis(30));
        s.record(
            &Method::from_bytes(b"PURGE").unwrap(),
            404,
            Duration::from_millis(1),
        );
        s.failure(Kind::NoEndpoint);
        table.set_buckets(vec![0.01, 0.005, 0.005, -1.0]);
        assert_eq!(*table.buckets(), vec![0.005, 0.01]);

        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(RouteCollector(table.clone())));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for want in [
            r#"steady_requests_total{route="api",upstream="app",method="GET",code="2xx"} 1"#,
            r#"steady_requests_total{route="api",upstream="app",method="POST",code="5xx"} 1"#,
            r#"steady_requests_total{route="api",upstream="app",method="OTHER",code="4xx"} 1"#,
            r#"steady_request_failures_total{route="api",reason="no-endpoint"} 1"#,
            r#"steady_request_duration_seconds_bucket{le="0.005",route="api",upstream="app"} 2"#,
            r#"steady_request_duration_seconds_bucket{le="0.01",route="api",upstream="app"} 2"#,
            r#"steady_request_duration_seconds_bucket{le="+Inf",route="api",upstream="app"} 3"#,
            r#"steady_request_duration_seconds_count{route="api",upstream="app"} 3"#,
        ] {
            assert!(text.contains(want), "missing {want} in:\n{text}");
        }
        assert!(!text.contains("method=\"PUT\""), "unseen methods stay out");
        assert_eq!(s.by_class(), [0, 1, 0, 1, 1]);
    }
}
