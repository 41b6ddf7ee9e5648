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

    /// (certificate PEM, key PEM) with `names` as DNS-IDs.
    pub fn issue(&self, names: &[&str]) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// A free loopback port (bound then released; the server binds it right after).
pub fn free_port() -> SocketAddr {
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
        starling::accounts::add(
            &**self.server.server().storage(),
            &self.domain,
            user,
            "pw",
            4096,
        )
        .await
        .unwrap();
        self.login(user, resource).await
    }

    /// Logs an existing `user@domain` in, binding `resource`.
    pub async fn login(&self, user: &str, resource: &str) -> Conn {
        let mut c = Conn::connect(self.server.c2s).await;
        c.open(&self.domain).await;
        c.starttls_only().await;
        c.open(&self.domain).await;
        let msg = base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0pw"));
        let ok = c.auth_raw("PLAIN", &msg).await;
        assert_eq!(ok.name(), "success", "{ok:?}");
        c.open(&self.domain).await;
        c.bind(Some(resource)).await;
        c
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
