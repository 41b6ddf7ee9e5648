//! The XMPP carrier (RFC 3923 §3–5, §9, Appendix A): `<e2e xmlns='urn:ietf:params:xml:ns:xmpp-e2e'>`
//! holding the S/MIME object (MIME headers and body) as character data.
//!
//! Two traps the RFC does not mention: XML parsers turn CRLF (and bare CR) into LF
//! (XML 1.0 §2.11), even inside CDATA, so [`unwrap`] re-canonicalizes to CRLF; and a CDATA
//! section cannot contain `]]>`, so [`cdata`] splits it. [`wrap`] builds a `minidom` element
//! whose serializer escapes text instead of using CDATA; receivers read the text content
//! either way.

use minidom::Element;

use crate::error::{E2eError, Result, E2E_NS, E2E_NS_EXAMPLES};
use crate::mime;

/// Wraps an S/MIME object (canonical MIME entity, UTF-8) in an `<e2e/>` element.
pub fn wrap(smime: &[u8]) -> Result<Element> {
    let text = std::str::from_utf8(smime)
        .map_err(|_| E2eError::Build("S/MIME object is not UTF-8 text".into()))?;
    Ok(Element::builder("e2e", E2E_NS).append(text).build())
}

/// The S/MIME object carried by an `<e2e/>` element, canonicalized to CRLF. Accepts the
/// namespace spelling of the RFC's examples too.
pub fn unwrap(e2e: &Element) -> Result<Vec<u8>> {
    if e2e.name() != "e2e" || (e2e.ns() != E2E_NS && e2e.ns() != E2E_NS_EXAMPLES) {
        return Err(E2eError::MalformedPayload("not an <e2e/> element".into()));
    }
    if e2e.children().next().is_some() {
        return Err(E2eError::MalformedPayload(
            "<e2e/> must hold only character data".into(),
        ));
    }
    let text = e2e.text();
    let trimmed = text.trim_start_matches(['\r', '\n', ' ', '\t']);
    Ok(mime::canonicalize(trimmed.as_bytes()))
}

/// The `<e2e/>` child of a stanza, if any.
pub fn find(stanza: &Element) -> Option<&Element> {
    stanza
        .children()
        .find(|c| c.name() == "e2e" && (c.ns() == E2E_NS || c.ns() == E2E_NS_EXAMPLES))
}

/// The text as one or more CDATA sections, for writers that emit CDATA like the RFC's
/// examples: every `]]>` is split across two sections.
pub fn cdata(text: &str) -> String {
    format!("<![CDATA[{}]]>", text.replace("]]>", "]]]]><![CDATA[>"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const OBJECT: &str = "Content-Type: text/plain\r\n\r\nline one\r\nodd ]]> text & <tags>\r\n";

    #[test]
    fn round_trip_through_serialized_xml() {
        let e2e = wrap(OBJECT.as_bytes()).unwrap();
        let message = Element::builder("message", "jabber:client")
            .append(e2e)
            .build();
        let xml = String::from(&message);
        let parsed: Element = xml.parse().unwrap();
        let carried = unwrap(find(&parsed).unwrap()).unwrap();
        assert_eq!(carried, OBJECT.as_bytes());
    }

    #[test]
    fn cdata_with_terminator_parses_back_and_lf_is_restored() {
        let lf_only = OBJECT.replace("\r\n", "\n");
        let xml = format!(
            "<message xmlns='jabber:client'><e2e xmlns='{E2E_NS}'>{}</e2e></message>",
            cdata(&lf_only)
        );
        let parsed: Element = xml.parse().unwrap();
        assert_eq!(unwrap(find(&parsed).unwrap()).unwrap(), OBJECT.as_bytes());
    }

    #[test]
    fn rejects_child_elements_and_foreign_names() {
        let bad = Element::builder("e2e", E2E_NS)
            .append(Element::builder("x", "urn:x").build())
            .build();
        assert!(unwrap(&bad).is_err());
        let example_ns = Element::builder("e2e", E2E_NS_EXAMPLES)
            .append("a: b\r\n\r\n")
            .build();
        assert!(unwrap(&example_ns).is_ok());
        assert!(unwrap(&Element::builder("e2e", "urn:other").build()).is_err());
    }
}
