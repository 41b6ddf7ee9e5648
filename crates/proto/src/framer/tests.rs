//! Tests of the framer: normal streams at every split point, keepalives, restarts, each
//! rejection with its stream error condition, and the memory bounds under hostile input.

use super::*;
use crate::error::StreamErrorCondition;
use crate::Attr;

const HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
    xmlns:stream='http://etherx.jabber.org/streams' to='example.com' version='1.0' xml:lang='en'>";

/// Feeds `input` in chunks of `chunk` bytes, draining events after each chunk.
fn run_chunked(input: &[u8], chunk: usize) -> (Vec<StreamEvent>, Option<StreamError>) {
    let mut f = Framer::new(Limits::default());
    run_with(&mut f, input, chunk)
}

fn run_with(f: &mut Framer, input: &[u8], chunk: usize) -> (Vec<StreamEvent>, Option<StreamError>) {
    let mut events = Vec::new();
    for part in input.chunks(chunk.max(1)) {
        f.feed(part);
        loop {
            match f.next_event() {
                Ok(Some(ev)) => events.push(ev),
                Ok(None) => break,
                Err(e) => return (events, Some(e)),
            }
        }
    }
    (events, None)
}

fn first_error(input: &[u8]) -> StreamError {
    let (events, err) = run_chunked(input, input.len());
    err.unwrap_or_else(|| {
        panic!(
            "no error for {:?}; events {events:?}",
            String::from_utf8_lossy(input)
        )
    })
}

fn condition_of(input: &str) -> StreamErrorCondition {
    first_error(input.as_bytes()).condition
}

fn in_stream(body: &str) -> String {
    format!("{HEADER}{body}")
}

fn c2s_session() -> String {
    in_stream(concat!(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGp1bGlldAByMG0zMG15cjBtMzA=</auth>",
        " \n\t ",
        "<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>balcony</resource></bind></iq>",
        "<presence/>",
        "<message to='romeo@example.net' type='chat' id='m1' xml:lang='en'>",
        "<body>Wherefore art thou, Romeo? &lt;3 &#x1F339; &amp; caf\u{e9}</body>",
        "<active xmlns='http://jabber.org/protocol/chatstates'/>",
        "<x xmlns:a='urn:a' a:flag='1'><![CDATA[raw <text>]]></x>",
        "</message>",
        "\n",
        "</stream:stream>",
    ))
}

fn stanza_names(events: &[StreamEvent]) -> Vec<String> {
    events
        .iter()
        .map(|e| match e {
            StreamEvent::Open(_) => "open".to_owned(),
            StreamEvent::Stanza(el) => format!("{}|{}", el.ns(), el.name()),
            StreamEvent::Close => "close".to_owned(),
        })
        .collect()
}

#[test]
fn normal_c2s_stream() {
    let input = c2s_session();
    let (events, err) = run_chunked(input.as_bytes(), input.len());
    assert_eq!(err, None);
    assert_eq!(
        stanza_names(&events),
        [
            "open",
            "urn:ietf:params:xml:ns:xmpp-sasl|auth",
            "jabber:client|iq",
            "jabber:client|presence",
            "jabber:client|message",
            "close",
        ]
    );
    let StreamEvent::Open(h) = &events[0] else {
        unreachable!()
    };
    assert_eq!(h.to.as_deref(), Some("example.com"));
    assert_eq!(h.from, None);
    assert_eq!(h.version.as_deref(), Some("1.0"));
    assert_eq!(h.lang.as_deref(), Some("en"));
    assert_eq!(h.default_ns.as_deref(), Some(ns::CLIENT));
    let StreamEvent::Stanza(msg) = &events[4] else {
        unreachable!()
    };
    assert_eq!(msg.attribute("to"), Some("romeo@example.net"));
    assert_eq!(msg.attr_ns(ns::XML, "lang"), Some("en"));
    let body = msg.get_child("body", ns::CLIENT).unwrap();
    assert_eq!(
        body.text(),
        "Wherefore art thou, Romeo? <3 \u{1F339} & caf\u{e9}"
    );
    assert!(msg.has_child("active", "http://jabber.org/protocol/chatstates"));
    let x = msg.get_child("x", ns::CLIENT).unwrap();
    assert_eq!(x.attr_ns("urn:a", "flag"), Some("1"));
    assert_eq!(x.text(), "raw <text>");
    let StreamEvent::Stanza(iq) = &events[2] else {
        unreachable!()
    };
    let bind = iq.get_child("bind", ns::BIND).unwrap();
    assert_eq!(
        bind.get_child("resource", ns::BIND).unwrap().text(),
        "balcony"
    );
}

#[test]
fn split_at_every_byte_boundary() {
    let input = c2s_session();
    let bytes = input.as_bytes();
    let (whole, err) = run_chunked(bytes, bytes.len());
    assert_eq!(err, None);
    for i in 1..bytes.len() {
        let mut f = Framer::new(Limits::default());
        let (mut a, e1) = run_with(&mut f, &bytes[..i], i);
        let (b, e2) = run_with(&mut f, &bytes[i..], bytes.len());
        assert_eq!((e1, e2), (None, None), "split at {i}");
        a.extend(b);
        assert_eq!(a, whole, "split at {i}");
    }
    let (one_by_one, err) = run_chunked(bytes, 1);
    assert_eq!(err, None);
    assert_eq!(one_by_one, whole);
}

#[test]
fn whitespace_keepalives_are_ignored() {
    let input = in_stream(" \n \r\n\t <presence/>  \n  \n<presence type='unavailable'/> ");
    let (events, err) = run_chunked(input.as_bytes(), 3);
    assert_eq!(err, None);
    assert_eq!(
        stanza_names(&events),
        ["open", "jabber:client|presence", "jabber:client|presence"]
    );
    // Keepalives alone produce nothing and leave nothing buffered.
    let mut f = Framer::new(Limits::default());
    f.feed(HEADER.as_bytes());
    assert!(matches!(f.next_event(), Ok(Some(StreamEvent::Open(_)))));
    for _ in 0..1000 {
        f.feed(b" ");
        assert_eq!(f.next_event(), Ok(None));
        assert_eq!(f.buffered(), 0);
    }
}

#[test]
fn text_between_stanzas_is_bad_format() {
    assert_eq!(
        condition_of(&in_stream("hello<presence/>")),
        StreamErrorCondition::BadFormat
    );
}

#[test]
fn stream_features_and_errors_are_in_stream_namespace() {
    let input = in_stream(
        "<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/></stream:features>\
         <stream:error><host-unknown xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>",
    );
    let (events, err) = run_chunked(input.as_bytes(), 7);
    assert_eq!(err, None);
    assert_eq!(
        stanza_names(&events),
        [
            "open",
            "http://etherx.jabber.org/streams|features",
            "http://etherx.jabber.org/streams|error"
        ]
    );
    let StreamEvent::Stanza(e) = &events[2] else {
        unreachable!()
    };
    assert_eq!(
        StreamError::parse(e).map(|e| e.condition),
        Some(StreamErrorCondition::HostUnknown)
    );
}

#[test]
fn header_without_xml_declaration_and_server_namespace() {
    let input = "<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' \
        from='a.example' to='b.example' id='abc' version='1.0'><message from='x@a.example' to='y@b.example'/>";
    let (events, err) = run_chunked(input.as_bytes(), 5);
    assert_eq!(err, None);
    assert_eq!(stanza_names(&events), ["open", "jabber:server|message"]);
    let StreamEvent::Open(h) = &events[0] else {
        unreachable!()
    };
    assert_eq!(h.id.as_deref(), Some("abc"));
    assert_eq!(h.from.as_deref(), Some("a.example"));
}

#[test]
fn other_stream_prefix_is_accepted() {
    // RFC 6120 §4.8.5 lets a receiver insist on 'stream'; we accept any bound prefix.
    let input = "<s:stream xmlns='jabber:client' xmlns:s='http://etherx.jabber.org/streams'>\
        <s:features/><presence/></s:stream>";
    let (events, err) = run_chunked(input.as_bytes(), input.len());
    assert_eq!(err, None);
    assert_eq!(
        stanza_names(&events),
        [
            "open",
            "http://etherx.jabber.org/streams|features",
            "jabber:client|presence",
            "close"
        ]
    );
}

#[test]
fn utf8_bom_is_skipped() {
    let input = format!("\u{FEFF}{HEADER}<presence/>");
    let (events, err) = run_chunked(input.as_bytes(), input.len());
    assert_eq!(err, None);
    assert_eq!(events.len(), 2);
}

#[test]
fn text_before_the_root_fails_at_once() {
    // Without a '<' the parser would wait for more input until the handshake timeout.
    for input in ["GET / HTTP/1.1\r\n\r\n", "hello", "  \r\n x"] {
        let mut f = Framer::new(Limits::default());
        f.feed(input.as_bytes());
        let err = f.next_event().unwrap_err();
        assert_eq!(
            err.condition,
            StreamErrorCondition::NotWellFormed,
            "{input:?}"
        );
    }
    // Whitespace alone, or the first byte of a BOM, is not a verdict yet.
    for input in [&b" \r\n"[..], b"\xEF"] {
        let mut f = Framer::new(Limits::default());
        f.feed(input);
        assert_eq!(f.next_event(), Ok(None));
    }
}

#[test]
fn stream_restart_via_reset() {
    let mut f = Framer::new(Limits::default());
    let first = in_stream("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
    let (events, err) = run_with(&mut f, first.as_bytes(), first.len());
    assert_eq!(err, None);
    assert_eq!(events.len(), 2);
    // Bytes that arrived before the restart belong to the old stream and are dropped.
    f.feed(b"<presence/>");
    f.reset();
    assert_eq!(f.buffered(), 0);
    let second = in_stream("<iq type='get' id='1'><ping xmlns='urn:xmpp:ping'/></iq>");
    let (events, err) = run_with(&mut f, second.as_bytes(), 4);
    assert_eq!(err, None);
    assert_eq!(stanza_names(&events), ["open", "jabber:client|iq"]);
    // A restart also clears a failed state.
    f.feed(b"<!-- x -->");
    assert!(f.next_event().is_err());
    f.reset();
    f.feed(HEADER.as_bytes());
    assert!(matches!(f.next_event(), Ok(Some(StreamEvent::Open(_)))));
}

#[test]
fn close_ends_the_stream() {
    let mut f = Framer::new(Limits::default());
    let input = in_stream("</stream:stream>");
    let (events, err) = run_with(&mut f, input.as_bytes(), input.len());
    assert_eq!(err, None);
    assert_eq!(events.last(), Some(&StreamEvent::Close));
    f.feed(b"<presence/>");
    assert_eq!(f.next_event(), Ok(None));
    assert_eq!(f.buffered(), 0);
}

#[test]
fn errors_are_sticky() {
    let mut f = Framer::new(Limits::default());
    f.feed(in_stream("<a><b></a>").as_bytes());
    assert!(matches!(f.next_event(), Ok(Some(StreamEvent::Open(_)))));
    let e1 = f.next_event().unwrap_err();
    assert_eq!(e1.condition, StreamErrorCondition::NotWellFormed);
    f.feed(b"<presence/>");
    assert_eq!(f.next_event(), Err(e1));
    assert_eq!(f.buffered(), 0);
}

// ----- namespace rules -----

#[test]
fn root_must_be_in_stream_namespace() {
    assert_eq!(
        condition_of("<stream:stream xmlns='jabber:client' xmlns:stream='urn:wrong'>"),
        StreamErrorCondition::InvalidNamespace
    );
    assert_eq!(
        condition_of("<stream xmlns='jabber:client'>"),
        StreamErrorCondition::InvalidNamespace
    );
    assert_eq!(
        condition_of("<stream:stream xmlns='http://etherx.jabber.org/streams' xmlns:stream='http://etherx.jabber.org/streams'>"),
        StreamErrorCondition::InvalidNamespace
    );
}

#[test]
fn bad_namespace_prefixes() {
    // Undeclared prefix on the root.
    assert_eq!(
        condition_of("<stream:stream xmlns='jabber:client'>"),
        StreamErrorCondition::BadNamespacePrefix
    );
    // Stream namespace as the default namespace: the root lacks its prefix.
    assert_eq!(
        condition_of("<stream xmlns='http://etherx.jabber.org/streams'>"),
        StreamErrorCondition::BadNamespacePrefix
    );
    // Undeclared prefix on a stanza, a child, an attribute.
    for body in [
        "<foo:message/>",
        "<message><x:body/></message>",
        "<message y:a='1'/>",
    ] {
        assert_eq!(
            condition_of(&in_stream(body)),
            StreamErrorCondition::BadNamespacePrefix,
            "{body}"
        );
    }
    // Redeclaring xml or binding xmlns.
    assert_eq!(
        condition_of(&in_stream("<message xmlns:xml='urn:not-xml'/>")),
        StreamErrorCondition::BadNamespacePrefix
    );
    // A prefix declared by a finished stanza is not in scope for the next one.
    assert_eq!(
        condition_of(&in_stream(
            "<message xmlns:p='urn:p'><p:x/></message><message><p:x/></message>"
        )),
        StreamErrorCondition::BadNamespacePrefix
    );
}

#[test]
fn duplicate_attributes_are_rejected() {
    assert_eq!(
        condition_of(&in_stream("<message to='a' to='b'/>")),
        StreamErrorCondition::NotWellFormed
    );
    // The same (namespace, name) through two prefixes: rxml's RawParser cannot see this.
    assert_eq!(
        condition_of(&in_stream(
            "<message xmlns:a='urn:z' xmlns:b='urn:z' a:x='1' b:x='2'/>"
        )),
        StreamErrorCondition::NotWellFormed
    );
}

#[test]
fn default_namespace_can_be_undeclared_inside_a_stanza() {
    let input = in_stream("<message><x xmlns=''><y/></x></message>");
    let (events, err) = run_chunked(input.as_bytes(), input.len());
    assert_eq!(err, None);
    let StreamEvent::Stanza(m) = &events[1] else {
        unreachable!()
    };
    let x = m.get_child("x", "").unwrap();
    assert!(x.has_child("y", ""));
}

// ----- restricted XML (RFC 6120 §11.1) -----

#[test]
fn doctype_and_dtd_are_restricted() {
    assert_eq!(
        condition_of("<?xml version='1.0'?><!DOCTYPE stream [<!ENTITY a 'b'>]><stream:stream>"),
        StreamErrorCondition::RestrictedXml
    );
    assert_eq!(
        condition_of("<!DOCTYPE stream>"),
        StreamErrorCondition::RestrictedXml
    );
    assert_eq!(
        condition_of(&in_stream("<!DOCTYPE x SYSTEM 'file:///etc/passwd'>")),
        StreamErrorCondition::RestrictedXml
    );
    assert_eq!(
        condition_of(&in_stream("<message><!ENTITY x 'y'></message>")),
        StreamErrorCondition::RestrictedXml
    );
}

#[test]
fn billion_laughs_is_restricted_without_expansion() {
    let mut doc = String::from("<?xml version='1.0'?><!DOCTYPE lolz [<!ENTITY lol \"lol\">");
    for i in 1..10 {
        let prev = if i == 1 {
            "lol".to_owned()
        } else {
            format!("lol{}", i - 1)
        };
        doc.push_str(&format!(
            "<!ENTITY lol{i} \"{}\">",
            format!("&{prev};").repeat(10)
        ));
    }
    doc.push_str("]><stream:stream xmlns:stream='http://etherx.jabber.org/streams'><message>&lol9;</message>");
    let e = first_error(doc.as_bytes());
    assert_eq!(e.condition, StreamErrorCondition::RestrictedXml);
    // Inside a stream, the entity reference alone is refused too.
    assert_eq!(
        condition_of(&in_stream("<message><body>&lol9;</body></message>")),
        StreamErrorCondition::RestrictedXml
    );
}

#[test]
fn only_predefined_entities_and_char_refs() {
    let ok = in_stream("<message><body>&lt;&gt;&amp;&apos;&quot;&#65;&#x42;</body></message>");
    let (events, err) = run_chunked(ok.as_bytes(), ok.len());
    assert_eq!(err, None);
    let StreamEvent::Stanza(m) = &events[1] else {
        unreachable!()
    };
    assert_eq!(m.get_child("body", ns::CLIENT).unwrap().text(), "<>&'\"AB");
    for bad in ["&nbsp;", "&copy;", "&foo;"] {
        assert_eq!(
            condition_of(&in_stream(&format!(
                "<message><body>{bad}</body></message>"
            ))),
            StreamErrorCondition::RestrictedXml,
            "{bad}"
        );
    }
    // A character reference to a character XML forbids is not well-formed.
    assert_eq!(
        condition_of(&in_stream("<message><body>&#0;</body></message>")),
        StreamErrorCondition::NotWellFormed
    );
}

#[test]
fn comments_are_restricted() {
    assert_eq!(
        condition_of(&in_stream("<!-- hi --><presence/>")),
        StreamErrorCondition::RestrictedXml
    );
    assert_eq!(
        condition_of(&in_stream("<presence><!-- hi --></presence>")),
        StreamErrorCondition::RestrictedXml
    );
    assert_eq!(
        condition_of("<!-- hi -->"),
        StreamErrorCondition::RestrictedXml
    );
}

#[test]
fn processing_instructions_are_restricted() {
    assert_eq!(
        condition_of(&in_stream("<?foo bar?><presence/>")),
        StreamErrorCondition::RestrictedXml
    );
    assert_eq!(
        condition_of(&in_stream("<presence><?foo?></presence>")),
        StreamErrorCondition::RestrictedXml
    );
    // A second XML declaration inside the stream is a processing instruction.
    assert_eq!(
        condition_of(&in_stream("<?xml version='1.0'?>")),
        StreamErrorCondition::RestrictedXml
    );
}

#[test]
fn non_utf8_encodings_are_unsupported() {
    assert_eq!(
        condition_of("<?xml version='1.0' encoding='ISO-8859-1'?><stream:stream>"),
        StreamErrorCondition::UnsupportedEncoding
    );
    assert_eq!(
        first_error(&[0xFF, 0xFE, b'<', 0]).condition,
        StreamErrorCondition::UnsupportedEncoding
    );
    let ok = format!("<?xml version='1.0' encoding='UTF-8'?>{}", &HEADER[21..]);
    let (events, err) = run_chunked(ok.as_bytes(), 9);
    assert_eq!(err, None);
    assert_eq!(events.len(), 1);
}

#[test]
fn invalid_utf8_is_not_well_formed() {
    for bad in [
        &[0xC3, 0x28][..],
        &[0xFF],
        &[0xE2, 0x82],
        &[0xED, 0xA0, 0x80],
        &[0xC0, 0xAF],
    ] {
        let mut input = in_stream("<message><body>").into_bytes();
        input.extend_from_slice(bad);
        input.extend_from_slice(b"</body></message>");
        assert_eq!(
            first_error(&input).condition,
            StreamErrorCondition::NotWellFormed,
            "{bad:x?}"
        );
    }
    let mut in_attr = in_stream("<message to='").into_bytes();
    in_attr.extend_from_slice(&[0xFE, b'\'', b'/', b'>']);
    assert_eq!(
        first_error(&in_attr).condition,
        StreamErrorCondition::NotWellFormed
    );
}

#[test]
fn illegal_characters_are_not_well_formed() {
    for c in [
        '\u{0}', '\u{1}', '\u{8}', '\u{B}', '\u{C}', '\u{1F}', '\u{FFFE}', '\u{FFFF}',
    ] {
        let input = in_stream(&format!("<message><body>a{c}b</body></message>"));
        assert_eq!(
            condition_of(&input),
            StreamErrorCondition::NotWellFormed,
            "{c:?}"
        );
        let input = in_stream(&format!("<message id='a{c}b'/>"));
        assert_eq!(
            condition_of(&input),
            StreamErrorCondition::NotWellFormed,
            "{c:?} in attr"
        );
    }
}

#[test]
fn malformed_syntax_is_not_well_formed() {
    for body in [
        "<message></presence>",
        "<message><body></message>",
        "<message to=a/>",
        "<1message/>",
        "<message/ >",
        "</message>",
        "<message <body/>>",
        "<message to='a'to='b'/>",
    ] {
        assert_eq!(
            condition_of(&in_stream(body)),
            StreamErrorCondition::NotWellFormed,
            "{body}"
        );
    }
    // A close tag that does not match the root.
    assert_eq!(
        condition_of(&in_stream("</stream:foo>")),
        StreamErrorCondition::NotWellFormed
    );
}

// ----- limits and memory bounds -----

/// Feeds `total` bytes of `filler` in 4 KiB chunks after `prefix`, stopping at the first error.
/// Returns the error and how many filler bytes had been fed when it came.
fn feed_until_error(
    f: &mut Framer,
    prefix: &str,
    filler: &[u8],
    total: usize,
) -> (StreamError, usize) {
    f.feed(prefix.as_bytes());
    let mut fed = 0;
    loop {
        loop {
            match f.next_event() {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => return (e, fed),
            }
        }
        assert!(fed < total, "no error after {total} bytes");
        let chunk: Vec<u8> = filler.iter().copied().cycle().take(4096).collect();
        f.feed(&chunk);
        fed += chunk.len();
        assert!(f.buffered() <= 4096);
    }
}

#[test]
fn ten_megabyte_stanza_fails_at_the_limit() {
    let mut f = Framer::new(Limits::default());
    let (e, fed) = feed_until_error(
        &mut f,
        &in_stream("<message><body>"),
        b"0123456789abcdef",
        10 << 20,
    );
    assert_eq!(e.condition, StreamErrorCondition::PolicyViolation);
    assert!(e.text.as_deref().unwrap().contains("stanza"));
    assert!(fed <= 262_144 + 2 * 4096, "failed only after {fed} bytes");
    assert!(fed >= 262_144 - 4096, "failed too early, after {fed} bytes");
}

#[test]
fn oversized_element_head_fails_at_the_limit() {
    // Whitespace inside a tag makes no parser event: counted by offsets all the same.
    let mut f = Framer::new(Limits::default());
    let (e, fed) = feed_until_error(&mut f, &in_stream("<message "), b" ", 10 << 20);
    assert_eq!(e.condition, StreamErrorCondition::PolicyViolation);
    assert!(fed <= 262_144 + 2 * 4096);
}

#[test]
fn many_small_children_hit_the_size_limit() {
    let mut f = Framer::new(Limits {
        max_elements: usize::MAX,
        ..Limits::default()
    });
    let (e, fed) = feed_until_error(&mut f, &in_stream("<message>"), b"<a/>", 10 << 20);
    assert_eq!(e.condition, StreamErrorCondition::PolicyViolation);
    assert!(e.text.as_deref().unwrap().contains("larger than"));
    assert!(fed <= 262_144 + 2 * 4096);
}

#[test]
fn many_small_children_hit_the_element_limit_long_before_the_size_limit() {
    // 256 KiB of <a/> would be 65 536 tree nodes; the c2s default cap stops at 4096.
    let mut f = Framer::new(Limits {
        max_elements: 4096,
        ..Limits::default()
    });
    let (e, fed) = feed_until_error(&mut f, &in_stream("<message>"), b"<a/>", 10 << 20);
    assert_eq!(e.condition, StreamErrorCondition::PolicyViolation);
    assert!(
        e.text.as_deref().unwrap().contains("4096 elements"),
        "{e:?}"
    );
    assert!(fed <= 4096 * 4 + 2 * 4096, "failed only after {fed} bytes");
    assert!(fed >= 4095 * 4, "failed too early, after {fed} bytes");
}

#[test]
fn the_default_element_limit_is_8192() {
    let mut f = Framer::new(Limits::default());
    let (e, _) = feed_until_error(&mut f, &in_stream("<message>"), b"<a/>", 10 << 20);
    assert!(
        e.text.as_deref().unwrap().contains("8192 elements"),
        "{e:?}"
    );
}

#[test]
fn element_limit_counts_the_stanza_and_every_descendant_per_stanza() {
    let limits = Limits {
        max_elements: 10,
        ..Limits::default()
    };
    // The stanza plus nine children: exactly the limit, and nested ones count too.
    let ten = format!("<message>{}</message>", "<a/>".repeat(9));
    let nested = format!("<message><b>{}</b></message>", "<a/>".repeat(8));
    let eleven = format!("<message>{}</message>", "<a/>".repeat(10));
    // The count starts again with each stanza: a thousand stanzas of ten are fine.
    let mut f = Framer::new(limits);
    let (events, err) = run_with(&mut f, in_stream(&ten.repeat(1000)).as_bytes(), 4096);
    assert_eq!((events.len(), err), (1001, None));
    let mut f = Framer::new(limits);
    let (events, err) = run_with(&mut f, in_stream(&nested).as_bytes(), 7);
    assert_eq!((events.len(), err), (2, None));
    let mut f = Framer::new(limits);
    let (events, err) = run_with(&mut f, in_stream(&format!("{ten}{eleven}")).as_bytes(), 7);
    assert_eq!(events.len(), 2, "the stream header and the first stanza");
    assert_eq!(
        err.map(|e| e.condition),
        Some(StreamErrorCondition::PolicyViolation)
    );
}

#[test]
fn long_stanza_exactly_under_the_limit_passes() {
    let limits = Limits {
        max_stanza_bytes: 1000,
        ..Limits::default()
    };
    let make = |n: usize| {
        let body = "x".repeat(n);
        format!("<message><body>{body}</body></message>")
    };
    let fits = make(1000 - "<message><body></body></message>".len());
    assert_eq!(fits.len(), 1000);
    let mut f = Framer::new(limits);
    let (events, err) = run_with(&mut f, in_stream(&fits).as_bytes(), 100);
    assert_eq!(err, None);
    assert_eq!(events.len(), 2);
    let mut f = Framer::new(limits);
    let (_, err) = run_with(&mut f, in_stream(&make(1000)).as_bytes(), 100);
    assert_eq!(
        err.map(|e| e.condition),
        Some(StreamErrorCondition::PolicyViolation)
    );
}

#[test]
fn the_limit_is_per_stanza_not_per_stream() {
    let limits = Limits {
        max_stanza_bytes: 200,
        ..Limits::default()
    };
    let mut f = Framer::new(limits);
    let stanza = "<message to='a@b'><body>hello</body></message>";
    let input = in_stream(&stanza.repeat(1000));
    let (events, err) = run_with(&mut f, input.as_bytes(), 4096);
    assert_eq!(err, None);
    assert_eq!(events.len(), 1001);
}

#[test]
fn hundred_thousand_nested_elements_fail_at_max_depth() {
    let mut f = Framer::new(Limits::default());
    let (e, fed) = feed_until_error(&mut f, &in_stream(""), b"<a>", 300_000);
    assert_eq!(e.condition, StreamErrorCondition::PolicyViolation);
    assert!(e.text.as_deref().unwrap().contains("deeper"));
    assert!(fed <= 4096, "failed only after {fed} bytes");
    // Depth 64 is allowed, 65 is not.
    let ok = format!("{}{}", "<a>".repeat(64), "</a>".repeat(64));
    let (events, err) = run_chunked(in_stream(&ok).as_bytes(), 4096);
    assert_eq!((events.len(), err), (2, None));
    let deep = format!("{}{}", "<a>".repeat(65), "</a>".repeat(65));
    assert_eq!(
        condition_of(&in_stream(&deep)),
        StreamErrorCondition::PolicyViolation
    );
}

#[test]
fn attribute_count_limit() {
    let attrs = |n: usize| (0..n).map(|i| format!(" a{i}='v'")).collect::<String>();
    let ok = in_stream(&format!("<message{}/>", attrs(64)));
    let (events, err) = run_chunked(ok.as_bytes(), ok.len());
    assert_eq!((events.len(), err), (2, None));
    let e = first_error(in_stream(&format!("<message{}/>", attrs(65))).as_bytes());
    assert_eq!(e.condition, StreamErrorCondition::PolicyViolation);
    assert!(e.text.as_deref().unwrap().contains("attributes"));
    // Namespace declarations count too.
    let decls = (0..65)
        .map(|i| format!(" xmlns:p{i}='urn:{i}'"))
        .collect::<String>();
    assert_eq!(
        condition_of(&in_stream(&format!("<message{decls}/>"))),
        StreamErrorCondition::PolicyViolation
    );
}

#[test]
fn header_is_bounded_too() {
    let mut f = Framer::new(Limits::default());
    let (e, fed) = feed_until_error(
        &mut f,
        "<stream:stream xmlns:stream='http://etherx.jabber.org/streams'",
        b" a='b' ",
        10 << 20,
    );
    assert_eq!(e.condition, StreamErrorCondition::PolicyViolation);
    assert!(fed <= 4096 * 2);
}

#[test]
fn feeding_without_draining_is_bounded() {
    let limits = Limits::default();
    let mut f = Framer::new(limits);
    f.feed(HEADER.as_bytes());
    for _ in 0..200 {
        f.feed(&[b' '; 4096]);
        assert!(f.buffered() <= limits.max_buffered_bytes);
    }
    assert_eq!(f.buffered(), 0, "overflowing input is dropped");
    let e = f.next_event().unwrap_err();
    assert_eq!(e.condition, StreamErrorCondition::PolicyViolation);
    assert!(e.text.as_deref().unwrap().contains("buffered"));
}

#[test]
fn long_tokens_are_refused() {
    // rxml caps a name or attribute value at 8 KiB: a policy matter, not malformed XML.
    let e = first_error(in_stream(&format!("<message id='{}'/>", "x".repeat(9000))).as_bytes());
    assert_eq!(e.condition, StreamErrorCondition::PolicyViolation);
}

#[test]
fn size_of_hot_types() {
    assert!(
        std::mem::size_of::<StreamEvent>() <= 160,
        "{}",
        std::mem::size_of::<StreamEvent>()
    );
    assert!(
        std::mem::size_of::<Framer>() <= 1024,
        "{}",
        std::mem::size_of::<Framer>()
    );
}

/// `release_temporaries` between any two chunks (as an idle stream calls it) changes no event:
/// names, references, long text and attribute values split at every point.
#[test]
fn releasing_scratch_memory_between_chunks_changes_nothing() {
    let text = "wherefore art thou &amp; &lt;Romeo&gt; &#x263A; ".repeat(40);
    let input = format!(
        "{HEADER}<message to='juliet@capulet.lit/balcony' id='m&apos;1' xml:lang='en'>\
         <body>{text}</body><thread parent='t&quot;0'>t1</thread></message>\
         <iq type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>\
         <presence><status>{text}</status></presence></stream:stream>"
    );
    let input = input.as_bytes();
    let (expected, err) = run_chunked(input, input.len());
    assert_eq!(err, None);
    assert_eq!(expected.len(), 5, "open, three stanzas, close");
    for chunk in 1..=64 {
        let mut f = Framer::new(Limits::default());
        let mut events = Vec::new();
        for part in input.chunks(chunk) {
            f.feed(part);
            while let Some(ev) = f.next_event().unwrap() {
                events.push(ev);
            }
            f.release_temporaries();
        }
        assert_eq!(events, expected, "chunk size {chunk}");
    }
}

// The fast path (framer/fast.rs) against rxml alone.

/// Feeds `input` in `chunk`-byte pieces to a framer with the fast path on or off; the events
/// of each piece, and the error that ended the stream.
fn events_per_chunk(
    limits: Limits,
    fast: bool,
    input: &[u8],
    chunk: usize,
) -> (Vec<Vec<StreamEvent>>, Option<StreamError>) {
    let mut f = Framer::new(limits);
    f.set_fast_path(fast);
    let mut out = Vec::new();
    for part in input.chunks(chunk.max(1)) {
        f.feed(part);
        let mut events = Vec::new();
        loop {
            match f.next_event() {
                Ok(Some(ev)) => events.push(ev),
                Ok(None) => break,
                Err(e) => {
                    out.push(events);
                    return (out, Some(e));
                }
            }
        }
        out.push(events);
    }
    (out, None)
}

/// Pieces of stanzas, well-formed or not, that reach every branch of the fast path and
/// every reason it hands over to rxml.
const PIECES: &[&[u8]] = &[
    b"<message to='a@b/c' type='chat' id='m1'>",
    b"<message xmlns='jabber:client' to=\"a@b\">",
    b"</message>",
    b"<body>",
    b"</body>",
    b"<iq type='get' id='1'><query xmlns='jabber:iq:roster'/></iq>",
    b"<presence/>",
    b"<a/>",
    b"<a >",
    b"</a>",
    b"</a >",
    b"<b xmlns='urn:x'>",
    b"</b>",
    b"<p:c xmlns:p='urn:p'>",
    b"<p:c>",
    b"</p:c>",
    b"<x a='1' a='2'/>",
    b"<x p:a='1'/>",
    b"<x xmlns:p='urn:p' p:a='1' a='2'/>",
    b"<x xmlns:p='urn:p' xmlns:q='urn:p' p:a='1' q:a='2'/>",
    b"<x xmlns=''/>",
    b"<x xmlns:p=''/>",
    b"<x xmlns:xml='urn:no'/>",
    b"<x xmlns:xml='http://www.w3.org/XML/1998/namespace'/>",
    b"<x xmlns:xmlns='urn:no'/>",
    b"<x xmlns='http://www.w3.org/XML/1998/namespace'/>",
    b"<x xmlns:p='http://www.w3.org/XML/1998/namespace'/>",
    b"<x xml:lang='en'/>",
    b"<xmlns:x/>",
    b"<a b = 'v' />",
    b"<a\tb='v'\n/>",
    b"<a b='v'c='w'/>",
    b"<a b=v/>",
    b"<a b='<'/>",
    b"<a b='>'/>",
    b"<a b='x\ty'/>",
    b"<a b='x\ny'/>",
    b"<a b='x\ry'/>",
    b"<a b=\"it's\"/>",
    b"<a b='&quot;&apos;&amp;&lt;&gt;'/>",
    b"<a b='&#9;&#10;&#13;&#32;'/>",
    b"<a b='&#x263A;'/>",
    b"<a b='caf\xc3\xa9'/>",
    b"<\xc3\xa9/>",
    b"<a\xc3\xa9/>",
    b"<a:b:c/>",
    b"<:a/>",
    b"<a:/>",
    b"<a:1/>",
    b"<1a/>",
    b"<-a/>",
    b"<_a.b-c/>",
    b"text",
    b" ",
    b"\n",
    b"\t",
    b"\r\n",
    b"\r",
    b"&lt;",
    b"&gt;",
    b"&amp;",
    b"&apos;",
    b"&quot;",
    b"&#65;",
    b"&#x41;",
    b"&#X41;",
    b"&#x1F339;",
    b"&#0;",
    b"&#9;",
    b"&#xD;",
    b"&#xFFFE;",
    b"&#x110000;",
    b"&#99999999999;",
    b"&#;",
    b"&#x;",
    b"&nbsp;",
    b"&",
    b"&lt",
    b"]]>",
    b"]]",
    b"]",
    b">",
    b"<![CDATA[x<y]]>",
    b"<!-- c -->",
    b"<?pi x?>",
    b"<!DOCTYPE x>",
    b"caf\xc3\xa9",
    b"\xef\xbf\xbe",
    b"\xef\xbf\xbd",
    b"\x01",
    b"\x7f",
    b"\xc2\x85",
    b"\xff",
    b"\xc3",
    b"</stream:stream>",
    b"</wrong>",
    b"<stream:features/>",
];

/// Element names, attributes and character data for [`element`]: mostly plain, some that
/// only rxml may read (and must then accept or refuse).
const NAMES: &[&str] = &["a", "body", "p:c", "message", "x:y", "n-1.b_"];
const ATTRIBUTES: &[&[u8]] = &[
    b" a='1'",
    b" a=\"2\"",
    b" b = 'x' ",
    b" c='&lt;&amp;&#x263A;'",
    b" d='x\ty'",
    b" d='&#9;'",
    b" d='&#x20;'",
    b" d='\xef\xbf\xbe'",
    b" d='\xc3\xa9'",
    b" d='<'",
    b" d='>]]>'",
    b" xmlns='urn:x'",
    b" xmlns=''",
    b" xmlns:p='urn:p'",
    b" xmlns:x='urn:p'",
    b" p:a='1'",
    b" xmlns:p=''",
    b" xmlns:xml='urn:x'",
    b" xmlns:xmlns='urn:x'",
    b" xml:lang='en'",
];
const TEXT: &[&[u8]] = &[
    b"text",
    b" ",
    b"\n",
    b"\t",
    b"\r",
    b"]]>",
    b"]]",
    b"]",
    b">",
    b"&lt;&gt;&amp;&apos;&quot;",
    b"&#65;",
    b"&#0;",
    b"&#9;",
    b"&#x1F;",
    b"&#xFFFE;",
    b"&#xD7FF;",
    b"&#xE000;",
    b"&nbsp;",
    b"\xef\xbf\xbe",
    b"\xef\xbf\xbf",
    b"\xef\xbf\xbd",
    b"caf\xc3\xa9",
    b"\xff",
    b"\x01",
    b"\x7f",
    b"<![CDATA[x<y]]>",
    b"<!-- c -->",
    b"<?pi x?>",
];

/// An element with attributes and content drawn from the lists above, nested up to `depth`.
fn element(depth: u32) -> proptest::strategy::BoxedStrategy<Vec<u8>> {
    use proptest::prelude::*;
    let content = if depth == 0 {
        proptest::sample::select(TEXT)
            .prop_map(<[u8]>::to_vec)
            .boxed()
    } else {
        prop_oneof![
            2 => proptest::sample::select(TEXT).prop_map(<[u8]>::to_vec),
            1 => element(depth - 1),
        ]
        .boxed()
    };
    (
        proptest::sample::select(NAMES),
        proptest::collection::vec(proptest::sample::select(ATTRIBUTES), 0..4),
        proptest::option::weighted(0.8, proptest::collection::vec(content, 0..5)),
    )
        .prop_map(|(name, attrs, content)| {
            let mut out = format!("<{name}").into_bytes();
            for a in attrs {
                out.extend_from_slice(a);
            }
            match content {
                None => out.extend_from_slice(b"/>"),
                Some(parts) => {
                    out.push(b'>');
                    for part in parts {
                        out.extend(part);
                    }
                    out.extend_from_slice(format!("</{name}>").as_bytes());
                }
            }
            out
        })
        .boxed()
}

fn piece() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
    use proptest::prelude::*;
    prop_oneof![
        6 => element(3),
        4 => proptest::sample::select(PIECES).prop_map(<[u8]>::to_vec),
        1 => (1usize..40).prop_map(|n| format!("<{}/>", "n".repeat(n * 40)).into_bytes()),
        1 => (1usize..40).prop_map(|n| format!("<a v='{}'/>", "v".repeat(n * 150)).into_bytes()),
        1 => (1usize..100).prop_map(|n| "<d>".repeat(n).into_bytes()),
        1 => proptest::collection::vec(any::<u8>(), 1..4),
    ]
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(3000))]

    /// With the fast path on, every piece of input yields the same events, and the stream
    /// the same error, as with rxml alone: at any chunking and under tight limits.
    #[test]
    fn the_fast_path_changes_no_event_and_no_error(
        pieces in proptest::collection::vec(piece(), 0..20),
        chunk in proptest::prop_oneof![1usize..80, proptest::strategy::Just(100_000)],
        tight in proptest::prelude::any::<bool>(),
        stanza_bytes in 64usize..2048,
    ) {
        let mut input = HEADER.as_bytes().to_vec();
        for p in &pieces {
            input.extend_from_slice(p);
        }
        let limits = if tight {
            Limits {
                max_stanza_bytes: stanza_bytes,
                max_depth: 16,
                max_attributes: 8,
                max_elements: 32,
                max_buffered_bytes: 4096,
            }
        } else {
            Limits::default()
        };
        let fast = events_per_chunk(limits, true, &input, chunk);
        let slow = events_per_chunk(limits, false, &input, chunk);
        proptest::prop_assert_eq!(fast, slow, "input {:?}", String::from_utf8_lossy(&input));
    }
}

/// The stanzas of a normal session go through the fast path; a stanza with CDATA goes to
/// rxml, and the next plain one is fast again.
#[test]
fn plain_stanzas_take_the_fast_path() {
    let mut f = Framer::new(Limits::default());
    f.feed(HEADER.as_bytes());
    f.feed(b"<presence/>");
    assert!(matches!(f.next_event(), Ok(Some(StreamEvent::Open(_)))));
    // The first stanza after the header is rxml's: it was fed with the header.
    assert!(matches!(f.next_event(), Ok(Some(StreamEvent::Stanza(_)))));
    assert_eq!(f.fast_count, 0);
    let stanza = |f: &mut Framer, input: &[u8]| {
        f.feed(input);
        match f.next_event() {
            Ok(Some(StreamEvent::Stanza(el))) => el,
            other => panic!("{other:?}"),
        }
    };
    let msg = stanza(
        &mut f,
        b" <message to='a@b/c' type='chat'><body>x &amp; y &#x263A;</body></message>",
    );
    assert_eq!(f.fast_count, 1, "a plain message is read by the fast path");
    assert_eq!(
        msg.get_child("body", ns::CLIENT).unwrap().text(),
        "x & y \u{263A}"
    );
    stanza(&mut f, b"<message><body><![CDATA[<raw>]]></body></message>");
    assert_eq!(f.fast_count, 1, "CDATA is rxml's");
    stanza(&mut f, b"<iq type='get' id='1'/>");
    assert_eq!(f.fast_count, 2, "after rxml's stanza the fast path is back");
    // Half a stanza is rxml's: it may find an error in it before the rest arrives.
    f.feed(b"<message><body>half");
    assert_eq!(f.next_event(), Ok(None));
    let msg = stanza(&mut f, b" and half</body></message>");
    assert_eq!(f.fast_count, 2);
    assert_eq!(
        msg.get_child("body", ns::CLIENT).unwrap().text(),
        "half and half"
    );
    stanza(&mut f, b"<presence/>");
    assert_eq!(f.fast_count, 3);
}

/// A stanza exactly at, just under and just over the size limit: the fast path accepts what
/// rxml accepts and leaves the rest to it.
#[test]
fn the_fast_path_keeps_the_size_limit_exact() {
    let stanza = b"<message to='a@b'><body>0123456789</body></message>";
    let mut input = HEADER.as_bytes().to_vec();
    for _ in 0..3 {
        input.extend_from_slice(stanza);
    }
    for max in stanza.len() - 3..=stanza.len() + 3 {
        let limits = Limits {
            max_stanza_bytes: max,
            ..Limits::default()
        };
        for chunk in [1, 7, stanza.len(), input.len()] {
            let fast = events_per_chunk(limits, true, &input, chunk);
            let slow = events_per_chunk(limits, false, &input, chunk);
            assert_eq!(fast, slow, "limit {max}, chunk {chunk}");
        }
    }
}

/// A framer between stanzas holds no element stack: a complete stanza gives it up to the
/// thread's spare, and the next stanza (on either path) takes it back. Two streams on one
/// thread share it, and the stanzas they read are whole.
#[test]
fn a_framer_between_stanzas_holds_no_element_stack() {
    crate::spare::take(&SPARE_STACK);
    let open = |f: &mut Framer| {
        f.feed(HEADER.as_bytes());
        assert!(matches!(f.next_event(), Ok(Some(StreamEvent::Open(_)))));
    };
    let stanza = |f: &mut Framer, input: &[u8]| {
        f.feed(input);
        match f.next_event() {
            Ok(Some(StreamEvent::Stanza(el))) => el,
            other => panic!("{other:?}"),
        }
    };
    let (mut a, mut b) = (
        Framer::new(Limits::default()),
        Framer::new(Limits::default()),
    );
    open(&mut a);
    open(&mut b);
    let deep = b"<message><body>x</body><x xmlns='u'><y><z/></y></x></message>";
    let el = stanza(&mut a, deep);
    assert_eq!(a.stack.capacity(), 0, "given up with the stanza");
    assert_eq!(el.get_child("x", "u").unwrap().children().count(), 1);
    let stack = crate::spare::take(&SPARE_STACK);
    let grown = stack.capacity();
    crate::spare::give(&SPARE_STACK, stack);
    assert!(grown >= 4, "the spare holds the grown stack ({grown})");
    // The other stream takes the spare for its stanza (rxml's path: CDATA) and gives it back.
    let el = stanza(&mut b, b"<message><body><![CDATA[<raw>]]></body></message>");
    assert_eq!(el.get_child("body", ns::CLIENT).unwrap().text(), "<raw>");
    assert_eq!(b.stack.capacity(), 0);
    let el = stanza(&mut a, b"<iq type='get' id='1'><q xmlns='v'/></iq>");
    assert_eq!(el.children().count(), 1);
    assert_eq!(a.stack.capacity(), 0);
}
