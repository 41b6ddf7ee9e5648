//! Transcripts: the routing core (RFC 6120 §8, §10; RFC 6121 §8): `from` stamping, messages to
//! full and bare JIDs with priorities, the error rules for unknown users, resources and
//! unhandled IQs, IQ validation, and "an error never answers an error".

use std::time::Duration;

use minidom::Element;
use starling_tests::*;

fn is_message(e: &Element) -> bool {
    e.name() == "message"
}

/// Sends presence with `priority` and waits until the server has recorded it.
async fn available_with_priority(c: &mut Conn, priority: i8) {
    c.send(&format!(
        "<presence><priority>{priority}</priority></presence>"
    ))
    .await;
    c.ping_server().await;
}

/// Sends `stanza`, then a ping; returns every element that arrived before the ping result.
async fn send_and_collect(c: &mut Conn, stanza: &str) -> Vec<Element> {
    c.send(stanza).await;
    c.send("<iq type='get' id='fence' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    let mut got = Vec::new();
    loop {
        let el = c.recv().await;
        if el.name() == "iq" && el.attr("id") == Some("fence") {
            return got;
        }
        got.push(el);
    }
}

/// Sends `stanza` and returns the reply with id `id` (other elements are skipped).
async fn request(c: &mut Conn, id: &str, stanza: &str) -> Element {
    c.send(stanza).await;
    c.recv_until(|e| e.attr("id") == Some(id)).await
}

async fn three_users() -> TestServer {
    let server = TestServer::start().await;
    for u in ["alice", "bob", "carol"] {
        server.add_user(u, "pw").await;
    }
    server
}

#[tokio::test]
async fn the_server_stamps_from_with_the_full_jid() {
    let server = three_users().await;
    let mut alice = server.login("alice", "pw", "home").await;
    let mut bob = server.login("bob", "pw", "work").await;
    bob.available().await;
    // No 'from': stamped.
    alice
        .send("<message to='bob@localhost/work' id='m1'><body>1</body></message>")
        .await;
    let got = bob.recv_until(is_message).await;
    assert_eq!(got.attr("from"), Some("alice@localhost/home"));
    // The bare JID as 'from' is allowed and completed to the full JID.
    alice
        .send("<message from='alice@localhost' to='bob@localhost/work' id='m2'><body>2</body></message>")
        .await;
    let got = bob.recv_until(is_message).await;
    assert_eq!(got.attr("id"), Some("m2"));
    assert_eq!(got.attr("from"), Some("alice@localhost/home"));
    // The exact full JID is fine too.
    alice
        .send("<message from='alice@localhost/home' to='bob@localhost/work' id='m3'><body>3</body></message>")
        .await;
    let got = bob.recv_until(is_message).await;
    assert_eq!(got.attr("from"), Some("alice@localhost/home"));
    // A differently-cased 'from' that prepares to the same JID is the same JID.
    alice
        .send("<message from='ALICE@LocalHost/home' to='bob@localhost/work' id='m4'><body>4</body></message>")
        .await;
    let got = bob.recv_until(is_message).await;
    assert_eq!(got.attr("id"), Some("m4"));
    assert_eq!(got.attr("from"), Some("alice@localhost/home"));
}

#[tokio::test]
async fn a_message_to_a_full_jid_reaches_only_that_resource() {
    let server = three_users().await;
    let mut alice = server.login("alice", "pw", "a").await;
    let mut bob1 = server.login("bob", "pw", "one").await;
    let mut bob2 = server.login("bob", "pw", "two").await;
    available_with_priority(&mut bob1, 5).await;
    // Even a negative-priority or unavailable resource gets messages to its full JID.
    available_with_priority(&mut bob2, -1).await;
    alice
        .send("<message to='bob@localhost/two' type='chat' id='m'><body>x</body></message>")
        .await;
    let got = bob2.recv_until(is_message).await;
    assert_eq!(got.attr("to"), Some("bob@localhost/two"));
    bob1.expect_none(Duration::from_millis(150), is_message)
        .await;
}

#[tokio::test]
async fn a_message_to_a_bare_jid_goes_to_the_highest_priority() {
    let server = three_users().await;
    let mut alice = server.login("alice", "pw", "a").await;
    let mut high = server.login("bob", "pw", "high").await;
    let mut low = server.login("bob", "pw", "low").await;
    let mut negative = server.login("bob", "pw", "negative").await;
    let mut unavailable = server.login("bob", "pw", "unavailable").await;
    available_with_priority(&mut high, 10).await;
    available_with_priority(&mut low, 1).await;
    available_with_priority(&mut negative, -5).await;
    unavailable.ping_server().await;
    alice
        .send("<message to='bob@localhost' type='chat' id='m1'><body>x</body></message>")
        .await;
    let got = high.recv_until(is_message).await;
    assert_eq!(got.attr("id"), Some("m1"));
    for c in [&mut low, &mut negative, &mut unavailable] {
        c.expect_none(Duration::from_millis(100), is_message).await;
    }
    // Equal highest priorities: every one of them gets it.
    available_with_priority(&mut low, 10).await;
    alice
        .send("<message to='bob@localhost' id='m2'><body>y</body></message>")
        .await;
    assert_eq!(high.recv_until(is_message).await.attr("id"), Some("m2"));
    assert_eq!(low.recv_until(is_message).await.attr("id"), Some("m2"));
    negative
        .expect_none(Duration::from_millis(100), is_message)
        .await;
    // Headlines go to every non-negative available resource.
    available_with_priority(&mut low, 0).await;
    alice
        .send("<message to='bob@localhost' type='headline' id='h'><body>news</body></message>")
        .await;
    assert_eq!(high.recv_until(is_message).await.attr("id"), Some("h"));
    assert_eq!(low.recv_until(is_message).await.attr("id"), Some("h"));
    for c in [&mut negative, &mut unavailable] {
        c.expect_none(Duration::from_millis(100), is_message).await;
    }
}

#[tokio::test]
async fn a_negative_priority_resource_never_gets_bare_jid_messages() {
    let server = three_users().await;
    let mut alice = server.login("alice", "pw", "a").await;
    let mut bob = server.login("bob", "pw", "bot").await;
    available_with_priority(&mut bob, -1).await;
    for (id, kind) in [("n", "normal"), ("c", "chat"), ("h", "headline")] {
        alice
            .send(&format!(
                "<message to='bob@localhost' type='{kind}' id='{id}'><body>x</body></message>"
            ))
            .await;
    }
    bob.expect_none(Duration::from_millis(300), is_message)
        .await;
}

#[tokio::test]
async fn messages_to_unknown_users_and_resources() {
    let server = three_users().await;
    let mut alice = server.login("alice", "pw", "a").await;
    let mut bob = server.login("bob", "pw", "b").await;
    bob.available().await;
    // No such user: service-unavailable, from the address that was written to.
    let reply = request(
        &mut alice,
        "u1",
        "<message to='nobody@localhost' type='chat' id='u1'><body>?</body></message>",
    )
    .await;
    assert_eq!(reply.attr("type"), Some("error"), "{reply:?}");
    assert_eq!(reply.attr("from"), Some("nobody@localhost"));
    assert_eq!(
        stanza_error_condition(&reply).as_deref(),
        Some("service-unavailable")
    );
    // The same to a full JID of no such user.
    let reply = request(
        &mut alice,
        "u2",
        "<message to='nobody@localhost/x' id='u2'><body>?</body></message>",
    )
    .await;
    assert_eq!(
        stanza_error_condition(&reply).as_deref(),
        Some("service-unavailable")
    );
    // An unknown resource of an online user: treated as the bare JID.
    alice
        .send(
            "<message to='bob@localhost/gone' type='chat' id='fb'><body>fallback</body></message>",
        )
        .await;
    let got = bob.recv_until(is_message).await;
    assert_eq!(got.attr("id"), Some("fb"));
    // groupchat to the bare JID, or to an unknown resource: service-unavailable.
    for (id, to) in [("g1", "bob@localhost"), ("g2", "bob@localhost/gone")] {
        let reply = request(
            &mut alice,
            id,
            &format!("<message to='{to}' type='groupchat' id='{id}'><body>g</body></message>"),
        )
        .await;
        assert_eq!(
            stanza_error_condition(&reply).as_deref(),
            Some("service-unavailable"),
            "{to}"
        );
    }
    bob.expect_none(Duration::from_millis(100), is_message)
        .await;
}

#[tokio::test]
async fn iqs_to_unknown_full_jids_and_unhandled_namespaces_get_service_unavailable() {
    let server = three_users().await;
    let mut alice = server.login("alice", "pw", "a").await;
    let _bob = server.login("bob", "pw", "b").await;
    for (i, to) in [
        "bob@localhost/nope",
        "nobody@localhost/x",
        "nobody@localhost",
    ]
    .iter()
    .enumerate()
    {
        for kind in ["get", "set"] {
            let id = format!("q{i}{kind}");
            let reply = request(
                &mut alice,
                &id,
                &format!(
                    "<iq type='{kind}' to='{to}' id='{id}'><query xmlns='urn:example:x'/></iq>"
                ),
            )
            .await;
            assert_eq!(reply.attr("type"), Some("error"), "{reply:?}");
            assert_eq!(
                stanza_error_condition(&reply).as_deref(),
                Some("service-unavailable"),
                "{kind} to {to}"
            );
        }
    }
    // An unhandled namespace to the server itself, and to the user's own account.
    for (id, to) in [
        ("s1", " to='localhost'"),
        ("s2", ""),
        ("s3", " to='bob@localhost'"),
    ] {
        let reply = request(
            &mut alice,
            id,
            &format!("<iq type='get'{to} id='{id}'><nothing xmlns='urn:example:unknown'/></iq>"),
        )
        .await;
        assert_eq!(
            stanza_error_condition(&reply).as_deref(),
            Some("service-unavailable"),
            "{reply:?}"
        );
        // The error echoes the id and comes from the addressee.
        assert_eq!(reply.attr("id"), Some(id));
    }
}

#[tokio::test]
async fn malformed_iqs_and_addresses_get_errors() {
    let server = three_users().await;
    let mut alice = server.login("alice", "pw", "a").await;
    // Two payloads in a get.
    let reply = request(
        &mut alice,
        "two",
        "<iq type='get' to='localhost' id='two'><ping xmlns='urn:xmpp:ping'/><ping xmlns='urn:xmpp:ping'/></iq>",
    )
    .await;
    assert_eq!(
        stanza_error_condition(&reply).as_deref(),
        Some("bad-request")
    );
    // No payload at all.
    let reply = request(
        &mut alice,
        "none",
        "<iq type='set' to='localhost' id='none'/>",
    )
    .await;
    assert_eq!(
        stanza_error_condition(&reply).as_deref(),
        Some("bad-request")
    );
    // An unknown type.
    let reply = request(
        &mut alice,
        "odd",
        "<iq type='fetch' to='localhost' id='odd'><ping xmlns='urn:xmpp:ping'/></iq>",
    )
    .await;
    assert_eq!(
        stanza_error_condition(&reply).as_deref(),
        Some("bad-request")
    );
    // A malformed 'to': jid-malformed, for each kind of stanza.
    for (id, stanza) in [
        ("j1", "<message to='a@b@c' id='j1'><body>x</body></message>"),
        (
            "j2",
            "<iq type='get' to='@localhost' id='j2'><ping xmlns='urn:xmpp:ping'/></iq>",
        ),
        ("j3", "<presence to='alice@localhost/' id='j3'/>"),
    ] {
        let reply = request(&mut alice, id, stanza).await;
        assert_eq!(
            stanza_error_condition(&reply).as_deref(),
            Some("jid-malformed"),
            "{reply:?}"
        );
    }
    // An IQ without an id cannot be answered: the stream ends.
    alice
        .send("<iq type='get' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    alice.expect_stream_error("invalid-xml").await;
    server.assert_still_serves().await;
}

#[tokio::test]
async fn disco_info_lists_features_and_ping_works() {
    let server = three_users().await;
    let mut alice = server.login("alice", "pw", "a").await;
    let reply = request(
        &mut alice,
        "d",
        "<iq type='get' to='localhost' id='d'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
    )
    .await;
    assert_eq!(reply.attr("type"), Some("result"), "{reply:?}");
    assert_eq!(reply.attr("from"), Some("localhost"));
    assert_eq!(reply.attr("to"), Some("alice@localhost/a"));
    let query = reply
        .get_child("query", "http://jabber.org/protocol/disco#info")
        .expect("query");
    let identity = query
        .get_child("identity", "http://jabber.org/protocol/disco#info")
        .expect("identity");
    assert_eq!(identity.attr("category"), Some("server"));
    let features: Vec<_> = query
        .children()
        .filter(|c| c.name() == "feature")
        .filter_map(|c| c.attr("var"))
        .collect();
    for f in [
        "http://jabber.org/protocol/disco#info",
        "http://jabber.org/protocol/disco#items",
        "urn:xmpp:ping",
        "jabber:iq:version",
    ] {
        assert!(features.contains(&f), "{f} missing from {features:?}");
    }
    // Ping, with and without a 'to'.
    let reply = request(
        &mut alice,
        "p1",
        "<iq type='get' to='localhost' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>",
    )
    .await;
    assert_eq!(reply.attr("type"), Some("result"));
    assert_eq!(reply.attr("from"), Some("localhost"));
    let reply = request(
        &mut alice,
        "p2",
        "<iq type='get' id='p2'><ping xmlns='urn:xmpp:ping'/></iq>",
    )
    .await;
    assert_eq!(reply.attr("type"), Some("result"), "{reply:?}");
}

#[tokio::test]
async fn an_error_stanza_never_gets_an_error_reply() {
    let server = three_users().await;
    let mut alice = server.login("alice", "pw", "a").await;
    let _bob = server.login("bob", "pw", "b").await;
    let err = "<error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>";
    for stanza in [
        format!("<message type='error' to='nobody@localhost' id='e1'>{err}</message>"),
        format!("<message type='error' to='bob@localhost/gone' id='e2'>{err}</message>"),
        format!("<message type='error' to='localhost' id='e3'>{err}</message>"),
        format!("<iq type='error' to='nobody@localhost/x' id='e4'>{err}</iq>"),
        format!("<iq type='error' to='localhost' id='e5'>{err}</iq>"),
        "<iq type='result' to='bob@localhost/gone' id='e6'/>".to_owned(),
        format!("<presence type='error' to='nobody@localhost' id='e7'>{err}</presence>"),
    ] {
        let got = send_and_collect(&mut alice, &stanza).await;
        let bounced: Vec<_> = got.iter().filter(|e| e.name() != "presence").collect();
        assert!(bounced.is_empty(), "{stanza} got {bounced:?}");
    }
}
