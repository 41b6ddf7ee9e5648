//! Transcripts for the small server answers: entity time (XEP-0202) and last activity
//! (XEP-0012) for the server and for accounts, with its authorisation rule.

use std::time::Duration;

use minidom::Element;
use starling_tests::*;

const TIME: &str = "urn:xmpp:time";
const LAST: &str = "jabber:iq:last";

async fn iq(c: &mut Conn, id: &str, xml: &str) -> Element {
    c.send(xml).await;
    c.recv_until(|e| e.name() == "iq" && e.attr("id") == Some(id) && e.attr("type") != Some("set"))
        .await
}

fn seconds(res: &Element) -> u64 {
    res.get_child("query", LAST)
        .expect("query")
        .attr("seconds")
        .expect("seconds")
        .parse()
        .expect("a number")
}

#[tokio::test]
async fn the_server_tells_its_time_in_utc() {
    let server = TestServer::start().await;
    server.add_user("alice", "pw-a").await;
    let mut alice = server.login("alice", "pw-a", "phone").await;
    let res = iq(
        &mut alice,
        "t1",
        "<iq type='get' id='t1' to='localhost'><time xmlns='urn:xmpp:time'/></iq>",
    )
    .await;
    assert_eq!(res.attr("type"), Some("result"));
    let t = res.get_child("time", TIME).expect("time");
    assert_eq!(t.get_child("tzo", TIME).unwrap().text(), "+00:00");
    let utc = t.get_child("utc", TIME).unwrap().text();
    // XEP-0082 DateTime in UTC: YYYY-MM-DDThh:mm:ss(.sss)Z
    assert!(utc.ends_with('Z') && utc.len() >= 20, "{utc}");
    assert_eq!(&utc[4..5], "-");
    assert_eq!(&utc[10..11], "T");
    let year: u32 = utc[..4].parse().unwrap();
    assert!(year >= 2024, "{utc}");
    // A set is not meaningful.
    let res = iq(
        &mut alice,
        "t2",
        "<iq type='set' id='t2' to='localhost'><time xmlns='urn:xmpp:time'/></iq>",
    )
    .await;
    assert_eq!(res.attr("type"), Some("error"));
}

#[tokio::test]
async fn last_activity_of_the_server_and_of_accounts() {
    let server = TestServer::start().await;
    server.add_user("alice", "pw-a").await;
    server.add_user("bob", "pw-b").await;
    server.add_user("carol", "pw-c").await;
    let mut alice = server.login("alice", "pw-a", "phone").await;
    alice.available().await;

    // The server: its uptime (§5), a small number in a fresh test server.
    let res = iq(
        &mut alice,
        "l1",
        "<iq type='get' id='l1' to='localhost'><query xmlns='jabber:iq:last'/></iq>",
    )
    .await;
    assert!(seconds(&res) < 600);

    // bob is subscribed to alice's presence; carol is not.
    let mut bob = server.login("bob", "pw-b", "desk").await;
    bob.available().await;
    bob.send("<presence to='alice@localhost' type='subscribe'/>")
        .await;
    alice
        .recv_until(|e| e.name() == "presence" && e.attr("type") == Some("subscribe"))
        .await;
    alice
        .send("<presence to='bob@localhost' type='subscribed'/>")
        .await;
    alice.ping_server().await;
    bob.ping_server().await;

    // alice is online: 0 (§3).
    let res = iq(
        &mut bob,
        "l2",
        "<iq type='get' id='l2' to='alice@localhost'><query xmlns='jabber:iq:last'/></iq>",
    )
    .await;
    assert_eq!(res.attr("type"), Some("result"), "{res:?}");
    assert_eq!(seconds(&res), 0);

    // carol has no subscription: forbidden (§3, §8).
    let mut carol = server.login("carol", "pw-c", "pad").await;
    let res = iq(
        &mut carol,
        "l3",
        "<iq type='get' id='l3' to='alice@localhost'><query xmlns='jabber:iq:last'/></iq>",
    )
    .await;
    assert_eq!(stanza_error_condition(&res).as_deref(), Some("forbidden"));

    // alice logs out with a status; bob learns how long ago and the status.
    alice
        .send("<presence type='unavailable'><status>Heading Home</status></presence>")
        .await;
    alice.close().await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let res = iq(
        &mut bob,
        "l4",
        "<iq type='get' id='l4' to='alice@localhost'><query xmlns='jabber:iq:last'/></iq>",
    )
    .await;
    assert_eq!(res.attr("type"), Some("result"), "{res:?}");
    let s = seconds(&res);
    assert!((1..60).contains(&s), "seconds {s}");
    assert_eq!(res.get_child("query", LAST).unwrap().text(), "Heading Home");

    // carol asking about herself is always allowed; she never logged out: item-not-found.
    let res = iq(
        &mut carol,
        "l5",
        "<iq type='get' id='l5' to='carol@localhost'><query xmlns='jabber:iq:last'/></iq>",
    )
    .await;
    assert_eq!(
        stanza_error_condition(&res).as_deref(),
        Some("item-not-found")
    );
}

/// Every way of going offline is recorded, once: a session that never sent presence (the
/// record happens at its end), and an available session that just closes (the server's
/// unavailable broadcast records it).
#[tokio::test]
async fn every_logout_is_recorded() {
    let server = TestServer::start().await;
    server.add_user("alice", "pw-a").await;
    server.add_user("bob", "pw-b").await;
    let storage = server.server().storage().clone();
    let stored = |user: &'static str| {
        let storage = storage.clone();
        async move {
            storage
                .kv_get("localhost", user, "last")
                .await
                .unwrap()
                .map(|b| String::from_utf8(b).unwrap())
        }
    };
    // The record is written by the session's end, which may finish just after unbinding.
    let recorded = |user: &'static str| async move {
        for _ in 0..100 {
            if let Some(r) = stored(user).await {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{user}'s logout was not recorded");
    };

    // alice never sends presence.
    let mut alice = server.login("alice", "pw-a", "phone").await;
    let full = alice.jid.clone().unwrap();
    assert_eq!(stored("alice").await, None);
    alice.close().await;
    server.wait_unbound(&full).await;
    let record = recorded("alice").await;
    assert!(
        record.contains(" at='") || record.contains(" at=\""),
        "{record}"
    );

    // bob is available and just closes the connection.
    let mut bob = server.login("bob", "pw-b", "laptop").await;
    bob.available().await;
    let full = bob.jid.clone().unwrap();
    bob.close().await;
    server.wait_unbound(&full).await;
    let record = recorded("bob").await;
    assert!(!record.contains("</last>"), "no status: {record}");
}
