//! Archive quotas (DESIGN principle 3): one archive never holds more than its cap for long;
//! the oldest messages make room. One [`Quota`] per kind of archive owner: users (`[mam]
//! max_messages_per_user`, store [`crate::mam::STORE`]) and rooms (`[muc]
//! max_messages_per_room`, store [`crate::muc::archive::STORE`]); an archive is named by its
//! owner's bare JID (domain and node) and the quota's store.
//!
//! Counting every archive on every append would cost a `COUNT` per message, so the number of
//! messages per archive is cached: read from storage on the archive's first append, then
//! counted up. When the cached count goes over the cap, the archive is counted again (another
//! node of a cluster, the retention sweep, an account deletion or a room's destruction may
//! have changed it) and, if it really is over, the oldest messages are deleted by id down to
//! 99% of the cap (at least one below it), so that an archive at the cap pays for one deletion
//! per 1% of the cap, not one per message. The deletion is logged (`archive quota reached`,
//! with `owner = "user"` or `"room"`). Oldest-first deletion keeps the archive without holes
//! (XEP-0313 §3.2, as the retention sweep does); a client paging from an id that was deleted
//! gets `item-not-found` and starts again from the oldest.
//!
//! Bounded: at most [`MAX_CACHED_COUNTS`] archives are cached per quota (the cache starts over
//! when full), and one append deletes at most [`MAX_PRUNE_ROUNDS`] x [`MAX_ARCHIVE_IDS`]
//! messages (a cap lowered far below what archives hold is reached over the following
//! appends).

use std::collections::HashMap;

use parking_lot::Mutex;
use starling_core::Server;
use starling_proto::jid::Jid;
use starling_storage::{ArchiveQuery, StorageError, MAX_ARCHIVE_IDS};

/// Archives whose size is kept in memory (per quota).
const MAX_CACHED_COUNTS: usize = 10_000;
/// Deletion rounds (one query and one delete each) after one append.
const MAX_PRUNE_ROUNDS: usize = 10;

/// The quota of one kind of archive and the cached archive sizes.
pub(crate) struct Quota {
    /// Most messages per archive; 0 = no cap.
    max: u64,
    /// The storage archive store the archives live in.
    store: &'static str,
    /// Who owns one archive ("user", "room"), for the log line.
    owner: &'static str,
    /// Messages in each archive (by owner's bare JID), as far as this node knows.
    counts: Mutex<HashMap<Jid, u64>>,
}

impl Quota {
    /// A quota of `max` messages (0 = none) per archive of `store`, each owned by a bare JID
    /// that is an `owner` ("user", "room").
    pub(crate) fn new(max: u64, store: &'static str, owner: &'static str) -> Quota {
        Quota {
            max,
            store,
            owner,
            counts: Mutex::new(HashMap::new()),
        }
    }

    /// The size pruning brings an archive back to: 99% of the cap, at least one below it.
    fn target(&self) -> u64 {
        self.max.saturating_sub((self.max / 100).max(1))
    }

    /// Called after one message was appended to the archive of `archive` (the owner's bare
    /// JID).
    pub(crate) async fn appended(&self, server: &Server, archive: &Jid) {
        if self.max == 0 {
            return;
        }
        let owner = self.owner;
        let cached = self.counts.lock().get(archive).copied();
        let count = match cached {
            Some(n) => n + 1,
            None => match self.count(server, archive).await {
                Ok(n) => n,
                Err(e) => {
                    tracing::error!(error = %e, owner, %archive, "counting the archive for its quota failed");
                    return;
                }
            },
        };
        let count = if count > self.max {
            match self.prune(server, archive).await {
                Ok(n) => n,
                Err(e) => {
                    tracing::error!(error = %e, owner, %archive, "deleting the oldest archived messages failed");
                    // Try again at the next append.
                    self.counts.lock().remove(archive);
                    return;
                }
            }
        } else {
            count
        };
        let mut counts = self.counts.lock();
        if counts.len() >= MAX_CACHED_COUNTS && !counts.contains_key(archive) {
            counts.clear();
        }
        counts.insert(archive.clone(), count);
    }

    /// Counts the archive again and, if it is over the cap, deletes the oldest messages
    /// down to [`Quota::target`]. Returns what the archive holds afterwards.
    async fn prune(&self, server: &Server, archive: &Jid) -> Result<u64, StorageError> {
        let mut n = self.count(server, archive).await?;
        if n <= self.max {
            return Ok(n);
        }
        let storage = server.storage();
        let node = archive.node().unwrap_or_default();
        let target = self.target();
        let mut deleted = 0;
        for _ in 0..MAX_PRUNE_ROUNDS {
            if n <= target {
                break;
            }
            let oldest = storage
                .archive_query(
                    archive.domain(),
                    node,
                    self.store,
                    &ArchiveQuery {
                        limit: (n - target).min(MAX_ARCHIVE_IDS as u64) as usize,
                        ..ArchiveQuery::default()
                    },
                )
                .await?;
            let ids: Vec<String> = oldest.items.into_iter().map(|i| i.id).collect();
            if ids.is_empty() {
                break;
            }
            let d = storage
                .archive_delete(archive.domain(), node, self.store, Some(&ids), None)
                .await?;
            if d == 0 {
                break;
            }
            deleted += d;
            n = n.saturating_sub(d);
        }
        tracing::info!(
            owner = self.owner,
            %archive,
            max = self.max,
            deleted,
            kept = n,
            "archive quota reached: oldest messages deleted"
        );
        Ok(n)
    }

    async fn count(&self, server: &Server, archive: &Jid) -> Result<u64, StorageError> {
        server
            .storage()
            .archive_count(
                archive.domain(),
                archive.node().unwrap_or_default(),
                self.store,
            )
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pruning_leaves_room_below_the_cap() {
        let quota = |max| Quota::new(max, "mam", "user");
        assert_eq!(quota(100_000).target(), 99_000);
        assert_eq!(quota(20).target(), 19);
        assert_eq!(quota(1).target(), 0);
    }
}
