//! Shared helpers for the end-to-end tests: a real server on `127.0.0.1:0` with its own
//! temporary data directory ([`TestServer`]), and a scriptable raw client ([`Conn`]) that
//! speaks bytes, STARTTLS, SCRAM and bind, so each test can assert exactly what the server
//! sends — transcripts in the spirit of Prosody's scansion tests.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use minidom::Element;
use starling_core::config::ListenerKind;
use starling_core::Config;
use starling_proto::framer::{Framer, Limits, StreamEvent};
use starling_proto::jid::Jid;
use starling_sasl::{ChannelBinding, ChannelBindingType, ScramClient, ScramHash};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long any expected event may take before the test fails.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// A Starling server running in-process for one test.
pub struct TestServer {
    running: Option<starling::Running>,
    /// The STARTTLS listener.
    pub c2s: SocketAddr,
    /// The direct-TLS listener.
    pub direct_tls: SocketAddr,
    /// Keeps the data directory alive for the server's lifetime.
    pub dir: tempfile::TempDir,
}

impl TestServer {
    /// A server for `localhost` with default settings.
    pub async fn start() -> TestServer {
        TestServer::start_with(|_| {}).await
    }

    /// A server whose configuration `tweak` may change (limits, timeouts...).
    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> TestServer {
        TestServer::try_start_with(tweak)
            .await
            .expect("server starts")
    }

    /// [`TestServer::start_with`] that returns the error: for a test that picked a fixed port,
    /// which another process may take between the pick and the bind (then pick again).
    pub async fn try_start_with(
        tweak: impl FnOnce(&mut Config),
    ) -> Result<TestServer, starling::StartError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = Config::default();
        config.server.data_dir = dir.path().join("data");
        config.listeners = vec![
            starling_core::config::ListenerConfig {
                kind: ListenerKind::C2s,
                address: "127.0.0.1:0".parse().unwrap(),
            },
            starling_core::config::ListenerConfig {
                kind: ListenerKind::C2sDirectTls,
                address: "127.0.0.1:0".parse().unwrap(),
            },
        ];
        tweak(&mut config);
        let running = starling::start(config).await?;
        let c2s = running
            .listeners
            .address(ListenerKind::C2s)
            .expect("c2s listener");
        let direct_tls = running
            .listeners
            .address(ListenerKind::C2sDirectTls)
            .expect("direct TLS listener");
        Ok(TestServer {
            running: Some(running),
            c2s,
            direct_tls,
            dir,
        })
    }

    /// The HTTP upload service (XEP-0363), when enabled.
    pub fn upload(&self) -> Option<Arc<starling_upload::Upload>> {
        self.running.as_ref().expect("running").upload.clone()
    }

    /// Where components (XEP-0114) connect, when any is configured.
    pub fn component_address(&self) -> Option<SocketAddr> {
        self.running.as_ref().expect("running").component_listener
    }

    /// The running server (listeners, HTTP listeners, federation).
    pub fn running(&self) -> &starling::Running {
        self.running.as_ref().expect("running")
    }

    /// The server context (router, storage).
    pub fn server(&self) -> &Arc<starling_core::Server> {
        &self.running.as_ref().expect("running").server
    }

    /// Creates `user@localhost` with `password`.
    pub async fn add_user(&self, user: &str, password: &str) {
        starling::accounts::add(
            &**self.server().storage(),
            "localhost",
            user,
            password,
            4096,
        )
        .await
        .expect("account created");
    }

    /// Graceful shutdown (streams get `system-shutdown`).
    pub async fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
    }

    /// Logs `user` in over STARTTLS with SCRAM-SHA-256 and binds `resource`.
    pub async fn login(&self, user: &str, password: &str, resource: &str) -> Conn {
        let c = Conn::connect(self.c2s).await;
        self.login_on(c, user, password, resource).await
    }

    /// Like [`TestServer::login`], from a chosen loopback address.
    pub async fn login_from(
        &self,
        local: std::net::IpAddr,
        user: &str,
        password: &str,
        resource: &str,
    ) -> Conn {
        let c = Conn::connect_from(self.c2s, local).await;
        self.login_on(c, user, password, resource).await
    }

    async fn login_on(&self, mut c: Conn, user: &str, password: &str, resource: &str) -> Conn {
        c.open("localhost").await;
        c.starttls().await;
        c.scram(ScramHash::Sha256, false, user, password)
            .await
            .expect("SCRAM succeeds");
        c.bind(Some(resource)).await;
        c
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(r) = self.running.take() {
            r.server.shutdown_token().cancel();
        }
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

enum Transport {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    Switching,
}

/// A raw client connection: write bytes, read framed events.
pub struct Conn {
    transport: Transport,
    framer: Framer,
    buf: Vec<u8>,
    /// The bound full JID, after [`Conn::bind`].
    pub jid: Option<Jid>,
}

/// Accepts any server certificate: the test server uses a generated self-signed one.
#[derive(Debug)]
struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
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
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn tls_connector() -> tokio_rustls::TlsConnector {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

impl Conn {
    /// Opens a TCP connection.
    pub async fn connect(addr: SocketAddr) -> Conn {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        // Without this, Nagle plus delayed ACKs add ~40 ms to write-write-read patterns.
        tcp.set_nodelay(true).expect("nodelay");
        Conn::from_tcp(tcp)
    }

    /// Opens a TCP connection from a chosen local address (any of 127.0.0.0/8 on loopback),
    /// so a test can play several client IP addresses against per-IP limits.
    pub async fn connect_from(addr: SocketAddr, local: std::net::IpAddr) -> Conn {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind(SocketAddr::new(local, 0))
            .expect("bind local address");
        let tcp = socket.connect(addr).await.expect("connect");
        tcp.set_nodelay(true).expect("nodelay");
        Conn::from_tcp(tcp)
    }

    fn from_tcp(tcp: TcpStream) -> Conn {
        Conn {
            transport: Transport::Plain(tcp),
            framer: Framer::new(Limits {
                max_stanza_bytes: 16 << 20,
                max_buffered_bytes: 32 << 20,
                max_elements: usize::MAX,
                ..Limits::default()
            }),
            buf: vec![0; 65536],
            jid: None,
        }
    }

    /// Opens a TCP connection and does a TLS handshake at once (XEP-0368).
    pub async fn connect_direct_tls(addr: SocketAddr) -> Conn {
        let mut c = Conn::connect(addr).await;
        c.upgrade_tls().await;
        c
    }

    fn io(&mut self) -> &mut dyn Io {
        match &mut self.transport {
            Transport::Plain(t) => t,
            Transport::Tls(t) => t.as_mut(),
            Transport::Switching => unreachable!(),
        }
    }

    /// Writes raw bytes.
    pub async fn send_bytes(&mut self, data: &[u8]) {
        let io = self.io();
        io.write_all(data).await.expect("write");
        io.flush().await.expect("flush");
    }

    /// Writes raw bytes; returns false if the server already closed the connection.
    pub async fn try_send_bytes(&mut self, data: &[u8]) -> bool {
        let io = self.io();
        io.write_all(data).await.is_ok() && io.flush().await.is_ok()
    }

    /// Writes XML text.
    pub async fn send(&mut self, xml: &str) {
        self.send_bytes(xml.as_bytes()).await
    }

    /// Writes an element.
    pub async fn send_el(&mut self, el: &Element) {
        let mut out = Vec::new();
        starling_proto::writer::write_element(el, &mut out);
        self.send_bytes(&out).await
    }

    /// The next stream event, or None when the connection closed.
    pub async fn next_event(&mut self) -> Option<StreamEvent> {
        let fut = async {
            loop {
                match self.framer.next_event() {
                    Ok(Some(ev)) => return Some(ev),
                    Ok(None) => {}
                    Err(e) => panic!("server sent bad XML: {e:?}"),
                }
                let mut buf = std::mem::take(&mut self.buf);
                let n = self.io().read(&mut buf).await.unwrap_or(0);
                if n == 0 {
                    self.buf = buf;
                    return None;
                }
                self.framer.feed(&buf[..n]);
                self.buf = buf;
            }
        };
        tokio::time::timeout(STEP_TIMEOUT, fut)
            .await
            .expect("server answered in time")
    }

    /// The next first-level element (skips nothing: a header or close fails the test).
    pub async fn recv(&mut self) -> Element {
        match self.next_event().await {
            Some(StreamEvent::Stanza(el)) => el,
            other => panic!("expected an element, got {other:?}"),
        }
    }

    /// Receives until an element satisfies `pred`, returning it (others are dropped).
    pub async fn recv_until(&mut self, pred: impl Fn(&Element) -> bool) -> Element {
        loop {
            let el = self.recv().await;
            if pred(&el) {
                return el;
            }
        }
    }

    /// Asserts no element arrives within `d`.
    pub async fn expect_silence(&mut self, d: Duration) {
        let r = tokio::time::timeout(d, async {
            loop {
                match self.framer.next_event() {
                    Ok(Some(ev)) => return ev,
                    Ok(None) => {}
                    Err(e) => panic!("bad XML: {e:?}"),
                }
                // A local buffer: the timeout cancels this future mid-read, which must not
                // leave `self.buf` taken (the next read would see a closed connection).
                let mut buf = [0u8; 8192];
                let n = self.io().read(&mut buf).await.unwrap_or(0);
                if n == 0 {
                    // Closed: nothing more will arrive; keep waiting out the time.
                    std::future::pending::<()>().await;
                    unreachable!();
                }
                self.framer.feed(&buf[..n]);
            }
        })
        .await;
        if let Ok(ev) = r {
            panic!("expected silence, got {ev:?}");
        }
    }

    /// Expects the server to end the stream with `condition` and close the connection.
    pub async fn expect_stream_error(&mut self, condition: &str) {
        loop {
            match self.next_event().await {
                Some(StreamEvent::Open(_)) => continue,
                Some(StreamEvent::Stanza(el))
                    if el.name() == "error" && el.ns() == starling_proto::ns::STREAM =>
                {
                    let got = el
                        .children()
                        .find(|c| c.ns() == starling_proto::ns::STREAM_ERRORS && c.name() != "text")
                        .map(|c| c.name().to_owned());
                    assert_eq!(got.as_deref(), Some(condition), "stream error: {el:?}");
                    break;
                }
                Some(StreamEvent::Stanza(el)) if el.name() == "features" => continue,
                other => panic!("expected <stream:error><{condition}/>, got {other:?}"),
            }
        }
        match self.next_event().await {
            Some(StreamEvent::Close) | None => {}
            other => panic!("expected the stream to close after the error, got {other:?}"),
        }
    }

    /// Sends a stream header for `to` and reads the server's header and features.
    pub async fn open(&mut self, to: &str) -> Element {
        self.framer.reset();
        self.send(&format!(
            "<?xml version='1.0'?><stream:stream to='{to}' version='1.0' xml:lang='en' \
             xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"
        ))
        .await;
        match self.next_event().await {
            Some(StreamEvent::Open(_)) => {}
            other => panic!("expected the server's stream header, got {other:?}"),
        }
        let features = self.recv().await;
        assert_eq!(features.name(), "features", "{features:?}");
        features
    }

    async fn upgrade_tls(&mut self) {
        let Transport::Plain(tcp) = std::mem::replace(&mut self.transport, Transport::Switching)
        else {
            panic!("already TLS");
        };
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let tls = tls_connector()
            .connect(name, tcp)
            .await
            .expect("TLS handshake");
        self.transport = Transport::Tls(Box::new(tls));
    }

    /// Negotiates STARTTLS and re-opens the stream; returns the new features.
    pub async fn starttls(&mut self) -> Element {
        self.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
            .await;
        let proceed = self.recv().await;
        assert_eq!(proceed.name(), "proceed", "{proceed:?}");
        self.upgrade_tls().await;
        self.open("localhost").await
    }

    /// tls-exporter channel binding data of this (TLS) connection.
    pub fn tls_exporter(&self) -> Vec<u8> {
        match &self.transport {
            Transport::Tls(t) => t
                .get_ref()
                .1
                .export_keying_material([0u8; 32], b"EXPORTER-Channel-Binding", None)
                .expect("exporter")
                .to_vec(),
            _ => panic!("not TLS"),
        }
    }

    /// Runs a SCRAM exchange; `plus` uses tls-exporter channel binding. On success the
    /// stream is re-opened (features returned); on failure the SASL failure condition.
    pub async fn scram(
        &mut self,
        hash: ScramHash,
        plus: bool,
        user: &str,
        password: &str,
    ) -> Result<Element, String> {
        let binding = plus.then(|| ChannelBinding {
            kind: ChannelBindingType::TlsExporter,
            data: self.tls_exporter(),
        });
        self.scram_with(ScramClient::new(hash, user, password, binding, true))
            .await
    }

    /// Authenticates with PLAIN. Ok(features) or Err(condition).
    pub async fn plain(&mut self, user: &str, password: &str) -> Result<Element, String> {
        let msg = b64(&starling_sasl::plain_message(None, user, password));
        self.send(&format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{msg}</auth>"
        ))
        .await;
        let outcome = self.recv().await;
        match outcome.name() {
            "success" => Ok(self.open("localhost").await),
            "failure" => Err(sasl_condition(&outcome)),
            _ => panic!("unexpected SASL answer {outcome:?}"),
        }
    }

    /// Binds a resource (or lets the server choose) and returns the bound JID.
    pub async fn bind(&mut self, resource: Option<&str>) -> Jid {
        let inner = resource
            .map(|r| format!("<resource>{r}</resource>"))
            .unwrap_or_default();
        self.send(&format!(
            "<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>{inner}</bind></iq>"
        ))
        .await;
        let result = self.recv().await;
        assert_eq!(result.attr("type"), Some("result"), "bind: {result:?}");
        let jid = result
            .get_child("bind", starling_proto::ns::BIND)
            .and_then(|b| b.get_child("jid", starling_proto::ns::BIND))
            .map(|j| Jid::parse(&j.text()).expect("bound JID parses"))
            .expect("bind result has a jid");
        self.jid = Some(jid.clone());
        jid
    }

    /// Sends initial presence and waits until the server has processed it (a ping round trip).
    pub async fn available(&mut self) {
        self.send("<presence/>").await;
        self.ping_server().await;
    }

    /// An IQ ping to the server; waits for its result (skipping other stanzas).
    pub async fn ping_server(&mut self) {
        self.send(
            "<iq type='get' id='sync-ping' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>",
        )
        .await;
        self.recv_until(|e| e.name() == "iq" && e.attr("id") == Some("sync-ping"))
            .await;
    }

    /// Sends `</stream:stream>` and expects the server's closing tag.
    pub async fn close(&mut self) {
        self.send("</stream:stream>").await;
        loop {
            match self.next_event().await {
                Some(StreamEvent::Close) | None => break,
                Some(_) => continue,
            }
        }
    }
}

/// The condition element name inside a SASL `<failure/>`.
pub fn sasl_condition(failure: &Element) -> String {
    failure
        .children()
        .next()
        .map(|c| c.name().to_owned())
        .unwrap_or_default()
}

/// The condition of a stanza error inside `stanza`.
pub fn stanza_error_condition(stanza: &Element) -> Option<String> {
    let err = stanza.children().find(|c| c.name() == "error")?;
    err.children()
        .find(|c| c.ns() == starling_proto::ns::STANZA_ERRORS && c.name() != "text")
        .map(|c| c.name().to_owned())
}

fn b64(d: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(d)
}

fn unb64(s: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .expect("server sent valid base64")
}

// ---------------------------------------------------------------------------------------------
// Helpers for the c2s_* transcripts: raw stream steps, SCRAM with a prepared client, channel
// binding data computed independently of the server, and "is the server still fine?" probes.

static PROBE_USERS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

impl TestServer {
    /// The data directory the server was started with (unless a test moved it).
    pub fn data_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("data")
    }

    /// `tls-server-end-point` binding data computed by the test itself: SHA-256 of the DER
    /// of the server's (generated, ECDSA P-256 / SHA-256) certificate in `data/tls/cert.pem`.
    pub fn cert_end_point_hash(&self) -> Vec<u8> {
        use rustls::pki_types::pem::PemObject;
        use sha2::Digest;
        let path = self.data_dir().join("tls").join("cert.pem");
        let der = rustls::pki_types::CertificateDer::from_pem_file(&path).expect("cert.pem");
        sha2::Sha256::digest(der.as_ref()).to_vec()
    }

    /// After hostile input: a brand-new account still logs in, binds and gets a ping answer.
    pub async fn assert_still_serves(&self) {
        let n = PROBE_USERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let user = format!("probe{n}");
        self.add_user(&user, "probe-pw").await;
        let mut c = self.login(&user, "probe-pw", "probe").await;
        c.ping_server().await;
        c.close().await;
    }

    /// Waits (up to [`STEP_TIMEOUT`]) until no session is bound to `full`.
    pub async fn wait_unbound(&self, full: &Jid) {
        let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
        while self.server().router().session(full).is_some() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{full} still bound after {STEP_TIMEOUT:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Conn {
    /// Opens a TCP connection and sends a stream header for `to` without reading anything.
    pub async fn connect_and_send(addr: SocketAddr, data: &[u8]) -> Conn {
        let mut c = Conn::connect(addr).await;
        c.send_bytes(data).await;
        c
    }

    /// Forgets parser state, as after a stream restart, without sending anything.
    pub fn reset_parser(&mut self) {
        self.framer.reset();
    }

    /// A stream header for `to` (with the usual namespaces), as text.
    pub fn header(to: &str) -> String {
        format!(
            "<?xml version='1.0'?><stream:stream to='{to}' version='1.0' xml:lang='en' \
             xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"
        )
    }

    /// Sends `<starttls/>`, expects `<proceed/>` and does the TLS handshake; the stream is not
    /// re-opened (the caller sends its own header).
    pub async fn starttls_only(&mut self) {
        self.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
            .await;
        let proceed = self.recv().await;
        assert_eq!(proceed.name(), "proceed", "{proceed:?}");
        self.upgrade_tls().await;
        self.framer.reset();
    }

    /// Whether the transport is TLS.
    pub fn is_tls(&self) -> bool {
        matches!(self.transport, Transport::Tls(_))
    }

    /// Runs a SCRAM exchange with a prepared client (channel binding, authzid, `y` flag...).
    /// Ok(features after the restart) or Err(SASL condition).
    pub async fn scram_with(&mut self, mut client: ScramClient) -> Result<Element, String> {
        let mech = client.mechanism().name();
        let first = b64(&client.client_first());
        self.send(&format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='{mech}'>{first}</auth>"
        ))
        .await;
        let challenge = self.recv().await;
        if challenge.name() == "failure" {
            return Err(sasl_condition(&challenge));
        }
        assert_eq!(challenge.name(), "challenge", "{challenge:?}");
        let reply = client
            .handle_server_first(&unb64(&challenge.text()))
            .map_err(|f| format!("client refused server-first: {}", f.name()))?;
        self.send(&format!(
            "<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{}</response>",
            b64(&reply)
        ))
        .await;
        let outcome = self.recv().await;
        match outcome.name() {
            "success" => {
                client
                    .verify_server_final(&unb64(&outcome.text()))
                    .expect("server signature verifies");
                Ok(self.open("localhost").await)
            }
            "failure" => Err(sasl_condition(&outcome)),
            _ => panic!("unexpected SASL answer {outcome:?}"),
        }
    }

    /// Sends `<auth mechanism=…>` with raw text content and returns the server's answer.
    pub async fn auth_raw(&mut self, mechanism: &str, content: &str) -> Element {
        self.send(&format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='{mechanism}'>{content}</auth>"
        ))
        .await;
        self.recv().await
    }

    /// Reads for `d`; fails if an element matching `pred` arrives (others are dropped).
    pub async fn expect_none(&mut self, d: Duration, pred: impl Fn(&Element) -> bool) {
        let deadline = tokio::time::Instant::now() + d;
        loop {
            let ev = tokio::time::timeout_at(deadline, async {
                loop {
                    match self.framer.next_event() {
                        Ok(Some(ev)) => return Some(ev),
                        Ok(None) => {}
                        Err(e) => panic!("bad XML: {e:?}"),
                    }
                    // A local buffer: this future may be cancelled by the timeout
                    // mid-read, and must not leave `self.buf` taken.
                    let mut buf = [0u8; 8192];
                    let n = self.io().read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        return None;
                    }
                    self.framer.feed(&buf[..n]);
                }
            })
            .await;
            match ev {
                Err(_) => return,
                Ok(Some(StreamEvent::Stanza(el))) if pred(&el) => {
                    panic!("unexpected element {el:?}")
                }
                Ok(Some(_)) => {}
                Ok(None) => panic!("connection closed while expecting silence"),
            }
        }
    }

    /// Writes `data` in chunks until done or the server closes; returns the bytes written.
    pub async fn flood(&mut self, data: &[u8]) -> usize {
        let mut written = 0;
        for chunk in data.chunks(64 * 1024) {
            if !self.try_send_bytes(chunk).await {
                break;
            }
            written += chunk.len();
        }
        written
    }
}

/// A stanza's `type` attribute (convenience for assertions).
pub fn stanza_type(el: &Element) -> Option<&str> {
    el.attr("type")
}

impl Conn {
    /// Reads raw (decrypted) bytes until the server closes the connection or `limit` passes;
    /// no XML parsing, so a test can drain megabytes quickly.
    pub async fn read_raw_until_closed(&mut self, limit: Duration) -> Vec<u8> {
        let mut out = Vec::new();
        let _ = tokio::time::timeout(limit, async {
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                match self.io().read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => out.extend_from_slice(&buf[..n]),
                }
            }
        })
        .await;
        out
    }
}
