//! The behaviour every [`Storage`] backend must show, as one suite: [`run_all`].
//!
//! Prosody's lesson: one storage test suite, run against every driver, is what keeps drivers
//! interchangeable. `tests/sqlite.rs` and `tests/postgres.rs` run it; a new backend adds a test
//! file that does the same. The suite panics (with what it expected) on the first deviation.
//!
//! It needs a fresh, empty database: it creates accounts and archive ids that must not exist.

use futures_util::future::join_all;

use crate::{
    ArchiveItem, ArchivePage, ArchiveQuery, ScramRecord, Storage, StorageError, MAX_ARCHIVE_IDS,
    MAX_TEXT_BYTES, MAX_VALUE_BYTES,
};

/// Runs every check against `s`, which must be empty. Panics on the first failure.
pub async fn run_all(s: &dyn Storage) {
    accounts(s).await;
    credentials(s).await;
    delete_account_cascades(s).await;
    kv(s).await;
    maps(s).await;
    archive_basics(s).await;
    concurrent_appends(s).await;
    archive_paging(s).await;
    archive_filters(s).await;
    archive_deletes(s).await;
    limits(s).await;
}

/// A credential whose bytes differ per `seed`, with NULs and high bytes in every binary field.
fn scram(mechanism: &str, seed: u8) -> ScramRecord {
    ScramRecord {
        mechanism: mechanism.to_owned(),
        salt: vec![0, seed, 0xff, 0, 7],
        iterations: 4096 + u32::from(seed),
        stored_key: vec![seed; 32].into_iter().chain([0, 0xff]).collect(),
        server_key: [0u8, 1, 2, seed].repeat(8),
    }
}

/// An archive item with a payload that contains NUL and non-UTF-8 bytes.
fn item(id: &str, when_ms: i64, with: &str) -> ArchiveItem {
    let mut payload = format!("<message id='{id}'/>").into_bytes();
    payload.extend_from_slice(&[0, 0xfe, 0xff, 0]);
    ArchiveItem {
        id: id.to_owned(),
        when_ms,
        with: with.to_owned(),
        payload,
    }
}

fn ids(page: &ArchivePage) -> Vec<&str> {
    page.items.iter().map(|i| i.id.as_str()).collect()
}

fn query(limit: usize) -> ArchiveQuery {
    ArchiveQuery {
        limit,
        ..ArchiveQuery::default()
    }
}

async fn accounts(s: &dyn Storage) {
    let d = "accounts.example";
    assert!(
        !s.account_exists(d, "alice").await.unwrap(),
        "no account yet"
    );
    assert_eq!(s.list_accounts(d).await.unwrap(), Vec::<String>::new());
    assert_eq!(
        s.delete_account(d, "alice").await,
        Err(StorageError::NotFound)
    );

    s.create_account(d, "alice", &[scram("SCRAM-SHA-1", 1)])
        .await
        .unwrap();
    assert!(s.account_exists(d, "alice").await.unwrap());
    assert_eq!(
        s.create_account(d, "alice", &[scram("SCRAM-SHA-1", 2)])
            .await,
        Err(StorageError::AlreadyExists),
        "a second create must fail"
    );
    assert_eq!(
        s.get_credentials(d, "alice", "SCRAM-SHA-1").await.unwrap(),
        Some(scram("SCRAM-SHA-1", 1)),
        "a failed create must not touch the existing credentials"
    );

    // Same user, other domain: a different account.
    assert!(!s.account_exists("other.example", "alice").await.unwrap());
    s.create_account("other.example", "alice", &[])
        .await
        .unwrap();
    assert!(s.account_exists("other.example", "alice").await.unwrap());

    // Listing is per domain and in UTF-8 byte order on every backend ("é" after "z", "B" first).
    for user in ["zoe", "émile", "bob", "Bob", "ü@x"] {
        s.create_account(d, user, &[]).await.unwrap();
    }
    assert_eq!(
        s.list_accounts(d).await.unwrap(),
        ["Bob", "alice", "bob", "zoe", "émile", "ü@x"],
        "accounts sorted by bytes, case-sensitive, stored as given"
    );
    assert_eq!(s.list_accounts("other.example").await.unwrap(), ["alice"]);
    assert_eq!(
        s.list_accounts("nobody.example").await.unwrap(),
        Vec::<String>::new()
    );

    s.delete_account(d, "bob").await.unwrap();
    assert!(!s.account_exists(d, "bob").await.unwrap());
    assert!(
        s.account_exists(d, "Bob").await.unwrap(),
        "user names are case-sensitive"
    );
    assert_eq!(
        s.delete_account(d, "bob").await,
        Err(StorageError::NotFound)
    );
}

async fn credentials(s: &dyn Storage) {
    let d = "creds.example";
    let both = [scram("SCRAM-SHA-1", 1), scram("SCRAM-SHA-256", 2)];
    s.create_account(d, "juliet", &both).await.unwrap();
    assert_eq!(
        s.get_credentials(d, "juliet", "SCRAM-SHA-1").await.unwrap(),
        Some(both[0].clone())
    );
    assert_eq!(
        s.get_credentials(d, "juliet", "SCRAM-SHA-256")
            .await
            .unwrap(),
        Some(both[1].clone())
    );
    assert_eq!(
        s.get_credentials(d, "juliet", "SCRAM-SHA-512")
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        s.get_credentials(d, "romeo", "SCRAM-SHA-1").await.unwrap(),
        None
    );
    assert_eq!(
        s.get_credentials("x.example", "juliet", "SCRAM-SHA-1")
            .await
            .unwrap(),
        None
    );

    // Replacing removes mechanisms that are not given again.
    let new = ScramRecord {
        iterations: u32::MAX,
        ..scram("SCRAM-SHA-256", 9)
    };
    s.set_credentials(d, "juliet", std::slice::from_ref(&new))
        .await
        .unwrap();
    assert_eq!(
        s.get_credentials(d, "juliet", "SCRAM-SHA-1").await.unwrap(),
        None
    );
    assert_eq!(
        s.get_credentials(d, "juliet", "SCRAM-SHA-256")
            .await
            .unwrap(),
        Some(new),
        "u32::MAX iterations and binary keys round-trip"
    );

    assert_eq!(
        s.set_credentials(d, "romeo", &both).await,
        Err(StorageError::NotFound),
        "set_credentials needs an account"
    );
    assert!(
        !s.account_exists(d, "romeo").await.unwrap(),
        "and does not create one"
    );

    // Several records for one mechanism in one call: the last wins.
    s.create_account(
        d,
        "nurse",
        &[scram("SCRAM-SHA-1", 3), scram("SCRAM-SHA-1", 4)],
    )
    .await
    .unwrap();
    assert_eq!(
        s.get_credentials(d, "nurse", "SCRAM-SHA-1").await.unwrap(),
        Some(scram("SCRAM-SHA-1", 4))
    );
    // An empty salt and keys are stored as empty, not as missing.
    let empty = ScramRecord {
        mechanism: "SCRAM-SHA-1".into(),
        salt: vec![],
        iterations: 1,
        stored_key: vec![],
        server_key: vec![],
    };
    s.set_credentials(d, "nurse", std::slice::from_ref(&empty))
        .await
        .unwrap();
    assert_eq!(
        s.get_credentials(d, "nurse", "SCRAM-SHA-1").await.unwrap(),
        Some(empty)
    );
    // Credentials are per account.
    assert_eq!(
        s.get_credentials(d, "juliet", "SCRAM-SHA-256")
            .await
            .unwrap()
            .map(|r| r.iterations),
        Some(u32::MAX)
    );
}

async fn delete_account_cascades(s: &dyn Storage) {
    let d = "cascade.example";
    for (domain, user) in [(d, "alice"), (d, "bob"), ("other.cascade.example", "alice")] {
        if domain == d {
            s.create_account(domain, user, &[scram("SCRAM-SHA-256", 1)])
                .await
                .unwrap();
        }
        s.kv_set(domain, user, "vcard", b"<vCard/>").await.unwrap();
        s.kv_set(domain, user, "private", b"<x/>").await.unwrap();
        s.map_set(domain, user, "roster", "juliet@capulet.lit", b"item")
            .await
            .unwrap();
        s.map_set(domain, user, "blocklist", "spam@evil.example", b"")
            .await
            .unwrap();
        s.archive_append(domain, user, "mam", &item("a1", 1, "juliet@capulet.lit"))
            .await
            .unwrap();
        s.archive_append(domain, user, "offline", &item("o1", 1, "x@y"))
            .await
            .unwrap();
    }

    s.delete_account(d, "alice").await.unwrap();
    assert!(!s.account_exists(d, "alice").await.unwrap());
    assert_eq!(
        s.get_credentials(d, "alice", "SCRAM-SHA-256")
            .await
            .unwrap(),
        None
    );
    for store in ["vcard", "private"] {
        assert_eq!(
            s.kv_get(d, "alice", store).await.unwrap(),
            None,
            "kv {store} deleted"
        );
    }
    for store in ["roster", "blocklist"] {
        assert_eq!(
            s.map_count(d, "alice", store).await.unwrap(),
            0,
            "map {store} deleted"
        );
    }
    for store in ["mam", "offline"] {
        assert_eq!(
            s.archive_count(d, "alice", store).await.unwrap(),
            0,
            "archive {store} deleted"
        );
    }

    // Neighbours keep everything.
    for (domain, user) in [(d, "bob"), ("other.cascade.example", "alice")] {
        assert_eq!(
            s.kv_get(domain, user, "vcard").await.unwrap().as_deref(),
            Some(&b"<vCard/>"[..])
        );
        assert_eq!(s.map_count(domain, user, "roster").await.unwrap(), 1);
        assert_eq!(s.archive_count(domain, user, "mam").await.unwrap(), 1);
    }
    assert!(s.account_exists(d, "bob").await.unwrap());
    assert!(s
        .get_credentials(d, "bob", "SCRAM-SHA-256")
        .await
        .unwrap()
        .is_some());

    // Re-registering the name starts clean, and archive ids are free again.
    s.create_account(d, "alice", &[scram("SCRAM-SHA-1", 5)])
        .await
        .unwrap();
    assert_eq!(
        s.get_credentials(d, "alice", "SCRAM-SHA-256")
            .await
            .unwrap(),
        None
    );
    assert_eq!(s.kv_get(d, "alice", "vcard").await.unwrap(), None);
    s.archive_append(d, "alice", "mam", &item("a1", 1, "juliet@capulet.lit"))
        .await
        .unwrap();
}

async fn kv(s: &dyn Storage) {
    let d = "kv.example";
    assert_eq!(s.kv_get(d, "alice", "vcard").await.unwrap(), None);
    s.kv_delete(d, "alice", "vcard").await.unwrap(); // deleting nothing is fine

    let binary = [0u8, 1, 0, 0xff, 0xfe, b'<', 0];
    s.kv_set(d, "alice", "vcard", &binary).await.unwrap();
    assert_eq!(
        s.kv_get(d, "alice", "vcard").await.unwrap().as_deref(),
        Some(&binary[..])
    );
    s.kv_set(d, "alice", "vcard", b"second").await.unwrap();
    assert_eq!(
        s.kv_get(d, "alice", "vcard").await.unwrap().as_deref(),
        Some(&b"second"[..])
    );

    // An empty document is a document.
    s.kv_set(d, "alice", "empty", b"").await.unwrap();
    assert_eq!(s.kv_get(d, "alice", "empty").await.unwrap(), Some(vec![]));

    // Isolation: store, user, domain; kv needs no account; unicode store names.
    assert_eq!(s.kv_get(d, "alice", "private").await.unwrap(), None);
    assert_eq!(s.kv_get(d, "bob", "vcard").await.unwrap(), None);
    assert_eq!(
        s.kv_get("other.kv.example", "alice", "vcard")
            .await
            .unwrap(),
        None
    );
    s.kv_set(d, "", "host-store ☃", b"host").await.unwrap();
    assert_eq!(
        s.kv_get(d, "", "host-store ☃").await.unwrap().as_deref(),
        Some(&b"host"[..])
    );
    assert_eq!(s.kv_get(d, "", "host-store").await.unwrap(), None);

    // A large value survives intact.
    let large: Vec<u8> = (0..(1 << 20)).map(|i: u32| (i % 251) as u8).collect();
    s.kv_set(d, "alice", "large", &large).await.unwrap();
    assert_eq!(
        s.kv_get(d, "alice", "large").await.unwrap().as_deref(),
        Some(&large[..])
    );

    s.kv_delete(d, "alice", "vcard").await.unwrap();
    assert_eq!(s.kv_get(d, "alice", "vcard").await.unwrap(), None);
    assert_eq!(
        s.kv_get(d, "alice", "empty").await.unwrap(),
        Some(vec![]),
        "only one store goes"
    );
}

async fn maps(s: &dyn Storage) {
    let d = "map.example";
    assert_eq!(
        s.map_get(d, "alice", "roster", "juliet@capulet.lit")
            .await
            .unwrap(),
        None
    );
    assert_eq!(s.map_all(d, "alice", "roster").await.unwrap(), vec![]);
    assert_eq!(s.map_count(d, "alice", "roster").await.unwrap(), 0);
    s.map_delete(d, "alice", "roster", "nobody").await.unwrap();

    let entries: [(&str, &[u8]); 7] = [
        ("juliet@capulet.lit", b"<item subscription='both'/>"),
        ("Juliet@capulet.lit", b"\0upper\0"),
        ("émile@example.fr", &[0xff, 0, 0xff]),
        ("李@example.cn", b"cjk"),
        ("🦜@parrot.example", b"emoji"),
        ("", b"empty key"),
        ("nurse@capulet.lit", b""),
    ];
    for (key, value) in entries {
        s.map_set(d, "alice", "roster", key, value).await.unwrap();
    }
    for (key, value) in entries {
        assert_eq!(
            s.map_get(d, "alice", "roster", key)
                .await
                .unwrap()
                .as_deref(),
            Some(value),
            "map key {key:?}"
        );
    }
    let mut expected: Vec<(String, Vec<u8>)> = entries
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_vec()))
        .collect();
    expected.sort(); // byte order of the UTF-8 keys
    assert_eq!(
        s.map_all(d, "alice", "roster").await.unwrap(),
        expected,
        "map_all sorted by key"
    );
    assert_eq!(
        s.map_count(d, "alice", "roster").await.unwrap(),
        entries.len() as u64
    );

    // Overwrite keeps the count.
    s.map_set(d, "alice", "roster", "juliet@capulet.lit", b"v2")
        .await
        .unwrap();
    assert_eq!(
        s.map_get(d, "alice", "roster", "juliet@capulet.lit")
            .await
            .unwrap()
            .as_deref(),
        Some(&b"v2"[..])
    );
    assert_eq!(
        s.map_count(d, "alice", "roster").await.unwrap(),
        entries.len() as u64
    );

    // Isolation: store, user, domain.
    s.map_set(d, "alice", "blocklist", "juliet@capulet.lit", b"blocked")
        .await
        .unwrap();
    s.map_set(d, "bob", "roster", "juliet@capulet.lit", b"bob's")
        .await
        .unwrap();
    s.map_set("other.map.example", "alice", "roster", "x@y", b"other")
        .await
        .unwrap();
    assert_eq!(s.map_count(d, "alice", "blocklist").await.unwrap(), 1);
    assert_eq!(s.map_count(d, "bob", "roster").await.unwrap(), 1);
    assert_eq!(
        s.map_count("other.map.example", "alice", "roster")
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        s.map_get(d, "alice", "roster", "juliet@capulet.lit")
            .await
            .unwrap()
            .as_deref(),
        Some(&b"v2"[..])
    );
    assert_eq!(s.map_get(d, "alice", "roster", "x@y").await.unwrap(), None);

    s.map_delete(d, "alice", "roster", "juliet@capulet.lit")
        .await
        .unwrap();
    assert_eq!(
        s.map_get(d, "alice", "roster", "juliet@capulet.lit")
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        s.map_get(d, "alice", "roster", "Juliet@capulet.lit")
            .await
            .unwrap()
            .as_deref(),
        Some(&b"\0upper\0"[..]),
        "keys are case-sensitive"
    );
    assert_eq!(
        s.map_count(d, "alice", "roster").await.unwrap(),
        entries.len() as u64 - 1
    );
    assert_eq!(
        s.map_count(d, "bob", "roster").await.unwrap(),
        1,
        "bob's item stays"
    );
    assert_eq!(
        s.map_count(d, "alice", "blocklist").await.unwrap(),
        1,
        "other store stays"
    );
}

async fn archive_basics(s: &dyn Storage) {
    let (d, u) = ("archive.example", "alice");
    assert_eq!(s.archive_count(d, u, "mam").await.unwrap(), 0);
    assert_eq!(
        s.archive_query(d, u, "mam", &query(10)).await.unwrap(),
        ArchivePage {
            items: vec![],
            complete: true
        }
    );

    let first = item("m1", 1_000, "juliet@capulet.lit");
    s.archive_append(d, u, "mam", &first).await.unwrap();
    assert_eq!(
        s.archive_append(d, u, "mam", &item("m1", 2_000, "nurse@capulet.lit"))
            .await,
        Err(StorageError::AlreadyExists),
        "ids are unique within an archive"
    );
    // ... but only within it: other store, user and domain may reuse the id.
    s.archive_append(d, u, "offline", &item("m1", 5, "x@y"))
        .await
        .unwrap();
    s.archive_append(d, "bob", "mam", &item("m1", 5, "x@y"))
        .await
        .unwrap();
    s.archive_append("other.archive.example", u, "mam", &item("m1", 5, "x@y"))
        .await
        .unwrap();

    let page = s.archive_query(d, u, "mam", &query(10)).await.unwrap();
    assert_eq!(
        page,
        ArchivePage {
            items: vec![first.clone()],
            complete: true
        },
        "round trip"
    );
    assert_eq!(s.archive_count(d, u, "mam").await.unwrap(), 1);
    assert_eq!(s.archive_count(d, u, "offline").await.unwrap(), 1);
    assert_eq!(s.archive_count(d, u, "muc").await.unwrap(), 0);

    // Extreme timestamps and empty or large payloads survive as i64 and bytes.
    let extremes = [
        ArchiveItem {
            payload: vec![],
            ..item("min", i64::MIN, "")
        },
        item("neg", -1, "☃@snow.example"),
        ArchiveItem {
            payload: vec![0; 256 * 1024],
            ..item("max", i64::MAX, "z@z")
        },
    ];
    for it in &extremes {
        s.archive_append(d, u, "extremes", it).await.unwrap();
    }
    let page = s.archive_query(d, u, "extremes", &query(10)).await.unwrap();
    assert_eq!(page.items, extremes, "ordered by when_ms, values intact");

    // A page of zero items still says whether anything matches.
    let zero = s.archive_query(d, u, "extremes", &query(0)).await.unwrap();
    assert_eq!(
        zero,
        ArchivePage {
            items: vec![],
            complete: false
        }
    );
    // A huge limit is clamped, not an error or an overflow.
    let all = s
        .archive_query(d, u, "extremes", &query(usize::MAX))
        .await
        .unwrap();
    assert_eq!((all.items.len(), all.complete), (3, true));
}

/// Appends that arrive together (a backend may write them in one transaction: SQLite's group
/// commit) each land exactly once, and each caller gets its own answer: a duplicate id fails
/// alone, not the appends that happened to share its transaction.
async fn concurrent_appends(s: &dyn Storage) {
    let d = "concurrent.example";
    // More than one SQLite batch (256), spread over three archives.
    const N: usize = 600;
    let owners = ["u0", "u1", "u2"];
    let results = join_all((0..N).map(|i| async move {
        let it = item(&format!("c{i}"), i as i64, "x@y");
        s.archive_append(d, owners[i % 3], "mam", &it).await
    }))
    .await;
    for (i, r) in results.iter().enumerate() {
        assert_eq!(*r, Ok(()), "concurrent append c{i}");
    }
    for (n, owner) in owners.iter().enumerate() {
        assert_eq!(
            s.archive_count(d, owner, "mam").await.unwrap(),
            (N / 3) as u64,
            "{owner}: every append landed exactly once"
        );
        let page = s.archive_query(d, owner, "mam", &query(N)).await.unwrap();
        let expected: Vec<ArchiveItem> = (0..N)
            .filter(|i| i % 3 == n)
            .map(|i| item(&format!("c{i}"), i as i64, "x@y"))
            .collect();
        assert_eq!(
            page.items, expected,
            "{owner}: the items, each once, intact"
        );
    }

    // One append reuses a stored id, two new ones share an id; the others must succeed.
    let original = item("old", 1, "x@y");
    s.archive_append(d, "dup", "mam", &original).await.unwrap();
    let batch = [
        item("a", 2, "x@y"),
        item("old", 3, "intruder@y"),
        item("twin", 4, "first@y"),
        item("b", 5, "x@y"),
        item("twin", 6, "second@y"),
        item("c", 7, "x@y"),
    ];
    let results = join_all(batch.iter().map(|it| s.archive_append(d, "dup", "mam", it))).await;
    for i in [0, 3, 5] {
        assert_eq!(
            results[i],
            Ok(()),
            "{}: no conflict of its own",
            batch[i].id
        );
    }
    assert_eq!(
        results[1],
        Err(StorageError::AlreadyExists),
        "an id already in the archive"
    );
    let twin = match (&results[2], &results[4]) {
        (Ok(()), Err(StorageError::AlreadyExists)) => &batch[2],
        (Err(StorageError::AlreadyExists), Ok(())) => &batch[4],
        other => panic!("two appends of one id: one must succeed, one conflict; got {other:?}"),
    };
    let mut expected = vec![
        original,
        batch[0].clone(),
        twin.clone(),
        batch[3].clone(),
        batch[5].clone(),
    ];
    expected.sort_by_key(|it| it.when_ms);
    let page = s.archive_query(d, "dup", "mam", &query(10)).await.unwrap();
    assert_eq!(
        page.items, expected,
        "the stored item of a conflicting id is the one whose append succeeded"
    );
}

/// Items in insertion order, built so that timestamps tie and one arrives out of order.
fn paging_items() -> Vec<ArchiveItem> {
    let whens = [100, 200, 300, 300, 300, 400, 150, 500, 500, 600, 700];
    whens
        .iter()
        .enumerate()
        .map(|(i, &when)| {
            let with = if i % 3 == 0 {
                "nurse@capulet.lit"
            } else {
                "juliet@capulet.lit"
            };
            item(&format!("p{i:02}"), when, with)
        })
        .collect()
}

/// The archive order of `paging_items`: by when_ms, ties by insertion.
fn paging_order() -> Vec<String> {
    let mut items = paging_items();
    items.sort_by_key(|i| i.when_ms); // stable: ties keep insertion order
    items.into_iter().map(|i| i.id).collect()
}

async fn archive_paging(s: &dyn Storage) {
    let (d, u, st) = ("paging.example", "alice", "mam");
    for it in paging_items() {
        s.archive_append(d, u, st, &it).await.unwrap();
    }
    let order = paging_order();
    assert_eq!(
        &order[..6],
        ["p00", "p06", "p01", "p02", "p03", "p04"],
        "sanity: the late item sorts by time"
    );
    let all = s.archive_query(d, u, st, &query(100)).await.unwrap();
    assert_eq!(ids(&all), order, "full query in (when_ms, insertion) order");
    assert!(all.complete);
    assert_eq!(all.items, {
        let mut items = paging_items();
        items.sort_by_key(|i| i.when_ms);
        items
    });

    // Forward paging by after_id, pages of 3: boundaries fall inside the 300 and 500 ties.
    for limit in [1, 3, 4, 11] {
        let mut seen = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let q = ArchiveQuery {
                after_id: after.clone(),
                ..query(limit)
            };
            let page = s.archive_query(d, u, st, &q).await.unwrap();
            assert!(page.items.len() <= limit);
            seen.extend(ids(&page).into_iter().map(str::to_owned));
            if page.complete {
                break;
            }
            assert_eq!(page.items.len(), limit, "an incomplete page is full");
            after = page.items.last().map(|i| i.id.clone());
            assert!(seen.len() <= order.len(), "paging forwards must end");
        }
        assert_eq!(
            seen, order,
            "forward pages of {limit} cover everything once, in order"
        );
    }

    // Backward paging: reverse takes the last items; pages stay oldest first.
    for limit in [1, 3, 5, 11] {
        let mut pages = Vec::new();
        let mut before: Option<String> = None;
        loop {
            let q = ArchiveQuery {
                before_id: before.clone(),
                reverse: true,
                ..query(limit)
            };
            let page = s.archive_query(d, u, st, &q).await.unwrap();
            let page_ids: Vec<String> = ids(&page).into_iter().map(str::to_owned).collect();
            let mut sorted = page_ids.clone();
            sorted.sort_by_key(|id| order.iter().position(|o| o == id));
            assert_eq!(page_ids, sorted, "a reverse page is still oldest first");
            before = page.items.first().map(|i| i.id.clone());
            pages.push(page_ids);
            if page.complete {
                break;
            }
            assert_eq!(page.items.len(), limit, "an incomplete page is full");
            assert!(pages.len() <= order.len(), "paging backwards must end");
        }
        let seen: Vec<String> = pages.into_iter().rev().flatten().collect();
        assert_eq!(
            seen, order,
            "backward pages of {limit} cover everything once"
        );
    }
    let last3 = s
        .archive_query(
            d,
            u,
            st,
            &ArchiveQuery {
                reverse: true,
                ..query(3)
            },
        )
        .await
        .unwrap();
    assert_eq!(ids(&last3), &order[order.len() - 3..]);
    assert!(!last3.complete);

    // Ties: "after p02" (when 300) still yields p03 and p04 (also 300), "before p03" yields p02.
    let q = ArchiveQuery {
        after_id: Some("p02".into()),
        ..query(2)
    };
    assert_eq!(
        ids(&s.archive_query(d, u, st, &q).await.unwrap()),
        ["p03", "p04"]
    );
    let q = ArchiveQuery {
        before_id: Some("p03".into()),
        reverse: true,
        ..query(2)
    };
    assert_eq!(
        ids(&s.archive_query(d, u, st, &q).await.unwrap()),
        ["p01", "p02"]
    );

    // after and before together: strictly between.
    let q = ArchiveQuery {
        after_id: Some("p06".into()),
        before_id: Some("p05".into()),
        ..query(100)
    };
    let page = s.archive_query(d, u, st, &q).await.unwrap();
    assert_eq!(ids(&page), ["p01", "p02", "p03", "p04"]);
    assert!(page.complete);
    let q = ArchiveQuery {
        after_id: Some("p10".into()),
        ..query(100)
    };
    assert_eq!(
        s.archive_query(d, u, st, &q).await.unwrap(),
        ArchivePage {
            items: vec![],
            complete: true
        },
        "nothing after the last item"
    );

    // Unknown ids, or ids of another archive, are item-not-found.
    for (after, before) in [(Some("nope"), None), (None, Some("nope"))] {
        let q = ArchiveQuery {
            after_id: after.map(str::to_owned),
            before_id: before.map(str::to_owned),
            ..query(10)
        };
        assert_eq!(
            s.archive_query(d, u, st, &q).await,
            Err(StorageError::NotFound)
        );
    }
    s.archive_append(d, u, "elsewhere", &item("only-here", 1, "x@y"))
        .await
        .unwrap();
    let q = ArchiveQuery {
        after_id: Some("only-here".into()),
        ..query(10)
    };
    assert_eq!(
        s.archive_query(d, u, st, &q).await,
        Err(StorageError::NotFound)
    );
    assert_eq!(
        s.archive_query(d, "bob", "elsewhere", &q).await,
        Err(StorageError::NotFound)
    );
}

async fn archive_filters(s: &dyn Storage) {
    let (d, u, st) = ("filters.example", "alice", "mam");
    let items = paging_items();
    for it in &items {
        s.archive_append(d, u, st, it).await.unwrap();
    }
    let order = paging_order();
    let expect = |pred: &dyn Fn(&ArchiveItem) -> bool| -> Vec<String> {
        order
            .iter()
            .filter(|id| pred(items.iter().find(|i| &i.id == *id).unwrap()))
            .cloned()
            .collect()
    };
    let run = |q: ArchiveQuery| async move { s.archive_query(d, u, st, &q).await.unwrap() };

    // with
    let nurse = expect(&|i| i.with == "nurse@capulet.lit");
    assert_eq!(nurse.len(), 4);
    let page = run(ArchiveQuery {
        with: Some("nurse@capulet.lit".into()),
        ..query(100)
    })
    .await;
    assert_eq!(ids(&page), nurse);
    assert!(page.items.iter().all(|i| i.with == "nurse@capulet.lit"));
    let page = run(ArchiveQuery {
        with: Some("Nurse@capulet.lit".into()),
        ..query(100)
    })
    .await;
    assert_eq!(
        page,
        ArchivePage {
            items: vec![],
            complete: true
        },
        "with matches exactly"
    );

    // start and end are inclusive.
    let page = run(ArchiveQuery {
        start_ms: Some(300),
        end_ms: Some(500),
        ..query(100)
    })
    .await;
    assert_eq!(ids(&page), expect(&|i| (300..=500).contains(&i.when_ms)));
    let page = run(ArchiveQuery {
        start_ms: Some(501),
        ..query(100)
    })
    .await;
    assert_eq!(ids(&page), ["p09", "p10"]);
    let page = run(ArchiveQuery {
        end_ms: Some(150),
        ..query(100)
    })
    .await;
    assert_eq!(ids(&page), ["p00", "p06"]);

    // Filters combine, and paging respects them.
    let q = ArchiveQuery {
        with: Some("juliet@capulet.lit".into()),
        start_ms: Some(200),
        ..query(2)
    };
    let want = expect(&|i| i.with == "juliet@capulet.lit" && i.when_ms >= 200);
    let page = run(q.clone()).await;
    assert_eq!(ids(&page), &want[..2]);
    assert!(!page.complete);
    let page = run(ArchiveQuery {
        after_id: Some(want[1].clone()),
        ..q.clone()
    })
    .await;
    assert_eq!(ids(&page), &want[2..4]);
    let page = run(ArchiveQuery {
        reverse: true,
        ..q.clone()
    })
    .await;
    assert_eq!(ids(&page), &want[want.len() - 2..]);
    let page = run(ArchiveQuery { limit: 100, ..q }).await;
    assert_eq!(
        (ids(&page), page.complete),
        (want.iter().map(String::as_str).collect(), true)
    );

    // A filter that excludes everything: complete, even with a zero limit.
    let page = run(ArchiveQuery {
        start_ms: Some(10_000),
        ..query(0)
    })
    .await;
    assert_eq!(
        page,
        ArchivePage {
            items: vec![],
            complete: true
        }
    );

    // ids: only those, in archive order; unknown ones are simply absent.
    let wanted: Vec<String> = ["p07", "p00", "nope", "p03"].map(String::from).to_vec();
    let page = run(ArchiveQuery {
        ids: Some(wanted),
        ..query(100)
    })
    .await;
    assert_eq!(ids(&page), ["p00", "p03", "p07"]);
    let page = run(ArchiveQuery {
        ids: Some(vec![]),
        ..query(100)
    })
    .await;
    assert_eq!(
        page,
        ArchivePage {
            items: vec![],
            complete: true
        }
    );
    let q = ArchiveQuery {
        ids: Some(["p00", "p03", "p07"].map(String::from).to_vec()),
        with: Some("nurse@capulet.lit".into()),
        ..query(1)
    };
    let page = run(q).await;
    assert_eq!((ids(&page), page.complete), (vec!["p00"], false));
}

async fn archive_deletes(s: &dyn Storage) {
    let (d, u, st) = ("deletes.example", "alice", "offline");
    for it in paging_items() {
        s.archive_append(d, u, st, &it).await.unwrap();
        s.archive_append(d, u, "mam", &it).await.unwrap();
    }
    let total = paging_items().len() as u64;

    let some: Vec<String> = ["p01", "p02", "nope"].map(String::from).to_vec();
    assert_eq!(
        s.archive_delete(d, u, st, Some(&some), None).await.unwrap(),
        2
    );
    assert_eq!(s.archive_count(d, u, st).await.unwrap(), total - 2);
    assert_eq!(
        s.archive_delete(d, u, st, Some(&some), None).await.unwrap(),
        0,
        "already gone"
    );
    assert_eq!(
        s.archive_delete(d, u, st, Some(&[]), None).await.unwrap(),
        0,
        "no ids, no delete"
    );
    let q = ArchiveQuery {
        after_id: Some("p01".into()),
        ..query(10)
    };
    assert_eq!(
        s.archive_query(d, u, st, &q).await,
        Err(StorageError::NotFound)
    );

    // before_ms is strict: when_ms < before_ms. p00 (100) and p06 (150) go (p01 and p02 are
    // gone already); p03 and p04, at exactly 300, stay.
    assert_eq!(
        s.archive_delete(d, u, st, None, Some(300)).await.unwrap(),
        2
    );
    let page = s.archive_query(d, u, st, &query(100)).await.unwrap();
    assert_eq!(ids(&page)[0], "p03", "items at or after before_ms stay");
    assert_eq!(s.archive_count(d, u, st).await.unwrap(), total - 4);

    // ids and before_ms together: both must hold.
    let both: Vec<String> = ["p03", "p10"].map(String::from).to_vec();
    assert_eq!(
        s.archive_delete(d, u, st, Some(&both), Some(500))
            .await
            .unwrap(),
        1
    );
    let page = s.archive_query(d, u, st, &query(100)).await.unwrap();
    assert!(!ids(&page).contains(&"p03") && ids(&page).contains(&"p10"));

    // None, None empties this archive only; ids become free again.
    assert_eq!(
        s.archive_delete(d, u, st, None, None).await.unwrap(),
        total - 5
    );
    assert_eq!(s.archive_count(d, u, st).await.unwrap(), 0);
    assert_eq!(
        s.archive_count(d, u, "mam").await.unwrap(),
        total,
        "other store untouched"
    );
    s.archive_append(d, u, st, &item("p00", 1, "x@y"))
        .await
        .unwrap();
    assert_eq!(s.archive_count(d, u, st).await.unwrap(), 1);
}

async fn limits(s: &dyn Storage) {
    let d = "limits.example";
    let longest = "a".repeat(MAX_TEXT_BYTES);
    let too_long = "é".repeat(MAX_TEXT_BYTES / 2 + 1); // counted in bytes, not characters
    let is_limit = |r: Result<(), StorageError>| matches!(r, Err(StorageError::LimitExceeded(_)));

    s.kv_set(d, &longest, "vcard", b"ok").await.unwrap();
    assert_eq!(
        s.kv_get(d, &longest, "vcard").await.unwrap().as_deref(),
        Some(&b"ok"[..])
    );
    s.map_set(d, "u", "roster", &longest, b"ok").await.unwrap();
    assert!(is_limit(s.kv_set(d, &too_long, "vcard", b"x").await));
    assert!(is_limit(s.map_set(d, "u", "roster", &too_long, b"x").await));
    assert!(is_limit(s.create_account(d, &too_long, &[]).await));
    assert!(is_limit(
        s.archive_append(d, "u", "mam", &item(&too_long, 1, "x"))
            .await
    ));
    assert!(matches!(
        s.list_accounts(&too_long).await,
        Err(StorageError::LimitExceeded(_))
    ));

    // NUL cannot be stored in PostgreSQL TEXT, so no backend accepts it in a text argument.
    assert!(is_limit(s.map_set(d, "u", "roster", "a\0b", b"x").await));
    assert!(is_limit(s.kv_set(d, "u\0", "vcard", b"x").await));
    assert!(is_limit(
        s.archive_append(d, "u", "mam", &item("id", 1, "with\0nul"))
            .await
    ));
    assert_eq!(
        s.map_count(d, "u", "roster").await.unwrap(),
        1,
        "nothing half-written"
    );

    let huge = vec![0u8; MAX_VALUE_BYTES + 1];
    assert!(is_limit(s.kv_set(d, "u", "big", &huge).await));
    assert_eq!(s.kv_get(d, "u", "big").await.unwrap(), None);

    let many: Vec<String> = (0..=MAX_ARCHIVE_IDS).map(|i| i.to_string()).collect();
    assert!(matches!(
        s.archive_delete(d, "u", "mam", Some(&many), None).await,
        Err(StorageError::LimitExceeded(_))
    ));
    let q = ArchiveQuery {
        ids: Some(many),
        ..query(10)
    };
    assert!(matches!(
        s.archive_query(d, "u", "mam", &q).await,
        Err(StorageError::LimitExceeded(_))
    ));
}
