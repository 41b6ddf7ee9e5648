//! XML namespace names used on XMPP streams (RFC 6120 §4.8, §5-§7, RFC 6121, and the XEPs
//! named beside each constant). Only the strings: no parsing lives here.

/// Content namespace of client-to-server streams (RFC 6120 §4.8.3).
pub const CLIENT: &str = "jabber:client";
/// Content namespace of server-to-server streams (RFC 6120 §4.8.3).
pub const SERVER: &str = "jabber:server";
/// The stream namespace: `<stream:stream>`, `<stream:features>`, `<stream:error>` (RFC 6120 §4.8.1).
pub const STREAM: &str = "http://etherx.jabber.org/streams";
/// Stream error conditions (RFC 6120 §4.9.3).
pub const STREAM_ERRORS: &str = "urn:ietf:params:xml:ns:xmpp-streams";
/// Stanza error conditions (RFC 6120 §8.3.3).
pub const STANZA_ERRORS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";
/// STARTTLS negotiation (RFC 6120 §5).
pub const TLS: &str = "urn:ietf:params:xml:ns:xmpp-tls";
/// SASL negotiation (RFC 6120 §6).
pub const SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
/// Resource binding (RFC 6120 §7).
pub const BIND: &str = "urn:ietf:params:xml:ns:xmpp-bind";
/// Legacy session establishment (RFC 3921 §3, kept optional by RFC 6121 Appendix E).
pub const SESSION: &str = "urn:ietf:params:xml:ns:xmpp-session";
/// XMPP Ping (XEP-0199).
pub const PING: &str = "urn:xmpp:ping";
/// Service Discovery, info (XEP-0030).
pub const DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
/// Service Discovery, items (XEP-0030).
pub const DISCO_ITEMS: &str = "http://jabber.org/protocol/disco#items";
/// Software Version (XEP-0092).
pub const VERSION: &str = "jabber:iq:version";
/// Delayed Delivery (XEP-0203).
pub const DELAY: &str = "urn:xmpp:delay";
/// SASL Channel-Binding Type Capability (XEP-0440).
pub const SASL_CB: &str = "urn:xmpp:sasl-cb:0";
/// The namespace bound to the `xml:` prefix (XML Namespaces §3), e.g. for `xml:lang`.
pub const XML: &str = "http://www.w3.org/XML/1998/namespace";
