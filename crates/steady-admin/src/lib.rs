//! The admin listener: Kubernetes-style probes, Prometheus metrics and a JSON view of
//! live upstream state, on its own address so it never competes with traffic.
//!
//! # Layout
//!
//! - [`serve`]: binds nothing itself; runs the admin HTTP server on a bound listener.
//! - `route`: maps admin paths to answers (`/livez`, `/readyz`, `/startupz`, `/metrics`,
//!   `/api/upstreams`, `/`).

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use steady_proxy::Gateway;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Content type Prometheus expects for the OpenMetrics text format.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Serves the admin API on `listener` until `shutdown` fires.
pub async fn serve(listener: TcpListener, gateway: Arc<Gateway>, shutdown: CancellationToken) {
    loop {
        let (stream, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => return,
        };
        let gateway = gateway.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let gateway = gateway.clone();
                async move { Ok::<_, Infallible>(route(&gateway, req)) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn text(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CACHE_CONTROL, "no-store")
        .body(Full::new(body.into()))
        .expect("static response parts are valid")
}

fn route(gateway: &Gateway, req: Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "method not allowed\n",
        );
    }
    match req.uri().path() {
        "/livez" => text(StatusCode::OK, "text/plain", "ok\n"),
        "/startupz" => text(StatusCode::OK, "text/plain", "ok\n"),
        "/readyz" => {
            if gateway.is_ready() {
                text(StatusCode::OK, "text/plain", "ready\n")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "draining\n")
            }
        }
        "/metrics" => {
            // Prometheus asks for OpenMetrics; curl and older tools get the classic text.
            let wants_openmetrics = req
                .headers()
                .get_all(header::ACCEPT)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .any(|v| v.contains("application/openmetrics-text"));
            if wants_openmetrics {
                text(StatusCode::OK, OPENMETRICS, gateway.metrics().encode())
            } else {
                text(
                    StatusCode::OK,
                    PROMETHEUS_TEXT,
                    gateway.metrics().encode_prometheus(),
                )
            }
        }
        "/api/upstreams" => {
            let body = serde_json::to_vec_pretty(&upstreams_json(gateway)).unwrap_or_default();
            text(StatusCode::OK, "application/json", body)
        }
        "/" => text(
            StatusCode::OK,
            "text/plain",
            "steady admin\n  /livez  /readyz  /startupz  /metrics  /api/upstreams\n",
        ),
        _ => text(
            StatusCode::NOT_FOUND,
            "application/json",
            "{\"error\":\"not found\"}\n",
        ),
    }
}

/// Live state of every upstream and endpoint, as served on `/api/upstreams`.
pub fn upstreams_json(gateway: &Gateway) -> serde_json::Value {
    let now = std::time::Instant::now();
    let upstreams: Vec<serde_json::Value> = gateway
        .upstreams()
        .iter()
        .map(|u| {
            let reports = gateway.health_reports(&u.name);
            let endpoints: Vec<serde_json::Value> = u
                .endpoints()
                .endpoints()
                .iter()
                .map(|e| {
                    let health = reports.as_ref().and_then(|r| {
                        r.iter().find(|(a, _)| *a == e.addr()).map(|(_, h)| {
                            serde_json::json!({
                                "healthy": h.healthy,
                                "draining": h.draining,
                                "load": h.load,
                                "last_error": h.last_error,
                            })
                        })
                    });
                    serde_json::json!({
                        "health": health,
                        "name": e.name(),
                        "address": e.addr().to_string(),
                        "weight": e.weight(),
                        "available": e.is_available(),
                        "ejected": e.is_ejected(),
                        "in_flight": e.in_flight(),
                        "ewma_latency_ms": e.ewma_latency(now).as_secs_f64() * 1000.0,
                    })
                })
                .collect();
            serde_json::json!({"name": &*u.name, "endpoints": endpoints})
        })
        .collect();
    serde_json::json!({ "upstreams": upstreams })
}
