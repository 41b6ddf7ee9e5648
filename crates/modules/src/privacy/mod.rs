//! Privacy lists (XEP-0016, RFC 3921 §10) and blocking (XEP-0191): two protocols over one
//! store and one rule engine ([`rules`]).
//!
//! What it owns:
//! - Storage: each list in the map `privacy` (key = list name, value = the `<list/>`
//!   element), the default list's name in the key-value store `privacy-default`.
//!   Per XEP-0191 §5 the blocklist *is* the default list's `jid`+`deny`+all-stanzas items:
//!   a block command edits the default list (creating one named `blocklist` if the user has
//!   none), so changes made through either protocol show in the other.
//! - Enforcement, which XEP-0016 §2.2 rule 4 puts before every other delivery rule (this
//!   module must come first in the module list):
//!   - [`Hook::Outbound`]: what a client sends. A denied stanza is answered with
//!     `not-acceptable` (XEP-0016 §2.12), with XEP-0191's `<blocked/>` when the denying item
//!     is a blocklist entry (XEP-0191 §3.3).
//!   - [`Hook::Account`]: what arrives for an account before the roster and presence modules
//!     see it. Dropped when every list that applies (each available session's, or the
//!     default list when none is available) denies it: messages bounce with
//!     `service-unavailable`, presence vanishes silently (XEP-0016 §2.12, XEP-0191 §3.3).
//!     Presence *from* a local user (broadcasts, probes: the server generates them, so they
//!     never cross the outbound hook) is checked against the sender's lists here too.
//!   - [`Hook::Delivery`]: per session, the session's active list or else the default list
//!     (§2.2 rules 1–2), and for presence the local sender's list (`presence-out`).
//! - Pushes: privacy list pushes to every connected resource when a list changes through
//!   XEP-0016 (§2.2 rule 10), block/unblock pushes to the resources that asked for the
//!   blocklist (XEP-0191 §3.3–§3.5).
//! - Presence consequences of a change (XEP-0016 §2.7–§2.8, XEP-0191 §3.3–§3.4): a contact
//!   with a subscription that loses the user's presence gets `unavailable`; one that regains
//!   it gets the current presence; the user's sessions get `unavailable` from contacts they
//!   stop hearing, and probe those they hear again.
//!
//! IQ get/set addressed to the account's bare JID (vCard, PEP ...) cross [`Hook::Account`]
//! before the server answers them, so `<iq/>` items and blocks stop those too.
//!
//! What it does not: directed presence (§4.6 of RFC 6121) is not revisited when a list
//! changes. Lists naming groups or subscriptions read the roster from storage per stanza.

pub mod rules;
mod sessions;

use starling_proto::Attr;
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use minidom::Element;
use parking_lot::RwLock;
use starling_core::module::{IqRequest, IqResponse, SessionEvent};
use starling_core::xml::{BuilderExt, ElementExt};
use starling_core::{Hook, HookContext, Module, Outcome, Server};
use starling_proto::error::{error_reply, StanzaError, StanzaErrorCondition as Cond};
use starling_proto::jid::Jid;
use starling_proto::ns;
use starling_proto::stanza::IqType;
use starling_storage::StorageError;

use crate::presence::StoredPresence;
use crate::roster::item::{RosterItem, STORE as ROSTER_STORE};
use rules::{Contact, Decision, Kind, ListError, PrivacyList, Rule, Subscription, NS_PRIVACY};
use sessions::Sessions;

/// The blocking namespace (XEP-0191).
pub const NS_BLOCKING: &str = "urn:xmpp:blocking";
/// XEP-0191's application error namespace.
pub const NS_BLOCKING_ERRORS: &str = "urn:xmpp:blocking:errors";
/// Storage map of lists, keyed by name.
const LISTS: &str = "privacy";
/// Key-value store holding the default list's name.
const DEFAULT: &str = "privacy-default";
/// The list a first block command creates when the user has no default list.
const BLOCKLIST_NAME: &str = "blocklist";
/// Most lists one user may keep (DESIGN principle 3).
const MAX_LISTS: u64 = 64;
/// Lock stripes serialising changes per user.
const STRIPES: usize = 64;

/// The privacy lists and blocking module.
pub struct Privacy {
    /// Bare JID -> what is known about the user while it has sessions: the default list and
    /// each session's active list, so that enforcement costs no storage round trip.
    users: RwLock<HashMap<Jid, UserCache>>,
    /// Every change to one user's lists runs under that user's stripe: a read-modify-write
    /// against storage plus the cache update (held across storage awaits on purpose, never
    /// across routing that could come back into this module for the same user's lock).
    stripes: Box<[tokio::sync::Mutex<()>]>,
    hasher: RandomState,
    /// Source of push ids.
    next_push: AtomicU64,
}

#[derive(Default)]
struct UserCache {
    /// The default list, if the user has one.
    default: Option<Arc<PrivacyList>>,
    /// Connected sessions by full JID.
    sessions: Sessions<SessionState>,
}

#[derive(Default)]
struct SessionState {
    /// The session's active list (XEP-0016 §2.4); `None` means the default list applies.
    active: Option<Arc<PrivacyList>>,
    /// The session asked for the blocklist, so it gets block/unblock pushes (XEP-0191 §3.3).
    blocklist_requested: bool,
    /// The session spoke `jabber:iq:privacy`: it gets list pushes for blocking edits too.
    privacy_used: bool,
    /// The session's last available presence, sent again to a contact that regains access.
    last_presence: Option<StoredPresence>,
}

impl UserCache {
    fn effective(&self, session: Option<&Jid>) -> Option<Arc<PrivacyList>> {
        session
            .and_then(|s| self.sessions.get(s))
            .and_then(|s| s.active.clone())
            .or_else(|| self.default.clone())
    }
}

impl Default for Privacy {
    fn default() -> Self {
        Privacy {
            users: RwLock::new(HashMap::new()),
            stripes: (0..STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
            hasher: RandomState::new(),
            next_push: AtomicU64::new(1),
        }
    }
}

fn internal(e: StorageError) -> StanzaError {
    tracing::error!(error = %e, "privacy storage error");
    StanzaError::new(Cond::InternalServerError)
}

fn split(user: &Jid) -> (&str, &str) {
    (user.domain(), user.node().unwrap_or_default())
}

/// Traffic with oneself and with one's own server is never filtered (XEP-0016 §2.1 note:
/// never between a user's resources; the server's own answers and pushes must get through).
fn exempt(user: &Jid, other: &Jid) -> bool {
    other.bare() == *user
        || (other.node().is_none() && other.resource().is_none() && other.domain() == user.domain())
}

fn from_jid(stanza: &Element) -> Option<Jid> {
    stanza.jid_attribute("from")
}

fn to_jid(stanza: &Element) -> Option<Jid> {
    stanza.jid_attribute("to")
}

fn unavailable(from: &Jid, to: &Jid) -> Element {
    Element::builder("presence", ns::CLIENT)
        .with_attr("from", from.as_str())
        .with_attr("to", to.as_str())
        .with_attr("type", "unavailable")
        .build()
}

/// What a list change means for presence: some things to send while the old lists are
/// still in force (so the filters let them pass), others once the new ones are.
#[derive(Default)]
struct PresencePlan {
    before: Vec<Element>,
    /// (session, stanza) pairs delivered straight to one of the user's sessions.
    before_local: Vec<(Jid, Element)>,
    after: Vec<Element>,
}

impl Privacy {
    async fn lock(&self, user: &Jid) -> tokio::sync::MutexGuard<'_, ()> {
        let h = self.hasher.hash_one(user);
        self.stripes[(h as usize) % STRIPES].lock().await
    }

    // ---- storage ----

    async fn load_list(
        &self,
        server: &Server,
        user: &Jid,
        name: &str,
    ) -> Result<Option<PrivacyList>, StorageError> {
        let (domain, node) = split(user);
        let Some(bytes) = server.storage().map_get(domain, node, LISTS, name).await? else {
            return Ok(None);
        };
        let parsed = std::str::from_utf8(&bytes)
            .ok()
            .and_then(|s| s.parse::<Element>().ok())
            .and_then(|el| PrivacyList::from_element(&el).ok());
        if parsed.is_none() {
            tracing::warn!(%user, list = name, "unreadable privacy list ignored");
        }
        Ok(parsed)
    }

    async fn default_name(
        &self,
        server: &Server,
        user: &Jid,
    ) -> Result<Option<String>, StorageError> {
        let (domain, node) = split(user);
        Ok(server
            .storage()
            .kv_get(domain, node, DEFAULT)
            .await?
            .and_then(|v| String::from_utf8(v).ok()))
    }

    async fn load_default(
        &self,
        server: &Server,
        user: &Jid,
    ) -> Result<Option<PrivacyList>, StorageError> {
        match self.default_name(server, user).await? {
            Some(name) => self.load_list(server, user, &name).await,
            None => Ok(None),
        }
    }

    async fn save_list(
        &self,
        server: &Server,
        user: &Jid,
        list: &PrivacyList,
    ) -> Result<(), StorageError> {
        let (domain, node) = split(user);
        let mut bytes = Vec::new();
        starling_proto::writer::write_element(&list.to_element(), &mut bytes);
        server
            .storage()
            .map_set(domain, node, LISTS, list.name(), &bytes)
            .await
    }

    async fn set_default_name(
        &self,
        server: &Server,
        user: &Jid,
        name: Option<&str>,
    ) -> Result<(), StorageError> {
        let (domain, node) = split(user);
        match name {
            Some(n) => {
                server
                    .storage()
                    .kv_set(domain, node, DEFAULT, n.as_bytes())
                    .await
            }
            None => server.storage().kv_delete(domain, node, DEFAULT).await,
        }
    }

    async fn roster(&self, server: &Server, user: &Jid) -> Vec<RosterItem> {
        let (domain, node) = split(user);
        match server.storage().map_all(domain, node, ROSTER_STORE).await {
            Ok(rows) => rows
                .into_iter()
                .filter_map(|(_, v)| RosterItem::decode(&v))
                .collect(),
            Err(e) => {
                tracing::error!(error = %e, "privacy: reading the roster failed");
                Vec::new()
            }
        }
    }

    /// What `user`'s roster says about `other`.
    async fn contact(&self, server: &Server, user: &Jid, other: &Jid) -> Contact {
        let (domain, node) = split(user);
        let item = server
            .storage()
            .map_get(domain, node, ROSTER_STORE, other.bare().as_str())
            .await
            .ok()
            .flatten()
            .and_then(|v| RosterItem::decode(&v));
        item.map(|i| contact_of(&i)).unwrap_or_default()
    }

    // ---- evaluation ----

    /// The list that applies to `session` of `user` (or to the user as a whole), from the
    /// cache when the user is online, from storage otherwise.
    async fn effective(
        &self,
        server: &Server,
        user: &Jid,
        session: Option<&Jid>,
    ) -> Option<Arc<PrivacyList>> {
        if let Some(cache) = self.users.read().get(user) {
            return cache.effective(session);
        }
        match self.load_default(server, user).await {
            Ok(l) => l.map(Arc::new),
            Err(e) => {
                tracing::error!(error = %e, "privacy: loading the default list failed");
                None
            }
        }
    }

    async fn decide(
        &self,
        server: &Server,
        list: &PrivacyList,
        user: &Jid,
        kind: Kind,
        other: &Jid,
    ) -> Decision {
        if exempt(user, other) {
            return Decision::Allow;
        }
        let contact = if list.needs_roster() {
            self.contact(server, user, other).await
        } else {
            Contact::default()
        };
        list.decide(kind, other, &contact)
    }

    /// Whether `user` (optionally one session) may send `stanza` to `other`.
    async fn outbound_decision(
        &self,
        server: &Server,
        sender: &Jid,
        stanza: &Element,
        other: &Jid,
    ) -> Decision {
        let user = sender.bare();
        let session = sender.resource().is_some().then_some(sender);
        match self.effective(server, &user, session).await {
            Some(list) => {
                self.decide(server, &list, &user, Kind::outbound(stanza), other)
                    .await
            }
            None => Decision::Allow,
        }
    }

    fn is_local_user(server: &Server, jid: &Jid) -> bool {
        jid.node().is_some() && server.config().is_local_host(jid.domain())
    }

    // ---- hooks ----

    async fn on_outbound(&self, server: &Server, stanza: &Element) -> Outcome {
        // These hooks run for every stanza; most users have no lists, which the cache answers
        // before the other address is parsed (JID parsing was most of this module's 7.7% of
        // the server's CPU in `bench chat`, perf).
        let Some(from) = from_jid(stanza) else {
            return Outcome::Pass;
        };
        if self.has_no_lists(&from.bare()) {
            return Outcome::Pass;
        }
        let Some(to) = to_jid(stanza) else {
            return Outcome::Pass;
        };
        let Decision::Deny { blocked } = self.outbound_decision(server, &from, stanza, &to).await
        else {
            return Outcome::Pass;
        };
        let answerable = match stanza.name() {
            "iq" => matches!(stanza.attribute("type"), Some("get" | "set")),
            _ => stanza.attribute("type") != Some("error"),
        };
        if answerable {
            // XEP-0016 §2.12 / XEP-0191 §3.3. Delivered straight to the sender's session: it
            // comes "from" the blocked contact, which the delivery filter would stop.
            let mut err = StanzaError::new(Cond::NotAcceptable);
            err.type_ = starling_proto::error::ErrorType::Cancel;
            if let Some(mut reply) = error_reply(stanza, &err) {
                if blocked {
                    if let Some(e) = reply
                        .children_mut()
                        .find(|c| c.name() == "error" && c.ns() == ns::CLIENT)
                    {
                        e.append_child(Element::bare("blocked", NS_BLOCKING_ERRORS));
                    }
                }
                if let Some(session) = server.router().session(&from) {
                    let _ = session.deliver(reply);
                }
            }
        }
        Outcome::Handled
    }

    async fn on_account(&self, server: &Server, stanza: &Element) -> Outcome {
        let Some(to) = to_jid(stanza) else {
            return Outcome::Pass;
        };
        let user = to.bare();
        let no_lists = self.has_no_lists(&user);
        // Only presence has a sender's side to check below.
        if no_lists && stanza.name() != "presence" {
            return Outcome::Pass;
        }
        let Some(from) = from_jid(stanza) else {
            return Outcome::Pass;
        };
        if exempt(&user, &from) {
            return Outcome::Pass;
        }
        if !no_lists {
            if let Some(outcome) = self.recipient_denies(server, stanza, &user, &from).await {
                return outcome;
            }
        }
        // The sender's side, for presence the server generated on a local user's behalf.
        if stanza.name() == "presence"
            && Self::is_local_user(server, &from)
            && matches!(
                self.outbound_decision(server, &from, stanza, &to).await,
                Decision::Deny { .. }
            )
        {
            return Outcome::Handled;
        }
        Outcome::Pass
    }

    /// The fast path: `user` is online and neither has a default list nor an active one in
    /// any session (false when not cached: then storage decides).
    fn has_no_lists(&self, user: &Jid) -> bool {
        self.users
            .read()
            .get(user)
            .is_some_and(|u| u.default.is_none() && u.sessions.values().all(|s| s.active.is_none()))
    }

    /// The recipient's side of [`Self::on_account`]: `Some(Handled)` when every list that
    /// could apply denies the stanza (after bouncing a message).
    async fn recipient_denies(
        &self,
        server: &Server,
        stanza: &Element,
        user: &Jid,
        from: &Jid,
    ) -> Option<Outcome> {
        let available: Vec<Jid> = server.router().with_resources(user, |list| {
            list.iter()
                .filter(|r| r.available)
                .map(|r| r.jid.clone())
                .collect()
        });
        let lists: Vec<Option<Arc<PrivacyList>>> = if available.is_empty() {
            vec![self.effective(server, user, None).await]
        } else {
            let mut v = Vec::with_capacity(available.len());
            for s in &available {
                v.push(self.effective(server, user, Some(s)).await);
            }
            v
        };
        let kind = Kind::inbound(stanza);
        let mut denied = true;
        for list in &lists {
            match list {
                None => {
                    denied = false;
                    break;
                }
                Some(l) => {
                    if self.decide(server, l, user, kind, from).await == Decision::Allow {
                        denied = false;
                        break;
                    }
                }
            }
        }
        if denied {
            // Messages and IQ requests bounce (XEP-0016 §2.10, XEP-0191 §3.3:
            // service-unavailable, as if the user did not exist); presence vanishes.
            let bounces = match stanza.name() {
                "message" => stanza.attribute("type") != Some("error"),
                "iq" => matches!(stanza.attribute("type"), Some("get" | "set")),
                _ => false,
            };
            if bounces {
                server.bounce(stanza, Cond::ServiceUnavailable).await;
            }
            return Some(Outcome::Handled);
        }
        None
    }

    async fn on_delivery(&self, server: &Server, stanza: &Element, session: &Jid) -> Outcome {
        let user = session.bare();
        if stanza.name() != "presence" && self.has_no_lists(&user) {
            return Outcome::Pass;
        }
        let Some(from) = from_jid(stanza) else {
            return Outcome::Pass;
        };
        if exempt(&user, &from) {
            return Outcome::Pass;
        }
        if let Some(list) = self.effective(server, &user, Some(session)).await {
            if let Decision::Deny { .. } = self
                .decide(server, &list, &user, Kind::inbound(stanza), &from)
                .await
            {
                return Outcome::Handled;
            }
        }
        if stanza.name() == "presence"
            && Self::is_local_user(server, &from)
            && matches!(
                self.outbound_decision(server, &from, stanza, session).await,
                Decision::Deny { .. }
            )
        {
            return Outcome::Handled;
        }
        Outcome::Pass
    }

    fn on_broadcast(&self, stanza: &Element) {
        let Some(from) = from_jid(stanza) else { return };
        let available = match stanza.attribute("type") {
            None => true,
            Some("unavailable") => false,
            _ => return,
        };
        let mut users = self.users.write();
        if let Some(s) = users
            .get_mut(&from.bare())
            .and_then(|u| u.sessions.get_mut(&from))
        {
            s.last_presence = available.then(|| {
                let mut p = stanza.clone();
                p.remove_attr("to");
                StoredPresence::new(&p)
            });
        }
    }

    // ---- cache ----

    /// Makes sure `user` is cached (loading the default list) and `session` registered.
    async fn ensure_session(&self, server: &Server, session: &Jid) {
        let user = session.bare();
        if let Some(u) = self.users.write().get_mut(&user) {
            u.sessions.get_or_default(session);
            return;
        }
        let _g = self.lock(&user).await;
        let default = match self.load_default(server, &user).await {
            Ok(l) => l.map(Arc::new),
            Err(e) => {
                tracing::error!(error = %e, "privacy: loading the default list failed");
                None
            }
        };
        let mut users = self.users.write();
        let u = users.entry(user).or_insert_with(|| UserCache {
            default,
            sessions: Sessions::default(),
        });
        u.sessions.get_or_default(session);
    }

    fn with_session<R>(&self, session: &Jid, f: impl FnOnce(&mut SessionState) -> R) -> Option<R> {
        let mut users = self.users.write();
        users
            .get_mut(&session.bare())
            .and_then(|u| u.sessions.get_mut(session))
            .map(f)
    }

    /// Applies a stored change to the cache: `list` (by name) replaces the default and every
    /// session's active list of that name; `default` changes which list is the default.
    fn cache_list(
        &self,
        user: &Jid,
        name: &str,
        list: Option<Arc<PrivacyList>>,
        default: DefaultChange,
    ) {
        let mut users = self.users.write();
        let Some(u) = users.get_mut(user) else { return };
        if u.default.as_ref().is_some_and(|d| d.name() == name) {
            u.default = list.clone();
        }
        for s in u.sessions.values_mut() {
            if s.active.as_ref().is_some_and(|a| a.name() == name) {
                s.active = list.clone();
            }
        }
        match default {
            DefaultChange::Keep => {}
            DefaultChange::Set(d) => u.default = d,
        }
    }

    /// Available sessions of `user` whose effective list is the default one, and of those the
    /// one named `name` is active in.
    fn sessions_using(
        &self,
        server: &Server,
        user: &Jid,
        default: bool,
        name: Option<&str>,
    ) -> Vec<Jid> {
        let available: Vec<Jid> = server.router().with_resources(user, |list| {
            list.iter()
                .filter(|r| r.available)
                .map(|r| r.jid.clone())
                .collect()
        });
        let users = self.users.read();
        let Some(u) = users.get(user) else {
            return Vec::new();
        };
        available
            .into_iter()
            .filter(|j| {
                let active = u.sessions.get(j).and_then(|s| s.active.as_ref());
                match active {
                    None => default,
                    Some(a) => name.is_some_and(|n| a.name() == n),
                }
            })
            .collect()
    }

    // ---- presence consequences ----

    /// What must be sent when `sessions` switch from `old` to `new` (XEP-0016 §2.7–§2.8 notes,
    /// XEP-0191 §3.3–§3.4), limited to contacts with a subscription.
    async fn presence_plan(
        &self,
        server: &Server,
        user: &Jid,
        old: Option<&PrivacyList>,
        new: Option<&PrivacyList>,
        sessions: &[Jid],
    ) -> PresencePlan {
        let mut plan = PresencePlan::default();
        if sessions.is_empty() || old == new {
            return plan;
        }
        let allows = |l: Option<&PrivacyList>, kind, jid: &Jid, c: &Contact| {
            l.is_none_or(|l| exempt(user, jid) || l.decide(kind, jid, c) == Decision::Allow)
        };
        let stored: Vec<(Jid, StoredPresence)> = {
            let users = self.users.read();
            users
                .get(user)
                .map(|u| {
                    sessions
                        .iter()
                        .filter_map(|s| {
                            Some((s.clone(), u.sessions.get(s)?.last_presence.clone()?))
                        })
                        .collect()
                })
                .unwrap_or_default()
        };
        let last: HashMap<Jid, Element> = stored
            .into_iter()
            .filter_map(|(s, p)| Some((s, p.element()?)))
            .collect();
        for item in self.roster(server, user).await {
            let c = contact_of(&item);
            let state = item.sub.state;
            if state.from() {
                let was = allows(old, Kind::PresenceOut, &item.jid, &c);
                let is = allows(new, Kind::PresenceOut, &item.jid, &c);
                for s in sessions {
                    if was && !is {
                        plan.before.push(unavailable(s, &item.jid));
                    } else if !was && is {
                        if let Some(p) = last.get(s) {
                            let mut p = p.clone();
                            p.put_attr("to", item.jid.as_str());
                            plan.after.push(p);
                        }
                    }
                }
            }
            if state.to() {
                let was = allows(old, Kind::PresenceIn, &item.jid, &c);
                let is = allows(new, Kind::PresenceIn, &item.jid, &c);
                if was && !is {
                    let contact_resources: Vec<Jid> =
                        server.router().with_resources(&item.jid, |l| {
                            l.iter()
                                .filter(|r| r.available)
                                .map(|r| r.jid.clone())
                                .collect()
                        });
                    for s in sessions {
                        for cr in &contact_resources {
                            plan.before_local.push((s.clone(), unavailable(cr, s)));
                        }
                    }
                } else if !was && is {
                    for s in sessions {
                        plan.after.push(
                            Element::builder("presence", ns::CLIENT)
                                .with_attr("from", s.as_str())
                                .with_attr("to", item.jid.as_str())
                                .with_attr("type", "probe")
                                .build(),
                        );
                    }
                }
            }
        }
        plan
    }

    async fn run_before(server: &Server, plan: &mut PresencePlan) {
        for p in std::mem::take(&mut plan.before) {
            server.route(p).await;
        }
        for (s, p) in std::mem::take(&mut plan.before_local) {
            if let Some(h) = server.router().session(&s) {
                server.deliver_to(&h, &s, p).await;
            }
        }
    }

    async fn run_after(server: &Server, plan: PresencePlan) {
        for p in plan.after {
            server.route(p).await;
        }
    }

    // ---- pushes ----

    fn push(&self, user: &Jid, to: &Jid, payload: Element) -> Element {
        let n = self.next_push.fetch_add(1, Ordering::Relaxed);
        Element::builder("iq", ns::CLIENT)
            .with_attr("type", "set")
            .with_attr("id", format!("privacy-push-{n}"))
            .with_attr("from", user.as_str())
            .with_attr("to", to.as_str())
            .append(payload)
            .build()
    }

    async fn push_to(&self, server: &Server, user: &Jid, targets: Vec<Jid>, payload: &Element) {
        for full in targets {
            if let Some(h) = server.router().session(&full) {
                let iq = self.push(user, &full, payload.clone());
                server.deliver_to(&h, &full, iq).await;
            }
        }
    }

    /// XEP-0016 list push: to every connected resource, or only to those that spoke
    /// `jabber:iq:privacy` (edits made through the blocking protocol).
    async fn privacy_push(&self, server: &Server, user: &Jid, name: &str, all: bool) {
        let targets: Vec<Jid> = if all {
            server
                .router()
                .with_resources(user, |l| l.iter().map(|r| r.jid.clone()).collect())
        } else {
            let users = self.users.read();
            users
                .get(user)
                .map(|u| {
                    u.sessions
                        .iter()
                        .filter(|(_, s)| s.privacy_used)
                        .map(|(j, _)| j.clone())
                        .collect()
                })
                .unwrap_or_default()
        };
        let payload = Element::builder("query", NS_PRIVACY)
            .append(Element::builder("list", NS_PRIVACY).with_attr("name", name))
            .build();
        self.push_to(server, user, targets, &payload).await;
    }

    /// XEP-0191 block/unblock push to the resources that requested the blocklist.
    async fn blocking_push(&self, server: &Server, user: &Jid, payload: Element) {
        let targets: Vec<Jid> = {
            let users = self.users.read();
            users
                .get(user)
                .map(|u| {
                    u.sessions
                        .iter()
                        .filter(|(_, s)| s.blocklist_requested)
                        .map(|(j, _)| j.clone())
                        .collect()
                })
                .unwrap_or_default()
        };
        self.push_to(server, user, targets, &payload).await;
    }

    /// Block and unblock pushes for how the default list's blocklist view changed.
    async fn blocklist_diff_push(
        &self,
        server: &Server,
        user: &Jid,
        old: Option<&PrivacyList>,
        new: Option<&PrivacyList>,
    ) {
        let old_b = old.map(PrivacyList::blocked_jids).unwrap_or_default();
        let new_b = new.map(PrivacyList::blocked_jids).unwrap_or_default();
        let added: Vec<&Jid> = new_b.iter().filter(|j| !old_b.contains(j)).collect();
        let removed: Vec<&Jid> = old_b.iter().filter(|j| !new_b.contains(j)).collect();
        if !added.is_empty() {
            self.blocking_push(server, user, items_element("block", added))
                .await;
        }
        if !removed.is_empty() {
            self.blocking_push(server, user, items_element("unblock", removed))
                .await;
        }
    }
}

enum DefaultChange {
    Keep,
    Set(Option<Arc<PrivacyList>>),
}

fn contact_of(item: &RosterItem) -> Contact {
    Contact {
        subscription: Subscription::from_flags(item.sub.state.to(), item.sub.state.from()),
        groups: if item.listed {
            item.groups.clone()
        } else {
            Vec::new()
        },
    }
}

fn items_element<'a>(name: &str, jids: impl IntoIterator<Item = &'a Jid>) -> Element {
    let mut el = Element::bare(name, NS_BLOCKING);
    for j in jids {
        el.append_child(
            Element::builder("item", NS_BLOCKING)
                .with_attr("jid", j.as_str())
                .build(),
        );
    }
    el
}

fn bad_request(text: &str) -> StanzaError {
    StanzaError::with_text(Cond::BadRequest, text)
}

// ---- XEP-0016 protocol ----

impl Privacy {
    async fn privacy_iq(&self, server: &Server, iq: &IqRequest<'_>) -> IqResponse {
        let session = iq.from;
        let user = session.bare();
        self.ensure_session(server, session).await;
        self.with_session(session, |s| s.privacy_used = true);
        let children: Vec<&Element> = iq
            .payload
            .children()
            .filter(|c| c.ns() == NS_PRIVACY)
            .collect();
        match iq.kind {
            IqType::Get => match children.as_slice() {
                [] => self.list_names(server, &user, session).await,
                [one] if one.name() == "list" => {
                    let name = one
                        .attribute("name")
                        .ok_or_else(|| bad_request("list without a name"))?;
                    match self
                        .load_list(server, &user, name)
                        .await
                        .map_err(internal)?
                    {
                        Some(l) => Ok(Some(
                            Element::builder("query", NS_PRIVACY)
                                .append(l.to_element())
                                .build(),
                        )),
                        None => Err(StanzaError::new(Cond::ItemNotFound)),
                    }
                }
                _ => Err(bad_request("retrieve one list at a time")),
            },
            _ => {
                let [one] = children.as_slice() else {
                    return Err(bad_request("exactly one of active, default or list"));
                };
                match one.name() {
                    "active" => {
                        self.set_active(server, &user, session, one.attribute("name"))
                            .await
                    }
                    "default" => {
                        self.set_default(server, &user, session, one.attribute("name"))
                            .await
                    }
                    "list" => self.set_list(server, &user, session, one).await,
                    _ => Err(bad_request("unknown element")),
                }
            }
        }
    }

    async fn list_names(&self, server: &Server, user: &Jid, session: &Jid) -> IqResponse {
        let (domain, node) = split(user);
        let names = server
            .storage()
            .map_all(domain, node, LISTS)
            .await
            .map_err(internal)?;
        let default = self.default_name(server, user).await.map_err(internal)?;
        let active = {
            let users = self.users.read();
            users
                .get(user)
                .and_then(|u| u.sessions.get(session))
                .and_then(|s| s.active.as_ref().map(|a| a.name().to_owned()))
        };
        let mut q = Element::bare("query", NS_PRIVACY);
        if let Some(a) = active {
            q.append_child(
                Element::builder("active", NS_PRIVACY)
                    .with_attr("name", a)
                    .build(),
            );
        }
        if let Some(d) = default {
            q.append_child(
                Element::builder("default", NS_PRIVACY)
                    .with_attr("name", d)
                    .build(),
            );
        }
        for (name, _) in names {
            q.append_child(
                Element::builder("list", NS_PRIVACY)
                    .with_attr("name", name)
                    .build(),
            );
        }
        Ok(Some(q))
    }

    /// §2.4: set or decline the session's active list.
    async fn set_active(
        &self,
        server: &Server,
        user: &Jid,
        session: &Jid,
        name: Option<&str>,
    ) -> IqResponse {
        let _g = self.lock(user).await;
        let new = match name {
            Some(n) => Some(Arc::new(
                self.load_list(server, user, n)
                    .await
                    .map_err(internal)?
                    .ok_or_else(|| StanzaError::new(Cond::ItemNotFound))?,
            )),
            None => None,
        };
        let old = self.effective(server, user, Some(session)).await;
        let new_effective = new
            .clone()
            .or_else(|| self.users.read().get(user).and_then(|u| u.default.clone()));
        let available = server.router().session(session).is_some()
            && server
                .router()
                .with_resources(user, |l| l.iter().any(|r| r.jid == *session && r.available));
        let sessions = if available {
            vec![session.clone()]
        } else {
            Vec::new()
        };
        let mut plan = self
            .presence_plan(
                server,
                user,
                old.as_deref(),
                new_effective.as_deref(),
                &sessions,
            )
            .await;
        Self::run_before(server, &mut plan).await;
        self.with_session(session, |s| s.active = new);
        Self::run_after(server, plan).await;
        Ok(None)
    }

    /// Whether another connected session than `session` currently applies the default list.
    fn default_in_use_elsewhere(&self, server: &Server, user: &Jid, session: &Jid) -> bool {
        let connected: Vec<Jid> = server
            .router()
            .with_resources(user, |l| l.iter().map(|r| r.jid.clone()).collect());
        let users = self.users.read();
        let Some(u) = users.get(user) else {
            return false;
        };
        if u.default.is_none() {
            return false;
        }
        connected
            .iter()
            .filter(|j| *j != session)
            .any(|j| u.sessions.get(j).is_none_or(|s| s.active.is_none()))
    }

    /// Whether another connected session than `session` applies the list `name`.
    fn list_in_use_elsewhere(
        &self,
        server: &Server,
        user: &Jid,
        session: &Jid,
        name: &str,
    ) -> bool {
        let connected: Vec<Jid> = server
            .router()
            .with_resources(user, |l| l.iter().map(|r| r.jid.clone()).collect());
        let users = self.users.read();
        let Some(u) = users.get(user) else {
            return false;
        };
        let is_default = u.default.as_ref().is_some_and(|d| d.name() == name);
        connected.iter().filter(|j| *j != session).any(|j| {
            match u.sessions.get(j).and_then(|s| s.active.as_ref()) {
                Some(a) => a.name() == name,
                None => is_default,
            }
        })
    }

    /// §2.5: set or decline the default list.
    async fn set_default(
        &self,
        server: &Server,
        user: &Jid,
        session: &Jid,
        name: Option<&str>,
    ) -> IqResponse {
        let _g = self.lock(user).await;
        let current = self.default_name(server, user).await.map_err(internal)?;
        if current.as_deref() == name {
            return Ok(None);
        }
        let new = match name {
            Some(n) => Some(Arc::new(
                self.load_list(server, user, n)
                    .await
                    .map_err(internal)?
                    .ok_or_else(|| StanzaError::new(Cond::ItemNotFound))?,
            )),
            None => None,
        };
        if self.default_in_use_elsewhere(server, user, session) {
            return Err(StanzaError::new(Cond::Conflict));
        }
        let old = self.users.read().get(user).and_then(|u| u.default.clone());
        let sessions = self.sessions_using(server, user, true, None);
        let mut plan = self
            .presence_plan(server, user, old.as_deref(), new.as_deref(), &sessions)
            .await;
        Self::run_before(server, &mut plan).await;
        self.set_default_name(server, user, name)
            .await
            .map_err(internal)?;
        {
            let mut users = self.users.write();
            if let Some(u) = users.get_mut(user) {
                u.default = new.clone();
            }
        }
        Self::run_after(server, plan).await;
        self.blocklist_diff_push(server, user, old.as_deref(), new.as_deref())
            .await;
        Ok(None)
    }

    /// §2.6–§2.8: create, replace or remove a list.
    async fn set_list(
        &self,
        server: &Server,
        user: &Jid,
        session: &Jid,
        el: &Element,
    ) -> IqResponse {
        let name = el
            .attribute("name")
            .filter(|n| !n.is_empty())
            .ok_or_else(|| bad_request("list without a name"))?;
        let removal = !el
            .children()
            .any(|c| c.name() == "item" && c.ns() == NS_PRIVACY);
        let new = if removal {
            None
        } else {
            let l = PrivacyList::from_element(el).map_err(|e| match e {
                ListError::BadRequest(t) => bad_request(t),
                ListError::TooLarge => {
                    StanzaError::with_text(Cond::PolicyViolation, "too many items")
                }
            })?;
            // §2.1: groups must exist on the roster.
            let groups: Vec<&str> = l.groups().collect();
            if !groups.is_empty() {
                let roster = self.roster(server, user).await;
                if groups.iter().any(|g| {
                    !roster
                        .iter()
                        .any(|i| i.listed && i.groups.iter().any(|x| x == g))
                }) {
                    return Err(StanzaError::with_text(
                        Cond::ItemNotFound,
                        "no such roster group",
                    ));
                }
            }
            Some(Arc::new(l))
        };
        let _g = self.lock(user).await;
        let (domain, node) = split(user);
        let existing = self.load_list(server, user, name).await.map_err(internal)?;
        let exists = existing.is_some()
            || server
                .storage()
                .map_get(domain, node, LISTS, name)
                .await
                .map_err(internal)?
                .is_some();
        let default_name = self.default_name(server, user).await.map_err(internal)?;
        let is_default = default_name.as_deref() == Some(name);
        if removal {
            if !exists {
                return Err(StanzaError::new(Cond::ItemNotFound));
            }
            if self.list_in_use_elsewhere(server, user, session, name) {
                return Err(StanzaError::new(Cond::Conflict));
            }
        } else if !exists
            && server
                .storage()
                .map_count(domain, node, LISTS)
                .await
                .map_err(internal)?
                >= MAX_LISTS
        {
            return Err(StanzaError::with_text(
                Cond::PolicyViolation,
                "too many privacy lists",
            ));
        }
        // Presence consequences for the sessions this list applies to (after a removal,
        // the sender's own session falls back to the default list, or none).
        let affected = self.sessions_using(server, user, is_default, Some(name));
        let mut plan = self
            .presence_plan(server, user, existing.as_ref(), new.as_deref(), &affected)
            .await;
        Self::run_before(server, &mut plan).await;
        if let Some(l) = &new {
            self.save_list(server, user, l).await.map_err(internal)?;
            self.cache_list(user, name, Some(l.clone()), DefaultChange::Keep);
        } else {
            server
                .storage()
                .map_delete(domain, node, LISTS, name)
                .await
                .map_err(internal)?;
            if is_default {
                self.set_default_name(server, user, None)
                    .await
                    .map_err(internal)?;
            }
            self.cache_list(
                user,
                name,
                None,
                if is_default {
                    DefaultChange::Set(None)
                } else {
                    DefaultChange::Keep
                },
            );
        }
        Self::run_after(server, plan).await;
        self.privacy_push(server, user, name, true).await;
        if is_default {
            self.blocklist_diff_push(server, user, existing.as_ref(), new.as_deref())
                .await;
        }
        Ok(None)
    }
}

// ---- XEP-0191 protocol ----

impl Privacy {
    async fn blocking_iq(&self, server: &Server, iq: &IqRequest<'_>) -> IqResponse {
        let session = iq.from;
        let user = session.bare();
        self.ensure_session(server, session).await;
        match (iq.kind, iq.payload.name()) {
            (IqType::Get, "blocklist") => {
                self.with_session(session, |s| s.blocklist_requested = true);
                let default = self.load_default(server, &user).await.map_err(internal)?;
                let jids = default.map(|d| d.blocked_jids()).unwrap_or_default();
                Ok(Some(items_element("blocklist", &jids)))
            }
            (IqType::Set, "block") => {
                let jids = parse_items(iq.payload)?;
                if jids.is_empty() {
                    return Err(bad_request("block needs at least one item"));
                }
                self.block(server, &user, jids).await
            }
            (IqType::Set, "unblock") => {
                let jids = parse_items(iq.payload)?;
                self.unblock(server, &user, jids).await
            }
            _ => Err(StanzaError::new(Cond::BadRequest)),
        }
    }

    /// XEP-0191 §3.3: adds `jids` as the first items of the default list.
    async fn block(&self, server: &Server, user: &Jid, jids: Vec<Jid>) -> IqResponse {
        let _g = self.lock(user).await;
        let default_name = self.default_name(server, user).await.map_err(internal)?;
        let name = default_name
            .clone()
            .unwrap_or_else(|| BLOCKLIST_NAME.to_owned());
        let old = self
            .load_list(server, user, &name)
            .await
            .map_err(internal)?;
        let already: Vec<Jid> = old.as_ref().map(|l| l.blocked_jids()).unwrap_or_default();
        let mut fresh: Vec<Jid> = Vec::new();
        for j in &jids {
            if !already.contains(j) && !fresh.contains(j) {
                fresh.push(j.clone());
            }
        }
        let existing: Vec<Rule> = old.as_ref().map(|l| l.rules().to_vec()).unwrap_or_default();
        if existing.len() + fresh.len() > rules::MAX_ITEMS {
            return Err(StanzaError::with_text(
                Cond::PolicyViolation,
                "blocklist too long",
            ));
        }
        let new = Arc::new(PrivacyList::new(
            name.clone(),
            prepend_blocks(&fresh, existing),
        ));
        let old_effective = if default_name.is_some() {
            old.clone()
        } else {
            None
        };
        let affected = self.sessions_using(server, user, true, Some(&name));
        let mut plan = self
            .presence_plan(server, user, old_effective.as_ref(), Some(&new), &affected)
            .await;
        Self::run_before(server, &mut plan).await;
        self.save_list(server, user, &new).await.map_err(internal)?;
        if default_name.is_none() {
            self.set_default_name(server, user, Some(&name))
                .await
                .map_err(internal)?;
        }
        self.cache_list(
            user,
            &name,
            Some(new.clone()),
            DefaultChange::Set(Some(new.clone())),
        );
        Self::run_after(server, plan).await;
        self.blocking_push(server, user, items_element("block", &jids))
            .await;
        self.privacy_push(server, user, &name, false).await;
        Ok(None)
    }

    /// XEP-0191 §3.4–§3.5: removes blocklist items (all of them when `jids` is empty).
    async fn unblock(&self, server: &Server, user: &Jid, jids: Vec<Jid>) -> IqResponse {
        let _g = self.lock(user).await;
        let Some(name) = self.default_name(server, user).await.map_err(internal)? else {
            self.blocking_push(server, user, items_element("unblock", &jids))
                .await;
            return Ok(None);
        };
        let Some(old) = self
            .load_list(server, user, &name)
            .await
            .map_err(internal)?
        else {
            self.blocking_push(server, user, items_element("unblock", &jids))
                .await;
            return Ok(None);
        };
        let kept: Vec<Rule> = old
            .rules()
            .iter()
            .filter(|r| match r.blocked_jid() {
                Some(j) => !(jids.is_empty() || jids.contains(j)),
                None => true,
            })
            .cloned()
            .collect();
        let new = PrivacyList::new(name.clone(), kept);
        let (domain, node) = split(user);
        let drop_list = new.rules().is_empty() && name == BLOCKLIST_NAME;
        let new_effective = (!drop_list).then(|| Arc::new(new));
        let affected = self.sessions_using(server, user, true, Some(&name));
        let mut plan = self
            .presence_plan(
                server,
                user,
                Some(&old),
                new_effective.as_deref(),
                &affected,
            )
            .await;
        Self::run_before(server, &mut plan).await;
        match &new_effective {
            Some(l) => {
                self.save_list(server, user, l).await.map_err(internal)?;
                self.cache_list(user, &name, Some(l.clone()), DefaultChange::Keep);
            }
            None => {
                // The list existed only to hold the blocklist: with it empty, go back to no
                // default list at all.
                server
                    .storage()
                    .map_delete(domain, node, LISTS, &name)
                    .await
                    .map_err(internal)?;
                self.set_default_name(server, user, None)
                    .await
                    .map_err(internal)?;
                self.cache_list(user, &name, None, DefaultChange::Set(None));
            }
        }
        Self::run_after(server, plan).await;
        self.blocking_push(server, user, items_element("unblock", &jids))
            .await;
        self.privacy_push(server, user, &name, false).await;
        Ok(None)
    }
}

/// The `jid`s of `<item/>` children (XEP-0191: `jid-malformed` for one that is not a JID).
fn parse_items(el: &Element) -> Result<Vec<Jid>, StanzaError> {
    let mut out = Vec::new();
    for item in el.children().filter(|c| c.is("item", NS_BLOCKING)) {
        let jid = item
            .jid_attribute("jid")
            .ok_or_else(|| StanzaError::new(Cond::JidMalformed))?;
        if out.len() >= rules::MAX_ITEMS {
            return Err(StanzaError::with_text(
                Cond::PolicyViolation,
                "too many items",
            ));
        }
        out.push(jid);
    }
    Ok(out)
}

/// `fresh` blocklist items first (XEP-0191 §5: blocked items come first), then `existing`,
/// renumbering only when there is no room below the existing orders.
fn prepend_blocks(fresh: &[Jid], existing: Vec<Rule>) -> Vec<Rule> {
    let k = fresh.len() as u32;
    let min = existing.iter().map(|r| r.order).min();
    match min {
        Some(m) if m < k => {
            let mut out: Vec<Rule> = fresh.iter().cloned().map(|j| Rule::block(j, 0)).collect();
            out.extend(existing);
            for (i, r) in out.iter_mut().enumerate() {
                r.order = i as u32;
            }
            out
        }
        _ => {
            let base = min.map_or(0, |m| m - k);
            let mut out: Vec<Rule> = fresh
                .iter()
                .enumerate()
                .map(|(i, j)| Rule::block(j.clone(), base + i as u32))
                .collect();
            out.extend(existing);
            out
        }
    }
}

#[async_trait]
impl Module for Privacy {
    fn name(&self) -> &'static str {
        "privacy"
    }

    fn disco_features(&self) -> Vec<&'static str> {
        vec![NS_PRIVACY, NS_BLOCKING]
    }

    fn iq_payloads(&self) -> Vec<(&'static str, &'static str)> {
        vec![
            (NS_PRIVACY, "query"),
            (NS_BLOCKING, "blocklist"),
            (NS_BLOCKING, "block"),
            (NS_BLOCKING, "unblock"),
        ]
    }

    async fn handle_iq(&self, server: &Server, iq: IqRequest<'_>) -> IqResponse {
        // Only for oneself, from a session (the requests carry no 'to').
        if iq.to.bare() != iq.from.bare() || iq.to.node().is_none() || iq.from.resource().is_none()
        {
            return Err(StanzaError::new(Cond::Forbidden));
        }
        if iq.payload.ns() == NS_PRIVACY {
            self.privacy_iq(server, &iq).await
        } else {
            self.blocking_iq(server, &iq).await
        }
    }

    fn hooks(&self) -> Vec<Hook> {
        vec![
            Hook::Outbound,
            Hook::Account,
            Hook::Delivery,
            Hook::Broadcast,
        ]
    }

    async fn on_stanza(
        &self,
        server: &Server,
        stanza: &Element,
        hook: Hook,
        ctx: HookContext<'_>,
    ) -> Outcome {
        match hook {
            Hook::Outbound => self.on_outbound(server, stanza).await,
            Hook::Account => self.on_account(server, stanza).await,
            Hook::Delivery => match ctx.session {
                Some(session) => self.on_delivery(server, stanza, session).await,
                None => Outcome::Pass,
            },
            Hook::Broadcast => {
                self.on_broadcast(stanza);
                Outcome::Pass
            }
            _ => Outcome::Pass,
        }
    }

    async fn on_session(&self, server: &Server, event: &SessionEvent) {
        match event {
            SessionEvent::Bound(full) => self.ensure_session(server, full).await,
            SessionEvent::Ended(full) => {
                let bare = full.bare();
                let mut users = self.users.write();
                if let Some(u) = users.get_mut(&bare) {
                    u.sessions.remove(full);
                    if u.sessions.is_empty() {
                        users.remove(&bare);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jid(s: &str) -> Jid {
        Jid::parse(s).unwrap()
    }

    #[test]
    fn blocks_go_first() {
        let fresh = [jid("a@x"), jid("b@x")];
        let existing = vec![Rule::block(jid("c@x"), 10)];
        let out = prepend_blocks(&fresh, existing);
        assert_eq!(out.iter().map(|r| r.order).collect::<Vec<_>>(), [8, 9, 10]);
        let existing = vec![Rule::block(jid("c@x"), 1), Rule::block(jid("d@x"), 7)];
        let out = prepend_blocks(&fresh, existing);
        assert_eq!(
            out.iter().map(|r| r.order).collect::<Vec<_>>(),
            [0, 1, 2, 3]
        );
        assert_eq!(out[0].blocked_jid(), Some(&jid("a@x")));
        assert_eq!(out[2].blocked_jid(), Some(&jid("c@x")));
        let out = prepend_blocks(&fresh, Vec::new());
        assert_eq!(out.iter().map(|r| r.order).collect::<Vec<_>>(), [0, 1]);
    }

    #[test]
    fn exemptions() {
        let user = jid("alice@localhost");
        assert!(exempt(&user, &jid("alice@localhost/phone")));
        assert!(exempt(&user, &jid("localhost")));
        assert!(!exempt(&user, &jid("bob@localhost")));
        assert!(!exempt(&user, &jid("localhost/x")));
        assert!(!exempt(&user, &jid("example.org")));
    }
}
