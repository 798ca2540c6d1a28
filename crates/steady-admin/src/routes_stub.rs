//! TEMPORARY: a minimal `/api/routes` built from the Prometheus text, so the dashboard's
//! golden-signal panel has data in this branch. The real endpoint (with HDR latency
//! percentiles and `/api/routes/{name}/latency`) comes from the route statistics work;
//! delete this module when that lands. Same shape, without `latency`.

use std::collections::BTreeMap;

use steady_proxy::Gateway;

/// `{"routes":[{"name","upstream","requests":{"2xx":..},"failures":{reason:..}}]}`.
pub fn routes_json(gateway: &Gateway) -> serde_json::Value {
    let text = gateway.metrics().encode_prometheus();
    // (route, upstream) -> (requests by class, failures by reason)
    type Counts = (BTreeMap<String, f64>, BTreeMap<String, f64>);
    let mut routes: BTreeMap<String, (String, Counts)> = BTreeMap::new();
    for line in text.lines() {
        let (series, is_failure) = if let Some(s) = line.strip_prefix("steady_requests_total{") {
            (s, false)
        } else if let Some(s) = line.strip_prefix("steady_request_failures_total{") {
            (s, true)
        } else {
            continue;
        };
        let Some((labels, value)) = series.rsplit_once("} ") else {
            continue;
        };
        let Ok(value) = value.trim().parse::<f64>() else {
            continue;
        };
        let label = |name: &str| {
            labels
                .split(',')
                .filter_map(|kv| kv.split_once('='))
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.trim_matches('"').to_owned())
        };
        let Some(route) = label("route") else {
            continue;
        };
        let entry = routes.entry(route).or_default();
        if let Some(upstream) = label("upstream") {
            entry.0 = upstream;
        }
        let (key, map) = if is_failure {
            (label("reason"), &mut entry.1 .1)
        } else {
            (label("code"), &mut entry.1 .0)
        };
        if let Some(key) = key {
            *map.entry(key).or_default() += value;
        }
    }
    let routes: Vec<serde_json::Value> = routes
        .into_iter()
        .map(|(name, (upstream, (requests, failures)))| {
            let mut classes = serde_json::Map::new();
            for class in ["1xx", "2xx", "3xx", "4xx", "5xx"] {
                let n = requests.get(class).copied().unwrap_or(0.0);
                classes.insert(class.into(), serde_json::json!(n as u64));
            }
            let failures: serde_json::Map<String, serde_json::Value> = failures
                .into_iter()
                .map(|(k, v)| (k, serde_json::json!(v as u64)))
                .collect();
            serde_json::json!({
                "name": name,
                "upstream": upstream,
                "requests": classes,
                "failures": failures,
            })
        })
        .collect();
    serde_json::json!({ "routes": routes })
}
