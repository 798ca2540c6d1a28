//! One probe of one endpoint over a fresh connection: HTTP/1.1, TCP or gRPC (h2c).
//!
//! Every probe opens its own connection and drops it afterwards, so it tests what a new
//! proxied connection would meet, and nothing outlives the probe's timeout.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONNECTION, CONTENT_TYPE, HOST, USER_AGENT};
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Empty, Full, Limited};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use crate::config::Check;
use crate::grpc;
use crate::signals::{self, Signals};

/// Most response body bytes a probe reads (for `body_contains`, JSON, gRPC).
pub const MAX_BODY: usize = 64 * 1024;

/// `User-Agent` of every probe, so endpoints can tell checks from traffic.
pub const USER_AGENT_VALUE: &str = "steady-health";

/// The result of one probe, plus what the endpoint reported about itself.
#[derive(Debug)]
pub struct ProbeOutcome {
    /// `Ok` when the check passed.
    pub result: Result<(), ProbeError>,
    /// Load and drain reports; only HTTP responses carry them (even failing ones).
    pub signals: Signals,
}

/// Why a probe failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProbeError {
    /// The TCP connection was not established.
    #[error("connect: {0}")]
    Connect(#[source] std::io::Error),
    /// The whole probe took longer than the timeout.
    #[error("no answer within {}", humantime::format_duration(*.0))]
    Timeout(Duration),
    /// The request could not be built from the configured values.
    #[error("bad request: {0}")]
    Request(#[source] http::Error),
    /// The HTTP exchange broke (handshake, reset, malformed response).
    #[error("http: {0}")]
    Http(#[source] hyper::Error),
    /// The response status is not one of `expect_status` (or not 200 for gRPC).
    #[error("status {0}")]
    Status(StatusCode),
    /// The response body could not be read within [`MAX_BODY`].
    #[error("response body: {0}")]
    Body(String),
    /// The body lacks the `body_contains` text.
    #[error("body does not contain `{0}`")]
    BodyMismatch(String),
    /// The gRPC call ended with a non-zero `grpc-status`.
    #[error("grpc-status {code}{}", if .message.is_empty() { String::new() } else { format!(": {}", .message) })]
    GrpcStatus {
        /// The `grpc-status` code.
        code: String,
        /// The `grpc-message`, possibly empty.
        message: String,
    },
    /// The health response is not a `HealthCheckResponse`.
    #[error("grpc health response: {0}")]
    GrpcDecode(#[from] grpc::DecodeError),
    /// The server answered with a status other than `SERVING`.
    #[error("health status {}", grpc::status_name(*.0))]
    NotServing(u64),
}

/// Probes `addr` once; `authority` is the `Host` (or `:authority`) unless the check sets one.
pub async fn probe(
    check: &Check,
    addr: SocketAddr,
    authority: &str,
    timeout: Duration,
) -> ProbeOutcome {
    let mut signals = Signals::default();
    let run = async {
        match check {
            Check::Tcp => TcpStream::connect(addr)
                .await
                .map(drop)
                .map_err(ProbeError::Connect),
            Check::Http {
                path,
                expect_status,
                host,
                body_contains,
            } => {
                let host = host.as_deref().unwrap_or(authority);
                let request = Request::get(path.as_str())
                    .header(HOST, host)
                    .header(USER_AGENT, USER_AGENT_VALUE)
                    .header(CONNECTION, "close")
                    .body(Empty::<Bytes>::new())
                    .map_err(ProbeError::Request)?;
                http1(
                    addr,
                    request,
                    expect_status,
                    body_contains.as_deref(),
                    &mut signals,
                )
                .await
            }
            Check::Grpc { service } => grpc_check(addr, authority, service).await,
        }
    };
    let result = match tokio::time::timeout(timeout, run).await {
        Ok(result) => result,
        Err(_) => Err(ProbeError::Timeout(timeout)),
    };
    ProbeOutcome { result, signals }
}

async fn connect(addr: SocketAddr) -> Result<TokioIo<TcpStream>, ProbeError> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(ProbeError::Connect)?;
    // Probes are one small request; Nagle would only add latency.
    let _ = stream.set_nodelay(true);
    Ok(TokioIo::new(stream))
}

/// Runs `exchange` while polling the connection that carries it, so that dropping the
/// probe (on timeout) drops the connection too, instead of leaving a spawned task.
async fn drive<C, F, T>(conn: C, exchange: F) -> T
where
    C: Future,
    F: Future<Output = T>,
{
    let mut exchange = std::pin::pin!(exchange);
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        out = &mut exchange => out,
        // A finished connection has handed everything to the exchange (or failed it).
        _ = &mut conn => exchange.await,
    }
}

async fn http1(
    addr: SocketAddr,
    request: Request<Empty<Bytes>>,
    expect_status: &[u16],
    body_contains: Option<&str>,
    signals: &mut Signals,
) -> Result<(), ProbeError> {
    let io = connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(ProbeError::Http)?;
    let exchange = async {
        let response = sender
            .send_request(request)
            .await
            .map_err(ProbeError::Http)?;
        let (parts, body) = response.into_parts();
        *signals = Signals::from_headers(&parts.headers);
        let json = content_type(&parts.headers).is_some_and(signals::is_json);
        let status_ok = expect_status.contains(&parts.status.as_u16());
        if body_contains.is_none() && !json {
            return status_ok
                .then_some(())
                .ok_or(ProbeError::Status(parts.status));
        }
        let body = Limited::new(body, MAX_BODY)
            .collect()
            .await
            .map(|collected| collected.to_bytes());
        if json {
            if let Ok(body) = &body {
                *signals = signals.or(Signals::from_json(body));
            }
        }
        if !status_ok {
            return Err(ProbeError::Status(parts.status));
        }
        let Some(needle) = body_contains else {
            // The body only mattered for load reports.
            return Ok(());
        };
        let body = body.map_err(|e| ProbeError::Body(e.to_string()))?;
        if contains(&body, needle.as_bytes()) {
            Ok(())
        } else {
            Err(ProbeError::BodyMismatch(needle.to_owned()))
        }
    };
    drive(conn, exchange).await
}

async fn grpc_check(addr: SocketAddr, authority: &str, service: &str) -> Result<(), ProbeError> {
    let uri = format!("http://{authority}{}", grpc::CHECK_PATH);
    // A configured name that is no valid authority still gets probed, by address.
    let uri = match uri.parse::<http::Uri>() {
        Ok(uri) => uri,
        Err(_) => format!("http://{addr}{}", grpc::CHECK_PATH)
            .parse()
            .map_err(|e: http::uri::InvalidUri| ProbeError::Request(e.into()))?,
    };
    let request = Request::post(uri)
        .header(CONTENT_TYPE, "application/grpc")
        .header("te", "trailers")
        .header(USER_AGENT, USER_AGENT_VALUE)
        .body(Full::new(grpc::encode_request(service)))
        .map_err(ProbeError::Request)?;
    let io = connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
        .await
        .map_err(ProbeError::Http)?;
    let exchange = async {
        let response = sender
            .send_request(request)
            .await
            .map_err(ProbeError::Http)?;
        let (parts, body) = response.into_parts();
        if parts.status != StatusCode::OK {
            return Err(ProbeError::Status(parts.status));
        }
        // A trailers-only response puts grpc-status in the headers.
        check_grpc_status(&parts.headers)?;
        let collected = Limited::new(body, MAX_BODY)
            .collect()
            .await
            .map_err(|e| ProbeError::Body(e.to_string()))?;
        if let Some(trailers) = collected.trailers() {
            check_grpc_status(trailers)?;
        }
        match grpc::decode_response(&collected.to_bytes())? {
            grpc::SERVING => Ok(()),
            other => Err(ProbeError::NotServing(other)),
        }
    };
    drive(conn, exchange).await
}

fn check_grpc_status(headers: &HeaderMap) -> Result<(), ProbeError> {
    let Some(code) = headers.get("grpc-status") else {
        return Ok(());
    };
    if code.as_bytes() == b"0" {
        return Ok(());
    }
    let text = |v: &http::HeaderValue| String::from_utf8_lossy(v.as_bytes()).into_owned();
    Err(ProbeError::GrpcStatus {
        code: text(code),
        message: headers.get("grpc-message").map(text).unwrap_or_default(),
    })
}

fn content_type(headers: &HeaderMap) -> Option<&str> {
    headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok())
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substring_search() {
        assert!(contains(b"status: ok", b"ok"));
        assert!(contains(b"anything", b""));
        assert!(!contains(b"o", b"ok"));
    }

    #[test]
    fn grpc_status_headers() {
        let mut headers = HeaderMap::new();
        assert!(check_grpc_status(&headers).is_ok());
        headers.insert("grpc-status", "0".parse().unwrap());
        assert!(check_grpc_status(&headers).is_ok());
        headers.insert("grpc-status", "12".parse().unwrap());
        headers.insert("grpc-message", "unimplemented".parse().unwrap());
        let err = check_grpc_status(&headers).unwrap_err();
        assert_eq!(err.to_string(), "grpc-status 12: unimplemented");
    }
}
