//! Outbound server streams (RFC 6120 §4.1, the initiating side): find the remote domain's
//! server ([`crate::resolver`]), connect (STARTTLS, or direct TLS per XEP-0368), then
//! authenticate as our domain: SASL EXTERNAL (XEP-0178) when the peer's certificate is valid
//! for its domain and it offers EXTERNAL, otherwise Server Dialback (XEP-0220) where the
//! policy allows it. When the peer offers bidirectional streams (XEP-0288) and `s2s.bidi` is
//! on, we ask for one before authenticating, so the peer may send its stanzas back on this
//! connection. Also the short verification streams the receiving side of dialback opens to
//! the authoritative server ([`verify_key`]).
//!
//! Every function here may take as long as the network lets it: callers bound them with
//! `s2s.connect_timeout_secs`.

use base64::Engine;
use minidom::Element;
use rustls::pki_types::ServerName;
use starling_core::config::S2sPolicy;
use starling_core::xml::BuilderExt;
use starling_proto::error::StreamError;
use starling_proto::framer::StreamEvent;
use starling_proto::Attr;
use starling_proto::{ns, writer};
use starling_stream::XmlStream;
use tokio::net::TcpStream;

use crate::dialback::{self, NS_DB, NS_FEATURE};
use crate::resolver::Target;
use crate::transport::Transport;
use crate::Ctx;

/// A server stream over its transport.
pub(crate) type Stream = XmlStream<Transport>;

/// Why an outbound stream could not be set up. Decides the bounce condition.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// No address, or none accepted a connection (`remote-server-not-found`).
    #[error("not reachable: {0}")]
    NotFound(String),
    /// The peer was reached but authentication or TLS failed (`remote-server-not-found`).
    #[error("refused: {0}")]
    Refused(String),
    /// The whole attempt took longer than `connect_timeout_secs` (`remote-server-timeout`).
    #[error("timed out")]
    Timeout,
}

use ConnectError::{NotFound, Refused};

/// The bidirectional-streams feature a receiving server offers (XEP-0288 §2).
pub const NS_BIDI_FEATURE: &str = "urn:xmpp:features:bidi";
/// The element an initiating server sends to ask for a bidirectional stream (XEP-0288 §2).
pub const NS_BIDI: &str = "urn:xmpp:bidi";

/// An authenticated outbound stream and what was agreed on it.
pub(crate) struct Connected {
    pub stream: Stream,
    /// The id of the peer's current stream header: further dialback keys (piggybacking,
    /// XEP-0220 §4.4) are bound to it.
    pub stream_id: String,
    /// The peer offered dialback, so more local domains can be authenticated on this stream.
    pub dialback: bool,
    /// We asked for a bidirectional stream (XEP-0288): the peer may send on it.
    pub bidi: bool,
}

/// Opens an authenticated stream from `local` to `remote`, trying each target in order.
pub(crate) async fn connect(
    ctx: &Ctx,
    local: &str,
    remote: &str,
) -> Result<Connected, ConnectError> {
    let targets = ctx
        .resolver
        .resolve(remote)
        .await
        .map_err(|e| NotFound(e.to_string()))?;
    let mut last = NotFound(format!("no address for {remote}"));
    for target in targets {
        match attempt(ctx, local, remote, &target).await {
            Ok(s) => {
                tracing::debug!(%local, %remote, address = %target.address, "outbound s2s stream ready");
                return Ok(s);
            }
            Err(e) => {
                tracing::info!(%local, %remote, address = %target.address, error = %e, "outbound s2s attempt failed");
                last = e;
            }
        }
    }
    Err(last)
}

async fn open_transport(
    ctx: &Ctx,
    remote: &str,
    target: &Target,
) -> Result<Transport, ConnectError> {
    let tcp = TcpStream::connect(target.address)
        .await
        .map_err(|e| NotFound(format!("{}: {e}", target.address)))?;
    ctx.connections_opened
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let _ = tcp.set_nodelay(true);
    if target.direct_tls {
        tls_connect(ctx, remote, tcp).await
    } else {
        Ok(Transport::Plain(tcp))
    }
}

async fn tls_connect(ctx: &Ctx, remote: &str, tcp: TcpStream) -> Result<Transport, ConnectError> {
    let name = ServerName::try_from(remote.to_owned())
        .map_err(|_| Refused(format!("'{remote}' is not a DNS name")))?;
    let connector = tokio_rustls::TlsConnector::from(ctx.tls.client.clone());
    let tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| Refused(format!("TLS handshake: {e}")))?;
    Ok(Transport::Connected(Box::new(tls)))
}

/// The header an initiating server sends: no `id` (RFC 6120 §4.7.3).
fn initiating_header(local: &str, remote: &str) -> String {
    let mut h = crate::stream_header(local, Some(remote), "");
    h = h.replacen(" id=''", "", 1);
    h
}

/// Reads the next first-level element, turning stream errors and closes into refusals.
pub(crate) async fn next_element(stream: &mut Stream) -> Result<Element, ConnectError> {
    match stream.next_event().await {
        Ok(StreamEvent::Stanza(el)) if el.is("error", ns::STREAM) => {
            let why = StreamError::parse(&el)
                .map(|e| e.condition.name().to_owned())
                .unwrap_or_else(|| "unknown".into());
            Err(Refused(format!("stream error {why}")))
        }
        Ok(StreamEvent::Stanza(el)) => Ok(el),
        Ok(StreamEvent::Open(_)) => Err(Refused("unexpected stream header".into())),
        Ok(StreamEvent::Close) => Err(Refused("peer closed the stream".into())),
        Err(e) => Err(Refused(e.to_string())),
    }
}

/// Sends our header, reads the peer's header and features: (stream id, features).
async fn open(
    stream: &mut Stream,
    local: &str,
    remote: &str,
) -> Result<(String, Element), ConnectError> {
    stream.restart();
    stream.queue_raw(&initiating_header(local, remote));
    stream.flush().await.map_err(|e| NotFound(e.to_string()))?;
    let header = match stream.next_event().await {
        Ok(StreamEvent::Open(h)) => h,
        Ok(_) => return Err(Refused("expected a stream header".into())),
        Err(e) => return Err(Refused(e.to_string())),
    };
    if header.default_ns.as_deref() != Some(ns::SERVER) {
        return Err(Refused("peer does not speak jabber:server".into()));
    }
    let id = header.id.unwrap_or_default();
    let features = next_element(stream).await?;
    if !features.is("features", ns::STREAM) {
        return Err(Refused(format!(
            "expected features, got <{}>",
            features.name()
        )));
    }
    Ok((id, features))
}

/// STARTTLS on an open stream; gives back the encrypted stream.
async fn starttls(ctx: &Ctx, mut stream: Stream, remote: &str) -> Result<Stream, ConnectError> {
    stream
        .send(&Element::builder("starttls", ns::TLS).build())
        .await
        .map_err(|e| NotFound(e.to_string()))?;
    let answer = next_element(&mut stream).await?;
    if !answer.is("proceed", ns::TLS) {
        return Err(Refused("STARTTLS refused".into()));
    }
    let limits = ctx.limits();
    let Transport::Plain(tcp) = stream.into_inner() else {
        return Err(Refused("TLS twice".into()));
    };
    Ok(XmlStream::new(tls_connect(ctx, remote, tcp).await?, limits))
}

fn offers_external(features: &Element) -> bool {
    features.get_child("mechanisms", ns::SASL).is_some_and(|m| {
        m.children()
            .any(|c| c.name() == "mechanism" && c.text().trim() == "EXTERNAL")
    })
}

async fn attempt(
    ctx: &Ctx,
    local: &str,
    remote: &str,
    target: &Target,
) -> Result<Connected, ConnectError> {
    let mut stream = XmlStream::new(open_transport(ctx, remote, target).await?, ctx.limits());
    loop {
        let (id, features) = open(&mut stream, local, remote).await?;
        let tls = stream.get_ref().is_tls();
        if !tls && features.get_child("starttls", ns::TLS).is_some() {
            stream = starttls(ctx, stream, remote).await?;
            continue;
        }
        if !tls && ctx.policy() != S2sPolicy::PlaintextForTests {
            return Err(Refused(format!("{remote} does not offer TLS")));
        }
        let dialback = features.get_child("dialback", NS_FEATURE).is_some();
        // XEP-0288 §2: ask for a bidirectional stream before authenticating; there is no
        // answer, the peer simply may use the stream once it is authenticated.
        let bidi = ctx.config.bidi && features.get_child("bidi", NS_BIDI_FEATURE).is_some();
        if bidi {
            stream.queue(&Element::builder("bidi", NS_BIDI).build());
            tracing::debug!(%local, %remote, "asking for a bidirectional stream");
        }
        let cert = if tls {
            ctx.verifier
                .verify(&stream.get_ref().peer_certificates(), remote)
                .map_err(|e| e.to_string())
        } else {
            Err("no TLS".to_owned())
        };
        if let (Err(why), S2sPolicy::Verify) = (&cert, ctx.policy()) {
            return Err(Refused(format!("certificate of {remote}: {why}")));
        }
        if cert.is_ok() && offers_external(&features) {
            // XEP-0178 §3: the authorization identity is our domain.
            let authzid = base64::engine::general_purpose::STANDARD.encode(local);
            let auth = Element::builder("auth", ns::SASL)
                .with_attr("mechanism", "EXTERNAL")
                .append(authzid.as_str())
                .build();
            stream
                .send(&auth)
                .await
                .map_err(|e| NotFound(e.to_string()))?;
            let answer = next_element(&mut stream).await?;
            if answer.is("success", ns::SASL) {
                let (stream_id, _) = open(&mut stream, local, remote).await?;
                tracing::info!(%local, %remote, bidi, "outbound s2s stream authenticated by certificate");
                return Ok(Connected {
                    stream,
                    stream_id,
                    dialback,
                    bidi,
                });
            }
            if ctx.policy() == S2sPolicy::Verify {
                return Err(Refused(format!("{remote} refused SASL EXTERNAL")));
            }
            tracing::info!(%local, %remote, "SASL EXTERNAL refused; trying dialback");
        }
        if ctx.policy() == S2sPolicy::Verify {
            return Err(Refused(format!("{remote} does not offer SASL EXTERNAL")));
        }
        if !dialback {
            return Err(Refused(format!("{remote} offers no usable authentication")));
        }
        let key = dialback::key(&ctx.secret, remote, local, &id);
        stream.queue_raw(&dialback::to_wire(&dialback::result(
            local,
            remote,
            Some(&key),
            None,
        )));
        stream.flush().await.map_err(|e| NotFound(e.to_string()))?;
        loop {
            let el = next_element(&mut stream).await?;
            if el.is("result", NS_DB) {
                return match el.attribute("type") {
                    Some("valid") => {
                        tracing::info!(%local, %remote, bidi, "outbound s2s stream authenticated by dialback");
                        Ok(Connected {
                            stream,
                            stream_id: id,
                            dialback,
                            bidi,
                        })
                    }
                    other => Err(Refused(format!(
                        "{remote} answered dialback with {}",
                        other.unwrap_or("no type")
                    ))),
                };
            }
        }
    }
}

/// Dialback, receiving side (XEP-0220 §2.3): asks the authoritative server of `originating`
/// whether `key` is the one it made for the stream `id` it opened to us (`receiving`).
pub(crate) async fn verify_key(
    ctx: &Ctx,
    receiving: &str,
    originating: &str,
    id: &str,
    key: &str,
) -> Result<bool, ConnectError> {
    let targets = ctx
        .resolver
        .resolve(originating)
        .await
        .map_err(|e| NotFound(e.to_string()))?;
    let mut last = NotFound(format!("no address for {originating}"));
    for target in targets {
        let r = async {
            let mut stream = XmlStream::new(
                open_transport(ctx, originating, &target).await?,
                ctx.limits(),
            );
            loop {
                let (_, features) = open(&mut stream, receiving, originating).await?;
                if !stream.get_ref().is_tls() && features.get_child("starttls", ns::TLS).is_some() {
                    stream = starttls(ctx, stream, originating).await?;
                    continue;
                }
                break;
            }
            stream.queue_raw(&dialback::to_wire(&dialback::verify(
                receiving,
                originating,
                id,
                Some(key),
                None,
            )));
            stream.flush().await.map_err(|e| NotFound(e.to_string()))?;
            let valid = loop {
                let el = next_element(&mut stream).await?;
                if el.is("verify", NS_DB) && el.attribute("id") == Some(id) {
                    break el.attribute("type") == Some("valid");
                }
            };
            stream.queue_raw(writer::STREAM_CLOSE);
            stream.shutdown().await;
            Ok::<bool, ConnectError>(valid)
        }
        .await;
        match r {
            Ok(v) => return Ok(v),
            Err(e) => last = e,
        }
    }
    Err(last)
}
