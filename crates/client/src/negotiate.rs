//! The initiating side of stream negotiation (RFC 6120 §4–§7): stream headers, STARTTLS (§5),
//! SASL (§6) with SCRAM (RFC 5802/7677, channel binding `tls-exporter` of RFC 9266 and the
//! XEP-0440 list of supported types) or PLAIN (RFC 4616), the restarts, and resource binding
//! (§7). We never authenticate without TLS: a server that offers no STARTTLS is refused.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use minidom::Element;
use starling_proto::error::{StanzaError, StanzaErrorCondition, StreamError};
use starling_proto::framer::{Limits, StreamEvent};
use starling_proto::jid::Jid;
use starling_proto::ns;
use starling_proto::Attr;
use starling_sasl::{ChannelBinding, ChannelBindingType, Mechanism, ScramClient};
use starling_stream::XmlStream;
use tokio::net::TcpStream;

use crate::config::{ClientConfig, TlsMode};
use crate::error::ClientError;
use crate::tls::{self, Transport};
use crate::{attr, Client};

pub(crate) type Stream = XmlStream<Transport>;

/// Connects, negotiates and binds (without the overall timeout, which the caller applies).
pub(crate) async fn connect(cfg: &ClientConfig) -> Result<Client, ClientError> {
    let Some(node) = cfg.jid.node() else {
        return Err(ClientError::Config(format!(
            "{} has no localpart: which account?",
            cfg.jid
        )));
    };
    let domain = cfg.jid.domain();
    let tls_config = tls::client_config(&cfg.trust, cfg.tls == TlsMode::Direct)?;
    let name = tls::server_name(domain)?;
    let tcp = TcpStream::connect(cfg.server).await?;
    tcp.set_nodelay(true)?;
    let transport = match cfg.tls {
        TlsMode::StartTls => Transport::Plain(tcp),
        TlsMode::Direct => tls::handshake(tls_config.clone(), name.clone(), tcp).await?,
    };
    let limits = Limits::default();
    let mut stream = XmlStream::new(transport, limits);
    let mut mechanism = None;
    loop {
        let features = open_stream(&mut stream, &cfg.jid).await?;
        if !stream.get_ref().is_tls() {
            if features.get_child("starttls", ns::TLS).is_none() {
                return Err(ClientError::Tls(
                    "the server does not offer STARTTLS; refusing to authenticate in the clear"
                        .into(),
                ));
            }
            stream.queue_raw("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
            stream.flush().await?;
            let answer = next_element(&mut stream).await?;
            if !answer.is("proceed", ns::TLS) {
                return Err(ClientError::Tls(format!(
                    "the server answered <{}/> to <starttls/>",
                    answer.name()
                )));
            }
            let Transport::Plain(tcp) = stream.into_inner() else {
                unreachable!("checked: not TLS yet")
            };
            let transport = tls::handshake(tls_config.clone(), name.clone(), tcp).await?;
            stream = XmlStream::new(transport, limits);
            continue;
        }
        let Some(used) = mechanism else {
            mechanism = Some(authenticate(&mut stream, &features, cfg, node).await?);
            // RFC 6120 §6.4.6: both sides restart the stream after <success/>.
            stream.restart();
            continue;
        };
        let jid = bind(&mut stream, &features, cfg).await?;
        return Ok(Client::new(stream, jid, used, features));
    }
}

/// Sends our stream header and reads the server's header and features.
async fn open_stream(stream: &mut Stream, jid: &Jid) -> Result<Element, ClientError> {
    let mut header = String::with_capacity(192);
    header.push_str("<?xml version='1.0'?><stream:stream xmlns='jabber:client' ");
    header.push_str("xmlns:stream='http://etherx.jabber.org/streams' to='");
    escape_into(jid.domain(), &mut header);
    header.push('\'');
    if stream.get_ref().is_tls() {
        // RFC 6120 §4.7.1: include 'from' once the stream is encrypted.
        header.push_str(" from='");
        escape_into(jid.bare().as_str(), &mut header);
        header.push('\'');
    }
    header.push_str(" version='1.0' xml:lang='en'>");
    stream.queue_raw(&header);
    stream.flush().await?;
    match stream.next_event().await? {
        StreamEvent::Open(h) => {
            if h.default_ns.as_deref() != Some(ns::CLIENT) {
                return Err(ClientError::Protocol(
                    "the server's stream is not jabber:client".into(),
                ));
            }
        }
        StreamEvent::Close => return Err(ClientError::Closed),
        StreamEvent::Stanza(el) => {
            return Err(unexpected(&el, "a stream header"));
        }
    }
    let features = next_element(stream).await?;
    if !features.is("features", ns::STREAM) {
        return Err(unexpected(&features, "<stream:features/>"));
    }
    Ok(features)
}

/// The next first-level element; a `<stream:error/>` becomes [`ClientError::Stream`].
pub(crate) async fn next_element(stream: &mut Stream) -> Result<Element, ClientError> {
    match stream.next_event().await? {
        StreamEvent::Stanza(el) => {
            if el.is("error", ns::STREAM) {
                let err = StreamError::parse(&el).unwrap_or_else(|| {
                    StreamError::new(
                        starling_proto::error::StreamErrorCondition::UndefinedCondition,
                    )
                });
                return Err(ClientError::Stream(err));
            }
            Ok(el)
        }
        StreamEvent::Close => Err(ClientError::Closed),
        StreamEvent::Open(_) => Err(ClientError::Protocol(
            "a second stream header without a restart".into(),
        )),
    }
}

fn unexpected(el: &Element, wanted: &str) -> ClientError {
    ClientError::Protocol(format!(
        "expected {wanted}, got {{{}}}{}",
        el.ns(),
        el.name()
    ))
}

/// Runs SASL with the first mechanism of our preference that the server offers.
async fn authenticate(
    stream: &mut Stream,
    features: &Element,
    cfg: &ClientConfig,
    username: &str,
) -> Result<Mechanism, ClientError> {
    let offered: Vec<Mechanism> = features
        .get_child("mechanisms", ns::SASL)
        .map(|m| {
            m.children()
                .filter(|c| c.is("mechanism", ns::SASL))
                .filter_map(|c| Mechanism::from_name(c.text().trim()))
                .collect()
        })
        .unwrap_or_default();
    // XEP-0440: a server that lists its channel-binding types must list tls-exporter for us
    // to use it; one that lists none is assumed to support it (RFC 9266 is the TLS 1.3 type).
    let exporter_listed = features
        .get_child("sasl-channel-binding", ns::SASL_CB)
        .is_none_or(|list| {
            list.children()
                .any(|c| c.attribute("type") == Some(ChannelBindingType::TlsExporter.name()))
        });
    let exporter = stream
        .get_ref()
        .tls_exporter()
        .filter(|_| exporter_listed)
        .map(|data| ChannelBinding {
            kind: ChannelBindingType::TlsExporter,
            data,
        });
    let Some(&chosen) = cfg.mechanisms.iter().find(|m| {
        offered.contains(m) && (!m.is_plus() || exporter.is_some()) && **m != Mechanism::External
    }) else {
        let names: Vec<&str> = offered.iter().map(|m| m.name()).collect();
        return Err(ClientError::Config(format!(
            "no usable SASL mechanism in common; the server offers {names:?}"
        )));
    };
    match chosen.scram_hash() {
        Some(hash) => {
            let server_offers_plus = offered.iter().any(|m| m.is_plus());
            // RFC 5802 §6: "p=" when using -PLUS; "y" when we could bind but the server
            // offered no -PLUS (lets a server that did offer it detect the downgrade); "n"
            // when we chose not to bind although the server offers -PLUS (our preference).
            let (binding, plus) = if chosen.is_plus() {
                (exporter, true)
            } else if server_offers_plus {
                (None, false)
            } else {
                (exporter, false)
            };
            let mut scram = ScramClient::new(hash, username, &cfg.password, binding, plus);
            let cache = cfg.scram_cache.as_ref();
            if let Some((salt, iterations, salted)) =
                cache.and_then(|c| c.get(username, hash, &cfg.password))
            {
                scram = scram.with_salted_password(salt, iterations, salted);
            }
            debug_assert_eq!(scram.mechanism(), chosen);
            send_auth(stream, chosen, &scram.client_first()).await?;
            let server_first = match sasl_answer(stream).await? {
                SaslAnswer::Challenge(data) => data,
                SaslAnswer::Success(_) => {
                    return Err(ClientError::Protocol(
                        "SCRAM <success/> before the exchange completed".into(),
                    ))
                }
            };
            let client_final = scram.handle_server_first(&server_first).map_err(|f| {
                ClientError::Protocol(format!("unacceptable SCRAM server-first message ({f})"))
            })?;
            send_sasl(stream, "response", &client_final).await?;
            let server_final = match sasl_answer(stream).await? {
                SaslAnswer::Success(Some(data)) => data,
                // Some servers send server-final as a challenge and <success/> empty after.
                SaslAnswer::Challenge(data) => {
                    send_sasl(stream, "response", b"").await?;
                    match sasl_answer(stream).await? {
                        SaslAnswer::Success(_) => data,
                        SaslAnswer::Challenge(_) => {
                            return Err(ClientError::Protocol("too many SCRAM challenges".into()))
                        }
                    }
                }
                SaslAnswer::Success(None) => {
                    return Err(ClientError::Protocol(
                        "SCRAM <success/> without the server's signature".into(),
                    ))
                }
            };
            scram.verify_server_final(&server_final).map_err(|_| {
                ClientError::Protocol(
                    "the server's SCRAM signature is wrong: it does not know our credentials, \
                     or someone is in the middle"
                        .into(),
                )
            })?;
            if let (Some(cache), Some(salted)) = (cache, scram.salted_credentials()) {
                cache.insert(username, hash, &cfg.password, salted);
            }
        }
        None => {
            // PLAIN (only reached inside TLS: we refuse to continue without it).
            let message = starling_sasl::plain_message(None, username, &cfg.password);
            send_auth(stream, chosen, &message).await?;
            if let SaslAnswer::Challenge(_) = sasl_answer(stream).await? {
                return Err(ClientError::Protocol(
                    "PLAIN does not take challenges".into(),
                ));
            }
        }
    }
    Ok(chosen)
}

async fn send_auth(stream: &mut Stream, m: Mechanism, initial: &[u8]) -> Result<(), ClientError> {
    let text = if initial.is_empty() {
        "=".to_owned()
    } else {
        B64.encode(initial)
    };
    stream.queue_raw(&format!(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='{}'>{text}</auth>",
        m.name()
    ));
    Ok(stream.flush().await?)
}

async fn send_sasl(stream: &mut Stream, name: &str, data: &[u8]) -> Result<(), ClientError> {
    if data.is_empty() {
        stream.queue_raw(&format!(
            "<{name} xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>"
        ));
    } else {
        stream.queue_raw(&format!(
            "<{name} xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{}</{name}>",
            B64.encode(data)
        ));
    }
    Ok(stream.flush().await?)
}

enum SaslAnswer {
    Challenge(Vec<u8>),
    Success(Option<Vec<u8>>),
}

/// Reads `<challenge/>`, `<success/>` or `<failure/>` (which becomes [`ClientError::Sasl`]).
async fn sasl_answer(stream: &mut Stream) -> Result<SaslAnswer, ClientError> {
    let el = next_element(stream).await?;
    if el.ns() != ns::SASL {
        return Err(unexpected(&el, "a SASL element"));
    }
    let decode = |el: &Element| -> Result<Option<Vec<u8>>, ClientError> {
        let text: String = el.text().split_ascii_whitespace().collect();
        match text.as_str() {
            "" => Ok(None),
            "=" => Ok(Some(Vec::new())),
            t => B64
                .decode(t)
                .map(Some)
                .map_err(|_| ClientError::Protocol("SASL data is not base64".into())),
        }
    };
    match el.name() {
        "challenge" => Ok(SaslAnswer::Challenge(decode(&el)?.unwrap_or_default())),
        "success" => Ok(SaslAnswer::Success(decode(&el)?)),
        "failure" => {
            let condition = el
                .children()
                .find(|c| c.name() != "text")
                .map(|c| c.name().to_owned())
                .unwrap_or_else(|| "not-authorized".to_owned());
            Err(ClientError::Sasl(condition))
        }
        _ => Err(unexpected(&el, "<challenge/>, <success/> or <failure/>")),
    }
}

/// Binds a resource (RFC 6120 §7) and, if the server still requires it, establishes the
/// RFC 3921 session.
async fn bind(
    stream: &mut Stream,
    features: &Element,
    cfg: &ClientConfig,
) -> Result<Jid, ClientError> {
    if features.get_child("bind", ns::BIND).is_none() {
        return Err(ClientError::Protocol(
            "the server offers no resource binding".into(),
        ));
    }
    let mut bind = Element::builder("bind", ns::BIND);
    if let Some(resource) = cfg.wanted_resource() {
        bind = bind.append(Element::builder("resource", ns::BIND).append(resource));
    }
    let iq = Element::builder("iq", ns::CLIENT)
        .attr(attr("type"), "set")
        .attr(attr("id"), "bind-1")
        .append(bind)
        .build();
    stream.send(&iq).await?;
    let reply = iq_reply(stream, "bind-1").await?;
    if reply.attribute("type") == Some("error") {
        let err = StanzaError::parse(&reply)
            .unwrap_or_else(|| StanzaError::new(StanzaErrorCondition::UndefinedCondition));
        return Err(ClientError::Bind(err));
    }
    let text = reply
        .get_child("bind", ns::BIND)
        .and_then(|b| b.get_child("jid", ns::BIND))
        .map(|j| j.text())
        .ok_or_else(|| ClientError::Protocol("bind result without a JID".into()))?;
    let jid = Jid::parse(text.trim())
        .map_err(|e| ClientError::Protocol(format!("bound JID '{text}' is invalid: {e}")))?;
    if jid.bare() != cfg.jid.bare() || jid.resource().is_none() {
        return Err(ClientError::Protocol(format!(
            "the server bound {jid}, not a resource of {}",
            cfg.jid.bare()
        )));
    }
    let session_required = features
        .get_child("session", ns::SESSION)
        .is_some_and(|s| !s.children().any(|c| c.name() == "optional"));
    if session_required {
        let iq = Element::builder("iq", ns::CLIENT)
            .attr(attr("type"), "set")
            .attr(attr("id"), "session-1")
            .append(Element::builder("session", ns::SESSION))
            .build();
        stream.send(&iq).await?;
        let reply = iq_reply(stream, "session-1").await?;
        if reply.attribute("type") == Some("error") {
            return Err(ClientError::Protocol(
                "the server refused session establishment".into(),
            ));
        }
    }
    Ok(jid)
}

/// Reads the result or error of the IQ `id`; nothing else may arrive before binding.
async fn iq_reply(stream: &mut Stream, id: &str) -> Result<Element, ClientError> {
    let el = next_element(stream).await?;
    if el.is("iq", ns::CLIENT)
        && el.attribute("id") == Some(id)
        && matches!(el.attribute("type"), Some("result" | "error"))
    {
        Ok(el)
    } else {
        Err(unexpected(&el, "the reply to our IQ"))
    }
}

/// XML attribute escaping for the stream header (JIDs rarely need it; be safe anyway).
fn escape_into(value: &str, out: &mut String) {
    for c in value.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\'' => out.push_str("&apos;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_attributes_are_escaped() {
        let mut out = String::new();
        escape_into("a'b&c<d", &mut out);
        assert_eq!(out, "a&apos;b&amp;c&lt;d");
    }
}
