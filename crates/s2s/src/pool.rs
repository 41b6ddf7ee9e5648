//! Outbound routing (RFC 6120 §10.4): a link per (local domain, remote domain) pair, opened on
//! demand and re-used. Stanzas wait in a bounded queue while a stream is being set up; when
//! setup fails they bounce with `remote-server-not-found` (or `remote-server-timeout` when it
//! took longer than `connect_timeout_secs`). A stream idle for `idle_timeout_secs` is closed
//! and re-opened when needed. Queued stanzas stay in `jabber:client` (so that a bounce can be
//! delivered locally) and are moved to `jabber:server` as they are written.
//!
//! Several pairs may share one connection:
//! - **Piggybacking** (XEP-0220 §4.4): when another local domain (a virtual host, a MUC or
//!   upload domain) sends to a remote domain we already have an authenticated outbound stream
//!   to, and the peer offered dialback there, the new pair joins that stream: its stanzas go
//!   into the same queue, and the stream task authenticates the new domain with an extra
//!   `db:result` before writing them (a peer whose certificate check covers the domain may
//!   answer at once, XEP-0344). If the peer refuses, they bounce.
//! - **Bidirectional streams** (XEP-0288): an outbound stream on which we asked for bidi also
//!   carries the peer's stanzas to us (checked like inbound ones: from the peer's domain, to
//!   a local domain authenticated on the stream); and an inbound bidi stream is registered
//!   here ([`Pool::register_inbound`]) for the reverse pairs, so replies leave on the
//!   connection the peer opened instead of a second one.

use starling_proto::Attr;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use minidom::Element;
use parking_lot::Mutex;
use starling_core::{RemoteRoute, Server};
use starling_proto::error::{
    StanzaErrorCondition as Cond, StreamError, StreamErrorCondition as SE,
};
use starling_proto::framer::StreamEvent;
use starling_proto::jid::Jid;
use starling_proto::{ns, writer};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::connector::{self, ConnectError, Connected};
use crate::dialback::{self, NS_DB};
use crate::throttle::Throttle;
use crate::Ctx;
use starling_core::xml::rename_namespace;

/// (local domain, remote domain).
type Key = (String, String);

/// Where stanzas for one or more pairs go: the queue of a stream task (outbound) or of an
/// inbound bidirectional session.
#[derive(Clone)]
pub(crate) struct Link {
    /// Which connection this is (several keys may share it).
    id: u64,
    pub(crate) tx: mpsc::Sender<Element>,
    /// Set once the stream is authenticated and the peer accepts further domains on it by
    /// dialback: other local domains may then piggyback.
    multiplex: Arc<AtomicBool>,
}

impl Link {
    fn new(tx: mpsc::Sender<Element>) -> Link {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Link {
            id: NEXT.fetch_add(1, Ordering::Relaxed),
            tx,
            multiplex: Arc::new(AtomicBool::new(false)),
        }
    }

    fn usable(&self) -> bool {
        !self.tx.is_closed()
    }
}

/// The links to remote servers, per domain pair.
pub struct Pool {
    /// This pool, for the stream tasks it spawns.
    this: std::sync::Weak<Pool>,
    ctx: Arc<Ctx>,
    links: Mutex<HashMap<Key, Link>>,
}

impl Pool {
    pub(crate) fn new(ctx: Arc<Ctx>) -> Arc<Pool> {
        Arc::new_cyclic(|this| Pool {
            this: this.clone(),
            ctx,
            links: Mutex::new(HashMap::new()),
        })
    }

    /// How many domain pairs have a link (connected or being set up).
    pub fn stream_count(&self) -> usize {
        self.links.lock().len()
    }

    /// How many distinct connections those pairs use.
    pub fn connection_count(&self) -> usize {
        let ids: HashSet<u64> = self.links.lock().values().map(|l| l.id).collect();
        ids.len()
    }

    /// Whether `(local, remote)` has a usable link of any kind (tests and diagnostics).
    pub fn has_link(&self, local: &str, remote: &str) -> bool {
        self.links
            .lock()
            .get(&(local.to_owned(), remote.to_owned()))
            .is_some_and(Link::usable)
    }

    /// Forgets every key that still points at connection `id`.
    fn forget(&self, id: u64) {
        self.links.lock().retain(|_, l| l.id != id);
    }

    /// Forgets `key` if it still points at connection `id`.
    fn forget_key(&self, key: &Key, id: u64) {
        let mut links = self.links.lock();
        if links.get(key).is_some_and(|l| l.id == id) {
            links.remove(key);
        }
    }

    /// An inbound bidirectional stream authenticated `remote` towards `local`: stanzas from
    /// `local` to `remote` may leave on it. Does nothing when a usable link exists already
    /// (both servers may have connected at once). `id` is the stream's connection id (set
    /// on first registration), for [`Pool::unregister`].
    pub(crate) fn register_inbound(
        &self,
        local: &str,
        remote: &str,
        tx: &mpsc::Sender<Element>,
        id: &mut Option<u64>,
    ) {
        let mut links = self.links.lock();
        let key = (local.to_owned(), remote.to_owned());
        if links.get(&key).is_some_and(Link::usable) {
            return;
        }
        let link = match id {
            Some(id) => Link {
                id: *id,
                tx: tx.clone(),
                multiplex: Arc::new(AtomicBool::new(false)),
            },
            None => {
                let l = Link::new(tx.clone());
                *id = Some(l.id);
                l
            }
        };
        tracing::debug!(%local, %remote, "replies leave on the inbound bidirectional stream");
        links.insert(key, link);
    }

    /// The inbound bidirectional stream `id` ended.
    pub(crate) fn unregister(&self, id: u64) {
        self.forget(id);
    }

    /// The link for `key`: the existing one, one to piggyback on, or a new stream.
    fn link_for(&self, server: &Server, key: &Key) -> Option<Link> {
        let mut links = self.links.lock();
        if let Some(l) = links.get(key).filter(|l| l.usable()) {
            return Some(l.clone());
        }
        let shared = links
            .iter()
            .find(|((_, remote), l)| {
                remote == &key.1 && l.usable() && l.multiplex.load(Ordering::Acquire)
            })
            .map(|(_, l)| l.clone());
        if let Some(l) = shared {
            tracing::info!(local = %key.0, remote = %key.1, "piggybacking on an authenticated s2s stream");
            links.insert(key.clone(), l.clone());
            return Some(l);
        }
        let server = server.arc()?;
        let pool = self.this.upgrade()?;
        let (tx, rx) = mpsc::channel(self.ctx.config.queue_size);
        let link = Link::new(tx);
        links.insert(key.clone(), link.clone());
        tokio::spawn(run_stream(
            self.ctx.clone(),
            pool,
            server,
            key.clone(),
            link.clone(),
            rx,
        ));
        Some(link)
    }
}

#[async_trait]
impl RemoteRoute for Pool {
    async fn send(&self, server: &Server, stanza: Element, to: Jid) {
        let Some(from) = stanza.jid_attribute("from") else {
            tracing::warn!("stanza for a remote domain without 'from'; dropped");
            return;
        };
        if !(server.config().is_local_host(from.domain()) || server.is_served_domain(from.domain()))
        {
            // Only stanzas from our own domains (hosts, and domains served by a module such
            // as chat rooms) leave through our streams.
            server.bounce(&stanza, Cond::NotAllowed).await;
            return;
        }
        let key = (from.domain().to_owned(), to.domain().to_owned());
        let mut stanza = stanza;
        for _ in 0..2 {
            let Some(link) = self.link_for(server, &key) else {
                return;
            };
            match link.tx.try_send(stanza) {
                Ok(()) => return,
                Err(mpsc::error::TrySendError::Full(s)) => {
                    tracing::warn!(local = %key.0, remote = %key.1, limit = self.ctx.config.queue_size, "s2s queue full; bouncing");
                    server.bounce(&s, Cond::ResourceConstraint).await;
                    return;
                }
                Err(mpsc::error::TrySendError::Closed(s)) => {
                    self.forget_key(&key, link.id);
                    stanza = s;
                }
            }
        }
        server.bounce(&stanza, Cond::RemoteServerNotFound).await;
    }
}

/// Stanzas from a local domain whose `db:result` is still unanswered on a shared stream.
struct Pending {
    deadline: Instant,
    stanzas: Vec<Element>,
}

/// The state of one connected outbound stream.
struct Outbound {
    ctx: Arc<Ctx>,
    server: Arc<Server>,
    pool: Arc<Pool>,
    link: Link,
    remote: String,
    stream: connector::Stream,
    stream_id: String,
    bidi: bool,
    /// Local domains authenticated on this stream.
    authed: HashSet<String>,
    /// Local domains being authenticated by piggybacked dialback.
    pending: HashMap<String, Pending>,
    /// `stanzas_per_second` for what the peer sends on a bidirectional stream.
    throttle: Throttle,
}

impl Outbound {
    /// Queues one stanza for writing, or holds it until its domain is authenticated.
    async fn take(&mut self, stanza: Element) {
        let Some(local) = stanza.jid_attribute("from").map(|j| j.domain().to_owned()) else {
            return;
        };
        if self.authed.contains(&local) {
            self.stream
                .queue(&rename_namespace(stanza, ns::CLIENT, ns::SERVER));
            return;
        }
        if let Some(p) = self.pending.get_mut(&local) {
            if p.stanzas.len() >= self.ctx.config.queue_size {
                self.server.bounce(&stanza, Cond::ResourceConstraint).await;
            } else {
                p.stanzas.push(stanza);
            }
            return;
        }
        // XEP-0220 §4.4: authenticate one more domain on this stream.
        let key = dialback::key(&self.ctx.secret, &self.remote, &local, &self.stream_id);
        self.stream.queue_raw(&dialback::to_wire(&dialback::result(
            &local,
            &self.remote,
            Some(&key),
            None,
        )));
        tracing::info!(%local, remote = %self.remote, "authenticating another local domain on the s2s stream (dialback)");
        self.pending.insert(
            local,
            Pending {
                deadline: Instant::now()
                    + Duration::from_secs(self.ctx.config.connect_timeout_secs),
                stanzas: vec![stanza],
            },
        );
    }

    /// The peer answered a piggybacked `db:result`.
    async fn dialback_answer(&mut self, el: &Element) {
        let (Some(local), Some(remote)) = (el.attribute("to"), el.attribute("from")) else {
            return;
        };
        if remote != self.remote {
            return;
        }
        let Some(p) = self.pending.remove(local) else {
            return;
        };
        if el.attribute("type") == Some("valid") {
            tracing::info!(%local, %remote, "local domain authenticated on the shared s2s stream");
            self.authed.insert(local.to_owned());
            for s in p.stanzas {
                self.stream
                    .queue(&rename_namespace(s, ns::CLIENT, ns::SERVER));
            }
        } else {
            tracing::warn!(%local, %remote, answer = ?el.attribute("type"), "peer refused another local domain on the s2s stream; bouncing");
            self.pool
                .forget_key(&(local.to_owned(), remote.to_owned()), self.link.id);
            for s in p.stanzas {
                self.server.bounce(&s, Cond::RemoteServerNotFound).await;
            }
        }
    }

    /// Bounces stanzas whose domain was not authenticated in time.
    async fn expire_pending(&mut self) {
        let now = Instant::now();
        let expired: Vec<String> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(d, _)| d.clone())
            .collect();
        for local in expired {
            if let Some(p) = self.pending.remove(&local) {
                tracing::warn!(%local, remote = %self.remote, "no dialback answer for a piggybacked domain; bouncing");
                self.pool
                    .forget_key(&(local.clone(), self.remote.clone()), self.link.id);
                for s in p.stanzas {
                    self.server.bounce(&s, Cond::RemoteServerTimeout).await;
                }
            }
        }
    }

    /// A stanza the peer sent on our stream (bidirectional streams only): the same checks as
    /// on inbound streams. `Err` ends the stream.
    async fn incoming(&mut self, el: Element) -> Result<(), StreamError> {
        if !self.bidi {
            return Err(StreamError::with_text(
                SE::UnsupportedStanzaType,
                "this stream is not bidirectional",
            ));
        }
        let jid = |a: &str| el.jid_attribute(a);
        let (Some(from), Some(to)) = (jid("from"), jid("to")) else {
            return Err(StreamError::with_text(
                SE::ImproperAddressing,
                "stanzas need valid 'from' and 'to'",
            ));
        };
        if from.domain() != self.remote {
            tracing::warn!(remote = %self.remote, from = %from, "s2s peer sent a stanza from another domain on a bidirectional stream");
            return Err(StreamError::with_text(
                SE::InvalidFrom,
                "'from' is not your domain",
            ));
        }
        if !self.authed.contains(to.domain()) {
            return Err(StreamError::with_text(
                SE::HostUnknown,
                "'to' is not a domain this stream is for",
            ));
        }
        if let Some(wait) = self.throttle.take().await {
            tracing::debug!(remote = %self.remote, ?wait, "s2s peer over its stanza rate; slowing down");
        }
        self.server
            .route(rename_namespace(el, ns::SERVER, ns::CLIENT))
            .await;
        Ok(())
    }
}

/// One outbound stream's life: connect, drain the queue, close when idle.
async fn run_stream(
    ctx: Arc<Ctx>,
    pool: Arc<Pool>,
    server: Arc<Server>,
    key: Key,
    link: Link,
    mut rx: mpsc::Receiver<Element>,
) {
    let (local, remote) = (key.0.clone(), key.1.clone());
    let timeout = Duration::from_secs(ctx.config.connect_timeout_secs);
    let shutdown = server.shutdown_token().clone();
    let connected = tokio::select! {
        r = tokio::time::timeout(timeout, connector::connect(&ctx, &local, &remote)) => {
            r.unwrap_or(Err(ConnectError::Timeout))
        }
        _ = shutdown.cancelled() => Err(ConnectError::NotFound("shutting down".into())),
    };
    let Connected {
        stream,
        stream_id,
        dialback,
        bidi,
    } = match connected {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(%local, %remote, error = %e, "cannot reach remote server; bouncing queued stanzas");
            let condition = match e {
                ConnectError::Timeout => Cond::RemoteServerTimeout,
                _ => Cond::RemoteServerNotFound,
            };
            pool.forget(link.id);
            rx.close();
            while let Some(stanza) = rx.recv().await {
                server.bounce(&stanza, condition.clone()).await;
            }
            return;
        }
    };
    link.multiplex.store(dialback, Ordering::Release);
    let mut out = Outbound {
        ctx: ctx.clone(),
        server: server.clone(),
        pool: pool.clone(),
        link: link.clone(),
        remote: remote.clone(),
        stream,
        stream_id,
        bidi,
        authed: HashSet::from([local.clone()]),
        pending: HashMap::new(),
        throttle: Throttle::new(ctx.config.stanzas_per_second),
    };
    let idle = Duration::from_secs(ctx.config.idle_timeout_secs);
    let far = Duration::from_secs(86_400);
    let error = loop {
        let next_deadline = out
            .pending
            .values()
            .map(|p| p.deadline)
            .min()
            .unwrap_or_else(|| Instant::now() + far);
        tokio::select! {
            next = rx.recv() => {
                let Some(stanza) = next else { break None };
                out.take(stanza).await;
                // Write everything already waiting in one flush.
                while let Ok(more) = rx.try_recv() {
                    out.take(more).await;
                }
                if let Err(e) = out.stream.flush().await {
                    tracing::info!(%local, %remote, error = %e, "outbound s2s stream failed");
                    break None;
                }
            }
            ev = out.stream.next_event() => match ev {
                Ok(StreamEvent::Stanza(el)) if el.is("error", ns::STREAM) => {
                    tracing::info!(%local, %remote, error = ?el, "outbound s2s stream closed with an error");
                    break None;
                }
                Ok(StreamEvent::Stanza(el)) if el.is("result", NS_DB) => {
                    out.dialback_answer(&el).await;
                    if let Err(e) = out.stream.flush().await {
                        tracing::info!(%local, %remote, error = %e, "outbound s2s stream failed");
                        break None;
                    }
                }
                Ok(StreamEvent::Stanza(el)) if el.ns() == ns::SERVER
                    && matches!(el.name(), "message" | "presence" | "iq") =>
                {
                    if let Err(e) = out.incoming(el).await {
                        break Some(e);
                    }
                }
                Ok(StreamEvent::Stanza(el)) => {
                    tracing::debug!(%local, %remote, element = el.name(), "ignoring an element on an outbound s2s stream");
                }
                Ok(_) | Err(_) => {
                    tracing::info!(%local, %remote, "outbound s2s stream closed by peer");
                    break None;
                }
            },
            _ = tokio::time::sleep_until(next_deadline) => out.expire_pending().await,
            _ = tokio::time::sleep(idle) => {
                tracing::info!(%local, %remote, "closing idle outbound s2s stream");
                break None;
            }
            _ = shutdown.cancelled() => break None,
        }
    };
    pool.forget(link.id);
    drop(link);
    rx.close();
    if let Some(e) = error {
        tracing::warn!(%local, %remote, condition = e.condition.name(), "closing outbound s2s stream with an error");
        let mut xml = Vec::new();
        writer::write_element(&e.to_element(), &mut xml);
        out.stream.queue_raw(&String::from_utf8_lossy(&xml));
    }
    out.stream.queue_raw(writer::STREAM_CLOSE);
    let _ = tokio::time::timeout(Duration::from_secs(2), out.stream.shutdown()).await;
    let Outbound {
        pending, server, ..
    } = out;
    // Stanzas that waited for a domain's authentication, and those that arrived while
    // closing, get a new stream (or bounce when shutting down).
    let waiting = pending.into_values().flat_map(|p| p.stanzas);
    let mut rest = Vec::new();
    while let Some(stanza) = rx.recv().await {
        rest.push(stanza);
    }
    for stanza in waiting.chain(rest) {
        if shutdown.is_cancelled() {
            server.bounce(&stanza, Cond::RemoteServerNotFound).await;
        } else {
            server.route(stanza).await;
        }
    }
}
