//! vcard-temp (XEP-0054): users store one vCard each and anyone may read it.
//!
//! - Get, own (no `to`) or another user's (to the bare JID), answered by the server on the
//!   account's behalf (XEP-0054 §3.3, RFC 6120 §10.5.3.1): the stored `<vCard/>`, or
//!   `item-not-found` when there is none (§3.1 lets the server choose that error).
//! - Set, own only: another user's bare JID is `forbidden` (§3.2). The whole vCard replaces
//!   the stored one (no partial updates, §3.2); an empty `<vCard/>` deletes it.
//! - Size: at most `limits.vcard_max_bytes` serialised (default [`MAX_VCARD_BYTES`]), else
//!   `not-acceptable` (DESIGN principle 3).
//!
//! Stored in the key-value store `vcard` as the serialised element. Not here: vCard-based
//! avatars (XEP-0153 presence hashes) and vCard4 over PEP (XEP-0292).

use async_trait::async_trait;
use minidom::Element;
use starling_core::module::{IqRequest, IqResponse};
use starling_core::{Module, Server};
use starling_proto::error::{StanzaError, StanzaErrorCondition as Cond};
use starling_proto::stanza::IqType;
use starling_proto::writer;

/// The vcard-temp namespace.
pub const NS_VCARD: &str = "vcard-temp";
/// The key-value store holding each user's vCard.
const STORE: &str = "vcard";
/// Default largest vCard accepted, serialised: room for a modest embedded photo.
pub const MAX_VCARD_BYTES: usize = 64 * 1024;

/// The vCard module.
pub struct VCard {
    /// Largest vCard accepted, serialised, in bytes.
    max_bytes: usize,
}

impl Default for VCard {
    fn default() -> Self {
        VCard::new(MAX_VCARD_BYTES)
    }
}

impl VCard {
    /// A vCard module accepting vCards of at most `max_bytes` serialised.
    pub fn new(max_bytes: usize) -> VCard {
        VCard { max_bytes }
    }
}

fn internal(e: starling_storage::StorageError) -> StanzaError {
    tracing::error!(error = %e, "vcard storage error");
    StanzaError::new(Cond::InternalServerError)
}

#[async_trait]
impl Module for VCard {
    fn name(&self) -> &'static str {
        "vcard"
    }

    fn disco_features(&self) -> Vec<&'static str> {
        vec![NS_VCARD]
    }

    fn iq_payloads(&self) -> Vec<(&'static str, &'static str)> {
        vec![(NS_VCARD, "vCard")]
    }

    async fn handle_iq(&self, server: &Server, iq: IqRequest<'_>) -> IqResponse {
        let target = iq.to.bare();
        let Some(node) = target.node() else {
            // The server itself has no vCard.
            return Err(StanzaError::new(Cond::ItemNotFound));
        };
        let storage = server.storage();
        match iq.kind {
            IqType::Get => {
                let stored = storage
                    .kv_get(target.domain(), node, STORE)
                    .await
                    .map_err(internal)?;
                let vcard = stored
                    .and_then(|b| String::from_utf8(b).ok())
                    .and_then(|s| s.parse::<Element>().ok())
                    .filter(|el| el.is("vCard", NS_VCARD));
                match vcard {
                    Some(v) => Ok(Some(v)),
                    None => Err(StanzaError::new(Cond::ItemNotFound)),
                }
            }
            _ => {
                if target != iq.from.bare() {
                    return Err(StanzaError::new(Cond::Forbidden));
                }
                if iq.payload.children().next().is_none() && iq.payload.text().trim().is_empty() {
                    storage
                        .kv_delete(target.domain(), node, STORE)
                        .await
                        .map_err(internal)?;
                    return Ok(None);
                }
                let mut bytes = Vec::new();
                writer::write_element(iq.payload, &mut bytes);
                if bytes.len() > self.max_bytes {
                    return Err(StanzaError::with_text(
                        Cond::NotAcceptable,
                        format!("vCard larger than {} bytes", self.max_bytes),
                    ));
                }
                storage
                    .kv_set(target.domain(), node, STORE, &bytes)
                    .await
                    .map_err(internal)?;
                Ok(None)
            }
        }
    }
}
