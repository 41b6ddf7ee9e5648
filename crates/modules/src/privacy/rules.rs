//! The rule engine shared by privacy lists (XEP-0016 §2.1–§2.2) and blocking (XEP-0191 §5,
//! where each blocked JID is a `jid`/`deny` item with no stanza kinds): parsing and
//! serialising a `<list/>`, and deciding whether one stanza kind to or from one entity is
//! allowed. No I/O: the caller supplies what the user's roster says about the entity.

use minidom::Element;
use starling_core::xml::BuilderExt;
use starling_proto::jid::Jid;
use starling_proto::Attr;

/// The privacy lists namespace (XEP-0016).
pub const NS_PRIVACY: &str = "jabber:iq:privacy";

/// Most items one list may hold (DESIGN principle 3).
pub const MAX_ITEMS: usize = 1000;

/// The kind of a stanza as privacy rules see it (XEP-0016 §2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An incoming message.
    Message,
    /// An incoming IQ.
    Iq,
    /// An incoming presence notification (no type, or `unavailable`).
    PresenceIn,
    /// An outgoing presence notification (no type, or `unavailable`).
    PresenceOut,
    /// Anything else: outgoing messages and IQs, subscription-related presence and probes in
    /// either direction. Only items naming no kind ("all stanzas", §2.9) match these.
    Other,
}

impl Kind {
    /// The kind of a stanza the user receives.
    pub fn inbound(stanza: &Element) -> Kind {
        match stanza.name() {
            "message" => Kind::Message,
            "iq" => Kind::Iq,
            _ if is_notification(stanza) => Kind::PresenceIn,
            _ => Kind::Other,
        }
    }

    /// The kind of a stanza the user sends.
    pub fn outbound(stanza: &Element) -> Kind {
        if stanza.name() == "presence" && is_notification(stanza) {
            Kind::PresenceOut
        } else {
            Kind::Other
        }
    }

    fn bit(self) -> u8 {
        match self {
            Kind::Message => MESSAGE,
            Kind::Iq => IQ,
            Kind::PresenceIn => PRESENCE_IN,
            Kind::PresenceOut => PRESENCE_OUT,
            Kind::Other => 0,
        }
    }
}

/// Presence notifications are presence without a type or of type `unavailable` (XEP-0016 §2).
fn is_notification(stanza: &Element) -> bool {
    stanza.name() == "presence" && matches!(stanza.attribute("type"), None | Some("unavailable"))
}

const MESSAGE: u8 = 1;
const IQ: u8 = 2;
const PRESENCE_IN: u8 = 4;
const PRESENCE_OUT: u8 = 8;
const KIND_NAMES: [(&str, u8); 4] = [
    ("message", MESSAGE),
    ("iq", IQ),
    ("presence-in", PRESENCE_IN),
    ("presence-out", PRESENCE_OUT),
];

/// A subscription state as privacy rules name it (`none` includes "not on the roster").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Subscription {
    #[default]
    None,
    To,
    From,
    Both,
}

impl Subscription {
    /// From the two directions of a roster item.
    pub fn from_flags(to: bool, from: bool) -> Subscription {
        match (to, from) {
            (false, false) => Subscription::None,
            (true, false) => Subscription::To,
            (false, true) => Subscription::From,
            (true, true) => Subscription::Both,
        }
    }

    fn parse(s: &str) -> Option<Subscription> {
        Some(match s {
            "none" => Subscription::None,
            "to" => Subscription::To,
            "from" => Subscription::From,
            "both" => Subscription::Both,
            _ => return None,
        })
    }

    fn as_str(self) -> &'static str {
        match self {
            Subscription::None => "none",
            Subscription::To => "to",
            Subscription::From => "from",
            Subscription::Both => "both",
        }
    }
}

/// What the user's roster says about the other entity.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Contact {
    /// The subscription state (`None` also for entities not on the roster).
    pub subscription: Subscription,
    /// The roster groups the entity is in.
    pub groups: Vec<String>,
}

/// What an item matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Matcher {
    /// No `type`: the fall-through item.
    Any,
    /// `type='jid'`, matched as XEP-0016 §2.1 orders it (see [`jid_matches`]).
    Jid(Jid),
    /// `type='group'`: the entity is in this roster group.
    Group(String),
    /// `type='subscription'`.
    Subscription(Subscription),
}

/// One `<item/>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Processing order, unique within the list.
    pub order: u32,
    /// What the item matches.
    pub matcher: Matcher,
    /// `allow` (true) or `deny`.
    pub allow: bool,
    /// The stanza kinds named by child elements; 0 means every stanza.
    kinds: u8,
}

impl Rule {
    /// A blocklist entry (XEP-0191 §5): `jid`, `deny`, every stanza.
    pub fn block(jid: Jid, order: u32) -> Rule {
        Rule {
            order,
            matcher: Matcher::Jid(jid),
            allow: false,
            kinds: 0,
        }
    }

    /// The blocked JID if this item is a blocklist entry.
    pub fn blocked_jid(&self) -> Option<&Jid> {
        match &self.matcher {
            Matcher::Jid(j) if !self.allow && self.kinds == 0 => Some(j),
            _ => None,
        }
    }

    fn applies_to(&self, kind: Kind) -> bool {
        self.kinds == 0 || self.kinds & kind.bit() != 0
    }

    fn matches(&self, other: &Jid, contact: &Contact) -> bool {
        match &self.matcher {
            Matcher::Any => true,
            Matcher::Jid(p) => jid_matches(p, other),
            Matcher::Group(g) => contact.groups.iter().any(|c| c == g),
            Matcher::Subscription(s) => contact.subscription == *s,
        }
    }
}

/// The outcome of evaluating a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// No item denied the stanza (or an item allowed it first).
    Allow,
    /// An item denied it; `blocked` when that item is a blocklist entry (outbound errors then
    /// carry XEP-0191's `<blocked/>`).
    Deny { blocked: bool },
}

/// Why a `<list/>` was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListError {
    /// Malformed: missing or bad attribute, duplicate order (XEP-0016 §2.1: `bad-request`).
    BadRequest(&'static str),
    /// Too many items.
    TooLarge,
}

/// A named, ordered privacy list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrivacyList {
    name: String,
    /// Sorted by `order`.
    rules: Vec<Rule>,
}

impl PrivacyList {
    /// A list from rules (sorted here; orders must be unique).
    pub fn new(name: impl Into<String>, mut rules: Vec<Rule>) -> PrivacyList {
        rules.sort_by_key(|r| r.order);
        PrivacyList {
            name: name.into(),
            rules,
        }
    }

    /// The list's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The items, in processing order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Whether evaluating needs the roster (group or subscription items).
    pub fn needs_roster(&self) -> bool {
        self.rules
            .iter()
            .any(|r| matches!(r.matcher, Matcher::Group(_) | Matcher::Subscription(_)))
    }

    /// The roster groups the list names.
    pub fn groups(&self) -> impl Iterator<Item = &str> {
        self.rules.iter().filter_map(|r| match &r.matcher {
            Matcher::Group(g) => Some(g.as_str()),
            _ => None,
        })
    }

    /// The blocklist view of the list (XEP-0191 §5): its `jid`+`deny`+all-stanzas items.
    pub fn blocked_jids(&self) -> Vec<Jid> {
        self.rules
            .iter()
            .filter_map(|r| r.blocked_jid().cloned())
            .collect()
    }

    /// Evaluates `kind` exchanged with `other` (XEP-0016 §2.2 rules 5–7): the first item in
    /// order that matches both the entity and the kind decides; none means allow.
    pub fn decide(&self, kind: Kind, other: &Jid, contact: &Contact) -> Decision {
        for r in &self.rules {
            if r.applies_to(kind) && r.matches(other, contact) {
                return if r.allow {
                    Decision::Allow
                } else {
                    Decision::Deny {
                        blocked: r.blocked_jid().is_some(),
                    }
                };
            }
        }
        Decision::Allow
    }

    /// Reads a `<list name='…'>` with at least one item (an empty list is a removal, which
    /// the caller handles before parsing).
    pub fn from_element(el: &Element) -> Result<PrivacyList, ListError> {
        let name = el
            .attribute("name")
            .filter(|n| !n.is_empty())
            .ok_or(ListError::BadRequest("list without a name"))?;
        let mut rules = Vec::new();
        for item in el.children() {
            if item.name() != "item" || item.ns() != NS_PRIVACY {
                continue;
            }
            if rules.len() >= MAX_ITEMS {
                return Err(ListError::TooLarge);
            }
            rules.push(parse_item(item)?);
        }
        let mut orders: Vec<u32> = rules.iter().map(|r| r.order).collect();
        orders.sort_unstable();
        if orders.windows(2).any(|w| w[0] == w[1]) {
            return Err(ListError::BadRequest("duplicate order"));
        }
        Ok(PrivacyList::new(name, rules))
    }

    /// The `<list/>` element with every item.
    pub fn to_element(&self) -> Element {
        let mut list = Element::builder("list", NS_PRIVACY)
            .with_attr("name", self.name.as_str())
            .build();
        for r in &self.rules {
            let mut b = Element::builder("item", NS_PRIVACY);
            match &r.matcher {
                Matcher::Any => {}
                Matcher::Jid(j) => b = b.with_attr("type", "jid").with_attr("value", j.as_str()),
                Matcher::Group(g) => {
                    b = b.with_attr("type", "group").with_attr("value", g.as_str())
                }
                Matcher::Subscription(s) => {
                    b = b
                        .with_attr("type", "subscription")
                        .with_attr("value", s.as_str())
                }
            }
            b = b
                .with_attr("action", if r.allow { "allow" } else { "deny" })
                .with_attr("order", r.order.to_string());
            for (name, bit) in KIND_NAMES {
                if r.kinds & bit != 0 {
                    b = b.append(Element::builder(name, NS_PRIVACY));
                }
            }
            list.append_child(b.build());
        }
        list
    }
}

fn parse_item(item: &Element) -> Result<Rule, ListError> {
    let allow = match item.attribute("action") {
        Some("allow") => true,
        Some("deny") => false,
        _ => return Err(ListError::BadRequest("item action must be allow or deny")),
    };
    let order = item
        .attribute("order")
        .and_then(|o| o.parse::<u32>().ok())
        .ok_or(ListError::BadRequest(
            "item order must be a non-negative integer",
        ))?;
    let value = item.attribute("value");
    let matcher = match (item.attribute("type"), value) {
        (None, _) => Matcher::Any,
        (Some("jid"), Some(v)) => Matcher::Jid(
            Jid::parse(v).map_err(|_| ListError::BadRequest("item value is not a valid JID"))?,
        ),
        (Some("group"), Some(v)) => Matcher::Group(v.to_owned()),
        (Some("subscription"), Some(v)) => Matcher::Subscription(Subscription::parse(v).ok_or(
            ListError::BadRequest("subscription must be none, to, from or both"),
        )?),
        (Some("jid" | "group" | "subscription"), None) => {
            return Err(ListError::BadRequest("typed item without a value"))
        }
        (Some(_), _) => return Err(ListError::BadRequest("unknown item type")),
    };
    let mut kinds = 0;
    for child in item.children() {
        if let Some((_, bit)) = KIND_NAMES
            .iter()
            .find(|(n, _)| child.name() == *n && child.ns() == NS_PRIVACY)
        {
            kinds |= bit;
        }
    }
    Ok(Rule {
        order,
        matcher,
        allow,
        kinds,
    })
}

/// Whether `other` is covered by the item JID `pattern` (XEP-0016 §2.1, XEP-0191 §4):
/// `user@domain/resource` only itself; `user@domain` any of its resources; `domain/resource`
/// only itself; `domain` the domain, anything at it, and its subdomains.
pub fn jid_matches(pattern: &Jid, other: &Jid) -> bool {
    match (pattern.node(), pattern.resource()) {
        (Some(_), Some(_)) => pattern == other,
        (Some(_), None) => other.bare() == *pattern,
        (None, Some(r)) => {
            other.node().is_none()
                && other.domain() == pattern.domain()
                && other.resource() == Some(r)
        }
        (None, None) => {
            let d = pattern.domain();
            let od = other.domain();
            od == d
                || (od.len() > d.len()
                    && od.ends_with(d)
                    && od.as_bytes()[od.len() - d.len() - 1] == b'.')
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jid(s: &str) -> Jid {
        Jid::parse(s).unwrap()
    }

    fn list(xml: &str) -> Result<PrivacyList, ListError> {
        let el: Element = format!("<list xmlns='jabber:iq:privacy' {xml}</list>")
            .parse()
            .unwrap();
        PrivacyList::from_element(&el)
    }

    fn stranger() -> Contact {
        Contact::default()
    }

    #[test]
    fn jid_matching_follows_the_four_forms() {
        let full = jid("romeo@montague.net/orchard");
        assert!(jid_matches(&jid("romeo@montague.net/orchard"), &full));
        assert!(!jid_matches(&jid("romeo@montague.net/garden"), &full));
        assert!(jid_matches(&jid("romeo@montague.net"), &full));
        assert!(jid_matches(
            &jid("romeo@montague.net"),
            &jid("romeo@montague.net")
        ));
        assert!(!jid_matches(&jid("juliet@montague.net"), &full));
        assert!(jid_matches(
            &jid("montague.net/orchard"),
            &jid("montague.net/orchard")
        ));
        assert!(!jid_matches(&jid("montague.net/orchard"), &full));
        assert!(jid_matches(&jid("montague.net"), &full));
        assert!(jid_matches(&jid("montague.net"), &jid("montague.net")));
        assert!(jid_matches(&jid("montague.net"), &jid("chat.montague.net")));
        assert!(jid_matches(
            &jid("montague.net"),
            &jid("a@muc.montague.net/x")
        ));
        assert!(!jid_matches(&jid("montague.net"), &jid("evilmontague.net")));
        assert!(!jid_matches(&jid("montague.net"), &jid("capulet.com")));
    }

    #[test]
    fn first_matching_item_in_order_decides() {
        // Written out of order on purpose: processing follows 'order', not document order.
        let l = list(
            "name='public'>\
             <item action='allow' order='68'/>\
             <item type='jid' value='tybalt@example.com' action='deny' order='3'/>\
             <item type='jid' value='example.com' action='deny' order='5'>\
               <message/></item>",
        )
        .unwrap();
        let tybalt = jid("tybalt@example.com/pda");
        assert_eq!(
            l.decide(Kind::Message, &tybalt, &stranger()),
            Decision::Deny { blocked: true }
        );
        // Outbound traffic to tybalt is covered too: the item names no kind.
        assert_eq!(
            l.decide(Kind::Other, &tybalt, &stranger()),
            Decision::Deny { blocked: true }
        );
        let paris = jid("paris@example.com");
        assert_eq!(
            l.decide(Kind::Message, &paris, &stranger()),
            Decision::Deny { blocked: false }
        );
        assert_eq!(l.decide(Kind::Iq, &paris, &stranger()), Decision::Allow);
        assert_eq!(
            l.decide(Kind::Message, &jid("nurse@capulet.com"), &stranger()),
            Decision::Allow
        );
    }

    #[test]
    fn fall_through_defaults_to_allow_and_kinds_are_granular() {
        let l = list(
            "name='x'><item type='jid' value='a@b' action='deny' order='1'><presence-in/><iq/></item>",
        )
        .unwrap();
        let a = jid("a@b/r");
        assert_eq!(l.decide(Kind::Message, &a, &stranger()), Decision::Allow);
        assert!(matches!(
            l.decide(Kind::PresenceIn, &a, &stranger()),
            Decision::Deny { .. }
        ));
        assert!(matches!(
            l.decide(Kind::Iq, &a, &stranger()),
            Decision::Deny { .. }
        ));
        assert_eq!(
            l.decide(Kind::PresenceOut, &a, &stranger()),
            Decision::Allow
        );
        // Subscription requests are not "presence notifications".
        assert_eq!(l.decide(Kind::Other, &a, &stranger()), Decision::Allow);
        let deny_all = list("name='y'><item action='deny' order='0'/>").unwrap();
        assert!(matches!(
            deny_all.decide(Kind::Other, &a, &stranger()),
            Decision::Deny { blocked: false }
        ));
    }

    #[test]
    fn group_and_subscription_items_use_the_roster() {
        let l = list(
            "name='r'>\
             <item type='subscription' value='both' action='allow' order='10'/>\
             <item type='group' value='Enemies' action='deny' order='12'/>\
             <item type='subscription' value='none' action='deny' order='15'><message/></item>",
        )
        .unwrap();
        assert!(l.needs_roster());
        assert_eq!(l.groups().collect::<Vec<_>>(), ["Enemies"]);
        let x = jid("x@y");
        let friend = Contact {
            subscription: Subscription::Both,
            groups: vec!["Enemies".into()],
        };
        assert_eq!(l.decide(Kind::Message, &x, &friend), Decision::Allow);
        let enemy = Contact {
            subscription: Subscription::To,
            groups: vec!["Enemies".into()],
        };
        assert!(matches!(
            l.decide(Kind::Iq, &x, &enemy),
            Decision::Deny { .. }
        ));
        let follower = Contact {
            subscription: Subscription::From,
            groups: vec![],
        };
        assert_eq!(l.decide(Kind::Message, &x, &follower), Decision::Allow);
        assert!(matches!(
            l.decide(Kind::Message, &x, &stranger()),
            Decision::Deny { blocked: false }
        ));
        assert_eq!(l.decide(Kind::Iq, &x, &stranger()), Decision::Allow);
    }

    #[test]
    fn invalid_lists_are_bad_requests() {
        for bad in [
            "name='x'><item action='deny'/>",
            "name='x'><item action='deny' order='-1'/>",
            "name='x'><item action='block' order='1'/>",
            "name='x'><item order='1'/>",
            "name='x'><item type='jid' action='deny' order='1'/>",
            "name='x'><item type='subscription' value='some' action='deny' order='1'/>",
            "name='x'><item type='colour' value='red' action='deny' order='1'/>",
            "name='x'><item type='jid' value='a@b@c' action='deny' order='1'/>",
            "name='x'><item action='deny' order='1'/><item action='allow' order='1'/>",
            "><item action='deny' order='1'/>",
        ] {
            assert!(
                matches!(list(bad), Err(ListError::BadRequest(_))),
                "accepted {bad}"
            );
        }
        let many: String = (0..=MAX_ITEMS)
            .map(|i| format!("<item action='allow' order='{i}'/>"))
            .collect();
        assert_eq!(list(&format!("name='x'>{many}")), Err(ListError::TooLarge));
    }

    #[test]
    fn round_trip_and_blocklist_view() {
        let l = list(
            "name='blocklist'>\
             <item type='jid' value='romeo@montague.net' action='deny' order='0'/>\
             <item type='jid' value='iago@shakespeare.lit' action='deny' order='1'/>\
             <item type='jid' value='nurse@capulet.com' action='deny' order='2'><message/></item>\
             <item type='group' value='Friends' action='allow' order='3'><presence-out/><iq/></item>\
             <item action='allow' order='9'/>",
        )
        .unwrap();
        let again = PrivacyList::from_element(&l.to_element()).unwrap();
        assert_eq!(again, l);
        assert_eq!(
            l.blocked_jids(),
            [jid("romeo@montague.net"), jid("iago@shakespeare.lit")]
        );
        assert_eq!(l.name(), "blocklist");
    }

    #[test]
    fn stanza_kinds() {
        let el = |s: &str| s.parse::<Element>().unwrap();
        assert_eq!(
            Kind::inbound(&el("<message xmlns='jabber:client'/>")),
            Kind::Message
        );
        assert_eq!(Kind::inbound(&el("<iq xmlns='jabber:client'/>")), Kind::Iq);
        assert_eq!(
            Kind::inbound(&el("<presence xmlns='jabber:client'/>")),
            Kind::PresenceIn
        );
        assert_eq!(
            Kind::inbound(&el("<presence xmlns='jabber:client' type='unavailable'/>")),
            Kind::PresenceIn
        );
        assert_eq!(
            Kind::inbound(&el("<presence xmlns='jabber:client' type='subscribe'/>")),
            Kind::Other
        );
        assert_eq!(
            Kind::inbound(&el("<presence xmlns='jabber:client' type='probe'/>")),
            Kind::Other
        );
        assert_eq!(
            Kind::outbound(&el("<presence xmlns='jabber:client'/>")),
            Kind::PresenceOut
        );
        assert_eq!(
            Kind::outbound(&el("<message xmlns='jabber:client'/>")),
            Kind::Other
        );
    }
}
