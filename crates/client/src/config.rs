//! What a connection needs to know: who we are, where the server is (an explicit socket
//! address: this library never resolves DNS), how TLS starts and whom it trusts, and which
//! SASL mechanisms we are willing to use, in order of preference.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use starling_proto::jid::Jid;
use starling_sasl::Mechanism;

use crate::SaltedPasswordCache;

/// How TLS starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// Plain TCP, then `<starttls/>` (RFC 6120 §5), usually port 5222.
    StartTls,
    /// TLS from the first byte (XEP-0368, ALPN `xmpp-client`), usually port 5223.
    Direct,
}

/// Which server certificates are accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// Certificates that chain to one of the PEM certificates in this file, issued for the
    /// JID's domain. A self-signed server certificate can be its own trust file.
    CaFile(PathBuf),
    /// Any certificate (handshake signatures are still checked). For tests against servers
    /// with generated certificates only: it gives no protection against a man in the middle.
    /// (A relay that terminates TLS makes SCRAM-PLUS fail, since the channel bindings differ,
    /// but it can just as well offer only PLAIN and read the password.)
    InsecureAcceptAny,
}

/// Everything [`Client::connect`](crate::Client::connect) needs.
#[derive(Clone)]
pub struct ClientConfig {
    /// Our account, bare or full. A full JID's resource is requested at bind unless
    /// [`ClientConfig::resource`] overrides it.
    pub jid: Jid,
    /// The account's password.
    pub password: String,
    /// Where the server listens. Never looked up in DNS.
    pub server: SocketAddr,
    /// STARTTLS or direct TLS.
    pub tls: TlsMode,
    /// Whom to trust.
    pub trust: Trust,
    /// Mechanisms we accept, most preferred first; the first one the server offers is used.
    /// `-PLUS` variants are used only when the TLS connection can export `tls-exporter`
    /// channel-binding data (RFC 9266) and the server lists that type (XEP-0440) or lists
    /// no types at all.
    pub mechanisms: Vec<Mechanism>,
    /// The resource to ask for; `None` lets the server choose (or uses the JID's resource).
    pub resource: Option<String>,
    /// Limit for TCP connect, TLS, authentication and binding together.
    pub timeout: Duration,
    /// Where SCRAM SaltedPasswords are kept between logins, if anywhere (`None`: PBKDF2 at
    /// every login).
    pub scram_cache: Option<SaltedPasswordCache>,
}

impl ClientConfig {
    /// Our default preference: channel binding first, then the strongest hash, PLAIN last
    /// (PLAIN is only ever sent inside TLS).
    pub const DEFAULT_MECHANISMS: [Mechanism; 5] = [
        Mechanism::ScramSha256Plus,
        Mechanism::ScramSha1Plus,
        Mechanism::ScramSha256,
        Mechanism::ScramSha1,
        Mechanism::Plain,
    ];

    /// STARTTLS, the default mechanisms, no resource preference, a 30 s timeout.
    pub fn new(jid: Jid, password: impl Into<String>, server: SocketAddr, trust: Trust) -> Self {
        ClientConfig {
            jid,
            password: password.into(),
            server,
            tls: TlsMode::StartTls,
            trust,
            mechanisms: Self::DEFAULT_MECHANISMS.to_vec(),
            resource: None,
            timeout: Duration::from_secs(30),
            scram_cache: None,
        }
    }

    /// The resource to request: the explicit one, else the JID's.
    pub(crate) fn wanted_resource(&self) -> Option<&str> {
        self.resource.as_deref().or(self.jid.resource())
    }
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("jid", &self.jid.as_str())
            .field("password", &"<redacted>")
            .field("server", &self.server)
            .field("tls", &self.tls)
            .field("trust", &self.trust)
            .field("mechanisms", &self.mechanisms)
            .field("resource", &self.resource)
            .field("timeout", &self.timeout)
            .field("scram_cache", &self.scram_cache)
            .finish()
    }
}
