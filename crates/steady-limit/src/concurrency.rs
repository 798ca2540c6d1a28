//! Adaptive concurrency of one upstream: a gradient over the measured minimum RTT, as
//! Envoy's adaptive concurrency filter (and Netflix's concurrency-limits) compute it, in
//! front of a small queue ordered by [`Priority`].
//!
//! # The limit
//!
//! The limiter alternates between two phases.
//!
//! - **Measuring the minimum RTT.** At start, then every `min_rtt_interval` (jittered by
//!   ±15%), the limit is pinned to `min_limit` until `min_rtt_samples` latency samples
//!   have been taken from requests admitted *during* the measurement; minRTT is the
//!   `sample_percentile` of those samples. Requests admitted before the pin still finish,
//!   but their samples are ignored: they saw the upstream at the old, higher concurrency.
//!   The limit in force before the pin (`initial_limit` the first time) is restored
//!   afterwards. The measurement also starts when the limit has been at `min_limit` for
//!   5 consecutive sampling windows, as Envoy does, since that is what a minRTT that has
//!   become too low looks like.
//! - **Following the gradient.** Every `sample_window`, the window's RTT (sampleRTT) is
//!   the `sample_percentile` of the samples taken in it, and
//!
//!   ```text
//!   gradient  = clamp(minRTT × (1 + buffer) / sampleRTT, 0.5, 2.0)
//!   scaled    = gradient × limit
//!   new limit = clamp(floor(scaled + sqrt(scaled)), min_limit, max_limit)
//!   ```
//!
//!   The `sqrt` term is Envoy's burst headroom. A window without samples leaves the limit
//!   alone. A window that would raise the limit while fewer than half of its slots were
//!   ever in use (the upstream is not what holds traffic back) leaves it alone too, as
//!   Netflix's `Gradient2Limit` does, so a quiet period does not leave a huge limit
//!   behind for the next burst.
//!
//! Under sustained overload the limit settles where the window's percentile RTT is
//! about `minRTT × (1 + buffer)`, the headroom on top: for an upstream that serves `N`
//! requests at once and queues the rest, about `1.25 N + sqrt(1.25 N)` with the
//! default buffer.
//!
//! Windows close lazily: the first request to finish (or to find the upstream at its
//! limit) after a window's end closes it, so no timer task is needed and any thread may
//! do it. A window keeps at most 4096 samples (a uniform reservoir beyond that).
//!
//! # Admission and the queue
//!
//! Admission under the limit is one compare-and-swap on the in-flight count. At the
//! limit, a request waits for at most `queue_timeout` in a queue of at most `queue_size`:
//!
//! - Waiters are served critical first, then normal, first come first served within a
//!   level. A freed slot goes straight to the best waiter, so waking up never races.
//! - [`Priority::Sheddable`] requests never wait: at the limit they are shed at once
//!   ([`Shed::QueueFull`]), keeping the queue for requests that matter.
//! - When the queue is full, an arrival displaces the newest waiter of the lowest
//!   priority below its own ([`Shed::Displaced`]); with none below it, the arrival is
//!   shed ([`Shed::QueueFull`]). A critical request is therefore only ever turned away
//!   when the queue is full of critical requests (or it times out).
//! - A normal request waits at most `minRTT × buffer` (at least 1 ms): the delay the
//!   gradient tolerates anyway, so queueing never makes an admitted request slower than
//!   the limit itself allows. Before minRTT is known it may wait `queue_timeout` while
//!   the queue is a fresh burst, and 5 ms once the queue has not emptied for 100 ms (a
//!   standing queue, CoDel's rule as Facebook applies it to server queues). Critical
//!   requests, served first, always get the full `queue_timeout`.
//! - When the limit drops below the in-flight count, nobody is admitted until enough
//!   requests finish.
//!
//! A waiter that times out or whose `acquire` future is dropped leaves the queue; a slot
//! handed to it in the meantime is passed on, never lost.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::oneshot;
use tokio::time::Instant;

/// Bounds of the gradient: at most halve or double the limit per window.
const MIN_GRADIENT: f64 = 0.5;
const MAX_GRADIENT: f64 = 2.0;
/// Samples kept per window; beyond this a reservoir keeps a uniform subset.
const MAX_WINDOW_SAMPLES: usize = 4096;
/// Relative jitter of the interval between two minimum-RTT measurements.
const MIN_RTT_JITTER: f64 = 0.15;
/// Consecutive windows at `min_limit` after which the minimum RTT is measured again.
const WINDOWS_AT_MIN_BEFORE_REMEASURE: u32 = 5;
/// How long the queue must have stayed non-empty to count as a standing queue.
const STANDING_QUEUE_INTERVAL: Duration = Duration::from_millis(100);
/// Wait in a standing queue before the minimum RTT is known.
const STANDING_QUEUE_WAIT: Duration = Duration::from_millis(5);
/// Shortest wait in a standing queue.
const MIN_STANDING_QUEUE_WAIT: Duration = Duration::from_millis(1);
/// Bounds of the suggested `Retry-After`.
const MIN_RETRY_AFTER: Duration = Duration::from_secs(1);
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

/// How important a request is when the upstream is saturated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Priority {
    /// Shed first: never waits for a slot.
    Sheddable,
    /// The default.
    #[default]
    Normal,
    /// Shed last: served first from the queue, and displaces less important waiters.
    Critical,
}

impl Priority {
    /// Every priority, least important first.
    pub const ALL: [Priority; 3] = [Priority::Sheddable, Priority::Normal, Priority::Critical];

    /// The label used in config, metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Sheddable => "sheddable",
            Priority::Normal => "normal",
            Priority::Critical => "critical",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Settings of the gradient controller and its queue.
#[derive(Debug, Clone, PartialEq)]
pub struct AdaptiveConfig {
    /// Lowest limit, and the limit while the minimum RTT is re-measured.
    pub min_limit: u32,
    /// Highest limit.
    pub max_limit: u32,
    /// Limit after the first minimum-RTT measurement.
    pub initial_limit: u32,
    /// How long RTT samples are gathered before the limit is recomputed.
    pub sample_window: Duration,
    /// Which percentile of a window's samples is its RTT (0.9 = p90).
    pub sample_percentile: f64,
    /// How often the minimum RTT is re-measured (jittered).
    pub min_rtt_interval: Duration,
    /// Samples taken at `min_limit` to measure the minimum RTT.
    pub min_rtt_samples: u32,
    /// Tolerated latency over the minimum RTT before the limit shrinks (0.25 = 25%).
    pub buffer: f64,
    /// Requests that may wait for a slot.
    pub queue_size: usize,
    /// How long a request may wait in the queue.
    pub queue_timeout: Duration,
}

impl Default for AdaptiveConfig {
    fn default() -> Self {
        Self {
            min_limit: 3,
            max_limit: 1000,
            initial_limit: 20,
            sample_window: Duration::from_millis(100),
            sample_percentile: 0.9,
            min_rtt_interval: Duration::from_secs(60),
            min_rtt_samples: 50,
            buffer: 0.25,
            queue_size: 16,
            queue_timeout: Duration::from_millis(100),
        }
    }
}

impl AdaptiveConfig {
    /// This config with out-of-range values pulled into range, so the limiter never
    /// divides by zero or inverts its bounds (the config crate validates properly).
    fn normalized(mut self) -> Self {
        self.min_limit = self.min_limit.max(1);
        self.max_limit = self.max_limit.max(self.min_limit);
        self.initial_limit = self.initial_limit.clamp(self.min_limit, self.max_limit);
        self.sample_window = self.sample_window.max(Duration::from_millis(1));
        self.sample_percentile = if self.sample_percentile.is_finite() {
            self.sample_percentile.clamp(0.0, 1.0)
        } else {
            0.9
        };
        self.min_rtt_samples = self.min_rtt_samples.max(1);
        self.buffer = if self.buffer.is_finite() {
            self.buffer.max(0.0)
        } else {
            0.25
        };
        self
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Shed {
    /// At the limit and the queue was full of requests at least as important (sheddable
    /// requests get this whenever the upstream is at its limit).
    #[error("queue full")]
    QueueFull,
    /// Waited `queue_timeout` without getting a slot.
    #[error("queue timeout")]
    QueueTimeout,
    /// Pushed out of the queue by a more important request.
    #[error("displaced")]
    Displaced,
}

impl Shed {
    /// Every reason.
    pub const ALL: [Shed; 3] = [Shed::QueueFull, Shed::QueueTimeout, Shed::Displaced];

    /// The reason label used in metrics and the `x-steady-error` header.
    pub fn reason(self) -> &'static str {
        match self {
            Shed::QueueFull => "queue-full",
            Shed::QueueTimeout => "queue-timeout",
            Shed::Displaced => "displaced",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The adaptive concurrency limit of one upstream, shared by every worker thread.
pub struct ConcurrencyLimiter {
    config: AdaptiveConfig,
    /// Time zero of the nanosecond timestamps below.
    origin: Instant,
    /// The limit in force; written only by the controller, read on every admission.
    limit: AtomicU32,
    /// The limit outside minimum-RTT measurements (see `learned_limit`).
    learned: AtomicU32,
    /// Slots held, including slots handed to waiters that have not woken up yet.
    in_flight: AtomicU32,
    /// Waiters in `queue`, readable without its lock (changed only under it).
    queued: AtomicUsize,
    /// Measurement epoch stamped on permits, so a minimum-RTT measurement can ignore
    /// requests admitted before it began.
    epoch: AtomicU64,
    /// Earliest time (ns since `origin`) at which the controller has something to do;
    /// lets `finish(None)` skip the controller's lock.
    next_event: AtomicU64,
    /// Published controller state, for metrics and `retry_after` without locking.
    min_rtt_ns: AtomicU64,
    sample_rtt_ns: AtomicU64,
    gradient_bits: AtomicU64,
    measuring: AtomicBool,
    queue: Mutex<Queue>,
    controller: Mutex<Controller>,
    /// Requests shed, by reason then priority.
    shed: [[AtomicU64; 3]; 3],
}

impl fmt::Debug for ConcurrencyLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConcurrencyLimiter")
            .field("limit", &self.limit())
            .field("in_flight", &self.in_flight())
            .field("queued", &self.queued())
            .field("min_rtt", &self.min_rtt())
            .field("measuring_min_rtt", &self.measuring_min_rtt())
            .finish_non_exhaustive()
    }
}

impl ConcurrencyLimiter {
    /// A limiter that first measures the minimum RTT at `config.min_limit`, then
    /// continues from `config.initial_limit`.
    pub fn new(config: AdaptiveConfig) -> Arc<Self> {
        Self::with_seed(config, fastrand::u64(..))
    }

    /// Like [`ConcurrencyLimiter::new`], with the jitter and sample reservoir drawn from
    /// `seed`, for reproducible tests and simulations.
    pub fn with_seed(config: AdaptiveConfig, seed: u64) -> Arc<Self> {
        let config = config.normalized();
        let controller = Controller::new(config.clone(), seed);
        let limiter = Self {
            origin: Instant::now(),
            limit: AtomicU32::new(controller.limit),
            learned: AtomicU32::new(if controller.measuring {
                controller.resume_limit
            } else {
                controller.limit
            }),
            in_flight: AtomicU32::new(0),
            queued: AtomicUsize::new(0),
            epoch: AtomicU64::new(controller.epoch),
            next_event: AtomicU64::new(controller.next_event()),
            min_rtt_ns: AtomicU64::new(0),
            sample_rtt_ns: AtomicU64::new(0),
            gradient_bits: AtomicU64::new(1.0f64.to_bits()),
            measuring: AtomicBool::new(controller.measuring),
            queue: Mutex::new(Queue::default()),
            controller: Mutex::new(controller),
            shed: Default::default(),
            config,
        };
        Arc::new(limiter)
    }

    /// Waits for a slot (at most `queue_timeout`), or says why the request is shed.
    ///
    /// Under the limit this takes a slot at once. At the limit a sheddable request is
    /// shed, and others queue by priority (see the [module docs](self)). Dropping the
    /// returned future gives up the request's place in the queue.
    pub async fn acquire(self: &Arc<Self>, priority: Priority) -> Result<Permit, Shed> {
        if self.queued.load(Ordering::SeqCst) == 0 && self.try_reserve() {
            return Ok(self.permit());
        }
        let waiting = match self.admit_or_enqueue(priority) {
            Admission::Admitted => return Ok(self.permit()),
            Admission::Shed(reason) => return Err(reason),
            Admission::Queued { id, rx, patience } => Waiting {
                limiter: self,
                priority,
                id,
                rx,
                patience,
                settled: false,
            },
        };
        waiting.wait().await
    }

    /// Takes a free slot without waiting, or `None` when the upstream is at its limit or
    /// others are already waiting. Counts nothing as shed.
    pub fn try_acquire(self: &Arc<Self>) -> Option<Permit> {
        (self.queued.load(Ordering::SeqCst) == 0 && self.try_reserve()).then(|| self.permit())
    }

    /// The current limit.
    pub fn limit(&self) -> u32 {
        self.limit.load(Ordering::Acquire)
    }

    /// The limit learned from latency: [`limit`](Self::limit), except while the
    /// minimum RTT is measured, when it is the limit that will come back afterwards.
    /// Saturation should be read against this, or it spikes at every measurement.
    pub fn learned_limit(&self) -> u32 {
        self.learned.load(Ordering::Relaxed)
    }

    /// Requests holding a slot.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Requests waiting for a slot.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    /// The minimum RTT measured last (zero before the first measurement).
    pub fn min_rtt(&self) -> Duration {
        Duration::from_nanos(self.min_rtt_ns.load(Ordering::Relaxed))
    }

    /// The RTT of the last sampling window that had samples (zero before the first).
    pub fn sample_rtt(&self) -> Duration {
        Duration::from_nanos(self.sample_rtt_ns.load(Ordering::Relaxed))
    }

    /// The gradient computed at the last sampling window (1.0 before the first).
    pub fn gradient(&self) -> f64 {
        f64::from_bits(self.gradient_bits.load(Ordering::Relaxed))
    }

    /// Whether the limit is pinned to `min_limit` while the minimum RTT is measured.
    pub fn measuring_min_rtt(&self) -> bool {
        self.measuring.load(Ordering::Relaxed)
    }

    /// Requests of `priority` shed for `reason` since the limiter was made.
    pub fn shed_count(&self, reason: Shed, priority: Priority) -> u64 {
        self.shed[reason.index()][priority.index()].load(Ordering::Relaxed)
    }

    /// The settings in force (out-of-range values pulled into range).
    pub fn config(&self) -> &AdaptiveConfig {
        &self.config
    }

    /// A `Retry-After` to suggest to shed clients: how long the requests ahead of a new
    /// one (in flight and queued) take to clear at the current limit, in whole seconds,
    /// between 1 s and 30 s.
    pub fn retry_after(&self) -> Duration {
        let rtt = self.sample_rtt().max(self.min_rtt());
        let backlog = f64::from(self.in_flight()) + self.queued() as f64 + 1.0;
        let clear = rtt.as_secs_f64() * backlog / f64::from(self.limit().max(1));
        let secs = Duration::from_secs(clear.ceil().min(MAX_RETRY_AFTER.as_secs_f64()) as u64);
        secs.clamp(MIN_RETRY_AFTER, MAX_RETRY_AFTER)
    }

    fn permit(self: &Arc<Self>) -> Permit {
        Permit {
            limiter: Arc::clone(self),
            epoch: self.epoch.load(Ordering::Acquire),
        }
    }

    fn now(&self) -> u64 {
        nanos(Instant::now().saturating_duration_since(self.origin))
    }

    /// Takes a slot if one is free under the limit.
    fn try_reserve(&self) -> bool {
        let limit = self.limit.load(Ordering::Acquire);
        self.in_flight
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < limit).then_some(n + 1)
            })
            .is_ok()
    }

    /// The slow path: decides under the queue lock whether to admit, queue or shed.
    fn admit_or_enqueue(&self, priority: Priority) -> Admission {
        let now = self.now();
        // Whoever finds the upstream at its limit also closes an overdue window, so a
        // limit increase is not held back until the next request finishes.
        self.poll_controller(now);
        let mut queue = self.queue.lock();
        if queue.len == 0 && self.try_reserve() {
            return Admission::Admitted;
        }
        if priority == Priority::Sheddable || self.config.queue_size == 0 {
            return self.refuse(Shed::QueueFull, priority);
        }
        if queue.len >= self.config.queue_size {
            let Some((victim_priority, victim)) = queue.pop_displaceable(priority) else {
                return self.refuse(Shed::QueueFull, priority);
            };
            self.queued.fetch_sub(1, Ordering::SeqCst);
            self.count(Shed::Displaced, victim_priority);
            // The victim is still waiting (it leaves the queue under this lock), so the
            // send cannot fail in a way that matters.
            let _ = victim.tx.send(Outcome::Displaced);
        }
        let patience = self.patience(&queue, priority, now);
        let (tx, rx) = oneshot::channel();
        let id = queue.push(priority, tx, now);
        self.queued.fetch_add(1, Ordering::SeqCst);
        // A slot may have been freed between the fast path and the registration above
        // by a release that saw no waiter; claim it now rather than sleep next to it.
        self.drain(&mut queue);
        Admission::Queued { id, rx, patience }
    }

    /// How long a request joining `queue` may wait. Critical requests, served first,
    /// get `queue_timeout`; normal ones `min_rtt × buffer`, what the gradient tolerates
    /// anyway. Before the minimum RTT is known, a normal request gets `queue_timeout`
    /// while the queue is a fresh burst and [`STANDING_QUEUE_WAIT`] once it has stood
    /// for [`STANDING_QUEUE_INTERVAL`] (CoDel's rule).
    fn patience(&self, queue: &Queue, priority: Priority, now: u64) -> Duration {
        let timeout = self.config.queue_timeout;
        if priority == Priority::Critical {
            return timeout;
        }
        let standing = queue
            .busy_since
            .is_some_and(|since| now.saturating_sub(since) >= nanos(STANDING_QUEUE_INTERVAL));
        let min_rtt = self.min_rtt();
        // Once the upstream's latency is known, a normal request never waits longer than
        // the latency the gradient tolerates (minRTT × buffer): more would make admitted
        // requests slower than the limit itself allows. Before that, and only while the
        // queue is a fresh burst, it may wait the full `queue_timeout`.
        if min_rtt.is_zero() && !standing {
            return timeout;
        }
        let wait = if min_rtt.is_zero() {
            STANDING_QUEUE_WAIT
        } else {
            min_rtt.mul_f64(self.config.buffer)
        };
        wait.max(MIN_STANDING_QUEUE_WAIT).min(timeout)
    }

    fn refuse(&self, reason: Shed, priority: Priority) -> Admission {
        self.count(reason, priority);
        Admission::Shed(reason)
    }

    fn count(&self, reason: Shed, priority: Priority) {
        self.shed[reason.index()][priority.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Grants free slots to the best waiters while there are both.
    fn drain(&self, queue: &mut Queue) {
        while queue.len > 0 && self.try_reserve() {
            let Some(waiter) = queue.pop_best() else {
                break;
            };
            self.queued.fetch_sub(1, Ordering::SeqCst);
            if waiter.tx.send(Outcome::Granted).is_err() {
                self.in_flight.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }

    /// Frees a slot, handing it straight to the best waiter when the limit allows.
    fn release(&self) {
        if self.queued.load(Ordering::SeqCst) == 0 {
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            // Paired with the registration in `admit_or_enqueue` (both SeqCst): either
            // that waiter's own drain sees the freed slot, or this load sees the waiter.
            if self.queued.load(Ordering::SeqCst) == 0 {
                return;
            }
            let mut queue = self.queue.lock();
            self.drain(&mut queue);
            return;
        }
        let mut queue = self.queue.lock();
        // The slot being freed still counts in `in_flight`, so passing it on is allowed
        // exactly when the limit has not dropped below the in-flight count.
        if self.in_flight.load(Ordering::SeqCst) <= self.limit.load(Ordering::Acquire) {
            while let Some(waiter) = queue.pop_best() {
                self.queued.fetch_sub(1, Ordering::SeqCst);
                if waiter.tx.send(Outcome::Granted).is_ok() {
                    // A raised limit may have room for more than this one.
                    self.drain(&mut queue);
                    return;
                }
            }
        }
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.drain(&mut queue);
    }

    /// Takes a waiter out of the queue; false when it was already granted or displaced.
    fn leave_queue(&self, priority: Priority, id: u64) -> bool {
        let mut queue = self.queue.lock();
        let removed = queue.remove(priority, id);
        if removed {
            self.queued.fetch_sub(1, Ordering::SeqCst);
        }
        removed
    }

    /// Records a finished request and closes the window or measurement if it is due.
    fn record(&self, rtt: Option<Duration>, epoch: u64) {
        let now = self.now();
        if rtt.is_none() && now < self.next_event.load(Ordering::Acquire) {
            return;
        }
        let mut controller = self.controller.lock();
        controller.record(now, rtt, epoch, self.in_flight.load(Ordering::Acquire));
        self.publish(&mut controller);
    }

    /// Closes an overdue window (the arrival side of the lazy window).
    fn poll_controller(&self, now: u64) {
        if now < self.next_event.load(Ordering::Acquire) {
            return;
        }
        let mut controller = self.controller.lock();
        controller.tick(now);
        self.publish(&mut controller);
    }

    /// Copies the controller's state out for lock-free readers, when it has changed
    /// (most samples change nothing, and rewriting the limit every time would keep
    /// every admitting thread's copy of it cold).
    fn publish(&self, controller: &mut Controller) {
        if !std::mem::take(&mut controller.changed) {
            return;
        }
        let before = self.limit.swap(controller.limit, Ordering::AcqRel);
        if before != controller.limit {
            tracing::trace!(
                limit = controller.limit,
                before,
                gradient = controller.gradient,
                sample_rtt = ?controller.sample_rtt,
                min_rtt = ?controller.min_rtt,
                "concurrency limit changed"
            );
        }
        self.epoch.store(controller.epoch, Ordering::Release);
        self.next_event
            .store(controller.next_event(), Ordering::Release);
        self.min_rtt_ns
            .store(nanos(controller.min_rtt), Ordering::Relaxed);
        self.sample_rtt_ns
            .store(nanos(controller.sample_rtt), Ordering::Relaxed);
        self.gradient_bits
            .store(controller.gradient.to_bits(), Ordering::Relaxed);
        self.measuring
            .store(controller.measuring, Ordering::Relaxed);
        let learned = if controller.measuring {
            controller.resume_limit
        } else {
            controller.limit
        };
        self.learned.store(learned, Ordering::Relaxed);
    }
}

/// What the slow path decided.
enum Admission {
    Admitted,
    Shed(Shed),
    Queued {
        id: u64,
        rx: oneshot::Receiver<Outcome>,
        /// How long it may wait.
        patience: Duration,
    },
}

/// What a waiter is told when it leaves the queue other than by itself.
#[derive(Debug)]
enum Outcome {
    /// A slot is now held on the waiter's behalf.
    Granted,
    /// A more important request took its place.
    Displaced,
}

/// A request in the queue; leaving it (by timeout or by being dropped) settles its place.
struct Waiting<'a> {
    limiter: &'a Arc<ConcurrencyLimiter>,
    priority: Priority,
    id: u64,
    rx: oneshot::Receiver<Outcome>,
    patience: Duration,
    /// Whether the outcome has been taken, so dropping has nothing to undo.
    settled: bool,
}

impl Waiting<'_> {
    async fn wait(mut self) -> Result<Permit, Shed> {
        let outcome = match tokio::time::timeout(self.patience, &mut self.rx).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => {
                // The sender only goes away after sending; treat the impossible as a
                // timeout rather than admitting without a slot.
                self.settled = true;
                return Err(Shed::QueueTimeout);
            }
            Err(_) => {
                if self.limiter.leave_queue(self.priority, self.id) {
                    self.settled = true;
                    self.limiter.count(Shed::QueueTimeout, self.priority);
                    return Err(Shed::QueueTimeout);
                }
                // Granted or displaced just as the timer fired: the outcome was sent
                // under the lock `leave_queue` took, so it is in the channel.
                match self.rx.try_recv() {
                    Ok(outcome) => outcome,
                    Err(_) => {
                        self.settled = true;
                        return Err(Shed::QueueTimeout);
                    }
                }
            }
        };
        self.settled = true;
        match outcome {
            Outcome::Granted => Ok(self.limiter.permit()),
            Outcome::Displaced => Err(Shed::Displaced),
        }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if self.settled || self.limiter.leave_queue(self.priority, self.id) {
            return;
        }
        // Cancelled after being granted a slot: pass the slot on.
        if let Ok(Outcome::Granted) = self.rx.try_recv() {
            self.limiter.release();
        }
    }
}

/// Waiters, one FIFO per priority.
#[derive(Debug, Default)]
struct Queue {
    /// Indexed by [`Priority::index`], oldest first.
    levels: [VecDeque<Waiter>; 3],
    /// Waiters over all levels.
    len: usize,
    /// When the queue last went from empty to not (ns since the limiter's origin).
    busy_since: Option<u64>,
    next_id: u64,
}

#[derive(Debug)]
struct Waiter {
    id: u64,
    tx: oneshot::Sender<Outcome>,
}

impl Queue {
    fn push(&mut self, priority: Priority, tx: oneshot::Sender<Outcome>, now: u64) -> u64 {
        if self.len == 0 {
            self.busy_since = Some(now);
        }
        let id = self.next_id;
        self.next_id += 1;
        self.levels[priority.index()].push_back(Waiter { id, tx });
        self.len += 1;
        id
    }

    /// The oldest waiter of the highest priority.
    fn pop_best(&mut self) -> Option<Waiter> {
        let waiter = self.levels.iter_mut().rev().find_map(VecDeque::pop_front)?;
        self.shrunk();
        Some(waiter)
    }

    /// The newest waiter of the lowest priority below `arriving`.
    fn pop_displaceable(&mut self, arriving: Priority) -> Option<(Priority, Waiter)> {
        let (priority, waiter) = Priority::ALL
            .into_iter()
            .take_while(|p| *p < arriving)
            .find_map(|p| self.levels[p.index()].pop_back().map(|w| (p, w)))?;
        self.shrunk();
        Some((priority, waiter))
    }

    fn remove(&mut self, priority: Priority, id: u64) -> bool {
        let level = &mut self.levels[priority.index()];
        let Some(at) = level.iter().position(|w| w.id == id) else {
            return false;
        };
        level.remove(at);
        self.shrunk();
        true
    }

    fn shrunk(&mut self) {
        self.len -= 1;
        if self.len == 0 {
            self.busy_since = None;
        }
    }
}

/// The gradient controller: pure arithmetic over samples and explicit timestamps
/// (nanoseconds since the limiter's origin).
#[derive(Debug)]
struct Controller {
    config: AdaptiveConfig,
    limit: u32,
    /// Whether the limit is pinned to `min_limit` for a minimum-RTT measurement.
    measuring: bool,
    /// The limit to go back to once the measurement is done.
    resume_limit: u32,
    /// Bumped at each measurement; only permits of the current epoch count in it.
    epoch: u64,
    /// The current window's (or measurement's) samples.
    samples: Vec<Duration>,
    /// Samples offered to the window, kept or not (the reservoir's denominator).
    offered: u64,
    /// Most slots in use seen by a request finishing in this window.
    peak_in_flight: u32,
    window_end: u64,
    next_min_rtt: u64,
    min_rtt: Duration,
    sample_rtt: Duration,
    gradient: f64,
    /// Consecutive windows that ended with the limit at `min_limit`.
    windows_at_min: u32,
    /// Whether anything readers see has changed since the limiter last published.
    changed: bool,
    rng: fastrand::Rng,
}

impl Controller {
    fn new(config: AdaptiveConfig, seed: u64) -> Self {
        let mut controller = Self {
            limit: config.initial_limit,
            measuring: false,
            resume_limit: config.initial_limit,
            epoch: 0,
            samples: Vec::new(),
            offered: 0,
            peak_in_flight: 0,
            window_end: 0,
            next_min_rtt: 0,
            min_rtt: Duration::ZERO,
            sample_rtt: Duration::ZERO,
            gradient: 1.0,
            windows_at_min: 0,
            changed: true,
            rng: fastrand::Rng::with_seed(seed),
            config,
        };
        controller.start_measurement();
        controller
    }

    /// When `tick` next has something to do (never, while measuring: samples end it).
    fn next_event(&self) -> u64 {
        if self.measuring {
            u64::MAX
        } else {
            self.window_end.min(self.next_min_rtt)
        }
    }

    fn record(&mut self, now: u64, rtt: Option<Duration>, epoch: u64, in_flight: u32) {
        if self.measuring {
            if let Some(rtt) = rtt {
                if epoch == self.epoch {
                    self.samples.push(rtt);
                    if self.samples.len() >= self.config.min_rtt_samples as usize {
                        self.end_measurement(now);
                    }
                }
            }
            return;
        }
        if let Some(rtt) = rtt {
            self.offer(rtt);
            self.peak_in_flight = self.peak_in_flight.max(in_flight);
        }
        self.tick(now);
    }

    fn tick(&mut self, now: u64) {
        if self.measuring {
            return;
        }
        if now >= self.next_min_rtt {
            self.start_measurement();
        } else if now >= self.window_end {
            self.close_window(now);
        }
    }

    /// Adds a sample to the window, keeping a uniform subset once the window is full.
    fn offer(&mut self, rtt: Duration) {
        self.offered += 1;
        if self.samples.len() < MAX_WINDOW_SAMPLES {
            self.samples.push(rtt);
        } else {
            let slot = self.rng.u64(..self.offered) as usize;
            if let Some(kept) = self.samples.get_mut(slot) {
                *kept = rtt;
            }
        }
    }

    fn close_window(&mut self, now: u64) {
        if !self.samples.is_empty() {
            self.sample_rtt = percentile(&mut self.samples, self.config.sample_percentile);
            self.gradient = gradient(self.min_rtt, self.sample_rtt, self.config.buffer);
            // Growing a limit the traffic never came near would only leave a large limit
            // behind for the next burst to overload the upstream with.
            let app_limited =
                self.gradient > 1.0 && u64::from(self.peak_in_flight) * 2 < u64::from(self.limit);
            if !app_limited {
                self.limit = next_limit(self.limit, self.gradient, &self.config);
            }
            if self.limit == self.config.min_limit {
                self.windows_at_min += 1;
            } else {
                self.windows_at_min = 0;
            }
        }
        self.samples.clear();
        self.offered = 0;
        self.peak_in_flight = 0;
        self.window_end = now.saturating_add(nanos(self.config.sample_window));
        self.changed = true;
        if self.windows_at_min >= WINDOWS_AT_MIN_BEFORE_REMEASURE {
            self.start_measurement();
        }
    }

    fn start_measurement(&mut self) {
        tracing::debug!(limit = self.limit, "measuring the minimum RTT");
        self.resume_limit = self.limit;
        self.limit = self.config.min_limit;
        self.measuring = true;
        self.changed = true;
        self.epoch += 1;
        self.samples.clear();
        self.offered = 0;
        self.peak_in_flight = 0;
        self.windows_at_min = 0;
    }

    fn end_measurement(&mut self, now: u64) {
        self.min_rtt = percentile(&mut self.samples, self.config.sample_percentile);
        tracing::debug!(min_rtt = ?self.min_rtt, limit = self.resume_limit, "minimum RTT measured");
        self.limit = self.resume_limit;
        self.measuring = false;
        self.changed = true;
        self.samples.clear();
        self.window_end = now.saturating_add(nanos(self.config.sample_window));
        let jitter = 1.0 + MIN_RTT_JITTER * (2.0 * self.rng.f64() - 1.0);
        let interval = nanos(self.config.min_rtt_interval) as f64 * jitter;
        self.next_min_rtt = now.saturating_add(interval as u64);
    }
}

/// `minRTT × (1 + buffer) / sampleRTT`, within [0.5, 2].
fn gradient(min_rtt: Duration, sample_rtt: Duration, buffer: f64) -> f64 {
    if sample_rtt.is_zero() {
        return MAX_GRADIENT;
    }
    let gradient = min_rtt.as_secs_f64() * (1.0 + buffer) / sample_rtt.as_secs_f64();
    gradient.clamp(MIN_GRADIENT, MAX_GRADIENT)
}

/// `gradient × limit` plus Envoy's burst headroom of its square root, within bounds.
fn next_limit(limit: u32, gradient: f64, config: &AdaptiveConfig) -> u32 {
    let scaled = f64::from(limit) * gradient;
    let next = (scaled + scaled.sqrt()).floor();
    (next.min(f64::from(u32::MAX)) as u32).clamp(config.min_limit, config.max_limit)
}

/// The `p` quantile of `samples` (nearest rank); `samples` must not be empty.
fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    let n = samples.len();
    let rank = ((p * n as f64).ceil() as usize).clamp(1, n) - 1;
    *samples.select_nth_unstable(rank).1
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// A slot at the upstream; dropping it without [`Permit::finish`] frees the slot and
/// records no sample.
#[derive(Debug)]
pub struct Permit {
    limiter: Arc<ConcurrencyLimiter>,
    /// The measurement epoch the slot was granted in.
    epoch: u64,
}

impl Permit {
    /// Frees the slot, recording `rtt` (admission to response head) as a latency sample
    /// when given. Pass `None` for failures that say nothing about the upstream's latency.
    pub fn finish(self, rtt: Option<Duration>) {
        // Recorded before the slot is freed so a raised limit is in force when the
        // slot is handed on.
        self.limiter.record(rtt, self.epoch);
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.limiter.release();
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::Pin;
    use std::task::{Context, Poll, Waker};

    use tokio::sync::Semaphore;
    use tokio::time::advance;

    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// A limiter whose limit never moves, for queue tests.
    fn fixed(limit: u32, queue_size: usize) -> Arc<ConcurrencyLimiter> {
        ConcurrencyLimiter::with_seed(
            AdaptiveConfig {
                min_limit: limit,
                max_limit: limit,
                initial_limit: limit,
                queue_size,
                ..AdaptiveConfig::default()
            },
            1,
        )
    }

    fn adaptive() -> AdaptiveConfig {
        AdaptiveConfig {
            min_limit: 2,
            max_limit: 100,
            initial_limit: 10,
            sample_window: 100 * MS,
            sample_percentile: 0.9,
            min_rtt_interval: Duration::from_secs(60),
            min_rtt_samples: 4,
            buffer: 0.25,
            queue_size: 4,
            queue_timeout: 100 * MS,
        }
    }

    /// An `acquire` driven by hand, keeping its result once it has one.
    struct Acquire {
        future: Pin<Box<dyn Future<Output = Result<Permit, Shed>> + Send>>,
        result: Option<Result<Permit, Shed>>,
    }

    /// Starts an `acquire` and polls it once, so it is admitted, shed or queued now.
    fn start(limiter: &Arc<ConcurrencyLimiter>, priority: Priority) -> Acquire {
        let limiter = Arc::clone(limiter);
        let mut acquire = Acquire {
            future: Box::pin(async move { limiter.acquire(priority).await }),
            result: None,
        };
        pending(&mut acquire);
        acquire
    }

    /// Polls a started `acquire`; true while it is still waiting.
    fn pending(acquire: &mut Acquire) -> bool {
        if acquire.result.is_none() {
            let mut cx = Context::from_waker(Waker::noop());
            if let Poll::Ready(result) = acquire.future.as_mut().poll(&mut cx) {
                acquire.result = Some(result);
            }
        }
        acquire.result.is_none()
    }

    /// The result of a started `acquire` that must have finished.
    fn ready(acquire: &mut Acquire) -> Result<Permit, Shed> {
        assert!(!pending(acquire), "acquire still waiting");
        acquire.result.take().expect("result taken once")
    }

    /// Completes the minimum-RTT measurement with samples of `rtt`.
    fn measure(limiter: &Arc<ConcurrencyLimiter>, rtt: Duration) {
        assert!(limiter.measuring_min_rtt());
        while limiter.measuring_min_rtt() {
            let permit = limiter.try_acquire().expect("a slot at min_limit");
            permit.finish(Some(rtt));
        }
    }

    /// Holds `n` slots at once, then finishes them all in `rtt`.
    fn samples(limiter: &Arc<ConcurrencyLimiter>, n: u32, rtt: Duration) {
        let permits: Vec<Permit> = (0..n)
            .map(|_| limiter.try_acquire().expect("a free slot"))
            .collect();
        for permit in permits {
            permit.finish(Some(rtt));
        }
    }

    /// One full sampling window with the limit in use and every request taking `rtt`.
    async fn window(limiter: &Arc<ConcurrencyLimiter>, rtt: Duration) {
        let n = limiter.limit();
        samples(limiter, n, rtt);
        advance(limiter.config().sample_window).await;
        // The first request to finish after the window's end closes it.
        samples(limiter, 1, rtt);
    }

    #[tokio::test(start_paused = true)]
    async fn admits_up_to_the_limit_then_queues() {
        let limiter = fixed(3, 4);
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(limiter.acquire(Priority::Normal).await.unwrap());
        }
        assert_eq!(limiter.in_flight(), 3);
        assert!(limiter.try_acquire().is_none());

        let mut fourth = start(&limiter, Priority::Normal);
        assert!(pending(&mut fourth));
        assert_eq!((limiter.in_flight(), limiter.queued()), (3, 1));

        drop(held.pop());
        // The freed slot went to the waiter, never back to the pool.
        assert_eq!((limiter.in_flight(), limiter.queued()), (3, 0));
        assert!(limiter.try_acquire().is_none());
        held.push(ready(&mut fourth).unwrap());
        drop(held);
        assert_eq!(limiter.in_flight(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn hands_slots_to_waiters_by_priority_then_arrival() {
        let limiter = fixed(1, 8);
        let mut held = limiter.acquire(Priority::Normal).await.unwrap();
        let mut waiters = vec![
            ("normal-a", start(&limiter, Priority::Normal)),
            ("critical-b", start(&limiter, Priority::Critical)),
            ("normal-c", start(&limiter, Priority::Normal)),
            ("critical-d", start(&limiter, Priority::Critical)),
        ];
        assert_eq!(limiter.queued(), 4);

        let mut order = Vec::new();
        while !waiters.is_empty() {
            drop(held);
            let at = waiters
                .iter_mut()
                .position(|(_, w)| !pending(w))
                .expect("one waiter was granted the slot");
            let (name, mut waiter) = waiters.remove(at);
            held = ready(&mut waiter).unwrap();
            order.push(name);
            assert!(
                waiters.iter_mut().all(|(_, w)| pending(w)),
                "one slot, one waiter"
            );
        }
        assert_eq!(order, ["critical-b", "critical-d", "normal-a", "normal-c"]);
        drop(held);
        assert_eq!((limiter.in_flight(), limiter.queued()), (0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn sheddable_requests_never_wait() {
        let limiter = fixed(1, 4);
        // Under the limit a sheddable request goes through like any other.
        let held = limiter.acquire(Priority::Sheddable).await.unwrap();
        // At the limit it is shed at once, even with room in the queue.
        assert_eq!(
            limiter.acquire(Priority::Sheddable).await.unwrap_err(),
            Shed::QueueFull
        );
        assert_eq!(limiter.queued(), 0);
        // While others wait, it is shed too.
        let mut normal = start(&limiter, Priority::Normal);
        assert_eq!(
            limiter.acquire(Priority::Sheddable).await.unwrap_err(),
            Shed::QueueFull
        );
        assert_eq!(limiter.shed_count(Shed::QueueFull, Priority::Sheddable), 2);
        drop(held);
        drop(ready(&mut normal).unwrap());
        assert_eq!(limiter.in_flight(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn full_queue_displaces_newest_of_lowest_priority() {
        let limiter = fixed(1, 2);
        let held = limiter.acquire(Priority::Normal).await.unwrap();
        let mut a = start(&limiter, Priority::Normal);
        let mut b = start(&limiter, Priority::Normal);
        assert_eq!(limiter.queued(), 2);

        let mut c = start(&limiter, Priority::Critical);
        assert_eq!(
            ready(&mut b).unwrap_err(),
            Shed::Displaced,
            "newest normal goes"
        );
        assert!(pending(&mut a));
        let mut d = start(&limiter, Priority::Critical);
        assert_eq!(ready(&mut a).unwrap_err(), Shed::Displaced);
        assert_eq!(limiter.queued(), 2);

        // A queue full of requests at least as important turns the arrival away.
        let mut e = start(&limiter, Priority::Critical);
        assert_eq!(ready(&mut e).unwrap_err(), Shed::QueueFull);
        let mut f = start(&limiter, Priority::Normal);
        assert_eq!(ready(&mut f).unwrap_err(), Shed::QueueFull);

        drop(held);
        let c = ready(&mut c).unwrap();
        assert!(pending(&mut d));
        drop(c);
        drop(ready(&mut d).unwrap());

        assert_eq!(limiter.shed_count(Shed::Displaced, Priority::Normal), 2);
        assert_eq!(limiter.shed_count(Shed::QueueFull, Priority::Critical), 1);
        assert_eq!(limiter.shed_count(Shed::QueueFull, Priority::Normal), 1);
        assert_eq!(limiter.shed_count(Shed::Displaced, Priority::Critical), 0);
        assert_eq!((limiter.in_flight(), limiter.queued()), (0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn sheddable_go_first_and_critical_last() {
        let limiter = fixed(2, 3);
        let held: Vec<Permit> = vec![
            limiter.acquire(Priority::Sheddable).await.unwrap(),
            limiter.acquire(Priority::Sheddable).await.unwrap(),
        ];
        let mut normals: Vec<Acquire> = (0..3).map(|_| start(&limiter, Priority::Normal)).collect();
        assert_eq!(limiter.queued(), 3);
        let mut sheddable = start(&limiter, Priority::Sheddable);
        assert_eq!(ready(&mut sheddable).unwrap_err(), Shed::QueueFull);

        // Critical arrivals push every normal out before one critical is refused.
        let mut criticals: Vec<Acquire> = (0..3)
            .map(|_| start(&limiter, Priority::Critical))
            .collect();
        for normal in &mut normals {
            assert_eq!(ready(normal).unwrap_err(), Shed::Displaced);
        }
        assert!(criticals.iter_mut().all(pending));
        let mut fourth = start(&limiter, Priority::Critical);
        assert_eq!(ready(&mut fourth).unwrap_err(), Shed::QueueFull);

        // The critical waiters get the next slots, in arrival order.
        drop(held);
        let first = ready(&mut criticals[0]).unwrap();
        let second = ready(&mut criticals[1]).unwrap();
        assert!(pending(&mut criticals[2]));
        drop((first, second));
        drop(ready(&mut criticals[2]).unwrap());
        assert_eq!(limiter.shed_count(Shed::QueueFull, Priority::Critical), 1);
        assert_eq!((limiter.in_flight(), limiter.queued()), (0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_time_out() {
        let limiter = fixed(1, 4);
        let held = limiter.acquire(Priority::Normal).await.unwrap();
        let waiter = tokio::spawn({
            let limiter = Arc::clone(&limiter);
            async move {
                let started = Instant::now();
                let result = limiter.acquire(Priority::Critical).await;
                (result.map(drop), started.elapsed())
            }
        });
        tokio::task::yield_now().await;
        assert_eq!(limiter.queued(), 1);
        let (result, waited) = waiter.await.unwrap();
        assert_eq!(result, Err(Shed::QueueTimeout));
        assert_eq!(waited, limiter.config().queue_timeout);
        assert_eq!(
            limiter.shed_count(Shed::QueueTimeout, Priority::Critical),
            1
        );
        assert_eq!(limiter.queued(), 0);
        drop(held);
        assert_eq!(limiter.in_flight(), 0);
    }

    /// How long an `acquire` spawned now waits before it is shed (None: admitted).
    fn time_to_shed(
        limiter: &Arc<ConcurrencyLimiter>,
        priority: Priority,
    ) -> tokio::task::JoinHandle<Option<Duration>> {
        let limiter = Arc::clone(limiter);
        tokio::spawn(async move {
            let started = Instant::now();
            limiter.acquire(priority).await.err()?;
            Some(started.elapsed())
        })
    }

    #[tokio::test(start_paused = true)]
    async fn normal_requests_wait_no_longer_than_the_gradient_tolerates() {
        let config = AdaptiveConfig {
            queue_timeout: Duration::from_secs(1),
            ..adaptive()
        };
        let limiter = ConcurrencyLimiter::with_seed(config, 1);
        // Before the minimum RTT is known, a fresh queue absorbs a burst for the full
        // queue_timeout; a queue that has stood for 100 ms holds a normal request 5 ms.
        let mut held: Vec<Permit> = (0..2).map(|_| limiter.try_acquire().unwrap()).collect();
        let mut first = start(&limiter, Priority::Critical);
        let early = time_to_shed(&limiter, Priority::Normal);
        tokio::task::yield_now().await;
        assert_eq!(limiter.queued(), 2);
        advance(100 * MS).await;
        let standing = time_to_shed(&limiter, Priority::Normal);
        assert_eq!(standing.await.unwrap(), Some(5 * MS));
        drop(held.pop());
        let granted = ready(&mut first).unwrap();
        assert_eq!(early.await.unwrap(), Some(Duration::from_secs(1)));
        drop(granted);
        drop(held);
        assert_eq!((limiter.in_flight(), limiter.queued()), (0, 0));

        // Once it is known (20 ms), a normal request waits at most minRTT × buffer = 5 ms,
        // even in a fresh queue; a critical one the full queue_timeout.
        measure(&limiter, 20 * MS);
        let mut held: Vec<Permit> = (0..10).map(|_| limiter.try_acquire().unwrap()).collect();
        let normal = time_to_shed(&limiter, Priority::Normal);
        let critical = time_to_shed(&limiter, Priority::Critical);
        assert_eq!(normal.await.unwrap(), Some(5 * MS));
        assert_eq!(critical.await.unwrap(), Some(Duration::from_secs(1)));
        held.clear();
        assert_eq!((limiter.in_flight(), limiter.queued()), (0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn cancelled_waiters_leave_the_queue() {
        let limiter = fixed(1, 4);
        let held = limiter.acquire(Priority::Normal).await.unwrap();
        let waiter = start(&limiter, Priority::Normal);
        let task = tokio::spawn({
            let limiter = Arc::clone(&limiter);
            async move { limiter.acquire(Priority::Critical).await.map(drop) }
        });
        tokio::task::yield_now().await;
        assert_eq!(limiter.queued(), 2);
        drop(waiter);
        task.abort();
        assert!(task.await.unwrap_err().is_cancelled());
        assert_eq!(limiter.queued(), 0);
        // Nobody is left to hand the slot to, so it goes back to the pool.
        drop(held);
        assert_eq!(limiter.in_flight(), 0);
        assert!(limiter.try_acquire().is_some());
        assert_eq!(limiter.shed_count(Shed::QueueTimeout, Priority::Normal), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn cancelled_waiter_passes_on_a_slot_it_was_granted() {
        let limiter = fixed(1, 4);
        let held = limiter.acquire(Priority::Normal).await.unwrap();
        let first = start(&limiter, Priority::Critical);
        let mut second = start(&limiter, Priority::Normal);
        drop(held);
        // The slot is now held on `first`'s behalf; it gives up before taking it.
        assert_eq!((limiter.in_flight(), limiter.queued()), (1, 1));
        drop(first);
        let permit = ready(&mut second).unwrap();
        assert_eq!((limiter.in_flight(), limiter.queued()), (1, 0));

        // With no one left to pass it to, a slot granted to a cancelled waiter is freed.
        let mut third = start(&limiter, Priority::Normal);
        assert!(pending(&mut third));
        drop(permit);
        assert_eq!((limiter.in_flight(), limiter.queued()), (1, 0));
        drop(third);
        assert_eq!(limiter.in_flight(), 0);
        assert!(limiter.try_acquire().is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_queue_the_limit_sheds_at_once() {
        let limiter = fixed(1, 0);
        let held = limiter.acquire(Priority::Critical).await.unwrap();
        assert_eq!(
            limiter.acquire(Priority::Critical).await.unwrap_err(),
            Shed::QueueFull
        );
        drop(held);
        assert_eq!(limiter.in_flight(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn starts_by_measuring_min_rtt_at_min_limit() {
        let limiter = ConcurrencyLimiter::with_seed(adaptive(), 1);
        assert!(limiter.measuring_min_rtt());
        assert_eq!(limiter.limit(), 2);
        // Saturation is read against the limit that comes back, not the pinned one.
        assert_eq!(limiter.learned_limit(), 10);
        assert_eq!(limiter.min_rtt(), Duration::ZERO);
        // A failure says nothing about latency and does not count.
        limiter.try_acquire().unwrap().finish(None);
        drop(limiter.try_acquire().unwrap());
        assert!(limiter.measuring_min_rtt());
        // Four samples: p90 (nearest rank) of 10, 10, 10 and 30 ms is 30 ms.
        samples(&limiter, 2, 10 * MS);
        samples(&limiter, 1, 10 * MS);
        assert!(limiter.measuring_min_rtt());
        samples(&limiter, 1, 30 * MS);
        assert!(!limiter.measuring_min_rtt());
        assert_eq!(limiter.min_rtt(), 30 * MS);
        assert_eq!(limiter.limit(), 10, "continues from initial_limit");
    }

    #[tokio::test(start_paused = true)]
    async fn limit_shrinks_when_latency_rises_over_the_buffer() {
        let limiter = ConcurrencyLimiter::with_seed(adaptive(), 1);
        measure(&limiter, 10 * MS);
        assert_eq!(limiter.limit(), 10);
        // Latency within the 25% buffer: the limit still grows.
        window(&limiter, 12 * MS).await;
        // gradient = 12.5 / 12; limit = floor(10.41 + 3.23) = 13
        assert_eq!(limiter.limit(), 13);
        window(&limiter, 25 * MS).await;
        // gradient = 12.5 / 25 = 0.5; limit = floor(6.5 + 2.55) = 9
        assert!((limiter.gradient() - 0.5).abs() < 1e-9);
        assert_eq!(limiter.sample_rtt(), 25 * MS);
        assert_eq!(limiter.limit(), 9);
        window(&limiter, 20 * MS).await;
        // gradient = 0.625; limit = floor(5.625 + 2.37) = 7
        assert_eq!(limiter.limit(), 7);
    }

    #[tokio::test(start_paused = true)]
    async fn limit_grows_while_latency_stays_at_min_rtt() {
        let limiter = ConcurrencyLimiter::with_seed(adaptive(), 1);
        measure(&limiter, 10 * MS);
        let mut limits = Vec::new();
        for _ in 0..4 {
            window(&limiter, 10 * MS).await;
            limits.push(limiter.limit());
        }
        // limit × 1.25 + sqrt(limit × 1.25), rounded down.
        assert_eq!(limits, [16, 24, 35, 50]);
        assert!((limiter.gradient() - 1.25).abs() < 1e-9);
    }

    #[tokio::test(start_paused = true)]
    async fn limit_does_not_grow_past_what_traffic_uses() {
        let limiter = ConcurrencyLimiter::with_seed(adaptive(), 1);
        measure(&limiter, 10 * MS);
        for _ in 0..3 {
            samples(&limiter, 4, 10 * MS);
            advance(100 * MS).await;
            samples(&limiter, 1, 10 * MS);
        }
        assert_eq!(
            limiter.limit(),
            10,
            "4 of 10 slots in use: not the upstream's limit"
        );
        // It still shrinks when latency says so: gradient 12.5 / 40 is held at 0.5.
        samples(&limiter, 2, 40 * MS);
        advance(100 * MS).await;
        samples(&limiter, 1, 40 * MS);
        assert_eq!(limiter.limit(), 7);
    }

    #[tokio::test(start_paused = true)]
    async fn window_without_samples_keeps_the_limit() {
        let limiter = ConcurrencyLimiter::with_seed(adaptive(), 1);
        measure(&limiter, 10 * MS);
        let permits: Vec<Permit> = (0..10).map(|_| limiter.try_acquire().unwrap()).collect();
        advance(150 * MS).await;
        for permit in permits {
            permit.finish(None);
        }
        assert_eq!(limiter.limit(), 10);
        assert_eq!(limiter.sample_rtt(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn limit_stays_within_bounds() {
        let limiter = ConcurrencyLimiter::with_seed(adaptive(), 1);
        measure(&limiter, 10 * MS);
        for _ in 0..12 {
            window(&limiter, 10 * MS).await;
            assert!(limiter.limit() <= 100);
        }
        assert_eq!(limiter.limit(), 100);
        for _ in 0..10 {
            window(&limiter, 200 * MS).await;
            assert!(limiter.limit() >= 2);
        }
        assert_eq!(limiter.limit(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn admissions_wait_until_in_flight_drops_below_a_shrunken_limit() {
        let config = AdaptiveConfig {
            queue_timeout: Duration::from_secs(1),
            ..adaptive()
        };
        let limiter = ConcurrencyLimiter::with_seed(config, 1);
        measure(&limiter, 10 * MS);
        let mut held: Vec<Permit> = (0..10).map(|_| limiter.try_acquire().unwrap()).collect();
        let mut waiter = start(&limiter, Priority::Critical);
        assert!(pending(&mut waiter));
        advance(100 * MS).await;
        // Closes the window on a p90 of 20 ms: limit = floor(6.25 + 2.5) = 8.
        held.pop().unwrap().finish(Some(20 * MS));
        assert_eq!(limiter.limit(), 8);
        assert_eq!(
            limiter.in_flight(),
            9,
            "the slot was not handed on over the limit"
        );
        drop(held.pop());
        assert!(pending(&mut waiter));
        assert!(limiter.try_acquire().is_none());
        drop(held.pop());
        // 8 in flight became 7, and the freed slot went to the waiter.
        let permit = ready(&mut waiter).unwrap();
        assert_eq!((limiter.in_flight(), limiter.limit()), (8, 8));
        drop((permit, held));
        assert_eq!(limiter.in_flight(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn min_rtt_is_measured_again_at_min_limit() {
        let limiter = ConcurrencyLimiter::with_seed(
            AdaptiveConfig {
                min_rtt_interval: Duration::from_secs(1),
                ..adaptive()
            },
            1,
        );
        measure(&limiter, 10 * MS);
        let mut old: Vec<Permit> = (0..5).map(|_| limiter.try_acquire().unwrap()).collect();
        // Past the interval plus its largest jitter.
        advance(Duration::from_millis(1200)).await;
        old.pop().unwrap().finish(Some(50 * MS));
        assert!(limiter.measuring_min_rtt());
        assert_eq!(limiter.limit(), 2);
        assert!(
            limiter.try_acquire().is_none(),
            "4 in flight over a limit of 2"
        );
        // Requests admitted before the pin saw a busier upstream: ignored.
        for permit in old {
            permit.finish(Some(50 * MS));
        }
        assert!(limiter.measuring_min_rtt());
        assert_eq!(limiter.min_rtt(), 10 * MS);
        measure(&limiter, 8 * MS);
        assert_eq!(limiter.min_rtt(), 8 * MS);
        assert_eq!(limiter.limit(), 10, "the limit from before the pin");
    }

    #[tokio::test(start_paused = true)]
    async fn min_rtt_is_measured_again_after_five_windows_at_min_limit() {
        let limiter = ConcurrencyLimiter::with_seed(adaptive(), 1);
        measure(&limiter, 10 * MS);
        let mut windows = 0;
        while !limiter.measuring_min_rtt() {
            window(&limiter, 100 * MS).await;
            windows += 1;
            assert!(windows < 20, "never re-measured");
        }
        // 10 -> 7 -> 5 -> 4 -> 3 -> 2, then four more windows at 2.
        assert_eq!(windows, 9);
        assert_eq!(limiter.limit(), 2);
        measure(&limiter, 100 * MS);
        assert_eq!(limiter.min_rtt(), 100 * MS);
        window(&limiter, 100 * MS).await;
        assert_eq!(
            limiter.limit(),
            4,
            "grows again against the new minimum RTT"
        );
    }

    #[test]
    fn percentile_is_nearest_rank() {
        let mut samples: Vec<Duration> = (1..=10).rev().map(|n| n * MS).collect();
        assert_eq!(percentile(&mut samples, 0.9), 9 * MS);
        assert_eq!(percentile(&mut samples, 0.5), 5 * MS);
        assert_eq!(percentile(&mut samples, 1.0), 10 * MS);
        assert_eq!(percentile(&mut samples, 0.0), MS);
        assert_eq!(percentile(&mut [7 * MS], 0.9), 7 * MS);
    }

    #[test]
    fn gradient_is_clamped() {
        assert_eq!(gradient(10 * MS, 10 * MS, 0.0), 1.0);
        assert_eq!(gradient(10 * MS, 1000 * MS, 0.25), 0.5);
        assert_eq!(gradient(10 * MS, MS, 0.25), 2.0);
        assert_eq!(gradient(10 * MS, Duration::ZERO, 0.25), 2.0);
    }

    #[test]
    fn window_samples_are_bounded() {
        let mut controller = Controller::new(adaptive().normalized(), 3);
        controller.record(0, Some(MS), 1, 1);
        controller.record(0, Some(MS), 1, 1);
        controller.record(0, Some(MS), 1, 1);
        controller.record(0, Some(MS), 1, 1);
        assert!(!controller.measuring);
        for n in 0..20_000u64 {
            controller.record(1, Some(Duration::from_micros(n)), 1, 10);
        }
        assert_eq!(controller.samples.len(), MAX_WINDOW_SAMPLES);
        assert_eq!(controller.offered, 20_000);
    }

    #[test]
    fn config_is_pulled_into_range() {
        let limiter = ConcurrencyLimiter::new(AdaptiveConfig {
            min_limit: 0,
            max_limit: 0,
            initial_limit: 50,
            sample_percentile: f64::NAN,
            min_rtt_samples: 0,
            buffer: -1.0,
            ..AdaptiveConfig::default()
        });
        let config = limiter.config();
        assert_eq!(
            (config.min_limit, config.max_limit, config.initial_limit),
            (1, 1, 1)
        );
        assert_eq!(
            (
                config.sample_percentile,
                config.min_rtt_samples,
                config.buffer
            ),
            (0.9, 1, 0.0)
        );
        assert_eq!(limiter.limit(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_is_whole_seconds() {
        let limiter = ConcurrencyLimiter::with_seed(adaptive(), 1);
        assert_eq!(limiter.retry_after(), Duration::from_secs(1));
        measure(&limiter, Duration::from_millis(900));
        let held: Vec<Permit> = (0..10).map(|_| limiter.try_acquire().unwrap()).collect();
        // 11 requests ahead at 10 per 900 ms: just under 1 s, rounded up.
        assert_eq!(limiter.retry_after(), Duration::from_secs(1));
        let waiters: Vec<Acquire> = (0..4).map(|_| start(&limiter, Priority::Normal)).collect();
        // 15 ahead: 1.35 s, rounded up.
        assert_eq!(limiter.retry_after(), Duration::from_secs(2));
        drop((waiters, held));
    }

    #[test]
    fn limiter_is_shareable_across_threads() {
        fn send_sync<T: Send + Sync>(_: &T) {}
        fn send<T: Send>(_: &T) {}
        let limiter = fixed(1, 1);
        send_sync(&limiter);
        let acquire = limiter.acquire(Priority::Normal);
        send(&acquire);
        let permit = limiter.try_acquire();
        send_sync(&permit);
    }

    /// Several OS threads, each with its own runtime, acquire and finish at once; some
    /// give up waiting, some drop their permit, some fail without a sample. Returns how
    /// many requests were admitted.
    fn stress(limiter: &Arc<ConcurrencyLimiter>, fixed_limit: bool) -> u64 {
        const THREADS: usize = 4;
        const TASKS: usize = 32;
        const ROUNDS: usize = 200;
        let holders = Arc::new(AtomicU32::new(0));
        let most = Arc::new(AtomicU32::new(0));
        let admitted = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..THREADS)
            .map(|thread| {
                let (limiter, holders, most, admitted) = (
                    Arc::clone(limiter),
                    Arc::clone(&holders),
                    Arc::clone(&most),
                    Arc::clone(&admitted),
                );
                std::thread::spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap();
                    let mut tasks = tokio::task::JoinSet::new();
                    for task in 0..TASKS {
                        let (limiter, holders, most, admitted) = (
                            Arc::clone(&limiter),
                            Arc::clone(&holders),
                            Arc::clone(&most),
                            Arc::clone(&admitted),
                        );
                        tasks.spawn_on(
                            async move {
                                for round in 0..ROUNDS {
                                    let n = thread + task + round;
                                    let priority = Priority::ALL[n % 3];
                                    let patience = Duration::from_micros(fastrand::u64(..3000));
                                    let acquire = limiter.acquire(priority);
                                    let Ok(Ok(permit)) =
                                        tokio::time::timeout(patience, acquire).await
                                    else {
                                        tokio::task::yield_now().await;
                                        continue;
                                    };
                                    admitted.fetch_add(1, Ordering::Relaxed);
                                    let now = holders.fetch_add(1, Ordering::SeqCst) + 1;
                                    most.fetch_max(now, Ordering::SeqCst);
                                    if fixed_limit {
                                        assert!(limiter.in_flight() <= limiter.limit());
                                    }
                                    if fastrand::u8(..4) == 0 {
                                        let hold = Duration::from_micros(fastrand::u64(..1500));
                                        tokio::time::sleep(hold).await;
                                    } else {
                                        tokio::task::yield_now().await;
                                    }
                                    holders.fetch_sub(1, Ordering::SeqCst);
                                    match n % 4 {
                                        0 | 1 => permit.finish(Some(MS * fastrand::u32(1..4))),
                                        2 => permit.finish(None),
                                        _ => drop(permit),
                                    }
                                }
                            },
                            runtime.handle(),
                        );
                    }
                    runtime.block_on(async move {
                        while let Some(done) = tasks.join_next().await {
                            done.unwrap();
                        }
                    });
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert_eq!(limiter.in_flight(), 0);
        assert_eq!(limiter.queued(), 0);
        if fixed_limit {
            assert!(most.load(Ordering::SeqCst) <= limiter.limit());
        }
        admitted.load(Ordering::Relaxed)
    }

    #[test]
    fn threads_never_exceed_a_fixed_limit_and_leak_nothing() {
        let limiter = ConcurrencyLimiter::new(AdaptiveConfig {
            queue_timeout: 2 * MS,
            ..fixed(6, 8).config().clone()
        });
        let admitted = stress(&limiter, true);
        assert!(admitted > 100, "{admitted}");
        assert!(limiter.try_acquire().is_some());
    }

    #[test]
    fn threads_leak_nothing_while_the_limit_moves() {
        let limiter = ConcurrencyLimiter::new(AdaptiveConfig {
            min_limit: 2,
            max_limit: 40,
            initial_limit: 8,
            sample_window: 3 * MS,
            min_rtt_interval: 40 * MS,
            min_rtt_samples: 5,
            queue_size: 6,
            queue_timeout: 2 * MS,
            ..AdaptiveConfig::default()
        });
        let admitted = stress(&limiter, false);
        assert!(admitted > 100, "{admitted}");
        let limit = limiter.limit();
        assert!((2..=40).contains(&limit));
    }

    /// How the simulated upstream turns load into latency.
    #[derive(Debug, Clone, Copy)]
    enum Upstream {
        /// 20 ms up to `capacity` requests in flight, growing linearly beyond
        /// (20 ms × in flight / capacity), as if the capacity were shared.
        Linear,
        /// `capacity` workers taking 18 to 22 ms per request, the rest waiting in
        /// arrival order (steady-testkit's `CapacityBackend`, with the jitter that keeps
        /// real workers from finishing in lockstep).
        Workers,
    }

    /// What the simulated overload produced.
    #[derive(Debug)]
    struct Overload {
        /// Limits seen every 10 ms after the warm-up, outside minimum-RTT measurements.
        limits: Vec<u32>,
        /// Responses per second over the capacity, after the warm-up.
        goodput: f64,
        /// Latency (arrival to response, queue included) of admitted requests.
        p50: Duration,
        p99: Duration,
        /// Requests shed after the warm-up, by priority.
        shed: [u64; 3],
        /// Critical requests shed while the limit was not pinned for a measurement.
        critical_shed_unpinned: u64,
        /// Requests offered after the warm-up, by priority.
        offered: [u64; 3],
    }

    impl Overload {
        fn mean_limit(&self) -> f64 {
            self.limits.iter().map(|&l| f64::from(l)).sum::<f64>() / self.limits.len() as f64
        }
    }

    /// Offers ten times the capacity of an upstream that serves `capacity` requests at
    /// once in 20 ms, for `seconds` of paused time, and measures after a 2 s warm-up.
    async fn overload(
        upstream: Upstream,
        capacity: usize,
        config: AdaptiveConfig,
        seconds: u64,
    ) -> Overload {
        const SERVICE: Duration = Duration::from_millis(20);
        #[derive(Default)]
        struct Tally {
            latencies: Vec<Duration>,
            served: u64,
            shed: [u64; 3],
            critical_shed_unpinned: u64,
        }
        let limiter = ConcurrencyLimiter::with_seed(config, 7);
        let workers = Arc::new(Semaphore::new(capacity));
        let busy = Arc::new(AtomicUsize::new(0));
        let tally = Arc::new(Mutex::new(Tally::default()));
        let mut rng = fastrand::Rng::with_seed(11);
        let started = Instant::now();
        let measured = started + Duration::from_secs(2)..started + Duration::from_secs(seconds);
        let per_ms = 10.0 * capacity as f64 / SERVICE.as_millis() as f64;
        let mut due = 0.0;
        let mut arrivals = 0u64;
        let mut limits = Vec::new();
        for ms in 0..seconds * 1000 {
            due += per_ms;
            while due >= 1.0 {
                due -= 1.0;
                arrivals += 1;
                // 5% critical (half the capacity), 45% normal, 50% sheddable.
                let priority = match arrivals % 20 {
                    0 => Priority::Critical,
                    1..=9 => Priority::Normal,
                    _ => Priority::Sheddable,
                };
                let jitter = MS * rng.u32(0..=4);
                let (limiter, workers, busy, tally, measured) = (
                    Arc::clone(&limiter),
                    Arc::clone(&workers),
                    Arc::clone(&busy),
                    Arc::clone(&tally),
                    measured.clone(),
                );
                tokio::spawn(async move {
                    let arrived = Instant::now();
                    let permit = match limiter.acquire(priority).await {
                        Ok(permit) => permit,
                        Err(_) => {
                            if measured.contains(&arrived) {
                                let mut tally = tally.lock();
                                tally.shed[priority.index()] += 1;
                                if priority == Priority::Critical && !limiter.measuring_min_rtt() {
                                    tally.critical_shed_unpinned += 1;
                                }
                            }
                            return;
                        }
                    };
                    let admitted = Instant::now();
                    match upstream {
                        Upstream::Linear => {
                            let load = busy.fetch_add(1, Ordering::SeqCst) + 1;
                            let stretch = (load as f64 / capacity as f64).max(1.0);
                            tokio::time::sleep(SERVICE.mul_f64(stretch)).await;
                            busy.fetch_sub(1, Ordering::SeqCst);
                        }
                        Upstream::Workers => {
                            let _worker = workers.acquire().await.unwrap();
                            tokio::time::sleep(SERVICE - 2 * MS + jitter).await;
                        }
                    }
                    permit.finish(Some(admitted.elapsed()));
                    let done = Instant::now();
                    let mut tally = tally.lock();
                    if measured.contains(&arrived) {
                        tally.latencies.push(done - arrived);
                    }
                    if measured.contains(&done) {
                        tally.served += 1;
                    }
                });
            }
            let now = Instant::now();
            if ms % 10 == 0 && measured.contains(&now) && !limiter.measuring_min_rtt() {
                limits.push(limiter.limit());
            }
            tokio::time::sleep_until(started + MS * (ms as u32 + 1)).await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!((limiter.in_flight(), limiter.queued()), (0, 0));
        let mut tally = tally.lock();
        tally.latencies.sort();
        let quantile = |q: f64| tally.latencies[(tally.latencies.len() as f64 * q) as usize];
        let window = (measured.end - measured.start).as_secs_f64();
        Overload {
            limits,
            goodput: tally.served as f64 / window / (capacity as f64 / SERVICE.as_secs_f64()),
            p50: quantile(0.5),
            p99: quantile(0.99),
            shed: tally.shed,
            critical_shed_unpinned: tally.critical_shed_unpinned,
            offered: [10, 9, 1].map(|share| (per_ms * 50.0 * window) as u64 * share),
        }
    }

    async fn converges(upstream: Upstream, capacity: usize, config: AdaptiveConfig) -> Overload {
        let run = overload(upstream, capacity, config, 10).await;
        let (low, high) = (
            *run.limits.iter().min().unwrap(),
            *run.limits.iter().max().unwrap(),
        );
        eprintln!(
            "{upstream:?} capacity {capacity}: limit mean {:.1} in [{low}, {high}], \
             goodput {:.3}, p50 {:?}, p99 {:?}, shed {:?}",
            run.mean_limit(),
            run.goodput,
            run.p50,
            run.p99,
            run.shed
        );
        let n = capacity as u32;
        assert!(
            low >= n / 2 && high <= 2 * n,
            "limit left [N/2, 2N]: {run:?}"
        );
        assert_eq!(run.critical_shed_unpinned, 0, "{run:?}");
        run
    }

    #[tokio::test(start_paused = true)]
    async fn converges_near_the_capacity_of_an_overloaded_upstream() {
        for upstream in [Upstream::Linear, Upstream::Workers] {
            // Unloaded, every request takes 20 ms (22 ms at worst for the workers).
            let unloaded_p99 = match upstream {
                Upstream::Linear => 20 * MS,
                Upstream::Workers => 22 * MS,
            };
            for capacity in [20, 50] {
                let run = converges(upstream, capacity, AdaptiveConfig::default()).await;
                assert!(run.goodput >= 0.9, "{run:?}");
                assert!(run.p99 <= 2 * unloaded_p99, "{run:?}");
                assert_eq!(run.shed[Priority::Critical.index()], 0, "{run:?}");
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn converges_through_min_rtt_measurements() {
        let config = AdaptiveConfig {
            min_rtt_interval: Duration::from_secs(2),
            ..AdaptiveConfig::default()
        };
        for upstream in [Upstream::Linear, Upstream::Workers] {
            let run = converges(upstream, 20, config.clone()).await;
            // Pinned to 3 of 20 slots for about 0.4 s in every 2 s, the upstream is not
            // fully used, and the pinned slots cannot even serve every critical request;
            // sheddable requests still go first.
            assert!(run.goodput >= 0.75, "{run:?}");
            let shed_share =
                |p: Priority| run.shed[p.index()] as f64 / run.offered[p.index()] as f64;
            assert!(shed_share(Priority::Critical) < 0.2, "{run:?}");
            assert!(shed_share(Priority::Sheddable) > 0.99, "{run:?}");
        }
    }
}
