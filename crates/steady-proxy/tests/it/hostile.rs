//! Failure paths of the HTTP data path: hostile or broken clients and backends.
//!
//! Every test drives the gateway into one failure (garbage bytes, oversized heads,
//! slowloris, oversized or broken bodies, dead or misbehaving backends, connection
//! limits), asserts the exact status or behaviour, and then checks that the gateway still
//! serves a normal request. Every wait is bounded; configured timeouts are short so the
//! whole file stays fast. Nothing here asserts wall-clock speed.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::common::{self, get, simple_config, start, start_yaml};
use steady_testkit::{dead_addr, dead_addrs, read_head, Backend, Fault, RawServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Longest any single exchange in this file may take before it counts as a hang.
const HANG: Duration = Duration::from_secs(5);

/// What came back on a raw connection.
#[derive(Debug)]
struct Reply {
    bytes: Vec<u8>,
    /// The server closed (EOF or reset) before the wait ran out.
    closed: bool,
}

impl Reply {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }

    /// Status code of the first response, if any came back.
    fn status(&self) -> Option<u16> {
        status_of(&self.bytes)
    }

    /// Bytes after the first response head.
    fn body(&self) -> &[u8] {
        match find(&self.bytes, b"\r\n\r\n") {
            Some(i) => &self.bytes[i + 4..],
            None => &[],
        }
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(self.body())
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn status_of(bytes: &[u8]) -> Option<u16> {
    let line = bytes.split(|b| *b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split_whitespace();
    if !parts.next()?.starts_with("HTTP/") {
        return None;
    }
    parts.next()?.parse().ok()
}

fn content_length(head: &[u8]) -> Option<usize> {
    let head = String::from_utf8_lossy(head);
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse().ok())?
    })
}

/// Reads until the server closes or `wait` passes.
async fn read_all(s: &mut TcpStream, wait: Duration) -> Reply {
    let mut bytes = Vec::new();
    let mut closed = false;
    let _ = tokio::time::timeout(wait, async {
        let mut buf = [0u8; 8192];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => {
                    closed = true;
                    break;
                }
                Ok(n) => bytes.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    Reply { bytes, closed }
}

/// Reads exactly one response with a `Content-Length` body (or until close / `wait`),
/// leaving the connection open for the next request.
async fn read_response(s: &mut TcpStream, wait: Duration) -> Reply {
    let mut bytes = Vec::new();
    let mut closed = false;
    let _ = tokio::time::timeout(wait, async {
        let mut buf = [0u8; 8192];
        loop {
            if let Some(i) = find(&bytes, b"\r\n\r\n") {
                if let Some(len) = content_length(&bytes[..i]) {
                    if bytes.len() >= i + 4 + len {
                        break;
                    }
                }
            }
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => {
                    closed = true;
                    break;
                }
                Ok(n) => bytes.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    Reply { bytes, closed }
}

/// Connects, writes `bytes` (ignoring write errors: the server may close early) and
/// reads until close or `wait`.
async fn exchange(addr: SocketAddr, bytes: &[u8], wait: Duration) -> Reply {
    let mut s = connect(addr).await;
    let _ = s.write_all(bytes).await;
    read_all(&mut s, wait).await
}

async fn connect(addr: SocketAddr) -> TcpStream {
    tokio::time::timeout(HANG, TcpStream::connect(addr))
        .await
        .expect("connect within bound")
        .expect("connect")
}

/// The gateway still answers a normal request with the backend's 200.
async fn assert_serves(addr: SocketAddr) {
    let answer = get(addr, "/after").await;
    assert_eq!(
        answer.status, 200,
        "normal request after the fault: {:?}",
        answer.body
    );
    assert_eq!(answer.json()["path"], "/after");
}

fn listener_limits(lines: &[&str]) -> String {
    let mut out = String::from("    limits:\n");
    for l in lines {
        out.push_str("      ");
        out.push_str(l);
        out.push('\n');
    }
    out
}

/// Same as [`simple_config`] with the route timeout replaced.
fn with_route_timeout(yaml: String, timeout: &str) -> String {
    let replaced = yaml.replace("    timeout: 2s\n", &format!("    timeout: {timeout}\n"));
    assert_ne!(replaced, yaml, "simple_config changed shape");
    replaced
}

/// Same as [`simple_config`] with the route's `response_body_timeout` set.
fn with_response_body_timeout(yaml: String, limit: &str) -> String {
    let replaced = yaml.replace(
        "    timeout: 2s\n",
        &format!("    timeout: 2s\n    response_body_timeout: {limit}\n"),
    );
    assert_ne!(replaced, yaml, "simple_config changed shape");
    replaced
}

fn assert_error_json(reply_body: &serde_json::Value, error: &str, status: u16, source: &str) {
    assert_eq!(reply_body["error"], error, "{reply_body}");
    assert_eq!(reply_body["status"], status, "{reply_body}");
    assert_eq!(reply_body["source"], source, "{reply_body}");
}

#[tokio::test]
async fn heads_trickled_in_pieces_on_two_connections_are_served() {
    // Between the pieces each connection waits with part of a head in its buffer; an
    // idle connection lends its buffer to whichever reads next, and must not lend a
    // partial head. Two connections take turns, three requests each.
    let backend = Backend::start("b").await;
    let gw = start(&[backend.addr()]).await;
    let mut conns = [connect(gw.addr).await, connect(gw.addr).await];
    for round in 0..3 {
        let heads: Vec<String> = (0..2)
            .map(|c| {
                format!(
                    "GET /c{c}/r{round} HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\n\r\n",
                    "p".repeat(40)
                )
            })
            .collect();
        let pieces: Vec<Vec<&[u8]>> = heads
            .iter()
            .map(|h| h.as_bytes().chunks(7).collect())
            .collect();
        for i in 0..pieces[0].len().max(pieces[1].len()) {
            for (c, s) in conns.iter_mut().enumerate() {
                if let Some(piece) = pieces[c].get(i) {
                    s.write_all(piece).await.unwrap();
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for (c, s) in conns.iter_mut().enumerate() {
            let reply = read_response(s, HANG).await;
            assert_eq!(reply.status(), Some(200), "{}", reply.text());
            let path = format!("/c{c}/r{round}");
            assert!(reply.text().contains(&path), "{path}: {}", reply.text());
            assert!(!reply.closed, "{}", reply.text());
        }
    }
}

// ---------------------------------------------------------------------------------------
// 1. Garbage bytes
// ---------------------------------------------------------------------------------------

/// A TLS 1.2/1.3 ClientHello record header plus the start of a handshake.
const CLIENT_HELLO: &[u8] = &[
    0x16, 0x03, 0x01, 0x00, 0xa5, 0x01, 0x00, 0x00, 0xa1, 0x03, 0x03, 0x5b, 0x90, 0x9d, 0x9b, 0x72,
    0x0b, 0xbc, 0x0c, 0xbc, 0x2b, 0x92, 0xa8, 0x48, 0x97, 0xcf, 0xbd, 0x39, 0x04, 0xcc, 0x16, 0x0a,
    0x85, 0x03, 0x90, 0x9f, 0x77, 0x04, 0x33, 0xd4, 0xde, 0x00, 0x00, 0x20, 0xcc, 0xa8, 0xcc, 0xa9,
    0xc0, 0x2f, 0xc0, 0x30, 0xc0, 0x2b, 0xc0, 0x2c, 0xc0, 0x13, 0xc0, 0x09, 0xc0, 0x14, 0xc0, 0x0a,
    0x00, 0x9c, 0x00, 0x9d, 0x00, 0x2f, 0x00, 0x35, 0xc0, 0x12, 0x00, 0x0a, 0x01, 0x00, 0x00, 0x58,
    0x00, 0x00, 0x00, 0x18, 0x00, 0x16, 0x00, 0x00, 0x13,
];

/// What a garbage case must end in. Every case must also end with a closed connection.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Ends {
    /// hyper's parser rejects it at once: 400, then close.
    BadRequest,
    /// Never forms a complete head (hyper only re-parses once it sees a blank line), so
    /// the header read timeout ends it: 408, then close.
    HeadTimeout,
    /// Either of the above, depending on where the parser gives up.
    BadRequestOrHeadTimeout,
    /// Bytes of another protocol come back (an HTTP/2 GOAWAY), then close.
    Closed,
}

/// Garbage gets a 400 (or, for bytes that never form a head, the 408 of the 1 s header
/// timeout) and a closed connection; never a hang, never a backend hit, and the gateway
/// keeps serving.
#[tokio::test]
async fn garbage_bytes_get_400_or_close_never_a_hang() {
    let backend = Backend::start("b").await;
    let limits = listener_limits(&["header_read_timeout: 1s"]);
    let gw = start_yaml(&simple_config(
        "round-robin",
        &[backend.addr()],
        "",
        &limits,
    ))
    .await;

    let mut random = vec![0u8; 4096];
    fastrand::Rng::with_seed(7).fill(&mut random);
    // Token characters with bare LFs: no space, no blank line, so never a head.
    let printable: Vec<u8> = (0..2048)
        .map(|i| {
            if i % 61 == 60 {
                b'\n'
            } else {
                b"!#$%&'*+-.^_`|~zq"[i % 17]
            }
        })
        .collect();
    let cases: Vec<(&str, Vec<u8>, Ends)> =
        vec![
        ("random binary", random, Ends::BadRequest),
        (
            "NUL and control bytes",
            (0u8..32).cycle().take(512).collect(),
            Ends::BadRequest,
        ),
        ("TLS ClientHello", CLIENT_HELLO.to_vec(), Ends::BadRequest),
        (
            "unknown HTTP version",
            b"GET / HTTP/9.9\r\nHost: x\r\n\r\n".to_vec(),
            Ends::BadRequest,
        ),
        (
            "request line without version",
            b"GET /\r\nHost: x\r\n\r\n".to_vec(),
            Ends::BadRequest,
        ),
        (
            "space in header name",
            b"GET / HTTP/1.1\r\nHo st: x\r\n\r\n".to_vec(),
            Ends::BadRequest,
        ),
        (
            "header without colon",
            b"GET / HTTP/1.1\r\nHost x\r\n\r\n".to_vec(),
            Ends::BadRequest,
        ),
        ("short junk line", b"!#$%\nabc".to_vec(), Ends::BadRequest),
        (
            "two Content-Lengths",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"
                .to_vec(),
            Ends::BadRequest,
        ),
        (
            "negative Content-Length",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n".to_vec(),
            Ends::BadRequest,
        ),
        (
            "overflowing Content-Length",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n"
                .to_vec(),
            Ends::BadRequest,
        ),
        (
            "unknown Transfer-Encoding",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nabc".to_vec(),
            Ends::BadRequest,
        ),
        // The shapes of request smuggling: a front end and a back end that frame the
        // body differently would see different requests.
        (
            "Transfer-Encoding and Content-Length",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n"
                .to_vec(),
            Ends::BadRequest,
        ),
        (
            "chunked not the last coding",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n"
                .to_vec(),
            Ends::BadRequest,
        ),
        (
            "chunked in HTTP/1.0",
            b"POST / HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(),
            Ends::BadRequest,
        ),
        // steady answers 400 once the junk reaches a line end it can parse; a 408 from
        // the head timeout is as good (the point is a bounded answer, never a hang).
        ("printable garbage", printable, Ends::BadRequestOrHeadTimeout),
        ("bare LF flood", vec![b'\n'; 1024], Ends::HeadTimeout),
        (
            "HTTP/2 preface then junk",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x09garbage!!".to_vec(),
            Ends::Closed,
        ),
    ];
    for (what, bytes, ends) in cases {
        let reply = exchange(gw.addr, &bytes, HANG).await;
        assert!(
            reply.closed,
            "{what}: connection still open after {HANG:?}: {:?}",
            reply.text()
        );
        match ends {
            Ends::BadRequest => assert_eq!(reply.status(), Some(400), "{what}: {:?}", reply.text()),
            Ends::BadRequestOrHeadTimeout => assert!(
                matches!(reply.status(), Some(400) | Some(408)),
                "{what}: {:?}",
                reply.text()
            ),
            Ends::HeadTimeout => {
                assert_eq!(reply.status(), Some(408), "{what}: {:?}", reply.text());
                assert_error_json(&reply.json(), "client-timeout", 408, "client");
            }
            Ends::Closed => assert_eq!(reply.status(), None, "{what}: {:?}", reply.text()),
        }
    }
    assert_eq!(backend.hits(), 0, "garbage must not reach the backend");
    assert_serves(gw.addr).await;
}

/// RFC 9112 §3.2: a server MUST answer 400 to an HTTP/1.1 request without `Host`.
#[tokio::test]
async fn http11_without_host_gets_400() {
    let backend = Backend::start("b").await;
    let gw = start(&[backend.addr()]).await;
    let reply = exchange(
        gw.addr,
        b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n",
        HANG,
    )
    .await;
    assert_eq!(reply.status(), Some(400), "{}", reply.text());
    assert_eq!(
        backend.hits(),
        0,
        "a Host-less HTTP/1.1 request reached the backend"
    );
    assert_serves(gw.addr).await;
}

/// RFC 9112 §3.2: a server MUST answer 400 to a request with more than one `Host`.
/// Today the router matches the first `Host` while both reach the backend, which may
/// pick the other one: host-based routing can be sidestepped.
#[tokio::test]
async fn two_host_headers_get_400() {
    let backend = Backend::start("b").await;
    let gw = start(&[backend.addr()]).await;
    let reply = exchange(
        gw.addr,
        b"GET / HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\nConnection: close\r\n\r\n",
        HANG,
    )
    .await;
    assert_eq!(reply.status(), Some(400), "{}", reply.text());
    assert_eq!(
        backend.hits(),
        0,
        "a request with two Hosts reached the backend"
    );
    assert_serves(gw.addr).await;
}

/// RFC 9112 §3.2.2: a proxy receiving an absolute-form target MUST ignore `Host` and send
/// a `Host` built from the target. steady routes on the target's authority but forwards
/// the client's `Host` unchanged, so the backend sees a different host than was routed.
#[tokio::test]
async fn absolute_form_target_replaces_host() {
    let backend = Backend::start("b").await;
    let gw = start(&[backend.addr()]).await;
    let reply = exchange(
        gw.addr,
        b"GET http://routed.example/x HTTP/1.1\r\nHost: other.example\r\nConnection: close\r\n\r\n",
        HANG,
    )
    .await;
    assert_eq!(reply.status(), Some(200), "{}", reply.text());
    let seen = reply.json();
    assert_eq!(seen["path"], "/x");
    assert_eq!(
        seen["headers"]["host"], "routed.example",
        "backend saw: {seen}"
    );
}

/// steady is a reverse proxy, not a forward proxy: a `CONNECT` must be refused, not
/// forwarded. Today the backend's ordinary 200 goes back as "tunnel established" and the
/// connection then closes, with no tunnel behind it.
#[tokio::test]
async fn connect_method_is_refused() {
    let backend = Backend::start("b").await;
    let gw = start(&[backend.addr()]).await;
    let reply = exchange(
        gw.addr,
        b"CONNECT 127.0.0.1:9 HTTP/1.1\r\nHost: 127.0.0.1:9\r\n\r\n",
        HANG,
    )
    .await;
    let status = reply.status().expect("an answer");
    assert!(
        (400..500).contains(&status),
        "CONNECT got {status}: {}",
        reply.text()
    );
    assert_eq!(backend.hits(), 0, "CONNECT reached the backend");
    assert_serves(gw.addr).await;
}

// ---------------------------------------------------------------------------------------
// 2. Oversized heads
// ---------------------------------------------------------------------------------------

fn request_with_header(value_len: usize) -> Vec<u8> {
    let mut req = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Big: ".to_vec();
    req.extend(std::iter::repeat_n(b'a', value_len));
    req.extend_from_slice(b"\r\n\r\n");
    req
}

#[tokio::test]
async fn head_over_default_64k_gets_431() {
    let backend = Backend::start("b").await;
    let gw = start(&[backend.addr()]).await;
    let reply = exchange(gw.addr, &request_with_header(100 * 1024), HANG).await;
    assert_eq!(reply.status(), Some(431), "{}", reply.text());
    assert!(reply.closed, "connection should close after 431");
    assert_eq!(backend.hits(), 0);
    assert_serves(gw.addr).await;
}

#[tokio::test]
async fn head_over_configured_8k_gets_431_and_under_it_passes() {
    let backend = Backend::start("b").await;
    let limits = listener_limits(&["max_header_bytes: 8KiB"]);
    let gw = start_yaml(&simple_config(
        "round-robin",
        &[backend.addr()],
        "",
        &limits,
    ))
    .await;

    let reply = exchange(gw.addr, &request_with_header(10 * 1024), HANG).await;
    assert_eq!(
        reply.status(),
        Some(431),
        "10 KiB head over 8 KiB: {}",
        reply.text()
    );
    assert_eq!(backend.hits(), 0);

    // Comfortably under the limit: forwarded.
    let reply = exchange(gw.addr, &request_with_header(4 * 1024), HANG).await;
    assert_eq!(
        reply.status(),
        Some(200),
        "4 KiB head under 8 KiB: {}",
        reply.text()
    );
    assert_serves(gw.addr).await;
}

#[tokio::test]
async fn too_many_headers_get_431() {
    let backend = Backend::start("b").await;
    let limits = listener_limits(&["max_headers: 20"]);
    let gw = start_yaml(&simple_config(
        "round-robin",
        &[backend.addr()],
        "",
        &limits,
    ))
    .await;

    let mut req = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n".to_vec();
    for i in 0..40 {
        req.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
    }
    req.extend_from_slice(b"\r\n");
    let reply = exchange(gw.addr, &req, HANG).await;
    assert_eq!(reply.status(), Some(431), "{}", reply.text());
    assert_eq!(backend.hits(), 0);

    // A few headers under the limit still pass.
    let mut req = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n".to_vec();
    for i in 0..10 {
        req.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
    }
    req.extend_from_slice(b"\r\n");
    let reply = exchange(gw.addr, &req, HANG).await;
    assert_eq!(reply.status(), Some(200), "{}", reply.text());
    assert_serves(gw.addr).await;
}

// ---------------------------------------------------------------------------------------
// 3. Slowloris and idle connections
// ---------------------------------------------------------------------------------------

/// Writes `bytes` one at a time, `gap` apart, until done or the peer goes away.
fn trickle(
    mut w: tokio::net::tcp::OwnedWriteHalf,
    bytes: &'static [u8],
    gap: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        for b in bytes {
            if w.write_all(&[*b]).await.is_err() {
                return;
            }
            tokio::time::sleep(gap).await;
        }
        // Keep the write half open: a slowloris never finishes.
        std::future::pending::<()>().await;
    })
}

#[tokio::test]
async fn slowloris_head_gets_408_then_close_while_others_are_served() {
    let backend = Backend::start("b").await;
    let limits = listener_limits(&["header_read_timeout: 500ms", "idle_timeout: 10s"]);
    let gw = start_yaml(&simple_config(
        "round-robin",
        &[backend.addr()],
        "",
        &limits,
    ))
    .await;

    let s = connect(gw.addr).await;
    let (mut r, w) = s.into_split();
    // 60 bytes at 50 ms: about 3 s for the whole head, far past the 500 ms deadline.
    let writer = trickle(
        w,
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n",
        Duration::from_millis(50),
    );

    // Meanwhile another client is served normally.
    assert_serves(gw.addr).await;

    let mut bytes = Vec::new();
    let closed = tokio::time::timeout(HANG, r.read_to_end(&mut bytes)).await;
    writer.abort();
    let reply = Reply {
        bytes,
        closed: closed.is_ok(),
    };
    assert!(
        reply.closed,
        "slowloris connection not closed: {:?}",
        reply.text()
    );
    assert_eq!(reply.status(), Some(408), "{}", reply.text());
    assert_error_json(&reply.json(), "client-timeout", 408, "client");
    assert_eq!(
        backend.hits(),
        1,
        "only the normal request reaches the backend"
    );
    assert_serves(gw.addr).await;
}

#[tokio::test]
async fn idle_connection_closes_without_a_response() {
    let backend = Backend::start("b").await;
    let limits = listener_limits(&["header_read_timeout: 5s", "idle_timeout: 500ms"]);
    let gw = start_yaml(&simple_config(
        "round-robin",
        &[backend.addr()],
        "",
        &limits,
    ))
    .await;

    // Never sends a byte.
    let mut silent = connect(gw.addr).await;
    // Sends one request, then idles on keep-alive.
    let mut kept = connect(gw.addr).await;
    kept.write_all(b"GET /once HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let first = read_response(&mut kept, HANG).await;
    assert_eq!(first.status(), Some(200), "{}", first.text());
    assert!(!first.closed);

    // A different client is served while both idle.
    assert_serves(gw.addr).await;

    let silent_reply = read_all(&mut silent, HANG).await;
    assert!(
        silent_reply.closed,
        "silent connection not closed after idle_timeout"
    );
    assert!(
        silent_reply.bytes.is_empty(),
        "idle close must send nothing: {:?}",
        silent_reply.text()
    );

    let kept_reply = read_all(&mut kept, HANG).await;
    assert!(
        kept_reply.closed,
        "keep-alive connection not closed after idle_timeout"
    );
    assert!(
        kept_reply.bytes.is_empty(),
        "idle close must send nothing (no 408): {:?}",
        kept_reply.text()
    );
    assert_serves(gw.addr).await;
}

/// A client that asks for a long response and stops reading it: once its socket is full,
/// no bytes move, and after `idle_timeout` steady closes the connection and lets the
/// upstream go (haproxy's `timeout client`, nginx's `send_timeout`). Before, the
/// response's write waited forever, holding the upstream connection.
#[tokio::test]
async fn a_client_that_stops_reading_is_closed_after_idle_timeout() {
    let (gone_tx, mut gone_rx) = tokio::sync::mpsc::unbounded_channel();
    // Streams a 1 GiB body until its writes fail: steady stopped reading and closed.
    let upstream = RawServer::start(move |mut s| {
        let gone = gone_tx.clone();
        async move {
            let _ = read_head(&mut s).await;
            let head = b"HTTP/1.1 200 OK\r\ncontent-length: 1073741824\r\n\r\n";
            if s.write_all(head).await.is_err() {
                return;
            }
            let chunk = vec![b'x'; 64 * 1024];
            while s.write_all(&chunk).await.is_ok() {}
            let _ = gone.send(());
        }
    })
    .await;
    let limits = listener_limits(&["idle_timeout: 1s"]);
    // A route timeout far beyond the test's wait: only the client's idle timeout may end it.
    let gw = start_yaml(&with_route_timeout(
        simple_config("round-robin", &[upstream.addr()], "", &limits),
        "60s",
    ))
    .await;

    let mut stalled = connect(gw.addr).await;
    stalled
        .write_all(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    // Never read. The socket buffers fill within moments; a second later steady gives
    // up on the client and closes the upstream connection too.
    let closed = tokio::time::timeout(Duration::from_secs(20), gone_rx.recv()).await;
    assert!(
        matches!(closed, Ok(Some(()))),
        "the upstream of a client that stopped reading was never let go"
    );
    // The client's connection is closed: what it reads now ends, after what was
    // buffered, without the whole body.
    let reply = read_all(&mut stalled, HANG).await;
    assert!(reply.closed, "stalled client's connection left open");
    assert!(reply.bytes.len() < 1 << 30);
    drop(upstream);
}

// ---------------------------------------------------------------------------------------
// 4. Body limits and broken bodies
// ---------------------------------------------------------------------------------------

async fn body_limited_gateway(backend: &Backend) -> common::Running {
    let limits = listener_limits(&["max_body_bytes: 1KiB", "header_read_timeout: 2s"]);
    start_yaml(&simple_config(
        "round-robin",
        &[backend.addr()],
        "",
        &limits,
    ))
    .await
}

#[tokio::test]
async fn announced_body_over_limit_gets_413_without_backend() {
    let backend = Backend::start("b").await;
    let gw = body_limited_gateway(&backend).await;

    // The head alone announces 5000 bytes; the gateway must refuse before any body.
    let mut s = connect(gw.addr).await;
    s.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n")
        .await
        .unwrap();
    let reply = read_response(&mut s, HANG).await;
    assert_eq!(reply.status(), Some(413), "{}", reply.text());
    assert_error_json(&reply.json(), "body-too-large", 413, "client");
    assert_eq!(backend.hits(), 0, "the backend must not be contacted");

    // Exactly at the limit: forwarded and echoed.
    let mut s = connect(gw.addr).await;
    let mut req =
        b"POST /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 1024\r\n\r\n"
            .to_vec();
    req.extend(std::iter::repeat_n(b'z', 1024));
    s.write_all(&req).await.unwrap();
    let reply = read_all(&mut s, HANG).await;
    assert_eq!(reply.status(), Some(200), "{}", reply.text());
    assert_serves(gw.addr).await;
}

#[tokio::test]
async fn chunked_body_growing_past_limit_gets_413() {
    let backend = Backend::start("b").await;
    let gw = body_limited_gateway(&backend).await;

    let mut s = connect(gw.addr).await;
    s.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        .await
        .unwrap();
    let chunk = [b'c'; 512];
    for _ in 0..8 {
        // The gateway may answer and stop reading at any point; later writes may fail.
        if s.write_all(b"200\r\n").await.is_err()
            || s.write_all(&chunk).await.is_err()
            || s.write_all(b"\r\n").await.is_err()
        {
            break;
        }
    }
    let _ = s.write_all(b"0\r\n\r\n").await;
    let reply = read_response(&mut s, HANG).await;
    assert_eq!(reply.status(), Some(413), "{}", reply.text());
    assert_error_json(&reply.json(), "body-too-large", 413, "client");

    // The backend connection that saw the cut-off body is not reused in a broken state.
    for _ in 0..3 {
        assert_serves(gw.addr).await;
    }
}

#[tokio::test]
async fn truncated_chunked_body_then_close_does_not_hang_or_poison() {
    let backend = Backend::start("b").await;
    let gw = body_limited_gateway(&backend).await;

    // Part of a 256-byte chunk, then the client half-closes.
    let mut s = connect(gw.addr).await;
    s.write_all(
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n100\r\nonly-part-of-it",
    )
    .await
    .unwrap();
    s.shutdown().await.unwrap();
    let reply = read_all(&mut s, HANG).await;
    assert!(
        reply.closed,
        "gateway kept a half-closed broken upload open: {:?}",
        reply.text()
    );
    // The half-closed client can still read: it gets the client-fault 400.
    assert_eq!(reply.status(), Some(400), "{}", reply.text());
    assert_error_json(&reply.json(), "client", 400, "client");

    // Same, but the client vanishes entirely.
    let mut s = connect(gw.addr).await;
    s.write_all(
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n100\r\nonly-part",
    )
    .await
    .unwrap();
    drop(s);

    // The upstream connection that carried the partial body must not be reused mid-body.
    for _ in 0..3 {
        assert_serves(gw.addr).await;
    }
}

/// A client that stops sending its body mid-way is the client's fault (408, source
/// `client`), like a slow head. Today the forward waits for the backend's response head
/// under the route timeout, so a slow uploader gets `504 timeout` with source `upstream`,
/// is counted as `steady_request_failures_total{reason="timeout"}` and is recorded as a
/// failure of a healthy endpoint (feeding outlier detection and P2C EWMA).
#[tokio::test]
async fn stalled_request_body_is_the_clients_fault() {
    let backend = Backend::start("b").await;
    let limits = listener_limits(&["header_read_timeout: 500ms"]);
    let gw = start_yaml(&with_route_timeout(
        simple_config("round-robin", &[backend.addr()], "", &limits),
        "1s",
    ))
    .await;

    let reply = exchange(
        gw.addr,
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nhalf",
        HANG,
    )
    .await;
    assert!(reply.closed, "stalled upload left open: {:?}", reply.text());
    assert_eq!(reply.status(), Some(408), "{}", reply.text());
    assert_error_json(&reply.json(), "client-timeout", 408, "client");
    assert_serves(gw.addr).await;
}

#[tokio::test]
async fn garbage_chunk_size_gets_400_and_does_not_poison() {
    let backend = Backend::start("b").await;
    let gw = body_limited_gateway(&backend).await;

    let mut s = connect(gw.addr).await;
    s.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz-not-hex\r\n\r\n")
        .await
        .unwrap();
    let reply = read_all(&mut s, HANG).await;
    assert!(
        reply.closed,
        "connection with a broken body still open: {:?}",
        reply.text()
    );
    assert_eq!(reply.status(), Some(400), "{}", reply.text());
    assert_error_json(&reply.json(), "client", 400, "client");
    for _ in 0..3 {
        assert_serves(gw.addr).await;
    }
}

// ---------------------------------------------------------------------------------------
// 5. Backend faults
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn refused_connect_gets_502_connect() {
    let gw = start(&[dead_addr()]).await;
    let answer = get(gw.addr, "/").await;
    assert_eq!(answer.status, 502);
    assert_eq!(answer.headers["content-type"], "application/json");
    assert_eq!(answer.headers["x-steady-error"], "connect");
    assert_error_json(&answer.json(), "connect", 502, "upstream");
    // The gateway itself is still fine: once more, same answer, no hang.
    assert_eq!(get(gw.addr, "/").await.status, 502);
}

#[tokio::test]
async fn no_endpoint_reachable_on_any_attempt_gets_502_every_time() {
    let gw = start(&dead_addrs(3)).await;
    for _ in 0..6 {
        let answer = get(gw.addr, "/").await;
        assert_eq!(answer.status, 502);
        assert_error_json(&answer.json(), "connect", 502, "upstream");
    }
}

#[tokio::test]
async fn backlog_full_endpoint_hits_connect_timeout_502() {
    // A listener that never accepts, with its accept queue filled: further SYNs are
    // dropped, so the gateway's connect hangs until `connect_timeout` (500ms), well
    // before the route timeout (5s). That must be a 502 `connect`, not a 504.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(1).unwrap();
    let black = listener.local_addr().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..4 {
        if let Ok(Ok(s)) =
            tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(black)).await
        {
            fillers.push(s);
        }
    }
    let gw = start_yaml(&with_route_timeout(
        simple_config("round-robin", &[black], "", ""),
        "5s",
    ))
    .await;
    let answer = get(gw.addr, "/").await;
    assert_eq!(answer.status, 502, "{:?}", answer.body);
    assert_error_json(&answer.json(), "connect", 502, "upstream");
    drop(fillers);
    drop(listener);
}

#[tokio::test]
async fn stalled_backend_gets_504_after_route_timeout() {
    let backend = Backend::start("b").await;
    let gw = start_yaml(&with_route_timeout(
        simple_config("round-robin", &[backend.addr()], "", ""),
        "500ms",
    ))
    .await;
    backend.set_fault(Fault::Stall);
    let answer = get(gw.addr, "/").await;
    assert_eq!(answer.status, 504);
    assert_error_json(&answer.json(), "timeout", 504, "upstream");
    backend.set_fault(Fault::None);
    assert_serves(gw.addr).await;
}

#[tokio::test]
async fn reset_mid_response_truncates_not_hangs() {
    let backend = Backend::start("b").await;
    let gw = start(&[backend.addr()]).await;
    backend.set_fault(Fault::ResetMidResponse);

    let reply = exchange(gw.addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", HANG).await;
    assert!(
        reply.closed,
        "client connection left open after the upstream reset: {:?}",
        reply.text()
    );
    assert_eq!(
        reply.status(),
        Some(200),
        "head was already sent: {}",
        reply.text()
    );
    let head_len = find(&reply.bytes, b"\r\n\r\n").expect("a response head");
    assert_eq!(content_length(&reply.bytes[..head_len]), Some(1000));
    assert!(
        reply.body().len() < 1000,
        "body must come back truncated, got {} bytes",
        reply.body().len()
    );
    assert!(reply.body().starts_with(b"partial"), "{}", reply.text());

    backend.set_fault(Fault::None);
    assert_serves(gw.addr).await;
}

#[tokio::test]
async fn a_backend_that_stalls_mid_body_is_cut_after_response_body_timeout() {
    // Sends the head and part of the body, then nothing, with the connection open.
    let upstream = Backend::start("stalls").await;
    upstream.set_fault(Fault::StallMidResponse);
    let yaml = with_response_body_timeout(
        simple_config("round-robin", &[upstream.addr()], "", ""),
        "300ms",
    );
    let gw = start_yaml(&yaml).await;

    let started = std::time::Instant::now();
    let reply = exchange(gw.addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", HANG).await;
    assert!(
        reply.closed,
        "client connection left open behind a stalled body: {:?}",
        reply.text()
    );
    assert_eq!(reply.status(), Some(200), "{}", reply.text());
    assert_eq!(reply.body(), b"partial", "{}", reply.text());
    // Cut by the pause limit, not by anything slower (the route's timeout has passed
    // with the head; the client's idle timeout is 60s).
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "cut before the pause limit: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn an_h2c_upstream_that_stalls_mid_body_is_cut_after_response_body_timeout() {
    use bytes::Bytes;
    use futures_util::StreamExt;
    use http_body_util::StreamBody;
    use hyper::body::Frame;
    // An h2c server whose answer sends "partial" and then nothing, its stream open.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let service = hyper::service::service_fn(|_req| async {
                let frames = futures_util::stream::once(async {
                    Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from_static(b"partial")))
                })
                .chain(futures_util::stream::pending());
                Ok::<_, std::convert::Infallible>(http::Response::new(StreamBody::new(frames)))
            });
            tokio::spawn(
                hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), service),
            );
        }
    });
    let yaml = with_response_body_timeout(
        simple_config("round-robin", &[addr], "    protocol: h2c", ""),
        "300ms",
    );
    let gw = start_yaml(&yaml).await;

    let reply = exchange(gw.addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", HANG).await;
    assert!(
        reply.closed,
        "client connection left open behind a stalled h2 body: {:?}",
        reply.text()
    );
    assert_eq!(reply.status(), Some(200), "{}", reply.text());
    // Chunked (no length from the upstream): the data chunk, and no last chunk.
    let text = reply.text();
    assert!(text.contains("partial"), "{text}");
    assert!(
        !text.ends_with("0\r\n\r\n"),
        "the body was ended as if whole: {text}"
    );
    server.abort();
}

#[tokio::test]
async fn a_slow_body_whose_pauses_stay_under_the_limit_arrives_whole() {
    // Five bytes, one every 150ms: 750ms in all, each pause under the 400ms limit.
    let upstream = RawServer::start(|mut s| async move {
        let _ = read_head(&mut s).await;
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n")
            .await;
        for byte in b"abcde" {
            tokio::time::sleep(Duration::from_millis(150)).await;
            if s.write_all(&[*byte]).await.is_err() {
                return;
            }
        }
        tokio::time::sleep(Duration::from_secs(30)).await;
    })
    .await;
    let yaml = with_response_body_timeout(
        simple_config("round-robin", &[upstream.addr()], "", ""),
        "400ms",
    );
    let gw = start_yaml(&yaml).await;
    let answer = tokio::time::timeout(HANG, get(gw.addr, "/"))
        .await
        .expect("the whole body within bound");
    assert_eq!(answer.status, 200);
    assert_eq!(&answer.body[..], b"abcde");
}

#[tokio::test]
async fn backend_closing_without_answer_gets_502() {
    let backend = Backend::start("b").await;
    let gw = start(&[backend.addr()]).await;
    // Warm the pool first so the close also hits a reused connection.
    assert_serves(gw.addr).await;
    backend.set_fault(Fault::Close);
    for _ in 0..2 {
        let answer = get(gw.addr, "/").await;
        assert_eq!(answer.status, 502);
        assert_error_json(&answer.json(), "upstream-reset", 502, "upstream");
    }
    backend.set_fault(Fault::None);
    assert_serves(gw.addr).await;
}

#[tokio::test]
async fn backend_speaking_garbage_gets_502() {
    // Reads the request, answers with bytes that are not HTTP, closes.
    let after_head = RawServer::start(|mut s| async move {
        let _ = read_head(&mut s).await;
        let _ = s.write_all(b"\x00\x01\x02 this is not HTTP\r\n\r\n").await;
    })
    .await;
    // Answers garbage without reading anything and keeps the connection open.
    let eager = RawServer::start(|mut s| async move {
        let _ = s.write_all(b"SSH-2.0-OpenSSH_9.0\r\n").await;
        tokio::time::sleep(Duration::from_secs(30)).await;
    })
    .await;
    for server in [&after_head, &eager] {
        let gw = start_yaml(&with_route_timeout(
            simple_config("round-robin", &[server.addr()], "", ""),
            "3s",
        ))
        .await;
        let answer = get(gw.addr, "/").await;
        assert_eq!(answer.status, 502, "{:?}", answer.body);
        assert_error_json(&answer.json(), "upstream-reset", 502, "upstream");
    }
}

#[tokio::test]
async fn backend_truncating_its_head_gets_502() {
    // A status line and half a header, then close.
    let server = RawServer::start(|mut s| async move {
        let _ = read_head(&mut s).await;
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Le").await;
    })
    .await;
    let gw = start(&[server.addr()]).await;
    let answer = get(gw.addr, "/").await;
    assert_eq!(answer.status, 502);
    assert_error_json(&answer.json(), "upstream-reset", 502, "upstream");
}

// ---------------------------------------------------------------------------------------
// 6. No route
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn unmatched_host_gets_404_json() {
    let backend = Backend::start("b").await;
    let yaml = format!(
        "listeners:
  - name: web
    bind: 127.0.0.1:0
    protocol: http
routes:
  - name: api
    listener: web
    match:
      host: api.example
    upstream: app
    timeout: 2s
upstreams:
  - name: app
    connect_timeout: 500ms
    endpoints:
      - address: {}
",
        backend.addr()
    );
    let gw = start_yaml(&yaml).await;

    let reply = exchange(
        gw.addr,
        b"GET / HTTP/1.1\r\nHost: other.example\r\nConnection: close\r\n\r\n",
        HANG,
    )
    .await;
    assert_eq!(reply.status(), Some(404), "{}", reply.text());
    assert!(
        reply
            .text()
            .to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{}",
        reply.text()
    );
    assert_error_json(&reply.json(), "no-route", 404, "internal");
    assert_eq!(backend.hits(), 0);

    let reply = exchange(
        gw.addr,
        b"GET / HTTP/1.1\r\nHost: api.example:8080\r\nConnection: close\r\n\r\n",
        HANG,
    )
    .await;
    assert_eq!(reply.status(), Some(200), "{}", reply.text());
    assert_eq!(backend.hits(), 1);
}

// ---------------------------------------------------------------------------------------
// 7. Isolation
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_clients_never_affect_a_good_one() {
    let backend = Backend::start("b").await;
    let limits = listener_limits(&["header_read_timeout: 3s", "idle_timeout: 10s"]);
    let gw = start_yaml(&simple_config(
        "round-robin",
        &[backend.addr()],
        "",
        &limits,
    ))
    .await;

    // 20 slowloris connections, each dribbling a head that never ends.
    let mut slow = Vec::new();
    for _ in 0..20 {
        let (r, w) = connect(gw.addr).await.into_split();
        slow.push((
            r,
            trickle(
                w,
                b"GET / HTTP/1.1\r\nHost: x\r\nX-Never: ends-ends-ends-ends-ends-ends-ends",
                Duration::from_millis(100),
            ),
        ));
    }

    // A client flooding garbage on fresh connections as fast as the gateway rejects it.
    let stop = Arc::new(AtomicBool::new(false));
    let flood = {
        let stop = stop.clone();
        let addr = gw.addr;
        tokio::spawn(async move {
            let mut rounds = 0u32;
            let mut junk = vec![0u8; 1024];
            let mut rng = fastrand::Rng::with_seed(42);
            while !stop.load(Ordering::Relaxed) {
                rng.fill(&mut junk);
                let _ = exchange(addr, &junk, Duration::from_secs(1)).await;
                rounds += 1;
            }
            rounds
        })
    };

    // 50 normal requests, 10 at a time.
    for batch in 0..5 {
        let mut tasks = Vec::new();
        for i in 0..10 {
            let addr = gw.addr;
            tasks.push(tokio::spawn(async move {
                get(addr, &format!("/good/{batch}/{i}")).await
            }));
        }
        for t in tasks {
            let answer = t.await.expect("request task");
            assert_eq!(answer.status, 200, "{:?}", answer.body);
        }
    }
    assert_eq!(
        backend.hits(),
        50,
        "only the good requests reach the backend"
    );

    stop.store(true, Ordering::Relaxed);
    let rounds = tokio::time::timeout(HANG, flood)
        .await
        .expect("flooder stops")
        .unwrap();
    assert!(rounds > 0, "the flooder ran");
    for (_, writer) in slow {
        writer.abort();
    }
    assert_serves(gw.addr).await;
}

// ---------------------------------------------------------------------------------------
// 8. Connection limit
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn max_connections_holds_the_third_until_one_closes() {
    let backend = Backend::start("b").await;
    let limits = listener_limits(&["max_connections: 2", "idle_timeout: 30s"]);
    let gw = start_yaml(&simple_config(
        "round-robin",
        &[backend.addr()],
        "",
        &limits,
    ))
    .await;
    let req = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";

    // Two keep-alive connections, each proven served.
    let mut first = connect(gw.addr).await;
    first.write_all(req).await.unwrap();
    assert_eq!(read_response(&mut first, HANG).await.status(), Some(200));
    let mut second = connect(gw.addr).await;
    second.write_all(req).await.unwrap();
    assert_eq!(read_response(&mut second, HANG).await.status(), Some(200));

    // The third connects (kernel backlog) but is not served while both stay open.
    let mut third = connect(gw.addr).await;
    third.write_all(req).await.unwrap();
    let waiting = read_response(&mut third, Duration::from_millis(700)).await;
    assert!(
        waiting.bytes.is_empty() && !waiting.closed,
        "third connection served over the limit: {:?}",
        waiting.text()
    );

    // The open ones keep working.
    first.write_all(req).await.unwrap();
    assert_eq!(read_response(&mut first, HANG).await.status(), Some(200));

    // One closes: the third is served.
    drop(second);
    let served = read_response(&mut third, HANG).await;
    assert_eq!(
        served.status(),
        Some(200),
        "third connection after one closed: {:?}",
        served.text()
    );
    assert_eq!(backend.hits(), 4);
    assert_eq!(open_connections(&gw), 2, "first and third are open");

    drop(first);
    drop(third);
    assert_serves(gw.addr).await;
    // Every connection that ended left the gauge (and gave back its permit).
    let deadline = tokio::time::Instant::now() + HANG;
    while open_connections(&gw) != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "open connections stuck at {}",
            open_connections(&gw)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The listener's `steady_downstream_connections` gauge.
fn open_connections(gw: &common::Running) -> i64 {
    let metrics = gw.gateway.metrics().encode();
    let line = metrics
        .lines()
        .find(|l| l.starts_with("steady_downstream_connections{"))
        .unwrap_or_else(|| panic!("no open connections gauge in:\n{metrics}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

/// A pause longer than `body_read_timeout` is a 408 even when the route allows much
/// longer, so a slow uploader cannot hold a connection and an endpoint slot for the
/// whole route timeout.
#[tokio::test]
async fn body_pause_over_body_read_timeout_gets_408() {
    let backend = Backend::start("b").await;
    let limits = listener_limits(&["body_read_timeout: 300ms"]);
    let gw = start_yaml(&with_route_timeout(
        simple_config("round-robin", &[backend.addr()], "", &limits),
        "30s",
    ))
    .await;
    let reply = exchange(
        gw.addr,
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nhalf",
        HANG,
    )
    .await;
    assert_eq!(reply.status(), Some(408), "{}", reply.text());
    assert_error_json(&reply.json(), "client-timeout", 408, "client");
    assert_serves(gw.addr).await;
}
