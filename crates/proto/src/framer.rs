//! The incremental reader of one XMPP stream (RFC 6120 §4 streams, §11 restricted XML).
//!
//! Bytes go in with [`Framer::feed`]; [`Framer::next_event`] turns them into the stream
//! header, one [`minidom::Element`] per first-level child (stanzas, `stream:features`, SASL
//! and TLS elements ...) and the stream close. It owns the limits that keep a hostile peer
//! from costing more than a bounded amount of memory and the mapping of every XML fault to a
//! stream error condition. It does not own the stream state machine (features, STARTTLS,
//! SASL): the caller calls [`Framer::reset`] at each stream restart.
//!
//! Most stanzas are read by the fast path in [`fast`]: whole first-level elements in a plain
//! subset of XML, read straight from the buffer into the same tree-building steps. Anything
//! outside that subset, any error and any stanza not wholly buffered go to rxml, so the fast
//! path decides nothing that rxml would not (a differential test and the fuzz target check
//! it, chunk by chunk).
//!
//! Tokenising otherwise is rxml's [`RawParser`], which already rejects DTDs, comments, processing
//! instructions, entities beyond the five predefined ones, non-UTF-8 input, XML-illegal
//! characters and mismatched tags. On top of it this module adds what rxml leaves out or
//! cannot know: namespace resolution with our own error conditions (rxml's `RawParser` does
//! not check prefixes or duplicate attributes), stanza size, depth, element-count and
//! attribute-count limits, a cap on unparsed input, and the XMPP rules for the stream root.
//!
//! Memory bound: unparsed input is capped by `max_buffered_bytes`; the parser is handed at
//! most [`WINDOW`] bytes at a time and stanza bytes are counted by consumed offsets, so a
//! stanza is abandoned at most one window after it crosses `max_stanza_bytes`; rxml buffers
//! at most one token (8 KiB) internally; depth is checked when an element opens.

use minidom::Element;
use rxml::error::EndOrError;
use rxml::{Error as XmlError, NcName, Parse, RawEvent, RawParser};

use crate::error::{StreamError, StreamErrorCondition as Cond};
use crate::ns;

/// Largest slice handed to the parser in one call: the granularity of limit checks.
const WINDOW: usize = 4096;

thread_local! {
    /// An emptied element stack, kept for the next stanza read on this thread: a stream gives
    /// its stack up when a stanza is complete (an idle stream holds none; the capacity a
    /// nested stanza grew it to was about 400 bytes per idle session) and takes this one back
    /// when the next stanza starts, so reading costs no allocation per stanza.
    static SPARE_STACK: std::cell::Cell<Vec<Element>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Default for [`Limits::max_elements`]: 8192 elements, ~2 MB of tree at most (256 KiB of
/// `<a/>` would be 65 536 nodes, ~20 MB). This default also serves the reading side of
/// clients, where a server legitimately sends large stanzas (a roster result of 1000 items
/// with a few groups each is 3000-5000 elements). Servers set a tighter limit for what a
/// client may send: `[c2s] max_elements`, 4096 by default, since the largest stanzas clients
/// send (PEP publishes such as an OMEMO bundle with 100 pre-keys, ~110 elements; private XML
/// bookmarks; data forms) stay far below it.
pub const DEFAULT_MAX_ELEMENTS: usize = 8192;

/// Limits on what one peer may make us hold (RFC 6120 §13.12).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest first-level element (stanza), in bytes of input, including the stream header.
    pub max_stanza_bytes: usize,
    /// Deepest nesting inside a stanza; the stanza element itself is depth 1.
    pub max_depth: usize,
    /// Most attributes (namespace declarations included) on one element.
    pub max_attributes: usize,
    /// Most elements in one stanza, the stanza element included. The byte limit alone does
    /// not bound memory well: 256 KiB of `<a/>` is 65 536 tree nodes of a few hundred bytes
    /// each (~20 MB for one stanza); this caps the tree at a size real clients never reach.
    pub max_elements: usize,
    /// Most bytes fed but not yet parsed: a caller that feeds without draining events.
    pub max_buffered_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_stanza_bytes: 262_144,
            max_depth: 64,
            max_attributes: 64,
            max_elements: DEFAULT_MAX_ELEMENTS,
            max_buffered_bytes: 262_144 + 16_384,
        }
    }
}

/// The opening `<stream:stream>` tag (RFC 6120 §4.7).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StreamHeader {
    pub to: Option<String>,
    pub from: Option<String>,
    pub id: Option<String>,
    pub version: Option<String>,
    /// `xml:lang` of the stream, the default language of its stanzas (§4.7.4).
    pub lang: Option<String>,
    /// The content namespace declared as default (`jabber:client`, `jabber:server` ...).
    pub default_ns: Option<String>,
}

/// What the framer has read.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    /// The stream header, once per stream (and once more after each [`Framer::reset`]).
    Open(StreamHeader),
    /// A complete first-level element, in its resolved namespace.
    Stanza(Element),
    /// `</stream:stream>`: the peer closed its stream.
    Close,
}

#[derive(Debug, Clone, PartialEq)]
enum State {
    /// Waiting for the XML declaration and the root element.
    Header,
    /// Inside the stream, reading first-level elements.
    Stream,
    /// `</stream:stream>` seen; any further input is ignored.
    Closed,
    /// A stream error was returned; it is returned again on every call.
    Failed(StreamError),
}

/// An element head being read: the name and raw attributes until `>` resolves them.
#[derive(Debug)]
struct PendingHead {
    prefix: Option<NcName>,
    local: NcName,
    /// Attributes other than namespace declarations, unresolved.
    attrs: Vec<(Option<NcName>, NcName, String)>,
    /// Attribute count including namespace declarations.
    count: usize,
    /// Where this head started, in consumed-byte offsets.
    start: u64,
}

/// Incremental reader for one XMPP stream; see the module documentation.
#[derive(Debug)]
pub struct Framer {
    limits: Limits,
    parser: RawParser,
    /// Input fed but not yet given to the parser, from `pos` on.
    buf: Vec<u8>,
    pos: usize,
    /// `feed` dropped input because `max_buffered_bytes` would have been crossed.
    overflowed: bool,
    state: State,
    /// Total bytes the parser has consumed in this stream (since the last reset).
    consumed: u64,
    /// Offset where the current stanza (or the header) began, while inside one.
    unit_start: Option<u64>,
    head: Option<PendingHead>,
    /// Namespace declarations in scope, innermost last; `None` prefix = default namespace.
    decls: Vec<(Option<NcName>, String)>,
    /// For each open element (root first), the length of `decls` before its declarations.
    scope_marks: Vec<usize>,
    /// Open elements of the current stanza, outermost first.
    stack: Vec<Element>,
    /// Elements opened in the current stanza (checked against `max_elements`).
    elements: usize,
    /// Whether the fast path ([`fast`]) may read first-level elements; off only to compare
    /// it with rxml alone.
    fast: bool,
    /// rxml holds no partial token and no queued event: it last returned the end of a
    /// first-level element and has not been given input since. Only then may the fast path
    /// consume input behind rxml's back.
    raw_idle: bool,
    /// Scratch of the fast path: the byte range of each open element's name.
    fast_tags: Vec<(usize, usize)>,
    /// First-level elements the fast path has read (tests check it is taken).
    #[cfg(test)]
    fast_count: usize,
}

impl Framer {
    pub fn new(limits: Limits) -> Self {
        Framer {
            limits,
            parser: RawParser::new(),
            buf: Vec::new(),
            pos: 0,
            overflowed: false,
            state: State::Header,
            consumed: 0,
            unit_start: Some(0),
            head: None,
            decls: Vec::new(),
            scope_marks: Vec::new(),
            stack: Vec::new(),
            elements: 0,
            fast: true,
            raw_idle: false,
            fast_tags: Vec::new(),
            #[cfg(test)]
            fast_count: 0,
        }
    }

    /// Turns the fast path off (or back on). For tests and fuzzing, which compare the two.
    #[doc(hidden)]
    pub fn set_fast_path(&mut self, on: bool) {
        self.fast = on;
        self.raw_idle &= on;
    }

    /// Appends input. Parses nothing. Input that would take the unparsed bytes past
    /// `max_buffered_bytes` is dropped and the next [`Framer::next_event`] fails.
    pub fn feed(&mut self, data: &[u8]) {
        if self.overflowed || matches!(self.state, State::Failed(_) | State::Closed) {
            return;
        }
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        if self.buf.len() + data.len() > self.limits.max_buffered_bytes {
            self.overflowed = true;
            self.buf = Vec::new();
            return;
        }
        self.buf.extend_from_slice(data);
    }

    /// Frees scratch memory kept for the next input: rxml's token buffers (its lexer
    /// reserves `max_token_length`, 8 KiB, at the first name or text it reads and keeps it)
    /// and an emptied input buffer. Parsing state is kept, so it is safe at any time; it costs
    /// one allocation when input comes again. Call it when the stream is about to wait.
    pub fn release_temporaries(&mut self) {
        self.parser.release_temporaries();
        self.fast_tags = Vec::new();
        if self.pos == self.buf.len() {
            self.buf = Vec::new();
            self.pos = 0;
        }
    }

    /// Bytes fed and not yet parsed.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Stream restart (RFC 6120 §4.3.3, after STARTTLS and SASL success): drops buffered
    /// input and any partial stanza, and expects a new stream header.
    pub fn reset(&mut self) {
        let fast = self.fast;
        *self = Framer::new(self.limits);
        self.fast = fast;
    }

    /// The next event, `Ok(None)` when more input is needed. After an error or `Close`
    /// the framer stays in that state until [`Framer::reset`].
    pub fn next_event(&mut self) -> Result<Option<StreamEvent>, StreamError> {
        match &self.state {
            State::Failed(e) => return Err(e.clone()),
            State::Closed => {
                self.buf.clear();
                self.pos = 0;
                return Ok(None);
            }
            _ => {}
        }
        match self.run() {
            Ok(ev) => {
                if matches!(ev, Some(StreamEvent::Close)) {
                    self.state = State::Closed;
                    self.buf = Vec::new();
                    self.pos = 0;
                }
                Ok(ev)
            }
            Err(e) => {
                self.state = State::Failed(e.clone());
                self.buf = Vec::new();
                self.pos = 0;
                self.stack = Vec::new();
                Err(e)
            }
        }
    }

    fn run(&mut self) -> Result<Option<StreamEvent>, StreamError> {
        if self.overflowed {
            return Err(policy(format!(
                "more than {} bytes of input buffered",
                self.limits.max_buffered_bytes
            )));
        }
        if self.state == State::Header && self.consumed == 0 {
            self.check_bom()?;
        }
        loop {
            if self.raw_idle {
                match self.fast_stanza() {
                    fast::Fast::Stanza(el) => return Ok(Some(StreamEvent::Stanza(el))),
                    fast::Fast::NeedMore => return Ok(None),
                    fast::Fast::Rxml => self.raw_idle = false,
                }
            }
            // Called even with nothing left to feed: the parser may hold queued events
            // (the end of `<a/>` comes out after its head).
            let avail = self.buf.len() - self.pos;
            let end = self.pos + avail.min(WINDOW);
            let mut slice = &self.buf[self.pos..end];
            let before = slice.len();
            let result = self.parser.parse(&mut slice, false);
            let used = before - slice.len();
            self.pos += used;
            let last = self
                .pos
                .checked_sub(1)
                .and_then(|i| self.buf.get(i).copied());
            self.consumed += used as u64;
            if self.pos == self.buf.len() {
                self.buf.clear();
                self.pos = 0;
            }
            match result {
                Ok(Some(ev)) => {
                    if let Some(out) = self.handle(ev)? {
                        // The end of a first-level element ends rxml's token with its
                        // `>` and queues nothing after it.
                        self.raw_idle = self.fast && matches!(out, StreamEvent::Stanza(_));
                        return Ok(Some(out));
                    }
                }
                Ok(None) => return Ok(Some(StreamEvent::Close)),
                Err(EndOrError::NeedMoreData) if avail == 0 => return Ok(None),
                Err(EndOrError::NeedMoreData) => {}
                Err(EndOrError::Error(e)) => return Err(map_xml_error(e, last)),
            }
            self.check_unit_size()?;
        }
    }

    /// A UTF-8 byte order mark is skipped; a UTF-16 or UTF-32 one is refused (§11.6).
    fn check_bom(&mut self) -> Result<(), StreamError> {
        let rest = &self.buf[self.pos..];
        if rest.starts_with(&[0xEF, 0xBB, 0xBF]) {
            self.pos += 3;
        } else if rest.starts_with(&[0xFE, 0xFF]) || rest.starts_with(&[0xFF, 0xFE]) {
            return Err(StreamError::with_text(
                Cond::UnsupportedEncoding,
                "only UTF-8 is supported",
            ));
        }
        // Text before the root (an HTTP request on the XMPP port, a confused client) is
        // refused at once: rxml would buffer it waiting for a '<' until the handshake timeout.
        let rest = &self.buf[self.pos..];
        let partial_bom = rest.len() < 3 && [0xEF, 0xBB, 0xBF].starts_with(rest);
        if let Some(&b) = rest
            .iter()
            .find(|b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
        {
            if b != b'<' && !partial_bom {
                return Err(StreamError::with_text(
                    Cond::NotWellFormed,
                    "expected '<' at the start of the stream",
                ));
            }
        }
        Ok(())
    }

    fn check_unit_size(&self) -> Result<(), StreamError> {
        if let Some(start) = self.unit_start {
            if self.consumed - start > self.limits.max_stanza_bytes as u64 {
                return Err(policy(format!(
                    "stanza larger than {} bytes",
                    self.limits.max_stanza_bytes
                )));
            }
        }
        Ok(())
    }

    fn handle(&mut self, ev: RawEvent) -> Result<Option<StreamEvent>, StreamError> {
        match ev {
            RawEvent::XmlDeclaration(..) => Ok(None),
            RawEvent::ElementHeadOpen(m, (prefix, local)) => {
                let start = self.consumed.saturating_sub(m.len() as u64);
                self.head_open(start, prefix, local).map(|()| None)
            }
            RawEvent::Attribute(_, (prefix, name), value) => {
                self.attribute(prefix, name, value).map(|()| None)
            }
            RawEvent::ElementHeadClose(_) => self.head_close(),
            RawEvent::ElementFoot(_) => self.foot(),
            RawEvent::Text(_, text) => self.text(text).map(|()| None),
        }
    }

    // The steps below build the tree; rxml's events and the fast path ([`fast`]) both drive
    // them, so namespaces, limits and errors have one implementation.

    /// `<prefix:local` of an element whose `<` is at offset `start`.
    fn head_open(
        &mut self,
        start: u64,
        prefix: Option<NcName>,
        local: NcName,
    ) -> Result<(), StreamError> {
        if self.state == State::Stream {
            if self.stack.is_empty() {
                self.unit_start = Some(start);
                self.elements = 0;
            }
            self.elements += 1;
            if self.elements > self.limits.max_elements {
                return Err(policy(format!(
                    "more than {} elements in one stanza",
                    self.limits.max_elements
                )));
            }
            if self.stack.len() >= self.limits.max_depth {
                return Err(policy(format!(
                    "elements nested deeper than {}",
                    self.limits.max_depth
                )));
            }
        }
        self.head = Some(PendingHead {
            prefix,
            local,
            attrs: Vec::new(),
            count: 0,
            start,
        });
        Ok(())
    }

    /// One attribute (or namespace declaration) of the element head being read.
    fn attribute(
        &mut self,
        prefix: Option<NcName>,
        name: NcName,
        value: String,
    ) -> Result<(), StreamError> {
        let max = self.limits.max_attributes;
        let head = self.head.as_mut().ok_or_else(internal_order)?;
        head.count += 1;
        if head.count > max {
            return Err(policy(format!("more than {max} attributes on an element")));
        }
        match prefix {
            None if name.as_str() == "xmlns" => self.declare(None, value)?,
            Some(p) if p.as_str() == "xmlns" => self.declare(Some(name), value)?,
            prefix => head_attrs(&mut self.head).push((prefix, name, value)),
        }
        Ok(())
    }

    /// Character data: part of the open element, or (between stanzas) whitespace only.
    fn text(&mut self, text: String) -> Result<(), StreamError> {
        if let Some(top) = self.stack.last_mut() {
            top.append_text(text);
        } else if self.state == State::Stream
            && !text
                .bytes()
                .all(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
        {
            return Err(StreamError::with_text(
                Cond::BadFormat,
                "character data between stanzas",
            ));
        }
        Ok(())
    }

    /// Records a namespace declaration of the element whose head is being read. The scope
    /// mark for that element is pushed at its first declaration or at `>`.
    fn declare(&mut self, prefix: Option<NcName>, uri: String) -> Result<(), StreamError> {
        let depth = self.scope_marks.len();
        let open = self.stack.len() + usize::from(self.state != State::Header);
        if depth == open {
            self.scope_marks.push(self.decls.len());
        }
        self.decls.push((prefix, uri));
        Ok(())
    }

    fn lookup(&self, prefix: Option<&NcName>) -> Option<&str> {
        if let Some(p) = prefix {
            if p.as_str() == "xml" {
                return Some(ns::XML);
            }
        }
        self.decls
            .iter()
            .rev()
            .find(|(p, _)| p.as_ref() == prefix)
            .map(|(_, uri)| uri.as_str())
    }

    fn head_close(&mut self) -> Result<Option<StreamEvent>, StreamError> {
        let head = self.head.take().ok_or_else(internal_order)?;
        let open = self.stack.len() + usize::from(self.state != State::Header);
        if self.scope_marks.len() == open {
            // No declarations on this element: an empty scope.
            self.scope_marks.push(self.decls.len());
        }
        let element_ns = match self.lookup(head.prefix.as_ref()) {
            Some(uri) => uri.to_owned(),
            None if head.prefix.is_none() => String::new(),
            None => return Err(undeclared_prefix(head.prefix.as_ref())),
        };
        if self.state == State::Header {
            return self.stream_header(head, element_ns).map(Some);
        }
        let mut el = Element::bare(head.local.as_str(), element_ns);
        for (prefix, name, value) in head.attrs {
            let attr_ns = match &prefix {
                None => rxml::Namespace::NONE,
                Some(_) => match self.lookup(prefix.as_ref()) {
                    Some(uri) => rxml::Namespace::from(uri.to_owned()),
                    None => return Err(undeclared_prefix(prefix.as_ref())),
                },
            };
            if el.attrs_mut().insert(attr_ns, name, value).is_some() {
                return Err(StreamError::with_text(
                    Cond::NotWellFormed,
                    "duplicate attribute",
                ));
            }
        }
        if self.stack.is_empty() {
            self.unit_start = Some(head.start);
            if self.stack.capacity() == 0 {
                self.stack = crate::spare::take(&SPARE_STACK);
            }
        }
        self.stack.push(el);
        Ok(None)
    }

    fn stream_header(
        &mut self,
        head: PendingHead,
        element_ns: String,
    ) -> Result<StreamEvent, StreamError> {
        if element_ns != ns::STREAM {
            return Err(StreamError::with_text(
                Cond::InvalidNamespace,
                "the stream root must be in http://etherx.jabber.org/streams",
            ));
        }
        if head.local.as_str() != "stream" {
            return Err(StreamError::with_text(
                Cond::BadFormat,
                "the stream root must be <stream:stream>",
            ));
        }
        if head.prefix.is_none() {
            return Err(StreamError::with_text(
                Cond::BadNamespacePrefix,
                "the stream root needs a prefix bound to the stream namespace",
            ));
        }
        let default_ns = self
            .lookup(None)
            .filter(|s| !s.is_empty())
            .map(str::to_owned);
        if default_ns.as_deref() == Some(ns::STREAM) {
            return Err(StreamError::with_text(
                Cond::InvalidNamespace,
                "the content namespace must differ from the stream namespace",
            ));
        }
        let mut header = StreamHeader {
            default_ns,
            ..StreamHeader::default()
        };
        for (prefix, name, value) in head.attrs {
            let slot = match (prefix.as_ref().map(NcName::as_str), name.as_str()) {
                (None, "to") => &mut header.to,
                (None, "from") => &mut header.from,
                (None, "id") => &mut header.id,
                (None, "version") => &mut header.version,
                (Some("xml"), "lang") => &mut header.lang,
                (Some(p), _) if p != "xml" && self.lookup(prefix.as_ref()).is_none() => {
                    return Err(undeclared_prefix(prefix.as_ref()));
                }
                _ => continue,
            };
            if slot.replace(value).is_some() {
                return Err(StreamError::with_text(
                    Cond::NotWellFormed,
                    "duplicate attribute",
                ));
            }
        }
        self.state = State::Stream;
        self.unit_start = None;
        Ok(StreamEvent::Open(header))
    }

    fn foot(&mut self) -> Result<Option<StreamEvent>, StreamError> {
        if let Some(mark) = self.scope_marks.pop() {
            self.decls.truncate(mark);
        }
        let Some(el) = self.stack.pop() else {
            // The root closed.
            return Ok(Some(StreamEvent::Close));
        };
        match self.stack.last_mut() {
            Some(parent) => {
                parent.append_child(el);
                Ok(None)
            }
            None => {
                self.unit_start = None;
                crate::spare::give(&SPARE_STACK, std::mem::take(&mut self.stack));
                Ok(Some(StreamEvent::Stanza(el)))
            }
        }
    }
}

/// The stream error for an XML fault rxml found; `last` is the last byte it consumed.
fn map_xml_error(e: XmlError, last: Option<u8>) -> StreamError {
    let cond = match e {
        XmlError::RestrictedXml("only utf-8 encoding is allowed") => Cond::UnsupportedEncoding,
        XmlError::RestrictedXml("long name or reference" | "event too long") => {
            Cond::PolicyViolation
        }
        XmlError::RestrictedXml(_) | XmlError::UndeclaredEntity => Cond::RestrictedXml,
        XmlError::UndeclaredNamespacePrefix(_)
        | XmlError::ReservedNamespacePrefix
        | XmlError::ReservedNamespaceName
        | XmlError::EmptyNamespaceUri => Cond::BadNamespacePrefix,
        _ if markup_declaration_at_error(&e, last) => Cond::RestrictedXml,
        _ => Cond::NotWellFormed,
    };
    StreamError::with_text(cond, e.to_string())
}

/// rxml reports `<!DOCTYPE`, `<!ENTITY` and other markup declarations as a malformed
/// comment or CDATA start, stopping at the byte after `<!`; a capital letter there is a
/// markup declaration, restricted XML (RFC 6120 §11.1). That byte is the last one the
/// failing call consumed, so the answer does not depend on how the input was chunked.
fn markup_declaration_at_error(e: &XmlError, last: Option<u8>) -> bool {
    matches!(
        e,
        XmlError::InvalidSyntax("malformed cdata or comment section start")
    ) && last.is_some_and(|b| b.is_ascii_uppercase())
}

fn head_attrs(head: &mut Option<PendingHead>) -> &mut Vec<(Option<NcName>, NcName, String)> {
    &mut head.as_mut().expect("checked by caller").attrs
}

fn policy(text: String) -> StreamError {
    StreamError::with_text(Cond::PolicyViolation, text)
}

fn undeclared_prefix(prefix: Option<&NcName>) -> StreamError {
    StreamError::with_text(
        Cond::BadNamespacePrefix,
        format!(
            "undeclared namespace prefix {:?}",
            prefix.map(NcName::as_str).unwrap_or("")
        ),
    )
}

fn internal_order() -> StreamError {
    StreamError::with_text(Cond::NotWellFormed, "attribute outside an element head")
}

mod fast;
#[cfg(test)]
mod tests;
