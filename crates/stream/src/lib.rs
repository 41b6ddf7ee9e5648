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
    /// How much of `write_buf` has been written: a cancelled [`XmlStream::flush`] resumes
    /// there instead of writing the start again.
    written: usize,
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
            written: 0,
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

    /// Writes and flushes everything queued. Cancel-safe: a flush abandoned while the peer
    /// is not reading (a slow consumer raced against its close signal) leaves the unwritten
    /// rest queued, and the next flush continues exactly where it stopped.
    pub async fn flush(&mut self) -> std::io::Result<()> {
        if !self.write_buf.is_empty() {
            while self.written < self.write_buf.len() {
                let n = self.io.write(&self.write_buf[self.written..]).await?;
                if n == 0 {
                    return Err(std::io::ErrorKind::WriteZero.into());
                }
                self.written += n;
            }
            self.write_buf.clear();
            self.written = 0;
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// A flush abandoned half-way (the peer stopped reading) resumes where it stopped: every
    /// byte arrives exactly once.
    #[tokio::test]
    async fn an_abandoned_flush_resumes_without_repeating_bytes() {
        let (ours, mut theirs) = tokio::io::duplex(1024);
        let mut stream = XmlStream::new(ours, Limits::default());
        let payload: String = (0..2000).map(|i| format!("<m{}/>", i % 10)).collect();
        stream.queue_raw(&payload);
        let abandoned =
            tokio::time::timeout(std::time::Duration::from_millis(20), stream.flush()).await;
        assert!(
            abandoned.is_err(),
            "the duplex buffer is smaller than the payload"
        );
        stream.queue_raw("<end/>");
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            theirs.read_to_end(&mut got).await.unwrap();
            got
        });
        stream.shutdown().await;
        drop(stream);
        let got = reader.await.unwrap();
        assert_eq!(String::from_utf8(got).unwrap(), format!("{payload}<end/>"));
    }
}
