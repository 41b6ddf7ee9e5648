//! EXTERNAL (RFC 4422 appendix A; XMPP use in RFC 6120 §6.4 and XEP-0178): the identity
//! comes from outside SASL, here the TLS client certificate.
//!
//! This mechanism only reads the optional authzid the client asks for. It does **not**
//! authenticate anyone: [`crate::Step::Success`] carries an empty `username`, and the caller
//! must take the identity from the certificate's subjectAltName (xmppAddr / dNSName, parsed
//! structurally, never from a flattened DN string: CVE-2025-59154) and then decide whether
//! that identity may act as the requested authzid.

use crate::session::Step;
use crate::{Failure, MAX_MESSAGE_LEN};

pub(crate) struct ExternalServer {
    done: bool,
}

impl ExternalServer {
    pub(crate) fn new() -> ExternalServer {
        ExternalServer { done: false }
    }

    /// `input` is the authzid; empty (or "=", the XMPP spelling of an empty response if the
    /// stream layer hands it over undecoded) means "the identity of the certificate".
    pub(crate) fn step(&mut self, input: &[u8]) -> Result<Step, Failure> {
        if std::mem::replace(&mut self.done, true) || input.len() > MAX_MESSAGE_LEN {
            return Err(Failure::MalformedRequest);
        }
        let authzid = match input {
            b"" | b"=" => None,
            _ => {
                let text = std::str::from_utf8(input).map_err(|_| Failure::MalformedRequest)?;
                if text.contains('\0') {
                    return Err(Failure::MalformedRequest);
                }
                Some(text.to_owned())
            }
        };
        Ok(Step::Success {
            username: String::new(),
            authzid,
            additional_data: None,
        })
    }
}
