//! The floor: an ext_authz server that answers OK at once. Any sidecar is
//! measured against it in the same run, behind the same Envoy.
//!
//! usage: authz-floor ADDR [current|multi]
//!   ADDR: HOST:PORT or unix:/path.sock; runtime defaults to current-thread,
//!   the same as `sentinelnet serve`.

use envoy_types::pb::envoy::service::auth::v3::authorization_server::{
    Authorization, AuthorizationServer,
};
use envoy_types::pb::envoy::service::auth::v3::{CheckRequest, CheckResponse};
use envoy_types::pb::google::rpc::Status;

struct Floor;

#[tonic::async_trait]
impl Authorization for Floor {
    async fn check(
        &self,
        _: tonic::Request<CheckRequest>,
    ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        Ok(tonic::Response::new(CheckResponse {
            status: Some(Status::default()),
            ..Default::default()
        }))
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr = args
        .next()
        .ok_or("usage: authz-floor ADDR [current|multi]")?;
    let runtime = match args.next().as_deref() {
        Some("multi") => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?,
        _ => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?,
    };
    runtime.block_on(async move {
        let server =
            tonic::transport::Server::builder().add_service(AuthorizationServer::new(Floor));
        if let Some(path) = addr.strip_prefix("unix:") {
            let _ = std::fs::remove_file(path);
            let listener = tokio::net::UnixListener::bind(path)?;
            server
                .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener))
                .await?;
        } else {
            let listener = tokio::net::TcpListener::bind(&addr).await?;
            let incoming =
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
            server.serve_with_incoming(incoming).await?;
        }
        Ok(())
    })
}
