//! In-band registration (XEP-0077) for authenticated users: password change (§3.3) and
//! account removal (§3.2). Account *creation* happens before authentication and lives in the
//! c2s crate (`starling_c2s::register`), because modules only see bound sessions.
//!
//! - Get (§3.1): the user is registered, so the answer holds `<registered/>`, the username
//!   and an empty `<password/>`.
//! - Set with `<username/>` and `<password/>` (§3.3): the username must be the user's own
//!   (localpart or bare JID; anyone else's is `forbidden`, none is `bad-request`); an empty or
//!   unusable password is `not-acceptable` and leaves the old one in place (§3.3 MUST). New
//!   SCRAM-SHA-1 and SCRAM-SHA-256 keys replace the stored ones; open sessions stay.
//! - Set with `<remove/>` (§3.2): `<remove/>` must be the only child (`bad-request`). The
//!   account and everything stored for it is deleted, every contact is sent `unsubscribe` and
//!   `unsubscribed` (§3.2 SHOULD cancel subscriptions), the requester gets its result, and
//!   then every session of the account ends with the `not-authorized` stream error (§3.2).
//! - A set addressed to another account's bare JID is `forbidden`.
//!
//! Sets are taken at [`Hook::Outbound`] rather than through `handle_iq`, for two reasons: the
//! error replies must not echo the request (it holds a password, §3.3 SHOULD NOT), and the
//! removal result must be queued before the sessions are told to close.

use starling_proto::Attr;
use std::time::Duration;

use async_trait::async_trait;
use minidom::Element;
use starling_core::module::{IqRequest, IqResponse};
use starling_core::xml::BuilderExt;
use starling_core::{Hook, HookContext, Module, Outcome, Server};
use starling_proto::error::StreamErrorCondition;
use starling_proto::error::{StanzaError, StanzaErrorCondition as Cond, StreamError};
use starling_proto::jid::{prep_localpart, Jid};
use starling_proto::ns;
use starling_proto::stanza::IqType;
use starling_sasl::{new_credentials, ScramHash};
use starling_storage::{ScramRecord, StorageError};

use crate::roster::item::{RosterItem, STORE as ROSTER_STORE};

/// The registration namespace (XEP-0077).
pub const NS_REGISTER: &str = "jabber:iq:register";
/// Longest password accepted, in bytes.
pub const MAX_PASSWORD_BYTES: usize = 1023;
/// How long the removal waits for the requester's session to write the result before closing.
const DRAIN_WAIT: Duration = Duration::from_secs(2);

/// SCRAM-SHA-1 and SCRAM-SHA-256 records for `password`, derived off the async runtime.
/// `None` when the password is empty, too long or not a valid PRECIS OpaqueString.
pub async fn scram_records(password: String, iterations: u32) -> Option<Vec<ScramRecord>> {
    if password.is_empty() || password.len() > MAX_PASSWORD_BYTES {
        return None;
    }
    tokio::task::spawn_blocking(move || {
        [ScramHash::Sha1, ScramHash::Sha256]
            .into_iter()
            .map(|h| {
                new_credentials(&password, h, iterations)
                    .ok()
                    .map(|c| ScramRecord {
                        mechanism: h.name().to_owned(),
                        salt: c.salt,
                        iterations: c.iterations,
                        stored_key: c.stored_key,
                        server_key: c.server_key,
                    })
            })
            .collect::<Option<Vec<_>>>()
    })
    .await
    .ok()
    .flatten()
}

/// The password-change and account-removal module.
pub struct Register;

fn internal(e: StorageError) -> StanzaError {
    tracing::error!(error = %e, "registration storage error");
    StanzaError::new(Cond::InternalServerError)
}

/// An IQ result or error for `iq` that does not echo its payload.
fn reply(iq: &Element, outcome: Result<(), StanzaError>) -> Element {
    let mut b = Element::builder("iq", ns::CLIENT)
        .with_attr("id", iq.attribute("id").unwrap_or_default())
        .with_attr("type", if outcome.is_ok() { "result" } else { "error" });
    if let Some(to) = iq.attribute("to") {
        b = b.with_attr("from", to);
    }
    if let Some(from) = iq.attribute("from") {
        b = b.with_attr("to", from);
    }
    let mut el = b.build();
    if let Err(e) = outcome {
        el.append_child(e.to_element_in(ns::CLIENT));
    }
    el
}

impl Register {
    /// Serves one set from `from` (a local full JID). Ok(true): the account was removed.
    async fn set(&self, server: &Server, from: &Jid, query: &Element) -> Result<bool, StanzaError> {
        let user = from.bare();
        let node = user.node().unwrap_or_default();
        let storage = server.storage();
        if query.get_child("remove", NS_REGISTER).is_some() {
            if query.children().count() != 1 {
                return Err(StanzaError::new(Cond::BadRequest));
            }
            let roster = storage
                .map_all(user.domain(), node, ROSTER_STORE)
                .await
                .map_err(internal)?;
            match storage.delete_account(user.domain(), node).await {
                Ok(()) | Err(StorageError::NotFound) => {}
                Err(e) => return Err(internal(e)),
            }
            tracing::info!(user = %user, "account removed in-band");
            for item in roster.iter().filter_map(|(_, v)| RosterItem::decode(v)) {
                for kind in ["unsubscribe", "unsubscribed"] {
                    let p = Element::builder("presence", ns::CLIENT)
                        .with_attr("type", kind)
                        .with_attr("from", user.as_str())
                        .with_attr("to", item.jid.as_str())
                        .build();
                    server.route(p).await;
                }
            }
            return Ok(true);
        }
        let username = query
            .get_child("username", NS_REGISTER)
            .map(|u| u.text())
            .ok_or_else(|| StanzaError::new(Cond::BadRequest))?;
        let username = username.trim();
        let named = match username.split_once('@') {
            Some(_) => Jid::parse(username).ok().filter(|j| j.is_bare()),
            None => prep_localpart(username)
                .ok()
                .and_then(|n| Jid::new(Some(&n), user.domain(), None).ok()),
        };
        if named.as_ref() != Some(&user) {
            return Err(StanzaError::new(Cond::Forbidden));
        }
        let password = query
            .get_child("password", NS_REGISTER)
            .map(|p| p.text())
            .ok_or_else(|| StanzaError::new(Cond::BadRequest))?;
        let iterations = server.config().c2s.scram_iterations;
        let Some(creds) = scram_records(password, iterations).await else {
            return Err(StanzaError::with_text(
                Cond::NotAcceptable,
                "the password is empty, too long or contains characters that are not allowed",
            ));
        };
        storage
            .set_credentials(user.domain(), node, &creds)
            .await
            .map_err(internal)?;
        tracing::info!(user = %user, "password changed in-band");
        Ok(false)
    }
}

/// Ends every session of `user` with `not-authorized`; the session `requester` only once it
/// has written what was queued for it (the removal result), bounded by [`DRAIN_WAIT`].
async fn close_sessions(server: &Server, user: &Jid, requester: &Jid) {
    let sessions = server.router().with_resources(user, |list| {
        list.iter()
            .map(|r| (r.jid.clone(), r.handle.clone()))
            .collect::<Vec<_>>()
    });
    let reason = || StreamError::with_text(StreamErrorCondition::NotAuthorized, "account removed");
    let full_queue = server.config().c2s.outbound_queue.max(1);
    for (jid, handle) in sessions {
        if &jid == requester {
            let deadline = tokio::time::Instant::now() + DRAIN_WAIT;
            while handle.capacity() < full_queue && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        handle.close(reason());
    }
}

#[async_trait]
impl Module for Register {
    fn name(&self) -> &'static str {
        "register"
    }

    fn disco_features(&self) -> Vec<&'static str> {
        vec![NS_REGISTER]
    }

    fn iq_payloads(&self) -> Vec<(&'static str, &'static str)> {
        vec![(NS_REGISTER, "query")]
    }

    fn hooks(&self) -> Vec<Hook> {
        vec![Hook::Outbound]
    }

    async fn handle_iq(&self, _server: &Server, iq: IqRequest<'_>) -> IqResponse {
        let own = iq.to.node().is_none() || iq.to.bare() == iq.from.bare();
        match iq.kind {
            IqType::Get if own => {
                let node = iq.from.node().unwrap_or_default();
                Ok(Some(
                    Element::builder("query", NS_REGISTER)
                        .append(Element::builder("instructions", NS_REGISTER).append(
                            "You are registered. Send a new password to change it, or \
                             <remove/> to delete your account.",
                        ))
                        .append(Element::builder("registered", NS_REGISTER))
                        .append(Element::builder("username", NS_REGISTER).append(node))
                        .append(Element::builder("password", NS_REGISTER))
                        .build(),
                ))
            }
            // Sets from local clients are taken at the outbound hook; whatever reaches here
            // is about someone else's registration.
            _ => Err(StanzaError::new(Cond::Forbidden)),
        }
    }

    async fn on_stanza(
        &self,
        server: &Server,
        stanza: &Element,
        _hook: Hook,
        _ctx: HookContext<'_>,
    ) -> Outcome {
        if stanza.name() != "iq" || stanza.attribute("type") != Some("set") {
            return Outcome::Pass;
        }
        let Some(query) = stanza.get_child("query", NS_REGISTER) else {
            return Outcome::Pass;
        };
        let (Some(from), Some(to)) = (stanza.jid_attribute("from"), stanza.jid_attribute("to"))
        else {
            return Outcome::Pass;
        };
        if !server.config().is_local_host(to.domain()) || to.resource().is_some() {
            // A registration with another service, or a client's own business: route it.
            return Outcome::Pass;
        }
        let outcome = if to.node().is_some() && to.bare() != from.bare() {
            Err(StanzaError::new(Cond::Forbidden))
        } else {
            self.set(server, &from, query).await
        };
        let removed = matches!(outcome, Ok(true));
        server.route(reply(stanza, outcome.map(|_| ()))).await;
        if removed {
            if let Some(server) = server.arc() {
                let user = from.bare();
                tokio::spawn(async move { close_sessions(&server, &user, &from).await });
            }
        }
        Outcome::Handled
    }
}
