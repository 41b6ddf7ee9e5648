//! The public SIP codec of the gateway (`starling_sipgw::sip`) and its error mapping, from
//! outside the crate: what a peer's bytes become, what the gateway writes, and that whatever
//! it writes it reads back the same.

use starling_sipgw::errors::{condition_to_sip, sip_to_condition};
use starling_sipgw::sip::{addr_uri, frame_len, param, SipMessage};

#[test]
fn a_notify_built_by_hand_round_trips() {
    let mut n = SipMessage::request("NOTIFY", "sip:bob@127.0.0.1:5070");
    n.push("Via", "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKabc;rport")
        .push("From", "<sip:alice@localhost>;tag=a1")
        .push("To", "\"Bob\" <sip:bob@sip.example>;tag=b1")
        .push("Call-ID", "c1@sip.localhost")
        .push("CSeq", "3 NOTIFY")
        .push("Event", "presence")
        .push("Subscription-State", "active;expires=599")
        .push("Content-Type", "application/pidf+xml");
    n.body = b"<presence/>".to_vec();
    let bytes = n.to_bytes();
    assert_eq!(frame_len(&bytes, 65536), Ok(Some(bytes.len())));
    let back = SipMessage::parse(&bytes, 65536).unwrap();
    assert_eq!(back, n);
    assert_eq!(back.cseq(), Some((3, "NOTIFY")));
    assert_eq!(param(back.header("To").unwrap(), "tag"), Some("b1"));
    assert_eq!(addr_uri(back.header("To").unwrap()), "sip:bob@sip.example");
    assert_eq!(
        param(back.header("Subscription-State").unwrap(), "expires"),
        Some("599")
    );
}

#[test]
fn random_bytes_never_panic_the_parser() {
    // A bounded, deterministic sweep of byte soup and truncations of a real message.
    let real = b"MESSAGE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nl: 3\r\n\r\nabc";
    for cut in 0..real.len() {
        let _ = SipMessage::parse(&real[..cut], 1024);
        let _ = frame_len(&real[..cut], 1024);
    }
    let mut x: u32 = 12345;
    for _ in 0..2000 {
        let mut buf = Vec::new();
        for _ in 0..(x % 200) {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            buf.push(b"SIP/2.0 \r\n:;=<>@abcZ0123"[(x >> 16) as usize % 24]);
        }
        let _ = SipMessage::parse(&buf, 1024);
        let _ = frame_len(&buf, 1024);
    }
}

#[test]
fn rfc_7247_error_table_round_trips_on_the_common_codes() {
    for code in [400u16, 403, 404, 408, 480, 500, 503] {
        assert_eq!(condition_to_sip(&sip_to_condition(code)), code, "{code}");
    }
}
