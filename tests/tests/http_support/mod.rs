//! Helpers shared by the http_* transcripts: a server with an HTTP listener, a WebSocket
//! client speaking RFC 7395 framing, and a deliberately dumb HTTP/1.1 client (one request per
//! TCP connection, so every BOSH request also exercises connection churn).
#![allow(dead_code)]

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use minidom::Element;
use starling_core::config::{ListenerConfig, ListenerKind};
use starling_core::Config;
use starling_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

pub const FRAMING: &str = "urn:ietf:params:xml:ns:xmpp-framing";
pub const HTTPBIND: &str = "http://jabber.org/protocol/httpbind";

/// A test server with a plaintext HTTP listener on loopback, and its address.
pub async fn start_http(tweak: impl FnOnce(&mut Config)) -> (TestServer, SocketAddr) {
    let server = TestServer::start_with(|c| {
        c.listeners.push(ListenerConfig {
            kind: ListenerKind::Http,
            address: "127.0.0.1:0".parse().unwrap(),
        });
        tweak(c)
    })
    .await;
    let addr = server
        .running()
        .http
        .address(ListenerKind::Http)
        .expect("http listener");
    (server, addr)
}

pub fn parse(text: &str) -> Element {
    text.parse::<Element>()
        .unwrap_or_else(|e| panic!("server sent unparsable XML {text:?}: {e}"))
}

pub fn plain_b64(user: &str, password: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"))
}

/// A WebSocket client.
pub struct Ws {
    pub inner: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>,
}

/// A TCP connection to `addr`, from `local` (any of 127.0.0.0/8) when given.
async fn tcp_from(addr: SocketAddr, local: Option<IpAddr>) -> TcpStream {
    match local {
        None => TcpStream::connect(addr).await.expect("connect"),
        Some(ip) => {
            let socket = tokio::net::TcpSocket::new_v4().expect("socket");
            socket
                .bind(SocketAddr::new(ip, 0))
                .expect("bind local address");
            socket.connect(addr).await.expect("connect")
        }
    }
}

/// Opens a WebSocket to `url` with the given subprotocol and origin headers. Err: the
/// handshake's HTTP status.
pub async fn ws_connect(
    url: &str,
    protocol: Option<&str>,
    origin: Option<&str>,
) -> Result<Ws, u16> {
    ws_connect_from(url, protocol, origin, None)
        .await
        .map_err(|(status, _, _)| status)
}

/// [`ws_connect`] from a chosen local address; Err: the handshake's HTTP status and
/// headers (lower-cased names) and body.
pub async fn ws_connect_from(
    url: &str,
    protocol: Option<&str>,
    origin: Option<&str>,
    local: Option<IpAddr>,
) -> Result<Ws, (u16, Vec<(String, String)>, String)> {
    let mut req = url.into_client_request().unwrap();
    if let Some(p) = protocol {
        req.headers_mut()
            .insert("Sec-WebSocket-Protocol", HeaderValue::from_str(p).unwrap());
    }
    if let Some(o) = origin {
        req.headers_mut()
            .insert("Origin", HeaderValue::from_str(o).unwrap());
    }
    let host = req.uri().host().expect("host").to_owned();
    let port = req.uri().port_u16().expect("port");
    let addr = SocketAddr::new(host.parse().expect("an IP address in the URL"), port);
    let handshake = async {
        let tcp = tcp_from(addr, local).await;
        tokio_tungstenite::client_async(req, tokio_tungstenite::MaybeTlsStream::Plain(tcp)).await
    };
    match tokio::time::timeout(STEP_TIMEOUT, handshake)
        .await
        .expect("handshake in time")
    {
        Ok((inner, resp)) => {
            if protocol.is_some() {
                assert_eq!(
                    resp.headers()
                        .get("Sec-WebSocket-Protocol")
                        .map(|v| v.to_str().unwrap()),
                    Some("xmpp"),
                    "RFC 7395 §3.1: the server selects 'xmpp'"
                );
            }
            Ok(Ws { inner })
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            let headers = resp
                .headers()
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_ascii_lowercase(),
                        v.to_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect();
            let body = resp
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            Err((resp.status().as_u16(), headers, body))
        }
        Err(e) => panic!("WebSocket handshake failed: {e}"),
    }
}

impl Ws {
    pub async fn send(&mut self, text: &str) {
        self.inner
            .send(Message::text(text.to_owned()))
            .await
            .expect("send");
    }

    pub async fn send_binary(&mut self, data: &[u8]) {
        self.inner
            .send(Message::binary(data.to_vec()))
            .await
            .expect("send");
    }

    /// The next text message (pings are skipped); `None` when the socket closed.
    pub async fn recv_text(&mut self) -> Option<String> {
        loop {
            let msg = tokio::time::timeout(STEP_TIMEOUT, self.inner.next())
                .await
                .expect("a WebSocket message in time");
            match msg {
                Some(Ok(Message::Text(t))) => return Some(t.to_string()),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
                Some(Ok(other)) => panic!("unexpected WebSocket message {other:?}"),
            }
        }
    }

    /// The next message as an element.
    pub async fn recv(&mut self) -> Element {
        let t = self.recv_text().await.expect("a message, not a close");
        parse(&t)
    }

    /// Receives until `pred` holds.
    pub async fn recv_until(&mut self, pred: impl Fn(&Element) -> bool) -> Element {
        for _ in 0..50 {
            let el = self.recv().await;
            if pred(&el) {
                return el;
            }
        }
        panic!("no matching message among 50");
    }

    /// `<open/>` and the server's `<open/>` + features.
    pub async fn open(&mut self) -> Element {
        self.send(&format!(
            "<open xmlns='{FRAMING}' to='localhost' version='1.0'/>"
        ))
        .await;
        let open = self.recv().await;
        assert!(open.is("open", FRAMING), "expected <open/>, got {open:?}");
        assert_eq!(open.attr("from"), Some("localhost"));
        assert_eq!(open.attr("version"), Some("1.0"));
        assert!(open.attr("id").is_some());
        let features = self.recv().await;
        assert!(
            features.is("features", "http://etherx.jabber.org/streams"),
            "{features:?}"
        );
        features
    }

    /// Logs in with PLAIN and binds `resource`; returns the full JID.
    pub async fn login(&mut self, user: &str, password: &str, resource: &str) -> String {
        let features = self.open().await;
        let mechs: Vec<String> = features
            .get_child("mechanisms", "urn:ietf:params:xml:ns:xmpp-sasl")
            .expect("mechanisms")
            .children()
            .map(|m| m.text())
            .collect();
        assert!(mechs.iter().any(|m| m == "PLAIN"), "{mechs:?}");
        self.send(&format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{}</auth>",
            plain_b64(user, password)
        ))
        .await;
        let success = self.recv().await;
        assert!(
            success.is("success", "urn:ietf:params:xml:ns:xmpp-sasl"),
            "{success:?}"
        );
        let features = self.open().await;
        assert!(features.has_child("bind", "urn:ietf:params:xml:ns:xmpp-bind"));
        self.send(&format!(
            "<iq type='set' id='b1' xmlns='jabber:client'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>{resource}</resource></bind></iq>"
        ))
        .await;
        let result = self.recv().await;
        assert_eq!(result.attr("type"), Some("result"), "{result:?}");
        result
            .get_child("bind", "urn:ietf:params:xml:ns:xmpp-bind")
            .and_then(|b| b.get_child("jid", "urn:ietf:params:xml:ns:xmpp-bind"))
            .expect("bound jid")
            .text()
    }

    /// Expects a stream error with `condition`, then `<close/>`, then the socket closing.
    pub async fn expect_stream_error(&mut self, condition: &str) {
        let mut el = self.recv().await;
        if el.is("open", FRAMING) {
            el = self.recv().await;
        }
        assert!(
            el.is("error", "http://etherx.jabber.org/streams"),
            "expected a stream error, got {el:?}"
        );
        assert!(
            el.has_child(condition, "urn:ietf:params:xml:ns:xmpp-streams"),
            "expected {condition}, got {el:?}"
        );
        let close = self.recv().await;
        assert!(close.is("close", FRAMING), "{close:?}");
        assert!(self.recv_text().await.is_none(), "the socket closes");
    }
}

/// One HTTP/1.1 request on a fresh connection; (status, headers lower-cased, body).
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, Vec<(String, String)>, String) {
    http_from(None, addr, method, path, headers, body).await
}

/// [`http`] from a chosen local address.
pub async fn http_from(
    local: Option<IpAddr>,
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, Vec<(String, String)>, String) {
    tokio::time::timeout(Duration::from_secs(90), async {
        let mut tcp = tcp_from(addr, local).await;
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        req.push_str(body);
        tcp.write_all(req.as_bytes()).await.expect("write");
        let mut raw = Vec::new();
        tcp.read_to_end(&mut raw).await.expect("read");
        let text = String::from_utf8(raw).expect("utf-8 response");
        let (head, body) = text.split_once("\r\n\r\n").expect("a full response");
        let mut lines = head.lines();
        let status: u16 = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .expect("status line");
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
            dechunk(body)
        } else {
            body.to_owned()
        };
        (status, headers, body)
    })
    .await
    .expect("HTTP response in time")
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = s.split_once("\r\n").expect("chunk size");
        let n = usize::from_str_radix(size.trim(), 16).expect("hex size");
        if n == 0 {
            return out;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
}

pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// A BOSH client: sid and the next rid.
pub struct Bosh {
    pub addr: SocketAddr,
    pub sid: String,
    pub rid: u64,
    /// The local address its requests come from (default: the system's choice).
    pub local: Option<IpAddr>,
}

/// POSTs a body to /http-bind and parses the answer (which must be 200 text/xml).
pub async fn bosh_post(addr: SocketAddr, body: &str) -> Element {
    bosh_post_from(None, addr, body).await
}

/// [`bosh_post`] from a chosen local address.
pub async fn bosh_post_from(local: Option<IpAddr>, addr: SocketAddr, body: &str) -> Element {
    let (status, headers, text) = http_from(
        local,
        addr,
        "POST",
        "/http-bind",
        &[("Content-Type", "text/xml; charset=utf-8")],
        body,
    )
    .await;
    assert_eq!(status, 200, "{text}");
    assert!(
        header(&headers, "content-type").is_some_and(|c| c.starts_with("text/xml")),
        "{headers:?}"
    );
    let el = parse(&text);
    assert!(el.is("body", HTTPBIND), "{el:?}");
    el
}

impl Bosh {
    /// Creates a session (`hold`, `wait`); returns the client and the creation response.
    pub async fn create(addr: SocketAddr, hold: u32, wait: u32) -> (Bosh, Element) {
        Bosh::create_from(None, addr, hold, wait).await
    }

    /// The session creation request for `hold` and `wait`, with its first rid.
    pub fn creation_body(hold: u32, wait: u32) -> (u64, String) {
        let rid = 1_000_000;
        (
            rid,
            format!(
                "<body xmlns='{HTTPBIND}' rid='{rid}' to='localhost' wait='{wait}' hold='{hold}' \
                 ver='1.11' xml:lang='en' xmpp:version='1.0' xmlns:xmpp='urn:xmpp:xbosh'/>"
            ),
        )
    }

    /// [`Bosh::create`] from a chosen local address (every later request too).
    pub async fn create_from(
        local: Option<IpAddr>,
        addr: SocketAddr,
        hold: u32,
        wait: u32,
    ) -> (Bosh, Element) {
        let (rid, body) = Bosh::creation_body(hold, wait);
        let resp = bosh_post_from(local, addr, &body).await;
        let sid = resp
            .attr("sid")
            .unwrap_or_else(|| panic!("sid in the creation response: {resp:?}"))
            .to_owned();
        (
            Bosh {
                addr,
                sid,
                rid: rid + 1,
                local,
            },
            resp,
        )
    }

    /// The body text for the next rid with `payload` and extra attributes.
    pub fn body(&mut self, attrs: &str, payload: &str) -> (u64, String) {
        let rid = self.rid;
        self.rid += 1;
        (
            rid,
            format!(
                "<body xmlns='{HTTPBIND}' rid='{rid}' sid='{}' {attrs}>{payload}</body>",
                self.sid
            ),
        )
    }

    /// Sends the next request and returns the answer.
    pub async fn send(&mut self, attrs: &str, payload: &str) -> Element {
        let (_, body) = self.body(attrs, payload);
        bosh_post_from(self.local, self.addr, &body).await
    }

    /// Polls (empty requests) until an element matching `pred` arrives; returns it.
    pub async fn poll_until(&mut self, pred: impl Fn(&Element) -> bool) -> Element {
        for _ in 0..20 {
            let resp = self.send("", "").await;
            assert_ne!(resp.attr("type"), Some("terminate"), "{resp:?}");
            if let Some(el) = resp.children().find(|c| pred(c)) {
                return el.clone();
            }
        }
        panic!("nothing matching arrived over BOSH");
    }

    /// Logs in with PLAIN, restarts and binds `resource`; returns the full JID.
    pub async fn login(
        addr: SocketAddr,
        user: &str,
        password: &str,
        resource: &str,
    ) -> (Bosh, String) {
        Bosh::login_from(None, addr, user, password, resource).await
    }

    /// [`Bosh::login`] from a chosen local address.
    pub async fn login_from(
        local: Option<IpAddr>,
        addr: SocketAddr,
        user: &str,
        password: &str,
        resource: &str,
    ) -> (Bosh, String) {
        let (mut b, resp) = Bosh::create_from(local, addr, 1, 2).await;
        let features = match resp.get_child("features", "http://etherx.jabber.org/streams") {
            Some(f) => f.clone(),
            None => {
                b.poll_until(|e| e.is("features", "http://etherx.jabber.org/streams"))
                    .await
            }
        };
        assert!(features.has_child("mechanisms", "urn:ietf:params:xml:ns:xmpp-sasl"));
        let resp = b
            .send(
                "",
                &format!(
                    "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{}</auth>",
                    plain_b64(user, password)
                ),
            )
            .await;
        assert!(
            resp.has_child("success", "urn:ietf:params:xml:ns:xmpp-sasl"),
            "{resp:?}"
        );
        let resp = b
            .send(
                "xmpp:restart='true' xmlns:xmpp='urn:xmpp:xbosh' to='localhost'",
                "",
            )
            .await;
        let features = resp
            .get_child("features", "http://etherx.jabber.org/streams")
            .expect("features after restart");
        assert!(features.has_child("bind", "urn:ietf:params:xml:ns:xmpp-bind"));
        let resp = b
            .send(
                "",
                &format!("<iq type='set' id='b1' xmlns='jabber:client'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>{resource}</resource></bind></iq>"),
            )
            .await;
        let iq = resp.get_child("iq", "jabber:client").expect("bind result");
        assert_eq!(iq.attr("type"), Some("result"));
        let jid = iq
            .get_child("bind", "urn:ietf:params:xml:ns:xmpp-bind")
            .and_then(|b| b.get_child("jid", "urn:ietf:params:xml:ns:xmpp-bind"))
            .expect("jid")
            .text();
        (b, jid)
    }
}

/// The body text of a message stanza.
pub fn body_of(el: &Element) -> Option<String> {
    el.get_child("body", "jabber:client").map(|b| b.text())
}
