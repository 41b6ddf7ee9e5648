//! Accept loops for client listeners, with the connection caps of DESIGN principle 3: a global
//! maximum and a per-IP maximum. A connection over a cap gets a stream error
//! (`policy-violation`) and is closed before any parsing happens.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use parking_lot::Mutex;
use starling_core::config::ListenerKind;
use starling_core::Server;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

use crate::register::Registration;
use crate::tls::TlsSettings;

/// The running listeners: their bound addresses (useful with port 0) and tasks.
pub struct Listeners {
    /// (kind, bound address) of each listener, in configuration order.
    pub addresses: Vec<(ListenerKind, SocketAddr)>,
    tasks: Vec<JoinHandle<()>>,
}

impl Listeners {
    /// The first bound address of a kind.
    pub fn address(&self, kind: ListenerKind) -> Option<SocketAddr> {
        self.addresses
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, a)| *a)
    }

    /// Waits for every accept loop to end (after shutdown).
    pub async fn join(self) {
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// Counts connections globally and per IP.
pub(crate) struct ConnectionLimits {
    global: Arc<Semaphore>,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    max_per_ip: usize,
}

/// Held by a connection task; releases its slots when dropped.
pub(crate) struct ConnectionSlot {
    limits: Arc<ConnectionLimits>,
    ip: IpAddr,
    _permit: OwnedSemaphorePermit,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut map = self.limits.per_ip.lock();
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

impl ConnectionLimits {
    fn acquire(self: &Arc<Self>, ip: IpAddr) -> Option<ConnectionSlot> {
        let permit = self.global.clone().try_acquire_owned().ok()?;
        let mut map = self.per_ip.lock();
        let n = map.entry(ip).or_insert(0);
        if *n >= self.max_per_ip {
            return None;
        }
        *n += 1;
        Some(ConnectionSlot {
            limits: self.clone(),
            ip,
            _permit: permit,
        })
    }
}

/// What every connection of every client listener shares.
#[derive(Clone)]
pub(crate) struct Shared {
    /// In-band registration state (XEP-0077).
    pub registration: Arc<Registration>,
    /// Keys the fake SCRAM salts of unknown users, stable across restarts.
    pub sasl_secret: Arc<[u8]>,
    /// Resumable stream-managed sessions (XEP-0198).
    pub sm_registry: Arc<crate::smacks::Registry>,
}

/// Binds every configured listener and starts its accept loop.
pub async fn start_listeners(server: Arc<Server>, tls: TlsSettings) -> std::io::Result<Listeners> {
    let c2s = &server.config().c2s;
    let limits = Arc::new(ConnectionLimits {
        global: Arc::new(Semaphore::new(c2s.max_connections)),
        per_ip: Mutex::new(HashMap::new()),
        max_per_ip: c2s.max_connections_per_ip,
    });
    let shared = Shared {
        registration: Arc::new(Registration::default()),
        sasl_secret: load_or_create_secret(&server.config().server.data_dir.join("sasl-secret"))?,
        sm_registry: Arc::new(crate::smacks::Registry::default()),
    };
    let mut addresses = Vec::new();
    let mut tasks = Vec::new();
    for l in &server.config().listeners {
        let socket = TcpListener::bind(l.address).await.map_err(|e| {
            std::io::Error::new(e.kind(), format!("cannot listen on {}: {e}", l.address))
        })?;
        let bound = socket.local_addr()?;
        tracing::info!(kind = ?l.kind, address = %bound, "listening");
        addresses.push((l.kind, bound));
        tasks.push(tokio::spawn(accept_loop(
            socket,
            l.kind,
            server.clone(),
            tls.clone(),
            limits.clone(),
            shared.clone(),
        )));
    }
    Ok(Listeners { addresses, tasks })
}

async fn accept_loop(
    socket: TcpListener,
    kind: ListenerKind,
    server: Arc<Server>,
    tls: TlsSettings,
    limits: Arc<ConnectionLimits>,
    shared: Shared,
) {
    let shutdown = server.shutdown_token().clone();
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = socket.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: log and back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let Some(slot) = limits.acquire(peer.ip()) else {
            tracing::warn!(%peer, "connection limit reached; refusing connection");
            tokio::spawn(refuse(tcp, kind));
            continue;
        };
        let server = server.clone();
        let tls = tls.clone();
        let shared = shared.clone();
        tokio::spawn(async move {
            crate::negotiate::run_connection(server, tls, tcp, peer, kind, shared).await;
            drop(slot);
        });
    }
}

/// Tells a refused plaintext client why, in XMPP terms, then closes.
async fn refuse(mut tcp: TcpStream, kind: ListenerKind) {
    if kind == ListenerKind::C2s {
        let msg = concat!(
            "<?xml version='1.0'?><stream:stream xmlns='jabber:client' ",
            "xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>",
            "<stream:error><policy-violation xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>",
            "<text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>too many connections</text>",
            "</stream:error></stream:stream>"
        );
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(2),
            tcp.write_all(msg.as_bytes()),
        )
        .await;
    }
    let _ = tcp.shutdown().await;
}

/// The server secret that keys the fake SCRAM salts of unknown users (so that a salt does not
/// reveal whether an account exists). Kept in the data directory so that the fake salts stay
/// the same across restarts; created with 32 random bytes, readable by the owner only.
fn load_or_create_secret(path: &std::path::Path) -> std::io::Result<Arc<[u8]>> {
    match std::fs::read(path) {
        Ok(bytes) if bytes.len() >= 32 => return Ok(bytes.into()),
        Ok(_) => tracing::warn!(path = %path.display(), "SASL secret too short; replacing it"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(std::io::Error::new(
                e.kind(),
                format!("cannot read {}: {e}", path.display()),
            ))
        }
    }
    use rand::Rng;
    let secret: [u8; 32] = rand::rng().random();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    use std::io::Write;
    let mut f = options.open(path).map_err(|e| {
        std::io::Error::new(e.kind(), format!("cannot create {}: {e}", path.display()))
    })?;
    f.write_all(&secret)?;
    f.sync_all()?;
    Ok(secret.to_vec().into())
}
