//! The floor of this architecture: hyper server + hyper-util pooled client on one
//! current-thread runtime, forwarding with no routing, balancing, header rewriting or
//! metrics. `bench/` runs it as `STEADY_BIN=target/release/examples/floor` to show how
//! much of steady's CPU per request is the HTTP stack itself.
//!
//! Usage (same CLI shape as steady): `floor serve -c steady.yaml`; uses the first
//! listener and the first endpoint of the first upstream.

use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};

fn main() {
    let path = std::env::args().nth(3).expect("usage: floor serve -c FILE");
    let config = steady_config::load(std::path::Path::new(&path)).expect("config");
    let bind = config.listeners[0].bind.clone();
    let backend = config.upstreams[0].endpoints[0].address.clone();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&bind).await.unwrap();
        let client: Client<_, Incoming> = Client::builder(TokioExecutor::new()).build_http();
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let _ = stream.set_nodelay(true);
            let client = client.clone();
            let backend = backend.clone();
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
                        let client = client.clone();
                        let uri = format!("http://{}{}", backend, req.uri().path());
                        async move {
                            *req.uri_mut() = uri.parse().unwrap();
                            // An error closes the client connection; the floor needs no 502s.
                            client.request(req).await
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}
