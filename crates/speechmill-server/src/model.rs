//! What the API takes and gives (with their OpenAPI schemas), and the payload a job carries in
//! the queue.

use std::time::{Duration, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use speechmill_queue::{AuditEntry, JobState, Millis, QueueJob};
use utoipa::{IntoParams, ToSchema};

/// Where a job's input is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum JobSource {
    /// A file uploaded to the service, stored in the data folder under this relative name.
    Upload {
        /// Relative to the data folder.
        stored: String,
        /// The client's file name.
        filename: String,
    },
    /// A file under a configured input root, canonical at submission.
    Path {
        /// Absolute, canonical.
        path: String,
    },
    /// An existing object in the configured object storage, named by the client.
    Object {
        /// Relative to the storage URL's prefix; checked to hold no `..`.
        key: String,
    },
}

impl JobSource {
    /// How the source is named in results.
    pub fn display_name(&self) -> &str {
        match self {
            JobSource::Upload { filename, .. } => filename,
            JobSource::Path { path } => path,
            JobSource::Object { key } => key,
        }
    }
}

/// What a job carries in the queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobPayload {
    /// The input.
    pub source: JobSource,
    /// The client's metadata, carried through to the result.
    #[serde(default)]
    pub metadata: Map<String, Value>,
    /// How to read headerless PCM (`s16le,16000,1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_format: Option<String>,
    /// The W3C `traceparent` of the request that queued the job: the job's span links to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

/// `POST /v1/jobs` with a JSON body: a file under a configured input root (`path`) or, when the
/// service keeps its files in object storage, an existing object (`object_key`); exactly one.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PathJobRequest {
    /// The file: absolute, or relative to an input root. Must resolve inside a root.
    #[serde(default)]
    #[schema(example = "speaker-1/0001.wav")]
    pub path: Option<String>,
    /// An existing object in the service's object storage (`--storage-url s3://...`), relative
    /// to the storage URL's prefix; keys with `..` are refused. Only with object storage.
    #[serde(default)]
    #[schema(example = "incoming/a.wav")]
    pub object_key: Option<String>,
    /// Carried through to the result unchanged.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub metadata: Map<String, Value>,
    /// How to read headerless PCM: `ENCODING,RATE,CHANNELS`.
    #[serde(default)]
    #[schema(example = "s16le,16000,1")]
    pub raw_format: Option<String>,
    /// Per-job idempotency key (in a batch; single submissions use the `Idempotency-Key` header).
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// POSTed the job's JSON once it is final, with retries; only to the service's allowed hosts.
    #[serde(default)]
    #[schema(example = "https://hooks.example/speechmill")]
    pub callback_url: Option<String>,
}

/// `POST /v1/batches`: many path jobs at once, all or none.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    /// The jobs (at most 10,000).
    pub jobs: Vec<PathJobRequest>,
}

/// The answer to `POST /v1/batches`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BatchView {
    /// The batch's id; list its jobs with `GET /v1/jobs?batch=`.
    pub batch_id: String,
    /// The jobs, in request order.
    pub jobs: Vec<JobView>,
}

/// Why a job's last attempt failed.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorView {
    /// `transient` or `lease_expired`.
    pub kind: String,
    /// What went wrong.
    pub message: String,
    /// Structured context.
    #[schema(value_type = Object)]
    pub context: Value,
}

/// A job as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct JobView {
    /// The job's id.
    pub id: String,
    /// `queued`, `running`, `retrying`, `succeeded`, `rejected`, `dead` or `cancelled`.
    #[schema(value_type = String, example = "queued")]
    pub state: JobState,
    /// The batch, if submitted in one.
    pub batch_id: Option<String>,
    /// The input file's name.
    pub source: String,
    /// Attempts started.
    pub attempts: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// The client's metadata.
    #[schema(value_type = Object)]
    pub metadata: Value,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
    /// RFC 3339, once final.
    pub finished_at: Option<String>,
    /// RFC 3339, while retrying: not before this.
    pub next_attempt_at: Option<String>,
    /// The manifest row (succeeded) or the rejection (rejected).
    #[schema(value_type = Option<Object>)]
    pub result: Option<Value>,
    /// The last failed attempt's error.
    pub error: Option<ErrorView>,
    /// The callback's delivery, when the job has one.
    pub callback: Option<CallbackView>,
}

/// Where a job's callback stands.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CallbackView {
    /// Where it is POSTed.
    pub url: String,
    /// `pending`, `delivered` or `failed` (given up).
    pub state: String,
    /// Deliveries tried.
    pub attempts: u32,
    /// The last failed delivery.
    pub error: Option<String>,
}

/// RFC 3339 text of a queue time.
pub fn rfc3339(at: Millis) -> String {
    let time = UNIX_EPOCH + Duration::from_millis(at.max(0) as u64);
    humantime::format_rfc3339_millis(time).to_string()
}

impl From<&QueueJob> for JobView {
    fn from(job: &QueueJob) -> Self {
        let payload: Option<JobPayload> = serde_json::from_value(job.payload.clone()).ok();
        let (source, metadata) = match payload {
            Some(payload) => (payload.source.display_name().to_string(), Value::Object(payload.metadata)),
            None => (String::new(), Value::Object(Map::new())),
        };
        JobView {
            id: job.id.clone(),
            state: job.state,
            batch_id: job.batch_id.clone(),
            source,
            attempts: job.attempts,
            max_attempts: job.max_attempts,
            metadata,
            created_at: rfc3339(job.created_at),
            updated_at: rfc3339(job.updated_at),
            finished_at: job.finished_at.map(rfc3339),
            next_attempt_at: (job.state == JobState::Retrying).then(|| rfc3339(job.run_at)),
            result: job.result.clone(),
            error: job.last_error.as_ref().map(|error| ErrorView {
                kind: serde_json::to_value(error.kind)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
                message: error.message.clone(),
                context: error.context.clone(),
            }),
            callback: job.callback_url.as_ref().map(|url| CallbackView {
                url: url.clone(),
                state: job.callback_state.clone().unwrap_or_default(),
                attempts: job.callback_attempts,
                error: job.callback_error.clone(),
            }),
        }
    }
}

/// One page of jobs.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct JobPage {
    /// The jobs, oldest first.
    pub jobs: Vec<JobView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// Filters of `GET /v1/jobs`.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Only jobs in this state.
    pub state: Option<String>,
    /// Only jobs of this batch.
    pub batch: Option<String>,
    /// From `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    pub limit: Option<u32>,
}

/// The result of a succeeded job.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ResultView {
    /// The job's id.
    pub id: String,
    /// `succeeded` or `rejected`.
    #[schema(value_type = String)]
    pub state: JobState,
    /// The manifest row (succeeded) or the rejection row (rejected).
    #[schema(value_type = Object)]
    pub row: Value,
    /// Where to download the standardised audio (succeeded only).
    pub audio_url: Option<String>,
}

/// `POST /v1/dead-letters/replay`: which dead letters to replay.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayFilter {
    /// Only dead letters of this batch; every dead letter when absent.
    pub batch_id: Option<String>,
}

/// How many dead letters a replay moved.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReplayCount {
    /// Jobs put back in the queue.
    pub replayed: u64,
}

/// One audit log entry.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AuditView {
    /// RFC 3339.
    pub at: String,
    /// The API key id, or `cli`.
    pub actor: String,
    /// `replay` or `purge`.
    pub action: String,
    /// The job.
    pub job_id: String,
    /// The job's last error and the filter used.
    #[schema(value_type = Object)]
    pub detail: Value,
}

impl From<&AuditEntry> for AuditView {
    fn from(entry: &AuditEntry) -> Self {
        AuditView {
            at: rfc3339(entry.at),
            actor: entry.actor.clone(),
            action: entry.action.clone(),
            job_id: entry.job_id.clone(),
            detail: entry.detail.clone(),
        }
    }
}

/// `GET /readyz` and `GET /healthz`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Health {
    /// `ok`, or what is wrong.
    pub status: String,
    /// Each check and its outcome.
    #[schema(value_type = Object)]
    pub checks: Value,
}
