//! Shared steps of the hostile-input catalogue (docs/bad-input.md): a pair of normal users
//! who keep chatting before, during and after an attack, so that each test shows the
//! server still serves everyone else and loses nothing that it accepted.

#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU32, Ordering};

use starling_tests::*;

static PAIRS: AtomicU32 = AtomicU32::new(0);

/// A loopback address other than 127.0.0.1 (per-IP limits count each separately).
pub fn loopback(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

/// Two logged-in users who chat while a test attacks the server.
pub struct Witnesses {
    pub alice: Conn,
    pub bob: Conn,
    alice_jid: String,
    bob_jid: String,
    sent: u32,
}

impl Witnesses {
    /// Creates two fresh accounts and logs both in from 127.0.0.1.
    pub async fn login(server: &TestServer) -> Witnesses {
        Witnesses::login_from(server, loopback(1)).await
    }

    /// Creates two fresh accounts and logs both in from `ip`.
    pub async fn login_from(server: &TestServer, ip: IpAddr) -> Witnesses {
        let n = PAIRS.fetch_add(1, Ordering::Relaxed);
        let (a, b) = (format!("wa{n}"), format!("wb{n}"));
        server.add_user(&a, "pw").await;
        server.add_user(&b, "pw").await;
        let alice = server.login_from(ip, &a, "pw", "w").await;
        let bob = server.login_from(ip, &b, "pw", "w").await;
        Witnesses {
            alice,
            bob,
            alice_jid: format!("{a}@localhost/w"),
            bob_jid: format!("{b}@localhost/w"),
            sent: 0,
        }
    }

    /// One message each way; each arrives once, from the right sender, with its body.
    pub async fn chat(&mut self, tag: &str) {
        self.sent += 1;
        let n = self.sent;
        self.alice
            .send(&format!(
                "<message to='{}' type='chat' id='w{n}'><body>{tag} {n}</body></message>",
                self.bob_jid
            ))
            .await;
        let got = self
            .bob
            .recv_until(|e| e.name() == "message" && e.attr("id") == Some(&*format!("w{n}")))
            .await;
        assert_eq!(got.attr("from"), Some(self.alice_jid.as_str()));
        assert_eq!(
            got.get_child("body", "jabber:client").map(|b| b.text()),
            Some(format!("{tag} {n}"))
        );
        self.bob
            .send(&format!(
                "<message to='{}' type='chat' id='r{n}'><body>re {tag}</body></message>",
                self.alice_jid
            ))
            .await;
        let got = self
            .alice
            .recv_until(|e| e.name() == "message" && e.attr("id") == Some(&*format!("r{n}")))
            .await;
        assert_eq!(got.attr("from"), Some(self.bob_jid.as_str()));
    }
}

/// The server's answer to `input` on a fresh, opened plaintext stream is `condition`.
pub async fn after_open_gets(server: &TestServer, input: &[u8], condition: &str) {
    let mut c = Conn::connect(server.c2s).await;
    c.open("localhost").await;
    c.flood(input).await;
    c.expect_stream_error(condition).await;
}

/// Logs a fresh user in (from 127.0.0.1) and returns the connection.
pub async fn fresh_user(server: &TestServer, name: &str) -> Conn {
    server.add_user(name, "pw").await;
    server.login(name, "pw", "r").await
}

/// One failed SCRAM-SHA-256 login over TCP (STARTTLS) from `from`, as `user` with a wrong
/// password.
pub async fn tcp_fails_login(server: &TestServer, from: IpAddr, user: &str) {
    let mut c = Conn::connect_from(server.c2s, from).await;
    c.open("localhost").await;
    c.starttls().await;
    let r = c
        .scram(starling_sasl::ScramHash::Sha256, false, user, "guess")
        .await;
    assert!(r.is_err(), "a wrong password fails");
}
