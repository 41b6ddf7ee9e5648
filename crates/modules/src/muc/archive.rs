//! The room archive: MAM on the room's JID (XEP-0313 §5.1.2, `urn:xmpp:mam:2`), written when
//! `muc#roomconfig_enablelogging` is on, with the room's stanza id (XEP-0359) as archive id;
//! retractions (XEP-0424) and moderations (XEP-0425) replace the archived message by a
//! tombstone. Queries are parsed by [`crate::mam::query::parse`] (form fields and RSM); `with`
//! filters on the occupant's room JID (`room@service/nick`).
//!
//! The stored payload is the message as broadcast, without `to`: what an occupant saw, so a
//! semi-anonymous room's archive does not reveal real JIDs.
//!
//! Quota (`[muc] max_messages_per_room`): past the cap the oldest messages of the room's
//! archive are deleted, down to 99% of it, with a log line; the same code as the per-user
//! quota ([`crate::mam::quota`]), so a chatty room cannot fill the disk. The in-memory
//! history of the room (`history_max`) is not touched.

use minidom::Element;
use starling_core::xml::BuilderExt;
use starling_core::{Server, SharedStanza};
use starling_proto::error::{StanzaError, StanzaErrorCondition as Cond};
use starling_proto::jid::Jid;
use starling_proto::Attr;
use starling_proto::{ns, writer};
use starling_storage::{ArchiveItem, ArchiveQuery, StorageError};

use super::room::{deliver, Room};
use super::{NS_MODERATE, NS_OCCUPANT_ID, NS_RETRACT};
use crate::carbons::NS_FORWARD;
use crate::mam::query::{self, Page, NS_MAM, NS_RSM};
use crate::time::{now_ms, utc_stamp};

/// The archive store of rooms.
pub const STORE: &str = "muc";
/// Most results in one page.
const MAX_PAGE: usize = 100;

fn parse(item: &ArchiveItem) -> Option<Element> {
    std::str::from_utf8(&item.payload).ok()?.parse().ok()
}

impl Room {
    fn node(&self) -> &str {
        self.jid.node().unwrap_or_default()
    }

    /// Archives a broadcast message under its stanza id, then applies the room quota.
    pub async fn archive(
        &self,
        server: &Server,
        svc: &super::Service,
        id: &str,
        when_ms: i64,
        nick: &str,
        shared: &SharedStanza,
    ) {
        // The bytes the fan-out wrote: the message as broadcast, serialised once.
        let payload = shared.unaddressed_bytes();
        let item = ArchiveItem {
            id: id.to_owned(),
            when_ms,
            with: self.nick_jid(nick),
            payload,
        };
        match server
            .storage()
            .archive_append(self.jid.domain(), self.node(), STORE, &item)
            .await
        {
            Ok(()) => svc.archive_quota.appended(server, &self.jid).await,
            Err(e) => {
                tracing::error!(error = %e, room = %self.jid, "archiving a room message failed")
            }
        }
    }

    async fn archived(&self, server: &Server, id: &str) -> Option<ArchiveItem> {
        let page = server
            .storage()
            .archive_query(
                self.jid.domain(),
                self.node(),
                STORE,
                &ArchiveQuery {
                    ids: Some(vec![id.to_owned()]),
                    limit: 1,
                    ..ArchiveQuery::default()
                },
            )
            .await
            .ok()?;
        page.items.into_iter().next()
    }

    /// The occupant id of the author of archived message `id`.
    pub async fn archived_author(&self, server: &Server, id: &str) -> Option<String> {
        let item = self.archived(server, id).await?;
        let msg = parse(&item)?;
        msg.get_child("occupant-id", NS_OCCUPANT_ID)
            .and_then(|o| o.attribute("id"))
            .map(str::to_owned)
    }

    /// Replaces archived message `id` by a tombstone (XEP-0424 §6, XEP-0425 §6): same id,
    /// time and sender, the body gone, `<retracted/>` (with the moderation, if any) instead.
    /// Also drops it from the in-memory history. Returns whether it was archived.
    pub async fn tombstone(
        &mut self,
        server: &Server,
        id: &str,
        moderated: Option<Element>,
    ) -> bool {
        self.history
            .retain(|h| crate::stanza_id::find(&h.msg, self.jid.as_str()) != Some(id));
        let Some(item) = self.archived(server, id).await else {
            return false;
        };
        let Some(old) = parse(&item) else {
            return false;
        };
        let mut stone = Element::builder("message", ns::CLIENT)
            .with_attr("type", "groupchat")
            .with_attr("from", old.attribute("from").unwrap_or_default())
            .build();
        if let Some(oid) = old.get_child("occupant-id", NS_OCCUPANT_ID) {
            stone.append_child(oid.clone());
        }
        let mut retracted = Element::builder("retracted", NS_RETRACT)
            .with_attr("stamp", utc_stamp(now_ms()))
            .build();
        if let Some(m) = moderated {
            retracted.append_child(m);
        }
        stone.append_child(retracted);
        stone.append_child(
            Element::builder("stanza-id", crate::stanza_id::NS_SID)
                .with_attr("id", id)
                .with_attr("by", self.jid.as_str())
                .build(),
        );
        let storage = server.storage();
        let ids = [id.to_owned()];
        let mut payload = Vec::new();
        writer::write_element(&stone, &mut payload);
        let replaced = ArchiveItem { payload, ..item };
        let r = match storage
            .archive_delete(self.jid.domain(), self.node(), STORE, Some(&ids), None)
            .await
        {
            Ok(_) => {
                storage
                    .archive_append(self.jid.domain(), self.node(), STORE, &replaced)
                    .await
            }
            Err(e) => Err(e),
        };
        if let Err(e) = r {
            tracing::error!(error = %e, room = %self.jid, "writing a tombstone failed");
        }
        true
    }

    /// A moderator retracts someone's message (XEP-0425 §4).
    pub async fn moderate(
        &mut self,
        server: &Server,
        svc: &super::Service,
        from: &Jid,
        payload: &Element,
    ) -> Result<Option<Element>, StanzaError> {
        let Some(nick) = self.sessions.get(from).cloned() else {
            return Err(StanzaError::new(Cond::Forbidden));
        };
        let o = &self.occupants[&nick];
        if o.role != super::roles::Role::Moderator {
            return Err(StanzaError::new(Cond::Forbidden));
        }
        let mod_oid = self.occupant_id(&o.real);
        if payload.get_child("retract", NS_RETRACT).is_none() {
            return Err(StanzaError::new(Cond::BadRequest));
        }
        let Some(id) = payload.attribute("id").map(str::to_owned) else {
            return Err(StanzaError::new(Cond::BadRequest));
        };
        let reason = payload.get_child("reason", NS_MODERATE).map(|r| r.text());
        let by = self.nick_jid(&nick);
        let moderated = || {
            Element::builder("moderated", NS_MODERATE)
                .with_attr("by", by.as_str())
                .append(
                    Element::builder("occupant-id", NS_OCCUPANT_ID)
                        .with_attr("id", mod_oid.as_str()),
                )
                .build()
        };
        let m = moderated();
        if !self.tombstone(server, &id, Some(m)).await {
            return Err(StanzaError::new(Cond::ItemNotFound));
        }
        let mut retract = Element::builder("retract", NS_RETRACT)
            .with_attr("id", id.as_str())
            .append(moderated());
        if let Some(r) = &reason {
            retract = retract.append(Element::builder("reason", NS_RETRACT).append(r.as_str()));
        }
        let new_id = svc.random_id();
        let mut msg = Element::builder("message", ns::CLIENT)
            .with_attr("type", "groupchat")
            .with_attr("from", self.jid.as_str())
            .with_attr("id", new_id.as_str())
            .append(retract)
            .build();
        crate::stanza_id::stamp(&mut msg, self.jid.as_str(), &new_id);
        let shared = self.fan_out(server, &msg).await;
        if self.config.logging {
            self.archive(server, svc, &new_id, now_ms(), "", &shared)
                .await;
        }
        Ok(None)
    }

    /// A MAM query to the room (XEP-0313 §5.1.2): occupants and, unless the room is
    /// members-only, anyone may read a public room's archive; members-only rooms need an
    /// affiliation.
    pub async fn mam_query(
        &self,
        server: &Server,
        svc: &super::Service,
        from: &Jid,
        kind_get: bool,
        payload: &Element,
    ) -> Result<Option<Element>, StanzaError> {
        let aff = self.affiliation(svc, &from.bare());
        let occupant = self.sessions.contains_key(from);
        let allowed = occupant
            || aff >= super::roles::Affiliation::Member
            || (self.config.public && !self.config.members_only && !self.config.password_protected);
        if !allowed || aff == super::roles::Affiliation::Outcast {
            return Err(StanzaError::new(Cond::Forbidden));
        }
        if kind_get {
            return Ok(Some(
                Element::builder("query", NS_MAM)
                    .append(
                        Element::builder("x", query::NS_DATA)
                            .with_attr("type", "form")
                            .append(
                                Element::builder("field", query::NS_DATA)
                                    .with_attr("var", "FORM_TYPE")
                                    .with_attr("type", "hidden")
                                    .append(
                                        Element::builder("value", query::NS_DATA).append(NS_MAM),
                                    ),
                            )
                            .append(
                                Element::builder("field", query::NS_DATA)
                                    .with_attr("var", "with")
                                    .with_attr("type", "jid-single"),
                            )
                            .append(
                                Element::builder("field", query::NS_DATA)
                                    .with_attr("var", "start")
                                    .with_attr("type", "text-single"),
                            )
                            .append(
                                Element::builder("field", query::NS_DATA)
                                    .with_attr("var", "end")
                                    .with_attr("type", "text-single"),
                            ),
                    )
                    .build(),
            ));
        }
        let q = query::parse(payload)?;
        let limit = q.max.unwrap_or(MAX_PAGE).min(MAX_PAGE);
        let mut aq = ArchiveQuery {
            start_ms: q.start_ms,
            end_ms: q.end_ms,
            with: q.with.as_ref().map(|w| w.as_str().to_owned()),
            after_id: q.after_id.clone(),
            before_id: q.before_id.clone(),
            ids: q.ids.clone(),
            limit,
            reverse: false,
        };
        match &q.page {
            Page::First => {}
            Page::Last => aq.reverse = true,
            Page::After(id) => aq.after_id = Some(id.clone()),
            Page::Before(id) => {
                aq.reverse = true;
                aq.before_id = Some(id.clone());
            }
        }
        let page = server
            .storage()
            .archive_query(self.jid.domain(), self.node(), STORE, &aq)
            .await
            .map_err(|e| match e {
                StorageError::NotFound => StanzaError::new(Cond::ItemNotFound),
                StorageError::LimitExceeded(t) => StanzaError::with_text(Cond::PolicyViolation, t),
                other => {
                    tracing::error!(error = %other, "room archive query failed");
                    StanzaError::new(Cond::InternalServerError)
                }
            })?;
        let mut items: Vec<&ArchiveItem> = page.items.iter().collect();
        if q.flip {
            items.reverse();
        }
        for item in &items {
            let mut forwarded = Element::builder("forwarded", NS_FORWARD).append(
                Element::builder("delay", ns::DELAY).with_attr("stamp", utc_stamp(item.when_ms)),
            );
            if let Some(m) = parse(item) {
                forwarded = forwarded.append(m);
            }
            let mut result = Element::builder("result", NS_MAM).with_attr("id", item.id.as_str());
            if let Some(qid) = &q.queryid {
                result = result.with_attr("queryid", qid.as_str());
            }
            let msg = Element::builder("message", ns::CLIENT)
                .with_attr("from", self.jid.as_str())
                .with_attr("to", from.as_str())
                .append(result.append(forwarded))
                .build();
            deliver(server, msg, true).await;
        }
        let mut set = Element::builder("set", NS_RSM);
        if let (Some(first), Some(last)) = (page.items.first(), page.items.last()) {
            set = set
                .append(Element::builder("first", NS_RSM).append(first.id.as_str()))
                .append(Element::builder("last", NS_RSM).append(last.id.as_str()));
        }
        let mut fin = Element::builder("fin", NS_MAM)
            .with_attr("complete", if page.complete { "true" } else { "false" });
        if let Some(qid) = &q.queryid {
            fin = fin.with_attr("queryid", qid.as_str());
        }
        Ok(Some(fin.append(set).build()))
    }
}
