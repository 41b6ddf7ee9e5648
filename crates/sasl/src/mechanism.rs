//! Mechanism names (the IANA SASL registry strings of RFC 5802 §4, RFC 7677 §2, RFC 4616,
//! RFC 4422 appendix A) and channel-binding types with their data (RFC 5056, RFC 9266,
//! RFC 5929 §4).

use crate::scram::ScramHash;

/// A SASL mechanism the server can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mechanism {
    ScramSha256Plus,
    ScramSha1Plus,
    ScramSha256,
    ScramSha1,
    Plain,
    External,
}

impl Mechanism {
    /// Every mechanism, strongest first (the order in which to advertise them).
    pub const ALL: [Mechanism; 6] = [
        Mechanism::ScramSha256Plus,
        Mechanism::ScramSha1Plus,
        Mechanism::ScramSha256,
        Mechanism::ScramSha1,
        Mechanism::Plain,
        Mechanism::External,
    ];

    /// The registered mechanism name, as sent in `<mechanism/>` and `<auth mechanism=…>`.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::ScramSha256Plus => "SCRAM-SHA-256-PLUS",
            Mechanism::ScramSha1Plus => "SCRAM-SHA-1-PLUS",
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
            Mechanism::ScramSha1 => "SCRAM-SHA-1",
            Mechanism::Plain => "PLAIN",
            Mechanism::External => "EXTERNAL",
        }
    }

    /// Parses a mechanism name; SASL names are case-sensitive upper case (RFC 4422 §3.1).
    pub fn from_name(name: &str) -> Option<Mechanism> {
        Mechanism::ALL.into_iter().find(|m| m.name() == name)
    }

    /// The SCRAM hash, for the SCRAM family.
    pub fn scram_hash(self) -> Option<ScramHash> {
        match self {
            Mechanism::ScramSha256Plus | Mechanism::ScramSha256 => Some(ScramHash::Sha256),
            Mechanism::ScramSha1Plus | Mechanism::ScramSha1 => Some(ScramHash::Sha1),
            Mechanism::Plain | Mechanism::External => None,
        }
    }

    /// Whether this is a -PLUS (channel-binding) mechanism.
    pub fn is_plus(self) -> bool {
        matches!(self, Mechanism::ScramSha256Plus | Mechanism::ScramSha1Plus)
    }

    /// The SCRAM mechanism for `hash`, with or without channel binding.
    pub fn scram(hash: ScramHash, plus: bool) -> Mechanism {
        match (hash, plus) {
            (ScramHash::Sha256, true) => Mechanism::ScramSha256Plus,
            (ScramHash::Sha256, false) => Mechanism::ScramSha256,
            (ScramHash::Sha1, true) => Mechanism::ScramSha1Plus,
            (ScramHash::Sha1, false) => Mechanism::ScramSha1,
        }
    }
}

/// A channel-binding type (the `p=` value of the GS2 header).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChannelBindingType {
    /// RFC 9266: TLS 1.3 exporter, label "EXPORTER-Channel-Binding", 32 bytes, no context.
    TlsExporter,
    /// RFC 5929 §4: hash of the server's certificate.
    TlsServerEndPoint,
}

impl ChannelBindingType {
    /// The registered name ("tls-exporter", "tls-server-end-point").
    pub fn name(self) -> &'static str {
        match self {
            ChannelBindingType::TlsExporter => "tls-exporter",
            ChannelBindingType::TlsServerEndPoint => "tls-server-end-point",
        }
    }

    /// Parses a registered name; unknown names (e.g. "tls-unique") give `None`.
    pub fn from_name(name: &str) -> Option<ChannelBindingType> {
        [
            ChannelBindingType::TlsExporter,
            ChannelBindingType::TlsServerEndPoint,
        ]
        .into_iter()
        .find(|t| t.name() == name)
    }
}

/// Channel-binding data of one type for the current TLS connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelBinding {
    /// Which binding this data is for.
    pub kind: ChannelBindingType,
    /// The bytes the TLS layer computed (exporter output or certificate hash).
    pub data: Vec<u8>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for m in Mechanism::ALL {
            assert_eq!(Mechanism::from_name(m.name()), Some(m));
        }
        assert_eq!(Mechanism::from_name("scram-sha-1"), None);
        assert_eq!(Mechanism::from_name("DIGEST-MD5"), None);
        assert_eq!(
            ChannelBindingType::from_name("tls-exporter"),
            Some(ChannelBindingType::TlsExporter)
        );
        assert_eq!(ChannelBindingType::from_name("tls-unique"), None);
        assert_eq!(
            Mechanism::scram(ScramHash::Sha1, true),
            Mechanism::ScramSha1Plus
        );
        assert!(Mechanism::ScramSha1Plus.is_plus() && !Mechanism::Plain.is_plus());
    }
}
