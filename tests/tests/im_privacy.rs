//! Transcripts for privacy lists (XEP-0016, RFC 3921 §10): managing lists, the active and
//! default lists with their `conflict` rules, pushes, and enforcement by JID, group,
//! subscription and stanza kind.

use std::time::Duration;

use minidom::Element;
use starling_tests::*;

const PRIVACY: &str = "jabber:iq:privacy";
const BLOCKING: &str = "urn:xmpp:blocking";

/// Sends an IQ and returns the answer with the same id (other stanzas are skipped).
async fn iq(c: &mut Conn, id: &str, xml: &str) -> Element {
    c.send(xml).await;
    c.recv_until(|e| e.name() == "iq" && e.attr("id") == Some(id) && e.attr("type") != Some("set"))
        .await
}

/// A privacy IQ: `<iq type='{kind}' id='{id}'><query xmlns='jabber:iq:privacy'>{inner}</query></iq>`.
async fn privacy(c: &mut Conn, kind: &str, id: &str, inner: &str) -> Element {
    iq(
        c,
        id,
        &format!(
            "<iq type='{kind}' id='{id}'><query xmlns='jabber:iq:privacy'>{inner}</query></iq>"
        ),
    )
    .await
}

fn condition(el: &Element) -> Option<String> {
    stanza_error_condition(el)
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

fn names(res: &Element) -> (Option<String>, Option<String>, Vec<String>) {
    let q = res.get_child("query", PRIVACY).expect("query");
    let attr = |n: &str| {
        q.get_child(n, PRIVACY)
            .and_then(|e| e.attr("name"))
            .map(str::to_owned)
    };
    let lists = q
        .children()
        .filter(|c| c.name() == "list")
        .map(|c| c.attr("name").unwrap().to_owned())
        .collect();
    (attr("active"), attr("default"), lists)
}

fn is_push_for(e: &Element, list: &str) -> bool {
    e.name() == "iq"
        && e.attr("type") == Some("set")
        && e.get_child("query", PRIVACY)
            .and_then(|q| q.get_child("list", PRIVACY))
            .and_then(|l| l.attr("name"))
            == Some(list)
}

#[tokio::test]
async fn lists_are_managed_with_pushes_and_the_specified_errors() {
    let server = TestServer::start().await;
    server.add_user("romeo", "pw-r").await;
    let mut orchard = server.login("romeo", "pw-r", "orchard").await;
    let mut home = server.login("romeo", "pw-r", "home").await;
    orchard.available().await;
    home.available().await;

    let res = privacy(&mut orchard, "get", "g1", "").await;
    assert_eq!(names(&res), (None, None, vec![]));

    // §2.6: a new list; every connected resource gets a push naming it.
    orchard
        .send(
            "<iq type='set' id='s1'><query xmlns='jabber:iq:privacy'><list name='public'>\
               <item type='jid' value='tybalt@example.com' action='deny' order='3'/>\
               <item action='allow' order='68'/>\
             </list></query></iq>",
        )
        .await;
    for c in [&mut orchard, &mut home] {
        let got = drain(c, Duration::from_millis(50)).await;
        let push = got
            .iter()
            .find(|e| is_push_for(e, "public"))
            .expect("privacy push");
        assert!(push.attr("to").unwrap().starts_with("romeo@localhost/"));
        if c.jid.as_ref().unwrap().resource() == Some("orchard") {
            assert!(got
                .iter()
                .any(|e| e.attr("id") == Some("s1") && e.attr("type") == Some("result")));
        }
    }

    // §2.3: one list, as stored.
    let res = privacy(&mut home, "get", "g2", "<list name='public'/>").await;
    let list = res
        .get_child("query", PRIVACY)
        .unwrap()
        .get_child("list", PRIVACY)
        .unwrap();
    let items: Vec<_> = list
        .children()
        .map(|i| {
            (
                i.attr("type").map(str::to_owned),
                i.attr("value").map(str::to_owned),
                i.attr("action").unwrap().to_owned(),
                i.attr("order").unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        items,
        [
            (
                Some("jid".into()),
                Some("tybalt@example.com".into()),
                "deny".into(),
                "3".into()
            ),
            (None, None, "allow".into(), "68".into()),
        ]
    );

    // The error cases of §2.3–§2.8.
    let res = privacy(&mut home, "get", "e1", "<list name='The Empty Set'/>").await;
    assert_eq!(condition(&res).as_deref(), Some("item-not-found"));
    let res = privacy(
        &mut home,
        "get",
        "e2",
        "<list name='public'/><list name='private'/>",
    )
    .await;
    assert_eq!(condition(&res).as_deref(), Some("bad-request"));
    let res = privacy(
        &mut home,
        "set",
        "e3",
        "<active name='public'/><default name='public'/>",
    )
    .await;
    assert_eq!(condition(&res).as_deref(), Some("bad-request"));
    let res = privacy(
        &mut home,
        "set",
        "e4",
        "<list name='dup'><item action='deny' order='1'/><item action='allow' order='1'/></list>",
    )
    .await;
    assert_eq!(condition(&res).as_deref(), Some("bad-request"));
    let res = privacy(
        &mut home,
        "set",
        "e5",
        "<list name='g'><item type='group' value='Nobody' action='deny' order='1'/></list>",
    )
    .await;
    assert_eq!(condition(&res).as_deref(), Some("item-not-found"));
    let res = privacy(&mut home, "set", "e6", "<active name='The Empty Set'/>").await;
    assert_eq!(condition(&res).as_deref(), Some("item-not-found"));
    let res = privacy(&mut home, "set", "e7", "<default name='The Empty Set'/>").await;
    assert_eq!(condition(&res).as_deref(), Some("item-not-found"));
    let res = privacy(&mut home, "set", "e8", "<list name='The Empty Set'/>").await;
    assert_eq!(condition(&res).as_deref(), Some("item-not-found"));

    // Active (§2.4) and default (§2.5).
    let res = privacy(&mut orchard, "set", "a1", "<active name='public'/>").await;
    assert_eq!(res.attr("type"), Some("result"));
    let res = privacy(&mut orchard, "set", "d1", "<default name='public'/>").await;
    assert_eq!(res.attr("type"), Some("result"));
    let res = privacy(&mut orchard, "get", "g3", "").await;
    assert_eq!(
        names(&res),
        (
            Some("public".into()),
            Some("public".into()),
            vec!["public".into()]
        )
    );
    // Active lists are per session.
    let res = privacy(&mut home, "get", "g4", "").await;
    assert_eq!(names(&res).0, None);

    privacy(
        &mut orchard,
        "set",
        "s2",
        "<list name='private'><item type='subscription' value='both' action='allow' order='10'/><item action='deny' order='15'/></list>",
    )
    .await;
    // 'home' applies the default list: changing or declining it, or removing it, is a
    // conflict for another resource (§2.2 rule 11, §2.5, §2.8).
    let res = privacy(&mut orchard, "set", "c1", "<default name='private'/>").await;
    assert_eq!(condition(&res).as_deref(), Some("conflict"));
    let res = privacy(&mut orchard, "set", "c2", "<default/>").await;
    assert_eq!(condition(&res).as_deref(), Some("conflict"));
    let res = privacy(&mut orchard, "set", "c3", "<list name='public'/>").await;
    assert_eq!(condition(&res).as_deref(), Some("conflict"));
    // Once 'home' has an active list of its own, the default is free to change.
    privacy(&mut home, "set", "a2", "<active name='private'/>").await;
    let res = privacy(&mut orchard, "set", "d2", "<default name='private'/>").await;
    assert_eq!(res.attr("type"), Some("result"));
    // 'private' is now home's active list: removing it from orchard is a conflict, removing
    // 'public' (only orchard's own active list) is fine.
    let res = privacy(&mut orchard, "set", "c4", "<list name='private'/>").await;
    assert_eq!(condition(&res).as_deref(), Some("conflict"));
    let res = privacy(&mut orchard, "set", "r1", "<list name='public'/>").await;
    assert_eq!(res.attr("type"), Some("result"));
    let got = drain(&mut home, Duration::from_millis(50)).await;
    assert!(got.iter().any(|e| is_push_for(e, "public")), "{got:?}");
    let res = privacy(&mut orchard, "get", "g5", "").await;
    assert_eq!(
        names(&res),
        (None, Some("private".into()), vec!["private".into()])
    );
    // Declining the active list (§2.4).
    let res = privacy(&mut home, "set", "a3", "<active/>").await;
    assert_eq!(res.attr("type"), Some("result"));
    let res = privacy(&mut home, "get", "g6", "").await;
    assert_eq!(names(&res).0, None);
}

#[tokio::test]
async fn an_active_list_filters_only_its_session_and_only_the_named_kinds() {
    let server = TestServer::start().await;
    server.add_user("alice", "pw-a").await;
    server.add_user("bob", "pw-b").await;
    let mut phone = server.login("alice", "pw-a", "phone").await;
    let mut laptop = server.login("alice", "pw-a", "laptop").await;
    let mut bob = server.login("bob", "pw-b", "desk").await;
    phone.available().await;
    laptop.available().await;
    bob.available().await;
    privacy(
        &mut phone,
        "set",
        "s1",
        "<list name='no-bob-messages'><item type='jid' value='bob@localhost' action='deny' order='1'><message/></item></list>",
    )
    .await;
    privacy(&mut phone, "set", "a1", "<active name='no-bob-messages'/>").await;
    drain(&mut phone, Duration::from_millis(20)).await;
    drain(&mut laptop, Duration::from_millis(20)).await;

    // To the bare JID: both resources share the top priority; only the laptop receives it.
    bob.send("<message to='alice@localhost' type='chat' id='m1'><body>hi</body></message>")
        .await;
    let m = laptop.recv_until(|e| e.name() == "message").await;
    assert_eq!(m.attr("id"), Some("m1"));
    let got = drain(&mut phone, Duration::from_millis(100)).await;
    assert!(!got.iter().any(|e| e.name() == "message"), "{got:?}");
    // To the phone itself: bounced with service-unavailable (§2.12).
    bob.send("<message to='alice@localhost/phone' type='chat' id='m2'><body>hi</body></message>")
        .await;
    let err = bob.recv_until(|e| e.name() == "message").await;
    assert_eq!(err.attr("id"), Some("m2"));
    assert_eq!(condition(&err).as_deref(), Some("service-unavailable"));
    // IQs are not covered by a <message/> item.
    bob.send(
        "<iq to='alice@localhost/phone' type='get' id='q1'><query xmlns='jabber:iq:version'/></iq>",
    )
    .await;
    let q = phone
        .recv_until(|e| e.name() == "iq" && e.attr("id") == Some("q1"))
        .await;
    assert_eq!(q.attr("from"), Some("bob@localhost/desk"));
    // The user's own resources are never blocked, whatever the rules say.
    privacy(
        &mut phone,
        "set",
        "s2",
        "<list name='no-bob-messages'><item action='deny' order='1'/></list>",
    )
    .await;
    laptop
        .send("<message to='alice@localhost/phone' type='chat' id='m3'><body>me</body></message>")
        .await;
    let m = phone.recv_until(|e| e.name() == "message").await;
    assert_eq!(m.attr("id"), Some("m3"));
    // The updated definition applies at once (§2.2 rule 8): now alice/phone may not send either.
    phone
        .send("<message to='bob@localhost' type='chat' id='m4'><body>out</body></message>")
        .await;
    let err = phone.recv_until(|e| e.name() == "message").await;
    assert_eq!(err.attr("id"), Some("m4"));
    assert_eq!(condition(&err).as_deref(), Some("not-acceptable"));
    // ... and that is not a blocklist entry, so no XEP-0191 <blocked/> in the error.
    assert!(!err
        .get_child("error", "jabber:client")
        .unwrap()
        .has_child("blocked", "urn:xmpp:blocking:errors"));
}

#[tokio::test]
async fn presence_out_group_and_subscription_rules() {
    let server = TestServer::start().await;
    server.add_user("alice", "pw-a").await;
    server.add_user("bob", "pw-b").await;
    server.add_user("carol", "pw-c").await;
    let mut alice = server.login("alice", "pw-a", "phone").await;
    let mut bob = server.login("bob", "pw-b", "desk").await;
    let mut carol = server.login("carol", "pw-c", "pad").await;
    alice.available().await;
    bob.available().await;
    carol.available().await;
    subscribe(&mut bob, "bob@localhost", &mut alice, "alice@localhost").await;
    subscribe(&mut alice, "alice@localhost", &mut bob, "bob@localhost").await;
    drain(&mut alice, Duration::from_millis(50)).await;
    drain(&mut bob, Duration::from_millis(50)).await;

    // Hide from everyone with a 'both' subscription; as the default list (alice's only
    // session has no active list). bob loses alice's presence at once (§2.8 note).
    privacy(
        &mut alice,
        "set",
        "s1",
        "<list name='hide'><item type='subscription' value='both' action='deny' order='1'><presence-out/></item></list>",
    )
    .await;
    privacy(&mut alice, "set", "d1", "<default name='hide'/>").await;
    let p = bob
        .recv_until(|e| e.name() == "presence" && e.attr("from") == Some("alice@localhost/phone"))
        .await;
    assert_eq!(p.attr("type"), Some("unavailable"));
    alice.send("<presence><show>away</show></presence>").await;
    let got = drain(&mut bob, Duration::from_millis(100)).await;
    assert!(
        !got.iter()
            .any(|e| e.attr("from") == Some("alice@localhost/phone")),
        "{got:?}"
    );
    // Only presence is covered: messages still flow both ways.
    alice
        .send("<message to='bob@localhost' type='chat' id='m1'><body>psst</body></message>")
        .await;
    assert_eq!(
        bob.recv_until(|e| e.name() == "message").await.attr("id"),
        Some("m1")
    );

    // Strangers (subscription none) may not send messages.
    privacy(
        &mut alice,
        "set",
        "s2",
        "<list name='hide'><item type='subscription' value='none' action='deny' order='5'><message/></item></list>",
    )
    .await;
    // The list changed back to allowing presence-out: bob hears alice again.
    let p = bob
        .recv_until(|e| e.name() == "presence" && e.attr("from") == Some("alice@localhost/phone"))
        .await;
    assert_eq!(p.get_child("show", "jabber:client").unwrap().text(), "away");
    carol
        .send("<message to='alice@localhost' type='chat' id='c1'><body>hello</body></message>")
        .await;
    let err = carol.recv_until(|e| e.name() == "message").await;
    assert_eq!(condition(&err).as_deref(), Some("service-unavailable"));
    bob.send("<message to='alice@localhost' type='chat' id='b1'><body>hi</body></message>")
        .await;
    assert_eq!(
        alice.recv_until(|e| e.name() == "message").await.attr("id"),
        Some("b1")
    );

    // Group rules: bob goes into 'Enemies', whose IQs are refused.
    let res = iq(
        &mut alice,
        "r1",
        "<iq type='set' id='r1'><query xmlns='jabber:iq:roster'><item jid='bob@localhost'><group>Enemies</group></item></query></iq>",
    )
    .await;
    assert_eq!(res.attr("type"), Some("result"));
    let res = privacy(
        &mut alice,
        "set",
        "s3",
        "<list name='hide'><item type='group' value='Enemies' action='deny' order='1'><iq/></item></list>",
    )
    .await;
    assert_eq!(res.attr("type"), Some("result"));
    bob.send(
        "<iq to='alice@localhost/phone' type='get' id='q1'><query xmlns='jabber:iq:version'/></iq>",
    )
    .await;
    let err = bob.recv_until(|e| e.attr("id") == Some("q1")).await;
    assert_eq!(condition(&err).as_deref(), Some("service-unavailable"));
    carol
        .send("<iq to='alice@localhost/phone' type='get' id='q2'><query xmlns='jabber:iq:version'/></iq>")
        .await;
    let q = alice.recv_until(|e| e.attr("id") == Some("q2")).await;
    assert_eq!(q.attr("type"), Some("get"));
}

#[tokio::test]
async fn edits_of_the_default_list_show_in_the_blocklist() {
    let server = TestServer::start().await;
    server.add_user("alice", "pw-a").await;
    let mut alice = server.login("alice", "pw-a", "phone").await;
    alice.available().await;
    iq(
        &mut alice,
        "b0",
        "<iq type='get' id='b0'><blocklist xmlns='urn:xmpp:blocking'/></iq>",
    )
    .await;
    privacy(
        &mut alice,
        "set",
        "s1",
        "<list name='mine'><item type='jid' value='carol@localhost' action='deny' order='4'/><item type='jid' value='dave@localhost' action='deny' order='5'><message/></item></list>",
    )
    .await;
    alice.send("<iq type='set' id='d1'><query xmlns='jabber:iq:privacy'><default name='mine'/></query></iq>")
        .await;
    // XEP-0191 §5 item 4: the new default list's blocked JIDs are the blocklist; only the
    // jid+deny item without stanza kinds counts.
    let push = alice
        .recv_until(|e| {
            e.name() == "iq" && e.attr("type") == Some("set") && e.has_child("block", BLOCKING)
        })
        .await;
    let jids: Vec<_> = push
        .get_child("block", BLOCKING)
        .unwrap()
        .children()
        .map(|i| i.attr("jid").unwrap().to_owned())
        .collect();
    assert_eq!(jids, ["carol@localhost"]);
    let res = iq(
        &mut alice,
        "b1",
        "<iq type='get' id='b1'><blocklist xmlns='urn:xmpp:blocking'/></iq>",
    )
    .await;
    assert_eq!(
        res.get_child("blocklist", BLOCKING)
            .unwrap()
            .children()
            .count(),
        1
    );
    // Blocking through XEP-0191 edits the same list, first in order.
    iq(
        &mut alice,
        "b2",
        "<iq type='set' id='b2'><block xmlns='urn:xmpp:blocking'><item jid='eve@localhost'/></block></iq>",
    )
    .await;
    let res = privacy(&mut alice, "get", "g1", "<list name='mine'/>").await;
    let list = res
        .get_child("query", PRIVACY)
        .unwrap()
        .get_child("list", PRIVACY)
        .unwrap();
    let first = list.children().next().unwrap();
    assert_eq!(first.attr("value"), Some("eve@localhost"));
    assert_eq!(first.attr("order"), Some("3"));
    assert_eq!(list.children().count(), 3);
}
