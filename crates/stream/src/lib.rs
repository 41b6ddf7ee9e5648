//! An XML stream over any `AsyncRead + AsyncWrite`: bytes in through the proto crate's
//! [`Framer`] (restricted XML, limits), stanzas out through its writer.
//!
//! This is the "Connection" of mini-redis: it owns the socket's buffers and turns bytes into
//! [`StreamEvent`]s and elements into bytes; it knows nothing of SASL, binding or routing.
//! [`XmlStream::next_event`] is cancel-safe (it may sit in a `select!` next to a session's
//! outbound queue): bytes are only consumed once a read has completed.

use minidom::Element;
use starling_proto::error::StreamError;
use starling_proto::framer::{Framer, Limits, StreamEvent};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Bytes read from the socket per read call.
const READ_CHUNK: usize = 16 * 1024;

/// Why reading the next event failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The peer broke a stream rule: answer with this stream error and close.
    #[error("stream error: {}", .0.condition.name())]
    Stream(StreamError),
    /// The socket failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The peer closed the TCP connection without closing the stream.
    #[error("connection closed by peer")]
    Eof,
}

/// One XML stream on one transport.
pub struct XmlStream<T> {
    io: T,
    framer: Framer,
    read_buf: Box<[u8]>,
    write_buf: Vec<u8>,
    /// Total bytes received, for rate limits and metrics.
    bytes_in: u64,
}

impl<T: AsyncRead + AsyncWrite + Unpin> XmlStream<T> {
    /// Wraps a transport with the given parser limits.
    pub fn new(io: T, limits: Limits) -> XmlStream<T> {
        XmlStream {
            io,
            framer: Framer::new(limits),
            read_buf: vec![0; READ_CHUNK].into_boxed_slice(),
            write_buf: Vec::with_capacity(4096),
            bytes_in: 0,
        }
    }

    /// Reads until the framer yields an event. Cancel-safe.
    pub async fn next_event(&mut self) -> Result<StreamEvent, ReadError> {
        loop {
            match self.framer.next_event() {
                Ok(Some(ev)) => return Ok(ev),
                Ok(None) => {}
                Err(e) => return Err(ReadError::Stream(e)),
            }
            let n = self.io.read(&mut self.read_buf).await?;
            if n == 0 {
                return Err(ReadError::Eof);
            }
            self.bytes_in += n as u64;
            self.framer.feed(&self.read_buf[..n]);
        }
    }

    /// Appends an element to the output buffer (written by [`XmlStream::flush`]).
    pub fn queue(&mut self, el: &Element) {
        starling_proto::writer::write_element(el, &mut self.write_buf);
    }

    /// Appends raw, already-serialised XML (stream headers, the closing tag).
    pub fn queue_raw(&mut self, xml: &str) {
        self.write_buf.extend_from_slice(xml.as_bytes());
    }

    /// Whether output is waiting to be flushed.
    pub fn has_pending_output(&self) -> bool {
        !self.write_buf.is_empty()
    }

    /// Writes and flushes everything queued.
    pub async fn flush(&mut self) -> std::io::Result<()> {
        if !self.write_buf.is_empty() {
            self.io.write_all(&self.write_buf).await?;
            self.write_buf.clear();
            if self.write_buf.capacity() > 64 * 1024 {
                self.write_buf.shrink_to(4096);
            }
        }
        self.io.flush().await
    }

    /// Queues and flushes one element.
    pub async fn send(&mut self, el: &Element) -> std::io::Result<()> {
        self.queue(el);
        self.flush().await
    }

    /// Stream restart (RFC 6120 §4.3.3): forget parser state; the peer sends a new header.
    pub fn restart(&mut self) {
        self.framer.reset();
    }

    /// Bytes received so far.
    pub fn bytes_in(&self) -> u64 {
        self.bytes_in
    }

    /// Bytes received but not yet parsed. STARTTLS requires none to be pending.
    pub fn buffered(&self) -> usize {
        self.framer.buffered()
    }

    /// The transport, for TLS state (channel binding, peer certificates).
    pub fn get_ref(&self) -> &T {
        &self.io
    }

    /// Gives the transport back (to wrap it in TLS after STARTTLS).
    pub fn into_inner(self) -> T {
        self.io
    }

    /// Shuts the write side down after the closing tag was sent.
    pub async fn shutdown(&mut self) {
        let _ = self.flush().await;
        let _ = self.io.shutdown().await;
    }
}
