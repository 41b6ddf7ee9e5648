//! The per-user archive quota (`[mam] max_messages_per_user`, DESIGN principle 3): one
//! user's archive never holds more than the cap for long; the oldest messages make room.
//!
//! Counting every archive on every append would cost a `COUNT` per message, so the number of
//! messages per user is cached: read from storage on the user's first append, then counted
//! up. When the cached count goes over the cap, the archive is counted again (another node
//! of a cluster, the retention sweep or an account deletion may have changed it) and, if it
//! really is over, the oldest messages are deleted by id down to 99% of the cap (at least one
//! below it), so that a user at the cap pays for one deletion per 1% of the cap, not one per
//! message. The deletion is logged (`archive quota reached`). Oldest-first deletion keeps the
//! archive without holes (XEP-0313 §3.2, as the retention sweep does); a client paging from
//! an id that was deleted gets `item-not-found` and starts again from the oldest.
//!
//! Bounded: at most [`MAX_CACHED_COUNTS`] users are cached (the cache starts over when full),
//! and one append deletes at most [`MAX_PRUNE_ROUNDS`] x [`MAX_ARCHIVE_IDS`] messages (a cap
//! lowered far below what archives hold is reached over the following appends).

use std::collections::HashMap;

use parking_lot::Mutex;
use starling_core::Server;
use starling_proto::jid::Jid;
use starling_storage::{ArchiveQuery, StorageError, MAX_ARCHIVE_IDS};

use super::STORE;

/// Users whose archive size is kept in memory.
const MAX_CACHED_COUNTS: usize = 10_000;
/// Deletion rounds (one query and one delete each) after one append.
const MAX_PRUNE_ROUNDS: usize = 10;

/// The quota and the cached archive sizes.
pub(crate) struct Quota {
    /// Most messages per user archive; 0 = no cap.
    max: u64,
    /// Messages in each user's archive, as far as this node knows.
    counts: Mutex<HashMap<Jid, u64>>,
}

impl Quota {
    pub(crate) fn new(max: u64) -> Quota {
        Quota {
            max,
            counts: Mutex::new(HashMap::new()),
        }
    }

    /// The size pruning brings an archive back to: 99% of the cap, at least one below it.
    fn target(&self) -> u64 {
        self.max.saturating_sub((self.max / 100).max(1))
    }

    /// Called after one message was appended to `user`'s (bare JID) archive.
    pub(crate) async fn appended(&self, server: &Server, user: &Jid) {
        if self.max == 0 {
            return;
        }
        let cached = self.counts.lock().get(user).copied();
        let count = match cached {
            Some(n) => n + 1,
            None => match count(server, user).await {
                Ok(n) => n,
                Err(e) => {
                    tracing::error!(error = %e, %user, "counting the archive for its quota failed");
                    return;
                }
            },
        };
        let count = if count > self.max {
            match self.prune(server, user).await {
                Ok(n) => n,
                Err(e) => {
                    tracing::error!(error = %e, %user, "deleting the oldest archived messages failed");
                    // Try again at the next append.
                    self.counts.lock().remove(user);
                    return;
                }
            }
        } else {
            count
        };
        let mut counts = self.counts.lock();
        if counts.len() >= MAX_CACHED_COUNTS && !counts.contains_key(user) {
            counts.clear();
        }
        counts.insert(user.clone(), count);
    }

    /// Counts `user`'s archive again and, if it is over the cap, deletes the oldest messages
    /// down to [`Quota::target`]. Returns what the archive holds afterwards.
    async fn prune(&self, server: &Server, user: &Jid) -> Result<u64, StorageError> {
        let mut n = count(server, user).await?;
        if n <= self.max {
            return Ok(n);
        }
        let storage = server.storage();
        let node = user.node().unwrap_or_default();
        let target = self.target();
        let mut deleted = 0;
        for _ in 0..MAX_PRUNE_ROUNDS {
            if n <= target {
                break;
            }
            let oldest = storage
                .archive_query(
                    user.domain(),
                    node,
                    STORE,
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
                .archive_delete(user.domain(), node, STORE, Some(&ids), None)
                .await?;
            if d == 0 {
                break;
            }
            deleted += d;
            n = n.saturating_sub(d);
        }
        tracing::info!(
            %user,
            max = self.max,
            deleted,
            kept = n,
            "archive quota reached: oldest messages deleted"
        );
        Ok(n)
    }
}

async fn count(server: &Server, user: &Jid) -> Result<u64, StorageError> {
    server
        .storage()
        .archive_count(user.domain(), user.node().unwrap_or_default(), STORE)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pruning_leaves_room_below_the_cap() {
        assert_eq!(Quota::new(100_000).target(), 99_000);
        assert_eq!(Quota::new(20).target(), 19);
        assert_eq!(Quota::new(1).target(), 0);
    }
}
