//! Admission control for steady: who may send how much, and how much the upstream can
//! take right now.
//!
//! The proxy's *admit* phase (see `docs/ARCHITECTURE.md`) asks this crate two questions
//! per request, in order: may this key send another request ([`rate`], [`global`]), and
//! is there room at the upstream ([`concurrency`])? Both answer without blocking on I/O
//! in the common case.
//!
//! # Layout
//!
//! - [`rate`]: per-instance rate limits by key (GCRA, via the `governor` crate), memory
//!   bounded, idle keys evicted.
//! - [`global`]: limits shared by every steady instance through Redis (an atomic Lua
//!   token bucket), with local leases so most requests never wait on Redis, and an
//!   explicit fallback when Redis is unreachable.
//! - [`concurrency`]: the adaptive concurrency limit of one upstream (a gradient over
//!   the measured minimum round-trip time, as Envoy's adaptive concurrency filter does)
//!   with a small queue ordered by [`Priority`].

pub mod concurrency;
pub mod global;
pub mod rate;

pub use concurrency::{AdaptiveConfig, ConcurrencyLimiter, Permit, Priority, Shed};
pub use global::{GlobalDecision, GlobalLimit, RedisOptions, RedisStore, Unavailable};
pub use rate::{Decision, LocalLimiter, Quota};
