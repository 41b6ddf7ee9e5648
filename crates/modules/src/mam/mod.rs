//! Message Archive Management (XEP-0313, `urn:xmpp:mam:2` and `#extended`): one archive per
//! user, on the user's bare JID, holding the messages the user sends and receives.
//!
//! What it owns:
//! - **Archiving on the delivery path** (§3, §7.1.1). Outgoing messages at [`Hook::Sent`]
//!   (after privacy and every outbound rule passed them), incoming ones at [`Hook::Accepted`]
//!   (after the account's inbound rules accepted them, before delivery or offline storage, so
//!   that every delivered or stored copy carries the archive id). Archived: `chat` and
//!   `normal` messages with a `<body/>` or an end-to-end payload (RFC 3923 `<e2e/>`, OMEMO,
//!   OpenPGP), or with the `<store/>` hint (XEP-0334); never `error`, `headline` or
//!   `groupchat` (a room keeps its own archive), never with `<no-store/>` or
//!   `<no-permanent-store/>`, never a carbons copy. A message to oneself is archived once, as
//!   received. The stored payload is the message as it travelled (serialised by the
//!   Starling writer), so unknown children and `<e2e/>` payloads come back unchanged; `with`
//!   is the other party's bare JID; the id is unpredictable (keyed SipHash of a counter and
//!   the clock) and never reused.
//!   Cost: one `archive_append` per message per archive (a message between two local users
//!   is one write in each user's archive), plus one serialisation. Preferences are read from
//!   storage once per user and then cached; `default='roster'` adds one roster lookup per
//!   message. On SQLite each append is durable (`synchronous=FULL`) before it returns, so
//!   the disk's flush latency is the price of a chat message; appends from concurrent
//!   sessions share one transaction and one fsync (storage's group commit). The two appends
//!   of one message run side by side: the sender's, started at [`Hook::Sent`], is finished
//!   while the message is routed ([`AfterRoute`](starling_core::AfterRoute)) and the
//!   receiver's is made at [`Hook::Accepted`], so they usually share a commit. The message
//!   can thus reach its receiver a moment before the sender's copy is durable; the sending
//!   session reads its next stanza only after it is. The quota adds no write per message (see
//!   [`quota`]). The benchmark (`starling bench archive`) measures it.
//! - **Stanza ids** (§3.5, XEP-0359): the id is put on the message as `<stanza-id by='user'/>`
//!   after deleting any claiming the same `by`. For an outgoing message the id is there for the
//!   carbons `<sent/>` copies only; [`crate::stanza_id`] removes it before the message leaves.
//!   A message that already carries this archive's id and is, byte for byte, the archived
//!   message (the router re-routes what a closing session still had queued) keeps its id and
//!   is not stored twice (§7.1.1); any other id `by` the user is a forgery and is replaced.
//! - **Queries** (§4): the form fields `with` (bare: every resource; full: that resource
//!   only), `start`, `end`, `before-id`, `after-id`, `ids`; RSM `max`/`after`/`before` and the
//!   last page (`<before/>`), `<flip-page/>`; results as XEP-0297 forwards with an XEP-0203
//!   delay, then `<fin complete>` with `<first/>`, `<last/>` and, for unfiltered queries,
//!   `<count/>`. Unknown ids are `item-not-found`. Pages hold at most [`MAX_PAGE`] results
//!   and never more than the requesting session's queue has room for (the rest is a further
//!   page: `complete='false'`), so a query cannot make its own session a slow consumer.
//!   The query form (§4.1.5) and archive metadata (§5) are answered too.
//! - **Preferences** (XEP-0441): `<prefs default='always|never|roster'>` with `always` and
//!   `never` lists, stored in the key-value store `mam-prefs`; the default is `always`.
//! - **Retention** (`[mam] retention_days`, §3.2): older messages are deleted oldest first by
//!   an hourly sweep, and queries never return them in between.
//! - **Quota** (`[mam] max_messages_per_user`, [`quota`], which rooms' archives use too):
//!   past the cap the oldest messages of the archive are deleted, down to 99% of it, with a
//!   log line.
//!
//! What it does not: MUC archives, `include-groupchat`, RSM `<index/>` (refused with
//! `feature-not-implemented`), deleting single messages. Messages that a per-session privacy
//! list filters out after acceptance are archived anyway (the filter runs at delivery).

pub mod prefs;
pub mod query;
pub(crate) mod quota;

use starling_proto::Attr;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use minidom::Element;
use parking_lot::RwLock;
use starling_core::config::MamConfig;
use starling_core::module::{IqRequest, IqResponse, SessionEvent};
use starling_core::xml::BuilderExt;
use starling_core::{Hook, HookContext, Module, Outcome, Server};
use starling_proto::error::{StanzaError, StanzaErrorCondition as Cond};
use starling_proto::jid::Jid;
use starling_proto::stanza::IqType;
use starling_proto::{ns, writer};
use starling_storage::{
    ArchiveItem, ArchiveQuery, StorageError, MAX_ARCHIVE_IDS, MAX_ARCHIVE_PAGE,
};

use crate::carbons::{is_carbon, NS_FORWARD};
use crate::roster::item::STORE as ROSTER_STORE;
use crate::stanza_id::{find, remove_children, stamp, strip_by, UnpredictableIds};
use crate::time::{now_ms, utc_stamp};
use prefs::{Decision, Prefs};
use query::{MamQuery, Page, NS_DATA, NS_MAM, NS_RSM};

/// The storage archive of every user's messages.
pub const STORE: &str = "mam";
/// The key-value store of each user's preferences.
pub const PREFS_STORE: &str = "mam-prefs";
/// The extended feature (§6): before-id/after-id/ids, flipped pages, metadata.
pub const NS_MAM_EXTENDED: &str = "urn:xmpp:mam:2#extended";
/// Most results in one page.
pub const MAX_PAGE: usize = 100;
/// Queue slots a query leaves free in the requesting session (the `<fin/>` and other traffic).
const QUEUE_RESERVE: usize = 4;
/// Users whose preferences are kept in memory; the cache starts over when full.
const MAX_CACHED_PREFS: usize = 10_000;
/// How often expired messages are deleted.
const SWEEP_EVERY: Duration = Duration::from_secs(3600);
/// Milliseconds in a day.
const DAY_MS: i64 = 86_400_000;

/// Hints (XEP-0334).
const NS_HINTS: &str = "urn:xmpp:hints";
/// End-to-end payloads worth archiving without a body: RFC 3923 (both spellings), OMEMO,
/// OpenPGP for XMPP, legacy OpenPGP.
const E2E_PAYLOADS: [(&str, &str); 5] = [
    ("e2e", "urn:ietf:params:xml:ns:xmpp-e2e"),
    ("e2e", "urn:ietf:params:xml:xmpp-e2e"),
    ("encrypted", "eu.siacs.conversations.axolotl"),
    ("openpgp", "urn:xmpp:openpgp:0"),
    ("x", "jabber:x:encrypted"),
];

/// The archive module.
pub struct Mam {
    /// `[mam] retention_days`; 0 keeps everything.
    retention_days: u32,
    /// Preferences by bare JID, read from storage on first use.
    prefs: RwLock<HashMap<Jid, Arc<Prefs>>>,
    /// Whether the retention sweep task was started.
    sweeping: AtomicBool,
    /// Ids, appends and the quota.
    appends: Arc<Appends>,
}

/// What an append needs besides the server; shared with the work an outgoing message leaves
/// running while it is routed ([`AfterRoute`](starling_core::AfterRoute)).
struct Appends {
    /// Archive ids.
    ids: UnpredictableIds,
    /// `[mam] max_messages_per_user` and the archive sizes it needs.
    quota: quota::Quota,
}

impl Appends {
    fn next_id(&self) -> String {
        self.ids.next()
    }

    /// Appends `item` to `user`'s archive: the id it was stored under (a new one if its own
    /// was taken), or `None` once the failure is logged.
    async fn append(&self, server: &Server, user: &Jid, mut item: ArchiveItem) -> Option<String> {
        let node = user.node()?;
        for _ in 0..2 {
            match server
                .storage()
                .archive_append(user.domain(), node, STORE, &item)
                .await
            {
                Ok(()) => {
                    self.quota.appended(server, &user.bare()).await;
                    return Some(item.id);
                }
                // A 128-bit collision: draw again.
                Err(StorageError::AlreadyExists) => item.id = self.next_id(),
                Err(e) => {
                    tracing::error!(error = %e, %user, "archiving a message failed");
                    return None;
                }
            }
        }
        None
    }
}

impl Mam {
    /// An archive with the settings of `[mam]`.
    pub fn new(config: &MamConfig) -> Mam {
        Mam {
            retention_days: config.retention_days,
            prefs: RwLock::new(HashMap::new()),
            sweeping: AtomicBool::new(false),
            appends: Arc::new(Appends {
                ids: UnpredictableIds::new(),
                quota: quota::Quota::new(config.max_messages_per_user, STORE, "user"),
            }),
        }
    }

    fn next_id(&self) -> String {
        self.appends.next_id()
    }

    /// Messages before this instant are expired (`None`: nothing expires).
    fn cutoff_ms(&self) -> Option<i64> {
        (self.retention_days > 0).then(|| now_ms() - i64::from(self.retention_days) * DAY_MS)
    }

    async fn prefs_of(&self, server: &Server, user: &Jid) -> Result<Arc<Prefs>, StorageError> {
        if let Some(p) = self.prefs.read().get(user) {
            return Ok(p.clone());
        }
        let node = user.node().unwrap_or_default();
        let stored = server
            .storage()
            .kv_get(user.domain(), node, PREFS_STORE)
            .await?;
        let prefs = stored
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .and_then(|s| s.parse::<Element>().ok())
            .and_then(|el| Prefs::parse(&el).ok())
            .unwrap_or_default();
        let prefs = Arc::new(prefs);
        self.cache_prefs(user, prefs.clone());
        Ok(prefs)
    }

    fn cache_prefs(&self, user: &Jid, prefs: Arc<Prefs>) {
        let mut cache = self.prefs.write();
        if cache.len() >= MAX_CACHED_PREFS && !cache.contains_key(user) {
            cache.clear();
        }
        cache.insert(user.clone(), prefs);
    }

    /// What to append to `user`'s archive for `msg`, if the preferences allow it.
    async fn item_for(
        &self,
        server: &Server,
        user: &Jid,
        other: &Jid,
        msg: &Element,
    ) -> Option<ArchiveItem> {
        let node = user.node()?;
        let storage = server.storage();
        let prefs = match self.prefs_of(server, user).await {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, %user, "reading archive preferences failed");
                return None;
            }
        };
        match prefs.decide(other) {
            Decision::Archive => {}
            Decision::Skip => return None,
            Decision::IfInRoster => {
                let bare = other.bare();
                match storage
                    .map_get(user.domain(), node, ROSTER_STORE, bare.as_str())
                    .await
                {
                    Ok(Some(_)) => {}
                    Ok(None) => return None,
                    Err(e) => {
                        tracing::error!(error = %e, %user, "roster lookup for archiving failed");
                        return None;
                    }
                }
            }
        }
        let mut payload = Vec::new();
        writer::write_element(msg, &mut payload);
        Some(ArchiveItem {
            id: self.next_id(),
            when_ms: now_ms(),
            with: other.bare().as_str().to_owned(),
            payload,
        })
    }

    /// The archive id of `msg` if it carries one `by` this archive and *is* the archived
    /// message (payload compared byte for byte once the id, and the delay offline storage
    /// adds, are removed). Forged ids fail the comparison and are stripped as usual; messages
    /// without such an id, i.e. all fresh traffic, cost nothing here.
    async fn rerouted(&self, server: &Server, user: &Jid, msg: &Element) -> Option<String> {
        let id = find(msg, user.as_str())?.to_owned();
        let page = server
            .storage()
            .archive_query(
                user.domain(),
                user.node()?,
                STORE,
                &ArchiveQuery {
                    ids: Some(vec![id.clone()]),
                    limit: 1,
                    ..ArchiveQuery::default()
                },
            )
            .await
            .ok()?;
        let stored = page.items.first()?;
        let mut plain = msg.clone();
        strip_by(&mut plain, user.as_str());
        remove_children(&mut plain, |c| {
            c.is("delay", ns::DELAY) && c.attribute("from") == Some(user.domain())
        });
        let mut bytes = Vec::new();
        writer::write_element(&plain, &mut bytes);
        (bytes == stored.payload).then_some(id)
    }

    fn start_sweeper(&self, server: &Server) {
        if self.retention_days == 0 || self.sweeping.swap(true, Ordering::Relaxed) {
            return;
        }
        let Some(server) = server.arc() else { return };
        let days = self.retention_days;
        tokio::spawn(async move {
            loop {
                sweep(&server, days).await;
                let stop = server.shutdown_token().clone();
                if tokio::time::timeout(SWEEP_EVERY, stop.cancelled())
                    .await
                    .is_ok()
                {
                    break;
                }
            }
        });
    }

    async fn handle_query(&self, server: &Server, iq: &IqRequest<'_>, user: &Jid) -> IqResponse {
        if iq.kind == IqType::Get {
            return Ok(Some(query_form()));
        }
        let q = query::parse(iq.payload)?;
        let Some(session) = server.router().session(iq.from) else {
            // The requester is gone; nobody to answer.
            return Ok(None);
        };
        let room = session.capacity().saturating_sub(QUEUE_RESERVE);
        if room == 0 {
            return Err(StanzaError::with_text(
                Cond::ResourceConstraint,
                "your session's queue is full; retry the query later",
            ));
        }
        let limit = q.max.unwrap_or(MAX_PAGE).min(MAX_PAGE).min(room);
        let node = user.node().unwrap_or_default();
        let (items, complete) = self
            .run_query(server, user.domain(), node, &q, limit)
            .await
            .map_err(storage_error)?;
        let count = if unfiltered(&q) && self.retention_days == 0 {
            server
                .storage()
                .archive_count(user.domain(), node, STORE)
                .await
                .ok()
        } else {
            None
        };
        let mut ordered: Vec<&ArchiveItem> = items.iter().collect();
        if q.flip {
            ordered.reverse();
        }
        for item in ordered {
            let result = result_message(item, iq.from, user, q.queryid.as_deref());
            if !server.deliver_to(&session, iq.from, result).await && session.is_closed() {
                return Ok(None);
            }
        }
        let mut set = Element::builder("set", NS_RSM);
        if let (Some(first), Some(last)) = (items.first(), items.last()) {
            set = set
                .append(Element::builder("first", NS_RSM).append(first.id.as_str()))
                .append(Element::builder("last", NS_RSM).append(last.id.as_str()));
        }
        if let Some(n) = count {
            set = set.append(Element::builder("count", NS_RSM).append(n.to_string()));
        }
        let mut fin = Element::builder("fin", NS_MAM)
            .with_attr("complete", if complete { "true" } else { "false" });
        if let Some(qid) = &q.queryid {
            fin = fin.with_attr("queryid", qid.as_str());
        }
        Ok(Some(fin.append(set).build()))
    }

    /// The page of items `q` asks for, oldest first, and whether it is the last one in the
    /// paging direction.
    async fn run_query(
        &self,
        server: &Server,
        domain: &str,
        node: &str,
        q: &MamQuery,
        limit: usize,
    ) -> Result<(Vec<ArchiveItem>, bool), StorageError> {
        let storage = server.storage();
        let mut base = ArchiveQuery {
            start_ms: q.start_ms,
            end_ms: q.end_ms,
            with: q.with.as_ref().map(|w| w.bare().as_str().to_owned()),
            after_id: q.after_id.clone(),
            before_id: q.before_id.clone(),
            ids: None,
            limit,
            reverse: false,
        };
        if let Some(cutoff) = self.cutoff_ms() {
            base.start_ms = Some(base.start_ms.map_or(cutoff, |s| s.max(cutoff)));
        }
        if let Some(ids) = &q.ids {
            let mut unique = ids.clone();
            unique.sort_unstable();
            unique.dedup();
            if unique.len() > MAX_ARCHIVE_IDS {
                return Err(StorageError::LimitExceeded(format!(
                    "at most {MAX_ARCHIVE_IDS} ids"
                )));
            }
            // §4.1.3: every id named must exist.
            let found = storage
                .archive_query(
                    domain,
                    node,
                    STORE,
                    &ArchiveQuery {
                        ids: Some(unique.clone()),
                        limit: unique.len(),
                        ..ArchiveQuery::default()
                    },
                )
                .await?;
            if found.items.len() < unique.len() {
                return Err(StorageError::NotFound);
            }
            base.ids = Some(unique);
        }
        match &q.page {
            Page::First => {}
            Page::Last => base.reverse = true,
            Page::After(id) => {
                base.after_id = Some(match base.after_id.take() {
                    Some(other) => later_of(server, domain, node, id, &other, true).await?,
                    None => id.clone(),
                });
            }
            Page::Before(id) => {
                base.reverse = true;
                base.before_id = Some(match base.before_id.take() {
                    Some(other) => later_of(server, domain, node, id, &other, false).await?,
                    None => id.clone(),
                });
            }
        }
        match q.with.as_ref().filter(|w| w.resource().is_some()) {
            None => {
                let page = storage.archive_query(domain, node, STORE, &base).await?;
                Ok((page.items, page.complete))
            }
            Some(full) => scan_full_jid(server, domain, node, base, full).await,
        }
    }
}

/// With both an RSM id and a form id bounding the same side, the tighter bound: for `after`
/// the later of the two items, for `before` the earlier. Both must exist.
async fn later_of(
    server: &Server,
    domain: &str,
    node: &str,
    rsm: &str,
    form: &str,
    after: bool,
) -> Result<String, StorageError> {
    let storage = server.storage();
    let probe =
        |q: ArchiveQuery| async move { storage.archive_query(domain, node, STORE, &q).await };
    let exists = probe(ArchiveQuery {
        ids: Some(vec![rsm.to_owned()]),
        limit: 1,
        ..ArchiveQuery::default()
    })
    .await?;
    if exists.items.is_empty() {
        return Err(StorageError::NotFound);
    }
    let beyond = probe(ArchiveQuery {
        ids: Some(vec![rsm.to_owned()]),
        after_id: after.then(|| form.to_owned()),
        before_id: (!after).then(|| form.to_owned()),
        limit: 1,
        ..ArchiveQuery::default()
    })
    .await?;
    Ok(if beyond.items.is_empty() { form } else { rsm }.to_owned())
}

/// A query whose `with` is a full JID: storage filters on the bare JID, this keeps the items
/// sent to or received from exactly that resource (§4.1.1), scanning in the paging direction.
async fn scan_full_jid(
    server: &Server,
    domain: &str,
    node: &str,
    base: ArchiveQuery,
    full: &Jid,
) -> Result<(Vec<ArchiveItem>, bool), StorageError> {
    let limit = base.limit;
    let reverse = base.reverse;
    let mut cursor = ArchiveQuery {
        limit: MAX_ARCHIVE_PAGE,
        ..base
    };
    let mut out = Vec::new();
    let complete = loop {
        let page = server
            .storage()
            .archive_query(domain, node, STORE, &cursor)
            .await?;
        let (Some(first), Some(last)) = (page.items.first(), page.items.last()) else {
            break true;
        };
        if reverse {
            cursor.before_id = Some(first.id.clone());
        } else {
            cursor.after_id = Some(last.id.clone());
        }
        let mut in_order = page.items;
        if reverse {
            in_order.reverse();
        }
        for item in in_order {
            if involves(&item, full) {
                out.push(item);
                if out.len() > limit {
                    break;
                }
            }
        }
        if out.len() > limit {
            break false;
        }
        if page.complete {
            break true;
        }
    };
    out.truncate(limit);
    if reverse {
        out.reverse();
    }
    Ok((out, complete))
}

/// Whether the archived message was sent to or received from exactly `full`.
fn involves(item: &ArchiveItem, full: &Jid) -> bool {
    let Some(msg) = parse_payload(item) else {
        return false;
    };
    ["from", "to"]
        .into_iter()
        .any(|a| msg.jid_attribute(a).is_some_and(|j| j == *full))
}

fn parse_payload(item: &ArchiveItem) -> Option<Element> {
    std::str::from_utf8(&item.payload)
        .ok()
        .and_then(|s| s.parse::<Element>().ok())
}

fn unfiltered(q: &MamQuery) -> bool {
    q.with.is_none()
        && q.start_ms.is_none()
        && q.end_ms.is_none()
        && q.after_id.is_none()
        && q.before_id.is_none()
        && q.ids.is_none()
}

fn storage_error(e: StorageError) -> StanzaError {
    match e {
        StorageError::NotFound => StanzaError::with_text(
            Cond::ItemNotFound,
            "an id named in the query is not in the archive",
        ),
        StorageError::LimitExceeded(why) => StanzaError::with_text(Cond::PolicyViolation, why),
        other => {
            tracing::error!(error = %other, "archive query failed");
            StanzaError::new(Cond::InternalServerError)
        }
    }
}

/// One `<message><result><forwarded>…` (§4.2).
fn result_message(item: &ArchiveItem, to: &Jid, archive: &Jid, queryid: Option<&str>) -> Element {
    let mut forwarded = Element::builder("forwarded", NS_FORWARD)
        .append(Element::builder("delay", ns::DELAY).with_attr("stamp", utc_stamp(item.when_ms)));
    match parse_payload(item) {
        Some(msg) => forwarded = forwarded.append(msg),
        // §3.2 lets a server omit the message but never the id.
        None => tracing::error!(id = %item.id, "unparsable archived message"),
    }
    let mut result = Element::builder("result", NS_MAM).with_attr("id", item.id.as_str());
    if let Some(qid) = queryid {
        result = result.with_attr("queryid", qid);
    }
    Element::builder("message", ns::CLIENT)
        .with_attr("from", archive.as_str())
        .with_attr("to", to.as_str())
        .append(result.append(forwarded))
        .build()
}

/// The fields a query may use (§4.1.5).
fn query_form() -> Element {
    let field = |var: &str, kind: &str| {
        Element::builder("field", NS_DATA)
            .with_attr("var", var)
            .with_attr("type", kind)
    };
    let form = Element::builder("x", NS_DATA)
        .with_attr("type", "form")
        .append(
            field("FORM_TYPE", "hidden").append(Element::builder("value", NS_DATA).append(NS_MAM)),
        )
        .append(field("with", "jid-single"))
        .append(field("start", "text-single"))
        .append(field("end", "text-single"))
        .append(field("before-id", "text-single"))
        .append(field("after-id", "text-single"))
        .append(
            field("ids", "list-multi").append(
                Element::builder("validate", "http://jabber.org/protocol/xdata-validate")
                    .with_attr("datatype", "xs:string")
                    .append(Element::builder(
                        "open",
                        "http://jabber.org/protocol/xdata-validate",
                    )),
            ),
        );
    Element::builder("query", NS_MAM).append(form).build()
}

/// Which messages belong in a user archive (see the module docs).
pub fn archivable(msg: &Element) -> bool {
    if !matches!(msg.attribute("type"), None | Some("normal" | "chat")) || is_carbon(msg) {
        return false;
    }
    let hint = |name| msg.children().any(|c| c.is(name, NS_HINTS));
    if hint("no-store") || hint("no-permanent-store") {
        return false;
    }
    hint("store")
        || msg.get_child("body", ns::CLIENT).is_some()
        || E2E_PAYLOADS
            .iter()
            .any(|(name, ns)| msg.get_child(*name, *ns).is_some())
}

/// Deletes expired messages of every user of every host.
async fn sweep(server: &Server, days: u32) {
    let cutoff = now_ms() - i64::from(days) * DAY_MS;
    let storage = server.storage();
    for host in &server.config().server.hosts {
        let users = match storage.list_accounts(host).await {
            Ok(u) => u,
            Err(e) => {
                tracing::error!(error = %e, "listing accounts for archive expiry failed");
                continue;
            }
        };
        for user in users {
            if server.shutdown_token().is_cancelled() {
                return;
            }
            match storage
                .archive_delete(host, &user, STORE, None, Some(cutoff))
                .await
            {
                Ok(0) => {}
                Ok(n) => tracing::debug!(%user, n, "expired archived messages"),
                Err(e) => tracing::error!(error = %e, %user, "archive expiry failed"),
            }
        }
    }
}

#[async_trait]
impl Module for Mam {
    fn name(&self) -> &'static str {
        "mam"
    }

    fn account_disco_features(&self) -> Vec<&'static str> {
        vec![NS_MAM, NS_MAM_EXTENDED]
    }

    fn iq_payloads(&self) -> Vec<(&'static str, &'static str)> {
        vec![(NS_MAM, "query"), (NS_MAM, "prefs"), (NS_MAM, "metadata")]
    }

    async fn handle_iq(&self, server: &Server, iq: IqRequest<'_>) -> IqResponse {
        // §8.1: a user archive is its owner's alone; the server keeps no archive of its own.
        if iq.to.node().is_none() {
            return Err(StanzaError::new(Cond::ServiceUnavailable));
        }
        let user = iq.to.bare();
        if iq.from.bare() != user {
            return Err(StanzaError::new(Cond::Forbidden));
        }
        let node = user.node().unwrap_or_default();
        match iq.payload.name() {
            "query" => self.handle_query(server, &iq, &user).await,
            "prefs" if iq.kind == IqType::Get => {
                let prefs = self.prefs_of(server, &user).await.map_err(storage_error)?;
                Ok(Some(prefs.to_element()))
            }
            "prefs" => {
                let prefs = Prefs::parse(iq.payload)?;
                let el = prefs.to_element();
                let mut bytes = Vec::new();
                writer::write_element(&el, &mut bytes);
                server
                    .storage()
                    .kv_set(user.domain(), node, PREFS_STORE, &bytes)
                    .await
                    .map_err(storage_error)?;
                self.cache_prefs(&user, Arc::new(prefs));
                Ok(Some(el))
            }
            "metadata" if iq.kind == IqType::Get => {
                let mut meta = Element::builder("metadata", NS_MAM);
                for (name, reverse) in [("start", false), ("end", true)] {
                    let q = ArchiveQuery {
                        start_ms: self.cutoff_ms(),
                        limit: 1,
                        reverse,
                        ..ArchiveQuery::default()
                    };
                    let page = server
                        .storage()
                        .archive_query(user.domain(), node, STORE, &q)
                        .await
                        .map_err(storage_error)?;
                    if let Some(item) = page.items.first() {
                        meta = meta.append(
                            Element::builder(name, NS_MAM)
                                .with_attr("id", item.id.as_str())
                                .with_attr("timestamp", utc_stamp(item.when_ms)),
                        );
                    }
                }
                Ok(Some(meta.build()))
            }
            _ => Err(StanzaError::new(Cond::BadRequest)),
        }
    }

    fn hooks(&self) -> Vec<Hook> {
        vec![Hook::Sent, Hook::Accepted]
    }

    async fn edit_stanza(
        &self,
        server: &Server,
        stanza: &mut Element,
        hook: Hook,
        ctx: HookContext<'_>,
    ) -> Outcome {
        if stanza.name() != "message" {
            return Outcome::Pass;
        }
        let (Some(from), Some(to)) = (stanza.jid_attribute("from"), stanza.jid_attribute("to"))
        else {
            return Outcome::Pass;
        };
        let (user, other) = match hook {
            Hook::Sent => (from.bare(), to),
            Hook::Accepted => (to.bare(), from),
            _ => return Outcome::Pass,
        };
        if hook == Hook::Accepted {
            if let Some(id) = self.rerouted(server, &user, stanza).await {
                // Already archived: a session ended with it queued and the router sent it on
                // (or stream management redelivers it). Archived once, same id.
                stamp(stanza, user.as_str(), &id);
                return Outcome::Pass;
            }
        }
        // XEP-0359: ids claiming to come from this archive are never trusted.
        strip_by(stanza, user.as_str());
        if hook == Hook::Sent && other.bare() == user {
            // To oneself: archived once, when accepted.
            return Outcome::Pass;
        }
        if !archivable(stanza) {
            return Outcome::Pass;
        }
        let Some(item) = self.item_for(server, &user, &other, stanza).await else {
            return Outcome::Pass;
        };
        if let (Hook::Sent, Some(after), Some(server)) = (hook, ctx.after_route, server.arc()) {
            // The sender's copy is stored while the message is routed (its receiver's append
            // then usually shares the commit); the sending session waits for it before its
            // next stanza. The id is stamped now, for the carbons copies: should the append
            // fail, they carry an id the archive lacks (the failure is logged).
            stamp(stanza, user.as_str(), &item.id);
            let appends = self.appends.clone();
            let drawn = item.id.clone();
            after.push(async move {
                if let Some(id) = appends.append(&server, &user, item).await {
                    if id != drawn {
                        tracing::warn!(%user, "archive id taken: the sent message's carbons copies carry the id it replaced");
                    }
                }
            });
        } else if let Some(id) = self.appends.append(server, &user, item).await {
            stamp(stanza, user.as_str(), &id);
        }
        Outcome::Pass
    }

    async fn on_session(&self, server: &Server, event: &SessionEvent) {
        if let SessionEvent::Bound(_) = event {
            self.start_sweeper(server);
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
    fn what_is_archived() {
        let yes = |s: &str| assert!(archivable(&msg(s)), "{s}");
        let no = |s: &str| assert!(!archivable(&msg(s)), "{s}");
        yes("<message xmlns='jabber:client' type='chat'><body>hi</body></message>");
        yes("<message xmlns='jabber:client'><body>hi</body></message>");
        yes("<message xmlns='jabber:client' type='chat'><e2e xmlns='urn:ietf:params:xml:ns:xmpp-e2e'>x</e2e></message>");
        yes("<message xmlns='jabber:client' type='chat'><encrypted xmlns='eu.siacs.conversations.axolotl'/></message>");
        yes("<message xmlns='jabber:client' type='chat'><received xmlns='urn:xmpp:receipts'/><store xmlns='urn:xmpp:hints'/></message>");
        no("<message xmlns='jabber:client' type='chat'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>");
        no("<message xmlns='jabber:client' type='headline'><body>news</body></message>");
        no("<message xmlns='jabber:client' type='groupchat'><body>room</body></message>");
        no("<message xmlns='jabber:client' type='error'><body>hi</body></message>");
        no("<message xmlns='jabber:client' type='chat'><body>x</body><no-store xmlns='urn:xmpp:hints'/></message>");
        no("<message xmlns='jabber:client' type='chat'><body>x</body><no-permanent-store xmlns='urn:xmpp:hints'/></message>");
        no("<message xmlns='jabber:client' type='chat'><body>x</body><sent xmlns='urn:xmpp:carbons:2'/></message>");
    }

    #[test]
    fn ids_are_unique_and_opaque() {
        let m = Mam::new(&MamConfig::default());
        let ids: std::collections::HashSet<_> = (0..1000).map(|_| m.next_id()).collect();
        assert_eq!(ids.len(), 1000);
        assert!(ids.iter().all(|i| i.len() == 32));
        // Another server instance draws other keys.
        let other = Mam::new(&MamConfig::default());
        assert!(!ids.contains(&other.next_id()));
    }

    #[test]
    fn result_wraps_the_stored_message() {
        let original = msg("<message xmlns='jabber:client' from='a@x/r' to='b@x' type='chat'>\
            <body>hi</body><e2e xmlns='urn:ietf:params:xml:ns:xmpp-e2e'>line&#xD;\nmore</e2e></message>");
        let mut payload = Vec::new();
        writer::write_element(&original, &mut payload);
        let item = ArchiveItem {
            id: "id1".into(),
            when_ms: 1_031_699_305_123,
            with: "a@x".into(),
            payload,
        };
        let to = Jid::parse("b@x/phone").unwrap();
        let archive = Jid::parse("b@x").unwrap();
        let r = result_message(&item, &to, &archive, Some("q1"));
        let result = r.get_child("result", NS_MAM).unwrap();
        assert_eq!(result.attribute("id"), Some("id1"));
        assert_eq!(result.attribute("queryid"), Some("q1"));
        let fwd = result.get_child("forwarded", NS_FORWARD).unwrap();
        assert_eq!(
            fwd.get_child("delay", ns::DELAY)
                .unwrap()
                .attribute("stamp"),
            Some("2002-09-10T23:08:25.123Z")
        );
        assert_eq!(fwd.get_child("message", ns::CLIENT).unwrap(), &original);
    }
}
