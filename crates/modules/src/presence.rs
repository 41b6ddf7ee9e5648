//! Presence: RFC 6121 §4 — initial presence (§4.2) with probes to the contacts the user is
//! subscribed to and answers to probes (§4.3), subsequent presence (§4.4), unavailable
//! presence (§4.5, also when a session ends), directed presence and the unavailable that
//! undoes it (§4.6). Priority (§4.7.2.3) is recorded by the router for message delivery.
//!
//! What it owns: the last available presence of each session and the set of entities each
//! session sent directed presence to (in memory: presence does not survive a restart, and a
//! restart ends every session anyway). Who may see the user's presence comes from the roster
//! ([`crate::roster::store::RosterStore`]): contacts with a `from` or `both` subscription, the
//! user's own resources (one is implicitly subscribed to oneself, §4.2.2), and entities that
//! received directed presence. Nobody else ever gets it: probes from anyone else are answered
//! with `unsubscribed` (§4.3.2).
//!
//! What it does not: subscriptions ([`crate::roster`]) and offline messages (the offline
//! module, which also hooks the first available presence and runs after this one).
//!
//! Probes go out from the full JID of the resource that became available (as Prosody does),
//! so the answers reach that resource only.

use starling_proto::Attr;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use async_trait::async_trait;
use minidom::Element;
use parking_lot::Mutex;
use starling_core::module::SessionEvent;
use starling_core::xml::{BuilderExt, ElementExt};
use starling_core::{Hook, HookContext, Module, Outcome, Server};
use starling_proto::jid::Jid;
use starling_proto::ns;

use crate::roster::item::RosterItem;
use crate::roster::store::RosterStore;

/// Most entities one session's directed presence is remembered for (DESIGN principle 3);
/// beyond it new recipients are not tracked and get no `unavailable` at logoff.
const MAX_DIRECTED: usize = 1000;

/// What the server remembers about one session's presence.
/// A presence kept for a session while it is online, serialised: as a minidom tree (its
/// attributes in B-tree maps) a presence took about 900 bytes per copy, and every available
/// session keeps its last one for probes, new subscribers and privacy changes, which are rare
/// next to the memory an idle session holds (docs/capacity.md). Parsed again when used.
#[derive(Debug, Clone)]
pub(crate) struct StoredPresence(Box<str>);

impl StoredPresence {
    pub(crate) fn new(presence: &Element) -> StoredPresence {
        StoredPresence(starling_proto::writer::element_to_string(presence).into_boxed_str())
    }

    /// The presence again (our writer's output always parses; `None` would be a bug, logged).
    pub(crate) fn element(&self) -> Option<Element> {
        match self.0.parse::<Element>() {
            Ok(el) => Some(el),
            Err(e) => {
                tracing::error!(error = %e, "a stored presence does not parse");
                None
            }
        }
    }
}

#[derive(Debug, Default)]
struct SessionPresence {
    /// The last available presence broadcast by the session (stamped `from`, no `to`): sent
    /// again in answer to probes and to newly approved subscribers.
    last: Option<StoredPresence>,
    /// Entities that got directed presence from this session while they had no subscription
    /// (§4.6.1): they get `unavailable` when the session goes offline.
    directed: HashSet<Jid>,
}

/// The in-memory presence table, shared with the roster module.
#[derive(Debug, Default)]
pub struct PresenceState {
    /// Full JID -> its presence. Short synchronous critical sections only.
    sessions: Mutex<HashMap<Jid, SessionPresence>>,
}

impl PresenceState {
    fn set_last(&self, full: &Jid, presence: &Element) {
        let stored = StoredPresence::new(presence);
        self.sessions.lock().entry(full.clone()).or_default().last = Some(stored);
    }

    fn take(&self, full: &Jid) -> SessionPresence {
        self.sessions.lock().remove(full).unwrap_or_default()
    }

    fn note_directed(&self, full: &Jid, to: &Jid, available: bool) {
        let mut sessions = self.sessions.lock();
        if available {
            let directed = &mut sessions.entry(full.clone()).or_default().directed;
            if directed.len() < MAX_DIRECTED {
                directed.insert(to.clone());
            } else if !directed.contains(to) {
                tracing::warn!(session = %full, "too many directed presences to track");
            }
        } else if let Some(s) = sessions.get_mut(full) {
            s.directed.remove(to);
        }
    }

    /// The last presence of each available resource of `user`.
    fn available(&self, server: &Server, user: &Jid) -> Vec<(Jid, Element)> {
        let available: Vec<Jid> = server.router().with_resources(user, |list| {
            list.iter()
                .filter(|r| r.available)
                .map(|r| r.jid.clone())
                .collect()
        });
        let stored: Vec<(Jid, StoredPresence)> = {
            let sessions = self.sessions.lock();
            available
                .into_iter()
                .filter_map(|j| {
                    let last = sessions.get(&j)?.last.clone()?;
                    Some((j, last))
                })
                .collect()
        };
        stored
            .into_iter()
            .filter_map(|(j, last)| Some((j, last.element()?)))
            .collect()
    }
}

fn addressed(presence: &Element, to: &Jid) -> Element {
    let mut p = presence.clone();
    p.put_attr("to", to.as_str());
    p
}

fn unavailable(from: &Jid, to: &Jid) -> Element {
    Element::builder("presence", ns::CLIENT)
        .with_attr("from", from.as_str())
        .with_attr("to", to.as_str())
        .with_attr("type", "unavailable")
        .build()
}

/// Sends the current presence of each of `user`'s available resources to `to` (§3.1.5, and
/// probe answers §4.3.2). Returns how many were sent.
pub(crate) async fn send_current(
    server: &Server,
    state: &PresenceState,
    user: &Jid,
    to: &Jid,
) -> usize {
    let list = state.available(server, user);
    let n = list.len();
    for (_, presence) in list {
        server.route(addressed(&presence, to)).await;
    }
    n
}

/// Sends `unavailable` from each of `user`'s available resources to `to`, who just lost its
/// subscription (§3.2.2, §3.3.3).
pub(crate) async fn send_unavailable(server: &Server, state: &PresenceState, user: &Jid, to: &Jid) {
    for (full, _) in state.available(server, user) {
        server.route(unavailable(&full, to)).await;
    }
}

/// The presence module.
pub struct Presence {
    roster: Arc<RosterStore>,
    state: Arc<PresenceState>,
}

impl Presence {
    /// A presence module reading subscriptions from `roster`.
    pub fn new(roster: Arc<RosterStore>, state: Arc<PresenceState>) -> Presence {
        Presence { roster, state }
    }

    /// `user`'s roster; `keep`: a status change of an online user, worth keeping in memory
    /// ([`RosterStore::for_presence`]).
    async fn roster_of(&self, server: &Server, user: &Jid, keep: bool) -> Arc<[RosterItem]> {
        match self.roster.for_presence(server, user, keep).await {
            Ok(items) => items,
            Err(e) => {
                tracing::error!(error = %e, %user, "cannot read roster for presence");
                Arc::from([])
            }
        }
    }

    /// Delivers `presence` to each available resource of `user` (itself included: one is
    /// subscribed to oneself, §4.2.2, §4.4.2).
    async fn to_own_resources(&self, server: &Server, user: &Jid, presence: &Element) {
        let targets: Vec<_> = server.router().with_resources(user, |list| {
            list.iter()
                .filter(|r| r.available)
                .map(|r| (r.handle.clone(), r.jid.clone()))
                .collect()
        });
        for (handle, full) in targets {
            server
                .deliver_to(&handle, &full, addressed(presence, &full))
                .await;
        }
    }

    /// §4.2.2 (initial) and §4.4.2 (subsequent) available presence.
    async fn available(&self, server: &Server, from: &Jid, stanza: &Element, initial: bool) {
        let user = from.bare();
        let mut presence = stanza.clone();
        presence.remove_attr("to");
        self.state.set_last(from, &presence);
        let items = self.roster_of(server, &user, !initial).await;
        if initial {
            for item in items.iter().filter(|i| i.sub.state.to()) {
                let probe = Element::builder("presence", ns::CLIENT)
                    .with_attr("from", from.as_str())
                    .with_attr("to", item.jid.as_str())
                    .with_attr("type", "probe")
                    .build();
                server.route(probe).await;
            }
        }
        for item in items.iter().filter(|i| i.sub.state.from()) {
            server.route(addressed(&presence, &item.jid)).await;
        }
        self.to_own_resources(server, &user, &presence).await;
        if initial {
            let Some(session) = server.router().session(from) else {
                return;
            };
            // The new resource learns about the user's other available resources...
            for (full, other) in self.state.available(server, &user) {
                if full != *from {
                    server
                        .deliver_to(&session, from, addressed(&other, from))
                        .await;
                }
            }
            // ...and gets every subscription request still waiting for an answer (§3.1.3).
            for item in items.iter() {
                if let Some(request) = item
                    .request
                    .as_ref()
                    .filter(|_| item.sub.state.pending_in())
                {
                    server.deliver_to(&session, from, request.clone()).await;
                }
            }
        }
    }

    /// §4.5.2: unavailable presence, to subscribers, own resources and directed recipients.
    async fn unavailable(&self, server: &Server, from: &Jid, stanza: &Element) {
        let user = from.bare();
        let mut presence = stanza.clone();
        presence.remove_attr("to");
        let gone = self.state.take(from);
        let mut told = HashSet::new();
        if gone.last.is_some() {
            for item in self.roster_of(server, &user, false).await.iter() {
                if item.sub.state.from() {
                    server.route(addressed(&presence, &item.jid)).await;
                    told.insert(item.jid.clone());
                }
            }
            self.to_own_resources(server, &user, &presence).await;
        }
        for to in gone.directed {
            if !told.contains(&to) {
                server.route(addressed(&presence, &to)).await;
            }
        }
    }

    /// §4.6.2: directed presence from a client; remembered when the recipient has no
    /// subscription, so that it can be undone at logoff.
    async fn directed(&self, server: &Server, stanza: &Element) {
        let available = match stanza.attribute("type") {
            None => true,
            Some("unavailable") => false,
            _ => return,
        };
        let (Some(from), Some(to)) = (stanza.jid_attribute("from"), stanza.jid_attribute("to"))
        else {
            return;
        };
        let user = from.bare();
        if to.bare() == user {
            return;
        }
        if available {
            let subscribed = match self
                .roster
                .get_for_presence(server, &user, &to.bare())
                .await
            {
                Ok(item) => item.is_some_and(|i| i.sub.state.from()),
                Err(e) => {
                    tracing::error!(error = %e, "cannot read roster for directed presence");
                    false
                }
            };
            if subscribed {
                return;
            }
        }
        self.state.note_directed(&from, &to, available);
    }

    /// §4.3.2: a probe for a local user.
    async fn probe(&self, server: &Server, stanza: &Element) {
        let (Some(prober), Some(to)) = (stanza.jid_attribute("from"), stanza.jid_attribute("to"))
        else {
            return;
        };
        let contact = to.bare();
        let asker = prober.bare();
        let subscribed = asker == contact
            || match self.roster.get_for_presence(server, &contact, &asker).await {
                Ok(item) => item.is_some_and(|i| i.sub.state.from()),
                Err(e) => {
                    tracing::error!(error = %e, "cannot read roster for probe");
                    return;
                }
            };
        if !subscribed {
            // §4.3.2: no subscription (or no such account): `unsubscribed`, which lets the
            // asker's server resynchronise. Nothing about presence leaks.
            let reply = Element::builder("presence", ns::CLIENT)
                .with_attr("from", contact.as_str())
                .with_attr("to", asker.as_str())
                .with_attr("type", "unsubscribed")
                .build();
            server.route(reply).await;
            return;
        }
        if send_current(server, &self.state, &contact, &prober).await == 0 {
            server.route(unavailable(&contact, &prober)).await;
        }
    }
}

#[async_trait]
impl Module for Presence {
    fn name(&self) -> &'static str {
        "presence"
    }

    fn hooks(&self) -> Vec<Hook> {
        vec![Hook::Broadcast, Hook::Outbound, Hook::Account]
    }

    async fn on_stanza(
        &self,
        server: &Server,
        stanza: &Element,
        hook: Hook,
        ctx: HookContext<'_>,
    ) -> Outcome {
        if stanza.name() != "presence" {
            return Outcome::Pass;
        }
        match hook {
            Hook::Broadcast => {
                let Some(from) = stanza.jid_attribute("from") else {
                    return Outcome::Pass;
                };
                match stanza.attribute("type") {
                    None => self.available(server, &from, stanza, ctx.initial).await,
                    Some("unavailable") => self.unavailable(server, &from, stanza).await,
                    _ => {}
                }
                // Later modules (offline delivery) still see the broadcast.
                Outcome::Pass
            }
            Hook::Outbound => {
                self.directed(server, stanza).await;
                Outcome::Pass
            }
            Hook::Account if stanza.attribute("type") == Some("probe") => {
                self.probe(server, stanza).await;
                Outcome::Handled
            }
            _ => Outcome::Pass,
        }
    }

    async fn on_session(&self, server: &Server, event: &SessionEvent) {
        let SessionEvent::Ended(full) = event else {
            return;
        };
        if server.router().session(full).is_some() {
            // A newer session took over this full JID; the state is its own.
            return;
        }
        let user = full.bare();
        if server.router().with_resources(&user, |r| r.is_empty()) {
            self.roster.forget(&user);
        }
        // Normally the unavailable broadcast at session end already cleared this; a session
        // that only ever sent directed presence still owes its recipients an unavailable.
        let gone = self.state.take(full);
        for to in gone.directed {
            server.route(unavailable(full, &to)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_presence_is_the_same_presence_and_smaller() {
        let p: Element = "<presence xmlns='jabber:client' from='juliet@capulet.lit/balcony'>\
            <show>away</show><status>a &lt;b&gt; &amp; c'</status><priority>5</priority>\
            <c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='https://gajim.org' \
            ver='QgayPKawpkPSDYmwT/WM94uAlu0='/></presence>"
            .parse()
            .unwrap();
        let stored = StoredPresence::new(&p);
        assert_eq!(stored.element(), Some(p.clone()));
        assert!(stored.0.len() < 400, "{} bytes", stored.0.len());
    }
}
