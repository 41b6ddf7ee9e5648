//! The SCRAM examples of RFC 5802 §5 (SCRAM-SHA-1) and RFC 7677 §3 (SCRAM-SHA-256), run
//! through both our server and our client with the RFC's fixed nonces: every message must
//! come out byte for byte as printed in the RFC. Stored keys were computed independently
//! (Python hashlib) from the RFC's salt and password.

use starling_sasl::*;

struct Vector {
    hash: ScramHash,
    mech: Mechanism,
    client_nonce: &'static str,
    server_nonce: &'static str,
    salt_b64: &'static str,
    client_first: &'static str,
    server_first: &'static str,
    client_final: &'static str,
    server_final: &'static str,
    stored_key_hex: &'static str,
    server_key_hex: &'static str,
    salted_hex: &'static str,
}

const RFC5802: Vector = Vector {
    hash: ScramHash::Sha1,
    mech: Mechanism::ScramSha1,
    client_nonce: "fyko+d2lbbFgONRv9qkxdawL",
    server_nonce: "3rfcNHYJY1ZVvWVs7j",
    salt_b64: "QSXCR+Q6sek8bf92",
    client_first: "n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL",
    server_first: "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096",
    client_final:
        "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
    server_final: "v=rmF9pqV8S7suAoZWja4dJRkFsKQ=",
    stored_key_hex: "e9d94660c39d65c38fbad91c358f14da0eef2bd6",
    server_key_hex: "0fe09258b3ac852ba502cc62ba903eaacdbf7d31",
    salted_hex: "1d96ee3a529b5a5f9e47c01f229a2cb8a6e15f7d",
};

const RFC7677: Vector = Vector {
    hash: ScramHash::Sha256,
    mech: Mechanism::ScramSha256,
    client_nonce: "rOprNGfwEbeRWgbNEkqO",
    server_nonce: "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
    salt_b64: "W22ZaJ0SNY7soEsUEjb6gQ==",
    client_first: "n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
    server_first: "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
    client_final: "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
    server_final: "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=",
    stored_key_hex: "586e5df283e6dceb5c3e791d8b8528ec191e664045ce971792e2e6b5bb13e2a6",
    server_key_hex: "c1f3cbc1c13a9d35a14c0990eed97629ea225863e566a4314ab99f3f00e5d9d5",
    salted_hex: "c4a49510323ab4f952cac1fa99441939e78ea74d6be81ddf7096e87513dc615d",
};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn salt(v: &Vector) -> Vec<u8> {
    use base64::prelude::{Engine, BASE64_STANDARD};
    BASE64_STANDARD.decode(v.salt_b64).unwrap()
}

fn check_derive(v: &Vector) {
    let creds = derive_credentials("pencil", v.hash, 4096, &salt(v)).unwrap();
    assert_eq!(creds.hash, v.hash);
    assert_eq!(creds.iterations, 4096);
    assert_eq!(creds.salt, salt(v));
    assert_eq!(hex(&creds.stored_key), v.stored_key_hex);
    assert_eq!(hex(&creds.server_key), v.server_key_hex);
}

fn check_server(v: &Vector) {
    let creds = derive_credentials("pencil", v.hash, 4096, &salt(v)).unwrap();
    let mut server = ServerSession::with_nonce(v.mech, Vec::new(), false, v.server_nonce);
    assert_eq!(
        server.step(v.client_first.as_bytes()).unwrap(),
        Step::NeedCredentials {
            username: "user".into(),
            hash: v.hash
        }
    );
    assert_eq!(
        server.provide_credentials(Some(creds)).unwrap(),
        Step::Challenge(v.server_first.as_bytes().to_vec())
    );
    assert_eq!(
        server.step(v.client_final.as_bytes()).unwrap(),
        Step::Success {
            username: "user".into(),
            authzid: None,
            additional_data: Some(v.server_final.as_bytes().to_vec()),
        }
    );
}

fn check_client(v: &Vector) {
    let mut client =
        ScramClient::new(v.hash, "user", "pencil", None, false).with_nonce(v.client_nonce);
    assert_eq!(client.mechanism(), v.mech);
    assert_eq!(client.client_first(), v.client_first.as_bytes());
    assert_eq!(client.salted_password(), None);
    assert_eq!(
        client
            .handle_server_first(v.server_first.as_bytes())
            .unwrap(),
        v.client_final.as_bytes()
    );
    assert_eq!(hex(client.salted_password().unwrap()), v.salted_hex);
    client
        .verify_server_final(v.server_final.as_bytes())
        .unwrap();
}

fn check_client_with_cached_salted_password(v: &Vector) {
    // A wrong password but the right cached SaltedPassword: the cache must be what is used.
    let mut client = ScramClient::new(v.hash, "user", "not-pencil", None, false)
        .with_nonce(v.client_nonce)
        .with_salted_password(salt(v), 4096, unhex(v.salted_hex));
    client.client_first();
    assert_eq!(
        client
            .handle_server_first(v.server_first.as_bytes())
            .unwrap(),
        v.client_final.as_bytes()
    );
    client
        .verify_server_final(v.server_final.as_bytes())
        .unwrap();

    // A cache for another salt is ignored: PBKDF2 runs on the (wrong) password.
    let mut client = ScramClient::new(v.hash, "user", "not-pencil", None, false)
        .with_nonce(v.client_nonce)
        .with_salted_password(b"other salt".to_vec(), 4096, unhex(v.salted_hex));
    client.client_first();
    assert_ne!(
        client
            .handle_server_first(v.server_first.as_bytes())
            .unwrap(),
        v.client_final.as_bytes()
    );
}

#[test]
fn rfc5802_derive_credentials() {
    check_derive(&RFC5802);
}

#[test]
fn rfc7677_derive_credentials() {
    check_derive(&RFC7677);
}

#[test]
fn rfc5802_server_reproduces_example() {
    check_server(&RFC5802);
}

#[test]
fn rfc7677_server_reproduces_example() {
    check_server(&RFC7677);
}

#[test]
fn rfc5802_client_reproduces_example() {
    check_client(&RFC5802);
}

#[test]
fn rfc7677_client_reproduces_example() {
    check_client(&RFC7677);
}

#[test]
fn rfc5802_client_uses_cached_salted_password() {
    check_client_with_cached_salted_password(&RFC5802);
}

#[test]
fn rfc7677_client_uses_cached_salted_password() {
    check_client_with_cached_salted_password(&RFC7677);
}

#[test]
fn client_rejects_forged_server_signature() {
    for v in [&RFC5802, &RFC7677] {
        let mut client =
            ScramClient::new(v.hash, "user", "pencil", None, false).with_nonce(v.client_nonce);
        client.client_first();
        client
            .handle_server_first(v.server_first.as_bytes())
            .unwrap();
        let other = if v.hash == ScramHash::Sha1 {
            RFC7677.server_final
        } else {
            RFC5802.server_final
        };
        assert_eq!(
            client.verify_server_final(other.as_bytes()),
            Err(Failure::NotAuthorized)
        );
    }
    let mut client = ScramClient::new(ScramHash::Sha1, "user", "pencil", None, false)
        .with_nonce(RFC5802.client_nonce);
    client.client_first();
    client
        .handle_server_first(RFC5802.server_first.as_bytes())
        .unwrap();
    assert_eq!(
        client.verify_server_final(b"e=invalid-proof"),
        Err(Failure::NotAuthorized)
    );
}
