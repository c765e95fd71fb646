//! One node of the service: opens the queue, the key store and the storage from a configuration,
//! then runs the API, the workers and the reaper until told to stop, in a fixed shutdown order:
//! readiness off and intake stopped, claims stopped, running jobs drained (or handed back after
//! the drain deadline), then the HTTP server closed.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use speechmill_pipeline::PipelineConfig;
use speechmill_pipeline::cache::VERSION;
use speechmill_queue::{
    Clock, FastRandom, QueueConfig, QueueError, ResultCacheStore, Stores, SystemClock, open_stores,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::api::{AppState, Breakers, Limits, router};
use crate::auth::{KeyHasher, SecretError};
use crate::breaker::{Breaker, BreakerConfig};
use crate::cache::ClipCache;
use crate::callbacks::{CallbackSettings, run_sender};
use crate::storage::{InputRoots, Storage, StorageConfig, StorageError};
use crate::telemetry::metrics::{Sampled, run_sampler, serve as serve_metrics};
use crate::worker::{WorkerSettings, run_reaper, run_workers};

/// Why a node could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The queue database could not be opened or migrated.
    #[error("queue database: {0}")]
    Queue(#[from] QueueError),
    /// The data folder or the object storage could not be prepared.
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    /// The API key secret could not be read or created.
    #[error("{0}")]
    Secret(#[from] SecretError),
    /// An input root does not exist.
    #[error("input root {path}: {source}")]
    InputRoot {
        /// The root.
        path: PathBuf,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP server failed.
    #[error("http server: {0}")]
    Http(#[source] std::io::Error),
}

/// Everything a node is configured with.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// The data folder: the SQLite queue (unless `database_url` is set), uploads, outputs and
    /// the API key secret.
    pub data_dir: PathBuf,
    /// `postgres://...` to share a queue between nodes; `None` for SQLite in the data folder.
    pub database_url: Option<String>,
    /// Where uploads and outputs are kept: the data folder (default) or an S3-compatible bucket.
    pub storage: StorageConfig,
    /// Folders that JSON submissions may name files in.
    pub input_roots: Vec<PathBuf>,
    /// Client limits.
    pub limits: Limits,
    /// Lease, attempts and backoff.
    pub queue: QueueConfig,
    /// Concurrent jobs in this node; 0 runs no workers (API only).
    pub workers: usize,
    /// This node's lease-owner name.
    pub node_name: String,
    /// How long an idle worker waits before polling again.
    pub poll_interval: Duration,
    /// A job running longer than this fails with `timeout`.
    pub job_timeout: Duration,
    /// How long running jobs get to finish after shutdown starts.
    pub drain_timeout: Duration,
    /// The clip pipeline.
    pub pipeline: PipelineConfig,
    /// How the database and storage circuit breakers decide.
    pub breaker: BreakerConfig,
    /// Seconds of standardised audio a clip holds in memory before spilling to disk.
    pub memory_limit_seconds: f64,
    /// How callbacks are sent (the allowed hosts are `limits.callback_hosts`).
    pub callbacks: CallbackSettings,
    /// Whether workers use the result cache (table `result_cache` in the queue database).
    pub result_cache: bool,
}

impl ServiceConfig {
    /// Defaults for a node with its data in `data_dir`.
    pub fn new(data_dir: PathBuf) -> Self {
        ServiceConfig {
            data_dir,
            database_url: None,
            storage: StorageConfig::Local,
            input_roots: Vec::new(),
            limits: Limits::default(),
            queue: QueueConfig::default(),
            workers: 1,
            node_name: "local".into(),
            poll_interval: Duration::from_millis(200),
            job_timeout: Duration::from_secs(600),
            drain_timeout: Duration::from_secs(20),
            pipeline: PipelineConfig::default(),
            breaker: BreakerConfig::default(),
            memory_limit_seconds: 600.0,
            callbacks: CallbackSettings::default(),
            result_cache: true,
        }
    }
}

/// The SQLite queue URL inside a data folder.
pub fn sqlite_url(data_dir: &Path) -> String {
    format!("sqlite://{}", data_dir.join("queue.sqlite").display())
}

/// The API key secret's file inside a data folder.
pub fn secret_path(data_dir: &Path) -> PathBuf {
    data_dir.join("api-key-secret")
}

/// Opens the queue and key store of a data folder (or of `database_url`), creating the folder.
pub async fn open_data(
    data_dir: &Path,
    database_url: Option<&str>,
    queue: QueueConfig,
) -> Result<Stores, ServiceError> {
    std::fs::create_dir_all(data_dir).map_err(|source| StorageError::Io { path: data_dir.to_path_buf(), source })?;
    let url = database_url.map(str::to_string).unwrap_or_else(|| sqlite_url(data_dir));
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    Ok(open_stores(&url, queue, clock, Arc::new(FastRandom)).await?)
}

/// A node, opened and ready to run.
pub struct Service {
    /// What the API handlers share.
    state: AppState,
    /// The configuration it was opened with.
    config: ServiceConfig,
    /// Where `/metrics` is served, if anywhere (set by [`Service::serve_metrics`]).
    metrics: Option<(TcpListener, metrics_exporter_prometheus::PrometheusHandle)>,
    /// The result cache's store (the queue database).
    cache: Arc<dyn ResultCacheStore>,
}

impl Service {
    /// Opens the data folder, the queue (applying migrations), the storage and the key secret.
    pub async fn open(config: ServiceConfig) -> Result<Service, ServiceError> {
        let stores = open_data(&config.data_dir, config.database_url.as_deref(), config.queue.clone()).await?;
        let hasher = KeyHasher::load_or_create(&secret_path(&config.data_dir))?;
        let roots = InputRoots::new(&config.input_roots).map_err(|source| ServiceError::InputRoot {
            path: config.input_roots.iter().find(|root| !root.exists()).cloned().unwrap_or_default(),
            source,
        })?;
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let breakers = Breakers {
            database: Arc::new(Breaker::new("database", config.breaker.clone(), clock.clone())),
            storage: Arc::new(Breaker::new("storage", config.breaker.clone(), clock.clone())),
            callbacks: Arc::new(Breaker::new("callbacks", config.breaker.clone(), clock)),
        };
        let storage = Storage::open(&config.storage, &config.data_dir, breakers.storage.clone())?;
        tracing::info!(storage = %storage.describe(), "storage opened");
        let cache = stores.cache;
        let state = AppState::new(
            stores.queue,
            stores.keys,
            Arc::new(hasher),
            storage,
            roots,
            config.limits.clone(),
            breakers,
            CancellationToken::new(),
        );
        Ok(Service { state, config, metrics: None, cache })
    }

    /// Serves the Prometheus metrics of `handle` on `listener` (the internal port) while the
    /// node runs, and samples the queue, breakers and disk into gauges.
    pub fn serve_metrics(&mut self, listener: TcpListener, handle: metrics_exporter_prometheus::PrometheusHandle) {
        self.metrics = Some((listener, handle));
    }

    /// The API's shared state (for tests and tools).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Runs the API on `listener` (none: workers only) plus the workers and the reaper, until
    /// `shutdown` completes; then shuts down in order and returns.
    pub async fn run(
        self,
        listener: Option<TcpListener>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServiceError> {
        let state = self.state.clone();
        let config = self.config;
        let cache = config
            .result_cache
            .then(|| ClipCache::new(self.cache.clone(), tokio::runtime::Handle::current(), &config.pipeline, VERSION));
        let metrics = self.metrics;
        // Claims stop when this is cancelled; the HTTP server closes when `http_stop` is.
        let stop_claims = CancellationToken::new();
        let http_stop = CancellationToken::new();

        let mut background = tokio::task::JoinSet::new();
        // The metrics endpoint outlives the drain (stopped with the HTTP server), so the last
        // scrape sees it.
        let metrics_server = metrics.map(|(listener, handle)| {
            let sampled = Sampled {
                queue: Some(state.queue.clone()),
                breakers: vec![
                    state.breakers.database.clone(),
                    state.breakers.storage.clone(),
                    state.breakers.callbacks.clone(),
                ],
                data_dir: config.data_dir.clone(),
            };
            background.spawn(run_sampler(sampled, Duration::from_secs(2), stop_claims.clone()));
            tokio::spawn(serve_metrics(listener, handle, http_stop.clone()))
        });
        background.spawn(run_reaper(
            state.queue.clone(),
            (config.queue.lease / 3).max(Duration::from_millis(100)),
            stop_claims.clone(),
        ));
        // Every node with workers sends callbacks; API-only nodes leave it to them.
        if config.workers > 0 {
            let settings =
                CallbackSettings { allowed_hosts: config.limits.callback_hosts.clone(), ..config.callbacks.clone() };
            background.spawn(run_sender(
                state.queue.clone(),
                state.breakers.callbacks.clone(),
                settings,
                stop_claims.clone(),
            ));
        }
        let workers = if config.workers > 0 {
            let settings = WorkerSettings {
                workers: config.workers,
                node_name: config.node_name.clone(),
                poll_interval: config.poll_interval,
                lease: config.queue.lease,
                job_timeout: config.job_timeout,
                drain_timeout: config.drain_timeout,
                pipeline: Arc::new(config.pipeline.clone()),
                memory_limit_seconds: config.memory_limit_seconds,
                cache,
            };
            Some(tokio::spawn(run_workers(
                state.queue.clone(),
                state.storage.clone(),
                settings,
                state.breakers.database.clone(),
                stop_claims.clone(),
            )))
        } else {
            None
        };

        let server = listener.map(|listener| {
            let app = router(state.clone());
            let http_stop = http_stop.clone();
            tokio::spawn(async move {
                axum::serve(listener, app).with_graceful_shutdown(async move { http_stop.cancelled().await }).await
            })
        });

        shutdown.await;
        tracing::info!("shutting down: readiness off, intake stopped");
        state.shutting_down.cancel();
        stop_claims.cancel();
        if let Some(workers) = workers {
            let _ = workers.await;
        }
        while background.join_next().await.is_some() {}
        tracing::info!("workers drained; closing the http server");
        http_stop.cancel();
        if let Some(metrics_server) = metrics_server
            && let Ok(Err(err)) = metrics_server.await
        {
            tracing::warn!(error = %err, "the metrics endpoint failed");
        }
        if let Some(server) = server {
            match server.await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => return Err(ServiceError::Http(err)),
                Err(join) => return Err(ServiceError::Http(std::io::Error::other(join.to_string()))),
            }
        }
        Ok(())
    }
}
