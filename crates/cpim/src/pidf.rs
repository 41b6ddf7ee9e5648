//! PIDF, the Presence Information Data Format (RFC 3863): a typed document, a writer and a
//! strict parser.
//!
//! Implemented: `<presence entity>` (§4.1.1) with `<tuple id>` (§4.1.2), `<status>` and
//! `<basic>open|closed</basic>` (§4.1.3–4.1.4), `<contact priority>` (§4.1.5, priority as the
//! schema's qvalue: `0(.d{0,3})?` or `1(.0{0,3})?`), `<note xml:lang>` on tuples and on the
//! document (§4.1.6), `<timestamp>` (§4.1.7), and the `urn:ietf:params:xml:ns:pidf:im`
//! extended status `<im:im>` that RFC 3922 §5 uses for `<show/>`. Other extension elements
//! are ignored on input and never produced.
//!
//! The parser rejects, with a [`PidfError`] saying why: input that is not XML, a root that is
//! not `{urn:ietf:params:xml:ns:pidf}presence`, a missing `entity`, a tuple without `id` or
//! `<status>`, duplicate tuple ids, a `<basic>` other than open/closed, more than one
//! `<contact>`, an invalid priority or timestamp.

use minidom::Element;

use crate::datetime::DateTime;
use crate::xml::{ncname, set_xml_lang, xml_lang};

/// The PIDF namespace.
pub const NS_PIDF: &str = "urn:ietf:params:xml:ns:pidf";
/// The IM extended-status namespace used by RFC 3922 §5 (`<im:im>`).
pub const NS_PIDF_IM: &str = "urn:ietf:params:xml:ns:pidf:im";
/// The MIME type of a PIDF document.
pub const PIDF_CONTENT_TYPE: &str = "application/pidf+xml";

/// Why a PIDF document was rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PidfError {
    #[error("not well-formed XML: {0}")]
    Xml(String),
    #[error("root element is {0}, not {{urn:ietf:params:xml:ns:pidf}}presence")]
    NotPidf(String),
    #[error("<presence/> has no entity attribute")]
    MissingEntity,
    #[error("<tuple/> has no id attribute")]
    MissingTupleId,
    #[error("tuple id {0:?} is not an XML ID (NCName)")]
    BadTupleId(String),
    #[error("tuple id {0:?} appears twice")]
    DuplicateTupleId(String),
    #[error("tuple {0:?} has no <status/>")]
    MissingStatus(String),
    #[error("<basic/> is {0:?}, not open or closed")]
    BadBasic(String),
    #[error("tuple {0:?} has more than one <contact/>")]
    DuplicateContact(String),
    #[error("invalid contact priority {0:?} (expected 0..1 with at most three decimals)")]
    BadPriority(String),
    #[error("invalid timestamp {0:?}")]
    BadTimestamp(String),
    #[error("invalid value: {0}")]
    InvalidValue(String),
}

/// `<basic/>`: the one status value RFC 3863 defines.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Basic {
    Open,
    Closed,
}

/// A contact priority in thousandths: `0` ..= `1000` (RFC 3863 qvalue).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Priority(u16);

impl Priority {
    /// `thousandths` must be at most 1000.
    pub fn from_thousandths(thousandths: u16) -> Option<Self> {
        (thousandths <= 1000).then_some(Priority(thousandths))
    }

    /// The value in thousandths.
    pub fn thousandths(self) -> u16 {
        self.0
    }

    /// Parses a qvalue: `0(.d{0,3})?` or `1(.0{0,3})?`.
    pub fn parse(s: &str) -> Result<Self, PidfError> {
        let bad = || PidfError::BadPriority(s.to_owned());
        let (int, frac) = match s.split_once('.') {
            Some((i, f)) => (i, f),
            None => (s, ""),
        };
        if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let frac_value = frac
            .bytes()
            .chain(std::iter::repeat(b'0'))
            .take(3)
            .fold(0u16, |a, d| a * 10 + u16::from(d - b'0'));
        match int {
            "0" => Ok(Priority(frac_value)),
            "1" if frac_value == 0 => Ok(Priority(1000)),
            _ => Err(bad()),
        }
    }
}

impl std::fmt::Display for Priority {
    /// `0`, `1`, or `0.ddd` with exactly three decimals.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            0 => f.write_str("0"),
            1000 => f.write_str("1"),
            n => write!(f, "0.{n:03}"),
        }
    }
}

/// `<note/>`: free text with an optional language.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    lang: Option<String>,
    text: String,
}

impl Note {
    /// A note; `lang` becomes `xml:lang`.
    pub fn new(lang: Option<&str>, text: &str) -> Self {
        Note {
            lang: lang.map(str::to_owned),
            text: text.to_owned(),
        }
    }

    /// The note's `xml:lang`.
    pub fn lang(&self) -> Option<&str> {
        self.lang.as_deref()
    }

    /// The text.
    pub fn text(&self) -> &str {
        &self.text
    }
}

/// `<contact/>`: a URI with an optional priority.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Contact {
    uri: String,
    priority: Option<Priority>,
}

impl Contact {
    /// A contact address.
    pub fn new(uri: &str, priority: Option<Priority>) -> Self {
        Contact {
            uri: uri.to_owned(),
            priority,
        }
    }

    /// The contact URI.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// The priority, if given.
    pub fn priority(&self) -> Option<Priority> {
        self.priority
    }
}

/// `<tuple/>`: one segment of presence information (for us: one XMPP resource).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tuple {
    id: String,
    basic: Option<Basic>,
    /// `<im:im>` extended status (RFC 3922 §5), e.g. `away`, `busy`.
    im_status: Option<String>,
    contact: Option<Contact>,
    notes: Vec<Note>,
    timestamp: Option<DateTime>,
}

impl Tuple {
    /// A tuple with this id (an NCName, see [`crate::presence::tuple_id_for_resource`]).
    pub fn new(id: &str, basic: Option<Basic>) -> Result<Self, PidfError> {
        if !is_ncname(id) {
            return Err(PidfError::BadTupleId(id.to_owned()));
        }
        Ok(Tuple {
            id: id.to_owned(),
            basic,
            im_status: None,
            contact: None,
            notes: Vec::new(),
            timestamp: None,
        })
    }

    /// Sets the `<im:im>` extended status.
    pub fn with_im_status(mut self, status: Option<&str>) -> Self {
        self.im_status = status.map(str::to_owned);
        self
    }

    /// Sets the contact.
    pub fn with_contact(mut self, contact: Option<Contact>) -> Self {
        self.contact = contact;
        self
    }

    /// Appends a note.
    pub fn with_note(mut self, note: Note) -> Self {
        self.notes.push(note);
        self
    }

    /// Sets the timestamp.
    pub fn with_timestamp(mut self, timestamp: Option<DateTime>) -> Self {
        self.timestamp = timestamp;
        self
    }

    /// The tuple id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// `<basic/>`, if the status has one.
    pub fn basic(&self) -> Option<Basic> {
        self.basic
    }

    /// The `<im:im>` value.
    pub fn im_status(&self) -> Option<&str> {
        self.im_status.as_deref()
    }

    /// The contact.
    pub fn contact(&self) -> Option<&Contact> {
        self.contact.as_ref()
    }

    /// The notes, in order.
    pub fn notes(&self) -> &[Note] {
        &self.notes
    }

    /// The timestamp.
    pub fn timestamp(&self) -> Option<&DateTime> {
        self.timestamp.as_ref()
    }
}

/// A PIDF document: a presentity, its tuples and document-level notes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PidfDocument {
    entity: String,
    tuples: Vec<Tuple>,
    notes: Vec<Note>,
}

impl PidfDocument {
    /// An empty document for `entity` (a `pres:` URI).
    pub fn new(entity: &str) -> Self {
        PidfDocument {
            entity: entity.to_owned(),
            tuples: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// Adds a tuple; ids must be unique.
    pub fn push_tuple(&mut self, tuple: Tuple) -> Result<(), PidfError> {
        if self.tuples.iter().any(|t| t.id == tuple.id) {
            return Err(PidfError::DuplicateTupleId(tuple.id));
        }
        self.tuples.push(tuple);
        Ok(())
    }

    /// Adds a document-level note.
    pub fn push_note(&mut self, note: Note) {
        self.notes.push(note);
    }

    /// The presentity URI.
    pub fn entity(&self) -> &str {
        &self.entity
    }

    /// The tuples, in document order.
    pub fn tuples(&self) -> &[Tuple] {
        &self.tuples
    }

    /// Document-level notes.
    pub fn notes(&self) -> &[Note] {
        &self.notes
    }

    /// Parses and validates a PIDF document (UTF-8 XML).
    pub fn parse(bytes: &[u8]) -> Result<Self, PidfError> {
        let root = Element::from_reader(bytes).map_err(|e| PidfError::Xml(e.to_string()))?;
        Self::from_element(&root)
    }

    /// Validates an already-parsed `<presence/>` element.
    pub fn from_element(root: &Element) -> Result<Self, PidfError> {
        if !root.is("presence", NS_PIDF) {
            return Err(PidfError::NotPidf(format!(
                "{{{}}}{}",
                root.ns(),
                root.name()
            )));
        }
        let entity = root
            .attr("entity")
            .filter(|e| !e.is_empty())
            .ok_or(PidfError::MissingEntity)?;
        let mut doc = PidfDocument::new(entity);
        for child in root.children() {
            if child.is("tuple", NS_PIDF) {
                doc.push_tuple(parse_tuple(child)?)?;
            } else if child.is("note", NS_PIDF) {
                doc.notes.push(Note::new(xml_lang(child), &child.text()));
            }
        }
        Ok(doc)
    }

    /// The document as a minidom element.
    pub fn to_element(&self) -> Element {
        let mut root = Element::builder("presence", NS_PIDF)
            .attr(ncname("entity"), self.entity.as_str())
            .build();
        for t in &self.tuples {
            let mut tuple = Element::builder("tuple", NS_PIDF)
                .attr(ncname("id"), t.id.as_str())
                .build();
            let mut status = Element::bare("status", NS_PIDF);
            if let Some(basic) = t.basic {
                let text = match basic {
                    Basic::Open => "open",
                    Basic::Closed => "closed",
                };
                status.append_child(Element::builder("basic", NS_PIDF).append(text).build());
            }
            if let Some(im) = &t.im_status {
                status.append_child(
                    Element::builder("im", NS_PIDF_IM)
                        .append(im.as_str())
                        .build(),
                );
            }
            tuple.append_child(status);
            if let Some(c) = &t.contact {
                let mut b = Element::builder("contact", NS_PIDF).append(c.uri.as_str());
                if let Some(p) = c.priority {
                    b = b.attr(ncname("priority"), p.to_string());
                }
                tuple.append_child(b.build());
            }
            for n in &t.notes {
                tuple.append_child(note_element(n));
            }
            if let Some(ts) = &t.timestamp {
                tuple.append_child(
                    Element::builder("timestamp", NS_PIDF)
                        .append(ts.to_string())
                        .build(),
                );
            }
            root.append_child(tuple);
        }
        for n in &self.notes {
            root.append_child(note_element(n));
        }
        root
    }

    /// The document as UTF-8 XML with an XML declaration.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.to_element()
            .write_to_decl(&mut out)
            .expect("writing to a Vec cannot fail");
        out
    }
}

fn note_element(n: &Note) -> Element {
    let mut el = Element::builder("note", NS_PIDF)
        .append(n.text.as_str())
        .build();
    if let Some(lang) = &n.lang {
        set_xml_lang(&mut el, lang);
    }
    el
}

fn parse_tuple(el: &Element) -> Result<Tuple, PidfError> {
    let id = el.attr("id").ok_or(PidfError::MissingTupleId)?;
    if !is_ncname(id) {
        return Err(PidfError::BadTupleId(id.to_owned()));
    }
    let status = el
        .get_child("status", NS_PIDF)
        .ok_or_else(|| PidfError::MissingStatus(id.to_owned()))?;
    let basic = match status.get_child("basic", NS_PIDF) {
        Some(b) => Some(match b.text().trim() {
            "open" => Basic::Open,
            "closed" => Basic::Closed,
            other => return Err(PidfError::BadBasic(other.to_owned())),
        }),
        None => None,
    };
    let mut tuple = Tuple::new(id, basic)?;
    tuple.im_status = status
        .get_child("im", NS_PIDF_IM)
        .map(|im| im.text().trim().to_owned());
    for child in el.children() {
        if child.is("contact", NS_PIDF) {
            if tuple.contact.is_some() {
                return Err(PidfError::DuplicateContact(id.to_owned()));
            }
            let priority = child.attr("priority").map(Priority::parse).transpose()?;
            tuple.contact = Some(Contact::new(child.text().trim(), priority));
        } else if child.is("note", NS_PIDF) {
            tuple.notes.push(Note::new(xml_lang(child), &child.text()));
        } else if child.is("timestamp", NS_PIDF) {
            let text = child.text();
            let ts =
                DateTime::parse(text.trim()).map_err(|_| PidfError::BadTimestamp(text.clone()))?;
            tuple.timestamp = Some(ts);
        }
    }
    Ok(tuple)
}

/// An XML NCName, restricted to what tuple ids need (ASCII letters, digits, `_ - .`, and any
/// non-ASCII letter); the first character is a letter or `_`.
pub(crate) fn is_ncname(s: &str) -> bool {
    let mut chars = s.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    (first.is_alphabetic() || first == '_')
        && chars.all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priority_grammar() {
        for (s, v) in [
            ("0", 0),
            ("0.", 0),
            ("0.5", 500),
            ("0.039", 39),
            ("1", 1000),
            ("1.000", 1000),
            ("0.999", 999),
        ] {
            assert_eq!(Priority::parse(s).unwrap().thousandths(), v, "{s}");
        }
        for bad in [
            "", "1.5", "2", "0.1234", "-0.1", ".5", "0,5", "1.001", " 0.5",
        ] {
            assert!(Priority::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(Priority(39).to_string(), "0.039");
        assert_eq!(Priority(0).to_string(), "0");
        assert_eq!(Priority(1000).to_string(), "1");
    }
}
