//! Unique and stable stanza ids (XEP-0359, version 0.7): the `<stanza-id/>` element a user's
//! archive puts on the messages it stores, and the rules that keep those ids trustworthy.
//!
//! What it owns:
//! - The helpers the archive uses: [`strip_by`] and [`stamp`]. The archive ([`crate::mam`])
//!   is the *generating entity* for ids `by` a local user's bare JID; before it stamps its own
//!   id on an incoming message it deletes any `<stanza-id/>` claiming the same `by`, whether or
//!   not it archives the message (XEP-0359 §3 business rules: a generating entity that
//!   encounters an element with its own `by` MUST delete it; a stanza carries at most one id
//!   per `by`). A contact can therefore never make a client believe a message sits in its
//!   archive under an id of the contact's choosing.
//! - [`UnpredictableIds`], the generator behind the archive's and the rooms' ids.
//! - The [`StanzaIds`] module: the disco feature `urn:xmpp:sid:0` (§4), and at [`Hook::Sent`]
//!   the removal of every `<stanza-id/>` whose `by` is the *sender's* bare JID. That covers ids
//!   a client made up for its own archive and the id the archive added for the sender's own
//!   resources: XEP-0313 §3.5 says the archive id of an outgoing message goes into the
//!   carbons `<sent/>` copy ([`crate::carbons`]) but MUST NOT reach the contact. This module
//!   is therefore last in the module list: the archive and carbons see the id, the contact
//!   does not.
//!
//! What it does not: generate ids (the archive does, one per stored message) or touch ids
//! `by` other entities (MUC rooms, other servers): routing entities do not strip those.

use async_trait::async_trait;
use minidom::Element;
use starling_core::xml::BuilderExt;
use starling_core::{Hook, HookContext, Module, Outcome, Server};
use starling_proto::Attr;

/// The XEP-0359 namespace (also its disco feature).
pub const NS_SID: &str = "urn:xmpp:sid:0";

/// Removes every direct `<stanza-id/>` child whose `by` is `by`; returns how many.
pub fn strip_by(msg: &mut Element, by: &str) -> usize {
    remove_children(msg, |c| {
        c.is("stanza-id", NS_SID) && c.attribute("by") == Some(by)
    })
}

/// Removes the direct child elements matching `pred`, keeping every other node (text
/// included) in place; returns how many were removed. Touches nothing when none matches.
pub fn remove_children(msg: &mut Element, pred: impl Fn(&Element) -> bool) -> usize {
    let hits = msg.children().filter(|c| pred(c)).count();
    if hits == 0 {
        return 0;
    }
    for node in msg.take_nodes() {
        match &node {
            minidom::Node::Element(e) if pred(e) => {}
            _ => msg.append_node(node),
        }
    }
    hits
}

/// Adds `<stanza-id id='…' by='…'/>` after deleting any other one with the same `by`.
pub fn stamp(msg: &mut Element, by: &str, id: &str) {
    strip_by(msg, by);
    msg.append_child(
        Element::builder("stanza-id", NS_SID)
            .with_attr("id", id)
            .with_attr("by", by)
            .build(),
    );
}

/// The id `by` names on a message, if it carries one.
pub fn find<'a>(msg: &'a Element, by: &str) -> Option<&'a str> {
    msg.children()
        .find(|c| c.is("stanza-id", NS_SID) && c.attribute("by") == Some(by))
        .and_then(|c| c.attribute("id"))
}

/// The stanza-id module (see the module docs).
pub struct StanzaIds;

#[async_trait]
impl Module for StanzaIds {
    fn name(&self) -> &'static str {
        "stanza-id"
    }

    fn disco_features(&self) -> Vec<&'static str> {
        vec![NS_SID]
    }

    fn account_disco_features(&self) -> Vec<&'static str> {
        vec![NS_SID]
    }

    fn hooks(&self) -> Vec<Hook> {
        vec![Hook::Sent]
    }

    async fn edit_stanza(
        &self,
        _server: &Server,
        stanza: &mut Element,
        _hook: Hook,
        _ctx: HookContext<'_>,
    ) -> Outcome {
        // Nearly every message carries no stanza id: nothing to strip, no address to parse.
        if stanza.name() != "message" || !stanza.children().any(|c| c.is("stanza-id", NS_SID)) {
            return Outcome::Pass;
        }
        let Some(sender) = stanza.jid_attribute("from") else {
            return Outcome::Pass;
        };
        let bare = sender.bare();
        strip_by(stanza, bare.as_str());
        Outcome::Pass
    }
}

/// Unpredictable, process-unique ids: a keyed SipHash of a counter and the clock, 128 bits as
/// 32 hex digits. The keys are drawn when the generator is made, so another server instance
/// draws other ids. Used for the archive ids of users ([`crate::mam`]) and rooms
/// ([`crate::muc`]).
pub(crate) struct UnpredictableIds {
    keys: std::collections::hash_map::RandomState,
    counter: std::sync::atomic::AtomicU64,
}

impl UnpredictableIds {
    pub(crate) fn new() -> UnpredictableIds {
        UnpredictableIds {
            keys: std::collections::hash_map::RandomState::new(),
            counter: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// A fresh id.
    pub(crate) fn next(&self) -> String {
        use std::hash::BuildHasher;
        let n = self
            .counter
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let a = self.keys.hash_one((n, t, 0u8));
        let b = self.keys.hash_one((n, t, 1u8));
        format!("{a:016x}{b:016x}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(s: &str) -> Element {
        s.parse().unwrap()
    }

    #[test]
    fn stamp_replaces_only_the_same_by() {
        let mut m = msg("<message xmlns='jabber:client'><body>x</body>\
             <stanza-id xmlns='urn:xmpp:sid:0' by='a@x' id='forged'/>\
             <stanza-id xmlns='urn:xmpp:sid:0' by='a@x' id='forged2'/>\
             <stanza-id xmlns='urn:xmpp:sid:0' by='room@muc.x' id='r1'/></message>");
        stamp(&mut m, "a@x", "real");
        let ids: Vec<_> = m
            .children()
            .filter(|c| c.is("stanza-id", NS_SID))
            .map(|c| (c.attribute("by").unwrap(), c.attribute("id").unwrap()))
            .collect();
        assert_eq!(ids, [("room@muc.x", "r1"), ("a@x", "real")]);
        assert_eq!(find(&m, "a@x"), Some("real"));
        assert_eq!(find(&m, "b@x"), None);
        // The body is untouched.
        assert_eq!(m.get_child("body", "jabber:client").unwrap().text(), "x");
    }

    #[test]
    fn strip_counts() {
        let mut m = msg("<message xmlns='jabber:client'>\
             <stanza-id xmlns='urn:xmpp:sid:0' by='a@x' id='1'/>\
             <origin-id xmlns='urn:xmpp:sid:0' id='o'/></message>");
        assert_eq!(strip_by(&mut m, "a@x"), 1);
        assert_eq!(strip_by(&mut m, "a@x"), 0);
        // origin-id (the client's own id) is never touched.
        assert!(m.get_child("origin-id", NS_SID).is_some());
    }
}
