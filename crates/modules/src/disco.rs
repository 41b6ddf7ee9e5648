//! XEP-0030 Service Discovery answered by the server.
//!
//! - The server (§3.1): disco#info lists the server identity ([`SERVER_IDENTITY`]) and every
//!   feature the enabled modules declare, nothing else; disco#items lists the domains served by modules
//!   (the chat room service). A disco#info request to the node `NODE#VER` of the server's Entity Capabilities
//!   (XEP-0115 §6.2) gets the same answer with the node echoed; other nodes are
//!   `item-not-found`.
//! - An account's bare JID, answered on the account's behalf (RFC 6120 §10.5.3.1; the router
//!   has already refused accounts that do not exist): disco#info lists the identity
//!   account/registered and the features modules declare for accounts
//!   ([`starling_core::Module::account_disco_features`]); modules add identities, items and
//!   node answers ([`starling_core::Module::account_disco`], e.g. PEP's nodes).
//! - A full JID is the client's business: the router delivers those requests to the session.

use async_trait::async_trait;
use minidom::Element;
use starling_core::module::{IqRequest, IqResponse};
use starling_core::xml::BuilderExt;
use starling_core::{Module, Server};
use starling_proto::error::{StanzaError, StanzaErrorCondition};
use starling_proto::ns;
use starling_proto::stanza::IqType;
use starling_proto::Attr;

use crate::caps::{self, Identity};

/// The server's identity (XEP-0030 registry: server/im).
pub const SERVER_IDENTITY: Identity<'static> = Identity {
    category: "server",
    kind: "im",
    lang: "",
    name: "Starling",
};

/// An account's identity, as answered by its server.
const ACCOUNT_IDENTITY: Identity<'static> = Identity {
    category: "account",
    kind: "registered",
    lang: "",
    name: "",
};

/// The disco module.
pub struct Disco;

/// An account's answer: the account identity and account features, plus what modules add
/// ([`starling_core::Module::account_disco`]: PEP's identity, nodes and node queries).
async fn account_answer(server: &Server, iq: &IqRequest<'_>, node: Option<&str>) -> IqResponse {
    let mut extra = Vec::new();
    for m in server.modules() {
        if let Some(elements) = m.account_disco(server, iq).await {
            if let Some(n) = node {
                let mut query = Element::builder("query", iq.payload.ns().as_str())
                    .with_attr("node", n)
                    .build();
                for e in elements {
                    query.append_child(e);
                }
                return Ok(Some(query));
            }
            extra.extend(elements);
        }
    }
    if node.is_some() {
        return Err(StanzaError::new(StanzaErrorCondition::ItemNotFound));
    }
    let mut query = if iq.payload.ns() == ns::DISCO_ITEMS {
        Element::builder("query", ns::DISCO_ITEMS).build()
    } else {
        info(&ACCOUNT_IDENTITY, &server.account_disco_features(), None)
    };
    for e in extra {
        query.append_child(e);
    }
    Ok(Some(query))
}

fn identity_element(i: &Identity<'_>) -> Element {
    let mut b = Element::builder("identity", ns::DISCO_INFO)
        .with_attr("category", i.category)
        .with_attr("type", i.kind);
    if !i.name.is_empty() {
        b = b.with_attr("name", i.name);
    }
    b.build()
}

fn info(identity: &Identity<'_>, features: &[&str], node: Option<&str>) -> Element {
    let mut query = Element::builder("query", ns::DISCO_INFO);
    if let Some(n) = node {
        query = query.with_attr("node", n);
    }
    let mut query = query.append(identity_element(identity));
    for f in features {
        query = query.append(Element::builder("feature", ns::DISCO_INFO).with_attr("var", *f));
    }
    query.build()
}

#[async_trait]
impl Module for Disco {
    fn name(&self) -> &'static str {
        "disco"
    }

    fn disco_features(&self) -> Vec<&'static str> {
        vec![ns::DISCO_INFO, ns::DISCO_ITEMS]
    }

    fn account_disco_features(&self) -> Vec<&'static str> {
        vec![ns::DISCO_INFO, ns::DISCO_ITEMS]
    }

    fn iq_payloads(&self) -> Vec<(&'static str, &'static str)> {
        vec![(ns::DISCO_INFO, "query"), (ns::DISCO_ITEMS, "query")]
    }

    async fn handle_iq(&self, server: &Server, iq: IqRequest<'_>) -> IqResponse {
        if iq.kind != IqType::Get {
            return Err(StanzaError::new(StanzaErrorCondition::BadRequest));
        }
        let node = iq.payload.attribute("node");
        let is_account = iq.to.node().is_some();
        if is_account {
            return account_answer(server, &iq, node).await;
        }
        if iq.payload.ns() == ns::DISCO_ITEMS {
            if node.is_some() {
                return Err(StanzaError::new(StanzaErrorCondition::ItemNotFound));
            }
            // The services on their own domains (chat rooms): XEP-0030 §4, XEP-0045 §6.1.
            let mut query = Element::builder("query", ns::DISCO_ITEMS).build();
            for domain in server.served_domains() {
                query.append_child(
                    Element::builder("item", ns::DISCO_ITEMS)
                        .with_attr("jid", domain)
                        .build(),
                );
            }
            return Ok(Some(query));
        }
        let features = server.disco_features();
        if let Some(n) = node {
            // XEP-0115 §6.2: the caps node names the same information as the plain request.
            let caps_node = format!(
                "{}#{}",
                caps::NODE,
                caps::ver(&[SERVER_IDENTITY], &features)
            );
            if n != caps_node {
                return Err(StanzaError::new(StanzaErrorCondition::ItemNotFound));
            }
        }
        Ok(Some(info(&SERVER_IDENTITY, &features, node)))
    }
}
