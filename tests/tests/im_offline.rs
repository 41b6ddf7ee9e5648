//! Transcripts for offline messages (XEP-0160) stamped with XEP-0203 delays: alice writes to
//! bob while bob has no available resource; bob gets the messages, in order, when he next
//! sends non-negative available presence — also after a server crash and restart.

use std::time::Duration;

use minidom::Element;
use starling_storage::ArchiveItem;
use starling_tests::*;

const DELAY: &str = "urn:xmpp:delay";
/// The offline module's default per-user quota.
const QUOTA: u64 = 1000;

fn body(el: &Element) -> String {
    el.get_child("body", "jabber:client")
        .map(|b| b.text())
        .unwrap_or_default()
}

fn is_message(el: &Element) -> bool {
    el.name() == "message"
}

/// `YYYY-MM-DDThh:mm:ss.sssZ` (XEP-0082 DateTime in UTC with milliseconds).
fn assert_utc_stamp(stamp: &str) {
    let b = stamp.as_bytes();
    assert_eq!(b.len(), 24, "stamp {stamp}");
    for (i, c) in b.iter().enumerate() {
        match i {
            4 | 7 => assert_eq!(*c, b'-', "stamp {stamp}"),
            10 => assert_eq!(*c, b'T', "stamp {stamp}"),
            13 | 16 => assert_eq!(*c, b':', "stamp {stamp}"),
            19 => assert_eq!(*c, b'.', "stamp {stamp}"),
            23 => assert_eq!(*c, b'Z', "stamp {stamp}"),
            _ => assert!(c.is_ascii_digit(), "stamp {stamp}"),
        }
    }
}

/// Waits `d`, then asserts that no *message* arrived before a ping round trip (presence and
/// roster traffic may come and go meanwhile).
async fn no_message_within(c: &mut Conn, d: Duration) {
    tokio::time::sleep(d).await;
    c.send("<iq type='get' id='quiet' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    loop {
        let el = c.recv().await;
        if el.name() == "iq" && el.attr("id") == Some("quiet") {
            return;
        }
        assert!(el.name() != "message", "unexpected message {el:?}");
    }
}

async fn stored(server: &TestServer, user: &str) -> u64 {
    server
        .server()
        .storage()
        .archive_count("localhost", user, "offline")
        .await
        .unwrap()
}

/// Waits until bob's queue holds `n` messages (stores happen in the sender's task).
async fn wait_stored(server: &TestServer, user: &str, n: u64) {
    for _ in 0..500 {
        if stored(server, user).await == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "expected {n} stored messages, have {}",
        stored(server, user).await
    );
}

#[tokio::test]
async fn messages_to_an_offline_user_arrive_in_order_with_a_delay_stamp() {
    let server = TestServer::start().await;
    server.add_user("alice", "pw-a").await;
    server.add_user("bob", "pw-b").await;
    let mut alice = server.login("alice", "pw-a", "phone").await;
    alice.available().await;
    // alice writes to bob's bare JID (chat and normal), and to a resource that is gone.
    alice
        .send("<message to='bob@localhost' type='chat' id='o1'><body>one</body></message>")
        .await;
    alice
        .send("<message to='bob@localhost' id='o2'><body>two</body></message>")
        .await;
    alice
        .send("<message to='bob@localhost/gone' type='chat' id='o3'><body>three</body></message>")
        .await;
    // Nothing bounces: the messages were stored.
    alice.ping_server().await;
    wait_stored(&server, "bob", 3).await;
    no_message_within(&mut alice, Duration::from_millis(200)).await;

    // bob binds a resource: nothing yet, he has not sent presence.
    let mut bob = server.login("bob", "pw-b", "laptop").await;
    bob.ping_server().await;
    no_message_within(&mut bob, Duration::from_millis(200)).await;
    assert_eq!(stored(&server, "bob").await, 3);

    // Initial presence: the three messages, oldest first, each with a delay stamp.
    bob.send("<presence/>").await;
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(bob.recv_until(is_message).await);
    }
    let bodies: Vec<_> = got.iter().map(body).collect();
    assert_eq!(bodies, ["one", "two", "three"]);
    let ids: Vec<_> = got
        .iter()
        .map(|m| m.attr("id").unwrap().to_owned())
        .collect();
    assert_eq!(ids, ["o1", "o2", "o3"]);
    for m in &got {
        assert_eq!(m.attr("from"), Some("alice@localhost/phone"));
        let delay = m.get_child("delay", DELAY).expect("delay element");
        assert_eq!(delay.attr("from"), Some("localhost"));
        assert_utc_stamp(delay.attr("stamp").unwrap());
    }
    assert_eq!(got[0].attr("type"), Some("chat"));
    // Delivered messages are gone from the queue; a second resource gets nothing.
    wait_stored(&server, "bob", 0).await;
    let mut bob2 = server.login("bob", "pw-b", "tablet").await;
    bob2.available().await;
    no_message_within(&mut bob2, Duration::from_millis(200)).await;
    // Online now: live messages carry no delay.
    alice
        .send("<message to='bob@localhost/laptop' type='chat'><body>live</body></message>")
        .await;
    let live = bob.recv_until(is_message).await;
    assert_eq!(body(&live), "live");
    assert!(live.get_child("delay", DELAY).is_none());
}

#[tokio::test]
async fn negative_priority_does_not_receive_offline_messages_until_raised() {
    let server = TestServer::start().await;
    server.add_user("alice", "pw-a").await;
    server.add_user("bob", "pw-b").await;
    let mut alice = server.login("alice", "pw-a", "phone").await;
    alice.available().await;
    let mut bob = server.login("bob", "pw-b", "bot").await;
    bob.send("<presence><priority>-1</priority></presence>")
        .await;
    bob.ping_server().await;
    // bob's only resource has a negative priority: the message is stored (RFC 6121 §8.5.2.2,
    // XEP-0160 §2 step 2), not delivered.
    alice
        .send("<message to='bob@localhost' type='chat'><body>later</body></message>")
        .await;
    wait_stored(&server, "bob", 1).await;
    no_message_within(&mut bob, Duration::from_millis(300)).await;
    // Another negative presence changes nothing.
    bob.send("<presence><priority>-5</priority></presence>")
        .await;
    bob.ping_server().await;
    no_message_within(&mut bob, Duration::from_millis(200)).await;
    // Raising the priority to zero is "next non-negative available presence".
    bob.send("<presence><priority>0</priority></presence>")
        .await;
    let m = bob.recv_until(is_message).await;
    assert_eq!(body(&m), "later");
    assert!(m.get_child("delay", DELAY).is_some());
    wait_stored(&server, "bob", 0).await;
}

#[tokio::test]
async fn headline_groupchat_error_and_chat_states_are_not_stored() {
    let server = TestServer::start().await;
    server.add_user("alice", "pw-a").await;
    server.add_user("bob", "pw-b").await;
    let mut alice = server.login("alice", "pw-a", "phone").await;
    alice.available().await;
    alice
        .send("<message to='bob@localhost' type='headline'><body>news</body></message>")
        .await;
    alice
        .send("<message to='bob@localhost' type='error' id='e1'><body>err</body></message>")
        .await;
    // A chat state alone is not worth storing, and not worth an error either.
    alice
        .send("<message to='bob@localhost' type='chat'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>")
        .await;
    // The no-store hint (XEP-0334) is honoured.
    alice
        .send("<message to='bob@localhost' type='chat'><body>secret</body><no-store xmlns='urn:xmpp:hints'/></message>")
        .await;
    // groupchat to a user with no available resource bounces (RFC 6121 §8.5.2.1.2).
    alice
        .send("<message to='bob@localhost' type='groupchat' id='g1'><body>room</body></message>")
        .await;
    let err = alice.recv_until(is_message).await;
    assert_eq!(err.attr("id"), Some("g1"));
    assert_eq!(err.attr("type"), Some("error"));
    assert_eq!(
        stanza_error_condition(&err).as_deref(),
        Some("service-unavailable")
    );
    alice
        .send("<message to='bob@localhost' type='chat' id='keep'><body>keep</body></message>")
        .await;
    wait_stored(&server, "bob", 1).await;
    alice.ping_server().await;
    no_message_within(&mut alice, Duration::from_millis(200)).await;
    let mut bob = server.login("bob", "pw-b", "laptop").await;
    bob.send("<presence/>").await;
    let m = bob.recv_until(is_message).await;
    assert_eq!(m.attr("id"), Some("keep"));
    bob.ping_server().await;
    no_message_within(&mut bob, Duration::from_millis(200)).await;
}

#[tokio::test]
async fn a_full_queue_bounces_and_a_large_queue_is_paced_into_a_small_session_queue() {
    // A session queue much smaller than the backlog: replay must wait for the writer rather
    // than trip the slow-consumer rule.
    let server = TestServer::start_with(|c| c.c2s.outbound_queue = 64).await;
    server.add_user("alice", "pw-a").await;
    server.add_user("bob", "pw-b").await;
    let storage = server.server().storage().clone();
    for i in 0..QUOTA - 1 {
        let xml = format!(
            "<message xmlns='jabber:client' from='carol@localhost/x' to='bob@localhost' type='chat'><body>n{i}</body></message>"
        );
        let item = ArchiveItem {
            id: format!("pre-{i:05}"),
            when_ms: 1_000 + i as i64,
            with: "carol@localhost".into(),
            payload: xml.into_bytes(),
        };
        storage
            .archive_append("localhost", "bob", "offline", &item)
            .await
            .unwrap();
    }
    let mut alice = server.login("alice", "pw-a", "phone").await;
    alice.available().await;
    alice
        .send("<message to='bob@localhost' type='chat' id='last'><body>last</body></message>")
        .await;
    wait_stored(&server, "bob", QUOTA).await;
    // Over quota: service-unavailable (XEP-0160 §2 step 3).
    alice
        .send("<message to='bob@localhost' type='chat' id='over'><body>over</body></message>")
        .await;
    let err = alice.recv_until(is_message).await;
    assert_eq!(err.attr("id"), Some("over"));
    assert_eq!(
        stanza_error_condition(&err).as_deref(),
        Some("service-unavailable")
    );
    assert_eq!(stored(&server, "bob").await, QUOTA);

    let mut bob = server.login("bob", "pw-b", "laptop").await;
    bob.send("<presence/>").await;
    for i in 0..QUOTA - 1 {
        let m = bob.recv_until(is_message).await;
        assert_eq!(body(&m), format!("n{i}"));
    }
    let m = bob.recv_until(is_message).await;
    assert_eq!(m.attr("id"), Some("last"));
    wait_stored(&server, "bob", 0).await;
    // Still connected: the session was not closed as a slow consumer.
    bob.ping_server().await;
}

#[tokio::test]
async fn stored_messages_survive_a_crash_and_restart() {
    let first = TestServer::start().await;
    first.add_user("alice", "pw-a").await;
    first.add_user("bob", "pw-b").await;
    let mut alice = first.login("alice", "pw-a", "phone").await;
    alice.available().await;
    alice
        .send("<message to='bob@localhost' type='chat' id='dur'><body>still here?</body></message>")
        .await;
    alice.ping_server().await;
    wait_stored(&first, "bob", 1).await;
    // "kill -9": no graceful shutdown, storage never closed; a new server opens the same data
    // directory while the old one's files are as a crash left them.
    first.server().shutdown_token().cancel();
    let data_dir = first.dir.path().join("data");
    let second = TestServer::start_with(|c| c.server.data_dir = data_dir).await;
    let mut bob = second.login("bob", "pw-b", "laptop").await;
    bob.send("<presence/>").await;
    let m = bob.recv_until(is_message).await;
    assert_eq!(m.attr("id"), Some("dur"));
    assert_eq!(body(&m), "still here?");
    assert_eq!(
        m.get_child("delay", DELAY).unwrap().attr("from"),
        Some("localhost")
    );
    drop(first);
}

#[tokio::test]
async fn server_advertises_msgoffline() {
    let server = TestServer::start().await;
    server.add_user("alice", "pw-a").await;
    let mut alice = server.login("alice", "pw-a", "phone").await;
    alice
        .send("<iq type='get' id='d1' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
        .await;
    let res = alice.recv_until(|e| e.attr("id") == Some("d1")).await;
    let q = res
        .get_child("query", "http://jabber.org/protocol/disco#info")
        .unwrap();
    assert!(q
        .children()
        .any(|f| f.name() == "feature" && f.attr("var") == Some("msgoffline")));
}
