//! The admin JSON API over live traffic: `/api/routes` counts and latency percentiles,
//! `/api/routes/NAME/latency` as JSON and as HdrHistogram's `.hgrm` text, and clear
//! errors for unknown routes and bad parameters.

use crate::common::{get, get_json, start};

#[tokio::test]
async fn routes_report_traffic_and_the_full_latency_distribution() {
    let steady = start().await;
    for _ in 0..25 {
        assert_eq!(get(steady.web, "/").await.0, 200);
    }
    for _ in 0..5 {
        assert_eq!(get(steady.web, "/status/503").await.0, 503);
    }

    let (status, routes) = get_json(steady.admin, "/api/routes").await;
    assert_eq!(status, 200);
    let api = &routes["routes"][0];
    assert_eq!(api["name"], "api");
    assert_eq!(api["upstream"], "app");
    assert_eq!(api["requests"]["2xx"], 25, "{api}");
    assert_eq!(api["requests"]["5xx"], 5, "{api}");
    let latency = &api["latency"];
    assert_eq!(latency["count"], 30, "{latency}");
    let (p50, p99, max) = (
        latency["p50"].as_f64().unwrap(),
        latency["p99"].as_f64().unwrap(),
        latency["max"].as_f64().unwrap(),
    );
    assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{latency}");

    let (status, dist) = get_json(steady.admin, "/api/routes/api/latency?window=5m").await;
    assert_eq!(status, 200);
    assert_eq!(dist["count"], 30);
    let points = dist["percentiles"].as_array().unwrap();
    assert_eq!(points[0]["percentile"], 0.0);
    assert_eq!(points.last().unwrap()["percentile"], 100.0);
    assert_eq!(points.last().unwrap()["count"], 30);
    let seconds: Vec<f64> = points
        .iter()
        .map(|p| p["seconds"].as_f64().unwrap())
        .collect();
    assert!(seconds.windows(2).all(|w| w[0] <= w[1]), "{dist}");

    let (status, hgrm) = get(steady.admin, "/api/routes/api/latency?format=hgrm").await;
    assert_eq!(status, 200);
    let header: Vec<&str> = hgrm.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["Value", "Percentile", "TotalCount", "1/(1-Percentile)"]
    );
    assert!(hgrm.contains("Total count    =           30]"), "{hgrm}");
}

#[tokio::test]
async fn bad_latency_requests_get_clear_errors() {
    let steady = start().await;
    let (status, body) = get_json(steady.admin, "/api/routes/nope/latency").await;
    assert_eq!(status, 404);
    assert_eq!(body["error"], "no route `nope`");
    let (status, body) = get_json(steady.admin, "/api/routes/api/latency?window=soon").await;
    assert_eq!(status, 400);
    assert!(
        body["error"].as_str().unwrap().contains("window `soon`"),
        "{body}"
    );
    let (status, body) = get_json(steady.admin, "/api/routes/api/latency?bogus=1").await;
    assert_eq!(status, 400);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("unknown parameter"),
        "{body}"
    );
    // An empty distribution is an answer, not an error.
    let (status, body) = get_json(steady.admin, "/api/routes/api/latency").await;
    assert_eq!(status, 200);
    assert_eq!(body["count"], 0);
}
