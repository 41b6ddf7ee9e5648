//! SCRAM (RFC 5802, RFC 7677): the hash functions, stored credentials and the key
//! derivations of RFC 5802 §3 shared by the server ([`server`]) and the client ([`client`]);
//! message syntax lives in [`syntax`].
//!
//! Passwords are prepared with the PRECIS OpaqueString profile (RFC 8265 §4.2), which
//! RFC 7677 §4 and RFC 8265 put in the place of SASLprep.

pub(crate) mod client;
pub(crate) mod server;
pub(crate) mod syntax;

use base64::prelude::{Engine, BASE64_STANDARD};
use hmac::{Hmac, KeyInit, Mac};
use precis_profiles::precis_core::profile::PrecisFastInvocation;
use precis_profiles::OpaqueString;
use sha1::Sha1;
use sha2::{Digest, Sha256};

use crate::Failure;

/// The hash function of a SCRAM mechanism.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScramHash {
    Sha1,
    Sha256,
}

impl ScramHash {
    /// The mechanism name without channel binding ("SCRAM-SHA-1", "SCRAM-SHA-256").
    pub fn name(self) -> &'static str {
        match self {
            ScramHash::Sha1 => "SCRAM-SHA-1",
            ScramHash::Sha256 => "SCRAM-SHA-256",
        }
    }

    /// Output length in bytes (the length of StoredKey, ServerKey and the proof).
    pub fn output_len(self) -> usize {
        match self {
            ScramHash::Sha1 => 20,
            ScramHash::Sha256 => 32,
        }
    }

    /// H(data).
    pub(crate) fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            ScramHash::Sha1 => Sha1::digest(data).to_vec(),
            ScramHash::Sha256 => Sha256::digest(data).to_vec(),
        }
    }

    /// HMAC(key, data).
    pub(crate) fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        match self {
            ScramHash::Sha1 => hmac_with::<Hmac<Sha1>>(key, data),
            ScramHash::Sha256 => hmac_with::<Hmac<Sha256>>(key, data),
        }
    }

    /// Hi(password, salt, i) of RFC 5802 §2.2, which is PBKDF2 with HMAC; `iterations >= 1`.
    pub(crate) fn hi(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        let mut out = vec![0u8; self.output_len()];
        match self {
            ScramHash::Sha1 => pbkdf2::pbkdf2_hmac::<Sha1>(password, salt, iterations, &mut out),
            ScramHash::Sha256 => {
                pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut out)
            }
        }
        out
    }
}

fn hmac_with<M: Mac + KeyInit>(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = <M as KeyInit>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// What the server stores per account and hash (RFC 5802 §3): never the password itself.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramCredentials {
    /// The hash these keys were derived with.
    pub hash: ScramHash,
    /// Random per-account salt, sent to the client in `s=`.
    pub salt: Vec<u8>,
    /// PBKDF2 iteration count, sent to the client in `i=`.
    pub iterations: u32,
    /// H(HMAC(SaltedPassword, "Client Key")): verifies the client's proof.
    pub stored_key: Vec<u8>,
    /// HMAC(SaltedPassword, "Server Key"): signs the server-final message.
    pub server_key: Vec<u8>,
}

impl std::fmt::Debug for ScramCredentials {
    /// Keys are left out: with StoredKey an observer of one exchange can impersonate the user.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramCredentials")
            .field("hash", &self.hash)
            .field("salt", &BASE64_STANDARD.encode(&self.salt))
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

impl ScramCredentials {
    /// Keys derived from an already salted password (RFC 5802 §3).
    pub(crate) fn from_salted(
        hash: ScramHash,
        salt: Vec<u8>,
        iterations: u32,
        salted: &[u8],
    ) -> ScramCredentials {
        let client_key = hash.hmac(salted, b"Client Key");
        ScramCredentials {
            hash,
            salt,
            iterations,
            stored_key: hash.digest(&client_key),
            server_key: hash.hmac(salted, b"Server Key"),
        }
    }

    /// Whether these credentials can be used with `hash` at all.
    pub(crate) fn usable_with(&self, hash: ScramHash) -> bool {
        self.hash == hash
            && self.iterations >= 1
            && !self.salt.is_empty()
            && self.stored_key.len() == hash.output_len()
            && self.server_key.len() == hash.output_len()
    }
}

/// Prepares a password with PRECIS OpaqueString (RFC 8265 §4.2).
pub(crate) fn prepare_password(password: &str) -> Result<String, Failure> {
    OpaqueString::enforce(password)
        .map(|p| p.into_owned())
        .map_err(|_| Failure::MalformedRequest)
}

/// Derives the stored credentials for `password` with a given salt.
///
/// Errors with [`Failure::MalformedRequest`] if the password is not a valid OpaqueString
/// (for example empty, or containing control characters), if `iterations` is 0 or `salt`
/// is empty.
pub fn derive_credentials(
    password: &str,
    hash: ScramHash,
    iterations: u32,
    salt: &[u8],
) -> Result<ScramCredentials, Failure> {
    if iterations == 0 || salt.is_empty() {
        return Err(Failure::MalformedRequest);
    }
    let password = prepare_password(password)?;
    let salted = hash.hi(password.as_bytes(), salt, iterations);
    Ok(ScramCredentials::from_salted(
        hash,
        salt.to_vec(),
        iterations,
        &salted,
    ))
}

/// Derives credentials for `password` with a fresh random 16-byte salt (for registration
/// and password changes).
pub fn new_credentials(
    password: &str,
    hash: ScramHash,
    iterations: u32,
) -> Result<ScramCredentials, Failure> {
    let mut salt = [0u8; 16];
    rand::fill(&mut salt);
    derive_credentials(password, hash, iterations, &salt)
}

/// A fresh nonce: 24 random bytes in base64 (printable, never contains ',').
pub(crate) fn random_nonce() -> String {
    let mut bytes = [0u8; 24];
    rand::fill(&mut bytes);
    BASE64_STANDARD.encode(bytes)
}

/// XOR of two equally long byte strings (ClientKey ^ ClientSignature).
pub(crate) fn xor(a: &[u8], b: &[u8]) -> Vec<u8> {
    a.iter().zip(b).map(|(x, y)| x ^ y).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hi_of_rfc_6070_vector() {
        // RFC 6070 test vector 2: PBKDF2-HMAC-SHA1("password", "salt", 2, 20).
        let out = ScramHash::Sha1.hi(b"password", b"salt", 2);
        let hex: String = out.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "ea6c014dc72d6f8ccd1ed92ace1d41f0d8de8957");
    }

    #[test]
    fn derive_rejects_bad_input() {
        assert_eq!(
            derive_credentials("", ScramHash::Sha256, 4096, b"salt").unwrap_err(),
            Failure::MalformedRequest
        );
        assert_eq!(
            derive_credentials("pw\u{7}", ScramHash::Sha256, 4096, b"salt").unwrap_err(),
            Failure::MalformedRequest
        );
        assert!(derive_credentials("pw", ScramHash::Sha256, 0, b"salt").is_err());
        assert!(derive_credentials("pw", ScramHash::Sha256, 1, b"").is_err());
    }

    #[test]
    fn new_credentials_use_fresh_salt() {
        let a = new_credentials("secret", ScramHash::Sha1, 16).unwrap();
        let b = new_credentials("secret", ScramHash::Sha1, 16).unwrap();
        assert_eq!(a.salt.len(), 16);
        assert_ne!(a.salt, b.salt);
        assert_ne!(a.stored_key, b.stored_key);
        assert!(a.usable_with(ScramHash::Sha1) && !a.usable_with(ScramHash::Sha256));
    }

    #[test]
    fn debug_hides_keys() {
        let c = derive_credentials("pencil", ScramHash::Sha1, 16, b"salt").unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("stored_key") && !shown.contains("server_key"));
    }
}
