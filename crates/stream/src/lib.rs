//! An XML stream over any `AsyncRead + AsyncWrite`: bytes in through the proto crate's
//! [`Framer`] (restricted XML, limits), stanzas out through its writer.
//!
//! This is the "Connection" of mini-redis: it owns the socket's buffers and turns bytes into
//! [`StreamEvent`]s and elements into bytes; it knows nothing of SASL, binding or routing.
//! [`XmlStream::next_event`] is cancel-safe (it may sit in a `select!` next to a session's
//! outbound queue): bytes are only consumed once a read has completed.
//!
//! Reading may be paced by token buckets for bytes and stanzas ([`RateLimits`], see
//! [`rate`]): when one is empty the stream waits before reading on, which is backpressure on
//! the peer. Only a peer that stays over a limit for longer than
//! [`RateLimits::disconnect_after`] gets an error: `policy-violation`.

pub mod rate;

pub use rate::RateLimits;

use minidom::Element;
use starling_proto::error::StreamError;
use starling_proto::framer::{Framer, Limits, StreamEvent};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use std::cell::Cell;

use starling_proto::spare;

use crate::rate::TokenBucket;

/// Bytes one read may take. Reads land in a buffer of this size per thread ([`SCRATCH`]),
/// not per stream: a read is a poll that either completes at once, its bytes handed to the
/// framer in the same poll, or returns pending holding nothing. Most of a session's life is
/// spent idle in a read, and a buffer per stream was 1-16 KiB of every idle session.
const READ_LEN: usize = 16 * 1024;

thread_local! {
    /// Where reads land on this thread; see [`READ_LEN`].
    static SCRATCH: std::cell::RefCell<Box<[u8]>> =
        std::cell::RefCell::new(vec![0; READ_LEN].into_boxed_slice());
}
/// A paced stream logs that it hit its rate limit at most this often.
const THROTTLE_LOG_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

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

/// What the output buffer is allocated with when a write finds it freed and this thread has
/// no spare: a chat message and its stream-management request fit.
const FIRST_WRITE: usize = 512;

/// The largest output buffer a thread keeps as its spare; a larger one is freed.
const SPARE_MAX: usize = 64 * 1024;

thread_local! {
    /// An emptied output buffer, kept for the next stream on this thread that writes: a
    /// busy stream's buffer goes here at each flush and comes back at its next write, so
    /// freeing buffers of idle streams costs no allocation per message.
    static SPARE: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// One XML stream on one transport.
pub struct XmlStream<T> {
    io: T,
    framer: Framer,
    /// Output waiting for [`XmlStream::flush`]. Allocated by the first write after a flush and
    /// freed by the flush that empties it, so an idle stream holds none (issue 7: it was
    /// about 600 bytes per idle session, the capacity its last writes grew it to).
    write_buf: Vec<u8>,
    /// How much of `write_buf` has been written: a cancelled [`XmlStream::flush`] resumes
    /// there instead of writing the start again.
    written: usize,
    /// Total bytes received, for rate limits and metrics.
    bytes_in: u64,
    /// Paces reading by bytes, when limited.
    byte_bucket: Option<TokenBucket>,
    /// Paces reading by stanzas, when limited.
    stanza_bucket: Option<TokenBucket>,
    /// Who is on the other end, for the rate-limit log line.
    peer_label: String,
    /// When the rate-limit log line was last written.
    last_throttle_log: Option<Instant>,
    /// How many times reading was paused by a bucket (for tests and metrics).
    pauses: u64,
    /// A peer over a limit this long is disconnected.
    disconnect_after: Option<std::time::Duration>,
    /// Whether the last read took [`READ_LEN`] bytes (more input was probably waiting).
    last_read_filled: bool,
}

/// Which bucket a wait is for.
#[derive(Clone, Copy)]
enum Bucket {
    Bytes,
    Stanzas,
}

impl<T: AsyncRead + AsyncWrite + Unpin> XmlStream<T> {
    /// Wraps a transport with the given parser limits.
    pub fn new(io: T, limits: Limits) -> XmlStream<T> {
        XmlStream {
            io,
            framer: Framer::new(limits),
            write_buf: Vec::new(),
            written: 0,
            bytes_in: 0,
            byte_bucket: None,
            stanza_bucket: None,
            peer_label: String::new(),
            last_throttle_log: None,
            pauses: 0,
            disconnect_after: None,
            last_read_filled: false,
        }
    }

    /// Paces reading from now on (full buckets); `peer` names the peer in the log line
    /// written when a limit is hit.
    pub fn set_rate_limits(&mut self, limits: RateLimits, peer: impl Into<String>) {
        self.byte_bucket = limits.bytes.map(|(r, b)| TokenBucket::new(r, b));
        self.stanza_bucket = limits.stanzas.map(|(r, b)| TokenBucket::new(r, b));
        self.disconnect_after = limits.disconnect_after;
        self.peer_label = peer.into();
    }

    /// How many times reading was paused because a rate limit was reached.
    pub fn rate_limit_pauses(&self) -> u64 {
        self.pauses
    }

    /// Reads until the framer yields an event. Cancel-safe: a wait for a bucket to refill
    /// changes no state, and bytes are consumed only once a read has completed.
    pub async fn next_event(&mut self) -> Result<StreamEvent, ReadError> {
        loop {
            self.pace(Bucket::Stanzas).await?;
            match self.framer.next_event() {
                Ok(Some(ev)) => {
                    if let (StreamEvent::Stanza(_), Some(b)) = (&ev, &mut self.stanza_bucket) {
                        b.take(1);
                    }
                    return Ok(ev);
                }
                Ok(None) => {}
                Err(e) => return Err(ReadError::Stream(e)),
            }
            self.pace(Bucket::Bytes).await?;
            if !self.last_read_filled {
                // The last read drained the socket, so this one is likely to wait: an idle
                // stream should not hold the parser's scratch buffers meanwhile (8 KiB of an
                // idle session's ~40, heaptrack). A busy stream, whose reads fill the buffer,
                // keeps them.
                self.framer.release_temporaries();
            }
            let n = std::future::poll_fn(|cx| self.poll_read_into_framer(cx)).await?;
            self.last_read_filled = n == READ_LEN;
            if n == 0 {
                return Err(ReadError::Eof);
            }
            self.bytes_in += n as u64;
            if let Some(b) = &mut self.byte_bucket {
                b.take(n as u64);
            }
        }
    }

    /// One read into this thread's [`SCRATCH`], fed to the framer before the poll returns;
    /// the bytes read (0 at end of file). Pending holds no buffer and consumed nothing.
    fn poll_read_into_framer(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<usize>> {
        SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            let mut buf = tokio::io::ReadBuf::new(&mut scratch[..]);
            match std::pin::Pin::new(&mut self.io).poll_read(cx, &mut buf) {
                std::task::Poll::Ready(Ok(())) => {
                    let read = buf.filled();
                    self.framer.feed(read);
                    std::task::Poll::Ready(Ok(read.len()))
                }
                std::task::Poll::Ready(Err(e)) => std::task::Poll::Ready(Err(e)),
                std::task::Poll::Pending => std::task::Poll::Pending,
            }
        })
    }

    /// Waits until `which` bucket is no longer empty (at once when it is not limited). Err:
    /// the peer has been over the limit for longer than `disconnect_after`.
    async fn pace(&mut self, which: Bucket) -> Result<(), ReadError> {
        let bucket = match which {
            Bucket::Bytes => &mut self.byte_bucket,
            Bucket::Stanzas => &mut self.stanza_bucket,
        };
        let Some(bucket) = bucket.as_mut() else {
            return Ok(());
        };
        let wait = bucket.wait_time();
        if wait.is_zero() {
            return Ok(());
        }
        let limit_name = match which {
            Bucket::Bytes => "bytes per second",
            Bucket::Stanzas => "stanzas per second",
        };
        if let Some(max) = self.disconnect_after {
            let over = bucket.over_for();
            if over >= max {
                tracing::warn!(
                    peer = %self.peer_label,
                    limit = limit_name,
                    over_secs = over.as_secs(),
                    "over the inbound rate limit for too long; closing with policy-violation"
                );
                return Err(ReadError::Stream(StreamError::with_text(
                    starling_proto::error::StreamErrorCondition::PolicyViolation,
                    format!("over the {limit_name} limit for {} s", over.as_secs()),
                )));
            }
        }
        self.pauses += 1;
        let now = Instant::now();
        if self
            .last_throttle_log
            .is_none_or(|t| now.duration_since(t) >= THROTTLE_LOG_INTERVAL)
        {
            self.last_throttle_log = Some(now);
            tracing::info!(
                peer = %self.peer_label,
                limit = limit_name,
                pause_ms = wait.as_millis() as u64,
                "inbound rate limit reached; pausing reads (logged at most once a minute)"
            );
        }
        tokio::time::sleep(wait).await;
        Ok(())
    }

    /// The output buffer, allocated with room for a typical stanza if a flush freed it (one
    /// allocation rather than a string of doublings from nothing).
    fn out(&mut self) -> &mut Vec<u8> {
        if self.write_buf.capacity() == 0 {
            self.write_buf = spare::take(&SPARE);
            if self.write_buf.capacity() == 0 {
                self.write_buf.reserve(FIRST_WRITE);
            }
        }
        &mut self.write_buf
    }

    /// Appends an element to the output buffer (written by [`XmlStream::flush`]).
    pub fn queue(&mut self, el: &Element) {
        starling_proto::writer::write_element(el, self.out());
    }

    /// Lets `write` append already-serialised XML to the output buffer (a stanza serialised
    /// once for many streams, [`starling_proto::writer::write_attribute`]).
    pub fn queue_with(&mut self, write: impl FnOnce(&mut Vec<u8>)) {
        write(self.out());
    }

    /// Appends raw, already-serialised XML (stream headers, the closing tag).
    pub fn queue_raw(&mut self, xml: &str) {
        self.out().extend_from_slice(xml.as_bytes());
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
            // Given up, not kept: an idle stream holds no output buffer. It becomes this
            // thread's spare unless the thread has one (or it is oversized).
            let buf = std::mem::take(&mut self.write_buf);
            self.written = 0;
            spare::give_up_to(&SPARE, buf, SPARE_MAX);
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
    use std::time::Duration;
    use tokio::io::AsyncReadExt;

    const HEADER: &str =
        "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>";

    /// A stream over an in-memory pipe of `buffer` bytes, its header already read; and the
    /// peer's end.
    async fn opened(
        buffer: usize,
    ) -> (XmlStream<tokio::io::DuplexStream>, tokio::io::DuplexStream) {
        use tokio::io::AsyncWriteExt;
        let (ours, mut theirs) = tokio::io::duplex(buffer);
        let mut stream = XmlStream::new(ours, Limits::default());
        theirs.write_all(HEADER.as_bytes()).await.unwrap();
        assert!(matches!(
            stream.next_event().await,
            Ok(StreamEvent::Open(_))
        ));
        (stream, theirs)
    }

    /// The peer sends `<iq id='{id}'/>`; the stream reads that stanza next.
    async fn echo_iq(
        stream: &mut XmlStream<tokio::io::DuplexStream>,
        theirs: &mut tokio::io::DuplexStream,
        id: &str,
    ) {
        use tokio::io::AsyncWriteExt;
        theirs
            .write_all(format!("<iq id='{id}'/>").as_bytes())
            .await
            .unwrap();
        let Ok(StreamEvent::Stanza(el)) = stream.next_event().await else {
            panic!("stanza {id} missing");
        };
        assert_eq!(el.attr("id"), Some(id));
    }

    /// Stanzas over the stanza rate are read later, none is lost, and the order holds.
    #[tokio::test(start_paused = true)]
    async fn reading_is_paced_by_the_stanza_bucket_and_nothing_is_lost() {
        let (ours, mut theirs) = tokio::io::duplex(1 << 20);
        let mut stream = XmlStream::new(ours, Limits::default());
        stream.set_rate_limits(RateLimits::from_config(0, 0, 10, 5), "test");
        let mut input = String::from(HEADER);
        for i in 0..25 {
            input.push_str(&format!("<message id='m{i}'/>"));
        }
        use tokio::io::AsyncWriteExt;
        theirs.write_all(input.as_bytes()).await.unwrap();
        let start = Instant::now();
        assert!(matches!(
            stream.next_event().await,
            Ok(StreamEvent::Open(_))
        ));
        for i in 0..25 {
            match stream.next_event().await {
                Ok(StreamEvent::Stanza(el)) => assert_eq!(el.attr("id"), Some(&*format!("m{i}"))),
                other => panic!("{other:?}"),
            }
        }
        // A burst of 5, then 20 more at 10 per second: about two seconds.
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(1900), "{took:?}");
        assert!(took <= Duration::from_millis(2500), "{took:?}");
        assert!(stream.rate_limit_pauses() >= 10);
    }

    /// The byte bucket paces reads: 64 KiB at 16 KiB/s with a 16 KiB burst takes ~3 s.
    #[tokio::test(start_paused = true)]
    async fn reading_is_paced_by_the_byte_bucket() {
        let (ours, mut theirs) = tokio::io::duplex(1 << 20);
        let mut stream = XmlStream::new(ours, Limits::default());
        stream.set_rate_limits(RateLimits::from_config(16 * 1024, 16 * 1024, 0, 0), "test");
        let body = "x".repeat(64 * 1024);
        let input = format!(
            "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>\
             <message><body>{body}</body></message>"
        );
        use tokio::io::AsyncWriteExt;
        theirs.write_all(input.as_bytes()).await.unwrap();
        let start = Instant::now();
        assert!(matches!(
            stream.next_event().await,
            Ok(StreamEvent::Open(_))
        ));
        assert!(matches!(
            stream.next_event().await,
            Ok(StreamEvent::Stanza(_))
        ));
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(2900), "{took:?}");
        assert!(took <= Duration::from_millis(4500), "{took:?}");
    }

    /// A peer that keeps the byte bucket empty for longer than `disconnect_after` gets
    /// `policy-violation`; the same input under a longer allowance is only paced.
    #[tokio::test(start_paused = true)]
    async fn a_peer_over_the_byte_rate_for_too_long_is_cut_off() {
        for (allowed_secs, cut) in [(1, true), (10, false)] {
            let (ours, mut theirs) = tokio::io::duplex(1 << 20);
            let mut stream = XmlStream::new(ours, Limits::default());
            stream.set_rate_limits(
                RateLimits::from_config(16 * 1024, 16 * 1024, 0, 0)
                    .disconnect_after_secs(allowed_secs),
                "test",
            );
            let body = "x".repeat(64 * 1024);
            let input = format!(
                "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>\
                 <message><body>{body}</body></message>"
            );
            use tokio::io::AsyncWriteExt;
            theirs.write_all(input.as_bytes()).await.unwrap();
            assert!(matches!(
                stream.next_event().await,
                Ok(StreamEvent::Open(_))
            ));
            match stream.next_event().await {
                Err(ReadError::Stream(e)) if cut => {
                    assert_eq!(e.condition.name(), "policy-violation");
                }
                Ok(StreamEvent::Stanza(_)) if !cut => {}
                other => panic!("allowed {allowed_secs} s: {other:?}"),
            }
        }
    }

    /// Reads land in the thread's scratch buffer, so a stream holds none: a 200 KiB burst (16
    /// KiB reads) and then a trickle of small stanzas all arrive whole and in order, and the
    /// stream itself stays the size of its fields.
    #[tokio::test]
    async fn reads_go_through_the_thread_scratch_buffer() {
        use tokio::io::AsyncWriteExt;
        let (mut stream, mut theirs) = opened(1 << 20).await;
        let burst: String = (0..2000)
            .map(|i| {
                format!(
                    "<message id='b{i}'><body>{}</body></message>",
                    "x".repeat(60)
                )
            })
            .collect();
        theirs.write_all(burst.as_bytes()).await.unwrap();
        for i in 0..2000 {
            let Ok(StreamEvent::Stanza(el)) = stream.next_event().await else {
                panic!("stanza {i} missing");
            };
            assert_eq!(el.attr("id"), Some(format!("b{i}").as_str()));
        }
        assert_eq!(stream.bytes_in, (HEADER.len() + burst.len()) as u64);
        for i in 0..20 {
            echo_iq(&mut stream, &mut theirs, &format!("s{i}")).await;
        }
        assert!(!stream.last_read_filled);
        assert!(
            std::mem::size_of::<XmlStream<tokio::io::DuplexStream>>() < 1024,
            "{}",
            std::mem::size_of::<XmlStream<tokio::io::DuplexStream>>()
        );
    }

    /// A read that waits holds nothing and consumes nothing: cancelled (as a `select!` does
    /// when the outbound queue wins), the next read still gets every byte.
    #[tokio::test]
    async fn a_cancelled_read_loses_nothing() {
        let (mut stream, mut theirs) = opened(1 << 16).await;
        for i in 0..5 {
            let waited =
                tokio::time::timeout(std::time::Duration::from_millis(5), stream.next_event())
                    .await;
            assert!(waited.is_err(), "nothing was sent yet");
            echo_iq(&mut stream, &mut theirs, &format!("c{i}")).await;
        }
    }

    /// Without limits nothing waits.
    #[tokio::test(start_paused = true)]
    async fn unlimited_streams_never_pause() {
        let (ours, mut theirs) = tokio::io::duplex(1 << 20);
        let mut stream = XmlStream::new(ours, Limits::default());
        let mut input = String::from(HEADER);
        input.push_str(&"<message/>".repeat(1000));
        use tokio::io::AsyncWriteExt;
        theirs.write_all(input.as_bytes()).await.unwrap();
        let start = Instant::now();
        for _ in 0..1001 {
            stream.next_event().await.unwrap();
        }
        assert_eq!(start.elapsed(), Duration::ZERO);
        assert_eq!(stream.rate_limit_pauses(), 0);
    }

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

    /// A flush that wrote everything frees the output buffer: an idle stream holds none. The
    /// next write allocates it again and loses nothing.
    #[tokio::test]
    async fn an_idle_stream_holds_no_output_buffer() {
        let (mut stream, mut theirs) = opened(64 * 1024).await;
        assert_eq!(stream.write_buf.capacity(), 0, "nothing written yet");
        let big: String = (0..300).map(|i| format!("<m{}/>", i % 10)).collect();
        stream.queue_raw(&big);
        let grown = stream.write_buf.capacity();
        assert!(grown >= big.len());
        stream.flush().await.unwrap();
        assert_eq!(stream.write_buf.capacity(), 0, "given up by the flush");
        // The next write on this thread takes the buffer back from the thread's spare.
        stream.queue_raw("<a/>");
        assert_eq!(
            stream.write_buf.capacity(),
            grown,
            "the spare, not a new allocation"
        );
        stream.flush().await.unwrap();
        assert_eq!(stream.write_buf.capacity(), 0);
        // With the spare taken by another stream, a write allocates a small buffer.
        let spare = spare::take(&SPARE);
        assert_eq!(spare.capacity(), grown);
        stream.queue_raw("<b/>");
        assert_eq!(stream.write_buf.capacity(), FIRST_WRITE);
        stream.flush().await.unwrap();
        let mut got = vec![0u8; big.len() + 8];
        theirs.read_exact(&mut got).await.unwrap();
        assert_eq!(String::from_utf8(got).unwrap(), format!("{big}<a/><b/>"));
    }
}
