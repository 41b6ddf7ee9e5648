//! Transcripts for vcard-temp (XEP-0054): alice publishes her vCard, reads it back, bob reads
//! it at her bare JID; nobody may write someone else's; oversized vCards are refused.

use minidom::Element;
use starling_tests::*;

const VCARD: &str = "vcard-temp";

async fn iq(c: &mut Conn, id: &str, xml: &str) -> Element {
    c.send(xml).await;
    c.recv_until(|e| e.name() == "iq" && e.attr("id") == Some(id))
        .await
}

#[tokio::test]
async fn publish_read_own_and_others_vcard() {
    let server = TestServer::start().await;
    server.add_user("alice", "pw-a").await;
    server.add_user("bob", "pw-b").await;
    let mut alice = server.login("alice", "pw-a", "phone").await;
    let mut bob = server.login("bob", "pw-b", "desk").await;

    // Nothing published yet: item-not-found (§3.1).
    let res = iq(
        &mut alice,
        "v0",
        "<iq type='get' id='v0'><vCard xmlns='vcard-temp'/></iq>",
    )
    .await;
    assert_eq!(res.attr("type"), Some("error"));
    assert_eq!(
        stanza_error_condition(&res).as_deref(),
        Some("item-not-found")
    );

    // Publish (§3.2).
    let res = iq(
        &mut alice,
        "v1",
        "<iq type='set' id='v1'><vCard xmlns='vcard-temp'><FN>Alice Liddell</FN>\
         <N><FAMILY>Liddell</FAMILY><GIVEN>Alice</GIVEN><MIDDLE/></N>\
         <NICKNAME>alice &amp; co</NICKNAME>\
         <TEL><HOME/><VOICE/><NUMBER>555-1212</NUMBER></TEL></vCard></iq>",
    )
    .await;
    assert_eq!(res.attr("type"), Some("result"));

    // Read own (§3.1) and someone else's at the bare JID (§3.3), answered by the server.
    let res = iq(
        &mut alice,
        "v2",
        "<iq type='get' id='v2'><vCard xmlns='vcard-temp'/></iq>",
    )
    .await;
    let v = res.get_child("vCard", VCARD).expect("vCard");
    assert_eq!(v.get_child("FN", VCARD).unwrap().text(), "Alice Liddell");
    assert_eq!(v.get_child("NICKNAME", VCARD).unwrap().text(), "alice & co");
    let res = iq(
        &mut bob,
        "v3",
        "<iq type='get' id='v3' to='alice@localhost'><vCard xmlns='vcard-temp'/></iq>",
    )
    .await;
    assert_eq!(res.attr("from"), Some("alice@localhost"));
    let v = res.get_child("vCard", VCARD).expect("vCard");
    assert_eq!(
        v.get_child("N", VCARD)
            .unwrap()
            .get_child("GIVEN", VCARD)
            .unwrap()
            .text(),
        "Alice"
    );
    assert_eq!(
        v.get_child("TEL", VCARD)
            .unwrap()
            .get_child("NUMBER", VCARD)
            .unwrap()
            .text(),
        "555-1212"
    );

    // Replacing is whole-vCard (no partial updates).
    iq(
        &mut alice,
        "v4",
        "<iq type='set' id='v4'><vCard xmlns='vcard-temp'><FN>A. L.</FN></vCard></iq>",
    )
    .await;
    let res = iq(
        &mut bob,
        "v5",
        "<iq type='get' id='v5' to='alice@localhost'><vCard xmlns='vcard-temp'/></iq>",
    )
    .await;
    let v = res.get_child("vCard", VCARD).unwrap();
    assert_eq!(v.get_child("FN", VCARD).unwrap().text(), "A. L.");
    assert!(v.get_child("N", VCARD).is_none());

    // bob may not write alice's vCard (§3.2: forbidden).
    let res = iq(
        &mut bob,
        "v6",
        "<iq type='set' id='v6' to='alice@localhost'><vCard xmlns='vcard-temp'><FN>Mallory</FN></vCard></iq>",
    )
    .await;
    assert_eq!(stanza_error_condition(&res).as_deref(), Some("forbidden"));
    // A user with no vCard, and a user that does not exist.
    let res = iq(
        &mut alice,
        "v7",
        "<iq type='get' id='v7' to='bob@localhost'><vCard xmlns='vcard-temp'/></iq>",
    )
    .await;
    assert_eq!(
        stanza_error_condition(&res).as_deref(),
        Some("item-not-found")
    );
    let res = iq(
        &mut alice,
        "v8",
        "<iq type='get' id='v8' to='nobody@localhost'><vCard xmlns='vcard-temp'/></iq>",
    )
    .await;
    assert_eq!(
        stanza_error_condition(&res).as_deref(),
        Some("service-unavailable")
    );

    // An empty vCard deletes it.
    iq(
        &mut alice,
        "v9",
        "<iq type='set' id='v9'><vCard xmlns='vcard-temp'/></iq>",
    )
    .await;
    let res = iq(
        &mut alice,
        "v10",
        "<iq type='get' id='v10'><vCard xmlns='vcard-temp'/></iq>",
    )
    .await;
    assert_eq!(
        stanza_error_condition(&res).as_deref(),
        Some("item-not-found")
    );

    // Disco lists the feature (§4).
    let res = iq(
        &mut alice,
        "d1",
        "<iq type='get' id='d1' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
    )
    .await;
    assert!(res
        .get_child("query", "http://jabber.org/protocol/disco#info")
        .unwrap()
        .children()
        .any(|f| f.attr("var") == Some(VCARD)));
}

#[tokio::test]
async fn oversized_vcards_are_refused() {
    let server = TestServer::start().await;
    server.add_user("alice", "pw-a").await;
    let mut alice = server.login("alice", "pw-a", "phone").await;
    // 100 KiB of photo: over the 64 KiB limit, under the 256 KiB stanza limit.
    let photo = "A".repeat(100 * 1024);
    let res = iq(
        &mut alice,
        "big",
        &format!(
            "<iq type='set' id='big'><vCard xmlns='vcard-temp'><FN>Big</FN><PHOTO><TYPE>image/png</TYPE><BINVAL>{photo}</BINVAL></PHOTO></vCard></iq>"
        ),
    )
    .await;
    assert_eq!(res.attr("type"), Some("error"));
    assert_eq!(
        stanza_error_condition(&res).as_deref(),
        Some("not-acceptable")
    );
    // Nothing was stored; a reasonable photo is fine.
    let res = iq(
        &mut alice,
        "g",
        "<iq type='get' id='g'><vCard xmlns='vcard-temp'/></iq>",
    )
    .await;
    assert_eq!(
        stanza_error_condition(&res).as_deref(),
        Some("item-not-found")
    );
    let photo = "A".repeat(30 * 1024);
    let res = iq(
        &mut alice,
        "ok",
        &format!(
            "<iq type='set' id='ok'><vCard xmlns='vcard-temp'><PHOTO><TYPE>image/png</TYPE><BINVAL>{photo}</BINVAL></PHOTO></vCard></iq>"
        ),
    )
    .await;
    assert_eq!(res.attr("type"), Some("result"));
}
