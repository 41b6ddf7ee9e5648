//! The byte transport under a server stream: plain TCP before STARTTLS, then TLS as the
//! accepting side (inbound) or the connecting side (outbound).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use rustls::pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// TCP, or TLS over TCP in either role.
pub enum Transport {
    /// Not (yet) encrypted.
    Plain(TcpStream),
    /// We accepted the TLS connection.
    Accepted(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    /// We opened the TLS connection.
    Connected(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Transport {
    /// Whether the transport is encrypted.
    pub fn is_tls(&self) -> bool {
        !matches!(self, Transport::Plain(_))
    }

    /// The certificate chain the peer showed, end entity first (empty when none).
    pub fn peer_certificates(&self) -> Vec<CertificateDer<'static>> {
        let certs = match self {
            Transport::Plain(_) => None,
            Transport::Accepted(t) => t.get_ref().1.peer_certificates(),
            Transport::Connected(t) => t.get_ref().1.peer_certificates(),
        };
        certs
            .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
            .unwrap_or_default()
    }
}

macro_rules! each {
    ($self:expr, $s:ident => $e:expr) => {
        match $self.get_mut() {
            Transport::Plain($s) => {
                let $s = Pin::new($s);
                $e
            }
            Transport::Accepted($s) => {
                let $s = Pin::new($s.as_mut());
                $e
            }
            Transport::Connected($s) => {
                let $s = Pin::new($s.as_mut());
                $e
            }
        }
    };
}

impl AsyncRead for Transport {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        each!(self, s => s.poll_read(cx, buf))
    }
}

impl AsyncWrite for Transport {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        each!(self, s => s.poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self, s => s.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self, s => s.poll_shutdown(cx))
    }
}
