//! Transcripts: every stream error a client stream can get (RFC 6120 §4.9.3), each with its
//! trigger, and after each hostile input the same server still serves a normal login.

use std::time::{Duration, Instant};

use starling_tests::*;

const STREAM_NS: &str = "xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'";

/// A plaintext connection whose stream is open (header and features read).
async fn opened(server: &TestServer) -> Conn {
    let mut c = Conn::connect(server.c2s).await;
    c.open("localhost").await;
    c
}

/// Sends `input` on a fresh connection (header included by the caller) and expects `condition`.
async fn raw_input_gets(server: &TestServer, input: &[u8], condition: &str) {
    let mut c = Conn::connect(server.c2s).await;
    c.flood(input).await;
    c.expect_stream_error(condition).await;
}

/// Opens a stream, sends `input`, and expects `condition`.
async fn after_open_gets(server: &TestServer, input: &[u8], condition: &str) {
    let mut c = opened(server).await;
    c.flood(input).await;
    c.expect_stream_error(condition).await;
}

#[tokio::test]
async fn broken_xml_is_not_well_formed() {
    let server = TestServer::start().await;
    // Mismatched end tag.
    after_open_gets(
        &server,
        b"<message to='a@localhost'><body>x</message>",
        "not-well-formed",
    )
    .await;
    // Invalid UTF-8 inside character data.
    after_open_gets(
        &server,
        b"<message to='a@localhost'><body>\xff\xfe\xc3</body></message>",
        "not-well-formed",
    )
    .await;
    // A truncated multi-byte sequence followed by ASCII.
    after_open_gets(
        &server,
        b"<message to='a@localhost'><body>\xe2\x82x</body></message>",
        "not-well-formed",
    )
    .await;
    // NUL is not an XML character.
    after_open_gets(
        &server,
        b"<message to='a@localhost'><body>a\0b</body></message>",
        "not-well-formed",
    )
    .await;
    // Garbage where the stream header should be.
    raw_input_gets(&server, b"GET / HTTP/1.1\r\n\r\n", "not-well-formed").await;
    server.assert_still_serves().await;
}

#[tokio::test]
async fn broken_xml_inside_a_bound_session_is_not_well_formed() {
    let server = TestServer::start().await;
    server.add_user("alice", "pw").await;
    let mut alice = server.login("alice", "pw", "a").await;
    alice
        .send_bytes(b"<message to='alice@localhost'><body>\xc0\xaf</body></message>")
        .await;
    alice.expect_stream_error("not-well-formed").await;
    let mut alice = server.login("alice", "pw", "a").await;
    alice.send_bytes(b"<presence>\0</presence>").await;
    alice.expect_stream_error("not-well-formed").await;
    server.assert_still_serves().await;
}

#[tokio::test]
async fn billion_laughs_dtd_is_restricted_xml_and_costs_nothing() {
    let server = TestServer::start().await;
    let mut dtd = String::from("<?xml version='1.0'?><!DOCTYPE lolz [<!ENTITY lol 'lol'>");
    for i in 1..=9 {
        let prev = if i == 1 {
            "lol".to_owned()
        } else {
            format!("lol{}", i - 1)
        };
        dtd.push_str(&format!(
            "<!ENTITY lol{i} '{}'>",
            format!("&{prev};").repeat(10)
        ));
    }
    dtd.push_str("]>");
    let started = Instant::now();
    // Before the stream header...
    let input = format!(
        "{dtd}<stream:stream to='localhost' version='1.0' {STREAM_NS}><message>&lol9;</message>"
    );
    raw_input_gets(&server, input.as_bytes(), "restricted-xml").await;
    // ... and inside an open stream.
    after_open_gets(&server, dtd.as_bytes(), "restricted-xml").await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "no entity expansion: took {:?}",
        started.elapsed()
    );
    server.assert_still_serves().await;
}

#[tokio::test]
async fn comments_processing_instructions_and_entities_are_restricted_xml() {
    let server = TestServer::start().await;
    after_open_gets(&server, b"<!-- hello -->", "restricted-xml").await;
    after_open_gets(
        &server,
        b"<message to='a@localhost'><body>x<!-- c --></body></message>",
        "restricted-xml",
    )
    .await;
    after_open_gets(&server, b"<?evil instruction?>", "restricted-xml").await;
    after_open_gets(
        &server,
        b"<message to='a@localhost'><body>&nbsp;</body></message>",
        "restricted-xml",
    )
    .await;
    after_open_gets(
        &server,
        b"<message to='a@localhost'><body>&lol;</body></message>",
        "restricted-xml",
    )
    .await;
    server.assert_still_serves().await;
}

#[tokio::test]
async fn wrong_namespaces_are_invalid_namespace() {
    let server = TestServer::start().await;
    // The stream root in the wrong namespace.
    raw_input_gets(
        &server,
        b"<?xml version='1.0'?><stream:stream to='localhost' version='1.0' \
          xmlns='jabber:client' xmlns:stream='http://example.com/streams'>",
        "invalid-namespace",
    )
    .await;
    // A default namespace other than jabber:client (a server-to-server stream here).
    raw_input_gets(
        &server,
        b"<?xml version='1.0'?><stream:stream to='localhost' version='1.0' \
          xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams'>",
        "invalid-namespace",
    )
    .await;
    // No default namespace at all.
    raw_input_gets(
        &server,
        b"<?xml version='1.0'?><stream:stream to='localhost' version='1.0' \
          xmlns:stream='http://etherx.jabber.org/streams'>",
        "invalid-namespace",
    )
    .await;
    server.assert_still_serves().await;
}

#[tokio::test]
async fn undeclared_or_missing_prefixes_are_bad_namespace_prefix() {
    let server = TestServer::start().await;
    // A stanza with a prefix nobody declared.
    after_open_gets(
        &server,
        b"<foo:message to='a@localhost'/>",
        "bad-namespace-prefix",
    )
    .await;
    // An attribute with an undeclared prefix.
    after_open_gets(
        &server,
        b"<message bar:to='a@localhost'/>",
        "bad-namespace-prefix",
    )
    .await;
    // The stream root without the stream prefix.
    raw_input_gets(
        &server,
        b"<?xml version='1.0'?><stream to='localhost' version='1.0' \
          xmlns='http://etherx.jabber.org/streams'>",
        "bad-namespace-prefix",
    )
    .await;
    server.assert_still_serves().await;
}

#[tokio::test]
async fn unknown_or_missing_host_is_host_unknown() {
    let server = TestServer::start().await;
    let mut c = Conn::connect(server.c2s).await;
    c.send(&Conn::header("example.com")).await;
    c.expect_stream_error("host-unknown").await;
    raw_input_gets(
        &server,
        format!("<?xml version='1.0'?><stream:stream version='1.0' {STREAM_NS}>").as_bytes(),
        "host-unknown",
    )
    .await;
    // A JID with a local part is not a host either.
    raw_input_gets(
        &server,
        format!("<stream:stream to='alice@localhost' version='1.0' {STREAM_NS}>").as_bytes(),
        "host-unknown",
    )
    .await;
    server.assert_still_serves().await;
}

#[tokio::test]
async fn other_versions_are_unsupported_version() {
    let server = TestServer::start().await;
    raw_input_gets(
        &server,
        format!("<stream:stream to='localhost' version='2.0' {STREAM_NS}>").as_bytes(),
        "unsupported-version",
    )
    .await;
    // No version: a pre-RFC 3920 stream, which this server does not speak.
    raw_input_gets(
        &server,
        format!("<stream:stream to='localhost' {STREAM_NS}>").as_bytes(),
        "unsupported-version",
    )
    .await;
    // version='1.1' is a minor version we may answer as 1.0 (RFC 6120 §4.7.5).
    let mut c = Conn::connect(server.c2s).await;
    c.send(&format!(
        "<stream:stream to='localhost' version='1.1' {STREAM_NS}>"
    ))
    .await;
    match c.next_event().await {
        Some(starling_proto::framer::StreamEvent::Open(h)) => {
            assert_eq!(h.version.as_deref(), Some("1.0"))
        }
        other => panic!("expected a stream header, got {other:?}"),
    }
    server.assert_still_serves().await;
}

#[tokio::test]
async fn a_ten_megabyte_stanza_is_a_policy_violation() {
    let server = TestServer::start().await;
    let mut big = b"<message to='a@localhost'><body>".to_vec();
    big.extend(std::iter::repeat_n(b'a', 10 << 20));
    big.extend_from_slice(b"</body></message>");
    // Before authentication...
    after_open_gets(&server, &big, "policy-violation").await;
    // ... and inside an authenticated session over TLS.
    server.add_user("alice", "pw").await;
    let mut alice = server.login("alice", "pw", "a").await;
    let written = alice.flood(&big).await;
    assert!(written < big.len(), "the server stopped reading early");
    alice.expect_stream_error("policy-violation").await;
    server.assert_still_serves().await;
}

#[tokio::test]
async fn a_stanza_just_over_a_configured_limit_is_refused_and_one_under_passes() {
    let server = TestServer::start_with(|c| c.c2s.max_stanza_bytes = 32 * 1024).await;
    server.add_user("alice", "pw").await;
    let mut alice = server.login("alice", "pw", "a").await;
    let body = "b".repeat(30 * 1024);
    alice
        .send(&format!(
            "<message to='alice@localhost/a' id='fits'><body>{body}</body></message>"
        ))
        .await;
    let got = alice.recv_until(|e| e.name() == "message").await;
    assert_eq!(got.attr("id"), Some("fits"));
    let body = "b".repeat(40 * 1024);
    alice
        .send(&format!(
            "<message to='alice@localhost/a'><body>{body}</body></message>"
        ))
        .await;
    alice.expect_stream_error("policy-violation").await;
    server.assert_still_serves().await;
}

#[tokio::test]
async fn deep_nesting_and_many_attributes_are_policy_violations() {
    let server = TestServer::start().await;
    // 100k nested elements.
    after_open_gets(
        &server,
        "<a>".repeat(100_000).as_bytes(),
        "policy-violation",
    )
    .await;
    // Just past the default depth of 64 is already too deep.
    after_open_gets(
        &server,
        format!("<message to='a@localhost'>{}", "<x>".repeat(64)).as_bytes(),
        "policy-violation",
    )
    .await;
    // 1000 attributes on one element.
    let attrs: String = (0..1000).map(|i| format!(" a{i}='v'")).collect();
    after_open_gets(
        &server,
        format!("<message{attrs}/>").as_bytes(),
        "policy-violation",
    )
    .await;
    // Many namespace declarations count too.
    let decls: String = (0..1000).map(|i| format!(" xmlns:p{i}='urn:x'")).collect();
    after_open_gets(
        &server,
        format!("<message{decls}/>").as_bytes(),
        "policy-violation",
    )
    .await;
    server.assert_still_serves().await;
}

#[tokio::test]
async fn data_pipelined_after_starttls_is_a_policy_violation() {
    let server = TestServer::start().await;
    let mut c = opened(&server).await;
    c.send(
        "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>\
         <message to='victim@localhost'><body>injected</body></message>",
    )
    .await;
    c.expect_stream_error("policy-violation").await;
    // Even a lone whitespace byte after <starttls/> is refused: nothing may precede TLS.
    let mut c = opened(&server).await;
    c.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/><iq")
        .await;
    c.expect_stream_error("policy-violation").await;
    server.assert_still_serves().await;
}

#[tokio::test]
async fn stanzas_before_authentication_or_binding_are_not_authorized() {
    let server = TestServer::start().await;
    server.add_user("alice", "pw").await;
    // Before STARTTLS.
    let mut c = opened(&server).await;
    c.send("<message to='alice@localhost'><body>hi</body></message>")
        .await;
    c.expect_stream_error("not-authorized").await;
    // After TLS, before SASL.
    let mut c = opened(&server).await;
    c.starttls().await;
    c.send("<iq type='get' id='1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    c.expect_stream_error("not-authorized").await;
    // After SASL, before bind.
    let mut c = opened(&server).await;
    c.starttls().await;
    c.scram(starling_sasl::ScramHash::Sha256, false, "alice", "pw")
        .await
        .unwrap();
    c.send("<presence/>").await;
    c.expect_stream_error("not-authorized").await;
    // A SASL response outside an exchange.
    let mut c = opened(&server).await;
    c.starttls().await;
    c.send("<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>AAAA</response>")
        .await;
    c.expect_stream_error("not-authorized").await;
    server.assert_still_serves().await;
}

#[tokio::test]
async fn unknown_first_level_elements_are_unsupported_stanza_type() {
    let server = TestServer::start().await;
    server.add_user("alice", "pw").await;
    after_open_gets(&server, b"<foo/>", "unsupported-stanza-type").await;
    let mut alice = server.login("alice", "pw", "a").await;
    alice.send("<foo/>").await;
    alice.expect_stream_error("unsupported-stanza-type").await;
    // A message in another namespace is not a client stanza.
    let mut alice = server.login("alice", "pw", "a").await;
    alice
        .send("<message xmlns='jabber:server' to='alice@localhost'/>")
        .await;
    alice.expect_stream_error("unsupported-stanza-type").await;
    server.assert_still_serves().await;
}

#[tokio::test]
async fn a_spoofed_from_is_invalid_from() {
    let server = TestServer::start().await;
    server.add_user("alice", "pw").await;
    server.add_user("bob", "pw").await;
    let mut bob = server.login("bob", "pw", "b").await;
    bob.available().await;
    let mut alice = server.login("alice", "pw", "a").await;
    alice
        .send("<message from='bob@localhost/b' to='bob@localhost/b'><body>it is me, bob</body></message>")
        .await;
    alice.expect_stream_error("invalid-from").await;
    // Another resource of the same account is not this session either.
    let mut alice = server.login("alice", "pw", "a").await;
    alice
        .send("<message from='alice@localhost/other' to='bob@localhost/b'><body>x</body></message>")
        .await;
    alice.expect_stream_error("invalid-from").await;
    // Bob never saw a spoofed message.
    bob.expect_none(Duration::from_millis(200), |e| e.name() == "message")
        .await;
    server.assert_still_serves().await;
}

#[tokio::test]
async fn starttls_inside_tls_is_a_policy_violation() {
    let server = TestServer::start().await;
    let mut c = opened(&server).await;
    let features = c.starttls().await;
    assert!(features
        .get_child("starttls", starling_proto::ns::TLS)
        .is_none());
    c.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        .await;
    c.expect_stream_error("policy-violation").await;
    server.assert_still_serves().await;
}
