//! Helpers shared by the config tests: parse a file that must fail, and look for a
//! diagnostic in what it reports.
#![allow(dead_code)]

use steady_config::{parse, Diagnostic};

/// A listener `web`, an upstream `app` and a route `api` between them.
pub const BASE: &str = "listeners: [{name: web, bind: 127.0.0.1:8080}]\n\
upstreams: [{name: app, endpoints: [{address: 127.0.0.1:9001}]}]\n\
routes: [{name: api, listener: web, upstream: app}]\n";

/// The diagnostics of `yaml`, which must not parse, as printed.
pub fn errors_raw(yaml: &str) -> Vec<String> {
    match parse(yaml, "steady.yaml") {
        Ok(config) => panic!("expected errors, got {config:#?}"),
        Err(diagnostics) => diagnostics.0.iter().map(Diagnostic::to_string).collect(),
    }
}

/// Fails unless one of `errors` contains `needle`.
#[track_caller]
pub fn has(errors: &[String], needle: &str) {
    assert!(
        errors.iter().any(|e| e.contains(needle)),
        "no {needle:?} in:\n{}",
        errors.join("\n")
    );
}
