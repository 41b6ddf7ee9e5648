//! SCRAM message syntax (RFC 5802 §7): the GS2 header, `attr=value` lists, saslname
//! escaping (`=2C`, `=3D`), nonces and base64. Parsing only; no cryptography and no policy
//! (which flags are allowed where is decided by the server and the client).

use base64::prelude::{Engine, BASE64_STANDARD};

use crate::{Failure, MAX_MESSAGE_LEN};

/// The `gs2-cbind-flag` of RFC 5802 §7.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CbindFlag {
    /// `n`: the client does not support channel binding.
    No,
    /// `y`: the client supports channel binding but believes the server does not.
    ClientOnly,
    /// `p=<cb-name>`: the client requires channel binding of this type.
    Required(String),
}

/// A parsed client-first-message.
#[derive(Debug, Clone)]
pub(crate) struct ClientFirst<'a> {
    pub flag: CbindFlag,
    /// Decoded `a=` authzid, if any.
    pub authzid: Option<String>,
    /// The GS2 header exactly as sent (including its trailing comma): part of `c=`.
    pub gs2_header: &'a str,
    /// client-first-message-bare: part of AuthMessage.
    pub bare: &'a str,
    /// Decoded `n=` username, not yet PRECIS-prepared.
    pub username: String,
    pub nonce: &'a str,
}

/// A parsed client-final-message.
#[derive(Debug, Clone)]
pub(crate) struct ClientFinal<'a> {
    /// Decoded `c=`.
    pub channel_binding: Vec<u8>,
    pub nonce: &'a str,
    /// client-final-message-without-proof: part of AuthMessage.
    pub without_proof: &'a str,
    /// Decoded `p=`.
    pub proof: Vec<u8>,
}

/// A parsed server-first-message.
#[derive(Debug, Clone)]
pub(crate) struct ServerFirst<'a> {
    pub nonce: &'a str,
    pub salt: Vec<u8>,
    pub iterations: u32,
}

/// A parsed server-final-message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ServerFinal {
    /// `v=`: the decoded ServerSignature.
    Verifier(Vec<u8>),
    /// `e=`: the server reported an error.
    Error(String),
}

/// Checks the size bound and UTF-8 of a whole message.
pub(crate) fn message_str(msg: &[u8]) -> Result<&str, Failure> {
    if msg.len() > MAX_MESSAGE_LEN {
        return Err(Failure::MalformedRequest);
    }
    std::str::from_utf8(msg).map_err(|_| Failure::MalformedRequest)
}

/// The value of `part` if it is `<name>=<value>` with a non-empty value without NUL.
fn attr(part: &str, name: char) -> Result<&str, Failure> {
    let value = part
        .strip_prefix(name)
        .and_then(|rest| rest.strip_prefix('='))
        .ok_or(Failure::MalformedRequest)?;
    if value.is_empty() || value.contains('\0') {
        return Err(Failure::MalformedRequest);
    }
    Ok(value)
}

/// An optional extension attribute: `ALPHA "=" value`. The reserved `m=` is refused
/// (RFC 5802 §5.1: its presence MUST cause authentication failure); others are skipped.
fn extension(part: &str) -> Result<(), Failure> {
    let name = part.chars().next().ok_or(Failure::MalformedRequest)?;
    if !name.is_ascii_alphabetic() || name == 'm' {
        return Err(Failure::MalformedRequest);
    }
    attr(part, name).map(|_| ())
}

/// Decodes a saslname: `=2C` is ',' and `=3D` is '='; any other '=' is malformed.
pub(crate) fn decode_saslname(value: &str) -> Result<String, Failure> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        let escape = rest.get(i + 1..i + 3).ok_or(Failure::MalformedRequest)?;
        out.push(match escape {
            "2C" => ',',
            "3D" => '=',
            _ => return Err(Failure::MalformedRequest),
        });
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    if out.is_empty() {
        return Err(Failure::MalformedRequest);
    }
    Ok(out)
}

/// Encodes a saslname (the inverse of [`decode_saslname`]).
pub(crate) fn encode_saslname(name: &str) -> String {
    name.replace('=', "=3D").replace(',', "=2C")
}

/// A nonce is non-empty printable ASCII other than ','.
fn nonce(value: &str) -> Result<&str, Failure> {
    if value
        .bytes()
        .all(|b| (0x21..=0x7e).contains(&b) && b != b',')
    {
        Ok(value)
    } else {
        Err(Failure::MalformedRequest)
    }
}

/// Strict base64 (standard alphabet, padded, canonical).
pub(crate) fn base64_decode(value: &str) -> Result<Vec<u8>, Failure> {
    BASE64_STANDARD
        .decode(value)
        .map_err(|_| Failure::MalformedRequest)
}

pub(crate) fn base64_encode(data: &[u8]) -> String {
    BASE64_STANDARD.encode(data)
}

/// Parses a client-first-message (RFC 5802 §7 `client-first-message`).
pub(crate) fn parse_client_first(msg: &str) -> Result<ClientFirst<'_>, Failure> {
    let (flag_part, rest) = msg.split_once(',').ok_or(Failure::MalformedRequest)?;
    let (authzid_part, bare) = rest.split_once(',').ok_or(Failure::MalformedRequest)?;
    let flag = match flag_part {
        "n" => CbindFlag::No,
        "y" => CbindFlag::ClientOnly,
        _ => {
            let name = flag_part
                .strip_prefix("p=")
                .ok_or(Failure::MalformedRequest)?;
            let valid = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
            if !valid {
                return Err(Failure::MalformedRequest);
            }
            CbindFlag::Required(name.to_owned())
        }
    };
    let authzid = match authzid_part {
        "" => None,
        part => Some(decode_saslname(attr(part, 'a')?)?),
    };
    let gs2_header = &msg[..flag_part.len() + authzid_part.len() + 2];

    let mut parts = bare.split(',');
    let first = parts.next().unwrap_or_default();
    // `reserved-mext` would come first; refusing it is the same as requiring `n=` here.
    let username = decode_saslname(attr(first, 'n')?)?;
    let nonce = nonce(attr(parts.next().unwrap_or_default(), 'r')?)?;
    parts.try_for_each(extension)?;
    Ok(ClientFirst {
        flag,
        authzid,
        gs2_header,
        bare,
        username,
        nonce,
    })
}

/// Parses a client-final-message (RFC 5802 §7 `client-final-message`).
pub(crate) fn parse_client_final(msg: &str) -> Result<ClientFinal<'_>, Failure> {
    let (without_proof, proof_part) = msg.rsplit_once(',').ok_or(Failure::MalformedRequest)?;
    let proof = base64_decode(attr(proof_part, 'p')?)?;
    let mut parts = without_proof.split(',');
    let channel_binding = base64_decode(attr(parts.next().unwrap_or_default(), 'c')?)?;
    let nonce = nonce(attr(parts.next().unwrap_or_default(), 'r')?)?;
    parts.try_for_each(extension)?;
    Ok(ClientFinal {
        channel_binding,
        nonce,
        without_proof,
        proof,
    })
}

/// Parses a server-first-message (RFC 5802 §7 `server-first-message`).
pub(crate) fn parse_server_first(msg: &str) -> Result<ServerFirst<'_>, Failure> {
    let mut parts = msg.split(',');
    let nonce = nonce(attr(parts.next().unwrap_or_default(), 'r')?)?;
    let salt = base64_decode(attr(parts.next().unwrap_or_default(), 's')?)?;
    let count = attr(parts.next().unwrap_or_default(), 'i')?;
    if !count.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Failure::MalformedRequest);
    }
    let iterations = count.parse().map_err(|_| Failure::MalformedRequest)?;
    parts.try_for_each(extension)?;
    Ok(ServerFirst {
        nonce,
        salt,
        iterations,
    })
}

/// Parses a server-final-message (RFC 5802 §7 `server-final-message`).
pub(crate) fn parse_server_final(msg: &str) -> Result<ServerFinal, Failure> {
    let mut parts = msg.split(',');
    let first = parts.next().unwrap_or_default();
    let result = if first.starts_with("e=") {
        ServerFinal::Error(attr(first, 'e')?.to_owned())
    } else {
        ServerFinal::Verifier(base64_decode(attr(first, 'v')?)?)
    };
    parts.try_for_each(extension)?;
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saslname_escapes() {
        assert_eq!(decode_saslname("a=2Cb=3Dc").unwrap(), "a,b=c");
        assert_eq!(encode_saslname("a,b=c"), "a=2Cb=3Dc");
        for bad in ["a=", "a=2", "a=2c", "=41", "a=3d", ""] {
            assert_eq!(
                decode_saslname(bad),
                Err(Failure::MalformedRequest),
                "{bad}"
            );
        }
    }

    #[test]
    fn client_first_parts() {
        let m = parse_client_first("p=tls-exporter,a=ad=2Cmin,n=us=3Der,r=abc,x=ext").unwrap();
        assert_eq!(m.flag, CbindFlag::Required("tls-exporter".into()));
        assert_eq!(m.authzid.as_deref(), Some("ad,min"));
        assert_eq!(m.gs2_header, "p=tls-exporter,a=ad=2Cmin,");
        assert_eq!(m.bare, "n=us=3Der,r=abc,x=ext");
        assert_eq!(m.username, "us=er");
        assert_eq!(m.nonce, "abc");
        let m = parse_client_first("n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL").unwrap();
        assert_eq!((m.flag, m.gs2_header), (CbindFlag::No, "n,,"));
    }

    #[test]
    fn client_first_invalid() {
        for bad in [
            "",
            "n,",
            "n,,",
            "x,,n=user,r=abc",
            "p=,,n=user,r=abc",
            "p=tls_unique,,n=user,r=abc",
            "n,b=x,n=user,r=abc",
            "n,a=,n=user,r=abc",
            "n,,m=ext,n=user,r=abc",
            "n,,n=user,r=abc,m=ext",
            "n,,r=abc,n=user",
            "n,,n=user",
            "n,,n=,r=abc",
            "n,,n=user,r=",
            "n,,n=user,r=a b",
            "n,,n=user,r=abc,",
            "n,,n=user,r=abc,1=x",
            "n,,n=u=ser,r=abc",
            "n,,n=us\0er,r=abc",
        ] {
            assert!(parse_client_first(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn client_final_parts() {
        let m = parse_client_final("c=biws,r=abcdef,p=dGVzdA==").unwrap();
        assert_eq!(m.channel_binding, b"n,,");
        assert_eq!(m.nonce, "abcdef");
        assert_eq!(m.without_proof, "c=biws,r=abcdef");
        assert_eq!(m.proof, b"test");
        for bad in [
            "c=biws,r=abc",
            "c=biws,p=dGVzdA==",
            "r=abc,c=biws,p=dGVzdA==",
            "c=b!ws,r=abc,p=dGVzdA==",
            "c=biws,r=abc,p=dGVzdA",
            "c=biws,r=abc,p=dGVzdA==,x=y",
            "c=biws,r=abc,m=x,p=dGVzdA==",
        ] {
            assert!(parse_client_final(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn server_messages() {
        let m = parse_server_first("r=abc,s=QSXCR+Q6sek8bf92,i=4096").unwrap();
        assert_eq!((m.nonce, m.iterations), ("abc", 4096));
        for bad in [
            "r=abc,s=QSXCR+Q6sek8bf92",
            "r=abc,s=QSXCR+Q6sek8bf92,i=-1",
            "r=abc,s=QSXCR+Q6sek8bf92,i=+1",
            "r=abc,s=QSXCR+Q6sek8bf92,i=99999999999",
            "m=x,r=abc,s=QSXCR+Q6sek8bf92,i=1",
            "r=abc,s=???,i=1",
        ] {
            assert!(parse_server_first(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            parse_server_final("v=dGVzdA==").unwrap(),
            ServerFinal::Verifier(b"test".to_vec())
        );
        assert_eq!(
            parse_server_final("e=invalid-proof").unwrap(),
            ServerFinal::Error("invalid-proof".into())
        );
        assert!(parse_server_final("x=1").is_err());
    }

    #[test]
    fn oversize_and_non_utf8() {
        assert!(message_str(&vec![b'a'; MAX_MESSAGE_LEN + 1]).is_err());
        assert!(message_str(&vec![b'a'; MAX_MESSAGE_LEN]).is_ok());
        assert!(message_str(b"n,,n=\xff,r=a").is_err());
    }
}
