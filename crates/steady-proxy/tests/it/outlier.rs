//! Outlier detection over an interval, configured from YAML: failure-percentage
//! ejection takes out an endpoint that fails most of its requests, with the
//! consecutive-failure and success-rate rules off.

use std::time::Duration;

use crate::common::{get, simple_config, start_yaml};
use steady_testkit::{Backend, Fault};

#[tokio::test]
async fn failure_percentage_ejects_an_endpoint_failing_most_requests() {
    let backends = [
        Backend::start("good-1").await,
        Backend::start("good-2").await,
        Backend::start("bad").await,
    ];
    backends[2].set_fault(Fault::Status(500));
    let addrs: Vec<_> = backends.iter().map(|b| b.addr()).collect();
    let passive = "    health:
      passive:
        consecutive_failures: null
        success_rate: null
        failure_percentage: {threshold: 50, min_hosts: 3, request_volume: 10}
        interval: 100ms
        base_ejection: 30s
        max_ejection_percent: 34";
    let gw = start_yaml(&simple_config("round-robin", &addrs, passive, "")).await;

    // Round robin gives each endpoint 10 requests; the bad one fails all of its own.
    let mut errors = 0;
    for _ in 0..30 {
        if get(gw.addr, "/").await.status == 500 {
            errors += 1;
        }
    }
    assert_eq!(errors, 10);

    // The next interval judges them: only the bad one is ejected.
    let upstream = gw.gateway.upstreams()[0].clone();
    let bad = upstream.endpoints().get(addrs[2]).unwrap().clone();
    for _ in 0..100 {
        if bad.is_ejected() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        bad.is_ejected(),
        "failure percentage never ejected the 500-er"
    );
    let hits = backends[2].hits();
    for _ in 0..20 {
        assert_eq!(get(gw.addr, "/").await.status, 200);
    }
    assert_eq!(backends[2].hits(), hits, "an ejected endpoint gets nothing");
    assert_eq!(upstream.ejections(), 1);
}
