//! Command-line arguments, and the flags that override configuration values.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::{Map, Value, json};
use speechmill_audio::decode::RawFormat;

use crate::config::{Config, LogFormat};
use crate::exit;

const AFTER_HELP: &str = "\
Configuration comes from defaults, then a TOML file (--config or SPEECHMILL_CONFIG), then
environment variables such as SPEECHMILL_STANDARDISE__TARGET_LUFS=-20 or
SPEECHMILL_GATE__MIN_SNR_DB=10, then flags. `speechmill config show` prints the result.

Exit codes: 0 the run completed (rejected clips are results, not failures); 1 the run could not
be carried out; 2 bad usage or configuration; 3 the run completed but some clips were rejected
because speechmill failed on them (internal_error, timeout); 130 interrupted (run the same
command again to resume).";

/// speechmill turns raw speech recordings into a clean, standardised, quality-scored dataset.
#[derive(Debug, Parser)]
#[command(name = "speechmill", version, about, long_about = None, after_help = AFTER_HELP)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Decode, validate, standardise, measure and gate audio files into a dataset in --out.
    ///
    /// Writes DIR/audio/<id>.flac, DIR/manifest.jsonl (accepted clips), DIR/rejected.jsonl
    /// (rejected clips with reason, message and stage), DIR/data/train-*.parquet (loadable with
    /// Hugging Face `datasets`), DIR/report.json and a dataset card DIR/README.md. The run state is
    /// kept in DIR/.speechmill/run.sqlite: if the run is interrupted, the same command resumes it.
    #[command(after_help = AFTER_HELP)]
    Process(ProcessArgs),
    /// Run the service: the HTTP API with embedded workers, on the data in --data-dir.
    Serve(crate::serve::ServeArgs),
    /// Run workers only, sharing the queue of --data-dir or --database-url.
    Worker(crate::serve::WorkerArgs),
    /// Manage the service's API keys.
    Keys {
        /// What to do.
        #[command(subcommand)]
        command: crate::serve::KeysCommand,
    },
    /// Inspect, replay and purge dead letters.
    Dlq {
        /// What to do.
        #[command(subcommand)]
        command: crate::serve::DlqCommand,
    },
    /// Inspect or clear the result cache of `speechmill process`.
    Cache {
        /// What to do.
        #[command(subcommand)]
        command: CacheCommand,
    },
    /// Inspect the configuration.
    Config {
        /// What to do with it.
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

/// `config` subcommands.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the effective configuration (defaults, file, environment, flags).
    Show(ShowArgs),
}

/// Output format of `config show`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ShowFormat {
    /// TOML, the format of the configuration file.
    Toml,
    /// JSON.
    Json,
}

/// Arguments of `config show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// Configuration file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// How to print it (`--format` is the audio format flag, as for `process`).
    #[arg(long = "as", id = "show_as", value_name = "FORMAT", value_enum, default_value = "toml")]
    pub show_as: ShowFormat,
    /// Flags as for `process`, to see their effect.
    #[command(flatten)]
    pub settings: Settings,
}

/// Arguments of `process`.
#[derive(Debug, Args)]
pub struct ProcessArgs {
    /// Audio files, folders (walked recursively; hidden entries and text files are passed over)
    /// or manifests (.jsonl or .csv with a `path` column; other columns are carried through).
    #[arg(required = true, value_name = "INPUT")]
    pub inputs: Vec<PathBuf>,
    /// Output folder (created if missing).
    #[arg(long, short, value_name = "DIR")]
    pub out: PathBuf,
    /// Configuration file (TOML).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// No progress bar and no summary.
    #[arg(long, short)]
    pub quiet: bool,
    /// Serve Prometheus metrics of the run at http://ADDR/metrics while it runs.
    #[arg(long, value_name = "ADDR", env = "SPEECHMILL_METRICS_LISTEN")]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Settings that override the configuration.
    #[command(flatten)]
    pub settings: Settings,
}

/// Flags that override configuration values.
#[derive(Debug, Args, Default)]
pub struct Settings {
    /// Worker threads (default: one per core).
    #[arg(long, short, value_name = "N")]
    pub jobs: Option<usize>,
    /// Read unrecognised (headerless) files as raw PCM: ENCODING,RATE,CHANNELS, for example
    /// s16le,16000,1 (encodings: u8 s8 s16le s16be s24le s32le f32le f64le alaw mulaw). A
    /// manifest's `raw_format` column sets it per file.
    #[arg(long, value_name = "FORMAT")]
    pub raw_format: Option<RawFormat>,
    /// Accept every clip that passes validation, with all its measurements; duplicates are kept
    /// with `duplicate_of` set.
    #[arg(long)]
    pub no_gate: bool,
    /// Denoise accepted clips; a clip whose denoising fails or would lower its estimated SNR is
    /// delivered standardised and flagged [config: enhance.enabled, default off].
    #[arg(long)]
    pub enhance: bool,
    /// Output sample rate in Hz [config: standardise.sample_rate_hz, default 16000].
    #[arg(long, value_name = "HZ")]
    pub sample_rate: Option<u32>,
    /// Output audio format [config: standardise.format, default flac].
    #[arg(long, value_parser = ["flac", "wav"])]
    pub format: Option<String>,
    /// Level normalisation [config: standardise.loudness_mode, default lufs].
    #[arg(long, value_parser = ["lufs", "rms", "off"])]
    pub loudness_mode: Option<String>,
    /// Integrated loudness target [config: standardise.target_lufs, default -23].
    #[arg(long, value_name = "LUFS", allow_hyphen_values = true)]
    pub target_lufs: Option<f64>,
    /// RMS target in rms mode [config: standardise.target_rms_dbfs, default -20].
    #[arg(long, value_name = "DBFS", allow_hyphen_values = true)]
    pub target_rms_dbfs: Option<f64>,
    /// NaN and infinite samples [config: standardise.non_finite, default reject].
    #[arg(long, value_parser = ["reject", "sanitise"])]
    pub non_finite: Option<String>,
    /// Minimum estimated SNR in dB [config: gate.min_snr_db, default 5].
    #[arg(long, value_name = "DB", allow_hyphen_values = true)]
    pub min_snr_db: Option<f64>,
    /// Minimum duration in seconds [config: gate.min_duration_s, default 0.5].
    #[arg(long, value_name = "SECONDS")]
    pub min_duration_s: Option<f64>,
    /// Maximum duration in seconds [config: gate.max_duration_s, default 60].
    #[arg(long, value_name = "SECONDS")]
    pub max_duration_s: Option<f64>,
    /// Minimum fraction of speech frames [config: gate.min_speech_ratio, default 0.1].
    #[arg(long, value_name = "RATIO")]
    pub min_speech_ratio: Option<f64>,
    /// Minimum effective bandwidth in Hz [config: gate.min_bandwidth_hz, default off].
    #[arg(long, value_name = "HZ")]
    pub min_bandwidth_hz: Option<f64>,
    /// Result cache folder [config: cache.dir, default $XDG_CACHE_HOME/speechmill or
    /// ~/.cache/speechmill].
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Neither read nor write the result cache: process every clip in full [config:
    /// cache.enabled = false].
    #[arg(long)]
    pub no_cache: bool,
    /// Log line format on standard error [config: log.format, default auto: text].
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
    /// Log level: error, warn, info, debug, trace [config: log.level, default warn].
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<String>,
}

/// `cache` subcommands.
#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// Show where the result cache is and how many entries and bytes it holds, by version.
    Stats(CacheArgs),
    /// Remove every entry from the result cache.
    Clear(CacheArgs),
}

/// Which result cache a `cache` subcommand works on.
#[derive(Debug, Args)]
pub struct CacheArgs {
    /// Configuration file (TOML) whose `[cache] dir` names the cache.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The cache folder [config: cache.dir, default $XDG_CACHE_HOME/speechmill or
    /// ~/.cache/speechmill].
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
}

impl Settings {
    /// The flags that were given, nested like the configuration file.
    pub fn overrides(&self) -> Value {
        let mut standardise = Map::new();
        let mut gate = Map::new();
        let mut enhance = Map::new();
        let mut run = Map::new();
        let mut log = Map::new();
        let mut cache = Map::new();
        let put = |section: &mut Map<String, Value>, key: &str, value: Option<Value>| {
            if let Some(value) = value {
                section.insert(key.to_string(), value);
            }
        };
        put(&mut run, "jobs", self.jobs.map(|jobs| json!(jobs)));
        put(&mut standardise, "sample_rate_hz", self.sample_rate.map(|rate| json!(rate)));
        put(&mut standardise, "format", self.format.clone().map(Value::String));
        put(&mut standardise, "loudness_mode", self.loudness_mode.clone().map(Value::String));
        put(&mut standardise, "target_lufs", self.target_lufs.map(|value| json!(value)));
        put(&mut standardise, "target_rms_dbfs", self.target_rms_dbfs.map(|value| json!(value)));
        put(&mut standardise, "non_finite", self.non_finite.clone().map(Value::String));
        put(&mut gate, "enabled", self.no_gate.then_some(json!(false)));
        put(&mut enhance, "enabled", self.enhance.then_some(json!(true)));
        put(&mut gate, "min_snr_db", self.min_snr_db.map(|value| json!(value)));
        put(&mut gate, "min_duration_s", self.min_duration_s.map(|value| json!(value)));
        put(&mut gate, "max_duration_s", self.max_duration_s.map(|value| json!(value)));
        put(&mut gate, "min_speech_ratio", self.min_speech_ratio.map(|value| json!(value)));
        put(&mut gate, "min_bandwidth_hz", self.min_bandwidth_hz.map(|value| json!(value)));
        put(&mut cache, "enabled", self.no_cache.then_some(json!(false)));
        put(&mut cache, "dir", self.cache_dir.as_ref().map(|dir| json!(dir)));
        put(&mut log, "format", self.log_format.map(|format| json!(format)));
        put(&mut log, "level", self.log_level.clone().map(Value::String));
        let mut root = Map::new();
        let sections = [
            ("standardise", standardise),
            ("gate", gate),
            ("enhance", enhance),
            ("run", run),
            ("cache", cache),
            ("log", log),
        ];
        for (name, section) in sections {
            if !section.is_empty() {
                root.insert(name.to_string(), Value::Object(section));
            }
        }
        Value::Object(root)
    }
}

/// `speechmill config show`.
pub fn show_config(args: ShowArgs) -> u8 {
    let config = match Config::load(Config::file_from(args.config).as_deref(), args.settings.overrides()) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("speechmill: {err:#}");
            return exit::USAGE;
        }
    };
    let text = match args.show_as {
        ShowFormat::Toml => config.to_toml(),
        ShowFormat::Json => serde_json::to_string_pretty(&config).map_err(anyhow::Error::from),
    };
    match text {
        Ok(text) => {
            println!("{}", text.trim_end());
            exit::OK
        }
        Err(err) => {
            eprintln!("speechmill: {err:#}");
            exit::FAILURE
        }
    }
}
