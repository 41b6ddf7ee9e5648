//! `starling bench` at a tiny size against an in-process server (issue 7: CI runs each
//! scenario once to prove it works; this is not a timed test). Every scenario runs over real
//! TLS sockets to a real server; the asserts are on counts (everything sent is delivered
//! exactly once, in order), never on speed.

use std::time::Duration;

use starling_core::config::{ListenerConfig, ListenerKind};

use starling::bench::{self, BenchOptions};

/// A server on 127.0.0.1:0 with accounts `{prefix}0..{prefix}{n-1}` for each (prefix, n).
async fn server(
    accounts: &[(&str, usize)],
) -> (starling::Running, BenchOptions, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = starling_core::Config::default();
    config.server.data_dir = dir.path().to_path_buf();
    config.listeners = vec![ListenerConfig {
        kind: ListenerKind::C2s,
        address: "127.0.0.1:0".parse().unwrap(),
    }];
    let running = starling::start(config).await.unwrap();
    let addr = running.listeners.address(ListenerKind::C2s).unwrap();
    let mut opts = BenchOptions::new(addr, "localhost", accounts[0].1);
    for (prefix, n) in accounts {
        for i in 0..*n {
            starling::accounts::add(
                &**running.server.storage(),
                "localhost",
                &format!("{prefix}{i}"),
                &opts.password,
                4096,
            )
            .await
            .unwrap();
        }
    }
    opts.duration = Duration::from_secs(10);
    (running, opts, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_login_idle_and_churn_scenarios_run() {
    let (running, mut opts, _dir) = server(&[("bench", 4)]).await;

    opts.duration = Duration::from_secs(2);
    let chat = bench::chat(&opts, 2, 16, 100_000, None).await.unwrap();
    println!("{chat:?}");
    assert!(chat.delivered > 0, "{chat:?}");
    assert_eq!(chat.lost, 0, "{chat:?}");
    assert_eq!(chat.duplicated, 0, "{chat:?}");
    assert_eq!(chat.reordered, 0, "{chat:?}");
    assert_eq!(chat.errors, 0, "{chat:?}");
    assert_eq!(chat.sent, chat.delivered, "{chat:?}");
    assert!(chat.latency.count as u64 == chat.delivered);
    let line = chat.summary().result_line("chat");
    assert!(
        line.starts_with("RESULT scenario=chat pairs=2 window=16 ")
            && line.contains(&format!(" delivered={} ", chat.delivered))
            && line.contains(" lost=0 "),
        "{line}"
    );

    // Paced: 100 messages/s over two senders, 50 each. The last of each falls due 49/50 s
    // after the start, so the run cannot end before 0.98 s however fast the machine (unpaced,
    // the same 100 messages take milliseconds); a slow machine only makes it longer.
    let paced = bench::chat(&opts, 2, 64, 50, Some(100)).await.unwrap();
    println!("{paced:?}");
    assert_eq!((paced.sent, paced.delivered), (100, 100), "{paced:?}");
    assert_eq!((paced.lost, paced.duplicated, paced.reordered), (0, 0, 0));
    assert!(paced.elapsed >= Duration::from_millis(980), "{paced:?}");
    let line = paced.summary().result_line("chat");
    assert!(line.contains(" offered_per_sec=100 "), "{line}");
    assert!(bench::chat(&opts, 2, 64, 100, Some(0)).await.is_err());

    let login = bench::login(&opts).await.unwrap();
    println!("{login:?}");
    assert_eq!(login.succeeded, 4, "{login:?}");
    assert_eq!(login.failed, 0, "{login:?}");
    assert!(login.logins_per_sec > 0.0);

    // A returning client's logins: warmed once, then timed with the cached SaltedPassword.
    let cached = bench::login_with_cache(&opts).await.unwrap();
    assert_eq!((cached.succeeded, cached.failed), (4, 0), "{cached:?}");
    let mut plain = opts.clone();
    plain.mechanism = starling_client::SaslMechanism::Plain;
    assert!(
        bench::login_with_cache(&plain).await.is_err(),
        "PLAIN has nothing to cache"
    );

    // The server runs in this process, so its RSS is ours.
    opts.duration = Duration::from_secs(1);
    let idle = bench::idle(&opts, Some(std::process::id())).await.unwrap();
    println!("{idle:?}");
    assert_eq!((idle.sessions, idle.failed), (4, 0), "{idle:?}");
    assert!(idle.rss_after_kib.is_some() && idle.bytes_per_session.is_some());

    // Churn: 10 logins over 4 accounts (so some at once on one account), chat before and after.
    opts.duration = Duration::from_secs(5);
    // Two chat runs on each side; the server runs in this process, so its CPU is ours.
    let churn = bench::churn(&opts, 1, 8, 300, 10, 2, Some(std::process::id()))
        .await
        .unwrap();
    println!("{churn:?}");
    assert_eq!((churn.before.len(), churn.after.len()), (2, 2), "{churn:?}");
    for c in churn.before.iter().chain(&churn.after) {
        assert_eq!((c.sent, c.delivered), (300, 300), "{churn:?}");
        assert_eq!((c.lost, c.duplicated, c.reordered, c.errors), (0, 0, 0, 0));
    }
    assert_eq!(
        (churn.logins.succeeded, churn.logins.failed),
        (10, 0),
        "{churn:?}"
    );
    assert!(churn.ratio() > 0.0);
    let (cpu_before, cpu_after) = churn.cpu_us_per_message.expect("server CPU per message");
    assert!(cpu_before > 0.0 && cpu_after > 0.0, "{churn:?}");
    let s = churn.summary();
    assert_eq!(s.get("logins"), Some("10"));
    assert_eq!(s.get("rounds"), Some("2"));
    assert_eq!(s.get("before_runs").map(|r| r.split('/').count()), Some(2));
    assert!(s.get("ratio").is_some() && s.get("cpu_ratio").is_some());

    // Anything but loopback is refused before a packet is sent.
    let mut remote = opts.clone();
    remote.server = "192.0.2.1:5222".parse().unwrap();
    assert!(bench::login(&remote).await.is_err());
    assert!(bench::chat(&remote, 1, 1, 1, None).await.is_err());

    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_scenario_makes_rosters_once_and_delivers_every_change() {
    // 12 accounts in 3 groups of 4: 3 contacts each.
    let (running, mut opts, _dir) = server(&[("bench", 12)]).await;
    opts.users = 12;
    let r = bench::presence(&opts, 3, 2, 20, false).await.unwrap();
    println!("{r:?}");
    assert_eq!((r.groups, r.accounts), (3, 12));
    // Each account asked each of its 3 contacts once.
    assert_eq!(r.subscriptions_made, 36, "{r:?}");
    // Every login saw every contact's presence.
    assert_eq!(r.login_presences, 36, "{r:?}");
    let c = &r.changes;
    assert_eq!(c.sent, 12 * 20, "{r:?}");
    assert_eq!(c.expected, 12 * 20 * 3);
    assert_eq!(c.delivered, c.expected, "{r:?}");
    assert_eq!(
        (c.lost, c.duplicated, c.reordered, c.errors),
        (0, 0, 0, 0),
        "{r:?}"
    );
    assert_eq!(c.latency.count as u64, c.delivered);

    // A re-run finds the rosters complete and makes no subscription.
    let again = bench::presence(&opts, 3, 2, 5, true).await.unwrap();
    assert_eq!(again.subscriptions_made, 0, "{again:?}");
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_scenario_pages_through_every_archived_message() {
    let (running, mut opts, _dir) = server(&[("arch", 4)]).await;
    opts.prefix = "arch".into();
    let r = bench::archive(&opts, 2, 8, 45, 10, 40).await.unwrap();
    println!("{r:?}");
    assert_eq!(
        (r.chat.sent, r.chat.delivered, r.chat.lost),
        (90, 90, 0),
        "{r:?}"
    );
    // Every account paged through its whole archive: each message is in the sender's and
    // the receiver's archive.
    assert_eq!(r.complete_accounts, 4, "{r:?}");
    assert_eq!(r.first_pass_messages, 2 * 90, "{r:?}");
    assert_eq!(r.query_errors, 0, "{r:?}");
    // 45 messages in pages of 10: at least 5 pages per pass.
    assert!(r.queries >= 4 * 5, "{r:?}");
    assert!(r.returned >= 180 && r.queries_per_sec > 0.0, "{r:?}");
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn muc_scenario_fans_every_message_out_to_every_occupant() {
    let (running, mut opts, _dir) = server(&[("bench", 10)]).await;
    opts.users = 10;
    let mut m = bench::MucOptions::new("conference.localhost", 5);
    m.rooms = 2;
    m.senders = 2;
    m.window = 4;
    m.max_messages = 20;
    let r = bench::muc(&opts, &m).await.unwrap();
    println!("{r:?}");
    let f = &r.messages;
    assert_eq!(f.sent, 2 * 2 * 20, "{r:?}");
    assert_eq!(f.expected, f.sent * 5);
    assert_eq!(f.delivered, f.expected, "{r:?}");
    assert_eq!(
        (f.lost, f.duplicated, f.reordered, f.errors),
        (0, 0, 0, 0),
        "{r:?}"
    );
    assert!(f.first_problem.is_none(), "{r:?}");
    let line = r.summary().result_line("muc");
    assert!(
        line.contains(" occupants=5 ") && line.contains(" lost=0 "),
        "{line}"
    );
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_scenario_moves_chat_messages_through_the_byte_relay() {
    let addr = bench::relay_server("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let mut opts = BenchOptions::new(addr, "localhost", 4);
    opts.duration = Duration::from_secs(5);
    for xml in [false, true] {
        let r = bench::relay(&opts, 2, 16, 2000, xml).await.unwrap();
        println!("xml {xml}: {r:?}");
        assert_eq!((r.sent, r.delivered), (4000, 4000), "{r:?}");
        assert_eq!((r.lost, r.duplicated, r.reordered, r.errors), (0, 0, 0, 0));
        assert!(r.messages_per_sec > 0.0);
    }
    // The relay refuses to listen anywhere but loopback.
    assert!(bench::RelayServer::bind("192.0.2.1:0".parse().unwrap(), 4)
        .await
        .is_err());
}

/// Runs the `starling` binary with `args`; returns its `RESULT` line.
fn result_line(args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_starling"))
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{args:?}: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("RESULT "))
        .collect();
    assert_eq!(lines.len(), 1, "{stdout}");
    lines[0].to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_line_prints_one_result_line() {
    use std::io::BufRead;

    // relay-server and relay, as bench/run uses them.
    let mut relay = std::process::Command::new(env!("CARGO_BIN_EXE_starling"))
        .args([
            "bench",
            "relay-server",
            "--listen",
            "127.0.0.1:0",
            "--lifetime",
            "60",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufReader::new(relay.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let addr = first
        .trim()
        .strip_prefix("relay: listening on ")
        .unwrap_or_else(|| panic!("{first}"))
        .to_owned();
    let line = tokio::task::spawn_blocking(move || {
        result_line(&[
            "bench",
            "relay",
            "--server",
            &addr,
            "--pairs",
            "2",
            "--max-messages",
            "500",
            "--duration",
            "5",
        ])
    })
    .await
    .unwrap();
    relay.kill().unwrap();
    relay.wait().unwrap();
    assert!(line.starts_with("RESULT scenario=relay "), "{line}");
    for kv in [
        " tls=none ",
        " pairs=2 ",
        " sent=1000 ",
        " delivered=1000 ",
        " lost=0 ",
    ] {
        assert!(line.contains(kv), "{kv} not in {line}");
    }

    // An XMPP scenario against an in-process server: muc on the default service.
    let (running, opts, _dir) = server(&[("bench", 6)]).await;
    let addr = opts.server.to_string();
    let line = tokio::task::spawn_blocking(move || {
        result_line(&[
            "bench",
            "muc",
            "--server",
            &addr,
            "--users",
            "6",
            "--occupants",
            "3",
            "--rooms",
            "2",
            "--max-messages",
            "10",
            "--duration",
            "5",
        ])
    })
    .await
    .unwrap();
    assert!(line.starts_with("RESULT scenario=muc "), "{line}");
    for kv in [
        " tls=starttls ",
        " occupants=3 ",
        " sent=20 ",
        " expected=60 ",
        " delivered=60 ",
        " lost=0 ",
        " duplicated=0 ",
    ] {
        assert!(line.contains(kv), "{kv} not in {line}");
    }
    running.shutdown().await;
}
