//! The data path of steady: listeners, HTTP/1.1 + HTTP/2 and TCP proxying, routing and
//! forwarding to balanced, pooled upstream connections.
//!
//! A request flows `gateway` (accept) → `conn` (client timeouts) → `server` (HTTP/1.1
//! heads in, responses out) → `http` (route, pick,
//! forward, answer) → back to the client, streaming bodies both ways. TCP listeners hand
//! whole connections to `tcp`.
//!
//! # Layout
//!
//! - [`gateway`]: the running [`Gateway`]: accept loops, client connections, draining
//!   on shutdown.
//! - [`reload`]: builds listeners, routes and upstreams from a [`steady_config::Config`]
//!   and hot-reloads a new one, keeping sockets, connections and endpoint state.
//! - [`conn`]: per-connection header-read (408) and idle timeouts around the socket.
//! - [`server`]: steady's HTTP/1.1 server: a client connection's loop (request heads
//!   parsed by httparse, responses encoded with their framing, request bodies read by
//!   their reader, `100-continue`, upgrades handed to a tunnel; idle connections lend
//!   their buffers to a per-worker stock and most give up their request's box). HTTP/2
//!   is hyper's.
//! - `batch`: write batching: a write to a client or an upstream waits once at the
//!   back of the run queue, so the writes of one turn leave together.
//! - [`tls`]: rustls acceptor for `https` listeners (ALPN h2, http/1.1).
//! - [`http`]: the request path; one function per phase.
//! - [`events`]: the bounded ring of recent state changes (health flips, ejections,
//!   readmissions, reloads, drains) behind the admin API's `/api/events`.
//! - [`fault`]: fault injection per route (delays and aborts), before admission.
//! - [`admit`]: the admit phase: a route's rate limits (local and Redis-backed), the
//!   request's priority, and the upstream's adaptive concurrency limit.
//! - [`hedge`]: when a route hedges a slow attempt (a fixed delay, or a percentile of
//!   its recent latency); `http` runs the race.
//! - [`latency`]: lock-free HDR-style latency histograms with recent windows,
//!   percentiles, Prometheus buckets and `.hgrm` output.
//! - [`route_stats`]: per-route requests by method and status class, failures by
//!   reason and the latency histogram, exported at scrape time.
//! - [`slo`]: SLOs in the gateway: per-route SLI taps on the request path, the
//!   once-a-second tick that feeds `steady-slo`'s engines and alerts, the state file,
//!   `steady_slo_*` metrics and the views of `/api/slos`.
//! - [`router`]: route matching on host, path, headers and method.
//! - [`upstream`]: endpoint sets per upstream, DNS re-resolution, hash keys, the pooled
//!   client.
//! - [`breakers`]: an upstream's circuit breakers (connections, pending, requests).
//! - [`process`]: process CPU, memory, file descriptor and thread metrics.
//! - [`pool`]: steady's own per-worker pool of HTTP/1.1 upstream connections.
//! - [`h1`]: the HTTP/1.1 client side of an exchange, run by the request's own task:
//!   request head out, response head parsed (httparse; its fields kept as received,
//!   not as a map), body framed and de-chunked.
//! - [`headers`]: the request fields the path reads, found in one pass
//!   (`RequestFields`); hop-by-hop removal; `X-Forwarded-*`, `X-Request-Id` and the
//!   trace context an upstream gets (`Added`, written into an HTTP/1.1 head by `h1`).
//! - [`body`]: streaming request/response bodies and the request size limit.
//! - [`error`]: the request-path error and the one function that maps it to a response.
//! - [`metrics`]: Prometheus series of the request path.
//! - [`tcp`]: L4 proxying.
//! - `text`: hex, integers and addresses formatted into byte buffers for headers and
//!   log lines, without `core::fmt`.
//! - `timer`: timers polled once per waiting task (the client connection's deadlines,
//!   the exchange's `Deadline`, the `PauseLimit` of upstream response bodies).
//! - `clock`: the wall-clock time of a request's arrival, derived from its monotonic
//!   instant (one clock read per request, not two).
//! - [`trace`]: W3C Trace Context: continue or start a trace, a span id per attempt,
//!   the head sampling decision.
//! - [`otel`]: span export: a span per request and per attempt recorded cheaply, kept
//!   by the head decision or the tail rules (errors, slow requests) when the request
//!   ends, and sent over OTLP (gRPC or HTTP/protobuf) in batches from a bounded queue.
//! - [`worker`]: which thread-per-core worker the current thread is.

pub mod access_log;
pub mod admit;
mod batch;
pub mod body;
pub mod breakers;
mod clock;
pub mod conn;
pub mod error;
pub mod events;
pub mod fault;
pub mod gateway;
pub mod h1;
pub mod headers;
pub mod hedge;
pub mod http;
pub mod latency;
pub mod metrics;
pub mod otel;
pub mod pool;
pub mod process;
pub mod reload;
pub mod route_stats;
pub mod router;
pub mod server;
pub mod slo;
pub mod tcp;
mod text;
mod timer;
pub mod tls;
pub mod trace;
pub mod upstream;
pub mod worker;

pub use events::{Event, EventKind, Events};
pub use gateway::{Gateway, StartError};
pub use reload::{ReloadError, ReloadSummary};
