//! [`ServerSession`]: one SASL exchange on the server, whatever the mechanism, driven by the
//! stream layer (RFC 6120 §6.4): each `<auth/>` or `<response/>` payload goes to
//! [`ServerSession::step`], each [`Step`] becomes a `<challenge/>`, `<success/>` or a storage
//! lookup, each [`Failure`] a `<failure/>`.
//!
//! After a failure or a success the session accepts nothing more: a new `<auth/>` needs a
//! new session.

use crate::external::ExternalServer;
use crate::plain::PlainServer;
use crate::scram::server::ScramServer;
use crate::{ChannelBinding, Failure, Mechanism, ScramCredentials, ScramHash};

/// What the caller must do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Look up the account's credentials for `hash` (the username is UsernameCaseMapped) and
    /// call [`ServerSession::provide_credentials`].
    NeedCredentials { username: String, hash: ScramHash },
    /// Send `<challenge/>` with these bytes (base64 on the wire; empty is sent as "=").
    Challenge(Vec<u8>),
    /// Authenticated: send `<success/>` with `additional_data` if any. `authzid` is what the
    /// client asked to act as; whether it may is the caller's decision (`invalid-authzid`).
    /// For EXTERNAL `username` is empty: see the crate's `external` module documentation.
    Success {
        username: String,
        authzid: Option<String>,
        additional_data: Option<Vec<u8>>,
    },
}

/// A server-side SASL exchange for one `<auth/>`.
pub struct ServerSession {
    mechanism: Mechanism,
    inner: Inner,
}

enum Inner {
    Scram(ScramServer),
    Plain(PlainServer),
    External(ExternalServer),
}

impl std::fmt::Debug for ServerSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerSession")
            .field("mechanism", &self.mechanism)
            .finish_non_exhaustive()
    }
}

impl ServerSession {
    /// Starts an exchange.
    ///
    /// `bindings`: channel-binding data of this connection (empty when not on TLS);
    /// `plus_offered`: whether the server advertised any -PLUS mechanism (needed for the `y`
    /// flag downgrade check of RFC 5802 §6).
    pub fn new(
        mech: Mechanism,
        bindings: Vec<ChannelBinding>,
        plus_offered: bool,
    ) -> ServerSession {
        let inner = match mech.scram_hash() {
            Some(hash) => Inner::Scram(ScramServer::new(
                hash,
                mech.is_plus(),
                bindings,
                plus_offered,
            )),
            None if mech == Mechanism::Plain => Inner::Plain(PlainServer::new()),
            None => Inner::External(ExternalServer::new()),
        };
        ServerSession {
            mechanism: mech,
            inner,
        }
    }

    /// Like [`ServerSession::new`] with a fixed server nonce part, for the RFC test vectors.
    /// Never use it on a real connection.
    #[doc(hidden)]
    pub fn with_nonce(
        mech: Mechanism,
        bindings: Vec<ChannelBinding>,
        plus_offered: bool,
        fixed: &str,
    ) -> ServerSession {
        let mut session = ServerSession::new(mech, bindings, plus_offered);
        if let Inner::Scram(scram) = &mut session.inner {
            scram.set_fixed_nonce(fixed);
        }
        session
    }

    /// Sets the server secret from which SCRAM derives the fake salt of unknown users.
    /// Configure a stable secret so that the fake salt does not change when the server
    /// restarts (which would tell a patient observer that the account does not exist);
    /// without it a random per-process secret is used.
    pub fn with_fake_salt_key(mut self, key: &[u8]) -> ServerSession {
        if let Inner::Scram(scram) = &mut self.inner {
            scram.set_fake_salt_key(key);
        }
        self
    }

    /// The mechanism of this exchange.
    pub fn mechanism(&self) -> Mechanism {
        self.mechanism
    }

    /// Feeds the client's next message (already base64-decoded by the stream layer; the
    /// initial response of `<auth/>`, or empty if it had none).
    pub fn step(&mut self, input: &[u8]) -> Result<Step, Failure> {
        match &mut self.inner {
            Inner::Scram(s) => s.step(input),
            Inner::Plain(p) => p.step(input),
            Inner::External(e) => e.step(input),
        }
    }

    /// Answers [`Step::NeedCredentials`]. `None` means no such user: SCRAM then continues
    /// with a deterministic fake salt derived from the username and a server secret, so that
    /// the challenge does not reveal whether the user exists, and fails at the end with
    /// `not-authorized`; PLAIN spends the same PBKDF2 work and fails. Credentials for another
    /// hash than the one asked for, or unusable ones, give `temporary-auth-failure`; so does
    /// calling this when no credentials were asked for.
    pub fn provide_credentials(
        &mut self,
        creds: Option<ScramCredentials>,
    ) -> Result<Step, Failure> {
        match &mut self.inner {
            Inner::Scram(s) => s.provide_credentials(creds),
            Inner::Plain(p) => p.provide_credentials(creds),
            Inner::External(_) => Err(Failure::TemporaryAuthFailure),
        }
    }
}
