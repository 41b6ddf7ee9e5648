//! Group commit for SQLite writes that arrive together: [`Storage::archive_append`] and
//! [`Storage::kv_set`](crate::Storage::kv_set) are written in one transaction, so they share
//! one WAL fsync.
//!
//! Why: SQLite runs with `synchronous = FULL` (see `sql.rs`), so every commit waits for an
//! fsync of the WAL. A chat message between two local users with MAM on is two appends (the
//! sender's and the receiver's archive), and every logout records the user's last activity
//! (a key-value write). One transaction per write made the disk's flush latency the price of
//! every message and every logout, and concurrent writes on the pool's other connections
//! queued on SQLite's write lock, whose busy handler sleeps in steps of up to 100 ms. Here
//! there is one writer at a time, and whatever queued while it was fsyncing is the next
//! transaction: batches form by themselves under load, and a lone write is made at once (no
//! timer, no added latency). Measured with `bench login --scram-cache` (2,000 accounts, 32 at
//! a time, one run each): with the `last` module off (no logout write) the server spent 0.75
//! ms of CPU per login against 0.98 ms, at 1,634 against 1,103 logins/s. Putting `kv_set`
//! here took three alternating runs from 1,312 to 1,424 logins/s (means) and from 0.90 to
//! 0.84 ms of server CPU per login.
//!
//! How: a queue of pending writes behind a mutex (never held across an await). The caller
//! that finds no writer running spawns one (a tokio task, so a caller whose future is dropped
//! cannot strand the others); the writer takes up to [`MAX_BATCH`] writes, makes them in one
//! `BEGIN IMMEDIATE` transaction in the order they were queued, commits, hands each caller
//! its own result through a oneshot channel, and repeats until the queue is empty. Each run
//! of appends in a batch is one multi-row `INSERT`, and the writer keeps one connection while
//! it has work: every statement is a round trip to the connection's SQLite worker thread, and
//! a connection that did not make the last commit drops its page cache. With `starling bench
//! archive` (20 pairs, MAM on) one statement per append on whichever connection was free
//! delivered about 2,500 messages/s, with 23 futex calls and 11 page reads per message; the
//! multi-row statement on one connection delivered 3,800-4,400, with 2 and 5. A caller's
//! future therefore resolves only after the transaction holding its write committed: a write
//! that returned `Ok` is as durable as before, and a caller that writes twice in sequence
//! finds the second after the first. Each append is inserted with `ON CONFLICT (...) DO
//! NOTHING`; an append that inserted no row gets [`StorageError::AlreadyExists`] (its caller
//! draws a new id) while the rest of its batch commits. A key-value write is an upsert, as
//! outside a batch. Any other failure (begin, a statement, the commit) rolls the transaction
//! back and fails every caller of that batch with the same [`StorageError::Backend`]. The
//! queue holds one item per waiting caller, so it is bounded by the callers (sessions and
//! room tasks), each of which waits for its own write.
//!
//! Not used on PostgreSQL: there every write stays its own transaction on the pool (10
//! connections). PostgreSQL already groups commits: a backend whose commit record was flushed
//! by another backend's WAL flush does not flush again, so concurrent writes on several
//! connections share fsyncs without help, and funnelling them through one writer connection
//! would serialise their network round trips instead.
//!
//! Values are copied into the queue (the writer outlives the caller's borrow); that is one
//! payload copy per write, small beside the write itself.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection, AnyPool, AssertSqlSafe, Connection, Row};
use tokio::sync::oneshot;

use crate::sql::{backend_error, KV_UPSERT};
use crate::{ArchiveItem, StorageError};

/// Most writes made in one transaction. A batch this size is well under a second of
/// inserts, so one commit never makes the callers behind it wait long.
pub(crate) const MAX_BATCH: usize = 256;
const _: () = assert!(
    MAX_BATCH * 7 <= 32_766,
    "a batch of appends must fit one statement"
);

/// One write waiting for its transaction.
struct Pending {
    domain: String,
    user: String,
    store: String,
    write: Write,
    /// Where the writer sends this write's own result once its transaction ended.
    done: oneshot::Sender<Result<(), StorageError>>,
}

/// What a pending write does.
enum Write {
    /// [`Storage::archive_append`](crate::Storage::archive_append).
    Append(ArchiveItem),
    /// [`Storage::kv_set`](crate::Storage::kv_set), with the time of the call.
    KvSet { value: Vec<u8>, updated_ms: i64 },
}

/// What the callers and the writer share.
#[derive(Default)]
struct Queue {
    /// Writes not yet taken by the writer, oldest first.
    pending: VecDeque<Pending>,
    /// A writer task is running; it will take `pending` before it ends.
    writing: bool,
    /// Writes in the transaction being made (for tests: what the writer holds).
    in_flight: usize,
}

/// State shared between the [`GroupCommit`] handle and its writer task.
struct Shared {
    pool: AnyPool,
    queue: Mutex<Queue>,
    /// Transactions the writer committed: beside the writes, shows how much batching happened.
    commits: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A panic while the lock is held cannot leave the queue inconsistent (every update is
        // a single push, drain or flag change), so a poisoned lock is still usable.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The group-commit writer of one SQLite pool.
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
        self.submit(domain, user, store, Write::Append(item.clone()))
            .await
    }

    /// Creates or replaces the document in `store` (already checked against the limits), as
    /// of `updated_ms`; returns once the transaction holding it committed.
    pub(crate) async fn kv_set(
        &self,
        domain: &str,
        user: &str,
        store: &str,
        value: &[u8],
        updated_ms: i64,
    ) -> Result<(), StorageError> {
        let write = Write::KvSet {
            value: value.to_vec(),
            updated_ms,
        };
        self.submit(domain, user, store, write).await
    }

    async fn submit(
        &self,
        domain: &str,
        user: &str,
        store: &str,
        write: Write,
    ) -> Result<(), StorageError> {
        let (done, result) = oneshot::channel();
        let pending = Pending {
            domain: domain.to_owned(),
            user: user.to_owned(),
            store: store.to_owned(),
            write,
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
                "the SQLite writer stopped before committing this write".into(),
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
/// or the runtime shutting down): the writes still queued are failed (their callers get
/// `Backend`) and the next write starts a new writer.
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
    // One connection for as long as the queue has work: SQLite drops a connection's page
    // cache when it finds the database changed by another connection, so a writer that took
    // whichever pooled connection was free read the pages of every batch in again.
    let mut conn: Option<PoolConnection<Any>> = None;
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
        let result = write(&shared.pool, &mut conn, &batch).await;
        if shared.pool.num_idle() == 0 {
            // Someone may be waiting for a connection (a pool of one, or every other one
            // busy): give this one back between batches rather than starve them.
            conn = None;
        }
        match result {
            Ok(results) => {
                shared.commits.fetch_add(1, Ordering::Relaxed);
                for (pending, result) in batch.into_iter().zip(results) {
                    // A caller that stopped waiting no longer needs its answer.
                    let _ = pending.done.send(result);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, writes = batch.len(), "SQLite write batch failed");
                for pending in batch {
                    let _ = pending.done.send(Err(e.clone()));
                }
            }
        }
    }
}

/// Makes `batch` in one transaction, in order: the per-item results (`Ok`, or
/// `AlreadyExists` for an append whose id was taken) once it committed, or the error that
/// rolled it back. A batch of one is a single statement, atomic by itself: it is sent without
/// `BEGIN` and `COMMIT`, which would triple the round trips to SQLite's worker thread for a
/// lone write. `conn` is the writer's connection, taken from the pool if it has none; it is
/// given back to the pool after an error (a connection in an unknown state is not kept).
async fn write(
    pool: &AnyPool,
    conn: &mut Option<PoolConnection<Any>>,
    batch: &[Pending],
) -> Result<Vec<Result<(), StorageError>>, StorageError> {
    let c = match conn {
        Some(c) => c,
        None => conn.insert(pool.acquire().await.map_err(backend_error)?),
    };
    let result = write_on(c, batch).await;
    if result.is_err() {
        *conn = None;
    }
    result
}

async fn write_on(
    conn: &mut AnyConnection,
    batch: &[Pending],
) -> Result<Vec<Result<(), StorageError>>, StorageError> {
    let statements = statements(batch);
    if let [only] = statements.as_slice() {
        return run(conn, only).await;
    }
    let mut tx = conn
        .begin_with("BEGIN IMMEDIATE")
        .await
        .map_err(backend_error)?;
    let mut results = Vec::with_capacity(batch.len());
    for writes in statements {
        results.extend(run(&mut tx, writes).await?);
    }
    // Dropping `tx` on an error above rolls it back; nothing of the batch is kept then.
    tx.commit().await.map_err(backend_error)?;
    Ok(results)
}

/// `batch` cut into the writes of one statement each, in order: every run of appends is one
/// multi-row `INSERT` (each statement is a round trip to SQLite's worker thread, which under
/// load cost more than the inserts themselves), every key-value write its own upsert.
fn statements(batch: &[Pending]) -> Vec<&[Pending]> {
    let mut out = Vec::new();
    let mut rest = batch;
    while !rest.is_empty() {
        let n = match rest[0].write {
            Write::Append(_) => rest
                .iter()
                .position(|p| !matches!(p.write, Write::Append(_)))
                .unwrap_or(rest.len()),
            Write::KvSet { .. } => 1,
        };
        let (head, tail) = rest.split_at(n);
        out.push(head);
        rest = tail;
    }
    out
}

/// Makes the writes of one statement ([`statements`]): their own results, or the error that
/// must end the batch.
async fn run(
    conn: &mut AnyConnection,
    writes: &[Pending],
) -> Result<Vec<Result<(), StorageError>>, StorageError> {
    match writes {
        [Pending {
            domain,
            user,
            store,
            write: Write::KvSet { value, updated_ms },
            ..
        }] => {
            sqlx::query(KV_UPSERT)
                .bind(domain.as_str())
                .bind(user.as_str())
                .bind(store.as_str())
                .bind(value.as_slice())
                .bind(*updated_ms)
                .execute(&mut *conn)
                .await
                .map_err(backend_error)?;
            Ok(vec![Ok(())])
        }
        appends => insert(conn, appends).await,
    }
}

/// Inserts `appends` (all [`Write::Append`]) with one statement: at most [`MAX_BATCH`] rows
/// of 7 parameters, well under the bundled SQLite's limit of 32,766 per statement. An append whose id its
/// archive already holds (stored before, or earlier in `appends`) inserts nothing and gets
/// [`StorageError::AlreadyExists`]; `RETURNING` names the rows that were inserted.
async fn insert(
    conn: &mut AnyConnection,
    appends: &[Pending],
) -> Result<Vec<Result<(), StorageError>>, StorageError> {
    let mut sql = String::with_capacity(160 + appends.len() * 40);
    sql.push_str(
        "INSERT INTO archive (domain, username, store, item_id, when_ms, with_jid, payload) VALUES ",
    );
    // Positional `?` parameters: SQLite looks `$N` names up one by one at each bind.
    for i in 0..appends.len() {
        sql.push_str(if i == 0 {
            "(?,?,?,?,?,?,?)"
        } else {
            ",(?,?,?,?,?,?,?)"
        });
    }
    sql.push_str(
        " ON CONFLICT (domain, username, store, item_id) DO NOTHING \
         RETURNING domain, username, store, item_id",
    );
    let mut query = sqlx::query(AssertSqlSafe(sql));
    for p in appends {
        let Write::Append(item) = &p.write else {
            unreachable!("statements() puts only appends together");
        };
        query = query
            .bind(p.domain.as_str())
            .bind(p.user.as_str())
            .bind(p.store.as_str())
            .bind(item.id.as_str())
            .bind(item.when_ms)
            .bind(item.with.as_str())
            .bind(item.payload.as_slice());
    }
    // A lone append is the common statement when the server is not busy: prepared once. The
    // multi-row ones vary in length and are prepared each time.
    let rows = query
        .persistent(appends.len() == 1)
        .fetch_all(&mut *conn)
        .await
        .map_err(backend_error)?;
    let mut inserted: HashMap<(String, String, String, String), usize> = HashMap::new();
    for row in rows {
        let key = (
            row.try_get(0).map_err(backend_error)?,
            row.try_get(1).map_err(backend_error)?,
            row.try_get(2).map_err(backend_error)?,
            row.try_get(3).map_err(backend_error)?,
        );
        *inserted.entry(key).or_default() += 1;
    }
    Ok(appends
        .iter()
        .map(|p| {
            let Write::Append(item) = &p.write else {
                unreachable!("statements() puts only appends together");
            };
            // Borrowed lookups would need a key type of their own; the batch is small.
            let key = (
                p.domain.clone(),
                p.user.clone(),
                p.store.clone(),
                item.id.clone(),
            );
            match inserted.get_mut(&key) {
                Some(n) if *n > 0 => {
                    *n -= 1;
                    Ok(())
                }
                _ => Err(StorageError::AlreadyExists),
            }
        })
        .collect())
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

    /// Makes every append of an item with id `poison` fail in the database (a trigger).
    async fn poison(s: &SqlStorage) {
        sqlx::raw_sql(
            "CREATE TRIGGER poison BEFORE INSERT ON archive WHEN NEW.item_id = 'poison'
             BEGIN SELECT RAISE(ABORT, 'poisoned item'); END;",
        )
        .execute(s.pool())
        .await
        .unwrap();
    }

    fn spawn_kv_set(
        s: &Arc<SqlStorage>,
        user: &'static str,
        value: &'static [u8],
    ) -> JoinHandle<Result<(), StorageError>> {
        let s = s.clone();
        tokio::spawn(async move { s.kv_set(D, user, "last", value).await })
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
    async fn key_value_writes_share_the_transaction_in_queue_order() {
        let s = memory().await;
        let (conn, first) = writer_held(&s).await;
        let mut tasks = Vec::new();
        for (i, value) in ["one", "two", "three"].iter().enumerate() {
            // One at a time, so the queue order is known: the last write must win.
            tasks.push(spawn_kv_set(&s, U, value.as_bytes()));
            wait_for_backlog(&s, (i + 1, 1)).await;
        }
        tasks.push(spawn_kv_set(&s, "bob", b"bob's"));
        tasks.push(spawn_append(&s, item("between", 1, "x@y")));
        wait_for_backlog(&s, (5, 1)).await;
        drop(conn);
        first.await.unwrap().unwrap();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert_eq!(
            commits(&s),
            2,
            "the first append, then all five writes in one"
        );
        assert_eq!(
            s.kv_get(D, U, "last").await.unwrap().as_deref(),
            Some(&b"three"[..])
        );
        assert_eq!(
            s.kv_get(D, "bob", "last").await.unwrap().as_deref(),
            Some(&b"bob's"[..])
        );
        assert_eq!(stored(&s).await.len(), 2);
    }

    #[tokio::test]
    async fn a_failed_batch_keeps_no_key_value_write_of_it() {
        let s = memory().await;
        s.kv_set(D, U, "last", b"before").await.unwrap();
        poison(&s).await;
        let (conn, first) = writer_held(&s).await;
        let kv = spawn_kv_set(&s, U, b"lost");
        wait_for_backlog(&s, (1, 1)).await;
        let poison = spawn_append(&s, item("poison", 1, "x@y"));
        wait_for_backlog(&s, (2, 1)).await;
        drop(conn);
        first.await.unwrap().unwrap();
        assert!(matches!(kv.await.unwrap(), Err(StorageError::Backend(_))));
        assert!(poison.await.unwrap().is_err());
        assert_eq!(
            s.kv_get(D, U, "last").await.unwrap().as_deref(),
            Some(&b"before"[..]),
            "the caller was told it failed, and nothing of it was kept"
        );
    }

    fn pending(write: Write) -> Pending {
        Pending {
            domain: D.into(),
            user: U.into(),
            store: "mam".into(),
            write,
            done: oneshot::channel().0,
        }
    }

    #[test]
    fn runs_of_appends_are_one_statement_and_key_value_writes_one_each() {
        let a = |id: &str| pending(Write::Append(item(id, 1, "x@y")));
        let kv = || {
            pending(Write::KvSet {
                value: b"v".to_vec(),
                updated_ms: 1,
            })
        };
        let batch = [a("1"), a("2"), kv(), kv(), a("3"), a("4"), a("5"), kv()];
        let shape: Vec<Vec<&str>> = statements(&batch)
            .iter()
            .map(|writes| {
                writes
                    .iter()
                    .map(|p| match &p.write {
                        Write::Append(item) => item.id.as_str(),
                        Write::KvSet { .. } => "kv",
                    })
                    .collect()
            })
            .collect();
        assert_eq!(
            shape,
            [
                vec!["1", "2"],
                vec!["kv"],
                vec!["kv"],
                vec!["3", "4", "5"],
                vec!["kv"]
            ]
        );
        assert!(statements(&[]).is_empty());
    }

    #[tokio::test]
    async fn a_busy_writer_lets_a_reader_have_the_only_connection_between_batches() {
        // `:memory:` is a pool of one connection: a writer that kept it while writes were
        // queued would make every read wait until the writes stop.
        let s = memory().await;
        let (conn, first) = writer_held(&s).await;
        const QUEUED: usize = 300;
        let mut tasks = Vec::new();
        for i in 0..QUEUED {
            tasks.push(spawn_append(&s, item(&format!("q{i}"), 1, "x@y")));
        }
        wait_for_backlog(&s, (QUEUED, 1)).await;
        let reader = tokio::spawn({
            let s = s.clone();
            async move { s.archive_count(D, U, "mam").await.unwrap() }
        });
        // The reader queues for the connection behind the writer.
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(conn);
        let seen = reader.await.unwrap();
        first.await.unwrap().unwrap();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert_eq!(
            s.archive_count(D, U, "mam").await.unwrap(),
            QUEUED as u64 + 1
        );
        assert!(
            seen < QUEUED as u64 + 1,
            "the read waited for every queued write ({seen} stored when it ran)"
        );
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
        poison(&s).await;
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
