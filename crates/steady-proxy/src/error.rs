//! One error type for the request path, and the one place that turns it into a response.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};

/// Who caused a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The downstream client sent something bad or was too slow.
    Client,
    /// An upstream endpoint failed, was unreachable or too slow.
    Upstream,
    /// steady itself (configuration, no route, no endpoint).
    Internal,
}

/// What went wrong, precise enough to pick a status and a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// No route matched the request.
    NoRoute,
    /// The upstream has no available endpoint.
    NoEndpoint,
    /// The TCP connect to the endpoint failed or timed out.
    Connect,
    /// The endpoint did not answer within the route's timeout.
    Timeout,
    /// The endpoint closed or reset the connection, or spoke broken HTTP.
    UpstreamProtocol,
    /// The request was malformed.
    BadRequest,
    /// The request body was larger than the listener allows.
    BodyTooLarge,
    /// The client stopped sending its body or closed early.
    ClientAborted,
    /// The client sent its body too slowly.
    ClientTimeout,
    /// The method cannot be proxied (CONNECT).
    MethodNotAllowed,
    /// A rate limit of the route refused the request.
    RateLimited,
    /// The upstream is at its concurrency limit and the request was shed.
    Overload,
    /// A circuit breaker of the upstream is open: too many connections.
    BreakerConnections,
    /// A circuit breaker of the upstream is open: too many requests waiting for one.
    BreakerPending,
    /// A circuit breaker of the upstream is open: too many requests in flight.
    BreakerRequests,
}

impl Kind {
    /// The reason label used in logs and metrics.
    pub fn reason(self) -> &'static str {
        match self {
            Kind::NoRoute => "no-route",
            Kind::NoEndpoint => "no-endpoint",
            Kind::Connect => "connect",
            Kind::Timeout => "timeout",
            Kind::UpstreamProtocol => "upstream-reset",
            Kind::BadRequest => "bad-request",
            Kind::BodyTooLarge => "body-too-large",
            Kind::ClientAborted => "client",
            Kind::ClientTimeout => "client-timeout",
            Kind::MethodNotAllowed => "method-not-allowed",
            Kind::RateLimited => "rate-limited",
            Kind::Overload => "overload",
            Kind::BreakerConnections | Kind::BreakerPending | Kind::BreakerRequests => {
                "circuit-open"
            }
        }
    }

    /// Where failures of this kind come from.
    pub fn source(self) -> Source {
        match self {
            Kind::NoRoute
            | Kind::NoEndpoint
            | Kind::Overload
            | Kind::BreakerConnections
            | Kind::BreakerPending
            | Kind::BreakerRequests => Source::Internal,
            Kind::Connect | Kind::Timeout | Kind::UpstreamProtocol => Source::Upstream,
            Kind::BadRequest
            | Kind::BodyTooLarge
            | Kind::ClientAborted
            | Kind::ClientTimeout
            | Kind::MethodNotAllowed
            | Kind::RateLimited => Source::Client,
        }
    }

    /// Whether another endpoint might succeed where this attempt failed.
    ///
    /// Connect failures never reached the endpoint, so any request may be retried; the
    /// others may have had effects and are retried only for idempotent requests.
    pub fn retryable(self) -> bool {
        matches!(
            self,
            Kind::Connect | Kind::Timeout | Kind::UpstreamProtocol | Kind::NoEndpoint
        )
    }

    /// The status a client sees for this failure.
    pub fn status(self) -> StatusCode {
        match self {
            Kind::NoRoute => StatusCode::NOT_FOUND,
            Kind::NoEndpoint => StatusCode::SERVICE_UNAVAILABLE,
            Kind::Connect | Kind::UpstreamProtocol => StatusCode::BAD_GATEWAY,
            Kind::Timeout => StatusCode::GATEWAY_TIMEOUT,
            Kind::BadRequest | Kind::ClientAborted => StatusCode::BAD_REQUEST,
            Kind::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Kind::ClientTimeout => StatusCode::REQUEST_TIMEOUT,
            Kind::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Kind::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Kind::Overload
            | Kind::BreakerConnections
            | Kind::BreakerPending
            | Kind::BreakerRequests => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The circuit breaker that refused the request, for `x-steady-circuit-breaker`.
    pub fn breaker(self) -> Option<crate::breakers::Breaker> {
        use crate::breakers::Breaker;
        match self {
            Kind::BreakerConnections => Some(Breaker::Connections),
            Kind::BreakerPending => Some(Breaker::Pending),
            Kind::BreakerRequests => Some(Breaker::Requests),
            _ => None,
        }
    }

    /// The failure a refusal by `breaker` is.
    pub fn from_breaker(breaker: crate::breakers::Breaker) -> Kind {
        use crate::breakers::Breaker;
        match breaker {
            Breaker::Connections => Kind::BreakerConnections,
            Breaker::Pending => Kind::BreakerPending,
            Breaker::Requests => Kind::BreakerRequests,
        }
    }
}

/// A failure on the request path.
#[derive(Debug, thiserror::Error)]
#[error("{}: {detail}", kind.reason())]
pub struct ProxyError {
    /// What went wrong.
    pub kind: Kind,
    /// Human-readable detail for logs; not sent to clients.
    pub detail: String,
}

impl ProxyError {
    /// Creates an error of `kind` with a detail for logs.
    pub fn new(kind: Kind, detail: impl Into<String>) -> Self {
        Self {
            kind,
            detail: detail.into(),
        }
    }
}

/// Builds the short JSON response a client sees for a failure.
///
/// This is the only function that maps failures to statuses, so every phase reports the
/// same way. The [`Kind`] rides along in the response's extensions.
pub fn error_response<B>(kind: Kind, request_id: Option<&HeaderValue>) -> Response<B>
where
    B: From<Bytes>,
{
    let status = kind.status();
    let body = format!(
        "{{\"error\":\"{}\",\"status\":{},\"source\":\"{}\"}}\n",
        kind.reason(),
        status.as_u16(),
        match kind.source() {
            Source::Client => "client",
            Source::Upstream => "upstream",
            Source::Internal => "internal",
        }
    );
    let mut response = Response::new(B::from(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert("x-steady-error", HeaderValue::from_static(kind.reason()));
    if let Some(breaker) = kind.breaker() {
        headers.insert(
            "x-steady-circuit-breaker",
            HeaderValue::from_static(breaker.as_str()),
        );
    }
    if let Some(id) = request_id {
        headers.insert("x-request-id", id.clone());
    }
    // For the access log and the span, which note the failure from the response.
    response.extensions_mut().insert(kind);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_the_issue() {
        assert_eq!(Kind::Connect.status(), 502);
        assert_eq!(Kind::Timeout.status(), 504);
        assert_eq!(Kind::NoEndpoint.status(), 503);
        assert_eq!(Kind::NoRoute.status(), 404);
        assert_eq!(Kind::BodyTooLarge.status(), 413);
        assert_eq!(Kind::BadRequest.status(), 400);
        assert_eq!(Kind::RateLimited.status(), 429);
        assert_eq!(Kind::Overload.status(), 503);
    }

    #[test]
    fn body_is_json() {
        let r: Response<Bytes> = error_response(Kind::Timeout, None);
        let v: serde_json::Value = serde_json::from_slice(r.body()).unwrap();
        assert_eq!(v["error"], "timeout");
        assert_eq!(v["status"], 504);
        assert_eq!(v["source"], "upstream");
    }
}
