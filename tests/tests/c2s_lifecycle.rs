//! Transcripts: the life of a client stream: handshake and idle timeouts, whitespace
//! keepalives, clean close by the client, and server shutdown (`system-shutdown`).

use std::time::{Duration, Instant};

use starling_proto::jid::Jid;
use starling_sasl::ScramHash;
use starling_tests::*;

#[tokio::test]
async fn a_stalled_handshake_gets_connection_timeout() {
    let server = TestServer::start_with(|c| c.c2s.handshake_timeout_secs = 1).await;
    server.add_user("alice", "pw").await;
    let started = Instant::now();
    // Connected, nothing sent.
    let mut silent = Conn::connect(server.c2s).await;
    // Stream opened, then nothing.
    let mut opened = Conn::connect(server.c2s).await;
    opened.open("localhost").await;
    // Inside TLS, before SASL.
    let mut tls = Conn::connect(server.c2s).await;
    tls.open("localhost").await;
    tls.starttls().await;
    // Authenticated, never bound.
    let mut unbound = Conn::connect(server.c2s).await;
    unbound.open("localhost").await;
    unbound.starttls().await;
    unbound
        .scram(ScramHash::Sha256, false, "alice", "pw")
        .await
        .unwrap();
    for c in [&mut silent, &mut opened, &mut tls, &mut unbound] {
        c.expect_stream_error("connection-timeout").await;
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    // A direct-TLS connection that never does the TLS handshake is just closed.
    let mut raw = Conn::connect(server.direct_tls).await;
    assert!(raw
        .read_raw_until_closed(Duration::from_secs(5))
        .await
        .is_empty());
    // Trickling bytes does not extend the deadline.
    let mut trickle = Conn::connect(server.c2s).await;
    trickle.open("localhost").await;
    let t0 = Instant::now();
    let mut closed = false;
    while t0.elapsed() < Duration::from_secs(4) {
        if !trickle.try_send_bytes(b" ").await {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if !closed {
        trickle.expect_stream_error("connection-timeout").await;
    }
    assert!(
        t0.elapsed() < Duration::from_secs(4),
        "closed by the deadline"
    );
    server.assert_still_serves().await;
}

#[tokio::test]
async fn an_idle_session_gets_connection_timeout() {
    let server = TestServer::start_with(|c| c.c2s.idle_timeout_secs = 1).await;
    server.add_user("alice", "pw").await;
    let mut alice = server.login("alice", "pw", "a").await;
    let started = Instant::now();
    alice.expect_stream_error("connection-timeout").await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "{took:?}"
    );
    server
        .wait_unbound(&Jid::parse("alice@localhost/a").unwrap())
        .await;
    server.assert_still_serves().await;
}

#[tokio::test]
async fn whitespace_keepalives_keep_an_idle_session_alive() {
    let server = TestServer::start_with(|c| c.c2s.idle_timeout_secs = 1).await;
    server.add_user("alice", "pw").await;
    let mut alice = server.login("alice", "pw", "a").await;
    // Three idle timeouts long, with only a space every 300 ms.
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        alice.send(" ").await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    alice.ping_server().await;
    assert!(server
        .server()
        .router()
        .session(&Jid::parse("alice@localhost/a").unwrap())
        .is_some());
    // Stanzas count as traffic too.
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(2) {
        alice.ping_server().await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Then silence ends it.
    alice.expect_stream_error("connection-timeout").await;
}

#[tokio::test]
async fn the_client_closes_its_stream_and_the_server_answers_and_forgets_it() {
    let server = TestServer::start().await;
    server.add_user("alice", "pw").await;
    server.add_user("bob", "pw").await;
    let mut alice = server.login("alice", "pw", "a").await;
    alice.available().await;
    alice.close().await;
    let jid = Jid::parse("alice@localhost/a").unwrap();
    server.wait_unbound(&jid).await;
    // A TCP connection dropped without a closing tag is forgotten too.
    let bob = server.login("bob", "pw", "b").await;
    drop(bob);
    server
        .wait_unbound(&Jid::parse("bob@localhost/b").unwrap())
        .await;
    assert_eq!(server.server().router().session_count(), 0);
    // Closing before authenticating is answered as well.
    let mut c = Conn::connect(server.c2s).await;
    c.open("localhost").await;
    c.close().await;
}

#[tokio::test]
async fn server_shutdown_ends_every_stream_with_system_shutdown() {
    let mut server = TestServer::start().await;
    server.add_user("alice", "pw").await;
    let mut alice = server.login("alice", "pw", "a").await;
    alice.available().await;
    let mut direct = Conn::connect_direct_tls(server.direct_tls).await;
    direct.open("localhost").await;
    direct
        .scram(ScramHash::Sha256, true, "alice", "pw")
        .await
        .unwrap();
    direct.bind(Some("b")).await;
    let mut unauthenticated = Conn::connect(server.c2s).await;
    unauthenticated.open("localhost").await;
    let addr = server.c2s;
    server.stop().await;
    alice.expect_stream_error("system-shutdown").await;
    direct.expect_stream_error("system-shutdown").await;
    unauthenticated.expect_stream_error("system-shutdown").await;
    // Nothing listens any more.
    match tokio::net::TcpStream::connect(addr).await {
        Err(_) => {}
        Ok(mut s) => {
            use tokio::io::AsyncReadExt;
            let mut buf = [0u8; 64];
            let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf))
                .await
                .map(|r| r.unwrap_or(0))
                .unwrap_or(0);
            assert_eq!(n, 0, "no stream served after shutdown");
        }
    }
}
