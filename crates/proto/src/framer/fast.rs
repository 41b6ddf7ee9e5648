//! The framer's fast path: one whole first-level element read straight from the buffer.
//!
//! Why: rxml's lexer and parser were about a third of the server's CPU when routing chat
//! (perf, issue 7), and most of the load generator's too. They read byte by byte through a
//! state machine built for any chunking; a stanza is usually whole in one read and written in
//! a small, plain subset of XML.
//!
//! What it reads: ASCII names (at most one colon), attributes in single or double quotes,
//! character data in UTF-8 with the five predefined entities and character references. It
//! drives the same tree-building steps as rxml's events ([`Framer::head_open`],
//! [`Framer::attribute`], [`Framer::head_close`], [`Framer::text`], [`Framer::foot`]), so
//! namespaces, limits and the tree have one implementation.
//!
//! What it leaves to rxml: everything else. A comment, CDATA, a processing instruction, a
//! non-ASCII name, a carriage return or tab that XML would normalise, a long name or value,
//! any error at all, a stanza larger than the limit or not yet wholly buffered: the fast
//! path undoes what it built and rxml reads the same bytes, exactly as without it. So the
//! fast path never decides an error, nor when one is found, and its one claim is that when
//! it returns an element, rxml would have returned the same element at the same point. The
//! differential test in `framer/tests.rs` and the `framer` fuzz target check that claim.
//!
//! It runs only while rxml is idle between first-level elements (`Framer::raw_idle`): rxml
//! then holds no partial token, so bytes it never sees (whole stanzas and the whitespace
//! between them) do not change what it does with the rest.

use minidom::Element;
use rxml::NcName;

use super::Framer;

/// What the fast path did.
pub(super) enum Fast {
    /// Read a whole first-level element.
    Stanza(Element),
    /// Consumed the whitespace that was buffered: wait for more input.
    NeedMore,
    /// Changed nothing past the whitespace: rxml reads on from `pos`.
    Rxml,
}

/// The reader stopped short of a whole element: the input ended inside it, or it holds
/// something outside the fast subset or an error. Either way rxml reads it. An incomplete
/// stanza is not waited for, since rxml may find an error in its first part earlier than the
/// fast path would (invalid UTF-8 as it arrives, a reserved prefix at the attribute's name);
/// a stanza split by a read is rare enough not to matter.
struct Stop;

type Step<T> = Result<T, Stop>;

/// Longest name or raw attribute value the fast path reads (rxml limits tokens to 8 KiB).
const MAX_TOKEN: usize = 1024;

impl Framer {
    /// Reads the whitespace and the next first-level element if it is wholly buffered and in
    /// the fast subset; see the module documentation.
    pub(super) fn fast_stanza(&mut self) -> Fast {
        let ws = self.buf[self.pos..]
            .iter()
            .take_while(|b| is_space(**b))
            .count();
        self.pos += ws;
        self.consumed += ws as u64;
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
            return Fast::NeedMore;
        }
        let start = self.consumed;
        let decls = self.decls.len();
        let marks = self.scope_marks.len();
        // The buffer is moved out for the read, so the tree-building steps can borrow `self`.
        let buf = std::mem::take(&mut self.buf);
        let avail = buf.len() - self.pos;
        // One byte past the limit is enough to know a stanza is too large.
        let window = avail.min(self.limits.max_stanza_bytes + 1);
        let outcome = self.fast_element(&buf[self.pos..self.pos + window], start);
        self.buf = buf;
        match outcome {
            Ok((el, used)) if used <= self.limits.max_stanza_bytes => {
                self.pos += used;
                self.consumed += used as u64;
                if self.pos == self.buf.len() {
                    self.buf.clear();
                    self.pos = 0;
                }
                #[cfg(test)]
                {
                    self.fast_count += 1;
                }
                return Fast::Stanza(el);
            }
            Ok(_) | Err(Stop) => {}
        }
        // Undo the partial tree: rxml starts from the state it left.
        self.head = None;
        self.stack.clear();
        self.decls.truncate(decls);
        self.scope_marks.truncate(marks);
        self.unit_start = None;
        self.elements = 0;
        Fast::Rxml
    }

    /// Reads the element starting at `b[0]` (a `<`) through its end tag. Returns the element
    /// and the bytes it took. `base` is the stream offset of `b[0]`.
    fn fast_element(&mut self, b: &[u8], base: u64) -> Step<(Element, usize)> {
        self.fast_tags.clear();
        if at(b, 0)? != b'<' {
            return Err(Stop);
        }
        let mut i = 0;
        loop {
            // At the `<` of a start tag.
            let tag = i;
            i += 1;
            let (n0, n1, colon) = name(b, &mut i)?;
            let (prefix, local) = qname(b, n0, n1, colon)?;
            self.head_open(base + tag as u64, prefix, local)
                .map_err(|_| Stop)?;
            let empty = self.fast_attributes(b, &mut i)?;
            self.head_close().map_err(|_| Stop)?;
            if empty {
                if let Some(done) = self.fast_foot(i)? {
                    return Ok(done);
                }
            } else {
                self.fast_tags.push((n0, n1));
            }
            // Content until the next start tag.
            loop {
                self.fast_text(b, &mut i)?;
                match at(b, i + 1)? {
                    b'/' => {
                        let (t0, t1) = self.fast_tags.pop().ok_or(Stop)?;
                        i += 2;
                        let (e0, e1, _) = name(b, &mut i)?;
                        if b[e0..e1] != b[t0..t1] {
                            return Err(Stop);
                        }
                        skip_space(b, &mut i)?;
                        if at(b, i)? != b'>' {
                            return Err(Stop);
                        }
                        i += 1;
                        if let Some(done) = self.fast_foot(i)? {
                            return Ok(done);
                        }
                    }
                    b'!' | b'?' => return Err(Stop),
                    _ => break,
                }
            }
        }
    }

    /// The attributes of a head, through its `>` or `/>`; true for `/>`.
    fn fast_attributes(&mut self, b: &[u8], i: &mut usize) -> Step<bool> {
        loop {
            let spaced = skip_space(b, i)?;
            match at(b, *i)? {
                b'>' => {
                    *i += 1;
                    return Ok(false);
                }
                b'/' => {
                    if at(b, *i + 1)? != b'>' {
                        return Err(Stop);
                    }
                    *i += 2;
                    return Ok(true);
                }
                _ if !spaced => return Err(Stop),
                _ => {}
            }
            let (n0, n1, colon) = name(b, i)?;
            skip_space(b, i)?;
            if at(b, *i)? != b'=' {
                return Err(Stop);
            }
            *i += 1;
            skip_space(b, i)?;
            let value = attribute_value(b, i)?;
            // rxml's checks on namespace declarations (Namespaces in XML 1.0 §3, reserved
            // prefixes, no prefix undeclaring), which it reports as errors.
            let reserved = match colon {
                Some(c) => {
                    &b[n0..c] == b"xmlns"
                        && (matches!(&b[c + 1..n1], b"xml" | b"xmlns")
                            || value.is_empty()
                            || value == rxml::XMLNS_XML)
                }
                None => &b[n0..n1] == b"xmlns" && value == rxml::XMLNS_XML,
            };
            if reserved {
                return Err(Stop);
            }
            let (prefix, local) = qname(b, n0, n1, colon)?;
            self.attribute(prefix, local, value).map_err(|_| Stop)?;
        }
    }

    /// Character data up to the next `<`, whose next byte must be buffered too.
    fn fast_text(&mut self, b: &[u8], i: &mut usize) -> Step<()> {
        let text = read_chars(b, i, None)?;
        at(b, *i + 1)?;
        if !text.is_empty() {
            self.text(text).map_err(|_| Stop)?;
        }
        Ok(())
    }

    /// Closes the innermost element; the stanza and its length once the first-level one
    /// closes.
    fn fast_foot(&mut self, i: usize) -> Step<Option<(Element, usize)>> {
        match self.foot() {
            Ok(Some(super::StreamEvent::Stanza(el))) => Ok(Some((el, i))),
            Ok(None) => Ok(None),
            _ => Err(Stop),
        }
    }
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// The byte at `i`; [`Stop`] past the end of the input.
fn at(b: &[u8], i: usize) -> Step<u8> {
    b.get(i).copied().ok_or(Stop)
}

/// Skips whitespace; whether there was any.
fn skip_space(b: &[u8], i: &mut usize) -> Step<bool> {
    let from = *i;
    while is_space(at(b, *i)?) {
        *i += 1;
    }
    Ok(*i > from)
}

fn name_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_'
}

/// An ASCII name: its range and where its one colon is. Anything else (non-ASCII, two
/// colons, an empty prefix or local part) is rxml's to accept or refuse.
fn name(b: &[u8], i: &mut usize) -> Step<(usize, usize, Option<usize>)> {
    let start = *i;
    if !name_start(at(b, start)?) {
        return Err(Stop);
    }
    let mut colon = None;
    *i += 1;
    loop {
        let c = at(b, *i)?;
        if c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.') {
            *i += 1;
        } else if c == b':' && colon.is_none() && name_start(at(b, *i + 1)?) {
            colon = Some(*i);
            *i += 2;
        } else if is_space(c) || matches!(c, b'=' | b'>' | b'/') {
            break;
        } else {
            return Err(Stop);
        }
        if *i - start > MAX_TOKEN {
            return Err(Stop);
        }
    }
    Ok((start, *i, colon))
}

fn qname(b: &[u8], n0: usize, n1: usize, colon: Option<usize>) -> Step<(Option<NcName>, NcName)> {
    let part = |from: usize, to: usize| {
        let s = std::str::from_utf8(&b[from..to]).map_err(|_| Stop)?;
        NcName::try_from(s).map_err(|_| Stop)
    };
    match colon {
        Some(c) => Ok((Some(part(n0, c)?), part(c + 1, n1)?)),
        None => Ok((None, part(n0, n1)?)),
    }
}

/// A quoted attribute value, entities expanded. Values XML would normalise (literal tab,
/// newline or carriage return) are rxml's.
fn attribute_value(b: &[u8], i: &mut usize) -> Step<String> {
    let quote = at(b, *i)?;
    if quote != b'"' && quote != b'\'' {
        return Err(Stop);
    }
    *i += 1;
    let from = *i;
    let value = read_chars(b, i, Some(quote))?;
    if *i - from > MAX_TOKEN {
        return Err(Stop);
    }
    *i += 1;
    Ok(value)
}

/// Character data up to `<` (content) or the closing quote (attribute value), not consumed.
/// Refuses what rxml would refuse or rewrite: characters outside XML's Char, `]]>` in
/// content, `<` in a value, carriage returns, and whitespace other than spaces in a value.
fn read_chars(b: &[u8], i: &mut usize, quote: Option<u8>) -> Step<String> {
    let mut out = String::new();
    let mut seg = *i;
    let mut high = false;
    loop {
        let c = at(b, *i)?;
        match c {
            b'<' if quote.is_none() => break,
            b'<' => return Err(Stop),
            c if Some(c) == quote => break,
            b'&' => {
                push_checked(&mut out, &b[seg..*i], high)?;
                high = false;
                *i += 1;
                out.push(reference(b, i)?);
                seg = *i;
            }
            b']' if quote.is_none() => {
                if at(b, *i + 1)? == b']' && at(b, *i + 2)? == b'>' {
                    return Err(Stop);
                }
                *i += 1;
            }
            b'\t' | b'\n' if quote.is_none() => *i += 1,
            0..=0x1f => return Err(Stop),
            0x80.. => {
                high = true;
                *i += 1;
            }
            _ => *i += 1,
        }
    }
    push_checked(&mut out, &b[seg..*i], high)?;
    Ok(out)
}

/// Appends a run of raw character data after checking it is UTF-8 of XML characters.
fn push_checked(out: &mut String, raw: &[u8], high: bool) -> Step<()> {
    let s = std::str::from_utf8(raw).map_err(|_| Stop)?;
    if high && s.chars().any(|c| matches!(c, '\u{FFFE}' | '\u{FFFF}')) {
        return Err(Stop);
    }
    out.push_str(s);
    Ok(())
}

/// A reference after its `&`, through its `;`: one of the five predefined entities or a
/// character reference to a character that is not a control character.
fn reference(b: &[u8], i: &mut usize) -> Step<char> {
    let from = *i;
    loop {
        let c = at(b, *i)?;
        if c == b';' {
            break;
        }
        if !(c.is_ascii_alphanumeric() || c == b'#') || *i - from > 10 {
            return Err(Stop);
        }
        *i += 1;
    }
    let body = &b[from..*i];
    *i += 1;
    let c = match body {
        b"lt" => '<',
        b"gt" => '>',
        b"amp" => '&',
        b"quot" => '"',
        b"apos" => '\'',
        [b'#', b'x', hex @ ..] => char_ref(hex, 16)?,
        [b'#', dec @ ..] => char_ref(dec, 10)?,
        _ => return Err(Stop),
    };
    Ok(c)
}

fn char_ref(digits: &[u8], radix: u32) -> Step<char> {
    if digits.is_empty() || digits.len() > 8 {
        return Err(Stop);
    }
    let s = std::str::from_utf8(digits).map_err(|_| Stop)?;
    let n = u32::from_str_radix(s, radix).map_err(|_| Stop)?;
    match char::from_u32(n) {
        Some(c) if c >= ' ' && !matches!(c, '\u{FFFE}' | '\u{FFFF}') => Ok(c),
        _ => Err(Stop),
    }
}
