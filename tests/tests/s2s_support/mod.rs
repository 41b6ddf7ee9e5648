//! Shared setup of the s2s_* tests: a test CA made with rcgen, Starling servers for
//! `*.test` domains on loopback that reach each other through static routes only (never the
//! machine's resolver), and a client login for a domain other than `localhost`.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine;
use minidom::Element;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use starling_core::config::{S2sPolicy, S2sRoute};
use starling_tests::{Conn, TestServer};

/// A certificate authority for one test.
pub struct Ca {
    pub pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        Ca {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// (certificate PEM, key PEM) with `names` as identities: DNS-IDs, or, written
    /// `srv:_xmpp-server.example.org` and `xmpp:example.org`, SRV-IDs (otherName
    /// id-on-dnsSRV) and XmppAddrs (otherName id-on-xmppAddr).
    pub fn issue(&self, names: &[&str]) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let special = names.iter().any(|n| n.contains(':'));
        let mut params = if special {
            // rcgen writes otherName values only as UTF8String, and SRV-IDs are IA5String:
            // the whole subjectAltName extension is written here instead.
            let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
            p.custom_extensions = vec![subject_alt_name(names)];
            p
        } else {
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap()
        };
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// DER: one tag-length-value.
fn tlv(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    match body.len() {
        n if n < 0x80 => out.push(n as u8),
        n if n < 0x100 => out.extend([0x81, n as u8]),
        n => out.extend([0x82, (n >> 8) as u8, n as u8]),
    }
    out.extend_from_slice(body);
    out
}

/// A subjectAltName extension with DNS-IDs, SRV-IDs (`srv:`) and XmppAddrs (`xmpp:`).
fn subject_alt_name(names: &[&str]) -> rcgen::CustomExtension {
    let mut general_names = Vec::new();
    for name in names {
        let (oid_last, value) = if let Some(srv) = name.strip_prefix("srv:") {
            // id-on-dnsSRV 1.3.6.1.5.5.7.8.7, IA5String
            (0x07, tlv(0x16, srv.as_bytes()))
        } else if let Some(addr) = name.strip_prefix("xmpp:") {
            // id-on-xmppAddr 1.3.6.1.5.5.7.8.5, UTF8String
            (0x05, tlv(0x0c, addr.as_bytes()))
        } else {
            general_names.extend(tlv(0x82, name.as_bytes()));
            continue;
        };
        let oid = tlv(0x06, &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x08, oid_last]);
        general_names.extend(tlv(0xa0, &[oid, tlv(0xa0, &value)].concat()));
    }
    rcgen::CustomExtension::from_oid_content(&[2, 5, 29, 17], tlv(0x30, &general_names))
}

/// A free loopback port (bound then released; the server binds it right after). Picked
/// below the kernel's ephemeral range: a port from port 0 is in that range, where an
/// outgoing connection of a concurrent test could take it before the server binds it
/// (seen in CI as "Address already in use").
pub fn free_port() -> SocketAddr {
    use std::hash::{BuildHasher, Hasher};
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    if low > 12_000 {
        let span = u64::from(low - 10_000);
        let start = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        for i in 0..span {
            let port = 10_000 + ((start + i) % span) as u16;
            if let Ok(l) = std::net::TcpListener::bind(("127.0.0.1", port)) {
                return l.local_addr().unwrap();
            }
        }
    }
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// How to start one federating server.
pub struct PeerSpec<'a> {
    pub domain: &'a str,
    /// The names in its certificate (normally just the domain).
    pub cert_names: &'a [&'a str],
    /// Who issues its certificate.
    pub issuer: &'a Ca,
    /// Whose certificates it trusts.
    pub trusts: &'a Ca,
    pub policy: S2sPolicy,
    pub s2s: SocketAddr,
    pub routes: Vec<S2sRoute>,
    pub connect_timeout_secs: u64,
    /// Any other configuration change (limits, timeouts, a direct-TLS listener).
    pub tweak: Tweak,
}

/// A configuration change for one server.
pub type Tweak = Box<dyn FnOnce(&mut starling_core::Config) + Send>;

/// A `tweak` that changes nothing.
pub fn as_is() -> Tweak {
    Box::new(|_| {})
}

/// A Starling server hosting one `*.test` domain with federation on.
pub struct Peer {
    pub server: TestServer,
    pub domain: String,
    pub s2s: SocketAddr,
    _certs: tempfile::TempDir,
}

pub fn route(domain: &str, address: SocketAddr) -> S2sRoute {
    S2sRoute {
        domain: domain.into(),
        address,
        direct_tls: false,
    }
}

/// Logs to the test's output when `RUST_LOG` is set (nextest shows it for failures).
pub fn logs() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

impl Peer {
    pub async fn start(spec: PeerSpec<'_>) -> Peer {
        logs();
        let certs = tempfile::tempdir().unwrap();
        let (cert, key) = spec.issuer.issue(spec.cert_names);
        std::fs::write(certs.path().join("cert.pem"), cert).unwrap();
        std::fs::write(certs.path().join("key.pem"), key).unwrap();
        std::fs::write(certs.path().join("roots.pem"), &spec.trusts.pem).unwrap();
        let dir = certs.path().to_owned();
        let domain = spec.domain.to_owned();
        let tweak = spec.tweak;
        let server = TestServer::start_with(|c| {
            c.server.hosts = vec![domain.clone()];
            c.tls.cert = Some(dir.join("cert.pem"));
            c.tls.key = Some(dir.join("key.pem"));
            c.s2s.enabled = true;
            c.s2s.listen = spec.s2s;
            c.s2s.policy = spec.policy;
            c.s2s.trust_roots = Some(dir.join("roots.pem"));
            c.s2s.routes = spec.routes;
            c.s2s.dns = false;
            c.s2s.connect_timeout_secs = spec.connect_timeout_secs;
            tweak(c);
        })
        .await;
        Peer {
            server,
            domain: spec.domain.to_owned(),
            s2s: spec.s2s,
            _certs: certs,
        }
    }

    /// Creates `user@domain` and logs it in (PLAIN inside TLS), binding `resource`.
    pub async fn online(&self, user: &str, resource: &str) -> Conn {
        self.online_at(&self.domain, user, resource).await
    }

    /// Creates `user@host` on another of the server's hosts and logs it in.
    pub async fn online_at(&self, host: &str, user: &str, resource: &str) -> Conn {
        starling::accounts::add(&**self.server.server().storage(), host, user, "pw", 4096)
            .await
            .unwrap();
        self.login_at(host, user, resource).await
    }

    /// Logs an existing `user@domain` in, binding `resource`.
    pub async fn login(&self, user: &str, resource: &str) -> Conn {
        self.login_at(&self.domain, user, resource).await
    }

    /// Logs an existing `user@host` in, binding `resource`.
    pub async fn login_at(&self, host: &str, user: &str, resource: &str) -> Conn {
        let mut c = Conn::connect(self.server.c2s).await;
        c.open(host).await;
        c.starttls_only().await;
        c.open(host).await;
        let msg = base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0pw"));
        let ok = c.auth_raw("PLAIN", &msg).await;
        assert_eq!(ok.name(), "success", "{ok:?}");
        c.open(host).await;
        c.bind(Some(resource)).await;
        c
    }

    /// The server's federation side (listeners, pool, connection counters).
    pub fn s2s(&self) -> &starling_s2s::S2s {
        self.server.running().s2s.as_ref().expect("s2s enabled")
    }

    /// The federation pool of the server.
    pub fn server_pool(&self) -> std::sync::Arc<starling_s2s::Pool> {
        self.server
            .running()
            .s2s
            .as_ref()
            .expect("s2s enabled")
            .pool
            .clone()
    }

    /// The dialback secret the server keeps in its data directory.
    pub fn dialback_secret(&self) -> Vec<u8> {
        std::fs::read(self.server.data_dir().join("dialback-secret")).unwrap()
    }
}

/// Two servers, a.test and b.test, routed to each other.
pub async fn pair(
    a_policy: S2sPolicy,
    b_policy: S2sPolicy,
    ca: &Ca,
    trusted: &Ca,
    b_cert_names: &[&str],
) -> (Peer, Peer) {
    pair_with(a_policy, b_policy, ca, trusted, b_cert_names, as_is()).await
}

/// Like [`pair`], with a configuration change applied to a.test.
pub async fn pair_with(
    a_policy: S2sPolicy,
    b_policy: S2sPolicy,
    ca: &Ca,
    trusted: &Ca,
    b_cert_names: &[&str],
    a_tweak: Tweak,
) -> (Peer, Peer) {
    let (a_addr, b_addr) = (free_port(), free_port());
    let a = Peer::start(PeerSpec {
        domain: "a.test",
        cert_names: &["a.test"],
        issuer: ca,
        trusts: trusted,
        policy: a_policy,
        s2s: a_addr,
        routes: vec![route("b.test", b_addr)],
        connect_timeout_secs: 10,
        tweak: a_tweak,
    })
    .await;
    let b = Peer::start(PeerSpec {
        domain: "b.test",
        cert_names: b_cert_names,
        issuer: ca,
        trusts: trusted,
        policy: b_policy,
        s2s: b_addr,
        routes: vec![route("a.test", a_addr)],
        connect_timeout_secs: 10,
        tweak: as_is(),
    })
    .await;
    (a, b)
}

pub fn is_msg_from(el: &Element, from: &str) -> bool {
    el.name() == "message" && el.attr("from").is_some_and(|f| f.starts_with(from))
}

/// Waits for a stanza matching `pred`, skipping others (roster pushes, presence...).
pub async fn wait_for(c: &mut Conn, what: &str, pred: impl Fn(&Element) -> bool) -> Element {
    eprintln!("waiting for {what}");
    tokio::time::timeout(
        Duration::from_secs(15),
        c.recv_until(|e| {
            eprintln!("  got {}", starling_proto::writer::element_to_string(e));
            pred(e)
        }),
    )
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// Subscriptions both ways, presence both ways, a message each way, and IQs that round-trip
/// (a vCard served by the remote server for its user, a ping to the remote server).
pub async fn im_across(alice: &mut Conn, bob: &mut Conn) {
    // Both clients fetch their rosters (so they receive roster pushes and subscription
    // answers, RFC 6121 §2.1.6) and go online.
    for c in [&mut *alice, &mut *bob] {
        c.send("<iq type='get' id='r0'><query xmlns='jabber:iq:roster'/></iq>")
            .await;
        wait_for(c, "roster", |e| e.attr("id") == Some("r0")).await;
        c.send("<presence/>").await;
    }
    // alice asks to see bob's presence; bob (on the other server) gets the request.
    alice
        .send("<presence to='bob@b.test' type='subscribe'/>")
        .await;
    let req = wait_for(bob, "subscribe from alice", |e| {
        e.name() == "presence" && e.attr("type") == Some("subscribe")
    })
    .await;
    assert_eq!(req.attr("from"), Some("alice@a.test"));
    bob.send("<presence to='alice@a.test' type='subscribed'/>")
        .await;
    // alice learns of the approval and then sees bob's current presence.
    let ok = wait_for(alice, "subscribed from bob", |e| {
        e.name() == "presence" && e.attr("type") == Some("subscribed")
    })
    .await;
    assert_eq!(ok.attr("from"), Some("bob@b.test"));
    let p = wait_for(alice, "bob's presence", |e| {
        e.name() == "presence"
            && e.attr("type").is_none()
            && e.attr("from") == Some("bob@b.test/laptop")
    })
    .await;
    assert_eq!(
        p.attr("to").map(|t| t.starts_with("alice@a.test")),
        Some(true)
    );
    // And the other way round.
    bob.send("<presence to='alice@a.test' type='subscribe'/>")
        .await;
    wait_for(alice, "subscribe from bob", |e| {
        e.name() == "presence"
            && e.attr("type") == Some("subscribe")
            && e.attr("from") == Some("bob@b.test")
    })
    .await;
    alice
        .send("<presence to='bob@b.test' type='subscribed'/>")
        .await;
    wait_for(bob, "alice's presence", |e| {
        e.name() == "presence"
            && e.attr("type").is_none()
            && e.attr("from") == Some("alice@a.test/phone")
    })
    .await;
    // Subsequent presence is broadcast to the remote subscriber.
    alice.send("<presence><show>away</show></presence>").await;
    let away = wait_for(bob, "alice away", |e| {
        e.name() == "presence" && e.attr("from") == Some("alice@a.test/phone")
    })
    .await;
    assert_eq!(
        away.get_child("show", "jabber:client").map(|s| s.text()),
        Some("away".into())
    );
    // Messages both ways, in jabber:client on each side.
    alice
        .send("<message to='bob@b.test' type='chat' id='m1'><body>hello bob</body></message>")
        .await;
    let m = wait_for(bob, "message from alice", |e| {
        is_msg_from(e, "alice@a.test")
    })
    .await;
    assert!(m.is("message", "jabber:client"), "{m:?}");
    assert_eq!(m.attr("from"), Some("alice@a.test/phone"));
    assert_eq!(
        m.get_child("body", "jabber:client").map(|b| b.text()),
        Some("hello bob".into())
    );
    bob.send("<message to='alice@a.test/phone' type='chat'><body>hi alice</body></message>")
        .await;
    let m = wait_for(alice, "message from bob", |e| is_msg_from(e, "bob@b.test")).await;
    assert_eq!(
        m.get_child("body", "jabber:client").map(|b| b.text()),
        Some("hi alice".into())
    );
    // An IQ the remote server answers for its user (vCard), and a ping to the server.
    bob.send("<iq type='set' id='v1'><vCard xmlns='vcard-temp'><FN>Bob</FN></vCard></iq>")
        .await;
    wait_for(bob, "vCard stored", |e| e.attr("id") == Some("v1")).await;
    alice
        .send("<iq type='get' id='v2' to='bob@b.test'><vCard xmlns='vcard-temp'/></iq>")
        .await;
    let v = wait_for(alice, "bob's vCard", |e| e.attr("id") == Some("v2")).await;
    assert_eq!(v.attr("type"), Some("result"), "{v:?}");
    assert_eq!(v.attr("from"), Some("bob@b.test"));
    let fname = v
        .get_child("vCard", "vcard-temp")
        .and_then(|c| c.get_child("FN", "vcard-temp"))
        .map(Element::text);
    assert_eq!(fname.as_deref(), Some("Bob"));
    alice
        .send("<iq type='get' id='p1' to='b.test'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    let pong = wait_for(alice, "ping answer", |e| e.attr("id") == Some("p1")).await;
    assert_eq!(pong.attr("type"), Some("result"), "{pong:?}");
    assert_eq!(pong.attr("from"), Some("b.test"));
}
