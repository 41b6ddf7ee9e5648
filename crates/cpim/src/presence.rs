//! Presence: XMPP `<presence/>` <-> PIDF (RFC 3922 §5, over RFC 3863), and the Message/CPIM
//! wrapper RFC 3922 §5 puts around a PIDF document.
//!
//! XMPP -> PIDF ([`xmpp_presence_to_tuple`], [`xmpp_presences_to_pidf`]):
//! | XMPP | PIDF |
//! |---|---|
//! | `from` bare JID | `<presence entity='pres:bare'>` |
//! | `from` resource | `<tuple id>` via [`tuple_id_for_resource`] (deterministic, reversible) |
//! | no `type` / `type='unavailable'` | `<basic>open</basic>` / `<basic>closed</basic>` |
//! | `<show>away</show>` / `<show>dnd</show>` | `<im:im>away</im:im>` / `<im:im>busy</im:im>` (RFC 3922 §5 examples) |
//! | `<show>xa</show>` / `<show>chat</show>` | `<im:im>away</im:im>` / nothing: lossy, RFC 3922 gives no value |
//! | `<status xml:lang>` (each) | tuple `<note xml:lang>` (each) |
//! | `<priority>` 0..=127 | `<contact priority>` = floor(1000p/127)/1000 ([`priority_to_pidf`]); negative: no attribute (MUST NOT map) |
//! | (always) | `<contact>im:bare</contact>` (RFC 3922 §5: MAY) |
//! | XEP-0203 `<delay stamp>`, else the caller's timestamp | tuple `<timestamp>` |
//!
//! Other presence types (`subscribe` & co.) are subscription operations: see
//! [`crate::subscription`]. `probe` and `error` are not mapped. Extensions are dropped.
//!
//! PIDF -> XMPP ([`pidf_to_xmpp_presences`]): one stanza per tuple, `from` = the entity's JID
//! plus the resource decoded from the tuple id; open -> available, closed -> `unavailable`; a
//! tuple without `<basic>` is skipped; `away` -> `<show>away</show>`, `busy` -> `<show>dnd</show>`,
//! other `<im:im>` values -> no show; notes -> `<status xml:lang>` (document-level notes stand in
//! for a tuple that has none); contact priority -> `<priority>` ([`priority_from_pidf`]).
//! The timestamp becomes a XEP-0203 `<delay/>` only if asked ([`InboundPresenceOptions`]).
//! A document with no tuples and no notes maps to one `unavailable` presence from the bare JID
//! (RFC 3922 §6 SHOULD; we read "no tuples" as "nothing reachable"); with notes only, to
//! nothing (RFC 3922 §5 MUST NOT). Deciding whether a tuple *changed* since the last document
//! (RFC 3922 §6: notify only on change) needs state; [`TupleChangeFilter`] does it.
//!
//! XMPP -> PIDF -> XMPP is the identity on: from, type (available/unavailable), show in
//! {none, away, dnd}, statuses with their languages, priority in 0..=127.

use std::collections::HashMap;

use minidom::Element;

use crate::address::{cpim_uri_to_jid, jid_to_im_uri, jid_to_pres_uri, split_jid, AddressError};
use crate::cpim::{Address, CpimError, CpimMessage, Header, MimeEntity};
use crate::datetime::DateTime;
use crate::pidf::{
    Basic, Contact, Note, PidfDocument, PidfError, Priority, Tuple, PIDF_CONTENT_TYPE,
};
use crate::xml::{
    is_stanza_ns, is_xml_char, ncname, set_xml_lang, stanza_children, xml_lang, NS_CLIENT, NS_DELAY,
};

/// Why presence could not be mapped.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PresenceMappingError {
    #[error("not a <presence/> stanza in jabber:client or jabber:server")]
    NotAPresence,
    #[error("presence type {0:?} is not a notification (see the subscription module)")]
    NotANotification(String),
    #[error("the stanza has no 'from' attribute")]
    MissingFrom,
    #[error("presences from different users cannot share one PIDF document ({0} vs {1})")]
    MixedEntities(String, String),
    #[error("no presence to map")]
    Empty,
    #[error("invalid <priority/> {0:?}")]
    BadPriority(String),
    #[error("invalid XEP-0203 delay stamp {0:?}")]
    BadDelay(String),
    #[error("address: {0}")]
    Address(#[from] AddressError),
    #[error("PIDF: {0}")]
    Pidf(#[from] PidfError),
    #[error("Message/CPIM: {0}")]
    Cpim(#[from] CpimError),
    #[error("the CPIM entity is {0:?}, not application/pidf+xml")]
    NotPidfContent(String),
    #[error("the text contains a character XML cannot carry")]
    NotXmlText,
}

/// RFC 3922 §5's priority scaling: `floor(1000p/127)/1000` for 0..=127 (1 -> 0.007,
/// 13 -> 0.102, 127 -> 1); `None` for negative priorities, which MUST NOT be mapped.
pub fn priority_to_pidf(priority: i8) -> Option<Priority> {
    let p = u32::try_from(priority).ok()?;
    Priority::from_thousandths((p * 1000 / 127) as u16)
}

/// The inverse of [`priority_to_pidf`]: the smallest XMPP priority whose image is at least
/// `priority` (so every value in 0..=127 round-trips), capped at 126 below 1.0.
pub fn priority_from_pidf(priority: Priority) -> i8 {
    let want = u32::from(priority.thousandths());
    if want >= 1000 {
        return 127;
    }
    (0..=126u32).find(|p| p * 1000 / 127 >= want).unwrap_or(126) as i8
}

/// A tuple id for an XMPP resource (RFC 3922 §5: the resource SHOULD become the tuple id).
/// A resource that is already an XML NCName not starting with `_` is used as is (`laptop`);
/// any other resource becomes `_` + the lower-case hex of its UTF-8 bytes (`My Phone` ->
/// `_4d792050686f6e65`); no resource (a bare-JID presence) becomes `_`.
pub fn tuple_id_for_resource(resource: Option<&str>) -> String {
    match resource {
        Some(r) if crate::pidf::is_ncname(r) && !r.starts_with('_') => r.to_owned(),
        Some(r) => {
            let mut id = String::from("_");
            for b in r.bytes() {
                id.push_str(&format!("{b:02x}"));
            }
            id
        }
        None => "_".to_owned(),
    }
}

/// The inverse of [`tuple_id_for_resource`]. An id that is not our hex form (any id a foreign
/// service chose) is the resource itself; `_` is the bare JID (`None`).
pub fn resource_for_tuple_id(id: &str) -> Option<String> {
    let Some(hex) = id.strip_prefix('_') else {
        return Some(id.to_owned());
    };
    if hex.is_empty() {
        return None;
    }
    let decoded = (hex.len() % 2 == 0
        && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
    .then(|| {
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap_or(0))
            .collect::<Vec<u8>>()
    })
    .and_then(|bytes| String::from_utf8(bytes).ok())
    .filter(|s| !s.is_empty() && !s.chars().any(char::is_control));
    Some(decoded.unwrap_or_else(|| id.to_owned()))
}

/// Maps one available/unavailable presence to a PIDF tuple. `timestamp` is used when the stanza
/// has no XEP-0203 `<delay/>`; pass `None` to omit `<timestamp>`.
pub fn xmpp_presence_to_tuple(
    stanza: &Element,
    timestamp: Option<&DateTime>,
) -> Result<Tuple, PresenceMappingError> {
    if stanza.name() != "presence" || !is_stanza_ns(stanza) {
        return Err(PresenceMappingError::NotAPresence);
    }
    let basic = match stanza.attr("type") {
        None => Basic::Open,
        Some("unavailable") => Basic::Closed,
        Some(other) => return Err(PresenceMappingError::NotANotification(other.to_owned())),
    };
    let from = stanza
        .attr("from")
        .ok_or(PresenceMappingError::MissingFrom)?;
    let parts = split_jid(from)?;
    let im_status = if basic == Basic::Open {
        stanza_children(stanza, "show")
            .next()
            .and_then(|s| match s.text().trim() {
                "away" | "xa" => Some("away"),
                "dnd" => Some("busy"),
                _ => None,
            })
    } else {
        None
    };
    let priority = match stanza_children(stanza, "priority").next() {
        Some(p) => {
            let text = p.text();
            let value: i8 = text
                .trim()
                .parse()
                .map_err(|_| PresenceMappingError::BadPriority(text.clone()))?;
            Some(value)
        }
        None => None,
    };
    let contact = Contact::new(&jid_to_im_uri(from)?, priority.and_then(priority_to_pidf));
    let stamp = match stanza.children().find(|c| c.is("delay", NS_DELAY)) {
        Some(d) => {
            let s = d.attr("stamp").unwrap_or("");
            Some(DateTime::parse(s).map_err(|_| PresenceMappingError::BadDelay(s.to_owned()))?)
        }
        None => timestamp.copied(),
    };
    let mut tuple = Tuple::new(&tuple_id_for_resource(parts.resource), Some(basic))?
        .with_im_status(im_status)
        .with_contact(Some(contact))
        .with_timestamp(stamp);
    for s in stanza_children(stanza, "status") {
        tuple = tuple.with_note(Note::new(xml_lang(s), &s.text()));
    }
    Ok(tuple)
}

/// Maps one presence to a one-tuple PIDF document.
pub fn xmpp_presence_to_pidf(
    stanza: &Element,
    timestamp: Option<&DateTime>,
) -> Result<PidfDocument, PresenceMappingError> {
    xmpp_presences_to_pidf(std::slice::from_ref(stanza), timestamp)
}

/// Maps the current presence of every connected resource of one user to one PIDF document
/// with a tuple per resource (RFC 3922 §6: send all tuples even when only one changed).
/// Never produces a document with zero tuples: an empty slice is an error.
pub fn xmpp_presences_to_pidf(
    presences: &[Element],
    timestamp: Option<&DateTime>,
) -> Result<PidfDocument, PresenceMappingError> {
    let first = presences.first().ok_or(PresenceMappingError::Empty)?;
    let entity = jid_to_pres_uri(
        first
            .attr("from")
            .ok_or(PresenceMappingError::MissingFrom)?,
    )?;
    let mut doc = PidfDocument::new(&entity);
    for p in presences {
        let this = jid_to_pres_uri(p.attr("from").ok_or(PresenceMappingError::MissingFrom)?)?;
        if this != entity {
            return Err(PresenceMappingError::MixedEntities(entity, this));
        }
        doc.push_tuple(xmpp_presence_to_tuple(p, timestamp)?)?;
    }
    Ok(doc)
}

/// Choices the gateway makes when building presence stanzas from PIDF.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InboundPresenceOptions {
    /// Turn each tuple's `<timestamp>` into a XEP-0203 `<delay/>`. Default off (RFC 3922 §5:
    /// the timestamp is not passed on).
    pub include_delay: bool,
}

/// Splits a PIDF document into one presence stanza per tuple, addressed `to` the XMPP user.
/// The entity must be a `pres:` (or `im:`) URI.
pub fn pidf_to_xmpp_presences(
    doc: &PidfDocument,
    to: &str,
    opts: &InboundPresenceOptions,
) -> Result<Vec<Element>, PresenceMappingError> {
    pidf_to_xmpp_presences_with(doc, to, opts, |uri| {
        cpim_uri_to_jid(uri).map(|(_, jid)| jid)
    })
}

/// [`pidf_to_xmpp_presences`] with the caller's mapping of the entity URI to a bare JID.
pub fn pidf_to_xmpp_presences_with(
    doc: &PidfDocument,
    to: &str,
    opts: &InboundPresenceOptions,
    map_address: impl Fn(&str) -> Result<String, AddressError>,
) -> Result<Vec<Element>, PresenceMappingError> {
    let bare = map_address(doc.entity())?;
    if doc.tuples().is_empty() {
        if !doc.notes().is_empty() {
            return Ok(Vec::new());
        }
        let p = Element::builder("presence", NS_CLIENT)
            .attr(ncname("from"), bare.as_str())
            .attr(ncname("to"), to)
            .attr(ncname("type"), "unavailable")
            .build();
        return Ok(vec![p]);
    }
    let mut out = Vec::new();
    for t in doc.tuples() {
        let Some(basic) = t.basic() else {
            continue;
        };
        let from = match resource_for_tuple_id(t.id()) {
            Some(r) => format!("{bare}/{r}"),
            None => bare.clone(),
        };
        let mut p = Element::builder("presence", NS_CLIENT)
            .attr(ncname("from"), from)
            .attr(ncname("to"), to);
        if basic == Basic::Closed {
            p = p.attr(ncname("type"), "unavailable");
        }
        let mut p = p.build();
        if basic == Basic::Open {
            let show = match t.im_status() {
                Some("away") => Some("away"),
                Some("busy") => Some("dnd"),
                _ => None,
            };
            if let Some(show) = show {
                p.append_child(Element::builder("show", NS_CLIENT).append(show).build());
            }
        }
        let notes = if t.notes().is_empty() {
            doc.notes()
        } else {
            t.notes()
        };
        for n in notes {
            if !n.text().chars().all(is_xml_char) {
                return Err(PresenceMappingError::NotXmlText);
            }
            let mut s = Element::builder("status", NS_CLIENT)
                .append(n.text())
                .build();
            if let Some(lang) = n.lang() {
                set_xml_lang(&mut s, lang);
            }
            p.append_child(s);
        }
        if let Some(priority) = t.contact().and_then(Contact::priority) {
            p.append_child(
                Element::builder("priority", NS_CLIENT)
                    .append(priority_from_pidf(priority).to_string())
                    .build(),
            );
        }
        if opts.include_delay {
            if let Some(ts) = t.timestamp() {
                p.append_child(
                    Element::builder("delay", NS_DELAY)
                        .attr(ncname("stamp"), ts.to_utc().to_string())
                        .build(),
                );
            }
        }
        out.push(p);
    }
    Ok(out)
}

/// Wraps a PIDF document in Message/CPIM (RFC 3922 §5: From `im:` of the sender, To, DateTime,
/// entity `Content-type: application/pidf+xml; charset=utf-8`). This is the object RFC 3923
/// signs for presence.
pub fn pidf_to_cpim(
    doc: &PidfDocument,
    from: &str,
    to: &str,
    now: &DateTime,
) -> Result<CpimMessage, PresenceMappingError> {
    let entity = MimeEntity::new(
        &[("Content-type", "application/pidf+xml; charset=utf-8")],
        &doc.to_bytes(),
    )?;
    let mut msg = CpimMessage::new(entity);
    msg.push(Header::From(Address::new(None, &jid_to_im_uri(from)?)?))?;
    msg.push(Header::To(Address::new(None, &jid_to_im_uri(to)?)?))?;
    msg.push(Header::DateTime(*now))?;
    Ok(msg)
}

/// Extracts the PIDF document from a Message/CPIM object; only `application/pidf+xml` may be
/// mapped (RFC 3922 §5).
pub fn cpim_to_pidf(msg: &CpimMessage) -> Result<PidfDocument, PresenceMappingError> {
    let ct = msg.entity().content_type()?;
    if ct.mime_type() != PIDF_CONTENT_TYPE {
        return Err(PresenceMappingError::NotPidfContent(
            ct.mime_type().to_owned(),
        ));
    }
    Ok(PidfDocument::parse(msg.entity().body())?)
}

/// Remembers the last stanza sent per full JID, so that only tuples whose information changed
/// are passed on (RFC 3922 §6). Pure state, no I/O; one per watcher/presentity pair.
#[derive(Clone, Debug, Default)]
pub struct TupleChangeFilter {
    last: HashMap<String, Element>,
}

impl TupleChangeFilter {
    /// An empty filter: everything is new.
    pub fn new() -> Self {
        TupleChangeFilter::default()
    }

    /// Keeps the stanzas that differ from the last one seen from the same `from`.
    pub fn filter(&mut self, presences: Vec<Element>) -> Vec<Element> {
        presences
            .into_iter()
            .filter(|p| {
                let from = p.attr("from").unwrap_or("").to_owned();
                if self.last.get(&from) == Some(p) {
                    false
                } else {
                    self.last.insert(from, p.clone());
                    true
                }
            })
            .collect()
    }
}
