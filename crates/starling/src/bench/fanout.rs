//! One stanza, many receivers: the measuring loop `presence` and `muc` share.
//!
//! Every session runs one [`node`] task that receives and, if it is a sender, also sends
//! numbered stanzas (`SEQ MICROS` in a status or body). A sender keeps at most `window`
//! stanzas not yet seen by all `fanout` receivers: [`Fan`] counts, per sender, the distinct
//! deliveries receivers report. Receivers track every (sender, seq) they see, so loss,
//! duplication and reordering are counted per sender as in `chat`. The run ends when every
//! sender has stopped (count or deadline) and every delivery has arrived, or at the drain
//! deadline.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use starling_client::{Client, Stanza};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::chat::{Mark, SeqBits};
use super::report::{micros, rate, Percentiles, Summary};

/// How often a waiting node re-checks the deadline and the end condition.
const TICK: Duration = Duration::from_millis(50);

/// One sender's counters.
#[derive(Default)]
struct Slot {
    /// Distinct deliveries of this sender's stanzas, at all receivers.
    delivered: AtomicU64,
    /// Receivers -> sender: the window may have room.
    room: Notify,
}

/// The run's shared state.
pub(crate) struct Fan {
    /// Indexed by account index; only senders' slots are used.
    slots: Vec<Slot>,
    senders: usize,
    senders_done: AtomicUsize,
    /// Sum over finished senders of sent x fanout.
    expected: AtomicU64,
    /// Distinct deliveries so far, all senders.
    delivered: AtomicU64,
    /// Receivers per stanza.
    pub fanout: u64,
    pub window: u64,
    pub max_stanzas: u64,
    pub base: Instant,
    pub deadline: Instant,
    pub drain_deadline: Instant,
}

impl Fan {
    /// `accounts` slots, `senders` of which send; `fanout` receivers per stanza.
    pub fn new(
        accounts: usize,
        senders: usize,
        fanout: u64,
        window: u64,
        max_stanzas: u64,
        duration: Duration,
        drain: Duration,
    ) -> Fan {
        let base = Instant::now();
        Fan {
            slots: (0..accounts).map(|_| Slot::default()).collect(),
            senders,
            senders_done: AtomicUsize::new(0),
            expected: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            fanout,
            window,
            max_stanzas,
            base,
            deadline: base + duration,
            drain_deadline: base + duration + drain,
        }
    }

    fn all_delivered(&self) -> bool {
        self.senders_done.load(Ordering::Acquire) == self.senders
            && self.delivered.load(Ordering::Acquire) >= self.expected.load(Ordering::Acquire)
    }
}

/// What a node makes of one stanza.
pub(crate) enum Seen {
    /// A numbered stanza from the sender with this account index.
    Numbered { from: usize, seq: u64, sent_at: u64 },
    /// An error stanza, or a numbered stanza that does not parse.
    Error,
    /// Anything else (joins, probes, subjects...): ignored.
    Other,
}

/// What one node saw and sent.
pub(crate) struct FanTally {
    /// Stanzas this node sent (0 for a pure receiver).
    pub sent: u64,
    pub distinct: u64,
    pub duplicated: u64,
    pub reordered: u64,
    pub errors: u64,
    pub latencies: Vec<u64>,
    pub last: Instant,
}

/// Runs one session until the end condition; returns the client (still open) with its
/// figures and the stream problem that ended it early, if any.
///
/// `early`: stanzas the caller read before the run started (a node learns of the start
/// through a channel, and a fast sender's first stanzas can reach it before it does); they
/// are counted first, as if they had just arrived.
pub(crate) async fn node(
    mut client: Client,
    me: usize,
    sending: bool,
    fan: Arc<Fan>,
    early: Vec<Stanza>,
    make: impl Fn(u64, u64) -> Stanza,
    classify: impl Fn(&Stanza) -> Seen,
) -> (Client, FanTally, Option<String>) {
    let mut t = FanTally {
        sent: 0,
        distinct: 0,
        duplicated: 0,
        reordered: 0,
        errors: 0,
        latencies: Vec::new(),
        last: fan.base,
    };
    let mut bits: HashMap<usize, SeqBits> = HashMap::new();
    let mut sending = sending;
    let mut problem = None;
    let slot = &fan.slots[me];
    for stanza in &early {
        count(&fan, &mut t, &mut bits, classify(stanza));
    }
    loop {
        if sending {
            let now = Instant::now();
            if t.sent >= fan.max_stanzas || now >= fan.deadline {
                sending = false;
                fan.expected
                    .fetch_add(t.sent * fan.fanout, Ordering::AcqRel);
                fan.senders_done.fetch_add(1, Ordering::AcqRel);
            } else {
                let done_msgs = slot.delivered.load(Ordering::Acquire) / fan.fanout;
                let in_flight = t.sent.saturating_sub(done_msgs);
                let room = fan
                    .window
                    .saturating_sub(in_flight)
                    .min(fan.max_stanzas - t.sent);
                if room > 0 {
                    for _ in 0..room {
                        client.queue(&make(t.sent, micros(fan.base.elapsed())));
                        t.sent += 1;
                    }
                    if let Err(e) = client.flush().await {
                        problem = Some(e.to_string());
                        break;
                    }
                    continue;
                }
            }
        }
        if !sending && fan.all_delivered() {
            break;
        }
        if Instant::now() >= fan.drain_deadline {
            break;
        }
        let wake = if sending {
            fan.deadline.min(Instant::now() + TICK)
        } else {
            Instant::now() + TICK
        };
        let stanza = tokio::select! {
            r = client.recv() => match r {
                Ok(s) => s,
                Err(e) => {
                    problem = Some(e.to_string());
                    break;
                }
            },
            _ = slot.room.notified(), if sending => continue,
            _ = tokio::time::sleep_until(wake) => continue,
        };
        count(&fan, &mut t, &mut bits, classify(&stanza));
    }
    if sending {
        // Ended early (a stream problem): what was sent still counts as expected.
        fan.expected
            .fetch_add(t.sent * fan.fanout, Ordering::AcqRel);
        fan.senders_done.fetch_add(1, Ordering::AcqRel);
    }
    (client, t, problem)
}

/// Counts one received stanza: a numbered one once per (sender, seq), with its latency, and
/// tells its sender's window.
fn count(fan: &Fan, t: &mut FanTally, bits: &mut HashMap<usize, SeqBits>, seen: Seen) {
    match seen {
        Seen::Other => {}
        Seen::Error => t.errors += 1,
        Seen::Numbered { from, seq, sent_at } => {
            let Some(sender) = fan.slots.get(from) else {
                t.errors += 1;
                return;
            };
            let now = micros(fan.base.elapsed());
            match bits.entry(from).or_default().mark(seq) {
                Mark::Duplicate => {
                    t.duplicated += 1;
                    return;
                }
                Mark::New { reordered } => t.reordered += u64::from(reordered),
            }
            t.distinct += 1;
            t.latencies.push(now.saturating_sub(sent_at));
            t.last = Instant::now();
            sender.delivered.fetch_add(1, Ordering::AcqRel);
            fan.delivered.fetch_add(1, Ordering::AcqRel);
            sender.room.notify_one();
        }
    }
}

/// The figures of a fan-out run.
#[derive(Debug, Clone, Default)]
pub struct FanReport {
    pub sent: u64,
    /// sent x fanout.
    pub expected: u64,
    pub delivered: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub reordered: u64,
    pub errors: u64,
    /// From the start of sending to the last delivery.
    pub elapsed: Duration,
    pub per_sec: f64,
    pub latency: Percentiles,
    /// Stream problems (a session closed early), with the first.
    pub problems: usize,
    pub first_problem: Option<String>,
}

impl FanReport {
    pub(crate) fn of(fan: &Fan, tallies: Vec<(FanTally, Option<String>)>) -> FanReport {
        let mut r = FanReport::default();
        let mut latencies = Vec::new();
        let mut last = fan.base;
        for (t, p) in tallies {
            r.sent += t.sent;
            r.delivered += t.distinct;
            r.duplicated += t.duplicated;
            r.reordered += t.reordered;
            r.errors += t.errors;
            latencies.extend(t.latencies);
            last = last.max(t.last);
            if let Some(p) = p {
                r.problems += 1;
                r.first_problem.get_or_insert(p);
            }
        }
        r.expected = r.sent * fan.fanout;
        r.lost = r.expected.saturating_sub(r.delivered);
        r.elapsed = last - fan.base;
        r.per_sec = rate(r.delivered, r.elapsed);
        r.latency = Percentiles::of(latencies);
        r
    }

    /// Human lines and fields; the rate is called `rate_key`.
    pub(crate) fn add_to(&self, s: &mut Summary, unit: &str, rate_key: &'static str) {
        s.line("sent", self.sent)
            .line("expected deliveries", self.expected)
            .line("delivered", self.delivered)
            .line("elapsed", format!("{:.3} s", self.elapsed.as_secs_f64()))
            .line(&format!("{unit}/s"), format!("{:.1}", self.per_sec));
        s.field("sent", self.sent)
            .field("expected", self.expected)
            .field("delivered", self.delivered)
            .field("elapsed_s", format!("{:.6}", self.elapsed.as_secs_f64()))
            .field(rate_key, format!("{:.3}", self.per_sec));
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
        if let Some(p) = &self.first_problem {
            s.line("stream problems", format!("{} (first: {p})", self.problems));
        }
    }
}
