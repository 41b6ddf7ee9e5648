//! Instant messages: XMPP `<message/>` <-> Message/CPIM (RFC 3922 §4, over RFC 3862).
//!
//! XMPP -> CPIM ([`xmpp_message_to_cpim`], RFC 3922 §4.1):
//! | XMPP | CPIM |
//! |---|---|
//! | `from` (full JID) | `From: <im:bare>` (resource dropped) |
//! | `to` | `To: <im:bare>` (resource dropped) |
//! | XEP-0203 `<delay stamp>`, else the caller's "now" | `DateTime:` |
//! | `<subject xml:lang='x'>` (each) | `Subject:;lang=x text` (each) |
//! | the `<body/>` (see below) | entity `Content-type: text/plain; charset=utf-8`, LF -> CRLF |
//! | the body's own `xml:lang` | entity `Content-Language` |
//!
//! Deliberately **not mapped** (RFC 3922 §4.1 says they have no CPIM equivalent and SHOULD be
//! ignored): the stanza `id` (not globally unique, so not a Content-ID), `type`, `<thread/>`,
//! every other extension, and every `<body/>` but one: the first body without `xml:lang`, or
//! else the first body. `type='error'` and `type='groupchat'` stanzas are refused. A stanza
//! holding an RFC 3923 `<e2e/>` is refused with [`MessageMappingError::EndToEnd`]: the gateway
//! forwards that S/MIME object unchanged instead (RFC 3923 §8).
//!
//! CPIM -> XMPP ([`cpim_to_xmpp_message`], RFC 3922 §4.2):
//! | CPIM | XMPP |
//! |---|---|
//! | From / first To | `from` / `to` (bare; [`InboundMessageOptions::to_resource`] may add one) |
//! | Subject (;lang) | `<subject xml:lang>` |
//! | `text/plain` entity, charset absent, US-ASCII or UTF-8 | `<body/>` (CRLF -> LF); `Content-Language` -> `xml:lang` |
//! | DateTime | nothing, or XEP-0203 `<delay/>` if [`InboundMessageOptions::include_delay`] |
//! | Content-ID | nothing, or the stanza `id` if [`InboundMessageOptions::id_from_content_id`] |
//! | cc, other To headers, NS, extension headers | nothing (RFC 3922: SHOULD NOT / MUST NOT be passed on) |
//! | Require naming a header we do not implement | [`MessageMappingError::UnsupportedRequire`]; the gateway answers the sender (SIP 420) |
//! | any other content type or charset | [`MessageMappingError::UnsupportedContent`] (RFC 3922: MUST NOT go in `<body/>`); SIP 415 |
//!
//! The stanza `type` is chosen by the gateway (RFC 3922 leaves it open): `chat` by default.
//! An empty body maps to no `<body/>`.
//!
//! XMPP -> CPIM -> XMPP is the identity on: from/to (bare), subjects with their languages, the
//! chosen body and its `xml:lang`. Line ends: every LF becomes CRLF on the way out (MIME
//! canonical text, RFC 2046 §4.1.1) and every CRLF becomes LF on the way in, so even a body that
//! held a CR keeps it.

use minidom::Element;

use crate::address::{cpim_uri_to_jid, jid_to_im_uri, AddressError};
use crate::cpim::{Address, CpimError, CpimMessage, Header, MimeEntity, Subject};
use crate::datetime::DateTime;
use crate::xml::{
    is_stanza_ns, is_xml_char, ncname, set_xml_lang, stanza_children, xml_lang, NS_CLIENT,
    NS_DELAY, NS_E2E, NS_E2E_ALT,
};

/// Why a message could not be mapped.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MessageMappingError {
    #[error("not a <message/> stanza in jabber:client or jabber:server")]
    NotAMessage,
    #[error("message type {0:?} is not mapped to CPIM")]
    UnsupportedType(String),
    #[error("the stanza has no '{0}' attribute")]
    MissingAddress(&'static str),
    #[error("address: {0}")]
    Address(#[from] AddressError),
    #[error("Message/CPIM: {0}")]
    Cpim(#[from] CpimError),
    #[error("invalid XEP-0203 delay stamp {0:?}")]
    BadDelay(String),
    #[error("invalid xml:lang {0:?}")]
    BadLanguage(String),
    #[error("the stanza carries an RFC 3923 <e2e/> payload: forward the S/MIME object unchanged instead")]
    EndToEnd,
    #[error("the message has neither a body nor a subject")]
    NothingToMap,
    #[error("the CPIM message has no From header")]
    MissingFrom,
    #[error("the CPIM message has no To header")]
    MissingTo,
    #[error("the CPIM message requires headers this gateway does not implement: {0:?}")]
    UnsupportedRequire(Vec<String>),
    #[error("content {0:?} cannot be carried in <body/>")]
    UnsupportedContent(String),
    #[error("the text contains a character XML cannot carry")]
    NotXmlText,
}

/// Choices the gateway makes when building a stanza from CPIM (RFC 3922 §4.2's MAYs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InboundMessageOptions {
    /// The stanza `type`; RFC 3922 leaves it to the gateway. Default `chat`.
    pub message_type: String,
    /// A resource to append to the `to` JID, when the gateway knows one.
    pub to_resource: Option<String>,
    /// Put the CPIM DateTime into a XEP-0203 `<delay/>`. Default off (RFC 3922: SHOULD NOT pass
    /// DateTime on).
    pub include_delay: bool,
    /// Use the entity's Content-ID as the stanza `id`. Default off.
    pub id_from_content_id: bool,
}

impl Default for InboundMessageOptions {
    fn default() -> Self {
        InboundMessageOptions {
            message_type: "chat".to_owned(),
            to_resource: None,
            include_delay: false,
            id_from_content_id: false,
        }
    }
}

/// Maps an XMPP `<message/>` to Message/CPIM. `now` becomes the DateTime unless the stanza has
/// a XEP-0203 `<delay/>`.
pub fn xmpp_message_to_cpim(
    stanza: &Element,
    now: &DateTime,
) -> Result<CpimMessage, MessageMappingError> {
    if stanza.name() != "message" || !is_stanza_ns(stanza) {
        return Err(MessageMappingError::NotAMessage);
    }
    if let Some(t @ ("error" | "groupchat")) = stanza.attr("type") {
        return Err(MessageMappingError::UnsupportedType(t.to_owned()));
    }
    if stanza
        .children()
        .any(|c| c.name() == "e2e" && (c.has_ns(NS_E2E) || c.has_ns(NS_E2E_ALT)))
    {
        return Err(MessageMappingError::EndToEnd);
    }
    let from = stanza
        .attr("from")
        .ok_or(MessageMappingError::MissingAddress("from"))?;
    let to = stanza
        .attr("to")
        .ok_or(MessageMappingError::MissingAddress("to"))?;
    let date_time = match stanza.children().find(|c| c.is("delay", NS_DELAY)) {
        Some(delay) => {
            let stamp = delay.attr("stamp").unwrap_or("");
            DateTime::parse(stamp).map_err(|_| MessageMappingError::BadDelay(stamp.to_owned()))?
        }
        None => *now,
    };
    let bodies: Vec<&Element> = stanza_children(stanza, "body").collect();
    let body = bodies
        .iter()
        .find(|b| xml_lang(b).is_none())
        .or(bodies.first())
        .copied();
    let subjects: Vec<&Element> = stanza_children(stanza, "subject").collect();
    if body.is_none() && subjects.is_empty() {
        return Err(MessageMappingError::NothingToMap);
    }

    let text = body
        .map(|b| b.text())
        .unwrap_or_default()
        .replace('\n', "\r\n");
    let mut entity_headers = vec![("Content-type", "text/plain; charset=utf-8")];
    let body_lang = body.and_then(xml_lang);
    if let Some(lang) = body_lang {
        if !crate::cpim::is_language_tag(lang) {
            return Err(MessageMappingError::BadLanguage(lang.to_owned()));
        }
        entity_headers.push(("Content-Language", lang));
    }
    let mut msg = CpimMessage::new(MimeEntity::new(&entity_headers, text.as_bytes())?);
    msg.push(Header::From(Address::new(None, &jid_to_im_uri(from)?)?))?;
    msg.push(Header::To(Address::new(None, &jid_to_im_uri(to)?)?))?;
    msg.push(Header::DateTime(date_time))?;
    for s in subjects {
        let lang = xml_lang(s);
        let subject = Subject::new(lang, &s.text())
            .map_err(|_| MessageMappingError::BadLanguage(lang.unwrap_or_default().to_owned()))?;
        msg.push(Header::Subject(subject))?;
    }
    Ok(msg)
}

/// Maps Message/CPIM to an XMPP `<message/>` in `jabber:client`, resolving `im:`/`pres:`
/// addresses per RFC 3922 §3.2.
pub fn cpim_to_xmpp_message(
    msg: &CpimMessage,
    opts: &InboundMessageOptions,
) -> Result<Element, MessageMappingError> {
    cpim_to_xmpp_message_with(msg, opts, |uri| cpim_uri_to_jid(uri).map(|(_, jid)| jid))
}

/// [`cpim_to_xmpp_message`] with the caller's address mapping (e.g. the gateway turning
/// `sip:bob@sip.example` into `bob%sip.example@sip.xmpp.example`).
pub fn cpim_to_xmpp_message_with(
    msg: &CpimMessage,
    opts: &InboundMessageOptions,
    map_address: impl Fn(&str) -> Result<String, AddressError>,
) -> Result<Element, MessageMappingError> {
    let unsupported: Vec<String> = msg
        .required()
        .filter(|n| !n.is_standard())
        .map(ToString::to_string)
        .collect();
    if !unsupported.is_empty() {
        return Err(MessageMappingError::UnsupportedRequire(unsupported));
    }
    let from = map_address(msg.from().ok_or(MessageMappingError::MissingFrom)?.uri())?;
    let mut to = map_address(msg.to().next().ok_or(MessageMappingError::MissingTo)?.uri())?;
    if let Some(resource) = &opts.to_resource {
        to.push('/');
        to.push_str(resource);
    }

    let entity = msg.entity();
    let ct = entity.content_type()?;
    let charset_ok = match ct.charset() {
        None => true,
        Some(c) => c.eq_ignore_ascii_case("utf-8") || c.eq_ignore_ascii_case("us-ascii"),
    };
    let encoding_ok = entity.header("Content-Transfer-Encoding").is_none_or(|e| {
        ["7bit", "8bit", "binary"]
            .iter()
            .any(|ok| e.eq_ignore_ascii_case(ok))
    });
    if ct.mime_type() != "text/plain" || !charset_ok || !encoding_ok {
        return Err(MessageMappingError::UnsupportedContent(
            entity.header("Content-Type").unwrap_or("").to_owned(),
        ));
    }
    let ascii_only = ct
        .charset()
        .is_none_or(|c| c.eq_ignore_ascii_case("us-ascii"));
    let text = std::str::from_utf8(entity.body())
        .ok()
        .filter(|t| !ascii_only || t.is_ascii())
        .ok_or_else(|| {
            MessageMappingError::UnsupportedContent("content is not in its declared charset".into())
        })?
        .replace("\r\n", "\n");

    let mut builder = Element::builder("message", NS_CLIENT)
        .attr(ncname("from"), from)
        .attr(ncname("to"), to)
        .attr(ncname("type"), opts.message_type.as_str());
    if opts.id_from_content_id {
        if let Some(cid) = entity.header("Content-ID") {
            let cid = cid.trim().trim_start_matches('<').trim_end_matches('>');
            builder = builder.attr(ncname("id"), cid);
        }
    }
    let mut stanza = builder.build();
    for s in msg.subjects() {
        let mut el = Element::builder("subject", NS_CLIENT)
            .append(checked_text(s.text())?)
            .build();
        if let Some(lang) = s.lang() {
            set_xml_lang(&mut el, lang);
        }
        stanza.append_child(el);
    }
    if !text.is_empty() {
        let mut el = Element::builder("body", NS_CLIENT)
            .append(checked_text(&text)?)
            .build();
        if let Some(lang) = entity.header("Content-Language") {
            if crate::cpim::is_language_tag(lang) {
                set_xml_lang(&mut el, lang);
            }
        }
        stanza.append_child(el);
    }
    if opts.include_delay {
        if let Some(t) = msg.date_time() {
            stanza.append_child(
                Element::builder("delay", NS_DELAY)
                    .attr(ncname("stamp"), t.to_utc().to_string())
                    .build(),
            );
        }
    }
    if stanza.children().next().is_none() {
        return Err(MessageMappingError::NothingToMap);
    }
    Ok(stanza)
}

fn checked_text(s: &str) -> Result<String, MessageMappingError> {
    if s.chars().all(is_xml_char) {
        Ok(s.to_owned())
    } else {
        Err(MessageMappingError::NotXmlText)
    }
}
