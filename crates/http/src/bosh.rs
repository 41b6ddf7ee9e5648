//! BOSH (XEP-0124) carrying XMPP (XEP-0206).
//!
//! A BOSH session is an ordinary c2s connection ([`starling_c2s::C2sEntry`]) behind a
//! [`Session`] keyed by an unguessable `sid` (128 random bits). Requests are processed strictly
//! in `rid` order whatever order they arrive in: a request ahead of a gap waits until the gap
//! is filled, inside the window of `requests` (= `hold` + 1) rids (§14.1); one beyond the
//! window, or a `sid` we do not know, ends with `item-not-found` (§17.2). Every response is
//! remembered by `rid` (the last `requests` of them), so a client whose HTTP connection broke
//! gets the same response again when it repeats the request (§14.3): churn loses or reorders
//! no stanza. More simultaneous requests than `requests` is overactivity and ends the session
//! with `policy-violation` (§12), as does polling faster than `polling` seconds with `hold=0`.
//!
//! Held requests (§11): at most `hold`; the oldest is answered as soon as there is data for the
//! client, a newer request pushes it out, or `wait` seconds pass. With no request outstanding
//! for `inactivity` seconds the session ends (§10). `xmpp:restart='true'` restarts the stream
//! (XEP-0206 §5); `type='terminate'` ends it after delivering its payload (§13).
//!
//! Session security (§15, §7.3): the sid is 128 random bits; a client that sends `newkey`
//! at creation must then prove each request with the next key of its SHA-1 key sequence
//! (`key` hashing to the previous key), repeats included, or the session ends with
//! `item-not-found`.
//!
//! The penalty box (`[limits]` `connections_per_ip_per_minute`, `auth_address_ban_after`,
//! `address_ban_secs`; see starling_c2s's throttle): each new session is one connection of
//! the requesting address (requests within a session are not), and failed logins on its
//! stream count toward the address's ban, as on TCP. An address in the penalty box gets the
//! terminal binding condition `policy-violation` (§17.2: the client broke the session rules)
//! in a `200` response, not an HTTP error: §17.1 keeps HTTP error codes for legacy clients
//! only, so that a client can tell the connection manager's refusal from an intermediary's.
//!
//! Limits: `http.bosh_max_sessions`, the body size (c2s `max_stanza_bytes` + 16 KiB), `wait`
//! capped at `http.bosh_max_wait_secs`, `hold` at `http.bosh_max_hold`, and both queues
//! between HTTP and the stream bounded in bytes.

use starling_proto::Attr;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use minidom::Element;
use parking_lot::Mutex;
use starling_c2s::{Carrier, ConnectionRefused};
use starling_core::Server;
use starling_proto::framer::{Limits, StreamEvent};
use starling_proto::{ns, writer};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::{oneshot, Notify};
use tokio::time::Instant;

use crate::framing::{self, client_header, element_text, escape_attr};
use crate::listener::{refuse, App, ConnInfo};

/// XEP-0124 namespace.
pub const NS_HTTPBIND: &str = "http://jabber.org/protocol/httpbind";
/// XEP-0206 namespace of `xmpp:version` and `xmpp:restart`.
pub const NS_XBOSH: &str = "urn:xmpp:xbosh";
/// Protocol version we speak.
const BOSH_VERSION: &str = "1.11";
/// Shortest interval between empty polls of a `hold=0` session, in seconds.
const POLLING_SECS: u64 = 2;
/// Most bytes of stanzas waiting to be written into one session's stream.
const MAX_INBOUND_QUEUE_FACTOR: usize = 4;

/// Every BOSH session of the server.
pub struct Sessions {
    map: Mutex<HashMap<String, Arc<Session>>>,
}

impl Sessions {
    /// The registry, and its sweeper that ends inactive sessions.
    pub(crate) fn start(server: Arc<Server>) -> Arc<Sessions> {
        let sessions = Arc::new(Sessions {
            map: Mutex::new(HashMap::new()),
        });
        let weak = Arc::downgrade(&sessions);
        let shutdown = server.shutdown_token().clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    // The c2s tasks end their streams with system-shutdown; nothing to sweep.
                    _ = shutdown.cancelled() => break,
                }
                let Some(sessions) = weak.upgrade() else {
                    break;
                };
                let all: Vec<Arc<Session>> = sessions.map.lock().values().cloned().collect();
                for s in all {
                    s.check_inactivity();
                }
                sessions.map.lock().retain(|_, s| !s.gone());
            }
        });
        sessions
    }

    /// Number of live sessions.
    pub fn len(&self) -> usize {
        self.map.lock().len()
    }

    /// Whether there is no live session.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// How a session ended, as a terminal binding condition (XEP-0124 §17.2).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ended {
    /// Ended normally (client terminate, or the stream closed without error).
    Normal,
    /// Ended with this condition.
    Condition(&'static str),
}

/// One request waiting for its response.
struct Held {
    rid: u64,
    /// The `key` the request carried (a repeat must carry the same).
    key: Option<String>,
    reply: oneshot::Sender<String>,
}

/// A request that arrived ahead of a gap in the rids.
struct Early {
    body: Element,
    reply: oneshot::Sender<String>,
}

/// Mutable state of one session.
struct SessionState {
    /// Highest rid processed (all below it too).
    last_rid: u64,
    /// Requests answered, by rid, for repeats (the last `requests` of them).
    answered: VecDeque<(u64, String, Option<String>)>,
    /// The current key of the client's key sequence (§15), when it uses one.
    key: Option<String>,
    /// Held requests, oldest (lowest rid) first.
    held: VecDeque<Held>,
    /// Requests waiting for a gap to be filled.
    early: BTreeMap<u64, Early>,
    /// Elements from the server waiting for a response, as text, and their total size.
    out: VecDeque<String>,
    out_bytes: usize,
    /// Bytes for the stream waiting to be written by the writer task, and their total size.
    inbound: VecDeque<Vec<u8>>,
    inbound_bytes: usize,
    /// The session attributes still have to be sent (first response).
    creation_pending: bool,
    /// Stream id from the server's header (`authid`).
    stream_id: Option<String>,
    /// Set once the session is over; remaining data goes out with a terminate body.
    ended: Option<Ended>,
    /// The terminate body was sent (or could not be), so the session can go.
    terminate_sent: bool,
    /// Since when no request has been outstanding.
    idle_since: Option<Instant>,
    /// When the last empty request arrived (polling check).
    last_empty: Option<Instant>,
}

impl SessionState {
    fn finished_and_drained(&self) -> bool {
        self.ended.is_some() && self.terminate_sent
    }
}

/// One BOSH session.
pub(crate) struct Session {
    sid: String,
    /// The domain the session is for.
    to: String,
    lang: Option<String>,
    wait: u64,
    hold: u32,
    requests: u32,
    inactivity: u64,
    max_out_bytes: usize,
    max_inbound_bytes: usize,
    state: Mutex<SessionState>,
    /// Wakes the writer task (inbound data) and the reader task (room in `out`).
    inbound_ready: Notify,
    out_room: Notify,
}

fn attr_u64(el: &Element, name: &str) -> Option<u64> {
    el.attribute(name).and_then(|v| v.trim().parse().ok())
}

fn xbosh_attr<'a>(el: &'a Element, name: &str) -> Option<&'a str> {
    el.attrs()
        .iter()
        .find(|((attr_ns, n), _)| attr_ns.as_str() == NS_XBOSH && n.as_str() == name)
        .map(|(_, v)| v.as_str())
}

fn xml_lang(el: &Element) -> Option<&str> {
    el.attrs()
        .iter()
        .find(|((attr_ns, n), _)| attr_ns.as_str() == ns::XML && n.as_str() == "lang")
        .map(|(_, v)| v.as_str())
}

/// Lower-case hex SHA-1 of a key (XEP-0124 §15).
fn sha1_hex(key: &str) -> String {
    use sha1::Digest;
    sha1::Sha1::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A terminate body without a session (unknown sid, bad request...).
fn terminate_body(condition: &str) -> String {
    format!("<body xmlns='{NS_HTTPBIND}' type='terminate' condition='{condition}'/>")
}

fn xml_response(body: String) -> Response {
    let mut r = body.into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/xml; charset=utf-8"),
    );
    r
}

/// Stanzas inside `<body/>` without their own namespace inherit the httpbind one; they are
/// client stanzas (XEP-0206 §6 asks for an explicit `jabber:client`, Prosody and ejabberd
/// accept both).
fn to_client_ns(el: Element) -> Element {
    starling_core::xml::rename_namespace(el, NS_HTTPBIND, ns::CLIENT)
}

/// `POST bosh_path`.
pub(crate) async fn handler(
    State(app): State<App>,
    Extension(info): Extension<ConnInfo>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let config = app.config();
    if !crate::cors::origin_allowed(&config.http, &headers) {
        return refuse(StatusCode::FORBIDDEN, "origin not allowed\n");
    }
    let mut response = handle(&app, info, &body).await;
    crate::cors::decorate(&headers, &mut response);
    response
}

async fn handle(app: &App, info: ConnInfo, text: &str) -> Response {
    let config = app.config();
    let limits = Limits {
        max_stanza_bytes: config.c2s.max_stanza_bytes + 16 * 1024,
        max_depth: config.c2s.max_depth + 1,
        max_attributes: config.c2s.max_attributes,
        max_buffered_bytes: config.c2s.max_stanza_bytes + 32 * 1024,
        // The <body/> wrapper plus what one stanza may hold (each stanza is checked again,
        // with the c2s limits, when it reaches the session).
        max_elements: config.c2s.max_elements + 1,
    };
    let body = match framing::parse_element(text, limits) {
        Ok(b) if b.is("body", NS_HTTPBIND) => b,
        _ => {
            // §17.1: a request we cannot parse is a bad request.
            return (
                StatusCode::BAD_REQUEST,
                xml_response(terminate_body("bad-request")),
            )
                .into_response();
        }
    };
    let Some(rid) = attr_u64(&body, "rid") else {
        return xml_response(terminate_body("bad-request"));
    };
    match body.attribute("sid") {
        None => create(app, info, body, rid).await,
        Some(sid) => {
            let session = app.bosh.map.lock().get(sid).cloned();
            match session {
                Some(s) => s.request(rid, body).await,
                None => xml_response(terminate_body("item-not-found")),
            }
        }
    }
}

/// Session creation (§7, XEP-0206 §4).
async fn create(app: &App, info: ConnInfo, body: Element, rid: u64) -> Response {
    let config = app.config();
    let http = &config.http;
    if !app.confidential(&info) {
        return refuse(
            StatusCode::FORBIDDEN,
            "client streams need HTTPS on this server\n",
        );
    }
    let Some(to) = body.attribute("to").map(str::to_owned) else {
        return xml_response(terminate_body("improper-addressing"));
    };
    if !config.is_local_host(&to) {
        return xml_response(terminate_body("host-unknown"));
    }
    if app.bosh.len() >= http.bosh_max_sessions {
        tracing::warn!(peer = %info.peer, "BOSH session limit reached; refusing a new session");
        return xml_response(terminate_body("remote-connection-failed"));
    }
    let wait = attr_u64(&body, "wait")
        .unwrap_or(http.bosh_max_wait_secs)
        .clamp(1, http.bosh_max_wait_secs);
    let hold = attr_u64(&body, "hold")
        .unwrap_or(1)
        .min(u64::from(http.bosh_max_hold)) as u32;
    let pipe = match app.entry.open(info.peer, Carrier::Bosh) {
        Ok(p) => p,
        Err(ConnectionRefused::Limit) => {
            return xml_response(terminate_body("remote-connection-failed"))
        }
        Err(ConnectionRefused::PenaltyBox { .. }) => {
            return xml_response(terminate_body("policy-violation"))
        }
    };
    let sid = {
        use rand::Rng;
        let bytes: [u8; 16] = rand::rng().random();
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    };
    let max_body = config.c2s.max_stanza_bytes + 16 * 1024;
    let session = Arc::new(Session {
        sid: sid.clone(),
        to: to.clone(),
        lang: xml_lang(&body).map(str::to_owned),
        wait,
        hold,
        requests: hold + 1,
        inactivity: http.bosh_inactivity_secs,
        max_out_bytes: max_body * 2,
        max_inbound_bytes: max_body * MAX_INBOUND_QUEUE_FACTOR,
        state: Mutex::new(SessionState {
            last_rid: rid,
            answered: VecDeque::new(),
            key: body.attribute("newkey").map(str::to_owned),
            held: VecDeque::new(),
            early: BTreeMap::new(),
            out: VecDeque::new(),
            out_bytes: 0,
            inbound: VecDeque::new(),
            inbound_bytes: 0,
            creation_pending: true,
            stream_id: None,
            ended: None,
            terminate_sent: false,
            idle_since: None,
            last_empty: None,
        }),
        inbound_ready: Notify::new(),
        out_room: Notify::new(),
    });
    app.bosh.map.lock().insert(sid.clone(), session.clone());
    tracing::info!(peer = %info.peer, %sid, wait, hold, "BOSH session created");
    let (rd, wr) = tokio::io::split(pipe);
    tokio::spawn(session.clone().writer(wr));
    tokio::spawn(session.clone().reader(rd, max_body * 2));
    let (tx, rx) = oneshot::channel();
    {
        let mut st = session.state.lock();
        let header = client_header(Some(&to), Some("1.0"), session.lang.as_deref());
        session.push_inbound(&mut st, header.into_bytes());
        st.held.push_back(Held {
            rid,
            key: None,
            reply: tx,
        });
    }
    session.wait_reply(rid, rx).await
}

impl Session {
    /// Queues bytes for the stream (caller holds the state lock).
    fn push_inbound(&self, st: &mut SessionState, bytes: Vec<u8>) {
        st.inbound_bytes += bytes.len();
        st.inbound.push_back(bytes);
        self.inbound_ready.notify_one();
    }

    /// Writes queued client bytes into the stream, in order.
    async fn writer(self: Arc<Self>, mut wr: tokio::io::WriteHalf<DuplexStream>) {
        loop {
            let next = {
                let mut st = self.state.lock();
                if st.ended.is_some() && st.inbound.is_empty() {
                    break;
                }
                st.inbound
                    .pop_front()
                    .inspect(|b| st.inbound_bytes -= b.len())
            };
            match next {
                Some(bytes) => {
                    if wr.write_all(&bytes).await.is_err() {
                        break;
                    }
                }
                None => {
                    let notified = self.inbound_ready.notified();
                    tokio::select! {
                        _ = notified => {}
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        }
        let _ = wr.shutdown().await;
    }

    /// Reads the server's stream into the outbound queue.
    async fn reader(self: Arc<Self>, mut rd: tokio::io::ReadHalf<DuplexStream>, max: usize) {
        let mut outbound = framing::Outbound::new(max);
        let mut buf = vec![0u8; 16 * 1024];
        let ended = 'outer: loop {
            // Back-pressure: wait for room before reading more.
            loop {
                let room = {
                    let st = self.state.lock();
                    if st.ended.is_some() {
                        break 'outer None;
                    }
                    st.out_bytes < self.max_out_bytes
                };
                if room {
                    break;
                }
                let notified = self.out_room.notified();
                tokio::select! {
                    _ = notified => {}
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
            let n = match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break Some(Ended::Condition("remote-connection-failed")),
                Ok(n) => n,
            };
            outbound.feed(&buf[..n]);
            loop {
                match outbound.next_event() {
                    Ok(None) => break,
                    Ok(Some(StreamEvent::Open(h))) => {
                        self.state.lock().stream_id = h.id;
                    }
                    Ok(Some(StreamEvent::Stanza(el))) => {
                        let error = el.is("error", ns::STREAM);
                        let text = element_text(&el);
                        let mut st = self.state.lock();
                        st.out_bytes += text.len();
                        st.out.push_back(text);
                        if error {
                            drop(st);
                            // The close follows; remember why.
                            self.end(Ended::Condition("remote-stream-error"));
                            break 'outer None;
                        }
                        self.pump(&mut st);
                    }
                    Ok(Some(StreamEvent::Close)) => break 'outer Some(Ended::Normal),
                    Err(e) => {
                        tracing::warn!(sid = %self.sid, error = ?e, "could not read the session's own stream");
                        break 'outer Some(Ended::Condition("internal-server-error"));
                    }
                }
            }
        };
        if let Some(why) = ended {
            self.end(why);
        }
    }

    /// Marks the session over and answers what is held.
    fn end(&self, why: Ended) {
        let mut st = self.state.lock();
        if st.ended.is_none() {
            tracing::info!(sid = %self.sid, reason = ?why, "BOSH session ended");
            st.ended = Some(why);
        }
        self.pump(&mut st);
        // Requests still waiting for a gap will never be processed.
        let condition = match st.ended {
            Some(Ended::Condition(c)) => c,
            _ => "item-not-found",
        };
        for (_, early) in std::mem::take(&mut st.early) {
            let _ = early.reply.send(terminate_body(condition));
        }
        if st.held.is_empty() && st.out.is_empty() {
            // Nobody to tell: a later request gets the terminate from the cache or item-not-found.
            st.terminate_sent = true;
        }
        drop(st);
        self.inbound_ready.notify_one();
        self.out_room.notify_one();
    }

    /// Builds the body of a response, taking queued elements (up to the size cap).
    fn build_body(&self, st: &mut SessionState) -> String {
        let mut attrs = String::new();
        if st.creation_pending {
            st.creation_pending = false;
            attrs.push_str(&format!(
                " sid='{}' wait='{}' requests='{}' hold='{}' inactivity='{}' polling='{}' \
                 ver='{BOSH_VERSION}' from='",
                self.sid, self.wait, self.requests, self.hold, self.inactivity, POLLING_SECS
            ));
            escape_attr(&self.to, &mut attrs);
            attrs.push('\'');
            if let Some(id) = &st.stream_id {
                attrs.push_str(" authid='");
                escape_attr(id, &mut attrs);
                attrs.push('\'');
            }
            attrs.push_str(&format!(
                " xmpp:version='1.0' xmlns:xmpp='{NS_XBOSH}' xmlns:stream='{}'",
                ns::STREAM
            ));
        }
        let mut content = String::new();
        let mut taken = 0;
        while let Some(front) = st.out.front() {
            if taken > 0 && content.len() + front.len() > self.max_out_bytes / 2 {
                break;
            }
            let text = st.out.pop_front().expect("front exists");
            st.out_bytes -= text.len();
            content.push_str(&text);
            taken += 1;
        }
        if taken > 0 {
            self.out_room.notify_one();
        }
        let last = st.out.is_empty();
        if let (Some(why), true) = (&st.ended, last) {
            let condition = match why {
                Ended::Condition(c) => format!(" condition='{c}'"),
                Ended::Normal => String::new(),
            };
            st.terminate_sent = true;
            attrs.push_str(" type='terminate'");
            attrs.push_str(&condition);
        }
        if content.is_empty() {
            format!("<body xmlns='{NS_HTTPBIND}'{attrs}/>")
        } else {
            format!("<body xmlns='{NS_HTTPBIND}'{attrs}>{content}</body>")
        }
    }

    /// Answers held requests that can be answered now (caller holds the lock).
    fn pump(&self, st: &mut SessionState) {
        loop {
            let has_data = !st.out.is_empty() || st.ended.is_some();
            let too_many = st.held.len() > self.hold as usize;
            if st.held.is_empty() || !(has_data || too_many) {
                break;
            }
            let held = st.held.pop_front().expect("not empty");
            let body = self.build_body(st);
            self.answer(st, held, body);
        }
        if st.held.is_empty() && st.early.is_empty() && st.idle_since.is_none() {
            st.idle_since = Some(Instant::now());
        }
    }

    fn answer(&self, st: &mut SessionState, held: Held, body: String) {
        st.answered.push_back((held.rid, body.clone(), held.key));
        while st.answered.len() > self.requests as usize {
            st.answered.pop_front();
        }
        // A waiter that went away (broken connection) gets it from the cache on a repeat.
        let _ = held.reply.send(body);
    }

    /// Whether the session can be forgotten: ended, and either the client was told or it
    /// has not come back for `inactivity` seconds.
    fn gone(&self) -> bool {
        let st = self.state.lock();
        st.finished_and_drained()
            || (st.ended.is_some()
                && st.held.is_empty()
                && st
                    .idle_since
                    .is_some_and(|t| t.elapsed() > Duration::from_secs(self.inactivity)))
    }

    fn check_inactivity(&self) {
        let st = self.state.lock();
        let inactive = st.ended.is_none()
            && st
                .idle_since
                .is_some_and(|t| t.elapsed() > Duration::from_secs(self.inactivity));
        drop(st);
        if inactive {
            tracing::info!(sid = %self.sid, "BOSH session inactive; ending it");
            self.end(Ended::Normal);
        }
    }

    /// A request for an existing session.
    async fn request(self: Arc<Self>, rid: u64, body: Element) -> Response {
        let (tx, rx) = oneshot::channel();
        match self.admit(rid, body, tx) {
            Some(answer) => xml_response(answer),
            None => self.wait_reply(rid, rx).await,
        }
    }

    /// Sequences a request: `Some(answer)` to answer at once, `None` when its answer comes
    /// through `tx`.
    fn admit(&self, rid: u64, body: Element, tx: oneshot::Sender<String>) -> Option<String> {
        let mut st = self.state.lock();
        if rid <= st.last_rid {
            // A repeat (§14.3): the same answer again, or take over a held request whose
            // HTTP connection was lost.
            let key = body.attribute("key");
            if let Some((_, answer, k)) = st.answered.iter().find(|(r, _, _)| *r == rid) {
                if k.as_deref() == key {
                    return Some(answer.clone());
                }
            } else if let Some(h) = st.held.iter_mut().find(|h| h.rid == rid) {
                if h.key.as_deref() == key {
                    h.reply = tx;
                    return None;
                }
            }
            drop(st);
            tracing::info!(sid = %self.sid, rid, "BOSH request repeats an rid no longer known");
            self.end(Ended::Condition("item-not-found"));
            return Some(terminate_body("item-not-found"));
        }
        if st.ended.is_some() && st.out.is_empty() {
            st.terminate_sent = true;
            return Some(terminate_body("item-not-found"));
        }
        if rid > st.last_rid + u64::from(self.requests) {
            drop(st);
            tracing::info!(sid = %self.sid, rid, "BOSH request outside the rid window");
            self.end(Ended::Condition("item-not-found"));
            return Some(terminate_body("item-not-found"));
        }
        if let Some(e) = st.early.get_mut(&rid) {
            e.reply = tx;
            return None;
        }
        if st.held.len() + st.early.len() >= self.requests as usize {
            drop(st);
            tracing::info!(sid = %self.sid, rid, "BOSH client sent too many simultaneous requests");
            self.end(Ended::Condition("policy-violation"));
            return Some(terminate_body("policy-violation"));
        }
        st.idle_since = None;
        st.early.insert(rid, Early { body, reply: tx });
        // Process every request that is now in sequence.
        loop {
            let want = st.last_rid + 1;
            let Some(next) = st.early.remove(&want) else {
                break;
            };
            st.last_rid = want;
            let key = next.body.attribute("key").map(str::to_owned);
            if let Err(condition) = self.process(&mut st, want, next.body) {
                drop(st);
                let _ = next.reply.send(terminate_body(condition));
                self.end(Ended::Condition(condition));
                return None;
            }
            st.held.push_back(Held {
                rid: want,
                key,
                reply: next.reply,
            });
        }
        self.pump(&mut st);
        None
    }

    /// Applies one in-sequence request's content (caller holds the lock).
    fn process(&self, st: &mut SessionState, rid: u64, body: Element) -> Result<(), &'static str> {
        if let Some(current) = &st.key {
            let proven = body
                .attribute("key")
                .is_some_and(|k| sha1_hex(k) == *current);
            if !proven {
                tracing::info!(sid = %self.sid, rid, "BOSH request without the right key");
                return Err("item-not-found");
            }
            st.key = body
                .attribute("newkey")
                .or(body.attribute("key"))
                .map(str::to_owned);
        }
        let empty = body.children().next().is_none();
        let terminate = body.attribute("type") == Some("terminate");
        if empty && !terminate && self.hold == 0 && xbosh_attr(&body, "restart").is_none() {
            let now = Instant::now();
            if st
                .last_empty
                .is_some_and(|t| now.duration_since(t) < Duration::from_secs(POLLING_SECS))
            {
                tracing::info!(sid = %self.sid, rid, "BOSH client polls too often");
                return Err("policy-violation");
            }
            st.last_empty = Some(now);
        }
        if xbosh_attr(&body, "restart") == Some("true") {
            let header = client_header(Some(&self.to), Some("1.0"), self.lang.as_deref());
            self.push_inbound(st, header.into_bytes());
        }
        let mut bytes = Vec::new();
        for child in body.children() {
            writer::write_element(&to_client_ns(child.clone()), &mut bytes);
        }
        if terminate {
            bytes.extend_from_slice(writer::STREAM_CLOSE.as_bytes());
        }
        if !bytes.is_empty() {
            if st.inbound_bytes + bytes.len() > self.max_inbound_bytes {
                tracing::info!(sid = %self.sid, rid, "BOSH client sends faster than its stream reads");
                return Err("policy-violation");
            }
            self.push_inbound(st, bytes);
        }
        if terminate && st.ended.is_none() {
            st.ended = Some(Ended::Normal);
        }
        Ok(())
    }

    /// Waits for the answer to `rid`, at most `wait` seconds.
    async fn wait_reply(&self, rid: u64, mut rx: oneshot::Receiver<String>) -> Response {
        let deadline = tokio::time::sleep(Duration::from_secs(self.wait));
        tokio::select! {
            r = &mut rx => match r {
                Ok(body) => return xml_response(body),
                // Replaced by a repeat of the same rid, which gets the real answer; this
                // connection is being abandoned by the client.
                Err(_) => return xml_response(format!("<body xmlns='{NS_HTTPBIND}'/>")),
            },
            _ = deadline => {}
        }
        // Timed out: answer with an empty body if still held, else take the answer given
        // meanwhile.
        let mut st = self.state.lock();
        if let Some(pos) = st.held.iter().position(|h| h.rid == rid) {
            let held = st.held.remove(pos).expect("position is valid");
            let body = self.build_body(&mut st);
            self.answer(&mut st, held, body);
            if st.held.is_empty() && st.early.is_empty() {
                st.idle_since = Some(Instant::now());
            }
        }
        drop(st);
        match rx.try_recv() {
            Ok(body) => xml_response(body),
            Err(_) => xml_response(String::from(
                "<body xmlns='http://jabber.org/protocol/httpbind'/>",
            )),
        }
    }
}
