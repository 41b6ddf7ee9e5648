//! Server-to-server streams (federation): RFC 6120 §4–§6 for server streams, certificate
//! authentication with SASL EXTERNAL (XEP-0178, identities per RFC 6125), Server Dialback
//! (XEP-0220, keys per XEP-0185) where the policy allows it, direct TLS (XEP-0368).
//!
//! What lives where: [`listener`] accepts inbound streams, authenticates the peer and routes
//! what it sends after checking `from`/`to` against the authenticated domain pairs;
//! [`connector`] opens and authenticates outbound streams (and the short dialback
//! verification streams); [`pool`] maps each (local, remote) domain pair to a connection
//! (its own, a shared one, or an inbound bidirectional one) with a bounded queue and is the
//! core's [`starling_core::RemoteRoute`]; [`dialback`] is the pure part of dialback; [`tls`]
//! builds the TLS configurations and verifies peers (RFC 6125 identities in `tls::verify`);
//! [`resolver`] finds a domain's server (static routes first, then DNS in `dns`); `throttle`
//! paces what a peer sends.
//!
//! Streams are one-way, as RFC 6120 §4.1 describes, unless both sides agree on a
//! bidirectional stream (XEP-0288, `s2s.bidi`): then the one connection the initiating side
//! opened carries stanzas both ways, and the receiving side's pool sends its replies on it
//! instead of opening a second connection. Both directions carry several authenticated domain
//! pairs (piggybacking, XEP-0220 §4.4): another local domain sending to a remote domain we
//! already have a stream to is authenticated on that stream with an extra `db:result`.

pub mod connector;
pub mod dialback;
mod dns;
mod listener;
pub mod pool;
pub mod resolver;
mod throttle;
pub mod tls;
mod transport;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use starling_core::config::{S2sConfig, S2sPolicy};
use starling_core::Server;
use starling_proto::framer::Limits;
use starling_proto::ns;
use tokio::task::JoinHandle;

pub use pool::Pool;
pub use resolver::{Resolver, StaticRoutes, Target};
pub use tls::verify::PeerVerifier;
pub use tls::S2sTls;

/// What both directions share.
pub(crate) struct Ctx {
    pub config: S2sConfig,
    pub tls: S2sTls,
    pub verifier: PeerVerifier,
    pub resolver: Arc<dyn Resolver>,
    /// The dialback secret (XEP-0185), from the data directory.
    pub secret: Arc<[u8]>,
    /// Authenticated inbound streams per remote domain, for `max_connections_per_domain`.
    pub inbound_per_domain: Mutex<HashMap<String, usize>>,
    /// TCP connections our listeners accepted, ever (diagnostics and tests).
    pub connections_accepted: AtomicU64,
    /// TCP connections we opened to peers (streams and dialback verifications), ever.
    pub connections_opened: AtomicU64,
}

impl Ctx {
    pub(crate) fn policy(&self) -> S2sPolicy {
        self.config.policy
    }

    /// Parser limits of server streams.
    pub(crate) fn limits(&self) -> Limits {
        Limits {
            max_stanza_bytes: self.config.max_stanza_bytes,
            max_depth: 64,
            max_attributes: 64,
            max_buffered_bytes: self.config.max_stanza_bytes + 16 * 1024,
            // Servers relay what their users send plus room history and pubsub items:
            // the library default, above a client's own cap.
            ..Limits::default()
        }
    }
}

/// The running federation side: listeners and the outbound pool.
pub struct S2s {
    /// The STARTTLS listener's bound address.
    pub address: SocketAddr,
    /// The direct-TLS listener's bound address, when configured.
    pub direct_tls_address: Option<SocketAddr>,
    /// The outbound pool (installed on the server as its remote route).
    pub pool: Arc<Pool>,
    ctx: Arc<Ctx>,
    tasks: Vec<JoinHandle<()>>,
}

impl S2s {
    /// TCP connections the s2s listeners have accepted since start.
    pub fn connections_accepted(&self) -> u64 {
        self.ctx.connections_accepted.load(Ordering::Relaxed)
    }

    /// TCP connections opened to peers since start (streams and dialback verifications).
    pub fn connections_opened(&self) -> u64 {
        self.ctx.connections_opened.load(Ordering::Relaxed)
    }

    /// Waits for the accept loops to end (after shutdown).
    pub async fn join(self) {
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// Why federation could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// TLS material or trust roots could not be loaded.
    #[error("s2s: {0}")]
    Tls(#[from] tls::TlsError),
    /// A listener could not bind, or the secret could not be stored.
    #[error("s2s: {0}")]
    Io(#[from] std::io::Error),
}

/// Starts federation with the configured resolver: static routes, then DNS when enabled.
pub async fn start(
    server: Arc<Server>,
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<S2s, StartError> {
    let config = server.config().s2s.clone();
    let fallback: Option<Box<dyn Resolver>> = if config.dns {
        Some(Box::new(dns::DnsResolver::new()))
    } else {
        None
    };
    let resolver = Arc::new(StaticRoutes::new(config.routes.clone(), fallback));
    let tls = S2sTls::from_pem_files(cert, key)?;
    let verifier = PeerVerifier::load(config.trust_roots.as_deref())?;
    start_with(server, tls, verifier, resolver).await
}

/// Starts federation with explicit TLS, trust and resolver (tests).
pub async fn start_with(
    server: Arc<Server>,
    tls: S2sTls,
    verifier: PeerVerifier,
    resolver: Arc<dyn Resolver>,
) -> Result<S2s, StartError> {
    let config = server.config().s2s.clone();
    let secret = starling_core::secret::load_or_create(
        &server.config().server.data_dir.join("dialback-secret"),
    )?;
    let ctx = Arc::new(Ctx {
        config: config.clone(),
        tls,
        verifier,
        resolver,
        secret,
        inbound_per_domain: Mutex::new(HashMap::new()),
        connections_accepted: AtomicU64::new(0),
        connections_opened: AtomicU64::new(0),
    });
    let pool = Pool::new(ctx.clone());
    server.set_remote(pool.clone());
    let limits = Arc::new(tokio::sync::Semaphore::new(config.max_inbound_connections));
    let mut tasks = Vec::new();
    let (address, task) = listener::bind(
        server.clone(),
        ctx.clone(),
        pool.clone(),
        config.listen,
        false,
        limits.clone(),
    )
    .await?;
    tasks.push(task);
    let mut direct_tls_address = None;
    if let Some(addr) = config.listen_direct_tls {
        let (a, task) = listener::bind(
            server.clone(),
            ctx.clone(),
            pool.clone(),
            addr,
            true,
            limits,
        )
        .await?;
        direct_tls_address = Some(a);
        tasks.push(task);
    }
    Ok(S2s {
        address,
        direct_tls_address,
        pool,
        ctx,
        tasks,
    })
}

/// Our stream header for a server stream, declaring the dialback prefix (XEP-0220 §2.1).
pub(crate) fn stream_header(from: &str, to: Option<&str>, id: &str) -> String {
    let h = starling_proto::writer::stream_header(ns::SERVER, Some(from), to, id, None);
    h.replacen(
        "<stream:stream ",
        "<stream:stream xmlns:db='jabber:server:dialback' ",
        1,
    )
}

/// A fresh stream id (also the dialback key input, so unguessable).
pub(crate) fn new_id() -> String {
    use rand::Rng;
    let bytes: [u8; 16] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_declares_dialback() {
        let h = stream_header("a.test", Some("b.test"), "id1");
        assert!(h.contains("xmlns:db='jabber:server:dialback'"), "{h}");
        assert!(h.contains("xmlns='jabber:server'"), "{h}");
    }
}
