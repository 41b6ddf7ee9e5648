//! Small conveniences over `minidom` 0.19, whose attribute API wants `rxml::NcName` values
//! and cannot remove an attribute through `set_attr`. Used by every crate that edits stanzas.

use minidom::{Element, ElementBuilder, Node};

fn ncname(name: &str) -> rxml::NcName {
    rxml::NcName::try_from(name).expect("attribute names used by Starling are valid NCNames")
}

/// Attribute edits on an element (no namespace).
pub trait ElementExt {
    /// Sets (or replaces) an attribute.
    fn put_attr(&mut self, name: &str, value: impl Into<String>);
    /// Removes an attribute if present.
    fn remove_attr(&mut self, name: &str);
}

impl ElementExt for Element {
    fn put_attr(&mut self, name: &str, value: impl Into<String>) {
        self.set_attr(rxml::Namespace::NONE, ncname(name), value.into());
    }

    fn remove_attr(&mut self, name: &str) {
        self.attrs_mut()
            .remove::<rxml::Namespace, str>(&rxml::Namespace::NONE, name);
    }
}

/// Attribute setting on a builder with a plain `&str` name.
pub trait BuilderExt {
    /// Adds an attribute.
    fn with_attr(self, name: &str, value: impl Into<String>) -> ElementBuilder;
}

impl BuilderExt for ElementBuilder {
    fn with_attr(self, name: &str, value: impl Into<String>) -> ElementBuilder {
        self.attr(ncname(name), value.into())
    }
}

/// `el` with itself and every descendant in namespace `from` moved to `to`; elements in other
/// namespaces (and everything below them) are left alone. Stanzas travel in
/// `jabber:server` between servers, `jabber:component:accept` to components and the BOSH
/// namespace inside `<body/>`, but in `jabber:client` inside Starling; payloads such as
/// forwarded messages keep their own namespaces.
pub fn rename_namespace(mut el: Element, from: &str, to: &str) -> Element {
    if el.ns() != from {
        return el;
    }
    let mut out = Element::bare(el.name(), to);
    *out.attrs_mut() = el.attrs().clone();
    for node in el.take_nodes() {
        match node {
            Node::Element(child) => {
                out.append_child(rename_namespace(child, from, to));
            }
            Node::Text(text) => out.append_text_node(text),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_and_remove() {
        let mut el = Element::builder("message", "jabber:client")
            .with_attr("to", "a@b")
            .build();
        el.put_attr("to", "c@d");
        el.put_attr("from", "e@f");
        assert_eq!(el.attr("to"), Some("c@d"));
        el.remove_attr("to");
        assert_eq!(el.attr("to"), None);
        assert_eq!(el.attr("from"), Some("e@f"));
    }

    #[test]
    fn put_touches_only_the_plain_attribute() {
        let mut el: Element = "<message xmlns='jabber:client' xmlns:x='urn:x' x:to='ns' id='1'/>"
            .parse()
            .unwrap();
        el.put_attr("to", "a@b");
        el.put_attr("to", "c@d");
        el.put_attr("id", "2");
        assert_eq!(el.attr("to"), Some("c@d"));
        assert_eq!(el.attr("id"), Some("2"));
        assert_eq!(el.attr_ns("urn:x", "to"), Some("ns"));
        assert_eq!(el.attrs().iter().count(), 3);
    }

    #[test]
    fn renaming_moves_the_stanza_and_same_namespace_children_only() {
        let el: Element = "<message xmlns='jabber:client' to='b@b.test'><body>hi</body><x xmlns='urn:x'><body xmlns='jabber:client'/></x></message>"
            .parse()
            .unwrap();
        let out = rename_namespace(el.clone(), "jabber:client", "jabber:server");
        assert!(out.is("message", "jabber:server"));
        assert_eq!(out.attr("to"), Some("b@b.test"));
        assert_eq!(out.get_child("body", "jabber:server").unwrap().text(), "hi");
        let x = out.get_child("x", "urn:x").unwrap();
        assert!(x.get_child("body", "jabber:client").is_some());
        assert_eq!(rename_namespace(out, "jabber:server", "jabber:client"), el);
    }
}
