//! The two queue backends, SQLite (WAL, the embedded default) and PostgreSQL (many nodes, claims
//! with `FOR UPDATE SKIP LOCKED`), generated from one body of SQL and code so they cannot drift.
//!
//! Statements are written once with PostgreSQL placeholders (`$1`); the SQLite backend rewrites
//! them to SQLite's numbered form (`?1`), and `{lock}` becomes `FOR UPDATE SKIP LOCKED` on
//! PostgreSQL and nothing on SQLite, where one writer at a time makes a claim atomic anyway.
//! Every time comes from the injected [`Clock`], never from the database.

use std::collections::BTreeMap;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{AssertSqlSafe, PgPool, Row, SqlSafeStr, SqlStr, SqlitePool};

use crate::keys::{ApiKeyRecord, KeyStore};
use crate::migrate::{migrate_queue_postgres, migrate_queue_sqlite};
use crate::queue::{
    AuditEntry, CallbackTask, Clock, Enqueued, FailureKind, JobError, JobQueue, Lease, ListQuery, Millis, NewJob, Page,
    QueueConfig, QueueJob, Random, parse_state,
};
use crate::{JobState, QueueError};

/// The columns of a job, in the order every statement returns them.
const COLUMNS: &str = "seq, id, batch_id, idempotency_key, payload, state, attempts, max_attempts, run_at, \
    lease_owner, lease_token, lease_expires_at, last_error, result, created_at, updated_at, finished_at, \
    callback_url, callback_state, callback_attempts, callback_error";

/// Clears the lease columns; part of every transition out of `running`.
const NO_LEASE: &str = "lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL";

/// Which SQL dialect a statement is rendered for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
}

/// Every statement the queue runs, rendered once for one dialect.
#[derive(Debug)]
pub(crate) struct Statements {
    enqueue: SqlStr,
    by_key: SqlStr,
    get: SqlStr,
    list: SqlStr,
    claim: SqlStr,
    heartbeat: SqlStr,
    finish: SqlStr,
    fail: SqlStr,
    release: SqlStr,
    reap: SqlStr,
    recover_owner: SqlStr,
    cancel: SqlStr,
    replay_one: SqlStr,
    replay_where: SqlStr,
    purge: SqlStr,
    audit: SqlStr,
    audit_log: SqlStr,
    counts: SqlStr,
    oldest_waiting: SqlStr,
    callbacks_claim: SqlStr,
    callback_delivered: SqlStr,
    callback_failed: SqlStr,
    key_insert: SqlStr,
    key_by_hash: SqlStr,
    key_list: SqlStr,
    key_revoke: SqlStr,
    pub(crate) cache_get: SqlStr,
    pub(crate) cache_put: SqlStr,
    pub(crate) cache_stats: SqlStr,
    pub(crate) cache_clear: SqlStr,
    pub(crate) cache_prune: SqlStr,
}

impl Statements {
    pub(crate) fn new(dialect: Dialect) -> Self {
        let render = |sql: &str| -> SqlStr {
            let lock = if dialect == Dialect::Postgres { "FOR UPDATE SKIP LOCKED" } else { "" };
            // Without statistics SQLite's planner picks the state index and sorts every
            // runnable job for each claim; the partial index gives the oldest at once.
            let runnable = if dialect == Dialect::Sqlite { "INDEXED BY queue_jobs_runnable" } else { "" };
            let callbacks = if dialect == Dialect::Sqlite { "INDEXED BY queue_jobs_callbacks" } else { "" };
            let mut text = sql
                .replace("{cols}", COLUMNS)
                .replace("{no_lease}", NO_LEASE)
                .replace("{lock}", lock)
                .replace("{runnable}", runnable)
                .replace("{callbacks}", callbacks);
            if dialect == Dialect::Sqlite {
                text = text.replace('$', "?");
            }
            // Every piece above is a constant of this file; no input is ever spliced in.
            AssertSqlSafe(text).into_sql_str()
        };
        Statements {
            enqueue: render(
                "INSERT INTO queue_jobs (id, batch_id, idempotency_key, payload, state, attempts, max_attempts, \
                 run_at, created_at, updated_at, callback_url, callback_state, callback_next_at) \
                 VALUES ($1, $2, $3, $4, 'queued', 0, $5, $6, $6, $6, $7, $8, $6) \
                 ON CONFLICT (idempotency_key) DO NOTHING RETURNING {cols}",
            ),
            by_key: render("SELECT {cols} FROM queue_jobs WHERE idempotency_key = $1"),
            get: render("SELECT {cols} FROM queue_jobs WHERE id = $1"),
            list: render(
                "SELECT {cols} FROM queue_jobs WHERE seq > $1 AND ($2 = '' OR state = $2) \
                 AND ($3 = '' OR batch_id = $3) ORDER BY seq LIMIT $4",
            ),
            claim: render(
                "UPDATE queue_jobs SET state = 'running', attempts = attempts + 1, lease_owner = $1, \
                 lease_token = $2, lease_expires_at = $3, updated_at = $4 \
                 WHERE seq = (SELECT seq FROM queue_jobs {runnable} WHERE state IN ('queued', 'retrying') AND run_at <= $4 \
                 ORDER BY run_at, seq LIMIT 1 {lock}) RETURNING {cols}",
            ),
            heartbeat: render(
                "UPDATE queue_jobs SET lease_expires_at = $1, updated_at = $2 \
                 WHERE id = $3 AND lease_token = $4 AND state = 'running'",
            ),
            finish: render(
                "UPDATE queue_jobs SET state = $1, result = $2, {no_lease}, updated_at = $3, finished_at = $3 \
                 WHERE id = $4 AND lease_token = $5 AND state = 'running' RETURNING {cols}",
            ),
            fail: render(
                "UPDATE queue_jobs SET state = $1, run_at = $2, last_error = $3, {no_lease}, updated_at = $4, \
                 finished_at = $5 WHERE id = $6 AND lease_token = $7 AND state = 'running' RETURNING {cols}",
            ),
            release: render(
                "UPDATE queue_jobs SET state = 'queued', attempts = attempts - 1, run_at = $1, {no_lease}, \
                 updated_at = $1 WHERE id = $2 AND lease_token = $3 AND state = 'running' RETURNING {cols}",
            ),
            reap: render(
                "UPDATE queue_jobs SET \
                 state = CASE WHEN attempts >= max_attempts THEN 'dead' ELSE 'retrying' END, \
                 finished_at = CASE WHEN attempts >= max_attempts THEN $1 ELSE NULL END, \
                 last_error = $2, run_at = $1, {no_lease}, updated_at = $1 \
                 WHERE seq IN (SELECT seq FROM queue_jobs WHERE state = 'running' AND lease_expires_at <= $1 {lock})",
            ),
            recover_owner: render(
                "UPDATE queue_jobs SET \
                 state = CASE WHEN attempts >= max_attempts THEN 'dead' ELSE 'retrying' END, \
                 finished_at = CASE WHEN attempts >= max_attempts THEN $1 ELSE NULL END, \
                 last_error = $2, run_at = $1, {no_lease}, updated_at = $1 \
                 WHERE seq IN (SELECT seq FROM queue_jobs WHERE state = 'running' AND lease_owner = $3 {lock})",
            ),
            cancel: render(
                "UPDATE queue_jobs SET state = 'cancelled', updated_at = $1, finished_at = $1 \
                 WHERE id = $2 AND state IN ('queued', 'retrying') RETURNING {cols}",
            ),
            replay_one: render(
                "UPDATE queue_jobs SET state = 'queued', attempts = 0, run_at = $1, updated_at = $1, finished_at = NULL \
                 WHERE id = $2 AND state = 'dead' RETURNING {cols}",
            ),
            replay_where: render(
                "UPDATE queue_jobs SET state = 'queued', attempts = 0, run_at = $1, updated_at = $1, finished_at = NULL \
                 WHERE state = 'dead' AND ($2 = '' OR batch_id = $2) RETURNING {cols}",
            ),
            purge: render("DELETE FROM queue_jobs WHERE id = $1 AND state = 'dead' RETURNING {cols}"),
            audit: render("INSERT INTO queue_audit (at, actor, action, job_id, detail) VALUES ($1, $2, $3, $4, $5)"),
            audit_log: render(
                "SELECT seq, at, actor, action, job_id, detail FROM queue_audit ORDER BY seq DESC LIMIT $1",
            ),
            counts: render("SELECT state, COUNT(*) AS n FROM queue_jobs GROUP BY state"),
            // The oldest of each waiting state through the (state, seq) index, not a scan of
            // the backlog: seq follows creation.
            oldest_waiting: render(
                "SELECT MIN(t) AS t FROM (\
                 SELECT (SELECT created_at FROM queue_jobs WHERE state = 'queued' ORDER BY seq LIMIT 1) AS t \
                 UNION ALL \
                 SELECT (SELECT created_at FROM queue_jobs WHERE state = 'retrying' ORDER BY seq LIMIT 1) AS t) AS w",
            ),
            callbacks_claim: render(
                "UPDATE queue_jobs SET callback_next_at = $2 WHERE seq IN (SELECT seq FROM queue_jobs {callbacks} \
                 WHERE callback_state = 'pending' AND callback_next_at <= $1 \
                 AND state IN ('succeeded', 'rejected', 'dead', 'cancelled') ORDER BY callback_next_at LIMIT $3 {lock}) \
                 RETURNING {cols}",
            ),
            callback_delivered: render(
                "UPDATE queue_jobs SET callback_state = 'delivered', callback_attempts = callback_attempts + 1, \
                 callback_error = NULL WHERE id = $1 AND callback_state = 'pending'",
            ),
            callback_failed: render(
                "UPDATE queue_jobs SET callback_state = $1, callback_attempts = callback_attempts + 1, \
                 callback_error = $2, callback_next_at = $3 WHERE id = $4 AND callback_state = 'pending'",
            ),
            key_insert: render(
                "INSERT INTO api_keys (id, hash, scopes, label, created_at) VALUES ($1, $2, $3, $4, $5)",
            ),
            key_by_hash: render("SELECT id, scopes, label, created_at, revoked_at FROM api_keys WHERE hash = $1"),
            key_list: render("SELECT id, scopes, label, created_at, revoked_at FROM api_keys ORDER BY created_at, id"),
            key_revoke: render("UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL"),
            // A lookup marks the entry used in the same statement, for pruning by last use.
            cache_get: render("UPDATE result_cache SET used_at = $1 WHERE key = $2 RETURNING value, audio"),
            cache_put: render(
                "INSERT INTO result_cache (key, version, config_hash, value, audio, bytes, created_at, used_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $7) ON CONFLICT (key) DO UPDATE SET \
                 version = excluded.version, config_hash = excluded.config_hash, value = excluded.value, \
                 audio = excluded.audio, bytes = excluded.bytes, used_at = excluded.used_at",
            ),
            cache_stats: render(
                "SELECT version, COUNT(*) AS entries, CAST(COALESCE(SUM(bytes), 0) AS BIGINT) AS bytes \
                 FROM result_cache GROUP BY version ORDER BY version",
            ),
            cache_clear: render("DELETE FROM result_cache"),
            // Keeps the most recently used entries whose sizes add up to at most $1.
            cache_prune: render(
                "DELETE FROM result_cache WHERE key IN (SELECT key FROM (SELECT key, \
                 SUM(bytes) OVER (ORDER BY used_at DESC, key) AS running FROM result_cache) AS r \
                 WHERE running > $1)",
            ),
        }
    }
}

/// What a failed lease-holding transition means: the job is gone, or someone else holds it.
fn lease_lost(lease: &Lease) -> QueueError {
    QueueError::LeaseLost { id: lease.job.id.clone() }
}

/// The error recorded on a job whose lease ran out.
fn lease_expired_error() -> Result<String, QueueError> {
    Ok(serde_json::to_string(&JobError {
        kind: FailureKind::LeaseExpired,
        message: "the worker holding the lease stopped heartbeating".into(),
        context: Value::Null,
    })?)
}

/// Milliseconds in a duration, as stored.
fn millis(duration: Duration) -> Millis {
    duration.as_millis().min(i64::MAX as u128) as Millis
}

/// An operation that the SQLite backend commits in groups: many concurrent enqueues, claims and
/// completions share one transaction and one fsync, so durable throughput is not bounded by the
/// disk's sync latency.
#[derive(Debug)]
enum OpKind {
    Enqueue(NewJob),
    Claim(String),
    Finish { lease: Box<Lease>, state: JobState, result: Value },
}

/// What an [`OpKind`] came to.
#[derive(Debug)]
enum OpDone {
    Enqueued(Enqueued),
    Claimed(Option<Lease>),
    Finished(QueueJob),
}

/// An operation on its way to the group-commit writer, with where to send its answer (only
/// after the group's transaction committed).
struct GroupOp {
    kind: OpKind,
    reply: tokio::sync::oneshot::Sender<Result<OpDone, QueueError>>,
}

/// The most operations one group commits together.
const MAX_GROUP: usize = 256;

/// Whether an operation's error means the whole group must roll back (the database failed)
/// rather than only this operation (its lease was lost, say).
fn is_database_error(err: &QueueError) -> bool {
    matches!(err, QueueError::Database(_))
}

/// Generates the queue and key-store implementations of one backend from the statements above.
macro_rules! sql_backend {
    ($backend:ident, $db:ty, $begin:expr) => {
        impl $backend {
            fn job_from_row(row: &<$db as sqlx::Database>::Row) -> Result<QueueJob, QueueError> {
                let json = |column: &str| -> Result<Option<Value>, QueueError> {
                    let text: Option<String> = row.try_get(column)?;
                    Ok(text.map(|text| serde_json::from_str(&text)).transpose()?)
                };
                let last_error: Option<String> = row.try_get("last_error")?;
                Ok(QueueJob {
                    seq: row.try_get("seq")?,
                    id: row.try_get("id")?,
                    batch_id: row.try_get("batch_id")?,
                    idempotency_key: row.try_get("idempotency_key")?,
                    payload: json("payload")?.unwrap_or(Value::Null),
                    state: parse_state(&row.try_get::<String, _>("state")?)?,
                    attempts: row.try_get::<i64, _>("attempts")?.clamp(0, i64::from(u32::MAX)) as u32,
                    max_attempts: row.try_get::<i64, _>("max_attempts")?.clamp(0, i64::from(u32::MAX)) as u32,
                    run_at: row.try_get("run_at")?,
                    lease_owner: row.try_get("lease_owner")?,
                    lease_expires_at: row.try_get("lease_expires_at")?,
                    last_error: last_error.map(|text| serde_json::from_str(&text)).transpose()?,
                    result: json("result")?,
                    created_at: row.try_get("created_at")?,
                    updated_at: row.try_get("updated_at")?,
                    finished_at: row.try_get("finished_at")?,
                    callback_url: row.try_get("callback_url")?,
                    callback_state: row.try_get("callback_state")?,
                    callback_attempts: row.try_get::<i64, _>("callback_attempts")?.clamp(0, i64::from(u32::MAX)) as u32,
                    callback_error: row.try_get("callback_error")?,
                })
            }

            fn key_from_row(row: &<$db as sqlx::Database>::Row) -> Result<ApiKeyRecord, QueueError> {
                let scopes: String = row.try_get("scopes")?;
                Ok(ApiKeyRecord {
                    id: row.try_get("id")?,
                    scopes: scopes.split(',').filter(|scope| !scope.is_empty()).map(str::to_string).collect(),
                    label: row.try_get("label")?,
                    created_at: row.try_get("created_at")?,
                    revoked_at: row.try_get("revoked_at")?,
                })
            }

            async fn insert_one<'c, E>(&self, executor: E, job: &NewJob, now: Millis) -> Result<Option<QueueJob>, QueueError>
            where
                E: sqlx::Executor<'c, Database = $db>,
            {
                let max_attempts = i64::from(job.max_attempts.unwrap_or(self.config.max_attempts).max(1));
                let row = sqlx::query(self.sql.enqueue.clone())
                    .bind(uuid::Uuid::now_v7().to_string())
                    .bind(&job.batch_id)
                    .bind(&job.idempotency_key)
                    .bind(serde_json::to_string(&job.payload)?)
                    .bind(max_attempts)
                    .bind(now)
                    .bind(&job.callback_url)
                    .bind(job.callback_url.as_ref().map(|_| "pending"))
                    .fetch_optional(executor)
                    .await?;
                row.as_ref().map(Self::job_from_row).transpose()
            }

            async fn one_by_key<'c, E>(&self, executor: E, key: &str) -> Result<QueueJob, QueueError>
            where
                E: sqlx::Executor<'c, Database = $db>,
            {
                let row = sqlx::query(self.sql.by_key.clone()).bind(key).fetch_one(executor).await?;
                Self::job_from_row(&row)
            }

            async fn enqueue_on(
                &self,
                conn: &mut <$db as sqlx::Database>::Connection,
                job: &NewJob,
                now: Millis,
            ) -> Result<Enqueued, QueueError> {
                if let Some(created) = self.insert_one(&mut *conn, job, now).await? {
                    return Ok(Enqueued { job: created, created: true });
                }
                let key = job.idempotency_key.as_deref().unwrap_or_default();
                Ok(Enqueued { job: self.one_by_key(&mut *conn, key).await?, created: false })
            }

            async fn claim_on(
                &self,
                conn: &mut <$db as sqlx::Database>::Connection,
                owner: &str,
                now: Millis,
            ) -> Result<Option<Lease>, QueueError> {
                let expires_at = now + millis(self.config.lease);
                let token = uuid::Uuid::new_v4().to_string();
                let row = sqlx::query(self.sql.claim.clone())
                    .bind(owner)
                    .bind(&token)
                    .bind(expires_at)
                    .bind(now)
                    .fetch_optional(&mut *conn)
                    .await?;
                let Some(row) = row else { return Ok(None) };
                let job = Self::job_from_row(&row)?;
                Ok(Some(Lease { job, token, owner: owner.to_string(), expires_at }))
            }

            async fn finish_on(
                &self,
                conn: &mut <$db as sqlx::Database>::Connection,
                lease: &Lease,
                state: JobState,
                result: &Value,
                now: Millis,
            ) -> Result<QueueJob, QueueError> {
                let row = sqlx::query(self.sql.finish.clone())
                    .bind(state.as_str())
                    .bind(serde_json::to_string(result)?)
                    .bind(now)
                    .bind(&lease.job.id)
                    .bind(&lease.token)
                    .fetch_optional(&mut *conn)
                    .await?;
                row.as_ref().map(Self::job_from_row).transpose()?.ok_or_else(|| lease_lost(lease))
            }

            /// Commits operations in groups until every sender is gone.
            async fn group_writer(self, mut receiver: tokio::sync::mpsc::Receiver<GroupOp>) {
                let mut ops = Vec::with_capacity(MAX_GROUP);
                while receiver.recv_many(&mut ops, MAX_GROUP).await > 0 {
                    self.commit_group(std::mem::take(&mut ops)).await;
                }
            }

            /// Runs a group in one transaction (a savepoint would not help: a database error fails the
            /// group, and every operation in it is answered with that error, nothing committed).
            async fn commit_group(&self, ops: Vec<GroupOp>) {
                let fail_all = |ops: Vec<GroupOp>, err: &QueueError| {
                    for op in ops {
                        let _ = op
                            .reply
                            .send(Err(QueueError::GroupCommit { transient: err.is_transient(), message: err.to_string() }));
                    }
                };
                let mut conn = match self.pool.acquire().await {
                    Ok(conn) => conn,
                    Err(err) => return fail_all(ops, &err.into()),
                };
                if let Err(err) = sqlx::raw_sql($begin).execute(&mut *conn).await {
                    return fail_all(ops, &err.into());
                }
                let now = self.clock.now_ms();
                let mut answers = Vec::with_capacity(ops.len());
                let mut failure = None;
                for op in &ops {
                    let answer = self.run_op(&mut conn, &op.kind, now).await;
                    if let Err(err) = &answer
                        && is_database_error(err)
                    {
                        failure = Some(QueueError::GroupCommit { transient: err.is_transient(), message: err.to_string() });
                        break;
                    }
                    answers.push(answer);
                }
                if let Some(err) = failure {
                    let _ = sqlx::raw_sql("ROLLBACK").execute(&mut *conn).await;
                    return fail_all(ops, &err);
                }
                if let Err(err) = sqlx::raw_sql("COMMIT").execute(&mut *conn).await {
                    let _ = sqlx::raw_sql("ROLLBACK").execute(&mut *conn).await;
                    return fail_all(ops, &err.into());
                }
                for (op, answer) in ops.into_iter().zip(answers) {
                    let _ = op.reply.send(answer);
                }
            }

            /// Closes the pool (for SQLite, checkpointing the write-ahead log).
            pub async fn close(&self) {
                self.pool.close().await;
            }

            /// Runs one operation: through the group-commit writer when there is one (SQLite),
            /// otherwise on a pooled connection in autocommit.
            async fn route(&self, op: OpKind) -> Result<OpDone, QueueError> {
                if let Some(group) = &self.group {
                    let (reply, answer) = tokio::sync::oneshot::channel();
                    group
                        .send(GroupOp { kind: op, reply })
                        .await
                        .map_err(|_| QueueError::GroupCommit { transient: true, message: "the queue is closing".into() })?;
                    return answer.await.map_err(|_| QueueError::GroupCommit {
                        transient: true,
                        message: "the group-commit writer stopped".into(),
                    })?;
                }
                let mut conn = self.pool.acquire().await?;
                self.run_op(&mut conn, &op, self.clock.now_ms()).await
            }

            async fn run_op(
                &self,
                conn: &mut <$db as sqlx::Database>::Connection,
                op: &OpKind,
                now: Millis,
            ) -> Result<OpDone, QueueError> {
                Ok(match op {
                    OpKind::Enqueue(job) => OpDone::Enqueued(self.enqueue_on(conn, job, now).await?),
                    OpKind::Claim(owner) => OpDone::Claimed(self.claim_on(conn, owner, now).await?),
                    OpKind::Finish { lease, state, result } => {
                        OpDone::Finished(self.finish_on(conn, lease, *state, result, now).await?)
                    }
                })
            }

            async fn audit_rows<'c, E>(
                &self,
                executor: E,
                now: Millis,
                actor: &str,
                action: &str,
                job: &QueueJob,
                detail: Value,
            ) -> Result<(), QueueError>
            where
                E: sqlx::Executor<'c, Database = $db>,
            {
                sqlx::query(self.sql.audit.clone())
                    .bind(now)
                    .bind(actor)
                    .bind(action)
                    .bind(&job.id)
                    .bind(serde_json::to_string(&detail)?)
                    .execute(executor)
                    .await?;
                Ok(())
            }

            /// Why a job that the statement did not change was not changed: it is missing, or in
            /// another state.
            async fn explain_unchanged(&self, id: &str) -> QueueError {
                match self.get(id).await {
                    Ok(Some(job)) => QueueError::InvalidState { id: id.to_string(), state: job.state },
                    Ok(None) => QueueError::NotFound { id: id.to_string() },
                    Err(err) => err,
                }
            }
        }

        #[async_trait::async_trait]
        impl JobQueue for $backend {
            async fn enqueue(&self, job: NewJob) -> Result<Enqueued, QueueError> {
                match self.route(OpKind::Enqueue(job)).await? {
                    OpDone::Enqueued(enqueued) => Ok(enqueued),
                    _ => unreachable!("an enqueue answers with the enqueued job"),
                }
            }

            async fn enqueue_many(&self, jobs: Vec<NewJob>) -> Result<Vec<Enqueued>, QueueError> {
                let now = self.clock.now_ms();
                let mut tx = self.pool.begin().await?;
                let mut answers = Vec::with_capacity(jobs.len());
                for job in &jobs {
                    if let Some(created) = self.insert_one(&mut *tx, job, now).await? {
                        answers.push(Enqueued { job: created, created: true });
                        continue;
                    }
                    let key = job.idempotency_key.as_deref().unwrap_or_default();
                    answers.push(Enqueued { job: self.one_by_key(&mut *tx, key).await?, created: false });
                }
                tx.commit().await?;
                Ok(answers)
            }

            async fn get(&self, id: &str) -> Result<Option<QueueJob>, QueueError> {
                let row = sqlx::query(self.sql.get.clone()).bind(id).fetch_optional(&self.pool).await?;
                row.as_ref().map(Self::job_from_row).transpose()
            }

            async fn list(&self, query: &ListQuery) -> Result<Page, QueueError> {
                let limit = query.clamped_limit();
                let rows = sqlx::query(self.sql.list.clone())
                    .bind(query.after_seq()?)
                    .bind(query.state.map(JobState::as_str).unwrap_or(""))
                    .bind(query.batch_id.as_deref().unwrap_or(""))
                    .bind(limit + 1)
                    .fetch_all(&self.pool)
                    .await?;
                let mut jobs = rows.iter().map(Self::job_from_row).collect::<Result<Vec<_>, _>>()?;
                let more = jobs.len() as i64 > limit;
                jobs.truncate(limit as usize);
                let next_cursor = if more { jobs.last().map(|job| job.seq.to_string()) } else { None };
                Ok(Page { jobs, next_cursor })
            }

            async fn claim(&self, owner: &str) -> Result<Option<Lease>, QueueError> {
                match self.route(OpKind::Claim(owner.to_string())).await? {
                    OpDone::Claimed(lease) => Ok(lease),
                    _ => unreachable!("a claim answers with a lease or none"),
                }
            }

            async fn heartbeat(&self, lease: &Lease) -> Result<Millis, QueueError> {
                let now = self.clock.now_ms();
                let expires_at = now + millis(self.config.lease);
                let done = sqlx::query(self.sql.heartbeat.clone())
                    .bind(expires_at)
                    .bind(now)
                    .bind(&lease.job.id)
                    .bind(&lease.token)
                    .execute(&self.pool)
                    .await?;
                if done.rows_affected() == 0 {
                    return Err(lease_lost(lease));
                }
                Ok(expires_at)
            }

            async fn complete(&self, lease: &Lease, result: Value) -> Result<QueueJob, QueueError> {
                let op = OpKind::Finish { lease: Box::new(lease.clone()), state: JobState::Succeeded, result };
                match self.route(op).await? {
                    OpDone::Finished(job) => Ok(job),
                    _ => unreachable!("a finish answers with the job"),
                }
            }

            async fn reject(&self, lease: &Lease, result: Value) -> Result<QueueJob, QueueError> {
                let op = OpKind::Finish { lease: Box::new(lease.clone()), state: JobState::Rejected, result };
                match self.route(op).await? {
                    OpDone::Finished(job) => Ok(job),
                    _ => unreachable!("a finish answers with the job"),
                }
            }

            async fn fail(&self, lease: &Lease, error: JobError) -> Result<QueueJob, QueueError> {
                let now = self.clock.now_ms();
                let attempts_made = lease.job.attempts;
                let (state, run_at, finished_at) = if attempts_made >= lease.job.max_attempts {
                    (JobState::Dead, now, Some(now))
                } else {
                    let delay = self.config.backoff.delay(attempts_made, self.random.as_ref());
                    (JobState::Retrying, now + millis(delay), None)
                };
                let row = sqlx::query(self.sql.fail.clone())
                    .bind(state.as_str())
                    .bind(run_at)
                    .bind(serde_json::to_string(&error)?)
                    .bind(now)
                    .bind(finished_at)
                    .bind(&lease.job.id)
                    .bind(&lease.token)
                    .fetch_optional(&self.pool)
                    .await?;
                row.as_ref().map(Self::job_from_row).transpose()?.ok_or_else(|| lease_lost(lease))
            }

            async fn release(&self, lease: &Lease) -> Result<QueueJob, QueueError> {
                let row = sqlx::query(self.sql.release.clone())
                    .bind(self.clock.now_ms())
                    .bind(&lease.job.id)
                    .bind(&lease.token)
                    .fetch_optional(&self.pool)
                    .await?;
                row.as_ref().map(Self::job_from_row).transpose()?.ok_or_else(|| lease_lost(lease))
            }

            async fn reap_expired(&self) -> Result<u64, QueueError> {
                let done = sqlx::query(self.sql.reap.clone())
                    .bind(self.clock.now_ms())
                    .bind(lease_expired_error()?)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected())
            }

            async fn recover_owner(&self, owner: &str) -> Result<u64, QueueError> {
                let done = sqlx::query(self.sql.recover_owner.clone())
                    .bind(self.clock.now_ms())
                    .bind(lease_expired_error()?)
                    .bind(owner)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected())
            }

            async fn cancel(&self, id: &str) -> Result<QueueJob, QueueError> {
                let row = sqlx::query(self.sql.cancel.clone())
                    .bind(self.clock.now_ms())
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?;
                match row {
                    Some(row) => Self::job_from_row(&row),
                    None => Err(self.explain_unchanged(id).await),
                }
            }

            async fn replay_dead(&self, id: &str, actor: &str) -> Result<QueueJob, QueueError> {
                let now = self.clock.now_ms();
                let mut tx = self.pool.begin().await?;
                let row = sqlx::query(self.sql.replay_one.clone()).bind(now).bind(id).fetch_optional(&mut *tx).await?;
                let Some(row) = row else {
                    drop(tx);
                    return Err(self.explain_unchanged(id).await);
                };
                let job = Self::job_from_row(&row)?;
                let detail = json!({ "last_error": job.last_error });
                self.audit_rows(&mut *tx, now, actor, "replay", &job, detail).await?;
                tx.commit().await?;
                Ok(job)
            }

            async fn replay_dead_where(&self, batch_id: Option<&str>, actor: &str) -> Result<u64, QueueError> {
                let now = self.clock.now_ms();
                let mut tx = self.pool.begin().await?;
                let rows = sqlx::query(self.sql.replay_where.clone())
                    .bind(now)
                    .bind(batch_id.unwrap_or(""))
                    .fetch_all(&mut *tx)
                    .await?;
                for row in &rows {
                    let job = Self::job_from_row(row)?;
                    let detail = json!({ "last_error": job.last_error, "filter": { "batch_id": batch_id } });
                    self.audit_rows(&mut *tx, now, actor, "replay", &job, detail).await?;
                }
                tx.commit().await?;
                Ok(rows.len() as u64)
            }

            async fn purge_dead(&self, id: &str, actor: &str) -> Result<(), QueueError> {
                let now = self.clock.now_ms();
                let mut tx = self.pool.begin().await?;
                let row = sqlx::query(self.sql.purge.clone()).bind(id).fetch_optional(&mut *tx).await?;
                let Some(row) = row else {
                    drop(tx);
                    return Err(self.explain_unchanged(id).await);
                };
                let job = Self::job_from_row(&row)?;
                let detail = json!({ "last_error": job.last_error, "attempts": job.attempts, "payload": job.payload });
                self.audit_rows(&mut *tx, now, actor, "purge", &job, detail).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn claim_callbacks(&self, limit: u32, hold: Duration) -> Result<Vec<CallbackTask>, QueueError> {
                let now = self.clock.now_ms();
                let rows = sqlx::query(self.sql.callbacks_claim.clone())
                    .bind(now)
                    .bind(now + millis(hold))
                    .bind(i64::from(limit.clamp(1, 1000)))
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter()
                    .map(|row| {
                        let job = Self::job_from_row(row)?;
                        let url = job.callback_url.clone().unwrap_or_default();
                        Ok(CallbackTask { job, url })
                    })
                    .collect()
            }

            async fn callback_delivered(&self, task: &CallbackTask) -> Result<(), QueueError> {
                sqlx::query(self.sql.callback_delivered.clone()).bind(&task.job.id).execute(&self.pool).await?;
                Ok(())
            }

            async fn callback_failed(&self, task: &CallbackTask, error: &str, max_attempts: u32) -> Result<(), QueueError> {
                let now = self.clock.now_ms();
                let attempts_made = task.job.callback_attempts + 1;
                let (state, next_at) = if attempts_made >= max_attempts {
                    ("failed", now)
                } else {
                    ("pending", now + millis(self.config.backoff.delay(attempts_made, self.random.as_ref())))
                };
                sqlx::query(self.sql.callback_failed.clone())
                    .bind(state)
                    .bind(error)
                    .bind(next_at)
                    .bind(&task.job.id)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn audit_log(&self, limit: u32) -> Result<Vec<AuditEntry>, QueueError> {
                let rows = sqlx::query(self.sql.audit_log.clone())
                    .bind(i64::from(limit.clamp(1, 10_000)))
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter()
                    .map(|row| {
                        Ok(AuditEntry {
                            seq: row.try_get("seq")?,
                            at: row.try_get("at")?,
                            actor: row.try_get("actor")?,
                            action: row.try_get("action")?,
                            job_id: row.try_get("job_id")?,
                            detail: serde_json::from_str(&row.try_get::<String, _>("detail")?)?,
                        })
                    })
                    .collect()
            }

            async fn counts(&self) -> Result<BTreeMap<JobState, u64>, QueueError> {
                let rows = sqlx::query(self.sql.counts.clone()).fetch_all(&self.pool).await?;
                let mut counts = BTreeMap::new();
                for row in &rows {
                    let state = parse_state(&row.try_get::<String, _>("state")?)?;
                    counts.insert(state, row.try_get::<i64, _>("n")?.max(0) as u64);
                }
                Ok(counts)
            }

            async fn oldest_waiting(&self) -> Result<Option<Millis>, QueueError> {
                let row = sqlx::query(self.sql.oldest_waiting.clone()).fetch_one(&self.pool).await?;
                Ok(row.try_get::<Option<i64>, _>("t")?)
            }

            async fn ping(&self) -> Result<(), QueueError> {
                sqlx::query("SELECT 1").execute(&self.pool).await?;
                Ok(())
            }
        }

        #[async_trait::async_trait]
        impl KeyStore for $backend {
            async fn insert_key(&self, id: &str, hash: &str, scopes: &[String], label: &str) -> Result<(), QueueError> {
                sqlx::query(self.sql.key_insert.clone())
                    .bind(id)
                    .bind(hash)
                    .bind(scopes.join(","))
                    .bind(label)
                    .bind(self.clock.now_ms())
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn key_by_hash(&self, hash: &str) -> Result<Option<ApiKeyRecord>, QueueError> {
                let row = sqlx::query(self.sql.key_by_hash.clone()).bind(hash).fetch_optional(&self.pool).await?;
                row.as_ref().map(Self::key_from_row).transpose()
            }

            async fn list_keys(&self) -> Result<Vec<ApiKeyRecord>, QueueError> {
                let rows = sqlx::query(self.sql.key_list.clone()).fetch_all(&self.pool).await?;
                rows.iter().map(Self::key_from_row).collect()
            }

            async fn revoke_key(&self, id: &str) -> Result<bool, QueueError> {
                let done = sqlx::query(self.sql.key_revoke.clone())
                    .bind(self.clock.now_ms())
                    .bind(id)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() > 0)
            }
        }
    };
}

/// Implements [`ResultCacheStore`] for a store with `pool`, `sql` and `clock` fields; the same
/// statements serve the queue backends and the standalone cache file.
macro_rules! result_cache_store {
    ($store:ty, $db:ty) => {
        #[async_trait::async_trait]
        impl $crate::cache::ResultCacheStore for $store {
            async fn cache_get(&self, key: &str) -> Result<Option<$crate::cache::CacheHit>, $crate::QueueError> {
                use sqlx::Row;
                let row = sqlx::query(self.sql.cache_get.clone())
                    .bind(self.clock.now_ms())
                    .bind(key)
                    .fetch_optional(&self.pool)
                    .await?;
                let Some(row) = row else { return Ok(None) };
                Ok(Some($crate::cache::CacheHit { value: row.try_get("value")?, audio: row.try_get("audio")? }))
            }

            async fn cache_put(&self, record: &$crate::cache::CacheRecord) -> Result<(), $crate::QueueError> {
                sqlx::query(self.sql.cache_put.clone())
                    .bind(&record.key)
                    .bind(&record.version)
                    .bind(&record.config_hash)
                    .bind(&record.value)
                    .bind(record.audio.as_deref())
                    .bind($crate::cache::record_bytes(record))
                    .bind(self.clock.now_ms())
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn cache_stats(&self) -> Result<$crate::cache::CacheStats, $crate::QueueError> {
                use sqlx::Row;
                let rows = sqlx::query(self.sql.cache_stats.clone()).fetch_all(&self.pool).await?;
                let rows = rows
                    .iter()
                    .map(|row| Ok((row.try_get("version")?, row.try_get("entries")?, row.try_get("bytes")?)))
                    .collect::<Result<Vec<(String, i64, i64)>, sqlx::Error>>()?;
                Ok($crate::cache::stats_from(rows))
            }

            async fn cache_clear(&self) -> Result<u64, $crate::QueueError> {
                Ok(sqlx::query(self.sql.cache_clear.clone()).execute(&self.pool).await?.rows_affected())
            }

            async fn cache_prune(&self, max_bytes: u64) -> Result<u64, $crate::QueueError> {
                let limit = i64::try_from(max_bytes).unwrap_or(i64::MAX);
                Ok(sqlx::query(self.sql.cache_prune.clone()).bind(limit).execute(&self.pool).await?.rows_affected())
            }
        }
    };
}
pub(crate) use result_cache_store;

result_cache_store!(SqliteQueue, sqlx::Sqlite);
result_cache_store!(PostgresQueue, sqlx::Postgres);

/// The queue on a SQLite file (WAL): the embedded default, for one machine.
pub struct SqliteQueue {
    /// Connection pool; SQLite serialises writers, readers run beside them (WAL).
    pool: SqlitePool,
    /// Statements rendered for SQLite; read-only after construction.
    sql: Arc<Statements>,
    /// Lease length, attempts and backoff.
    config: QueueConfig,
    /// The source of every time the queue stores.
    clock: Arc<dyn Clock>,
    /// The source of backoff jitter.
    random: Arc<dyn Random>,
    /// The group-commit writer's queue; `None` inside the writer itself, or without group
    /// commit.
    group: Option<tokio::sync::mpsc::Sender<GroupOp>>,
}

impl SqliteQueue {
    /// Opens (creating if missing) the queue database at `path` and applies pending migrations.
    pub async fn open(
        path: &Path,
        config: QueueConfig,
        clock: Arc<dyn Clock>,
        random: Arc<dyn Random>,
    ) -> Result<Self, QueueError> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: a submission answered 201 is on disk even if the machine loses power.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10));
        Self::with_options(options, config, clock, random).await
    }

    /// Opens a queue from a `sqlite:` URL.
    pub async fn connect(
        url: &str,
        config: QueueConfig,
        clock: Arc<dyn Clock>,
        random: Arc<dyn Random>,
    ) -> Result<Self, QueueError> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10));
        Self::with_options(options, config, clock, random).await
    }

    async fn with_options(
        options: SqliteConnectOptions,
        config: QueueConfig,
        clock: Arc<dyn Clock>,
        random: Arc<dyn Random>,
    ) -> Result<Self, QueueError> {
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await?;
        migrate_queue_sqlite(&pool).await?;
        let writer =
            SqliteQueue { pool, sql: Arc::new(Statements::new(Dialect::Sqlite)), config, clock, random, group: None };
        if !writer.config.group_commit.unwrap_or(true) {
            return Ok(writer);
        }
        let (sender, receiver) = tokio::sync::mpsc::channel(4 * MAX_GROUP);
        let queue = SqliteQueue {
            pool: writer.pool.clone(),
            sql: writer.sql.clone(),
            config: writer.config.clone(),
            clock: writer.clock.clone(),
            random: writer.random.clone(),
            group: Some(sender),
        };
        tokio::spawn(writer.group_writer(receiver));
        Ok(queue)
    }
}

// BEGIN IMMEDIATE takes the write lock at once, so a group never fails upgrading a read lock.
sql_backend!(SqliteQueue, sqlx::Sqlite, "BEGIN IMMEDIATE");

/// The queue on PostgreSQL: many `serve` and `worker` processes on many machines share it.
pub struct PostgresQueue {
    /// Connection pool.
    pool: PgPool,
    /// Statements rendered for PostgreSQL; read-only after construction.
    sql: Arc<Statements>,
    /// Lease length, attempts and backoff.
    config: QueueConfig,
    /// The source of every time the queue stores.
    clock: Arc<dyn Clock>,
    /// The source of backoff jitter.
    random: Arc<dyn Random>,
    /// The group-commit writer's queue; `None` inside the writer itself, or without group
    /// commit.
    group: Option<tokio::sync::mpsc::Sender<GroupOp>>,
}

impl PostgresQueue {
    /// Connects to `url` (`postgres://...`) and applies pending migrations.
    pub async fn connect(
        url: &str,
        config: QueueConfig,
        clock: Arc<dyn Clock>,
        random: Arc<dyn Random>,
    ) -> Result<Self, QueueError> {
        // The acquire timeout is shorter than the API's database timeout, so an unreachable
        // server shows as a transient pool error rather than a hung request.
        let pool =
            PgPoolOptions::new().max_connections(16).acquire_timeout(Duration::from_secs(3)).connect(url).await?;
        migrate_queue_postgres(&pool).await?;
        let writer = PostgresQueue {
            pool,
            sql: Arc::new(Statements::new(Dialect::Postgres)),
            config,
            clock,
            random,
            group: None,
        };
        if !writer.config.group_commit.unwrap_or(false) {
            return Ok(writer);
        }
        let (sender, receiver) = tokio::sync::mpsc::channel(4 * MAX_GROUP);
        let queue = PostgresQueue {
            pool: writer.pool.clone(),
            sql: writer.sql.clone(),
            config: writer.config.clone(),
            clock: writer.clock.clone(),
            random: writer.random.clone(),
            group: Some(sender),
        };
        tokio::spawn(writer.group_writer(receiver));
        Ok(queue)
    }
}

sql_backend!(PostgresQueue, sqlx::Postgres, "BEGIN");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_statements_use_numbered_placeholders_and_no_row_locks() {
        let sql = Statements::new(Dialect::Sqlite);
        assert!(sql.claim.as_str().contains("?4"));
        assert!(!sql.claim.as_str().contains('$'));
        assert!(!sql.claim.as_str().contains("SKIP LOCKED"));
    }

    #[test]
    fn postgres_claims_skip_locked_rows() {
        let sql = Statements::new(Dialect::Postgres);
        assert!(sql.claim.as_str().contains("FOR UPDATE SKIP LOCKED"));
        assert!(sql.reap.as_str().contains("FOR UPDATE SKIP LOCKED"));
    }
}
