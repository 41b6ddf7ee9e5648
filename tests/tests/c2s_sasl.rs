//! Transcripts: SASL on client streams (RFC 6120 §6): each mechanism succeeding and failing,
//! SCRAM-PLUS with both channel-binding types, downgrade and binding-mismatch detection, the
//! failure conditions of §6.5, and the host staying fixed across stream restarts.

use base64::Engine;
use minidom::Element;
use starling_proto::ns;
use starling_sasl::{ChannelBinding, ChannelBindingType, ScramClient, ScramHash};
use starling_tests::*;

fn b64(d: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(d)
}

fn unb64(s: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .unwrap()
}

fn mechanisms(features: &Element) -> Vec<String> {
    features
        .get_child("mechanisms", ns::SASL)
        .map(|m| m.children().map(|c| c.text()).collect())
        .unwrap_or_default()
}

/// Connected, STARTTLS done, stream re-opened: ready for SASL. Returns the features too.
async fn tls_conn(server: &TestServer) -> (Conn, Element) {
    let mut c = Conn::connect(server.c2s).await;
    c.open("localhost").await;
    let features = c.starttls().await;
    (c, features)
}

async fn server_with_alice() -> TestServer {
    let server = TestServer::start().await;
    server.add_user("alice", "wonderland").await;
    server
}

#[tokio::test]
async fn every_offered_mechanism_succeeds_with_the_right_password_and_fails_with_a_wrong_one() {
    let server = server_with_alice().await;
    let (_, features) = tls_conn(&server).await;
    let mut offered = mechanisms(&features);
    offered.sort();
    assert_eq!(
        offered,
        [
            "PLAIN",
            "SCRAM-SHA-1",
            "SCRAM-SHA-1-PLUS",
            "SCRAM-SHA-256",
            "SCRAM-SHA-256-PLUS"
        ]
    );
    // XEP-0440: the channel-binding types are advertised.
    let cb: Vec<_> = features
        .get_child("sasl-channel-binding", "urn:xmpp:sasl-cb:0")
        .expect("XEP-0440 element")
        .children()
        .filter_map(|c| c.attr("type").map(str::to_owned))
        .collect();
    assert!(cb.contains(&"tls-exporter".to_owned()), "{cb:?}");
    assert!(cb.contains(&"tls-server-end-point".to_owned()), "{cb:?}");

    for hash in [ScramHash::Sha1, ScramHash::Sha256] {
        for plus in [false, true] {
            let (mut c, _) = tls_conn(&server).await;
            let features = c
                .scram(hash, plus, "alice", "wonderland")
                .await
                .unwrap_or_else(|e| panic!("{hash:?} plus={plus}: {e}"));
            assert!(features.get_child("bind", ns::BIND).is_some());
            let (mut c, _) = tls_conn(&server).await;
            assert_eq!(
                c.scram(hash, plus, "alice", "looking-glass")
                    .await
                    .unwrap_err(),
                "not-authorized",
                "{hash:?} plus={plus}"
            );
            // An unknown user fails the same way (no account enumeration).
            let (mut c, _) = tls_conn(&server).await;
            assert_eq!(
                c.scram(hash, plus, "mallory", "x").await.unwrap_err(),
                "not-authorized"
            );
        }
    }
    let (mut c, _) = tls_conn(&server).await;
    assert_eq!(
        c.plain("alice", "looking-glass").await.unwrap_err(),
        "not-authorized"
    );
    assert_eq!(
        c.plain("mallory", "wonderland").await.unwrap_err(),
        "not-authorized"
    );
    c.plain("alice", "wonderland")
        .await
        .expect("PLAIN over TLS");
    assert_eq!(c.bind(None).await.bare().as_str(), "alice@localhost");
}

#[tokio::test]
async fn scram_plus_with_tls_server_end_point_succeeds() {
    let server = server_with_alice().await;
    let end_point = server.cert_end_point_hash();
    assert_eq!(end_point.len(), 32, "SHA-256 of the certificate");
    for hash in [ScramHash::Sha1, ScramHash::Sha256] {
        let (mut c, _) = tls_conn(&server).await;
        let binding = ChannelBinding {
            kind: ChannelBindingType::TlsServerEndPoint,
            data: end_point.clone(),
        };
        let client = ScramClient::new(hash, "alice", "wonderland", Some(binding), true);
        assert!(client.mechanism().is_plus());
        c.scram_with(client)
            .await
            .expect("tls-server-end-point binding accepted");
        assert_eq!(c.bind(Some("ep")).await.as_str(), "alice@localhost/ep");
    }
    // The same over direct TLS.
    let mut c = Conn::connect_direct_tls(server.direct_tls).await;
    c.open("localhost").await;
    let binding = ChannelBinding {
        kind: ChannelBindingType::TlsServerEndPoint,
        data: end_point,
    };
    c.scram_with(ScramClient::new(
        ScramHash::Sha256,
        "alice",
        "wonderland",
        Some(binding),
        true,
    ))
    .await
    .expect("direct TLS with tls-server-end-point");
}

#[tokio::test]
async fn wrong_channel_binding_data_fails() {
    let server = server_with_alice().await;
    // tls-exporter data of some other connection (here: all zeros).
    let (mut c, _) = tls_conn(&server).await;
    let binding = ChannelBinding {
        kind: ChannelBindingType::TlsExporter,
        data: vec![0; 32],
    };
    let client = ScramClient::new(
        ScramHash::Sha256,
        "alice",
        "wonderland",
        Some(binding),
        true,
    );
    assert_eq!(c.scram_with(client).await.unwrap_err(), "not-authorized");
    // The exporter of a *different* real connection: what a man in the middle would relay.
    let (other, _) = tls_conn(&server).await;
    let (mut c, _) = tls_conn(&server).await;
    let binding = ChannelBinding {
        kind: ChannelBindingType::TlsExporter,
        data: other.tls_exporter(),
    };
    let client = ScramClient::new(ScramHash::Sha1, "alice", "wonderland", Some(binding), true);
    assert_eq!(c.scram_with(client).await.unwrap_err(), "not-authorized");
    // A certificate hash that is not the server's certificate.
    let (mut c, _) = tls_conn(&server).await;
    let mut wrong = server.cert_end_point_hash();
    wrong[0] ^= 1;
    let binding = ChannelBinding {
        kind: ChannelBindingType::TlsServerEndPoint,
        data: wrong,
    };
    let client = ScramClient::new(
        ScramHash::Sha256,
        "alice",
        "wonderland",
        Some(binding),
        true,
    );
    assert_eq!(c.scram_with(client).await.unwrap_err(), "not-authorized");
}

#[tokio::test]
async fn the_y_flag_when_plus_was_offered_is_a_downgrade_and_fails() {
    let server = server_with_alice().await;
    let (mut c, features) = tls_conn(&server).await;
    assert!(mechanisms(&features).contains(&"SCRAM-SHA-256-PLUS".to_owned()));
    // A client that believes -PLUS was not offered (stripped by an attacker) sends 'y'.
    let binding = ChannelBinding {
        kind: ChannelBindingType::TlsExporter,
        data: c.tls_exporter(),
    };
    let client = ScramClient::new(
        ScramHash::Sha256,
        "alice",
        "wonderland",
        Some(binding),
        false,
    );
    assert_eq!(client.mechanism().name(), "SCRAM-SHA-256");
    assert_eq!(c.scram_with(client).await.unwrap_err(), "not-authorized");
    // A hand-written 'y' client-first on SCRAM-SHA-1 as well.
    let (mut c, _) = tls_conn(&server).await;
    let answer = c
        .auth_raw("SCRAM-SHA-1", &b64(b"y,,n=alice,r=abcdefghijklmnop"))
        .await;
    assert_eq!(answer.name(), "failure", "{answer:?}");
    assert_eq!(sasl_condition(&answer), "not-authorized");
}

#[tokio::test]
async fn plain_is_never_offered_or_accepted_without_tls() {
    // With TLS required (the default) no mechanism is offered before STARTTLS...
    let server = server_with_alice().await;
    let mut c = Conn::connect(server.c2s).await;
    let features = c.open("localhost").await;
    assert!(mechanisms(&features).is_empty(), "{features:?}");
    let starttls = features.get_child("starttls", ns::TLS).expect("starttls");
    assert!(starttls.get_child("required", ns::TLS).is_some());
    // ... and PLAIN (or anything) is refused with encryption-required.
    let msg = b64(&starling_sasl::plain_message(None, "alice", "wonderland"));
    let answer = c.auth_raw("PLAIN", &msg).await;
    assert_eq!(sasl_condition(&answer), "encryption-required");
    let answer = c.auth_raw("SCRAM-SHA-256", "").await;
    assert_eq!(sasl_condition(&answer), "encryption-required");

    // With TLS optional, SCRAM is offered in the clear but PLAIN still is not.
    let server = TestServer::start_with(|c| c.c2s.require_tls = false).await;
    server.add_user("alice", "wonderland").await;
    let mut c = Conn::connect(server.c2s).await;
    let features = c.open("localhost").await;
    let offered = mechanisms(&features);
    assert!(offered.contains(&"SCRAM-SHA-256".to_owned()), "{offered:?}");
    assert!(!offered.contains(&"PLAIN".to_owned()), "{offered:?}");
    assert!(!offered.iter().any(|m| m.ends_with("-PLUS")), "{offered:?}");
    let answer = c.auth_raw("PLAIN", &msg).await;
    assert_eq!(sasl_condition(&answer), "encryption-required");
    c.scram(ScramHash::Sha256, false, "alice", "wonderland")
        .await
        .expect("SCRAM without TLS when TLS is optional");
}

#[tokio::test]
async fn external_is_not_offered_and_unknown_mechanisms_are_invalid() {
    let server = server_with_alice().await;
    let (mut c, features) = tls_conn(&server).await;
    assert!(!mechanisms(&features).contains(&"EXTERNAL".to_owned()));
    let answer = c.auth_raw("EXTERNAL", "=").await;
    assert_eq!(sasl_condition(&answer), "invalid-mechanism");
    let answer = c.auth_raw("DIGEST-MD5", "").await;
    assert_eq!(sasl_condition(&answer), "invalid-mechanism");
    // Mechanism names are case-sensitive.
    let (mut c, _) = tls_conn(&server).await;
    let answer = c.auth_raw("scram-sha-256", "").await;
    assert_eq!(sasl_condition(&answer), "invalid-mechanism");
    // No mechanism attribute at all.
    c.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>")
        .await;
    let answer = c.recv().await;
    assert_eq!(sasl_condition(&answer), "invalid-mechanism");
    // After failures (below the cap) the same stream can still authenticate.
    c.scram(ScramHash::Sha256, true, "alice", "wonderland")
        .await
        .expect("login after failures");
}

#[tokio::test]
async fn abort_gives_aborted_and_the_stream_may_try_again() {
    let server = server_with_alice().await;
    let (mut c, _) = tls_conn(&server).await;
    let mut client = ScramClient::new(ScramHash::Sha256, "alice", "wonderland", None, true);
    let challenge = c
        .auth_raw("SCRAM-SHA-256", &b64(&client.client_first()))
        .await;
    assert_eq!(challenge.name(), "challenge");
    c.send("<abort xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>")
        .await;
    let answer = c.recv().await;
    assert_eq!(answer.name(), "failure");
    assert_eq!(sasl_condition(&answer), "aborted");
    // Aborts do not count as failed attempts: several in a row are fine.
    for _ in 0..4 {
        c.auth_raw("SCRAM-SHA-256", "").await;
        c.send("<abort xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>")
            .await;
        assert_eq!(sasl_condition(&c.recv().await), "aborted");
    }
    c.scram(ScramHash::Sha256, false, "alice", "wonderland")
        .await
        .expect("login after abort");
}

#[tokio::test]
async fn malformed_base64_is_incorrect_encoding() {
    let server = server_with_alice().await;
    let (mut c, _) = tls_conn(&server).await;
    let answer = c.auth_raw("SCRAM-SHA-256", "!!not base64!!").await;
    assert_eq!(sasl_condition(&answer), "incorrect-encoding");
    let answer = c.auth_raw("PLAIN", "AGFsaWNl=AA").await;
    assert_eq!(sasl_condition(&answer), "incorrect-encoding");
    // In a <response/> too.
    let (mut c, _) = tls_conn(&server).await;
    let mut client = ScramClient::new(ScramHash::Sha1, "alice", "wonderland", None, true);
    let challenge = c
        .auth_raw("SCRAM-SHA-1", &b64(&client.client_first()))
        .await;
    assert_eq!(challenge.name(), "challenge");
    c.send("<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>%%%</response>")
        .await;
    assert_eq!(sasl_condition(&c.recv().await), "incorrect-encoding");
}

#[tokio::test]
async fn an_empty_auth_gets_an_empty_challenge() {
    let server = server_with_alice().await;
    // SCRAM: the client-first message comes in the response.
    let (mut c, _) = tls_conn(&server).await;
    let mut client = ScramClient::new(ScramHash::Sha256, "alice", "wonderland", None, true);
    let challenge = c.auth_raw("SCRAM-SHA-256", "").await;
    assert_eq!(challenge.name(), "challenge", "{challenge:?}");
    assert!(challenge.text().trim().is_empty(), "{challenge:?}");
    c.send(&format!(
        "<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{}</response>",
        b64(&client.client_first())
    ))
    .await;
    let server_first = c.recv().await;
    assert_eq!(server_first.name(), "challenge");
    let reply = client
        .handle_server_first(&unb64(&server_first.text()))
        .unwrap();
    c.send(&format!(
        "<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{}</response>",
        b64(&reply)
    ))
    .await;
    let success = c.recv().await;
    assert_eq!(success.name(), "success", "{success:?}");
    client.verify_server_final(&unb64(&success.text())).unwrap();
    // PLAIN: likewise.
    let (mut c, _) = tls_conn(&server).await;
    let challenge = c.auth_raw("PLAIN", "").await;
    assert_eq!(challenge.name(), "challenge");
    assert!(challenge.text().is_empty());
    c.send(&format!(
        "<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{}</response>",
        b64(&starling_sasl::plain_message(None, "alice", "wonderland"))
    ))
    .await;
    assert_eq!(c.recv().await.name(), "success");
}

#[tokio::test]
async fn an_authzid_of_another_user_is_invalid_authzid() {
    let server = server_with_alice().await;
    server.add_user("bob", "builder").await;
    let (mut c, _) = tls_conn(&server).await;
    let client = ScramClient::new(ScramHash::Sha256, "alice", "wonderland", None, true)
        .with_authzid("bob@localhost");
    assert_eq!(c.scram_with(client).await.unwrap_err(), "invalid-authzid");
    let msg = b64(&starling_sasl::plain_message(
        Some("bob@localhost"),
        "alice",
        "wonderland",
    ));
    let answer = c.auth_raw("PLAIN", &msg).await;
    assert_eq!(sasl_condition(&answer), "invalid-authzid");
    // Asking to be yourself is allowed.
    let (mut c, _) = tls_conn(&server).await;
    let client = ScramClient::new(ScramHash::Sha256, "alice", "wonderland", None, true)
        .with_authzid("alice@localhost");
    c.scram_with(client).await.expect("authzid = own JID");
    assert_eq!(c.bind(None).await.bare().as_str(), "alice@localhost");
}

#[tokio::test]
async fn too_many_sasl_failures_are_a_policy_violation() {
    let server = server_with_alice().await;
    let (mut c, _) = tls_conn(&server).await;
    let mut failures = 0;
    loop {
        c.send(&format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{}</auth>",
            b64(&starling_sasl::plain_message(None, "alice", "guess"))
        ))
        .await;
        match c.next_event().await {
            Some(starling_proto::framer::StreamEvent::Stanza(el)) if el.name() == "failure" => {
                assert_eq!(sasl_condition(&el), "not-authorized");
                failures += 1;
                assert!(failures <= 5, "RFC 6120 §6.4.5: at most a few retries");
            }
            Some(starling_proto::framer::StreamEvent::Stanza(el)) if el.name() == "error" => {
                assert!(
                    el.get_child("policy-violation", ns::STREAM_ERRORS)
                        .is_some(),
                    "{el:?}"
                );
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(failures >= 2, "at least two retries allowed");
    server.assert_still_serves().await;
}

#[tokio::test]
async fn the_host_may_not_change_across_a_stream_restart() {
    let server = TestServer::start_with(|c| {
        c.server.hosts = vec!["localhost".into(), "example.net".into()];
    })
    .await;
    server.add_user("alice", "wonderland").await;
    // After STARTTLS.
    let mut c = Conn::connect(server.c2s).await;
    c.open("localhost").await;
    c.starttls_only().await;
    c.send(&Conn::header("example.net")).await;
    c.expect_stream_error("host-unknown").await;
    // After SASL (CVE-2018-10847): authenticated on localhost, restart asking for example.net.
    let (mut c, _) = tls_conn(&server).await;
    let mut client = ScramClient::new(ScramHash::Sha256, "alice", "wonderland", None, true);
    let challenge = c
        .auth_raw("SCRAM-SHA-256", &b64(&client.client_first()))
        .await;
    let reply = client
        .handle_server_first(&unb64(&challenge.text()))
        .unwrap();
    c.send(&format!(
        "<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{}</response>",
        b64(&reply)
    ))
    .await;
    assert_eq!(c.recv().await.name(), "success");
    c.reset_parser();
    c.send(&Conn::header("example.net")).await;
    c.expect_stream_error("host-unknown").await;
    server.assert_still_serves().await;
}

#[tokio::test]
async fn a_second_auth_after_success_is_refused() {
    let server = server_with_alice().await;
    let (mut c, _) = tls_conn(&server).await;
    let features = c
        .scram(ScramHash::Sha256, false, "alice", "wonderland")
        .await
        .unwrap();
    assert!(mechanisms(&features).is_empty(), "no SASL after SASL");
    c.send(&format!(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{}</auth>",
        b64(&starling_sasl::plain_message(None, "alice", "wonderland"))
    ))
    .await;
    c.expect_stream_error("policy-violation").await;
}

/// The salt the server offers in SCRAM-SHA-256 for `user` (the server-first message's `s=`).
async fn offered_salt(server: &TestServer, user: &str) -> String {
    let (mut c, _) = tls_conn(server).await;
    let mut client = ScramClient::new(ScramHash::Sha256, user, "whatever", None, true);
    let first = b64(&client.client_first());
    c.send(&format!(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-256'>{first}</auth>"
    ))
    .await;
    let challenge = c.recv().await;
    assert_eq!(challenge.name(), "challenge", "{challenge:?}");
    let text = String::from_utf8(unb64(&challenge.text())).unwrap();
    text.split(',')
        .find_map(|a| a.strip_prefix("s="))
        .expect("server-first has a salt")
        .to_owned()
}

#[tokio::test]
async fn unknown_users_get_fake_salts_that_survive_a_restart() {
    // A salt that changed at every restart would tell an observer the account does not
    // exist (real accounts keep theirs); the fake salts are keyed by a persistent secret.
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("data");
    let mut first = TestServer::start_with(|c| c.server.data_dir = dir.clone()).await;
    first.add_user("alice", "pw").await;
    let ghost_before = offered_salt(&first, "ghost").await;
    let alice_before = offered_salt(&first, "alice").await;
    assert_eq!(offered_salt(&first, "ghost").await, ghost_before);
    assert_ne!(offered_salt(&first, "phantom").await, ghost_before);
    first.stop().await;
    let second = TestServer::start_with(|c| c.server.data_dir = dir.clone()).await;
    assert_eq!(offered_salt(&second, "ghost").await, ghost_before);
    assert_eq!(offered_salt(&second, "alice").await, alice_before);
    // Another installation has another secret.
    let other = TestServer::start().await;
    assert_ne!(offered_salt(&other, "ghost").await, ghost_before);
}
