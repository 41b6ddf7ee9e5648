//! starling-proto: the XMPP wire vocabulary with no I/O. It owns JIDs (RFC 7622), namespace
//! names, the incremental stream framer with its limits (RFC 6120 §4, §11), the element
//! writer, stream and stanza errors (RFC 6120 §4.9, §8.3) and small stanza helpers
//! (RFC 6120 §8, RFC 6121). Sockets, TLS and SASL live elsewhere.

pub mod attr;
pub mod error;
pub mod framer;
pub mod jid;
pub mod ns;
pub mod spare;
pub mod stanza;
pub mod writer;

pub use attr::Attr;
pub use minidom::Element;
