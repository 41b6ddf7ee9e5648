//! Offline messages: XEP-0160 (Best Practices for Handling Offline Messages) with XEP-0203
//! delay stamps, for the case RFC 6121 §8.5.2.2 leaves open: a message to an existing account
//! that no available resource with non-negative priority receives.
//!
//! What it owns: the per-user queue in the storage archive `offline`, its quota, and delivery
//! of the queue when a resource next sends available presence with non-negative priority
//! (XEP-0160 §2 step 5). What it does not: flexible offline retrieval (XEP-0013), message
//! archiving (MAM) or the delivery rules themselves (the router decides a message is
//! undeliverable and calls [`Hook::Undeliverable`]).
//!
//! Which messages are stored (XEP-0160 §3): `normal` and `chat` messages with content worth
//! keeping — not those carrying only chat states (XEP-0085) or a `no-store` hint (XEP-0334).
//! Content-free ones are dropped silently; `headline`, `groupchat` and `error` are left to the
//! router (which drops headlines and errors and bounces groupchat). When the queue is full the
//! message is not stored and the router returns `service-unavailable` (XEP-0160 §2 step 3).
//!
//! Durability (DESIGN principle 4): the hook returns [`Outcome::Handled`] only after the
//! storage write returned, and storage writes are durable when they return; stored messages
//! are deleted only after they were queued for a session.

use starling_proto::Attr;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use minidom::Element;
use parking_lot::Mutex;
use starling_core::module::SessionEvent;
use starling_core::xml::BuilderExt;
use starling_core::{Hook, HookContext, Module, Outcome, Server, SessionHandle};
use starling_proto::jid::Jid;
use starling_proto::{ns, writer};
use starling_storage::{ArchiveItem, ArchiveQuery, MAX_ARCHIVE_PAGE};

use crate::time::{now_ms, utc_stamp};

/// The storage archive holding each user's queue.
pub const STORE: &str = "offline";
/// Default most messages kept for one user.
pub const DEFAULT_QUOTA: u64 = 1000;
/// XEP-0160's disco feature.
pub const FEATURE: &str = "msgoffline";
/// Chat State Notifications (XEP-0085).
const NS_CHATSTATES: &str = "http://jabber.org/protocol/chatstates";
/// Message Processing Hints (XEP-0334).
const NS_HINTS: &str = "urn:xmpp:hints";
/// Unique and stable stanza IDs (XEP-0359): ids alone are not content.
const NS_SID: &str = "urn:xmpp:sid:0";
/// Free queue slots kept for other traffic while replaying the queue into a session.
const QUEUE_RESERVE: usize = 16;
/// How long replay waits for a full session queue to drain before leaving the rest stored.
const DRAIN_WAIT: Duration = Duration::from_secs(10);

/// The offline module.
pub struct Offline {
    /// Most messages stored per user; beyond it senders get `service-unavailable`.
    quota: u64,
    /// Serialises replay per user so that two resources coming online together do not both
    /// receive (and delete) the same messages.
    replaying: Arc<ReplayLocks>,
    /// Sessions whose initial presence had a negative priority: they get the queue when they
    /// first raise it to non-negative (XEP-0160: "next sends non-negative available presence").
    waiting: Mutex<HashSet<Jid>>,
    /// Makes archive ids unique within the process (with the clock, across restarts too).
    counter: AtomicU64,
}

impl Default for Offline {
    fn default() -> Self {
        Offline::new(DEFAULT_QUOTA)
    }
}

impl Offline {
    /// An offline store keeping at most `quota` messages per user.
    pub fn new(quota: u64) -> Offline {
        Offline {
            quota,
            replaying: Arc::default(),
            waiting: Mutex::new(HashSet::new()),
            counter: AtomicU64::new(0),
        }
    }

    fn next_id(&self) -> String {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        format!("{nanos:x}-{n:x}")
    }

    /// Stores `msg` for its addressee. `Handled` once durable; `Pass` lets the router apply
    /// its default (bounce `normal`/`chat` with `service-unavailable`).
    async fn store(&self, server: &Server, msg: &Element) -> Outcome {
        match classify(msg) {
            Storable::No => return Outcome::Pass,
            Storable::Drop => return Outcome::Handled,
            Storable::Yes => {}
        }
        let Some(to) = msg.jid_attribute("to") else {
            return Outcome::Pass;
        };
        let Some(user) = to.node() else {
            return Outcome::Pass;
        };
        let storage = server.storage();
        match storage.archive_count(to.domain(), user, STORE).await {
            Ok(n) if n >= self.quota => {
                tracing::info!(user = %to.bare(), "offline queue full; message bounced");
                return Outcome::Pass;
            }
            Ok(_) => {}
            Err(e) => {
                tracing::error!(error = %e, "offline queue count failed");
                return Outcome::Pass;
            }
        }
        let when = now_ms();
        let mut stamped = msg.clone();
        stamped.append_child(
            Element::builder("delay", ns::DELAY)
                .with_attr("from", to.domain())
                .with_attr("stamp", utc_stamp(when))
                .build(),
        );
        let mut payload = Vec::new();
        writer::write_element(&stamped, &mut payload);
        let with = msg
            .jid_attribute("from")
            .map(|f| f.bare().as_str().to_owned())
            .unwrap_or_default();
        let item = ArchiveItem {
            id: self.next_id(),
            when_ms: when,
            with,
            payload,
        };
        match storage
            .archive_append(to.domain(), user, STORE, &item)
            .await
        {
            Ok(()) => Outcome::Handled,
            Err(e) => {
                tracing::error!(error = %e, "storing an offline message failed");
                Outcome::Pass
            }
        }
    }
}

/// One lock per user being replayed to.
type ReplayLocks = Mutex<HashMap<Jid, Arc<tokio::sync::Mutex<()>>>>;

/// Queues the stored messages of `full`'s account for that session, oldest first, and
/// deletes each page once it is queued. Runs in its own task: it may wait for the session's
/// queue to drain, which the session task (where the presence hook runs) has to do.
async fn replay(server: Arc<Server>, locks: Arc<ReplayLocks>, full: Jid) {
    let full = &full;
    let Some(user) = full.node() else { return };
    let bare = full.bare();
    let lock = locks.lock().entry(bare.clone()).or_default().clone();
    {
        let _guard = lock.lock().await;
        let storage = server.storage();
        loop {
            let Some(session) = server.router().session(full) else {
                break;
            };
            let query = ArchiveQuery {
                limit: MAX_ARCHIVE_PAGE,
                ..ArchiveQuery::default()
            };
            let page = match storage
                .archive_query(full.domain(), user, STORE, &query)
                .await
            {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(error = %e, "reading the offline queue failed");
                    break;
                }
            };
            if page.items.is_empty() {
                break;
            }
            let mut done = Vec::with_capacity(page.items.len());
            let mut interrupted = false;
            for item in &page.items {
                let el = match std::str::from_utf8(&item.payload)
                    .ok()
                    .and_then(|s| s.parse::<Element>().ok())
                {
                    Some(el) => el,
                    None => {
                        // Unreadable: nothing useful can come of keeping it.
                        tracing::error!(id = %item.id, "dropping an unparsable offline message");
                        done.push(item.id.clone());
                        continue;
                    }
                };
                if !wait_for_room(&session).await {
                    interrupted = true;
                    break;
                }
                if !server.deliver_to(&session, full, el).await && session.is_closed() {
                    interrupted = true;
                    break;
                }
                // Queued, or refused by a delivery filter (privacy lists): either way done.
                done.push(item.id.clone());
            }
            if !done.is_empty() {
                if let Err(e) = storage
                    .archive_delete(full.domain(), user, STORE, Some(&done), None)
                    .await
                {
                    tracing::error!(error = %e, "deleting delivered offline messages failed");
                    break;
                }
            }
            if interrupted || page.complete {
                break;
            }
        }
    }
    drop(lock);
    let mut map = locks.lock();
    if map.get(&bare).is_some_and(|l| Arc::strong_count(l) == 1) {
        map.remove(&bare);
    }
}

/// Waits until the session queue has room for one more stanza beside a reserve; false if the
/// session closed or stayed full for [`DRAIN_WAIT`].
async fn wait_for_room(session: &SessionHandle) -> bool {
    let deadline = tokio::time::Instant::now() + DRAIN_WAIT;
    while session.capacity() <= QUEUE_RESERVE {
        if session.is_closed() || tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    !session.is_closed()
}

/// What XEP-0160 §3 says to do with a message nobody is online to receive.
#[derive(Debug, PartialEq, Eq)]
enum Storable {
    /// Store it.
    Yes,
    /// Not ours to handle (headline, groupchat, error): the router's default applies.
    No,
    /// `normal`/`chat` with nothing worth keeping (chat states only, `no-store`): drop.
    Drop,
}

fn classify(msg: &Element) -> Storable {
    match msg.attribute("type").unwrap_or("normal") {
        "normal" | "chat" => {}
        _ => return Storable::No,
    }
    let hint = |name| msg.children().any(|c| c.is(name, NS_HINTS));
    if hint("store") {
        return Storable::Yes;
    }
    if hint("no-store") || hint("no-permanent-store") {
        return Storable::Drop;
    }
    let content = msg.children().any(|c| {
        let ns = c.ns();
        !(ns == NS_CHATSTATES
            || ns == NS_HINTS
            || ns == NS_SID
            || (ns == ns::CLIENT && c.name() == "thread"))
    });
    if content {
        Storable::Yes
    } else {
        Storable::Drop
    }
}

/// The `<priority/>` of a presence stanza (RFC 6121 §4.7.2.3; absent means 0).
fn priority(pres: &Element) -> i8 {
    pres.get_child("priority", ns::CLIENT)
        .and_then(|p| p.text().trim().parse::<i8>().ok())
        .unwrap_or(0)
}

#[async_trait]
impl Module for Offline {
    fn name(&self) -> &'static str {
        "offline"
    }

    fn disco_features(&self) -> Vec<&'static str> {
        vec![FEATURE]
    }

    fn hooks(&self) -> Vec<Hook> {
        vec![Hook::Undeliverable, Hook::Broadcast]
    }

    async fn on_stanza(
        &self,
        server: &Server,
        stanza: &Element,
        hook: Hook,
        ctx: HookContext<'_>,
    ) -> Outcome {
        match hook {
            Hook::Undeliverable if stanza.name() == "message" => self.store(server, stanza).await,
            Hook::Broadcast if stanza.attribute("type").is_none() => {
                let Some(from) = stanza.jid_attribute("from") else {
                    return Outcome::Pass;
                };
                let nonneg = priority(stanza) >= 0;
                let go = if ctx.initial {
                    if !nonneg {
                        self.waiting.lock().insert(from.clone());
                    }
                    nonneg
                } else {
                    nonneg && self.waiting.lock().remove(&from)
                };
                if go {
                    if let Some(server) = server.arc() {
                        tokio::spawn(replay(server, self.replaying.clone(), from));
                    }
                }
                // Presence fan-out belongs to the presence module: never consume it.
                Outcome::Pass
            }
            _ => Outcome::Pass,
        }
    }

    async fn on_session(&self, _server: &Server, event: &SessionEvent) {
        if let SessionEvent::Ended(full) = event {
            self.waiting.lock().remove(full);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(s: &str) -> Element {
        s.parse().unwrap()
    }

    #[test]
    fn what_is_stored() {
        let c = |s: &str| classify(&msg(s));
        assert_eq!(
            c("<message xmlns='jabber:client'><body>hi</body></message>"),
            Storable::Yes
        );
        assert_eq!(
            c("<message xmlns='jabber:client' type='chat'><body>hi</body></message>"),
            Storable::Yes
        );
        assert_eq!(
            c("<message xmlns='jabber:client' type='headline'><body>hi</body></message>"),
            Storable::No
        );
        assert_eq!(
            c("<message xmlns='jabber:client' type='groupchat'><body>hi</body></message>"),
            Storable::No
        );
        assert_eq!(
            c("<message xmlns='jabber:client' type='error'><body>hi</body></message>"),
            Storable::No
        );
        assert_eq!(
            c("<message xmlns='jabber:client' type='chat'><composing xmlns='http://jabber.org/protocol/chatstates'/><thread>t</thread></message>"),
            Storable::Drop
        );
        assert_eq!(
            c("<message xmlns='jabber:client' type='chat'><body>x</body><no-store xmlns='urn:xmpp:hints'/></message>"),
            Storable::Drop
        );
        assert_eq!(
            c("<message xmlns='jabber:client'><x xmlns='jabber:x:oob'><url>u</url></x></message>"),
            Storable::Yes
        );
        assert_eq!(
            c("<message xmlns='jabber:client'><active xmlns='http://jabber.org/protocol/chatstates'/><store xmlns='urn:xmpp:hints'/></message>"),
            Storable::Yes
        );
    }

    #[test]
    fn priority_parses() {
        assert_eq!(priority(&msg("<presence xmlns='jabber:client'/>")), 0);
        assert_eq!(
            priority(&msg(
                "<presence xmlns='jabber:client'><priority>-5</priority></presence>"
            )),
            -5
        );
    }
}
