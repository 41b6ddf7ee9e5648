//! Catalogue, protocol abuse (docs/bad-input.md, P-entries): SASL replays, malformed SCRAM
//! messages, oversize SASL payloads, SASL elements outside an exchange, repeated failed
//! logins (progressive delays per address and per account), dialback on a client stream.
//! Each test checks the exact SASL failure or stream error, then that two normal users who
//! were chatting throughout still chat and a fresh user still logs in.

mod hard_support;

use std::time::Duration;

use base64::Engine;
use hard_support::{loopback, Witnesses};
use starling_sasl::{ScramClient, ScramHash};
use starling_tests::*;
use tokio::time::Instant;

fn b64(d: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(d)
}

fn unb64(s: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .unwrap()
}

/// Connected, STARTTLS done, stream re-opened: ready for SASL.
async fn ready(server: &TestServer) -> Conn {
    let mut c = Conn::connect(server.c2s).await;
    c.open("localhost").await;
    c.starttls().await;
    c
}

async fn ready_from(server: &TestServer, ip: std::net::IpAddr) -> Conn {
    let mut c = Conn::connect_from(server.c2s, ip).await;
    c.open("localhost").await;
    c.starttls().await;
    c
}

async fn server_with_alice() -> TestServer {
    let server = TestServer::start().await;
    server.add_user("alice", "secret").await;
    server
}

/// Sends a SASL `<response/>` and returns the answer.
async fn respond(c: &mut Conn, data: &[u8]) -> minidom::Element {
    c.send(&format!(
        "<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{}</response>",
        b64(data)
    ))
    .await;
    c.recv().await
}

/// A captured SCRAM exchange replayed on a new connection fails: the server's nonce differs,
/// so the old proof is worthless (RFC 5802 §9).
#[tokio::test]
async fn a_replayed_scram_exchange_is_not_authorized() {
    let server = server_with_alice().await;
    let mut w = Witnesses::login(&server).await;
    // A genuine exchange, recorded.
    let mut c = ready(&server).await;
    let mut client = ScramClient::new(ScramHash::Sha256, "alice", "secret", None, false);
    let first = client.client_first();
    let ch = c.auth_raw("SCRAM-SHA-256", &b64(&first)).await;
    assert_eq!(ch.name(), "challenge");
    let fin = client.handle_server_first(&unb64(&ch.text())).unwrap();
    let ok = respond(&mut c, &fin).await;
    assert_eq!(ok.name(), "success");
    // The same two messages on a new stream.
    let mut replay = ready(&server).await;
    let ch = replay.auth_raw("SCRAM-SHA-256", &b64(&first)).await;
    assert_eq!(ch.name(), "challenge");
    let answer = respond(&mut replay, &fin).await;
    assert_eq!(answer.name(), "failure");
    assert_eq!(sasl_condition(&answer), "not-authorized");
    w.chat("after").await;
    server.assert_still_serves().await;
}

/// Malformed SCRAM client-first messages are `malformed-request`; a proof of the wrong length
/// too; a wrong proof `not-authorized`. The stream lives on (up to the failure cap).
#[tokio::test]
async fn malformed_scram_messages_get_malformed_request() {
    let server = server_with_alice().await;
    let mut w = Witnesses::login(&server).await;
    for bad_first in [
        "x,,n=alice,r=abc",         // unknown GS2 flag
        "n,,r=abc",                 // no username
        "n,,n=alice",               // no nonce
        "n,,n=al=ZZice,r=abc",      // bad =XX escape in the username
        "n,,m=ext,n=alice,r=abc",   // reserved mandatory extension
        "p=tls-unique,,n=alice,r=", // binding on a non-PLUS mechanism
    ] {
        let mut c = ready(&server).await;
        let input = if bad_first.is_empty() {
            "=".to_owned()
        } else {
            b64(bad_first.as_bytes())
        };
        let answer = c.auth_raw("SCRAM-SHA-256", &input).await;
        assert_eq!(answer.name(), "failure", "{bad_first}: {answer:?}");
        assert_eq!(sasl_condition(&answer), "malformed-request", "{bad_first}");
    }
    // Client-final: a proof of the wrong length, and a nonce that is not ours.
    let mut c = ready(&server).await;
    let ch = c.auth_raw("SCRAM-SHA-256", &b64(b"n,,n=alice,r=abc")).await;
    let server_first = String::from_utf8(unb64(&ch.text())).unwrap();
    let nonce = server_first.split(',').next().unwrap();
    let short = format!("c=biws,{nonce},p={}", b64(b"short"));
    assert_eq!(
        sasl_condition(&respond(&mut c, short.as_bytes()).await),
        "malformed-request"
    );
    let mut c = ready(&server).await;
    c.auth_raw("SCRAM-SHA-256", &b64(b"n,,n=alice,r=abc")).await;
    let forged = format!("c=biws,r=abcforged,p={}", b64(&[0u8; 32]));
    assert_eq!(
        sasl_condition(&respond(&mut c, forged.as_bytes()).await),
        "not-authorized"
    );
    w.chat("after").await;
    server.assert_still_serves().await;
}

/// An oversize SASL payload (64 KiB of base64) is `malformed-request` without being decoded;
/// undecodable base64 is `incorrect-encoding`.
#[tokio::test]
async fn oversize_and_undecodable_sasl_payloads_are_refused() {
    let server = server_with_alice().await;
    let mut w = Witnesses::login(&server).await;
    let mut c = ready(&server).await;
    let huge = "QUFB".repeat(16 * 1024);
    let answer = c.auth_raw("SCRAM-SHA-256", &huge).await;
    assert_eq!(sasl_condition(&answer), "malformed-request");
    // Decodes to 6 KiB: above the mechanisms' 4 KiB message limit.
    let answer = c.auth_raw("PLAIN", &b64(&[b'a'; 6000])).await;
    assert_eq!(sasl_condition(&answer), "malformed-request");
    let mut c = ready(&server).await;
    let answer = c.auth_raw("PLAIN", "!!!not base64!!!").await;
    assert_eq!(sasl_condition(&answer), "incorrect-encoding");
    w.chat("after").await;
    server.assert_still_serves().await;
}

/// SASL `<response/>` or `<success/>` sent by the client outside an exchange closes the stream
/// with `not-authorized`; a `<db:result/>` (server dialback) on a client stream is not a
/// client element: `unsupported-stanza-type`.
#[tokio::test]
async fn sasl_elements_outside_an_exchange_and_dialback_on_c2s_are_refused() {
    let server = server_with_alice().await;
    let mut w = Witnesses::login(&server).await;
    for input in [
        "<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>AAAA</response>",
        "<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>",
    ] {
        let mut c = ready(&server).await;
        c.send(input).await;
        c.expect_stream_error("not-authorized").await;
    }
    let mut c = Conn::connect(server.c2s).await;
    c.open("localhost").await;
    c.send(
        "<db:result xmlns:db='jabber:server:dialback' from='evil.example' to='localhost'>\
         b4835385f37fe2895af6c196b59097b16862406db80559900d596ed8a2a7a8b</db:result>",
    )
    .await;
    c.expect_stream_error("unsupported-stanza-type").await;
    w.chat("after").await;
    server.assert_still_serves().await;
}

/// Guessing passwords from one address: after the free failures every attempt from that
/// address waits (doubling), and attempts queue; other addresses are not delayed; the
/// account's owner still logs in.
#[tokio::test]
async fn repeated_failures_from_one_address_are_progressively_delayed() {
    let server = TestServer::start_with(|c| {
        c.limits.auth_address_failures_free = 2;
        c.limits.auth_account_failures_free = 100;
        c.limits.auth_failure_delay_ms = 300;
        c.limits.auth_failure_max_delay_ms = 1200;
    })
    .await;
    server.add_user("alice", "secret").await;
    let mut w = Witnesses::login(&server).await;
    let guesser = loopback(3);
    // Two free failures: answered at once.
    for _ in 0..2 {
        let mut c = ready_from(&server, guesser).await;
        let t = Instant::now();
        assert_eq!(
            c.scram(ScramHash::Sha256, false, "alice", "guess")
                .await
                .unwrap_err(),
            "not-authorized"
        );
        assert!(
            t.elapsed() < Duration::from_millis(300),
            "{:?}",
            t.elapsed()
        );
    }
    // Then 300 ms, 600 ms (doubling) before each attempt is even checked.
    for expect in [300, 600] {
        let mut c = ready_from(&server, guesser).await;
        let t = Instant::now();
        assert_eq!(
            c.scram(ScramHash::Sha256, false, "alice", "guess")
                .await
                .unwrap_err(),
            "not-authorized"
        );
        let took = t.elapsed();
        assert!(
            took >= Duration::from_millis(expect),
            "{took:?} < {expect} ms"
        );
        assert!(took < Duration::from_millis(expect + 1000), "{took:?}");
    }
    // Attempts from the address wait in turn: while one waits the maximum delay (1200 ms),
    // a parallel one would have to wait longer than the maximum: temporary-auth-failure at
    // once (parallel connections do not multiply the guessing rate).
    let mut a = ready_from(&server, guesser).await;
    let t = Instant::now();
    let (ra, busy) = tokio::join!(a.scram(ScramHash::Sha256, false, "alice", "g1"), async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut b = ready_from(&server, guesser).await;
        let t = Instant::now();
        let r = b.scram(ScramHash::Sha256, false, "alice", "g2").await;
        (r, t.elapsed())
    });
    assert_eq!(ra.unwrap_err(), "not-authorized");
    assert!(
        t.elapsed() >= Duration::from_millis(1200),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(busy.0.unwrap_err(), "temporary-auth-failure");
    assert!(
        busy.1 < Duration::from_millis(600),
        "refused at once: {:?}",
        busy.1
    );
    // Another address is not delayed, and the account's owner logs in from it.
    let t = Instant::now();
    let mut owner = ready_from(&server, loopback(4)).await;
    owner
        .scram(ScramHash::Sha256, false, "alice", "secret")
        .await
        .expect("owner logs in");
    assert!(
        t.elapsed() < Duration::from_millis(1000),
        "{:?}",
        t.elapsed()
    );
    w.chat("after").await;
    server.assert_still_serves().await;
}

/// Guessing one account's password from many addresses: after the free failures each
/// attempt for that account waits, from any address; other accounts are not delayed; a
/// success forgets the account's failures.
#[tokio::test]
async fn repeated_failures_for_one_account_are_delayed_from_any_address() {
    let server = TestServer::start_with(|c| {
        c.limits.auth_address_failures_free = 100;
        c.limits.auth_account_failures_free = 2;
        c.limits.auth_failure_delay_ms = 500;
        c.limits.auth_failure_max_delay_ms = 500;
    })
    .await;
    server.add_user("alice", "secret").await;
    server.add_user("bob", "secret").await;
    let mut w = Witnesses::login(&server).await;
    for i in 0..2 {
        let mut c = ready_from(&server, loopback(10 + i)).await;
        let t = Instant::now();
        assert_eq!(
            c.scram(ScramHash::Sha256, false, "alice", "guess")
                .await
                .unwrap_err(),
            "not-authorized"
        );
        assert!(t.elapsed() < Duration::from_millis(500));
    }
    let mut c = ready_from(&server, loopback(20)).await;
    let t = Instant::now();
    assert_eq!(
        c.scram(ScramHash::Sha256, false, "alice", "guess")
            .await
            .unwrap_err(),
        "not-authorized"
    );
    assert!(
        t.elapsed() >= Duration::from_millis(500),
        "{:?}",
        t.elapsed()
    );
    // Bob's login from the same address is not delayed.
    let mut c = ready_from(&server, loopback(20)).await;
    let t = Instant::now();
    c.scram(ScramHash::Sha256, false, "bob", "secret")
        .await
        .expect("bob");
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "{:?}",
        t.elapsed()
    );
    // The owner is delayed, not locked out; the success resets the account.
    let mut c = ready_from(&server, loopback(21)).await;
    let t = Instant::now();
    c.scram(ScramHash::Sha256, false, "alice", "secret")
        .await
        .expect("owner");
    assert!(t.elapsed() >= Duration::from_millis(500));
    let mut c = ready_from(&server, loopback(22)).await;
    let t = Instant::now();
    c.scram(ScramHash::Sha256, false, "alice", "secret")
        .await
        .expect("owner again");
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "{:?}",
        t.elapsed()
    );
    w.chat("after").await;
    server.assert_still_serves().await;
}
