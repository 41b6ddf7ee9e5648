//! Catalogue, resource exhaustion over the browser transports (docs/bad-input.md E18–E21):
//! the penalty box of `[limits]` (`connections_per_ip_per_minute`, `auth_address_ban_after`,
//! `address_ban_secs`) holds for WebSocket (RFC 7395) and BOSH (XEP-0124/XEP-0206) as for
//! TCP, with one table for all: a WebSocket upgrade and a new BOSH session are connections of
//! the peer's address, failed logins over them count toward its ban, and a banned address is
//! refused on every transport (TCP: `policy-violation` stream error; WebSocket: HTTP 429
//! with `Retry-After`; BOSH: terminal condition `policy-violation`). Each test attacks from
//! 127.0.0.2 while two witnesses chat over TCP, and a normal user logs in and chats over the
//! attacked transport from another address during the ban, and the attacker's address after.

mod hard_support;
mod http_support;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hard_support::{loopback, Witnesses};
use http_support::*;
use starling_tests::*;
use tokio::time::Instant;

/// Seconds of the penalty box in these tests.
const BAN_SECS: u64 = 3;
/// The SASL namespace.
const SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";

fn ws_url(addr: SocketAddr) -> String {
    format!("ws://{addr}/xmpp-websocket")
}

/// A server with an HTTP listener and a small penalty box: `tweak` sets the trigger.
async fn start(tweak: impl FnOnce(&mut starling_core::Config)) -> (TestServer, SocketAddr) {
    start_http(|c| {
        c.limits.address_ban_secs = BAN_SECS;
        tweak(c)
    })
    .await
}

/// A WebSocket upgrade from `ip` is refused with 429, `Retry-After` within the ban and the
/// reason in the body.
async fn ws_refused(url: &str, ip: IpAddr) {
    let (status, headers, body) = ws_connect_from(url, Some("xmpp"), None, Some(ip))
        .await
        .err()
        .expect("the upgrade is refused");
    assert_eq!(status, 429, "{headers:?} {body}");
    let retry = header(&headers, "retry-after").and_then(|v| v.parse::<u64>().ok());
    assert!(
        retry.is_some_and(|s| (1..=BAN_SECS).contains(&s)),
        "Retry-After within the ban: {headers:?}"
    );
    assert!(body.contains("try again later"), "{body}");
}

/// A new BOSH session from `ip` is refused with the terminal condition `policy-violation`.
async fn bosh_refused(addr: SocketAddr, ip: IpAddr) {
    let (_, creation) = Bosh::creation_body(1, 2);
    let resp = bosh_post_from(Some(ip), addr, &creation).await;
    assert_eq!(resp.attr("type"), Some("terminate"), "{resp:?}");
    assert_eq!(resp.attr("condition"), Some("policy-violation"), "{resp:?}");
    assert!(resp.attr("sid").is_none(), "no session: {resp:?}");
}

/// A TCP client stream from `ip` is refused at the door with `policy-violation`; the text.
async fn tcp_refused(server: &TestServer, ip: IpAddr) -> String {
    let mut c = Conn::connect_from(server.c2s, ip).await;
    let raw = String::from_utf8_lossy(&c.read_raw_until_closed(STEP_TIMEOUT).await).into_owned();
    assert!(raw.contains("<policy-violation"), "{raw}");
    assert!(raw.contains("try again later"), "{raw}");
    raw
}

/// A new account logs in over WebSocket from `ip` and gets its own message back.
async fn ws_user_chats(server: &TestServer, url: &str, ip: IpAddr, name: &str) {
    server.add_user(name, "pw").await;
    let mut ws = ws_connect_from(url, Some("xmpp"), None, Some(ip))
        .await
        .unwrap_or_else(|e| panic!("{name}'s upgrade from {ip} refused: {e:?}"));
    let jid = ws.login(name, "pw", "r").await;
    ws.send(&format!(
        "<message xmlns='jabber:client' to='{jid}' type='chat' id='self'><body>echo</body></message>"
    ))
    .await;
    let echo = ws
        .recv_until(|e| e.name() == "message" && e.attr("id") == Some("self"))
        .await;
    assert_eq!(echo.attr("from"), Some(jid.as_str()));
    assert_eq!(body_of(&echo).as_deref(), Some("echo"));
}

/// A new account logs in over BOSH from `ip` and gets its own message back.
async fn bosh_user_chats(server: &TestServer, addr: SocketAddr, ip: IpAddr, name: &str) {
    server.add_user(name, "pw").await;
    let (mut b, jid) = Bosh::login_from(Some(ip), addr, name, "pw", "r").await;
    let resp = b
        .send(
            "",
            &format!(
                "<message xmlns='jabber:client' to='{jid}' type='chat' id='self'><body>echo</body></message>"
            ),
        )
        .await;
    let echo = match resp
        .children()
        .find(|e| e.name() == "message" && e.attr("id") == Some("self"))
    {
        Some(e) => e.clone(),
        None => {
            b.poll_until(|e| e.name() == "message" && e.attr("id") == Some("self"))
                .await
        }
    };
    assert_eq!(echo.attr("from"), Some(jid.as_str()));
    assert_eq!(body_of(&echo).as_deref(), Some("echo"));
}

/// Sleeps until the ban that started at `banned_at` is over (with a margin).
async fn until_ban_over(banned_at: Instant) {
    tokio::time::sleep(Duration::from_secs(BAN_SECS).saturating_sub(banned_at.elapsed())).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
}

/// A flood of WebSocket upgrades from one address (each stream opened, then dropped, so the
/// simultaneous-connection cap never sees two) puts the address in the penalty box: the
/// 11th upgrade in a minute under `connections_per_ip_per_minute` 10 gets 429, and so do
/// its TCP and BOSH attempts (one table for all transports). Meanwhile a normal user logs
/// in and chats over WebSocket from another address; after the ban the address is served.
#[tokio::test]
async fn a_websocket_flood_puts_the_address_in_the_penalty_box() {
    let (server, addr) = start(|c| c.limits.connections_per_ip_per_minute = 10).await;
    let url = ws_url(addr);
    let mut w = Witnesses::login(&server).await;
    let attacker = loopback(2);
    for i in 0..10 {
        let mut ws = ws_connect_from(&url, Some("xmpp"), None, Some(attacker))
            .await
            .unwrap_or_else(|e| panic!("upgrade {i} is within the limit: {e:?}"));
        ws.open().await;
    }
    ws_refused(&url, attacker).await;
    let banned_at = Instant::now();
    // Banned on every transport.
    ws_refused(&url, attacker).await;
    tcp_refused(&server, attacker).await;
    bosh_refused(addr, attacker).await;
    // During: others log in and chat, over WebSocket and TCP.
    ws_user_chats(&server, &url, loopback(3), "carol").await;
    w.chat("during").await;
    assert!(
        banned_at.elapsed() < Duration::from_secs(BAN_SECS),
        "the 'during' steps ran inside the ban ({:?})",
        banned_at.elapsed()
    );
    // After the ban the attacker's address is served again.
    until_ban_over(banned_at).await;
    ws_user_chats(&server, &url, attacker, "dave").await;
    w.chat("after").await;
    server.assert_still_serves().await;
}

/// A flood of new BOSH sessions from one address (each request on its own TCP connection)
/// puts the address in the penalty box: the 11th session under `connections_per_ip_per_minute`
/// 10 is refused with `policy-violation`, and so are its WebSocket and TCP attempts. Requests
/// within a session are not new connections: the attacker's sessions carry many requests
/// before the flood trips. A normal BOSH user logs in and chats from another address during
/// the ban; the attacker's address logs in over BOSH after it.
#[tokio::test]
async fn a_bosh_session_flood_puts_the_address_in_the_penalty_box() {
    let (server, addr) = start(|c| c.limits.connections_per_ip_per_minute = 10).await;
    let url = ws_url(addr);
    let mut w = Witnesses::login(&server).await;
    let attacker = loopback(2);
    let mut polls = tokio::task::JoinSet::new();
    for i in 0..10 {
        let (mut b, _) = Bosh::create_from(Some(attacker), addr, 1, 1).await;
        // Requests within a session do not count: 3 more in each session (30 in all, with
        // the creations 40 requests from one address), the sessions side by side (each
        // empty request is held for `wait`, 1 s).
        polls.spawn(async move {
            for _ in 0..3 {
                let resp = b.send("", "").await;
                assert_ne!(
                    resp.attr("type"),
                    Some("terminate"),
                    "session {i}: {resp:?}"
                );
            }
        });
    }
    while let Some(r) = polls.join_next().await {
        r.expect("the sessions' requests are served");
    }
    bosh_refused(addr, attacker).await;
    let banned_at = Instant::now();
    bosh_refused(addr, attacker).await;
    ws_refused(&url, attacker).await;
    tcp_refused(&server, attacker).await;
    bosh_user_chats(&server, addr, loopback(3), "carol").await;
    w.chat("during").await;
    assert!(
        banned_at.elapsed() < Duration::from_secs(BAN_SECS),
        "the 'during' steps ran inside the ban ({:?})",
        banned_at.elapsed()
    );
    until_ban_over(banned_at).await;
    bosh_user_chats(&server, addr, attacker, "dave").await;
    w.chat("after").await;
    server.assert_still_serves().await;
}

/// One failed PLAIN login over WebSocket from `ip`.
async fn ws_fails_login(url: &str, ip: IpAddr, user: &str) {
    let mut ws = ws_connect_from(url, Some("xmpp"), None, Some(ip))
        .await
        .unwrap_or_else(|e| panic!("upgrade refused before the ban: {e:?}"));
    ws.open().await;
    ws.send(&format!(
        "<auth xmlns='{SASL}' mechanism='PLAIN'>{}</auth>",
        plain_b64(user, "guess")
    ))
    .await;
    let failure = ws.recv().await;
    assert!(failure.is("failure", SASL), "{failure:?}");
    assert!(failure.has_child("not-authorized", SASL), "{failure:?}");
}

/// One failed PLAIN login over BOSH from `ip`.
async fn bosh_fails_login(addr: SocketAddr, ip: IpAddr, user: &str) {
    let (mut b, resp) = Bosh::create_from(Some(ip), addr, 1, 2).await;
    if !resp.has_child("features", "http://etherx.jabber.org/streams") {
        b.poll_until(|e| e.is("features", "http://etherx.jabber.org/streams"))
            .await;
    }
    let resp = b
        .send(
            "",
            &format!(
                "<auth xmlns='{SASL}' mechanism='PLAIN'>{}</auth>",
                plain_b64(user, "guess")
            ),
        )
        .await;
    let failure = match resp.get_child("failure", SASL) {
        Some(f) => f.clone(),
        None => b.poll_until(|e| e.is("failure", SASL)).await,
    };
    assert!(failure.has_child("not-authorized", SASL), "{failure:?}");
}

/// A guesser failing `auth_address_ban_after` (3) logins over WebSocket, each on a new
/// stream, is refused on every transport for `address_ban_secs`; the account's owner logs in
/// over WebSocket from another address meanwhile (never locked out), and the guesser's
/// address is served again after the ban.
#[tokio::test]
async fn failed_logins_over_websocket_put_the_address_in_the_penalty_box() {
    let (server, addr) = start(|c| {
        // No delays here: this test is about the ban.
        c.limits.auth_address_failures_free = 100;
        c.limits.auth_account_failures_free = 100;
        c.limits.auth_address_ban_after = 3;
    })
    .await;
    let url = ws_url(addr);
    let mut w = Witnesses::login(&server).await;
    server.add_user("victim", "right").await;
    let attacker = loopback(2);
    for _ in 0..3 {
        ws_fails_login(&url, attacker, "victim").await;
    }
    ws_refused(&url, attacker).await;
    let banned_at = Instant::now();
    let raw = tcp_refused(&server, attacker).await;
    assert!(raw.contains("failed logins"), "{raw}");
    bosh_refused(addr, attacker).await;
    // The owner, from another address, is not locked out.
    let mut owner = ws_connect_from(&url, Some("xmpp"), None, Some(loopback(3)))
        .await
        .expect("the owner's upgrade");
    owner.login("victim", "right", "r").await;
    w.chat("during").await;
    assert!(banned_at.elapsed() < Duration::from_secs(BAN_SECS));
    until_ban_over(banned_at).await;
    ws_user_chats(&server, &url, attacker, "dave").await;
    w.chat("after").await;
    server.assert_still_serves().await;
}

/// Failed logins add up across transports: one over TCP, one over BOSH and one over
/// WebSocket from the same address reach `auth_address_ban_after` (3), and the address is
/// then refused on all three.
#[tokio::test]
async fn failed_logins_add_up_across_transports() {
    let (server, addr) = start(|c| {
        c.limits.auth_address_failures_free = 100;
        c.limits.auth_account_failures_free = 100;
        c.limits.auth_address_ban_after = 3;
    })
    .await;
    let url = ws_url(addr);
    let mut w = Witnesses::login(&server).await;
    server.add_user("victim", "right").await;
    let attacker = loopback(2);
    hard_support::tcp_fails_login(&server, attacker, "victim").await;
    bosh_fails_login(addr, attacker, "victim").await;
    // After two failures the address is not banned yet: the third attempt's upgrade is
    // accepted (and its login fails).
    ws_fails_login(&url, attacker, "victim").await;
    ws_refused(&url, attacker).await;
    tcp_refused(&server, attacker).await;
    bosh_refused(addr, attacker).await;
    bosh_user_chats(&server, addr, loopback(3), "carol").await;
    w.chat("during").await;
    server.assert_still_serves().await;
}
