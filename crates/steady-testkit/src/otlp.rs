//! An OTLP trace receiver for tests: decodes real `ExportTraceServiceRequest`s sent over
//! gRPC (a tonic `TraceService`) or HTTP/protobuf (`POST /v1/traces`), keeps the spans,
//! and can be told to stall. [`OtlpReceiver::start_tls`] serves either over TLS with a
//! fresh self-signed certificate for `127.0.0.1`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use prost::Message;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// The OTLP transport a [`OtlpReceiver`] speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    /// OTLP/gRPC.
    Grpc,
    /// OTLP/HTTP with protobuf bodies.
    Http,
}

/// One span as received, ids in lowercase hex (empty when absent).
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedSpan {
    /// The resource's `service.name`.
    pub service: Option<String>,
    /// 32 hex digits.
    pub trace_id: String,
    /// 16 hex digits.
    pub span_id: String,
    /// 16 hex digits, or empty for a root span.
    pub parent_span_id: String,
    /// Span name.
    pub name: String,
    /// `SERVER`, `CLIENT`, ... (the proto enum's name without its prefix).
    pub kind: String,
    /// Attributes, values rendered as text.
    pub attributes: Vec<(String, String)>,
    /// Status code: 0 unset, 1 ok, 2 error.
    pub status: i32,
    /// Start and end, nanoseconds since the Unix epoch.
    pub start_nanos: u64,
    /// End, nanoseconds since the Unix epoch.
    pub end_nanos: u64,
}

impl ReceivedSpan {
    /// The value of attribute `key`, as text.
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct Shared {
    spans: Mutex<Vec<ReceivedSpan>>,
    requests: AtomicU64,
    stalled: AtomicBool,
    unstall: Notify,
    arrived: Notify,
}

impl Shared {
    async fn accept(&self, request: ExportTraceServiceRequest) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        while self.stalled.load(Ordering::Relaxed) {
            let unstalled = self.unstall.notified();
            if !self.stalled.load(Ordering::Relaxed) {
                break;
            }
            unstalled.await;
        }
        let mut received = Vec::new();
        for resource_spans in request.resource_spans {
            let service = resource_spans.resource.as_ref().and_then(|r| {
                r.attributes
                    .iter()
                    .find(|kv| kv.key == "service.name")
                    .and_then(|kv| kv.value.as_ref()?.value.as_ref().map(text))
            });
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    received.push(ReceivedSpan {
                        service: service.clone(),
                        trace_id: hex(&span.trace_id),
                        span_id: hex(&span.span_id),
                        parent_span_id: hex(&span.parent_span_id),
                        name: span.name.clone(),
                        kind: span
                            .kind()
                            .as_str_name()
                            .trim_start_matches("SPAN_KIND_")
                            .to_string(),
                        attributes: span
                            .attributes
                            .iter()
                            .map(|kv| {
                                let v = kv.value.as_ref().and_then(|v| v.value.as_ref());
                                (kv.key.clone(), v.map(text).unwrap_or_default())
                            })
                            .collect(),
                        status: span.status.as_ref().map_or(0, |s| s.code),
                        start_nanos: span.start_time_unix_nano,
                        end_nanos: span.end_time_unix_nano,
                    });
                }
            }
        }
        self.spans.lock().unwrap().extend(received);
        self.arrived.notify_waiters();
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn text(value: &Value) -> String {
    match value {
        Value::StringValue(s) => s.clone(),
        Value::BoolValue(b) => b.to_string(),
        Value::IntValue(i) => i.to_string(),
        Value::DoubleValue(d) => d.to_string(),
        other => format!("{other:?}"),
    }
}

struct Service(Arc<Shared>);

#[tonic::async_trait]
impl TraceService for Service {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0.accept(request.into_inner()).await;
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// A running OTLP trace receiver on `127.0.0.1:0`; stops when dropped.
pub struct OtlpReceiver {
    addr: SocketAddr,
    protocol: OtlpProtocol,
    /// The self-signed certificate (PEM) when it serves TLS.
    cert_pem: Option<String>,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl OtlpReceiver {
    /// Starts a receiver speaking `protocol`.
    pub async fn start(protocol: OtlpProtocol) -> OtlpReceiver {
        OtlpReceiver::serve(protocol, false).await
    }

    /// Starts a receiver speaking `protocol` over TLS, with a fresh self-signed
    /// certificate for `127.0.0.1` and `localhost` ([`cert_pem`](Self::cert_pem)).
    pub async fn start_tls(protocol: OtlpProtocol) -> OtlpReceiver {
        OtlpReceiver::serve(protocol, true).await
    }

    async fn serve(protocol: OtlpProtocol, tls: bool) -> OtlpReceiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let shared = Arc::new(Shared::default());
        let cert = tls.then(|| {
            rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])
                .expect("certificate")
        });
        let cert_pem = cert.as_ref().map(|c| c.cert.pem());
        let task = match protocol {
            OtlpProtocol::Grpc => {
                let service = TraceServiceServer::new(Service(shared.clone()));
                let mut server = tonic::transport::Server::builder();
                if let Some(cert) = &cert {
                    let identity = tonic::transport::Identity::from_pem(
                        cert.cert.pem(),
                        cert.key_pair.serialize_pem(),
                    );
                    server = server
                        .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
                        .expect("server TLS");
                }
                tokio::spawn(async move {
                    let _ = server
                        .add_service(service)
                        .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
                        .await;
                })
            }
            OtlpProtocol::Http => {
                let acceptor = cert.as_ref().map(|cert| {
                    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(
                        cert.key_pair.serialize_der().into(),
                    );
                    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
                        rustls::crypto::ring::default_provider(),
                    ))
                    .with_safe_default_protocol_versions()
                    .expect("TLS versions")
                    .with_no_client_auth()
                    .with_single_cert(vec![cert.cert.der().clone()], key)
                    .expect("server TLS");
                    tokio_rustls::TlsAcceptor::from(Arc::new(config))
                });
                tokio::spawn(serve_http(listener, acceptor, shared.clone()))
            }
        };
        OtlpReceiver {
            addr,
            protocol,
            cert_pem,
            shared,
            task,
        }
    }

    /// The endpoint to configure: `http://127.0.0.1:PORT` (`https://` with TLS; for
    /// HTTP, the exporter adds `/v1/traces`).
    pub fn endpoint(&self) -> String {
        let scheme = if self.cert_pem.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.addr)
    }

    /// The certificate it serves TLS with (PEM), to trust as a CA.
    pub fn cert_pem(&self) -> Option<&str> {
        self.cert_pem.as_deref()
    }

    /// The transport it speaks.
    pub fn protocol(&self) -> OtlpProtocol {
        self.protocol
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.shared.spans.lock().unwrap().clone()
    }

    /// Export requests that arrived (stalled ones included).
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::Relaxed)
    }

    /// Waits until at least `n` spans arrived, up to `within`; returns what arrived.
    pub async fn wait_for(&self, n: usize, within: Duration) -> Vec<ReceivedSpan> {
        let _ = tokio::time::timeout(within, async {
            loop {
                let arrived = self.shared.arrived.notified();
                if self.shared.spans.lock().unwrap().len() >= n {
                    return;
                }
                // Bounded poll as well, in case a notification raced the check.
                let _ = tokio::time::timeout(Duration::from_millis(50), arrived).await;
            }
        })
        .await;
        self.spans()
    }

    /// While on, export requests are held unanswered (a stalled collector).
    pub fn stall(&self, on: bool) {
        self.shared.stalled.store(on, Ordering::Relaxed);
        if !on {
            self.shared.unstall.notify_waiters();
        }
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.stall(false);
        self.task.abort();
    }
}

async fn serve_http(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shared: Arc<Shared>,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        let shared = shared.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(export_http(req, &shared).await) }
            });
            let server = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let _ = match tls {
                Some(tls) => match tls.accept(stream).await {
                    Ok(stream) => server.serve_connection(TokioIo::new(stream), service).await,
                    Err(_) => return,
                },
                None => server.serve_connection(TokioIo::new(stream), service).await,
            };
        });
    }
}

async fn export_http(req: Request<Incoming>, shared: &Shared) -> Response<Full<Bytes>> {
    let status = |code: StatusCode| {
        let mut r = Response::new(Full::new(Bytes::new()));
        *r.status_mut() = code;
        r
    };
    if req.method() != http::Method::POST || req.uri().path() != "/v1/traces" {
        return status(StatusCode::NOT_FOUND);
    }
    if req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_none_or(|v| v != "application/x-protobuf")
    {
        return status(StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }
    let Ok(body) = req.into_body().collect().await else {
        return status(StatusCode::BAD_REQUEST);
    };
    let Ok(request) = ExportTraceServiceRequest::decode(body.to_bytes()) else {
        return status(StatusCode::BAD_REQUEST);
    };
    shared.accept(request).await;
    let mut response = Response::new(Full::new(Bytes::from(
        ExportTraceServiceResponse {
            partial_success: None,
        }
        .encode_to_vec(),
    )));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/x-protobuf"),
    );
    response
}
