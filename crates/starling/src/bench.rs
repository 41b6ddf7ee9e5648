//! `starling bench`: a load generator built on starling-client (issue 7, item 1).
//!
//! Scenarios, each bounded in count and time, against a server on loopback only:
//! - `login`: N accounts log in (TLS, SASL, bind, presence, one ping round trip) with a
//!   concurrency cap -> logins/s, p50/p99 login time.
//! - `idle`: N authenticated sessions held for the duration -> server RSS per session, read
//!   from `/proc/PID/status` (VmRSS) before and after when `--server-pid` is given.
//! - `chat`: P pairs (`bench{2i}` sends to `bench{2i+1}`); each sender keeps at most W
//!   messages in flight; the body carries a sequence number and a send timestamp; the
//!   receiver checks order -> delivered/s, p50/p99/p999 latency, lost/duplicated/reordered.
//!
//! The scenario functions ([`login`], [`idle`], [`chat`]) are public so tests can run them
//! against an in-process server; [`run`] is the command-line front end.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Subcommand};
use starling_client::{chat_message, Client, ClientConfig, SaslMechanism, TlsMode, Trust};
use starling_core::Config;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Longest run accepted, in seconds.
pub const MAX_DURATION_SECS: u64 = 600;
/// How long receivers wait for stragglers after the senders stop.
const DRAIN: Duration = Duration::from_secs(5);
/// Timeout for one connection (TCP, TLS, SASL, bind).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// `starling bench ...`
#[derive(Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// N accounts log in once each, at most --concurrency at a time: logins/s and login time.
    Login {
        #[command(flatten)]
        common: CommonArgs,
    },
    /// N sessions held for --duration: server memory per session (with --server-pid).
    Idle {
        #[command(flatten)]
        common: CommonArgs,
        /// The server's process id, to read its VmRSS from /proc before and after.
        #[arg(long)]
        server_pid: Option<u32>,
    },
    /// P sender/receiver pairs with a bounded window: messages/s, latency, loss and order.
    Chat {
        #[command(flatten)]
        common: CommonArgs,
        /// Pairs (needs --users >= 2 * pairs; bench{2i} sends to bench{2i+1}).
        #[arg(long, default_value_t = 1)]
        pairs: usize,
        /// Messages in flight per sender.
        #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=100_000))]
        window: u64,
        /// Most messages per sender (the run also ends after --duration).
        #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
        max_messages: u64,
    },
}

/// Options every scenario takes. (`--config` is the global option of `starling`.)
#[derive(Args)]
struct CommonArgs {
    /// Server address (loopback only).
    #[arg(long, default_value = "127.0.0.1:5222")]
    server: SocketAddr,
    /// The XMPP domain of the accounts.
    #[arg(long, default_value = "localhost")]
    domain: String,
    /// Accounts bench0 .. bench{N-1}@domain.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    users: u64,
    /// Password of every bench account.
    #[arg(long, default_value = "bench-pw")]
    password: String,
    /// Create the accounts first, directly in the storage of --config (no XEP-0077);
    /// existing ones are kept.
    #[arg(long)]
    create_accounts: bool,
    /// TLS from the first byte (XEP-0368) instead of STARTTLS.
    #[arg(long)]
    direct_tls: bool,
    /// SASL mechanism: SCRAM-SHA-1, SCRAM-SHA-256, PLAIN (or a -PLUS variant).
    #[arg(long, default_value = "SCRAM-SHA-256")]
    mechanism: String,
    /// Seconds the scenario may run (1..=600).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=MAX_DURATION_SECS))]
    duration: u64,
    /// Connections being set up at once.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    concurrency: u64,
    /// Also write the figures as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

/// What the scenarios need to reach the server.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Where the server listens; must be a loopback address.
    pub server: SocketAddr,
    /// Domain of the bench accounts.
    pub domain: String,
    /// Number of accounts (bench0 ..).
    pub users: usize,
    /// Their common password.
    pub password: String,
    /// STARTTLS or direct TLS.
    pub tls: TlsMode,
    /// The one SASL mechanism to use.
    pub mechanism: SaslMechanism,
    /// Time bound of the scenario.
    pub duration: Duration,
    /// Connections being set up at once.
    pub concurrency: usize,
}

impl BenchOptions {
    /// Defaults for tests: STARTTLS, SCRAM-SHA-256, 10 s, concurrency 32.
    pub fn new(server: SocketAddr, domain: &str, users: usize) -> BenchOptions {
        BenchOptions {
            server,
            domain: domain.to_owned(),
            users,
            password: "bench-pw".to_owned(),
            tls: TlsMode::StartTls,
            mechanism: SaslMechanism::ScramSha256,
            duration: Duration::from_secs(10),
            concurrency: 32,
        }
    }

    /// Refuses anything that could send load off this machine, or run unbounded.
    fn check(&self) -> Result<(), String> {
        if !self.server.ip().is_loopback() {
            return Err(format!(
                "--server {}: the load generator only targets loopback addresses",
                self.server
            ));
        }
        if self.duration.is_zero() || self.duration > Duration::from_secs(MAX_DURATION_SECS) {
            return Err(format!("duration must be 1..={MAX_DURATION_SECS} s"));
        }
        if self.users == 0 || self.concurrency == 0 {
            return Err("users and concurrency must be at least 1".into());
        }
        Ok(())
    }

    /// The bare JID of bench account `i`.
    pub fn account(&self, i: usize) -> String {
        format!("bench{i}@{}", self.domain)
    }

    fn client_config(&self, i: usize) -> Result<ClientConfig, String> {
        let jid = self
            .account(i)
            .parse()
            .map_err(|e| format!("{}: {e:?}", self.account(i)))?;
        let mut cfg = ClientConfig::new(
            jid,
            self.password.clone(),
            self.server,
            Trust::InsecureAcceptAny,
        );
        cfg.tls = self.tls;
        cfg.mechanisms = vec![self.mechanism];
        cfg.resource = Some(format!("bench-{i}"));
        cfg.timeout = CONNECT_TIMEOUT;
        Ok(cfg)
    }

    /// Connects account `i`, sends presence and waits for a ping round trip.
    async fn open_session(&self, i: usize) -> Result<Client, String> {
        let cfg = self.client_config(i)?;
        let who = self.account(i);
        let mut client = Client::connect(&cfg)
            .await
            .map_err(|e| format!("{who}: {e}"))?;
        client
            .send_presence()
            .await
            .map_err(|e| format!("{who}: {e}"))?;
        tokio::time::timeout(CONNECT_TIMEOUT, client.ping())
            .await
            .map_err(|_| format!("{who}: ping timed out"))?
            .map_err(|e| format!("{who}: {e}"))?;
        Ok(client)
    }
}

// ---- figures ------------------------------------------------------------------------------

/// Percentiles of a sample, in microseconds.
#[derive(Debug, Clone, Default)]
pub struct Percentiles {
    /// Sample size.
    pub count: usize,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

impl Percentiles {
    fn of(mut sample: Vec<u64>) -> Percentiles {
        if sample.is_empty() {
            return Percentiles::default();
        }
        sample.sort_unstable();
        let at = |q: f64| {
            let rank = ((q * sample.len() as f64).ceil() as usize).clamp(1, sample.len());
            sample[rank - 1]
        };
        Percentiles {
            count: sample.len(),
            p50_us: at(0.50),
            p99_us: at(0.99),
            p999_us: at(0.999),
            max_us: sample[sample.len() - 1],
        }
    }

    fn json(&self) -> String {
        format!(
            "{{\"count\": {}, \"p50_us\": {}, \"p99_us\": {}, \"p999_us\": {}, \"max_us\": {}}}",
            self.count, self.p50_us, self.p99_us, self.p999_us, self.max_us
        )
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

fn ms(us: u64) -> String {
    format!("{:.3} ms", us as f64 / 1000.0)
}

/// `login` figures.
#[derive(Debug, Clone)]
pub struct LoginReport {
    pub attempted: usize,
    pub succeeded: usize,
    pub failed: usize,
    /// The first failure, if any.
    pub first_error: Option<String>,
    pub elapsed: Duration,
    pub logins_per_sec: f64,
    /// Connect + TLS + SASL + bind + presence + ping round trip.
    pub login_time: Percentiles,
}

/// `idle` figures.
#[derive(Debug, Clone)]
pub struct IdleReport {
    pub sessions: usize,
    pub failed: usize,
    pub first_error: Option<String>,
    pub held: Duration,
    /// Server VmRSS in KiB before connecting, once all were connected, and at the end.
    pub rss_before_kib: Option<u64>,
    pub rss_after_kib: Option<u64>,
    pub rss_end_kib: Option<u64>,
    /// (after - before) / sessions, in bytes.
    pub bytes_per_session: Option<f64>,
}

/// `chat` figures.
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
    pub elapsed: Duration,
    pub messages_per_sec: f64,
    pub latency: Percentiles,
}

// ---- login ----------------------------------------------------------------------------------

/// Every account logs in once, at most `concurrency` at a time; no new login starts after
/// the duration.
pub async fn login(opts: &BenchOptions) -> Result<LoginReport, String> {
    opts.check()?;
    let opts = Arc::new(opts.clone());
    let start = Instant::now();
    let deadline = start + opts.duration;
    let gate = Arc::new(Semaphore::new(opts.concurrency));
    let mut tasks = JoinSet::new();
    let mut attempted = 0;
    for i in 0..opts.users {
        let permit = tokio::select! {
            p = gate.clone().acquire_owned() => p.map_err(|e| e.to_string())?,
            _ = tokio::time::sleep_until(deadline) => break,
        };
        attempted += 1;
        let opts = opts.clone();
        tasks.spawn(async move {
            let t0 = Instant::now();
            let result = opts.open_session(i).await;
            let took = t0.elapsed();
            // Release the slot before the orderly close: the close is not part of a login.
            drop(permit);
            match result {
                Ok(client) => {
                    let _ = client.close().await;
                    Ok(took)
                }
                Err(e) => Err(e),
            }
        });
    }
    let mut times = Vec::with_capacity(attempted);
    let mut failed = 0;
    let mut first_error = None;
    let mut end = start;
    while let Some(r) = tasks.join_next().await {
        match r.map_err(|e| e.to_string())? {
            Ok(t) => times.push(micros(t)),
            Err(e) => {
                failed += 1;
                first_error.get_or_insert(e);
            }
        }
        end = Instant::now();
    }
    let elapsed = end - start;
    let succeeded = times.len();
    Ok(LoginReport {
        attempted,
        succeeded,
        failed,
        first_error,
        elapsed,
        logins_per_sec: rate(succeeded as u64, elapsed),
        login_time: Percentiles::of(times),
    })
}

fn rate(n: u64, d: Duration) -> f64 {
    if d.is_zero() {
        0.0
    } else {
        n as f64 / d.as_secs_f64()
    }
}

// ---- idle -----------------------------------------------------------------------------------

/// The VmRSS of a process, in KiB.
pub fn rss_kib(pid: u32) -> Result<u64, String> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| format!("{path}: no VmRSS"))
}

/// Opens every account's session, holds them all for the duration, then closes them.
pub async fn idle(opts: &BenchOptions, server_pid: Option<u32>) -> Result<IdleReport, String> {
    opts.check()?;
    let rss = |pid: Option<u32>| pid.map(rss_kib).transpose();
    let rss_before_kib = rss(server_pid)?;
    let (clients, failed, first_error) = open_many(opts, 0..opts.users).await?;
    let sessions = clients.len();
    // Let the server settle (buffers released after negotiation) before measuring.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_after_kib = rss(server_pid)?;
    let held_from = Instant::now();
    tokio::time::sleep(opts.duration).await;
    let held = held_from.elapsed();
    let rss_end_kib = rss(server_pid)?;
    close_all(clients, opts.concurrency).await;
    let bytes_per_session = match (rss_before_kib, rss_after_kib) {
        (Some(b), Some(a)) if sessions > 0 => {
            Some((a as f64 - b as f64) * 1024.0 / sessions as f64)
        }
        _ => None,
    };
    Ok(IdleReport {
        sessions,
        failed,
        first_error,
        held,
        rss_before_kib,
        rss_after_kib,
        rss_end_kib,
        bytes_per_session,
    })
}

type Opened = (Vec<Client>, usize, Option<String>);

/// Opens sessions for the accounts in `range`, `concurrency` at a time; returns them in
/// account order (failures left out and counted).
async fn open_many(opts: &BenchOptions, range: std::ops::Range<usize>) -> Result<Opened, String> {
    let opts = Arc::new(opts.clone());
    let gate = Arc::new(Semaphore::new(opts.concurrency));
    let mut tasks = JoinSet::new();
    for i in range {
        let permit = gate
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| e.to_string())?;
        let opts = opts.clone();
        tasks.spawn(async move {
            let r = opts.open_session(i).await;
            drop(permit);
            (i, r)
        });
    }
    let mut opened = Vec::new();
    let mut failed = 0;
    let mut first_error = None;
    while let Some(r) = tasks.join_next().await {
        match r.map_err(|e| e.to_string())? {
            (i, Ok(c)) => opened.push((i, c)),
            (_, Err(e)) => {
                failed += 1;
                first_error.get_or_insert(e);
            }
        }
    }
    opened.sort_by_key(|(i, _)| *i);
    Ok((
        opened.into_iter().map(|(_, c)| c).collect(),
        failed,
        first_error,
    ))
}

async fn close_all(clients: Vec<Client>, concurrency: usize) {
    let gate = Arc::new(Semaphore::new(concurrency));
    let mut tasks = JoinSet::new();
    for c in clients {
        let Ok(permit) = gate.clone().acquire_owned().await else {
            break;
        };
        tasks.spawn(async move {
            let _ = c.close().await;
            drop(permit);
        });
    }
    while tasks.join_next().await.is_some() {}
}

// ---- chat -----------------------------------------------------------------------------------

/// Shared between one pair's sender and receiver (same process, so no clock skew).
#[derive(Default)]
struct PairState {
    /// Distinct messages the receiver has seen.
    received: AtomicU64,
    /// Messages the sender has written.
    sent: AtomicU64,
    /// The sender has stopped; `sent` is final.
    done: AtomicBool,
    /// Receiver -> sender: the window has room.
    room: Notify,
    /// Sender -> receiver: `done` was set.
    finished: Notify,
}

struct ReceiverTally {
    distinct: u64,
    duplicated: u64,
    reordered: u64,
    errors: u64,
    latencies: Vec<u64>,
    last: Instant,
}

/// `pairs` pairs exchange messages for the duration (or `max_messages` per sender), each
/// sender with at most `window` messages not yet received.
pub async fn chat(
    opts: &BenchOptions,
    pairs: usize,
    window: u64,
    max_messages: u64,
) -> Result<ChatReport, String> {
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
        senders.spawn(send_loop(
            sender,
            to,
            state.clone(),
            base,
            deadline,
            window,
            max_messages,
        ));
        receivers.spawn(receive_loop(receiver, state, base, deadline + DRAIN));
    }
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
    let mut report = ChatReport {
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
    };
    let mut latencies = Vec::new();
    let mut last = base;
    while let Some(r) = receivers.join_next().await {
        let (t, e) = r.map_err(|e| e.to_string())?;
        if let Some(e) = e {
            problems.push(e);
        }
        report.delivered += t.distinct;
        report.duplicated += t.duplicated;
        report.reordered += t.reordered;
        report.errors += t.errors;
        latencies.extend(t.latencies);
        last = last.max(t.last);
    }
    report.lost = sent.saturating_sub(report.delivered);
    report.elapsed = last - base;
    report.messages_per_sec = rate(report.delivered, report.elapsed);
    report.latency = Percentiles::of(latencies);
    if let Some(p) = problems.first() {
        eprintln!(
            "bench chat: {} stream problem(s), first: {p}",
            problems.len()
        );
    }
    Ok(report)
}

/// Returns how many messages were written (with the error that stopped it early, if any).
async fn send_loop(
    mut client: Client,
    to: String,
    state: Arc<PairState>,
    base: Instant,
    deadline: Instant,
    window: u64,
    max_messages: u64,
) -> Result<u64, (u64, String)> {
    let mut seq = 0u64;
    let mut outcome = Ok(());
    while seq < max_messages && Instant::now() < deadline {
        let in_flight = seq - state.received.load(Ordering::Acquire);
        let room = window.saturating_sub(in_flight).min(max_messages - seq);
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
        tokio::select! {
            _ = state.room.notified() => {}
            r = client.recv() => {
                // Nothing is expected here; anything but a stanza ends the run.
                if let Err(e) = r {
                    outcome = Err(e.to_string());
                    break;
                }
            }
            _ = tokio::time::sleep_until(deadline) => {}
        }
    }
    state.sent.store(seq, Ordering::Release);
    state.done.store(true, Ordering::Release);
    state.finished.notify_one();
    let _ = client.close().await;
    outcome.map(|()| seq).map_err(|e| (seq, e))
}

async fn receive_loop(
    mut client: Client,
    state: Arc<PairState>,
    base: Instant,
    drain_deadline: Instant,
) -> (ReceiverTally, Option<String>) {
    let mut t = ReceiverTally {
        distinct: 0,
        duplicated: 0,
        reordered: 0,
        errors: 0,
        latencies: Vec::new(),
        last: base,
    };
    // One bit per sequence number seen; grows with the highest one.
    let mut seen: Vec<u64> = Vec::new();
    let mut highest: Option<u64> = None;
    let mut problem = None;
    loop {
        if state.done.load(Ordering::Acquire) && t.distinct >= state.sent.load(Ordering::Acquire) {
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
        let parsed = (stanza.attr("type") != Some("error"))
            .then(|| stanza.get_child("body", starling_proto::ns::CLIENT))
            .flatten()
            .map(|b| b.text())
            .and_then(|text| {
                let (seq, ts) = text.split_once(' ')?;
                Some((seq.parse::<u64>().ok()?, ts.parse::<u64>().ok()?))
            });
        let Some((seq, sent_at)) = parsed else {
            t.errors += 1;
            continue;
        };
        let word = (seq / 64) as usize;
        let bit = 1u64 << (seq % 64);
        if word >= seen.len() {
            seen.resize(word + 1, 0);
        }
        if seen[word] & bit != 0 {
            t.duplicated += 1;
            continue;
        }
        seen[word] |= bit;
        // Arrived after a higher one: reordered. (Gaps that never fill are counted as lost.)
        if highest.is_some_and(|h| seq < h) {
            t.reordered += 1;
        }
        highest = Some(highest.map_or(seq, |h| h.max(seq)));
        t.distinct += 1;
        t.latencies.push(now.saturating_sub(sent_at));
        t.last = Instant::now();
        state.received.store(t.distinct, Ordering::Release);
        state.room.notify_one();
    }
    let _ = client.close().await;
    (t, problem)
}

// ---- the command ----------------------------------------------------------------------------

/// Runs `starling bench <scenario>`; `config` (from `--config`) is used by
/// `--create-accounts`.
pub async fn run(args: BenchArgs, config: Config) -> Result<(), String> {
    let common = match &args.scenario {
        Scenario::Login { common }
        | Scenario::Idle { common, .. }
        | Scenario::Chat { common, .. } => common,
    };
    let mut opts = BenchOptions::new(
        common.server,
        &common.domain,
        usize::try_from(common.users).map_err(|e| e.to_string())?,
    );
    opts.password = common.password.clone();
    if common.direct_tls {
        opts.tls = TlsMode::Direct;
    }
    opts.mechanism = SaslMechanism::from_name(&common.mechanism.to_ascii_uppercase())
        .ok_or_else(|| format!("unknown SASL mechanism {}", common.mechanism))?;
    opts.duration = Duration::from_secs(common.duration);
    opts.concurrency = usize::try_from(common.concurrency).map_err(|e| e.to_string())?;
    opts.check()?;
    if common.create_accounts {
        let created = create_accounts(&config, &opts).await?;
        println!(
            "accounts: {created} created, {} already present (storage of {})",
            opts.users - created,
            config.server.data_dir.display()
        );
    }
    let tls = if common.direct_tls {
        "direct TLS"
    } else {
        "STARTTLS"
    };
    let setting = format!(
        "server {}, {tls}, {}, {} users, concurrency {}, duration {} s",
        opts.server,
        opts.mechanism.name(),
        opts.users,
        opts.concurrency,
        common.duration
    );
    let (table, json) = match &args.scenario {
        Scenario::Login { .. } => {
            let r = login(&opts).await?;
            let table = vec![
                ("attempted", r.attempted.to_string()),
                ("succeeded", r.succeeded.to_string()),
                ("failed", r.failed.to_string()),
                ("elapsed", format!("{:.3} s", r.elapsed.as_secs_f64())),
                ("logins/s", format!("{:.1}", r.logins_per_sec)),
                ("login p50", ms(r.login_time.p50_us)),
                ("login p99", ms(r.login_time.p99_us)),
                ("login max", ms(r.login_time.max_us)),
            ];
            let json = format!(
                "\"scenario\": \"login\", \"attempted\": {}, \"succeeded\": {}, \"failed\": {}, \
                 \"elapsed_s\": {:.6}, \"logins_per_sec\": {:.3}, \"login_time\": {}",
                r.attempted,
                r.succeeded,
                r.failed,
                r.elapsed.as_secs_f64(),
                r.logins_per_sec,
                r.login_time.json()
            );
            if let Some(e) = &r.first_error {
                eprintln!("first failure: {e}");
            }
            (table, json)
        }
        Scenario::Idle { server_pid, .. } => {
            let r = idle(&opts, *server_pid).await?;
            let kib = |v: Option<u64>| v.map_or("-".to_owned(), |v| format!("{v} KiB"));
            let table = vec![
                ("sessions", r.sessions.to_string()),
                ("failed", r.failed.to_string()),
                ("held", format!("{:.3} s", r.held.as_secs_f64())),
                ("server RSS before", kib(r.rss_before_kib)),
                ("server RSS after", kib(r.rss_after_kib)),
                ("server RSS at end", kib(r.rss_end_kib)),
                (
                    "RSS per session",
                    r.bytes_per_session
                        .map_or("- (no --server-pid)".to_owned(), |b| format!("{:.0} B", b)),
                ),
            ];
            let opt = |v: Option<u64>| v.map_or("null".to_owned(), |v| v.to_string());
            let json = format!(
                "\"scenario\": \"idle\", \"sessions\": {}, \"failed\": {}, \"held_s\": {:.3}, \
                 \"rss_before_kib\": {}, \"rss_after_kib\": {}, \"rss_end_kib\": {}, \
                 \"bytes_per_session\": {}",
                r.sessions,
                r.failed,
                r.held.as_secs_f64(),
                opt(r.rss_before_kib),
                opt(r.rss_after_kib),
                opt(r.rss_end_kib),
                r.bytes_per_session
                    .map_or("null".to_owned(), |b| format!("{b:.1}"))
            );
            if let Some(e) = &r.first_error {
                eprintln!("first failure: {e}");
            }
            (table, json)
        }
        Scenario::Chat {
            pairs,
            window,
            max_messages,
            ..
        } => {
            let r = chat(&opts, *pairs, *window, *max_messages).await?;
            let table = vec![
                ("pairs", r.pairs.to_string()),
                ("window", r.window.to_string()),
                ("sent", r.sent.to_string()),
                ("delivered", r.delivered.to_string()),
                ("elapsed", format!("{:.3} s", r.elapsed.as_secs_f64())),
                ("delivered/s", format!("{:.1}", r.messages_per_sec)),
                ("latency p50", ms(r.latency.p50_us)),
                ("latency p99", ms(r.latency.p99_us)),
                ("latency p999", ms(r.latency.p999_us)),
                ("latency max", ms(r.latency.max_us)),
                ("lost", r.lost.to_string()),
                ("duplicated", r.duplicated.to_string()),
                ("reordered", r.reordered.to_string()),
                ("errors", r.errors.to_string()),
            ];
            let json = format!(
                "\"scenario\": \"chat\", \"pairs\": {}, \"window\": {}, \"sent\": {}, \
                 \"delivered\": {}, \"elapsed_s\": {:.6}, \"messages_per_sec\": {:.3}, \
                 \"latency\": {}, \"lost\": {}, \"duplicated\": {}, \"reordered\": {}, \
                 \"errors\": {}",
                r.pairs,
                r.window,
                r.sent,
                r.delivered,
                r.elapsed.as_secs_f64(),
                r.messages_per_sec,
                r.latency.json(),
                r.lost,
                r.duplicated,
                r.reordered,
                r.errors
            );
            (table, json)
        }
    };
    println!("{setting}");
    let width = table.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in &table {
        println!("  {k:<width$}  {v}");
    }
    if let Some(path) = &common.json {
        let text = format!(
            "{{\"server\": \"{}\", \"tls\": \"{tls}\", \"mechanism\": \"{}\", \"users\": {}, \
             \"concurrency\": {}, \"duration_s\": {}, {json}}}\n",
            opts.server,
            opts.mechanism.name(),
            opts.users,
            opts.concurrency,
            common.duration
        );
        std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

/// Creates bench0.. in the configured storage; returns how many were new.
async fn create_accounts(config: &Config, opts: &BenchOptions) -> Result<usize, String> {
    if !config.server.hosts.contains(&opts.domain) {
        return Err(format!(
            "--domain {} is not a host of the configuration ({:?})",
            opts.domain, config.server.hosts
        ));
    }
    std::fs::create_dir_all(&config.server.data_dir).map_err(|e| e.to_string())?;
    let storage = starling_storage::open(&config.storage_url())
        .await
        .map_err(|e| e.to_string())?;
    let mut created = 0;
    let mut result = Ok(());
    for i in 0..opts.users {
        match crate::accounts::add(
            &*storage,
            &opts.domain,
            &format!("bench{i}"),
            &opts.password,
            config.c2s.scram_iterations,
        )
        .await
        {
            Ok(()) => created += 1,
            Err(crate::accounts::AccountError::Storage(
                starling_storage::StorageError::AlreadyExists,
            )) => {}
            Err(e) => {
                result = Err(format!("bench{i}@{}: {e}", opts.domain));
                break;
            }
        }
    }
    storage.close().await;
    result.map(|()| created)
}
