//! Zone failover end to end: the local zone's endpoints fail their health checks,
//! traffic moves to the other zone, and moves back when they recover.

use std::time::Duration;

use crate::common::{get, start_yaml};
use steady_testkit::{Backend, Fault};

/// Backends `a0`, `a1` in zone `eu-a` (the gateway's), `b0`, `b1` in `eu-b`, and `p0`
/// in `eu-a` at priority 1.
async fn fleet() -> (Vec<Backend>, String) {
    let mut backends = Vec::new();
    for name in ["a0", "a1", "b0", "b1", "p0"] {
        backends.push(Backend::start(name).await);
    }
    let place = |name: &str| match name {
        "a0" | "a1" => "zone: eu-a, region: eu",
        "b0" | "b1" => "zone: eu-b, region: eu",
        _ => "zone: eu-a, region: eu, priority: 1",
    };
    let endpoints: String = backends
        .iter()
        .map(|b| format!("      - {{address: {}, {}}}\n", b.addr(), place(b.name())))
        .collect();
    let yaml = format!(
        "runtime:
  locality: {{region: eu, zone: eu-a}}
listeners:
  - name: web
    bind: 127.0.0.1:0
routes:
  - name: all
    listener: web
    upstream: app
    timeout: 2s
    retries: {{attempts: 3, on: [503], backoff: 1ms}}
upstreams:
  - name: app
    balance: round-robin
    connect_timeout: 500ms
    health:
      active:
        http: {{path: /healthz}}
        interval: 50ms
        timeout: 40ms
        healthy_threshold: 1
        unhealthy_threshold: 1
    endpoints:
{endpoints}"
    );
    (backends, yaml)
}

/// Sends `n` GETs and returns how many each backend (by name) answered.
async fn spread(addr: std::net::SocketAddr, n: usize) -> std::collections::BTreeMap<String, usize> {
    let mut counts = std::collections::BTreeMap::new();
    for _ in 0..n {
        let answer = get(addr, "/").await;
        assert_eq!(answer.status, 200, "no request fails during failover");
        let name = answer.json()["backend"].as_str().unwrap().to_string();
        *counts.entry(name).or_insert(0) += 1;
    }
    counts
}

/// Polls (bounded) until `n` requests land only on backends in `names`.
async fn until_only(addr: std::net::SocketAddr, names: &[&str]) {
    let mut last = Default::default();
    for _ in 0..100 {
        last = spread(addr, 20).await;
        if last.keys().all(|k| names.contains(&k.as_str())) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("traffic never settled on {names:?}: last spread {last:?}");
}

#[tokio::test]
async fn local_zone_loss_moves_traffic_and_recovery_brings_it_back() {
    let (backends, yaml) = fleet().await;
    let gw = start_yaml(&yaml).await;

    // Healthy: only the local zone at priority 0 serves.
    let counts = spread(gw.addr, 40).await;
    assert_eq!(
        counts.keys().collect::<Vec<_>>(),
        ["a0", "a1"],
        "{counts:?}"
    );

    // The local zone fails its checks: the other zone takes the traffic, not priority 1.
    backends[0].set_fault(Fault::Status(503));
    backends[1].set_fault(Fault::Status(503));
    until_only(gw.addr, &["b0", "b1"]).await;
    let tiers = gw.gateway.upstreams()[0].endpoints().tier_shares();
    assert_eq!(tiers[0].available, 0, "{tiers:?}");

    // The whole of priority 0 fails: priority 1 serves.
    backends[2].set_fault(Fault::Status(503));
    backends[3].set_fault(Fault::Status(503));
    until_only(gw.addr, &["p0"]).await;

    // Recovery: traffic goes home.
    for b in &backends[..4] {
        b.set_fault(Fault::None);
    }
    until_only(gw.addr, &["a0", "a1"]).await;
}
