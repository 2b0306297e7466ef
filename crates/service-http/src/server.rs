//! The listener side: plain HTTP/1.1 or TLS (rustls, certificate and key from PEM files), each
//! connection's peer address handed to the router, time limits, graceful shutdown.
//!
//! Each connection runs in its own task: a TLS handshake that stalls, or a client that sends
//! its request headers slowly, holds up nobody else and is cut off after a time limit. On
//! shutdown the listener closes, idle connections are closed, and requests in flight get
//! [`SHUTDOWN_GRACE`] to finish.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tidemark_service_core::{Config, Control};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower_service::Service;

use crate::{Api, router};

/// How long a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client may take to send a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long requests in flight may take to finish after shutdown was asked for.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Serves the API of `config` over `control` on `listener` (TLS when `server.tls` is set) until
/// `shutdown` completes, then lets requests in flight finish.
pub async fn serve(
    config: Arc<Config>,
    control: Arc<dyn Control>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let api = Api::new(config, control)?;
    serve_with(Arc::new(api), listener, shutdown).await
}

/// [`serve`] with an [`Api`] built by the caller (a test's clock, for one).
pub async fn serve_with(
    api: Arc<Api>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let tls = match &api.config.server.tls {
        Some(tls) => Some(TlsAcceptor::from(Arc::new(tls_config(&tls.cert, &tls.key)?))),
        None => None,
    };
    let app = router(api);
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait a little, as axum::serve does.
                    tracing::warn!("accepting a connection failed: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let (app, tls, watcher) = (app.clone(), tls.clone(), graceful.watcher());
        tokio::spawn(async move {
            match tls {
                None => connection(TokioIo::new(tcp), peer, app, watcher).await,
                Some(tls) => match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(tcp)).await {
                    Ok(Ok(stream)) => connection(TokioIo::new(stream), peer, app, watcher).await,
                    Ok(Err(e)) => tracing::debug!("TLS handshake with {peer} failed: {e}"),
                    Err(_) => tracing::debug!("TLS handshake with {peer} timed out"),
                },
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown()).await.is_err() {
        tracing::warn!("requests still running {SHUTDOWN_GRACE:?} after shutdown; stopping anyway");
    }
    Ok(())
}

/// Serves one connection's requests, each carrying the peer's address.
async fn connection<I>(io: TokioIo<I>, peer: SocketAddr, app: Router, watcher: Watcher)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        app.clone().call(request)
    });
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(HEADER_TIMEOUT);
    if let Err(e) = watcher.watch(http.serve_connection(io, service)).await {
        tracing::debug!("connection from {peer} ended: {e}");
    }
}

/// The rustls server config for a PEM certificate chain and private key.
fn tls_config(cert: &Path, key: &Path) -> anyhow::Result<ServerConfig> {
    let pem = std::fs::read(cert)
        .with_context(|| format!("cannot read the TLS certificate {}; check server.tls_cert", cert.display()))?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("the TLS certificate {} is not valid PEM", cert.display()))?;
    if chain.is_empty() {
        bail!("the TLS certificate file {} holds no certificate; check server.tls_cert", cert.display());
    }
    let pem = std::fs::read(key)
        .with_context(|| format!("cannot read the TLS private key {}; check server.tls_key", key.display()))?;
    let key_der = PrivateKeyDer::from_pem_slice(&pem).with_context(|| {
        format!(
            "the TLS key file {} holds no PEM private key (PKCS#8, PKCS#1 or SEC1); check server.tls_key",
            key.display()
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("the TLS provider offers no protocol version")?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .with_context(|| {
            format!("the TLS key {} does not fit the certificate {} (or is unsupported)", key.display(), cert.display())
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}
