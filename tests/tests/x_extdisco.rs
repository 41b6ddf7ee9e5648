//! Transcripts for External Service Discovery (XEP-0215): a logged-in user lists the
//! configured STUN/TURN services (all, or one type), with static credentials or time-limited
//! ones derived from a shared secret (TURN REST API draft), asks for credentials of one
//! service, and finds the feature in the server's disco#info. The HMAC is recomputed here
//! from SHA-1 alone, independently of the server's code.

mod im_support;

use base64::Engine;
use im_support::{expect_error, xml};
use minidom::Element;
use sha1::{Digest, Sha1};
use starling_core::config::ExternalService;
use starling_tests::*;

const NS: &str = "urn:xmpp:extdisco:2";

fn service(kind: &str, host: &str, port: u16) -> ExternalService {
    ExternalService {
        kind: kind.into(),
        host: host.into(),
        port: Some(port),
        transport: Some("udp".into()),
        name: None,
        username: None,
        password: None,
        secret: None,
        ttl_secs: 3600,
    }
}

async fn start() -> TestServer {
    let s = TestServer::start_with(|c| {
        let stun = service("stun", "stun.example.org", 3478);
        let mut fixed = service("turn", "relay.example.org", 3478);
        fixed.username = Some("user".into());
        fixed.password = Some("pass".into());
        let mut rest = service("turn", "turn.example.org", 3478);
        rest.secret = Some("s3cret".into());
        let mut rest_tcp = rest.clone();
        rest_tcp.port = Some(443);
        rest_tcp.transport = Some("tcp".into());
        c.external_services = vec![stun, fixed, rest, rest_tcp];
    })
    .await;
    s.add_user("alice", "pw-alice").await;
    s
}

/// HMAC-SHA1 (RFC 2104) from the hash function alone.
fn hmac_sha1(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..20].copy_from_slice(&Sha1::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let pad = |b: u8| k.iter().map(|x| x ^ b).collect::<Vec<u8>>();
    let mut inner = Sha1::new();
    inner.update(pad(0x36));
    inner.update(msg);
    let mut outer = Sha1::new();
    outer.update(pad(0x5c));
    outer.update(inner.finalize());
    outer.finalize().to_vec()
}

async fn result(c: &mut Conn, id: &str, payload: &str) -> Element {
    c.send(&format!(
        "<iq type='get' id='{id}' to='localhost'>{payload}</iq>"
    ))
    .await;
    let r = c.recv().await;
    assert_eq!(r.attr("id"), Some(id), "{}", xml(&r));
    assert_eq!(r.attr("type"), Some("result"), "{}", xml(&r));
    r.children().next().cloned().expect("a payload")
}

fn hosts(list: &Element) -> Vec<(String, String)> {
    list.children()
        .map(|s| {
            (
                s.attr("type").unwrap_or_default().to_owned(),
                s.attr("host").unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// Checks time-limited credentials (TURN REST draft): `expiry:user`, the HMAC, the expiry.
fn assert_rest_credentials(svc: &Element, user: &str) {
    let username = svc.attr("username").expect("username");
    let (expiry, who) = username.split_once(':').expect("expiry:user");
    assert_eq!(who, user);
    let expiry: u64 = expiry.parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(expiry > now + 3500 && expiry <= now + 3600, "ttl 3600 s");
    let expected =
        base64::engine::general_purpose::STANDARD.encode(hmac_sha1(b"s3cret", username.as_bytes()));
    assert_eq!(svc.attr("password"), Some(expected.as_str()));
    assert_eq!(svc.attr("restricted"), Some("1"));
    assert!(svc.attr("expires").unwrap().ends_with('Z'), "XEP-0082 UTC");
}

#[tokio::test]
async fn services_are_listed_with_credentials() {
    let server = start().await;
    let mut alice = server.login("alice", "pw-alice", "phone").await;
    // XEP-0215 §5: the feature on the server.
    let info = result(
        &mut alice,
        "d",
        "<query xmlns='http://jabber.org/protocol/disco#info'/>",
    )
    .await;
    assert!(info.children().any(|f| f.attr("var") == Some(NS)));
    // §3.1: every service.
    let list = result(&mut alice, "s1", &format!("<services xmlns='{NS}'/>")).await;
    assert_eq!(
        hosts(&list),
        vec![
            ("stun".into(), "stun.example.org".into()),
            ("turn".into(), "relay.example.org".into()),
            ("turn".into(), "turn.example.org".into()),
            ("turn".into(), "turn.example.org".into()),
        ]
    );
    let svcs: Vec<&Element> = list.children().collect();
    assert_eq!(svcs[0].attr("port"), Some("3478"));
    assert_eq!(svcs[0].attr("transport"), Some("udp"));
    assert_eq!(svcs[0].attr("username"), None, "STUN needs no credentials");
    assert_eq!(svcs[1].attr("username"), Some("user"));
    assert_eq!(svcs[1].attr("password"), Some("pass"));
    assert_rest_credentials(svcs[2], "alice@localhost");
    assert_eq!(svcs[3].attr("transport"), Some("tcp"));
    // §3.2: one type.
    let list = result(
        &mut alice,
        "s2",
        &format!("<services xmlns='{NS}' type='stun'/>"),
    )
    .await;
    assert_eq!(list.attr("type"), Some("stun"));
    assert_eq!(
        hosts(&list),
        vec![("stun".into(), "stun.example.org".into())]
    );
}

#[tokio::test]
async fn credentials_for_one_service() {
    let server = start().await;
    let mut alice = server.login("alice", "pw-alice", "phone").await;
    // §3.3: host and type; both ports of turn.example.org match.
    let creds = result(
        &mut alice,
        "c1",
        &format!("<credentials xmlns='{NS}'><service host='turn.example.org' type='turn'/></credentials>"),
    )
    .await;
    assert_eq!(creds.children().count(), 2, "{}", xml(&creds));
    for svc in creds.children() {
        assert_rest_credentials(svc, "alice@localhost");
    }
    // With a port: only that one.
    let creds = result(
        &mut alice,
        "c2",
        &format!("<credentials xmlns='{NS}'><service host='turn.example.org' type='turn' port='443'/></credentials>"),
    )
    .await;
    assert_eq!(creds.children().count(), 1);
    assert_eq!(creds.children().next().unwrap().attr("port"), Some("443"));
    // An unknown service.
    alice
        .send(&format!("<iq type='get' id='c3' to='localhost'><credentials xmlns='{NS}'><service host='nope.example.org' type='turn'/></credentials></iq>"))
        .await;
    expect_error(&mut alice, "c3", "item-not-found").await;
    // host and type are required.
    alice
        .send(&format!("<iq type='get' id='c4' to='localhost'><credentials xmlns='{NS}'><service host='turn.example.org'/></credentials></iq>"))
        .await;
    expect_error(&mut alice, "c4", "bad-request").await;
}

#[tokio::test]
async fn no_services_configured() {
    let server = TestServer::start().await;
    server.add_user("alice", "pw-alice").await;
    let mut alice = server.login("alice", "pw-alice", "phone").await;
    let list = result(&mut alice, "s", &format!("<services xmlns='{NS}'/>")).await;
    assert_eq!(list.children().count(), 0);
}
