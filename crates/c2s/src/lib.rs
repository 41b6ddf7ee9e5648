//! Client-to-server streams (RFC 6120 §4–§7): listeners on 5222 (STARTTLS) and 5223 (direct
//! TLS, XEP-0368), and one task per connection that negotiates TLS, SASL and resource binding
//! and then shuttles stanzas between the socket and the router.
//!
//! What lives where: [`listener`] accepts and enforces connection caps; [`negotiate`] is the
//! pre-bind state machine (stream headers, features, STARTTLS, SASL, bind), calling on
//! `register` for in-band registration (XEP-0077); [`session`] is the bound session loop
//! (from-stamping, IQ checks, outbound queue, timeouts, shutdown), with stream management
//! (XEP-0198: acks, hibernation and resumption) whose state lives in [`smacks`];
//! `throttle` delays repeated failed logins per address and per account, and keeps the
//! penalty box that every transport (TCP, WebSocket, BOSH) asks before opening a stream.

pub mod listener;
mod negotiate;
mod register;
mod session;
mod smacks;
mod throttle;
pub mod tls;
pub mod tls_stream;
mod transport;

pub use listener::{start_listeners, C2sEntry, Carrier, ConnectionRefused, Listeners};
pub use tls::TlsSettings;
