//! `starling client`: a command-line XMPP client that speaks RFC 3923 end-to-end signing and
//! encryption, so that two people can exchange signed and encrypted messages through any XMPP
//! server with nothing but this binary and PEM files.
//!
//! - `send` connects (starling-client), builds a `<message/>` and, with `--sign`/`--encrypt`,
//!   replaces its content by the `<e2e/>` payload of RFC 3923 §3 (starling-e2e: Message/CPIM
//!   content, S/MIME signed, enveloped, or signed then enveloped as §6 recommends).
//! - `recv` goes online, prints every message; `<e2e/>` payloads are decrypted, verified, the
//!   signer matched to the sender's bare JID (§6) and the timestamp checked (§6); a failure is
//!   printed with its §7 condition and answered to the sender with the §7 error stanza.
//! - `cert ca` / `cert issue` run a small local CA issuing S/MIME certificates with the
//!   subjectAltName forms of RFC 3923 §6 (`im:` and `pres:` URIs, id-on-xmppAddr).
//!
//! About the plain `<body/>` next to `<e2e/>`: RFC 3923 defines none. Its examples carry only
//! `<e2e/>`, and §7 lets a recipient that does not support the protocol ignore `<e2e/>`, ignore
//! the stanza or answer `<service-unavailable/>`, so a message without a body shows nothing at
//! all in an ordinary client. `send` therefore adds a notice body (as XEP-0380 suggests for
//! encrypted messages) that says the message is protected and carries nothing of its content;
//! `--no-notice` leaves it out. `recv` never reads that body when `<e2e/>` is present: what is
//! outside the S/MIME object is not protected.

use starling_proto::Attr;
use std::collections::HashMap;
use std::io::{BufRead, IsTerminal, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use clap::{Args, Subcommand, ValueEnum};
use starling_client::{Client, ClientConfig, ClientError, SaslMechanism, TlsMode, Trust};
use starling_e2e::content::{open_stanza, secure_stanza};
use starling_e2e::{
    ContentCipher, Credential, DigestAlg, KeyTransport, Protection, Receiver, ReplayGuard,
    TimestampPolicy, TrustAnchors,
};
use starling_proto::jid::Jid;
use starling_proto::{ns, Element};

/// The subject CN of CAs made by `cert ca`; `cert issue` rebuilds the issuer name from it.
const CA_NAME: &str = "Starling RFC 3923 test CA";
/// id-on-xmppAddr (RFC 6120 §13.7.1.4), the otherName RFC 3923 §6 requires.
const XMPP_ADDR_ARCS: [u64; 9] = [1, 3, 6, 1, 5, 5, 7, 8, 5];

/// `starling client ...`
#[derive(Subcommand)]
pub enum ClientCommand {
    /// Send one message, optionally signed and/or encrypted (RFC 3923).
    Send(SendArgs),
    /// Go online and print received messages, verifying and decrypting RFC 3923 payloads.
    /// Exits after --count messages or --timeout seconds; the status is non-zero if fewer
    /// messages arrived or a protected one failed to open.
    Recv(RecvArgs),
    /// A local CA for S/MIME test certificates.
    #[command(subcommand)]
    Cert(CertCommand),
}

/// How to reach and log in to the server.
#[derive(Args)]
pub struct ConnectArgs {
    /// Our account, e.g. alice@localhost (a full JID asks for that resource).
    #[arg(long)]
    jid: String,
    /// The password (visible in the process list: prefer --password-stdin in scripts).
    #[arg(long, conflicts_with = "password_stdin")]
    password: Option<String>,
    /// Read the password from the first line of standard input.
    #[arg(long)]
    password_stdin: bool,
    /// Server address (an IP and port; no DNS lookup is made).
    #[arg(long, default_value = "127.0.0.1:5222")]
    server: SocketAddr,
    /// TLS from the first byte (XEP-0368, usually port 5223) instead of STARTTLS.
    #[arg(long)]
    direct_tls: bool,
    /// Trust server certificates issued by the CA (or self-signed certificate) in this PEM
    /// file.
    #[arg(long, value_name = "FILE", required_unless_present = "insecure")]
    tls_ca: Option<PathBuf>,
    /// Accept any server certificate (testing only: no protection against a man in the
    /// middle).
    #[arg(long, conflicts_with = "tls_ca")]
    insecure: bool,
    /// SASL mechanism to use (repeat for a preference list); default: SCRAM-SHA-256-PLUS,
    /// SCRAM-SHA-1-PLUS, SCRAM-SHA-256, SCRAM-SHA-1, PLAIN.
    #[arg(long = "mechanism", value_name = "NAME")]
    mechanisms: Vec<String>,
}

/// `starling client send`
#[derive(Args)]
pub struct SendArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    /// The recipient, e.g. bob@localhost.
    #[arg(long)]
    to: String,
    /// Sign with --cert/--key (S/MIME multipart/signed, SHA-256).
    #[arg(long, requires_all = ["cert", "key"])]
    sign: bool,
    /// Our certificate (PEM, end entity first), for --sign.
    #[arg(long, value_name = "FILE")]
    cert: Option<PathBuf>,
    /// Our private key (PEM, PKCS#8 or PKCS#1), for --sign.
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
    /// Encrypt to every --recipient-cert (S/MIME enveloped data). With --sign: sign first.
    #[arg(long, requires = "recipient_certs")]
    encrypt: bool,
    /// A recipient's certificate (PEM); repeat for several, add your own to read your copy.
    #[arg(long = "recipient-cert", value_name = "FILE")]
    recipient_certs: Vec<PathBuf>,
    /// Content encryption algorithm.
    #[arg(long, value_enum, default_value = "aes128-cbc")]
    cipher: CipherArg,
    /// Leave out the plain notice body that tells clients without RFC 3923 support what
    /// this is.
    #[arg(long)]
    no_notice: bool,
    /// The message text; `-` reads it from standard input.
    text: String,
}

/// Content ciphers offered on the command line.
#[derive(Clone, Copy, ValueEnum)]
pub enum CipherArg {
    /// AES-128-CBC EnvelopedData: what every RFC 3923 peer reads (the default).
    Aes128Cbc,
    /// AES-256-CBC EnvelopedData.
    Aes256Cbc,
    /// AES-128-GCM AuthEnvelopedData (RFC 5083).
    Aes128Gcm,
    /// AES-256-GCM AuthEnvelopedData (RFC 8551's default when peers support it).
    Aes256Gcm,
}

impl From<CipherArg> for ContentCipher {
    fn from(c: CipherArg) -> ContentCipher {
        match c {
            CipherArg::Aes128Cbc => ContentCipher::Aes128Cbc,
            CipherArg::Aes256Cbc => ContentCipher::Aes256Cbc,
            CipherArg::Aes128Gcm => ContentCipher::Aes128Gcm,
            CipherArg::Aes256Gcm => ContentCipher::Aes256Gcm,
        }
    }
}

/// `starling client recv`
#[derive(Args)]
pub struct RecvArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    /// Exit after this many messages.
    #[arg(long)]
    count: Option<usize>,
    /// Exit after this many seconds (non-zero status if --count messages did not arrive).
    #[arg(long, value_name = "SECS")]
    timeout: Option<u64>,
    /// Our certificate (PEM), to decrypt messages encrypted to us.
    #[arg(long, value_name = "FILE", requires = "key")]
    cert: Option<PathBuf>,
    /// Our private key (PEM), to decrypt.
    #[arg(long, value_name = "FILE", requires = "cert")]
    key: Option<PathBuf>,
    /// Trust signers whose certificates chain to this CA (PEM). Without it no signature
    /// verifies.
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
}

/// `starling client cert ...`
#[derive(Subcommand)]
pub enum CertCommand {
    /// Create a CA: ca.pem and ca.key in --out-dir.
    Ca {
        /// Directory for ca.pem and ca.key.
        #[arg(long)]
        out_dir: PathBuf,
    },
    /// Issue an S/MIME certificate for a JID from the CA in --ca-dir: <localpart>.pem and
    /// <localpart>.key in --out-dir, subjectAltName im:, pres: and id-on-xmppAddr.
    Issue {
        /// Directory holding ca.pem and ca.key (made by `cert ca`).
        #[arg(long)]
        ca_dir: PathBuf,
        /// The bare JID the certificate is for.
        #[arg(long)]
        jid: String,
        /// Directory for the certificate and key.
        #[arg(long)]
        out_dir: PathBuf,
    },
}

/// Runs one `starling client` command.
pub async fn run(cmd: ClientCommand) -> Result<(), String> {
    match cmd {
        ClientCommand::Send(args) => send(args).await,
        ClientCommand::Recv(args) => recv(args).await,
        ClientCommand::Cert(CertCommand::Ca { out_dir }) => cert_ca(&out_dir),
        ClientCommand::Cert(CertCommand::Issue {
            ca_dir,
            jid,
            out_dir,
        }) => cert_issue(&ca_dir, &jid, &out_dir),
    }
}

fn read_file(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// The client configuration, reading the password as asked (stdin's first line, or a prompt).
fn client_config(args: &ConnectArgs) -> Result<ClientConfig, String> {
    let jid = Jid::parse(&args.jid).map_err(|e| format!("--jid {}: {e}", args.jid))?;
    let password = match &args.password {
        Some(p) => p.clone(),
        None if !args.password_stdin && std::io::stdin().is_terminal() => {
            rpassword::prompt_password(format!("Password for {jid}: "))
                .map_err(|e| e.to_string())?
        }
        None => {
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .map_err(|e| e.to_string())?;
            line.trim_end_matches(['\n', '\r']).to_owned()
        }
    };
    if password.is_empty() {
        return Err("empty password".into());
    }
    let trust = match &args.tls_ca {
        Some(path) => Trust::CaFile(path.clone()),
        None => Trust::InsecureAcceptAny,
    };
    let mut cfg = ClientConfig::new(jid, password, args.server, trust);
    if args.direct_tls {
        cfg.tls = TlsMode::Direct;
    }
    if !args.mechanisms.is_empty() {
        cfg.mechanisms = args
            .mechanisms
            .iter()
            .map(|m| {
                SaslMechanism::from_name(&m.to_ascii_uppercase())
                    .ok_or_else(|| format!("unknown SASL mechanism {m}"))
            })
            .collect::<Result<_, _>>()?;
    }
    Ok(cfg)
}

fn connect_error(cfg: &ClientConfig, e: ClientError) -> String {
    format!("cannot log in as {} at {}: {e}", cfg.jid, cfg.server)
}

fn random_id() -> String {
    let n: u64 = rand::random();
    format!("e2e-{n:016x}")
}

async fn send(args: SendArgs) -> Result<(), String> {
    let to = Jid::parse(&args.to).map_err(|e| format!("--to {}: {e}", args.to))?;
    // Load every credential before connecting: fail before touching the network.
    let signer = match (&args.cert, &args.key) {
        (Some(cert), Some(key)) if args.sign => Some(
            Credential::from_pem(&read_file(cert)?, &read_file(key)?)
                .map_err(|e| format!("{}: {e}", cert.display()))?,
        ),
        _ => None,
    };
    let mut recipients = Vec::new();
    if args.encrypt {
        for path in &args.recipient_certs {
            let mut certs = starling_e2e::certs::certificates_from_pem(&read_file(path)?)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            recipients.push(certs.swap_remove(0));
        }
    }
    let cfg = client_config(&args.connect)?;
    let text = if args.text == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| e.to_string())?;
        text
    } else {
        args.text.clone()
    };

    let mut client = Client::connect(&cfg)
        .await
        .map_err(|e| connect_error(&cfg, e))?;
    let id = random_id();
    let mut message = starling_client::chat_message(to.as_str(), &text);
    message.set_attr(ns_none(), attr("id"), id.as_str());
    // RFC 3923 §3: the CPIM From is the sender; the e2e library reads it from 'from'.
    message.set_attr(ns_none(), attr("from"), client.jid().as_str());
    let mut what = Vec::new();
    if signer.is_some() || !recipients.is_empty() {
        let protection = Protection {
            signer: signer.as_ref(),
            digest: DigestAlg::Sha256,
            recipients: &recipients,
            cipher: args.cipher.into(),
            transport: KeyTransport::RsaPkcs1v15,
        };
        if signer.is_some() {
            what.push("signed");
        }
        if !recipients.is_empty() {
            what.push("encrypted");
        }
        message = secure_stanza(&message, SystemTime::now(), &protection)
            .map_err(|e| format!("cannot protect the message: {e}"))?;
        if !args.no_notice {
            let notice = format!(
                "[This message is {} end to end (RFC 3923 S/MIME); your client cannot show it.]",
                what.join(" and ")
            );
            message.append_child(Element::builder("body", ns::CLIENT).append(notice).build());
        }
    }
    client.send(&message).await.map_err(|e| e.to_string())?;
    // The ping's answer comes after any bounce of our message by the server: report it.
    client.ping().await.map_err(|e| e.to_string())?;
    let mut bounced = None;
    while let Some(stanza) = client.recv_buffered() {
        if stanza.name() == "message"
            && stanza.attribute("type") == Some("error")
            && stanza.attribute("id") == Some(id.as_str())
        {
            bounced = Some(stanza);
        }
    }
    client.close().await.map_err(|e| e.to_string())?;
    if let Some(error) = bounced {
        // A server bounce, or (when it comes back this fast) the recipient's §7 answer.
        return Err(format!(
            "the message to {to} came back with an error: {}",
            describe_error(&error)
        ));
    }
    if what.is_empty() {
        what.push("plain");
    }
    println!("sent to {to} ({})", what.join(", "));
    Ok(())
}

/// The condition names of an error stanza, e.g. `not-acceptable/unverified-signature`.
fn describe_error(stanza: &Element) -> String {
    let Some(error) = stanza.children().find(|c| c.name() == "error") else {
        return "error without details".into();
    };
    let names: Vec<&str> = error
        .children()
        .filter(|c| c.name() != "text")
        .map(|c| c.name())
        .collect();
    names.join("/")
}

/// What `recv` knows to open protected messages.
struct Opener {
    credential: Option<Credential>,
    anchors: TrustAnchors,
    /// §6 replay check, per sender bare JID.
    guards: HashMap<String, ReplayGuard>,
}

async fn recv(args: RecvArgs) -> Result<(), String> {
    let credential = match (&args.cert, &args.key) {
        (Some(cert), Some(key)) => Some(
            Credential::from_pem(&read_file(cert)?, &read_file(key)?)
                .map_err(|e| format!("{}: {e}", cert.display()))?,
        ),
        _ => None,
    };
    let anchors = match &args.ca {
        Some(path) => TrustAnchors::from_pem(&read_file(path)?)
            .map_err(|e| format!("{}: {e}", path.display()))?,
        None => TrustAnchors::default(),
    };
    let mut opener = Opener {
        credential,
        anchors,
        guards: HashMap::new(),
    };
    let cfg = client_config(&args.connect)?;
    let mut client = Client::connect(&cfg)
        .await
        .map_err(|e| connect_error(&cfg, e))?;
    client.send_presence().await.map_err(|e| e.to_string())?;
    // Once the ping is answered the server has our presence: messages to our bare JID come
    // here. Only then say we are online (scripts wait for this line).
    client.ping().await.map_err(|e| e.to_string())?;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "online as {}", client.jid());
    let _ = out.flush();
    drop(out);

    let deadline = args
        .timeout
        .map(|s| tokio::time::Instant::now() + Duration::from_secs(s));
    let mut received = 0usize;
    let mut failures = 0usize;
    let outcome = loop {
        if args.count.is_some_and(|n| received >= n) {
            break Ok(());
        }
        let next = match deadline {
            Some(d) => match tokio::time::timeout_at(d, client.recv()).await {
                Ok(r) => r,
                Err(_) => break Ok(()),
            },
            None => client.recv().await,
        };
        let stanza = match next {
            Ok(s) => s,
            Err(e) => break Err(e.to_string()),
        };
        match stanza.name() {
            "message" => {
                if let Some(reply) =
                    show_message(&stanza, &mut opener, &mut received, &mut failures)
                {
                    if let Err(e) = client.send(&reply).await {
                        break Err(e.to_string());
                    }
                }
            }
            "iq" if matches!(stanza.attribute("type"), Some("get" | "set")) => {
                if let Err(e) = client.send(&iq_answer(&stanza)).await {
                    break Err(e.to_string());
                }
            }
            _ => {}
        }
    };
    let _ = client.close().await;
    outcome?;
    if let Some(n) = args.count {
        if received < n {
            return Err(format!(
                "received {received} of {n} messages before the timeout"
            ));
        }
    }
    if failures > 0 {
        return Err(format!(
            "{failures} protected message(s) could not be opened"
        ));
    }
    Ok(())
}

/// Prints one message; returns the §7 error to send back when a protected one fails.
fn show_message(
    stanza: &Element,
    opener: &mut Opener,
    received: &mut usize,
    failures: &mut usize,
) -> Option<Element> {
    let from = stanza.attribute("from").unwrap_or("(unknown)");
    if stanza.attribute("type") == Some("error") {
        println!("error from {from}: {}", describe_error(stanza));
        return None;
    }
    let e2e = starling_e2e::payload::find(stanza).is_some();
    let body = stanza
        .get_child("body", ns::CLIENT)
        .map(|b| b.text())
        .filter(|_| !e2e);
    if !e2e && body.is_none() {
        return None; // chat states, receipts ...: not messages to show
    }
    *received += 1;
    let mut out = format!("message from {from}\n");
    let mut reply = None;
    if let Some(body) = body {
        out.push_str("  e2e: none\n");
        push_text(&mut out, &body);
    } else {
        let receiver = Receiver {
            credential: opener.credential.as_ref(),
            anchors: &opener.anchors,
            known_certificates: &[],
            require_signature: false,
            allow_sha1: false,
            timestamps: Some(TimestampPolicy::default()),
        };
        let sender = starling_e2e::certs::bare_jid(from).to_ascii_lowercase();
        let guard = opener.guards.entry(sender.clone()).or_default();
        match open_stanza(stanza, &receiver, SystemTime::now(), Some(guard)) {
            Ok((opened, cpim)) => {
                let mut layers = Vec::new();
                if opened.signature.is_some() {
                    layers.push("signed");
                }
                if opened.was_encrypted {
                    layers.push("encrypted");
                }
                out.push_str(&format!("  e2e: {}\n", layers.join(", ")));
                match &opened.signature {
                    Some(v) => {
                        let signer = v
                            .addresses
                            .iter()
                            .find(|a| a.eq_ignore_ascii_case(&sender))
                            .or(v.addresses.first())
                            .map(String::as_str)
                            .unwrap_or("?");
                        out.push_str(&format!("  signature: verified (signer {signer})\n"));
                    }
                    None => out.push_str("  signature: none (not signed)\n"),
                }
                let text = cpim
                    .map(|c| String::from_utf8_lossy(c.entity().body()).replace("\r\n", "\n"))
                    .unwrap_or_default();
                push_text(&mut out, &text);
            }
            Err(e) => {
                *failures += 1;
                match e.condition() {
                    Some(condition) => {
                        out.push_str(&format!(
                            "  e2e: failed: {}/{} ({e})\n",
                            condition.stanza_condition(),
                            condition.app_name().unwrap_or("-")
                        ));
                        // §7: answer the sender with the condition (never an error to an error).
                        let mut error = Element::builder("message", ns::CLIENT)
                            .attr(attr("type"), "error")
                            .attr(attr("to"), from)
                            .append(condition.to_error_element());
                        if let Some(id) = stanza.attribute("id") {
                            error = error.attr(attr("id"), id);
                        }
                        reply = Some(error.build());
                    }
                    None => out.push_str(&format!("  e2e: failed: {e}\n")),
                }
            }
        }
    }
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(out.as_bytes());
    let _ = stdout.flush();
    reply
}

fn push_text(out: &mut String, text: &str) {
    let mut lines = text.trim_end_matches('\n').split('\n');
    out.push_str(&format!("  text: {}\n", lines.next().unwrap_or("")));
    for line in lines {
        out.push_str(&format!("        {line}\n"));
    }
}

/// RFC 6120 §8.2.3: every get/set IQ is answered. Pings get a result, the rest
/// `service-unavailable`.
fn iq_answer(iq: &Element) -> Element {
    let mut reply =
        Element::builder("iq", ns::CLIENT).attr(attr("id"), iq.attribute("id").unwrap_or(""));
    if let Some(from) = iq.attribute("from") {
        reply = reply.attr(attr("to"), from);
    }
    if iq.attribute("type") == Some("get") && iq.get_child("ping", ns::PING).is_some() {
        return reply.attr(attr("type"), "result").build();
    }
    let error = starling_proto::error::StanzaError::new(
        starling_proto::error::StanzaErrorCondition::ServiceUnavailable,
    );
    reply
        .attr(attr("type"), "error")
        .append(error.to_element())
        .build()
}

fn attr(name: &'static str) -> minidom::rxml::NcName {
    minidom::rxml::NcName::try_from(name).expect("attribute names used here are NCNames")
}

fn ns_none() -> minidom::rxml::Namespace<'static> {
    minidom::rxml::Namespace::NONE
}

// ---- the local CA -------------------------------------------------------------------------

/// The CA's name, constraints and usages: what `cert issue` needs to sign as this CA.
fn ca_params() -> rcgen::CertificateParams {
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, CA_NAME);
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    params
}

fn random_serial() -> rcgen::SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] = (bytes[0] & 0x7f) | 0x01; // positive, no leading zero
    rcgen::SerialNumber::from(bytes.to_vec())
}

/// RSA-2048: the e2e library signs and decrypts with RSA only.
fn rsa_key() -> Result<rcgen::KeyPair, String> {
    rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).map_err(|e| e.to_string())
}

fn write_pem(path: &Path, text: &str, private: bool) -> Result<(), String> {
    crate_write(path, text.as_bytes(), private).map_err(|e| format!("{}: {e}", path.display()))
}

fn crate_write(path: &Path, data: &[u8], private: bool) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    options.open(path)?.write_all(data)
}

fn cert_ca(out_dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(out_dir).map_err(|e| format!("{}: {e}", out_dir.display()))?;
    let key = rsa_key()?;
    let now = time::OffsetDateTime::now_utc();
    let mut params = ca_params();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(3650);
    params.serial_number = Some(random_serial());
    let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
    let cert_path = out_dir.join("ca.pem");
    let key_path = out_dir.join("ca.key");
    write_pem(&key_path, &key.serialize_pem(), true)?;
    write_pem(&cert_path, &cert.pem(), false)?;
    println!("wrote {} and {}", cert_path.display(), key_path.display());
    Ok(())
}

fn cert_issue(ca_dir: &Path, jid: &str, out_dir: &Path) -> Result<(), String> {
    let jid = Jid::parse(jid).map_err(|e| format!("--jid {jid}: {e}"))?;
    if jid.resource().is_some() {
        return Err("certificates name bare JIDs (RFC 3923 §6 ignores the resource)".into());
    }
    let ca_pem = read_file(&ca_dir.join("ca.pem"))?;
    let ca_key = rcgen::KeyPair::from_pem(&read_file(&ca_dir.join("ca.key"))?)
        .map_err(|e| format!("{}: {e}", ca_dir.join("ca.key").display()))?;
    let issuer = rcgen::Issuer::new(ca_params(), ca_key);

    let bare = jid.as_str();
    let ia5 = |s: String| rcgen::string::Ia5String::try_from(s).map_err(|e| e.to_string());
    let key = rsa_key()?;
    let now = time::OffsetDateTime::now_utc();
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, bare);
    params.subject_alt_names = vec![
        rcgen::SanType::URI(ia5(format!("im:{bare}"))?),
        rcgen::SanType::URI(ia5(format!("pres:{bare}"))?),
        rcgen::SanType::OtherName((
            XMPP_ADDR_ARCS.to_vec(),
            rcgen::OtherNameValue::Utf8String(bare.to_owned()),
        )),
    ];
    params.is_ca = rcgen::IsCa::ExplicitNoCa;
    // RFC 8550 §4.4: what S/MIME agents (and `openssl cms`) check.
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::DigitalSignature,
        rcgen::KeyUsagePurpose::ContentCommitment,
        rcgen::KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::EmailProtection];
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(365);
    params.serial_number = Some(random_serial());
    params.use_authority_key_identifier_extension = true;
    let cert = params.signed_by(&key, &issuer).map_err(|e| e.to_string())?;

    // Check the result with the verifier that will judge it: a CA directory whose key does
    // not match its certificate would otherwise produce certificates nobody accepts.
    let credential = Credential::from_pem(&cert.pem(), &key.serialize_pem())
        .map_err(|e| format!("issued certificate unusable: {e}"))?;
    TrustAnchors::from_pem(&ca_pem)
        .and_then(|anchors| {
            anchors.validate(credential.certificate(), &[], SystemTime::now(), false)
        })
        .map_err(|e| {
            format!(
                "{}: ca.key does not belong to ca.pem? {e}",
                ca_dir.display()
            )
        })?;

    std::fs::create_dir_all(out_dir).map_err(|e| format!("{}: {e}", out_dir.display()))?;
    let stem = jid.node().unwrap_or(jid.domain());
    let cert_path = out_dir.join(format!("{stem}.pem"));
    let key_path = out_dir.join(format!("{stem}.key"));
    write_pem(&key_path, &key.serialize_pem(), true)?;
    write_pem(&cert_path, &cert.pem(), false)?;
    println!(
        "wrote {} and {} for {bare}",
        cert_path.display(),
        key_path.display()
    );
    Ok(())
}
