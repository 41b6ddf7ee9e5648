//! A SCRAM SaltedPassword cache shared by the connections of one process.
//!
//! PBKDF2 with the server's iteration count is the dearest step of a SCRAM login for the
//! client (4096 rounds by default). Real clients (Conversations, Gajim, Dino) store the
//! SaltedPassword after the first login and skip PBKDF2 while the server keeps sending the
//! same salt and iteration count; RFC 5802 §5.1 allows it. This cache does the same for the
//! connections of one process, which is what the load generator needs to measure the
//! server's side of a login rather than its own hashing.
//!
//! An entry is stored only after the server's signature was verified, is keyed by account,
//! hash and password (a changed password never reuses an old entry), and is used only when
//! the server sends the same salt and iteration count again. At most [`MAX_ENTRIES`] are
//! kept; the cache starts over when full.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use starling_sasl::ScramHash;

/// Accounts whose SaltedPassword is kept.
pub const MAX_ENTRIES: usize = 1_000_000;

#[derive(Clone, PartialEq, Eq, Hash)]
struct Key {
    username: String,
    hash: ScramHash,
    password: String,
}

#[derive(Clone)]
struct Entry {
    salt: Vec<u8>,
    iterations: u32,
    salted: Vec<u8>,
}

/// Cached SaltedPasswords; cloning shares the cache.
#[derive(Clone, Default)]
pub struct SaltedPasswordCache {
    entries: Arc<Mutex<HashMap<Key, Entry>>>,
}

impl SaltedPasswordCache {
    /// An empty cache.
    pub fn new() -> SaltedPasswordCache {
        SaltedPasswordCache::default()
    }

    /// The (salt, iterations, SaltedPassword) stored for this account and password.
    pub fn get(
        &self,
        username: &str,
        hash: ScramHash,
        password: &str,
    ) -> Option<(Vec<u8>, u32, Vec<u8>)> {
        let key = Key {
            username: username.to_owned(),
            hash,
            password: password.to_owned(),
        };
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(&key)
            .map(|e| (e.salt.clone(), e.iterations, e.salted.clone()))
    }

    /// Stores what a verified login computed (or what a client kept from an earlier run).
    pub fn insert(
        &self,
        username: &str,
        hash: ScramHash,
        password: &str,
        (salt, iterations, salted): (&[u8], u32, &[u8]),
    ) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= MAX_ENTRIES {
            entries.clear();
        }
        entries.insert(
            Key {
                username: username.to_owned(),
                hash,
                password: password.to_owned(),
            },
            Entry {
                salt: salt.to_vec(),
                iterations,
                salted: salted.to_vec(),
            },
        );
    }

    /// Accounts cached.
    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl std::fmt::Debug for SaltedPasswordCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SaltedPasswordCache({} accounts)", self.len())
    }
}
