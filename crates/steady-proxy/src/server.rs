//! steady's HTTP/1.1 server: reads a client's request heads, hands each request to the
//! request path, and writes its response.
//!
//! hyper's server ran a dispatcher per connection that parsed each head into its own
//! buffers, queued each response's head and body for its encoder and flushed them; on
//! the benchmark that was about 5,300 instructions a request, and every wait before a
//! write (see `batch`) polled the whole dispatcher again. Here a connection's task runs
//! a plain loop: read a head (httparse, as hyper and `h1` parse), call the request path,
//! write the response's head and the body's first bytes from one buffer with one send.
//! The request body is read from the socket by whoever polls it (the upstream write, in
//! the same task), as `h1` reads a response body; `Expect: 100-continue` is answered
//! when it is first polled. Framing follows RFC 9112 §6, with hyper's choices where the
//! RFC leaves one: a request with both `Transfer-Encoding` and `Content-Length` is
//! refused, a response without a known length is chunked (closed at its end for an
//! HTTP/1.0 client), and a client that closes while its request is in flight cancels it.
//!
//! Layout: [`serve`] (the connection's loop), `parse_head` (a request head into an
//! [`http::Request`]), `prepare` (the request the request path gets), `encode_head` (a
//! response head, with its framing, from an upstream's received fields and the map),
//! [`Body`] (a request body), [`Upgraded`] (the connection, handed to a tunnel after a
//! `101`), `idle_box` and `spare` (what idle connections keep of their request's box
//! and their read and write buffers).

use std::future::{poll_fn, Future};
use std::io;
use std::pin::{pin, Pin};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{ready, Context, Poll, Waker};

use bytes::{Buf, Bytes, BytesMut};
use http::header;
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::{Body as _, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;

use crate::body::{ClientBody, ResponseBody};
use crate::conn::ConnIo;
use crate::h1::{self, Framing};

/// Headers a request head is first parsed for (more are parsed again with room for all).
const FEW_HEADERS: usize = 32;
/// The longest request target accepted (hyper's limit): longer gets 414.
const MAX_TARGET: usize = 65_534;
/// Room made in the read buffer for request heads (a head that needs more takes more
/// reads; bodies are read with `h1`'s larger room). The buffer is let go while the
/// connection waits for its next request.
const HEAD_ROOM: usize = 4 * 1024;
/// Room made in a connection's write buffer for a response head.
const HEAD_OUT: usize = 512;
/// A response body's bytes are gathered up to this much before they are written.
const GATHER: usize = 64 * 1024;
/// A buffer bigger than this (grown by a large head or response) is let go once its
/// connection is idle, not kept for the next request.
const KEEP_IDLE: usize = 2 * HEAD_ROOM;
/// The interim response that tells a client to send the body it announced.
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// Limits on a client's request heads.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// The longest head, request line included.
    pub(crate) max_head: usize,
    /// The most header fields.
    pub(crate) max_headers: usize,
}

/// A socket a tunnel can own, whatever its type.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// A client connection after its `101 Switching Protocols` head was written: the socket
/// and what the client sent past its request head.
pub struct Upgraded {
    /// The client's socket.
    pub io: Box<dyn Io>,
    /// Bytes read after the request head, already the new protocol's.
    pub read: Bytes,
}

impl std::fmt::Debug for Upgraded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upgraded")
            .field("read", &self.read.len())
            .finish_non_exhaustive()
    }
}

/// In a request's extensions when it asks for an upgrade: gives the connection once a
/// `101` response head has been written. (Extensions must be `Clone`; the first to
/// wait takes the connection.)
#[derive(Clone, Debug)]
pub struct OnUpgrade(Arc<Mutex<Option<tokio::sync::oneshot::Receiver<Upgraded>>>>);

impl OnUpgrade {
    /// The connection, once the `101` head is out; `None` if the answer was another or
    /// the connection broke.
    pub async fn upgraded(self) -> Option<Upgraded> {
        let rx = self.0.lock().unwrap_or_else(|e| e.into_inner()).take()?;
        rx.await.ok()
    }
}

/// The part of a connection its request body reads too.
struct Shared<T> {
    /// `None` once handed to a tunnel.
    io: Option<ConnIo<T>>,
    /// Read from the socket, not used yet.
    read: BytesMut,
    /// What is left of the current request's body.
    framing: Framing,
    /// Bytes of the `100 Continue` still to write before the body is read.
    continue_left: usize,
}

type SharedConn<T> = Arc<Mutex<Shared<T>>>;

impl<T> Drop for Shared<T> {
    /// A closed connection's read buffer goes to the worker's spares, as an idle one's
    /// does: the next new connection reads into it instead of allocating.
    fn drop(&mut self) {
        self.read.clear();
        spare::give(&mut self.read);
    }
}

fn lock<T>(shared: &Mutex<Shared<T>>) -> MutexGuard<'_, Shared<T>> {
    // Plain state, valid even if a poll panicked while holding it.
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

/// A request head, parsed.
struct Head {
    request: Request<()>,
    framing: Framing,
    keep_alive: bool,
    expect_continue: bool,
    upgrade: bool,
}

/// Why a request head was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// 400: not HTTP/1.x, or contradictory framing.
    Bad,
    /// 431: a head longer than the limit, or too many fields.
    TooLarge,
    /// 414: a request target longer than [`MAX_TARGET`].
    TargetTooLong,
}

impl Refusal {
    fn response(self) -> &'static [u8] {
        match self {
            Refusal::Bad => {
                b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n\
content-length: 55\r\nconnection: close\r\n\r\n\
{\"error\":\"bad-request\",\"status\":400,\"source\":\"client\"}\n"
            }
            Refusal::TooLarge => {
                b"HTTP/1.1 431 Request Header Fields Too Large\r\n\
content-type: application/json\r\ncontent-length: 61\r\nconnection: close\r\n\r\n\
{\"error\":\"headers-too-large\",\"status\":431,\"source\":\"client\"}\n"
            }
            Refusal::TargetTooLong => {
                b"HTTP/1.1 414 URI Too Long\r\n\
content-type: application/json\r\ncontent-length: 59\r\nconnection: close\r\n\r\n\
{\"error\":\"target-too-long\",\"status\":414,\"source\":\"client\"}\n"
            }
        }
    }
}

/// Serves a client connection until it closes, fails, upgrades, or `shutdown` fires
/// (which lets the request in flight finish, its response saying `connection: close`).
pub(crate) async fn serve<T, S, F>(
    io: ConnIo<T>,
    limits: Limits,
    mut service: S,
    shutdown: &CancellationToken,
) where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: FnMut(Request<ClientBody>) -> F,
    F: Future<Output = Response<ResponseBody>>,
{
    let shared: SharedConn<T> = Arc::new(Mutex::new(Shared {
        io: Some(io),
        read: BytesMut::new(),
        framing: Framing::Done,
        continue_left: 0,
    }));
    let mut out = Vec::new();
    // The request's future, in a box the connection reuses from request to request. An
    // idle connection gives it up unless few others on its worker keep theirs, so
    // thousands of idle connections do not each hold room for a request in flight.
    let mut request_box: Option<Pin<Box<F>>> = None;
    let mut keeping = idle_box::Keep::default();
    let mut cancelled = pin!(shutdown.cancelled());
    // The task the shutdown token will wake (polled again only if another polls).
    let mut waiter: Option<Waker> = None;
    loop {
        let head = poll_fn(|cx| {
            let mut conn = lock(&shared);
            let idle = conn.read.is_empty();
            if idle && conn.read.capacity() == 0 {
                conn.read = spare::take();
            }
            let polled = poll_head(&mut conn, limits, cx);
            if polled.is_pending() && idle {
                // Nothing of the next request yet, and the connection may stay idle for
                // long: its read buffer goes to the worker's spares, for whichever
                // connection reads next.
                spare::give(&mut conn.read);
                if request_box.is_some() && !keeping.keep() {
                    request_box = None;
                }
                // Between requests: shutdown closes the connection.
                if !waiter.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    if cancelled.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Ok(None));
                    }
                    waiter = Some(cx.waker().clone());
                } else if shutdown.is_cancelled() {
                    return Poll::Ready(Ok(None));
                }
            }
            polled
        })
        .await;
        keeping.release();
        let head = match head {
            Ok(Some(head)) => head,
            Ok(None) => return,
            Err(refusal) => {
                let mut at = 0;
                let _ =
                    poll_fn(|cx| poll_write_all(&shared, refusal.response(), &mut at, cx)).await;
                close(&shared).await;
                return;
            }
        };
        let Prepared {
            request,
            is_head,
            version,
            keep_alive,
            upgraded,
        } = prepare(head, &shared);

        // The response, while watching for the client to go away.
        let response = {
            let pending = match &mut request_box {
                Some(pending) => {
                    pending.set(service(request));
                    pending
                }
                None => request_box.insert(Box::pin(service(request))),
            };
            let mut watching = true;
            poll_fn(|cx| {
                if let Poll::Ready(response) = pending.as_mut().poll(cx) {
                    return Poll::Ready(Some(response));
                }
                if watching {
                    let mut conn = lock(&shared);
                    let conn = &mut *conn;
                    // Only once the body is in: until then, its reader sees a close.
                    if conn.framing == Framing::Done && conn.read.is_empty() {
                        let Some(io) = conn.io.as_mut() else {
                            return Poll::Ready(None);
                        };
                        // Into the room the buffer has: making a head's room here
                        // allocated a new buffer per request, since the request's
                        // head still shares the old one (`poll_head` makes the room).
                        match h1::poll_fill_room(io, &mut conn.read, 1, cx) {
                            // A pipelined request: read once the response is out.
                            Poll::Ready(Ok(true)) => watching = false,
                            Poll::Ready(_) => return Poll::Ready(None),
                            Poll::Pending => {}
                        }
                    }
                }
                Poll::Pending
            })
            .await
        };
        let Some(response) = response else {
            // The client closed (or broke) its connection: the request is cancelled.
            return;
        };

        let (parts, mut body) = response.into_parts();
        let switching = parts.status == StatusCode::SWITCHING_PROTOCOLS && upgraded.is_some();
        // (A request body not read to its end by the time the response has been written
        // leaves the next head's start unknown: the connection closes then.)
        let keep_alive = keep_alive && !shutdown.is_cancelled();
        if out.capacity() == 0 {
            out = spare::take_out();
        }
        out.clear();
        let (mut framing, keep_alive) = encode_head(
            &mut out,
            &parts,
            body.received(),
            Client {
                version,
                is_head,
                keep_alive,
            },
            if switching {
                SizeHint::with_exact(0)
            } else {
                body.size_hint()
            },
        );
        drop(parts);
        let (mut at, mut failed) = (0, false);
        let written = if switching {
            poll_fn(|cx| poll_write_all(&shared, &out, &mut at, cx)).await
        } else {
            let mut pending = pin!(&mut body);
            poll_fn(|cx| {
                let mut w = Writer {
                    out: &mut out,
                    at: &mut at,
                    failed: &mut failed,
                };
                poll_response(&shared, &mut w, &mut framing, pending.as_mut(), cx)
            })
            .await
        };
        drop(body);
        if written.is_err() {
            return;
        }
        if switching {
            let mut conn = lock(&shared);
            let read = conn.read.split().freeze();
            if let (Some(io), Some(tx)) = (conn.io.take(), upgraded) {
                let _ = tx.send(Upgraded {
                    io: Box::new(io),
                    read,
                });
            }
            return;
        }
        {
            let conn = lock(&shared);
            if keep_alive && conn.framing == Framing::Done {
                // Bytes of the next head already read: its header timeout runs now.
                if let (false, Some(io)) = (conn.read.is_empty(), &conn.io) {
                    io.head_buffered();
                }
                // The write buffer waits in the worker's spares, not with the connection.
                spare::give_out(&mut out);
                continue;
            }
        }
        spare::give_out(&mut out);
        close(&shared).await;
        return;
    }
}

/// A request ready for the request path, and what its connection must remember of it.
struct Prepared {
    request: Request<ClientBody>,
    is_head: bool,
    version: Version,
    keep_alive: bool,
    /// Gives the connection to the request's `OnUpgrade` after a `101`.
    upgraded: Option<tokio::sync::oneshot::Sender<Upgraded>>,
}

/// Makes the request of `head`, its body read from `shared`. (Not inline in `serve`: the
/// head and the request, once borrowed there, would keep room in the connection's task
/// beside the request's future.)
fn prepare<T>(head: Head, shared: &SharedConn<T>) -> Prepared
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Head {
        request,
        framing,
        keep_alive,
        expect_continue,
        upgrade,
    } = head;
    let is_head = request.method() == Method::HEAD;
    let version = request.version();
    let body = if framing != Framing::Done {
        let mut conn = lock(shared);
        conn.framing = framing;
        conn.continue_left = if expect_continue { CONTINUE.len() } else { 0 };
        let source: Arc<dyn Source> = shared.clone();
        Body {
            source: Some(source),
        }
    } else {
        Body::empty()
    };
    let mut request = request.map(|()| ClientBody::H1(body));
    let mut upgraded = None;
    if upgrade {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let on = OnUpgrade(Arc::new(Mutex::new(Some(rx))));
        request.extensions_mut().insert(on);
        upgraded = Some(tx);
    }
    Prepared {
        request,
        is_head,
        version,
        keep_alive,
        upgraded,
    }
}

/// Which idle connections keep their request's box (see `serve`): the first [`KEEP`] of
/// a worker's, so a worker busy with a few hundred keep-alive connections allocates
/// nothing per request, while one holding thousands of idle connections does not keep
/// a request's room for each.
mod idle_box {
    use std::cell::Cell;

    /// Idle connections per worker that keep their box.
    pub(super) const KEEP: usize = 256;

    thread_local! {
        /// Idle connections on this worker keeping their box.
        static KEEPING: Cell<usize> = const { Cell::new(0) };
    }

    /// An idle connection's place among those keeping their box, if it has one;
    /// released when the connection is busy again or ends.
    #[derive(Debug, Default)]
    pub(super) struct Keep {
        held: bool,
    }

    impl Keep {
        /// Whether the idle connection may keep its box: it has a place, or takes one.
        pub(super) fn keep(&mut self) -> bool {
            if !self.held {
                let keeping = KEEPING.get();
                if keeping >= KEEP {
                    return false;
                }
                KEEPING.set(keeping + 1);
                self.held = true;
            }
            true
        }

        /// The connection is busy again: its place is free.
        pub(super) fn release(&mut self) {
            if std::mem::take(&mut self.held) {
                // Saturating: a task moved to another thread (only in tests on a
                // multi-threaded runtime) finds that thread's count.
                KEEPING.set(KEEPING.get().saturating_sub(1));
            }
        }
    }

    impl Drop for Keep {
        fn drop(&mut self) {
            self.release();
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn the_first_idle_connections_keep_their_box_and_places_come_back() {
            // Each test runs on a thread of its own, so the worker's count starts afresh.
            let mut keeping: Vec<Keep> = (0..KEEP).map(|_| Keep::default()).collect();
            for k in &mut keeping {
                assert!(k.keep());
            }
            assert!(keeping[0].keep(), "a holder keeps its place");
            let mut late = Keep::default();
            assert!(
                !late.keep(),
                "over the limit, a connection gives its box up"
            );
            keeping[1].release();
            assert!(late.keep(), "a released place is taken");
            drop(keeping.pop());
            let mut next = Keep::default();
            assert!(next.keep(), "a connection that ends frees its place");
            assert!(!Keep::default().keep());
        }
    }
}

/// Read and write buffers of this worker's idle connections, lent to the next connection
/// that reads a head or writes a response. nginx frees an idle connection's buffer and
/// allocates one when the next request comes; a small per-worker stock does the same
/// without an allocation a request, and 10,000 idle connections hold no buffer between
/// them.
mod spare {
    use std::cell::RefCell;
    use std::thread::LocalKey;

    use bytes::BytesMut;

    use super::KEEP_IDLE;

    /// Spare buffers of each kind kept per worker; more are freed.
    const STOCK: usize = 64;

    thread_local! {
        static SPARES: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
        /// Write buffers, which connections give back after each response.
        static OUTS: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
    }

    /// A buffer from `stock`, or an empty one.
    fn lend<B: Default>(stock: &'static LocalKey<RefCell<Vec<B>>>) -> B {
        stock.with(|s| s.borrow_mut().pop()).unwrap_or_default()
    }

    /// Puts an empty buffer of `capacity` into `stock` if it is small and the stock is
    /// not full; frees it otherwise.
    fn keep<B>(stock: &'static LocalKey<RefCell<Vec<B>>>, buf: B, capacity: usize) {
        if capacity == 0 || capacity > KEEP_IDLE {
            return;
        }
        stock.with(|s| {
            let mut s = s.borrow_mut();
            if s.len() < STOCK {
                s.push(buf);
            }
        });
    }

    /// A write buffer from the stock, or an empty one.
    pub(super) fn take_out() -> Vec<u8> {
        lend(&OUTS)
    }

    /// Takes `out` from its connection, into the stock if it is small and the stock is
    /// not full; freed otherwise.
    pub(super) fn give_out(out: &mut Vec<u8>) {
        let mut out = std::mem::take(out);
        out.clear();
        let capacity = out.capacity();
        keep(&OUTS, out, capacity);
    }

    /// A buffer from the stock, or an empty one (which allocates when it first reads).
    pub(super) fn take() -> BytesMut {
        lend(&SPARES)
    }

    /// Takes `buf` from its connection if it is empty, into the stock if it is small
    /// and the stock is not full; freed otherwise.
    pub(super) fn give(buf: &mut BytesMut) {
        if !buf.is_empty() {
            return;
        }
        let buf = std::mem::take(buf);
        let capacity = buf.capacity();
        keep(&SPARES, buf, capacity);
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn an_idle_buffer_is_lent_and_a_partial_head_stays_put() {
            let mut idle = BytesMut::with_capacity(1024);
            let room = idle.capacity();
            give(&mut idle);
            assert_eq!(idle.capacity(), 0, "an empty buffer goes to the stock");
            let lent = take();
            assert_eq!(lent.capacity(), room);
            assert_eq!(take().capacity(), 0, "the stock had one");

            let mut partial = BytesMut::from(&b"GET / HT"[..]);
            give(&mut partial);
            assert_eq!(
                &partial[..],
                b"GET / HT",
                "a partial head stays with its connection"
            );
            assert_eq!(take().capacity(), 0);
        }

        #[test]
        fn write_buffers_are_lent_cleared_and_grown_ones_freed() {
            let mut out = Vec::with_capacity(512);
            out.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
            give_out(&mut out);
            assert_eq!(out.capacity(), 0, "the connection keeps nothing");
            let lent = take_out();
            assert!(lent.capacity() >= 512 && lent.is_empty(), "lent cleared");
            assert_eq!(take_out().capacity(), 0, "the stock had one");
            let mut grown = Vec::<u8>::with_capacity(KEEP_IDLE * 2);
            give_out(&mut grown);
            assert_eq!(take_out().capacity(), 0, "a grown buffer is freed");
        }

        #[test]
        fn a_grown_buffer_is_freed_and_the_stock_is_bounded() {
            let mut grown = BytesMut::with_capacity(KEEP_IDLE * 4);
            give(&mut grown);
            assert_eq!(grown.capacity(), 0);
            assert_eq!(take().capacity(), 0, "a grown buffer is freed, not kept");

            for _ in 0..STOCK + 10 {
                give(&mut BytesMut::with_capacity(64));
            }
            let kept = std::iter::from_fn(|| Some(take()))
                .take_while(|b| b.capacity() > 0)
                .count();
            assert_eq!(kept, STOCK);
        }
    }
}

/// Reads until a request head is complete: `Ok(None)` if the client closed (or its
/// connection failed or timed out) first.
fn poll_head<T>(
    conn: &mut Shared<T>,
    limits: Limits,
    cx: &mut Context<'_>,
) -> Poll<Result<Option<Head>, Refusal>>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        if !conn.read.is_empty() {
            if let Some(head) = parse_head(&mut conn.read, limits)? {
                return Poll::Ready(Ok(Some(head)));
            }
            if conn.read.len() >= limits.max_head {
                return Poll::Ready(Err(Refusal::TooLarge));
            }
        }
        let Some(io) = conn.io.as_mut() else {
            return Poll::Ready(Ok(None));
        };
        match ready!(h1::poll_fill_room(io, &mut conn.read, HEAD_ROOM, cx)) {
            Ok(true) => {}
            // Closed, mid-head or between requests; or broken, or timed out (the
            // socket wrapper answered 408 itself).
            Ok(false) | Err(_) => return Poll::Ready(Ok(None)),
        }
    }
}

/// Parses the request head at the front of `buf`, taking it out when complete; `None`
/// while it is incomplete. Header values and the target share the head's bytes.
fn parse_head(buf: &mut BytesMut, limits: Limits) -> Result<Option<Head>, Refusal> {
    // An empty line before a request line is allowed (RFC 9112 §2.2).
    while buf.starts_with(b"\r\n") {
        buf.advance(2);
    }
    if buf.is_empty() {
        return Ok(None);
    }
    let mut few = [httparse::EMPTY_HEADER; FEW_HEADERS];
    let mut many = Vec::new();
    let mut request = httparse::Request::new(&mut few);
    let parsed = match request.parse(buf) {
        Err(httparse::Error::TooManyHeaders) if limits.max_headers > FEW_HEADERS => {
            many.resize(limits.max_headers, httparse::EMPTY_HEADER);
            request = httparse::Request::new(&mut many);
            request.parse(buf)
        }
        other => other,
    };
    let len = match parsed {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(Refusal::TooLarge),
        Err(_) => return Err(Refusal::Bad),
    };
    if len > limits.max_head || request.headers.len() > limits.max_headers {
        return Err(Refusal::TooLarge);
    }
    let method = Method::from_bytes(request.method.unwrap_or_default().as_bytes())
        .map_err(|_| Refusal::Bad)?;
    let version = if request.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    let base = buf.as_ptr() as usize;
    let target = request.path.unwrap_or_default();
    if target.len() > MAX_TARGET {
        return Err(Refusal::TargetTooLong);
    }
    let target = (target.as_ptr() as usize - base, target.len());
    let mut spans = h1::FieldSpans::new();
    h1::field_spans(base, request.headers, &mut spans);
    let head = buf.split_to(len).freeze();
    let uri = Uri::from_maybe_shared(head.slice(target.0..target.0 + target.1))
        .map_err(|_| Refusal::Bad)?;
    let mut fields = h1::Fields::default();
    let (mut expect_continue, mut upgrade) = (false, false);
    // Every field stays in the map (the request path strips the hop-by-hop ones); the
    // framing ones are noted as they go by.
    let map = h1::field_map(
        &head,
        &spans,
        |_| Refusal::Bad,
        |name, value| {
            fields
                .note(h1::Hop::of(name.as_str().as_bytes()), value.as_bytes())
                .map_err(|_| Refusal::Bad)?;
            if name == header::EXPECT {
                expect_continue |= value.as_bytes().eq_ignore_ascii_case(b"100-continue");
            } else if name == header::UPGRADE {
                upgrade = true;
            }
            Ok(true)
        },
    )?;
    let framing = if fields.encoded {
        // Chunked must be the last coding of a request (RFC 9112 §6.3), and both
        // framings at once is how requests are smuggled: refused, as hyper does.
        if !fields.chunked || fields.length.is_some() || version == Version::HTTP_10 {
            return Err(Refusal::Bad);
        }
        Framing::Chunked(h1::Chunk::Size)
    } else {
        match fields.length {
            None | Some(0) => Framing::Done,
            Some(n) => Framing::Length(n),
        }
    };
    let keep_alive = !fields.close && (version == Version::HTTP_11 || fields.keep_alive);
    let mut request = Request::new(());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = version;
    *request.headers_mut() = map;
    Ok(Some(Head {
        request,
        framing,
        keep_alive,
        expect_continue: expect_continue && version == Version::HTTP_11,
        upgrade: upgrade && version == Version::HTTP_11,
    }))
}

/// What the response head needs to know of the request.
struct Client {
    version: Version,
    is_head: bool,
    keep_alive: bool,
}

/// How a response body is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Out {
    /// No body (HEAD, 1xx, 204, 304), or it was written.
    Done,
    /// `Content-Length`: this many bytes are left.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the connection closes (an HTTP/1.0 client, length unknown).
    Close,
}

/// Writes the status line and headers of `head` into `out`, after the upstream's
/// `received` fields (less those `head` sets too), with the framing headers it needs;
/// returns the body's framing and whether the connection stays open.
fn encode_head(
    out: &mut Vec<u8>,
    head: &http::response::Parts,
    received: Option<&h1::Received>,
    client: Client,
    hint: SizeHint,
) -> (Out, bool) {
    let status = head.status;
    let mut keep_alive = client.keep_alive;
    // Room for a usual head at once, not grown a few bytes at a time on a new
    // connection (a no-op once the buffer has served a response).
    out.reserve(HEAD_OUT);
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    let bodiless = client.is_head
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let mut length = None;
    let mut date = false;
    let mut connection = false;
    let mut field = |name: &[u8], value: &[u8]| {
        let is = |lower: &[u8]| name.eq_ignore_ascii_case(lower);
        if is(b"content-length") {
            // 1xx and 204 carry none (RFC 9110 §8.6); a HEAD or 304 answer keeps it.
            // One that is not a single length (say `7, 7`) gives way to steady's own.
            if status.is_informational() || status == StatusCode::NO_CONTENT || length.is_some() {
                return;
            }
            length = h1::parse_length(value);
            if length.is_none() {
                return;
            }
        } else if is(b"transfer-encoding") {
            // This hop's framing is steady's own.
            return;
        } else if is(b"date") {
            date = true;
        } else if is(b"connection") {
            connection = true;
        }
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    };
    if let Some(received) = received {
        // (`for_each`, not a `for` loop: a chain's own fold runs its two parts as two
        // plain loops instead of asking which part it is in at every field.)
        received.fields().for_each(|(name, value)| {
            // What steady set (the request id, rate-limit fields) replaces the
            // upstream's: the map is small, and names differ mostly in length.
            if !head
                .headers
                .keys()
                .any(|k| name.eq_ignore_ascii_case(k.as_str().as_bytes()))
            {
                field(name, value);
            }
        });
    }
    for (name, value) in &head.headers {
        field(name.as_str().as_bytes(), value.as_bytes());
    }
    let framing = if bodiless {
        Out::Done
    } else if let Some(n) = length {
        Out::Length(n)
    } else if let Some(n) = hint.exact() {
        out.extend_from_slice(b"content-length: ");
        crate::text::push_u64(out, n);
        out.extend_from_slice(b"\r\n");
        Out::Length(n)
    } else if client.version == Version::HTTP_11 {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
        Out::Chunked
    } else {
        keep_alive = false;
        Out::Close
    };
    let framing = if framing == Out::Length(0) {
        Out::Done
    } else {
        framing
    };
    if !date {
        out.extend_from_slice(b"date: ");
        crate::clock::push_http_date(out);
        out.extend_from_slice(b"\r\n");
    }
    if !connection && status != StatusCode::SWITCHING_PROTOCOLS {
        if !keep_alive {
            out.extend_from_slice(b"connection: close\r\n");
        } else if client.version == Version::HTTP_10 {
            out.extend_from_slice(b"connection: keep-alive\r\n");
        }
    }
    out.extend_from_slice(b"\r\n");
    (framing, keep_alive)
}

/// Bytes on their way to the client, and how many of them were written.
struct Writer<'a> {
    out: &'a mut Vec<u8>,
    at: &'a mut usize,
    /// The body broke: what arrived is written, then the connection is dropped.
    failed: &'a mut bool,
}

/// Writes the response: the head in `out`, then the body as it comes, gathered into
/// `out` while more is ready so that a small response goes out in one send.
fn poll_response<T>(
    shared: &SharedConn<T>,
    w: &mut Writer<'_>,
    framing: &mut Out,
    mut body: Pin<&mut &mut ResponseBody>,
    cx: &mut Context<'_>,
) -> Poll<io::Result<()>>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let Writer { out, at, failed } = w;
    loop {
        let mut waiting = false;
        while *framing != Out::Done && out.len() < GATHER {
            match body.as_mut().poll_frame(cx) {
                Poll::Pending => {
                    waiting = true;
                    break;
                }
                Poll::Ready(Some(Ok(frame))) => {
                    let mut encoded = match frame.into_data() {
                        Ok(data) => encode_data(out, framing, &data),
                        // Trailers end a chunked body; a body with a length, or one
                        // read to the close (HTTP/1.0), has no room for them.
                        Err(frame) => {
                            if let (Ok(trailers), Out::Chunked) = (frame.into_trailers(), *framing)
                            {
                                h1::encode_last_chunk(out, &trailers);
                                *framing = Out::Done;
                            }
                            Ok(())
                        }
                    };
                    if encoded.is_ok() && body.is_end_stream() {
                        encoded = finish(out, framing);
                    }
                    if let Err(e) = encoded {
                        broke(framing, failed, &e);
                    }
                }
                Poll::Ready(None) => {
                    if let Err(e) = finish(out, framing) {
                        broke(framing, failed, &e);
                    }
                }
                Poll::Ready(Some(Err(e))) => broke(framing, failed, &*e),
            }
        }
        if !out.is_empty() {
            ready!(poll_write_all(shared, out, at, cx))?;
            out.clear();
            **at = 0;
        }
        if **failed {
            return Poll::Ready(Err(io::Error::other("response body broke")));
        }
        if *framing == Out::Done {
            return Poll::Ready(Ok(()));
        }
        if waiting {
            return Poll::Pending;
        }
    }
}

/// The response body broke, or does not match its length: the client gets what was
/// encoded, then a broken connection (an unfinished chunked body or a short length
/// tells it the response is incomplete).
fn broke(framing: &mut Out, failed: &mut bool, e: &dyn std::fmt::Display) {
    tracing::debug!(error = %e, "response body broke; closing the client connection");
    *framing = Out::Done;
    *failed = true;
}

/// Appends a body chunk in the response's framing.
fn encode_data(out: &mut Vec<u8>, framing: &mut Out, data: &Bytes) -> io::Result<()> {
    if data.is_empty() {
        return Ok(());
    }
    match framing {
        Out::Done => {}
        Out::Length(left) => {
            let n = data.len() as u64;
            if n > *left {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "response body longer than its content-length",
                ));
            }
            out.extend_from_slice(data);
            *left -= n;
            if *left == 0 {
                *framing = Out::Done;
            }
        }
        Out::Chunked => {
            crate::text::push_hex(out, data.len() as u64);
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(data);
            out.extend_from_slice(b"\r\n");
        }
        Out::Close => out.extend_from_slice(data),
    }
    Ok(())
}

/// Ends the response body: the last chunk, or a check that the length was met.
fn finish(out: &mut Vec<u8>, framing: &mut Out) -> io::Result<()> {
    match *framing {
        Out::Chunked => out.extend_from_slice(b"0\r\n\r\n"),
        Out::Length(_) => {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "response body shorter than its content-length",
            ))
        }
        Out::Done | Out::Close => {}
    }
    *framing = Out::Done;
    Ok(())
}

/// Writes `buf` from `*at` on, and flushes.
fn poll_write_all<T>(
    shared: &Mutex<Shared<T>>,
    buf: &[u8],
    at: &mut usize,
    cx: &mut Context<'_>,
) -> Poll<io::Result<()>>
where
    T: AsyncWrite + Unpin,
{
    let mut conn = lock(shared);
    let Some(io) = conn.io.as_mut() else {
        return Poll::Ready(Err(io::ErrorKind::NotConnected.into()));
    };
    while *at < buf.len() {
        match ready!(Pin::new(&mut *io).poll_write(cx, &buf[*at..]))? {
            0 => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
            n => *at += n,
        }
    }
    Pin::new(io).poll_flush(cx)
}

/// Closes the connection's sending side, so the client reads the end of the stream.
async fn close<T>(shared: &Mutex<Shared<T>>)
where
    T: AsyncWrite + Unpin,
{
    let _ = poll_fn(|cx| {
        let mut conn = lock(shared);
        match conn.io.as_mut() {
            Some(io) => Pin::new(io).poll_shutdown(cx),
            None => Poll::Ready(Ok(())),
        }
    })
    .await;
}

/// What a request body reads from: its connection, behind the lock it shares with the
/// connection's loop.
trait Source: Send + Sync {
    fn poll_frame(&self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Frame<Bytes>>>>;
    fn framing(&self) -> Framing;
}

impl<T> Source for Mutex<Shared<T>>
where
    T: AsyncRead + AsyncWrite + Unpin + Send,
{
    fn poll_frame(&self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Frame<Bytes>>>> {
        let mut conn = lock(self);
        let Shared {
            io,
            read,
            framing,
            continue_left,
        } = &mut *conn;
        if *framing == Framing::Done {
            return Poll::Ready(None);
        }
        let Some(io) = io.as_mut() else {
            return Poll::Ready(Some(Err(io::ErrorKind::NotConnected.into())));
        };
        // The client waits for this before it sends the body it announced.
        while *continue_left > 0 {
            let at = CONTINUE.len() - *continue_left;
            match ready!(Pin::new(&mut *io).poll_write(cx, &CONTINUE[at..]))? {
                0 => return Poll::Ready(Some(Err(io::ErrorKind::WriteZero.into()))),
                n => *continue_left -= n,
            }
        }
        h1::decode(framing, read, cx, |buf, cx| {
            h1::poll_fill(&mut *io, buf, cx)
        })
        .map(|polled| {
            polled.map(|r| {
                r.map_err(|e| match e.kind() {
                    io::ErrorKind::UnexpectedEof => io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "client closed the connection in the middle of the request body",
                    ),
                    _ => e,
                })
            })
        })
    }

    fn framing(&self) -> Framing {
        lock(self).framing
    }
}

/// A client's request body, read from its connection as it is polled.
pub struct Body {
    /// `None` for a request without a body.
    source: Option<Arc<dyn Source>>,
}

impl Body {
    /// The body of a request without one.
    pub fn empty() -> Self {
        Body { source: None }
    }
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("server::Body")
            .field("framing", &self.source.as_ref().map(|s| s.framing()))
            .finish()
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match &self.source {
            None => Poll::Ready(None),
            Some(source) => source.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.source
            .as_ref()
            .is_none_or(|s| s.framing() == Framing::Done)
    }

    fn size_hint(&self) -> SizeHint {
        match self.source.as_ref().map(|s| s.framing()) {
            None | Some(Framing::Done) => SizeHint::with_exact(0),
            Some(Framing::Length(n)) => SizeHint::with_exact(n),
            Some(_) => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::ConnState;
    use http::header::HeaderValue;
    use http_body_util::BodyExt as _;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const LIMITS: Limits = Limits {
        max_head: 8 * 1024,
        max_headers: 40,
    };

    fn parse(raw: &[u8]) -> Result<Option<Head>, Refusal> {
        parse_head(&mut BytesMut::from(raw), LIMITS)
    }

    fn head(raw: &[u8]) -> Head {
        parse(raw).unwrap().expect("a complete head")
    }

    #[test]
    fn a_head_becomes_a_request_sharing_its_bytes() {
        let mut buf = BytesMut::from(
            &b"\r\nGET /a?b=c HTTP/1.1\r\nHost: x.test\r\nX-Two: 1\r\nx-two: 2\r\n\r\nnext"[..],
        );
        let parsed = parse_head(&mut buf, LIMITS).unwrap().unwrap();
        let req = &parsed.request;
        assert_eq!(req.method(), Method::GET);
        assert_eq!(req.uri().path_and_query().unwrap().as_str(), "/a?b=c");
        assert_eq!(req.version(), Version::HTTP_11);
        assert_eq!(req.headers()["host"], "x.test");
        assert_eq!(req.headers().get_all("x-two").iter().count(), 2);
        assert_eq!(parsed.framing, Framing::Done);
        assert!(parsed.keep_alive);
        // The bytes after the head stay for the next one.
        assert_eq!(&buf[..], b"next");
    }

    #[test]
    fn framing_and_keep_alive_follow_rfc_9112() {
        let h = head(b"POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n");
        assert_eq!(h.framing, Framing::Length(5));
        let h = head(b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n");
        assert_eq!(h.framing, Framing::Chunked(h1::Chunk::Size));
        assert!(!head(b"GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(head(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").keep_alive);
        assert!(!head(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n").keep_alive);
        let h = head(b"POST / HTTP/1.1\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n");
        assert!(h.expect_continue);
        assert!(!head(b"POST / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n").expect_continue);
        assert!(
            head(b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n").upgrade
        );
    }

    #[test]
    fn smuggling_shapes_and_garbage_are_refused() {
        for raw in [
            &b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            b"GET / HTTP/2.0\r\n\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
            b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
        ] {
            assert_eq!(
                parse(raw).err(),
                Some(Refusal::Bad),
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
    }

    #[test]
    fn limits_give_431_and_414() {
        let many: String = (0..41).map(|i| format!("x-{i}: v\r\n")).collect();
        let raw = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert_eq!(parse(raw.as_bytes()).err(), Some(Refusal::TooLarge));
        // More than fit the first try, within the limit.
        let some: String = (0..40).map(|i| format!("x-{i}: v\r\n")).collect();
        let raw = format!("GET / HTTP/1.1\r\n{some}\r\n");
        assert_eq!(head(raw.as_bytes()).request.headers().len(), 40);
        let long = format!("GET / HTTP/1.1\r\nx: {}\r\n\r\n", "v".repeat(9000));
        assert_eq!(parse(long.as_bytes()).err(), Some(Refusal::TooLarge));
        let target = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(MAX_TARGET));
        let limits = Limits {
            max_head: 128 * 1024,
            max_headers: 40,
        };
        let refused = parse_head(&mut BytesMut::from(target.as_bytes()), limits);
        assert_eq!(refused.err(), Some(Refusal::TargetTooLong));
        // Incomplete: wait for more.
        assert!(parse(b"GET / HTTP/1.1\r\nHost: x").unwrap().is_none());
    }

    #[test]
    fn canned_refusals_announce_their_length() {
        for refusal in [Refusal::Bad, Refusal::TooLarge, Refusal::TargetTooLong] {
            let raw = refusal.response();
            let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
            let head = std::str::from_utf8(&raw[..split]).unwrap();
            let body = &raw[split..];
            assert!(
                head.contains(&format!("content-length: {}\r\n", body.len())),
                "{head}"
            );
            let json: serde_json::Value = serde_json::from_slice(body).unwrap();
            assert_eq!(json["source"], "client");
        }
    }

    fn encoded(
        response: Response<()>,
        version: Version,
        is_head: bool,
        hint: SizeHint,
    ) -> (String, Out, bool) {
        let (parts, ()) = response.into_parts();
        let mut out = Vec::new();
        let client = Client {
            version,
            is_head,
            keep_alive: true,
        };
        let (framing, keep_alive) = encode_head(&mut out, &parts, None, client, hint);
        (String::from_utf8(out).unwrap(), framing, keep_alive)
    }

    #[test]
    fn response_heads_carry_the_framing_they_need() {
        // A known length is announced; a date is added when the response has none.
        let (text, framing, keep) = encoded(
            Response::new(()),
            Version::HTTP_11,
            false,
            SizeHint::with_exact(3),
        );
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(text.contains("content-length: 3\r\n"), "{text}");
        assert!(text.contains("date: "), "{text}");
        assert!(text.ends_with("\r\n\r\n"));
        assert_eq!((framing, keep), (Out::Length(3), true));

        // Unknown length: chunked for HTTP/1.1, until the close for HTTP/1.0.
        let (text, framing, _) =
            encoded(Response::new(()), Version::HTTP_11, false, SizeHint::new());
        assert!(text.contains("transfer-encoding: chunked\r\n"), "{text}");
        assert_eq!(framing, Out::Chunked);
        let (text, framing, keep) =
            encoded(Response::new(()), Version::HTTP_10, false, SizeHint::new());
        assert!(text.contains("connection: close\r\n"), "{text}");
        assert_eq!((framing, keep), (Out::Close, false));

        // The response's own length and date stand; a HEAD answer has no body.
        let mut r = Response::new(());
        r.headers_mut()
            .insert("content-length", HeaderValue::from_static("10"));
        r.headers_mut()
            .insert("date", HeaderValue::from_static("then"));
        let (text, framing, _) = encoded(r, Version::HTTP_11, true, SizeHint::new());
        assert_eq!(text.matches("content-length").count(), 1, "{text}");
        assert!(text.contains("date: then\r\n"), "{text}");
        assert_eq!(framing, Out::Done);

        // 204 carries no length at all.
        let mut r = Response::new(());
        *r.status_mut() = StatusCode::NO_CONTENT;
        r.headers_mut()
            .insert("content-length", HeaderValue::from_static("0"));
        let (text, framing, _) = encoded(r, Version::HTTP_11, false, SizeHint::new());
        assert!(!text.contains("content-length"), "{text}");
        assert_eq!(framing, Out::Done);
    }

    /// Serves one end of a duplex pipe with `service`; returns the client's end.
    fn serving<S, F>(service: S) -> (tokio::io::DuplexStream, CancellationToken)
    where
        S: FnMut(Request<ClientBody>) -> F + Send + 'static,
        F: Future<Output = Response<ResponseBody>> + Send,
    {
        let (server, client) = tokio::io::duplex(64 * 1024);
        let io = ConnIo::new(
            server,
            ConnState::new(),
            Duration::from_secs(10),
            Duration::from_secs(60),
        );
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        tokio::spawn(async move { serve(io, LIMITS, service, &token).await });
        (client, shutdown)
    }

    /// Answers with the request's path and body.
    async fn echo(req: Request<ClientBody>) -> Response<ResponseBody> {
        let (parts, body) = req.into_parts();
        let body = match body.collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => Bytes::from(format!("error: {e}")),
        };
        let mut text = parts.uri.path().as_bytes().to_vec();
        text.push(b' ');
        text.extend_from_slice(&body);
        Response::new(ResponseBody::from(Bytes::from(text)))
    }

    async fn read_until_closed(client: &mut tokio::io::DuplexStream) -> String {
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut got))
            .await
            .expect("the server closed")
            .unwrap();
        String::from_utf8_lossy(&got).into_owned()
    }

    #[tokio::test]
    async fn pipelined_requests_are_answered_in_order() {
        let (mut client, _) = serving(echo);
        client
            .write_all(
                b"GET /one HTTP/1.1\r\nHost: x\r\n\r\n\
POST /two HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n\
GET /three HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            )
            .await
            .unwrap();
        let got = read_until_closed(&mut client).await;
        let one = got.find("/one ").unwrap();
        let two = got.find("/two abc").unwrap();
        let three = got.find("/three ").unwrap();
        assert!(one < two && two < three, "{got}");
        assert_eq!(got.matches("HTTP/1.1 200 OK").count(), 3, "{got}");
        assert!(got.contains("connection: close"), "{got}");
    }

    #[tokio::test]
    async fn expect_continue_is_answered_when_the_body_is_read() {
        let (mut client, _) = serving(echo);
        client
            .write_all(
                b"PUT /up HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n",
            )
            .await
            .unwrap();
        let mut interim = [0u8; CONTINUE.len()];
        tokio::time::timeout(Duration::from_secs(5), client.read_exact(&mut interim))
            .await
            .expect("100 Continue before the body")
            .unwrap();
        assert_eq!(&interim[..], CONTINUE);
        client.write_all(b"data").await.unwrap();
        client.shutdown().await.unwrap();
        let got = read_until_closed(&mut client).await;
        assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{got}");
        assert!(got.ends_with("/up data"), "{got}");
    }

    #[tokio::test]
    async fn a_client_closing_mid_body_breaks_the_body_not_the_server() {
        let (mut client, _) = serving(echo);
        client
            .write_all(b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
            .await
            .unwrap();
        client.shutdown().await.unwrap();
        let got = read_until_closed(&mut client).await;
        assert!(got.contains("error: client closed the connection"), "{got}");
    }

    #[tokio::test]
    async fn a_client_gone_while_in_flight_cancels_its_request() {
        let (dropped_tx, dropped_rx) = tokio::sync::oneshot::channel::<()>();
        let mut dropped_tx = Some(dropped_tx);
        let (mut client, _) = serving(move |_req| {
            // Never answers; tells when it is dropped.
            struct Tell(Option<tokio::sync::oneshot::Sender<()>>);
            impl Drop for Tell {
                fn drop(&mut self) {
                    if let Some(tx) = self.0.take() {
                        let _ = tx.send(());
                    }
                }
            }
            let tell = Tell(dropped_tx.take());
            async move {
                let _tell = tell;
                std::future::pending::<Response<ResponseBody>>().await
            }
        });
        client
            .write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(client);
        tokio::time::timeout(Duration::from_secs(5), dropped_rx)
            .await
            .expect("the request was cancelled")
            .unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_partial_head_behind_a_request_gets_the_header_timeout() {
        // The second head's start arrives with the first request; the rest never does.
        // The service marks its request in flight, as the request path does.
        let (server, mut client) = tokio::io::duplex(64 * 1024);
        let state = ConnState::new();
        let io = ConnIo::new(
            server,
            state.clone(),
            Duration::from_secs(10),
            Duration::from_secs(60),
        );
        let service = move |req| {
            let state = state.clone();
            async move {
                state.request_started(false);
                let response = echo(req).await;
                state.request_finished();
                response
            }
        };
        let shutdown = CancellationToken::new();
        tokio::spawn(async move { serve(io, LIMITS, service, &shutdown).await });
        let started = tokio::time::Instant::now();
        client
            .write_all(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHo")
            .await
            .unwrap();
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(300), client.read_to_end(&mut got))
            .await
            .expect("the server closed")
            .unwrap();
        let got = String::from_utf8_lossy(&got);
        assert!(got.starts_with("HTTP/1.1 200 OK"), "{got}");
        assert!(got.contains("HTTP/1.1 408"), "{got}");
        // The 10 s header timeout, not the 60 s idle one.
        assert_eq!(started.elapsed().as_secs(), 10);
    }

    #[tokio::test]
    async fn garbage_gets_400_and_a_close() {
        let (mut client, _) = serving(echo);
        client.write_all(b"\x00\x01garbage\r\n\r\n").await.unwrap();
        let got = read_until_closed(&mut client).await;
        assert!(got.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{got}");
    }

    #[tokio::test]
    async fn shutdown_closes_an_idle_connection_and_ends_the_next_answer() {
        let (mut client, shutdown) = serving(echo);
        client
            .write_all(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 256];
        let n = client.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200 OK"));
        assert!(!String::from_utf8_lossy(&buf[..n]).contains("connection: close"));
        shutdown.cancel();
        let got = read_until_closed(&mut client).await;
        assert_eq!(got, "", "an idle connection closes at shutdown");
    }

    #[tokio::test]
    async fn a_body_longer_than_its_length_breaks_the_connection() {
        let (mut client, _) = serving(|_req| async {
            let mut r = Response::new(ResponseBody::from(Bytes::from_static(b"too long")));
            r.headers_mut()
                .insert("content-length", HeaderValue::from_static("3"));
            r
        });
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let got = read_until_closed(&mut client).await;
        // The head went out, the body did not, and the pipelined request got nothing.
        assert_eq!(got.matches("HTTP/1.1 200").count(), 1, "{got}");
        assert!(!got.contains("too long"), "{got}");
    }
}
