//! The session table: bare JID -> the resources bound to it, with their presence and priority.
//!
//! Sharded by a hash of the bare JID so that lookups from many session tasks do not contend on
//! one lock; every lock is a short synchronous critical section, never held across `.await`
//! (DESIGN principle 2). The rules for *where* a stanza goes (RFC 6121 §8) live in
//! [`crate::server`]; this table only answers *who is online*.

use std::collections::HashMap;
use std::hash::BuildHasher;

use parking_lot::RwLock;
use starling_proto::jid::Jid;

use crate::config::ResourceConflict;
use crate::session::SessionHandle;

const SHARDS: usize = 64;

/// One bound resource.
#[derive(Debug, Clone)]
pub struct Resource {
    /// The full JID the resource is bound to.
    pub jid: Jid,
    /// How to reach the session.
    pub handle: SessionHandle,
    /// Whether the session has sent available presence (RFC 6121 §4.2) and not since gone
    /// unavailable: only available resources receive messages addressed to the bare JID.
    pub available: bool,
    /// The priority of the last available presence (RFC 6121 §4.7.2.3), -128..=127.
    pub priority: i8,
}

/// Why a bind was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindError {
    /// The resource is taken and the policy is `refuse-new`.
    Conflict,
    /// The account already has the maximum number of resources.
    TooManyResources,
}

/// One shard of the table: bare JID -> its resources.
type Shard = RwLock<HashMap<Jid, Vec<Resource>>>;

/// The sharded session table.
pub struct Router {
    shards: Box<[Shard]>,
    hasher: std::collections::hash_map::RandomState,
}

impl Default for Router {
    fn default() -> Self {
        Router::new()
    }
}

impl Router {
    /// An empty table.
    pub fn new() -> Router {
        Router {
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }

    fn shard(&self, bare: &Jid) -> &Shard {
        &self.shards[(self.hasher.hash_one(bare) as usize) % SHARDS]
    }

    /// Binds `full` to `handle`. With `KickOld`, an existing session on the same full JID is
    /// removed and returned so the caller can close it with `conflict`.
    pub fn bind(
        &self,
        full: &Jid,
        handle: SessionHandle,
        policy: ResourceConflict,
        max_resources: usize,
    ) -> Result<Option<SessionHandle>, BindError> {
        let bare = full.bare();
        let mut shard = self.shard(&bare).write();
        let list = shard.entry(bare).or_default();
        let existing = list.iter().position(|r| r.jid == *full);
        let kicked = match (existing, policy) {
            (Some(_), ResourceConflict::RefuseNew) => return Err(BindError::Conflict),
            (Some(i), ResourceConflict::KickOld) => Some(list.swap_remove(i).handle),
            (None, _) => None,
        };
        if list.len() >= max_resources {
            return Err(BindError::TooManyResources);
        }
        list.push(Resource {
            jid: full.clone(),
            handle,
            available: false,
            priority: 0,
        });
        Ok(kicked)
    }

    /// Removes the binding of `full` if it still belongs to session `session_id`.
    pub fn unbind(&self, full: &Jid, session_id: u64) -> bool {
        let bare = full.bare();
        let mut shard = self.shard(&bare).write();
        let Some(list) = shard.get_mut(&bare) else {
            return false;
        };
        let before = list.len();
        list.retain(|r| !(r.jid == *full && r.handle.id() == session_id));
        let removed = list.len() != before;
        if list.is_empty() {
            shard.remove(&bare);
        }
        removed
    }

    /// Records the presence state of a bound resource; returns whether it was available
    /// before (false for an unknown resource).
    pub fn set_presence(&self, full: &Jid, available: bool, priority: i8) -> bool {
        let bare = full.bare();
        let mut shard = self.shard(&bare).write();
        match shard
            .get_mut(&bare)
            .and_then(|l| l.iter_mut().find(|r| r.jid == *full))
        {
            Some(r) => {
                let before = r.available;
                r.available = available;
                r.priority = priority;
                before
            }
            None => false,
        }
    }

    /// The session bound to a full JID.
    pub fn session(&self, full: &Jid) -> Option<SessionHandle> {
        let bare = full.bare();
        let shard = self.shard(&bare).read();
        shard
            .get(&bare)?
            .iter()
            .find(|r| r.jid == *full)
            .map(|r| r.handle.clone())
    }

    /// Every resource bound to a bare JID.
    pub fn resources(&self, bare: &Jid) -> Vec<Resource> {
        let shard = self.shard(bare).read();
        shard.get(bare).cloned().unwrap_or_default()
    }

    /// Calls `f` on each resource of `bare` under the read lock (no clone of the list).
    pub fn with_resources<R>(&self, bare: &Jid, f: impl FnOnce(&[Resource]) -> R) -> R {
        let shard = self.shard(bare).read();
        f(shard.get(bare).map(Vec::as_slice).unwrap_or(&[]))
    }

    /// Number of bound sessions (for metrics and tests).
    pub fn session_count(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.read().values().map(Vec::len).sum::<usize>())
            .sum()
    }

    /// Handles of every bound session (for shutdown).
    pub fn all_sessions(&self) -> Vec<SessionHandle> {
        self.shards
            .iter()
            .flat_map(|s| {
                s.read()
                    .values()
                    .flat_map(|l| l.iter().map(|r| r.handle.clone()))
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jid(s: &str) -> Jid {
        Jid::parse(s).unwrap()
    }

    #[test]
    fn bind_conflict_policies() {
        let r = Router::new();
        let (h1, _i1) = SessionHandle::new(4);
        let (h2, _i2) = SessionHandle::new(4);
        let full = jid("alice@example.org/phone");
        assert!(r
            .bind(&full, h1.clone(), ResourceConflict::RefuseNew, 5)
            .unwrap()
            .is_none());
        assert_eq!(
            r.bind(&full, h2.clone(), ResourceConflict::RefuseNew, 5)
                .unwrap_err(),
            BindError::Conflict
        );
        let kicked = r
            .bind(&full, h2.clone(), ResourceConflict::KickOld, 5)
            .unwrap();
        assert_eq!(kicked.unwrap().id(), h1.id());
        assert_eq!(r.session(&full).unwrap().id(), h2.id());
        // The kicked session unbinding late must not remove the new one.
        assert!(!r.unbind(&full, h1.id()));
        assert!(r.unbind(&full, h2.id()));
        assert_eq!(r.session_count(), 0);
    }

    #[test]
    fn resource_cap() {
        let r = Router::new();
        for i in 0..3 {
            let (h, _) = SessionHandle::new(1);
            r.bind(&jid(&format!("a@b/{i}")), h, ResourceConflict::KickOld, 3)
                .unwrap();
        }
        let (h, _) = SessionHandle::new(1);
        assert_eq!(
            r.bind(&jid("a@b/x"), h, ResourceConflict::KickOld, 3)
                .unwrap_err(),
            BindError::TooManyResources
        );
    }

    #[test]
    fn presence_is_recorded() {
        let r = Router::new();
        let (h, _) = SessionHandle::new(1);
        let full = jid("a@b/r");
        r.bind(&full, h, ResourceConflict::KickOld, 3).unwrap();
        r.set_presence(&full, true, -3);
        let res = r.resources(&jid("a@b"));
        assert!(res[0].available);
        assert_eq!(res[0].priority, -3);
    }
}
