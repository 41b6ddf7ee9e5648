//! External components (XEP-0114): handshake, routing both ways, and what a component may not
//! do. The component side is a raw TCP transcript; the user side a normal client session.

use std::net::SocketAddr;
use std::time::Duration;

use starling_component::{handshake_digest, NS_COMPONENT};
use starling_core::config::ComponentEntry;
use starling_proto::framer::StreamEvent;
use starling_tests::{stanza_error_condition, Conn, TestServer};

const DOMAIN: &str = "bots.localhost";
const SECRET: &str = "a-long-enough-component-secret";

async fn server() -> (TestServer, SocketAddr) {
    let srv = TestServer::start_with(|c| {
        c.components.listen = "127.0.0.1:0".parse().unwrap();
        c.components.list = vec![ComponentEntry {
            domain: DOMAIN.into(),
            secret: SECRET.into(),
        }];
    })
    .await;
    srv.add_user("alice", "secret").await;
    let addr = srv.component_address().expect("component listener");
    (srv, addr)
}

/// Opens a component stream to `domain`; returns the connection and the stream id.
async fn open(addr: SocketAddr, domain: &str) -> (Conn, String) {
    let mut c = Conn::connect(addr).await;
    c.send(&format!(
        "<stream:stream xmlns='{NS_COMPONENT}' xmlns:stream='http://etherx.jabber.org/streams' to='{domain}'>"
    ))
    .await;
    match c.next_event().await {
        Some(StreamEvent::Open(h)) => {
            assert_eq!(h.default_ns.as_deref(), Some(NS_COMPONENT));
            let id = h.id.expect("stream id");
            (c, id)
        }
        other => panic!("expected a stream header, got {other:?}"),
    }
}

async fn connect_component(addr: SocketAddr) -> Conn {
    let (mut c, id) = open(addr, DOMAIN).await;
    c.send(&format!(
        "<handshake>{}</handshake>",
        handshake_digest(&id, SECRET)
    ))
    .await;
    let ok = c.recv().await;
    assert!(ok.is("handshake", NS_COMPONENT), "{ok:?}");
    assert!(ok.text().is_empty());
    c
}

#[tokio::test]
async fn messages_and_iqs_flow_both_ways() {
    let (srv, addr) = server().await;
    let mut comp = connect_component(addr).await;
    let mut alice = srv.login("alice", "secret", "desk").await;

    alice
        .send(&format!(
            "<message to='echo@{DOMAIN}' type='chat' id='m1'><body>hello bot</body></message>"
        ))
        .await;
    let got = comp.recv().await;
    assert!(
        got.is("message", NS_COMPONENT),
        "stanza not in the component namespace: {got:?}"
    );
    assert_eq!(got.attr("from"), Some("alice@localhost/desk"));
    assert_eq!(got.attr("to"), Some(&*format!("echo@{DOMAIN}")));
    assert_eq!(
        got.get_child("body", NS_COMPONENT).unwrap().text(),
        "hello bot"
    );

    comp.send(&format!(
        "<message from='echo@{DOMAIN}/x' to='alice@localhost/desk' type='chat'><body>hello human</body></message>"
    ))
    .await;
    let reply = alice.recv_until(|e| e.name() == "message").await;
    assert_eq!(reply.attr("from"), Some(&*format!("echo@{DOMAIN}/x")));
    assert_eq!(
        reply.get_child("body", "jabber:client").unwrap().text(),
        "hello human"
    );

    // An IQ from the component to the server itself is answered back to the component.
    comp.send(&format!(
        "<iq from='{DOMAIN}' to='localhost' type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>"
    ))
    .await;
    let pong = comp.recv().await;
    assert_eq!(pong.attr("type"), Some("result"), "{pong:?}");
    assert_eq!(pong.attr("id"), Some("p1"));
    srv.assert_still_serves().await;
}

#[tokio::test]
async fn a_wrong_secret_is_refused() {
    let (srv, addr) = server().await;
    let (mut c, id) = open(addr, DOMAIN).await;
    c.send(&format!(
        "<handshake>{}</handshake>",
        handshake_digest(&id, "not-the-secret")
    ))
    .await;
    c.expect_stream_error("not-authorized").await;
    // The right secret still works afterwards.
    connect_component(addr).await;
    srv.assert_still_serves().await;
}

#[tokio::test]
async fn an_unknown_domain_and_a_client_namespace_are_refused() {
    let (_srv, addr) = server().await;
    let (mut c, _) = open(addr, "nobody.localhost").await;
    c.expect_stream_error("host-unknown").await;

    let mut c = Conn::connect(addr).await;
    c.send(&format!(
        "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='{DOMAIN}'>"
    ))
    .await;
    c.expect_stream_error("invalid-namespace").await;
}

#[tokio::test]
async fn a_component_cannot_speak_for_another_domain() {
    let (srv, addr) = server().await;
    let mut comp = connect_component(addr).await;
    let mut alice = srv.login("alice", "secret", "desk").await;
    comp.send(
        "<message from='admin@localhost' to='alice@localhost/desk'><body>forged</body></message>",
    )
    .await;
    comp.expect_stream_error("invalid-from").await;
    alice
        .expect_none(Duration::from_millis(300), |e| e.name() == "message")
        .await;
}

#[tokio::test]
async fn a_second_connection_for_the_same_domain_conflicts() {
    let (_srv, addr) = server().await;
    let _first = connect_component(addr).await;
    let (mut second, id) = open(addr, DOMAIN).await;
    second
        .send(&format!(
            "<handshake>{}</handshake>",
            handshake_digest(&id, SECRET)
        ))
        .await;
    second.expect_stream_error("conflict").await;
}

#[tokio::test]
async fn stanzas_bounce_while_the_component_is_away() {
    let (srv, addr) = server().await;
    let mut alice = srv.login("alice", "secret", "desk").await;
    alice
        .send(&format!(
            "<message to='x@{DOMAIN}' type='chat' id='a1'><body>anyone?</body></message>"
        ))
        .await;
    let err = alice.recv_until(|e| e.name() == "message").await;
    assert_eq!(err.attr("type"), Some("error"));
    assert_eq!(
        stanza_error_condition(&err).as_deref(),
        Some("service-unavailable")
    );

    // Connect, then disconnect: later stanzas bounce again.
    let mut comp = connect_component(addr).await;
    comp.send("</stream:stream>").await;
    match comp.next_event().await {
        Some(StreamEvent::Close) | None => {}
        other => panic!("expected the stream to close, got {other:?}"),
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    alice
        .send(&format!(
            "<iq to='x@{DOMAIN}' type='get' id='q1'><query xmlns='jabber:iq:version'/></iq>"
        ))
        .await;
    let err = alice.recv_until(|e| e.name() == "iq").await;
    assert_eq!(err.attr("type"), Some("error"));
    assert_eq!(
        stanza_error_condition(&err).as_deref(),
        Some("service-unavailable")
    );
}
