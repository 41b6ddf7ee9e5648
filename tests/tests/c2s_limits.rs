//! Transcripts: bounded resources (DESIGN principle 3): a slow consumer is cut off with
//! `policy-violation` while the client flooding it carries on, and the connection caps.

use std::time::Duration;

use starling_proto::framer::{Framer, Limits, StreamEvent};
use starling_proto::jid::Jid;
use starling_tests::*;

#[tokio::test]
async fn a_client_that_stops_reading_is_cut_off_and_the_flooder_is_unaffected() {
    let server = TestServer::start_with(|c| c.c2s.outbound_queue = 16).await;
    server.add_user("alice", "pw").await;
    server.add_user("bob", "pw").await;
    let mut bob = server.login("bob", "pw", "slow").await;
    bob.available().await;
    let bob_jid = Jid::parse("bob@localhost/slow").unwrap();
    let mut alice = server.login("alice", "pw", "flood").await;
    // Bob stops reading. Alice sends until the server gives up on him: his socket buffers
    // fill (his session's writes block), then his bounded queue, then he is closed. Without a bound this loop would run
    // to the end with the server holding everything in memory.
    let body = "x".repeat(16 * 1024);
    let mut sent = 0usize;
    let max = 4000; // 64 MiB: far beyond socket buffers plus a 16-stanza queue.
    while server.server().router().session(&bob_jid).is_some() {
        assert!(
            sent < max,
            "the slow consumer was never cut off after {sent} messages"
        );
        let stanza = format!(
            "<message to='bob@localhost/slow' type='chat' id='f{sent}'><body>{body}</body></message>"
        );
        tokio::time::timeout(STEP_TIMEOUT, alice.send(&stanza))
            .await
            .expect("the flooder's own stream never blocks");
        sent += 1;
        // Pace the flood with a round trip, so bob's session keeps draining his queue into
        // his socket until the socket is full and his writes block: the case where only the
        // close request can end his session.
        alice.ping_server().await;
    }
    // The flooder is unaffected: still bound, and answered (past any bounces for stanzas
    // that arrived after bob was gone).
    alice.ping_server().await;
    assert!(server
        .server()
        .router()
        .session(&Jid::parse("alice@localhost/flood").unwrap())
        .is_some());
    alice
        .send("<message to='alice@localhost/flood' id='still-here'><body>ok</body></message>")
        .await;
    let got = alice
        .recv_until(|e| e.name() == "message" && e.attr("id") == Some("still-here"))
        .await;
    assert_eq!(got.attr("from"), Some("alice@localhost/flood"));
    // Bob, reading again, finds what fitted in the buffers, then the stream error.
    let raw = bob.read_raw_until_closed(Duration::from_secs(10)).await;
    let text = String::from_utf8_lossy(&raw);
    let tail = &text[text.len().saturating_sub(400)..];
    assert!(
        tail.contains("<policy-violation xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>")
            || tail.contains("<policy-violation xmlns=\"urn:ietf:params:xml:ns:xmpp-streams\"/>"),
        "slow consumer closed with policy-violation; stream ended with: {tail}"
    );
    assert!(tail.trim_end().ends_with("</stream:stream>"), "{tail}");
    // What bob got is still a well-formed stream (no stanza written twice or cut in half
    // when the blocked write was abandoned): whole messages, in order, then the error.
    let mut framer = Framer::new(Limits {
        max_stanza_bytes: 1 << 20,
        max_buffered_bytes: 128 << 20,
        ..Limits::default()
    });
    framer.feed(
        b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>",
    );
    framer.feed(&raw);
    let mut ids = Vec::new();
    let mut error = None;
    loop {
        match framer.next_event().expect("bob's stream is well-formed") {
            Some(StreamEvent::Open(_)) => {}
            Some(StreamEvent::Stanza(el)) if el.name() == "message" => {
                ids.push(el.attr("id").unwrap_or_default().to_owned())
            }
            Some(StreamEvent::Stanza(el)) if el.name() == "error" => error = Some(el),
            Some(StreamEvent::Stanza(el)) => assert_eq!(el.name(), "presence"),
            Some(StreamEvent::Close) | None => break,
        }
    }
    assert!(error.is_some(), "stream error at the end");
    let expected: Vec<_> = (0..ids.len()).map(|i| format!("f{i}")).collect();
    assert_eq!(ids, expected, "each message once, in order");
    // Fewer messages reached bob than alice sent: the rest were not buffered for him.
    assert!(ids.len() < sent, "delivered {} of {sent}", ids.len());
    server.assert_still_serves().await;
}

#[tokio::test]
async fn the_per_ip_connection_cap_refuses_extra_connections() {
    let server = TestServer::start_with(|c| c.c2s.max_connections_per_ip = 3).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut c = Conn::connect(server.c2s).await;
        c.open("localhost").await;
        held.push(c);
    }
    let mut extra = Conn::connect(server.c2s).await;
    extra.expect_stream_error("policy-violation").await;
    // Direct TLS connections count too (and are simply closed).
    let mut extra = Conn::connect(server.direct_tls).await;
    assert!(extra
        .read_raw_until_closed(Duration::from_secs(5))
        .await
        .is_empty());
    // Closing one frees its slot.
    let mut one = held.pop().unwrap();
    one.close().await;
    drop(one);
    let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
    loop {
        let mut c = Conn::connect(server.c2s).await;
        c.send(&Conn::header("localhost")).await;
        match c.next_event().await {
            Some(starling_proto::framer::StreamEvent::Open(_)) => {
                let next = c.recv().await;
                if next.name() == "features" {
                    break;
                }
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(tokio::time::Instant::now() < deadline, "slot never freed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_global_connection_cap_refuses_extra_connections() {
    let server = TestServer::start_with(|c| c.c2s.max_connections = 2).await;
    let mut a = Conn::connect(server.c2s).await;
    a.open("localhost").await;
    let mut b = Conn::connect(server.c2s).await;
    b.open("localhost").await;
    let mut extra = Conn::connect(server.c2s).await;
    extra.expect_stream_error("policy-violation").await;
}

/// A bound session keeps its connection's slot for its whole life (the session runs in a task
/// of its own once negotiation ends; the slot goes with it), and gives it back when it ends.
#[tokio::test]
async fn bound_sessions_hold_their_connection_slots_until_they_end() {
    let server = TestServer::start_with(|c| c.c2s.max_connections = 2).await;
    server.add_user("alice", "pw-a").await;
    server.add_user("bob", "pw-b").await;
    let mut alice = server.login("alice", "pw-a", "phone").await;
    let bob = server.login("bob", "pw-b", "pc").await;
    // Both still bound: no room for a third connection.
    let mut extra = Conn::connect(server.c2s).await;
    extra.expect_stream_error("policy-violation").await;
    drop(bob);
    alice.ping_server().await;
    // bob's session ended: its slot is free again.
    let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
    loop {
        let mut c = Conn::connect(server.c2s).await;
        c.send(&Conn::header("localhost")).await;
        if let Some(starling_proto::framer::StreamEvent::Open(_)) = c.next_event().await {
            if c.recv().await.name() == "features" {
                break;
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "slot never freed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
