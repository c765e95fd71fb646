//! Versioned schema migrations, applied in order inside one transaction each.
//!
//! Two schemas live here: the batch run state (`migrations/sqlite/`, version table
//! `schema_version`) and the service queue (`migrations/queue-sqlite/` and
//! `migrations/queue-postgres/`, version table `queue_schema_version`). Queue migrations are
//! additive (new tables, new nullable columns), so a build one version behind keeps working on a
//! database migrated by a newer build during a rolling deployment; anything newer is refused.
//! A third, the result cache of `speechmill process` (`migrations/cache-sqlite/`, version table
//! `cache_schema_version`), follows the queue's rules: several runs may share one cache file.

use sqlx::{PgPool, SqlitePool};

use crate::QueueError;

/// Every batch-store migration, in order; the index plus one is its version.
const SQLITE_MIGRATIONS: &[&str] = &[include_str!("../migrations/sqlite/0001_jobs.sql")];

/// Every SQLite queue migration, in order.
const QUEUE_SQLITE_MIGRATIONS: &[&str] = &[
    include_str!("../migrations/queue-sqlite/0001_queue.sql"),
    include_str!("../migrations/queue-sqlite/0002_callbacks.sql"),
    include_str!("../migrations/queue-sqlite/0003_result_cache.sql"),
];

/// Every PostgreSQL queue migration, in order; the same versions as the SQLite ones.
const QUEUE_POSTGRES_MIGRATIONS: &[&str] = &[
    include_str!("../migrations/queue-postgres/0001_queue.sql"),
    include_str!("../migrations/queue-postgres/0002_callbacks.sql"),
    include_str!("../migrations/queue-postgres/0003_result_cache.sql"),
];

/// Every migration of the standalone result cache file, in order.
const CACHE_SQLITE_MIGRATIONS: &[&str] = &[include_str!("../migrations/cache-sqlite/0001_result_cache.sql")];

/// How many versions ahead of this build a queue database may be (additive migrations only).
const QUEUE_VERSIONS_TOLERATED_AHEAD: i64 = 1;

/// Brings the batch-store schema up to the newest version this build knows.
pub(crate) async fn migrate_sqlite(pool: &SqlitePool) -> Result<(), QueueError> {
    sqlx::query("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)").execute(pool).await?;
    let current: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM schema_version").fetch_one(pool).await?;
    let current = current.unwrap_or(0);
    let known = SQLITE_MIGRATIONS.len() as i64;
    if current > known {
        return Err(QueueError::SchemaTooNew { found: current, known });
    }
    for (index, sql) in SQLITE_MIGRATIONS.iter().enumerate().skip(current as usize) {
        let mut tx = pool.begin().await?;
        sqlx::raw_sql(*sql).execute(&mut *tx).await?;
        sqlx::query("INSERT INTO schema_version (version) VALUES (?)").bind(index as i64 + 1).execute(&mut *tx).await?;
        tx.commit().await?;
    }
    Ok(())
}

/// Brings a SQLite queue database up to the newest version this build knows.
pub(crate) async fn migrate_queue_sqlite(pool: &SqlitePool) -> Result<(), QueueError> {
    migrate_shared_sqlite(pool, "queue_schema_version", QUEUE_SQLITE_MIGRATIONS).await
}

/// Brings a standalone result cache file up to the newest version this build knows.
pub(crate) async fn migrate_cache_sqlite(pool: &SqlitePool) -> Result<(), QueueError> {
    migrate_shared_sqlite(pool, "cache_schema_version", CACHE_SQLITE_MIGRATIONS).await
}

/// Applies `migrations` to a SQLite file that several processes may open at once, recording
/// versions in `version_table` (a constant of this file).
async fn migrate_shared_sqlite(
    pool: &SqlitePool,
    version_table: &'static str,
    migrations: &[&'static str],
) -> Result<(), QueueError> {
    // BEGIN IMMEDIATE: two processes opening one fresh file must not both migrate it.
    let mut conn = pool.acquire().await?;
    let create = format!("CREATE TABLE IF NOT EXISTS {version_table} (version INTEGER NOT NULL)");
    sqlx::query(sqlx::AssertSqlSafe(create)).execute(&mut *conn).await?;
    sqlx::raw_sql("BEGIN IMMEDIATE").execute(&mut *conn).await?;
    let outcome = async {
        let select = format!("SELECT MAX(version) FROM {version_table}");
        let current: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(select)).fetch_one(&mut *conn).await?;
        let current = check_queue_version(current.unwrap_or(0), migrations.len())?;
        for (index, sql) in migrations.iter().enumerate().skip(current) {
            sqlx::raw_sql(*sql).execute(&mut *conn).await?;
            let insert = format!("INSERT INTO {version_table} (version) VALUES (?)");
            sqlx::query(sqlx::AssertSqlSafe(insert)).bind(index as i64 + 1).execute(&mut *conn).await?;
        }
        Ok::<(), QueueError>(())
    }
    .await;
    match outcome {
        Ok(()) => {
            sqlx::raw_sql("COMMIT").execute(&mut *conn).await?;
            Ok(())
        }
        Err(err) => {
            let _ = sqlx::raw_sql("ROLLBACK").execute(&mut *conn).await;
            Err(err)
        }
    }
}

/// Brings a PostgreSQL queue database up to the newest version this build knows. An advisory
/// lock serialises nodes that start at the same moment.
pub(crate) async fn migrate_queue_postgres(pool: &PgPool) -> Result<(), QueueError> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(7366217060331)").execute(&mut *tx).await?;
    sqlx::query("CREATE TABLE IF NOT EXISTS queue_schema_version (version BIGINT NOT NULL)").execute(&mut *tx).await?;
    let current: Option<i64> =
        sqlx::query_scalar("SELECT MAX(version) FROM queue_schema_version").fetch_one(&mut *tx).await?;
    let current = check_queue_version(current.unwrap_or(0), QUEUE_POSTGRES_MIGRATIONS.len())?;
    for (index, sql) in QUEUE_POSTGRES_MIGRATIONS.iter().enumerate().skip(current) {
        sqlx::raw_sql(*sql).execute(&mut *tx).await?;
        sqlx::query("INSERT INTO queue_schema_version (version) VALUES ($1)")
            .bind(index as i64 + 1)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Refuses a queue database more than the tolerated number of versions ahead; returns how many
/// migrations are already applied (capped at what this build knows).
fn check_queue_version(current: i64, known: usize) -> Result<usize, QueueError> {
    let known = known as i64;
    if current > known + QUEUE_VERSIONS_TOLERATED_AHEAD {
        return Err(QueueError::SchemaTooNew { found: current, known });
    }
    Ok(current.min(known) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queue_database_one_version_ahead_is_accepted_and_two_are_refused() {
        assert_eq!(check_queue_version(0, 3).unwrap(), 0);
        assert_eq!(check_queue_version(4, 3).unwrap(), 3);
        assert!(matches!(check_queue_version(5, 3), Err(QueueError::SchemaTooNew { found: 5, known: 3 })));
    }
}
