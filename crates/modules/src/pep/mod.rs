//! Personal Eventing Protocol (XEP-0163): every account a publish-subscribe service, with the
//! subset of XEP-0060 that PEP and its clients (avatars XEP-0084, bookmarks XEP-0402, OMEMO
//! XEP-0384) need.
//!
//! What it serves, on an account's bare JID:
//! - publish (XEP-0060 §7.1) with auto-create (XEP-0163 §3) and publish-options (§7.1.5: a
//!   node whose configuration does not match gets `conflict` + `precondition-not-met`);
//!   item ids given or generated; the last `max_items` items kept in storage ([`store`]);
//! - retract (§7.2, notified with `notify='true'` or `pubsub#notify_retract`), node creation
//!   (§8.1, with configuration), configuration get/set and defaults (§8.2, §8.3), purge
//!   (§8.5) and deletion (§8.4, notified), all by the owner only;
//! - items retrieval (§6.5: all, `max_items`, by id) under the node's access model (§4.5:
//!   `open`, `presence` = contacts with a `from`/`both` subscription, `roster` = those in the
//!   allowed groups, `whitelist` = the owner alone);
//! - affiliations and subscriptions retrieval (§5.6, §5.7; PEP's subscriptions are implicit,
//!   so the list is empty);
//! - service discovery (XEP-0163 §6, XEP-0060 §5): the identity pubsub/pep and the supported
//!   features on the bare JID, its nodes as items, node info and node items — answered
//!   through [`Module::account_disco`] of the disco module.
//!
//! Notifications (XEP-0163 §4): an entity is "subscribed" by sharing presence with the owner
//! (auto-subscribe, §4.1) and filters by the `+notify` features of its entity capabilities
//! (§4.2, [`interest`]). A publish is notified as a headline from the owner's bare JID
//! (§4.3.1) to each full JID that wants the node and passes the access model (§4.3.2), the
//! owner's own resources included (§3); a resource that becomes available with such caps
//! gets the last item of each node it wants (§4.3.3 rule 2, §4.3.4), with its `<delay/>`.
//! Notifications go through the owner's outbound filters, so a blocked contact gets none
//! (§4.3.3 rule 3).
//!
//! What it does not: explicit subscriptions (XEP-0060 §6.1; `feature-not-implemented`),
//! affiliations other than owner, collection nodes, RSM paging of items, item expiry,
//! `pubsub#publish_model` other than `publishers`, configuration-change notifications. Only
//! presence that reaches the owner's bare JID (mutual subscription, XEP-0163 §2.4 note) and
//! the owner's own presence teach us about interest.

pub mod config;
pub mod interest;
pub mod store;

use starling_proto::Attr;
use std::collections::HashMap;

use async_trait::async_trait;
use minidom::Element;
use parking_lot::Mutex;
use starling_core::module::{IqRequest, IqResponse, SessionEvent};
use starling_core::xml::BuilderExt;
use starling_core::{Hook, HookContext, Module, Outcome, Server};
use starling_proto::error::{ErrorType, StanzaError, StanzaErrorCondition as Cond};
use starling_proto::jid::Jid;
use starling_proto::ns;
use starling_proto::stanza::IqType;
use starling_storage::StorageError;

use self::config::{AccessModel, FormError, NodeConfig, SendLast};
use self::interest::{CapsAction, CapsRef, Interest};
use self::store::{Item, PepStore};
use crate::roster::item::{RosterItem, STORE as ROSTER_STORE};

/// XEP-0060 namespaces.
pub const NS_PUBSUB: &str = "http://jabber.org/protocol/pubsub";
/// Owner use cases.
pub const NS_PUBSUB_OWNER: &str = "http://jabber.org/protocol/pubsub#owner";
/// Event notifications.
pub const NS_PUBSUB_EVENT: &str = "http://jabber.org/protocol/pubsub#event";
/// Pubsub-specific error conditions.
pub const NS_PUBSUB_ERRORS: &str = "http://jabber.org/protocol/pubsub#errors";
/// Longest node name or item id accepted, in bytes (storage keys stay far below its cap).
const MAX_NAME_BYTES: usize = 512;

/// The features on an account's bare JID (XEP-0163 §6.1, XEP-0060 §10).
const FEATURES: &[&str] = &[
    NS_PUBSUB,
    "http://jabber.org/protocol/pubsub#access-open",
    "http://jabber.org/protocol/pubsub#access-presence",
    "http://jabber.org/protocol/pubsub#access-roster",
    "http://jabber.org/protocol/pubsub#access-whitelist",
    "http://jabber.org/protocol/pubsub#auto-create",
    "http://jabber.org/protocol/pubsub#auto-subscribe",
    "http://jabber.org/protocol/pubsub#config-node",
    "http://jabber.org/protocol/pubsub#config-node-max",
    "http://jabber.org/protocol/pubsub#create-and-configure",
    "http://jabber.org/protocol/pubsub#create-nodes",
    "http://jabber.org/protocol/pubsub#delete-items",
    "http://jabber.org/protocol/pubsub#delete-nodes",
    "http://jabber.org/protocol/pubsub#filtered-notifications",
    "http://jabber.org/protocol/pubsub#item-ids",
    "http://jabber.org/protocol/pubsub#last-published",
    "http://jabber.org/protocol/pubsub#persistent-items",
    "http://jabber.org/protocol/pubsub#presence-notifications",
    "http://jabber.org/protocol/pubsub#publish",
    "http://jabber.org/protocol/pubsub#publish-options",
    "http://jabber.org/protocol/pubsub#purge-nodes",
    "http://jabber.org/protocol/pubsub#retract-items",
    "http://jabber.org/protocol/pubsub#retrieve-affiliations",
    "http://jabber.org/protocol/pubsub#retrieve-default",
    "http://jabber.org/protocol/pubsub#retrieve-items",
    "http://jabber.org/protocol/pubsub#retrieve-subscriptions",
];

fn pubsub_error(cond: Cond, app: &str) -> StanzaError {
    StanzaError::with_app(cond, Element::bare(app, NS_PUBSUB_ERRORS))
}

fn internal(e: StorageError) -> StanzaError {
    tracing::error!(error = %e, "PEP storage error");
    StanzaError::new(Cond::InternalServerError)
}

fn form_error(e: FormError) -> StanzaError {
    match e {
        FormError::Invalid(text) => {
            let mut err = pubsub_error(Cond::BadRequest, "invalid-options");
            err.text = Some(text);
            err
        }
        FormError::Unsupported(var) => {
            StanzaError::with_text(Cond::NotAcceptable, format!("unsupported option {var}"))
        }
    }
}

/// The node attribute of a request, checked.
fn node_attr(el: &Element) -> Result<&str, StanzaError> {
    match el.attribute("node") {
        Some(n) if !n.is_empty() && n.len() <= MAX_NAME_BYTES => Ok(n),
        Some(n) if !n.is_empty() => Err(StanzaError::with_text(
            Cond::NotAcceptable,
            "node name too long",
        )),
        _ => Err(pubsub_error(Cond::BadRequest, "nodeid-required")),
    }
}

/// The submitted form inside `parent` (`publish-options` or `configure`), if any.
fn form_fields(
    parent: Option<&Element>,
    form_type: &str,
) -> Result<Vec<(String, Vec<String>)>, StanzaError> {
    match parent.and_then(|p| p.get_child("x", config::NS_DATA)) {
        Some(x) => config::submitted_fields(x, form_type).map_err(form_error),
        None => Ok(Vec::new()),
    }
}

fn random_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// `<item id='…'>payload</item>` in `namespace`.
fn item_element(namespace: &str, item: &Item, payload: bool) -> Element {
    let b = Element::builder("item", namespace).with_attr("id", item.id.as_str());
    if payload {
        b.append(item.payload.clone()).build()
    } else {
        b.build()
    }
}

/// The PEP module.
#[derive(Default)]
pub struct Pep {
    store: PepStore,
    /// Who wants notifications of which nodes (short synchronous critical sections only).
    interest: Mutex<Interest>,
}

impl Pep {
    /// Whether `who` (bare) may see `config`'s node of `owner` (XEP-0060 §4.5).
    async fn may_access(
        &self,
        server: &Server,
        owner: &Jid,
        who: &Jid,
        config: &NodeConfig,
    ) -> Result<bool, StorageError> {
        if who == owner {
            return Ok(true);
        }
        match config.access_model {
            AccessModel::Open => Ok(true),
            AccessModel::Whitelist => Ok(false),
            AccessModel::Presence | AccessModel::Roster => {
                let item = self.roster_item(server, owner, who).await?;
                Ok(item.is_some_and(|i| {
                    i.sub.state.from()
                        && (config.access_model == AccessModel::Presence
                            || i.groups.iter().any(|g| config.roster_groups.contains(g)))
                }))
            }
        }
    }

    async fn roster_item(
        &self,
        server: &Server,
        owner: &Jid,
        contact: &Jid,
    ) -> Result<Option<RosterItem>, StorageError> {
        let v = server
            .storage()
            .map_get(
                owner.domain(),
                owner.node().unwrap_or_default(),
                ROSTER_STORE,
                contact.as_str(),
            )
            .await?;
        Ok(v.and_then(|b| RosterItem::decode(&b)))
    }

    /// The error for a requester the access model keeps out (XEP-0060 §6.5.9).
    fn access_error(config: &NodeConfig) -> StanzaError {
        match config.access_model {
            AccessModel::Presence => {
                pubsub_error(Cond::NotAuthorized, "presence-subscription-required")
            }
            AccessModel::Roster => pubsub_error(Cond::NotAuthorized, "not-in-roster-group"),
            _ => pubsub_error(Cond::NotAllowed, "closed-node"),
        }
    }

    /// A node the requester may see, or the error to answer.
    async fn visible_node(
        &self,
        server: &Server,
        owner: &Jid,
        who: &Jid,
        node: &str,
    ) -> Result<NodeConfig, StanzaError> {
        let (config, _) = self
            .store
            .node(server, owner, node)
            .await
            .map_err(internal)?
            .ok_or_else(|| StanzaError::new(Cond::ItemNotFound))?;
        if !self
            .may_access(server, owner, who, &config)
            .await
            .map_err(internal)?
        {
            return Err(Self::access_error(&config));
        }
        Ok(config)
    }

    /// Sends `event` (the child of `<event/>`) about `node` to every entity that wants it
    /// and may see it.
    async fn notify(
        &self,
        server: &Server,
        owner: &Jid,
        node: &str,
        config: &NodeConfig,
        event: &Element,
    ) {
        if !config.deliver_notifications {
            return;
        }
        let recipients = self.interest.lock().recipients(owner, node);
        let mut allowed: HashMap<Jid, bool> = HashMap::new();
        for full in recipients {
            let bare = full.bare();
            let ok = match allowed.get(&bare) {
                Some(ok) => *ok,
                None => {
                    let ok = match self.may_access(server, owner, &bare, config).await {
                        Ok(ok) => ok,
                        Err(e) => {
                            tracing::error!(error = %e, "PEP access check failed");
                            false
                        }
                    };
                    allowed.insert(bare, ok);
                    ok
                }
            };
            if ok {
                self.send_event(server, owner, &full, event.clone(), None)
                    .await;
            }
        }
    }

    /// One notification: a headline from the owner's bare JID (XEP-0163 §4.3.1) to `to`.
    async fn send_event(
        &self,
        server: &Server,
        owner: &Jid,
        to: &Jid,
        event: Element,
        delay_ms: Option<i64>,
    ) {
        // A local session that is gone gets nothing: a headline to a missing full JID would
        // otherwise fall back to every resource of the bare JID.
        if server.config().is_local_host(to.domain()) && server.router().session(to).is_none() {
            return;
        }
        let mut msg = Element::builder("message", ns::CLIENT)
            .with_attr("from", owner.as_str())
            .with_attr("to", to.as_str())
            .with_attr("type", "headline")
            .with_attr("id", random_id())
            .append(Element::builder("event", NS_PUBSUB_EVENT).append(event));
        if let Some(ms) = delay_ms {
            msg = msg.append(
                Element::builder("delay", ns::DELAY)
                    .with_attr("from", owner.as_str())
                    .with_attr("stamp", crate::time::utc_stamp(ms)),
            );
        }
        // Through the owner's outbound filters: nothing reaches a contact the owner blocks.
        server.route_from_client(msg.build()).await;
    }

    /// The last item of each of `nodes` to `to`, a newly interested resource (XEP-0163
    /// §4.3.4), where the node's configuration and access model allow.
    async fn send_last_items(&self, server: &Server, owner: &Jid, to: &Jid, nodes: &[String]) {
        for node in nodes {
            let config = match self.store.node(server, owner, node).await {
                Ok(Some((c, _))) => c,
                Ok(None) => continue,
                Err(e) => {
                    tracing::error!(error = %e, "PEP storage error");
                    continue;
                }
            };
            if config.send_last != SendLast::OnSubAndPresence || !config.deliver_notifications {
                continue;
            }
            match self.may_access(server, owner, &to.bare(), &config).await {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    tracing::error!(error = %e, "PEP access check failed");
                    continue;
                }
            }
            let item = match self.store.last_item(server, owner, node).await {
                Ok(Some(item)) => item,
                Ok(None) => continue,
                Err(e) => {
                    tracing::error!(error = %e, "PEP storage error");
                    continue;
                }
            };
            let event = Element::builder("items", NS_PUBSUB_EVENT)
                .with_attr("node", node.as_str())
                .append(item_element(
                    NS_PUBSUB_EVENT,
                    &item,
                    config.deliver_payloads,
                ))
                .build();
            self.send_event(server, owner, to, event, Some(item.when_ms))
                .await;
        }
    }

    /// Available or unavailable presence from `entity` that tells `owner` about its
    /// interest (XEP-0163 §4.2).
    async fn presence_seen(&self, server: &Server, owner: &Jid, entity: &Jid, presence: &Element) {
        let Some(caps) = usable_caps(presence) else {
            self.interest.lock().remove(owner, entity);
            return;
        };
        let action = self.interest.lock().on_caps(owner, entity, &caps);
        match action {
            CapsAction::Known(new) => self.send_last_items(server, owner, entity, &new).await,
            CapsAction::Query(id, node) => {
                let iq = Element::builder("iq", ns::CLIENT)
                    .with_attr("type", "get")
                    .with_attr("id", id)
                    .with_attr("from", owner.as_str())
                    .with_attr("to", entity.as_str())
                    .append(Element::builder("query", ns::DISCO_INFO).with_attr("node", node))
                    .build();
                server.route(iq).await;
            }
            CapsAction::Wait => {}
        }
    }

    /// The answer to one of our caps queries.
    async fn caps_answer(&self, server: &Server, iq: &Element) -> Outcome {
        let (Some(id), Some(from)) = (iq.attribute("id"), iq.jid_attribute("from")) else {
            return Outcome::Pass;
        };
        let Some((owners, nodes)) = self.interest.lock().answer(id, &from, iq) else {
            return Outcome::Pass;
        };
        for owner in owners {
            let new = self.interest.lock().set(&owner, &from, nodes.clone());
            self.send_last_items(server, &owner, &from, &new).await;
        }
        Outcome::Handled
    }

    async fn publish(
        &self,
        server: &Server,
        owner: &Jid,
        publish: &Element,
        options: Option<&Element>,
    ) -> IqResponse {
        let node = node_attr(publish)?;
        let limits = &server.config().pep;
        let mut items = publish.children().filter(|c| c.is("item", NS_PUBSUB));
        let (Some(item), None) = (items.next(), items.next()) else {
            return Err(pubsub_error(Cond::BadRequest, "item-required"));
        };
        let mut payloads = item.children();
        let payload = match (payloads.next(), payloads.next()) {
            (Some(p), None) => p,
            (None, _) => return Err(pubsub_error(Cond::BadRequest, "payload-required")),
            _ => return Err(pubsub_error(Cond::BadRequest, "invalid-payload")),
        };
        let mut bytes = Vec::new();
        starling_proto::writer::write_element(payload, &mut bytes);
        if bytes.len() > limits.max_item_bytes {
            return Err(pubsub_error(Cond::NotAcceptable, "payload-too-big"));
        }
        let id = match item.attribute("id") {
            Some(id) if !id.is_empty() && id.len() <= MAX_NAME_BYTES => id.to_owned(),
            Some(id) if !id.is_empty() => {
                return Err(StanzaError::with_text(
                    Cond::NotAcceptable,
                    "item id too long",
                ))
            }
            _ => random_id(),
        };
        let fields = form_fields(options, config::FORM_PUBLISH_OPTIONS)?;
        let guard = self.store.lock(owner).await;
        let (config, seq) = match self
            .store
            .node(server, owner, node)
            .await
            .map_err(internal)?
        {
            Some((config, seq)) => {
                if !config.satisfies(&fields, limits.max_items) {
                    let mut err = pubsub_error(Cond::Conflict, "precondition-not-met");
                    err.type_ = ErrorType::Cancel;
                    return Err(err);
                }
                (config, seq)
            }
            None => {
                let count = self
                    .store
                    .node_count(server, owner)
                    .await
                    .map_err(internal)?;
                if count >= limits.max_nodes as u64 {
                    return Err(pubsub_error(Cond::NotAllowed, "max-nodes-exceeded"));
                }
                let mut config = NodeConfig::new();
                config.max_items = config.max_items.min(limits.max_items);
                config
                    .apply(&fields, limits.max_items)
                    .map_err(|e| match e {
                        // An option the service cannot set is a precondition it cannot meet.
                        FormError::Unsupported(_) => {
                            let mut err = pubsub_error(Cond::Conflict, "precondition-not-met");
                            err.type_ = ErrorType::Cancel;
                            err
                        }
                        e => form_error(e),
                    })?;
                (config, 0)
            }
        };
        let item = Item {
            id,
            seq: seq + 1,
            when_ms: crate::time::now_ms(),
            payload: payload.clone(),
        };
        self.store
            .put_node(server, owner, node, &config, item.seq)
            .await
            .map_err(internal)?;
        self.store
            .put_item(server, owner, node, &item, config.kept_items())
            .await
            .map_err(internal)?;
        drop(guard);
        let event = Element::builder("items", NS_PUBSUB_EVENT)
            .with_attr("node", node)
            .append(item_element(
                NS_PUBSUB_EVENT,
                &item,
                config.deliver_payloads,
            ))
            .build();
        self.notify(server, owner, node, &config, &event).await;
        Ok(Some(
            Element::builder("pubsub", NS_PUBSUB)
                .append(
                    Element::builder("publish", NS_PUBSUB)
                        .with_attr("node", node)
                        .append(Element::builder("item", NS_PUBSUB).with_attr("id", item.id)),
                )
                .build(),
        ))
    }

    async fn retract(&self, server: &Server, owner: &Jid, retract: &Element) -> IqResponse {
        let node = node_attr(retract)?;
        let ids: Vec<&str> = retract
            .children()
            .filter(|c| c.is("item", NS_PUBSUB))
            .filter_map(|c| c.attribute("id"))
            .collect();
        if ids.is_empty() {
            return Err(pubsub_error(Cond::BadRequest, "item-required"));
        }
        let guard = self.store.lock(owner).await;
        let (config, _) = self
            .store
            .node(server, owner, node)
            .await
            .map_err(internal)?
            .ok_or_else(|| StanzaError::new(Cond::ItemNotFound))?;
        let mut gone = Vec::new();
        for id in ids {
            if self
                .store
                .delete_item(server, owner, node, id)
                .await
                .map_err(internal)?
            {
                gone.push(id);
            }
        }
        drop(guard);
        if gone.is_empty() {
            return Err(StanzaError::new(Cond::ItemNotFound));
        }
        let asked = matches!(retract.attribute("notify"), Some("true" | "1"));
        if asked || config.notify_retract {
            let mut event = Element::builder("items", NS_PUBSUB_EVENT).with_attr("node", node);
            for id in gone {
                event =
                    event.append(Element::builder("retract", NS_PUBSUB_EVENT).with_attr("id", id));
            }
            self.notify(server, owner, node, &config, &event.build())
                .await;
        }
        Ok(None)
    }

    async fn items(&self, server: &Server, owner: &Jid, who: &Jid, req: &Element) -> IqResponse {
        let node = node_attr(req)?;
        self.visible_node(server, owner, who, node).await?;
        let wanted: Vec<&str> = req
            .children()
            .filter(|c| c.is("item", NS_PUBSUB))
            .filter_map(|c| c.attribute("id"))
            .collect();
        let mut items = self
            .store
            .items(server, owner, node)
            .await
            .map_err(internal)?;
        if !wanted.is_empty() {
            items.retain(|i| wanted.contains(&i.id.as_str()));
            if items.is_empty() {
                return Err(StanzaError::new(Cond::ItemNotFound));
            }
        } else if let Some(max) = req.attribute("max_items") {
            let max: usize = max.parse().map_err(|_| {
                StanzaError::with_text(Cond::BadRequest, "max_items is not a number")
            })?;
            let skip = items.len().saturating_sub(max);
            items.drain(..skip);
        }
        let mut list = Element::builder("items", NS_PUBSUB).with_attr("node", node);
        for item in &items {
            list = list.append(item_element(NS_PUBSUB, item, true));
        }
        Ok(Some(
            Element::builder("pubsub", NS_PUBSUB).append(list).build(),
        ))
    }

    async fn create(
        &self,
        server: &Server,
        owner: &Jid,
        create: &Element,
        configure: Option<&Element>,
    ) -> IqResponse {
        let node = match create.attribute("node") {
            // Instant nodes (XEP-0060 §8.1.2) make no sense for PEP's one node per namespace.
            None => return Err(pubsub_error(Cond::NotAcceptable, "nodeid-required")),
            Some(_) => node_attr(create)?,
        };
        let limits = &server.config().pep;
        let fields = form_fields(configure, config::FORM_NODE_CONFIG)?;
        let mut config = NodeConfig::new();
        config.max_items = config.max_items.min(limits.max_items);
        config
            .apply(&fields, limits.max_items)
            .map_err(form_error)?;
        let _guard = self.store.lock(owner).await;
        if self
            .store
            .node(server, owner, node)
            .await
            .map_err(internal)?
            .is_some()
        {
            return Err(StanzaError::new(Cond::Conflict));
        }
        if self
            .store
            .node_count(server, owner)
            .await
            .map_err(internal)?
            >= limits.max_nodes as u64
        {
            return Err(pubsub_error(Cond::NotAllowed, "max-nodes-exceeded"));
        }
        self.store
            .put_node(server, owner, node, &config, 0)
            .await
            .map_err(internal)?;
        Ok(None)
    }

    async fn configure(
        &self,
        server: &Server,
        owner: &Jid,
        kind: IqType,
        configure: &Element,
    ) -> IqResponse {
        let node = node_attr(configure)?;
        let limits = &server.config().pep;
        if kind == IqType::Get {
            let (config, _) = self
                .store
                .node(server, owner, node)
                .await
                .map_err(internal)?
                .ok_or_else(|| StanzaError::new(Cond::ItemNotFound))?;
            return Ok(Some(
                Element::builder("pubsub", NS_PUBSUB_OWNER)
                    .append(
                        Element::builder("configure", NS_PUBSUB_OWNER)
                            .with_attr("node", node)
                            .append(config.to_form()),
                    )
                    .build(),
            ));
        }
        let Some(x) = configure.get_child("x", config::NS_DATA) else {
            return Err(StanzaError::new(Cond::BadRequest));
        };
        if x.attribute("type") == Some("cancel") {
            return Ok(None);
        }
        let fields = config::submitted_fields(x, config::FORM_NODE_CONFIG).map_err(form_error)?;
        let _guard = self.store.lock(owner).await;
        let (mut config, seq) = self
            .store
            .node(server, owner, node)
            .await
            .map_err(internal)?
            .ok_or_else(|| StanzaError::new(Cond::ItemNotFound))?;
        config
            .apply(&fields, limits.max_items)
            .map_err(form_error)?;
        self.store
            .put_node(server, owner, node, &config, seq)
            .await
            .map_err(internal)?;
        self.store
            .trim(server, owner, node, config.kept_items())
            .await
            .map_err(internal)?;
        Ok(None)
    }

    /// Node deletion (`delete`) or purge (`purge`), with notifications (XEP-0060 §8.4, §8.5).
    async fn remove(&self, server: &Server, owner: &Jid, req: &Element) -> IqResponse {
        let node = node_attr(req)?;
        let guard = self.store.lock(owner).await;
        let (config, _) = self
            .store
            .node(server, owner, node)
            .await
            .map_err(internal)?
            .ok_or_else(|| StanzaError::new(Cond::ItemNotFound))?;
        let deleting = req.name() == "delete";
        if deleting {
            self.store
                .delete_node(server, owner, node)
                .await
                .map_err(internal)?;
        } else {
            self.store
                .purge(server, owner, node)
                .await
                .map_err(internal)?;
        }
        drop(guard);
        if !deleting || config.notify_delete {
            let event = Element::builder(req.name(), NS_PUBSUB_EVENT)
                .with_attr("node", node)
                .build();
            self.notify(server, owner, node, &config, &event).await;
        }
        Ok(None)
    }

    async fn affiliations(&self, server: &Server, owner: &Jid, who: &Jid) -> IqResponse {
        let mut list = Element::builder("affiliations", NS_PUBSUB);
        if who == owner {
            for (node, _) in self.store.nodes(server, owner).await.map_err(internal)? {
                list = list.append(
                    Element::builder("affiliation", NS_PUBSUB)
                        .with_attr("node", node)
                        .with_attr("affiliation", "owner"),
                );
            }
        }
        Ok(Some(
            Element::builder("pubsub", NS_PUBSUB).append(list).build(),
        ))
    }

    /// The nodes of `owner` that `who` may see.
    async fn visible_nodes(
        &self,
        server: &Server,
        owner: &Jid,
        who: &Jid,
    ) -> Result<Vec<(String, NodeConfig)>, StorageError> {
        let mut out = Vec::new();
        for (name, config) in self.store.nodes(server, owner).await? {
            if self.may_access(server, owner, who, &config).await? {
                out.push((name, config));
            }
        }
        Ok(out)
    }

    async fn user_request(&self, server: &Server, iq: &IqRequest<'_>) -> IqResponse {
        let owner = iq.to.bare();
        let who = iq.from.bare();
        let is_owner = who == owner;
        let children: Vec<&Element> = iq.payload.children().collect();
        let find = |name: &str| children.iter().copied().find(|c| c.is(name, NS_PUBSUB));
        let action = children
            .iter()
            .copied()
            .find(|c| !matches!(c.name(), "publish-options" | "configure" | "options"))
            .ok_or_else(|| StanzaError::new(Cond::BadRequest))?;
        match (iq.kind, action.name()) {
            (IqType::Set, "publish" | "retract" | "create") if !is_owner => {
                Err(pubsub_error(Cond::Forbidden, "publisher-forbidden"))
            }
            (IqType::Set, "publish") => {
                self.publish(server, &owner, action, find("publish-options"))
                    .await
            }
            (IqType::Set, "retract") => self.retract(server, &owner, action).await,
            (IqType::Set, "create") => self.create(server, &owner, action, find("configure")).await,
            (IqType::Get, "items") => self.items(server, &owner, &who, action).await,
            (IqType::Get, "affiliations") => self.affiliations(server, &owner, &who).await,
            (IqType::Get, "subscriptions") => Ok(Some(
                Element::builder("pubsub", NS_PUBSUB)
                    .append(Element::builder("subscriptions", NS_PUBSUB))
                    .build(),
            )),
            (_, name) => {
                let mut err = StanzaError::with_app(
                    Cond::FeatureNotImplemented,
                    Element::builder("unsupported", NS_PUBSUB_ERRORS)
                        .with_attr("feature", name)
                        .build(),
                );
                err.type_ = ErrorType::Cancel;
                Err(err)
            }
        }
    }

    async fn owner_request(&self, server: &Server, iq: &IqRequest<'_>) -> IqResponse {
        let owner = iq.to.bare();
        if iq.from.bare() != owner {
            return Err(StanzaError::new(Cond::Forbidden));
        }
        let action = iq
            .payload
            .children()
            .next()
            .ok_or_else(|| StanzaError::new(Cond::BadRequest))?;
        match (iq.kind, action.name()) {
            (kind, "configure") => self.configure(server, &owner, kind, action).await,
            (IqType::Set, "delete" | "purge") => self.remove(server, &owner, action).await,
            (IqType::Get, "default") => {
                let mut config = NodeConfig::new();
                config.max_items = config.max_items.min(server.config().pep.max_items);
                Ok(Some(
                    Element::builder("pubsub", NS_PUBSUB_OWNER)
                        .append(
                            Element::builder("default", NS_PUBSUB_OWNER).append(config.to_form()),
                        )
                        .build(),
                ))
            }
            _ => Err(StanzaError::new(Cond::FeatureNotImplemented)),
        }
    }
}

#[async_trait]
impl Module for Pep {
    fn name(&self) -> &'static str {
        "pep"
    }

    fn account_disco_features(&self) -> Vec<&'static str> {
        FEATURES.to_vec()
    }

    fn iq_payloads(&self) -> Vec<(&'static str, &'static str)> {
        vec![(NS_PUBSUB, "pubsub"), (NS_PUBSUB_OWNER, "pubsub")]
    }

    async fn handle_iq(&self, server: &Server, iq: IqRequest<'_>) -> IqResponse {
        if iq.to.node().is_none() {
            // The server itself is no pubsub service; accounts are.
            return Err(StanzaError::new(Cond::ServiceUnavailable));
        }
        if iq.payload.ns() == NS_PUBSUB_OWNER {
            self.owner_request(server, &iq).await
        } else {
            self.user_request(server, &iq).await
        }
    }

    async fn account_disco(&self, server: &Server, iq: &IqRequest<'_>) -> Option<Vec<Element>> {
        let owner = iq.to.bare();
        let who = iq.from.bare();
        let info = iq.payload.ns() == ns::DISCO_INFO;
        let Some(node) = iq.payload.attribute("node") else {
            if info {
                return Some(vec![Element::builder("identity", ns::DISCO_INFO)
                    .with_attr("category", "pubsub")
                    .with_attr("type", "pep")
                    .build()]);
            }
            // XEP-0163 §6.2: only the nodes the asker may see.
            let nodes = match self.visible_nodes(server, &owner, &who).await {
                Ok(n) => n,
                Err(e) => {
                    tracing::error!(error = %e, "PEP storage error");
                    return None;
                }
            };
            return Some(
                nodes
                    .into_iter()
                    .map(|(name, _)| {
                        Element::builder("item", ns::DISCO_ITEMS)
                            .with_attr("jid", owner.as_str())
                            .with_attr("node", name)
                            .build()
                    })
                    .collect(),
            );
        };
        // Node info and items (XEP-0060 §5.3, §5.5) for a node the asker may see.
        self.visible_node(server, &owner, &who, node).await.ok()?;
        if info {
            return Some(vec![
                Element::builder("identity", ns::DISCO_INFO)
                    .with_attr("category", "pubsub")
                    .with_attr("type", "leaf")
                    .build(),
                Element::builder("feature", ns::DISCO_INFO)
                    .with_attr("var", NS_PUBSUB)
                    .build(),
            ]);
        }
        let items = self.store.items(server, &owner, node).await.ok()?;
        Some(
            items
                .into_iter()
                .map(|i| {
                    Element::builder("item", ns::DISCO_ITEMS)
                        .with_attr("jid", owner.as_str())
                        .with_attr("name", i.id)
                        .build()
                })
                .collect(),
        )
    }

    fn hooks(&self) -> Vec<Hook> {
        vec![Hook::Account, Hook::Broadcast, Hook::IqResponse]
    }

    async fn on_stanza(
        &self,
        server: &Server,
        stanza: &Element,
        hook: Hook,
        _ctx: HookContext<'_>,
    ) -> Outcome {
        if hook == Hook::IqResponse {
            return if stanza.name() == "iq" {
                self.caps_answer(server, stanza).await
            } else {
                Outcome::Pass
            };
        }
        if stanza.name() != "presence"
            || !matches!(stanza.attribute("type"), None | Some("unavailable"))
        {
            return Outcome::Pass;
        }
        let Some(from) = stanza
            .jid_attribute("from")
            .filter(|f| f.resource().is_some())
        else {
            return Outcome::Pass;
        };
        let owner = match hook {
            // The owner's own resources (XEP-0163 §4 rule 3).
            Hook::Broadcast => from.bare(),
            Hook::Account => {
                let Some(owner) = stanza.jid_attribute("to") else {
                    return Outcome::Pass;
                };
                let owner = owner.bare();
                if owner == from.bare() {
                    return Outcome::Pass;
                }
                // Auto-subscription follows the presence subscription (§4.1): only contacts
                // subscribed to the owner's presence count, as in Prosody. The roster is read
                // only when the presence could add interest: without usable caps it can only
                // remove some, and caps that change nothing need no check.
                let adds = usable_caps(stanza)
                    .is_some_and(|caps| !self.interest.lock().is_current(&owner, &from, &caps));
                if adds {
                    match self.roster_item(server, &owner, &from.bare()).await {
                        Ok(Some(item)) if item.sub.state.from() => {}
                        Ok(_) => return Outcome::Pass,
                        Err(e) => {
                            tracing::error!(error = %e, "cannot read roster for PEP");
                            return Outcome::Pass;
                        }
                    }
                }
                owner
            }
            _ => return Outcome::Pass,
        };
        self.presence_seen(server, &owner, &from, stanza).await;
        Outcome::Pass
    }

    async fn on_session(&self, server: &Server, event: &SessionEvent) {
        if let SessionEvent::Ended(full) = event {
            if server.router().session(full).is_none() {
                self.interest.lock().forget(full);
            }
        }
    }
}

/// The caps of an available presence of non-negative priority: the only kind that makes an
/// entity want notifications (XEP-0163 §4.2); any other presence ends its interest.
fn usable_caps(presence: &Element) -> Option<CapsRef> {
    let available = presence.attribute("type").is_none();
    let priority = presence
        .get_child("priority", ns::CLIENT)
        .and_then(|p| p.text().trim().parse::<i8>().ok())
        .unwrap_or(0);
    CapsRef::of(presence).filter(|_| available && priority >= 0)
}
