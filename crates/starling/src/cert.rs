//! `starling cert generate`: a self-signed certificate for the configured hosts, used when the
//! operator has not configured one. Good for a first start and for tests; real deployments set
//! `[tls] cert/key` to a certificate clients trust.

use std::path::Path;

/// Writes `cert.pem` and `key.pem` (ECDSA P-256, subjectAltName = each host) into `dir`.
pub fn generate_self_signed(hosts: &[String], dir: &Path) -> Result<(), String> {
    let mut names: Vec<String> = hosts.to_vec();
    if names.is_empty() {
        names.push("localhost".into());
    }
    let certified = rcgen::generate_simple_self_signed(names).map_err(|e| e.to_string())?;
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let key_path = dir.join("key.pem");
    write_private(&key_path, certified.signing_key.serialize_pem().as_bytes())?;
    std::fs::write(dir.join("cert.pem"), certified.cert.pem()).map_err(|e| e.to_string())?;
    Ok(())
}

fn write_private(path: &Path, data: &[u8]) -> Result<(), String> {
    #[cfg(unix)]
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        f.write_all(data).map_err(|e| e.to_string())
    }
    #[cfg(not(unix))]
    {
        std::fs::write(path, data).map_err(|e| e.to_string())
    }
}
