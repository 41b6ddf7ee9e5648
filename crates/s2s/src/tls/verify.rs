//! Is this certificate chain good for that domain? Two separate questions:
//!
//! 1. **Path**: PKIX path validation to the configured trust roots (WebPKI, serverAuth
//!    purpose). The same check serves both directions: the certificate an outbound peer shows
//!    as server and the one an inbound peer shows as client are both the peer's server
//!    certificate, so serverAuth is what we ask for (public CAs no longer issue clientAuth).
//! 2. **Identity**, per RFC 6125 §6 as RFC 6120 §13.7.1.4 applies it to XMPP servers. The
//!    reference identifier is the peer's domain; the presented identifiers are, in the
//!    subjectAltName extension:
//!    - DNS-ID (`dNSName`): equal ignoring case, or a wildcard `*` that is the whole
//!      left-most label and stands for exactly one label (`*.example.org` covers
//!      `chat.example.org`, not `example.org` nor `a.b.example.org`); `*` anywhere else
//!      (`f*.example.org`, `chat.*.org`) and wildcards over fewer than two labels
//!      (`*.org`) match nothing;
//!    - SRV-ID (otherName `id-on-dnsSRV`, 1.3.6.1.5.5.7.8.7, IA5String): `_xmpp-server.`
//!      followed by the domain (RFC 6125 §6.5.1; other services such as `_xmpp-client` do not
//!      count), no wildcards;
//!    - XmppAddr (otherName `id-on-xmppAddr`, 1.3.6.1.5.5.7.8.5, UTF8String): the bare
//!      domain as a JID (RFC 6120 §13.7.1.4), no wildcards.
//!
//!    The subject's Common Name (CN-ID) is used only when the certificate has no
//!    subjectAltName extension at all (RFC 6125 §6.4.4: never when a SAN is present).
//!    Domains are compared in their A-label (punycode) form, ignoring case.

use std::path::Path;
use std::sync::Arc;

use der::asn1::{Ia5StringRef, Utf8StringRef};
use der::oid::ObjectIdentifier;
use der::Decode;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, TrustAnchor, UnixTime};
use rustls::RootCertStore;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::SubjectAltName;

use super::TlsError;

/// The system bundle used when no trust roots are configured.
pub const SYSTEM_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// `id-on-xmppAddr` (RFC 6120 §13.7.1.4).
const ID_ON_XMPPADDR: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.8.5");
/// `id-on-dnsSRV` (RFC 4985).
const ID_ON_DNSSRV: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.8.7");
/// `commonName` in the subject.
const CN: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.3");
/// The SRV service label an XMPP server's SRV-ID carries.
const SRV_SERVICE: &str = "_xmpp-server.";

/// Checks peer certificates against trust roots and domains.
#[derive(Clone)]
pub struct PeerVerifier {
    /// `None` when there are no trust roots at all: nothing verifies.
    roots: Option<Arc<Vec<TrustAnchor<'static>>>>,
    /// The signature algorithms path validation accepts (those of our TLS provider).
    algorithms: WebPkiSupportedAlgorithms,
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
    /// WebPKI refused the chain (untrusted issuer, expired, wrong purpose...).
    #[error("{0}")]
    Invalid(String),
    /// The chain is trusted but names other identities (RFC 6125).
    #[error("certificate is not valid for {0}")]
    WrongIdentity(String),
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
                return PeerVerifier::from_roots(Vec::new());
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
        let algorithms =
            rustls::crypto::aws_lc_rs::default_provider().signature_verification_algorithms;
        Ok(PeerVerifier {
            roots: (added > 0).then(|| Arc::new(store.roots)),
            algorithms,
        })
    }

    /// Whether `chain` (end entity first) is valid for `domain` now.
    pub fn verify(&self, chain: &[CertificateDer<'_>], domain: &str) -> Result<(), VerifyError> {
        let Some((end_entity, intermediates)) = chain.split_first() else {
            return Err(VerifyError::NoCertificate);
        };
        let Some(roots) = &self.roots else {
            return Err(VerifyError::NoTrustRoots);
        };
        let reference = reference_identifier(domain)?;
        let cert = webpki::EndEntityCert::try_from(end_entity)
            .map_err(|e| VerifyError::Invalid(e.to_string()))?;
        cert.verify_for_usage(
            self.algorithms.all,
            roots,
            intermediates,
            UnixTime::now(),
            webpki::KeyUsage::server_auth(),
            None,
            None,
        )
        .map_err(|e| VerifyError::Invalid(e.to_string()))?;
        let ids = Identities::parse(end_entity)?;
        if ids.matches(&reference) {
            Ok(())
        } else {
            Err(VerifyError::WrongIdentity(domain.to_owned()))
        }
    }
}

/// The domain as the identity check compares it: A-labels, lower case, no trailing dot.
fn reference_identifier(domain: &str) -> Result<String, VerifyError> {
    let bad = || VerifyError::BadDomain(domain.to_owned());
    let ascii = idna::domain_to_ascii(domain.trim_end_matches('.')).map_err(|_| bad())?;
    if ascii.is_empty() || ascii.parse::<std::net::IpAddr>().is_ok() || ascii.contains('*') {
        return Err(bad());
    }
    Ok(ascii)
}

/// The identities a certificate presents (RFC 6125 §1.8), normalised for comparison.
#[derive(Debug, Default)]
struct Identities {
    dns: Vec<String>,
    /// SRV-IDs for `_xmpp-server`, with the service label removed.
    srv: Vec<String>,
    xmpp: Vec<String>,
    /// Subject CNs; only consulted when there is no subjectAltName extension.
    cn: Vec<String>,
    has_san: bool,
}

impl Identities {
    fn parse(der: &[u8]) -> Result<Identities, VerifyError> {
        let cert = x509_cert::Certificate::from_der(der)
            .map_err(|e| VerifyError::Invalid(format!("unparsable certificate: {e}")))?;
        let tbs = cert.tbs_certificate();
        let mut ids = Identities::default();
        let san = tbs
            .get_extension::<SubjectAltName>()
            .map_err(|e| VerifyError::Invalid(format!("unparsable subjectAltName: {e}")))?;
        if let Some((_, SubjectAltName(names))) = san {
            ids.has_san = true;
            for name in names {
                match name {
                    GeneralName::DnsName(d) => ids.dns.push(d.as_str().to_ascii_lowercase()),
                    GeneralName::OtherName(o) if o.type_id == ID_ON_DNSSRV => {
                        let Ok(v) = Ia5StringRef::try_from(&o.value) else {
                            continue;
                        };
                        let v = v.as_str().to_ascii_lowercase();
                        if let Some(name) = v.strip_prefix(SRV_SERVICE) {
                            ids.srv.push(name.to_owned());
                        }
                    }
                    GeneralName::OtherName(o) if o.type_id == ID_ON_XMPPADDR => {
                        let Ok(v) = Utf8StringRef::try_from(&o.value) else {
                            continue;
                        };
                        // Only a bare domain names a server; user JIDs do not.
                        if v.as_str().contains(['@', '/']) {
                            continue;
                        }
                        if let Ok(a) = idna::domain_to_ascii(v.as_str()) {
                            ids.xmpp.push(a);
                        }
                    }
                    _ => {}
                }
            }
        }
        for atv in tbs.subject().iter() {
            if atv.oid != CN {
                continue;
            }
            let value = &atv.value;
            let text = Utf8StringRef::try_from(value)
                .map(|s| s.as_str().to_owned())
                .or_else(|_| Ia5StringRef::try_from(value).map(|s| s.as_str().to_owned()))
                .or_else(|_| {
                    der::asn1::PrintableStringRef::try_from(value).map(|s| s.as_str().to_owned())
                });
            if let Ok(t) = text {
                ids.cn.push(t.to_ascii_lowercase());
            }
        }
        Ok(ids)
    }

    /// RFC 6125 §6: does any presented identifier match `reference` (normalised)?
    fn matches(&self, reference: &str) -> bool {
        if self.has_san {
            self.dns.iter().any(|d| dns_id_matches(d, reference))
                || self
                    .srv
                    .iter()
                    .any(|s| s.trim_end_matches('.') == reference)
                || self.xmpp.iter().any(|x| x == reference)
        } else {
            self.cn.iter().any(|c| dns_id_matches(c, reference))
        }
    }
}

/// RFC 6125 §6.4.1–§6.4.3: exact match ignoring case, or a whole-label wildcard in the
/// left-most position standing for exactly one label, over at least two further labels.
fn dns_id_matches(presented: &str, reference: &str) -> bool {
    let presented = presented.trim_end_matches('.');
    match presented.strip_prefix("*.") {
        Some(rest) => {
            if rest.contains('*') || rest.split('.').count() < 2 {
                return false;
            }
            match reference.split_once('.') {
                Some((first, tail)) => !first.is_empty() && tail == rest,
                None => false,
            }
        }
        None => !presented.contains('*') && presented == reference,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, CustomExtension, DnType, ExtendedKeyUsagePurpose,
        IsCa, Issuer, KeyPair, SanType,
    };

    fn ca() -> (CertificateDer<'static>, Issuer<'static, KeyPair>) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        (cert.der().clone(), Issuer::new(params, key))
    }

    fn signed(issuer: &Issuer<'static, KeyPair>, mut params: CertificateParams) -> Vec<u8> {
        let key = KeyPair::generate().unwrap();
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.signed_by(&key, issuer).unwrap().der().to_vec()
    }

    fn leaf(issuer: &Issuer<'static, KeyPair>, names: &[&str]) -> CertificateDer<'static> {
        let params =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        signed(issuer, params).into()
    }

    /// DER: one tag-length-value (short and long lengths).
    fn tlv(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        match body.len() {
            n if n < 0x80 => out.push(n as u8),
            n if n < 0x100 => out.extend([0x81, n as u8]),
            n => out.extend([0x82, (n >> 8) as u8, n as u8]),
        }
        out.extend_from_slice(body);
        out
    }

    /// A subjectAltName holding one otherName `id-on-dnsSRV` (IA5String), which rcgen can
    /// only write as UTF8String.
    fn srv_id_extension(srv: &str) -> CustomExtension {
        // 1.3.6.1.5.5.7.8.7
        let oid = tlv(0x06, &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x08, 0x07]);
        let value = tlv(0xa0, &tlv(0x16, srv.as_bytes()));
        let other_name = tlv(0xa0, &[oid, value].concat());
        let general_names = tlv(0x30, &other_name);
        CustomExtension::from_oid_content(&[2, 5, 29, 17], general_names)
    }

    fn srv_leaf(issuer: &Issuer<'static, KeyPair>, srv: &str) -> CertificateDer<'static> {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.custom_extensions = vec![srv_id_extension(srv)];
        signed(issuer, params).into()
    }

    fn xmpp_leaf(issuer: &Issuer<'static, KeyPair>, addr: &str) -> CertificateDer<'static> {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = vec![SanType::OtherName((
            vec![1, 3, 6, 1, 5, 5, 7, 8, 5],
            addr.into(),
        ))];
        signed(issuer, params).into()
    }

    fn cn_leaf(
        issuer: &Issuer<'static, KeyPair>,
        cn: &str,
        sans: &[&str],
    ) -> CertificateDer<'static> {
        let mut params =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        signed(issuer, params).into()
    }

    fn ok(v: &PeerVerifier, cert: &CertificateDer<'static>, domain: &str) -> bool {
        v.verify(std::slice::from_ref(cert), domain).is_ok()
    }

    #[test]
    fn dns_id_and_chain_are_checked() {
        let (root, issuer) = ca();
        let (_, other_issuer) = ca();
        let v = PeerVerifier::from_roots(vec![root]).unwrap();
        let good = leaf(&issuer, &["b.test"]);
        assert_eq!(v.verify(std::slice::from_ref(&good), "b.test"), Ok(()));
        assert!(ok(&v, &good, "B.Test"));
        // RFC 6125: the DNS-ID must match the domain.
        assert_eq!(
            v.verify(std::slice::from_ref(&good), "c.test"),
            Err(VerifyError::WrongIdentity("c.test".into()))
        );
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

    #[test]
    fn wildcards_cover_exactly_the_left_most_label() {
        let (root, issuer) = ca();
        let v = PeerVerifier::from_roots(vec![root]).unwrap();
        let wild = leaf(&issuer, &["*.example.test"]);
        assert!(ok(&v, &wild, "x.example.test"));
        assert!(!ok(&v, &wild, "example.test"));
        assert!(!ok(&v, &wild, "a.b.example.test"));
        // The pure matcher, for shapes a CA (and rcgen) may refuse to issue.
        assert!(dns_id_matches("*.example.test", "chat.example.test"));
        assert!(!dns_id_matches("f*.example.test", "foo.example.test"));
        assert!(!dns_id_matches("chat.*.test", "chat.example.test"));
        assert!(!dns_id_matches("*.test", "example.test"));
        assert!(!dns_id_matches("*", "test"));
        assert!(!dns_id_matches("*.*.test", "a.b.test"));
        assert!(dns_id_matches("example.test.", "example.test"));
    }

    #[test]
    fn srv_id_for_xmpp_server_is_accepted() {
        let (root, issuer) = ca();
        let v = PeerVerifier::from_roots(vec![root]).unwrap();
        let srv = srv_leaf(&issuer, "_xmpp-server.example.test");
        assert!(ok(&v, &srv, "example.test"));
        assert!(!ok(&v, &srv, "other.test"));
        assert!(!ok(&v, &srv, "chat.example.test"));
        // Another service's SRV-ID does not name an XMPP server.
        let client = srv_leaf(&issuer, "_xmpp-client.example.test");
        assert!(!ok(&v, &client, "example.test"));
    }

    #[test]
    fn xmpp_addr_for_the_domain_is_accepted() {
        let (root, issuer) = ca();
        let v = PeerVerifier::from_roots(vec![root]).unwrap();
        let addr = xmpp_leaf(&issuer, "example.test");
        assert!(ok(&v, &addr, "example.test"));
        assert!(!ok(&v, &addr, "other.test"));
        // A user's address is not the server's identity.
        let user = xmpp_leaf(&issuer, "admin@example.test");
        assert!(!ok(&v, &user, "example.test"));
    }

    #[test]
    fn common_name_counts_only_without_subject_alt_names() {
        let (root, issuer) = ca();
        let v = PeerVerifier::from_roots(vec![root]).unwrap();
        let cn_only = cn_leaf(&issuer, "example.test", &[]);
        assert!(ok(&v, &cn_only, "example.test"));
        assert!(!ok(&v, &cn_only, "other.test"));
        // With a SAN present the CN is ignored (RFC 6125 §6.4.4).
        let cn_and_san = cn_leaf(&issuer, "example.test", &["other.test"]);
        assert!(!ok(&v, &cn_and_san, "example.test"));
        assert!(ok(&v, &cn_and_san, "other.test"));
    }
}
