//! Write batching: a write waits once at the back of the worker's run queue, so the
//! worker's other ready tasks run first and the writes of one turn leave together.
//!
//! Why: on the benchmark the upstream shares the proxy's core and the client has a core
//! of its own. A request written to the upstream as soon as it was parsed woke the
//! upstream early; it preempted the proxy 0.59 times per request and handled under two
//! requests per wake-up, and both spent about 40 % more CPU per request at saturation.
//! A response written to the client as soon as it was read reached a client that had
//! already caught up and gone to sleep: every write woke it again, with an
//! inter-processor interrupt that the proxy pays for in its system time (0.32 client
//! wake-ups per request, against haproxy's 0.03, which reads everything ready before it
//! writes anything).
//!
//! The task wakes itself and returns `Pending`: the current-thread scheduler puts it at
//! the back of its run queue, behind the tasks already ready, not behind the next I/O
//! poll as `tokio::task::yield_now` would (which measured no better).
//!
//! Waiting costs one more poll of the task (the connection's loop in `server`, and for
//! an upstream write the request path's futures down to it) and only pays when other
//! tasks are ready. So each worker notes whether
//! its waits let anything else happen (another wait begun, or a write made, in
//! between). After [`IDLE_WAITS_OFF`] waits in a row that let nothing else run (a
//! lightly loaded worker: one request per turn), writes go out at once, and only every
//! [`PROBE_EVERY`]th write waits, to notice when the worker is busy again.
//!
//! Measured without it (a build whose writes never wait, same run): 15 % more CPU per
//! request in the closed loop, 6 % more at 5,000 req/s, and a higher added p99 there
//! (497 against 442 µs); see `bench/README.md`.

use std::cell::Cell;
use std::task::{Context, Poll};

/// Waits in a row that let nothing else run, after which writes stop waiting.
pub(crate) const IDLE_WAITS_OFF: u32 = 8;
/// While writes do not wait: one in this many still does, as a probe.
pub(crate) const PROBE_EVERY: u32 = 8;

thread_local! {
    /// Waits begun and writes made on this worker thread (wrapping).
    static ACTIVITY: Cell<u32> = const { Cell::new(0) };
    /// Waits in a row that let nothing else run, up to [`IDLE_WAITS_OFF`].
    static IDLE_WAITS: Cell<u32> = const { Cell::new(0) };
    /// Writes sent without waiting since the last probe.
    static SKIPPED: Cell<u32> = const { Cell::new(0) };
}

/// One write's turn: [`Turn::poll`] before the write, until `Ready`.
#[derive(Debug, Default)]
pub(crate) struct Turn {
    /// The worker's activity count when this write began to wait.
    waiting_since: Option<u32>,
}

impl Turn {
    /// `Pending` once (with the task woken at once) when the worker is busy, then
    /// `Ready`; `Ready` at once when it is not. A write abandoned while waiting leaves
    /// the turn waiting; the next write then goes out without waiting, which only
    /// loses a batching chance.
    pub(crate) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let activity = ACTIVITY.get();
        if let Some(since) = self.waiting_since.take() {
            // Back from waiting: did anything else happen meanwhile?
            IDLE_WAITS.set(if activity == since {
                (IDLE_WAITS.get() + 1).min(IDLE_WAITS_OFF)
            } else {
                0
            });
            ACTIVITY.set(activity.wrapping_add(1));
            return Poll::Ready(());
        }
        if IDLE_WAITS.get() >= IDLE_WAITS_OFF {
            let skipped = SKIPPED.get() + 1;
            if skipped < PROBE_EVERY {
                SKIPPED.set(skipped);
                ACTIVITY.set(activity.wrapping_add(1));
                return Poll::Ready(());
            }
            // This write is the probe.
            SKIPPED.set(0);
        }
        let since = activity.wrapping_add(1);
        ACTIVITY.set(since);
        self.waiting_since = Some(since);
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// Waits for the write's turn (the upstream request's write, in `h1`).
pub(crate) async fn turn() {
    let mut turn = Turn::default();
    std::future::poll_fn(|cx| turn.poll(cx)).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::Wake;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn context() -> (Arc<Count>, std::task::Waker) {
        let wakes = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Arc::clone(&wakes).into();
        (wakes, waker)
    }

    /// Polls one write through its turn; whether it waited.
    fn write(cx: &mut Context<'_>) -> bool {
        let mut turn = Turn::default();
        if turn.poll(cx).is_ready() {
            return false;
        }
        assert!(turn.poll(cx).is_ready());
        true
    }

    #[test]
    fn a_busy_worker_waits_once_per_write() {
        // Each test runs on a thread of its own, so the worker's counts start afresh.
        let (wakes, waker) = context();
        let mut cx = Context::from_waker(&waker);
        let mut a = Turn::default();
        let mut b = Turn::default();
        for round in 1..=20 {
            // Two writes interleaved, as two ready tasks on one worker.
            assert!(a.poll(&mut cx).is_pending());
            assert!(b.poll(&mut cx).is_pending());
            assert!(a.poll(&mut cx).is_ready());
            assert!(b.poll(&mut cx).is_ready());
            assert_eq!(wakes.0.load(Ordering::Relaxed), 2 * round);
        }
    }

    #[test]
    fn a_quiet_worker_stops_waiting_and_probes() {
        let (_, waker) = context();
        let mut cx = Context::from_waker(&waker);
        // Alone on the worker: the first waits let nothing else run.
        for _ in 0..IDLE_WAITS_OFF {
            assert!(write(&mut cx));
        }
        // Then only one write in PROBE_EVERY waits.
        let waited: Vec<bool> = (0..3 * PROBE_EVERY).map(|_| write(&mut cx)).collect();
        assert_eq!(waited.iter().filter(|&&w| w).count(), 3);
        // A probe during which another write goes out turns waiting back on.
        let mut probe = Turn::default();
        while probe.poll(&mut cx).is_ready() {}
        assert!(!write(&mut cx));
        assert!(probe.poll(&mut cx).is_ready());
        assert!(write(&mut cx));
        assert!(write(&mut cx));
    }
}
