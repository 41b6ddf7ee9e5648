//! `muc`: rooms of O occupants, S senders each -> groupchat messages fanned out/s (XEP-0045).
//!
//! Room r is `{prefix}room{r}@{service}`, held by accounts r*O .. r*O+O-1, each with its
//! localpart as nickname. The first of them creates the room the standard way (§10.1.2): it
//! joins, and when the room answers with status 201 (new, locked) it submits an empty
//! `muc#owner` form, which makes it an instant room with the service's default
//! configuration. Then the others join (at most `--concurrency` at a time), asking for no
//! history; a join ends with the occupant's own presence (status 110). The server's room
//! limits must admit O occupants (Starling: `[muc] max_occupants`; ejabberd: `max_users`;
//! Prosody: `muc_max_occupants`). Filling a room costs O^2 presence stanzas (each join brings
//! the presence of every occupant already there and is broadcast to all of them): for 1,000
//! occupants about a million, which Prosody 0.12 took ~275 s for here (`join_s`).
//!
//! Then the first S occupants of every room send `<message type='groupchat'/>` with a body of
//! `SEQ MICROS`, each with at most W messages not yet delivered to all O occupants (the
//! sender's own echo counts: a room reflects a message to every occupant). Every occupant
//! counts what it receives per sender ([`super::fanout`]).

use starling_proto::Attr;
use std::sync::Arc;
use std::time::Duration;

use minidom::Element;
use starling_client::{Client, Stanza};
use starling_proto::ns;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::fanout::{self, Fan, FanReport, Seen};
use super::presence::attr;
use super::report::Summary;
use super::{close_all, open_all, BenchOptions, CONNECT_TIMEOUT, DRAIN};

const NS_MUC: &str = "http://jabber.org/protocol/muc";
const NS_MUC_USER: &str = "http://jabber.org/protocol/muc#user";
const NS_MUC_OWNER: &str = "http://jabber.org/protocol/muc#owner";
const NS_DATA: &str = "jabber:x:data";
/// Longest wait for one join: in a room of 1,000 a join brings up to 1,000 presences, and
/// Prosody 0.12 took ~9 s per join at 32 joins at once near that size.
const JOIN_TIMEOUT: Duration = Duration::from_secs(120);

/// What `muc` is asked to do.
#[derive(Debug, Clone)]
pub struct MucOptions {
    /// The MUC service's domain (e.g. `conference.localhost`).
    pub service: String,
    pub rooms: usize,
    pub occupants: usize,
    /// Senders per room.
    pub senders: usize,
    /// Messages per sender not yet delivered to every occupant.
    pub window: u64,
    /// Most messages per sender.
    pub max_messages: u64,
}

impl MucOptions {
    /// One room of `occupants` on `service`, one sender, window 16.
    pub fn new(service: &str, occupants: usize) -> MucOptions {
        MucOptions {
            service: service.to_owned(),
            rooms: 1,
            occupants,
            senders: 1,
            window: 16,
            max_messages: 1_000_000,
        }
    }
}

/// `muc` figures.
#[derive(Debug, Clone)]
pub struct MucReport {
    pub rooms: usize,
    pub occupants: usize,
    pub senders: usize,
    /// From the first join to the last occupant's own presence.
    pub join: Duration,
    /// sent = messages, expected = sent x occupants, delivered = copies received.
    pub messages: FanReport,
}

impl MucReport {
    pub fn summary(&self) -> Summary {
        let mut s = Summary::default();
        s.line("rooms", self.rooms)
            .line("occupants per room", self.occupants)
            .line("senders per room", self.senders)
            .line("joins", format!("{:.3} s", self.join.as_secs_f64()));
        s.field("rooms", self.rooms)
            .field("occupants", self.occupants)
            .field("senders", self.senders)
            .field("join_s", format!("{:.3}", self.join.as_secs_f64()));
        self.messages
            .add_to(&mut s, "deliveries", "deliveries_per_sec");
        s
    }
}

/// Where the run is, for the occupant tasks.
#[derive(Clone)]
enum Phase {
    Joining,
    Run(Arc<Fan>),
    Abort,
}

/// The rooms are created and filled, then the senders send for the duration (or
/// `max_messages` each).
pub async fn muc(opts: &BenchOptions, m: &MucOptions) -> Result<MucReport, String> {
    opts.check()?;
    if m.rooms == 0 || m.occupants < 2 || m.senders == 0 || m.window == 0 || m.max_messages == 0 {
        return Err(
            "rooms, senders, window and max messages must be at least 1, occupants 2".into(),
        );
    }
    if m.senders > m.occupants {
        return Err("more senders than occupants".into());
    }
    let accounts = m.rooms * m.occupants;
    if opts.users < accounts {
        return Err(format!(
            "{} rooms of {} need {accounts} accounts, --users is {}",
            m.rooms, m.occupants, opts.users
        ));
    }
    let clients = open_all(opts, 0..accounts).await?;
    let join_start = Instant::now();
    let (phase_tx, phase_rx) = watch::channel(Phase::Joining);
    let (joined_tx, mut joined_rx) = mpsc::channel::<Result<(), String>>(accounts);
    let gate = Arc::new(Semaphore::new(opts.concurrency));
    // Each room's owner says when the room is unlocked. Every receiver exists before any task
    // starts: a watch sender with no receiver drops the value, so a receiver made later by
    // the task itself could miss an owner that was quick (CI saw that: the others waited
    // out JOIN_TIMEOUT).
    let (mut unlock, unlocked) = room_gates(m.rooms);
    let mut tasks = JoinSet::new();
    for (i, client) in clients.into_iter().enumerate() {
        let r = i / m.occupants;
        let room = format!("{}room{r}@{}", opts.prefix, m.service);
        let owner = i % m.occupants == 0;
        let ready = if owner {
            Ready::Owner(unlock[r].take().expect("one owner per room"))
        } else {
            Ready::Wait(unlocked[r].clone())
        };
        let task = Occupant {
            me: i,
            nick: opts.localpart(i),
            room,
            sending: i % m.occupants < m.senders,
            opts: opts.clone(),
        };
        tasks.spawn(task.run(
            client,
            ready,
            gate.clone(),
            joined_tx.clone(),
            phase_rx.clone(),
        ));
    }
    drop(joined_tx);
    let mut problem = None;
    for _ in 0..accounts {
        match joined_rx.recv().await {
            Some(Ok(())) => {}
            Some(Err(e)) => {
                problem = Some(e);
                break;
            }
            None => {
                problem = Some("an occupant task ended".into());
                break;
            }
        }
    }
    let join = join_start.elapsed();
    let fan = Arc::new(Fan::new(
        accounts,
        m.rooms * m.senders,
        m.occupants as u64,
        m.window,
        m.max_messages,
        opts.duration,
        DRAIN,
    ));
    let _ = phase_tx.send(if problem.is_some() {
        Phase::Abort
    } else {
        Phase::Run(fan.clone())
    });
    let mut tallies = Vec::new();
    let mut open = Vec::new();
    while let Some(r) = tasks.join_next().await {
        let (client, tally) = r.map_err(|e| e.to_string())?;
        open.push(client);
        tallies.extend(tally);
    }
    close_all(open, opts.concurrency).await;
    if let Some(e) = problem {
        return Err(format!("muc joins: {e}"));
    }
    Ok(MucReport {
        rooms: m.rooms,
        occupants: m.occupants,
        senders: m.senders,
        join,
        messages: FanReport::of(&fan, tallies),
    })
}

/// One occupant's part.
struct Occupant {
    me: usize,
    nick: String,
    room: String,
    sending: bool,
    opts: BenchOptions,
}

type Tally = Option<(fanout::FanTally, Option<String>)>;

/// One unlock channel per room: the owner's sender, and a receiver the others clone.
fn room_gates(rooms: usize) -> (Vec<Option<watch::Sender<bool>>>, Vec<watch::Receiver<bool>>) {
    (0..rooms)
        .map(|_| {
            let (tx, rx) = watch::channel(false);
            (Some(tx), rx)
        })
        .unzip()
}

/// An occupant's part in the room's creation.
enum Ready {
    /// The first occupant creates the room, then says so (or fails, and drops the sender,
    /// which the others see at once).
    Owner(watch::Sender<bool>),
    /// The others wait for the owner before they join.
    Wait(watch::Receiver<bool>),
}

impl Occupant {
    async fn run(
        self,
        mut client: Client,
        ready: Ready,
        gate: Arc<Semaphore>,
        joined: mpsc::Sender<Result<(), String>>,
        mut phase: watch::Receiver<Phase>,
    ) -> (Client, Tally) {
        let joined_ok = match ready {
            Ready::Owner(unlock) => {
                let r = self.join(&mut client).await;
                if r.is_ok() {
                    // `send_replace` stores the value even when no receiver is left
                    // (`send` would not).
                    unlock.send_replace(true);
                }
                r
            }
            Ready::Wait(mut ready) => {
                // Wait (reading, so nothing piles up) until the owner has unlocked the room.
                let waited = tokio::time::timeout(JOIN_TIMEOUT, async {
                loop {
                    if *ready.borrow_and_update() {
                        return Ok(());
                    }
                    tokio::select! {
                        r = ready.changed() => r.map_err(|_| "the room's owner failed".to_owned())?,
                        r = client.recv() => { r.map_err(|e| e.to_string())?; }
                    }
                }
            })
            .await
            .map_err(|_| format!("{}: the room was not created in time", self.room))
            .and_then(|r| r);
                match waited {
                    Ok(()) => {
                        let permit = gate.acquire().await;
                        let r = self.join(&mut client).await;
                        drop(permit);
                        r
                    }
                    Err(e) => Err(e),
                }
            }
        };
        let failed = joined_ok.is_err();
        let _ = joined.send(joined_ok).await;
        if failed {
            return (client, None);
        }
        // Read until the run starts, dropping presences of later joins but keeping the
        // senders' messages: a sender can start (and its message reach us) before this task
        // sees the phase change. (Dropping them here was counted as loss: 235 of 1,794,000
        // deliveries in a room of 1,000.)
        let mut early = Vec::new();
        let fan = loop {
            let current = phase.borrow_and_update().clone();
            match current {
                Phase::Run(fan) => break fan,
                Phase::Abort => return (client, None),
                Phase::Joining => {}
            }
            tokio::select! {
                r = phase.changed() => if r.is_err() { return (client, None) },
                r = client.recv() => match r {
                    Ok(st) => {
                        if !matches!(classify(&self.opts, &self.room, &st), Seen::Other) {
                            early.push(st);
                        }
                    }
                    Err(_) => return (client, None),
                },
            }
        };
        let room = self.room.clone();
        let opts = self.opts.clone();
        let to = self.room.clone();
        let (client, t, p) = fanout::node(
            client,
            self.me,
            self.sending,
            fan,
            early,
            move |seq, micros| {
                Element::builder("message", ns::CLIENT)
                    .attr(attr("to"), to.as_str())
                    .attr(attr("type"), "groupchat")
                    .append(Element::builder("body", ns::CLIENT).append(format!("{seq} {micros}")))
                    .build()
            },
            move |st: &Stanza| classify(&opts, &room, st),
        )
        .await;
        (client, Some((t, p)))
    }

    /// Joins the room (creating it as an instant room if new) and waits for our own presence.
    async fn join(&self, client: &mut Client) -> Result<(), String> {
        let occupant_jid = format!("{}/{}", self.room, self.nick);
        let join = Element::builder("presence", ns::CLIENT)
            .attr(attr("to"), occupant_jid.as_str())
            .append(
                Element::builder("x", NS_MUC)
                    .append(Element::builder("history", NS_MUC).attr(attr("maxstanzas"), "0")),
            )
            .build();
        client
            .send(&join)
            .await
            .map_err(|e| format!("{occupant_jid}: {e}"))?;
        let own = tokio::time::timeout(JOIN_TIMEOUT, async {
            loop {
                let st = client.recv().await.map_err(|e| e.to_string())?;
                if st.name() != "presence" || st.attribute("from") != Some(occupant_jid.as_str()) {
                    continue;
                }
                if st.attribute("type") == Some("error") {
                    return Err(format!(
                        "join refused: {}",
                        starling_proto::writer::element_to_string(&st)
                    ));
                }
                let codes: Vec<String> = st
                    .get_child("x", NS_MUC_USER)
                    .map(|x| {
                        x.children()
                            .filter(|c| c.is("status", NS_MUC_USER))
                            .filter_map(|c| c.attribute("code").map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default();
                if codes.iter().any(|c| c == "110") || st.attribute("type").is_none() {
                    return Ok(codes);
                }
            }
        })
        .await
        .map_err(|_| format!("{occupant_jid}: no answer to the join"))?
        .map_err(|e| format!("{occupant_jid}: {e}"))?;
        if own.iter().any(|c| c == "201") {
            // A new, locked room: accept the default configuration (instant room, §10.1.2).
            let form = Element::builder("query", NS_MUC_OWNER)
                .append(Element::builder("x", NS_DATA).attr(attr("type"), "submit"))
                .build();
            let answer = tokio::time::timeout(CONNECT_TIMEOUT, client.iq("set", &self.room, form))
                .await
                .map_err(|_| format!("{}: no answer to the instant-room form", self.room))?
                .map_err(|e| format!("{}: {e}", self.room))?;
            if answer.attribute("type") != Some("result") {
                return Err(format!(
                    "{}: instant room refused: {}",
                    self.room,
                    starling_proto::writer::element_to_string(&answer)
                ));
            }
        }
        Ok(())
    }
}

fn classify(opts: &BenchOptions, room: &str, st: &Stanza) -> Seen {
    if st.name() != "message" {
        return Seen::Other;
    }
    let Some((from_room, nick)) = st.attribute("from").and_then(|f| f.split_once('/')) else {
        return Seen::Other;
    };
    if from_room != room {
        return Seen::Other;
    }
    if st.attribute("type") == Some("error") {
        return Seen::Error;
    }
    let Some(body) = st.get_child("body", ns::CLIENT) else {
        // The subject, or anything else without a body.
        return Seen::Other;
    };
    let from = nick
        .strip_prefix(&opts.prefix)
        .and_then(|n| n.parse::<usize>().ok());
    match (from, super::chat::parse_body(&body.text())) {
        (Some(from), Some((seq, sent_at))) => Seen::Numbered { from, seq, sent_at },
        _ => Seen::Error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An owner quicker than every other task still unlocks them: the value it stores
    /// before anyone waits is there when they look. (With receivers made by each task from
    /// a shared sender, `send` found none and dropped the value.)
    #[tokio::test]
    async fn an_owner_that_finishes_first_still_unlocks_the_room() {
        let (mut unlock, unlocked) = room_gates(2);
        let owner = unlock[0].take().unwrap();
        owner.send_replace(true);
        drop(owner);
        let mut late = unlocked[0].clone();
        assert!(*late.borrow_and_update());
        // The other room's owner fails: its waiters hear it at once rather than at the
        // join timeout.
        drop(unlock[1].take().unwrap());
        let mut waiter = unlocked[1].clone();
        assert!(!*waiter.borrow_and_update());
        assert!(waiter.changed().await.is_err());
    }
}
