//! Fuzz target for the SCRAM parsers of `starling_sasl` (RFC 5802, RFC 7677): the server's
//! client-first and client-final parsing and the client's server-first and server-final
//! parsing, fed hostile bytes at every step. No panic; a forged exchange never succeeds.
//!
//! Input layout: byte 0 picks the mechanism (SHA-1/SHA-256, with or without -PLUS) and the
//! step to fuzz; the rest is split at the first 0xFF byte into two messages.
#![no_main]

use libfuzzer_sys::fuzz_target;
use starling_sasl::{
    derive_credentials, ChannelBinding, ChannelBindingType, Mechanism, ScramClient, ScramHash,
    ServerSession, Step,
};

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, rest)) = data.split_first() else {
        return;
    };
    let (first, second) = match rest.iter().position(|&b| b == 0xFF) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };
    let (mech, hash) = match ctl & 3 {
        0 => (Mechanism::ScramSha1, ScramHash::Sha1),
        1 => (Mechanism::ScramSha256, ScramHash::Sha256),
        2 => (Mechanism::ScramSha1Plus, ScramHash::Sha1),
        _ => (Mechanism::ScramSha256Plus, ScramHash::Sha256),
    };
    let binding = ChannelBinding {
        kind: ChannelBindingType::TlsExporter,
        data: vec![7; 32],
    };
    let creds = credentials(hash);
    if ctl & 4 == 0 {
        // Server side: hostile client-first, then hostile client-final.
        let mut server = ServerSession::with_nonce(mech, vec![binding], true, "fixed");
        match server.step(first) {
            Ok(Step::NeedCredentials { .. }) => {}
            // No initial response: the server asks for one with an empty challenge.
            Ok(Step::Challenge(c)) if first.is_empty() && c.is_empty() => return,
            Ok(other) => panic!("client-first gave {other:?}"),
            Err(_) => return,
        }
        let creds = if ctl & 8 == 0 { Some(creds) } else { None };
        match server.provide_credentials(creds) {
            Ok(Step::Challenge(_)) => {}
            other => panic!("credentials gave {other:?}"),
        }
        // Without the password nobody can compute a proof: a fuzzed final never succeeds.
        match server.step(second) {
            Ok(Step::Success { .. }) => panic!("forged client-final succeeded"),
            Ok(_) | Err(_) => {}
        }
        // The session accepts nothing after a failure or a challenge it did not expect.
        let _ = server.step(second);
    } else {
        // Client side: hostile server-first, then hostile server-final.
        let cb = (mech.is_plus()).then_some(binding);
        let mut client = ScramClient::new(hash, "user", "pencil", cb, true);
        let _ = client.client_first();
        if client.handle_server_first(first).is_ok() {
            let _ = client.verify_server_final(second);
        }
    }
});

/// PBKDF2 with 4096 iterations costs milliseconds: derive each hash's credentials once.
fn credentials(hash: ScramHash) -> starling_sasl::ScramCredentials {
    static SHA1: std::sync::OnceLock<starling_sasl::ScramCredentials> = std::sync::OnceLock::new();
    static SHA256: std::sync::OnceLock<starling_sasl::ScramCredentials> =
        std::sync::OnceLock::new();
    let cell = match hash {
        ScramHash::Sha1 => &SHA1,
        _ => &SHA256,
    };
    cell.get_or_init(|| derive_credentials("pencil", hash, 4096, b"0123456789abcdef").unwrap())
        .clone()
}
