//! Message/CPIM (RFC 3862): parser and writer.
//!
//! Layout (RFC 3862 §2, §3): optional outer MIME headers (`Content-type: Message/CPIM`), a blank
//! line, the CPIM message headers, a blank line, then the encapsulated MIME entity (its own
//! headers, a blank line, its content). Every line of both header blocks ends in CRLF.
//!
//! What this module implements:
//! - the header grammar of RFC 3862 §3.1–§3.4: case-sensitive `[prefix.]Name`, `;param=value`
//!   parameters (`;lang=` for Subject), a single SP before the value, no folding, UTF-8;
//! - the header-value escape mechanism of §3.3 (`\uXXXX`, `\b \t \n \r \" \' \\`): values are
//!   stored decoded and re-escaped on output, control characters are always escaped;
//! - the headers of §4: From, To, cc (`[Formal-name] <URI>`), DateTime (RFC 3339), Subject
//!   (`;lang=`), NS (`[prefix] <URI>`), Require (comma-separated header names); any other header
//!   is kept as an [`ExtensionHeader`], and its prefix must be declared by an NS header;
//! - the encapsulated entity kept **byte for byte** ([`MimeEntity::as_bytes`]), because RFC 3923
//!   signs it, with its RFC 2045 headers parsed for reading.
//!
//! What it does not do: MIME multipart parsing, transfer decodings (base64, quoted-printable),
//! charset conversion. Those are the caller's (the e2e crate handles multipart/signed).
//!
//! Leniency, on input only: a quoted Formal-name may be followed by a space before `<`
//! (`"Depressed Donkey" <im:..>`), unquoted Formal-name words may contain non-ASCII letters, and
//! Require lists may have spaces after commas. The writer emits the strict grammar.

use std::fmt;

use crate::datetime::DateTime;

/// The default namespace of unprefixed header names (RFC 3862 §3.4, §7.1).
pub const CPIM_HEADERS_NS: &str = "urn:ietf:params:cpim-headers:";

/// Why a Message/CPIM object was rejected. `line` is 1-based and counts from the first byte
/// handed to the parser.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CpimError {
    #[error("line {line}: line ends with a bare LF or CR; Message/CPIM header lines end in CRLF")]
    BareLineEnding { line: usize },
    #[error("header block is not terminated by an empty line")]
    UnterminatedHeaders,
    #[error("the message has no encapsulated MIME entity after the header block")]
    MissingEntity,
    #[error("line {line}: header is not valid UTF-8")]
    NotUtf8 { line: usize },
    #[error("line {line}: malformed header: {reason}")]
    MalformedHeader { line: usize, reason: &'static str },
    #[error("line {line}: header continuation lines (folding) are not allowed in Message/CPIM")]
    Folding { line: usize },
    #[error("line {line}: invalid header name {name:?}")]
    BadHeaderName { line: usize, name: String },
    #[error("line {line}: header {name} takes no parameter {param:?}")]
    UnexpectedParameter {
        line: usize,
        name: String,
        param: String,
    },
    #[error("line {line}: bad escape sequence in header value")]
    BadEscape { line: usize },
    #[error("line {line}: raw control character {ch:?} in header value (must be escaped)")]
    ControlCharacter { line: usize, ch: char },
    #[error("line {line}: malformed address (expected [Formal-name] <URI>)")]
    BadAddress { line: usize },
    #[error("line {line}: invalid DateTime {value:?}")]
    BadDateTime { line: usize, value: String },
    #[error("line {line}: invalid language tag {value:?}")]
    BadLanguageTag { line: usize, value: String },
    #[error("line {line}: header prefix {prefix:?} is not declared by an NS header")]
    UndeclaredPrefix { line: usize, prefix: String },
    #[error("more than one From header")]
    DuplicateFrom,
    #[error("outer MIME Content-Type is {0:?}, not message/cpim")]
    NotMessageCpim(String),
    #[error("malformed MIME header in the encapsulated entity: {0}")]
    BadMimeHeader(String),
    #[error("invalid value: {0}")]
    InvalidValue(String),
}

// ---------------------------------------------------------------------------------------------
// Character classes (RFC 3862 §3.4)

/// NAMECHAR: `%x21 / %x23-27 / %x2a-2b / %x2d / %x5e-60 / %x7c / %x7e / ALPHA / DIGIT`.
fn is_namechar(b: u8) -> bool {
    matches!(b, 0x21 | 0x23..=0x27 | 0x2a | 0x2b | 0x2d | 0x5e..=0x60 | 0x7c | 0x7e)
        || b.is_ascii_alphanumeric()
}

/// TOKENCHAR: NAMECHAR / `.`
fn is_tokenchar(b: u8) -> bool {
    is_namechar(b) || b == b'.'
}

fn is_name(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_namechar)
}

fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_tokenchar)
}

/// RFC 3066 Language-Tag: `1*8ALPHA *("-" 1*8(ALPHA / DIGIT))`.
pub(crate) fn is_language_tag(s: &str) -> bool {
    let mut parts = s.split('-');
    let first = parts.next().unwrap_or("");
    (1..=8).contains(&first.len())
        && first.bytes().all(|b| b.is_ascii_alphabetic())
        && parts.all(|p| (1..=8).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// A URI as RFC 3862 needs it: a scheme, then printable ASCII without `<`, `>`, `"` or space.
fn is_uri(s: &str) -> bool {
    let Some((scheme, rest)) = s.split_once(':') else {
        return false;
    };
    let mut sb = scheme.bytes();
    sb.next().is_some_and(|b| b.is_ascii_alphabetic())
        && sb.all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
        && !rest.is_empty()
        && rest
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"<>\"\\".contains(&b))
}

// ---------------------------------------------------------------------------------------------
// Escapes (RFC 3862 §3.3)

/// Escapes a header value: `\` and control characters (U+0000–U+001F, U+007F) always.
pub(crate) fn escape_value(s: &str, out: &mut String) {
    for c in s.chars() {
        escape_char(c, out);
    }
}

fn escape_char(c: char, out: &mut String) {
    match c {
        '\\' => out.push_str("\\\\"),
        '\u{8}' => out.push_str("\\b"),
        '\t' => out.push_str("\\t"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        c if (c as u32) < 0x20 || c == '\u{7f}' => out.push_str(&format!("\\u{:04x}", c as u32)),
        c => out.push(c),
    }
}

/// Writes a quoted String: `"` and `\` and control characters escaped.
fn quote_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        if c == '"' {
            out.push_str("\\\"");
        } else {
            escape_char(c, out);
        }
    }
    out.push('"');
}

/// Decodes escapes in `s`. Rejects raw control characters and unknown escapes.
fn unescape(s: &str, line: usize) -> Result<String, CpimError> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            let decoded = match chars.next() {
                Some('b') => '\u{8}',
                Some('t') => '\t',
                Some('n') => '\n',
                Some('r') => '\r',
                Some('"') => '"',
                Some('\'') => '\'',
                Some('\\') => '\\',
                Some('u') => {
                    let hex: String = chars.by_ref().take(4).collect();
                    if hex.len() != 4 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                        return Err(CpimError::BadEscape { line });
                    }
                    let cp =
                        u32::from_str_radix(&hex, 16).map_err(|_| CpimError::BadEscape { line })?;
                    char::from_u32(cp).ok_or(CpimError::BadEscape { line })?
                }
                _ => return Err(CpimError::BadEscape { line }),
            };
            out.push(decoded);
        } else if c.is_ascii_control() {
            return Err(CpimError::ControlCharacter { line, ch: c });
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Header types

/// A header name: `[Name-prefix "."] Name`, case-sensitive (RFC 3862 §3.4).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HeaderName {
    prefix: Option<String>,
    name: String,
}

impl HeaderName {
    /// Builds a header name; both parts must be RFC 3862 `Name`s (no `.`, no space).
    pub fn new(prefix: Option<&str>, name: &str) -> Result<Self, CpimError> {
        if !is_name(name) || prefix.is_some_and(|p| !is_name(p)) {
            return Err(CpimError::InvalidValue(format!(
                "header name {prefix:?}.{name:?}"
            )));
        }
        Ok(HeaderName {
            prefix: prefix.map(str::to_owned),
            name: name.to_owned(),
        })
    }

    /// Parses `Name` or `Prefix.Name`.
    pub fn parse(s: &str) -> Result<Self, CpimError> {
        match s.split_once('.') {
            Some((p, n)) => HeaderName::new(Some(p), n),
            None => HeaderName::new(None, s),
        }
    }

    /// The namespace prefix, if any.
    pub fn prefix(&self) -> Option<&str> {
        self.prefix.as_deref()
    }

    /// The local name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// True for the unprefixed headers RFC 3862 §4 defines (From, To, cc, DateTime, Subject,
    /// NS, Require): the ones this library understands.
    pub fn is_standard(&self) -> bool {
        self.prefix.is_none()
            && matches!(
                self.name.as_str(),
                "From" | "To" | "cc" | "DateTime" | "Subject" | "NS" | "Require"
            )
    }
}

impl fmt::Display for HeaderName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.prefix {
            Some(p) => write!(f, "{p}.{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// `[Formal-name] <URI>`: the value of From, To and cc (RFC 3862 §4.1–§4.3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Address {
    /// Display name, decoded.
    formal_name: Option<String>,
    uri: String,
}

impl Address {
    /// `uri` must have a scheme and no spaces or `<>"\`; `formal_name` must not be empty.
    pub fn new(formal_name: Option<&str>, uri: &str) -> Result<Self, CpimError> {
        if !is_uri(uri) {
            return Err(CpimError::InvalidValue(format!("URI {uri:?}")));
        }
        if formal_name.is_some_and(str::is_empty) {
            return Err(CpimError::InvalidValue("empty Formal-name".into()));
        }
        Ok(Address {
            formal_name: formal_name.map(str::to_owned),
            uri: uri.to_owned(),
        })
    }

    /// The display name, if any.
    pub fn formal_name(&self) -> Option<&str> {
        self.formal_name.as_deref()
    }

    /// The URI between `<` and `>`.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    fn write(&self, out: &mut String) {
        if let Some(name) = &self.formal_name {
            // Formal-name = 1*( Token SP ) / String
            let words: Vec<&str> = name.split(' ').collect();
            if words.iter().all(|w| is_token(w)) {
                for w in words {
                    out.push_str(w);
                    out.push(' ');
                }
            } else {
                quote_string(name, out);
            }
        }
        out.push('<');
        out.push_str(&self.uri);
        out.push('>');
    }

    fn parse(value: &str, line: usize) -> Result<Self, CpimError> {
        let bad = || CpimError::BadAddress { line };
        let (formal_name, rest) = if let Some(quoted) = value.strip_prefix('"') {
            let mut end = None;
            let mut escaped = false;
            for (i, c) in quoted.char_indices() {
                match (escaped, c) {
                    (true, _) => escaped = false,
                    (false, '\\') => escaped = true,
                    (false, '"') => {
                        end = Some(i);
                        break;
                    }
                    _ => {}
                }
            }
            let end = end.ok_or_else(bad)?;
            let name = unescape(&quoted[..end], line)?;
            let rest = &quoted[end + 1..];
            (Some(name), rest.strip_prefix(' ').unwrap_or(rest))
        } else {
            let lt = value.find('<').ok_or_else(bad)?;
            let words = &value[..lt];
            if words.is_empty() {
                (None, value)
            } else {
                // 1*( Token SP ): every word followed by exactly one space.
                let inner = words.strip_suffix(' ').ok_or_else(bad)?;
                if !inner.split(' ').all(|w| {
                    !w.is_empty() && w.chars().all(|c| !c.is_ascii() || is_tokenchar(c as u8))
                }) {
                    return Err(bad());
                }
                (Some(inner.to_owned()), &value[lt..])
            }
        };
        let uri = rest
            .strip_prefix('<')
            .and_then(|r| r.strip_suffix('>'))
            .ok_or_else(bad)?;
        if !is_uri(uri) {
            return Err(bad());
        }
        Ok(Address {
            formal_name,
            uri: uri.to_owned(),
        })
    }
}

/// A Subject header: text with an optional `;lang=` (RFC 3862 §4.5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subject {
    lang: Option<String>,
    text: String,
}

impl Subject {
    /// `lang` must be an RFC 3066 language tag.
    pub fn new(lang: Option<&str>, text: &str) -> Result<Self, CpimError> {
        if let Some(l) = lang {
            if !is_language_tag(l) {
                return Err(CpimError::InvalidValue(format!("language tag {l:?}")));
            }
        }
        Ok(Subject {
            lang: lang.map(str::to_owned),
            text: text.to_owned(),
        })
    }

    /// The language, if given.
    pub fn lang(&self) -> Option<&str> {
        self.lang.as_deref()
    }

    /// The decoded subject text.
    pub fn text(&self) -> &str {
        &self.text
    }
}

/// An NS header: declares `prefix` (or, without one, the default namespace) as `uri`
/// (RFC 3862 §4.6).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NsDecl {
    prefix: Option<String>,
    uri: String,
}

impl NsDecl {
    /// `prefix` must be an RFC 3862 Name, `uri` a URI.
    pub fn new(prefix: Option<&str>, uri: &str) -> Result<Self, CpimError> {
        if prefix.is_some_and(|p| !is_name(p)) || !is_uri(uri) {
            return Err(CpimError::InvalidValue(format!("NS {prefix:?} <{uri}>")));
        }
        Ok(NsDecl {
            prefix: prefix.map(str::to_owned),
            uri: uri.to_owned(),
        })
    }

    /// The declared prefix; `None` declares the default namespace.
    pub fn prefix(&self) -> Option<&str> {
        self.prefix.as_deref()
    }

    /// The namespace URI.
    pub fn uri(&self) -> &str {
        &self.uri
    }
}

/// A header parameter other than `lang` on a header this library does not know.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Param {
    name: String,
    /// Decoded value (a Token, Number or String on the wire).
    value: String,
}

impl Param {
    /// `name` must be an RFC 3862 Name.
    pub fn new(name: &str, value: &str) -> Result<Self, CpimError> {
        if !is_name(name) {
            return Err(CpimError::InvalidValue(format!("parameter name {name:?}")));
        }
        Ok(Param {
            name: name.to_owned(),
            value: value.to_owned(),
        })
    }

    /// The parameter name (`lang` included).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The decoded value.
    pub fn value(&self) -> &str {
        &self.value
    }
}

/// Any header this library does not interpret (unknown unprefixed or namespace-prefixed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExtensionHeader {
    name: HeaderName,
    params: Vec<Param>,
    /// Decoded value.
    value: String,
}

impl ExtensionHeader {
    /// `name` must not be one of the standard headers.
    pub fn new(name: HeaderName, params: Vec<Param>, value: &str) -> Result<Self, CpimError> {
        if name.is_standard() {
            return Err(CpimError::InvalidValue(format!(
                "{name} is a standard header"
            )));
        }
        Ok(ExtensionHeader {
            name,
            params,
            value: value.to_owned(),
        })
    }

    /// The header name.
    pub fn name(&self) -> &HeaderName {
        &self.name
    }

    /// Its parameters, in order.
    pub fn params(&self) -> &[Param] {
        &self.params
    }

    /// The decoded value.
    pub fn value(&self) -> &str {
        &self.value
    }
}

/// One Message/CPIM header, in the order it appears.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Header {
    From(Address),
    To(Address),
    Cc(Address),
    DateTime(DateTime),
    Subject(Subject),
    Ns(NsDecl),
    Require(Vec<HeaderName>),
    Extension(ExtensionHeader),
}

impl Header {
    fn write(&self, out: &mut String) {
        match self {
            Header::From(a) => {
                out.push_str("From: ");
                a.write(out);
            }
            Header::To(a) => {
                out.push_str("To: ");
                a.write(out);
            }
            Header::Cc(a) => {
                out.push_str("cc: ");
                a.write(out);
            }
            Header::DateTime(t) => {
                out.push_str("DateTime: ");
                out.push_str(&t.to_string());
            }
            Header::Subject(s) => {
                out.push_str("Subject:");
                if let Some(lang) = &s.lang {
                    out.push_str(";lang=");
                    out.push_str(lang);
                }
                out.push(' ');
                escape_value(&s.text, out);
            }
            Header::Ns(ns) => {
                out.push_str("NS: ");
                if let Some(p) = &ns.prefix {
                    out.push_str(p);
                    out.push(' ');
                }
                out.push('<');
                out.push_str(&ns.uri);
                out.push('>');
            }
            Header::Require(names) => {
                out.push_str("Require: ");
                let joined: Vec<String> = names.iter().map(ToString::to_string).collect();
                out.push_str(&joined.join(","));
            }
            Header::Extension(h) => {
                out.push_str(&h.name.to_string());
                out.push(':');
                for p in &h.params {
                    out.push(';');
                    out.push_str(&p.name);
                    out.push('=');
                    if is_token(&p.value) {
                        out.push_str(&p.value);
                    } else {
                        quote_string(&p.value, out);
                    }
                }
                out.push(' ');
                escape_value(&h.value, out);
            }
        }
        out.push_str("\r\n");
    }
}

// ---------------------------------------------------------------------------------------------
// MIME entity

/// A MIME header of the encapsulated entity (RFC 2045; names compare case-insensitively).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MimeHeader {
    name: String,
    /// Unfolded value, surrounding whitespace trimmed.
    value: String,
}

impl MimeHeader {
    /// The header name as written.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The unfolded value.
    pub fn value(&self) -> &str {
        &self.value
    }
}

/// A parsed `Content-Type` (RFC 2045 §5.1): lower-cased `type/subtype` and parameters
/// (names lower-cased, values unquoted).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContentType {
    mime_type: String,
    params: Vec<(String, String)>,
}

impl ContentType {
    /// Parses `type/subtype *(; name=value)`.
    pub fn parse(s: &str) -> Result<Self, CpimError> {
        let bad = || CpimError::BadMimeHeader(format!("Content-Type {s:?}"));
        let mut rest = s.trim();
        let end = rest.find(';').unwrap_or(rest.len());
        let mime_type = rest[..end].trim().to_ascii_lowercase();
        let (ty, sub) = mime_type.split_once('/').ok_or_else(bad)?;
        let mime_token = |t: &str| {
            !t.is_empty()
                && t.bytes()
                    .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?=".contains(&b))
        };
        if !mime_token(ty) || !mime_token(sub) {
            return Err(bad());
        }
        rest = &rest[end..];
        let mut params = Vec::new();
        while let Some(r) = rest.strip_prefix(';') {
            let r = r.trim_start();
            if r.is_empty() {
                break;
            }
            let eq = r.find('=').ok_or_else(bad)?;
            let name = r[..eq].trim().to_ascii_lowercase();
            let r = r[eq + 1..].trim_start();
            let (value, after) = if let Some(q) = r.strip_prefix('"') {
                let mut value = String::new();
                let mut chars = q.char_indices();
                let mut end = None;
                while let Some((i, c)) = chars.next() {
                    match c {
                        '\\' => value.push(chars.next().ok_or_else(bad)?.1),
                        '"' => {
                            end = Some(i);
                            break;
                        }
                        c => value.push(c),
                    }
                }
                (value, &q[end.ok_or_else(bad)? + 1..])
            } else {
                let e = r.find(';').unwrap_or(r.len());
                (r[..e].trim().to_owned(), &r[e..])
            };
            if name.is_empty() {
                return Err(bad());
            }
            params.push((name, value));
            rest = after.trim_start();
        }
        if !rest.is_empty() {
            return Err(bad());
        }
        Ok(ContentType { mime_type, params })
    }

    /// `type/subtype`, lower case.
    pub fn mime_type(&self) -> &str {
        &self.mime_type
    }

    /// A parameter's value by (case-insensitive) name.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The `charset` parameter.
    pub fn charset(&self) -> Option<&str> {
        self.param("charset")
    }
}

/// The encapsulated MIME entity of a Message/CPIM object, kept byte for byte.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MimeEntity {
    /// Headers, blank line and content exactly as received or built.
    bytes: Vec<u8>,
    headers: Vec<MimeHeader>,
    /// Offset of the content in `bytes`.
    body_offset: usize,
}

impl MimeEntity {
    /// Parses an entity: RFC 2045 headers (CRLF, folding allowed), a blank line, the content.
    /// The bytes are kept exactly.
    pub fn parse(bytes: &[u8]) -> Result<Self, CpimError> {
        let (headers, body_offset) = parse_mime_headers(bytes, 1)?;
        Ok(MimeEntity {
            bytes: bytes.to_vec(),
            headers,
            body_offset,
        })
    }

    /// Builds an entity from `(name, value)` headers and content. Names must be RFC 5322 field
    /// names; values must not contain CR or LF.
    pub fn new(headers: &[(&str, &str)], body: &[u8]) -> Result<Self, CpimError> {
        let mut bytes = Vec::new();
        for (name, value) in headers {
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
                return Err(CpimError::InvalidValue(format!(
                    "MIME header name {name:?}"
                )));
            }
            if value.contains(['\r', '\n']) {
                return Err(CpimError::InvalidValue(format!(
                    "MIME header value {value:?}"
                )));
            }
            bytes.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
        }
        bytes.extend_from_slice(b"\r\n");
        let body_offset = bytes.len();
        bytes.extend_from_slice(body);
        MimeEntity::parse(&bytes).map(|e| MimeEntity { body_offset, ..e })
    }

    /// `Content-type: text/plain; charset=utf-8` around `text` (RFC 3922 §4).
    pub fn text_plain_utf8(text: &str) -> Self {
        MimeEntity::new(
            &[("Content-type", "text/plain; charset=utf-8")],
            text.as_bytes(),
        )
        .expect("constant headers are valid")
    }

    /// The whole entity (headers, blank line, content) as it is on the wire.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The parsed headers, in order.
    pub fn headers(&self) -> &[MimeHeader] {
        &self.headers
    }

    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.as_str())
    }

    /// The Content-Type; RFC 2045 §5.2's default `text/plain; charset=us-ascii` when absent.
    pub fn content_type(&self) -> Result<ContentType, CpimError> {
        ContentType::parse(
            self.header("Content-Type")
                .unwrap_or("text/plain; charset=us-ascii"),
        )
    }

    /// The content after the blank line.
    pub fn body(&self) -> &[u8] {
        &self.bytes[self.body_offset..]
    }
}

/// Numbered header lines (1-based line number, line without CRLF).
type HeaderLines<'a> = Vec<(usize, &'a [u8])>;

/// Splits `bytes` into CRLF-terminated lines up to the first empty one. Returns the lines
/// (without CRLF, with their 1-based line numbers) and the offset just past the empty line.
fn header_lines(bytes: &[u8], first_line: usize) -> Result<(HeaderLines<'_>, usize), CpimError> {
    let mut lines = Vec::new();
    let mut pos = 0;
    let mut line_no = first_line;
    loop {
        let Some(nl) = bytes[pos..].iter().position(|&b| b == b'\n') else {
            return Err(if bytes[pos..].contains(&b'\r') {
                CpimError::BareLineEnding { line: line_no }
            } else {
                CpimError::UnterminatedHeaders
            });
        };
        let line = &bytes[pos..pos + nl];
        let Some(line) = line.strip_suffix(b"\r") else {
            return Err(CpimError::BareLineEnding { line: line_no });
        };
        if line.contains(&b'\r') {
            return Err(CpimError::BareLineEnding { line: line_no });
        }
        pos += nl + 1;
        if line.is_empty() {
            return Ok((lines, pos));
        }
        lines.push((line_no, line));
        line_no += 1;
    }
}

fn parse_mime_headers(
    bytes: &[u8],
    first_line: usize,
) -> Result<(Vec<MimeHeader>, usize), CpimError> {
    let (lines, end) = header_lines(bytes, first_line).map_err(|e| match e {
        CpimError::UnterminatedHeaders => {
            CpimError::BadMimeHeader("headers not terminated by an empty line".into())
        }
        e => e,
    })?;
    let mut headers: Vec<MimeHeader> = Vec::new();
    for (line_no, line) in lines {
        let line = std::str::from_utf8(line).map_err(|_| CpimError::NotUtf8 { line: line_no })?;
        if line.starts_with([' ', '\t']) {
            let last = headers.last_mut().ok_or_else(|| {
                CpimError::BadMimeHeader(format!("line {line_no}: continuation without a header"))
            })?;
            last.value.push(' ');
            last.value.push_str(line.trim());
            continue;
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| CpimError::BadMimeHeader(format!("line {line_no}: no colon")))?;
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(CpimError::BadMimeHeader(format!(
                "line {line_no}: bad field name {name:?}"
            )));
        }
        headers.push(MimeHeader {
            name: name.to_owned(),
            value: value.trim().to_owned(),
        });
    }
    Ok((headers, end))
}

// ---------------------------------------------------------------------------------------------
// The message

/// A Message/CPIM object: the ordered header block and the encapsulated entity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CpimMessage {
    headers: Vec<Header>,
    entity: MimeEntity,
}

impl CpimMessage {
    /// A message with no headers yet around `entity`. Add headers with [`CpimMessage::push`].
    pub fn new(entity: MimeEntity) -> Self {
        CpimMessage {
            headers: Vec::new(),
            entity,
        }
    }

    /// Appends a header. Fails on a second From, or on a prefixed extension header whose
    /// prefix no earlier NS header declares.
    pub fn push(&mut self, header: Header) -> Result<&mut Self, CpimError> {
        match &header {
            Header::From(_) if self.from().is_some() => return Err(CpimError::DuplicateFrom),
            Header::Extension(h) => {
                if let Some(prefix) = h.name.prefix() {
                    if self.namespace_uri(Some(prefix)).is_none() {
                        return Err(CpimError::UndeclaredPrefix {
                            line: 0,
                            prefix: prefix.to_owned(),
                        });
                    }
                }
            }
            _ => {}
        }
        self.headers.push(header);
        Ok(self)
    }

    /// Parses the body of a `message/cpim` MIME part: headers, blank line, entity. This is what
    /// a SIP MESSAGE with `Content-Type: message/cpim` carries.
    pub fn parse(bytes: &[u8]) -> Result<Self, CpimError> {
        Self::parse_from_line(bytes, 1)
    }

    /// Parses a complete MIME entity whose own headers say `Content-Type: message/cpim`
    /// (the form RFC 3923 signs and the form RFC 3922 §4 shows).
    pub fn parse_mime(bytes: &[u8]) -> Result<Self, CpimError> {
        let (headers, offset) = parse_mime_headers(bytes, 1)?;
        let ct = headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("Content-Type"))
            .ok_or_else(|| CpimError::NotMessageCpim(String::new()))?;
        let parsed = ContentType::parse(&ct.value)?;
        if parsed.mime_type() != "message/cpim" {
            return Err(CpimError::NotMessageCpim(ct.value.clone()));
        }
        let skipped = bytes[..offset].iter().filter(|&&b| b == b'\n').count();
        Self::parse_from_line(&bytes[offset..], skipped + 1)
    }

    fn parse_from_line(bytes: &[u8], first_line: usize) -> Result<Self, CpimError> {
        let (lines, offset) = header_lines(bytes, first_line)?;
        let mut raw = Vec::with_capacity(lines.len());
        for (line_no, line) in &lines {
            let line =
                std::str::from_utf8(line).map_err(|_| CpimError::NotUtf8 { line: *line_no })?;
            raw.push((*line_no, line));
        }
        // NS declarations may appear anywhere in the block; collect them first.
        let mut declared: Vec<String> = Vec::new();
        let mut headers = Vec::with_capacity(raw.len());
        for &(line_no, line) in &raw {
            let header = parse_header(line, line_no)?;
            if let Header::Ns(ns) = &header {
                if let Some(p) = &ns.prefix {
                    declared.push(p.clone());
                }
            }
            headers.push((line_no, header));
        }
        let mut from_seen = false;
        for (line_no, h) in &headers {
            match h {
                Header::From(_) if from_seen => return Err(CpimError::DuplicateFrom),
                Header::From(_) => from_seen = true,
                Header::Extension(e) => {
                    if let Some(p) = e.name.prefix() {
                        if !declared.iter().any(|d| d == p) {
                            return Err(CpimError::UndeclaredPrefix {
                                line: *line_no,
                                prefix: p.to_owned(),
                            });
                        }
                    }
                }
                _ => {}
            }
        }
        let rest = &bytes[offset..];
        if rest.is_empty() {
            return Err(CpimError::MissingEntity);
        }
        let entity_first_line = first_line + lines.len() + 1;
        let (mime_headers, body_offset) = parse_mime_headers(rest, entity_first_line)?;
        Ok(CpimMessage {
            headers: headers.into_iter().map(|(_, h)| h).collect(),
            entity: MimeEntity {
                bytes: rest.to_vec(),
                headers: mime_headers,
                body_offset,
            },
        })
    }

    /// The `message/cpim` body: headers, blank line, entity (CRLF line ends).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut head = String::new();
        for h in &self.headers {
            h.write(&mut head);
        }
        head.push_str("\r\n");
        let mut out = head.into_bytes();
        out.extend_from_slice(self.entity.as_bytes());
        out
    }

    /// The complete MIME entity: `Content-type: Message/CPIM`, a blank line, then
    /// [`CpimMessage::to_bytes`]. This is the object RFC 3923 signs.
    pub fn to_mime_bytes(&self) -> Vec<u8> {
        let mut out = b"Content-type: Message/CPIM\r\n\r\n".to_vec();
        out.extend_from_slice(&self.to_bytes());
        out
    }

    /// All headers, in order.
    pub fn headers(&self) -> &[Header] {
        &self.headers
    }

    /// The encapsulated entity.
    pub fn entity(&self) -> &MimeEntity {
        &self.entity
    }

    /// The From header.
    pub fn from(&self) -> Option<&Address> {
        self.headers.iter().find_map(|h| match h {
            Header::From(a) => Some(a),
            _ => None,
        })
    }

    /// Every To header, in order.
    pub fn to(&self) -> impl Iterator<Item = &Address> {
        self.headers.iter().filter_map(|h| match h {
            Header::To(a) => Some(a),
            _ => None,
        })
    }

    /// Every cc header, in order.
    pub fn cc(&self) -> impl Iterator<Item = &Address> {
        self.headers.iter().filter_map(|h| match h {
            Header::Cc(a) => Some(a),
            _ => None,
        })
    }

    /// The first DateTime header.
    pub fn date_time(&self) -> Option<&DateTime> {
        self.headers.iter().find_map(|h| match h {
            Header::DateTime(t) => Some(t),
            _ => None,
        })
    }

    /// Every Subject header, in order.
    pub fn subjects(&self) -> impl Iterator<Item = &Subject> {
        self.headers.iter().filter_map(|h| match h {
            Header::Subject(s) => Some(s),
            _ => None,
        })
    }

    /// Every header name listed by Require headers.
    pub fn required(&self) -> impl Iterator<Item = &HeaderName> {
        self.headers
            .iter()
            .filter_map(|h| match h {
                Header::Require(n) => Some(n.iter()),
                _ => None,
            })
            .flatten()
    }

    /// Every extension header, in order.
    pub fn extensions(&self) -> impl Iterator<Item = &ExtensionHeader> {
        self.headers.iter().filter_map(|h| match h {
            Header::Extension(e) => Some(e),
            _ => None,
        })
    }

    /// The namespace URI a prefix stands for (`None` = unprefixed names: the last NS without
    /// prefix, else [`CPIM_HEADERS_NS`]).
    pub fn namespace_uri(&self, prefix: Option<&str>) -> Option<&str> {
        let declared = self.headers.iter().rev().find_map(|h| match h {
            Header::Ns(ns) if ns.prefix.as_deref() == prefix => Some(ns.uri.as_str()),
            _ => None,
        });
        match (declared, prefix) {
            (Some(uri), _) => Some(uri),
            (None, None) => Some(CPIM_HEADERS_NS),
            (None, Some(_)) => None,
        }
    }
}

/// Parses one header line (without CRLF).
fn parse_header(line: &str, line_no: usize) -> Result<Header, CpimError> {
    if line.starts_with([' ', '\t']) {
        return Err(CpimError::Folding { line: line_no });
    }
    let colon = line.find(':').ok_or(CpimError::MalformedHeader {
        line: line_no,
        reason: "no colon",
    })?;
    let name_str = &line[..colon];
    let name = HeaderName::parse(name_str).map_err(|_| CpimError::BadHeaderName {
        line: line_no,
        name: name_str.to_owned(),
    })?;
    let mut rest = &line[colon + 1..];
    // Header-parameters = *( ";" Parameter )
    let mut params: Vec<Param> = Vec::new();
    while let Some(r) = rest.strip_prefix(';') {
        let eq = r.find('=').ok_or(CpimError::MalformedHeader {
            line: line_no,
            reason: "parameter without '='",
        })?;
        let pname = &r[..eq];
        if !is_name(pname) {
            return Err(CpimError::MalformedHeader {
                line: line_no,
                reason: "bad parameter name",
            });
        }
        let r = &r[eq + 1..];
        let (value, after) = if let Some(q) = r.strip_prefix('"') {
            let mut escaped = false;
            let mut end = None;
            for (i, c) in q.char_indices() {
                match (escaped, c) {
                    (true, _) => escaped = false,
                    (false, '\\') => escaped = true,
                    (false, '"') => {
                        end = Some(i);
                        break;
                    }
                    _ => {}
                }
            }
            let end = end.ok_or(CpimError::MalformedHeader {
                line: line_no,
                reason: "unterminated string",
            })?;
            (unescape(&q[..end], line_no)?, &q[end + 1..])
        } else {
            let end = r.find([';', ' ']).unwrap_or(r.len());
            let v = &r[..end];
            if !is_token(v) {
                return Err(CpimError::MalformedHeader {
                    line: line_no,
                    reason: "bad parameter value",
                });
            }
            (v.to_owned(), &r[end..])
        };
        params.push(Param {
            name: pname.to_owned(),
            value,
        });
        rest = after;
    }
    let value = rest.strip_prefix(' ').ok_or(CpimError::MalformedHeader {
        line: line_no,
        reason: "missing space before the value",
    })?;
    let no_params = |params: &[Param]| -> Result<(), CpimError> {
        match params.first() {
            Some(p) => Err(CpimError::UnexpectedParameter {
                line: line_no,
                name: name.to_string(),
                param: p.name.clone(),
            }),
            None => Ok(()),
        }
    };
    if !name.is_standard() {
        let value = unescape(value, line_no)?;
        return Ok(Header::Extension(ExtensionHeader {
            name,
            params,
            value,
        }));
    }
    match name.name() {
        "From" | "To" | "cc" => {
            no_params(&params)?;
            let a = Address::parse(value, line_no)?;
            Ok(match name.name() {
                "From" => Header::From(a),
                "To" => Header::To(a),
                _ => Header::Cc(a),
            })
        }
        "DateTime" => {
            no_params(&params)?;
            DateTime::parse(value)
                .map(Header::DateTime)
                .map_err(|_| CpimError::BadDateTime {
                    line: line_no,
                    value: value.to_owned(),
                })
        }
        "Subject" => {
            let mut lang = None;
            for p in params {
                if p.name == "lang" && lang.is_none() {
                    if !is_language_tag(&p.value) {
                        return Err(CpimError::BadLanguageTag {
                            line: line_no,
                            value: p.value,
                        });
                    }
                    lang = Some(p.value);
                } else {
                    return Err(CpimError::UnexpectedParameter {
                        line: line_no,
                        name: "Subject".into(),
                        param: p.name,
                    });
                }
            }
            Ok(Header::Subject(Subject {
                lang,
                text: unescape(value, line_no)?,
            }))
        }
        "NS" => {
            no_params(&params)?;
            let bad = CpimError::MalformedHeader {
                line: line_no,
                reason: "NS value is not [prefix SP] <URI>",
            };
            let (prefix, uri) = match value.split_once(' ') {
                Some((p, u)) => (Some(p), u),
                None => (None, value),
            };
            let uri = uri
                .strip_prefix('<')
                .and_then(|u| u.strip_suffix('>'))
                .ok_or(bad.clone())?;
            NsDecl::new(prefix, uri).map(Header::Ns).map_err(|_| bad)
        }
        "Require" => {
            no_params(&params)?;
            let names = value
                .split(',')
                .map(|n| {
                    let n = n.trim_start_matches(' ');
                    HeaderName::parse(n).map_err(|_| CpimError::BadHeaderName {
                        line: line_no,
                        name: n.to_owned(),
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Header::Require(names))
        }
        _ => unreachable!("is_standard covers exactly these names"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_round_trip() {
        let text = "a\\b\u{1}\u{7f}\t\n\r\u{8}é\"'";
        let mut out = String::new();
        escape_value(text, &mut out);
        assert_eq!(out, "a\\\\b\\u0001\\u007f\\t\\n\\r\\bé\"'");
        assert_eq!(unescape(&out, 1).unwrap(), text);
    }

    #[test]
    fn unescape_rejects_bad_sequences() {
        for s in ["\\", "\\x", "\\u12", "\\u12g4", "\\ud800", "raw\ttab"] {
            assert!(unescape(s, 7).is_err(), "{s:?}");
        }
    }

    #[test]
    fn language_tags() {
        for ok in ["en", "fr", "de-CH", "zh-Hant-TW", "x-klingon", "i-default"] {
            assert!(is_language_tag(ok), "{ok}");
        }
        for bad in ["", "-", "en-", "toolongtag", "e1", "en_US", "en--x"] {
            assert!(!is_language_tag(bad), "{bad}");
        }
    }

    #[test]
    fn content_type_parsing() {
        let ct = ContentType::parse("Text/Plain; Charset=\"UTF-8\"; format=flowed").unwrap();
        assert_eq!(ct.mime_type(), "text/plain");
        assert_eq!(ct.charset(), Some("UTF-8"));
        assert_eq!(ct.param("FORMAT"), Some("flowed"));
        assert!(ContentType::parse("text").is_err());
        assert!(ContentType::parse("text/plain; charset").is_err());
    }
}
