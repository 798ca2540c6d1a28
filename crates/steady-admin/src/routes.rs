//! `/api/routes` and `/api/routes/{name}/latency`: each route's golden signals and its
//! full latency distribution (JSON, or HdrHistogram's `.hgrm` text).

use std::time::{Duration, Instant};

use steady_proxy::latency::Distribution;
use steady_proxy::route_stats::CLASSES;
use steady_proxy::Gateway;

/// The window `/api/routes` summarizes latency over.
pub(crate) const SUMMARY_WINDOW: Duration = Duration::from_secs(60);

/// Every route: requests by status class, failures by reason, and latency percentiles
/// over the last minute (seconds).
pub(crate) fn routes_json(gateway: &Gateway) -> serde_json::Value {
    let now = Instant::now();
    let routes: Vec<serde_json::Value> = gateway
        .metrics()
        .routes()
        .iter()
        .map(|r| {
            let requests: serde_json::Map<String, serde_json::Value> = CLASSES
                .iter()
                .zip(r.by_class())
                .map(|(class, n)| (class.to_string(), n.into()))
                .collect();
            let latency = r.latency().recent(SUMMARY_WINDOW, now);
            serde_json::json!({
                "name": r.route(),
                "upstream": r.upstream(),
                "requests": requests,
                "failures": r.failures(),
                "latency": summary(&latency),
            })
        })
        .collect();
    serde_json::json!({ "routes": routes })
}

fn seconds(d: Option<Duration>) -> Option<f64> {
    d.map(|d| d.as_secs_f64())
}

fn summary(d: &Distribution) -> serde_json::Value {
    serde_json::json!({
        "window_seconds": d.window().map(|w| w.as_secs_f64()),
        "count": d.count(),
        "p50": seconds(d.quantile(0.5)),
        "p90": seconds(d.quantile(0.9)),
        "p99": seconds(d.quantile(0.99)),
        "p999": seconds(d.quantile(0.999)),
        "max": seconds(d.max()),
    })
}

/// What `/api/routes/{name}/latency` answers.
pub(crate) enum Latency {
    Json(serde_json::Value),
    Hgrm(String),
    NotFound(String),
    BadRequest(String),
}

/// The full distribution of route `name` over `window` (query `window=5m`; default
/// since start), as JSON percentiles or, with `format=hgrm`, `.hgrm` text.
pub(crate) fn latency(gateway: &Gateway, name: &str, query: Option<&str>) -> Latency {
    let mut window = None;
    let mut hgrm = false;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "window" => match humantime::parse_duration(value) {
                Ok(d) if !d.is_zero() => window = Some(d),
                _ => {
                    return Latency::BadRequest(format!(
                        "window `{value}` is not a duration such as 30s, 5m or 1h"
                    ))
                }
            },
            "format" if value == "hgrm" => hgrm = true,
            "format" if value == "json" => hgrm = false,
            _ => {
                return Latency::BadRequest(format!(
                    "unknown parameter `{key}`; use window=5m and format=json|hgrm"
                ))
            }
        }
    }
    let stats = gateway.metrics().routes();
    let matching: Vec<_> = stats.iter().filter(|r| r.route() == name).collect();
    if matching.is_empty() {
        return Latency::NotFound(format!("no route `{name}`"));
    }
    // A route renamed onto another upstream by a reload has one histogram per
    // upstream; the newest config's pair is last in name order only by chance, so
    // merge them all.
    let now = Instant::now();
    let dist = |r: &&std::sync::Arc<steady_proxy::route_stats::RouteStats>| match window {
        Some(w) => r.latency().recent(w, now),
        None => r.latency().total(),
    };
    let mut merged = dist(&matching[0]);
    for r in &matching[1..] {
        merged = merged.merged(&dist(r));
    }
    if hgrm {
        return Latency::Hgrm(merged.hgrm());
    }
    let percentiles: Vec<serde_json::Value> = merged
        .distribution_points()
        .into_iter()
        .map(|(q, value, count)| {
            serde_json::json!({
                "percentile": q * 100.0,
                "seconds": value.as_secs_f64(),
                "count": count,
            })
        })
        .collect();
    Latency::Json(serde_json::json!({
        "route": name,
        "window_seconds": merged.window().map(|w| w.as_secs_f64()),
        "count": merged.count(),
        "mean_seconds": merged.mean_seconds(),
        "percentiles": percentiles,
    }))
}
