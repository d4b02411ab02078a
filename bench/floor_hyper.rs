//! The floor on bare hyper HTTP/2: answers every Check OK at once, with no
//! tonic router, tower layers or streaming codec in between (the transport
//! `sentinelnet serve` uses). It shows what any ext_authz server on this
//! transport costs at the least; `authz-floor` is the stock-tonic floor the
//! targets are stated against.
//!
//! usage: authz-floor-hyper HOST:PORT
use bytes::{BufMut, Bytes, BytesMut};
use envoy_types::pb::envoy::service::auth::v3::{CheckRequest, CheckResponse};
use envoy_types::pb::google::rpc::Status;
use http::{HeaderMap, HeaderValue};
use http_body::Frame;
use http_body_util::BodyExt;
use prost::Message;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

struct Unary {
    data: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

impl http_body::Body for Unary {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(d) = self.data.take() {
            return Poll::Ready(Some(Ok(Frame::data(d))));
        }
        Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }
}

async fn handle(
    req: http::Request<hyper::body::Incoming>,
) -> Result<http::Response<Unary>, Infallible> {
    let body = req
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let _msg = CheckRequest::decode(body.get(5..).unwrap_or_default());
    let resp = CheckResponse {
        status: Some(Status::default()),
        ..Default::default()
    };
    let len = resp.encoded_len();
    let mut out = BytesMut::with_capacity(5 + len);
    out.put_u8(0);
    out.put_u32(len as u32);
    let _ = resp.encode(&mut out);
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    let mut r = http::Response::new(Unary {
        data: Some(out.freeze()),
        trailers: Some(trailers),
    });
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/grpc"));
    Ok(r)
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
