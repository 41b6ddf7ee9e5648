//! The module API: one feature, one module (DESIGN "Modules", STYLE habit 3).
//!
//! A module declares the disco features it adds, the stream features it offers after
//! authentication, the IQ payloads it serves (namespace + element name), and it may listen to
//! stanzas addressed to a bare JID or to the server, and to session events. The server builds
//! its dispatch table from the enabled modules at start; adding a XEP never edits the router.

use async_trait::async_trait;
use minidom::Element;
use starling_proto::error::StanzaError;
use starling_proto::jid::Jid;
use starling_proto::stanza::IqType;

use crate::server::Server;

/// Whether a hook consumed the stanza.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The module took care of the stanza; routing stops here.
    Handled,
    /// Not for this module; the next one (or the default rule) sees it.
    Pass,
}

/// An IQ get or set addressed to the server or to an account's bare JID.
#[derive(Debug)]
pub struct IqRequest<'a> {
    /// The sender (always a full JID for local clients).
    pub from: &'a Jid,
    /// The addressee: our domain, or a bare JID the server answers for.
    pub to: &'a Jid,
    /// `get` or `set`.
    pub kind: IqType,
    /// The payload: the single child element.
    pub payload: &'a Element,
    /// The whole stanza, for modules that need other attributes.
    pub stanza: &'a Element,
}

/// The answer to an IQ: a payload for the result (or none), or a stanza error.
pub type IqResponse = Result<Option<Element>, StanzaError>;

/// Life-cycle events of client sessions.
#[derive(Debug, Clone)]
pub enum SessionEvent {
    /// A resource was bound.
    Bound(Jid),
    /// A session ended (cleanly or not) after having bound `Jid`.
    Ended(Jid),
}

/// Where a non-IQ stanza is headed, for [`Module::on_stanza`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Addressed to one of our domains.
    Server,
    /// Addressed to an existing local account's bare JID (or to a full JID that is offline
    /// and falls back to the bare JID).
    Account,
    /// A message for an existing account that no available resource will receive
    /// (RFC 6121 §8.5.2.2): offline storage hooks here.
    Undeliverable,
    /// Presence broadcast by a client (no `to`), after the router recorded it.
    Broadcast,
}

/// One feature of the server.
#[async_trait]
pub trait Module: Send + Sync + 'static {
    /// Short name, used in logs and configuration.
    fn name(&self) -> &'static str;

    /// Features this module adds to the server's disco#info (XEP-0030).
    fn disco_features(&self) -> Vec<&'static str> {
        Vec::new()
    }

    /// Stream features offered after authentication (inside `<stream:features/>`).
    fn stream_features(&self) -> Vec<Element> {
        Vec::new()
    }

    /// IQ payloads this module serves, as (namespace, element name).
    fn iq_payloads(&self) -> Vec<(&'static str, &'static str)> {
        Vec::new()
    }

    /// Serves an IQ whose payload is one of [`Module::iq_payloads`].
    async fn handle_iq(&self, _server: &Server, _iq: IqRequest<'_>) -> IqResponse {
        Err(StanzaError::new(
            starling_proto::error::StanzaErrorCondition::ServiceUnavailable,
        ))
    }

    /// Sees messages and presence addressed to the server or to an account.
    async fn on_stanza(&self, _server: &Server, _stanza: &Element, _target: Target) -> Outcome {
        Outcome::Pass
    }

    /// Sees session life-cycle events.
    async fn on_session(&self, _server: &Server, _event: &SessionEvent) {}
}
