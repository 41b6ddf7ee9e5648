//! Last Activity (XEP-0012), answered by the server:
//!
//! - To the server's domain (§5): seconds since the server started.
//! - To an account's bare JID (§3): `0` while the user has an available resource, else the
//!   seconds since the user last went offline and the `<status/>` of that last unavailable
//!   presence. Only to the user and to entities allowed to see the user's presence (§3, §8):
//!   a roster contact with a `from` or `both` subscription; anyone else gets `forbidden`.
//!   A user never seen offline gives `item-not-found`.
//! - Queries to a full JID reach the client itself (the router delivers them), per §4.
//!
//! "Went offline" is recorded when the user's last available resource sends unavailable
//! presence (also the one the server sends for a session that ends while available), and
//! when the user's last session ends without that having happened (a session that never
//! sent presence), in the key-value store `last` as
//! `<last xmlns='urn:starling:last:0' at='epoch-ms'>status</last>`: one write per logout.

use starling_proto::Attr;
use std::collections::HashMap;
use std::time::Instant;

use async_trait::async_trait;
use minidom::Element;
use parking_lot::Mutex;
use starling_core::module::{IqRequest, IqResponse, SessionEvent};
use starling_core::xml::BuilderExt;
use starling_core::{Hook, HookContext, Module, Outcome, Server};
use starling_proto::error::{StanzaError, StanzaErrorCondition as Cond};
use starling_proto::jid::Jid;
use starling_proto::ns;
use starling_proto::stanza::IqType;
use starling_proto::writer;

use crate::roster::item::{RosterItem, STORE as ROSTER_STORE};
use crate::time::now_ms;

/// The last activity namespace.
pub const NS_LAST: &str = "jabber:iq:last";
/// Key-value store with each user's last logout.
const STORE: &str = "last";
/// Namespace of the stored form (not on the wire).
const NS_STORED: &str = "urn:starling:last:0";

/// The last activity module.
pub struct LastActivity {
    /// When the server started (the module is built at start), for uptime queries.
    started: Instant,
    /// Status text of each user's most recent unavailable presence, and whether it was
    /// recorded (the user's last available resource sent it), kept until the last session
    /// ends.
    status: Mutex<HashMap<Jid, (String, bool)>>,
}

impl Default for LastActivity {
    fn default() -> Self {
        LastActivity {
            started: Instant::now(),
            status: Mutex::new(HashMap::new()),
        }
    }
}

fn internal(e: starling_storage::StorageError) -> StanzaError {
    tracing::error!(error = %e, "last activity storage error");
    StanzaError::new(Cond::InternalServerError)
}

fn query(seconds: u64, text: &str) -> Element {
    let mut q = Element::builder("query", NS_LAST)
        .with_attr("seconds", seconds.to_string())
        .build();
    if !text.is_empty() {
        q.append_text(text);
    }
    q
}

impl LastActivity {
    async fn record(&self, server: &Server, user: &Jid, status: &str) {
        let Some(node) = user.node() else { return };
        let mut el = Element::builder("last", NS_STORED)
            .with_attr("at", now_ms().to_string())
            .build();
        if !status.is_empty() {
            el.append_text(status);
        }
        let mut bytes = Vec::new();
        writer::write_element(&el, &mut bytes);
        if let Err(e) = server
            .storage()
            .kv_set(user.domain(), node, STORE, &bytes)
            .await
        {
            tracing::error!(error = %e, "recording last activity failed");
        }
    }

    /// Whether `asker` may learn `user`'s availability: the user, or a contact the user's
    /// roster lets see presence.
    async fn authorized(
        &self,
        server: &Server,
        user: &Jid,
        asker: &Jid,
    ) -> Result<bool, StanzaError> {
        if asker.bare() == *user {
            return Ok(true);
        }
        let node = user.node().unwrap_or_default();
        let item = server
            .storage()
            .map_get(user.domain(), node, ROSTER_STORE, asker.bare().as_str())
            .await
            .map_err(internal)?
            .and_then(|v| RosterItem::decode(&v));
        Ok(item.is_some_and(|i| i.sub.state.from()))
    }

    async fn account_query(&self, server: &Server, user: &Jid, asker: &Jid) -> IqResponse {
        if !self.authorized(server, user, asker).await? {
            return Err(StanzaError::new(Cond::Forbidden));
        }
        let online = server
            .router()
            .with_resources(user, |l| l.iter().any(|r| r.available));
        if online {
            return Ok(Some(query(0, "")));
        }
        let node = user.node().unwrap_or_default();
        let stored = server
            .storage()
            .kv_get(user.domain(), node, STORE)
            .await
            .map_err(internal)?
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| s.parse::<Element>().ok())
            .filter(|el| el.is("last", NS_STORED));
        let Some(el) = stored else {
            return Err(StanzaError::new(Cond::ItemNotFound));
        };
        let at = el
            .attribute("at")
            .and_then(|a| a.parse::<i64>().ok())
            .unwrap_or(0);
        let seconds = (now_ms() - at).max(0) / 1000;
        Ok(Some(query(seconds as u64, &el.text())))
    }
}

#[async_trait]
impl Module for LastActivity {
    fn name(&self) -> &'static str {
        "last"
    }

    fn disco_features(&self) -> Vec<&'static str> {
        vec![NS_LAST]
    }

    fn iq_payloads(&self) -> Vec<(&'static str, &'static str)> {
        vec![(NS_LAST, "query")]
    }

    async fn handle_iq(&self, server: &Server, iq: IqRequest<'_>) -> IqResponse {
        if iq.kind != IqType::Get {
            return Err(StanzaError::new(Cond::BadRequest));
        }
        if iq.to.node().is_none() {
            return Ok(Some(query(self.started.elapsed().as_secs(), "")));
        }
        self.account_query(server, &iq.to.bare(), iq.from).await
    }

    fn hooks(&self) -> Vec<Hook> {
        vec![Hook::Broadcast]
    }

    async fn on_stanza(
        &self,
        server: &Server,
        stanza: &Element,
        hook: Hook,
        _ctx: HookContext<'_>,
    ) -> Outcome {
        if hook != Hook::Broadcast || stanza.attribute("type") != Some("unavailable") {
            return Outcome::Pass;
        }
        let Some(from) = stanza.jid_attribute("from") else {
            return Outcome::Pass;
        };
        let user = from.bare();
        let status = stanza
            .get_child("status", ns::CLIENT)
            .map(|s| s.text())
            .unwrap_or_default();
        let still_available = server
            .router()
            .with_resources(&user, |l| l.iter().any(|r| r.available));
        self.status
            .lock()
            .insert(user.clone(), (status.clone(), !still_available));
        if !still_available {
            self.record(server, &user, &status).await;
        }
        Outcome::Pass
    }

    async fn on_session(&self, server: &Server, event: &SessionEvent) {
        let SessionEvent::Ended(full) = event else {
            return;
        };
        let user = full.bare();
        if server.router().resources(&user).is_empty() {
            let (status, recorded) = self.status.lock().remove(&user).unwrap_or_default();
            if !recorded {
                self.record(server, &user, &status).await;
            }
        }
    }
}
