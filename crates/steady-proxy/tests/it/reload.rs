//! Hot reload: new routes and upstreams apply, removed ones go, endpoints that stay
//! keep their state, a config that cannot apply changes nothing, and reloading under
//! load fails no request.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::common::{get, start_yaml};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use steady_balance::Endpoint;
use steady_proxy::{Gateway, ReloadError};
use steady_testkit::{Backend, Fault};

fn parse(yaml: &str) -> steady_config::Config {
    steady_config::parse(yaml, "<test>").unwrap_or_else(|d| panic!("config:\n{d}"))
}

/// A listener `web` on `bind` with one route per `(name, path_prefix, upstream)` and one
/// upstream per `(name, extra, endpoints)`.
fn config(
    bind: &str,
    routes: &[(&str, &str, &str)],
    upstreams: &[(&str, &str, &[SocketAddr])],
) -> String {
    let mut yaml = format!("listeners:\n  - name: web\n    bind: {bind}\nroutes:\n");
    for (name, prefix, upstream) in routes {
        yaml += &format!(
            "  - name: {name}\n    listener: web\n    match: {{path_prefix: {prefix}}}\n    upstream: {upstream}\n    timeout: 5s\n"
        );
    }
    yaml += "upstreams:\n";
    for (name, extra, endpoints) in upstreams {
        yaml += &format!("  - name: {name}\n    connect_timeout: 500ms\n{extra}\n    endpoints:\n");
        for e in *endpoints {
            yaml += &format!("      - address: {e}\n");
        }
    }
    yaml
}

/// The backend that answered a GET of `path`, or the status if it was not a 200.
async fn who(addr: SocketAddr, path: &str) -> Result<String, u16> {
    let a = get(addr, path).await;
    if a.status != 200 {
        return Err(a.status);
    }
    Ok(a.json()["backend"].as_str().unwrap().to_string())
}

/// The live endpoint of upstream `upstream` at `addr`.
fn endpoint(gateway: &Gateway, upstream: &str, addr: SocketAddr) -> Arc<Endpoint> {
    let upstreams = gateway.upstreams();
    let u = upstreams
        .iter()
        .find(|u| &*u.name == upstream)
        .expect("upstream");
    let set = u.endpoints();
    set.endpoints()
        .iter()
        .find(|e| e.addr() == addr)
        .cloned()
        .expect("endpoint")
}

#[tokio::test]
async fn a_reload_adds_and_removes_routes_and_upstreams() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let gw = start_yaml(&config(
        "127.0.0.1:0",
        &[("ra", "/a", "ua")],
        &[("ua", "", &[a.addr()])],
    ))
    .await;
    assert_eq!(who(gw.addr, "/a").await, Ok("a".into()));
    assert_eq!(who(gw.addr, "/b").await, Err(404));

    // The bind stays `127.0.0.1:0`: the listener keeps its socket and port.
    let next = config(
        "127.0.0.1:0",
        &[("rb", "/b", "ub")],
        &[("ub", "", &[b.addr()])],
    );
    let summary = gw
        .gateway
        .reload(&parse(&next))
        .await
        .expect("reload applies");
    assert_eq!(summary.listeners_kept, ["web"]);
    assert_eq!(summary.upstreams_added, ["ub"]);
    assert_eq!(summary.upstreams_removed, ["ua"]);
    assert_eq!(gw.gateway.listener_addr("web"), Some(gw.addr));

    assert_eq!(who(gw.addr, "/b").await, Ok("b".into()));
    assert_eq!(who(gw.addr, "/a").await, Err(404));
    let names: Vec<String> = gw
        .gateway
        .upstreams()
        .iter()
        .map(|u| u.name.to_string())
        .collect();
    assert_eq!(names, ["ub"]);
    let metrics = gw.gateway.metrics().encode();
    assert!(
        metrics.contains("steady_config_reloads_total{result=\"success\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("steady_config_last_reload_successful 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "steady_endpoint_available{{upstream=\"ub\",endpoint=\"{}\"}} 1",
            b.addr()
        )),
        "per-upstream series follow the new upstreams: {metrics}"
    );
    assert!(!metrics.contains("upstream=\"ua\",endpoint"), "{metrics}");
}

#[tokio::test]
async fn changed_endpoints_get_and_lose_traffic_and_kept_ones_are_the_same() {
    let bs = [
        Backend::start("b0").await,
        Backend::start("b1").await,
        Backend::start("b2").await,
    ];
    let gw = start_yaml(&config(
        "127.0.0.1:0",
        &[("all", "/", "app")],
        &[("app", "", &[bs[0].addr(), bs[1].addr()])],
    ))
    .await;
    let kept = endpoint(&gw.gateway, "app", bs[1].addr());
    for _ in 0..4 {
        who(gw.addr, "/").await.unwrap();
    }
    let b0_before = bs[0].hits();
    assert!(b0_before > 0);

    let next = config(
        "127.0.0.1:0",
        &[("all", "/", "app")],
        &[("app", "", &[bs[1].addr(), bs[2].addr()])],
    );
    let summary = gw
        .gateway
        .reload(&parse(&next))
        .await
        .expect("reload applies");
    assert_eq!(summary.upstreams_changed, ["app"]);
    assert_eq!(summary.endpoints_kept, 1);

    let mut seen = std::collections::HashMap::<String, usize>::new();
    for _ in 0..20 {
        *seen.entry(who(gw.addr, "/").await.unwrap()).or_default() += 1;
    }
    assert_eq!(seen.get("b1"), Some(&10), "{seen:?}");
    assert_eq!(seen.get("b2"), Some(&10), "{seen:?}");
    assert_eq!(
        bs[0].hits(),
        b0_before,
        "a removed endpoint gets no traffic"
    );
    assert!(
        Arc::ptr_eq(&kept, &endpoint(&gw.gateway, "app", bs[1].addr())),
        "an endpoint that stays is the same object, with its state"
    );
}

#[tokio::test]
async fn an_ejected_endpoint_stays_ejected_across_a_reload() {
    let bs = [
        Backend::start("b0").await,
        Backend::start("b1").await,
        Backend::start("b2").await,
    ];
    let passive = "    health:\n      passive: {consecutive_failures: 3, base_ejection: 60s, max_ejection_percent: 50}";
    let gw = start_yaml(&config(
        "127.0.0.1:0",
        &[("all", "/", "app")],
        &[("app", passive, &[bs[0].addr(), bs[1].addr()])],
    ))
    .await;
    bs[0].set_fault(Fault::Status(500));
    let ejected = endpoint(&gw.gateway, "app", bs[0].addr());
    for _ in 0..20 {
        if ejected.is_ejected() {
            break;
        }
        let _ = who(gw.addr, "/").await;
    }
    assert!(ejected.is_ejected(), "b0 ejected after failing");
    bs[0].set_fault(Fault::None);

    // The upstream changes (a third endpoint); its passive settings do not.
    let next = config(
        "127.0.0.1:0",
        &[("all", "/", "app")],
        &[("app", passive, &[bs[0].addr(), bs[1].addr(), bs[2].addr()])],
    );
    gw.gateway
        .reload(&parse(&next))
        .await
        .expect("reload applies");
    let after = endpoint(&gw.gateway, "app", bs[0].addr());
    assert!(Arc::ptr_eq(&ejected, &after));
    assert!(after.is_ejected(), "still ejected after the reload");
    let hits = bs[0].hits();
    let mut seen = std::collections::HashSet::new();
    for _ in 0..10 {
        seen.insert(who(gw.addr, "/").await.unwrap());
    }
    assert_eq!(bs[0].hits(), hits, "the ejected endpoint gets no traffic");
    assert!(seen.contains("b2"), "the new endpoint does: {seen:?}");
    let metrics = gw.gateway.metrics().encode();
    assert!(
        metrics.contains("steady_outlier_ejections_total{upstream=\"app\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn an_unhealthy_endpoint_stays_unhealthy_across_a_reload() {
    let bs = [
        Backend::start("b0").await,
        Backend::start("b1").await,
        Backend::start("b2").await,
    ];
    let active = |interval: &str| {
        format!("    health:\n      active: {{http: {{path: /}}, interval: {interval}, timeout: 80ms, unhealthy_threshold: 1, initial: healthy}}")
    };
    let gw = start_yaml(&config(
        "127.0.0.1:0",
        &[("all", "/", "app")],
        &[("app", &active("100ms"), &[bs[0].addr(), bs[1].addr()])],
    ))
    .await;
    bs[0].set_fault(Fault::Status(500));
    let sick = endpoint(&gw.gateway, "app", bs[0].addr());
    for _ in 0..200 {
        if !sick.is_healthy() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!sick.is_healthy(), "b0 failed its checks");

    // New checkers with a long interval: had they started over from `initial: healthy`,
    // b0 would be back in rotation until their first probe.
    let next = config(
        "127.0.0.1:0",
        &[("all", "/", "app")],
        &[(
            "app",
            &active("1h"),
            &[bs[0].addr(), bs[1].addr(), bs[2].addr()],
        )],
    );
    gw.gateway
        .reload(&parse(&next))
        .await
        .expect("reload applies");
    assert!(Arc::ptr_eq(
        &sick,
        &endpoint(&gw.gateway, "app", bs[0].addr())
    ));
    assert!(!sick.is_healthy(), "still unhealthy after the reload");
    let reports = gw.gateway.health_reports("app").expect("health reports");
    let b0 = reports
        .iter()
        .find(|(a, _)| *a == bs[0].addr())
        .expect("b0 report");
    assert!(!b0.1.healthy && b0.1.last_error.is_some(), "{b0:?}");
    let hits = bs[0].hits();
    for _ in 0..10 {
        who(gw.addr, "/").await.unwrap();
    }
    assert_eq!(bs[0].hits(), hits, "the unhealthy endpoint gets no traffic");

    // Without active checks nothing would bring it back: it is marked up again.
    let unchecked = config(
        "127.0.0.1:0",
        &[("all", "/", "app")],
        &[("app", "", &[bs[0].addr(), bs[1].addr()])],
    );
    gw.gateway
        .reload(&parse(&unchecked))
        .await
        .expect("reload applies");
    assert!(sick.is_healthy(), "no checks, no verdict");
    assert!(gw.gateway.health_reports("app").is_none());
}

#[tokio::test]
async fn an_unchanged_upstream_is_kept_whole() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let upstreams: [(&str, &str, &[SocketAddr]); 2] =
        [("ua", "", &[a.addr()]), ("ub", "", &[b.addr()])];
    let gw = start_yaml(&config("127.0.0.1:0", &[("ra", "/a", "ua")], &upstreams)).await;
    let before = gw.gateway.upstreams();
    let next = config(
        "127.0.0.1:0",
        &[("ra", "/a", "ua"), ("rb", "/b", "ub")],
        &upstreams,
    );
    let summary = gw
        .gateway
        .reload(&parse(&next))
        .await
        .expect("reload applies");
    assert_eq!(summary.upstreams_kept, ["ua", "ub"]);
    assert!(summary.upstreams_changed.is_empty() && summary.upstreams_added.is_empty());
    let after = gw.gateway.upstreams();
    assert!(before
        .iter()
        .zip(after.iter())
        .all(|(x, y)| Arc::ptr_eq(x, y)));
    assert_eq!(who(gw.addr, "/b").await, Ok("b".into()));
}

#[tokio::test]
async fn a_config_that_cannot_apply_leaves_the_old_one_running() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let gw = start_yaml(&config(
        "127.0.0.1:0",
        &[("ra", "/a", "ua")],
        &[("ua", "", &[a.addr()])],
    ))
    .await;

    // Another listener on an address in use (bound without SO_REUSEPORT).
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap();
    let mut next = config(
        "127.0.0.1:0",
        &[("rb", "/b", "ub")],
        &[("ub", "", &[b.addr()])],
    );
    next = next.replacen(
        "routes:\n",
        &format!("  - name: other\n    bind: {taken_addr}\nroutes:\n  - name: ro\n    listener: other\n    upstream: ub\n"),
        1,
    );
    let err = gw
        .gateway
        .reload(&parse(&next))
        .await
        .expect_err("cannot bind");
    let text = err.to_string();
    assert!(matches!(err, ReloadError::Apply(_)), "{err:?}");
    assert!(
        text.contains("listener `other`") && text.contains("cannot bind"),
        "{text}"
    );
    assert_eq!(
        who(gw.addr, "/a").await,
        Ok("a".into()),
        "the old routes still serve"
    );
    assert_eq!(
        who(gw.addr, "/b").await,
        Err(404),
        "nothing of the new config applied"
    );
    assert_eq!(gw.gateway.listener_addr("other"), None);
    let names: Vec<String> = gw
        .gateway
        .upstreams()
        .iter()
        .map(|u| u.name.to_string())
        .collect();
    assert_eq!(names, ["ua"]);

    // An invalid config (a route to an upstream that does not exist) says what is wrong.
    let mut bad = parse(&config(
        "127.0.0.1:0",
        &[("ra", "/a", "ua")],
        &[("ua", "", &[a.addr()])],
    ));
    bad.routes[0].upstream = "nope".into();
    let err = gw.gateway.reload(&bad).await.expect_err("invalid");
    assert!(matches!(err, ReloadError::Invalid(_)), "{err:?}");
    assert!(err.to_string().contains("nope"), "{err}");
    assert_eq!(who(gw.addr, "/a").await, Ok("a".into()));

    // A broken file reports file:line:column.
    let dir = std::env::temp_dir().join(format!("steady-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("steady.yaml");
    std::fs::write(&path, "listeners:\n  - name: web\n    bnd: 127.0.0.1:0\n").unwrap();
    let err = gw
        .gateway
        .reload_file(&path)
        .await
        .expect_err("broken file");
    assert!(err.to_string().contains("steady.yaml:3:5"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(who(gw.addr, "/a").await, Ok("a".into()));

    let metrics = gw.gateway.metrics().encode();
    assert!(
        metrics.contains("steady_config_reloads_total{result=\"failure\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("steady_config_reloads_total{result=\"success\"} 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("steady_config_last_reload_successful 0"),
        "{metrics}"
    );
}

/// One keep-alive connection sending `n` GETs in turn; returns how many failed (a
/// status other than 200, or the connection breaking). Signals `opened` after its
/// first answer.
async fn client_loop(addr: SocketAddr, n: usize, opened: tokio::sync::mpsc::Sender<()>) -> usize {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("handshake");
    tokio::spawn(conn);
    let mut failed = 0;
    for i in 0..n {
        let req = http::Request::get("/")
            .header("host", "steady.test")
            .body(Empty::<Bytes>::new())
            .unwrap();
        match send.send_request(req).await {
            Ok(resp) if resp.status() == 200 => {
                if resp.into_body().collect().await.is_err() {
                    failed += 1;
                }
            }
            Ok(_) | Err(_) => failed += 1,
        }
        if i == 0 {
            let _ = opened.send(()).await;
        }
    }
    failed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloading_under_load_fails_no_request() {
    const CONNECTIONS: usize = 4;
    const PER_CONNECTION: usize = 500;
    let (b0, b1) = (Backend::start("b0").await, Backend::start("b1").await);
    let sets: [&[SocketAddr]; 3] = [&[b0.addr()], &[b0.addr(), b1.addr()], &[b1.addr()]];
    let yaml = |i: usize, timeout_extra: &str| {
        config(
            "127.0.0.1:0",
            &[("all", "/", "app"), ("other", "/other", "app")],
            &[("app", timeout_extra, sets[i % sets.len()])],
        )
    };
    let gw = start_yaml(&yaml(0, "")).await;

    let outcome = tokio::time::timeout(Duration::from_secs(60), async {
        let (opened_tx, mut opened) = tokio::sync::mpsc::channel(CONNECTIONS);
        let clients: Vec<_> = (0..CONNECTIONS)
            .map(|_| tokio::spawn(client_loop(gw.addr, PER_CONNECTION, opened_tx.clone())))
            .collect();
        // Every connection is open and has been answered before the first reload.
        for _ in 0..CONNECTIONS {
            opened.recv().await.expect("client started");
        }
        let mut reloads = 0;
        while !clients.iter().all(|c| c.is_finished()) && reloads < 30 {
            reloads += 1;
            // Endpoints move between the two backends, and the upstream's other settings
            // change too, so each reload rebuilds it.
            let extra = format!("    pool_max_idle_per_endpoint: {}", 10 + reloads);
            gw.gateway
                .reload(&parse(&yaml(reloads, &extra)))
                .await
                .expect("reload applies");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mut failed = 0;
        for c in clients {
            failed += c.await.expect("client task");
        }
        (failed, reloads)
    })
    .await;
    let (failed, reloads) = outcome.expect("load finished within 60s");
    assert!(reloads >= 2, "reloads happened during the load: {reloads}");
    assert_eq!(failed, 0, "no request failed across {reloads} reloads");
    assert!(
        b0.hits() > 0 && b1.hits() > 0,
        "both backends served: {} {}",
        b0.hits(),
        b1.hits()
    );
}

#[tokio::test]
async fn a_new_listener_accepts_and_a_removed_one_stops() {
    let a = Backend::start("a").await;
    let base = config(
        "127.0.0.1:0",
        &[("ra", "/", "ua")],
        &[("ua", "", &[a.addr()])],
    );
    let gw = start_yaml(&base).await;
    let with_api = base.replacen(
        "routes:\n",
        "  - name: api\n    bind: 127.0.0.1:0\nroutes:\n  - name: rapi\n    listener: api\n    upstream: ua\n",
        1,
    );
    let summary = gw
        .gateway
        .reload(&parse(&with_api))
        .await
        .expect("reload applies");
    assert_eq!(summary.listeners_added, ["api"]);
    assert_eq!(summary.listeners_kept, ["web"]);
    let api = gw.gateway.listener_addr("api").expect("api is bound");
    assert_eq!(who(api, "/").await, Ok("a".into()));
    assert_eq!(who(gw.addr, "/").await, Ok("a".into()));

    let summary = gw
        .gateway
        .reload(&parse(&base))
        .await
        .expect("reload applies");
    assert_eq!(summary.listeners_removed, ["api"]);
    assert_eq!(gw.gateway.listener_addr("api"), None);
    // The accept loops stop on their own tasks: wait for the socket to close.
    let mut closed = false;
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(api).await.is_err() {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(closed, "the removed listener stopped accepting");
    assert_eq!(who(gw.addr, "/").await, Ok("a".into()));
}

#[tokio::test]
async fn a_tcp_listener_sends_new_connections_to_its_new_upstream() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let tcp = |backend: SocketAddr| {
        format!(
            "listeners:\n  - name: web\n    bind: 127.0.0.1:0\n    protocol: tcp\nroutes:\n  - name: r\n    listener: web\n    upstream: app\nupstreams:\n  - name: app\n    endpoints:\n      - address: {backend}\n"
        )
    };
    let gw = start_yaml(&tcp(a.addr())).await;
    assert_eq!(who(gw.addr, "/").await, Ok("a".into()));
    gw.gateway
        .reload(&parse(&tcp(b.addr())))
        .await
        .expect("reload applies");
    assert_eq!(
        gw.gateway.listener_addr("web"),
        Some(gw.addr),
        "same socket"
    );
    assert_eq!(who(gw.addr, "/").await, Ok("b".into()));
}

#[tokio::test]
async fn raising_max_connections_lets_a_waiting_client_in() {
    let a = Backend::start("a").await;
    let limited = |n: usize| {
        config(
            "127.0.0.1:0",
            &[("ra", "/", "ua")],
            &[("ua", "", &[a.addr()])],
        )
        .replacen(
            "    bind: 127.0.0.1:0\n",
            &format!("    bind: 127.0.0.1:0\n    limits: {{max_connections: {n}}}\n"),
            1,
        )
    };
    let gw = start_yaml(&limited(1)).await;
    // The one allowed connection, kept open.
    let (tx, _rx) = tokio::sync::mpsc::channel(1);
    let first = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(first))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get("/")
        .header("host", "x")
        .body(Empty::<Bytes>::new())
        .unwrap();
    assert_eq!(send.send_request(req).await.unwrap().status(), 200);
    // A second client waits in the backlog until the limit is raised.
    let second = tokio::spawn(client_loop(gw.addr, 1, tx));
    tokio::task::yield_now().await;
    gw.gateway
        .reload(&parse(&limited(2)))
        .await
        .expect("reload applies");
    let failed = tokio::time::timeout(Duration::from_secs(10), second)
        .await
        .expect("the waiting client was served after the reload")
        .unwrap();
    assert_eq!(failed, 0);
    drop(send);
}

#[tokio::test]
async fn admin_and_workers_changes_wait_for_a_restart() {
    let a = Backend::start("a").await;
    let base = config(
        "127.0.0.1:0",
        &[("ra", "/", "ua")],
        &[("ua", "", &[a.addr()])],
    );
    let gw = start_yaml(&base).await;
    let next = format!(
        "runtime: {{workers: 3, drain_timeout: 7s}}\nadmin: {{bind: '127.0.0.1:0'}}\n{base}"
    );
    let summary = gw
        .gateway
        .reload(&parse(&next))
        .await
        .expect("the rest applies");
    assert_eq!(summary.needs_restart, ["admin", "runtime.workers"]);
    let running = gw.gateway.running_config().await;
    assert_eq!(
        running.runtime.workers, None,
        "workers keep their start value"
    );
    assert_eq!(running.admin, None, "so does admin");
    assert_eq!(
        running.runtime.drain_timeout,
        Duration::from_secs(7),
        "drain settings reload"
    );
}

/// A TLS connection to `addr` that trusts only `cert`.
async fn tls_connect(
    addr: SocketAddr,
    cert: &rcgen::CertifiedKey,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    connector.connect(name, tcp).await
}

#[tokio::test]
async fn a_reload_picks_up_rotated_certificates_and_keeps_tls_connections() {
    let dir = std::env::temp_dir().join(format!("steady-reload-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let write = |c: &rcgen::CertifiedKey| {
        std::fs::write(dir.join("cert.pem"), c.cert.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), c.key_pair.serialize_pem()).unwrap();
    };
    let old = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let new = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    write(&old);
    let a = Backend::start("a").await;
    let yaml = config(
        "127.0.0.1:0",
        &[("ra", "/", "ua")],
        &[("ua", "", &[a.addr()])],
    )
    .replacen(
        "    bind: 127.0.0.1:0\n",
        &format!(
            "    bind: 127.0.0.1:0\n    protocol: https\n    tls: {{cert: '{}', key: '{}'}}\n",
            dir.join("cert.pem").display(),
            dir.join("key.pem").display()
        ),
        1,
    );
    let gw = start_yaml(&yaml).await;
    let open = tls_connect(gw.addr, &old)
        .await
        .expect("handshake with the old cert");
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(open))
            .await
            .unwrap();
    tokio::spawn(conn);
    let get = || {
        http::Request::get("/")
            .header("host", "localhost")
            .body(Empty::<Bytes>::new())
            .unwrap()
    };
    assert_eq!(send.send_request(get()).await.unwrap().status(), 200);

    // Rotated in place, same config: the listener keeps its socket, new handshakes get
    // the new certificate.
    write(&new);
    let summary = gw
        .gateway
        .reload(&parse(&yaml))
        .await
        .expect("reload applies");
    assert_eq!(summary.listeners_kept, ["web"]);
    tls_connect(gw.addr, &new)
        .await
        .expect("handshake with the new cert");
    assert!(
        tls_connect(gw.addr, &old).await.is_err(),
        "the old cert is no longer served"
    );
    assert_eq!(
        send.send_request(get()).await.unwrap().status(),
        200,
        "the connection opened before the reload still works"
    );

    // An unusable key is refused, and the certificate in force stays.
    std::fs::write(dir.join("key.pem"), "not a key").unwrap();
    let err = gw.gateway.reload(&parse(&yaml)).await.expect_err("bad key");
    assert!(err.to_string().contains("listener `web`"), "{err}");
    tls_connect(gw.addr, &new)
        .await
        .expect("still the new cert");
    let _ = std::fs::remove_dir_all(&dir);
}
