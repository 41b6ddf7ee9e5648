//! Fuzz target for `starling_proto::framer` (RFC 6120 §4, §11): arbitrary bytes in arbitrary
//! chunk sizes must never panic, buffering must stay under the limit, an error must be sticky,
//! every stanza must survive a write/re-parse round trip, and the framer's fast path must give
//! the same events and errors, chunk by chunk, as rxml alone.
#![no_main]

use libfuzzer_sys::fuzz_target;
use starling_proto::framer::{Framer, Limits, StreamEvent};
use starling_proto::writer;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the chunk size (low six bits) and whether scratch memory is
    // released after each chunk (bit 6, as an idle stream does), the second a small stanza
    // limit (to reach the limit paths with small inputs); the rest is the stream.
    let (chunk, limit, input) = match data {
        [c, l, rest @ ..] => (usize::from(*c % 64) + 1, 64 + usize::from(*l) * 16, rest),
        _ => return,
    };
    let release = data[0] & 64 != 0;
    let limits = Limits {
        max_stanza_bytes: limit,
        max_depth: 16,
        max_attributes: 16,
        max_elements: 32,
        max_buffered_bytes: 1024,
    };
    let mut framer = Framer::new(limits);
    let mut slow = Framer::new(limits);
    slow.set_fast_path(false);
    for part in input.chunks(chunk) {
        framer.feed(part);
        slow.feed(part);
        assert!(framer.buffered() <= limits.max_buffered_bytes);
        loop {
            let event = framer.next_event();
            assert_eq!(event, slow.next_event(), "fast path and rxml differ");
            match event {
                Ok(Some(StreamEvent::Stanza(el))) => check_round_trip(&el),
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => {
                    assert_eq!(framer.next_event(), Err(e));
                    return;
                }
            }
        }
        if release {
            framer.release_temporaries();
            slow.release_temporaries();
        }
    }
});

/// What the writer emits for a parsed stanza parses back to an equal element.
fn check_round_trip(el: &starling_proto::Element) {
    let mut out = writer::stream_header("jabber:client", None, None, "f", None).into_bytes();
    writer::write_element(el, &mut out);
    let mut f = Framer::new(Limits {
        max_buffered_bytes: out.len() + 1,
        max_stanza_bytes: out.len() + 1,
        ..Limits::default()
    });
    f.feed(&out);
    assert!(matches!(f.next_event(), Ok(Some(StreamEvent::Open(_)))));
    match f.next_event() {
        Ok(Some(StreamEvent::Stanza(back))) => assert_eq!(&back, el),
        other => panic!(
            "re-parse of {:?} gave {other:?}",
            String::from_utf8_lossy(&out)
        ),
    }
}
