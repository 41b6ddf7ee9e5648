//! Helpers shared by the IM transcripts (im_roster, im_subscriptions, im_presence): reading
//! the exact next stanza, proving that nothing else is queued, and the roster and presence
//! stanzas those tests assert.
#![allow(dead_code)]

use minidom::Element;
use starling_tests::*;

pub const ROSTER: &str = "jabber:iq:roster";
pub const CLIENT: &str = "jabber:client";

/// Proves nothing else is queued for `c`: a ping round trip whose result must be the very
/// next stanza. Everything a sender's stanza causes is queued before the sender's own next
/// stanza is read, so after the *sender* has synced, this is exact for every other client.
pub async fn quiet(c: &mut Conn) {
    c.send("<iq type='get' id='quiet' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    let el = c.recv().await;
    assert!(
        el.name() == "iq" && el.attr("id") == Some("quiet"),
        "{} expected nothing more, got {}",
        who(c),
        xml(&el)
    );
}

pub fn who(c: &Conn) -> String {
    c.jid.as_ref().map(|j| j.to_string()).unwrap_or_default()
}

pub fn xml(el: &Element) -> String {
    starling_proto::writer::element_to_string(el)
}

/// Requests the roster (making the session an interested resource) and returns the query.
pub async fn roster_get(c: &mut Conn, ver: Option<&str>) -> Option<Element> {
    let ver = ver.map(|v| format!(" ver='{v}'")).unwrap_or_default();
    c.send(&format!(
        "<iq type='get' id='rg'><query xmlns='jabber:iq:roster'{ver}/></iq>"
    ))
    .await;
    let r = c.recv().await;
    assert_eq!(r.attr("id"), Some("rg"), "{}", xml(&r));
    assert_eq!(r.attr("type"), Some("result"), "{}", xml(&r));
    r.get_child("query", ROSTER).cloned()
}

/// Sends a roster set (id `rs`) and returns the first stanza that follows: the push to this
/// session when it is interested (the result comes after it), else the result or error.
pub async fn roster_set(c: &mut Conn, item: &str) -> Element {
    c.send(&format!(
        "<iq type='set' id='rs'><query xmlns='jabber:iq:roster'>{item}</query></iq>"
    ))
    .await;
    c.recv().await
}

/// The items of a roster query as (jid, subscription, ask).
pub fn items(query: &Element) -> Vec<(String, String, Option<String>)> {
    query
        .children()
        .map(|i| {
            (
                i.attr("jid").unwrap_or_default().to_owned(),
                i.attr("subscription").unwrap_or_default().to_owned(),
                i.attr("ask").map(str::to_owned),
            )
        })
        .collect()
}

/// Asserts `el` is a roster push of one item for `jid` with `subscription` and `ask`;
/// returns the item and the push's version.
pub fn assert_push(
    el: &Element,
    jid: &str,
    subscription: &str,
    ask: Option<&str>,
) -> (Element, String) {
    assert_eq!(el.name(), "iq", "expected a roster push, got {}", xml(el));
    assert_eq!(el.attr("type"), Some("set"), "{}", xml(el));
    // RFC 6121 §2.1.6: a push comes from the account itself (here: no 'from' at all).
    assert_eq!(el.attr("from"), None, "{}", xml(el));
    let q = el
        .get_child("query", ROSTER)
        .unwrap_or_else(|| panic!("push without query: {}", xml(el)));
    let list: Vec<_> = q.children().collect();
    assert_eq!(list.len(), 1, "a push carries one item: {}", xml(el));
    let item = list[0];
    assert_eq!(item.attr("jid"), Some(jid), "{}", xml(el));
    assert_eq!(item.attr("subscription"), Some(subscription), "{}", xml(el));
    assert_eq!(item.attr("ask"), ask, "{}", xml(el));
    (item.clone(), q.attr("ver").unwrap_or_default().to_owned())
}

/// Receives the next stanza and asserts it is a roster push (see [`assert_push`]).
pub async fn expect_push(
    c: &mut Conn,
    jid: &str,
    subscription: &str,
    ask: Option<&str>,
) -> Element {
    let el = c.recv().await;
    assert_push(&el, jid, subscription, ask).0
}

/// Receives the next stanza and asserts it is a presence with this from, to and type.
pub async fn expect_presence(c: &mut Conn, from: &str, to: &str, kind: Option<&str>) -> Element {
    let el = c.recv().await;
    assert_eq!(
        el.name(),
        "presence",
        "{} expected presence, got {}",
        who(c),
        xml(&el)
    );
    assert_eq!(
        (el.attr("from"), el.attr("to"), el.attr("type")),
        (Some(from), Some(to), kind),
        "{} got {}",
        who(c),
        xml(&el)
    );
    el
}

/// Receives the next stanza and asserts it is the result of IQ `id`.
pub async fn expect_result(c: &mut Conn, id: &str) {
    let el = c.recv().await;
    assert_eq!(
        (el.name(), el.attr("id"), el.attr("type")),
        ("iq", Some(id), Some("result")),
        "{} got {}",
        who(c),
        xml(&el)
    );
}

/// Receives the next stanza and asserts it is the error answer to IQ `id` with `condition`.
pub async fn expect_error(c: &mut Conn, id: &str, condition: &str) {
    let el = c.recv().await;
    assert_eq!(el.attr("id"), Some(id), "{}", xml(&el));
    assert_eq!(el.attr("type"), Some("error"), "{}", xml(&el));
    assert_eq!(
        stanza_error_condition(&el).as_deref(),
        Some(condition),
        "{}",
        xml(&el)
    );
}

/// Logs `user` in with resource `res`, fetches the roster and sends initial presence,
/// consuming the echo of its own presence; nothing else may arrive.
pub async fn online(server: &TestServer, user: &str, res: &str) -> Conn {
    let mut c = server.login(user, &format!("pw-{user}"), res).await;
    roster_get(&mut c, None).await;
    c.send("<presence/>").await;
    let me = format!("{user}@localhost/{res}");
    expect_presence(&mut c, &me, &me, None).await;
    quiet(&mut c).await;
    c
}

/// A server with users alice, bob and carol (password `pw-<name>`).
pub async fn server() -> TestServer {
    let s = TestServer::start().await;
    for u in ["alice", "bob", "carol"] {
        s.add_user(u, &format!("pw-{u}")).await;
    }
    s
}

/// Makes `a` and `b` (online, interested, available, strangers so far) subscribed to each
/// other, asserting the whole exchange of RFC 6121 §3.1 on both sides.
pub async fn befriend(a: &mut Conn, b: &mut Conn) {
    let a_full = who(a);
    let b_full = who(b);
    let a_bare = a_full.split('/').next().unwrap().to_owned();
    let b_bare = b_full.split('/').next().unwrap().to_owned();
    // a asks.
    a.send(&format!("<presence to='{b_bare}' type='subscribe'/>"))
        .await;
    expect_push(a, &b_bare, "none", Some("subscribe")).await;
    quiet(a).await;
    expect_presence(b, &a_bare, &b_bare, Some("subscribe")).await;
    quiet(b).await;
    // b approves: b's push, then a gets the approval, its push and b's presence.
    b.send(&format!("<presence to='{a_bare}' type='subscribed'/>"))
        .await;
    expect_push(b, &a_bare, "from", None).await;
    quiet(b).await;
    expect_presence(a, &b_bare, &a_bare, Some("subscribed")).await;
    expect_push(a, &b_bare, "to", None).await;
    expect_presence(a, &b_full, &a_bare, None).await;
    quiet(a).await;
    // b asks back; a approves.
    b.send(&format!("<presence to='{a_bare}' type='subscribe'/>"))
        .await;
    expect_push(b, &a_bare, "from", Some("subscribe")).await;
    quiet(b).await;
    expect_presence(a, &b_bare, &a_bare, Some("subscribe")).await;
    quiet(a).await;
    a.send(&format!("<presence to='{b_bare}' type='subscribed'/>"))
        .await;
    expect_push(a, &b_bare, "both", None).await;
    quiet(a).await;
    expect_presence(b, &a_bare, &b_bare, Some("subscribed")).await;
    expect_push(b, &a_bare, "both", None).await;
    expect_presence(b, &a_full, &b_bare, None).await;
    quiet(b).await;
}
