//! Account management shared by `starling user ...` and the tests: accounts are stored only as
//! SCRAM-SHA-1 and SCRAM-SHA-256 salted keys (DESIGN "Storage"), never as passwords.

use starling_proto::jid::Jid;
use starling_sasl::{new_credentials, ScramHash};
use starling_storage::{ScramRecord, Storage, StorageError};

/// Why an account operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// The address is not `user@host`.
    #[error("'{0}' is not a valid user JID (user@host)")]
    BadJid(String),
    /// The host is not one of ours.
    #[error("{0} is not a host of this server (see [server] hosts)")]
    UnknownHost(String),
    /// The password was refused (empty, or not a valid PRECIS OpaqueString).
    #[error("password refused: {0}")]
    BadPassword(String),
    /// Storage failed or refused.
    #[error("{0}")]
    Storage(#[from] StorageError),
}

/// Parses `user@host` and checks the host is local; returns (host, user).
pub fn parse_account(jid: &str, hosts: &[String]) -> Result<(String, String), AccountError> {
    let j = Jid::parse(jid).map_err(|_| AccountError::BadJid(jid.to_owned()))?;
    let (Some(node), None) = (j.node(), j.resource()) else {
        return Err(AccountError::BadJid(jid.to_owned()));
    };
    if !hosts.iter().any(|h| h == j.domain()) {
        return Err(AccountError::UnknownHost(j.domain().to_owned()));
    }
    Ok((j.domain().to_owned(), node.to_owned()))
}

/// SCRAM records for both hashes.
pub fn credentials(password: &str, iterations: u32) -> Result<Vec<ScramRecord>, AccountError> {
    [ScramHash::Sha1, ScramHash::Sha256]
        .into_iter()
        .map(|h| {
            let c = new_credentials(password, h, iterations)
                .map_err(|f| AccountError::BadPassword(f.name().to_owned()))?;
            Ok(ScramRecord {
                mechanism: h.name().to_owned(),
                salt: c.salt,
                iterations: c.iterations,
                stored_key: c.stored_key,
                server_key: c.server_key,
            })
        })
        .collect()
}

/// Creates an account.
pub async fn add(
    storage: &dyn Storage,
    host: &str,
    user: &str,
    password: &str,
    iterations: u32,
) -> Result<(), AccountError> {
    let creds = credentials(password, iterations)?;
    storage.create_account(host, user, &creds).await?;
    Ok(())
}

/// Replaces an account's password.
pub async fn set_password(
    storage: &dyn Storage,
    host: &str,
    user: &str,
    password: &str,
    iterations: u32,
) -> Result<(), AccountError> {
    let creds = credentials(password, iterations)?;
    storage.set_credentials(host, user, &creds).await?;
    Ok(())
}
