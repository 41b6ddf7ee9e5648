//! External components (XEP-0114, the Jabber Component Protocol): processes such as gateways
//! and bots that serve a whole domain of their own through a stream to this server.
//!
//! Why it is here: server extensibility is a Core requirement of the XMPP Compliance Suites
//! (XEP-0479), and it lets an operator attach existing components (Slidge gateways, Biboumi,
//! bots written with slixmpp's `ComponentXMPP`) without touching Starling.
//!
//! How it works: [`Components`] is a module that serves every configured component domain
//! ([`Module::served_domains`]); a stanza for such a domain is queued for the connected
//! component, or bounced with `service-unavailable` while none is connected. [`listen`] accepts
//! component streams (namespace `jabber:component:accept`) and runs the handshake of XEP-0114
//! §3 (`<handshake>` carrying hex(SHA-1(stream id + secret))); once authenticated, the
//! connection task forwards the component's stanzas into the router after checking that
//! `from` is in the component's domain, and writes the stanzas queued for it.
//!
//! On the wire stanzas live in `jabber:component:accept`; inside the server every stanza is in
//! `jabber:client`, so the namespace is rewritten at both edges (`starling_core::xml::rename_namespace`).
//! The stream carries no TLS (XEP-0114 defines none): [`ComponentsConfig::listen`] defaults to
//! loopback.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use minidom::Element;
use parking_lot::Mutex;
use sha1::{Digest, Sha1};
use starling_core::config::{ComponentsConfig, Config};
use starling_core::module::Module;
use starling_core::session::SessionHandle;
use starling_core::xml::rename_namespace;
use starling_core::Server;
use starling_proto::error::{
    StanzaErrorCondition as Cond, StreamError, StreamErrorCondition as SE,
};
use starling_proto::framer::{Limits, StreamEvent};
use starling_proto::jid::Jid;
use starling_proto::{ns, writer};
use starling_stream::{ReadError, XmlStream};
use subtle::ConstantTimeEq;
use tokio::net::{TcpListener, TcpStream};

/// The content namespace of component streams (XEP-0114 §3).
pub const NS_COMPONENT: &str = "jabber:component:accept";

/// Outbound stanzas written per batch before flushing.
const WRITE_BATCH: usize = 64;

/// The component module: which domains exist, and the live connection of each.
pub struct Components {
    secrets: HashMap<String, String>,
    connected: Mutex<HashMap<String, SessionHandle>>,
    settings: ComponentsConfig,
}

impl Components {
    /// The module for the components listed in `config.components`, or `None` when there
    /// are none.
    pub fn from_config(config: &Config) -> Option<Arc<Components>> {
        if config.components.list.is_empty() {
            return None;
        }
        Some(Arc::new(Components {
            secrets: config
                .components
                .list
                .iter()
                .map(|c| (c.domain.clone(), c.secret.clone()))
                .collect(),
            connected: Mutex::new(HashMap::new()),
            settings: config.components.clone(),
        }))
    }

    /// Whether a component is connected for `domain` right now.
    pub fn is_connected(&self, domain: &str) -> bool {
        self.connected
            .lock()
            .get(domain)
            .is_some_and(|h| !h.is_closed())
    }
}

#[async_trait]
impl Module for Components {
    fn name(&self) -> &'static str {
        "component"
    }

    fn served_domains(&self) -> Vec<String> {
        self.secrets.keys().cloned().collect()
    }

    async fn on_domain_stanza(&self, server: &Server, stanza: Element, to: Jid) {
        let handle = self.connected.lock().get(to.domain()).cloned();
        let delivered = match handle {
            Some(h) => h.deliver(stanza.clone()).is_ok(),
            None => false,
        };
        if !delivered {
            tracing::debug!(domain = to.domain(), "component not connected; bouncing");
            // RFC 6120 §8.3.3.19; errors and presence are not answered (bounce() knows).
            if stanza.name() != "presence" {
                server.bounce(&stanza, Cond::ServiceUnavailable).await;
            }
        }
    }
}

/// The handshake digest of XEP-0114 §3: lowercase hex of SHA-1(stream id + secret).
pub fn handshake_digest(stream_id: &str, secret: &str) -> String {
    let digest = Sha1::new()
        .chain_update(stream_id.as_bytes())
        .chain_update(secret.as_bytes())
        .finalize();
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Accepts component streams on `listener` until the server shuts down.
pub async fn listen(server: Arc<Server>, components: Arc<Components>, listener: TcpListener) {
    let shutdown = server.shutdown_token().clone();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((tcp, peer)) => {
                let _ = tcp.set_nodelay(true);
                let server = server.clone();
                let components = components.clone();
                tokio::spawn(async move {
                    connection(server, components, tcp, peer).await;
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "component listener: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Binds the component listener of `config` and starts accepting, when components are
/// configured. Returns the bound address.
pub async fn start(
    server: Arc<Server>,
    components: Arc<Components>,
) -> std::io::Result<std::net::SocketAddr> {
    let listener = TcpListener::bind(components.settings.listen).await?;
    let address = listener.local_addr()?;
    tracing::info!(%address, "listening for components (XEP-0114)");
    tokio::spawn(listen(server, components, listener));
    Ok(address)
}

fn stream_error_bytes(err: &StreamError) -> Vec<u8> {
    let mut out = Vec::new();
    writer::write_element(&err.to_element(), &mut out);
    out.extend_from_slice(writer::STREAM_CLOSE.as_bytes());
    out
}

async fn fail(stream: &mut XmlStream<TcpStream>, peer: std::net::SocketAddr, err: StreamError) {
    tracing::info!(%peer, condition = err.condition.name(), text = ?err.text, "closing component stream with stream error");
    stream.queue_raw(&String::from_utf8_lossy(&stream_error_bytes(&err)));
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let _ = stream.flush().await;
        stream.shutdown().await;
    })
    .await;
}

/// Header, handshake, then the stanza loop of one component connection.
async fn connection(
    server: Arc<Server>,
    components: Arc<Components>,
    tcp: TcpStream,
    peer: std::net::SocketAddr,
) {
    let settings = &components.settings;
    let limits = Limits {
        max_stanza_bytes: settings.max_stanza_bytes,
        max_buffered_bytes: settings.max_stanza_bytes + 16_384,
        ..Limits::default()
    };
    let mut stream = XmlStream::new(tcp, limits);
    let deadline = Duration::from_secs(settings.handshake_timeout_secs);
    let domain = match tokio::time::timeout(deadline, handshake(&components, &mut stream)).await {
        Ok(Ok(domain)) => domain,
        Ok(Err(Some(err))) => return fail(&mut stream, peer, err).await,
        Ok(Err(None)) => return,
        Err(_) => {
            let err = StreamError::with_text(SE::ConnectionTimeout, "handshake took too long");
            return fail(&mut stream, peer, err).await;
        }
    };
    let (handle, mut inbox) = SessionHandle::new(settings.queue_len);
    let registered = {
        let mut connected = components.connected.lock();
        if connected.get(&domain).is_some_and(|h| !h.is_closed()) {
            false
        } else {
            connected.insert(domain.clone(), handle.clone());
            true
        }
    };
    if !registered {
        let err = StreamError::with_text(SE::Conflict, "this component is already connected");
        return fail(&mut stream, peer, err).await;
    }
    stream.queue_raw(&format!("<handshake xmlns='{NS_COMPONENT}'/>"));
    if stream.flush().await.is_err() {
        components.connected.lock().remove(&domain);
        return;
    }
    tracing::info!(%peer, %domain, "component connected");

    let shutdown = server.shutdown_token().clone();
    let close_signal = inbox.close_signal();
    let error = loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break Some(StreamError::new(SE::SystemShutdown)),
            reason = close_signal.closed() => break Some(reason),
            out = inbox.rx.recv() => {
                let Some(out) = out else { break None };
                stream.queue(&rename_namespace(out.into_element(), ns::CLIENT, NS_COMPONENT));
                let mut n = 1;
                while n < WRITE_BATCH {
                    match inbox.rx.try_recv() {
                        Ok(out) => {
                            let el = out.into_element();
                            stream.queue(&rename_namespace(el, ns::CLIENT, NS_COMPONENT));
                            n += 1;
                        }
                        Err(_) => break,
                    }
                }
                tokio::select! {
                    biased;
                    r = stream.flush() => if r.is_err() { break None },
                    _ = shutdown.cancelled() => break Some(StreamError::new(SE::SystemShutdown)),
                    reason = close_signal.closed() => break Some(reason),
                }
            }
            ev = stream.next_event() => match ev {
                Ok(StreamEvent::Stanza(el)) => {
                    if let Err(e) = inbound(&server, &domain, el).await {
                        break Some(e);
                    }
                }
                Ok(StreamEvent::Close) => {
                    stream.queue_raw(writer::STREAM_CLOSE);
                    let _ = stream.flush().await;
                    break None;
                }
                Ok(StreamEvent::Open(_)) => break Some(StreamError::with_text(SE::InvalidXml, "unexpected stream header")),
                Err(ReadError::Stream(e)) => break Some(e),
                Err(_) => break None,
            },
        }
    };
    // Unregister first (only if still ours), then bounce what was queued for the component.
    {
        let mut connected = components.connected.lock();
        if connected.get(&domain).map(|h| h.id()) == Some(handle.id()) {
            connected.remove(&domain);
        }
    }
    inbox.rx.close();
    while let Ok(out) = inbox.rx.try_recv() {
        let el = out.into_element();
        if el.name() != "presence" {
            server.bounce(&el, Cond::ServiceUnavailable).await;
        }
    }
    tracing::info!(%peer, %domain, "component disconnected");
    if let Some(err) = error {
        fail(&mut stream, peer, err).await;
    }
}

/// Reads the header and the handshake. `Err(None)`: the connection just went away.
async fn handshake(
    components: &Components,
    stream: &mut XmlStream<TcpStream>,
) -> Result<String, Option<StreamError>> {
    let header = match stream.next_event().await {
        Ok(StreamEvent::Open(h)) => h,
        Ok(_) => return Err(Some(StreamError::new(SE::InvalidXml))),
        Err(ReadError::Stream(e)) => return Err(Some(e)),
        Err(_) => return Err(None),
    };
    let id = random_id();
    let to = header.to.clone().unwrap_or_default();
    // Answer with our header before any error, as RFC 6120 §4.9.1.1 asks.
    stream.queue_raw(&writer::stream_header(
        NS_COMPONENT,
        Some(&to),
        None,
        &id,
        None,
    ));
    if header.default_ns.as_deref() != Some(NS_COMPONENT) {
        return Err(Some(StreamError::with_text(
            SE::InvalidNamespace,
            "a component stream is in jabber:component:accept",
        )));
    }
    let Some(secret) = components.secrets.get(&to) else {
        return Err(Some(StreamError::with_text(
            SE::HostUnknown,
            "no component is configured for this domain",
        )));
    };
    stream.flush().await.map_err(|_| None)?;
    let el = match stream.next_event().await {
        Ok(StreamEvent::Stanza(el)) => el,
        Ok(_) => return Err(Some(StreamError::new(SE::NotAuthorized))),
        Err(ReadError::Stream(e)) => return Err(Some(e)),
        Err(_) => return Err(None),
    };
    if !el.is("handshake", NS_COMPONENT) {
        return Err(Some(StreamError::with_text(
            SE::NotAuthorized,
            "the handshake must come first",
        )));
    }
    let expected = handshake_digest(&id, secret);
    let given = el.text().trim().to_ascii_lowercase();
    if !bool::from(given.as_bytes().ct_eq(expected.as_bytes())) {
        tracing::warn!(domain = %to, "component handshake failed: wrong secret");
        return Err(Some(StreamError::with_text(
            SE::NotAuthorized,
            "handshake digest does not match",
        )));
    }
    Ok(to)
}

/// Checks and routes one stanza sent by the component serving `domain`.
async fn inbound(server: &Server, domain: &str, el: Element) -> Result<(), StreamError> {
    if el.ns() != NS_COMPONENT || !matches!(el.name(), "message" | "presence" | "iq") {
        return Err(StreamError::with_text(
            SE::UnsupportedStanzaType,
            format!("unsupported element {{{}}}{}", el.ns(), el.name()),
        ));
    }
    // XEP-0114 §3: the component must stamp 'from' itself, inside its own domain.
    let from = el.attr("from").and_then(|f| Jid::parse(f).ok());
    match from {
        Some(f) if f.domain() == domain => {}
        _ => {
            return Err(StreamError::with_text(
                SE::InvalidFrom,
                "'from' must be a JID of the component's domain",
            ))
        }
    }
    let el = rename_namespace(el, NS_COMPONENT, ns::CLIENT);
    match el.attr("to").map(Jid::parse) {
        Some(Ok(_)) => server.route(el).await,
        Some(Err(_)) => server.bounce(&el, Cond::JidMalformed).await,
        None => return Err(StreamError::with_text(SE::ImproperAddressing, "no 'to'")),
    }
    Ok(())
}

fn random_id() -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    (0..16)
        .map(|_| format!("{:02x}", rng.random::<u8>()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_is_hex_sha1_of_id_then_secret() {
        // Computed independently: python3 -c "import hashlib;
        // print(hashlib.sha1(b'3BF96D32sesame').hexdigest())"
        assert_eq!(
            handshake_digest("3BF96D32", "sesame"),
            "7a98dc4c9e92493d7fd66a25364c862637789c45"
        );
    }
}
