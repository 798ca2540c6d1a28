//! steady-balance's integration tests, one binary: each module was a test file of its own.
//! One binary links the dependencies once instead of once per file.

mod availability;
mod balancers;
mod common;
mod endpoint;
mod hashing;
mod locality;
mod outlier;
