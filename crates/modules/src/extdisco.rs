//! External Service Discovery (XEP-0215): the STUN/TURN servers of `[[external_service]]`
//! offered to the server's own users.
//!
//! - §3.1 / §3.2: `<services/>` to the server lists every configured service (or those of
//!   the requested `type`), with credentials: static ones as configured, or for a service
//!   with a shared `secret` time-limited ones made per request as the TURN REST API draft
//!   (draft-uberti-behave-turn-rest) describes: username `expiry:user@domain`, password
//!   base64(HMAC-SHA1(secret, username)), `expires` as an XEP-0082 UTC timestamp and
//!   `restricted='1'`.
//! - §3.3: `<credentials/>` for a service named by `host` and `type` (and `port` when
//!   given) answers with fresh credentials for the matching services, `item-not-found` when
//!   none matches.
//! - §5: the disco feature `urn:xmpp:extdisco:2` on the server.
//!
//! Only local users are served (the credentials are worth something): others get
//! `forbidden`. Pushes of changed services (§3.2) are not sent: the list only changes with
//! the configuration, i.e. at a restart.

use async_trait::async_trait;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use minidom::Element;
use sha1::Sha1;
use starling_core::config::ExternalService;
use starling_core::module::{IqRequest, IqResponse};
use starling_core::xml::BuilderExt;
use starling_core::{Module, Server};
use starling_proto::error::{StanzaError, StanzaErrorCondition as Cond};
use starling_proto::jid::Jid;
use starling_proto::stanza::IqType;
use starling_proto::Attr;

/// The XEP-0215 namespace, also its disco feature.
pub const NS_EXTDISCO: &str = "urn:xmpp:extdisco:2";

/// Time-limited credentials for `user` at a TURN server sharing `secret` (TURN REST API
/// draft §2.2): valid until `expires` (Unix seconds).
pub fn turn_credentials(secret: &str, user: &Jid, expires: i64) -> (String, String) {
    let username = format!("{expires}:{user}");
    let mut mac =
        <Hmac<Sha1> as KeyInit>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(username.as_bytes());
    let password = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    (username, password)
}

/// The `<service/>` element for `svc`, with credentials for `user` when it has any.
fn service_element(svc: &ExternalService, user: &Jid, now_ms: i64) -> Element {
    let mut b = Element::builder("service", NS_EXTDISCO)
        .with_attr("type", svc.kind.as_str())
        .with_attr("host", svc.host.as_str());
    if let Some(port) = svc.port {
        b = b.with_attr("port", port.to_string());
    }
    if let Some(t) = &svc.transport {
        b = b.with_attr("transport", t.as_str());
    }
    if let Some(n) = &svc.name {
        b = b.with_attr("name", n.as_str());
    }
    if let (Some(u), Some(p)) = (&svc.username, &svc.password) {
        b = b
            .with_attr("username", u.as_str())
            .with_attr("password", p.as_str());
    } else if let Some(secret) = &svc.secret {
        let ttl = i64::try_from(svc.ttl_secs).unwrap_or(i64::MAX / 2000);
        let expires = now_ms / 1000 + ttl;
        let (username, password) = turn_credentials(secret, user, expires);
        b = b
            .with_attr("username", username)
            .with_attr("password", password)
            .with_attr("expires", crate::time::utc_stamp(expires * 1000))
            .with_attr("restricted", "1");
    }
    b.build()
}

/// The external service discovery module.
pub struct ExternalServices;

#[async_trait]
impl Module for ExternalServices {
    fn name(&self) -> &'static str {
        "extdisco"
    }

    fn disco_features(&self) -> Vec<&'static str> {
        vec![NS_EXTDISCO]
    }

    fn iq_payloads(&self) -> Vec<(&'static str, &'static str)> {
        vec![(NS_EXTDISCO, "services"), (NS_EXTDISCO, "credentials")]
    }

    async fn handle_iq(&self, server: &Server, iq: IqRequest<'_>) -> IqResponse {
        if iq.to.node().is_some() {
            return Err(StanzaError::new(Cond::ServiceUnavailable));
        }
        if iq.kind != IqType::Get {
            return Err(StanzaError::new(Cond::BadRequest));
        }
        if !server.config().is_local_host(iq.from.domain()) || iq.from.node().is_none() {
            return Err(StanzaError::new(Cond::Forbidden));
        }
        let user = iq.from.bare();
        let now = crate::time::now_ms();
        let services = &server.config().external_services;
        if iq.payload.name() == "services" {
            let kind = iq.payload.attribute("type");
            let mut list = Element::builder("services", NS_EXTDISCO);
            if let Some(k) = kind {
                list = list.with_attr("type", k);
            }
            for svc in services.iter().filter(|s| kind.is_none_or(|k| s.kind == k)) {
                list = list.append(service_element(svc, &user, now));
            }
            return Ok(Some(list.build()));
        }
        let wanted = iq
            .payload
            .get_child("service", NS_EXTDISCO)
            .ok_or_else(|| StanzaError::new(Cond::BadRequest))?;
        let (Some(host), Some(kind)) = (wanted.attribute("host"), wanted.attribute("type")) else {
            return Err(StanzaError::with_text(
                Cond::BadRequest,
                "a service needs host and type",
            ));
        };
        let port = wanted.attribute("port").and_then(|p| p.parse::<u16>().ok());
        let matching: Vec<_> = services
            .iter()
            .filter(|s| s.host == host && s.kind == kind)
            .filter(|s| port.is_none() || s.port == port)
            .collect();
        if matching.is_empty() {
            return Err(StanzaError::new(Cond::ItemNotFound));
        }
        let mut creds = Element::builder("credentials", NS_EXTDISCO);
        for svc in matching {
            creds = creds.append(service_element(svc, &user, now));
        }
        Ok(Some(creds.build()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turn_rest_credentials() {
        // The password is base64(HMAC-SHA1(secret, username)), checked against an
        // independently computed value (`printf '%s' '1700000000:alice@example.org' |
        // openssl dgst -sha1 -hmac secret -binary | base64`).
        let (u, p) = turn_credentials(
            "secret",
            &Jid::parse("alice@example.org").unwrap(),
            1_700_000_000,
        );
        assert_eq!(u, "1700000000:alice@example.org");
        assert_eq!(p, EXPECTED);
    }

    const EXPECTED: &str = "ilWZzF8c6jFH+3PGJYYE0l3dlMI=";
}
