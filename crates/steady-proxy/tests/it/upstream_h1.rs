//! steady's HTTP/1.1 conversation with an upstream, pinned byte for byte on the wire.
//!
//! Every test puts the real gateway (listener `web` on `127.0.0.1:0`) in front of a
//! hand-written backend: a tokio `TcpListener` whose script reads each request head (and
//! its body, as framed) and writes exact raw response bytes, counting the connections it
//! accepts. The client is a raw `TcpStream` too, with a small parser that reads a
//! response head and then its body by `Content-Length`, chunked framing or close.
//!
//! Covered:
//! - response framing: `Content-Length`, chunked (extensions, trailers passed on both
//!   ways), close-delimited,
//!   `Connection: close`, HTTP/1.0, bodiless responses (HEAD, 204, 304), interim 1xx;
//! - upstream connection reuse, counted at the backend's accept;
//! - broken upstreams: malformed status lines, resets mid-head and mid-body, an
//!   oversized head, invalid chunk sizes: each a 502 or a cut-short response, never a
//!   hang, and the gateway keeps serving;
//! - the request as the upstream sees it: body framing, `Host`, `X-Forwarded-For`,
//!   `X-Request-Id`, hop-by-hop headers removed;
//! - the keep-alive race (the backend closes a connection the gateway has pooled);
//! - upgrades (`101 Switching Protocols`), including bytes sent with the 101;
//! - request bodies: an early 413 during a large upload, a slow chunked upload, a client
//!   that abandons its body, a response streamed while the body uploads (echo), and
//!   reuse after bodies answered once sent.
//!
//! Every await on the client side is bounded by [`HANG`].

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::{simple_config, start_yaml, Running};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Longest any single exchange may take before it counts as a hang (the route timeout
/// is 2 s, so a gateway waiting on a broken upstream ends well within this).
const HANG: Duration = Duration::from_secs(5);

/// A plain keep-alive answer.
const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

// ---------------------------------------------------------------------------------------
// Wire: a TCP stream with a read buffer and HTTP/1.1 message framing
// ---------------------------------------------------------------------------------------

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A message head: the start line and the header fields (names lower-cased).
#[derive(Debug, Clone)]
struct Head {
    start: String,
    fields: Vec<(String, String)>,
}

impl Head {
    fn parse(bytes: &[u8]) -> Head {
        let text = String::from_utf8_lossy(bytes);
        let mut lines = text.split("\r\n");
        let start = lines.next().unwrap_or_default().to_string();
        let fields = lines
            .filter_map(|l| {
                let (k, v) = l.split_once(':')?;
                Some((k.trim().to_ascii_lowercase(), v.trim().to_string()))
            })
            .collect();
        Head { start, fields }
    }

    /// The first value of `name`.
    fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Every value of `name`, in order.
    fn all(&self, name: &str) -> Vec<&str> {
        self.fields
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// Whether a comma-separated field `name` lists `token` (case-insensitive).
    fn lists(&self, name: &str, token: &str) -> bool {
        self.fields
            .iter()
            .filter(|(k, _)| k == name)
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    fn content_length(&self) -> Option<usize> {
        self.get("content-length").map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("bad content-length {v:?}"))
        })
    }

    fn chunked(&self) -> bool {
        self.lists("transfer-encoding", "chunked")
    }

    /// The status code of a response head (0 if the start line has none).
    fn status(&self) -> u16 {
        self.start
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }
}

/// How a body ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// As its framing said (or, close-delimited, at the peer's close).
    Complete,
    /// The peer closed before the framing said the body was done.
    Eof,
    /// The chunked framing was broken.
    Malformed,
}

struct Wire {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Wire {
    fn new(stream: TcpStream) -> Wire {
        Wire {
            stream,
            buf: Vec::new(),
        }
    }

    /// Reads more bytes into the buffer; false at EOF or on an error (a reset).
    async fn more(&mut self) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        match self.stream.read(&mut chunk).await {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    /// The next head (through its blank line); `None` if the peer closed first.
    async fn head(&mut self) -> Option<Head> {
        loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                let head = Head::parse(&self.buf[..i]);
                self.buf.drain(..i + 4);
                return Some(head);
            }
            if !self.more().await {
                return None;
            }
        }
    }

    /// The next line without its CRLF; `None` if the peer closed first.
    async fn line(&mut self) -> Option<Vec<u8>> {
        loop {
            if let Some(i) = find(&self.buf, b"\r\n") {
                let line = self.buf[..i].to_vec();
                self.buf.drain(..i + 2);
                return Some(line);
            }
            if !self.more().await {
                return None;
            }
        }
    }

    /// Exactly `n` bytes, or what came before the peer closed.
    async fn exact(&mut self, n: usize) -> (Vec<u8>, End) {
        while self.buf.len() < n {
            if !self.more().await {
                return (std::mem::take(&mut self.buf), End::Eof);
            }
        }
        (self.buf.drain(..n).collect(), End::Complete)
    }

    /// A chunked body, decoded, with its trailer fields.
    async fn chunked(&mut self) -> (Vec<u8>, Vec<(String, String)>, End) {
        let mut body = Vec::new();
        loop {
            let Some(line) = self.line().await else {
                return (body, Vec::new(), End::Eof);
            };
            let size = line.split(|b| *b == b';').next().unwrap_or_default();
            let size = std::str::from_utf8(size)
                .ok()
                .and_then(|s| usize::from_str_radix(s.trim(), 16).ok());
            let Some(size) = size else {
                return (body, Vec::new(), End::Malformed);
            };
            if size == 0 {
                let mut trailers = Vec::new();
                loop {
                    let Some(line) = self.line().await else {
                        return (body, trailers, End::Eof);
                    };
                    if line.is_empty() {
                        return (body, trailers, End::Complete);
                    }
                    trailers.extend(Head::parse(&[b"-\r\n", &line[..]].concat()).fields);
                }
            }
            let (data, end) = self.exact(size).await;
            body.extend_from_slice(&data);
            if end != End::Complete {
                return (body, Vec::new(), end);
            }
            match self.line().await {
                None => return (body, Vec::new(), End::Eof),
                Some(l) if !l.is_empty() => return (body, Vec::new(), End::Malformed),
                Some(_) => {}
            }
        }
    }

    /// Everything until the peer closes.
    async fn until_close(&mut self) -> Vec<u8> {
        while self.more().await {}
        std::mem::take(&mut self.buf)
    }

    async fn write(&mut self, bytes: &[u8]) -> bool {
        self.stream.write_all(bytes).await.is_ok()
    }
}

// ---------------------------------------------------------------------------------------
// The backend: a TcpListener task running a script per connection
// ---------------------------------------------------------------------------------------

/// A request as the backend received it, body de-framed.
#[derive(Debug, Clone)]
struct Req {
    method: String,
    target: String,
    head: Head,
    body: Vec<u8>,
    /// Whether it came with chunked framing.
    chunked: bool,
    /// A chunked body's trailer fields.
    trailers: Vec<(String, String)>,
    /// Which accepted connection (0-based) it came on.
    conn: usize,
}

type Log = Arc<Mutex<Vec<Req>>>;

/// One accepted upstream connection, as the backend script sees it.
struct UpConn {
    wire: Wire,
    index: usize,
    log: Log,
}

impl UpConn {
    /// Reads the next request (head and framed body) and logs it; `None` at EOF.
    async fn request(&mut self) -> Option<Req> {
        let head = self.wire.head().await?;
        let mut start = head.start.split_whitespace();
        let method = start.next().unwrap_or_default().to_string();
        let target = start.next().unwrap_or_default().to_string();
        let chunked = head.chunked();
        let mut trailers = Vec::new();
        let body = if chunked {
            let (body, fields, end) = self.wire.chunked().await;
            if end != End::Complete {
                return None;
            }
            trailers = fields;
            body
        } else if let Some(n) = head.content_length() {
            let (body, end) = self.wire.exact(n).await;
            if end != End::Complete {
                return None;
            }
            body
        } else {
            Vec::new()
        };
        let req = Req {
            method,
            target,
            head,
            body,
            chunked,
            trailers,
            conn: self.index,
        };
        self.log.lock().unwrap().push(req.clone());
        Some(req)
    }

    async fn write(&mut self, bytes: &[u8]) -> bool {
        self.wire.write(bytes).await
    }

    /// Closes with a FIN.
    async fn close(mut self) {
        let _ = self.wire.stream.shutdown().await;
    }

    /// Closes with a RST.
    fn reset(self) {
        let _ = self.wire.stream.set_zero_linger();
    }

    /// Keeps the connection open, reading nothing more of use, until the peer closes.
    async fn hold(mut self) {
        while self.wire.more().await {}
    }
}

/// What the backend does with a connection after writing a reply.
#[derive(Debug, Clone, Copy)]
enum Then {
    /// Reads the next request on it.
    KeepAlive,
    /// Closes it (FIN).
    Close,
    /// Resets it (RST).
    Reset,
    /// Leaves it open, silent, until the gateway closes it.
    Hold,
}

struct Reply {
    bytes: Vec<u8>,
    then: Then,
}

fn reply(bytes: impl AsRef<[u8]>) -> Reply {
    Reply {
        bytes: bytes.as_ref().to_vec(),
        then: Then::KeepAlive,
    }
}

impl Reply {
    fn then(self, then: Then) -> Reply {
        Reply { then, ..self }
    }
}

struct RawBackend {
    addr: SocketAddr,
    accepts: Arc<AtomicUsize>,
    log: Log,
    task: JoinHandle<()>,
}

impl Drop for RawBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RawBackend {
    /// Runs `script` on every accepted connection.
    async fn start<F, Fut>(script: F) -> RawBackend
    where
        F: Fn(UpConn) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let accepts = Arc::new(AtomicUsize::new(0));
        let log: Log = Arc::default();
        let task = {
            let (accepts, log) = (accepts.clone(), log.clone());
            tokio::spawn(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let index = accepts.fetch_add(1, Ordering::SeqCst);
                    let conn = UpConn {
                        wire: Wire::new(stream),
                        index,
                        log: log.clone(),
                    };
                    tokio::spawn(script(conn));
                }
            })
        };
        RawBackend {
            addr,
            accepts,
            log,
            task,
        }
    }

    /// Answers every request with `answer(request)`, then does what the reply says.
    async fn serve<F>(answer: F) -> RawBackend
    where
        F: Fn(&Req) -> Reply + Send + Sync + 'static,
    {
        let answer = Arc::new(answer);
        RawBackend::start(move |mut conn| {
            let answer = answer.clone();
            async move {
                while let Some(req) = conn.request().await {
                    let reply = answer(&req);
                    if !conn.write(&reply.bytes).await {
                        return;
                    }
                    match reply.then {
                        Then::KeepAlive => {}
                        Then::Close => return conn.close().await,
                        Then::Reset => return conn.reset(),
                        Then::Hold => return conn.hold().await,
                    }
                }
            }
        })
        .await
    }

    /// Connections accepted so far.
    fn accepts(&self) -> usize {
        self.accepts.load(Ordering::SeqCst)
    }

    /// Requests received so far, in order.
    fn seen(&self) -> Vec<Req> {
        self.log.lock().unwrap().clone()
    }

    /// The last request received.
    fn last(&self) -> Req {
        self.seen().pop().expect("the backend got a request")
    }
}

/// The gateway in front of one backend (route timeout 2 s, connect timeout 500 ms).
async fn gateway(backend: &RawBackend) -> Running {
    start_yaml(&simple_config("round-robin", &[backend.addr], "", "")).await
}

// ---------------------------------------------------------------------------------------
// The client: raw requests, parsed responses
// ---------------------------------------------------------------------------------------

#[derive(Debug)]
struct Response {
    head: Head,
    body: Vec<u8>,
    /// A chunked body's trailer fields.
    trailers: Vec<(String, String)>,
    end: End,
    /// Interim (1xx other than 101) statuses that came before it.
    interim: Vec<u16>,
}

impl Response {
    fn status(&self) -> u16 {
        self.head.status()
    }

    fn text(&self) -> String {
        format!(
            "{} {:?} [{:?}] {}",
            self.head.start,
            self.head.fields,
            self.end,
            String::from_utf8_lossy(&self.body)
        )
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

struct Client {
    wire: Wire,
}

impl Client {
    async fn connect(addr: SocketAddr) -> Client {
        let stream = tokio::time::timeout(HANG, TcpStream::connect(addr))
            .await
            .expect("connect within bound")
            .expect("connect");
        Client {
            wire: Wire::new(stream),
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        let written = tokio::time::timeout(HANG, self.wire.write(bytes))
            .await
            .expect("write within bound");
        assert!(written, "write to the gateway failed");
    }

    /// Reads one response (skipping interim 1xx ones); `None` if the gateway closed
    /// before a complete head. `head_request` says the request was a HEAD.
    async fn read(&mut self, head_request: bool) -> Option<Response> {
        let wire = &mut self.wire;
        tokio::time::timeout(HANG, async move {
            let mut interim = Vec::new();
            let head = loop {
                let head = wire.head().await?;
                match head.status() {
                    s @ 100..=199 if s != 101 => interim.push(s),
                    _ => break head,
                }
            };
            let status = head.status();
            let mut trailers = Vec::new();
            let (body, end) = if head_request || matches!(status, 101 | 204 | 304) {
                (Vec::new(), End::Complete)
            } else if head.chunked() {
                let (body, fields, end) = wire.chunked().await;
                trailers = fields;
                (body, end)
            } else if let Some(n) = head.content_length() {
                wire.exact(n).await
            } else {
                (wire.until_close().await, End::Complete)
            };
            Some(Response {
                head,
                body,
                trailers,
                end,
                interim,
            })
        })
        .await
        .expect("response within bound (hang?)")
    }

    /// Sends `bytes` and reads the response, which must come.
    async fn exchange(&mut self, bytes: &[u8]) -> Response {
        self.send(bytes).await;
        let head_request = bytes.starts_with(b"HEAD ");
        self.read(head_request)
            .await
            .expect("a response head before the gateway closed")
    }

    async fn get(&mut self, path: &str) -> Response {
        self.exchange(format!("GET {path} HTTP/1.1\r\nHost: upstream.test\r\n\r\n").as_bytes())
            .await
    }

    /// Exactly `n` more bytes (after a 101).
    async fn read_exact(&mut self, n: usize) -> Vec<u8> {
        let (bytes, end) = tokio::time::timeout(HANG, self.wire.exact(n))
            .await
            .expect("bytes within bound (hang?)");
        assert_eq!(end, End::Complete, "closed early: {bytes:?}");
        bytes
    }

    /// Whether the gateway closes the connection within [`HANG`] (bytes that come
    /// meanwhile are returned too).
    async fn closes(&mut self) -> (bool, Vec<u8>) {
        let wire = &mut self.wire;
        let closed = tokio::time::timeout(HANG, async { while wire.more().await {} })
            .await
            .is_ok();
        (closed, std::mem::take(&mut wire.buf))
    }
}

/// A fresh client connection gets the backend's 200 for `/ok`.
async fn assert_serves(addr: SocketAddr) {
    let answer = Client::connect(addr).await.get("/ok").await;
    assert_eq!(answer.status(), 200, "{}", answer.text());
    assert_eq!(answer.body, b"ok", "{}", answer.text());
}

/// A 502 with steady's JSON error body from the upstream side.
fn assert_502(answer: &Response) {
    assert_eq!(answer.status(), 502, "{}", answer.text());
    assert_eq!(
        answer.head.get("content-type"),
        Some("application/json"),
        "{}",
        answer.text()
    );
    let json = answer.json();
    assert_eq!(json["status"], 502, "{json}");
    assert_eq!(json["source"], "upstream", "{json}");
    assert!(json["error"].is_string(), "{json}");
}

// ---------------------------------------------------------------------------------------
// 1-4. Response framing and connection reuse
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn content_length_body_is_byte_exact_and_the_connection_is_reused() {
    // Every byte value, and CRLFs that look like framing.
    let mut payload: Vec<u8> = (0..=255u8).collect();
    payload.extend_from_slice(b"\r\n\r\n0\r\n\r\n");
    let response = [
        format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\nX-Backend: raw\r\n\r\n",
            payload.len()
        )
        .into_bytes(),
        payload.clone(),
    ]
    .concat();
    let backend = RawBackend::serve(move |_| reply(&response)).await;
    let gw = gateway(&backend).await;

    let mut client = Client::connect(gw.addr).await;
    for path in ["/one", "/two"] {
        let answer = client.get(path).await;
        assert_eq!(answer.status(), 200, "{}", answer.text());
        assert_eq!(answer.end, End::Complete);
        assert_eq!(answer.body, payload);
        assert_eq!(answer.head.get("x-backend"), Some("raw"));
        assert_eq!(
            answer.head.get("content-type"),
            Some("application/octet-stream")
        );
    }
    assert_eq!(backend.accepts(), 1, "one upstream connection for both");
    let seen = backend.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].target, "/one");
    assert_eq!(seen[1].target, "/two");
    assert!(seen.iter().all(|r| r.conn == 0), "{seen:?}");
}

/// Chunks of several sizes, with chunk extensions (quoted ones too), no trailers.
const CHUNKED: &str = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
    5;ext=1\r\nhello\r\n\
    7\r\n, world\r\n\
    1;a=b;c=\"d;e\"\r\n!\r\n\
    A\r\n0123456789\r\n\
    0\r\n\r\n";

/// The same body with a trailer section.
const CHUNKED_WITH_TRAILERS: &str =
    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n\
    5;ext=1\r\nhello\r\n\
    7\r\n, world\r\n\
    1;a=b\r\n!\r\n\
    A\r\n0123456789\r\n\
    0\r\nX-Checksum: abc\r\nSet-Cookie: barred=1\r\nX-Other: 1\r\n\r\n";

const DECHUNKED: &[u8] = b"hello, world!0123456789";

#[tokio::test]
async fn chunked_body_with_extensions_is_dechunked_and_the_connection_reused() {
    let backend = RawBackend::serve(|_| reply(CHUNKED)).await;
    let gw = gateway(&backend).await;

    let mut client = Client::connect(gw.addr).await;
    for _ in 0..2 {
        let answer = client.get("/chunked").await;
        assert_eq!(answer.status(), 200, "{}", answer.text());
        assert_eq!(answer.end, End::Complete, "{}", answer.text());
        assert_eq!(answer.body, DECHUNKED, "{}", answer.text());
    }
    assert_eq!(client.get("/after").await.body, DECHUNKED);
    assert_eq!(backend.accepts(), 1, "{:?}", backend.seen());
}

#[tokio::test]
async fn chunked_body_with_trailers_is_dechunked_and_its_trailers_passed_on() {
    let backend = RawBackend::serve(|_| reply(CHUNKED_WITH_TRAILERS)).await;
    let gw = gateway(&backend).await;

    let mut client = Client::connect(gw.addr).await;
    for _ in 0..2 {
        let answer = client.get("/trailers").await;
        assert_eq!(answer.status(), 200, "{}", answer.text());
        assert_eq!(answer.end, End::Complete, "{}", answer.text());
        assert_eq!(answer.body, DECHUNKED, "{}", answer.text());
        assert_eq!(answer.head.get("trailer"), Some("X-Checksum"), "announced");
        // Fields that may not be trailers (RFC 9110 §6.5.1) are left out.
        assert_eq!(
            answer.trailers,
            [
                ("x-checksum".to_string(), "abc".to_string()),
                ("x-other".to_string(), "1".to_string())
            ],
            "{}",
            answer.text()
        );
    }
    assert_eq!(backend.accepts(), 1, "the upstream connection was reused");

    // An HTTP/2 client gets them as the stream's trailing HEADERS.
    let (_, body) = h2_get(gw.addr, "/trailers", None).await;
    let trailers = body.trailers().cloned().expect("trailers over HTTP/2");
    assert_eq!(trailers["x-checksum"], "abc");
    assert!(!trailers.contains_key("set-cookie"), "{trailers:?}");
    assert_eq!(&body.to_bytes()[..], DECHUNKED);
}

#[tokio::test]
async fn a_chunked_request_bodys_trailers_reach_the_upstream() {
    let backend = RawBackend::serve(|_| reply(OK)).await;
    let gw = gateway(&backend).await;
    let mut client = Client::connect(gw.addr).await;
    for _ in 0..2 {
        let answer = client
            .exchange(
                b"POST /t HTTP/1.1\r\nHost: upstream.test\r\nTransfer-Encoding: chunked\r\n\
                  Trailer: X-Sum\r\n\r\n\
                  5\r\nhello\r\n0\r\nX-Sum: 5\r\nHost: evil.example\r\n\r\n",
            )
            .await;
        assert_eq!(answer.status(), 200, "{}", answer.text());
        let up = backend.last();
        assert_eq!(up.body, b"hello");
        assert!(up.chunked, "sent chunked, so the trailers have a place");
        assert_eq!(up.head.get("trailer"), Some("X-Sum"), "announced");
        assert_eq!(
            up.trailers,
            [("x-sum".to_string(), "5".to_string())],
            "Host may not be a trailer"
        );
    }
}

#[tokio::test]
async fn transfer_encoding_overrides_content_length_which_is_not_passed_on() {
    // A smuggling-shaped response: both framings. Chunked wins (RFC 9112 §6.3) and the
    // stale length must not reach the client, or it would cut the body short.
    let backend = RawBackend::serve(|_| {
        reply("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\nb\r\nhello world\r\n0\r\n\r\n")
    })
    .await;
    let gw = gateway(&backend).await;

    let mut client = Client::connect(gw.addr).await;
    let answer = client.get("/both").await;
    assert_eq!(answer.status(), 200, "{}", answer.text());
    assert_ne!(answer.head.content_length(), Some(3), "{}", answer.text());
    assert_eq!(answer.end, End::Complete, "{}", answer.text());
    assert_eq!(answer.body, b"hello world", "{}", answer.text());
}

#[tokio::test]
async fn a_chunked_response_with_trailers_leaves_the_connection_reusable() {
    let backend = RawBackend::serve(|_| reply(CHUNKED_WITH_TRAILERS)).await;
    let gw = gateway(&backend).await;

    let mut client = Client::connect(gw.addr).await;
    for _ in 0..3 {
        assert_eq!(client.get("/trailers").await.body, DECHUNKED);
    }
    assert_eq!(backend.accepts(), 1, "{:?}", backend.seen());
}

#[tokio::test]
async fn close_delimited_body_arrives_whole_and_the_next_request_reconnects() {
    let body: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
    let response = [
        b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n".to_vec(),
        body.clone(),
    ]
    .concat();
    let backend = RawBackend::serve(move |_| reply(&response).then(Then::Close)).await;
    let gw = gateway(&backend).await;

    let mut client = Client::connect(gw.addr).await;
    for n in 1..=2 {
        let answer = client.get("/close-delimited").await;
        assert_eq!(answer.status(), 200, "{}", answer.text());
        assert_eq!(answer.end, End::Complete);
        assert_eq!(answer.body.len(), body.len());
        assert!(answer.body == body, "body differs");
        assert_eq!(
            backend.accepts(),
            n,
            "a new upstream connection per request"
        );
    }
}

#[tokio::test]
async fn connection_close_in_the_response_is_honoured_though_the_backend_stays_open() {
    // The backend keeps reading after saying `Connection: close`: had the gateway
    // reused the connection, the second request would show up on connection 0.
    let backend = RawBackend::serve(|_| {
        reply("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello")
    })
    .await;
    let gw = gateway(&backend).await;

    let mut client = Client::connect(gw.addr).await;
    for _ in 0..2 {
        let answer = client.get("/").await;
        assert_eq!(answer.status(), 200, "{}", answer.text());
        assert_eq!(answer.body, b"hello");
    }
    let seen = backend.seen();
    assert_eq!(backend.accepts(), 2, "{seen:?}");
    assert_eq!(seen[1].conn, 1, "second request on a new connection");
}

#[tokio::test]
async fn http10_responses_without_keep_alive_are_not_reused() {
    let backend = RawBackend::serve(|req| match req.target.as_str() {
        // Framed, but HTTP/1.0 without `Connection: keep-alive`; the backend stays open.
        "/framed" => reply("HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello"),
        // Close-delimited.
        _ => reply("HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nbye").then(Then::Close),
    })
    .await;
    let gw = gateway(&backend).await;

    let mut client = Client::connect(gw.addr).await;
    let answer = client.get("/framed").await;
    assert_eq!(answer.status(), 200, "{}", answer.text());
    assert_eq!(answer.body, b"hello");
    let answer = client.get("/framed").await;
    assert_eq!(answer.body, b"hello");
    assert_eq!(backend.accepts(), 2, "{:?}", backend.seen());

    let answer = client.get("/delimited").await;
    assert_eq!(answer.status(), 200, "{}", answer.text());
    assert_eq!(answer.body, b"bye");
    assert_eq!(backend.accepts(), 3);
}

// ---------------------------------------------------------------------------------------
// 5-6. Bodiless responses and interim responses
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn head_204_and_304_have_no_body_and_keep_the_connection() {
    let backend = RawBackend::serve(|req| match (req.method.as_str(), req.target.as_str()) {
        ("HEAD", _) => {
            reply("HTTP/1.1 200 OK\r\nContent-Length: 10\r\nContent-Type: text/plain\r\n\r\n")
        }
        (_, "/204") => reply("HTTP/1.1 204 No Content\r\nX-Kind: empty\r\n\r\n"),
        (_, "/304") => {
            reply("HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\nContent-Length: 10\r\n\r\n")
        }
        _ => reply(OK),
    })
    .await;
    let gw = gateway(&backend).await;
    let mut client = Client::connect(gw.addr).await;

    let answer = client
        .exchange(b"HEAD /doc HTTP/1.1\r\nHost: upstream.test\r\n\r\n")
        .await;
    assert_eq!(answer.status(), 200, "{}", answer.text());
    assert_eq!(answer.head.get("content-type"), Some("text/plain"));
    // The length a GET would have, as the upstream said.
    assert_eq!(answer.head.get("content-length"), Some("10"));
    // Had anyone waited for 10 body bytes, the next answer would be eaten as the body.
    let after = client.get("/after-head").await;
    assert_eq!(after.status(), 200, "{}", after.text());
    assert_eq!(after.body, b"ok");

    let answer = client.get("/204").await;
    assert_eq!(answer.status(), 204, "{}", answer.text());
    assert_eq!(answer.head.get("x-kind"), Some("empty"));
    let after = client.get("/after-204").await;
    assert_eq!(after.body, b"ok", "{}", after.text());

    let answer = client
        .exchange(b"GET /304 HTTP/1.1\r\nHost: upstream.test\r\nIf-None-Match: \"v1\"\r\n\r\n")
        .await;
    assert_eq!(answer.status(), 304, "{}", answer.text());
    assert_eq!(answer.head.get("etag"), Some("\"v1\""));
    let after = client.get("/after-304").await;
    assert_eq!(after.body, b"ok", "{}", after.text());

    // Nothing stray was left on the client connection either.
    assert!(client.wire.buf.is_empty(), "{:?}", client.wire.buf);
    assert_eq!(backend.accepts(), 1, "{:?}", backend.seen());
    assert_eq!(backend.seen()[0].method, "HEAD");
}

#[tokio::test]
async fn interim_1xx_responses_are_skipped_and_the_final_one_delivered() {
    let backend = RawBackend::start(|mut conn| async move {
        while let Some(req) = conn.request().await {
            let ok = match req.target.as_str() {
                // All in one write.
                "/hints" => {
                    conn.write(
                        b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n\
                          HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhints",
                    )
                    .await
                }
                // 100 Continue nobody asked for, then 103, each in its own write.
                _ => {
                    let mut ok = true;
                    for piece in [
                        &b"HTTP/1.1 100 Continue\r\n\r\n"[..],
                        b"HTTP/1.1 103 Early Hints\r\nLink: </a.js>; rel=preload\r\n\r\n",
                        b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\ncontinue",
                    ] {
                        ok &= conn.write(piece).await;
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    ok
                }
            };
            if !ok {
                return;
            }
        }
    })
    .await;
    let gw = gateway(&backend).await;
    let mut client = Client::connect(gw.addr).await;

    // Forwarding interim responses to the client is allowed, inventing them is not.
    let answer = client.get("/hints").await;
    assert_eq!(answer.status(), 200, "{}", answer.text());
    assert_eq!(answer.body, b"hints");
    assert!(
        answer.interim.iter().all(|s| *s == 103),
        "{:?}",
        answer.interim
    );
    let answer = client.get("/continue").await;
    assert_eq!(answer.status(), 200, "{}", answer.text());
    assert_eq!(answer.body, b"continue");
    assert!(
        answer.interim.iter().all(|s| [100, 103].contains(s)),
        "{:?}",
        answer.interim
    );
    assert_eq!(backend.accepts(), 1);
}

// ---------------------------------------------------------------------------------------
// 7-10. Broken upstreams: 502 or a cut-short response, never a hang
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn malformed_status_lines_get_502_and_the_gateway_keeps_serving() {
    // The backend leaves the connection open after the garbage, so only the parse
    // error (not a close, not the 2 s route timeout) can end the exchange.
    let backend = RawBackend::serve(|req| match req.target.as_str() {
        "/bad-status" => reply("HTTP/1.1 abc\r\n").then(Then::Hold),
        "/not-http" => reply("NOT HTTP\r\n\r\n").then(Then::Hold),
        "/binary" => reply(b"\x00\x01\x02\xff\r\n\r\n").then(Then::Hold),
        _ => reply(OK),
    })
    .await;
    let gw = gateway(&backend).await;
    let mut client = Client::connect(gw.addr).await;

    for path in ["/bad-status", "/not-http", "/binary"] {
        // A 502, not the route timeout's 504.
        assert_502(&client.get(path).await);
        // Same client connection, next request.
        let answer = client.get("/ok").await;
        assert_eq!(answer.status(), 200, "after {path}: {}", answer.text());
        assert_eq!(answer.body, b"ok");
    }
    assert_serves(gw.addr).await;
}

#[tokio::test]
async fn upstream_closing_or_resetting_mid_head_gets_502() {
    let backend = RawBackend::serve(|req| {
        let half = "HTTP/1.1 200 OK\r\nContent-Le";
        match req.target.as_str() {
            "/fin" => reply(half).then(Then::Close),
            "/rst" => reply(half).then(Then::Reset),
            _ => reply(OK),
        }
    })
    .await;
    let gw = gateway(&backend).await;
    let mut client = Client::connect(gw.addr).await;
    for path in ["/fin", "/rst"] {
        assert_502(&client.get(path).await);
    }
    assert_serves(gw.addr).await;
}

#[tokio::test]
async fn upstream_closing_mid_body_truncates_the_response_and_closes_the_client() {
    let backend = RawBackend::serve(|req| match req.target.as_str() {
        "/half" => reply(format!(
            "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{}",
            "x".repeat(50)
        ))
        .then(Then::Close),
        _ => reply(OK),
    })
    .await;
    let gw = gateway(&backend).await;

    let mut client = Client::connect(gw.addr).await;
    let answer = client.get("/half").await;
    assert_eq!(answer.status(), 200, "the head was already sent");
    assert_eq!(answer.head.content_length(), Some(100));
    assert_eq!(answer.end, End::Eof, "{}", answer.text());
    assert!(answer.body.len() < 100, "{}", answer.text());
    assert!(answer.body.iter().all(|b| *b == b'x'), "{}", answer.text());
    assert_serves(gw.addr).await;
}

/// A response whose head carries one header of `kib` KiB.
fn huge_head(kib: usize) -> String {
    format!(
        "HTTP/1.1 200 OK\r\nX-Huge: {}\r\nContent-Length: 2\r\n\r\nok",
        "a".repeat(kib * 1024)
    )
}

/// Answers `/huge` with a head of `kib` KiB, then closes; anything else with 200 `ok`.
async fn huge_head_backend(kib: usize) -> RawBackend {
    let huge = huge_head(kib);
    RawBackend::serve(move |req| match req.target.as_str() {
        "/huge" => reply(&huge).then(Then::Close),
        _ => reply(OK),
    })
    .await
}

async fn assert_huge_head_is_502(kib: usize) {
    let backend = huge_head_backend(kib).await;
    let gw = gateway(&backend).await;
    let answer = Client::connect(gw.addr).await.get("/huge").await;
    assert_eq!(
        answer.status(),
        502,
        "{} with a {} byte header passed through",
        answer.head.start,
        answer.head.get("x-huge").map_or(0, str::len)
    );
    assert_502(&answer);
    assert_serves(gw.addr).await;
}

#[tokio::test]
async fn a_one_mib_response_head_gets_502() {
    assert_huge_head_is_502(1024).await;
}

#[tokio::test]
async fn a_response_head_over_100_kib_gets_502() {
    assert_huge_head_is_502(150).await;
}

/// Sends `GET path` and checks the response was cut short after at most `max_body`
/// bytes and the client connection closed (or a 502, if the error came before the head).
async fn assert_cut_short(gw: SocketAddr, path: &str, max_body: usize) {
    let mut client = Client::connect(gw).await;
    client
        .send(format!("GET {path} HTTP/1.1\r\nHost: upstream.test\r\n\r\n").as_bytes())
        .await;
    match client.read(false).await {
        Some(answer) if answer.status() == 502 => assert_502(&answer),
        Some(answer) => {
            assert_eq!(answer.status(), 200, "{}", answer.text());
            assert_ne!(answer.end, End::Complete, "{}", answer.text());
            assert!(answer.body.len() <= max_body, "{}", answer.text());
            let (closed, rest) = client.closes().await;
            assert!(closed, "client connection left open: {rest:?}");
        }
        None => {}
    }
}

#[tokio::test]
async fn an_empty_chunk_size_line_or_endless_trailers_cut_the_response_short() {
    let trailers = "x-t: ".to_string() + &"a".repeat(1000) + "\r\n";
    let backend = RawBackend::serve(move |req| match req.target.as_str() {
        // httparse alone would read the empty size line as the last chunk.
        "/empty-size" => {
            reply("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n\r\n\r\n")
                .then(Then::Hold)
        }
        // 64 KiB of trailer lines, none too long alone: the section as a whole is.
        "/trailers" => reply(format!(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n{}\r\n",
            trailers.repeat(64)
        ))
        .then(Then::Hold),
        _ => reply(OK),
    })
    .await;
    let gw = gateway(&backend).await;
    assert_cut_short(gw.addr, "/empty-size", 5).await;
    assert_cut_short(gw.addr, "/trailers", 5).await;
    // Neither connection went back to the pool.
    assert_serves(gw.addr).await;
    assert_eq!(backend.accepts(), 3, "{:?}", backend.seen());
}

#[tokio::test]
async fn an_invalid_chunk_size_cuts_the_response_short() {
    let backend = RawBackend::serve(|req| match req.target.as_str() {
        "/bad-chunk" => reply(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
             5\r\nhello\r\nzz\r\nnever\r\n0\r\n\r\n",
        )
        .then(Then::Hold),
        _ => reply(OK),
    })
    .await;
    let gw = gateway(&backend).await;

    let mut client = Client::connect(gw.addr).await;
    client
        .send(b"GET /bad-chunk HTTP/1.1\r\nHost: upstream.test\r\n\r\n")
        .await;
    match client.read(false).await {
        // The error came before the head went out.
        Some(answer) if answer.status() == 502 => assert_502(&answer),
        Some(answer) => {
            assert_eq!(answer.status(), 200, "{}", answer.text());
            assert_ne!(answer.end, End::Complete, "{}", answer.text());
            assert!(answer.body.len() <= 5, "{}", answer.text());
            let (closed, rest) = client.closes().await;
            assert!(closed, "client connection left open: {rest:?}");
        }
        // Aborted before a full head.
        None => {}
    }
    assert_serves(gw.addr).await;
}

// ---------------------------------------------------------------------------------------
// 11-12. The request as the upstream sees it
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn request_bodies_arrive_upstream_exact_and_well_framed() {
    let backend = RawBackend::serve(|_| reply(OK)).await;
    let gw = gateway(&backend).await;
    let mut client = Client::connect(gw.addr).await;

    // Content-Length, binary.
    let payload: Vec<u8> = (0..=255u8).rev().collect();
    let request = [
        format!(
            "POST /cl HTTP/1.1\r\nHost: upstream.test\r\nContent-Length: {}\r\n\r\n",
            payload.len()
        )
        .into_bytes(),
        payload.clone(),
    ]
    .concat();
    assert_eq!(client.exchange(&request).await.status(), 200);
    let up = backend.last();
    assert_eq!(up.method, "POST");
    assert_eq!(up.target, "/cl");
    assert!(!up.chunked, "{:?}", up.head);
    assert_eq!(up.head.get("content-length"), Some("256"));
    assert_eq!(up.body, payload);

    // Chunked from the client, with extensions and a trailer.
    let answer = client
        .exchange(
            b"POST /chunked HTTP/1.1\r\nHost: upstream.test\r\nTransfer-Encoding: chunked\r\n\r\n\
              5\r\nhello\r\n\
              6;x=y\r\n, worl\r\n\
              1\r\nd\r\n\
              0\r\nX-Sum: 1\r\n\r\n",
        )
        .await;
    assert_eq!(answer.status(), 200, "{}", answer.text());
    let up = backend.last();
    assert_eq!(up.target, "/chunked");
    assert_eq!(up.body, b"hello, world");
    match up.head.content_length() {
        Some(n) => {
            assert!(!up.chunked, "both framings: {:?}", up.head);
            assert_eq!(n, 12);
        }
        None => assert!(up.chunked, "no framing at all: {:?}", up.head),
    }

    // No body: no Transfer-Encoding, and no body bytes.
    assert_eq!(client.get("/nobody").await.status(), 200);
    let up = backend.last();
    assert_eq!(up.method, "GET");
    assert!(!up.head.has("transfer-encoding"), "{:?}", up.head);
    assert!(
        matches!(up.head.content_length(), None | Some(0)),
        "{:?}",
        up.head
    );
    assert!(up.body.is_empty());

    assert_eq!(backend.accepts(), 1);
}

#[tokio::test]
async fn forwarded_headers_are_set_and_hop_by_hop_headers_dropped() {
    let backend = RawBackend::serve(|_| reply(OK)).await;
    let gw = gateway(&backend).await;
    let mut client = Client::connect(gw.addr).await;

    let answer = client
        .exchange(
            b"GET /h HTTP/1.1\r\nHost: shop.example:8443\r\n\
              Connection: foo, keep-alive\r\nFoo: x\r\nKeep-Alive: timeout=5\r\n\
              Proxy-Connection: keep-alive\r\nTE: trailers\r\n\
              X-Request-Id: req-42\r\nX-Kept: yes\r\n\r\n",
        )
        .await;
    assert_eq!(answer.status(), 200, "{}", answer.text());
    assert_eq!(answer.head.get("x-request-id"), Some("req-42"));
    let up = backend.last();
    let h = &up.head;
    assert_eq!(h.get("host"), Some("shop.example:8443"), "{h:?}");
    assert_eq!(h.get("x-forwarded-for"), Some("127.0.0.1"), "{h:?}");
    assert_eq!(h.get("x-request-id"), Some("req-42"), "{h:?}");
    assert_eq!(h.get("x-kept"), Some("yes"), "{h:?}");
    for dropped in ["foo", "keep-alive", "proxy-connection", "te"] {
        assert!(!h.has(dropped), "{dropped} reached the upstream: {h:?}");
    }
    assert!(!h.lists("connection", "foo"), "{h:?}");
    assert!(!h.lists("connection", "keep-alive"), "{h:?}");

    // Without an id, steady makes one, sends it up and returns it.
    let answer = client.get("/h2").await;
    let id = answer.head.get("x-request-id").expect("an id").to_string();
    assert_eq!(id.len(), 32, "{id}");
    let up = backend.last();
    assert_eq!(up.head.get("x-request-id"), Some(id.as_str()));
    assert_eq!(up.head.get("host"), Some("upstream.test"));
    assert_eq!(up.head.get("x-forwarded-for"), Some("127.0.0.1"));
}

#[tokio::test]
async fn headers_steady_sets_replace_the_clients_once() {
    // steady writes these into the upstream head itself: each must appear once, with
    // steady's value, whatever the client sent (several lines, odd case included).
    let backend = RawBackend::serve(|_| reply(OK)).await;
    let gw = gateway(&backend).await;
    let mut client = Client::connect(gw.addr).await;
    let answer = client
        .exchange(
            b"GET /h HTTP/1.1\r\nHost: shop.example\r\n\
              X-Forwarded-For: 203.0.113.9\r\nx-forwarded-for: 198.51.100.7\r\n\
              X-Forwarded-Proto: https\r\nX-Forwarded-Host: evil.example\r\n\
              X-Request-Id: req-7\r\n\
              traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n\
              tracestate: vendor=abc\r\nExpect: 100-continue\r\n\r\n",
        )
        .await;
    assert_eq!(answer.status(), 200, "{}", answer.text());
    let up = backend.last();
    let h = &up.head;
    // The first prior hop is kept, as before steady wrote the head itself.
    assert_eq!(
        h.all("x-forwarded-for"),
        ["203.0.113.9, 127.0.0.1"],
        "{h:?}"
    );
    assert_eq!(h.all("x-forwarded-proto"), ["http"], "{h:?}");
    assert_eq!(h.all("x-forwarded-host"), ["shop.example"], "{h:?}");
    assert_eq!(h.all("x-request-id"), ["req-7"], "{h:?}");
    let parent = h.all("traceparent");
    assert_eq!(parent.len(), 1, "{h:?}");
    assert!(
        parent[0].starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-")
            && !parent[0].contains("00f067aa0ba902b7"),
        "the same trace, the attempt's own span: {h:?}"
    );
    assert_eq!(h.all("tracestate"), ["vendor=abc"], "{h:?}");
    assert!(
        !h.has("expect"),
        "steady answers 100-continue itself: {h:?}"
    );
    assert_eq!(h.all("host"), ["shop.example"], "{h:?}");
}

/// A GET of `path` from the gateway over h2c (prior knowledge), with `id` as its
/// `X-Request-Id`: the response's head, and its body collected with any trailers.
async fn h2_get(
    gw: SocketAddr,
    path: &str,
    id: Option<&str>,
) -> (
    http::response::Parts,
    http_body_util::Collected<bytes::Bytes>,
) {
    use http_body_util::{BodyExt, Full};
    let h2 = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<bytes::Bytes>>();
    let mut req = http::Request::get(format!("http://{gw}{path}"));
    if let Some(id) = id {
        req = req.header("x-request-id", id);
    }
    let req = req.body(Full::new(bytes::Bytes::new())).unwrap();
    let resp = tokio::time::timeout(HANG, h2.request(req))
        .await
        .expect("response within bound")
        .expect("response");
    let (parts, body) = resp.into_parts();
    let body = tokio::time::timeout(HANG, body.collect())
        .await
        .expect("body within bound")
        .expect("body");
    (parts, body)
}

/// A response whose fields test what reaches the client: repeated fields, odd case,
/// this hop's own fields, a length given twice, and an id of the upstream's own.
const FIELDS: &[u8] = b"HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nX-Odd-CASE: Kept As Sent\r\n\
    Connection: keep-alive\r\nKeep-Alive: timeout=5\r\nX-Request-Id: upstream-own\r\n\
    Set-Cookie: b=2\r\nContent-Length: 2, 2\r\nTE: trailers\r\n\r\nok";

#[tokio::test]
async fn response_fields_pass_as_sent_less_this_hops_and_the_ones_steady_sets() {
    let backend = RawBackend::serve(|_| reply(FIELDS)).await;
    let gw = gateway(&backend).await;
    let mut client = Client::connect(gw.addr).await;
    for _ in 0..2 {
        let answer = client
            .exchange(b"GET /f HTTP/1.1\r\nHost: upstream.test\r\nX-Request-Id: req-9\r\n\r\n")
            .await;
        assert_eq!(answer.status(), 200, "{}", answer.text());
        assert_eq!(answer.body, b"ok", "{}", answer.text());
        let h = &answer.head;
        assert_eq!(h.all("set-cookie"), ["a=1", "b=2"], "{h:?}");
        assert_eq!(h.all("x-odd-case"), ["Kept As Sent"], "{h:?}");
        // steady's id replaces the upstream's; the length is one, steady's own.
        assert_eq!(h.all("x-request-id"), ["req-9"], "{h:?}");
        assert_eq!(h.all("content-length"), ["2"], "{h:?}");
        for dropped in ["keep-alive", "te"] {
            assert!(!h.has(dropped), "{dropped} reached the client: {h:?}");
        }
    }
    assert_eq!(backend.accepts(), 1, "the upstream connection was reused");
}

#[tokio::test]
async fn an_http2_client_gets_an_http11_upstreams_fields_too() {
    let backend = RawBackend::serve(|_| reply(FIELDS)).await;
    let gw = gateway(&backend).await;
    let (head, body) = h2_get(gw.addr, "/f", Some("req-10")).await;
    assert_eq!(head.version, http::Version::HTTP_2);
    assert_eq!(head.status, 200);
    let h = head.headers;
    let all = |name: &str| -> Vec<&str> {
        h.get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect()
    };
    assert_eq!(all("set-cookie"), ["a=1", "b=2"], "{h:?}");
    assert_eq!(all("x-odd-case"), ["Kept As Sent"], "{h:?}");
    assert_eq!(all("x-request-id"), ["req-10"], "{h:?}");
    for dropped in ["connection", "keep-alive", "te"] {
        assert!(
            !h.contains_key(dropped),
            "{dropped} reached the client: {h:?}"
        );
    }
    let body = body.to_bytes();
    assert_eq!(&body[..], b"ok");
}

// ---------------------------------------------------------------------------------------
// 13. Keep-alive race
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_pooled_connection_the_backend_closed_is_never_a_failure() {
    // Closes every connection right after its first answer, without saying so.
    let backend = RawBackend::serve(|_| reply(OK).then(Then::Close)).await;
    let gw = gateway(&backend).await;
    let mut client = Client::connect(gw.addr).await;
    for i in 0..5 {
        let answer = client.get(&format!("/race/{i}")).await;
        assert_eq!(answer.status(), 200, "request {i}: {}", answer.text());
        assert_eq!(answer.body, b"ok");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(backend.accepts(), 5);
    assert_eq!(backend.seen().len(), 5);
}

// ---------------------------------------------------------------------------------------
// 14. Upgrades
// ---------------------------------------------------------------------------------------

/// Answers an upgrade with a 101 (with `early` bytes in the same write), then echoes.
async fn upgrade_backend(early: &'static [u8]) -> RawBackend {
    RawBackend::start(move |mut conn| async move {
        let Some(req) = conn.request().await else {
            return;
        };
        if !req.head.lists("connection", "upgrade") {
            let _ = conn
                .write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                .await;
            return;
        }
        let head =
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n";
        if !conn.write(&[&head[..], early].concat()).await {
            return;
        }
        loop {
            if !conn.wire.buf.is_empty() {
                let bytes = std::mem::take(&mut conn.wire.buf);
                if !conn.write(&bytes).await {
                    return;
                }
            }
            if !conn.wire.more().await {
                return;
            }
        }
    })
    .await
}

const UPGRADE: &[u8] =
    b"GET /ws HTTP/1.1\r\nHost: upstream.test\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n";

fn assert_101(answer: &Response) {
    assert_eq!(answer.status(), 101, "{}", answer.text());
    assert_eq!(
        answer.head.get("upgrade"),
        Some("echo"),
        "{}",
        answer.text()
    );
    assert!(
        answer.head.lists("connection", "upgrade"),
        "{}",
        answer.text()
    );
}

#[tokio::test]
async fn an_upgrade_is_spliced_both_ways() {
    let backend = upgrade_backend(b"").await;
    let gw = gateway(&backend).await;
    let mut client = Client::connect(gw.addr).await;

    assert_101(&client.exchange(UPGRADE).await);
    let up = backend.last();
    assert_eq!(up.head.get("upgrade"), Some("echo"), "{:?}", up.head);
    for message in [&b"ping"[..], b"\x00binary\xff", b"third"] {
        client.send(message).await;
        assert_eq!(client.read_exact(message.len()).await, message);
    }
}

#[tokio::test]
async fn bytes_sent_with_the_101_reach_the_client() {
    let backend = upgrade_backend(b"hello-early").await;
    let gw = gateway(&backend).await;
    let mut client = Client::connect(gw.addr).await;

    assert_101(&client.exchange(UPGRADE).await);
    assert_eq!(client.read_exact(11).await, b"hello-early");
    client.send(b"ping").await;
    assert_eq!(client.read_exact(4).await, b"ping");
}

#[tokio::test]
async fn bytes_sent_with_the_upgrade_request_reach_the_upstream() {
    // A client may send its first bytes of the new protocol right behind the request
    // head, before the 101: steady read them with the head, and must pass them on.
    let backend = upgrade_backend(b"").await;
    let gw = gateway(&backend).await;
    let mut client = Client::connect(gw.addr).await;

    client.send(&[UPGRADE, b"eager"].concat()).await;
    let answer = client.read(false).await.expect("a 101");
    assert_101(&answer);
    assert_eq!(client.read_exact(5).await, b"eager");
    client.send(b"ping").await;
    assert_eq!(client.read_exact(4).await, b"ping");
}

// ---------------------------------------------------------------------------------------
// 15. Request bodies: early answers, slow and broken uploads, full-duplex echoes, reuse
// ---------------------------------------------------------------------------------------

/// A second handle on the client's socket (a dup'd descriptor), so a test can write a
/// large body while it reads the response; dropping it does not close the connection.
fn writer_for(client: &Client) -> TcpStream {
    use std::os::fd::AsFd;
    let fd = client
        .wire
        .stream
        .as_fd()
        .try_clone_to_owned()
        .expect("dup the client socket");
    let std = std::net::TcpStream::from(fd);
    std.set_nonblocking(true).expect("nonblocking");
    TcpStream::from_std(std).expect("register the dup'd socket")
}

impl Wire {
    /// One chunk of a chunked body, strictly framed: its data; `None` at the last chunk
    /// (its trailer section read too); `Err` at EOF or on broken framing.
    async fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, String> {
        let line = self.line().await.ok_or("EOF at a chunk-size line")?;
        let size = std::str::from_utf8(&line)
            .ok()
            .and_then(|l| l.split(';').next())
            .and_then(|s| usize::from_str_radix(s.trim(), 16).ok())
            .ok_or_else(|| format!("bad chunk-size line {:?}", String::from_utf8_lossy(&line)))?;
        if size == 0 {
            loop {
                match self.line().await {
                    Some(l) if l.is_empty() => return Ok(None),
                    Some(_) => {}
                    None => return Err("EOF in the trailer section".into()),
                }
            }
        }
        let (data, end) = self.exact(size).await;
        if end != End::Complete {
            return Err(format!("EOF in chunk data after {} bytes", data.len()));
        }
        match self.line().await {
            Some(l) if l.is_empty() => Ok(Some(data)),
            other => Err(format!("chunk data not followed by CRLF: {other:?}")),
        }
    }
}

/// Waits (up to [`HANG`]) until `done` holds, polling every 10 ms.
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let waited = tokio::time::timeout(HANG, async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "not within {HANG:?}: {what}");
}

#[tokio::test]
async fn an_early_413_while_a_large_body_is_uploaded_reaches_the_client() {
    const SIZE: usize = 2 * 1024 * 1024;
    // `/upload`: only the head is read, then a 413 and a close (a RST, as the body's
    // bytes sit unread in the backend's socket). Anything else: 200 `ok`, no body read.
    let backend = RawBackend::start(|mut conn| async move {
        while let Some(head) = conn.wire.head().await {
            if head.start.starts_with("POST /upload ") {
                let _ = conn
                    .write(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    .await;
                return conn.close().await;
            }
            if !conn.write(OK).await {
                return;
            }
        }
    })
    .await;
    let gw = gateway(&backend).await;

    let mut client = Client::connect(gw.addr).await;
    let mut writer = writer_for(&client);
    // The body is written alongside, so a gateway that stops reading it cannot block
    // the test: the write ends when the gateway closes or resets the connection.
    let upload = tokio::spawn(async move {
        let head = format!(
            "POST /upload HTTP/1.1\r\nHost: upstream.test\r\nContent-Length: {SIZE}\r\n\r\n"
        );
        tokio::time::timeout(HANG, async {
            writer.write_all(head.as_bytes()).await?;
            let piece = vec![b'x'; 64 * 1024];
            let mut sent = 0;
            while sent < SIZE {
                writer.write_all(&piece).await?;
                sent += piece.len();
            }
            Ok::<usize, std::io::Error>(sent)
        })
        .await
    });

    // The 413 comes back, whole, well before the body could all be sent.
    let answer = client
        .read(false)
        .await
        .expect("the 413 before the gateway closed the client connection");
    assert_eq!(answer.status(), 413, "{}", answer.text());
    assert_eq!(answer.end, End::Complete, "{}", answer.text());
    assert!(answer.body.is_empty(), "{}", answer.text());

    // The gateway does not read the rest of the body (hyper gives up on an unread
    // request body once the response is out): it closes the client connection. The
    // writer then fails (EPIPE/ECONNRESET) or, at worst, finishes into the socket
    // buffers; it never hangs.
    let (closed, rest) = client.closes().await;
    assert!(
        closed,
        "client connection left open after the 413: {rest:?}"
    );
    assert!(rest.is_empty(), "bytes after the 413: {rest:?}");
    let written = upload.await.expect("writer task");
    let written = written.expect("the body writer ended within the bound (hang?)");
    if let Ok(sent) = written {
        assert_eq!(sent, SIZE);
    }

    // Only the one upload head reached the backend, and the gateway keeps serving.
    assert_serves(gw.addr).await;
    assert_eq!(backend.accepts(), 2, "the 413's connection was not reused");
}

#[tokio::test]
async fn a_slow_chunked_upload_arrives_whole_and_well_framed() {
    // The backend decodes each chunked body strictly (a malformed one gets no answer)
    // and keeps any bytes that came after a body's end.
    let stray: Arc<Mutex<Vec<u8>>> = Arc::default();
    let backend = {
        let stray = stray.clone();
        RawBackend::start(move |mut conn| {
            let stray = stray.clone();
            async move {
                while let Some(head) = conn.wire.head().await {
                    let mut body = Vec::new();
                    if head.chunked() {
                        loop {
                            match conn.wire.next_chunk().await {
                                Ok(Some(data)) => body.extend_from_slice(&data),
                                Ok(None) => break,
                                Err(_) => return,
                            }
                        }
                    }
                    let req = Req {
                        method: head.start.split_whitespace().next().unwrap().to_string(),
                        target: head.start.split_whitespace().nth(1).unwrap().to_string(),
                        chunked: head.chunked(),
                        head,
                        body,
                        trailers: Vec::new(),
                        conn: conn.index,
                    };
                    conn.log.lock().unwrap().push(req);
                    // Nothing may follow the chunked body's end.
                    stray.lock().unwrap().extend_from_slice(&conn.wire.buf);
                    if !conn.write(OK).await {
                        return;
                    }
                }
            }
        })
        .await
    };
    let gw = gateway(&backend).await;

    let mut client = Client::connect(gw.addr).await;
    client
        .send(b"POST /slow HTTP/1.1\r\nHost: upstream.test\r\nTransfer-Encoding: chunked\r\n\r\n")
        .await;
    for piece in [
        &b"5\r\nhello\r\n"[..],
        b"7;ext=1\r\n, slow \r\n",
        b"5\r\nworld\r\n",
        b"1\r\n!\r\n",
        b"0\r\n\r\n",
    ] {
        tokio::time::sleep(Duration::from_millis(50)).await;
        client.send(piece).await;
    }
    let answer = client.read(false).await.expect("a response");
    assert_eq!(answer.status(), 200, "{}", answer.text());
    assert_eq!(answer.body, b"ok");

    let up = backend.last();
    assert_eq!(up.method, "POST");
    assert_eq!(up.target, "/slow");
    assert_eq!(up.body, b"hello, slow world!");
    assert!(up.chunked, "{:?}", up.head);
    let te: Vec<_> = up
        .head
        .fields
        .iter()
        .filter(|(k, _)| k == "transfer-encoding")
        .collect();
    assert_eq!(te.len(), 1, "one Transfer-Encoding field: {:?}", up.head);
    assert!(
        !up.head.has("content-length"),
        "both framings: {:?}",
        up.head
    );
    let stray = stray.lock().unwrap().clone();
    assert!(
        stray.is_empty(),
        "bytes after the chunked body's end: {stray:?}"
    );

    // The connection carries the next request.
    assert_eq!(client.get("/after").await.body, b"ok");
    assert_eq!(backend.accepts(), 1);
}

#[tokio::test]
async fn a_client_that_abandons_its_body_never_completes_a_request_upstream() {
    // What each upstream connection got: body bytes, and whether it then saw the
    // gateway close it (EOF) rather than a complete body.
    #[derive(Debug, Default, Clone)]
    struct Got {
        body: usize,
        eof: bool,
    }
    let got: Arc<Mutex<Vec<Got>>> = Arc::default();
    let backend = {
        let got = got.clone();
        RawBackend::start(move |mut conn| {
            let got = got.clone();
            async move {
                while let Some(head) = conn.wire.head().await {
                    let Some(n) = head.content_length().filter(|n| *n > 0) else {
                        // A GET: answered.
                        if !conn.write(OK).await {
                            return;
                        }
                        continue;
                    };
                    let slot = {
                        let mut got = got.lock().unwrap();
                        got.push(Got::default());
                        got.len() - 1
                    };
                    loop {
                        got.lock().unwrap()[slot].body = conn.wire.buf.len();
                        if conn.wire.buf.len() >= n {
                            // Complete: the backend would answer it. The test fails.
                            let _ = conn.write(OK).await;
                            return;
                        }
                        if !conn.wire.more().await {
                            got.lock().unwrap()[slot].eof = true;
                            return;
                        }
                    }
                }
            }
        })
        .await
    };
    let gw = gateway(&backend).await;

    let mut client = Client::connect(gw.addr).await;
    client
        .send(b"POST /partial HTTP/1.1\r\nHost: upstream.test\r\nContent-Length: 100000\r\n\r\n0123456789")
        .await;
    // Give the gateway time to send the head upstream, then go away.
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(client);

    // The gateway gives up on the upstream connection promptly: the backend sees it
    // closed with the body incomplete, not a complete request.
    eventually("the upstream connection closed", || {
        got.lock().unwrap().first().is_some_and(|g| g.eof)
    })
    .await;
    let got = got.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].body <= 10, "{got:?}");

    // A new client is served, on a new upstream connection.
    assert_serves(gw.addr).await;
    assert_eq!(backend.accepts(), 2);
}

/// Echoes each request body as it arrives: the head of a chunked 200 right after the
/// request head, each piece of the body as a chunk, and the last chunk when the request
/// body ends (by its `Content-Length` or its chunked framing). Keeps the connection.
async fn echo_backend() -> RawBackend {
    RawBackend::start(|mut conn| async move {
        while let Some(head) = conn.wire.head().await {
            let target = head
                .start
                .split_whitespace()
                .nth(1)
                .unwrap_or_default()
                .to_string();
            if !conn
                .write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                .await
            {
                return;
            }
            let mut body = Vec::new();
            if head.chunked() {
                loop {
                    let data = match conn.wire.next_chunk().await {
                        Ok(Some(data)) => data,
                        Ok(None) => break,
                        Err(_) => return,
                    };
                    let chunk =
                        [format!("{:x}\r\n", data.len()).as_bytes(), &data, b"\r\n"].concat();
                    body.extend_from_slice(&data);
                    if !conn.write(&chunk).await {
                        return;
                    }
                }
            } else {
                let mut left = head.content_length().unwrap_or(0);
                while left > 0 {
                    if conn.wire.buf.is_empty() && !conn.wire.more().await {
                        return;
                    }
                    let n = conn.wire.buf.len().min(left);
                    let data: Vec<u8> = conn.wire.buf.drain(..n).collect();
                    left -= n;
                    let chunk = [format!("{n:x}\r\n").as_bytes(), &data, b"\r\n"].concat();
                    body.extend_from_slice(&data);
                    if !conn.write(&chunk).await {
                        return;
                    }
                }
            }
            if !conn.write(b"0\r\n\r\n").await {
                return;
            }
            conn.log.lock().unwrap().push(Req {
                method: head
                    .start
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_string(),
                target,
                chunked: head.chunked(),
                head,
                body,
                trailers: Vec::new(),
                conn: conn.index,
            });
        }
    })
    .await
}

impl Client {
    /// Decoded bytes of a chunked response body until `n` have come (bounded).
    async fn chunked_bytes(&mut self, n: usize) -> Vec<u8> {
        let wire = &mut self.wire;
        tokio::time::timeout(HANG, async move {
            let mut got = Vec::new();
            while got.len() < n {
                match wire.next_chunk().await {
                    Ok(Some(data)) => got.extend_from_slice(&data),
                    Ok(None) => panic!("body ended after {got:?}, wanted {n} bytes"),
                    Err(e) => panic!("{e}, after {got:?}"),
                }
            }
            got
        })
        .await
        .expect("echoed bytes within bound (hang?)")
    }

    /// The end of a chunked response body (bounded).
    async fn chunked_end(&mut self) {
        let end = tokio::time::timeout(HANG, self.wire.next_chunk())
            .await
            .expect("the body's end within bound (hang?)");
        assert_eq!(end, Ok(None), "more body where its end was expected");
    }
}

#[tokio::test]
async fn a_response_streamed_while_the_body_uploads_reaches_the_client_whole() {
    let backend = echo_backend().await;
    let gw = gateway(&backend).await;
    let mut client = Client::connect(gw.addr).await;
    let pieces: [&[u8]; 4] = [
        b"first ",
        b"second ",
        b"\x00\xff binary \r\n0\r\n\r\n",
        b"last",
    ];

    // Content-Length: each piece comes back before the next is sent, so the response
    // really streams during the upload.
    let total: usize = pieces.iter().map(|p| p.len()).sum();
    client
        .send(
            format!(
                "POST /echo-cl HTTP/1.1\r\nHost: upstream.test\r\nContent-Length: {total}\r\n\r\n"
            )
            .as_bytes(),
        )
        .await;
    client.send(pieces[0]).await;
    let head = tokio::time::timeout(HANG, client.wire.head())
        .await
        .expect("the response head during the upload (hang?)")
        .expect("a response head");
    assert_eq!(head.status(), 200, "{head:?}");
    assert!(head.chunked(), "{head:?}");
    for (i, piece) in pieces.iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            client.send(piece).await;
        }
        assert_eq!(client.chunked_bytes(piece.len()).await, *piece, "piece {i}");
    }
    client.chunked_end().await;
    assert_eq!(backend.last().body, pieces.concat());

    // Chunked from the client: the same.
    client
        .send(b"POST /echo-chunked HTTP/1.1\r\nHost: upstream.test\r\nTransfer-Encoding: chunked\r\n\r\n")
        .await;
    for (i, piece) in pieces.iter().enumerate() {
        client
            .send(&[format!("{:x}\r\n", piece.len()).as_bytes(), piece, b"\r\n"].concat())
            .await;
        if i == 0 {
            let head = tokio::time::timeout(HANG, client.wire.head())
                .await
                .expect("the response head during the upload (hang?)")
                .expect("a response head");
            assert_eq!(head.status(), 200, "{head:?}");
        }
        assert_eq!(client.chunked_bytes(piece.len()).await, *piece, "piece {i}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    client.send(b"0\r\n\r\n").await;
    client.chunked_end().await;
    let up = backend.last();
    assert_eq!(up.target, "/echo-chunked");
    assert!(up.chunked, "{:?}", up.head);
    assert_eq!(up.body, pieces.concat());

    // A large echo, written by the client all at once while it reads.
    let big: Vec<u8> = (0..512 * 1024u32).map(|i| (i % 253) as u8).collect();
    let mut writer = writer_for(&client);
    let request = [
        format!(
            "POST /echo-big HTTP/1.1\r\nHost: upstream.test\r\nContent-Length: {}\r\n\r\n",
            big.len()
        )
        .into_bytes(),
        big.clone(),
    ]
    .concat();
    let upload =
        tokio::spawn(async move { tokio::time::timeout(HANG, writer.write_all(&request)).await });
    let answer = client.read(false).await.expect("a response");
    assert_eq!(answer.status(), 200, "{}", answer.text_head());
    assert_eq!(answer.end, End::Complete);
    assert!(
        answer.body == big,
        "echo differs ({} bytes)",
        answer.body.len()
    );
    upload
        .await
        .expect("writer task")
        .expect("upload within bound (hang?)")
        .expect("upload written");

    // The upload ended before the response did: the upstream connection is reused.
    assert_eq!(client.get("/after").await.status(), 200);
    assert_eq!(backend.accepts(), 1);
}

impl Response {
    /// The head only, for messages about large bodies.
    fn text_head(&self) -> String {
        format!(
            "{} {:?} [{:?}]",
            self.head.start, self.head.fields, self.end
        )
    }
}

#[tokio::test]
async fn the_upstream_connection_is_reused_after_posts_answered_after_their_bodies() {
    // `serve` reads each body whole before it answers.
    let backend = RawBackend::serve(|_| reply(OK)).await;
    let gw = gateway(&backend).await;
    let mut client = Client::connect(gw.addr).await;

    let small = b"name=value&x=1".to_vec();
    // Larger than the socket buffers: written in several partial writes.
    let large: Vec<u8> = (0..1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    for (i, body) in [&small, &large, &small].into_iter().enumerate() {
        let request = [
            format!(
                "POST /post/{i} HTTP/1.1\r\nHost: upstream.test\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .into_bytes(),
            body.clone(),
        ]
        .concat();
        let answer = client.exchange(&request).await;
        assert_eq!(answer.status(), 200, "{}", answer.text());
        let up = backend.last();
        assert_eq!(up.target, format!("/post/{i}"));
        assert!(
            up.body == *body,
            "body {i} differs ({} bytes)",
            up.body.len()
        );
    }
    // A chunked one, and a GET after it all.
    let answer = client
        .exchange(
            b"POST /post/chunked HTTP/1.1\r\nHost: upstream.test\r\nTransfer-Encoding: chunked\r\n\r\n\
              4\r\nabcd\r\n0\r\n\r\n",
        )
        .await;
    assert_eq!(answer.status(), 200, "{}", answer.text());
    assert_eq!(backend.last().body, b"abcd");
    assert_eq!(client.get("/after").await.body, b"ok");

    let seen = backend.seen();
    assert_eq!(seen.len(), 5);
    let conns: Vec<_> = seen.iter().map(|r| r.conn).collect();
    assert_eq!(conns, [0; 5], "one upstream connection for all");
    assert_eq!(backend.accepts(), 1);
}
