//! Who wants which notifications: XEP-0163 §4.2 filtered notifications through Entity
//! Capabilities (XEP-0115).
//!
//! An entity that shares presence with an account owner (a contact's resource, or one of the
//! owner's own resources) says in its presence `<c node ver hash/>`; the features behind `ver`
//! name the nodes it wants as `<node>+notify`. A `ver` seen for the first time is resolved
//! with a disco#info query to `node#ver` (§6.2) from the owner's bare JID to the entity's
//! full JID; an answer whose hash verifies (§5.4, sha-1, with extended forms) is cached for
//! everyone, others only for the entity that gave it (§5.4: do not cache what fails).
//!
//! What is in memory (sessions end with a restart anyway), bounded: the verified `ver`
//! cache, per owner the full JIDs that want notifications and their nodes, and the queries
//! in flight.

use starling_proto::Attr;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use base64::Engine;
use minidom::Element;
use sha1::{Digest, Sha1};
use starling_proto::jid::Jid;
use starling_proto::ns;

use crate::caps::Identity;

/// The caps namespace (XEP-0115).
pub const NS_CAPS: &str = "http://jabber.org/protocol/caps";
/// Verified `ver` values remembered (DESIGN principle 3); the cache is emptied when full.
const MAX_KNOWN: usize = 10_000;
/// Entities (full JIDs) one owner tracks.
const MAX_WATCHERS: usize = 2_000;
/// disco#info queries in flight, server-wide.
const MAX_PENDING: usize = 10_000;

/// The nodes an entity wants notifications for.
pub type NotifySet = Arc<BTreeSet<String>>;

/// The `<c/>` of a presence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapsRef {
    /// The software's node URI.
    pub node: String,
    /// The verification string.
    pub ver: String,
    /// The hash algorithm; absent in legacy (pre-1.4) caps, which cannot be verified.
    pub hash: Option<String>,
}

impl CapsRef {
    /// The `<c/>` child of `presence`, if it has a usable one.
    pub fn of(presence: &Element) -> Option<CapsRef> {
        let c = presence.get_child("c", NS_CAPS)?;
        Some(CapsRef {
            node: c.attribute("node")?.to_owned(),
            ver: c.attribute("ver")?.to_owned(),
            hash: c.attribute("hash").map(str::to_owned),
        })
    }

    /// The key of a verifiable `ver` in the shared cache.
    fn key(&self) -> Option<String> {
        match self.hash.as_deref() {
            Some("sha-1") => Some(format!("sha-1 {}", self.ver)),
            _ => None,
        }
    }
}

/// The `<node>+notify` features of a disco#info answer.
pub fn notify_set(query: &Element) -> BTreeSet<String> {
    query
        .children()
        .filter(|c| c.is("feature", ns::DISCO_INFO))
        .filter_map(|f| {
            f.attribute("var")?
                .strip_suffix("+notify")
                .map(str::to_owned)
        })
        .filter(|n| !n.is_empty())
        .collect()
}

/// A form field as hashed: its var and its values.
type Field = (String, Vec<String>);

/// XEP-0115 §5.1 step 6: the extended (data form) part of the verification string, or
/// `None` when the forms are malformed for hashing (§5.4 3.4-3.6: several forms with one
/// FORM_TYPE, or a FORM_TYPE that is not hidden).
fn forms_string(query: &Element) -> Option<String> {
    let mut forms: Vec<(String, Vec<Field>)> = Vec::new();
    for x in query.children().filter(|c| c.is("x", "jabber:x:data")) {
        let mut form_type = None;
        let mut fields = Vec::new();
        for f in x.children().filter(|c| c.is("field", "jabber:x:data")) {
            let var = f.attribute("var").unwrap_or_default().to_owned();
            let mut values: Vec<String> = f
                .children()
                .filter(|v| v.is("value", "jabber:x:data"))
                .map(|v| v.text())
                .collect();
            if var == "FORM_TYPE" {
                if f.attribute("type") != Some("hidden") {
                    return None;
                }
                form_type = values.into_iter().next();
            } else {
                values.sort_unstable();
                fields.push((var, values));
            }
        }
        // A form without FORM_TYPE is ignored (§5.4 3.6).
        if let Some(t) = form_type {
            if forms.iter().any(|(other, _)| *other == t) {
                return None;
            }
            fields.sort_by(|a, b| a.0.cmp(&b.0));
            forms.push((t, fields));
        }
    }
    forms.sort_by(|a, b| a.0.cmp(&b.0));
    let mut s = String::new();
    for (t, fields) in forms {
        s.push_str(&t);
        s.push('<');
        for (var, values) in fields {
            s.push_str(&var);
            s.push('<');
            for v in values {
                s.push_str(&v);
                s.push('<');
            }
        }
    }
    Some(s)
}

/// Whether a disco#info answer hashes to `ver` with sha-1 (XEP-0115 §5.4). Duplicate
/// identities or features make it invalid.
pub fn verifies(query: &Element, ver: &str) -> bool {
    let identities: Vec<Identity<'_>> = query
        .children()
        .filter(|c| c.is("identity", ns::DISCO_INFO))
        .map(|i| Identity {
            category: i.attribute("category").unwrap_or_default(),
            kind: i.attribute("type").unwrap_or_default(),
            lang: i.attr_ns(ns::XML, "lang").unwrap_or_default(),
            name: i.attribute("name").unwrap_or_default(),
        })
        .collect();
    let features: Vec<&str> = query
        .children()
        .filter(|c| c.is("feature", ns::DISCO_INFO))
        .filter_map(|f| f.attribute("var"))
        .collect();
    let unique_ids: HashSet<_> = identities
        .iter()
        .map(|i| (i.category, i.kind, i.lang, i.name))
        .collect();
    let unique_features: HashSet<_> = features.iter().collect();
    if unique_ids.len() != identities.len() || unique_features.len() != features.len() {
        return false;
    }
    let Some(forms) = forms_string(query) else {
        return false;
    };
    let mut s = crate::caps::verification_string(&identities, &features);
    s.push_str(&forms);
    let digest = Sha1::digest(s.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(digest) == ver
}

/// A disco#info query the server sent and waits for.
#[derive(Debug)]
struct Pending {
    /// Who was asked (the answer must come from there).
    entity: Jid,
    /// Shared-cache key when the answer can be verified.
    key: Option<String>,
    /// The `ver` asked about.
    ver: String,
    /// Owners waiting for the answer.
    owners: Vec<Jid>,
}

/// What to do about a presence's caps.
#[derive(Debug, PartialEq, Eq)]
pub enum CapsAction {
    /// Known: the entity now wants these nodes that it did not want before.
    Known(Vec<String>),
    /// Unknown: send this disco#info query (`id`, `node#ver`).
    Query(String, String),
    /// A query is already under way (or too many are).
    Wait,
}

/// The interest table.
#[derive(Debug, Default)]
pub struct Interest {
    /// Verified caps: shared-cache key -> wanted nodes.
    known: HashMap<String, NotifySet>,
    /// Owner (bare JID) -> entity (full JID) -> wanted nodes.
    watchers: HashMap<Jid, HashMap<Jid, NotifySet>>,
    /// Entity -> owners tracking it, to forget a session everywhere at once.
    watching: HashMap<Jid, HashSet<Jid>>,
    /// Query id -> the query.
    pending: HashMap<String, Pending>,
    /// (entity, ver) -> query id, so that two owners share one query.
    inflight: HashMap<(Jid, String), String>,
    /// Source of query ids.
    next_id: u64,
}

impl Interest {
    /// `entity` now wants `nodes` from `owner`; returns the nodes it did not want before.
    pub fn set(&mut self, owner: &Jid, entity: &Jid, nodes: NotifySet) -> Vec<String> {
        let per_owner = self.watchers.entry(owner.clone()).or_default();
        if nodes.is_empty() {
            per_owner.remove(entity);
            if per_owner.is_empty() {
                self.watchers.remove(owner);
            }
            if let Some(owners) = self.watching.get_mut(entity) {
                owners.remove(owner);
                if owners.is_empty() {
                    self.watching.remove(entity);
                }
            }
            return Vec::new();
        }
        if per_owner.len() >= MAX_WATCHERS && !per_owner.contains_key(entity) {
            tracing::warn!(%owner, "too many PEP watchers to track");
            return Vec::new();
        }
        let before = per_owner.insert(entity.clone(), nodes.clone());
        self.watching
            .entry(entity.clone())
            .or_default()
            .insert(owner.clone());
        nodes
            .iter()
            .filter(|n| before.as_ref().is_none_or(|b| !b.contains(*n)))
            .cloned()
            .collect()
    }

    /// `entity` no longer receives anything from `owner` (unavailable).
    pub fn remove(&mut self, owner: &Jid, entity: &Jid) {
        self.set(owner, entity, NotifySet::default());
    }

    /// A session ended: forget it everywhere, with its queries.
    pub fn forget(&mut self, entity: &Jid) {
        for owner in self.watching.remove(entity).unwrap_or_default() {
            if let Some(per_owner) = self.watchers.get_mut(&owner) {
                per_owner.remove(entity);
                if per_owner.is_empty() {
                    self.watchers.remove(&owner);
                }
            }
        }
        self.pending.retain(|_, p| p.entity != *entity);
        self.inflight.retain(|(e, _), _| e != entity);
    }

    /// Whether `caps` would change nothing: `entity` already wants from `owner` exactly what
    /// the verified `caps` name. Such a presence (most of them: clients repeat their caps on
    /// every status change) needs no roster lookup.
    pub fn is_current(&self, owner: &Jid, entity: &Jid, caps: &CapsRef) -> bool {
        let Some(nodes) = caps.key().and_then(|k| self.known.get(&k)) else {
            return false;
        };
        self.watchers
            .get(owner)
            .and_then(|w| w.get(entity))
            .is_some_and(|have| have == nodes)
    }

    /// Presence with caps from `entity` to `owner`.
    pub fn on_caps(&mut self, owner: &Jid, entity: &Jid, caps: &CapsRef) -> CapsAction {
        if let Some(nodes) = caps.key().and_then(|k| self.known.get(&k)).cloned() {
            return CapsAction::Known(self.set(owner, entity, nodes));
        }
        let flight = (entity.clone(), caps.ver.clone());
        if let Some(id) = self.inflight.get(&flight) {
            if let Some(p) = self.pending.get_mut(id) {
                if !p.owners.contains(owner) {
                    p.owners.push(owner.clone());
                }
            }
            return CapsAction::Wait;
        }
        if self.pending.len() >= MAX_PENDING {
            tracing::warn!("too many caps queries in flight");
            return CapsAction::Wait;
        }
        self.next_id += 1;
        let id = format!("pep-caps-{}", self.next_id);
        self.pending.insert(
            id.clone(),
            Pending {
                entity: entity.clone(),
                key: caps.key(),
                ver: caps.ver.clone(),
                owners: vec![owner.clone()],
            },
        );
        self.inflight.insert(flight, id.clone());
        CapsAction::Query(id, format!("{}#{}", caps.node, caps.ver))
    }

    /// The answer (`result` or `error`) to query `id` from `from`: the owners waiting, the
    /// entity and what it wants. `None` if it answers no query of ours.
    pub fn answer(&mut self, id: &str, from: &Jid, iq: &Element) -> Option<(Vec<Jid>, NotifySet)> {
        if self.pending.get(id)?.entity != *from {
            return None;
        }
        let p = self.pending.remove(id)?;
        self.inflight.remove(&(p.entity.clone(), p.ver.clone()));
        let query = iq
            .get_child("query", ns::DISCO_INFO)
            .filter(|_| iq.attribute("type") == Some("result"));
        let nodes: NotifySet = Arc::new(query.map(notify_set).unwrap_or_default());
        if let (Some(key), Some(q)) = (&p.key, query) {
            if verifies(q, &p.ver) {
                if self.known.len() >= MAX_KNOWN {
                    self.known.clear();
                }
                self.known.insert(key.clone(), nodes.clone());
            } else {
                tracing::debug!(entity = %p.entity, "caps answer does not match its ver; not cached");
            }
        }
        Some((p.owners, nodes))
    }

    /// The entities of `owner` that want `node`.
    pub fn recipients(&self, owner: &Jid, node: &str) -> Vec<Jid> {
        self.watchers
            .get(owner)
            .map(|m| {
                m.iter()
                    .filter(|(_, n)| n.contains(node))
                    .map(|(j, _)| j.clone())
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jid(s: &str) -> Jid {
        Jid::parse(s).unwrap()
    }

    /// XEP-0115 §5.3, the complex example (Psi 0.11 with extended info).
    const COMPLEX: &str = "<query xmlns='http://jabber.org/protocol/disco#info' node='http://psi-im.org#q07IKJEyjvHSyhy//CH0CxmKi8w='>\
        <identity xml:lang='en' category='client' name='Psi 0.11' type='pc'/>\
        <identity xml:lang='el' category='client' name='Ψ 0.11' type='pc'/>\
        <feature var='http://jabber.org/protocol/caps'/>\
        <feature var='http://jabber.org/protocol/disco#info'/>\
        <feature var='http://jabber.org/protocol/disco#items'/>\
        <feature var='http://jabber.org/protocol/muc'/>\
        <x xmlns='jabber:x:data' type='result'>\
          <field var='FORM_TYPE' type='hidden'><value>urn:xmpp:dataforms:softwareinfo</value></field>\
          <field var='ip_version'><value>ipv4</value><value>ipv6</value></field>\
          <field var='os'><value>Mac</value></field>\
          <field var='os_version'><value>10.5.1</value></field>\
          <field var='software'><value>Psi</value></field>\
          <field var='software_version'><value>0.11</value></field>\
        </x></query>";

    #[test]
    fn complex_example_verifies() {
        let q: Element = COMPLEX.parse().unwrap();
        assert!(verifies(&q, "q07IKJEyjvHSyhy//CH0CxmKi8w="));
        assert!(!verifies(&q, "QgayPKawpkPSDYmwT/WM94uAlu0="));
    }

    #[test]
    fn duplicates_do_not_verify() {
        let q: Element = "<query xmlns='http://jabber.org/protocol/disco#info'>\
            <feature var='a'/><feature var='a'/></query>"
            .parse()
            .unwrap();
        let s = crate::caps::verification_string(&[], &["a", "a"]);
        let ver = base64::engine::general_purpose::STANDARD.encode(Sha1::digest(s.as_bytes()));
        assert!(!verifies(&q, &ver));
    }

    #[test]
    fn notify_features_become_nodes() {
        let q: Element = "<query xmlns='http://jabber.org/protocol/disco#info'>\
            <feature var='urn:xmpp:avatar:metadata+notify'/><feature var='urn:xmpp:avatar:metadata'/>\
            <feature var='+notify'/></query>"
            .parse()
            .unwrap();
        assert_eq!(
            notify_set(&q).into_iter().collect::<Vec<_>>(),
            vec!["urn:xmpp:avatar:metadata".to_owned()]
        );
    }

    #[test]
    fn one_query_per_entity_and_ver_then_cached() {
        let mut t = Interest::default();
        let (alice, carol, bob) = (jid("alice@x"), jid("carol@x"), jid("bob@x/r"));
        let caps = CapsRef {
            node: "n".into(),
            ver: "v".into(),
            hash: Some("sha-1".into()),
        };
        let CapsAction::Query(id, node) = t.on_caps(&alice, &bob, &caps) else {
            panic!("expected a query")
        };
        assert_eq!(node, "n#v");
        assert_eq!(t.on_caps(&carol, &bob, &caps), CapsAction::Wait);
        let answer: Element = "<iq xmlns='jabber:client' type='result'><query xmlns='http://jabber.org/protocol/disco#info'>\
            <feature var='tune+notify'/></query></iq>"
            .parse()
            .unwrap();
        assert!(
            t.answer(&id, &jid("mallory@x/r"), &answer).is_none(),
            "wrong sender"
        );
        let (owners, nodes) = t.answer(&id, &bob, &answer).unwrap();
        assert_eq!(owners, vec![alice.clone(), carol.clone()]);
        assert!(nodes.contains("tune"));
        // The hash did not verify: not cached, the next presence asks again.
        assert!(matches!(
            t.on_caps(&alice, &bob, &caps),
            CapsAction::Query(..)
        ));
        assert_eq!(t.set(&alice, &bob, nodes.clone()), vec!["tune".to_owned()]);
        assert!(t.set(&alice, &bob, nodes).is_empty(), "nothing new");
        assert_eq!(t.recipients(&alice, "tune"), vec![bob.clone()]);
        t.forget(&bob);
        assert!(t.recipients(&alice, "tune").is_empty());
    }

    #[test]
    fn caps_are_current_only_once_verified_and_registered() {
        let mut t = Interest::default();
        let (alice, carol, bob) = (jid("alice@x"), jid("carol@x"), jid("bob@x/r"));
        let s = crate::caps::verification_string(&[], &["tune+notify"]);
        let ver = base64::engine::general_purpose::STANDARD.encode(Sha1::digest(s.as_bytes()));
        let caps = CapsRef {
            node: "n".into(),
            ver,
            hash: Some("sha-1".into()),
        };
        assert!(!t.is_current(&alice, &bob, &caps), "never seen");
        let CapsAction::Query(id, _) = t.on_caps(&alice, &bob, &caps) else {
            panic!("expected a query")
        };
        assert!(!t.is_current(&alice, &bob, &caps), "query in flight");
        let answer: Element = "<iq xmlns='jabber:client' type='result'><query xmlns='http://jabber.org/protocol/disco#info'>\
            <feature var='tune+notify'/></query></iq>"
            .parse()
            .unwrap();
        let (_, nodes) = t.answer(&id, &bob, &answer).unwrap();
        assert!(
            !t.is_current(&alice, &bob, &caps),
            "verified, not registered"
        );
        t.set(&alice, &bob, nodes);
        assert!(t.is_current(&alice, &bob, &caps));
        assert!(!t.is_current(&carol, &bob, &caps), "another owner");
        let other = CapsRef {
            ver: "other".into(),
            ..caps.clone()
        };
        assert!(!t.is_current(&alice, &bob, &other), "changed caps");
        t.remove(&alice, &bob);
        assert!(!t.is_current(&alice, &bob, &caps), "removed");
    }
}
