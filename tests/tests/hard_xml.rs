//! Catalogue, hostile XML (docs/bad-input.md, X-entries) not already covered by
//! c2s_stream_errors: element-count bombs, huge attribute values, non-UTF-8 encodings,
//! namespace tricks on stanzas, and a stream abandoned in the middle of a stanza. Each test
//! checks the exact stream error, that two users chatting throughout lose nothing, and that a
//! fresh user still logs in.

mod hard_support;

use hard_support::{after_open_gets, Witnesses};
use starling_tests::*;

/// 256 KiB of `<a/>` fits the byte limit but would be 65 536 tree nodes; the element cap
/// (4096 per stanza) ends the stream with `policy-violation` long before.
#[tokio::test]
async fn an_element_count_bomb_is_a_policy_violation() {
    let server = TestServer::start().await;
    let mut w = Witnesses::login(&server).await;
    w.chat("before").await;
    let mut mallory = hard_support::fresh_user(&server, "mallory").await;
    let bomb = format!(
        "<message to='mallory@localhost/r'>{}</message>",
        "<a/>".repeat(60_000)
    );
    assert!(bomb.len() < 256 * 1024, "under the byte limit");
    mallory.flood(bomb.as_bytes()).await;
    mallory.expect_stream_error("policy-violation").await;
    // Exactly at the limit passes: the stanza plus 4095 children.
    let mut ok = hard_support::fresh_user(&server, "okay").await;
    ok.send(&format!(
        "<message to='okay@localhost/r' id='big'>{}</message>",
        "<a/>".repeat(4095)
    ))
    .await;
    let back = ok
        .recv_until(|e| e.name() == "message" && e.attr("id") == Some("big"))
        .await;
    assert_eq!(back.children().count(), 4095);
    w.chat("after").await;
    server.assert_still_serves().await;
}

/// An attribute value above rxml's 8 KiB token limit is `policy-violation`, before and after
/// authentication.
#[tokio::test]
async fn a_huge_attribute_value_is_a_policy_violation() {
    let server = TestServer::start().await;
    let mut w = Witnesses::login(&server).await;
    let huge = "x".repeat(100_000);
    after_open_gets(
        &server,
        format!("<message id='{huge}'/>").as_bytes(),
        "policy-violation",
    )
    .await;
    let mut mallory = hard_support::fresh_user(&server, "mallory").await;
    mallory
        .flood(format!("<message to='wa0@localhost' id='{huge}'/>").as_bytes())
        .await;
    mallory.expect_stream_error("policy-violation").await;
    w.chat("after").await;
    server.assert_still_serves().await;
}

/// UTF-16 (by byte order mark) and a declared non-UTF-8 encoding are
/// `unsupported-encoding` (RFC 6120 §11.6).
#[tokio::test]
async fn utf16_and_declared_latin1_are_unsupported_encoding() {
    let server = TestServer::start().await;
    let mut w = Witnesses::login(&server).await;
    for input in [
        &b"\xff\xfe<\0s\0"[..],
        b"<?xml version='1.0' encoding='ISO-8859-1'?><stream:stream to='localhost' \
          version='1.0' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>",
    ] {
        let mut c = Conn::connect(server.c2s).await;
        c.send_bytes(input).await;
        c.expect_stream_error("unsupported-encoding").await;
    }
    w.chat("after").await;
    server.assert_still_serves().await;
}

/// Namespace tricks: a stanza with a prefix bound to `jabber:client` is an ordinary stanza
/// (namespaces, not prefixes, matter) and is stamped and delivered like one; a stanza that
/// redeclares its default namespace as `jabber:server` is `unsupported-stanza-type`; an
/// `xmlns:xml` rebinding is `bad-namespace-prefix`.
#[tokio::test]
async fn namespace_tricks_on_stanzas() {
    let server = TestServer::start().await;
    let mut w = Witnesses::login(&server).await;
    let mut mallory = hard_support::fresh_user(&server, "mallory").await;
    let mut victim = hard_support::fresh_user(&server, "victim").await;
    mallory
        .send(
            "<c:message xmlns:c='jabber:client' to='victim@localhost/r' id='pfx'>\
             <c:body>prefixed</c:body></c:message>",
        )
        .await;
    let got = victim
        .recv_until(|e| e.name() == "message" && e.attr("id") == Some("pfx"))
        .await;
    assert_eq!(got.attr("from"), Some("mallory@localhost/r"), "stamped");
    assert_eq!(
        got.get_child("body", "jabber:client").unwrap().text(),
        "prefixed"
    );
    mallory
        .send("<message xmlns='jabber:server' from='localhost' to='victim@localhost/r'/>")
        .await;
    mallory.expect_stream_error("unsupported-stanza-type").await;
    after_open_gets(
        &server,
        b"<message xmlns:xml='urn:evil' to='victim@localhost'/>",
        "bad-namespace-prefix",
    )
    .await;
    victim
        .expect_none(std::time::Duration::from_millis(300), |e| {
            e.name() == "message"
        })
        .await;
    w.chat("after").await;
    server.assert_still_serves().await;
}

/// A client that stops in the middle of a stanza and drops the connection (an unclosed
/// stream): its session ends, nothing of the half stanza is routed, and messages sent to it
/// afterwards are stored offline and delivered at its next login.
#[tokio::test]
async fn an_unclosed_stream_cut_mid_stanza_loses_nothing() {
    let server = TestServer::start().await;
    let mut w = Witnesses::login(&server).await;
    let mut mallory = hard_support::fresh_user(&server, "mallory").await;
    let mut bob = hard_support::fresh_user(&server, "bobby").await;
    mallory
        .send("<message to='bobby@localhost/r' id='half'><body>never fini")
        .await;
    let jid = mallory.jid.clone().unwrap();
    drop(mallory);
    server.wait_unbound(&jid).await;
    bob.expect_none(std::time::Duration::from_millis(300), |e| {
        e.name() == "message" && e.attr("id") == Some("half")
    })
    .await;
    bob.send("<message to='mallory@localhost' type='chat' id='later'><body>after</body></message>")
        .await;
    bob.ping_server().await;
    let mut again = server.login("mallory", "pw", "r2").await;
    again.send("<presence/>").await;
    let m = again
        .recv_until(|e| e.name() == "message" && e.attr("id") == Some("later"))
        .await;
    assert_eq!(
        m.get_child("body", "jabber:client").unwrap().text(),
        "after"
    );
    w.chat("after").await;
    server.assert_still_serves().await;
}
