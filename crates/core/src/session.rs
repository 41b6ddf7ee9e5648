//! The handle through which everyone but its own task reaches a session.
//!
//! A session is a task that owns its socket (STYLE habit 2). Others hold a [`SessionHandle`]:
//! a bounded queue of outbound stanzas plus a way to ask the session to close. When the queue
//! is full the session is a slow consumer; the router asks it to close with
//! `policy-violation` rather than letting memory grow (DESIGN principle 3).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use minidom::Element;
use parking_lot::Mutex;
use starling_proto::error::{StreamError, StreamErrorCondition};
use starling_proto::jid::Jid;

use crate::queue;
use crate::xml::ElementExt;
use tokio_util::sync::CancellationToken;

static NEXT_SESSION_ID: AtomicU64 = AtomicU64::new(1);

/// What a session task receives from the rest of the server.
#[derive(Debug)]
pub enum Outbound {
    /// A stanza to write to the client, already addressed. Behind a pointer: every
    /// session's queue and its stream management queue hold `Outbound`s, and an inline
    /// element made each slot 112 bytes where a pointer needs 32. Shared (`Arc`): the router
    /// hands the delivered stanza to the [`crate::Hook::Delivered`] modules and to every
    /// resource it goes to without copying the tree.
    Stanza(Arc<Element>),
    /// One stanza serialised once for many sessions (a MUC message fanned out to N
    /// occupants), with this session's address.
    Shared(Arc<SharedStanza>, Jid),
}

impl Outbound {
    /// The stanza as an element, addressed; copies a shared stanza (the slow path: stream
    /// management's resend queue, rerouting what a closing session still held).
    pub fn into_element(self) -> Element {
        match self {
            Outbound::Stanza(el) => Arc::unwrap_or_clone(el),
            Outbound::Shared(shared, to) => shared.addressed(&to),
        }
    }
}

/// A stanza serialised once and written to many sessions, each with its own `to`: the hot
/// path of MUC fan-out (issue 9: "serialised once, written N times"). The bytes are the
/// writer's serialisation of the unaddressed element, split after the element's name, so a
/// session writes `head`, its ` to='…'` and `tail` without walking the tree again; queues hold
/// an `Arc` of it rather than N copies of the element.
#[derive(Debug)]
pub struct SharedStanza {
    element: Element,
    head: Box<[u8]>,
    tail: Box<[u8]>,
}

impl SharedStanza {
    /// Serialises `element`; a `to` it carries is removed (each session adds its own).
    pub fn new(mut element: Element) -> SharedStanza {
        element.remove_attr("to");
        let mut bytes = Vec::with_capacity(256);
        starling_proto::writer::write_element(&element, &mut bytes);
        let split = 1 + element.name().len();
        let tail = bytes.split_off(split).into_boxed_slice();
        SharedStanza {
            element,
            head: bytes.into_boxed_slice(),
            tail,
        }
    }

    /// The length of the serialisation without `to`.
    pub fn serialised_len(&self) -> usize {
        self.head.len() + self.tail.len()
    }

    /// The serialisation without `to` (what a room archives: the message as broadcast).
    pub fn unaddressed_bytes(&self) -> Vec<u8> {
        [&self.head[..], &self.tail[..]].concat()
    }

    /// The unaddressed element (what delivery filters look at).
    pub fn element(&self) -> &Element {
        &self.element
    }

    /// A copy of the element addressed to `to`.
    pub fn addressed(&self, to: &Jid) -> Element {
        let mut el = self.element.clone();
        el.put_attr("to", to.as_str());
        el
    }

    /// Appends the stanza addressed to `to`, as [`starling_proto::writer::write_element`]
    /// would have written the addressed element (attribute order aside).
    pub fn write_to(&self, to: &Jid, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.head);
        starling_proto::writer::write_attribute(out, "to", to.as_str());
        out.extend_from_slice(&self.tail);
    }
}

/// Why delivery to a session failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryError {
    /// The session's queue is full; the session has been asked to close.
    SlowConsumer,
    /// The session has ended.
    Gone,
}

#[derive(Debug)]
struct Control {
    /// Cancelled when someone asks the session to end.
    close: CancellationToken,
    /// The stream error the session should send when it ends because of `close`.
    reason: Mutex<Option<StreamError>>,
    /// Cancelled when the session task has finished its cleanup (its inbox was dropped).
    done: CancellationToken,
    /// The client said it is not being looked at (XEP-0352 client state indication), so
    /// [`crate::module::Hook::Delivery`] filters may hold or drop what is not urgent.
    inactive: AtomicBool,
    /// The client's connection broke and the session waits for it to resume the stream
    /// (XEP-0198): still bound and present, but nobody reads its queue for now, so modules
    /// may tell the user another way (push notifications, XEP-0357).
    hibernated: AtomicBool,
}

/// A cheap, clonable reference to a live session.
#[derive(Debug, Clone)]
pub struct SessionHandle {
    id: u64,
    tx: queue::Sender<Outbound>,
    control: Arc<Control>,
}

/// The receiving half, owned by the session task.
#[derive(Debug)]
pub struct SessionInbox {
    /// Outbound stanzas queued for this session.
    pub rx: queue::Receiver<Outbound>,
    control: Arc<Control>,
}

impl SessionHandle {
    /// Creates a handle and the inbox its session task reads, with a queue of `capacity`.
    pub fn new(capacity: usize) -> (SessionHandle, SessionInbox) {
        let (tx, rx) = queue::channel(capacity);
        let control = Arc::new(Control {
            close: CancellationToken::new(),
            reason: Mutex::new(None),
            done: CancellationToken::new(),
            inactive: AtomicBool::new(false),
            hibernated: AtomicBool::new(false),
        });
        (
            SessionHandle {
                id: NEXT_SESSION_ID.fetch_add(1, Ordering::Relaxed),
                tx,
                control: control.clone(),
            },
            SessionInbox { rx, control },
        )
    }

    /// A process-unique id, used to tell a session from a later one on the same full JID.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Queues a stanza without waiting. A full queue closes the session as a slow consumer.
    pub fn deliver(&self, stanza: impl Into<Arc<Element>>) -> Result<(), DeliveryError> {
        self.send(Outbound::Stanza(stanza.into()))
    }

    fn send(&self, out: Outbound) -> Result<(), DeliveryError> {
        match self.tx.try_send(out) {
            Ok(()) => Ok(()),
            Err(queue::TrySendError::Full(_)) => {
                tracing::warn!(
                    session = self.id,
                    "outbound queue full: closing slow consumer"
                );
                self.close(StreamError::with_text(
                    StreamErrorCondition::PolicyViolation,
                    "too many stanzas queued for this session (slow consumer)",
                ));
                Err(DeliveryError::SlowConsumer)
            }
            Err(queue::TrySendError::Closed(_)) => Err(DeliveryError::Gone),
        }
    }

    /// Queues a shared stanza for this session, addressed to `to`: like [`Self::deliver`].
    pub fn deliver_shared(&self, stanza: Arc<SharedStanza>, to: Jid) -> Result<(), DeliveryError> {
        self.send(Outbound::Shared(stanza, to))
    }

    /// How many more stanzas the queue takes right now; lets a producer of many stanzas
    /// (offline delivery, history replay) pace itself instead of tripping the slow-consumer
    /// rule.
    pub fn capacity(&self) -> usize {
        self.tx.capacity()
    }

    /// Asks the session to end its stream with `reason`. The first reason wins.
    pub fn close(&self, reason: StreamError) {
        let mut slot = self.control.reason.lock();
        if slot.is_none() {
            *slot = Some(reason);
        }
        drop(slot);
        self.control.close.cancel();
    }

    /// Resolves once the session task has finished (its unavailable presence was broadcast
    /// and its queue re-routed). Used to make a resource takeover orderly.
    pub async fn finished(&self) {
        self.control.done.cancelled().await
    }

    /// Records whether the client is inactive (see [`SessionHandle::is_inactive`]). Set by
    /// the session task through [`crate::Server::client_state`], which also tells modules.
    pub fn set_inactive(&self, inactive: bool) {
        self.control.inactive.store(inactive, Ordering::SeqCst);
    }

    /// Whether the client last said it is inactive (XEP-0352); false until it says so.
    pub fn is_inactive(&self) -> bool {
        self.control.inactive.load(Ordering::SeqCst)
    }

    /// Records whether the session is hibernated (see [`SessionHandle::is_hibernated`]);
    /// set by the session task when its connection breaks and when it is resumed.
    pub fn set_hibernated(&self, hibernated: bool) {
        self.control.hibernated.store(hibernated, Ordering::SeqCst);
    }

    /// Whether the session has lost its connection and waits to be resumed (XEP-0198).
    pub fn is_hibernated(&self) -> bool {
        self.control.hibernated.load(Ordering::SeqCst)
    }

    /// Whether the session has been asked to close or has ended.
    pub fn is_closed(&self) -> bool {
        self.control.close.is_cancelled() || self.tx.is_closed()
    }
}

impl Drop for SessionInbox {
    fn drop(&mut self) {
        self.control.done.cancel();
    }
}

/// Waits for a close request; separate from the inbox so both can sit in one `select!`.
#[derive(Debug, Clone)]
pub struct CloseSignal {
    control: Arc<Control>,
}

impl SessionInbox {
    /// The close signal of this session.
    pub fn close_signal(&self) -> CloseSignal {
        CloseSignal {
            control: self.control.clone(),
        }
    }
}

impl CloseSignal {
    /// Resolves when someone asked this session to close; yields the stream error to send.
    pub async fn closed(&self) -> StreamError {
        self.control.close.cancelled().await;
        self.control
            .reason
            .lock()
            .clone()
            .unwrap_or_else(|| StreamError::new(StreamErrorCondition::UndefinedCondition))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queue_slot_stays_small() {
        // Session queues and stream-management queues hold these by value.
        assert!(
            std::mem::size_of::<Outbound>() <= 40,
            "Outbound is {} bytes",
            std::mem::size_of::<Outbound>()
        );
    }

    #[test]
    fn shared_stanza_bytes_are_the_addressed_element() {
        let el: Element = "<message xmlns='jabber:client' from='room@muc.example/n&amp;ck' \
            type='groupchat' to='old@example'><body>a &lt; b</body>\
            <x xmlns='urn:example'><y/></x></message>"
            .parse()
            .unwrap();
        let shared = SharedStanza::new(el);
        assert_eq!(shared.element().attr("to"), None);
        let to = Jid::parse("obrien@example/o'r\"&<1").unwrap();
        let mut bytes = Vec::new();
        shared.write_to(&to, &mut bytes);
        let text = String::from_utf8(bytes).unwrap();
        let parsed: Element = text.parse().expect("well-formed");
        let expected = shared.addressed(&to);
        assert_eq!(parsed, expected, "{text}");
        assert_eq!(parsed.attr("to"), Some(to.as_str()));
        let plain: Element = String::from_utf8(shared.unaddressed_bytes())
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(&plain, shared.element());
        assert_eq!(shared.unaddressed_bytes().len(), shared.serialised_len());
        // The same bytes serve a second session with its own address.
        let other = Jid::parse("b@example/x").unwrap();
        let mut second = Vec::new();
        shared.write_to(&other, &mut second);
        let parsed: Element = String::from_utf8(second).unwrap().parse().unwrap();
        assert_eq!(parsed.attr("to"), Some("b@example/x"));
        assert_eq!(
            Outbound::Shared(Arc::new(shared), other).into_element(),
            parsed
        );
    }

    #[tokio::test]
    async fn full_queue_closes_the_session() {
        let (h, inbox) = SessionHandle::new(2);
        let el = || Element::builder("message", "jabber:client").build();
        assert_eq!(h.deliver(el()), Ok(()));
        assert_eq!(h.deliver(el()), Ok(()));
        assert_eq!(h.deliver(el()), Err(DeliveryError::SlowConsumer));
        assert!(h.is_closed());
        let reason = inbox.close_signal().closed().await;
        assert_eq!(reason.condition, StreamErrorCondition::PolicyViolation);
    }

    #[tokio::test]
    async fn finished_resolves_when_the_inbox_is_dropped() {
        let (h, inbox) = SessionHandle::new(2);
        let waiter = tokio::spawn({
            let h = h.clone();
            async move { h.finished().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(inbox);
        tokio::time::timeout(std::time::Duration::from_secs(1), waiter)
            .await
            .expect("finished() resolves")
            .unwrap();
    }

    #[tokio::test]
    async fn dropped_inbox_means_gone() {
        let (h, inbox) = SessionHandle::new(2);
        drop(inbox);
        let el = Element::builder("message", "jabber:client").build();
        assert_eq!(h.deliver(el), Err(DeliveryError::Gone));
    }
}
