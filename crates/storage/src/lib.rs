//! Starling's persistent storage: the [`Storage`] trait and one sqlx backend behind it.
//!
//! Following Prosody's storage manager, the trait offers a few general *shapes* rather than a
//! method per feature, so most new XEPs need neither a new method nor a migration:
//!
//! - **accounts**: a user exists, and its SCRAM credentials, one [`ScramRecord`] per hash.
//!   Passwords are never stored, only SCRAM salted keys (RFC 5802 section 3, RFC 7677).
//! - **key-value documents** per user and store: vCard (XEP-0054), private XML (XEP-0049),
//!   MAM preferences. One opaque byte value per `(domain, user, store)`.
//! - **maps** per user and store: roster items, blocklist, PEP nodes. Opaque byte values keyed
//!   by a string.
//! - **archives** per user or room and store: offline queue, MAM (XEP-0313), MUC history.
//!   Append-only items ordered by `(when_ms, insertion order)`, queried by time, `with`, and id
//!   with RSM-style paging (XEP-0059), deleted by id or age.
//!
//! What this crate does not do: it does not normalise JIDs (callers pass domain and user already
//! through PRECIS; they are stored and compared byte for byte), it does not parse payloads (all
//! values are opaque bytes), and it does not know which XEP uses which store name.
//!
//! [`open`] picks the backend by URL: `sqlite://path/to/file.db` (created if missing, WAL),
//! `sqlite::memory:` (tests) or `postgres://...`. Both run the same SQL text through sqlx's
//! `Any` driver; each dialect has its own versioned migrations under `migrations/`, applied at
//! open. The [`conformance`] suite (feature `conformance`) is what every backend must pass.

use std::sync::Arc;

use async_trait::async_trait;

#[cfg(feature = "conformance")]
pub mod conformance;
mod group_commit;
mod migrate;
mod sql;

/// Longest text argument (domain, user, store, map key, archive id, `with`, mechanism), in
/// bytes: RFC 7622's cap on a JID's localpart and domainpart. Checked before any query, so
/// both backends reject the same inputs. (PostgreSQL's B-tree entries hold about 2.7 KB, so a
/// map or archive key whose domain, user, store and key are *all* near this limit can still
/// fail there with `Backend`; real JIDs and store names are far shorter.)
pub const MAX_TEXT_BYTES: usize = 1023;

/// Largest value (kv document, map value, archive payload, SCRAM field), in bytes. Stanzas are
/// capped at 256 KiB on the wire; vCards with avatars and PEP items can be larger, but nothing
/// a server stores for one user needs more than this.
pub const MAX_VALUE_BYTES: usize = 16 * 1024 * 1024;

/// Largest page [`Storage::archive_query`] returns; larger limits are clamped to it and the page
/// reports `complete: false` if more items match, so callers simply ask for the next page.
pub const MAX_ARCHIVE_PAGE: usize = 1000;

/// Most ids accepted in one [`ArchiveQuery::ids`] or [`Storage::archive_delete`] call.
pub const MAX_ARCHIVE_IDS: usize = 1000;

/// Why a storage call failed.
///
/// `NotFound` and `AlreadyExists` are answers about the data (the caller usually maps them to
/// `item-not-found` or `conflict`); `LimitExceeded` is the caller's input being outside what
/// storage accepts; `Backend` is an internal failure (log it, answer `internal-server-error`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StorageError {
    /// The account, or the archive item named by an id, does not exist.
    #[error("not found")]
    NotFound,
    /// The account, or an archive item with that id, already exists.
    #[error("already exists")]
    AlreadyExists,
    /// An argument is outside what storage accepts: too long a text, too large a value, too
    /// many ids, or a NUL character in a text field (PostgreSQL cannot store it in TEXT).
    #[error("limit exceeded: {0}")]
    LimitExceeded(String),
    /// The database failed or returned something this crate does not understand.
    #[error("storage backend: {0}")]
    Backend(String),
}

/// One SCRAM credential: what RFC 5802 section 3 lets a server keep instead of the password.
///
/// Debug output hides the keys: `stored_key` and `server_key` must not end up in logs.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramRecord {
    /// The SASL mechanism these keys are for: `"SCRAM-SHA-1"` or `"SCRAM-SHA-256"` (the `-PLUS`
    /// variants use the same keys). One record per mechanism per account.
    pub mechanism: String,
    /// The salt sent to the client in the server-first message.
    pub salt: Vec<u8>,
    /// The PBKDF2 iteration count sent to the client.
    pub iterations: u32,
    /// `H(ClientKey)`: verifies the client proof.
    pub stored_key: Vec<u8>,
    /// `HMAC(SaltedPassword, "Server Key")`: computes the server signature.
    pub server_key: Vec<u8>,
}

impl std::fmt::Debug for ScramRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramRecord")
            .field("mechanism", &self.mechanism)
            .field("salt_len", &self.salt.len())
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

/// One archived item (an offline message, a MAM result, a line of MUC history).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveItem {
    /// The caller's id for the item (a MAM/stanza id); unique within its archive, used for
    /// RSM `before`/`after` and for deletes.
    pub id: String,
    /// When the item was archived, in milliseconds since the Unix epoch; the primary order.
    pub when_ms: i64,
    /// The other party (MAM's `with`); matched exactly by [`ArchiveQuery::with`], so callers
    /// store whichever form (bare or full JID) they will filter on.
    pub with: String,
    /// The stanza or whatever the caller serialised; opaque to storage.
    pub payload: Vec<u8>,
}

/// A filter and a page request for [`Storage::archive_query`]. All filters combine with AND.
///
/// Items are ordered by `when_ms`, then by insertion order. `Default` matches everything and
/// asks for a page of zero items, which still answers whether any item matches (`complete`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArchiveQuery {
    /// Only items with `when_ms >= start_ms` (inclusive, as MAM's `start`).
    pub start_ms: Option<i64>,
    /// Only items with `when_ms <= end_ms` (inclusive, as MAM's `end`).
    pub end_ms: Option<i64>,
    /// Only items whose `with` equals this exactly.
    pub with: Option<String>,
    /// Only items after the item with this id (RSM `after`, MAM `after-id`). An id that is not
    /// in the archive gives [`StorageError::NotFound`].
    pub after_id: Option<String>,
    /// Only items before the item with this id (RSM `before`, MAM `before-id`). An id that is
    /// not in the archive gives [`StorageError::NotFound`].
    pub before_id: Option<String>,
    /// Only items with one of these ids (MAM `ids`); ids not in the archive are simply absent
    /// from the result. At most [`MAX_ARCHIVE_IDS`].
    pub ids: Option<Vec<String>>,
    /// Page size; clamped to [`MAX_ARCHIVE_PAGE`].
    pub limit: usize,
    /// `false`: the page is the *first* `limit` matching items. `true`: the page is the *last*
    /// `limit` matching items (RSM `<before/>`). Items are returned oldest first either way.
    pub reverse: bool,
}

/// The answer to an [`ArchiveQuery`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArchivePage {
    /// The page, oldest first.
    pub items: Vec<ArchiveItem>,
    /// No further item matches in the paging direction: after the page when not `reverse`,
    /// before it when `reverse` (MAM's `complete` attribute).
    pub complete: bool,
}

/// Everything the server persists, in four shapes. Held as `Arc<dyn Storage>`.
///
/// Every write that returned `Ok` is durable: it survives the process being killed, and (on
/// SQLite with `synchronous=FULL`, on PostgreSQL with its default `fsync`) a power loss.
/// Text arguments are limited to [`MAX_TEXT_BYTES`] and must not contain NUL; values to
/// [`MAX_VALUE_BYTES`]; otherwise [`StorageError::LimitExceeded`].
///
/// kv, map and archive data do not require an account: rooms and hosts have them too.
#[async_trait]
pub trait Storage: Send + Sync {
    /// Creates an account with these credentials (one record per mechanism; a later record
    /// with the same mechanism wins). [`StorageError::AlreadyExists`] if it exists.
    async fn create_account(
        &self,
        domain: &str,
        user: &str,
        creds: &[ScramRecord],
    ) -> Result<(), StorageError>;
    /// Replaces all of an account's credentials: mechanisms absent from `creds` are removed.
    /// [`StorageError::NotFound`] if the account does not exist.
    async fn set_credentials(
        &self,
        domain: &str,
        user: &str,
        creds: &[ScramRecord],
    ) -> Result<(), StorageError>;
    /// The account's record for one mechanism; `None` if the account or the record is missing.
    async fn get_credentials(
        &self,
        domain: &str,
        user: &str,
        mechanism: &str,
    ) -> Result<Option<ScramRecord>, StorageError>;
    /// Deletes the account and everything stored under `(domain, user)` in every shape, in one
    /// transaction. [`StorageError::NotFound`] if the account does not exist.
    async fn delete_account(&self, domain: &str, user: &str) -> Result<(), StorageError>;
    /// Whether the account exists.
    async fn account_exists(&self, domain: &str, user: &str) -> Result<bool, StorageError>;
    /// The users of a domain, sorted by their UTF-8 bytes.
    async fn list_accounts(&self, domain: &str) -> Result<Vec<String>, StorageError>;

    /// The document in `store`, if any.
    async fn kv_get(
        &self,
        domain: &str,
        user: &str,
        store: &str,
    ) -> Result<Option<Vec<u8>>, StorageError>;
    /// Creates or replaces the document in `store`.
    async fn kv_set(
        &self,
        domain: &str,
        user: &str,
        store: &str,
        value: &[u8],
    ) -> Result<(), StorageError>;
    /// Removes the document in `store`; removing a missing document is not an error.
    async fn kv_delete(&self, domain: &str, user: &str, store: &str) -> Result<(), StorageError>;

    /// The value under `key` in map `store`, if any.
    async fn map_get(
        &self,
        domain: &str,
        user: &str,
        store: &str,
        key: &str,
    ) -> Result<Option<Vec<u8>>, StorageError>;
    /// Creates or replaces the value under `key`.
    async fn map_set(
        &self,
        domain: &str,
        user: &str,
        store: &str,
        key: &str,
        value: &[u8],
    ) -> Result<(), StorageError>;
    /// Removes `key`; removing a missing key is not an error.
    async fn map_delete(
        &self,
        domain: &str,
        user: &str,
        store: &str,
        key: &str,
    ) -> Result<(), StorageError>;
    /// Every entry of map `store`, sorted by key (UTF-8 byte order).
    async fn map_all(
        &self,
        domain: &str,
        user: &str,
        store: &str,
    ) -> Result<Vec<(String, Vec<u8>)>, StorageError>;
    /// How many entries map `store` has.
    async fn map_count(&self, domain: &str, user: &str, store: &str) -> Result<u64, StorageError>;

    /// Appends an item. [`StorageError::AlreadyExists`] if the archive already has its id.
    ///
    /// Returns once the item is durable. On SQLite, appends made at the same time share one
    /// transaction and so one fsync (group commit); each still gets its own answer.
    async fn archive_append(
        &self,
        domain: &str,
        user: &str,
        store: &str,
        item: &ArchiveItem,
    ) -> Result<(), StorageError>;
    /// One page of matching items; see [`ArchiveQuery`] and [`ArchivePage`].
    async fn archive_query(
        &self,
        domain: &str,
        user: &str,
        store: &str,
        q: &ArchiveQuery,
    ) -> Result<ArchivePage, StorageError>;
    /// Deletes the items whose id is in `ids` (when given) AND whose `when_ms < before_ms`
    /// (when given); `None, None` empties the archive. Returns how many were deleted.
    async fn archive_delete(
        &self,
        domain: &str,
        user: &str,
        store: &str,
        ids: Option<&[String]>,
        before_ms: Option<i64>,
    ) -> Result<u64, StorageError>;
    /// How many items the archive holds.
    async fn archive_count(
        &self,
        domain: &str,
        user: &str,
        store: &str,
    ) -> Result<u64, StorageError>;

    /// Closes the connections (graceful shutdown; on SQLite the last connection to close
    /// checkpoints the WAL). Calls after `close` fail with [`StorageError::Backend`].
    async fn close(&self) {}

    /// Whether other server nodes may write this data (a shared PostgreSQL). A node may keep
    /// stored data in memory past one request only when this is `false`: then every change
    /// goes through this process (the admin command line aside), so the process can keep
    /// its copies current. The default is the safe answer.
    fn shared(&self) -> bool {
        true
    }
}

/// Opens storage at `url`, creating and migrating the database as needed.
///
/// - `sqlite://path/to/file.db` (relative) or `sqlite:///abs/file.db`: the file and its parent
///   directories are created if missing; WAL journal, `synchronous=FULL`, a 5 s busy timeout,
///   foreign keys on.
/// - `sqlite::memory:`: a private in-memory database (one connection), for tests.
/// - `postgres://user@host:port/db` or `postgresql://...`: the database must exist.
pub async fn open(url: &str) -> Result<Arc<dyn Storage>, StorageError> {
    Ok(Arc::new(sql::SqlStorage::open(url).await?))
}
