//! Private XML storage (XEP-0049): each user keeps arbitrary XML fragments only they can read.
//!
//! - Get and set go to the user's own bare JID (no `to`, or `to` equal to it); anyone else's
//!   JID, or the server's, is `forbidden` (§3.3).
//! - The `<query xmlns='jabber:iq:private'/>` holds fragments whose root elements each have
//!   their own namespace; a fragment is identified by its name and namespace. A get answers
//!   each asked-for fragment with the stored one, or with the empty element asked for when
//!   nothing is stored (§3.2). A set replaces each given fragment; an empty one deletes it.
//!   A query without a child is `bad-request` (§3.3, `bad-format` in the old terms).
//! - Reserved namespaces (`jabber:*`, `http://jabber.org/*`, `vcard-temp`) are
//!   `not-acceptable` (§3.3), as is the `jabber:iq:private` namespace itself.
//! - Size: a user's fragments together take at most [`MAX_PRIVATE_BYTES`] serialised, else
//!   the set is `not-acceptable` and nothing is stored (DESIGN principle 3).
//!
//! Stored in the map `private`, keyed by `{namespace}name`, as serialised elements. Not here:
//! the PEP-based successors (XEP-0223), which the PEP module serves.

use async_trait::async_trait;
use minidom::Element;
use starling_core::module::{IqRequest, IqResponse};
use starling_core::{Module, Server};
use starling_proto::error::{StanzaError, StanzaErrorCondition as Cond};
use starling_proto::stanza::IqType;
use starling_proto::writer;

/// The private XML storage namespace.
pub const NS_PRIVATE: &str = "jabber:iq:private";
/// The map holding each user's fragments.
const STORE: &str = "private";
/// Largest total of one user's stored fragments, serialised.
pub const MAX_PRIVATE_BYTES: usize = 64 * 1024;

/// The private XML storage module.
pub struct PrivateStorage {
    /// Largest total of one user's fragments, serialised, in bytes.
    max_bytes: usize,
}

impl Default for PrivateStorage {
    fn default() -> Self {
        PrivateStorage::new(MAX_PRIVATE_BYTES)
    }
}

impl PrivateStorage {
    /// A module storing at most `max_bytes` of serialised fragments per user.
    pub fn new(max_bytes: usize) -> PrivateStorage {
        PrivateStorage { max_bytes }
    }
}

/// Namespaces a client may not store under (§3.3).
fn is_reserved(ns: &str) -> bool {
    ns.starts_with("jabber:") || ns.starts_with("http://jabber.org/") || ns == "vcard-temp"
}

/// The storage key of a fragment.
fn key(el: &Element) -> String {
    format!("{{{}}}{}", el.ns(), el.name())
}

fn is_empty(el: &Element) -> bool {
    el.children().next().is_none() && el.text().trim().is_empty()
}

fn internal(e: starling_storage::StorageError) -> StanzaError {
    tracing::error!(error = %e, "private storage error");
    StanzaError::new(Cond::InternalServerError)
}

#[async_trait]
impl Module for PrivateStorage {
    fn name(&self) -> &'static str {
        "private"
    }

    fn iq_payloads(&self) -> Vec<(&'static str, &'static str)> {
        vec![(NS_PRIVATE, "query")]
    }

    async fn handle_iq(&self, server: &Server, iq: IqRequest<'_>) -> IqResponse {
        let owner = iq.from.bare();
        if *iq.to != owner {
            return Err(StanzaError::new(Cond::Forbidden));
        }
        let Some(node) = owner.node() else {
            return Err(StanzaError::new(Cond::Forbidden));
        };
        let domain = owner.domain();
        let fragments: Vec<&Element> = iq.payload.children().collect();
        if fragments.is_empty() {
            return Err(StanzaError::with_text(
                Cond::BadRequest,
                "the query names no fragment",
            ));
        }
        if fragments.iter().any(|f| is_reserved(f.ns().as_str())) {
            return Err(StanzaError::with_text(
                Cond::NotAcceptable,
                "reserved namespace",
            ));
        }
        let storage = server.storage();
        match iq.kind {
            IqType::Get => {
                let mut answer = Element::builder("query", NS_PRIVATE).build();
                for f in fragments {
                    let stored = storage
                        .map_get(domain, node, STORE, &key(f))
                        .await
                        .map_err(internal)?
                        .and_then(|b| String::from_utf8(b).ok())
                        .and_then(|s| s.parse::<Element>().ok());
                    answer.append_child(
                        stored.unwrap_or_else(|| Element::builder(f.name(), f.ns()).build()),
                    );
                }
                Ok(Some(answer))
            }
            _ => {
                // The total after the set: what stays plus what is written.
                let mut writes: Vec<(String, Option<Vec<u8>>)> = Vec::new();
                for f in fragments {
                    let value = (!is_empty(f)).then(|| {
                        let mut bytes = Vec::new();
                        writer::write_element(f, &mut bytes);
                        bytes
                    });
                    let k = key(f);
                    writes.retain(|(old, _)| *old != k);
                    writes.push((k, value));
                }
                let kept: usize = storage
                    .map_all(domain, node, STORE)
                    .await
                    .map_err(internal)?
                    .iter()
                    .filter(|(k, _)| !writes.iter().any(|(w, _)| w == k))
                    .map(|(_, v)| v.len())
                    .sum();
                let written: usize = writes
                    .iter()
                    .filter_map(|(_, v)| v.as_ref())
                    .map(Vec::len)
                    .sum();
                if kept + written > self.max_bytes {
                    return Err(StanzaError::with_text(
                        Cond::NotAcceptable,
                        format!("private storage larger than {} bytes", self.max_bytes),
                    ));
                }
                for (k, v) in writes {
                    match v {
                        Some(v) => storage.map_set(domain, node, STORE, &k, &v).await,
                        None => storage.map_delete(domain, node, STORE, &k).await,
                    }
                    .map_err(internal)?;
                }
                Ok(None)
            }
        }
    }
}
