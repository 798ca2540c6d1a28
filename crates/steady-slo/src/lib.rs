//! The SLO engine of steady: error budgets and multi-window multi-burn-rate alerts,
//! computed in process.
//!
//! The proxy's *record* phase (see `docs/ARCHITECTURE.md`) feeds each route's good and
//! total counts to an [`Slo`] with [`Slo::record`] (e.g. once a second); a background
//! task calls [`Slo::evaluate`] periodically and hands the returned [`AlertEvent`]s to
//! notifiers; the admin API reads [`Slo::status`] (or [`Slo::burn_rate`],
//! [`Slo::budget_remaining`] and [`Slo::availability`] one by one). The state file is [`Slo::save`] / [`Slo::load`].
//!
//! Everything is pure: time comes in as seconds, the engine never reads a clock and
//! does no I/O (saving returns bytes).
//!
//! **Latency SLIs** need nothing special: record `good` as the count of requests under
//! the threshold and `total` as all requests. An availability SLI records good as the
//! requests that did not fail.
//!
//! **Alerts.** Each burn-rate rule ([`BurnRateRule`]) and the no-traffic signal is one
//! alert with its own [`AlertState`]; [`Slo::evaluate`] reports each start and end once.
//! When several fire, [`Slo::worst`] is the one to show (a page outranks a ticket).
//!
//! ```
//! use steady_slo::{Severity, Slo, SloConfig, Transition};
//!
//! let mut slo = Slo::try_new(SloConfig::new("checkout-availability", 0.999)).unwrap();
//! let t0 = 1_700_000_000;
//! // Ten seconds of traffic at 2% errors: burn rate 20 in every window.
//! slo.record(t0 + 10, 980, 1000);
//! assert!((slo.burn_rate(t0 + 10, 3600).unwrap() - 20.0).abs() < 1e-9);
//! let events = slo.evaluate(t0 + 10);
//! assert!(events
//!     .iter()
//!     .any(|e| e.alert == "page-1h-5m" && e.transition == Transition::Firing));
//! assert_eq!(slo.worst(), Some(Severity::Page));
//! // The state survives a restart.
//! let back = Slo::load(slo.config().clone(), &slo.save()).unwrap();
//! assert_eq!(back.worst(), Some(Severity::Page));
//! ```
//!
//! # Layout
//!
//! - [`config`]: [`SloConfig`] (objective, period, rules, minimum events, no-traffic
//!   delay) with the Google SRE Workbook rules as defaults, and its validation.
//! - [`buckets`]: good/total counts in three fixed rings of 10 s, 5 min and 1 h
//!   buckets; the memory bound and each window's precision are documented there.
//! - [`alert`]: alert states and the [`AlertEvent`]s notifiers receive.
//! - [`anomaly`]: ticket-level alerts when traffic, error rate or latency leave an
//!   EWMA band around their recent baseline ([`anomaly::Watch`]).
//! - [`slo`]: [`Slo`], which ties them together: recording, queries, evaluation and
//!   the saved state.
//! - [`rules`]: the same SLOs as Prometheus recording and alerting rules (Sloth's
//!   names and shape) over the fleet's `steady_slo_*` counters, for `steady slo rules`.

pub mod alert;
pub mod anomaly;
pub mod buckets;
pub mod config;
pub mod rules;
pub mod slo;

pub use alert::{AlertEvent, AlertState, Signal, Transition, WindowBurn, NO_TRAFFIC};
pub use buckets::Counts;
pub use config::{BurnRateRule, ConfigError, Severity, SloConfig};
pub use slo::{AlertStatus, Slo, SloStatus, StateError};
