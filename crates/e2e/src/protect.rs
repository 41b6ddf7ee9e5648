//! The whole sender and receiver procedures of RFC 3923 §3–6: sign, encrypt or
//! sign-then-encrypt a content entity (§6: "if both, sign first"), and open what arrives:
//! decrypt, verify, match the signer to the sender, check the timestamp, in that order.

use std::time::SystemTime;

use x509_cert::Certificate;

use crate::algs::DigestAlg;
use crate::certs::{Credential, TrustAnchors};
use crate::envelope::{self, ContentCipher, KeyTransport};
use crate::error::{E2eError, Result};
use crate::freshness::{self, ReplayGuard, TimestampPolicy};
use crate::mime::{self, Entity};
use crate::sign::{self, Verified, VerifyOptions};

/// What a sender applies. With neither a signer nor recipients, [`protect`] refuses.
#[derive(Debug, Clone)]
pub struct Protection<'a> {
    /// Sign with this credential first.
    pub signer: Option<&'a Credential>,
    /// Digest for the signature (never SHA-1).
    pub digest: DigestAlg,
    /// Encrypt to these certificates (include your own to read your sent copy).
    pub recipients: &'a [Certificate],
    /// Content cipher when encrypting.
    pub cipher: ContentCipher,
    /// Key transport when encrypting.
    pub transport: KeyTransport,
}

impl<'a> Protection<'a> {
    /// Sign only, SHA-256.
    pub fn signed(signer: &'a Credential) -> Protection<'a> {
        Protection {
            signer: Some(signer),
            digest: DigestAlg::Sha256,
            recipients: &[],
            cipher: ContentCipher::Aes128Cbc,
            transport: KeyTransport::RsaPkcs1v15,
        }
    }

    /// Sign with SHA-256, then encrypt with AES-128-CBC and PKCS#1 v1.5 key transport: the
    /// combination every RFC 3923 peer can read.
    pub fn signed_and_encrypted(
        signer: &'a Credential,
        recipients: &'a [Certificate],
    ) -> Protection<'a> {
        Protection {
            recipients,
            ..Protection::signed(signer)
        }
    }
}

/// Protects a content entity (a Message/CPIM or PIDF MIME entity) and returns the S/MIME
/// object to put in `<e2e/>`.
pub fn protect(content: &[u8], protection: &Protection<'_>) -> Result<Vec<u8>> {
    let mut object = mime::canonicalize(content);
    if let Some(signer) = protection.signer {
        object = sign::sign(&object, signer, protection.digest)?;
    }
    if !protection.recipients.is_empty() {
        object = envelope::encrypt(
            &object,
            protection.recipients,
            protection.cipher,
            protection.transport,
        )?;
    }
    if protection.signer.is_none() && protection.recipients.is_empty() {
        return Err(E2eError::Build(
            "neither signing nor encryption requested".into(),
        ));
    }
    Ok(object)
}

/// What a receiver knows and requires.
#[derive(Debug, Clone, Copy)]
pub struct Receiver<'a> {
    /// Our credential, to decrypt; `None` means every encrypted object fails to decrypt.
    pub credential: Option<&'a Credential>,
    /// CAs trusted for signer certificates.
    pub anchors: &'a TrustAnchors,
    /// Certificates of correspondents known out of band.
    pub known_certificates: &'a [Certificate],
    /// Reject content that is not signed (RFC 3923 defines no condition for this; it is
    /// reported as `unverified-signature`).
    pub require_signature: bool,
    /// Accept SHA-1 signatures (legacy RFC 3923 peers).
    pub allow_sha1: bool,
    /// The §6 window; `None` skips the timestamp checks.
    pub timestamps: Option<TimestampPolicy>,
}

/// An opened S/MIME object.
#[derive(Debug, Clone)]
pub struct Opened {
    /// The innermost content entity (Message/CPIM or PIDF), canonical CRLF.
    pub content: Vec<u8>,
    /// The verified signature, if the object was signed.
    pub signature: Option<Verified>,
    /// Whether an encryption layer was removed.
    pub was_encrypted: bool,
    /// The protected timestamp, when the checks ran.
    pub timestamp: Option<SystemTime>,
}

/// Opens an S/MIME object from `sender` (the stanza's `from`): decrypts, verifies, checks
/// the signer's identity and, if the receiver asks for it, the timestamp against `now` and
/// the sender's `guard`. Each failure is an [`E2eError`] whose
/// [`condition`](E2eError::condition) is the §7 answer.
pub fn open(
    object: &[u8],
    sender: &str,
    receiver: &Receiver<'_>,
    now: SystemTime,
    guard: Option<&mut ReplayGuard>,
) -> Result<Opened> {
    let mut current = mime::canonicalize(object);
    let mut was_encrypted = false;
    let mut signature = None;
    // Layers: at most encryption around a signature (or the reverse); a deeper nest is hostile.
    for _ in 0..4 {
        let entity = Entity::parse(&current)?;
        if envelope::is_encrypted(&entity) {
            let credential = receiver.credential.ok_or(E2eError::NoRecipient)?;
            current = envelope::decrypt(&current, credential)?;
            was_encrypted = true;
        } else if sign::is_signed(&entity) {
            if signature.is_some() {
                return Err(E2eError::MalformedSigned("nested signatures".into()));
            }
            let verified = sign::verify(
                &current,
                &VerifyOptions {
                    anchors: receiver.anchors,
                    sender,
                    now,
                    allow_sha1: receiver.allow_sha1,
                    known_certificates: receiver.known_certificates,
                },
            )?;
            current = verified.content.clone();
            signature = Some(verified);
        } else {
            if receiver.require_signature && signature.is_none() {
                return Err(E2eError::MalformedSigned("content is not signed".into()));
            }
            let timestamp = match receiver.timestamps {
                Some(policy) => {
                    let stamp = freshness::content_timestamp(&current)?;
                    match guard {
                        Some(guard) => guard.check(&policy, stamp, now)?,
                        None => policy.check_window(stamp, now)?,
                    }
                    Some(stamp)
                }
                None => None,
            };
            return Ok(Opened {
                content: current,
                signature,
                was_encrypted,
                timestamp,
            });
        }
    }
    Err(E2eError::MalformedPayload("too many S/MIME layers".into()))
}
