//! Locality-aware failover: keep traffic in the caller's zone while enough of it is
//! healthy, spill the lost share to other zones, other regions, then lower priorities.
//!
//! Endpoints carry a [`Locality`] (zone, region, priority). Relative to the gateway's own
//! zone and region, each endpoint falls in a [`Proximity`] class, and the set is split into
//! *tiers*, ordered by `(priority, proximity)`: priority 0 in the local zone first, then
//! priority 0 elsewhere in the region, priority 0 in other regions, then priority 1 and so
//! on. Each tier has its own balancer over its own endpoints.
//!
//! Traffic is shared between tiers as Envoy shares it between priority levels
//! (`priority_load`), with the overprovisioning factor `f` (default 1.4):
//!
//! - a tier's *health* is `min(1, f × available / total)`, so a tier that lost up to
//!   `1 − 1/f` (29%) of its endpoints still takes all the traffic it can;
//! - tiers take, in order, `min(health, what is left)` of the traffic;
//! - when the healths add up to less than 1 (everything is degraded), each tier's share
//!   is its health over their sum, so traffic still goes where endpoints are.
//!
//! So a local zone at 50% health (`f × 0.5 = 0.7`) keeps 70% of requests and spills 30%
//! to the next tier: the spilled share is proportional to the capacity lost.

use std::sync::Arc;

/// Default overprovisioning factor: Envoy's 140%.
pub const DEFAULT_OVERPROVISIONING: f64 = 1.4;

/// Where an endpoint runs, or where the gateway itself runs (priority unused there).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Locality {
    /// Region, e.g. `eu-west-1`.
    pub region: Option<Arc<str>>,
    /// Zone, e.g. `eu-west-1a`.
    pub zone: Option<Arc<str>>,
    /// Failover priority: 0 first; higher levels get traffic only as lower ones fail.
    pub priority: u32,
}

/// How close an endpoint is to the gateway, nearest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Proximity {
    /// Same zone (or the gateway has no locality set, so every endpoint is local).
    Zone,
    /// Same region (or region unknown), another or unknown zone.
    Region,
    /// Another region.
    Remote,
}

impl Proximity {
    /// Returns the class's name as the admin API shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            Proximity::Zone => "zone",
            Proximity::Region => "region",
            Proximity::Remote => "remote",
        }
    }
}

impl Locality {
    /// Returns whether neither zone nor region is set.
    pub fn is_unset(&self) -> bool {
        self.zone.is_none() && self.region.is_none()
    }

    /// Returns how close an endpoint at `self` is to a gateway at `local`.
    pub fn proximity(&self, local: &Locality) -> Proximity {
        if local.is_unset() {
            return Proximity::Zone;
        }
        if let (Some(a), Some(b)) = (&self.region, &local.region) {
            if a != b {
                return Proximity::Remote;
            }
        }
        match (&self.zone, &local.zone) {
            (Some(a), Some(b)) if a == b => Proximity::Zone,
            // A gateway that only knows its region treats the whole region as local.
            (_, None) if self.region.is_some() => Proximity::Zone,
            _ => Proximity::Region,
        }
    }
}

/// Returns each tier's share of traffic given `(available, total)` per tier in order.
///
/// Shares add up to 1, or are all 0 when no tier has an available endpoint.
pub fn tier_shares(counts: &[(usize, usize)], overprovisioning: f64) -> Vec<f64> {
    let health: Vec<f64> = counts
        .iter()
        .map(|&c| health(c, overprovisioning))
        .collect();
    distribute(&health)
}

/// A tier's health: `min(1, f × available / total)`.
fn health((available, total): (usize, usize), overprovisioning: f64) -> f64 {
    if total == 0 {
        return 0.0;
    }
    (overprovisioning * available as f64 / total as f64).min(1.0)
}

/// Envoy's priority load: tiers take `min(health, left)` in order; healths summing to
/// less than 1 are normalized instead.
fn distribute(health: &[f64]) -> Vec<f64> {
    let sum: f64 = health.iter().sum();
    if sum <= 0.0 {
        return vec![0.0; health.len()];
    }
    if sum < 1.0 {
        return health.iter().map(|h| h / sum).collect();
    }
    let mut left = 1.0f64;
    health
        .iter()
        .map(|&h| {
            let take = h.min(left);
            left -= take;
            take
        })
        .collect()
}

/// Picks a tier index by its share (from [`tier_shares`]) for one uniform draw `r` in
/// `[0, 1)`; `None` when every share is 0.
pub(crate) fn pick_tier(shares: &[f64], r: f64) -> Option<usize> {
    let mut acc = 0.0;
    let mut last = None;
    for (i, &share) in shares.iter().enumerate().filter(|(_, s)| **s > 0.0) {
        last = Some(i);
        acc += share;
        if r < acc {
            return Some(i);
        }
    }
    // Rounding: r fell past the last positive share.
    last
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(region: Option<&str>, zone: Option<&str>) -> Locality {
        Locality {
            region: region.map(Into::into),
            zone: zone.map(Into::into),
            priority: 0,
        }
    }

    #[test]
    fn proximity_classes() {
        let here = loc(Some("eu"), Some("eu-a"));
        assert_eq!(
            loc(Some("eu"), Some("eu-a")).proximity(&here),
            Proximity::Zone
        );
        assert_eq!(loc(None, Some("eu-a")).proximity(&here), Proximity::Zone);
        assert_eq!(
            loc(Some("eu"), Some("eu-b")).proximity(&here),
            Proximity::Region
        );
        assert_eq!(loc(None, None).proximity(&here), Proximity::Region);
        assert_eq!(
            loc(Some("us"), Some("eu-a")).proximity(&here),
            Proximity::Remote
        );
        // No locality on the gateway: everything is local.
        assert_eq!(
            loc(Some("us"), None).proximity(&Locality::default()),
            Proximity::Zone
        );
        // A gateway that knows only its region.
        let region_only = loc(Some("eu"), None);
        assert_eq!(
            loc(Some("eu"), Some("eu-b")).proximity(&region_only),
            Proximity::Zone
        );
        assert_eq!(
            loc(Some("us"), Some("us-a")).proximity(&region_only),
            Proximity::Remote
        );
    }

    #[test]
    fn healthy_local_tier_takes_everything() {
        assert_eq!(tier_shares(&[(4, 4), (4, 4)], 1.4), vec![1.0, 0.0]);
        // Losing a quarter is absorbed by overprovisioning (1.4 × 0.75 > 1).
        assert_eq!(tier_shares(&[(3, 4), (4, 4)], 1.4), vec![1.0, 0.0]);
    }

    #[test]
    fn spill_is_proportional_to_lost_capacity() {
        let s = tier_shares(&[(2, 4), (4, 4)], 1.4);
        assert!(
            (s[0] - 0.7).abs() < 1e-9 && (s[1] - 0.3).abs() < 1e-9,
            "{s:?}"
        );
        let s = tier_shares(&[(1, 4), (1, 4), (4, 4)], 1.4);
        assert!((s[0] - 0.35).abs() < 1e-9, "{s:?}");
        assert!((s[1] - 0.35).abs() < 1e-9, "{s:?}");
        assert!((s[2] - 0.3).abs() < 1e-9, "{s:?}");
        assert_eq!(tier_shares(&[(0, 4), (4, 4)], 1.4), vec![0.0, 1.0]);
    }

    #[test]
    fn degraded_everywhere_normalizes() {
        let s = tier_shares(&[(1, 10), (1, 10)], 1.4);
        assert!(
            (s[0] - 0.5).abs() < 1e-9 && (s[1] - 0.5).abs() < 1e-9,
            "{s:?}"
        );
        assert_eq!(tier_shares(&[(0, 3), (0, 3)], 1.4), vec![0.0, 0.0]);
        assert_eq!(tier_shares(&[], 1.4), Vec::<f64>::new());
    }

    #[test]
    fn pick_tier_follows_shares() {
        let shares = tier_shares(&[(2, 4), (4, 4)], 1.4);
        assert_eq!(pick_tier(&shares, 0.0), Some(0));
        assert_eq!(pick_tier(&shares, 0.69), Some(0));
        assert_eq!(pick_tier(&shares, 0.71), Some(1));
        assert_eq!(pick_tier(&shares, 0.999_999), Some(1));
        assert_eq!(pick_tier(&tier_shares(&[(0, 4), (0, 4)], 1.4), 0.5), None);
    }
}
