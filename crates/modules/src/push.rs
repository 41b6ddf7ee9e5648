//! Push notifications (XEP-0357): wake a mobile client whose connection is gone.
//!
//! - A client registers its app server with `<enable jid node/>` (an optional
//!   `publish-options` data form, typically a secret, is kept as given) and removes it with
//!   `<disable jid [node]/>`, in IQ sets to its own account. Registrations are stored in the
//!   map `push`, keyed by app server and node, at most `[push] max_registrations` per account
//!   (`resource-constraint` beyond).
//! - When a message with a body is accepted for an account and none of its sessions will read
//!   it now — every session that queued it is hibernated by stream management (XEP-0198), or
//!   none queued it (the account is offline and the message goes to offline storage) — the
//!   server publishes a notification to each registration, from the account's bare JID
//!   (§5): an IQ set with `<pubsub><publish node><item><notification>` holding a
//!   `urn:xmpp:push:summary` form (`message-count` since the account's last login,
//!   `last-message-sender` and `last-message-body` only as configured: §8 privacy) and the
//!   registration's `publish-options`. A message is notified once: the last
//!   [`RECENT_PER_ACCOUNT`] notified (sender + id) are remembered, so the copy re-routed to
//!   offline storage when a hibernated session times out does not notify again.
//! - An error answer to a notification disables that registration (§6: the app server no
//!   longer wants it, or does not exist).
//!
//! Not here: deciding whether a session is hibernated (c2s, [`SessionHandle::is_hibernated`]),
//! and offline storage itself (the offline module, which still stores the message).
//!
//! [`SessionHandle::is_hibernated`]: starling_core::SessionHandle::is_hibernated

use starling_proto::Attr;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use minidom::Element;
use parking_lot::Mutex;
use starling_core::config::PushConfig;
use starling_core::module::{IqRequest, IqResponse};
use starling_core::xml::BuilderExt;
use starling_core::{Hook, HookContext, Module, Outcome, Server, SessionEvent};
use starling_proto::error::{StanzaError, StanzaErrorCondition as Cond};
use starling_proto::jid::Jid;
use starling_proto::stanza::IqType;
use starling_proto::{ns, writer};

/// The push namespace.
pub const NS_PUSH: &str = "urn:xmpp:push:0";
/// The FORM_TYPE of the notification summary (XEP-0357 §5).
pub const NS_SUMMARY: &str = "urn:xmpp:push:summary";
const NS_PUBSUB: &str = "http://jabber.org/protocol/pubsub";
const NS_DATA: &str = "jabber:x:data";
/// The map holding each account's registrations.
const STORE: &str = "push";
/// Notifications awaiting their answer, across all accounts; beyond it answers are not
/// tracked (an error then does not disable the registration).
const MAX_PENDING: usize = 10_000;
/// Accounts whose unread count is kept; beyond it the counts start again from zero.
const MAX_COUNTED: usize = 100_000;
/// Messages remembered per account as already notified (sender + id), so that a message
/// re-routed when a hibernated session times out is not notified twice.
const RECENT_PER_ACCOUNT: usize = 32;

/// A registration's key in the map: app server and node.
fn key(jid: &str, node: &str) -> String {
    format!("{jid}\n{node}")
}

/// What was notified for one account since its last login.
#[derive(Default)]
struct Unread {
    count: u32,
    recent: VecDeque<String>,
}

/// The push notification module.
pub struct Push {
    config: PushConfig,
    /// Per account since its last login: messages notified (`message-count`), and the
    /// latest of them (sender + id), newest last.
    unread: Mutex<HashMap<Jid, Unread>>,
    /// Notification IQ id -> (account, registration key), until answered.
    pending: Mutex<HashMap<String, (Jid, String)>>,
    next_id: AtomicU64,
}

impl Push {
    /// A push module with `[push]` settings.
    pub fn new(config: &PushConfig) -> Push {
        Push {
            config: config.clone(),
            unread: Mutex::new(HashMap::new()),
            pending: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
        }
    }

    async fn enable(&self, server: &Server, owner: &Jid, payload: &Element) -> IqResponse {
        let (domain, user) = (owner.domain(), owner.node().unwrap_or_default());
        let Some(app) = payload.jid_attribute("jid") else {
            return Err(StanzaError::with_text(
                Cond::BadRequest,
                "'jid' must name the app server",
            ));
        };
        let node = payload.attribute("node").unwrap_or_default();
        if node.is_empty() {
            return Err(StanzaError::with_text(
                Cond::BadRequest,
                "'node' is required",
            ));
        }
        let k = key(app.as_str(), node);
        let storage = server.storage();
        let existing = storage
            .map_get(domain, user, STORE, &k)
            .await
            .map_err(internal)?;
        if existing.is_none() {
            let count = storage
                .map_count(domain, user, STORE)
                .await
                .map_err(internal)?;
            if count as usize >= self.config.max_registrations {
                tracing::info!(account = %owner, "push registration limit reached");
                return Err(StanzaError::with_text(
                    Cond::ResourceConstraint,
                    "too many push registrations",
                ));
            }
        }
        // Keep what notifications need: the app server, the node, the publish-options form.
        let mut stored = Element::builder("enable", NS_PUSH)
            .with_attr("jid", app.as_str())
            .with_attr("node", node)
            .build();
        if let Some(form) = payload.get_child("x", NS_DATA) {
            stored.append_child(form.clone());
        }
        let mut bytes = Vec::new();
        writer::write_element(&stored, &mut bytes);
        storage
            .map_set(domain, user, STORE, &k, &bytes)
            .await
            .map_err(internal)?;
        tracing::info!(account = %owner, app = %app, "push notifications enabled");
        Ok(None)
    }

    async fn disable(&self, server: &Server, owner: &Jid, payload: &Element) -> IqResponse {
        let (domain, user) = (owner.domain(), owner.node().unwrap_or_default());
        let Some(app) = payload.jid_attribute("jid") else {
            return Err(StanzaError::with_text(
                Cond::BadRequest,
                "'jid' must name the app server",
            ));
        };
        let storage = server.storage();
        match payload.attribute("node").filter(|n| !n.is_empty()) {
            Some(node) => storage
                .map_delete(domain, user, STORE, &key(app.as_str(), node))
                .await
                .map_err(internal)?,
            // Without a node: every registration with that app server (§4).
            None => {
                let prefix = key(app.as_str(), "");
                for (k, _) in storage
                    .map_all(domain, user, STORE)
                    .await
                    .map_err(internal)?
                {
                    if k.starts_with(&prefix) {
                        storage
                            .map_delete(domain, user, STORE, &k)
                            .await
                            .map_err(internal)?;
                    }
                }
            }
        }
        tracing::info!(account = %owner, app = %app, "push notifications disabled");
        Ok(None)
    }

    /// Sends a notification for `msg` to every registration of `account`.
    async fn notify(&self, server: &Server, account: &Jid, msg: &Element) {
        let (domain, Some(user)) = (account.domain(), account.node()) else {
            return;
        };
        let registrations = match server.storage().map_all(domain, user, STORE).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "reading push registrations failed");
                return;
            }
        };
        if registrations.is_empty() {
            return;
        }
        let seen = msg
            .attribute("id")
            .map(|id| format!("{}\n{id}", msg.attribute("from").unwrap_or_default()));
        let count = {
            let mut unread = self.unread.lock();
            if unread.len() >= MAX_COUNTED && !unread.contains_key(account) {
                unread.clear();
            }
            let u = unread.entry(account.clone()).or_default();
            if let Some(seen) = seen {
                if u.recent.contains(&seen) {
                    // Already notified: re-routed after its session ended unacknowledged.
                    return;
                }
                if u.recent.len() >= RECENT_PER_ACCOUNT {
                    u.recent.pop_front();
                }
                u.recent.push_back(seen);
            }
            u.count = u.count.saturating_add(1);
            u.count
        };
        let mut fields = vec![
            ("FORM_TYPE", NS_SUMMARY.to_owned()),
            ("message-count", count.to_string()),
        ];
        if self.config.include_sender {
            if let Some(from) = msg.attribute("from") {
                fields.push(("last-message-sender", from.to_owned()));
            }
        }
        if self.config.include_body {
            if let Some(body) = msg.get_child("body", ns::CLIENT) {
                fields.push(("last-message-body", body.text()));
            }
        }
        let summary = data_form(&fields);
        for (k, value) in registrations {
            let Some(reg) = String::from_utf8(value)
                .ok()
                .and_then(|s| s.parse::<Element>().ok())
            else {
                tracing::warn!(account = %account, "unreadable push registration skipped");
                continue;
            };
            let (Some(app), Some(node)) = (reg.attribute("jid"), reg.attribute("node")) else {
                continue;
            };
            let id = format!("push-{}", self.next_id.fetch_add(1, Ordering::Relaxed));
            let mut pubsub = Element::builder("pubsub", NS_PUBSUB)
                .append(
                    Element::builder("publish", NS_PUBSUB)
                        .with_attr("node", node)
                        .append(Element::builder("item", NS_PUBSUB).append(
                            Element::builder("notification", NS_PUSH).append(summary.clone()),
                        )),
                )
                .build();
            if let Some(options) = reg.get_child("x", NS_DATA) {
                pubsub.append_child(
                    Element::builder("publish-options", NS_PUBSUB)
                        .append(options.clone())
                        .build(),
                );
            }
            let iq = Element::builder("iq", ns::CLIENT)
                .with_attr("type", "set")
                .with_attr("id", id.as_str())
                .with_attr("from", account.as_str())
                .with_attr("to", app)
                .append(pubsub)
                .build();
            {
                let mut pending = self.pending.lock();
                if pending.len() < MAX_PENDING {
                    pending.insert(id, (account.clone(), k));
                } else {
                    tracing::warn!("too many unanswered push notifications; not tracking more");
                }
            }
            tracing::debug!(account = %account, app, "push notification sent");
            Box::pin(server.route(iq)).await;
        }
    }

    /// An answer to a notification: an error disables the registration (§6).
    async fn answered(&self, server: &Server, iq: &Element) -> Outcome {
        let Some(id) = iq.attribute("id") else {
            return Outcome::Pass;
        };
        let Some((account, k)) = self.pending.lock().remove(id) else {
            return Outcome::Pass;
        };
        if iq.attribute("type") == Some("error") {
            tracing::info!(account = %account, registration = %k.replace('\n', " "), "push notification refused; registration disabled");
            if let Err(e) = server
                .storage()
                .map_delete(
                    account.domain(),
                    account.node().unwrap_or_default(),
                    STORE,
                    &k,
                )
                .await
            {
                tracing::error!(error = %e, "removing a push registration failed");
            }
        }
        Outcome::Handled
    }
}

/// `<x xmlns='jabber:x:data'>` with one value per field.
fn data_form(fields: &[(&str, String)]) -> Element {
    let mut b = Element::builder("x", NS_DATA);
    for (var, value) in fields {
        b = b.append(
            Element::builder("field", NS_DATA)
                .with_attr("var", *var)
                .append(Element::builder("value", NS_DATA).append(value.as_str())),
        );
    }
    b.build()
}

fn internal(e: starling_storage::StorageError) -> StanzaError {
    tracing::error!(error = %e, "push storage error");
    StanzaError::new(Cond::InternalServerError)
}

#[async_trait]
impl Module for Push {
    fn name(&self) -> &'static str {
        "push"
    }

    fn account_disco_features(&self) -> Vec<&'static str> {
        vec![NS_PUSH]
    }

    fn iq_payloads(&self) -> Vec<(&'static str, &'static str)> {
        vec![(NS_PUSH, "enable"), (NS_PUSH, "disable")]
    }

    async fn handle_iq(&self, server: &Server, iq: IqRequest<'_>) -> IqResponse {
        let owner = iq.from.bare();
        if *iq.to != owner || owner.node().is_none() {
            return Err(StanzaError::new(Cond::Forbidden));
        }
        if iq.kind != IqType::Set {
            return Err(StanzaError::new(Cond::BadRequest));
        }
        match iq.payload.name() {
            "enable" => self.enable(server, &owner, iq.payload).await,
            _ => self.disable(server, &owner, iq.payload).await,
        }
    }

    fn hooks(&self) -> Vec<Hook> {
        vec![Hook::Delivered, Hook::IqResponse]
    }

    async fn on_stanza(
        &self,
        server: &Server,
        stanza: &Element,
        hook: Hook,
        ctx: HookContext<'_>,
    ) -> Outcome {
        if hook == Hook::IqResponse {
            return self.answered(server, stanza).await;
        }
        if !stanza.is("message", ns::CLIENT)
            || matches!(stanza.attribute("type"), Some("error" | "headline"))
            || stanza.get_child("body", ns::CLIENT).is_none()
        {
            return Outcome::Pass;
        }
        // Someone is reading: a session that is not hibernated queued the message.
        let router = server.router();
        if ctx
            .delivered
            .iter()
            .any(|full| router.session(full).is_some_and(|s| !s.is_hibernated()))
        {
            return Outcome::Pass;
        }
        let Some(account) = stanza.jid_attribute("to").map(|j| j.bare()) else {
            return Outcome::Pass;
        };
        self.notify(server, &account, stanza).await;
        Outcome::Pass
    }

    async fn on_session(&self, _server: &Server, event: &SessionEvent) {
        // A new login reads everything: the count starts again.
        if let SessionEvent::Bound(full) = event {
            self.unread.lock().remove(&full.bare());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_form_has_one_value_per_field() {
        let form = data_form(&[
            ("FORM_TYPE", NS_SUMMARY.to_owned()),
            ("message-count", "2".to_owned()),
        ]);
        let vars: Vec<_> = form
            .children()
            .map(|f| {
                (
                    f.attribute("var").unwrap(),
                    f.children().next().unwrap().text(),
                )
            })
            .collect();
        assert_eq!(
            vars,
            vec![
                ("FORM_TYPE", NS_SUMMARY.to_owned()),
                ("message-count", "2".to_owned())
            ]
        );
    }

    #[test]
    fn keys_separate_server_and_node() {
        assert_eq!(key("push.example", "n1"), "push.example\nn1");
        assert!(key("push.example", "n1").starts_with(&key("push.example", "")));
    }
}
