//! Inbound server streams (RFC 6120 §4.1, the receiving side): accept on 5269 (STARTTLS) or
//! the direct-TLS port (XEP-0368), offer STARTTLS, then authenticate the peer by SASL
//! EXTERNAL (its certificate must be valid for the domain it claims, XEP-0178) or by Server
//! Dialback (XEP-0220, asking the claimed domain's authoritative server) where the policy
//! allows it. Several domains may be authenticated on one stream (dialback piggybacking,
//! XEP-0220 §4.4); a `db:result` for a domain the peer's certificate already covers is
//! answered at once, without a verification connection (XEP-0344 §2.4).
//!
//! Bidirectional streams (XEP-0288): when `s2s.bidi` is on we offer
//! `<bidi xmlns='urn:xmpp:features:bidi'/>` before authentication; a peer that answers with
//! `<bidi xmlns='urn:xmpp:bidi'/>` gets its authenticated pairs registered in the
//! [`crate::Pool`] for the reverse direction, and our stanzas to it leave on this stream.
//!
//! After authentication every stanza is checked against the authenticated (remote, local)
//! pairs: a `from` in a domain the peer has not proven is `invalid-from`, a `to` outside the
//! pairs is `host-unknown` (RFC 6120 §4.9.3.9, §4.9.3.6); both end the stream, so a peer can
//! never speak for a domain it did not authenticate. Accepted stanzas go to the router.
//! The answering side of dialback (`db:verify`, checking keys we made) is served here too.

use starling_proto::Attr;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use minidom::Element;
use starling_core::config::S2sPolicy;
use starling_core::Server;
use starling_proto::error::{StreamError, StreamErrorCondition as SE};
use starling_proto::framer::StreamEvent;
use starling_proto::jid::Jid;
use starling_proto::{ns, writer};
use starling_stream::{ReadError, XmlStream};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::connector::{self, Stream, NS_BIDI, NS_BIDI_FEATURE};
use crate::dialback::{self, NS_DB, NS_FEATURE};
use crate::pool::Pool;
use crate::throttle::Throttle;
use crate::transport::Transport;
use crate::Ctx;
use starling_core::xml::rename_namespace;

/// Binds a listener and starts its accept loop.
pub(crate) async fn bind(
    server: Arc<Server>,
    ctx: Arc<Ctx>,
    pool: Arc<Pool>,
    address: SocketAddr,
    direct_tls: bool,
    limits: Arc<Semaphore>,
) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
    let socket = TcpListener::bind(address)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {address}: {e}")))?;
    let bound = socket.local_addr()?;
    tracing::info!(address = %bound, direct_tls, "s2s listening");
    let task = tokio::spawn(accept_loop(socket, server, ctx, pool, direct_tls, limits));
    Ok((bound, task))
}

async fn accept_loop(
    socket: TcpListener,
    server: Arc<Server>,
    ctx: Arc<Ctx>,
    pool: Arc<Pool>,
    direct_tls: bool,
    limits: Arc<Semaphore>,
) {
    let shutdown = server.shutdown_token().clone();
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = socket.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "s2s accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = limits.clone().try_acquire_owned() else {
            tracing::warn!(%peer, limit = ctx.config.max_inbound_connections, "s2s inbound connection limit reached; refusing");
            drop(tcp);
            continue;
        };
        ctx.connections_accepted
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let _ = tcp.set_nodelay(true);
        tokio::spawn(run(
            server.clone(),
            ctx.clone(),
            pool.clone(),
            tcp,
            peer,
            direct_tls,
            permit,
        ));
    }
}

/// How an inbound stream ends.
enum End {
    Error(StreamError),
    PeerClosed,
    Broken,
}

impl From<ReadError> for End {
    fn from(e: ReadError) -> End {
        match e {
            ReadError::Stream(se) => End::Error(se),
            ReadError::Io(_) | ReadError::Eof => End::Broken,
        }
    }
}

fn serr(condition: SE, text: &str) -> End {
    End::Error(StreamError::with_text(condition, text))
}

/// One inbound connection.
struct Inbound {
    ctx: Arc<Ctx>,
    server: Arc<Server>,
    peer: SocketAddr,
    /// `None` only while the transport is being upgraded to TLS.
    stream: Option<Stream>,
    /// The local domain the peer addressed in its first header.
    local: Option<String>,
    /// The domain the peer claimed in its header's `from`.
    claimed: Option<String>,
    /// The id of our current stream header (dialback keys are bound to it).
    stream_id: String,
    header_sent: bool,
    /// Authenticated (remote, local) domain pairs.
    pairs: Vec<(String, String)>,
    /// When authentication must be done by.
    deadline: Instant,
    /// `stanzas_per_second`.
    throttle: Throttle,
    /// The pool, where a bidirectional stream registers for the reverse direction.
    pool: Arc<Pool>,
    /// The peer asked for a bidirectional stream (XEP-0288).
    bidi: bool,
    /// Stanzas of ours for the peer, when bidirectional: the sender is what the pool holds.
    outgoing: Option<(mpsc::Sender<Element>, mpsc::Receiver<Element>)>,
    /// Our id in the pool once registered.
    link_id: Option<u64>,
    /// Refused `db:result`s for extra domains on this stream.
    dialback_refusals: u32,
}

/// Refused extra-domain `db:result`s after which a stream is closed.
const MAX_DIALBACK_REFUSALS: u32 = 3;

impl Drop for Inbound {
    fn drop(&mut self) {
        let mut map = self.ctx.inbound_per_domain.lock();
        for (remote, _) in &self.pairs {
            if let Some(n) = map.get_mut(remote) {
                *n -= 1;
                if *n == 0 {
                    map.remove(remote);
                }
            }
        }
    }
}

async fn run(
    server: Arc<Server>,
    ctx: Arc<Ctx>,
    pool: Arc<Pool>,
    tcp: TcpStream,
    peer: SocketAddr,
    direct_tls: bool,
    _permit: OwnedSemaphorePermit,
) {
    let deadline = Instant::now() + Duration::from_secs(ctx.config.handshake_timeout_secs);
    let transport = if direct_tls {
        let acceptor = tokio_rustls::TlsAcceptor::from(ctx.tls.server.clone());
        match tokio::time::timeout_at(deadline, acceptor.accept(tcp)).await {
            Ok(Ok(s)) => Transport::Accepted(Box::new(s)),
            Ok(Err(e)) => {
                tracing::info!(%peer, error = %e, "s2s direct TLS handshake failed");
                return;
            }
            Err(_) => return,
        }
    } else {
        Transport::Plain(tcp)
    };
    let limits = ctx.limits();
    let rate = ctx.config.stanzas_per_second;
    let mut inbound = Inbound {
        ctx,
        server: server.clone(),
        peer,
        stream: Some(XmlStream::new(transport, limits)),
        local: None,
        claimed: None,
        stream_id: String::new(),
        header_sent: false,
        pairs: Vec::new(),
        deadline,
        throttle: Throttle::new(rate),
        pool,
        bidi: false,
        outgoing: None,
        link_id: None,
        dialback_refusals: 0,
    };
    let shutdown = server.shutdown_token().clone();
    let end = tokio::select! {
        e = inbound.serve() => e,
        _ = shutdown.cancelled() => End::Error(StreamError::new(SE::SystemShutdown)),
    };
    inbound.finish(end).await;
    inbound.release().await;
}

/// What the read loop got: something from the peer, or a stanza of ours to send to it.
enum Input {
    Event(StreamEvent),
    Out(Element),
}

impl Inbound {
    fn stream(&mut self) -> &mut Stream {
        self.stream
            .as_mut()
            .expect("stream present outside TLS upgrade")
    }

    fn is_tls(&self) -> bool {
        self.stream.as_ref().is_some_and(|s| s.get_ref().is_tls())
    }

    fn serves(&self, domain: &str) -> bool {
        self.server.config().is_local_host(domain) || self.server.is_served_domain(domain)
    }

    async fn finish(&mut self, end: End) {
        let local = self
            .local
            .clone()
            .or_else(|| self.server.config().server.hosts.first().cloned())
            .unwrap_or_default();
        let (peer, header_sent) = (self.peer, self.header_sent);
        let Some(stream) = self.stream.as_mut() else {
            return;
        };
        match end {
            End::Broken => return,
            End::PeerClosed => stream.queue_raw(writer::STREAM_CLOSE),
            End::Error(err) => {
                tracing::info!(%peer, condition = err.condition.name(), text = ?err.text, "closing inbound s2s stream with error");
                if !header_sent {
                    stream.queue_raw(&crate::stream_header(&local, None, &crate::new_id()));
                }
                let mut out = Vec::new();
                writer::write_element(&err.to_element(), &mut out);
                stream.queue_raw(&String::from_utf8_lossy(&out));
                stream.queue_raw(writer::STREAM_CLOSE);
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), stream.shutdown()).await;
    }

    /// Reads the next event, or takes the next stanza of ours for a bidirectional stream:
    /// under the handshake deadline until a domain is authenticated, then under the idle
    /// timeout.
    /// `outgoing`: whether our stanzas may be taken now (not while a stream header is due).
    async fn next_input(&mut self, outgoing: bool) -> Result<Input, End> {
        let limit = if self.pairs.is_empty() {
            self.deadline
        } else {
            Instant::now() + Duration::from_secs(self.ctx.config.idle_timeout_secs)
        };
        let authenticated = !self.pairs.is_empty();
        let stream = self
            .stream
            .as_mut()
            .expect("stream present outside TLS upgrade");
        let next = async {
            match self.outgoing.as_mut().filter(|_| outgoing) {
                Some((_, rx)) => tokio::select! {
                    ev = stream.next_event() => ev.map(Input::Event),
                    Some(el) = rx.recv() => Ok(Input::Out(el)),
                },
                None => stream.next_event().await.map(Input::Event),
            }
        };
        match tokio::time::timeout_at(limit, next).await {
            Ok(r) => Ok(r?),
            Err(_) if authenticated => {
                tracing::info!(peer = %self.peer, "closing idle inbound s2s stream");
                Err(End::PeerClosed)
            }
            Err(_) => Err(serr(SE::ConnectionTimeout, "authentication took too long")),
        }
    }

    async fn serve(&mut self) -> End {
        loop {
            if let Err(e) = self.open_stream().await {
                return e;
            }
            loop {
                let el = match self.next_input(true).await {
                    Ok(Input::Event(StreamEvent::Stanza(el))) => el,
                    Ok(Input::Event(StreamEvent::Close)) => return End::PeerClosed,
                    Ok(Input::Event(StreamEvent::Open(_))) => {
                        return serr(SE::InvalidXml, "unexpected stream header")
                    }
                    Ok(Input::Out(el)) => {
                        if let Err(e) = self.send_out(el).await {
                            return e;
                        }
                        continue;
                    }
                    Err(e) => return e,
                };
                let restart = match (el.ns().as_str(), el.name()) {
                    (ns::TLS, "starttls") => self.starttls().await,
                    (NS_BIDI, "bidi") => self.bidi_request().map(|_| false),
                    (ns::SASL, "auth") => self.external(&el).await,
                    (NS_DB, "result") => self.dialback_result(&el).await.map(|_| false),
                    (NS_DB, "verify") => self.dialback_verify(&el).await.map(|_| false),
                    (ns::SERVER, "message" | "presence" | "iq") => {
                        self.stanza(el).await.map(|_| false)
                    }
                    _ => Err(serr(
                        SE::UnsupportedStanzaType,
                        "unknown first-level element",
                    )),
                };
                match restart {
                    Ok(true) => break,
                    Ok(false) => {}
                    Err(e) => return e,
                }
            }
        }
    }

    /// Reads the peer's header, checks it, answers with ours and the features.
    async fn open_stream(&mut self) -> Result<(), End> {
        self.header_sent = false;
        let header = match self.next_input(false).await? {
            Input::Event(StreamEvent::Open(h)) => h,
            Input::Event(StreamEvent::Close) => return Err(End::PeerClosed),
            Input::Event(StreamEvent::Stanza(_)) | Input::Out(_) => {
                return Err(serr(SE::NotWellFormed, "expected a stream header"))
            }
        };
        let to = header
            .to
            .as_deref()
            .and_then(|t| Jid::parse(t).ok())
            .filter(|j| j.node().is_none() && j.resource().is_none());
        if self.local.is_none() {
            self.local = to
                .as_ref()
                .filter(|j| self.serves(j.domain()))
                .map(|j| j.domain().to_owned());
        }
        if header.default_ns.as_deref() != Some(ns::SERVER) {
            return Err(serr(
                SE::InvalidNamespace,
                "the default namespace must be jabber:server",
            ));
        }
        if header.version.as_deref().and_then(|v| v.split('.').next()) != Some("1") {
            return Err(serr(SE::UnsupportedVersion, "version='1.0' is required"));
        }
        let Some(to) = to else {
            return Err(serr(
                SE::HostUnknown,
                "the stream header needs a domain in 'to'",
            ));
        };
        if self.local.as_deref() != Some(to.domain()) {
            return Err(serr(
                SE::HostUnknown,
                &format!("this server does not serve {}", to.domain()),
            ));
        }
        self.claimed = header
            .from
            .as_deref()
            .and_then(|f| Jid::parse(f).ok())
            .filter(|j| j.node().is_none() && j.resource().is_none())
            .map(|j| j.domain().to_owned());
        self.stream_id = crate::new_id();
        let local = to.domain().to_owned();
        let header_xml = crate::stream_header(&local, self.claimed.as_deref(), &self.stream_id);
        let features = self.features();
        let stream = self.stream();
        stream.queue_raw(&header_xml);
        stream.queue(&features);
        self.header_sent = true;
        self.stream().flush().await.map_err(|_| End::Broken)
    }

    fn features(&self) -> Element {
        let mut f = Element::builder("features", ns::STREAM).build();
        let plaintext_ok = self.ctx.policy() == S2sPolicy::PlaintextForTests;
        if !self.is_tls() {
            let mut starttls = Element::builder("starttls", ns::TLS).build();
            if !plaintext_ok {
                starttls.append_child(Element::builder("required", ns::TLS).build());
            }
            f.append_child(starttls);
            if !plaintext_ok {
                return f;
            }
        }
        if self.pairs.is_empty() && self.cert_valid_for_claim() {
            f.append_child(
                Element::builder("mechanisms", ns::SASL)
                    .append(Element::builder("mechanism", ns::SASL).append("EXTERNAL"))
                    .build(),
            );
        }
        if self.ctx.policy() != S2sPolicy::Verify {
            f.append_child(
                Element::builder("dialback", NS_FEATURE)
                    .append(Element::builder("errors", NS_FEATURE))
                    .build(),
            );
        }
        if self.ctx.config.bidi && self.pairs.is_empty() {
            f.append_child(Element::builder("bidi", NS_BIDI_FEATURE).build());
        }
        f
    }

    /// XEP-0288 §2: the peer asks for a bidirectional stream (before authenticating).
    fn bidi_request(&mut self) -> Result<(), End> {
        if !self.ctx.config.bidi {
            return Err(serr(
                SE::UnsupportedStanzaType,
                "bidirectional streams are not offered",
            ));
        }
        if !self.pairs.is_empty() {
            return Err(serr(
                SE::PolicyViolation,
                "ask for a bidirectional stream before authenticating",
            ));
        }
        tracing::debug!(peer = %self.peer, "peer asked for a bidirectional stream");
        self.bidi = true;
        Ok(())
    }

    /// A newly authenticated (remote, local) pair on a bidirectional stream: our stanzas
    /// from `local` to `remote` may leave here.
    fn register_reverse(&mut self, remote: &str, local: &str) {
        if !self.bidi {
            return;
        }
        let queue = self.ctx.config.queue_size;
        let (tx, _) = self.outgoing.get_or_insert_with(|| mpsc::channel(queue));
        let tx = tx.clone();
        self.pool
            .register_inbound(local, remote, &tx, &mut self.link_id);
    }

    /// Writes one of our stanzas to the peer of a bidirectional stream.
    async fn send_out(&mut self, stanza: Element) -> Result<(), End> {
        let stanza = rename_namespace(stanza, ns::CLIENT, ns::SERVER);
        self.stream().queue(&stanza);
        // Write everything already waiting in one flush.
        while let Some(more) = self
            .outgoing
            .as_mut()
            .and_then(|(_, rx)| rx.try_recv().ok())
        {
            self.stream()
                .queue(&rename_namespace(more, ns::CLIENT, ns::SERVER));
        }
        self.stream().flush().await.map_err(|_| End::Broken)
    }

    /// The stream is over: the pool forgets it, and our stanzas that were waiting for it are
    /// routed again (a new outbound stream), or bounce when the server shuts down.
    async fn release(&mut self) {
        if let Some(id) = self.link_id.take() {
            self.pool.unregister(id);
        }
        let Some((tx, mut rx)) = self.outgoing.take() else {
            return;
        };
        drop(tx);
        rx.close();
        let shutting_down = self.server.shutdown_token().is_cancelled();
        while let Some(stanza) = rx.recv().await {
            if shutting_down {
                self.server
                    .bounce(
                        &stanza,
                        starling_proto::error::StanzaErrorCondition::RemoteServerNotFound,
                    )
                    .await;
            } else {
                self.server.route(stanza).await;
            }
        }
    }

    fn cert_valid_for_claim(&self) -> bool {
        match self.claimed.as_deref() {
            Some(claimed) => self.cert_valid_for(claimed),
            None => false,
        }
    }

    /// Whether the peer's certificate is trusted and names `claimed`.
    fn cert_valid_for(&self, claimed: &str) -> bool {
        let Some(stream) = self.stream.as_ref() else {
            return false;
        };
        if !stream.get_ref().is_tls() {
            return false;
        }
        match self
            .ctx
            .verifier
            .verify(&stream.get_ref().peer_certificates(), claimed)
        {
            Ok(()) => true,
            Err(e) => {
                tracing::info!(peer = %self.peer, domain = claimed, error = %e, "peer certificate not valid for its domain");
                false
            }
        }
    }

    /// RFC 6120 §5.4: `<proceed/>`, handshake, restart.
    async fn starttls(&mut self) -> Result<bool, End> {
        if self.is_tls() {
            return Err(serr(SE::PolicyViolation, "TLS is already in place"));
        }
        if self.stream().buffered() > 0 {
            return Err(serr(
                SE::PolicyViolation,
                "data pipelined after <starttls/>",
            ));
        }
        self.stream()
            .send(&Element::builder("proceed", ns::TLS).build())
            .await
            .map_err(|_| End::Broken)?;
        let Some(stream) = self.stream.take() else {
            return Err(End::Broken);
        };
        let Transport::Plain(tcp) = stream.into_inner() else {
            return Err(End::Broken);
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(self.ctx.tls.server.clone());
        match tokio::time::timeout_at(self.deadline, acceptor.accept(tcp)).await {
            Ok(Ok(tls)) => {
                self.stream = Some(XmlStream::new(
                    Transport::Accepted(Box::new(tls)),
                    self.ctx.limits(),
                ));
                Ok(true)
            }
            Ok(Err(e)) => {
                tracing::info!(peer = %self.peer, error = %e, "s2s TLS handshake failed");
                Err(End::Broken)
            }
            Err(_) => Err(End::Broken),
        }
    }

    async fn sasl_failure(&mut self, condition: &str) -> Result<bool, End> {
        let failure = Element::builder("failure", ns::SASL)
            .append(Element::builder(condition, ns::SASL))
            .build();
        self.stream()
            .send(&failure)
            .await
            .map_err(|_| End::Broken)?;
        Ok(false)
    }

    /// Counts an authenticated stream for `remote` against `max_connections_per_domain`.
    fn take_domain_slot(&mut self, remote: &str, local: &str) -> Result<(), End> {
        if self.pairs.iter().any(|(r, l)| r == remote && l == local) {
            return Ok(());
        }
        let max = self.ctx.config.max_connections_per_domain;
        let mut map = self.ctx.inbound_per_domain.lock();
        let n = map.entry(remote.to_owned()).or_insert(0);
        if *n >= max {
            tracing::warn!(%remote, limit = max, "s2s connections per domain limit reached");
            return Err(serr(
                SE::PolicyViolation,
                "too many connections from your domain",
            ));
        }
        *n += 1;
        drop(map);
        self.pairs.push((remote.to_owned(), local.to_owned()));
        self.register_reverse(remote, local);
        Ok(())
    }

    /// XEP-0178: SASL EXTERNAL with the certificate shown in the TLS handshake.
    async fn external(&mut self, el: &Element) -> Result<bool, End> {
        if el.attribute("mechanism") != Some("EXTERNAL") {
            return self.sasl_failure("invalid-mechanism").await;
        }
        if !self.is_tls() {
            return self.sasl_failure("encryption-required").await;
        }
        if !self.pairs.is_empty() {
            return Err(serr(SE::PolicyViolation, "already authenticated"));
        }
        let Some(claimed) = self.claimed.clone() else {
            return self.sasl_failure("not-authorized").await;
        };
        let text = el.text();
        let text = text.trim();
        if !text.is_empty() && text != "=" {
            let authzid = base64::engine::general_purpose::STANDARD
                .decode(text)
                .ok()
                .and_then(|b| String::from_utf8(b).ok());
            if authzid.as_deref() != Some(claimed.as_str()) {
                return self.sasl_failure("invalid-authzid").await;
            }
        }
        if !self.cert_valid_for_claim() {
            return self.sasl_failure("not-authorized").await;
        }
        let local = self.local.clone().unwrap_or_default();
        self.take_domain_slot(&claimed, &local)?;
        tracing::info!(peer = %self.peer, remote = %claimed, %local, bidi = self.bidi, "inbound s2s stream authenticated by certificate");
        self.stream()
            .send(&Element::builder("success", ns::SASL).build())
            .await
            .map_err(|_| End::Broken)?;
        self.stream().restart();
        Ok(true)
    }

    /// XEP-0220 §2.2–2.4, receiving side: verify the key with the authoritative server.
    async fn dialback_result(&mut self, el: &Element) -> Result<(), End> {
        if self.ctx.policy() == S2sPolicy::Verify {
            return Err(serr(
                SE::NotAuthorized,
                "dialback is not accepted here; use a valid certificate",
            ));
        }
        if !self.is_tls() && self.ctx.policy() != S2sPolicy::PlaintextForTests {
            return Err(serr(SE::PolicyViolation, "STARTTLS is required"));
        }
        let domain = |a: &str| {
            el.jid_attribute(a)
                .filter(|j| j.node().is_none() && j.resource().is_none())
                .map(|j| j.domain().to_owned())
        };
        let (Some(remote), Some(local)) = (domain("from"), domain("to")) else {
            return Err(serr(
                SE::ImproperAddressing,
                "db:result needs 'from' and 'to'",
            ));
        };
        if !self.serves(&local) {
            return Err(serr(
                SE::HostUnknown,
                &format!("this server does not serve {local}"),
            ));
        }
        let key = el.text();
        let timeout = Duration::from_secs(self.ctx.config.connect_timeout_secs);
        let covered = self.is_tls() && self.cert_valid_for(&remote);
        let verdict = if covered {
            // XEP-0344 §2.4: the certificate already proves the domain.
            tracing::debug!(peer = %self.peer, %remote, "certificate covers the dialback domain; no verification needed");
            Ok(Ok(true))
        } else {
            tokio::time::timeout(
                timeout,
                connector::verify_key(&self.ctx, &local, &remote, &self.stream_id, key.trim()),
            )
            .await
        };
        let valid = match verdict {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => {
                tracing::info!(%remote, error = %e, "dialback verification failed");
                false
            }
            Err(_) => {
                tracing::info!(%remote, "dialback verification timed out");
                false
            }
        };
        if valid {
            self.take_domain_slot(&remote, &local)?;
            tracing::info!(peer = %self.peer, %remote, %local, bidi = self.bidi, "inbound s2s stream authenticated by dialback");
        } else {
            tracing::info!(peer = %self.peer, %remote, "dialback key refused");
        }
        let answer = dialback::result(
            &local,
            &remote,
            None,
            Some(if valid { "valid" } else { "invalid" }),
        );
        self.send_raw(&dialback::to_wire(&answer)).await?;
        if valid {
            return Ok(());
        }
        // A refused extra domain leaves the pairs already proven on the stream alone
        // (XEP-0220 §4.4), but each refusal cost us a verification: a few, then we close.
        self.dialback_refusals += 1;
        if self.pairs.is_empty() || self.dialback_refusals >= MAX_DIALBACK_REFUSALS {
            Err(serr(SE::NotAuthorized, "dialback failed"))
        } else {
            Ok(())
        }
    }

    /// XEP-0220 §2.3, authoritative side: is this key one we made?
    async fn dialback_verify(&mut self, el: &Element) -> Result<(), End> {
        let (Some(receiving), Some(originating), Some(id)) =
            (el.attribute("from"), el.attribute("to"), el.attribute("id"))
        else {
            return Err(serr(
                SE::ImproperAddressing,
                "db:verify needs 'from', 'to' and 'id'",
            ));
        };
        if !self.serves(originating) {
            return Err(serr(
                SE::HostUnknown,
                &format!("this server does not serve {originating}"),
            ));
        }
        let expected = dialback::key(&self.ctx.secret, receiving, originating, id);
        let valid = dialback::key_matches(&expected, &el.text());
        let answer = dialback::verify(
            originating,
            receiving,
            id,
            None,
            Some(if valid { "valid" } else { "invalid" }),
        );
        self.send_raw(&dialback::to_wire(&answer)).await
    }

    async fn send_raw(&mut self, xml: &str) -> Result<(), End> {
        self.stream().queue_raw(xml);
        self.stream().flush().await.map_err(|_| End::Broken)
    }

    /// A stanza from an authenticated peer: from/to checks, rate, then the router.
    async fn stanza(&mut self, el: Element) -> Result<(), End> {
        if self.pairs.is_empty() {
            return Err(serr(
                SE::NotAuthorized,
                "authenticate before sending stanzas",
            ));
        }
        let jid = |a: &str| el.jid_attribute(a);
        let (Some(from), Some(to)) = (jid("from"), jid("to")) else {
            return Err(serr(
                SE::ImproperAddressing,
                "stanzas need valid 'from' and 'to'",
            ));
        };
        if !self.pairs.iter().any(|(r, _)| r == from.domain()) {
            tracing::warn!(peer = %self.peer, from = %from, "s2s peer sent a stanza from a domain it did not authenticate");
            return Err(serr(
                SE::InvalidFrom,
                "'from' is not a domain you authenticated",
            ));
        }
        if !self
            .pairs
            .iter()
            .any(|(r, l)| r == from.domain() && l == to.domain())
        {
            return Err(serr(
                SE::HostUnknown,
                "'to' is not a domain this stream is for",
            ));
        }
        if let Some(wait) = self.throttle.take().await {
            tracing::debug!(peer = %self.peer, ?wait, "s2s peer over its stanza rate; slowing down");
        }
        let stanza = rename_namespace(el, ns::SERVER, ns::CLIENT);
        self.server.route(stanza).await;
        Ok(())
    }
}
