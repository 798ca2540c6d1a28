//! Circuit breakers of one upstream: fixed limits on open connections, requests waiting
//! for a connection, and requests in flight, shared by every worker thread (Envoy's
//! circuit breakers). Over a limit the request is answered 503 at once, with
//! `x-steady-circuit-breaker` naming the limit, instead of piling onto an upstream that
//! is already struggling.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// Which limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Breaker {
    /// `max_connections`.
    Connections,
    /// `max_pending_requests`.
    Pending,
    /// `max_requests`.
    Requests,
}

impl Breaker {
    /// All breakers, in metric order.
    pub const ALL: [Breaker; 3] = [Breaker::Connections, Breaker::Pending, Breaker::Requests];

    /// The config field, also the `x-steady-circuit-breaker` value and metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Breaker::Connections => "max_connections",
            Breaker::Pending => "max_pending_requests",
            Breaker::Requests => "max_requests",
        }
    }
}

/// Counts against the limits of one upstream.
#[derive(Debug, Default)]
pub struct Breakers {
    max_connections: Option<usize>,
    max_pending: Option<usize>,
    max_requests: Option<usize>,
    max_retries: Option<usize>,
    connections: AtomicUsize,
    pending: AtomicUsize,
    requests: AtomicUsize,
    retries: AtomicUsize,
    overflows: [AtomicU64; 3],
}

/// One retry in flight (see [`Breakers::try_retry`]).
#[derive(Debug)]
pub struct RetryGuard<'a> {
    breakers: &'a Breakers,
}

impl Drop for RetryGuard<'_> {
    fn drop(&mut self) {
        self.breakers.retries.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Holds one unit of a counter; gives it back when dropped.
#[derive(Debug)]
pub struct Slot {
    breakers: Arc<Breakers>,
    breaker: Breaker,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.breakers
            .counter(self.breaker)
            .fetch_sub(1, Ordering::AcqRel);
    }
}

/// As [`Slot`], borrowing the breakers: for the request path, where the upstream
/// outlives the request and an `Arc` clone would cost two more atomic operations.
#[derive(Debug)]
pub struct SlotRef<'a> {
    breakers: &'a Breakers,
    breaker: Breaker,
}

impl Drop for SlotRef<'_> {
    fn drop(&mut self) {
        self.breakers
            .counter(self.breaker)
            .fetch_sub(1, Ordering::AcqRel);
    }
}

impl Breakers {
    /// Breakers with the limits of `config` (none when absent).
    pub fn new(config: Option<&steady_config::limits::CircuitBreakers>) -> Arc<Breakers> {
        let config = config.cloned().unwrap_or_default();
        Arc::new(Breakers {
            max_connections: config.max_connections,
            max_pending: config.max_pending_requests,
            max_requests: config.max_requests,
            max_retries: config.max_retries,
            ..Breakers::default()
        })
    }

    fn counter(&self, breaker: Breaker) -> &AtomicUsize {
        match breaker {
            Breaker::Connections => &self.connections,
            Breaker::Pending => &self.pending,
            Breaker::Requests => &self.requests,
        }
    }

    fn max(&self, breaker: Breaker) -> Option<usize> {
        match breaker {
            Breaker::Connections => self.max_connections,
            Breaker::Pending => self.max_pending,
            Breaker::Requests => self.max_requests,
        }
    }

    /// Takes one unit of `breaker`, or says it is full (and counts the overflow).
    pub fn take(self: &Arc<Self>, breaker: Breaker) -> Result<Slot, Breaker> {
        // The borrowed slot's unit moves into the owned one.
        std::mem::forget(self.take_ref(breaker)?);
        Ok(Slot {
            breakers: Arc::clone(self),
            breaker,
        })
    }

    /// As [`Breakers::take`], borrowing.
    pub fn take_ref(&self, breaker: Breaker) -> Result<SlotRef<'_>, Breaker> {
        let counter = self.counter(breaker);
        match self.max(breaker) {
            None => {
                counter.fetch_add(1, Ordering::AcqRel);
            }
            Some(max) => {
                let taken = counter.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n < max).then_some(n + 1)
                });
                if taken.is_err() {
                    self.overflows[breaker as usize].fetch_add(1, Ordering::Relaxed);
                    return Err(breaker);
                }
            }
        }
        Ok(SlotRef {
            breakers: self,
            breaker,
        })
    }

    /// Allows one retry if the retries in flight stay within the budget: at most
    /// `share` of the requests in flight, and always at least `min` (Envoy's retry
    /// budget), and never more than `max_retries`. The retry counts until the returned
    /// guard drops.
    pub fn try_retry(&self, share: f64, min: u32) -> Option<RetryGuard<'_>> {
        let requests = self.requests.load(Ordering::Acquire) as f64;
        let allowed = ((requests * share) as usize).max(min as usize);
        let allowed = self.max_retries.map_or(allowed, |max| allowed.min(max));
        self.retries
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < allowed).then_some(n + 1)
            })
            .ok()?;
        Some(RetryGuard { breakers: self })
    }

    /// Retries in flight now.
    pub fn retries(&self) -> usize {
        self.retries.load(Ordering::Acquire)
    }

    /// Units of `breaker` in use now.
    pub fn current(&self, breaker: Breaker) -> usize {
        self.counter(breaker).load(Ordering::Acquire)
    }

    /// Requests refused by `breaker` since start.
    pub fn overflows(&self, breaker: Breaker) -> u64 {
        self.overflows[breaker as usize].load(Ordering::Relaxed)
    }

    /// The limit of `breaker`, if any.
    pub fn limit(&self, breaker: Breaker) -> Option<usize> {
        self.max(breaker)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_hold_and_slots_come_back() {
        let config = steady_config::limits::CircuitBreakers {
            max_requests: Some(2),
            ..Default::default()
        };
        let b = Breakers::new(Some(&config));
        let one = b.take(Breaker::Requests).unwrap();
        let two = b.take(Breaker::Requests).unwrap();
        assert_eq!(b.take(Breaker::Requests).unwrap_err(), Breaker::Requests);
        assert_eq!(b.overflows(Breaker::Requests), 1);
        drop(one);
        let three = b.take(Breaker::Requests).unwrap();
        assert_eq!(b.current(Breaker::Requests), 2);
        drop((two, three));
        assert_eq!(b.current(Breaker::Requests), 0);
        // No limit: counted, never refused.
        let slots: Vec<_> = (0..100)
            .map(|_| b.take(Breaker::Pending).unwrap())
            .collect();
        assert_eq!(b.current(Breaker::Pending), 100);
        drop(slots);
        assert_eq!(b.current(Breaker::Pending), 0);
    }

    #[test]
    fn max_retries_caps_the_budget() {
        let config = steady_config::limits::CircuitBreakers {
            max_retries: Some(2),
            ..Default::default()
        };
        let b = Breakers::new(Some(&config));
        // min_retries 10 would allow ten; the breaker allows two.
        let one = b.try_retry(0.2, 10).unwrap();
        let two = b.try_retry(0.2, 10).unwrap();
        assert!(b.try_retry(0.2, 10).is_none());
        drop(one);
        let three = b.try_retry(0.2, 10).unwrap();
        drop((two, three));
        assert_eq!(b.retries(), 0);
        // Without the breaker only the budget counts.
        let b = Breakers::new(None);
        let held: Vec<_> = (0..10).map(|_| b.try_retry(0.2, 10).unwrap()).collect();
        assert!(b.try_retry(0.2, 10).is_none());
        drop(held);
    }
}
