//! `steady.yaml`: its schema, defaults, units, and validation that reports
//! every problem with file, line and column.
//!
//! ```
//! let config = steady_config::parse(steady_config::EXAMPLE, "steady.yaml").unwrap();
//! assert_eq!(config.routes_for("web").count(), 1);
//!
//! let err = steady_config::parse("listeners: [{nmae: web}]", "steady.yaml").unwrap_err();
//! assert!(err.to_string().contains("steady.yaml:1:14: error: listeners[0].nmae"));
//! ```
//!
//! # Layout
//!
//! - [`schema`]: the serde types of `steady.yaml` (the contract with the other
//!   crates), their defaults, and lookup helpers such as [`Config::routes_for`].
//! - [`access_log`]: the JSON access log (fields, sampling, file rotation).
//! - [`health`]: the `health.active` block (HTTP/TCP/gRPC probes, thresholds) and its
//!   checks; `steady-health` runs it.
//! - [`fault`]: fault injection per route (delay or abort a share of requests).
//! - [`limits`]: rate limits, the shared Redis, adaptive concurrency and priorities;
//!   `steady-limit` enforces them.
//! - [`retry`]: the retry policy of a route (conditions, attempts, budget, back-off).
//! - [`slo`]: SLOs (`slos`), their alert routing (`alerts`), the `notifiers` and the
//!   state file (`slo_state`).
//! - [`tracing`](mod@tracing): span export over OTLP (endpoint, protocol, sampling
//!   ratio, tail rules for errors and slow requests, batching).
//! - [`units`]: durations (`250ms`, `1m30s`) and byte sizes (`64KiB`, `10MB`).
//! - `parse`: text to [`Config`]; recovers after each serde error so that all
//!   of them are reported ([`parse()`], [`load`]).
//! - [`validate`](mod@validate): semantic checks (names, references, addresses,
//!   ranges), also usable on a config built in code.
//! - `locate`: maps field paths like `routes[0].match.headers` to line and column.
//! - `diagnostic`: [`Diagnostic`] and [`Diagnostics`], printed compiler-style.
//!
//! The full reference of every field is `docs/configuration.md`.

pub mod access_log;
mod diagnostic;
pub mod fault;
pub mod health;
pub mod limits;
mod locate;
mod parse;
pub mod retry;
pub mod schema;
pub mod slo;
pub mod tracing;
pub mod units;
pub mod validate;

pub use diagnostic::{Diagnostic, Diagnostics};
pub use parse::{load, parse};
pub use schema::*;
pub use units::ByteSize;
pub use validate::{validate, Problem};

/// A documented example `steady.yaml`; it parses and validates as written.
pub const EXAMPLE: &str = r#"# steady.yaml: one HTTP listener sending /v1 API traffic to three backends.
runtime:
  workers: 2              # worker threads; default one per core (benchmarks use 1)
admin:
  bind: 127.0.0.1:9901    # /livez, /readyz, /metrics and the JSON API
listeners:
  - name: web
    bind: 127.0.0.1:8080
    protocol: http          # http (HTTP/1.1 and h2c), https (with tls: {cert, key}; h2 via ALPN), tcp
routes:
  - name: api
    listener: web
    match: {host: "api.example.com", path_prefix: /v1, headers: {x-tenant: blue}, methods: [GET, POST]}
    upstream: app
    timeout: 15s
upstreams:
  - name: app
    balance: round-robin
    endpoints:
      - address: 127.0.0.1:9001
      - address: 127.0.0.1:9002
        weight: 2
      - address: backend.internal:9003   # DNS names re-resolved periodically
"#;
