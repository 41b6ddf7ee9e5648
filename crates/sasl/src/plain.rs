//! PLAIN (RFC 4616): `[authzid] NUL authcid NUL passwd`, checked against the stored SCRAM
//! credentials by deriving them again from the offered password (we keep no clear passwords).
//!
//! Offering PLAIN only on encrypted streams is the caller's policy (DESIGN.md: "PLAIN only
//! inside TLS").

use precis_profiles::precis_core::profile::PrecisFastInvocation;
use precis_profiles::UsernameCaseMapped;
use subtle::ConstantTimeEq;

use crate::scram::{prepare_password, ScramCredentials, ScramHash};
use crate::session::Step;
use crate::{Failure, DEFAULT_ITERATIONS, MAX_MESSAGE_LEN};

/// Builds a PLAIN message (the client side, for tests and the client library).
pub fn plain_message(authzid: Option<&str>, username: &str, password: &str) -> Vec<u8> {
    let mut msg = Vec::with_capacity(username.len() + password.len() + 2);
    msg.extend_from_slice(authzid.unwrap_or_default().as_bytes());
    msg.push(0);
    msg.extend_from_slice(username.as_bytes());
    msg.push(0);
    msg.extend_from_slice(password.as_bytes());
    msg
}

pub(crate) enum PlainServer {
    /// Waiting for the message; `prompted` once an empty challenge asked for it.
    Start {
        prompted: bool,
    },
    /// Waiting for the stored credentials of `username`.
    NeedCredentials {
        username: String,
        authzid: Option<String>,
        /// OpaqueString-prepared.
        password: String,
    },
    Done,
}

impl PlainServer {
    pub(crate) fn new() -> PlainServer {
        PlainServer::Start { prompted: false }
    }

    pub(crate) fn step(&mut self, input: &[u8]) -> Result<Step, Failure> {
        match std::mem::replace(self, PlainServer::Done) {
            PlainServer::Start { prompted } => {
                if input.is_empty() && !prompted {
                    *self = PlainServer::Start { prompted: true };
                    return Ok(Step::Challenge(Vec::new()));
                }
                let (username, authzid, password) = parse(input)?;
                *self = PlainServer::NeedCredentials {
                    username: username.clone(),
                    authzid,
                    password,
                };
                Ok(Step::NeedCredentials {
                    username,
                    hash: ScramHash::Sha256,
                })
            }
            PlainServer::NeedCredentials { .. } | PlainServer::Done => {
                Err(Failure::MalformedRequest)
            }
        }
    }

    pub(crate) fn provide_credentials(
        &mut self,
        creds: Option<ScramCredentials>,
    ) -> Result<Step, Failure> {
        let PlainServer::NeedCredentials {
            username,
            authzid,
            password,
        } = std::mem::replace(self, PlainServer::Done)
        else {
            return Err(Failure::TemporaryAuthFailure);
        };
        let Some(creds) = creds else {
            // Spend the same PBKDF2 work as for a real account, then fail.
            let _ = ScramHash::Sha256.hi(password.as_bytes(), &[0u8; 16], DEFAULT_ITERATIONS);
            return Err(Failure::NotAuthorized);
        };
        if !creds.usable_with(creds.hash) {
            return Err(Failure::TemporaryAuthFailure);
        }
        let salted = creds
            .hash
            .hi(password.as_bytes(), &creds.salt, creds.iterations);
        let offered =
            ScramCredentials::from_salted(creds.hash, Vec::new(), creds.iterations, &salted);
        let same = offered.stored_key.ct_eq(&creds.stored_key)
            & offered.server_key.ct_eq(&creds.server_key);
        if !bool::from(same) {
            return Err(Failure::NotAuthorized);
        }
        Ok(Step::Success {
            username,
            authzid,
            additional_data: None,
        })
    }
}

/// Splits and prepares a PLAIN message: (UsernameCaseMapped authcid, authzid, password).
fn parse(input: &[u8]) -> Result<(String, Option<String>, String), Failure> {
    if input.len() > MAX_MESSAGE_LEN {
        return Err(Failure::MalformedRequest);
    }
    let mut parts = input.split(|&b| b == 0);
    let (Some(authzid), Some(authcid), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Failure::MalformedRequest);
    };
    let text = |bytes| std::str::from_utf8(bytes).map_err(|_| Failure::MalformedRequest);
    let (authzid, authcid, password) = (text(authzid)?, text(authcid)?, text(password)?);
    if authcid.is_empty() || password.is_empty() {
        return Err(Failure::MalformedRequest);
    }
    // Names or passwords PRECIS refuses can belong to no account: not-authorized.
    let username = UsernameCaseMapped::enforce(authcid)
        .map_err(|_| Failure::NotAuthorized)?
        .into_owned();
    let password = prepare_password(password).map_err(|_| Failure::NotAuthorized)?;
    let authzid = (!authzid.is_empty()).then(|| authzid.to_owned());
    Ok((username, authzid, password))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_layout() {
        assert_eq!(plain_message(None, "juliet", "r0m30"), b"\0juliet\0r0m30");
        assert_eq!(
            plain_message(Some("admin@example.org"), "juliet", "r0m30"),
            b"admin@example.org\0juliet\0r0m30"
        );
    }

    #[test]
    fn parse_prepares_and_rejects() {
        let (user, authzid, pw) = parse(b"\0Juliet\0r0m30").unwrap();
        assert_eq!(
            (user.as_str(), authzid, pw.as_str()),
            ("juliet", None, "r0m30")
        );
        for bad in [
            &b"juliet\0r0m30"[..],
            b"\0\0r0m30",
            b"\0juliet\0",
            b"\0juliet\0r0m30\0",
            b"\0jul\xffiet\0r0m30",
        ] {
            assert_eq!(
                parse(bad).unwrap_err(),
                Failure::MalformedRequest,
                "{bad:?}"
            );
        }
        let mut big = plain_message(None, "juliet", "");
        big.resize(MAX_MESSAGE_LEN + 1, b'a');
        assert_eq!(parse(&big).unwrap_err(), Failure::MalformedRequest);
    }
}
