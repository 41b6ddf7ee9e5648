//! Small minidom helpers shared by the message and presence mappings (no RFC logic here).

use minidom::Element;
use rxml::{Namespace, NcName};

/// `jabber:client`, the namespace of the stanzas the mappings produce.
pub const NS_CLIENT: &str = "jabber:client";
/// `jabber:server`, accepted on input as well.
pub const NS_SERVER: &str = "jabber:server";
/// XEP-0203 delayed delivery.
pub const NS_DELAY: &str = "urn:xmpp:delay";
/// RFC 3923 end-to-end wrapper (and the spelling without `ns:` that its examples use).
pub const NS_E2E: &str = "urn:ietf:params:xml:ns:xmpp-e2e";
pub(crate) const NS_E2E_ALT: &str = "urn:ietf:params:xml:xmpp-e2e";

pub(crate) fn ncname(s: &str) -> NcName {
    NcName::try_from(s).expect("static attribute names are NCNames")
}

/// The element's own `xml:lang`, if any.
pub(crate) fn xml_lang(el: &Element) -> Option<&str> {
    el.attr_ns(Namespace::xml(), "lang")
}

pub(crate) fn set_xml_lang(el: &mut Element, lang: &str) {
    el.set_attr(Namespace::XML, ncname("lang"), lang);
}

pub(crate) fn is_stanza_ns(el: &Element) -> bool {
    el.has_ns(NS_CLIENT) || el.has_ns(NS_SERVER)
}

/// True if `c` may appear in XML 1.0 character data.
pub(crate) fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// A child in the same namespace as the stanza (`jabber:client` or `jabber:server`).
pub(crate) fn stanza_children<'a>(
    el: &'a Element,
    name: &'a str,
) -> impl Iterator<Item = &'a Element> + 'a {
    let ns = el.ns();
    el.children()
        .filter(move |c| c.name() == name && c.ns() == ns)
}
