//! PEP nodes and items in storage, per account (DESIGN "Storage": maps per user).
//!
//! - map [`NODES`]: node name -> the node's configuration and item sequence counter;
//! - map `pep:<node>`: item id -> the item (its payload, publish sequence number and time).
//!
//! Items are ordered by the sequence number the node hands out at each publish, so
//! "the last N items" and "the oldest item to drop" need no second index. Every change to
//! one account's nodes runs under that account's lock ([`PepStore::lock`]): tokio mutexes
//! striped by a hash of the bare JID, held across the storage awaits (that is what makes
//! publish + trim atomic) but never across routing.

use starling_proto::Attr;
use std::hash::BuildHasher;

use minidom::Element;
use starling_core::xml::BuilderExt;
use starling_core::Server;
use starling_proto::jid::Jid;
use starling_proto::writer;
use starling_storage::StorageError;
use tokio::sync::{Mutex, MutexGuard};

use super::config::NodeConfig;

/// The map of an account's nodes.
pub const NODES: &str = "pep";
/// Namespace of the stored item form (not on the wire).
const NS_STORED: &str = "urn:starling:pep:0";
/// Lock stripes.
const STRIPES: usize = 64;

/// One published item.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// The item id (given by the publisher or generated).
    pub id: String,
    /// Publish order within the node.
    pub seq: u64,
    /// When it was published, in ms since the Unix epoch (for `<delay/>` on the last item).
    pub when_ms: i64,
    /// The payload: the item's single child element.
    pub payload: Element,
}

impl Item {
    fn encode(&self) -> Vec<u8> {
        let el = Element::builder("item", NS_STORED)
            .with_attr("id", self.id.as_str())
            .with_attr("seq", self.seq.to_string())
            .with_attr("when", self.when_ms.to_string())
            .append(self.payload.clone())
            .build();
        let mut out = Vec::new();
        writer::write_element(&el, &mut out);
        out
    }

    fn decode(bytes: &[u8]) -> Option<Item> {
        let el: Element = std::str::from_utf8(bytes).ok()?.parse().ok()?;
        if !el.is("item", NS_STORED) {
            return None;
        }
        Some(Item {
            id: el.attribute("id")?.to_owned(),
            seq: el.attribute("seq")?.parse().ok()?,
            when_ms: el.attribute("when")?.parse().ok()?,
            payload: el.children().next()?.clone(),
        })
    }
}

fn split(owner: &Jid) -> (&str, &str) {
    (owner.domain(), owner.node().unwrap_or_default())
}

fn items_store(node: &str) -> String {
    format!("pep:{node}")
}

fn decode_node(name: &str, bytes: &[u8]) -> Option<(NodeConfig, u64)> {
    let parsed = std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.parse::<Element>().ok())
        .and_then(|el| NodeConfig::decode(&el));
    if parsed.is_none() {
        tracing::error!(node = name, "unreadable stored PEP node");
    }
    parsed
}

/// Access to every account's PEP data.
pub struct PepStore {
    stripes: Box<[Mutex<()>]>,
    hasher: std::collections::hash_map::RandomState,
}

impl Default for PepStore {
    fn default() -> Self {
        PepStore {
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }
}

impl PepStore {
    /// Serialises changes to `owner`'s nodes until the guard drops. Never hold two.
    pub async fn lock(&self, owner: &Jid) -> MutexGuard<'_, ()> {
        let stripe = (self.hasher.hash_one(owner) as usize) % STRIPES;
        self.stripes[stripe].lock().await
    }

    /// A node's configuration and sequence counter.
    pub async fn node(
        &self,
        server: &Server,
        owner: &Jid,
        node: &str,
    ) -> Result<Option<(NodeConfig, u64)>, StorageError> {
        let (d, u) = split(owner);
        let v = server.storage().map_get(d, u, NODES, node).await?;
        Ok(v.and_then(|b| decode_node(node, &b)))
    }

    /// Every node of `owner`, sorted by name.
    pub async fn nodes(
        &self,
        server: &Server,
        owner: &Jid,
    ) -> Result<Vec<(String, NodeConfig)>, StorageError> {
        let (d, u) = split(owner);
        let rows = server.storage().map_all(d, u, NODES).await?;
        Ok(rows
            .into_iter()
            .filter_map(|(name, b)| decode_node(&name, &b).map(|(c, _)| (name, c)))
            .collect())
    }

    /// How many nodes `owner` has.
    pub async fn node_count(&self, server: &Server, owner: &Jid) -> Result<u64, StorageError> {
        let (d, u) = split(owner);
        server.storage().map_count(d, u, NODES).await
    }

    /// Creates or replaces a node record. Call under [`Self::lock`].
    pub async fn put_node(
        &self,
        server: &Server,
        owner: &Jid,
        node: &str,
        config: &NodeConfig,
        seq: u64,
    ) -> Result<(), StorageError> {
        let (d, u) = split(owner);
        let mut out = Vec::new();
        writer::write_element(&config.encode(seq), &mut out);
        server.storage().map_set(d, u, NODES, node, &out).await
    }

    /// Every item of a node, oldest first.
    pub async fn items(
        &self,
        server: &Server,
        owner: &Jid,
        node: &str,
    ) -> Result<Vec<Item>, StorageError> {
        let (d, u) = split(owner);
        let rows = server.storage().map_all(d, u, &items_store(node)).await?;
        let mut items: Vec<Item> = rows
            .into_iter()
            .filter_map(|(id, b)| {
                let item = Item::decode(&b);
                if item.is_none() {
                    tracing::error!(node, id, "unreadable stored PEP item");
                }
                item
            })
            .collect();
        items.sort_by_key(|i| i.seq);
        Ok(items)
    }

    /// The newest item of a node.
    pub async fn last_item(
        &self,
        server: &Server,
        owner: &Jid,
        node: &str,
    ) -> Result<Option<Item>, StorageError> {
        Ok(self.items(server, owner, node).await?.pop())
    }

    /// One item by id.
    pub async fn item(
        &self,
        server: &Server,
        owner: &Jid,
        node: &str,
        id: &str,
    ) -> Result<Option<Item>, StorageError> {
        let (d, u) = split(owner);
        let v = server
            .storage()
            .map_get(d, u, &items_store(node), id)
            .await?;
        Ok(v.and_then(|b| Item::decode(&b)))
    }

    /// Stores an item (replacing one with the same id) and drops the oldest items beyond
    /// `keep`. Call under [`Self::lock`].
    pub async fn put_item(
        &self,
        server: &Server,
        owner: &Jid,
        node: &str,
        item: &Item,
        keep: usize,
    ) -> Result<(), StorageError> {
        let (d, u) = split(owner);
        let store = items_store(node);
        server
            .storage()
            .map_set(d, u, &store, &item.id, &item.encode())
            .await?;
        self.trim(server, owner, node, keep).await
    }

    /// Drops the oldest items beyond `keep`. Call under [`Self::lock`].
    pub async fn trim(
        &self,
        server: &Server,
        owner: &Jid,
        node: &str,
        keep: usize,
    ) -> Result<(), StorageError> {
        let (d, u) = split(owner);
        let store = items_store(node);
        if server.storage().map_count(d, u, &store).await? <= keep as u64 {
            return Ok(());
        }
        let items = self.items(server, owner, node).await?;
        let excess = items.len().saturating_sub(keep);
        for old in &items[..excess] {
            server.storage().map_delete(d, u, &store, &old.id).await?;
        }
        Ok(())
    }

    /// Removes one item; whether it existed. Call under [`Self::lock`].
    pub async fn delete_item(
        &self,
        server: &Server,
        owner: &Jid,
        node: &str,
        id: &str,
    ) -> Result<bool, StorageError> {
        let (d, u) = split(owner);
        let store = items_store(node);
        if server.storage().map_get(d, u, &store, id).await?.is_none() {
            return Ok(false);
        }
        server.storage().map_delete(d, u, &store, id).await?;
        Ok(true)
    }

    /// Removes every item of a node (purge), keeping the node. Call under [`Self::lock`].
    pub async fn purge(
        &self,
        server: &Server,
        owner: &Jid,
        node: &str,
    ) -> Result<(), StorageError> {
        let (d, u) = split(owner);
        let store = items_store(node);
        for (id, _) in server.storage().map_all(d, u, &store).await? {
            server.storage().map_delete(d, u, &store, &id).await?;
        }
        Ok(())
    }

    /// Removes a node and its items. Call under [`Self::lock`].
    pub async fn delete_node(
        &self,
        server: &Server,
        owner: &Jid,
        node: &str,
    ) -> Result<(), StorageError> {
        self.purge(server, owner, node).await?;
        let (d, u) = split(owner);
        server.storage().map_delete(d, u, NODES, node).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_item_round_trips() {
        let payload: Element = "<data xmlns='urn:xmpp:avatar:data'>aGk=</data>"
            .parse()
            .unwrap();
        let item = Item {
            id: "a&b".into(),
            seq: 7,
            when_ms: 1_700_000_000_000,
            payload,
        };
        assert_eq!(Item::decode(&item.encode()), Some(item));
        assert_eq!(
            Item::decode(b"<item xmlns='x' id='1' seq='1' when='1'><a/></item>"),
            None
        );
    }
}
