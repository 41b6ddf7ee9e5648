//! What can go wrong on a client connection, said from the client's side: the network or TLS
//! failed ([`ClientError::Io`], [`ClientError::Tls`], [`ClientError::Timeout`]), the server
//! answered "no" in a way the protocol defines ([`ClientError::Stream`], [`ClientError::Sasl`],
//! [`ClientError::Bind`], [`ClientError::Closed`]), the server broke the protocol
//! ([`ClientError::Protocol`]), or the caller asked for something impossible
//! ([`ClientError::Config`]).

use starling_proto::error::{StanzaError, StreamError};
use starling_stream::ReadError;

/// Errors of [`Client`](crate::Client).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket failed, or the peer dropped TCP without closing the stream.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// TLS could not be set up: bad trust file, handshake failure, untrusted certificate,
    /// STARTTLS refused.
    #[error("tls: {0}")]
    Tls(String),
    /// The server ended the stream with a stream error (RFC 6120 §4.9).
    #[error("stream error from the server: {0}")]
    Stream(StreamError),
    /// The server closed its stream (`</stream:stream>`) without an error.
    #[error("the server closed the stream")]
    Closed,
    /// SASL failed; the RFC 6120 §6.5 condition the server sent, such as `not-authorized`.
    #[error("authentication failed: {0}")]
    Sasl(String),
    /// Resource binding was refused (RFC 6120 §7.6.2), e.g. `conflict`.
    #[error("resource binding failed: {}", .0.condition.name())]
    Bind(StanzaError),
    /// The server broke the protocol: malformed XML, an unexpected element, a SCRAM
    /// signature that does not verify (it does not know our credentials).
    #[error("protocol: {0}")]
    Protocol(String),
    /// An operation did not finish in time.
    #[error("timed out {0}")]
    Timeout(&'static str),
    /// The configuration cannot work (a JID without a localpart, no usable mechanism).
    #[error("configuration: {0}")]
    Config(String),
}

impl From<ReadError> for ClientError {
    fn from(e: ReadError) -> ClientError {
        match e {
            ReadError::Stream(e) => ClientError::Protocol(format!("server sent bad XML: {e}")),
            ReadError::Io(e) => ClientError::Io(e),
            ReadError::Eof => ClientError::Io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed without closing the stream",
            )),
        }
    }
}
