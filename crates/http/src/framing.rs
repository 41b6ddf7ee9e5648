//! Translation between the HTTP transports' framing and an ordinary XMPP byte stream (no I/O).
//!
//! Both WebSocket (RFC 7395) and BOSH (XEP-0206) carry whole elements, while the c2s code
//! reads and writes an XML stream. This module owns the two directions:
//!
//! - inbound, [`parse_element`] turns one client-supplied text (a WebSocket message, a BOSH
//!   `<body/>`) into parsed elements with the c2s limits, so that what is written into the
//!   stream is always our own re-serialisation ([`starling_proto::writer`]): a client cannot
//!   smuggle `</stream:stream>`, a partial element or a second stream header through;
//!   [`client_header`] writes the stream header an `<open/>` or a BOSH session request stands for;
//! - outbound, [`Outbound`] reads the server's bytes with the proto framer and yields the
//!   stream header, each first-level element and the stream close, restarting itself after SASL
//!   success (RFC 6120 §6.4.6: the server sends a fresh header on the restarted stream).

use minidom::Element;
use starling_proto::error::{StreamError, StreamErrorCondition as SE};
use starling_proto::framer::{Framer, Limits, StreamEvent, StreamHeader};
use starling_proto::ns;

/// RFC 7395 framing namespace (`<open/>`, `<close/>`).
pub const NS_FRAMING: &str = "urn:ietf:params:xml:ns:xmpp-framing";

/// What a wrapped parse starts with: the default namespace `jabber:client` makes a stanza
/// without an explicit `xmlns` a client stanza, as on a TCP stream.
const WRAP_OPEN: &str = "<stream:stream xmlns='jabber:client' \
     xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>";
const WRAP_CLOSE: &str = "</stream:stream>";

/// Parses `text` as a sequence of complete elements (zero or more, whitespace between them
/// allowed), each within `limits`. Anything else — a partial element, text outside elements,
/// a stream close, a processing instruction, a DTD — is a `not-well-formed` stream error.
pub fn parse_elements(text: &str, limits: Limits) -> Result<Vec<Element>, StreamError> {
    let mut framer = Framer::new(Limits {
        max_buffered_bytes: WRAP_OPEN.len() + text.len() + WRAP_CLOSE.len() + 16,
        ..limits
    });
    framer.feed(WRAP_OPEN.as_bytes());
    framer.feed(text.as_bytes());
    let mut out = Vec::new();
    match framer.next_event()? {
        Some(StreamEvent::Open(_)) => {}
        _ => return Err(not_well_formed()),
    }
    // The client's text alone: complete elements come out, and nothing may close the stream.
    loop {
        match framer.next_event()? {
            Some(StreamEvent::Stanza(el)) => out.push(el),
            None => break,
            Some(StreamEvent::Open(_) | StreamEvent::Close) => return Err(not_well_formed()),
        }
    }
    // Our closing tag must close the stream: otherwise the text left an element open.
    framer.feed(WRAP_CLOSE.as_bytes());
    match framer.next_event()? {
        Some(StreamEvent::Close) => {}
        // An element completed only by our closing tag is impossible (it would need the
        // client's own end tag), so anything else means the text was not complete.
        _ => return Err(not_well_formed()),
    }
    Ok(out)
}

/// Parses `text` as exactly one element (RFC 7395 §3.3.3: one stanza per message).
pub fn parse_element(text: &str, limits: Limits) -> Result<Element, StreamError> {
    let mut els = parse_elements(text, limits)?;
    if els.len() != 1 {
        return Err(StreamError::with_text(
            SE::NotWellFormed,
            "a WebSocket message must hold exactly one element",
        ));
    }
    Ok(els.remove(0))
}

fn not_well_formed() -> StreamError {
    StreamError::with_text(SE::NotWellFormed, "not a sequence of complete elements")
}

/// Escapes an attribute value for single quotes.
pub fn escape_attr(value: &str, out: &mut String) {
    for c in value.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\'' => out.push_str("&apos;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
}

fn put_attr(out: &mut String, name: &str, value: Option<&str>) {
    if let Some(v) = value {
        out.push(' ');
        out.push_str(name);
        out.push_str("='");
        escape_attr(v, out);
        out.push('\'');
    }
}

/// The client stream header that a WebSocket `<open/>` or a BOSH session start stands for.
pub fn client_header(to: Option<&str>, version: Option<&str>, lang: Option<&str>) -> String {
    let mut out = String::from(
        "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
         xmlns:stream='http://etherx.jabber.org/streams'",
    );
    put_attr(&mut out, "to", to);
    put_attr(&mut out, "version", version);
    put_attr(&mut out, "xml:lang", lang);
    out.push('>');
    out
}

/// The RFC 7395 `<open/>` for a server stream header.
pub fn ws_open(h: &StreamHeader) -> String {
    let mut out = format!("<open xmlns='{NS_FRAMING}'");
    put_attr(&mut out, "from", h.from.as_deref());
    put_attr(&mut out, "to", h.to.as_deref());
    put_attr(&mut out, "id", h.id.as_deref());
    put_attr(&mut out, "version", h.version.as_deref());
    put_attr(&mut out, "xml:lang", h.lang.as_deref());
    out.push_str("/>");
    out
}

/// The RFC 7395 `<close/>`, optionally sending the client elsewhere (§3.5).
pub fn ws_close(see_other_uri: Option<&str>) -> String {
    let mut out = format!("<close xmlns='{NS_FRAMING}'");
    put_attr(&mut out, "see-other-uri", see_other_uri);
    out.push_str("/>");
    out
}

/// An element as its own text, declaring its namespace (and `stream:` where needed).
pub fn element_text(el: &Element) -> String {
    starling_proto::writer::element_to_string(el)
}

/// Reads the server side of a translated stream.
pub struct Outbound {
    framer: Framer,
}

impl Outbound {
    /// `max_element_bytes`: the largest element the server may send in one piece.
    pub fn new(max_element_bytes: usize) -> Self {
        Outbound {
            framer: Framer::new(Limits {
                max_stanza_bytes: max_element_bytes,
                max_depth: 256,
                max_attributes: 1024,
                max_buffered_bytes: max_element_bytes + 64 * 1024,
                // The server's own output (a large roster, room history): bounded by size.
                max_elements: usize::MAX,
            }),
        }
    }

    /// Adds the server's bytes.
    pub fn feed(&mut self, data: &[u8]) {
        self.framer.feed(data);
    }

    /// The next complete event. A SASL `<success/>` resets the reader for the new stream.
    pub fn next_event(&mut self) -> Result<Option<StreamEvent>, StreamError> {
        let ev = self.framer.next_event()?;
        if let Some(StreamEvent::Stanza(el)) = &ev {
            if el.is("success", ns::SASL) {
                // Nothing else comes from the server until the client's new header.
                self.framer.reset();
            }
        }
        Ok(ev)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits::default()
    }

    #[test]
    fn one_stanza_parses_in_the_client_namespace() {
        let el = parse_element("<message to='a@b'><body>hi</body></message>", limits()).unwrap();
        assert!(el.is("message", ns::CLIENT));
        assert_eq!(el.attr("to"), Some("a@b"));
        let el = parse_element(&format!("<open xmlns='{NS_FRAMING}' to='b'/>"), limits()).unwrap();
        assert!(el.is("open", NS_FRAMING));
    }

    #[test]
    fn hostile_texts_are_refused() {
        for bad in [
            "<message>",
            "<message/><message/>",
            "</stream:stream><message/>",
            "<message/></stream:stream>",
            "text",
            "<?xml version='1.0'?><message/>",
            "<!DOCTYPE x><message/>",
            "<a:message/>",
            "",
        ] {
            assert!(parse_element(bad, limits()).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn bodies_may_carry_several_elements() {
        let els = parse_elements("<message/> <presence/>", limits()).unwrap();
        assert_eq!(els.len(), 2);
        assert!(parse_elements("", limits()).unwrap().is_empty());
    }

    #[test]
    fn size_limit_applies() {
        let small = Limits {
            max_stanza_bytes: 1024,
            ..limits()
        };
        let big = format!("<message><body>{}</body></message>", "x".repeat(4000));
        assert!(parse_element(&big, small).is_err());
    }

    #[test]
    fn outbound_restarts_after_success() {
        let mut o = Outbound::new(65536);
        o.feed(b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' id='x' from='b' version='1.0'>");
        assert!(matches!(
            o.next_event().unwrap(),
            Some(StreamEvent::Open(_))
        ));
        o.feed(b"<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>");
        assert!(matches!(
            o.next_event().unwrap(),
            Some(StreamEvent::Stanza(_))
        ));
        o.feed(b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' id='y' from='b' version='1.0'><stream:features/>");
        match o.next_event().unwrap() {
            Some(StreamEvent::Open(h)) => {
                assert_eq!(h.id.as_deref(), Some("y"));
                assert_eq!(
                    ws_open(&h),
                    format!("<open xmlns='{NS_FRAMING}' from='b' id='y' version='1.0'/>")
                );
            }
            other => panic!("{other:?}"),
        }
        match o.next_event().unwrap() {
            Some(StreamEvent::Stanza(el)) => assert_eq!(
                element_text(&el),
                "<stream:features xmlns:stream='http://etherx.jabber.org/streams'/>"
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn header_attributes_are_escaped() {
        assert_eq!(
            client_header(Some("a'b"), Some("1.0"), None),
            "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
             xmlns:stream='http://etherx.jabber.org/streams' to='a&apos;b' version='1.0'>"
        );
    }
}
