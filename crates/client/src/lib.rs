//! starling-client: an async XMPP client (RFC 6120 client side, RFC 6121 basics) for the
//! `starling client` CLI, the load generator and the end-to-end tests.
//!
//! [`Client::connect`] opens TCP to an explicit address (never DNS), starts TLS (STARTTLS or
//! direct TLS, XEP-0368), authenticates with the first SASL mechanism of the caller's
//! preference that the server offers (SCRAM-SHA-256-PLUS with `tls-exporter` channel binding
//! by default), restarts the stream and binds a resource. After that the client is a pipe of
//! stanzas: [`Client::send`] and [`Client::recv`], plus [`Client::close`] for the orderly
//! end of RFC 6120 §4.4.
//!
//! What it owns: the client half of negotiation ([`negotiate`]), TLS trust and the transport
//! ([`tls`]), the error vocabulary ([`ClientError`]). What it does not own: rosters, presence
//! bookkeeping, reconnection, stream management; callers build stanzas as `minidom`
//! elements. XML goes through the proto crate's framer (with its limits) and writer, via the
//! stream crate's [`XmlStream`](starling_stream::XmlStream), so the hot path is one parse
//! and one serialisation per stanza.
//!
//! ```no_run
//! # async fn demo() -> Result<(), starling_client::ClientError> {
//! use starling_client::{Client, ClientConfig, Trust};
//! let jid = "alice@localhost".parse().unwrap();
//! let cfg = ClientConfig::new(jid, "secret", "127.0.0.1:5222".parse().unwrap(),
//!                             Trust::CaFile("ca.pem".into()));
//! let mut client = Client::connect(&cfg).await?;
//! client.send_presence().await?;
//! client.send(&starling_client::chat_message("bob@localhost", "hello")).await?;
//! let stanza = client.recv().await?;
//! client.close().await?;
//! # Ok(()) }
//! ```

mod cache;
mod config;
mod error;
mod negotiate;
mod tls;

use starling_proto::Attr;
use std::collections::VecDeque;
use std::time::Duration;

use minidom::Element;
use starling_proto::jid::Jid;
use starling_proto::{ns, writer};
use starling_sasl::Mechanism;

pub use cache::SaltedPasswordCache;
pub use config::{ClientConfig, TlsMode, Trust};
pub use error::ClientError;
pub use starling_proto::Element as Stanza;
pub use starling_sasl::Mechanism as SaslMechanism;

use negotiate::{next_element, Stream};

/// How long [`Client::close`] waits for the server's `</stream:stream>`.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// A negotiated, bound client stream.
pub struct Client {
    stream: Stream,
    /// The full JID the server bound.
    jid: Jid,
    /// The SASL mechanism that authenticated us.
    mechanism: Mechanism,
    /// Stanzas read while waiting for the reply to one of our own IQs; `recv` returns them
    /// first, in order.
    pending: VecDeque<Element>,
    /// Counter for the ids of IQs we send.
    next_id: u64,
    /// Whether the server has closed its stream.
    server_closed: bool,
    /// The `<stream:features/>` the server offered after authentication.
    features: Element,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("jid", &self.jid.as_str())
            .field("mechanism", &self.mechanism)
            .finish_non_exhaustive()
    }
}

impl Client {
    pub(crate) fn new(stream: Stream, jid: Jid, mechanism: Mechanism, features: Element) -> Client {
        Client {
            features,
            stream,
            jid,
            mechanism,
            pending: VecDeque::new(),
            next_id: 0,
            server_closed: false,
        }
    }

    /// Connects, starts TLS, authenticates and binds, all within `cfg.timeout`.
    pub async fn connect(cfg: &ClientConfig) -> Result<Client, ClientError> {
        tokio::time::timeout(cfg.timeout, negotiate::connect(cfg))
            .await
            .map_err(|_| ClientError::Timeout("connecting, authenticating and binding"))?
    }

    /// Our full JID, as bound by the server.
    pub fn jid(&self) -> &Jid {
        &self.jid
    }

    /// The `<stream:features/>` the server offered after authentication (bind, stream
    /// management, client state indication...).
    pub fn stream_features(&self) -> &Element {
        &self.features
    }

    /// The SASL mechanism that authenticated this stream (e.g. SCRAM-SHA-256-PLUS).
    pub fn mechanism(&self) -> Mechanism {
        self.mechanism
    }

    /// Sends one stanza (written and flushed).
    pub async fn send(&mut self, stanza: &Element) -> Result<(), ClientError> {
        self.stream.queue(stanza);
        Ok(self.stream.flush().await?)
    }

    /// Buffers a stanza without writing it; [`Client::flush`] writes everything buffered in
    /// one go (for senders that batch).
    pub fn queue(&mut self, stanza: &Element) {
        self.stream.queue(stanza);
    }

    /// Writes whatever [`Client::queue`] buffered.
    pub async fn flush(&mut self) -> Result<(), ClientError> {
        Ok(self.stream.flush().await?)
    }

    /// The next stanza from the server. A stream error becomes [`ClientError::Stream`], the
    /// server's `</stream:stream>` [`ClientError::Closed`]. Cancel-safe: it may sit in a
    /// `select!` or under a timeout without losing input.
    pub async fn recv(&mut self) -> Result<Element, ClientError> {
        if let Some(el) = self.pending.pop_front() {
            return Ok(el);
        }
        if self.server_closed {
            return Err(ClientError::Closed);
        }
        match next_element(&mut self.stream).await {
            Err(ClientError::Closed) => {
                self.server_closed = true;
                Err(ClientError::Closed)
            }
            other => other,
        }
    }

    /// A stanza already read (while [`Client::ping`] waited), without waiting for the
    /// network; `None` when there is none.
    pub fn recv_buffered(&mut self) -> Option<Element> {
        self.pending.pop_front()
    }

    /// Sends initial presence (RFC 6121 §4.2): the server then delivers messages sent to our
    /// bare JID to this resource.
    pub async fn send_presence(&mut self) -> Result<(), ClientError> {
        self.send(&Element::builder("presence", ns::CLIENT).build())
            .await
    }

    /// A round trip to the server (XEP-0199 ping): when it returns, everything we sent
    /// before has been processed by our session (which handles our stanzas in order), e.g.
    /// initial presence is in effect. Stanzas arriving meanwhile are kept for `recv`.
    pub async fn ping(&mut self) -> Result<(), ClientError> {
        let domain = self.jid.domain().to_owned();
        let answer = self
            .iq("get", &domain, Element::builder("ping", ns::PING).build())
            .await?;
        match answer.attribute("type") {
            Some("result") => Ok(()),
            _ => Err(ClientError::Protocol(format!(
                "ping answered with {}",
                writer::element_to_string(&answer)
            ))),
        }
    }

    /// Sends an IQ of `kind` (`get` or `set`) with `payload` to `to` and waits for its
    /// answer: the whole `result` or `error` stanza. Stanzas arriving meanwhile are kept
    /// for `recv`.
    pub async fn iq(
        &mut self,
        kind: &str,
        to: &str,
        payload: Element,
    ) -> Result<Element, ClientError> {
        self.next_id += 1;
        let id = format!("iq-{}", self.next_id);
        let iq = Element::builder("iq", ns::CLIENT)
            .attr(attr("type"), kind)
            .attr(attr("id"), id.as_str())
            .attr(attr("to"), to)
            .append(payload)
            .build();
        self.send(&iq).await?;
        loop {
            let el = next_element(&mut self.stream).await?;
            if el.is("iq", ns::CLIENT)
                && el.attribute("id") == Some(id.as_str())
                && matches!(el.attribute("type"), Some("result" | "error"))
            {
                return Ok(el);
            }
            self.pending.push_back(el);
        }
    }

    /// Ends the stream (RFC 6120 §4.4): sends `</stream:stream>`, waits (at most a few
    /// seconds) for the server's, and closes TLS and TCP. Stanzas still arriving are dropped.
    pub async fn close(mut self) -> Result<(), ClientError> {
        self.stream.queue_raw(writer::STREAM_CLOSE);
        self.stream.flush().await?;
        if !self.server_closed {
            let wait = async {
                loop {
                    match next_element(&mut self.stream).await {
                        Ok(_) => continue,
                        Err(ClientError::Closed) => return Ok(()),
                        Err(e) => return Err(e),
                    }
                }
            };
            match tokio::time::timeout(CLOSE_WAIT, wait).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err(ClientError::Timeout("waiting for the server to close")),
            }
        }
        self.stream.shutdown().await;
        Ok(())
    }
}

/// A `type='chat'` message with a body.
pub fn chat_message(to: &str, body: &str) -> Element {
    Element::builder("message", ns::CLIENT)
        .attr(attr("type"), "chat")
        .attr(attr("to"), to)
        .append(Element::builder("body", ns::CLIENT).append(body))
        .build()
}

/// An attribute name for minidom's builder.
pub(crate) fn attr(name: &'static str) -> minidom::rxml::NcName {
    minidom::rxml::NcName::try_from(name).expect("attribute names used here are NCNames")
}
