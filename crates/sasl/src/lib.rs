//! starling-sasl: the server side (and, for tests and the benchmark, the client side) of the
//! SASL mechanisms Starling offers on c2s and s2s, as pure step functions with no I/O.
//!
//! Owns: PLAIN (RFC 4616), SCRAM-SHA-1 and SCRAM-SHA-256 with their -PLUS variants
//! (RFC 5802, RFC 7677; channel binding `tls-exporter` of RFC 9266 and `tls-server-end-point`
//! of RFC 5929), EXTERNAL (RFC 4422 appendix A), the SCRAM credential derivation used when an
//! account's password is set, and the failure conditions of RFC 6120 §6.5.
//!
//! Does not own: base64 on the XMPP wire (`<auth/>`, `<challenge/>` … carry base64 that the
//! stream layer decodes before calling [`ServerSession::step`]), choosing which mechanisms to
//! offer, storage, rate limiting of failed attempts, checking that an authzid may be used,
//! and reading identities from certificates (EXTERNAL).
//!
//! # Why not `rsasl`
//! DESIGN.md names `rsasl`. We wrote SCRAM as our own small state machine on the RustCrypto
//! primitives instead: the server must look the account's credentials up in async storage
//! *between* the client-first message and the server-first message, and rsasl's callback
//! model (a synchronous callback asked for the credentials from inside the mechanism) makes
//! that awkward. Here the mechanism simply returns [`Step::NeedCredentials`] and the caller
//! answers with [`ServerSession::provide_credentials`] whenever its storage has replied.
//!
//! # How a caller drives a session
//! ```
//! use starling_sasl::*;
//! let creds = derive_credentials("pencil", ScramHash::Sha256, 4096, b"0123456789abcdef").unwrap();
//! let mut client = ScramClient::new(ScramHash::Sha256, "user", "pencil", None, false);
//! let mut server = ServerSession::new(Mechanism::ScramSha256, Vec::new(), false);
//! let Step::NeedCredentials { username, .. } = server.step(&client.client_first()).unwrap()
//!     else { unreachable!() };
//! assert_eq!(username, "user"); // ... the caller reads the account from storage here ...
//! let Step::Challenge(server_first) = server.provide_credentials(Some(creds)).unwrap()
//!     else { unreachable!() };
//! let client_final = client.handle_server_first(&server_first).unwrap();
//! let Step::Success { additional_data, .. } = server.step(&client_final).unwrap()
//!     else { unreachable!() };
//! client.verify_server_final(&additional_data.unwrap()).unwrap();
//! ```
//!
//! Names given to the caller are prepared with PRECIS (RFC 8265): usernames with
//! UsernameCaseMapped, passwords with OpaqueString (as RFC 7677 asks in place of SASLprep).

mod external;
mod failure;
mod mechanism;
mod plain;
mod scram;
mod session;

pub use failure::Failure;
pub use mechanism::{ChannelBinding, ChannelBindingType, Mechanism};
pub use plain::plain_message;
pub use scram::client::ScramClient;
pub use scram::{derive_credentials, new_credentials, ScramCredentials, ScramHash};
pub use session::{ServerSession, Step};

/// Iteration count for newly derived SCRAM credentials (the minimum RFC 7677 §4 recommends,
/// and what Prosody and ejabberd use); also the count given for unknown users.
pub const DEFAULT_ITERATIONS: u32 = 4096;

/// Largest SASL message (after the stream layer's base64 decoding) any mechanism accepts.
/// Real messages are a few hundred bytes; anything larger is `malformed-request`.
pub const MAX_MESSAGE_LEN: usize = 4096;
