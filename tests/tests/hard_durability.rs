//! Durability (DESIGN principle 4, "nothing acknowledged is lost"): the server is killed
//! with SIGKILL in the middle of traffic, restarted on the same data directory, and every
//! message it had acknowledged must be delivered (offline storage, XEP-0160) and retrievable
//! (the sender's archive, XEP-0313), each exactly once.
//!
//! "Acknowledged": without stream management (being built separately; to be covered here
//! when it lands) a client learns that the server has processed a stanza when the answer to
//! a later IQ on the same stream arrives, because a session handles its stanzas in order.
//! So each message is followed by a ping; message `i` is acknowledged once ping `i` is
//! answered.
//!
//! The server runs in a child process (this test binary re-run with the ignored
//! `child_server_entry` test), so that the kill is a real SIGKILL: no destructor, no flush,
//! no graceful shutdown.

use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use minidom::Element;
use starling_core::config::{ListenerConfig, ListenerKind};
use starling_proto::framer::StreamEvent;
use starling_sasl::ScramHash;
use starling_tests::*;

const MAM: &str = "urn:xmpp:mam:2";
const RSM: &str = "http://jabber.org/protocol/rsm";

/// Not a test: the server process of `acknowledged_messages_survive_sigkill_exactly_once`.
/// Runs a server on the data directory named by `STARLING_CHILD_DATA_DIR`, prints its port
/// and serves until killed.
#[test]
#[ignore = "child process of hard_durability tests; does nothing on its own"]
fn child_server_entry() {
    let Ok(dir) = std::env::var("STARLING_CHILD_DATA_DIR") else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let mut config = starling_core::Config::default();
        config.server.data_dir = dir.into();
        config.listeners = vec![ListenerConfig {
            kind: ListenerKind::C2s,
            address: "127.0.0.1:0".parse().unwrap(),
        }];
        // The sender's flood must not be paced: this test is about storage.
        config.limits.session_stanzas_per_sec = 0;
        config.limits.session_bytes_per_sec = 0;
        let running = starling::start(config).await.expect("child server starts");
        if std::env::var("STARLING_CHILD_ADD_USERS").is_ok() {
            for u in ["alice", "bob"] {
                starling::accounts::add(&**running.server.storage(), "localhost", u, "pw", 4096)
                    .await
                    .unwrap();
            }
        }
        let port = running.listeners.address(ListenerKind::C2s).unwrap().port();
        println!("STARLING_PORT {port}");
        std::future::pending::<()>().await;
    });
}

/// Starts the child server; returns it and its address.
fn spawn_server(dir: &std::path::Path, add_users: bool) -> (Child, SocketAddr) {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", "child_server_entry", "--ignored", "--nocapture"])
        .env("STARLING_CHILD_DATA_DIR", dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if add_users {
        cmd.env("STARLING_CHILD_ADD_USERS", "1");
    }
    let mut child = cmd.spawn().expect("spawn child server");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let port = loop {
        let line = lines
            .next()
            .expect("child printed its port")
            .expect("read child output");
        if let Some(p) = line.strip_prefix("STARLING_PORT ") {
            break p.trim().parse::<u16>().unwrap();
        }
    };
    // Keep draining the child's stdout so it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines.by_ref() {});
    (child, SocketAddr::from(([127, 0, 0, 1], port)))
}

async fn login(addr: SocketAddr, user: &str, resource: &str) -> Conn {
    let mut c = Conn::connect(addr).await;
    c.open("localhost").await;
    c.starttls().await;
    c.scram(ScramHash::Sha256, false, user, "pw")
        .await
        .expect("login");
    c.bind(Some(resource)).await;
    c
}

/// Every message id in `user`'s archive, oldest first, paging through it.
async fn archived_ids(c: &mut Conn) -> Vec<String> {
    let mut ids = Vec::new();
    let mut after = String::new();
    for page in 0..100 {
        c.send(&format!(
            "<iq type='set' id='page{page}'><query xmlns='{MAM}' queryid='q{page}'>\
             <set xmlns='{RSM}'><max>100</max>{after}</set></query></iq>"
        ))
        .await;
        let fin = loop {
            let el = c.recv().await;
            if el.name() == "iq" && el.attr("id") == Some(&*format!("page{page}")) {
                assert_eq!(el.attr("type"), Some("result"), "{el:?}");
                break el;
            }
            if let Some(msg) = el
                .get_child("result", MAM)
                .and_then(|r| r.get_child("forwarded", "urn:xmpp:forward:0"))
                .and_then(|f| f.get_child("message", "jabber:client"))
            {
                ids.push(msg.attr("id").unwrap_or_default().to_owned());
            }
        };
        let fin = fin.get_child("fin", MAM).expect("fin");
        if fin.attr("complete") == Some("true") {
            return ids;
        }
        let last = fin
            .get_child("set", RSM)
            .and_then(|s| s.get_child("last", RSM))
            .map(|l| l.text())
            .expect("rsm last");
        after = format!("<after>{last}</after>");
    }
    panic!("archive paging did not complete");
}

fn is_message(e: &Element) -> bool {
    e.name() == "message"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_messages_survive_sigkill_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (child, addr) = spawn_server(&data, true);
    let mut alice = login(addr, "alice", "phone").await;
    // Bob is offline: each message goes to offline storage and both archives.
    let body = "d".repeat(512);
    let batch = |from: usize, to: usize| -> String {
        (from..to)
            .map(|i| {
                format!(
                    "<message to='bob@localhost' type='chat' id='m{i}'><body>{i} {body}</body></message>\
                     <iq type='get' id='ack{i}' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>"
                )
            })
            .collect()
    };
    let mut acked = BTreeSet::new();
    // Steady traffic first: 100 messages, all acknowledged.
    alice.send(&batch(0, 100)).await;
    while acked.len() < 100 {
        let el = alice.recv().await;
        if let Some(i) = el.attr("id").and_then(|id| id.strip_prefix("ack")) {
            acked.insert(i.parse::<usize>().unwrap());
        }
    }
    // Then 2000 more in flight, and SIGKILL while the server works through them.
    alice.send(&batch(100, 2100)).await;
    let killer = tokio::spawn(async move {
        let mut child = child;
        tokio::time::sleep(Duration::from_millis(150)).await;
        child.kill().expect("SIGKILL");
        child.wait().unwrap();
    });
    loop {
        match alice.next_event().await {
            Some(StreamEvent::Stanza(el)) => {
                if let Some(i) = el.attr("id").and_then(|id| id.strip_prefix("ack")) {
                    acked.insert(i.parse::<usize>().unwrap());
                }
            }
            Some(_) => {}
            None => break,
        }
    }
    killer.await.unwrap();
    let last_acked = *acked.last().unwrap();
    assert!(
        last_acked < 2099,
        "the kill came before the server finished ({} acknowledged); the test proves nothing",
        acked.len()
    );
    assert_eq!(acked.len(), last_acked + 1, "acks arrive in order");

    // Restart on the same data directory.
    let (mut child, addr) = spawn_server(&data, false);
    let mut bob = login(addr, "bob", "laptop").await;
    bob.send("<presence/>").await;
    let mut seen: HashMap<usize, usize> = HashMap::new();
    // Offline messages arrive after presence; read until the acknowledged ones are all in
    // and then 1 s of silence (duplicates or unacknowledged stragglers would show there).
    loop {
        let all = acked.iter().all(|i| seen.contains_key(i));
        let wait = if all {
            Duration::from_secs(1)
        } else {
            STEP_TIMEOUT
        };
        let ev = tokio::time::timeout(wait, bob.recv_until(is_message)).await;
        let Ok(m) = ev else {
            assert!(all, "not every acknowledged message arrived");
            break;
        };
        let i: usize = m
            .attr("id")
            .and_then(|id| id.strip_prefix('m'))
            .unwrap()
            .parse()
            .unwrap();
        let text = m.get_child("body", "jabber:client").unwrap().text();
        assert_eq!(text, format!("{i} {body}"), "the message arrives intact");
        *seen.entry(i).or_default() += 1;
    }
    let dupes: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dupes.is_empty(), "delivered more than once: {dupes:?}");
    println!(
        "SIGKILL after {} of 2100 messages were acknowledged; {} delivered after the restart",
        acked.len(),
        seen.len()
    );
    // Unacknowledged messages may or may not have been stored; they are never duplicated
    // either (checked above), and nothing arrives that was never sent.
    assert!(seen.keys().all(|i| *i < 2100));

    // The sender's archive holds each acknowledged message exactly once.
    let mut alice = login(addr, "alice", "laptop").await;
    let ids = archived_ids(&mut alice).await;
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for id in &ids {
        *counts.entry(id.as_str()).or_default() += 1;
    }
    for i in &acked {
        assert_eq!(
            counts.get(&*format!("m{i}")).copied(),
            Some(1),
            "message m{i} in alice's archive exactly once"
        );
    }
    assert!(
        counts.values().all(|n| *n == 1),
        "no duplicates in the archive"
    );
    child.kill().unwrap();
    child.wait().unwrap();
}
