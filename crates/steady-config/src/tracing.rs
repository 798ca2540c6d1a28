//! Span export (`tracing`): where spans go over OTLP, which requests are kept (a head
//! ratio plus tail rules for errors and slow requests), and the export batching.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::limits::Percent;
use crate::units::{de_duration, de_opt_duration};

/// Span export over OTLP.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Tracing {
    /// The OTLP receiver (a collector or a tracing backend).
    pub otlp: Otlp,
    /// Share of the traces steady starts that are sampled (by trace id); a client's
    /// `traceparent` decides for the traces it continues.
    #[serde(default = "defaults::sample")]
    pub sample: Percent,
    /// Export every request answered 5xx or failed by steady, whatever `sample` says.
    #[serde(default = "defaults::always_sample_errors")]
    pub always_sample_errors: bool,
    /// Export every request slower than this (head to end of response body); none: off.
    #[serde(default, deserialize_with = "de_opt_duration")]
    pub slow_threshold: Option<Duration>,
    /// `service.name` of the exported resource.
    #[serde(default = "defaults::service_name")]
    pub service_name: String,
    /// How spans wait for export and are grouped.
    #[serde(default)]
    pub batch: Batch,
}

/// Where and how spans are sent.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Otlp {
    /// `http://host:port`, or `https://host:port` for TLS; for `protocol: http` a URL
    /// without a path gets `/v1/traces`.
    pub endpoint: String,
    /// `grpc` (OTLP/gRPC) or `http` (OTLP/HTTP with protobuf bodies).
    #[serde(default)]
    pub protocol: Protocol,
    /// Longest wait for one export; a receiver slower than this loses that batch.
    #[serde(default = "defaults::timeout", deserialize_with = "de_duration")]
    pub timeout: Duration,
    /// Extra request headers (gRPC metadata), such as an API key.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Extra headers whose values are read from environment variables at start:
    /// header name to variable name.
    #[serde(default)]
    pub headers_env: BTreeMap<String, String>,
    /// TLS settings for an `https://` endpoint.
    #[serde(default)]
    pub tls: Option<OtlpTls>,
}

/// How an `https://` receiver is verified.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OtlpTls {
    /// PEM file of CA certificates trusted as well as the system's (a private CA); a
    /// relative path is resolved against the config file's directory.
    #[serde(default)]
    pub ca_file: Option<std::path::PathBuf>,
}

/// The OTLP transport.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// OTLP/gRPC (`TraceService/Export`), port 4317 by convention.
    #[default]
    Grpc,
    /// OTLP/HTTP, binary protobuf `POST /v1/traces`, port 4318 by convention.
    Http,
}

/// The export queue and batches.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Batch {
    /// Spans waiting for export; when full, new spans are dropped and counted.
    #[serde(default = "defaults::max_queue")]
    pub max_queue: usize,
    /// Most spans in one export request.
    #[serde(default = "defaults::max_batch")]
    pub max_batch: usize,
    /// Longest time a span waits for its batch to fill.
    #[serde(default = "defaults::interval", deserialize_with = "de_duration")]
    pub interval: Duration,
}

impl Default for Batch {
    fn default() -> Self {
        Batch {
            max_queue: defaults::max_queue(),
            max_batch: defaults::max_batch(),
            interval: defaults::interval(),
        }
    }
}

impl Otlp {
    /// Whether the endpoint is `https://`.
    pub fn is_tls(&self) -> bool {
        self.endpoint.trim().starts_with("https://")
    }

    /// The URL spans are sent to: as written for gRPC; for HTTP, `/v1/traces` added
    /// when the endpoint has no path (as `OTEL_EXPORTER_OTLP_ENDPOINT` is treated).
    pub fn url(&self) -> String {
        let endpoint = self.endpoint.trim();
        match self.protocol {
            Protocol::Grpc => endpoint.to_string(),
            Protocol::Http => match url::Url::parse(endpoint) {
                Ok(url) if url.path() == "/" && !endpoint.ends_with('/') => {
                    format!("{endpoint}/v1/traces")
                }
                Ok(url) if url.path() == "/" => format!("{endpoint}v1/traces"),
                _ => endpoint.to_string(),
            },
        }
    }
}

impl Tracing {
    /// Every range problem, as `(field, message)`.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if !(self.sample.0.is_finite() && (0.0..=1.0).contains(&self.sample.0)) {
            out.push(("sample", "must be between 0% and 100%".to_string()));
        }
        if self.slow_threshold == Some(Duration::ZERO) {
            out.push(("slow_threshold", "must be greater than 0s".to_string()));
        }
        if self.service_name.trim().is_empty() {
            out.push(("service_name", "must not be empty".to_string()));
        }
        if let Err(message) = check_endpoint(&self.otlp.endpoint) {
            out.push(("otlp", message));
        }
        if self.otlp.tls.is_some() && !self.otlp.is_tls() {
            out.push((
                "otlp",
                "`tls` applies only to an `https://` endpoint".to_string(),
            ));
        }
        if self.otlp.timeout.is_zero() {
            out.push(("otlp", "`timeout` must be greater than 0s".to_string()));
        }
        for (name, value) in &self.otlp.headers {
            if let Err(message) = check_header(name, Some(value)) {
                out.push(("otlp", message));
            }
        }
        for (name, var) in &self.otlp.headers_env {
            if let Err(message) = check_header(name, None) {
                out.push(("otlp", message));
            }
            if var.trim().is_empty() {
                out.push((
                    "otlp",
                    format!("`headers_env.{name}` must name an environment variable"),
                ));
            }
        }
        let batch = &self.batch;
        if batch.max_queue == 0 {
            out.push(("batch", "`max_queue` must be at least 1 span".to_string()));
        }
        if batch.max_batch == 0 {
            out.push(("batch", "`max_batch` must be at least 1 span".to_string()));
        } else if batch.max_batch > batch.max_queue {
            out.push((
                "batch",
                "`max_batch` must not be larger than `max_queue`".to_string(),
            ));
        }
        if batch.interval.is_zero() {
            out.push(("batch", "`interval` must be greater than 0s".to_string()));
        }
        out
    }
}

/// Checks that `endpoint` is an `http(s)://host:port` URL the exporters can use.
fn check_endpoint(endpoint: &str) -> Result<(), String> {
    let hint = || {
        format!(
            "`endpoint: {endpoint}` is not an OTLP endpoint; write it like `http://127.0.0.1:4317`"
        )
    };
    let url = url::Url::parse(endpoint.trim()).map_err(|e| format!("{}: {e}", hint()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(hint());
    }
    if url.host_str().is_none_or(str::is_empty) || url.port_or_known_default() == Some(0) {
        return Err(hint());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(hint());
    }
    Ok(())
}

fn check_header(name: &str, value: Option<&str>) -> Result<(), String> {
    if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
        return Err(format!("`{name}` is not a header name"));
    }
    if let Some(value) = value {
        if http::HeaderValue::from_str(value).is_err() {
            return Err(format!(
                "the value of header `{name}` is not a header value"
            ));
        }
    }
    Ok(())
}

mod defaults {
    use super::*;

    pub(super) fn sample() -> Percent {
        Percent(1.0)
    }
    pub(super) fn always_sample_errors() -> bool {
        true
    }
    pub(super) fn service_name() -> String {
        "steady".to_string()
    }
    pub(super) fn timeout() -> Duration {
        Duration::from_secs(10)
    }
    pub(super) fn max_queue() -> usize {
        2048
    }
    pub(super) fn max_batch() -> usize {
        512
    }
    pub(super) fn interval() -> Duration {
        Duration::from_secs(5)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn otlp(endpoint: &str, protocol: Protocol) -> Otlp {
        Otlp {
            endpoint: endpoint.to_string(),
            protocol,
            timeout: defaults::timeout(),
            headers: BTreeMap::new(),
            headers_env: BTreeMap::new(),
            tls: None,
        }
    }

    #[test]
    fn http_endpoints_without_a_path_get_the_traces_path() {
        let url = |e| otlp(e, Protocol::Http).url();
        assert_eq!(url("http://c:4318"), "http://c:4318/v1/traces");
        assert_eq!(url("http://c:4318/"), "http://c:4318/v1/traces");
        assert_eq!(
            url("http://c:4318/otlp/v1/traces"),
            "http://c:4318/otlp/v1/traces"
        );
        assert_eq!(otlp("http://c:4317", Protocol::Grpc).url(), "http://c:4317");
    }

    #[test]
    fn endpoints_must_be_http_or_https_urls() {
        assert!(check_endpoint("http://127.0.0.1:4317").is_ok());
        assert!(check_endpoint("http://collector").is_ok());
        assert!(check_endpoint("https://collector.example:4317").is_ok());
        assert!(otlp("https://c:4317", Protocol::Grpc).is_tls());
        assert!(!otlp("http://c:4317", Protocol::Grpc).is_tls());
        for bad in [
            "127.0.0.1:4317",
            "ftp://c:21",
            "http://",
            "not a url",
            "http://c:0",
        ] {
            assert!(check_endpoint(bad).is_err(), "{bad}");
        }
    }
}
