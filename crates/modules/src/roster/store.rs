//! Rosters in storage: one map entry per contact ([`super::item::STORE`]) and a version
//! counter per user (key-value store [`VERSION_STORE`], XEP-0237 / RFC 6121 §2.6).
//!
//! Every read-modify-write of one user's roster runs under that user's lock, so two sessions
//! (or a session and an inbound subscription) cannot lose each other's change or reuse a
//! version. The locks are `tokio` mutexes striped by a hash of the bare JID: they are held
//! across the storage awaits on purpose (that is what makes the update atomic) but never
//! across routing, and never two at once, so they cannot deadlock.
//!
//! Presence broadcasts read the sender's roster on every status change. When storage is
//! private to this node ([`starling_storage::Storage::shared`] is false: SQLite), the rosters
//! of users who changed status while online are kept in memory ([`RosterStore::for_presence`]).
//! Every write here drops the user's copy, and a read that raced a write is not kept, so a
//! copy is never older than the last change made by this process. A user's copy goes when
//! their last session ends. Other writers are not seen: `starling user del` on a running
//! server leaves an online user's copy until that user logs out. With shared storage
//! (PostgreSQL, where other nodes write) nothing is kept.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Arc;

use starling_core::Server;
use starling_proto::jid::Jid;
use starling_storage::StorageError;
use tokio::sync::{Mutex, MutexGuard};

use super::item::{RosterItem, STORE};

/// Key-value store holding each user's roster version.
pub const VERSION_STORE: &str = "roster-version";
/// Lock stripes; a power of two is not required.
const STRIPES: usize = 64;
/// Most rosters kept in memory for presence (DESIGN principle 3); past it, storage answers.
const MAX_CACHED: usize = 100_000;

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
    cache: parking_lot::Mutex<Cache>,
}

/// Rosters kept for presence broadcasts (see the module docs).
#[derive(Default)]
struct Cache {
    rosters: HashMap<Jid, Arc<[RosterItem]>>,
    /// Counts the writes; a read that saw another count may predate one and is not kept.
    changes: u64,
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
            cache: parking_lot::Mutex::new(Cache::default()),
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

    /// `user`'s roster for a presence broadcast: the copy in memory if there is one, else
    /// storage's. With `keep`, storage's answer is kept when storage is private to this
    /// node and `user` has a session here (the status changes of online users are the hot
    /// path; a login or logout does not fill the cache).
    pub async fn for_presence(
        &self,
        server: &Server,
        user: &Jid,
        keep: bool,
    ) -> Result<Arc<[RosterItem]>, StorageError> {
        let seen = {
            let cache = self.cache.lock();
            if let Some(items) = cache.rosters.get(user) {
                return Ok(items.clone());
            }
            cache.changes
        };
        let items: Arc<[RosterItem]> = self.all(server, user).await?.into();
        if keep
            && !server.storage().shared()
            && server.router().with_resources(user, |r| !r.is_empty())
        {
            let mut cache = self.cache.lock();
            if cache.changes == seen && cache.rosters.len() < MAX_CACHED {
                cache.rosters.insert(user.clone(), items.clone());
            }
        }
        Ok(items)
    }

    /// `user`'s entry for `contact` for presence handling: from the copy in memory when there
    /// is one (see [`Self::for_presence`]), else from storage.
    pub async fn get_for_presence(
        &self,
        server: &Server,
        user: &Jid,
        contact: &Jid,
    ) -> Result<Option<RosterItem>, StorageError> {
        let cached = self.cache.lock().rosters.get(user).cloned();
        match cached {
            Some(items) => Ok(items.iter().find(|i| i.jid == *contact).cloned()),
            None => self.get(server, user, contact).await,
        }
    }

    /// Drops the copy of `user`'s roster kept for presence (their last session ended).
    pub fn forget(&self, user: &Jid) {
        self.cache.lock().rosters.remove(user);
    }

    /// How many rosters are kept for presence (for tests and metrics).
    pub fn cached(&self) -> usize {
        self.cache.lock().rosters.len()
    }

    /// A write to `user`'s roster happened (or may have): their copy is stale.
    fn changed(&self, user: &Jid) {
        let mut cache = self.cache.lock();
        cache.rosters.remove(user);
        cache.changes += 1;
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
        let written = if item.is_empty() {
            server
                .storage()
                .map_delete(domain, node, STORE, item.jid.as_str())
                .await
        } else {
            server
                .storage()
                .map_set(domain, node, STORE, item.jid.as_str(), &item.encode())
                .await
        };
        self.changed(user);
        written
    }

    /// Deletes `user`'s entry for `contact`. Call under [`Self::lock`].
    pub async fn delete(
        &self,
        server: &Server,
        user: &Jid,
        contact: &Jid,
    ) -> Result<(), StorageError> {
        let (domain, node) = split(user);
        let written = server
            .storage()
            .map_delete(domain, node, STORE, contact.as_str())
            .await;
        self.changed(user);
        written
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
