//! Multi-User Chat (XEP-0045) as a module of the server: a chat room service on its own
//! domain (`conference.<host>` by default, `[muc]` in the configuration), one per host.
//!
//! What it owns:
//! - **The service** ([`Muc`]): every stanza to the service's domain reaches
//!   [`Module::on_domain_stanza`]. The service itself answers disco#info and disco#items (the
//!   public rooms, §6.1–§6.3); stanzas for a room go to that room's task.
//! - **Rooms as tasks**: each room in use is driven by one tokio task fed by a bounded queue
//!   (`[muc] room_queue`; a full queue bounces `resource-constraint`). The task owns the room
//!   state ([`room::Room`]), so nothing is locked while stanzas are sent and everything a room
//!   sends leaves in the order its input arrived. A room whose last occupant left is saved
//!   (when persistent) and its task ends; the next stanza loads it again from storage.
//! - **Occupant flows** in [`room`], **admin and owner requests** (affiliations, roles,
//!   configuration, destruction, registration, disco of rooms, moderation, self-ping) in
//!   [`admin`], **persistence** in [`store`], the **room archive** (MAM on the room JID,
//!   XEP-0313, with XEP-0359 stanza ids and XEP-0424/0425 tombstones) in [`archive`].
//! - **Nothing acknowledged is lost** (DESIGN principle 4): the sender of a groupchat message
//!   waits until the room task has handled it (fanned out and archived) before its next
//!   stanza, so a stream management `<a h/>` that counts it means it is in the room archive
//!   (bounded by [`ROOM_HANDLING_WAIT`]; the room queue bounds how much can wait).
//! - **Sessions that end** without leaving: [`Module::on_session`] turns the end of a session
//!   into an unavailable presence for each room it was in.
//!
//! What it does not: the `muc#roominfo` extended fields beyond
//! description, subject, occupants and language. The shutdown notice (332) is best effort:
//! local sessions are closing at the same moment and may not receive it.

pub mod admin;
pub mod archive;
pub mod config;
pub mod roles;
pub mod room;
pub mod store;

use starling_proto::Attr;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use async_trait::async_trait;
use minidom::Element;
use parking_lot::{Mutex, RwLock};
use starling_core::config::MucConfig;
use starling_core::module::SessionEvent;
use starling_core::xml::BuilderExt;
use starling_core::{Config, Module, Server};
use starling_proto::error::{StanzaError, StanzaErrorCondition as Cond};
use starling_proto::jid::Jid;
use tokio::sync::{mpsc, oneshot};

use config::RoomConfig;
use room::Room;

/// The MUC namespace (entering a room).
pub const NS_MUC: &str = "http://jabber.org/protocol/muc";
/// Occupant payloads.
pub const NS_MUC_USER: &str = "http://jabber.org/protocol/muc#user";
/// Role and affiliation administration.
pub const NS_MUC_ADMIN: &str = "http://jabber.org/protocol/muc#admin";
/// Owner requests: configuration and destruction.
pub const NS_MUC_OWNER: &str = "http://jabber.org/protocol/muc#owner";
/// XEP-0421 occupant identifiers.
pub const NS_OCCUPANT_ID: &str = "urn:xmpp:occupant-id:0";
/// XEP-0424 message retraction.
pub const NS_RETRACT: &str = "urn:xmpp:message-retract:1";
/// XEP-0425 moderated message retraction.
pub const NS_MODERATE: &str = "urn:xmpp:message-moderate:1";

/// The service identity's name.
const SERVICE_NAME: &str = "Chatrooms";

/// How long a sender waits for its message to be handled by the room task (see the module
/// doc) before it goes on anyway (the message stays queued).
pub const ROOM_HANDLING_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// A stanza waiting in a room's queue; `done` is signalled (or dropped) once the room task
/// has handled it.
struct Queued {
    stanza: Element,
    done: Option<oneshot::Sender<()>>,
}

/// What the module and every room task share.
pub struct Service {
    /// `[muc]`.
    pub settings: MucConfig,
    /// The service domains (one per host).
    domains: Vec<String>,
    /// `[muc] admins`, parsed.
    admins: HashSet<Jid>,
    /// Room JID -> the queue of its task.
    rooms: Mutex<HashMap<Jid, mpsc::Sender<Queued>>>,
    /// Full JID of a session -> the rooms it is in, to leave them when the session ends.
    presence_in: Mutex<HashMap<Jid, HashSet<Jid>>>,
    /// Public rooms in memory that are not persistent (persistent ones are listed from
    /// storage): room JID -> name.
    temporary_listing: RwLock<BTreeMap<Jid, String>>,
    /// Room stanza ids and other unpredictable ids.
    ids: crate::stanza_id::UnpredictableIds,
    /// `[muc] max_messages_per_room` and the room archive sizes it needs.
    pub(crate) archive_quota: crate::mam::quota::Quota,
}

impl Service {
    fn new(config: &Config) -> Service {
        let settings = config.muc.clone();
        let domains = config
            .server
            .hosts
            .iter()
            .map(|h| settings.domain_for(h))
            .collect();
        let admins = settings
            .admins
            .iter()
            .filter_map(|a| Jid::parse(a).ok())
            .map(|j| j.bare())
            .collect();
        let archive_quota =
            crate::mam::quota::Quota::new(settings.max_messages_per_room, archive::STORE, "room");
        Service {
            settings,
            domains,
            admins,
            rooms: Mutex::new(HashMap::new()),
            presence_in: Mutex::new(HashMap::new()),
            temporary_listing: RwLock::new(BTreeMap::new()),
            ids: crate::stanza_id::UnpredictableIds::new(),
            archive_quota,
        }
    }

    /// Whether `bare` administers the service.
    pub fn is_admin(&self, bare: &Jid) -> bool {
        self.admins.contains(bare)
    }

    /// The configuration of a new room.
    pub fn default_config(&self) -> RoomConfig {
        let s = &self.settings;
        RoomConfig::new(
            s.max_occupants,
            s.logging_default,
            s.persistent_default,
            s.history_default,
        )
    }

    /// A fresh unpredictable id (stanza ids, salts).
    pub fn random_id(&self) -> String {
        self.ids.next()
    }

    /// Records that session `full` is in `room`.
    pub fn joined(&self, full: &Jid, room: &Jid) {
        self.presence_in
            .lock()
            .entry(full.clone())
            .or_default()
            .insert(room.clone());
    }

    /// Records that session `full` left `room`.
    pub fn left(&self, full: &Jid, room: &Jid) {
        let mut map = self.presence_in.lock();
        if let Some(set) = map.get_mut(full) {
            set.remove(room);
            if set.is_empty() {
                map.remove(full);
            }
        }
    }

    /// Lists (or unlists) a room that lives only in memory.
    pub fn list_room(&self, room: &Room) {
        let mut l = self.temporary_listing.write();
        if room.exists && !room.locked && room.config.public && !room.config.persistent {
            let name = room.config.name.clone();
            l.insert(room.jid.clone(), name);
        } else {
            l.remove(&room.jid);
        }
    }

    /// Queues `stanza` for `room`'s task, starting the task if needed.
    fn dispatch(
        self: &Arc<Self>,
        server: &Server,
        room: Jid,
        stanza: Element,
        done: Option<oneshot::Sender<()>>,
    ) -> Result<(), Cond> {
        let queued = Queued { stanza, done };
        let mut rooms = self.rooms.lock();
        if let Some(tx) = rooms.get(&room) {
            return match tx.try_send(queued) {
                Ok(()) => Ok(()),
                Err(mpsc::error::TrySendError::Full(_)) => {
                    tracing::warn!(%room, "room queue full: stanza refused");
                    Err(Cond::ResourceConstraint)
                }
                Err(mpsc::error::TrySendError::Closed(_)) => Err(Cond::ServiceUnavailable),
            };
        }
        if rooms.len() >= self.settings.max_rooms {
            tracing::warn!(max = self.settings.max_rooms, "too many rooms in memory");
            return Err(Cond::ResourceConstraint);
        }
        let Some(server) = server.arc() else {
            return Err(Cond::ServiceUnavailable);
        };
        let (tx, rx) = mpsc::channel(self.settings.room_queue);
        tx.try_send(queued).expect("a new queue has room");
        rooms.insert(room.clone(), tx);
        let svc = self.clone();
        tokio::spawn(async move { svc.run_room(server, room, rx).await });
        Ok(())
    }

    /// The task of one room: load, then handle stanzas until the room is empty.
    async fn run_room(
        self: Arc<Self>,
        server: Arc<Server>,
        jid: Jid,
        mut rx: mpsc::Receiver<Queued>,
    ) {
        let mut room = match store::load(&server, &self, &jid).await {
            Ok(Some(r)) => r,
            Ok(None) => Room::absent(jid.clone(), &self),
            Err(e) => {
                tracing::error!(error = %e, room = %jid, "loading a room failed");
                self.rooms.lock().remove(&jid);
                while let Ok(q) = rx.try_recv() {
                    room::refuse(
                        &server,
                        &q.stanza,
                        StanzaError::new(Cond::InternalServerError),
                    )
                    .await;
                }
                return;
            }
        };
        let stop = server.shutdown_token().clone();
        loop {
            let stanza = tokio::select! {
                s = rx.recv() => s,
                () = stop.cancelled() => None,
            };
            let Some(Queued { stanza, done }) = stanza else {
                if stop.is_cancelled() {
                    self.rooms.lock().remove(&jid);
                    room.shutdown_notice(&server, &self).await;
                }
                // Otherwise every sender is gone, so the registry no longer holds ours.
                break;
            };
            self.handle(&server, &mut room, stanza).await;
            if let Some(done) = done {
                let _ = done.send(());
            }
            if room.occupants.is_empty() {
                if room.exists && !room.config.persistent {
                    // A temporary room ends with its last occupant (§10.1.3 / §7.14). Its
                    // storage is cleared while this task still owns the name, so the cleanup
                    // cannot reach a room that someone creates again under it; a stanza that
                    // came meanwhile finds a new, absent room.
                    room.forget(&server, &self).await;
                    room = Room::absent(jid.clone(), &self);
                }
                // Unload: only while holding the registry lock, and only if nothing is queued
                // (senders queue under the same lock), so no stanza is lost. Once the entry
                // is gone, a stanza for this name starts a new task: nothing after this may
                // touch the registry or the listing.
                let mut rooms = self.rooms.lock();
                if rx.is_empty() {
                    rooms.remove(&jid);
                    break;
                }
            }
        }
    }

    async fn handle(&self, server: &Server, room: &mut Room, stanza: Element) {
        let Some(from) = stanza.jid_attribute("from") else {
            return;
        };
        match stanza.name() {
            "presence" => room.on_presence(server, self, stanza, from).await,
            "message" => room.on_message(server, self, stanza, from).await,
            "iq" => room.on_iq(server, self, stanza, from).await,
            "gone" => room.session_gone(server, self, &from).await,
            _ => {}
        }
    }
}

/// The MUC module.
pub struct Muc {
    service: Arc<Service>,
}

impl Muc {
    /// The service with the settings of `config.muc`.
    pub fn new(config: &Config) -> Muc {
        Muc {
            service: Arc::new(Service::new(config)),
        }
    }
}

#[async_trait]
impl Module for Muc {
    fn name(&self) -> &'static str {
        "muc"
    }

    fn served_domains(&self) -> Vec<String> {
        self.service.domains.clone()
    }

    async fn on_domain_stanza(&self, server: &Server, stanza: Element, to: Jid) {
        if to.node().is_none() {
            admin::service_stanza(server, &self.service, &stanza, &to).await;
            return;
        }
        let room = to.bare();
        let copy = (stanza.attribute("type") != Some("error")).then(|| stanza.clone());
        // Groupchat messages may be archived: the sender waits for the room (see the module
        // doc). Not what a room sends itself (an error bounced back to a room, say): its
        // task would wait for itself.
        let from_a_room = stanza
            .jid_attribute("from")
            .is_some_and(|f| self.service.domains.iter().any(|d| d == f.domain()));
        let (done, handled) = if stanza.name() == "message"
            && stanza.attribute("type") == Some("groupchat")
            && !from_a_room
        {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        if let Err(cond) = self.service.dispatch(server, room.clone(), stanza, done) {
            if let Some(s) = copy {
                room::refuse(server, &s, StanzaError::new(cond)).await;
            }
            return;
        }
        if let Some(handled) = handled {
            if tokio::time::timeout(ROOM_HANDLING_WAIT, handled)
                .await
                .is_err()
            {
                tracing::warn!(%room, "room did not handle a message in time; sender goes on");
            }
        }
    }

    async fn on_session(&self, server: &Server, event: &SessionEvent) {
        let SessionEvent::Ended(full) = event else {
            return;
        };
        let rooms = self.service.presence_in.lock().remove(full);
        for room in rooms.into_iter().flatten() {
            // A private marker element the room task understands as "this session is gone".
            let gone = Element::builder("gone", "urn:starling:muc:internal")
                .with_attr("from", full.as_str())
                .build();
            let _ = self.service.dispatch(server, room, gone, None);
        }
    }
}
