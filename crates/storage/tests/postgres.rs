//! The storage conformance suite on PostgreSQL, in a fresh database per test.
//!
//! The server comes from `STARLING_TEST_POSTGRES_URL` (`scripts/with-postgres` starts a
//! throwaway one and sets it). Without it the test prints SKIPPED and passes, except under CI
//! (`CI` set), where a silently skipped backend would hide regressions, so it fails.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::{Connection, PgConnection};
use starling_storage::{conformance, open};

/// `base` with its database name replaced by `db` (query parameters kept).
fn with_database(base: &str, db: &str) -> String {
    let scheme_end = base.find("://").expect("a postgres:// URL") + 3;
    let (authority_and_path, query) = match base[scheme_end..].split_once('?') {
        Some((rest, query)) => (rest, Some(query)),
        None => (&base[scheme_end..], None),
    };
    let authority = authority_and_path.split('/').next().unwrap();
    let mut url = format!("{}{authority}/{db}", &base[..scheme_end]);
    if let Some(query) = query {
        url.push('?');
        url.push_str(query);
    }
    url
}

fn base_url() -> Option<String> {
    match std::env::var("STARLING_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var_os("CI").is_some() => panic!(
            "STARLING_TEST_POSTGRES_URL is not set under CI: run the tests through \
             scripts/with-postgres so the PostgreSQL backend is tested"
        ),
        _ => {
            // Written to the process's stderr directly: the test harness captures `eprintln!`
            // of passing tests, and this line must be seen.
            let _ = std::io::stderr().write_all(
                b"\n********************************************************************\n\
                  SKIPPED: PostgreSQL conformance (STARLING_TEST_POSTGRES_URL is unset;\n\
                  run `scripts/with-postgres cargo test -p starling-storage`)\n\
                  ********************************************************************\n\n",
            );
            None
        }
    }
}

/// Runs `body` against a database created for it, and drops the database afterwards, also
/// when `body` panics (the panic is then re-raised).
async fn with_fresh_database<F, Fut>(base: &str, body: F)
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let db = format!("starling_test_{}_{nanos}", std::process::id());
    let mut admin = PgConnection::connect(base).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db}")))
        .execute(&mut admin)
        .await
        .unwrap();

    let outcome = tokio::spawn(body(with_database(base, &db))).await;

    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE {db} WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await
    .unwrap();
    admin.close().await.unwrap();
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

#[tokio::test]
async fn conformance_on_postgres() {
    let Some(base) = base_url() else { return };
    with_fresh_database(&base, |url| async move {
        // Two nodes starting at once: the advisory lock lets one migrate, the other waits.
        let (a, b) = tokio::join!(open(&url), open(&url));
        let (a, b) = (a.unwrap(), b.unwrap());
        b.close().await;
        assert!(
            a.shared(),
            "other nodes may write the same PostgreSQL database"
        );
        conformance::run_all(a.as_ref()).await;
        a.close().await;

        // Reopening finds the schema current and the data in place.
        let s = open(&url).await.unwrap();
        assert!(s.account_exists("accounts.example", "alice").await.unwrap());
        s.close().await;
    })
    .await;
}

#[test]
fn database_name_replacement_keeps_authority_and_parameters() {
    assert_eq!(
        with_database(
            "postgres://postgres@127.0.0.1:5433/base?sslmode=disable",
            "t1"
        ),
        "postgres://postgres@127.0.0.1:5433/t1?sslmode=disable"
    );
    assert_eq!(
        with_database("postgresql://u:p@h/base", "t2"),
        "postgresql://u:p@h/t2"
    );
    assert_eq!(with_database("postgres://h", "t3"), "postgres://h/t3");
}
