//! Helpers for the SIP gateway tests: a server with the gateway on loopback and a static
//! route for `sip.example`, real `sipp` user agents (Debian `sip-tester`) running the
//! scenarios of `interop/sip/`, and a raw UDP SIP peer for the edge cases sipp cannot
//! script.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use minidom::Element;
use starling_core::config::{SipMessageFormat, SipRoute, SipTransport};
use starling_tests::*;
use tokio::net::UdpSocket;
use tokio::process::{Child, Command};

pub const CLIENT: &str = "jabber:client";
/// The gateway domain the tests use (the default: `sip.` + the first host).
pub const GW: &str = "sip.localhost";
/// How bob of sip.example appears in XMPP.
pub const BOB: &str = "bob%sip.example@sip.localhost";

/// A port that is free on 127.0.0.1 for UDP and TCP right now.
pub async fn free_port() -> u16 {
    loop {
        let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let port = udp.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A server with alice and carol, the gateway on a free loopback port, and `sip.example`
/// routed to 127.0.0.1:`route_port` (where a sipp UAS listens, or a sipp UAC sends from).
pub struct GatewayServer {
    pub server: TestServer,
    pub gateway: SocketAddr,
}

pub async fn gateway_server(route_port: u16, format: SipMessageFormat) -> GatewayServer {
    gateway_server_with(route_port, |c| c.sip.message_format = format).await
}

pub async fn gateway_server_with(
    route_port: u16,
    tweak: impl Fn(&mut starling_core::Config),
) -> GatewayServer {
    // The gateway listens on a port picked here; another process may take it between the
    // pick and the bind, so pick again then (a few times).
    let mut attempt = 0;
    let (server, gateway) = loop {
        attempt += 1;
        let port = free_port().await;
        let gateway: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let started = TestServer::try_start_with(|c| {
            c.sip.enabled = true;
            c.sip.listen = gateway;
            c.sip.routes = vec![SipRoute {
                domain: "sip.example".into(),
                address: format!("127.0.0.1:{route_port}").parse().unwrap(),
                transport: SipTransport::Udp,
            }];
            tweak(c);
        })
        .await;
        match started {
            Ok(server) => break (server, gateway),
            Err(starling::StartError::Listen(e))
                if e.kind() == std::io::ErrorKind::AddrInUse && attempt < 5 => {}
            Err(e) => panic!("server starts: {e}"),
        }
    };
    for u in ["alice", "carol"] {
        server.add_user(u, &format!("pw-{u}")).await;
    }
    GatewayServer { server, gateway }
}

/// Logs `user` in with resource `res`, sends initial presence and consumes its echo.
pub async fn online(server: &TestServer, user: &str, res: &str) -> Conn {
    let mut c = server.login(user, &format!("pw-{user}"), res).await;
    c.send("<iq type='get' id='r1'><query xmlns='jabber:iq:roster'/></iq>")
        .await;
    c.recv_until(|e| e.attr("id") == Some("r1")).await;
    c.send("<presence/>").await;
    c.recv_until(|e| e.name() == "presence").await;
    c
}

/// `interop/sip/<name>`.
pub fn scenario(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../interop/sip")
        .join(name)
}

/// A running sipp.
pub struct Sipp {
    child: Child,
    pub name: String,
    dir: PathBuf,
}

/// Starts sipp with a scenario of `interop/sip/`, bound to 127.0.0.1:`port`. `extra` are
/// more arguments (the remote host for a UAC, `-s user`, ...). Fails the test clearly when
/// sipp is not installed (scripts/test installs Debian's `sip-tester`).
pub fn sipp(scenario_name: &str, port: u16, extra: &[&str]) -> Sipp {
    sipp_in(&std::env::temp_dir(), scenario_name, port, extra)
}

/// [`sipp`] run in `dir` (where it reads `[file name=...]` inserts and writes its logs).
pub fn sipp_in(dir: &std::path::Path, scenario_name: &str, port: u16, extra: &[&str]) -> Sipp {
    let path = scenario(scenario_name);
    let mut cmd = Command::new("sipp");
    cmd.arg("-sf")
        .arg(&path)
        .args(["-i", "127.0.0.1", "-p", &port.to_string()])
        .args(["-m", "1", "-nostdin", "-timeout", "20", "-timeout_error"])
        .args(["-trace_err", "-trace_msg"])
        .args(extra)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = cmd
        .spawn()
        .expect("sipp runs (Debian package sip-tester; scripts/test installs it)");
    Sipp {
        child,
        name: scenario_name.to_owned(),
        dir: dir.to_owned(),
    }
}

impl Sipp {
    /// Waits for sipp to end (at most 30 s) and asserts it exited 0: every call of the
    /// scenario succeeded, every `check_it` regular expression matched.
    pub async fn success(self) {
        let name = self.name.clone();
        let (code, out) = self.finish().await;
        assert_eq!(code, Some(0), "sipp {name} failed:\n{out}");
    }

    /// Waits for sipp to end (at most 30 s): its exit code and output.
    pub async fn finish(mut self) -> (Option<i32>, String) {
        let pid = self.child.id();
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("sipp ends within 30 s")
            .expect("sipp status");
        let mut out = String::new();
        if let Some(mut s) = self.child.stdout.take() {
            use tokio::io::AsyncReadExt;
            let _ = s.read_to_string(&mut out).await;
        }
        if let Some(mut s) = self.child.stderr.take() {
            use tokio::io::AsyncReadExt;
            let _ = s.read_to_string(&mut out).await;
        }
        if let Some(pid) = pid {
            out.push_str(&self.logs(pid));
        }
        (status.code(), out)
    }

    /// The error and message logs sipp wrote for this run (and removes them).
    fn logs(&self, pid: u32) -> String {
        let stem = self.name.trim_end_matches(".xml");
        let mut out = String::new();
        for kind in ["errors", "messages"] {
            let p = self.dir.join(format!("{stem}_{pid}_{kind}.log"));
            if let Ok(text) = std::fs::read_to_string(&p) {
                out.push_str(&format!("\n--- {kind} ---\n{text}"));
                let _ = std::fs::remove_file(&p);
            }
        }
        out
    }
}

/// The first child `name` in jabber:client.
pub fn child_text(el: &Element, name: &str) -> Option<String> {
    el.get_child(name, CLIENT).map(Element::text)
}

/// Waits until a UDP SIP UA listening on `port` is ready (sipp takes a moment to bind).
pub async fn settle() {
    tokio::time::sleep(Duration::from_millis(300)).await;
}

/// A raw SIP peer on UDP, for requests sipp cannot shape (oversized, spoofed...).
pub struct RawPeer {
    pub socket: UdpSocket,
}

impl RawPeer {
    pub async fn bind(port: u16) -> RawPeer {
        RawPeer {
            socket: UdpSocket::bind(("127.0.0.1", port)).await.unwrap(),
        }
    }

    /// Sends `request` to `to` and returns the status code of the first response.
    pub async fn status_of(&self, request: &str, to: SocketAddr) -> u16 {
        self.socket.send_to(request.as_bytes(), to).await.unwrap();
        let mut buf = vec![0u8; 65536];
        let (n, _) = tokio::time::timeout(STEP_TIMEOUT, self.socket.recv_from(&mut buf))
            .await
            .expect("a response")
            .unwrap();
        let text = String::from_utf8_lossy(&buf[..n]);
        text.split(' ').nth(1).unwrap().parse().unwrap()
    }
}

/// A MESSAGE from `from_uri` to `sip:<to_user>@localhost` with a text/plain `body`.
pub fn raw_message(
    local_port: u16,
    from_uri: &str,
    to_user: &str,
    content_type: &str,
    body: &str,
) -> String {
    format!(
        "MESSAGE sip:{to_user}@localhost SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:{local_port};branch=z9hG4bK{}\r\n\
From: <{from_uri}>;tag=raw1\r\n\
To: <sip:{to_user}@localhost>\r\n\
Call-ID: {}@127.0.0.1\r\n\
CSeq: 1 MESSAGE\r\n\
Max-Forwards: 70\r\n\
Content-Type: {content_type}\r\n\
Content-Length: {}\r\n\r\n{body}",
        rand_token(),
        rand_token(),
        body.len()
    )
}

fn rand_token() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(1);
    format!(
        "{}x{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

impl RawPeer {
    /// The next SIP message the peer receives, and where it came from.
    pub async fn recv_msg(&self) -> (starling_sipgw::sip::SipMessage, SocketAddr) {
        let mut buf = vec![0u8; 65536];
        let (n, from) = tokio::time::timeout(STEP_TIMEOUT, self.socket.recv_from(&mut buf))
            .await
            .expect("a SIP message")
            .unwrap();
        let msg = starling_sipgw::sip::SipMessage::parse(&buf[..n], 65536).expect("valid SIP");
        (msg, from)
    }

    /// Answers a request 200 OK.
    pub async fn ok(&self, req: &starling_sipgw::sip::SipMessage, to: SocketAddr) {
        self.answer(req, 200, to).await;
    }

    /// Answers a request with `code`.
    pub async fn answer(&self, req: &starling_sipgw::sip::SipMessage, code: u16, to: SocketAddr) {
        let r = req.response(code, starling_sipgw::sip::reason(code), Some("peer"));
        self.socket.send_to(&r.to_bytes(), to).await.unwrap();
    }
}

/// Runs `xmllint --noout --schema interop/sip/schema/pidf.xsd` on `doc`: true when valid.
pub fn pidf_is_valid(doc: &[u8]) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.xml");
    std::fs::write(&path, doc).unwrap();
    let out = std::process::Command::new("xmllint")
        .arg("--noout")
        .arg("--schema")
        .arg(scenario("schema/pidf.xsd"))
        .arg(&path)
        .output()
        .expect("xmllint runs (Debian package libxml2-utils; scripts/test installs it)");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A raw SIP peer on TCP (requests above 1300 bytes come over TCP, RFC 3428 §5).
pub struct TcpPeer {
    pub listener: tokio::net::TcpListener,
}

impl TcpPeer {
    pub async fn bind(port: u16) -> TcpPeer {
        TcpPeer {
            listener: tokio::net::TcpListener::bind(("127.0.0.1", port))
                .await
                .unwrap(),
        }
    }

    /// Accepts one connection, reads one request and answers it 200 OK.
    pub async fn recv_and_ok(&self) -> starling_sipgw::sip::SipMessage {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut stream, _) = tokio::time::timeout(STEP_TIMEOUT, self.listener.accept())
            .await
            .expect("a TCP connection")
            .unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let len = loop {
            if let Some(n) = starling_sipgw::sip::frame_len(&buf, 65536).unwrap() {
                break n;
            }
            let n = tokio::time::timeout(STEP_TIMEOUT, stream.read(&mut chunk))
                .await
                .expect("request bytes")
                .unwrap();
            assert!(n > 0, "connection closed before a whole request");
            buf.extend_from_slice(&chunk[..n]);
        };
        let msg = starling_sipgw::sip::SipMessage::parse(&buf[..len], 65536).unwrap();
        let ok = msg.response(200, "OK", Some("peer"));
        stream.write_all(&ok.to_bytes()).await.unwrap();
        msg
    }
}
