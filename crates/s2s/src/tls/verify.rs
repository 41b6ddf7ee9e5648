//! Is this certificate chain good for that domain? PKIX path validation to the configured
//! trust roots and the RFC 6125 identity check, done by rustls' WebPKI verifier: a DNS-ID
//! (subjectAltName dNSName, wildcards in the left-most label) must match the peer's domain.
//! The same check serves both directions: the certificate an outbound peer shows as server,
//! and the one an inbound peer shows as client — both are the peer's server certificate, so
//! the serverAuth purpose is what we ask for (public CAs no longer issue clientAuth).
//!
//! Not done: SRV-ID (id-on-dnsSRV) and XmppAddr identities, which WebPKI does not read;
//! certificates carrying only those are treated as not valid for the domain (dialback may
//! still authenticate the peer where the policy allows it).

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::ServerCertVerifier;
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::RootCertStore;

use super::TlsError;

/// The system bundle used when no trust roots are configured.
pub const SYSTEM_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Checks peer certificates against trust roots and domains.
#[derive(Clone)]
pub struct PeerVerifier {
    /// `None` when there are no trust roots at all: nothing verifies.
    inner: Option<Arc<WebPkiServerVerifier>>,
}

/// Why a certificate chain is not good for a domain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The peer showed no certificate.
    #[error("no certificate")]
    NoCertificate,
    /// No trust roots are configured.
    #[error("no trust roots configured")]
    NoTrustRoots,
    /// The domain is not a DNS name.
    #[error("'{0}' is not a DNS name")]
    BadDomain(String),
    /// WebPKI refused the chain or the identity.
    #[error("{0}")]
    Invalid(String),
}

impl PeerVerifier {
    /// Trust roots from a PEM file, or the system bundle when `path` is `None` (none at all
    /// when that does not exist either).
    pub fn load(path: Option<&Path>) -> Result<PeerVerifier, TlsError> {
        let certs = match path {
            Some(p) => super::load_certs(p)?,
            None if Path::new(SYSTEM_BUNDLE).exists() => {
                super::load_certs(Path::new(SYSTEM_BUNDLE))?
            }
            None => {
                tracing::warn!("no s2s trust roots: no peer certificate will verify");
                return Ok(PeerVerifier { inner: None });
            }
        };
        PeerVerifier::from_roots(certs)
    }

    /// Trust roots given as DER certificates.
    pub fn from_roots(roots: Vec<CertificateDer<'static>>) -> Result<PeerVerifier, TlsError> {
        let mut store = RootCertStore::empty();
        let (added, ignored) = store.add_parsable_certificates(roots);
        if ignored > 0 {
            tracing::warn!(ignored, "some s2s trust roots could not be parsed");
        }
        if added == 0 {
            return Ok(PeerVerifier { inner: None });
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider)
            .build()
            .map_err(|e| TlsError::Pem {
                path: "trust roots".into(),
                message: e.to_string(),
            })?;
        Ok(PeerVerifier { inner: Some(inner) })
    }

    /// Whether `chain` (end entity first) is valid for `domain` now.
    pub fn verify(&self, chain: &[CertificateDer<'_>], domain: &str) -> Result<(), VerifyError> {
        let Some((end_entity, intermediates)) = chain.split_first() else {
            return Err(VerifyError::NoCertificate);
        };
        let Some(inner) = &self.inner else {
            return Err(VerifyError::NoTrustRoots);
        };
        let name = ServerName::try_from(domain.to_owned())
            .map_err(|_| VerifyError::BadDomain(domain.to_owned()))?;
        if matches!(name, ServerName::IpAddress(_)) {
            return Err(VerifyError::BadDomain(domain.to_owned()));
        }
        inner
            .verify_server_cert(end_entity, intermediates, &name, &[], UnixTime::now())
            .map(|_| ())
            .map_err(|e| VerifyError::Invalid(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    };

    fn ca() -> (CertificateDer<'static>, Issuer<'static, KeyPair>) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        (cert.der().clone(), Issuer::new(params, key))
    }

    fn leaf(issuer: &Issuer<'static, KeyPair>, names: &[&str]) -> CertificateDer<'static> {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.signed_by(&key, issuer).unwrap().der().clone()
    }

    #[test]
    fn dns_id_and_chain_are_checked() {
        let (root, issuer) = ca();
        let (_, other_issuer) = ca();
        let v = PeerVerifier::from_roots(vec![root]).unwrap();
        let good = leaf(&issuer, &["b.test"]);
        assert_eq!(v.verify(std::slice::from_ref(&good), "b.test"), Ok(()));
        // RFC 6125: the DNS-ID must match the domain.
        assert!(matches!(
            v.verify(std::slice::from_ref(&good), "c.test"),
            Err(VerifyError::Invalid(_))
        ));
        // Wildcards cover one label.
        let wild = leaf(&issuer, &["*.example.test"]);
        assert_eq!(
            v.verify(std::slice::from_ref(&wild), "x.example.test"),
            Ok(())
        );
        assert!(v
            .verify(std::slice::from_ref(&wild), "example.test")
            .is_err());
        // Another CA's certificate has no path to our roots.
        let stranger = leaf(&other_issuer, &["b.test"]);
        assert!(matches!(
            v.verify(&[stranger], "b.test"),
            Err(VerifyError::Invalid(_))
        ));
        assert_eq!(v.verify(&[], "b.test"), Err(VerifyError::NoCertificate));
        let none = PeerVerifier::from_roots(Vec::new()).unwrap();
        assert_eq!(
            none.verify(&[good], "b.test"),
            Err(VerifyError::NoTrustRoots)
        );
    }
}
