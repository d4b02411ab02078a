//! The floor on bare hyper HTTP/2: answers every Check OK at once, with no
//! tonic router, tower layers or streaming codec in between (the transport
//! `sentinelnet serve` uses). It shows what any ext_authz server on this
//! transport costs at the least; `authz-floor` is the stock-tonic floor the
//! targets are stated against.
//!
//! usage: authz-floor-hyper HOST:PORT
//! It decodes the request like the stock floor does (tonic decodes before
//! calling a service) and reuses the sidecar's response body type, so the
//! two differ only in what the sidecar does between decode and answer.
use bytes::{BufMut, BytesMut};
use envoy_types::pb::envoy::service::auth::v3::{CheckRequest, CheckResponse};
use envoy_types::pb::google::rpc::Status;
use http_body_util::BodyExt;
use prost::Message;
use sentinelnet::authz::server::{unary_response, UnaryBody};
use std::convert::Infallible;

async fn handle(
    request: http::Request<hyper::body::Incoming>,
) -> Result<http::Response<UnaryBody>, Infallible> {
    let body = request
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let _request = CheckRequest::decode(body.get(5..).unwrap_or_default());
    let answer = CheckResponse {
        status: Some(Status::default()),
        ..Default::default()
    };
    let length = answer.encoded_len();
    let mut framed = BytesMut::with_capacity(5 + length);
    framed.put_u8(0);
    framed.put_u32(length as u32);
    let _ = answer.encode(&mut framed);
    Ok(unary_response(framed.freeze()))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .ok_or("usage: authz-floor-hyper HOST:PORT")?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&addr).await?;
        loop {
            let (sock, _) = listener.accept().await?;
            let _ = sock.set_nodelay(true);
            tokio::spawn(async move {
                let _ =
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(
                            hyper_util::rt::TokioIo::new(sock),
                            hyper::service::service_fn(handle),
                        )
                        .await;
            });
        }
    })
}
