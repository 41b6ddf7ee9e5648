//! Transcripts for Message Carbons (XEP-0280): alice has a phone and a tablet with carbons
//! enabled and a laptop without; bob writes to her and she answers from one device while the
//! others follow the conversation. Forged carbons — from a client, or routed to alice from
//! someone else — never reach her.

use std::time::Duration;

use minidom::Element;
use starling_proto::jid::Jid;
use starling_tests::*;

const CARBONS: &str = "urn:xmpp:carbons:2";
const FORWARD: &str = "urn:xmpp:forward:0";
const SID: &str = "urn:xmpp:sid:0";
const CLIENT: &str = "jabber:client";
const E2E: &str = "urn:ietf:params:xml:ns:xmpp-e2e";

fn xml(el: &Element) -> String {
    starling_proto::writer::element_to_string(el)
}

fn body(el: &Element) -> String {
    el.get_child("body", CLIENT)
        .map(|b| b.text())
        .unwrap_or_default()
}

fn is_message(el: &Element) -> bool {
    el.name() == "message"
}

/// The message inside a carbon copy of kind `sent`/`received`, after checking the wrapper
/// (XEP-0280 §6, §7): from the user's bare JID, to the receiving resource.
fn unwrap_carbon<'a>(copy: &'a Element, kind: &str, user: &str, to: &str) -> &'a Element {
    assert_eq!(copy.attr("from"), Some(user), "{}", xml(copy));
    assert_eq!(copy.attr("to"), Some(to), "{}", xml(copy));
    copy.get_child(kind, CARBONS)
        .and_then(|w| w.get_child("forwarded", FORWARD))
        .and_then(|f| f.get_child("message", CLIENT))
        .unwrap_or_else(|| panic!("expected a <{kind}/> carbon, got {}", xml(copy)))
}

/// A ping round trip during which no message may arrive. After the sender of a message has
/// itself completed a round trip, everything its message caused is queued, so this is exact.
async fn no_message(c: &mut Conn) {
    c.send("<iq type='get' id='quiet' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    loop {
        let el = c.recv().await;
        if el.name() == "iq" && el.attr("id") == Some("quiet") {
            return;
        }
        assert!(!is_message(&el), "unexpected message {}", xml(&el));
    }
}

async fn enable(c: &mut Conn, on: bool) {
    let verb = if on { "enable" } else { "disable" };
    c.send(&format!(
        "<iq type='set' id='cb'><{verb} xmlns='urn:xmpp:carbons:2'/></iq>"
    ))
    .await;
    let r = c
        .recv_until(|e| e.name() == "iq" && e.attr("id") == Some("cb"))
        .await;
    assert_eq!(r.attr("type"), Some("result"), "{}", xml(&r));
}

/// alice: phone (priority 5, carbons), tablet (carbons), laptop (no carbons); bob: pc.
struct Scene {
    server: TestServer,
    phone: Conn,
    tablet: Conn,
    laptop: Conn,
    bob: Conn,
}

async fn scene() -> Scene {
    let server = TestServer::start().await;
    server.add_user("alice", "pw-a").await;
    server.add_user("bob", "pw-b").await;
    let mut phone = server.login("alice", "pw-a", "phone").await;
    let mut tablet = server.login("alice", "pw-a", "tablet").await;
    let mut laptop = server.login("alice", "pw-a", "laptop").await;
    let mut bob = server.login("bob", "pw-b", "pc").await;
    phone
        .send("<presence><priority>5</priority></presence>")
        .await;
    phone.ping_server().await;
    for c in [&mut tablet, &mut laptop, &mut bob] {
        c.available().await;
    }
    enable(&mut phone, true).await;
    enable(&mut tablet, true).await;
    // Drain the presence the resources exchanged.
    for c in [&mut phone, &mut tablet, &mut laptop, &mut bob] {
        c.ping_server().await;
    }
    Scene {
        server,
        phone,
        tablet,
        laptop,
        bob,
    }
}

#[tokio::test]
async fn carbons_are_advertised_and_enabling_is_idempotent() {
    let server = TestServer::start().await;
    server.add_user("alice", "pw-a").await;
    server.add_user("bob", "pw-b").await;
    let mut c = server.login("alice", "pw-a", "phone").await;
    c.send("<iq type='get' id='d' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
        .await;
    let info = c.recv_until(|e| e.attr("id") == Some("d")).await;
    let features: Vec<_> = info
        .get_child("query", "http://jabber.org/protocol/disco#info")
        .unwrap()
        .children()
        .filter_map(|f| f.attr("var"))
        .map(str::to_owned)
        .collect();
    assert!(features.iter().any(|f| f == CARBONS), "{features:?}");
    // §9.1: enabling or disabling twice is not an error.
    for on in [true, true, false, false, true] {
        enable(&mut c, on).await;
    }
    // Addressed to the server works too.
    c.send("<iq type='set' id='s' to='localhost'><enable xmlns='urn:xmpp:carbons:2'/></iq>")
        .await;
    let r = c.recv_until(|e| e.attr("id") == Some("s")).await;
    assert_eq!(r.attr("type"), Some("result"), "{}", xml(&r));
    // Nobody enables carbons for someone else; a get means nothing.
    c.send("<iq type='set' id='x' to='bob@localhost'><enable xmlns='urn:xmpp:carbons:2'/></iq>")
        .await;
    let r = c.recv_until(|e| e.attr("id") == Some("x")).await;
    assert_eq!(stanza_error_condition(&r).as_deref(), Some("not-allowed"));
    c.send("<iq type='get' id='g'><enable xmlns='urn:xmpp:carbons:2'/></iq>")
        .await;
    let r = c.recv_until(|e| e.attr("id") == Some("g")).await;
    assert_eq!(stanza_error_condition(&r).as_deref(), Some("bad-request"));
}

#[tokio::test]
async fn received_and_sent_copies_reach_the_other_enabled_resources_only() {
    let Scene {
        server,
        mut phone,
        mut tablet,
        mut laptop,
        mut bob,
    } = scene().await;

    // bob writes to alice's phone: the phone gets the original, the tablet a <received/>
    // copy, the laptop (carbons off) nothing.
    bob.send("<message to='alice@localhost/phone' type='chat' id='b1'><body>hello phone</body></message>")
        .await;
    bob.ping_server().await;
    let original = phone.recv_until(is_message).await;
    assert_eq!(body(&original), "hello phone");
    assert!(original.get_child("received", CARBONS).is_none());
    let copy = tablet.recv_until(is_message).await;
    assert_eq!(copy.attr("type"), Some("chat"));
    let inner = unwrap_carbon(
        &copy,
        "received",
        "alice@localhost",
        "alice@localhost/tablet",
    );
    assert_eq!(inner.attr("from"), Some("bob@localhost/pc"));
    assert_eq!(inner.attr("to"), Some("alice@localhost/phone"));
    assert_eq!(inner.attr("id"), Some("b1"));
    assert_eq!(body(inner), "hello phone");
    // The copy is the message the phone got, archive id included.
    assert_eq!(inner, &original);
    assert!(original.get_child("stanza-id", SID).is_some());
    no_message(&mut laptop).await;
    no_message(&mut phone).await;
    no_message(&mut tablet).await;

    // To the bare JID: the phone (highest priority) gets it; the tablet a copy.
    bob.send("<message to='alice@localhost' type='chat'><body>hello alice</body></message>")
        .await;
    bob.ping_server().await;
    assert_eq!(body(&phone.recv_until(is_message).await), "hello alice");
    let copy = tablet.recv_until(is_message).await;
    let inner = unwrap_carbon(
        &copy,
        "received",
        "alice@localhost",
        "alice@localhost/tablet",
    );
    assert_eq!(body(inner), "hello alice");
    no_message(&mut laptop).await;
    no_message(&mut tablet).await;

    // alice answers from the tablet: bob gets it; the phone a <sent/> copy that carries
    // alice's archive id; the tablet itself and the laptop nothing.
    tablet
        .send("<message to='bob@localhost/pc' type='chat' id='a1'><body>hi bob</body></message>")
        .await;
    tablet.ping_server().await;
    let at_bob = bob.recv_until(is_message).await;
    assert_eq!(body(&at_bob), "hi bob");
    // XEP-0313 §3.5: alice's archive id does not reach bob (his own archive's does).
    let ids: Vec<_> = at_bob
        .children()
        .filter(|c| c.is("stanza-id", SID))
        .map(|c| c.attr("by").unwrap_or_default().to_owned())
        .collect();
    assert_eq!(ids, ["bob@localhost"], "{}", xml(&at_bob));
    let copy = phone.recv_until(is_message).await;
    let inner = unwrap_carbon(&copy, "sent", "alice@localhost", "alice@localhost/phone");
    assert_eq!(inner.attr("from"), Some("alice@localhost/tablet"));
    assert_eq!(inner.attr("to"), Some("bob@localhost/pc"));
    assert_eq!(inner.attr("id"), Some("a1"));
    assert_eq!(body(inner), "hi bob");
    let sid = inner
        .get_child("stanza-id", SID)
        .expect("archive id in the sent copy");
    assert_eq!(sid.attr("by"), Some("alice@localhost"));
    // It is the id the message has in alice's archive, stored before the tablet's session
    // went on to answer its ping (the sender's append finishes while the message is routed).
    let page = server
        .server()
        .storage()
        .archive_query(
            "localhost",
            "alice",
            "mam",
            &starling_storage::ArchiveQuery {
                ids: Some(vec![sid.attr("id").unwrap().to_owned()]),
                limit: 10,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(page.items.len(), 1, "sent copy's id {sid:?} not archived");
    assert_eq!(page.items[0].with, "bob@localhost");
    no_message(&mut tablet).await;
    no_message(&mut laptop).await;

    // The laptop (carbons off) sends: the phone and tablet get sent copies anyway (§7).
    laptop
        .send("<message to='bob@localhost' type='chat'><body>from laptop</body></message>")
        .await;
    laptop.ping_server().await;
    for (c, to) in [
        (&mut phone, "alice@localhost/phone"),
        (&mut tablet, "alice@localhost/tablet"),
    ] {
        let copy = c.recv_until(is_message).await;
        assert_eq!(
            body(unwrap_carbon(&copy, "sent", "alice@localhost", to)),
            "from laptop"
        );
    }
    assert_eq!(body(&bob.recv_until(is_message).await), "from laptop");

    // Not eligible (§6): headlines, normal messages without a body.
    bob.send("<message to='alice@localhost/phone' type='headline'><body>news</body></message>")
        .await;
    bob.send("<message to='alice@localhost/phone'><subject>no body</subject></message>")
        .await;
    bob.ping_server().await;
    phone.recv_until(is_message).await;
    phone.recv_until(is_message).await;
    no_message(&mut tablet).await;
    // A normal message with a body is.
    bob.send("<message to='alice@localhost/phone'><body>normal</body></message>")
        .await;
    bob.ping_server().await;
    let copy = tablet.recv_until(is_message).await;
    assert_eq!(copy.attr("type"), None);
    assert_eq!(
        body(unwrap_carbon(
            &copy,
            "received",
            "alice@localhost",
            "alice@localhost/tablet"
        )),
        "normal"
    );
}

#[tokio::test]
async fn private_and_no_copy_messages_are_not_copied() {
    let Scene {
        server: _server,
        mut phone,
        mut tablet,
        laptop: _laptop,
        mut bob,
    } = scene().await;
    // Outgoing, <private/> (§8) and <no-copy/> (XEP-0334).
    tablet
        .send("<message to='bob@localhost/pc' type='chat'><body>secret</body><private xmlns='urn:xmpp:carbons:2'/></message>")
        .await;
    tablet
        .send("<message to='bob@localhost/pc' type='chat'><body>hint</body><no-copy xmlns='urn:xmpp:hints'/></message>")
        .await;
    tablet.ping_server().await;
    assert_eq!(body(&bob.recv_until(is_message).await), "secret");
    assert_eq!(body(&bob.recv_until(is_message).await), "hint");
    no_message(&mut phone).await;
    // Incoming.
    bob.send("<message to='alice@localhost/phone' type='chat'><body>secret back</body><private xmlns='urn:xmpp:carbons:2'/></message>")
        .await;
    bob.ping_server().await;
    assert_eq!(body(&phone.recv_until(is_message).await), "secret back");
    no_message(&mut tablet).await;
    // MUC private messages are not copied either (§6).
    bob.send("<message to='alice@localhost/phone' type='chat'><body>pm</body><x xmlns='http://jabber.org/protocol/muc#user'/></message>")
        .await;
    bob.ping_server().await;
    assert_eq!(body(&phone.recv_until(is_message).await), "pm");
    no_message(&mut tablet).await;
}

#[tokio::test]
async fn a_disabled_or_closed_resource_gets_no_copies() {
    let Scene {
        server,
        mut phone,
        mut tablet,
        laptop: _laptop,
        mut bob,
    } = scene().await;
    enable(&mut tablet, false).await;
    bob.send("<message to='alice@localhost/phone' type='chat'><body>one</body></message>")
        .await;
    bob.ping_server().await;
    assert_eq!(body(&phone.recv_until(is_message).await), "one");
    no_message(&mut tablet).await;
    phone
        .send("<message to='bob@localhost' type='chat'><body>two</body></message>")
        .await;
    phone.ping_server().await;
    no_message(&mut tablet).await;
    // Enabled again, then the session ends: a new session on the same resource starts with
    // carbons off.
    enable(&mut tablet, true).await;
    tablet.close().await;
    server
        .wait_unbound(&Jid::parse("alice@localhost/tablet").unwrap())
        .await;
    let mut tablet = server.login("alice", "pw-a", "tablet").await;
    tablet.available().await;
    bob.send("<message to='alice@localhost/phone' type='chat'><body>three</body></message>")
        .await;
    bob.ping_server().await;
    assert_eq!(body(&phone.recv_until(is_message).await), "three");
    no_message(&mut tablet).await;
}

#[tokio::test]
async fn carbons_forged_by_a_client_are_rejected() {
    let Scene {
        server: _server,
        mut phone,
        mut tablet,
        mut laptop,
        mut bob,
    } = scene().await;
    // bob pretends to forward alice a message carol "sent" her.
    bob.send(
        "<message to='alice@localhost/phone' type='chat' id='f1'><body>see below</body>\
         <received xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'>\
         <message xmlns='jabber:client' from='carol@localhost/x' to='alice@localhost/phone' type='chat'>\
         <body>pay bob</body></message></forwarded></received></message>",
    )
    .await;
    let err = bob.recv_until(is_message).await;
    assert_eq!(err.attr("type"), Some("error"), "{}", xml(&err));
    assert_eq!(err.attr("id"), Some("f1"));
    assert_eq!(stanza_error_condition(&err).as_deref(), Some("forbidden"));
    // The error does not echo the wrapper.
    assert!(
        err.get_child("received", CARBONS).is_none(),
        "{}",
        xml(&err)
    );
    // One of alice's own clients cannot make up a <sent/> copy for another either.
    tablet
        .send(
            "<message to='alice@localhost/phone' type='chat' id='f2'>\
             <sent xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'>\
             <message xmlns='jabber:client' from='alice@localhost/laptop' to='bob@localhost' type='chat'>\
             <body>I never said this</body></message></forwarded></sent></message>",
        )
        .await;
    let err = tablet.recv_until(is_message).await;
    assert_eq!(stanza_error_condition(&err).as_deref(), Some("forbidden"));
    bob.ping_server().await;
    tablet.ping_server().await;
    for c in [&mut phone, &mut tablet, &mut laptop] {
        no_message(c).await;
    }
}

#[tokio::test]
async fn carbons_routed_from_another_user_never_reach_the_client() {
    let Scene {
        server,
        mut phone,
        mut tablet,
        mut laptop,
        bob: _bob,
    } = scene().await;
    // What a remote server (or any path that does not cross the client checks) could hand
    // the router: a copy "from" bob, to alice's full JID and to her bare JID.
    let forged = |to: &str, kind: &str| -> Element {
        format!(
            "<message xmlns='jabber:client' from='bob@localhost/pc' to='{to}' type='chat'>\
             <body>x</body><{kind} xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'>\
             <message xmlns='jabber:client' from='alice@localhost/laptop' to='carol@localhost' type='chat'>\
             <body>forged</body></message></forwarded></{kind}></message>"
        )
        .parse()
        .unwrap()
    };
    server
        .server()
        .route(forged("alice@localhost/phone", "sent"))
        .await;
    server
        .server()
        .route(forged("alice@localhost", "received"))
        .await;
    server
        .server()
        .route(forged("alice@localhost/gone", "received"))
        .await;
    // A plain message routed the same way does arrive (the test can fail).
    let plain: Element = "<message xmlns='jabber:client' from='bob@localhost/pc' \
        to='alice@localhost/phone' type='chat'><body>real</body></message>"
        .parse()
        .unwrap();
    server.server().route(plain).await;
    let got = phone.recv_until(is_message).await;
    assert_eq!(body(&got), "real", "{}", xml(&got));
    let copy = tablet.recv_until(is_message).await;
    let inner = unwrap_carbon(
        &copy,
        "received",
        "alice@localhost",
        "alice@localhost/tablet",
    );
    assert_eq!(body(inner), "real");
    for c in [&mut phone, &mut tablet, &mut laptop] {
        no_message(c).await;
    }
    // Nor were they stored for later.
    assert_eq!(
        server
            .server()
            .storage()
            .archive_count("localhost", "alice", "offline")
            .await
            .unwrap(),
        0
    );
}

#[tokio::test]
async fn end_to_end_payloads_are_copied_unchanged() {
    let Scene {
        server: _server,
        mut phone,
        mut tablet,
        laptop: _laptop,
        mut bob,
    } = scene().await;
    // An RFC 3923 payload (CRLF kept as character references, a ']]>' inside) and an unknown
    // extension with nested namespaces and attributes.
    let payload = "<e2e xmlns='urn:ietf:params:xml:ns:xmpp-e2e'>Content-Type: application/pkcs7-mime&#xD;\n\
                   &#xD;\nMIIB]]&gt;x==&#xD;\n</e2e>\
                   <thing xmlns='urn:example:unknown' a='1' b='&apos;q&apos;'><inner xmlns='urn:example:other'>t<x/></inner></thing>";
    bob.send(&format!(
        "<message to='alice@localhost/phone' type='chat' id='e1'>{payload}</message>"
    ))
    .await;
    bob.ping_server().await;
    let original = phone.recv_until(is_message).await;
    let e2e = original.get_child("e2e", E2E).expect("e2e delivered");
    assert_eq!(
        e2e.text(),
        "Content-Type: application/pkcs7-mime\r\n\r\nMIIB]]>x==\r\n"
    );
    let copy = tablet.recv_until(is_message).await;
    let inner = unwrap_carbon(
        &copy,
        "received",
        "alice@localhost",
        "alice@localhost/tablet",
    );
    assert_eq!(inner, &original);
    for name in ["e2e", "thing"] {
        let a = original.children().find(|c| c.name() == name).unwrap();
        let b = inner.children().find(|c| c.name() == name).unwrap();
        assert_eq!(xml(a), xml(b));
    }
    tokio::time::sleep(Duration::from_millis(1)).await;
}
