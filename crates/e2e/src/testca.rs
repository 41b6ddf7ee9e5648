//! A local certification authority for tests and for trying RFC 3923 out: it issues
//! end-entity certificates whose subjectAltName carries the forms RFC 3923 §6 describes,
//! `im:` and `pres:` URIs (uniformResourceIdentifier) and an id-on-xmppAddr otherName
//! (OID 1.3.6.1.5.5.7.8.5, RFC 6120 §13.7.1.4), with the S/MIME key usage and extended key
//! usage (RFC 8550 §4.4) that `openssl cms -verify` checks. Everything comes back as PEM.
//!
//! Certificates are built by `rcgen` without a crypto provider of its own: the signatures
//! come from RustCrypto RSA keys through `rcgen::SigningKey`, so neither ring nor aws-lc is
//! pulled in. RSA-2048 with SHA-256 throughout.

use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyUsagePurpose, OtherNameValue, SanType, SerialNumber,
};
use rsa::pkcs1::EncodeRsaPublicKey;
use rsa::pkcs8::{EncodePrivateKey, LineEnding};
use rsa::PrivateKey;
use signature::{SignatureEncoding, Signer};
use time::OffsetDateTime;
use x509_cert::Certificate;

use crate::certs::{self, Credential};
use crate::error::{E2eError, Result};

/// id-on-xmppAddr as rcgen wants it.
const XMPP_ADDR_ARCS: [u64; 9] = [1, 3, 6, 1, 5, 5, 7, 8, 5];

/// An RSA key that rcgen can sign with.
struct RsaSigner {
    signing: rsa::pkcs1v15::SigningKey<sha2::Sha256>,
    /// RSAPublicKey DER, the subjectPublicKey bits rcgen writes.
    public_der: Vec<u8>,
}

impl RsaSigner {
    fn new(key: &PrivateKey) -> Result<RsaSigner> {
        let public_der = key
            .to_public_key()
            .to_pkcs1_der()
            .map_err(|e| E2eError::Build(e.to_string()))?
            .as_bytes()
            .to_vec();
        Ok(RsaSigner {
            signing: rsa::pkcs1v15::SigningKey::new(key.clone()),
            public_der,
        })
    }
}

impl rcgen::PublicKeyData for RsaSigner {
    fn der_bytes(&self) -> &[u8] {
        &self.public_der
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_RSA_SHA256
    }
}

impl rcgen::SigningKey for RsaSigner {
    fn sign(&self, msg: &[u8]) -> std::result::Result<Vec<u8>, rcgen::Error> {
        self.signing
            .try_sign(msg)
            .map(|s| s.to_vec())
            .map_err(|_| rcgen::Error::RemoteKeyError)
    }
}

/// A freshly generated RSA-2048 key.
pub fn generate_key() -> Result<PrivateKey> {
    PrivateKey::new(&mut rand::rng(), 2048).map_err(|e| E2eError::Build(e.to_string()))
}

fn key_pem(key: &PrivateKey) -> Result<String> {
    Ok(key
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| E2eError::Build(e.to_string()))?
        .to_string())
}

fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    SerialNumber::from(bytes.to_vec())
}

/// A local CA.
pub struct TestCa {
    issuer: Issuer<'static, RsaSigner>,
    certificate_pem: String,
    certificate: Certificate,
}

/// An end-entity certificate request: whose addresses go into subjectAltName, and when the
/// certificate is valid.
#[derive(Debug, Clone)]
pub struct EndEntity {
    /// The bare JID, e.g. `alice@example.com`.
    pub jid: String,
    /// Add `im:` and `pres:` URIs.
    pub uris: bool,
    /// Add an id-on-xmppAddr otherName.
    pub xmpp_addr: bool,
    /// Start of validity.
    pub not_before: SystemTime,
    /// End of validity.
    pub not_after: SystemTime,
}

impl EndEntity {
    /// Both address forms, valid from a day ago for a year.
    pub fn new(jid: &str) -> EndEntity {
        let now = SystemTime::now();
        EndEntity {
            jid: jid.to_string(),
            uris: true,
            xmpp_addr: true,
            not_before: now - Duration::from_secs(86_400),
            not_after: now + Duration::from_secs(365 * 86_400),
        }
    }
}

/// What [`TestCa::issue`] returns: PEM texts and the parsed credential.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The end-entity certificate.
    pub certificate_pem: String,
    /// Its private key, PKCS#8.
    pub key_pem: String,
    /// The same, parsed.
    pub credential: Credential,
}

impl TestCa {
    /// A new self-signed CA with a fresh key, valid from a day ago for ten years.
    pub fn new(common_name: &str) -> Result<TestCa> {
        let key = generate_key()?;
        let signer = RsaSigner::new(&key)?;
        let now = SystemTime::now();
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = OffsetDateTime::from(now - Duration::from_secs(86_400));
        params.not_after = OffsetDateTime::from(now + Duration::from_secs(3650 * 86_400));
        params.serial_number = Some(random_serial());
        let cert = params
            .self_signed(&signer)
            .map_err(|e| E2eError::Build(e.to_string()))?;
        let certificate_pem = cert.pem();
        let certificate = certs::certificate_from_bytes(cert.der())?;
        Ok(TestCa {
            issuer: Issuer::new(params, signer),
            certificate_pem,
            certificate,
        })
    }

    /// The CA certificate as PEM (what `openssl cms -verify -CAfile` wants).
    pub fn certificate_pem(&self) -> &str {
        &self.certificate_pem
    }

    /// The CA certificate.
    pub fn certificate(&self) -> &Certificate {
        &self.certificate
    }

    /// Issues a certificate for `jid` with both address forms and a fresh key.
    pub fn issue(&self, jid: &str) -> Result<Issued> {
        self.issue_with(&EndEntity::new(jid))
    }

    /// Issues a certificate as `request` describes, with a fresh key.
    pub fn issue_with(&self, request: &EndEntity) -> Result<Issued> {
        let key = generate_key()?;
        let subject = RsaSigner::new(&key)?;
        let ia5 = |s: String| {
            rcgen::string::Ia5String::try_from(s).map_err(|e| E2eError::Build(e.to_string()))
        };
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, request.jid.as_str());
        if request.uris {
            params
                .subject_alt_names
                .push(SanType::URI(ia5(format!("im:{}", request.jid))?));
            params
                .subject_alt_names
                .push(SanType::URI(ia5(format!("pres:{}", request.jid))?));
        }
        if request.xmpp_addr {
            params.subject_alt_names.push(SanType::OtherName((
                XMPP_ADDR_ARCS.to_vec(),
                OtherNameValue::Utf8String(request.jid.clone()),
            )));
        }
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::ContentCommitment,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::EmailProtection];
        params.not_before = OffsetDateTime::from(request.not_before);
        params.not_after = OffsetDateTime::from(request.not_after);
        params.serial_number = Some(random_serial());
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(&subject, &self.issuer)
            .map_err(|e| E2eError::Build(e.to_string()))?;
        let certificate = certs::certificate_from_bytes(cert.der())?;
        Ok(Issued {
            certificate_pem: cert.pem(),
            key_pem: key_pem(&key)?,
            credential: Credential::new(vec![certificate], key)?,
        })
    }
}
