//! Persistence of rooms through the storage trait (no table of its own): one key-value
//! document per persistent room under `(service domain, room name, "muc-room")` holding the
//! configuration as a submitted `muc#roomconfig` form, the affiliation table with reserved
//! nicknames, the subject and the occupant-id salt; a map `(service domain, "", "muc-rooms")`
//! listing persistent rooms for discovery; the archive `(service domain, room name, "muc")`
//! (see [`super::archive`]). A restart keeps all three; history for new occupants is read
//! back from the archive when the room loads.

use minidom::Element;
use starling_core::xml::BuilderExt;
use starling_core::Server;
use starling_proto::jid::Jid;
use starling_proto::writer;
use starling_proto::Attr;
use starling_storage::{ArchiveQuery, StorageError};

use super::config::FORM_ROOMCONFIG;
use super::roles::Affiliation;
use super::room::{AffEntry, HistoryEntry, Room, Subject};
use super::Service;
use crate::pep::config::submitted_fields;

/// The key-value store of room documents.
pub const ROOM_STORE: &str = "muc-room";
/// The map of persistent rooms (key: room name, value: `1` public or `0` hidden, a newline,
/// the room's name).
pub const LIST_STORE: &str = "muc-rooms";
/// Namespace of the stored document.
const NS_STORE: &str = "urn:starling:muc:room:0";

fn encode(room: &Room) -> Vec<u8> {
    let mut doc = Element::builder("room", NS_STORE).with_attr("salt", room.salt.as_str());
    doc = doc.append(room.config.to_form("submit", &[], &[]));
    doc = doc.append(
        Element::builder("subject", NS_STORE)
            .with_attr("nick", room.subject.nick.as_str())
            .append(room.subject.text.as_str()),
    );
    for (jid, e) in &room.affiliations {
        let mut a = Element::builder("affiliation", NS_STORE)
            .with_attr("jid", jid.as_str())
            .with_attr("affiliation", e.affiliation.as_str());
        if let Some(n) = &e.nick {
            a = a.with_attr("nick", n.as_str());
        }
        if let Some(r) = &e.reason {
            a = a.with_attr("reason", r.as_str());
        }
        doc = doc.append(a);
    }
    let mut out = Vec::new();
    writer::write_element(&doc.build(), &mut out);
    out
}

fn decode(room: &mut Room, svc: &Service, bytes: &[u8]) -> Option<()> {
    let doc: Element = std::str::from_utf8(bytes).ok()?.parse().ok()?;
    if !doc.is("room", NS_STORE) {
        return None;
    }
    room.salt = doc.attribute("salt")?.to_owned();
    if let Some(form) = doc.get_child("x", crate::pep::config::NS_DATA) {
        let fields = submitted_fields(form, FORM_ROOMCONFIG).ok()?;
        room.config
            .apply(&fields, svc.settings.max_occupants)
            .ok()?;
    }
    if let Some(s) = doc.get_child("subject", NS_STORE) {
        room.subject = Subject {
            text: s.text(),
            nick: s.attribute("nick").unwrap_or_default().to_owned(),
        };
    }
    for a in doc.children().filter(|c| c.is("affiliation", NS_STORE)) {
        let (Some(jid), Some(aff)) = (
            a.jid_attribute("jid"),
            a.attribute("affiliation").and_then(Affiliation::parse),
        ) else {
            continue;
        };
        room.affiliations.insert(
            jid,
            AffEntry {
                affiliation: aff,
                nick: a.attribute("nick").map(str::to_owned),
                reason: a.attribute("reason").map(str::to_owned),
            },
        );
    }
    Some(())
}

/// Loads a persistent room, with its recent history from the archive; `None` if no such
/// room is stored.
pub async fn load(server: &Server, svc: &Service, jid: &Jid) -> Result<Option<Room>, StorageError> {
    let node = jid.node().unwrap_or_default();
    let Some(bytes) = server
        .storage()
        .kv_get(jid.domain(), node, ROOM_STORE)
        .await?
    else {
        return Ok(None);
    };
    let mut room = Room::absent(jid.clone(), svc);
    if decode(&mut room, svc, &bytes).is_none() {
        tracing::error!(room = %jid, "stored room is unreadable; treated as absent");
        return Ok(None);
    }
    room.exists = true;
    if svc.settings.history_max > 0 {
        let page = server
            .storage()
            .archive_query(
                jid.domain(),
                node,
                super::archive::STORE,
                &ArchiveQuery {
                    limit: svc.settings.history_max,
                    reverse: true,
                    ..ArchiveQuery::default()
                },
            )
            .await?;
        for item in page.items {
            let Some(msg) = std::str::from_utf8(&item.payload)
                .ok()
                .and_then(|s| s.parse::<Element>().ok())
            else {
                continue;
            };
            if msg.get_child("body", starling_proto::ns::CLIENT).is_none() {
                continue;
            }
            room.history.push_back(HistoryEntry {
                chars: item.payload.len(),
                msg,
                when_ms: item.when_ms,
            });
        }
    }
    Ok(Some(room))
}

impl Room {
    /// Saves the room when persistent (and removes a stored copy when it no longer is).
    pub async fn save(&self, server: &Server, svc: &Service) {
        svc.list_room(self);
        if !self.exists || self.locked {
            return;
        }
        let storage = server.storage();
        let domain = self.jid.domain();
        let node = self.jid.node().unwrap_or_default();
        let result = if self.config.persistent {
            let listing = format!(
                "{}\n{}",
                if self.config.public { 1 } else { 0 },
                self.config.name
            );
            match storage
                .kv_set(domain, node, ROOM_STORE, &encode(self))
                .await
            {
                Ok(()) => {
                    storage
                        .map_set(domain, "", LIST_STORE, node, listing.as_bytes())
                        .await
                }
                Err(e) => Err(e),
            }
        } else {
            match storage.kv_delete(domain, node, ROOM_STORE).await {
                Ok(()) => storage.map_delete(domain, "", LIST_STORE, node).await,
                Err(e) => Err(e),
            }
        };
        if let Err(e) = result {
            tracing::error!(error = %e, room = %self.jid, "saving a room failed");
        }
    }

    /// Removes everything stored for the room (destroyed, or a temporary room that ended).
    pub async fn forget(&self, server: &Server, svc: &Service) {
        let storage = server.storage();
        let domain = self.jid.domain();
        let node = self.jid.node().unwrap_or_default();
        svc.temporary_listing.write().remove(&self.jid);
        for r in [
            storage.kv_delete(domain, node, ROOM_STORE).await,
            storage.map_delete(domain, "", LIST_STORE, node).await,
            storage
                .archive_delete(domain, node, super::archive::STORE, None, None)
                .await
                .map(|_| ()),
        ] {
            if let Err(e) = r {
                tracing::error!(error = %e, room = %self.jid, "removing a room failed");
            }
        }
    }
}

/// Persistent rooms of a service domain as (room name, public, display name).
pub async fn listed(server: &Server, domain: &str) -> Vec<(String, bool, String)> {
    match server.storage().map_all(domain, "", LIST_STORE).await {
        Ok(all) => all
            .into_iter()
            .map(|(node, v)| {
                let v = String::from_utf8_lossy(&v).into_owned();
                let (flag, name) = v.split_once('\n').unwrap_or(("1", ""));
                (node, flag == "1", name.to_owned())
            })
            .collect(),
        Err(e) => {
            tracing::error!(error = %e, "listing rooms failed");
            Vec::new()
        }
    }
}
