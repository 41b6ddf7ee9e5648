//! TLS on client streams, on rustls' unbuffered API: a server-side TLS stream that holds no
//! buffer while it is idle.
//!
//! Why not tokio-rustls here: its `ServerConnection` keeps a 4 KiB record buffer for the
//! connection's whole life (rustls resizes it to 4 KiB before every read and never shrinks it
//! below that), the largest single part of an idle session (issue 7: heaptrack put it at
//! 4.1 KB of 13.8 KiB). Here a connection holds ciphertext only while a record is incomplete
//! or while the socket will not take more, and decrypted text only while the reader's buffer
//! was too small for it; reads and writes otherwise go through one buffer per thread.
//! Federation (crates/s2s) and the HTTP listener keep tokio-rustls: they hold few connections.
//!
//! Channel binding: the unbuffered API has no `export_keying_material`, so `tls-exporter`
//! (RFC 9266) is derived here (RFC 8446 §7.5) from the exporter secret that rustls gives its
//! key log during the handshake ([`ExporterCapture`], set on the c2s configuration). It is
//! computed once, when the handshake ends, and only the 32 bytes are kept. Under TLS 1.2 no
//! `tls-exporter` is offered (RFC 9266 §3 allows it there only with the extended master
//! secret, and the key log does not give the server random it needs); `tls-server-end-point`
//! still is.

use std::cell::{Cell, RefCell};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use rustls::crypto::tls13::{HkdfExpander, OkmBlock};
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{
    AppDataRecord, ConnectionState, EncodeError, EncryptError, UnbufferedStatus,
};
use rustls::{ServerConfig, SupportedCipherSuite};
use starling_proto::spare;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// The largest TLS record on the wire: header, 16 KiB of text and the most expansion allowed.
const RECORD_MAX: usize = 5 + 16 * 1024 + 256;

/// The most unprocessed ciphertext a connection may hold: rustls joins a handshake message of
/// up to 64 KiB in the caller's buffer, and a record may straddle its end.
const INCOMING_MAX: usize = 0xffff + 2 * RECORD_MAX;

/// Plaintext taken by one write; the ciphertext of one write is what a blocked socket leaves
/// queued in the connection.
const WRITE_CHUNK: usize = 64 * 1024;

/// Spare buffers larger than this are freed rather than kept for the thread.
const SPARE_MAX: usize = INCOMING_MAX + RECORD_MAX;

/// The label RFC 9266 exports the `tls-exporter` binding with.
const EXPORTER_LABEL: &[u8] = b"EXPORTER-Channel-Binding";

thread_local! {
    /// Where reads land while the connection has no partial record of its own.
    static IN_SPARE: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
    /// Where writes are encrypted while the socket takes everything at once.
    static OUT_SPARE: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
    /// Whether [`ExporterCapture`] should keep the next exporter secret: set around each call
    /// into a connection that is still handshaking, on the thread making the call.
    static CAPTURE_ARMED: Cell<bool> = const { Cell::new(false) };
    /// The exporter secret caught during the armed call.
    static CAPTURED: RefCell<Option<Vec<u8>>> = const { RefCell::new(None) };
}

/// A key log that keeps nothing but the TLS 1.3 exporter secret of the handshake being driven
/// on this thread, for [`ServerTls`] to derive `tls-exporter` from. It writes nothing anywhere;
/// connections not driven by [`ServerTls`] never arm it.
#[derive(Debug)]
pub struct ExporterCapture;

impl rustls::KeyLog for ExporterCapture {
    fn log(&self, label: &str, _client_random: &[u8], secret: &[u8]) {
        if label == "EXPORTER_SECRET" && CAPTURE_ARMED.with(Cell::get) {
            CAPTURED.with(|c| *c.borrow_mut() = Some(secret.to_vec()));
        }
    }

    fn will_log(&self, label: &str) -> bool {
        label == "EXPORTER_SECRET"
    }
}

/// What the state machine reached when it needs the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Nothing more can happen without more bytes from the peer.
    NeedRead,
    /// The peer sent close_notify (or both sides have closed).
    Closed,
}

/// What to do once the connection may carry application data.
enum Action<'a> {
    Encrypt(&'a [u8]),
    CloseNotify,
}

/// An exporter secret caught by [`ExporterCapture`], wiped when dropped.
struct Secret(Vec<u8>);

impl Drop for Secret {
    fn drop(&mut self) {
        self.0.fill(0);
    }
}

/// A server-side TLS stream over TCP. See the module documentation.
pub struct ServerTls {
    tcp: TcpStream,
    conn: UnbufferedServerConnection,
    /// Ciphertext read but not yet processed: an incomplete record, or a handshake message
    /// being joined. Unallocated when empty.
    incoming: Vec<u8>,
    /// Decrypted text the reader had no room for, from `plain_pos` on. Unallocated when empty.
    plain: Vec<u8>,
    plain_pos: usize,
    /// Ciphertext the socket has not taken yet, from `out_pos` on. Unallocated when empty.
    outgoing: Vec<u8>,
    out_pos: usize,
    /// RFC 9266 `tls-exporter` data (TLS 1.3 only).
    exporter: Option<Box<[u8; 32]>>,
    /// The peer closed: reads return end of file.
    read_closed: bool,
    /// Our close_notify is queued.
    close_sent: bool,
}

impl ServerTls {
    /// Runs the server side of a TLS handshake on `tcp`. Cancel by dropping the future (the
    /// callers bound it with the handshake timeout).
    pub async fn accept(tcp: TcpStream, config: Arc<ServerConfig>) -> io::Result<ServerTls> {
        let conn = UnbufferedServerConnection::new(config).map_err(tls_error)?;
        let mut s = ServerTls {
            tcp,
            conn,
            incoming: Vec::new(),
            plain: Vec::new(),
            plain_pos: 0,
            outgoing: Vec::new(),
            out_pos: 0,
            exporter: None,
            read_closed: false,
            close_sent: false,
        };
        std::future::poll_fn(|cx| s.poll_handshake(cx)).await?;
        Ok(s)
    }

    /// The RFC 9266 `tls-exporter` channel-binding data, under TLS 1.3.
    pub fn tls_exporter(&self) -> Option<&[u8; 32]> {
        self.exporter.as_deref()
    }

    /// The negotiated protocol version.
    pub fn protocol_version(&self) -> Option<rustls::ProtocolVersion> {
        self.conn.protocol_version()
    }

    fn poll_handshake(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            let step = match self.process(None, None) {
                Ok(step) => step,
                Err(e) => {
                    self.send_alert();
                    return Poll::Ready(Err(e));
                }
            };
            ready!(self.poll_flush_outgoing(cx))?;
            if !self.conn.is_handshaking() {
                return Poll::Ready(Ok(()));
            }
            if step == Step::Closed {
                return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
            }
            if ready!(self.poll_fill(cx))? == 0 {
                return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
            }
        }
    }

    /// Drives the state machine over the buffered ciphertext until it needs more. Decrypted
    /// text goes to `dst` as far as it has room, the rest to `plain`; handshake and alert
    /// records go to `outgoing` (the caller flushes it); `action` is done once the connection
    /// may carry application data (an error if it never may: the handshake is not finished).
    fn process(
        &mut self,
        mut dst: Option<&mut ReadBuf<'_>>,
        mut action: Option<Action<'_>>,
    ) -> io::Result<Step> {
        loop {
            // The key log is called inside `process_tls_records`, on this thread.
            let handshaking = self.conn.is_handshaking();
            if handshaking {
                CAPTURE_ARMED.with(|a| a.set(true));
            }
            let UnbufferedStatus { mut discard, state } =
                self.conn.process_tls_records(&mut self.incoming);
            let caught = if handshaking {
                CAPTURE_ARMED.with(|a| a.set(false));
                CAPTURED.with(|c| c.borrow_mut().take()).map(Secret)
            } else {
                None
            };
            let step = match state {
                Err(e) => return Err(tls_error(e)),
                Ok(ConnectionState::ReadTraffic(mut traffic)) => {
                    while let Some(record) = traffic.next_record() {
                        let AppDataRecord {
                            discard: more,
                            payload,
                        } = record.map_err(tls_error)?;
                        discard += more;
                        let mut rest = payload;
                        if let Some(dst) = dst.as_deref_mut() {
                            let n = rest.len().min(dst.remaining());
                            dst.put_slice(&rest[..n]);
                            rest = &rest[n..];
                        }
                        self.plain.extend_from_slice(rest);
                    }
                    None
                }
                Ok(ConnectionState::EncodeTlsData(mut data)) => {
                    append_with(
                        &mut self.outgoing,
                        1024,
                        |out| data.encode(out),
                        encode_need,
                    )
                    .map_err(|e| io::Error::other(e.to_string()))?;
                    None
                }
                Ok(ConnectionState::TransmitTlsData(data)) => {
                    // Queued in `outgoing`; the caller writes it before it waits for anything.
                    data.done();
                    None
                }
                Ok(ConnectionState::BlockedHandshake) => Some(Step::NeedRead),
                Ok(ConnectionState::WriteTraffic(mut traffic)) => {
                    let r = match action.take() {
                        Some(Action::Encrypt(text)) => {
                            let guess = text.len() + (text.len() / (16 * 1024) + 1) * 64;
                            append_with(
                                &mut self.outgoing,
                                guess,
                                |out| traffic.encrypt(text, out),
                                encrypt_need,
                            )
                        }
                        Some(Action::CloseNotify) => append_with(
                            &mut self.outgoing,
                            64,
                            |out| traffic.queue_close_notify(out),
                            encrypt_need,
                        ),
                        None => Ok(()),
                    };
                    r.map_err(|e| io::Error::other(e.to_string()))?;
                    Some(Step::NeedRead)
                }
                Ok(ConnectionState::PeerClosed) => {
                    self.read_closed = true;
                    // Our side may still write (the state machine offers writing next).
                    match action {
                        Some(_) => None,
                        None => Some(Step::Closed),
                    }
                }
                Ok(ConnectionState::Closed) => {
                    self.read_closed = true;
                    Some(Step::Closed)
                }
                Ok(ConnectionState::ReadEarlyData(_)) => {
                    // Early data is not enabled in the configuration (max_early_data_size 0).
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "unexpected TLS early data",
                    ));
                }
                Ok(other) => {
                    return Err(io::Error::other(format!("unexpected TLS state {other:?}")));
                }
            };
            if let Some(secret) = caught {
                self.exporter = self.derive_exporter(&secret.0);
            }
            if discard > 0 {
                self.incoming.drain(..discard);
            }
            if let Some(step) = step {
                if action.is_some() {
                    return Err(match step {
                        Step::NeedRead => io::Error::new(
                            io::ErrorKind::NotConnected,
                            "TLS handshake not finished",
                        ),
                        Step::Closed => io::ErrorKind::BrokenPipe.into(),
                    });
                }
                self.release_incoming();
                return Ok(step);
            }
        }
    }

    /// RFC 8446 §7.5: TLS-Exporter(label, "", 32) from the exporter master secret.
    fn derive_exporter(&self, secret: &[u8]) -> Option<Box<[u8; 32]>> {
        let Some(SupportedCipherSuite::Tls13(suite)) = self.conn.negotiated_cipher_suite() else {
            return None;
        };
        let hash = suite.common.hash_provider;
        let empty = hash.hash(&[]);
        let mut derived = vec![0u8; hash.output_len()];
        let expander = suite.hkdf_provider.expander_for_okm(&OkmBlock::new(secret));
        expand_label(&*expander, EXPORTER_LABEL, empty.as_ref(), &mut derived).ok()?;
        let expander = suite
            .hkdf_provider
            .expander_for_okm(&OkmBlock::new(&derived));
        derived.fill(0);
        let mut out = Box::new([0u8; 32]);
        expand_label(&*expander, b"exporter", empty.as_ref(), &mut out[..]).ok()?;
        Some(out)
    }

    /// Reads more ciphertext from the socket into `incoming` (0 at end of file).
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.incoming.len() >= INCOMING_MAX {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "TLS message too large",
            )));
        }
        loop {
            ready!(self.tcp.poll_read_ready(cx))?;
            if self.incoming.capacity() == 0 {
                self.incoming = spare::take(&IN_SPARE);
            }
            self.incoming.reserve(RECORD_MAX);
            match self.tcp.try_read_buf(&mut self.incoming) {
                Ok(n) => return Poll::Ready(Ok(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.release_incoming(),
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    /// Gives an emptied `incoming` back to the thread. One that holds only the start of a
    /// record keeps those bytes in an allocation of their own size and gives the read buffer
    /// back: a peer sending its records a few bytes at a time would otherwise pin a whole
    /// read buffer (16 KiB) per connection, four times what rustls' own buffer held.
    fn release_incoming(&mut self) {
        let (len, capacity) = (self.incoming.len(), self.incoming.capacity());
        if capacity == 0 || (len > 0 && capacity <= 2 * len + 256) {
            return;
        }
        let kept = if len == 0 {
            Vec::new()
        } else {
            self.incoming.to_vec()
        };
        let buf = std::mem::replace(&mut self.incoming, kept);
        spare::give_up_to(&IN_SPARE, buf, SPARE_MAX);
    }

    /// Writes `outgoing` to the socket; Ready(Ok) once all of it is written (and the buffer
    /// given back to the thread).
    fn poll_flush_outgoing(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.out_pos < self.outgoing.len() {
            let n = ready!(Pin::new(&mut self.tcp).poll_write(cx, &self.outgoing[self.out_pos..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.out_pos += n;
        }
        self.release_outgoing();
        Poll::Ready(Ok(()))
    }

    /// After a TLS error: writes the alert rustls queued, if the socket takes it at once. Best
    /// effort; the connection is closed next. The state machine is entered only while it has
    /// something queued, which it hands out before it looks at the input again (the input
    /// that failed would fail a second time).
    fn send_alert(&mut self) {
        if self.conn.wants_write() {
            let UnbufferedStatus { state, .. } = self.conn.process_tls_records(&mut self.incoming);
            if let Ok(ConnectionState::EncodeTlsData(mut data)) = state {
                let _ = append_with(&mut self.outgoing, 64, |out| data.encode(out), encode_need);
            }
        }
        if self.out_pos < self.outgoing.len() {
            let _ = self.tcp.try_write(&self.outgoing[self.out_pos..]);
        }
        self.release_outgoing();
    }

    /// Gives `outgoing` back to the thread, written or not.
    fn release_outgoing(&mut self) {
        let buf = std::mem::take(&mut self.outgoing);
        self.out_pos = 0;
        spare::give_up_to(&OUT_SPARE, buf, SPARE_MAX);
    }

    #[cfg(test)]
    fn held_bytes(&self) -> usize {
        self.incoming.capacity() + self.plain.capacity() + self.outgoing.capacity()
    }
}

impl AsyncRead for ServerTls {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.plain_pos < this.plain.len() {
                let rest = &this.plain[this.plain_pos..];
                let n = rest.len().min(buf.remaining());
                buf.put_slice(&rest[..n]);
                this.plain_pos += n;
                if this.plain_pos == this.plain.len() {
                    this.plain = Vec::new();
                    this.plain_pos = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.read_closed {
                return Poll::Ready(Ok(()));
            }
            let before = buf.filled().len();
            let step = match this.process(Some(&mut *buf), None) {
                Ok(step) => step,
                Err(e) => {
                    this.send_alert();
                    return Poll::Ready(Err(e));
                }
            };
            // A key update answer or a session ticket: written now, or when the socket allows
            // (this poll is woken then).
            if let Poll::Ready(Err(e)) = this.poll_flush_outgoing(cx) {
                return Poll::Ready(Err(e));
            }
            if buf.filled().len() > before || this.plain_pos < this.plain.len() {
                return Poll::Ready(Ok(()));
            }
            if step == Step::Closed {
                return Poll::Ready(Ok(()));
            }
            if ready!(this.poll_fill(cx))? == 0 {
                // The peer closed TCP without close_notify: the end of the stream all the same
                // (XMPP's own closing tag says whether the stream ended cleanly).
                this.read_closed = true;
                this.release_incoming();
                return Poll::Ready(Ok(()));
            }
        }
    }
}

impl AsyncWrite for ServerTls {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_flush_outgoing(cx))?;
        if this.close_sent {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        let n = data.len().min(WRITE_CHUNK);
        this.process(None, Some(Action::Encrypt(&data[..n])))?;
        // Written at once when the socket allows; otherwise by the next write or flush.
        if let Poll::Ready(Err(e)) = this.poll_flush_outgoing(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_flush_outgoing(cx))?;
        Pin::new(&mut this.tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_flush_outgoing(cx))?;
        if !this.close_sent {
            this.close_sent = true;
            this.process(None, Some(Action::CloseNotify))?;
            ready!(this.poll_flush_outgoing(cx))?;
        }
        Pin::new(&mut this.tcp).poll_shutdown(cx)
    }
}

fn encode_need(e: &EncodeError) -> Option<usize> {
    match e {
        EncodeError::InsufficientSize(s) => Some(s.required_size),
        _ => None,
    }
}

fn encrypt_need(e: &EncryptError) -> Option<usize> {
    match e {
        EncryptError::InsufficientSize(s) => Some(s.required_size),
        _ => None,
    }
}

/// Appends what `f` writes to `out` (the thread's spare when `out` holds no allocation),
/// growing it to the size `f` asks for if `guess` was short.
fn append_with<E>(
    out: &mut Vec<u8>,
    guess: usize,
    mut f: impl FnMut(&mut [u8]) -> Result<usize, E>,
    required: impl Fn(&E) -> Option<usize>,
) -> Result<(), E> {
    if out.capacity() == 0 {
        *out = spare::take(&OUT_SPARE);
    }
    let start = out.len();
    out.resize(start + guess, 0);
    let result = match f(&mut out[start..]) {
        Err(e) => match required(&e) {
            Some(need) => {
                out.resize(start + need, 0);
                f(&mut out[start..])
            }
            None => Err(e),
        },
        ok => ok,
    };
    out.truncate(start + *result.as_ref().unwrap_or(&0));
    result.map(|_| ())
}

/// RFC 8446 §7.1 HKDF-Expand-Label.
fn expand_label(
    expander: &dyn HkdfExpander,
    label: &[u8],
    context: &[u8],
    out: &mut [u8],
) -> Result<(), rustls::crypto::tls13::OutputLengthError> {
    let length = (out.len() as u16).to_be_bytes();
    let label_len = [(b"tls13 ".len() + label.len()) as u8];
    let context_len = [context.len() as u8];
    expander.expand_slice(
        &[&length, &label_len, b"tls13 ", label, &context_len, context],
        out,
    )
}

fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rustls::crypto::aws_lc_rs::{cipher_suite, default_provider};
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio_rustls::client::TlsStream;

    use super::*;
    use crate::tls::TlsSettings;

    fn server_settings() -> (TlsSettings, CertificateDer<'static>) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let der = cert.der().clone();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        (TlsSettings::new(vec![der.clone()], key).unwrap(), der)
    }

    fn client_config(
        cert: &CertificateDer<'static>,
        suites: Vec<SupportedCipherSuite>,
        version: &'static rustls::SupportedProtocolVersion,
    ) -> Arc<rustls::ClientConfig> {
        let mut provider = default_provider();
        provider.cipher_suites = suites;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.clone()).unwrap();
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(&[version])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(config)
    }

    /// A loopback port whose first connection runs the server side of a handshake.
    async fn accept_one(
        server: &TlsSettings,
    ) -> (
        std::net::SocketAddr,
        tokio::task::JoinHandle<io::Result<ServerTls>>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let config = server.config.clone();
        let accepted = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            ServerTls::accept(tcp, config).await
        });
        (addr, accepted)
    }

    async fn connect(
        server: &TlsSettings,
        client: Arc<rustls::ClientConfig>,
    ) -> (ServerTls, TlsStream<TcpStream>) {
        let (addr, accepted) = accept_one(server).await;
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let client = tokio_rustls::TlsConnector::from(client)
            .connect(name, tcp)
            .await
            .unwrap();
        (accepted.await.unwrap().unwrap(), client)
    }

    fn tls13_client(cert: &CertificateDer<'static>) -> Arc<rustls::ClientConfig> {
        client_config(
            cert,
            vec![cipher_suite::TLS13_AES_128_GCM_SHA256],
            &rustls::version::TLS13,
        )
    }

    /// `up` from the client to the server, then `down` back, each arriving in one read.
    async fn ping_pong(
        server: &mut ServerTls,
        client: &mut TlsStream<TcpStream>,
        up: &[u8],
        down: &[u8],
    ) {
        let mut buf = [0u8; 256];
        client.write_all(up).await.unwrap();
        client.flush().await.unwrap();
        let n = server.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], up);
        server.write_all(down).await.unwrap();
        server.flush().await.unwrap();
        let n = client.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], down);
    }

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    /// Both directions carry 300 KB intact (records split across reads, reads smaller than a
    /// record), `tls-exporter` equals what rustls' own exporter gives the client, and the
    /// idle stream afterwards holds no buffer.
    async fn exchange_and_check(suite: SupportedCipherSuite) {
        let (settings, cert) = server_settings();
        let client_cfg = client_config(&cert, vec![suite], &rustls::version::TLS13);
        let (mut server, mut client) = connect(&settings, client_cfg).await;

        let theirs = client
            .get_ref()
            .1
            .export_keying_material([0u8; 32], EXPORTER_LABEL, None)
            .unwrap();
        assert_eq!(server.tls_exporter(), Some(&theirs), "{suite:?}");
        assert_eq!(
            server.protocol_version(),
            Some(rustls::ProtocolVersion::TLSv1_3)
        );

        let up = pattern(300_000, 7);
        let sent = up.clone();
        let writer = tokio::spawn(async move {
            client.write_all(&sent).await.unwrap();
            client.flush().await.unwrap();
            client
        });
        let mut got = Vec::new();
        let mut small = [0u8; 7];
        while got.len() < 1000 {
            let n = server.read(&mut small).await.unwrap();
            assert!(n > 0);
            got.extend_from_slice(&small[..n]);
        }
        let mut big = vec![0u8; 40_000];
        while got.len() < up.len() {
            let n = server.read(&mut big).await.unwrap();
            assert!(n > 0);
            got.extend_from_slice(&big[..n]);
        }
        assert!(got == up, "client to server intact");
        let mut client = writer.await.unwrap();

        let down = pattern(300_000, 91);
        let reader = tokio::spawn(async move {
            let mut buf = vec![0u8; 300_000];
            client.read_exact(&mut buf).await.unwrap();
            (client, buf)
        });
        server.write_all(&down).await.unwrap();
        server.flush().await.unwrap();
        let (mut client, buf) = reader.await.unwrap();
        assert!(buf == down, "server to client intact");
        assert_eq!(server.held_bytes(), 0, "an idle stream holds no buffer");

        // A whitespace keepalive, as idle clients send.
        client.write_all(b" ").await.unwrap();
        client.flush().await.unwrap();
        let n = server.read(&mut big).await.unwrap();
        assert_eq!(&big[..n], b" ");
        assert_eq!(server.held_bytes(), 0);
    }

    #[tokio::test]
    async fn aes128_carries_data_and_exports_the_clients_binding() {
        exchange_and_check(cipher_suite::TLS13_AES_128_GCM_SHA256).await;
    }

    #[tokio::test]
    async fn aes256_sha384_exports_the_clients_binding() {
        exchange_and_check(cipher_suite::TLS13_AES_256_GCM_SHA384).await;
    }

    #[tokio::test]
    async fn chacha20_exports_the_clients_binding() {
        exchange_and_check(cipher_suite::TLS13_CHACHA20_POLY1305_SHA256).await;
    }

    #[tokio::test]
    async fn tls12_carries_data_without_an_exporter() {
        let (settings, cert) = server_settings();
        let suites = vec![
            cipher_suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
            cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        ];
        let cfg = client_config(&cert, suites, &rustls::version::TLS12);
        let (mut server, mut client) = connect(&settings, cfg).await;
        assert_eq!(
            server.protocol_version(),
            Some(rustls::ProtocolVersion::TLSv1_2)
        );
        assert_eq!(server.tls_exporter(), None);
        ping_pong(&mut server, &mut client, b"<presence/>", b"<iq/>").await;
        assert_eq!(server.held_bytes(), 0);
    }

    /// A client's KeyUpdate asking for ours: the server answers it (rustls queues the answer
    /// while reading) and both directions go on with the new keys.
    #[tokio::test]
    async fn a_key_update_is_answered_and_traffic_goes_on() {
        let (settings, cert) = server_settings();
        let cfg = tls13_client(&cert);
        let (mut server, mut client) = connect(&settings, cfg).await;
        client.get_mut().1.refresh_traffic_keys().unwrap();
        ping_pong(&mut server, &mut client, b"after the update", b"and back").await;
    }

    #[tokio::test]
    async fn close_notify_ends_the_stream_both_ways() {
        let (settings, cert) = server_settings();
        let cfg = tls13_client(&cert);
        let (mut server, mut client) = connect(&settings, cfg).await;
        client.shutdown().await.unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(
            server.read(&mut buf).await.unwrap(),
            0,
            "close_notify reads as the end"
        );
        assert_eq!(server.read(&mut buf).await.unwrap(), 0, "and stays the end");
        // Writing after the peer closed is still allowed; then our own close_notify.
        server.write_all(b"bye").await.unwrap();
        server.shutdown().await.unwrap();
        let mut rest = Vec::new();
        client
            .read_to_end(&mut rest)
            .await
            .expect("a clean close, not a truncation");
        assert_eq!(rest, b"bye");
    }

    /// A peer that stops reading: a write is taken whole, then writes wait; the stream holds
    /// at most one write's ciphertext, and everything arrives once the peer reads again.
    #[tokio::test]
    async fn a_slow_reader_bounds_what_is_queued() {
        let (settings, cert) = server_settings();
        let cfg = tls13_client(&cert);
        let (mut server, mut client) = connect(&settings, cfg).await;
        let data = pattern(8 << 20, 3);
        let mut sent = 0;
        let stalled = tokio::time::timeout(Duration::from_millis(500), async {
            while sent < data.len() {
                let n = server.write(&data[sent..]).await.unwrap();
                sent += n;
            }
        })
        .await;
        assert!(
            stalled.is_err(),
            "8 MiB cannot all fit in the socket buffers"
        );
        assert!(sent < data.len());
        assert!(
            server.held_bytes() <= WRITE_CHUNK + 4 * RECORD_MAX,
            "held {}",
            server.held_bytes()
        );
        let total = data.len();
        let reader = tokio::spawn(async move {
            let mut buf = vec![0u8; total];
            client.read_exact(&mut buf).await.unwrap();
            buf
        });
        server.write_all(&data[sent..]).await.unwrap();
        server.flush().await.unwrap();
        assert!(reader.await.unwrap() == data);
    }

    /// A peer that sends half a record and stops: the connection keeps those bytes, not a
    /// read buffer, and the record completes when the rest arrives.
    #[tokio::test]
    async fn half_a_record_holds_only_its_own_bytes() {
        use std::io::Write as _;
        let (settings, cert) = server_settings();
        let cfg = tls13_client(&cert);
        let (mut server, mut client) = connect(&settings, cfg).await;
        let text = pattern(3000, 5);
        let (tcp, conn) = client.get_mut();
        conn.writer().write_all(&text).unwrap();
        let mut wire = Vec::new();
        while conn.wants_write() {
            conn.write_tls(&mut wire).unwrap();
        }
        let half = wire.len() / 2;
        tcp.write_all(&wire[..half]).await.unwrap();
        let mut buf = vec![0u8; 8192];
        let early = tokio::time::timeout(Duration::from_millis(300), server.read(&mut buf)).await;
        assert!(early.is_err(), "half a record yields nothing");
        assert!(
            server.held_bytes() <= half,
            "held {} for {half} bytes of a record",
            server.held_bytes()
        );
        tcp.write_all(&wire[half..]).await.unwrap();
        let mut got = Vec::new();
        while got.len() < text.len() {
            let n = server.read(&mut buf).await.unwrap();
            assert!(n > 0);
            got.extend_from_slice(&buf[..n]);
        }
        assert!(got == text);
        assert_eq!(server.held_bytes(), 0);
    }

    /// Plain XML on a TLS port: the handshake fails, and the client gets a TLS alert record
    /// rather than a bare close.
    #[tokio::test]
    async fn plaintext_instead_of_a_client_hello_fails_the_handshake() {
        let (settings, _) = server_settings();
        let (addr, accepted) = accept_one(&settings).await;
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(b"<?xml version='1.0'?><stream:stream to='localhost'>")
            .await
            .unwrap();
        let err = accepted.await.unwrap().err().expect("the handshake fails");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
        let mut answer = Vec::new();
        let _ = tcp.read_to_end(&mut answer).await;
        assert_eq!(
            answer.first(),
            Some(&0x15),
            "a TLS alert record: {answer:?}"
        );
    }
}
