//! `starling bench` at a tiny size against an in-process server (issue 7: CI runs each
//! scenario once to prove it works; this is not a timed test).

use std::time::Duration;

use starling_core::config::{ListenerConfig, ListenerKind};

use starling::bench;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_and_login_scenarios_run() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = starling_core::Config::default();
    config.server.data_dir = dir.path().to_path_buf();
    config.listeners = vec![ListenerConfig {
        kind: ListenerKind::C2s,
        address: "127.0.0.1:0".parse().unwrap(),
    }];
    let running = starling::start(config).await.unwrap();
    let server = running.listeners.address(ListenerKind::C2s).unwrap();
    let mut opts = bench::BenchOptions::new(server, "localhost", 4);
    for i in 0..opts.users {
        starling::accounts::add(
            &**running.server.storage(),
            "localhost",
            &format!("bench{i}"),
            &opts.password,
            4096,
        )
        .await
        .unwrap();
    }

    opts.duration = Duration::from_secs(2);
    let chat = bench::chat(&opts, 2, 16, 100_000).await.unwrap();
    println!("{chat:?}");
    assert!(chat.delivered > 0, "{chat:?}");
    assert_eq!(chat.lost, 0, "{chat:?}");
    assert_eq!(chat.duplicated, 0, "{chat:?}");
    assert_eq!(chat.reordered, 0, "{chat:?}");
    assert_eq!(chat.errors, 0, "{chat:?}");
    assert_eq!(chat.sent, chat.delivered, "{chat:?}");
    assert!(chat.latency.count as u64 == chat.delivered);

    let login = bench::login(&opts).await.unwrap();
    println!("{login:?}");
    assert_eq!(login.succeeded, 4, "{login:?}");
    assert_eq!(login.failed, 0, "{login:?}");
    assert!(login.logins_per_sec > 0.0);

    // Anything but loopback is refused before a packet is sent.
    let mut remote = opts.clone();
    remote.server = "192.0.2.1:5222".parse().unwrap();
    assert!(bench::login(&remote).await.is_err());

    running.shutdown().await;
}
