//! Client <-> server exchanges for every mechanism, the way the stream layer drives them,
//! and the ways they must fail (RFC 5802 §5–§7, RFC 7677, RFC 9266, RFC 5929, RFC 4616,
//! RFC 4422 appendix A; security checklist items 26–29).

use starling_sasl::*;

const ITER: u32 = DEFAULT_ITERATIONS;

fn exporter() -> ChannelBinding {
    ChannelBinding {
        kind: ChannelBindingType::TlsExporter,
        data: vec![0x11; 32],
    }
}

fn end_point() -> ChannelBinding {
    ChannelBinding {
        kind: ChannelBindingType::TlsServerEndPoint,
        data: vec![0x22; 32],
    }
}

/// What the server saw at the end of an exchange: the result of the last step.
struct Run {
    server_first: Option<Vec<u8>>,
    result: Result<Step, Failure>,
}

/// Runs a SCRAM exchange; `stored` are the account's credentials (`None` = no such user);
/// `tamper` may change the client-final message before the server sees it.
fn scram_run(
    client: &mut ScramClient,
    mut server: ServerSession,
    stored: Option<ScramCredentials>,
    tamper: impl FnOnce(Vec<u8>) -> Vec<u8>,
) -> Run {
    let first = client.client_first();
    let hash = match server.step(&first) {
        Ok(Step::NeedCredentials { hash, .. }) => hash,
        other => {
            return Run {
                server_first: None,
                result: other,
            }
        }
    };
    let stored = stored.filter(|c| c.hash == hash);
    let server_first = match server.provide_credentials(stored) {
        Ok(Step::Challenge(c)) => c,
        other => {
            return Run {
                server_first: None,
                result: other,
            }
        }
    };
    let client_final = client.handle_server_first(&server_first).unwrap();
    let result = server.step(&tamper(client_final));
    Run {
        server_first: Some(server_first),
        result,
    }
}

fn creds(hash: ScramHash, password: &str) -> ScramCredentials {
    new_credentials(password, hash, ITER).unwrap()
}

fn assert_success(run: &Run, client: &mut ScramClient, user: &str, authzid: Option<&str>) {
    match &run.result {
        Ok(Step::Success {
            username,
            authzid: got,
            additional_data: Some(data),
        }) => {
            assert_eq!(username, user);
            assert_eq!(got.as_deref(), authzid);
            client.verify_server_final(data).unwrap();
        }
        other => panic!("expected success, got {other:?}"),
    }
}

#[test]
fn scram_round_trip_every_mechanism_and_binding() {
    for hash in [ScramHash::Sha1, ScramHash::Sha256] {
        let stored = creds(hash, "s3cret pass");
        // Without TLS: plain SCRAM with 'n'.
        let mut client = ScramClient::new(hash, "juliet", "s3cret pass", None, false);
        assert_eq!(client.mechanism(), Mechanism::scram(hash, false));
        let server = ServerSession::new(client.mechanism(), Vec::new(), false);
        let run = scram_run(&mut client, server, Some(stored.clone()), |m| m);
        assert_success(&run, &mut client, "juliet", None);

        // -PLUS with each binding type; the server knows both.
        for binding in [exporter(), end_point()] {
            let mut client =
                ScramClient::new(hash, "juliet", "s3cret pass", Some(binding.clone()), true);
            assert_eq!(client.mechanism(), Mechanism::scram(hash, true));
            assert!(String::from_utf8(client.client_first())
                .unwrap()
                .starts_with(&format!("p={},", binding.kind.name())));
            let mut client = ScramClient::new(hash, "juliet", "s3cret pass", Some(binding), true);
            let server =
                ServerSession::new(client.mechanism(), vec![exporter(), end_point()], true);
            let run = scram_run(&mut client, server, Some(stored.clone()), |m| m);
            assert_success(&run, &mut client, "juliet", None);
        }

        // Client can bind, server offers no -PLUS: 'y' is accepted.
        let mut client = ScramClient::new(hash, "juliet", "s3cret pass", Some(exporter()), false);
        assert!(client.client_first().starts_with(b"y,,"));
        let mut client = ScramClient::new(hash, "juliet", "s3cret pass", Some(exporter()), false);
        let server = ServerSession::new(client.mechanism(), vec![exporter()], false);
        let run = scram_run(&mut client, server, Some(stored), |m| m);
        assert_success(&run, &mut client, "juliet", None);
    }
}

#[test]
fn scram_username_escapes_authzid_and_case_mapping() {
    let stored = creds(ScramHash::Sha256, "pw");
    let mut client = ScramClient::new(ScramHash::Sha256, "Jul,iet=X", "pw", None, false)
        .with_authzid("admin@example.org/a,b=c");
    let first = String::from_utf8(client.client_first()).unwrap();
    assert!(
        first.starts_with("n,a=admin@example.org/a=2Cb=3Dc,n=Jul=2Ciet=3DX,r="),
        "{first}"
    );
    let mut client = ScramClient::new(ScramHash::Sha256, "Jul,iet=X", "pw", None, false)
        .with_authzid("admin@example.org/a,b=c");
    let server = ServerSession::new(Mechanism::ScramSha256, Vec::new(), false);
    let run = scram_run(&mut client, server, Some(stored), |m| m);
    // The username the caller looks up is UsernameCaseMapped.
    assert_success(
        &run,
        &mut client,
        "jul,iet=x",
        Some("admin@example.org/a,b=c"),
    );
}

#[test]
fn scram_nonce_is_fresh_and_extends_the_client_nonce() {
    let stored = creds(ScramHash::Sha256, "pw");
    let mut nonces = Vec::new();
    for _ in 0..2 {
        let mut client =
            ScramClient::new(ScramHash::Sha256, "juliet", "pw", None, false).with_nonce("abc");
        let server = ServerSession::new(Mechanism::ScramSha256, Vec::new(), false);
        let run = scram_run(&mut client, server, Some(stored.clone()), |m| m);
        let first = String::from_utf8(run.server_first.unwrap()).unwrap();
        let nonce = first
            .split(',')
            .next()
            .unwrap()
            .strip_prefix("r=abc")
            .unwrap()
            .to_owned();
        assert_eq!(nonce.len(), 32, "24 random bytes in base64");
        nonces.push(nonce);
    }
    assert_ne!(nonces[0], nonces[1]);
}

#[test]
fn scram_wrong_password() {
    for hash in [ScramHash::Sha1, ScramHash::Sha256] {
        let mut client = ScramClient::new(hash, "juliet", "wrong", None, false);
        let server = ServerSession::new(client.mechanism(), Vec::new(), false);
        let run = scram_run(&mut client, server, Some(creds(hash, "right")), |m| m);
        assert_eq!(run.result, Err(Failure::NotAuthorized));
    }
}

#[test]
fn scram_unknown_user_looks_like_a_real_one_and_fails_at_the_end() {
    let key = b"configured server secret";
    let shape = |first: &[u8]| -> (usize, usize, String) {
        let text = String::from_utf8(first.to_vec()).unwrap();
        let parts: Vec<&str> = text.split(',').collect();
        assert_eq!(parts.len(), 3);
        assert!(
            parts[0].starts_with("r=") && parts[1].starts_with("s=") && parts[2].starts_with("i=")
        );
        (parts[0].len(), parts[1].len(), parts[2].to_owned())
    };
    let mut salts = Vec::new();
    for attempt in 0..2 {
        let mut client =
            ScramClient::new(ScramHash::Sha256, "nobody", "pw", None, false).with_nonce("abc");
        let server =
            ServerSession::new(Mechanism::ScramSha256, Vec::new(), false).with_fake_salt_key(key);
        let run = scram_run(&mut client, server, None, |m| m);
        assert_eq!(run.result, Err(Failure::NotAuthorized), "attempt {attempt}");
        let first = run.server_first.unwrap();
        salts.push(
            String::from_utf8(first.clone())
                .unwrap()
                .split(',')
                .nth(1)
                .unwrap()
                .to_owned(),
        );

        let mut real_client =
            ScramClient::new(ScramHash::Sha256, "juliet", "pw", None, false).with_nonce("abc");
        let server = ServerSession::new(Mechanism::ScramSha256, Vec::new(), false);
        let real = scram_run(
            &mut real_client,
            server,
            Some(creds(ScramHash::Sha256, "pw")),
            |m| m,
        );
        assert_eq!(shape(&first), shape(&real.server_first.unwrap()));
    }
    // Same fake salt on every attempt (else comparing two attempts reveals the fake) ...
    assert_eq!(salts[0], salts[1]);
    // ... but different per user and per secret.
    let salt_for = |user: &str, key: &[u8]| {
        let mut client = ScramClient::new(ScramHash::Sha256, user, "pw", None, false);
        let mut server =
            ServerSession::new(Mechanism::ScramSha256, Vec::new(), false).with_fake_salt_key(key);
        server.step(&client.client_first()).unwrap();
        match server.provide_credentials(None).unwrap() {
            Step::Challenge(c) => String::from_utf8(c)
                .unwrap()
                .split(',')
                .nth(1)
                .unwrap()
                .to_owned(),
            other => panic!("{other:?}"),
        }
    };
    assert_ne!(salt_for("nobody", key), salt_for("someone", key));
    assert_ne!(
        salt_for("nobody", key),
        salt_for("nobody", b"another secret")
    );
}

#[test]
fn scram_tampered_proof() {
    let stored = creds(ScramHash::Sha256, "pw");
    let mut client = ScramClient::new(ScramHash::Sha256, "juliet", "pw", None, false);
    let server = ServerSession::new(Mechanism::ScramSha256, Vec::new(), false);
    let run = scram_run(&mut client, server, Some(stored), |m| {
        let text = String::from_utf8(m).unwrap();
        let (head, proof) = text.rsplit_once(",p=").unwrap();
        // Flip one character of the proof to another base64 character.
        let mut proof: Vec<char> = proof.chars().collect();
        proof[0] = if proof[0] == 'A' { 'B' } else { 'A' };
        format!("{head},p={}", proof.into_iter().collect::<String>()).into_bytes()
    });
    assert_eq!(run.result, Err(Failure::NotAuthorized));
}

#[test]
fn scram_tampered_nonce_in_client_final() {
    let stored = creds(ScramHash::Sha256, "pw");
    let mut client = ScramClient::new(ScramHash::Sha256, "juliet", "pw", None, false);
    let server = ServerSession::new(Mechanism::ScramSha256, Vec::new(), false);
    let run = scram_run(&mut client, server, Some(stored), |m| {
        String::from_utf8(m)
            .unwrap()
            .replacen(",r=", ",r=X", 1)
            .into_bytes()
    });
    assert_eq!(run.result, Err(Failure::NotAuthorized));
}

#[test]
fn scram_plus_with_wrong_binding_data() {
    let stored = creds(ScramHash::Sha256, "pw");
    for binding in [exporter(), end_point()] {
        // The client sits behind a TLS-terminating man in the middle: its data differ.
        let mut theirs = binding.clone();
        theirs.data[0] ^= 1;
        let mut client = ScramClient::new(ScramHash::Sha256, "juliet", "pw", Some(theirs), true);
        let server = ServerSession::new(Mechanism::ScramSha256Plus, vec![binding], true);
        let run = scram_run(&mut client, server, Some(stored.clone()), |m| m);
        assert_eq!(run.result, Err(Failure::NotAuthorized));
    }
}

#[test]
fn scram_plus_type_the_server_cannot_provide() {
    let stored = creds(ScramHash::Sha256, "pw");
    // Server only has tls-server-end-point (e.g. TLS 1.2 without EMS).
    let mut client = ScramClient::new(ScramHash::Sha256, "juliet", "pw", Some(exporter()), true);
    let server = ServerSession::new(Mechanism::ScramSha256Plus, vec![end_point()], true);
    let run = scram_run(&mut client, server, Some(stored), |m| m);
    assert_eq!(run.result, Err(Failure::NotAuthorized));
    // Unknown binding type name.
    let mut server = ServerSession::new(Mechanism::ScramSha256Plus, vec![exporter()], true);
    assert_eq!(
        server.step(b"p=tls-unique,,n=juliet,r=abc"),
        Err(Failure::NotAuthorized)
    );
}

#[test]
fn scram_y_flag_is_a_downgrade_when_plus_was_offered() {
    let stored = creds(ScramHash::Sha256, "pw");
    // A man in the middle removed -PLUS from the feature list: the client sends 'y'.
    let mut client = ScramClient::new(ScramHash::Sha256, "juliet", "pw", Some(exporter()), false);
    let server = ServerSession::new(Mechanism::ScramSha256, vec![exporter()], true);
    let run = scram_run(&mut client, server, Some(stored), |m| m);
    assert_eq!(run.result, Err(Failure::NotAuthorized));
    assert!(run.server_first.is_none(), "refused at client-first");
}

#[test]
fn scram_flag_must_match_the_mechanism() {
    // p= on a mechanism without -PLUS.
    let mut server = ServerSession::new(Mechanism::ScramSha256, vec![exporter()], true);
    assert_eq!(
        server.step(b"p=tls-exporter,,n=juliet,r=abc"),
        Err(Failure::MalformedRequest)
    );
    // n or y on a -PLUS mechanism.
    for first in [&b"n,,n=juliet,r=abc"[..], b"y,,n=juliet,r=abc"] {
        let mut server = ServerSession::new(Mechanism::ScramSha1Plus, vec![exporter()], true);
        assert_eq!(server.step(first), Err(Failure::MalformedRequest));
    }
    // The client-final c= must carry the flag of client-first (c=biws is "n,,").
    let stored = creds(ScramHash::Sha256, "pw");
    let mut client = ScramClient::new(ScramHash::Sha256, "juliet", "pw", Some(exporter()), false);
    let server = ServerSession::new(Mechanism::ScramSha256, Vec::new(), false);
    let run = scram_run(&mut client, server, Some(stored), |m| {
        String::from_utf8(m)
            .unwrap()
            .replacen("c=eSws", "c=biws", 1)
            .into_bytes()
    });
    assert_eq!(run.result, Err(Failure::NotAuthorized));
}

/// Drives a server to the point where it waits for client-final.
fn server_waiting_for_final() -> (ServerSession, String) {
    let mut server = ServerSession::with_nonce(Mechanism::ScramSha256, Vec::new(), false, "SRV");
    server.step(b"n,,n=juliet,r=abc").unwrap();
    server
        .provide_credentials(Some(creds(ScramHash::Sha256, "pw")))
        .unwrap();
    (server, "abcSRV".to_owned())
}

#[test]
fn scram_malformed_client_first() {
    let long_name = format!("n,,n={},r=abc", "a".repeat(MAX_MESSAGE_LEN));
    for bad in [
        &b"n,,r=abc"[..],           // missing n=
        b"n,,n=juliet",             // missing r=
        b"n,,n=jul=41iet,r=abc",    // bad escape
        b"n,,n=juliet=,r=abc",      // truncated escape
        b"n,,m=ext,n=juliet,r=abc", // reserved m=
        b"n,,n=juliet,r=abc,m=ext", // m= as an extension
        b"x,,n=juliet,r=abc",       // unknown flag
        b"n,n=juliet,r=abc",        // GS2 header missing its second comma
        b"n,,n=jul\xffiet,r=abc",   // not UTF-8
        long_name.as_bytes(),       // oversize
    ] {
        let mut server = ServerSession::new(Mechanism::ScramSha256, Vec::new(), false);
        assert_eq!(
            server.step(bad),
            Err(Failure::MalformedRequest),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
        // A failed session accepts nothing more.
        assert_eq!(
            server.step(b"n,,n=juliet,r=abc"),
            Err(Failure::MalformedRequest)
        );
    }
}

#[test]
fn scram_malformed_client_final() {
    let oversize = format!("c=biws,r=abcSRV,x={},p=AAAA", "a".repeat(MAX_MESSAGE_LEN));
    for bad in [
        "c=biws,r=abcSRV",                                                // missing proof
        "r=abcSRV,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",        // missing c=
        "c=biws,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",          // missing r=
        "c=bi*s,r=abcSRV,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=", // bad base64
        "c=biws,r=abcSRV,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ",  // unpadded
        "c=biws,r=abcSRV,p=dGVzdA==", // proof of the wrong length
        "c=biws,r=abcSRV,m=x,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=", // m=
        oversize.as_str(),
    ] {
        let (mut server, _) = server_waiting_for_final();
        assert_eq!(
            server.step(bad.as_bytes()),
            Err(Failure::MalformedRequest),
            "{bad}"
        );
    }
}

#[test]
fn scram_empty_initial_response_gets_an_empty_challenge_once() {
    let mut server = ServerSession::new(Mechanism::ScramSha1, Vec::new(), false);
    assert_eq!(server.step(b""), Ok(Step::Challenge(Vec::new())));
    assert_eq!(server.step(b""), Err(Failure::MalformedRequest));
}

#[test]
fn scram_api_misuse() {
    let mut server = ServerSession::new(Mechanism::ScramSha256, Vec::new(), false);
    assert_eq!(
        server.provide_credentials(None),
        Err(Failure::TemporaryAuthFailure)
    );
    let mut server = ServerSession::new(Mechanism::ScramSha256, Vec::new(), false);
    server.step(b"n,,n=juliet,r=abc").unwrap();
    // Credentials for the other hash are a caller bug, not a login failure.
    assert_eq!(
        server.provide_credentials(Some(creds(ScramHash::Sha1, "pw"))),
        Err(Failure::TemporaryAuthFailure)
    );
    // A step while the credentials are awaited is out of order.
    let mut server = ServerSession::new(Mechanism::ScramSha256, Vec::new(), false);
    server.step(b"n,,n=juliet,r=abc").unwrap();
    assert_eq!(
        server.step(b"c=biws,r=abc,p=AAAA"),
        Err(Failure::MalformedRequest)
    );
}

#[test]
fn client_rejects_bad_server_first() {
    let cases = [
        ("r=xyzSRV,s=QSXCR+Q6sek8bf92,i=4096", Failure::NotAuthorized), // nonce not ours
        ("r=abc,s=QSXCR+Q6sek8bf92,i=4096", Failure::NotAuthorized),    // nonce not extended
        ("r=abcSRV,s=QSXCR+Q6sek8bf92,i=1", Failure::NotAuthorized),    // too few iterations
        (
            "r=abcSRV,s=QSXCR+Q6sek8bf92,i=999999999",
            Failure::NotAuthorized,
        ), // absurd count
        ("r=abcSRV,s=QSXCR+Q6sek8bf92", Failure::MalformedRequest),
        (
            "m=x,r=abcSRV,s=QSXCR+Q6sek8bf92,i=4096",
            Failure::MalformedRequest,
        ),
        ("r=abcSRV,s=!!,i=4096", Failure::MalformedRequest),
    ];
    for (msg, want) in cases {
        let mut client =
            ScramClient::new(ScramHash::Sha256, "juliet", "pw", None, false).with_nonce("abc");
        client.client_first();
        assert_eq!(
            client.handle_server_first(msg.as_bytes()),
            Err(want),
            "{msg}"
        );
    }
    // Out of order.
    let mut client = ScramClient::new(ScramHash::Sha256, "juliet", "pw", None, false);
    assert_eq!(
        client.handle_server_first(b"r=a,s=QQ==,i=4096"),
        Err(Failure::MalformedRequest)
    );
    assert_eq!(
        client.verify_server_final(b"v=AAAA"),
        Err(Failure::MalformedRequest)
    );
}

fn plain_run(msg: &[u8], stored: Option<ScramCredentials>) -> Result<Step, Failure> {
    let mut server = ServerSession::new(Mechanism::Plain, Vec::new(), false);
    match server.step(msg)? {
        Step::NeedCredentials { hash, .. } => assert_eq!(hash, ScramHash::Sha256),
        other => panic!("{other:?}"),
    }
    server.provide_credentials(stored)
}

#[test]
fn plain_without_and_with_authzid() {
    let stored = creds(ScramHash::Sha256, "r0m30 ");
    assert_eq!(
        plain_run(
            &plain_message(None, "Juliet", "r0m30 "),
            Some(stored.clone())
        ),
        Ok(Step::Success {
            username: "juliet".into(),
            authzid: None,
            additional_data: None
        })
    );
    assert_eq!(
        plain_run(
            &plain_message(Some("admin@example.org"), "juliet", "r0m30 "),
            Some(stored)
        ),
        Ok(Step::Success {
            username: "juliet".into(),
            authzid: Some("admin@example.org".into()),
            additional_data: None
        })
    );
    // Stored SHA-1 credentials work as well.
    let sha1 = creds(ScramHash::Sha1, "r0m30 ");
    assert!(matches!(
        plain_run(&plain_message(None, "juliet", "r0m30 "), Some(sha1)),
        Ok(Step::Success { .. })
    ));
}

#[test]
fn plain_failures() {
    let stored = creds(ScramHash::Sha256, "r0m30");
    assert_eq!(
        plain_run(
            &plain_message(None, "juliet", "r0m31"),
            Some(stored.clone())
        ),
        Err(Failure::NotAuthorized)
    );
    assert_eq!(
        plain_run(&plain_message(None, "juliet", "R0M30"), Some(stored)),
        Err(Failure::NotAuthorized)
    );
    assert_eq!(
        plain_run(&plain_message(None, "nobody", "r0m30"), None),
        Err(Failure::NotAuthorized)
    );
    let mut server = ServerSession::new(Mechanism::Plain, Vec::new(), false);
    assert_eq!(
        server.step(b"juliet\0r0m30"),
        Err(Failure::MalformedRequest)
    );
    assert_eq!(
        server.step(&plain_message(None, "juliet", "r0m30")),
        Err(Failure::MalformedRequest),
        "failed session stays failed"
    );
    let mut server = ServerSession::new(Mechanism::Plain, Vec::new(), false);
    assert_eq!(
        server.step(&plain_message(None, "", "r0m30")),
        Err(Failure::MalformedRequest)
    );
}

#[test]
fn external_passes_the_authzid_and_names_nobody() {
    for (input, authzid) in [
        (&b""[..], None),
        (b"=", None),
        (b"juliet@example.com", Some("juliet@example.com")),
    ] {
        let mut server = ServerSession::new(Mechanism::External, Vec::new(), false);
        assert_eq!(
            server.step(input),
            Ok(Step::Success {
                username: String::new(),
                authzid: authzid.map(String::from),
                additional_data: None
            })
        );
        assert_eq!(
            server.step(input),
            Err(Failure::MalformedRequest),
            "one step only"
        );
    }
    let mut server = ServerSession::new(Mechanism::External, Vec::new(), false);
    assert_eq!(server.step(b"\xff"), Err(Failure::MalformedRequest));
    let mut server = ServerSession::new(Mechanism::External, Vec::new(), false);
    assert_eq!(
        server.provide_credentials(None),
        Err(Failure::TemporaryAuthFailure)
    );
}
