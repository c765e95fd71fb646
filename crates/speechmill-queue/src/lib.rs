//! The job model of speechmill and its stores.
//!
//! One job model serves the batch job (`speechmill process`, whose run state is a SQLite file in
//! the output folder) and the service. Invariant: this is the only crate that contains SQL; every
//! schema change is a numbered migration under `migrations/`.

pub mod batch;
mod migrate;

pub use batch::{BatchStore, JobRecord, JobSpec, JobState};

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
}

impl QueueError {
    /// Whether retrying the operation may succeed (a busy or unreachable database).
    pub fn is_transient(&self) -> bool {
        match self {
            QueueError::Database(err) => {
                matches!(err, sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed)
                    || err.as_database_error().and_then(|db| db.code()).is_some_and(|code| code == "5" || code == "6")
            }
            _ => false,
        }
    }
}
