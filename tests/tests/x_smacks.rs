//! Transcripts for stream management (XEP-0198): the feature is offered after
//! authentication; `<enable/>` only after binding; acks count both ways (an ack beyond what
//! was sent is a stream error); a TCP connection cut mid-stream is resumed with every message
//! in flight delivered exactly once; a session that is not resumed in time sends what was
//! never acknowledged to offline storage, delivered once at the next login; contacts see no
//! unavailable presence while a session is hibernated, and do when it times out (an IQ
//! request that waited for it gets `service-unavailable`); previds that are unknown or belong
//! to another account are refused; a resume replaces a connection that is still open; an
//! inactive client (XEP-0352) resumes and gets its held presence on `<active/>`; a client
//! that never acks is closed at `max_unacked` and none of its messages is lost.

mod im_support;

use std::collections::BTreeMap;
use std::time::Duration;

use im_support::*;
use minidom::Element;
use starling_proto::jid::Jid;
use starling_sasl::ScramHash;
use starling_tests::*;

const SM: &str = "urn:xmpp:sm:3";
const DELAY: &str = "urn:xmpp:delay";

/// Connects, negotiates TLS and authenticates `user`, without binding; returns the features.
async fn authenticated(server: &TestServer, user: &str) -> (Conn, Element) {
    let mut c = Conn::connect(server.c2s).await;
    c.open("localhost").await;
    c.starttls().await;
    let features = c
        .scram(ScramHash::Sha256, false, user, &format!("pw-{user}"))
        .await
        .expect("SCRAM succeeds");
    (c, features)
}

/// Sends `<enable resume='true'/>` and returns the resumption id.
async fn enable_resumable(c: &mut Conn) -> String {
    c.send("<enable xmlns='urn:xmpp:sm:3' resume='true'/>")
        .await;
    let enabled = c.recv().await;
    assert!(enabled.is("enabled", SM), "{}", xml(&enabled));
    assert_eq!(enabled.attr("resume"), Some("true"), "{}", xml(&enabled));
    enabled.attr("id").expect("a resumption id").to_owned()
}

fn is_ack_request(el: &Element) -> bool {
    el.is("r", SM)
}

/// The next element that is not an ack request.
async fn recv_skip_r(c: &mut Conn) -> Element {
    c.recv_until(|e| !is_ack_request(e)).await
}

/// Sends a ping and reads until its result, counting what else arrived (minus `<r/>`).
async fn sync(c: &mut Conn, id: &str) -> Vec<Element> {
    c.send(&format!(
        "<iq type='get' id='{id}' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>"
    ))
    .await;
    let mut other = Vec::new();
    loop {
        let el = c.recv().await;
        if el.name() == "iq" && el.attr("id") == Some(id) {
            return other;
        }
        if !is_ack_request(&el) {
            other.push(el);
        }
    }
}

fn chat(to: &str, n: u32) -> String {
    format!("<message to='{to}' type='chat' id='m{n}'><body>message {n}</body></message>")
}

fn body(el: &Element) -> Option<String> {
    el.get_child("body", CLIENT).map(|b| b.text())
}

/// Waits until `user`'s offline store holds `n` messages (re-routing runs after unbinding).
async fn wait_offline(server: &TestServer, user: &str, n: usize) {
    let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
    loop {
        let count = server
            .server()
            .storage()
            .archive_count("localhost", user, "offline")
            .await
            .unwrap() as usize;
        if count >= n {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{count} offline, expected {n}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn wait_hibernated(server: &TestServer, full: &Jid) {
    let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
    loop {
        let s = server
            .server()
            .router()
            .session(full)
            .expect("the session stays bound while hibernated");
        if s.is_hibernated() {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "never hibernated");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Resumes `previd` as `user` with `h`; returns the connection and the `<resumed/>`.
async fn resume(server: &TestServer, user: &str, previd: &str, h: u32) -> (Conn, Element) {
    let (mut c, _) = authenticated(server, user).await;
    c.send(&format!(
        "<resume xmlns='urn:xmpp:sm:3' previd='{previd}' h='{h}'/>"
    ))
    .await;
    let answer = c.recv().await;
    (c, answer)
}

#[tokio::test]
async fn enable_after_bind_and_acks_are_counted() {
    let server = server().await;
    let (mut c, features) = authenticated(&server, "alice").await;
    assert!(features.get_child("sm", SM).is_some(), "{}", xml(&features));
    // Not before binding (XEP-0198 §3).
    c.send("<enable xmlns='urn:xmpp:sm:3'/>").await;
    let failed = c.recv().await;
    assert!(failed.is("failed", SM), "{}", xml(&failed));
    assert!(failed
        .get_child("unexpected-request", "urn:ietf:params:xml:ns:xmpp-stanzas")
        .is_some());
    c.bind(Some("phone")).await;
    c.send("<enable xmlns='urn:xmpp:sm:3'/>").await;
    let enabled = c.recv().await;
    assert!(enabled.is("enabled", SM), "{}", xml(&enabled));
    assert_eq!(enabled.attr("id"), None, "no resumption was asked for");
    // Twice is an error.
    c.send("<enable xmlns='urn:xmpp:sm:3'/>").await;
    let failed = c.recv().await;
    assert!(failed.is("failed", SM), "{}", xml(&failed));

    // Three stanzas from the client: h is 3.
    for i in 0..3 {
        let other = sync(&mut c, &format!("p{i}")).await;
        assert!(other.is_empty(), "{other:?}");
    }
    c.send("<r xmlns='urn:xmpp:sm:3'/>").await;
    let a = recv_skip_r(&mut c).await;
    assert!(a.is("a", SM), "{}", xml(&a));
    assert_eq!(a.attr("h"), Some("3"));
    // Three results were sent: acking them is fine, acking a fourth is a stream error.
    c.send("<a xmlns='urn:xmpp:sm:3' h='3'/>").await;
    quiet_sm(&mut c).await;
    // quiet_sm's ping made it four; the fifth does not exist.
    c.send("<a xmlns='urn:xmpp:sm:3' h='5'/>").await;
    let err = c.recv_until(|e| e.name() == "error").await;
    assert!(
        err.get_child("undefined-condition", starling_proto::ns::STREAM_ERRORS)
            .is_some(),
        "{}",
        xml(&err)
    );
    let detail = err
        .get_child("handled-count-too-high", SM)
        .unwrap_or_else(|| panic!("{}", xml(&err)));
    assert_eq!(detail.attr("h"), Some("5"));
    assert_eq!(detail.attr("send-count"), Some("4"));
}

/// A ping round trip that tolerates ack requests.
async fn quiet_sm(c: &mut Conn) {
    let other = sync(c, "quiet-sm").await;
    assert!(other.is_empty(), "expected nothing more, got {other:?}");
}

#[tokio::test]
async fn cut_connection_is_resumed_with_every_message_once() {
    let server = server().await;
    let mut alice = server.login("alice", "pw-alice", "phone").await;
    let previd = enable_resumable(&mut alice).await;
    let alice_full = alice.jid.clone().unwrap();
    // Alice sends two stanzas under stream management.
    sync(&mut alice, "s1").await;
    sync(&mut alice, "s2").await;
    let mut bob = server.login("bob", "pw-bob", "laptop").await;

    // Ten messages reach alice's connection; her client processes five, then the TCP
    // connection is cut (the other five were in flight: read from the wire, not handled).
    for n in 1..=10 {
        bob.send(&chat("alice@localhost/phone", n)).await;
    }
    bob.ping_server().await;
    let mut handled: Vec<String> = Vec::new();
    let mut in_flight = Vec::new();
    while handled.len() + in_flight.len() < 10 {
        let el = recv_skip_r(&mut alice).await;
        let b = body(&el).unwrap_or_else(|| panic!("{}", xml(&el)));
        if handled.len() < 5 {
            handled.push(b);
        } else {
            in_flight.push(b);
        }
    }
    // alice sent 2 stanzas and received 2 results plus 5 handled messages.
    let alice_h = 2 + 5;
    drop(alice);
    wait_hibernated(&server, &alice_full).await;

    // While she is away, five more arrive and queue up.
    for n in 11..=15 {
        bob.send(&chat("alice@localhost/phone", n)).await;
    }
    bob.ping_server().await;

    let (mut alice, resumed) = resume(&server, "alice", &previd, alice_h).await;
    assert!(resumed.is("resumed", SM), "{}", xml(&resumed));
    assert_eq!(resumed.attr("previd"), Some(previd.as_str()));
    assert_eq!(
        resumed.attr("h"),
        Some("2"),
        "the server handled alice's 2 stanzas"
    );
    // Every message not handled before the cut arrives, each once, in order: 6..10 again
    // (marked as delayed), then 11..15.
    let mut rest = Vec::new();
    while rest.len() < 10 {
        let el = recv_skip_r(&mut alice).await;
        let b = body(&el).unwrap_or_else(|| panic!("{}", xml(&el)));
        let n: u32 = b.trim_start_matches("message ").parse().unwrap();
        if n <= 10 {
            assert!(el.get_child("delay", DELAY).is_some(), "{}", xml(&el));
        }
        rest.push(b);
    }
    let mut all = handled.clone();
    all.extend(rest);
    let expected: Vec<String> = (1..=15).map(|n| format!("message {n}")).collect();
    assert_eq!(all, expected, "every message exactly once, in order");
    // The session is the same one: still bound, not hibernated, and nothing more arrives.
    let s = server.server().router().session(&alice_full).unwrap();
    assert!(!s.is_hibernated());
    quiet_sm(&mut alice).await;
    // Acking all 15 messages plus 2 + 1 results is exactly right; nothing bounced to bob.
    alice.send("<a xmlns='urn:xmpp:sm:3' h='18'/>").await;
    quiet_sm(&mut alice).await;
    quiet(&mut bob).await;
}

#[tokio::test]
async fn resume_while_old_connection_is_live_replaces_it() {
    let server = server().await;
    let mut old = server.login("alice", "pw-alice", "phone").await;
    let previd = enable_resumable(&mut old).await;
    let mut bob = server.login("bob", "pw-bob", "laptop").await;
    bob.send(&chat("alice@localhost/phone", 1)).await;
    bob.ping_server().await;
    let m1 = recv_skip_r(&mut old).await;
    assert_eq!(body(&m1).as_deref(), Some("message 1"));
    // The client lost track of the old connection, which the server still thinks is fine.
    let (mut new, resumed) = resume(&server, "alice", &previd, 0).await;
    assert!(resumed.is("resumed", SM), "{}", xml(&resumed));
    let again = recv_skip_r(&mut new).await;
    assert_eq!(body(&again).as_deref(), Some("message 1"));
    // The old connection is closed.
    let closed = tokio::time::timeout(STEP_TIMEOUT, async {
        loop {
            match old.next_event().await {
                None | Some(starling_proto::framer::StreamEvent::Close) => break,
                Some(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "old connection still open");
    bob.send(&chat("alice@localhost/phone", 2)).await;
    let m2 = recv_skip_r(&mut new).await;
    assert_eq!(body(&m2).as_deref(), Some("message 2"));
}

#[tokio::test]
async fn unknown_or_foreign_previd_fails() {
    let server = server().await;
    let mut alice = server.login("alice", "pw-alice", "phone").await;
    let previd = enable_resumable(&mut alice).await;
    let alice_full = alice.jid.clone().unwrap();
    drop(alice);
    wait_hibernated(&server, &alice_full).await;

    // An id that was never issued.
    let (mut c, failed) = resume(&server, "alice", "not-an-id", 0).await;
    assert!(failed.is("failed", SM), "{}", xml(&failed));
    assert!(failed
        .get_child("item-not-found", "urn:ietf:params:xml:ns:xmpp-stanzas")
        .is_some());
    // The stream lives on: the client may bind instead.
    c.bind(Some("tablet")).await;
    c.ping_server().await;

    // Bob knows alice's id but is not alice.
    let (mut b, failed) = resume(&server, "bob", &previd, 0).await;
    assert!(failed.is("failed", SM), "{}", xml(&failed));
    assert!(failed
        .get_child("item-not-found", "urn:ietf:params:xml:ns:xmpp-stanzas")
        .is_some());
    b.bind(Some("laptop")).await;
    // Alice's session is untouched and alice herself may still resume it.
    assert!(server
        .server()
        .router()
        .session(&alice_full)
        .unwrap()
        .is_hibernated());
    let (_alice, resumed) = resume(&server, "alice", &previd, 0).await;
    assert!(resumed.is("resumed", SM), "{}", xml(&resumed));
}

#[tokio::test]
async fn hibernation_hides_the_cut_and_timeout_sends_unacked_offline() {
    let server = TestServer::start_with(|c| c.c2s.resume_timeout_secs = 2).await;
    for u in ["alice", "bob"] {
        server.add_user(u, &format!("pw-{u}")).await;
    }
    let mut alice = online(&server, "alice", "phone").await;
    let mut bob = online(&server, "bob", "laptop").await;
    befriend(&mut alice, &mut bob).await;
    let previd = enable_resumable(&mut alice).await;
    assert!(!previd.is_empty());
    let alice_full = alice.jid.clone().unwrap();

    // Three chats reach alice's socket; she never acknowledges them, and her connection dies.
    for n in 1..=3 {
        bob.send(&chat("alice@localhost", n)).await;
    }
    quiet(&mut bob).await;
    for _ in 0..3 {
        let el = recv_skip_r(&mut alice).await;
        assert!(body(&el).is_some(), "{}", xml(&el));
    }
    drop(alice);
    wait_hibernated(&server, &alice_full).await;
    // Two more while she is hibernated; bob sees no unavailable presence and no error.
    for n in 4..=5 {
        bob.send(&chat("alice@localhost", n)).await;
    }
    // And an IQ request to her (hibernated) resource, which waits in her queue.
    bob.send(
        "<iq type='get' id='v1' to='alice@localhost/phone'><query xmlns='jabber:iq:version'/></iq>",
    )
    .await;
    bob.expect_none(Duration::from_millis(700), |e| {
        e.name() == "presence" || e.attr("type") == Some("error")
    })
    .await;
    // The timeout ends the session: now bob sees alice go offline.
    server.wait_unbound(&alice_full).await;
    expect_presence(
        &mut bob,
        "alice@localhost/phone",
        "bob@localhost",
        Some("unavailable"),
    )
    .await;
    // The request was never answered: bob gets an error instead.
    expect_error(&mut bob, "v1", "service-unavailable").await;
    quiet(&mut bob).await;
    wait_offline(&server, "alice", 5).await;

    // At her next login alice gets the five messages from offline storage, each once.
    let mut alice = server.login("alice", "pw-alice", "phone2").await;
    alice.send("<presence/>").await;
    let mut got: BTreeMap<String, usize> = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while tokio::time::Instant::now() < deadline {
        let Ok(el) = tokio::time::timeout(Duration::from_millis(500), alice.recv()).await else {
            break;
        };
        if el.name() == "message" {
            assert!(el.get_child("delay", DELAY).is_some(), "{}", xml(&el));
            *got.entry(body(&el).unwrap()).or_default() += 1;
        }
    }
    let expected: BTreeMap<String, usize> = (1..=5).map(|n| (format!("message {n}"), 1)).collect();
    assert_eq!(got, expected);
}

#[tokio::test]
async fn clean_close_reroutes_unacknowledged_messages() {
    let server = server().await;
    let mut alice = server.login("alice", "pw-alice", "phone").await;
    enable_resumable(&mut alice).await;
    let mut bob = server.login("bob", "pw-bob", "laptop").await;
    bob.send(&chat("alice@localhost/phone", 1)).await;
    bob.ping_server().await;
    let m = recv_skip_r(&mut alice).await;
    assert_eq!(body(&m).as_deref(), Some("message 1"));
    bob.expect_none(Duration::from_millis(100), |_| true).await;
    // alice closes without acknowledging: the message was not confirmed, so it goes
    // offline (XEP-0198 §4, as if sent to an unavailable resource).
    alice.close().await;
    wait_offline(&server, "alice", 1).await;
    let mut alice = server.login("alice", "pw-alice", "phone").await;
    alice.send("<presence/>").await;
    let again = alice.recv_until(|e| e.name() == "message").await;
    assert_eq!(body(&again).as_deref(), Some("message 1"));
    sync(&mut alice, "drain").await;
    // An acknowledged message is not sent twice.
    enable_resumable(&mut alice).await;
    bob.send(&chat("alice@localhost/phone", 2)).await;
    bob.ping_server().await;
    let m2 = recv_skip_r(&mut alice).await;
    assert_eq!(body(&m2).as_deref(), Some("message 2"));
    alice.send("<a xmlns='urn:xmpp:sm:3' h='1'/>").await;
    alice.close().await;
    let mut alice = server.login("alice", "pw-alice", "phone").await;
    alice.send("<presence/>").await;
    alice
        .expect_none(Duration::from_millis(500), |e| e.name() == "message")
        .await;
}

#[tokio::test]
async fn too_many_unacked_closes_and_nothing_is_lost() {
    let server = TestServer::start_with(|c| c.c2s.max_unacked = 8).await;
    for u in ["alice", "bob"] {
        server.add_user(u, &format!("pw-{u}")).await;
    }
    let mut alice = server.login("alice", "pw-alice", "phone").await;
    enable_resumable(&mut alice).await;
    alice.available().await;
    let mut bob = server.login("bob", "pw-bob", "laptop").await;
    for n in 1..=20 {
        bob.send(&chat("alice@localhost", n)).await;
    }
    bob.ping_server().await;
    // alice never acks: her session is closed as a slow consumer.
    let err = alice
        .recv_until(|e| e.is("error", starling_proto::ns::STREAM))
        .await;
    assert!(
        err.get_child("policy-violation", starling_proto::ns::STREAM_ERRORS)
            .is_some(),
        "{}",
        xml(&err)
    );
    let full = Jid::parse("alice@localhost/phone").unwrap();
    server.wait_unbound(&full).await;
    // Every message went offline or (if it raced the close) bounced to bob: none vanished.
    let bounced = sync(&mut bob, "b").await;
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for el in &bounced {
        assert_eq!(el.attr("type"), Some("error"), "{}", xml(el));
        *seen.entry(el.attr("id").unwrap().to_owned()).or_default() += 1;
    }
    wait_offline(&server, "alice", 20 - seen.len()).await;
    let mut alice = server.login("alice", "pw-alice", "phone").await;
    alice.send("<presence/>").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while tokio::time::Instant::now() < deadline {
        let Ok(el) = tokio::time::timeout(Duration::from_millis(500), alice.recv()).await else {
            break;
        };
        if el.name() == "message" {
            *seen.entry(el.attr("id").unwrap().to_owned()).or_default() += 1;
        }
    }
    let expected: BTreeMap<String, usize> = (1..=20).map(|n| (format!("m{n}"), 1)).collect();
    assert_eq!(seen, expected);
}

#[tokio::test]
async fn inactive_client_resumes_and_gets_held_presence_on_active() {
    let server = server().await;
    let mut alice = online(&server, "alice", "phone").await;
    let mut bob = online(&server, "bob", "laptop").await;
    befriend(&mut alice, &mut bob).await;
    let previd = enable_resumable(&mut alice).await;
    let alice_full = alice.jid.clone().unwrap();
    // The phone goes into a pocket (XEP-0352), then into a tunnel.
    alice.send("<inactive xmlns='urn:xmpp:csi:0'/>").await;
    quiet_sm(&mut alice).await; // one result received
    let bob_full = "bob@localhost/laptop";
    bob.send("<presence><show>away</show><status>lunch</status></presence>")
        .await;
    expect_presence(&mut bob, bob_full, bob_full, None).await;
    bob.send(&chat("alice@localhost/phone", 1)).await;
    quiet(&mut bob).await;
    // The message goes through at once; the presence is held.
    let m1 = recv_skip_r(&mut alice).await;
    assert_eq!(body(&m1).as_deref(), Some("message 1"), "{}", xml(&m1));
    drop(alice);
    wait_hibernated(&server, &alice_full).await;
    bob.send("<presence><show>away</show><status>back soon</status></presence>")
        .await;
    expect_presence(&mut bob, bob_full, bob_full, None).await;
    quiet(&mut bob).await;

    let (mut alice, resumed) = resume(&server, "alice", &previd, 2).await;
    assert!(resumed.is("resumed", SM), "{}", xml(&resumed));
    // Still inactive after the resume: nothing arrives until alice is active again, then
    // bob's latest presence does.
    quiet_sm(&mut alice).await;
    alice.send("<active xmlns='urn:xmpp:csi:0'/>").await;
    let p = recv_skip_r(&mut alice).await;
    assert_eq!(p.name(), "presence", "{}", xml(&p));
    assert_eq!(p.attr("from"), Some("bob@localhost/laptop"));
    assert_eq!(
        p.get_child("status", CLIENT).map(|s| s.text()).as_deref(),
        Some("back soon")
    );
    quiet_sm(&mut alice).await;
}
