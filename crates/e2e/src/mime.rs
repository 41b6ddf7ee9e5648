//! The MIME layer of S/MIME (RFC 8551 §3.1, §3.2, §3.5.3; RFC 1847 §2.1 for multipart/signed)
//! as RFC 3923 §3–4 uses it: canonical CRLF form, entity header parsing, base64 bodies and the
//! two-part `multipart/signed` body. Only what the protected objects need; not a MIME library.
//!
//! Canonical form: every line ends in CRLF. XML parsers turn CRLF into LF even inside CDATA
//! (XML 1.0 §2.11), so a receiver re-canonicalizes before it verifies; [`canonicalize`] is
//! idempotent on canonical text, so the sender applies it too and signs exactly those bytes.

use base64ct::{Base64, Encoding};

use crate::error::{E2eError, Result};

/// Turns bare LF and bare CR into CRLF; leaves CRLF alone.
pub fn canonicalize(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + text.len() / 32);
    let mut i = 0;
    while i < text.len() {
        match text[i] {
            b'\r' => {
                out.extend_from_slice(b"\r\n");
                if text.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
            }
            b'\n' => out.extend_from_slice(b"\r\n"),
            b => out.push(b),
        }
        i += 1;
    }
    out
}

/// A parsed MIME entity that borrows its input: header fields in order, and the raw body.
#[derive(Debug, Clone)]
pub struct Entity<'a> {
    headers: Vec<(String, String)>,
    body: &'a [u8],
}

impl<'a> Entity<'a> {
    /// Splits canonical (CRLF) bytes at the first empty line; unfolds continuation lines.
    pub fn parse(bytes: &'a [u8]) -> Result<Entity<'a>> {
        let (head, body) = match find(bytes, b"\r\n\r\n") {
            Some(at) => (&bytes[..at], &bytes[at + 4..]),
            None if bytes.starts_with(b"\r\n") => (&bytes[..0], &bytes[2..]),
            None => return Err(malformed("MIME entity has no header/body separator")),
        };
        let head = std::str::from_utf8(head).map_err(|_| malformed("MIME header not UTF-8"))?;
        let mut headers: Vec<(String, String)> = Vec::new();
        for line in head.split("\r\n") {
            if line.starts_with([' ', '\t']) {
                let last = headers
                    .last_mut()
                    .ok_or_else(|| malformed("continuation line before any header"))?;
                last.1.push(' ');
                last.1.push_str(line.trim());
            } else if let Some((name, value)) = line.split_once(':') {
                headers.push((name.trim().to_string(), value.trim().to_string()));
            } else if !line.is_empty() {
                return Err(malformed("MIME header line without a colon"));
            }
        }
        Ok(Entity { headers, body })
    }

    /// The first value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The parsed Content-Type (RFC 2045 §5.1 says text/plain when absent).
    pub fn content_type(&self) -> ContentType {
        ContentType::parse(self.header("content-type").unwrap_or("text/plain"))
    }

    /// The raw body bytes, undecoded.
    pub fn body(&self) -> &'a [u8] {
        self.body
    }

    /// The body with its Content-Transfer-Encoding undone (base64, or identity encodings).
    pub fn decoded_body(&self) -> Result<Vec<u8>> {
        match self.header("content-transfer-encoding") {
            Some(cte) if cte.eq_ignore_ascii_case("base64") => decode_base64(self.body),
            Some(cte)
                if !["7bit", "8bit", "binary"]
                    .iter()
                    .any(|known| cte.eq_ignore_ascii_case(known)) =>
            {
                Err(malformed("unsupported Content-Transfer-Encoding"))
            }
            _ => Ok(self.body.to_vec()),
        }
    }
}

/// A Content-Type value: `type/subtype` lowercased, and its parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentType {
    mime_type: String,
    params: Vec<(String, String)>,
}

impl ContentType {
    /// Parses `type/subtype; name=value; name="quoted value"`.
    pub fn parse(value: &str) -> ContentType {
        let mut parts = split_params(value).into_iter();
        let mime_type = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
        let params = parts
            .filter_map(|p| {
                let (name, value) = p.split_once('=')?;
                let value = value.trim();
                let value = value
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .map(|v| v.replace("\\\"", "\"").replace("\\\\", "\\"))
                    .unwrap_or_else(|| value.to_string());
                Some((name.trim().to_ascii_lowercase(), value))
            })
            .collect();
        ContentType { mime_type, params }
    }

    /// `type/subtype`, lowercased.
    pub fn mime_type(&self) -> &str {
        &self.mime_type
    }

    /// A parameter by case-insensitive name.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Splits at `;` outside double quotes.
fn split_params(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    let mut escaped = false;
    for c in value.chars() {
        match c {
            _ if escaped => {
                escaped = false;
                current.push(c);
            }
            '\\' if quoted => {
                escaped = true;
                current.push(c);
            }
            '"' => {
                quoted = !quoted;
                current.push(c);
            }
            ';' if !quoted => out.push(std::mem::take(&mut current)),
            _ => current.push(c),
        }
    }
    out.push(current);
    out
}

/// Base64 with CRLF line breaks every 76 characters (RFC 2045 §6.8).
pub fn encode_base64_lines(data: &[u8]) -> String {
    let encoded = Base64::encode_string(data);
    let mut out = String::with_capacity(encoded.len() + encoded.len() / 38 + 2);
    for chunk in encoded.as_bytes().chunks(76) {
        out.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
        out.push_str("\r\n");
    }
    out
}

/// Decodes base64 ignoring whitespace and line breaks.
pub fn decode_base64(body: &[u8]) -> Result<Vec<u8>> {
    let compact: Vec<u8> = body
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    Base64::decode_vec(std::str::from_utf8(&compact).map_err(|_| malformed("base64 not ASCII"))?)
        .map_err(|_| malformed("invalid base64 body"))
}

/// The two parts of a `multipart/signed` body, as raw bytes (RFC 1847 §2.1): the first part is
/// exactly the bytes that were signed, excluding the CRLF that belongs to the next delimiter.
pub fn split_multipart<'a>(body: &'a [u8], boundary: &str) -> Result<Vec<&'a [u8]>> {
    let delimiter = format!("--{boundary}");
    let delimiter = delimiter.as_bytes();
    // The first delimiter may open the body; later ones are preceded by CRLF.
    let mut starts = Vec::new();
    let mut pos = 0;
    if body.starts_with(delimiter) {
        starts.push(0);
        pos = delimiter.len();
    }
    let crlf_delimiter = [b"\r\n".as_slice(), delimiter].concat();
    while let Some(at) = find(&body[pos..], &crlf_delimiter) {
        starts.push(pos + at + 2);
        pos += at + crlf_delimiter.len();
    }
    let mut parts = Vec::new();
    for window in starts.windows(2) {
        let (open, next) = (window[0], window[1]);
        let after = &body[open + delimiter.len()..];
        if after.starts_with(b"--") {
            break;
        }
        // Skip transport padding and the CRLF ending the delimiter line.
        let line_end = find(after, b"\r\n").ok_or_else(|| malformed("delimiter line not ended"))?;
        let part_start = open + delimiter.len() + line_end + 2;
        let part_end = next - 2;
        if part_start > part_end {
            return Err(malformed("empty MIME part"));
        }
        parts.push(&body[part_start..part_end]);
    }
    let closed = starts
        .last()
        .map(|&last| body[last + delimiter.len()..].starts_with(b"--"))
        .unwrap_or(false);
    if !closed {
        return Err(malformed("multipart body has no close delimiter"));
    }
    Ok(parts)
}

pub(crate) fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn malformed(why: &str) -> E2eError {
    E2eError::MalformedPayload(why.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonicalize_is_idempotent() {
        let once = canonicalize(b"a\nb\r\nc\rd");
        assert_eq!(once, b"a\r\nb\r\nc\r\nd");
        assert_eq!(canonicalize(&once), once);
    }

    #[test]
    fn content_type_params() {
        let ct = ContentType::parse(
            "multipart/signed; boundary=\"a;b\"; protocol=\"application/pkcs7-signature\"; micalg=sha-256",
        );
        assert_eq!(ct.mime_type(), "multipart/signed");
        assert_eq!(ct.param("boundary"), Some("a;b"));
        assert_eq!(ct.param("MICALG"), Some("sha-256"));
    }

    #[test]
    fn multipart_parts_exclude_delimiter_crlf() {
        let body = b"preamble\r\n--XX\r\nContent-Type: text/plain\r\n\r\nhi\r\n\r\n--XX\r\nsecond\r\n--XX--\r\n";
        let parts = split_multipart(body, "XX").unwrap();
        assert_eq!(
            parts,
            vec![&b"Content-Type: text/plain\r\n\r\nhi\r\n"[..], b"second"]
        );
        assert!(split_multipart(b"--XX\r\nunterminated", "XX").is_err());
    }

    #[test]
    fn entity_unfolds_headers() {
        let e = Entity::parse(b"Content-Type: a/b;\r\n boundary=x\r\n\r\nbody").unwrap();
        assert_eq!(e.content_type().param("boundary"), Some("x"));
        assert_eq!(e.body(), b"body");
    }
}
