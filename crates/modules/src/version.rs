//! XEP-0092 Software Version for the server itself: name and version. The operating system
//! is not disclosed (the XEP makes it optional and it helps attackers more than users).

use async_trait::async_trait;
use minidom::Element;
use starling_core::module::{IqRequest, IqResponse};
use starling_core::{Module, Server};
use starling_proto::error::{StanzaError, StanzaErrorCondition};
use starling_proto::ns;
use starling_proto::stanza::IqType;

/// The version module.
pub struct Version;

#[async_trait]
impl Module for Version {
    fn name(&self) -> &'static str {
        "version"
    }

    fn disco_features(&self) -> Vec<&'static str> {
        vec![ns::VERSION]
    }

    fn iq_payloads(&self) -> Vec<(&'static str, &'static str)> {
        vec![(ns::VERSION, "query")]
    }

    async fn handle_iq(&self, _server: &Server, iq: IqRequest<'_>) -> IqResponse {
        if iq.kind != IqType::Get {
            return Err(StanzaError::new(StanzaErrorCondition::BadRequest));
        }
        if iq.to.node().is_some() {
            // Versions of accounts are the clients' business.
            return Err(StanzaError::new(StanzaErrorCondition::ServiceUnavailable));
        }
        Ok(Some(
            Element::builder("query", ns::VERSION)
                .append(Element::builder("name", ns::VERSION).append("Starling"))
                .append(Element::builder("version", ns::VERSION).append(env!("CARGO_PKG_VERSION")))
                .build(),
        ))
    }
}
