//! Independent judges for RFC 3923 (§3–§7) objects: what we sign verifies with
//! `openssl cms -verify` and GnuTLS `certtool --p7-verify` (RFC 5652 §5, RFC 8551 §3.5.3);
//! what we encrypt decrypts with `openssl cms -decrypt` (RFC 5652 §6, RFC 5083); what
//! `openssl cms -sign/-encrypt` produce we verify and decrypt; and each failure RFC 3923 §7
//! names (tampering, wrong signer, untrusted CA, stale or replayed timestamp, missing key)
//! comes out as its condition. The tools run on files in a temporary directory; that is the
//! only I/O, and it is here, not in the library.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use starling_e2e::certs::certificates_from_pem;
use starling_e2e::freshness::format_timestamp;
use starling_e2e::mime::{self, Entity};
use starling_e2e::testca::{EndEntity, Issued, TestCa};
use starling_e2e::{
    envelope, open, payload, protect, sign, Condition, ContentCipher, Credential, DigestAlg,
    E2eError, KeyTransport, Protection, Receiver, ReplayGuard, TimestampFault, TimestampPolicy,
    TrustAnchors,
};

struct Fixture {
    ca: TestCa,
    alice: Issued,
    bob: Issued,
    /// alice@example.com again, but issued by a CA nobody trusts.
    rogue_alice: Issued,
    /// alice@example.com with a certificate that expired yesterday.
    expired_alice: Issued,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let ca = TestCa::new("Starling Test CA").unwrap();
        let rogue = TestCa::new("Starling Test CA").unwrap();
        let alice = ca.issue("alice@example.com").unwrap();
        let bob = ca.issue("bob@example.net").unwrap();
        let rogue_alice = rogue.issue("alice@example.com").unwrap();
        let now = SystemTime::now();
        let expired_alice = ca
            .issue_with(&EndEntity {
                not_before: now - Duration::from_secs(10 * 86_400),
                not_after: now - Duration::from_secs(86_400),
                ..EndEntity::new("alice@example.com")
            })
            .unwrap();
        Fixture {
            ca,
            alice,
            bob,
            rogue_alice,
            expired_alice,
        }
    })
}

/// A tool from the environment; a missing one fails the test with a message that says how to
/// get it, rather than passing silently.
fn tool(name: &str, package: &str) -> Command {
    let probe = Command::new(name).arg("--version").output();
    if probe.is_err() {
        panic!("`{name}` is required by this test but was not found: apt-get install -y {package}");
    }
    Command::new(name)
}

fn openssl() -> Command {
    tool("openssl", "openssl")
}

fn certtool() -> Command {
    tool("certtool", "gnutls-bin")
}

struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new() -> Files {
        let files = Files {
            dir: tempfile::tempdir().unwrap(),
        };
        let f = fixture();
        files.write("ca.pem", f.ca.certificate_pem().as_bytes());
        files.write("alice.pem", f.alice.certificate_pem.as_bytes());
        files.write("alice.key", f.alice.key_pem.as_bytes());
        files.write("bob.pem", f.bob.certificate_pem.as_bytes());
        files.write("bob.key", f.bob.key_pem.as_bytes());
        files
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.path(name)).unwrap()
    }
}

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// A Message/CPIM entity as RFC 3923 §3 protects it, stamped `at`; the body has the two
/// characters that trip XML carriers up.
fn cpim_entity(at: SystemTime) -> Vec<u8> {
    format!(
        "Content-Type: Message/CPIM\r\n\r\nFrom: Alice <im:alice@example.com>\r\nTo: <im:bob@example.net>\r\nDateTime: {}\r\n\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nNoon at the usual place? ]]> & <ok>\r\n",
        format_timestamp(at)
    )
    .into_bytes()
}

fn anchors() -> TrustAnchors {
    TrustAnchors::from_pem(fixture().ca.certificate_pem()).unwrap()
}

fn receiver<'a>(credential: Option<&'a Credential>, anchors: &'a TrustAnchors) -> Receiver<'a> {
    Receiver {
        credential,
        anchors,
        known_certificates: &[],
        require_signature: true,
        allow_sha1: false,
        timestamps: Some(TimestampPolicy::default()),
    }
}

/// Puts an S/MIME object through an `<e2e/>` element serialized as XML and parsed back, as
/// a stanza would travel, and returns what the receiver extracts.
fn through_xml(object: &[u8]) -> Vec<u8> {
    let message = minidom::Element::builder("message", "jabber:client")
        .append(payload::wrap(object).unwrap())
        .build();
    let xml = String::from(&message);
    let parsed: minidom::Element = xml.parse().unwrap();
    payload::unwrap(payload::find(&parsed).unwrap()).unwrap()
}

fn condition(result: Result<impl std::fmt::Debug, E2eError>) -> Condition {
    result.unwrap_err().condition().unwrap()
}

/// The detached signature (DER) and the signed bytes of a multipart/signed object.
fn detached_parts(object: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let entity = Entity::parse(object).unwrap();
    let ct = entity.content_type();
    let parts = mime::split_multipart(entity.body(), ct.param("boundary").unwrap()).unwrap();
    let signature = Entity::parse(parts[1]).unwrap().decoded_body().unwrap();
    (parts[0].to_vec(), signature)
}

#[test]
fn our_signature_verifies_with_openssl_after_the_xml_trip() {
    let f = fixture();
    let files = Files::new();
    let content = cpim_entity(SystemTime::now());
    let object = protect(&content, &Protection::signed(&f.alice.credential)).unwrap();
    let received = through_xml(&object);
    assert_eq!(
        received, object,
        "the XML carrier must give back the CRLF object"
    );
    // OpenSSL's `-binary` S/MIME reader takes only the LF before a delimiter as part of it
    // (it frames parts the way it writes them), so it would see a stray CR on a CRLF-framed
    // multipart (RFC 2046 §5.1.1 gives the whole CRLF to the delimiter). The text mode reads
    // the MIME object; the byte-exact check uses the detached DER form with `-binary`.
    let input = files.write("signed.txt", &received);
    let (ok, text) = run(openssl().args([
        "cms",
        "-verify",
        "-CAfile",
        p(&files.path("ca.pem")),
        "-in",
        p(&input),
        "-out",
        p(&files.path("out.txt")),
    ]));
    assert!(ok, "openssl cms -verify failed: {text}");
    assert_eq!(mime::canonicalize(&files.read("out.txt")), content);
    let (data, der) = detached_parts(&received);
    assert_eq!(data, content, "part 1 is exactly the signed entity");
    files.write("data.txt", &data);
    files.write("sig.der", &der);
    let (ok, text) = run(openssl().args([
        "cms",
        "-verify",
        "-binary",
        "-inform",
        "DER",
        "-in",
        p(&files.path("sig.der")),
        "-content",
        p(&files.path("data.txt")),
        "-CAfile",
        p(&files.path("ca.pem")),
        "-out",
        p(&files.path("out2.txt")),
    ]));
    assert!(
        ok,
        "openssl cms -verify -binary (detached DER) failed: {text}"
    );
    assert_eq!(files.read("out2.txt"), content);
    let micalg = Entity::parse(&object).unwrap().content_type();
    assert_eq!(micalg.param("micalg"), Some("sha-256"));
    assert_eq!(
        micalg.param("protocol"),
        Some("application/pkcs7-signature")
    );
}

#[test]
fn our_detached_signature_verifies_with_certtool() {
    let f = fixture();
    let files = Files::new();
    let object = sign::sign(
        &cpim_entity(SystemTime::now()),
        &f.alice.credential,
        DigestAlg::Sha256,
    )
    .unwrap();
    let (data, der) = detached_parts(&object);
    files.write("data.txt", &data);
    files.write("sig.der", &der);
    let verify = |data: &str| {
        run(certtool().args([
            "--p7-verify",
            "--load-ca-certificate",
            p(&files.path("ca.pem")),
            "--load-data",
            p(&files.path(data)),
            "--infile",
            p(&files.path("sig.der")),
            "--inder",
        ]))
    };
    let (ok, text) = verify("data.txt");
    assert!(ok, "certtool --p7-verify failed: {text}");
    let mut tampered = data.clone();
    let last = tampered.len() - 3;
    tampered[last] ^= 0x01;
    files.write("tampered.txt", &tampered);
    let (ok, text) = verify("tampered.txt");
    assert!(!ok, "certtool accepted tampered data: {text}");
}

#[test]
fn a_tampered_byte_fails_openssl_and_us_with_unverified_signature() {
    let f = fixture();
    let files = Files::new();
    let object = protect(
        &cpim_entity(SystemTime::now()),
        &Protection::signed(&f.alice.credential),
    )
    .unwrap();
    let at = object.windows(4).position(|w| w == b"Noon").unwrap();
    let mut tampered = object.clone();
    tampered[at] = b'M';
    let input = files.write("tampered.txt", &tampered);
    let (ok, _) = run(openssl().args([
        "cms",
        "-verify",
        "-CAfile",
        p(&files.path("ca.pem")),
        "-in",
        p(&input),
        "-out",
        p(&files.path("o")),
    ]));
    assert!(!ok, "openssl accepted a tampered signature");
    let anchors = anchors();
    let result = open(
        &tampered,
        "alice@example.com/home",
        &receiver(None, &anchors),
        SystemTime::now(),
        None,
    );
    assert!(
        matches!(result, Err(E2eError::BadSignature(_))),
        "{result:?}"
    );
    assert_eq!(condition(result), Condition::UnverifiedSignature);
    // And the untampered object opens, with the signer's addresses reported.
    let opened = open(
        &object,
        "alice@example.com/home",
        &receiver(None, &anchors),
        SystemTime::now(),
        None,
    )
    .unwrap();
    let signature = opened.signature.unwrap();
    assert!(signature
        .addresses
        .contains(&"alice@example.com".to_string()));
    assert!(signature.capabilities.contains(&ContentCipher::Aes256Gcm));
}

#[test]
fn our_encryption_decrypts_with_openssl() {
    let f = fixture();
    let files = Files::new();
    let content = cpim_entity(SystemTime::now());
    let bob_cert = f.bob.credential.certificate().clone();
    for cipher in [
        ContentCipher::Aes128Cbc,
        ContentCipher::Aes256Cbc,
        ContentCipher::Aes128Gcm,
        ContentCipher::Aes256Gcm,
    ] {
        for transport in [KeyTransport::RsaPkcs1v15, KeyTransport::RsaOaepSha256] {
            let object =
                envelope::encrypt(&content, std::slice::from_ref(&bob_cert), cipher, transport)
                    .unwrap();
            let ct = Entity::parse(&object).unwrap().content_type();
            assert_eq!(ct.param("smime-type"), Some(cipher.smime_type()));
            let input = files.write("enc.txt", &through_xml(&object));
            let (ok, text) = run(openssl().args([
                "cms",
                "-decrypt",
                "-recip",
                p(&files.path("bob.pem")),
                "-inkey",
                p(&files.path("bob.key")),
                "-in",
                p(&input),
                "-out",
                p(&files.path("plain.txt")),
            ]));
            assert!(
                ok,
                "openssl cms -decrypt failed for {cipher:?}/{transport:?}: {text}"
            );
            assert_eq!(files.read("plain.txt"), content, "{cipher:?}/{transport:?}");
            // And we read our own output.
            assert_eq!(
                envelope::decrypt(&object, &f.bob.credential).unwrap(),
                content
            );
        }
    }
}

#[test]
fn our_sign_then_encrypt_opens_with_openssl() {
    let f = fixture();
    let files = Files::new();
    let content = cpim_entity(SystemTime::now());
    let recipients = [f.bob.credential.certificate().clone()];
    let object = protect(
        &content,
        &Protection::signed_and_encrypted(&f.alice.credential, &recipients),
    )
    .unwrap();
    let input = files.write("enc.txt", &object);
    let (ok, text) = run(openssl().args([
        "cms",
        "-decrypt",
        "-recip",
        p(&files.path("bob.pem")),
        "-inkey",
        p(&files.path("bob.key")),
        "-in",
        p(&input),
        "-out",
        p(&files.path("signed.txt")),
    ]));
    assert!(ok, "decrypt: {text}");
    let (ok, text) = run(openssl().args([
        "cms",
        "-verify",
        "-CAfile",
        p(&files.path("ca.pem")),
        "-in",
        p(&files.path("signed.txt")),
        "-out",
        p(&files.path("plain.txt")),
    ]));
    assert!(ok, "verify: {text}");
    assert_eq!(mime::canonicalize(&files.read("plain.txt")), content);
    // Bob opens it with every check.
    let anchors = anchors();
    let mut guard = ReplayGuard::new();
    let opened = open(
        &through_xml(&object),
        "alice@example.com/laptop",
        &receiver(Some(&f.bob.credential), &anchors),
        SystemTime::now(),
        Some(&mut guard),
    )
    .unwrap();
    assert!(opened.was_encrypted);
    assert_eq!(opened.content, content);
    assert!(opened.timestamp.is_some());
}

#[test]
fn openssl_signatures_verify_with_us() {
    let files = Files::new();
    let content = cpim_entity(SystemTime::now());
    let input = files.write("content.txt", &content);
    let anchors = anchors();
    let now = SystemTime::now();
    for (md, extra) in [
        ("sha256", None),
        ("sha512", None),
        ("sha256", Some("-nodetach")),
    ] {
        let mut cmd = openssl();
        cmd.args([
            "cms",
            "-sign",
            "-binary",
            "-md",
            md,
            "-signer",
            p(&files.path("alice.pem")),
            "-inkey",
            p(&files.path("alice.key")),
            "-in",
            p(&input),
            "-out",
            p(&files.path("signed.txt")),
        ]);
        if let Some(extra) = extra {
            cmd.arg(extra);
        }
        let (ok, text) = run(&mut cmd);
        assert!(ok, "openssl cms -sign: {text}");
        let object = files.read("signed.txt");
        let opened = open(
            &through_xml(&object),
            "alice@example.com",
            &receiver(None, &anchors),
            now,
            None,
        )
        .unwrap_or_else(|e| panic!("{md} {extra:?}: {e}"));
        assert_eq!(opened.content, content);
    }
    // SHA-1 (RFC 3923's own algorithm) only in legacy mode.
    let (ok, text) = run(openssl().args([
        "cms",
        "-sign",
        "-binary",
        "-md",
        "sha1",
        "-signer",
        p(&files.path("alice.pem")),
        "-inkey",
        p(&files.path("alice.key")),
        "-in",
        p(&input),
        "-out",
        p(&files.path("sha1.txt")),
    ]));
    assert!(ok, "{text}");
    let object = files.read("sha1.txt");
    let strict = receiver(None, &anchors);
    assert_eq!(
        condition(open(&object, "alice@example.com", &strict, now, None)),
        Condition::UnverifiedSignature
    );
    let legacy = Receiver {
        allow_sha1: true,
        ..strict
    };
    assert!(open(&object, "alice@example.com", &legacy, now, None).is_ok());
}

#[test]
fn openssl_encryption_decrypts_with_us() {
    let f = fixture();
    let files = Files::new();
    let content = cpim_entity(SystemTime::now());
    let input = files.write("content.txt", &content);
    let cases: &[&[&str]] = &[
        &["-aes-128-cbc"],
        &["-aes-256-cbc"],
        &["-aes-192-cbc"],
        &["-des3"],
        &["-aes-128-gcm"],
        &["-aes-256-gcm"],
        &["-aes-256-cbc", "-keyopt", "rsa_padding_mode:oaep"],
        &[
            "-aes-256-gcm",
            "-keyopt",
            "rsa_padding_mode:oaep",
            "-keyopt",
            "rsa_oaep_md:sha256",
        ],
    ];
    for case in cases {
        let mut cmd = openssl();
        cmd.args([
            "cms",
            "-encrypt",
            "-binary",
            "-in",
            p(&input),
            "-out",
            p(&files.path("enc.txt")),
        ]);
        cmd.arg(case[0])
            .args(["-recip", p(&files.path("bob.pem"))])
            .args(&case[1..]);
        let (ok, text) = run(&mut cmd);
        assert!(ok, "openssl cms -encrypt {case:?}: {text}");
        let object = files.read("enc.txt");
        let plain = envelope::decrypt(&through_xml(&object), &f.bob.credential)
            .unwrap_or_else(|e| panic!("{case:?}: {e}"));
        assert_eq!(plain, content, "{case:?}");
    }
}

#[test]
fn openssl_sign_then_encrypt_opens_with_us() {
    let f = fixture();
    let files = Files::new();
    let content = cpim_entity(SystemTime::now());
    let input = files.write("content.txt", &content);
    let (ok, text) = run(openssl().args([
        "cms",
        "-sign",
        "-binary",
        "-md",
        "sha256",
        "-signer",
        p(&files.path("alice.pem")),
        "-inkey",
        p(&files.path("alice.key")),
        "-in",
        p(&input),
        "-out",
        p(&files.path("signed.txt")),
    ]));
    assert!(ok, "{text}");
    let (ok, text) = run(openssl().args([
        "cms",
        "-encrypt",
        "-binary",
        "-aes-256-gcm",
        "-in",
        p(&files.path("signed.txt")),
        "-out",
        p(&files.path("enc.txt")),
        p(&files.path("bob.pem")),
    ]));
    assert!(ok, "{text}");
    let anchors = anchors();
    let opened = open(
        &files.read("enc.txt"),
        "alice@example.com/x",
        &receiver(Some(&f.bob.credential), &anchors),
        SystemTime::now(),
        None,
    )
    .unwrap();
    assert!(opened.was_encrypted);
    assert_eq!(opened.content, content);
}

#[test]
fn wrong_signer_is_unverified_signature_and_reports_the_certificate_addresses() {
    let f = fixture();
    let object = protect(
        &cpim_entity(SystemTime::now()),
        &Protection::signed(&f.alice.credential),
    )
    .unwrap();
    let anchors = anchors();
    let result = open(
        &object,
        "mallory@example.com/evil",
        &receiver(None, &anchors),
        SystemTime::now(),
        None,
    );
    match &result {
        Err(E2eError::SignerMismatch { expected, found }) => {
            assert_eq!(expected, "mallory@example.com");
            assert!(found.contains(&"alice@example.com".to_string()));
        }
        other => panic!("expected a signer mismatch, got {other:?}"),
    }
    assert_eq!(condition(result), Condition::UnverifiedSignature);
}

#[test]
fn untrusted_ca_and_expired_certificate_are_unverified_signature() {
    let f = fixture();
    let files = Files::new();
    let anchors = anchors();
    for (issued, what) in [(&f.rogue_alice, "rogue CA"), (&f.expired_alice, "expired")] {
        let object = protect(
            &cpim_entity(SystemTime::now()),
            &Protection::signed(&issued.credential),
        )
        .unwrap();
        let result = open(
            &object,
            "alice@example.com",
            &receiver(None, &anchors),
            SystemTime::now(),
            None,
        );
        assert!(
            matches!(result, Err(E2eError::UntrustedSigner(_))),
            "{what}: {result:?}"
        );
        assert_eq!(condition(result), Condition::UnverifiedSignature);
        // The independent judge agrees.
        let input = files.write("signed.txt", &object);
        let (ok, _) = run(openssl().args([
            "cms",
            "-verify",
            "-CAfile",
            p(&files.path("ca.pem")),
            "-in",
            p(&input),
            "-out",
            p(&files.path("o")),
        ]));
        assert!(!ok, "openssl accepted the {what} signer");
    }
}

#[test]
fn stale_future_and_replayed_timestamps_are_bad_timestamp() {
    let f = fixture();
    let anchors = anchors();
    let now = SystemTime::now();
    let rx = receiver(None, &anchors);
    let mut guard = ReplayGuard::new();
    for (offset, fault) in [
        (-360i64, TimestampFault::Old),
        (360, TimestampFault::Future),
    ] {
        let at = if offset < 0 {
            now - Duration::from_secs(360)
        } else {
            now + Duration::from_secs(360)
        };
        let object = protect(&cpim_entity(at), &Protection::signed(&f.alice.credential)).unwrap();
        let result = open(&object, "alice@example.com", &rx, now, Some(&mut guard));
        assert!(
            matches!(result, Err(E2eError::BadTimestamp(got)) if got == fault),
            "{result:?}"
        );
        assert_eq!(condition(result), Condition::BadTimestamp);
    }
    let object = protect(
        &cpim_entity(now - Duration::from_secs(1)),
        &Protection::signed(&f.alice.credential),
    )
    .unwrap();
    assert!(open(&object, "alice@example.com", &rx, now, Some(&mut guard)).is_ok());
    let replay = open(&object, "alice@example.com", &rx, now, Some(&mut guard));
    assert!(
        matches!(
            replay,
            Err(E2eError::BadTimestamp(TimestampFault::Decreasing))
        ),
        "{replay:?}"
    );
    assert_eq!(condition(replay), Condition::BadTimestamp);
    let error = Condition::BadTimestamp.to_error_element();
    assert!(error.has_child("bad-timestamp", starling_e2e::E2E_NS));
}

#[test]
fn missing_key_is_decryption_failed() {
    let f = fixture();
    let anchors = anchors();
    let recipients = [f.bob.credential.certificate().clone()];
    let object = protect(
        &cpim_entity(SystemTime::now()),
        &Protection::signed_and_encrypted(&f.alice.credential, &recipients),
    )
    .unwrap();
    // Alice holds no key for an object addressed to Bob; a receiver with no key at all neither.
    for credential in [Some(&f.alice.credential), None] {
        let result = open(
            &object,
            "alice@example.com",
            &receiver(credential, &anchors),
            SystemTime::now(),
            None,
        );
        assert!(matches!(result, Err(E2eError::NoRecipient)), "{result:?}");
        assert_eq!(condition(result), Condition::DecryptionFailed);
    }
    let error = Condition::DecryptionFailed.to_error_element();
    assert_eq!(error.attr("type"), Some("modify"));
    assert!(error.has_child("bad-request", "urn:ietf:params:xml:ns:xmpp-stanzas"));
    assert!(error.has_child("decryption-failed", starling_e2e::E2E_NS));
    // A flipped ciphertext byte under GCM fails authentication.
    let object = envelope::encrypt(
        b"Content-Type: text/plain\r\n\r\nhi",
        &recipients,
        ContentCipher::Aes256Gcm,
        KeyTransport::RsaPkcs1v15,
    )
    .unwrap();
    let entity = Entity::parse(&object).unwrap();
    let mut der = entity.decoded_body().unwrap();
    let last = der.len() - 20;
    der[last] ^= 0x01;
    let result = envelope::decrypt_der(&der, &f.bob.credential);
    assert_eq!(condition(result), Condition::DecryptionFailed);
}

#[test]
fn test_ca_certificates_carry_the_rfc_3923_addresses() {
    let f = fixture();
    let files = Files::new();
    let (ok, text) = run(openssl().args([
        "x509",
        "-noout",
        "-ext",
        "subjectAltName",
        "-in",
        p(&files.path("alice.pem")),
    ]));
    assert!(ok, "{text}");
    assert!(text.contains("URI:im:alice@example.com"), "{text}");
    assert!(text.contains("URI:pres:alice@example.com"), "{text}");
    assert!(
        text.contains("alice@example.com")
            && (text.contains("XmppAddr") || text.contains("1.3.6.1.5.5.7.8.5")),
        "{text}"
    );
    let (ok, text) = run(openssl().args([
        "verify",
        "-CAfile",
        p(&files.path("ca.pem")),
        "-purpose",
        "smimesign",
        p(&files.path("alice.pem")),
    ]));
    assert!(ok, "{text}");
    let chain = certificates_from_pem(&f.alice.certificate_pem).unwrap();
    let reloaded = Credential::from_pem(&f.alice.certificate_pem, &f.alice.key_pem).unwrap();
    assert_eq!(reloaded.certificate(), &chain[0]);
}

#[test]
fn secured_message_and_presence_stanzas_round_trip_and_openssl_agrees() {
    use starling_e2e::content::{open_stanza, secure_stanza};
    let f = fixture();
    let files = Files::new();
    let anchors = anchors();
    let recipients = [f.bob.credential.certificate().clone()];
    let protection = Protection::signed_and_encrypted(&f.alice.credential, &recipients);
    let now = SystemTime::now();
    let message: minidom::Element = "<message xmlns='jabber:client' from='alice@example.com/laptop' to='bob@example.net' type='chat' id='m1'><subject>Lunch</subject><body>Noon ]]&gt; at the usual place?</body></message>".parse().unwrap();
    let presence: minidom::Element = "<presence xmlns='jabber:client' from='alice@example.com/laptop' to='bob@example.net'><show>dnd</show><status>In a meeting</status></presence>".parse().unwrap();
    let mut guard = ReplayGuard::new();
    // §6: the sender keeps its timestamps strictly increasing across stanzas.
    for (step, (stanza, kind)) in [
        (&message, "message/cpim"),
        (&presence, "application/pidf+xml"),
    ]
    .into_iter()
    .enumerate()
    {
        let now = now + Duration::from_millis(step as u64);
        let secured = secure_stanza(stanza, now, &protection).unwrap();
        assert_eq!(secured.children().count(), 1);
        assert!(!String::from(&secured).contains("Noon"), "plaintext leaked");
        let wire: minidom::Element = String::from(&secured).parse().unwrap();
        let (opened, cpim) = open_stanza(
            &wire,
            &receiver(Some(&f.bob.credential), &anchors),
            now,
            Some(&mut guard),
        )
        .unwrap_or_else(|e| panic!("{kind}: {e}"));
        assert_eq!(
            Entity::parse(&opened.content)
                .unwrap()
                .content_type()
                .mime_type(),
            kind
        );
        assert!(opened.timestamp.is_some());
        if kind == "message/cpim" {
            let text = String::from_utf8(cpim.unwrap().entity().body().to_vec()).unwrap();
            assert_eq!(text, "Noon ]]> at the usual place?");
        }
        // openssl reads the same object: decrypt, then verify.
        let object = payload::unwrap(payload::find(&wire).unwrap()).unwrap();
        let input = files.write("enc.txt", &object);
        let (ok, text) = run(openssl().args([
            "cms",
            "-decrypt",
            "-recip",
            p(&files.path("bob.pem")),
            "-inkey",
            p(&files.path("bob.key")),
            "-in",
            p(&input),
            "-out",
            p(&files.path("signed.txt")),
        ]));
        assert!(ok, "{kind} decrypt: {text}");
        let (ok, text) = run(openssl().args([
            "cms",
            "-verify",
            "-CAfile",
            p(&files.path("ca.pem")),
            "-in",
            p(&files.path("signed.txt")),
            "-out",
            p(&files.path("plain.txt")),
        ]));
        assert!(ok, "{kind} verify: {text}");
        assert_eq!(mime::canonicalize(&files.read("plain.txt")), opened.content);
    }
}
