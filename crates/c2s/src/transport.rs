//! The byte transport under a client stream: plain TCP before STARTTLS, TLS after it (or from
//! the first byte on a direct-TLS listener), or an in-process pipe from the HTTP front end
//! (WebSocket, BOSH) that translates its framing into an ordinary XMPP byte stream.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};
use tokio::net::TcpStream;

use crate::tls_stream::ServerTls;

/// TCP, or TLS over TCP.
pub enum Transport {
    /// Not (yet) encrypted.
    Plain(TcpStream),
    /// Encrypted. Boxed: the TLS state is large and most of a session's life is spent here.
    Tls(Box<ServerTls>),
    /// An in-process pipe from the HTTP front end (crates/http). The HTTP layer hands over
    /// only connections it deems confidential (HTTPS, or plaintext from a trusted loopback
    /// peer such as a TLS-terminating proxy), so the stream counts as secure: no STARTTLS
    /// (RFC 7395 §3.6 forbids it over WebSocket anyway), PLAIN allowed. There is no TLS
    /// state here, so no channel binding and no SCRAM-*-PLUS.
    Internal(DuplexStream),
}

impl Transport {
    /// Whether the transport is confidential (TLS, or the HTTP front end's pipe).
    pub fn is_tls(&self) -> bool {
        matches!(self, Transport::Tls(_) | Transport::Internal(_))
    }

    /// The TLS stream, when this stream itself runs TLS (what channel binding needs).
    pub fn tls(&self) -> Option<&ServerTls> {
        match self {
            Transport::Tls(t) => Some(t),
            Transport::Plain(_) | Transport::Internal(_) => None,
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
            Transport::Internal(s) => Pin::new(s).poll_read(cx, buf),
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
            Transport::Internal(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_flush(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Transport::Internal(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Transport::Internal(s) => Pin::new(s).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
            Transport::Internal(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Transport::Plain(s) => s.is_write_vectored(),
            Transport::Tls(s) => s.is_write_vectored(),
            Transport::Internal(s) => s.is_write_vectored(),
        }
    }
}
