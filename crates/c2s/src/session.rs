//! The bound client session (RFC 6120 §8, §10): one task owning its socket.
//!
//! Inbound: every stanza gets its `from` stamped with the session's full JID (a `from` that
//! names anyone else closes the stream with `invalid-from`), `to` is validated (a malformed
//! one gets `jid-malformed`), IQs are checked (id, exactly one payload for get/set), and the
//! stanza goes to the router. The client state nonzas of XEP-0352 (`<active/>`,
//! `<inactive/>`) are recorded through [`Server::client_state`]. Outbound: the session's
//! bounded queue is drained in batches into one write. The loop also watches the idle
//! timeout, a close request (conflict, slow consumer) and server shutdown (`system-shutdown`).
//!
//! Stream management (XEP-0198, state in [`crate::smacks`]): `<enable/>`, `<r/>` and `<a/>`
//! are answered here; every stanza written is kept until the client acknowledges it, and an
//! `<r/>` follows a write whenever none is outstanding. When the connection of a resumable
//! session breaks, the task *hibernates*: it stays bound (routing and presence unchanged, no
//! unavailable broadcast), its queue fills, and it waits up to the resumption timeout for a
//! new connection's `<resume/>` ([`crate::negotiate`] hands the new stream over). When the
//! session ends without resumption — timeout, clean close, stream error — what the client
//! never acknowledged is re-routed as if sent to an unavailable resource: another resource,
//! offline storage, or an error to the sender. Never silently dropped.

use starling_proto::Attr;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use minidom::Element;
use starling_core::module::SessionEvent;
use starling_core::session::{CloseSignal, SessionInbox};
use starling_core::xml::{BuilderExt, ElementExt};
use starling_core::{Server, SessionHandle};
use starling_proto::error::{
    error_reply, StanzaError, StanzaErrorCondition as Cond, StreamError, StreamErrorCondition as SE,
};
use starling_proto::framer::StreamEvent;
use starling_proto::jid::Jid;
use starling_proto::{ns, writer};
use starling_stream::{ReadError, XmlStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::listener::ConnectionSlot;
use crate::negotiate::{stream_error_xml, Bound};
use crate::smacks::{failed_xml, Registry, ResumeRequest, SmState, TooHigh, NS_SM};
use crate::transport::Transport;

/// Outbound stanzas written per batch before flushing.
const WRITE_BATCH: usize = 64;
/// Client state indication (XEP-0352): the `<active/>` and `<inactive/>` nonzas.
const NS_CSI: &str = "urn:xmpp:csi:0";
/// The ack request nonza (XEP-0198 §4).
const ACK_REQUEST: &str = "<r xmlns='urn:xmpp:sm:3'/>";

enum Exit {
    /// Close with a stream error.
    Error(StreamError),
    /// The client acknowledged more than was sent (XEP-0198 §6).
    TooHigh(TooHigh),
    /// The client closed its stream: answer with ours.
    Closed,
    /// The socket died (or a hibernated session ended): nothing more to write.
    Broken,
    /// Another connection resumed this session while this one was still up.
    Replaced(Box<ResumeRequest>),
}

/// The state of one bound session task.
struct Session {
    server: Arc<Server>,
    jid: Jid,
    handle: SessionHandle,
    /// The current connection; replaced when the session is resumed.
    /// Boxed, as in [`ResumeRequest`]: the stream (its TLS state and framer, ~900 bytes) is
    /// then not laid out inline in the session's futures, where async functions keep a slot
    /// for an argument beside the local it moves into (issue 7: idle memory per session).
    stream: Box<XmlStream<Transport>>,
    peer: SocketAddr,
    /// The client sent available presence and has not gone unavailable since.
    available: bool,
    /// Stream management, once the client enabled it.
    sm: Option<SmState>,
    /// Resumption requests from new connections, while the session is resumable.
    resume_rx: Option<mpsc::Receiver<ResumeRequest>>,
    /// How long to wait hibernated (the configured timeout, or less if the client asked).
    resume_timeout: Duration,
    registry: Arc<Registry>,
    close_signal: CloseSignal,
}

/// Per-session token buckets for bytes and stanzas read (`[limits]`), and how long a session
/// may stay over them before it is closed with `policy-violation`: applied to the connection
/// a session starts on and to every connection it is resumed on.
fn apply_rate_limits(
    server: &Server,
    stream: &mut XmlStream<Transport>,
    peer: SocketAddr,
    jid: &Jid,
) {
    let lim = &server.config().limits;
    stream.set_rate_limits(
        starling_stream::RateLimits::from_config(
            lim.session_bytes_per_sec,
            lim.session_bytes_burst,
            lim.session_stanzas_per_sec,
            lim.session_stanzas_burst,
        )
        .disconnect_after_secs(lim.rate_limit_disconnect_secs),
        format!("{peer} {jid}"),
    );
}

/// Runs a bound session to its end.
///
/// Memory: the session task holds this future for the whole life of the session, and an
/// async fn's future is as large as its largest await point, whichever one is current. The
/// phases (`connected`, `hibernate`, `take_over`, `finish`) are therefore boxed, and inside
/// `connected` so are the stanza handler, the stream management answers and the flush:
/// measured in a release build, this future was 8,752 bytes with them inline (the handler
/// alone 2,512, a flush 1,248) for an idle session that needs none of them. The cost is one
/// allocation per inbound stanza and per write batch.
pub(crate) fn run(
    server: Arc<Server>,
    mut stream: Box<XmlStream<Transport>>,
    bound: Bound,
    peer: SocketAddr,
    registry: Arc<Registry>,
    slot: ConnectionSlot,
) -> impl std::future::Future<Output = ()> + Send {
    let Bound { jid, handle, inbox } = bound;
    apply_rate_limits(&server, &mut stream, peer, &jid);
    let mut inbox = inbox;
    let close_signal = inbox.close_signal();
    let mut s = Session {
        resume_timeout: Duration::from_secs(server.config().c2s.resume_timeout_secs),
        server,
        jid,
        handle,
        stream,
        peer,
        available: false,
        sm: None,
        resume_rx: None,
        registry,
        close_signal,
    };
    // The session is built before the future, which captures only it, its inbox and its
    // slot and uses them in place: a capture moved into a local of the future would be kept
    // twice for the session's whole life (a future keeps its captures beside its locals).
    async move {
        // Captured, so released when the session ends.
        let _ = &slot;
        Box::pin(s.server.session_event(SessionEvent::Bound(s.jid.clone()))).await;
        let mut pending: Option<Exit> = None;
        let exit = loop {
            let exit = match pending.take() {
                Some(e) => e,
                None => Box::pin(s.connected(&mut inbox)).await,
            };
            match exit {
                Exit::Replaced(req) => {
                    tracing::info!(old = %s.peer, new = %req.peer, jid = %s.jid, "session resumed on a new connection; closing the old one");
                    if let Err(e) = Box::pin(s.take_over(*req)).await {
                        pending = Some(e);
                    }
                }
                Exit::Broken if s.resume_rx.is_some() => match Box::pin(s.hibernate()).await {
                    Ok(req) => {
                        if let Err(e) = Box::pin(s.take_over(req)).await {
                            pending = Some(e);
                        }
                    }
                    Err(e) => break e,
                },
                other => break other,
            }
        };
        Box::pin(s.finish(inbox, exit)).await;
    }
}

/// Work the select of [`Session::connected`] picked: a flush, or handling a stanza.
type Work<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = Option<Exit>> + Send + 'a>>;

impl Session {
    /// Runs the session over its current connection until something ends it.
    async fn connected(&mut self, inbox: &mut SessionInbox) -> Exit {
        let server = self.server.clone();
        let idle = Duration::from_secs(server.config().c2s.idle_timeout_secs);
        let max_unacked = server.config().c2s.max_unacked;
        let shutdown = server.shutdown_token().clone();
        let mut last_bytes = self.stream.bytes_in();
        let mut idle_deadline = Instant::now() + idle;
        let close_signal = self.close_signal.clone();
        loop {
            // What the select picked is awaited after it, boxed: the select's result (a
            // stanza, an event) held in this future across that await would widen every
            // state of it, the idle select's included (about 300 bytes of each idle session).
            let work: Option<Work<'_>> = tokio::select! {
                biased;
                _ = shutdown.cancelled() => return Exit::Error(StreamError::new(SE::SystemShutdown)),
                reason = close_signal.closed() => return Exit::Error(reason),
                req = next_resume(&mut self.resume_rx) => return Exit::Replaced(Box::new(req)),
                out = inbox.rx.recv() => {
                    let Some(out) = out else { return Exit::Broken };
                    self.write_outbound(out);
                    let mut n = 1;
                    while n < WRITE_BATCH {
                        match inbox.rx.try_recv() {
                            Ok(out) => { self.write_outbound(out); n += 1; }
                            Err(_) => break,
                        }
                    }
                    if let Some(sm) = self.sm.as_mut() {
                        if sm.unacked_len() > max_unacked {
                            tracing::warn!(jid = %self.jid, unacked = sm.unacked_len(), "too many unacknowledged stanzas: closing slow consumer");
                            return Exit::Error(StreamError::with_text(
                                SE::PolicyViolation,
                                "too many unacknowledged stanzas (slow consumer)",
                            ));
                        }
                        if sm.should_request_ack() {
                            self.stream.queue_raw(ACK_REQUEST);
                        }
                    }
                    Some(Box::pin(self.flush()))
                }
                ev = self.stream.next_event() => {
                    idle_deadline = Instant::now() + idle;
                    let el = match ev {
                        Ok(StreamEvent::Stanza(el)) => el,
                        Ok(StreamEvent::Close) => return Exit::Closed,
                        Ok(StreamEvent::Open(_)) => return Exit::Error(StreamError::with_text(SE::InvalidXml, "unexpected stream header")),
                        Err(ReadError::Stream(e)) => return Exit::Error(e),
                        Err(_) => return Exit::Broken,
                    };
                    Some(Box::pin(self.on_stanza(&server, el)))
                }
                _ = tokio::time::sleep_until(idle_deadline) => {
                    // Whitespace keepalives produce no event; count them through bytes_in.
                    if self.stream.bytes_in() != last_bytes {
                        last_bytes = self.stream.bytes_in();
                        idle_deadline = Instant::now() + idle;
                        None
                    } else if self.resume_rx.is_some() {
                        // A silent resumable client is most likely behind a dead connection:
                        // keep its session for a resume instead of ending it.
                        tracing::info!(jid = %self.jid, "idle for too long; hibernating");
                        return Exit::Broken;
                    } else {
                        return Exit::Error(StreamError::with_text(SE::ConnectionTimeout, "idle for too long"));
                    }
                }
            };
            if let Some(work) = work {
                if let Some(exit) = work.await {
                    return exit;
                }
            }
        }
    }

    /// Handles one first-level element the client sent; `Some` ends the connection.
    async fn on_stanza(&mut self, server: &Server, el: Element) -> Option<Exit> {
        if el.ns() == NS_CSI && matches!(el.name(), "active" | "inactive") {
            // XEP-0352 §4: no answer; modules filter what this session receives.
            server
                .client_state(&self.handle, &self.jid, el.name() == "inactive")
                .await;
            return None;
        }
        if el.ns() == NS_SM {
            return self.sm_nonza(&el).await;
        }
        if let Some(sm) = self.sm.as_mut() {
            sm.on_handled();
        }
        inbound(server, &self.jid, el, &mut self.available)
            .await
            .err()
            .map(Exit::Error)
    }

    /// Queues one outbound stanza, keeping it for acknowledgement under stream management.
    fn write_outbound(&mut self, out: starling_core::Outbound) {
        match out {
            starling_core::Outbound::Stanza(el) => self.write_stanza(el),
            // Serialised once for all the sessions it goes to; stream management keeps the
            // shared stanza too, and copies it only to send it again.
            starling_core::Outbound::Shared(shared, to) => {
                self.stream.queue_with(|buf| shared.write_to(&to, buf));
                if let Some(sm) = self.sm.as_mut() {
                    sm.on_sent(starling_core::Outbound::Shared(shared, to));
                }
            }
        }
    }

    fn write_stanza(&mut self, el: std::sync::Arc<Element>) {
        self.stream.queue(&el);
        if let Some(sm) = self.sm.as_mut() {
            sm.on_sent(starling_core::Outbound::Stanza(el));
        }
    }

    /// Flushes what is queued. A client that stops reading blocks this write once its socket
    /// buffers are full; meanwhile its queue fills and the router asks it to close. Race the
    /// write against that request (and shutdown), or a dead reader would hold its session
    /// forever. The flush is cancel-safe; the exit path tries once more. A resumption request
    /// wins over the write too: the stuck connection is replaced.
    async fn flush(&mut self) -> Option<Exit> {
        let shutdown = self.server.shutdown_token().clone();
        let close_signal = self.close_signal.clone();
        tokio::select! {
            biased;
            r = self.stream.flush() => r.is_err().then_some(Exit::Broken),
            _ = shutdown.cancelled() => Some(Exit::Error(StreamError::new(SE::SystemShutdown))),
            reason = close_signal.closed() => Some(Exit::Error(reason)),
            // A write stuck on a dead connection must not hold up the client's new one.
            req = next_resume(&mut self.resume_rx) => Some(Exit::Replaced(Box::new(req))),
        }
    }

    /// Answers a stream management nonza (XEP-0198) in the bound stream.
    async fn sm_nonza(&mut self, el: &Element) -> Option<Exit> {
        match el.name() {
            "enable" => {
                let answer = self.enable(el);
                self.stream.queue_raw(&answer);
                self.flush().await
            }
            "r" => {
                let Some(sm) = self.sm.as_ref() else {
                    tracing::debug!(jid = %self.jid, "<r/> before <enable/>; ignored");
                    return None;
                };
                let a = format!("<a xmlns='{NS_SM}' h='{}'/>", sm.handled());
                self.stream.queue_raw(&a);
                self.flush().await
            }
            "a" => {
                let sm = self.sm.as_mut()?;
                let Some(h) = el.attribute("h").and_then(|h| h.parse::<u32>().ok()) else {
                    return Some(Exit::Error(StreamError::with_text(
                        SE::InvalidXml,
                        "<a/> needs an 'h' between 0 and 4294967295",
                    )));
                };
                match sm.on_ack(h) {
                    Ok(_) => None,
                    Err(too_high) => Some(Exit::TooHigh(too_high)),
                }
            }
            "resume" => {
                // Only instead of binding (XEP-0198 §5).
                self.stream
                    .queue_raw(&failed_xml("unexpected-request", None));
                self.flush().await
            }
            _ => Some(Exit::Error(StreamError::with_text(
                SE::UnsupportedStanzaType,
                format!("unknown stream management element <{}/>", el.name()),
            ))),
        }
    }

    /// Enables stream management (XEP-0198 §3); returns the answer to send.
    fn enable(&mut self, el: &Element) -> String {
        if self.sm.is_some() {
            return failed_xml("unexpected-request", None);
        }
        let configured = self.server.config().c2s.resume_timeout_secs;
        let wants_resume = matches!(el.attribute("resume"), Some("true" | "1"));
        if wants_resume && configured > 0 {
            // The client may ask for a shorter wait than ours, never a longer one.
            let max = el
                .attribute("max")
                .and_then(|m| m.parse::<u64>().ok())
                .filter(|&m| m > 0)
                .map_or(configured, |m| m.min(configured));
            self.resume_timeout = Duration::from_secs(max);
            let (id, rx) = self.registry.register(self.jid.clone());
            self.resume_rx = Some(rx);
            let answer = format!("<enabled xmlns='{NS_SM}' id='{id}' resume='true' max='{max}'/>");
            self.sm = Some(SmState::new(Some(id)));
            tracing::info!(jid = %self.jid, max, "stream management enabled with resumption");
            answer
        } else {
            self.sm = Some(SmState::new(None));
            tracing::info!(jid = %self.jid, "stream management enabled");
            format!("<enabled xmlns='{NS_SM}'/>")
        }
    }

    /// Waits, bound and present, for the client to resume (XEP-0198 §5). Err: the session
    /// ends (timeout, shutdown, or a close request such as a new session taking the resource).
    async fn hibernate(&mut self) -> Result<ResumeRequest, Exit> {
        self.handle.set_hibernated(true);
        let unacked = self.sm.as_ref().map_or(0, SmState::unacked_len);
        tracing::info!(jid = %self.jid, timeout = ?self.resume_timeout, unacked, "connection lost; session hibernated");
        let deadline = Instant::now() + self.resume_timeout;
        let shutdown = self.server.shutdown_token().clone();
        let close_signal = self.close_signal.clone();
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => Err(Exit::Broken),
            _ = close_signal.closed() => Err(Exit::Broken),
            req = next_resume(&mut self.resume_rx) => Ok(req),
            _ = tokio::time::sleep_until(deadline) => {
                tracing::info!(jid = %self.jid, "resumption timeout: ending hibernated session");
                Err(Exit::Broken)
            }
        }
    }

    /// Continues the session on a resuming connection: applies the client's `h`, answers
    /// `<resumed/>` and retransmits what was not acknowledged.
    async fn take_over(&mut self, req: ResumeRequest) -> Result<(), Exit> {
        let ResumeRequest {
            stream,
            h,
            peer,
            reply,
        } = req;
        // The old connection (if any) closes when it is dropped here.
        self.stream = stream;
        self.peer = peer;
        apply_rate_limits(&self.server, &mut self.stream, peer, &self.jid);
        // Negotiation may have given up waiting (handshake timeout); the stream is ours anyway.
        let _ = reply.send(Ok(()));
        let sm = self
            .sm
            .as_mut()
            .expect("only resumable sessions take resumption requests");
        if let Err(too_high) = sm.on_ack(h) {
            return Err(Exit::TooHigh(too_high));
        }
        let resumed = format!(
            "<resumed xmlns='{NS_SM}' h='{}' previd='{}'/>",
            sm.handled(),
            sm.id().unwrap_or_default()
        );
        self.stream.queue_raw(&resumed);
        let resend = sm.retransmission(self.jid.domain());
        tracing::info!(jid = %self.jid, %peer, h, resent = resend.len(), "session resumed");
        for el in &resend {
            self.stream.queue(el);
        }
        if sm.should_request_ack() {
            self.stream.queue_raw(ACK_REQUEST);
        }
        self.handle.set_hibernated(false);
        match self.flush().await {
            Some(exit) => Err(exit),
            None => Ok(()),
        }
    }

    /// The end of the session: leave the registries, tell the rest of the server, re-route
    /// what the client never received or acknowledged, then close the connection.
    async fn finish(mut self, mut inbox: SessionInbox, exit: Exit) {
        let server = self.server.clone();
        let jid = self.jid.clone();
        let peer = self.peer;
        // No new resumption from here on; a request already queued gets its stream back.
        if let Some(id) = self.sm.as_mut().and_then(SmState::forget_id) {
            self.registry.remove(&id);
        }
        if let Some(mut rx) = self.resume_rx.take() {
            rx.close();
            while let Ok(req) = rx.try_recv() {
                let _ = req.reply.send(Err(req.stream));
            }
        }
        // Leave the routing table first so nothing new is queued for us, then finish
        // everything the rest of the server must see (unavailable presence, re-routing of
        // what was still queued, module events) before touching the socket: a peer that reads
        // slowly must not delay them, and a session taking over this resource waits for
        // exactly this part.
        server.router().unbind(&jid, self.handle.id());
        inbox.rx.close();
        // Sent but never acknowledged (XEP-0198 §4: treated like stanzas to an unavailable
        // resource), then what was still queued, oldest first.
        let mut leftovers = self
            .sm
            .as_mut()
            .map(SmState::take_unacked)
            .unwrap_or_default();
        if !leftovers.is_empty() {
            tracing::info!(%jid, unacked = leftovers.len(), "re-routing unacknowledged stanzas");
        }
        while let Ok(out) = inbox.rx.try_recv() {
            leftovers.push(out.into_element());
        }
        if self.available {
            let unavailable = Element::builder("presence", ns::CLIENT)
                .with_attr("type", "unavailable")
                .with_attr("from", jid.as_str())
                .build();
            server.broadcast_presence(&jid, unavailable).await;
        }
        for el in leftovers {
            // Re-route as if this session had never been there: messages go to a session that
            // took over this full JID, other resources or offline storage (without being
            // archived a second time), IQ requests get an error.
            server.reroute(el).await;
        }
        server.session_event(SessionEvent::Ended(jid.clone())).await;
        // Signals `SessionHandle::finished` to a session waiting to take over this resource.
        drop(inbox);

        let stream = &mut self.stream;
        match &exit {
            Exit::Error(e) => {
                tracing::info!(%peer, %jid, condition = e.condition.name(), text = ?e.text, "closing session with stream error");
                stream.queue_raw(&stream_error_xml(e));
                stream.queue_raw(writer::STREAM_CLOSE);
            }
            Exit::TooHigh(t) => {
                tracing::info!(%peer, %jid, h = t.h, send_count = t.send_count, "client acknowledged more than was sent");
                stream.queue_raw(&t.stream_error_xml());
                stream.queue_raw(writer::STREAM_CLOSE);
            }
            Exit::Closed => {
                tracing::info!(%peer, %jid, "session closed by client");
                stream.queue_raw(writer::STREAM_CLOSE);
            }
            Exit::Broken | Exit::Replaced(_) => tracing::info!(%peer, %jid, "connection lost"),
        }
        if !matches!(exit, Exit::Broken | Exit::Replaced(_)) {
            let _ = tokio::time::timeout(Duration::from_secs(5), stream.shutdown()).await;
        }
    }
}

/// The next resumption request, or never when the session is not resumable.
async fn next_resume(rx: &mut Option<mpsc::Receiver<ResumeRequest>>) -> ResumeRequest {
    match rx {
        Some(rx) => match rx.recv().await {
            Some(req) => req,
            None => std::future::pending().await,
        },
        None => std::future::pending().await,
    }
}

/// Checks, stamps and routes one inbound stanza. Err = close the stream with that error.
async fn inbound(
    server: &Server,
    jid: &Jid,
    mut el: Element,
    available: &mut bool,
) -> Result<(), StreamError> {
    let name = el.name();
    if el.ns() != ns::CLIENT || !matches!(name, "message" | "presence" | "iq") {
        return Err(StreamError::with_text(
            SE::UnsupportedStanzaType,
            format!("unsupported element {{{}}}{}", el.ns(), name),
        ));
    }
    // RFC 6120 §8.1.2.1: the server stamps 'from'; a client may only repeat its own JID.
    if let Some(from) = el.attribute("from") {
        match Jid::parse(from) {
            Ok(f) if f == *jid || f == jid.bare() => {}
            _ => {
                return Err(StreamError::with_text(
                    SE::InvalidFrom,
                    "'from' does not match the session",
                ))
            }
        }
    }
    el.put_attr("from", jid.as_str());
    let to = match el.attribute("to") {
        None => None,
        Some(t) => match Jid::parse(t) {
            Ok(j) => Some(j),
            Err(_) => {
                reply_error(server, &el, Cond::JidMalformed).await;
                return Ok(());
            }
        },
    };
    match el.name() {
        "iq" => {
            if let Err(e) = starling_proto::stanza::validate_iq(&el) {
                if el.attribute("id").is_none() {
                    return Err(StreamError::with_text(SE::InvalidXml, "IQ without an id"));
                }
                reply_error_with(server, &el, e).await;
                return Ok(());
            }
            // §10.3.3: no 'to' means the account itself.
            if to.is_none() {
                el.put_attr("to", jid.bare().as_str());
            }
            if el.attribute("type") == Some("get") || el.attribute("type") == Some("set") {
                // Session establishment (RFC 3921) is a no-op kept for old clients.
                if el.get_child("session", ns::SESSION).is_some() {
                    let result = Element::builder("iq", ns::CLIENT)
                        .with_attr("type", "result")
                        .with_attr("id", el.attribute("id").unwrap_or_default())
                        .with_attr("to", jid.as_str())
                        .build();
                    server.route(result).await;
                    return Ok(());
                }
                if el.get_child("bind", ns::BIND).is_some() {
                    reply_error(server, &el, Cond::NotAllowed).await;
                    return Ok(());
                }
            }
            server.route_from_client(el).await;
        }
        "message" => {
            if to.is_none() {
                el.put_attr("to", jid.bare().as_str());
            }
            server.route_from_client(el).await;
        }
        _ => {
            if to.is_none() {
                match el.attribute("type") {
                    None => *available = true,
                    Some("unavailable") => *available = false,
                    _ => {}
                }
                server.broadcast_presence(jid, el).await;
            } else {
                server.route_from_client(el).await;
            }
        }
    }
    Ok(())
}

async fn reply_error(server: &Server, el: &Element, cond: Cond) {
    reply_error_with(server, el, StanzaError::new(cond)).await
}

async fn reply_error_with(server: &Server, el: &Element, err: StanzaError) {
    // The reply goes back to the sender itself; its own 'to' may be unusable, so address
    // the error from the sender's domain.
    let mut el = el.clone();
    let sender = el.jid_attribute("from");
    if let Some(sender) = sender {
        el.put_attr("to", sender.domain());
        if let Some(reply) = error_reply(&el, &err) {
            server.route(reply).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use starling_proto::framer::Limits;

    fn stream() -> Box<XmlStream<Transport>> {
        let (ours, _theirs) = tokio::io::duplex(64);
        Box::new(XmlStream::new(Transport::Internal(ours), Limits::default()))
    }

    /// An idle bound session is, in memory, mostly the futures of its task: `run` (the
    /// session task's own future since the negotiation task hands over to it) and
    /// `connected` (boxed), each as large as its largest state. A stream (~900 bytes) held by
    /// value in any of them, or the handshake future inline, made them 4.4 and 2.8 KB (issue
    /// 7: idle memory per session, 26.3 -> 19.3 KiB).
    #[tokio::test]
    async fn an_idle_session_keeps_its_futures_small() {
        let storage = starling_storage::open("sqlite::memory:").await.unwrap();
        let server = Server::new(
            Arc::new(starling_core::Config::default()),
            storage,
            Vec::new(),
        )
        .unwrap();
        let jid = Jid::parse("juliet@localhost/balcony").unwrap();
        let peer: SocketAddr = "127.0.0.1:5222".parse().unwrap();
        let registry = Arc::new(Registry::default());
        let (handle, mut inbox) = SessionHandle::new(4);
        let mut s = Session {
            server: server.clone(),
            jid: jid.clone(),
            handle: handle.clone(),
            stream: stream(),
            peer,
            available: false,
            sm: None,
            resume_rx: None,
            resume_timeout: Duration::from_secs(1),
            registry: registry.clone(),
            close_signal: inbox.close_signal(),
        };
        let connected = std::mem::size_of_val(&s.connected(&mut inbox));
        let bound = Bound { jid, handle, inbox };
        let run = std::mem::size_of_val(&run(
            server,
            stream(),
            bound,
            peer,
            registry,
            ConnectionSlot::for_test(),
        ));
        assert!(connected <= 800, "Session::connected: {connected} bytes");
        assert!(run <= 560, "session::run: {run} bytes");
    }
}
