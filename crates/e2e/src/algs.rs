//! Algorithm identifiers and the primitive operations behind them: digests (RFC 5754), RSA
//! PKCS#1 v1.5 signatures (RFC 3370 §3.2, RFC 8017 §8.2) and the OIDs RFC 3923 §6 and
//! RFC 8551 §2 name. Dispatch from an OID to RustCrypto happens here and nowhere else.

use const_oid::ObjectIdentifier;
use der::Encode;
use rsa::pkcs8::DecodePublicKey;
use rsa::{Pkcs1v15Sign, PublicKey};
use sha2::Digest;
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};

const fn oid(s: &str) -> ObjectIdentifier {
    ObjectIdentifier::new_unwrap(s)
}

pub(crate) const ID_DATA: ObjectIdentifier = oid("1.2.840.113549.1.7.1");
pub(crate) const ID_SIGNED_DATA: ObjectIdentifier = oid("1.2.840.113549.1.7.2");
pub(crate) const ID_ENVELOPED_DATA: ObjectIdentifier = oid("1.2.840.113549.1.7.3");
pub(crate) const ID_AUTH_ENVELOPED_DATA: ObjectIdentifier = oid("1.2.840.113549.1.9.16.1.23");
pub(crate) const ID_CONTENT_TYPE: ObjectIdentifier = oid("1.2.840.113549.1.9.3");
pub(crate) const ID_MESSAGE_DIGEST: ObjectIdentifier = oid("1.2.840.113549.1.9.4");
pub(crate) const ID_SMIME_CAPABILITIES: ObjectIdentifier = oid("1.2.840.113549.1.9.15");
pub(crate) const RSA_ENCRYPTION: ObjectIdentifier = oid("1.2.840.113549.1.1.1");
pub(crate) const RSAES_OAEP: ObjectIdentifier = oid("1.2.840.113549.1.1.7");
pub(crate) const ID_MGF1: ObjectIdentifier = oid("1.2.840.113549.1.1.8");
pub(crate) const SHA1_WITH_RSA: ObjectIdentifier = oid("1.2.840.113549.1.1.5");
pub(crate) const SHA256_WITH_RSA: ObjectIdentifier = oid("1.2.840.113549.1.1.11");
pub(crate) const SHA384_WITH_RSA: ObjectIdentifier = oid("1.2.840.113549.1.1.12");
pub(crate) const SHA512_WITH_RSA: ObjectIdentifier = oid("1.2.840.113549.1.1.13");
pub(crate) const ID_SHA1: ObjectIdentifier = oid("1.3.14.3.2.26");
pub(crate) const ID_SHA256: ObjectIdentifier = oid("2.16.840.1.101.3.4.2.1");
pub(crate) const ID_SHA384: ObjectIdentifier = oid("2.16.840.1.101.3.4.2.2");
pub(crate) const ID_SHA512: ObjectIdentifier = oid("2.16.840.1.101.3.4.2.3");
pub(crate) const AES128_CBC: ObjectIdentifier = oid("2.16.840.1.101.3.4.1.2");
pub(crate) const AES192_CBC: ObjectIdentifier = oid("2.16.840.1.101.3.4.1.22");
pub(crate) const AES256_CBC: ObjectIdentifier = oid("2.16.840.1.101.3.4.1.42");
pub(crate) const AES128_GCM: ObjectIdentifier = oid("2.16.840.1.101.3.4.1.6");
pub(crate) const AES256_GCM: ObjectIdentifier = oid("2.16.840.1.101.3.4.1.46");
pub(crate) const DES_EDE3_CBC: ObjectIdentifier = oid("1.2.840.113549.3.7");
/// id-on-xmppAddr (RFC 6120 §13.7.1.4, RFC 3920 §5.1.1): an otherName carrying a JID.
pub(crate) const ID_ON_XMPP_ADDR: ObjectIdentifier = oid("1.3.6.1.5.5.7.8.5");

/// A message digest usable in signatures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigestAlg {
    /// SHA-1: RFC 3923 §6's mandatory algorithm, historic under RFC 8551; verify-only, and only
    /// when the caller allows legacy algorithms.
    Sha1,
    /// SHA-256: our default (RFC 8551 §2.1 MUST).
    Sha256,
    /// SHA-384.
    Sha384,
    /// SHA-512 (RFC 8551 §2.1 MUST).
    Sha512,
}

impl DigestAlg {
    /// The `micalg` parameter value of `multipart/signed` (RFC 8551 §3.5.3.2).
    pub fn micalg(self) -> &'static str {
        match self {
            DigestAlg::Sha1 => "sha-1",
            DigestAlg::Sha256 => "sha-256",
            DigestAlg::Sha384 => "sha-384",
            DigestAlg::Sha512 => "sha-512",
        }
    }

    pub(crate) fn oid(self) -> ObjectIdentifier {
        match self {
            DigestAlg::Sha1 => ID_SHA1,
            DigestAlg::Sha256 => ID_SHA256,
            DigestAlg::Sha384 => ID_SHA384,
            DigestAlg::Sha512 => ID_SHA512,
        }
    }

    pub(crate) fn from_oid(oid: &ObjectIdentifier) -> Option<DigestAlg> {
        [
            DigestAlg::Sha1,
            DigestAlg::Sha256,
            DigestAlg::Sha384,
            DigestAlg::Sha512,
        ]
        .into_iter()
        .find(|d| d.oid() == *oid)
    }

    /// The digest named by a `sha*WithRSAEncryption` signature algorithm.
    pub(crate) fn from_rsa_signature_oid(oid: &ObjectIdentifier) -> Option<DigestAlg> {
        match *oid {
            SHA1_WITH_RSA => Some(DigestAlg::Sha1),
            SHA256_WITH_RSA => Some(DigestAlg::Sha256),
            SHA384_WITH_RSA => Some(DigestAlg::Sha384),
            SHA512_WITH_RSA => Some(DigestAlg::Sha512),
            _ => None,
        }
    }

    pub(crate) fn algorithm_identifier(self) -> AlgorithmIdentifierOwned {
        AlgorithmIdentifierOwned {
            oid: self.oid(),
            parameters: None,
        }
    }

    pub(crate) fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            DigestAlg::Sha1 => sha1::Sha1::digest(data).to_vec(),
            DigestAlg::Sha256 => sha2::Sha256::digest(data).to_vec(),
            DigestAlg::Sha384 => sha2::Sha384::digest(data).to_vec(),
            DigestAlg::Sha512 => sha2::Sha512::digest(data).to_vec(),
        }
    }

    fn pkcs1v15(self) -> Pkcs1v15Sign {
        match self {
            DigestAlg::Sha1 => Pkcs1v15Sign::new::<sha1::Sha1>(),
            DigestAlg::Sha256 => Pkcs1v15Sign::new::<sha2::Sha256>(),
            DigestAlg::Sha384 => Pkcs1v15Sign::new::<sha2::Sha384>(),
            DigestAlg::Sha512 => Pkcs1v15Sign::new::<sha2::Sha512>(),
        }
    }
}

/// Why a signature check failed: the algorithm is not one we verify, or the math said no.
#[derive(Debug)]
pub(crate) enum SignatureCheck {
    Unsupported(String),
    Invalid,
}

/// Verifies an RSA PKCS#1 v1.5 signature over `message`. `signature_alg` is either a
/// `sha*WithRSAEncryption` OID (certificates, and some CMS signers) or plain `rsaEncryption`,
/// in which case `digest_hint` (the CMS SignerInfo digestAlgorithm) names the hash.
pub(crate) fn verify_rsa(
    spki: &SubjectPublicKeyInfoOwned,
    signature_alg: &AlgorithmIdentifierOwned,
    digest_hint: Option<DigestAlg>,
    allow_sha1: bool,
    message: &[u8],
    signature: &[u8],
) -> Result<(), SignatureCheck> {
    let digest = match signature_alg.oid {
        RSA_ENCRYPTION => digest_hint,
        ref other => DigestAlg::from_rsa_signature_oid(other),
    }
    .ok_or_else(|| {
        SignatureCheck::Unsupported(format!("signature algorithm {}", signature_alg.oid))
    })?;
    if digest == DigestAlg::Sha1 && !allow_sha1 {
        return Err(SignatureCheck::Unsupported(
            "SHA-1 signatures are accepted only in legacy mode".into(),
        ));
    }
    let key = rsa_public_key(spki).map_err(SignatureCheck::Unsupported)?;
    key.verify(digest.pkcs1v15(), &digest.digest(message), signature)
        .map_err(|_| SignatureCheck::Invalid)
}

pub(crate) fn rsa_public_key(spki: &SubjectPublicKeyInfoOwned) -> Result<PublicKey, String> {
    if spki.algorithm.oid != RSA_ENCRYPTION {
        return Err(format!("public key algorithm {}", spki.algorithm.oid));
    }
    let der = spki.to_der().map_err(|e| e.to_string())?;
    PublicKey::from_public_key_der(&der).map_err(|e| e.to_string())
}
