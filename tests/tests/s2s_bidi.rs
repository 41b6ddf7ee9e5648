//! Bidirectional server-to-server streams (XEP-0288) between two Starling servers: when both
//! offer them, the one connection a.test opens carries b.test's stanzas back too (counted on
//! both servers' listeners and connectors), with certificates and with dialback; when either
//! side has `s2s.bidi = false`, each direction gets its own connection. A peer that asked for
//! bidi cannot use it to send from a domain it did not authenticate, and a reply that is ready
//! before the peer's post-SASL restart header waits for the new stream.

mod s2s_support;

use std::time::Duration;

use s2s_support::*;
use starling_core::config::S2sPolicy;
use starling_tests::Conn;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// a -> b, b -> a, and once more each way.
async fn messages_both_ways(alice: &mut Conn, bob: &mut Conn) {
    for round in 0..2 {
        alice
            .send(&format!(
                "<message to='bob@b.test/laptop' id='a{round}'><body>a{round}</body></message>"
            ))
            .await;
        let m = wait_for(bob, "alice's message", |e| is_msg_from(e, "alice@a.test")).await;
        assert_eq!(m.attr("id"), Some(format!("a{round}").as_str()));
        bob.send(&format!(
            "<message to='alice@a.test/phone' id='b{round}'><body>b{round}</body></message>"
        ))
        .await;
        let m = wait_for(alice, "bob's message", |e| is_msg_from(e, "bob@b.test")).await;
        assert_eq!(m.attr("id"), Some(format!("b{round}").as_str()));
    }
}

#[tokio::test]
async fn one_connection_carries_both_directions_with_certificates() {
    let ca = Ca::new("Test CA");
    let (a, b) = pair(S2sPolicy::Verify, S2sPolicy::Verify, &ca, &ca, &["b.test"]).await;
    let mut alice = a.online("alice", "phone").await;
    let mut bob = b.online("bob", "laptop").await;
    // The whole IM flow (subscriptions, presence, probes, messages, IQs) over one stream.
    im_across(&mut alice, &mut bob).await;
    messages_both_ways(&mut alice, &mut bob).await;
    // alice spoke first: a.test opened the only connection; b.test answered on it.
    assert_eq!(a.s2s().connections_opened(), 1);
    assert_eq!(b.s2s().connections_accepted(), 1);
    assert_eq!(b.s2s().connections_opened(), 0);
    assert_eq!(a.s2s().connections_accepted(), 0);
    // b.test's pool sends to a.test on the inbound stream.
    assert!(b.server_pool().has_link("b.test", "a.test"));
    assert_eq!(b.server_pool().connection_count(), 1);
}

#[tokio::test]
async fn one_connection_carries_both_directions_with_dialback() {
    let ca = Ca::new("Test CA");
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
    messages_both_ways(&mut alice, &mut bob).await;
    // a.test's stream, and b.test's dialback verification connection back to a.test:
    // nothing else, since b.test's messages left on a.test's stream.
    assert_eq!(a.s2s().connections_opened(), 1);
    assert_eq!(b.s2s().connections_opened(), 1);
    assert_eq!(a.s2s().connections_accepted(), 1);
    assert_eq!(b.s2s().connections_accepted(), 1);
}

#[tokio::test]
async fn without_bidi_on_either_side_each_direction_has_its_own_connection() {
    for (a_bidi, b_bidi) in [(true, false), (false, true)] {
        let ca = Ca::new("Test CA");
        let (a_addr, b_addr) = (free_port(), free_port());
        let a = Peer::start(PeerSpec {
            domain: "a.test",
            cert_names: &["a.test"],
            issuer: &ca,
            trusts: &ca,
            policy: S2sPolicy::Verify,
            s2s: a_addr,
            routes: vec![route("b.test", b_addr)],
            connect_timeout_secs: 10,
            tweak: Box::new(move |c| c.s2s.bidi = a_bidi),
        })
        .await;
        let b = Peer::start(PeerSpec {
            domain: "b.test",
            cert_names: &["b.test"],
            issuer: &ca,
            trusts: &ca,
            policy: S2sPolicy::Verify,
            s2s: b_addr,
            routes: vec![route("a.test", a_addr)],
            connect_timeout_secs: 10,
            tweak: Box::new(move |c| c.s2s.bidi = b_bidi),
        })
        .await;
        let mut alice = a.online("alice", "phone").await;
        let mut bob = b.online("bob", "laptop").await;
        messages_both_ways(&mut alice, &mut bob).await;
        let what = format!("a.bidi={a_bidi} b.bidi={b_bidi}");
        assert_eq!(a.s2s().connections_opened(), 1, "{what}");
        assert_eq!(b.s2s().connections_opened(), 1, "{what}");
        assert_eq!(a.s2s().connections_accepted(), 1, "{what}");
        assert_eq!(b.s2s().connections_accepted(), 1, "{what}");
    }
}

/// Reads from `sock` until `needle` appears (or the peer closes), returning what came.
async fn read_until(sock: &mut tokio::net::TcpStream, needle: &str) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = String::from_utf8_lossy(&got).into_owned();
        if text.contains(needle) {
            return text;
        }
        match tokio::time::timeout_at(deadline, sock.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return text,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => panic!("timed out waiting for {needle}; got {text}"),
        }
    }
}

#[tokio::test]
async fn a_bidi_peer_cannot_send_from_another_domain_on_our_stream() {
    // a.test (plaintext-for-tests) connects to a scripted b.test that offers dialback and
    // bidi, accepts a.test's key, then sends one stanza from b.test (delivered) and one from
    // evil.test (the stream ends with invalid-from, the stanza is not delivered).
    let fake_b = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let b_addr = fake_b.local_addr().unwrap();
    let ca = Ca::new("Test CA");
    let a = Peer::start(PeerSpec {
        domain: "a.test",
        cert_names: &["a.test"],
        issuer: &ca,
        trusts: &ca,
        policy: S2sPolicy::PlaintextForTests,
        s2s: free_port(),
        routes: vec![route("b.test", b_addr)],
        connect_timeout_secs: 10,
        tweak: as_is(),
    })
    .await;
    let mut alice = a.online("alice", "phone").await;
    alice
        .send("<message to='bob@b.test' id='m1'><body>hi</body></message>")
        .await;
    let (mut sock, _) = tokio::time::timeout(Duration::from_secs(10), fake_b.accept())
        .await
        .unwrap()
        .unwrap();
    read_until(&mut sock, ">").await;
    sock.write_all(
        b"<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' \
          xmlns:db='jabber:server:dialback' from='b.test' to='a.test' id='s1' version='1.0'>\
          <stream:features><dialback xmlns='urn:xmpp:features:dialback'/>\
          <bidi xmlns='urn:xmpp:features:bidi'/></stream:features>",
    )
    .await
    .unwrap();
    let asked = read_until(&mut sock, "</db:result>").await;
    assert!(asked.contains("urn:xmpp:bidi"), "{asked}");
    sock.write_all(b"<db:result from='b.test' to='a.test' type='valid'/>")
        .await
        .unwrap();
    read_until(&mut sock, "</message>").await;
    sock.write_all(
        b"<message from='bob@b.test/x' to='alice@a.test/phone' id='ok'><body>1</body></message>\
          <message from='mallory@evil.test/x' to='alice@a.test/phone' id='bad'><body>2</body></message>",
    )
    .await
    .unwrap();
    let m = wait_for(&mut alice, "bob's message", |e| e.name() == "message").await;
    assert_eq!(m.attr("id"), Some("ok"));
    let closing = read_until(&mut sock, "</stream:stream>").await;
    assert!(closing.contains("invalid-from"), "{closing}");
    alice
        .expect_none(Duration::from_millis(300), |e| e.attr("id") == Some("bad"))
        .await;
}

/// Reads from any stream until `needle` appears, returning what came.
async fn read_tls_until<S: tokio::io::AsyncRead + Unpin>(sock: &mut S, needle: &str) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = String::from_utf8_lossy(&got).into_owned();
        if text.contains(needle) {
            return text;
        }
        match tokio::time::timeout_at(deadline, sock.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => panic!("closed before {needle}; got {text}"),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => panic!("timed out waiting for {needle}; got {text}"),
        }
    }
}

#[tokio::test]
async fn a_reply_queued_before_the_peers_restart_header_waits_for_it() {
    // A scripted a.test (certificate from the CA b.test trusts) asks b.test for bidi and
    // authenticates with SASL EXTERNAL; before it sends the restart header, bob writes to
    // alice. b.test must keep the reply until the new stream is open, then send it there.
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    let ca = Ca::new("Test CA");
    let b = Peer::start(PeerSpec {
        domain: "b.test",
        cert_names: &["b.test"],
        issuer: &ca,
        trusts: &ca,
        policy: S2sPolicy::Verify,
        s2s: free_port(),
        routes: vec![],
        connect_timeout_secs: 10,
        tweak: as_is(),
    })
    .await;
    let mut bob = b.online("bob", "laptop").await;
    let header = "<stream:stream xmlns='jabber:server' \
        xmlns:stream='http://etherx.jabber.org/streams' from='a.test' to='b.test' version='1.0'>";
    let mut tcp = tokio::net::TcpStream::connect(b.s2s).await.unwrap();
    tcp.write_all(header.as_bytes()).await.unwrap();
    read_until(&mut tcp, "</stream:features>").await;
    tcp.write_all(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        .await
        .unwrap();
    read_until(&mut tcp, "<proceed").await;
    let (cert, key) = ca.issue(&["a.test"]);
    let tls = starling_s2s::S2sTls::new(
        vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
        PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
    )
    .unwrap();
    let connector = tokio_rustls::TlsConnector::from(tls.client.clone());
    let mut a = connector
        .connect(ServerName::try_from("b.test").unwrap(), tcp)
        .await
        .unwrap();
    a.write_all(header.as_bytes()).await.unwrap();
    let features = read_tls_until(&mut a, "</stream:features>").await;
    assert!(features.contains("urn:xmpp:features:bidi"), "{features}");
    assert!(features.contains("EXTERNAL"), "{features}");
    a.write_all(
        b"<bidi xmlns='urn:xmpp:bidi'/>\
          <auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>=</auth>",
    )
    .await
    .unwrap();
    read_tls_until(&mut a, "<success").await;
    // b.test now sends to a.test on this stream; bob's message waits in its queue.
    bob.send("<message to='alice@a.test/phone' id='early'><body>early</body></message>")
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(b.server_pool().has_link("b.test", "a.test"));
    a.write_all(header.as_bytes()).await.unwrap();
    let after = read_tls_until(&mut a, "</message>").await;
    assert!(after.contains("<stream:features"), "{after}");
    assert!(
        after.contains("id='early'") || after.contains("id=\"early\""),
        "{after}"
    );
    assert!(!after.contains("stream:error"), "{after}");
    assert_eq!(b.s2s().connections_opened(), 0);
}
