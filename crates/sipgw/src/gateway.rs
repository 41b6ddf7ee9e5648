//! The gateway module: routing between the XMPP server and SIP, and instant messages.
//!
//! XMPP -> SIP: a `<message/>` to `bob%sip.example@<gateway>` becomes a SIP MESSAGE
//! (RFC 3428) to `sip:bob@sip.example`, sent to that domain's static route, From
//! `sip:<sender's bare JID>`. The body is Message/CPIM (RFC 3922 §4, via
//! [`starling_cpim::message`]) or text/plain with a SIP Subject (`message_format = "text"`,
//! RFC 7572); an RFC 3923 `<e2e/>` payload goes out unchanged as the body (§8). Messages with
//! nothing to map (chat states) are dropped; an error response bounces to the sender with the
//! condition of [`crate::errors::sip_to_condition`].
//!
//! SIP -> XMPP: a MESSAGE to `sip:alice@<xmpp host>` becomes a `<message type='chat'/>` from
//! `bob%sip.example@<gateway>` (built from the SIP From, never from the body) to
//! `alice@<host>`. text/plain and Message/CPIM bodies are mapped; S/MIME bodies are wrapped in
//! `<e2e/>`; anything else gets 415. Answers: 200 once routed, 404 for an unknown user,
//! 513 for a MESSAGE over UDP above `udp_max_bytes` (RFC 3428 §5), 403 from an address or
//! domain with no route.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use minidom::Element;
use starling_core::config::{SipMessageFormat, SipRoute, SipTransport};
use starling_core::xml::{BuilderExt, ElementExt};
use starling_core::{Config, Module, Server};
use starling_cpim::address::{jid_to_sip_uri, sip_uri_to_jid};
use starling_cpim::{DateTime, GatewayAddressing, MessageMappingError, SipUri};
use starling_proto::error::StanzaErrorCondition as Cond;
use starling_proto::jid::Jid;
use starling_proto::ns;

use crate::errors::sip_to_condition;
use crate::sip::{addr_uri, reason, SipMessage};
use crate::transport::{Dest, Incoming, Limits, Origin, Transport, TsxError};

/// The methods the gateway answers (sent in Allow).
pub(crate) const ALLOW: &str = "MESSAGE, SUBSCRIBE, NOTIFY, OPTIONS";

/// Why the gateway cannot be built from the configuration.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("sip.domain: {0}")]
    Domain(String),
    #[error("sip.route {0}: {1}")]
    Route(String, String),
}

/// The SIP/SIMPLE gateway: a [`Module`] serving the gateway domain, plus its SIP transport
/// once [`Gateway::start`] ran.
pub struct Gateway {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    /// The gateway's XMPP domain.
    pub(crate) domain: String,
    /// `user%sipdomain@<domain>` <-> `sip:user@sipdomain`.
    pub(crate) addressing: GatewayAddressing,
    /// SIP domain (lower case) -> route.
    routes: HashMap<String, SipRoute>,
    /// Source addresses requests are accepted from.
    allowed_ips: HashSet<IpAddr>,
    /// The server's user hosts (SIP users reach `sip:user@<host>`).
    hosts: Vec<String>,
    format: SipMessageFormat,
    contact_host: Option<String>,
    pub(crate) config: starling_core::config::SipConfig,
    pub(crate) transport: OnceLock<Arc<Transport>>,
    pub(crate) presence: crate::presence::Subscriptions,
    /// This gateway, for tasks that outlive a call.
    this: std::sync::Weak<Inner>,
}

impl Gateway {
    /// Builds the gateway from `[sip]` (does not bind anything yet).
    pub fn new(config: &Config) -> Result<Arc<Gateway>, GatewayError> {
        let sip = &config.sip;
        let domain = sip.gateway_domain(&config.server);
        let addressing =
            GatewayAddressing::new(&domain).map_err(|e| GatewayError::Domain(e.to_string()))?;
        let mut routes = HashMap::new();
        let mut allowed_ips = HashSet::new();
        for r in &sip.routes {
            let host = SipUri::new(false, None, &r.domain, None)
                .map_err(|e| GatewayError::Route(r.domain.clone(), e.to_string()))?
                .host()
                .to_owned();
            allowed_ips.insert(r.address.ip());
            routes.insert(host, r.clone());
        }
        Ok(Arc::new(Gateway {
            inner: Arc::new_cyclic(|this| Inner {
                this: this.clone(),
                domain: addressing.gateway_domain().to_owned(),
                addressing,
                routes,
                allowed_ips,
                hosts: config.server.hosts.clone(),
                format: sip.message_format,
                contact_host: sip.contact_host.clone(),
                presence: crate::presence::Subscriptions::new(sip),
                config: sip.clone(),
                transport: OnceLock::new(),
            }),
        }))
    }

    /// The XMPP domain the gateway serves.
    pub fn domain(&self) -> &str {
        &self.inner.domain
    }

    /// Binds the SIP transport on `[sip] listen` and starts serving requests. Returns the
    /// bound address (UDP and TCP).
    pub async fn start(&self, server: Arc<Server>) -> std::io::Result<SocketAddr> {
        let sip = &self.inner.config;
        let limits = Limits {
            max_message_bytes: sip.max_message_bytes,
            udp_max_bytes: sip.udp_max_bytes,
            max_transactions: sip.max_transactions,
            max_tcp_connections: sip.max_tcp_connections,
            max_requests_per_ip_per_sec: sip.max_requests_per_ip_per_sec,
        };
        let shutdown = server.shutdown_token().clone();
        let (transport, mut requests) =
            Transport::bind(sip.listen, limits, shutdown.clone()).await?;
        let local = transport.local_addr();
        if self.inner.transport.set(transport).is_err() {
            return Err(std::io::Error::other("the SIP gateway is already started"));
        }
        let inner = self.inner.clone();
        let weak = Arc::downgrade(&server);
        tokio::spawn(async move {
            loop {
                let next = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    r = requests.recv() => r,
                };
                let Some(incoming) = next else { break };
                let Some(server) = weak.upgrade() else { break };
                let inner = inner.clone();
                // One task per request; their number is capped by the server transaction
                // table (`max_transactions`), which holds each until it is answered.
                tokio::spawn(async move { inner.handle_request(&server, incoming).await });
            }
        });
        crate::presence::start_refresher(self.inner.clone(), Arc::downgrade(&server));
        Ok(local)
    }
}

/// "now" for CPIM DateTime and PIDF timestamps.
pub(crate) fn now() -> DateTime {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    DateTime::from_unix_millis(ms)
}

impl Inner {
    pub(crate) fn self_arc(&self) -> Option<Arc<Inner>> {
        self.this.upgrade()
    }

    pub(crate) fn is_allowed_ip(&self, ip: IpAddr) -> bool {
        self.allowed_ips.contains(&ip)
    }

    pub(crate) fn transport(&self) -> Option<&Arc<Transport>> {
        self.transport.get()
    }

    /// The Contact URI for the gateway speaking as `user` (a `sip:` URI's user part).
    pub(crate) fn contact(&self, sip_uri: &str) -> String {
        let host = match &self.contact_host {
            Some(h) => h.clone(),
            None => self
                .transport()
                .map_or_else(|| self.domain.clone(), |t| t.local_addr().to_string()),
        };
        let user = SipUri::parse(sip_uri)
            .ok()
            .and_then(|u| u.user().map(str::to_owned))
            .unwrap_or_else(|| "gateway".to_owned());
        let uri = SipUri::new(false, Some(&user), "localhost", None)
            .map(|u| u.to_string())
            .unwrap_or_default();
        // `SipUri` percent-encodes the user; swap in the real host (which may carry a port).
        let encoded_user = uri
            .strip_prefix("sip:")
            .and_then(|r| r.strip_suffix("@localhost"))
            .unwrap_or("gateway");
        format!("<sip:{encoded_user}@{host}>")
    }

    /// Where requests for a SIP URI go.
    pub(crate) fn route_for(&self, uri: &SipUri) -> Option<Dest> {
        let route = self.routes.get(uri.host())?;
        Some(Dest {
            addr: route.address,
            tcp: route.transport == SipTransport::Tcp,
        })
    }

    /// Whether requests from `addr` claiming to be from `from_uri` are accepted.
    pub(crate) fn trusted_source(&self, origin: Origin, from_uri: &SipUri) -> bool {
        self.allowed_ips.contains(&origin.addr().ip())
            && self
                .routes
                .get(from_uri.host())
                .is_some_and(|r| r.address.ip() == origin.addr().ip())
    }

    /// `sip:alice@localhost` -> `alice@localhost` when the host is ours.
    pub(crate) fn local_jid_for(&self, uri: &str) -> Option<Jid> {
        let parsed = SipUri::parse(uri).ok()?;
        if !self
            .hosts
            .iter()
            .any(|h| h.eq_ignore_ascii_case(parsed.host()))
        {
            return None;
        }
        Jid::parse(&sip_uri_to_jid(uri).ok()?).ok()
    }

    /// Whether `jid` (bare) is an account here.
    pub(crate) async fn account_exists(&self, server: &Server, jid: &Jid) -> bool {
        if server.router().with_resources(jid, |l| !l.is_empty()) {
            return true;
        }
        match jid.node() {
            Some(node) => server
                .storage()
                .account_exists(jid.domain(), node)
                .await
                .unwrap_or(false),
            None => false,
        }
    }

    async fn handle_request(&self, server: &Server, incoming: Incoming) {
        let Some(transport) = self.transport() else {
            return;
        };
        let Incoming {
            request,
            origin,
            wire_len,
        } = incoming;
        let method = request.method().unwrap_or_default().to_owned();
        let response = match method.as_str() {
            "MESSAGE" => Some(self.sip_message(server, &request, origin, wire_len).await),
            "SUBSCRIBE" => crate::presence::sip_subscribe(self, server, &request, origin).await,
            "NOTIFY" => crate::presence::sip_notify(self, server, &request).await,
            "OPTIONS" => {
                let mut r = request.response(200, "OK", Some(&crate::random_token()));
                r.push("Allow", ALLOW);
                r.push("Accept", "text/plain, message/cpim, application/pkcs7-mime, multipart/signed, application/pidf+xml");
                Some(r)
            }
            _ => {
                let mut r = request.response(405, reason(405), Some(&crate::random_token()));
                r.push("Allow", ALLOW);
                Some(r)
            }
        };
        if let Some(response) = response {
            transport.respond(&request, origin, response).await;
        }
    }

    /// A SIP MESSAGE for an XMPP user (RFC 3428 -> RFC 3922 §4.2).
    async fn sip_message(
        &self,
        server: &Server,
        req: &SipMessage,
        origin: Origin,
        wire_len: usize,
    ) -> SipMessage {
        let tag = crate::random_token();
        let fail = |code: u16| req.response(code, reason(code), Some(&tag));
        if matches!(origin, Origin::Udp(_)) && wire_len > self.config.udp_max_bytes {
            tracing::debug!(
                bytes = wire_len,
                "SIP MESSAGE over UDP above udp_max_bytes: 513"
            );
            return fail(513);
        }
        let Some(from_uri) = req.header("From").map(addr_uri) else {
            return fail(400);
        };
        let Ok(from_sip) = SipUri::parse(from_uri) else {
            return fail(400);
        };
        if !self.trusted_source(origin, &from_sip) {
            tracing::info!(from = %from_uri, source = %origin.addr(), "SIP MESSAGE from an address with no route: 403");
            return fail(403);
        }
        let Ok(from) = self.addressing.sip_to_jid(from_uri) else {
            return fail(400);
        };
        let Some(to) = self.local_jid_for(req.request_uri().unwrap_or_default()) else {
            return fail(404);
        };
        if !self.account_exists(server, &to).await {
            return fail(404);
        }
        let stanza = match self.sip_body_to_stanza(req, &from, to.as_str()) {
            Ok(s) => s,
            Err(code) => {
                let mut r = fail(code);
                if code == 415 {
                    r.push(
                        "Accept",
                        "text/plain, message/cpim, application/pkcs7-mime, multipart/signed",
                    );
                }
                return r;
            }
        };
        server.route(stanza).await;
        req.response(200, "OK", Some(&tag))
    }

    /// Maps a MESSAGE body to a `<message/>` from `from` to `to`; `Err(status)` when it
    /// cannot be mapped.
    fn sip_body_to_stanza(&self, req: &SipMessage, from: &str, to: &str) -> Result<Element, u16> {
        let content_type = req.header("Content-Type").unwrap_or("text/plain");
        let mime = content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        let mut stanza = Element::builder("message", ns::CLIENT)
            .with_attr("from", from)
            .with_attr("to", to)
            .with_attr("type", "chat")
            .build();
        match mime.as_str() {
            "text/plain" => {
                let charset_ok = starling_e2e::mime::ContentType::parse(content_type)
                    .param("charset")
                    .is_none_or(|c| {
                        c.eq_ignore_ascii_case("utf-8") || c.eq_ignore_ascii_case("us-ascii")
                    });
                let text = std::str::from_utf8(&req.body).map_err(|_| 415u16)?;
                if !charset_ok {
                    return Err(415);
                }
                if let Some(subject) = req.header("Subject") {
                    stanza.append_child(
                        Element::builder("subject", ns::CLIENT)
                            .append(subject)
                            .build(),
                    );
                }
                if !text.is_empty() {
                    stanza.append_child(
                        Element::builder("body", ns::CLIENT)
                            .append(text.replace("\r\n", "\n"))
                            .build(),
                    );
                }
                if stanza.children().next().is_none() {
                    return Err(400);
                }
                Ok(stanza)
            }
            "message/cpim" => {
                let cpim = starling_cpim::CpimMessage::parse(&req.body).map_err(|_| 400u16)?;
                let opts = starling_cpim::InboundMessageOptions::default();
                // Addresses come from SIP, never from the CPIM headers.
                let mut mapped =
                    starling_cpim::message::cpim_to_xmpp_message_with(&cpim, &opts, |_| {
                        Ok(from.to_owned())
                    })
                    .map_err(|e| match e {
                        MessageMappingError::UnsupportedRequire(_) => 420u16,
                        MessageMappingError::UnsupportedContent(_) => 415,
                        _ => 400,
                    })?;
                mapped.put_attr("from", from);
                mapped.put_attr("to", to);
                Ok(mapped)
            }
            "application/pkcs7-mime" | "multipart/signed" | "application/pkcs7-signature" => {
                // RFC 3923 §8: the S/MIME object, unchanged, as the <e2e/> text: its MIME
                // header fields in the order they came, a blank line, the body.
                let mut entity = Vec::new();
                for (name, v) in req.headers() {
                    if is_entity_header(name) {
                        entity.extend_from_slice(format!("{name}: {v}\r\n").as_bytes());
                    }
                }
                entity.extend_from_slice(b"\r\n");
                entity.extend_from_slice(&req.body);
                let e2e = starling_e2e::payload::wrap(&entity).map_err(|_| 415u16)?;
                stanza.append_child(e2e);
                Ok(stanza)
            }
            _ => Err(415),
        }
    }

    /// An XMPP `<message/>` for a SIP user.
    async fn xmpp_message(&self, server: &Server, stanza: Element, to: Jid) {
        match stanza.attr("type") {
            Some("error") => return,
            Some("groupchat") => {
                server.bounce(&stanza, Cond::NotAcceptable).await;
                return;
            }
            _ => {}
        }
        let (Some(transport), Some(from)) = (
            self.transport().cloned(),
            stanza.attr("from").and_then(|f| Jid::parse(f).ok()),
        ) else {
            server.bounce(&stanza, Cond::ServiceUnavailable).await;
            return;
        };
        let Ok(target) = self.addressing.jid_to_sip(to.as_str()) else {
            server.bounce(&stanza, Cond::JidMalformed).await;
            return;
        };
        let Ok(target_uri) = SipUri::parse(&target) else {
            server.bounce(&stanza, Cond::JidMalformed).await;
            return;
        };
        let Some(dest) = self.route_for(&target_uri) else {
            server.bounce(&stanza, Cond::RemoteServerNotFound).await;
            return;
        };
        let Ok(from_uri) = jid_to_sip_uri(from.as_str()) else {
            server.bounce(&stanza, Cond::JidMalformed).await;
            return;
        };
        let mut req = SipMessage::request("MESSAGE", &target);
        req.push(
            "From",
            format!("<{from_uri}>;tag={}", crate::random_token()),
        );
        req.push("To", format!("<{target}>"));
        req.push(
            "Call-ID",
            format!("{}@{}", crate::random_token(), self.domain),
        );
        req.push("CSeq", "1 MESSAGE");
        match self.stanza_to_sip_body(&stanza, &target_uri, &mut req) {
            Ok(true) => {}
            Ok(false) => return, // nothing to carry (a chat state, a receipt...)
            Err(cond) => {
                server.bounce(&stanza, cond).await;
                return;
            }
        }
        let Some(server) = server.arc() else { return };
        tokio::spawn(async move {
            let cond = match transport.request(req, dest).await {
                Ok(r) if r.status().is_some_and(|c| c < 300) => return,
                Ok(r) => sip_to_condition(r.status().unwrap_or(500)),
                Err(TsxError::Timeout(_)) => Cond::RemoteServerTimeout,
                Err(TsxError::Busy) => Cond::ResourceConstraint,
                Err(TsxError::TooLarge(_)) => Cond::PolicyViolation,
                Err(TsxError::Io(e)) => {
                    tracing::debug!(error = %e, "SIP MESSAGE could not be sent");
                    Cond::RemoteServerNotFound
                }
            };
            server.bounce(&stanza, cond).await;
        });
    }

    /// Fills the body of a MESSAGE from a stanza: `Ok(false)` when there is nothing to send.
    fn stanza_to_sip_body(
        &self,
        stanza: &Element,
        target: &SipUri,
        req: &mut SipMessage,
    ) -> Result<bool, Cond> {
        if let Some(e2e) = starling_e2e::payload::find(stanza) {
            // RFC 3923 §8: forwarded unchanged. The object's MIME header fields become SIP
            // header fields (in order), its body the MESSAGE body.
            let object = starling_e2e::payload::unwrap(e2e).map_err(|_| Cond::BadRequest)?;
            let (fields, body) = split_entity(&object).ok_or(Cond::BadRequest)?;
            if !fields
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case("Content-Type"))
            {
                return Err(Cond::BadRequest);
            }
            for (name, value) in fields {
                if !is_entity_header(&name) {
                    return Err(Cond::BadRequest);
                }
                req.push(&name, value);
            }
            req.body = body.to_vec();
            return Ok(true);
        }
        match self.format {
            SipMessageFormat::Cpim => {
                // The CPIM To is the SIP user as an im: address (RFC 3922 §3), not the
                // gateway JID the XMPP sender used.
                let mut copy = stanza.clone();
                let user_jid = format!("{}@{}", target.user().unwrap_or(""), target.host());
                copy.put_attr("to", user_jid);
                match starling_cpim::message::xmpp_message_to_cpim(&copy, &now()) {
                    Ok(cpim) => {
                        req.push("Content-Type", "message/cpim");
                        req.body = cpim.to_bytes();
                        Ok(true)
                    }
                    Err(MessageMappingError::NothingToMap) => Ok(false),
                    Err(e) => {
                        tracing::debug!(error = %e, "message not mapped to CPIM");
                        Err(Cond::NotAcceptable)
                    }
                }
            }
            SipMessageFormat::Text => {
                let child = |name| {
                    stanza
                        .children()
                        .find(|c| {
                            c.name() == name && (c.ns() == ns::CLIENT || c.ns() == "jabber:server")
                        })
                        .map(Element::text)
                };
                let body = child("body");
                let subject = child("subject");
                if body.is_none() && subject.is_none() {
                    return Ok(false);
                }
                if let Some(s) = subject {
                    req.push("Subject", s.replace(['\r', '\n'], " "));
                }
                req.push("Content-Type", "text/plain;charset=UTF-8");
                req.body = body.unwrap_or_default().into_bytes();
                Ok(true)
            }
        }
    }

    /// disco#info of the gateway domain: a gateway of type `sip` (XEP-0100 identity).
    async fn gateway_iq(&self, server: &Server, stanza: Element) {
        if !matches!(stanza.attr("type"), Some("get" | "set")) {
            return;
        }
        let query = stanza
            .children()
            .next()
            .filter(|q| q.is("query", "http://jabber.org/protocol/disco#info"));
        let to_domain =
            Jid::parse(stanza.attr("to").unwrap_or_default()).is_ok_and(|j| j.node().is_none());
        match query {
            Some(_) if stanza.attr("type") == Some("get") && to_domain => {
                let reply = Element::builder("iq", ns::CLIENT)
                    .with_attr("type", "result")
                    .with_attr("from", stanza.attr("to").unwrap_or_default())
                    .with_attr("to", stanza.attr("from").unwrap_or_default())
                    .with_attr("id", stanza.attr("id").unwrap_or_default())
                    .append(
                        Element::builder("query", "http://jabber.org/protocol/disco#info")
                            .append(
                                Element::builder(
                                    "identity",
                                    "http://jabber.org/protocol/disco#info",
                                )
                                .with_attr("category", "gateway")
                                .with_attr("type", "sip")
                                .with_attr("name", "SIP/SIMPLE gateway")
                                .build(),
                            )
                            .append(
                                Element::builder(
                                    "feature",
                                    "http://jabber.org/protocol/disco#info",
                                )
                                .with_attr("var", "http://jabber.org/protocol/disco#info")
                                .build(),
                            )
                            .build(),
                    )
                    .build();
                server.route(reply).await;
            }
            _ => server.bounce(&stanza, Cond::ServiceUnavailable).await,
        }
    }
}

/// Whether a header field belongs to the MIME entity (RFC 2045 `Content-*` and
/// `MIME-Version`) rather than to SIP; `Content-Length` and `Content-Encoding` are SIP's.
fn is_entity_header(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower == "mime-version"
        || (lower.starts_with("content-")
            && lower != "content-length"
            && lower != "content-encoding")
}

/// Header fields as (name, value), in order.
type Fields = Vec<(String, String)>;

/// A canonical (CRLF) MIME entity split into its header fields (unfolded) and its body.
fn split_entity(object: &[u8]) -> Option<(Fields, &[u8])> {
    let end = object.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&object[..end]).ok()?;
    let mut fields: Fields = Vec::new();
    for line in head.split("\r\n") {
        if line.starts_with([' ', '\t']) {
            let last = fields.last_mut()?;
            last.1.push(' ');
            last.1.push_str(line.trim());
        } else {
            let (n, v) = line.split_once(':')?;
            fields.push((n.trim().to_owned(), v.trim().to_owned()));
        }
    }
    Some((fields, &object[end + 4..]))
}

#[async_trait]
impl Module for Gateway {
    fn name(&self) -> &'static str {
        "sip-gateway"
    }

    fn served_domains(&self) -> Vec<String> {
        vec![self.inner.domain.clone()]
    }

    async fn on_domain_stanza(&self, server: &Server, stanza: Element, to: Jid) {
        let inner = &self.inner;
        match stanza.name() {
            "message" if to.node().is_some() => inner.xmpp_message(server, stanza, to).await,
            "presence" if to.node().is_some() => {
                crate::presence::xmpp_presence(inner, server, stanza, to).await
            }
            "iq" => inner.gateway_iq(server, stanza).await,
            "message" if stanza.attr("type") != Some("error") => {
                server.bounce(&stanza, Cond::ServiceUnavailable).await
            }
            _ => {}
        }
    }
}
