//! XEP-0030 Service Discovery for the server: disco#info lists the server identity and every
//! feature the enabled modules declare; disco#items is empty until components exist. For an
//! account's bare JID the server answers with the account identity (XEP-0030 §3.1, as used
//! by PEP later).

use async_trait::async_trait;
use minidom::Element;
use starling_core::module::{IqRequest, IqResponse};
use starling_core::xml::BuilderExt;
use starling_core::{Module, Server};
use starling_proto::error::{StanzaError, StanzaErrorCondition};
use starling_proto::ns;
use starling_proto::stanza::IqType;

/// The disco module.
pub struct Disco;

#[async_trait]
impl Module for Disco {
    fn name(&self) -> &'static str {
        "disco"
    }

    fn disco_features(&self) -> Vec<&'static str> {
        vec![ns::DISCO_INFO, ns::DISCO_ITEMS]
    }

    fn iq_payloads(&self) -> Vec<(&'static str, &'static str)> {
        vec![(ns::DISCO_INFO, "query"), (ns::DISCO_ITEMS, "query")]
    }

    async fn handle_iq(&self, server: &Server, iq: IqRequest<'_>) -> IqResponse {
        if iq.kind != IqType::Get {
            return Err(StanzaError::new(StanzaErrorCondition::BadRequest));
        }
        if iq.payload.attr("node").is_some() {
            return Err(StanzaError::new(StanzaErrorCondition::ItemNotFound));
        }
        let query_ns = iq.payload.ns();
        if query_ns == ns::DISCO_ITEMS {
            return Ok(Some(Element::builder("query", ns::DISCO_ITEMS).build()));
        }
        let mut query = Element::builder("query", ns::DISCO_INFO);
        if iq.to.node().is_some() {
            query = query.append(
                Element::builder("identity", ns::DISCO_INFO)
                    .with_attr("category", "account")
                    .with_attr("type", "registered"),
            );
        } else {
            query = query.append(
                Element::builder("identity", ns::DISCO_INFO)
                    .with_attr("category", "server")
                    .with_attr("type", "im")
                    .with_attr("name", "Starling"),
            );
            for f in server.disco_features() {
                query =
                    query.append(Element::builder("feature", ns::DISCO_INFO).with_attr("var", f));
            }
        }
        Ok(Some(query.build()))
    }
}
