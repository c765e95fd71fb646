//! `speechmill process`: lists the inputs, keeps the run state in SQLite, processes clips on
//! every core, and writes the dataset.

use std::collections::BTreeMap;
use std::fs;
use std::io::IsTerminal;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{Map, Value, json};
use speechmill_audio::decode::RawFormat;
use speechmill_pipeline::cache::{CacheUse, VERSION};
use speechmill_pipeline::clip::{ClipInput, Measurements, Rejection, process_clip};
use speechmill_pipeline::dataset::ParquetOptions;
use speechmill_pipeline::inputs::{InputClip, discover};
use speechmill_pipeline::output::{ClipRecord, OutputOptions, RunFacts, RunWriter, Summary};
use speechmill_pipeline::{PipelineConfig, Reason, Stage};
use speechmill_queue::batch::Finished;
use speechmill_queue::{BatchStore, JobRecord, JobSpec, JobState, ResultCacheStore, SqliteResultCache, SystemClock};
use tokio::sync::mpsc;

use crate::cli::ProcessArgs;
use speechmill_server::cache::ClipCache;
use speechmill_server::telemetry::{self, TelemetryGuard, TelemetrySettings};

use crate::config::Config;
use crate::exit;

/// The folder inside the output folder that holds the run state.
const STATE_DIR: &str = ".speechmill";
/// The folder inside the state folder for clips too long to hold in memory.
const SCRATCH_DIR: &str = "scratch";
/// Queued jobs read from the run state at a time to feed the workers.
const FEED_PAGE: u32 = 256;
/// Clips read back from the run state at a time when writing the dataset.
const FINISH_PAGE: u32 = 1000;
/// Results are committed to the run state in batches of at most this many clips...
const COMMIT_BATCH: usize = 64;
/// ...or after this long, whichever comes first.
const COMMIT_INTERVAL: Duration = Duration::from_millis(500);

/// Runs `speechmill process` and returns the exit code.
pub fn run(args: ProcessArgs) -> u8 {
    let config = match Config::load(Config::file_from(args.config.clone()).as_deref(), args.settings.overrides()) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("speechmill: {err:#}");
            return exit::USAGE;
        }
    };
    let telemetry = match init_telemetry(&config, args.metrics_listen.is_some()) {
        Ok(guard) => guard,
        Err(err) => {
            eprintln!("speechmill: {err:#}");
            return exit::USAGE;
        }
    };
    let clips = match discover(&args.inputs, args.settings.raw_format) {
        Ok(clips) => clips,
        Err(err) => {
            eprintln!("speechmill: {err}");
            return exit::USAGE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("speechmill: cannot start: {err}");
            return exit::FAILURE;
        }
    };
    let metrics_stop = tokio_util::sync::CancellationToken::new();
    if let Some(address) = args.metrics_listen
        && let Err(err) = runtime.block_on(start_metrics(address, &args.out, metrics_stop.clone()))
    {
        eprintln!("speechmill: {err:#}");
        return exit::FAILURE;
    }
    let code = match runtime.block_on(run_batch(&args, &config, clips)) {
        Ok(outcome) => outcome,
        Err(err) => {
            eprintln!("speechmill: {err:#}");
            if err.downcast_ref::<UsageError>().is_some() { exit::USAGE } else { exit::FAILURE }
        }
    };
    metrics_stop.cancel();
    telemetry.flush();
    code
}

/// Serves the run's metrics on `address` from the batch job's runtime until `stop`.
async fn start_metrics(
    address: std::net::SocketAddr,
    out: &Path,
    stop: tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    let handle = telemetry::metrics::install().map_err(anyhow::Error::msg)?;
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen for metrics on {address}"))?;
    eprintln!("speechmill: metrics on http://{}/metrics", listener.local_addr()?);
    fs::create_dir_all(out).with_context(|| format!("cannot create the output folder {}", out.display()))?;
    let sampled = telemetry::metrics::Sampled { queue: None, breakers: Vec::new(), data_dir: out.to_path_buf() };
    tokio::spawn(telemetry::metrics::run_sampler(sampled, Duration::from_secs(2), stop.clone()));
    tokio::spawn(telemetry::metrics::serve(listener, handle, stop));
    Ok(())
}

/// An error that is the user's to fix (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct UsageError(String);

fn init_telemetry(config: &Config, stage_metrics: bool) -> anyhow::Result<TelemetryGuard> {
    // The decoders' own log lines ("skipped 4 bytes of junk") name no file and are about
    // recoveries speechmill reports itself; they show only when asked for by target.
    let directives = if config.log.level.contains("symphonia") {
        config.log.level.clone()
    } else {
        format!("{},symphonia=error", config.log.level)
    };
    let mut settings = TelemetrySettings::new("speechmill-process");
    settings.log_filter = directives;
    settings.log_style = config.log.style(false);
    settings.mask_patterns = config.log.mask_patterns.clone();
    settings.export_traces = crate::serve::otlp_configured();
    settings.stage_metrics = stage_metrics;
    telemetry::init(&settings).context("cannot set up logging and tracing")
}

async fn run_batch(args: &ProcessArgs, config: &Config, clips: Vec<InputClip>) -> anyhow::Result<u8> {
    let started = Instant::now();
    let out = &args.out;
    fs::create_dir_all(out.join("audio"))
        .with_context(|| format!("cannot create the output folder {}", out.display()))?;
    fs::create_dir_all(out.join(STATE_DIR).join(SCRATCH_DIR))
        .with_context(|| format!("cannot create {}", out.join(STATE_DIR).display()))?;
    let store = BatchStore::open(&out.join(STATE_DIR).join("run.sqlite"))
        .await
        .with_context(|| format!("cannot open the run state in {}", out.join(STATE_DIR).display()))?;

    let config_hash = config.results_hash();
    match store.meta("config_hash").await? {
        Some(stored) if stored != config_hash => {
            return Err(UsageError(format!(
                "{} holds a run made with a different configuration; use a new --out folder, or remove the old one",
                out.display()
            ))
            .into());
        }
        Some(_) => {}
        None => {
            store.set_meta("config_hash", &config_hash).await?;
            store.set_meta("config", &serde_json::to_string(&config.pipeline)?).await?;
        }
    }
    let clip_count = clips.len();
    let specs: Vec<JobSpec> = clips.iter().enumerate().map(|(seq, clip)| job_spec(seq, clip)).collect();
    drop(clips);
    store.register(&specs).await.map_err(|err| match err {
        speechmill_queue::QueueError::Conflict(message) => anyhow::Error::new(UsageError(message)),
        other => anyhow::Error::new(other),
    })?;
    drop(specs);
    let pending = store.reset_unfinished().await? as usize;
    let already_done = clip_count - pending;
    if already_done > 0 {
        tracing::info!(done = already_done, left = pending, "resuming an interrupted run");
    }

    let jobs = match config.run.jobs {
        0 => std::thread::available_parallelism().map(usize::from).unwrap_or(1),
        jobs => jobs,
    };
    let progress = progress_bar(args.quiet, clip_count as u64, already_done as u64);
    let interrupted = Arc::new(AtomicBool::new(false));
    {
        let interrupted = Arc::clone(&interrupted);
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                interrupted.store(true, Ordering::SeqCst);
            }
        });
    }

    let cache = open_cache(config).await;
    let context = ClipContext {
        out: out.to_path_buf(),
        pipeline: config.pipeline.clone(),
        memory_limit_seconds: config.run.memory_limit_seconds,
        cache: cache.as_ref().map(|(store, _)| {
            ClipCache::new(store.clone(), tokio::runtime::Handle::current(), &config.pipeline, &cache_version())
        }),
    };
    let processed = process_pending(pending, jobs, &context, &store, &progress, &interrupted).await?;
    let audio_seconds = processed.audio_seconds;
    progress.finish_and_clear();
    if let Some((cache_store, folder)) = &cache {
        match cache_store.cache_prune(config.cache.max_bytes).await {
            Ok(0) => {}
            Ok(removed) => tracing::info!(entries = removed, cache.dir = %folder.display(), "pruned the result cache"),
            Err(err) => tracing::warn!(error = %err, "cannot prune the result cache"),
        }
        cache_store.close().await;
    }
    if interrupted.load(Ordering::SeqCst) {
        eprintln!("speechmill: interrupted; run the same command again to resume");
        store.close().await;
        return Ok(exit::INTERRUPTED);
    }

    let facts = RunFacts {
        speechmill_version: env!("CARGO_PKG_VERSION").to_string(),
        config: serde_json::to_value(&config.pipeline)?,
        config_hash,
        models: BTreeMap::from([("vad".to_string(), "earshot 1.2 (pure Rust)".to_string())]),
        wall_time_s: started.elapsed().as_secs_f64(),
        command: std::env::args().collect(),
    };
    let options = OutputOptions {
        reject_duplicates: config.pipeline.gate.enabled && config.pipeline.gate.reject_duplicates,
        parquet: ParquetOptions {
            sampling_rate: config.pipeline.standardise.sample_rate_hz,
            max_shard_bytes: config.run.max_shard_bytes,
            split: "train".into(),
        },
    };
    // The results are read back page by page and written as they come, so memory does not grow
    // with the number of clips.
    let mut writer = RunWriter::new(out, &options).context("cannot write the dataset")?;
    let mut after_seq = None;
    loop {
        let page = store.page(after_seq, FINISH_PAGE).await?;
        let Some(last) = page.last() else { break };
        after_seq = Some(last.seq);
        for job in page {
            writer.add(clip_record(job)).context("cannot write the dataset")?;
        }
    }
    store.close().await;
    let summary = writer.finish(&facts).context("cannot write the dataset")?;
    if !args.quiet {
        print_summary(&summary, out, facts.wall_time_s, audio_seconds);
        if let Some((_, folder)) = &cache {
            println!(
                "  result cache: {} hits, {} misses ({})",
                processed.cache_hits,
                processed.cache_misses,
                folder.display()
            );
        }
    }
    Ok(if summary.internal_failures > 0 { exit::INTERNAL_REJECTIONS } else { exit::OK })
}

fn job_spec(seq: usize, clip: &InputClip) -> JobSpec {
    let mut spec = Map::new();
    spec.insert("path".into(), json!(clip.path.to_string_lossy()));
    if clip.path.to_str().is_none() {
        // Linux file names are bytes; keep the exact name so the file can be opened again.
        spec.insert("path_bytes".into(), json!(clip.path.as_os_str().as_encoded_bytes()));
    }
    if let Some(raw) = clip.raw_format {
        spec.insert("raw_format".into(), json!(raw.to_string()));
    }
    spec.insert("columns".into(), Value::Object(clip.columns.clone()));
    JobSpec { id: clip.id.clone(), seq: seq as i64, source: clip.source.clone(), spec: Value::Object(spec) }
}

fn spec_path(spec: &Value) -> PathBuf {
    if let Some(bytes) = spec.get("path_bytes").and_then(Value::as_array) {
        let bytes: Vec<u8> = bytes.iter().filter_map(Value::as_u64).map(|byte| byte as u8).collect();
        #[cfg(unix)]
        {
            use std::os::unix::ffi::OsStringExt;
            return PathBuf::from(std::ffi::OsString::from_vec(bytes));
        }
        #[cfg(not(unix))]
        return PathBuf::from(String::from_utf8_lossy(&bytes).into_owned());
    }
    PathBuf::from(spec.get("path").and_then(Value::as_str).unwrap_or_default())
}

/// What a worker sends back for one clip.
struct WorkerResult {
    finished: Finished,
    audio_seconds: f64,
    /// What the result cache did for the clip.
    cache: CacheUse,
}

/// What [`process_pending`] did.
struct RunTotals {
    /// Seconds of audio decoded.
    audio_seconds: f64,
    /// Clips whose result came from the cache.
    cache_hits: u64,
    /// Clips looked up and not found (or not usable).
    cache_misses: u64,
}

/// The file of the result cache inside its folder.
pub const CACHE_FILE: &str = "results.sqlite";

/// Opens the result cache named by the configuration, creating its folder. The cache is an
/// accelerator: when it cannot be opened the run goes on without it, with a warning.
async fn open_cache(config: &Config) -> Option<(Arc<SqliteResultCache>, PathBuf)> {
    if !config.cache.enabled {
        return None;
    }
    let Some(folder) = config.cache.folder() else {
        tracing::warn!("no result cache folder (set --cache-dir, XDG_CACHE_HOME or HOME); running without the cache");
        return None;
    };
    if let Err(err) = fs::create_dir_all(&folder) {
        tracing::warn!(cache.dir = %folder.display(), error = %err, "cannot create the result cache folder; running without the cache");
        return None;
    }
    match SqliteResultCache::open(&folder.join(CACHE_FILE), Arc::new(SystemClock)).await {
        Ok(store) => Some((Arc::new(store), folder)),
        Err(err) => {
            tracing::warn!(cache.dir = %folder.display(), error = %err, "cannot open the result cache; running without it");
            None
        }
    }
}

/// speechmill's version as the cache keys use it. Test hook (debug builds only):
/// `SPEECHMILL_DEBUG_CACHE_VERSION` stands in for the version, to test that a new version
/// recomputes.
fn cache_version() -> String {
    #[cfg(debug_assertions)]
    if let Some(version) = std::env::var_os("SPEECHMILL_DEBUG_CACHE_VERSION")
        && !version.is_empty()
    {
        return version.to_string_lossy().into_owned();
    }
    VERSION.to_string()
}

async fn process_pending(
    pending: usize,
    jobs: usize,
    context: &ClipContext,
    store: &BatchStore,
    progress: &ProgressBar,
    interrupted: &Arc<AtomicBool>,
) -> anyhow::Result<RunTotals> {
    // The queued jobs are read from the run state a page at a time and handed to the workers
    // through a bounded channel, so memory does not grow with the number of clips.
    let (job_sender, job_receiver) = mpsc::channel::<JobRecord>(jobs * 4);
    let feeder = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut after_seq = None;
            loop {
                let page = store.queued_page(after_seq, FEED_PAGE).await?;
                let Some(last) = page.last() else { return Ok::<(), speechmill_queue::QueueError>(()) };
                after_seq = Some(last.seq);
                for job in page {
                    if job_sender.send(job).await.is_err() {
                        return Ok(());
                    }
                }
            }
        })
    };
    // Workers take the next job from the shared receiver; the lock is held only to take one.
    let job_receiver = Arc::new(std::sync::Mutex::new(job_receiver));
    let (sender, mut receiver) = mpsc::channel::<WorkerResult>(jobs * 4);
    let mut workers = Vec::new();
    for _ in 0..jobs.min(pending.max(1)) {
        let job_receiver = Arc::clone(&job_receiver);
        let sender = sender.clone();
        let interrupted = Arc::clone(interrupted);
        let context = context.clone();
        workers.push(std::thread::spawn(move || {
            let mut runner = ClipRunner::new(context);
            loop {
                if interrupted.load(Ordering::SeqCst) {
                    break;
                }
                let next = job_receiver.lock().unwrap_or_else(std::sync::PoisonError::into_inner).blocking_recv();
                let Some(job) = next else { break };
                let result = runner.run(&job);
                if sender.blocking_send(result).is_err() {
                    break;
                }
            }
        }));
    }
    drop(job_receiver);
    drop(sender);

    let mut batch: Vec<Finished> = Vec::with_capacity(COMMIT_BATCH);
    let mut last_commit = Instant::now();
    let mut audio_seconds = 0.0;
    let (mut cache_hits, mut cache_misses) = (0u64, 0u64);
    let started = Instant::now();
    loop {
        let received = tokio::time::timeout(COMMIT_INTERVAL, receiver.recv()).await;
        let done = match received {
            Ok(Some(result)) => {
                audio_seconds += result.audio_seconds;
                match result.cache {
                    CacheUse::Hit => cache_hits += 1,
                    CacheUse::Miss(_) => cache_misses += 1,
                    CacheUse::Off => {}
                }
                batch.push(result.finished);
                progress.inc(1);
                let hours_per_second = audio_seconds / 3600.0 / started.elapsed().as_secs_f64().max(1e-9);
                progress.set_message(format!("{hours_per_second:.3} audio h/s"));
                false
            }
            Ok(None) => true,
            Err(_) => false,
        };
        if !batch.is_empty() && (done || batch.len() >= COMMIT_BATCH || last_commit.elapsed() >= COMMIT_INTERVAL) {
            store.finish(&batch).await.context("cannot record results in the run state")?;
            batch.clear();
            last_commit = Instant::now();
        }
        if done {
            break;
        }
    }
    for worker in workers {
        let _ = worker.join();
    }
    feeder.await.context("the job feeder failed")?.context("cannot read the run state")?;
    Ok(RunTotals { audio_seconds, cache_hits, cache_misses })
}

/// Runs a worker's clips on a thread of their own, so that a clip stuck where the cooperative
/// time limit inside `process_clip` cannot see it (inside one decoder call) is abandoned after
/// the limit and a grace period instead of hanging the run.
///
/// The clip thread is long-lived (its per-thread analysers and FFT plans are reused across
/// clips); only after an abandonment is a new one started.
struct ClipRunner {
    /// Jobs to the clip thread; `None` until started and after an abandonment.
    requests: Option<std::sync::mpsc::Sender<JobRecord>>,
    /// Results from the current clip thread.
    results: Option<std::sync::mpsc::Receiver<WorkerResult>>,
    context: ClipContext,
}

/// What every clip of a run needs besides its job.
#[derive(Clone)]
struct ClipContext {
    /// The output folder.
    out: PathBuf,
    pipeline: PipelineConfig,
    /// `run.memory_limit_seconds`.
    memory_limit_seconds: f64,
    /// The result cache, unless it is off or could not be opened.
    cache: Option<ClipCache>,
}

impl ClipRunner {
    fn new(context: ClipContext) -> Self {
        Self { requests: None, results: None, context }
    }

    /// The longest a clip may take before its thread is abandoned: the configured limit, which
    /// `process_clip` checks itself between blocks, plus a grace period for one slow block.
    fn deadline(&self) -> Duration {
        let limit = self.context.pipeline.standardise.clip_timeout_seconds;
        Duration::from_secs_f64(limit * 1.1 + 5.0)
    }

    fn run(&mut self, job: &JobRecord) -> WorkerResult {
        if self.requests.is_none() {
            let (request_sender, request_receiver) = std::sync::mpsc::channel::<JobRecord>();
            let (result_sender, result_receiver) = std::sync::mpsc::channel::<WorkerResult>();
            let context = self.context.clone();
            let spawned = std::thread::Builder::new().name("speechmill-clip".into()).spawn(move || {
                for job in request_receiver {
                    debug_hang(&job);
                    if result_sender.send(run_job(&job, &context)).is_err() {
                        break;
                    }
                }
            });
            if let Err(err) = spawned {
                tracing::error!(error = %err, "cannot start a clip thread; running the clip on the worker");
                return run_job(job, &self.context);
            }
            self.requests = Some(request_sender);
            self.results = Some(result_receiver);
        }
        let (Some(requests), Some(results)) = (self.requests.as_ref(), self.results.as_ref()) else {
            return run_job(job, &self.context);
        };
        if requests.send(job.clone()).is_err() {
            self.requests = None;
            return run_job(job, &self.context);
        }
        let deadline = self.deadline();
        match results.recv_timeout(deadline) {
            Ok(result) => result,
            Err(err) => {
                // Abandon the thread: it is stuck in code that does not return. The next clip
                // gets a new one.
                self.requests = None;
                self.results = None;
                let columns = job.spec.get("columns").and_then(Value::as_object).cloned().unwrap_or_default();
                let (reason, message) = match err {
                    std::sync::mpsc::RecvTimeoutError::Timeout => {
                        tracing::error!(clip.id = %job.id, source = %job.source, deadline_s = deadline.as_secs_f64(), "clip did not finish; its thread was abandoned");
                        (Reason::Timeout, format!("processing did not finish within {:.0} s", deadline.as_secs_f64()))
                    }
                    std::sync::mpsc::RecvTimeoutError::Disconnected => {
                        tracing::error!(clip.id = %job.id, source = %job.source, "the clip thread died");
                        (Reason::InternalError, "speechmill failed on this clip (its thread died)".to_string())
                    }
                };
                let finished = rejected(job, reason, Stage::Decode, &message, &Measurements::default(), None, &columns);
                WorkerResult { finished, audio_seconds: 0.0, cache: CacheUse::Off }
            }
        }
    }
}

/// Test hook (debug builds only): `SPEECHMILL_DEBUG_HANG_SOURCE=<text>` makes the clip thread
/// sleep for an hour on any clip whose source contains `<text>`, to test abandonment.
fn debug_hang(job: &JobRecord) {
    #[cfg(debug_assertions)]
    if let Some(text) = std::env::var_os("SPEECHMILL_DEBUG_HANG_SOURCE")
        && !text.is_empty()
        && job.source.contains(&*text.to_string_lossy())
    {
        std::thread::sleep(Duration::from_secs(3600));
    }
    #[cfg(not(debug_assertions))]
    let _ = job;
}

/// Test hook (debug builds only): `SPEECHMILL_DEBUG_FAIL_ENHANCEMENT_SOURCE=<text>` makes the
/// enhancement stage panic on any clip whose source contains `<text>`, to test that such a clip
/// is delivered standardised.
fn debug_fail_enhancement(job: &JobRecord, input: &mut ClipInput<'_>) {
    #[cfg(debug_assertions)]
    if let Some(text) = std::env::var_os("SPEECHMILL_DEBUG_FAIL_ENHANCEMENT_SOURCE")
        && !text.is_empty()
        && job.source.contains(&*text.to_string_lossy())
    {
        input.enhance_fault = Some(speechmill_pipeline::clip::EnhanceFault::Panic);
    }
    #[cfg(not(debug_assertions))]
    let _ = (job, input);
}

/// Processes one job: never panics, never fails; every outcome is a final job state.
fn run_job(job: &JobRecord, context: &ClipContext) -> WorkerResult {
    let (out, pipeline, memory_limit_seconds) = (&context.out, &context.pipeline, context.memory_limit_seconds);
    let path = spec_path(&job.spec);
    let raw_format = job.spec.get("raw_format").and_then(Value::as_str).and_then(|text| text.parse::<RawFormat>().ok());
    let columns = job.spec.get("columns").and_then(Value::as_object).cloned().unwrap_or_default();
    let scratch = out.join(STATE_DIR).join(SCRATCH_DIR);
    let mut input =
        ClipInput { raw_format, scratch_dir: Some(&scratch), memory_limit_seconds, ..ClipInput::new(&path) };
    debug_fail_enhancement(job, &mut input);
    let started = Instant::now();
    let span = tracing::info_span!("clip", clip.id = %job.id);
    let run = || match &context.cache {
        Some(cache) => cache.process(&input, pipeline),
        None => (process_clip(&input, pipeline), CacheUse::Off),
    };
    let outcome = span.in_scope(|| catch_unwind(AssertUnwindSafe(run)));
    let mut cache_use = CacheUse::Off;
    let outcome = match outcome {
        Ok((outcome, used)) => {
            cache_use = used;
            telemetry::metrics::record_clip(
                outcome.as_ref().map_err(|rejection| rejection.as_ref()),
                started.elapsed(),
            );
            outcome
        }
        Err(panic) => {
            let detail = speechmill_pipeline::clip::panic_detail(panic.as_ref());
            tracing::error!(clip.id = %job.id, source = %job.source, error = %detail, "speechmill panicked on a clip");
            Err(Box::new(Rejection {
                reason: Reason::InternalError,
                message: format!("speechmill failed on this clip (a bug; please report it): {detail}"),
                stage: Stage::Decode,
                measurements: Measurements::default(),
                content_hash: None,
            }))
        }
    };
    tracing::debug!(clip.id = %job.id, elapsed_s = started.elapsed().as_secs_f64(), "clip processed");

    let (finished, audio_seconds) = match outcome {
        Ok(processed) => {
            let audio_seconds = processed.measurements.duration_s.unwrap_or(0.0);
            let relative = format!("audio/{}.{}", job.id, pipeline.standardise.format.extension());
            let writing = span.in_scope(|| speechmill_pipeline::clip::stage_span(Stage::Write));
            let persisted = writing.in_scope(|| processed.audio.persist(&out.join(&relative)));
            drop(writing);
            let finished = match persisted {
                Ok(()) => accepted(job, &relative, &processed.measurements, &processed.content_hash, &columns),
                Err(err) => {
                    tracing::error!(clip.id = %job.id, error = %err, "cannot write clip audio");
                    let message = format!("cannot write the output audio: {err}");
                    rejected(
                        job,
                        Reason::InternalError,
                        Stage::Encode,
                        &message,
                        &processed.measurements,
                        Some(processed.content_hash.clone()),
                        &columns,
                    )
                }
            };
            (finished, audio_seconds)
        }
        Err(rejection) => {
            if rejection.reason.is_internal() {
                tracing::error!(clip.id = %job.id, source = %job.source, reason = rejection.reason.as_str(), error = %rejection.message, "clip failed");
            }
            let audio_seconds = rejection.measurements.duration_s.unwrap_or(0.0);
            (
                rejected(
                    job,
                    rejection.reason,
                    rejection.stage,
                    &rejection.message,
                    &rejection.measurements,
                    rejection.content_hash.clone(),
                    &columns,
                ),
                audio_seconds,
            )
        }
    };
    WorkerResult { finished, audio_seconds, cache: cache_use }
}

/// Keys speechmill writes itself; a carried-through column with one of these names is kept as
/// `input_<name>`.
fn carry(row: &mut Map<String, Value>, columns: &Map<String, Value>) {
    for (key, value) in columns {
        if key == "id" {
            continue;
        }
        let key = if row.contains_key(key) { format!("input_{key}") } else { key.clone() };
        row.insert(key, value.clone());
    }
}

fn measurement_fields(measurements: &Measurements, row: &mut Map<String, Value>) {
    if let Ok(Value::Object(fields)) = serde_json::to_value(measurements) {
        for (key, value) in fields {
            row.entry(key).or_insert(value);
        }
    }
    row.entry("warnings").or_insert_with(|| json!([]));
}

fn accepted(
    job: &JobRecord,
    audio_path: &str,
    measurements: &Measurements,
    content_hash: &str,
    columns: &Map<String, Value>,
) -> Finished {
    let mut row = Map::new();
    row.insert("id".into(), json!(job.id));
    row.insert("source".into(), json!(job.source));
    row.insert("audio_path".into(), json!(audio_path));
    row.insert("duration_s".into(), json!(measurements.duration_s));
    row.insert("sample_rate".into(), json!(measurements.sample_rate));
    measurement_fields(measurements, &mut row);
    row.insert("content_hash".into(), json!(content_hash));
    carry(&mut row, columns);
    Finished {
        id: job.id.clone(),
        state: JobState::Succeeded,
        result: Value::Object(row),
        reason: None,
        content_hash: Some(content_hash.to_string()),
    }
}

fn rejected(
    job: &JobRecord,
    reason: Reason,
    stage: Stage,
    message: &str,
    measurements: &Measurements,
    content_hash: Option<String>,
    columns: &Map<String, Value>,
) -> Finished {
    let mut row = Map::new();
    row.insert("id".into(), json!(job.id));
    row.insert("source".into(), json!(job.source));
    row.insert("reason".into(), json!(reason));
    row.insert("message".into(), json!(format!("{}: {message}", job.source)));
    row.insert("stage".into(), json!(stage));
    measurement_fields(measurements, &mut row);
    row.insert("content_hash".into(), json!(content_hash));
    carry(&mut row, columns);
    Finished {
        id: job.id.clone(),
        state: JobState::Rejected,
        result: Value::Object(row),
        reason: Some(reason.as_str().to_string()),
        content_hash,
    }
}

fn clip_record(job: JobRecord) -> ClipRecord {
    let row = match job.result {
        Some(Value::Object(row)) => row,
        _ => Map::new(),
    };
    ClipRecord { id: job.id, accepted: job.state == JobState::Succeeded, row, content_hash: job.content_hash }
}

fn progress_bar(quiet: bool, total: u64, done: u64) -> ProgressBar {
    if quiet || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template("{bar:30.cyan/blue} {pos}/{len} clips  {per_sec}  {msg}  ETA {eta}")
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_position(done);
    bar.reset_eta();
    bar
}

fn print_summary(summary: &Summary, out: &Path, wall_time_s: f64, audio_seconds: f64) {
    let rate = if wall_time_s > 0.0 { audio_seconds / wall_time_s } else { 0.0 };
    println!(
        "speechmill: {} clips: {} accepted, {} rejected; {} of audio in, {} out; took {:.1} s ({:.0}x real time)",
        summary.clips,
        summary.accepted,
        summary.rejected,
        human_duration(summary.hours_in * 3600.0),
        human_duration(summary.hours_out * 3600.0),
        wall_time_s,
        rate
    );
    for (reason, count) in &summary.rejected_by_reason {
        println!("  rejected {reason}: {count}");
    }
    if summary.internal_failures > 0 {
        println!("  {} clips failed inside speechmill (see the log and rejected.jsonl)", summary.internal_failures);
    }
    println!("  dataset: {}", out.display());
}

/// Seconds as `42.0 s`, `12.5 min` or `3.21 h`.
fn human_duration(seconds: f64) -> String {
    if seconds < 120.0 {
        format!("{seconds:.1} s")
    } else if seconds < 7200.0 {
        format!("{:.1} min", seconds / 60.0)
    } else {
        format!("{:.2} h", seconds / 3600.0)
    }
}
