//! The bound client session (RFC 6120 §8, §10): one task owning its socket.
//!
//! Inbound: every stanza gets its `from` stamped with the session's full JID (a `from` that
//! names anyone else closes the stream with `invalid-from`), `to` is validated (a malformed
//! one gets `jid-malformed`), IQs are checked (id, exactly one payload for get/set), and the
//! stanza goes to the router. The client state nonzas of XEP-0352 (`<active/>`,
//! `<inactive/>`) are recorded through [`Server::client_state`]. Outbound: the session's bounded queue is drained in batches
//! into one write. The loop also watches the idle timeout, a close request (conflict, slow
//! consumer) and server shutdown (`system-shutdown`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use minidom::Element;
use starling_core::module::SessionEvent;
use starling_core::xml::{BuilderExt, ElementExt};
use starling_core::Server;
use starling_proto::error::{
    error_reply, StanzaError, StanzaErrorCondition as Cond, StreamError, StreamErrorCondition as SE,
};
use starling_proto::framer::StreamEvent;
use starling_proto::jid::Jid;
use starling_proto::{ns, writer};
use starling_stream::{ReadError, XmlStream};
use tokio::time::Instant;

use crate::negotiate::{stream_error_xml, Bound};
use crate::transport::Transport;

/// Outbound stanzas written per batch before flushing.
const WRITE_BATCH: usize = 64;
/// Client state indication (XEP-0352): the `<active/>` and `<inactive/>` nonzas.
const NS_CSI: &str = "urn:xmpp:csi:0";

enum Exit {
    /// Close with a stream error.
    Error(StreamError),
    /// The client closed its stream: answer with ours.
    Closed,
    /// The socket died.
    Broken,
}

pub(crate) async fn run(
    server: Arc<Server>,
    mut stream: XmlStream<Transport>,
    bound: Bound,
    _host: String,
    peer: SocketAddr,
) {
    let Bound {
        jid,
        handle,
        mut inbox,
    } = bound;
    let lim = &server.config().limits;
    stream.set_rate_limits(
        starling_stream::RateLimits::from_config(
            lim.session_bytes_per_sec,
            lim.session_bytes_burst,
            lim.session_stanzas_per_sec,
            lim.session_stanzas_burst,
        ),
        format!("{peer} {jid}"),
    );
    server.session_event(SessionEvent::Bound(jid.clone())).await;
    let idle = Duration::from_secs(server.config().c2s.idle_timeout_secs);
    let shutdown = server.shutdown_token().clone();
    let mut last_bytes = stream.bytes_in();
    let mut idle_deadline = Instant::now() + idle;
    let mut available = false;
    let close_signal = inbox.close_signal();

    let exit = loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break Exit::Error(StreamError::new(SE::SystemShutdown)),
            reason = close_signal.closed() => break Exit::Error(reason),
            out = inbox.rx.recv() => {
                let Some(starling_core::Outbound::Stanza(el)) = out else { break Exit::Broken };
                stream.queue(&el);
                let mut n = 1;
                while n < WRITE_BATCH {
                    match inbox.rx.try_recv() {
                        Ok(starling_core::Outbound::Stanza(el)) => { stream.queue(&el); n += 1; }
                        Err(_) => break,
                    }
                }
                // A client that stops reading blocks this write once its socket buffers are
                // full; meanwhile its queue fills and the router asks it to close. Race the
                // write against that request (and shutdown), or a dead reader would hold its
                // session forever. The flush is cancel-safe; the exit path tries once more.
                tokio::select! {
                    biased;
                    r = stream.flush() => if r.is_err() { break Exit::Broken },
                    _ = shutdown.cancelled() => break Exit::Error(StreamError::new(SE::SystemShutdown)),
                    reason = close_signal.closed() => break Exit::Error(reason),
                }
            }
            ev = stream.next_event() => {
                idle_deadline = Instant::now() + idle;
                match ev {
                    Ok(StreamEvent::Stanza(el)) if el.ns() == NS_CSI && matches!(el.name(), "active" | "inactive") => {
                        // XEP-0352 §4: no answer; modules filter what this session receives.
                        server.client_state(&handle, &jid, el.name() == "inactive").await;
                    }
                    Ok(StreamEvent::Stanza(el)) => {
                        match inbound(&server, &jid, el, &mut available).await {
                            Ok(()) => {}
                            Err(e) => break Exit::Error(e),
                        }
                    }
                    Ok(StreamEvent::Close) => break Exit::Closed,
                    Ok(StreamEvent::Open(_)) => break Exit::Error(StreamError::with_text(SE::InvalidXml, "unexpected stream header")),
                    Err(ReadError::Stream(e)) => break Exit::Error(e),
                    Err(_) => break Exit::Broken,
                }
            }
            _ = tokio::time::sleep_until(idle_deadline) => {
                // Whitespace keepalives produce no event; count them through bytes_in.
                if stream.bytes_in() != last_bytes {
                    last_bytes = stream.bytes_in();
                    idle_deadline = Instant::now() + idle;
                } else {
                    break Exit::Error(StreamError::with_text(SE::ConnectionTimeout, "idle for too long"));
                }
            }
        }
    };

    // Leave the routing table first so nothing new is queued for us, then finish everything
    // the rest of the server must see (unavailable presence, re-routing of what was still
    // queued, module events) before touching the socket: a peer that reads slowly must not
    // delay them, and a session taking over this resource waits for exactly this part.
    server.router().unbind(&jid, handle.id());
    inbox.rx.close();
    let mut leftovers = Vec::new();
    while let Ok(starling_core::Outbound::Stanza(el)) = inbox.rx.try_recv() {
        leftovers.push(el);
    }
    if available {
        let unavailable = Element::builder("presence", ns::CLIENT)
            .with_attr("type", "unavailable")
            .with_attr("from", jid.as_str())
            .build();
        server.broadcast_presence(&jid, unavailable).await;
    }
    for el in leftovers {
        // Re-route as if this session had never been there: messages fall back to the bare
        // JID (other resources or offline storage), IQ requests get an error, and a session
        // that took over this full JID receives what was addressed to it.
        server.route(el).await;
    }
    server.session_event(SessionEvent::Ended(jid.clone())).await;
    // Signals `SessionHandle::finished` to a session waiting to take over this resource.
    drop(inbox);

    match &exit {
        Exit::Error(e) => {
            tracing::info!(%peer, %jid, condition = e.condition.name(), text = ?e.text, "closing session with stream error");
            stream.queue_raw(&stream_error_xml(e));
            stream.queue_raw(writer::STREAM_CLOSE);
        }
        Exit::Closed => {
            tracing::info!(%peer, %jid, "session closed by client");
            stream.queue_raw(writer::STREAM_CLOSE);
        }
        Exit::Broken => tracing::info!(%peer, %jid, "connection lost"),
    }
    if !matches!(exit, Exit::Broken) {
        let _ = tokio::time::timeout(Duration::from_secs(5), stream.shutdown()).await;
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
    if let Some(from) = el.attr("from") {
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
    let to = match el.attr("to") {
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
                if el.attr("id").is_none() {
                    return Err(StreamError::with_text(SE::InvalidXml, "IQ without an id"));
                }
                reply_error_with(server, &el, e).await;
                return Ok(());
            }
            // §10.3.3: no 'to' means the account itself.
            if to.is_none() {
                el.put_attr("to", jid.bare().as_str());
            }
            if el.attr("type") == Some("get") || el.attr("type") == Some("set") {
                // Session establishment (RFC 3921) is a no-op kept for old clients.
                if el.get_child("session", ns::SESSION).is_some() {
                    let result = Element::builder("iq", ns::CLIENT)
                        .with_attr("type", "result")
                        .with_attr("id", el.attr("id").unwrap_or_default())
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
                match el.attr("type") {
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
    let sender = el.attr("from").and_then(|f| Jid::parse(f).ok());
    if let Some(sender) = sender {
        el.put_attr("to", sender.domain());
        if let Some(reply) = error_reply(&el, &err) {
            server.route(reply).await;
        }
    }
}
