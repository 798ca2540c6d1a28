//! Probes and the runner against real backends on `127.0.0.1:0`.

use std::convert::Infallible;
use std::future::{ready, Future};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use steady_balance::Endpoint;
use steady_health::{
    grpc, probe, ActiveHealth, Check, Checker, HealthHandle, Initial, ProbeError, Transition,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

type Reply = Response<Full<Bytes>>;
type Handler = Arc<dyn Fn(&Request<Incoming>) -> Reply + Send + Sync>;

/// Serves HTTP/1.1 on a fresh port, answering every request with `handler`.
async fn http_backend(handler: Handler) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let handler = Arc::clone(&handler);
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let reply = handler(&req);
                    async move { Ok::<_, Infallible>(reply) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// A backend answering with the status in `status` and recording request heads.
struct StatusBackend {
    addr: SocketAddr,
    status: Arc<AtomicU16>,
    seen: Arc<Mutex<Vec<(String, HeaderMap)>>>,
}

async fn status_backend() -> StatusBackend {
    let status = Arc::new(AtomicU16::new(200));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (s, log) = (Arc::clone(&status), Arc::clone(&seen));
    let addr = http_backend(Arc::new(move |req: &Request<Incoming>| {
        log.lock()
            .unwrap()
            .push((req.uri().to_string(), req.headers().clone()));
        Response::builder()
            .status(s.load(Ordering::SeqCst))
            .body(Full::new(Bytes::from_static(b"status: ok")))
            .unwrap()
    }))
    .await;
    StatusBackend { addr, status, seen }
}

fn endpoint(addr: SocketAddr) -> Arc<Endpoint> {
    Arc::new(Endpoint::new(
        format!("backend.internal:{}", addr.port()),
        addr,
        1,
        Instant::now(),
    ))
}

fn http_check(path: &str) -> Check {
    Check::Http {
        path: path.into(),
        expect_status: vec![200],
        host: None,
        body_contains: None,
    }
}

fn config(kind: Check, healthy: u32, unhealthy: u32) -> ActiveHealth {
    let mut config = ActiveHealth::new(kind);
    config.healthy_threshold = healthy;
    config.unhealthy_threshold = unhealthy;
    config.validate().unwrap();
    config
}

/// A port nothing listens on (bound, then released).
async fn refused_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

#[tokio::test]
async fn http_check_follows_status_through_thresholds() {
    let backend = status_backend().await;
    let endpoint = endpoint(backend.addr);
    let mut checker = Checker::new(
        Arc::clone(&endpoint),
        &config(http_check("/healthz?full=1"), 2, 3),
    );

    assert_eq!(checker.check_once().await, None);
    let report = checker.report();
    assert!(report.healthy && report.last_error.is_none() && report.last_check.is_some());

    backend.status.store(500, Ordering::SeqCst);
    assert_eq!(checker.check_once().await, None);
    assert_eq!(checker.check_once().await, None);
    assert!(
        endpoint.is_available(),
        "two failures are under the threshold"
    );
    assert_eq!(
        checker.check_once().await,
        Some(Transition::BecameUnhealthy)
    );
    assert!(!endpoint.is_available());
    let error = checker.report().last_error.clone().unwrap();
    assert!(error.contains("500"), "{error}");

    backend.status.store(200, Ordering::SeqCst);
    assert_eq!(checker.check_once().await, None);
    assert!(!endpoint.is_available());
    assert_eq!(checker.check_once().await, Some(Transition::BecameHealthy));
    assert!(endpoint.is_available() && checker.report().healthy);

    let seen = backend.seen.lock().unwrap();
    assert_eq!(seen.len(), 6, "one request per probe");
    let (path, headers) = &seen[0];
    assert_eq!(path, "/healthz?full=1");
    assert_eq!(headers["host"], endpoint.name());
    assert_eq!(headers["user-agent"], "steady-health");
    assert_eq!(headers["connection"], "close");
}

#[tokio::test]
async fn http_check_sends_configured_host_and_matches_body() {
    let backend = status_backend().await;
    let check = |needle: &str| Check::Http {
        path: "/".into(),
        expect_status: vec![204, 200],
        host: Some("app.internal".into()),
        body_contains: Some(needle.into()),
    };
    let timeout = Duration::from_secs(5);
    let passed = probe(&check("ok"), backend.addr, "ignored:80", timeout).await;
    assert!(passed.result.is_ok(), "{:?}", passed.result);
    assert_eq!(backend.seen.lock().unwrap()[0].1["host"], "app.internal");

    let failed = probe(&check("ready"), backend.addr, "ignored:80", timeout).await;
    assert!(matches!(failed.result, Err(ProbeError::BodyMismatch(ref s)) if s == "ready"));

    backend.status.store(204, Ordering::SeqCst);
    let passed = probe(&http_check("/"), backend.addr, "a:80", timeout).await;
    assert!(matches!(
        passed.result,
        Err(ProbeError::Status(StatusCode::NO_CONTENT))
    ));
}

#[tokio::test(start_paused = true)]
async fn stalled_backend_times_out() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // Accepts and reads nothing, answers nothing.
    let held = tokio::spawn(async move {
        let mut streams = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            streams.push(stream);
        }
    });
    let mut config = config(http_check("/healthz"), 1, 1);
    config.timeout = Duration::from_millis(500);
    let endpoint = endpoint(addr);
    let mut checker = Checker::new(Arc::clone(&endpoint), &config);
    assert_eq!(
        checker.check_once().await,
        Some(Transition::BecameUnhealthy)
    );
    assert_eq!(
        checker.report().last_error.as_deref(),
        Some("no answer within 500ms")
    );
    assert!(!endpoint.is_available());
    held.abort();
}

#[tokio::test]
async fn tcp_check_passes_on_listen_and_fails_when_refused() {
    let backend = status_backend().await;
    let timeout = Duration::from_secs(5);
    assert!(probe(&Check::Tcp, backend.addr, "a:80", timeout)
        .await
        .result
        .is_ok());

    let refused = refused_addr().await;
    let outcome = probe(&Check::Tcp, refused, "a:80", timeout).await;
    assert!(
        matches!(outcome.result, Err(ProbeError::Connect(_))),
        "{:?}",
        outcome.result
    );

    let endpoint = endpoint(refused);
    let mut checker = Checker::new(Arc::clone(&endpoint), &config(Check::Tcp, 1, 2));
    assert_eq!(checker.check_once().await, None);
    assert_eq!(
        checker.check_once().await,
        Some(Transition::BecameUnhealthy)
    );
    assert!(checker
        .report()
        .last_error
        .as_deref()
        .unwrap()
        .starts_with("connect: "));
}

/// Status, headers and body of one scripted answer.
type Scripted = (u16, Vec<(&'static str, &'static str)>, &'static str);

#[tokio::test]
async fn load_and_drain_reports() {
    // Each request takes the next scripted answer; the last one repeats.
    let script: Vec<Scripted> = vec![
        (200, vec![("x-steady-load", "0.73")], "ok"),
        (
            200,
            vec![("content-type", "application/json")],
            r#"{"load": 0.2, "drain": true}"#,
        ),
        (200, vec![], "ok"),
        (
            503,
            vec![("x-steady-load", "0.9"), ("x-steady-drain", "0")],
            "busy",
        ),
        (
            200,
            vec![
                ("x-steady-drain", "true"),
                ("content-type", "application/json"),
            ],
            r#"{"drain": false}"#,
        ),
    ];
    let next = Arc::new(AtomicUsize::new(0));
    let addr = http_backend(Arc::new(move |_req: &Request<Incoming>| {
        let i = next.fetch_add(1, Ordering::SeqCst).min(script.len() - 1);
        let (status, headers, body) = &script[i];
        let mut reply = Response::builder().status(*status);
        for (k, v) in headers {
            reply = reply.header(*k, *v);
        }
        reply
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .unwrap()
    }))
    .await;
    let endpoint = endpoint(addr);
    let mut checker = Checker::new(Arc::clone(&endpoint), &config(http_check("/"), 1, 3));

    checker.check_once().await;
    assert_eq!(checker.report().load, Some(0.73));
    assert_eq!(
        endpoint.load_scale(),
        0.27,
        "a reported load scales the weight"
    );
    assert!(!checker.report().draining);

    checker.check_once().await;
    let report = checker.report().clone();
    assert_eq!(
        (report.load, report.draining, report.healthy),
        (Some(0.2), true, true)
    );
    assert!(
        !endpoint.is_available(),
        "a draining endpoint takes no new traffic"
    );

    checker.check_once().await;
    assert!(
        checker.report().draining,
        "a response that says nothing keeps the drain"
    );
    assert_eq!(checker.report().load, Some(0.2), "and keeps the last load");

    // A failing response still carries reports.
    checker.check_once().await;
    let report = checker.report().clone();
    assert_eq!(
        (report.load, report.draining, report.healthy),
        (Some(0.9), false, true)
    );
    assert!(
        endpoint.is_available(),
        "healthy (one failure of three) and no longer draining"
    );

    // The header wins over the body.
    checker.check_once().await;
    assert!(checker.report().draining);
    assert!(!endpoint.is_available());
}

/// Serves `grpc.health.v1.Health/Check` over h2c: service `""` is SERVING, `down` is
/// NOT_SERVING, anything else gets a trailers-only NOT_FOUND.
async fn grpc_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = service_fn(|req: Request<Incoming>| async move {
                    assert_eq!(req.uri().path(), grpc::CHECK_PATH);
                    assert_eq!(req.headers()["content-type"], "application/grpc");
                    assert_eq!(req.headers()["te"], "trailers");
                    let body = req.into_body().collect().await.unwrap().to_bytes();
                    let service = match &body[..] {
                        [0, 0, 0, 0, 0] => String::new(),
                        [0, _, _, _, _, 0x0a, _, name @ ..] => {
                            String::from_utf8(name.to_vec()).unwrap()
                        }
                        other => panic!("unexpected request {other:?}"),
                    };
                    let reply = Response::builder().header("content-type", "application/grpc");
                    let status = match service.as_str() {
                        "" => 1u8,
                        "down" => 2,
                        _ => {
                            let reply = reply
                                .header("grpc-status", "5")
                                .header("grpc-message", "unknown service")
                                .body(Full::new(Bytes::new()).with_trailers(ready(None)))
                                .unwrap();
                            return Ok::<_, Infallible>(reply);
                        }
                    };
                    let frame = Bytes::from(vec![0, 0, 0, 0, 2, 0x08, status]);
                    let mut trailers = HeaderMap::new();
                    trailers.insert("grpc-status", "0".parse().unwrap());
                    let body = Full::new(frame).with_trailers(ready(Some(Ok(trailers))));
                    Ok(reply.body(body).unwrap())
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn grpc_health_check() {
    let addr = grpc_backend().await;
    let timeout = Duration::from_secs(5);
    let grpc = |service: &str| Check::Grpc {
        service: service.into(),
    };
    let serving = probe(&grpc(""), addr, "backend.internal:50051", timeout).await;
    assert!(serving.result.is_ok(), "{:?}", serving.result);

    let down = probe(&grpc("down"), addr, "backend.internal:50051", timeout).await;
    assert!(
        matches!(down.result, Err(ProbeError::NotServing(2))),
        "{:?}",
        down.result
    );
    assert_eq!(
        down.result.unwrap_err().to_string(),
        "health status NOT_SERVING"
    );

    let unknown = probe(
        &grpc("app.v1.Missing"),
        addr,
        "not a valid authority",
        timeout,
    )
    .await;
    let error = unknown.result.unwrap_err().to_string();
    assert_eq!(error, "grpc-status 5: unknown service");

    // An HTTP/1-only server fails the check instead of hanging.
    let http1 = status_backend().await;
    let outcome = probe(&grpc(""), http1.addr, "a:80", timeout).await;
    assert!(
        matches!(outcome.result, Err(ProbeError::Http(_))),
        "{:?}",
        outcome.result
    );
}

/// Polls `cond` every 10 ms for up to 5 s.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn report_of(handle: &HealthHandle, addr: SocketAddr) -> steady_health::HealthReport {
    handle
        .reports()
        .into_iter()
        .find(|(a, _)| *a == addr)
        .unwrap()
        .1
}

async fn within<F: Future>(future: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(5), future)
        .await
        .expect("finished in time")
}

#[tokio::test]
async fn runner_checks_every_endpoint_until_shutdown() {
    let live = status_backend().await;
    let dead = refused_addr().await;
    let (live_ep, dead_ep) = (endpoint(live.addr), endpoint(dead));
    let mut config = config(http_check("/healthz"), 1, 1);
    config.interval = Duration::from_millis(100);
    config.timeout = Duration::from_millis(90);
    config.initial = Initial::Unhealthy;
    config.validate().unwrap();

    let shutdown = CancellationToken::new();
    let handle = steady_health::spawn(
        vec![Arc::clone(&live_ep), Arc::clone(&dead_ep)],
        config,
        shutdown.clone(),
    );
    assert!(
        !live_ep.is_available() && !dead_ep.is_available(),
        "initial: unhealthy"
    );
    let reports = handle.reports();
    assert_eq!(reports.len(), 2);
    assert!(reports.iter().all(|(_, r)| r.last_check.is_none()));

    eventually("the first round is done", || handle.first_round_done()).await;
    eventually("the live endpoint is up", || live_ep.is_available()).await;
    let dead_report = report_of(&handle, dead);
    assert!(!dead_report.healthy && dead_report.last_check.is_some());
    assert!(dead_report.last_error.unwrap().starts_with("connect: "));
    assert!(!dead_ep.is_available());

    live.status.store(500, Ordering::SeqCst);
    eventually("the failing endpoint is out", || !live_ep.is_available()).await;
    assert!(!report_of(&handle, live.addr).healthy);
    live.status.store(200, Ordering::SeqCst);
    eventually("the endpoint is back", || live_ep.is_available()).await;

    shutdown.cancel();
    within(handle.stopped()).await;
    // A request written just before the cancel may still reach the backend.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let probes = live.seen.lock().unwrap().len();
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(
        live.seen.lock().unwrap().len(),
        probes,
        "no probes after shutdown"
    );
}

#[tokio::test(start_paused = true)]
async fn runner_with_no_endpoints_is_ready_and_stops() {
    let shutdown = CancellationToken::new();
    let handle = steady_health::spawn(Vec::new(), ActiveHealth::new(Check::Tcp), shutdown.clone());
    assert!(handle.first_round_done());
    assert!(handle.reports().is_empty());
    shutdown.cancel();
    within(handle.stopped()).await;
}

#[tokio::test(start_paused = true)]
async fn resumed_checkers_keep_the_old_verdicts_of_endpoints_that_stay() {
    let (kept, added) = (refused_addr().await, refused_addr().await);
    let (kept_ep, added_ep) = (endpoint(kept), endpoint(added));
    // The report of a checker that saw `kept` fail, as a reload would hand it over.
    let before = steady_health::HealthReport {
        healthy: false,
        load: None,
        draining: false,
        last_error: Some("connect: refused".into()),
        last_check: Some(tokio::time::Instant::now().into_std()),
        passes: 0,
        failures: 3,
    };
    let mut config = config(Check::Tcp, 2, 3);
    config.interval = Duration::from_secs(3600);
    config.initial = Initial::Healthy;
    let shutdown = CancellationToken::new();
    let handle = steady_health::spawn_resuming(
        vec![Arc::clone(&kept_ep), Arc::clone(&added_ep)],
        config,
        shutdown.clone(),
        &[(kept, before.clone())],
    );
    assert!(!kept_ep.is_available(), "the failed endpoint stays out");
    assert_eq!(report_of(&handle, kept), before);
    assert!(
        added_ep.is_available(),
        "a new endpoint starts from `initial`"
    );
    assert!(report_of(&handle, added).last_check.is_none());
    assert!(
        !handle.first_round_done(),
        "the new endpoint is not checked yet"
    );
    shutdown.cancel();
    within(handle.stopped()).await;
}
