//! Catalogue, resource exhaustion (docs/bad-input.md, E-entries): slowloris, connection
//! floods, stanza, presence and byte floods, subscription spam. Each test attacks while two
//! normal users chat, asserts the specified answer to the attacker, that the normal users'
//! messages all arrive, and that a fresh user can log in and chat during and after.

mod hard_support;

use std::time::Duration;

use hard_support::{loopback, Witnesses};
use starling_tests::*;
use tokio::task::JoinSet;
use tokio::time::Instant;

const HEADER: &[u8] = b"<?xml version='1.0'?><stream:stream to='localhost' version='1.0' \
    xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>";

/// Sends `HEADER` one byte every `every`, collecting what the server sends, until the server
/// closes the connection or `limit` passes. Returns everything received.
async fn trickle(mut c: Conn, every: Duration, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    let mut got = Vec::new();
    let mut i = 0;
    while Instant::now() < deadline {
        if i < HEADER.len() && !c.try_send_bytes(&HEADER[i..=i]).await {
            break;
        }
        i += 1;
        let chunk = c.read_raw_until_closed(every).await;
        let closed = chunk.is_empty() && String::from_utf8_lossy(&got).contains("</stream:stream>");
        got.extend_from_slice(&chunk);
        if closed || String::from_utf8_lossy(&got).ends_with("</stream:stream>") {
            break;
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// The issue's acceptance test: under an active slowloris plus a connection flood from one
/// address, a normal client's login and message round trip still succeed.
#[tokio::test]
async fn slowloris_and_connection_flood_from_one_address_do_not_stop_normal_users() {
    const CAP: usize = 20;
    let server = TestServer::start_with(|c| {
        c.c2s.handshake_timeout_secs = 5;
        c.c2s.max_connections_per_ip = CAP;
    })
    .await;
    let mut w = Witnesses::login(&server).await;
    w.chat("before").await;
    let attacker = loopback(2);

    // Slowloris: the attacker holds every slot it may have, each trickling its header a
    // byte at a time (the whole header would take ~30 s).
    let mut slow = JoinSet::new();
    for _ in 0..CAP {
        let c = Conn::connect_from(server.c2s, attacker).await;
        slow.spawn(trickle(
            c,
            Duration::from_millis(200),
            Duration::from_secs(15),
        ));
    }
    // Connection flood from the same address while the slots are held: 200 connections.
    let mut flood = JoinSet::new();
    for _ in 0..200 {
        let addr = server.c2s;
        flood.spawn(async move {
            let mut c = Conn::connect_from(addr, attacker).await;
            let raw = c.read_raw_until_closed(Duration::from_secs(5)).await;
            String::from_utf8_lossy(&raw).into_owned()
        });
    }

    // During the attack: a new user logs in and chats, and the witnesses keep chatting.
    let started = Instant::now();
    let mut carol = hard_support::fresh_user(&server, "carol").await;
    let carol_login = started.elapsed();
    carol
        .send("<message to='carol@localhost/r' id='self'><body>echo</body></message>")
        .await;
    let echo = carol
        .recv_until(|e| e.name() == "message" && e.attr("id") == Some("self"))
        .await;
    assert_eq!(echo.attr("from"), Some("carol@localhost/r"));
    w.chat("during").await;
    // "During": not one slowloris connection has been cut yet (they last until the 5 s
    // handshake timeout), so the attacker still held every slot of its address meanwhile.
    assert!(
        slow.try_join_next().is_none(),
        "a slowloris connection ended before the normal login and round trips were done \
         (login {carol_login:?}, all {:?})",
        started.elapsed()
    );
    assert_eq!(slow.len(), CAP);

    // Every flood connection over the cap was refused with policy-violation.
    let mut refused = 0;
    while let Some(r) = flood.join_next().await {
        let raw = r.unwrap();
        assert!(raw.contains("<policy-violation"), "flood answer: {raw}");
        assert!(raw.contains("too many connections"), "{raw}");
        refused += 1;
    }
    assert_eq!(refused, 200);
    // Every slowloris connection was cut at the handshake timeout with connection-timeout.
    let mut timed_out = 0;
    while let Some(r) = slow.join_next().await {
        let raw = r.unwrap();
        assert!(
            raw.contains("<connection-timeout"),
            "slowloris answer: {raw}"
        );
        assert!(raw.trim_end().ends_with("</stream:stream>"), "{raw}");
        timed_out += 1;
    }
    assert_eq!(timed_out, CAP);
    // After: the slots are free again for the attacker's address, and everyone still chats.
    let mut again = Conn::connect_from(server.c2s, attacker).await;
    again.open("localhost").await;
    w.chat("after").await;
    server.assert_still_serves().await;
}

/// A client sending stanzas faster than its stanza rate is slowed down, not cut off: every
/// stanza is answered in order, and other users are not slowed down meanwhile.
#[tokio::test]
async fn a_stanza_flood_is_paced_and_nothing_is_lost() {
    let server = TestServer::start_with(|c| {
        c.limits.session_stanzas_per_sec = 50;
        c.limits.session_stanzas_burst = 10;
    })
    .await;
    let mut w = Witnesses::login(&server).await;
    let mut mallory = hard_support::fresh_user(&server, "mallory").await;
    let pings: String = (0..110)
        .map(|i| {
            format!("<iq type='get' id='p{i}' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        })
        .collect();
    let started = Instant::now();
    mallory.send(&pings).await;
    // Meanwhile the witnesses are not slowed down.
    let t = Instant::now();
    w.chat("during").await;
    let witness_time = t.elapsed();
    for i in 0..110 {
        let r = mallory.recv().await;
        assert_eq!(r.attr("id"), Some(&*format!("p{i}")), "in order, none lost");
        assert_eq!(r.attr("type"), Some("result"));
    }
    let took = started.elapsed();
    // A burst of 10, then 100 more at 50 per second: about 2 s.
    assert!(took >= Duration::from_millis(1800), "paced: {took:?}");
    assert!(
        witness_time < Duration::from_secs(1),
        "witnesses took {witness_time:?}"
    );
    mallory.ping_server().await;
    w.chat("after").await;
    server.assert_still_serves().await;
}

/// Bytes are paced too: 160 KiB at 64 KiB/s (burst 64 KiB) takes ~1.5 s and all arrives.
#[tokio::test]
async fn a_byte_flood_is_paced_and_nothing_is_lost() {
    let server = TestServer::start_with(|c| {
        c.limits.session_bytes_per_sec = 64 * 1024;
        c.limits.session_bytes_burst = 64 * 1024;
    })
    .await;
    let mut w = Witnesses::login(&server).await;
    let mut mallory = hard_support::fresh_user(&server, "mallory").await;
    let mut victim = hard_support::fresh_user(&server, "victim").await;
    let body = "x".repeat(16 * 1024);
    let flood: String = (0..10)
        .map(|i| {
            format!("<message to='victim@localhost/r' id='b{i}'><body>{body}</body></message>")
        })
        .collect();
    let started = Instant::now();
    mallory.send(&flood).await;
    w.chat("during").await;
    for i in 0..10 {
        let m = victim.recv_until(|e| e.name() == "message").await;
        assert_eq!(m.attr("id"), Some(&*format!("b{i}")));
        assert_eq!(
            m.get_child("body", "jabber:client").unwrap().text().len(),
            body.len()
        );
    }
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(1300), "paced: {took:?}");
    w.chat("after").await;
    server.assert_still_serves().await;
}

/// A presence flood (directed presence, 300 updates) reaches its target paced and complete;
/// the last update wins.
#[tokio::test]
async fn a_presence_flood_is_paced_and_the_last_presence_arrives() {
    let server = TestServer::start_with(|c| {
        c.limits.session_stanzas_per_sec = 200;
        c.limits.session_stanzas_burst = 50;
    })
    .await;
    let mut w = Witnesses::login(&server).await;
    let mut mallory = hard_support::fresh_user(&server, "mallory").await;
    let mut victim = hard_support::fresh_user(&server, "victim").await;
    let flood: String = (0..300)
        .map(|i| format!("<presence to='victim@localhost/r'><status>s{i}</status></presence>"))
        .collect();
    let started = Instant::now();
    mallory.send(&flood).await;
    w.chat("during").await;
    for i in 0..300 {
        let p = victim.recv_until(|e| e.name() == "presence").await;
        assert_eq!(p.attr("from"), Some("mallory@localhost/r"));
        let status = p.get_child("status", "jabber:client").map(|s| s.text());
        assert_eq!(status, Some(format!("s{i}")));
    }
    assert!(
        started.elapsed() >= Duration::from_millis(1100),
        "{:?}",
        started.elapsed()
    );
    w.chat("after").await;
    server.assert_still_serves().await;
}

/// Subscription spam: requests beyond the roster limit are refused (`not-allowed`, the
/// roster is full): the spammer's roster stays at the limit and the refused requests never
/// reach their targets, while the first ones do.
#[tokio::test]
async fn subscription_spam_stops_at_the_roster_limit() {
    let server = TestServer::start_with(|c| c.limits.roster_max_items = 10).await;
    let mut w = Witnesses::login(&server).await;
    let mut mallory = hard_support::fresh_user(&server, "mallory").await;
    for i in 0..30 {
        server.add_user(&format!("target{i}"), "pw").await;
    }
    let spam: String = (0..30)
        .map(|i| format!("<presence to='target{i}@localhost' type='subscribe' id='s{i}'/>"))
        .collect();
    mallory.send(&spam).await;
    w.chat("during").await;
    mallory
        .send("<iq type='get' id='roster'><query xmlns='jabber:iq:roster'/></iq>")
        .await;
    // Each refused request comes back to the sending session as `not-allowed`.
    let mut refused = Vec::new();
    let roster = loop {
        let el = mallory.recv().await;
        if el.name() == "iq" && el.attr("id") == Some("roster") {
            break el;
        }
        if el.name() == "presence" && el.attr("type") == Some("error") {
            assert_eq!(
                stanza_error_condition(&el).as_deref(),
                Some("not-allowed"),
                "{el:?}"
            );
            refused.push(el.attr("id").unwrap_or_default().to_owned());
        }
    };
    let expected: Vec<String> = (10..30).map(|i| format!("s{i}")).collect();
    assert_eq!(refused, expected, "refusals reaching the spammer's session");
    let items: Vec<String> = roster
        .get_child("query", "jabber:iq:roster")
        .map(|q| {
            q.children()
                .filter_map(|i| i.attr("jid").map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(items.len(), 10, "{items:?}");
    // An accepted request is redelivered when its target comes online; a refused one is not.
    let mut first = server.login("target5", "pw", "r").await;
    first.send("<presence/>").await;
    let sub = first
        .recv_until(|e| e.name() == "presence" && e.attr("type") == Some("subscribe"))
        .await;
    assert_eq!(sub.attr("from"), Some("mallory@localhost"));
    let mut late = server.login("target25", "pw", "r").await;
    late.send("<presence/>").await;
    late.expect_none(Duration::from_millis(700), |e| {
        e.name() == "presence" && e.attr("type") == Some("subscribe")
    })
    .await;
    w.chat("after").await;
    server.assert_still_serves().await;
}

/// Reads pings' results until the stream error; returns how many results arrived, the
/// stream error element, and when it came.
async fn results_until_stream_error(c: &mut Conn) -> (usize, minidom::Element) {
    let mut results = 0;
    loop {
        match c.next_event().await {
            Some(starling_proto::framer::StreamEvent::Stanza(el)) => {
                if el.name() == "iq" && el.attr("type") == Some("result") {
                    results += 1;
                } else if el.name() == "error" && el.ns() == starling_proto::ns::STREAM {
                    return (results, el);
                }
            }
            Some(_) => {}
            None => panic!("closed without a stream error after {results} results"),
        }
    }
}

fn pings(prefix: &str, n: usize) -> String {
    (0..n)
        .map(|i| {
            format!(
                "<iq type='get' id='{prefix}{i}' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>"
            )
        })
        .collect()
}

/// Sustained abuse: a session that stays over its stanza rate for longer than
/// `rate_limit_disconnect_secs` is closed with `policy-violation`; one that bursts and then
/// pauses, for longer in total, is only paced. Other users chat meanwhile.
#[tokio::test]
async fn a_session_over_its_rate_for_too_long_is_disconnected() {
    let server = TestServer::start_with(|c| {
        c.limits.session_stanzas_per_sec = 20;
        c.limits.session_stanzas_burst = 5;
        c.limits.rate_limit_disconnect_secs = 2;
    })
    .await;
    let mut w = Witnesses::login(&server).await;
    // Bursts of 10 (twice the burst: paced), each followed by a quiet second, for ~5 s.
    let mut polite = hard_support::fresh_user(&server, "polite").await;
    let started = Instant::now();
    for round in 0..4 {
        polite.send(&pings(&format!("b{round}-"), 10)).await;
        for i in 0..10 {
            let r = polite.recv().await;
            assert_eq!(r.attr("id"), Some(&*format!("b{round}-{i}")), "{r:?}");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert!(started.elapsed() > Duration::from_secs(4));
    polite.ping_server().await;
    // A flood of 400 (20 s at the rate): cut off after about 2 s over the limit.
    let mut mallory = hard_support::fresh_user(&server, "mallory").await;
    let started = Instant::now();
    mallory.send(&pings("f", 400)).await;
    w.chat("during").await;
    let (answered, error) = results_until_stream_error(&mut mallory).await;
    let took = started.elapsed();
    assert!(
        error
            .get_child("policy-violation", starling_proto::ns::STREAM_ERRORS)
            .is_some(),
        "{error:?}"
    );
    let text = error
        .get_child("text", starling_proto::ns::STREAM_ERRORS)
        .map(|t| t.text())
        .unwrap_or_default();
    assert!(text.contains("stanzas per second"), "{text}");
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(8),
        "cut off after {took:?}"
    );
    assert!(
        (20..200).contains(&answered),
        "paced, then cut: {answered} answered"
    );
    w.chat("after").await;
    server.assert_still_serves().await;
}

/// A connection flood of short-lived connections (never more than one open at a time, so
/// the simultaneous-connection cap does not see it) puts the address in the penalty box:
/// its connections are refused with `policy-violation` until the ban ends; other addresses
/// log in and chat meanwhile.
#[tokio::test]
async fn a_connection_flood_puts_the_address_in_the_penalty_box() {
    let server = TestServer::start_with(|c| {
        c.limits.connections_per_ip_per_minute = 10;
        c.limits.address_ban_secs = 3;
    })
    .await;
    let mut w = Witnesses::login(&server).await;
    let attacker = loopback(2);
    for _ in 0..10 {
        let mut c = Conn::connect_from(server.c2s, attacker).await;
        c.open("localhost").await;
    }
    let mut refused = Conn::connect_from(server.c2s, attacker).await;
    let raw =
        String::from_utf8_lossy(&refused.read_raw_until_closed(STEP_TIMEOUT).await).into_owned();
    assert!(raw.contains("<policy-violation"), "{raw}");
    assert!(raw.contains("try again later"), "{raw}");
    let banned_at = Instant::now();
    // Still refused a moment later, while others log in and chat.
    let mut c = Conn::connect_from(server.c2s, attacker).await;
    let raw = String::from_utf8_lossy(&c.read_raw_until_closed(STEP_TIMEOUT).await).into_owned();
    assert!(raw.contains("<policy-violation"), "{raw}");
    server.add_user("carol", "pw").await;
    let mut carol = server.login_from(loopback(3), "carol", "pw", "r").await;
    carol.ping_server().await;
    w.chat("during").await;
    // After the ban the address is served again.
    tokio::time::sleep(Duration::from_secs(3).saturating_sub(banned_at.elapsed())).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    server.add_user("dave", "pw").await;
    let mut dave = server.login_from(attacker, "dave", "pw", "r").await;
    dave.ping_server().await;
    w.chat("after").await;
    server.assert_still_serves().await;
}

/// A guesser who fails `auth_address_ban_after` logins from one address is refused at the
/// door until the ban ends; the account's owner, from another address, logs in meanwhile.
#[tokio::test]
async fn repeated_failed_logins_put_the_address_in_the_penalty_box() {
    let server = TestServer::start_with(|c| {
        // No delays here: this test is about the ban.
        c.limits.auth_address_failures_free = 100;
        c.limits.auth_account_failures_free = 100;
        c.limits.auth_address_ban_after = 3;
        c.limits.address_ban_secs = 3;
    })
    .await;
    let mut w = Witnesses::login(&server).await;
    server.add_user("victim", "right").await;
    let attacker = loopback(2);
    for _ in 0..3 {
        hard_support::tcp_fails_login(&server, attacker, "victim").await;
    }
    let banned_at = Instant::now();
    let mut c = Conn::connect_from(server.c2s, attacker).await;
    let raw = String::from_utf8_lossy(&c.read_raw_until_closed(STEP_TIMEOUT).await).into_owned();
    assert!(raw.contains("<policy-violation"), "{raw}");
    assert!(raw.contains("failed logins"), "{raw}");
    // The owner is not locked out.
    let mut owner = server.login_from(loopback(3), "victim", "right", "r").await;
    owner.ping_server().await;
    w.chat("during").await;
    tokio::time::sleep(Duration::from_secs(3).saturating_sub(banned_at.elapsed())).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut back = Conn::connect_from(server.c2s, attacker).await;
    back.open("localhost").await;
    w.chat("after").await;
    server.assert_still_serves().await;
}
