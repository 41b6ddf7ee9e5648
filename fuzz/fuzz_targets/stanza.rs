//! Fuzz target for stanza handling without sockets: a whole client stream goes through the
//! framer, and every stanza through what a session does to it before routing — kind and
//! type parsing, IQ validation (RFC 6120 §8.2.3), `to`/`from` JID parsing (RFC 7622), error
//! replies (§8.3) and serialisation. No panic; an error reply is never generated for an
//! error stanza and always parses back; every stanza written re-parses.
//!
//! The socket-level session (STARTTLS, SASL, bind) is not reached from here: it lives behind
//! the c2s listener; its hostile-input cases are the transcript tests in tests/tests/hard_*.
#![no_main]

use libfuzzer_sys::fuzz_target;
use starling_proto::error::{error_reply, StanzaError, StanzaErrorCondition};
use starling_proto::framer::{Framer, Limits, StreamEvent};
use starling_proto::jid::Jid;
use starling_proto::{stanza, writer};

const HEADER: &[u8] = b"<stream:stream xmlns='jabber:client' \
    xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>";

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_stanza_bytes: 4096,
        max_depth: 16,
        max_attributes: 16,
        max_elements: 64,
        max_buffered_bytes: 8192,
    };
    let mut framer = Framer::new(limits);
    framer.feed(HEADER);
    for part in data.chunks(512) {
        framer.feed(part);
        loop {
            match framer.next_event() {
                Ok(Some(StreamEvent::Stanza(el))) => handle(el),
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
});

fn handle(mut el: starling_proto::Element) {
    let sender = Jid::parse("alice@localhost/fuzz").unwrap();
    let Some(kind) = stanza::kind(&el) else {
        return;
    };
    let _ = (
        stanza::iq_type(&el),
        stanza::message_type(&el),
        stanza::presence_type(&el),
    );
    if let Some(from) = el.attr("from") {
        let _ = Jid::parse(from);
    }
    el.set_attr(
        rxml::Namespace::NONE,
        rxml::NcName::try_from("from").unwrap(),
        sender.as_str().to_owned(),
    );
    let to_ok = el.attr("to").is_none_or(|t| Jid::parse(t).is_ok());
    let checked = if matches!(kind, stanza::StanzaKind::Iq) {
        stanza::validate_iq(&el)
    } else {
        Ok(())
    };
    let err = match (to_ok, checked) {
        (false, _) => StanzaError::new(StanzaErrorCondition::JidMalformed),
        (true, Err(e)) => e,
        (true, Ok(())) => StanzaError::new(StanzaErrorCondition::ServiceUnavailable),
    };
    let is_error = el.attr("type") == Some("error");
    if let Some(reply) = error_reply(&el, &err) {
        assert!(!is_error, "an error stanza got an error reply");
        reparse(&reply);
    }
    reparse(&el);
}

fn reparse(el: &starling_proto::Element) {
    let mut out = HEADER.to_vec();
    writer::write_element(el, &mut out);
    let mut f = Framer::new(Limits {
        max_stanza_bytes: out.len() + 1,
        max_buffered_bytes: out.len() + 1,
        max_elements: usize::MAX,
        ..Limits::default()
    });
    f.feed(&out);
    assert!(matches!(f.next_event(), Ok(Some(StreamEvent::Open(_)))));
    assert!(
        matches!(f.next_event(), Ok(Some(StreamEvent::Stanza(_)))),
        "written stanza re-parses: {:?}",
        String::from_utf8_lossy(&out)
    );
}
