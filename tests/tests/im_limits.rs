//! The per-user limits of `[limits]` reach the modules: a server configured with small limits
//! refuses a vCard, a roster item and an offline message that the defaults would take.

mod im_support;

use im_support::*;
use minidom::Element;
use starling_tests::*;

async fn iq(c: &mut Conn, id: &str, xml: &str) -> Element {
    c.send(xml).await;
    c.recv_until(|e| e.name() == "iq" && e.attr("id") == Some(id))
        .await
}

#[tokio::test]
async fn configured_limits_are_enforced() {
    let server = TestServer::start_with(|c| {
        c.limits.vcard_max_bytes = 1024;
        c.limits.roster_max_items = 1;
        c.limits.offline_quota = 1;
    })
    .await;
    for u in ["alice", "bob"] {
        server.add_user(u, &format!("pw-{u}")).await;
    }
    let mut alice = server.login("alice", "pw-alice", "phone").await;

    // vCard: 1024 bytes at most (the default, 64 KiB, would take this one).
    let big = "x".repeat(2000);
    let res = iq(
        &mut alice,
        "v",
        &format!("<iq type='set' id='v'><vCard xmlns='vcard-temp'><FN>{big}</FN></vCard></iq>"),
    )
    .await;
    assert_eq!(
        stanza_error_condition(&res).as_deref(),
        Some("not-acceptable"),
        "{}",
        xml(&res)
    );

    // Roster: one item at most.
    let res = iq(
        &mut alice,
        "r1",
        "<iq type='set' id='r1'><query xmlns='jabber:iq:roster'><item jid='x@localhost'/></query></iq>",
    )
    .await;
    assert_eq!(res.attr("type"), Some("result"), "{}", xml(&res));
    let res = iq(
        &mut alice,
        "r2",
        "<iq type='set' id='r2'><query xmlns='jabber:iq:roster'><item jid='y@localhost'/></query></iq>",
    )
    .await;
    assert_eq!(res.attr("type"), Some("error"), "{}", xml(&res));

    // Offline: bob is offline; one message is stored, the second bounces.
    for i in 1..=2 {
        alice
            .send(&format!(
                "<message to='bob@localhost' type='chat' id='m{i}'><body>hi {i}</body></message>"
            ))
            .await;
        alice.ping_server().await;
        let stored = server
            .server()
            .storage()
            .archive_count("localhost", "bob", "offline")
            .await
            .unwrap();
        assert_eq!(stored, 1, "after message {i}");
    }
    // The ping sync skipped anything in between; ask for the bounce explicitly.
    alice
        .send("<message to='bob@localhost' type='chat' id='m3'><body>hi 3</body></message>")
        .await;
    let bounce = alice
        .recv_until(|e| e.name() == "message" && e.attr("id") == Some("m3"))
        .await;
    assert_eq!(
        stanza_error_condition(&bounce).as_deref(),
        Some("service-unavailable")
    );
}
