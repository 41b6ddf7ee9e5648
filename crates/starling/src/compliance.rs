//! `starling check --compliance`: which server requirements of the XMPP Compliance Suites 2023
//! (XEP-0479) this build meets, as a client sees them.
//!
//! The report is not a list of what the code claims: [`probe`] starts the configured server
//! in-process on loopback (a throwaway data directory and SQLite database, so the operator's
//! storage is never touched, and ephemeral ports), creates a throwaway account, logs in over
//! STARTTLS and over direct TLS with the client library, and asks what a client would ask:
//! stream features after authentication, `disco#info` of the server and of the account,
//! `disco#items` of the server and `disco#info` of each item, a roster get. Each requirement
//! below then passes only if that answer shows it.
//!
//! The requirement table follows the server columns of XEP-0479 (version 0.1.0, 2023-05-04):
//! the Core, IM and Mobile suites, plus the Web suite and the A/V calling row that Starling
//! also serves. The "level" says whether the suite's Core or only its Advanced server level
//! asks for the row.

use starling_proto::Attr;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use minidom::Element;
use starling_client::{Client, ClientConfig, TlsMode, Trust};
use starling_core::config::{ListenerConfig, ListenerKind};
use starling_core::xml::BuilderExt;
use starling_core::Config;
use starling_proto::jid::Jid;

use starling_proto::ns::{DISCO_INFO, DISCO_ITEMS};

/// The roster namespace (RFC 6121 §2).
const ROSTER: &str = "jabber:iq:roster";
/// HTTP file upload (XEP-0363).
const NS_UPLOAD: &str = "urn:xmpp:http:upload:0";
/// The first label of the probe's throwaway component domain.
const PROBE_COMPONENT: &str = "compliance-probe-component";
/// Private XML storage (XEP-0049).
const PRIVATE: &str = "jabber:iq:private";

/// What the probe saw, from a client's point of view.
#[derive(Debug, Default, Clone)]
pub struct Observed {
    /// Logged in over STARTTLS (RFC 6120, RFC 7590).
    pub starttls_login: bool,
    /// Logged in over direct TLS (XEP-0368).
    pub direct_tls_login: bool,
    /// The SASL mechanism of the STARTTLS login.
    pub mechanism: String,
    /// Post-authentication stream features, as `{namespace}name`.
    pub stream_features: BTreeSet<String>,
    /// Features in the server's `disco#info`.
    pub server_features: BTreeSet<String>,
    /// Features in the account's (bare JID) `disco#info`.
    pub account_features: BTreeSet<String>,
    /// Identities of the account's `disco#info`, as `category/type`.
    pub account_identities: BTreeSet<String>,
    /// Features of the services in the server's `disco#items`, with their JIDs.
    pub services: Vec<(String, BTreeSet<String>)>,
    /// A roster get was answered with a roster.
    pub roster: bool,
    /// A private XML storage get (XEP-0049) was answered with the query.
    pub private_storage: bool,
    /// A component (XEP-0114) completed the handshake and got a message routed to it.
    pub component: bool,
    /// A file went up to an upload slot (XEP-0363) and came back down unchanged.
    pub upload_round_trip: bool,
    /// host-meta (XEP-0156) on the HTTP listener names a WebSocket endpoint (RFC 7395).
    pub websocket: bool,
    /// host-meta names a BOSH endpoint (XEP-0206).
    pub bosh: bool,
}

/// How a requirement is recognised in [`Observed`].
#[derive(Debug, Clone, Copy)]
enum Evidence {
    /// Logged in over STARTTLS with SCRAM or PLAIN inside TLS.
    Login,
    /// Logged in over direct TLS.
    DirectTls,
    /// Every one of these features is in the server's disco#info.
    Server(&'static [&'static str]),
    /// Every one of these features is in the account's disco#info.
    Account(&'static [&'static str]),
    /// This post-authentication stream feature (`{ns}name`) was offered.
    Stream(&'static str),
    /// A service in the server's disco#items has this feature.
    Service(&'static str),
    /// The roster was served.
    Roster,
    /// Private XML storage answered.
    Private,
    /// A component connected and was routed to.
    Component,
    /// A slot was granted and the file went up and came back.
    UploadRoundTrip,
    /// host-meta lists these connection methods.
    HostMeta { websocket: bool, bosh: bool },
    /// The account has a `pubsub/pep` identity and these features.
    Pep(&'static [&'static str]),
}

/// One row of the report.
#[derive(Debug, Clone)]
pub struct Requirement {
    /// Core, Web, IM, Mobile or A/V.
    pub suite: &'static str,
    /// "Core" when the suite's Core server level requires it, "Advanced" otherwise.
    pub level: &'static str,
    /// The suite's name for the feature.
    pub feature: &'static str,
    /// The specification(s) providing it.
    pub providers: &'static str,
    evidence: Evidence,
}

/// A requirement and whether the probe saw it.
#[derive(Debug, Clone)]
pub struct Row {
    /// The requirement.
    pub requirement: Requirement,
    /// Whether this build showed it to the probing client.
    pub met: bool,
    /// What was looked for.
    pub evidence: String,
}

const fn req(
    suite: &'static str,
    level: &'static str,
    feature: &'static str,
    providers: &'static str,
    evidence: Evidence,
) -> Requirement {
    Requirement {
        suite,
        level,
        feature,
        providers,
        evidence,
    }
}

/// The server requirements of XEP-0479, in the order of its tables.
pub fn requirements() -> Vec<Requirement> {
    use Evidence::*;
    vec![
        req("Core", "Core", "Core features", "RFC 6120, RFC 7622", Login),
        req("Core", "Core", "TLS", "RFC 7590", Login),
        req("Core", "Advanced", "Direct TLS", "XEP-0368", DirectTls),
        req(
            "Core",
            "Core",
            "Feature discovery",
            "XEP-0030",
            Server(&[DISCO_INFO, DISCO_ITEMS]),
        ),
        req(
            "Core",
            "Core",
            "Feature broadcasts",
            "XEP-0115",
            Stream("{http://jabber.org/protocol/caps}c"),
        ),
        req(
            "Core",
            "Core",
            "Server extensibility",
            "XEP-0114",
            Component,
        ),
        req(
            "Core",
            "Advanced",
            "Event publishing",
            "XEP-0163",
            Pep(&["http://jabber.org/protocol/pubsub#publish"]),
        ),
        req(
            "Web",
            "Core",
            "Web connection mechanisms",
            "RFC 7395, XEP-0206",
            HostMeta {
                websocket: true,
                bosh: true,
            },
        ),
        req(
            "Web",
            "Advanced",
            "Connection discovery",
            "XEP-0156",
            HostMeta {
                websocket: true,
                bosh: false,
            },
        ),
        req("IM", "Core", "Core features", "RFC 6121", Roster),
        req(
            "IM",
            "Core",
            "Outbound message synchronization",
            "XEP-0280",
            Server(&["urn:xmpp:carbons:2"]),
        ),
        req(
            "IM",
            "Core",
            "User blocking",
            "XEP-0191",
            Server(&["urn:xmpp:blocking"]),
        ),
        req(
            "IM",
            "Core",
            "Group chat",
            "XEP-0045",
            Service("http://jabber.org/protocol/muc"),
        ),
        req(
            "IM",
            "Core",
            "vCard-based avatars (server storage)",
            "XEP-0054",
            Server(&["vcard-temp"]),
        ),
        req(
            "IM",
            "Advanced",
            "Persistent storage of private data via PubSub",
            "XEP-0223",
            Pep(&["http://jabber.org/protocol/pubsub#publish-options"]),
        ),
        req(
            "IM",
            "Advanced",
            "Bookmarks",
            "XEP-0402 (on XEP-0223)",
            Pep(&["http://jabber.org/protocol/pubsub#publish-options"]),
        ),
        req(
            "IM",
            "Advanced",
            "Private XML storage (legacy bookmarks)",
            "XEP-0049",
            Private,
        ),
        req(
            "IM",
            "Advanced",
            "Message archive management",
            "XEP-0313",
            Account(&["urn:xmpp:mam:2"]),
        ),
        req(
            "IM",
            "Advanced",
            "Unique and stable stanza IDs",
            "XEP-0359",
            Account(&["urn:xmpp:sid:0"]),
        ),
        req(
            "IM",
            "Advanced",
            "HTTP file upload",
            "XEP-0363",
            UploadRoundTrip,
        ),
        req(
            "Mobile",
            "Core",
            "Stream management (resumption)",
            "XEP-0198",
            Stream("{urn:xmpp:sm:3}sm"),
        ),
        req(
            "Mobile",
            "Core",
            "Client state indication",
            "XEP-0352",
            Stream("{urn:xmpp:csi:0}csi"),
        ),
        req(
            "Mobile",
            "Advanced",
            "Push notifications",
            "XEP-0357",
            Account(&["urn:xmpp:push:0"]),
        ),
        req(
            "A/V",
            "Core",
            "External service discovery (STUN/TURN)",
            "XEP-0215",
            Server(&["urn:xmpp:extdisco:2"]),
        ),
    ]
}

/// Checks every requirement against what the probe saw.
pub fn evaluate(seen: &Observed) -> Vec<Row> {
    requirements()
        .into_iter()
        .map(|r| {
            let (met, evidence) = match r.evidence {
                Evidence::Login => (
                    seen.starttls_login,
                    format!("STARTTLS login ({})", seen.mechanism),
                ),
                Evidence::DirectTls => (seen.direct_tls_login, "direct TLS login".to_string()),
                Evidence::Server(f) => (
                    f.iter().all(|f| seen.server_features.contains(*f)),
                    format!("server disco#info: {}", f.join(", ")),
                ),
                Evidence::Account(f) => (
                    f.iter().all(|f| seen.account_features.contains(*f)),
                    format!("account disco#info: {}", f.join(", ")),
                ),
                Evidence::Stream(f) => (
                    seen.stream_features.contains(f),
                    format!("stream feature {f}"),
                ),
                Evidence::Service(f) => {
                    let service = seen.services.iter().find(|(_, fs)| fs.contains(f));
                    (
                        service.is_some(),
                        match service {
                            Some((jid, _)) => format!("{f} on {jid}"),
                            None => format!("a service in disco#items with {f}"),
                        },
                    )
                }
                Evidence::Roster => (seen.roster, "roster get answered".to_string()),
                Evidence::UploadRoundTrip => (
                    seen.upload_round_trip,
                    "slot granted by the urn:xmpp:http:upload:0 service, PUT then GET returned the file".to_string(),
                ),
                Evidence::HostMeta { websocket, bosh } => (
                    (!websocket || seen.websocket) && (!bosh || seen.bosh),
                    match (websocket, bosh) {
                        (true, true) => "host-meta lists WebSocket and BOSH endpoints".to_string(),
                        _ => "/.well-known/host-meta.json answered with connection methods".to_string(),
                    },
                ),
                Evidence::Component => (
                    seen.component,
                    "a component connected and received a message".to_string(),
                ),
                Evidence::Private => (
                    seen.private_storage,
                    "jabber:iq:private get answered".to_string(),
                ),
                Evidence::Pep(f) => (
                    seen.account_identities.contains("pubsub/pep")
                        && f.iter().all(|f| seen.account_features.contains(*f)),
                    format!("account identity pubsub/pep, {}", f.join(", ")),
                ),
            };
            Row {
                requirement: r,
                met,
                evidence,
            }
        })
        .collect()
}

/// The report as a plain-text table, one requirement a line, and a summary per suite.
pub fn render(rows: &[Row]) -> String {
    let mut out = String::from(
        "XMPP Compliance Suites 2023 (XEP-0479), server side, as seen by a client of this build\n\n",
    );
    out.push_str(&format!(
        "{:<7} {:<9} {:<47} {:<24} {:<4} {}\n",
        "suite", "level", "feature", "providers", "met", "evidence"
    ));
    for r in rows {
        let q = &r.requirement;
        out.push_str(&format!(
            "{:<7} {:<9} {:<47} {:<24} {:<4} {}\n",
            q.suite,
            q.level,
            q.feature,
            q.providers,
            if r.met { "yes" } else { "NO" },
            r.evidence
        ));
    }
    out.push('\n');
    let mut suites: Vec<&str> = rows.iter().map(|r| r.requirement.suite).collect();
    suites.dedup();
    for suite in suites {
        for level in ["Core", "Advanced"] {
            // Advanced includes everything Core requires.
            let needed: Vec<&Row> = rows
                .iter()
                .filter(|r| {
                    r.requirement.suite == suite
                        && (level == "Advanced" || r.requirement.level == "Core")
                })
                .collect();
            if needed.is_empty() {
                continue;
            }
            let met = needed.iter().filter(|r| r.met).count();
            out.push_str(&format!(
                "{suite} suite, {level} server: {met} of {} requirements met{}\n",
                needed.len(),
                if met == needed.len() {
                    " (compliant)"
                } else {
                    ""
                }
            ));
        }
    }
    out
}

/// Why the probe failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The throwaway server did not start.
    #[error("starting the probe server: {0}")]
    Start(#[from] crate::StartError),
    /// The throwaway data directory could not be made.
    #[error("temporary directory: {0}")]
    Io(#[from] std::io::Error),
    /// The probing client failed.
    #[error("probing client: {0}")]
    Client(#[from] starling_client::ClientError),
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

/// Starts `config`'s server in-process on loopback with a throwaway data directory, and
/// observes it as a client does (see the module docs).
pub async fn probe(config: &Config) -> Result<Observed, ProbeError> {
    let dir = tempfile::tempdir()?;
    let mut config = config.clone();
    config.server.data_dir = dir.path().join("data");
    // Never the operator's database: a fresh SQLite file in the throwaway directory.
    config.storage.url = None;
    let loopback: SocketAddr = "127.0.0.1:0".parse().expect("valid address");
    config.listeners = vec![
        ListenerConfig {
            kind: ListenerKind::C2s,
            address: loopback,
        },
        ListenerConfig {
            kind: ListenerKind::C2sDirectTls,
            address: loopback,
        },
        ListenerConfig {
            kind: ListenerKind::Http,
            address: loopback,
        },
    ];
    // The operator's public URLs would point elsewhere: the probe uses its own listener.
    config.upload.public_url = None;
    config.http.public_url = None;
    let host = config
        .server
        .hosts
        .first()
        .cloned()
        .ok_or_else(|| ProbeError::Other("no host configured".into()))?;
    // A throwaway component, to show that components can connect (XEP-0114).
    config.components.listen = loopback;
    config.components.list = vec![starling_core::config::ComponentEntry {
        domain: format!("{PROBE_COMPONENT}.{host}"),
        secret: random_password(),
    }];
    let running = crate::start(config).await?;
    let result = observe(&running, &host).await;
    running.shutdown().await;
    result
}

async fn observe(running: &crate::Running, host: &str) -> Result<Observed, ProbeError> {
    let user = "compliance-probe";
    let password = random_password();
    crate::accounts::add(
        running.server.storage().as_ref(),
        host,
        user,
        &password,
        4096,
    )
    .await
    .map_err(|e| ProbeError::Other(format!("creating the probe account: {e}")))?;
    let jid: Jid = format!("{user}@{host}")
        .parse()
        .map_err(|_| ProbeError::Other(format!("{host} is not a valid domain")))?;
    let address = |kind| {
        running
            .listeners
            .address(kind)
            .ok_or_else(|| ProbeError::Other("probe listener missing".into()))
    };
    // The probe talks to its own in-process server over loopback: it tests features, not
    // the trust chain, which may name a public CA the probe cannot reach.
    let mut cfg = ClientConfig::new(
        jid.clone(),
        password,
        address(ListenerKind::C2s)?,
        Trust::InsecureAcceptAny,
    );
    cfg.timeout = Duration::from_secs(20);
    let mut seen = Observed::default();

    let mut direct = cfg.clone();
    direct.server = address(ListenerKind::C2sDirectTls)?;
    direct.tls = TlsMode::Direct;
    if let Ok(c) = Client::connect(&direct).await {
        seen.direct_tls_login = true;
        let _ = c.close().await;
    }

    let mut client = Client::connect(&cfg).await?;
    seen.starttls_login = true;
    if let (Some(address), Some(entry)) = (
        running.component_listener,
        running.server.config().components.list.first(),
    ) {
        seen.component = component_round_trip(&mut client, address, entry).await;
    }
    seen.mechanism = client.mechanism().name().to_string();
    seen.stream_features = client
        .stream_features()
        .children()
        .map(|c| format!("{{{}}}{}", c.ns(), c.name()))
        .collect();
    let info = || Element::builder("query", DISCO_INFO).build();
    let server_info = client.iq("get", host, info()).await?;
    seen.server_features = features(&server_info);
    let account_info = client.iq("get", jid.bare().as_str(), info()).await?;
    seen.account_features = features(&account_info);
    seen.account_identities = identities(&account_info);
    let items = client
        .iq("get", host, Element::builder("query", DISCO_ITEMS).build())
        .await?;
    let services: Vec<String> = items
        .get_child("query", DISCO_ITEMS)
        .map(|q| {
            q.children()
                .filter(|c| c.is("item", DISCO_ITEMS) && c.attribute("node").is_none())
                .filter_map(|c| c.attribute("jid").map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    for service in services {
        let answer = client.iq("get", &service, info()).await?;
        seen.services.push((service, features(&answer)));
    }
    let roster = client
        .iq(
            "get",
            jid.bare().as_str(),
            Element::builder("query", ROSTER).build(),
        )
        .await?;
    seen.roster =
        roster.attribute("type") == Some("result") && roster.get_child("query", ROSTER).is_some();
    if let Some(http) = running.http.address(ListenerKind::Http) {
        if let Ok(meta) = http_request(http, "GET", "/.well-known/host-meta.json", &[], b"").await {
            let text = String::from_utf8_lossy(&meta.1);
            seen.websocket = meta.0 == 200 && text.contains("urn:xmpp:alt-connections:websocket");
            seen.bosh = meta.0 == 200 && text.contains("urn:xmpp:alt-connections:xbosh");
        }
    }
    let upload_service = seen
        .services
        .iter()
        .find(|(_, f)| f.contains(NS_UPLOAD))
        .map(|(jid, _)| jid.clone());
    if let Some(service) = upload_service {
        seen.upload_round_trip = upload_round_trip(&mut client, &service).await;
    }
    let private = Element::builder("query", PRIVATE)
        .append(Element::builder("storage", "storage:bookmarks"))
        .build();
    let answer = client.iq("get", jid.bare().as_str(), private).await?;
    seen.private_storage =
        answer.attribute("type") == Some("result") && answer.get_child("query", PRIVATE).is_some();
    let _ = client.close().await;
    Ok(seen)
}

/// Connects a component with the handshake of XEP-0114, sends it a message from the probing
/// client, and reports whether it arrived.
async fn component_round_trip(
    client: &mut Client,
    address: SocketAddr,
    entry: &starling_core::config::ComponentEntry,
) -> bool {
    use starling_proto::framer::{Limits, StreamEvent};
    let attempt = async {
        let tcp = tokio::net::TcpStream::connect(address).await.ok()?;
        let mut stream = starling_stream::XmlStream::new(tcp, Limits::default());
        stream.queue_raw(&format!(
            "<stream:stream xmlns='{}' xmlns:stream='{}' to='{}'>",
            starling_component::NS_COMPONENT,
            starling_proto::ns::STREAM,
            entry.domain
        ));
        stream.flush().await.ok()?;
        let StreamEvent::Open(header) = stream.next_event().await.ok()? else {
            return None;
        };
        let digest = starling_component::handshake_digest(header.id.as_deref()?, &entry.secret);
        stream.queue_raw(&format!("<handshake>{digest}</handshake>"));
        stream.flush().await.ok()?;
        let StreamEvent::Stanza(ok) = stream.next_event().await.ok()? else {
            return None;
        };
        if !ok.is("handshake", starling_component::NS_COMPONENT) {
            return None;
        }
        client
            .send(&starling_client::chat_message(
                &format!("probe@{}", entry.domain),
                "probe",
            ))
            .await
            .ok()?;
        let StreamEvent::Stanza(msg) = stream.next_event().await.ok()? else {
            return None;
        };
        Some(msg.name() == "message")
    };
    tokio::time::timeout(Duration::from_secs(10), attempt)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

/// Asks `service` for a slot, PUTs a small file to it and GETs it back.
async fn upload_round_trip(client: &mut Client, service: &str) -> bool {
    let content = b"compliance probe";
    let request = Element::builder("request", NS_UPLOAD)
        .with_attr("filename", "probe.txt")
        .with_attr("size", content.len().to_string())
        .with_attr("content-type", "text/plain")
        .build();
    let Ok(answer) = client.iq("get", service, request).await else {
        return false;
    };
    let Some(slot) = answer.get_child("slot", NS_UPLOAD) else {
        return false;
    };
    let url = |name: &str| {
        slot.get_child(name, NS_UPLOAD)
            .and_then(|e| e.attribute("url"))
            .map(str::to_owned)
    };
    let (Some(put), Some(get)) = (url("put"), url("get")) else {
        return false;
    };
    let split = |u: &str| -> Option<(SocketAddr, String)> {
        let rest = u.strip_prefix("http://")?;
        let slash = rest.find('/')?;
        Some((rest[..slash].parse().ok()?, rest[slash..].to_owned()))
    };
    let (Some((put_addr, put_path)), Some((get_addr, get_path))) = (split(&put), split(&get))
    else {
        return false;
    };
    let len = content.len().to_string();
    let headers = [
        ("Content-Type", "text/plain"),
        ("Content-Length", len.as_str()),
    ];
    match http_request(put_addr, "PUT", &put_path, &headers, content).await {
        Ok((201, _)) => {}
        _ => return false,
    }
    matches!(http_request(get_addr, "GET", &get_path, &[], b"").await, Ok((200, body)) if body == content)
}

/// One HTTP/1.1 request on a fresh loopback connection: (status, body). Enough for the
/// probe's own listener, which answers with a length or closes the connection.
async fn http_request(
    address: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<(u16, Vec<u8>)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut tcp = tokio::net::TcpStream::connect(address).await?;
        let mut head =
            format!("{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n");
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        tcp.write_all(head.as_bytes()).await?;
        tcp.write_all(body).await?;
        let mut raw = Vec::new();
        tcp.take(1 << 20).read_to_end(&mut raw).await?;
        let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "not an HTTP response");
        let end = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(bad)?;
        let status = std::str::from_utf8(&raw[..end])
            .ok()
            .and_then(|h| h.split(' ').nth(1))
            .and_then(|c| c.parse().ok())
            .ok_or_else(bad)?;
        Ok((status, raw[end + 4..].to_vec()))
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .unwrap_or_else(|_| {
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "HTTP timeout",
            ))
        })
}

fn features(answer: &Element) -> BTreeSet<String> {
    answer
        .get_child("query", DISCO_INFO)
        .map(|q| {
            q.children()
                .filter(|c| c.is("feature", DISCO_INFO))
                .filter_map(|c| c.attribute("var").map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn identities(answer: &Element) -> BTreeSet<String> {
    answer
        .get_child("query", DISCO_INFO)
        .map(|q| {
            q.children()
                .filter(|c| c.is("identity", DISCO_INFO))
                .map(|c| {
                    format!(
                        "{}/{}",
                        c.attribute("category").unwrap_or_default(),
                        c.attribute("type").unwrap_or_default()
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn random_password() -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    (0..24)
        .map(|_| char::from(b'a' + rng.random_range(0..26u8)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_observed_meets_nothing() {
        let rows = evaluate(&Observed::default());
        assert_eq!(rows.len(), requirements().len());
        assert!(rows.iter().all(|r| !r.met));
        assert!(render(&rows).contains("Mobile suite, Core server: 0 of 2"));
    }

    #[test]
    fn pep_needs_the_identity_and_the_features() {
        let mut seen = Observed::default();
        seen.account_features
            .insert("http://jabber.org/protocol/pubsub#publish".into());
        let met = |seen: &Observed| {
            evaluate(seen)
                .into_iter()
                .find(|r| r.requirement.providers == "XEP-0163")
                .unwrap()
                .met
        };
        assert!(!met(&seen));
        seen.account_identities.insert("pubsub/pep".into());
        assert!(met(&seen));
    }
}
