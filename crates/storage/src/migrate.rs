//! Versioned schema migrations, one folder per dialect (`migrations/sqlite`,
//! `migrations/postgres`), compiled into the binary and applied by [`run`] at open.
//!
//! We keep our own small runner instead of `sqlx::migrate!`: it needs no proc macro, works the
//! same through the `Any` driver on both dialects, and refuses a database whose schema is newer
//! than this build (a downgrade would otherwise run silently against an unknown schema).
//! Each migration runs in its own transaction together with the row that records it, so a
//! crash leaves the database either before or after it. On PostgreSQL an advisory lock
//! serialises nodes that start at the same time; on SQLite `BEGIN IMMEDIATE` does.
//!
//! Adding a migration: add `NNNN_name.sql` to both folders and a line to both lists below. A
//! unit test checks that the lists and the folders agree.

use sqlx::{AnyPool, Row};

use crate::sql::{backend_error, Dialect};
use crate::StorageError;

/// One schema step.
pub(crate) struct Migration {
    /// Applied in increasing order; recorded in `starling_migrations`.
    pub(crate) version: i64,
    /// The file's name, for logs and for the folder check.
    pub(crate) file: &'static str,
    /// The statements, run as one script.
    pub(crate) sql: &'static str,
}

pub(crate) const SQLITE: &[Migration] = &[Migration {
    version: 1,
    file: "0001_initial.sql",
    sql: include_str!("../migrations/sqlite/0001_initial.sql"),
}];

pub(crate) const POSTGRES: &[Migration] = &[Migration {
    version: 1,
    file: "0001_initial.sql",
    sql: include_str!("../migrations/postgres/0001_initial.sql"),
}];

/// Arbitrary constant naming our `pg_advisory_xact_lock`; "STARLING" in ASCII, truncated.
const PG_MIGRATION_LOCK: i64 = 0x5354_4152_4c49_4e47;

const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS starling_migrations (
    version BIGINT PRIMARY KEY, file TEXT NOT NULL, applied_ms BIGINT NOT NULL)";

/// Brings the schema up to date, or fails if the database is newer than this build.
pub(crate) async fn run(pool: &AnyPool, dialect: Dialect) -> Result<(), StorageError> {
    let migrations = match dialect {
        Dialect::Sqlite => SQLITE,
        Dialect::Postgres => POSTGRES,
    };
    let latest = migrations.last().map_or(0, |m| m.version);

    for migration in migrations {
        let mut tx = dialect.begin_write(pool).await?;
        if dialect == Dialect::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(PG_MIGRATION_LOCK)
                .execute(&mut *tx)
                .await
                .map_err(backend_error)?;
        }
        sqlx::query(CREATE_TABLE)
            .execute(&mut *tx)
            .await
            .map_err(backend_error)?;
        let applied: Option<i64> = sqlx::query("SELECT MAX(version) FROM starling_migrations")
            .fetch_one(&mut *tx)
            .await
            .and_then(|row| row.try_get(0))
            .map_err(backend_error)?;
        let applied = applied.unwrap_or(0);
        if applied > latest {
            return Err(StorageError::Backend(format!(
                "database schema version {applied} is newer than this build's {latest}; \
                 refusing to run an older Starling against it"
            )));
        }
        if migration.version <= applied {
            continue;
        }
        tracing::info!(
            version = migration.version,
            file = migration.file,
            "applying storage migration"
        );
        sqlx::raw_sql(migration.sql)
            .execute(&mut *tx)
            .await
            .map_err(|e| StorageError::Backend(format!("migration {}: {e}", migration.file)))?;
        sqlx::query(
            "INSERT INTO starling_migrations (version, file, applied_ms) VALUES ($1, $2, $3)",
        )
        .bind(migration.version)
        .bind(migration.file)
        .bind(crate::sql::now_ms())
        .execute(&mut *tx)
        .await
        .map_err(backend_error)?;
        tx.commit().await.map_err(backend_error)?;
    }
    Ok(())
}

/// The schema version recorded in the database (0 if never migrated).
#[cfg(test)]
pub(crate) async fn current_version(pool: &AnyPool) -> Result<i64, StorageError> {
    let v: Option<i64> = sqlx::query("SELECT MAX(version) FROM starling_migrations")
        .fetch_one(pool)
        .await
        .and_then(|row| row.try_get(0))
        .map_err(backend_error)?;
    Ok(v.unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder_files(dialect: &str) -> Vec<String> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("migrations")
            .join(dialect);
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.ends_with(".sql"))
            .collect();
        names.sort();
        names
    }

    fn check(list: &[Migration], dialect: &str) {
        let listed: Vec<String> = list.iter().map(|m| m.file.to_owned()).collect();
        assert_eq!(
            listed,
            folder_files(dialect),
            "{dialect}: list and folder disagree"
        );
        for (i, m) in list.iter().enumerate() {
            assert_eq!(
                m.version,
                i as i64 + 1,
                "{dialect}: versions must be 1, 2, 3 ..."
            );
            let prefix: i64 = m.file[..4].parse().expect("file names start with 4 digits");
            assert_eq!(
                prefix, m.version,
                "{dialect}: {} has the wrong version",
                m.file
            );
        }
    }

    #[test]
    fn every_migration_file_is_listed_in_order() {
        check(SQLITE, "sqlite");
        check(POSTGRES, "postgres");
        assert_eq!(
            SQLITE.len(),
            POSTGRES.len(),
            "both dialects reach the same version"
        );
    }

    #[tokio::test]
    async fn migrating_twice_is_a_no_op_and_newer_schemas_are_refused() {
        let storage = crate::sql::SqlStorage::open("sqlite::memory:")
            .await
            .unwrap();
        let pool = storage.pool();
        assert_eq!(current_version(pool).await.unwrap(), SQLITE.len() as i64);
        run(pool, Dialect::Sqlite).await.unwrap();
        assert_eq!(current_version(pool).await.unwrap(), SQLITE.len() as i64);

        sqlx::query("INSERT INTO starling_migrations (version, file, applied_ms) VALUES (999, 'future.sql', 0)")
            .execute(pool)
            .await
            .unwrap();
        let err = run(pool, Dialect::Sqlite).await.unwrap_err();
        assert!(
            matches!(&err, StorageError::Backend(m) if m.contains("newer")),
            "{err:?}"
        );
    }
}
