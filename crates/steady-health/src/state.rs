//! Rise/fall thresholds for one endpoint: pure, no I/O, no clock.

use crate::config::Initial;

/// A change of health that callers log and act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transition {
    /// `healthy_threshold` consecutive passes on an unhealthy endpoint.
    BecameHealthy,
    /// `unhealthy_threshold` consecutive failures on a healthy endpoint.
    BecameUnhealthy,
}

/// Health of one endpoint, decided by runs of consecutive probe results.
///
/// An endpoint flips only after a full run of results against its current state
/// (`unhealthy_threshold` failures while healthy, `healthy_threshold` passes while
/// unhealthy); a result agreeing with the current state restarts the run. Unlike Envoy
/// a new unhealthy endpoint also needs the full `healthy_threshold`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthState {
    /// Current verdict.
    healthy: bool,
    /// Consecutive results against the current verdict.
    streak: u32,
    /// Passes needed to become healthy, at least 1.
    healthy_threshold: u32,
    /// Failures needed to become unhealthy, at least 1.
    unhealthy_threshold: u32,
}

impl HealthState {
    /// Creates the state of an endpoint no probe has run on.
    ///
    /// Thresholds of 0 are treated as 1 (`validate` refuses them in config).
    pub fn new(initial: Initial, healthy_threshold: u32, unhealthy_threshold: u32) -> Self {
        Self {
            healthy: initial == Initial::Healthy,
            streak: 0,
            healthy_threshold: healthy_threshold.max(1),
            unhealthy_threshold: unhealthy_threshold.max(1),
        }
    }

    /// Returns the current verdict.
    pub fn is_healthy(&self) -> bool {
        self.healthy
    }

    /// Returns how many consecutive results so far disagree with the verdict.
    pub fn streak(&self) -> u32 {
        self.streak
    }

    /// Folds in one probe result; returns the transition it completes, if any.
    pub fn observe(&mut self, passed: bool) -> Option<Transition> {
        if passed == self.healthy {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        let needed = if self.healthy {
            self.unhealthy_threshold
        } else {
            self.healthy_threshold
        };
        if self.streak < needed {
            return None;
        }
        self.healthy = passed;
        self.streak = 0;
        Some(if passed {
            Transition::BecameHealthy
        } else {
            Transition::BecameUnhealthy
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn falls_after_threshold_and_rises_after_threshold() {
        let mut state = HealthState::new(Initial::Healthy, 2, 3);
        assert!(state.is_healthy());
        assert_eq!(state.observe(false), None);
        assert_eq!(state.observe(false), None);
        assert_eq!(state.observe(true), None, "a pass restarts the run");
        assert_eq!(state.observe(false), None);
        assert_eq!(state.observe(false), None);
        assert_eq!(state.observe(false), Some(Transition::BecameUnhealthy));
        assert!(!state.is_healthy());
        assert_eq!(state.observe(false), None);
        assert_eq!(state.observe(true), None);
        assert_eq!(state.observe(true), Some(Transition::BecameHealthy));
    }

    #[test]
    fn starting_unhealthy_needs_the_healthy_threshold() {
        let mut state = HealthState::new(Initial::Unhealthy, 2, 3);
        assert!(!state.is_healthy());
        assert_eq!(state.observe(true), None);
        assert_eq!(state.observe(true), Some(Transition::BecameHealthy));
        let mut state = HealthState::new(Initial::Unhealthy, 0, 0);
        assert_eq!(state.observe(true), Some(Transition::BecameHealthy));
        assert_eq!(state.observe(false), Some(Transition::BecameUnhealthy));
    }

    proptest! {
        /// Replays results against a naive model: the verdict flips exactly when the
        /// last `threshold` results all disagree with it and began after the last flip.
        #[test]
        fn flips_only_after_threshold_consecutive_results(
            rise in 1u32..5,
            fall in 1u32..5,
            start_healthy in any::<bool>(),
            results in proptest::collection::vec(any::<bool>(), 0..200),
        ) {
            let initial = if start_healthy { Initial::Healthy } else { Initial::Unhealthy };
            let mut state = HealthState::new(initial, rise, fall);
            let mut healthy = start_healthy;
            // Results since the last flip (or the start).
            let mut since_flip: Vec<bool> = Vec::new();
            for passed in results {
                since_flip.push(passed);
                let needed = if healthy { fall } else { rise } as usize;
                let flips = since_flip.len() >= needed
                    && since_flip[since_flip.len() - needed..].iter().all(|&r| r != healthy);
                let got = state.observe(passed);
                if flips {
                    healthy = !healthy;
                    since_flip.clear();
                    let want = if healthy {
                        Transition::BecameHealthy
                    } else {
                        Transition::BecameUnhealthy
                    };
                    prop_assert_eq!(got, Some(want));
                } else {
                    prop_assert_eq!(got, None);
                }
                prop_assert_eq!(state.is_healthy(), healthy);
                let limit = if healthy { fall } else { rise };
                prop_assert!(state.streak() < limit);
            }
        }
    }
}
