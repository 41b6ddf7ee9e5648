//! XMPP over WebSocket (RFC 7395) transcripts: login and chat with a TCP client, framing
//! (`<open/>`, `<close/>`, one element per message, explicit namespaces), framing errors,
//! the subprotocol and origin checks, see-other-uri, and host-meta discovery (XEP-0156).

mod http_support;

use http_support::*;

#[tokio::test]
async fn websocket_alice_chats_with_a_tcp_bob() {
    let (server, addr) = start_http(|_| {}).await;
    server.add_user("alice", "alice-pw").await;
    server.add_user("bob", "bob-pw").await;
    let url = format!("ws://{addr}/xmpp-websocket");
    let mut alice = ws_connect(&url, Some("xmpp"), None).await.expect("upgrade");

    // Pre-auth features: PLAIN (the pipe counts as secure), no STARTTLS, no -PLUS (no TLS
    // state to bind to).
    let features = alice.open().await;
    assert!(!features.has_child("starttls", "urn:ietf:params:xml:ns:xmpp-tls"));
    let mechs: Vec<String> = features
        .get_child("mechanisms", "urn:ietf:params:xml:ns:xmpp-sasl")
        .unwrap()
        .children()
        .map(|m| m.text())
        .collect();
    assert!(mechs.contains(&"PLAIN".to_owned()), "{mechs:?}");
    assert!(!mechs.iter().any(|m| m.ends_with("-PLUS")), "{mechs:?}");
    alice
        .send(&format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{}</auth>",
            plain_b64("alice", "alice-pw")
        ))
        .await;
    assert!(alice
        .recv()
        .await
        .is("success", "urn:ietf:params:xml:ns:xmpp-sasl"));
    alice.open().await;
    alice
        .send("<iq type='set' id='b1' xmlns='jabber:client'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>web</resource></bind></iq>")
        .await;
    let bound = alice.recv().await;
    assert_eq!(bound.attr("type"), Some("result"));
    let mut bob = server.login("bob", "bob-pw", "tcp").await;

    // alice -> bob: the TCP client receives an ordinary stanza, stamped from alice's session.
    alice
        .send("<message xmlns='jabber:client' to='bob@localhost/tcp' type='chat'><body>hello from the browser</body></message>")
        .await;
    let m = bob.recv_until(|e| e.name() == "message").await;
    assert_eq!(m.attr("from"), Some("alice@localhost/web"));
    assert_eq!(
        m.get_child("body", "jabber:client").unwrap().text(),
        "hello from the browser"
    );

    // bob -> alice: one WebSocket message per stanza, with its namespace declared.
    bob.send(
        "<message to='alice@localhost/web' type='chat'><body>hi &amp; welcome</body></message>",
    )
    .await;
    let text = loop {
        let t = alice.recv_text().await.expect("message");
        if t.starts_with("<message") {
            break t;
        }
    };
    assert!(text.contains("xmlns='jabber:client'"), "{text}");
    let m = parse(&text);
    assert_eq!(m.attr("from"), Some("bob@localhost/tcp"));
    assert_eq!(body_of(&m).as_deref(), Some("hi & welcome"));

    // <close/> ends the session: the server answers <close/> and closes the socket.
    alice.send(&format!("<close xmlns='{FRAMING}'/>")).await;
    let close = alice.recv_until(|e| e.is("close", FRAMING)).await;
    assert!(close.is("close", FRAMING));
    assert!(alice.recv_text().await.is_none());
    let jid = starling_proto::jid::Jid::parse("alice@localhost/web").unwrap();
    server.wait_unbound(&jid).await;
}

async fn opened(addr: std::net::SocketAddr) -> Ws {
    let mut ws = ws_connect(&format!("ws://{addr}/xmpp-websocket"), Some("xmpp"), None)
        .await
        .expect("upgrade");
    ws.open().await;
    ws
}

#[tokio::test]
async fn websocket_framing_errors_end_the_stream() {
    let (server, addr) = start_http(|_| {}).await;
    // A partial element.
    let mut ws = opened(addr).await;
    ws.send("<message xmlns='jabber:client'><body>").await;
    ws.expect_stream_error("not-well-formed").await;
    // Two elements in one message.
    let mut ws = opened(addr).await;
    ws.send("<presence xmlns='jabber:client'/><presence xmlns='jabber:client'/>")
        .await;
    ws.expect_stream_error("not-well-formed").await;
    // An attempt to close the stream inside a message.
    let mut ws = opened(addr).await;
    ws.send("</stream:stream><presence/>").await;
    ws.expect_stream_error("not-well-formed").await;
    // A binary message.
    let mut ws = opened(addr).await;
    ws.send_binary(b"<presence/>").await;
    ws.expect_stream_error("not-well-formed").await;
    // A stanza before <open/>: the c2s stream sees no header.
    let mut ws = ws_connect(&format!("ws://{addr}/xmpp-websocket"), Some("xmpp"), None)
        .await
        .unwrap();
    ws.send("<presence xmlns='jabber:client'/>").await;
    let mut saw_error = false;
    while let Some(t) = ws.recv_text().await {
        if t.contains("stream:error") {
            saw_error = true;
        }
    }
    assert!(saw_error, "a stanza before <open/> is a stream error");
    // An XML declaration (a processing instruction inside the stream).
    let mut ws = opened(addr).await;
    ws.send("<?xml version='1.0'?><presence xmlns='jabber:client'/>")
        .await;
    ws.expect_stream_error("restricted-xml").await;
    server.assert_still_serves().await;
}

#[tokio::test]
async fn websocket_oversized_message_is_refused() {
    let (_server, addr) = start_http(|c| c.c2s.max_stanza_bytes = 4096).await;
    let mut ws = opened(addr).await;
    let big = format!(
        "<message xmlns='jabber:client'><body>{}</body></message>",
        "x".repeat(10_000)
    );
    ws.send(&big).await;
    ws.expect_stream_error("policy-violation").await;
}

#[tokio::test]
async fn websocket_handshake_checks() {
    let (_server, addr) = start_http(|c| {
        c.http.allowed_origins = vec!["https://chat.example.org".into()];
    })
    .await;
    let url = format!("ws://{addr}/xmpp-websocket");
    assert_eq!(
        ws_connect(&url, None, None).await.err(),
        Some(400),
        "no xmpp subprotocol"
    );
    assert_eq!(
        ws_connect(&url, Some("chat"), None).await.err(),
        Some(400),
        "another subprotocol"
    );
    assert_eq!(
        ws_connect(&url, Some("xmpp"), Some("https://evil.example"))
            .await
            .err(),
        Some(403),
        "a disallowed origin"
    );
    let mut ok = ws_connect(&url, Some("xmpp"), Some("https://chat.example.org"))
        .await
        .expect("an allowed origin");
    ok.open().await;
}

#[tokio::test]
async fn websocket_see_other_uri() {
    let (_server, addr) = start_http(|c| {
        c.http.websocket_see_other_uri = Some("wss://other.example.org/xmpp-websocket".into());
    })
    .await;
    let mut ws = ws_connect(&format!("ws://{addr}/xmpp-websocket"), Some("xmpp"), None)
        .await
        .unwrap();
    ws.send(&format!(
        "<open xmlns='{FRAMING}' to='localhost' version='1.0'/>"
    ))
    .await;
    assert!(ws.recv().await.is("open", FRAMING));
    let close = ws.recv().await;
    assert!(close.is("close", FRAMING));
    assert_eq!(
        close.attr("see-other-uri"),
        Some("wss://other.example.org/xmpp-websocket")
    );
    assert!(ws.recv_text().await.is_none());
}

#[tokio::test]
async fn websocket_ping_timeout_disconnects_a_silent_client() {
    let (server, addr) = start_http(|c| c.http.websocket_ping_secs = 1).await;
    server.add_user("alice", "pw").await;
    // tungstenite answers pings only while the stream is read: a client that never reads
    // never pongs, and is disconnected after one interval without a word.
    let ws = ws_connect(&format!("ws://{addr}/xmpp-websocket"), Some("xmpp"), None)
        .await
        .unwrap();
    let start = std::time::Instant::now();
    let mut ws = ws;
    // Reading answers pings, so read only after the deadline has passed.
    tokio::time::sleep(std::time::Duration::from_millis(2600)).await;
    let mut closed = false;
    for _ in 0..10 {
        match ws.recv_text().await {
            None => {
                closed = true;
                break;
            }
            Some(_) => continue,
        }
    }
    assert!(closed, "the silent client was disconnected");
    assert!(start.elapsed() < std::time::Duration::from_secs(8));
}

#[tokio::test]
async fn host_meta_announces_websocket_and_bosh() {
    let (_server, addr) = start_http(|_| {}).await;
    let (status, headers, body) = http(addr, "GET", "/.well-known/host-meta", &[], "").await;
    assert_eq!(status, 200);
    assert_eq!(
        header(&headers, "content-type"),
        Some("application/xrd+xml")
    );
    assert_eq!(header(&headers, "access-control-allow-origin"), Some("*"));
    let xrd = parse(&body);
    let links: Vec<(String, String)> = xrd
        .children()
        .map(|l| {
            (
                l.attr("rel").unwrap().to_owned(),
                l.attr("href").unwrap().to_owned(),
            )
        })
        .collect();
    assert!(links.contains(&(
        "urn:xmpp:alt-connections:websocket".into(),
        format!("ws://{addr}/xmpp-websocket")
    )));
    assert!(links.contains(&(
        "urn:xmpp:alt-connections:xbosh".into(),
        format!("http://{addr}/http-bind")
    )));
    let (status, headers, body) = http(addr, "GET", "/.well-known/host-meta.json", &[], "").await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "content-type"), Some("application/json"));
    assert!(
        body.contains(&format!("\"href\":\"ws://{addr}/xmpp-websocket\"")),
        "{body}"
    );
    assert!(body.contains("urn:xmpp:alt-connections:xbosh"), "{body}");
}

#[tokio::test]
async fn host_meta_uses_the_public_url() {
    let (_server, addr) = start_http(|c| {
        c.http.public_url = Some("https://chat.example.org".into());
    })
    .await;
    let (_, _, body) = http(addr, "GET", "/.well-known/host-meta.json", &[], "").await;
    assert!(
        body.contains("wss://chat.example.org/xmpp-websocket"),
        "{body}"
    );
    assert!(
        body.contains("https://chat.example.org/http-bind"),
        "{body}"
    );
}

/// A WebSocket session is an ordinary session: carbons (XEP-0280) and the archive (XEP-0313)
/// work as over TCP.
#[tokio::test]
async fn websocket_session_gets_carbons_and_archive() {
    let (server, addr) = start_http(|_| {}).await;
    server.add_user("alice", "alice-pw").await;
    server.add_user("bob", "bob-pw").await;
    let mut web = ws_connect(&format!("ws://{addr}/xmpp-websocket"), Some("xmpp"), None)
        .await
        .unwrap();
    web.login("alice", "alice-pw", "web").await;
    web.send(
        "<iq xmlns='jabber:client' type='set' id='c1'><enable xmlns='urn:xmpp:carbons:2'/></iq>",
    )
    .await;
    let r = web.recv_until(|e| e.attr("id") == Some("c1")).await;
    assert_eq!(r.attr("type"), Some("result"), "{r:?}");
    let mut tcp = server.login("alice", "alice-pw", "tcp").await;
    tcp.available().await;
    let mut bob = server.login("bob", "bob-pw", "b").await;
    bob.send(
        "<message to='alice@localhost/tcp' type='chat'><body>to the other device</body></message>",
    )
    .await;
    let carbon = web.recv_until(|e| e.name() == "message").await;
    let received = carbon
        .get_child("received", "urn:xmpp:carbons:2")
        .unwrap_or_else(|| panic!("a carbon copy: {carbon:?}"));
    let fwd = received
        .get_child("forwarded", "urn:xmpp:forward:0")
        .and_then(|f| f.get_child("message", "jabber:client"))
        .expect("forwarded message");
    assert_eq!(body_of(fwd).as_deref(), Some("to the other device"));
    tcp.recv_until(|e| e.name() == "message").await;

    web.send("<iq xmlns='jabber:client' type='set' id='q1'><query xmlns='urn:xmpp:mam:2' queryid='x'/></iq>")
        .await;
    let mut archived = Vec::new();
    loop {
        let el = web.recv().await;
        if el.name() == "iq" && el.attr("id") == Some("q1") {
            assert_eq!(el.attr("type"), Some("result"), "{el:?}");
            break;
        }
        if let Some(r) = el.get_child("result", "urn:xmpp:mam:2") {
            let m = r
                .get_child("forwarded", "urn:xmpp:forward:0")
                .and_then(|f| f.get_child("message", "jabber:client"))
                .expect("archived message");
            archived.extend(body_of(m));
        }
    }
    assert_eq!(archived, vec!["to the other device".to_owned()]);
}
