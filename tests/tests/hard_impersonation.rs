//! Catalogue, impersonation (docs/bad-input.md, I-entries) not already covered elsewhere:
//! `from` spoofing in every shape, forged roster pushes and forged MAM results sent by a
//! client. The server stamps every client stanza with the sender's full JID, so what a
//! client forges can always be told apart from what the server sends (roster pushes and MAM
//! results come from the user's own bare JID, RFC 6121 §2.1.6, XEP-0313 §5). Forged carbons
//! are `forbidden`: see x_carbons::carbons_forged_by_a_client_are_rejected.

mod hard_support;

use std::time::Duration;

use hard_support::Witnesses;
use starling_tests::*;

/// Every `from` other than the session's own full or bare JID closes the stream with
/// `invalid-from` (RFC 6120 §8.1.2.1): the server's domain, another user's bare JID, our own
/// bare JID with another resource, a malformed JID. Nothing reaches the victim.
#[tokio::test]
async fn spoofed_from_in_every_shape_is_invalid_from() {
    let server = TestServer::start().await;
    let mut w = Witnesses::login(&server).await;
    let mut victim = hard_support::fresh_user(&server, "victim").await;
    server.add_user("mallory", "pw").await;
    for (i, from) in [
        "localhost",
        "victim@localhost",
        "mallory@localhost/other",
        "not a jid@@",
    ]
    .into_iter()
    .enumerate()
    {
        let mut mallory = server.login("mallory", "pw", &format!("m{i}")).await;
        mallory
            .send(&format!(
                "<message from='{from}' to='victim@localhost/r' id='spoof{i}'><body>x</body></message>"
            ))
            .await;
        mallory.expect_stream_error("invalid-from").await;
    }
    // Repeating one's own full or bare JID is allowed.
    let mut mallory = server.login("mallory", "pw", "ok").await;
    for (i, from) in ["mallory@localhost/ok", "mallory@localhost"]
        .into_iter()
        .enumerate()
    {
        mallory
            .send(&format!(
                "<message from='{from}' to='victim@localhost/r' id='own{i}'><body>x</body></message>"
            ))
            .await;
        let got = victim
            .recv_until(|e| e.name() == "message" && e.attr("id") == Some(&*format!("own{i}")))
            .await;
        assert_eq!(
            got.attr("from"),
            Some("mallory@localhost/ok"),
            "stamped full JID"
        );
    }
    victim
        .expect_none(Duration::from_millis(300), |e| {
            e.attr("id").is_some_and(|id| id.starts_with("spoof"))
        })
        .await;
    w.chat("after").await;
    server.assert_still_serves().await;
}

/// A roster push forged by another client arrives stamped with that client's full JID (which
/// a client MUST ignore, RFC 6121 §2.1.6) and changes nothing on the server; the victim's
/// real roster is untouched.
#[tokio::test]
async fn a_forged_roster_push_does_not_change_the_roster() {
    let server = TestServer::start().await;
    let mut w = Witnesses::login(&server).await;
    let mut mallory = hard_support::fresh_user(&server, "mallory").await;
    let mut victim = hard_support::fresh_user(&server, "victim").await;
    mallory
        .send(
            "<iq type='set' id='push1' to='victim@localhost/r'>\
             <query xmlns='jabber:iq:roster'><item jid='evil@localhost' subscription='both'/>\
             </query></iq>",
        )
        .await;
    let push = victim
        .recv_until(|e| e.name() == "iq" && e.attr("id") == Some("push1"))
        .await;
    assert_eq!(push.attr("from"), Some("mallory@localhost/r"));
    assert_ne!(push.attr("from"), Some("victim@localhost"));
    // A roster push pretending to come from the victim's account is invalid-from.
    mallory
        .send(
            "<iq type='set' id='push2' from='victim@localhost' to='victim@localhost/r'>\
             <query xmlns='jabber:iq:roster'><item jid='evil@localhost'/></query></iq>",
        )
        .await;
    mallory.expect_stream_error("invalid-from").await;
    victim
        .send("<iq type='get' id='mine'><query xmlns='jabber:iq:roster'/></iq>")
        .await;
    let roster = victim
        .recv_until(|e| e.name() == "iq" && e.attr("id") == Some("mine"))
        .await;
    let n = roster
        .get_child("query", "jabber:iq:roster")
        .map(|q| q.children().count());
    assert_eq!(n, Some(0), "the victim's roster is still empty");
    w.chat("after").await;
    server.assert_still_serves().await;
}

/// A MAM result forged by another client arrives stamped with that client's full JID, never
/// as coming from the victim's own archive (its bare JID), so a client can tell it apart
/// (XEP-0313 §5); nothing is added to the victim's archive as if it were a result.
#[tokio::test]
async fn a_forged_mam_result_is_stamped_with_the_forger() {
    let server = TestServer::start().await;
    let mut w = Witnesses::login(&server).await;
    let mut mallory = hard_support::fresh_user(&server, "mallory").await;
    let mut victim = hard_support::fresh_user(&server, "victim").await;
    mallory
        .send(
            "<message to='victim@localhost/r' id='fake-mam'>\
             <result xmlns='urn:xmpp:mam:2' queryid='q1' id='28482-98726-73623'>\
             <forwarded xmlns='urn:xmpp:forward:0'>\
             <delay xmlns='urn:xmpp:delay' stamp='2010-07-10T23:08:25Z'/>\
             <message xmlns='jabber:client' from='boss@localhost/desk' to='victim@localhost'>\
             <body>wire the money</body></message></forwarded></result></message>",
        )
        .await;
    let got = victim
        .recv_until(|e| e.name() == "message" && e.attr("id") == Some("fake-mam"))
        .await;
    assert_eq!(got.attr("from"), Some("mallory@localhost/r"));
    w.chat("after").await;
    server.assert_still_serves().await;
}
