//! One roster entry: what RFC 6121 §2.1 shows the client, plus what the server keeps beside
//! it (the Appendix A state, the pre-approval, a pending inbound request), and its storage
//! form.
//!
//! Each contact is one entry of the per-user storage map [`STORE`], keyed by the contact's
//! JID, holding a small XML document in Starling's own namespace (so no new dependency and
//! the stored subscription request keeps its extended content verbatim, §3.1.3).

use minidom::Element;
use starling_core::xml::BuilderExt;
use starling_proto::jid::Jid;
use starling_proto::writer;
use starling_proto::Attr;

use super::subscription::{State, Sub};

/// The roster namespace (RFC 6121 §2).
pub const NS_ROSTER: &str = "jabber:iq:roster";
/// The storage map holding each user's contacts.
pub const STORE: &str = "roster";
/// Namespace of the stored form (not on the wire).
const NS_STORED: &str = "urn:starling:roster:0";

/// One contact of a user.
#[derive(Debug, Clone, PartialEq)]
pub struct RosterItem {
    /// The contact (normally a bare JID).
    pub jid: Jid,
    /// The user's name for the contact (`name` attribute, §2.1.2.4).
    pub name: Option<String>,
    /// Groups the user put the contact in (§2.1.2.6), without duplicates, in the user's order.
    pub groups: Vec<String>,
    /// The subscription state and pre-approval.
    pub sub: Sub,
    /// Whether the item is on the roster. A contact whose subscription request is pending but
    /// who was never added is only remembered, not shown (§3.1.3: the request is recorded,
    /// the roster is not changed).
    pub listed: bool,
    /// The contact's pending subscription request, kept whole to be delivered again whenever
    /// the user next becomes available (§3.1.3).
    pub request: Option<Element>,
}

/// The part of an item clients see: a change here is a roster push and a new version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Visible {
    listed: bool,
    name: Option<String>,
    groups: Vec<String>,
    subscription: &'static str,
    ask: bool,
    approved: bool,
}

impl RosterItem {
    /// A contact the user knows nothing about yet.
    pub fn new(jid: Jid) -> RosterItem {
        RosterItem {
            jid,
            name: None,
            groups: Vec::new(),
            sub: Sub::default(),
            listed: false,
            request: None,
        }
    }

    /// What a client can see of this item.
    pub fn visible(&self) -> Visible {
        Visible {
            listed: self.listed,
            name: self.name.clone(),
            groups: self.groups.clone(),
            subscription: self.sub.state.subscription_attr(),
            ask: self.sub.state.pending_out(),
            approved: self.sub.approved,
        }
    }

    /// Nothing left worth storing: not listed, no subscription, nothing pending.
    pub fn is_empty(&self) -> bool {
        !self.listed && self.sub == Sub::default()
    }

    /// The `<item/>` of a roster result or push (RFC 6121 §2.1.2).
    pub fn to_wire(&self) -> Element {
        let mut b = Element::builder("item", NS_ROSTER)
            .with_attr("jid", self.jid.as_str())
            .with_attr("subscription", self.sub.state.subscription_attr());
        if let Some(name) = &self.name {
            b = b.with_attr("name", name.as_str());
        }
        if self.sub.state.pending_out() {
            b = b.with_attr("ask", "subscribe");
        }
        if self.sub.approved {
            b = b.with_attr("approved", "true");
        }
        for g in &self.groups {
            b = b.append(Element::builder("group", NS_ROSTER).append(g.as_str()));
        }
        b.build()
    }

    /// The `<item subscription='remove'/>` pushed when an item leaves the roster (§2.5.2).
    pub fn removal(jid: &Jid) -> Element {
        Element::builder("item", NS_ROSTER)
            .with_attr("jid", jid.as_str())
            .with_attr("subscription", "remove")
            .build()
    }

    /// The stored form.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Element::builder("item", NS_STORED)
            .with_attr("jid", self.jid.as_str())
            .with_attr("state", self.sub.state.name());
        if let Some(name) = &self.name {
            b = b.with_attr("name", name.as_str());
        }
        if self.sub.approved {
            b = b.with_attr("approved", "1");
        }
        if !self.listed {
            b = b.with_attr("listed", "0");
        }
        for g in &self.groups {
            b = b.append(Element::builder("group", NS_STORED).append(g.as_str()));
        }
        if let Some(req) = &self.request {
            b = b.append(Element::builder("request", NS_STORED).append(req.clone()));
        }
        let mut out = Vec::new();
        writer::write_element(&b.build(), &mut out);
        out
    }

    /// Parses the stored form; `None` if it is not one (logged by the caller).
    pub fn decode(bytes: &[u8]) -> Option<RosterItem> {
        let el: Element = std::str::from_utf8(bytes).ok()?.parse().ok()?;
        if !el.is("item", NS_STORED) {
            return None;
        }
        let jid = Jid::parse(el.attribute("jid")?).ok()?;
        let state = State::from_name(el.attribute("state")?)?;
        Some(RosterItem {
            jid,
            name: el.attribute("name").map(str::to_owned),
            groups: el
                .children()
                .filter(|c| c.is("group", NS_STORED))
                .map(|g| g.text())
                .collect(),
            sub: Sub {
                state,
                approved: el.attribute("approved") == Some("1"),
            },
            listed: el.attribute("listed") != Some("0"),
            request: el
                .get_child("request", NS_STORED)
                .and_then(|r| r.children().next().cloned()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_form_round_trips() {
        let request: Element =
            "<presence xmlns='jabber:client' type='subscribe' from='b@x' to='a@x'><nick xmlns='http://jabber.org/protocol/nick'>Bee &amp; co</nick></presence>"
                .parse()
                .unwrap();
        let item = RosterItem {
            jid: Jid::parse("b@x").unwrap(),
            name: Some("Bee <3".into()),
            groups: vec!["Friends".into(), "Work & play".into()],
            sub: Sub {
                state: State::ToPendingIn,
                approved: false,
            },
            listed: true,
            request: Some(request),
        };
        assert_eq!(RosterItem::decode(&item.encode()), Some(item.clone()));
        let mut bare = RosterItem::new(Jid::parse("c@x").unwrap());
        bare.sub.approved = true;
        assert_eq!(RosterItem::decode(&bare.encode()), Some(bare));
        assert_eq!(RosterItem::decode(b"<item xmlns='other' jid='a@b'/>"), None);
        assert_eq!(RosterItem::decode(b"not xml"), None);
    }

    #[test]
    fn wire_form_follows_section_2_1() {
        let mut item = RosterItem::new(Jid::parse("b@x").unwrap());
        item.sub = Sub {
            state: State::NonePendingOut,
            approved: true,
        };
        item.groups = vec!["G".into()];
        let el = item.to_wire();
        assert_eq!(el.attribute("subscription"), Some("none"));
        assert_eq!(el.attribute("ask"), Some("subscribe"));
        assert_eq!(el.attribute("approved"), Some("true"));
        assert_eq!(el.attribute("name"), None);
        assert_eq!(el.children().count(), 1);
        item.sub = Sub::new(State::ToPendingIn);
        let el = item.to_wire();
        assert_eq!(el.attribute("subscription"), Some("to"));
        assert_eq!(el.attribute("ask"), None, "pending-in is not shown");
    }
}
