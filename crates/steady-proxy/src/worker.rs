//! Thread-per-core workers: which worker the current thread is.
//!
//! steady runs one single-threaded tokio runtime per worker thread (as nginx and HAProxy
//! run one event loop per process or thread). Each worker accepts on its own
//! `SO_REUSEPORT` socket and keeps its own upstream connection pool, so a request never
//! crosses threads. State that must be shared (endpoint counters, metrics) is atomic.

use std::cell::Cell;

thread_local! {
    static WORKER: Cell<usize> = const { Cell::new(0) };
}

/// Marks the current thread as worker `index`; call once at thread start.
pub fn set_current(index: usize) {
    WORKER.with(|w| w.set(index));
}

/// The worker the current thread belongs to (0 on threads that never called
/// [`set_current`], such as tests and the control thread).
pub fn current() -> usize {
    WORKER.with(|w| w.get())
}
