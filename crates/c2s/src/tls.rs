//! TLS for client streams: the rustls server configuration (aws-lc-rs provider) shared by the
//! STARTTLS and direct-TLS listeners, and the channel-binding data SCRAM-PLUS needs.
//!
//! Channel bindings: `tls-exporter` (RFC 9266, 32 bytes of keying material exported with the
//! label `EXPORTER-Channel-Binding` and no context) and `tls-server-end-point` (RFC 5929 §4.1,
//! a hash of our certificate: SHA-256 unless the certificate is signed with SHA-384/512, in
//! which case that hash). `tls-unique` is not offered: it is undefined under TLS 1.3.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::Digest;
use starling_sasl::{ChannelBinding, ChannelBindingType};

use crate::tls_stream::{ExporterCapture, ServerTls};

/// ALPN protocol id for direct TLS client connections (XEP-0368).
pub const ALPN_XMPP_CLIENT: &[u8] = b"xmpp-client";

/// Everything TLS-related a listener needs.
#[derive(Clone)]
pub struct TlsSettings {
    /// The rustls configuration.
    pub config: Arc<rustls::ServerConfig>,
    /// `tls-server-end-point` binding data for our certificate.
    pub end_point_hash: Vec<u8>,
}

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate file could not be read or parsed.
    #[error("certificate {path}: {message}")]
    Certificate { path: String, message: String },
    /// The key file could not be read or parsed.
    #[error("private key {path}: {message}")]
    Key { path: String, message: String },
    /// rustls refused the pair.
    #[error("tls: {0}")]
    Rustls(#[from] rustls::Error),
}

impl TlsSettings {
    /// Loads a PEM certificate chain and key.
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<TlsSettings, TlsError> {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| TlsError::Certificate {
                path: cert.display().to_string(),
                message: e.to_string(),
            })?;
        if certs.is_empty() {
            return Err(TlsError::Certificate {
                path: cert.display().to_string(),
                message: "no certificate in file".into(),
            });
        }
        let key = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key {
            path: key.display().to_string(),
            message: e.to_string(),
        })?;
        TlsSettings::new(certs, key)
    }

    /// Builds the settings from DER values.
    pub fn new(
        certs: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<TlsSettings, TlsError> {
        let end_point_hash = end_point_hash(&certs[0]);
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(certs, key)?;
        config.alpn_protocols = vec![ALPN_XMPP_CLIENT.to_vec()];
        // Gives ServerTls the TLS 1.3 exporter secret it derives `tls-exporter` from; it logs
        // nothing anywhere.
        config.key_log = Arc::new(ExporterCapture);
        Ok(TlsSettings {
            config: Arc::new(config),
            end_point_hash,
        })
    }
}

/// RFC 5929 §4.1: hash the certificate with its signature's hash, SHA-256 for MD5/SHA-1.
fn end_point_hash(cert: &CertificateDer<'_>) -> Vec<u8> {
    // DER encodings of the signature algorithm OIDs that use a stronger hash than SHA-256.
    const SHA384_OIDS: [&[u8]; 2] = [
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c], // sha384WithRSAEncryption
        &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03],       // ecdsa-with-SHA384
    ];
    const SHA512_OIDS: [&[u8]; 2] = [
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d], // sha512WithRSAEncryption
        &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x04],       // ecdsa-with-SHA512
    ];
    let der = cert.as_ref();
    // The outer signatureAlgorithm sits right before the signature at the end of the
    // certificate; looking in the last 600 bytes finds it without a full X.509 parser.
    let tail = &der[der.len().saturating_sub(600)..];
    let contains = |oid: &[u8]| tail.windows(oid.len()).any(|w| w == oid);
    if SHA512_OIDS.iter().any(|o| contains(o)) {
        sha2::Sha512::digest(der).to_vec()
    } else if SHA384_OIDS.iter().any(|o| contains(o)) {
        sha2::Sha384::digest(der).to_vec()
    } else {
        sha2::Sha256::digest(der).to_vec()
    }
}

/// The channel bindings of an established server-side TLS connection.
pub fn channel_bindings(tls: &ServerTls, end_point_hash: &[u8]) -> Vec<ChannelBinding> {
    let mut out = Vec::with_capacity(2);
    if let Some(ekm) = tls.tls_exporter() {
        out.push(ChannelBinding {
            kind: ChannelBindingType::TlsExporter,
            data: ekm.to_vec(),
        });
    }
    out.push(ChannelBinding {
        kind: ChannelBindingType::TlsServerEndPoint,
        data: end_point_hash.to_vec(),
    });
    out
}
