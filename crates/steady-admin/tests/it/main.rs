//! steady-admin's integration tests, one binary: each module was a test file of its own.
//! One binary links the dependencies once instead of once per file.

mod api;
mod common;
mod dashboard;
mod events;
mod prometheus;
mod slo;
