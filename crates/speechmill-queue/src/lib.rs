//! The job model of speechmill and its stores.
//!
//! One job model ([`JobState`]) serves the batch job (`speechmill process`, whose run state is a
//! SQLite file in the output folder, [`BatchStore`]) and the service, whose durable queue
//! ([`JobQueue`]) runs on SQLite ([`SqliteQueue`]) or PostgreSQL ([`PostgresQueue`]). Invariant:
//! this is the only crate that contains SQL; every schema change is a numbered migration under
//! `migrations/`.

pub mod batch;
pub mod cache;
pub mod keys;
mod migrate;
pub mod queue;
mod sql_queue;
#[cfg(feature = "testing")]
pub mod testing;

use std::sync::Arc;

pub use batch::{BatchStore, JobRecord, JobSpec, JobState};
pub use cache::{CacheHit, CacheRecord, CacheStats, ResultCacheStore, SqliteResultCache};
pub use keys::{ApiKeyRecord, KeyStore};
pub use queue::{
    AuditEntry, Backoff, CallbackTask, Clock, Enqueued, FailureKind, FastRandom, JobError, JobQueue, Lease, ListQuery,
    ManualClock, Millis, NewJob, Page, QueueConfig, QueueJob, Random, SystemClock,
};
pub use sql_queue::{PostgresQueue, SqliteQueue};

#[cfg(test)]
mod tests {
    use super::transient_code;

    #[test]
    fn busy_databases_and_lost_connections_are_transient_and_constraint_violations_are_not() {
        for code in ["5", "6", "517"] {
            assert!(transient_code(code, true), "sqlite {code}");
        }
        for code in ["08006", "57P01", "40001", "40P01", "53300"] {
            assert!(transient_code(code, false), "postgres {code}");
        }
        for code in ["19", "2067"] {
            assert!(!transient_code(code, true), "sqlite {code}");
        }
        for code in ["23505", "42P01", "22P02"] {
            assert!(!transient_code(code, false), "postgres {code}");
        }
    }
}

/// An opened queue database: the job queue and the key store, which share one backend.
#[derive(Clone)]
pub struct Stores {
    /// The job queue.
    pub queue: Arc<dyn JobQueue>,
    /// The API keys.
    pub keys: Arc<dyn KeyStore>,
    /// The result cache (table `result_cache`).
    pub cache: Arc<dyn ResultCacheStore>,
}

/// Opens the queue database named by `url`: `postgres://...` (or `postgresql://`) for
/// PostgreSQL, `sqlite:...` for SQLite. Migrations are applied.
pub async fn open_stores(
    url: &str,
    config: QueueConfig,
    clock: Arc<dyn Clock>,
    random: Arc<dyn Random>,
) -> Result<Stores, QueueError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let backend = Arc::new(PostgresQueue::connect(url, config, clock, random).await?);
        return Ok(Stores { queue: backend.clone(), keys: backend.clone(), cache: backend });
    }
    if url.starts_with("sqlite:") {
        let backend = Arc::new(SqliteQueue::connect(url, config, clock, random).await?);
        return Ok(Stores { queue: backend.clone(), keys: backend.clone(), cache: backend });
    }
    Err(QueueError::BadUrl(url.split('@').next_back().unwrap_or_default().to_string()))
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The database refused or failed the operation.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// A stored JSON document could not be read or written.
    #[error("stored json: {0}")]
    Json(#[from] serde_json::Error),
    /// The store was written by a newer speechmill.
    #[error("the run state has schema version {found}, newer than this speechmill knows ({known})")]
    SchemaTooNew {
        /// Version found in the database.
        found: i64,
        /// Newest version this build knows.
        known: i64,
    },
    /// The same output folder holds a run made with a different configuration or inputs.
    #[error("{0}")]
    Conflict(String),
    /// No job has this id.
    #[error("no job {id}")]
    NotFound {
        /// The id asked for.
        id: String,
    },
    /// The job is not in a state that allows the operation.
    #[error("job {id} is {}", state.as_str())]
    InvalidState {
        /// The job.
        id: String,
        /// Its state.
        state: JobState,
    },
    /// The lease was taken back (expired and reaped, or the job was handed to another worker):
    /// this worker's result is not recorded.
    #[error("the lease on job {id} was lost")]
    LeaseLost {
        /// The job.
        id: String,
    },
    /// A list cursor that this queue did not hand out.
    #[error("invalid cursor {0:?}")]
    BadCursor(String),
    /// A group of operations committed together failed; every operation in it gets this.
    #[error("group commit failed: {message}")]
    GroupCommit {
        /// Whether the failure was transient (busy or unreachable database).
        transient: bool,
        /// The underlying error.
        message: String,
    },
    /// A database URL of no known kind (the part after any credentials is shown).
    #[error("unsupported database url (expected postgres://... or sqlite:...): {0}")]
    BadUrl(String),
}

/// Database error codes worth retrying: SQLite busy or locked (primary code 5 or 6, in the low
/// byte of an extended code), PostgreSQL connection exceptions (class 08), operator intervention
/// such as a server shutdown (57P0x), serialization failures and deadlocks (40001, 40P01) and
/// insufficient resources (class 53).
fn transient_code(code: &str, sqlite: bool) -> bool {
    if sqlite {
        return code.parse::<i64>().is_ok_and(|number| matches!(number & 0xff, 5 | 6));
    }
    code.starts_with("08") || code.starts_with("57P0") || code == "40001" || code == "40P01" || code.starts_with("53")
}

impl QueueError {
    /// Whether retrying the operation may succeed (a busy or unreachable database).
    pub fn is_transient(&self) -> bool {
        match self {
            QueueError::Database(err) => {
                matches!(
                    err,
                    sqlx::Error::Io(_)
                        | sqlx::Error::PoolTimedOut
                        | sqlx::Error::PoolClosed
                        | sqlx::Error::Protocol(_)
                        | sqlx::Error::WorkerCrashed
                        | sqlx::Error::Tls(_)
                ) || err.as_database_error().is_some_and(|db| {
                    let sqlite = db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some();
                    db.code().is_some_and(|code| transient_code(&code, sqlite))
                })
            }
            QueueError::GroupCommit { transient, .. } => *transient,
            _ => false,
        }
    }
}
