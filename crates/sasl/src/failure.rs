//! Why a SASL exchange failed: the defined conditions of RFC 6120 §6.5, one variant each.
//!
//! The caller turns a [`Failure`] into `<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>`
//! with the element named by [`Failure::name`]. SCRAM's own `e=` server-error attribute
//! (RFC 5802 §7) is never sent: the XMPP failure element already says what went wrong.

/// A SASL failure condition (RFC 6120 §6.5.1 – §6.5.11).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Failure {
    /// The client aborted the exchange (`<abort/>`).
    #[error("aborted")]
    Aborted,
    /// The account exists but is disabled.
    #[error("account-disabled")]
    AccountDisabled,
    /// The credentials have expired.
    #[error("credentials-expired")]
    CredentialsExpired,
    /// The mechanism may only be used over an encrypted stream.
    #[error("encryption-required")]
    EncryptionRequired,
    /// The base64 of the stream layer could not be decoded.
    #[error("incorrect-encoding")]
    IncorrectEncoding,
    /// The authzid is malformed or the authenticated identity may not act as it.
    #[error("invalid-authzid")]
    InvalidAuthzid,
    /// The requested mechanism is not offered.
    #[error("invalid-mechanism")]
    InvalidMechanism,
    /// The message violates the mechanism's syntax, is out of order or too large.
    #[error("malformed-request")]
    MalformedRequest,
    /// The mechanism is weaker than policy allows for this account.
    #[error("mechanism-too-weak")]
    MechanismTooWeak,
    /// Wrong credentials, unknown user, failed channel binding or downgrade detected.
    #[error("not-authorized")]
    NotAuthorized,
    /// A temporary problem on the server side (also: the caller used the API out of order
    /// or handed over unusable stored credentials).
    #[error("temporary-auth-failure")]
    TemporaryAuthFailure,
}

impl Failure {
    /// The name of the RFC 6120 §6.5 child element of `<failure/>`.
    pub fn name(self) -> &'static str {
        match self {
            Failure::Aborted => "aborted",
            Failure::AccountDisabled => "account-disabled",
            Failure::CredentialsExpired => "credentials-expired",
            Failure::EncryptionRequired => "encryption-required",
            Failure::IncorrectEncoding => "incorrect-encoding",
            Failure::InvalidAuthzid => "invalid-authzid",
            Failure::InvalidMechanism => "invalid-mechanism",
            Failure::MalformedRequest => "malformed-request",
            Failure::MechanismTooWeak => "mechanism-too-weak",
            Failure::NotAuthorized => "not-authorized",
            Failure::TemporaryAuthFailure => "temporary-auth-failure",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_matches_display() {
        for f in [
            Failure::Aborted,
            Failure::AccountDisabled,
            Failure::CredentialsExpired,
            Failure::EncryptionRequired,
            Failure::IncorrectEncoding,
            Failure::InvalidAuthzid,
            Failure::InvalidMechanism,
            Failure::MalformedRequest,
            Failure::MechanismTooWeak,
            Failure::NotAuthorized,
            Failure::TemporaryAuthFailure,
        ] {
            assert_eq!(f.name(), f.to_string());
        }
        assert_eq!(Failure::NotAuthorized.name(), "not-authorized");
    }
}
