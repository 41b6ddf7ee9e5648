//! SIP over UDP and TCP (RFC 3261 §18) with non-INVITE transactions (§17.1.2, §17.2.2).
//!
//! What it owns: one UDP socket and one TCP listener on the same address, TCP connections
//! (accepted and opened, capped together, each with a bounded write queue and an idle
//! timeout), client transactions (a branch per request, retransmission over UDP with timers
//! E and F, the final response handed back to the caller) and server transactions (the
//! final response kept for 32 s and sent again when the request is retransmitted). Every
//! table is capped by `[sip]` limits and every task ends on the server's shutdown token.
//!
//! What it does not: decide anything about a request. Requests go to the gateway through a
//! bounded queue ([`Incoming`]); when the queue or the transaction table is full the request
//! is answered `503` here. Requests from one IP address beyond the configured rate are
//! dropped. INVITE transactions are not implemented (the gateway answers 405).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::sip::{frame_len, SipMessage};

/// Timer T1 (RFC 3261 §17.1.1.1): the round-trip estimate.
const T1: Duration = Duration::from_millis(500);
/// Timer T2: the longest retransmission interval for non-INVITE requests.
const T2: Duration = Duration::from_secs(4);
/// Timer F / J: 64*T1, how long a non-INVITE transaction lives.
const TSX_LIFETIME: Duration = Duration::from_secs(32);
/// A TCP connection with no inbound byte for this long is closed.
const TCP_IDLE: Duration = Duration::from_secs(600);
/// Time allowed to open an outbound TCP connection.
const TCP_CONNECT: Duration = Duration::from_secs(5);
/// Messages waiting to be written on one TCP connection.
const TCP_QUEUE: usize = 64;
/// Most IP addresses the rate limiter tracks; the table is cleared when it is full.
const RATE_TABLE: usize = 10_000;

/// Where a request came from: responses go back the same way (RFC 3261 §18.2.2, with the
/// source port as RFC 3581 `rport` would have it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    Udp(SocketAddr),
    Tcp(SocketAddr),
}

impl Origin {
    pub(crate) fn addr(self) -> SocketAddr {
        match self {
            Origin::Udp(a) | Origin::Tcp(a) => a,
        }
    }
}

/// Where a request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Dest {
    pub addr: SocketAddr,
    /// Use TCP even when the request is small.
    pub tcp: bool,
}

/// A request for the gateway, with how many bytes it had on the wire.
#[derive(Debug)]
pub(crate) struct Incoming {
    pub request: SipMessage,
    pub origin: Origin,
    pub wire_len: usize,
}

/// Why a client transaction failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TsxError {
    #[error("no final response within {0:?} (timer F)")]
    Timeout(Duration),
    #[error("too many open transactions")]
    Busy,
    #[error("request of {0} bytes is larger than max_message_bytes")]
    TooLarge(usize),
    #[error("transport: {0}")]
    Io(#[from] std::io::Error),
}

/// The limits the transport enforces (from `[sip]`).
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    pub max_message_bytes: usize,
    pub udp_max_bytes: usize,
    pub max_transactions: usize,
    pub max_tcp_connections: usize,
    pub max_requests_per_ip_per_sec: u32,
}

enum ServerTsx {
    /// The gateway is working on it; retransmissions are absorbed.
    Proceeding { since: Instant },
    /// Answered: retransmissions get the same bytes again.
    Completed {
        response: Vec<u8>,
        origin: Origin,
        until: Instant,
    },
}

/// The transport and transaction layer.
pub(crate) struct Transport {
    udp: Arc<UdpSocket>,
    local: SocketAddr,
    limits: Limits,
    shutdown: CancellationToken,
    /// Remote address -> write queue of its TCP connection.
    tcp: Mutex<HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>>,
    tcp_slots: Arc<Semaphore>,
    /// Branch -> where the responses of our request go.
    clients: Mutex<HashMap<String, mpsc::Sender<SipMessage>>>,
    /// (branch, method) -> state of a request we received.
    servers: Mutex<HashMap<(String, String), ServerTsx>>,
    /// Requests for the gateway.
    requests: mpsc::Sender<Incoming>,
    /// IP -> (start of the current second, requests in it).
    rate: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl Transport {
    /// Binds UDP and TCP on `listen` (the same port for both; with port 0 the TCP listener
    /// takes the port UDP was given) and starts the receive tasks. Requests arrive on the
    /// returned receiver.
    pub(crate) async fn bind(
        listen: SocketAddr,
        limits: Limits,
        shutdown: CancellationToken,
    ) -> std::io::Result<(Arc<Transport>, mpsc::Receiver<Incoming>)> {
        let udp = UdpSocket::bind(listen).await?;
        let local = udp.local_addr()?;
        let tcp = TcpListener::bind(local).await?;
        let (tx, rx) = mpsc::channel(limits.max_transactions);
        let transport = Arc::new(Transport {
            udp: Arc::new(udp),
            local,
            tcp_slots: Arc::new(Semaphore::new(limits.max_tcp_connections)),
            limits,
            shutdown,
            tcp: Mutex::new(HashMap::new()),
            clients: Mutex::new(HashMap::new()),
            servers: Mutex::new(HashMap::new()),
            requests: tx,
            rate: Mutex::new(HashMap::new()),
        });
        tokio::spawn(transport.clone().udp_loop());
        tokio::spawn(transport.clone().accept_loop(tcp));
        tracing::info!(address = %local, "SIP gateway listening on UDP and TCP");
        Ok((transport, rx))
    }

    /// The bound address (UDP and TCP).
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local
    }

    async fn udp_loop(self: Arc<Self>) {
        let mut buf = vec![0u8; 65_535];
        loop {
            let received = tokio::select! {
                _ = self.shutdown.cancelled() => return,
                r = self.udp.recv_from(&mut buf) => r,
            };
            match received {
                Ok((n, from)) => self.on_bytes(&buf[..n], Origin::Udp(from)).await,
                Err(e) => {
                    tracing::debug!(error = %e, "SIP UDP receive error");
                }
            }
        }
    }

    async fn accept_loop(self: Arc<Self>, listener: TcpListener) {
        loop {
            let accepted = tokio::select! {
                _ = self.shutdown.cancelled() => return,
                a = listener.accept() => a,
            };
            let (stream, remote) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::debug!(error = %e, "SIP TCP accept error");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(permit) = self.tcp_slots.clone().try_acquire_owned() else {
                tracing::warn!(%remote, "SIP: max_tcp_connections reached; connection refused");
                continue;
            };
            self.clone().run_connection(stream, remote, permit);
        }
    }

    /// Registers a TCP connection and spawns its reader and writer.
    fn run_connection(
        self: Arc<Self>,
        stream: TcpStream,
        remote: SocketAddr,
        permit: tokio::sync::OwnedSemaphorePermit,
    ) -> mpsc::Sender<Vec<u8>> {
        let (mut read, mut write) = stream.into_split();
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(TCP_QUEUE);
        self.tcp.lock().insert(remote, tx.clone());
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            loop {
                let next = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    m = rx.recv() => m,
                };
                let Some(bytes) = next else { break };
                if write.write_all(&bytes).await.is_err() {
                    break;
                }
            }
        });
        let me = self.clone();
        let reader_tx = tx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let max = me.limits.max_message_bytes;
            let mut buf: Vec<u8> = Vec::with_capacity(4096);
            let mut chunk = vec![0u8; 8192];
            'conn: loop {
                let n = tokio::select! {
                    _ = me.shutdown.cancelled() => break,
                    r = tokio::time::timeout(TCP_IDLE, read.read(&mut chunk)) => match r {
                        Ok(Ok(0)) | Ok(Err(_)) => break,
                        Ok(Ok(n)) => n,
                        Err(_) => {
                            tracing::debug!(%remote, "SIP TCP connection idle; closed");
                            break;
                        }
                    },
                };
                buf.extend_from_slice(&chunk[..n]);
                loop {
                    let skip = buf
                        .iter()
                        .take_while(|b| matches!(b, b'\r' | b'\n'))
                        .count();
                    buf.drain(..skip);
                    match frame_len(&buf, max) {
                        Ok(Some(len)) => {
                            let frame: Vec<u8> = buf.drain(..len).collect();
                            me.on_bytes(&frame, Origin::Tcp(remote)).await;
                        }
                        Ok(None) => break,
                        Err(e) => {
                            tracing::warn!(%remote, error = %e, "SIP TCP framing error; connection closed");
                            break 'conn;
                        }
                    }
                }
            }
            let mut map = me.tcp.lock();
            if map.get(&remote).is_some_and(|s| s.same_channel(&reader_tx)) {
                map.remove(&remote);
            }
        });
        tx
    }

    /// Counts a request against its source's rate; false when over the limit.
    fn rate_ok(&self, ip: IpAddr) -> bool {
        let mut rate = self.rate.lock();
        if rate.len() >= RATE_TABLE && !rate.contains_key(&ip) {
            rate.clear();
        }
        let now = Instant::now();
        let entry = rate.entry(ip).or_insert((now, 0));
        if now.duration_since(entry.0) >= Duration::from_secs(1) {
            *entry = (now, 0);
        }
        entry.1 += 1;
        if entry.1 == self.limits.max_requests_per_ip_per_sec + 1 {
            tracing::warn!(%ip, "SIP: max_requests_per_ip_per_sec reached; requests dropped");
        }
        entry.1 <= self.limits.max_requests_per_ip_per_sec
    }

    async fn on_bytes(self: &Arc<Self>, bytes: &[u8], origin: Origin) {
        if bytes.iter().all(|b| b.is_ascii_whitespace()) {
            return; // keep-alive
        }
        let msg = match SipMessage::parse(bytes, self.limits.max_message_bytes) {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(from = %origin.addr(), error = %e, "SIP: unparsable message dropped");
                return;
            }
        };
        if msg.status().is_some() {
            let Some(branch) = msg.branch() else { return };
            let tx = self.clients.lock().get(branch).cloned();
            if let Some(tx) = tx {
                let _ = tx.try_send(msg);
            }
            return;
        }
        if !self.rate_ok(origin.addr().ip()) {
            return;
        }
        let (Some(branch), Some(method)) = (msg.branch(), msg.method()) else {
            tracing::debug!(from = %origin.addr(), "SIP: request without Via branch dropped");
            return;
        };
        if method == "ACK" {
            return; // only INVITE transactions have ACKs, and we refuse INVITE
        }
        let key = (branch.to_owned(), method.to_owned());
        enum Seen {
            New,
            Again(Option<(Vec<u8>, Origin)>),
            Full,
        }
        let seen = {
            let mut servers = self.servers.lock();
            let now = Instant::now();
            match servers.get(&key) {
                Some(ServerTsx::Completed {
                    response, origin, ..
                }) => Seen::Again(Some((response.clone(), *origin))),
                Some(ServerTsx::Proceeding { .. }) => Seen::Again(None),
                None => {
                    if servers.len() >= self.limits.max_transactions {
                        servers.retain(|_, t| match t {
                            ServerTsx::Completed { until, .. } => *until > now,
                            ServerTsx::Proceeding { since } => {
                                now.duration_since(*since) < TSX_LIFETIME
                            }
                        });
                    }
                    if servers.len() >= self.limits.max_transactions {
                        Seen::Full
                    } else {
                        servers.insert(key.clone(), ServerTsx::Proceeding { since: now });
                        Seen::New
                    }
                }
            }
        };
        match seen {
            Seen::New => {}
            Seen::Again(Some((bytes, to))) => {
                self.send_bytes(&bytes, to).await;
                return;
            }
            Seen::Again(None) => return,
            Seen::Full => {
                tracing::warn!("SIP: max_transactions reached; request answered 503");
                let r = msg.response(503, "Service Unavailable", None);
                self.send_bytes(&r.to_bytes(), origin).await;
                return;
            }
        }
        let incoming = Incoming {
            request: msg,
            origin,
            wire_len: bytes.len(),
        };
        if let Err(mpsc::error::TrySendError::Full(incoming)) = self.requests.try_send(incoming) {
            tracing::warn!("SIP: gateway queue full; request answered 503");
            let r = incoming.request.response(503, "Service Unavailable", None);
            self.respond(&incoming.request, origin, r).await;
        }
    }

    /// Sends the final response to a request and keeps it for retransmissions.
    pub(crate) async fn respond(&self, request: &SipMessage, origin: Origin, response: SipMessage) {
        let bytes = response.to_bytes();
        if let (Some(branch), Some(method)) = (request.branch(), request.method()) {
            self.servers.lock().insert(
                (branch.to_owned(), method.to_owned()),
                ServerTsx::Completed {
                    response: bytes.clone(),
                    origin,
                    until: Instant::now() + TSX_LIFETIME,
                },
            );
        }
        self.send_bytes(&bytes, origin).await;
    }

    async fn send_bytes(&self, bytes: &[u8], to: Origin) {
        match to {
            Origin::Udp(addr) => {
                if let Err(e) = self.udp.send_to(bytes, addr).await {
                    tracing::debug!(%addr, error = %e, "SIP UDP send failed");
                }
            }
            Origin::Tcp(addr) => {
                let tx = self.tcp.lock().get(&addr).cloned();
                match tx {
                    Some(tx) if tx.try_send(bytes.to_vec()).is_ok() => {}
                    _ => {
                        tracing::debug!(%addr, "SIP TCP connection gone or full; response dropped")
                    }
                }
            }
        }
    }

    async fn tcp_sender(
        self: &Arc<Self>,
        addr: SocketAddr,
    ) -> std::io::Result<mpsc::Sender<Vec<u8>>> {
        if let Some(tx) = self.tcp.lock().get(&addr).cloned() {
            if !tx.is_closed() {
                return Ok(tx);
            }
        }
        let permit = self.tcp_slots.clone().try_acquire_owned().map_err(|_| {
            tracing::warn!(%addr, "SIP: max_tcp_connections reached; cannot connect");
            std::io::Error::other("max_tcp_connections reached")
        })?;
        let stream = tokio::time::timeout(TCP_CONNECT, TcpStream::connect(addr))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timeout"))??;
        Ok(self.clone().run_connection(stream, addr, permit))
    }

    /// Whether a request of `len` bytes to `dest` goes over TCP (RFC 3261 §18.1.1, RFC 3428
    /// §5: over 1300 bytes a MESSAGE must use a congestion-controlled transport).
    pub(crate) fn uses_tcp(&self, dest: Dest, len: usize) -> bool {
        dest.tcp || len > self.limits.udp_max_bytes
    }

    /// Sends a request and waits for its final response (a client transaction). Adds the
    /// Via with a new branch and Max-Forwards.
    pub(crate) async fn request(
        self: &Arc<Self>,
        mut msg: SipMessage,
        dest: Dest,
    ) -> Result<SipMessage, TsxError> {
        let branch = format!("z9hG4bK{}", crate::random_token());
        // Decide the transport on a Via-less estimate plus the Via's size.
        let estimate = msg.to_bytes().len() + 80;
        let tcp = self.uses_tcp(dest, estimate);
        let proto = if tcp { "TCP" } else { "UDP" };
        let mut with_via = SipMessage::request(
            msg.method().unwrap_or("OPTIONS"),
            msg.request_uri().unwrap_or(""),
        );
        with_via.push(
            "Via",
            format!("SIP/2.0/{proto} {};branch={branch};rport", self.local),
        );
        if msg.header("Max-Forwards").is_none() {
            with_via.push("Max-Forwards", "70");
        }
        for (n, v) in msg.headers() {
            with_via.push(n, v.clone());
        }
        with_via.body = std::mem::take(&mut msg.body);
        let bytes = with_via.to_bytes();
        if bytes.len() > self.limits.max_message_bytes {
            return Err(TsxError::TooLarge(bytes.len()));
        }
        let (tx, mut rx) = mpsc::channel(4);
        {
            let mut clients = self.clients.lock();
            if clients.len() >= self.limits.max_transactions {
                tracing::warn!("SIP: max_transactions reached; request not sent");
                return Err(TsxError::Busy);
            }
            clients.insert(branch.clone(), tx);
        }
        let _guard = ClientGuard {
            transport: self,
            branch: &branch,
        };
        let deadline = tokio::time::Instant::now() + TSX_LIFETIME;
        if tcp {
            let sender = self.tcp_sender(dest.addr).await?;
            sender
                .try_send(bytes)
                .map_err(|_| std::io::Error::other("TCP write queue full"))?;
            loop {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(r)) if r.status().is_some_and(|c| c >= 200) => return Ok(r),
                    Ok(Some(_)) => continue,
                    _ => return Err(TsxError::Timeout(TSX_LIFETIME)),
                }
            }
        }
        let mut interval = T1;
        let mut provisional = false;
        self.udp.send_to(&bytes, dest.addr).await?;
        loop {
            let wake = (tokio::time::Instant::now() + interval).min(deadline);
            tokio::select! {
                r = rx.recv() => match r {
                    Some(r) if r.status().is_some_and(|c| c >= 200) => return Ok(r),
                    Some(_) => { provisional = true; continue; }
                    None => return Err(TsxError::Timeout(TSX_LIFETIME)),
                },
                _ = tokio::time::sleep_until(wake) => {
                    if wake >= deadline {
                        return Err(TsxError::Timeout(TSX_LIFETIME));
                    }
                    let _ = self.udp.send_to(&bytes, dest.addr).await;
                    interval = if provisional { T2 } else { (interval * 2).min(T2) };
                }
                _ = self.shutdown.cancelled() => return Err(TsxError::Timeout(Duration::ZERO)),
            }
        }
    }
}

/// Removes a client transaction from the table however the request ends.
struct ClientGuard<'a> {
    transport: &'a Transport,
    branch: &'a str,
}

impl Drop for ClientGuard<'_> {
    fn drop(&mut self) {
        self.transport.clients.lock().remove(self.branch);
    }
}
