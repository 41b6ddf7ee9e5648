//! The typed configuration of a Starling server (`starling.toml`).
//!
//! One serde tree with `deny_unknown_fields` everywhere, so a misspelt key is an error rather
//! than a silently ignored setting. [`Config::from_toml`] reports every problem it finds in one
//! pass, each with the line and column it comes from, so `starling check` can print them all.
//! Every key is documented in `starling.example.toml` at the repository root; a test loads that
//! file so the two cannot drift apart. A key never changes meaning: renames go through a
//! documented migration.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Virtual hosts and where data lives.
    pub server: ServerConfig,
    /// Certificate and key used by every TLS listener.
    pub tls: TlsConfig,
    /// The sockets the server listens on.
    #[serde(rename = "listener")]
    pub listeners: Vec<ListenerConfig>,
    /// Client-to-server stream settings and limits.
    pub c2s: C2sConfig,
    /// Where accounts and user data are stored.
    pub storage: StorageConfig,
    /// Logging.
    pub log: LogConfig,
    /// Message archive (XEP-0313) settings.
    pub mam: MamConfig,
    /// In-band registration (XEP-0077), off by default.
    pub register: RegisterConfig,
    /// Per-user storage limits of the IM modules.
    pub limits: LimitsConfig,
    /// Personal eventing (XEP-0163) limits.
    pub pep: PepConfig,
    /// STUN/TURN services offered through external service discovery (XEP-0215).
    #[serde(rename = "external_service")]
    pub external_services: Vec<ExternalService>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            server: ServerConfig::default(),
            tls: TlsConfig::default(),
            listeners: vec![
                ListenerConfig {
                    kind: ListenerKind::C2s,
                    address: "0.0.0.0:5222".parse().expect("static address"),
                },
                ListenerConfig {
                    kind: ListenerKind::C2sDirectTls,
                    address: "0.0.0.0:5223".parse().expect("static address"),
                },
            ],
            c2s: C2sConfig::default(),
            storage: StorageConfig::default(),
            log: LogConfig::default(),
            mam: MamConfig::default(),
            register: RegisterConfig::default(),
            limits: LimitsConfig::default(),
            pep: PepConfig::default(),
            external_services: Vec::new(),
        }
    }
}

/// `[server]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// The domains this server hosts (virtual hosts). Users are `user@host`.
    pub hosts: Vec<String>,
    /// Directory for the SQLite database and generated certificates. Relative paths are
    /// taken from the directory the server starts in.
    pub data_dir: PathBuf,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            hosts: vec!["localhost".to_owned()],
            data_dir: PathBuf::from("data"),
        }
    }
}

/// `[tls]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate chain. When both `cert` and `key` are absent the server uses (and
    /// on first start generates) a self-signed certificate in the data directory.
    pub cert: Option<PathBuf>,
    /// PEM private key matching `cert`.
    pub key: Option<PathBuf>,
}

/// One `[[listener]]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// What the listener speaks.
    pub kind: ListenerKind,
    /// Address and port to bind.
    pub address: SocketAddr,
}

/// The protocols a listener can speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ListenerKind {
    /// Client streams starting in plaintext, upgraded with STARTTLS (RFC 6120 §5), port 5222.
    C2s,
    /// Client streams inside TLS from the first byte (XEP-0368), port 5223.
    C2sDirectTls,
}

/// `[c2s]`: client stream behaviour and limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct C2sConfig {
    /// Refuse SASL and stanzas until STARTTLS has completed (RFC 6120 §5.3.1 "required").
    pub require_tls: bool,
    /// Largest stanza accepted, in bytes; a larger one ends the stream with `policy-violation`.
    pub max_stanza_bytes: usize,
    /// Deepest element nesting accepted inside a stanza.
    pub max_depth: usize,
    /// Most attributes accepted on one element.
    pub max_attributes: usize,
    /// Most elements in one stanza (the stanza and all its descendants): bounds the tree a
    /// stanza of tiny elements makes within `max_stanza_bytes` (see
    /// `starling_proto::framer::DEFAULT_MAX_ELEMENTS` for the sizes behind the default).
    pub max_elements: usize,
    /// Seconds a connection has to authenticate and bind before it is closed with
    /// `connection-timeout`.
    pub handshake_timeout_secs: u64,
    /// Seconds without any inbound byte (whitespace keepalives count) before an authenticated
    /// stream is closed with `connection-timeout`.
    pub idle_timeout_secs: u64,
    /// Stanzas that may wait in one session's outbound queue. A session whose queue stays full
    /// is a slow consumer and is closed with `policy-violation`.
    pub outbound_queue: usize,
    /// Most simultaneous client connections (all listeners together).
    pub max_connections: usize,
    /// Most simultaneous connections from one IP address.
    pub max_connections_per_ip: usize,
    /// Most resources (sessions) one account may bind at once.
    pub max_resources_per_account: usize,
    /// What happens when a client binds a resource that is already in use:
    /// `kick-old` (the old session ends with `conflict`, like Prosody and ejabberd) or
    /// `refuse-new` (the bind gets a `conflict` error).
    pub resource_conflict: ResourceConflict,
    /// PBKDF2 iterations for newly stored SCRAM credentials.
    pub scram_iterations: u32,
}

impl Default for C2sConfig {
    fn default() -> Self {
        C2sConfig {
            require_tls: true,
            max_stanza_bytes: 256 * 1024,
            max_depth: 64,
            max_attributes: 64,
            max_elements: 4096,
            handshake_timeout_secs: 30,
            idle_timeout_secs: 600,
            outbound_queue: 1024,
            max_connections: 50_000,
            max_connections_per_ip: 200,
            max_resources_per_account: 20,
            resource_conflict: ResourceConflict::KickOld,
            scram_iterations: 4096,
        }
    }
}

/// Resource conflict policy (RFC 6120 §7.7.2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ResourceConflict {
    /// Terminate the existing session with a `conflict` stream error.
    KickOld,
    /// Refuse the new bind with a `conflict` stanza error.
    RefuseNew,
}

/// `[storage]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// `sqlite://path` or `postgres://user@host/db`. Absent: SQLite file `starling.db` in
    /// the data directory.
    pub url: Option<String>,
}

/// `[log]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A `tracing` filter such as `info` or `starling_c2s=debug,info`. The environment
    /// variable `RUST_LOG` wins when set.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".to_owned(),
        }
    }
}

/// `[register]`: in-band account creation before authentication (XEP-0077 §3.1). Password
/// changes and account removal by authenticated users do not depend on it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegisterConfig {
    /// Offer and accept in-band registration (DESIGN "Security defaults": off).
    pub enabled: bool,
    /// Who may register: `allow` (anyone) or `invite-token` (only with one of `tokens`).
    pub policy: RegisterPolicy,
    /// Invite tokens accepted under `policy = "invite-token"`. Each may be used any number of
    /// times (the per-IP throttle still applies); remove a token to revoke it.
    pub tokens: Vec<String>,
    /// Registration attempts (successful or not) accepted from one IP address (one /64 for
    /// IPv6) per sliding hour; beyond it requests get `resource-constraint`.
    pub max_per_ip_per_hour: u32,
}

impl Default for RegisterConfig {
    fn default() -> Self {
        RegisterConfig {
            enabled: false,
            policy: RegisterPolicy::Allow,
            tokens: Vec::new(),
            max_per_ip_per_hour: 5,
        }
    }
}

/// Registration policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RegisterPolicy {
    /// Anyone may create an account.
    Allow,
    /// Only clients presenting one of the configured invite tokens.
    InviteToken,
}

/// `[limits]`: what one user may store, how fast one session may send, and how failed
/// logins are slowed down (DESIGN principle 3).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Most items on one roster; a roster set or subscription request beyond it is refused.
    pub roster_max_items: usize,
    /// Most offline messages kept for one user; beyond it senders get `service-unavailable`.
    pub offline_quota: u64,
    /// Largest vCard (XEP-0054) accepted, serialised, in bytes.
    pub vcard_max_bytes: usize,
    /// Sustained inbound bytes per second one bound session may send (a token bucket). Over
    /// it the server stops reading the socket until the bucket refills (TCP backpressure, as
    /// ejabberd's shapers and Prosody's mod_limits do); nothing is dropped. 0 = no limit.
    pub session_bytes_per_sec: u64,
    /// Bucket size for `session_bytes_per_sec`: bytes a session may send at once.
    pub session_bytes_burst: u64,
    /// Sustained inbound stanzas per second one bound session may send (token bucket, read
    /// paused when empty). 0 = no limit.
    pub session_stanzas_per_sec: u64,
    /// Bucket size for `session_stanzas_per_sec`.
    pub session_stanzas_burst: u64,
    /// Failed logins from one IP address (one /64 for IPv6) within
    /// `auth_failure_window_secs` before further attempts from it are delayed. Higher than
    /// the per-account count: many users may share an address (NAT).
    pub auth_address_failures_free: u32,
    /// Failed logins for one account within `auth_failure_window_secs` before further
    /// attempts for it are delayed.
    pub auth_account_failures_free: u32,
    /// The first delay, in milliseconds; each further failure doubles it.
    pub auth_failure_delay_ms: u64,
    /// The longest delay, in milliseconds.
    pub auth_failure_max_delay_ms: u64,
    /// Seconds after the last failure when an address's or account's failures are forgotten.
    pub auth_failure_window_secs: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            roster_max_items: 1000,
            offline_quota: 1000,
            vcard_max_bytes: 64 * 1024,
            session_bytes_per_sec: 1024 * 1024,
            session_bytes_burst: 4 * 1024 * 1024,
            session_stanzas_per_sec: 200,
            session_stanzas_burst: 1000,
            auth_address_failures_free: 20,
            auth_account_failures_free: 5,
            auth_failure_delay_ms: 1000,
            auth_failure_max_delay_ms: 16_000,
            auth_failure_window_secs: 900,
        }
    }
}

/// `[pep]`: what one account's personal eventing service (XEP-0163) may hold.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PepConfig {
    /// Most nodes one account may have; publishing to a new node beyond it is refused.
    pub max_nodes: usize,
    /// Most items one node keeps: what `pubsub#max_items = "max"` means, and the cap on any
    /// configured value.
    pub max_items: usize,
    /// Largest item payload accepted, serialised, in bytes (`payload-too-big` beyond it).
    pub max_item_bytes: usize,
}

impl Default for PepConfig {
    fn default() -> Self {
        PepConfig {
            max_nodes: 256,
            max_items: 1000,
            max_item_bytes: 64 * 1024,
        }
    }
}

/// One `[[external_service]]` table: a STUN or TURN server announced to clients through
/// external service discovery (XEP-0215).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalService {
    /// `stun`, `turn` or `turns` (XEP-0215 §7 registry; other registered types pass through).
    #[serde(rename = "type")]
    pub kind: String,
    /// Host name or IP address clients connect to.
    pub host: String,
    /// Port; absent means the protocol's default.
    pub port: Option<u16>,
    /// `udp` or `tcp`; absent means both or the protocol's default.
    pub transport: Option<String>,
    /// A human-readable name.
    pub name: Option<String>,
    /// Static credentials, given to every authenticated user (`password` with it).
    pub username: Option<String>,
    /// Static password for `username`.
    pub password: Option<String>,
    /// Shared secret with the TURN server: each request gets time-limited credentials
    /// (username `expiry:user`, password base64(HMAC-SHA1(secret, username)), the TURN REST
    /// API draft); excludes `username`/`password`.
    pub secret: Option<String>,
    /// Lifetime of credentials made from `secret`, in seconds.
    #[serde(default = "default_credential_ttl")]
    pub ttl_secs: u64,
}

fn default_credential_ttl() -> u64 {
    86_400
}

/// `[mam]`: the per-user message archive (XEP-0313).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MamConfig {
    /// Days an archived message is kept; older ones are deleted (oldest first, so the archive
    /// never has holes, XEP-0313 §3.2). 0 keeps messages until the user deletes the account.
    pub retention_days: u32,
}

/// One problem found in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// 1-based line, when the problem has a place in the file.
    pub line: Option<usize>,
    /// 1-based column.
    pub column: Option<usize>,
    /// What is wrong, in words an operator understands.
    pub message: String,
}

impl std::fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.line, self.column) {
            (Some(l), Some(c)) => write!(f, "line {l}, column {c}: {}", self.message),
            (Some(l), None) => write!(f, "line {l}: {}", self.message),
            _ => write!(f, "{}", self.message),
        }
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rfind('\n')
        .map_or(before.len(), |nl| before.len() - nl - 1)
        + 1;
    (line, column)
}

/// Finds the line on which `key = ` is written, for semantic errors that serde cannot place.
fn line_of_key(text: &str, key: &str) -> Option<usize> {
    text.lines()
        .position(|l| {
            let t = l.trim_start();
            t.starts_with(key) && t[key.len()..].trim_start().starts_with('=')
        })
        .map(|i| i + 1)
}

impl Config {
    /// Parses and validates a configuration file's text. Returns every problem found.
    pub fn from_toml(text: &str) -> Result<Config, Vec<ConfigProblem>> {
        let config: Config = match toml::from_str(text) {
            Ok(c) => c,
            Err(e) => {
                let (line, column) = match e.span() {
                    Some(span) => {
                        let (l, c) = line_col(text, span.start);
                        (Some(l), Some(c))
                    }
                    None => (None, None),
                };
                return Err(vec![ConfigProblem {
                    line,
                    column,
                    message: e.message().trim().to_owned(),
                }]);
            }
        };
        let problems = config.validate(Some(text));
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(problems)
        }
    }

    /// Reads and validates a configuration file.
    pub fn load(path: &std::path::Path) -> Result<Config, Vec<ConfigProblem>> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            vec![ConfigProblem {
                line: None,
                column: None,
                message: format!("cannot read {}: {e}", path.display()),
            }]
        })?;
        Config::from_toml(&text)
    }

    /// Semantic checks that the types cannot express. `text` places problems on lines.
    pub fn validate(&self, text: Option<&str>) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        let mut problem = |key: &str, message: String| {
            problems.push(ConfigProblem {
                line: text.and_then(|t| line_of_key(t, key)),
                column: None,
                message,
            })
        };
        if self.server.hosts.is_empty() {
            problem("hosts", "server.hosts must name at least one domain".into());
        }
        for host in &self.server.hosts {
            match starling_proto::jid::Jid::parse(host) {
                Ok(j) if j.is_bare() && j.node().is_none() => {}
                _ => problem("hosts", format!("'{host}' is not a valid domain name")),
            }
        }
        if self.tls.cert.is_some() != self.tls.key.is_some() {
            problem(
                if self.tls.cert.is_some() {
                    "cert"
                } else {
                    "key"
                },
                "tls.cert and tls.key must be given together".into(),
            );
        }
        let c2s = &self.c2s;
        let limits = [
            (
                "max_stanza_bytes",
                c2s.max_stanza_bytes,
                1024,
                64 * 1024 * 1024,
            ),
            ("max_depth", c2s.max_depth, 4, 10_000),
            ("max_attributes", c2s.max_attributes, 4, 10_000),
            ("max_elements", c2s.max_elements, 16, 1_000_000),
            ("outbound_queue", c2s.outbound_queue, 8, 1_000_000),
            ("max_connections", c2s.max_connections, 1, 10_000_000),
            (
                "max_connections_per_ip",
                c2s.max_connections_per_ip,
                1,
                10_000_000,
            ),
            (
                "max_resources_per_account",
                c2s.max_resources_per_account,
                1,
                10_000,
            ),
        ];
        for (key, value, min, max) in limits {
            if value < min || value > max {
                problem(
                    key,
                    format!("c2s.{key} = {value} is out of range ({min}..={max})"),
                );
            }
        }
        if c2s.handshake_timeout_secs == 0 || c2s.idle_timeout_secs == 0 {
            problem(
                if c2s.handshake_timeout_secs == 0 {
                    "handshake_timeout_secs"
                } else {
                    "idle_timeout_secs"
                },
                "timeouts must be at least one second".into(),
            );
        }
        if !(1000..=10_000_000).contains(&c2s.scram_iterations) {
            problem(
                "scram_iterations",
                format!(
                    "c2s.scram_iterations = {} is out of range (1000..=10000000)",
                    c2s.scram_iterations
                ),
            );
        }
        if let Some(url) = &self.storage.url {
            if !(url.starts_with("sqlite:")
                || url.starts_with("postgres://")
                || url.starts_with("postgresql://"))
            {
                problem(
                    "url",
                    format!("storage.url '{url}' must start with sqlite: or postgres://"),
                );
            }
        }
        let reg = &self.register;
        if reg.policy == RegisterPolicy::InviteToken
            && (reg.tokens.is_empty() || reg.tokens.iter().any(|t| t.trim().is_empty()))
        {
            problem(
                "tokens",
                "register.policy = \"invite-token\" needs a non-empty list of non-empty tokens"
                    .into(),
            );
        }
        if !(1..=1_000_000).contains(&reg.max_per_ip_per_hour) {
            problem(
                "max_per_ip_per_hour",
                format!(
                    "register.max_per_ip_per_hour = {} is out of range (1..=1000000)",
                    reg.max_per_ip_per_hour
                ),
            );
        }
        let lim = &self.limits;
        let user_limits = [
            (
                "roster_max_items",
                lim.roster_max_items as u64,
                1,
                1_000_000,
            ),
            ("offline_quota", lim.offline_quota, 0, 1_000_000),
            (
                "vcard_max_bytes",
                lim.vcard_max_bytes as u64,
                1024,
                16 * 1024 * 1024,
            ),
            (
                "session_bytes_per_sec",
                lim.session_bytes_per_sec,
                0,
                1 << 40,
            ),
            ("session_bytes_burst", lim.session_bytes_burst, 1, 1 << 40),
            (
                "session_stanzas_per_sec",
                lim.session_stanzas_per_sec,
                0,
                1 << 30,
            ),
            (
                "session_stanzas_burst",
                lim.session_stanzas_burst,
                1,
                1 << 30,
            ),
            (
                "auth_address_failures_free",
                u64::from(lim.auth_address_failures_free),
                0,
                1_000_000,
            ),
            (
                "auth_account_failures_free",
                u64::from(lim.auth_account_failures_free),
                0,
                1_000_000,
            ),
            (
                "auth_failure_delay_ms",
                lim.auth_failure_delay_ms,
                1,
                600_000,
            ),
            (
                "auth_failure_max_delay_ms",
                lim.auth_failure_max_delay_ms,
                lim.auth_failure_delay_ms,
                600_000,
            ),
            (
                "auth_failure_window_secs",
                lim.auth_failure_window_secs,
                1,
                86_400 * 30,
            ),
        ];
        for (key, value, min, max) in user_limits {
            if value < min || value > max {
                problem(
                    key,
                    format!("limits.{key} = {value} is out of range ({min}..={max})"),
                );
            }
        }
        let pep = &self.pep;
        for (key, value, min, max) in [
            ("max_nodes", pep.max_nodes, 1, 100_000),
            ("max_items", pep.max_items, 1, 100_000),
            ("max_item_bytes", pep.max_item_bytes, 1024, 16 * 1024 * 1024),
        ] {
            if value < min || value > max {
                problem(
                    key,
                    format!("pep.{key} = {value} is out of range ({min}..={max})"),
                );
            }
        }
        for svc in &self.external_services {
            if svc.kind.trim().is_empty() || svc.host.trim().is_empty() {
                problem(
                    "host",
                    "external_service needs a non-empty type and host".into(),
                );
            }
            if svc.username.is_some() != svc.password.is_some() {
                problem(
                    "username",
                    format!(
                        "external_service {}: username and password go together",
                        svc.host
                    ),
                );
            }
            if svc.secret.is_some() && svc.username.is_some() {
                problem(
                    "secret",
                    format!(
                        "external_service {}: use either secret or username/password",
                        svc.host
                    ),
                );
            }
            if svc.secret.as_deref().is_some_and(str::is_empty) || svc.ttl_secs == 0 {
                problem(
                    "secret",
                    format!(
                        "external_service {}: secret must not be empty, ttl_secs at least 1",
                        svc.host
                    ),
                );
            }
        }
        let mut seen = std::collections::HashSet::new();
        for l in &self.listeners {
            if !seen.insert(l.address) {
                problem("address", format!("two listeners bind {}", l.address));
            }
        }
        if self.mam.retention_days > 36_500 {
            problem(
                "retention_days",
                format!(
                    "mam.retention_days = {} is out of range (0..=36500)",
                    self.mam.retention_days
                ),
            );
        }
        problems
    }

    /// The storage URL to open: the configured one or SQLite in the data directory.
    pub fn storage_url(&self) -> String {
        match &self.storage.url {
            Some(u) => u.clone(),
            None => format!(
                "sqlite://{}",
                self.server.data_dir.join("starling.db").display()
            ),
        }
    }

    /// Whether `domain` is one of our virtual hosts.
    pub fn is_local_host(&self, domain: &str) -> bool {
        self.server.hosts.iter().any(|h| h == domain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_defaults() {
        let c = Config::from_toml("").unwrap();
        assert_eq!(c.server.hosts, vec!["localhost"]);
        assert_eq!(c.c2s.max_stanza_bytes, 262_144);
        assert!(c.c2s.require_tls);
        assert_eq!(c.listeners.len(), 2);
    }

    #[test]
    fn unknown_key_is_reported_with_its_line() {
        let text = "[server]\nhosts = [\"example.org\"]\n\n[c2s]\nmax_stanza_byte = 10\n";
        let problems = Config::from_toml(text).unwrap_err();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].line, Some(5), "{problems:?}");
        assert!(
            problems[0].message.contains("max_stanza_byte"),
            "{problems:?}"
        );
    }

    #[test]
    fn semantic_problems_are_all_reported() {
        let text =
            "[server]\nhosts = [\"bad domain@x\"]\n[tls]\ncert = \"a.pem\"\n[c2s]\nmax_depth = 1\n";
        let problems = Config::from_toml(text).unwrap_err();
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert_eq!(problems[0].line, Some(2));
        assert_eq!(problems[1].line, Some(4));
        assert_eq!(problems[2].line, Some(6));
    }

    #[test]
    fn listeners_parse() {
        let text = "[[listener]]\nkind = \"c2s\"\naddress = \"127.0.0.1:15222\"\n[[listener]]\nkind = \"c2s-direct-tls\"\naddress = \"[::1]:15223\"\n";
        let c = Config::from_toml(text).unwrap();
        assert_eq!(c.listeners[1].kind, ListenerKind::C2sDirectTls);
        let bad = Config::from_toml("[[listener]]\nkind = \"smtp\"\naddress = \"127.0.0.1:1\"\n")
            .unwrap_err();
        assert_eq!(bad[0].line, Some(2), "{bad:?}");
    }

    #[test]
    fn register_and_limits_sections() {
        let c = Config::from_toml("").unwrap();
        assert!(!c.register.enabled);
        assert_eq!(c.register.policy, RegisterPolicy::Allow);
        assert_eq!(c.register.max_per_ip_per_hour, 5);
        assert_eq!(c.limits.roster_max_items, 1000);
        assert_eq!(c.limits.offline_quota, 1000);
        assert_eq!(c.limits.vcard_max_bytes, 65536);
        let text = "[register]\nenabled = true\npolicy = \"invite-token\"\ntokens = [\"a\"]\n";
        let c = Config::from_toml(text).unwrap();
        assert_eq!(c.register.policy, RegisterPolicy::InviteToken);
        let bad = "[register]\npolicy = \"invite-token\"\n\n[limits]\nvcard_max_bytes = 1\n";
        let problems = Config::from_toml(bad).unwrap_err();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert_eq!(problems[1].line, Some(5), "{problems:?}");
    }

    #[test]
    fn rate_and_auth_throttle_limits() {
        let c = Config::from_toml("").unwrap();
        assert_eq!(c.c2s.max_elements, 4096);
        assert_eq!(c.limits.session_stanzas_per_sec, 200);
        assert_eq!(c.limits.auth_address_failures_free, 20);
        assert_eq!(c.limits.auth_account_failures_free, 5);
        let text = "[limits]
session_bytes_per_sec = 0
session_stanzas_per_sec = 0
";
        let c = Config::from_toml(text).unwrap();
        assert_eq!(c.limits.session_bytes_per_sec, 0, "0 turns the limit off");
        let bad = "[c2s]
max_elements = 1
[limits]
session_stanzas_burst = 0
                   auth_failure_delay_ms = 500
auth_failure_max_delay_ms = 100
";
        let problems = Config::from_toml(bad).unwrap_err();
        let lines: Vec<_> = problems.iter().map(|p| p.line).collect();
        assert_eq!(lines, vec![Some(2), Some(4), Some(6)], "{problems:?}");
    }

    #[test]
    fn pep_and_external_services() {
        let c = Config::from_toml("").unwrap();
        assert_eq!(c.pep.max_item_bytes, 65536);
        assert!(c.external_services.is_empty());
        let text = "[[external_service]]\ntype = \"turn\"\nhost = \"turn.example.org\"\nport = 3478\ntransport = \"udp\"\nsecret = \"s3cret\"\n";
        let c = Config::from_toml(text).unwrap();
        assert_eq!(c.external_services[0].port, Some(3478));
        assert_eq!(c.external_services[0].ttl_secs, 86_400);
        let bad = "[pep]\nmax_nodes = 0\n[[external_service]]\ntype = \"turn\"\nhost = \"t\"\nusername = \"u\"\n";
        let problems = Config::from_toml(bad).unwrap_err();
        assert_eq!(problems.len(), 2, "{problems:?}");
    }

    #[test]
    fn example_config_loads() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../starling.example.toml");
        let text = std::fs::read_to_string(path).expect("starling.example.toml exists");
        Config::from_toml(&text).unwrap_or_else(|p| panic!("example config: {p:?}"));
    }
}
