//! The one [`Storage`] implementation: sqlx's `Any` driver over SQLite or PostgreSQL.
//!
//! Both dialects run the same SQL text (`$N` placeholders, `ON CONFLICT ... DO UPDATE`,
//! epoch-millisecond BIGINTs, BLOB/BYTEA values); only the schema files and the way a write
//! transaction begins differ. What the `Any` driver (sqlx 0.9) cannot do, and how we cope:
//!
//! - It encodes and decodes only bool, i16/i32/i64, f32/f64, text and bytes (BLOB and BYTEA
//!   both work, NUL bytes included): the `u32` iteration count is stored as BIGINT and counts
//!   are read as i64, converted here.
//! - NULL arguments are typed (fine on both), but we never bind them: optional filters are
//!   left out of the query text instead.
//! - It re-parses the URL for every new connection and builds `SqliteConnectOptions` from it,
//!   so SQLite PRAGMAs (journal mode, synchronous, busy timeout) cannot be passed as options:
//!   they are set in `after_connect`. For the same reason each connection to `sqlite::memory:`
//!   would get its own empty database, so that URL gets a pool of exactly one connection that
//!   is never retired.
//!
//! No query holds a transaction open across anything but its own statements.
//!
//! On SQLite, [`Storage::archive_append`] and [`Storage::kv_set`] go through [`GroupCommit`]:
//! writes that arrive together share one transaction and so one WAL fsync (see
//! `group_commit.rs`, which also says why PostgreSQL keeps one transaction per write).

use std::time::Duration;

use async_trait::async_trait;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{Any, AnyPool, AssertSqlSafe, Row, Transaction};

use crate::group_commit::GroupCommit;
use crate::{
    ArchiveItem, ArchivePage, ArchiveQuery, ScramRecord, Storage, StorageError, MAX_ARCHIVE_IDS,
    MAX_ARCHIVE_PAGE, MAX_TEXT_BYTES, MAX_VALUE_BYTES,
};

/// Which SQL dialect the pool speaks; decides the migrations folder and how transactions begin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// A transaction that will write. On SQLite `BEGIN IMMEDIATE` takes the write lock up front
    /// (waiting up to the busy timeout), so a read-then-write transaction can never fail with
    /// `SQLITE_BUSY` when it upgrades its lock.
    pub(crate) async fn begin_write(
        self,
        pool: &AnyPool,
    ) -> Result<Transaction<'static, Any>, StorageError> {
        match self {
            Dialect::Sqlite => pool.begin_with("BEGIN IMMEDIATE").await,
            Dialect::Postgres => pool.begin().await,
        }
        .map_err(backend_error)
    }

    /// A transaction whose statements all see one snapshot (SQLite transactions always do).
    async fn begin_read(self, pool: &AnyPool) -> Result<Transaction<'static, Any>, StorageError> {
        match self {
            Dialect::Sqlite => pool.begin().await,
            Dialect::Postgres => {
                pool.begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                    .await
            }
        }
        .map_err(backend_error)
    }
}

/// Per-connection SQLite settings.
///
/// `synchronous = FULL`: a commit returns only after the WAL is fsynced. `NORMAL` in WAL mode
/// already survives a process crash (`kill -9`), since committed pages are in the OS cache, but
/// can lose the last commits on power loss or a kernel crash. Starling acknowledges stanzas
/// (stream management acks, offline storage, MAM) once they are written, and DESIGN.md promises
/// that nothing acknowledged is lost, so we pay one WAL fsync per commit (no fsync of the main
/// database file per commit: that happens only at checkpoints).
///
/// `wal_autocheckpoint = 10000` (pages of 4 KiB: a WAL of about 40 MiB) instead of SQLite's
/// 1,000: a checkpoint copies the WAL's pages into the database file and fsyncs both, inside
/// the commit that crossed the mark, so the writer and every caller queued behind it wait for
/// it. An archived chat message dirties about five pages (the table, three indexes, the
/// AUTOINCREMENT counter), so at 1,000 pages a busy server checkpointed many times a second;
/// fewer, larger checkpoints also copy a page that was changed by many commits once. With
/// `starling bench archive` (20 pairs, MAM on) this took delivered messages/s from about
/// 4,300 to 5,300-6,600. `journal_size_limit` (64 MiB) truncates a WAL that grew past it
/// while readers held a checkpoint back, once it is reset.
const SQLITE_CONNECTION_PRAGMAS: &str = "PRAGMA busy_timeout = 5000;
PRAGMA foreign_keys = ON;
PRAGMA synchronous = FULL;
PRAGMA wal_autocheckpoint = 10000;
PRAGMA journal_size_limit = 67108864;";

/// Creates or replaces one key-value document: `(domain, user, store, value, updated_ms)`.
pub(crate) const KV_UPSERT: &str = "INSERT INTO kv (domain, username, store, value, updated_ms)
     VALUES ($1, $2, $3, $4, $5)
     ON CONFLICT (domain, username, store) DO UPDATE SET
         value = excluded.value, updated_ms = excluded.updated_ms";

/// Storage over an sqlx `Any` pool.
pub(crate) struct SqlStorage {
    pool: AnyPool,
    dialect: Dialect,
    /// SQLite's group-commit writer for archive appends and key-value writes (one writer, one
    /// transaction per batch); `None` on PostgreSQL, where each write is its own transaction
    /// on the pool.
    appender: Option<GroupCommit>,
}

impl SqlStorage {
    /// Connects, applies the SQLite settings, and runs the migrations.
    pub(crate) async fn open(url: &str) -> Result<Self, StorageError> {
        sqlx::any::install_default_drivers();
        let (pool, dialect) = if let Some(rest) = url.strip_prefix("sqlite:") {
            (open_sqlite(rest).await?, Dialect::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let pool = AnyPoolOptions::new()
                .max_connections(10)
                .acquire_timeout(Duration::from_secs(10))
                .connect(url)
                .await
                .map_err(backend_error)?;
            (pool, Dialect::Postgres)
        } else {
            // The URL itself is not echoed: it may hold a password.
            let scheme = url.split(':').next().unwrap_or_default();
            return Err(StorageError::Backend(format!(
                "unsupported storage URL scheme {scheme:?}: use sqlite:// or postgres://"
            )));
        };
        crate::migrate::run(&pool, dialect).await?;
        let appender = (dialect == Dialect::Sqlite).then(|| GroupCommit::new(pool.clone()));
        Ok(SqlStorage {
            pool,
            dialect,
            appender,
        })
    }

    #[cfg(test)]
    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    #[cfg(test)]
    pub(crate) fn appender(&self) -> Option<&GroupCommit> {
        self.appender.as_ref()
    }
}

/// Opens `sqlite:<rest>`: `:memory:`, or a file path (after an optional `//`) with optional
/// `?query` parameters, which sqlx understands (`mode`, `cache`, `immutable`, `vfs`).
async fn open_sqlite(rest: &str) -> Result<AnyPool, StorageError> {
    if rest == ":memory:" {
        return AnyPoolOptions::new()
            .min_connections(1)
            .max_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .after_connect(|conn, _| {
                Box::pin(async move {
                    sqlx::raw_sql(SQLITE_CONNECTION_PRAGMAS)
                        .execute(conn)
                        .await
                        .map(|_| ())
                })
            })
            .connect("sqlite::memory:")
            .await
            .map_err(backend_error);
    }

    let rest = rest.strip_prefix("//").unwrap_or(rest);
    let (path, params) = match rest.split_once('?') {
        Some((path, params)) => (path, Some(params)),
        None => (rest, None),
    };
    if path.is_empty() {
        return Err(StorageError::Backend(
            "sqlite URL without a file path".into(),
        ));
    }
    if let Some(parent) = std::path::Path::new(path).parent() {
        if !parent.as_os_str().is_empty() {
            std::fs::create_dir_all(parent).map_err(|e| {
                StorageError::Backend(format!("creating {}: {e}", parent.display()))
            })?;
        }
    }
    // `mode=rwc` creates the file if it is missing; sqlx's default (`rw`) would fail.
    let url = match params {
        Some(params) if params.split('&').any(|p| p.starts_with("mode=")) => {
            format!("sqlite://{path}?{params}")
        }
        Some(params) => format!("sqlite://{path}?{params}&mode=rwc"),
        None => format!("sqlite://{path}?mode=rwc"),
    };

    let pool = AnyPoolOptions::new()
        // WAL lets readers run beside the one writer; writers queue on the busy timeout.
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(10))
        .after_connect(|conn, _| {
            Box::pin(async move {
                // WAL is a property of the file and sticks once set; setting it again is a no-op.
                sqlx::raw_sql("PRAGMA journal_mode = WAL;")
                    .execute(&mut *conn)
                    .await?;
                sqlx::raw_sql(SQLITE_CONNECTION_PRAGMAS)
                    .execute(conn)
                    .await
                    .map(|_| ())
            })
        })
        .connect(&url)
        .await
        .map_err(backend_error)?;

    let mode: String = sqlx::query("PRAGMA journal_mode")
        .fetch_one(&pool)
        .await
        .and_then(|row| row.try_get(0))
        .map_err(backend_error)?;
    if !mode.eq_ignore_ascii_case("wal") {
        // Happens on file systems without shared memory (some network mounts).
        tracing::warn!(path, journal_mode = %mode, "SQLite did not switch to WAL mode");
    }
    Ok(pool)
}

/// An internal failure, with sqlx's description.
pub(crate) fn backend_error(e: sqlx::Error) -> StorageError {
    StorageError::Backend(e.to_string())
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .is_some_and(|db| db.is_unique_violation())
}

/// Now, in milliseconds since the Unix epoch (for bookkeeping columns only).
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn check_text(what: &str, text: &str) -> Result<(), StorageError> {
    if text.len() > MAX_TEXT_BYTES {
        return Err(StorageError::LimitExceeded(format!(
            "{what} is {} bytes; at most {MAX_TEXT_BYTES} are stored",
            text.len()
        )));
    }
    if text.contains('\0') {
        return Err(StorageError::LimitExceeded(format!("{what} contains NUL")));
    }
    Ok(())
}

fn check_value(what: &str, value: &[u8]) -> Result<(), StorageError> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(StorageError::LimitExceeded(format!(
            "{what} is {} bytes; at most {MAX_VALUE_BYTES} are stored",
            value.len()
        )));
    }
    Ok(())
}

fn check_owner(domain: &str, user: &str) -> Result<(), StorageError> {
    check_text("domain", domain)?;
    check_text("user", user)
}

fn check_store(domain: &str, user: &str, store: &str) -> Result<(), StorageError> {
    check_owner(domain, user)?;
    check_text("store", store)
}

fn check_ids(ids: &[String]) -> Result<(), StorageError> {
    if ids.len() > MAX_ARCHIVE_IDS {
        return Err(StorageError::LimitExceeded(format!(
            "{} ids; at most {MAX_ARCHIVE_IDS} per call",
            ids.len()
        )));
    }
    ids.iter().try_for_each(|id| check_text("archive id", id))
}

fn check_creds(creds: &[ScramRecord]) -> Result<(), StorageError> {
    for c in creds {
        check_text("mechanism", &c.mechanism)?;
        check_value("salt", &c.salt)?;
        check_value("stored key", &c.stored_key)?;
        check_value("server key", &c.server_key)?;
    }
    Ok(())
}

fn count(row: AnyRow) -> Result<u64, StorageError> {
    let n: i64 = row.try_get(0).map_err(backend_error)?;
    u64::try_from(n).map_err(|_| StorageError::Backend(format!("negative count {n}")))
}

async fn insert_credentials(
    tx: &mut Transaction<'static, Any>,
    domain: &str,
    user: &str,
    creds: &[ScramRecord],
) -> Result<(), StorageError> {
    for c in creds {
        sqlx::query(
            "INSERT INTO credentials
                 (domain, username, mechanism, salt, iterations, stored_key, server_key)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (domain, username, mechanism) DO UPDATE SET
                 salt = excluded.salt, iterations = excluded.iterations,
                 stored_key = excluded.stored_key, server_key = excluded.server_key",
        )
        .bind(domain)
        .bind(user)
        .bind(c.mechanism.as_str())
        .bind(c.salt.as_slice())
        .bind(i64::from(c.iterations))
        .bind(c.stored_key.as_slice())
        .bind(c.server_key.as_slice())
        .execute(&mut **tx)
        .await
        .map_err(backend_error)?;
    }
    Ok(())
}

/// A bind value for queries whose text is assembled at run time.
enum Arg<'a> {
    Text(&'a str),
    Int(i64),
}

/// Builds a `WHERE` clause and its arguments, numbering placeholders `$1, $2, ...`.
struct Filter<'a> {
    sql: String,
    args: Vec<Arg<'a>>,
}

impl<'a> Filter<'a> {
    fn new(sql: &str) -> Self {
        Filter {
            sql: sql.to_owned(),
            args: Vec::new(),
        }
    }

    /// Records `arg` and returns its placeholder.
    fn arg(&mut self, arg: Arg<'a>) -> String {
        self.args.push(arg);
        format!("${}", self.args.len())
    }

    fn push(&mut self, sql: &str) {
        self.sql.push_str(sql);
    }

    /// `AND item_id IN ($a, $b, ...)`; callers handle an empty list first.
    fn push_ids(&mut self, ids: &'a [String]) {
        let placeholders: Vec<String> = ids.iter().map(|id| self.arg(Arg::Text(id))).collect();
        self.push(&format!(" AND item_id IN ({})", placeholders.join(", ")));
    }

    fn query(&self) -> sqlx::query::Query<'a, Any, sqlx::any::AnyArguments> {
        let mut query = sqlx::query(AssertSqlSafe(self.sql.clone()));
        for arg in &self.args {
            query = match *arg {
                Arg::Text(text) => query.bind(text),
                Arg::Int(n) => query.bind(n),
            };
        }
        query
    }
}

/// Where an item sits in archive order: `(when_ms, seq)`.
async fn position(
    tx: &mut Transaction<'static, Any>,
    owner: (&str, &str, &str),
    id: &str,
) -> Result<(i64, i64), StorageError> {
    let row = sqlx::query(
        "SELECT when_ms, seq FROM archive
         WHERE domain = $1 AND username = $2 AND store = $3 AND item_id = $4",
    )
    .bind(owner.0)
    .bind(owner.1)
    .bind(owner.2)
    .bind(id)
    .fetch_optional(&mut **tx)
    .await
    .map_err(backend_error)?
    .ok_or(StorageError::NotFound)?;
    Ok((
        row.try_get(0).map_err(backend_error)?,
        row.try_get(1).map_err(backend_error)?,
    ))
}

#[async_trait]
impl Storage for SqlStorage {
    fn shared(&self) -> bool {
        // A SQLite file belongs to one server process; PostgreSQL may serve several nodes.
        self.dialect != Dialect::Sqlite
    }

    async fn create_account(
        &self,
        domain: &str,
        user: &str,
        creds: &[ScramRecord],
    ) -> Result<(), StorageError> {
        check_owner(domain, user)?;
        check_creds(creds)?;
        let mut tx = self.dialect.begin_write(&self.pool).await?;
        sqlx::query(
            "INSERT INTO accounts (domain, username, created_ms, updated_ms)
             VALUES ($1, $2, $3, $3)",
        )
        .bind(domain)
        .bind(user)
        .bind(now_ms())
        .execute(&mut *tx)
        .await
        .map_err(|e| {
            if is_unique_violation(&e) {
                StorageError::AlreadyExists
            } else {
                backend_error(e)
            }
        })?;
        insert_credentials(&mut tx, domain, user, creds).await?;
        tx.commit().await.map_err(backend_error)
    }

    async fn set_credentials(
        &self,
        domain: &str,
        user: &str,
        creds: &[ScramRecord],
    ) -> Result<(), StorageError> {
        check_owner(domain, user)?;
        check_creds(creds)?;
        let mut tx = self.dialect.begin_write(&self.pool).await?;
        let touched =
            sqlx::query("UPDATE accounts SET updated_ms = $3 WHERE domain = $1 AND username = $2")
                .bind(domain)
                .bind(user)
                .bind(now_ms())
                .execute(&mut *tx)
                .await
                .map_err(backend_error)?;
        if touched.rows_affected() == 0 {
            return Err(StorageError::NotFound);
        }
        sqlx::query("DELETE FROM credentials WHERE domain = $1 AND username = $2")
            .bind(domain)
            .bind(user)
            .execute(&mut *tx)
            .await
            .map_err(backend_error)?;
        insert_credentials(&mut tx, domain, user, creds).await?;
        tx.commit().await.map_err(backend_error)
    }

    async fn get_credentials(
        &self,
        domain: &str,
        user: &str,
        mechanism: &str,
    ) -> Result<Option<ScramRecord>, StorageError> {
        check_owner(domain, user)?;
        check_text("mechanism", mechanism)?;
        let Some(row) = sqlx::query(
            "SELECT salt, iterations, stored_key, server_key FROM credentials
             WHERE domain = $1 AND username = $2 AND mechanism = $3",
        )
        .bind(domain)
        .bind(user)
        .bind(mechanism)
        .fetch_optional(&self.pool)
        .await
        .map_err(backend_error)?
        else {
            return Ok(None);
        };
        let iterations: i64 = row.try_get(1).map_err(backend_error)?;
        Ok(Some(ScramRecord {
            mechanism: mechanism.to_owned(),
            salt: row.try_get(0).map_err(backend_error)?,
            iterations: u32::try_from(iterations).map_err(|_| {
                StorageError::Backend(format!("stored iteration count {iterations} is not a u32"))
            })?,
            stored_key: row.try_get(2).map_err(backend_error)?,
            server_key: row.try_get(3).map_err(backend_error)?,
        }))
    }

    async fn delete_account(&self, domain: &str, user: &str) -> Result<(), StorageError> {
        check_owner(domain, user)?;
        let mut tx = self.dialect.begin_write(&self.pool).await?;
        let deleted = sqlx::query("DELETE FROM accounts WHERE domain = $1 AND username = $2")
            .bind(domain)
            .bind(user)
            .execute(&mut *tx)
            .await
            .map_err(backend_error)?;
        if deleted.rows_affected() == 0 {
            return Err(StorageError::NotFound);
        }
        // Credentials also go by ON DELETE CASCADE; deleting explicitly does not depend on it.
        for table in ["credentials", "kv", "map", "archive"] {
            sqlx::query(AssertSqlSafe(format!(
                "DELETE FROM {table} WHERE domain = $1 AND username = $2"
            )))
            .bind(domain)
            .bind(user)
            .execute(&mut *tx)
            .await
            .map_err(backend_error)?;
        }
        tx.commit().await.map_err(backend_error)
    }

    async fn account_exists(&self, domain: &str, user: &str) -> Result<bool, StorageError> {
        check_owner(domain, user)?;
        let row = sqlx::query("SELECT 1 FROM accounts WHERE domain = $1 AND username = $2")
            .bind(domain)
            .bind(user)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend_error)?;
        Ok(row.is_some())
    }

    async fn list_accounts(&self, domain: &str) -> Result<Vec<String>, StorageError> {
        check_text("domain", domain)?;
        let rows = sqlx::query("SELECT username FROM accounts WHERE domain = $1 ORDER BY username")
            .bind(domain)
            .fetch_all(&self.pool)
            .await
            .map_err(backend_error)?;
        rows.iter()
            .map(|row| row.try_get(0).map_err(backend_error))
            .collect()
    }

    async fn kv_get(
        &self,
        domain: &str,
        user: &str,
        store: &str,
    ) -> Result<Option<Vec<u8>>, StorageError> {
        check_store(domain, user, store)?;
        let row =
            sqlx::query("SELECT value FROM kv WHERE domain = $1 AND username = $2 AND store = $3")
                .bind(domain)
                .bind(user)
                .bind(store)
                .fetch_optional(&self.pool)
                .await
                .map_err(backend_error)?;
        row.map(|row| row.try_get(0).map_err(backend_error))
            .transpose()
    }

    async fn kv_set(
        &self,
        domain: &str,
        user: &str,
        store: &str,
        value: &[u8],
    ) -> Result<(), StorageError> {
        check_store(domain, user, store)?;
        check_value("value", value)?;
        if let Some(writer) = &self.appender {
            return writer.kv_set(domain, user, store, value, now_ms()).await;
        }
        sqlx::query(KV_UPSERT)
            .bind(domain)
            .bind(user)
            .bind(store)
            .bind(value)
            .bind(now_ms())
            .execute(&self.pool)
            .await
            .map_err(backend_error)?;
        Ok(())
    }

    async fn kv_delete(&self, domain: &str, user: &str, store: &str) -> Result<(), StorageError> {
        check_store(domain, user, store)?;
        sqlx::query("DELETE FROM kv WHERE domain = $1 AND username = $2 AND store = $3")
            .bind(domain)
            .bind(user)
            .bind(store)
            .execute(&self.pool)
            .await
            .map_err(backend_error)?;
        Ok(())
    }

    async fn map_get(
        &self,
        domain: &str,
        user: &str,
        store: &str,
        key: &str,
    ) -> Result<Option<Vec<u8>>, StorageError> {
        check_store(domain, user, store)?;
        check_text("map key", key)?;
        let row = sqlx::query(
            "SELECT value FROM map
             WHERE domain = $1 AND username = $2 AND store = $3 AND item_key = $4",
        )
        .bind(domain)
        .bind(user)
        .bind(store)
        .bind(key)
        .fetch_optional(&self.pool)
        .await
        .map_err(backend_error)?;
        row.map(|row| row.try_get(0).map_err(backend_error))
            .transpose()
    }

    async fn map_set(
        &self,
        domain: &str,
        user: &str,
        store: &str,
        key: &str,
        value: &[u8],
    ) -> Result<(), StorageError> {
        check_store(domain, user, store)?;
        check_text("map key", key)?;
        check_value("value", value)?;
        sqlx::query(
            "INSERT INTO map (domain, username, store, item_key, value, updated_ms)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (domain, username, store, item_key) DO UPDATE SET
                 value = excluded.value, updated_ms = excluded.updated_ms",
        )
        .bind(domain)
        .bind(user)
        .bind(store)
        .bind(key)
        .bind(value)
        .bind(now_ms())
        .execute(&self.pool)
        .await
        .map_err(backend_error)?;
        Ok(())
    }

    async fn map_delete(
        &self,
        domain: &str,
        user: &str,
        store: &str,
        key: &str,
    ) -> Result<(), StorageError> {
        check_store(domain, user, store)?;
        check_text("map key", key)?;
        sqlx::query(
            "DELETE FROM map WHERE domain = $1 AND username = $2 AND store = $3 AND item_key = $4",
        )
        .bind(domain)
        .bind(user)
        .bind(store)
        .bind(key)
        .execute(&self.pool)
        .await
        .map_err(backend_error)?;
        Ok(())
    }

    async fn map_all(
        &self,
        domain: &str,
        user: &str,
        store: &str,
    ) -> Result<Vec<(String, Vec<u8>)>, StorageError> {
        check_store(domain, user, store)?;
        let rows = sqlx::query(
            "SELECT item_key, value FROM map
             WHERE domain = $1 AND username = $2 AND store = $3 ORDER BY item_key",
        )
        .bind(domain)
        .bind(user)
        .bind(store)
        .fetch_all(&self.pool)
        .await
        .map_err(backend_error)?;
        rows.iter()
            .map(|row| {
                Ok((
                    row.try_get(0).map_err(backend_error)?,
                    row.try_get(1).map_err(backend_error)?,
                ))
            })
            .collect()
    }

    async fn map_count(&self, domain: &str, user: &str, store: &str) -> Result<u64, StorageError> {
        check_store(domain, user, store)?;
        let row = sqlx::query(
            "SELECT COUNT(*) FROM map WHERE domain = $1 AND username = $2 AND store = $3",
        )
        .bind(domain)
        .bind(user)
        .bind(store)
        .fetch_one(&self.pool)
        .await
        .map_err(backend_error)?;
        count(row)
    }

    async fn archive_append(
        &self,
        domain: &str,
        user: &str,
        store: &str,
        item: &ArchiveItem,
    ) -> Result<(), StorageError> {
        check_store(domain, user, store)?;
        check_text("archive id", &item.id)?;
        check_text("with", &item.with)?;
        check_value("payload", &item.payload)?;
        if let Some(appender) = &self.appender {
            return appender.append(domain, user, store, item).await;
        }
        sqlx::query(
            "INSERT INTO archive (domain, username, store, item_id, when_ms, with_jid, payload)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(domain)
        .bind(user)
        .bind(store)
        .bind(item.id.as_str())
        .bind(item.when_ms)
        .bind(item.with.as_str())
        .bind(item.payload.as_slice())
        .execute(&self.pool)
        .await
        .map_err(|e| {
            if is_unique_violation(&e) {
                StorageError::AlreadyExists
            } else {
                backend_error(e)
            }
        })?;
        Ok(())
    }

    async fn archive_query(
        &self,
        domain: &str,
        user: &str,
        store: &str,
        q: &ArchiveQuery,
    ) -> Result<ArchivePage, StorageError> {
        check_store(domain, user, store)?;
        for (what, text) in [
            ("with", &q.with),
            ("after id", &q.after_id),
            ("before id", &q.before_id),
        ] {
            if let Some(text) = text {
                check_text(what, text)?;
            }
        }
        if let Some(ids) = &q.ids {
            check_ids(ids)?;
            if ids.is_empty() {
                return Ok(ArchivePage {
                    items: Vec::new(),
                    complete: true,
                });
            }
        }
        let limit = q.limit.min(MAX_ARCHIVE_PAGE);

        let mut tx = self.dialect.begin_read(&self.pool).await?;
        let owner = (domain, user, store);
        let after = match &q.after_id {
            Some(id) => Some(position(&mut tx, owner, id).await?),
            None => None,
        };
        let before = match &q.before_id {
            Some(id) => Some(position(&mut tx, owner, id).await?),
            None => None,
        };

        let mut f = Filter::new("SELECT item_id, when_ms, with_jid, payload FROM archive WHERE ");
        let (d, u, s) = (
            f.arg(Arg::Text(domain)),
            f.arg(Arg::Text(user)),
            f.arg(Arg::Text(store)),
        );
        f.push(&format!("domain = {d} AND username = {u} AND store = {s}"));
        if let Some(start) = q.start_ms {
            let p = f.arg(Arg::Int(start));
            f.push(&format!(" AND when_ms >= {p}"));
        }
        if let Some(end) = q.end_ms {
            let p = f.arg(Arg::Int(end));
            f.push(&format!(" AND when_ms <= {p}"));
        }
        if let Some(with) = &q.with {
            let p = f.arg(Arg::Text(with));
            f.push(&format!(" AND with_jid = {p}"));
        }
        if let Some(ids) = &q.ids {
            f.push_ids(ids);
        }
        for (bound, op) in [(after, '>'), (before, '<')] {
            if let Some((when, seq)) = bound {
                let (w, s) = (f.arg(Arg::Int(when)), f.arg(Arg::Int(seq)));
                f.push(&format!(
                    " AND (when_ms {op} {w} OR (when_ms = {w} AND seq {op} {s}))"
                ));
            }
        }
        let order = if q.reverse { "DESC" } else { "ASC" };
        // One row more than the page tells whether the page is the last one.
        let fetch = i64::try_from(limit + 1).unwrap_or(i64::MAX);
        let p = f.arg(Arg::Int(fetch));
        f.push(&format!(" ORDER BY when_ms {order}, seq {order} LIMIT {p}"));

        let rows = f.query().fetch_all(&mut *tx).await.map_err(backend_error)?;
        tx.commit().await.map_err(backend_error)?;

        let complete = rows.len() <= limit;
        let mut items = rows
            .iter()
            .take(limit)
            .map(|row| {
                Ok(ArchiveItem {
                    id: row.try_get(0).map_err(backend_error)?,
                    when_ms: row.try_get(1).map_err(backend_error)?,
                    with: row.try_get(2).map_err(backend_error)?,
                    payload: row.try_get(3).map_err(backend_error)?,
                })
            })
            .collect::<Result<Vec<_>, StorageError>>()?;
        if q.reverse {
            items.reverse();
        }
        Ok(ArchivePage { items, complete })
    }

    async fn archive_delete(
        &self,
        domain: &str,
        user: &str,
        store: &str,
        ids: Option<&[String]>,
        before_ms: Option<i64>,
    ) -> Result<u64, StorageError> {
        check_store(domain, user, store)?;
        let mut f = Filter::new("DELETE FROM archive WHERE ");
        let (d, u, s) = (
            f.arg(Arg::Text(domain)),
            f.arg(Arg::Text(user)),
            f.arg(Arg::Text(store)),
        );
        f.push(&format!("domain = {d} AND username = {u} AND store = {s}"));
        if let Some(ids) = ids {
            check_ids(ids)?;
            if ids.is_empty() {
                return Ok(0);
            }
            f.push_ids(ids);
        }
        if let Some(before) = before_ms {
            let p = f.arg(Arg::Int(before));
            f.push(&format!(" AND when_ms < {p}"));
        }
        let done = f.query().execute(&self.pool).await.map_err(backend_error)?;
        Ok(done.rows_affected())
    }

    async fn archive_count(
        &self,
        domain: &str,
        user: &str,
        store: &str,
    ) -> Result<u64, StorageError> {
        check_store(domain, user, store)?;
        let row = sqlx::query(
            "SELECT COUNT(*) FROM archive WHERE domain = $1 AND username = $2 AND store = $3",
        )
        .bind(domain)
        .bind(user)
        .bind(store)
        .fetch_one(&self.pool)
        .await
        .map_err(backend_error)?;
        count(row)
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn pragma(pool: &AnyPool, name: &str) -> String {
        let row = sqlx::query(AssertSqlSafe(format!("PRAGMA {name}")))
            .fetch_one(pool)
            .await
            .unwrap();
        match row.try_get::<String, _>(0) {
            Ok(text) => text,
            Err(_) => row.try_get::<i64, _>(0).unwrap().to_string(),
        }
    }

    #[tokio::test]
    async fn sqlite_files_get_wal_full_sync_busy_timeout_and_foreign_keys() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("s.db").display());
        let storage = SqlStorage::open(&url).await.unwrap();
        let pool = storage.pool();
        assert_eq!(pragma(pool, "journal_mode").await, "wal");
        assert_eq!(pragma(pool, "synchronous").await, "2", "2 is FULL");
        assert_eq!(pragma(pool, "busy_timeout").await, "5000");
        assert_eq!(pragma(pool, "wal_autocheckpoint").await, "10000");
        assert_eq!(pragma(pool, "journal_size_limit").await, "67108864");
        assert_eq!(pragma(pool, "foreign_keys").await, "1");
    }

    #[tokio::test]
    async fn the_in_memory_database_is_one_database() {
        // Each connection to sqlite::memory: would get its own database: the pool must keep
        // exactly one, or data written on one connection vanishes on the next.
        let storage = SqlStorage::open("sqlite::memory:").await.unwrap();
        let (a, b) = tokio::join!(
            storage.kv_set("d", "u", "a", b"1"),
            storage.kv_set("d", "u", "b", b"2")
        );
        a.unwrap();
        b.unwrap();
        assert_eq!(storage.pool().size(), 1);
        assert_eq!(
            storage.kv_get("d", "u", "a").await.unwrap(),
            Some(b"1".to_vec())
        );
        assert_eq!(
            storage.kv_get("d", "u", "b").await.unwrap(),
            Some(b"2".to_vec())
        );
    }
}
