//! Serialising elements and stream headers to bytes (RFC 6120 §4.7, §11; XML 1.0 §2.4, §3.3).
//!
//! The writer owns escaping and namespace declarations: element names are written unprefixed
//! with `xmlns='…'` where their namespace differs from the parent's (the top element always
//! declares its own), except elements of the stream namespace, which are written with the
//! customary `stream:` prefix. Attribute namespaces get `xml:` or a generated `nsN:` prefix.
//! Characters XML 1.0 forbids are replaced by U+FFFD, so the output is always well-formed.
//! It never fails and performs no I/O: bytes are appended to a caller's `Vec<u8>`.

use minidom::{Element, Node};

use crate::ns;

/// The end of a stream (RFC 6120 §4.4).
pub const STREAM_CLOSE: &str = "</stream:stream>";

/// Appends `el` as XML to `out`.
pub fn write_element(el: &Element, out: &mut Vec<u8>) {
    let mut scope = Scope {
        prefixes: Vec::new(),
        next_prefix: 0,
    };
    write_inner(el, None, false, &mut scope, out);
}

/// An element as a `String` (tests, logs).
pub fn element_to_string(el: &Element) -> String {
    let mut out = Vec::new();
    write_element(el, &mut out);
    String::from_utf8(out).expect("the writer emits UTF-8")
}

/// The opening of a stream we send (RFC 6120 §4.7): XML declaration, `<stream:stream>` with
/// the content namespace `ns` as default, `version='1.0'`, and the optional attributes.
pub fn stream_header(
    ns: &str,
    from: Option<&str>,
    to: Option<&str>,
    id: &str,
    lang: Option<&str>,
) -> String {
    let mut out = Vec::with_capacity(192);
    out.extend_from_slice(b"<?xml version='1.0'?><stream:stream xmlns='");
    escape(ns, true, &mut out);
    out.extend_from_slice(b"' xmlns:stream='");
    out.extend_from_slice(ns::STREAM.as_bytes());
    out.extend_from_slice(b"'");
    attr(&mut out, "id", id);
    if let Some(from) = from {
        attr(&mut out, "from", from);
    }
    if let Some(to) = to {
        attr(&mut out, "to", to);
    }
    out.extend_from_slice(b" version='1.0'");
    if let Some(lang) = lang {
        attr(&mut out, "xml:lang", lang);
    }
    out.push(b'>');
    String::from_utf8(out).expect("the writer emits UTF-8")
}

/// Prefixes declared by the elements being written, innermost last.
struct Scope {
    prefixes: Vec<(String, String)>,
    next_prefix: usize,
}

impl Scope {
    fn prefix_for(&self, namespace: &str) -> Option<&str> {
        self.prefixes
            .iter()
            .rev()
            .find(|(_, uri)| uri == namespace)
            .map(|(p, _)| p.as_str())
    }
}

/// `parent_ns`: the default namespace in scope, `None` when unknown (top element).
/// `stream_bound`: whether `xmlns:stream` is already declared by an ancestor we wrote.
fn write_inner(
    el: &Element,
    parent_ns: Option<&str>,
    stream_bound: bool,
    scope: &mut Scope,
    out: &mut Vec<u8>,
) {
    let el_ns = el.ns();
    let is_stream = el_ns == ns::STREAM;
    let scope_mark = scope.prefixes.len();
    out.push(b'<');
    if is_stream {
        out.extend_from_slice(b"stream:");
    }
    out.extend_from_slice(el.name().as_bytes());
    let mut child_default = parent_ns;
    if is_stream {
        if !stream_bound {
            attr(out, "xmlns:stream", ns::STREAM);
        }
    } else if parent_ns != Some(el_ns.as_str()) {
        // Also for the empty namespace at the top: inside a stream, `xmlns=''` is what keeps
        // the element out of the stream's content namespace.
        attr(out, "xmlns", &el_ns);
        child_default = Some(el_ns.as_str());
    }
    for ((attr_ns, name), value) in el.attrs().iter() {
        out.push(b' ');
        if attr_ns.is_some() {
            let uri = attr_ns.as_str();
            if uri == ns::XML {
                out.extend_from_slice(b"xml:");
            } else {
                let prefix = match scope.prefix_for(uri) {
                    Some(p) => p.to_owned(),
                    None => {
                        let p = format!("ns{}", scope.next_prefix);
                        scope.next_prefix += 1;
                        out.extend_from_slice(b"xmlns:");
                        out.extend_from_slice(p.as_bytes());
                        out.extend_from_slice(b"='");
                        escape(uri, true, out);
                        out.extend_from_slice(b"' ");
                        scope.prefixes.push((p.clone(), uri.to_owned()));
                        p
                    }
                };
                out.extend_from_slice(prefix.as_bytes());
                out.push(b':');
            }
        }
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"='");
        escape(value, true, out);
        out.push(b'\'');
    }
    if el.nodes().next().is_none() {
        out.extend_from_slice(b"/>");
    } else {
        out.push(b'>');
        for node in el.nodes() {
            match node {
                Node::Element(child) => {
                    write_inner(child, child_default, stream_bound || is_stream, scope, out)
                }
                Node::Text(text) => escape(text, false, out),
            }
        }
        out.extend_from_slice(b"</");
        if is_stream {
            out.extend_from_slice(b"stream:");
        }
        out.extend_from_slice(el.name().as_bytes());
        out.push(b'>');
    }
    scope.prefixes.truncate(scope_mark);
}

/// Appends ` name='value'`, the value escaped as [`write_element`] escapes attribute values.
/// With [`write_element`] it lets a caller splice one attribute into bytes serialised once
/// (the MUC fan-out writes one serialised message to many recipients, each with its `to`).
pub fn write_attribute(out: &mut Vec<u8>, name: &str, value: &str) {
    attr(out, name, value);
}

fn attr(out: &mut Vec<u8>, name: &str, value: &str) {
    out.push(b' ');
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"='");
    escape(value, true, out);
    out.push(b'\'');
}

/// Escapes text or an attribute value, copying unchanged runs in one go. In attributes,
/// tab, newline and carriage return become character references so that attribute-value
/// normalisation (XML 1.0 §3.3.3) gives them back; in text, `\r` does (line-end
/// normalisation, §2.11). `>` is always escaped so `]]>` cannot appear.
fn escape(s: &str, in_attr: bool, out: &mut Vec<u8>) {
    let bytes = s.as_bytes();
    let mut run = 0;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let rep: Option<&[u8]> = match b {
            b'&' => Some(b"&amp;"),
            b'<' => Some(b"&lt;"),
            b'>' => Some(b"&gt;"),
            b'\'' if in_attr => Some(b"&apos;"),
            b'"' if in_attr => Some(b"&quot;"),
            b'\t' if in_attr => Some(b"&#x9;"),
            b'\n' if in_attr => Some(b"&#xA;"),
            b'\r' => Some(b"&#xD;"),
            b'\t' | b'\n' => None,
            // C0 controls other than tab, LF, CR are not XML 1.0 characters (DEL is).
            0..=0x1F => Some("\u{FFFD}".as_bytes()),
            // U+FFFE and U+FFFF are not XML characters.
            0xEF if bytes.get(i + 1) == Some(&0xBF)
                && matches!(bytes.get(i + 2), Some(0xBE | 0xBF)) =>
            {
                out.extend_from_slice(&bytes[run..i]);
                out.extend_from_slice("\u{FFFD}".as_bytes());
                i += 3;
                run = i;
                continue;
            }
            _ => None,
        };
        if let Some(rep) = rep {
            out.extend_from_slice(&bytes[run..i]);
            out.extend_from_slice(rep);
            run = i + 1;
        }
        i += 1;
    }
    out.extend_from_slice(&bytes[run..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framer::{Framer, Limits, StreamEvent};
    use proptest::prelude::*;

    /// Parses `xml` as one stanza inside a c2s stream through the framer.
    fn reparse(xml: &[u8]) -> Element {
        let mut f = Framer::new(Limits::default());
        f.feed(stream_header(ns::CLIENT, None, Some("example.com"), "s1", None).as_bytes());
        f.feed(xml);
        match f.next_event() {
            Ok(Some(StreamEvent::Open(_))) => {}
            other => panic!("expected header, got {other:?}"),
        }
        match f.next_event() {
            Ok(Some(StreamEvent::Stanza(el))) => el,
            other => panic!(
                "expected stanza from {:?}, got {other:?}",
                String::from_utf8_lossy(xml)
            ),
        }
    }

    fn write(el: &Element) -> Vec<u8> {
        let mut out = Vec::new();
        write_element(el, &mut out);
        out
    }

    #[test]
    fn writes_namespaces_only_where_they_change() {
        let el: Element = "<message xmlns='jabber:client' to='a@b'><body>hi</body><x xmlns='urn:x'><y/></x></message>"
            .parse()
            .unwrap();
        assert_eq!(
            element_to_string(&el),
            "<message xmlns='jabber:client' to='a@b'><body>hi</body><x xmlns='urn:x'><y/></x></message>"
        );
    }

    #[test]
    fn escapes_text_and_attributes() {
        let mut el = Element::bare("body", ns::CLIENT);
        el.set_attr(rxml::Namespace::NONE, crate::error::nc("a"), "'\"<>&\t\n\r");
        el.append_text("a]]>b<&'\"\r\n\u{0}");
        assert_eq!(
            element_to_string(&el),
            "<body xmlns='jabber:client' a='&apos;&quot;&lt;&gt;&amp;&#x9;&#xA;&#xD;'>a]]&gt;b&lt;&amp;'\"&#xD;\n\u{FFFD}</body>"
        );
    }

    #[test]
    fn stream_namespace_uses_stream_prefix() {
        let features: Element = "<features xmlns='http://etherx.jabber.org/streams'><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls></features>"
            .parse()
            .unwrap();
        let s = element_to_string(&features);
        assert_eq!(
            s,
            "<stream:features xmlns:stream='http://etherx.jabber.org/streams'><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls></stream:features>"
        );
        assert_eq!(reparse(s.as_bytes()), features);
    }

    #[test]
    fn namespaced_attributes_round_trip() {
        let el: Element = "<iq xmlns='jabber:client' xml:lang='fr' id='1'><q xmlns='urn:q' xmlns:z='urn:z' z:a='1' z:b='2'><r xmlns:w='urn:z' w:c='3'/></q></iq>"
            .parse()
            .unwrap();
        let out = write(&el);
        assert_eq!(reparse(&out), el);
        assert!(String::from_utf8(out).unwrap().contains("xml:lang='fr'"));
    }

    /// Found by the fuzzer: DEL (U+007F) is an XML 1.0 character and must survive.
    #[test]
    fn del_and_c1_controls_round_trip() {
        let mut el = Element::bare("message", ns::CLIENT);
        el.set_attr(
            rxml::Namespace::NONE,
            crate::error::nc("to"),
            "e\u{7f}x\u{85}",
        );
        el.append_text("a\u{7f}b\u{9f}");
        let out = write(&el);
        assert!(out.contains(&0x7F));
        assert_eq!(reparse(&out), el);
    }

    #[test]
    fn element_without_namespace_stays_without() {
        let el = Element::bare("x", "");
        assert_eq!(element_to_string(&el), "<x xmlns=''/>");
        assert_eq!(reparse(&write(&el)), el);
    }

    #[test]
    fn stream_header_parses_back() {
        let h = stream_header(
            ns::SERVER,
            Some("a.example"),
            Some("b.example"),
            "i'd",
            Some("en"),
        );
        let mut f = Framer::new(Limits::default());
        f.feed(h.as_bytes());
        let Ok(Some(StreamEvent::Open(hdr))) = f.next_event() else {
            panic!("no header from {h}");
        };
        assert_eq!(hdr.from.as_deref(), Some("a.example"));
        assert_eq!(hdr.to.as_deref(), Some("b.example"));
        assert_eq!(hdr.id.as_deref(), Some("i'd"));
        assert_eq!(hdr.version.as_deref(), Some("1.0"));
        assert_eq!(hdr.lang.as_deref(), Some("en"));
        assert_eq!(hdr.default_ns.as_deref(), Some(ns::SERVER));
        f.feed(STREAM_CLOSE.as_bytes());
        assert_eq!(f.next_event(), Ok(Some(StreamEvent::Close)));
    }

    /// XML 1.0 characters (the writer maps the others to U+FFFD, tested above).
    fn xml_text() -> impl Strategy<Value = String> {
        proptest::collection::vec(
            prop_oneof![
                Just('\''),
                Just('"'),
                Just('<'),
                Just('>'),
                Just('&'),
                Just(']'),
                Just('\n'),
                Just('\t'),
                Just('\r'),
                Just(' '),
                Just('\u{7f}'),
                proptest::char::range('a', 'z'),
                proptest::char::range('\u{80}', '\u{D7FF}'),
                proptest::char::range('\u{E000}', '\u{FFFD}'),
                proptest::char::range('\u{10000}', '\u{10FFFF}'),
            ],
            0..40,
        )
        .prop_map(|v| v.into_iter().collect())
    }

    proptest! {
        #[test]
        fn round_trip_through_framer(text in xml_text(), value in xml_text(), inner in xml_text()) {
            let mut el = Element::bare("message", ns::CLIENT);
            el.set_attr(rxml::Namespace::NONE, crate::error::nc("id"), value.as_str());
            el.set_attr(rxml::Namespace::from("urn:x".to_owned()), crate::error::nc("v"), value.as_str());
            let mut body = Element::bare("body", ns::CLIENT);
            if !text.is_empty() {
                body.append_text(text.as_str());
            }
            el.append_child(body);
            if !inner.is_empty() {
                el.append_text(inner.as_str());
            }
            el.append_child(Element::bare("x", "urn:x"));
            let back = reparse(&write(&el));
            prop_assert_eq!(back, el);
        }
    }

    #[test]
    fn size_of_hot_types() {
        // The writer keeps no state between calls; the only hot type is Element itself.
        assert!(std::mem::size_of::<Element>() <= 128);
    }
}
