//! Message Carbons (XEP-0280, `urn:xmpp:carbons:2`): every carbons-enabled resource of a user
//! sees both sides of the user's conversations, wrapped per XEP-0297 (`urn:xmpp:forward:0`).
//!
//! What it owns:
//! - Enabling and disabling per session (§4, §5), idempotently (§9.1): the set of enabled
//!   full JIDs lives in memory and ends with the session. Disco feature (§3).
//! - Eligibility (§6, the suggested rules, as Prosody applies them): `chat` messages; `normal`
//!   ones with a `<body/>`; `error` messages coming back from a bare JID (the bounce of a
//!   message the user sent to a bare JID, which needs no correlation); never `groupchat` or
//!   `headline`, never MUC private messages or invitations (recognised by their
//!   `<x xmlns='http://jabber.org/protocol/muc#user'/>`, §6 rule 4), never a message marked
//!   `<private/>` (§7) or with the `<no-copy/>` hint (XEP-0334 §4.4), never a copy of a copy.
//! - `<received/>` copies (§6 "Receiving Messages") at [`Hook::Delivered`]: after the router
//!   delivered a message by RFC 6121 §8.5, each enabled resource of the recipient that did not
//!   receive it gets a copy from the user's bare JID.
//! - `<sent/>` copies (§7 "Sending Messages") at [`Hook::Sent`]: each enabled resource of the
//!   sender other than the sending one gets a copy. This module sits after the archive in the
//!   module list, so the copy carries the archive's `<stanza-id/>` (XEP-0313 §3.5); the
//!   stanza-id module removes that id before the message leaves.
//! - Protection against forged carbons (§11: a client MUST ignore copies not from its own bare
//!   JID; here the server makes sure none reach it): a client that sends a message carrying a
//!   `<sent/>` or `<received/>` wrapper gets a `forbidden` error and the message goes nowhere
//!   ([`Hook::Outbound`]) — rejecting rather than stripping, because what remains of such a
//!   message is not what the client meant to send, and a silent edit hides the fault. A routed
//!   message carrying a wrapper from anyone but the recipient's own bare JID (a remote server,
//!   later) is dropped at [`Hook::Accepted`], before it can be delivered, stored or archived.
//!   Copies made here are queued straight to sessions and never cross those checks.
//!
//! What it does not: remove `<private/>` before delivery (§7 says SHOULD; the marker has to
//! survive until the received copies are decided after delivery, and clients ignore it), or
//! keep the enabled state across a stream resumption (that is the session's to hand over).

use starling_proto::Attr;
use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use minidom::Element;
use parking_lot::RwLock;
use starling_core::module::{IqRequest, IqResponse, SessionEvent};
use starling_core::xml::BuilderExt;
use starling_core::{Hook, HookContext, Module, Outcome, Server};
use starling_proto::error::{error_reply, StanzaError, StanzaErrorCondition as Cond};
use starling_proto::jid::Jid;
use starling_proto::ns;
use starling_proto::stanza::IqType;

use crate::stanza_id::remove_children;

/// The carbons namespace (and disco feature).
pub const NS_CARBONS: &str = "urn:xmpp:carbons:2";
/// Stanza Forwarding (XEP-0297).
pub const NS_FORWARD: &str = "urn:xmpp:forward:0";
/// Message Processing Hints (XEP-0334).
const NS_HINTS: &str = "urn:xmpp:hints";
/// MUC user extension (XEP-0045): marks private messages and invitations from rooms.
const NS_MUC_USER: &str = "http://jabber.org/protocol/muc#user";

/// The carbons module.
#[derive(Default)]
pub struct Carbons {
    enabled: RwLock<Enabled>,
}

/// The sessions that enabled carbons and have not disabled them or ended, and per user how
/// many: the hooks run for every message, and most users have no enabled session (or no
/// session at all), so they ask the cheap questions first (anyone on the server? this
/// user?) before parsing the second address or looking at the payload. In `bench chat`
/// with no client enabling carbons, the module was 16% of the server's CPU (perf), most of
/// it four JID parses per message.
#[derive(Default)]
struct Enabled {
    sessions: HashSet<Jid>,
    users: HashMap<Jid, usize>,
}

impl Enabled {
    fn insert(&mut self, full: &Jid) {
        if self.sessions.insert(full.clone()) {
            *self.users.entry(full.bare()).or_default() += 1;
        }
    }

    fn remove(&mut self, full: &Jid) {
        if self.sessions.remove(full) {
            let user = full.bare();
            if let Some(n) = self.users.get_mut(&user) {
                *n -= 1;
                if *n == 0 {
                    self.users.remove(&user);
                }
            }
        }
    }
}

/// Which way a message crosses the user's account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    /// Sent by one of the user's resources.
    Sent,
    /// Received for the user.
    Received,
}

impl Direction {
    fn wrapper(self) -> &'static str {
        match self {
            Direction::Sent => "sent",
            Direction::Received => "received",
        }
    }
}

/// Whether `msg` carries a carbons `<sent/>` or `<received/>` wrapper as a direct child.
pub fn is_carbon(msg: &Element) -> bool {
    msg.children()
        .any(|c| c.ns() == NS_CARBONS && matches!(c.name(), "sent" | "received"))
}

/// XEP-0280 §6 eligibility (see the module docs).
fn eligible(msg: &Element, direction: Direction) -> bool {
    let excluded = msg.children().any(|c| {
        let ns = c.ns();
        (ns == NS_CARBONS && matches!(c.name(), "private" | "sent" | "received"))
            || (ns == NS_HINTS && c.name() == "no-copy")
            || (ns == NS_MUC_USER && c.name() == "x")
    });
    if excluded {
        return false;
    }
    match msg.attribute("type").unwrap_or("normal") {
        "chat" => true,
        "normal" => msg.get_child("body", ns::CLIENT).is_some(),
        "error" => {
            direction == Direction::Received
                && msg
                    .jid_attribute("from")
                    .is_some_and(|f| f.resource().is_none())
        }
        _ => false,
    }
}

/// The copy of `msg` for `session` of `user`: from the bare JID, same type (§6, §7).
fn wrap(msg: &Element, direction: Direction, user: &Jid, session: &Jid) -> Element {
    let mut copy = Element::builder("message", ns::CLIENT)
        .with_attr("from", user.as_str())
        .with_attr("to", session.as_str());
    if let Some(t) = msg.attribute("type") {
        copy = copy.with_attr("type", t);
    }
    copy.append(
        Element::builder(direction.wrapper(), NS_CARBONS)
            .append(Element::builder("forwarded", NS_FORWARD).append(msg.clone())),
    )
    .build()
}

impl Carbons {
    /// A carbons module with no session enabled.
    pub fn new() -> Carbons {
        Carbons::default()
    }

    /// Whether no session on the server has carbons enabled.
    fn none_enabled(&self) -> bool {
        self.enabled.read().sessions.is_empty()
    }

    /// Whether some session of `user` (a bare JID) has carbons enabled.
    fn user_enabled(&self, user: &Jid) -> bool {
        self.enabled.read().users.contains_key(user)
    }

    /// Queues copies of `msg` for the enabled sessions of `user` not in `skip`.
    async fn copy(
        &self,
        server: &Server,
        msg: &Element,
        direction: Direction,
        user: &Jid,
        skip: &[&Jid],
    ) {
        let targets = {
            let enabled = self.enabled.read();
            if !enabled.users.contains_key(user) {
                return;
            }
            server.router().with_resources(user, |list| {
                list.iter()
                    .filter(|r| enabled.sessions.contains(&r.jid) && !skip.contains(&&r.jid))
                    .map(|r| (r.handle.clone(), r.jid.clone()))
                    .collect::<Vec<_>>()
            })
        };
        for (handle, full) in targets {
            let copy = wrap(msg, direction, user, &full);
            server.deliver_to(&handle, &full, copy).await;
        }
    }

    /// §11: a client never sends carbons. Answers `forbidden`, without the wrapper.
    async fn reject_forged(&self, server: &Server, msg: &Element) -> Outcome {
        let Some(from) = msg.jid_attribute("from") else {
            return Outcome::Handled;
        };
        tracing::info!(%from, "client sent a forged carbon copy; rejected");
        let mut stripped = msg.clone();
        remove_children(&mut stripped, |c| {
            c.ns() == NS_CARBONS && matches!(c.name(), "sent" | "received")
        });
        let err = StanzaError::with_text(
            Cond::Forbidden,
            "carbon copies are sent by the server only (XEP-0280 section 11)",
        );
        if let Some(reply) = error_reply(&stripped, &err) {
            // Straight to the session: routed, the reply would come "from" the addressee and
            // cross the addressee's filters.
            if let Some(session) = server.router().session(&from) {
                server.deliver_to(&session, &from, reply).await;
            }
        }
        Outcome::Handled
    }
}

#[async_trait]
impl Module for Carbons {
    fn name(&self) -> &'static str {
        "carbons"
    }

    fn disco_features(&self) -> Vec<&'static str> {
        vec![NS_CARBONS]
    }

    fn iq_payloads(&self) -> Vec<(&'static str, &'static str)> {
        vec![(NS_CARBONS, "enable"), (NS_CARBONS, "disable")]
    }

    async fn handle_iq(&self, server: &Server, iq: IqRequest<'_>) -> IqResponse {
        if iq.kind != IqType::Set {
            return Err(StanzaError::new(Cond::BadRequest));
        }
        // §4.1, §5.1: only for our own clients, each for itself (to its own account or to
        // the server).
        let own = match iq.to.node() {
            Some(_) => iq.to.bare() == iq.from.bare(),
            None => server.config().is_local_host(iq.to.domain()),
        };
        if !own || iq.from.resource().is_none() || iq.from.node().is_none() {
            return Err(StanzaError::new(Cond::NotAllowed));
        }
        let mut enabled = self.enabled.write();
        if iq.payload.name() == "enable" {
            enabled.insert(iq.from);
        } else {
            enabled.remove(iq.from);
        }
        Ok(None)
    }

    fn hooks(&self) -> Vec<Hook> {
        vec![Hook::Outbound, Hook::Sent, Hook::Accepted, Hook::Delivered]
    }

    async fn on_stanza(
        &self,
        server: &Server,
        stanza: &Element,
        hook: Hook,
        ctx: HookContext<'_>,
    ) -> Outcome {
        if stanza.name() != "message" {
            return Outcome::Pass;
        }
        match hook {
            Hook::Outbound if is_carbon(stanza) => self.reject_forged(server, stanza).await,
            Hook::Delivered => {
                if self.none_enabled() {
                    return Outcome::Pass;
                }
                let Some(user) = stanza.jid_attribute("to").map(|to| to.bare()) else {
                    return Outcome::Pass;
                };
                if !self.user_enabled(&user) || !eligible(stanza, Direction::Received) {
                    return Outcome::Pass;
                }
                let Some(from) = stanza.jid_attribute("from") else {
                    return Outcome::Pass;
                };
                // A message to oneself: the sending session already has it.
                let mut skip: Vec<&Jid> = ctx.delivered.iter().collect();
                if from.bare() == user {
                    skip.push(&from);
                }
                self.copy(server, stanza, Direction::Received, &user, &skip)
                    .await;
                Outcome::Pass
            }
            _ => Outcome::Pass,
        }
    }

    /// Carbons copies sent messages and drops forged copies; it never changes one.
    fn edits_at(&self, _hook: Hook) -> bool {
        false
    }

    async fn edit_stanza(
        &self,
        server: &Server,
        stanza: &mut Element,
        hook: Hook,
        _ctx: HookContext<'_>,
    ) -> Outcome {
        if stanza.name() != "message" {
            return Outcome::Pass;
        }
        match hook {
            Hook::Sent => {
                if self.none_enabled() {
                    return Outcome::Pass;
                }
                let Some(from) = stanza.jid_attribute("from") else {
                    return Outcome::Pass;
                };
                let user = from.bare();
                if !self.user_enabled(&user) {
                    return Outcome::Pass;
                }
                let Some(to) = stanza.jid_attribute("to") else {
                    return Outcome::Pass;
                };
                // To oneself: the received copies cover every other resource.
                if to.bare() != user && eligible(stanza, Direction::Sent) {
                    self.copy(server, stanza, Direction::Sent, &user, &[&from])
                        .await;
                }
                Outcome::Pass
            }
            Hook::Accepted if is_carbon(stanza) => {
                let (Some(from), Some(to)) =
                    (stanza.jid_attribute("from"), stanza.jid_attribute("to"))
                else {
                    return Outcome::Pass;
                };
                if from == to.bare() {
                    return Outcome::Pass;
                }
                tracing::info!(%from, %to, "dropped a forged carbon copy");
                Outcome::Handled
            }
            _ => Outcome::Pass,
        }
    }

    async fn on_session(&self, _server: &Server, event: &SessionEvent) {
        if let SessionEvent::Ended(full) = event {
            self.enabled.write().remove(full);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(s: &str) -> Element {
        s.parse().unwrap()
    }

    #[test]
    fn enabled_users_are_counted_per_session() {
        let j = |s: &str| Jid::parse(s).unwrap();
        let mut e = Enabled::default();
        e.insert(&j("a@x/1"));
        e.insert(&j("a@x/1")); // enabling twice is one session (§9.1)
        e.insert(&j("a@x/2"));
        e.insert(&j("b@x/1"));
        assert_eq!(e.users.get(&j("a@x")), Some(&2));
        e.remove(&j("a@x/1"));
        e.remove(&j("a@x/1"));
        assert_eq!(e.users.get(&j("a@x")), Some(&1));
        e.remove(&j("a@x/2"));
        assert!(!e.users.contains_key(&j("a@x")));
        e.remove(&j("b@x/1"));
        assert!(e.sessions.is_empty() && e.users.is_empty());
    }

    #[test]
    fn eligibility_follows_section_6() {
        let yes = |s: &str, d| assert!(eligible(&msg(s), d), "{s}");
        let no = |s: &str, d| assert!(!eligible(&msg(s), d), "{s}");
        use Direction::*;
        yes("<message xmlns='jabber:client' type='chat'/>", Sent);
        yes(
            "<message xmlns='jabber:client' type='chat'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>",
            Received,
        );
        yes(
            "<message xmlns='jabber:client'><body>x</body></message>",
            Sent,
        );
        no(
            "<message xmlns='jabber:client'><subject>x</subject></message>",
            Sent,
        );
        no(
            "<message xmlns='jabber:client' type='headline'><body>x</body></message>",
            Received,
        );
        no(
            "<message xmlns='jabber:client' type='groupchat'><body>x</body></message>",
            Received,
        );
        no(
            "<message xmlns='jabber:client' type='chat'><body>x</body><private xmlns='urn:xmpp:carbons:2'/></message>",
            Sent,
        );
        no(
            "<message xmlns='jabber:client' type='chat'><body>x</body><no-copy xmlns='urn:xmpp:hints'/></message>",
            Received,
        );
        no(
            "<message xmlns='jabber:client' type='chat' from='room@muc.x/nick'><body>x</body><x xmlns='http://jabber.org/protocol/muc#user'/></message>",
            Received,
        );
        // Bounces of messages sent to a bare JID; not errors the user sends.
        yes(
            "<message xmlns='jabber:client' type='error' from='bob@x'/>",
            Received,
        );
        no(
            "<message xmlns='jabber:client' type='error' from='bob@x/r'/>",
            Received,
        );
        no(
            "<message xmlns='jabber:client' type='error' from='a@x/r'/>",
            Sent,
        );
        // A copy is never copied again.
        no(
            "<message xmlns='jabber:client' type='chat'><received xmlns='urn:xmpp:carbons:2'/></message>",
            Received,
        );
    }

    #[test]
    fn copies_are_wrapped_per_xep_0297() {
        let original = msg("<message xmlns='jabber:client' from='juliet@x/balcony' to='romeo@y/garden' type='chat'><body>hi</body></message>");
        let user = Jid::parse("romeo@y").unwrap();
        let session = Jid::parse("romeo@y/home").unwrap();
        let copy = wrap(&original, Direction::Received, &user, &session);
        assert_eq!(copy.attribute("from"), Some("romeo@y"));
        assert_eq!(copy.attribute("to"), Some("romeo@y/home"));
        assert_eq!(copy.attribute("type"), Some("chat"));
        let inner = copy
            .get_child("received", NS_CARBONS)
            .and_then(|r| r.get_child("forwarded", NS_FORWARD))
            .and_then(|f| f.get_child("message", ns::CLIENT))
            .expect("received/forwarded/message");
        assert_eq!(inner, &original);
        assert!(is_carbon(&copy));
        assert!(!is_carbon(&original));
    }
}
