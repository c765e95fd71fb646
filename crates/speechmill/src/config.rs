//! The effective configuration: defaults, then a TOML file, then `SPEECHMILL_*` environment
//! variables, then command-line flags; a later source overrides an earlier one.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use speechmill_pipeline::PipelineConfig;

/// How a run is carried out (does not change its results).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunConfig {
    /// Worker threads; 0 means one per core.
    pub jobs: usize,
    /// A Parquet shard closes once it holds this many bytes of audio.
    pub max_shard_bytes: u64,
    /// Seconds of standardised audio a clip may hold in memory; a longer clip's signal goes to a
    /// scratch file in the output folder, so memory does not grow with file length.
    pub memory_limit_seconds: f64,
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig { jobs: 0, max_shard_bytes: 256 * 1024 * 1024, memory_limit_seconds: 600.0 }
    }
}

/// The result cache of `speechmill process` (the service keeps its cache in the queue database).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Look clips up in the cache and store their results (`--no-cache` turns it off).
    pub enabled: bool,
    /// The cache folder; unset means `$XDG_CACHE_HOME/speechmill` or `~/.cache/speechmill`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dir: Option<PathBuf>,
    /// After a run, the least recently used entries beyond this many bytes are removed.
    pub max_bytes: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig { enabled: true, dir: None, max_bytes: 10 * 1024 * 1024 * 1024 }
    }
}

impl CacheConfig {
    /// The cache folder: `dir`, else `$XDG_CACHE_HOME/speechmill`, else `$HOME/.cache/speechmill`;
    /// `None` when none of them is known.
    pub fn folder(&self) -> Option<PathBuf> {
        if let Some(dir) = &self.dir {
            return Some(dir.clone());
        }
        let absolute = |value: std::ffi::OsString| Some(PathBuf::from(value)).filter(|path| path.is_absolute());
        if let Some(base) = std::env::var_os("XDG_CACHE_HOME").and_then(absolute) {
            return Some(base.join("speechmill"));
        }
        std::env::var_os("HOME").and_then(absolute).map(|home| home.join(".cache").join("speechmill"))
    }
}

/// Logging.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `error`, `warn`, `info`, `debug`, `trace`, or a tracing filter directive.
    pub level: String,
    /// `text`, `json` (Elastic Common Schema), or `auto`: JSON for `serve` and `worker` when
    /// standard error is not a terminal, text otherwise.
    pub format: LogFormat,
    /// Regular expressions whose matches are masked in log lines, beside the built-in ones
    /// (bearer tokens, API keys, passwords in URLs).
    pub mask_patterns: Vec<String>,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { level: "warn".into(), format: LogFormat::Auto, mask_patterns: Vec::new() }
    }
}

impl LogConfig {
    /// The line style: `auto` means JSON when `json_off_terminal` and standard error is not a
    /// terminal.
    pub fn style(&self, json_off_terminal: bool) -> speechmill_server::telemetry::LogStyle {
        use speechmill_server::telemetry::LogStyle;
        match self.format {
            LogFormat::Text => LogStyle::Text,
            LogFormat::Json => LogStyle::Json,
            LogFormat::Auto => {
                if json_off_terminal && !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
                    LogStyle::Json
                } else {
                    LogStyle::Text
                }
            }
        }
    }
}

/// The service nodes (`serve` and `worker`): `[serve]`. Flags override these values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServeConfig {
    /// Address the API listens on (`serve`).
    pub listen: SocketAddr,
    /// Folders JSON submissions may name files in; none: uploads and object keys only.
    pub input_roots: Vec<PathBuf>,
    /// Largest accepted upload, in bytes.
    pub max_upload_bytes: u64,
    /// Unfinished jobs above which submissions are refused with 429 and `Retry-After`.
    pub max_backlog: u64,
    /// Most jobs in one `POST /v1/batches`.
    pub max_batch_jobs: usize,
    /// Hosts a `callback_url` may name; none: callbacks are refused.
    pub callback_hosts: Vec<String>,
    /// Concurrent jobs in this node; absent: one per core; 0: no workers (`serve` only).
    pub workers: Option<usize>,
    /// This process's lease-owner name, unique per process sharing a queue; absent:
    /// `HOST-serve` or `HOST-worker`.
    pub node_name: Option<String>,
    /// `s3://BUCKET[/PREFIX]` to keep uploads and outputs in an S3-compatible bucket; absent:
    /// the data folder.
    pub storage_url: Option<String>,
    /// How long a claimed job is held without a heartbeat.
    pub lease_seconds: f64,
    /// Attempts before a failing job is dead.
    pub max_attempts: u32,
    /// How long an idle worker waits before asking the queue again.
    pub poll_interval_ms: u64,
    /// A job running longer than this fails with `timeout`.
    pub job_timeout_seconds: f64,
    /// On SIGTERM, running jobs get this long to finish before they are handed back.
    pub drain_timeout_seconds: f64,
    /// Longest wait for one database call made by the API.
    pub database_timeout_seconds: f64,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            input_roots: Vec::new(),
            max_upload_bytes: 512 * 1024 * 1024,
            max_backlog: 100_000,
            max_batch_jobs: 10_000,
            callback_hosts: Vec::new(),
            workers: None,
            node_name: None,
            storage_url: None,
            lease_seconds: 30.0,
            max_attempts: 5,
            poll_interval_ms: 200,
            job_timeout_seconds: 600.0,
            drain_timeout_seconds: 20.0,
            database_timeout_seconds: 5.0,
        }
    }
}

impl ServeConfig {
    /// What is wrong with these values, one message each.
    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let positive = [
            ("lease_seconds", self.lease_seconds),
            ("job_timeout_seconds", self.job_timeout_seconds),
            ("database_timeout_seconds", self.database_timeout_seconds),
        ];
        for (name, value) in positive {
            if !value.is_finite() || value <= 0.0 || value > 1e9 {
                problems.push(format!("serve.{name} must be a positive number of seconds, not {value}"));
            }
        }
        if !self.drain_timeout_seconds.is_finite() || !(0.0..=1e9).contains(&self.drain_timeout_seconds) {
            problems.push(format!(
                "serve.drain_timeout_seconds must be zero or a positive number of seconds, not {}",
                self.drain_timeout_seconds
            ));
        }
        if self.max_attempts == 0 {
            problems.push("serve.max_attempts must be at least 1".into());
        }
        if self.poll_interval_ms == 0 {
            problems.push("serve.poll_interval_ms must be at least 1".into());
        }
        if self.max_upload_bytes == 0 {
            problems.push("serve.max_upload_bytes must be at least 1".into());
        }
        if self.max_batch_jobs == 0 {
            problems.push("serve.max_batch_jobs must be at least 1".into());
        }
        if self.node_name.as_deref().is_some_and(|name| name.trim().is_empty()) {
            problems.push("serve.node_name must not be empty".into());
        }
        problems
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Text on a terminal; for the service, JSON otherwise.
    Auto,
    /// Human text.
    Text,
    /// One JSON object per line.
    Json,
}

/// Everything speechmill can be configured with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The per-clip pipeline: `[standardise]`, `[gate]` and `[enhance]`.
    #[serde(flatten)]
    pub pipeline: PipelineConfig,
    /// `[run]`.
    pub run: RunConfig,
    /// `[cache]`.
    pub cache: CacheConfig,
    /// `[log]`.
    pub log: LogConfig,
    /// `[serve]`: the service nodes.
    pub serve: ServeConfig,
}

/// The prefix of configuration environment variables; `__` separates sections:
/// `SPEECHMILL_STANDARDISE__TARGET_LUFS=-20`.
pub const ENV_PREFIX: &str = "SPEECHMILL_";

/// The sections of the configuration; other `SPEECHMILL_*` variables are not configuration.
const SECTIONS: &[&str] = &["standardise", "gate", "enhance", "run", "cache", "log", "serve"];

impl Config {
    /// Builds the effective configuration from every source, then validates it.
    ///
    /// `overrides` holds only the values given as flags, nested like the file.
    pub fn load(file: Option<&Path>, overrides: serde_json::Value) -> anyhow::Result<Config> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            if !file.is_file() {
                bail!("configuration file {} does not exist", file.display());
            }
            figment = figment.merge(Toml::file_exact(file));
        }
        figment = figment
            .merge(
                Env::prefixed(ENV_PREFIX)
                    .filter(|key| {
                        let key = key.as_str().to_ascii_lowercase();
                        SECTIONS.iter().any(|section| key.starts_with(&format!("{section}__")))
                    })
                    .split("__")
                    .lowercase(true),
            )
            .merge(Serialized::globals(overrides));
        let config: Config = figment.extract().map_err(|err| {
            let messages: Vec<String> = err.into_iter().map(|error| error.to_string()).collect();
            anyhow::anyhow!("invalid configuration: {}", messages.join("; "))
        })?;
        let mut problems = config.pipeline.validate().err().unwrap_or_default();
        if !config.run.memory_limit_seconds.is_finite() || config.run.memory_limit_seconds < 0.0 {
            problems.push("run.memory_limit_seconds must be zero or positive".to_string());
        }
        problems.extend(config.serve.problems());
        if !problems.is_empty() {
            bail!("invalid configuration: {}", problems.join("; "));
        }
        Ok(config)
    }

    /// The configuration file named by `--config` or `SPEECHMILL_CONFIG`.
    pub fn file_from(flag: Option<PathBuf>) -> Option<PathBuf> {
        flag.or_else(|| std::env::var_os("SPEECHMILL_CONFIG").map(PathBuf::from))
    }

    /// SHA-256 of the canonical JSON of what decides a run's results (the pipeline section).
    pub fn results_hash(&self) -> String {
        let canonical = serde_json::to_string(&self.pipeline).unwrap_or_default();
        let digest = Sha256::digest(canonical.as_bytes());
        digest.iter().map(|byte| format!("{byte:02x}")).collect()
    }

    /// The configuration as TOML text.
    pub fn to_toml(&self) -> anyhow::Result<String> {
        toml::to_string_pretty(self).context("cannot show the configuration as TOML")
    }
}
