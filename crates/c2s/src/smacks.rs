//! Stream management (XEP-0198, `urn:xmpp:sm:3`) for client sessions: the counters, the
//! queue of stanzas sent but not yet acknowledged, and the registry through which a new
//! connection finds a hibernated session to resume.
//!
//! What lives here has no I/O: [`SmState`] counts handled inbound stanzas (the `h` this server
//! reports, §4) and sent outbound ones, both modulo 2^32, and keeps every sent stanza until the
//! client's `<a h/>` covers it. [`Registry`] maps the unguessable resumption id given in
//! `<enabled id/>` to the session task that owns it; only the same account may resume (§5).
//! The session loop ([`crate::session`]) answers `<enable/>`, `<r/>` and `<a/>`, hibernates
//! when the connection breaks, and re-routes what was never acknowledged when the session
//! ends without resumption (§4 "treat unacknowledged stanzas ... as sent to an unavailable
//! resource"); negotiation ([`crate::negotiate`]) offers the feature and takes `<resume/>`.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use minidom::Element;
use parking_lot::Mutex;
use starling_core::xml::BuilderExt;
use starling_core::Outbound;
use starling_proto::jid::Jid;
use starling_proto::ns;
use starling_stream::XmlStream;
use tokio::sync::{mpsc, oneshot};

use crate::transport::Transport;

/// The stream management namespace (version 3).
pub(crate) const NS_SM: &str = "urn:xmpp:sm:3";

/// One stanza written to the client and not yet acknowledged.
#[derive(Debug)]
struct Sent {
    /// As queued for the session: a stanza shared with other sessions (MUC fan-out) stays
    /// shared here too and becomes an element of its own only if it must be sent again.
    stanza: Outbound,
    /// When it was first written (epoch ms), for the `<delay/>` added on retransmission.
    at_ms: i64,
}

/// The client acknowledged more stanzas than were sent (§6: `handled-count-too-high`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TooHigh {
    /// The `h` the client sent.
    pub h: u32,
    /// How many stanzas the server has sent (mod 2^32).
    pub send_count: u32,
}

impl TooHigh {
    /// `<stream:error>` with `undefined-condition` and the XEP-0198 §6 detail element.
    pub(crate) fn stream_error_xml(&self) -> String {
        format!(
            "<stream:error><undefined-condition xmlns='{}'/>\
             <handled-count-too-high xmlns='{NS_SM}' h='{}' send-count='{}'/>\
             <text xmlns='{}'>You acknowledged {} stanza(s), but only {} were sent</text>\
             </stream:error>",
            ns::STREAM_ERRORS,
            self.h,
            self.send_count,
            ns::STREAM_ERRORS,
            self.h,
            self.send_count
        )
    }
}

/// Stream management state of one session, from `<enable/>` on.
#[derive(Debug)]
pub(crate) struct SmState {
    /// The resumption id given in `<enabled/>`, when the session is resumable.
    id: Option<String>,
    /// Stanzas received from the client since `<enable/>`, mod 2^32: the `h` we report.
    handled: u32,
    /// The last `h` the client reported: stanzas of ours it has received, mod 2^32.
    acked: u32,
    /// Sent stanzas the client has not acknowledged yet, oldest first; stanza number
    /// `acked + 1 + i` (mod 2^32) is at index `i`.
    unacked: VecDeque<Sent>,
    /// An `<r/>` was sent and its `<a/>` has not arrived: no second request until it does.
    ack_requested: bool,
}

impl SmState {
    /// State right after `<enable/>`: both counters at zero.
    pub(crate) fn new(id: Option<String>) -> SmState {
        SmState::starting_at(id, 0, 0)
    }

    /// State with counters starting at given values (tests of the wrap at 2^32).
    fn starting_at(id: Option<String>, handled: u32, sent: u32) -> SmState {
        SmState {
            id,
            handled,
            acked: sent,
            unacked: VecDeque::new(),
            ack_requested: false,
        }
    }

    /// The resumption id, when resumable.
    pub(crate) fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    /// Stops being resumable (the registry entry is gone).
    pub(crate) fn forget_id(&mut self) -> Option<String> {
        self.id.take()
    }

    /// The `h` to report: inbound stanzas handled, mod 2^32.
    pub(crate) fn handled(&self) -> u32 {
        self.handled
    }

    /// Counts one inbound stanza.
    pub(crate) fn on_handled(&mut self) {
        self.handled = self.handled.wrapping_add(1);
    }

    /// Stanzas sent so far, mod 2^32.
    pub(crate) fn send_count(&self) -> u32 {
        self.acked.wrapping_add(self.unacked.len() as u32)
    }

    /// Records a stanza written to the client.
    pub(crate) fn on_sent(&mut self, stanza: Outbound) {
        self.unacked.push_back(Sent {
            stanza,
            at_ms: now_ms(),
        });
    }

    /// How many sent stanzas wait for an acknowledgement.
    pub(crate) fn unacked_len(&self) -> usize {
        self.unacked.len()
    }

    /// Applies the client's `h` (from `<a/>` or `<resume/>`): drops what it covers and returns
    /// how many stanzas were newly acknowledged. An `h` behind the last one is taken as a
    /// repeat of an older ack only if it is within the sent window; otherwise it is too high.
    pub(crate) fn on_ack(&mut self, h: u32) -> Result<usize, TooHigh> {
        self.ack_requested = false;
        let newly = h.wrapping_sub(self.acked) as usize;
        if newly > self.unacked.len() {
            return Err(TooHigh {
                h,
                send_count: self.send_count(),
            });
        }
        self.unacked.drain(..newly);
        self.acked = h;
        Ok(newly)
    }

    /// Whether an `<r/>` should be sent now: something is unacknowledged and no request is
    /// outstanding. Marks the request as sent when it returns true.
    pub(crate) fn should_request_ack(&mut self) -> bool {
        if self.ack_requested || self.unacked.is_empty() {
            return false;
        }
        self.ack_requested = true;
        true
    }

    /// Copies of the unacknowledged stanzas for retransmission after a resume, oldest first;
    /// messages get a `<delay/>` (XEP-0203) with the time they were first sent, so that the
    /// client can tell late delivery, as XEP-0198 §5 recommends.
    pub(crate) fn retransmission(&self, domain: &str) -> Vec<Element> {
        self.unacked
            .iter()
            .map(|s| {
                let mut el = match &s.stanza {
                    Outbound::Stanza(el) => Element::clone(el),
                    Outbound::Shared(shared, to) => shared.addressed(to),
                };
                if el.name() == "message" && el.get_child("delay", ns::DELAY).is_none() {
                    el.append_child(
                        Element::builder("delay", ns::DELAY)
                            .with_attr("from", domain)
                            .with_attr("stamp", utc_stamp(s.at_ms))
                            .build(),
                    );
                }
                el
            })
            .collect()
    }

    /// Takes every unacknowledged stanza (as sent, without delay), oldest first, for the
    /// session's exit path to re-route.
    pub(crate) fn take_unacked(&mut self) -> Vec<Element> {
        self.acked = self.send_count();
        self.unacked
            .drain(..)
            .map(|s| s.stanza.into_element())
            .collect()
    }
}

/// A new connection asking to take over a hibernated (or still connected) session.
pub(crate) struct ResumeRequest {
    /// The new stream, authenticated as the session's account, after its restart.
    /// Boxed: the request waits in a channel every resumable session polls while idle, and
    /// the select's output holds one inline.
    pub stream: Box<XmlStream<Transport>>,
    /// The client's `h` from `<resume/>`.
    pub h: u32,
    /// The new connection's address, for logs.
    pub peer: SocketAddr,
    /// `Ok` when the session took the stream over; `Err` gives it back (the session is
    /// ending) so that negotiation can answer `<failed/>`.
    pub reply: oneshot::Sender<Result<(), Box<XmlStream<Transport>>>>,
}

/// Resumption requests a session task accepts at once; more wait for the send.
const RESUME_QUEUE: usize = 2;

/// One resumable session.
struct Entry {
    /// The session's full JID; only its account may resume it.
    owner: Jid,
    /// The session task's resumption channel.
    tx: mpsc::Sender<ResumeRequest>,
}

/// Resumable sessions by resumption id, shared by all client listeners. Bounded by the number
/// of sessions: an entry lives exactly as long as its session task.
#[derive(Default)]
pub(crate) struct Registry {
    map: Mutex<HashMap<String, Entry>>,
}

/// Why a resumption was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LookupError {
    /// No such id (never issued, timed out, or already ended).
    NotFound,
    /// The id belongs to another account.
    NotYours,
}

impl Registry {
    /// Registers a resumable session owned by `owner`; returns its new id and the channel
    /// on which resumption requests arrive.
    pub(crate) fn register(&self, owner: Jid) -> (String, mpsc::Receiver<ResumeRequest>) {
        let (tx, rx) = mpsc::channel(RESUME_QUEUE);
        let id = new_resumption_id();
        self.map.lock().insert(id.clone(), Entry { owner, tx });
        (id, rx)
    }

    /// Forgets a session (it ended, or stopped being resumable).
    pub(crate) fn remove(&self, id: &str) {
        self.map.lock().remove(id);
    }

    /// The channel of session `id`, if `user` (an authenticated bare JID) owns it. Returns
    /// the owner's full JID with it.
    pub(crate) fn lookup(
        &self,
        id: &str,
        user: &Jid,
    ) -> Result<(Jid, mpsc::Sender<ResumeRequest>), LookupError> {
        let map = self.map.lock();
        let entry = map.get(id).ok_or(LookupError::NotFound)?;
        if entry.owner.bare() != user.bare() {
            return Err(LookupError::NotYours);
        }
        Ok((entry.owner.clone(), entry.tx.clone()))
    }

    /// Number of resumable sessions (for tests and metrics).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.lock().len()
    }
}

/// 144 random bits, URL-safe: not guessable, so knowing a JID does not let anyone try ids.
fn new_resumption_id() -> String {
    use base64::Engine;
    use rand::Rng;
    let bytes: [u8; 18] = rand::rng().random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// `<failed xmlns='urn:xmpp:sm:3'>` with a stanza error condition (and `h` when known).
pub(crate) fn failed_xml(condition: &str, h: Option<u32>) -> String {
    let h = h.map(|h| format!(" h='{h}'")).unwrap_or_default();
    format!(
        "<failed xmlns='{NS_SM}'{h}><{condition} xmlns='{}'/></failed>",
        ns::STANZA_ERRORS
    )
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Epoch milliseconds as an XEP-0082 UTC DateTime, e.g. `2002-09-10T23:08:25.000Z`.
fn utc_stamp(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        sod / 3600,
        (sod / 60) % 60,
        sod % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(i: u32) -> Element {
        Element::builder("message", ns::CLIENT)
            .with_attr("id", i.to_string())
            .build()
    }

    #[test]
    fn acks_drop_what_they_cover() {
        let mut sm = SmState::new(None);
        for i in 0..5 {
            sm.on_sent(Outbound::Stanza(std::sync::Arc::new(msg(i))));
        }
        assert_eq!(sm.send_count(), 5);
        assert_eq!(sm.on_ack(2), Ok(2));
        assert_eq!(sm.unacked_len(), 3);
        // A repeated ack changes nothing.
        assert_eq!(sm.on_ack(2), Ok(0));
        let rest = sm.retransmission("example.org");
        assert_eq!(rest[0].attr("id"), Some("2"));
        assert!(rest[0].get_child("delay", ns::DELAY).is_some());
        assert_eq!(sm.on_ack(5), Ok(3));
        assert_eq!(sm.unacked_len(), 0);
    }

    #[test]
    fn ack_beyond_what_was_sent_is_too_high() {
        let mut sm = SmState::new(None);
        sm.on_sent(Outbound::Stanza(std::sync::Arc::new(msg(0))));
        assert_eq!(
            sm.on_ack(2),
            Err(TooHigh {
                h: 2,
                send_count: 1
            })
        );
        assert!(sm.stream_error_fits());
    }

    impl SmState {
        fn stream_error_fits(&self) -> bool {
            TooHigh {
                h: 2,
                send_count: self.send_count(),
            }
            .stream_error_xml()
            .contains("h='2' send-count='1'")
        }
    }

    #[test]
    fn counters_wrap_at_two_to_the_32() {
        let mut sm = SmState::starting_at(None, u32::MAX - 1, u32::MAX - 2);
        sm.on_handled();
        assert_eq!(sm.handled(), u32::MAX);
        sm.on_handled();
        assert_eq!(sm.handled(), 0);
        sm.on_handled();
        assert_eq!(sm.handled(), 1);
        for i in 0..6 {
            sm.on_sent(Outbound::Stanza(std::sync::Arc::new(msg(i))));
        }
        // Sent numbers: MAX-1, MAX, 0, 1, 2, 3.
        assert_eq!(sm.send_count(), 3);
        assert_eq!(sm.on_ack(u32::MAX), Ok(2));
        assert_eq!(sm.on_ack(1), Ok(2));
        assert_eq!(
            sm.on_ack(4),
            Err(TooHigh {
                h: 4,
                send_count: 3
            })
        );
        assert_eq!(sm.on_ack(3), Ok(2));
        assert_eq!(sm.unacked_len(), 0);
        // An h from before the window (older than the last ack) is too high, not a rewind.
        assert!(sm.on_ack(u32::MAX).is_err());
    }

    #[test]
    fn one_ack_request_at_a_time() {
        let mut sm = SmState::new(None);
        assert!(!sm.should_request_ack());
        sm.on_sent(Outbound::Stanza(std::sync::Arc::new(msg(0))));
        assert!(sm.should_request_ack());
        sm.on_sent(Outbound::Stanza(std::sync::Arc::new(msg(1))));
        assert!(!sm.should_request_ack());
        sm.on_ack(1).unwrap();
        assert!(sm.should_request_ack());
    }

    #[test]
    fn shared_stanzas_are_kept_shared_and_addressed_when_sent_again() {
        let mut sm = SmState::new(None);
        let shared = std::sync::Arc::new(starling_core::SharedStanza::new(
            "<message xmlns='jabber:client' type='groupchat' from='r@muc.example/n'>\
             <body>x</body></message>"
                .parse()
                .unwrap(),
        ));
        let to = Jid::parse("alice@example.org/phone").unwrap();
        sm.on_sent(Outbound::Shared(shared.clone(), to.clone()));
        let again = sm.retransmission("example.org");
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].attr("to"), Some(to.as_str()));
        assert!(again[0].get_child("delay", ns::DELAY).is_some());
        let left = sm.take_unacked();
        assert_eq!(left, vec![shared.addressed(&to)]);
    }

    #[test]
    fn registry_checks_the_account() {
        let r = Registry::default();
        let alice = Jid::parse("alice@example.org/phone").unwrap();
        let (id, _rx) = r.register(alice.clone());
        assert!(id.len() >= 24);
        let bob = Jid::parse("bob@example.org").unwrap();
        assert_eq!(r.lookup(&id, &bob).err(), Some(LookupError::NotYours));
        assert_eq!(
            r.lookup("nope", &alice.bare()).err(),
            Some(LookupError::NotFound)
        );
        let (owner, _tx) = r.lookup(&id, &alice.bare()).unwrap();
        assert_eq!(owner, alice);
        r.remove(&id);
        assert_eq!(r.len(), 0);
    }

    #[test]
    fn stamps_are_xep_0082() {
        assert_eq!(utc_stamp(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(utc_stamp(1_031_699_305_123), "2002-09-10T23:08:25.123Z");
    }
}
