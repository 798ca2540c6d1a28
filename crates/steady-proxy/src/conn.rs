//! Per-connection timeouts for client connections: a request head that takes too long
//! gets `408 Request Timeout`, and a connection idle for too long is closed.
//!
//! hyper's own `header_read_timeout` cannot tell an idle keep-alive connection from a
//! slowloris client and closes both without a response, so steady tracks both itself in
//! [`ConnIo`], the socket wrapper: it notes when the first byte of a new request head
//! arrives, and whenever the connection waits for the client (a read that would block)
//! it arms one timer for the deadline that applies then. When the timer fires it answers
//! 408 or just closes. A write that waits for a client that reads nothing (a response
//! it stopped reading) arms the same timer for `idle_timeout` after the last bytes
//! moved, and fails with `TimedOut` when it passes. Nothing runs while data flows, so
//! the happy path costs a clock read per read or write and no extra wake-ups.
//!
//! The wrapper also batches the connection's writes: each write waits once at the back
//! of the worker's run queue (see `batch`), so the responses that became ready in one
//! turn reach their clients together.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use crate::batch;
use crate::timer::LazyTimer;

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
    /// No request heads to time out between requests: HTTP/2 (frames, not heads) and
    /// L4 tunnels.
    headless: AtomicBool,
}

impl ConnState {
    /// Creates the state of a new connection.
    pub fn new() -> Arc<ConnState> {
        Self::with_heads(true)
    }

    /// Creates the state of a connection that carries no request heads (an L4
    /// tunnel): only the idle timeout applies.
    pub fn headless() -> Arc<ConnState> {
        Self::with_heads(false)
    }

    fn with_heads(heads: bool) -> Arc<ConnState> {
        Arc::new(ConnState {
            start: Instant::now(),
            awaiting_head: AtomicBool::new(heads),
            head_started: AtomicU64::new(0),
            last_activity: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            headless: AtomicBool::new(!heads),
        })
    }

    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// Marks a request head as complete; called when the handler starts.
    pub fn request_started(&self, h2: bool) {
        if h2 {
            self.headless.store(true, Ordering::Relaxed);
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
        self.head_began(now);
    }

    /// Bytes of the next request head are already buffered (they came behind the last
    /// request): its header timeout starts now, if it has not started.
    fn head_buffered(&self) {
        self.head_began(self.now_ms());
    }

    /// Notes `now` as the start of the pending request head, if a head is awaited and
    /// none has started.
    fn head_began(&self, now: u64) {
        if self.awaiting_head.load(Ordering::Relaxed)
            && !self.headless.load(Ordering::Relaxed)
            && self.head_started.load(Ordering::Relaxed) == 0
        {
            self.head_started.store(now + 1, Ordering::Relaxed);
        }
    }

    fn on_write(&self) {
        // A slow reader of a long response is busy, not idle.
        self.last_activity.store(self.now_ms(), Ordering::Relaxed);
    }

    /// The deadline (ms since start) that applies while the connection waits for the
    /// client, and the verdict when it passes; `None` while a request is being served
    /// (the route's timeout bounds it).
    fn deadline(&self, header_ms: u64, idle_ms: u64) -> Option<(u64, u8)> {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return None;
        }
        let head = self.head_started.load(Ordering::Relaxed);
        if head != 0 {
            Some((head - 1 + header_ms, VERDICT_408))
        } else {
            Some((
                self.last_activity.load(Ordering::Relaxed) + idle_ms,
                VERDICT_CLOSE,
            ))
        }
    }
}

pin_project_lite::pin_project! {
    /// A client socket that reports reads to [`ConnState`] and enforces its deadlines.
    pub struct ConnIo<T> {
        #[pin]
        inner: T,
        state: Arc<ConnState>,
        header_ms: u64,
        idle_ms: u64,
        // One timer per connection, for reads and writes that wait for the client.
        timer: ClientTimer,
        verdict: u8,
        // Bytes of the 408 response already written.
        written_408: usize,
        // The pending write's turn at the back of the run queue, so that responses
        // ready in one turn reach clients together (see `batch`).
        turn: batch::Turn,
    }
}

impl<T> ConnIo<T> {
    /// Wraps `inner`, reporting to `state`: a started request head must complete within
    /// `header_timeout`, and a connection with nothing in flight closes after
    /// `idle_timeout` without bytes moving.
    pub fn new(
        inner: T,
        state: Arc<ConnState>,
        header_timeout: Duration,
        idle_timeout: Duration,
    ) -> Self {
        ConnIo {
            inner,
            state,
            header_ms: header_timeout.as_millis() as u64,
            idle_ms: idle_timeout.as_millis() as u64,
            timer: ClientTimer::default(),
            verdict: VERDICT_NONE,
            written_408: 0,
            turn: batch::Turn::default(),
        }
    }
}

impl<T> ConnIo<T> {
    /// The server holds the start of the next request head, read behind the last
    /// request: the header timeout applies to the rest of it, not the idle timeout.
    pub(crate) fn head_buffered(&self) {
        self.state.head_buffered();
    }
}

impl<T: AsyncRead + AsyncWrite> AsyncRead for ConnIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut this = self.project();
        loop {
            match *this.verdict {
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
                _ => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "idle timeout",
                    )))
                }
            }
            let before = buf.filled().len();
            match this.inner.as_mut().poll_read(cx, buf) {
                Poll::Ready(Ok(())) => {
                    this.state.on_read(buf.filled().len() - before);
                    return Poll::Ready(Ok(()));
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {}
            }
            // Waiting for the client: arm the deadline that applies now.
            let Some((deadline, verdict)) = this.state.deadline(*this.header_ms, *this.idle_ms)
            else {
                return Poll::Pending;
            };
            if ready!(this.timer.poll(this.state, deadline, cx)) {
                *this.verdict = verdict;
            }
        }
    }
}

/// The connection's one timer, used by a read or a write that waits for the client;
/// re-armed only when the deadline moves earlier.
#[derive(Default)]
struct ClientTimer {
    timer: LazyTimer,
    /// The deadline it is armed for (ms since the start; 0 = not armed).
    armed_for: u64,
}

impl ClientTimer {
    /// `Pending` until the timer fires; then `Ready(true)` if `deadline` (ms since
    /// `state`'s start) has passed, `Ready(false)` if activity has moved it since the
    /// timer was armed (the caller tries again, and comes back here to arm it anew).
    fn poll(&mut self, state: &ConnState, deadline: u64, cx: &mut Context<'_>) -> Poll<bool> {
        // Re-armed only when the deadline moves earlier: activity moves it later on
        // every request, and a timer that fires early just comes back here. A
        // deadline already past fires at once.
        if self.armed_for == 0 || deadline < self.armed_for {
            self.timer
                .set(state.start + Duration::from_millis(deadline));
            self.armed_for = deadline;
        }
        // Polled only when the waiting task changed or the timer fired (see `timer`).
        ready!(self.timer.poll(cx));
        // The timer fired, at the deadline it was armed for.
        self.armed_for = 0;
        Poll::Ready(state.now_ms() >= deadline)
    }
}

impl<T: AsyncWrite> ConnIo<T> {
    /// One write (or flush) through `write`; a write (`is_write`) waits for its batching
    /// turn first and counts as activity when done. A client that reads nothing for
    /// `idle_timeout` while a write waits (a response it stopped reading) fails the
    /// write with `TimedOut`, as haproxy's `timeout client` and nginx's `send_timeout`
    /// do: the connection closes and its upstream is let go.
    fn poll_write_with<R>(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        is_write: bool,
        mut write: impl FnMut(Pin<&mut T>, &mut Context<'_>) -> Poll<io::Result<R>>,
    ) -> Poll<io::Result<R>> {
        let mut this = self.project();
        if is_write {
            ready!(this.turn.poll(cx));
        }
        loop {
            match write(this.inner.as_mut(), cx) {
                Poll::Pending => {}
                done => {
                    if is_write {
                        // A slow reader of a long response is busy, not idle.
                        this.state.on_write();
                    }
                    return done;
                }
            }
            let deadline = this.state.last_activity.load(Ordering::Relaxed) + *this.idle_ms;
            if ready!(this.timer.poll(this.state, deadline, cx)) {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "send timeout: the client read nothing for idle_timeout",
                )));
            }
        }
    }
}

impl<T: AsyncWrite> AsyncWrite for ConnIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_with(cx, true, |inner, cx| inner.poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // A TLS stream writes its buffered records here.
        self.poll_write_with(cx, false, |inner, cx| inner.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_with(cx, true, |inner, cx| inner.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future as _;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn wrapped(
        header: u64,
        idle: u64,
    ) -> (
        ConnIo<tokio::io::DuplexStream>,
        tokio::io::DuplexStream,
        Arc<ConnState>,
    ) {
        let (server, client) = tokio::io::duplex(4096);
        let state = ConnState::new();
        let io = ConnIo::new(
            server,
            state.clone(),
            Duration::from_secs(header),
            Duration::from_secs(idle),
        );
        (io, client, state)
    }

    #[tokio::test(start_paused = true)]
    async fn partial_head_gets_408() {
        let (mut io, mut client, _state) = wrapped(10, 60);
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 64];
            let first = io.read(&mut buf).await.unwrap();
            let started = Instant::now();
            let err = io.read(&mut buf).await.unwrap_err();
            (first, started.elapsed(), err.kind())
        });
        client.write_all(b"GET").await.unwrap();
        let (first, waited, kind) = reader.await.unwrap();
        assert_eq!(first, 3);
        assert_eq!(kind, io::ErrorKind::TimedOut);
        assert_eq!(waited.as_secs(), 10);
        let mut answer = vec![0u8; RESPONSE_408.len()];
        client.read_exact(&mut answer).await.unwrap();
        assert!(answer.starts_with(b"HTTP/1.1 408"));
    }

    #[tokio::test(start_paused = true)]
    async fn idle_connection_closes_after_idle_timeout() {
        let (mut io, _client, state) = wrapped(10, 60);
        state.request_started(false);
        state.request_finished();
        let started = Instant::now();
        let mut buf = [0u8; 8];
        let err = io.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed().as_secs(), 60);
    }

    #[tokio::test(start_paused = true)]
    async fn request_in_flight_is_not_idle() {
        let (mut io, mut client, state) = wrapped(10, 60);
        state.request_started(false);
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 8];
            io.read(&mut buf).await
        });
        tokio::time::sleep(Duration::from_secs(300)).await;
        assert!(!reader.is_finished());
        client.write_all(b"x").await.unwrap();
        assert_eq!(reader.await.unwrap().unwrap(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn writes_keep_a_connection_busy() {
        let (mut io, mut client, state) = wrapped(10, 60);
        state.request_started(false);
        state.request_finished();
        // Write every 40s for 200s: the 60s idle timeout never passes.
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_secs(40)).await;
            io.write_all(b"tick").await.unwrap();
            let mut got = [0u8; 4];
            client.read_exact(&mut got).await.unwrap();
        }
        let started = Instant::now();
        let mut buf = [0u8; 8];
        let err = io.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed().as_secs(), 60);
    }

    #[tokio::test(start_paused = true)]
    async fn a_timer_first_polled_on_an_exhausted_budget_still_fires() {
        // A busy connection task may have spent its cooperative budget when its read
        // finds no bytes: the idle timer must be registered all the same.
        let (mut io, _client, state) = wrapped(10, 60);
        state.request_started(false);
        state.request_finished();
        let mut burnt = false;
        let mut buf = [0u8; 8];
        let read = std::future::poll_fn(|cx| {
            if !std::mem::replace(&mut burnt, true) {
                loop {
                    let mut spend = std::pin::pin!(tokio::task::consume_budget());
                    if spend.as_mut().poll(cx).is_pending() {
                        break;
                    }
                }
            }
            let mut into = ReadBuf::new(&mut buf);
            Pin::new(&mut io).poll_read(cx, &mut into)
        });
        let started = Instant::now();
        let outcome = tokio::time::timeout(Duration::from_secs(120), read).await;
        let err = outcome.expect("the idle timeout fired").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed().as_secs(), 60);
    }

    #[tokio::test(start_paused = true)]
    async fn activity_moves_an_armed_deadline_later() {
        // A tunnel (only the idle timeout applies) whose read waits while bytes arrive
        // every 40s: the timer armed for the first deadline fires early and is armed
        // again; the connection closes 60s after the last byte, not before.
        let (server, mut client) = tokio::io::duplex(64);
        let mut io = ConnIo::new(
            server,
            ConnState::headless(),
            Duration::from_secs(60),
            Duration::from_secs(60),
        );
        let feeder = tokio::spawn(async move {
            for _ in 0..5 {
                tokio::time::sleep(Duration::from_secs(40)).await;
                client.write_all(b"x").await.unwrap();
            }
            client
        });
        let started = Instant::now();
        let mut buf = [0u8; 8];
        let mut got = 0;
        let err = loop {
            match io.read(&mut buf).await {
                Ok(n) => got += n,
                Err(e) => break e,
            }
        };
        assert_eq!(got, 5);
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed().as_secs(), 5 * 40 + 60);
        drop(feeder.await.unwrap());
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_stops_reading_fails_the_write_after_idle_timeout() {
        // A response in flight (no read deadline applies) to a client that reads nothing:
        // the duplex fills, the write waits, and fails idle_timeout after the last bytes.
        let (mut io, _client, state) = wrapped(10, 60);
        state.request_started(false);
        let chunk = [7u8; 1024];
        let started = Instant::now();
        // Bounded (on the paused clock), so that a write that waits forever fails the test.
        let err = tokio::time::timeout(Duration::from_secs(600), async {
            loop {
                if let Err(e) = io.write_all(&chunk).await {
                    break e;
                }
            }
        })
        .await
        .expect("the stalled write never failed");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed().as_secs(), 60);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_reader_keeps_its_response_going() {
        // The client reads 1 KiB every 40s: each read lets a write through, so the 60s
        // idle timeout never passes while the response drains.
        let (mut io, mut client, state) = wrapped(10, 60);
        state.request_started(false);
        let reader = tokio::spawn(async move {
            let mut got = vec![0u8; 1024];
            for _ in 0..8 {
                tokio::time::sleep(Duration::from_secs(40)).await;
                client.read_exact(&mut got).await.unwrap();
            }
            client
        });
        // 4 KiB fill the duplex; 4 more drain as the client reads.
        let started = Instant::now();
        io.write_all(&[7u8; 8 * 1024]).await.unwrap();
        assert!(started.elapsed().as_secs() >= 4 * 40);
        drop(reader.await.unwrap());
    }
}
