//! SIP messages (RFC 3261 §7, §20): parse and print, with no I/O.
//!
//! Only what a non-INVITE user agent needs: the start line, header fields kept in order as
//! (name, value) text with compact forms expanded (§7.3.3) and folded lines joined (§7.3.1),
//! and the body cut to `Content-Length`. Typed helpers read the few fields the gateway acts on:
//! Via branch, CSeq, the URI and `tag` of From/To, `Expires`. Unknown fields pass through.
//! [`frame_len`] finds where one message ends in a TCP stream (§18.3).

use std::fmt::Write as _;

/// Why bytes are not a SIP message we accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SipError {
    #[error("message larger than {0} bytes")]
    TooLarge(usize),
    #[error("no blank line after the header fields")]
    Incomplete,
    #[error("malformed start line")]
    BadStartLine,
    #[error("malformed header field line")]
    BadHeader,
    #[error("invalid Content-Length")]
    BadContentLength,
    #[error("missing or malformed {0}")]
    Missing(&'static str),
}

/// The first line: a request or a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartLine {
    /// `METHOD uri SIP/2.0`
    Request { method: String, uri: String },
    /// `SIP/2.0 code reason`
    Response { code: u16, reason: String },
}

/// One SIP request or response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipMessage {
    /// Request line or status line.
    pub start: StartLine,
    /// Header fields in order, long names; `Content-Length` is written by [`SipMessage::to_bytes`].
    headers: Vec<(String, String)>,
    /// The body, exactly `Content-Length` bytes.
    pub body: Vec<u8>,
}

/// Most header fields one message may carry (DESIGN principle 3).
const MAX_HEADERS: usize = 128;

fn long_name(name: &str) -> &str {
    match name {
        "i" | "I" => "Call-ID",
        "m" | "M" => "Contact",
        "e" | "E" => "Content-Encoding",
        "l" | "L" => "Content-Length",
        "c" | "C" => "Content-Type",
        "f" | "F" => "From",
        "s" | "S" => "Subject",
        "k" | "K" => "Supported",
        "t" | "T" => "To",
        "v" | "V" => "Via",
        "o" | "O" => "Event",
        "u" | "U" => "Allow-Events",
        _ => name,
    }
}

fn header_end(bytes: &[u8]) -> Option<(usize, usize)> {
    if let Some(i) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
        return Some((i, i + 4));
    }
    bytes
        .windows(2)
        .position(|w| w == b"\n\n")
        .map(|i| (i, i + 2))
}

/// In a TCP stream: the length of the first complete message in `buf`, `None` when more
/// bytes are needed. Leading CRLFs (keep-alives, RFC 5626 §3.5.1) must be skipped by the
/// caller. A message that cannot fit in `max` bytes is an error.
pub fn frame_len(buf: &[u8], max: usize) -> Result<Option<usize>, SipError> {
    let Some((head, body_start)) = header_end(buf) else {
        return if buf.len() > max {
            Err(SipError::TooLarge(max))
        } else {
            Ok(None)
        };
    };
    let head = std::str::from_utf8(&buf[..head]).map_err(|_| SipError::BadHeader)?;
    let mut len = 0usize;
    for line in head.lines().skip(1) {
        if let Some((n, v)) = line.split_once(':') {
            if long_name(n.trim()).eq_ignore_ascii_case("Content-Length") {
                len = v.trim().parse().map_err(|_| SipError::BadContentLength)?;
            }
        }
    }
    let total = body_start
        .checked_add(len)
        .ok_or(SipError::BadContentLength)?;
    if total > max {
        return Err(SipError::TooLarge(max));
    }
    Ok((buf.len() >= total).then_some(total))
}

impl SipMessage {
    /// A request with no header fields yet.
    pub fn request(method: &str, uri: &str) -> SipMessage {
        SipMessage {
            start: StartLine::Request {
                method: method.to_owned(),
                uri: uri.to_owned(),
            },
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// Parses one message (a UDP datagram, or a frame cut by [`frame_len`]).
    pub fn parse(bytes: &[u8], max: usize) -> Result<SipMessage, SipError> {
        if bytes.len() > max {
            return Err(SipError::TooLarge(max));
        }
        let (head_end, body_start) = header_end(bytes).ok_or(SipError::Incomplete)?;
        let head = std::str::from_utf8(&bytes[..head_end]).map_err(|_| SipError::BadHeader)?;
        let mut lines = head.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
        let first = lines.next().ok_or(SipError::BadStartLine)?;
        let start = parse_start(first)?;
        let mut headers: Vec<(String, String)> = Vec::new();
        for line in lines {
            if line.starts_with([' ', '\t']) {
                let last = headers.last_mut().ok_or(SipError::BadHeader)?;
                last.1.push(' ');
                last.1.push_str(line.trim());
                continue;
            }
            let (name, value) = line.split_once(':').ok_or(SipError::BadHeader)?;
            let name = name.trim();
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(SipError::BadHeader);
            }
            if headers.len() == MAX_HEADERS {
                return Err(SipError::BadHeader);
            }
            headers.push((long_name(name).to_owned(), value.trim().to_owned()));
        }
        let rest = &bytes[body_start..];
        let body = match headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("Content-Length"))
        {
            Some((_, v)) => {
                let len: usize = v.parse().map_err(|_| SipError::BadContentLength)?;
                if len > rest.len() {
                    return Err(SipError::BadContentLength);
                }
                rest[..len].to_vec()
            }
            None => rest.to_vec(),
        };
        headers.retain(|(n, _)| !n.eq_ignore_ascii_case("Content-Length"));
        Ok(SipMessage {
            start,
            headers,
            body,
        })
    }

    /// The wire form, with `Content-Length` computed.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = String::new();
        match &self.start {
            StartLine::Request { method, uri } => {
                let _ = write!(out, "{method} {uri} SIP/2.0\r\n");
            }
            StartLine::Response { code, reason } => {
                let _ = write!(out, "SIP/2.0 {code} {reason}\r\n");
            }
        }
        for (n, v) in &self.headers {
            let _ = write!(out, "{n}: {v}\r\n");
        }
        let _ = write!(out, "Content-Length: {}\r\n\r\n", self.body.len());
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }

    /// The method of a request (or, for a response, `None`).
    pub fn method(&self) -> Option<&str> {
        match &self.start {
            StartLine::Request { method, .. } => Some(method),
            StartLine::Response { .. } => None,
        }
    }

    /// The Request-URI of a request.
    pub fn request_uri(&self) -> Option<&str> {
        match &self.start {
            StartLine::Request { uri, .. } => Some(uri),
            StartLine::Response { .. } => None,
        }
    }

    /// The status code of a response.
    pub fn status(&self) -> Option<u16> {
        match &self.start {
            StartLine::Response { code, .. } => Some(*code),
            StartLine::Request { .. } => None,
        }
    }

    /// The first value of a header field (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a header field, in order.
    pub fn headers_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// All header fields.
    pub fn headers(&self) -> &[(String, String)] {
        &self.headers
    }

    /// Appends a header field.
    pub fn push(&mut self, name: &str, value: impl Into<String>) -> &mut Self {
        self.headers.push((name.to_owned(), value.into()));
        self
    }

    /// Replaces every field of that name with one value.
    pub fn set(&mut self, name: &str, value: impl Into<String>) -> &mut Self {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self.push(name, value)
    }

    /// The `branch` of the top Via (the transaction id, §17.2.3).
    pub fn branch(&self) -> Option<&str> {
        param(self.header("Via")?, "branch")
    }

    /// CSeq number and method.
    pub fn cseq(&self) -> Option<(u32, &str)> {
        let (n, m) = self.header("CSeq")?.split_once(char::is_whitespace)?;
        Some((n.trim().parse().ok()?, m.trim()))
    }

    /// The Call-ID.
    pub fn call_id(&self) -> Option<&str> {
        self.header("Call-ID")
    }

    /// `Expires` as seconds.
    pub fn expires(&self) -> Option<u32> {
        self.header("Expires")?.trim().parse().ok()
    }

    /// A response to this request (§8.2.6): Via, From, To, Call-ID and CSeq copied; `to_tag`
    /// added to To when it has none.
    pub fn response(&self, code: u16, reason: &str, to_tag: Option<&str>) -> SipMessage {
        let mut r = SipMessage {
            start: StartLine::Response {
                code,
                reason: reason.to_owned(),
            },
            headers: Vec::new(),
            body: Vec::new(),
        };
        for v in self.headers_named("Via") {
            r.push("Via", v);
        }
        if let Some(v) = self.header("From") {
            r.push("From", v);
        }
        if let Some(v) = self.header("To") {
            match to_tag {
                Some(tag) if param(v, "tag").is_none() && code > 100 => {
                    r.push("To", format!("{v};tag={tag}"))
                }
                _ => r.push("To", v),
            };
        }
        if let Some(v) = self.header("Call-ID") {
            r.push("Call-ID", v);
        }
        if let Some(v) = self.header("CSeq") {
            r.push("CSeq", v);
        }
        r
    }
}

fn parse_start(line: &str) -> Result<StartLine, SipError> {
    if let Some(rest) = line.strip_prefix("SIP/2.0 ") {
        let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
        let code: u16 = code.parse().map_err(|_| SipError::BadStartLine)?;
        if !(100..=699).contains(&code) {
            return Err(SipError::BadStartLine);
        }
        return Ok(StartLine::Response {
            code,
            reason: reason.to_owned(),
        });
    }
    let mut parts = line.split(' ');
    let (Some(method), Some(uri), Some("SIP/2.0"), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(SipError::BadStartLine);
    };
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_alphabetic()) || uri.is_empty() {
        return Err(SipError::BadStartLine);
    }
    Ok(StartLine::Request {
        method: method.to_owned(),
        uri: uri.to_owned(),
    })
}

/// A `;name=value` parameter of a header value (outside any `<...>`), case-insensitive name.
pub fn param<'a>(value: &'a str, name: &str) -> Option<&'a str> {
    let after = match value.rfind('>') {
        Some(i) => &value[i + 1..],
        None => value,
    };
    after.split(';').skip(1).find_map(|p| {
        let (n, v) = p.split_once('=').unwrap_or((p, ""));
        n.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().trim_matches('"'))
    })
}

/// The URI inside a name-addr or addr-spec (From, To, Contact): `"Bob" <sip:b@x>;tag=1`
/// gives `sip:b@x`; `sip:b@x;tag=1` gives `sip:b@x`.
pub fn addr_uri(value: &str) -> &str {
    match (value.find('<'), value.find('>')) {
        (Some(a), Some(b)) if a < b => value[a + 1..b].trim(),
        _ => value.split(';').next().unwrap_or("").trim(),
    }
}

/// The standard reason phrase of the codes the gateway sends.
pub fn reason(code: u16) -> &'static str {
    match code {
        100 => "Trying",
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Request Entity Too Large",
        415 => "Unsupported Media Type",
        416 => "Unsupported URI Scheme",
        420 => "Bad Extension",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        489 => "Bad Event",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        513 => "Message Too Large",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MESSAGE: &[u8] = b"MESSAGE sip:alice@localhost SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5071;branch=z9hG4bK-1;rport\r\n\
f: \"Bob\" <sip:bob@sip.example>;tag=42\r\n\
t: <sip:alice@localhost>\r\n\
i: call-1@127.0.0.1\r\n\
CSeq: 7 MESSAGE\r\n\
Subject: first\r\n second\r\n\
c: text/plain\r\n\
l: 5\r\n\
\r\n\
Hello trailing";

    #[test]
    fn parses_a_request_with_compact_and_folded_fields() {
        let m = SipMessage::parse(MESSAGE, 65536).unwrap();
        assert_eq!(m.method(), Some("MESSAGE"));
        assert_eq!(m.request_uri(), Some("sip:alice@localhost"));
        assert_eq!(m.branch(), Some("z9hG4bK-1"));
        assert_eq!(m.cseq(), Some((7, "MESSAGE")));
        assert_eq!(m.call_id(), Some("call-1@127.0.0.1"));
        assert_eq!(m.header("subject"), Some("first second"));
        assert_eq!(addr_uri(m.header("From").unwrap()), "sip:bob@sip.example");
        assert_eq!(param(m.header("From").unwrap(), "tag"), Some("42"));
        assert_eq!(param(m.header("To").unwrap(), "tag"), None);
        assert_eq!(m.body, b"Hello");
    }

    #[test]
    fn round_trips_through_bytes() {
        let m = SipMessage::parse(MESSAGE, 65536).unwrap();
        let again = SipMessage::parse(&m.to_bytes(), 65536).unwrap();
        assert_eq!(m, again);
        assert!(m.to_bytes().ends_with(b"Content-Length: 5\r\n\r\nHello"));
    }

    #[test]
    fn response_copies_the_transaction_fields_and_adds_a_tag() {
        let m = SipMessage::parse(MESSAGE, 65536).unwrap();
        let r = m.response(200, "OK", Some("gw1"));
        let text = String::from_utf8(r.to_bytes()).unwrap();
        assert!(
            text.starts_with(
                "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5071;branch=z9hG4bK-1;rport\r\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("To: <sip:alice@localhost>;tag=gw1\r\n"),
            "{text}"
        );
        assert!(text.contains("CSeq: 7 MESSAGE\r\n"), "{text}");
    }

    #[test]
    fn rejects_malformed_input() {
        for bad in [
            &b"MESSAGE sip:a@b SIP/2.0\r\nVia x\r\n\r\n"[..],
            b"MESSAGE sip:a@b\r\n\r\n",
            b"SIP/2.0 99 Nope\r\n\r\n",
            b"MESSAGE sip:a@b SIP/2.0\r\nContent-Length: 10\r\n\r\nshort",
            b"MESSAGE sip:a@b SIP/2.0\r\nVia: x\r\n",
        ] {
            assert!(SipMessage::parse(bad, 65536).is_err(), "{bad:?}");
        }
        assert_eq!(SipMessage::parse(MESSAGE, 10), Err(SipError::TooLarge(10)));
    }

    #[test]
    fn frames_a_tcp_stream() {
        let mut stream = MESSAGE[..MESSAGE.len() - 9].to_vec();
        assert_eq!(frame_len(&stream[..20], 65536), Ok(None));
        assert_eq!(frame_len(&stream, 65536), Ok(Some(stream.len())));
        stream.extend_from_slice(b"OPTIONS");
        assert_eq!(frame_len(&stream, 65536), Ok(Some(stream.len() - 7)));
        assert_eq!(frame_len(&stream, 100), Err(SipError::TooLarge(100)));
        assert_eq!(frame_len(&[b'x'; 200], 100), Err(SipError::TooLarge(100)));
    }
}
