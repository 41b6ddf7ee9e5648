//! Transcripts: a client logs in over STARTTLS and direct TLS, and two clients chat.

use starling_sasl::ScramHash;
use starling_tests::*;

#[tokio::test]
async fn alice_logs_in_and_chats_with_bob() {
    let server = TestServer::start().await;
    server.add_user("alice", "wonderland").await;
    server.add_user("bob", "builder").await;
    let mut alice = server.login("alice", "wonderland", "phone").await;
    let mut bob = server.login("bob", "builder", "laptop").await;
    alice.available().await;
    bob.available().await;
    // alice sends to bob's bare JID; bob's only available resource receives it, with the
    // 'from' stamped by the server.
    alice
        .send("<message to='bob@localhost' type='chat' id='m1'><body>hi bob</body></message>")
        .await;
    let got = bob.recv_until(|e| e.name() == "message").await;
    assert_eq!(got.attr("from"), Some("alice@localhost/phone"));
    assert_eq!(got.attr("to"), Some("bob@localhost"));
    assert_eq!(
        got.get_child("body", "jabber:client").unwrap().text(),
        "hi bob"
    );
    // bob answers alice's full JID.
    bob.send("<message to='alice@localhost/phone' type='chat'><body>hi alice</body></message>")
        .await;
    let got = alice.recv_until(|e| e.name() == "message").await;
    assert_eq!(got.attr("from"), Some("bob@localhost/laptop"));
    assert_eq!(
        got.get_child("body", "jabber:client").unwrap().text(),
        "hi alice"
    );
    alice.close().await;
    bob.close().await;
}

#[tokio::test]
async fn scram_variants_and_plain_succeed_and_fail_properly() {
    let server = TestServer::start().await;
    server.add_user("carol", "s3cret").await;
    for (hash, plus) in [
        (ScramHash::Sha1, false),
        (ScramHash::Sha256, false),
        (ScramHash::Sha1, true),
        (ScramHash::Sha256, true),
    ] {
        let mut c = Conn::connect(server.c2s).await;
        c.open("localhost").await;
        c.starttls().await;
        let features = c.scram(hash, plus, "carol", "s3cret").await.expect("login");
        assert!(features
            .get_child("bind", starling_proto::ns::BIND)
            .is_some());
        let jid = c.bind(None).await;
        assert_eq!(jid.bare().as_str(), "carol@localhost");
        let mut c = Conn::connect(server.c2s).await;
        c.open("localhost").await;
        c.starttls().await;
        assert_eq!(
            c.scram(hash, plus, "carol", "wrong").await.unwrap_err(),
            "not-authorized"
        );
    }
    let mut c = Conn::connect(server.c2s).await;
    c.open("localhost").await;
    c.starttls().await;
    assert_eq!(
        c.plain("carol", "nope").await.unwrap_err(),
        "not-authorized"
    );
    c.plain("carol", "s3cret").await.expect("PLAIN over TLS");
}

#[tokio::test]
async fn direct_tls_login() {
    let server = TestServer::start().await;
    server.add_user("dave", "pw-dave").await;
    let mut c = Conn::connect_direct_tls(server.direct_tls).await;
    let features = c.open("localhost").await;
    assert!(
        features
            .get_child("starttls", starling_proto::ns::TLS)
            .is_none(),
        "no STARTTLS inside TLS"
    );
    c.scram(ScramHash::Sha256, true, "dave", "pw-dave")
        .await
        .expect("SCRAM-PLUS over direct TLS");
    let jid = c.bind(Some("tablet")).await;
    assert_eq!(jid.as_str(), "dave@localhost/tablet");
}
