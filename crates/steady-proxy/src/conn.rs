//! Per-connection timeouts for client connections: a request head that takes too long
//! gets `408 Request Timeout`, and a connection idle for too long is closed.
//!
//! hyper's own `header_read_timeout` cannot tell an idle keep-alive connection from a
//! slowloris client and closes both without a response, so steady tracks both itself:
//! [`ConnIo`] wraps the socket and notes when the first byte of a new request head
//! arrives; [`watchdog`] sleeps until the nearest deadline and, when one passes, tells
//! the wrapper to answer 408 (or just close) on hyper's next read.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;

const RESPONSE_408: &[u8] = b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n\
content-length: 58\r\nconnection: close\r\n\r\n{\"error\":\"client-timeout\",\"status\":408,\"source\":\"client\"}";

const VERDICT_NONE: u8 = 0;
const VERDICT_408: u8 = 1;
const VERDICT_CLOSE: u8 = 2;

/// State shared by a connection's socket wrapper, its request handler and its watchdog.
#[derive(Debug)]
pub struct ConnState {
    /// Connection start; all `*_ms` fields count from here.
    start: Instant,
    /// True between requests: bytes read now belong to a new request head.
    awaiting_head: AtomicBool,
    /// When the first byte of the pending request head arrived (ms + 1; 0 = none).
    head_started: AtomicU64,
    /// Last read or write (ms).
    last_activity: AtomicU64,
    /// Requests whose response head has not been returned yet.
    in_flight: AtomicUsize,
    /// HTTP/2 has no request heads to time out between requests.
    is_h2: AtomicBool,
    /// What the wrapper does at hyper's next read.
    verdict: AtomicU8,
    read_waker: AtomicWaker,
    head_began: Notify,
}

impl ConnState {
    /// Creates the state of a new connection.
    pub fn new() -> Arc<ConnState> {
        Arc::new(ConnState {
            start: Instant::now(),
            awaiting_head: AtomicBool::new(true),
            head_started: AtomicU64::new(0),
            last_activity: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            is_h2: AtomicBool::new(false),
            verdict: AtomicU8::new(VERDICT_NONE),
            read_waker: AtomicWaker::new(),
            head_began: Notify::new(),
        })
    }

    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// Marks a request head as complete; called when the handler starts.
    pub fn request_started(&self, h2: bool) {
        if h2 {
            self.is_h2.store(true, Ordering::Relaxed);
        }
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.awaiting_head.store(false, Ordering::Relaxed);
        self.head_started.store(0, Ordering::Relaxed);
    }

    /// Marks a response head as returned; the connection may now wait for the next head.
    pub fn request_finished(&self) {
        self.last_activity.store(self.now_ms(), Ordering::Relaxed);
        if self.in_flight.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.awaiting_head.store(true, Ordering::Relaxed);
        }
    }

    fn on_read(&self, n: usize) {
        if n == 0 {
            return;
        }
        let now = self.now_ms();
        self.last_activity.store(now, Ordering::Relaxed);
        if self.awaiting_head.load(Ordering::Relaxed)
            && !self.is_h2.load(Ordering::Relaxed)
            && self.head_started.load(Ordering::Relaxed) == 0
        {
            self.head_started.store(now + 1, Ordering::Relaxed);
            self.head_began.notify_one();
        }
    }

    fn on_write(&self) {
        // A slow reader of a long response is busy, not idle.
        self.last_activity.store(self.now_ms(), Ordering::Relaxed);
    }

    fn set_verdict(&self, v: u8) {
        self.verdict.store(v, Ordering::Relaxed);
        self.read_waker.wake();
    }
}

/// Watches a connection's deadlines until one passes, then closes it through [`ConnIo`].
///
/// Runs beside hyper's connection future in the same task; returns when it has set a
/// verdict (the caller keeps polling the connection so the wrapper can act on it).
pub async fn watchdog(state: Arc<ConnState>, header_timeout: Duration, idle_timeout: Duration) {
    let header_ms = header_timeout.as_millis() as u64;
    let idle_ms = idle_timeout.as_millis() as u64;
    loop {
        let now = state.now_ms();
        let head = state.head_started.load(Ordering::Relaxed);
        let idle = state.in_flight.load(Ordering::Relaxed) == 0;
        let wait_ms = if head != 0 {
            let deadline = head - 1 + header_ms;
            if now >= deadline {
                state.set_verdict(VERDICT_408);
                return;
            }
            deadline - now
        } else if idle {
            let deadline = state.last_activity.load(Ordering::Relaxed) + idle_ms;
            if now >= deadline {
                state.set_verdict(VERDICT_CLOSE);
                return;
            }
            deadline - now
        } else {
            // A request is in flight: its route timeout bounds it; look again later.
            idle_ms.max(1)
        };
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(wait_ms)) => {}
            _ = state.head_began.notified() => {}
        }
    }
}

pin_project_lite::pin_project! {
    /// A client socket that reports reads to [`ConnState`] and carries out its verdict.
    pub struct ConnIo<T> {
        #[pin]
        inner: T,
        state: Arc<ConnState>,
        // Bytes of the 408 response already written.
        written_408: usize,
    }
}

impl<T> ConnIo<T> {
    /// Wraps `inner`, reporting to `state`.
    pub fn new(inner: T, state: Arc<ConnState>) -> Self {
        ConnIo {
            inner,
            state,
            written_408: 0,
        }
    }
}

impl<T: AsyncRead + AsyncWrite> AsyncRead for ConnIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut this = self.project();
        match this.state.verdict.load(Ordering::Relaxed) {
            VERDICT_NONE => {}
            VERDICT_408 => {
                // Best effort: write the canned response, then end the stream.
                while *this.written_408 < RESPONSE_408.len() {
                    match this
                        .inner
                        .as_mut()
                        .poll_write(cx, &RESPONSE_408[*this.written_408..])
                    {
                        Poll::Ready(Ok(n)) if n > 0 => *this.written_408 += n,
                        Poll::Pending => return Poll::Pending,
                        _ => break,
                    }
                }
                let _ = this.inner.as_mut().poll_flush(cx);
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "request head timeout",
                )));
            }
            _ => return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "idle timeout"))),
        }
        this.state.read_waker.register(cx.waker());
        let before = buf.filled().len();
        let res = this.inner.poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = res {
            this.state.on_read(buf.filled().len() - before);
        }
        res
    }
}

impl<T: AsyncWrite> AsyncWrite for ConnIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        this.state.on_write();
        this.inner.poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        this.state.on_write();
        this.inner.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn partial_head_gets_408_verdict() {
        let state = ConnState::new();
        let dog = tokio::spawn(watchdog(
            state.clone(),
            Duration::from_secs(10),
            Duration::from_secs(60),
        ));
        tokio::time::sleep(Duration::from_secs(5)).await;
        state.on_read(3);
        tokio::time::sleep(Duration::from_secs(9)).await;
        assert_eq!(state.verdict.load(Ordering::Relaxed), VERDICT_NONE);
        tokio::time::sleep(Duration::from_secs(2)).await;
        dog.await.unwrap();
        assert_eq!(state.verdict.load(Ordering::Relaxed), VERDICT_408);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_connection_closes_after_idle_timeout() {
        let state = ConnState::new();
        state.request_started(false);
        state.request_finished();
        let dog = tokio::spawn(watchdog(
            state.clone(),
            Duration::from_secs(10),
            Duration::from_secs(60),
        ));
        tokio::time::sleep(Duration::from_secs(59)).await;
        assert_eq!(state.verdict.load(Ordering::Relaxed), VERDICT_NONE);
        tokio::time::sleep(Duration::from_secs(2)).await;
        dog.await.unwrap();
        assert_eq!(state.verdict.load(Ordering::Relaxed), VERDICT_CLOSE);
    }

    #[tokio::test(start_paused = true)]
    async fn request_in_flight_is_not_idle() {
        let state = ConnState::new();
        state.request_started(false);
        let dog = tokio::spawn(watchdog(
            state.clone(),
            Duration::from_secs(10),
            Duration::from_secs(60),
        ));
        tokio::time::sleep(Duration::from_secs(300)).await;
        assert_eq!(state.verdict.load(Ordering::Relaxed), VERDICT_NONE);
        dog.abort();
    }
}
