//! Server Dialback (XEP-0220) as pure functions: the dialback keys of XEP-0185 and the
//! `db:result` / `db:verify` elements. The network side (who connects where) lives in
//! [`crate::listener`] and [`crate::connector`].
//!
//! XEP-0185 §2: key = HEX(HMAC-SHA256(HEX(SHA256(secret)), receiving + ' ' + originating + ' ' +
//! stream id)). The secret stays in the data directory, so keys made before a restart still
//! verify after it, and a receiving server can check a key with any of our nodes.

use hmac::{KeyInit, Mac};
use minidom::Element;
use sha2::Digest;
use starling_core::xml::BuilderExt;

/// The dialback namespace (`db:` prefix in stream headers).
pub const NS_DB: &str = "jabber:server:dialback";
/// The stream feature announcing dialback (XEP-0220 §2.4).
pub const NS_FEATURE: &str = "urn:xmpp:features:dialback";

/// Computes the dialback key for a stream from `originating` (us) to `receiving` whose id
/// the receiving server assigned.
pub fn key(secret: &[u8], receiving: &str, originating: &str, stream_id: &str) -> String {
    // The hashed secret enters the HMAC hex-encoded, as in the XEP's example code.
    let hashed = hex::encode(sha2::Sha256::digest(secret));
    let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(hashed.as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(receiving.as_bytes());
    mac.update(b" ");
    mac.update(originating.as_bytes());
    mac.update(b" ");
    mac.update(stream_id.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Compares a presented key with the expected one in constant time.
pub fn key_matches(expected: &str, presented: &str) -> bool {
    let (a, b) = (expected.as_bytes(), presented.trim().as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `<db:result from to>key</db:result>` (the originating server's request) or, with `kind`,
/// the receiving server's answer.
pub fn result(from: &str, to: &str, key: Option<&str>, kind: Option<&str>) -> Element {
    let mut b = Element::builder("result", NS_DB)
        .with_attr("from", from)
        .with_attr("to", to);
    if let Some(k) = kind {
        b = b.with_attr("type", k);
    }
    if let Some(key) = key {
        b = b.append(key);
    }
    b.build()
}

/// `<db:verify from to id>key</db:verify>`, or the answer with `kind`.
pub fn verify(from: &str, to: &str, id: &str, key: Option<&str>, kind: Option<&str>) -> Element {
    let mut b = Element::builder("verify", NS_DB)
        .with_attr("from", from)
        .with_attr("to", to)
        .with_attr("id", id);
    if let Some(k) = kind {
        b = b.with_attr("type", k);
    }
    if let Some(key) = key {
        b = b.append(key);
    }
    b.build()
}

/// Serialises a dialback element with the customary `db:` prefix (declared on our stream
/// header). Some servers (ejabberd) match the prefixed name literally and ignore
/// `<result xmlns='jabber:server:dialback'/>`.
pub fn to_wire(el: &Element) -> String {
    let xml = starling_proto::writer::element_to_string(el);
    let name = el.name();
    let body = xml
        .strip_prefix(&format!("<{name}"))
        .unwrap_or(&xml)
        .replacen(&format!(" xmlns='{NS_DB}'"), "", 1);
    let body = match body.strip_suffix(&format!("</{name}>")) {
        Some(inner) => format!("{inner}</db:{name}>"),
        None => body,
    };
    format!("<db:{name}{body}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dialback_elements_use_the_db_prefix() {
        let r = to_wire(&result("a.test", "b.test", Some("k3y"), None));
        assert_eq!(r, "<db:result from='a.test' to='b.test'>k3y</db:result>");
        let v = to_wire(&verify("b.test", "a.test", "i1", None, Some("valid")));
        assert!(v.starts_with("<db:verify "), "{v}");
        assert!(v.ends_with("/>") && !v.contains("xmlns"), "{v}");
        // It parses back, in the dialback namespace, inside a stream that declares db:.
        let parsed: Element = format!("<x xmlns='urn:t' xmlns:db='{NS_DB}'>{r}</x>")
            .parse()
            .unwrap();
        assert!(parsed.get_child("result", NS_DB).is_some());
    }

    #[test]
    fn keys_differ_per_stream_and_direction() {
        let a = key(b"s", "b.test", "a.test", "1");
        assert_ne!(a, key(b"s", "b.test", "a.test", "2"));
        assert_ne!(a, key(b"s", "a.test", "b.test", "1"));
        assert_ne!(a, key(b"t", "b.test", "a.test", "1"));
        assert!(key_matches(&a, &a));
        assert!(!key_matches(&a, &a[1..]));
    }
}
