//! Rosters in storage: one map entry per contact ([`super::item::STORE`]) and a version
//! counter per user (key-value store [`VERSION_STORE`], XEP-0237 / RFC 6121 §2.6).
//!
//! Every read-modify-write of one user's roster runs under that user's lock, so two sessions
//! (or a session and an inbound subscription) cannot lose each other's change or reuse a
//! version. The locks are `tokio` mutexes striped by a hash of the bare JID: they are held
//! across the storage awaits on purpose (that is what makes the update atomic) but never
//! across routing, and never two at once, so they cannot deadlock.

use std::hash::BuildHasher;

use starling_core::Server;
use starling_proto::jid::Jid;
use starling_storage::StorageError;
use tokio::sync::{Mutex, MutexGuard};

use super::item::{RosterItem, STORE};

/// Key-value store holding each user's roster version.
pub const VERSION_STORE: &str = "roster-version";
/// Lock stripes; a power of two is not required.
const STRIPES: usize = 64;

/// Limits on what one user may store (DESIGN principle 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RosterLimits {
    /// Most items on one roster (a roster set or outbound request beyond it is refused).
    pub max_items: usize,
    /// Most pending inbound requests from contacts not on the roster (more are dropped).
    pub max_pending: usize,
    /// Longest item name, in bytes.
    pub max_name_bytes: usize,
    /// Longest group name, in bytes.
    pub max_group_bytes: usize,
    /// Most groups on one item.
    pub max_groups: usize,
}

impl Default for RosterLimits {
    fn default() -> Self {
        RosterLimits {
            max_items: 1000,
            max_pending: 1000,
            max_name_bytes: 1023,
            max_group_bytes: 1023,
            max_groups: 64,
        }
    }
}

/// Access to every user's roster, shared by the roster and presence modules.
pub struct RosterStore {
    limits: RosterLimits,
    stripes: Box<[Mutex<()>]>,
    hasher: std::collections::hash_map::RandomState,
}

fn split(user: &Jid) -> (&str, &str) {
    (user.domain(), user.node().unwrap_or_default())
}

impl RosterStore {
    /// A store with these limits.
    pub fn new(limits: RosterLimits) -> RosterStore {
        RosterStore {
            limits,
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> &RosterLimits {
        &self.limits
    }

    /// Serialises changes to `user`'s roster until the guard drops. Never hold two.
    pub async fn lock(&self, user: &Jid) -> MutexGuard<'_, ()> {
        let stripe = (self.hasher.hash_one(user) as usize) % STRIPES;
        self.stripes[stripe].lock().await
    }

    /// Every entry of `user`'s roster, listed or not, sorted by JID.
    pub async fn all(&self, server: &Server, user: &Jid) -> Result<Vec<RosterItem>, StorageError> {
        let (domain, node) = split(user);
        let rows = server.storage().map_all(domain, node, STORE).await?;
        Ok(rows
            .into_iter()
            .filter_map(|(key, value)| {
                let item = RosterItem::decode(&value);
                if item.is_none() {
                    tracing::warn!(%user, contact = key, "unreadable roster entry skipped");
                }
                item
            })
            .collect())
    }

    /// `user`'s entry for `contact`.
    pub async fn get(
        &self,
        server: &Server,
        user: &Jid,
        contact: &Jid,
    ) -> Result<Option<RosterItem>, StorageError> {
        let (domain, node) = split(user);
        let value = server
            .storage()
            .map_get(domain, node, STORE, contact.as_str())
            .await?;
        Ok(value.and_then(|v| RosterItem::decode(&v)))
    }

    /// Stores `item` (or deletes it when [`RosterItem::is_empty`]). Call under [`Self::lock`].
    pub async fn put(
        &self,
        server: &Server,
        user: &Jid,
        item: &RosterItem,
    ) -> Result<(), StorageError> {
        let (domain, node) = split(user);
        if item.is_empty() {
            server
                .storage()
                .map_delete(domain, node, STORE, item.jid.as_str())
                .await
        } else {
            server
                .storage()
                .map_set(domain, node, STORE, item.jid.as_str(), &item.encode())
                .await
        }
    }

    /// Deletes `user`'s entry for `contact`. Call under [`Self::lock`].
    pub async fn delete(
        &self,
        server: &Server,
        user: &Jid,
        contact: &Jid,
    ) -> Result<(), StorageError> {
        let (domain, node) = split(user);
        server
            .storage()
            .map_delete(domain, node, STORE, contact.as_str())
            .await
    }

    /// The current roster version of `user` (0 for a roster never changed).
    pub async fn version(&self, server: &Server, user: &Jid) -> Result<u64, StorageError> {
        let (domain, node) = split(user);
        let v = server.storage().kv_get(domain, node, VERSION_STORE).await?;
        Ok(v.and_then(|b| std::str::from_utf8(&b).ok()?.parse().ok())
            .unwrap_or(0))
    }

    /// Moves `user`'s roster to a new version and returns it. Call under [`Self::lock`].
    pub async fn bump_version(&self, server: &Server, user: &Jid) -> Result<u64, StorageError> {
        let next = self.version(server, user).await? + 1;
        let (domain, node) = split(user);
        server
            .storage()
            .kv_set(domain, node, VERSION_STORE, next.to_string().as_bytes())
            .await?;
        Ok(next)
    }

    /// Whether `user`'s roster can take one more listed item ([`RosterLimits::max_items`]).
    pub async fn room_for_item(&self, server: &Server, user: &Jid) -> Result<bool, StorageError> {
        self.room(server, user, self.limits.max_items, true).await
    }

    /// Whether one more pending request from a contact not on the roster can be kept
    /// ([`RosterLimits::max_pending`]).
    pub async fn room_for_request(
        &self,
        server: &Server,
        user: &Jid,
    ) -> Result<bool, StorageError> {
        self.room(server, user, self.limits.max_pending, false)
            .await
    }

    async fn room(
        &self,
        server: &Server,
        user: &Jid,
        max: usize,
        listed: bool,
    ) -> Result<bool, StorageError> {
        let (domain, node) = split(user);
        // The entry count bounds both kinds: only a large map needs a closer look.
        let total = server.storage().map_count(domain, node, STORE).await?;
        if total < max as u64 {
            return Ok(true);
        }
        let all = self.all(server, user).await?;
        Ok(all.iter().filter(|i| i.listed == listed).count() < max)
    }
}
