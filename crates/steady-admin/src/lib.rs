//! The admin listener: Kubernetes-style probes, Prometheus metrics, a JSON view of
//! live upstream state and recent events, and a live dashboard, on its own address so
//! it never competes with traffic.
//!
//! # Layout
//!
//! - [`serve`]: binds nothing itself; runs the admin HTTP server on a bound listener.
//! - `route`: maps admin paths to answers (`/livez`, `/readyz`, `/startupz`, `/metrics`,
//!   `/api/upstreams`, `/api/routes`, `/api/slos`, `/api/events`, `/dashboard`, `/`).
//! - `routes`: `/api/routes` (golden signals per route) and
//!   `/api/routes/NAME/latency` (the full latency distribution, JSON or `.hgrm`).
//! - [`upstreams_json`] and [`events_json`]: the JSON of `/api/upstreams` and
//!   `/api/events` (newest first).
//! - `assets/` (embedded with `include_str!`, no CDN): `dashboard.html`, `.css` and
//!   `.js`, the page served on `/dashboard` that polls the JSON API every second.
//! - `reload`: `POST /reload` reloads the config file, as SIGHUP does, and answers
//!   with what changed or why the file was refused.

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use steady_proxy::Gateway;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

mod routes;

/// The dashboard page and its script and style, embedded so the page works offline.
const DASHBOARD_HTML: &str = include_str!("../assets/dashboard.html");
const DASHBOARD_JS: &str = include_str!("../assets/dashboard.js");
const DASHBOARD_CSS: &str = include_str!("../assets/dashboard.css");

/// Content type Prometheus expects for the OpenMetrics text format.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Serves the admin API on `listener` until `shutdown` fires. With `config`, the file
/// the gateway runs from, `POST /reload` reloads it.
pub async fn serve(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    config: Option<PathBuf>,
    shutdown: CancellationToken,
) {
    let config = config.map(Arc::new);
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
        let (gateway, config) = (gateway.clone(), config.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let (gateway, config) = (gateway.clone(), config.clone());
                async move {
                    if req.uri().path() == "/reload" {
                        return Ok::<_, Infallible>(
                            reload(&gateway, config.as_deref(), &req).await,
                        );
                    }
                    Ok::<_, Infallible>(route(&gateway, req))
                }
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
        "/api/routes" => {
            let body =
                serde_json::to_vec_pretty(&routes::routes_json(gateway)).unwrap_or_default();
            text(StatusCode::OK, "application/json", body)
        }
        path if path.starts_with("/api/routes/") && path.ends_with("/latency") => {
            let name = &path["/api/routes/".len()..path.len() - "/latency".len()];
            match routes::latency(gateway, name, req.uri().query()) {
                routes::Latency::Json(v) => text(
                    StatusCode::OK,
                    "application/json",
                    serde_json::to_vec_pretty(&v).unwrap_or_default(),
                ),
                routes::Latency::Hgrm(t) => text(StatusCode::OK, "text/plain; charset=utf-8", t),
                routes::Latency::NotFound(m) => text(
                    StatusCode::NOT_FOUND,
                    "application/json",
                    serde_json::json!({ "error": m }).to_string(),
                ),
                routes::Latency::BadRequest(m) => text(
                    StatusCode::BAD_REQUEST,
                    "application/json",
                    serde_json::json!({ "error": m }).to_string(),
                ),
            }
        }
        "/api/slos" => {
            let views = gateway.slos().views(steady_proxy::slo::unix_now());
            let body = serde_json::to_vec_pretty(&views).unwrap_or_default();
            text(StatusCode::OK, "application/json", body)
        }
        path if path.starts_with("/api/slos/") => {
            let name = &path["/api/slos/".len()..];
            let views = gateway.slos().views(steady_proxy::slo::unix_now());
            match views.iter().find(|v| v.name == name) {
                Some(view) => text(
                    StatusCode::OK,
                    "application/json",
                    serde_json::to_vec_pretty(view).unwrap_or_default(),
                ),
                None => text(
                    StatusCode::NOT_FOUND,
                    "application/json",
                    serde_json::json!({ "error": format!("no SLO is named `{name}`") })
                        .to_string(),
                ),
            }
        }
        "/api/events" => {
            let body = serde_json::to_vec_pretty(&events_json(gateway)).unwrap_or_default();
            text(StatusCode::OK, "application/json", body)
        }
        "/dashboard" | "/dashboard/" => {
            text(StatusCode::OK, "text/html; charset=utf-8", DASHBOARD_HTML)
        }
        "/dashboard/dashboard.js" => text(
            StatusCode::OK,
            "text/javascript; charset=utf-8",
            DASHBOARD_JS,
        ),
        "/dashboard/dashboard.css" => {
            text(StatusCode::OK, "text/css; charset=utf-8", DASHBOARD_CSS)
        }
        "/" => text(
            StatusCode::OK,
            "text/html; charset=utf-8",
            "<!doctype html><title>steady admin</title><h1>steady admin</h1>\n<ul>\n\
             <li><a href=\"/dashboard\">/dashboard</a> live dashboard</li>\n\
             <li><a href=\"/metrics\">/metrics</a></li>\n\
             <li><a href=\"/api/upstreams\">/api/upstreams</a></li>\n\
             <li><a href=\"/api/routes\">/api/routes</a> (and /api/routes/NAME/latency?window=5m[&amp;format=hgrm])</li>\n\
             <li><a href=\"/api/slos\">/api/slos</a> (and /api/slos/NAME): budgets, burn rates, alerts, monthly report</li>\n\
             <li><a href=\"/api/events\">/api/events</a></li>\n\
             <li><a href=\"/livez\">/livez</a> <a href=\"/readyz\">/readyz</a> \
             <a href=\"/startupz\">/startupz</a></li>\n<li>POST /reload</li>\n</ul>\n",
        ),
        _ => text(
            StatusCode::NOT_FOUND,
            "application/json",
            "{\"error\":\"not found\"}\n",
        ),
    }
}

/// `POST /reload`: reloads the config file; 200 with what changed, or 400 with why the
/// file was refused (the running config stays).
async fn reload(
    gateway: &Gateway,
    config: Option<&PathBuf>,
    req: &Request<Incoming>,
) -> Response<Full<Bytes>> {
    if req.method() != Method::POST {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "use POST /reload\n",
        );
    }
    let Some(path) = config else {
        return text(
            StatusCode::NOT_FOUND,
            "application/json",
            "{\"error\":\"no config file to reload\"}\n",
        );
    };
    tracing::info!(path = %path.display(), "reload asked for on the admin listener");
    let (status, body) = match gateway.reload_file(path).await {
        Ok(summary) => (
            StatusCode::OK,
            serde_json::json!({
                "status": "applied",
                "listeners_added": summary.listeners_added,
                "listeners_removed": summary.listeners_removed,
                "listeners_kept": summary.listeners_kept,
                "upstreams_added": summary.upstreams_added,
                "upstreams_removed": summary.upstreams_removed,
                "upstreams_changed": summary.upstreams_changed,
                "upstreams_kept": summary.upstreams_kept,
                "endpoints_kept": summary.endpoints_kept,
                "needs_restart": summary.needs_restart,
            }),
        ),
        Err(e) => (
            StatusCode::BAD_REQUEST,
            serde_json::json!({"status": "rejected", "error": e.to_string()}),
        ),
    };
    let body = serde_json::to_vec_pretty(&body).unwrap_or_default();
    text(status, "application/json", body)
}

/// Recent events (health flips, ejections, readmissions, reloads, drains), newest
/// first, as served on `/api/events`.
pub fn events_json(gateway: &Gateway) -> serde_json::Value {
    let events = gateway.events();
    serde_json::json!({ "capacity": events.capacity(), "events": events.recent() })
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
                        "effective_weight": e.effective_weight(),
                        "zone": e.locality().zone.as_deref(),
                        "region": e.locality().region.as_deref(),
                        "priority": e.locality().priority,
                        "available": e.is_available(),
                        "ejected": e.is_ejected(),
                        "in_flight": e.in_flight(),
                        "ewma_latency_ms": e.ewma_latency(now).as_secs_f64() * 1000.0,
                    })
                })
                .collect();
            let tiers: Vec<serde_json::Value> = u
                .endpoints()
                .tier_shares()
                .iter()
                .map(|t| {
                    serde_json::json!({
                        "priority": t.priority,
                        "proximity": t.proximity.as_str(),
                        "endpoints": t.endpoints,
                        "available": t.available,
                        "share": t.share,
                    })
                })
                .collect();
            serde_json::json!({"name": &*u.name, "endpoints": endpoints, "locality_tiers": tiers})
        })
        .collect();
    serde_json::json!({ "upstreams": upstreams })
}
