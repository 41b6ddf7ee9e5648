//! Browser transports (DESIGN: `http/`): one HTTP/HTTPS front end serving XMPP over
//! WebSocket (RFC 7395, [`websocket`]), BOSH (XEP-0124 with XEP-0206, [`bosh`]), connection
//! discovery (XEP-0156, [`hostmeta`]) and CORS ([`cors`]); later also HTTP upload and metrics.
//!
//! Sessions over WebSocket and BOSH are not a second session implementation: each one is an
//! ordinary c2s connection ([`starling_c2s::C2sEntry`]) fed through an in-process byte pipe.
//! [`framing`] translates between the HTTP framing and the XML stream in both directions and
//! re-serialises every element a client sends, so no client text reaches the stream verbatim.

pub mod bosh;
pub mod cors;
pub mod framing;
pub mod hostmeta;
pub mod listener;
pub mod websocket;

pub use listener::{start, start_with_routes, ConnInfo, HttpListeners};
