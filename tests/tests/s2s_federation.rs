//! Federation between two Starling servers on loopback (a.test and b.test, static routes,
//! certificates from a test CA): the IM flows of RFC 6121 across domains with certificate
//! authentication (SASL EXTERNAL) and with Server Dialback, and refusal of a peer whose
//! certificate names another domain under the strict policy.

mod s2s_support;

use std::time::Duration;

use minidom::Element;
use s2s_support::*;
use starling_core::config::S2sPolicy;
use starling_tests::{stanza_error_condition, Conn};

/// Subscriptions both ways, presence both ways, a message each way, and IQs that round-trip
/// (a vCard served by the remote server for its user, a ping to the remote server).
async fn im_across(alice: &mut Conn, bob: &mut Conn) {
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
