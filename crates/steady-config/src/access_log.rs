//! The access log (`access_log`): one JSON line per request, to stdout or to a file
//! rotated by size and age with a retention count.

use std::time::Duration;

use serde::Deserialize;

use crate::limits::Percent;
use crate::units::{de_opt_duration, ByteSize};

/// Where and what the access log writes.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AccessLog {
    /// `stdout`, or a file path (relative to the working directory).
    #[serde(default = "defaults::path")]
    pub path: String,
    /// Fields written, in this order; default: all of them.
    #[serde(default)]
    pub fields: Option<Vec<Field>>,
    /// Share of requests logged; errors are always logged when `always_log_errors`.
    #[serde(default = "defaults::sample")]
    pub sample: Percent,
    /// Log every 5xx and every failure steady produced itself, whatever `sample` says.
    #[serde(default = "defaults::always_log_errors")]
    pub always_log_errors: bool,
    /// Lines each worker thread holds for the writer thread (which empties them every
    /// 10 ms); when full, lines are dropped and counted.
    #[serde(default = "defaults::buffer")]
    pub buffer: usize,
    /// Rotation of a file log.
    #[serde(default)]
    pub rotate: Option<Rotate>,
}

/// When a file log is rotated and how many old files are kept.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Rotate {
    /// Rotate once the file is larger than this.
    #[serde(default = "defaults::max_size")]
    pub max_size: ByteSize,
    /// Rotate once the file is older than this (none: size only).
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub max_age: Option<Duration>,
    /// Rotated files kept (`access.log.1` … `access.log.N`); older ones are deleted.
    #[serde(default = "defaults::keep")]
    pub keep: usize,
    /// Gzip rotated files (`access.log.1.gz`).
    #[serde(default = "defaults::compress")]
    pub compress: bool,
}

/// One field of an access-log line.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Field {
    /// When the request arrived, RFC 3339 in UTC with milliseconds.
    Time,
    /// W3C trace id (32 hex digits).
    TraceId,
    /// The request's span id (16 hex digits).
    SpanId,
    /// `X-Request-Id` as sent upstream.
    RequestId,
    /// Client address (`ip:port` of the TCP peer).
    Client,
    /// Request method.
    Method,
    /// Host the request named.
    Host,
    /// Path (without the query).
    Path,
    /// Status sent to the client.
    Status,
    /// Route name.
    Route,
    /// Upstream name.
    Upstream,
    /// Endpoint address of the last attempt.
    Endpoint,
    /// Upstream attempts (retries and hedges included).
    Attempts,
    /// Request body bytes read from the client.
    BytesIn,
    /// Response body bytes sent to the client.
    BytesOut,
    /// Seconds from request head to the end of the response body.
    Duration,
    /// Seconds spent waiting on upstreams for response heads.
    UpstreamDuration,
    /// Seconds from request head to the response head (time to first byte).
    Ttfb,
    /// steady's failure reason (`connect`, `timeout`, `no-endpoint`, `overload`, ...).
    Failure,
}

impl Field {
    /// Every field, in the default order.
    pub const ALL: [Field; 19] = [
        Field::Time,
        Field::TraceId,
        Field::SpanId,
        Field::RequestId,
        Field::Client,
        Field::Method,
        Field::Host,
        Field::Path,
        Field::Status,
        Field::Route,
        Field::Upstream,
        Field::Endpoint,
        Field::Attempts,
        Field::BytesIn,
        Field::BytesOut,
        Field::Duration,
        Field::UpstreamDuration,
        Field::Ttfb,
        Field::Failure,
    ];

    /// The JSON key.
    pub fn key(self) -> &'static str {
        match self {
            Field::Time => "time",
            Field::TraceId => "trace_id",
            Field::SpanId => "span_id",
            Field::RequestId => "request_id",
            Field::Client => "client",
            Field::Method => "method",
            Field::Host => "host",
            Field::Path => "path",
            Field::Status => "status",
            Field::Route => "route",
            Field::Upstream => "upstream",
            Field::Endpoint => "endpoint",
            Field::Attempts => "attempts",
            Field::BytesIn => "bytes_in",
            Field::BytesOut => "bytes_out",
            Field::Duration => "duration",
            Field::UpstreamDuration => "upstream_duration",
            Field::Ttfb => "ttfb",
            Field::Failure => "failure",
        }
    }
}

impl AccessLog {
    /// Whether it writes to standard output.
    pub fn is_stdout(&self) -> bool {
        self.path == "stdout" || self.path == "-"
    }

    /// The fields written, in order (a field listed twice is written once, where it
    /// is first listed; `problems` reports it).
    pub fn fields(&self) -> Vec<Field> {
        let mut fields = self.fields.clone().unwrap_or_else(|| Field::ALL.to_vec());
        let mut seen = Vec::new();
        fields.retain(|f| {
            let first = !seen.contains(f);
            seen.push(*f);
            first
        });
        fields
    }

    /// Every range problem, as `(field, message)`.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if !(self.sample.0.is_finite() && (0.0..=1.0).contains(&self.sample.0)) {
            out.push(("sample", "must be between 0% and 100%".to_string()));
        }
        if self.buffer == 0 {
            out.push(("buffer", "must be at least 1 line".to_string()));
        }
        if self.path.trim().is_empty() {
            out.push(("path", "must be `stdout` or a file path".to_string()));
        }
        for (i, field) in self.fields.iter().flatten().enumerate() {
            let listed = self.fields.iter().flatten();
            if listed.take(i).any(|f| f == field) {
                out.push((
                    "fields",
                    format!("`{}` is listed more than once", field.key()),
                ));
            }
        }
        if let Some(rotate) = &self.rotate {
            if self.is_stdout() {
                out.push(("rotate", "applies only to a file `path`".to_string()));
            }
            if rotate.max_size.bytes() == 0 {
                out.push(("rotate", "`max_size` must be greater than 0".to_string()));
            }
            if rotate.max_age == Some(Duration::ZERO) {
                out.push(("rotate", "`max_age` must be greater than 0s".to_string()));
            }
        }
        out
    }
}

mod defaults {
    use super::*;

    pub(super) fn path() -> String {
        "stdout".to_string()
    }
    pub(super) fn sample() -> Percent {
        Percent(1.0)
    }
    pub(super) fn always_log_errors() -> bool {
        true
    }
    pub(super) fn buffer() -> usize {
        8192
    }
    pub(super) fn max_size() -> ByteSize {
        ByteSize(100 * 1024 * 1024)
    }
    pub(super) fn keep() -> usize {
        7
    }
    pub(super) fn compress() -> bool {
        true
    }
}
