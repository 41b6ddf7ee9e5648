//! Presence through the gateway: SIP SUBSCRIBE/NOTIFY with PIDF (RFC 3856, RFC 6665) <->
//! XMPP subscriptions and presence (RFC 3922 §5, §6).
//!
//! A SIP user watching an XMPP user (we are the notifier, a [`Watcher`] dialog):
//! - SUBSCRIBE `Event: presence` to `sip:alice@<host>` -> 200 with our To tag and the granted
//!   Expires, a NOTIFY `Subscription-State: pending` at once (RFC 6665 §4.2.1.2), and an XMPP
//!   `<presence type='subscribe'/>` from `bob%sip.example@<gateway>` to alice (RFC 3922 §6:
//!   foreign subscribe -> XMPP subscribe).
//! - alice answers `subscribed` -> NOTIFY `active` with a PIDF of her available resources (one
//!   tuple each, from the router), then a NOTIFY whenever a presence she sends changes the
//!   document; `unavailable` -> that tuple `closed`. A document never has zero tuples: with no
//!   resource it holds one `closed` tuple for the bare JID. `unsubscribed` -> NOTIFY
//!   `terminated;reason=rejected` and the dialog ends.
//! - SUBSCRIBE in the dialog refreshes (200 + NOTIFY); `Expires: 0` ends it with a NOTIFY
//!   `terminated;reason=timeout` and an XMPP `unsubscribe` (RFC 3922 §6: duration 0 ->
//!   unsubscribe). A dialog not refreshed in time ends the same way, without the unsubscribe
//!   (the XMPP subscription outlives SIP's Expires: a new SUBSCRIBE is approved at once by the
//!   roster's auto-reply).
//!
//! An XMPP user watching a SIP user (we are the subscriber, an [`Outbound`] dialog):
//! - `subscribe` to `bob%sip.example@<gateway>` -> SUBSCRIBE to `sip:bob@sip.example` with
//!   `Expires` = `subscription_expires_secs`. An error response -> presence error to alice with
//!   [`crate::errors::sip_to_condition`] (404 -> item-not-found, 403 -> forbidden); a second
//!   `subscribe` while one is in flight -> `conflict` (RFC 3922 §6 SHOULD).
//! - NOTIFY `active` -> `subscribed` to alice (once); the PIDF body -> one presence per tuple,
//!   only for tuples that changed (RFC 3922 §6), from `bob%sip.example@<gateway>/<tuple>`
//!   whatever entity the document names. `terminated;reason=rejected|noresource` ->
//!   `unsubscribed`.
//! - The subscription is refreshed at three quarters of the granted Expires.
//! - `unsubscribe` -> SUBSCRIBE `Expires: 0` in the dialog, and `unavailable` from each
//!   resource alice knew.
//! - A probe with no dialog (after a restart, the roster still says `to`) starts a new
//!   subscription quietly.
//!
//! Limits: `max_subscriptions` dialogs in all, `max_subscriptions_per_user` per XMPP user,
//! [`MAX_RESOURCES`] tuples per dialog.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use minidom::Element;
use parking_lot::Mutex;
use starling_core::config::SipConfig;
use starling_core::xml::{BuilderExt, ElementExt};
use starling_core::Server;
use starling_cpim::address::jid_to_sip_uri;
use starling_cpim::presence::TupleChangeFilter;
use starling_cpim::{InboundPresenceOptions, PidfDocument, SipUri};
use starling_proto::error::StanzaErrorCondition as Cond;
use starling_proto::jid::Jid;
use starling_proto::ns;

use crate::errors::sip_to_condition;
use crate::gateway::{now, Inner};
use crate::sip::{addr_uri, param, reason, SipMessage};
use crate::transport::{Dest, Origin, TsxError};

/// Most resources (tuples) one dialog tracks.
pub(crate) const MAX_RESOURCES: usize = 32;
/// How often expiries and refreshes are checked.
const TICK: Duration = Duration::from_millis(500);

type DialogKey = (String, String); // (Call-ID, our tag)

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WatchState {
    Pending,
    Active,
    /// Unsubscribed: only the final NOTIFY is still to go.
    Ending,
}

/// A SIP watcher of an XMPP user.
struct Watcher {
    /// The XMPP user watched (bare).
    user: Jid,
    /// The watcher as a gateway JID (`bob%sip.example@<gateway>`).
    watcher_jid: String,
    /// URIs of the dialog: ours (To of the SUBSCRIBE) and theirs (From).
    local_uri: String,
    remote_uri: String,
    remote_tag: String,
    /// Where NOTIFYs go: Request-URI (the watcher's Contact) and address.
    remote_target: String,
    dest: Dest,
    cseq: u32,
    expires_at: Instant,
    state: WatchState,
    /// Full JID -> last presence (available or unavailable) of each resource.
    resources: BTreeMap<String, Element>,
    /// NOTIFYs of one dialog go one at a time (RFC 6665 §4.2.2), latest state first.
    send_lock: Arc<tokio::sync::Mutex<()>>,
    /// The last PIDF sent, to skip NOTIFYs that would say nothing new.
    last_body: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OutState {
    /// SUBSCRIBE sent, no 2xx yet.
    Sending,
    /// Dialog up; waiting for `active`.
    Pending,
    Active,
    /// We sent `Expires: 0`.
    Terminating,
}

/// An XMPP user's subscription to a SIP user.
struct Outbound {
    user: Jid,
    peer_jid: String,
    peer_uri: String,
    local_uri: String,
    call_id: String,
    local_tag: String,
    remote_tag: Option<String>,
    remote_target: String,
    dest: Dest,
    cseq: u32,
    state: OutState,
    /// When to refresh (or give up, when Terminating).
    refresh_at: Instant,
    granted: u32,
    /// `subscribed` was routed to the user.
    told_subscribed: bool,
    /// Opened by a probe: failures are not reported to the user.
    quiet: bool,
    /// The subscribe stanza, to bounce errors with.
    request: Element,
    filter: TupleChangeFilter,
    /// Full JID -> last available presence, for probes.
    last: BTreeMap<String, Element>,
}

#[derive(Default)]
struct State {
    watchers: HashMap<DialogKey, Watcher>,
    outbound: HashMap<DialogKey, Outbound>,
}

impl State {
    fn count_for(&self, user: &Jid) -> usize {
        self.watchers.values().filter(|w| &w.user == user).count()
            + self.outbound.values().filter(|o| &o.user == user).count()
    }
    fn total(&self) -> usize {
        self.watchers.len() + self.outbound.len()
    }
}

/// Every presence dialog of the gateway.
pub(crate) struct Subscriptions {
    state: Mutex<State>,
    max_total: usize,
    max_per_user: usize,
    expires: u32,
}

impl Subscriptions {
    pub(crate) fn new(config: &SipConfig) -> Subscriptions {
        Subscriptions {
            state: Mutex::new(State::default()),
            max_total: config.max_subscriptions,
            max_per_user: config.max_subscriptions_per_user,
            expires: config.subscription_expires_secs,
        }
    }

    fn has_room(&self, state: &State, user: &Jid) -> bool {
        if state.total() >= self.max_total {
            tracing::warn!("SIP: max_subscriptions reached; subscription refused");
            return false;
        }
        if state.count_for(user) >= self.max_per_user {
            tracing::warn!(%user, "SIP: max_subscriptions_per_user reached; subscription refused");
            return false;
        }
        true
    }
}

fn presence(from: &str, to: &str, kind: Option<&str>) -> Element {
    let mut b = Element::builder("presence", ns::CLIENT)
        .with_attr("from", from)
        .with_attr("to", to);
    if let Some(k) = kind {
        b = b.with_attr("type", k);
    }
    b.build()
}

fn event_is_presence(req: &SipMessage) -> bool {
    req.header("Event")
        .and_then(|e| e.split(';').next())
        .is_some_and(|e| e.trim().eq_ignore_ascii_case("presence"))
}

/// Where in-dialog requests go: the peer's Contact when it is an address we accept requests
/// from, else `fallback`.
fn target_of(inner: &Inner, contact: Option<&str>, fallback: Dest) -> (Option<String>, Dest) {
    let Some(uri) = contact.map(addr_uri).filter(|u| !u.is_empty()) else {
        return (None, fallback);
    };
    let dest = SipUri::parse(uri)
        .ok()
        .and_then(|u| {
            let host = u.host().trim_start_matches('[').trim_end_matches(']');
            let ip: std::net::IpAddr = host.parse().ok()?;
            Some(SocketAddr::new(ip, u.port().unwrap_or(5060)))
        })
        .filter(|a| inner.is_allowed_ip(a.ip()))
        .map(|addr| Dest {
            addr,
            tcp: fallback.tcp || uri.to_ascii_lowercase().contains("transport=tcp"),
        })
        .unwrap_or(fallback);
    (Some(uri.to_owned()), dest)
}

/// A SUBSCRIBE from a SIP user agent. `None`: already answered.
pub(crate) async fn sip_subscribe(
    inner: &Inner,
    server: &Server,
    req: &SipMessage,
    origin: Origin,
) -> Option<SipMessage> {
    let tag = crate::random_token();
    let fail = |code: u16| Some(req.response(code, reason(code), Some(&tag)));
    if !event_is_presence(req) {
        let mut r = req.response(489, reason(489), Some(&tag));
        r.push("Allow-Events", "presence");
        return Some(r);
    }
    let from_value = req.header("From")?;
    let from_uri = addr_uri(from_value);
    let Ok(from_sip) = SipUri::parse(from_uri) else {
        return fail(400);
    };
    if !inner.trusted_source(origin, &from_sip) {
        tracing::info!(from = %from_uri, source = %origin.addr(), "SIP SUBSCRIBE from an address with no route: 403");
        return fail(403);
    }
    let (Some(call_id), Some((cseq, _))) = (req.call_id(), req.cseq()) else {
        return fail(400);
    };
    let subs = &inner.presence;
    let requested = req.expires().unwrap_or(subs.expires);
    let expires = requested.min(subs.expires);
    let transport = inner.transport()?.clone();
    let to_value = req.header("To").unwrap_or_default();
    if let Some(to_tag) = param(to_value, "tag") {
        // In the dialog: refresh or unsubscribe.
        let key = (call_id.to_owned(), to_tag.to_owned());
        let found = {
            let mut st = subs.state.lock();
            match st.watchers.get_mut(&key) {
                Some(w) => {
                    w.expires_at = Instant::now() + Duration::from_secs(u64::from(expires));
                    if expires == 0 {
                        w.state = WatchState::Ending;
                    }
                    Some((w.watcher_jid.clone(), w.user.clone()))
                }
                None => None,
            }
        };
        let Some((watcher_jid, user)) = found else {
            return fail(481);
        };
        let mut ok = req.response(200, "OK", None);
        ok.push("Expires", expires.to_string());
        ok.push("Contact", inner.contact(addr_uri(to_value)));
        transport.respond(req, origin, ok).await;
        if expires == 0 {
            // The roster has processed the unsubscribe when route() returns; the dialog is
            // Ending, so the `unavailable` it may send back changes nothing.
            server
                .route(presence(&watcher_jid, user.as_str(), Some("unsubscribe")))
                .await;
            send_notify(inner, &key, Some("timeout")).await;
            subs.state.lock().watchers.remove(&key);
        } else {
            send_notify(inner, &key, None).await;
        }
        return None;
    }
    let Some(user) = inner.local_jid_for(req.request_uri().unwrap_or_default()) else {
        return fail(404);
    };
    if !inner.account_exists(server, &user).await {
        return fail(404);
    }
    let Ok(watcher_jid) = inner.addressing.sip_to_jid(from_uri) else {
        return fail(400);
    };
    let Some(remote_tag) = param(from_value, "tag") else {
        return fail(400);
    };
    let (contact, dest) = target_of(
        inner,
        req.header("Contact"),
        Dest {
            addr: origin.addr(),
            tcp: matches!(origin, Origin::Tcp(_)),
        },
    );
    let local_uri = addr_uri(to_value).to_owned();
    let key = (call_id.to_owned(), tag.clone());
    if !subs.has_room(&subs.state.lock(), &user) {
        return fail(503);
    }
    {
        let mut st = subs.state.lock();
        st.watchers.insert(
            key.clone(),
            Watcher {
                user: user.clone(),
                watcher_jid: watcher_jid.clone(),
                local_uri: local_uri.clone(),
                remote_uri: from_uri.to_owned(),
                remote_tag: remote_tag.to_owned(),
                remote_target: contact.unwrap_or_else(|| from_uri.to_owned()),
                dest,
                cseq: cseq.max(1),
                expires_at: Instant::now() + Duration::from_secs(u64::from(expires)),
                state: WatchState::Pending,
                resources: BTreeMap::new(),
                send_lock: Arc::new(tokio::sync::Mutex::new(())),
                last_body: Vec::new(),
            },
        );
    }
    let mut ok = req.response(200, "OK", Some(&tag));
    ok.push("Expires", expires.to_string());
    ok.push("Contact", inner.contact(&local_uri));
    transport.respond(req, origin, ok).await;
    if expires == 0 {
        // A one-time fetch (RFC 6665 §4.4.3): no XMPP subscription to ask for.
        send_notify(inner, &key, Some("timeout")).await;
        subs.state.lock().watchers.remove(&key);
        return None;
    }
    send_notify(inner, &key, None).await;
    let id = format!("sip-{}", crate::random_token());
    let mut sub = presence(&watcher_jid, user.as_str(), Some("subscribe"));
    sub.put_attr("id", id);
    server.route(sub).await;
    None
}

/// Builds and sends one NOTIFY for a watcher dialog with its current state; `terminated`
/// gives the reason of a final one. Drops the dialog when the watcher rejects the NOTIFY.
async fn send_notify(inner: &Inner, key: &DialogKey, terminated: Option<&str>) {
    let Some(transport) = inner.transport().cloned() else {
        return;
    };
    let Some(lock) = inner
        .presence
        .state
        .lock()
        .watchers
        .get(key)
        .map(|w| w.send_lock.clone())
    else {
        return;
    };
    let _serial = lock.lock().await;
    let (req, dest) = {
        let mut st = inner.presence.state.lock();
        let Some(w) = st.watchers.get_mut(key) else {
            return;
        };
        let remaining = w
            .expires_at
            .saturating_duration_since(Instant::now())
            .as_secs();
        let sub_state = match (terminated, w.state) {
            (Some(r), _) => format!("terminated;reason={r}"),
            (None, WatchState::Pending) => format!("pending;expires={remaining}"),
            (None, WatchState::Active) => format!("active;expires={remaining}"),
            (None, WatchState::Ending) => "terminated;reason=timeout".to_owned(),
        };
        let body = if w.state == WatchState::Active && terminated.is_none() {
            // Compared without the timestamp, which changes every time.
            let key = pidf_for(w, None);
            if key == w.last_body {
                return; // nothing new for this watcher
            }
            w.last_body = key;
            pidf_for(w, Some(&now()))
        } else {
            Vec::new()
        };
        w.cseq += 1;
        let mut req = SipMessage::request("NOTIFY", &w.remote_target);
        req.push("From", format!("<{}>;tag={}", w.local_uri, key.1));
        req.push("To", format!("<{}>;tag={}", w.remote_uri, w.remote_tag));
        req.push("Call-ID", key.0.clone());
        req.push("CSeq", format!("{} NOTIFY", w.cseq));
        req.push("Contact", inner.contact(&w.local_uri));
        req.push("Event", "presence");
        req.push("Subscription-State", sub_state);
        if !body.is_empty() {
            req.push("Content-Type", "application/pidf+xml");
            req.body = body;
        }
        (req, w.dest)
    };
    match transport.request(req, dest).await {
        Ok(r) if r.status().is_some_and(|c| c < 300) => {}
        Ok(r) => {
            tracing::debug!(status = r.status(), "NOTIFY refused; watcher dialog ended");
            inner.presence.state.lock().watchers.remove(key);
        }
        Err(e) => {
            tracing::debug!(error = %e, "NOTIFY failed; watcher dialog ended");
            inner.presence.state.lock().watchers.remove(key);
        }
    }
}

/// The PIDF of a watcher's current view: one tuple per known resource, at least one.
fn pidf_for(w: &Watcher, timestamp: Option<&starling_cpim::DateTime>) -> Vec<u8> {
    let mut presences: Vec<Element> = w.resources.values().cloned().collect();
    if presences.is_empty() {
        presences.push(presence(
            w.user.as_str(),
            &w.watcher_jid,
            Some("unavailable"),
        ));
    }
    match starling_cpim::presence::xmpp_presences_to_pidf(&presences, timestamp) {
        Ok(doc) => doc.to_bytes(),
        Err(e) => {
            tracing::warn!(error = %e, "presence not mapped to PIDF");
            let closed = presence(w.user.as_str(), &w.watcher_jid, Some("unavailable"));
            starling_cpim::presence::xmpp_presence_to_pidf(&closed, timestamp)
                .map(|d| d.to_bytes())
                .unwrap_or_default()
        }
    }
}

/// Only presence content the PIDF carries is kept (no extensions, no `to`).
fn trimmed(p: &Element) -> Element {
    let mut out = Element::builder("presence", ns::CLIENT)
        .with_attr("from", p.attr("from").unwrap_or_default())
        .build();
    if let Some(t) = p.attr("type") {
        out.put_attr("type", t);
    }
    for c in p.children() {
        let zero_priority = c.name() == "priority" && c.text().trim().parse::<i8>() == Ok(0);
        if matches!(c.name(), "show" | "status" | "priority")
            && c.ns() == ns::CLIENT
            && !zero_priority
        {
            out.append_child(c.clone());
        }
    }
    out
}

/// A presence stanza from an XMPP user to a SIP user (`to` in the gateway domain).
pub(crate) async fn xmpp_presence(inner: &Inner, server: &Server, stanza: Element, to: Jid) {
    let Some(from) = stanza.attr("from").and_then(|f| Jid::parse(f).ok()) else {
        return;
    };
    let user = from.bare();
    let peer = to.bare();
    match stanza.attr("type") {
        None | Some("unavailable") => {
            let keys: Vec<DialogKey> = {
                let mut st = inner.presence.state.lock();
                st.watchers
                    .iter_mut()
                    .filter(|(_, w)| w.user == user && w.watcher_jid == peer.as_str())
                    .filter_map(|(k, w)| {
                        let full = from.as_str().to_owned();
                        if !w.resources.contains_key(&full) && w.resources.len() >= MAX_RESOURCES {
                            // Forget a closed tuple first; with none, ignore the newcomer.
                            let closed = w
                                .resources
                                .iter()
                                .find(|(_, p)| p.attr("type").is_some())
                                .map(|(k, _)| k.clone())?;
                            w.resources.remove(&closed);
                        }
                        w.resources.insert(full, trimmed(&stanza));
                        (w.state == WatchState::Active).then(|| k.clone())
                    })
                    .collect()
            };
            for key in keys {
                send_notify(inner, &key, None).await;
            }
        }
        Some("subscribed") => {
            let available: Vec<(String, i8)> = server.router().with_resources(&user, |l| {
                l.iter()
                    .filter(|r| r.available)
                    .map(|r| (r.jid.as_str().to_owned(), r.priority))
                    .collect()
            });
            let keys: Vec<DialogKey> = {
                let mut st = inner.presence.state.lock();
                st.watchers
                    .iter_mut()
                    .filter(|(_, w)| w.user == user && w.watcher_jid == peer.as_str())
                    .map(|(k, w)| {
                        if w.state == WatchState::Pending {
                            w.state = WatchState::Active;
                        }
                        for (full, priority) in available.iter().take(MAX_RESOURCES) {
                            w.resources.entry(full.clone()).or_insert_with(|| {
                                let mut p = presence(full, "", None);
                                p.remove_attr("to");
                                if *priority != 0 {
                                    p.append_child(
                                        Element::builder("priority", ns::CLIENT)
                                            .append(priority.to_string())
                                            .build(),
                                    );
                                }
                                p
                            });
                        }
                        k.clone()
                    })
                    .collect()
            };
            for key in keys {
                send_notify(inner, &key, None).await;
            }
        }
        Some("unsubscribed") => {
            let keys: Vec<DialogKey> = {
                let st = inner.presence.state.lock();
                st.watchers
                    .iter()
                    .filter(|(_, w)| w.user == user && w.watcher_jid == peer.as_str())
                    .map(|(k, _)| k.clone())
                    .collect()
            };
            for key in keys {
                send_notify(inner, &key, Some("rejected")).await;
                inner.presence.state.lock().watchers.remove(&key);
            }
        }
        Some("subscribe") => subscribe_out(inner, server, stanza, user, peer, false).await,
        Some("unsubscribe") => unsubscribe_out(inner, server, &user, &peer).await,
        Some("probe") => {
            let known: Option<Vec<Element>> = {
                let st = inner.presence.state.lock();
                st.outbound
                    .values()
                    .find(|o| o.user == user && o.peer_jid == peer.as_str())
                    .map(|o| o.last.values().cloned().collect())
            };
            match known {
                Some(list) if list.is_empty() => {
                    server
                        .route(presence(peer.as_str(), from.as_str(), Some("unavailable")))
                        .await
                }
                Some(list) => {
                    for mut p in list {
                        p.put_attr("to", from.as_str());
                        server.route(p).await;
                    }
                }
                None => subscribe_out(inner, server, stanza, user, peer, true).await,
            }
        }
        _ => {}
    }
}

fn outbound_key(st: &State, user: &Jid, peer: &Jid) -> Option<DialogKey> {
    st.outbound
        .iter()
        .find(|(_, o)| &o.user == user && o.peer_jid == peer.as_str())
        .map(|(k, _)| k.clone())
}

/// `subscribe` (or a probe with no dialog, `quiet`) from `user` to the SIP user `peer`.
async fn subscribe_out(
    inner: &Inner,
    server: &Server,
    stanza: Element,
    user: Jid,
    peer: Jid,
    quiet: bool,
) {
    let subs = &inner.presence;
    let existing = {
        let st = subs.state.lock();
        outbound_key(&st, &user, &peer).and_then(|k| st.outbound.get(&k).map(|o| o.state))
    };
    match existing {
        Some(OutState::Active) if !quiet => {
            server
                .route(presence(peer.as_str(), user.as_str(), Some("subscribed")))
                .await;
            return;
        }
        Some(OutState::Terminating) | None => {}
        Some(_) => {
            if !quiet {
                server.bounce(&stanza, Cond::Conflict).await;
            }
            return;
        }
    }
    let bounce = |cond| maybe_bounce(server, &stanza, cond, quiet);
    let Ok(peer_uri) = inner.addressing.jid_to_sip(peer.as_str()) else {
        return bounce(Cond::JidMalformed).await;
    };
    let Some(dest) = SipUri::parse(&peer_uri)
        .ok()
        .and_then(|u| inner.route_for(&u))
    else {
        return bounce(Cond::RemoteServerNotFound).await;
    };
    let Ok(local_uri) = jid_to_sip_uri(user.as_str()) else {
        return bounce(Cond::JidMalformed).await;
    };
    let key = (
        format!("{}@{}", crate::random_token(), inner.domain),
        crate::random_token(),
    );
    let room = {
        let mut st = subs.state.lock();
        if let Some(old) = outbound_key(&st, &user, &peer) {
            st.outbound.remove(&old);
        }
        subs.has_room(&st, &user)
    };
    if !room {
        return bounce(Cond::ResourceConstraint).await;
    }
    {
        let mut st = subs.state.lock();
        st.outbound.insert(
            key.clone(),
            Outbound {
                user: user.clone(),
                peer_jid: peer.as_str().to_owned(),
                peer_uri: peer_uri.clone(),
                local_uri,
                call_id: key.0.clone(),
                local_tag: key.1.clone(),
                remote_tag: None,
                remote_target: peer_uri,
                dest,
                cseq: 0,
                state: OutState::Sending,
                refresh_at: Instant::now() + Duration::from_secs(64),
                granted: subs.expires,
                told_subscribed: false,
                quiet,
                request: stanza.clone(),
                filter: TupleChangeFilter::new(),
                last: BTreeMap::new(),
            },
        );
    }
    let Some(server) = server.arc() else { return };
    let Some(inner) = inner.self_arc() else {
        return;
    };
    tokio::spawn(async move { send_subscribe(&inner, &server, &key, subs_expires(&inner)).await });
}

async fn maybe_bounce(server: &Server, stanza: &Element, cond: Cond, quiet: bool) {
    if !quiet {
        server.bounce(stanza, cond).await;
    }
}

fn subs_expires(inner: &Inner) -> u32 {
    inner.presence.expires
}

/// Sends SUBSCRIBE (initial, refresh, or `expires` 0) for an outbound dialog and applies the
/// response.
async fn send_subscribe(inner: &Inner, server: &Server, key: &DialogKey, expires: u32) {
    let Some(transport) = inner.transport().cloned() else {
        return;
    };
    let (req, dest) = {
        let mut st = inner.presence.state.lock();
        let Some(o) = st.outbound.get_mut(key) else {
            return;
        };
        o.cseq += 1;
        let mut req = SipMessage::request("SUBSCRIBE", &o.remote_target);
        req.push("From", format!("<{}>;tag={}", o.local_uri, o.local_tag));
        match &o.remote_tag {
            Some(t) => req.push("To", format!("<{}>;tag={t}", o.peer_uri)),
            None => req.push("To", format!("<{}>", o.peer_uri)),
        };
        req.push("Call-ID", o.call_id.clone());
        req.push("CSeq", format!("{} SUBSCRIBE", o.cseq));
        req.push("Contact", inner.contact(&o.local_uri));
        req.push("Event", "presence");
        req.push("Accept", "application/pidf+xml");
        req.push("Expires", expires.to_string());
        (req, o.dest)
    };
    let result = transport.request(req, dest).await;
    let failure = {
        let mut st = inner.presence.state.lock();
        let Some(o) = st.outbound.get_mut(key) else {
            return;
        };
        match &result {
            Ok(r) if r.status().is_some_and(|c| c < 300) => {
                if expires == 0 {
                    None
                } else {
                    if o.remote_tag.is_none() {
                        o.remote_tag = r
                            .header("To")
                            .and_then(|t| param(t, "tag"))
                            .map(str::to_owned);
                    }
                    let (contact, d) = target_of(inner, r.header("Contact"), o.dest);
                    if let Some(c) = contact {
                        o.remote_target = c;
                        o.dest = d;
                    }
                    let granted = r.expires().unwrap_or(expires).clamp(1, expires);
                    o.granted = granted;
                    o.refresh_at = Instant::now() + Duration::from_millis(u64::from(granted) * 750);
                    if o.state == OutState::Sending {
                        o.state = OutState::Pending;
                    }
                    None
                }
            }
            Ok(r) => Some(sip_to_condition(r.status().unwrap_or(500))),
            Err(TsxError::Timeout(_)) => Some(Cond::RemoteServerTimeout),
            Err(TsxError::Busy) => Some(Cond::ResourceConstraint),
            Err(_) => Some(Cond::RemoteServerNotFound),
        }
    };
    if let Some(cond) = failure {
        let removed = inner.presence.state.lock().outbound.remove(key);
        if let Some(o) = removed {
            tracing::debug!(peer = %o.peer_uri, ?cond, "SIP SUBSCRIBE failed");
            if o.state == OutState::Sending && !o.quiet {
                server.bounce(&o.request, cond).await;
            } else if o.told_subscribed {
                for full in o.last.keys() {
                    server
                        .route(presence(full, o.user.as_str(), Some("unavailable")))
                        .await;
                }
            }
        }
    }
}

/// `unsubscribe` from `user` to the SIP user `peer`.
async fn unsubscribe_out(inner: &Inner, server: &Server, user: &Jid, peer: &Jid) {
    let (key, known, has_dialog) = {
        let mut st = inner.presence.state.lock();
        let Some(key) = outbound_key(&st, user, peer) else {
            return;
        };
        let Some(o) = st.outbound.get_mut(&key) else {
            return;
        };
        let known: Vec<String> = o.last.keys().cloned().collect();
        o.last.clear();
        let has_dialog = o.remote_tag.is_some();
        o.state = OutState::Terminating;
        o.refresh_at = Instant::now() + Duration::from_secs(32);
        if !has_dialog {
            st.outbound.remove(&key);
        }
        (key, known, has_dialog)
    };
    for full in known {
        server
            .route(presence(&full, user.as_str(), Some("unavailable")))
            .await;
    }
    if has_dialog {
        send_subscribe(inner, server, &key, 0).await;
    }
}

/// A NOTIFY from a SIP user agent for one of our outbound subscriptions.
pub(crate) async fn sip_notify(
    inner: &Inner,
    server: &Server,
    req: &SipMessage,
) -> Option<SipMessage> {
    let (Some(call_id), Some(to_tag)) = (
        req.call_id(),
        req.header("To").and_then(|t| param(t, "tag")),
    ) else {
        return Some(req.response(481, reason(481), None));
    };
    if !event_is_presence(req) {
        return Some(req.response(489, reason(489), None));
    }
    let key = (call_id.to_owned(), to_tag.to_owned());
    let sub_state = req
        .header("Subscription-State")
        .unwrap_or("active")
        .to_owned();
    let state_name = sub_state
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let is_pidf = req
        .header("Content-Type")
        .and_then(|c| c.split(';').next())
        .is_some_and(|c| c.trim().eq_ignore_ascii_case("application/pidf+xml"));
    let doc = if is_pidf && !req.body.is_empty() {
        match PidfDocument::parse(&req.body) {
            Ok(d) => Some(d),
            Err(e) => {
                tracing::debug!(error = %e, "NOTIFY with an invalid PIDF: 400");
                return Some(req.response(400, reason(400), None));
            }
        }
    } else {
        None
    };
    let mut to_route: Vec<Element> = Vec::new();
    {
        let mut st = inner.presence.state.lock();
        let Some(o) = st.outbound.get_mut(&key) else {
            return Some(req.response(481, reason(481), None));
        };
        if o.remote_tag.is_none() {
            o.remote_tag = req
                .header("From")
                .and_then(|f| param(f, "tag"))
                .map(str::to_owned);
        }
        let user = o.user.as_str().to_owned();
        match state_name.as_str() {
            "active" if o.state != OutState::Terminating => {
                o.state = OutState::Active;
                if !o.told_subscribed {
                    o.told_subscribed = true;
                    to_route.push(presence(&o.peer_jid, &user, Some("subscribed")));
                }
            }
            "terminated" => {
                let why = param(&sub_state, "reason")
                    .unwrap_or("")
                    .to_ascii_lowercase();
                if o.state != OutState::Terminating
                    && matches!(why.as_str(), "rejected" | "noresource")
                {
                    to_route.push(presence(&o.peer_jid, &user, Some("unsubscribed")));
                }
                for full in o.last.keys() {
                    to_route.push(presence(full, &user, Some("unavailable")));
                }
                st.outbound.remove(&key);
            }
            _ => {}
        }
        if let (Some(doc), Some(o)) = (doc, st.outbound.get_mut(&key)) {
            if o.state == OutState::Active {
                let peer = o.peer_jid.clone();
                // The entity named in the document is ignored: presence comes from the peer
                // this dialog was opened with.
                match starling_cpim::presence::pidf_to_xmpp_presences_with(
                    &doc,
                    &user,
                    &InboundPresenceOptions::default(),
                    |_| Ok(peer.clone()),
                ) {
                    Ok(list) => {
                        for p in o.filter.filter(list) {
                            let from = p.attr("from").unwrap_or_default().to_owned();
                            if p.attr("type").is_none() {
                                if o.last.len() < MAX_RESOURCES || o.last.contains_key(&from) {
                                    o.last.insert(from, p.clone());
                                }
                            } else {
                                o.last.remove(&from);
                            }
                            to_route.push(p);
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "PIDF not mapped to presence"),
                }
            }
        }
    }
    for p in to_route {
        server.route(p).await;
    }
    Some(req.response(200, "OK", None))
}

/// Expires watcher dialogs and refreshes outbound ones, until shutdown.
pub(crate) fn start_refresher(inner: Arc<Inner>, server: Weak<Server>) {
    let Some(token) = server.upgrade().map(|s| s.shutdown_token().clone()) else {
        return;
    };
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(TICK);
        loop {
            tokio::select! {
                _ = token.cancelled() => return,
                _ = tick.tick() => {}
            }
            let Some(server) = server.upgrade() else {
                return;
            };
            let now = Instant::now();
            let (expired, refresh, dropped) = {
                let mut st = inner.presence.state.lock();
                let expired: Vec<DialogKey> = st
                    .watchers
                    .iter_mut()
                    .filter(|(_, w)| w.expires_at <= now)
                    .map(|(k, w)| {
                        // Not picked again while its final NOTIFY is on its way.
                        w.expires_at = now + Duration::from_secs(64);
                        k.clone()
                    })
                    .collect();
                let mut refresh = Vec::new();
                let mut dropped = Vec::new();
                for (k, o) in st.outbound.iter_mut() {
                    if o.refresh_at > now {
                        continue;
                    }
                    match o.state {
                        OutState::Pending | OutState::Active => {
                            // Not again until this refresh is answered (or times out).
                            o.refresh_at = now + Duration::from_secs(64);
                            refresh.push((k.clone(), o.granted));
                        }
                        OutState::Sending | OutState::Terminating => dropped.push(k.clone()),
                    }
                }
                for k in &dropped {
                    st.outbound.remove(k);
                }
                (expired, refresh, dropped)
            };
            let _ = dropped;
            for key in expired {
                let inner = inner.clone();
                tokio::spawn(async move {
                    send_notify(&inner, &key, Some("timeout")).await;
                    inner.presence.state.lock().watchers.remove(&key);
                });
            }
            for (key, granted) in refresh {
                let inner = inner.clone();
                let server = server.clone();
                let _ = granted;
                let expires = subs_expires(&inner);
                tokio::spawn(async move { send_subscribe(&inner, &server, &key, expires).await });
            }
        }
    });
}
