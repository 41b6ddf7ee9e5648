//! The storage conformance suite on SQLite (temporary files and `sqlite::memory:`), plus what
//! only a file shows: WAL mode, data surviving close and reopen, and acknowledged writes
//! surviving `kill -9` of the writing process.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use sqlx::Connection;
use starling_storage::{conformance, open, ArchiveItem, ArchiveQuery, ScramRecord, StorageError};

fn url(path: &Path) -> String {
    format!("sqlite://{}", path.display())
}

/// The journal mode recorded in the file, read by a connection of our own.
async fn journal_mode(path: &Path) -> String {
    let mut conn = sqlx::SqliteConnection::connect(&url(path)).await.unwrap();
    let mode: (String,) = sqlx::query_as("PRAGMA journal_mode")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    mode.0
}

#[tokio::test]
async fn conformance_on_a_temporary_file() {
    let dir = tempfile::tempdir().unwrap();
    // The parent directories do not exist yet: open creates them and the file.
    let path = dir.path().join("data").join("nested").join("starling.db");
    let storage = open(&url(&path)).await.unwrap();
    assert!(path.exists(), "open creates the database file");
    assert!(!storage.shared(), "a SQLite file belongs to one server");
    conformance::run_all(storage.as_ref()).await;
    storage.close().await;
    assert_eq!(journal_mode(&path).await, "wal");
}

#[tokio::test]
async fn conformance_in_memory() {
    let storage = open("sqlite::memory:").await.unwrap();
    conformance::run_all(storage.as_ref()).await;
}

#[tokio::test]
async fn data_survives_close_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("starling.db");
    let record = ScramRecord {
        mechanism: "SCRAM-SHA-256".into(),
        salt: vec![1, 0, 2],
        iterations: 10_000,
        stored_key: vec![0xaa; 32],
        server_key: vec![0; 32],
    };
    let message = ArchiveItem {
        id: "m1".into(),
        when_ms: 1_700_000_000_000,
        with: "juliet@capulet.lit".into(),
        payload: b"<message/>\0".to_vec(),
    };
    {
        let s = open(&url(&path)).await.unwrap();
        s.create_account("example.org", "romeo", std::slice::from_ref(&record))
            .await
            .unwrap();
        s.kv_set("example.org", "romeo", "vcard", b"<vCard/>")
            .await
            .unwrap();
        s.map_set(
            "example.org",
            "romeo",
            "roster",
            "juliet@capulet.lit",
            b"both",
        )
        .await
        .unwrap();
        s.archive_append("example.org", "romeo", "mam", &message)
            .await
            .unwrap();
        s.close().await;
        assert!(
            matches!(
                s.account_exists("example.org", "romeo").await,
                Err(StorageError::Backend(_))
            ),
            "a closed storage refuses work"
        );
    }
    // Reopen (migrations find the schema current) and read everything back.
    let s = open(&url(&path)).await.unwrap();
    assert_eq!(
        s.get_credentials("example.org", "romeo", "SCRAM-SHA-256")
            .await
            .unwrap(),
        Some(record)
    );
    assert_eq!(
        s.kv_get("example.org", "romeo", "vcard")
            .await
            .unwrap()
            .as_deref(),
        Some(&b"<vCard/>"[..])
    );
    assert_eq!(
        s.map_all("example.org", "romeo", "roster").await.unwrap(),
        vec![("juliet@capulet.lit".to_owned(), b"both".to_vec())]
    );
    let q = ArchiveQuery {
        limit: 10,
        ..ArchiveQuery::default()
    };
    assert_eq!(
        s.archive_query("example.org", "romeo", "mam", &q)
            .await
            .unwrap()
            .items,
        vec![message]
    );
    s.close().await;
    assert_eq!(journal_mode(&path).await, "wal");
}

#[tokio::test]
async fn two_opens_at_once_migrate_once() {
    let dir = tempfile::tempdir().unwrap();
    let u = url(&dir.path().join("starling.db"));
    let (a, b) = tokio::join!(open(&u), open(&u));
    let (a, b) = (a.unwrap(), b.unwrap());
    a.kv_set("d", "u", "s", b"from a").await.unwrap();
    assert_eq!(
        b.kv_get("d", "u", "s").await.unwrap().as_deref(),
        Some(&b"from a"[..])
    );
}

#[tokio::test]
async fn unknown_url_schemes_are_refused_without_echoing_the_url() {
    let err = open("mysql://root:secret@localhost/x").await.err().unwrap();
    match err {
        StorageError::Backend(message) => {
            assert!(message.contains("mysql"), "{message}");
            assert!(!message.contains("secret"), "{message}");
        }
        other => panic!("expected Backend, got {other:?}"),
    }
}

/// Environment variable that turns `crash_child` into the writer of `acked_writes_survive_kill_9`.
const CRASH_DB: &str = "STARLING_STORAGE_CRASH_CHILD_DB";
const CRASH_WRITES: usize = 200;

/// Not a test on its own (hence ignored): when `acked_writes_survive_kill_9` runs this binary
/// with `STARLING_STORAGE_CRASH_CHILD_DB` set, it writes and prints `acked N` after each write
/// returned Ok, then waits to be killed. Without the variable it does nothing.
#[tokio::test]
#[ignore = "helper process of acked_writes_survive_kill_9"]
async fn crash_child() {
    let Some(path) = std::env::var_os(CRASH_DB) else {
        return;
    };
    let s = open(&url(Path::new(&path))).await.unwrap();
    for i in 0..CRASH_WRITES {
        let item = ArchiveItem {
            id: format!("m{i}"),
            when_ms: i as i64,
            with: "juliet@capulet.lit".into(),
            payload: vec![i as u8; 100],
        };
        s.archive_append("example.org", "romeo", "offline", &item)
            .await
            .unwrap();
        println!("acked {i}");
    }
    println!("done");
    tokio::time::sleep(std::time::Duration::from_secs(60)).await;
}

#[tokio::test]
async fn acked_writes_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crash.db");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "crash_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CRASH_DB, &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    // Kill the writer (SIGKILL) in the middle of its writes, remembering what it acknowledged.
    let mut acked = 0;
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if let Some(n) = line.strip_prefix("acked ") {
            acked = n.parse::<usize>().unwrap() + 1;
            if acked == CRASH_WRITES / 2 {
                break;
            }
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        acked,
        CRASH_WRITES / 2,
        "the child never acknowledged enough writes"
    );

    let s = open(&url(&path)).await.unwrap();
    let count = s
        .archive_count("example.org", "romeo", "offline")
        .await
        .unwrap();
    assert!(
        count as usize >= acked,
        "{acked} writes were acknowledged before kill -9 but only {count} survived"
    );
    let q = ArchiveQuery {
        limit: acked,
        ..ArchiveQuery::default()
    };
    let page = s
        .archive_query("example.org", "romeo", "offline", &q)
        .await
        .unwrap();
    let expected: Vec<String> = (0..acked).map(|i| format!("m{i}")).collect();
    assert_eq!(
        page.items.iter().map(|i| i.id.clone()).collect::<Vec<_>>(),
        expected
    );
}
