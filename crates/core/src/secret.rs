//! Server secrets kept in the data directory (signing keys for upload URLs, and the like):
//! 32 random bytes created on first use with mode 0600, read back on every start, so that
//! what was signed before a restart stays valid after it.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

/// Reads the secret at `path`, or creates it (32 random bytes, mode 0600, synced).
pub fn load_or_create(path: &Path) -> std::io::Result<Arc<[u8]>> {
    match std::fs::read(path) {
        Ok(bytes) if bytes.len() >= 32 => return Ok(bytes.into()),
        Ok(_) => tracing::warn!(path = %path.display(), "secret too short; replacing it"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(std::io::Error::new(
                e.kind(),
                format!("cannot read {}: {e}", path.display()),
            ))
        }
    }
    use rand::Rng;
    let secret: [u8; 32] = rand::rng().random();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options.open(path).map_err(|e| {
        std::io::Error::new(e.kind(), format!("cannot create {}: {e}", path.display()))
    })?;
    f.write_all(&secret)?;
    f.sync_all()?;
    Ok(secret.to_vec().into())
}

#[cfg(test)]
mod tests {
    #[test]
    fn created_once_then_read_back() {
        let dir = std::env::temp_dir().join(format!("starling-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s");
        let a = super::load_or_create(&path).unwrap();
        let b = super::load_or_create(&path).unwrap();
        assert_eq!(a.len(), 32);
        assert_eq!(a, b);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
