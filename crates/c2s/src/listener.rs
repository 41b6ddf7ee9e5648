//! Accept loops for client listeners, with the connection caps of DESIGN principle 3: a global
//! maximum and a per-IP maximum, and the penalty box of [`crate::throttle`] (connection
//! floods, persistent failed logins). A connection over a cap or from an address in the
//! penalty box gets a stream error (`policy-violation`) and is closed before any parsing
//! happens.
//!
//! [`C2sEntry`] is the door for front ends that carry client streams over something other
//! than a raw socket (the WebSocket and BOSH front end of crates/http): it admits a
//! connection under the same caps and the same penalty box (one table for every transport)
//! and runs the same negotiation and session code over an in-process byte pipe, so that
//! such sessions are ordinary sessions in every respect, failed logins included. It returns
//! why it refused ([`ConnectionRefused`]); the front end answers in its own protocol.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use starling_core::config::ListenerKind;
use starling_core::Server;
use tokio::io::{AsyncWriteExt, DuplexStream};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

use crate::register::Registration;
use crate::tls::TlsSettings;
use crate::transport::Transport;

/// The running listeners: their bound addresses (useful with port 0) and tasks.
pub struct Listeners {
    /// (kind, bound address) of each listener, in configuration order.
    pub addresses: Vec<(ListenerKind, SocketAddr)>,
    tasks: Vec<JoinHandle<()>>,
    entry: C2sEntry,
}

/// Bytes the in-process pipe buffers in each direction; a full pipe applies back-pressure
/// to the writer, as a full socket buffer would.
const PIPE_BUFFER: usize = 64 * 1024;

/// Runs client streams that arrive through another front end (see the module docs).
#[derive(Clone)]
pub struct C2sEntry {
    server: Arc<Server>,
    tls: TlsSettings,
    limits: Arc<ConnectionLimits>,
    shared: Shared,
}

/// What carries a stream that comes through [`C2sEntry`] (named in log lines).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carrier {
    /// XMPP over WebSocket (RFC 7395): one stream per upgrade.
    WebSocket,
    /// BOSH (XEP-0124/XEP-0206): one stream per session.
    Bosh,
}

impl Carrier {
    fn name(self) -> &'static str {
        match self {
            Carrier::WebSocket => "websocket",
            Carrier::Bosh => "bosh",
        }
    }
}

/// Why [`C2sEntry::open`] refused a new stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ConnectionRefused {
    /// The global or the per-address cap on simultaneous connections is reached.
    #[error("connection limit reached")]
    Limit,
    /// The address is in the penalty box (connection flood or failed logins) for this much
    /// longer.
    #[error("address in the penalty box for {}s more", .retry_after.as_secs())]
    PenaltyBox {
        /// Time left in the penalty box.
        retry_after: Duration,
    },
}

impl C2sEntry {
    /// Admits a client stream from `peer` carried by `carrier`, under the penalty box and the
    /// connection caps (as the TCP listeners do: the new stream counts against the address's
    /// connection rate), and starts the ordinary c2s connection task on one end of an
    /// in-process pipe; returns the other end, which the caller feeds with the client's XMPP
    /// bytes (stream header, stanzas, closing tag) and reads the server's bytes from. The
    /// stream counts as confidential (the caller vouches for that) and has no channel
    /// binding; its failed logins count against `peer`'s address. Dropping the returned end
    /// closes the stream.
    pub fn open(
        &self,
        peer: SocketAddr,
        carrier: Carrier,
    ) -> Result<DuplexStream, ConnectionRefused> {
        let policy = crate::throttle::Policy::from_config(&self.server.config().limits);
        if let Err(banned) =
            self.shared
                .registration
                .auth_throttle
                .admit(peer.ip(), carrier.name(), &policy)
        {
            tracing::debug!(%peer, via = carrier.name(), left_secs = banned.left.as_secs(), "address in the penalty box; refusing a stream");
            return Err(ConnectionRefused::PenaltyBox {
                retry_after: banned.left,
            });
        }
        let Some(slot) = self.limits.acquire(peer.ip()) else {
            tracing::warn!(%peer, via = carrier.name(), "connection limit reached; refusing an HTTP-carried stream");
            return Err(ConnectionRefused::Limit);
        };
        let (ours, theirs) = tokio::io::duplex(PIPE_BUFFER);
        let server = self.server.clone();
        let tls = self.tls.clone();
        let shared = self.shared.clone();
        tokio::spawn(async move {
            crate::negotiate::run_connection(
                server,
                tls,
                Transport::Internal(ours),
                peer,
                ListenerKind::C2s,
                shared,
                slot,
            )
            .await;
        });
        Ok(theirs)
    }

    /// The server this entry feeds.
    pub fn server(&self) -> &Arc<Server> {
        &self.server
    }
}

impl Listeners {
    /// The entry for streams carried by other front ends (WebSocket, BOSH).
    pub fn entry(&self) -> C2sEntry {
        self.entry.clone()
    }

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

#[cfg(test)]
impl ConnectionSlot {
    /// A slot of a limit of one connection, for tests that need a session's slot.
    pub(crate) fn for_test() -> ConnectionSlot {
        let limits = Arc::new(ConnectionLimits {
            global: Arc::new(Semaphore::new(1)),
            per_ip: Mutex::new(HashMap::new()),
            max_per_ip: 1,
        });
        limits
            .acquire(IpAddr::from([127, 0, 0, 1]))
            .expect("a free slot")
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
        sasl_secret: starling_core::secret::load_or_create(
            &server.config().server.data_dir.join("sasl-secret"),
        )?,
        sm_registry: Arc::new(crate::smacks::Registry::default()),
    };
    let mut addresses = Vec::new();
    let mut tasks = Vec::new();
    for l in &server.config().listeners {
        if !matches!(l.kind, ListenerKind::C2s | ListenerKind::C2sDirectTls) {
            // Served by another front end (crates/http).
            continue;
        }
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
    let entry = C2sEntry {
        server,
        tls,
        limits,
        shared,
    };
    Ok(Listeners {
        addresses,
        tasks,
        entry,
    })
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
        // The penalty box (crate::throttle): floods of connections and persistent guessers.
        let policy = crate::throttle::Policy::from_config(&server.config().limits);
        if let Err(banned) = shared
            .registration
            .auth_throttle
            .admit(peer.ip(), "c2s", &policy)
        {
            tracing::debug!(%peer, left_secs = banned.left.as_secs(), "address in the penalty box; refusing connection");
            tokio::spawn(refuse(
                tcp,
                kind,
                "too many connections or failed logins from your address; try again later",
            ));
            continue;
        }
        let Some(slot) = limits.acquire(peer.ip()) else {
            tracing::warn!(%peer, "connection limit reached; refusing connection");
            tokio::spawn(refuse(tcp, kind, "too many connections"));
            continue;
        };
        let server = server.clone();
        let tls = tls.clone();
        let shared = shared.clone();
        tokio::spawn(async move {
            crate::negotiate::run_connection(
                server,
                tls,
                Transport::Plain(tcp),
                peer,
                kind,
                shared,
                slot,
            )
            .await;
        });
    }
}

/// Tells a refused plaintext client why (`text`), in XMPP terms, then closes.
async fn refuse(mut tcp: TcpStream, kind: ListenerKind, text: &'static str) {
    if kind == ListenerKind::C2s {
        let msg = format!(
            "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
             xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>\
             <stream:error><policy-violation xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>\
             <text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>{text}</text>\
             </stream:error></stream:stream>"
        );
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(2),
            tcp.write_all(msg.as_bytes()),
        )
        .await;
    }
    let _ = tcp.shutdown().await;
}
