//! Active health checks for steady: probes every endpoint of an upstream on a timer
//! (HTTP/1.1, TCP or gRPC), applies rise/fall thresholds and takes failing or draining
//! endpoints out of balancing via [`Endpoint::set_available`](steady_balance::Endpoint::set_available).
//!
//! Endpoints may also report their load and ask to be drained in the HTTP check's
//! response (`X-Steady-Load`, `X-Steady-Drain`; see the crate README and [`signals`]).
//!
//! ```no_run
//! # async fn wire(endpoints: Vec<std::sync::Arc<steady_balance::Endpoint>>) {
//! use steady_health::{ActiveHealth, Check};
//! use tokio_util::sync::CancellationToken;
//!
//! let config: ActiveHealth = serde_json::from_str(r#"{"tcp": {}, "interval": "2s"}"#).unwrap();
//! config.validate().expect("valid health config");
//! let shutdown = CancellationToken::new();
//! let span = tracing::info_span!("health", upstream = "api");
//! let handle = span.in_scope(|| steady_health::spawn(endpoints, config, shutdown.clone()));
//! // ... later: handle.first_round_done() for /readyz, handle.reports() for the admin API.
//! shutdown.cancel();
//! handle.stopped().await;
//! # }
//! ```
//!
//! # Layout
//!
//! - [`config`]: [`ActiveHealth`] and [`Check`], the `active:` YAML block with defaults
//!   and [`ActiveHealth::validate`]; it lives in `steady_config::health` with the rest of
//!   the schema and is re-exported here.
//! - [`state`]: [`HealthState`], the pure rise/fall threshold machine returning
//!   [`Transition`]s (property-tested).
//! - [`signals`]: load and drain reports read from response headers or a JSON body.
//! - [`grpc`]: the hand-written `grpc.health.v1` request encoder and response decoder.
//! - [`probe`]: one probe over a fresh connection, bounded by the timeout.
//! - [`runner`]: [`Checker`] (probe + state + availability for one endpoint) and
//!   [`spawn`], which runs one jittered task per endpoint behind a [`HealthHandle`];
//!   [`spawn_resuming`] does the same on a config reload, carrying over the reports of
//!   endpoints that stay.

pub mod grpc;
pub mod probe;
pub mod runner;
pub mod signals;
pub mod state;

pub use probe::{probe, ProbeError, ProbeOutcome};
pub use runner::{spawn, spawn_resuming, Checker, HealthHandle, HealthReport};
pub use signals::Signals;
pub use state::{HealthState, Transition};
pub use steady_config::health as config;
pub use steady_config::health::{ActiveHealth, Check, ConfigError, Initial};
