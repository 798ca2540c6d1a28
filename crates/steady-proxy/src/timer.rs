//! Timers polled once per waiting task, and the pause limit of upstream bodies.
//!
//! A tokio timer registers the waker of the task that polls it. Polled again by the same
//! task before it fires, it changes nothing, yet tokio's `Timeout` and a socket wrapper
//! that re-checks its deadline on every read poll it on every wake (about 300
//! instructions each time, several times a request). [`Armed`] remembers which task the
//! timer will wake and skips those polls.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::time::Sleep;

/// Which task a timer will wake, if it was polled since it was last set.
#[derive(Debug, Default)]
pub(crate) struct Armed {
    waiter: Option<Waker>,
}

impl Armed {
    /// Forgets the task: call after the timer is reset, so the next poll registers.
    pub(crate) fn reset(&mut self) {
        self.waiter = None;
    }

    /// Polls `timer`, unless the task polling is the one it will wake and it has not
    /// fired. It is polled outside the task's cooperative budget, as tokio polls its
    /// own `Timeout`'s: a timer refused for a spent budget would not be registered, and
    /// would never be polled again.
    pub(crate) fn poll(&mut self, timer: Pin<&mut Sleep>, cx: &mut Context<'_>) -> Poll<()> {
        let same_task = self
            .waiter
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()));
        if same_task && !timer.is_elapsed() {
            return Poll::Pending;
        }
        let mut unconstrained = tokio::task::unconstrained(timer);
        let polled = Pin::new(&mut unconstrained).poll(cx);
        if polled.is_pending() && !same_task {
            self.waiter = Some(cx.waker().clone());
        }
        polled
    }
}

pin_project_lite::pin_project! {
    /// `tokio::time::timeout` with its timer polled through [`Armed`] (an exchange is
    /// woken twice before its response head: after its turn to write, and when the
    /// head arrives).
    pub(crate) struct Deadline<F> {
        #[pin]
        inner: F,
        #[pin]
        timer: Sleep,
        armed: Armed,
    }
}

/// The deadline passed before the future completed.
#[derive(Debug)]
pub(crate) struct Elapsed;

impl<F> Deadline<F> {
    /// `inner`, given `after` to complete.
    pub(crate) fn new(after: Duration, inner: F) -> Self {
        Deadline {
            inner,
            timer: tokio::time::sleep(after),
            armed: Armed::default(),
        }
    }
}

impl<F: Future> Future for Deadline<F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(out) = this.inner.poll(cx) {
            return Poll::Ready(Ok(out));
        }
        this.armed.poll(this.timer, cx).map(|()| Err(Elapsed))
    }
}

/// Bounds each pause in a stream read in pieces (an upstream's response body): the
/// stream fails once a read has waited `limit` with nothing arriving.
///
/// The timer is made the first time a read waits, so a body that arrives with its
/// head (most small responses) never touches the timer wheel.
#[derive(Debug)]
pub(crate) struct PauseLimit {
    limit: Duration,
    /// A read is waiting, since the timer was last set.
    waiting: bool,
    timer: LazyTimer,
}

/// A timer made the first time it is set (boxed, with the task it will wake: most
/// waits it guards never happen), reset in place afterwards, and polled through
/// [`Armed`].
#[derive(Debug, Default)]
pub(crate) struct LazyTimer {
    timer: Option<Pin<Box<ArmedSleep>>>,
}

pin_project_lite::pin_project! {
    #[derive(Debug)]
    struct ArmedSleep {
        #[pin]
        sleep: Sleep,
        armed: Armed,
    }
}

impl LazyTimer {
    /// Sets the timer to fire at `at`; the next poll registers its task.
    pub(crate) fn set(&mut self, at: tokio::time::Instant) {
        match &mut self.timer {
            Some(timer) => {
                let timer = timer.as_mut().project();
                timer.sleep.reset(at);
                timer.armed.reset();
            }
            None => {
                self.timer = Some(Box::pin(ArmedSleep {
                    sleep: tokio::time::sleep_until(at),
                    armed: Armed::default(),
                }));
            }
        }
    }

    /// `Ready` once the timer has fired; `Pending` before, and if it was never set.
    pub(crate) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(timer) = &mut self.timer else {
            return Poll::Pending;
        };
        let timer = timer.as_mut().project();
        timer.armed.poll(timer.sleep, cx)
    }
}

/// A read waited longer than its [`PauseLimit`].
#[derive(Debug)]
pub(crate) struct Stalled(pub Duration);

impl std::fmt::Display for Stalled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the upstream sent nothing for {:?}", self.0)
    }
}

impl std::error::Error for Stalled {}

impl PauseLimit {
    /// Pauses of at most `limit`.
    pub(crate) fn new(limit: Duration) -> Self {
        PauseLimit {
            limit,
            waiting: false,
            timer: LazyTimer::default(),
        }
    }

    /// Takes a read's outcome: passes a ready one on (ending the pause); for a
    /// waiting one, starts the pause if it is new, and fails once it has lasted the
    /// limit.
    pub(crate) fn check<T>(
        &mut self,
        read: Poll<T>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<T, Stalled>> {
        if let Poll::Ready(out) = read {
            self.waiting = false;
            return Poll::Ready(Ok(out));
        }
        if !self.waiting {
            let Some(deadline) = tokio::time::Instant::now().checked_add(self.limit) else {
                return Poll::Pending;
            };
            self.waiting = true;
            self.timer.set(deadline);
        }
        self.timer.poll(cx).map(|()| Err(Stalled(self.limit)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_deadline_ends_a_stalled_future_and_passes_a_ready_one() {
        let started = tokio::time::Instant::now();
        let stalled = Deadline::new(Duration::from_secs(5), std::future::pending::<()>());
        assert!(stalled.await.is_err());
        assert_eq!(started.elapsed(), Duration::from_secs(5));
        let ready = Deadline::new(Duration::from_secs(5), async { 7 });
        assert!(matches!(ready.await, Ok(7)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_deadline_first_polled_on_a_spent_budget_still_fires() {
        // The first poll comes with the task's cooperative budget spent, the next ones
        // (woken by the future itself) with budget: the timer must still be registered.
        let mut deadline = std::pin::pin!(Deadline::new(
            Duration::from_secs(5),
            std::future::pending::<()>()
        ));
        let mut first = true;
        let started = tokio::time::Instant::now();
        let outcome = std::future::poll_fn(|cx| {
            if std::mem::replace(&mut first, false) {
                loop {
                    let mut spend = std::pin::pin!(tokio::task::consume_budget());
                    if spend.as_mut().poll(cx).is_pending() {
                        break;
                    }
                }
            }
            match Pin::new(&mut deadline).poll(cx) {
                Poll::Ready(r) => Poll::Ready(r.is_err()),
                Poll::Pending => Poll::Pending,
            }
        });
        let timed_out = tokio::time::timeout(Duration::from_secs(60), outcome)
            .await
            .expect("the deadline fired");
        assert!(timed_out);
        assert_eq!(started.elapsed(), Duration::from_secs(5));
    }

    /// Polls `limit` with a read that is ready when `ready` says so.
    async fn check(limit: &mut PauseLimit, ready: bool) -> Poll<Result<(), Stalled>> {
        std::future::poll_fn(|cx| {
            let read = if ready {
                Poll::Ready(())
            } else {
                Poll::Pending
            };
            Poll::Ready(limit.check(read, cx))
        })
        .await
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_fails_at_its_limit_and_data_starts_a_new_one() {
        let mut limit = PauseLimit::new(Duration::from_secs(5));
        // Data with no wait never makes the timer.
        assert!(matches!(check(&mut limit, true).await, Poll::Ready(Ok(()))));
        assert!(limit.timer.timer.is_none());
        // A wait of 4s, then data: under the limit.
        assert!(check(&mut limit, false).await.is_pending());
        tokio::time::advance(Duration::from_secs(4)).await;
        assert!(check(&mut limit, false).await.is_pending());
        assert!(matches!(check(&mut limit, true).await, Poll::Ready(Ok(()))));
        // The next wait counts from its own start: 4s more is still under.
        assert!(check(&mut limit, false).await.is_pending());
        tokio::time::advance(Duration::from_secs(4)).await;
        assert!(check(&mut limit, false).await.is_pending());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(matches!(
            check(&mut limit, false).await,
            Poll::Ready(Err(Stalled(d))) if d == Duration::from_secs(5)
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_read_is_woken_when_its_pause_runs_out() {
        let mut limit = PauseLimit::new(Duration::from_secs(5));
        let started = tokio::time::Instant::now();
        // A read that never becomes ready: only the timer can wake the task.
        let stalled = std::future::poll_fn(|cx| limit.check(Poll::<()>::Pending, cx));
        let outcome = tokio::time::timeout(Duration::from_secs(60), stalled)
            .await
            .expect("woken by the pause limit");
        assert!(outcome.is_err());
        assert_eq!(started.elapsed(), Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn an_unbounded_limit_never_fails() {
        let mut limit = PauseLimit::new(Duration::MAX);
        assert!(check(&mut limit, false).await.is_pending());
        tokio::time::advance(Duration::from_secs(86_400)).await;
        assert!(check(&mut limit, false).await.is_pending());
    }
}
