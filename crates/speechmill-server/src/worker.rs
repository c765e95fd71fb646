//! Workers: claim a job, keep its lease alive, fetch its input from storage (object inputs into
//! the data folder's scratch space), run the clip pipeline (which applies the gate's thresholds)
//! on the blocking pool (never on the async runtime), store the outputs atomically under
//! deterministic keys, and record exactly one outcome. Also the reaper, which returns jobs of
//! crashed workers.
//!
//! Outcomes: accepted clips complete the job; clips rejected for their content reject it (never
//! retried); a crash, a timeout, an internal pipeline error or a storage failure fails the
//! attempt, which the queue retries with backoff and finally declares dead.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value, json};
use speechmill_audio::decode::RawFormat;
use speechmill_pipeline::PipelineConfig;
use speechmill_pipeline::clip::{ClipInput, Measurements, process_clip};
use speechmill_pipeline::reason::{Reason, Stage};
use speechmill_queue::{FailureKind, JobError, JobQueue, Lease, QueueError, QueueJob};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::breaker::Breaker;
use crate::cache::ClipCache;
use crate::model::{JobPayload, JobSource};
use crate::storage::{Storage, StorageError, audio_key, result_key};
use crate::telemetry::metrics::{self as telemetry_metrics, JOB_RETRIES, JOBS_CLAIMED, WORKERS, WORKERS_BUSY};
use crate::telemetry::traces;

/// How workers run.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// Concurrent jobs (each uses one thread of the blocking pool).
    pub workers: usize,
    /// This node's name, the owner of its leases; a restarted node with the same name takes its
    /// stale leases back at once. Each process sharing a queue needs its own.
    pub node_name: String,
    /// How long an idle worker waits before asking the queue again.
    pub poll_interval: Duration,
    /// The queue's lease; workers heartbeat every third of it.
    pub lease: Duration,
    /// A job still running after this fails with `timeout`.
    pub job_timeout: Duration,
    /// After shutdown is requested, running jobs get this long to finish before they are
    /// handed back to the queue.
    pub drain_timeout: Duration,
    /// The clip pipeline's configuration.
    pub pipeline: Arc<PipelineConfig>,
    /// Seconds of standardised audio a clip holds in memory; longer clips spill to the data
    /// folder's `scratch/`.
    pub memory_limit_seconds: f64,
    /// The result cache; `None` runs every clip in full.
    pub cache: Option<ClipCache>,
}

/// What one attempt came to.
#[derive(Debug)]
enum Outcome {
    /// Accepted: the manifest row.
    Accepted(Value),
    /// Rejected for its content: the rejection row.
    Rejected(Value),
    /// Failed; worth another attempt.
    Failed(JobError),
}

/// Runs `settings.workers` workers until `stop` is cancelled and every running job has finished
/// or been handed back.
pub async fn run_workers(
    queue: Arc<dyn JobQueue>,
    storage: Storage,
    settings: WorkerSettings,
    database: Arc<Breaker>,
    stop: CancellationToken,
) {
    match queue.recover_owner(&settings.node_name).await {
        Ok(0) => {}
        Ok(count) => tracing::info!(node = %settings.node_name, jobs = count, "took back this node's stale leases"),
        Err(err) => tracing::warn!(error = %err, "cannot take back this node's stale leases"),
    }
    let settings = Arc::new(settings);
    metrics::gauge!(WORKERS).set(settings.workers.max(1) as f64);
    metrics::gauge!(WORKERS_BUSY).set(0.0);
    let mut tasks = tokio::task::JoinSet::new();
    for index in 0..settings.workers.max(1) {
        let worker = Worker {
            queue: queue.clone(),
            storage: storage.clone(),
            settings: settings.clone(),
            database: database.clone(),
            stop: stop.clone(),
            index,
        };
        tasks.spawn(worker.run());
    }
    while tasks.join_next().await.is_some() {}
}

/// Returns jobs whose lease expired to the queue, every `every`, until `stop` is cancelled.
pub async fn run_reaper(queue: Arc<dyn JobQueue>, every: Duration, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        match queue.reap_expired().await {
            Ok(0) => {}
            Ok(count) => tracing::warn!(jobs = count, "returned jobs with expired leases to the queue"),
            Err(err) => tracing::warn!(error = %err, "reaper cannot reach the queue"),
        }
    }
}

/// One worker's loop.
struct Worker {
    queue: Arc<dyn JobQueue>,
    /// Inputs and outputs; its breaker, when open, pauses claiming like the database's.
    storage: Storage,
    settings: Arc<WorkerSettings>,
    /// The database's circuit breaker: an open breaker pauses claiming.
    database: Arc<Breaker>,
    /// Cancelled when the node shuts down: no more claims.
    stop: CancellationToken,
    index: usize,
}

impl Worker {
    async fn run(self) {
        while !self.stop.is_cancelled() {
            if let Some(wait) = self.storage.refusing_for() {
                // Storage is down: claiming now would only burn the jobs' attempts.
                self.pause(wait).await;
                continue;
            }
            if let Err(wait) = self.database.allow() {
                self.pause(wait).await;
                continue;
            }
            match self.queue.claim(&self.settings.node_name).await {
                Ok(Some(lease)) => {
                    self.database.record(true);
                    metrics::counter!(JOBS_CLAIMED).increment(1);
                    metrics::gauge!(WORKERS_BUSY).increment(1.0);
                    let span = job_span(&lease.job);
                    self.run_one(lease).instrument(span).await;
                    metrics::gauge!(WORKERS_BUSY).decrement(1.0);
                }
                Ok(None) => {
                    self.database.record(true);
                    self.pause(self.settings.poll_interval).await;
                }
                Err(err) => {
                    self.database.record(!err.is_transient());
                    tracing::warn!(worker = self.index, error = %err, "cannot claim a job");
                    self.pause(self.settings.poll_interval.max(Duration::from_millis(500))).await;
                }
            }
        }
    }

    async fn pause(&self, wait: Duration) {
        tokio::select! {
            _ = self.stop.cancelled() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }

    async fn run_one(&self, lease: Lease) {
        let job_id = lease.job.id.clone();
        tracing::info!(job.id = %job_id, attempt = lease.job.attempts, "job started");
        let heartbeat = tokio::spawn(heartbeat(self.queue.clone(), lease.clone(), self.settings.lease / 3));

        let job = lease.job.clone();
        let pipeline = self.settings.pipeline.clone();
        let settings = self.settings.clone();
        let span = tracing::Span::current();
        let storage = self.storage.clone();
        let work = async move {
            let prepared = match prepare(&job, &storage).await {
                Ok(prepared) => prepared,
                Err(outcome) => return Ok::<Outcome, tokio::task::JoinError>(outcome),
            };
            let input = prepared.input.clone();
            // Deletes a fetched copy however the attempt ends (even on a timeout, which drops
            // this future while the blocking thread may still read the file: unlinking is safe).
            let _fetched = prepared.temporary_input.then(|| RemoveOnDrop(prepared.input.clone()));
            let scratch = storage.scratch_dir();
            let outputs = Outputs {
                audio_key: audio_key(&job.id, pipeline.standardise.format.extension()),
                result_key: result_key(&job.id),
            };
            let staging = (storage.staging_path(&outputs.audio_key), storage.staging_path(&outputs.result_key));
            let blocking_job = job.clone();
            let blocking_staging = staging.clone();
            let blocking_outputs = outputs.clone();
            let processed = tokio::task::spawn_blocking(move || {
                span.in_scope(|| {
                    attempt(
                        &blocking_job,
                        &prepared.payload,
                        &input,
                        &blocking_outputs,
                        &blocking_staging,
                        &scratch,
                        &settings,
                    )
                })
            })
            .await;
            let outcome = processed?;
            Ok(store_outputs(outcome, &storage, &outputs, &staging).await)
        };
        let stop = self.stop.clone();
        let drain = self.settings.drain_timeout;
        let drain_expired = async move {
            stop.cancelled().await;
            tokio::time::sleep(drain).await;
        };

        let outcome = tokio::select! {
            finished = tokio::time::timeout(self.settings.job_timeout, work) => match finished {
                Ok(Ok(outcome)) => outcome,
                Ok(Err(join_error)) => Outcome::Failed(JobError {
                    kind: FailureKind::Crash,
                    message: format!("processing crashed: {join_error}"),
                    context: Value::Null,
                }),
                Err(_) => Outcome::Failed(JobError {
                    kind: FailureKind::Timeout,
                    message: format!("processing took longer than {} s", self.settings.job_timeout.as_secs_f64()),
                    context: Value::Null,
                }),
            },
            _ = drain_expired => {
                heartbeat.abort();
                match self.queue.release(&lease).await {
                    Ok(_) => tracing::warn!(job.id = %job_id, "shutdown deadline passed; job handed back to the queue"),
                    Err(err) => tracing::warn!(job.id = %job_id, error = %err, "cannot hand the job back; its lease will expire"),
                }
                return;
            }
        };
        heartbeat.abort();
        self.record(&lease, outcome).await;
    }

    /// Records the outcome, retrying while the database is briefly unreachable; if it stays
    /// unreachable the lease expires and the job runs again (its outputs are idempotent).
    async fn record(&self, lease: &Lease, outcome: Outcome) {
        let job_id = &lease.job.id;
        let mut wait = Duration::from_millis(200);
        for _ in 0..6 {
            let recorded: Result<QueueJob, QueueError> = match &outcome {
                Outcome::Accepted(row) => self.queue.complete(lease, row.clone()).await,
                Outcome::Rejected(row) => self.queue.reject(lease, row.clone()).await,
                Outcome::Failed(error) => self.queue.fail(lease, error.clone()).await,
            };
            match recorded {
                Ok(job) => {
                    self.database.record(true);
                    if job.state.is_final() {
                        telemetry_metrics::record_finished(job.state, crate::api::since(job.created_at));
                    } else if let Outcome::Failed(error) = &outcome {
                        metrics::counter!(JOB_RETRIES, "kind" => failure_label(error.kind)).increment(1);
                    }
                    if let Outcome::Failed(error) = &outcome {
                        tracing::warn!(error = %error.message, error.type = failure_label(error.kind), state = job.state.as_str(), "job attempt failed");
                    }
                    if job.state.is_final()
                        && let Ok(JobPayload { source: JobSource::Upload { stored, .. }, .. }) =
                            serde_json::from_value::<JobPayload>(job.payload.clone())
                        && job.state != speechmill_queue::JobState::Dead
                    {
                        self.storage.remove(&stored).await;
                    }
                    tracing::info!(job.id = %job_id, state = job.state.as_str(), "job attempt recorded");
                    return;
                }
                Err(QueueError::LeaseLost { .. }) => {
                    tracing::warn!(job.id = %job_id, "lease lost before the result was recorded; another attempt owns the job");
                    return;
                }
                Err(err) if err.is_transient() => {
                    self.database.record(false);
                    tracing::warn!(job.id = %job_id, error = %err, "cannot record the outcome yet");
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                }
                Err(err) => {
                    tracing::error!(job.id = %job_id, error = %err, "cannot record the outcome");
                    return;
                }
            }
        }
    }
}

/// The consumer span of one job attempt, linked to the request that queued the job.
fn job_span(job: &QueueJob) -> tracing::Span {
    let span = tracing::info_span!(
        target: "speechmill_server::worker",
        "process jobs",
        otel.kind = "consumer",
        messaging.system = "speechmill",
        messaging.operation.type = "process",
        messaging.operation.name = "process",
        messaging.destination.name = "jobs",
        messaging.message.id = %job.id,
        job.id = %job.id,
        job.attempt = job.attempts,
        batch.id = tracing::field::Empty,
    );
    if let Some(batch_id) = &job.batch_id {
        span.record("batch.id", batch_id.as_str());
    }
    if let Some(traceparent) = job.payload.get("traceparent").and_then(Value::as_str) {
        traces::link_to(&span, traceparent);
    }
    span
}

/// A failure kind as a metric label.
fn failure_label(kind: FailureKind) -> &'static str {
    match kind {
        FailureKind::Transient => "transient",
        FailureKind::Crash => "crash",
        FailureKind::Timeout => "timeout",
        FailureKind::LeaseExpired => "lease_expired",
    }
}

/// Renews the lease every `every` until aborted or the lease is lost.
async fn heartbeat(queue: Arc<dyn JobQueue>, lease: Lease, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        match queue.heartbeat(&lease).await {
            Ok(_) => {}
            Err(QueueError::LeaseLost { .. }) => {
                tracing::warn!(job.id = %lease.job.id, "lease lost while the job was running");
                return;
            }
            Err(err) => tracing::warn!(job.id = %lease.job.id, error = %err, "heartbeat failed"),
        }
    }
}

/// Deletes a file when dropped.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A job's input, readable as a local file.
struct Prepared {
    /// The job's payload.
    payload: JobPayload,
    /// The local file to process.
    input: PathBuf,
    /// Whether `input` is a fetched copy to delete after the attempt.
    temporary_input: bool,
}

/// Where an accepted clip's outputs are stored.
#[derive(Debug, Clone)]
struct Outputs {
    /// `audio/<job id>.<ext>`.
    audio_key: String,
    /// `results/<job id>.json`.
    result_key: String,
}

/// Reads the payload and makes the input a local file (fetching uploads and objects from
/// object storage into scratch); a missing stored input rejects the job, an unreachable storage
/// fails the attempt.
async fn prepare(job: &QueueJob, storage: &Storage) -> Result<Prepared, Outcome> {
    let payload: JobPayload = match serde_json::from_value(job.payload.clone()) {
        Ok(payload) => payload,
        Err(err) => {
            return Err(Outcome::Rejected(json!({
                "id": job.id, "reason": "internal_error", "message": format!("unreadable job payload: {err}"),
            })));
        }
    };
    let key = match &payload.source {
        JobSource::Path { path } => {
            return Ok(Prepared { input: PathBuf::from(path), payload, temporary_input: false });
        }
        JobSource::Upload { stored, .. } => stored.clone(),
        JobSource::Object { key } => key.clone(),
    };
    let fetched = storage.fetch(&key).instrument(speechmill_pipeline::clip::stage_span(Stage::Read)).await;
    match fetched {
        Ok(fetched) => Ok(Prepared { payload, input: fetched.path, temporary_input: fetched.temporary }),
        Err(StorageError::NotFound(_)) => {
            let message = format!("the stored input {key:?} does not exist");
            Err(Outcome::Rejected(rejection_row(
                job,
                &payload,
                Reason::IoError,
                Stage::Read,
                &message,
                &Measurements::default(),
                None,
            )))
        }
        Err(err) => Err(Outcome::Failed(JobError {
            kind: FailureKind::Transient,
            message: format!("cannot fetch the input from storage: {err}"),
            context: json!({ "stage": "read" }),
        })),
    }
}

/// Stores an accepted clip's staged outputs under their keys (a no-op on local disk, where they
/// were written in place); a failure fails the attempt, and the retry writes them again.
async fn store_outputs(
    outcome: Outcome,
    storage: &Storage,
    outputs: &Outputs,
    staging: &(PathBuf, PathBuf),
) -> Outcome {
    if !matches!(outcome, Outcome::Accepted(_)) {
        return outcome;
    }
    let stored = async {
        storage.put_file(&outputs.audio_key, &staging.0).await?;
        storage.put_file(&outputs.result_key, &staging.1).await
    }
    .await;
    match stored {
        Ok(()) => outcome,
        Err(err) => {
            let _ = tokio::fs::remove_file(&staging.0).await;
            let _ = tokio::fs::remove_file(&staging.1).await;
            Outcome::Failed(JobError {
                kind: FailureKind::Transient,
                message: format!("cannot store the outputs: {err}"),
                context: json!({ "stage": "write" }),
            })
        }
    }
}

/// One attempt at a job's clip, on a blocking thread: the pipeline, then the outputs written to
/// their staging paths. Never panics.
fn attempt(
    job: &QueueJob,
    payload: &JobPayload,
    path: &Path,
    outputs: &Outputs,
    staging: &(PathBuf, PathBuf),
    scratch: &Path,
    settings: &WorkerSettings,
) -> Outcome {
    let (pipeline, memory_limit_seconds) = (settings.pipeline.as_ref(), settings.memory_limit_seconds);
    let raw_format = match payload.raw_format.as_deref().map(str::parse::<RawFormat>).transpose() {
        Ok(format) => format,
        Err(err) => {
            let message = format!("invalid raw_format: {err}");
            return Outcome::Rejected(rejection_row(
                job,
                payload,
                Reason::UnrecognisedFormat,
                Stage::Read,
                &message,
                &Measurements::default(),
                None,
            ));
        }
    };
    let input = ClipInput { raw_format, scratch_dir: Some(scratch), memory_limit_seconds, ..ClipInput::new(path) };
    let started = std::time::Instant::now();
    let run = || match &settings.cache {
        Some(cache) => cache.process(&input, pipeline).0,
        None => process_clip(&input, pipeline),
    };
    let processed = match catch_unwind(AssertUnwindSafe(run)) {
        Ok(result) => {
            telemetry_metrics::record_clip(result.as_ref().map_err(|rejection| rejection.as_ref()), started.elapsed());
            result
        }
        Err(panic) => {
            let detail = speechmill_pipeline::clip::panic_detail(panic.as_ref());
            tracing::error!(job.id = %job.id, error = %detail, "speechmill panicked on a clip");
            return Outcome::Failed(JobError {
                kind: FailureKind::Crash,
                message: format!("speechmill failed on this clip (a bug; please report it): {detail}"),
                context: json!({ "source": payload.source.display_name() }),
            });
        }
    };
    let processed = match processed {
        Ok(processed) => processed,
        Err(rejection) if rejection.reason.is_internal() => {
            let kind = if rejection.reason == Reason::Timeout { FailureKind::Timeout } else { FailureKind::Crash };
            return Outcome::Failed(JobError {
                kind,
                message: rejection.message.clone(),
                context: json!({ "reason": rejection.reason.as_str(), "stage": rejection.stage }),
            });
        }
        Err(rejection) => {
            return Outcome::Rejected(rejection_row(
                job,
                payload,
                rejection.reason,
                rejection.stage,
                &rejection.message,
                &rejection.measurements,
                rejection.content_hash.as_deref(),
            ));
        }
    };
    let mut row = Map::new();
    row.insert("id".into(), json!(job.id));
    row.insert("source".into(), json!(payload.source.display_name()));
    row.insert("audio_path".into(), json!(outputs.audio_key));
    row.insert("duration_s".into(), json!(processed.measurements.duration_s));
    row.insert("sample_rate".into(), json!(processed.measurements.sample_rate));
    measurement_fields(&processed.measurements, &mut row);
    row.insert("content_hash".into(), json!(processed.content_hash));
    carry(&mut row, &payload.metadata);
    let row = Value::Object(row);
    let _writing = speechmill_pipeline::clip::stage_span(Stage::Write).entered();
    let written = processed.audio.persist(&staging.0).map_err(|err| err.to_string()).and_then(|()| {
        speechmill_pipeline::output::write_atomic(&staging.1, row.to_string().as_bytes()).map_err(|err| err.to_string())
    });
    if let Err(err) = written {
        return Outcome::Failed(JobError {
            kind: FailureKind::Transient,
            message: format!("cannot write the outputs: {err}"),
            context: json!({ "stage": "write" }),
        });
    }
    Outcome::Accepted(row)
}

fn rejection_row(
    job: &QueueJob,
    payload: &JobPayload,
    reason: Reason,
    stage: Stage,
    message: &str,
    measurements: &Measurements,
    content_hash: Option<&str>,
) -> Value {
    let mut row = Map::new();
    row.insert("id".into(), json!(job.id));
    row.insert("source".into(), json!(payload.source.display_name()));
    row.insert("reason".into(), json!(reason));
    row.insert("message".into(), json!(format!("{}: {message}", payload.source.display_name())));
    row.insert("stage".into(), json!(stage));
    measurement_fields(measurements, &mut row);
    row.insert("content_hash".into(), json!(content_hash));
    carry(&mut row, &payload.metadata);
    Value::Object(row)
}

/// Adds every measurement to a row without replacing what is there.
fn measurement_fields(measurements: &Measurements, row: &mut Map<String, Value>) {
    if let Ok(Value::Object(fields)) = serde_json::to_value(measurements) {
        for (key, value) in fields {
            row.entry(key).or_insert(value);
        }
    }
    row.entry("warnings").or_insert_with(|| json!([]));
}

/// Carries the client's metadata into a row; a key speechmill writes itself is kept as
/// `input_<key>`.
fn carry(row: &mut Map<String, Value>, metadata: &Map<String, Value>) {
    for (key, value) in metadata {
        let key = if row.contains_key(key) { format!("input_{key}") } else { key.clone() };
        row.insert(key, value.clone());
    }
}
