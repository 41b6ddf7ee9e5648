//! Transcripts for rosters, RFC 6121 §2: get (§2.2), set and pushes to every interested
//! resource (§2.1.6, §2.3, §2.4), delete (§2.5), the error cases of §2.3.3 and §2.5.3,
//! and roster versioning (§2.6, XEP-0237).

mod im_support;

use im_support::*;
use starling_sasl::ScramHash;
use starling_tests::*;

#[tokio::test]
async fn add_update_and_remove_push_to_every_interested_resource() {
    let server = server().await;
    let mut phone = server.login("alice", "pw-alice", "phone").await;
    let mut laptop = server.login("alice", "pw-alice", "laptop").await;
    // A third session never asks for the roster: it is not interested (§2.1.6).
    let mut watch = server.login("alice", "pw-alice", "watch").await;
    assert_eq!(
        roster_get(&mut phone, None)
            .await
            .unwrap()
            .children()
            .count(),
        0
    );
    roster_get(&mut laptop, None).await;

    // §2.3.2: phone adds bob; both interested resources get the push, then phone the result.
    let answer = roster_set(
        &mut phone,
        "<item jid='bob@localhost' name='Bob'><group>Friends</group><group>Work</group></item>",
    )
    .await;
    let (item, ver1) = assert_push(&answer, "bob@localhost", "none", None);
    assert_eq!(item.attr("name"), Some("Bob"));
    let groups: Vec<_> = item.children().map(|g| g.text()).collect();
    assert_eq!(groups, ["Friends", "Work"]);
    assert_eq!(answer.attr("to"), Some("alice@localhost/phone"));
    expect_result(&mut phone, "rs").await;
    quiet(&mut phone).await;
    let pushed = laptop.recv().await;
    let (_, ver_laptop) = assert_push(&pushed, "bob@localhost", "none", None);
    assert_eq!(ver_laptop, ver1);
    assert_eq!(pushed.attr("to"), Some("alice@localhost/laptop"));
    quiet(&mut laptop).await;
    quiet(&mut watch).await;

    // §2.2: the roster now holds the item.
    let q = roster_get(&mut watch, None).await.unwrap();
    assert_eq!(items(&q), [("bob@localhost".into(), "none".into(), None)]);

    // §2.4: an update replaces name and groups; pushed to all three now.
    let answer = roster_set(&mut laptop, "<item jid='bob@localhost' name='Bobby'/>").await;
    assert_push(&answer, "bob@localhost", "none", None);
    expect_result(&mut laptop, "rs").await;
    quiet(&mut laptop).await;
    for c in [&mut phone, &mut watch] {
        let item = expect_push(c, "bob@localhost", "none", None).await;
        assert_eq!(item.attr("name"), Some("Bobby"));
        assert_eq!(item.children().count(), 0, "groups removed");
        quiet(c).await;
    }

    // §2.5.2: removal is pushed with subscription='remove'.
    let answer = roster_set(
        &mut watch,
        "<item jid='bob@localhost' subscription='remove'/>",
    )
    .await;
    assert_push(&answer, "bob@localhost", "remove", None);
    expect_result(&mut watch, "rs").await;
    quiet(&mut watch).await;
    for c in [&mut phone, &mut laptop] {
        expect_push(c, "bob@localhost", "remove", None).await;
        quiet(c).await;
    }
    assert_eq!(
        roster_get(&mut phone, None)
            .await
            .unwrap()
            .children()
            .count(),
        0
    );

    // §2.5.3: removing it again is item-not-found.
    phone
        .send("<iq type='set' id='rm2'><query xmlns='jabber:iq:roster'><item jid='bob@localhost' subscription='remove'/></query></iq>")
        .await;
    expect_error(&mut phone, "rm2", "item-not-found").await;
    quiet(&mut phone).await;
}

#[tokio::test]
async fn roster_set_errors_of_section_2_3_3() {
    let server = server().await;
    let mut c = server.login("alice", "pw-alice", "phone").await;
    roster_get(&mut c, None).await;
    let long_name = format!("<item jid='bob@localhost' name='{}'/>", "n".repeat(1024));
    let long_group = format!(
        "<item jid='bob@localhost'><group>{}</group></item>",
        "g".repeat(1024)
    );
    let cases: &[(&str, &str)] = &[
        // More than one item: bad-request.
        (
            "<item jid='bob@localhost'/><item jid='carol@localhost'/>",
            "bad-request",
        ),
        // No item at all.
        ("", "bad-request"),
        // Duplicate groups: bad-request.
        (
            "<item jid='bob@localhost'><group>A</group><group>A</group></item>",
            "bad-request",
        ),
        // Empty group name: not-acceptable.
        (
            "<item jid='bob@localhost'><group></group></item>",
            "not-acceptable",
        ),
        // Oversized name and group: not-acceptable.
        (&long_name, "not-acceptable"),
        (&long_group, "not-acceptable"),
        // Oneself: not-allowed.
        ("<item jid='alice@localhost'/>", "not-allowed"),
        // No jid, or a malformed one.
        ("<item name='x'/>", "bad-request"),
        ("<item jid='@localhost'/>", "jid-malformed"),
        // Removing an item that is not there.
        (
            "<item jid='nobody@localhost' subscription='remove'/>",
            "item-not-found",
        ),
    ];
    for (i, (item, condition)) in cases.iter().enumerate() {
        let id = format!("e{i}");
        c.send(&format!(
            "<iq type='set' id='{id}'><query xmlns='jabber:iq:roster'>{item}</query></iq>"
        ))
        .await;
        expect_error(&mut c, &id, condition).await;
    }
    // Nothing was pushed and nothing stored.
    quiet(&mut c).await;
    assert_eq!(
        roster_get(&mut c, None).await.unwrap().children().count(),
        0
    );

    // §2.1.2.5: a 'subscription' other than remove (and 'ask', 'approved') is ignored.
    c.send("<iq type='set' id='s'><query xmlns='jabber:iq:roster'><item jid='bob@localhost' subscription='both' ask='subscribe' approved='true'/></query></iq>").await;
    let item = expect_push(&mut c, "bob@localhost", "none", None).await;
    assert_eq!(item.attr("approved"), None);
    expect_result(&mut c, "s").await;

    // §2.3.3 / §2.1.5: another account's roster is not ours to touch.
    c.send("<iq type='set' id='f' to='bob@localhost'><query xmlns='jabber:iq:roster'><item jid='carol@localhost'/></query></iq>").await;
    expect_error(&mut c, "f", "forbidden").await;
    c.send("<iq type='get' id='g' to='bob@localhost'><query xmlns='jabber:iq:roster'/></iq>")
        .await;
    expect_error(&mut c, "g", "forbidden").await;
    quiet(&mut c).await;
}

#[tokio::test]
async fn roster_versioning_section_2_6() {
    let server = server().await;
    // §2.6.1: the stream feature is advertised after authentication, beside pre-approval.
    let mut c = Conn::connect(server.c2s).await;
    c.open("localhost").await;
    c.starttls().await;
    let features = c
        .scram(ScramHash::Sha256, false, "alice", "pw-alice")
        .await
        .unwrap();
    assert!(
        features
            .get_child("ver", "urn:xmpp:features:rosterver")
            .is_some(),
        "{}",
        xml(&features)
    );
    assert!(features
        .get_child("sub", "urn:xmpp:features:pre-approval")
        .is_some());
    c.bind(Some("phone")).await;

    // A client with no cache (ver='') gets the whole roster with its version.
    let q = roster_get(&mut c, Some("")).await.unwrap();
    let v0 = q.attr("ver").expect("ver in the result").to_owned();
    assert_eq!(q.children().count(), 0);
    // A client that does not use versioning gets no 'ver'.
    let q = roster_get(&mut c, None).await.unwrap();
    assert_eq!(q.attr("ver"), None);

    // A change moves the version; the push carries it.
    let answer = roster_set(&mut c, "<item jid='bob@localhost'/>").await;
    let (_, v1) = assert_push(&answer, "bob@localhost", "none", None);
    assert_ne!(v1, v0);
    expect_result(&mut c, "rs").await;

    // §2.6.3: the current version gets an empty result...
    assert!(roster_get(&mut c, Some(&v1)).await.is_none());
    // ...an old (or unknown) one the full roster with the current version.
    for old in [v0.as_str(), "bogus"] {
        let q = roster_get(&mut c, Some(old)).await.unwrap();
        assert_eq!(q.attr("ver"), Some(v1.as_str()));
        assert_eq!(items(&q), [("bob@localhost".into(), "none".into(), None)]);
    }

    // The version survives a new session, and pushes keep following it.
    let mut other = server.login("alice", "pw-alice", "laptop").await;
    assert!(roster_get(&mut other, Some(&v1)).await.is_none());
    let answer = roster_set(&mut c, "<item jid='carol@localhost'/>").await;
    let (_, v2) = assert_push(&answer, "carol@localhost", "none", None);
    expect_result(&mut c, "rs").await;
    let pushed = other.recv().await;
    assert_eq!(assert_push(&pushed, "carol@localhost", "none", None).1, v2);
    assert!(roster_get(&mut other, Some(&v2)).await.is_none());
    quiet(&mut other).await;
}
