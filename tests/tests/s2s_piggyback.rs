//! Several local domains on one server-to-server stream (piggybacking, XEP-0220 §4.4):
//! a Starling serving a.test and chat.a.test talks to b.test over one connection, the second
//! domain authenticated by an extra `db:result` — checked by dialback when no certificate
//! helps, answered at once when a.test's certificate covers chat.a.test (XEP-0344) — and the
//! receiving side accepts stanzas from exactly the domains authenticated on the stream: an
//! extra domain that neither the certificate covers nor dialback verifies is refused, its
//! stanzas bounce, and the stream goes on for the domains already proven.

mod s2s_support;

use std::net::SocketAddr;

use s2s_support::*;
use starling_core::config::S2sPolicy;
use starling_tests::Conn;

/// a.test (also hosting chat.a.test) and b.test, both allowing dialback.
async fn two_domains_and_b(
    ca: &Ca,
    trusts: &Ca,
    a_cert: &'static [&'static str],
    bidi: bool,
    chat_route: bool,
) -> (Peer, Peer) {
    let (a_addr, b_addr): (SocketAddr, SocketAddr) = (free_port(), free_port());
    let a = Peer::start(PeerSpec {
        domain: "a.test",
        cert_names: a_cert,
        issuer: ca,
        trusts,
        policy: S2sPolicy::Dialback,
        s2s: a_addr,
        routes: vec![route("b.test", b_addr)],
        connect_timeout_secs: 10,
        tweak: Box::new(move |c| {
            c.server.hosts.push("chat.a.test".into());
            c.s2s.bidi = bidi;
        }),
    })
    .await;
    let b = Peer::start(PeerSpec {
        domain: "b.test",
        cert_names: &["b.test"],
        issuer: ca,
        trusts,
        policy: S2sPolicy::Dialback,
        s2s: b_addr,
        // Dialback asks each domain's authoritative server: both live at a.test's address
        // (unless the test wants chat.a.test unverifiable).
        routes: if chat_route {
            vec![route("a.test", a_addr), route("chat.a.test", a_addr)]
        } else {
            vec![route("a.test", a_addr)]
        },
        connect_timeout_secs: 10,
        tweak: Box::new(move |c| c.s2s.bidi = bidi),
    })
    .await;
    (a, b)
}

/// alice@a.test and carol@chat.a.test each send bob@b.test a message; bob answers both.
async fn both_domains_talk_to_bob(alice: &mut Conn, carol: &mut Conn, bob: &mut Conn) {
    alice
        .send("<message to='bob@b.test/laptop' id='from-a'><body>from a</body></message>")
        .await;
    let m = wait_for(bob, "alice's message", |e| is_msg_from(e, "alice@a.test")).await;
    assert_eq!(m.attr("id"), Some("from-a"));
    carol
        .send("<message to='bob@b.test/laptop' id='from-chat'><body>from chat</body></message>")
        .await;
    let m = wait_for(bob, "carol's message", |e| {
        is_msg_from(e, "carol@chat.a.test")
    })
    .await;
    assert_eq!(m.attr("id"), Some("from-chat"));
    bob.send("<message to='alice@a.test/phone' id='to-a'><body>hi alice</body></message>")
        .await;
    let m = wait_for(alice, "bob's answer", |e| is_msg_from(e, "bob@b.test")).await;
    assert_eq!(m.attr("id"), Some("to-a"));
    bob.send("<message to='carol@chat.a.test/pad' id='to-chat'><body>hi carol</body></message>")
        .await;
    let m = wait_for(carol, "bob's answer", |e| is_msg_from(e, "bob@b.test")).await;
    assert_eq!(m.attr("id"), Some("to-chat"));
}

#[tokio::test]
async fn a_second_local_domain_rides_the_stream_by_dialback() {
    let ca = Ca::new("Test CA");
    // No certificate verifies: every domain is authenticated by dialback. One stream per
    // direction (bidi off), so that each side's piggybacking shows.
    let stranger = Ca::new("Unrelated CA");
    let (a, b) = two_domains_and_b(&ca, &stranger, &["a.test"], false, true).await;
    let mut alice = a.online("alice", "phone").await;
    let mut carol = a.online_at("chat.a.test", "carol", "pad").await;
    let mut bob = b.online("bob", "laptop").await;
    both_domains_talk_to_bob(&mut alice, &mut carol, &mut bob).await;
    // a.test: two domain pairs, one connection.
    assert_eq!(a.server_pool().stream_count(), 2);
    assert_eq!(a.server_pool().connection_count(), 1);
    // b.test answers two different remote domains: one stream each (piggybacking shares a
    // stream among local domains only).
    assert_eq!(b.server_pool().stream_count(), 2);
    assert_eq!(b.server_pool().connection_count(), 2);
}

#[tokio::test]
async fn a_certificate_covering_both_domains_needs_no_dialback_check() {
    let ca = Ca::new("Test CA");
    // a.test's certificate names both its domains, b.test trusts it: b.test answers the
    // extra db:result at once. With bidi, everything uses the one connection a.test opened.
    let (a, b) = two_domains_and_b(&ca, &ca, &["a.test", "chat.a.test"], true, true).await;
    let mut alice = a.online("alice", "phone").await;
    let mut carol = a.online_at("chat.a.test", "carol", "pad").await;
    let mut bob = b.online("bob", "laptop").await;
    both_domains_talk_to_bob(&mut alice, &mut carol, &mut bob).await;
    assert_eq!(a.s2s().connections_opened(), 1);
    assert_eq!(b.s2s().connections_accepted(), 1);
    assert_eq!(a.s2s().connections_accepted(), 0);
    assert_eq!(b.s2s().connections_opened(), 0);
    assert_eq!(a.server_pool().stream_count(), 2);
    assert!(b.server_pool().has_link("b.test", "chat.a.test"));
}

#[tokio::test]
async fn an_extra_domain_nobody_vouches_for_is_refused_and_the_stream_goes_on() {
    let ca = Ca::new("Test CA");
    // a.test's valid certificate names only a.test, and b.test cannot reach chat.a.test's
    // server to check a dialback key: chat.a.test cannot be authenticated.
    let (a, b) = two_domains_and_b(&ca, &ca, &["a.test"], false, false).await;
    let mut alice = a.online("alice", "phone").await;
    let mut carol = a.online_at("chat.a.test", "carol", "pad").await;
    let mut bob = b.online("bob", "laptop").await;
    alice
        .send("<message to='bob@b.test/laptop' id='m1'><body>1</body></message>")
        .await;
    wait_for(&mut bob, "alice's message", |e| e.attr("id") == Some("m1")).await;
    carol
        .send("<message to='bob@b.test/laptop' id='c1'><body>let me in</body></message>")
        .await;
    let err = wait_for(&mut carol, "bounce", |e| e.attr("id") == Some("c1")).await;
    assert_eq!(err.attr("type"), Some("error"));
    assert_eq!(
        starling_tests::stanza_error_condition(&err).as_deref(),
        Some("remote-server-not-found")
    );
    // The stream still serves a.test.
    alice
        .send("<message to='bob@b.test/laptop' id='m2'><body>2</body></message>")
        .await;
    wait_for(&mut bob, "alice's second message", |e| {
        assert_ne!(e.attr("id"), Some("c1"), "carol's message was delivered");
        e.attr("id") == Some("m2")
    })
    .await;
    assert_eq!(a.s2s().connections_opened(), 1);
    bob.expect_none(std::time::Duration::from_millis(300), |e| {
        e.attr("id") == Some("c1")
    })
    .await;
}
