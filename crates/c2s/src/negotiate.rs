//! The pre-bind part of a client stream (RFC 6120 §4–§7): stream headers and their checks,
//! stream features, STARTTLS (§5), SASL (§6, mechanisms from the sasl crate, channel bindings
//! from [`crate::tls`]), stream restarts, and resource binding (§7). The whole negotiation runs
//! under the handshake timeout; the bound session then continues in [`crate::session`].
//!
//! Defences taken from other servers' CVEs (see shared/reference/security.md): bytes pipelined
//! after `<starttls/>` are refused (plaintext injection), the host may not change across a
//! restart (CVE-2018-10847), stanzas before authentication close the stream, PLAIN is never
//! offered without TLS, and the number of failed SASL attempts per stream is capped.

use starling_proto::Attr;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use minidom::Element;
use starling_core::config::ListenerKind;
use starling_core::router::BindError;
use starling_core::xml::{BuilderExt, ElementExt};
use starling_core::{Server, SessionHandle};
use starling_proto::error::{
    error_reply, StanzaError, StanzaErrorCondition, StreamError, StreamErrorCondition as SE,
};
use starling_proto::framer::{Limits, StreamEvent, StreamHeader};
use starling_proto::jid::{prep_resource, Jid};
use starling_proto::{ns, writer};
use starling_sasl::{ChannelBinding, Failure, Mechanism, ServerSession, Step};
use starling_stream::{ReadError, XmlStream};
use tokio::time::Instant;

use crate::listener::ConnectionSlot;
use crate::register::{Registration, NS_FEATURE, NS_REGISTER};
use crate::smacks::{failed_xml, LookupError, Registry, ResumeRequest, NS_SM};
use crate::tls::{channel_bindings, TlsSettings};
use crate::tls_stream::ServerTls;
use crate::transport::Transport;

/// Failed SASL attempts allowed on one stream (RFC 6120 §6.4.5 asks for 2 to 5).
const MAX_SASL_FAILURES: u32 = 3;
/// Largest base64 text accepted inside one SASL element.
const MAX_SASL_BYTES: usize = 8 * 1024;

/// How a connection ends before or during negotiation.
pub(crate) enum End {
    /// Send this stream error, then close.
    Error(StreamError),
    /// The peer closed the stream or the socket; answer with our closing tag if possible.
    PeerClosed,
    /// The socket is unusable; just drop it.
    Broken,
}

impl From<ReadError> for End {
    fn from(e: ReadError) -> End {
        match e {
            ReadError::Stream(se) => End::Error(se),
            ReadError::Io(_) => End::Broken,
            ReadError::Eof => End::Broken,
        }
    }
}

fn serr(condition: SE, text: &str) -> End {
    End::Error(StreamError::with_text(condition, text))
}

/// A negotiated, bound client stream, handed to the session loop.
pub(crate) struct Bound {
    pub jid: Jid,
    pub handle: SessionHandle,
    pub inbox: starling_core::session::SessionInbox,
}

/// How negotiation ended well.
pub(crate) enum Negotiated {
    /// A resource was bound: the session loop takes over.
    Bound(Bound),
    /// The stream was handed to a hibernated session it resumed (XEP-0198 §5).
    Resumed,
}

/// State of one connection during negotiation.
pub(crate) struct Negotiation {
    server: Arc<Server>,
    tls: TlsSettings,
    peer: SocketAddr,
    /// `None` only while the transport is being upgraded to TLS.
    pub(crate) stream: Option<XmlStream<Transport>>,
    limits: Limits,
    /// Whether our stream header for the current stream has been sent.
    pub(crate) header_sent: bool,
    /// The virtual host the client asked for in its first header.
    pub(crate) host: Option<String>,
    /// The authenticated bare JID.
    user: Option<Jid>,
    sasl_failures: u32,
    /// In-band registration state shared by all connections (XEP-0077, [`crate::register`]).
    registration: Arc<Registration>,
    /// An account was registered on this stream (one per stream).
    registered: bool,
    /// Keys the fake SCRAM salts of unknown users, stable across restarts.
    sasl_secret: Arc<[u8]>,
    /// Resumable sessions (XEP-0198), for `<resume/>` instead of bind.
    sm_registry: Arc<Registry>,
}

pub(crate) async fn run_connection(
    server: Arc<Server>,
    tls: TlsSettings,
    transport: Transport,
    peer: SocketAddr,
    kind: ListenerKind,
    shared: crate::listener::Shared,
    slot: ConnectionSlot,
) {
    let crate::listener::Shared {
        registration,
        sasl_secret,
        sm_registry,
    } = shared;
    let c2s = &server.config().c2s;
    let limits = Limits {
        max_stanza_bytes: c2s.max_stanza_bytes,
        max_depth: c2s.max_depth,
        max_attributes: c2s.max_attributes,
        max_elements: c2s.max_elements,
        max_buffered_bytes: c2s.max_stanza_bytes + 16 * 1024,
    };
    let deadline = Instant::now() + Duration::from_secs(c2s.handshake_timeout_secs);
    let shutdown = server.shutdown_token().clone();
    let transport = match (kind, transport) {
        (ListenerKind::C2sDirectTls, Transport::Plain(tcp)) => {
            // Boxed: inline, the handshake would size the connection task for its whole life.
            let accept = ServerTls::accept(tcp, tls.config.clone());
            match Box::pin(tokio::time::timeout_at(deadline, accept)).await {
                Ok(Ok(s)) => Transport::Tls(Box::new(s)),
                Ok(Err(e)) => {
                    tracing::info!(%peer, error = %e, "direct TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::info!(%peer, "direct TLS handshake timed out");
                    return;
                }
            }
        }
        (_, transport) => transport,
    };
    // The negotiation state and its future live on the heap and are freed before the
    // session starts (which then runs in a task of its own, below), so the negotiation's
    // state is not kept beside the session's for the connection's life. An idle
    // session's task was 10.6 KiB before this (valgrind massif).
    let mut neg = Box::new(Negotiation {
        server: server.clone(),
        tls,
        peer,
        stream: Some(XmlStream::new(transport, limits)),
        limits,
        header_sent: false,
        host: None,
        user: None,
        sasl_failures: 0,
        registration,
        registered: false,
        sasl_secret,
        sm_registry: sm_registry.clone(),
    });
    let outcome = tokio::select! {
        r = Box::pin(neg.negotiate()) => r,
        _ = tokio::time::sleep_until(deadline) => {
            tracing::info!(%peer, "handshake timeout");
            Err(serr(SE::ConnectionTimeout, "authentication and binding took too long"))
        }
        _ = shutdown.cancelled() => Err(End::Error(StreamError::new(SE::SystemShutdown))),
    };
    match outcome {
        Ok(Negotiated::Bound(bound)) => {
            let stream = neg.stream.take().map(Box::new);
            drop(neg);
            if let Some(stream) = stream {
                // A task of its own, whose future is the session's alone: this task's future
                // is sized for the negotiation (its arguments, the TLS accept, the select with
                // its timers) and would stay allocated, unused, for the session's whole life
                // (about 1 KiB of every idle session, heaptrack). The connection slot goes
                // with the session.
                tokio::spawn(crate::session::run(
                    server,
                    stream,
                    bound,
                    peer,
                    sm_registry,
                    slot,
                ));
            }
        }
        // The resumed session's task owns the stream now.
        Ok(Negotiated::Resumed) => {}
        Err(end) => neg.finish(end).await,
    }
}

impl Negotiation {
    fn stream(&mut self) -> &mut XmlStream<Transport> {
        self.stream
            .as_mut()
            .expect("stream present outside TLS upgrade")
    }

    fn is_tls(&self) -> bool {
        self.stream.as_ref().is_some_and(|s| s.get_ref().is_tls())
    }

    /// Sends the closing sequence for `end` and closes the socket.
    pub(crate) async fn finish(&mut self, end: End) {
        let header_sent = self.header_sent;
        let host = self
            .host
            .clone()
            .or_else(|| self.server.config().server.hosts.first().cloned())
            .unwrap_or_default();
        let peer = self.peer;
        let Some(stream) = self.stream.as_mut() else {
            return;
        };
        match end {
            End::Broken => return,
            End::PeerClosed => stream.queue_raw(writer::STREAM_CLOSE),
            End::Error(err) => {
                tracing::info!(%peer, condition = err.condition.name(), text = ?err.text, "closing stream with error");
                if !header_sent {
                    stream.queue_raw(&writer::stream_header(
                        ns::CLIENT,
                        Some(&host),
                        None,
                        &new_id(),
                        None,
                    ));
                }
                stream.queue_raw(&stream_error_xml(&err));
                stream.queue_raw(writer::STREAM_CLOSE);
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), stream.shutdown()).await;
    }

    async fn negotiate(&mut self) -> Result<Negotiated, End> {
        loop {
            self.open_stream().await?;
            // Read first-level elements until one of them restarts the stream or binds.
            loop {
                let el = match self.stream().next_event().await? {
                    StreamEvent::Stanza(el) => el,
                    StreamEvent::Close => return Err(End::PeerClosed),
                    StreamEvent::Open(_) => {
                        return Err(serr(SE::InvalidXml, "unexpected stream header"))
                    }
                };
                match (el.ns().as_str(), el.name()) {
                    (ns::TLS, "starttls") => {
                        self.starttls().await?;
                        break;
                    }
                    (ns::SASL, "auth") => {
                        if self.sasl(el).await? {
                            break;
                        }
                    }
                    (ns::SASL, _) => {
                        return Err(serr(SE::NotAuthorized, "SASL element outside an exchange"))
                    }
                    (ns::CLIENT, "iq") if self.user.is_some() => {
                        if let Some(bound) = self.bind(&el).await? {
                            return Ok(Negotiated::Bound(bound));
                        }
                    }
                    (NS_SM, "resume") if self.user.is_some() => {
                        if self.resume(&el).await? {
                            return Ok(Negotiated::Resumed);
                        }
                    }
                    (NS_SM, "resume" | "enable") => {
                        // XEP-0198 §3, §5: enable after binding, resume after authenticating.
                        self.send_raw(&failed_xml("unexpected-request", None))
                            .await?;
                    }
                    (NS_SM, "r" | "a") => {
                        tracing::debug!(peer = %self.peer, "stream management nonza before enable; ignored");
                    }
                    (ns::CLIENT, "iq") if el.get_child("query", NS_REGISTER).is_some() => {
                        self.register(&el).await?;
                    }
                    (ns::CLIENT, "iq" | "message" | "presence") => {
                        return Err(serr(
                            SE::NotAuthorized,
                            if self.user.is_some() {
                                "bind a resource before sending stanzas"
                            } else {
                                "authenticate before sending stanzas"
                            },
                        ))
                    }
                    _ => {
                        return Err(serr(
                            SE::UnsupportedStanzaType,
                            "unknown first-level element",
                        ))
                    }
                }
            }
        }
    }

    /// Reads the client's stream header, checks it, answers with ours and the features.
    async fn open_stream(&mut self) -> Result<(), End> {
        self.header_sent = false;
        let header = match self.stream().next_event().await? {
            StreamEvent::Open(h) => h,
            StreamEvent::Close => return Err(End::PeerClosed),
            StreamEvent::Stanza(_) => {
                return Err(serr(SE::NotWellFormed, "expected a stream header"))
            }
        };
        let host = self.check_header(&header)?;
        let id = new_id();
        let client_from = header.from.as_deref().filter(|f| Jid::parse(f).is_ok());
        let header_xml =
            writer::stream_header(ns::CLIENT, Some(&host), client_from, &id, Some("en"));
        let features = self.features();
        let stream = self.stream();
        stream.queue_raw(&header_xml);
        stream.queue_raw(&features);
        self.header_sent = true;
        self.stream().flush().await.map_err(|_| End::Broken)?;
        Ok(())
    }

    fn check_header(&mut self, h: &StreamHeader) -> Result<String, End> {
        // Remember the host first so that a stream error is sent from the right domain.
        let requested = h.to.as_deref().and_then(|t| Jid::parse(t).ok());
        if self.host.is_none() {
            if let Some(j) = &requested {
                if self.server.config().is_local_host(j.domain()) {
                    self.host = Some(j.domain().to_owned());
                }
            }
        }
        if h.default_ns.as_deref() != Some(ns::CLIENT) {
            return Err(serr(
                SE::InvalidNamespace,
                "the default namespace must be jabber:client",
            ));
        }
        match h
            .version
            .as_deref()
            .map(|v| v.split_once('.').map(|(a, _)| a.trim().parse::<u32>()))
        {
            Some(Some(Ok(1))) => {}
            Some(Some(Ok(major))) if major > 1 => {
                return Err(serr(SE::UnsupportedVersion, "only XMPP 1.0 is supported"))
            }
            _ => return Err(serr(SE::UnsupportedVersion, "version='1.0' is required")),
        }
        let Some(to) = h.to.as_deref() else {
            return Err(serr(SE::HostUnknown, "the stream header has no 'to'"));
        };
        let Some(jid) = requested.filter(|j| j.node().is_none() && j.resource().is_none()) else {
            return Err(serr(SE::HostUnknown, &format!("'{to}' is not a domain")));
        };
        if !self.server.config().is_local_host(jid.domain()) {
            return Err(serr(
                SE::HostUnknown,
                &format!("this server does not serve {}", jid.domain()),
            ));
        }
        if self.host.as_deref() != Some(jid.domain()) {
            // A restart asking for another virtual host (CVE-2018-10847).
            return Err(serr(
                SE::HostUnknown,
                "the host may not change across stream restarts",
            ));
        }
        Ok(jid.domain().to_owned())
    }

    /// Whether this stream runs TLS itself, so that SCRAM-*-PLUS can bind to it.
    fn channel_binding(&self) -> bool {
        self.tls_stream().is_some()
    }

    /// The stream's own TLS layer, if it runs one (not the HTTP front end's pipe).
    fn tls_stream(&self) -> Option<&ServerTls> {
        self.stream.as_ref().and_then(|s| s.get_ref().tls())
    }

    fn mechanisms(&self) -> Vec<Mechanism> {
        let tls = self.is_tls();
        let mut m = Vec::new();
        if self.channel_binding() {
            m.push(Mechanism::ScramSha256Plus);
            m.push(Mechanism::ScramSha1Plus);
        }
        m.push(Mechanism::ScramSha256);
        m.push(Mechanism::ScramSha1);
        if tls {
            m.push(Mechanism::Plain);
        }
        m
    }

    fn features(&self) -> String {
        let tls = self.is_tls();
        let require_tls = self.server.config().c2s.require_tls;
        let mut out = String::from("<stream:features>");
        if self.user.is_none() {
            if !tls {
                out.push_str("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'>");
                if require_tls {
                    out.push_str("<required/>");
                }
                out.push_str("</starttls>");
            }
            if tls || !require_tls {
                out.push_str("<mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>");
                for m in self.mechanisms() {
                    out.push_str("<mechanism>");
                    out.push_str(m.name());
                    out.push_str("</mechanism>");
                }
                out.push_str("</mechanisms>");
                if self.registration_offered() {
                    out.push_str(&format!("<register xmlns='{NS_FEATURE}'/>"));
                }
                let bindings = self.bindings();
                if !bindings.is_empty() {
                    // XEP-0440: the channel-binding types SCRAM-PLUS can use on this stream
                    // (`tls-exporter` under TLS 1.3 only; see tls_stream.rs).
                    out.push_str("<sasl-channel-binding xmlns='urn:xmpp:sasl-cb:0'>");
                    for b in &bindings {
                        out.push_str("<channel-binding type='");
                        out.push_str(b.kind.name());
                        out.push_str("'/>");
                    }
                    out.push_str("</sasl-channel-binding>");
                }
            }
        } else {
            out.push_str("<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>");
            // RFC 3921 session establishment, kept as an optional no-op for old clients
            // (RFC 6121 Appendix E).
            out.push_str(
                "<session xmlns='urn:ietf:params:xml:ns:xmpp-session'><optional/></session>",
            );
            // XEP-0198: enable after binding, or resume instead of binding.
            out.push_str("<sm xmlns='urn:xmpp:sm:3'/>");
            let mut buf = Vec::new();
            for f in self.server.stream_features() {
                writer::write_element(&f, &mut buf);
            }
            out.push_str(&String::from_utf8_lossy(&buf));
        }
        out.push_str("</stream:features>");
        out
    }

    /// In-band registration is enabled and this stream may authenticate.
    fn registration_offered(&self) -> bool {
        let config = self.server.config();
        config.register.enabled && (self.is_tls() || !config.c2s.require_tls)
    }

    /// Answers a `jabber:iq:register` IQ before authentication ([`crate::register`]).
    async fn register(&mut self, iq: &Element) -> Result<(), End> {
        let offered = self.registration_offered();
        let host = self.host.clone().unwrap_or_default();
        let server = self.server.clone();
        let registration = self.registration.clone();
        let request = crate::register::Request {
            server: &server,
            peer: self.peer.ip(),
            host: &host,
            offered,
            registered: &mut self.registered,
        };
        let reply = registration.handle(request, iq).await;
        let s = self.stream();
        s.queue(&reply);
        s.flush().await.map_err(|_| End::Broken)
    }

    async fn starttls(&mut self) -> Result<(), End> {
        if self.is_tls() {
            return Err(serr(SE::PolicyViolation, "TLS is already established"));
        }
        if self.stream().buffered() > 0 {
            // Anything sent after <starttls/> before the handshake would be injected into the
            // encrypted stream (CVE-2011-1431 class).
            return Err(serr(SE::PolicyViolation, "data sent after <starttls/>"));
        }
        let mut stream = self.stream.take().expect("stream present");
        stream.queue_raw("<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
        stream.flush().await.map_err(|_| End::Broken)?;
        let tcp = match stream.into_inner() {
            Transport::Plain(tcp) => tcp,
            _ => unreachable!("checked above"),
        };
        match ServerTls::accept(tcp, self.tls.config.clone()).await {
            Ok(tls) => {
                self.stream = Some(XmlStream::new(Transport::Tls(Box::new(tls)), self.limits));
                Ok(())
            }
            Err(e) => {
                tracing::info!(peer = %self.peer, error = %e, "STARTTLS handshake failed");
                Err(End::Broken)
            }
        }
    }

    fn bindings(&self) -> Vec<ChannelBinding> {
        match self.tls_stream() {
            Some(conn) => channel_bindings(conn, &self.tls.end_point_hash),
            None => Vec::new(),
        }
    }

    async fn send_raw(&mut self, xml: &str) -> Result<(), End> {
        let s = self.stream();
        s.queue_raw(xml);
        s.flush().await.map_err(|_| End::Broken)
    }

    /// Runs one SASL exchange. Ok(true) when it succeeded (the stream restarts).
    async fn sasl(&mut self, auth: Element) -> Result<bool, End> {
        if self.user.is_some() {
            return Err(serr(SE::PolicyViolation, "already authenticated"));
        }
        let require_tls = self.server.config().c2s.require_tls;
        if !self.is_tls() && require_tls {
            self.sasl_failed(Failure::EncryptionRequired).await?;
            return Ok(false);
        }
        let requested = auth.attribute("mechanism").and_then(Mechanism::from_name);
        if !self.is_tls() && matches!(requested, Some(m) if m == Mechanism::Plain || m.is_plus()) {
            // Known, but only usable inside TLS (RFC 6120 §6.5.4).
            self.sasl_failed(Failure::EncryptionRequired).await?;
            return Ok(false);
        }
        let Some(mech) = requested.filter(|m| self.mechanisms().contains(m)) else {
            self.sasl_failed(Failure::InvalidMechanism).await?;
            return Ok(false);
        };
        let policy = crate::throttle::Policy::from_config(&self.server.config().limits);
        match self
            .registration
            .auth_throttle
            .address_turn(self.peer.ip(), &policy)
        {
            crate::throttle::Turn::Busy => {
                tracing::warn!(peer = %self.peer, "too many failed logins from this address; attempt refused");
                self.sasl_failed(Failure::TemporaryAuthFailure).await?;
                return Ok(false);
            }
            crate::throttle::Turn::Wait(d) if !d.is_zero() => {
                tracing::info!(peer = %self.peer, delay_ms = d.as_millis() as u64, "delaying login after failures from this address");
                tokio::time::sleep(d).await;
            }
            crate::throttle::Turn::Wait(_) => {}
        }
        let plus_offered = self.channel_binding();
        let mut session = ServerSession::new(mech, self.bindings(), plus_offered)
            .with_fake_salt_key(&self.sasl_secret);
        let host = self.host.clone().unwrap_or_default();
        let text = auth.text();
        let mut input = if text.trim().is_empty() {
            // No initial response: send an empty challenge and wait (RFC 6120 §6.4.2).
            self.send_raw("<challenge xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>")
                .await?;
            match self.sasl_response().await? {
                Some(data) => data,
                None => return Ok(false),
            }
        } else {
            match decode_sasl(&text) {
                Ok(d) => d,
                Err(f) => {
                    self.sasl_failed(f).await?;
                    return Ok(false);
                }
            }
        };
        let mut username_seen: Option<String> = None;
        loop {
            let mut step = session.step(&input);
            if let Ok(Step::NeedCredentials { username, hash }) = &step {
                let prepared = starling_proto::jid::prep_localpart(username).ok();
                if let Some(user) = &prepared {
                    let d = self
                        .registration
                        .auth_throttle
                        .account_delay(&format!("{user}@{host}"), &policy);
                    if !d.is_zero() {
                        tracing::info!(peer = %self.peer, account = %format!("{user}@{host}"), delay_ms = d.as_millis() as u64, "delaying login after failures for this account");
                        tokio::time::sleep(d).await;
                    }
                }
                let creds = match &prepared {
                    Some(user) => match self
                        .server
                        .storage()
                        .get_credentials(&host, user, hash.name())
                        .await
                    {
                        Ok(c) => c.map(|r| starling_sasl::ScramCredentials {
                            hash: *hash,
                            salt: r.salt,
                            iterations: r.iterations,
                            stored_key: r.stored_key,
                            server_key: r.server_key,
                        }),
                        Err(e) => {
                            tracing::error!(error = %e, "storage error during SASL");
                            self.sasl_failed(Failure::TemporaryAuthFailure).await?;
                            return Ok(false);
                        }
                    },
                    None => None,
                };
                username_seen = prepared;
                step = session.provide_credentials(creds);
            }
            match step {
                Ok(Step::NeedCredentials { .. }) => {
                    tracing::error!("SASL mechanism asked for credentials twice");
                    self.sasl_failed(Failure::TemporaryAuthFailure).await?;
                    return Ok(false);
                }
                Ok(Step::Challenge(data)) => {
                    let b64 = base64::engine::general_purpose::STANDARD.encode(&data);
                    self.send_raw(&format!(
                        "<challenge xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{b64}</challenge>"
                    ))
                    .await?;
                    input = match self.sasl_response().await? {
                        Some(d) => d,
                        None => return Ok(false),
                    };
                }
                Ok(Step::Success {
                    username,
                    authzid,
                    additional_data,
                }) => {
                    let user = username_seen
                        .clone()
                        .or_else(|| starling_proto::jid::prep_localpart(&username).ok());
                    let Some(jid) = user.and_then(|u| Jid::new(Some(&u), &host, None).ok()) else {
                        self.sasl_failed(Failure::NotAuthorized).await?;
                        return Ok(false);
                    };
                    if let Some(az) = authzid.filter(|a| !a.is_empty()) {
                        // Only "act as yourself" is allowed.
                        if Jid::parse(&az).map(|a| a != jid).unwrap_or(true) {
                            self.sasl_failed(Failure::InvalidAuthzid).await?;
                            return Ok(false);
                        }
                    }
                    let success = match additional_data {
                        Some(d) => format!(
                            "<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{}</success>",
                            base64::engine::general_purpose::STANDARD.encode(d)
                        ),
                        None => "<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>".to_owned(),
                    };
                    tracing::info!(peer = %self.peer, user = %jid, mechanism = mech.name(), "authenticated");
                    self.registration.auth_throttle.succeeded(jid.as_str());
                    self.user = Some(jid);
                    self.stream().restart();
                    self.send_raw(&success).await?;
                    return Ok(true);
                }
                Err(f) => {
                    tracing::info!(peer = %self.peer, user = ?username_seen, failure = f.name(), "SASL failure");
                    if f != Failure::TemporaryAuthFailure {
                        let account = username_seen.as_ref().map(|u| format!("{u}@{host}"));
                        self.registration.auth_throttle.failed(
                            self.peer.ip(),
                            account.as_deref(),
                            &policy,
                        );
                    }
                    self.sasl_failed(f).await?;
                    return Ok(false);
                }
            }
        }
    }

    /// Waits for `<response/>` (Some(data)) or `<abort/>` (None, after answering `aborted`).
    async fn sasl_response(&mut self) -> Result<Option<Vec<u8>>, End> {
        let el = match self.stream().next_event().await? {
            StreamEvent::Stanza(el) => el,
            StreamEvent::Close => return Err(End::PeerClosed),
            StreamEvent::Open(_) => return Err(serr(SE::InvalidXml, "unexpected stream header")),
        };
        if el.is("abort", ns::SASL) {
            self.sasl_failed(Failure::Aborted).await?;
            return Ok(None);
        }
        if !el.is("response", ns::SASL) {
            return Err(serr(SE::PolicyViolation, "expected a SASL response"));
        }
        match decode_sasl(&el.text()) {
            Ok(d) => Ok(Some(d)),
            Err(f) => {
                self.sasl_failed(f).await?;
                Ok(None)
            }
        }
    }

    async fn sasl_failed(&mut self, failure: Failure) -> Result<(), End> {
        self.send_raw(&format!(
            "<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><{}/></failure>",
            failure.name()
        ))
        .await?;
        if failure != Failure::Aborted {
            self.sasl_failures += 1;
        }
        if self.sasl_failures >= MAX_SASL_FAILURES {
            tracing::warn!(peer = %self.peer, "too many failed authentication attempts");
            return Err(serr(
                SE::PolicyViolation,
                "too many failed authentication attempts",
            ));
        }
        Ok(())
    }

    /// `<resume/>` after authentication (XEP-0198 §5): hands this stream to the session named
    /// by `previd` if the authenticated account owns it. Ok(true) = the session took the
    /// stream; Ok(false) = `<failed/>` was sent and negotiation continues (the client may bind).
    async fn resume(&mut self, el: &Element) -> Result<bool, End> {
        let user = self.user.clone().expect("authenticated");
        let previd = el.attribute("previd").unwrap_or_default().to_owned();
        let Some(h) = el.attribute("h").and_then(|h| h.parse::<u32>().ok()) else {
            self.send_raw(&failed_xml("bad-request", None)).await?;
            return Ok(false);
        };
        let tx = match self.sm_registry.lookup(&previd, &user) {
            Ok((_, tx)) => tx,
            Err(e) => {
                // Someone else's id gets the same answer as an unknown one.
                if e == LookupError::NotYours {
                    tracing::warn!(peer = %self.peer, user = %user, "resumption of another account's session refused");
                } else {
                    tracing::info!(peer = %self.peer, user = %user, "resumption of an unknown or expired session");
                }
                self.send_raw(&failed_xml("item-not-found", None)).await?;
                return Ok(false);
            }
        };
        let stream = self.stream.take().expect("stream present");
        let (reply, answer) = tokio::sync::oneshot::channel();
        let request = ResumeRequest {
            stream: Box::new(stream),
            h,
            peer: self.peer,
            reply,
        };
        let given_back = match tx.send(request).await {
            Err(tokio::sync::mpsc::error::SendError(req)) => *req.stream,
            Ok(()) => match answer.await {
                Ok(Ok(())) => return Ok(true),
                Ok(Err(stream)) => *stream,
                // The session task dropped the request with the stream in it.
                Err(_) => return Err(End::Broken),
            },
        };
        // The session ended between the lookup and the request.
        self.stream = Some(given_back);
        self.send_raw(&failed_xml("item-not-found", None)).await?;
        Ok(false)
    }

    /// Handles an IQ after authentication: resource binding (RFC 6120 §7). Ok(Some) = bound.
    async fn bind(&mut self, iq: &Element) -> Result<Option<Bound>, End> {
        let Some(bind) = iq
            .get_child("bind", ns::BIND)
            .filter(|_| iq.attribute("type") == Some("set"))
        else {
            return Err(serr(
                SE::NotAuthorized,
                "bind a resource before sending stanzas",
            ));
        };
        let user = self.user.clone().expect("authenticated");
        let resource = match bind.get_child("resource", ns::BIND).map(|r| r.text()) {
            Some(r) if !r.trim().is_empty() => match prep_resource(&r) {
                Ok(r) => r,
                Err(_) => {
                    self.bind_error(iq, StanzaErrorCondition::BadRequest)
                        .await?;
                    return Ok(None);
                }
            },
            _ => generate_resource(),
        };
        let Ok(full) = user.with_resource(&resource) else {
            self.bind_error(iq, StanzaErrorCondition::BadRequest)
                .await?;
            return Ok(None);
        };
        let c2s = &self.server.config().c2s;
        let (handle, inbox) = SessionHandle::new(c2s.outbound_queue);
        match self.server.router().bind(
            &full,
            handle.clone(),
            c2s.resource_conflict,
            c2s.max_resources_per_account,
        ) {
            Ok(kicked) => {
                if let Some(old) = kicked {
                    old.close(StreamError::with_text(
                        SE::Conflict,
                        "replaced by a new session",
                    ));
                    // Let the old session broadcast its unavailable presence and hand over its
                    // queue before this one can send presence, so contacts never see the new
                    // session's presence overtaken by the old one's goodbye. Bounded: the old
                    // session does this before it touches its (possibly stuck) socket.
                    if tokio::time::timeout(Duration::from_secs(5), old.finished())
                        .await
                        .is_err()
                    {
                        tracing::warn!(jid = %full, "replaced session did not finish in time");
                    }
                }
            }
            Err(BindError::Conflict) => {
                self.bind_error(iq, StanzaErrorCondition::Conflict).await?;
                return Ok(None);
            }
            Err(BindError::TooManyResources) => {
                self.bind_error(iq, StanzaErrorCondition::ResourceConstraint)
                    .await?;
                return Ok(None);
            }
        }
        let result = Element::builder("iq", ns::CLIENT)
            .with_attr("type", "result")
            .with_attr("id", iq.attribute("id").unwrap_or_default())
            .append(
                Element::builder("bind", ns::BIND)
                    .append(Element::builder("jid", ns::BIND).append(full.as_str())),
            )
            .build();
        let stream = self.stream();
        stream.queue(&result);
        if stream.flush().await.is_err() {
            self.server.router().unbind(&full, handle.id());
            return Err(End::Broken);
        }
        tracing::info!(peer = %self.peer, jid = %full, "resource bound");
        Ok(Some(Bound {
            jid: full,
            handle,
            inbox,
        }))
    }

    async fn bind_error(
        &mut self,
        iq: &Element,
        condition: StanzaErrorCondition,
    ) -> Result<(), End> {
        if let Some(reply) = error_reply(&strip_addresses(iq.clone()), &StanzaError::new(condition))
        {
            let s = self.stream();
            s.queue(&reply);
            s.flush().await.map_err(|_| End::Broken)?;
        }
        Ok(())
    }
}

/// Before binding the client has no address; its IQ errors carry none either.
fn strip_addresses(mut el: Element) -> Element {
    el.remove_attr("from");
    el.remove_attr("to");
    el
}

fn decode_sasl(text: &str) -> Result<Vec<u8>, Failure> {
    let t: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    if t.len() > MAX_SASL_BYTES {
        return Err(Failure::MalformedRequest);
    }
    if t == "=" || t.is_empty() {
        return Ok(Vec::new());
    }
    base64::engine::general_purpose::STANDARD
        .decode(t.as_bytes())
        .map_err(|_| Failure::IncorrectEncoding)
}

pub(crate) fn new_id() -> String {
    use rand::Rng;
    let bytes: [u8; 12] = rand::rng().random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn generate_resource() -> String {
    format!("starling-{}", new_id())
}

/// `<stream:error>` with the `stream` prefix that every client library understands.
pub(crate) fn stream_error_xml(err: &StreamError) -> String {
    let el = err.to_element();
    let mut inner = Vec::new();
    for child in el.children() {
        writer::write_element(child, &mut inner);
    }
    format!(
        "<stream:error>{}</stream:error>",
        String::from_utf8_lossy(&inner)
    )
}
