//! IQs to the service and to rooms: service discovery (XEP-0045 §6), the owner's
//! configuration form and instant rooms (§10.1–§10.2), destruction (§10.9), affiliation and
//! role administration with their lists (§8–§10: kick 307, ban 301, removal 321/322), nickname
//! registration (§7.10) and discovery (§7.12), self-ping (XEP-0410), IQs between occupants
//! (proxied from room JID to room JID), moderation
//! (XEP-0425) and the room archive (XEP-0313, in [`super::archive`]).

use minidom::Element;
use starling_core::xml::{BuilderExt, ElementExt};
use starling_core::Server;
use starling_proto::error::{StanzaError, StanzaErrorCondition as Cond};
use starling_proto::jid::Jid;
use starling_proto::ns;
use starling_proto::Attr;

use super::config::FORM_ROOMCONFIG;
use super::roles::{
    default_role, may_set_affiliation, may_set_role, Affiliation, Role, RoleDenied,
};
use super::room::{deliver, refuse, AffEntry, Extra, Room};
use super::{
    Service, NS_MODERATE, NS_MUC, NS_MUC_ADMIN, NS_MUC_OWNER, NS_OCCUPANT_ID, NS_RETRACT,
    SERVICE_NAME,
};
use crate::mam::query::NS_MAM;
use crate::pep::config::{submitted_fields, NS_DATA};

/// Nickname registration.
const NS_REGISTER: &str = "jabber:iq:register";
/// The registration form's FORM_TYPE.
const FORM_REGISTER: &str = "http://jabber.org/protocol/muc#register";
/// The room information form's FORM_TYPE.
const FORM_ROOMINFO: &str = "http://jabber.org/protocol/muc#roominfo";
/// XEP-0410: the service answers self-pings itself.
const NS_SELF_PING: &str = "http://jabber.org/protocol/muc#self-ping-optimization";
/// XEP-0045 §6.4: stable ids (the room keeps client message ids).
const NS_STABLE_ID: &str = "http://jabber.org/protocol/muc#stable_id";

fn result(iq: &Element, payload: Option<Element>) -> Element {
    let mut r = Element::builder("iq", ns::CLIENT)
        .with_attr("type", "result")
        .with_attr("from", iq.attribute("to").unwrap_or_default())
        .with_attr("to", iq.attribute("from").unwrap_or_default())
        .with_attr("id", iq.attribute("id").unwrap_or_default())
        .build();
    if let Some(p) = payload {
        r.append_child(p);
    }
    r
}

fn identity(category: &str, kind: &str, name: &str) -> Element {
    let mut b = Element::builder("identity", ns::DISCO_INFO)
        .with_attr("category", category)
        .with_attr("type", kind);
    if !name.is_empty() {
        b = b.with_attr("name", name);
    }
    b.build()
}

fn feature(var: &str) -> Element {
    Element::builder("feature", ns::DISCO_INFO)
        .with_attr("var", var)
        .build()
}

fn denied(d: RoleDenied) -> StanzaError {
    match d {
        RoleDenied::Forbidden => StanzaError::new(Cond::Forbidden),
        RoleDenied::NotAllowed => StanzaError::new(Cond::NotAllowed),
    }
}

/// A stanza to the service's own JID.
pub async fn service_stanza(server: &Server, svc: &Service, stanza: &Element, to: &Jid) {
    if stanza.name() != "iq" || !matches!(stanza.attribute("type"), Some("get" | "set")) {
        if stanza.name() == "message" && stanza.attribute("type") != Some("error") {
            refuse(server, stanza, StanzaError::new(Cond::ServiceUnavailable)).await;
        }
        return;
    }
    let Some(payload) = stanza.children().next() else {
        refuse(server, stanza, StanzaError::new(Cond::BadRequest)).await;
        return;
    };
    let get = stanza.attribute("type") == Some("get");
    let answer = if get
        && payload.is("query", ns::DISCO_INFO)
        && payload.attribute("node").is_none()
    {
        let mut q = Element::builder("query", ns::DISCO_INFO)
            .append(identity("conference", "text", SERVICE_NAME))
            .build();
        for f in [
            ns::DISCO_INFO,
            ns::DISCO_ITEMS,
            NS_MUC,
            NS_OCCUPANT_ID,
            ns::PING,
        ] {
            q.append_child(feature(f));
        }
        Ok(Some(q))
    } else if get && payload.is("query", ns::DISCO_ITEMS) && payload.attribute("node").is_none() {
        // §6.3: the public rooms, persistent (from storage) and temporary (in memory).
        let mut rooms: std::collections::BTreeMap<String, String> =
            super::store::listed(server, to.domain())
                .await
                .into_iter()
                .filter(|(_, public, _)| *public)
                .map(|(node, _, name)| (format!("{node}@{}", to.domain()), name))
                .collect();
        for (jid, name) in svc.temporary_listing.read().iter() {
            if jid.domain() == to.domain() {
                rooms.insert(jid.as_str().to_owned(), name.clone());
            }
        }
        let mut q = Element::builder("query", ns::DISCO_ITEMS).build();
        for (jid, name) in rooms {
            let mut item = Element::builder("item", ns::DISCO_ITEMS).with_attr("jid", jid.as_str());
            if !name.is_empty() {
                item = item.with_attr("name", name);
            }
            q.append_child(item.build());
        }
        Ok(Some(q))
    } else if get && payload.is("ping", ns::PING) {
        Ok(None)
    } else if payload.is("query", ns::DISCO_INFO) || payload.is("query", ns::DISCO_ITEMS) {
        Err(StanzaError::new(Cond::ItemNotFound))
    } else {
        Err(StanzaError::new(Cond::ServiceUnavailable))
    };
    match answer {
        Ok(p) => server.route(result(stanza, p)).await,
        Err(e) => refuse(server, stanza, e).await,
    }
}

impl Room {
    /// An IQ to the room or to an occupant.
    pub async fn on_iq(&mut self, server: &Server, svc: &Service, iq: Element, from: Jid) {
        let kind = iq.attribute("type").unwrap_or_default();
        let Some(to) = iq.jid_attribute("to") else {
            return;
        };
        if !matches!(kind, "get" | "set") {
            // An answer to a proxied request goes back to the requester; anything else
            // answers nothing we asked and is dropped.
            if let Some(nick) = to.resource() {
                self.proxy_answer(server, iq.clone(), &from, nick).await;
            }
            return;
        }
        if let Some(nick) = to.resource() {
            if self.proxy_request(server, &iq, &from, nick).await {
                return;
            }
        }
        let Some(payload) = iq.children().next().cloned() else {
            refuse(server, &iq, StanzaError::new(Cond::BadRequest)).await;
            return;
        };
        let get = kind == "get";
        let answer = if let Some(nick) = to.resource() {
            self.occupant_iq(&from, nick, get, &payload)
        } else if !self.exists
            || (self.locked && self.affiliation(svc, &from.bare()) != Affiliation::Owner)
        {
            Err(StanzaError::new(Cond::ItemNotFound))
        } else {
            let ns = payload.ns();
            match (payload.name(), ns.as_str(), get) {
                ("query", ns::DISCO_INFO, true) => self.disco_info(svc, &from, &payload),
                ("query", ns::DISCO_ITEMS, true) => {
                    Ok(Some(Element::builder("query", ns::DISCO_ITEMS).build()))
                }
                ("ping", ns::PING, true) => Ok(None),
                ("query", NS_MUC_OWNER, _) => self.owner(server, svc, &from, get, &payload).await,
                ("query", NS_MUC_ADMIN, true) => self.admin_get(svc, &from, &payload),
                ("query", NS_MUC_ADMIN, false) => {
                    self.admin_set(server, svc, &from, &payload).await
                }
                ("query", NS_REGISTER, _) => self.register(server, svc, &from, get, &payload).await,
                ("query", NS_MAM, _) => self.mam_query(server, svc, &from, get, &payload).await,
                ("moderate", NS_MODERATE, false) => {
                    self.moderate(server, svc, &from, &payload).await
                }
                _ => Err(StanzaError::new(Cond::ServiceUnavailable)),
            }
        };
        if !self.exists {
            // The owner cancelled the configuration of a new room, or destroyed it.
            svc.list_room(self);
        }
        match answer {
            Ok(p) => deliver(server, result(&iq, p), false).await,
            Err(e) => refuse(server, &iq, e).await,
        }
    }

    /// IQ proxying between occupants (as Prosody and ejabberd do): a request from an
    /// occupant to another occupant goes to that occupant's first session (vCard requests to its account, which the server answers),
    /// from the requester's room JID. Returns false when not proxied (answered locally).
    async fn proxy_request(&self, server: &Server, iq: &Element, from: &Jid, nick: &str) -> bool {
        let Some(own) = self.sessions.get(from) else {
            return false;
        };
        let Some(target) = self.occupants.get(nick) else {
            return false;
        };
        if own == nick {
            return false;
        }
        let vcard = iq.children().any(|c| c.is("vCard", "vcard-temp"));
        let to = if vcard {
            target.real.clone()
        } else {
            match target.sessions.first() {
                Some(s) => s.clone(),
                None => return false,
            }
        };
        let mut out = iq.clone();
        out.put_attr("from", self.nick_jid(own));
        out.put_attr("to", to.as_str());
        deliver(server, out, false).await;
        true
    }

    /// The answer to a proxied request, from an occupant's session (or, for vCards, its
    /// account), goes to the requester `nick`'s first session from the answerer's room JID.
    async fn proxy_answer(&self, server: &Server, mut iq: Element, from: &Jid, nick: &str) {
        let answerer = self.sessions.get(from).cloned().or_else(|| {
            self.occupants
                .iter()
                .find(|(_, o)| from.is_bare() && o.real == *from)
                .map(|(n, _)| n.clone())
        });
        let (Some(answerer), Some(requester)) = (answerer, self.occupants.get(nick)) else {
            return;
        };
        let Some(to) = requester.sessions.first() else {
            return;
        };
        iq.put_attr("from", self.nick_jid(&answerer));
        iq.put_attr("to", to.as_str());
        deliver(server, iq, false).await;
    }

    /// IQs to `room/nick` that are not proxied: self-ping (XEP-0410) is answered by the
    /// service; requests from non-occupants are refused.
    fn occupant_iq(
        &self,
        from: &Jid,
        nick: &str,
        get: bool,
        payload: &Element,
    ) -> Result<Option<Element>, StanzaError> {
        let own = self.sessions.get(from);
        if get && payload.is("ping", ns::PING) {
            return match own {
                Some(n) if n == nick => Ok(None),
                // §3.2: not joined (under that nickname).
                _ if own.is_none() => Err(StanzaError::new(Cond::NotAcceptable)),
                _ => Err(StanzaError::new(Cond::FeatureNotImplemented)),
            };
        }
        if own.is_none() {
            return Err(StanzaError::new(Cond::NotAcceptable));
        }
        if !self.occupants.contains_key(nick) {
            return Err(StanzaError::new(Cond::ItemNotFound));
        }
        Err(StanzaError::new(Cond::FeatureNotImplemented))
    }

    fn disco_info(
        &self,
        svc: &Service,
        from: &Jid,
        q: &Element,
    ) -> Result<Option<Element>, StanzaError> {
        if let Some(node) = q.attribute("node") {
            if node != "x-roomuser-item" {
                return Err(StanzaError::new(Cond::ItemNotFound));
            }
            // §7.12: the requester's reserved nickname, if any.
            let mut out = Element::builder("query", ns::DISCO_INFO)
                .with_attr("node", node)
                .build();
            if let Some(n) = self
                .affiliations
                .get(&from.bare())
                .and_then(|e| e.nick.clone())
            {
                out.append_child(identity("conference", "text", &n));
            }
            return Ok(Some(out));
        }
        let c = &self.config;
        let name = if c.name.is_empty() {
            self.jid.node().unwrap_or_default()
        } else {
            &c.name
        };
        let mut out = Element::builder("query", ns::DISCO_INFO)
            .append(identity("conference", "text", name))
            .build();
        let flag = |on: bool, yes: &'static str, no: &'static str| if on { yes } else { no };
        let mut features = vec![
            NS_MUC,
            NS_STABLE_ID,
            NS_SELF_PING,
            NS_OCCUPANT_ID,
            crate::stanza_id::NS_SID,
            NS_REGISTER,
            NS_RETRACT,
            NS_MODERATE,
            flag(
                c.password_protected,
                "muc_passwordprotected",
                "muc_unsecured",
            ),
            flag(c.members_only, "muc_membersonly", "muc_open"),
            flag(c.moderated, "muc_moderated", "muc_unmoderated"),
            flag(c.persistent, "muc_persistent", "muc_temporary"),
            flag(c.public, "muc_public", "muc_hidden"),
            flag(
                c.whois == super::config::Whois::Anyone,
                "muc_nonanonymous",
                "muc_semianonymous",
            ),
        ];
        if c.logging {
            features.push(NS_MAM);
        }
        let _ = svc;
        for f in features {
            out.append_child(feature(f));
        }
        let field = |var: &str, value: String| {
            Element::builder("field", NS_DATA)
                .with_attr("var", var)
                .append(Element::builder("value", NS_DATA).append(value))
                .build()
        };
        let mut form = Element::builder("x", NS_DATA)
            .with_attr("type", "result")
            .build();
        form.append_child(
            Element::builder("field", NS_DATA)
                .with_attr("var", "FORM_TYPE")
                .with_attr("type", "hidden")
                .append(Element::builder("value", NS_DATA).append(FORM_ROOMINFO))
                .build(),
        );
        form.append_child(field("muc#roominfo_description", c.description.clone()));
        form.append_child(field(
            "muc#roominfo_occupants",
            self.occupants.len().to_string(),
        ));
        form.append_child(field("muc#roominfo_subject", self.subject.text.clone()));
        form.append_child(field("muc#roomconfig_roomname", c.name.clone()));
        if !c.lang.is_empty() {
            form.append_child(field("muc#roominfo_lang", c.lang.clone()));
        }
        out.append_child(form);
        Ok(Some(out))
    }

    fn jids_with(&self, aff: Affiliation) -> Vec<String> {
        self.affiliations
            .iter()
            .filter(|(_, e)| e.affiliation == aff)
            .map(|(j, _)| j.as_str().to_owned())
            .collect()
    }

    async fn owner(
        &mut self,
        server: &Server,
        svc: &Service,
        from: &Jid,
        get: bool,
        q: &Element,
    ) -> Result<Option<Element>, StanzaError> {
        if self.affiliation(svc, &from.bare()) != Affiliation::Owner {
            return Err(StanzaError::new(Cond::Forbidden));
        }
        if get {
            let form = self.config.to_form(
                "form",
                &self.jids_with(Affiliation::Owner),
                &self.jids_with(Affiliation::Admin),
            );
            return Ok(Some(
                Element::builder("query", NS_MUC_OWNER).append(form).build(),
            ));
        }
        if let Some(d) = q.get_child("destroy", NS_MUC_OWNER) {
            let venue = d.attribute("jid").map(str::to_owned);
            let reason = d.get_child("reason", NS_MUC_OWNER).map(|r| r.text());
            let password = d.get_child("password", NS_MUC_OWNER).map(|r| r.text());
            self.destroy(
                server,
                svc,
                venue.as_deref(),
                reason.as_deref(),
                password.as_deref(),
            )
            .await;
            return Ok(None);
        }
        let Some(x) = q.get_child("x", NS_DATA) else {
            return Err(StanzaError::new(Cond::BadRequest));
        };
        if x.attribute("type") == Some("cancel") {
            // §10.1.3: cancelling the initial configuration destroys the new room.
            if self.locked {
                self.destroy(server, svc, None, None, None).await;
            }
            return Ok(None);
        }
        let fields =
            submitted_fields(x, FORM_ROOMCONFIG).map_err(|_| StanzaError::new(Cond::BadRequest))?;
        let before = self.config.clone();
        let mut next = self.config.clone();
        let lists = next
            .apply(&fields, svc.settings.max_occupants)
            .map_err(|t| StanzaError::with_text(Cond::NotAcceptable, t))?;
        // The owner and admin lists replace those affiliations (§10.2).
        let mut affs = self.affiliations.clone();
        for (list, aff) in [
            (&lists.owners, Affiliation::Owner),
            (&lists.admins, Affiliation::Admin),
        ] {
            let Some(list) = list else { continue };
            let wanted: Vec<Jid> = list
                .iter()
                .filter(|s| !s.trim().is_empty())
                .map(|s| Jid::parse(s.trim()).map(|j| j.bare()))
                .collect::<Result<_, _>>()
                .map_err(|_| StanzaError::new(Cond::JidMalformed))?;
            affs.retain(|j, e| e.affiliation != aff || wanted.contains(j));
            for j in wanted {
                let e = affs.entry(j).or_insert(AffEntry {
                    affiliation: aff,
                    nick: None,
                    reason: None,
                });
                e.affiliation = aff;
            }
        }
        if !affs.values().any(|e| e.affiliation == Affiliation::Owner) {
            return Err(StanzaError::with_text(
                Cond::Conflict,
                "a room keeps at least one owner",
            ));
        }
        let changed_affs: Vec<Jid> = affs
            .iter()
            .filter(|(j, e)| {
                self.affiliations.get(*j).map(|o| o.affiliation) != Some(e.affiliation)
            })
            .map(|(j, _)| j.clone())
            .chain(
                self.affiliations
                    .keys()
                    .filter(|j| !affs.contains_key(*j))
                    .cloned(),
            )
            .collect();
        self.affiliations = affs;
        self.config = next;
        let was_locked = self.locked;
        self.locked = false;
        self.save(server, svc).await;
        if was_locked {
            tracing::debug!(room = %self.jid, "room unlocked");
        }
        for j in changed_affs {
            self.affiliation_changed(server, svc, &j, None, None).await;
        }
        // §10.2.1: tell the occupants what changed.
        let mut codes = Vec::new();
        if before.logging != self.config.logging {
            codes.push(if self.config.logging { 170 } else { 171 });
        }
        if before.whois != self.config.whois {
            codes.push(if self.config.whois == super::config::Whois::Anyone {
                172
            } else {
                173
            });
        }
        if !was_locked {
            codes.push(104);
            self.notify_codes(server, &codes).await;
        }
        if self.config.members_only && !before.members_only {
            // §9.3: entering members-only removes those without an affiliation (322).
            let out: Vec<String> = self
                .occupants
                .iter()
                .filter(|(_, o)| self.affiliation(svc, &o.real) < Affiliation::Member)
                .map(|(n, _)| n.clone())
                .collect();
            for n in out {
                let extra = Extra {
                    codes: vec![322],
                    ..Extra::default()
                };
                self.remove_occupant(server, svc, &n, &extra).await;
            }
        }
        Ok(None)
    }

    fn item_of(
        &self,
        svc: &Service,
        nick: Option<&str>,
        jid: Option<&Jid>,
        aff: Affiliation,
        role: Option<Role>,
    ) -> Element {
        let _ = svc;
        let mut item =
            Element::builder("item", NS_MUC_ADMIN).with_attr("affiliation", aff.as_str());
        if let Some(j) = jid {
            item = item.with_attr("jid", j.as_str());
        }
        if let Some(n) = nick {
            item = item.with_attr("nick", n);
        }
        if let Some(r) = role {
            item = item.with_attr("role", r.as_str());
        }
        item.build()
    }

    /// §8.5, §9.5, §9.8, §10.5, §10.8: lists by affiliation or by role.
    fn admin_get(
        &self,
        svc: &Service,
        from: &Jid,
        q: &Element,
    ) -> Result<Option<Element>, StanzaError> {
        let item = q
            .get_child("item", NS_MUC_ADMIN)
            .ok_or_else(|| StanzaError::new(Cond::BadRequest))?;
        let actor_aff = self.affiliation(svc, &from.bare());
        let actor_role = self
            .sessions
            .get(from)
            .and_then(|n| self.occupants.get(n))
            .map_or(Role::None, |o| o.role);
        let mut out = Element::builder("query", NS_MUC_ADMIN).build();
        if let Some(aff) = item.attribute("affiliation") {
            let aff = Affiliation::parse(aff).ok_or_else(|| StanzaError::new(Cond::BadRequest))?;
            let allowed = actor_aff >= Affiliation::Admin
                || (aff == Affiliation::Member
                    && actor_role != Role::None
                    && self.config.get_member_list.contains(&actor_role));
            if !allowed || aff == Affiliation::None {
                return Err(StanzaError::new(Cond::Forbidden));
            }
            for (j, e) in self
                .affiliations
                .iter()
                .filter(|(_, e)| e.affiliation == aff)
            {
                let mut el = self.item_of(svc, e.nick.as_deref(), Some(j), aff, None);
                if let Some(r) = &e.reason {
                    el.append_child(
                        Element::builder("reason", NS_MUC_ADMIN)
                            .append(r.as_str())
                            .build(),
                    );
                }
                out.append_child(el);
            }
        } else if let Some(role) = item.attribute("role") {
            let role = Role::parse(role).ok_or_else(|| StanzaError::new(Cond::BadRequest))?;
            if actor_role != Role::Moderator || role == Role::None {
                return Err(StanzaError::new(Cond::Forbidden));
            }
            for (n, o) in self.occupants.iter().filter(|(_, o)| o.role == role) {
                let aff = self.affiliation(svc, &o.real);
                out.append_child(self.item_of(svc, Some(n), Some(&o.real), aff, Some(role)));
            }
        } else {
            return Err(StanzaError::new(Cond::BadRequest));
        }
        Ok(Some(out))
    }

    /// §8.2–§8.4, §9.1–§9.7, §10.3–§10.7: role and affiliation changes, validated as a
    /// whole before any is applied.
    async fn admin_set(
        &mut self,
        server: &Server,
        svc: &Service,
        from: &Jid,
        q: &Element,
    ) -> Result<Option<Element>, StanzaError> {
        enum Change {
            Role(String, Role, Option<String>),
            Aff(Jid, Affiliation, Option<String>),
        }
        let actor_bare = from.bare();
        let actor_aff = self.affiliation(svc, &actor_bare);
        let actor_nick = self.sessions.get(from).cloned();
        let actor_role = actor_nick
            .as_ref()
            .and_then(|n| self.occupants.get(n))
            .map_or(Role::None, |o| o.role);
        let mut changes = Vec::new();
        let mut owners: std::collections::HashSet<Jid> = self
            .affiliations
            .iter()
            .filter(|(_, e)| e.affiliation == Affiliation::Owner)
            .map(|(j, _)| j.clone())
            .collect();
        let items: Vec<&Element> = q
            .children()
            .filter(|c| c.is("item", NS_MUC_ADMIN))
            .collect();
        if items.is_empty() {
            return Err(StanzaError::new(Cond::BadRequest));
        }
        for item in items {
            let reason = item.get_child("reason", NS_MUC_ADMIN).map(|r| r.text());
            if let Some(aff) = item.attribute("affiliation") {
                let aff =
                    Affiliation::parse(aff).ok_or_else(|| StanzaError::new(Cond::BadRequest))?;
                let target = match (item.attribute("jid"), item.attribute("nick")) {
                    (Some(j), _) => Jid::parse(j)
                        .map_err(|_| StanzaError::new(Cond::JidMalformed))?
                        .bare(),
                    (None, Some(n)) => self
                        .occupants
                        .get(n)
                        .map(|o| o.real.clone())
                        .ok_or_else(|| StanzaError::new(Cond::ItemNotFound))?,
                    _ => return Err(StanzaError::new(Cond::BadRequest)),
                };
                let old = self.affiliation(svc, &target);
                may_set_affiliation(actor_aff, old, aff).map_err(denied)?;
                if svc.is_admin(&target) && aff != Affiliation::Owner {
                    return Err(StanzaError::new(Cond::NotAllowed));
                }
                if aff == Affiliation::Owner {
                    owners.insert(target.clone());
                } else {
                    owners.remove(&target);
                }
                changes.push(Change::Aff(target, aff, reason));
            } else if let Some(role) = item.attribute("role") {
                let role = Role::parse(role).ok_or_else(|| StanzaError::new(Cond::BadRequest))?;
                let nick = item
                    .attribute("nick")
                    .ok_or_else(|| StanzaError::new(Cond::BadRequest))?;
                let target = self
                    .occupants
                    .get(nick)
                    .ok_or_else(|| StanzaError::new(Cond::ItemNotFound))?;
                let taff = self.affiliation(svc, &target.real);
                may_set_role((actor_aff, actor_role), (taff, target.role), role).map_err(denied)?;
                changes.push(Change::Role(nick.to_owned(), role, reason));
            } else {
                return Err(StanzaError::new(Cond::BadRequest));
            }
        }
        if owners.is_empty() {
            // §10.6: the last owner cannot go.
            return Err(StanzaError::with_text(
                Cond::Conflict,
                "a room keeps at least one owner",
            ));
        }
        let actor = actor_nick.as_deref();
        for c in changes {
            match c {
                Change::Role(nick, role, reason) => {
                    if role == Role::None {
                        // §8.2: kick, status 307.
                        let extra = Extra {
                            codes: vec![307],
                            actor,
                            reason: reason.as_deref(),
                            ..Extra::default()
                        };
                        self.remove_occupant(server, svc, &nick, &extra).await;
                    } else if let Some(o) = self.occupants.get_mut(&nick) {
                        if o.role != role {
                            o.role = role;
                            let extra = Extra {
                                actor,
                                reason: reason.as_deref(),
                                ..Extra::default()
                            };
                            self.announce(server, svc, &nick, &extra).await;
                        }
                    }
                }
                Change::Aff(jid, aff, reason) => {
                    if aff == Affiliation::None {
                        self.affiliations.remove(&jid);
                    } else {
                        if !self.affiliations.contains_key(&jid)
                            && self.affiliations.len() >= svc.settings.max_affiliations
                        {
                            tracing::info!(room = %self.jid, "affiliation list full");
                            return Err(StanzaError::new(Cond::ResourceConstraint));
                        }
                        let e = self.affiliations.entry(jid.clone()).or_insert(AffEntry {
                            affiliation: aff,
                            nick: None,
                            reason: None,
                        });
                        e.affiliation = aff;
                        e.reason = reason.clone();
                    }
                    self.affiliation_changed(server, svc, &jid, actor, reason.as_deref())
                        .await;
                }
            }
        }
        self.save(server, svc).await;
        Ok(None)
    }

    /// Applies the consequences of `jid`'s new affiliation to its occupants: banned (301),
    /// removed from a members-only room (321), or a new role and a presence update.
    pub async fn affiliation_changed(
        &mut self,
        server: &Server,
        svc: &Service,
        jid: &Jid,
        actor: Option<&str>,
        reason: Option<&str>,
    ) {
        let aff = self.affiliation(svc, jid);
        let nicks: Vec<String> = self
            .occupants
            .iter()
            .filter(|(_, o)| o.real == *jid)
            .map(|(n, _)| n.clone())
            .collect();
        if nicks.is_empty() {
            // §9.3 and following: someone not in the room learns of the change (101).
            let mut it = Element::builder("item", super::NS_MUC_USER)
                .with_attr("affiliation", aff.as_str())
                .with_attr("jid", jid.as_str());
            if let Some(r) = reason {
                it = it.append(Element::builder("reason", super::NS_MUC_USER).append(r));
            }
            let msg = Element::builder("message", ns::CLIENT)
                .with_attr("from", self.jid.as_str())
                .with_attr("to", jid.as_str())
                .append(Element::builder("x", super::NS_MUC_USER).append(it).append(
                    Element::builder("status", super::NS_MUC_USER).with_attr("code", "101"),
                ))
                .build();
            deliver(server, msg, false).await;
        }
        for nick in nicks {
            let code = if aff == Affiliation::Outcast {
                Some(301)
            } else if self.config.members_only && aff < Affiliation::Member {
                Some(321)
            } else {
                None
            };
            let extra = Extra {
                codes: code.into_iter().collect(),
                actor,
                reason,
                ..Extra::default()
            };
            if code.is_some() {
                self.remove_occupant(server, svc, &nick, &extra).await;
            } else {
                if let Some(o) = self.occupants.get_mut(&nick) {
                    o.role = default_role(aff, self.config.moderated);
                }
                self.announce(server, svc, &nick, &extra).await;
            }
        }
    }

    /// §7.10: nickname registration makes the requester a member with a reserved nickname.
    async fn register(
        &mut self,
        server: &Server,
        svc: &Service,
        from: &Jid,
        get: bool,
        q: &Element,
    ) -> Result<Option<Element>, StanzaError> {
        let bare = from.bare();
        let aff = self.affiliation(svc, &bare);
        if aff == Affiliation::Outcast {
            return Err(StanzaError::new(Cond::Forbidden));
        }
        let current = self.affiliations.get(&bare).and_then(|e| e.nick.clone());
        if get {
            let mut out = Element::builder("query", NS_REGISTER).build();
            if let Some(n) = current {
                out.append_child(Element::builder("registered", NS_REGISTER).build());
                out.append_child(Element::builder("username", NS_REGISTER).append(n).build());
                return Ok(Some(out));
            }
            out.append_child(
                Element::builder("instructions", NS_REGISTER)
                    .append("Choose a nickname to reserve in this room.")
                    .build(),
            );
            out.append_child(
                Element::builder("x", NS_DATA)
                    .with_attr("type", "form")
                    .append(
                        Element::builder("field", NS_DATA)
                            .with_attr("var", "FORM_TYPE")
                            .with_attr("type", "hidden")
                            .append(Element::builder("value", NS_DATA).append(FORM_REGISTER)),
                    )
                    .append(
                        Element::builder("field", NS_DATA)
                            .with_attr("var", "muc#register_roomnick")
                            .with_attr("type", "text-single")
                            .with_attr("label", "Nickname")
                            .append(Element::builder("required", NS_DATA)),
                    )
                    .build(),
            );
            return Ok(Some(out));
        }
        if q.get_child("remove", NS_REGISTER).is_some() {
            // Cancelling the registration gives up the nickname and the membership.
            if let Some(e) = self.affiliations.get_mut(&bare) {
                e.nick = None;
                if e.affiliation == Affiliation::Member {
                    self.affiliations.remove(&bare);
                    self.affiliation_changed(server, svc, &bare, None, None)
                        .await;
                }
            }
            self.save(server, svc).await;
            return Ok(None);
        }
        if self.config.members_only && aff < Affiliation::Member {
            return Err(StanzaError::new(Cond::RegistrationRequired));
        }
        let x = q
            .get_child("x", NS_DATA)
            .ok_or_else(|| StanzaError::new(Cond::BadRequest))?;
        let fields =
            submitted_fields(x, FORM_REGISTER).map_err(|_| StanzaError::new(Cond::BadRequest))?;
        let nick = fields
            .iter()
            .find(|(v, _)| v == "muc#register_roomnick")
            .and_then(|(_, v)| v.first())
            .map(|n| n.trim().to_owned())
            .filter(|n| !n.is_empty())
            .ok_or_else(|| StanzaError::new(Cond::NotAcceptable))?;
        let nick = starling_proto::jid::prep_resource(&nick)
            .map_err(|_| StanzaError::new(Cond::JidMalformed))?;
        let taken = self
            .affiliations
            .iter()
            .any(|(j, e)| e.nick.as_deref() == Some(nick.as_str()) && *j != bare)
            || self.occupants.get(&nick).is_some_and(|o| o.real != bare);
        if taken {
            return Err(StanzaError::new(Cond::Conflict));
        }
        if !self.affiliations.contains_key(&bare)
            && self.affiliations.len() >= svc.settings.max_affiliations
        {
            return Err(StanzaError::new(Cond::ResourceConstraint));
        }
        let e = self.affiliations.entry(bare.clone()).or_insert(AffEntry {
            affiliation: Affiliation::Member,
            nick: None,
            reason: None,
        });
        e.nick = Some(nick);
        if aff == Affiliation::None {
            self.affiliation_changed(server, svc, &bare, None, None)
                .await;
        }
        self.save(server, svc).await;
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_swap_addresses() {
        let iq: Element = "<iq xmlns='jabber:client' type='get' id='a' from='u@x/r' to='r@c.x'/>"
            .parse()
            .unwrap();
        let r = result(&iq, None);
        assert_eq!(r.attribute("to"), Some("u@x/r"));
        assert_eq!(r.attribute("from"), Some("r@c.x"));
        assert_eq!(r.attribute("type"), Some("result"));
    }
}
