//! Errors of the RFC 3923 receiver and sender, and the §7 error conditions they map to.
//!
//! RFC 3923 §7 defines three application-specific conditions, all with `type='modify'`:
//! a failed timestamp check (§6) is `<not-acceptable/>` + `<bad-timestamp/>`, a signature that
//! cannot be verified is `<not-acceptable/>` + `<unverified-signature/>`, and an object that
//! cannot be decrypted is `<bad-request/>` + `<decryption-failed/>`. A recipient that does not
//! support the protocol at all may answer `<service-unavailable/>` with no application element.
//!
//! The RFC is inconsistent about spellings: its examples put the application elements in
//! `urn:ietf:params:xml:xmpp-e2e` (no `ns:`), the schema (Appendix A) and IANA registration use
//! `urn:ietf:params:xml:ns:xmpp-e2e`, and the schema names `signature-unverified` where the
//! prose says `unverified-signature`. We emit the prose name in the `ns:` namespace and accept
//! every spelling when parsing.

use minidom::Element;

/// The namespace of `<e2e/>` and of the §7 application conditions (schema and IANA spelling).
pub const E2E_NS: &str = "urn:ietf:params:xml:ns:xmpp-e2e";
/// The namespace spelling used by the RFC's own examples; accepted on input, never emitted.
pub const E2E_NS_EXAMPLES: &str = "urn:ietf:params:xml:xmpp-e2e";
/// RFC 6120 stanza error conditions.
pub const STANZAS_NS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";

/// One of the RFC 3923 §7 error conditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Condition {
    /// §7: the timestamp check of §6 failed.
    BadTimestamp,
    /// §7: the signature could not be verified (bad signature, untrusted or mismatched signer).
    UnverifiedSignature,
    /// §7: the object could not be decrypted.
    DecryptionFailed,
    /// §7: the recipient does not support RFC 3923 at all.
    NotSupported,
}

impl Condition {
    /// The application-specific element name we emit, or `None` when the condition has none.
    pub fn app_name(self) -> Option<&'static str> {
        match self {
            Condition::BadTimestamp => Some("bad-timestamp"),
            Condition::UnverifiedSignature => Some("unverified-signature"),
            Condition::DecryptionFailed => Some("decryption-failed"),
            Condition::NotSupported => None,
        }
    }

    /// The RFC 6120 defined condition that accompanies it.
    pub fn stanza_condition(self) -> &'static str {
        match self {
            Condition::BadTimestamp | Condition::UnverifiedSignature => "not-acceptable",
            Condition::DecryptionFailed => "bad-request",
            Condition::NotSupported => "service-unavailable",
        }
    }

    /// The error `type` attribute: `modify` for the three §7 conditions, `cancel` for
    /// `service-unavailable` (RFC 6120 §8.3.3.19).
    pub fn error_type(self) -> &'static str {
        match self {
            Condition::NotSupported => "cancel",
            _ => "modify",
        }
    }

    /// Builds the `<error/>` child of an error stanza for this condition.
    pub fn to_error_element(self) -> Element {
        let mut error = Element::builder("error", "jabber:client")
            .attr(
                minidom::rxml::NcName::try_from("type").expect("valid NCName"),
                self.error_type(),
            )
            .append(Element::builder(self.stanza_condition(), STANZAS_NS).build());
        if let Some(name) = self.app_name() {
            error = error.append(Element::builder(name, E2E_NS).build());
        }
        error.build()
    }

    /// Recognises the application-specific condition element, in any of the spellings the
    /// RFC uses (both namespaces; `unverified-signature` and `signature-unverified`).
    pub fn from_app_element(element: &Element) -> Option<Condition> {
        let ns = element.ns();
        if ns != E2E_NS && ns != E2E_NS_EXAMPLES {
            return None;
        }
        match element.name() {
            "bad-timestamp" => Some(Condition::BadTimestamp),
            "unverified-signature" | "signature-unverified" => Some(Condition::UnverifiedSignature),
            "decryption-failed" => Some(Condition::DecryptionFailed),
            _ => None,
        }
    }

    /// Reads the condition from an `<error/>` element: the application element if one is
    /// present, else `service-unavailable` as [`Condition::NotSupported`].
    pub fn from_error_element(error: &Element) -> Option<Condition> {
        if let Some(found) = error.children().find_map(Condition::from_app_element) {
            return Some(found);
        }
        error
            .children()
            .any(|c| c.name() == "service-unavailable" && c.ns() == STANZAS_NS)
            .then_some(Condition::NotSupported)
    }
}

/// Why a timestamp failed the §6 checks; the RFC suggests showing the stanza marked as such.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampFault {
    /// Older than the window allows.
    Old,
    /// Further in the future than the window allows.
    Future,
    /// Not greater than a timestamp already accepted from the same sender (a replay).
    Decreasing,
    /// No timestamp, or one that is not RFC 3339.
    Missing,
}

/// Errors of this crate. Each receiver-side variant maps to one §7 condition through
/// [`E2eError::condition`]; sender-side failures map to none (they are our own fault).
#[derive(Debug, thiserror::Error)]
pub enum E2eError {
    /// §6 timestamp check failed.
    #[error("bad timestamp: {0:?}")]
    BadTimestamp(TimestampFault),
    /// The signature does not verify over the content (tampering or wrong key).
    #[error("signature does not verify: {0}")]
    BadSignature(String),
    /// The signer certificate does not chain to a trust anchor, or is not valid now.
    #[error("signer certificate not trusted: {0}")]
    UntrustedSigner(String),
    /// The signer certificate is valid but names someone other than the sender (§6: the
    /// `from` bare JID must be one of the certificate's addresses).
    #[error("signer is not {expected}; certificate names {found:?}")]
    SignerMismatch {
        /// The sender's bare JID the caller expected.
        expected: String,
        /// The XMPP addresses the certificate does carry, to show to the user.
        found: Vec<String>,
    },
    /// A signed object we cannot parse or whose algorithms we do not implement.
    #[error("unusable signed object: {0}")]
    MalformedSigned(String),
    /// No recipient info in the object is for our certificate, or we hold no key.
    #[error("no recipient info for our key")]
    NoRecipient,
    /// Key transport or content decryption failed.
    #[error("decryption failed: {0}")]
    Decryption(String),
    /// An encrypted object we cannot parse or whose algorithms we do not implement.
    #[error("unusable encrypted object: {0}")]
    MalformedEncrypted(String),
    /// The `<e2e/>` payload or MIME structure is not what RFC 3923 describes.
    #[error("malformed payload: {0}")]
    MalformedPayload(String),
    /// A local failure while building an object (bad key, encoder error).
    #[error("cannot build object: {0}")]
    Build(String),
    /// A PEM or DER credential that cannot be read.
    #[error("bad credential: {0}")]
    Credential(String),
}

impl E2eError {
    /// The §7 condition a receiver answers with, or `None` for sender-side failures.
    pub fn condition(&self) -> Option<Condition> {
        match self {
            E2eError::BadTimestamp(_) => Some(Condition::BadTimestamp),
            E2eError::BadSignature(_)
            | E2eError::UntrustedSigner(_)
            | E2eError::SignerMismatch { .. }
            | E2eError::MalformedSigned(_) => Some(Condition::UnverifiedSignature),
            E2eError::NoRecipient | E2eError::Decryption(_) | E2eError::MalformedEncrypted(_) => {
                Some(Condition::DecryptionFailed)
            }
            E2eError::MalformedPayload(_) => Some(Condition::DecryptionFailed),
            E2eError::Build(_) | E2eError::Credential(_) => None,
        }
    }
}

/// Result alias of this crate.
pub type Result<T, E = E2eError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_elements_carry_exact_names() {
        let e = Condition::DecryptionFailed.to_error_element();
        assert_eq!(e.attr("type"), Some("modify"));
        assert!(e.has_child("bad-request", STANZAS_NS));
        assert!(e.has_child("decryption-failed", E2E_NS));
        let e = Condition::BadTimestamp.to_error_element();
        assert!(e.has_child("not-acceptable", STANZAS_NS));
        assert!(e.has_child("bad-timestamp", E2E_NS));
        let e = Condition::UnverifiedSignature.to_error_element();
        assert!(e.has_child("unverified-signature", E2E_NS));
        assert_eq!(
            Condition::from_error_element(&e),
            Some(Condition::UnverifiedSignature)
        );
    }

    #[test]
    fn all_rfc_spellings_are_accepted() {
        for ns in [E2E_NS, E2E_NS_EXAMPLES] {
            for name in ["unverified-signature", "signature-unverified"] {
                let el = Element::builder(name, ns).build();
                assert_eq!(
                    Condition::from_app_element(&el),
                    Some(Condition::UnverifiedSignature)
                );
            }
        }
        let other = Element::builder("bad-timestamp", "urn:example").build();
        assert_eq!(Condition::from_app_element(&other), None);
    }
}
