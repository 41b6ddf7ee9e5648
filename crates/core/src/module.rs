//! The module API: one feature, one module (DESIGN "Modules", STYLE habit 3).
//!
//! A module declares the disco features it adds, the stream features it offers after
//! authentication, the IQ payloads it serves (namespace + element name), and it may listen to
//! stanzas addressed to a bare JID or to the server, and to session events. The server builds
//! its dispatch table from the enabled modules at start; adding a XEP never edits the router.

use std::future::Future;
use std::pin::Pin;

use async_trait::async_trait;
use minidom::Element;
use parking_lot::Mutex;
use starling_proto::error::StanzaError;
use starling_proto::jid::Jid;
use starling_proto::stanza::IqType;

use crate::server::Server;

/// Whether a hook consumed the stanza.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The module took care of the stanza; routing stops here.
    Handled,
    /// Not for this module; the next one (or the default rule) sees it.
    Pass,
    /// Only at [`Hook::Delivery`]: the module took care of the stanza silently (client state
    /// indication dropping a chat state); it counts as delivered, so nothing bounces and
    /// nothing goes offline. At any other hook it means the same as [`Outcome::Handled`].
    Consumed,
}

/// An IQ get or set addressed to the server or to an account's bare JID.
#[derive(Debug)]
pub struct IqRequest<'a> {
    /// The sender (always a full JID for local clients).
    pub from: &'a Jid,
    /// The addressee: our domain, or a bare JID the server answers for.
    pub to: &'a Jid,
    /// `get` or `set`.
    pub kind: IqType,
    /// The payload: the single child element.
    pub payload: &'a Element,
    /// The whole stanza, for modules that need other attributes.
    pub stanza: &'a Element,
}

/// The answer to an IQ: a payload for the result (or none), or a stanza error.
pub type IqResponse = Result<Option<Element>, StanzaError>;

/// Life-cycle events of client sessions.
#[derive(Debug, Clone)]
pub enum SessionEvent {
    /// A resource was bound.
    Bound(Jid),
    /// A session ended (cleanly or not) after having bound `Jid`.
    Ended(Jid),
}

/// The points in a stanza's life where modules can look at it, for [`Module::on_stanza`].
///
/// A module lists the points it wants in [`Module::hooks`]; the server calls only those, so a
/// stanza pays nothing for modules that do not care about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Hook {
    /// Sent by a local client (any type, any address), after `from` was stamped and before
    /// routing: outbound privacy rules, outbound subscription handling, carbons.
    Outbound,
    /// A message or presence addressed to one of our domains.
    Server,
    /// A message or presence addressed to an existing local account (bare JID, or a full JID
    /// whose resource is offline and falls back to the bare JID): inbound subscription
    /// handling, probes, inbound privacy rules.
    Account,
    /// A message for an existing account that no available resource will receive
    /// (RFC 6121 §8.5.2.2): offline storage.
    Undeliverable,
    /// Presence broadcast by a client (no `to`), after the session table recorded it.
    Broadcast,
    /// About to be queued for one local session (the stanza's `to` may be a bare JID; the
    /// session is given in [`HookContext::session`]): per-resource filters such as privacy
    /// lists and client state indication.
    Delivery,
    /// An IQ `result` or `error` addressed to one of our domains or to a local bare JID: the
    /// answer to a request a module sent on the server's or an account's behalf (PEP's
    /// disco#info query for entity capabilities). Unclaimed, it is dropped.
    IqResponse,
    /// Editing point (see [`Module::edit_stanza`]): a stanza sent by a local client after
    /// every [`Hook::Outbound`] module passed it, just before it is routed. Edits apply to
    /// what is routed: the sender's archive, copies to the sender's other resources, and ids
    /// that must not leave the sender's trust boundary.
    Sent,
    /// Editing point (see [`Module::edit_stanza`]): a message accepted for a local account,
    /// after the [`Hook::Account`] modules passed it (or addressed to a bound full JID, which
    /// does not cross [`Hook::Account`]), before it is delivered or handed to
    /// [`Hook::Undeliverable`]. Edits apply to every copy delivered or stored: the
    /// recipient's archive and its ids.
    Accepted,
    /// A message to a local account after delivery to its sessions was attempted; the sessions
    /// that queued it are in [`HookContext::delivered`] (possibly none, before
    /// [`Hook::Undeliverable`] runs): copies to the account's other sessions.
    Delivered,
}

/// Extra facts passed to [`Module::on_stanza`].
#[derive(Debug, Clone, Copy, Default)]
pub struct HookContext<'a> {
    /// For [`Hook::Broadcast`]: this is the session's first available presence (RFC 6121
    /// §4.2: initial presence, which triggers probes and offline delivery).
    pub initial: bool,
    /// For [`Hook::Delivery`]: the full JID of the session about to receive the stanza.
    pub session: Option<&'a Jid>,
    /// For [`Hook::Delivered`]: the sessions that queued the message.
    pub delivered: &'a [Jid],
    /// For [`Hook::Sent`] from [`Server::route_from_client`]: work that may run while the
    /// stanza is routed (see [`AfterRoute`]). `None` elsewhere: do the work before returning.
    pub after_route: Option<&'a AfterRoute>,
}

/// A unit of [`AfterRoute`] work.
pub type RouteWork = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// Work a [`Hook::Sent`] module started for a client's stanza that must be finished before
/// the sending session reads its next stanza, but need not be finished before the stanza is
/// routed. [`Server::route_from_client`] runs it concurrently with the routing and returns
/// once both are done.
///
/// Why: the sender's archive append (MAM) and the receiver's (made while the message is
/// routed) each wait for a storage commit. One after the other, a message between two local
/// users cost two commits of latency (two fsyncs on SQLite); side by side they usually share
/// one. The sending session still waits for its own work, so what it sends next is handled
/// after it, in order.
#[derive(Default)]
pub struct AfterRoute {
    work: Mutex<Vec<RouteWork>>,
}

impl AfterRoute {
    /// Adds work to run while the stanza is routed.
    pub fn push(&self, work: impl Future<Output = ()> + Send + 'static) {
        self.work.lock().push(Box::pin(work));
    }

    /// The work pushed so far.
    pub(crate) fn take(&self) -> Vec<RouteWork> {
        std::mem::take(&mut *self.work.lock())
    }
}

impl std::fmt::Debug for AfterRoute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AfterRoute")
            .field("work", &self.work.lock().len())
            .finish()
    }
}

/// One feature of the server.
#[async_trait]
pub trait Module: Send + Sync + 'static {
    /// Short name, used in logs and configuration.
    fn name(&self) -> &'static str;

    /// Features this module adds to the server's disco#info (XEP-0030).
    fn disco_features(&self) -> Vec<&'static str> {
        Vec::new()
    }

    /// Features this module adds to the disco#info of every account's bare JID, answered by
    /// the server on the account's behalf (XEP-0030 §3.1, RFC 6120 §10.5.3.1).
    fn account_disco_features(&self) -> Vec<&'static str> {
        Vec::new()
    }

    /// Stream features offered after authentication (inside `<stream:features/>`).
    fn stream_features(&self) -> Vec<Element> {
        Vec::new()
    }

    /// IQ payloads this module serves, as (namespace, element name).
    fn iq_payloads(&self) -> Vec<(&'static str, &'static str)> {
        Vec::new()
    }

    /// Serves an IQ whose payload is one of [`Module::iq_payloads`].
    async fn handle_iq(&self, _server: &Server, _iq: IqRequest<'_>) -> IqResponse {
        Err(StanzaError::new(
            starling_proto::error::StanzaErrorCondition::ServiceUnavailable,
        ))
    }

    /// Contributes to the disco answer for an account's bare JID (XEP-0030), given the
    /// request (`disco#info` or `disco#items`, with or without a `node`). `None`: nothing to
    /// add. Without a `node`, every module's elements (identities, features, items) are
    /// added to the account's answer; with one, the first module returning `Some` gives the
    /// whole answer, and none gives `item-not-found`.
    async fn account_disco(&self, _server: &Server, _iq: &IqRequest<'_>) -> Option<Vec<Element>> {
        None
    }

    /// The hook points this module wants to see (see [`Hook`]).
    fn hooks(&self) -> Vec<Hook> {
        Vec::new()
    }

    /// Sees a stanza at one of the points listed in [`Module::hooks`]. Returning
    /// [`Outcome::Handled`] stops routing (the module has delivered, stored, answered or
    /// dropped the stanza).
    async fn on_stanza(
        &self,
        _server: &Server,
        _stanza: &Element,
        _hook: Hook,
        _ctx: HookContext<'_>,
    ) -> Outcome {
        Outcome::Pass
    }

    /// Edits a stanza at one of the editing points ([`Hook::Sent`], [`Hook::Accepted`]) listed
    /// in [`Module::hooks`]; the server calls this instead of [`Module::on_stanza`] there.
    /// Modules run in module order, each seeing the edits of those before it. Returning
    /// [`Outcome::Handled`] stops routing (the module dropped or answered the stanza).
    async fn edit_stanza(
        &self,
        _server: &Server,
        _stanza: &mut Element,
        _hook: Hook,
        _ctx: HookContext<'_>,
    ) -> Outcome {
        Outcome::Pass
    }

    /// Whether [`Module::edit_stanza`] may change the stanza at `hook`, rather than only
    /// look at it or drop it. The server keeps a copy of an accepted message, so that a bounce
    /// carries what the sender sent, only while some module at [`Hook::Accepted`] says yes.
    fn edits_at(&self, _hook: Hook) -> bool {
        true
    }

    /// Sees session life-cycle events.
    async fn on_session(&self, _server: &Server, _event: &SessionEvent) {}

    /// Whole domains this module serves, such as a chat room service on `conference.<host>`
    /// (XEP-0045) or a gateway. Every stanza addressed to such a domain, or to a JID in it,
    /// goes to [`Module::on_domain_stanza`] instead of the user routing rules. Asked once,
    /// at start; two modules claiming one domain is a start-up error.
    fn served_domains(&self) -> Vec<String> {
        Vec::new()
    }

    /// Takes a stanza addressed to one of [`Module::served_domains`]; `to` is its parsed
    /// address. The module answers, fans out or bounces it itself.
    async fn on_domain_stanza(&self, _server: &Server, _stanza: Element, _to: Jid) {}

    /// Sees a bound client say it became inactive or active again (XEP-0352 client state
    /// indication); `session` is its full JID. The flag is already recorded on the session's
    /// handle ([`crate::SessionHandle::is_inactive`]) when this runs.
    async fn on_client_state(&self, _server: &Server, _session: &Jid, _inactive: bool) {}
}
