//! The HTTP API: routes, their handlers and the OpenAPI document generated from them.
//!
//! Every handler checks the caller's key and scope first, goes to the database only through the
//! database circuit breaker with a timeout, and answers errors as problem details.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde_json::{Map, Value, json};
use speechmill_queue::{ApiKeyRecord, JobQueue, JobState, KeyStore, ListQuery, NewJob, QueueError};
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use crate::auth::{Caller, KeyHasher, Scope, bearer_key, check_scope};
use crate::breaker::{Breaker, BreakerView};
use crate::callbacks::check_url;
use crate::error::{ApiError, Problem};
use crate::model::{
    AuditView, BatchRequest, BatchView, Health, JobPage, JobPayload, JobSource, JobView, ListParams, PathJobRequest,
    ReplayCount, ReplayFilter, ResultView,
};
use crate::storage::{InputRoots, Storage, StorageError, check_object_key};
use crate::telemetry;

/// Limits on what clients may send.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest accepted upload.
    pub max_upload_bytes: u64,
    /// Unfinished jobs (queued, retrying, running) above which submissions get 429.
    pub max_backlog: u64,
    /// Most jobs in one batch.
    pub max_batch_jobs: usize,
    /// Longest wait for one database call.
    pub database_timeout: Duration,
    /// Hosts that `callback_url` may name; none: callbacks are refused.
    pub callback_hosts: Vec<String>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_upload_bytes: 512 * 1024 * 1024,
            max_backlog: 100_000,
            max_batch_jobs: 10_000,
            database_timeout: Duration::from_secs(5),
            callback_hosts: Vec::new(),
        }
    }
}

/// The breakers of the service's dependencies.
#[derive(Debug)]
pub struct Breakers {
    /// Around every database call.
    pub database: Arc<Breaker>,
    /// Around uploads and output reads.
    pub storage: Arc<Breaker>,
    /// Around callback deliveries.
    pub callbacks: Arc<Breaker>,
}

/// The backlog size, read from the database at most once per refresh interval so that
/// submissions do not each count the queue.
#[derive(Debug, Default)]
struct BacklogCache {
    /// (when it was read, unfinished jobs); written by whichever request finds it stale.
    value: std::sync::Mutex<Option<(Instant, u64)>>,
}

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The job queue.
    pub queue: Arc<dyn JobQueue>,
    /// The API keys.
    pub keys: Arc<dyn KeyStore>,
    /// Hashes presented keys.
    pub hasher: Arc<KeyHasher>,
    /// Uploads and outputs, behind the storage breaker.
    pub storage: Storage,
    /// Where path submissions may point.
    pub roots: Arc<InputRoots>,
    /// Client limits.
    pub limits: Arc<Limits>,
    /// Dependency breakers.
    pub breakers: Arc<Breakers>,
    /// Cancelled when shutdown starts: readiness turns false and intake stops.
    pub shutting_down: CancellationToken,
    /// Cached backlog size.
    backlog: Arc<BacklogCache>,
    /// Recently seen keys by hash, so a request does not read the key table every time.
    keys_seen: Arc<KeyCache>,
}

/// How long a key found in the store is trusted without reading it again: a revocation takes
/// effect on every node within this time.
pub const KEY_CACHE_SECONDS: u64 = 5;

/// Keys found recently, by hash (never the key itself). Misses are not cached, so random keys
/// cannot fill it; it is cleared when it reaches its size limit.
#[derive(Debug, Default)]
struct KeyCache {
    /// hash -> (when it was read, the stored key); written by requests that miss.
    entries: std::sync::Mutex<std::collections::HashMap<String, (Instant, ApiKeyRecord)>>,
}

impl KeyCache {
    const MAX_ENTRIES: usize = 10_000;

    fn get(&self, hash: &str) -> Option<ApiKeyRecord> {
        let entries = self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        entries
            .get(hash)
            .filter(|(at, _)| at.elapsed() < Duration::from_secs(KEY_CACHE_SECONDS))
            .map(|(_, record)| record.clone())
    }

    fn put(&self, hash: String, record: ApiKeyRecord) {
        let mut entries = self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if entries.len() >= Self::MAX_ENTRIES {
            entries.clear();
        }
        entries.insert(hash, (Instant::now(), record));
    }
}

impl AppState {
    /// Assembles the state.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        queue: Arc<dyn JobQueue>,
        keys: Arc<dyn KeyStore>,
        hasher: Arc<KeyHasher>,
        storage: Storage,
        roots: InputRoots,
        limits: Limits,
        breakers: Breakers,
        shutting_down: CancellationToken,
    ) -> Self {
        AppState {
            queue,
            keys,
            hasher,
            storage,
            roots: Arc::new(roots),
            limits: Arc::new(limits),
            breakers: Arc::new(breakers),
            shutting_down,
            backlog: Arc::default(),
            keys_seen: Arc::default(),
        }
    }

    /// Runs a database call through the breaker, with a timeout.
    async fn db<T>(&self, call: impl Future<Output = Result<T, QueueError>>) -> Result<T, ApiError> {
        let breaker = &self.breakers.database;
        breaker.allow().map_err(|wait| ApiError::Unavailable {
            what: "the database",
            retry_after_seconds: wait.as_secs().max(1),
        })?;
        match tokio::time::timeout(self.limits.database_timeout, call).await {
            Ok(result) => {
                breaker.record(!matches!(&result, Err(err) if err.is_transient()));
                result.map_err(ApiError::from)
            }
            Err(_) => {
                breaker.record(false);
                Err(ApiError::Unavailable { what: "the database", retry_after_seconds: 5 })
            }
        }
    }

    async fn caller(&self, headers: &HeaderMap, scope: Scope) -> Result<Caller, ApiError> {
        let hash = self.hasher.hash(bearer_key(headers)?);
        if let Some(record) = self.keys_seen.get(&hash) {
            return check_scope(Some(record), scope);
        }
        let record = self.db(self.keys.key_by_hash(&hash)).await?;
        if let Some(record) = &record {
            self.keys_seen.put(hash, record.clone());
        }
        check_scope(record, scope)
    }

    /// Refuses new work while shutting down or over the backlog limit.
    async fn admit(&self, adding: u64) -> Result<(), ApiError> {
        if self.shutting_down.is_cancelled() {
            return Err(ApiError::ShuttingDown);
        }
        let cached = *self.backlog.value.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let backlog = match cached {
            Some((at, value)) if at.elapsed() < Duration::from_millis(500) => value,
            _ => {
                let counts = self.db(self.queue.counts()).await?;
                let value = [JobState::Queued, JobState::Retrying, JobState::Running]
                    .iter()
                    .map(|state| counts.get(state).copied().unwrap_or(0))
                    .sum();
                *self.backlog.value.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) =
                    Some((Instant::now(), value));
                value
            }
        };
        if backlog + adding > self.limits.max_backlog {
            return Err(ApiError::Backlog { backlog, limit: self.limits.max_backlog, retry_after_seconds: 10 });
        }
        Ok(())
    }

    /// Counts newly created jobs into the cached backlog, so a burst cannot overshoot the limit
    /// between two reads of the real count.
    fn note_created(&self, created: u64) {
        let mut cached = self.backlog.value.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((_, value)) = cached.as_mut() {
            *value += created;
        }
    }

    /// Makes a client's idempotency key unique to its API key, so clients cannot collide.
    fn scoped_key(caller: &Caller, key: Option<&str>) -> Option<String> {
        key.map(|key| format!("{}:{key}", caller.key_id))
    }

    fn callback_url(&self, request: &PathJobRequest) -> Result<Option<String>, ApiError> {
        request.callback_url.as_deref().map(|url| check_url(url, &self.limits.callback_hosts)).transpose()
    }

    /// The payload of a JSON submission, its `path` confined to the input roots or its
    /// `object_key` checked (the object's existence is checked by the caller).
    fn path_payload(&self, request: &PathJobRequest) -> Result<JobPayload, ApiError> {
        let source = match (&request.path, &request.object_key) {
            (Some(path), None) => {
                let path = self.roots.resolve(path).map_err(|err| ApiError::PathRejected(err.to_string()))?;
                JobSource::Path { path: path.to_string_lossy().into_owned() }
            }
            (None, Some(key)) => {
                if !self.storage.is_object_store() {
                    return Err(ApiError::BadRequest(
                        "object_key needs object storage, and this service keeps its files on local disk; \
                         submit a path or an upload"
                            .into(),
                    ));
                }
                check_object_key(key).map_err(|err| ApiError::BadRequest(err.to_string()))?;
                JobSource::Object { key: key.clone() }
            }
            (Some(_), Some(_)) => return Err(ApiError::BadRequest("give either path or object_key, not both".into())),
            (None, None) => return Err(ApiError::BadRequest("the request names no path and no object_key".into())),
        };
        if let Some(format) = &request.raw_format {
            format
                .parse::<speechmill_audio::decode::RawFormat>()
                .map_err(|err| ApiError::BadRequest(format!("invalid raw_format {format:?}: {err}")))?;
        }
        Ok(JobPayload {
            source,
            metadata: request.metadata.clone(),
            raw_format: request.raw_format.clone(),
            traceparent: traceparent_here(),
        })
    }
}

/// The `traceparent` of the request being served, stored with the jobs it queues.
fn traceparent_here() -> Option<String> {
    telemetry::traces::traceparent_of(&tracing::Span::current())
}

/// Time since a stored timestamp (milliseconds since the epoch).
pub(crate) fn since(millis: speechmill_queue::Millis) -> Duration {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    now.saturating_sub(Duration::from_millis(millis.max(0) as u64))
}

/// The API's routes over `state`; testable without a socket.
pub fn router(state: AppState) -> Router {
    let upload_limit = usize::try_from(state.limits.max_upload_bytes).unwrap_or(usize::MAX).saturating_add(1 << 20);
    Router::new()
        .route("/v1/jobs", post(submit_job).layer(DefaultBodyLimit::max(upload_limit)).get(list_jobs))
        .route("/v1/jobs/{id}", get(get_job).delete(cancel_job))
        .route("/v1/jobs/{id}/result", get(get_result))
        .route("/v1/jobs/{id}/result/audio", get(get_result_audio))
        .route("/v1/batches", post(submit_batch).layer(DefaultBodyLimit::max(64 << 20)))
        .route("/v1/dead-letters", get(list_dead_letters))
        .route("/v1/dead-letters/replay", post(replay_dead_letters))
        .route("/v1/dead-letters/{id}", delete(purge_dead_letter))
        .route("/v1/dead-letters/{id}/replay", post(replay_dead_letter))
        .route("/v1/audit-log", get(audit_log))
        .route("/v1/breakers", get(breakers))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/openapi.json", get(openapi_json))
        .route_layer(axum::middleware::from_fn(crate::telemetry::http::remember_route))
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .with_state(state)
        .layer(axum::middleware::from_fn(crate::telemetry::http::observe))
}

fn job_response(status: StatusCode, view: JobView) -> Response {
    let location = HeaderValue::from_str(&format!("/v1/jobs/{}", view.id)).ok();
    let mut response = (status, Json(view)).into_response();
    if let Some(location) = location {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

/// The multipart form of `POST /v1/jobs`.
#[derive(ToSchema)]
#[allow(dead_code)]
struct UploadForm {
    /// The audio file.
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
    /// JSON object carried through to the result.
    metadata: Option<String>,
    /// How to read headerless PCM: `ENCODING,RATE,CHANNELS`.
    raw_format: Option<String>,
    /// POSTed the job's JSON once it is final; only to the service's allowed hosts.
    callback_url: Option<String>,
}

/// Submits one clip, as a multipart upload (field `file`), or as JSON naming a path under an
/// input root (`path`) or, with object storage configured, an existing object (`object_key`).
#[utoipa::path(
    post, path = "/v1/jobs", tag = "jobs",
    params(("Idempotency-Key" = Option<String>, Header, description = "a repeated key returns the first job (200)")),
    request_body(content(
        (PathJobRequest = "application/json"),
        (UploadForm = "multipart/form-data"),
    )),
    responses(
        (status = 201, description = "job created", body = JobView),
        (status = 200, description = "a job with this idempotency key exists", body = JobView),
        (status = 400, description = "bad request, path outside the input roots, or object_key invalid, missing or given without object storage", body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "upload over max_upload_bytes", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "backlog over its limit (Retry-After)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "database or storage unavailable, or shutting down (Retry-After)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])),
)]
async fn submit_job(State(state): State<AppState>, headers: HeaderMap, request: Request) -> Result<Response, ApiError> {
    let caller = state.caller(&headers, Scope::Submit).await?;
    state.admit(1).await?;
    let idempotency_key = headers.get("idempotency-key").and_then(|value| value.to_str().ok()).map(str::to_string);
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|value| value.to_str().ok()).unwrap_or_default();
    let (payload, upload, callback_url) = if content_type.starts_with("multipart/form-data") {
        let multipart = Multipart::from_request(request, &state)
            .await
            .map_err(|rejection| ApiError::BadRequest(rejection.body_text()))?;
        let (payload, stored, callback_url) = receive_upload(&state, multipart).await?;
        (payload, Some(stored), callback_url)
    } else {
        let Json(body) = Json::<PathJobRequest>::from_request(request, &state)
            .await
            .map_err(|rejection| ApiError::BadRequest(rejection.body_text()))?;
        let callback_url = state.callback_url(&body)?;
        let payload = state.path_payload(&body)?;
        if let JobSource::Object { key } = &payload.source
            && !state.storage.exists(key).await?
        {
            return Err(ApiError::BadRequest(format!("no object {key:?} in the service's object storage")));
        }
        (payload, None, callback_url)
    };
    let payload_source = payload.source.clone();
    let job = NewJob {
        payload: serde_json::to_value(&payload).map_err(|err| ApiError::Internal(err.to_string()))?,
        batch_id: None,
        idempotency_key: AppState::scoped_key(&caller, idempotency_key.as_deref()),
        max_attempts: None,
        callback_url,
    };
    let enqueued = match state.db(state.queue.enqueue(job)).await {
        Ok(enqueued) => enqueued,
        Err(err) => {
            if let Some(stored) = &upload {
                state.storage.remove(stored).await;
            }
            return Err(err);
        }
    };
    if enqueued.created {
        state.note_created(1);
        let source = match &payload_source {
            JobSource::Upload { .. } => "upload",
            JobSource::Path { .. } => "path",
            JobSource::Object { .. } => "object",
        };
        metrics::counter!(telemetry::metrics::JOBS_SUBMITTED, "source" => source).increment(1);
    }
    if !enqueued.created
        && let Some(stored) = &upload
    {
        // The first submission with this key already holds its own copy.
        state.storage.remove(stored).await;
    }
    let status = if enqueued.created { StatusCode::CREATED } else { StatusCode::OK };
    Ok(job_response(status, JobView::from(&enqueued.job)))
}

/// Streams the `file` field to disk (synced before the job is enqueued) and reads the others.
async fn receive_upload(
    state: &AppState,
    mut multipart: Multipart,
) -> Result<(JobPayload, String, Option<String>), ApiError> {
    let mut metadata = Map::new();
    let mut raw_format = None;
    let mut callback_url = None;
    let mut stored: Option<(String, String)> = None;
    let limit = state.limits.max_upload_bytes;
    let field_error = |err: axum::extract::multipart::MultipartError| {
        if err.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge(limit)
        } else {
            ApiError::BadRequest(format!("unreadable multipart body: {}", err.body_text()))
        }
    };
    let outcome: Result<(), ApiError> = async {
        while let Some(mut field) = multipart.next_field().await.map_err(field_error)? {
            match field.name().unwrap_or_default() {
                "file" => {
                    if stored.is_some() {
                        return Err(ApiError::BadRequest("more than one file field".into()));
                    }
                    let filename = field.file_name().unwrap_or("upload").to_string();
                    if let Some(wait) = state.breakers.storage.refusing_for() {
                        return Err(ApiError::Unavailable {
                            what: "storage",
                            retry_after_seconds: wait.as_secs().max(1),
                        });
                    }
                    let (partial, name) = state.storage.new_upload();
                    let local_error = |err: std::io::Error| {
                        state.breakers.storage.record(false);
                        tracing::error!(error = %err, "cannot write an upload to the data folder");
                        ApiError::Unavailable { what: "storage", retry_after_seconds: 5 }
                    };
                    let received: Result<(), ApiError> = async {
                        let mut file = tokio::fs::File::create(&partial).await.map_err(local_error)?;
                        let mut written: u64 = 0;
                        while let Some(chunk) = field.chunk().await.map_err(field_error)? {
                            written += chunk.len() as u64;
                            if written > limit {
                                return Err(ApiError::TooLarge(limit));
                            }
                            file.write_all(&chunk).await.map_err(local_error)?;
                        }
                        file.sync_all().await.map_err(local_error)
                    }
                    .await;
                    if let Err(err) = received {
                        let _ = tokio::fs::remove_file(&partial).await;
                        return Err(err);
                    }
                    // Stored (renamed into place, or PUT as an object) before the job is
                    // enqueued: a 201 means the upload is durable.
                    if let Err(err) = state.storage.put_file(&name, &partial).await {
                        let _ = tokio::fs::remove_file(&partial).await;
                        tracing::error!(error = %err, "cannot store an upload");
                        return Err(ApiError::from(err));
                    }
                    stored = Some((name, filename));
                }
                "metadata" => {
                    let text = field.text().await.map_err(field_error)?;
                    match serde_json::from_str::<Value>(&text) {
                        Ok(Value::Object(object)) => metadata = object,
                        _ => return Err(ApiError::BadRequest("metadata must be a JSON object".into())),
                    }
                }
                "callback_url" => {
                    let text = field.text().await.map_err(field_error)?;
                    callback_url = Some(check_url(&text, &state.limits.callback_hosts)?);
                }
                "raw_format" => {
                    let text = field.text().await.map_err(field_error)?;
                    text.parse::<speechmill_audio::decode::RawFormat>()
                        .map_err(|err| ApiError::BadRequest(format!("invalid raw_format {text:?}: {err}")))?;
                    raw_format = Some(text);
                }
                other => return Err(ApiError::BadRequest(format!("unknown form field {other:?}"))),
            }
        }
        Ok(())
    }
    .await;
    if let Err(err) = outcome {
        if let Some((name, _)) = &stored {
            state.storage.remove(name).await;
        }
        return Err(err);
    }
    let Some((name, filename)) = stored else {
        return Err(ApiError::BadRequest("the multipart body has no file field".into()));
    };
    let payload = JobPayload {
        source: JobSource::Upload { stored: name.clone(), filename },
        metadata,
        raw_format,
        traceparent: traceparent_here(),
    };
    Ok((payload, name, callback_url))
}

/// Submits many path jobs at once, all or none.
#[utoipa::path(
    post, path = "/v1/batches", tag = "jobs", request_body = BatchRequest,
    responses(
        (status = 201, body = BatchView),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 429, body = Problem, content_type = "application/problem+json"),
        (status = 503, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])),
)]
async fn submit_batch(
    State(state): State<AppState>,
    headers: HeaderMap,
    request: Request,
) -> Result<Response, ApiError> {
    let caller = state.caller(&headers, Scope::Submit).await?;
    let Json(batch) = Json::<BatchRequest>::from_request(request, &state)
        .await
        .map_err(|rejection| ApiError::BadRequest(rejection.body_text()))?;
    if batch.jobs.is_empty() || batch.jobs.len() > state.limits.max_batch_jobs {
        return Err(ApiError::BadRequest(format!(
            "a batch holds 1 to {} jobs, not {}",
            state.limits.max_batch_jobs,
            batch.jobs.len()
        )));
    }
    state.admit(batch.jobs.len() as u64).await?;
    let batch_id = uuid::Uuid::now_v7().to_string();
    let mut jobs = Vec::with_capacity(batch.jobs.len());
    for (index, request) in batch.jobs.iter().enumerate() {
        let payload = state.path_payload(request).map_err(|err| match err {
            ApiError::PathRejected(detail) => ApiError::PathRejected(format!("jobs[{index}]: {detail}")),
            ApiError::BadRequest(detail) => ApiError::BadRequest(format!("jobs[{index}]: {detail}")),
            other => other,
        })?;
        jobs.push(NewJob {
            payload: serde_json::to_value(&payload).map_err(|err| ApiError::Internal(err.to_string()))?,
            batch_id: Some(batch_id.clone()),
            idempotency_key: AppState::scoped_key(&caller, request.idempotency_key.as_deref()),
            max_attempts: None,
            callback_url: state.callback_url(request).map_err(|err| match err {
                ApiError::BadRequest(detail) => ApiError::BadRequest(format!("jobs[{index}]: {detail}")),
                other => other,
            })?,
        });
    }
    let enqueued = state.db(state.queue.enqueue_many(jobs)).await?;
    let created = enqueued.iter().filter(|answer| answer.created).count() as u64;
    state.note_created(created);
    metrics::counter!(telemetry::metrics::JOBS_SUBMITTED, "source" => "path").increment(created);
    let view = BatchView { batch_id, jobs: enqueued.iter().map(|answer| JobView::from(&answer.job)).collect() };
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

/// One job: state, attempts, timestamps, and the result or error once final.
#[utoipa::path(
    get, path = "/v1/jobs/{id}", tag = "jobs", params(("id" = String, Path)),
    responses(
        (status = 200, body = JobView),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])),
)]
async fn get_job(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<JobView>, ApiError> {
    state.caller(&headers, Scope::Read).await?;
    let job = state.db(state.queue.get(&id)).await?.ok_or_else(|| ApiError::NotFound(format!("no job {id}")))?;
    Ok(Json(JobView::from(&job)))
}

fn list_query(params: &ListParams, state: Option<JobState>) -> Result<ListQuery, ApiError> {
    let state = match (state, &params.state) {
        (Some(state), _) => Some(state),
        (None, Some(text)) => Some(text.parse::<JobState>().map_err(ApiError::BadRequest)?),
        (None, None) => None,
    };
    Ok(ListQuery {
        state,
        batch_id: params.batch.clone(),
        cursor: params.cursor.clone(),
        limit: params.limit.unwrap_or(100),
    })
}

/// Jobs, oldest first, filtered by state and batch, one page at a time.
#[utoipa::path(
    get, path = "/v1/jobs", tag = "jobs", params(ListParams),
    responses(
        (status = 200, body = JobPage),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])),
)]
async fn list_jobs(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(params): Query<ListParams>,
) -> Result<Json<JobPage>, ApiError> {
    state.caller(&headers, Scope::Read).await?;
    let page = state.db(state.queue.list(&list_query(&params, None)?)).await?;
    Ok(Json(JobPage { jobs: page.jobs.iter().map(JobView::from).collect(), next_cursor: page.next_cursor }))
}

/// The result of a finished job: the manifest row (and where to download the audio) or the
/// rejection.
#[utoipa::path(
    get, path = "/v1/jobs/{id}/result", tag = "jobs", params(("id" = String, Path)),
    responses(
        (status = 200, body = ResultView),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "the job has no result (not finished, dead or cancelled)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])),
)]
async fn get_result(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<ResultView>, ApiError> {
    state.caller(&headers, Scope::Read).await?;
    let job = state.db(state.queue.get(&id)).await?.ok_or_else(|| ApiError::NotFound(format!("no job {id}")))?;
    let row = match (job.state, &job.result) {
        (JobState::Succeeded | JobState::Rejected, Some(row)) => row.clone(),
        _ => return Err(ApiError::Conflict(format!("job {id} is {} and has no result", job.state.as_str()))),
    };
    let audio_url = (job.state == JobState::Succeeded).then(|| format!("/v1/jobs/{id}/result/audio"));
    Ok(Json(ResultView { id, state: job.state, row, audio_url }))
}

/// The standardised audio of a succeeded job.
#[utoipa::path(
    get, path = "/v1/jobs/{id}/result/audio", tag = "jobs", params(("id" = String, Path)),
    responses(
        (status = 200, description = "FLAC or WAV bytes", content_type = "audio/flac"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])),
)]
async fn get_result_audio(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    state.caller(&headers, Scope::Read).await?;
    let job = state.db(state.queue.get(&id)).await?.ok_or_else(|| ApiError::NotFound(format!("no job {id}")))?;
    if job.state != JobState::Succeeded {
        return Err(ApiError::Conflict(format!("job {id} is {} and has no audio", job.state.as_str())));
    }
    let relative =
        job.result.as_ref().and_then(|row| row.get("audio_path")).and_then(Value::as_str).unwrap_or_default();
    if !relative.starts_with("audio/") || relative.contains("..") {
        return Err(ApiError::Internal(format!("job {id} has an unexpected audio path {relative:?}")));
    }
    let stream = match state.storage.read(relative).await {
        Ok(stream) => stream,
        Err(StorageError::NotFound(_)) => {
            return Err(ApiError::Internal(format!("job {id} succeeded but its audio {relative:?} is missing")));
        }
        Err(err) => return Err(ApiError::from(err)),
    };
    let content_type = if relative.ends_with(".wav") { "audio/wav" } else { "audio/flac" };
    Ok(([(header::CONTENT_TYPE, content_type)], Body::from_stream(stream)).into_response())
}

/// Cancels a job that has not started.
#[utoipa::path(
    delete, path = "/v1/jobs/{id}", tag = "jobs", params(("id" = String, Path)),
    responses(
        (status = 200, body = JobView),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "the job has started or finished", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])),
)]
async fn cancel_job(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<JobView>, ApiError> {
    state.caller(&headers, Scope::Submit).await?;
    let job = state.db(state.queue.cancel(&id)).await?;
    telemetry::metrics::record_finished(job.state, since(job.created_at));
    Ok(Json(JobView::from(&job)))
}

/// Dead letters: jobs that failed every attempt, with their last error and attempts.
#[utoipa::path(
    get, path = "/v1/dead-letters", tag = "dead letters", params(ListParams),
    responses(
        (status = 200, body = JobPage),
        (status = 403, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])),
)]
async fn list_dead_letters(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(params): Query<ListParams>,
) -> Result<Json<JobPage>, ApiError> {
    state.caller(&headers, Scope::Admin).await?;
    let page = state.db(state.queue.list(&list_query(&params, Some(JobState::Dead))?)).await?;
    Ok(Json(JobPage { jobs: page.jobs.iter().map(JobView::from).collect(), next_cursor: page.next_cursor }))
}

/// Puts one dead letter back in the queue with fresh attempts (recorded in the audit log).
#[utoipa::path(
    post, path = "/v1/dead-letters/{id}/replay", tag = "dead letters", params(("id" = String, Path)),
    responses(
        (status = 200, body = JobView),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "the job is not dead", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])),
)]
async fn replay_dead_letter(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<JobView>, ApiError> {
    let caller = state.caller(&headers, Scope::Admin).await?;
    let job = state.db(state.queue.replay_dead(&id, &caller.key_id)).await?;
    Ok(Json(JobView::from(&job)))
}

/// Replays every dead letter, or those of one batch (recorded in the audit log).
#[utoipa::path(
    post, path = "/v1/dead-letters/replay", tag = "dead letters", request_body = ReplayFilter,
    responses(
        (status = 200, body = ReplayCount),
        (status = 403, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])),
)]
async fn replay_dead_letters(
    State(state): State<AppState>,
    headers: HeaderMap,
    request: Request,
) -> Result<Json<ReplayCount>, ApiError> {
    let caller = state.caller(&headers, Scope::Admin).await?;
    let Json(filter) = Json::<ReplayFilter>::from_request(request, &state)
        .await
        .map_err(|rejection| ApiError::BadRequest(rejection.body_text()))?;
    let replayed = state.db(state.queue.replay_dead_where(filter.batch_id.as_deref(), &caller.key_id)).await?;
    Ok(Json(ReplayCount { replayed }))
}

/// Deletes a dead letter (recorded in the audit log).
#[utoipa::path(
    delete, path = "/v1/dead-letters/{id}", tag = "dead letters", params(("id" = String, Path)),
    responses(
        (status = 204, description = "purged"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "the job is not dead", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = [])),
)]
async fn purge_dead_letter(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let caller = state.caller(&headers, Scope::Admin).await?;
    state.db(state.queue.purge_dead(&id, &caller.key_id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The most recent replays and purges of dead letters, newest first.
#[utoipa::path(
    get, path = "/v1/audit-log", tag = "dead letters",
    responses((status = 200, body = Vec<AuditView>), (status = 403, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])),
)]
async fn audit_log(State(state): State<AppState>, headers: HeaderMap) -> Result<Json<Vec<AuditView>>, ApiError> {
    state.caller(&headers, Scope::Admin).await?;
    let entries = state.db(state.queue.audit_log(1000)).await?;
    Ok(Json(entries.iter().map(AuditView::from).collect()))
}

/// The circuit breakers and their states.
#[utoipa::path(
    get, path = "/v1/breakers", tag = "operations",
    responses((status = 200, body = Vec<BreakerView>)),
    security(("bearer" = [])),
)]
async fn breakers(State(state): State<AppState>, headers: HeaderMap) -> Result<Json<Vec<BreakerView>>, ApiError> {
    state.caller(&headers, Scope::Read).await?;
    Ok(Json(vec![state.breakers.database.view(), state.breakers.storage.view(), state.breakers.callbacks.view()]))
}

/// The process lives (no dependency is checked).
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, body = Health)))]
async fn healthz() -> Json<Health> {
    Json(Health { status: "ok".into(), checks: json!({}) })
}

/// Ready for traffic: not shutting down, database and storage reachable.
#[utoipa::path(
    get, path = "/readyz", tag = "operations",
    responses((status = 200, body = Health), (status = 503, description = "not ready", body = Health)),
)]
async fn readyz(State(state): State<AppState>) -> Response {
    let shutting_down = state.shutting_down.is_cancelled();
    // Through the breaker: an open breaker answers at once, and once its open time has passed
    // this probe is one of the trial calls that close it again, even with no other traffic.
    let database = match state.db(state.queue.ping()).await {
        Ok(()) => "ok".to_string(),
        Err(ApiError::Unavailable { .. }) => "unavailable".to_string(),
        Err(_) => "error".to_string(),
    };
    // Through the storage breaker too: a cheap list (object storage) or stat (data folder).
    let storage = match state.storage.check().await {
        Ok(()) => "ok".to_string(),
        Err(err) => {
            tracing::debug!(error = %err, "storage not ready");
            "unavailable".to_string()
        }
    };
    let ready = !shutting_down && database == "ok" && storage == "ok";
    let checks = json!({
        "shutting_down": shutting_down,
        "database": database,
        "storage": storage,
        "database_breaker": state.breakers.database.view().state,
        "storage_breaker": state.breakers.storage.view().state,
    });
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(Health { status: if ready { "ok".into() } else { "not ready".into() }, checks })).into_response()
}

/// The OpenAPI 3.1 document of this API.
#[utoipa::path(get, path = "/openapi.json", tag = "operations", responses((status = 200, description = "OpenAPI 3.1 JSON")))]
async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

/// Adds the bearer-key security scheme.
struct BearerKeys;

impl Modify for BearerKeys {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An API key from `speechmill keys create`, with scopes submit, read or admin"))
                    .build(),
            ),
        );
    }
}

/// The API's OpenAPI document, generated from the handlers and types above.
#[derive(OpenApi)]
#[openapi(
    info(title = "speechmill", description = "Speech clips in, standardised and quality-gated clips out. Errors are RFC 9457 problem details whose `type` is stable."),
    paths(
        submit_job, submit_batch, list_jobs, get_job, cancel_job, get_result, get_result_audio,
        list_dead_letters, replay_dead_letter, replay_dead_letters, purge_dead_letter, audit_log,
        breakers, healthz, readyz, openapi_json,
    ),
    components(schemas(Problem, JobView, crate::model::CallbackView, JobPage, BatchView, BatchRequest, PathJobRequest, UploadForm, ResultView, ReplayFilter, ReplayCount, AuditView, BreakerView, Health)),
    modifiers(&BearerKeys),
)]
pub struct ApiDoc;
