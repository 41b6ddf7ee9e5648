//! The SIP/SIMPLE gateway, instant messages (RFC 3922 §4, RFC 3428), against sipp as the
//! SIP user agent: a sipp UAC sends MESSAGE to an XMPP user (text/plain and Message/CPIM);
//! an XMPP user sends to a sipp UAS whose scenario checks the body (Message/CPIM and
//! text/plain formats); a SIP error comes back as the stanza error of RFC 7247's table. Raw
//! UDP requests cover what sipp cannot shape: oversized UDP (513), an unknown user (404), an
//! address with no route (403), an unsupported body (415).

mod sip_support;

use sip_support::*;
use starling_core::config::SipMessageFormat;
use starling_tests::*;

#[tokio::test]
async fn sip_user_sends_text_message_to_xmpp_user() {
    let sipp_port = free_port().await;
    let gw = gateway_server(sipp_port, SipMessageFormat::Cpim).await;
    let mut alice = online(&gw.server, "alice", "phone").await;
    let target = gw.gateway.to_string();
    sipp("uac_message.xml", sipp_port, &["-s", "alice", &target])
        .success()
        .await;
    let msg = alice.recv_until(|e| e.name() == "message").await;
    assert_eq!(msg.attr("from"), Some(BOB));
    assert_eq!(msg.attr("to"), Some("alice@localhost"));
    assert_eq!(msg.attr("type"), Some("chat"));
    assert_eq!(child_text(&msg, "subject").as_deref(), Some("Greetings"));
    assert_eq!(
        child_text(&msg, "body").unwrap().trim_end(),
        "Hello from SIP, alice."
    );
}

#[tokio::test]
async fn sip_user_sends_cpim_message_and_cannot_pose_as_an_xmpp_user() {
    let sipp_port = free_port().await;
    let gw = gateway_server(sipp_port, SipMessageFormat::Cpim).await;
    let mut alice = online(&gw.server, "alice", "phone").await;
    let target = gw.gateway.to_string();
    sipp("uac_message_cpim.xml", sipp_port, &["-s", "alice", &target])
        .success()
        .await;
    let msg = alice.recv_until(|e| e.name() == "message").await;
    // The CPIM From says admin@localhost; the stanza comes from the SIP sender.
    assert_eq!(msg.attr("from"), Some(BOB));
    let subject = msg.get_child("subject", CLIENT).unwrap();
    assert_eq!(subject.text(), "Mittagessen");
    let wire = starling_proto::writer::element_to_string(subject);
    assert!(
        wire.contains("xml:lang=\"de\"") || wire.contains("xml:lang='de'"),
        "{wire}"
    );
    assert_eq!(
        child_text(&msg, "body").unwrap().trim_end(),
        "Noon at the usual place?"
    );
}

#[tokio::test]
async fn xmpp_user_sends_cpim_message_to_sip_user() {
    let sipp_port = free_port().await;
    let gw = gateway_server(sipp_port, SipMessageFormat::Cpim).await;
    let uas = sipp("uas_message.xml", sipp_port, &[]);
    settle().await;
    let mut alice = online(&gw.server, "alice", "phone").await;
    alice
        .send(&format!(
            "<message to='{BOB}' type='chat' id='m1'><subject>Lunch</subject>\
             <thread>t-77</thread><body>Noon at the usual place?</body></message>"
        ))
        .await;
    uas.success().await;
    // A 200: no error comes back.
    alice
        .expect_none(std::time::Duration::from_millis(300), |e| {
            e.attr("type") == Some("error")
        })
        .await;
}

#[tokio::test]
async fn xmpp_user_sends_text_message_to_sip_user() {
    let sipp_port = free_port().await;
    let gw = gateway_server(sipp_port, SipMessageFormat::Text).await;
    let uas = sipp("uas_message_text.xml", sipp_port, &[]);
    settle().await;
    let mut alice = online(&gw.server, "alice", "phone").await;
    // A chat state alone has nothing to carry: no MESSAGE (sipp would fail on it).
    alice
        .send(&format!(
            "<message to='{BOB}' type='chat'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>"
        ))
        .await;
    alice
        .send(&format!(
            "<message to='{BOB}' type='chat'><subject>S</subject><body>B</body></message>"
        ))
        .await;
    uas.success().await;
}

#[tokio::test]
async fn sip_404_comes_back_as_item_not_found() {
    let sipp_port = free_port().await;
    let gw = gateway_server(sipp_port, SipMessageFormat::Cpim).await;
    let uas = sipp("uas_404.xml", sipp_port, &[]);
    settle().await;
    let mut alice = online(&gw.server, "alice", "phone").await;
    alice
        .send(&format!(
            "<message to='{BOB}' type='chat' id='lost'><body>anyone?</body></message>"
        ))
        .await;
    uas.success().await;
    let err = alice.recv_until(|e| e.name() == "message").await;
    assert_eq!(err.attr("type"), Some("error"));
    assert_eq!(err.attr("id"), Some("lost"));
    assert_eq!(err.attr("from"), Some(BOB));
    assert_eq!(
        stanza_error_condition(&err).as_deref(),
        Some("item-not-found")
    );
}

#[tokio::test]
async fn messages_to_domains_without_a_route_bounce() {
    let gw = gateway_server(free_port().await, SipMessageFormat::Cpim).await;
    let mut alice = online(&gw.server, "alice", "phone").await;
    alice
        .send("<message to='dave%elsewhere.example@sip.localhost' id='x'><body>hi</body></message>")
        .await;
    let err = alice.recv_until(|e| e.name() == "message").await;
    assert_eq!(
        stanza_error_condition(&err).as_deref(),
        Some("remote-server-not-found")
    );
}

#[tokio::test]
async fn raw_requests_get_the_right_status() {
    let peer_port = free_port().await;
    let gw = gateway_server(peer_port, SipMessageFormat::Cpim).await;
    let mut alice = online(&gw.server, "alice", "phone").await;
    let peer = RawPeer::bind(peer_port).await;
    let bob = "sip:bob@sip.example";
    // Accepted: 200, and alice gets it.
    let ok = raw_message(peer_port, bob, "alice", "text/plain", "small");
    assert_eq!(peer.status_of(&ok, gw.gateway).await, 200);
    let msg = alice.recv_until(|e| e.name() == "message").await;
    assert_eq!(child_text(&msg, "body").as_deref(), Some("small"));
    // RFC 3428 §5: a MESSAGE over UDP above 1300 bytes.
    let big = raw_message(peer_port, bob, "alice", "text/plain", &"x".repeat(1400));
    assert_eq!(peer.status_of(&big, gw.gateway).await, 513);
    // No such XMPP user.
    let nobody = raw_message(peer_port, bob, "nobody", "text/plain", "hello?");
    assert_eq!(peer.status_of(&nobody, gw.gateway).await, 404);
    // A From domain with no route (a SIP peer pretending to be someone else's domain).
    let spoof = raw_message(
        peer_port,
        "sip:mallory@evil.example",
        "alice",
        "text/plain",
        "hi",
    );
    assert_eq!(peer.status_of(&spoof, gw.gateway).await, 403);
    // A body the gateway cannot put in <body/>.
    let html = raw_message(peer_port, bob, "alice", "text/html", "<b>hi</b>");
    assert_eq!(peer.status_of(&html, gw.gateway).await, 415);
    // Nothing of the refused ones reached alice.
    alice
        .expect_none(std::time::Duration::from_millis(300), |e| {
            e.name() == "message"
        })
        .await;
}

#[tokio::test]
async fn requests_from_addresses_without_a_route_are_refused() {
    // The route points at another port on 127.0.0.1, but a different IP is refused: here
    // the route's IP is 127.0.0.2 and the peer sends from 127.0.0.1.
    let peer_port = free_port().await;
    let gw = gateway_server_with(peer_port, |c| {
        c.sip.routes[0].address = format!("127.0.0.2:{peer_port}").parse().unwrap();
    })
    .await;
    let peer = RawPeer::bind(peer_port).await;
    let req = raw_message(
        peer_port,
        "sip:bob@sip.example",
        "alice",
        "text/plain",
        "hi",
    );
    assert_eq!(peer.status_of(&req, gw.gateway).await, 403);
}

#[tokio::test]
async fn sip_user_sends_message_over_tcp() {
    let sipp_port = free_port().await;
    let gw = gateway_server(sipp_port, SipMessageFormat::Cpim).await;
    let mut alice = online(&gw.server, "alice", "phone").await;
    let target = gw.gateway.to_string();
    sipp(
        "uac_message.xml",
        sipp_port,
        &["-t", "t1", "-s", "alice", &target],
    )
    .success()
    .await;
    let msg = alice.recv_until(|e| e.name() == "message").await;
    assert_eq!(msg.attr("from"), Some(BOB));
    assert_eq!(
        child_text(&msg, "body").unwrap().trim_end(),
        "Hello from SIP, alice."
    );
}
