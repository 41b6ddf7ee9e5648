//! One room's state and its occupant flows (XEP-0045 §7): entering with every refusal of
//! §7.2 (password, members-only, bans, nickname conflicts and reservations, capacity, locked
//! rooms), presence updates, nickname changes (§7.6), leaving (§7.14), groupchat messages with
//! stanza ids (XEP-0359) and occupant ids (XEP-0421), discussion history (§7.2.15), the subject
//! (§8.1), private messages (§7.5), mediated invitations and declines (§7.8), voice requests
//! (§7.13), and removal of
//! occupants whose sessions fail. Admin and owner requests live in [`super::admin`].
//!
//! A room is driven by one task (see [`super::Service`]), so its state needs no lock and what
//! it sends leaves in order. Fan-out builds each distinct stanza once (for presence, at most
//! two variants: with and without the real JID) and clones it per session with only `to`
//! changed; local sessions are reached directly ([`Server::deliver_to`], which still applies
//! the per-session delivery filters), remote ones through [`Server::route`].

use starling_proto::Attr;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use minidom::Element;
use starling_core::xml::{BuilderExt, ElementExt};
use starling_core::{Server, SharedStanza};
use starling_proto::error::{StanzaError, StanzaErrorCondition as Cond};
use starling_proto::jid::Jid;
use starling_proto::ns;

use super::config::{RoomConfig, Whois};
use super::roles::{default_role, Affiliation, Role};
use super::{Service, NS_MUC, NS_MUC_USER, NS_OCCUPANT_ID, NS_RETRACT};
use crate::pep::config::{submitted_fields, NS_DATA};
use crate::stanza_id::{remove_children, stamp, strip_by};

/// The FORM_TYPE of voice requests (§7.13).
const FORM_REQUEST: &str = "http://jabber.org/protocol/muc#request";
use crate::time::{now_ms, utc_stamp};

/// One entry of the affiliation table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AffEntry {
    /// The affiliation.
    pub affiliation: Affiliation,
    /// A reserved nickname (registration, §7.10).
    pub nick: Option<String>,
    /// Why it was granted (shown in lists).
    pub reason: Option<String>,
}

/// Someone in the room under one nickname, with one or more sessions of the same account.
#[derive(Debug, Clone)]
pub struct Occupant {
    /// The account (bare JID) behind the nickname.
    pub real: Jid,
    /// Its full JIDs in the room (a client may join from several resources).
    pub sessions: Vec<Jid>,
    /// The current role.
    pub role: Role,
    /// The children of the occupant's last presence that are broadcast (show, status, caps),
    /// without the MUC payloads.
    pub payload: Vec<Element>,
}

/// One line of discussion history.
#[derive(Debug, Clone)]
pub struct HistoryEntry {
    /// The message as broadcast, without `to`.
    pub msg: Element,
    /// When it was sent.
    pub when_ms: i64,
    /// Its serialised size, for `maxchars`.
    pub chars: usize,
}

/// The subject and who set it.
#[derive(Debug, Clone, Default)]
pub struct Subject {
    /// The text (empty: no subject).
    pub text: String,
    /// The nickname that set it (empty: the room itself).
    pub nick: String,
}

/// Extra content of an occupant's `<item/>` and status codes in one presence.
#[derive(Debug, Default, Clone)]
pub struct Extra<'a> {
    /// Status codes for everyone.
    pub codes: Vec<u16>,
    /// `<actor nick/>`.
    pub actor: Option<&'a str>,
    /// `<reason/>`.
    pub reason: Option<&'a str>,
    /// `nick` on the item (a nickname change, 303).
    pub new_nick: Option<&'a str>,
    /// A `<destroy/>` element instead of the item's details.
    pub destroy: Option<Element>,
}

/// A chat room.
pub struct Room {
    /// The room's bare JID.
    pub jid: Jid,
    /// Whether the room exists (it may be a placeholder for a name nobody created yet).
    pub exists: bool,
    /// Created but not yet configured by its owner (§10.1.1): nobody else may enter.
    pub locked: bool,
    /// The configuration.
    pub config: RoomConfig,
    /// Affiliations by bare JID.
    pub affiliations: BTreeMap<Jid, AffEntry>,
    /// Occupants by nickname.
    pub occupants: BTreeMap<String, Occupant>,
    /// Full JID -> nickname, for every session in the room.
    pub sessions: HashMap<Jid, String>,
    /// The subject.
    pub subject: Subject,
    /// Recent messages for new occupants (§7.2.15), oldest first.
    pub history: VecDeque<HistoryEntry>,
    /// Keys this room's occupant ids (XEP-0421), stable across restarts for persistent rooms.
    pub salt: String,
}

/// How a stanza is sent: straight to a local session, or through the router.
pub async fn deliver(server: &Server, el: Element, fast: bool) {
    if fast {
        if let Some(to) = el.jid_attribute("to") {
            if to.resource().is_some() && server.config().is_local_host(to.domain()) {
                if let Some(s) = server.router().session(&to) {
                    server.deliver_to(&s, &to, el).await;
                }
                return;
            }
        }
    }
    server.route(el).await;
}

/// Sends a stanza serialised once to `to`: straight to a local session, or as an element of
/// its own through the router.
async fn deliver_shared(server: &Server, shared: &Arc<SharedStanza>, to: &Jid) {
    if to.resource().is_some() && server.config().is_local_host(to.domain()) {
        if let Some(s) = server.router().session(to) {
            server.deliver_shared_to(&s, to, shared).await;
        }
        return;
    }
    server.route(shared.addressed(to)).await;
}

/// Sends an error reply to `stanza`'s sender.
pub async fn refuse(server: &Server, stanza: &Element, err: StanzaError) {
    server.bounce_with(stanza, err).await;
}

fn status(code: u16) -> Element {
    Element::builder("status", NS_MUC_USER)
        .with_attr("code", code.to_string())
        .build()
}

fn text_el(name: &str, ns: &str, text: &str) -> Element {
    Element::builder(name, ns).append(text).build()
}

/// The history a joining client asked for (§7.2.15).
#[derive(Debug, Clone, Copy, Default)]
struct HistoryRequest {
    max_chars: Option<usize>,
    max_stanzas: Option<usize>,
    since_ms: Option<i64>,
}

impl HistoryRequest {
    fn parse(x: Option<&Element>) -> HistoryRequest {
        let Some(h) = x.and_then(|x| x.get_child("history", NS_MUC)) else {
            return HistoryRequest::default();
        };
        let num = |a: &str| h.attribute(a).and_then(|v| v.trim().parse::<u64>().ok());
        let mut since_ms = h
            .attribute("since")
            .and_then(crate::mam::query::parse_datetime);
        if let Some(s) = num("seconds") {
            let t = now_ms() - (s.min(u64::from(u32::MAX)) as i64) * 1000;
            since_ms = Some(since_ms.map_or(t, |x| x.max(t)));
        }
        HistoryRequest {
            max_chars: num("maxchars").map(|n| n as usize),
            max_stanzas: num("maxstanzas").map(|n| n as usize),
            since_ms,
        }
    }
}

impl Room {
    /// A room that does not exist (yet).
    pub fn absent(jid: Jid, svc: &Service) -> Room {
        Room {
            jid,
            exists: false,
            locked: false,
            config: svc.default_config(),
            affiliations: BTreeMap::new(),
            occupants: BTreeMap::new(),
            sessions: HashMap::new(),
            subject: Subject::default(),
            history: VecDeque::new(),
            salt: svc.random_id(),
        }
    }

    /// `room@service/nick`.
    pub fn nick_jid(&self, nick: &str) -> String {
        format!("{}/{}", self.jid, nick)
    }

    /// The affiliation of `bare` (service admins own every room).
    pub fn affiliation(&self, svc: &Service, bare: &Jid) -> Affiliation {
        if svc.is_admin(bare) {
            return Affiliation::Owner;
        }
        self.affiliations
            .get(bare)
            .map_or(Affiliation::None, |e| e.affiliation)
    }

    /// The occupant id of `real` (XEP-0421): a keyed hash of the account, stable per room.
    pub fn occupant_id(&self, real: &Jid) -> String {
        use base64::Engine;
        use hmac::{Hmac, KeyInit, Mac};
        let mut mac = <Hmac<sha1::Sha1> as KeyInit>::new_from_slice(self.salt.as_bytes())
            .expect("HMAC takes any key");
        mac.update(real.as_str().as_bytes());
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    }

    /// Whether `viewer_role` may see real JIDs.
    fn sees_jids(&self, viewer_role: Role) -> bool {
        self.config.whois == Whois::Anyone || viewer_role == Role::Moderator
    }

    /// The presence of occupant `nick` (with affiliation `aff`, role `role`, real JID `real`
    /// and payload), unavailable or not, with or without the real JID.
    #[allow(clippy::too_many_arguments)]
    fn presence_of(
        &self,
        nick: &str,
        real: &Jid,
        full: Option<&Jid>,
        aff: Affiliation,
        role: Role,
        payload: &[Element],
        unavailable: bool,
        with_jid: bool,
        extra: &Extra<'_>,
        self_codes: &[u16],
    ) -> Element {
        let mut p = Element::builder("presence", ns::CLIENT).with_attr("from", self.nick_jid(nick));
        if unavailable {
            p = p.with_attr("type", "unavailable");
        }
        let mut p = p.build();
        for c in payload {
            p.append_child(c.clone());
        }
        let mut item = Element::builder("item", NS_MUC_USER)
            .with_attr("affiliation", aff.as_str())
            .with_attr("role", role.as_str());
        if with_jid {
            item = item.with_attr("jid", full.unwrap_or(real).as_str());
        }
        if let Some(n) = extra.new_nick {
            item = item.with_attr("nick", n);
        }
        if let Some(a) = extra.actor {
            item = item.append(Element::builder("actor", NS_MUC_USER).with_attr("nick", a));
        }
        if let Some(r) = extra.reason {
            item = item.append(text_el("reason", NS_MUC_USER, r));
        }
        let mut x = Element::builder("x", NS_MUC_USER).append(item.build());
        if let Some(d) = &extra.destroy {
            x = x.append(d.clone());
        }
        for c in self_codes.iter().chain(extra.codes.iter()) {
            x = x.append(status(*c));
        }
        p.append_child(x.build());
        p.append_child(
            Element::builder("occupant-id", NS_OCCUPANT_ID)
                .with_attr("id", self.occupant_id(real))
                .build(),
        );
        p
    }

    /// Sends occupant `nick`'s presence to every occupant (others only when the role is
    /// broadcast, §7.2.3 and `presencebroadcast`) and to `self_sessions` with status 110
    /// plus `self_codes`.
    #[allow(clippy::too_many_arguments)]
    pub async fn broadcast_presence(
        &self,
        server: &Server,
        nick: &str,
        real: &Jid,
        aff: Affiliation,
        role: Role,
        payload: &[Element],
        unavailable: bool,
        extra: &Extra<'_>,
        self_sessions: &[Jid],
        self_codes: &[u16],
    ) {
        let full = self_sessions.first();
        let shown_role = if unavailable { Role::None } else { role };
        let broadcast = unavailable || self.config.broadcasts(role);
        if broadcast {
            // At most two serialisations (with and without the real JID), each written to
            // every session that gets it.
            let mut variants: [Option<Arc<SharedStanza>>; 2] = [None, None];
            for (onick, o) in &self.occupants {
                if onick == nick {
                    continue;
                }
                let with_jid = self.sees_jids(o.role);
                let base = variants[usize::from(with_jid)].get_or_insert_with(|| {
                    Arc::new(SharedStanza::new(self.presence_of(
                        nick,
                        real,
                        full,
                        aff,
                        shown_role,
                        payload,
                        unavailable,
                        with_jid,
                        extra,
                        &[],
                    )))
                });
                for s in &o.sessions {
                    deliver_shared(server, base, s).await;
                }
            }
        }
        if !self_sessions.is_empty() {
            let mut codes = vec![110];
            codes.extend_from_slice(self_codes);
            let own = self.presence_of(
                nick,
                real,
                full,
                aff,
                shown_role,
                payload,
                unavailable,
                true,
                extra,
                &codes,
            );
            for s in self_sessions {
                let mut c = own.clone();
                c.put_attr("to", s.as_str());
                deliver(server, c, true).await;
            }
        }
    }

    /// Re-broadcasts an occupant's current presence (after a role or affiliation change).
    pub async fn announce(&self, server: &Server, svc: &Service, nick: &str, extra: &Extra<'_>) {
        let Some(o) = self.occupants.get(nick) else {
            return;
        };
        let aff = self.affiliation(svc, &o.real);
        self.broadcast_presence(
            server,
            nick,
            &o.real,
            aff,
            o.role,
            &o.payload,
            false,
            extra,
            &o.sessions,
            &[],
        )
        .await;
    }

    /// Removes an occupant (every session) and tells everyone: kicked (307), banned (301),
    /// removed by an affiliation change (321) or a members-only switch (322), or gone after
    /// an error (333).
    pub async fn remove_occupant(
        &mut self,
        server: &Server,
        svc: &Service,
        nick: &str,
        extra: &Extra<'_>,
    ) {
        let Some(o) = self.occupants.remove(nick) else {
            return;
        };
        for s in &o.sessions {
            self.sessions.remove(s);
            svc.left(s, &self.jid);
        }
        let aff = self.affiliation(svc, &o.real);
        self.broadcast_presence(
            server,
            nick,
            &o.real,
            aff,
            Role::None,
            &[],
            true,
            extra,
            &o.sessions,
            &[],
        )
        .await;
    }

    /// Sends a message from the room itself with status codes to every occupant (§10.2.1
    /// configuration changes).
    pub async fn notify_codes(&self, server: &Server, codes: &[u16]) {
        if codes.is_empty() {
            return;
        }
        let mut x = Element::builder("x", NS_MUC_USER);
        for c in codes {
            x = x.append(status(*c));
        }
        let msg = Element::builder("message", ns::CLIENT)
            .with_attr("type", "groupchat")
            .with_attr("from", self.jid.as_str())
            .append(x)
            .build();
        self.fan_out(server, &msg).await;
    }

    /// Sends `msg` (no `to`) to every session of every occupant. The hot path of a room: the
    /// message is serialised once and the same bytes are queued for every local session
    /// ([`SharedStanza`]); only remote occupants get an element of their own.
    pub async fn fan_out(&self, server: &Server, msg: &Element) -> Arc<SharedStanza> {
        let shared = Arc::new(SharedStanza::new(msg.clone()));
        for o in self.occupants.values() {
            for s in &o.sessions {
                deliver_shared(server, &shared, s).await;
            }
        }
        shared
    }

    // ---- presence ------------------------------------------------------------------------

    /// A presence to `room/nick` (or the bare room JID) from `from`.
    pub async fn on_presence(&mut self, server: &Server, svc: &Service, p: Element, from: Jid) {
        let Some(to) = p.jid_attribute("to") else {
            return;
        };
        let in_room = self.sessions.get(&from).cloned();
        match p.attribute("type") {
            None => {
                let Some(nick) = to.resource() else {
                    // §7.2.1: entering needs a nickname.
                    refuse(server, &p, StanzaError::new(Cond::JidMalformed)).await;
                    return;
                };
                match in_room {
                    Some(old) if old == nick => self.update_presence(server, svc, &p, &old).await,
                    Some(old) => self.change_nick(server, svc, &p, &from, &old, nick).await,
                    None => self.join(server, svc, &p, from, nick).await,
                }
            }
            Some("unavailable") => {
                if let Some(nick) = in_room {
                    self.leave(server, svc, &from, &nick, &p).await;
                }
            }
            Some("error") => {
                if let Some(nick) = in_room {
                    let extra = Extra {
                        codes: vec![333],
                        ..Extra::default()
                    };
                    self.remove_occupant(server, svc, &nick, &extra).await;
                }
            }
            // Subscriptions and probes mean nothing to a room.
            _ => {}
        }
    }

    fn broadcastable(p: &Element) -> Vec<Element> {
        p.children()
            .filter(|c| {
                !(c.is("x", NS_MUC)
                    || c.is("x", NS_MUC_USER)
                    || c.is("occupant-id", NS_OCCUPANT_ID))
            })
            .cloned()
            .collect()
    }

    fn may_create(&self, server: &Server, svc: &Service, from: &Jid) -> bool {
        use starling_core::config::RoomCreation;
        let bare = from.bare();
        svc.is_admin(&bare)
            || match svc.settings.create {
                RoomCreation::Anyone => true,
                RoomCreation::Local => server.config().is_local_host(from.domain()),
                RoomCreation::Admins => false,
            }
    }

    async fn join(&mut self, server: &Server, svc: &Service, p: &Element, from: Jid, nick: &str) {
        let muc_x = p.get_child("x", NS_MUC);
        let bare = from.bare();
        let mut created = false;
        if !self.exists {
            if !self.may_create(server, svc, &from) {
                refuse(
                    server,
                    p,
                    StanzaError::with_text(Cond::NotAllowed, "you may not create rooms here"),
                )
                .await;
                return;
            }
            // §10.1.1: a client speaking MUC gets a locked room to configure; an old
            // groupchat 1.0 client an instant room.
            self.exists = true;
            self.locked = muc_x.is_some();
            self.affiliations.insert(
                bare.clone(),
                AffEntry {
                    affiliation: Affiliation::Owner,
                    nick: None,
                    reason: None,
                },
            );
            created = true;
            tracing::debug!(room = %self.jid, owner = %bare, "room created");
        }
        let aff = self.affiliation(svc, &bare);
        // The refusals of §7.2, in the XEP's order of precedence.
        if !created {
            if self.locked && aff != Affiliation::Owner {
                // §10.1.1: a locked room does not exist for others.
                refuse(server, p, StanzaError::new(Cond::ItemNotFound)).await;
                return;
            }
            if aff == Affiliation::Outcast {
                refuse(server, p, StanzaError::new(Cond::Forbidden)).await;
                return;
            }
            if self.config.members_only && aff < Affiliation::Member {
                refuse(server, p, StanzaError::new(Cond::RegistrationRequired)).await;
                return;
            }
            if self.config.password_protected && aff < Affiliation::Admin {
                let given = muc_x
                    .and_then(|x| x.get_child("password", NS_MUC))
                    .map(|p| p.text());
                if given.as_deref() != Some(self.config.secret.as_str()) {
                    refuse(server, p, StanzaError::new(Cond::NotAuthorized)).await;
                    return;
                }
            }
        }
        if let Some(o) = self.occupants.get(nick) {
            if o.real != bare {
                refuse(server, p, StanzaError::new(Cond::Conflict)).await;
                return;
            }
        }
        let reserved_by_other = self
            .affiliations
            .iter()
            .any(|(j, e)| e.nick.as_deref() == Some(nick) && *j != bare);
        if reserved_by_other {
            refuse(server, p, StanzaError::new(Cond::Conflict)).await;
            return;
        }
        let joining_existing = self.occupants.contains_key(nick);
        if !joining_existing
            && self.occupants.len() >= self.config.max_users.min(svc.settings.max_occupants)
            && aff < Affiliation::Admin
        {
            tracing::info!(room = %self.jid, "room full: entry refused");
            refuse(server, p, StanzaError::new(Cond::ServiceUnavailable)).await;
            return;
        }
        let role = default_role(aff, self.config.moderated);
        let payload = Room::broadcastable(p);
        // Everyone else's presence first (§7.2.3), in the variant this occupant may see.
        let sees = self.sees_jids(role);
        for (onick, o) in &self.occupants {
            if onick == nick || !self.config.broadcasts(o.role) {
                continue;
            }
            let oaff = self.affiliation(svc, &o.real);
            let mut el = self.presence_of(
                onick,
                &o.real,
                o.sessions.first(),
                oaff,
                o.role,
                &o.payload,
                false,
                sees,
                &Extra::default(),
                &[],
            );
            el.put_attr("to", from.as_str());
            deliver(server, el, true).await;
        }
        self.sessions.insert(from.clone(), nick.to_owned());
        svc.joined(&from, &self.jid);
        let mut self_codes = Vec::new();
        if self.config.whois == Whois::Anyone {
            self_codes.push(100);
        }
        if self.config.logging {
            self_codes.push(170);
        }
        if created {
            self_codes.push(201);
        }
        // §7.2.1 / §7.2.19: the service normalised the nickname.
        let raw_nick = p
            .attribute("to")
            .and_then(|t| t.split_once('/'))
            .map(|(_, r)| r);
        if raw_nick.is_some_and(|r| r != nick) {
            self_codes.push(210);
        }
        if joining_existing {
            // Another session of the same account under the same nickname: only it learns
            // its own presence; the others already know the occupant.
            let o = self.occupants.get_mut(nick).expect("checked above");
            o.sessions.push(from.clone());
            let o = o.clone();
            let el = self.presence_of(
                nick,
                &o.real,
                Some(&from),
                aff,
                o.role,
                &o.payload,
                false,
                true,
                &Extra::default(),
                &[&[110u16][..], &self_codes].concat(),
            );
            let mut el = el;
            el.put_attr("to", from.as_str());
            deliver(server, el, true).await;
        } else {
            self.occupants.insert(
                nick.to_owned(),
                Occupant {
                    real: bare.clone(),
                    sessions: vec![from.clone()],
                    role,
                    payload: payload.clone(),
                },
            );
            self.broadcast_presence(
                server,
                nick,
                &bare,
                aff,
                role,
                &payload,
                false,
                &Extra::default(),
                std::slice::from_ref(&from),
                &self_codes,
            )
            .await;
        }
        if !created {
            self.send_history(server, &from, HistoryRequest::parse(muc_x))
                .await;
        }
        self.send_subject(server, &from).await;
        if created && !self.locked {
            svc.list_room(self);
        }
    }

    async fn send_history(&self, server: &Server, to: &Jid, req: HistoryRequest) {
        let mut max = self.config.max_history_fetch;
        if let Some(n) = req.max_stanzas {
            max = max.min(n);
        }
        let mut picked: Vec<&HistoryEntry> = Vec::new();
        let mut chars = 0usize;
        for e in self.history.iter().rev() {
            if picked.len() >= max {
                break;
            }
            if req.since_ms.is_some_and(|s| e.when_ms < s) {
                break;
            }
            if let Some(mc) = req.max_chars {
                if chars + e.chars > mc {
                    break;
                }
            }
            chars += e.chars;
            picked.push(e);
        }
        for e in picked.into_iter().rev() {
            let mut m = e.msg.clone();
            m.put_attr("to", to.as_str());
            m.append_child(
                Element::builder("delay", ns::DELAY)
                    .with_attr("from", self.jid.as_str())
                    .with_attr("stamp", utc_stamp(e.when_ms))
                    .build(),
            );
            deliver(server, m, true).await;
        }
    }

    /// The subject message (§7.2.15: always sent, empty when there is none).
    fn subject_message(&self) -> Element {
        let from = if self.subject.nick.is_empty() {
            self.jid.as_str().to_owned()
        } else {
            self.nick_jid(&self.subject.nick)
        };
        let mut subject = Element::builder("subject", ns::CLIENT);
        if !self.subject.text.is_empty() {
            subject = subject.append(self.subject.text.as_str());
        }
        Element::builder("message", ns::CLIENT)
            .with_attr("type", "groupchat")
            .with_attr("from", from)
            .append(subject)
            .build()
    }

    async fn send_subject(&self, server: &Server, to: &Jid) {
        let mut m = self.subject_message();
        m.put_attr("to", to.as_str());
        deliver(server, m, true).await;
    }

    async fn update_presence(&mut self, server: &Server, svc: &Service, p: &Element, nick: &str) {
        if let Some(o) = self.occupants.get_mut(nick) {
            o.payload = Room::broadcastable(p);
        }
        self.announce(server, svc, nick, &Extra::default()).await;
    }

    async fn change_nick(
        &mut self,
        server: &Server,
        svc: &Service,
        p: &Element,
        from: &Jid,
        old: &str,
        new: &str,
    ) {
        let Some(o) = self.occupants.get(old).cloned() else {
            return;
        };
        let taken = self.occupants.get(new).is_some_and(|x| x.real != o.real)
            || self
                .affiliations
                .iter()
                .any(|(j, e)| e.nick.as_deref() == Some(new) && *j != o.real);
        if taken {
            refuse(server, p, StanzaError::new(Cond::Conflict)).await;
            return;
        }
        if o.sessions.len() > 1 || self.occupants.contains_key(new) {
            refuse(
                server,
                p,
                StanzaError::with_text(
                    Cond::NotAcceptable,
                    "change the nickname from one session at a time",
                ),
            )
            .await;
            return;
        }
        let aff = self.affiliation(svc, &o.real);
        // §7.6: unavailable under the old nickname with 303 and the new one ...
        let extra = Extra {
            codes: vec![303],
            new_nick: Some(new),
            ..Extra::default()
        };
        self.broadcast_presence(
            server,
            old,
            &o.real,
            aff,
            o.role,
            &o.payload,
            true,
            &extra,
            &o.sessions,
            &[],
        )
        .await;
        self.occupants.remove(old);
        let mut o = o;
        o.payload = Room::broadcastable(p);
        self.sessions.insert(from.clone(), new.to_owned());
        self.occupants.insert(new.to_owned(), o.clone());
        // ... then available under the new one.
        self.broadcast_presence(
            server,
            new,
            &o.real,
            aff,
            o.role,
            &o.payload,
            false,
            &Extra::default(),
            &o.sessions,
            &[],
        )
        .await;
    }

    async fn leave(&mut self, server: &Server, svc: &Service, from: &Jid, nick: &str, p: &Element) {
        self.sessions.remove(from);
        svc.left(from, &self.jid);
        let Some(o) = self.occupants.get_mut(nick) else {
            return;
        };
        o.sessions.retain(|s| s != from);
        let payload: Vec<Element> = p
            .children()
            .filter(|c| c.is("status", ns::CLIENT))
            .cloned()
            .collect();
        if o.sessions.is_empty() {
            let o = self.occupants.remove(nick).expect("present");
            let aff = self.affiliation(svc, &o.real);
            self.broadcast_presence(
                server,
                nick,
                &o.real,
                aff,
                Role::None,
                &payload,
                true,
                &Extra::default(),
                std::slice::from_ref(from),
                &[],
            )
            .await;
        } else {
            let o = o.clone();
            let aff = self.affiliation(svc, &o.real);
            let mut el = self.presence_of(
                nick,
                &o.real,
                Some(from),
                aff,
                Role::None,
                &payload,
                true,
                true,
                &Extra::default(),
                &[110],
            );
            el.put_attr("to", from.as_str());
            deliver(server, el, true).await;
        }
    }

    // ---- messages ------------------------------------------------------------------------

    /// A message to the room or to `room/nick`.
    pub async fn on_message(&mut self, server: &Server, svc: &Service, m: Element, from: Jid) {
        let Some(to) = m.jid_attribute("to") else {
            return;
        };
        let mtype = m.attribute("type").unwrap_or("normal");
        if mtype == "error" {
            // An occupant's client (or its server) failing: it is gone (§7.14, 333).
            if let Some(nick) = self.sessions.get(&from).cloned() {
                let extra = Extra {
                    codes: vec![333],
                    ..Extra::default()
                };
                self.remove_occupant(server, svc, &nick, &extra).await;
            }
            return;
        }
        if !self.exists || (self.locked && !self.sessions.contains_key(&from)) {
            refuse(server, &m, StanzaError::new(Cond::ItemNotFound)).await;
            return;
        }
        if let Some(nick) = to.resource() {
            self.private_message(server, svc, m.clone(), &from, nick)
                .await;
            return;
        }
        if mtype == "groupchat" {
            self.groupchat(server, svc, m, &from).await;
            return;
        }
        if let Some(form) = m.get_child("x", NS_DATA) {
            self.voice_request(server, svc, &m, form, &from).await;
            return;
        }
        if let Some(x) = m.get_child("x", NS_MUC_USER) {
            if x.get_child("invite", NS_MUC_USER).is_some() {
                self.invite(server, svc, &m, x, &from).await;
                return;
            }
            if let Some(d) = x.get_child("decline", NS_MUC_USER) {
                self.decline(server, &m, d, &from).await;
                return;
            }
        }
        refuse(server, &m, StanzaError::new(Cond::BadRequest)).await;
    }

    async fn groupchat(&mut self, server: &Server, svc: &Service, m: Element, from: &Jid) {
        let Some(nick) = self.sessions.get(from).cloned() else {
            // §7.4: only occupants speak.
            refuse(server, &m, StanzaError::new(Cond::NotAcceptable)).await;
            return;
        };
        let o = &self.occupants[&nick];
        let role = o.role;
        let real = o.real.clone();
        if role < Role::Participant {
            // §7.4 / §8.3: visitors in a moderated room have no voice.
            refuse(server, &m, StanzaError::new(Cond::Forbidden)).await;
            return;
        }
        let subject = m.get_child("subject", ns::CLIENT).is_some();
        let body = m.get_child("body", ns::CLIENT).is_some();
        if subject && !body {
            // §8.1: moderators, or everyone with voice when the room allows it.
            if role != Role::Moderator && !self.config.change_subject {
                refuse(server, &m, StanzaError::new(Cond::Forbidden)).await;
                return;
            }
        }
        let occupant_id = self.occupant_id(&real);
        if let Some(r) = m.get_child("retract", NS_RETRACT) {
            // XEP-0424 §5.2: only the author retracts, as proven by its occupant id.
            let target = r.attribute("id").unwrap_or_default().to_owned();
            match self.archived_author(server, &target).await {
                Some(author) if author == occupant_id => {
                    self.tombstone(server, &target, None).await;
                }
                _ => {
                    refuse(server, &m, StanzaError::new(Cond::Forbidden)).await;
                    return;
                }
            }
        }
        let mut out = m;
        out.put_attr("from", self.nick_jid(&nick));
        out.remove_attr("to");
        strip_by(&mut out, self.jid.as_str());
        // XEP-0421 §4: an occupant id the client put there is never trusted.
        remove_children(&mut out, |c| c.is("occupant-id", NS_OCCUPANT_ID));
        out.append_child(
            Element::builder("occupant-id", NS_OCCUPANT_ID)
                .with_attr("id", occupant_id.as_str())
                .build(),
        );
        let id = svc.random_id();
        stamp(&mut out, self.jid.as_str(), &id);
        let when_ms = now_ms();
        let shared = self.fan_out(server, &out).await;
        if subject && !body {
            self.subject = Subject {
                text: out
                    .get_child("subject", ns::CLIENT)
                    .map(|s| s.text())
                    .unwrap_or_default(),
                nick: nick.clone(),
            };
            self.save(server, svc).await;
        } else if body && !no_store(&out) {
            self.history.push_back(HistoryEntry {
                msg: out.clone(),
                when_ms,
                chars: shared.serialised_len(),
            });
            while self.history.len() > svc.settings.history_max {
                self.history.pop_front();
            }
        }
        if self.config.logging
            && !no_store(&out)
            && (body || out.get_child("retract", NS_RETRACT).is_some())
        {
            self.archive(server, svc, &id, when_ms, &nick, &shared)
                .await;
        }
    }

    async fn private_message(
        &mut self,
        server: &Server,
        svc: &Service,
        m: Element,
        from: &Jid,
        to_nick: &str,
    ) {
        let _ = svc;
        let Some(nick) = self.sessions.get(from).cloned() else {
            refuse(server, &m, StanzaError::new(Cond::NotAcceptable)).await;
            return;
        };
        if m.attribute("type") == Some("groupchat") {
            // §7.5: groupchat goes to the room, never to one occupant.
            refuse(server, &m, StanzaError::new(Cond::BadRequest)).await;
            return;
        }
        let role = self.occupants[&nick].role;
        if !self.config.allow_pm.allows(role) {
            refuse(
                server,
                &m,
                StanzaError::with_text(Cond::Forbidden, "private messages are not allowed here"),
            )
            .await;
            return;
        }
        let Some(target) = self.occupants.get(to_nick) else {
            refuse(server, &m, StanzaError::new(Cond::ItemNotFound)).await;
            return;
        };
        let mut out = m;
        out.put_attr("from", self.nick_jid(&nick));
        if out.get_child("x", NS_MUC_USER).is_none() {
            out.append_child(Element::builder("x", NS_MUC_USER).build());
        }
        for s in &target.sessions {
            let mut c = out.clone();
            c.put_attr("to", s.as_str());
            deliver(server, c, false).await;
        }
    }

    async fn invite(
        &mut self,
        server: &Server,
        svc: &Service,
        m: &Element,
        x: &Element,
        from: &Jid,
    ) {
        let bare = from.bare();
        let aff = self.affiliation(svc, &bare);
        let Some(nick) = self.sessions.get(from).cloned() else {
            refuse(server, m, StanzaError::new(Cond::NotAcceptable)).await;
            return;
        };
        let role = self.occupants[&nick].role;
        if !self.config.allow_invites && aff < Affiliation::Admin && role != Role::Moderator {
            refuse(server, m, StanzaError::new(Cond::Forbidden)).await;
            return;
        }
        let mut changed = false;
        for inv in x.children().filter(|c| c.is("invite", NS_MUC_USER)) {
            let Some(invitee) = inv.jid_attribute("to") else {
                refuse(server, m, StanzaError::new(Cond::JidMalformed)).await;
                return;
            };
            // §7.8.2: an admin inviting into a members-only room makes the invitee a member.
            let ib = invitee.bare();
            if self.config.members_only
                && aff >= Affiliation::Admin
                && self.affiliation(svc, &ib) == Affiliation::None
                && self.affiliations.len() < svc.settings.max_affiliations
            {
                self.affiliations.insert(
                    ib,
                    AffEntry {
                        affiliation: Affiliation::Member,
                        nick: None,
                        reason: None,
                    },
                );
                changed = true;
            }
            let mut invite =
                Element::builder("invite", NS_MUC_USER).with_attr("from", from.as_str());
            let reason = inv.get_child("reason", NS_MUC_USER).map(|r| r.text());
            if let Some(r) = &reason {
                invite = invite.append(text_el("reason", NS_MUC_USER, r));
            }
            let mut ux = Element::builder("x", NS_MUC_USER).append(invite);
            if self.config.password_protected {
                ux = ux.append(text_el("password", NS_MUC_USER, &self.config.secret));
            }
            let body = format!(
                "{} invites you to the room {}{}",
                from.bare(),
                self.jid,
                reason.map(|r| format!(": {r}")).unwrap_or_default()
            );
            let out = Element::builder("message", ns::CLIENT)
                .with_attr("from", self.jid.as_str())
                .with_attr("to", invitee.as_str())
                .append(ux)
                .append(text_el("body", ns::CLIENT, &body))
                .build();
            deliver(server, out, false).await;
        }
        if changed {
            self.save(server, svc).await;
        }
    }

    async fn decline(&self, server: &Server, m: &Element, d: &Element, from: &Jid) {
        let Some(inviter) = d.jid_attribute("to") else {
            refuse(server, m, StanzaError::new(Cond::JidMalformed)).await;
            return;
        };
        let mut decline =
            Element::builder("decline", NS_MUC_USER).with_attr("from", from.bare().as_str());
        if let Some(r) = d.get_child("reason", NS_MUC_USER) {
            decline = decline.append(text_el("reason", NS_MUC_USER, &r.text()));
        }
        let out = Element::builder("message", ns::CLIENT)
            .with_attr("from", self.jid.as_str())
            .with_attr("to", inviter.as_str())
            .append(Element::builder("x", NS_MUC_USER).append(decline))
            .build();
        deliver(server, out, false).await;
    }

    /// §7.13 voice requests: a visitor asks (the form goes to every moderator), a moderator
    /// approves (the visitor becomes a participant).
    async fn voice_request(
        &mut self,
        server: &Server,
        svc: &Service,
        m: &Element,
        form: &Element,
        from: &Jid,
    ) {
        let Ok(fields) = submitted_fields(form, FORM_REQUEST) else {
            refuse(server, m, StanzaError::new(Cond::BadRequest)).await;
            return;
        };
        let Some(nick) = self.sessions.get(from).cloned() else {
            refuse(server, m, StanzaError::new(Cond::NotAcceptable)).await;
            return;
        };
        let value = |var: &str| {
            fields
                .iter()
                .find(|(v, _)| v == var)
                .and_then(|(_, vals)| vals.first())
                .map(|v| v.trim().to_owned())
        };
        let actor = &self.occupants[&nick];
        let actor_role = actor.role;
        if let Some(allow) = value("muc#request_allow") {
            // A moderator's answer.
            if !matches!(allow.as_str(), "1" | "true") {
                return;
            }
            let Some(target) = value("muc#roomnick") else {
                refuse(server, m, StanzaError::new(Cond::BadRequest)).await;
                return;
            };
            let actor_aff = self.affiliation(svc, &actor.real);
            let Some(t) = self.occupants.get(&target) else {
                refuse(server, m, StanzaError::new(Cond::ItemNotFound)).await;
                return;
            };
            let taff = self.affiliation(svc, &t.real);
            if t.role != Role::Visitor {
                return;
            }
            if super::roles::may_set_role(
                (actor_aff, actor_role),
                (taff, t.role),
                Role::Participant,
            )
            .is_err()
            {
                refuse(server, m, StanzaError::new(Cond::Forbidden)).await;
                return;
            }
            if let Some(t) = self.occupants.get_mut(&target) {
                t.role = Role::Participant;
            }
            let extra = Extra {
                actor: Some(&nick),
                ..Extra::default()
            };
            self.announce(server, svc, &target, &extra).await;
            return;
        }
        if actor_role != Role::Visitor {
            return;
        }
        let field = |var: &str, kind: &str, label: &str, value: &str| {
            Element::builder("field", NS_DATA)
                .with_attr("var", var)
                .with_attr("type", kind)
                .with_attr("label", label)
                .append(Element::builder("value", NS_DATA).append(value))
        };
        let request = Element::builder("x", NS_DATA)
            .with_attr("type", "form")
            .append(Element::builder("title", NS_DATA).append("Voice request"))
            .append(
                Element::builder("field", NS_DATA)
                    .with_attr("var", "FORM_TYPE")
                    .with_attr("type", "hidden")
                    .append(Element::builder("value", NS_DATA).append(FORM_REQUEST)),
            )
            .append(field(
                "muc#role",
                "list-single",
                "Requested role",
                "participant",
            ))
            .append(field("muc#jid", "jid-single", "User ID", from.as_str()))
            .append(field("muc#roomnick", "text-single", "Room Nickname", &nick))
            .append(field(
                "muc#request_allow",
                "boolean",
                "Grant voice to this person?",
                "false",
            ))
            .build();
        let msg = Element::builder("message", ns::CLIENT)
            .with_attr("from", self.jid.as_str())
            .append(request)
            .build();
        for o in self
            .occupants
            .values()
            .filter(|o| o.role == Role::Moderator)
        {
            for s in &o.sessions {
                let mut c = msg.clone();
                c.put_attr("to", s.as_str());
                deliver(server, c, false).await;
            }
        }
    }

    /// Removes the session `full` (its client went away without leaving).
    pub async fn session_gone(&mut self, server: &Server, svc: &Service, full: &Jid) {
        let Some(nick) = self.sessions.get(full).cloned() else {
            return;
        };
        let p = Element::builder("presence", ns::CLIENT)
            .with_attr("type", "unavailable")
            .build();
        self.leave(server, svc, full, &nick, &p).await;
    }

    /// Tells every occupant it is out because the service is shutting down (332).
    pub async fn shutdown_notice(&self, server: &Server, svc: &Service) {
        for (nick, o) in &self.occupants {
            let aff = self.affiliation(svc, &o.real);
            let el = self.presence_of(
                nick,
                &o.real,
                o.sessions.first(),
                aff,
                Role::None,
                &[],
                true,
                true,
                &Extra::default(),
                &[110, 332],
            );
            for s in &o.sessions {
                let mut c = el.clone();
                c.put_attr("to", s.as_str());
                deliver(server, c, true).await;
            }
        }
    }

    /// Destroys the room (§10.9): every occupant is told, with the alternate venue and
    /// reason, and everything stored goes.
    pub async fn destroy(
        &mut self,
        server: &Server,
        svc: &Service,
        venue: Option<&str>,
        reason: Option<&str>,
        password: Option<&str>,
    ) {
        let mut d = Element::builder("destroy", NS_MUC_USER);
        if let Some(v) = venue {
            d = d.with_attr("jid", v);
        }
        if let Some(r) = reason {
            d = d.append(text_el("reason", NS_MUC_USER, r));
        }
        if let Some(pw) = password {
            d = d.append(text_el("password", NS_MUC_USER, pw));
        }
        let d = d.build();
        let occupants = std::mem::take(&mut self.occupants);
        for (nick, o) in &occupants {
            let extra = Extra {
                destroy: Some(d.clone()),
                ..Extra::default()
            };
            let el = self.presence_of(
                nick,
                &o.real,
                None,
                Affiliation::None,
                Role::None,
                &[],
                true,
                false,
                &extra,
                &[],
            );
            for s in &o.sessions {
                svc.left(s, &self.jid);
                let mut c = el.clone();
                c.put_attr("to", s.as_str());
                deliver(server, c, true).await;
            }
        }
        self.sessions.clear();
        self.exists = false;
        self.locked = false;
        self.affiliations.clear();
        self.history.clear();
        self.subject = Subject::default();
        self.forget(server, svc).await;
        self.config = svc.default_config();
        tracing::debug!(room = %self.jid, "room destroyed");
    }
}

/// `<no-store/>` or `<no-permanent-store/>` (XEP-0334).
fn no_store(m: &Element) -> bool {
    m.children().any(|c| {
        (c.name() == "no-store" || c.name() == "no-permanent-store") && c.ns() == "urn:xmpp:hints"
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use starling_core::config::ResourceConflict;
    use starling_core::{Config, Outbound, SessionHandle};

    /// Issue 9: a message to a room is serialised once; every local session's queue gets the
    /// same bytes (one `Arc`), addressed on the way out.
    #[tokio::test]
    async fn fan_out_queues_one_serialisation_for_every_session() {
        let config = Config::default();
        let storage = starling_storage::open("sqlite::memory:").await.unwrap();
        let server = Server::new(Arc::new(config.clone()), storage, vec![]).unwrap();
        let svc = Service::new(&config);
        let host = config.server.hosts[0].clone();
        let mut room = Room::absent(Jid::parse(&format!("r@conference.{host}")).unwrap(), &svc);
        let mut inboxes = Vec::new();
        for i in 0..3 {
            let full = Jid::parse(&format!("u{i}@{host}/res")).unwrap();
            let (handle, inbox) = SessionHandle::new(8);
            server
                .router()
                .bind(&full, handle, ResourceConflict::RefuseNew, 10)
                .unwrap();
            room.occupants.insert(
                format!("nick{i}"),
                Occupant {
                    real: full.bare(),
                    sessions: vec![full.clone()],
                    role: Role::Participant,
                    payload: Vec::new(),
                },
            );
            inboxes.push((full, inbox));
        }
        let msg: Element = format!(
            "<message xmlns='jabber:client' type='groupchat' from='{}'><body>hi</body></message>",
            room.nick_jid("nick0")
        )
        .parse()
        .unwrap();
        room.fan_out(&server, &msg).await;

        let mut first: Option<Arc<SharedStanza>> = None;
        for (full, mut inbox) in inboxes {
            let Ok(Outbound::Shared(shared, to)) = inbox.rx.try_recv() else {
                panic!("{full}: no shared stanza queued");
            };
            assert_eq!(to, full);
            if let Some(f) = &first {
                assert!(Arc::ptr_eq(f, &shared), "serialised more than once");
            }
            let mut bytes = Vec::new();
            shared.write_to(&to, &mut bytes);
            let got: Element = String::from_utf8(bytes).unwrap().parse().unwrap();
            assert_eq!(got.attribute("to"), Some(full.as_str()));
            assert_eq!(
                got.get_child("body", ns::CLIENT).map(|b| b.text()),
                Some("hi".into())
            );
            first = Some(shared);
            assert!(inbox.rx.try_recv().is_err(), "one stanza per session");
        }
    }
}
