//! Transcripts for private XML storage (XEP-0049): alice stores bookmarks and reads them back
//! from another resource; bob may not read them; reserved namespaces and oversized fragments
//! are refused.

use minidom::Element;
use starling_tests::*;

const PRIVATE: &str = "jabber:iq:private";
const BOOKMARKS: &str = "storage:bookmarks";

async fn iq(c: &mut Conn, id: &str, xml: &str) -> Element {
    c.send(xml).await;
    c.recv_until(|e| e.name() == "iq" && e.attr("id") == Some(id))
        .await
}

#[tokio::test]
async fn store_and_read_back_private_xml() {
    let server = TestServer::start().await;
    server.add_user("alice", "pw-a").await;
    let mut phone = server.login("alice", "pw-a", "phone").await;
    let mut desk = server.login("alice", "pw-a", "desk").await;

    // Nothing stored: the empty element asked for comes back (§3.2).
    let res = iq(
        &mut phone,
        "p0",
        "<iq type='get' id='p0'><query xmlns='jabber:iq:private'>\
         <storage xmlns='storage:bookmarks'/></query></iq>",
    )
    .await;
    assert_eq!(res.attr("type"), Some("result"));
    let storage = res
        .get_child("query", PRIVATE)
        .and_then(|q| q.get_child("storage", BOOKMARKS))
        .expect("empty storage element");
    assert_eq!(storage.children().count(), 0);

    // Alice stores (§3.1), to her own bare JID this time.
    let res = iq(
        &mut phone,
        "p1",
        "<iq type='set' id='p1' to='alice@localhost'><query xmlns='jabber:iq:private'>\
         <storage xmlns='storage:bookmarks'>\
         <conference name='Council' jid='council@conference.localhost' autojoin='true'/>\
         </storage></query></iq>",
    )
    .await;
    assert_eq!(res.attr("type"), Some("result"));

    // Her other resource reads it back.
    let res = iq(
        &mut desk,
        "p2",
        "<iq type='get' id='p2'><query xmlns='jabber:iq:private'>\
         <storage xmlns='storage:bookmarks'/></query></iq>",
    )
    .await;
    let conference = res
        .get_child("query", PRIVATE)
        .and_then(|q| q.get_child("storage", BOOKMARKS))
        .and_then(|s| s.get_child("conference", BOOKMARKS))
        .expect("stored conference");
    assert_eq!(conference.attr("name"), Some("Council"));

    // An empty element deletes the fragment.
    let res = iq(
        &mut desk,
        "p3",
        "<iq type='set' id='p3'><query xmlns='jabber:iq:private'>\
         <storage xmlns='storage:bookmarks'/></query></iq>",
    )
    .await;
    assert_eq!(res.attr("type"), Some("result"));
    let res = iq(
        &mut phone,
        "p4",
        "<iq type='get' id='p4'><query xmlns='jabber:iq:private'>\
         <storage xmlns='storage:bookmarks'/></query></iq>",
    )
    .await;
    let storage = res
        .get_child("query", PRIVATE)
        .and_then(|q| q.get_child("storage", BOOKMARKS))
        .expect("empty storage element");
    assert_eq!(storage.children().count(), 0);
}

#[tokio::test]
async fn others_reserved_namespaces_and_size_are_refused() {
    let server = TestServer::start().await;
    server.add_user("alice", "pw-a").await;
    server.add_user("bob", "pw-b").await;
    let mut alice = server.login("alice", "pw-a", "phone").await;
    let mut bob = server.login("bob", "pw-b", "desk").await;

    // Bob may neither read nor write alice's storage (§3.3).
    for (id, kind) in [("o1", "get"), ("o2", "set")] {
        let res = iq(
            &mut bob,
            id,
            &format!(
                "<iq type='{kind}' id='{id}' to='alice@localhost'><query xmlns='jabber:iq:private'>\
                 <storage xmlns='storage:bookmarks'/></query></iq>"
            ),
        )
        .await;
        assert_eq!(res.attr("type"), Some("error"));
        assert_eq!(stanza_error_condition(&res).as_deref(), Some("forbidden"));
    }

    // Reserved namespaces: not-acceptable.
    for (id, ns) in [
        ("r1", "jabber:iq:roster"),
        ("r2", "http://jabber.org/protocol/muc"),
    ] {
        let res = iq(
            &mut alice,
            id,
            &format!(
                "<iq type='set' id='{id}'><query xmlns='jabber:iq:private'>\
                 <query xmlns='{ns}'/></query></iq>"
            ),
        )
        .await;
        assert_eq!(
            stanza_error_condition(&res).as_deref(),
            Some("not-acceptable")
        );
    }

    // No fragment at all: bad-request.
    let res = iq(
        &mut alice,
        "b1",
        "<iq type='get' id='b1'><query xmlns='jabber:iq:private'/></iq>",
    )
    .await;
    assert_eq!(stanza_error_condition(&res).as_deref(), Some("bad-request"));

    // Over 64 KiB: not-acceptable, and nothing stored.
    let big = "x".repeat(70 * 1024);
    let res = iq(
        &mut alice,
        "s1",
        &format!(
            "<iq type='set' id='s1'><query xmlns='jabber:iq:private'>\
             <notes xmlns='urn:example:notes'>{big}</notes></query></iq>"
        ),
    )
    .await;
    assert_eq!(
        stanza_error_condition(&res).as_deref(),
        Some("not-acceptable")
    );
    let res = iq(
        &mut alice,
        "s2",
        "<iq type='get' id='s2'><query xmlns='jabber:iq:private'>\
         <notes xmlns='urn:example:notes'/></query></iq>",
    )
    .await;
    let notes = res
        .get_child("query", PRIVATE)
        .and_then(|q| q.get_child("notes", "urn:example:notes"))
        .expect("notes element");
    assert!(notes.text().is_empty());
}
