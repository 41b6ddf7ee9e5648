//! Catalogue, resource exhaustion (docs/bad-input.md): storage quotas. The message archive
//! (XEP-0313) of one user holds at most `[mam] max_messages_per_user` messages, and that of
//! one room (MAM on the room's JID) at most `[muc] max_messages_per_room`; past it the
//! oldest are deleted, so a chatty contact, user or room cannot fill the disk through one
//! archive, while the newest messages stay retrievable, in order, and delivery is unaffected.

mod hard_support;
mod muc_support;

use hard_support::Witnesses;
use starling_tests::*;

const MAM: &str = "urn:xmpp:mam:2";

/// The ids (`id` attributes of the archived messages) in `c`'s archive, oldest first.
async fn archive(c: &mut Conn) -> Vec<String> {
    c.send(&format!(
        "<iq type='set' id='q'><query xmlns='{MAM}' queryid='all'>\
         <set xmlns='http://jabber.org/protocol/rsm'><max>100</max></set></query></iq>"
    ))
    .await;
    let mut ids = Vec::new();
    loop {
        let el = c.recv().await;
        if el.name() == "iq" && el.attr("id") == Some("q") {
            assert_eq!(el.attr("type"), Some("result"), "{el:?}");
            let fin = el.get_child("fin", MAM).expect("fin");
            assert_eq!(fin.attr("complete"), Some("true"), "one page holds it all");
            return ids;
        }
        if let Some(m) = el
            .get_child("result", MAM)
            .and_then(|r| r.get_child("forwarded", "urn:xmpp:forward:0"))
            .and_then(|f| f.get_child("message", "jabber:client"))
        {
            ids.push(m.attr("id").unwrap_or_default().to_owned());
        }
    }
}

/// Alice sends Bob 30 messages under a cap of 20: every message is delivered, and each of
/// the two archives ends with the newest 19 or 20 in order (pruning goes to 99% of the cap,
/// at least one below it), never more than 20. A third user's archive is not touched.
#[tokio::test]
async fn the_archive_quota_keeps_the_newest_messages() {
    let server = TestServer::start_with(|c| c.mam.max_messages_per_user = 20).await;
    let mut w = Witnesses::login(&server).await;
    server.add_user("alice", "pw").await;
    server.add_user("bob", "pw").await;
    server.add_user("carol", "pw").await;
    let mut alice = server.login("alice", "pw", "r").await;
    let mut bob = server.login("bob", "pw", "r").await;
    let mut carol = server.login("carol", "pw", "r").await;
    carol
        .send("<message to='bob@localhost/r' type='chat' id='c0'><body>hi</body></message>")
        .await;
    bob.recv_until(|e| e.name() == "message" && e.attr("id") == Some("c0"))
        .await;
    for i in 0..30 {
        alice
            .send(&format!(
                "<message to='bob@localhost/r' type='chat' id='m{i}'><body>{i}</body></message>"
            ))
            .await;
        let m = bob.recv_until(|e| e.name() == "message").await;
        assert_eq!(
            m.attr("id"),
            Some(&*format!("m{i}")),
            "every message is delivered"
        );
    }
    w.chat("during").await;
    let newest: Vec<String> = (0..30).map(|i| format!("m{i}")).collect();
    for (who, c) in [("alice", &mut alice), ("bob", &mut bob)] {
        let ids = archive(c).await;
        assert!(
            (19..=20).contains(&ids.len()),
            "{who}'s archive holds {} messages: {ids:?}",
            ids.len()
        );
        assert_eq!(
            ids[..],
            newest[30 - ids.len()..],
            "{who}: the newest, in order"
        );
    }
    // Carol's archive holds her one message; Bob's held it too but it was the oldest.
    assert_eq!(archive(&mut carol).await, vec!["c0".to_owned()]);
    w.chat("after").await;
    server.assert_still_serves().await;
}

/// The bodies in `room`'s archive (MAM on the room's JID), oldest first, as `c` reads them
/// in one page.
async fn room_archive(c: &mut Conn, room: &str) -> Vec<String> {
    let (answer, others) = muc_support::iq_collect(
        c,
        room,
        "set",
        "rq",
        &format!(
            "<query xmlns='{MAM}' queryid='room'>\
             <set xmlns='http://jabber.org/protocol/rsm'><max>100</max></set></query>"
        ),
    )
    .await;
    muc_support::ok(&answer);
    let fin = answer.get_child("fin", MAM).expect("fin");
    assert_eq!(fin.attr("complete"), Some("true"), "one page holds it all");
    others
        .iter()
        .filter_map(|m| {
            m.get_child("result", MAM)
                .and_then(|r| r.get_child("forwarded", "urn:xmpp:forward:0"))
                .and_then(|f| f.get_child("message", "jabber:client"))
                .map(muc_support::body)
        })
        .collect()
}

/// Alice says 30 things in an archived room under `max_messages_per_room` 20: every message
/// reaches every occupant, and the room's archive ends with the newest 19 or 20 in order
/// (the oldest deleted, logged), never more than 20. Another room's archive and the users'
/// own archives are not touched.
#[tokio::test]
async fn the_room_archive_quota_keeps_the_newest_messages() {
    let server = TestServer::start_with(|c| c.muc.max_messages_per_room = 20).await;
    let mut w = Witnesses::login(&server).await;
    let mut alice = muc_support::user(&server, "alice").await;
    let mut bob = muc_support::user(&server, "bob").await;
    let (busy, quiet) = (muc_support::room("busy"), muc_support::room("quiet"));
    muc_support::create(&mut alice, &busy, "Alice").await;
    muc_support::join_ok(&mut bob, &busy, "Bob").await;
    muc_support::create(&mut bob, &quiet, "Bob").await;
    muc_support::say(&mut bob, &quiet, "hello").await;
    muc_support::groupchat_with(&mut bob, "hello").await;
    for i in 0..30 {
        let text = format!("line {i}");
        muc_support::say(&mut alice, &busy, &text).await;
        muc_support::groupchat_with(&mut alice, &text).await;
        let m = muc_support::groupchat(&mut bob).await;
        assert_eq!(
            muc_support::body(&m),
            text,
            "every message reaches Bob, in order"
        );
    }
    w.chat("during").await;
    let bodies = room_archive(&mut bob, &busy).await;
    assert!(
        (19..=20).contains(&bodies.len()),
        "the room archive holds {} messages: {bodies:?}",
        bodies.len()
    );
    let newest: Vec<String> = (0..30).map(|i| format!("line {i}")).collect();
    assert_eq!(
        bodies[..],
        newest[30 - bodies.len()..],
        "the newest, in order"
    );
    assert_eq!(
        room_archive(&mut bob, &quiet).await,
        vec!["hello".to_owned()]
    );
    // Groupchat is not archived in the users' own archives (the room keeps its own).
    assert!(archive(&mut bob).await.is_empty());
    w.chat("after").await;
    server.assert_still_serves().await;
}
