//! `starling-sipgw`: the SIP/SIMPLE gateway of RFC 3922, built on `starling-cpim`.
//!
//! The gateway is a module that serves one XMPP domain as a whole (`sip.<host>` by default,
//! [`starling_core::Module::served_domains`]) and a small SIP user agent on UDP and TCP. SIP
//! users appear in XMPP as `user%sipdomain@<gateway domain>` (RFC 3922 §3 leaves the
//! scheme to the gateway; `%` is what Kamailio's and ejabberd's transports use too); XMPP
//! users appear in SIP as `sip:user@<xmpp host>`, reached by sending to the gateway's
//! address.
//!
//! | module | owns |
//! |---|---|
//! | [`sip`] | SIP message parse/print, no I/O (RFC 3261 §7, §20) |
//! | `transport` | UDP + TCP, non-INVITE client and server transactions, limits |
//! | `gateway` | the module: routing, SIP MESSAGE <-> XMPP message (RFC 3922 §4, RFC 3428) |
//! | `presence` | SUBSCRIBE/NOTIFY with PIDF <-> XMPP subscriptions and presence (RFC 3922 §5–6, RFC 3856, RFC 6665) |
//! | [`errors`] | SIP status <-> XMPP stanza error (RFC 3922 §6, RFC 7247 §8) |
//!
//! Trust: a SIP peer can never speak as an XMPP user. Every stanza the gateway routes has a
//! `from` in the gateway's own domain, built from the SIP From header, whatever the body
//! claims (CPIM From, PIDF entity); requests are taken only from the IP addresses of the
//! configured routes, and only for From domains that have a route.
//!
//! RFC 3923 (§8): a message whose body is an S/MIME object (`application/pkcs7-mime`,
//! `multipart/signed`) is forwarded unchanged: the `<e2e/>` text becomes the SIP body and its
//! MIME header fields become SIP header fields, and back.
//!
//! Where the gateway follows the later SIP-XMPP RFCs instead of RFC 3922: SIP addresses are
//! `sip:` URIs rather than `im:`/`pres:` (RFC 7247 §5; RFC 3922 maps to abstract CPIM);
//! statuses map to stanza errors by RFC 7247 §8's table beyond the three conditions RFC 3922
//! names; with `message_format = "text"` messages are plain text with a SIP Subject (RFC 7572)
//! rather than Message/CPIM.
//!
//! Why the SIP layer is ours and not `ezk-sip-core`/`ezk-sip-types` (which DESIGN picked):
//! checked at 0.9.2, its transports accept TCP connections without a cap, spawn a task per
//! received message, loop forever with no way to stop them at shutdown, log through `log`
//! rather than `tracing`, cannot report the port of a TCP listener bound to port 0, and bring
//! `hickory-resolver` 0.26 and a second `rand`. The gateway needs only non-INVITE
//! transactions (MESSAGE, SUBSCRIBE, NOTIFY), which fit in [`sip`] (no I/O) and `transport`
//! with every table bounded by `[sip]` limits.

pub mod errors;
mod gateway;
mod presence;
pub mod sip;
mod transport;

pub use gateway::{Gateway, GatewayError};

/// A random token for tags, branches and Call-IDs (RFC 3261 §19.3: 32 bits of randomness at
/// least; we use 64).
pub(crate) fn random_token() -> String {
    format!("{:016x}", rand::random::<u64>())
}
