//! Integration tests for starling-cpim: golden vectors (RFC 3922 §3–§6, RFC 3862 §6, RFC 3863
//! and the worked examples in shared/reference/cpim-e2e.md §1.5, each checked by hand against
//! the RFC text rather than produced by this code), malformed input, and round-trip properties.

mod golden;
mod malformed;
mod roundtrip;

use minidom::{Element, Node};

/// Parses XML and drops whitespace-only text nodes, so pretty-printed expectations compare
/// equal to compact output (minidom's `==` ignores prefixes but not text nodes).
pub fn canonical(xml: &str) -> Element {
    strip(xml.parse::<Element>().expect("test XML parses"))
}

pub fn strip(mut el: Element) -> Element {
    let nodes = el.take_nodes();
    for node in nodes {
        match node {
            Node::Text(t) if t.trim().is_empty() => {}
            Node::Text(t) => el.append_text_node(t),
            Node::Element(child) => {
                el.append_child(strip(child));
            }
        }
    }
    el
}

/// Round-trips an element through its serialization, as it would travel.
pub fn reparse(el: &Element) -> Element {
    let mut out = Vec::new();
    el.write_to(&mut out).unwrap();
    Element::from_reader(&out[..]).unwrap()
}
