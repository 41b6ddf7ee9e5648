//! Slots and signed URLs: what a slot request (XEP-0363 §4) hands out, and how the HTTP side
//! recognises it later without any state.
//!
//! A PUT URL carries the slot's owner, size, content type and expiry in its query, with an
//! HMAC-SHA256 over all of them and the path under a key kept in the data directory; a GET URL
//! carries the file's expiry and its own HMAC. Nothing is stored when a slot is handed out, so
//! slots survive a restart and work on any node that shares the key and the files.

use std::sync::Arc;

use base64::prelude::{Engine, BASE64_URL_SAFE_NO_PAD};
use hmac::{Hmac, KeyInit, Mac};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Characters escaped in a path segment or query value: everything but RFC 3986 unreserved.
const ESCAPE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encodes one path segment or query value.
pub fn escape(s: &str) -> String {
    utf8_percent_encode(s, ESCAPE).to_string()
}

/// HMAC-SHA256 signatures under the service's key.
#[derive(Clone)]
pub struct Signer {
    key: Arc<[u8]>,
}

impl Signer {
    /// A signer with `key` (at least 32 random bytes).
    pub fn new(key: Arc<[u8]>) -> Signer {
        Signer { key }
    }

    /// The signature of `parts`, each length-prefixed so that no two lists sign alike.
    pub fn sign(&self, parts: &[&str]) -> String {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.key)
            .expect("HMAC takes keys of any length");
        for p in parts {
            mac.update(format!("{}:", p.len()).as_bytes());
            mac.update(p.as_bytes());
        }
        BASE64_URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    }

    /// Whether `signature` is the signature of `parts` (constant time).
    pub fn verify(&self, parts: &[&str], signature: &str) -> bool {
        let expected = self.sign(parts);
        bool::from(expected.as_bytes().ct_eq(signature.as_bytes()))
    }
}

/// Why a slot request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlotError {
    /// The file name cannot be used (empty, too long, a path, control characters).
    BadFilename,
    /// Larger than the configured maximum (carried in the answer, XEP-0363 §4.2).
    TooLarge(u64),
    /// The account's quota would be exceeded.
    Quota,
}

/// Checks a client-given file name: it becomes a path segment of a URL and the name a
/// downloader sees, never a path on disk.
pub fn check_filename(name: &str) -> Result<(), SlotError> {
    let bad = name.is_empty()
        || name.len() > 255
        || name == "."
        || name == ".."
        || name
            .chars()
            .any(|c| c == '/' || c == '\\' || c.is_control());
    if bad {
        Err(SlotError::BadFilename)
    } else {
        Ok(())
    }
}

/// What a PUT URL promises: who may upload what, until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutGrant {
    /// The slot id (32 hex digits).
    pub slot: String,
    /// The file name as requested.
    pub filename: String,
    /// The uploader's bare JID.
    pub owner: String,
    /// Exact size in bytes.
    pub size: u64,
    /// The content type the client announced (may be empty).
    pub content_type: String,
    /// Unix time (seconds) after which the URL is refused.
    pub expires: u64,
}

impl PutGrant {
    fn parts(&self) -> [String; 7] {
        [
            "put".into(),
            self.slot.clone(),
            self.filename.clone(),
            self.owner.clone(),
            self.size.to_string(),
            self.content_type.clone(),
            self.expires.to_string(),
        ]
    }

    /// The signature of this grant.
    pub fn sign(&self, signer: &Signer) -> String {
        let parts = self.parts();
        signer.sign(&parts.iter().map(String::as_str).collect::<Vec<_>>())
    }

    /// Whether `signature` signs this grant.
    pub fn verify(&self, signer: &Signer, signature: &str) -> bool {
        let parts = self.parts();
        signer.verify(
            &parts.iter().map(String::as_str).collect::<Vec<_>>(),
            signature,
        )
    }

    /// The path and query of the PUT URL (to append to the base URL).
    pub fn path_and_query(&self, signer: &Signer) -> String {
        format!(
            "/upload/{}/{}?owner={}&size={}&type={}&expires={}&sig={}",
            self.slot,
            escape(&self.filename),
            escape(&self.owner),
            self.size,
            escape(&self.content_type),
            self.expires,
            self.sign(signer)
        )
    }
}

/// The parts a GET URL signs: the file and its expiry (0: never).
pub fn get_parts(slot: &str, filename: &str, expires: u64) -> [String; 4] {
    [
        "get".into(),
        slot.into(),
        filename.into(),
        expires.to_string(),
    ]
}

/// The path and query of a GET URL.
pub fn get_path_and_query(signer: &Signer, slot: &str, filename: &str, expires: u64) -> String {
    let parts = get_parts(slot, filename, expires);
    let sig = signer.sign(&parts.iter().map(String::as_str).collect::<Vec<_>>());
    format!(
        "/upload/{slot}/{}?expires={expires}&sig={sig}",
        escape(filename)
    )
}

/// A fresh slot id: 128 random bits in hex.
pub fn new_slot_id() -> String {
    use rand::Rng;
    let bytes: [u8; 16] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `s` looks like a slot id (32 lowercase hex digits), so it is safe as a file name.
pub fn is_slot_id(s: &str) -> bool {
    s.len() == 32
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> Signer {
        Signer::new(Arc::from(vec![7u8; 32]))
    }

    fn grant() -> PutGrant {
        PutGrant {
            slot: new_slot_id(),
            filename: "holiday photo.jpg".into(),
            owner: "alice@localhost".into(),
            size: 1234,
            content_type: "image/jpeg".into(),
            expires: 2_000_000_000,
        }
    }

    #[test]
    fn a_grant_verifies_and_any_change_breaks_it() {
        let s = signer();
        let g = grant();
        let sig = g.sign(&s);
        assert!(g.verify(&s, &sig));
        let mut bigger = g.clone();
        bigger.size += 1;
        assert!(!bigger.verify(&s, &sig));
        let mut other = g.clone();
        other.owner = "mallory@localhost".into();
        assert!(!other.verify(&s, &sig));
        let other_key = Signer::new(Arc::from(vec![8u8; 32]));
        assert!(!g.verify(&other_key, &sig));
    }

    #[test]
    fn length_prefixes_keep_part_boundaries() {
        let s = signer();
        assert_ne!(s.sign(&["ab", "c"]), s.sign(&["a", "bc"]));
    }

    #[test]
    fn file_names_that_are_paths_or_controls_are_refused() {
        for bad in ["", ".", "..", "a/b", "a\\b", "x\ny", &"n".repeat(256)] {
            assert_eq!(check_filename(bad), Err(SlotError::BadFilename), "{bad:?}");
        }
        assert_eq!(check_filename("résumé (1).pdf"), Ok(()));
    }

    #[test]
    fn urls_escape_the_name() {
        let g = grant();
        let url = g.path_and_query(&signer());
        assert!(url.contains("/holiday%20photo.jpg?"), "{url}");
        assert!(url.contains("owner=alice%40localhost"), "{url}");
        assert!(is_slot_id(&g.slot));
        assert!(!is_slot_id("../etc/passwd"));
    }
}
