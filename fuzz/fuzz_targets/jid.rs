//! Fuzz target for `starling_proto::jid` (RFC 7622): any string must parse or fail without
//! panicking; a parsed JID must be stable (its text parses back to an equal JID), its bare
//! form and parts must parse too, the PRECIS preparations must be idempotent, and the
//! one-pass `Jid::parse` must agree with `Jid::parse_full`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use starling_proto::jid::{prep_domain, prep_localpart, prep_resource, Jid};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    // The one-pass path gives what the full preparation gives.
    assert_eq!(Jid::parse(s).ok(), Jid::parse_full(s).ok(), "{s:?}");
    if let Ok(j) = Jid::parse(s) {
        let again = Jid::parse(j.as_str()).expect("a prepared JID parses again");
        assert_eq!(again, j);
        assert_eq!(again.as_str(), j.as_str());
        let bare = j.bare();
        assert!(bare.is_bare());
        assert_eq!(Jid::parse(bare.as_str()).expect("bare parses"), bare);
        assert_eq!(
            Jid::new(j.node(), j.domain(), j.resource()).expect("parts rebuild"),
            j
        );
        assert!(j.as_str().len() <= 3071 + 2, "RFC 7622 §3.1 length bounds");
    }
    for prep in [prep_localpart, prep_resource, prep_domain] {
        if let Ok(p) = prep(s) {
            assert_eq!(prep(&p).as_deref(), Ok(p.as_str()), "idempotent: {s:?}");
        }
    }
});
