//! The SIP/SIMPLE gateway, presence (RFC 3922 §5–6, RFC 3856, RFC 6665), against sipp: a SIP
//! user subscribes to an XMPP user, who approves; the SIP user gets NOTIFY active/open, then
//! closed when she goes offline, and unsubscribing ends the XMPP subscription. An XMPP user
//! subscribes to a SIP user: `subscribed` and presence from the PIDF come back, the gateway
//! refreshes before Expires, unsubscribing sends Expires: 0. Errors: 404 -> item-not-found,
//! a second subscribe in flight -> conflict. Every PIDF the gateway emits validates against
//! the RFC 3863 schema with xmllint.

mod sip_support;

use std::time::Duration;

use sip_support::*;
use starling_core::config::SipMessageFormat;
use starling_tests::*;

async fn roster_subscription(server: &TestServer, user: &str, contact: &str) -> Option<String> {
    // A session that never sends presence: it changes nothing the gateway sees.
    let mut c = server.login(user, &format!("pw-{user}"), "check").await;
    c.send("<iq type='get' id='rg'><query xmlns='jabber:iq:roster'/></iq>")
        .await;
    let r = c.recv_until(|e| e.attr("id") == Some("rg")).await;
    let q = r.get_child("query", "jabber:iq:roster").unwrap();
    q.children()
        .find(|i| i.attr("jid") == Some(contact))
        .and_then(|i| i.attr("subscription").map(str::to_owned))
}

#[tokio::test]
async fn sip_user_watches_xmpp_user_through_approval_offline_and_unsubscribe() {
    let sipp_port = free_port().await;
    let gw = gateway_server(sipp_port, SipMessageFormat::Cpim).await;
    let mut alice = online(&gw.server, "alice", "phone").await;
    let target = gw.gateway.to_string();
    let uac = sipp("uac_subscribe.xml", sipp_port, &["-s", "alice", &target]);
    // RFC 3922 §6: the SIP SUBSCRIBE becomes an XMPP subscription request.
    let request = alice
        .recv_until(|e| e.name() == "presence" && e.attr("type") == Some("subscribe"))
        .await;
    assert_eq!(request.attr("from"), Some(BOB));
    alice
        .send(&format!("<presence to='{BOB}' type='subscribed'/>"))
        .await;
    // Once the ping is answered, the approval has been routed.
    alice.ping_server().await;
    assert_eq!(
        roster_subscription(&gw.server, "alice", BOB)
            .await
            .as_deref(),
        Some("from")
    );
    // Let the NOTIFY active/open go out, then alice goes offline: NOTIFY closed.
    tokio::time::sleep(Duration::from_millis(700)).await;
    alice.send("<presence type='unavailable'/>").await;
    uac.success().await;
    // bob's Expires: 0 became an XMPP unsubscribe: the subscription is gone.
    let sub = roster_subscription(&gw.server, "alice", BOB).await;
    assert!(
        matches!(sub.as_deref(), None | Some("none")),
        "subscription {sub:?}"
    );
}

#[tokio::test]
async fn xmpp_user_watches_sip_user_with_refresh_and_unsubscribe() {
    let sipp_port = free_port().await;
    let gw = gateway_server(sipp_port, SipMessageFormat::Cpim).await;
    let uas = sipp("uas_subscribe.xml", sipp_port, &[]);
    settle().await;
    let mut alice = online(&gw.server, "alice", "phone").await;
    alice
        .send(&format!("<presence to='{BOB}' type='subscribe' id='s1'/>"))
        .await;
    let subscribed = alice
        .recv_until(|e| e.name() == "presence" && e.attr("type") == Some("subscribed"))
        .await;
    assert_eq!(subscribed.attr("from"), Some(BOB));
    let desk = alice
        .recv_until(|e| e.name() == "presence" && e.attr("type").is_none())
        .await;
    assert_eq!(
        desk.attr("from"),
        Some("bob%sip.example@sip.localhost/desk")
    );
    assert_eq!(child_text(&desk, "status").as_deref(), Some("At desk"));
    assert_eq!(
        roster_subscription(&gw.server, "alice", BOB)
            .await
            .as_deref(),
        Some("to")
    );
    // The UAS granted 4 s; the gateway refreshes at 3 s. Unsubscribe after that.
    tokio::time::sleep(Duration::from_millis(3600)).await;
    alice
        .send(&format!("<presence to='{BOB}' type='unsubscribe'/>"))
        .await;
    let gone = alice
        .recv_until(|e| e.name() == "presence" && e.attr("type") == Some("unavailable"))
        .await;
    assert_eq!(
        gone.attr("from"),
        Some("bob%sip.example@sip.localhost/desk")
    );
    uas.success().await;
}

#[tokio::test]
async fn subscribing_to_an_unknown_sip_user_gives_item_not_found() {
    let sipp_port = free_port().await;
    let gw = gateway_server(sipp_port, SipMessageFormat::Cpim).await;
    let uas = sipp("uas_404.xml", sipp_port, &[]);
    settle().await;
    let mut alice = online(&gw.server, "alice", "phone").await;
    alice
        .send(&format!(
            "<presence to='{BOB}' type='subscribe' id='s404'/>"
        ))
        .await;
    let err = alice
        .recv_until(|e| e.name() == "presence" && e.attr("type") == Some("error"))
        .await;
    assert_eq!(err.attr("from"), Some(BOB));
    assert_eq!(
        stanza_error_condition(&err).as_deref(),
        Some("item-not-found")
    );
    uas.success().await;
}

#[tokio::test]
async fn a_second_subscribe_in_flight_conflicts() {
    let peer_port = free_port().await;
    let gw = gateway_server(peer_port, SipMessageFormat::Cpim).await;
    // A SIP peer that receives the SUBSCRIBE and does not answer yet.
    let peer = RawPeer::bind(peer_port).await;
    let mut alice = online(&gw.server, "alice", "phone").await;
    alice
        .send(&format!(
            "<presence to='{BOB}' type='subscribe' id='first'/>"
        ))
        .await;
    let (sub, _) = peer.recv_msg().await;
    assert_eq!(sub.method(), Some("SUBSCRIBE"));
    alice
        .send(&format!(
            "<presence to='{BOB}' type='subscribe' id='second'/>"
        ))
        .await;
    let err = alice
        .recv_until(|e| e.name() == "presence" && e.attr("type") == Some("error"))
        .await;
    assert_eq!(err.attr("id"), Some("second"));
    assert_eq!(stanza_error_condition(&err).as_deref(), Some("conflict"));
}

#[tokio::test]
async fn every_pidf_the_gateway_sends_validates_against_rfc_3863() {
    let peer_port = free_port().await;
    let gw = gateway_server(peer_port, SipMessageFormat::Cpim).await;
    let peer = RawPeer::bind(peer_port).await;
    let mut alice = online(&gw.server, "alice", "phone").await;
    let subscribe = format!(
        "SUBSCRIBE sip:alice@localhost SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:{peer_port};branch=z9hG4bKpidf1\r\n\
From: <sip:bob@sip.example>;tag=w1\r\n\
To: <sip:alice@localhost>\r\n\
Call-ID: pidf-1@127.0.0.1\r\n\
CSeq: 1 SUBSCRIBE\r\n\
Contact: <sip:bob@127.0.0.1:{peer_port}>\r\n\
Event: presence\r\n\
Expires: 600\r\n\
Content-Length: 0\r\n\r\n"
    );
    assert_eq!(peer.status_of(&subscribe, gw.gateway).await, 200);
    let (pending, from) = peer.recv_msg().await;
    assert_eq!(pending.method(), Some("NOTIFY"));
    assert!(pending
        .header("Subscription-State")
        .unwrap()
        .starts_with("pending"));
    peer.ok(&pending, from).await;
    alice
        .recv_until(|e| e.name() == "presence" && e.attr("type") == Some("subscribe"))
        .await;
    alice
        .send(&format!("<presence to='{BOB}' type='subscribed'/>"))
        .await;
    let (active, from) = peer.recv_msg().await;
    assert!(active
        .header("Subscription-State")
        .unwrap()
        .starts_with("active"));
    peer.ok(&active, from).await;
    // A second resource with show, status and priority: one PIDF with two tuples.
    let mut desk = gw.server.login("alice", "pw-alice", "desk").await;
    desk.send("<presence><show>dnd</show><status xml:lang='en'>In a meeting</status><priority>5</priority></presence>")
        .await;
    let (rich, from) = peer.recv_msg().await;
    peer.ok(&rich, from).await;
    let body = String::from_utf8(rich.body.clone()).unwrap();
    assert_eq!(rich.header("Content-Type"), Some("application/pidf+xml"));
    assert!(
        body.contains("id=\"desk\"") || body.contains("id='desk'"),
        "{body}"
    );
    assert!(
        body.contains("id=\"phone\"") || body.contains("id='phone'"),
        "{body}"
    );
    assert!(body.contains(">busy</"), "{body}");
    assert!(body.contains("In a meeting"), "{body}");
    for doc in [&active.body, &rich.body] {
        let (valid, why) = pidf_is_valid(doc);
        assert!(valid, "{why}\n{}", String::from_utf8_lossy(doc));
    }
    // The judge can say no: a document with a basic status outside the schema fails.
    let broken = body.replacen(">open<", ">opened<", 1);
    assert!(!pidf_is_valid(broken.as_bytes()).0);
}

#[tokio::test]
async fn subscriptions_per_user_are_capped() {
    let peer_port = free_port().await;
    let gw = gateway_server_with(peer_port, |c| c.sip.max_subscriptions_per_user = 1).await;
    let peer = RawPeer::bind(peer_port).await;
    let mut alice = online(&gw.server, "alice", "phone").await;
    alice
        .send(&format!("<presence to='{BOB}' type='subscribe' id='one'/>"))
        .await;
    let (sub, _) = peer.recv_msg().await;
    assert_eq!(sub.method(), Some("SUBSCRIBE"));
    alice
        .send("<presence to='carol%sip.example@sip.localhost' type='subscribe' id='two'/>")
        .await;
    let err = alice
        .recv_until(|e| e.name() == "presence" && e.attr("type") == Some("error"))
        .await;
    assert_eq!(err.attr("id"), Some("two"));
    assert_eq!(
        stanza_error_condition(&err).as_deref(),
        Some("resource-constraint")
    );
}

#[tokio::test]
async fn a_403_from_the_sip_side_is_forbidden() {
    let peer_port = free_port().await;
    let gw = gateway_server(peer_port, SipMessageFormat::Cpim).await;
    let peer = RawPeer::bind(peer_port).await;
    let mut alice = online(&gw.server, "alice", "phone").await;
    alice
        .send(&format!(
            "<presence to='{BOB}' type='subscribe' id='s403'/>"
        ))
        .await;
    let (sub, from) = peer.recv_msg().await;
    assert_eq!(sub.header("Event"), Some("presence"));
    assert_eq!(sub.header("Accept"), Some("application/pidf+xml"));
    peer.answer(&sub, 403, from).await;
    let err = alice
        .recv_until(|e| e.name() == "presence" && e.attr("type") == Some("error"))
        .await;
    assert_eq!(err.attr("id"), Some("s403"));
    assert_eq!(stanza_error_condition(&err).as_deref(), Some("forbidden"));
}
