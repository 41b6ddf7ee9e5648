//! Certificates: our own credential (certificate chain + private key), the trust anchors a
//! receiver accepts, path validation (RFC 5280 §6.1, the subset we need: issuer/subject
//! chaining, signatures, validity periods, cA for intermediates) and the signer identity rule of
//! RFC 3923 §6: the sender's bare JID must be one of the addresses in the certificate's
//! subjectAltName, as an `im:`/`pres:` URI (RFC 3860/3859) or an id-on-xmppAddr otherName.
//!
//! Not here: revocation (CRL/OCSP), name constraints, policy processing, key usage bits.

use std::time::SystemTime;

use der::asn1::Utf8StringRef;
use der::{Decode, DecodePem, Encode};
use rsa::PrivateKey;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{BasicConstraints, SubjectAltName};
use x509_cert::Certificate;

use crate::algs::{self, SignatureCheck, ID_ON_XMPP_ADDR};
use crate::error::{E2eError, Result};

/// Longest chain we follow from the end-entity certificate to an anchor.
const MAX_CHAIN: usize = 8;

/// What we sign and decrypt with: our certificate (first), any intermediates, and our key.
#[derive(Clone)]
pub struct Credential {
    chain: Vec<Certificate>,
    key: PrivateKey,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("addresses", &xmpp_addresses(&self.chain[0]))
            .finish_non_exhaustive()
    }
}

impl Credential {
    /// From parsed parts; `chain` starts with the end-entity certificate.
    pub fn new(chain: Vec<Certificate>, key: PrivateKey) -> Result<Credential> {
        let leaf = chain
            .first()
            .ok_or_else(|| E2eError::Credential("empty certificate chain".into()))?;
        let public = algs::rsa_public_key(leaf.tbs_certificate().subject_public_key_info())
            .map_err(E2eError::Credential)?;
        if public != key.to_public_key() {
            return Err(E2eError::Credential(
                "key does not match certificate".into(),
            ));
        }
        Ok(Credential { chain, key })
    }

    /// From PEM: one or more `CERTIFICATE` blocks (end entity first) and an RSA key as
    /// PKCS#8 `PRIVATE KEY` or PKCS#1 `RSA PRIVATE KEY`.
    pub fn from_pem(certificates_pem: &str, key_pem: &str) -> Result<Credential> {
        let chain = certificates_from_pem(certificates_pem)?;
        Credential::new(chain, private_key_from_pem(key_pem)?)
    }

    /// Our end-entity certificate.
    pub fn certificate(&self) -> &Certificate {
        &self.chain[0]
    }

    /// End entity first, then intermediates.
    pub fn chain(&self) -> &[Certificate] {
        &self.chain
    }

    pub(crate) fn key(&self) -> &PrivateKey {
        &self.key
    }
}

/// Reads every `CERTIFICATE` block of a PEM text.
pub fn certificates_from_pem(pem: &str) -> Result<Vec<Certificate>> {
    let certs = Certificate::load_pem_chain(pem.as_bytes())
        .map_err(|e| E2eError::Credential(format!("certificate PEM: {e}")))?;
    if certs.is_empty() {
        return Err(E2eError::Credential("no certificate in PEM".into()));
    }
    Ok(certs)
}

/// Reads one certificate from DER or PEM.
pub fn certificate_from_bytes(bytes: &[u8]) -> Result<Certificate> {
    Certificate::from_der(bytes)
        .or_else(|_| Certificate::from_pem(bytes))
        .map_err(|e| E2eError::Credential(format!("certificate: {e}")))
}

/// Reads an RSA private key from PKCS#8 or PKCS#1 PEM.
pub fn private_key_from_pem(pem: &str) -> Result<PrivateKey> {
    use rsa::pkcs1::DecodeRsaPrivateKey;
    use rsa::pkcs8::DecodePrivateKey;
    PrivateKey::from_pkcs8_pem(pem)
        .or_else(|_| PrivateKey::from_pkcs1_pem(pem))
        .map_err(|e| E2eError::Credential(format!("private key: {e}")))
}

/// The certification authorities a receiver trusts for signer certificates.
#[derive(Debug, Clone, Default)]
pub struct TrustAnchors {
    anchors: Vec<Certificate>,
}

impl TrustAnchors {
    /// From already parsed certificates.
    pub fn new(anchors: Vec<Certificate>) -> TrustAnchors {
        TrustAnchors { anchors }
    }

    /// From one or more PEM `CERTIFICATE` blocks.
    pub fn from_pem(pem: &str) -> Result<TrustAnchors> {
        Ok(TrustAnchors::new(certificates_from_pem(pem)?))
    }

    /// Adds an anchor.
    pub fn add(&mut self, anchor: Certificate) {
        self.anchors.push(anchor);
    }

    /// Validates `leaf` at `now` through `intermediates` (untrusted, e.g. the SignedData
    /// certificate set) to one of the anchors.
    pub fn validate(
        &self,
        leaf: &Certificate,
        intermediates: &[Certificate],
        now: SystemTime,
        allow_sha1: bool,
    ) -> Result<()> {
        let untrusted = |why: String| E2eError::UntrustedSigner(why);
        let mut current = leaf.clone();
        for _ in 0..MAX_CHAIN {
            check_validity(&current, now).map_err(untrusted)?;
            if self.anchors.iter().any(|a| a == &current) {
                return Ok(());
            }
            let issuer_name = current.tbs_certificate().issuer().to_der().ok();
            let same_subject =
                |c: &&Certificate| c.tbs_certificate().subject().to_der().ok() == issuer_name;
            for anchor in self.anchors.iter().filter(same_subject) {
                if check_issued_by(&current, anchor, allow_sha1).is_ok() {
                    check_validity(anchor, now).map_err(untrusted)?;
                    return Ok(());
                }
            }
            let next = intermediates
                .iter()
                .filter(same_subject)
                .find(|c| {
                    *c != &current && is_ca(c) && check_issued_by(&current, c, allow_sha1).is_ok()
                })
                .cloned();
            match next {
                Some(next) => current = next,
                None => {
                    return Err(untrusted(
                        "no path to a trusted certification authority".into(),
                    ))
                }
            }
        }
        Err(untrusted("certificate chain too long".into()))
    }
}

fn check_validity(cert: &Certificate, now: SystemTime) -> std::result::Result<(), String> {
    let validity = cert.tbs_certificate().validity();
    if now < validity.not_before.to_system_time() {
        return Err("certificate not yet valid".into());
    }
    if now > validity.not_after.to_system_time() {
        return Err("certificate expired".into());
    }
    Ok(())
}

fn is_ca(cert: &Certificate) -> bool {
    matches!(
        cert.tbs_certificate().get_extension::<BasicConstraints>(),
        Ok(Some((_, BasicConstraints { ca: true, .. })))
    )
}

/// Checks `cert`'s signature with `issuer`'s public key.
fn check_issued_by(
    cert: &Certificate,
    issuer: &Certificate,
    allow_sha1: bool,
) -> std::result::Result<(), String> {
    let tbs = cert.tbs_certificate().to_der().map_err(|e| e.to_string())?;
    let signature = cert
        .signature()
        .as_bytes()
        .ok_or_else(|| "certificate signature has unused bits".to_string())?;
    algs::verify_rsa(
        issuer.tbs_certificate().subject_public_key_info(),
        cert.signature_algorithm(),
        None,
        allow_sha1,
        &tbs,
        signature,
    )
    .map_err(|e| match e {
        SignatureCheck::Unsupported(why) => why,
        SignatureCheck::Invalid => "certificate signature invalid".into(),
    })
}

/// The XMPP addresses a certificate's subjectAltName carries: `im:`/`pres:` URIs with the
/// scheme removed, and id-on-xmppAddr otherNames; deduplicated, in certificate order.
pub fn xmpp_addresses(cert: &Certificate) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let Ok(Some((_, SubjectAltName(names)))) =
        cert.tbs_certificate().get_extension::<SubjectAltName>()
    else {
        return out;
    };
    for name in names {
        let address = match name {
            GeneralName::UniformResourceIdentifier(uri) => {
                let uri = uri.as_str();
                let (scheme, rest) = uri.split_once(':').unwrap_or(("", uri));
                (scheme.eq_ignore_ascii_case("im") || scheme.eq_ignore_ascii_case("pres"))
                    .then(|| rest.to_string())
            }
            GeneralName::OtherName(other) if other.type_id == ID_ON_XMPP_ADDR => other
                .value
                .decode_as::<Utf8StringRef<'_>>()
                .ok()
                .map(|s| s.as_str().to_string()),
            _ => None,
        };
        if let Some(address) = address {
            if !out.contains(&address) {
                out.push(address);
            }
        }
    }
    out
}

/// The bare JID of a (possibly full) JID: everything before the first `/`.
pub fn bare_jid(jid: &str) -> &str {
    jid.split_once('/').map(|(bare, _)| bare).unwrap_or(jid)
}

/// RFC 3923 §6: the sender's bare JID must be an address of the signer certificate. Matching
/// ignores ASCII case (domains are case-insensitive and localparts are case-mapped by
/// PRECIS); the resource is ignored.
pub fn check_signer_identity(cert: &Certificate, sender: &str) -> Result<()> {
    let expected = bare_jid(sender);
    let found = xmpp_addresses(cert);
    if found.iter().any(|a| a.eq_ignore_ascii_case(expected)) {
        Ok(())
    } else {
        Err(E2eError::SignerMismatch {
            expected: expected.to_string(),
            found,
        })
    }
}
