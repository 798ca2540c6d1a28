//! The HTTP(S) client and one delivery attempt.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, USER_AGENT};
use http::Request;
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::error::AttemptError;
use crate::receiver::Call;

/// The client every notifier shares: HTTP/1.1, plain or TLS (rustls with ring).
pub(crate) type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// How much of an error response is read, and how much of it is logged.
const BODY_READ: usize = 16 * 1024;
const EXCERPT_CHARS: usize = 200;

/// Builds the client; with `tls`, trusts the system's root certificates and fails
/// when there are none.
pub(crate) fn build(tls: bool) -> Result<HttpClient, ()> {
    let roots = if tls {
        system_roots()
    } else {
        rustls::RootCertStore::empty()
    };
    if tls && roots.is_empty() {
        return Err(());
    }
    let connector = https_connector(roots).map_err(|_| ())?;
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(connector))
}

/// The system's root certificates (those that fail to load are logged and skipped).
pub fn system_roots() -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    for e in &found.errors {
        tracing::warn!(error = %e, "could not load some system root certificates");
    }
    roots.add_parsable_certificates(found.certs);
    roots
}

/// A connector for `http://` and `https://` URLs, HTTP/1.1, TCP_NODELAY: TLS through
/// rustls with ring, verifying servers against `roots`. steady's outbound HTTP clients
/// (notifiers, OTLP/HTTP span export) share it.
pub fn https_connector(
    roots: rustls::RootCertStore,
) -> Result<HttpsConnector<HttpConnector>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls_config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    Ok(HttpsConnectorBuilder::new()
        .with_tls_config(tls_config)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http))
}

/// Makes `call` once: Ok on any 2xx answered within `timeout`.
pub(crate) async fn attempt(
    client: &HttpClient,
    call: &Call,
    timeout: Duration,
) -> Result<(), AttemptError> {
    let mut req = Request::builder()
        .method(call.method.clone())
        .uri(call.uri.clone())
        .header(CONTENT_TYPE, "application/json")
        .header(USER_AGENT, concat!("steady/", env!("CARGO_PKG_VERSION")));
    if let Some(auth) = &call.authorization {
        req = req.header(AUTHORIZATION, auth.clone());
    }
    let req = req
        .body(Full::new(Bytes::from(call.body.clone())))
        .map_err(|e| AttemptError::Request(e.to_string()))?;
    let exchange = async {
        let resp = client
            .request(req)
            .await
            .map_err(|e| AttemptError::Request(chain(&e)))?;
        let status = resp.status();
        // Read the body either way: it frees the connection for reuse, and an error's
        // body says what was wrong.
        let body = Limited::new(resp.into_body(), BODY_READ)
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        if status.is_success() {
            Ok(())
        } else {
            Err(AttemptError::Status {
                status,
                excerpt: excerpt(&body),
            })
        }
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .unwrap_or(Err(AttemptError::Timeout(timeout)))
}

/// An error and its sources on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// The start of a body as one printable line.
fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(EXCERPT_CHARS)
        .collect();
    line.trim().to_string()
}
