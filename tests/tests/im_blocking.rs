//! Transcripts for the blocking command (XEP-0191): the blocklist, block and unblock with
//! pushes, what a blocked contact gets back, presence cut and restored, and the blocklist as
//! the default privacy list (XEP-0191 §5).

use std::time::Duration;

use minidom::Element;
use starling_tests::*;

const BLOCKING: &str = "urn:xmpp:blocking";
const BLOCKING_ERRORS: &str = "urn:xmpp:blocking:errors";

/// Sends an IQ and returns the answer with the same id (other stanzas are skipped).
async fn iq(c: &mut Conn, id: &str, xml: &str) -> Element {
    c.send(xml).await;
    c.recv_until(|e| e.name() == "iq" && e.attr("id") == Some(id) && e.attr("type") != Some("set"))
        .await
}

fn items(el: &Element) -> Vec<String> {
    el.children()
        .filter(|c| c.name() == "item")
        .map(|c| c.attr("jid").unwrap_or_default().to_owned())
        .collect()
}

/// Waits `d`, then collects everything that arrived before a ping round trip.
async fn drain(c: &mut Conn, d: Duration) -> Vec<Element> {
    tokio::time::sleep(d).await;
    c.send("<iq type='get' id='drain' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    let mut got = Vec::new();
    loop {
        let el = c.recv().await;
        if el.name() == "iq" && el.attr("id") == Some("drain") {
            return got;
        }
        got.push(el);
    }
}

/// `x` asks `y` for a subscription and `y` approves it.
async fn subscribe(x: &mut Conn, x_bare: &str, y: &mut Conn, y_bare: &str) {
    x.send(&format!("<presence to='{y_bare}' type='subscribe'/>"))
        .await;
    y.recv_until(|e| e.name() == "presence" && e.attr("type") == Some("subscribe"))
        .await;
    y.send(&format!("<presence to='{x_bare}' type='subscribed'/>"))
        .await;
    y.ping_server().await;
    x.ping_server().await;
}

/// Makes `a` and `b` (available, logged in) subscribe to each other, then drains both.
async fn befriend(a: &mut Conn, a_bare: &str, b: &mut Conn, b_bare: &str) {
    subscribe(a, a_bare, b, b_bare).await;
    subscribe(b, b_bare, a, a_bare).await;
    drain(a, Duration::from_millis(100)).await;
    drain(b, Duration::from_millis(100)).await;
}

fn presence_from<'a>(got: &'a [Element], from: &str) -> Vec<&'a Element> {
    got.iter()
        .filter(|e| e.name() == "presence" && e.attr("from") == Some(from))
        .collect()
}

#[tokio::test]
async fn blocklist_block_unblock_with_pushes_and_errors() {
    let server = TestServer::start().await;
    server.add_user("alice", "pw-a").await;
    let mut phone = server.login("alice", "pw-a", "phone").await;
    let mut laptop = server.login("alice", "pw-a", "laptop").await;
    phone.available().await;
    laptop.available().await;

    // Disco advertises the feature (§3.1).
    let info = iq(
        &mut phone,
        "d1",
        "<iq type='get' id='d1' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
    )
    .await;
    assert!(info
        .get_child("query", "http://jabber.org/protocol/disco#info")
        .unwrap()
        .children()
        .any(|f| f.attr("var") == Some(BLOCKING)));

    // An empty blocklist (§3.2); the phone is now a resource that "requested the blocklist".
    let res = iq(
        &mut phone,
        "b1",
        "<iq type='get' id='b1'><blocklist xmlns='urn:xmpp:blocking'/></iq>",
    )
    .await;
    assert_eq!(res.attr("type"), Some("result"));
    let list = res
        .get_child("blocklist", BLOCKING)
        .expect("blocklist element");
    assert!(items(list).is_empty());

    // Block two JIDs (§3.3): result, and a push to the phone only.
    phone
        .send("<iq type='set' id='b2'><block xmlns='urn:xmpp:blocking'><item jid='romeo@montague.net'/><item jid='iago@shakespeare.lit'/></block></iq>")
        .await;
    let got = drain(&mut phone, Duration::from_millis(100)).await;
    let result = got
        .iter()
        .find(|e| e.attr("id") == Some("b2"))
        .expect("result");
    assert_eq!(result.attr("type"), Some("result"));
    let push = got
        .iter()
        .find(|e| e.name() == "iq" && e.attr("type") == Some("set"))
        .expect("block push");
    assert_eq!(push.attr("to"), Some("alice@localhost/phone"));
    assert_eq!(
        items(push.get_child("block", BLOCKING).unwrap()),
        ["romeo@montague.net", "iago@shakespeare.lit"]
    );
    let got = drain(&mut laptop, Duration::from_millis(50)).await;
    assert!(
        !got.iter().any(|e| e.name() == "iq"),
        "laptop never asked for the blocklist: {got:?}"
    );

    let res = iq(
        &mut laptop,
        "b3",
        "<iq type='get' id='b3'><blocklist xmlns='urn:xmpp:blocking'/></iq>",
    )
    .await;
    assert_eq!(
        items(res.get_child("blocklist", BLOCKING).unwrap()),
        ["romeo@montague.net", "iago@shakespeare.lit"]
    );

    // Errors: a block without items is bad-request, a bad JID jid-malformed.
    let res = iq(
        &mut phone,
        "e1",
        "<iq type='set' id='e1'><block xmlns='urn:xmpp:blocking'/></iq>",
    )
    .await;
    assert_eq!(res.attr("type"), Some("error"));
    assert_eq!(stanza_error_condition(&res).as_deref(), Some("bad-request"));
    let res = iq(
        &mut phone,
        "e2",
        "<iq type='set' id='e2'><block xmlns='urn:xmpp:blocking'><item jid='a@b@c'/></block></iq>",
    )
    .await;
    assert_eq!(
        stanza_error_condition(&res).as_deref(),
        Some("jid-malformed")
    );

    // Unblock one (§3.4): both resources asked for the list now, both get the push.
    phone
        .send("<iq type='set' id='u1'><unblock xmlns='urn:xmpp:blocking'><item jid='romeo@montague.net'/></unblock></iq>")
        .await;
    for c in [&mut phone, &mut laptop] {
        let push = c
            .recv_until(|e| e.name() == "iq" && e.attr("type") == Some("set"))
            .await;
        assert_eq!(
            items(push.get_child("unblock", BLOCKING).unwrap()),
            ["romeo@montague.net"]
        );
    }
    let res = iq(
        &mut phone,
        "b4",
        "<iq type='get' id='b4'><blocklist xmlns='urn:xmpp:blocking'/></iq>",
    )
    .await;
    assert_eq!(
        items(res.get_child("blocklist", BLOCKING).unwrap()),
        ["iago@shakespeare.lit"]
    );

    // Unblock all (§3.5): an empty unblock push.
    phone
        .send("<iq type='set' id='u2'><unblock xmlns='urn:xmpp:blocking'/></iq>")
        .await;
    let push = laptop
        .recv_until(|e| e.name() == "iq" && e.attr("type") == Some("set"))
        .await;
    let unblock = push.get_child("unblock", BLOCKING).unwrap();
    assert!(items(unblock).is_empty());
    let res = iq(
        &mut phone,
        "b5",
        "<iq type='get' id='b5'><blocklist xmlns='urn:xmpp:blocking'/></iq>",
    )
    .await;
    assert!(items(res.get_child("blocklist", BLOCKING).unwrap()).is_empty());
}

#[tokio::test]
async fn blocked_contacts_get_errors_and_nothing_gets_through() {
    let server = TestServer::start().await;
    server.add_user("alice", "pw-a").await;
    server.add_user("bob", "pw-b").await;
    let mut alice = server.login("alice", "pw-a", "phone").await;
    let mut bob = server.login("bob", "pw-b", "laptop").await;
    alice.available().await;
    bob.available().await;
    let res = iq(
        &mut alice,
        "b1",
        "<iq type='set' id='b1'><block xmlns='urn:xmpp:blocking'><item jid='bob@localhost'/></block></iq>",
    )
    .await;
    assert_eq!(res.attr("type"), Some("result"));

    // bob -> alice: the message bounces with service-unavailable (§3.3), alice sees nothing.
    bob.send("<message to='alice@localhost' type='chat' id='m1'><body>hello?</body></message>")
        .await;
    let err = bob.recv_until(|e| e.name() == "message").await;
    assert_eq!(err.attr("id"), Some("m1"));
    assert_eq!(err.attr("type"), Some("error"));
    assert_eq!(
        stanza_error_condition(&err).as_deref(),
        Some("service-unavailable")
    );
    // To the full JID as well.
    bob.send(
        "<message to='alice@localhost/phone' type='chat' id='m2'><body>hello?</body></message>",
    )
    .await;
    let err = bob.recv_until(|e| e.name() == "message").await;
    assert_eq!(err.attr("id"), Some("m2"));
    assert_eq!(
        stanza_error_condition(&err).as_deref(),
        Some("service-unavailable")
    );
    // An IQ get to alice's resource: service-unavailable.
    bob.send(
        "<iq to='alice@localhost/phone' type='get' id='q1'><query xmlns='jabber:iq:version'/></iq>",
    )
    .await;
    let err = bob.recv_until(|e| e.attr("id") == Some("q1")).await;
    assert_eq!(
        stanza_error_condition(&err).as_deref(),
        Some("service-unavailable")
    );
    // A subscription request vanishes silently.
    bob.send("<presence to='alice@localhost' type='subscribe'/>")
        .await;
    let got = drain(&mut bob, Duration::from_millis(100)).await;
    assert!(
        got.iter()
            .all(|e| e.name() != "presence" || e.attr("type") != Some("error")),
        "{got:?}"
    );
    let got = drain(&mut alice, Duration::from_millis(50)).await;
    assert!(
        !got.iter()
            .any(|e| e.attr("from").is_some_and(|f| f.starts_with("bob@"))),
        "alice got something from bob: {got:?}"
    );

    // alice -> bob: not-acceptable with <blocked/> (§3.3), bob sees nothing.
    alice
        .send("<message to='bob@localhost' type='chat' id='m3'><body>Can you hear me now?</body></message>")
        .await;
    let err = alice.recv_until(|e| e.name() == "message").await;
    assert_eq!(err.attr("id"), Some("m3"));
    assert_eq!(err.attr("from"), Some("bob@localhost"));
    assert_eq!(err.attr("type"), Some("error"));
    let error = err.get_child("error", "jabber:client").unwrap();
    assert_eq!(error.attr("type"), Some("cancel"));
    assert!(error.has_child("not-acceptable", "urn:ietf:params:xml:ns:xmpp-stanzas"));
    assert!(error.has_child("blocked", BLOCKING_ERRORS));
    assert_eq!(
        err.get_child("body", "jabber:client").unwrap().text(),
        "Can you hear me now?"
    );
    let got = drain(&mut bob, Duration::from_millis(50)).await;
    assert!(!got.iter().any(|e| e.name() == "message"), "{got:?}");

    // While alice is offline the block still holds, and nothing is stored for later.
    alice.close().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    bob.send("<message to='alice@localhost' type='chat' id='m4'><body>later?</body></message>")
        .await;
    let err = bob.recv_until(|e| e.name() == "message").await;
    assert_eq!(err.attr("id"), Some("m4"));
    assert_eq!(
        stanza_error_condition(&err).as_deref(),
        Some("service-unavailable")
    );
    let stored = server
        .server()
        .storage()
        .archive_count("localhost", "alice", "offline")
        .await
        .unwrap();
    assert_eq!(stored, 0);

    // After unblocking, messages flow again.
    let mut alice = server.login("alice", "pw-a", "phone").await;
    alice.available().await;
    iq(&mut alice, "u1", "<iq type='set' id='u1'><unblock xmlns='urn:xmpp:blocking'><item jid='bob@localhost'/></unblock></iq>").await;
    bob.send("<message to='alice@localhost' type='chat' id='m5'><body>finally</body></message>")
        .await;
    let m = alice.recv_until(|e| e.name() == "message").await;
    assert_eq!(m.attr("id"), Some("m5"));
    assert_eq!(m.attr("type"), Some("chat"));
}

#[tokio::test]
async fn blocking_cuts_presence_both_ways_and_unblocking_restores_it() {
    let server = TestServer::start().await;
    server.add_user("alice", "pw-a").await;
    server.add_user("bob", "pw-b").await;
    let mut alice = server.login("alice", "pw-a", "phone").await;
    let mut bob = server.login("bob", "pw-b", "laptop").await;
    alice.available().await;
    bob.available().await;
    befriend(&mut alice, "alice@localhost", &mut bob, "bob@localhost").await;
    // They see each other's presence now.
    bob.send("<presence><show>chat</show></presence>").await;
    let p = alice
        .recv_until(|e| e.name() == "presence" && e.attr("from") == Some("bob@localhost/laptop"))
        .await;
    assert_eq!(p.get_child("show", "jabber:client").unwrap().text(), "chat");

    alice
        .send("<iq type='set' id='b1'><block xmlns='urn:xmpp:blocking'><item jid='bob@localhost'/></block></iq>")
        .await;
    // bob is told alice went away (§3.3); alice stops seeing bob (XEP-0016 §2.7 note).
    let p = bob
        .recv_until(|e| e.name() == "presence" && e.attr("from") == Some("alice@localhost/phone"))
        .await;
    assert_eq!(p.attr("type"), Some("unavailable"));
    let got = drain(&mut alice, Duration::from_millis(50)).await;
    assert!(got
        .iter()
        .any(|e| e.attr("id") == Some("b1") && e.attr("type") == Some("result")));
    let from_bob = presence_from(&got, "bob@localhost/laptop");
    assert_eq!(from_bob.len(), 1, "{got:?}");
    assert_eq!(from_bob[0].attr("type"), Some("unavailable"));

    // Presence changes no longer cross in either direction.
    bob.send("<presence><show>away</show></presence>").await;
    alice.send("<presence><show>dnd</show></presence>").await;
    let got = drain(&mut alice, Duration::from_millis(150)).await;
    assert!(
        presence_from(&got, "bob@localhost/laptop").is_empty(),
        "{got:?}"
    );
    let got = drain(&mut bob, Duration::from_millis(50)).await;
    assert!(
        presence_from(&got, "alice@localhost/phone").is_empty(),
        "{got:?}"
    );

    // Unblock (§3.4): bob gets alice's current presence, alice gets bob's again.
    alice
        .send("<iq type='set' id='u1'><unblock xmlns='urn:xmpp:blocking'><item jid='bob@localhost'/></unblock></iq>")
        .await;
    let p = bob
        .recv_until(|e| e.name() == "presence" && e.attr("from") == Some("alice@localhost/phone"))
        .await;
    assert_eq!(p.attr("type"), None);
    assert_eq!(p.get_child("show", "jabber:client").unwrap().text(), "dnd");
    let p = alice
        .recv_until(|e| e.name() == "presence" && e.attr("from") == Some("bob@localhost/laptop"))
        .await;
    assert_eq!(p.attr("type"), None);
    assert_eq!(p.get_child("show", "jabber:client").unwrap().text(), "away");
}

#[tokio::test]
async fn the_blocklist_is_the_default_privacy_list_and_persists() {
    let server = TestServer::start().await;
    server.add_user("alice", "pw-a").await;
    server.add_user("bob", "pw-b").await;
    let mut alice = server.login("alice", "pw-a", "phone").await;
    alice.available().await;
    iq(
        &mut alice,
        "b1",
        "<iq type='set' id='b1'><block xmlns='urn:xmpp:blocking'><item jid='bob@localhost'/></block></iq>",
    )
    .await;
    // XEP-0191 §5: the blocklist shows up as the default privacy list, jid+deny items first.
    let res = iq(
        &mut alice,
        "p1",
        "<iq type='get' id='p1'><query xmlns='jabber:iq:privacy'/></iq>",
    )
    .await;
    let q = res.get_child("query", "jabber:iq:privacy").unwrap();
    let default = q
        .get_child("default", "jabber:iq:privacy")
        .expect("a default list");
    let name = default.attr("name").unwrap().to_owned();
    let res = iq(
        &mut alice,
        "p2",
        &format!("<iq type='get' id='p2'><query xmlns='jabber:iq:privacy'><list name='{name}'/></query></iq>"),
    )
    .await;
    let list = res
        .get_child("query", "jabber:iq:privacy")
        .unwrap()
        .get_child("list", "jabber:iq:privacy")
        .unwrap();
    let item = list.children().next().unwrap();
    assert_eq!(item.attr("type"), Some("jid"));
    assert_eq!(item.attr("value"), Some("bob@localhost"));
    assert_eq!(item.attr("action"), Some("deny"));
    assert_eq!(item.children().count(), 0);

    // Across sessions and a server restart the block holds.
    alice.close().await;
    let data_dir = server.dir.path().join("data");
    server.server().shutdown_token().cancel();
    let second = TestServer::start_with(|c| c.server.data_dir = data_dir).await;
    let mut alice = second.login("alice", "pw-a", "tablet").await;
    let res = iq(
        &mut alice,
        "b2",
        "<iq type='get' id='b2'><blocklist xmlns='urn:xmpp:blocking'/></iq>",
    )
    .await;
    assert_eq!(
        items(res.get_child("blocklist", BLOCKING).unwrap()),
        ["bob@localhost"]
    );
    let mut bob = second.login("bob", "pw-b", "laptop").await;
    bob.send("<message to='alice@localhost' type='chat' id='m1'><body>hi</body></message>")
        .await;
    let err = bob.recv_until(|e| e.name() == "message").await;
    assert_eq!(
        stanza_error_condition(&err).as_deref(),
        Some("service-unavailable")
    );
    drop(server);
}

#[tokio::test]
async fn a_blocked_contact_cannot_query_the_account_through_the_server() {
    // IQs the server answers on the user's behalf (vCard at the bare JID) obey the block too.
    let server = TestServer::start().await;
    server.add_user("alice", "pw").await;
    server.add_user("carol", "pw").await;
    let mut alice = server.login("alice", "pw", "desk").await;
    let mut carol = server.login("carol", "pw", "pc").await;
    alice
        .send("<iq type='set' id='v1'><vCard xmlns='vcard-temp'><FN>Alice</FN></vCard></iq>")
        .await;
    alice.recv_until(|e| e.attr("id") == Some("v1")).await;
    let before = iq(
        &mut carol,
        "q1",
        "<iq type='get' id='q1' to='alice@localhost'><vCard xmlns='vcard-temp'/></iq>",
    )
    .await;
    assert_eq!(before.attr("type"), Some("result"), "{before:?}");
    let blocked = iq(
        &mut alice,
        "b1",
        &format!("<iq type='set' id='b1'><block xmlns='{BLOCKING}'><item jid='carol@localhost'/></block></iq>"),
    )
    .await;
    assert_eq!(blocked.attr("type"), Some("result"), "{blocked:?}");
    let after = iq(
        &mut carol,
        "q2",
        "<iq type='get' id='q2' to='alice@localhost'><vCard xmlns='vcard-temp'/></iq>",
    )
    .await;
    assert_eq!(after.attr("type"), Some("error"), "{after:?}");
    assert_eq!(
        stanza_error_condition(&after).as_deref(),
        Some("service-unavailable")
    );
    assert!(after
        .get_child("vCard", "vcard-temp")
        .is_none_or(|v| v.children().next().is_none()));
}
