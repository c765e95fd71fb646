//! The batch job's store: a SQLite file that holds every clip of a `speechmill process` run as a
//! job, so that a killed run resumes where it stopped and finishes with the same result.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use serde_json::Value;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

use crate::QueueError;
use crate::migrate::migrate_sqlite;

/// Where a job is in its life. Every job ends in exactly one final state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Waiting to be processed.
    Queued,
    /// Taken by a worker.
    Running,
    /// Failed transiently; waiting for another attempt.
    Retrying,
    /// Processed and accepted into the dataset (final).
    Succeeded,
    /// Processed and rejected with a reason (final).
    Rejected,
    /// Failed too often; kept for inspection and replay (final).
    Dead,
    /// Cancelled before it started (final).
    Cancelled,
}

impl JobState {
    /// Every state, in lifecycle order.
    pub const ALL: [JobState; 7] = [
        JobState::Queued,
        JobState::Running,
        JobState::Retrying,
        JobState::Succeeded,
        JobState::Rejected,
        JobState::Dead,
        JobState::Cancelled,
    ];

    /// The state's name as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Retrying => "retrying",
            JobState::Succeeded => "succeeded",
            JobState::Rejected => "rejected",
            JobState::Dead => "dead",
            JobState::Cancelled => "cancelled",
        }
    }

    /// Whether no further transition can happen.
    pub fn is_final(self) -> bool {
        matches!(self, JobState::Succeeded | JobState::Rejected | JobState::Dead | JobState::Cancelled)
    }
}

impl FromStr for JobState {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(match text {
            "queued" => JobState::Queued,
            "running" => JobState::Running,
            "retrying" => JobState::Retrying,
            "succeeded" => JobState::Succeeded,
            "rejected" => JobState::Rejected,
            "dead" => JobState::Dead,
            "cancelled" => JobState::Cancelled,
            other => return Err(format!("unknown job state {other:?}")),
        })
    }
}

/// A job to register: what to process and where it stands in input order.
#[derive(Debug, Clone, PartialEq)]
pub struct JobSpec {
    /// Stable clip id (also the output file stem); unique within the run.
    pub id: String,
    /// Position in input order; earlier wins among exact duplicates.
    pub seq: i64,
    /// The input as the user named it.
    pub source: String,
    /// What to process, as JSON (path, raw format, carried-through columns).
    pub spec: Value,
}

/// A job as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRecord {
    /// Stable clip id.
    pub id: String,
    /// Position in input order.
    pub seq: i64,
    /// The input as the user named it.
    pub source: String,
    /// What to process.
    pub spec: Value,
    /// Current state.
    pub state: JobState,
    /// How many times processing started.
    pub attempts: i64,
    /// The manifest row or the rejection, once final.
    pub result: Option<Value>,
    /// The rejection reason code, once rejected.
    pub reason: Option<String>,
    /// Hash of the decoded audio, when decoding got that far.
    pub content_hash: Option<String>,
}

/// The final outcome of one job, to record.
#[derive(Debug, Clone, PartialEq)]
pub struct Finished {
    /// The job's id.
    pub id: String,
    /// A final state.
    pub state: JobState,
    /// The manifest row or the rejection.
    pub result: Value,
    /// Rejection reason code.
    pub reason: Option<String>,
    /// Hash of the decoded audio.
    pub content_hash: Option<String>,
}

/// Which jobs a query returns.
enum Filter {
    All,
    Queued,
    Page { after_seq: i64, limit: u32 },
    QueuedPage { after_seq: i64, limit: u32 },
}

/// The SQLite store of one batch run.
#[derive(Clone)]
pub struct BatchStore {
    /// Connection pool; SQLite serialises writers, the pool only saves reconnecting.
    pool: SqlitePool,
}

impl BatchStore {
    /// Opens (creating if missing) the run state at `path` and applies pending migrations.
    pub async fn open(path: &Path) -> Result<Self, QueueError> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // NORMAL with WAL survives a process kill (not a power cut mid-commit): enough for a
            // batch run whose outputs are rewritten on resume anyway.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(30));
        let pool = SqlitePoolOptions::new().max_connections(4).connect_with(options).await?;
        migrate_sqlite(&pool).await?;
        Ok(BatchStore { pool })
    }

    /// Reads a run fact (configuration hash, versions).
    pub async fn meta(&self, key: &str) -> Result<Option<String>, QueueError> {
        Ok(sqlx::query_scalar("SELECT value FROM run_meta WHERE key = ?").bind(key).fetch_optional(&self.pool).await?)
    }

    /// Writes a run fact, replacing any earlier value.
    pub async fn set_meta(&self, key: &str, value: &str) -> Result<(), QueueError> {
        sqlx::query(
            "INSERT INTO run_meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(key)
        .bind(value)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Registers the run's jobs. A fresh store takes them all; a store that already holds jobs
    /// must hold exactly these (same ids, order and sources), or this is another run's folder.
    ///
    /// Returns how many jobs were newly inserted.
    pub async fn register(&self, jobs: &[JobSpec]) -> Result<usize, QueueError> {
        let existing: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM jobs").fetch_one(&self.pool).await?;
        if existing > 0 {
            let stored = sqlx::query("SELECT id, seq, source FROM jobs ORDER BY seq").fetch_all(&self.pool).await?;
            let same = stored.len() == jobs.len()
                && stored.iter().zip(jobs).all(|(row, job)| {
                    row.get::<String, _>("id") == job.id
                        && row.get::<i64, _>("seq") == job.seq
                        && row.get::<String, _>("source") == job.source
                });
            if !same {
                return Err(QueueError::Conflict(format!(
                    "the output folder holds an earlier run over different inputs ({} clips there, {} now); \
                     use a new --out folder, or remove the old one",
                    stored.len(),
                    jobs.len()
                )));
            }
            return Ok(0);
        }
        let mut tx = self.pool.begin().await?;
        for job in jobs {
            sqlx::query("INSERT INTO jobs (id, seq, source, spec, state) VALUES (?, ?, ?, ?, 'queued')")
                .bind(&job.id)
                .bind(job.seq)
                .bind(&job.source)
                .bind(serde_json::to_string(&job.spec)?)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(jobs.len())
    }

    /// Jobs not yet in a final state, in input order. Jobs left `running` by a killed run are
    /// returned to the queue first.
    pub async fn unfinished(&self) -> Result<Vec<JobRecord>, QueueError> {
        sqlx::query("UPDATE jobs SET state = 'queued' WHERE state IN ('running', 'retrying')")
            .execute(&self.pool)
            .await?;
        self.select(Filter::Queued).await
    }

    /// Returns jobs left `running` by a killed run to the queue, and counts the unfinished jobs;
    /// [`BatchStore::queued_page`] then hands them out page by page.
    pub async fn reset_unfinished(&self) -> Result<u64, QueueError> {
        sqlx::query("UPDATE jobs SET state = 'queued' WHERE state IN ('running', 'retrying')")
            .execute(&self.pool)
            .await?;
        let count: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE state = 'queued'").fetch_one(&self.pool).await?;
        Ok(count as u64)
    }

    /// Up to `limit` queued jobs after position `after_seq` (from the start when `None`), in
    /// input order.
    pub async fn queued_page(&self, after_seq: Option<i64>, limit: u32) -> Result<Vec<JobRecord>, QueueError> {
        self.select(Filter::QueuedPage { after_seq: after_seq.unwrap_or(i64::MIN), limit }).await
    }

    /// Every job in input order.
    pub async fn all(&self) -> Result<Vec<JobRecord>, QueueError> {
        self.select(Filter::All).await
    }

    /// Up to `limit` jobs after position `after_seq` (from the start when `None`), in input
    /// order: a run is read page by page so that memory does not grow with its size.
    pub async fn page(&self, after_seq: Option<i64>, limit: u32) -> Result<Vec<JobRecord>, QueueError> {
        self.select(Filter::Page { after_seq: after_seq.unwrap_or(i64::MIN), limit }).await
    }

    /// Records final outcomes, all in one transaction.
    pub async fn finish(&self, outcomes: &[Finished]) -> Result<(), QueueError> {
        let mut tx = self.pool.begin().await?;
        for outcome in outcomes {
            debug_assert!(outcome.state.is_final());
            sqlx::query(
                "UPDATE jobs SET state = ?, result = ?, reason = ?, content_hash = ?, attempts = attempts + 1, \
                 updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE id = ?",
            )
            .bind(outcome.state.as_str())
            .bind(serde_json::to_string(&outcome.result)?)
            .bind(&outcome.reason)
            .bind(&outcome.content_hash)
            .bind(&outcome.id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Closes the pool, checkpointing the write-ahead log.
    pub async fn close(self) {
        self.pool.close().await;
    }

    async fn select(&self, filter: Filter) -> Result<Vec<JobRecord>, QueueError> {
        let sql = match filter {
            Filter::All => {
                "SELECT id, seq, source, spec, state, attempts, result, reason, content_hash FROM jobs ORDER BY seq"
            }
            Filter::Queued => {
                "SELECT id, seq, source, spec, state, attempts, result, reason, content_hash FROM jobs WHERE state = 'queued' ORDER BY seq"
            }
            Filter::QueuedPage { .. } => {
                "SELECT id, seq, source, spec, state, attempts, result, reason, content_hash FROM jobs WHERE state = 'queued' AND seq > ? ORDER BY seq LIMIT ?"
            }
            Filter::Page { .. } => {
                "SELECT id, seq, source, spec, state, attempts, result, reason, content_hash FROM jobs WHERE seq > ? ORDER BY seq LIMIT ?"
            }
        };
        let query = match filter {
            Filter::Page { after_seq, limit } | Filter::QueuedPage { after_seq, limit } => {
                sqlx::query(sql).bind(after_seq).bind(limit)
            }
            _ => sqlx::query(sql),
        };
        let rows = query.fetch_all(&self.pool).await?;
        rows.into_iter()
            .map(|row| {
                let state: String = row.get("state");
                let result: Option<String> = row.get("result");
                Ok(JobRecord {
                    id: row.get("id"),
                    seq: row.get("seq"),
                    source: row.get("source"),
                    spec: serde_json::from_str(&row.get::<String, _>("spec"))?,
                    state: state.parse().map_err(QueueError::Conflict)?,
                    attempts: row.get("attempts"),
                    result: result.map(|text| serde_json::from_str(&text)).transpose()?,
                    reason: row.get("reason"),
                    content_hash: row.get("content_hash"),
                })
            })
            .collect()
    }
}
