//! `chat`: P pairs (`{prefix}{2i}` sends to `{prefix}{2i+1}`); each sender keeps at most W
//! messages in flight; the body carries a sequence number and a send timestamp; the receiver
//! checks order -> delivered/s, p50/p99/p999 latency, lost/duplicated/reordered.
//!
//! With `--rate R` the senders are paced: R messages/s in all, shared evenly, each sender
//! writing message `seq` when it falls due at `seq / (R / P)` seconds after the start (an
//! open-loop schedule: a late sender catches up at once rather than shifting the rest), and
//! still never more than the window in flight. This measures latency at a fixed offered
//! load, such as half of a server's peak (issue 7: p99 under 2 ms at half the peak rate).
//!
//! The pair bookkeeping ([`PairState`], [`SeqTally`]) and the report are shared with `relay`,
//! which drives the same pairs, window and message bytes through a byte relay, and with
//! `archive` and `churn`, which run `chat` as a phase.

use starling_proto::Attr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use starling_client::{chat_message, Client};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::report::{micros, rate, Percentiles, Summary};
use super::{close_all, open_many, BenchOptions, DRAIN};

/// `chat` figures (also `relay`'s).
#[derive(Debug, Clone)]
pub struct ChatReport {
    pub pairs: usize,
    pub window: u64,
    pub sent: u64,
    pub delivered: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub reordered: u64,
    /// Message errors and unparseable bodies received.
    pub errors: u64,
    /// From the first send to the last delivery.
    pub elapsed: Duration,
    pub messages_per_sec: f64,
    pub latency: Percentiles,
    /// The offered load in messages/s when the senders were paced (`--rate`).
    pub offered_per_sec: Option<u64>,
}

impl ChatReport {
    pub fn summary(&self) -> Summary {
        let mut s = Summary::default();
        s.line("pairs", self.pairs)
            .line("window", self.window)
            .line("sent", self.sent)
            .line("delivered", self.delivered)
            .line("elapsed", format!("{:.3} s", self.elapsed.as_secs_f64()))
            .line("delivered/s", format!("{:.1}", self.messages_per_sec));
        if let Some(offered) = self.offered_per_sec {
            s.line("offered/s", offered)
                .field("offered_per_sec", offered);
        }
        s.field("pairs", self.pairs)
            .field("window", self.window)
            .field("sent", self.sent)
            .field("delivered", self.delivered)
            .field("elapsed_s", format!("{:.6}", self.elapsed.as_secs_f64()))
            .field("messages_per_sec", format!("{:.3}", self.messages_per_sec));
        s.latency(
            "latency",
            ["p50_us", "p99_us", "p999_us", "max_us"],
            &self.latency,
        );
        s.line("lost", self.lost)
            .line("duplicated", self.duplicated)
            .line("reordered", self.reordered)
            .line("errors", self.errors);
        s.field("lost", self.lost)
            .field("duplicated", self.duplicated)
            .field("reordered", self.reordered)
            .field("errors", self.errors);
        s
    }
}

/// An open-loop send schedule for one sender: message `seq` falls due `seq / per_sec`
/// seconds after the start.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pace {
    per_sec: f64,
}

impl Pace {
    /// `total` messages/s shared evenly by `senders`.
    pub fn shared(total: u64, senders: usize) -> Pace {
        Pace {
            per_sec: total as f64 / senders.max(1) as f64,
        }
    }

    /// How many messages have fallen due `elapsed` after the start (message 0 at once).
    pub fn due(&self, elapsed: Duration) -> u64 {
        (elapsed.as_secs_f64() * self.per_sec) as u64 + 1
    }

    /// When message `seq` falls due, from the start.
    pub fn at(&self, seq: u64) -> Duration {
        Duration::from_secs_f64(seq as f64 / self.per_sec)
    }
}

/// What bounds one sender: messages in flight, messages in all, and the schedule if paced.
#[derive(Debug, Clone, Copy)]
struct SendBounds {
    window: u64,
    max_messages: u64,
    pace: Option<Pace>,
}

/// Shared between one pair's sender and receiver (same process, so no clock skew).
#[derive(Default)]
pub(crate) struct PairState {
    /// Distinct messages the receiver has seen.
    pub received: AtomicU64,
    /// Messages the sender has written.
    pub sent: AtomicU64,
    /// The sender has stopped; `sent` is final.
    pub done: AtomicBool,
    /// Receiver -> sender: the window has room.
    pub room: Notify,
    /// Sender -> receiver: `done` was set.
    pub finished: Notify,
}

impl PairState {
    /// Messages the sender may write now.
    pub fn room_for(&self, seq: u64, window: u64, max_messages: u64) -> u64 {
        let in_flight = seq - self.received.load(Ordering::Acquire);
        window.saturating_sub(in_flight).min(max_messages - seq)
    }

    /// The sender stops; `seq` messages were written.
    pub fn finish(&self, seq: u64) {
        self.sent.store(seq, Ordering::Release);
        self.done.store(true, Ordering::Release);
        self.finished.notify_one();
    }

    /// Whether the receiver has everything the (finished) sender wrote.
    pub fn all_received(&self, distinct: u64) -> bool {
        self.done.load(Ordering::Acquire) && distinct >= self.sent.load(Ordering::Acquire)
    }
}

/// What one receiver saw of one sender's numbered messages.
pub(crate) struct SeqTally {
    pub distinct: u64,
    pub duplicated: u64,
    pub reordered: u64,
    /// Error stanzas and bodies that are not `SEQ MICROS`.
    pub errors: u64,
    /// Microseconds from send to receipt, one per distinct message.
    pub latencies: Vec<u64>,
    /// When the last distinct message arrived.
    pub last: Instant,
    bits: SeqBits,
}

/// Which sequence numbers of one sender arrived: one bit each (growing with the highest),
/// and the highest so far.
#[derive(Default)]
pub(crate) struct SeqBits {
    seen: Vec<u64>,
    highest: Option<u64>,
}

/// What [`SeqBits::mark`] made of a sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mark {
    /// Seen before.
    Duplicate,
    /// New; `reordered` when it arrived after a higher one. (Gaps that never fill are
    /// counted as lost by the caller.)
    New { reordered: bool },
}

impl SeqBits {
    pub(crate) fn mark(&mut self, seq: u64) -> Mark {
        let word = (seq / 64) as usize;
        let bit = 1u64 << (seq % 64);
        if word >= self.seen.len() {
            self.seen.resize(word + 1, 0);
        }
        if self.seen[word] & bit != 0 {
            return Mark::Duplicate;
        }
        self.seen[word] |= bit;
        let reordered = self.highest.is_some_and(|h| seq < h);
        self.highest = Some(self.highest.map_or(seq, |h| h.max(seq)));
        Mark::New { reordered }
    }
}

impl SeqTally {
    pub fn new(base: Instant) -> SeqTally {
        SeqTally {
            distinct: 0,
            duplicated: 0,
            reordered: 0,
            errors: 0,
            latencies: Vec::new(),
            last: base,
            bits: SeqBits::default(),
        }
    }

    /// Records message `seq`, sent at `sent_at` and received at `now` (microseconds since
    /// the common base); returns whether it was new.
    pub fn observe(&mut self, seq: u64, sent_at: u64, now: u64) -> bool {
        match self.bits.mark(seq) {
            Mark::Duplicate => {
                self.duplicated += 1;
                return false;
            }
            Mark::New { reordered } => self.reordered += u64::from(reordered),
        }
        self.distinct += 1;
        self.latencies.push(now.saturating_sub(sent_at));
        self.last = Instant::now();
        true
    }
}

/// `SEQ MICROS` (the body every bench message carries, with maybe more words after).
pub(crate) fn parse_body(text: &str) -> Option<(u64, u64)> {
    let mut words = text.split(' ');
    let seq = words.next()?.parse().ok()?;
    let ts = words.next()?.parse().ok()?;
    Some((seq, ts))
}

/// Adds up what the senders wrote and the receivers saw.
pub(crate) fn report(
    pairs: usize,
    window: u64,
    sent: u64,
    tallies: Vec<SeqTally>,
    base: Instant,
) -> ChatReport {
    let mut r = ChatReport {
        pairs,
        window,
        sent,
        delivered: 0,
        lost: 0,
        duplicated: 0,
        reordered: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        messages_per_sec: 0.0,
        latency: Percentiles::default(),
        offered_per_sec: None,
    };
    let mut latencies = Vec::new();
    let mut last = base;
    for t in tallies {
        r.delivered += t.distinct;
        r.duplicated += t.duplicated;
        r.reordered += t.reordered;
        r.errors += t.errors;
        latencies.extend(t.latencies);
        last = last.max(t.last);
    }
    r.lost = sent.saturating_sub(r.delivered);
    r.elapsed = last - base;
    r.messages_per_sec = rate(r.delivered, r.elapsed);
    r.latency = Percentiles::of(latencies);
    r
}

/// Checks the chat arguments against the options.
pub(crate) fn check_pairs(
    opts: &BenchOptions,
    pairs: usize,
    window: u64,
    max_messages: u64,
) -> Result<(), String> {
    opts.check()?;
    if pairs == 0 || window == 0 || max_messages == 0 {
        return Err("pairs, window and max messages must be at least 1".into());
    }
    if opts.users < 2 * pairs {
        return Err(format!(
            "{pairs} pairs need {} accounts, --users is {}",
            2 * pairs,
            opts.users
        ));
    }
    Ok(())
}

/// `pairs` pairs exchange messages for the duration (or `max_messages` per sender), each
/// sender with at most `window` messages not yet received, and paced to `rate` messages/s
/// in all when given.
pub async fn chat(
    opts: &BenchOptions,
    pairs: usize,
    window: u64,
    max_messages: u64,
    rate: Option<u64>,
) -> Result<ChatReport, String> {
    check_pairs(opts, pairs, window, max_messages)?;
    if rate == Some(0) {
        return Err("--rate must be at least 1".into());
    }
    let bounds = SendBounds {
        window,
        max_messages,
        pace: rate.map(|r| Pace::shared(r, pairs)),
    };
    let (clients, failed, first_error) = open_many(opts, 0..2 * pairs).await?;
    if failed > 0 {
        close_all(clients, opts.concurrency).await;
        return Err(format!(
            "{failed} session(s) failed to open: {}",
            first_error.unwrap_or_default()
        ));
    }
    let base = Instant::now();
    let deadline = base + opts.duration;
    let mut senders = JoinSet::new();
    let mut receivers = JoinSet::new();
    let mut it = clients.into_iter();
    while let (Some(sender), Some(receiver)) = (it.next(), it.next()) {
        let state = Arc::new(PairState::default());
        let to = receiver.jid().as_str().to_owned();
        senders.spawn(send_loop(sender, to, state.clone(), base, deadline, bounds));
        receivers.spawn(receive_loop(receiver, state, base, deadline + DRAIN));
    }
    let mut report = collect(
        ("chat", "stream"),
        senders,
        receivers,
        (pairs, window),
        base,
    )
    .await?;
    report.offered_per_sec = rate;
    Ok(report)
}

/// Waits for the pairs' senders (messages written, or with the error that stopped them) and
/// receivers (their tallies), reports problems on stderr (`bench {scenario}: N {kind}
/// problem(s)`), and makes the report: what `chat` and `relay` share.
pub(crate) async fn collect(
    (scenario, kind): (&str, &str),
    mut senders: JoinSet<Result<u64, (u64, String)>>,
    mut receivers: JoinSet<(SeqTally, Option<String>)>,
    (pairs, window): (usize, u64),
    base: Instant,
) -> Result<ChatReport, String> {
    let mut sent = 0;
    let mut problems = Vec::new();
    while let Some(r) = senders.join_next().await {
        match r.map_err(|e| e.to_string())? {
            Ok(n) => sent += n,
            Err((n, e)) => {
                sent += n;
                problems.push(e);
            }
        }
    }
    let mut tallies = Vec::new();
    while let Some(r) = receivers.join_next().await {
        let (t, e) = r.map_err(|e| e.to_string())?;
        if let Some(e) = e {
            problems.push(e);
        }
        tallies.push(t);
    }
    if let Some(p) = problems.first() {
        eprintln!(
            "bench {scenario}: {} {kind} problem(s), first: {p}",
            problems.len()
        );
    }
    Ok(report(pairs, window, sent, tallies, base))
}

/// Returns how many messages were written (with the error that stopped it early, if any).
async fn send_loop(
    mut client: Client,
    to: String,
    state: Arc<PairState>,
    base: Instant,
    deadline: Instant,
    bounds: SendBounds,
) -> Result<u64, (u64, String)> {
    let SendBounds {
        window,
        max_messages,
        pace,
    } = bounds;
    let mut seq = 0u64;
    let mut outcome = Ok(());
    while seq < max_messages && Instant::now() < deadline {
        let window_room = state.room_for(seq, window, max_messages);
        let due = pace.map_or(u64::MAX, |p| p.due(base.elapsed()).saturating_sub(seq));
        let room = window_room.min(due);
        if room > 0 {
            for _ in 0..room {
                let body = format!("{seq} {}", micros(base.elapsed()));
                client.queue(&chat_message(&to, &body));
                seq += 1;
            }
            state.sent.store(seq, Ordering::Release);
            if let Err(e) = client.flush().await {
                outcome = Err(e.to_string());
                break;
            }
            continue;
        }
        // Waiting for the window, or (when it has room) for the next message to fall due.
        let wake = match pace {
            Some(p) if window_room > 0 => deadline.min(base + p.at(seq)),
            _ => deadline,
        };
        tokio::select! {
            _ = state.room.notified() => {}
            r = client.recv() => {
                // Nothing is expected here; anything but a stanza ends the run.
                if let Err(e) = r {
                    outcome = Err(e.to_string());
                    break;
                }
            }
            _ = tokio::time::sleep_until(wake) => {}
        }
    }
    state.finish(seq);
    let _ = client.close().await;
    outcome.map(|()| seq).map_err(|e| (seq, e))
}

async fn receive_loop(
    mut client: Client,
    state: Arc<PairState>,
    base: Instant,
    drain_deadline: Instant,
) -> (SeqTally, Option<String>) {
    let mut t = SeqTally::new(base);
    let mut problem = None;
    loop {
        if state.all_received(t.distinct) {
            break;
        }
        let stanza = tokio::select! {
            r = client.recv() => match r {
                Ok(s) => s,
                Err(e) => {
                    problem = Some(e.to_string());
                    break;
                }
            },
            _ = state.finished.notified() => continue,
            _ = tokio::time::sleep_until(drain_deadline) => break,
        };
        if stanza.name() != "message" {
            continue;
        }
        let now = micros(base.elapsed());
        let parsed = (stanza.attribute("type") != Some("error"))
            .then(|| stanza.get_child("body", starling_proto::ns::CLIENT))
            .flatten()
            .and_then(|b| parse_body(&b.text()));
        let Some((seq, sent_at)) = parsed else {
            t.errors += 1;
            continue;
        };
        if t.observe(seq, sent_at, now) {
            state.received.store(t.distinct, Ordering::Release);
            state.room.notify_one();
        }
    }
    let _ = client.close().await;
    (t, problem)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seq_bits_tell_duplicates_and_reordering() {
        let mut b = SeqBits::default();
        assert_eq!(b.mark(0), Mark::New { reordered: false });
        assert_eq!(b.mark(130), Mark::New { reordered: false });
        assert_eq!(b.mark(64), Mark::New { reordered: true });
        assert_eq!(b.mark(130), Mark::Duplicate);
        assert_eq!(b.mark(0), Mark::Duplicate);
        assert_eq!(b.mark(131), Mark::New { reordered: false });
    }

    #[test]
    fn a_pace_spreads_the_rate_over_the_senders() {
        // 1,000 messages/s over 4 senders: each has one due every 4 ms.
        let p = Pace::shared(1000, 4);
        assert_eq!(p.due(Duration::ZERO), 1);
        assert_eq!(p.due(Duration::from_micros(3_999)), 1);
        assert_eq!(p.due(Duration::from_millis(4)), 2);
        assert_eq!(p.due(Duration::from_secs(1)), 251);
        assert_eq!(p.at(0), Duration::ZERO);
        assert_eq!(p.at(250), Duration::from_secs(1));
        // Every message is due no later than `at` says.
        for seq in [1, 7, 100, 12_345] {
            assert!(p.due(p.at(seq)) > seq, "message {seq}");
        }
    }
}
