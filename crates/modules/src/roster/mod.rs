//! Rosters and presence subscriptions: RFC 6121 §2 (roster get/set/remove, pushes,
//! versioning §2.6 / XEP-0237) and §3 with Appendix A (subscribe, subscribed, unsubscribe,
//! unsubscribed in both directions, pre-approval §3.4).
//!
//! What it owns: each user's roster in storage ([`store`]), the subscription state machine
//! ([`subscription`], pure), roster pushes to *interested* resources (those that requested the
//! roster in their session, §2.1.6), the two stream features `rosterver` and `pre-approval`.
//! Outbound subscription stanzas are taken at [`Hook::Outbound`] (the user's side: state
//! change, roster push, stamped to bare JIDs, routed when Appendix A.2 says so); inbound ones
//! at [`Hook::Account`] (the contact's side: state change, delivery, auto-replies). Requests to
//! unknown local users are dropped silently (§3.1.3); requests to remote domains are routed
//! (the router bounces them until federation exists).
//!
//! What it does not: presence itself (broadcast, probes, directed presence) lives in
//! [`crate::presence`], which shares this module's [`store::RosterStore`]; this module asks it
//! to send the user's current presence or `unavailable` when a subscription is granted or
//! cancelled (§3.1.5, §3.2.2, §3.3.3).
//!
//! Choices where RFC 6121 leaves room, with Prosody/ejabberd as guides: a roster set's
//! `subscription` values other than `remove` are ignored (§2.1.2.5 says MUST ignore), adding
//! oneself is `not-allowed` (Prosody), a full roster is `not-allowed`; versions are a counter
//! per user, and an outdated version gets the full roster rather than a diff.

pub mod item;
pub mod store;
pub mod subscription;

use starling_proto::Attr;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use minidom::Element;
use parking_lot::Mutex;
use starling_core::module::{IqRequest, IqResponse, SessionEvent};
use starling_core::xml::{BuilderExt, ElementExt};
use starling_core::{Hook, HookContext, Module, Outcome, Server};
use starling_proto::error::{StanzaError, StanzaErrorCondition as Cond};
use starling_proto::jid::Jid;
use starling_proto::ns;
use starling_proto::stanza::IqType;
use starling_storage::StorageError;

use crate::presence::{self, Presence, PresenceState};
use item::{RosterItem, NS_ROSTER};
use store::{RosterLimits, RosterStore};
use subscription::Kind;

/// Stream feature advertising roster versioning (RFC 6121 §2.6.1, XEP-0237).
pub const NS_ROSTERVER: &str = "urn:xmpp:features:rosterver";
/// Stream feature advertising subscription pre-approval (RFC 6121 §3.4.1).
pub const NS_PREAPPROVAL: &str = "urn:xmpp:features:pre-approval";
/// Largest subscription request kept whole for redelivery; a larger one (a stanza may be
/// 256 KiB) is kept without its content, so pending requests cannot fill storage.
const MAX_STORED_REQUEST_BYTES: usize = 8 * 1024;

/// The request as stored for redelivery: whole, or stripped of its children when large.
fn stored_request(stanza: &Element) -> Element {
    if starling_proto::writer::element_to_string(stanza).len() <= MAX_STORED_REQUEST_BYTES {
        return stanza.clone();
    }
    let mut b = Element::builder("presence", ns::CLIENT).with_attr("type", "subscribe");
    for attr in ["from", "to", "id"] {
        if let Some(v) = stanza.attribute(attr) {
            b = b.with_attr(attr, v);
        }
    }
    b.build()
}

/// The roster and presence modules, sharing one roster store and one presence table.
pub fn roster_and_presence(limits: RosterLimits) -> (Arc<Roster>, Arc<Presence>) {
    let store = Arc::new(RosterStore::new(limits));
    let state = Arc::new(PresenceState::default());
    (
        Arc::new(Roster::new(store.clone(), state.clone())),
        Arc::new(Presence::new(store, state)),
    )
}

/// The roster module.
pub struct Roster {
    store: Arc<RosterStore>,
    /// Last presence per resource, to send on approval and cancellation.
    presence: Arc<PresenceState>,
    /// Interested resources (§2.1.6): full JID -> id of the session that requested the roster,
    /// so a later session on the same full JID is not mistaken for it.
    interested: Mutex<HashMap<Jid, u64>>,
    /// Source of roster push ids.
    next_push: AtomicU64,
}

fn internal(e: StorageError) -> StanzaError {
    tracing::error!(error = %e, "roster storage error");
    StanzaError::new(Cond::InternalServerError)
}

fn bad(cond: Cond, text: &str) -> StanzaError {
    StanzaError::with_text(cond, text)
}

/// A subscription-type presence from `from` to `to` (both bare).
fn subscription_presence(kind: Kind, from: &Jid, to: &Jid) -> Element {
    Element::builder("presence", ns::CLIENT)
        .with_attr("from", from.as_str())
        .with_attr("to", to.as_str())
        .with_attr("type", kind.as_str())
        .build()
}

impl Roster {
    /// A roster module over `store`, reading presence from `presence`.
    pub fn new(store: Arc<RosterStore>, presence: Arc<PresenceState>) -> Roster {
        Roster {
            store,
            presence,
            interested: Mutex::new(HashMap::new()),
            next_push: AtomicU64::new(1),
        }
    }

    /// Sends a roster push of `item` at version `ver` to each interested resource of `user`
    /// (RFC 6121 §2.1.6).
    async fn push(&self, server: &Server, user: &Jid, item: Element, ver: u64) {
        let targets: Vec<_> = {
            let interested = self.interested.lock();
            server.router().with_resources(user, |list| {
                list.iter()
                    .filter(|r| interested.get(&r.jid) == Some(&r.handle.id()))
                    .map(|r| (r.handle.clone(), r.jid.clone()))
                    .collect()
            })
        };
        for (handle, full) in targets {
            let n = self.next_push.fetch_add(1, Ordering::Relaxed);
            let iq = Element::builder("iq", ns::CLIENT)
                .with_attr("type", "set")
                .with_attr("id", format!("push{n}"))
                .with_attr("to", full.as_str())
                .append(
                    Element::builder("query", NS_ROSTER)
                        .with_attr("ver", ver.to_string())
                        .append(item.clone()),
                )
                .build();
            server.deliver_to(&handle, &full, iq).await;
        }
    }

    /// Delivers a subscription stanza to the user's interested resources, or, for a
    /// `subscribe`, to the available ones (§3.1.3).
    async fn deliver(&self, server: &Server, user: &Jid, stanza: &Element, kind: Kind) {
        let targets: Vec<_> = {
            let interested = self.interested.lock();
            server.router().with_resources(user, |list| {
                list.iter()
                    .filter(|r| match kind {
                        Kind::Subscribe => r.available,
                        _ => interested.get(&r.jid) == Some(&r.handle.id()),
                    })
                    .map(|r| (r.handle.clone(), r.jid.clone()))
                    .collect()
            })
        };
        for (handle, full) in targets {
            server.deliver_to(&handle, &full, stanza.clone()).await;
        }
    }

    async fn get(&self, server: &Server, iq: &IqRequest<'_>, user: &Jid) -> IqResponse {
        if let Some(session) = server.router().session(iq.from) {
            self.interested.lock().insert(iq.from.clone(), session.id());
        }
        let ver = self.store.version(server, user).await.map_err(internal)?;
        let client_ver = iq.payload.attribute("ver");
        if client_ver == Some(ver.to_string().as_str()) {
            // §2.6.3: the client's cache is current; changes from now on arrive as pushes.
            return Ok(None);
        }
        let items = self.store.all(server, user).await.map_err(internal)?;
        let mut query = Element::builder("query", NS_ROSTER);
        if client_ver.is_some() {
            query = query.with_attr("ver", ver.to_string());
        }
        for item in items.iter().filter(|i| i.listed) {
            query = query.append(item.to_wire());
        }
        Ok(Some(query.build()))
    }

    async fn set(&self, server: &Server, iq: &IqRequest<'_>, user: &Jid) -> IqResponse {
        let mut items = iq.payload.children().filter(|c| c.is("item", NS_ROSTER));
        let (Some(el), None) = (items.next(), items.next()) else {
            return Err(bad(
                Cond::BadRequest,
                "a roster set carries exactly one item",
            ));
        };
        let jid = el
            .attribute("jid")
            .ok_or_else(|| bad(Cond::BadRequest, "item without a jid"))?;
        let jid = Jid::parse(jid).map_err(|_| StanzaError::new(Cond::JidMalformed))?;
        if jid.bare() == *user {
            return Err(bad(
                Cond::NotAllowed,
                "you cannot add yourself to your roster",
            ));
        }
        if el.attribute("subscription") == Some("remove") {
            return self.remove(server, user, &jid).await;
        }
        let limits = self.store.limits();
        let name = el.attribute("name").map(str::to_owned);
        if name
            .as_ref()
            .is_some_and(|n| n.len() > limits.max_name_bytes)
        {
            return Err(bad(Cond::NotAcceptable, "the name is too long"));
        }
        let mut groups: Vec<String> = Vec::new();
        for g in el.children().filter(|c| c.is("group", NS_ROSTER)) {
            let text = g.text();
            if text.is_empty() {
                return Err(bad(Cond::NotAcceptable, "empty group name"));
            }
            if text.len() > limits.max_group_bytes {
                return Err(bad(Cond::NotAcceptable, "group name too long"));
            }
            if groups.contains(&text) {
                return Err(bad(Cond::BadRequest, "duplicate group"));
            }
            groups.push(text);
        }
        if groups.len() > limits.max_groups {
            return Err(bad(Cond::NotAcceptable, "too many groups"));
        }
        let (next, ver) = {
            let _guard = self.store.lock(user).await;
            let cur = self.store.get(server, user, &jid).await.map_err(internal)?;
            let mut next = cur.unwrap_or_else(|| RosterItem::new(jid.clone()));
            if !next.listed
                && !self
                    .store
                    .room_for_item(server, user)
                    .await
                    .map_err(internal)?
            {
                return Err(bad(Cond::NotAllowed, "the roster is full"));
            }
            next.listed = true;
            next.name = name;
            next.groups = groups;
            self.store
                .put(server, user, &next)
                .await
                .map_err(internal)?;
            let ver = self
                .store
                .bump_version(server, user)
                .await
                .map_err(internal)?;
            (next, ver)
        };
        self.push(server, user, next.to_wire(), ver).await;
        Ok(None)
    }

    /// §2.5: removes the item, pushes the removal and ends both subscriptions.
    async fn remove(&self, server: &Server, user: &Jid, jid: &Jid) -> IqResponse {
        let (item, ver) = {
            let _guard = self.store.lock(user).await;
            let item = match self.store.get(server, user, jid).await.map_err(internal)? {
                Some(item) if item.listed => item,
                _ => return Err(StanzaError::new(Cond::ItemNotFound)),
            };
            self.store
                .delete(server, user, jid)
                .await
                .map_err(internal)?;
            let ver = self
                .store
                .bump_version(server, user)
                .await
                .map_err(internal)?;
            (item, ver)
        };
        self.push(server, user, RosterItem::removal(jid), ver).await;
        let state = item.sub.state;
        if state.to() || state.pending_out() {
            server
                .route(subscription_presence(Kind::Unsubscribe, user, jid))
                .await;
        }
        if state.from() {
            presence::send_unavailable(server, &self.presence, user, jid).await;
        }
        if state.from() || state.pending_in() {
            server
                .route(subscription_presence(Kind::Unsubscribed, user, jid))
                .await;
        }
        Ok(None)
    }

    /// The user sends a subscription stanza (RFC 6121 Appendix A.2).
    async fn outbound(&self, server: &Server, stanza: &Element, kind: Kind) {
        let (Some(from), Some(to)) = (stanza.jid_attribute("from"), stanza.jid_attribute("to"))
        else {
            return;
        };
        let user = from.bare();
        let contact = to.bare();
        if contact == user || user.node().is_none() {
            // One is always subscribed to oneself (§4.2.2); nothing to manage.
            return;
        }
        let result = self.apply_outbound(server, &user, &contact, kind).await;
        let (outcome, pushed) = match result {
            Ok(r) => r,
            Err(e) => {
                // To the sending session itself (its full JID), as it sent the stanza: a
                // bare-JID error would only reach resources that sent available presence.
                server.bounce_with(stanza, e).await;
                return;
            }
        };
        // §3.1.2 and others: stamped with the bare JIDs.
        let mut stanza = stanza.clone();
        stanza.put_attr("from", user.as_str());
        stanza.put_attr("to", contact.as_str());
        // Pushed before routing: for a local contact, routing may come straight back with
        // an answer that changes the item again, and its push must be the later one.
        if let Some((item, ver)) = pushed {
            self.push(server, &user, item, ver).await;
        }
        if outcome.send_unavailable {
            presence::send_unavailable(server, &self.presence, &user, &contact).await;
        }
        if outcome.forward {
            server.route(stanza).await;
        }
        if outcome.send_presence {
            presence::send_current(server, &self.presence, &user, &contact).await;
        }
    }

    async fn apply_outbound(
        &self,
        server: &Server,
        user: &Jid,
        contact: &Jid,
        kind: Kind,
    ) -> Result<(subscription::Outcome, Option<(Element, u64)>), StanzaError> {
        let _guard = self.store.lock(user).await;
        let cur = self
            .store
            .get(server, user, contact)
            .await
            .map_err(internal)?
            .unwrap_or_else(|| RosterItem::new(contact.clone()));
        let outcome = subscription::outbound(cur.sub, kind);
        let mut next = cur.clone();
        next.sub = outcome.next;
        if !next.sub.state.pending_in() {
            next.request = None;
        }
        // §3.1.2, §3.1.5, §3.4.2: subscribing, approving or pre-approving puts the contact on
        // the roster.
        if matches!(kind, Kind::Subscribe | Kind::Subscribed) && outcome.next != cur.sub {
            next.listed = true;
        }
        if next.listed
            && !cur.listed
            && !self
                .store
                .room_for_item(server, user)
                .await
                .map_err(internal)?
        {
            return Err(bad(Cond::NotAllowed, "the roster is full"));
        }
        if next != cur {
            self.store
                .put(server, user, &next)
                .await
                .map_err(internal)?;
        }
        let mut pushed = None;
        if next.listed && next.visible() != cur.visible() {
            let ver = self
                .store
                .bump_version(server, user)
                .await
                .map_err(internal)?;
            pushed = Some((next.to_wire(), ver));
        }
        Ok((outcome, pushed))
    }

    /// A subscription stanza arrives for a local user (RFC 6121 Appendix A.3).
    async fn inbound(&self, server: &Server, stanza: &Element, kind: Kind) -> Outcome {
        let (Some(from), Some(to)) = (stanza.jid_attribute("from"), stanza.jid_attribute("to"))
        else {
            return Outcome::Handled;
        };
        let contact = from.bare();
        let user = to.bare();
        if user.node().is_none() {
            return Outcome::Pass;
        }
        if contact == user {
            return Outcome::Handled;
        }
        // §3.1.3: a request for a user who does not exist is dropped without a word. A bound
        // resource proves the account exists.
        if server.router().resources(&user).is_empty() {
            let node = user.node().unwrap_or_default();
            match server.storage().account_exists(user.domain(), node).await {
                Ok(true) => {}
                Ok(false) => return Outcome::Handled,
                Err(e) => {
                    tracing::error!(error = %e, "storage error checking account");
                    return Outcome::Handled;
                }
            }
        }
        let mut stanza = stanza.clone();
        stanza.put_attr("from", contact.as_str());
        stanza.put_attr("to", user.as_str());
        let (outcome, pushed) = match self
            .apply_inbound(server, &user, &contact, kind, &stanza)
            .await
        {
            Ok(Some(r)) => r,
            Ok(None) => return Outcome::Handled,
            Err(e) => {
                tracing::error!(error = %e, %user, "roster storage error on inbound subscription");
                return Outcome::Handled;
            }
        };
        if outcome.forward {
            self.deliver(server, &user, &stanza, kind).await;
        }
        if let Some((item, ver)) = pushed {
            self.push(server, &user, item, ver).await;
        }
        if outcome.send_unavailable {
            presence::send_unavailable(server, &self.presence, &user, &contact).await;
        }
        if let Some(reply) = outcome.auto_reply {
            // Routed as the server's answer, not through the user's outbound state machine:
            // it exists to resynchronise the contact's side.
            server
                .route(subscription_presence(reply, &user, &contact))
                .await;
        }
        if outcome.send_presence {
            presence::send_current(server, &self.presence, &user, &contact).await;
        }
        Outcome::Handled
    }

    /// `Ok(None)`: dropped (too many pending requests).
    #[allow(clippy::type_complexity)]
    async fn apply_inbound(
        &self,
        server: &Server,
        user: &Jid,
        contact: &Jid,
        kind: Kind,
        stanza: &Element,
    ) -> Result<Option<(subscription::Outcome, Option<(Element, u64)>)>, StorageError> {
        let _guard = self.store.lock(user).await;
        let stored = self.store.get(server, user, contact).await?;
        let is_new = stored.is_none();
        let cur = stored.unwrap_or_else(|| RosterItem::new(contact.clone()));
        let outcome = subscription::inbound(cur.sub, kind);
        let mut next = cur.clone();
        next.sub = outcome.next;
        if kind == Kind::Subscribe && outcome.forward {
            next.request = Some(stored_request(stanza));
        }
        if !next.sub.state.pending_in() {
            next.request = None;
        }
        if is_new && !next.is_empty() && !self.store.room_for_request(server, user).await? {
            tracing::warn!(%user, "too many pending subscription requests; dropped");
            return Ok(None);
        }
        if next != cur {
            self.store.put(server, user, &next).await?;
        }
        let mut pushed = None;
        if next.listed && next.visible() != cur.visible() {
            let ver = self.store.bump_version(server, user).await?;
            pushed = Some((next.to_wire(), ver));
        }
        Ok(Some((outcome, pushed)))
    }
}

#[async_trait]
impl Module for Roster {
    fn name(&self) -> &'static str {
        "roster"
    }

    fn stream_features(&self) -> Vec<Element> {
        vec![
            Element::builder("ver", NS_ROSTERVER).build(),
            Element::builder("sub", NS_PREAPPROVAL).build(),
        ]
    }

    fn iq_payloads(&self) -> Vec<(&'static str, &'static str)> {
        vec![(NS_ROSTER, "query")]
    }

    async fn handle_iq(&self, server: &Server, iq: IqRequest<'_>) -> IqResponse {
        let user = iq.from.bare();
        // §2.1.5 / §2.3.3: only the account itself manages its roster.
        if *iq.to != user {
            return Err(StanzaError::new(Cond::Forbidden));
        }
        match iq.kind {
            IqType::Get => self.get(server, &iq, &user).await,
            IqType::Set => self.set(server, &iq, &user).await,
            _ => Err(StanzaError::new(Cond::BadRequest)),
        }
    }

    fn hooks(&self) -> Vec<Hook> {
        vec![Hook::Outbound, Hook::Account]
    }

    async fn on_stanza(
        &self,
        server: &Server,
        stanza: &Element,
        hook: Hook,
        _ctx: HookContext<'_>,
    ) -> Outcome {
        if stanza.name() != "presence" {
            return Outcome::Pass;
        }
        let Some(kind) = Kind::parse(stanza.attribute("type")) else {
            return Outcome::Pass;
        };
        match hook {
            Hook::Outbound => {
                self.outbound(server, stanza, kind).await;
                Outcome::Handled
            }
            Hook::Account => self.inbound(server, stanza, kind).await,
            _ => Outcome::Pass,
        }
    }

    async fn on_session(&self, server: &Server, event: &SessionEvent) {
        if let SessionEvent::Ended(full) = event {
            if server.router().session(full).is_none() {
                self.interested.lock().remove(full);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use starling_core::Config;

    async fn setup(limits: RosterLimits) -> (Arc<Server>, Arc<Roster>) {
        let storage = starling_storage::open("sqlite::memory:").await.unwrap();
        storage
            .create_account("localhost", "alice", &[])
            .await
            .unwrap();
        let (roster, presence) = roster_and_presence(limits);
        let server = Server::new(
            Arc::new(Config::default()),
            storage,
            vec![roster.clone(), presence],
        )
        .unwrap();
        (server, roster)
    }

    fn jid(s: &str) -> Jid {
        Jid::parse(s).unwrap()
    }

    async fn set(server: &Server, roster: &Roster, item: &str) -> IqResponse {
        let stanza: Element = format!(
            "<iq xmlns='jabber:client' type='set' id='x' from='alice@localhost/r' to='alice@localhost'><query xmlns='jabber:iq:roster'>{item}</query></iq>"
        )
        .parse()
        .unwrap();
        let from = jid("alice@localhost/r");
        let to = jid("alice@localhost");
        let iq = IqRequest {
            from: &from,
            to: &to,
            kind: IqType::Set,
            payload: stanza.children().next().unwrap(),
            stanza: &stanza,
        };
        roster.handle_iq(server, iq).await
    }

    fn condition(r: IqResponse) -> Cond {
        r.expect_err("an error").condition
    }

    #[tokio::test]
    async fn roster_size_and_item_limits() {
        let limits = RosterLimits {
            max_items: 2,
            max_name_bytes: 5,
            max_groups: 1,
            ..RosterLimits::default()
        };
        let (server, roster) = setup(limits).await;
        set(&server, &roster, "<item jid='b@x'/>").await.unwrap();
        set(&server, &roster, "<item jid='c@x' name='12345'/>")
            .await
            .unwrap();
        assert_eq!(
            condition(set(&server, &roster, "<item jid='d@x'/>").await),
            Cond::NotAllowed
        );
        // Updating an item already there is fine at the limit.
        set(&server, &roster, "<item jid='b@x'><group>G</group></item>")
            .await
            .unwrap();
        assert_eq!(
            condition(set(&server, &roster, "<item jid='b@x' name='123456'/>").await),
            Cond::NotAcceptable
        );
        assert_eq!(
            condition(
                set(
                    &server,
                    &roster,
                    "<item jid='b@x'><group>G</group><group>H</group></item>"
                )
                .await
            ),
            Cond::NotAcceptable
        );
        // A subscription request to a new contact is refused too: no item is created.
        let sub: Element =
            "<presence xmlns='jabber:client' type='subscribe' from='alice@localhost/r' to='e@x'/>"
                .parse()
                .unwrap();
        roster.outbound(&server, &sub, Kind::Subscribe).await;
        let user = jid("alice@localhost");
        let all = roster.store.all(&server, &user).await.unwrap();
        let jids: Vec<_> = all.iter().map(|i| i.jid.as_str()).collect();
        assert_eq!(jids, ["b@x", "c@x"]);
    }

    #[tokio::test]
    async fn pending_requests_are_bounded_and_stored_small() {
        let limits = RosterLimits {
            max_pending: 1,
            ..RosterLimits::default()
        };
        let (server, roster) = setup(limits).await;
        let big = "x".repeat(20_000);
        let req: Element = format!(
            "<presence xmlns='jabber:client' type='subscribe' id='r1' from='b@x/res' to='alice@localhost'><status>{big}</status></presence>"
        )
        .parse()
        .unwrap();
        assert_eq!(
            roster.inbound(&server, &req, Kind::Subscribe).await,
            Outcome::Handled
        );
        let other: Element =
            "<presence xmlns='jabber:client' type='subscribe' from='c@x' to='alice@localhost'/>"
                .parse()
                .unwrap();
        roster.inbound(&server, &other, Kind::Subscribe).await;
        // For nobody: dropped without a trace.
        let ghost: Element =
            "<presence xmlns='jabber:client' type='subscribe' from='c@x' to='ghost@localhost'/>"
                .parse()
                .unwrap();
        roster.inbound(&server, &ghost, Kind::Subscribe).await;
        let user = jid("alice@localhost");
        let all = roster.store.all(&server, &user).await.unwrap();
        assert_eq!(all.len(), 1, "the second request is dropped");
        let item = &all[0];
        assert_eq!(item.jid.as_str(), "b@x", "stored under the bare JID");
        assert!(!item.listed);
        assert_eq!(item.sub.state, subscription::State::NonePendingIn);
        let stored = item.request.as_ref().unwrap();
        assert_eq!(stored.attribute("id"), Some("r1"));
        assert_eq!(stored.attribute("from"), Some("b@x"));
        assert_eq!(
            stored.children().count(),
            0,
            "oversized content is not kept"
        );
        let ghost_user = jid("ghost@localhost");
        assert!(roster
            .store
            .all(&server, &ghost_user)
            .await
            .unwrap()
            .is_empty());
    }
}
