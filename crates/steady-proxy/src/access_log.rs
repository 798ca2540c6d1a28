//! The JSON access log: one line per request, written by its own thread so the request
//! path never waits on a disk.
//!
//! A request formats its line (only the configured fields) straight into its worker
//! thread's own batch: a `Vec<u8>` behind a mutex that only the worker and, every 10 ms,
//! the writer thread touch, so a line costs no allocation, no wake-up and no shared
//! cache line between workers. A batch holds at most `buffer` lines; past that a line is
//! dropped and counted (`steady_access_log_lines_total{result="dropped"}`), never waited
//! for. The writer thread swaps each batch for an emptied one, writes it in one call,
//! and rotates a file log by size (through the `file-rotate` crate, which also renames, gzips and prunes old
//! files) and by age. Dropping the [`AccessLog`] writes what was accepted and ends the
//! thread.

use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use file_rotate::compression::Compression;
use file_rotate::suffix::AppendCount;
use file_rotate::{ContentLimit, FileRotate};

use crate::text::Out;
use steady_config::access_log::{AccessLog as Config, Field, Rotate};

/// What one request contributes to its log line.
#[derive(Debug, Clone, Default)]
pub struct Entry<'a> {
    /// When the request head arrived.
    pub time: Option<SystemTime>,
    /// W3C trace id (written as 32 hex digits).
    pub trace_id: Option<opentelemetry::trace::TraceId>,
    /// steady's span id (written as 16 hex digits).
    pub span_id: Option<opentelemetry::trace::SpanId>,
    /// `X-Request-Id`, as sent (escaped when written; invalid UTF-8 replaced).
    pub request_id: Option<&'a [u8]>,
    /// TCP peer.
    pub client: Option<SocketAddr>,
    /// Method.
    pub method: &'a str,
    /// Host the request named, as sent (escaped when written).
    pub host: Option<&'a [u8]>,
    /// Path without the query.
    pub path: &'a str,
    /// Status sent to the client.
    pub status: u16,
    /// Route, if one matched.
    pub route: Option<&'a str>,
    /// Upstream, if the route has one.
    pub upstream: Option<&'a str>,
    /// Endpoint of the last attempt.
    pub endpoint: Option<SocketAddr>,
    /// Upstream attempts.
    pub attempts: u32,
    /// Request body bytes read.
    pub bytes_in: u64,
    /// Response body bytes sent.
    pub bytes_out: u64,
    /// Request head to end of response body.
    pub duration: Duration,
    /// Time waiting on upstreams for response heads.
    pub upstream_duration: Option<Duration>,
    /// Request head to response head.
    pub ttfb: Option<Duration>,
    /// steady's failure reason, if steady failed the request itself.
    pub failure: Option<&'a str>,
}

/// What a request's phases tell its access-log line (one lock: each phase writes once,
/// and the line reads it all once).
#[derive(Debug, Default)]
pub struct RequestFacts(Mutex<Facts>);

#[derive(Debug, Default)]
struct Facts {
    route: Option<(Arc<str>, Arc<str>)>,
    /// Trace id and steady's span id (formatted only when the line is written).
    trace: Option<(opentelemetry::trace::TraceId, opentelemetry::trace::SpanId)>,
    endpoint: Option<SocketAddr>,
    attempts: u32,
    upstream: Duration,
    failure: Option<&'static str>,
    /// The request body's counter of bytes received, when it has a body.
    body: Option<Arc<crate::body::BodyVerdict>>,
    /// `X-Request-Id`, as sent upstream and back to the client.
    request_id: Option<http::HeaderValue>,
}

impl RequestFacts {
    /// The request's trace and span ids.
    pub(crate) fn set_trace(&self, trace: &crate::trace::RequestTrace) {
        lock(&self.0).trace = Some(trace.ids());
    }

    /// The route (and its upstream) that matched.
    pub(crate) fn set_route(&self, route: &Arc<str>, upstream: &Arc<str>) {
        lock(&self.0).route = Some((route.clone(), upstream.clone()));
    }

    /// One upstream attempt to `endpoint` that took `took` to its response head (or
    /// failure).
    pub(crate) fn attempt(&self, endpoint: SocketAddr, took: Duration) {
        let mut facts = lock(&self.0);
        facts.endpoint = Some(endpoint);
        facts.attempts += 1;
        facts.upstream += took;
    }

    /// The request body's state, whose byte count becomes `bytes_in`.
    pub(crate) fn set_body(&self, body: &Arc<crate::body::BodyVerdict>) {
        lock(&self.0).body = Some(body.clone());
    }

    /// The failure steady answered with.
    pub(crate) fn fail(&self, reason: &'static str) {
        lock(&self.0).failure = Some(reason);
    }

    /// The request's `X-Request-Id`.
    pub(crate) fn set_request_id(&self, id: &http::HeaderValue) {
        lock(&self.0).request_id = Some(id.clone());
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The request side of a line, known when the response head leaves; the line is
/// written when the response body ends (or the client goes away).
#[derive(Debug)]
pub struct PendingLine {
    log: Arc<AccessLog>,
    facts: RequestFacts,
    time: SystemTime,
    start: Instant,
    ttfb: Duration,
    client: SocketAddr,
    method: http::Method,
    /// The request target's path and query, and the authority of an absolute-form
    /// target (reference-counted clones, no copy), and the `Host` header.
    path: Option<http::uri::PathAndQuery>,
    authority: Option<http::uri::Authority>,
    host: Option<http::HeaderValue>,
    status: u16,
    bytes_in: u64,
    bytes_out: u64,
    written: bool,
}

impl PendingLine {
    /// Captures what the request head says; `arrived` is when it arrived, on both
    /// clocks, and `host` its `Host` header.
    /// `bytes_in` is the body's announced length.
    pub(crate) fn new(
        log: Arc<AccessLog>,
        req: &http::request::Parts,
        bytes_in: u64,
        client: SocketAddr,
        arrived: (SystemTime, Instant),
        host: Option<http::HeaderValue>,
    ) -> PendingLine {
        PendingLine {
            log,
            facts: RequestFacts::default(),
            time: arrived.0,
            start: arrived.1,
            ttfb: Duration::ZERO,
            client,
            method: req.method.clone(),
            path: req.uri.path_and_query().cloned(),
            authority: req.uri.authority().cloned(),
            host,
            status: 0,
            bytes_in,
            bytes_out: 0,
            written: false,
        }
    }

    /// Records the response head: status and the time to it.
    pub(crate) fn head<B>(&mut self, response: &http::Response<B>) {
        self.status = response.status().as_u16();
        self.ttfb = self.start.elapsed();
    }

    /// The facts the request's phases write to.
    pub(crate) fn facts(&self) -> &RequestFacts {
        &self.facts
    }

    /// Counts response body bytes sent.
    pub(crate) fn sent(&mut self, bytes: usize) {
        self.bytes_out += bytes as u64;
    }

    /// Writes the line (once).
    pub(crate) fn finish(&mut self) {
        self.finish_at(Instant::now());
    }

    /// Writes the line (once) for a response that ended at `end`.
    pub(crate) fn finish_at(&mut self, end: Instant) {
        if std::mem::replace(&mut self.written, true) {
            return;
        }
        let facts = std::mem::take(&mut *lock(&self.facts.0));
        // Bytes actually received; `Content-Length` when the body was never read (a
        // request refused before forwarding).
        let bytes_in = facts.body.as_ref().map_or(self.bytes_in, |b| b.received());
        let route = facts.route.as_ref();
        self.log.log(&Entry {
            time: Some(self.time),
            trace_id: facts.trace.map(|(t, _)| t),
            span_id: facts.trace.map(|(_, s)| s),
            request_id: facts.request_id.as_ref().map(|v| v.as_bytes()),
            client: Some(self.client),
            method: self.method.as_str(),
            host: self
                .authority
                .as_ref()
                .map(|a| a.as_str().as_bytes())
                .or_else(|| self.host.as_ref().map(|h| h.as_bytes())),
            path: target_path(self.path.as_ref(), self.authority.is_some()),
            status: self.status,
            route: route.map(|(r, _)| &**r),
            upstream: route.map(|(_, u)| &**u),
            endpoint: facts.endpoint,
            attempts: facts.attempts,
            bytes_in,
            bytes_out: self.bytes_out,
            duration: end.saturating_duration_since(self.start),
            upstream_duration: (facts.attempts > 0).then_some(facts.upstream),
            ttfb: Some(self.ttfb),
            failure: facts.failure,
        });
    }
}

/// The path of a request target, as `Uri::path` gives it, from its parts: the
/// path-and-query's path (`/` for an absolute-form target written without one), empty
/// for an authority-form (CONNECT) target, which has no path-and-query.
fn target_path(path: Option<&http::uri::PathAndQuery>, authority: bool) -> &str {
    match path {
        Some(p) => p.path(),
        None if authority => "",
        None => "/",
    }
}

impl Drop for PendingLine {
    fn drop(&mut self) {
        // The client went away before the body ended: still one line.
        self.finish();
    }
}

/// A running access log.
pub struct AccessLog {
    fields: Vec<Field>,
    /// Whether `fields` is every field in the default order (the unrolled writer).
    every_field: bool,
    sample: f64,
    always_log_errors: bool,
    /// Lines a worker's batch holds before new ones are dropped.
    capacity: usize,
    /// Every worker thread's batch, registered on its first line; drained by the writer.
    batches: Arc<Mutex<Vec<Arc<Mutex<Batch>>>>>,
    /// Which log a thread's cached batch belongs to.
    id: u64,
    /// Set by [`close`](AccessLog::close); the writer drains and ends.
    closing: Arc<AtomicBool>,
    dropped: Arc<AtomicU64>,
    written: Arc<AtomicU64>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// One worker thread's lines not yet written, newline-terminated: `buf[..used]`. The
/// rest of `buf` is room already initialized, which lines are formatted into without
/// zeroing it first.
#[derive(Default)]
struct Batch {
    buf: Vec<u8>,
    used: usize,
    lines: usize,
    /// Set by the writer's last drain: later lines are counted as dropped.
    closed: bool,
}

impl std::fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessLog")
            .field("fields", &self.fields)
            .field("sample", &self.sample)
            .finish_non_exhaustive()
    }
}

/// A thread's batch for one log (by the log's id).
type Local = Option<(u64, Arc<Mutex<Batch>>)>;

thread_local! {
    /// This thread's batch (and which log it belongs to), so logging takes only this
    /// thread's own lock after the first line.
    static LOCAL: std::cell::RefCell<Local> = const { std::cell::RefCell::new(None) };
}

impl AccessLog {
    /// Opens the destination (creating a file's directory) and starts the writer thread.
    pub fn start(config: &Config) -> io::Result<Arc<AccessLog>> {
        let sink: Box<dyn Sink> = if config.is_stdout() {
            Box::new(Plain(io::stdout()))
        } else {
            Box::new(RotatingFile::open(
                Path::new(&config.path),
                config.rotate.as_ref(),
            )?)
        };
        let batches: Arc<Mutex<Vec<Arc<Mutex<Batch>>>>> = Arc::default();
        let written = Arc::new(AtomicU64::new(0));
        let dropped = Arc::new(AtomicU64::new(0));
        let closing = Arc::new(AtomicBool::new(false));
        let thread = std::thread::Builder::new()
            .name("steady-access-log".into())
            .spawn({
                let writer = Writer {
                    batches: batches.clone(),
                    written: written.clone(),
                    closing: closing.clone(),
                };
                move || writer.run(sink)
            })?;
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        let fields = config.fields();
        let every_field = fields == Field::ALL;
        Ok(Arc::new(AccessLog {
            fields,
            every_field,
            sample: config.sample.0,
            always_log_errors: config.always_log_errors,
            capacity: config.buffer.max(1),
            batches,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            closing,
            dropped,
            written,
            thread: Mutex::new(Some(thread)),
        }))
    }

    /// Logs `entry` if sampling keeps it; never blocks: a full buffer drops the line.
    pub fn log(&self, entry: &Entry<'_>) {
        let error = entry.status >= 500 || entry.failure.is_some();
        let keep = (error && self.always_log_errors)
            || self.sample >= 1.0
            || fastrand::f64() < self.sample;
        if !keep {
            return;
        }
        if self.closing.load(Ordering::Relaxed) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let id = self.id;
        let kept = LOCAL.with(|cell| {
            let slot = &mut *cell.borrow_mut();
            if slot.as_ref().map(|(owner, _)| *owner) != Some(id) {
                let batch = Arc::new(Mutex::new(Batch::default()));
                let mut batches = lock(&self.batches);
                // The writer's last round holds this lock: a batch registered after it
                // would never be written.
                if self.closing.load(Ordering::Relaxed) {
                    return false;
                }
                batches.push(batch.clone());
                *slot = Some((id, batch));
            }
            let Some((_, batch)) = slot.as_ref() else {
                return false;
            };
            let mut batch = lock(batch);
            if batch.closed || batch.lines >= self.capacity {
                return false;
            }
            // Formatted straight into the batch: the writer waits for this lock at
            // most one line's formatting.
            let Batch {
                buf, used, lines, ..
            } = &mut *batch;
            match self.format_into(buf, *used, entry) {
                Some(end) => {
                    *used = end;
                    *lines += 1;
                    true
                }
                None => false,
            }
        });
        if !kept {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Lines dropped because the buffer was full (or the log closed).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Lines the writer thread has written so far.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// Stops accepting lines, writes and flushes those accepted, and waits for the
    /// writer thread (at most `deadline`).
    pub fn close(&self, deadline: Duration) {
        self.closing.store(true, Ordering::Relaxed);
        let Some(thread) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            return;
        };
        let until = Instant::now() + deadline;
        while !thread.is_finished() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
        if thread.is_finished() {
            let _ = thread.join();
        }
    }

    /// Formats one JSON line with the configured fields, in order.
    pub fn format(&self, e: &Entry<'_>) -> String {
        let mut out = Vec::new();
        let end = self.format_into(&mut out, 0, e).unwrap_or(0);
        // The line without its newline; only UTF-8 went in (escaped JSON strings, ASCII
        // numbers).
        out.truncate(end.saturating_sub(1));
        String::from_utf8(out).unwrap_or_default()
    }

    /// Writes one JSON line with the configured fields, and its newline, into `buf` at
    /// `at`, and returns where it ends; `None` (and nothing written) should the room
    /// reserved for it be short, which the reservation is made never to be. `buf` grows
    /// (zeroed) only when its initialized room is too small for the longest line `e`
    /// could make.
    fn format_into(&self, buf: &mut Vec<u8>, at: usize, e: &Entry<'_>) -> Option<usize> {
        // Written through a cursor over the room: the cursor's position stays in a
        // register, where a `Vec`'s length and capacity would be reloaded and checked at
        // every push.
        let room = e.room();
        if buf.len() < at + room {
            buf.resize(at + room, 0);
        }
        let mut line = Line {
            buf: &mut buf[at..],
            len: 0,
            short: false,
        };
        self.write(&mut line, e);
        line.put(b"\n");
        (!line.short).then_some(at + line.len)
    }

    /// Writes the line's fields: each as `,"key":value`, a field without a value taken
    /// back; the first comma becomes the `{` at the end.
    fn write(&self, out: &mut Line<'_>, e: &Entry<'_>) {
        if self.every_field {
            write_every_field(out, e);
        } else {
            for &field in &self.fields {
                write_field(out, field, e);
            }
        }
        if out.len == 0 {
            out.put(b"{");
        } else if let Some(comma) = out.buf.first_mut() {
            *comma = b'{';
        }
        out.put(b"}");
    }
}

/// Every field in [`Field::ALL`]'s order, unrolled: each call's `match` and key fold
/// away, leaving straight-line code (the default log, about 1,000 instructions less
/// per line than the loop over a configured list).
fn write_every_field(out: &mut Line<'_>, e: &Entry<'_>) {
    use Field::*;
    write_field(out, Time, e);
    write_field(out, TraceId, e);
    write_field(out, SpanId, e);
    write_field(out, RequestId, e);
    write_field(out, Client, e);
    write_field(out, Method, e);
    write_field(out, Host, e);
    write_field(out, Path, e);
    write_field(out, Status, e);
    write_field(out, Route, e);
    write_field(out, Upstream, e);
    write_field(out, Endpoint, e);
    write_field(out, Attempts, e);
    write_field(out, BytesIn, e);
    write_field(out, BytesOut, e);
    write_field(out, Duration, e);
    write_field(out, UpstreamDuration, e);
    write_field(out, Ttfb, e);
    write_field(out, Failure, e);
}

/// Writes one field as `,"key":value`, or nothing when the entry has no value for it.
#[inline(always)]
fn write_field(out: &mut Line<'_>, field: Field, e: &Entry<'_>) {
    use crate::text::{push_socket_addr, push_u64};
    let mark = out.len;
    out.put(key(field));
    let wrote = match field {
        Field::Time => e
            .time
            .map(|t| {
                out.put(b"\"");
                push_rfc3339_millis(out, t);
                out.put(b"\"");
            })
            .is_some(),
        Field::TraceId => e.trace_id.map(|v| out.hex(&v.to_bytes())).is_some(),
        Field::SpanId => e.span_id.map(|v| out.hex(&v.to_bytes())).is_some(),
        Field::Method => {
            json_str(out, e.method.as_bytes());
            true
        }
        Field::RequestId => e.request_id.map(|v| json_str(out, v)).is_some(),
        Field::Client | Field::Endpoint => {
            let addr = if field == Field::Client {
                e.client
            } else {
                e.endpoint
            };
            addr.map(|addr| {
                out.put(b"\"");
                push_socket_addr(out, addr);
                out.put(b"\"");
            })
            .is_some()
        }
        Field::Host => e.host.map(|v| json_str(out, v)).is_some(),
        Field::Path => {
            json_str(out, e.path.as_bytes());
            true
        }
        Field::Status => {
            push_u64(out, u64::from(e.status));
            true
        }
        Field::Route => e.route.map(|v| json_str(out, v.as_bytes())).is_some(),
        Field::Upstream => e.upstream.map(|v| json_str(out, v.as_bytes())).is_some(),
        Field::Attempts => {
            push_u64(out, u64::from(e.attempts));
            true
        }
        Field::BytesIn => {
            push_u64(out, e.bytes_in);
            true
        }
        Field::BytesOut => {
            push_u64(out, e.bytes_out);
            true
        }
        Field::Duration => {
            push_secs(out, e.duration);
            true
        }
        Field::UpstreamDuration => e.upstream_duration.map(|d| push_secs(out, d)).is_some(),
        Field::Ttfb => e.ttfb.map(|d| push_secs(out, d)).is_some(),
        Field::Failure => e.failure.map(|v| json_str(out, v.as_bytes())).is_some(),
    };
    if !wrote {
        out.len = mark;
    }
}

/// A field's `,"key":` (a literal, so a constant `field` makes a constant copy).
#[inline(always)]
fn key(field: Field) -> &'static [u8] {
    match field {
        Field::Time => b",\"time\":",
        Field::TraceId => b",\"trace_id\":",
        Field::SpanId => b",\"span_id\":",
        Field::RequestId => b",\"request_id\":",
        Field::Client => b",\"client\":",
        Field::Method => b",\"method\":",
        Field::Host => b",\"host\":",
        Field::Path => b",\"path\":",
        Field::Status => b",\"status\":",
        Field::Route => b",\"route\":",
        Field::Upstream => b",\"upstream\":",
        Field::Endpoint => b",\"endpoint\":",
        Field::Attempts => b",\"attempts\":",
        Field::BytesIn => b",\"bytes_in\":",
        Field::BytesOut => b",\"bytes_out\":",
        Field::Duration => b",\"duration\":",
        Field::UpstreamDuration => b",\"upstream_duration\":",
        Field::Ttfb => b",\"ttfb\":",
        Field::Failure => b",\"failure\":",
    }
}

impl Entry<'_> {
    /// Bytes enough for the longest line this entry can make, with every field.
    fn room(&self) -> usize {
        // Without its text, a line with every field is under 1,024 bytes: 19 keys of at
        // most 21, the time (26), the ids (52), two addresses (at most 82 each), five
        // integers (at most 20 digits each), three durations (at most 27), seven pairs
        // of quotes and the braces. Escaped text is at most six times as long (`\u001f`).
        const FIXED: usize = 1024;
        let text = self.method.len()
            + self.request_id.map_or(0, <[u8]>::len)
            + self.host.map_or(0, <[u8]>::len)
            + self.path.len()
            + self.route.map_or(0, str::len)
            + self.upstream.map_or(0, str::len)
            + self.failure.map_or(0, str::len);
        FIXED + 6 * text
    }
}

/// A line being written into room reserved for it. Writes past the room are cut and
/// mark the line `short` (then dropped), never a panic.
struct Line<'a> {
    buf: &'a mut [u8],
    len: usize,
    short: bool,
}

impl Out for Line<'_> {
    #[inline]
    fn put(&mut self, bytes: &[u8]) {
        let end = self.len + bytes.len();
        match self.buf.get_mut(self.len..end) {
            Some(room) => {
                room.copy_from_slice(bytes);
                self.len = end;
            }
            None => self.short = true,
        }
    }

    #[inline]
    fn put_head<const N: usize>(&mut self, bytes: &[u8; N], len: usize) {
        match self.buf.get_mut(self.len..self.len + N) {
            Some(room) if len <= N => {
                room.copy_from_slice(bytes);
                self.len += len;
            }
            _ => self.put(&bytes[..len.min(N)]),
        }
    }
}

impl Line<'_> {
    /// Appends `bytes` as a JSON string of lowercase hex digits.
    fn hex<const N: usize>(&mut self, bytes: &[u8; N]) {
        let mut text = [b'"'; 34];
        crate::text::hex_into(bytes, &mut text[1..1 + 2 * N]);
        self.put(&text[..2 + 2 * N]);
    }
}

/// Appends a duration as seconds with six decimals (`0.000123`), in integers.
fn push_secs(out: &mut impl Out, d: Duration) {
    crate::text::push_u64(out, d.as_secs());
    out.put(b".");
    crate::text::push_padded::<6>(out, d.subsec_micros());
}

thread_local! {
    /// The `YYYY-MM-DDTHH:MM:SS` of the last second a line was stamped in, on this
    /// thread: lines of the same second reuse it instead of formatting the date again.
    static SECOND: std::cell::RefCell<(u64, [u8; 19])> = const { std::cell::RefCell::new((u64::MAX, [0; 19])) };
}

/// Appends `t` as RFC 3339 in UTC with milliseconds (`2026-11-25T20:17:19.123Z`).
fn push_rfc3339_millis(out: &mut impl Out, t: SystemTime) {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    SECOND.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != secs {
            let text = humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs))
                .to_string();
            if let Some(prefix) = text.as_bytes().get(..19) {
                cached.1.copy_from_slice(prefix);
                cached.0 = secs;
            }
        }
        out.put(&cached.1);
    });
    out.put(b".");
    crate::text::push_padded::<3>(out, since.subsec_millis());
    out.put(b"Z");
}

/// Appends `s` as a JSON string, escaped (client-sent text such as paths can hold
/// anything), without an intermediate allocation. Plain ASCII with nothing to escape
/// (ids, names, almost every path) is copied as it is; the rest goes through
/// `serde_json` (bytes that are not UTF-8 become U+FFFD).
#[inline]
fn json_str(out: &mut impl Out, s: &[u8]) {
    if !needs_escape(s) {
        out.put(b"\"");
        out.put(s);
        out.put(b"\"");
    } else {
        json_str_escaped(out, s);
    }
}

#[cold]
fn json_str_escaped(out: &mut impl Out, s: &[u8]) {
    // Serializing a string cannot fail.
    out.put(&serde_json::to_vec(&String::from_utf8_lossy(s)).unwrap_or_default());
}

/// Whether `bytes` hold anything but printable ASCII other than `"` and `\\`: a control
/// character, a quote, a backslash, or a byte of a multi-byte character (or of no
/// character at all).
fn needs_escape(bytes: &[u8]) -> bool {
    // Eight bytes at a time (SWAR): a byte is flagged in `hit`'s top bit when it is
    // below 0x20, equal to `"` or `\\`, or 0x80 and above. One pass of a dozen
    // instructions per word instead of four per byte.
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero_byte = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    let word_bad = |x: u64| {
        zero_byte(x ^ (ONES * u64::from(b'"')))
            | zero_byte(x ^ (ONES * u64::from(b'\\')))
            | (x.wrapping_sub(ONES * 0x20) & !x & HIGH)
            | (x & HIGH)
    };
    let mut words = bytes.chunks_exact(8);
    let mut bad = 0;
    for word in &mut words {
        let mut w = [0; 8];
        w.copy_from_slice(word);
        bad |= word_bad(u64::from_le_bytes(w));
    }
    let rest = words.remainder();
    if !rest.is_empty() {
        // Pad with spaces, which need no escape.
        let mut w = [b' '; 8];
        w[..rest.len()].copy_from_slice(rest);
        bad |= word_bad(u64::from_le_bytes(w));
    }
    bad != 0
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        self.close(Duration::from_secs(5));
    }
}

/// Writes `steady_access_log_lines_total{result="written"|"dropped"}` at scrape time.
#[derive(Debug)]
pub(crate) struct AccessLogCollector(pub(crate) crate::http::SharedAccessLog);

impl prometheus_client::collector::Collector for AccessLogCollector {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        let Some(log) = self.0.load_full() else {
            return Ok(());
        };
        let mut family = encoder.encode_descriptor(
            "steady_access_log_lines",
            "Access-log lines written, and dropped because the buffer was full",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for (result, n) in [("written", log.written()), ("dropped", log.dropped())] {
            prometheus_client::metrics::counter::ConstCounter::new(n)
                .encode(family.encode_family(&[("result", result)])?)?;
        }
        Ok(())
    }
}

/// Where lines go.
trait Sink: Send {
    /// Writes whole newline-terminated lines.
    fn write_lines(&mut self, lines: &[u8]) -> io::Result<()>;
    fn flush(&mut self) -> io::Result<()>;
    /// Called about once a second: rotate by age if due.
    fn tick(&mut self) -> io::Result<()> {
        Ok(())
    }
}

struct Plain<W>(W);

impl<W: Write + Send> Sink for Plain<W> {
    fn write_lines(&mut self, lines: &[u8]) -> io::Result<()> {
        self.0.write_all(lines)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

/// A file log rotated by size (file-rotate) and by age (here).
struct RotatingFile {
    out: FileRotate<AppendCount>,
    /// Whole lines not yet written, when rotating by size: written in one call when
    /// `chunk` is reached, so a size rotation (checked by file-rotate before each
    /// write) never splits a line.
    buf: Vec<u8>,
    /// `Some(chunk)` when the file rotates by size.
    chunk: Option<usize>,
    max_age: Option<Duration>,
    /// When the current file started (or steady did, for a file it found).
    opened: Instant,
    /// Whether anything was written since the last rotation.
    dirty: bool,
}

impl RotatingFile {
    fn open(path: &Path, rotate: Option<&Rotate>) -> io::Result<RotatingFile> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        // Fail here, with the OS error, rather than inside file-rotate.
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        let chunk = rotate.map(|r| (r.max_size.bytes() as usize).clamp(1, 64 * 1024));
        let (limit, keep, compression, max_age) = match rotate {
            Some(r) => (
                ContentLimit::BytesSurpassed(r.max_size.bytes() as usize),
                r.keep,
                if r.compress {
                    Compression::OnRotate(0)
                } else {
                    Compression::None
                },
                r.max_age,
            ),
            None => (ContentLimit::None, usize::MAX, Compression::None, None),
        };
        let file = FileRotate::new(path, AppendCount::new(keep), limit, compression, None);
        Ok(RotatingFile {
            out: file,
            buf: Vec::with_capacity(chunk.map_or(0, |c| c + 1024)),
            chunk,
            max_age,
            opened: Instant::now(),
            dirty: false,
        })
    }
}

impl Sink for RotatingFile {
    fn write_lines(&mut self, lines: &[u8]) -> io::Result<()> {
        self.dirty = true;
        let Some(chunk) = self.chunk else {
            // No size limit: the whole batch in one call.
            return self.out.write_all(lines);
        };
        for line in lines.split_inclusive(|&b| b == b'\n') {
            self.buf.extend_from_slice(line);
            if self.buf.len() >= chunk {
                self.flush()?;
            }
        }
        Ok(())
    }
    fn flush(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            // One write call for whole lines; on error the lines are dropped, not
            // retried forever.
            let result = self.out.write_all(&self.buf);
            self.buf.clear();
            result?;
        }
        self.out.flush()
    }
    fn tick(&mut self) -> io::Result<()> {
        if let Some(max_age) = self.max_age {
            if self.dirty && self.opened.elapsed() >= max_age {
                self.flush()?;
                self.out.rotate()?;
                self.opened = Instant::now();
                self.dirty = false;
            }
        }
        Ok(())
    }
}

/// The writer thread's view of the log.
struct Writer {
    batches: Arc<Mutex<Vec<Arc<Mutex<Batch>>>>>,
    written: Arc<AtomicU64>,
    closing: Arc<AtomicBool>,
}

impl Writer {
    /// Sleep, take every worker's batch, write, flush; rotate by age once a second;
    /// after `closing`, one last round that also closes the batches.
    fn run(self, mut sink: Box<dyn Sink>) {
        let mut last_tick = Instant::now();
        let mut failing = false;
        let mut report = |result: io::Result<()>| match result {
            Ok(()) => failing = false,
            Err(e) => {
                if !failing {
                    tracing::error!(error = %e, "access log write failed; lines are lost until it works again");
                }
                failing = true;
            }
        };
        // Swapped with each worker's batch, so neither side allocates once warm.
        let mut spare = Vec::new();
        loop {
            // Sleep, then take everything waiting: the workers never wake this thread
            // (a wake-up per line cost as much as the request). Short batches keep each
            // write small, so a writer sharing a core with a worker delays it only
            // briefly.
            std::thread::sleep(BATCH);
            let last = self.closing.load(Ordering::Relaxed);
            let registered = lock(&self.batches);
            let batches = registered.clone();
            // The last round keeps the list locked, so no batch can join after it.
            let _held = if last {
                Some(registered)
            } else {
                drop(registered);
                None
            };
            for batch in &batches {
                let (used, lines) = {
                    let mut batch = lock(batch);
                    batch.closed = last;
                    std::mem::swap(&mut batch.buf, &mut spare);
                    (
                        std::mem::take(&mut batch.used),
                        std::mem::take(&mut batch.lines),
                    )
                };
                if lines > 0 {
                    report(sink.write_lines(&spare[..used]));
                    self.written.fetch_add(lines as u64, Ordering::Relaxed);
                }
            }
            report(sink.flush());
            if last {
                return;
            }
            if last_tick.elapsed() >= Duration::from_secs(1) {
                last_tick = Instant::now();
                report(sink.tick());
            }
        }
    }
}

/// How long the writer sleeps between batches (lines wait at most this long, plus the
/// write).
const BATCH: Duration = Duration::from_millis(10);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_formatted_times_durations_and_ids_match_the_library_ones() {
        for secs in [0u64, 1_700_000_000, 1_795_634_400, 4_102_444_799] {
            for nanos in [0u32, 1_000_000, 999_999_999, 123_456_789] {
                let t = UNIX_EPOCH + Duration::new(secs, nanos);
                let mut out = Vec::new();
                push_rfc3339_millis(&mut out, t);
                assert_eq!(
                    String::from_utf8(out).unwrap(),
                    humantime::format_rfc3339_millis(t).to_string()
                );
            }
        }
        let mut out = Vec::new();
        push_secs(&mut out, Duration::new(3, 120_000));
        push_secs(&mut out, Duration::from_nanos(999));
        assert_eq!(String::from_utf8(out).unwrap(), "3.0001200.000000");
        let mut buf = [0u8; 16];
        let mut line = Line {
            buf: &mut buf,
            len: 0,
            short: false,
        };
        line.hex(&[0x00, 0xab, 0x10, 0xff]);
        line.hex(&[0x01, 0x02, 0x03, 0x04]);
        // The second did not fit: cut, and the line marked short.
        assert_eq!((line.len, line.short), (10, true));
        assert_eq!(&buf[..10], b"\"00ab10ff\"");
        for field in Field::ALL {
            assert_eq!(key(field), format!(",\"{}\":", field.key()).as_bytes());
        }
    }

    /// An empty directory of this test's own (`tag`) under the temp dir.
    fn fresh_dir(tag: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("steady-alog-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn config(yaml: &str) -> Config {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    fn entry() -> Entry<'static> {
        Entry {
            time: Some(SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123)),
            trace_id: opentelemetry::trace::TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736")
                .ok(),
            method: "GET",
            path: "/a\"b\n",
            status: 200,
            route: Some("api"),
            duration: Duration::from_micros(1500),
            ..Entry::default()
        }
    }

    #[test]
    fn the_escape_check_finds_every_byte_json_escapes() {
        // Every byte at every position of every word layout: flagged exactly when it is
        // a control character, `"`, `\\` or not ASCII.
        for byte in 0..=255u8 {
            let bad = byte < 0x20 || byte == b'"' || byte == b'\\' || byte >= 0x80;
            for len in [1usize, 7, 8, 9, 16, 17, 40] {
                for pos in 0..len {
                    let mut text = vec![b'a'; len];
                    text[pos] = byte;
                    assert_eq!(needs_escape(&text), bad, "{len} {pos} {byte}");
                }
            }
        }
        assert!(!needs_escape(b""));
        assert!(!needs_escape(b"~ \x7f/v1/orders?x=1"));
        // Text that is escaped, or not UTF-8, still makes a JSON string.
        for text in [&b"/a\"b\n"[..], "/é".as_bytes(), b"/\xff\xfe"] {
            let mut out = Vec::new();
            json_str(&mut out, text);
            let back: String = serde_json::from_slice(&out).unwrap();
            assert_eq!(back, String::from_utf8_lossy(text));
        }
    }

    #[test]
    fn the_target_path_is_the_uris() {
        for target in [
            "/a/b?c=1",
            "/",
            "*",
            "http://a.example",
            "http://a.example/x?y",
            "a.example:443",
        ] {
            let uri: http::Uri = target.parse().unwrap();
            assert_eq!(
                target_path(uri.path_and_query(), uri.authority().is_some()),
                uri.path(),
                "{target}"
            );
        }
    }

    #[test]
    fn the_unrolled_default_matches_the_field_loop_and_fits_its_room() {
        use opentelemetry::trace::{SpanId, TraceId};
        let unrolled = AccessLog::start(&config("{}")).unwrap();
        assert!(unrolled.every_field);
        let mut looped = AccessLog::start(&config("{}")).unwrap();
        Arc::get_mut(&mut looped).unwrap().every_field = false;
        let wide: SocketAddr = "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff%4294967295]:65535"
            .parse()
            .unwrap();
        let controls = [0x01u8; 300];
        let controls_text = std::str::from_utf8(&controls).unwrap();
        // The longest line each field can make, all at once.
        let worst = Entry {
            time: Some(UNIX_EPOCH + Duration::from_secs(253_402_300_799)),
            trace_id: Some(TraceId::from_bytes([0xff; 16])),
            span_id: Some(SpanId::from_bytes([0xff; 8])),
            request_id: Some(&controls),
            client: Some(wide),
            method: controls_text,
            host: Some(&controls),
            path: controls_text,
            status: u16::MAX,
            route: Some(controls_text),
            upstream: Some(controls_text),
            endpoint: Some(wide),
            attempts: u32::MAX,
            bytes_in: u64::MAX,
            bytes_out: u64::MAX,
            duration: Duration::MAX,
            upstream_duration: Some(Duration::MAX),
            ttfb: Some(Duration::MAX),
            failure: Some(controls_text),
        };
        let v4 = Entry {
            client: Some("255.10.0.7:65535".parse().unwrap()),
            endpoint: Some("1.22.133.4:0".parse().unwrap()),
            ..entry()
        };
        for e in [worst, entry(), v4, Entry::default()] {
            // Written after a line already there, into room left over from a longer one.
            let (mut a, mut b) = (b"x\n".to_vec(), vec![b'?'; 4096]);
            let a_end = unrolled.format_into(&mut a, 2, &e).unwrap();
            let b_end = looped.format_into(&mut b, 0, &e).unwrap();
            assert_eq!(&a[2..a_end], &b[..b_end]);
            assert!(a.len() >= a_end && b.len() >= b_end);
            assert_eq!(b[b_end - 1], b'\n');
            let v: serde_json::Value = serde_json::from_slice(&b[..b_end]).unwrap();
            assert_eq!(v["status"], e.status);
            if let Some(client) = e.client {
                assert_eq!(v["client"], client.to_string());
                assert_eq!(v["endpoint"], e.endpoint.unwrap().to_string());
            }
        }
    }

    #[test]
    fn lines_are_json_with_the_chosen_fields_in_order() {
        let log = AccessLog::start(&config(
            "{fields: [status, method, path, time, duration, failure]}",
        ))
        .unwrap();
        let line = log.format(&entry());
        assert_eq!(
            line,
            r#"{"status":200,"method":"GET","path":"/a\"b\n","time":"2023-11-14T22:13:20.123Z","duration":0.001500}"#
        );
        let v: serde_json::Value = serde_json::from_str(&log.format(&entry())).unwrap();
        assert_eq!(v["path"], "/a\"b\n", "hostile text stays one valid line");
    }

    #[test]
    fn a_file_log_gets_every_accepted_line_and_rotates_by_size() {
        let dir = fresh_dir("rotate");
        let path = dir.join("sub/access.log");
        let log = AccessLog::start(&config(&format!(
            "{{path: {}, rotate: {{max_size: 2KiB, keep: 2, compress: true}}}}",
            path.display()
        )))
        .unwrap();
        for _ in 0..200 {
            log.log(&entry());
        }
        log.close(Duration::from_secs(10));
        assert_eq!(log.written() + log.dropped(), 200);
        assert_eq!(log.dropped(), 0, "the buffer (8192) holds 200 lines");
        let mut names: Vec<String> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["access.log", "access.log.1.gz", "access.log.2.gz"]);
        let current = std::fs::read_to_string(&path).unwrap();
        for line in current.lines() {
            serde_json::from_str::<serde_json::Value>(line).expect("whole JSON lines");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_full_buffer_drops_and_counts_instead_of_blocking() {
        let dir = fresh_dir("full");
        let path = dir.join("access.log");
        let log =
            AccessLog::start(&config(&format!("{{path: {}, buffer: 1}}", path.display()))).unwrap();
        for _ in 0..10_000 {
            log.log(&entry());
        }
        log.close(Duration::from_secs(10));
        assert!(
            log.dropped() > 0,
            "a one-line buffer cannot keep up with 10 000 lines"
        );
        assert_eq!(
            log.written() + log.dropped(),
            10_000,
            "every line is written or counted"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn lines_from_many_threads_are_each_written_once_or_counted() {
        let dir = fresh_dir("threads");
        let path = dir.join("access.log");
        let log = AccessLog::start(&config(&format!(
            "{{path: {}, buffer: 500}}",
            path.display()
        )))
        .unwrap();
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    for _ in 0..3000 {
                        log.log(&entry());
                    }
                });
            }
        });
        log.close(Duration::from_secs(10));
        // Logging after close is counted, never lost silently.
        log.log(&entry());
        assert_eq!(log.written() + log.dropped(), 12_001);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count() as u64, log.written());
        for line in text.lines() {
            serde_json::from_str::<serde_json::Value>(line).expect("whole JSON lines");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn sampling_keeps_errors() {
        let dir = fresh_dir("sample");
        let path = dir.join("access.log");
        let log = AccessLog::start(&config(&format!(
            "{{path: {}, sample: 0%}}",
            path.display()
        )))
        .unwrap();
        log.log(&entry());
        log.log(&Entry {
            status: 503,
            failure: Some("no-endpoint"),
            ..entry()
        });
        log.close(Duration::from_secs(10));
        assert_eq!(log.written(), 1, "only the error");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"failure\":\"no-endpoint\""), "{text}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_file_log_rotates_by_age() {
        let dir = fresh_dir("age");
        let path = dir.join("access.log");
        let log = AccessLog::start(&config(&format!(
            "{{path: {}, rotate: {{max_age: 1s, compress: false}}}}",
            path.display()
        )))
        .unwrap();
        log.log(&entry());
        let rotated = dir.join("access.log.1");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !rotated.exists() {
            assert!(Instant::now() < deadline, "never rotated by age");
            std::thread::sleep(Duration::from_millis(50));
        }
        log.log(&entry());
        log.close(Duration::from_secs(10));
        assert_eq!(
            std::fs::read_to_string(&rotated).unwrap().lines().count(),
            1
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_unwritable_path_is_an_error_not_a_panic() {
        let err = AccessLog::start(&config("{path: /proc/steady-cannot/access.log}")).unwrap_err();
        assert!(!err.to_string().is_empty());
    }
}
