//! Transcripts: resource binding (RFC 6120 §7): client-chosen and server-generated resources,
//! invalid resources, the per-account resource cap, the conflict policies, the RFC 3921
//! session no-op, and a second bind on a bound stream.

use std::time::Duration;

use minidom::Element;
use starling_proto::ns;
use starling_sasl::ScramHash;
use starling_tests::*;

/// Authenticated (SCRAM-SHA-256 over STARTTLS), not yet bound. Returns the features.
async fn authenticated(server: &TestServer, user: &str, pw: &str) -> (Conn, Element) {
    let mut c = Conn::connect(server.c2s).await;
    c.open("localhost").await;
    c.starttls().await;
    let features = c.scram(ScramHash::Sha256, false, user, pw).await.unwrap();
    (c, features)
}

async fn bind_raw(c: &mut Conn, id: &str, inner: &str) -> Element {
    c.send(&format!(
        "<iq type='set' id='{id}'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>{inner}</bind></iq>"
    ))
    .await;
    c.recv_until(|e| e.name() == "iq" && e.attr("id") == Some(id))
        .await
}

#[tokio::test]
async fn features_after_sasl_offer_bind_and_an_optional_session() {
    let server = TestServer::start().await;
    server.add_user("alice", "pw").await;
    let (_, features) = authenticated(&server, "alice", "pw").await;
    assert!(features.get_child("bind", ns::BIND).is_some());
    let session = features.get_child("session", ns::SESSION).expect("session");
    assert!(session.get_child("optional", ns::SESSION).is_some());
    assert!(features.get_child("starttls", ns::TLS).is_none());
}

#[tokio::test]
async fn client_chosen_and_server_generated_resources() {
    let server = TestServer::start().await;
    server.add_user("alice", "pw").await;
    let (mut c, _) = authenticated(&server, "alice", "pw").await;
    let jid = c.bind(Some("Balcony Phone")).await;
    assert_eq!(jid.as_str(), "alice@localhost/Balcony Phone");
    assert!(server.server().router().session(&jid).is_some());

    let (mut c1, _) = authenticated(&server, "alice", "pw").await;
    let (mut c2, _) = authenticated(&server, "alice", "pw").await;
    let j1 = c1.bind(None).await;
    let j2 = c2.bind(None).await;
    assert_eq!(j1.bare().as_str(), "alice@localhost");
    let (r1, r2) = (j1.resource().unwrap(), j2.resource().unwrap());
    assert!(!r1.is_empty() && !r2.is_empty());
    assert_ne!(r1, r2, "generated resources are unique");
    // An empty <resource/> also means "choose one for me".
    let (mut c3, _) = authenticated(&server, "alice", "pw").await;
    let result = bind_raw(&mut c3, "b3", "<resource/>").await;
    assert_eq!(result.attr("type"), Some("result"), "{result:?}");
    // The bound sessions all work.
    for c in [&mut c, &mut c1, &mut c2, &mut c3] {
        c.ping_server().await;
    }
    assert_eq!(server.server().router().session_count(), 4);
}

#[tokio::test]
async fn an_invalid_resource_is_bad_request_and_the_stream_may_retry() {
    let server = TestServer::start().await;
    server.add_user("alice", "pw").await;
    let (mut c, _) = authenticated(&server, "alice", "pw").await;
    // Longer than the 1023 bytes RFC 7622 allows.
    let long = "r".repeat(1100);
    let answer = bind_raw(&mut c, "b1", &format!("<resource>{long}</resource>")).await;
    assert_eq!(answer.attr("type"), Some("error"), "{answer:?}");
    assert_eq!(
        stanza_error_condition(&answer).as_deref(),
        Some("bad-request")
    );
    // A control character that XML allows but OpaqueString does not (U+0085).
    let answer = bind_raw(&mut c, "b2", "<resource>a\u{85}b</resource>").await;
    assert_eq!(
        stanza_error_condition(&answer).as_deref(),
        Some("bad-request")
    );
    // A bind IQ of type get is not a bind.
    c.send("<iq type='get' id='b3'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>")
        .await;
    c.expect_stream_error("not-authorized").await;
    let (mut c, _) = authenticated(&server, "alice", "pw").await;
    let answer = bind_raw(&mut c, "b4", "<resource>a\u{85}b</resource>").await;
    assert_eq!(
        stanza_error_condition(&answer).as_deref(),
        Some("bad-request")
    );
    let jid = c.bind(Some("fine")).await;
    assert_eq!(jid.as_str(), "alice@localhost/fine");
}

#[tokio::test]
async fn the_resource_cap_gives_resource_constraint() {
    let server = TestServer::start_with(|c| c.c2s.max_resources_per_account = 2).await;
    server.add_user("alice", "pw").await;
    server.add_user("bob", "pw").await;
    let _a1 = server.login("alice", "pw", "one").await;
    let _a2 = server.login("alice", "pw", "two").await;
    let (mut c, _) = authenticated(&server, "alice", "pw").await;
    let answer = bind_raw(&mut c, "b3", "<resource>three</resource>").await;
    assert_eq!(
        stanza_error_condition(&answer).as_deref(),
        Some("resource-constraint")
    );
    let answer = bind_raw(&mut c, "b4", "").await;
    assert_eq!(
        stanza_error_condition(&answer).as_deref(),
        Some("resource-constraint")
    );
    // Rebinding an existing resource replaces it rather than counting as a third.
    let kicked_by = bind_raw(&mut c, "b5", "<resource>two</resource>").await;
    assert_eq!(kicked_by.attr("type"), Some("result"), "{kicked_by:?}");
    // Other accounts are not affected.
    let _b = server.login("bob", "pw", "one").await;
}

#[tokio::test]
async fn the_session_iq_is_answered_and_a_second_bind_is_refused() {
    let server = TestServer::start().await;
    server.add_user("alice", "pw").await;
    let mut c = server.login("alice", "pw", "a").await;
    c.send("<iq type='set' id='sess'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>")
        .await;
    let result = c.recv_until(|e| e.attr("id") == Some("sess")).await;
    assert_eq!(result.attr("type"), Some("result"), "{result:?}");
    assert_eq!(result.children().count(), 0);
    // A second bind on a bound stream.
    let answer = bind_raw(&mut c, "again", "<resource>other</resource>").await;
    assert_eq!(answer.attr("type"), Some("error"), "{answer:?}");
    assert!(
        matches!(
            stanza_error_condition(&answer).as_deref(),
            Some("not-allowed" | "bad-request")
        ),
        "{answer:?}"
    );
    let other = starling_proto::jid::Jid::parse("alice@localhost/other").unwrap();
    assert!(server.server().router().session(&other).is_none());
    // The session goes on.
    c.ping_server().await;
}

#[tokio::test]
async fn binding_a_taken_resource_kicks_the_old_session_with_conflict() {
    let server = TestServer::start().await;
    server.add_user("alice", "pw").await;
    let mut old = server.login("alice", "pw", "phone").await;
    let mut new = server.login("alice", "pw", "phone").await;
    old.expect_stream_error("conflict").await;
    new.ping_server().await;
    // Stanzas to the full JID reach the new session.
    new.send("<message to='alice@localhost/phone' id='self'><body>me</body></message>")
        .await;
    let got = new.recv_until(|e| e.name() == "message").await;
    assert_eq!(got.attr("id"), Some("self"));
    assert_eq!(server.server().router().session_count(), 1);
    server.assert_still_serves().await;
}

#[tokio::test]
async fn refuse_new_policy_gives_a_conflict_iq_error() {
    let server = TestServer::start_with(|c| {
        c.c2s.resource_conflict = starling_core::config::ResourceConflict::RefuseNew
    })
    .await;
    server.add_user("alice", "pw").await;
    let mut old = server.login("alice", "pw", "phone").await;
    let (mut c, _) = authenticated(&server, "alice", "pw").await;
    let answer = bind_raw(&mut c, "b1", "<resource>phone</resource>").await;
    assert_eq!(stanza_error_condition(&answer).as_deref(), Some("conflict"));
    // The old session is untouched, and the new stream can bind something else.
    old.expect_none(Duration::from_millis(100), |e| e.name() == "error")
        .await;
    old.ping_server().await;
    let jid = c.bind(Some("laptop")).await;
    assert_eq!(jid.as_str(), "alice@localhost/laptop");
}

#[tokio::test]
async fn a_session_taking_over_a_resource_stays_available() {
    // The replaced session's goodbye (unavailable presence) must not overtake the new
    // session's presence: bob's message to alice's bare JID reaches the new session.
    let server = TestServer::start().await;
    server.add_user("alice", "pw").await;
    server.add_user("bob", "pw").await;
    let mut old = server.login("alice", "pw", "phone").await;
    old.available().await;
    let mut new = server.login("alice", "pw", "phone").await;
    new.available().await;
    old.expect_stream_error("conflict").await;
    let resources = server
        .server()
        .router()
        .resources(&starling_proto::jid::Jid::parse("alice@localhost").unwrap());
    assert_eq!(resources.len(), 1);
    assert!(
        resources[0].available,
        "the new session must stay available"
    );
    let mut bob = server.login("bob", "pw", "pc").await;
    bob.send("<message to='alice@localhost' type='chat' id='m1'><body>hi</body></message>")
        .await;
    let got = new.recv_until(|e| e.name() == "message").await;
    assert_eq!(got.attr("id"), Some("m1"));
}
