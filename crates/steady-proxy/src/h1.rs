//! steady's HTTP/1.1 client: one exchange at a time on a pooled upstream connection,
//! driven by the request's own task.
//!
//! hyper's client runs each connection as a task of its own and talks to it through
//! channels: the request is handed to the connection's task, the response head handed
//! back, and each body chunk handed over again. On the benchmark that was a third of
//! steady's user-space instructions per request (13,600 of 40,700) and two extra task
//! wake-ups. Here the request's task writes the head, reads the response head and, as
//! the client reads it, the response body, straight from the socket; the connection goes
//! back to its pool when the body ends. Parsing is httparse's, as in hyper; framing
//! follows RFC 9112 §6.
//!
//! Layout: [`Connection`] (the socket and its buffers), [`Connection::exchange`]
//! (request out, response head in), [`Received`] (the response's header fields as
//! they arrived, which steady's server writes on without a map), [`Body`] (the response
//! body, de-chunked, its trailers as a last frame, returning the connection to its pool
//! through a [`crate::pool::Lease`] at its end), `decode` (body framing, shared with
//! the server's request bodies).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::buf::Chain;
use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode, Version};
use http_body::{Body as _, Frame, SizeHint};
use std::future::Future;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::body::{RequestBody, RequestBodyError};
use crate::headers::{Added, X_REQUEST_ID};
use crate::pool::Lease;
use crate::text::{self, Out as _};

/// The most headers a response head may carry (hyper's default).
const MAX_HEADERS: usize = 100;
/// Headers a response head is first parsed for.
const FEW_HEADERS: usize = 24;
/// The longest response head accepted.
pub const MAX_HEAD: usize = 64 * 1024;
/// The longest chunk-size line (extensions included) or trailer section accepted.
const MAX_CHUNK_META: usize = 16 * 1024;
/// Room made in the read buffer before a read.
const READ_CHUNK: usize = 8 * 1024;

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The upstream closed the connection before any byte of a response.
    #[error("upstream closed the connection before responding")]
    Closed,
    /// Reading or writing the socket failed.
    #[error("upstream i/o: {0}")]
    Io(#[from] io::Error),
    /// The response head is not HTTP/1.x.
    #[error("malformed response head: {0}")]
    Parse(#[from] httparse::Error),
    /// The response head is longer than steady accepts.
    #[error("response head exceeds {MAX_HEAD} bytes")]
    HeadTooLarge,
    /// The upstream closed the connection in the middle of the response head.
    #[error("upstream closed the connection in the response head")]
    Truncated,
    /// The response's framing headers are invalid or contradict each other.
    #[error("invalid response framing: {0}")]
    Framing(&'static str),
    /// The client's request body failed while it was being sent.
    #[error(transparent)]
    Body(#[from] RequestBodyError),
}

impl Error {
    /// Nothing came back on a connection the upstream may have closed while it sat idle.
    pub fn is_closed(&self) -> bool {
        match self {
            Error::Closed => true,
            Error::Io(e) => matches!(
                e.kind(),
                io::ErrorKind::ConnectionReset
                    | io::ErrorKind::BrokenPipe
                    | io::ErrorKind::ConnectionAborted
            ),
            _ => false,
        }
    }
}

/// An upstream HTTP/1.1 connection: the socket, bytes read from it but not used yet, and
/// the buffer request heads are written into (kept, so a request allocates none).
pub struct Connection {
    io: TcpStream,
    read: BytesMut,
    write: Vec<u8>,
}

/// How a response body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (HEAD, 204, 304), or its end was read.
    Done,
    /// `Content-Length`: this many bytes are left.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked(Chunk),
    /// Until the upstream closes the connection.
    Close,
    /// `101 Switching Protocols`: the connection now belongs to a tunnel.
    Upgrade,
}

/// Where a chunked body's decoder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunk {
    /// At a chunk-size line.
    Size,
    /// Inside a chunk's data, with this many bytes left.
    Data(u64),
    /// At the CRLF after a chunk's data.
    DataEnd,
    /// In the trailer section after the last chunk, with this many of its bytes (whole
    /// lines) read; they stay in the buffer until the section's empty line arrives, and
    /// are then passed on as one trailers frame.
    Trailers(usize),
}

/// A response head as read: the response without its body, how the body is framed,
/// and whether the connection may carry another exchange after it.
pub struct Head {
    /// Status and version; the headers are in `received`, unless the head is one the
    /// request path must edit as a map (a `101`, or one whose `Connection` names other
    /// fields).
    pub response: Response<()>,
    /// The header fields as they arrived, hop-by-hop ones left out.
    pub received: Option<Box<Received>>,
    /// How the body is delimited.
    pub framing: Framing,
    /// The connection can be reused once the body is read.
    pub keep_alive: bool,
}

/// An upstream response's header fields as they arrived: the head's bytes and where
/// each field the client gets lies in them (the framing and hop-by-hop ones are left
/// out). Most responses go to an HTTP/1.1 client with their fields unchanged, so
/// steady's server writes them from here; building an `http::HeaderMap` of them and
/// encoding it again cost about 2,000 instructions a response. A response's map holds
/// only what steady sets, which replaces the upstream's fields of the same name;
/// [`Received::into_map`] gives both as one map (for an HTTP/2 client). The request's
/// `X-Request-Id`, which every response gets, is kept here too, so a response whose
/// map would hold nothing else needs no map (one costs two allocations).
pub struct Received {
    head: Bytes,
    spans: FieldSpans,
    request_id: Option<HeaderValue>,
}

impl std::fmt::Debug for Received {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.fields().map(|(n, v)| {
                (
                    String::from_utf8_lossy(n).into_owned(),
                    String::from_utf8_lossy(v).into_owned(),
                )
            }))
            .finish()
    }
}

impl Received {
    /// Each field's name (as sent) and value, in order, then the request id if set
    /// (in place of the upstream's).
    pub fn fields(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        let own = self.request_id.as_ref();
        self.spans
            .iter()
            .map(|&(n0, n1, v0, v1)| {
                (
                    &self.head[n0 as usize..n1 as usize],
                    &self.head[v0 as usize..v1 as usize],
                )
            })
            .filter(move |(name, _)| {
                own.is_none() || !name.eq_ignore_ascii_case(X_REQUEST_ID.as_str().as_bytes())
            })
            .chain(own.map(|id| (X_REQUEST_ID.as_str().as_bytes(), id.as_bytes())))
    }

    /// Sets the response's `X-Request-Id`, replacing the upstream's.
    pub fn set_request_id(&mut self, id: HeaderValue) {
        self.request_id = Some(id);
    }

    /// The fields as a map, with those of `set` replacing any of the same name. Values
    /// share the head's bytes.
    pub fn into_map(self, mut set: HeaderMap) -> HeaderMap {
        if let Some(id) = self.request_id {
            set.entry(&X_REQUEST_ID).or_insert(id);
        }
        // httparse checked every name and value as `HeaderName` and `HeaderValue` do,
        // so the map cannot fail; if it did, only steady's fields would be sent.
        let mut map = field_map(
            &self.head,
            &self.spans,
            |_| (),
            |name, _| Ok(!set.contains_key(name)),
        )
        .unwrap_or_default();
        map.extend(set);
        map
    }
}

impl Connection {
    /// A fresh connection.
    pub fn new(io: TcpStream) -> Connection {
        Connection {
            io,
            read: BytesMut::new(),
            write: Vec::new(),
        }
    }

    /// Whether an idle connection can no longer carry a request: the upstream closed or
    /// reset it, or sent bytes nobody asked for. Costs a system call only when the
    /// socket was reported readable since it was last read.
    pub fn is_dead(&self) -> bool {
        if !self.read.is_empty() {
            return true;
        }
        let mut cx = Context::from_waker(futures_util::task::noop_waker_ref());
        match self.io.poll_read_ready(&mut cx) {
            Poll::Pending => false,
            Poll::Ready(Err(_)) => true,
            Poll::Ready(Ok(())) => {
                let mut byte = [0u8; 1];
                !matches!(self.io.try_read(&mut byte),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
        }
    }

    /// Sends one request and reads its response head; the body is then read with
    /// [`Body`], along with the rest of the request body if the upstream answered before
    /// it was all sent (an echo streams its answer while the request still arrives).
    /// `fallback_host` is the `Host` sent when the request carries none.
    ///
    /// A request with a body takes it (leaving `body` empty); one without can be sent
    /// again after a failure.
    pub async fn exchange(
        &mut self,
        parts: &http::request::Parts,
        added: &Added,
        body: &mut RequestBody,
        fallback_host: SocketAddr,
    ) -> Result<(Head, Option<Box<Upload>>), Error> {
        let has_body = !body.is_end_stream();
        let chunked = has_body && !parts.headers.contains_key(header::CONTENT_LENGTH);
        let is_head = parts.method == Method::HEAD;
        let mut head = std::mem::take(&mut self.write);
        head.clear();
        encode_head(&mut head, parts, added, fallback_host, chunked);
        if !has_body {
            // The request waits for the worker's other ready requests before it goes
            // out, so an upstream gets them as one burst and handles several per
            // wake-up (see `batch`).
            crate::batch::turn().await;
            let written = self.io.write_all(&head).await;
            self.write = head;
            written?;
            return Ok((
                read_head(&mut self.io, &mut self.read, is_head).await?,
                None,
            ));
        }
        let body = std::mem::replace(body, RequestBody::buffered(Bytes::new()));
        let upload = Box::new(Upload::new(Bytes::copy_from_slice(&head), body, chunked));
        self.write = head;
        Box::pin(self.send_with_body(upload, is_head)).await
    }

    /// Sends the head and the body while watching for the response head. What is left
    /// of the body when the head arrives is sent as the response body is read.
    async fn send_with_body(
        &mut self,
        mut upload: Box<Upload>,
        is_head: bool,
    ) -> Result<(Head, Option<Box<Upload>>), Error> {
        let (mut rd, mut wr) = self.io.split();
        let response = read_head(&mut rd, &mut self.read, is_head);
        tokio::pin!(response);
        let mut sending = true;
        let mut write_error = None;
        let head = std::future::poll_fn(|cx| {
            if sending {
                match upload.poll_send(&mut wr, cx) {
                    Poll::Ready(Ok(())) => sending = false,
                    // The client's fault, reported as such, unless the upstream has
                    // answered already (its own refusal, say): then the answer goes back.
                    Poll::Ready(Err(e @ Error::Body(_))) => {
                        return match response.as_mut().poll(cx) {
                            Poll::Ready(Ok(mut head)) => {
                                head.keep_alive = false;
                                Poll::Ready(Ok(head))
                            }
                            _ => Poll::Ready(Err(e)),
                        };
                    }
                    // The upstream may have answered and closed: read what it said.
                    Poll::Ready(Err(e)) => {
                        write_error = Some(e);
                        sending = false;
                    }
                    Poll::Pending => {}
                }
            }
            match ready!(response.as_mut().poll(cx)) {
                Ok(head) => Poll::Ready(Ok(head)),
                // A failed write explains a failed read better.
                Err(e) => Poll::Ready(Err(write_error.take().unwrap_or(e))),
            }
        })
        .await;
        let mut head = head?;
        // A request not sent whole leaves the connection unusable.
        head.keep_alive &= write_error.is_none();
        Ok((head, sending.then_some(upload)))
    }

    /// Gives the connection up to a tunnel: the socket and any bytes already read past
    /// the `101` head.
    pub fn into_upgraded(self) -> (TcpStream, Bytes) {
        (self.io, self.read.freeze())
    }
}

/// A request body on its way to the upstream: what is queued for the socket, and the
/// client's body it comes from, framed with `Content-Length` (as is) or chunked.
pub struct Upload {
    body: RequestBody,
    chunked: bool,
    /// The request head, until it is queued (with the first data, when that is ready).
    head: Option<Bytes>,
    out: Option<Out>,
    /// The body's end is queued.
    end: bool,
}

/// Bytes queued for the socket: head, chunk-size line, data, chunk end.
type Out = Chain<Chain<Chain<Bytes, Bytes>, Bytes>, &'static [u8]>;

impl Upload {
    fn new(head: Bytes, body: RequestBody, chunked: bool) -> Upload {
        Upload {
            body,
            chunked,
            head: Some(head),
            out: None,
            end: false,
        }
    }

    /// Sends what it can: `Ready(Ok)` once the whole body is written, `Pending` while
    /// waiting for the client's body or room in the socket.
    pub(crate) fn poll_send<W>(
        &mut self,
        io: &mut W,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), Error>>
    where
        W: tokio::io::AsyncWrite + Unpin,
    {
        loop {
            if let Some(out) = &mut self.out {
                while out.has_remaining() {
                    let n = ready!(tokio_util::io::poll_write_buf(Pin::new(&mut *io), cx, out))?;
                    if n == 0 {
                        return Poll::Ready(Err(Error::Io(io::ErrorKind::WriteZero.into())));
                    }
                }
                self.out = None;
            }
            if self.end {
                return Poll::Ready(Ok(()));
            }
            let (data, end) = match Pin::new(&mut self.body).poll_frame(cx) {
                Poll::Pending => {
                    // No data yet: the head goes out alone, so the upstream can answer.
                    match self.head.take() {
                        Some(head) => {
                            self.queue(head, Bytes::new(), false);
                            continue;
                        }
                        None => return Poll::Pending,
                    }
                }
                Poll::Ready(None) => (Bytes::new(), true),
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        let end = self.body.is_end_stream();
                        (data, end)
                    }
                    // Trailers end a chunked body; a body with a length has no room
                    // for them (dropped, as hyper does).
                    Err(frame) => match frame.into_trailers() {
                        Ok(trailers) if self.chunked => {
                            let mut last = Vec::new();
                            encode_last_chunk(&mut last, &trailers);
                            let head = self.head.take().unwrap_or_default();
                            self.out = Some(
                                head.chain(Bytes::new())
                                    .chain(Bytes::from(last))
                                    .chain(&b""[..]),
                            );
                            self.end = true;
                            continue;
                        }
                        _ => continue,
                    },
                },
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(Error::Body(e))),
            };
            if data.is_empty() && !end {
                continue;
            }
            let head = self.head.take().unwrap_or_default();
            self.queue(head, data, end);
        }
    }

    fn queue(&mut self, head: Bytes, data: Bytes, end: bool) {
        let mut size = Bytes::new();
        let mut tail: &'static [u8] = b"";
        if self.chunked {
            if !data.is_empty() {
                let mut line = text::Stack::<18>::new();
                text::push_hex(&mut line, data.len() as u64);
                line.put(b"\r\n");
                size = Bytes::copy_from_slice(line.as_bytes());
            }
            tail = match (data.is_empty(), end) {
                (true, true) => b"0\r\n\r\n",
                (false, true) => b"\r\n0\r\n\r\n",
                (false, false) => b"\r\n",
                (true, false) => b"",
            };
        }
        self.out = Some(head.chain(size).chain(data).chain(tail));
        self.end = end;
    }
}

/// The request line and headers, as HTTP/1.1 to the upstream: the client's headers,
/// less those steady replaces, then steady's (`added`).
fn encode_head(
    out: &mut Vec<u8>,
    parts: &http::request::Parts,
    added: &Added,
    fallback_host: SocketAddr,
    chunked: bool,
) {
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    out.extend_from_slice(if target.is_empty() {
        b"/"
    } else {
        target.as_bytes()
    });
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut host = false;
    for (name, value) in &parts.headers {
        if added.replaces(name) {
            continue;
        }
        host |= name == header::HOST;
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !host {
        // HTTP/1.1 requires it (RFC 9112 §3.2); the endpoint is all there is to name.
        out.extend_from_slice(b"host: ");
        text::push_socket_addr(out, fallback_host);
        out.extend_from_slice(b"\r\n");
    }
    added.write(out);
    if chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Reads until a final response head is complete, skipping interim (1xx) ones, and
/// leaves the bytes after it in `buf`.
async fn read_head<R>(io: &mut R, buf: &mut BytesMut, is_head: bool) -> Result<Head, Error>
where
    R: tokio::io::AsyncRead + Unpin,
{
    loop {
        if !buf.is_empty() {
            match parse_head(buf, is_head)? {
                Parsed::Final(head) => return Ok(head),
                Parsed::Interim => continue,
                Parsed::Partial => {}
            }
        }
        if buf.len() >= MAX_HEAD {
            return Err(Error::HeadTooLarge);
        }
        if !std::future::poll_fn(|cx| poll_fill(io, buf, cx)).await? {
            return Err(if buf.is_empty() {
                Error::Closed
            } else {
                Error::Truncated
            });
        }
    }
}

/// Reads more into `buf`, making room for it first; `Ok(false)` at end of file.
pub(crate) fn poll_fill<R>(
    io: &mut R,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<io::Result<bool>>
where
    R: tokio::io::AsyncRead + Unpin,
{
    poll_fill_room(io, buf, READ_CHUNK, cx)
}

/// [`poll_fill`], making `room` bytes of room.
pub(crate) fn poll_fill_room<R>(
    io: &mut R,
    buf: &mut BytesMut,
    room: usize,
    cx: &mut Context<'_>,
) -> Poll<io::Result<bool>>
where
    R: tokio::io::AsyncRead + Unpin,
{
    buf.reserve(room);
    let n = ready!(tokio_util::io::poll_read_buf(Pin::new(io), cx, buf))?;
    Poll::Ready(Ok(n > 0))
}

enum Parsed {
    Final(Head),
    /// A 1xx response was consumed; another head follows.
    Interim,
    Partial,
}

/// Parses the head at the front of `buf`, taking it out when complete. Header values
/// share the head's bytes (no copy), as in hyper.
fn parse_head(buf: &mut BytesMut, is_head: bool) -> Result<Parsed, Error> {
    // Room for the usual few headers on the stack (filling 100 slots cost ~500
    // instructions a response); a head with more is parsed again with room for all.
    let mut few = [httparse::EMPTY_HEADER; FEW_HEADERS];
    let mut many = Vec::new();
    let mut response = httparse::Response::new(&mut few);
    let parsed = match response.parse(buf) {
        Err(httparse::Error::TooManyHeaders) => {
            many.resize(MAX_HEADERS, httparse::EMPTY_HEADER);
            response = httparse::Response::new(&mut many);
            response.parse(buf)
        }
        other => other,
    };
    let len = match parsed? {
        // A read can bring the buffer past the limit; the head itself must stay in it.
        httparse::Status::Complete(len) if len > MAX_HEAD => return Err(Error::HeadTooLarge),
        httparse::Status::Complete(len) => len,
        httparse::Status::Partial => return Ok(Parsed::Partial),
    };
    let code = response.code.unwrap_or_default();
    if (100..200).contains(&code) && code != 101 {
        buf.advance(len);
        return Ok(Parsed::Interim);
    }
    let status = StatusCode::from_u16(code).map_err(|_| Error::Framing("status code"))?;
    let version = if response.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    let mut spans = FieldSpans::new();
    field_spans(buf.as_ptr() as usize, response.headers, &mut spans);
    let head = buf.split_to(len).freeze();
    // The framing and connection fields are noted and left out: this hop's own, they
    // never reach the client.
    let mut fields = Fields::default();
    let mut kept = FieldSpans::new();
    for &span in &spans {
        let (n0, n1, v0, v1) = span;
        let value = &head[v0 as usize..v1 as usize];
        let hop = Hop::of(&head[n0 as usize..n1 as usize]);
        fields.note(hop, value)?;
        match hop {
            Hop::EndToEnd => kept.push(span),
            // A list (`2, 2`) is left out too: the body's length is then written
            // plainly by the server that sends it (an HTTP/2 client refuses a list).
            Hop::ContentLength if parse_length(value).is_some() => kept.push(span),
            Hop::ContentLength | Hop::TransferEncoding | Hop::Connection | Hop::Other => {}
        }
    }
    if fields.encoded && fields.length.is_some() {
        // Transfer-Encoding overrides Content-Length, which a proxy must then not pass
        // on (RFC 9112 §6.3): the client gets the decoded body, framed by steady.
        kept.retain(|&mut (n0, n1, _, _)| {
            Hop::of(&head[n0 as usize..n1 as usize]) != Hop::ContentLength
        });
    }
    let framing = fields.framing(status, is_head);
    // Both framings, or Transfer-Encoding in HTTP/1.0, is faulty framing (RFC 9112
    // §6.1, §6.3): the body is read as chunked, but the connection is not trusted after.
    let faulty = fields.encoded && (fields.length.is_some() || version == Version::HTTP_10);
    let keep_alive = framing != Framing::Close
        && !fields.close
        && !faulty
        && (version == Version::HTTP_11 || fields.keep_alive);
    let mut out = Response::new(());
    *out.status_mut() = status;
    *out.version_mut() = version;
    let received = if status == StatusCode::SWITCHING_PROTOCOLS || fields.names_others {
        // The request path edits these as a map: an upgrade's `Upgrade` and
        // `Connection` are put back for the tunnel, and fields that `Connection` names
        // are stripped (`headers::strip_hop_by_hop`, which reads them).
        let all = field_map(&head, &spans, Error::Framing, |name, value| {
            Ok(match Hop::of(name.as_str().as_bytes()) {
                Hop::ContentLength => !fields.encoded && parse_length(value.as_bytes()).is_some(),
                Hop::TransferEncoding => false,
                Hop::EndToEnd | Hop::Connection | Hop::Other => true,
            })
        })?;
        *out.headers_mut() = all;
        None
    } else {
        Some(Box::new(Received {
            head,
            spans: kept,
            request_id: None,
        }))
    };
    Ok(Parsed::Final(Head {
        response: out,
        received,
        framing,
        keep_alive,
    }))
}

/// Where each field's name and value lie in a head that starts at `base` (name start
/// and end, value start and end), so they can be cut from the head once the parser's
/// borrow of it ends.
pub(crate) type FieldSpans = smallvec::SmallVec<[(u32, u32, u32, u32); 16]>;

/// Adds to `spans` the [`FieldSpans`] of `headers`, parsed from a head that starts at
/// `base`. (Filled in place: returned, the inline array was copied twice.)
pub(crate) fn field_spans(base: usize, headers: &[httparse::Header<'_>], spans: &mut FieldSpans) {
    spans.extend(headers.iter().map(|h| {
        let name = h.name.as_ptr() as usize - base;
        let value = h.value.as_ptr() as usize - base;
        (
            name as u32,
            (name + h.name.len()) as u32,
            value as u32,
            (value + h.value.len()) as u32,
        )
    }));
}

/// The fields of `head` at `spans` as a map whose values share the head's bytes (no
/// copy, as in hyper). `keep` sees each field first and says whether the map keeps it;
/// a name or value that is not valid gives `bad("header name" | "header value")`.
pub(crate) fn field_map<E>(
    head: &Bytes,
    spans: &FieldSpans,
    bad: impl Fn(&'static str) -> E,
    mut keep: impl FnMut(&HeaderName, &HeaderValue) -> Result<bool, E>,
) -> Result<HeaderMap, E> {
    let mut map = HeaderMap::with_capacity(spans.len());
    for &(n0, n1, v0, v1) in spans {
        let name = HeaderName::from_bytes(&head[n0 as usize..n1 as usize])
            .map_err(|_| bad("header name"))?;
        let value = HeaderValue::from_maybe_shared(head.slice(v0 as usize..v1 as usize))
            .map_err(|_| bad("header value"))?;
        if keep(&name, &value)? {
            map.append(name, value);
        }
    }
    Ok(map)
}

/// What a field's name makes it on this hop (names compared case-insensitively).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hop {
    /// A field for the other end.
    EndToEnd,
    /// `Content-Length`: framing, and passed on when it is true of the body.
    ContentLength,
    /// `Transfer-Encoding`: this hop's framing.
    TransferEncoding,
    /// `Connection`: this hop's options, and maybe the names of other such fields.
    Connection,
    /// Another field only this hop uses: `Keep-Alive`, `Proxy-Connection`, `TE`,
    /// `Upgrade`. (`Trailer` announces the trailers, which are passed on: it is
    /// end-to-end.)
    Other,
}

impl Hop {
    /// What `name` is (by its length first: most names are none of these).
    pub(crate) fn of(name: &[u8]) -> Hop {
        let is = |lower: &[u8]| name.eq_ignore_ascii_case(lower);
        match name.len() {
            2 if is(b"te") => Hop::Other,
            7 if is(b"upgrade") => Hop::Other,
            10 if is(b"connection") => Hop::Connection,
            10 if is(b"keep-alive") => Hop::Other,
            14 if is(b"content-length") => Hop::ContentLength,
            16 if is(b"proxy-connection") => Hop::Other,
            17 if is(b"transfer-encoding") => Hop::TransferEncoding,
            _ => Hop::EndToEnd,
        }
    }
}

/// What a head's framing headers say (a response's here, a request's in `server`).
#[derive(Default)]
pub(crate) struct Fields {
    /// `Content-Length`, when given (equal values merged).
    pub(crate) length: Option<u64>,
    /// `Transfer-Encoding` is present.
    pub(crate) encoded: bool,
    /// Its last coding is `chunked`.
    pub(crate) chunked: bool,
    /// `Connection: close`.
    pub(crate) close: bool,
    /// `Connection: keep-alive` (what an HTTP/1.0 message needs to stay open).
    pub(crate) keep_alive: bool,
    /// A `Connection` names another field, which this hop must then strip too.
    pub(crate) names_others: bool,
}

impl Fields {
    /// Notes the framing and connection options of a field that `hop` says what it is.
    pub(crate) fn note(&mut self, hop: Hop, value: &[u8]) -> Result<(), Error> {
        let tokens = || value.split(|&b| b == b',').map(<[u8]>::trim_ascii);
        match hop {
            Hop::ContentLength => {
                // A list of equal values is one length (RFC 9110 §8.6); anything else is not.
                for part in tokens() {
                    let n = parse_length(part).ok_or(Error::Framing("content-length"))?;
                    if self.length.is_some_and(|l| l != n) {
                        return Err(Error::Framing("conflicting content-length"));
                    }
                    self.length = Some(n);
                }
            }
            Hop::TransferEncoding => {
                self.encoded = true;
                // Chunked must be the last coding; otherwise the body runs to the close.
                self.chunked = tokens()
                    .next_back()
                    .is_some_and(|c| c.eq_ignore_ascii_case(b"chunked"));
            }
            Hop::Connection => {
                for token in tokens() {
                    let close = token.eq_ignore_ascii_case(b"close");
                    let keep_alive = token.eq_ignore_ascii_case(b"keep-alive");
                    self.close |= close;
                    self.keep_alive |= keep_alive;
                    self.names_others |= !(close || keep_alive || token.is_empty());
                }
            }
            Hop::EndToEnd | Hop::Other => {}
        }
        Ok(())
    }

    /// How the body after the head is delimited (RFC 9112 §6.3).
    fn framing(&self, status: StatusCode, is_head: bool) -> Framing {
        if status == StatusCode::SWITCHING_PROTOCOLS {
            return Framing::Upgrade;
        }
        if is_head || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
            return Framing::Done;
        }
        if self.encoded {
            return if self.chunked {
                Framing::Chunked(Chunk::Size)
            } else {
                Framing::Close
            };
        }
        match self.length {
            Some(0) => Framing::Done,
            Some(n) => Framing::Length(n),
            None => Framing::Close,
        }
    }
}

/// A `Content-Length` value: decimal digits only, at most 19 of them (fits a `u64`).
pub(crate) fn parse_length(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &d| {
        d.is_ascii_digit().then(|| n * 10 + u64::from(d - b'0'))
    })
}

/// An upstream response's body, read from its connection as the client reads it. The
/// connection goes back to its pool when the body ends, and is closed if the body is
/// dropped before that.
pub struct Body {
    conn: Option<Box<Connection>>,
    framing: Framing,
    keep_alive: bool,
    /// The rest of the request body, when the upstream answered before it was all sent.
    upload: Option<Box<Upload>>,
    /// The error that broke the body, reported after `pauses` more polls.
    failed: Option<io::Error>,
    pauses: u8,
    lease: Lease,
    /// The response's header fields, which the client's head is written from.
    received: Option<Box<Received>>,
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("h1::Body")
            .field("framing", &self.framing)
            .finish_non_exhaustive()
    }
}

impl Body {
    /// The body after `head`, read from `conn`, which `lease` returns to its pool; sends
    /// `upload` meanwhile. It carries the head's received fields, which leaves the
    /// response itself with status and version.
    pub fn new(
        conn: Box<Connection>,
        head: Head,
        upload: Option<Box<Upload>>,
        lease: Lease,
    ) -> Response<Body> {
        let mut body = Body {
            conn: Some(conn),
            framing: head.framing,
            keep_alive: head.keep_alive,
            upload,
            failed: None,
            pauses: 0,
            lease,
            received: head.received,
        };
        if body.framing == Framing::Done {
            body.release();
        }
        head.response.map(|()| body)
    }

    /// The response's header fields as received (see [`Received`]).
    pub fn received(&self) -> Option<&Received> {
        self.received.as_deref()
    }

    /// [`Body::received`], to change.
    pub fn received_mut(&mut self) -> Option<&mut Received> {
        self.received.as_deref_mut()
    }

    /// Takes the received fields out, to merge them into the response's map.
    pub fn take_received(&mut self) -> Option<Box<Received>> {
        self.received.take()
    }

    /// The end of the body was read: the connection can carry the next exchange.
    fn release(&mut self) {
        self.framing = Framing::Done;
        if let Some(conn) = self.conn.take() {
            // A request not sent whole would be read as the next one: no reuse.
            if self.keep_alive && self.upload.is_none() {
                self.lease.release(conn);
            }
        }
    }

    /// Sends more of the request body, if some is left: `Err` if the client's body broke.
    fn poll_upload(&mut self, cx: &mut Context<'_>) -> Result<(), io::Error> {
        let (Some(upload), Some(conn)) = (self.upload.as_mut(), self.conn.as_mut()) else {
            return Ok(());
        };
        match upload.poll_send(&mut conn.io, cx) {
            Poll::Pending => return Ok(()),
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(e @ Error::Body(_))) => return Err(io::Error::other(e)),
            // The upstream stopped reading; what it sends still counts.
            Poll::Ready(Err(_)) => self.keep_alive = false,
        }
        self.upload = None;
        Ok(())
    }

    /// For a `101` response: the connection, for the tunnel (its pool lets it go).
    pub fn take_upgraded(&mut self) -> Option<(TcpStream, Bytes)> {
        if self.framing != Framing::Upgrade {
            return None;
        }
        self.lease.detach();
        self.framing = Framing::Done;
        self.conn.take().map(|conn| (*conn).into_upgraded())
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Frame<Bytes>>>> {
        let Some(conn) = self.conn.as_mut() else {
            return Poll::Ready(None);
        };
        let Connection { io, read, .. } = &mut **conn;
        let polled = ready!(decode(&mut self.framing, read, cx, |buf, cx| {
            poll_fill(io, buf, cx)
        }));
        if self.framing == Framing::Done {
            self.release();
        }
        Poll::Ready(polled)
    }
}

/// Reads the next piece of a body framed by `framing` from `buf`, which `fill` reads
/// more into (`Ok(false)` at end of file): data, or a chunked body's trailer fields
/// (its last frame); `None` once the body has ended, and `framing` is then
/// [`Framing::Done`]. Shared by the upstream's response bodies and the clients'
/// request bodies (`server`).
pub(crate) fn decode<F>(
    framing: &mut Framing,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
    mut fill: F,
) -> Poll<Option<io::Result<Frame<Bytes>>>>
where
    F: FnMut(&mut BytesMut, &mut Context<'_>) -> Poll<io::Result<bool>>,
{
    loop {
        match *framing {
            Framing::Done | Framing::Upgrade => return Poll::Ready(None),
            Framing::Length(left) => {
                if buf.is_empty() && !ready!(fill(buf, cx))? {
                    return Poll::Ready(Some(Err(truncated())));
                }
                let (data, left) = take_counted(buf, left);
                *framing = if left == 0 {
                    Framing::Done
                } else {
                    Framing::Length(left)
                };
                return Poll::Ready(Some(Ok(Frame::data(data))));
            }
            Framing::Close => {
                if buf.is_empty() && !ready!(fill(buf, cx))? {
                    *framing = Framing::Done;
                    return Poll::Ready(None);
                }
                return Poll::Ready(Some(Ok(Frame::data(buf.split().freeze()))));
            }
            Framing::Chunked(chunk) => {
                if let Some(frame) = ready!(decode_chunked(framing, chunk, buf, cx, &mut fill))? {
                    return Poll::Ready(Some(Ok(frame)));
                }
            }
        }
    }
}

/// Advances a chunked decoder by one step: `Some` data or trailers, or `None` after a
/// step that yields none (the caller loops).
fn decode_chunked<F>(
    framing: &mut Framing,
    chunk: Chunk,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
    fill: &mut F,
) -> Poll<io::Result<Option<Frame<Bytes>>>>
where
    F: FnMut(&mut BytesMut, &mut Context<'_>) -> Poll<io::Result<bool>>,
{
    let next = match chunk {
        // httparse reads an empty size line as 0: a size needs a hex digit.
        Chunk::Size if buf.first().is_some_and(|b| !b.is_ascii_hexdigit()) => {
            return Poll::Ready(Err(invalid("invalid chunk size line")));
        }
        Chunk::Size => match httparse::parse_chunk_size(buf) {
            Ok(httparse::Status::Complete((used, size))) => {
                buf.advance(used);
                if size == 0 {
                    Chunk::Trailers(0)
                } else {
                    Chunk::Data(size)
                }
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_CHUNK_META => {
                if !ready!(fill(buf, cx))? {
                    return Poll::Ready(Err(truncated()));
                }
                return Poll::Ready(Ok(None));
            }
            _ => return Poll::Ready(Err(invalid("invalid chunk size line"))),
        },
        Chunk::Data(left) => {
            if buf.is_empty() && !ready!(fill(buf, cx))? {
                return Poll::Ready(Err(truncated()));
            }
            let (data, left) = take_counted(buf, left);
            *framing = Framing::Chunked(if left == 0 {
                Chunk::DataEnd
            } else {
                Chunk::Data(left)
            });
            return Poll::Ready(Ok(Some(Frame::data(data))));
        }
        Chunk::DataEnd => {
            if buf.len() < 2 {
                if !ready!(fill(buf, cx))? {
                    return Poll::Ready(Err(truncated()));
                }
                return Poll::Ready(Ok(None));
            }
            if &buf[..2] != b"\r\n" {
                return Poll::Ready(Err(invalid("chunk data not followed by CRLF")));
            }
            buf.advance(2);
            Chunk::Size
        }
        Chunk::Trailers(seen) => {
            // The trailer section stays in `buf` until its empty line has arrived
            // (`seen` is how much of it has been read, up to the next line), and is
            // then passed on as one frame.
            match buf[seen..].windows(2).position(|w| w == b"\r\n") {
                Some(0) => {
                    let section = buf.split_to(seen + 2);
                    *framing = Framing::Done;
                    if seen == 0 {
                        return Poll::Ready(Ok(None));
                    }
                    return Poll::Ready(
                        trailer_fields(&section)
                            .map(|fields| (!fields.is_empty()).then(|| Frame::trailers(fields))),
                    );
                }
                Some(line) if seen + line + 2 <= MAX_CHUNK_META => Chunk::Trailers(seen + line + 2),
                None if buf.len() < MAX_CHUNK_META => {
                    if !ready!(fill(buf, cx))? {
                        return Poll::Ready(Err(truncated()));
                    }
                    return Poll::Ready(Ok(None));
                }
                _ => return Poll::Ready(Err(invalid("trailer section too long"))),
            }
        }
    };
    *framing = Framing::Chunked(next);
    Poll::Ready(Ok(None))
}

/// Appends the last chunk of a chunked body with `trailers` after it.
pub(crate) fn encode_last_chunk(out: &mut Vec<u8>, trailers: &HeaderMap) {
    out.extend_from_slice(b"0\r\n");
    for (name, value) in trailers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// The fields of a trailer section (its lines and the empty line that ends it) that
/// may be trailers: those that frame, route, authenticate or describe the content
/// (RFC 9110 §6.5.1; the list hyper uses) are left out.
fn trailer_fields(section: &[u8]) -> io::Result<HeaderMap> {
    const BARRED: [&str; 12] = [
        "authorization",
        "cache-control",
        "content-encoding",
        "content-length",
        "content-range",
        "content-type",
        "host",
        "max-forwards",
        "set-cookie",
        "te",
        "trailer",
        "transfer-encoding",
    ];
    let mut slots = vec![httparse::EMPTY_HEADER; MAX_HEADERS];
    let fields = match httparse::parse_headers(section, &mut slots) {
        Ok(httparse::Status::Complete((_, fields))) => fields,
        _ => return Err(invalid("malformed trailer section")),
    };
    let mut map = HeaderMap::with_capacity(fields.len());
    for field in fields {
        let name =
            HeaderName::from_bytes(field.name.as_bytes()).map_err(|_| invalid("trailer name"))?;
        if BARRED.contains(&name.as_str()) {
            continue;
        }
        let value = HeaderValue::from_bytes(field.value).map_err(|_| invalid("trailer value"))?;
        map.append(name, value);
    }
    Ok(map)
}

/// Takes what `buf` holds of the `left` bytes still due, and how many are due after.
fn take_counted(buf: &mut BytesMut, left: u64) -> (Bytes, u64) {
    let take = (buf.len() as u64).min(left);
    (buf.split_to(take as usize).freeze(), left - take)
}

fn truncated() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "connection closed in the middle of the body",
    )
}

fn invalid(what: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        if this.failed.is_some() {
            if this.pauses > 0 {
                this.pauses -= 1;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            return Poll::Ready(this.failed.take().map(Err));
        }
        let polled = match this.poll_upload(cx) {
            Ok(()) => this.poll_next(cx),
            Err(e) => Poll::Ready(Some(Err(e))),
        };
        match ready!(polled) {
            Some(Ok(frame)) => Poll::Ready(Some(Ok(frame))),
            Some(Err(e)) => {
                // A broken body leaves the connection in an unknown state: close it.
                this.conn = None;
                this.framing = Framing::Done;
                // The error ends the client's response at once, and a server may drop
                // what it has not flushed yet (hyper's HTTP/2 one does; `server` writes
                // what it has first): first two pauses, in which what did arrive is
                // sent (a write waits one turn, see `batch`), then the error.
                this.failed = Some(e);
                this.pauses = 1;
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.failed.is_none() && matches!(self.framing, Framing::Done | Framing::Upgrade)
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Done | Framing::Upgrade => SizeHint::with_exact(0),
            Framing::Length(n) => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &[u8], is_head: bool) -> Result<Parsed, Error> {
        let mut buf = BytesMut::from(raw);
        parse_head(&mut buf, is_head)
    }

    fn final_head(raw: &[u8]) -> Head {
        match head(raw, false) {
            Ok(Parsed::Final(h)) => h,
            _ => panic!("not a final head"),
        }
    }

    /// Every header field the client would get from `h`.
    fn all(h: Head) -> HeaderMap {
        let set = h.response.headers().clone();
        match h.received {
            Some(received) => received.into_map(set),
            None => set,
        }
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let h = final_head(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n");
        assert_eq!(h.framing, Framing::Length(5));
        assert!(h.keep_alive);
        let h = final_head(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 5\r\n\r\n",
        );
        assert_eq!(h.framing, Framing::Chunked(Chunk::Size));
        assert!(!all(h).contains_key(header::CONTENT_LENGTH));
        let h = final_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n");
        assert_eq!(h.framing, Framing::Close);
        assert!(!h.keep_alive);
        let h = final_head(b"HTTP/1.1 200 OK\r\n\r\n");
        assert_eq!(h.framing, Framing::Close);
        let h = final_head(b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n");
        assert_eq!(h.framing, Framing::Done);
        let h = final_head(b"HTTP/1.1 200 OK\r\nContent-Length: 7, 7\r\n\r\n");
        assert_eq!(h.framing, Framing::Length(7));
        let h = final_head(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n");
        assert_eq!(h.framing, Framing::Upgrade);
        match head(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true) {
            Ok(Parsed::Final(h)) => assert_eq!(h.framing, Framing::Done),
            _ => panic!(),
        }
    }

    #[test]
    fn bad_framing_is_an_error() {
        for raw in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\n",
        ] {
            assert!(
                head(raw, false).is_err(),
                "{:?}",
                String::from_utf8_lossy(raw)
            );
        }
        assert!(matches!(
            head(b"NOT HTTP\r\n\r\n", false),
            Err(Error::Parse(_))
        ));
    }

    #[test]
    fn keep_alive_by_version_and_connection() {
        assert!(
            !final_head(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
                .keep_alive
        );
        assert!(!final_head(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n").keep_alive);
        assert!(
            final_head(b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n")
                .keep_alive
        );
        assert!(
            !final_head(b"HTTP/1.1 200 OK\r\nConnection: foo, close\r\nContent-Length: 0\r\n\r\n")
                .keep_alive
        );
    }

    #[test]
    fn interim_heads_are_skipped_and_values_shared() {
        let mut buf = BytesMut::from(
            &b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nX-A: b\r\nContent-Length: 2\r\n\r\nhi"[..],
        );
        assert!(matches!(parse_head(&mut buf, false), Ok(Parsed::Interim)));
        let Ok(Parsed::Final(h)) = parse_head(&mut buf, false) else {
            panic!()
        };
        assert_eq!(all(h)["x-a"], "b");
        assert_eq!(&buf[..], b"hi");
    }

    #[test]
    fn connection_headers_are_noted_not_kept() {
        let h = final_head(
            b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\nTE: trailers\r\nX-A: b\r\n\r\n",
        );
        assert_eq!(h.framing, Framing::Chunked(Chunk::Size));
        assert!(h.response.headers().is_empty(), "kept as received");
        let names: Vec<_> = all(h).keys().map(|k| k.to_string()).collect();
        assert_eq!(names, ["x-a"]);
        // One that names another header stays, so the hop-by-hop strip can find it.
        let h = final_head(
            b"HTTP/1.1 200 OK\r\nConnection: close, X-A\r\nX-A: b\r\nContent-Length: 0\r\n\r\n",
        );
        assert!(!h.keep_alive);
        assert!(h.received.is_none(), "a map, for the strip");
        assert!(h.response.headers().contains_key(header::CONNECTION));
    }

    #[test]
    fn received_fields_keep_order_and_case_and_steadys_replace_theirs() {
        let h = final_head(
            b"HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nX-Request-Id: theirs\r\nKeep-Alive: timeout=5\r\n\
              Content-Length: 2, 2\r\nX-B: 1\r\nset-cookie: b=2\r\n\r\n",
        );
        assert_eq!(h.framing, Framing::Length(2));
        let received = h.received.expect("kept as received");
        let fields: Vec<_> = received
            .fields()
            .map(|(n, v)| (String::from_utf8_lossy(n), String::from_utf8_lossy(v)))
            .collect();
        assert_eq!(
            fields,
            [
                ("Set-Cookie".into(), "a=1".into()),
                ("X-Request-Id".into(), "theirs".into()),
                ("X-B".into(), "1".into()),
                ("set-cookie".into(), "b=2".into()),
            ]
        );
        let mut received = received;
        received.set_request_id(HeaderValue::from_static("ours"));
        let ids: Vec<_> = received
            .fields()
            .filter(|(n, _)| n.eq_ignore_ascii_case(b"x-request-id"))
            .map(|(_, v)| v.to_vec())
            .collect();
        assert_eq!(ids, [b"ours".to_vec()], "written once, in place of theirs");
        let mut set = HeaderMap::new();
        set.insert("x-b", HeaderValue::from_static("set"));
        let map = received.into_map(set);
        let b: Vec<_> = map.get_all("x-b").iter().collect();
        assert_eq!(b, ["set"], "what steady set replaces theirs");
        let cookies: Vec<_> = map.get_all("set-cookie").iter().collect();
        assert_eq!(cookies, ["a=1", "b=2"]);
        let ids: Vec<_> = map.get_all("x-request-id").iter().collect();
        assert_eq!(ids, ["ours"]);
        assert_eq!(map.len(), 4);
    }

    /// Decodes `wire` as a chunked body read one byte at a time: the data, the
    /// trailers, the bytes left unread, or the error.
    fn dechunk(wire: &[u8]) -> io::Result<(Vec<u8>, Option<HeaderMap>, Vec<u8>)> {
        let mut framing = Framing::Chunked(Chunk::Size);
        let (mut buf, mut at) = (BytesMut::new(), 0);
        let mut cx = Context::from_waker(futures_util::task::noop_waker_ref());
        let (mut data, mut trailers) = (Vec::new(), None);
        loop {
            let polled = decode(&mut framing, &mut buf, &mut cx, |b, _| {
                let more = at < wire.len();
                if more {
                    b.extend_from_slice(&wire[at..at + 1]);
                    at += 1;
                }
                Poll::Ready(Ok(more))
            });
            match polled {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(d) => data.extend_from_slice(&d),
                    Err(frame) => trailers = frame.into_trailers().ok(),
                },
                Poll::Ready(Some(Err(e))) => return Err(e),
                Poll::Ready(None) => break,
                Poll::Pending => unreachable!("the reads never wait"),
            }
        }
        assert_eq!(framing, Framing::Done);
        Ok((data, trailers, [&buf[..], &wire[at..]].concat()))
    }

    #[test]
    fn trailers_arrive_in_pieces_and_fields_barred_from_them_are_left_out() {
        let (data, trailers, rest) = dechunk(
            b"3\r\nabc\r\n0\r\nX-A: 1\r\nContent-Length: 9\r\nHost: h\r\nX-B: 2\r\n\r\nNEXT",
        )
        .unwrap();
        assert_eq!(data, b"abc");
        let trailers = trailers.expect("trailers");
        let names: Vec<_> = trailers.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["x-a", "x-b"]);
        assert_eq!(rest, b"NEXT", "the next message is not read into");
        // No trailers: no frame for them.
        let (data, trailers, rest) = dechunk(b"1\r\nx\r\n0\r\n\r\n").unwrap();
        assert_eq!(
            (data.as_slice(), trailers, rest.as_slice()),
            (&b"x"[..], None, &b""[..])
        );
        // Only barred ones: none either.
        let (_, trailers, _) = dechunk(b"0\r\nSet-Cookie: a=1\r\n\r\n").unwrap();
        assert!(trailers.is_none());
    }

    #[test]
    fn malformed_or_endless_trailers_are_errors() {
        assert!(dechunk(b"0\r\nno colon here\r\n\r\n").is_err());
        assert!(dechunk(b"0\r\nX-A: 1\r\n").is_err(), "cut short");
        let endless = [&b"0\r\n"[..], &b"X-A: 1\r\n".repeat(MAX_CHUNK_META / 8)].concat();
        assert!(dechunk(&endless).is_err());
    }

    #[test]
    fn heads_with_many_headers_parse_up_to_the_limit() {
        let head = |n: usize| {
            let mut raw = b"HTTP/1.1 200 OK\r\n".to_vec();
            for i in 0..n {
                raw.extend_from_slice(format!("x-h{i}: {i}\r\n").as_bytes());
            }
            raw.extend_from_slice(b"Content-Length: 0\r\n\r\n");
            raw
        };
        let h = final_head(&head(MAX_HEADERS - 1));
        assert_eq!(all(h).len(), MAX_HEADERS - 1 + 1);
        assert!(matches!(
            super::tests::head(&head(MAX_HEADERS), false),
            Err(Error::Parse(httparse::Error::TooManyHeaders))
        ));
    }

    #[test]
    fn faulty_framing_is_read_but_not_reused() {
        let h = final_head(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
        );
        assert_eq!(h.framing, Framing::Chunked(Chunk::Size));
        assert!(!h.keep_alive);
        let h = final_head(
            b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n",
        );
        assert!(!h.keep_alive);
    }

    #[test]
    fn partial_heads_wait_for_more() {
        assert!(matches!(
            head(b"HTTP/1.1 200 OK\r\nX-A:", false),
            Ok(Parsed::Partial)
        ));
    }
}
