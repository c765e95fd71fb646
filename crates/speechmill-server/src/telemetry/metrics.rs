//! Prometheus metrics: every name speechmill exports, its description and buckets, the
//! recorder behind the `metrics` facade, the `/metrics` endpoint on the internal port, and the
//! sampler that turns the queue's and the machine's state into gauges.
//!
//! Every metric is listed in `docs/instrumentation.md`; a test fails when a scrape shows one
//! that the document does not. Labels take values from small fixed sets (routes as templates,
//! status classes, outcomes, reasons), never a file name or a job id.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use metrics::{Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
pub use metrics_exporter_prometheus::PrometheusHandle;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use speechmill_pipeline::clip::{EnhancementOutcome, Measurements, Processed, Rejection};
use speechmill_queue::{JobQueue, JobState};
use tokio_util::sync::CancellationToken;

use crate::breaker::{Breaker, BreakerState};

/// `speechmill_build_info`.
pub const BUILD_INFO: &str = "speechmill_build_info";
/// `speechmill_http_requests_total`.
pub const HTTP_REQUESTS: &str = "speechmill_http_requests_total";
/// `speechmill_http_request_duration_seconds`.
pub const HTTP_DURATION: &str = "speechmill_http_request_duration_seconds";
/// `speechmill_http_requests_in_flight`.
pub const HTTP_IN_FLIGHT: &str = "speechmill_http_requests_in_flight";
/// `speechmill_jobs_submitted_total`.
pub const JOBS_SUBMITTED: &str = "speechmill_jobs_submitted_total";
/// `speechmill_jobs_claimed_total`.
pub const JOBS_CLAIMED: &str = "speechmill_jobs_claimed_total";
/// `speechmill_jobs_finished_total`.
pub const JOBS_FINISHED: &str = "speechmill_jobs_finished_total";
/// `speechmill_job_retries_total`.
pub const JOB_RETRIES: &str = "speechmill_job_retries_total";
/// `speechmill_job_end_to_end_seconds`.
pub const JOB_END_TO_END: &str = "speechmill_job_end_to_end_seconds";
/// `speechmill_queue_jobs`.
pub const QUEUE_JOBS: &str = "speechmill_queue_jobs";
/// `speechmill_queue_oldest_job_age_seconds`.
pub const QUEUE_OLDEST_AGE: &str = "speechmill_queue_oldest_job_age_seconds";
/// `speechmill_workers`.
pub const WORKERS: &str = "speechmill_workers";
/// `speechmill_workers_busy`.
pub const WORKERS_BUSY: &str = "speechmill_workers_busy";
/// `speechmill_breaker_state`.
pub const BREAKER_STATE: &str = "speechmill_breaker_state";
/// `speechmill_callbacks_total`.
pub const CALLBACKS: &str = "speechmill_callbacks_total";
/// `speechmill_clips_total`.
pub const CLIPS: &str = "speechmill_clips_total";
/// `speechmill_clip_rejections_total`.
pub const CLIP_REJECTIONS: &str = "speechmill_clip_rejections_total";
/// `speechmill_stage_duration_seconds`.
pub const STAGE_DURATION: &str = "speechmill_stage_duration_seconds";
/// `speechmill_clip_processing_seconds`.
pub const CLIP_PROCESSING: &str = "speechmill_clip_processing_seconds";
/// `speechmill_audio_input_seconds_total`.
pub const AUDIO_INPUT: &str = "speechmill_audio_input_seconds_total";
/// `speechmill_audio_output_seconds_total`.
pub const AUDIO_OUTPUT: &str = "speechmill_audio_output_seconds_total";
/// `speechmill_clip_realtime_factor`.
pub const CLIP_REALTIME_FACTOR: &str = "speechmill_clip_realtime_factor";
/// `speechmill_clip_snr_decibels`.
pub const CLIP_SNR: &str = "speechmill_clip_snr_decibels";
/// `speechmill_clip_speech_ratio`.
pub const CLIP_SPEECH_RATIO: &str = "speechmill_clip_speech_ratio";
/// `speechmill_clip_loudness_lufs`.
pub const CLIP_LOUDNESS: &str = "speechmill_clip_loudness_lufs";
/// `speechmill_enhancement_failures_total`.
pub const ENHANCEMENT_FAILURES: &str = "speechmill_enhancement_failures_total";
/// `speechmill_cache_lookups_total`.
pub const CACHE_LOOKUPS: &str = "speechmill_cache_lookups_total";
/// `speechmill_storage_free_bytes`.
pub const STORAGE_FREE: &str = "speechmill_storage_free_bytes";
/// `speechmill_storage_capacity_bytes`.
pub const STORAGE_CAPACITY: &str = "speechmill_storage_capacity_bytes";
/// `speechmill_log_events_suppressed_total`.
pub const LOG_SUPPRESSED: &str = "speechmill_log_events_suppressed_total";

const HTTP_BUCKETS: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
const END_TO_END_BUCKETS: &[f64] = &[1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0];
const STAGE_BUCKETS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
const REALTIME_BUCKETS: &[f64] = &[10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0, 10000.0];
const SNR_BUCKETS: &[f64] = &[-5.0, 0.0, 5.0, 10.0, 15.0, 20.0, 25.0, 30.0, 40.0, 50.0];
const RATIO_BUCKETS: &[f64] = &[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0];
const LOUDNESS_BUCKETS: &[f64] = &[-60.0, -50.0, -40.0, -35.0, -30.0, -27.0, -24.0, -21.0, -18.0, -15.0, -10.0];

/// The final outcomes of jobs, as `outcome` label values.
pub const JOB_OUTCOMES: [&str; 4] = ["succeeded", "rejected", "dead", "cancelled"];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process's Prometheus recorder (once; later calls return the same handle),
/// describes every metric and creates the series of fixed label sets at zero, so dashboards
/// and alerts see them before the first event.
pub fn install() -> Result<PrometheusHandle, String> {
    if let Some(handle) = HANDLE.get() {
        return Ok(handle.clone());
    }
    let buckets = [
        (HTTP_DURATION, HTTP_BUCKETS),
        (JOB_END_TO_END, END_TO_END_BUCKETS),
        (STAGE_DURATION, STAGE_BUCKETS),
        (CLIP_PROCESSING, STAGE_BUCKETS),
        (CLIP_REALTIME_FACTOR, REALTIME_BUCKETS),
        (CLIP_SNR, SNR_BUCKETS),
        (CLIP_SPEECH_RATIO, RATIO_BUCKETS),
        (CLIP_LOUDNESS, LOUDNESS_BUCKETS),
    ];
    let mut builder = PrometheusBuilder::new();
    for (name, values) in buckets {
        builder = builder.set_buckets_for_metric(Matcher::Full(name.into()), values).map_err(|err| err.to_string())?;
    }
    let recorder = builder.build_recorder();
    let handle = recorder.handle();
    // Another recorder may already be installed (a test process): then this handle sees
    // nothing, so refuse rather than export an empty page.
    metrics::set_global_recorder(recorder).map_err(|err| format!("cannot install the metrics recorder: {err}"))?;
    let handle = HANDLE.get_or_init(|| handle).clone();
    describe();
    initialise();
    Ok(handle)
}

/// The installed recorder's handle, if [`install`] ran.
pub fn handle() -> Option<PrometheusHandle> {
    HANDLE.get().cloned()
}

fn describe() {
    describe_gauge!(BUILD_INFO, "speechmill's version; always 1");
    describe_counter!(HTTP_REQUESTS, "API requests by route template, method and status class");
    describe_histogram!(HTTP_DURATION, Unit::Seconds, "API request duration by route, method and status class");
    describe_gauge!(HTTP_IN_FLIGHT, "API requests being served now");
    describe_counter!(JOBS_SUBMITTED, "new jobs accepted into the queue (not idempotent repeats) by source");
    describe_counter!(JOBS_CLAIMED, "jobs claimed by this process's workers");
    describe_counter!(JOBS_FINISHED, "jobs that reached a final state, by outcome");
    describe_counter!(JOB_RETRIES, "failed attempts that go back to the queue for another try, by failure kind");
    describe_histogram!(JOB_END_TO_END, Unit::Seconds, "time from submission to the final state, by outcome");
    describe_gauge!(QUEUE_JOBS, "jobs in the queue database by state (the same on every node sharing it)");
    describe_gauge!(QUEUE_OLDEST_AGE, Unit::Seconds, "age of the oldest queued or retrying job; 0 when none waits");
    describe_gauge!(WORKERS, "worker slots in this process");
    describe_gauge!(WORKERS_BUSY, "worker slots running a job now");
    describe_gauge!(BREAKER_STATE, "circuit breaker state by dependency: 0 closed, 1 half-open, 2 open");
    describe_counter!(CALLBACKS, "callback deliveries attempted, by outcome");
    describe_counter!(CLIPS, "clips through the pipeline, by outcome (accepted, rejected)");
    describe_counter!(CLIP_REJECTIONS, "rejected clips by reason code (docs/reasons.md)");
    describe_histogram!(STAGE_DURATION, Unit::Seconds, "time spent in each pipeline stage per clip");
    describe_histogram!(CLIP_PROCESSING, Unit::Seconds, "time to process one clip, all stages");
    describe_counter!(AUDIO_INPUT, Unit::Seconds, "seconds of audio decoded");
    describe_counter!(AUDIO_OUTPUT, Unit::Seconds, "seconds of standardised audio written");
    describe_histogram!(CLIP_REALTIME_FACTOR, "audio seconds processed per second of processing, per clip");
    describe_histogram!(CLIP_SNR, "estimated signal-to-noise ratio of processed clips, dB");
    describe_histogram!(CLIP_SPEECH_RATIO, "fraction of frames with speech in processed clips");
    describe_histogram!(CLIP_LOUDNESS, "integrated loudness of processed clips before normalisation, LUFS");
    describe_counter!(
        ENHANCEMENT_FAILURES,
        "clips whose optional enhancement failed or would have made them worse; delivered standardised"
    );
    describe_counter!(CACHE_LOOKUPS, "result cache lookups by result (hit, miss)");
    describe_gauge!(STORAGE_FREE, Unit::Bytes, "free bytes on the data folder's file system");
    describe_gauge!(STORAGE_CAPACITY, Unit::Bytes, "size of the data folder's file system");
    describe_counter!(LOG_SUPPRESSED, "repeated log events dropped by the rate limiter, by level");
}

fn initialise() {
    gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    for outcome in JOB_OUTCOMES {
        counter!(JOBS_FINISHED, "outcome" => outcome).absolute(0);
    }
    for kind in ["transient", "crash", "timeout"] {
        counter!(JOB_RETRIES, "kind" => kind).absolute(0);
    }
    for source in ["upload", "path"] {
        counter!(JOBS_SUBMITTED, "source" => source).absolute(0);
    }
    for outcome in ["accepted", "rejected"] {
        counter!(CLIPS, "outcome" => outcome).absolute(0);
    }
    for reason in speechmill_pipeline::Reason::ALL {
        counter!(CLIP_REJECTIONS, "reason" => reason.as_str()).absolute(0);
    }
    for outcome in ["delivered", "failed"] {
        counter!(CALLBACKS, "outcome" => outcome).absolute(0);
    }
    for result in ["hit", "miss"] {
        counter!(CACHE_LOOKUPS, "result" => result).absolute(0);
    }
    for level in ["warn", "error"] {
        counter!(LOG_SUPPRESSED, "level" => level).absolute(0);
    }
    counter!(JOBS_CLAIMED).absolute(0);
    counter!(AUDIO_INPUT).absolute(0);
    counter!(AUDIO_OUTPUT).absolute(0);
    counter!(ENHANCEMENT_FAILURES).absolute(0);
    gauge!(HTTP_IN_FLIGHT).set(0.0);
}

/// Milliseconds of audio counted so far into `speechmill_audio_input_seconds_total` and
/// `speechmill_audio_output_seconds_total`: the counters (integers) advance by the whole seconds
/// of these running totals, so short clips add up rather than round to nothing.
static INPUT_MILLIS: AtomicU64 = AtomicU64::new(0);
static OUTPUT_MILLIS: AtomicU64 = AtomicU64::new(0);

fn add_seconds(name: &'static str, total_millis: &AtomicU64, seconds: f64) {
    if !(seconds.is_finite() && seconds > 0.0) {
        return;
    }
    let millis = (seconds * 1000.0).round() as u64;
    let before = total_millis.fetch_add(millis, Ordering::Relaxed);
    let whole = (before + millis) / 1000 - before / 1000;
    if whole > 0 {
        counter!(name).increment(whole);
    }
}

/// Records one clip that went through the pipeline (service worker or batch job):
/// outcome, reason, audio seconds, real-time factor, quality distributions, and an accepted
/// clip delivered standardised because its enhancement failed or would have made it worse.
pub fn record_clip(result: Result<&Processed, &Rejection>, elapsed: Duration) {
    let measurements: &Measurements = match result {
        Ok(processed) => {
            counter!(CLIPS, "outcome" => "accepted").increment(1);
            if processed.measurements.enhancement.is_some_and(EnhancementOutcome::is_fallback) {
                counter!(ENHANCEMENT_FAILURES).increment(1);
            }
            if let (Some(samples), Some(rate)) =
                (processed.measurements.num_samples, processed.measurements.sample_rate)
            {
                add_seconds(AUDIO_OUTPUT, &OUTPUT_MILLIS, samples as f64 / f64::from(rate.max(1)));
            }
            &processed.measurements
        }
        Err(rejection) => {
            counter!(CLIPS, "outcome" => "rejected").increment(1);
            counter!(CLIP_REJECTIONS, "reason" => rejection.reason.as_str()).increment(1);
            &rejection.measurements
        }
    };
    let seconds = elapsed.as_secs_f64();
    histogram!(CLIP_PROCESSING).record(seconds);
    if let Some(duration) = measurements.duration_s {
        add_seconds(AUDIO_INPUT, &INPUT_MILLIS, duration);
        if seconds > 0.0 {
            histogram!(CLIP_REALTIME_FACTOR).record(duration / seconds);
        }
    }
    if let Some(snr) = measurements.snr_db {
        histogram!(CLIP_SNR).record(snr);
    }
    if let Some(ratio) = measurements.speech_ratio {
        histogram!(CLIP_SPEECH_RATIO).record(ratio);
    }
    if let Some(loudness) = measurements.loudness_lufs {
        histogram!(CLIP_LOUDNESS).record(loudness);
    }
}

/// Records how long a pipeline stage took for one clip.
pub fn record_stage(stage: &'static str, elapsed: Duration) {
    histogram!(STAGE_DURATION, "stage" => stage).record(elapsed.as_secs_f64());
}

/// Records a job reaching its final state `outcome`, `end_to_end` after it was submitted.
pub fn record_finished(outcome: JobState, end_to_end: Duration) {
    let outcome = outcome.as_str();
    counter!(JOBS_FINISHED, "outcome" => outcome).increment(1);
    histogram!(JOB_END_TO_END, "outcome" => outcome).record(end_to_end.as_secs_f64());
}

/// The numeric value of a breaker state in `speechmill_breaker_state`.
pub fn breaker_value(state: BreakerState) -> f64 {
    match state {
        BreakerState::Closed => 0.0,
        BreakerState::HalfOpen => 1.0,
        BreakerState::Open => 2.0,
    }
}

/// `GET /metrics` over `handle`.
pub fn router(handle: PrometheusHandle) -> Router {
    Router::new().route(
        "/metrics",
        get(move || {
            let handle = handle.clone();
            async move {
                ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], handle.render()).into_response()
            }
        }),
    )
}

/// Serves `/metrics` on `listener` until `stop` is cancelled.
pub async fn serve(
    listener: tokio::net::TcpListener,
    handle: PrometheusHandle,
    stop: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(handle)).with_graceful_shutdown(async move { stop.cancelled().await }).await
}

/// What the sampler reads every interval.
pub struct Sampled {
    /// The queue (for depth and oldest age); `None` in the batch job.
    pub queue: Option<Arc<dyn JobQueue>>,
    /// The breakers to export.
    pub breakers: Vec<Arc<Breaker>>,
    /// The data folder whose file system's free space is exported.
    pub data_dir: PathBuf,
}

/// Every `every` until `stop`: queue depth by state, age of the oldest waiting job, breaker
/// states, the data folder's free space; also drains histogram buckets into the exporter.
pub async fn run_sampler(sampled: Sampled, every: Duration, stop: CancellationToken) {
    loop {
        sample_once(&sampled).await;
        if let Some(handle) = handle() {
            handle.run_upkeep();
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// One reading of [`run_sampler`]'s gauges.
pub async fn sample_once(sampled: &Sampled) {
    for breaker in &sampled.breakers {
        let view = breaker.view();
        gauge!(BREAKER_STATE, "dependency" => view.name).set(breaker_value(view.state));
    }
    if let Ok(stats) = rustix::fs::statvfs(&sampled.data_dir) {
        let block = stats.f_frsize as f64;
        gauge!(STORAGE_FREE, "volume" => "data").set(stats.f_bavail as f64 * block);
        gauge!(STORAGE_CAPACITY, "volume" => "data").set(stats.f_blocks as f64 * block);
    }
    let Some(queue) = &sampled.queue else { return };
    let timeout = Duration::from_secs(5);
    if let Ok(Ok(counts)) = tokio::time::timeout(timeout, queue.counts()).await {
        for state in JobState::ALL {
            gauge!(QUEUE_JOBS, "state" => state.as_str()).set(counts.get(&state).copied().unwrap_or(0) as f64);
        }
    }
    if let Ok(Ok(oldest)) = tokio::time::timeout(timeout, queue.oldest_waiting()).await {
        let age = oldest.map_or(0.0, |created_at| {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |since| since.as_millis() as i64);
            (now - created_at).max(0) as f64 / 1000.0
        });
        gauge!(QUEUE_OLDEST_AGE).set(age);
    }
}
