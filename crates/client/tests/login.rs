//! The client against a real Starling server started in-process on 127.0.0.1:0: STARTTLS
//! with each mechanism, direct TLS, channel binding, a wrong password, trust checks, and a
//! message from alice to bob.

use std::net::SocketAddr;
use std::time::Duration;

use starling::Running;
use starling_client::{
    chat_message, Client, ClientConfig, ClientError, SaslMechanism, TlsMode, Trust,
};
use starling_core::config::{ListenerConfig, ListenerKind};
use tempfile::TempDir;

const PASSWORD: &str = "correct horse battery staple";

struct TestServer {
    running: Running,
    /// Holds the data directory (database, generated certificate) until the test ends.
    dir: TempDir,
}

impl TestServer {
    async fn start() -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let mut config = starling_core::Config::default();
        config.server.data_dir = dir.path().to_path_buf();
        config.listeners = vec![
            ListenerConfig {
                kind: ListenerKind::C2s,
                address: "127.0.0.1:0".parse().unwrap(),
            },
            ListenerConfig {
                kind: ListenerKind::C2sDirectTls,
                address: "127.0.0.1:0".parse().unwrap(),
            },
        ];
        let running = starling::start(config).await.unwrap();
        for user in ["alice", "bob"] {
            starling::accounts::add(
                &**running.server.storage(),
                "localhost",
                user,
                PASSWORD,
                4096,
            )
            .await
            .unwrap();
        }
        TestServer { running, dir }
    }

    fn addr(&self, kind: ListenerKind) -> SocketAddr {
        self.running.listeners.address(kind).unwrap()
    }

    /// STARTTLS, trusting the server's generated self-signed certificate.
    fn config(&self, user: &str) -> ClientConfig {
        let mut cfg = ClientConfig::new(
            format!("{user}@localhost").parse().unwrap(),
            PASSWORD,
            self.addr(ListenerKind::C2s),
            Trust::CaFile(self.dir.path().join("tls/cert.pem")),
        );
        cfg.timeout = Duration::from_secs(10);
        cfg
    }

    async fn stop(self) {
        self.running.shutdown().await;
    }
}

#[tokio::test]
async fn starttls_login_with_each_mechanism() {
    let server = TestServer::start().await;
    for mechanism in [
        SaslMechanism::ScramSha256Plus,
        SaslMechanism::ScramSha1Plus,
        SaslMechanism::ScramSha256,
        SaslMechanism::ScramSha1,
        SaslMechanism::Plain,
    ] {
        let mut cfg = server.config("alice");
        cfg.mechanisms = vec![mechanism];
        let client = Client::connect(&cfg)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", mechanism.name()));
        assert_eq!(client.mechanism(), mechanism);
        assert_eq!(client.jid().bare().as_str(), "alice@localhost");
        assert!(client.jid().resource().is_some());
        client.close().await.unwrap();
    }
    server.stop().await;
}

#[tokio::test]
async fn default_preference_uses_channel_binding() {
    let server = TestServer::start().await;
    let client = Client::connect(&server.config("alice")).await.unwrap();
    assert_eq!(client.mechanism(), SaslMechanism::ScramSha256Plus);
    client.close().await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn direct_tls_login_with_requested_resource() {
    let server = TestServer::start().await;
    let mut cfg = server.config("bob");
    cfg.tls = TlsMode::Direct;
    cfg.server = server.addr(ListenerKind::C2sDirectTls);
    cfg.resource = Some("laptop".into());
    let client = Client::connect(&cfg).await.unwrap();
    assert_eq!(client.jid().as_str(), "bob@localhost/laptop");
    assert_eq!(client.mechanism(), SaslMechanism::ScramSha256Plus);
    client.close().await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn wrong_password_is_not_authorized() {
    let server = TestServer::start().await;
    for mechanism in [SaslMechanism::ScramSha256Plus, SaslMechanism::Plain] {
        let mut cfg = server.config("alice");
        cfg.password = "wrong".into();
        cfg.mechanisms = vec![mechanism];
        match Client::connect(&cfg).await {
            Err(ClientError::Sasl(condition)) => assert_eq!(condition, "not-authorized"),
            other => panic!(
                "{}: expected not-authorized, got {other:?}",
                mechanism.name()
            ),
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn untrusted_certificate_is_refused_unless_insecure() {
    let server = TestServer::start().await;
    // A CA file that did not issue the server's certificate.
    let other = tempfile::tempdir().unwrap();
    starling::cert::generate_self_signed(&["localhost".to_owned()], other.path()).unwrap();
    let mut cfg = server.config("alice");
    cfg.trust = Trust::CaFile(other.path().join("cert.pem"));
    match Client::connect(&cfg).await {
        Err(ClientError::Tls(_)) => {}
        other => panic!("expected a TLS error, got {other:?}"),
    }
    cfg.trust = Trust::InsecureAcceptAny;
    let client = Client::connect(&cfg).await.unwrap();
    client.close().await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn alice_sends_bob_receives() {
    let server = TestServer::start().await;
    let mut bob = Client::connect(&server.config("bob")).await.unwrap();
    bob.send_presence().await.unwrap();
    bob.ping().await.unwrap();
    let mut alice = Client::connect(&server.config("alice")).await.unwrap();
    alice
        .send(&chat_message("bob@localhost", "Hello, Bob <3 & more"))
        .await
        .unwrap();
    let received = loop {
        let stanza = tokio::time::timeout(Duration::from_secs(5), bob.recv())
            .await
            .expect("bob received nothing")
            .unwrap();
        if stanza.name() == "message" {
            break stanza;
        }
    };
    assert_eq!(received.attr("from"), Some(alice.jid().as_str()));
    assert_eq!(
        received
            .get_child("body", "jabber:client")
            .map(|b| b.text()),
        Some("Hello, Bob <3 & more".to_owned())
    );
    alice.close().await.unwrap();
    bob.close().await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn scram_cache_skips_pbkdf2_and_its_entry_is_what_the_server_checks() {
    use starling_client::SaltedPasswordCache;
    use starling_sasl::ScramHash;
    let server = TestServer::start().await;
    let cache = SaltedPasswordCache::new();
    let mut cfg = server.config("alice");
    cfg.mechanisms = vec![SaslMechanism::ScramSha256];
    cfg.scram_cache = Some(cache.clone());
    Client::connect(&cfg).await.unwrap().close().await.unwrap();
    assert_eq!(cache.len(), 1, "a verified login is cached");
    let (salt, iterations, salted) = cache
        .get("alice", ScramHash::Sha256, PASSWORD)
        .expect("cached under the account, hash and password");
    assert_eq!(iterations, 4096);
    assert_eq!(salted.len(), 32);

    // The next login takes the SaltedPassword from the cache: a corrupted entry makes the
    // client's proof wrong, and the server refuses it.
    let mut bad = salted.clone();
    bad[0] ^= 1;
    cache.insert(
        "alice",
        ScramHash::Sha256,
        PASSWORD,
        (&salt, iterations, &bad),
    );
    let Err(err) = Client::connect(&cfg).await else {
        panic!("the corrupted entry was not used");
    };
    assert!(
        matches!(err, ClientError::Sasl(ref c) if c == "not-authorized"),
        "a wrong proof is an authentication failure: {err}"
    );

    // The right entry logs in, and a different password never reuses it.
    cache.insert(
        "alice",
        ScramHash::Sha256,
        PASSWORD,
        (&salt, iterations, &salted),
    );
    Client::connect(&cfg).await.unwrap().close().await.unwrap();
    assert!(cache.get("alice", ScramHash::Sha256, "another").is_none());
    server.stop().await;
}
