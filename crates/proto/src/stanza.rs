//! Small helpers on stanza elements (RFC 6120 §8, RFC 6121 §4.7.1, §5.2.2): which of the
//! three kinds an element is, the `type` attribute of each kind, IQ validation (§8.2.3) and
//! the empty IQ result. Stanzas stay `minidom::Element`s; typed payloads live elsewhere.

use crate::Attr;
use minidom::Element;

use crate::error::{nc, StanzaError, StanzaErrorCondition};
use crate::ns;

/// The three stanza kinds (RFC 6120 §8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StanzaKind {
    Message,
    Presence,
    Iq,
}

/// The kind of `el`, if it is a stanza in `jabber:client` or `jabber:server`.
pub fn kind(el: &Element) -> Option<StanzaKind> {
    if !(el.has_ns(ns::CLIENT) || el.has_ns(ns::SERVER)) {
        return None;
    }
    match el.name() {
        "message" => Some(StanzaKind::Message),
        "presence" => Some(StanzaKind::Presence),
        "iq" => Some(StanzaKind::Iq),
        _ => None,
    }
}

/// IQ `type` (RFC 6120 §8.2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IqType {
    Get,
    Set,
    Result,
    Error,
}

impl IqType {
    /// `None` for a missing or unknown type: an IQ must have one.
    pub fn parse(s: Option<&str>) -> Option<IqType> {
        Some(match s? {
            "get" => IqType::Get,
            "set" => IqType::Set,
            "result" => IqType::Result,
            "error" => IqType::Error,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            IqType::Get => "get",
            IqType::Set => "set",
            IqType::Result => "result",
            IqType::Error => "error",
        }
    }
}

/// The type of an IQ element.
pub fn iq_type(el: &Element) -> Option<IqType> {
    IqType::parse(el.attribute("type"))
}

/// Message `type` (RFC 6121 §5.2.2); missing means `normal`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageType {
    Chat,
    Error,
    Groupchat,
    Headline,
    Normal,
}

impl MessageType {
    /// Missing is `normal`; an unknown value is `None` (RFC 6121 §5.2.2 says treat it as
    /// `normal`, which the caller may do; the distinction is kept for logging).
    pub fn parse(s: Option<&str>) -> Option<MessageType> {
        Some(match s {
            None | Some("normal") => MessageType::Normal,
            Some("chat") => MessageType::Chat,
            Some("error") => MessageType::Error,
            Some("groupchat") => MessageType::Groupchat,
            Some("headline") => MessageType::Headline,
            Some(_) => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            MessageType::Chat => "chat",
            MessageType::Error => "error",
            MessageType::Groupchat => "groupchat",
            MessageType::Headline => "headline",
            MessageType::Normal => "normal",
        }
    }
}

/// The type of a message element.
pub fn message_type(el: &Element) -> Option<MessageType> {
    MessageType::parse(el.attribute("type"))
}

/// Presence `type` (RFC 6120 §8.2.2, RFC 6121 §4.7.1); missing means available.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PresenceType {
    Available,
    Error,
    Probe,
    Subscribe,
    Subscribed,
    Unavailable,
    Unsubscribe,
    Unsubscribed,
}

impl PresenceType {
    /// Missing is `Available`; an unknown value is `None` (a `bad-request`).
    pub fn parse(s: Option<&str>) -> Option<PresenceType> {
        Some(match s {
            None => PresenceType::Available,
            Some("error") => PresenceType::Error,
            Some("probe") => PresenceType::Probe,
            Some("subscribe") => PresenceType::Subscribe,
            Some("subscribed") => PresenceType::Subscribed,
            Some("unavailable") => PresenceType::Unavailable,
            Some("unsubscribe") => PresenceType::Unsubscribe,
            Some("unsubscribed") => PresenceType::Unsubscribed,
            Some(_) => return None,
        })
    }

    /// The attribute value; `None` for `Available`, which has no `type`.
    pub fn as_str(self) -> Option<&'static str> {
        Some(match self {
            PresenceType::Available => return None,
            PresenceType::Error => "error",
            PresenceType::Probe => "probe",
            PresenceType::Subscribe => "subscribe",
            PresenceType::Subscribed => "subscribed",
            PresenceType::Unavailable => "unavailable",
            PresenceType::Unsubscribe => "unsubscribe",
            PresenceType::Unsubscribed => "unsubscribed",
        })
    }
}

/// The type of a presence element.
pub fn presence_type(el: &Element) -> Option<PresenceType> {
    PresenceType::parse(el.attribute("type"))
}

/// The empty `type='result'` answer to an IQ (RFC 6120 §8.2.3): same namespace and `id`,
/// `from` and `to` swapped. Add a payload with `append_child` when there is one.
pub fn iq_result(req: &Element) -> Element {
    let mut el = Element::bare("iq", req.ns());
    let none = rxml::Namespace::NONE;
    if let Some(from) = req.attribute("from") {
        el.set_attr(none.clone(), nc("to"), from);
    }
    if let Some(to) = req.attribute("to") {
        el.set_attr(none.clone(), nc("from"), to);
    }
    if let Some(id) = req.attribute("id") {
        el.set_attr(none.clone(), nc("id"), id);
    }
    el.set_attr(none, nc("type"), "result");
    el
}

/// RFC 6120 §8.2.3: an IQ has an `id` and a known `type`; a get or set has exactly one
/// child (its payload); a result has at most one. Violations are `bad-request`.
pub fn validate_iq(el: &Element) -> Result<(), StanzaError> {
    let bad = |why: &str| {
        Err(StanzaError::with_text(
            StanzaErrorCondition::BadRequest,
            why,
        ))
    };
    if kind(el) != Some(StanzaKind::Iq) {
        return bad("not an iq stanza");
    }
    if el.attribute("id").is_none_or(str::is_empty) {
        return bad("iq without id");
    }
    let children = el.children().count();
    match iq_type(el) {
        None => bad("iq without a valid type"),
        Some(IqType::Get | IqType::Set) if children != 1 => {
            bad("iq get/set must have exactly one child")
        }
        Some(IqType::Result) if children > 1 => bad("iq result has more than one child"),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn el(s: &str) -> Element {
        s.parse().unwrap()
    }

    #[test]
    fn kinds() {
        assert_eq!(
            kind(&el("<message xmlns='jabber:client'/>")),
            Some(StanzaKind::Message)
        );
        assert_eq!(
            kind(&el("<presence xmlns='jabber:server'/>")),
            Some(StanzaKind::Presence)
        );
        assert_eq!(
            kind(&el("<iq xmlns='jabber:client'/>")),
            Some(StanzaKind::Iq)
        );
        assert_eq!(kind(&el("<iq xmlns='urn:other'/>")), None);
        assert_eq!(kind(&el("<auth xmlns='jabber:client'/>")), None);
    }

    #[test]
    fn type_parsing() {
        assert_eq!(IqType::parse(Some("get")), Some(IqType::Get));
        assert_eq!(IqType::parse(None), None);
        assert_eq!(IqType::parse(Some("GET")), None);
        for t in [IqType::Get, IqType::Set, IqType::Result, IqType::Error] {
            assert_eq!(IqType::parse(Some(t.as_str())), Some(t));
        }
        assert_eq!(MessageType::parse(None), Some(MessageType::Normal));
        assert_eq!(MessageType::parse(Some("chat")), Some(MessageType::Chat));
        assert_eq!(MessageType::parse(Some("bogus")), None);
        assert_eq!(
            message_type(&el("<message xmlns='jabber:client' type='groupchat'/>")),
            Some(MessageType::Groupchat)
        );
        assert_eq!(PresenceType::parse(None), Some(PresenceType::Available));
        assert_eq!(PresenceType::parse(Some("available")), None);
        assert_eq!(
            presence_type(&el("<presence xmlns='jabber:client' type='probe'/>")),
            Some(PresenceType::Probe)
        );
        for t in [
            PresenceType::Subscribe,
            PresenceType::Unavailable,
            PresenceType::Error,
        ] {
            assert_eq!(PresenceType::parse(t.as_str()), Some(t));
        }
    }

    #[test]
    fn iq_result_swaps_addresses() {
        let req = el("<iq xmlns='jabber:client' id='p1' from='a@b/c' to='b' type='get'><ping xmlns='urn:xmpp:ping'/></iq>");
        let res = iq_result(&req);
        assert!(res.is("iq", ns::CLIENT));
        assert_eq!(res.attribute("id"), Some("p1"));
        assert_eq!(res.attribute("to"), Some("a@b/c"));
        assert_eq!(res.attribute("from"), Some("b"));
        assert_eq!(iq_type(&res), Some(IqType::Result));
        assert_eq!(res.children().count(), 0);
        assert_eq!(validate_iq(&res), Ok(()));
    }

    #[test]
    fn iq_validation() {
        assert_eq!(
            validate_iq(&el(
                "<iq xmlns='jabber:client' id='1' type='get'><q xmlns='x'/></iq>"
            )),
            Ok(())
        );
        for bad in [
            "<iq xmlns='jabber:client' type='get'><q xmlns='x'/></iq>",
            "<iq xmlns='jabber:client' id='' type='get'><q xmlns='x'/></iq>",
            "<iq xmlns='jabber:client' id='1'><q xmlns='x'/></iq>",
            "<iq xmlns='jabber:client' id='1' type='fetch'><q xmlns='x'/></iq>",
            "<iq xmlns='jabber:client' id='1' type='set'/>",
            "<iq xmlns='jabber:client' id='1' type='get'><q xmlns='x'/><r xmlns='x'/></iq>",
            "<iq xmlns='jabber:client' id='1' type='result'><q xmlns='x'/><r xmlns='x'/></iq>",
            "<message xmlns='jabber:client' id='1' type='get'><q xmlns='x'/></message>",
        ] {
            let e = validate_iq(&el(bad)).unwrap_err();
            assert_eq!(e.condition, StanzaErrorCondition::BadRequest, "{bad}");
            assert_eq!(e.type_, crate::error::ErrorType::Modify);
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(std::mem::size_of::<StanzaKind>(), 1);
        assert_eq!(std::mem::size_of::<Option<IqType>>(), 1);
        assert_eq!(std::mem::size_of::<Option<PresenceType>>(), 1);
    }
}
