//! Routing to remote domains and the checks on what peers send: stanzas for an unreachable
//! domain bounce with `remote-server-not-found`, for one that never answers with
//! `remote-server-timeout` (every queued stanza, not just the first); a peer that
//! authenticated as b.test cannot send from another domain (`invalid-from`), nor anything
//! before authenticating, and a wrong dialback key is refused.

mod s2s_support;

use std::time::{Duration, Instant};

use s2s_support::*;
use starling_core::config::S2sPolicy;
use starling_proto::framer::StreamEvent;
use starling_tests::{stanza_error_condition, Conn};

async fn lone_a(routes: Vec<starling_core::config::S2sRoute>, timeout: u64) -> Peer {
    lone_a_with(routes, timeout, as_is()).await
}

async fn lone_a_with(
    routes: Vec<starling_core::config::S2sRoute>,
    timeout: u64,
    tweak: Tweak,
) -> Peer {
    let ca = Ca::new("Test CA");
    Peer::start(PeerSpec {
        domain: "a.test",
        cert_names: &["a.test"],
        issuer: &ca,
        trusts: &ca,
        policy: S2sPolicy::Verify,
        s2s: free_port(),
        routes,
        connect_timeout_secs: timeout,
        tweak,
    })
    .await
}

#[tokio::test]
async fn stanzas_to_an_unreachable_domain_bounce_with_remote_server_not_found() {
    // A port nobody listens on, and a domain with no route at all (DNS is off in tests).
    // Not a port that was free a moment ago: under parallel tests another server may bind
    // it meanwhile. Port 1 (tcpmux) is not served on any machine the tests run on.
    let closed: std::net::SocketAddr = "127.0.0.1:1".parse().unwrap();
    let a = lone_a(vec![route("gone.test", closed)], 10).await;
    let mut alice = a.online("alice", "phone").await;
    for (i, to) in ["x@gone.test", "y@gone.test", "z@nowhere.test"]
        .iter()
        .enumerate()
    {
        alice
            .send(&format!(
                "<message to='{to}' id='u{i}' type='chat'><body>anyone?</body></message>"
            ))
            .await;
    }
    alice
        .send("<iq type='get' id='u3' to='gone.test'><ping xmlns='urn:xmpp:ping'/></iq>")
        .await;
    // The bounces come in any order: the domain without a route fails at once, the closed
    // port only once the connection attempt has failed.
    let mut pending: std::collections::BTreeSet<&str> = ["u0", "u1", "u2", "u3"].into();
    while !pending.is_empty() {
        let err = wait_for(&mut alice, "the bounces", |e| {
            e.attr("id").is_some_and(|id| pending.contains(id))
        })
        .await;
        assert_eq!(err.attr("type"), Some("error"), "{err:?}");
        assert_eq!(
            stanza_error_condition(&err).as_deref(),
            Some("remote-server-not-found"),
            "{err:?}"
        );
        pending.remove(err.attr("id").unwrap());
    }
    // Nothing is left behind: the failed stream is gone from the pool.
    let pool = a.server_pool();
    assert_eq!(pool.stream_count(), 0);
}

#[tokio::test]
async fn stanzas_to_a_server_that_never_answers_bounce_with_remote_server_timeout() {
    // Accepts connections and never says a word.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut sockets = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            sockets.push(s);
        }
    });
    let a = lone_a(vec![route("slow.test", addr)], 1).await;
    let mut alice = a.online("alice", "phone").await;
    let started = Instant::now();
    for i in 0..3 {
        alice
            .send(&format!(
                "<message to='bob@slow.test' id='t{i}'><body>hello?</body></message>"
            ))
            .await;
    }
    for id in ["t0", "t1", "t2"] {
        let err = wait_for(&mut alice, id, |e| e.attr("id") == Some(id)).await;
        assert_eq!(
            stanza_error_condition(&err).as_deref(),
            Some("remote-server-timeout"),
            "{err:?}"
        );
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "bounced after {took:?}; connect_timeout_secs is 1"
    );
    held.abort();
}

/// Two plaintext-for-tests servers, and a raw peer that claims b.test towards a.test with
/// a dialback key computed from b.test's secret (so a.test's check with b.test succeeds).
async fn raw_peer_authenticated_as_b() -> (Peer, Peer, Conn) {
    raw_peer_authenticated_as_b_with(as_is()).await
}

async fn raw_peer_authenticated_as_b_with(a_tweak: Tweak) -> (Peer, Peer, Conn) {
    let ca = Ca::new("Test CA");
    let (a, b) = pair_with(
        S2sPolicy::PlaintextForTests,
        S2sPolicy::PlaintextForTests,
        &ca,
        &ca,
        &["b.test"],
        a_tweak,
    )
    .await;
    let mut raw = open_raw(&a).await;
    let id = raw_id(&mut raw).await;
    let key = starling_s2s::dialback::key(&b.dialback_secret(), "a.test", "b.test", &id);
    raw.send(&format!(
        "<db:result from='b.test' to='a.test'>{key}</db:result>"
    ))
    .await;
    let answer = raw.recv().await;
    assert_eq!(answer.name(), "result", "{answer:?}");
    assert_eq!(answer.attr("type"), Some("valid"), "{answer:?}");
    (a, b, raw)
}

async fn open_raw(a: &Peer) -> Conn {
    let mut raw = Conn::connect(a.s2s).await;
    raw.send(
        "<?xml version='1.0'?><stream:stream xmlns='jabber:server' \
         xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' \
         from='b.test' to='a.test' version='1.0'>",
    )
    .await;
    raw
}

/// Reads a.test's header (returning its id) and features.
async fn raw_id(raw: &mut Conn) -> String {
    let id = match raw.next_event().await {
        Some(StreamEvent::Open(h)) => h.id.expect("stream id"),
        other => panic!("expected a header, got {other:?}"),
    };
    let features = raw.recv().await;
    assert!(
        features
            .get_child("dialback", starling_s2s::dialback::NS_FEATURE)
            .is_some(),
        "{features:?}"
    );
    id
}

#[tokio::test]
async fn a_peer_cannot_send_from_a_domain_it_did_not_authenticate() {
    let (a, _b, mut raw) = raw_peer_authenticated_as_b().await;
    let mut alice = a.online("alice", "phone").await;
    // Control: from the authenticated domain, the stanza is delivered (in jabber:client).
    raw.send("<message from='bob@b.test/x' to='alice@a.test/phone' type='chat'><body>real</body></message>")
        .await;
    let m = wait_for(&mut alice, "bob's message", |e| {
        is_msg_from(e, "bob@b.test")
    })
    .await;
    assert!(m.is("message", "jabber:client"));
    // Spoofed: from c.test, which this stream never proved. The stream ends; alice gets
    // nothing.
    raw.send("<message from='mallory@c.test' to='alice@a.test/phone' type='chat'><body>spoof</body></message>")
        .await;
    raw.expect_stream_error("invalid-from").await;
    alice
        .expect_none(Duration::from_millis(300), |e| e.name() == "message")
        .await;
}

#[tokio::test]
async fn a_peer_cannot_address_a_domain_outside_its_authenticated_pair() {
    let (_a, _b, mut raw) = raw_peer_authenticated_as_b().await;
    raw.send(
        "<message from='bob@b.test' to='carol@elsewhere.test'><body>relay me</body></message>",
    )
    .await;
    raw.expect_stream_error("host-unknown").await;
}

#[tokio::test]
async fn stanzas_before_authentication_and_wrong_dialback_keys_are_refused() {
    let ca = Ca::new("Test CA");
    let (a, _b) = pair(
        S2sPolicy::PlaintextForTests,
        S2sPolicy::PlaintextForTests,
        &ca,
        &ca,
        &["b.test"],
    )
    .await;
    let mut raw = open_raw(&a).await;
    raw_id(&mut raw).await;
    raw.send("<message from='bob@b.test' to='alice@a.test'><body>early</body></message>")
        .await;
    raw.expect_stream_error("not-authorized").await;

    let mut raw = open_raw(&a).await;
    raw_id(&mut raw).await;
    raw.send("<db:result from='b.test' to='a.test'>0123456789abcdef</db:result>")
        .await;
    let answer = raw.recv().await;
    assert_eq!(answer.attr("type"), Some("invalid"), "{answer:?}");
    raw.expect_stream_error("not-authorized").await;
}

#[tokio::test]
async fn a_stanza_over_the_s2s_size_limit_ends_the_stream() {
    let (a, _b, mut raw) =
        raw_peer_authenticated_as_b_with(Box::new(|c| c.s2s.max_stanza_bytes = 4096)).await;
    let mut alice = a.online("alice", "phone").await;
    // Under the limit: delivered.
    let small = "x".repeat(1000);
    raw.send(&format!(
        "<message from='bob@b.test' to='alice@a.test/phone'><body>{small}</body></message>"
    ))
    .await;
    wait_for(&mut alice, "the small message", |e| {
        is_msg_from(e, "bob@b.test")
    })
    .await;
    // Over it: policy-violation, nothing delivered.
    let big = "x".repeat(8000);
    raw.send(&format!(
        "<message from='bob@b.test' to='alice@a.test/phone'><body>{big}</body></message>"
    ))
    .await;
    raw.expect_stream_error("policy-violation").await;
    alice
        .expect_none(Duration::from_millis(300), |e| e.name() == "message")
        .await;
}

#[tokio::test]
async fn connections_per_remote_domain_are_capped() {
    let (a, b, _first) =
        raw_peer_authenticated_as_b_with(Box::new(|c| c.s2s.max_connections_per_domain = 1)).await;
    // A second stream authenticating as b.test is one too many.
    let mut second = open_raw(&a).await;
    let id = raw_id(&mut second).await;
    let key = starling_s2s::dialback::key(&b.dialback_secret(), "a.test", "b.test", &id);
    second
        .send(&format!(
            "<db:result from='b.test' to='a.test'>{key}</db:result>"
        ))
        .await;
    second.expect_stream_error("policy-violation").await;
}

#[tokio::test]
async fn the_queue_for_a_remote_domain_is_bounded() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut sockets = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            sockets.push(s);
        }
    });
    let a = lone_a_with(
        vec![route("slow.test", addr)],
        1,
        Box::new(|c| c.s2s.queue_size = 2),
    )
    .await;
    let mut alice = a.online("alice", "phone").await;
    for i in 0..5 {
        alice
            .send(&format!(
                "<message to='bob@slow.test' id='q{i}'><body>{i}</body></message>"
            ))
            .await;
    }
    let mut conditions = Vec::new();
    for _ in 0..5 {
        let err = wait_for(&mut alice, "a bounce", |e| {
            e.attr("id").is_some_and(|id| id.starts_with('q'))
        })
        .await;
        conditions.push(stanza_error_condition(&err).unwrap_or_default());
    }
    // Two wait in the queue (and time out with the stream); the other three are refused
    // at once.
    conditions.sort();
    assert_eq!(
        conditions,
        [
            "remote-server-timeout",
            "remote-server-timeout",
            "resource-constraint",
            "resource-constraint",
            "resource-constraint"
        ]
    );
    held.abort();
}

#[tokio::test]
async fn a_fast_peer_is_slowed_to_its_stanza_rate() {
    let (a, _b, mut raw) =
        raw_peer_authenticated_as_b_with(Box::new(|c| c.s2s.stanzas_per_second = 20)).await;
    let mut alice = a.online("alice", "phone").await;
    // A burst of 40 passes at once; the next 20 at 20 per second: about one second.
    let started = Instant::now();
    let mut all = String::new();
    for i in 0..60 {
        all.push_str(&format!(
            "<message from='bob@b.test' to='alice@a.test/phone' id='r{i}'><body>{i}</body></message>"
        ));
    }
    raw.send(&all).await;
    for i in 0..60 {
        let id = format!("r{i}");
        let m = wait_for(&mut alice, "a burst message", |e| e.name() == "message").await;
        assert_eq!(m.attr("id"), Some(id.as_str()), "in order, none lost");
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(800),
        "60 stanzas at 20/s with a burst of 40 took only {took:?}"
    );
}
