//! Federation between two Starling servers on loopback (a.test and b.test, static routes,
//! certificates from a test CA): the IM flows of RFC 6121 across domains with certificate
//! authentication (SASL EXTERNAL) and with Server Dialback, certificates whose only identity
//! is an SRV-ID or an XmppAddr (RFC 6125, RFC 6120 §13.7.1.4), and refusal of a peer whose
//! certificate names another domain under the strict policy.

mod s2s_support;

use std::time::Duration;

use s2s_support::*;
use starling_core::config::S2sPolicy;
use starling_tests::stanza_error_condition;

#[tokio::test]
async fn users_on_two_servers_federate_with_certificates() {
    let ca = Ca::new("Test CA");
    // Strict policy on both sides: only SASL EXTERNAL can authenticate the streams.
    let (a, b) = pair(S2sPolicy::Verify, S2sPolicy::Verify, &ca, &ca, &["b.test"]).await;
    let mut alice = a.online("alice", "phone").await;
    let mut bob = b.online("bob", "laptop").await;
    im_across(&mut alice, &mut bob).await;
    // One outbound stream per direction, re-used for everything above.
    assert_eq!(a.server_pool().stream_count(), 1);
    assert_eq!(b.server_pool().stream_count(), 1);

    // bob leaves: alice sees him go. He comes back: his server probes alice's presence and
    // alice's server answers it (RFC 6121 §4.3 across domains); alice sees him come back.
    bob.close().await;
    wait_for(&mut alice, "bob unavailable", |e| {
        e.name() == "presence"
            && e.attr("type") == Some("unavailable")
            && e.attr("from") == Some("bob@b.test/laptop")
    })
    .await;
    let mut bob = b.login("bob", "desk").await;
    bob.send("<presence/>").await;
    let probed = wait_for(&mut bob, "alice's presence (probe answer)", |e| {
        e.name() == "presence" && e.attr("from") == Some("alice@a.test/phone")
    })
    .await;
    assert_eq!(probed.attr("type"), None, "{probed:?}");
    wait_for(&mut alice, "bob available again", |e| {
        e.name() == "presence"
            && e.attr("type").is_none()
            && e.attr("from") == Some("bob@b.test/desk")
    })
    .await;
}

/// b.test's certificate names it only by `identity` (no DNS-ID); both sides insist on valid
/// certificates and use one stream per direction, so b's certificate is checked as a server
/// certificate (a's outbound stream) and as a client certificate (SASL EXTERNAL inbound).
async fn federate_with_b_identified_by(identity: &str) {
    let ca = Ca::new("Test CA");
    let (a, b) = pair_with(
        S2sPolicy::Verify,
        S2sPolicy::Verify,
        &ca,
        &ca,
        &[identity],
        Box::new(|c| c.s2s.bidi = false),
    )
    .await;
    let mut alice = a.online("alice", "phone").await;
    let mut bob = b.online("bob", "laptop").await;
    alice
        .send("<message to='bob@b.test/laptop' id='s1'><body>to b</body></message>")
        .await;
    let m = wait_for(&mut bob, "alice's message", |e| {
        is_msg_from(e, "alice@a.test")
    })
    .await;
    assert_eq!(m.attr("id"), Some("s1"));
    bob.send("<message to='alice@a.test/phone' id='s2'><body>to a</body></message>")
        .await;
    let m = wait_for(&mut alice, "bob's message", |e| {
        is_msg_from(e, "bob@b.test")
    })
    .await;
    assert_eq!(m.attr("id"), Some("s2"));
    // Two streams, each authenticated by certificate (Verify allows nothing else).
    assert_eq!(a.s2s().connections_opened(), 1);
    assert_eq!(b.s2s().connections_opened(), 1);
}

#[tokio::test]
async fn a_certificate_with_only_an_srv_id_authenticates_its_domain() {
    federate_with_b_identified_by("srv:_xmpp-server.b.test").await;
}

#[tokio::test]
async fn a_certificate_with_only_an_xmpp_addr_authenticates_its_domain() {
    federate_with_b_identified_by("xmpp:b.test").await;
}

#[tokio::test]
async fn an_srv_id_for_another_service_does_not_authenticate() {
    let ca = Ca::new("Test CA");
    let (a, b) = pair(
        S2sPolicy::Verify,
        S2sPolicy::Verify,
        &ca,
        &ca,
        &["srv:_xmpp-client.b.test", "xmpp:bob@b.test"],
    )
    .await;
    let mut alice = a.online("alice", "phone").await;
    let _bob = b.online("bob", "laptop").await;
    alice
        .send("<message to='bob@b.test' id='x3'><body>hi</body></message>")
        .await;
    let err = wait_for(&mut alice, "bounce", |e| e.attr("id") == Some("x3")).await;
    assert_eq!(
        stanza_error_condition(&err).as_deref(),
        Some("remote-server-not-found")
    );
}

#[tokio::test]
async fn direct_tls_routes_and_idle_streams_are_reopened() {
    let ca = Ca::new("Test CA");
    let (a_addr, b_plain, b_tls) = (free_port(), free_port(), free_port());
    // b.test also listens for direct TLS (XEP-0368) and a.test's route says to use it; a.test
    // closes idle outbound streams after one second.
    let a = Peer::start(PeerSpec {
        domain: "a.test",
        cert_names: &["a.test"],
        issuer: &ca,
        trusts: &ca,
        policy: S2sPolicy::Verify,
        s2s: a_addr,
        routes: vec![starling_core::config::S2sRoute {
            domain: "b.test".into(),
            address: b_tls,
            direct_tls: true,
        }],
        connect_timeout_secs: 10,
        tweak: Box::new(|c| c.s2s.idle_timeout_secs = 1),
    })
    .await;
    let b = Peer::start(PeerSpec {
        domain: "b.test",
        cert_names: &["b.test"],
        issuer: &ca,
        trusts: &ca,
        policy: S2sPolicy::Verify,
        s2s: b_plain,
        routes: vec![route("a.test", a_addr)],
        connect_timeout_secs: 10,
        tweak: Box::new(move |c| c.s2s.listen_direct_tls = Some(b_tls)),
    })
    .await;
    let mut alice = a.online("alice", "phone").await;
    let mut bob = b.online("bob", "laptop").await;
    for round in 0..2 {
        let body = format!("round {round}");
        alice
            .send(&format!(
                "<message to='bob@b.test/laptop' type='chat'><body>{body}</body></message>"
            ))
            .await;
        let m = wait_for(&mut bob, "alice's message", |e| {
            is_msg_from(e, "alice@a.test")
        })
        .await;
        assert_eq!(
            m.get_child("body", "jabber:client").map(|b| b.text()),
            Some(body)
        );
        assert_eq!(a.server_pool().stream_count(), 1);
        // Idle for longer than idle_timeout_secs: the stream is closed...
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while a.server_pool().stream_count() > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "idle stream not closed"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // ...and the next round opens a new one.
    }
}

#[tokio::test]
async fn users_on_two_servers_federate_with_dialback() {
    let ca = Ca::new("Test CA");
    // Each side trusts a CA that issued nothing it sees: certificates never verify, so the
    // streams can only be authenticated by dialback.
    let stranger = Ca::new("Unrelated CA");
    let (a, b) = pair(
        S2sPolicy::Dialback,
        S2sPolicy::Dialback,
        &ca,
        &stranger,
        &["b.test"],
    )
    .await;
    let mut alice = a.online("alice", "phone").await;
    let mut bob = b.online("bob", "laptop").await;
    im_across(&mut alice, &mut bob).await;
}

#[tokio::test]
async fn a_peer_with_a_certificate_for_another_domain_is_refused_under_verify() {
    let ca = Ca::new("Test CA");
    // b.test presents a certificate for evil.test; a.test insists on valid certificates.
    let (a, b) = pair(
        S2sPolicy::Verify,
        S2sPolicy::Dialback,
        &ca,
        &ca,
        &["evil.test"],
    )
    .await;
    let mut alice = a.online("alice", "phone").await;
    let mut bob = b.online("bob", "laptop").await;
    // b -> a: a offers neither EXTERNAL (wrong identity) nor dialback (policy): bob's
    // message comes back as an error and never reaches alice.
    bob.send("<message to='alice@a.test' id='x1'><body>let me in</body></message>")
        .await;
    let err = wait_for(&mut bob, "bounce", |e| e.attr("id") == Some("x1")).await;
    assert_eq!(err.attr("type"), Some("error"));
    assert_eq!(
        stanza_error_condition(&err).as_deref(),
        Some("remote-server-not-found")
    );
    // a -> b: a refuses b's server certificate too.
    alice
        .send("<message to='bob@b.test' id='x2'><body>hi</body></message>")
        .await;
    let err = wait_for(&mut alice, "bounce", |e| e.attr("id") == Some("x2")).await;
    assert_eq!(
        stanza_error_condition(&err).as_deref(),
        Some("remote-server-not-found")
    );
    alice
        .expect_none(Duration::from_millis(300), |e| e.name() == "message")
        .await;
    bob.expect_none(Duration::from_millis(300), |e| {
        e.name() == "message" && e.attr("type") != Some("error")
    })
    .await;
}
