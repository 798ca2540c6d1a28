//! steady-proxy's integration tests, one binary: each module was a test file of its own.
//! One binary links the dependencies once instead of once per file.

mod access_log;
mod admission;
mod breakers;
mod business;
mod chaos;
mod common;
mod fault;
mod global_limit;
mod hedging;
mod hostile;
mod locality;
mod otlp;
mod outlier;
mod promtool;
mod proxy;
mod reload;
mod retries;
mod upstream_h1;
