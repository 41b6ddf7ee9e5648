//! TLS for the client side: the rustls configuration (aws-lc-rs provider) built from a
//! [`Trust`], the byte transport under the XML stream (TCP before STARTTLS, TLS after), and
//! the `tls-exporter` channel binding of RFC 9266 that SCRAM-PLUS signs.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::config::Trust;
use crate::error::ClientError;

/// ALPN protocol id for direct TLS (XEP-0368 §3).
const ALPN_XMPP_CLIENT: &[u8] = b"xmpp-client";
/// RFC 9266 §2: the exporter label of `tls-exporter`, 32 bytes, no context.
const EXPORTER_LABEL: &[u8] = b"EXPORTER-Channel-Binding";

/// A rustls client configuration for `trust`; with ALPN `xmpp-client` for direct TLS.
pub(crate) fn client_config(
    trust: &Trust,
    direct: bool,
) -> Result<Arc<rustls::ClientConfig>, ClientError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Tls(e.to_string()))?;
    let mut config = match trust {
        Trust::CaFile(path) => {
            let mut roots = rustls::RootCertStore::empty();
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| ClientError::Tls(format!("{}: {e}", path.display())))?;
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| ClientError::Tls(format!("{}: {e}", path.display())))?;
            }
            if roots.is_empty() {
                return Err(ClientError::Tls(format!(
                    "{}: no certificate in file",
                    path.display()
                )));
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        Trust::InsecureAcceptAny => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
            .with_no_client_auth(),
    };
    if direct {
        config.alpn_protocols = vec![ALPN_XMPP_CLIENT.to_vec()];
    }
    Ok(Arc::new(config))
}

/// The TLS server name for the JID's domain (SNI and certificate check, RFC 6125).
pub(crate) fn server_name(domain: &str) -> Result<ServerName<'static>, ClientError> {
    ServerName::try_from(domain.to_owned())
        .map_err(|e| ClientError::Config(format!("'{domain}' is not a TLS server name: {e}")))
}

/// Runs the TLS handshake over `tcp`.
pub(crate) async fn handshake(
    config: Arc<rustls::ClientConfig>,
    name: ServerName<'static>,
    tcp: TcpStream,
) -> Result<Transport, ClientError> {
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| ClientError::Tls(format!("handshake: {e}")))?;
    Ok(Transport::Tls(Box::new(tls)))
}

/// Accepts any certificate but still checks that the handshake is signed by the key in it.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// TCP, or TLS over TCP.
pub(crate) enum Transport {
    /// Before STARTTLS.
    Plain(TcpStream),
    /// Encrypted. Boxed: the TLS state is large.
    Tls(Box<TlsStream<TcpStream>>),
}

impl Transport {
    pub(crate) fn is_tls(&self) -> bool {
        matches!(self, Transport::Tls(_))
    }

    /// The `tls-exporter` channel-binding data (RFC 9266), when encrypted.
    pub(crate) fn tls_exporter(&self) -> Option<Vec<u8>> {
        match self {
            Transport::Tls(t) => t
                .get_ref()
                .1
                .export_keying_material([0u8; 32], EXPORTER_LABEL, None)
                .ok()
                .map(|k| k.to_vec()),
            Transport::Plain(_) => None,
        }
    }
}

impl AsyncRead for Transport {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Transport {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_flush(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
