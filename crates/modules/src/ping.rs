//! XEP-0199 XMPP Ping: the server answers pings addressed to it (and, on their behalf, to
//! accounts' bare JIDs) with an empty result. Pings to a full JID reach the client itself.

use async_trait::async_trait;
use starling_core::module::{IqRequest, IqResponse};
use starling_core::{Module, Server};
use starling_proto::error::{StanzaError, StanzaErrorCondition};
use starling_proto::ns;
use starling_proto::stanza::IqType;

/// The ping module.
pub struct Ping;

#[async_trait]
impl Module for Ping {
    fn name(&self) -> &'static str {
        "ping"
    }

    fn disco_features(&self) -> Vec<&'static str> {
        vec![ns::PING]
    }

    fn iq_payloads(&self) -> Vec<(&'static str, &'static str)> {
        vec![(ns::PING, "ping")]
    }

    async fn handle_iq(&self, _server: &Server, iq: IqRequest<'_>) -> IqResponse {
        match iq.kind {
            IqType::Get => Ok(None),
            _ => Err(StanzaError::new(StanzaErrorCondition::BadRequest)),
        }
    }
}
