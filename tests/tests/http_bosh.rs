//! BOSH (XEP-0124 / XEP-0206) transcripts: session creation and login, chat with a TCP
//! client, rid ordering across a gap, repeated requests, out-of-window rids, unknown sids,
//! overactivity, terminate, CORS, and a churn run in which HTTP connections break while held
//! and not a stanza is lost or reordered.

mod http_support;

use std::time::Duration;

use http_support::*;

#[tokio::test]
async fn bosh_session_creation_attributes() {
    let (_server, addr) = start_http(|c| {
        c.http.bosh_max_wait_secs = 20;
        c.http.bosh_max_hold = 1;
    })
    .await;
    let (_b, resp) = Bosh::create(addr, 5, 300).await;
    let sid = resp.attr("sid").unwrap();
    assert_eq!(sid.len(), 32, "128 random bits in hex");
    assert_eq!(resp.attr("wait"), Some("20"), "wait capped at the maximum");
    assert_eq!(resp.attr("hold"), Some("1"), "hold capped at the maximum");
    assert_eq!(resp.attr("requests"), Some("2"));
    assert_eq!(resp.attr("from"), Some("localhost"));
    assert_eq!(resp.attr("ver"), Some("1.11"));
    assert!(resp.attr("inactivity").is_some() && resp.attr("polling").is_some());
    assert!(resp.attr("authid").is_some(), "the stream id");
    let features = resp
        .get_child("features", "http://etherx.jabber.org/streams")
        .expect("features in the creation response");
    let mechs: Vec<String> = features
        .get_child("mechanisms", "urn:ietf:params:xml:ns:xmpp-sasl")
        .unwrap()
        .children()
        .map(|m| m.text())
        .collect();
    assert!(mechs.contains(&"PLAIN".into()));
    assert!(!mechs.iter().any(|m| m.ends_with("-PLUS")));
    // Two sessions never share a sid.
    let (b2, _) = Bosh::create(addr, 1, 5).await;
    assert_ne!(b2.sid, sid);
}

#[tokio::test]
async fn bosh_creation_errors() {
    let (_server, addr) = start_http(|_| {}).await;
    let resp = bosh_post(
        addr,
        &format!("<body xmlns='{HTTPBIND}' rid='1' to='elsewhere.example' wait='5' hold='1'/>"),
    )
    .await;
    assert_eq!(resp.attr("type"), Some("terminate"));
    assert_eq!(resp.attr("condition"), Some("host-unknown"));
    let resp = bosh_post(
        addr,
        &format!("<body xmlns='{HTTPBIND}' rid='1' sid='0123456789abcdef0123456789abcdef'/>"),
    )
    .await;
    assert_eq!(
        resp.attr("condition"),
        Some("item-not-found"),
        "unknown sid"
    );
    let (status, _, _) = http(addr, "POST", "/http-bind", &[], "<body").await;
    assert_eq!(status, 400, "not XML");
    let resp = bosh_post(addr, &format!("<body xmlns='{HTTPBIND}' to='localhost'/>")).await;
    assert_eq!(resp.attr("condition"), Some("bad-request"), "no rid");
}

#[tokio::test]
async fn bosh_alice_chats_with_a_tcp_bob() {
    let (server, addr) = start_http(|_| {}).await;
    server.add_user("alice", "alice-pw").await;
    server.add_user("bob", "bob-pw").await;
    let (mut alice, jid) = Bosh::login(addr, "alice", "alice-pw", "bosh").await;
    assert_eq!(jid, "alice@localhost/bosh");
    let mut bob = server.login("bob", "bob-pw", "tcp").await;

    // Stanzas in the body without an explicit namespace are client stanzas too.
    alice
        .send(
            "",
            "<message to='bob@localhost/tcp' type='chat'><body>one</body></message>\
             <message xmlns='jabber:client' to='bob@localhost/tcp' type='chat'><body>two</body></message>",
        )
        .await;
    for want in ["one", "two"] {
        let m = bob.recv_until(|e| e.name() == "message").await;
        assert_eq!(m.attr("from"), Some("alice@localhost/bosh"));
        assert_eq!(m.get_child("body", "jabber:client").unwrap().text(), want);
    }

    bob.send("<message to='alice@localhost/bosh' type='chat'><body>back at you</body></message>")
        .await;
    let m = alice.poll_until(|e| e.name() == "message").await;
    assert_eq!(m.ns(), "jabber:client");
    assert_eq!(m.attr("from"), Some("bob@localhost/tcp"));
    assert_eq!(body_of(&m).as_deref(), Some("back at you"));

    // terminate: the payload is delivered, the session ends, the sid is forgotten.
    let resp = alice
        .send(
            "type='terminate'",
            "<presence type='unavailable' xmlns='jabber:client'/>",
        )
        .await;
    assert_eq!(resp.attr("type"), Some("terminate"), "{resp:?}");
    let full = starling_proto::jid::Jid::parse("alice@localhost/bosh").unwrap();
    server.wait_unbound(&full).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let resp = alice.send("", "").await;
    assert_eq!(resp.attr("condition"), Some("item-not-found"));
}

#[tokio::test]
async fn bosh_requests_are_processed_in_rid_order_across_a_gap() {
    let (server, addr) = start_http(|_| {}).await;
    server.add_user("alice", "alice-pw").await;
    server.add_user("bob", "bob-pw").await;
    let (mut alice, _) = Bosh::login(addr, "alice", "alice-pw", "bosh").await;
    let mut bob = server.login("bob", "bob-pw", "tcp").await;
    let (_, first) = alice.body(
        "",
        "<message xmlns='jabber:client' to='bob@localhost/tcp'><body>first</body></message>",
    );
    let (_, second) = alice.body(
        "",
        "<message xmlns='jabber:client' to='bob@localhost/tcp'><body>second</body></message>",
    );
    // The later rid arrives first and must wait for the gap.
    let later = tokio::spawn(async move { bosh_post(addr, &second).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    bob.expect_none(Duration::from_millis(200), |e| e.name() == "message")
        .await;
    let earlier = tokio::spawn(async move { bosh_post(addr, &first).await });
    for want in ["first", "second"] {
        let m = bob.recv_until(|e| e.name() == "message").await;
        assert_eq!(m.get_child("body", "jabber:client").unwrap().text(), want);
    }
    let (a, b) = (earlier.await.unwrap(), later.await.unwrap());
    assert_ne!(a.attr("type"), Some("terminate"));
    assert_ne!(b.attr("type"), Some("terminate"));
}

#[tokio::test]
async fn bosh_repeated_request_gets_the_same_answer_and_is_not_reprocessed() {
    let (server, addr) = start_http(|_| {}).await;
    server.add_user("alice", "alice-pw").await;
    server.add_user("bob", "bob-pw").await;
    let (mut alice, _) = Bosh::login(addr, "alice", "alice-pw", "bosh").await;
    let mut bob = server.login("bob", "bob-pw", "tcp").await;
    bob.send("<message to='alice@localhost/bosh'><body>for alice</body></message>")
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (_, req) = alice.body(
        "",
        "<message xmlns='jabber:client' to='bob@localhost/tcp'><body>once</body></message>",
    );
    let first = bosh_post(addr, &req).await;
    assert!(
        first
            .children()
            .any(|c| body_of(c).as_deref() == Some("for alice")),
        "{first:?}"
    );
    // The client lost the response: it repeats the request and gets the same answer...
    let again = bosh_post(addr, &req).await;
    assert_eq!(
        starling_proto::writer::element_to_string(&first),
        starling_proto::writer::element_to_string(&again)
    );
    // ...and its payload is not sent twice.
    let m = bob.recv_until(|e| e.name() == "message").await;
    assert_eq!(m.get_child("body", "jabber:client").unwrap().text(), "once");
    bob.expect_none(Duration::from_millis(500), |e| e.name() == "message")
        .await;
    // The session goes on.
    let resp = alice.send("", "").await;
    assert_ne!(resp.attr("type"), Some("terminate"));
}

#[tokio::test]
async fn bosh_rid_outside_the_window_ends_the_session() {
    let (server, addr) = start_http(|_| {}).await;
    server.add_user("alice", "alice-pw").await;
    let (mut alice, _) = Bosh::login(addr, "alice", "alice-pw", "bosh").await;
    // requests = 2, so the next rid + 2 is beyond the window.
    alice.rid += 2;
    let resp = alice.send("", "").await;
    assert_eq!(resp.attr("type"), Some("terminate"));
    assert_eq!(resp.attr("condition"), Some("item-not-found"));
    let full = starling_proto::jid::Jid::parse("alice@localhost/bosh").unwrap();
    server.wait_unbound(&full).await;
}

#[tokio::test]
async fn bosh_old_rid_no_longer_cached_ends_the_session() {
    let (server, addr) = start_http(|_| {}).await;
    server.add_user("alice", "alice-pw").await;
    let (mut alice, _) = Bosh::login(addr, "alice", "alice-pw", "bosh").await;
    // The creation rid was answered long ago (only the last `requests` answers are kept).
    let resp = bosh_post(
        addr,
        &format!(
            "<body xmlns='{HTTPBIND}' rid='1000000' sid='{}'/>",
            alice.sid
        ),
    )
    .await;
    assert_eq!(resp.attr("condition"), Some("item-not-found"));
    let resp = alice.send("", "").await;
    assert_eq!(resp.attr("type"), Some("terminate"));
}

#[tokio::test]
async fn bosh_polling_too_often_is_overactivity() {
    let (_server, addr) = start_http(|_| {}).await;
    let (mut b, _) = Bosh::create(addr, 0, 5).await;
    let first = b.send("", "").await;
    assert_ne!(first.attr("type"), Some("terminate"), "{first:?}");
    let second = b.send("", "").await;
    assert_eq!(second.attr("type"), Some("terminate"));
    assert_eq!(second.attr("condition"), Some("policy-violation"));
}

#[tokio::test]
async fn bosh_inactive_session_ends() {
    let (server, addr) = start_http(|c| c.http.bosh_inactivity_secs = 1).await;
    server.add_user("alice", "alice-pw").await;
    let (mut alice, _) = Bosh::login(addr, "alice", "alice-pw", "bosh").await;
    let full = starling_proto::jid::Jid::parse("alice@localhost/bosh").unwrap();
    assert!(server.server().router().session(&full).is_some());
    // No request outstanding for more than `inactivity` seconds.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    server.wait_unbound(&full).await;
    let resp = alice.send("", "").await;
    assert_eq!(resp.attr("type"), Some("terminate"));
}

#[tokio::test]
async fn bosh_cors_and_origins() {
    let (_server, addr) = start_http(|c| {
        c.http.allowed_origins = vec!["http://app.example".into()];
    })
    .await;
    let (status, headers, _) = http(
        addr,
        "OPTIONS",
        "/http-bind",
        &[
            ("Origin", "http://app.example"),
            ("Access-Control-Request-Method", "POST"),
            ("Access-Control-Request-Headers", "content-type"),
        ],
        "",
    )
    .await;
    assert_eq!(status, 204);
    assert_eq!(
        header(&headers, "access-control-allow-origin"),
        Some("http://app.example")
    );
    assert!(header(&headers, "access-control-allow-methods").is_some_and(|m| m.contains("POST")));
    assert!(header(&headers, "access-control-allow-headers")
        .is_some_and(|m| m.to_ascii_lowercase().contains("content-type")));
    let body = format!("<body xmlns='{HTTPBIND}' rid='5' to='localhost' wait='1' hold='1'/>");
    let (status, headers, _) = http(
        addr,
        "POST",
        "/http-bind",
        &[("Origin", "http://app.example")],
        &body,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        header(&headers, "access-control-allow-origin"),
        Some("http://app.example")
    );
    let (status, _, _) = http(
        addr,
        "POST",
        "/http-bind",
        &[("Origin", "http://evil.example")],
        &body,
    )
    .await;
    assert_eq!(status, 403);
    let (status, _, _) = http(
        addr,
        "OPTIONS",
        "/http-bind",
        &[("Origin", "http://evil.example")],
        "",
    )
    .await;
    assert_eq!(status, 403);
}

/// HTTP connections that break while their request is held: the client repeats the rid on a
/// new connection (XEP-0124 §14.3) and every stanza arrives once, in order.
#[tokio::test]
async fn bosh_session_survives_connection_churn() {
    let (server, addr) = start_http(|_| {}).await;
    server.add_user("alice", "alice-pw").await;
    server.add_user("bob", "bob-pw").await;
    let (mut alice, _) = Bosh::login(addr, "alice", "alice-pw", "bosh").await;
    let mut bob = server.login("bob", "bob-pw", "tcp").await;
    let total = 30;
    let sender = tokio::spawn(async move {
        for i in 0..total {
            bob.send(&format!(
                "<message to='alice@localhost/bosh' type='chat'><body>m{i}</body></message>"
            ))
            .await;
            tokio::time::sleep(Duration::from_millis(15)).await;
        }
        bob
    });
    let mut got: Vec<String> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut n = 0u32;
    while got.len() < total && tokio::time::Instant::now() < deadline {
        n += 1;
        let (_, req) = alice.body("", "");
        if n.is_multiple_of(3) {
            // Send the request and drop the connection before the answer comes.
            use tokio::io::AsyncWriteExt;
            let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let raw = format!(
                "POST /http-bind HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\n\r\n{req}",
                req.len()
            );
            tcp.write_all(raw.as_bytes()).await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
            drop(tcp);
        }
        // (Again) on a fresh connection: the same rid.
        let resp = bosh_post(addr, &req).await;
        assert_ne!(resp.attr("type"), Some("terminate"), "{resp:?}");
        for c in resp.children() {
            if let Some(b) = body_of(c) {
                got.push(b);
            }
        }
    }
    let want: Vec<String> = (0..total).map(|i| format!("m{i}")).collect();
    assert_eq!(got, want, "every message once, in order");
    let _bob = sender.await.unwrap();
}

fn sha1_hex(s: &str) -> String {
    use sha1::Digest;
    sha1::Sha1::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// XEP-0124 §15: with `newkey` at creation, each request must carry the next key of the
/// sequence; a request with a wrong key (someone who learnt the sid) ends the session.
#[tokio::test]
async fn bosh_key_sequence_protects_the_session() {
    let (_server, addr) = start_http(|_| {}).await;
    let k0 = "seed-of-the-key-sequence".to_owned();
    let k1 = sha1_hex(&k0);
    let k2 = sha1_hex(&k1);
    let k3 = sha1_hex(&k2);
    let resp = bosh_post(
        addr,
        &format!(
            "<body xmlns='{HTTPBIND}' rid='100' to='localhost' wait='1' hold='1' newkey='{k3}'/>"
        ),
    )
    .await;
    let sid = resp.attr("sid").unwrap().to_owned();
    let req = |rid: u32, key: &str| {
        format!("<body xmlns='{HTTPBIND}' rid='{rid}' sid='{sid}' key='{key}'/>")
    };
    let r = bosh_post(addr, &req(101, &k2)).await;
    assert_ne!(r.attr("type"), Some("terminate"), "{r:?}");
    // A repeat must carry the same key; with it, it gets the same answer.
    let again = bosh_post(addr, &req(101, &k2)).await;
    assert_ne!(again.attr("type"), Some("terminate"), "{again:?}");
    let r = bosh_post(addr, &req(102, &k1)).await;
    assert_ne!(r.attr("type"), Some("terminate"), "{r:?}");
    // The right rid with a wrong key.
    let r = bosh_post(addr, &req(103, "0123456789abcdef0123456789abcdef01234567")).await;
    assert_eq!(r.attr("type"), Some("terminate"));
    assert_eq!(r.attr("condition"), Some("item-not-found"));
    let r = bosh_post(addr, &req(104, &k0)).await;
    assert_eq!(r.attr("type"), Some("terminate"), "the session is over");
}

/// A stream error on the session's stream (here: the resource is taken over by a new TCP
/// login) ends the BOSH session with `remote-stream-error` and the error inside (XEP-0206).
#[tokio::test]
async fn bosh_stream_error_becomes_remote_stream_error() {
    let (server, addr) = start_http(|_| {}).await;
    server.add_user("alice", "alice-pw").await;
    let (mut alice, _) = Bosh::login(addr, "alice", "alice-pw", "same").await;
    let _tcp = server.login("alice", "alice-pw", "same").await;
    let mut end = None;
    for _ in 0..5 {
        let resp = alice.send("", "").await;
        if resp.attr("type") == Some("terminate") {
            end = Some(resp);
            break;
        }
    }
    let end = end.expect("the BOSH session was terminated");
    assert_eq!(
        end.attr("condition"),
        Some("remote-stream-error"),
        "{end:?}"
    );
    let err = end
        .get_child("error", "http://etherx.jabber.org/streams")
        .expect("the stream error inside");
    assert!(err.has_child("conflict", "urn:ietf:params:xml:ns:xmpp-streams"));
}
