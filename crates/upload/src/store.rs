//! Uploaded files in the data directory, and each account's usage for its quota.
//!
//! A file is two entries in `data_dir/upload`: `<slot>.data` (the bytes) and `<slot>.meta`
//! (file name, content type, owner, size, creation time, one per line). An upload is written
//! to `<slot>.part`, created exclusively (a second PUT to the same slot conflicts), synced,
//! then renamed: a file is either complete or absent, also after a crash. Usage per account is
//! kept in the storage trait (map `upload`: slot -> "size created_ms"), so the quota check
//! costs one query and not a directory scan. Behind this small interface an object store can
//! replace the directory later.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{Stream, StreamExt};
use starling_storage::Storage;
use tokio::io::AsyncWriteExt;

/// The storage map holding each account's uploads.
pub const USAGE_MAP: &str = "upload";

/// What is known about a stored file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    /// The name the uploader gave.
    pub filename: String,
    /// The content type announced at slot time.
    pub content_type: String,
    /// The uploader's bare JID.
    pub owner: String,
    /// Size in bytes.
    pub size: u64,
    /// Milliseconds since the epoch when the upload completed.
    pub created_ms: u64,
}

impl Meta {
    fn encode(&self) -> String {
        format!(
            "{}\n{}\n{}\n{}\n{}\n",
            self.filename, self.content_type, self.owner, self.size, self.created_ms
        )
    }

    fn decode(text: &str) -> Option<Meta> {
        let mut lines = text.lines();
        Some(Meta {
            filename: lines.next()?.to_owned(),
            content_type: lines.next()?.to_owned(),
            owner: lines.next()?.to_owned(),
            size: lines.next()?.parse().ok()?,
            created_ms: lines.next()?.parse().ok()?,
        })
    }
}

/// Why storing an upload failed.
#[derive(Debug)]
pub enum PutError {
    /// The slot was already used (or is being used).
    Exists,
    /// The body was longer or shorter than the slot's size.
    WrongSize,
    /// The account's quota would be exceeded.
    Quota,
    /// Disk or storage trouble.
    Io(String),
}

/// The upload directory plus the usage records.
pub struct FileStore {
    dir: PathBuf,
    storage: Arc<dyn Storage>,
}

/// Milliseconds since the epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn split_owner(owner: &str) -> (&str, &str) {
    owner
        .split_once('@')
        .map(|(u, d)| (d, u))
        .unwrap_or(("", owner))
}

impl FileStore {
    /// A store in `dir` (created if missing).
    pub fn new(dir: PathBuf, storage: Arc<dyn Storage>) -> std::io::Result<FileStore> {
        std::fs::create_dir_all(&dir)?;
        Ok(FileStore { dir, storage })
    }

    fn path(&self, slot: &str, ext: &str) -> PathBuf {
        self.dir.join(format!("{slot}.{ext}"))
    }

    /// Bytes `owner` (a bare JID) has stored.
    pub async fn usage(&self, owner: &str) -> Result<u64, String> {
        let (domain, user) = split_owner(owner);
        let all = self
            .storage
            .map_all(domain, user, USAGE_MAP)
            .await
            .map_err(|e| e.to_string())?;
        Ok(all
            .iter()
            .filter_map(|(_, v)| {
                std::str::from_utf8(v)
                    .ok()?
                    .split(' ')
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .sum())
    }

    /// Stores `body` as the file of `slot`, which must be exactly `meta.size` bytes, if the
    /// owner stays within `quota` (0: none).
    pub async fn put<S, E>(
        &self,
        slot: &str,
        meta: Meta,
        quota: u64,
        mut body: S,
    ) -> Result<(), PutError>
    where
        S: Stream<Item = Result<axum::body::Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        if tokio::fs::try_exists(self.path(slot, "data"))
            .await
            .unwrap_or(false)
        {
            return Err(PutError::Exists);
        }
        if quota > 0 {
            let used = self.usage(&meta.owner).await.map_err(PutError::Io)?;
            if used.saturating_add(meta.size) > quota {
                return Err(PutError::Quota);
            }
        }
        let part = self.path(slot, "part");
        let mut file = match tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&part)
            .await
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(PutError::Exists)
            }
            Err(e) => return Err(PutError::Io(e.to_string())),
        };
        let result = async {
            let mut written: u64 = 0;
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| PutError::Io(format!("reading the body: {e}")))?;
                written += chunk.len() as u64;
                if written > meta.size {
                    return Err(PutError::WrongSize);
                }
                file.write_all(&chunk)
                    .await
                    .map_err(|e| PutError::Io(e.to_string()))?;
            }
            if written != meta.size {
                return Err(PutError::WrongSize);
            }
            file.sync_all()
                .await
                .map_err(|e| PutError::Io(e.to_string()))?;
            Ok(())
        }
        .await;
        drop(file);
        if let Err(e) = result {
            let _ = tokio::fs::remove_file(&part).await;
            return Err(e);
        }
        let meta_tmp = self.path(slot, "meta.part");
        tokio::fs::write(&meta_tmp, meta.encode())
            .await
            .map_err(|e| PutError::Io(e.to_string()))?;
        tokio::fs::rename(&part, self.path(slot, "data"))
            .await
            .map_err(|e| PutError::Io(e.to_string()))?;
        tokio::fs::rename(&meta_tmp, self.path(slot, "meta"))
            .await
            .map_err(|e| PutError::Io(e.to_string()))?;
        sync_dir(&self.dir).await;
        let (domain, user) = split_owner(&meta.owner);
        self.storage
            .map_set(
                domain,
                user,
                USAGE_MAP,
                slot,
                format!("{} {}", meta.size, meta.created_ms).as_bytes(),
            )
            .await
            .map_err(|e| PutError::Io(e.to_string()))?;
        Ok(())
    }

    /// The metadata and data path of a stored file.
    pub async fn get(&self, slot: &str) -> Option<(Meta, PathBuf)> {
        let text = tokio::fs::read_to_string(self.path(slot, "meta"))
            .await
            .ok()?;
        let meta = Meta::decode(&text)?;
        let data = self.path(slot, "data");
        tokio::fs::try_exists(&data)
            .await
            .ok()?
            .then_some((meta, data))
    }

    /// Deletes files older than `ttl` (and their usage records), and upload leftovers older
    /// than `stale` (a PUT that never finished). Returns how many files were deleted.
    pub async fn expire(&self, ttl: Option<Duration>, stale: Duration) -> usize {
        let Ok(mut entries) = tokio::fs::read_dir(&self.dir).await else {
            return 0;
        };
        let now = now_ms();
        let mut deleted = 0;
        while let Ok(Some(entry)) = entries.next_entry().await {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(slot) = name.strip_suffix(".meta") {
                let Some(ttl) = ttl else { continue };
                let Ok(text) = tokio::fs::read_to_string(entry.path()).await else {
                    continue;
                };
                let Some(meta) = Meta::decode(&text) else {
                    continue;
                };
                if meta.created_ms + ttl.as_millis() as u64 <= now {
                    let _ = tokio::fs::remove_file(self.path(slot, "data")).await;
                    let _ = tokio::fs::remove_file(entry.path()).await;
                    let (domain, user) = split_owner(&meta.owner);
                    let _ = self.storage.map_delete(domain, user, USAGE_MAP, slot).await;
                    deleted += 1;
                }
            } else if name.ends_with(".part") {
                let old = entry
                    .metadata()
                    .await
                    .ok()
                    .and_then(|m| m.modified().ok())
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age > stale);
                if old {
                    let _ = tokio::fs::remove_file(entry.path()).await;
                }
            }
        }
        deleted
    }
}

/// Makes the renames durable (best effort; not every platform can sync a directory).
async fn sync_dir(dir: &Path) {
    let dir = dir.to_owned();
    let _ =
        tokio::task::spawn_blocking(move || std::fs::File::open(&dir).and_then(|d| d.sync_all()))
            .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_round_trips() {
        let m = Meta {
            filename: "a b.txt".into(),
            content_type: "text/plain".into(),
            owner: "alice@localhost".into(),
            size: 3,
            created_ms: 42,
        };
        assert_eq!(Meta::decode(&m.encode()), Some(m));
    }
}
