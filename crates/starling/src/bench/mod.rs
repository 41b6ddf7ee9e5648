//! `starling bench`: a load generator built on starling-client (issue 7, items 1 and 2).
//!
//! Every scenario is bounded in count and time (`--duration`, at most 600 s, and a count
//! option), targets loopback only, and uses only standard XMPP (TLS by STARTTLS or direct
//! TLS, SASL SCRAM-SHA-1/-256 or PLAIN, RFC 6121 subscriptions, XEP-0045, XEP-0313), so it
//! runs against Prosody and ejabberd as well as Starling. Accounts are `{prefix}{i}@{domain}`
//! for i in 0..`--users` (default prefix `bench`), all with one password (`--password`,
//! default `bench-pw`); `--create-accounts` creates them in Starling's own storage (for the
//! other servers the caller creates them).
//!
//! # Scenarios
//! - `login`: N accounts log in once each (TLS, SASL, bind, presence, ping round trip), at
//!   most `--concurrency` at a time -> logins/s, p50/p99 login time.
//! - `idle`: N sessions held for `--duration` -> server RSS per session (`--server-pid`).
//! - `chat --pairs P --window W --max-messages M [--rate R]`: `{prefix}{2i}` sends to `{prefix}{2i+1}`,
//!   at most W messages in flight per sender; bodies are `SEQ MICROS` -> delivered/s,
//!   p50/p99/p999 latency, lost/duplicated/reordered (all must be 0). `--rate R` paces the
//!   senders to R messages/s in all (latency at a fixed offered load; RESULT adds
//!   `offered_per_sec`).
//! - `presence --contacts K --window W --max-changes M`: accounts in groups of K+1, every
//!   member a contact of every other (subscription `both`, made in a setup phase with
//!   `subscribe`/`subscribed` that re-runs skip once the rosters are complete). All log in
//!   (`login_presences`: available presences seen from contacts); then each changes status
//!   (`<show>away</show><status>SEQ MICROS</status>`), at most W changes not yet seen by all
//!   its contacts -> presence stanzas delivered/s, p50/p99 latency, lost/duplicated/reordered.
//!   `--setup-only` stops after the setup.
//! - `archive --pairs P --window W --max-messages M --page-size N --max-queries Q`: `chat`
//!   (MAM is on or off as the server is configured), then every one of the 2P accounts pages
//!   through its own archive (XEP-0313 `urn:xmpp:mam:2`, XEP-0059 pages of N, `<after/>` the
//!   last id, from the start again when complete) -> MAM queries/s, archived messages
//!   returned/s, p50/p99 query time; `first_pass_messages` is what the first complete pass
//!   of every account returned (2 x sent on a fresh server).
//! - `muc --rooms R --occupants O --senders S --window W --max-messages M --muc-service JID`:
//!   R rooms `{prefix}room{r}@JID` (default service `conference.{domain}`) of O occupants,
//!   room r held by accounts r*O .. r*O+O-1 (nickname = localpart); the first creates it
//!   (XEP-0045 §10.1.2: join, status 201, owner submits an empty form = instant room), the
//!   others join without history. The first S occupants of each room send groupchat
//!   messages, each with at most W messages not yet delivered to every occupant ->
//!   deliveries/s counted at the receivers (every occupant, the sender's own echo included:
//!   `expected` = sent x O), p50/p99 latency, lost/duplicated/reordered; `join_s` is how long
//!   the joins took.
//! - `relay --pairs P --window W --max-messages M --server ADDR`: the machine's limit. The
//!   pairs, window and message bytes of `chat` (the serialised `<message/>` chat writes,
//!   newline-terminated) through `relay-server` over plain TCP: no XMPP, no TLS, and by
//!   default no per-message XML work in the load generator, so the figure is the machine's
//!   limit (RESULT says `tls=none mechanism=none xml=0`). With `--xml` the generator builds,
//!   serialises and parses every message as `chat` does (`xml=1`): only the server differs.
//! - `relay-server --listen ADDR`: the trivial relay. Each connection's first line names its
//!   pair (`PAIR name`); the second connection with the same line is paired with the first
//!   and bytes are copied both ways until either side closes. Runs until Ctrl-C/SIGTERM or
//!   `--lifetime` seconds (default 3600), at most `--max-connections` at once.
//! - `churn --pairs P --window W --max-messages M --logins N`: `chat`, then N logins and
//!   logouts (over the accounts in turn, `--concurrency` at a time), then `chat` again ->
//!   both figures and `ratio` = after / before (issue 7: within 5%).
//!
//! # Output
//! Human lines, then one line for scripts:
//! `RESULT scenario=NAME server=ADDR tls=starttls|direct mechanism=M users=N key=value ...`
//! (values never contain spaces; times in `_us` are microseconds, `_s` seconds, rates per
//! second). Keys per scenario: login `attempted succeeded failed elapsed_s logins_per_sec
//! p50_us p99_us max_us`; idle `sessions failed held_s rss_before_kib rss_after_kib
//! rss_end_kib bytes_per_session`; chat and relay `pairs window sent delivered elapsed_s
//! messages_per_sec p50_us p99_us p999_us max_us lost duplicated reordered errors`; presence
//! `groups contacts accounts subscriptions_made setup_s login_presences login_s changes
//! expected delivered elapsed_s presences_per_sec p50_us p99_us p999_us max_us lost
//! duplicated reordered errors`; archive the chat keys plus `queries pages archived_returned
//! query_elapsed_s queries_per_sec archived_per_sec query_p50_us query_p99_us query_errors
//! first_pass_messages complete_accounts`; muc `rooms occupants senders join_s sent expected
//! delivered elapsed_s deliveries_per_sec p50_us p99_us p999_us max_us lost duplicated
//! reordered errors`; relay adds `xml`; churn `before_per_sec after_per_sec ratio
//! within_5pct logins logins_failed logins_per_sec` plus `before_`/`after_` p99_us, lost,
//! duplicated and reordered. `--json FILE` writes the same keys as one flat JSON object.
//!
//! The scenario functions are public so tests run them against an in-process server
//! (`tests/bench_smoke.rs`); [`run`] is the command-line front end.

mod archive;
mod chat;
mod churn;
mod fanout;
mod idle;
mod login;
mod muc;
mod presence;
mod relay;
mod report;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Subcommand};
use starling_client::{Client, ClientConfig, SaltedPasswordCache, SaslMechanism, TlsMode, Trust};
use starling_core::Config;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

pub use archive::{archive, ArchiveReport};
pub use chat::{chat, ChatReport};
pub use churn::{churn, ChurnReport};
pub use idle::{idle, rss_kib, IdleReport};
pub use login::{login, login_with_cache, logins, LoginReport};
pub use muc::{muc, MucOptions, MucReport};
pub use presence::{presence, PresenceReport};
pub use relay::{relay, relay_server, RelayServer};
pub use report::{Percentiles, Summary};

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

/// The options of the `chat`-like scenarios.
#[derive(Args, Clone, Copy)]
struct PairArgs {
    /// Pairs (needs --users >= 2 * pairs; {prefix}{2i} sends to {prefix}{2i+1}).
    #[arg(long, default_value_t = 1)]
    pairs: usize,
    /// Messages in flight per sender.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    window: u64,
    /// Most messages per sender (the run also ends after --duration).
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    max_messages: u64,
}

#[derive(Subcommand)]
enum Scenario {
    /// N accounts log in once each, at most --concurrency at a time: logins/s and login time.
    Login {
        #[command(flatten)]
        common: CommonArgs,
        /// Log every account in once, untimed, to cache its SCRAM SaltedPassword, then time
        /// the logins of a returning client that skips PBKDF2 (RFC 5802 §5.1).
        #[arg(long)]
        scram_cache: bool,
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
        #[command(flatten)]
        pairs: PairArgs,
        /// Pace the senders: this many messages/s in all, shared evenly (default: as fast
        /// as the window allows).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
        rate: Option<u64>,
    },
    /// Groups of K+1 mutual contacts log in and change status: presences delivered/s.
    Presence {
        #[command(flatten)]
        common: CommonArgs,
        /// Contacts per account (accounts are used in groups of K+1).
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=10_000))]
        contacts: u64,
        /// Status changes per account not yet seen by all its contacts. Latency grows with
        /// accounts x window x contacts stanzas in flight.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=10_000))]
        window: u64,
        /// Most status changes per account (the run also ends after --duration).
        #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
        max_changes: u64,
        /// Only make the subscriptions (the setup phase), then stop.
        #[arg(long)]
        setup_only: bool,
    },
    /// `chat`, then MAM queries (XEP-0313, pages of --page-size) over the filled archives.
    Archive {
        #[command(flatten)]
        common: CommonArgs,
        #[command(flatten)]
        pairs: PairArgs,
        /// Archived messages per page (RSM <max/>).
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=1000))]
        page_size: u64,
        /// Most queries per account (the query phase also ends after --duration).
        #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
        max_queries: u64,
    },
    /// Rooms of --occupants occupants (XEP-0045), --senders per room: deliveries/s.
    Muc {
        #[command(flatten)]
        common: CommonArgs,
        /// The MUC service (default conference.{domain}).
        #[arg(long)]
        muc_service: Option<String>,
        /// Rooms (needs --users >= rooms * occupants).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=10_000))]
        rooms: u64,
        /// Occupants per room, e.g. 10, 100 or 1000.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(2..=100_000))]
        occupants: u64,
        /// Senders per room (the first occupants).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=100_000))]
        senders: u64,
        /// Messages per sender not yet delivered to every occupant.
        #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=100_000))]
        window: u64,
        /// Most messages per sender (the run also ends after --duration).
        #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
        max_messages: u64,
    },
    /// `chat`'s pairs, window and message bytes through `relay-server` (no XMPP, no TLS).
    Relay {
        #[command(flatten)]
        common: CommonArgs,
        #[command(flatten)]
        pairs: PairArgs,
        /// Do chat's per-message XML work in the load generator too (build and serialise an
        /// element per message, parse each received one), so that only the server differs.
        #[arg(long)]
        xml: bool,
    },
    /// The trivial byte relay `relay` drives: pairs connections by their first line.
    RelayServer {
        /// Address to listen on (loopback only).
        #[arg(long, default_value = "127.0.0.1:5299")]
        listen: SocketAddr,
        /// Most connections at once.
        #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(2..=1_000_000))]
        max_connections: u64,
        /// Seconds until the relay stops by itself.
        #[arg(long, default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..=86_400))]
        lifetime: u64,
    },
    /// `chat`, N logins and logouts, `chat` again: both figures and their ratio.
    Churn {
        #[command(flatten)]
        common: CommonArgs,
        #[command(flatten)]
        pairs: PairArgs,
        /// Logins (and logouts) between the chat runs, over the accounts in turn.
        #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
        logins: u64,
        /// Chat runs on each side of the logins; each side's figure is their mean.
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=10))]
        rounds: u64,
        /// The server's process id, to read its CPU time per message from /proc.
        #[arg(long)]
        server_pid: Option<u32>,
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
    /// Accounts {prefix}0 .. {prefix}{N-1}@domain.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    users: u64,
    /// Localpart prefix of the accounts.
    #[arg(long, default_value = "bench")]
    prefix: String,
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
    /// Seconds the scenario (each timed phase) may run (1..=600).
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
    /// Number of accounts ({prefix}0 ..).
    pub users: usize,
    /// Localpart prefix of the accounts (`bench`).
    pub prefix: String,
    /// Their common password.
    pub password: String,
    /// STARTTLS or direct TLS.
    pub tls: TlsMode,
    /// The one SASL mechanism to use.
    pub mechanism: SaslMechanism,
    /// Time bound of the scenario (of each timed phase).
    pub duration: Duration,
    /// Connections being set up at once.
    pub concurrency: usize,
    /// SCRAM SaltedPasswords kept between this run's logins (as real clients keep them);
    /// `None`: PBKDF2 at every login.
    pub scram_cache: Option<SaltedPasswordCache>,
}

impl BenchOptions {
    /// Defaults for tests: prefix `bench`, STARTTLS, SCRAM-SHA-256, 10 s, concurrency 32.
    pub fn new(server: SocketAddr, domain: &str, users: usize) -> BenchOptions {
        BenchOptions {
            server,
            domain: domain.to_owned(),
            users,
            prefix: "bench".to_owned(),
            password: "bench-pw".to_owned(),
            tls: TlsMode::StartTls,
            mechanism: SaslMechanism::ScramSha256,
            duration: Duration::from_secs(10),
            concurrency: 32,
            scram_cache: None,
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
        if self.prefix.is_empty() || self.prefix.contains(['@', '/', ' ']) {
            return Err(format!(
                "--prefix {:?}: not a localpart prefix",
                self.prefix
            ));
        }
        Ok(())
    }

    /// The localpart of bench account `i`.
    pub fn localpart(&self, i: usize) -> String {
        format!("{}{i}", self.prefix)
    }

    /// The bare JID of bench account `i`.
    pub fn account(&self, i: usize) -> String {
        format!("{}{i}@{}", self.prefix, self.domain)
    }

    fn client_config(&self, i: usize, resource: Option<String>) -> Result<ClientConfig, String> {
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
        cfg.resource = Some(resource.unwrap_or_else(|| format!("bench-{i}")));
        cfg.timeout = CONNECT_TIMEOUT;
        cfg.scram_cache = self.scram_cache.clone();
        Ok(cfg)
    }

    /// Connects account `i`, sends presence and waits for a ping round trip.
    async fn open_session(&self, i: usize) -> Result<Client, String> {
        self.open_session_as(i, None).await
    }

    /// [`Self::open_session`] binding `resource` (default `bench-{i}`).
    async fn open_session_as(&self, i: usize, resource: Option<String>) -> Result<Client, String> {
        let cfg = self.client_config(i, resource)?;
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

    /// `tls` for the RESULT line.
    fn tls_name(&self) -> &'static str {
        match self.tls {
            TlsMode::StartTls => "starttls",
            TlsMode::Direct => "direct",
        }
    }
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

/// [`open_many`], failing if any session failed (after closing the others).
async fn open_all(
    opts: &BenchOptions,
    range: std::ops::Range<usize>,
) -> Result<Vec<Client>, String> {
    let (clients, failed, first_error) = open_many(opts, range).await?;
    if failed > 0 {
        close_all(clients, opts.concurrency).await;
        return Err(format!(
            "{failed} session(s) failed to open: {}",
            first_error.unwrap_or_default()
        ));
    }
    Ok(clients)
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

// ---- the command ----------------------------------------------------------------------------

/// Runs `starling bench <scenario>`; `config` (from `--config`) is used by
/// `--create-accounts`.
pub async fn run(args: BenchArgs, config: Config) -> Result<(), String> {
    let common = match &args.scenario {
        Scenario::RelayServer {
            listen,
            max_connections,
            lifetime,
        } => {
            let server = RelayServer::bind(
                *listen,
                usize::try_from(*max_connections).map_err(|e| e.to_string())?,
            )
            .await?;
            println!("relay: listening on {}", server.local_addr());
            let stop = async {
                use tokio::signal::unix::{signal, SignalKind};
                let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                    _ = tokio::time::sleep(Duration::from_secs(*lifetime)) => {}
                }
                Ok::<(), String>(())
            };
            let stats = server.run_until(stop).await?;
            println!("relay: stopped after {} pair(s)", stats);
            return Ok(());
        }
        Scenario::Login { common, .. }
        | Scenario::Idle { common, .. }
        | Scenario::Chat { common, .. }
        | Scenario::Presence { common, .. }
        | Scenario::Archive { common, .. }
        | Scenario::Muc { common, .. }
        | Scenario::Relay { common, .. }
        | Scenario::Churn { common, .. } => common,
    };
    let mut opts = BenchOptions::new(
        common.server,
        &common.domain,
        usize::try_from(common.users).map_err(|e| e.to_string())?,
    );
    opts.prefix = common.prefix.clone();
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
    let setting = if matches!(args.scenario, Scenario::Relay { .. }) {
        format!(
            "relay {}, plain TCP (no XMPP), duration {} s",
            opts.server, common.duration
        )
    } else {
        format!(
            "server {}, {tls}, {}, {} users, concurrency {}, duration {} s",
            opts.server,
            opts.mechanism.name(),
            opts.users,
            opts.concurrency,
            common.duration
        )
    };
    let usize_of = |v: u64| usize::try_from(v).map_err(|e| e.to_string());
    let (name, summary) = match &args.scenario {
        Scenario::Login { scram_cache, .. } => {
            let r = if *scram_cache {
                login_with_cache(&opts).await?
            } else {
                login(&opts).await?
            };
            if let Some(e) = &r.first_error {
                eprintln!("first failure: {e}");
            }
            ("login", r.summary())
        }
        Scenario::Idle { server_pid, .. } => {
            let r = idle(&opts, *server_pid).await?;
            if let Some(e) = &r.first_error {
                eprintln!("first failure: {e}");
            }
            ("idle", r.summary())
        }
        Scenario::Chat { pairs: p, rate, .. } => {
            let r = chat(&opts, p.pairs, p.window, p.max_messages, *rate).await?;
            ("chat", r.summary())
        }
        Scenario::Presence {
            contacts,
            window,
            max_changes,
            setup_only,
            ..
        } => {
            let r = presence(
                &opts,
                usize_of(*contacts)?,
                *window,
                *max_changes,
                *setup_only,
            )
            .await?;
            ("presence", r.summary())
        }
        Scenario::Archive {
            pairs: p,
            page_size,
            max_queries,
            ..
        } => {
            let r = archive(
                &opts,
                p.pairs,
                p.window,
                p.max_messages,
                usize_of(*page_size)?,
                *max_queries,
            )
            .await?;
            ("archive", r.summary())
        }
        Scenario::Muc {
            muc_service,
            rooms,
            occupants,
            senders,
            window,
            max_messages,
            ..
        } => {
            let m = MucOptions {
                service: muc_service
                    .clone()
                    .unwrap_or_else(|| format!("conference.{}", opts.domain)),
                rooms: usize_of(*rooms)?,
                occupants: usize_of(*occupants)?,
                senders: usize_of(*senders)?,
                window: *window,
                max_messages: *max_messages,
            };
            let r = muc(&opts, &m).await?;
            ("muc", r.summary())
        }
        Scenario::Relay { pairs: p, xml, .. } => {
            let r = relay(&opts, p.pairs, p.window, p.max_messages, *xml).await?;
            let mut s = r.summary();
            s.line("generator XML work", if *xml { "yes" } else { "no" });
            s.field("xml", u8::from(*xml));
            ("relay", s)
        }
        Scenario::Churn {
            pairs: p,
            logins,
            rounds,
            server_pid,
            ..
        } => {
            let r = churn(
                &opts,
                p.pairs,
                p.window,
                p.max_messages,
                usize_of(*logins)?,
                usize_of(*rounds)?,
                *server_pid,
            )
            .await?;
            ("churn", r.summary())
        }
        Scenario::RelayServer { .. } => unreachable!("handled above"),
    };
    let relay = matches!(args.scenario, Scenario::Relay { .. });
    let mut head = Summary::default();
    head.field("server", opts.server)
        .field("tls", if relay { "none" } else { opts.tls_name() })
        .field(
            "mechanism",
            if relay { "none" } else { opts.mechanism.name() },
        )
        .field("users", opts.users)
        .field("concurrency", opts.concurrency)
        .field("duration_s", common.duration);
    head.fields.extend(summary.fields.iter().cloned());
    println!("{setting}");
    print!("{}", summary.human_text());
    println!("{}", head.result_line(name));
    if let Some(path) = &common.json {
        std::fs::write(path, head.json(name) + "\n")
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

/// Creates {prefix}0.. in the configured storage; returns how many were new.
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
            &opts.localpart(i),
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
                result = Err(format!("{}: {e}", opts.account(i)));
                break;
            }
        }
    }
    storage.close().await;
    result.map(|()| created)
}
