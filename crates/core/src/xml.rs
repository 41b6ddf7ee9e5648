//! Small conveniences over `minidom` 0.19, whose attribute API wants `rxml::NcName` values
//! and cannot remove an attribute through `set_attr`. Used by every crate that edits stanzas.

use minidom::{Element, ElementBuilder};

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
}
