//! `presence`: accounts with K-contact rosters log in and change status -> presence stanzas
//! delivered/s (RFC 6121 §4).
//!
//! Accounts are used in groups of K+1 (`{prefix}0..{prefix}K` is the first group): every
//! member is a contact of every other with subscription `both`. The setup phase makes the
//! subscriptions with nothing but the standard exchange, so it works on any server: each
//! account reads its roster (`jabber:iq:roster`), sends `subscribe` to every group member it
//! is not yet subscribed to, answers every `subscribe` from a group member with `subscribed`,
//! and waits for the roster pushes that show `both` for all of them. A re-run finds the
//! rosters complete and sends nothing. Then the measured run: every account logs in
//! (the available presences from contacts that login brings are counted), and every account
//! changes status (`<show>away</show><status>SEQ MICROS</status>`), each with at most W
//! changes not yet seen by all K contacts ([`super::fanout`]).

use starling_proto::Attr;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use minidom::Element;
use starling_client::{Client, Stanza};
use starling_proto::ns;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::fanout::{self, Fan, FanReport, Seen};
use super::report::Summary;
use super::{close_all, open_all, BenchOptions, DRAIN, MAX_DURATION_SECS};

const NS_ROSTER: &str = "jabber:iq:roster";
/// How often a setup task re-checks whether everyone is done.
const SETUP_TICK: Duration = Duration::from_millis(100);

/// `presence` figures.
#[derive(Debug, Clone)]
pub struct PresenceReport {
    pub groups: usize,
    pub contacts: usize,
    /// groups x (contacts + 1).
    pub accounts: usize,
    /// `subscribe` requests sent in the setup phase (0 on a re-run).
    pub subscriptions_made: u64,
    pub setup: Duration,
    /// Available presences from contacts received while logging in (accounts x contacts
    /// when every contact's presence arrived: probes answered and broadcasts received).
    pub login_presences: u64,
    /// From the first login to the last such presence.
    pub login: Duration,
    /// The status changes: sent = changes, expected = changes x contacts.
    pub changes: FanReport,
    /// Whether the run stopped after the setup.
    pub setup_only: bool,
}

impl PresenceReport {
    pub fn summary(&self) -> Summary {
        let mut s = Summary::default();
        s.line("groups", self.groups)
            .line("contacts per account", self.contacts)
            .line("accounts", self.accounts)
            .line("subscriptions made", self.subscriptions_made)
            .line("setup", format!("{:.3} s", self.setup.as_secs_f64()))
            .line("login presences", self.login_presences)
            .line("login", format!("{:.3} s", self.login.as_secs_f64()));
        s.field("groups", self.groups)
            .field("contacts", self.contacts)
            .field("accounts", self.accounts)
            .field("subscriptions_made", self.subscriptions_made)
            .field("setup_s", format!("{:.3}", self.setup.as_secs_f64()))
            .field("login_presences", self.login_presences)
            .field("login_s", format!("{:.3}", self.login.as_secs_f64()));
        if !self.setup_only {
            s.line("status changes", self.changes.sent);
            s.field("changes", self.changes.sent);
            self.changes
                .add_to(&mut s, "presences", "presences_per_sec");
        }
        s
    }
}

/// The setup, the logins and `max_changes` status changes per account (or the duration).
pub async fn presence(
    opts: &BenchOptions,
    contacts: usize,
    window: u64,
    max_changes: u64,
    setup_only: bool,
) -> Result<PresenceReport, String> {
    opts.check()?;
    if contacts == 0 || window == 0 || max_changes == 0 {
        return Err("contacts, window and max changes must be at least 1".into());
    }
    let groups = opts.users / (contacts + 1);
    if groups == 0 {
        return Err(format!(
            "{contacts} contacts need groups of {} accounts, --users is {}",
            contacts + 1,
            opts.users
        ));
    }
    let accounts = groups * (contacts + 1);
    let started = Instant::now();
    let subscriptions_made = setup(opts, contacts, accounts).await?;
    let setup_time = started.elapsed();
    let mut report = PresenceReport {
        groups,
        contacts,
        accounts,
        subscriptions_made,
        setup: setup_time,
        login_presences: 0,
        login: Duration::ZERO,
        changes: FanReport::default(),
        setup_only,
    };
    if setup_only {
        return Ok(report);
    }

    // Logins: every account comes online; contacts already online see it, and it gets the
    // presence of those (probes).
    let login_start = Instant::now();
    let clients = open_all(opts, 0..accounts).await?;
    let login_deadline = Instant::now() + opts.duration;
    let mut tasks = JoinSet::new();
    for (i, client) in clients.into_iter().enumerate() {
        let opts = opts.clone();
        tasks.spawn(login_presences(client, opts, i, contacts, login_deadline));
    }
    let mut clients = Vec::with_capacity(accounts);
    let mut last = login_start;
    while let Some(r) = tasks.join_next().await {
        let (i, client, seen, at) = r.map_err(|e| e.to_string())?;
        report.login_presences += seen;
        last = last.max(at);
        clients.push((i, client));
    }
    report.login = last - login_start;
    clients.sort_by_key(|(i, _)| *i);

    // Status changes.
    let fan = Arc::new(Fan::new(
        accounts,
        accounts,
        contacts as u64,
        window,
        max_changes,
        opts.duration,
        DRAIN,
    ));
    let mut nodes = JoinSet::new();
    for (i, client) in clients {
        let opts = opts.clone();
        let fan = fan.clone();
        nodes.spawn(async move {
            let group = i / (contacts + 1);
            let opts2 = opts.clone();
            // Nodes start reading only here: what arrives earlier waits in the socket.
            fanout::node(
                client,
                i,
                true,
                fan,
                Vec::new(),
                status_change,
                move |st: &Stanza| classify(&opts2, st, i, contacts, group),
            )
            .await
        });
    }
    let mut tallies = Vec::new();
    let mut open = Vec::new();
    while let Some(r) = nodes.join_next().await {
        let (client, t, p) = r.map_err(|e| e.to_string())?;
        tallies.push((t, p));
        open.push(client);
    }
    report.changes = FanReport::of(&fan, tallies);
    close_all(open, opts.concurrency).await;
    Ok(report)
}

/// The account index of a full or bare JID `{prefix}{i}@{domain}...`.
fn index_of(opts: &BenchOptions, jid: &str) -> Option<usize> {
    let (local, rest) = jid.split_once('@')?;
    let domain = rest.split('/').next()?;
    if domain != opts.domain {
        return None;
    }
    local.strip_prefix(&opts.prefix)?.parse().ok()
}

fn classify(opts: &BenchOptions, st: &Stanza, me: usize, contacts: usize, group: usize) -> Seen {
    if st.name() != "presence" {
        return Seen::Other;
    }
    match st.attribute("type") {
        Some("error") => return Seen::Error,
        None => {}
        Some(_) => return Seen::Other,
    }
    let Some(from) = st.attribute("from").and_then(|f| index_of(opts, f)) else {
        return Seen::Other;
    };
    if from == me || from / (contacts + 1) != group {
        return Seen::Other;
    }
    let Some(status) = st.get_child("status", ns::CLIENT) else {
        // The login presence (no status): not a numbered change.
        return Seen::Other;
    };
    match super::chat::parse_body(&status.text()) {
        Some((seq, sent_at)) => Seen::Numbered { from, seq, sent_at },
        None => Seen::Error,
    }
}

fn status_change(seq: u64, micros: u64) -> Stanza {
    Element::builder("presence", ns::CLIENT)
        .append(Element::builder("show", ns::CLIENT).append("away"))
        .append(Element::builder("status", ns::CLIENT).append(format!("{seq} {micros}")))
        .build()
}

/// Reads until every contact's available presence arrived (or the deadline); returns how
/// many did and when the last came.
async fn login_presences(
    mut client: Client,
    opts: BenchOptions,
    me: usize,
    contacts: usize,
    deadline: Instant,
) -> (usize, Client, u64, Instant) {
    let group = me / (contacts + 1);
    let mut seen = vec![false; contacts + 1];
    let mut count = 0u64;
    let mut last = Instant::now();
    while count < contacts as u64 {
        let st = tokio::select! {
            r = client.recv() => match r { Ok(s) => s, Err(_) => break },
            _ = tokio::time::sleep_until(deadline) => break,
        };
        if st.name() != "presence" || st.attribute("type").is_some() {
            continue;
        }
        let Some(from) = st.attribute("from").and_then(|f| index_of(&opts, f)) else {
            continue;
        };
        if from != me && from / (contacts + 1) == group && !seen[from % (contacts + 1)] {
            seen[from % (contacts + 1)] = true;
            count += 1;
            last = Instant::now();
        }
    }
    (me, client, count, last)
}

// ---- setup ----------------------------------------------------------------------------------

/// Makes every group a clique of `both` subscriptions; returns the `subscribe` requests sent.
async fn setup(opts: &BenchOptions, contacts: usize, accounts: usize) -> Result<u64, String> {
    let clients = open_all(opts, 0..accounts).await?;
    let deadline = Instant::now() + Duration::from_secs(MAX_DURATION_SECS);
    let done = Arc::new(AtomicUsize::new(0));
    let fetched = Arc::new(tokio::sync::Barrier::new(accounts));
    let mut tasks = JoinSet::new();
    for (i, client) in clients.into_iter().enumerate() {
        let group = i / (contacts + 1);
        let wanted: Vec<String> = (group * (contacts + 1)..(group + 1) * (contacts + 1))
            .filter(|&j| j != i)
            .map(|j| opts.account(j))
            .collect();
        tasks.spawn(subscribe_all(
            client,
            wanted,
            fetched.clone(),
            done.clone(),
            accounts,
            deadline,
        ));
    }
    let mut made = 0;
    let mut open = Vec::new();
    let mut problem = None;
    while let Some(r) = tasks.join_next().await {
        let (client, sent, result) = r.map_err(|e| e.to_string())?;
        made += sent;
        open.push(client);
        if let Err(e) = result {
            problem.get_or_insert(e);
        }
    }
    close_all(open, opts.concurrency).await;
    match problem {
        Some(e) => Err(format!("presence setup: {e}")),
        None => Ok(made),
    }
}

/// One account's part of the setup. Returns the client, the `subscribe`s it sent, and
/// whether its roster became complete.
async fn subscribe_all(
    mut client: Client,
    wanted: Vec<String>,
    fetched: Arc<tokio::sync::Barrier>,
    done: Arc<AtomicUsize>,
    accounts: usize,
    deadline: Instant,
) -> (Client, u64, Result<(), String>) {
    let me = client.jid().bare().as_str().to_owned();
    let mut roster: HashMap<String, String> = HashMap::new();
    let query = Element::builder("query", NS_ROSTER).build();
    let answer = match client.iq("get", &me, query).await {
        Ok(a) => a,
        Err(e) => {
            // Still pass the barrier so that the others do not wait for ever.
            fetched.wait().await;
            done.fetch_add(1, Ordering::AcqRel);
            return (client, 0, Err(format!("{me}: roster get: {e}")));
        }
    };
    if let Some(q) = answer.get_child("query", NS_ROSTER) {
        update_roster(&mut roster, q);
    }
    fetched.wait().await;
    let is_both = |roster: &HashMap<String, String>, j: &String| {
        roster.get(j).map(String::as_str) == Some("both")
    };
    let mut sent = 0;
    for j in &wanted {
        let has_to = matches!(roster.get(j).map(String::as_str), Some("to" | "both"));
        if !has_to {
            client.queue(&presence_to(j, "subscribe"));
            sent += 1;
        }
    }
    if let Err(e) = client.flush().await {
        done.fetch_add(1, Ordering::AcqRel);
        return (client, sent, Err(format!("{me}: {e}")));
    }
    let mut complete = wanted.iter().all(|j| is_both(&roster, j));
    if complete {
        done.fetch_add(1, Ordering::AcqRel);
    }
    let mut result = Ok(());
    // Serve the others' requests until everyone is complete.
    while done.load(Ordering::Acquire) < accounts {
        if Instant::now() >= deadline {
            result = Err(format!(
                "{me}: subscriptions not complete within {MAX_DURATION_SECS} s"
            ));
            break;
        }
        let st = tokio::select! {
            r = client.recv() => match r {
                Ok(s) => s,
                Err(e) => {
                    result = Err(format!("{me}: {e}"));
                    break;
                }
            },
            _ = tokio::time::sleep(SETUP_TICK) => continue,
        };
        match (st.name(), st.attribute("type")) {
            ("presence", Some("subscribe")) => {
                let from = st.attribute("from").unwrap_or_default();
                let bare = from.split('/').next().unwrap_or_default().to_owned();
                if wanted.contains(&bare) {
                    if let Err(e) = client.send(&presence_to(&bare, "subscribed")).await {
                        result = Err(format!("{me}: {e}"));
                        break;
                    }
                }
            }
            ("iq", Some("set")) => {
                if let Some(q) = st.get_child("query", NS_ROSTER) {
                    update_roster(&mut roster, q);
                    let reply = Element::builder("iq", ns::CLIENT)
                        .attr(attr("type"), "result")
                        .attr(attr("id"), st.attribute("id").unwrap_or_default())
                        .build();
                    if let Err(e) = client.send(&reply).await {
                        result = Err(format!("{me}: {e}"));
                        break;
                    }
                }
            }
            _ => {}
        }
        if !complete && wanted.iter().all(|j| is_both(&roster, j)) {
            complete = true;
            done.fetch_add(1, Ordering::AcqRel);
        }
    }
    if !complete {
        done.fetch_add(1, Ordering::AcqRel);
    }
    (client, sent, result)
}

fn update_roster(roster: &mut HashMap<String, String>, query: &Element) {
    for item in query.children().filter(|c| c.is("item", NS_ROSTER)) {
        if let Some(jid) = item.attribute("jid") {
            let sub = item.attribute("subscription").unwrap_or("none").to_owned();
            if sub == "remove" {
                roster.remove(jid);
            } else {
                roster.insert(jid.to_owned(), sub);
            }
        }
    }
}

fn presence_to(to: &str, kind: &str) -> Stanza {
    Element::builder("presence", ns::CLIENT)
        .attr(attr("to"), to)
        .attr(attr("type"), kind)
        .build()
}

pub(crate) fn attr(name: &'static str) -> minidom::rxml::NcName {
    minidom::rxml::NcName::try_from(name).expect("attribute names used here are NCNames")
}
