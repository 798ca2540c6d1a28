//! For every algorithm: unavailable endpoints are never picked, all unavailable gives
//! `None`, and `avoid` is honoured whenever another endpoint is available.

use std::time::{Duration, Instant};

use crate::common::{addr, eps, ALL};
use proptest::prelude::*;
use steady_balance::{seed_rng, Algorithm, BalancerConfig, EndpointSet, Pick};

fn config(algorithm: Algorithm, slow: bool, bounded: bool) -> BalancerConfig {
    BalancerConfig {
        algorithm,
        slow_start: slow.then_some(Duration::from_secs(30)),
        bounded_load: bounded.then_some(1.5),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]

    #[test]
    fn picks_only_available_and_prefers_not_avoided(
        weights in prop::collection::vec(1u32..5, 1..8),
        down in prop::collection::vec(any::<bool>(), 8),
        avoided in prop::collection::vec(any::<bool>(), 8),
        slow in any::<bool>(),
        bounded in any::<bool>(),
        seed in any::<u64>(),
    ) {
        seed_rng(seed);
        let t0 = Instant::now();
        let n = weights.len();
        let avoid: Vec<_> = (0..n).filter(|&i| avoided[i]).map(addr).collect();
        let any_up = (0..n).any(|i| !down[i]);
        let any_preferred = (0..n).any(|i| !down[i] && !avoided[i]);
        for algorithm in ALL {
            let s = EndpointSet::new(eps(&weights, t0), &config(algorithm, slow, bounded));
            for (i, e) in s.endpoints().iter().enumerate() {
                e.set_available(!down[i]);
            }
            for k in 0..30u64 {
                let now = t0 + Duration::from_secs(k);
                let hash = (k % 2 == 0).then_some(k.wrapping_mul(0x9e37_79b9_7f4a_7c15));
                let pick = Pick { hash, now, avoid: &avoid };
                let got = s.pick(&pick);
                match got {
                    None => prop_assert!(!any_up, "{:?}: None with endpoints up", algorithm),
                    Some(e) => {
                        prop_assert!(e.is_available(), "{:?}: picked an unavailable endpoint", algorithm);
                        if any_preferred {
                            prop_assert!(!avoid.contains(&e.addr()), "{:?}: picked an avoided endpoint", algorithm);
                        }
                        // Hold some so least-connections and bounded load see load.
                        if k % 3 == 0 {
                            std::mem::forget(e.start(now));
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn all_unavailable_gives_none() {
    let t0 = Instant::now();
    for algorithm in ALL {
        let s = EndpointSet::new(eps(&[1, 2, 3], t0), &config(algorithm, true, true));
        for e in s.endpoints() {
            e.set_available(false);
        }
        assert!(s.pick(&Pick::at(t0)).is_none(), "{algorithm:?}");
        assert!(
            s.pick(&Pick::at(t0).with_hash(7)).is_none(),
            "{algorithm:?}"
        );
        s.endpoints()[1].set_available(true);
        let got = s.pick(&Pick::at(t0).with_hash(7)).unwrap();
        assert_eq!(got.addr(), addr(1), "{algorithm:?}");
    }
}

#[test]
fn avoid_is_only_a_preference() {
    let t0 = Instant::now();
    let avoid = [addr(0), addr(1)];
    for algorithm in ALL {
        let s = EndpointSet::new(eps(&[1, 1], t0), &config(algorithm, false, false));
        let got = s.pick(&Pick::at(t0).with_hash(3).avoiding(&avoid));
        assert!(
            got.is_some(),
            "{algorithm:?}: only avoided endpoints, still picks"
        );
    }
}

#[test]
fn config_validation() {
    let mut c = BalancerConfig::new(Algorithm::RingHash);
    assert!(c.validate().is_ok());
    c.bounded_load = Some(1.0);
    assert!(c.validate().is_err());
    c.bounded_load = Some(f64::NAN);
    assert!(c.validate().is_err());
    c.bounded_load = Some(1.25);
    c.slow_start = Some(Duration::ZERO);
    assert!(c.validate().is_err());
    // A set never fails to build, even from a config validate() rejects.
    c.bounded_load = Some(0.5);
    let s = EndpointSet::new(eps(&[1, 1], Instant::now()), &c);
    assert!(s.pick(&Pick::at(Instant::now()).with_hash(1)).is_some());
}
