//! Addresses: RFC 3922 §3 (JID <-> `im:`/`pres:` URIs, RFC 3860/3859), plus the `sip:` forms
//! the gateway needs (RFC 3261 §19.1, with RFC 7247 §5 as the model for plain JID <-> SIP).
//!
//! # JID -> `im:`/`pres:` (RFC 3922 §3.1)
//! 1. Split the JID into localpart, domainpart and resource; **drop the resource**.
//! 2. Undo JID escapes in the localpart: RFC 3922's `#26;` `#27;` `#2f;` and the XEP-0106
//!    `\xx` escapes (see below).
//! 3. Percent-encode every UTF-8 byte of the localpart outside `A-Za-z0-9!$*._~+=`
//!    (RFC 3922 lists `?` in that set too; we encode it, see the crate-level deviations).
//! 4. Convert the domain to ASCII (IDNA ToASCII, lower case).
//! 5. `im:` (messages) or `pres:` (presence) + `local@domain`.
//!
//! # `im:`/`pres:` -> JID (RFC 3922 §3.2)
//! Strip the scheme, refuse `?headers`, split at `@`, percent-decode the local part as UTF-8,
//! turn the domain to Unicode, then escape the characters a JID localpart cannot hold.
//! RFC 3922 names three (`&` `'` `/`); we escape the whole XEP-0106 set so that more addresses
//! map, and write `\26`-style escapes by default ([`JidEscaping::Xep0106`]) or RFC 3922's
//! `#26;` form for `& ' /` ([`JidEscaping::Rfc3922`]).
//!
//! JID validation here is deliberately light (length, forbidden characters, no empty parts);
//! full RFC 7622 PRECIS preparation belongs to the proto crate's JID type. `JID -> URI -> JID`
//! is the identity for bare JIDs whose localpart is in canonical XEP-0106 form and whose domain
//! is lower-case ASCII.
//!
//! # Gateway addressing (`user%sipdomain@sip.<domain>`)
//! XMPP users reach a SIP user `sip:bob@sip.example` as the JID
//! `bob%sip.example@sip.xmpp.example`, where `sip.xmpp.example` is the gateway's routing domain
//! ([`GatewayAddressing`]). The localpart is the SIP user, `%`, and the SIP host (and port);
//! it is split at the **last** `%` because a host never contains one. Characters a localpart
//! cannot hold are XEP-0106-escaped (`sip:o'brien@x` -> `o\27brien%x@gw`). SIP users reach
//! XMPP users as plain `sip:alice@xmpp.example` ([`jid_to_sip_uri`] / [`sip_uri_to_jid`]).

use std::fmt;

/// Longest localpart, domainpart or resourcepart in bytes (RFC 7622 §3.3.1, §3.2, §3.4).
const MAX_PART: usize = 1023;

/// Bytes RFC 3922 §3.1 leaves unencoded in a localpart, less `?` (see the crate docs).
fn is_uri_safe(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!$*._~+=".contains(&b)
}

/// The two URI schemes of RFC 3922: `im:` (RFC 3860) for messages, `pres:` (RFC 3859) for
/// presence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CpimScheme {
    /// `im:` — instant inboxes; used for `<message/>`.
    Im,
    /// `pres:` — presentities; used for `<presence/>`.
    Pres,
}

impl CpimScheme {
    /// The scheme name without the colon.
    pub fn as_str(self) -> &'static str {
        match self {
            CpimScheme::Im => "im",
            CpimScheme::Pres => "pres",
        }
    }
}

/// How [`cpim_uri_to_jid_with`] writes characters that a JID localpart cannot hold.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum JidEscaping {
    /// XEP-0106: `\20 \22 \26 \27 \2f \3a \3c \3e \40 \5c`. The default.
    #[default]
    Xep0106,
    /// RFC 3922 §3.2 literally: `&` `'` `/` become `#26;` `#27;` `#2f;`; any other character a
    /// localpart cannot hold makes the address unmappable.
    Rfc3922,
}

/// Why an address could not be mapped.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("empty address")]
    Empty,
    #[error("the address has no localpart (an im:/pres:/sip: URI needs user@host)")]
    MissingLocalpart,
    #[error("empty {0} in JID")]
    EmptyPart(&'static str),
    #[error("{0} longer than 1023 bytes")]
    TooLong(&'static str),
    #[error("character {ch:?} is not allowed in a JID {part}")]
    ForbiddenChar { part: &'static str, ch: char },
    #[error("unsupported URI scheme in {0:?} (expected {1})")]
    WrongScheme(String, &'static str),
    #[error("URI {0:?} carries headers or parameters this mapping cannot express")]
    UnsupportedUriPart(String),
    #[error("malformed percent-encoding in {0:?}")]
    BadPercentEncoding(String),
    #[error("percent-decoded local part of {0:?} is not UTF-8")]
    NotUtf8(String),
    #[error("character {ch:?} is not allowed raw in a URI ({uri:?})")]
    BadUriChar { uri: String, ch: char },
    #[error("invalid domain {0:?}")]
    BadDomain(String),
    #[error("JID {jid:?} is not under the gateway domain {gateway:?}")]
    NotGatewayDomain { jid: String, gateway: String },
    #[error("gateway localpart {0:?} has no '%' separating the SIP user from the SIP host")]
    MissingSipHost(String),
    #[error("invalid port in {0:?}")]
    BadPort(String),
}

/// A JID split into its three parts (borrowed from the input, not prepared).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JidParts<'a> {
    /// The localpart, if the JID has one.
    pub local: Option<&'a str>,
    /// The domainpart; never empty.
    pub domain: &'a str,
    /// The resourcepart, if the JID has one.
    pub resource: Option<&'a str>,
}

/// Splits and lightly validates a JID (RFC 7622 §3.1: the resource starts at the first `/`,
/// the localpart ends at the first `@` before it).
pub fn split_jid(jid: &str) -> Result<JidParts<'_>, AddressError> {
    if jid.is_empty() {
        return Err(AddressError::Empty);
    }
    let (bare, resource) = match jid.split_once('/') {
        Some((b, r)) => (b, Some(r)),
        None => (jid, None),
    };
    let (local, domain) = match bare.split_once('@') {
        Some((l, d)) => (Some(l), d),
        None => (None, bare),
    };
    if let Some(local) = local {
        check_localpart(local)?;
    }
    check_domain(domain)?;
    if let Some(resource) = resource {
        if resource.is_empty() {
            return Err(AddressError::EmptyPart("resourcepart"));
        }
        if resource.len() > MAX_PART {
            return Err(AddressError::TooLong("resourcepart"));
        }
        if let Some(ch) = resource.chars().find(|c| c.is_control()) {
            return Err(AddressError::ForbiddenChar {
                part: "resourcepart",
                ch,
            });
        }
    }
    Ok(JidParts {
        local,
        domain,
        resource,
    })
}

/// RFC 7622 §3.3.1: the eight characters a localpart cannot hold, plus spaces and controls
/// (which the UsernameCaseMapped profile forbids).
fn check_localpart(local: &str) -> Result<(), AddressError> {
    if local.is_empty() {
        return Err(AddressError::EmptyPart("localpart"));
    }
    if local.len() > MAX_PART {
        return Err(AddressError::TooLong("localpart"));
    }
    if let Some(ch) = local
        .chars()
        .find(|&c| "\"&'/:<>@".contains(c) || c.is_whitespace() || c.is_control())
    {
        return Err(AddressError::ForbiddenChar {
            part: "localpart",
            ch,
        });
    }
    Ok(())
}

fn check_domain(domain: &str) -> Result<(), AddressError> {
    if domain.is_empty() {
        return Err(AddressError::EmptyPart("domainpart"));
    }
    if domain.len() > MAX_PART {
        return Err(AddressError::TooLong("domainpart"));
    }
    if let Some(ch) = domain
        .chars()
        .find(|&c| "@/\"&'<>\\%?#".contains(c) || c.is_whitespace() || c.is_control())
    {
        return Err(AddressError::ForbiddenChar {
            part: "domainpart",
            ch,
        });
    }
    Ok(())
}

/// The domain in ASCII (IDNA ToASCII, lower case); IPv6 literals pass through.
fn domain_to_ascii(domain: &str) -> Result<String, AddressError> {
    if domain.starts_with('[') {
        return if domain.ends_with(']')
            && domain[1..domain.len() - 1]
                .chars()
                .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
        {
            Ok(domain.to_owned())
        } else {
            Err(AddressError::BadDomain(domain.to_owned()))
        };
    }
    let ascii =
        idna::domain_to_ascii(domain).map_err(|_| AddressError::BadDomain(domain.to_owned()))?;
    if ascii.is_empty()
        || !ascii
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    {
        return Err(AddressError::BadDomain(domain.to_owned()));
    }
    Ok(ascii)
}

/// The domain from a URI, for a JID: percent-decoded, then IDNA ToUnicode.
fn domain_from_uri(raw: &str, uri: &str) -> Result<String, AddressError> {
    let bytes =
        percent_decode(raw).ok_or_else(|| AddressError::BadPercentEncoding(uri.to_owned()))?;
    let decoded = String::from_utf8(bytes).map_err(|_| AddressError::NotUtf8(uri.to_owned()))?;
    check_domain(&decoded)?;
    if decoded.starts_with('[') {
        return domain_to_ascii(&decoded);
    }
    let ascii = domain_to_ascii(&decoded)?;
    let (unicode, result) = idna::domain_to_unicode(&ascii);
    result.map_err(|_| AddressError::BadDomain(decoded.clone()))?;
    check_domain(&unicode)?;
    Ok(unicode)
}

/// The XEP-0106 escapes: (code, character).
const XEP0106: [(&str, char); 10] = [
    ("20", ' '),
    ("22", '"'),
    ("26", '&'),
    ("27", '\''),
    ("2f", '/'),
    ("3a", ':'),
    ("3c", '<'),
    ("3e", '>'),
    ("40", '@'),
    ("5c", '\\'),
];

fn xep0106_code_at(s: &str) -> Option<char> {
    let code = s.get(..2)?;
    XEP0106
        .iter()
        .find(|(c, _)| c.eq_ignore_ascii_case(code))
        .map(|&(_, ch)| ch)
}

/// Undoes JID escaping in a localpart: XEP-0106 `\xx` escapes and RFC 3922's legacy `#26;`,
/// `#27;`, `#2f;`. `\5c` becomes `\` only where it escapes a backslash that starts another
/// escape sequence (XEP-0106 §4.2's canonical form), so the function inverts
/// [`escape_localpart`].
pub fn unescape_localpart(local: &str) -> String {
    let mut out = String::with_capacity(local.len());
    let mut rest = local;
    while let Some(c) = rest.chars().next() {
        if c == '\\' {
            if let Some(ch) = xep0106_code_at(&rest[1..]) {
                if ch != '\\' || xep0106_code_at(&rest[3..]).is_some() {
                    out.push(ch);
                    rest = &rest[3..];
                    continue;
                }
            }
        } else if c == '#' {
            let legacy = [("#26;", '&'), ("#27;", '\''), ("#2f;", '/')];
            if let Some((code, ch)) = legacy
                .iter()
                .find(|(code, _)| rest.get(..4).is_some_and(|p| p.eq_ignore_ascii_case(code)))
            {
                out.push(*ch);
                rest = &rest[code.len()..];
                continue;
            }
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// Escapes a raw user name into a JID localpart (XEP-0106 §4.2): the nine forbidden characters
/// always, and `\` only where it would otherwise start an escape sequence.
pub fn escape_localpart(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for (i, c) in raw.char_indices() {
        if c == '\\' {
            if xep0106_code_at(&raw[i + 1..]).is_some() {
                out.push_str("\\5c");
            } else {
                out.push('\\');
            }
        } else if let Some((code, _)) = XEP0106.iter().find(|&&(_, ch)| ch == c && ch != '\\') {
            out.push('\\');
            out.push_str(code);
        } else {
            out.push(c);
        }
    }
    out
}

fn escape_localpart_rfc3922(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for c in raw.chars() {
        match c {
            '&' => out.push_str("#26;"),
            '\'' => out.push_str("#27;"),
            '/' => out.push_str("#2f;"),
            _ => out.push(c),
        }
    }
    out
}

fn percent_encode(raw: &str, keep: impl Fn(u8) -> bool) -> String {
    let mut out = String::with_capacity(raw.len());
    for b in raw.bytes() {
        if keep(b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            if !hex.bytes().all(|h| h.is_ascii_hexdigit()) {
                return None;
            }
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Some(out)
}

/// Maps a JID to an `im:` or `pres:` URI (RFC 3922 §3.1). The resource is dropped.
///
/// `alice@xmpp.example/laptop` -> `im:alice@xmpp.example`; `o\27brien@x` -> `im:o%27brien@x`.
pub fn jid_to_cpim_uri(jid: &str, scheme: CpimScheme) -> Result<String, AddressError> {
    let parts = split_jid(jid)?;
    let local = parts.local.ok_or(AddressError::MissingLocalpart)?;
    let local = percent_encode(&unescape_localpart(local), is_uri_safe);
    let domain = domain_to_ascii(parts.domain)?;
    Ok(format!("{}:{local}@{domain}", scheme.as_str()))
}

/// [`jid_to_cpim_uri`] with [`CpimScheme::Im`].
pub fn jid_to_im_uri(jid: &str) -> Result<String, AddressError> {
    jid_to_cpim_uri(jid, CpimScheme::Im)
}

/// [`jid_to_cpim_uri`] with [`CpimScheme::Pres`].
pub fn jid_to_pres_uri(jid: &str) -> Result<String, AddressError> {
    jid_to_cpim_uri(jid, CpimScheme::Pres)
}

/// Maps an `im:` or `pres:` URI to a bare JID (RFC 3922 §3.2) with XEP-0106 escaping.
pub fn cpim_uri_to_jid(uri: &str) -> Result<(CpimScheme, String), AddressError> {
    cpim_uri_to_jid_with(uri, JidEscaping::default())
}

/// Maps an `im:` or `pres:` URI to a bare JID, choosing how forbidden characters are escaped.
pub fn cpim_uri_to_jid_with(
    uri: &str,
    escaping: JidEscaping,
) -> Result<(CpimScheme, String), AddressError> {
    let (scheme, rest) = uri
        .split_once(':')
        .ok_or_else(|| AddressError::WrongScheme(uri.to_owned(), "im: or pres:"))?;
    let scheme = if scheme.eq_ignore_ascii_case("im") {
        CpimScheme::Im
    } else if scheme.eq_ignore_ascii_case("pres") {
        CpimScheme::Pres
    } else {
        return Err(AddressError::WrongScheme(uri.to_owned(), "im: or pres:"));
    };
    if rest.contains('?') || rest.contains('#') {
        return Err(AddressError::UnsupportedUriPart(uri.to_owned()));
    }
    if let Some(ch) = rest
        .chars()
        .find(|&c| !c.is_ascii_graphic() || "<>\"\\{}|^`".contains(c))
    {
        return Err(AddressError::BadUriChar {
            uri: uri.to_owned(),
            ch,
        });
    }
    let (local, domain) = rest.split_once('@').ok_or(AddressError::MissingLocalpart)?;
    if local.is_empty() {
        return Err(AddressError::MissingLocalpart);
    }
    let bytes =
        percent_decode(local).ok_or_else(|| AddressError::BadPercentEncoding(uri.to_owned()))?;
    let raw = String::from_utf8(bytes).map_err(|_| AddressError::NotUtf8(uri.to_owned()))?;
    let local = match escaping {
        JidEscaping::Xep0106 => escape_localpart(&raw),
        JidEscaping::Rfc3922 => escape_localpart_rfc3922(&raw),
    };
    check_localpart(&local)?;
    let domain = domain_from_uri(domain, uri)?;
    Ok((scheme, format!("{local}@{domain}")))
}

/// A parsed `sip:`/`sips:` URI (RFC 3261 §19.1.1), reduced to what the gateway maps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SipUri {
    secure: bool,
    user: Option<String>,
    host: String,
    port: Option<u16>,
    /// `;uri-parameters` exactly as received (without the leading `;`), kept for the gateway.
    params: Option<String>,
}

impl SipUri {
    /// Builds `sip:user@host` (`secure` gives `sips:`).
    pub fn new(
        secure: bool,
        user: Option<&str>,
        host: &str,
        port: Option<u16>,
    ) -> Result<Self, AddressError> {
        if let Some(user) = user {
            if user.is_empty() {
                return Err(AddressError::MissingLocalpart);
            }
        }
        let host = domain_to_ascii(host)?;
        Ok(SipUri {
            secure,
            user: user.map(str::to_owned),
            host,
            port,
            params: None,
        })
    }

    /// Parses `sip:`/`sips:` `[user@]host[:port][;params]`. Passwords and `?headers` are
    /// refused (the gateway never takes them from a peer).
    pub fn parse(uri: &str) -> Result<Self, AddressError> {
        let (scheme, rest) = uri
            .split_once(':')
            .ok_or_else(|| AddressError::WrongScheme(uri.to_owned(), "sip: or sips:"))?;
        let secure = if scheme.eq_ignore_ascii_case("sip") {
            false
        } else if scheme.eq_ignore_ascii_case("sips") {
            true
        } else {
            return Err(AddressError::WrongScheme(uri.to_owned(), "sip: or sips:"));
        };
        if let Some(ch) = rest.chars().find(|c| !c.is_ascii_graphic()) {
            return Err(AddressError::BadUriChar {
                uri: uri.to_owned(),
                ch,
            });
        }
        if rest.contains('?') {
            return Err(AddressError::UnsupportedUriPart(uri.to_owned()));
        }
        let (userinfo, hostpart) = match rest.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, rest),
        };
        let user = match userinfo {
            Some(u) => {
                if u.contains(':') {
                    return Err(AddressError::UnsupportedUriPart(uri.to_owned()));
                }
                if u.is_empty() {
                    return Err(AddressError::MissingLocalpart);
                }
                let bytes = percent_decode(u)
                    .ok_or_else(|| AddressError::BadPercentEncoding(uri.to_owned()))?;
                Some(String::from_utf8(bytes).map_err(|_| AddressError::NotUtf8(uri.to_owned()))?)
            }
            None => None,
        };
        let (hostport, params) = match hostpart.split_once(';') {
            Some((h, p)) => (h, Some(p.to_owned())),
            None => (hostpart, None),
        };
        let (host, port) =
            split_hostport(hostport).ok_or_else(|| AddressError::BadPort(uri.to_owned()))?;
        let host = domain_to_ascii(host)?;
        Ok(SipUri {
            secure,
            user,
            host,
            port,
            params,
        })
    }

    /// `true` for `sips:`.
    pub fn is_secure(&self) -> bool {
        self.secure
    }

    /// The user part, percent-decoded.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// The host in ASCII, lower case (IPv6 literals keep their brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port, if given.
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// `;uri-parameters` as received, without the leading `;`.
    pub fn params(&self) -> Option<&str> {
        self.params.as_deref()
    }
}

fn split_hostport(hostport: &str) -> Option<(&str, Option<u16>)> {
    let (host, port) = if hostport.starts_with('[') {
        match hostport.find(']') {
            Some(end) if end + 1 == hostport.len() => (hostport, None),
            Some(end) => (
                &hostport[..=end],
                Some(hostport[end + 1..].strip_prefix(':')?),
            ),
            None => return None,
        }
    } else {
        match hostport.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    let port = match port {
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => Some(p.parse().ok()?),
        Some(_) => return None,
        None => None,
    };
    Some((host, port))
}

/// RFC 3261 §25.1 `user`: unreserved / user-unreserved stay, everything else is `%XX`.
/// (`;` and `?` are legal there but we encode them so that no parser can misread the URI.)
fn is_sip_user_safe(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-_.!~*'()&=+$,/".contains(&b)
}

impl fmt::Display for SipUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.secure { "sips:" } else { "sip:" })?;
        if let Some(user) = &self.user {
            write!(f, "{}@", percent_encode(user, is_sip_user_safe))?;
        }
        f.write_str(&self.host)?;
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        if let Some(params) = &self.params {
            write!(f, ";{params}")?;
        }
        Ok(())
    }
}

/// A native XMPP user as SIP sees them: `alice@xmpp.example/phone` -> `sip:alice@xmpp.example`
/// (resource dropped, XEP-0106 escapes undone, user part percent-encoded per RFC 3261).
pub fn jid_to_sip_uri(jid: &str) -> Result<String, AddressError> {
    let parts = split_jid(jid)?;
    let local = parts.local.ok_or(AddressError::MissingLocalpart)?;
    Ok(SipUri::new(false, Some(&unescape_localpart(local)), parts.domain, None)?.to_string())
}

/// The inverse of [`jid_to_sip_uri`]: `sip:alice@xmpp.example` -> `alice@xmpp.example`
/// (port and parameters ignored).
pub fn sip_uri_to_jid(uri: &str) -> Result<String, AddressError> {
    let sip = SipUri::parse(uri)?;
    let user = sip.user().ok_or(AddressError::MissingLocalpart)?;
    let local = escape_localpart(user);
    check_localpart(&local)?;
    Ok(format!("{local}@{}", domain_from_uri(sip.host(), uri)?))
}

/// The gateway's addressing scheme for SIP users: `user%sipdomain@<gateway domain>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewayAddressing {
    gateway_domain: String,
}

impl GatewayAddressing {
    /// `gateway_domain` is the routing domain the gateway serves, e.g. `sip.xmpp.example`.
    pub fn new(gateway_domain: &str) -> Result<Self, AddressError> {
        check_domain(gateway_domain)?;
        Ok(GatewayAddressing {
            gateway_domain: domain_to_ascii(gateway_domain)?,
        })
    }

    /// The gateway's routing domain, in ASCII.
    pub fn gateway_domain(&self) -> &str {
        &self.gateway_domain
    }

    /// `sip:bob@sip.example` -> `bob%sip.example@<gateway>`; the port, if any, is kept
    /// (`bob%sip.example\3a5062@<gateway>`); URI parameters are dropped.
    pub fn sip_to_jid(&self, uri: &str) -> Result<String, AddressError> {
        let sip = SipUri::parse(uri)?;
        let user = sip.user().ok_or(AddressError::MissingLocalpart)?;
        let mut raw = format!("{user}%{}", sip.host());
        if let Some(port) = sip.port() {
            raw.push_str(&format!(":{port}"));
        }
        let local = escape_localpart(&raw);
        check_localpart(&local)?;
        Ok(format!("{local}@{}", self.gateway_domain))
    }

    /// `bob%sip.example@<gateway>/res` -> `sip:bob@sip.example` (the resource is dropped).
    pub fn jid_to_sip(&self, jid: &str) -> Result<String, AddressError> {
        let parts = split_jid(jid)?;
        if domain_to_ascii(parts.domain)? != self.gateway_domain {
            return Err(AddressError::NotGatewayDomain {
                jid: jid.to_owned(),
                gateway: self.gateway_domain.clone(),
            });
        }
        let local = parts.local.ok_or(AddressError::MissingLocalpart)?;
        let raw = unescape_localpart(local);
        let (user, hostport) = raw
            .rsplit_once('%')
            .ok_or_else(|| AddressError::MissingSipHost(local.to_owned()))?;
        if user.is_empty() {
            return Err(AddressError::MissingLocalpart);
        }
        let (host, port) =
            split_hostport(hostport).ok_or_else(|| AddressError::BadPort(jid.to_owned()))?;
        if host.is_empty() {
            return Err(AddressError::MissingSipHost(local.to_owned()));
        }
        Ok(SipUri::new(false, Some(user), host, port)?.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_jid_parts() {
        let p = split_jid("a@b/c/d@e").unwrap();
        assert_eq!(
            (p.local, p.domain, p.resource),
            (Some("a"), "b", Some("c/d@e"))
        );
        assert_eq!(split_jid("b").unwrap().local, None);
        assert_eq!(split_jid("@b"), Err(AddressError::EmptyPart("localpart")));
        assert_eq!(
            split_jid("a@b/"),
            Err(AddressError::EmptyPart("resourcepart"))
        );
        assert_eq!(split_jid("a@"), Err(AddressError::EmptyPart("domainpart")));
        assert!(matches!(
            split_jid("a b@c"),
            Err(AddressError::ForbiddenChar { ch: ' ', .. })
        ));
        assert!(matches!(
            split_jid("a'b@c"),
            Err(AddressError::ForbiddenChar { ch: '\'', .. })
        ));
        assert_eq!(split_jid(""), Err(AddressError::Empty));
    }

    #[test]
    fn escape_and_unescape_are_inverse_on_canonical_forms() {
        for raw in [
            "o'brien", "a b", "\\27", "\\", "a\\b", "x@y/z", "\\5c", "c:\\5cd",
        ] {
            let esc = escape_localpart(raw);
            assert_eq!(unescape_localpart(&esc), raw, "{raw:?} -> {esc:?}");
        }
        assert_eq!(escape_localpart("\\27"), "\\5c27");
        assert_eq!(escape_localpart("a\\b"), "a\\b");
    }
}
