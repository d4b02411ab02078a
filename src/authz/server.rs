//! The ext_authz gRPC endpoint, served on hyper's HTTP/2 directly.
//!
//! Envoy makes one unary call per request. A stock tonic server puts a
//! router, tower layers, boxed bodies and a streaming codec in front of that
//! call; behind Envoy, that stack alone cost about 8 µs of CPU per Check
//! here, a quarter of a do-nothing server's total (bench/README.md). So a
//! call is handled in one function: collect the request body (Envoy sends
//! one DATA frame), check the 5-byte gRPC frame header, decode, decide,
//! encode into one buffer, answer with one DATA frame and the `grpc-status`
//! trailer. Errors use gRPC's trailers-only form.
//!
//! Methods: `envoy.service.auth.v3.Authorization/Check` and
//! `grpc.health.v1.Health/Check`; anything else is `UNIMPLEMENTED`.

use super::message::CheckMessage;
use super::Authorizer;
use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::graceful::GracefulShutdown;
use prost::Message;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};

pub const CHECK_PATH: &str = "/envoy.service.auth.v3.Authorization/Check";
pub const HEALTH_CHECK_PATH: &str = "/grpc.health.v1.Health/Check";
/// The service name a health check asks about to learn whether a bundle is
/// active (the empty name asks about the process).
pub const AUTHORIZATION_SERVICE: &str = "envoy.service.auth.v3.Authorization";

/// Largest request message accepted: tonic's default, and far above what
/// Envoy sends unless `with_request_body` forwards large bodies.
pub const MAX_MESSAGE_BYTES: usize = 4 << 20;

/// gRPC status codes used here.
mod code {
    pub(super) const OK: u8 = 0;
    pub(super) const INVALID_ARGUMENT: u8 = 3;
    pub(super) const NOT_FOUND: u8 = 5;
    pub(super) const RESOURCE_EXHAUSTED: u8 = 8;
    pub(super) const UNIMPLEMENTED: u8 = 12;
}

/// `grpc.health.v1.HealthCheckRequest`.
#[derive(Clone, PartialEq, Message)]
struct HealthCheckRequest {
    #[prost(string, tag = "1")]
    service: String,
}

/// `grpc.health.v1.HealthCheckResponse`.
#[derive(Clone, PartialEq, Message)]
struct HealthCheckResponse {
    /// 1 SERVING, 2 NOT_SERVING.
    #[prost(int32, tag = "1")]
    status: i32,
}

/// A unary gRPC response body: at most one message, then the trailers.
pub struct UnaryBody {
    message: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

impl http_body::Body for UnaryBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(message) = self.message.take() {
            return Poll::Ready(Some(Ok(Frame::data(message))));
        }
        Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }

    fn is_end_stream(&self) -> bool {
        self.message.is_none() && self.trailers.is_none()
    }
}

/// Answers the calls of one sidecar; shared by all connections.
pub struct Endpoint {
    authorizer: Authorizer,
}

impl Endpoint {
    pub fn new(authorizer: Authorizer) -> Arc<Endpoint> {
        Arc::new(Endpoint { authorizer })
    }

    async fn call(self: Arc<Self>, request: Request<Incoming>) -> Response<UnaryBody> {
        let path = request.uri().path();
        let is_check = path == CHECK_PATH;
        if request.method() != http::Method::POST || !(is_check || path == HEALTH_CHECK_PATH) {
            return failure(code::UNIMPLEMENTED, "unknown method");
        }
        let message = match read_message(request.into_body()).await {
            Ok(message) => message,
            Err((status, why)) => return failure(status, &why),
        };
        if is_check {
            self.check(message)
        } else {
            self.health(message)
        }
    }

    fn check(&self, message: Bytes) -> Response<UnaryBody> {
        let request = match CheckMessage::decode_from(message) {
            Ok(request) => request,
            Err(e) => {
                return failure(
                    code::INVALID_ARGUMENT,
                    &format!("CheckRequest does not decode: {e}"),
                )
            }
        };
        success(|out| self.authorizer.check_into(request, out))
    }

    fn health(&self, message: Bytes) -> Response<UnaryBody> {
        let Ok(request) = HealthCheckRequest::decode(message) else {
            return failure(code::INVALID_ARGUMENT, "HealthCheckRequest does not decode");
        };
        let serving = match request.service.as_str() {
            "" => true,
            AUTHORIZATION_SERVICE => self.authorizer.has_bundle(),
            other => {
                return failure(code::NOT_FOUND, &format!("unknown service {other:?}"));
            }
        };
        let answer = HealthCheckResponse {
            status: if serving { 1 } else { 2 },
        };
        // Encoding into a growable buffer cannot fail.
        success(|out| {
            let _ = answer.encode(out);
        })
    }
}

/// The one message of a unary call, without its frame header.
async fn read_message(body: Incoming) -> Result<Bytes, (u8, String)> {
    let mut bytes = match Limited::new(body, MAX_MESSAGE_BYTES + 5).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Err((
                code::RESOURCE_EXHAUSTED,
                format!("message larger than {MAX_MESSAGE_BYTES} bytes"),
            ))
        }
        Err(e) => return Err((code::INVALID_ARGUMENT, format!("request body: {e}"))),
    };
    if bytes.len() < 5 {
        return Err((
            code::INVALID_ARGUMENT,
            "request is not a gRPC message (shorter than its 5-byte frame header)".into(),
        ));
    }
    let header = bytes.split_to(5);
    if header[0] != 0 {
        return Err((
            code::UNIMPLEMENTED,
            "compressed messages are not supported (no grpc-encoding is offered)".into(),
        ));
    }
    let length = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    if length != bytes.len() {
        return Err((
            code::INVALID_ARGUMENT,
            format!(
                "gRPC frame says {length} bytes, the request carries {}",
                bytes.len()
            ),
        ));
    }
    Ok(bytes)
}

fn grpc_headers(response: &mut Response<UnaryBody>) {
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
}

/// The message `encode` writes, framed (uncompressed flag, big-endian
/// length) as the single response message, then `grpc-status: 0`.
fn success(encode: impl FnOnce(&mut BytesMut)) -> Response<UnaryBody> {
    let mut framed = BytesMut::with_capacity(512);
    framed.put_bytes(0, 5);
    encode(&mut framed);
    let length = (framed.len() - 5) as u32;
    framed[1..5].copy_from_slice(&length.to_be_bytes());
    unary_response(framed.freeze())
}

/// A framed response message (5-byte gRPC header included), then
/// `grpc-status: 0`.
pub fn unary_response(framed: Bytes) -> Response<UnaryBody> {
    let mut trailers = HeaderMap::with_capacity(1);
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    let mut response = Response::new(UnaryBody {
        message: Some(framed),
        trailers: Some(trailers),
    });
    grpc_headers(&mut response);
    response
}

/// A trailers-only error response: status and message in the headers.
fn failure(status: u8, why: &str) -> Response<UnaryBody> {
    debug_assert_ne!(status, code::OK);
    let mut response = Response::new(UnaryBody {
        message: None,
        trailers: None,
    });
    *response.status_mut() = StatusCode::OK;
    grpc_headers(&mut response);
    let headers = response.headers_mut();
    headers.insert("grpc-status", HeaderValue::from(u16::from(status)));
    let encoded = percent_encoding::utf8_percent_encode(why, GRPC_MESSAGE).to_string();
    if let Ok(value) = HeaderValue::from_str(&encoded) {
        headers.insert("grpc-message", value);
    }
    tracing::debug!(status, why, "gRPC call refused");
    response
}

/// gRPC's `grpc-message` encoding: percent-encode everything outside
/// printable ASCII, and `%` itself.
const GRPC_MESSAGE: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS.add(b'%');

/// Where the endpoint listens, and whether it speaks TLS.
pub struct Listener {
    pub kind: ListenerKind,
    /// Swapped when the certificate files change (`tls::reload`); each
    /// handshake takes the configuration current when the connection
    /// arrives.
    pub tls: Option<Arc<arc_swap::ArcSwap<rustls::ServerConfig>>>,
}

pub enum ListenerKind {
    Tcp(TcpListener),
    Unix(UnixListener),
}

/// Most TLS handshakes in progress at once: Envoy opens a handful of
/// connections, so a crowd of handshakes is someone else.
const MAX_HANDSHAKES: usize = 256;

/// Longest a TLS handshake may take: Envoy completes one in milliseconds;
/// a caller that holds a place longer only keeps Envoy's next connection
/// waiting.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);

/// Serve until `stop` resolves; then stop accepting, send GOAWAY on every
/// connection, and let in-flight calls finish (for up to 5 s).
pub async fn serve(
    listener: Listener,
    endpoint: Arc<Endpoint>,
    stop: impl std::future::Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    let handshakes = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
    let refused_handshakes = Arc::new(Refusals::default());
    tokio::pin!(stop);
    loop {
        let accepted = tokio::select! {
            () = &mut stop => break,
            accepted = accept(&listener.kind) => accepted,
        };
        let connection = match accepted {
            Ok(connection) => connection,
            Err(e) => {
                // Typically EMFILE: back off instead of spinning.
                tracing::warn!(error = %e, "cannot accept an ext_authz connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if let Accepted::Tcp(stream) = &connection {
            // Checks are small request/response pairs: never wait for
            // Nagle to fill a segment.
            let _ = stream.set_nodelay(true);
        }
        let Some(tls) = &listener.tls else {
            match connection {
                Accepted::Tcp(stream) => spawn_connection(&graceful, stream, endpoint.clone()),
                Accepted::Unix(stream) => spawn_connection(&graceful, stream, endpoint.clone()),
            }
            continue;
        };
        // The handshake runs in its own task: a slow or hostile caller
        // never holds up the accept loop.
        let Ok(permit) = handshakes.clone().try_acquire_owned() else {
            refused_handshakes.note("too many TLS handshakes in flight");
            continue;
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(tls.load_full());
        let watcher = graceful.watcher();
        let endpoint = endpoint.clone();
        let refusals = refused_handshakes.clone();
        tokio::spawn(async move {
            let refused = match connection {
                Accepted::Tcp(stream) => match handshake(&acceptor, stream).await {
                    Ok(tls) => {
                        drop(permit);
                        return watch_connection(watcher, tls, endpoint).await;
                    }
                    Err(why) => why,
                },
                Accepted::Unix(stream) => match handshake(&acceptor, stream).await {
                    Ok(tls) => {
                        drop(permit);
                        return watch_connection(watcher, tls, endpoint).await;
                    }
                    Err(why) => why,
                },
            };
            refusals.note(&refused);
        });
    }
    drop(listener);
    // A client that opened a call and never finished sending it must not
    // hold the sidecar up forever.
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("ext_authz calls still open after {SHUTDOWN_GRACE:?}; closing them");
    }
}

/// Refused TLS handshakes, logged on the first and every 100th, so a port
/// scanner cannot flood the log.
#[derive(Default)]
struct Refusals(std::sync::atomic::AtomicU64);

impl Refusals {
    fn note(&self, why: &str) {
        let n = self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        if n == 1 || n % 100 == 0 {
            tracing::warn!(
                error = why,
                refused = n,
                "refused an ext_authz TLS handshake"
            );
        }
    }
}

/// Complete a server-side TLS handshake within [`HANDSHAKE_TIMEOUT`].
async fn handshake<IO>(
    acceptor: &tokio_rustls::TlsAcceptor,
    io: IO,
) -> Result<tokio_rustls::server::TlsStream<IO>, String>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(io)).await {
        Ok(Ok(tls)) => Ok(tls),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no handshake within {HANDSHAKE_TIMEOUT:?}")),
    }
}

/// How long in-flight calls may take to finish at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

enum Accepted {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

async fn accept(listener: &ListenerKind) -> std::io::Result<Accepted> {
    match listener {
        ListenerKind::Tcp(l) => l.accept().await.map(|(s, _)| Accepted::Tcp(s)),
        ListenerKind::Unix(l) => l.accept().await.map(|(s, _)| Accepted::Unix(s)),
    }
}

/// Serve `io` under the shutdown `watcher`: the future ends with the
/// connection.
fn watch_connection<IO>(
    watcher: hyper_util::server::graceful::Watcher,
    io: IO,
    endpoint: Arc<Endpoint>,
) -> impl std::future::Future<Output = ()>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |request| {
        let endpoint = endpoint.clone();
        async move { Ok::<_, Infallible>(endpoint.call(request).await) }
    });
    let connection = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(io), service);
    let connection = watcher.watch(connection);
    async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "ext_authz connection ended with an error");
        }
    }
}

fn spawn_connection<IO>(graceful: &GracefulShutdown, io: IO, endpoint: Arc<Endpoint>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(watch_connection(graceful.watcher(), io, endpoint));
}
