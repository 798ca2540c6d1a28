//! Body types of the request path: both directions stream, nothing is buffered whole.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::timer::{PauseLimit, Stalled};

/// Why a client's request body stopped early, shared with the forwarder so it can choose
/// the status after the upstream call fails.
#[derive(Debug, Default)]
pub struct BodyVerdict {
    state: AtomicU8,
    complete: AtomicBool,
    /// Body bytes received from the client so far (the access log's `bytes_in`).
    received: AtomicU64,
}

impl BodyVerdict {
    const TOO_LARGE: u8 = 1;
    const BROKEN: u8 = 2;
    const TIMED_OUT: u8 = 3;

    /// The client paused longer than the body read timeout.
    pub fn timed_out(&self) -> bool {
        self.state.load(Ordering::Relaxed) == Self::TIMED_OUT
    }

    /// Body bytes received from the client so far.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// The whole body has been received.
    pub fn complete(&self) -> bool {
        self.complete.load(Ordering::Relaxed)
    }

    /// The body exceeded the size limit.
    pub fn too_large(&self) -> bool {
        self.state.load(Ordering::Relaxed) == Self::TOO_LARGE
    }

    /// The client sent a malformed body or disconnected mid-body.
    pub fn broken(&self) -> bool {
        self.state.load(Ordering::Relaxed) == Self::BROKEN
    }

    fn set(&self, v: u8) {
        self.state.store(v, Ordering::Relaxed);
    }
}

/// A client's request body as the server hands it over: read by steady's own HTTP/1.1
/// server, or hyper's HTTP/2 one.
#[derive(Debug)]
pub enum ClientBody {
    /// From an HTTP/1.x connection.
    H1(crate::server::Body),
    /// From an HTTP/2 stream.
    H2(Incoming),
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            ClientBody::H1(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
            ClientBody::H2(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ClientBody::H1(body) => body.is_end_stream(),
            ClientBody::H2(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ClientBody::H1(body) => body.size_hint(),
            ClientBody::H2(body) => body.size_hint(),
        }
    }
}

/// Where a request body's bytes come from.
enum Source {
    /// Streamed from the client as it arrives.
    Stream(ClientBody),
    /// Read in full beforehand (so a retry can send it again); taken by the first poll.
    Buffered(Option<Bytes>),
}

pin_project_lite::pin_project! {
    /// A client's request body on its way upstream, cut off at the listener's size limit
    /// and when the client pauses too long; or a body read in full beforehand, which a
    /// retry can send again.
    pub struct RequestBody {
        inner: Source,
        seen: u64,
        limit: u64,
        // Pause allowed between two reads, and the timer of the current wait (created
        // on the first wait only).
        read_timeout: Duration,
        timer: Option<Pin<Box<tokio::time::Sleep>>>,
        verdict: Option<Arc<BodyVerdict>>,
    }
}

impl RequestBody {
    /// Wraps `inner`, failing once more than `limit` bytes arrive (`u64::MAX` for none)
    /// or when no data arrives for `read_timeout`.
    pub fn new(
        inner: ClientBody,
        limit: u64,
        read_timeout: Duration,
        verdict: Option<Arc<BodyVerdict>>,
    ) -> Self {
        Self {
            inner: Source::Stream(inner),
            seen: 0,
            limit,
            read_timeout,
            timer: None,
            verdict,
        }
    }

    /// A body whose bytes are already here (a replay of a buffered request body).
    pub fn buffered(data: Bytes) -> Self {
        Self {
            inner: Source::Buffered((!data.is_empty()).then_some(data)),
            seen: 0,
            limit: u64::MAX,
            read_timeout: Duration::MAX,
            timer: None,
            verdict: None,
        }
    }
}

/// Error surfaced to the upstream connection when a request body is cut off.
#[derive(Debug, thiserror::Error)]
pub enum RequestBodyError {
    /// More bytes than the limit allows.
    #[error("request body exceeds {0} bytes")]
    TooLarge(u64),
    /// The client's stream broke.
    #[error("client body: {0}")]
    Client(BodyError),
    /// The client paused longer than the body read timeout.
    #[error("no request body data for {0:?}")]
    TimedOut(Duration),
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = RequestBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        let inner = match this.inner {
            Source::Buffered(data) => return Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            Source::Stream(inner) => inner,
        };
        let polled = Pin::new(&mut *inner).poll_frame(cx);
        if polled.is_pending() {
            let deadline = tokio::time::Instant::now() + *this.read_timeout;
            let timer = this
                .timer
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
            if timer.as_mut().poll(cx).is_ready() {
                if let Some(v) = this.verdict {
                    v.set(BodyVerdict::TIMED_OUT);
                }
                return Poll::Ready(Some(Err(RequestBodyError::TimedOut(*this.read_timeout))));
            }
            return Poll::Pending;
        }
        // Data (or the end) arrived: the next pause gets a fresh timer.
        if let Some(timer) = this.timer.as_mut() {
            timer
                .as_mut()
                .reset(tokio::time::Instant::now() + *this.read_timeout);
        }
        match ready!(polled) {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    *this.seen += data.len() as u64;
                    if let Some(v) = this.verdict {
                        v.received.store(*this.seen, Ordering::Relaxed);
                    }
                    if *this.seen > *this.limit {
                        if let Some(v) = this.verdict {
                            v.set(BodyVerdict::TOO_LARGE);
                        }
                        return Poll::Ready(Some(Err(RequestBodyError::TooLarge(*this.limit))));
                    }
                }
                if inner.is_end_stream() {
                    if let Some(v) = this.verdict {
                        v.complete.store(true, Ordering::Relaxed);
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(e)) => {
                if let Some(v) = this.verdict {
                    v.set(BodyVerdict::BROKEN);
                }
                Poll::Ready(Some(Err(RequestBodyError::Client(e))))
            }
            None => {
                if let Some(v) = this.verdict {
                    v.complete.store(true, Ordering::Relaxed);
                }
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Source::Stream(inner) => inner.is_end_stream(),
            Source::Buffered(data) => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Source::Stream(inner) => inner.size_hint(),
            Source::Buffered(data) => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// What steady sends a client: an upstream's streamed body or a small local one.
    // pin-project-lite takes no docs on enum fields; the variants say what they hold.
    #[allow(missing_docs)]
    #[project = ResponseBodyProj]
    pub enum ResponseBody {
        /// Streamed from the upstream as it arrives.
        Upstream { #[pin] inner: Incoming, pauses: PauseLimit },
        /// Streamed from a pooled HTTP/1.1 connection, which goes back to its pool
        /// once the body has been read to the end.
        H1 { inner: crate::h1::Body, pauses: PauseLimit },
        /// Generated by steady (errors, admin answers).
        Local { data: Option<Bytes> },
        /// Another body, observed: its bytes are counted for the access log, whose
        /// line is written when the body ends or is dropped, and its end ends the
        /// request's span. One box for both, so the other variants stay small.
        Observed { inner: Box<Observation> },
    }
}

/// A body with what watches it: the access-log line and the span, either or both.
///
/// Made in one box when the request arrives, so the request's phases write to the
/// line's facts and the span's record in place, and nothing large moves afterwards.
pub struct Observation {
    body: ResponseBody,
    line: Option<crate::access_log::PendingLine>,
    span: Option<crate::otel::PendingSpan>,
}

impl std::fmt::Debug for Observation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observation").finish_non_exhaustive()
    }
}

impl Observation {
    /// Watches a request with `line` and `span` (its body comes with the response).
    pub(crate) fn new(
        line: Option<crate::access_log::PendingLine>,
        span: Option<crate::otel::PendingSpan>,
    ) -> Box<Observation> {
        Box::new(Observation {
            body: ResponseBody::empty(),
            line,
            span,
        })
    }

    /// The pending access-log line, if one is written.
    pub(crate) fn line(&self) -> Option<&crate::access_log::PendingLine> {
        self.line.as_ref()
    }

    /// The pending span, if spans are exported.
    pub(crate) fn span(&self) -> Option<&crate::otel::PendingSpan> {
        self.span.as_ref()
    }

    /// Notes the response head, and watches its body (ending the line and the span at
    /// once if it is empty).
    pub(crate) fn watch<B>(
        mut self: Box<Self>,
        response: http::Response<B>,
    ) -> http::Response<ResponseBody>
    where
        B: Into<ResponseBody>,
    {
        if let Some(line) = &mut self.line {
            line.head(&response);
        }
        if let Some(span) = &mut self.span {
            span.head(&response);
        }
        response.map(|body| {
            self.body = body.into();
            if self.body.is_end_stream() {
                self.finish();
                return std::mem::replace(&mut self.body, ResponseBody::empty());
            }
            ResponseBody::Observed { inner: self }
        })
    }

    fn finish(&mut self) {
        // One clock read ends both.
        let end = std::time::Instant::now();
        if let Some(line) = &mut self.line {
            line.finish_at(end);
        }
        if let Some(span) = &mut self.span {
            span.finish_at(end);
        }
    }
}

impl ResponseBody {
    /// An empty body.
    pub fn empty() -> Self {
        ResponseBody::Local { data: None }
    }
}

impl From<Bytes> for ResponseBody {
    fn from(data: Bytes) -> Self {
        ResponseBody::Local {
            data: (!data.is_empty()).then_some(data),
        }
    }
}

impl ResponseBody {
    /// The HTTP/1.1 upstream body inside, observed or not.
    fn h1_body(&self) -> Option<&crate::h1::Body> {
        match self {
            ResponseBody::H1 { inner, .. } => Some(inner),
            ResponseBody::Observed { inner } => inner.body.h1_body(),
            _ => None,
        }
    }

    /// [`ResponseBody::h1_body`], to change.
    fn h1_body_mut(&mut self) -> Option<&mut crate::h1::Body> {
        match self {
            ResponseBody::H1 { inner, .. } => Some(inner),
            ResponseBody::Observed { inner } => inner.body.h1_body_mut(),
            _ => None,
        }
    }

    /// An HTTP/1.1 upstream's header fields as received, which the response's map
    /// leaves out (see [`crate::h1::Received`]).
    pub(crate) fn received(&self) -> Option<&crate::h1::Received> {
        self.h1_body()?.received()
    }

    /// [`ResponseBody::received`], to change.
    pub(crate) fn received_mut(&mut self) -> Option<&mut crate::h1::Received> {
        self.h1_body_mut()?.received_mut()
    }
}

/// The response with all its header fields in its map: the upstream's as received, then
/// steady's, which replace any of the same name. For what reads or writes the map
/// whole (steady's HTTP/2 server); steady's HTTP/1.1 server writes the received fields
/// as they are instead.
pub(crate) fn with_all_headers(
    mut response: http::Response<ResponseBody>,
) -> http::Response<ResponseBody> {
    if let Some(received) = response
        .body_mut()
        .h1_body_mut()
        .and_then(|b| b.take_received())
    {
        let set = std::mem::take(response.headers_mut());
        *response.headers_mut() = received.into_map(set);
    }
    response
}

impl ResponseBody {
    /// For an upstream's `101` response: its connection, for the tunnel, with any bytes
    /// already read past the head.
    pub fn take_upgraded(&mut self) -> Option<(tokio::net::TcpStream, Bytes)> {
        match self {
            ResponseBody::H1 { inner, .. } => inner.take_upgraded(),
            _ => None,
        }
    }
}

impl ResponseBody {
    /// An HTTP/1.1 upstream's body, failed if it pauses longer than `pause_limit`.
    pub(crate) fn h1(inner: crate::h1::Body, pause_limit: Duration) -> Self {
        ResponseBody::H1 {
            inner,
            pauses: PauseLimit::new(pause_limit),
        }
    }

    /// An h2c upstream's body, failed if it pauses longer than `pause_limit`.
    pub(crate) fn h2(inner: Incoming, pause_limit: Duration) -> Self {
        ResponseBody::Upstream {
            inner,
            pauses: PauseLimit::new(pause_limit),
        }
    }
}

/// Why a response body stopped early: the upstream's stream broke.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// Why a response body broke after its head, as the access log's `failure` names it:
/// the upstream paused past `response_body_timeout`, the client's request body broke
/// while the upstream was still reading it, or else the upstream's stream broke (a
/// reset, a short body, bad chunk framing).
fn cut_short(e: &(dyn std::error::Error + 'static)) -> &'static str {
    if e.is::<Stalled>() {
        return "upstream-body-timeout";
    }
    let upload = e
        .downcast_ref::<std::io::Error>()
        .and_then(|io| io.get_ref())
        .and_then(|inner| inner.downcast_ref::<crate::h1::Error>())
        .is_some_and(|h1| matches!(h1, crate::h1::Error::Body(_)));
    if upload {
        crate::error::Kind::ClientAborted.reason()
    } else {
        crate::error::Kind::UpstreamProtocol.reason()
    }
}

/// One read of a body: its next frame, or its end.
type Read<E> = Option<Result<Frame<Bytes>, E>>;

/// A read of an upstream body, or the error that it paused too long.
fn stalled_or<E: Into<BodyError>>(polled: Poll<Result<Read<E>, Stalled>>) -> Poll<Read<BodyError>> {
    polled.map(|read| match read {
        Ok(frame) => frame.map(|f| f.map_err(Into::into)),
        Err(stalled) => {
            tracing::debug!(error = %stalled, "upstream response body stalled");
            Some(Err(stalled.into()))
        }
    })
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.project() {
            ResponseBodyProj::Upstream { inner, pauses } => {
                stalled_or(pauses.check(inner.poll_frame(cx), cx))
            }
            ResponseBodyProj::H1 { inner, pauses } => {
                stalled_or(pauses.check(Pin::new(inner).poll_frame(cx), cx))
            }
            ResponseBodyProj::Local { data } => {
                Poll::Ready(data.take().map(|d| Ok(Frame::data(d))))
            }
            ResponseBodyProj::Observed { inner } => {
                let obs = &mut **inner;
                let polled = Pin::new(&mut obs.body).poll_frame(cx);
                match &polled {
                    Poll::Ready(Some(Ok(frame))) => {
                        if let (Some(line), Some(data)) = (&mut obs.line, frame.data_ref()) {
                            line.sent(data.len());
                        }
                        if obs.body.is_end_stream() {
                            obs.finish();
                        }
                    }
                    Poll::Ready(Some(Err(e))) => {
                        // The head has gone out with its status: the line's `failure`
                        // and the span's error are the only record that the response
                        // was cut short (and the span's tail rule keeps it).
                        let reason = cut_short(&**e);
                        if let Some(line) = &obs.line {
                            line.facts().fail(reason);
                        }
                        if let Some(span) = &obs.span {
                            span.record().fail(reason);
                        }
                        obs.finish();
                    }
                    Poll::Ready(None) => obs.finish(),
                    Poll::Pending => {}
                }
                polled
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Upstream { inner, .. } => inner.is_end_stream(),
            ResponseBody::H1 { inner, .. } => inner.is_end_stream(),
            ResponseBody::Local { data } => data.is_none(),
            ResponseBody::Observed { inner } => inner.body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Upstream { inner, .. } => inner.size_hint(),
            ResponseBody::H1 { inner, .. } => inner.size_hint(),
            ResponseBody::Local { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            ResponseBody::Observed { inner } => inner.body.size_hint(),
        }
    }
}
