//! The HTTP and HTTPS listeners: accept loops with a connection cap, TLS with the server
//! certificate (ALPN `http/1.1`), HTTP/1.1 with upgrades (for WebSocket) served by hyper,
//! and the route table. Slow clients are bounded by a header-read timeout and a TLS
//! handshake timeout.
//!
//! Which connections may carry client streams: HTTPS ones, plaintext ones from a loopback
//! peer (the usual TLS-terminating reverse proxy, and local development), and any when
//! `c2s.require_tls` is off. The c2s code then treats the stream as confidential.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use hyper_util::rt::{TokioIo, TokioTimer};
use starling_c2s::C2sEntry;
use starling_core::config::ListenerKind;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tower::ServiceExt;

use crate::{bosh, cors, hostmeta, websocket};

/// Time a client has to send its request headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Time a client has to finish the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);

/// The running HTTP listeners.
pub struct HttpListeners {
    /// (kind, bound address) of each HTTP listener, in configuration order.
    pub addresses: Vec<(ListenerKind, SocketAddr)>,
    tasks: Vec<JoinHandle<()>>,
}

impl HttpListeners {
    /// The first bound address of a kind.
    pub fn address(&self, kind: ListenerKind) -> Option<SocketAddr> {
        self.addresses
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, a)| *a)
    }

    /// Waits for the accept loops to end (after shutdown).
    pub async fn join(self) {
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// What a handler knows about the connection a request came on.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    /// The client's address.
    pub peer: SocketAddr,
    /// The connection runs TLS.
    pub tls: bool,
}

/// Shared by every handler.
#[derive(Clone)]
pub(crate) struct App {
    pub(crate) entry: C2sEntry,
    pub(crate) bosh: Arc<bosh::Sessions>,
}

impl App {
    pub(crate) fn config(&self) -> &starling_core::Config {
        self.entry.server().config()
    }

    /// Whether a client stream may run over this connection (see the module docs).
    pub(crate) fn confidential(&self, info: &ConnInfo) -> bool {
        stream_allowed(info, self.config().c2s.require_tls)
    }
}

/// HTTPS, a loopback peer, or TLS not required.
fn stream_allowed(info: &ConnInfo, require_tls: bool) -> bool {
    info.tls || info.peer.ip().is_loopback() || !require_tls
}

/// Binds every `http` and `https` listener of the configuration and starts serving.
pub async fn start(
    entry: C2sEntry,
    tls: Arc<rustls::ServerConfig>,
) -> std::io::Result<HttpListeners> {
    start_with_routes(entry, tls, Router::new()).await
}

/// [`start`], with more routes served on the same listeners (HTTP upload, metrics). Their
/// handlers can take `Extension<ConnInfo>` to learn the peer and whether it came over TLS.
pub async fn start_with_routes(
    entry: C2sEntry,
    tls: Arc<rustls::ServerConfig>,
    extra: Router,
) -> std::io::Result<HttpListeners> {
    let server = entry.server().clone();
    let config = server.config();
    let mut tls_config = (*tls).clone();
    tls_config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls_config));
    let app = App {
        entry,
        bosh: bosh::Sessions::start(server.clone()),
    };
    let router = routes(app, config).merge(extra);
    let mut addresses = Vec::new();
    let mut tasks = Vec::new();
    for l in &config.listeners {
        let tls = match l.kind {
            ListenerKind::Http => false,
            ListenerKind::Https => true,
            _ => continue,
        };
        let socket = TcpListener::bind(l.address).await.map_err(|e| {
            std::io::Error::new(e.kind(), format!("cannot listen on {}: {e}", l.address))
        })?;
        let bound = socket.local_addr()?;
        tracing::info!(kind = ?l.kind, address = %bound, "listening");
        addresses.push((l.kind, bound));
        tasks.push(tokio::spawn(accept_loop(
            socket,
            tls.then(|| acceptor.clone()),
            router.clone(),
            Arc::new(Semaphore::new(config.http.max_http_connections)),
            server.shutdown_token().clone(),
        )));
    }
    Ok(HttpListeners { addresses, tasks })
}

fn routes(app: App, config: &starling_core::Config) -> Router {
    let http = &config.http;
    let body_limit = config.c2s.max_stanza_bytes + 16 * 1024;
    Router::new()
        .route(&http.websocket_path, get(websocket::handler))
        .route(
            &http.bosh_path,
            post(bosh::handler)
                .options(preflight)
                .get(|| async { "Starling BOSH endpoint: POST XEP-0124 bodies here.\n" }),
        )
        .route(
            "/.well-known/host-meta",
            get(host_meta_xml).options(preflight),
        )
        .route(
            "/.well-known/host-meta.json",
            get(host_meta_json).options(preflight),
        )
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(app)
}

async fn preflight(State(app): State<App>, headers: HeaderMap) -> Response {
    cors::preflight(&app.config().http, &headers).into_response()
}

async fn host_meta_xml(
    State(app): State<App>,
    Extension(info): Extension<ConnInfo>,
    headers: HeaderMap,
) -> Response {
    hostmeta::respond(&app.config().http, &headers, info.tls, false).into_response()
}

async fn host_meta_json(
    State(app): State<App>,
    Extension(info): Extension<ConnInfo>,
    headers: HeaderMap,
) -> Response {
    hostmeta::respond(&app.config().http, &headers, info.tls, true).into_response()
}

/// A refusal with a short plain-text reason.
pub(crate) fn refuse(status: StatusCode, why: &'static str) -> Response {
    (status, why).into_response()
}

async fn accept_loop(
    socket: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    router: Router,
    slots: Arc<Semaphore>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = socket.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "HTTP connection limit reached; refusing connection");
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let router = router.clone();
        let tls = tls.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            match tls {
                None => serve(tcp, ConnInfo { peer, tls: false }, router, shutdown).await,
                Some(acceptor) => {
                    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            serve(stream, ConnInfo { peer, tls: true }, router, shutdown).await
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "HTTPS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "HTTPS handshake timed out"),
                    }
                }
            }
            drop(slot);
        });
    }
}

async fn serve<IO>(
    io: IO,
    info: ConnInfo,
    router: Router,
    shutdown: tokio_util::sync::CancellationToken,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(info);
        router.clone().oneshot(req)
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(peer = %info.peer, error = %e, "HTTP connection ended with an error");
            }
        }
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_connections_may_carry_streams() {
        let info = |peer: &str, tls| ConnInfo {
            peer: peer.parse().unwrap(),
            tls,
        };
        assert!(stream_allowed(&info("127.0.0.1:1", false), true));
        assert!(stream_allowed(&info("[::1]:1", false), true));
        assert!(stream_allowed(&info("192.0.2.7:1", true), true));
        assert!(!stream_allowed(&info("192.0.2.7:1", false), true));
        assert!(stream_allowed(&info("192.0.2.7:1", false), false));
    }
}
