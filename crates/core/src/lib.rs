//! The server context: configuration types, the session registry and router, and the module
//! API. No sockets live here: listeners (c2s, later s2s and HTTP) own connections and talk to
//! the core through [`server::Server`] and [`session::SessionHandle`]s.
//!
//! Routing follows RFC 6120 §10 and RFC 6121 §8; the core never names a XEP — features come in
//! as [`module::Module`]s.

pub mod config;
pub mod module;
pub mod queue;
pub mod router;
pub mod secret;
pub mod server;
pub mod session;
pub mod xml;

pub use config::Config;
pub use module::{AfterRoute, Hook, HookContext, IqRequest, Module, Outcome, SessionEvent};
pub use router::Router;
pub use server::{RemoteRoute, Server};
pub use session::{Outbound, SessionHandle, SharedStanza};
