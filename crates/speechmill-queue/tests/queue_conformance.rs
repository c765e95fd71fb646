//! One conformance suite for the job queue, written once and run unchanged against SQLite and
//! against the real PostgreSQL on 127.0.0.1:5432 (in a database each test creates and drops).
//!
//! Time is a [`ManualClock`] and jitter always takes its ceiling, so leases and backoff are
//! tested to the millisecond without sleeping.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use speechmill_queue::testing::TempPostgres;
use speechmill_queue::{
    Backoff, FailureKind, JobError, JobQueue, JobState, KeyStore, ListQuery, ManualClock, NewJob, PostgresQueue,
    QueueConfig, QueueError, Random, SqliteQueue,
};
use speechmill_queue::{CacheHit, CacheRecord, CacheStats, ResultCacheStore, SqliteResultCache};

const START: i64 = 1_800_000_000_000;

/// Jitter that always takes the ceiling, so a delay is known exactly.
struct Ceiling;
impl Random for Ceiling {
    fn up_to(&self, max: u64) -> u64 {
        max
    }
}

fn config_with(group_commit: bool) -> QueueConfig {
    QueueConfig {
        group_commit: Some(group_commit),
        lease: Duration::from_secs(30),
        max_attempts: 3,
        backoff: Backoff { base: Duration::from_secs(1), max: Duration::from_secs(60) },
    }
}

/// A queue under test, its clock, and whatever keeps its database alive.
struct Harness {
    queue: Arc<dyn JobQueue>,
    keys: Arc<dyn KeyStore>,
    clock: ManualClock,
    _database: Box<dyn Send>,
}

fn job(n: usize) -> NewJob {
    NewJob { payload: json!({ "n": n }), ..NewJob::default() }
}

mod backends {
    use super::*;

    pub async fn sqlite() -> Harness {
        sqlite_with(true).await
    }

    pub async fn sqlite_per_call() -> Harness {
        sqlite_with(false).await
    }

    async fn sqlite_with(group_commit: bool) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(START);
        let queue = Arc::new(
            SqliteQueue::open(
                &dir.path().join("queue.sqlite"),
                config_with(group_commit),
                Arc::new(clock.clone()),
                Arc::new(Ceiling),
            )
            .await
            .unwrap(),
        );
        Harness { queue: queue.clone(), keys: queue, clock, _database: Box::new(dir) }
    }

    pub async fn postgres() -> Harness {
        postgres_with(true).await
    }

    pub async fn postgres_per_call() -> Harness {
        postgres_with(false).await
    }

    async fn postgres_with(group_commit: bool) -> Harness {
        let database = TempPostgres::create().await;
        let clock = ManualClock::new(START);
        let queue = Arc::new(
            PostgresQueue::connect(
                &database.url(),
                config_with(group_commit),
                Arc::new(clock.clone()),
                Arc::new(Ceiling),
            )
            .await
            .unwrap(),
        );
        Harness { queue: queue.clone(), keys: queue, clock, _database: Box::new(database) }
    }
}

/// The cases, each an async fn of a fresh harness.
mod cases {
    use super::*;

    pub async fn an_enqueued_job_is_queued_and_can_be_read_back(h: Harness) {
        let enqueued = h.queue.enqueue(NewJob { batch_id: Some("b1".into()), ..job(1) }).await.unwrap();
        assert!(enqueued.created);
        assert_eq!(enqueued.job.state, JobState::Queued);
        assert_eq!(enqueued.job.attempts, 0);
        assert_eq!(enqueued.job.max_attempts, 3);
        assert_eq!(enqueued.job.created_at, START);
        let read = h.queue.get(&enqueued.job.id).await.unwrap().unwrap();
        assert_eq!(read, enqueued.job);
        assert_eq!(read.payload, json!({ "n": 1 }));
        assert_eq!(read.batch_id.as_deref(), Some("b1"));
        assert!(h.queue.get("no-such-job").await.unwrap().is_none());
    }

    pub async fn a_repeated_idempotency_key_returns_the_first_job(h: Harness) {
        let keyed = |n| NewJob { idempotency_key: Some("key-1".into()), ..job(n) };
        let first = h.queue.enqueue(keyed(1)).await.unwrap();
        let second = h.queue.enqueue(keyed(2)).await.unwrap();
        assert!(first.created);
        assert!(!second.created);
        assert_eq!(second.job.id, first.job.id);
        assert_eq!(second.job.payload, json!({ "n": 1 }));
        let other = h.queue.enqueue(NewJob { idempotency_key: Some("key-2".into()), ..job(3) }).await.unwrap();
        assert!(other.created);
        assert_ne!(other.job.id, first.job.id);
    }

    pub async fn enqueue_many_applies_idempotency_inside_one_transaction(h: Harness) {
        h.queue.enqueue(NewJob { idempotency_key: Some("seen".into()), ..job(0) }).await.unwrap();
        let answers = h
            .queue
            .enqueue_many(vec![job(1), NewJob { idempotency_key: Some("seen".into()), ..job(2) }, job(3)])
            .await
            .unwrap();
        assert_eq!(answers.iter().map(|a| a.created).collect::<Vec<_>>(), [true, false, true]);
        assert_eq!(answers[1].job.payload, json!({ "n": 0 }));
        let counts = h.queue.counts().await.unwrap();
        assert_eq!(counts.get(&JobState::Queued), Some(&3));
    }

    pub async fn oldest_waiting_is_the_first_submitted_of_the_queued_and_retrying_jobs(h: Harness) {
        assert_eq!(h.queue.oldest_waiting().await.unwrap(), None);
        let first = h.queue.enqueue(job(1)).await.unwrap().job;
        h.clock.advance(Duration::from_secs(10));
        let second = h.queue.enqueue(job(2)).await.unwrap().job;
        assert_eq!(h.queue.oldest_waiting().await.unwrap(), Some(first.created_at));
        let lease = h.queue.claim("w1").await.unwrap().unwrap();
        assert_eq!(h.queue.oldest_waiting().await.unwrap(), Some(second.created_at));
        h.queue.fail(&lease, JobError::transient("flaky")).await.unwrap();
        assert_eq!(h.queue.oldest_waiting().await.unwrap(), Some(first.created_at), "a retrying job still waits");
    }

    pub async fn claims_take_the_oldest_job_with_a_lease_and_count_the_attempt(h: Harness) {
        assert!(h.queue.claim("w1").await.unwrap().is_none());
        let first = h.queue.enqueue(job(1)).await.unwrap().job;
        let second = h.queue.enqueue(job(2)).await.unwrap().job;
        let lease = h.queue.claim("w1").await.unwrap().unwrap();
        assert_eq!(lease.job.id, first.id);
        assert_eq!(lease.job.state, JobState::Running);
        assert_eq!(lease.job.attempts, 1);
        assert_eq!(lease.expires_at, START + 30_000);
        assert_eq!(lease.job.lease_owner.as_deref(), Some("w1"));
        let next = h.queue.claim("w2").await.unwrap().unwrap();
        assert_eq!(next.job.id, second.id);
        assert!(h.queue.claim("w3").await.unwrap().is_none());
    }

    pub async fn a_completed_job_is_final_and_completes_only_once(h: Harness) {
        let id = h.queue.enqueue(job(1)).await.unwrap().job.id;
        let lease = h.queue.claim("w1").await.unwrap().unwrap();
        let done = h.queue.complete(&lease, json!({ "id": "clip" })).await.unwrap();
        assert_eq!(done.state, JobState::Succeeded);
        assert_eq!(done.result, Some(json!({ "id": "clip" })));
        assert_eq!(done.finished_at, Some(START));
        assert!(done.lease_owner.is_none());
        assert!(matches!(h.queue.complete(&lease, json!({})).await, Err(QueueError::LeaseLost { .. })));
        assert!(matches!(h.queue.fail(&lease, JobError::transient("x")).await, Err(QueueError::LeaseLost { .. })));
        assert!(matches!(h.queue.heartbeat(&lease).await, Err(QueueError::LeaseLost { .. })));
        assert_eq!(h.queue.get(&id).await.unwrap().unwrap().state, JobState::Succeeded);
        assert!(h.queue.claim("w1").await.unwrap().is_none());
    }

    pub async fn a_rejected_job_is_final_and_never_retried(h: Harness) {
        h.queue.enqueue(job(1)).await.unwrap();
        let lease = h.queue.claim("w1").await.unwrap().unwrap();
        let rejected = h.queue.reject(&lease, json!({ "reason": "truncated" })).await.unwrap();
        assert_eq!(rejected.state, JobState::Rejected);
        assert_eq!(rejected.attempts, 1);
        h.clock.advance(Duration::from_secs(3600));
        assert!(h.queue.claim("w1").await.unwrap().is_none());
    }

    pub async fn a_transient_failure_retries_after_exponential_backoff(h: Harness) {
        let id = h.queue.enqueue(job(1)).await.unwrap().job.id;
        let lease = h.queue.claim("w1").await.unwrap().unwrap();
        let failed = h.queue.fail(&lease, JobError::transient("storage unavailable")).await.unwrap();
        assert_eq!(failed.state, JobState::Retrying);
        // First retry: ceiling base * 2^0 = 1 s.
        assert_eq!(failed.run_at, START + 1_000);
        assert_eq!(failed.last_error.as_ref().unwrap().message, "storage unavailable");
        assert_eq!(failed.last_error.as_ref().unwrap().kind, FailureKind::Transient);
        assert!(h.queue.claim("w1").await.unwrap().is_none(), "claimed during backoff");
        h.clock.advance(Duration::from_millis(1_000));
        let lease = h.queue.claim("w1").await.unwrap().unwrap();
        assert_eq!(lease.job.id, id);
        assert_eq!(lease.job.attempts, 2);
        // Second retry: ceiling base * 2^1 = 2 s.
        let failed = h.queue.fail(&lease, JobError::transient("again")).await.unwrap();
        assert_eq!(failed.run_at, START + 1_000 + 2_000);
    }

    pub async fn a_job_that_keeps_failing_ends_dead_after_its_attempts(h: Harness) {
        let id = h.queue.enqueue(job(1)).await.unwrap().job.id;
        for attempt in 1..=3u32 {
            h.clock.advance(Duration::from_secs(120));
            let lease = h.queue.claim("w1").await.unwrap().expect("runnable after backoff");
            assert_eq!(lease.job.attempts, attempt);
            let failed = h.queue.fail(&lease, JobError::transient(format!("failure {attempt}"))).await.unwrap();
            let expected = if attempt < 3 { JobState::Retrying } else { JobState::Dead };
            assert_eq!(failed.state, expected);
        }
        h.clock.advance(Duration::from_secs(3600));
        assert!(h.queue.claim("w1").await.unwrap().is_none());
        let dead = h.queue.get(&id).await.unwrap().unwrap();
        assert_eq!(dead.state, JobState::Dead);
        assert_eq!(dead.last_error.unwrap().message, "failure 3");
        assert!(dead.finished_at.is_some());
    }

    pub async fn heartbeats_keep_a_lease_alive(h: Harness) {
        h.queue.enqueue(job(1)).await.unwrap();
        let lease = h.queue.claim("w1").await.unwrap().unwrap();
        h.clock.advance(Duration::from_secs(20));
        assert_eq!(h.queue.heartbeat(&lease).await.unwrap(), START + 20_000 + 30_000);
        h.clock.advance(Duration::from_secs(20));
        assert_eq!(h.queue.reap_expired().await.unwrap(), 0);
        assert!(h.queue.complete(&lease, json!({})).await.is_ok());
    }

    pub async fn an_expired_lease_is_reaped_and_the_job_completes_exactly_once(h: Harness) {
        let id = h.queue.enqueue(job(1)).await.unwrap().job.id;
        let crashed = h.queue.claim("w1").await.unwrap().unwrap();
        h.clock.advance(Duration::from_millis(29_999));
        assert_eq!(h.queue.reap_expired().await.unwrap(), 0);
        h.clock.advance(Duration::from_millis(1));
        assert_eq!(h.queue.reap_expired().await.unwrap(), 1);
        let reaped = h.queue.get(&id).await.unwrap().unwrap();
        assert_eq!(reaped.state, JobState::Retrying);
        assert_eq!(reaped.last_error.unwrap().kind, FailureKind::LeaseExpired);
        let taken_over = h.queue.claim("w2").await.unwrap().unwrap();
        assert_eq!(taken_over.job.attempts, 2);
        // The first worker wakes up: its result must not be recorded.
        assert!(matches!(h.queue.complete(&crashed, json!({ "by": "w1" })).await, Err(QueueError::LeaseLost { .. })));
        assert!(matches!(h.queue.heartbeat(&crashed).await, Err(QueueError::LeaseLost { .. })));
        let done = h.queue.complete(&taken_over, json!({ "by": "w2" })).await.unwrap();
        assert_eq!(done.result, Some(json!({ "by": "w2" })));
    }

    pub async fn a_job_that_crashes_its_worker_every_time_ends_dead(h: Harness) {
        let id = h.queue.enqueue(job(1)).await.unwrap().job.id;
        for _ in 0..3 {
            assert!(h.queue.claim("w1").await.unwrap().is_some());
            h.clock.advance(Duration::from_secs(31));
            assert_eq!(h.queue.reap_expired().await.unwrap(), 1);
        }
        assert_eq!(h.queue.get(&id).await.unwrap().unwrap().state, JobState::Dead);
        assert!(h.queue.claim("w1").await.unwrap().is_none());
    }

    pub async fn a_restarted_node_recovers_its_own_leases_at_once(h: Harness) {
        h.queue.enqueue(job(1)).await.unwrap();
        h.queue.enqueue(job(2)).await.unwrap();
        let mine = h.queue.claim("node-a").await.unwrap().unwrap();
        let theirs = h.queue.claim("node-b").await.unwrap().unwrap();
        assert_eq!(h.queue.recover_owner("node-a").await.unwrap(), 1);
        let again = h.queue.claim("node-a").await.unwrap().unwrap();
        assert_eq!(again.job.id, mine.job.id);
        assert!(h.queue.heartbeat(&theirs).await.is_ok());
    }

    pub async fn a_released_job_goes_back_without_using_an_attempt(h: Harness) {
        h.queue.enqueue(job(1)).await.unwrap();
        let lease = h.queue.claim("w1").await.unwrap().unwrap();
        let released = h.queue.release(&lease).await.unwrap();
        assert_eq!(released.state, JobState::Queued);
        assert_eq!(released.attempts, 0);
        assert_eq!(h.queue.claim("w2").await.unwrap().unwrap().job.attempts, 1);
    }

    pub async fn only_jobs_that_have_not_started_can_be_cancelled(h: Harness) {
        let waiting = h.queue.enqueue(job(1)).await.unwrap().job.id;
        let running = h.queue.enqueue(job(2)).await.unwrap().job.id;
        let cancelled = h.queue.cancel(&waiting).await.unwrap();
        assert_eq!(cancelled.state, JobState::Cancelled);
        assert_eq!(h.queue.claim("w1").await.unwrap().unwrap().job.id, running);
        assert!(matches!(
            h.queue.cancel(&running).await,
            Err(QueueError::InvalidState { state: JobState::Running, .. })
        ));
        assert!(matches!(h.queue.cancel(&waiting).await, Err(QueueError::InvalidState { .. })));
        assert!(matches!(h.queue.cancel("nope").await, Err(QueueError::NotFound { .. })));
    }

    async fn kill(h: &Harness, n: usize, batch: &str) -> String {
        let id = h
            .queue
            .enqueue(NewJob { batch_id: Some(batch.into()), max_attempts: Some(1), ..job(n) })
            .await
            .unwrap()
            .job
            .id;
        let lease = h.queue.claim("w1").await.unwrap().unwrap();
        assert_eq!(lease.job.id, id);
        let dead = h.queue.fail(&lease, JobError::transient(format!("boom {n}"))).await.unwrap();
        assert_eq!(dead.state, JobState::Dead);
        id
    }

    pub async fn dead_letters_can_be_listed_replayed_and_purged_with_an_audit_trail(h: Harness) {
        let a = kill(&h, 1, "b1").await;
        let b = kill(&h, 2, "b1").await;
        let c = kill(&h, 3, "b2").await;
        let dead = h.queue.list(&ListQuery { state: Some(JobState::Dead), ..ListQuery::default() }).await.unwrap();
        assert_eq!(dead.jobs.iter().map(|j| j.id.clone()).collect::<Vec<_>>(), [a.clone(), b.clone(), c.clone()]);
        assert_eq!(dead.jobs[0].last_error.as_ref().unwrap().message, "boom 1");

        let replayed = h.queue.replay_dead(&a, "key-admin").await.unwrap();
        assert_eq!(replayed.state, JobState::Queued);
        assert_eq!(replayed.attempts, 0);
        assert!(matches!(h.queue.replay_dead(&a, "key-admin").await, Err(QueueError::InvalidState { .. })));
        assert_eq!(h.queue.claim("w1").await.unwrap().unwrap().job.id, a);

        assert_eq!(h.queue.replay_dead_where(Some("b2"), "cli").await.unwrap(), 1);
        assert_eq!(h.queue.get(&c).await.unwrap().unwrap().state, JobState::Queued);

        h.queue.purge_dead(&b, "key-admin").await.unwrap();
        assert!(h.queue.get(&b).await.unwrap().is_none());
        assert!(matches!(h.queue.purge_dead(&b, "key-admin").await, Err(QueueError::NotFound { .. })));
        assert!(matches!(h.queue.purge_dead(&c, "key-admin").await, Err(QueueError::InvalidState { .. })));

        let log = h.queue.audit_log(10).await.unwrap();
        let entries: Vec<(&str, &str, &str)> =
            log.iter().map(|e| (e.action.as_str(), e.actor.as_str(), e.job_id.as_str())).collect();
        assert_eq!(
            entries,
            [("purge", "key-admin", b.as_str()), ("replay", "cli", c.as_str()), ("replay", "key-admin", a.as_str())]
        );
        assert_eq!(log[0].detail["last_error"]["message"], "boom 2");
    }

    pub async fn lists_filter_by_state_and_batch_and_page_with_cursors(h: Harness) {
        let mut ids = Vec::new();
        for n in 0..25 {
            let batch = if n % 2 == 0 { "even" } else { "odd" };
            ids.push(h.queue.enqueue(NewJob { batch_id: Some(batch.into()), ..job(n) }).await.unwrap().job.id);
        }
        let mut seen = Vec::new();
        let mut query = ListQuery { limit: 10, ..ListQuery::default() };
        let mut pages = 0;
        loop {
            let page = h.queue.list(&query).await.unwrap();
            pages += 1;
            seen.extend(page.jobs.iter().map(|j| j.id.clone()));
            match page.next_cursor {
                Some(cursor) => query.cursor = Some(cursor),
                None => break,
            }
        }
        assert_eq!(pages, 3);
        assert_eq!(seen, ids);

        let odd = h.queue.list(&ListQuery { batch_id: Some("odd".into()), ..ListQuery::default() }).await.unwrap();
        assert_eq!(odd.jobs.len(), 12);
        assert!(odd.jobs.iter().all(|j| j.batch_id.as_deref() == Some("odd")));
        assert!(odd.next_cursor.is_none());

        h.queue.claim("w1").await.unwrap().unwrap();
        let running =
            h.queue.list(&ListQuery { state: Some(JobState::Running), ..ListQuery::default() }).await.unwrap();
        assert_eq!(running.jobs.len(), 1);
        assert_eq!(running.jobs[0].id, ids[0]);
        let even_queued =
            ListQuery { state: Some(JobState::Queued), batch_id: Some("even".into()), limit: 100, cursor: None };
        assert_eq!(h.queue.list(&even_queued).await.unwrap().jobs.len(), 12);
        let bad = ListQuery { cursor: Some("not-a-cursor".into()), ..ListQuery::default() };
        assert!(matches!(h.queue.list(&bad).await, Err(QueueError::BadCursor(_))));
    }

    pub async fn concurrent_workers_never_claim_one_job_twice(h: Harness) {
        let jobs: Vec<NewJob> = (0..60).map(job).collect();
        h.queue.enqueue_many(jobs).await.unwrap();
        let mut tasks = Vec::new();
        for worker in 0..6 {
            let queue = h.queue.clone();
            tasks.push(tokio::spawn(async move {
                let mut mine = Vec::new();
                while let Some(lease) = queue.claim(&format!("w{worker}")).await.unwrap() {
                    queue.complete(&lease, json!({ "by": worker })).await.unwrap();
                    mine.push(lease.job.id);
                }
                mine
            }));
        }
        let mut all = Vec::new();
        for task in tasks {
            all.extend(task.await.unwrap());
        }
        assert_eq!(all.len(), 60);
        assert_eq!(all.iter().collect::<BTreeSet<_>>().len(), 60);
        assert_eq!(h.queue.counts().await.unwrap(), BTreeMap::from([(JobState::Succeeded, 60)]));
    }

    pub async fn callbacks_are_due_once_final_claimed_once_and_retried_with_backoff(h: Harness) {
        let with_callback = |n| NewJob { callback_url: Some(format!("http://hooks.example/{n}")), ..job(n) };
        let first = h.queue.enqueue(with_callback(1)).await.unwrap().job;
        assert_eq!(first.callback_state.as_deref(), Some("pending"));
        h.queue.enqueue(with_callback(2)).await.unwrap();
        h.queue.enqueue(job(3)).await.unwrap();
        let hold = Duration::from_secs(30);
        assert!(h.queue.claim_callbacks(10, hold).await.unwrap().is_empty(), "not final yet");

        for _ in 0..3 {
            let lease = h.queue.claim("w1").await.unwrap().unwrap();
            h.queue.complete(&lease, json!({ "ok": true })).await.unwrap();
        }
        let due = h.queue.claim_callbacks(10, hold).await.unwrap();
        assert_eq!(due.len(), 2, "only jobs with a callback");
        assert_eq!(due[0].url, "http://hooks.example/1");
        assert_eq!(due[0].job.state, JobState::Succeeded);
        assert!(h.queue.claim_callbacks(10, hold).await.unwrap().is_empty(), "claimed for 30 s");

        h.queue.callback_delivered(&due[0]).await.unwrap();
        h.queue.callback_failed(&due[1], "503 from the receiver", 2).await.unwrap();
        let failed_once = h.queue.get(&due[1].job.id).await.unwrap().unwrap();
        assert_eq!(failed_once.callback_state.as_deref(), Some("pending"));
        assert_eq!(failed_once.callback_error.as_deref(), Some("503 from the receiver"));
        // First retry after the backoff ceiling (1 s), not before.
        h.clock.advance(Duration::from_millis(999));
        assert!(h.queue.claim_callbacks(10, hold).await.unwrap().is_empty());
        h.clock.advance(Duration::from_millis(1));
        let retry = h.queue.claim_callbacks(10, hold).await.unwrap();
        assert_eq!(retry.len(), 1);
        assert_eq!(retry[0].job.callback_attempts, 1);
        h.queue.callback_failed(&retry[0], "still down", 2).await.unwrap();
        let given_up = h.queue.get(&due[1].job.id).await.unwrap().unwrap();
        assert_eq!(given_up.callback_state.as_deref(), Some("failed"));
        assert_eq!(given_up.callback_attempts, 2);
        h.clock.advance(Duration::from_secs(3600));
        assert!(h.queue.claim_callbacks(10, hold).await.unwrap().is_empty());
        let delivered = h.queue.get(&first.id).await.unwrap().unwrap();
        assert_eq!((delivered.callback_state.as_deref(), delivered.callback_attempts), (Some("delivered"), 1));
    }

    pub async fn api_keys_are_found_by_hash_and_can_be_revoked(h: Harness) {
        h.keys.insert_key("k1", "hash-1", &["submit".into(), "read".into()], "ci").await.unwrap();
        h.keys.insert_key("k2", "hash-2", &["admin".into()], "ops").await.unwrap();
        let found = h.keys.key_by_hash("hash-1").await.unwrap().unwrap();
        assert_eq!(found.id, "k1");
        assert_eq!(found.scopes, ["submit", "read"]);
        assert!(found.revoked_at.is_none());
        assert!(h.keys.key_by_hash("hash-3").await.unwrap().is_none());
        assert!(h.keys.revoke_key("k1").await.unwrap());
        assert!(!h.keys.revoke_key("k1").await.unwrap());
        assert_eq!(h.keys.key_by_hash("hash-1").await.unwrap().unwrap().revoked_at, Some(START));
        assert_eq!(h.keys.list_keys().await.unwrap().len(), 2);
    }
}

/// Runs every case against one backend; adding a case here runs it against both.
macro_rules! conformance_suite {
    ($backend:ident) => {
        mod $backend {
            use super::*;
            conformance_suite!(@cases $backend:
                an_enqueued_job_is_queued_and_can_be_read_back,
                a_repeated_idempotency_key_returns_the_first_job,
                enqueue_many_applies_idempotency_inside_one_transaction,
                oldest_waiting_is_the_first_submitted_of_the_queued_and_retrying_jobs,
                claims_take_the_oldest_job_with_a_lease_and_count_the_attempt,
                a_completed_job_is_final_and_completes_only_once,
                a_rejected_job_is_final_and_never_retried,
                a_transient_failure_retries_after_exponential_backoff,
                a_job_that_keeps_failing_ends_dead_after_its_attempts,
                heartbeats_keep_a_lease_alive,
                an_expired_lease_is_reaped_and_the_job_completes_exactly_once,
                a_job_that_crashes_its_worker_every_time_ends_dead,
                a_restarted_node_recovers_its_own_leases_at_once,
                a_released_job_goes_back_without_using_an_attempt,
                only_jobs_that_have_not_started_can_be_cancelled,
                dead_letters_can_be_listed_replayed_and_purged_with_an_audit_trail,
                lists_filter_by_state_and_batch_and_page_with_cursors,
                concurrent_workers_never_claim_one_job_twice,
                callbacks_are_due_once_final_claimed_once_and_retried_with_backoff,
                api_keys_are_found_by_hash_and_can_be_revoked,
            );
        }
    };
    (@cases $backend:ident: $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                cases::$case(backends::$backend().await).await;
            }
        )*
    };
}

conformance_suite!(sqlite);
conformance_suite!(postgres);
// The same cases without group commit: each operation in its own transaction.
conformance_suite!(sqlite_per_call);
conformance_suite!(postgres_per_call);

/// A result cache under test, its clock, and whatever keeps its database alive.
struct CacheHarness {
    cache: Arc<dyn ResultCacheStore>,
    clock: ManualClock,
    _database: Box<dyn Send>,
}

/// The three stores of the result cache: the table in each queue backend, and the standalone
/// file of `speechmill process`.
mod cache_backends {
    use super::*;

    pub async fn sqlite() -> CacheHarness {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(START);
        let queue = SqliteQueue::open(
            &dir.path().join("queue.sqlite"),
            config_with(true),
            Arc::new(clock.clone()),
            Arc::new(Ceiling),
        )
        .await
        .unwrap();
        CacheHarness { cache: Arc::new(queue), clock, _database: Box::new(dir) }
    }

    pub async fn postgres() -> CacheHarness {
        let database = TempPostgres::create().await;
        let clock = ManualClock::new(START);
        let queue =
            PostgresQueue::connect(&database.url(), config_with(false), Arc::new(clock.clone()), Arc::new(Ceiling))
                .await
                .unwrap();
        CacheHarness { cache: Arc::new(queue), clock, _database: Box::new(database) }
    }

    pub async fn cache_file() -> CacheHarness {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(START);
        let cache = SqliteResultCache::open(&dir.path().join("results.sqlite"), Arc::new(clock.clone())).await.unwrap();
        CacheHarness { cache: Arc::new(cache), clock, _database: Box::new(dir) }
    }
}

fn record(key: &str, version: &str, audio_len: usize) -> CacheRecord {
    CacheRecord {
        key: key.into(),
        version: version.into(),
        config_hash: "config-1".into(),
        value: format!("{{\"kind\":\"measured\",\"key\":\"{key}\"}}"),
        audio: (audio_len > 0).then(|| (0..audio_len).map(|n| (n % 256) as u8).collect()),
    }
}

mod cache_cases {
    use super::*;

    pub async fn entries_read_back_byte_for_byte_and_a_put_replaces(h: CacheHarness) {
        assert_eq!(h.cache.cache_get("absent").await.unwrap(), None);
        let first = record("k1", "0.1.0", 1000);
        h.cache.cache_put(&first).await.unwrap();
        let hit = h.cache.cache_get("k1").await.unwrap().unwrap();
        assert_eq!(hit, CacheHit { value: first.value.clone(), audio: first.audio.clone() });
        // A later result for the same key (a clip the gate now accepts) replaces the entry.
        let replacement = CacheRecord { value: "{\"kind\":\"invalid\"}".into(), audio: None, ..first.clone() };
        h.cache.cache_put(&replacement).await.unwrap();
        assert_eq!(
            h.cache.cache_get("k1").await.unwrap(),
            Some(CacheHit { value: replacement.value.clone(), audio: None })
        );
        let stats = h.cache.cache_stats().await.unwrap();
        assert_eq!((stats.entries, stats.bytes), (1, replacement.value.len() as u64));
    }

    pub async fn stats_count_by_version_and_pruning_keeps_the_most_recently_used(h: CacheHarness) {
        let records = [record("k1", "0.1.0", 100), record("k2", "0.1.0", 100), record("k3", "0.2.0", 100)];
        for record in &records {
            h.cache.cache_put(record).await.unwrap();
            h.clock.advance(Duration::from_secs(1));
        }
        let size = |record: &CacheRecord| (record.value.len() + record.audio.as_ref().map_or(0, Vec::len)) as u64;
        let stats = h.cache.cache_stats().await.unwrap();
        assert_eq!(stats.entries, 3);
        assert_eq!(stats.bytes, records.iter().map(size).sum::<u64>());
        assert_eq!(stats.by_version["0.1.0"].entries, 2);
        assert_eq!(stats.by_version["0.2.0"].bytes, size(&records[2]));
        // A hit marks k1 used, so k2 is now the least recently used.
        assert!(h.cache.cache_get("k1").await.unwrap().is_some());
        let removed = h.cache.cache_prune(size(&records[0]) + size(&records[2])).await.unwrap();
        assert_eq!(removed, 1);
        assert!(h.cache.cache_get("k2").await.unwrap().is_none());
        assert!(h.cache.cache_get("k1").await.unwrap().is_some() && h.cache.cache_get("k3").await.unwrap().is_some());
        assert_eq!(h.cache.cache_prune(u64::MAX).await.unwrap(), 0);
        assert_eq!(h.cache.cache_clear().await.unwrap(), 2);
        assert_eq!(h.cache.cache_stats().await.unwrap(), CacheStats::default());
    }

    pub async fn concurrent_writers_and_readers_all_succeed(h: CacheHarness) {
        let mut tasks = tokio::task::JoinSet::new();
        for task in 0..8 {
            let cache = h.cache.clone();
            tasks.spawn(async move {
                for n in 0..10 {
                    let key = format!("k{}", n % 5);
                    cache.cache_put(&record(&key, "0.1.0", 64 + task)).await.unwrap();
                    let hit = cache.cache_get(&key).await.unwrap().expect("just stored");
                    assert_eq!(hit.value, record(&key, "0.1.0", 0).value);
                }
            });
        }
        while let Some(joined) = tasks.join_next().await {
            joined.unwrap();
        }
        assert_eq!(h.cache.cache_stats().await.unwrap().entries, 5);
    }
}

/// Runs every result cache case against one store.
macro_rules! cache_suite {
    ($backend:ident: $($case:ident),* $(,)?) => {
        mod $backend {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    cache_cases::$case(cache_backends::$backend().await).await;
                }
            )*
        }
    };
}

macro_rules! every_cache_case {
    ($backend:ident) => {
        cache_suite!($backend:
            entries_read_back_byte_for_byte_and_a_put_replaces,
            stats_count_by_version_and_pruning_keeps_the_most_recently_used,
            concurrent_writers_and_readers_all_succeed,
        );
    };
}

mod result_cache {
    use super::*;
    every_cache_case!(sqlite);
    every_cache_case!(postgres);
    every_cache_case!(cache_file);
}
