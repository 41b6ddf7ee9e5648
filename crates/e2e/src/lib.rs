//! starling-e2e: end-to-end signing and encryption for XMPP as RFC 3923 defines it, with no
//! I/O. The protected content is the bytes of a MIME entity whose body is a Message/CPIM
//! (RFC 3862) or PIDF (RFC 3863) document (RFC 3923 §3, §4); it is signed as S/MIME
//! `multipart/signed` (CMS SignedData, RFC 5652 §5, RFC 8551 §3.5.3), encrypted as
//! `application/pkcs7-mime` (EnvelopedData §6, or AuthEnvelopedData with AES-GCM,
//! RFC 5083/8551 §2.7), or both with signing first (RFC 3923 §6), and carried as the text of
//! `<e2e xmlns='urn:ietf:params:xml:ns:xmpp-e2e'/>` (§9, Appendix A).
//!
//! | module | owns |
//! |---|---|
//! | [`mime`] | CRLF canonical form, MIME entities, multipart/signed framing |
//! | [`sign`] | SignedData build (via `cms`) and our verifier |
//! | [`envelope`] | EnvelopedData/AuthEnvelopedData build and our decryptor |
//! | [`certs`] | credentials, trust anchors, path validation, signer identity (§6) |
//! | [`freshness`] | §6 timestamp window and replay guard |
//! | [`protect`] | the sender's and receiver's whole procedure |
//! | [`content`] | Message/CPIM and PIDF content via `starling-cpim`; whole stanzas |
//! | [`payload`] | the `<e2e/>` element |
//! | [`error`] | errors and the §7 conditions |
//! | [`testca`] | a local CA issuing certificates with XMPP subjectAltNames |
//!
//! Algorithms: we sign with RSA PKCS#1 v1.5 and SHA-256 (never SHA-1; SHA-1 signatures are
//! verified only when the receiver allows legacy peers), encrypt with AES-128/256-CBC or
//! AES-128/256-GCM and RSA PKCS#1 v1.5 or OAEP key transport, and decrypt those plus
//! AES-192-CBC and 3DES-CBC.

pub mod algs;
pub mod certs;
pub mod content;
pub mod envelope;
pub mod error;
pub mod freshness;
pub mod mime;
pub mod payload;
pub mod protect;
pub mod sign;
pub mod testca;

pub use algs::DigestAlg;
pub use certs::{Credential, TrustAnchors};
pub use envelope::{ContentCipher, KeyTransport};
pub use error::{Condition, E2eError, Result, TimestampFault, E2E_NS};
pub use freshness::{ReplayGuard, TimestampPolicy};
pub use protect::{open, protect, Opened, Protection, Receiver};
pub use sign::{Verified, VerifyOptions};
