//! The service's durable job queue: the job as the queue sees it, the interface both backends
//! (SQLite and PostgreSQL) implement, and the retry policy with its injectable clock and
//! randomness.
//!
//! A job moves `queued -> running -> succeeded | rejected | retrying | dead`; `retrying` goes
//! back to `running` when its backoff has passed; `queued` and `retrying` can be `cancelled`.
//! Every transition out of `running` names the lease it holds (a random token written at claim
//! time), so a worker whose lease expired and was taken over can no longer complete the job:
//! it gets [`QueueError::LeaseLost`] and the job is completed exactly once.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{JobState, QueueError};

/// Milliseconds since the Unix epoch, as the queue stores every time.
pub type Millis = i64;

/// The source of "now" for leases, backoff and timestamps; injectable so tests can move time.
pub trait Clock: Send + Sync + 'static {
    /// The current time.
    fn now_ms(&self) -> Millis;
}

/// The wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> Millis {
        let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        since_epoch.as_millis() as Millis
    }
}

/// A clock that moves only when told to (tests and benchmarks).
#[derive(Debug, Clone, Default)]
pub struct ManualClock {
    /// The current time; written by [`ManualClock::advance`] and [`ManualClock::set`].
    now: Arc<AtomicI64>,
}

impl ManualClock {
    /// A clock standing at `start`.
    pub fn new(start: Millis) -> Self {
        ManualClock { now: Arc::new(AtomicI64::new(start)) }
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        self.now.fetch_add(by.as_millis() as Millis, Ordering::SeqCst);
    }

    /// Sets the clock.
    pub fn set(&self, to: Millis) {
        self.now.store(to, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> Millis {
        self.now.load(Ordering::SeqCst)
    }
}

/// The source of randomness for backoff jitter; injectable so tests get known delays.
pub trait Random: Send + Sync + 'static {
    /// A uniformly distributed integer in `0..=max`.
    fn up_to(&self, max: u64) -> u64;
}

/// Randomness from a fast non-cryptographic generator (jitter needs spread, not secrecy).
#[derive(Debug, Default)]
pub struct FastRandom;

impl Random for FastRandom {
    fn up_to(&self, max: u64) -> u64 {
        fastrand::u64(0..=max)
    }
}

/// How long the queue waits before a failed job's next attempt.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Backoff {
    /// The ceiling of the first retry's delay.
    pub base: Duration,
    /// No delay is longer than this.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { base: Duration::from_secs(1), max: Duration::from_secs(300) }
    }
}

impl Backoff {
    /// The delay before the attempt after `attempts_made` failed ones: exponential backoff with
    /// full jitter, uniform in `[0, min(max, base * 2^(attempts_made - 1))]`
    /// (<https://aws.amazon.com/blogs/architecture/exponential-backoff-and-jitter/>).
    pub fn delay(&self, attempts_made: u32, random: &dyn Random) -> Duration {
        let exponent = attempts_made.saturating_sub(1).min(40);
        let base_ms = self.base.as_millis() as u64;
        let ceiling = base_ms.saturating_mul(1u64 << exponent).min(self.max.as_millis() as u64);
        Duration::from_millis(random.up_to(ceiling))
    }
}

/// Settings of a queue; the same for both backends.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueConfig {
    /// How long a claim holds a job without a heartbeat.
    pub lease: Duration,
    /// Attempts a job gets unless it names its own.
    pub max_attempts: u32,
    /// Delay between attempts.
    pub backoff: Backoff,
    /// Commit concurrent enqueues, claims and completions together, one transaction for many
    /// (one writer task per queue), or each in its own transaction. `None` takes the backend's
    /// default: on for SQLite, where it multiplies durable throughput; off for PostgreSQL, which
    /// groups concurrent commits itself and measured faster without it
    /// (`docs/service-benchmark.md`).
    pub group_commit: Option<bool>,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig { lease: Duration::from_secs(30), max_attempts: 5, backoff: Backoff::default(), group_commit: None }
    }
}

/// A job to enqueue.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NewJob {
    /// What to do, as JSON; the queue does not look inside.
    pub payload: Value,
    /// The batch the job belongs to, if any.
    pub batch_id: Option<String>,
    /// A repeated enqueue with the same key returns the first job instead of a new one.
    pub idempotency_key: Option<String>,
    /// Attempts before the job is dead; `None` takes [`QueueConfig::max_attempts`].
    pub max_attempts: Option<u32>,
    /// Where to POST the job once it is final.
    pub callback_url: Option<String>,
}

/// What kind of failure ended an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// Worth retrying: storage or database trouble, a timeout.
    Transient,
    /// The worker holding the lease stopped heartbeating (crashed or cut off).
    LeaseExpired,
    /// Processing the job crashed (a panic, an internal error of the pipeline).
    Crash,
    /// Processing the job took longer than allowed.
    Timeout,
}

/// Why an attempt failed, kept on the job for inspection (dead letters show it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobError {
    /// What kind of failure.
    pub kind: FailureKind,
    /// What went wrong, for a person.
    pub message: String,
    /// Structured context (stage, file, attempt), for a person or a tool.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub context: Value,
}

impl JobError {
    /// A transient failure with a message and no context.
    pub fn transient(message: impl Into<String>) -> Self {
        JobError { kind: FailureKind::Transient, message: message.into(), context: Value::Null }
    }
}

/// A job as the queue holds it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QueueJob {
    /// The job's id (a UUID, time-ordered).
    pub id: String,
    /// Insertion order; the basis of list cursors.
    pub seq: i64,
    /// The batch it belongs to.
    pub batch_id: Option<String>,
    /// The idempotency key it was submitted with.
    pub idempotency_key: Option<String>,
    /// What to do.
    pub payload: Value,
    /// Where it is in its life.
    pub state: JobState,
    /// Attempts started so far.
    pub attempts: u32,
    /// Attempts allowed before it is dead.
    pub max_attempts: u32,
    /// Not claimed before this time (backoff).
    pub run_at: Millis,
    /// The worker holding it, while running.
    pub lease_owner: Option<String>,
    /// When the current lease runs out, while running.
    pub lease_expires_at: Option<Millis>,
    /// The last failed attempt's error.
    pub last_error: Option<JobError>,
    /// The result (manifest row or rejection), once succeeded or rejected.
    pub result: Option<Value>,
    /// When it was enqueued.
    pub created_at: Millis,
    /// When it last changed.
    pub updated_at: Millis,
    /// When it reached a final state.
    pub finished_at: Option<Millis>,
    /// Where its final state is POSTed, if anywhere.
    pub callback_url: Option<String>,
    /// `pending`, `delivered` or `failed`, when there is a callback.
    pub callback_state: Option<String>,
    /// Delivery attempts so far.
    pub callback_attempts: u32,
    /// The last failed delivery.
    pub callback_error: Option<String>,
}

/// A final job whose callback is due, claimed for delivery for a while (other senders skip it
/// until the claim runs out).
#[derive(Debug, Clone, PartialEq)]
pub struct CallbackTask {
    /// The job, final.
    pub job: QueueJob,
    /// Where to POST it.
    pub url: String,
}

/// The answer to an enqueue.
#[derive(Debug, Clone, PartialEq)]
pub struct Enqueued {
    /// The job (the earlier one if the idempotency key was seen before).
    pub job: QueueJob,
    /// Whether this call created it.
    pub created: bool,
}

/// A claimed job: only the holder of the lease token can heartbeat, complete or fail it.
#[derive(Debug, Clone, PartialEq)]
pub struct Lease {
    /// The job as claimed (state `running`, attempts already counted).
    pub job: QueueJob,
    /// The claim's random token.
    pub token: String,
    /// Who claimed it.
    pub owner: String,
    /// When the lease runs out unless renewed.
    pub expires_at: Millis,
}

/// Which jobs to list, and from where.
#[derive(Debug, Clone, PartialEq)]
pub struct ListQuery {
    /// Only jobs in this state.
    pub state: Option<JobState>,
    /// Only jobs of this batch.
    pub batch_id: Option<String>,
    /// Continue after this cursor (from [`Page::next_cursor`]).
    pub cursor: Option<String>,
    /// At most this many jobs (1..=1000).
    pub limit: u32,
}

impl Default for ListQuery {
    fn default() -> Self {
        ListQuery { state: None, batch_id: None, cursor: None, limit: 100 }
    }
}

impl ListQuery {
    /// The sequence number to continue after; an unreadable cursor is a client error.
    pub(crate) fn after_seq(&self) -> Result<i64, QueueError> {
        match &self.cursor {
            None => Ok(0),
            Some(cursor) => cursor.parse::<i64>().map_err(|_| QueueError::BadCursor(cursor.clone())),
        }
    }

    /// The limit, clamped to what a page may hold.
    pub(crate) fn clamped_limit(&self) -> i64 {
        i64::from(self.limit.clamp(1, 1000))
    }
}

/// One page of a list, oldest first.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    /// The jobs.
    pub jobs: Vec<QueueJob>,
    /// Where the next page starts; `None` when this one is the last.
    pub next_cursor: Option<String>,
}

/// One recorded operator action on dead letters.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditEntry {
    /// Order of recording.
    pub seq: i64,
    /// When.
    pub at: Millis,
    /// Who (an API key id, or `cli`).
    pub actor: String,
    /// What: `replay` or `purge`.
    pub action: String,
    /// Which job.
    pub job_id: String,
    /// Anything else worth keeping (the job's last error, the filter).
    pub detail: Value,
}

/// The queue's interface; [`crate::SqliteQueue`] and [`crate::PostgresQueue`] implement it and
/// pass one conformance suite.
#[async_trait::async_trait]
pub trait JobQueue: Send + Sync + 'static {
    /// Adds a job, or returns the job enqueued earlier with the same idempotency key.
    async fn enqueue(&self, job: NewJob) -> Result<Enqueued, QueueError>;

    /// Adds many jobs in one transaction (all or none), each as [`JobQueue::enqueue`] would.
    async fn enqueue_many(&self, jobs: Vec<NewJob>) -> Result<Vec<Enqueued>, QueueError>;

    /// The job with this id.
    async fn get(&self, id: &str) -> Result<Option<QueueJob>, QueueError>;

    /// Jobs in insertion order, filtered, one page at a time.
    async fn list(&self, query: &ListQuery) -> Result<Page, QueueError>;

    /// Takes the oldest runnable job (queued, or retrying whose backoff has passed) with a lease
    /// for `owner`; `None` when nothing is runnable. Counts an attempt.
    async fn claim(&self, owner: &str) -> Result<Option<Lease>, QueueError>;

    /// Extends a lease by the configured lease time; returns the new expiry.
    async fn heartbeat(&self, lease: &Lease) -> Result<Millis, QueueError>;

    /// Records success with its result (final).
    async fn complete(&self, lease: &Lease, result: Value) -> Result<QueueJob, QueueError>;

    /// Records a rejection of bad input with its result (final, never retried).
    async fn reject(&self, lease: &Lease, result: Value) -> Result<QueueJob, QueueError>;

    /// Records a failed attempt: `retrying` after a backoff, or `dead` once the attempts are used.
    async fn fail(&self, lease: &Lease, error: JobError) -> Result<QueueJob, QueueError>;

    /// Hands a job back without counting the attempt (graceful shutdown).
    async fn release(&self, lease: &Lease) -> Result<QueueJob, QueueError>;

    /// Returns running jobs whose lease expired to `retrying` (or `dead` when their attempts are
    /// used up); returns how many it moved.
    async fn reap_expired(&self) -> Result<u64, QueueError>;

    /// Returns every running job leased to `owner` (a node restarting under the same name) to
    /// the queue at once, as if its lease had expired.
    async fn recover_owner(&self, owner: &str) -> Result<u64, QueueError>;

    /// Cancels a job that has not started (queued or retrying).
    async fn cancel(&self, id: &str) -> Result<QueueJob, QueueError>;

    /// Puts a dead job back in the queue with fresh attempts, recording `actor` in the audit log.
    async fn replay_dead(&self, id: &str, actor: &str) -> Result<QueueJob, QueueError>;

    /// Replays every dead job (of one batch, if given); returns how many.
    async fn replay_dead_where(&self, batch_id: Option<&str>, actor: &str) -> Result<u64, QueueError>;

    /// Deletes a dead job, recording `actor` in the audit log.
    async fn purge_dead(&self, id: &str, actor: &str) -> Result<(), QueueError>;

    /// Claims up to `limit` due callbacks of final jobs for `hold` (at-least-once delivery: a
    /// sender that dies lets the claim run out and another sends again).
    async fn claim_callbacks(&self, limit: u32, hold: Duration) -> Result<Vec<CallbackTask>, QueueError>;

    /// Records a delivered callback.
    async fn callback_delivered(&self, task: &CallbackTask) -> Result<(), QueueError>;

    /// Records a failed delivery: retried after a backoff, or given up (`failed`) once
    /// `max_attempts` deliveries failed.
    async fn callback_failed(&self, task: &CallbackTask, error: &str, max_attempts: u32) -> Result<(), QueueError>;

    /// The most recent audit entries, newest first.
    async fn audit_log(&self, limit: u32) -> Result<Vec<AuditEntry>, QueueError>;

    /// How many jobs are in each state (states with none are absent).
    async fn counts(&self) -> Result<BTreeMap<JobState, u64>, QueueError>;

    /// When the oldest job still waiting (queued or retrying) was submitted; `None` when none
    /// waits.
    async fn oldest_waiting(&self) -> Result<Option<Millis>, QueueError>;

    /// Checks that the database answers.
    async fn ping(&self) -> Result<(), QueueError>;
}

/// Reads `state` text as stored.
pub(crate) fn parse_state(text: &str) -> Result<JobState, QueueError> {
    text.parse().map_err(QueueError::Conflict)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Always the largest value allowed: the ceiling of the jitter.
    struct Ceiling;
    impl Random for Ceiling {
        fn up_to(&self, max: u64) -> u64 {
            max
        }
    }

    #[test]
    fn backoff_ceiling_doubles_per_attempt_and_stops_at_the_maximum() {
        let backoff = Backoff { base: Duration::from_millis(100), max: Duration::from_millis(1000) };
        let delays: Vec<u64> = (1..=6).map(|n| backoff.delay(n, &Ceiling).as_millis() as u64).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
    }

    #[test]
    fn backoff_is_full_jitter_between_zero_and_the_ceiling() {
        let backoff = Backoff { base: Duration::from_millis(100), max: Duration::from_secs(60) };
        let delays: Vec<u64> = (0..2000).map(|_| backoff.delay(4, &FastRandom).as_millis() as u64).collect();
        assert!(delays.iter().all(|&delay| delay <= 800));
        // Uniform on [0, 800]: both ends of the range are reached in 2000 draws.
        assert!(delays.iter().any(|&delay| delay < 100));
        assert!(delays.iter().any(|&delay| delay > 700));
    }

    #[test]
    fn a_huge_attempt_count_does_not_overflow() {
        let backoff = Backoff::default();
        assert_eq!(backoff.delay(u32::MAX, &Ceiling), backoff.max);
    }

    #[test]
    fn a_cursor_that_is_not_a_number_is_refused() {
        let query = ListQuery { cursor: Some("x".into()), ..ListQuery::default() };
        assert!(matches!(query.after_seq(), Err(QueueError::BadCursor(_))));
    }
}
