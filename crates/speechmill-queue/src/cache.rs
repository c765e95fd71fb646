//! The result cache's store: one row per clip result (`result_cache`), keyed by the SHA-256 of
//! the clip's decoded content, the configuration that shapes it and speechmill's version, with
//! the result as JSON and an accepted clip's encoded audio beside it.
//!
//! The store knows nothing of what the value means (`speechmill_pipeline::cache` makes and reads
//! it); it keeps bytes, counts them, and forgets the least recently used when asked to. Three
//! stores implement [`ResultCacheStore`]: the service's queue backends ([`crate::SqliteQueue`],
//! [`crate::PostgresQueue`], migration 0003 of the queue) and [`SqliteResultCache`], the SQLite
//! file of `speechmill process` under the user's cache folder.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use crate::QueueError;
use crate::migrate::migrate_cache_sqlite;
use crate::queue::Clock;
use crate::sql_queue::{Dialect, Statements};

/// One entry to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheRecord {
    /// Hex SHA-256 of the content, configuration and version.
    pub key: String,
    /// speechmill's version that made it.
    pub version: String,
    /// Hash of the configuration that shaped it.
    pub config_hash: String,
    /// The result, JSON.
    pub value: String,
    /// The encoded audio of an accepted clip.
    pub audio: Option<Vec<u8>>,
}

/// An entry as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheHit {
    /// The result, JSON.
    pub value: String,
    /// The encoded audio of an accepted clip.
    pub audio: Option<Vec<u8>>,
}

/// What the cache holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct CacheStats {
    /// Entries in total.
    pub entries: u64,
    /// Bytes of values and audio in total (the file or table is somewhat larger).
    pub bytes: u64,
    /// Entries and bytes by the speechmill version that wrote them.
    pub by_version: BTreeMap<String, VersionStats>,
}

/// Entries and bytes of one version.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct VersionStats {
    /// Entries.
    pub entries: u64,
    /// Bytes of values and audio.
    pub bytes: u64,
}

/// Where clip results are cached.
#[async_trait::async_trait]
pub trait ResultCacheStore: Send + Sync + 'static {
    /// The entry under `key`, marking it used now; `None` if there is none.
    async fn cache_get(&self, key: &str) -> Result<Option<CacheHit>, QueueError>;

    /// Stores an entry, replacing any under the same key.
    async fn cache_put(&self, record: &CacheRecord) -> Result<(), QueueError>;

    /// Counts entries and bytes.
    async fn cache_stats(&self) -> Result<CacheStats, QueueError>;

    /// Removes every entry; returns how many there were.
    async fn cache_clear(&self) -> Result<u64, QueueError>;

    /// Removes the least recently used entries until at most `max_bytes` remain; returns how
    /// many were removed.
    async fn cache_prune(&self, max_bytes: u64) -> Result<u64, QueueError>;
}

/// Size of an entry as counted in `bytes`.
pub(crate) fn record_bytes(record: &CacheRecord) -> i64 {
    (record.value.len() + record.audio.as_ref().map_or(0, Vec::len)) as i64
}

/// Turns per-version rows of (version, entries, bytes) into [`CacheStats`].
pub(crate) fn stats_from(rows: Vec<(String, i64, i64)>) -> CacheStats {
    let mut stats = CacheStats::default();
    for (version, entries, bytes) in rows {
        let (entries, bytes) = (entries.max(0) as u64, bytes.max(0) as u64);
        stats.entries += entries;
        stats.bytes += bytes;
        stats.by_version.insert(version, VersionStats { entries, bytes });
    }
    stats
}

/// The result cache of `speechmill process`: a SQLite file (WAL) of its own, shared by every
/// worker thread of a run and by runs that use the same cache folder at the same time.
#[derive(Clone)]
pub struct SqliteResultCache {
    /// Connection pool; SQLite serialises writers, readers run beside them (WAL).
    pub(crate) pool: SqlitePool,
    /// Statements rendered for SQLite; read-only.
    pub(crate) sql: Arc<Statements>,
    /// The source of `created_at` and `used_at`.
    pub(crate) clock: Arc<dyn Clock>,
}

impl SqliteResultCache {
    /// Opens (creating if missing) the cache file at `path` and applies pending migrations.
    pub async fn open(path: &Path, clock: Arc<dyn Clock>) -> Result<Self, QueueError> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // NORMAL: an entry lost to a power cut is only a miss next time.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await?;
        migrate_cache_sqlite(&pool).await?;
        Ok(SqliteResultCache { pool, sql: Arc::new(Statements::new(Dialect::Sqlite)), clock })
    }

    /// Rebuilds the file to give the space of removed entries back.
    pub async fn vacuum(&self) -> Result<(), QueueError> {
        sqlx::raw_sql("VACUUM").execute(&self.pool).await?;
        self.pool.close().await;
        Ok(())
    }

    /// Closes the pool, checkpointing the write-ahead log.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

crate::sql_queue::result_cache_store!(SqliteResultCache, sqlx::Sqlite);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_add_up_over_versions() {
        let stats = stats_from(vec![("0.1.0".into(), 3, 300), ("0.2.0".into(), 1, 50)]);
        assert_eq!((stats.entries, stats.bytes), (4, 350));
        assert_eq!(stats.by_version["0.1.0"], VersionStats { entries: 3, bytes: 300 });
    }
}
