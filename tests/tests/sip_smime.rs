//! RFC 3923 §8 through the SIP gateway: an S/MIME object (here `openssl cms -encrypt`
//! output, an EnvelopedData around a Message/CPIM entity) passes unchanged both ways.
//! XMPP -> SIP: the `<e2e/>` text becomes the MESSAGE (over TCP: it is above 1300 bytes) (MIME fields as SIP fields, body as
//! body) and `openssl cms -decrypt` on what the SIP side received gives back the CPIM entity.
//! SIP -> XMPP: sipp sends the object as a MESSAGE; the `<e2e/>` text alice receives equals
//! the object byte for byte (after the CRLF canonicalisation RFC 3923 receivers apply) and
//! decrypts with openssl.

mod sip_support;

use std::path::Path;
use std::process::Command;

use sip_support::*;
use starling_core::config::SipMessageFormat;

const CPIM: &str = "Content-type: Message/CPIM\r\n\r\nFrom: <im:alice@localhost>\r\n\
To: <im:bob@sip.example>\r\nDateTime: 2026-11-25T17:00:00.000Z\r\n\r\n\
Content-type: text/plain; charset=utf-8\r\n\r\nSecret lunch ]]> at noon & <no tags>\r\n";

fn openssl(dir: &Path, args: &[&str]) -> Vec<u8> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// bob's certificate and key, the CPIM entity, and it encrypted for bob (smime.txt).
fn encrypted_for_bob(dir: &Path) -> Vec<u8> {
    openssl(
        dir,
        &[
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "bob.key", "-out",
            "bob.pem", "-subj", "/CN=bob", "-days", "2",
        ],
    );
    std::fs::write(dir.join("cpim.txt"), CPIM).unwrap();
    openssl(
        dir,
        &[
            "cms",
            "-encrypt",
            "-binary",
            "-aes-128-cbc",
            "-in",
            "cpim.txt",
            "-out",
            "smime.txt",
            "bob.pem",
        ],
    );
    starling_e2e::mime::canonicalize(&std::fs::read(dir.join("smime.txt")).unwrap())
}

fn decrypt(dir: &Path, object: &[u8]) -> Vec<u8> {
    std::fs::write(dir.join("received.txt"), object).unwrap();
    openssl(
        dir,
        &[
            "cms",
            "-decrypt",
            "-binary",
            "-in",
            "received.txt",
            "-recip",
            "bob.pem",
            "-inkey",
            "bob.key",
        ],
    )
}

fn xml_text(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[tokio::test]
async fn xmpp_e2e_object_reaches_the_sip_side_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let object = encrypted_for_bob(dir.path());
    let peer_port = free_port().await;
    let gw = gateway_server(peer_port, SipMessageFormat::Cpim).await;
    // With its SIP header fields the request is above 1300 bytes: the gateway must use TCP
    // (RFC 3428 §5), so the peer listens on TCP.
    let peer = TcpPeer::bind(peer_port).await;
    let mut alice = online(&gw.server, "alice", "phone").await;
    let text = String::from_utf8(object.clone()).unwrap();
    alice
        .send(&format!(
            "<message to='{BOB}' type='chat' id='e1'><e2e xmlns='urn:ietf:params:xml:ns:xmpp-e2e'>{}</e2e></message>",
            xml_text(&text)
        ))
        .await;
    let msg = peer.recv_and_ok().await;
    assert!(msg.header("Via").unwrap().starts_with("SIP/2.0/TCP"));
    assert!(msg.to_bytes().len() > 1300);
    assert_eq!(msg.method(), Some("MESSAGE"));
    assert!(msg
        .header("Content-Type")
        .unwrap()
        .starts_with("application/pkcs7-mime; smime-type=enveloped-data"));
    // Rebuild the entity from what SIP carried: its MIME fields, in order, and the body.
    let mut rebuilt = Vec::new();
    for (n, v) in msg.headers() {
        let l = n.to_ascii_lowercase();
        if l == "mime-version" || (l.starts_with("content-") && l != "content-length") {
            rebuilt.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
        }
    }
    rebuilt.extend_from_slice(b"\r\n");
    rebuilt.extend_from_slice(&msg.body);
    assert_eq!(
        String::from_utf8_lossy(&rebuilt),
        String::from_utf8_lossy(&object),
        "the S/MIME object changed on the way"
    );
    assert_eq!(decrypt(dir.path(), &rebuilt), CPIM.as_bytes());
}

#[tokio::test]
async fn sip_smime_message_reaches_the_xmpp_user_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let object = encrypted_for_bob(dir.path());
    // The scenario inserts the body from smime.b64; its header fields are the object's.
    let text = String::from_utf8(object.clone()).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert_eq!(
        head,
        "MIME-Version: 1.0\r\nContent-Disposition: attachment; filename=\"smime.p7m\"\r\n\
Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name=\"smime.p7m\"\r\n\
Content-Transfer-Encoding: base64",
        "openssl's header fields are those uac_message_smime.xml sends"
    );
    std::fs::write(dir.path().join("smime.b64"), body.trim_end()).unwrap();
    let sipp_port = free_port().await;
    let gw = gateway_server(sipp_port, SipMessageFormat::Cpim).await;
    let mut alice = online(&gw.server, "alice", "phone").await;
    let target = gw.gateway.to_string();
    sipp_in(
        dir.path(),
        "uac_message_smime.xml",
        sipp_port,
        &["-s", "alice", &target],
    )
    .success()
    .await;
    let msg = alice.recv_until(|e| e.name() == "message").await;
    assert_eq!(msg.attr("from"), Some(BOB));
    let e2e = starling_e2e::payload::find(&msg).expect("an <e2e/> payload");
    let received = starling_e2e::payload::unwrap(e2e).unwrap();
    // sipp ends the body with a line break; the object is otherwise byte-identical.
    assert_eq!(
        String::from_utf8_lossy(&received).trim_end(),
        text.trim_end(),
        "the S/MIME object changed on the way"
    );
    assert_eq!(decrypt(dir.path(), &received), CPIM.as_bytes());
}
