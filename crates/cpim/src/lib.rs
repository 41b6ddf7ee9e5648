//! `starling-cpim`: the RFC 3922 mapping between XMPP and CPIM, with no I/O.
//!
//! | module | implements |
//! |---|---|
//! | [`address`] | RFC 3922 §3 (JID <-> `im:`/`pres:`), `sip:` URIs (RFC 3261 §19.1) and the gateway's `user%sipdomain@sip.<domain>` scheme |
//! | [`cpim`] | RFC 3862 Message/CPIM: parser and writer, header escapes, the encapsulated MIME entity |
//! | [`message`] | RFC 3922 §4: XMPP `<message/>` <-> Message/CPIM |
//! | [`pidf`] | RFC 3863 PIDF: document type, writer and parser (plus RFC 3922's `pidf:im` status) |
//! | [`presence`] | RFC 3922 §5 and §6 (notify): XMPP `<presence/>` <-> PIDF, priority scaling, tuple ids |
//! | [`subscription`] | RFC 3922 §6: subscription stanzas <-> CPP subscribe/response operations |
//! | [`datetime`] | RFC 3339 timestamps (CPIM DateTime, PIDF timestamp, XEP-0203 stamp) |
//!
//! Stanzas are `minidom::Element`s in `jabber:client` (`jabber:server` is accepted on input).
//! JIDs are `&str`, lightly validated here; full RFC 7622 preparation is the proto crate's job.
//! There is no clock: callers pass "now" as a [`DateTime`].
//!
//! # Where this crate departs from RFC 3922, or picks among the newer RFCs
//! RFC 3922 is followed unless it is unworkable. The later SIP-XMPP RFCs (7247, 7572, 8048) map
//! straight to SIP with `sip:` URIs, keep the resource as a GRUU, and use RPID for `<show/>`;
//! this library does not follow them on those points (the gateway crate may, on the SIP side).
//! Each point where it does differ from the letter of RFC 3922:
//! 1. **`?` is percent-encoded** in `im:`/`pres:` local parts. RFC 3922 §3.1 lists `?` among
//!    the bytes left as they are, but RFC 3860/3859 use `?` to start URI headers, so
//!    `im:who?@x` would not parse back. (Unworkable as written.)
//! 2. **JID escaping uses the whole XEP-0106 set** (`\20 \22 \26 \27 \2f \3a \3c \3e \40 \5c`),
//!    not only RFC 3922 §3.2's `&` `'` `/`, and writes them in XEP-0106 `\xx` form, which
//!    replaced the draft's `#26;` form RFC 3922 shows. The RFC's `#26;`/`#27;`/`#2f;` are
//!    accepted on input, and [`address::JidEscaping::Rfc3922`] writes them on output.
//! 3. **Domains go through IDNA** (ToASCII towards URIs, ToUnicode towards JIDs); RFC 3922
//!    makes nameprep optional and says nothing about ACE.
//! 4. **No nodeprep / PRECIS**: RFC 3922 makes it optional; the proto crate does it.
//! 5. **Zero-tuple PIDF**: §6 says such a document SHOULD map to presence from the bare JID
//!    and §5 says one with only notes MUST NOT be mapped; we map "no tuples, no notes" to an
//!    `unavailable` presence from the bare JID and "notes only" to nothing.
//! 6. **`<show/>`**: RFC 3922 §5 calls the `<im:im>` mapping provisional and shows only
//!    away -> `away` and dnd -> `busy`; we also send xa as `away` and chat as no extended status
//!    (both lossy), and read back only `away` and `busy`.
//! 7. **Priority scale**: RFC 3922 §5 fixes the end points and examples but not the curve; we
//!    use `floor(1000p/127)/1000`, which reproduces its examples (1 -> 0.007, 2 -> 0.015,
//!    13 -> 0.102, 126 -> 0.992, 127 -> 1) and inverts exactly.
//! 8. **Tuple ids**: RFC 3922 §5 maps the resource to the tuple id; a resource is not always an
//!    XML ID, so resources that are not NCNames (or start with `_`) are hex-encoded behind `_`
//!    ([`presence::tuple_id_for_resource`]).
//! 9. **Message body line ends** become CRLF in the CPIM entity (MIME canonical text) and LF
//!    again in XMPP; RFC 3922 does not discuss line ends.
//! 10. **Inbound message `type`** is `chat` by default (RFC 3922 leaves it to the gateway;
//!     RFC 7572 says `normal` for single messages: set
//!     [`message::InboundMessageOptions::message_type`] to follow it).
//!
//! # Quick tour
//! ```
//! use starling_cpim::{address, message, DateTime};
//! let stanza: minidom::Element = "<message xmlns='jabber:client' from='alice@xmpp.example/laptop' \
//!     to='bob@sip.example'><body>Hi</body></message>".parse().unwrap();
//! let now = DateTime::parse("2026-01-05T11:58:02.120Z").unwrap();
//! let cpim = message::xmpp_message_to_cpim(&stanza, &now).unwrap();
//! assert!(cpim.to_bytes().starts_with(b"From: <im:alice@xmpp.example>\r\n"));
//! assert_eq!(address::jid_to_pres_uri("alice@xmpp.example/laptop").unwrap(), "pres:alice@xmpp.example");
//! ```

pub mod address;
pub mod cpim;
pub mod datetime;
pub mod message;
pub mod pidf;
pub mod presence;
pub mod subscription;
mod xml;

pub use address::{AddressError, CpimScheme, GatewayAddressing, JidEscaping, SipUri};
pub use cpim::{CpimError, CpimMessage, Header, MimeEntity};
pub use datetime::DateTime;
pub use message::{InboundMessageOptions, MessageMappingError};
pub use pidf::{PidfDocument, PidfError};
pub use presence::{InboundPresenceOptions, PresenceMappingError};
pub use subscription::{CppOperation, SubscriptionMappingError};
pub use xml::{NS_CLIENT, NS_DELAY, NS_E2E};
