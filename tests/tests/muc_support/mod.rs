//! Helpers for the multi-user chat transcripts (x_muc*): entering rooms, reading status
//! codes and items, configuring rooms, and admin requests.
#![allow(dead_code)]

use minidom::Element;
use starling_tests::*;

pub const MUC: &str = "http://jabber.org/protocol/muc";
pub const MUC_USER: &str = "http://jabber.org/protocol/muc#user";
pub const MUC_ADMIN: &str = "http://jabber.org/protocol/muc#admin";
pub const MUC_OWNER: &str = "http://jabber.org/protocol/muc#owner";
pub const CLIENT: &str = "jabber:client";
pub const DATA: &str = "jabber:x:data";
pub const SID: &str = "urn:xmpp:sid:0";
pub const OCC: &str = "urn:xmpp:occupant-id:0";
pub const DELAY: &str = "urn:xmpp:delay";
pub const SERVICE: &str = "conference.localhost";

pub fn xml(el: &Element) -> String {
    starling_proto::writer::element_to_string(el)
}

/// `name@conference.localhost`.
pub fn room(name: &str) -> String {
    format!("{name}@{SERVICE}")
}

/// Creates `name@localhost` (password "pw"), logs in as resource "r" and sends presence.
pub async fn user(ts: &TestServer, name: &str) -> Conn {
    ts.add_user(name, "pw").await;
    let mut c = ts.login(name, "pw", "r").await;
    c.available().await;
    c
}

/// The status codes of a MUC stanza.
pub fn codes(el: &Element) -> Vec<u16> {
    let mut v: Vec<u16> = el
        .get_child("x", MUC_USER)
        .map(|x| {
            x.children()
                .filter(|c| c.is("status", MUC_USER))
                .filter_map(|c| c.attr("code").and_then(|c| c.parse().ok()))
                .collect()
        })
        .unwrap_or_default();
    v.sort_unstable();
    v
}

/// The `<item/>` of a MUC presence.
pub fn item(el: &Element) -> Element {
    el.get_child("x", MUC_USER)
        .and_then(|x| x.get_child("item", MUC_USER))
        .cloned()
        .unwrap_or_else(|| panic!("no muc#user item in {}", xml(el)))
}

/// (affiliation, role) of a MUC presence.
pub fn aff_role(el: &Element) -> (String, String) {
    let i = item(el);
    (
        i.attr("affiliation").unwrap_or_default().to_owned(),
        i.attr("role").unwrap_or_default().to_owned(),
    )
}

pub fn is_subject(el: &Element) -> bool {
    el.name() == "message" && el.get_child("subject", CLIENT).is_some()
}

/// Sends an entering presence to `room/nick` with `x_inner` inside `<x xmlns=muc/>`, and
/// returns everything up to the subject (success) or the presence error.
pub async fn join(c: &mut Conn, room: &str, nick: &str, x_inner: &str) -> Vec<Element> {
    c.send(&format!(
        "<presence to='{room}/{nick}'><x xmlns='{MUC}'>{x_inner}</x></presence>"
    ))
    .await;
    let mut got = Vec::new();
    loop {
        let el = c.recv().await;
        let done = is_subject(&el) || el.attr("type") == Some("error");
        got.push(el);
        if done {
            return got;
        }
    }
}

/// Joins and returns the own presence (the one with status 110); panics on an error.
pub async fn join_ok(c: &mut Conn, room: &str, nick: &str) -> Element {
    let got = join(c, room, nick, "").await;
    let last = got.last().unwrap();
    assert_ne!(last.attr("type"), Some("error"), "{}", xml(last));
    got.into_iter()
        .find(|e| e.name() == "presence" && codes(e).contains(&110))
        .expect("own presence")
}

/// Enters and expects a presence error; returns its condition.
pub async fn join_err(c: &mut Conn, room: &str, nick: &str, x_inner: &str) -> String {
    let got = join(c, room, nick, x_inner).await;
    let last = got.last().unwrap();
    assert_eq!(last.attr("type"), Some("error"), "{}", xml(last));
    assert_eq!(last.attr("from"), Some(format!("{room}/{nick}").as_str()));
    stanza_error_condition(last).unwrap()
}

/// Sends an IQ and returns its answer (skipping other stanzas).
pub async fn iq(c: &mut Conn, to: &str, kind: &str, id: &str, inner: &str) -> Element {
    c.send(&format!(
        "<iq type='{kind}' id='{id}' to='{to}'>{inner}</iq>"
    ))
    .await;
    c.recv_until(|e| e.name() == "iq" && e.attr("id") == Some(id))
        .await
}

/// Like [`iq`], but the other stanzas received before the answer are returned too.
pub async fn iq_collect(
    c: &mut Conn,
    to: &str,
    kind: &str,
    id: &str,
    inner: &str,
) -> (Element, Vec<Element>) {
    c.send(&format!(
        "<iq type='{kind}' id='{id}' to='{to}'>{inner}</iq>"
    ))
    .await;
    let mut others = Vec::new();
    loop {
        let el = c.recv().await;
        if el.name() == "iq" && el.attr("id") == Some(id) {
            return (el, others);
        }
        others.push(el);
    }
}

/// Asserts an IQ answer is a result.
pub fn ok(el: &Element) {
    assert_eq!(el.attr("type"), Some("result"), "{}", xml(el));
}

/// Asserts an IQ answer is an error with `cond`.
pub fn err(el: &Element, cond: &str) {
    assert_eq!(el.attr("type"), Some("error"), "{}", xml(el));
    assert_eq!(
        stanza_error_condition(el).as_deref(),
        Some(cond),
        "{}",
        xml(el)
    );
}

/// A submitted room configuration form with `fields` (var without the prefix, value).
pub fn config_form(fields: &[(&str, &str)]) -> String {
    let mut s = format!(
        "<query xmlns='{MUC_OWNER}'><x xmlns='{DATA}' type='submit'>\
         <field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#roomconfig</value></field>"
    );
    for (var, value) in fields {
        let var = if var.starts_with("muc#") {
            (*var).to_owned()
        } else {
            format!("muc#roomconfig_{var}")
        };
        s.push_str(&format!(
            "<field var='{var}'><value>{value}</value></field>"
        ));
    }
    s.push_str("</x></query>");
    s
}

/// Creates `room` as `nick` and makes it an instant room; returns the creation presence.
pub async fn create(c: &mut Conn, room: &str, nick: &str) -> Element {
    let own = join_ok(c, room, nick).await;
    let r = iq(
        c,
        room,
        "set",
        "instant",
        &format!("<query xmlns='{MUC_OWNER}'><x xmlns='{DATA}' type='submit'/></query>"),
    )
    .await;
    ok(&r);
    own
}

/// Submits a configuration; returns the answer (other stanzas dropped).
pub async fn configure(c: &mut Conn, room: &str, fields: &[(&str, &str)]) -> Element {
    iq(c, room, "set", "cfg", &config_form(fields)).await
}

/// An admin set with one item (`attrs` on the item, optional reason).
pub async fn admin(
    c: &mut Conn,
    room: &str,
    attrs: &str,
    reason: Option<&str>,
) -> (Element, Vec<Element>) {
    let reason = reason
        .map(|r| format!("<reason>{r}</reason>"))
        .unwrap_or_default();
    iq_collect(
        c,
        room,
        "set",
        "adm",
        &format!("<query xmlns='{MUC_ADMIN}'><item {attrs}>{reason}</item></query>"),
    )
    .await
}

/// Receives until a presence from `from` arrives.
pub async fn presence_from(c: &mut Conn, from: &str) -> Element {
    c.recv_until(|e| e.name() == "presence" && e.attr("from") == Some(from))
        .await
}

/// Receives until a groupchat message with a body arrives.
pub async fn groupchat(c: &mut Conn) -> Element {
    c.recv_until(|e| {
        e.name() == "message"
            && e.attr("type") == Some("groupchat")
            && e.get_child("body", CLIENT).is_some()
    })
    .await
}

pub fn body(el: &Element) -> String {
    el.get_child("body", CLIENT)
        .map(|b| b.text())
        .unwrap_or_default()
}

/// The room's stanza id on a message.
pub fn stanza_id(el: &Element, by: &str) -> Option<String> {
    el.children()
        .find(|c| c.is("stanza-id", SID) && c.attr("by") == Some(by))
        .and_then(|c| c.attr("id").map(str::to_owned))
}

pub fn occupant_id(el: &Element) -> Option<String> {
    el.get_child("occupant-id", OCC)
        .and_then(|o| o.attr("id").map(str::to_owned))
}

/// Sends a groupchat message with `text`.
pub async fn say(c: &mut Conn, room: &str, text: &str) {
    c.send(&format!(
        "<message type='groupchat' to='{room}'><body>{text}</body></message>"
    ))
    .await;
}

/// Receives until the groupchat message with body `text` arrives.
pub async fn groupchat_with(c: &mut Conn, text: &str) -> Element {
    c.recv_until(|e| {
        e.name() == "message"
            && e.attr("type") == Some("groupchat")
            && e.get_child("body", CLIENT)
                .is_some_and(|b| b.text() == text)
    })
    .await
}

/// Receives until an unavailable presence from `from` arrives.
pub async fn unavailable_from(c: &mut Conn, from: &str) -> Element {
    c.recv_until(|e| {
        e.name() == "presence"
            && e.attr("from") == Some(from)
            && e.attr("type") == Some("unavailable")
    })
    .await
}
