//! Versioned schema migrations, applied in order inside one transaction each.

use sqlx::SqlitePool;

use crate::QueueError;

/// Every SQLite migration, in order; the index plus one is its version.
const SQLITE_MIGRATIONS: &[&str] = &[include_str!("../migrations/sqlite/0001_jobs.sql")];

/// Brings the schema up to the newest version this build knows.
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
