//! `starling client` end to end: a CA and two S/MIME certificates made with `client cert`,
//! a server started in-process on 127.0.0.1:0, bob online with `client recv`, alice sending
//! with `client send --sign --encrypt`. Bob's output must show the plaintext and a verified
//! signature, also when the message waited in offline storage; a message signed with someone
//! else's certificate must show the RFC 3923 §7 condition instead.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use starling::Running;
use starling_core::config::{ListenerConfig, ListenerKind};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

const PASSWORD: &str = "s3cret-for-tests";
const BIN: &str = env!("CARGO_BIN_EXE_starling");

/// Runs the binary to completion: (success, stdout, stderr).
fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs the binary to completion; panics with its output if it fails.
fn starling(args: &[&str]) -> String {
    let (ok, stdout, stderr) = run(args);
    assert!(
        ok,
        "starling {args:?} failed\nstdout: {stdout}\nstderr: {stderr}"
    );
    stdout
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// A temporary world: CA, certificates for alice, bob and mallory, a running server.
struct World {
    dir: tempfile::TempDir,
    running: Running,
}

impl World {
    async fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca");
        let out = starling(&["client", "cert", "ca", "--out-dir", p(&ca)]);
        assert!(out.contains("ca.pem"), "{out}");
        for user in ["alice", "bob", "mallory"] {
            let jid = format!("{user}@localhost");
            let out = starling(&[
                "client",
                "cert",
                "issue",
                "--ca-dir",
                p(&ca),
                "--jid",
                &jid,
                "--out-dir",
                p(&dir.path().join("certs")),
            ]);
            assert!(out.contains(&jid), "{out}");
        }
        let mut config = starling_core::Config::default();
        config.server.data_dir = dir.path().join("data");
        config.listeners = vec![ListenerConfig {
            kind: ListenerKind::C2s,
            address: "127.0.0.1:0".parse().unwrap(),
        }];
        let running = starling::start(config).await.unwrap();
        for user in ["alice", "bob"] {
            starling::accounts::add(
                &**running.server.storage(),
                "localhost",
                user,
                PASSWORD,
                4096,
            )
            .await
            .unwrap();
        }
        World { dir, running }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// `--jid`, password, server address and TLS trust for `user`.
    fn login(&self, user: &str) -> Vec<String> {
        let addr = self.running.listeners.address(ListenerKind::C2s).unwrap();
        vec![
            "--jid".into(),
            format!("{user}@localhost"),
            "--password".into(),
            PASSWORD.into(),
            "--server".into(),
            addr.to_string(),
            "--tls-ca".into(),
            self.path("data/tls/cert.pem").to_str().unwrap().into(),
        ]
    }

    /// Starts `client recv` for bob and waits until he is online.
    async fn bob_online(&self, count: usize, timeout_secs: u64) -> Recv {
        let mut args: Vec<String> = vec!["client".into(), "recv".into()];
        args.extend(self.login("bob"));
        for a in [
            "--cert",
            p(&self.path("certs/bob.pem")),
            "--key",
            p(&self.path("certs/bob.key")),
            "--ca",
            p(&self.path("ca/ca.pem")),
            "--count",
            &count.to_string(),
            "--timeout",
            &timeout_secs.to_string(),
        ] {
            args.push(a.into());
        }
        let mut child = tokio::process::Command::new(BIN)
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        tokio::time::timeout(Duration::from_secs(20), stdout.read_line(&mut first))
            .await
            .expect("bob did not come online")
            .unwrap();
        assert!(first.starts_with("online as bob@localhost/"), "{first:?}");
        Recv { child, stdout }
    }

    /// `client send` from alice to bob with extra arguments: (success, stdout, stderr).
    fn alice_sends_status(&self, extra: &[&str], text: &str) -> (bool, String, String) {
        let mut args: Vec<String> = vec!["client".into(), "send".into()];
        args.extend(self.login("alice"));
        args.extend(["--to".into(), "bob@localhost".into()]);
        args.extend(extra.iter().map(|s| s.to_string()));
        args.push(text.into());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run(&args)
    }

    /// Same, asserting success; returns stdout.
    fn alice_sends(&self, extra: &[&str], text: &str) -> String {
        let (ok, stdout, stderr) = self.alice_sends_status(extra, text);
        assert!(ok, "client send failed\nstdout: {stdout}\nstderr: {stderr}");
        stdout
    }
}

struct Recv {
    child: tokio::process::Child,
    stdout: BufReader<tokio::process::ChildStdout>,
}

impl Recv {
    /// Waits for the process to exit: (success, rest of stdout, stderr).
    async fn finish(mut self) -> (bool, String, String) {
        let status = tokio::time::timeout(Duration::from_secs(40), self.child.wait())
            .await
            .expect("client recv did not exit")
            .unwrap();
        let mut out = String::new();
        self.stdout.read_to_string(&mut out).await.unwrap();
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            e.read_to_string(&mut err).await.unwrap();
        }
        (status.success(), out, err)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_and_encrypted_message_arrives_verified() {
    let world = World::new().await;
    let bob = world.bob_online(1, 30).await;
    let sent = world.alice_sends(
        &[
            "--sign",
            "--cert",
            p(&world.path("certs/alice.pem")),
            "--key",
            p(&world.path("certs/alice.key")),
            "--encrypt",
            "--recipient-cert",
            p(&world.path("certs/bob.pem")),
        ],
        "Meet me at the orchard ]]> at noon & bring <tea>",
    );
    assert!(
        sent.contains("sent to bob@localhost (signed, encrypted)"),
        "{sent}"
    );
    let (ok, out, err) = bob.finish().await;
    assert!(ok, "recv failed\nstdout: {out}\nstderr: {err}");
    assert!(out.contains("message from alice@localhost/"), "{out}");
    assert!(out.contains("  e2e: signed, encrypted\n"), "{out}");
    assert!(
        out.contains("  signature: verified (signer alice@localhost)\n"),
        "{out}"
    );
    assert!(
        out.contains("  text: Meet me at the orchard ]]> at noon & bring <tea>\n"),
        "{out}"
    );
    // The notice body is not what bob reads.
    assert!(!out.contains("your client cannot show it"), "{out}");
    world.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_signer_is_reported_with_the_rfc_condition() {
    let world = World::new().await;
    let bob = world.bob_online(1, 30).await;
    // Alice's account, Mallory's certificate: the signer is not the sender (§6).
    let (sent, _, send_err) = world.alice_sends_status(
        &[
            "--sign",
            "--cert",
            p(&world.path("certs/mallory.pem")),
            "--key",
            p(&world.path("certs/mallory.key")),
        ],
        "I am Alice, honest",
    );
    // Bob answers with the §7 error; when it reaches alice before she leaves, `send` reports
    // it and fails.
    assert!(
        sent || send_err.contains("came back with an error: not-acceptable/unverified-signature"),
        "{send_err}"
    );
    let (ok, out, err) = bob.finish().await;
    assert!(!ok, "recv should fail on an unverifiable message\n{out}");
    assert!(
        out.contains("  e2e: failed: not-acceptable/unverified-signature"),
        "{out}\n{err}"
    );
    assert!(!out.contains("I am Alice"), "{out}");
    assert!(err.contains("could not be opened"), "{err}");
    world.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_message_and_missing_messages() {
    let world = World::new().await;
    let mut bob = world.bob_online(2, 4).await;
    let sent = world.alice_sends(&[], "just text");
    assert!(sent.contains("(plain)"), "{sent}");
    // Only one of the two expected messages arrives: non-zero exit at the timeout.
    let mut line = String::new();
    while !line.contains("text: just text") {
        line.clear();
        tokio::time::timeout(Duration::from_secs(10), bob.stdout.read_line(&mut line))
            .await
            .expect("bob did not print the message")
            .unwrap();
    }
    let (ok, _out, err) = bob.finish().await;
    assert!(!ok);
    assert!(err.contains("received 1 of 2 messages"), "{err}");
    world.running.shutdown().await;
}

/// The same exchange with bob offline when alice sends: the server stores the message and
/// delivers it when bob comes online, byte for byte, so it still decrypts and verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_and_encrypted_message_through_offline_storage() {
    let world = World::new().await;
    let sent = world.alice_sends(
        &[
            "--sign",
            "--cert",
            p(&world.path("certs/alice.pem")),
            "--key",
            p(&world.path("certs/alice.key")),
            "--encrypt",
            "--recipient-cert",
            p(&world.path("certs/bob.pem")),
        ],
        "Stored while you were away",
    );
    assert!(
        sent.contains("sent to bob@localhost (signed, encrypted)"),
        "{sent}"
    );
    let bob = world.bob_online(1, 30).await;
    let (ok, out, err) = bob.finish().await;
    assert!(ok, "recv failed\nstdout: {out}\nstderr: {err}");
    assert!(
        out.contains("  signature: verified (signer alice@localhost)\n"),
        "{out}"
    );
    assert!(
        out.contains("  text: Stored while you were away\n"),
        "{out}"
    );
    world.running.shutdown().await;
}
