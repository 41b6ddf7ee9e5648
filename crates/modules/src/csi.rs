//! Client state indication (XEP-0352): less traffic for clients nobody is looking at.
//!
//! Offers the `<csi xmlns='urn:xmpp:csi:0'/>` stream feature; the c2s session records the
//! client's `<active/>` / `<inactive/>` on its handle and tells this module. While a session
//! is inactive, at [`Hook::Delivery`] (XEP-0352 §5 leaves the policy to the server):
//! - available and unavailable presence is held, only the latest per sender (full JID), in a
//!   buffer of at most [`MAX_HELD`] senders; a full buffer is flushed to the session first;
//! - standalone chat states (XEP-0085: a message whose only content is chat-state
//!   notifications, threads and processing hints) are dropped silently
//!   ([`Outcome::Consumed`]: no bounce, no offline storage) — they are stale by the time
//!   the client looks again;
//! - everything else (messages with content, subscription requests, IQs, errors) goes
//!   through at once.
//!
//! On `<active/>` the held presence is delivered straight to the session (the other delivery
//! filters already passed it). Not here: the session-side flag and nonza handling (c2s and
//! core), and holding anything across a session's end (held presence dies with the session).

use starling_proto::Attr;
use std::collections::HashMap;

use async_trait::async_trait;
use minidom::Element;
use parking_lot::Mutex;
use starling_core::xml::ElementExt;
use starling_core::{Hook, HookContext, Module, Outcome, Server, SessionEvent, SessionHandle};
use starling_proto::jid::Jid;
use starling_proto::ns;

/// The client state indication namespace.
pub const NS_CSI: &str = "urn:xmpp:csi:0";
/// Most senders whose presence one inactive session holds.
pub const MAX_HELD: usize = 1000;

/// Presence held for one inactive session, the latest per sender, in arrival order.
#[derive(Default)]
struct Held {
    /// Sender (`from`) -> its slot in `order`.
    index: HashMap<String, usize>,
    /// The held presence stanzas, oldest first.
    order: Vec<Element>,
}

impl Held {
    /// Keeps `presence` as the latest from `sender`.
    fn hold(&mut self, sender: String, presence: Element) {
        match self.index.get(&sender) {
            Some(&i) => self.order[i] = presence,
            None => {
                self.index.insert(sender, self.order.len());
                self.order.push(presence);
            }
        }
    }

    fn is_full_for(&self, sender: &str) -> bool {
        self.order.len() >= MAX_HELD && !self.index.contains_key(sender)
    }

    fn flush(&mut self, session: &SessionHandle) {
        self.index.clear();
        for presence in self.order.drain(..) {
            if session.deliver(presence).is_err() {
                break;
            }
        }
    }
}

/// The client state indication module.
#[derive(Default)]
pub struct Csi {
    /// Held presence per inactive session (full JID); an entry exists only while something
    /// is held, and goes on `<active/>` or when the session ends.
    held: Mutex<HashMap<Jid, Held>>,
}

/// Presence that only reports availability (not subscriptions, probes or errors).
fn is_availability(stanza: &Element) -> bool {
    stanza.is("presence", ns::CLIENT)
        && matches!(stanza.attribute("type"), None | Some("unavailable"))
}

#[async_trait]
impl Module for Csi {
    fn name(&self) -> &'static str {
        "csi"
    }

    fn stream_features(&self) -> Vec<Element> {
        vec![Element::builder("csi", NS_CSI).build()]
    }

    fn hooks(&self) -> Vec<Hook> {
        vec![Hook::Delivery]
    }

    async fn on_stanza(
        &self,
        server: &Server,
        stanza: &Element,
        _hook: Hook,
        ctx: HookContext<'_>,
    ) -> Outcome {
        let Some(full) = ctx.session else {
            return Outcome::Pass;
        };
        if is_standalone_chat_state(stanza) {
            return match server.router().session(full) {
                Some(session) if session.is_inactive() => Outcome::Consumed,
                _ => Outcome::Pass,
            };
        }
        if !is_availability(stanza) {
            return Outcome::Pass;
        }
        let Some(session) = server.router().session(full) else {
            return Outcome::Pass;
        };
        // The flag is read under the lock: `<active/>` clears it before flushing under the
        // same lock, so nothing is held after the flush.
        let mut held = self.held.lock();
        if !session.is_inactive() {
            return Outcome::Pass;
        }
        let sender = stanza.attribute("from").unwrap_or_default().to_owned();
        let buffer = held.entry(full.clone()).or_default();
        if buffer.is_full_for(&sender) {
            buffer.flush(&session);
        }
        let mut copy = stanza.clone();
        if copy.attribute("to").is_none() {
            // A stanza serialised once for many sessions comes unaddressed
            // (`Server::deliver_shared_to`); the held copy is this session's.
            copy.put_attr("to", full.as_str());
        }
        buffer.hold(sender, copy);
        Outcome::Handled
    }

    async fn on_client_state(&self, server: &Server, full: &Jid, inactive: bool) {
        if inactive {
            return;
        }
        let Some(session) = server.router().session(full) else {
            self.held.lock().remove(full);
            return;
        };
        let mut held = self.held.lock();
        if let Some(mut buffer) = held.remove(full) {
            buffer.flush(&session);
        }
    }

    async fn on_session(&self, _server: &Server, event: &SessionEvent) {
        if let SessionEvent::Ended(full) = event {
            self.held.lock().remove(full);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn el(xml: &str) -> Element {
        xml.parse().unwrap()
    }

    #[test]
    fn classifies_stanzas() {
        assert!(is_availability(&el("<presence xmlns='jabber:client'/>")));
        assert!(is_availability(&el(
            "<presence xmlns='jabber:client' type='unavailable'/>"
        )));
        assert!(!is_availability(&el(
            "<presence xmlns='jabber:client' type='subscribe'/>"
        )));
    }

    #[test]
    fn keeps_the_latest_per_sender_and_flushes_when_full() {
        let (handle, mut inbox) = SessionHandle::new(MAX_HELD + 10);
        let mut held = Held::default();
        held.hold(
            "a@x/1".into(),
            el("<presence xmlns='jabber:client' id='1'/>"),
        );
        held.hold(
            "a@x/1".into(),
            el("<presence xmlns='jabber:client' id='2'/>"),
        );
        assert_eq!(held.order.len(), 1);
        for i in 0..MAX_HELD {
            held.hold(format!("b{i}@x/r"), el("<presence xmlns='jabber:client'/>"));
        }
        assert!(held.is_full_for("new@x/r"));
        assert!(!held.is_full_for("a@x/1"));
        held.flush(&handle);
        assert!(held.order.is_empty() && held.index.is_empty());
        let Ok(starling_core::Outbound::Stanza(first)) = inbox.rx.try_recv() else {
            panic!("flushed presence")
        };
        assert_eq!(first.attribute("id"), Some("2"));
    }
}

/// XEP-0085 chat states.
const NS_CHATSTATES: &str = "http://jabber.org/protocol/chatstates";
/// XEP-0334 message processing hints.
const NS_HINTS: &str = "urn:xmpp:hints";

/// A message that carries nothing but chat-state notifications (plus threads and hints).
fn is_standalone_chat_state(stanza: &Element) -> bool {
    if stanza.name() != "message" || stanza.attribute("type") == Some("error") {
        return false;
    }
    let mut has_state = false;
    for child in stanza.children() {
        let child_ns = child.ns();
        if child_ns == NS_CHATSTATES {
            has_state = true;
        } else if !(child_ns == NS_HINTS || (child_ns == ns::CLIENT && child.name() == "thread")) {
            return false;
        }
    }
    has_state
}

#[cfg(test)]
mod chat_state_tests {
    use super::*;

    #[test]
    fn only_bare_chat_states_are_standalone() {
        let parse = |s: &str| s.parse::<Element>().unwrap();
        assert!(is_standalone_chat_state(&parse(
            "<message xmlns='jabber:client' type='chat'><composing xmlns='http://jabber.org/protocol/chatstates'/><thread>t</thread></message>"
        )));
        assert!(!is_standalone_chat_state(&parse(
            "<message xmlns='jabber:client' type='chat'><body>hi</body><active xmlns='http://jabber.org/protocol/chatstates'/></message>"
        )));
        assert!(!is_standalone_chat_state(&parse(
            "<message xmlns='jabber:client' type='chat'><thread>t</thread></message>"
        )));
        assert!(!is_standalone_chat_state(&parse(
            "<message xmlns='jabber:client' type='error'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>"
        )));
    }
}
