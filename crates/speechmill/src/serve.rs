//! `speechmill serve`, `worker`, `keys` and `dlq`: thin wiring of flags into
//! `speechmill-server` and `speechmill-queue`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::{Map, Value, json};
use speechmill_queue::{JobQueue, JobState, ListQuery, QueueConfig, QueueError};
use speechmill_server::auth::{KeyHasher, Scope, create_key};
use speechmill_server::model::{JobView, rfc3339};
use speechmill_server::service::{open_data, secret_path};
use speechmill_server::storage::{S3Config, StorageConfig};
use speechmill_server::telemetry::{self, LogStyle, TelemetryGuard, TelemetrySettings};
use speechmill_server::{Limits, Service, ServiceConfig};

use crate::config::{Config, LogFormat};
use crate::exit;

/// Where a node's data and queue are.
#[derive(Debug, Args)]
pub struct DataArgs {
    /// The data folder (created if missing): the SQLite queue, uploads, outputs, the API key
    /// secret.
    #[arg(long, value_name = "DIR", env = "SPEECHMILL_DATA_DIR")]
    pub data_dir: PathBuf,
    /// A shared PostgreSQL queue (`postgres://user@host/db`) instead of SQLite in the data folder.
    #[arg(long, value_name = "URL", env = "SPEECHMILL_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
}

/// Flags of nodes that run workers. Each one overrides the `[serve]` value of the
/// configuration file and of `SPEECHMILL_SERVE__*`.
#[derive(Debug, Args)]
pub struct NodeArgs {
    /// Data folder and database.
    #[command(flatten)]
    pub data: DataArgs,
    /// Configuration file (TOML): `[serve]`, the clip pipeline and logging.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Keep uploads and outputs in an S3-compatible bucket (`s3://BUCKET[/PREFIX]`) instead of
    /// the data folder; configured by AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
    /// AWS_SESSION_TOKEN, AWS_REGION and AWS_ALLOW_HTTP.
    #[arg(long, value_name = "URL", env = "SPEECHMILL_STORAGE_URL")]
    pub storage_url: Option<String>,
    /// Concurrent jobs in this node [default: one per core; 0: no workers].
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,
    /// This process's lease-owner name; unique per process sharing a queue. A restarted process
    /// with the same name takes its stale leases back at once [default: HOST-serve or HOST-worker].
    #[arg(long, value_name = "NAME")]
    pub node_name: Option<String>,
    /// How long a claimed job is held without a heartbeat [default: 30].
    #[arg(long, value_name = "SECONDS")]
    pub lease_seconds: Option<f64>,
    /// Attempts before a failing job is dead [default: 5].
    #[arg(long, value_name = "N")]
    pub max_attempts: Option<u32>,
    /// How long an idle worker waits before asking the queue again [default: 200].
    #[arg(long, value_name = "MS")]
    pub poll_interval_ms: Option<u64>,
    /// A job running longer than this fails with `timeout` [default: 600].
    #[arg(long, value_name = "SECONDS")]
    pub job_timeout_seconds: Option<f64>,
    /// On SIGTERM, running jobs get this long to finish before they are handed back [default: 20].
    #[arg(long, value_name = "SECONDS")]
    pub drain_timeout_seconds: Option<f64>,
    /// Log level [default: info].
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// Log line format on standard error: json (Elastic Common Schema) or text [default: text on
    /// a terminal, json otherwise].
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
    /// Serve Prometheus metrics at http://ADDR/metrics (an internal port, not the API's).
    #[arg(long, value_name = "ADDR", env = "SPEECHMILL_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Workers neither read nor write the result cache (table `result_cache` in the queue
    /// database) [config: cache.enabled = false].
    #[arg(long)]
    pub no_cache: bool,
}

impl NodeArgs {
    /// The `[serve]` values these flags set, nested like the configuration file.
    fn overrides(&self) -> Map<String, Value> {
        let mut serve = Map::new();
        let mut set = |name: &str, value: Option<Value>| {
            if let Some(value) = value {
                serve.insert(name.to_string(), value);
            }
        };
        set("storage_url", self.storage_url.clone().map(Value::from));
        set("workers", self.workers.map(Value::from));
        set("node_name", self.node_name.clone().map(Value::from));
        set("lease_seconds", self.lease_seconds.map(Value::from));
        set("max_attempts", self.max_attempts.map(Value::from));
        set("poll_interval_ms", self.poll_interval_ms.map(Value::from));
        set("job_timeout_seconds", self.job_timeout_seconds.map(Value::from));
        set("drain_timeout_seconds", self.drain_timeout_seconds.map(Value::from));
        serve
    }
}

/// Arguments of `serve`. Each flag overrides the `[serve]` value of the configuration file and
/// of `SPEECHMILL_SERVE__*`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// A folder JSON submissions may name files in (repeatable; replaces `serve.input_roots`);
    /// without one, only uploads and object keys.
    #[arg(long = "input-root", value_name = "DIR")]
    pub input_roots: Vec<PathBuf>,
    /// Largest accepted upload [default: 536870912, 512 MiB].
    #[arg(long, value_name = "BYTES")]
    pub max_upload_bytes: Option<u64>,
    /// Unfinished jobs above which submissions are refused with 429 and Retry-After
    /// [default: 100000].
    #[arg(long, value_name = "JOBS")]
    pub max_backlog: Option<u64>,
    /// A host that `callback_url` may name (repeatable; replaces `serve.callback_hosts`); without
    /// one, callbacks are refused.
    #[arg(long = "callback-host", value_name = "HOST")]
    pub callback_hosts: Vec<String>,
    /// The node's settings.
    #[command(flatten)]
    pub node: NodeArgs,
}

impl ServeArgs {
    /// The `[serve]` values these flags set.
    fn overrides(&self) -> Map<String, Value> {
        let mut serve = self.node.overrides();
        if let Some(listen) = self.listen {
            serve.insert("listen".into(), Value::from(listen.to_string()));
        }
        if !self.input_roots.is_empty() {
            let roots = self.input_roots.iter().map(|root| Value::from(root.to_string_lossy().into_owned()));
            serve.insert("input_roots".into(), Value::Array(roots.collect()));
        }
        if let Some(bytes) = self.max_upload_bytes {
            serve.insert("max_upload_bytes".into(), Value::from(bytes));
        }
        if let Some(jobs) = self.max_backlog {
            serve.insert("max_backlog".into(), Value::from(jobs));
        }
        if !self.callback_hosts.is_empty() {
            serve.insert("callback_hosts".into(), Value::from(self.callback_hosts.clone()));
        }
        serve
    }
}

/// Arguments of `worker`.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// The node's settings.
    #[command(flatten)]
    pub node: NodeArgs,
}

/// `keys` subcommands.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key; it is printed once, alone on the last line of standard output.
    Create {
        /// Data folder and database.
        #[command(flatten)]
        data: DataArgs,
        /// Comma-separated scopes: submit, read, admin.
        #[arg(long, value_name = "SCOPES", default_value = "submit,read")]
        scopes: String,
        /// A note for people.
        #[arg(long, default_value = "")]
        label: String,
    },
    /// List keys (never the keys themselves).
    List {
        /// Data folder and database.
        #[command(flatten)]
        data: DataArgs,
    },
    /// Revoke a key by id.
    Revoke {
        /// Data folder and database.
        #[command(flatten)]
        data: DataArgs,
        /// The key's id (`keys list`).
        id: String,
    },
}

/// `dlq` subcommands.
#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List dead letters with their attempts and last error.
    List {
        /// Data folder and database.
        #[command(flatten)]
        data: DataArgs,
        /// Only this batch.
        #[arg(long)]
        batch: Option<String>,
    },
    /// Show one dead letter as JSON.
    Show {
        /// Data folder and database.
        #[command(flatten)]
        data: DataArgs,
        /// The job id.
        id: String,
    },
    /// Put dead letters back in the queue (recorded in the audit log).
    Replay {
        /// Data folder and database.
        #[command(flatten)]
        data: DataArgs,
        /// One job; without it, every dead letter (of --batch, if given).
        id: Option<String>,
        /// Only this batch (without an id).
        #[arg(long)]
        batch: Option<String>,
    },
    /// Delete a dead letter (recorded in the audit log).
    Purge {
        /// Data folder and database.
        #[command(flatten)]
        data: DataArgs,
        /// The job id.
        id: String,
    },
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the async runtime")
}

/// Runs a node to completion, then stops the runtime without waiting for a clip stuck past the
/// drain deadline (its job was handed back; its thread cannot be interrupted).
fn run_node(work: impl std::future::Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    let runtime = runtime()?;
    let outcome = runtime.block_on(work);
    runtime.shutdown_timeout(Duration::from_secs(1));
    outcome
}

fn host_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "node".into())
}

fn seconds(value: f64, name: &str) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(value).ok().filter(|d| !d.is_zero()).with_context(|| format!("{name} must be positive"))
}

fn init_telemetry(config: &Config, node: &NodeArgs, role: &str) -> anyhow::Result<TelemetryGuard> {
    // A service logs its own events at info; the decoder's complaints about a client's file are
    // already in the job's rejection.
    const SERVICE_DEFAULT: &str = "warn,speechmill=info,speechmill_server=info,symphonia_core=off";
    let level = node.log_level.clone().unwrap_or_else(|| {
        if config.log.level == crate::config::LogConfig::default().level {
            SERVICE_DEFAULT.into()
        } else {
            config.log.level.clone()
        }
    });
    let mut log = config.log.clone();
    if let Some(format) = node.log_format {
        log.format = format;
    }
    let mut settings = TelemetrySettings::new(&format!("speechmill-{role}"));
    settings.log_filter = level;
    settings.log_style = log.style(true);
    settings.mask_patterns = log.mask_patterns.clone();
    settings.export_traces = otlp_configured();
    settings.stage_metrics = node.metrics_listen.is_some();
    let guard = telemetry::init(&settings).context("cannot set up logging and tracing")?;
    JSON_LINES.store(settings.log_style == LogStyle::Json, std::sync::atomic::Ordering::Relaxed);
    if settings.log_style == LogStyle::Json {
        // A panic's message becomes a log line too, so every line on standard error is JSON.
        std::panic::set_hook(Box::new(|info| {
            tracing::error!(error.type = "panic", error = %info, "speechmill panicked");
        }));
    }
    Ok(guard)
}

/// Whether the standard OpenTelemetry variables ask for trace export over OTLP.
pub fn otlp_configured() -> bool {
    let value = |name: &str| std::env::var_os(name).map(|value| value.to_string_lossy().trim().to_ascii_lowercase());
    let set = |name: &str| value(name).is_some_and(|value| !value.is_empty());
    let disabled = value("OTEL_SDK_DISABLED").as_deref() == Some("true")
        || value("OTEL_TRACES_EXPORTER").as_deref() == Some("none");
    !disabled && (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
}

/// Whether log lines are JSON: then the node's own messages go through the log too.
static JSON_LINES: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Tells the operator something: a log line when lines are JSON, plain text otherwise.
fn say(message: &str) {
    if JSON_LINES.load(std::sync::atomic::Ordering::Relaxed) {
        tracing::info!("{message}");
    } else {
        eprintln!("speechmill: {message}");
    }
}

/// Installs the metrics recorder and binds the metrics port, if asked for.
async fn metrics_port(
    node: &NodeArgs,
) -> anyhow::Result<Option<(tokio::net::TcpListener, telemetry::metrics::PrometheusHandle)>> {
    let Some(address) = node.metrics_listen else { return Ok(None) };
    let handle = telemetry::metrics::install().map_err(anyhow::Error::msg)?;
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen for metrics on {address}"))?;
    say(&format!("metrics on http://{}/metrics", listener.local_addr()?));
    Ok(Some((listener, handle)))
}

/// Builds a node's configuration from defaults, the configuration file, `SPEECHMILL_*` and
/// the flags in `serve` (`[serve]` values), and starts its telemetry.
fn node_config(
    node: &NodeArgs,
    serve: Map<String, Value>,
    role: &str,
) -> anyhow::Result<(Config, ServiceConfig, TelemetryGuard)> {
    let config = Config::load(Config::file_from(node.config.clone()).as_deref(), json!({ "serve": serve }))?;
    let guard = init_telemetry(&config, node, role)?;
    let settings = &config.serve;
    let mut service = ServiceConfig::new(node.data.data_dir.clone());
    service.database_url = node.data.database_url.clone();
    service.storage = storage_config(settings.storage_url.as_deref())?;
    service.pipeline = config.pipeline.clone();
    service.memory_limit_seconds = config.run.memory_limit_seconds;
    service.result_cache = config.cache.enabled && !node.no_cache;
    service.workers =
        settings.workers.unwrap_or_else(|| std::thread::available_parallelism().map(usize::from).unwrap_or(1));
    service.node_name = settings.node_name.clone().unwrap_or_else(|| format!("{}-{role}", host_name()));
    service.queue = QueueConfig {
        lease: seconds(settings.lease_seconds, "serve.lease_seconds")?,
        max_attempts: settings.max_attempts.max(1),
        ..QueueConfig::default()
    };
    service.poll_interval = Duration::from_millis(settings.poll_interval_ms.max(1));
    service.job_timeout = seconds(settings.job_timeout_seconds, "serve.job_timeout_seconds")?;
    service.drain_timeout = Duration::try_from_secs_f64(settings.drain_timeout_seconds).unwrap_or_default();
    service.input_roots = settings.input_roots.clone();
    service.limits = Limits {
        max_upload_bytes: settings.max_upload_bytes,
        max_backlog: settings.max_backlog,
        max_batch_jobs: settings.max_batch_jobs,
        database_timeout: seconds(settings.database_timeout_seconds, "serve.database_timeout_seconds")?,
        callback_hosts: settings.callback_hosts.clone(),
    };
    Ok((config, service, guard))
}

/// The storage of `--storage-url`: the data folder when absent, else an S3-compatible bucket
/// configured by the standard AWS variables (read here, in the binary, and passed down).
fn storage_config(url: Option<&str>) -> anyhow::Result<StorageConfig> {
    let Some(url) = url.map(str::trim).filter(|url| !url.is_empty()) else { return Ok(StorageConfig::Local) };
    let variable = |name: &str| {
        std::env::var_os(name).map(|value| value.to_string_lossy().trim().to_string()).filter(|value| !value.is_empty())
    };
    let allow_http = match variable("AWS_ALLOW_HTTP").map(|value| value.to_ascii_lowercase()).as_deref() {
        None | Some("false" | "0" | "no") => false,
        Some("true" | "1" | "yes") => true,
        Some(other) => anyhow::bail!("AWS_ALLOW_HTTP is {other:?}; use true or false"),
    };
    let config = S3Config {
        endpoint: variable("AWS_ENDPOINT_URL_S3").or_else(|| variable("AWS_ENDPOINT_URL")),
        region: variable("AWS_REGION").or_else(|| variable("AWS_DEFAULT_REGION")),
        access_key_id: variable("AWS_ACCESS_KEY_ID"),
        secret_access_key: variable("AWS_SECRET_ACCESS_KEY"),
        session_token: variable("AWS_SESSION_TOKEN"),
        allow_http,
        ..S3Config::from_url(url).context("--storage-url")?
    };
    Ok(StorageConfig::S3(config))
}

/// Completes on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
}

fn finish(result: anyhow::Result<()>) -> u8 {
    match result {
        Ok(()) => exit::OK,
        Err(err) => {
            if JSON_LINES.load(std::sync::atomic::Ordering::Relaxed) {
                tracing::error!(error = %format!("{err:#}"), "speechmill stopped");
            } else {
                eprintln!("speechmill: {err:#}");
            }
            exit::FAILURE
        }
    }
}

/// Reports a configuration that cannot be used; exit code 2.
fn bad_configuration(err: anyhow::Error) -> u8 {
    finish(Err(err));
    exit::USAGE
}

/// `speechmill serve`.
pub fn serve(args: ServeArgs) -> u8 {
    let (settings, config, telemetry) = match node_config(&args.node, args.overrides(), "serve") {
        Ok(loaded) => loaded,
        Err(err) => return bad_configuration(err),
    };
    let listen = settings.serve.listen;
    let run = || -> anyhow::Result<()> {
        let outcome = run_node(async {
            let mut service = Service::open(config.clone()).await?;
            if let Some((listener, handle)) = metrics_port(&args.node).await? {
                service.serve_metrics(listener, handle);
            }
            let listener =
                tokio::net::TcpListener::bind(listen).await.with_context(|| format!("cannot listen on {listen}"))?;
            let address = listener.local_addr()?;
            tracing::info!(address = %address, data_dir = %config.data_dir.display(), workers = config.workers, node = %config.node_name, "speechmill serving");
            say(&format!("listening on http://{address}"));
            service.run(Some(listener), shutdown_signal()).await?;
            Ok(())
        });
        telemetry.flush();
        outcome
    };
    finish(run())
}

/// `speechmill worker`.
pub fn worker(args: WorkerArgs) -> u8 {
    let (_, config, telemetry) = match node_config(&args.node, args.node.overrides(), "worker") {
        Ok(loaded) => loaded,
        Err(err) => return bad_configuration(err),
    };
    if config.workers == 0 {
        return bad_configuration(anyhow::anyhow!(
            "a worker node needs at least 1 worker (--workers or serve.workers)"
        ));
    }
    let run = || -> anyhow::Result<()> {
        let outcome = run_node(async {
            let mut service = Service::open(config.clone()).await?;
            if let Some((listener, handle)) = metrics_port(&args.node).await? {
                service.serve_metrics(listener, handle);
            }
            tracing::info!(workers = config.workers, node = %config.node_name, "speechmill worker started");
            service.run(None, shutdown_signal()).await?;
            Ok(())
        });
        telemetry.flush();
        outcome
    };
    finish(run())
}

/// `speechmill keys ...`.
pub fn keys(command: KeysCommand) -> u8 {
    let run = || -> anyhow::Result<()> {
        runtime()?.block_on(async {
            match command {
                KeysCommand::Create { data, scopes, label } => {
                    let scopes: Vec<Scope> = scopes
                        .split(',')
                        .filter(|scope| !scope.trim().is_empty())
                        .map(str::parse)
                        .collect::<Result<_, String>>()
                        .map_err(anyhow::Error::msg)?;
                    anyhow::ensure!(!scopes.is_empty(), "--scopes names no scope");
                    let stores =
                        open_data(&data.data_dir, data.database_url.as_deref(), QueueConfig::default()).await?;
                    let hasher = KeyHasher::load_or_create(&secret_path(&data.data_dir))?;
                    let key = create_key(stores.keys.as_ref(), &hasher, &scopes, &label).await?;
                    let names: Vec<&str> = scopes.iter().map(|scope| scope.as_str()).collect();
                    eprintln!(
                        "speechmill: created key {} with scopes {}; it is shown only now",
                        key.id,
                        names.join(",")
                    );
                    println!("{}", key.key);
                }
                KeysCommand::List { data } => {
                    let stores =
                        open_data(&data.data_dir, data.database_url.as_deref(), QueueConfig::default()).await?;
                    for key in stores.keys.list_keys().await? {
                        let revoked = key
                            .revoked_at
                            .map(|at| format!("revoked {}", rfc3339(at)))
                            .unwrap_or_else(|| "active".into());
                        println!(
                            "{}\t{}\t{}\t{}\t{}",
                            key.id,
                            key.scopes.join(","),
                            rfc3339(key.created_at),
                            revoked,
                            key.label
                        );
                    }
                }
                KeysCommand::Revoke { data, id } => {
                    let stores =
                        open_data(&data.data_dir, data.database_url.as_deref(), QueueConfig::default()).await?;
                    anyhow::ensure!(stores.keys.revoke_key(&id).await?, "no active key {id}");
                    eprintln!("speechmill: revoked key {id}");
                }
            }
            Ok(())
        })
    };
    finish(run())
}

async fn open_queue(data: &DataArgs) -> anyhow::Result<std::sync::Arc<dyn JobQueue>> {
    Ok(open_data(&data.data_dir, data.database_url.as_deref(), QueueConfig::default()).await?.queue)
}

/// `speechmill dlq ...`: what the dead-letter API does, from the command line (actor `cli`).
pub fn dlq(command: DlqCommand) -> u8 {
    let run = || -> anyhow::Result<()> {
        runtime()?.block_on(async {
            match command {
                DlqCommand::List { data, batch } => {
                    let queue = open_queue(&data).await?;
                    let mut query =
                        ListQuery { state: Some(JobState::Dead), batch_id: batch, limit: 1000, cursor: None };
                    loop {
                        let page = queue.list(&query).await?;
                        for job in &page.jobs {
                            let view = JobView::from(job);
                            let error = view
                                .error
                                .map(|error| format!("{}: {}", error.kind, error.message))
                                .unwrap_or_default();
                            println!(
                                "{}\t{}\tattempts={}\t{}\t{}",
                                view.id, view.updated_at, view.attempts, view.source, error
                            );
                        }
                        match page.next_cursor {
                            Some(cursor) => query.cursor = Some(cursor),
                            None => break,
                        }
                    }
                }
                DlqCommand::Show { data, id } => {
                    let queue = open_queue(&data).await?;
                    let job = queue.get(&id).await?.with_context(|| format!("no job {id}"))?;
                    println!("{}", serde_json::to_string_pretty(&JobView::from(&job))?);
                }
                DlqCommand::Replay { data, id, batch } => {
                    let queue = open_queue(&data).await?;
                    match id {
                        Some(id) => {
                            anyhow::ensure!(batch.is_none(), "give a job id or --batch, not both");
                            queue.replay_dead(&id, "cli").await.map_err(explain)?;
                            eprintln!("speechmill: job {id} is queued again");
                        }
                        None => {
                            let count = queue.replay_dead_where(batch.as_deref(), "cli").await?;
                            eprintln!("speechmill: {count} dead letters queued again");
                        }
                    }
                }
                DlqCommand::Purge { data, id } => {
                    let queue = open_queue(&data).await?;
                    queue.purge_dead(&id, "cli").await.map_err(explain)?;
                    eprintln!("speechmill: job {id} purged");
                }
            }
            Ok(())
        })
    };
    finish(run())
}

fn explain(err: QueueError) -> anyhow::Error {
    match err {
        QueueError::InvalidState { id, state } => anyhow::anyhow!("job {id} is {}, not dead", state.as_str()),
        other => other.into(),
    }
}
