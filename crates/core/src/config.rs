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
    /// Push notifications (XEP-0357).
    pub push: PushConfig,
    /// STUN/TURN services offered through external service discovery (XEP-0215).
    #[serde(rename = "external_service")]
    pub external_services: Vec<ExternalService>,
    /// Optional modules switched off.
    pub modules: ModulesConfig,
    /// External components (XEP-0114).
    pub components: ComponentsConfig,
    /// HTTP file upload (XEP-0363).
    pub upload: UploadConfig,
    /// Multi-user chat (XEP-0045) service.
    pub muc: MucConfig,
    /// Browser transports on the HTTP listeners: WebSocket, BOSH, host-meta, CORS.
    pub http: HttpConfig,
    /// Federation with other servers (RFC 6120 server-to-server streams), off by default.
    pub s2s: S2sConfig,
    /// The SIP/SIMPLE gateway (RFC 3922), off by default.
    pub sip: SipConfig,
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
                ListenerConfig {
                    kind: ListenerKind::Http,
                    address: "127.0.0.1:5280".parse().expect("static address"),
                },
                ListenerConfig {
                    kind: ListenerKind::Https,
                    address: "0.0.0.0:5443".parse().expect("static address"),
                },
            ],
            c2s: C2sConfig::default(),
            storage: StorageConfig::default(),
            log: LogConfig::default(),
            mam: MamConfig::default(),
            register: RegisterConfig::default(),
            limits: LimitsConfig::default(),
            pep: PepConfig::default(),
            push: PushConfig::default(),
            external_services: Vec::new(),
            modules: ModulesConfig::default(),
            components: ComponentsConfig::default(),
            upload: UploadConfig::default(),
            muc: MucConfig::default(),
            http: HttpConfig::default(),
            s2s: S2sConfig::default(),
            sip: SipConfig::default(),
        }
    }
}

/// `[upload]`: HTTP file upload (XEP-0363). The upload service is `upload.<host>` for each
/// host; files live in `data_dir/upload` and are served by the HTTP listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UploadConfig {
    /// Offer the service (it also needs an HTTP listener to serve the files).
    pub enabled: bool,
    /// Base URL of the HTTP listener as clients reach it (`https://chat.example.org:5443`).
    /// Absent: the address the HTTP listener bound, with the first host as name.
    pub public_url: Option<String>,
    /// Largest file, in bytes.
    pub max_file_bytes: u64,
    /// Most bytes one account may keep uploaded; 0 means no quota.
    pub quota_bytes: u64,
    /// Seconds a slot's signed PUT URL stays valid.
    pub put_ttl_secs: u64,
    /// Days a file is kept (and its signed GET URL valid); 0 keeps files forever.
    pub file_ttl_days: u64,
}

impl Default for UploadConfig {
    fn default() -> Self {
        UploadConfig {
            enabled: true,
            public_url: None,
            max_file_bytes: 50 * 1024 * 1024,
            quota_bytes: 1024 * 1024 * 1024,
            put_ttl_secs: 300,
            file_ttl_days: 30,
        }
    }
}

/// `[components]`: external components (XEP-0114), processes that serve a domain of their
/// own (a gateway, a bot service) over a stream authenticated by a shared secret.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ComponentsConfig {
    /// Where components connect. The stream is not encrypted (XEP-0114 has no TLS), so
    /// keep it on loopback or a private network. Only opened when a component is listed.
    pub listen: SocketAddr,
    /// Largest stanza a component may send, in bytes.
    pub max_stanza_bytes: usize,
    /// Most stanzas queued for one component before it counts as a slow consumer.
    pub queue_len: usize,
    /// Seconds a connecting component has to finish the handshake.
    pub handshake_timeout_secs: u64,
    /// The components allowed to connect.
    #[serde(rename = "component")]
    pub list: Vec<ComponentEntry>,
}

impl Default for ComponentsConfig {
    fn default() -> Self {
        ComponentsConfig {
            listen: "127.0.0.1:5347".parse().expect("static address"),
            max_stanza_bytes: 524_288,
            queue_len: 4096,
            handshake_timeout_secs: 10,
            list: Vec::new(),
        }
    }
}

/// One `[[components.component]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComponentEntry {
    /// The domain the component serves (e.g. `gateway.example.org`).
    pub domain: String,
    /// The shared secret of the handshake.
    pub secret: String,
}

/// `[modules]`: optional features an operator may switch off.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModulesConfig {
    /// Names of modules not to load (see starling.example.toml for the list). The core
    /// modules (disco, roster, presence, privacy...) cannot be switched off.
    pub disable: Vec<String>,
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
    /// Plaintext HTTP (WebSocket, BOSH, host-meta), port 5280. Client streams over it are
    /// accepted from loopback peers (a TLS-terminating proxy) or when `c2s.require_tls` is off.
    Http,
    /// HTTPS with the server certificate, port 5443.
    Https,
}

/// `[http]`: browser transports (RFC 7395 WebSocket, XEP-0124/0206 BOSH, XEP-0156 host-meta).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Path of the WebSocket endpoint (RFC 7395).
    pub websocket_path: String,
    /// Path of the BOSH endpoint (XEP-0206).
    pub bosh_path: String,
    /// Origins (`scheme://host[:port]`) whose pages may use WebSocket and BOSH; `"*"` allows
    /// any. Checked against the `Origin` header; requests without one (non-browser clients)
    /// are allowed.
    pub allowed_origins: Vec<String>,
    /// Public base URL (`https://chat.example.org`) announced in host-meta. Absent: taken
    /// from the request's `Host` header and scheme.
    pub public_url: Option<String>,
    /// RFC 7395 §3.5 see-other-uri: when set, WebSocket clients are sent there at once.
    pub websocket_see_other_uri: Option<String>,
    /// Seconds between WebSocket pings; a peer that has not answered (pong, or any message)
    /// by the next ping is disconnected.
    pub websocket_ping_secs: u64,
    /// Most BOSH sessions at once (all clients together).
    pub bosh_max_sessions: usize,
    /// Longest `wait` a BOSH client may ask for, in seconds.
    pub bosh_max_wait_secs: u64,
    /// Most requests the connection manager holds at once per BOSH session (`hold`).
    pub bosh_max_hold: u32,
    /// Seconds a BOSH session may have no request outstanding before it ends.
    pub bosh_inactivity_secs: u64,
    /// Most HTTP connections at once on each HTTP listener.
    pub max_http_connections: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            websocket_path: "/xmpp-websocket".to_owned(),
            bosh_path: "/http-bind".to_owned(),
            allowed_origins: vec!["*".to_owned()],
            public_url: None,
            websocket_see_other_uri: None,
            websocket_ping_secs: 30,
            bosh_max_sessions: 10_000,
            bosh_max_wait_secs: 60,
            bosh_max_hold: 1,
            bosh_inactivity_secs: 60,
            max_http_connections: 10_000,
        }
    }
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
    /// Seconds a stream-managed session (XEP-0198) whose connection broke stays hibernated,
    /// bound and present, waiting for the client to resume it. 0 turns resumption off
    /// (stream management still acks).
    pub resume_timeout_secs: u64,
    /// Most stanzas sent to a stream-managed client and not yet acknowledged. More close the
    /// session as a slow consumer (`policy-violation`); what was not acknowledged is then
    /// re-routed (other resources, offline storage, or an error to the sender).
    pub max_unacked: usize,
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
            resume_timeout_secs: 300,
            max_unacked: 1000,
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
    /// Seconds a session may stay over its stanza or byte rate (reads paused back to back,
    /// the bucket never refilling to half) before it is closed with `policy-violation`.
    /// 0 = only pace, never disconnect.
    pub rate_limit_disconnect_secs: u64,
    /// New client connections one IP address (one /64 for IPv6) may open per minute; more
    /// put the address in the penalty box for `address_ban_secs`. 0 = no limit.
    pub connections_per_ip_per_minute: u32,
    /// Failed logins from one address within `auth_failure_window_secs` after which the
    /// address is refused for `address_ban_secs`. 0 = never (only the delays apply).
    pub auth_address_ban_after: u32,
    /// Seconds an address in the penalty box has its new client connections refused.
    pub address_ban_secs: u64,
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
            rate_limit_disconnect_secs: 60,
            connections_per_ip_per_minute: 300,
            auth_address_ban_after: 60,
            address_ban_secs: 900,
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

/// `[push]`: push notifications (XEP-0357) to the app servers of mobile clients.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PushConfig {
    /// Put the sender's JID in the notification (`last-message-sender`).
    pub include_sender: bool,
    /// Put the message text in the notification (`last-message-body`). Off by default: the
    /// app server, and the push service behind it, would read every message (XEP-0357 §8).
    pub include_body: bool,
    /// Most push registrations (app server + node) one account may have.
    pub max_registrations: usize,
}

impl Default for PushConfig {
    fn default() -> Self {
        PushConfig {
            include_sender: true,
            include_body: false,
            max_registrations: 10,
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

/// `[sip]`: the SIP/SIMPLE gateway (RFC 3922). SIP user agents reach XMPP users as
/// `sip:user@<host>`; XMPP users reach SIP users as `user%sipdomain@<domain>`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SipConfig {
    /// Run the gateway. Off by default (DESIGN "Security defaults").
    pub enabled: bool,
    /// The XMPP domain the gateway serves (where `user%sipdomain@...` JIDs live). Absent:
    /// `sip.` followed by the first of `server.hosts`.
    pub domain: Option<String>,
    /// Address and port for SIP over both UDP and TCP. Loopback by default.
    pub listen: SocketAddr,
    /// Host (and port) put in the gateway's Contact headers. Absent: the listen address.
    pub contact_host: Option<String>,
    /// Where requests for each SIP domain go (static routes; no DNS). Requests are only
    /// accepted from the IP addresses of these routes.
    #[serde(rename = "route")]
    pub routes: Vec<SipRoute>,
    /// How messages to SIP users are carried: `cpim` (Message/CPIM, RFC 3922 §4) or `text`
    /// (text/plain with a SIP Subject header, RFC 7572).
    pub message_format: SipMessageFormat,
    /// Largest SIP message accepted or sent, in bytes (headers and body).
    pub max_message_bytes: usize,
    /// Largest request sent or accepted over UDP (RFC 3428 §5: 1300). A larger MESSAGE that
    /// arrives over UDP is answered 513; a larger request we send goes over TCP.
    pub udp_max_bytes: usize,
    /// Most SIP transactions (client and server) open at once; beyond it requests get 503.
    pub max_transactions: usize,
    /// Most presence subscriptions (both directions) the gateway keeps.
    pub max_subscriptions: usize,
    /// Most presence subscriptions one XMPP user may have through the gateway.
    pub max_subscriptions_per_user: usize,
    /// Expires (seconds) asked for and granted on SUBSCRIBE; refreshed before it runs out.
    pub subscription_expires_secs: u32,
    /// Most TCP connections (inbound and outbound together).
    pub max_tcp_connections: usize,
    /// Requests accepted from one IP address per second (burst of the same size).
    pub max_requests_per_ip_per_sec: u32,
}

impl Default for SipConfig {
    fn default() -> Self {
        SipConfig {
            enabled: false,
            domain: None,
            listen: "127.0.0.1:5060".parse().expect("static address"),
            contact_host: None,
            routes: Vec::new(),
            message_format: SipMessageFormat::Cpim,
            max_message_bytes: 64 * 1024,
            udp_max_bytes: 1300,
            max_transactions: 1024,
            max_subscriptions: 10_000,
            max_subscriptions_per_user: 100,
            subscription_expires_secs: 3600,
            max_tcp_connections: 256,
            max_requests_per_ip_per_sec: 100,
        }
    }
}

impl SipConfig {
    /// The gateway's XMPP domain: the configured one or `sip.<first host>`.
    pub fn gateway_domain(&self, server: &ServerConfig) -> String {
        match &self.domain {
            Some(d) => d.clone(),
            None => format!(
                "sip.{}",
                server.hosts.first().map_or("localhost", String::as_str)
            ),
        }
    }
}

/// One `[[sip.route]]`: a SIP domain and the address its requests go to.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SipRoute {
    /// The SIP domain, e.g. `sip.example.org` (host part of `sip:user@host`).
    pub domain: String,
    /// Where its proxy or user agent listens.
    pub address: SocketAddr,
    /// `udp` or `tcp`.
    #[serde(default)]
    pub transport: SipTransport,
}

/// A SIP transport.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SipTransport {
    /// UDP (requests above `udp_max_bytes` go over TCP).
    #[default]
    Udp,
    /// TCP.
    Tcp,
}

/// How the gateway writes MESSAGE bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SipMessageFormat {
    /// `Message/CPIM` around `text/plain` (RFC 3922 §4).
    Cpim,
    /// Plain `text/plain`, subject in a SIP `Subject` header (RFC 7572).
    Text,
}

/// `[s2s]`: federation with other servers (RFC 6120 §4–§6 for server streams, XEP-0220
/// dialback, XEP-0178 certificate authentication, XEP-0368 direct TLS).
///
/// Off by default: the zero-configuration server is `localhost`, a name no other server can
/// reach or verify, and opening port 5269 on every interface without the operator asking for
/// it would expose a listener nobody configured.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct S2sConfig {
    /// Accept and open server-to-server streams.
    pub enabled: bool,
    /// Address of the listener for streams that start in plaintext and upgrade with
    /// STARTTLS (`_xmpp-server._tcp`, port 5269).
    pub listen: SocketAddr,
    /// Address of a listener for streams inside TLS from the first byte (XEP-0368,
    /// `_xmpps-server._tcp`); absent: none.
    pub listen_direct_tls: Option<SocketAddr>,
    /// How peers must authenticate: `verify` (a certificate valid for the peer's domain,
    /// SASL EXTERNAL), `dialback` (certificates when valid, Server Dialback otherwise), or
    /// `plaintext-for-tests` (dialback, and TLS optional: never in production).
    pub policy: S2sPolicy,
    /// PEM file with the certificate authorities that peer certificates must chain to.
    /// Absent: the system bundle `/etc/ssl/certs/ca-certificates.crt` when it exists.
    pub trust_roots: Option<PathBuf>,
    /// Static routes that override DNS: tests and private deployments.
    #[serde(rename = "route")]
    pub routes: Vec<S2sRoute>,
    /// Look remote domains without a static route up in DNS (SRV, then A/AAAA). Off: only
    /// static routes are reachable (tests, closed federations).
    pub dns: bool,
    /// Largest stanza accepted from a peer, in bytes.
    pub max_stanza_bytes: usize,
    /// Stanzas waiting for one remote domain while its stream is set up or busy; beyond it
    /// senders get `resource-constraint`.
    pub queue_size: usize,
    /// Seconds to reach and authenticate with a remote server before queued stanzas bounce
    /// with `remote-server-timeout`.
    pub connect_timeout_secs: u64,
    /// Seconds an inbound connection has to authenticate.
    pub handshake_timeout_secs: u64,
    /// Seconds without traffic after which a stream is closed (re-opened on demand).
    pub idle_timeout_secs: u64,
    /// Most inbound connections from all peers together.
    pub max_inbound_connections: usize,
    /// Most inbound connections authenticated for one remote domain.
    pub max_connections_per_domain: usize,
    /// Stanzas per second one inbound stream may send on average (bursts up to twice
    /// that); faster peers are read more slowly.
    pub stanzas_per_second: u32,
    /// Bidirectional streams (XEP-0288): offer them to peers and ask for them, so that one
    /// connection carries stanzas both ways. Off: one stream per direction (RFC 6120 §4.1).
    pub bidi: bool,
}

impl Default for S2sConfig {
    fn default() -> Self {
        S2sConfig {
            enabled: false,
            listen: "0.0.0.0:5269".parse().expect("static address"),
            listen_direct_tls: None,
            policy: S2sPolicy::Verify,
            trust_roots: None,
            routes: Vec::new(),
            dns: true,
            max_stanza_bytes: 512 * 1024,
            queue_size: 256,
            connect_timeout_secs: 20,
            handshake_timeout_secs: 30,
            idle_timeout_secs: 600,
            max_inbound_connections: 1000,
            max_connections_per_domain: 4,
            stanzas_per_second: 200,
            bidi: true,
        }
    }
}

/// How server-to-server peers authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum S2sPolicy {
    /// TLS with a certificate valid for the peer's domain (SASL EXTERNAL), nothing else.
    Verify,
    /// Certificates when they verify, Server Dialback (XEP-0220) otherwise; TLS required.
    Dialback,
    /// Dialback with TLS optional. For tests on loopback only.
    PlaintextForTests,
}

/// One `[[s2s.route]]`: where to reach a remote domain, instead of DNS.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S2sRoute {
    /// The remote domain.
    pub domain: String,
    /// IP address and port of its server.
    pub address: SocketAddr,
    /// Whether that port speaks TLS from the first byte (XEP-0368) instead of STARTTLS.
    #[serde(default)]
    pub direct_tls: bool,
}

/// `[mam]`: the per-user message archive (XEP-0313).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MamConfig {
    /// Days an archived message is kept; older ones are deleted (oldest first, so the archive
    /// never has holes, XEP-0313 §3.2). 0 keeps messages until the user deletes the account.
    pub retention_days: u32,
    /// Most messages one user's archive holds; when an append goes over it, the oldest are
    /// deleted (down to 99% of it) and the deletion is logged. 0 = no cap.
    pub max_messages_per_user: u64,
}

impl Default for MamConfig {
    fn default() -> Self {
        MamConfig {
            retention_days: 0,
            max_messages_per_user: 100_000,
        }
    }
}

/// Who may create chat rooms (`[muc] create`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RoomCreation {
    /// Any entity that can reach the service, local or (through federation) remote.
    Anyone,
    /// Accounts of this server's hosts.
    Local,
    /// Only the JIDs listed in `[muc] admins`.
    Admins,
}

/// `[muc]`: the multi-user chat service (XEP-0045), a module serving its own domain.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MucConfig {
    /// Whether the service runs.
    pub enabled: bool,
    /// The service's domain; `{host}` is replaced by each virtual host, giving one service
    /// per host.
    pub domain: String,
    /// Who may create rooms.
    pub create: RoomCreation,
    /// Bare JIDs that administer the service: they may create rooms under every policy and
    /// are owners of every room.
    pub admins: Vec<String>,
    /// Most rooms in memory at once (rooms with occupants, and empty ones being loaded);
    /// creating or entering more is refused with `resource-constraint`.
    pub max_rooms: usize,
    /// Most occupants in one room: the cap on (and default of) `muc#roomconfig_maxusers`.
    pub max_occupants: usize,
    /// Messages of discussion history a joining occupant gets unless it asks otherwise.
    pub history_default: usize,
    /// Messages of discussion history a room keeps in memory (and the most one join gets).
    pub history_max: usize,
    /// Default of `muc#roomconfig_enablelogging`: new rooms archive their messages (MAM on
    /// the room's JID).
    pub logging_default: bool,
    /// Default of `muc#roomconfig_persistentroom` for new rooms.
    pub persistent_default: bool,
    /// Most affiliations (owners, admins, members, outcasts) one room records.
    pub max_affiliations: usize,
    /// Stanzas queued for one room before senders get `resource-constraint`.
    pub room_queue: usize,
    /// Most messages one room's archive holds; when an append goes over it, the oldest are
    /// deleted (down to 99% of it) and the deletion is logged, as `[mam]
    /// max_messages_per_user` does for users. 0 = no cap.
    pub max_messages_per_room: u64,
}

impl Default for MucConfig {
    fn default() -> Self {
        MucConfig {
            enabled: true,
            domain: "conference.{host}".to_owned(),
            create: RoomCreation::Local,
            admins: Vec::new(),
            max_rooms: 10_000,
            max_occupants: 1000,
            history_default: 20,
            history_max: 100,
            logging_default: true,
            persistent_default: false,
            max_affiliations: 10_000,
            room_queue: 1024,
            max_messages_per_room: 100_000,
        }
    }
}

impl MucConfig {
    /// The service domain for `host`.
    pub fn domain_for(&self, host: &str) -> String {
        self.domain.replace("{host}", host)
    }
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
        let mut seen_components = std::collections::HashSet::new();
        for c in &self.components.list {
            match starling_proto::jid::Jid::parse(&c.domain) {
                Ok(j) if j.is_bare() && j.node().is_none() => {}
                _ => problem(
                    "domain",
                    format!("component domain '{}' is not a valid domain name", c.domain),
                ),
            }
            if self.is_local_host(&c.domain) {
                problem(
                    "domain",
                    format!("component domain '{}' is also a user host", c.domain),
                );
            }
            if !seen_components.insert(c.domain.as_str()) {
                problem(
                    "domain",
                    format!("component domain '{}' is listed twice", c.domain),
                );
            }
            if c.secret.len() < 16 {
                problem(
                    "secret",
                    format!(
                        "the secret of component '{}' is shorter than 16 characters",
                        c.domain
                    ),
                );
            }
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
            ("max_unacked", c2s.max_unacked, 8, 1_000_000),
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
        if c2s.resume_timeout_secs > 86_400 {
            problem(
                "resume_timeout_secs",
                format!(
                    "c2s.resume_timeout_secs = {} is out of range (0..=86400)",
                    c2s.resume_timeout_secs
                ),
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
        let http = &self.http;
        for (key, path) in [
            ("websocket_path", &http.websocket_path),
            ("bosh_path", &http.bosh_path),
        ] {
            if !path.starts_with('/') || path.len() < 2 || path.starts_with("/.well-known") {
                problem(
                    key,
                    format!("http.{key} = '{path}' must be a path like /xmpp-websocket"),
                );
            }
        }
        if http.websocket_path == http.bosh_path {
            problem(
                "bosh_path",
                "http.websocket_path and http.bosh_path must differ".into(),
            );
        }
        for (key, value, min, max) in [
            ("websocket_ping_secs", http.websocket_ping_secs, 1, 3600),
            (
                "bosh_max_sessions",
                http.bosh_max_sessions as u64,
                1,
                10_000_000,
            ),
            ("bosh_max_wait_secs", http.bosh_max_wait_secs, 1, 3600),
            ("bosh_max_hold", u64::from(http.bosh_max_hold), 1, 16),
            ("bosh_inactivity_secs", http.bosh_inactivity_secs, 1, 3600),
            (
                "max_http_connections",
                http.max_http_connections as u64,
                1,
                10_000_000,
            ),
        ] {
            if value < min || value > max {
                problem(
                    key,
                    format!("http.{key} = {value} is out of range ({min}..={max})"),
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
        let s2s = &self.s2s;
        for (key, value, min, max) in [
            (
                "max_stanza_bytes",
                s2s.max_stanza_bytes as u64,
                1024,
                64 * 1024 * 1024,
            ),
            ("queue_size", s2s.queue_size as u64, 1, 1_000_000),
            ("connect_timeout_secs", s2s.connect_timeout_secs, 1, 3600),
            (
                "handshake_timeout_secs",
                s2s.handshake_timeout_secs,
                1,
                3600,
            ),
            ("idle_timeout_secs", s2s.idle_timeout_secs, 1, 86_400),
            (
                "max_inbound_connections",
                s2s.max_inbound_connections as u64,
                1,
                1_000_000,
            ),
            (
                "max_connections_per_domain",
                s2s.max_connections_per_domain as u64,
                1,
                1000,
            ),
            (
                "stanzas_per_second",
                u64::from(s2s.stanzas_per_second),
                1,
                1_000_000,
            ),
        ] {
            if value < min || value > max {
                problem(
                    key,
                    format!("s2s.{key} = {value} is out of range ({min}..={max})"),
                );
            }
        }
        for route in &s2s.routes {
            match starling_proto::jid::Jid::parse(&route.domain) {
                Ok(j) if j.is_bare() && j.node().is_none() && !self.is_local_host(j.domain()) => {}
                _ => problem(
                    "domain",
                    format!("s2s route '{}' must be a remote domain name", route.domain),
                ),
            }
        }
        let sip = &self.sip;
        for (key, value, min, max) in [
            (
                "max_message_bytes",
                sip.max_message_bytes,
                1024,
                16 * 1024 * 1024,
            ),
            ("udp_max_bytes", sip.udp_max_bytes, 500, 65_000),
            ("max_transactions", sip.max_transactions, 1, 1_000_000),
            ("max_subscriptions", sip.max_subscriptions, 1, 10_000_000),
            (
                "max_subscriptions_per_user",
                sip.max_subscriptions_per_user,
                1,
                100_000,
            ),
            (
                "subscription_expires_secs",
                sip.subscription_expires_secs as usize,
                60,
                86_400,
            ),
            ("max_tcp_connections", sip.max_tcp_connections, 1, 100_000),
            (
                "max_requests_per_ip_per_sec",
                sip.max_requests_per_ip_per_sec as usize,
                1,
                1_000_000,
            ),
        ] {
            if value < min || value > max {
                problem(
                    key,
                    format!("sip.{key} = {value} is out of range ({min}..={max})"),
                );
            }
        }
        if sip.enabled {
            let domain = sip.gateway_domain(&self.server);
            match starling_proto::jid::Jid::parse(&domain) {
                Ok(j) if j.is_bare() && j.node().is_none() && !self.is_local_host(&domain) => {}
                _ => problem(
                    "domain",
                    format!("sip.domain '{domain}' must be a domain name that is not a user host"),
                ),
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
        let muc = &self.muc;
        if muc.enabled {
            let valid_hosts = self.server.hosts.iter().filter(|h| {
                matches!(starling_proto::jid::Jid::parse(h), Ok(j) if j.is_bare() && j.node().is_none())
            });
            for host in valid_hosts {
                let d = muc.domain_for(host);
                let ok = matches!(starling_proto::jid::Jid::parse(&d),
                    Ok(j) if j.is_bare() && j.node().is_none());
                if !ok || self.is_local_host(&d) {
                    problem(
                        "domain",
                        format!("muc.domain '{d}' must be a valid domain that is not a host"),
                    );
                }
            }
            for (key, value, min, max) in [
                ("max_rooms", muc.max_rooms, 1, 10_000_000),
                ("max_occupants", muc.max_occupants, 1, 1_000_000),
                ("history_default", muc.history_default, 0, 1000),
                ("history_max", muc.history_max, 0, 1000),
                ("max_affiliations", muc.max_affiliations, 1, 1_000_000),
                ("room_queue", muc.room_queue, 8, 1_000_000),
            ] {
                if value < min || value > max {
                    problem(
                        key,
                        format!("muc.{key} = {value} is out of range ({min}..={max})"),
                    );
                }
            }
            for a in &muc.admins {
                if !matches!(starling_proto::jid::Jid::parse(a), Ok(j) if j.is_bare()) {
                    problem("admins", format!("muc.admins: '{a}' is not a bare JID"));
                }
            }
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
        assert_eq!(c.listeners.len(), 4);
        assert_eq!(c.listeners[2].kind, ListenerKind::Http);
        assert_eq!(c.listeners[2].address.to_string(), "127.0.0.1:5280");
        assert_eq!(c.listeners[3].kind, ListenerKind::Https);
        assert_eq!(c.http.websocket_path, "/xmpp-websocket");
        assert_eq!(c.http.bosh_path, "/http-bind");
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
    fn component_entries_are_checked() {
        let text = "[[components.component]]\ndomain = \"bots.localhost\"\nsecret = \"0123456789abcdef\"\n";
        let c = Config::from_toml(text).unwrap();
        assert_eq!(c.components.list[0].domain, "bots.localhost");
        let text = "[[components.component]]\ndomain = \"localhost\"\nsecret = \"short\"\n\
                    [[components.component]]\ndomain = \"a b\"\nsecret = \"0123456789abcdef\"\n";
        let problems = Config::from_toml(text).unwrap_err();
        let messages: Vec<&str> = problems.iter().map(|p| p.message.as_str()).collect();
        assert_eq!(problems.len(), 3, "{messages:?}");
        assert!(messages[0].contains("also a user host"), "{messages:?}");
        assert!(messages[1].contains("shorter than 16"), "{messages:?}");
        assert!(messages[2].contains("not a valid domain"), "{messages:?}");
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
    fn muc_section() {
        let c = Config::from_toml("").unwrap();
        assert!(c.muc.enabled);
        assert_eq!(c.muc.domain_for("example.org"), "conference.example.org");
        assert_eq!(c.muc.create, RoomCreation::Local);
        assert_eq!(c.muc.max_messages_per_room, 100_000);
        let c = Config::from_toml("[muc]\nmax_messages_per_room = 0\n").unwrap();
        assert_eq!(c.muc.max_messages_per_room, 0, "0 = no cap");
        let bad = "[muc]\ndomain = \"{host}\"\nmax_occupants = 0\ncreate = \"admins\"\n";
        let problems = Config::from_toml(bad).unwrap_err();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert_eq!(problems[0].line, Some(2), "{problems:?}");
    }

    #[test]
    fn http_section() {
        let text = "[[listener]]\nkind = \"https\"\naddress = \"0.0.0.0:5443\"\n[http]\nwebsocket_path = \"/ws\"\nallowed_origins = [\"https://a.example\"]\nbosh_max_hold = 2\n";
        let c = Config::from_toml(text).unwrap();
        assert_eq!(c.listeners[0].kind, ListenerKind::Https);
        assert_eq!(c.http.websocket_path, "/ws");
        assert_eq!(c.http.bosh_max_hold, 2);
        let bad = "[http]\nwebsocket_path = \"ws\"\nbosh_path = \"ws\"\nbosh_max_hold = 0\n";
        let problems = Config::from_toml(bad).unwrap_err();
        assert_eq!(problems.len(), 4, "{problems:?}");
    }

    #[test]
    fn s2s_section() {
        let c = Config::from_toml("").unwrap();
        assert!(!c.s2s.enabled);
        assert_eq!(c.s2s.policy, S2sPolicy::Verify);
        assert_eq!(c.s2s.max_stanza_bytes, 512 * 1024);
        let text = "[s2s]\nenabled = true\npolicy = \"dialback\"\n[[s2s.route]]\ndomain = \"b.test\"\naddress = \"127.0.0.2:5269\"\n";
        let c = Config::from_toml(text).unwrap();
        assert_eq!(c.s2s.policy, S2sPolicy::Dialback);
        assert_eq!(c.s2s.routes[0].domain, "b.test");
        assert!(!c.s2s.routes[0].direct_tls);
        let bad = "[s2s]\nqueue_size = 0\n[[s2s.route]]\ndomain = \"localhost\"\naddress = \"127.0.0.1:1\"\n";
        let problems = Config::from_toml(bad).unwrap_err();
        assert_eq!(problems.len(), 2, "{problems:?}");
    }

    #[test]
    fn sip_section() {
        let c = Config::from_toml("").unwrap();
        assert!(!c.sip.enabled);
        assert!(c.sip.listen.ip().is_loopback());
        assert_eq!(c.sip.gateway_domain(&c.server), "sip.localhost");
        let text = "[sip]\nenabled = true\nlisten = \"127.0.0.1:5070\"\nmessage_format = \"text\"\n\n[[sip.route]]\ndomain = \"sip.example\"\naddress = \"127.0.0.1:5080\"\ntransport = \"tcp\"\n";
        let c = Config::from_toml(text).unwrap();
        assert_eq!(c.sip.routes[0].transport, SipTransport::Tcp);
        assert_eq!(c.sip.message_format, SipMessageFormat::Text);
        let bad = "[sip]\nenabled = true\ndomain = \"localhost\"\nudp_max_bytes = 10\n";
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
