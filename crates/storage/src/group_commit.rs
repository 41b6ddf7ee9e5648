//! Group commit for [`Storage::archive_append`](crate::Storage::archive_append) on SQLite:
//! appends that arrive together are written in one transaction, so they share one WAL fsync.
//!
//! Why: SQLite runs with `synchronous = FULL` (see `sql.rs`), so every commit waits for an
//! fsync of the WAL, and a chat message between two local users with MAM on is two appends
//! (the sender's and the receiver's archive). One transaction per append made the disk's
//! flush latency the price of every message, and concurrent appends on the pool's other
//! connections queued on SQLite's write lock, whose busy handler sleeps in steps of up to
//! 100 ms. Here there is one writer at a time, and whatever queued while it was fsyncing is
//! the next transaction: batches form by themselves under load, and a lone append is written
//! at once (no timer, no added latency).
//!
//! How: a queue of pending appends behind a mutex (never held across an await). The caller
//! that finds no writer running spawns one (a tokio task, so a caller whose future is dropped
//! cannot strand the others); the writer takes up to [`MAX_BATCH`] appends, writes them in one
//! `BEGIN IMMEDIATE` transaction, commits, hands each caller its own result through a
//! oneshot channel, and repeats until the queue is empty. A caller's future therefore
//! resolves only after the transaction holding its item committed: an append that returned
//! `Ok` is as durable as before. Each item is inserted with `ON CONFLICT (...) DO NOTHING`;
//! an item that inserted no row gets [`StorageError::AlreadyExists`] (its caller draws a new
//! id) while the rest of its batch commits. Any other failure (begin, an insert, the commit)
//! rolls the transaction back and fails every caller of that batch with the same
//! [`StorageError::Backend`]. The queue holds one item per waiting caller, so it is bounded by
//! the callers (sessions and room tasks), each of which waits for its own append.
//!
//! Not used on PostgreSQL: there every append stays its own transaction on the pool (10
//! connections). PostgreSQL already groups commits: a backend whose commit record was flushed
//! by another backend's WAL flush does not flush again, so concurrent appends on several
//! connections share fsyncs without help, and funnelling them through one writer connection
//! would serialise their network round trips instead.
//!
//! Items are copied into the queue (the writer outlives the caller's borrow); that is one
//! payload copy per append, small beside the write itself.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use sqlx::AnyPool;
use tokio::sync::oneshot;

use crate::sql::{backend_error, Dialect};
use crate::{ArchiveItem, StorageError};

/// Most appends written in one transaction. A batch this size is well under a second of
/// inserts, so one commit never makes the callers behind it wait long.
pub(crate) const MAX_BATCH: usize = 256;

/// One append waiting for its transaction.
struct Pending {
    domain: String,
    user: String,
    store: String,
    item: ArchiveItem,
    /// Where the writer sends this append's own result once its transaction ended.
    done: oneshot::Sender<Result<(), StorageError>>,
}

/// What the callers and the writer share.
#[derive(Default)]
struct Queue {
    /// Appends not yet taken by the writer, oldest first.
    pending: VecDeque<Pending>,
    /// A writer task is running; it will take `pending` before it ends.
    writing: bool,
    /// Appends in the transaction being written (for tests: what the writer holds).
    in_flight: usize,
}

/// State shared between the [`GroupCommit`] handle and its writer task.
struct Shared {
    pool: AnyPool,
    queue: Mutex<Queue>,
    /// Transactions the writer committed: with `appends`, shows how much batching happened.
    commits: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A panic while the lock is held cannot leave the queue inconsistent (every update is
        // a single push, drain or flag change), so a poisoned lock is still usable.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The group-commit appender of one SQLite pool.
pub(crate) struct GroupCommit {
    shared: Arc<Shared>,
}

impl GroupCommit {
    pub(crate) fn new(pool: AnyPool) -> Self {
        GroupCommit {
            shared: Arc::new(Shared {
                pool,
                queue: Mutex::new(Queue::default()),
                commits: AtomicU64::new(0),
            }),
        }
    }

    /// Appends `item` (already checked against the limits) and returns once the transaction
    /// holding it committed, or with the error that ended it.
    pub(crate) async fn append(
        &self,
        domain: &str,
        user: &str,
        store: &str,
        item: &ArchiveItem,
    ) -> Result<(), StorageError> {
        let (done, result) = oneshot::channel();
        let pending = Pending {
            domain: domain.to_owned(),
            user: user.to_owned(),
            store: store.to_owned(),
            item: item.clone(),
            done,
        };
        {
            let mut queue = self.shared.lock();
            queue.pending.push_back(pending);
            if !queue.writing {
                queue.writing = true;
                tokio::spawn(write_batches(self.shared.clone()));
            }
        }
        result.await.unwrap_or_else(|_| {
            Err(StorageError::Backend(
                "the archive writer stopped before committing this append".into(),
            ))
        })
    }

    /// Transactions committed so far.
    #[cfg(test)]
    pub(crate) fn commits(&self) -> u64 {
        self.shared.commits.load(Ordering::Relaxed)
    }

    /// `(queued, in the transaction being written)`.
    #[cfg(test)]
    pub(crate) fn backlog(&self) -> (usize, usize) {
        let queue = self.shared.lock();
        (queue.pending.len(), queue.in_flight)
    }
}

/// Marks the writer as gone if its task ends other than by finding the queue empty (a panic,
/// or the runtime shutting down): the appends still queued are failed (their callers get
/// `Backend`) and the next append starts a new writer.
struct WriterGuard<'a> {
    shared: &'a Shared,
    finished: bool,
}

impl Drop for WriterGuard<'_> {
    fn drop(&mut self) {
        if !self.finished {
            let mut queue = self.shared.lock();
            queue.writing = false;
            queue.in_flight = 0;
            queue.pending.clear();
        }
    }
}

/// The writer task: writes batches until the queue is empty.
async fn write_batches(shared: Arc<Shared>) {
    let mut guard = WriterGuard {
        shared: &shared,
        finished: false,
    };
    loop {
        let batch: Vec<Pending> = {
            let mut queue = shared.lock();
            let n = queue.pending.len().min(MAX_BATCH);
            queue.in_flight = n;
            if n == 0 {
                queue.writing = false;
                guard.finished = true;
                return;
            }
            queue.pending.drain(..n).collect()
        };
        match write(&shared.pool, &batch).await {
            Ok(results) => {
                shared.commits.fetch_add(1, Ordering::Relaxed);
                for (pending, result) in batch.into_iter().zip(results) {
                    // A caller that stopped waiting no longer needs its answer.
                    let _ = pending.done.send(result);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, appends = batch.len(), "archive batch failed");
                for pending in batch {
                    let _ = pending.done.send(Err(e.clone()));
                }
            }
        }
    }
}

/// Writes `batch` in one transaction: the per-item results (`Ok` or `AlreadyExists`) once it
/// committed, or the error that rolled it back.
async fn write(
    pool: &AnyPool,
    batch: &[Pending],
) -> Result<Vec<Result<(), StorageError>>, StorageError> {
    let mut tx = Dialect::Sqlite.begin_write(pool).await?;
    let mut results = Vec::with_capacity(batch.len());
    for p in batch {
        let done = sqlx::query(
            "INSERT INTO archive (domain, username, store, item_id, when_ms, with_jid, payload)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (domain, username, store, item_id) DO NOTHING",
        )
        .bind(p.domain.as_str())
        .bind(p.user.as_str())
        .bind(p.store.as_str())
        .bind(p.item.id.as_str())
        .bind(p.item.when_ms)
        .bind(p.item.with.as_str())
        .bind(p.item.payload.as_slice())
        .execute(&mut *tx)
        .await
        .map_err(backend_error)?;
        results.push(if done.rows_affected() == 0 {
            Err(StorageError::AlreadyExists)
        } else {
            Ok(())
        });
    }
    // Dropping `tx` on an error above rolls it back; nothing of the batch is kept then.
    tx.commit().await.map_err(backend_error)?;
    Ok(results)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::task::JoinHandle;

    use super::*;
    use crate::sql::SqlStorage;
    use crate::{ArchiveQuery, Storage};

    const D: &str = "batch.example";
    const U: &str = "alice";

    fn item(id: &str, when_ms: i64, with: &str) -> ArchiveItem {
        ArchiveItem {
            id: id.to_owned(),
            when_ms,
            with: with.to_owned(),
            payload: format!("<message id='{id}'/>").into_bytes(),
        }
    }

    /// An in-memory database: its pool has exactly one connection, which a test can hold to
    /// keep the writer waiting while appends queue behind it.
    async fn memory() -> Arc<SqlStorage> {
        Arc::new(SqlStorage::open("sqlite::memory:").await.unwrap())
    }

    fn spawn_append(s: &Arc<SqlStorage>, it: ArchiveItem) -> JoinHandle<Result<(), StorageError>> {
        let s = s.clone();
        tokio::spawn(async move { s.archive_append(D, U, "mam", &it).await })
    }

    /// Waits (bounded) until the appender's backlog is `(queued, in flight)`.
    async fn wait_for_backlog(s: &SqlStorage, want: (usize, usize)) {
        let g = s.appender().expect("SQLite has a group-commit appender");
        for _ in 0..5000 {
            if g.backlog() == want {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        panic!("backlog {:?}, expected {want:?}", g.backlog());
    }

    fn commits(s: &SqlStorage) -> u64 {
        s.appender().unwrap().commits()
    }

    async fn stored(s: &SqlStorage) -> Vec<ArchiveItem> {
        let q = ArchiveQuery {
            limit: 1000,
            ..ArchiveQuery::default()
        };
        s.archive_query(D, U, "mam", &q).await.unwrap().items
    }

    /// Starts a writer on a first append and keeps it waiting for the connection, which the
    /// returned guard holds: whatever is appended next queues for the following transaction.
    async fn writer_held(
        s: &Arc<SqlStorage>,
    ) -> (
        sqlx::pool::PoolConnection<sqlx::Any>,
        JoinHandle<Result<(), StorageError>>,
    ) {
        let conn = s.pool().acquire().await.unwrap();
        let first = spawn_append(s, item("first", 0, "x@y"));
        wait_for_backlog(s, (0, 1)).await;
        (conn, first)
    }

    #[tokio::test]
    async fn appends_queued_behind_a_commit_share_the_next_transactions() {
        let s = memory().await;
        let (conn, first) = writer_held(&s).await;
        let n = MAX_BATCH + 44;
        let tasks: Vec<_> = (0..n)
            .map(|i| spawn_append(&s, item(&format!("m{i}"), i as i64 + 1, "x@y")))
            .collect();
        wait_for_backlog(&s, (n, 1)).await;
        drop(conn);
        first.await.unwrap().unwrap();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert_eq!(
            commits(&s),
            3,
            "one transaction for the first append, then {n} appends in batches of at most \
             {MAX_BATCH}"
        );
        assert_eq!(stored(&s).await.len(), n + 1, "every append landed once");
        assert_eq!(s.appender().unwrap().backlog(), (0, 0));
    }

    #[tokio::test]
    async fn a_duplicate_id_fails_alone_in_its_batch() {
        let s = memory().await;
        let old = item("old", 1, "x@y");
        s.archive_append(D, U, "mam", &old).await.unwrap();
        let (conn, first) = writer_held(&s).await;
        let batch = [
            item("a", 2, "x@y"),
            item("old", 3, "intruder@y"),
            item("twin", 4, "first@y"),
            item("b", 5, "x@y"),
            item("twin", 6, "second@y"),
        ];
        let mut tasks = Vec::new();
        for (i, it) in batch.iter().enumerate() {
            // One at a time, so the queue order (and so which twin comes first) is known.
            tasks.push(spawn_append(&s, it.clone()));
            wait_for_backlog(&s, (i + 1, 1)).await;
        }
        drop(conn);
        first.await.unwrap().unwrap();
        let mut results = Vec::new();
        for t in tasks {
            results.push(t.await.unwrap());
        }
        assert_eq!(
            results,
            [
                Ok(()),
                Err(StorageError::AlreadyExists),
                Ok(()),
                Ok(()),
                Err(StorageError::AlreadyExists),
            ]
        );
        assert_eq!(commits(&s), 3, "old, first, then the batch of five in one");
        assert_eq!(
            stored(&s).await,
            [
                item("first", 0, "x@y"),
                old,
                batch[0].clone(),
                batch[2].clone(),
                batch[3].clone()
            ],
            "the conflicting appends changed nothing; the others are stored"
        );
    }

    #[tokio::test]
    async fn a_backend_failure_fails_the_whole_batch_and_keeps_none_of_it() {
        let s = memory().await;
        sqlx::raw_sql(
            "CREATE TRIGGER poison BEFORE INSERT ON archive WHEN NEW.item_id = 'poison'
             BEGIN SELECT RAISE(ABORT, 'poisoned item'); END;",
        )
        .execute(s.pool())
        .await
        .unwrap();
        let (conn, first) = writer_held(&s).await;
        let tasks: Vec<_> = ["good1", "poison", "good2"]
            .iter()
            .map(|id| spawn_append(&s, item(id, 1, "x@y")))
            .collect();
        wait_for_backlog(&s, (3, 1)).await;
        drop(conn);
        first.await.unwrap().unwrap();
        for t in tasks {
            let r = t.await.unwrap();
            assert!(
                matches!(&r, Err(StorageError::Backend(m)) if m.contains("poisoned")),
                "every caller of the failed batch gets its error: {r:?}"
            );
        }
        assert_eq!(
            stored(&s).await,
            [item("first", 0, "x@y")],
            "good1, written before the failure, was rolled back with the batch"
        );
        // The writer is still there for the next append.
        s.archive_append(D, U, "mam", &item("after", 2, "x@y"))
            .await
            .unwrap();
        assert_eq!(commits(&s), 2);
    }

    #[tokio::test]
    async fn a_caller_that_stops_waiting_strands_nobody() {
        let s = memory().await;
        let (conn, first) = writer_held(&s).await;
        let second = spawn_append(&s, item("second", 1, "x@y"));
        wait_for_backlog(&s, (1, 1)).await;
        // The caller that started the writer goes away; the writer is a task of its own.
        first.abort();
        drop(conn);
        second.await.unwrap().unwrap();
        let ids: Vec<String> = stored(&s).await.into_iter().map(|i| i.id).collect();
        assert!(ids.contains(&"second".to_owned()), "{ids:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_appends_to_a_file_share_fsyncs() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("s.db").display());
        let s = Arc::new(SqlStorage::open(&url).await.unwrap());
        let n = 200;
        let tasks: Vec<_> = (0..n)
            .map(|i| spawn_append(&s, item(&format!("m{i}"), i, "x@y")))
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert_eq!(s.archive_count(D, U, "mam").await.unwrap(), n as u64);
        let c = commits(&s);
        assert!(c < n as u64, "{n} concurrent appends took {c} transactions");
    }
}
