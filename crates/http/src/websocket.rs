//! XMPP over WebSocket (RFC 7395).
//!
//! The handshake must offer the `xmpp` subprotocol (§3.1) and come from an allowed origin.
//! Each text message is one complete element (§3.3.3): `<open/>` becomes a client stream
//! header, `<close/>` the closing tag, anything else a first-level element, re-serialised
//! into the c2s stream ([`crate::framing`]). The server's stream is translated back: its
//! header becomes `<open/>`, each first-level element one message with explicit namespaces,
//! its close `<close/>` followed by the WebSocket close. A message that is not one complete
//! element, or a binary message, ends the stream with `not-well-formed`.
//!
//! Refusals happen in the handshake, before the upgrade, as RFC 6455 §4.2.2 allows (an HTTP
//! error instead of 101): no XMPP stream exists yet (RFC 7395 §3.4 starts it with the first
//! `<open/>` after the upgrade), and an address being refused should cost the server no
//! upgraded socket and no task. An address in the penalty box (`[limits]`
//! `connections_per_ip_per_minute`, `auth_address_ban_after`, `address_ban_secs`; see
//! starling_c2s's throttle) gets `429 Too Many Requests` with `Retry-After` (RFC 6585 §4);
//! each upgrade is one connection of the address, and failed logins on the stream count
//! toward its ban, as on TCP. A full connection cap gets `503`.
//!
//! Keepalive: a WebSocket ping every `http.websocket_ping_secs`; a client from which nothing
//! (pong or message) arrived in a whole interval is disconnected. `http.websocket_see_other_uri`
//! sends every client elsewhere with `<close see-other-uri=…/>` (§3.6.1).

use starling_proto::Attr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use axum::Extension;
use futures_util::{SinkExt, StreamExt};
use minidom::Element;
use starling_c2s::{Carrier, ConnectionRefused};
use starling_proto::error::{StreamError, StreamErrorCondition as SE};
use starling_proto::framer::{Limits, StreamEvent, StreamHeader};
use starling_proto::{ns, writer};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::mpsc;

use crate::framing::{self, client_header, element_text, ws_close, ws_open, NS_FRAMING};
use crate::listener::{refuse, App, ConnInfo};

/// What the reading half tells the writing half.
enum Control {
    /// Close the stream with this error.
    Error(StreamError),
    /// The client closed the WebSocket.
    Gone,
}

/// `GET websocket_path`: the upgrade.
pub(crate) async fn handler(
    State(app): State<App>,
    Extension(info): Extension<ConnInfo>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let config = app.config();
    if !crate::cors::origin_allowed(&config.http, &headers) {
        tracing::info!(peer = %info.peer, origin = ?headers.get("origin"), "WebSocket from a disallowed origin");
        return refuse(StatusCode::FORBIDDEN, "origin not allowed\n");
    }
    if !app.confidential(&info) {
        return refuse(
            StatusCode::FORBIDDEN,
            "client streams need HTTPS on this server\n",
        );
    }
    if !ws
        .requested_protocols()
        .any(|p| p.to_str().is_ok_and(|s| s.trim() == "xmpp"))
    {
        return refuse(
            StatusCode::BAD_REQUEST,
            "the 'xmpp' WebSocket subprotocol is required (RFC 7395)\n",
        );
    }
    let max = config.c2s.max_stanza_bytes + 16 * 1024;
    let mut ws = ws.max_message_size(max).max_frame_size(max);
    ws.set_selected_protocol(HeaderValue::from_static("xmpp"));
    if let Some(uri) = config.http.websocket_see_other_uri.clone() {
        let host = config.server.hosts.first().cloned().unwrap_or_default();
        return ws.on_upgrade(move |socket| see_other(socket, host, uri));
    }
    let pipe = match app.entry.open(info.peer, Carrier::WebSocket) {
        Ok(p) => p,
        Err(ConnectionRefused::Limit) => {
            return refuse(StatusCode::SERVICE_UNAVAILABLE, "too many connections\n")
        }
        Err(ConnectionRefused::PenaltyBox { retry_after }) => return penalty_box(retry_after),
    };
    ws.on_upgrade(move |socket| run(app, info, socket, pipe))
}

/// `429 Too Many Requests` for an address in the penalty box, with `Retry-After` in whole
/// seconds (rounded up).
fn penalty_box(retry_after: Duration) -> Response {
    let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
    let mut r = refuse(
        StatusCode::TOO_MANY_REQUESTS,
        "too many connections or failed logins from your address; try again later\n",
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    r
}

fn limits(config: &starling_core::Config) -> Limits {
    let c2s = &config.c2s;
    Limits {
        max_stanza_bytes: c2s.max_stanza_bytes,
        max_depth: c2s.max_depth,
        max_attributes: c2s.max_attributes,
        max_buffered_bytes: c2s.max_stanza_bytes + 16 * 1024,
        max_elements: c2s.max_elements,
    }
}

/// `xml:lang` of an element.
fn xml_lang(el: &Element) -> Option<&str> {
    el.attrs()
        .iter()
        .find(|((attr_ns, name), _)| attr_ns.as_str() == ns::XML && name.as_str() == "lang")
        .map(|(_, v)| v.as_str())
}

/// Answers the first `<open/>` with a redirect (RFC 7395 §3.6.1).
async fn see_other(mut socket: WebSocket, host: String, uri: String) {
    let first = tokio::time::timeout(Duration::from_secs(10), socket.recv()).await;
    if let Ok(Some(Ok(Message::Text(_)))) = first {
        let header = StreamHeader {
            from: Some(host),
            id: Some(random_id()),
            version: Some("1.0".into()),
            ..StreamHeader::default()
        };
        let _ = socket.send(Message::text(ws_open(&header))).await;
        let _ = socket.send(Message::text(ws_close(Some(&uri)))).await;
    }
    let _ = socket.send(Message::Close(None)).await;
}

fn random_id() -> String {
    use rand::Rng;
    let bytes: [u8; 12] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn run(app: App, info: ConnInfo, socket: WebSocket, pipe: DuplexStream) {
    let config = app.config().clone();
    let (mut sink, mut stream) = socket.split();
    let (mut pipe_rd, mut pipe_wr) = tokio::io::split(pipe);
    let (ctl_tx, mut ctl_rx) = mpsc::channel::<Control>(4);
    let heard = Arc::new(AtomicBool::new(true));
    let limits = limits(&config);

    // Client -> server: one element per message, re-serialised into the stream.
    let heard_in = heard.clone();
    let peer = info.peer;
    let inbound = tokio::spawn(async move {
        let mut out = Vec::new();
        let end = loop {
            let Some(Ok(msg)) = stream.next().await else {
                break Control::Gone;
            };
            heard_in.store(true, Ordering::Relaxed);
            out.clear();
            match msg {
                Message::Text(text) => match framing::parse_element(text.as_str(), limits) {
                    Ok(el) if el.is("open", NS_FRAMING) => {
                        out.extend_from_slice(
                            client_header(
                                el.attribute("to"),
                                el.attribute("version"),
                                xml_lang(&el),
                            )
                            .as_bytes(),
                        );
                    }
                    Ok(el) if el.is("close", NS_FRAMING) => {
                        out.extend_from_slice(writer::STREAM_CLOSE.as_bytes());
                    }
                    Ok(el) if el.ns() == NS_FRAMING => {
                        break Control::Error(StreamError::with_text(
                            SE::UnsupportedStanzaType,
                            "unknown framing element",
                        ));
                    }
                    Ok(el) => writer::write_element(&el, &mut out),
                    Err(e) => {
                        tracing::info!(%peer, condition = e.condition.name(), "bad WebSocket message");
                        break Control::Error(e);
                    }
                },
                Message::Binary(_) => {
                    break Control::Error(StreamError::with_text(
                        SE::NotWellFormed,
                        "XMPP over WebSocket uses text messages only",
                    ))
                }
                Message::Ping(_) | Message::Pong(_) => continue,
                Message::Close(_) => break Control::Gone,
            }
            if pipe_wr.write_all(&out).await.is_err() {
                break Control::Gone;
            }
        };
        let _ = pipe_wr.shutdown().await;
        let _ = ctl_tx.send(end).await;
    });

    // Server -> client.
    let mut outbound = framing::Outbound::new(config.c2s.max_stanza_bytes * 2 + 64 * 1024);
    let mut server_opened = false;
    let mut buf = vec![0u8; 16 * 1024];
    let interval = Duration::from_secs(config.http.websocket_ping_secs);
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    let host = config.server.hosts.first().cloned().unwrap_or_default();
    'outer: loop {
        tokio::select! {
            n = pipe_rd.read(&mut buf) => {
                let n = match n {
                    Ok(0) | Err(_) => {
                        // The session ended without closing its stream (it always closes
                        // it, so this is a broken pipe): tell the client anyway.
                        let _ = sink.send(Message::text(ws_close(None))).await;
                        break;
                    }
                    Ok(n) => n,
                };
                outbound.feed(&buf[..n]);
                loop {
                    let ev = match outbound.next_event() {
                        Ok(Some(ev)) => ev,
                        Ok(None) => break,
                        Err(e) => {
                            tracing::warn!(%peer, error = ?e, "could not read the session's own stream");
                            let _ = sink.send(Message::text(ws_close(None))).await;
                            break 'outer;
                        }
                    };
                    let text = match ev {
                        StreamEvent::Open(h) => {
                            server_opened = true;
                            ws_open(&h)
                        }
                        StreamEvent::Stanza(el) => element_text(&el),
                        StreamEvent::Close => {
                            let _ = sink.send(Message::text(ws_close(None))).await;
                            break 'outer;
                        }
                    };
                    if sink.send(Message::text(text)).await.is_err() {
                        break 'outer;
                    }
                }
            }
            ctl = ctl_rx.recv() => match ctl {
                Some(Control::Error(e)) => {
                    if !server_opened {
                        let h = StreamHeader {
                            from: Some(host.clone()),
                            id: Some(random_id()),
                            version: Some("1.0".into()),
                            lang: Some("en".into()),
                            ..StreamHeader::default()
                        };
                        let _ = sink.send(Message::text(ws_open(&h))).await;
                    }
                    let _ = sink.send(Message::text(element_text(&e.to_element()))).await;
                    let _ = sink.send(Message::text(ws_close(None))).await;
                    break;
                }
                Some(Control::Gone) | None => break,
            },
            _ = ping.tick() => {
                if !heard.swap(false, Ordering::Relaxed) {
                    tracing::info!(%peer, "WebSocket client did not answer pings; closing");
                    break;
                }
                if sink.send(Message::Ping(Default::default())).await.is_err() {
                    break;
                }
            }
        }
    }
    inbound.abort();
    let _ = sink.send(Message::Close(None)).await;
    let _ = sink.close().await;
}
