//! Finishing a run: exact duplicates in input order, then `manifest.jsonl`, `rejected.jsonl`,
//! the Parquet shards, `report.json` and the dataset card, each written atomically.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::dataset::{DatasetError, ParquetOptions, write_parquet_shards_from_jsonl};
use crate::reason::{Reason, Stage};

/// Version of the layout of `manifest.jsonl`, `rejected.jsonl` and the Parquet columns.
pub const OUTPUT_SCHEMA_VERSION: u32 = 1;

/// One clip's outcome as recorded when it was processed, before duplicates are decided.
#[derive(Debug, Clone, PartialEq)]
pub struct ClipRecord {
    /// The clip id.
    pub id: String,
    /// Accepted by processing and the gate (duplicates not yet decided).
    pub accepted: bool,
    /// The manifest row (accepted) or the rejection row.
    pub row: Map<String, Value>,
    /// Hash of the decoded audio, when decoding finished.
    pub content_hash: Option<String>,
}

/// What made the run, for `report.json` and the dataset card.
#[derive(Debug, Clone, Serialize)]
pub struct RunFacts {
    /// speechmill's version.
    pub speechmill_version: String,
    /// The effective configuration.
    pub config: Value,
    /// SHA-256 of the configuration's canonical JSON.
    pub config_hash: String,
    /// Models used, with versions.
    pub models: BTreeMap<String, String>,
    /// Seconds this invocation took.
    pub wall_time_s: f64,
    /// The command line.
    pub command: Vec<String>,
}

/// Counts of a finished run.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Summary {
    /// Clips in the run.
    pub clips: usize,
    /// Clips accepted into the dataset.
    pub accepted: usize,
    /// Clips rejected.
    pub rejected: usize,
    /// Rejections by reason code.
    pub rejected_by_reason: BTreeMap<String, usize>,
    /// Clips rejected because speechmill failed (`internal_error`, `timeout`).
    pub internal_failures: usize,
    /// Hours of decoded input audio.
    pub hours_in: f64,
    /// Hours of accepted output audio.
    pub hours_out: f64,
    /// The Parquet shards written, relative to the output folder.
    pub parquet_shards: Vec<String>,
}

/// Why finishing failed.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// A file could not be written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The Parquet shards could not be written.
    #[error(transparent)]
    Dataset(#[from] DatasetError),
}

/// Options of the writers.
#[derive(Debug, Clone)]
pub struct OutputOptions {
    /// Whether later exact duplicates are rejected (`true`) or kept with `duplicate_of`.
    pub reject_duplicates: bool,
    /// Parquet layout.
    pub parquet: ParquetOptions,
}

/// Decides duplicates in input order and writes every output of the run into `out_dir`.
///
/// `records` must be in input order. Writing is idempotent: running it again on the same
/// records gives the same files. See [`RunWriter`] for the streaming form.
pub fn finish_run(
    out_dir: &Path,
    records: &[ClipRecord],
    options: &OutputOptions,
    facts: &RunFacts,
) -> Result<Summary, OutputError> {
    let mut writer = RunWriter::new(out_dir, options)?;
    for record in records {
        writer.add(record.clone())?;
    }
    writer.finish(facts)
}

/// Most input folders the dataset card lists.
const CARD_MAX_FOLDERS: usize = 50;

/// Writes a run's outputs from its records, handed over one at a time in input order, so that
/// memory does not grow with the number of clips: rows go straight to `manifest.jsonl` and
/// `rejected.jsonl` (under temporary names until [`RunWriter::finish`]); the Parquet shards are
/// then written from the manifest file. What is kept per clip is one content hash and id, for
/// exact-duplicate detection.
pub struct RunWriter {
    out_dir: PathBuf,
    options: OutputOptions,
    /// Content hash to the id of the first clip with it, in input order.
    originals: HashMap<String, String>,
    manifest: AtomicFile,
    rejected: AtomicFile,
    summary: Summary,
    /// Carried-through column names seen in accepted rows, for the dataset card.
    carried_columns: BTreeSet<String>,
    /// Columns of [`OPTIONAL_COLUMN_DOCS`] seen in accepted rows, for the dataset card.
    optional_columns: BTreeSet<&'static str>,
    /// Folders of the accepted clips' sources (the first few), for the dataset card.
    source_folders: BTreeSet<String>,
    /// Whether more folders than listed were seen.
    more_folders: bool,
}

impl RunWriter {
    /// Starts writing the outputs of a run into `out_dir`.
    ///
    /// # Errors
    ///
    /// [`OutputError::Io`] when the manifest files cannot be created.
    pub fn new(out_dir: &Path, options: &OutputOptions) -> Result<Self, OutputError> {
        Ok(Self {
            out_dir: out_dir.to_path_buf(),
            options: options.clone(),
            originals: HashMap::new(),
            manifest: AtomicFile::create(&out_dir.join("manifest.jsonl"))?,
            rejected: AtomicFile::create(&out_dir.join("rejected.jsonl"))?,
            summary: Summary::default(),
            carried_columns: BTreeSet::new(),
            optional_columns: BTreeSet::new(),
            source_folders: BTreeSet::new(),
            more_folders: false,
        })
    }

    /// Adds the next clip in input order: decides whether it duplicates an earlier one and
    /// writes its row.
    ///
    /// # Errors
    ///
    /// [`OutputError::Io`] when a row cannot be written or a duplicate's audio removed.
    pub fn add(&mut self, record: ClipRecord) -> Result<(), OutputError> {
        let ClipRecord { id, accepted, mut row, content_hash } = record;
        self.summary.clips += 1;
        self.summary.hours_in += duration_of(&row) / 3600.0;
        let validated = accepted || row.get("stage") == Some(&json!(Stage::Gate));
        let duplicate_of = match (content_hash, validated) {
            (Some(hash), true) => {
                let original = self.originals.entry(hash).or_insert_with(|| id.clone());
                (*original != id).then(|| original.clone())
            }
            _ => None,
        };
        if !accepted {
            return self.reject(row);
        }
        if let Some(original) = duplicate_of {
            if self.options.reject_duplicates {
                if let Some(Value::String(audio_path)) = row.remove("audio_path") {
                    remove_if_present(&self.out_dir.join(audio_path))?;
                }
                let source = row.get("source").and_then(Value::as_str).unwrap_or_default().to_string();
                row.insert("reason".into(), json!(Reason::Duplicate));
                row.insert(
                    "message".into(),
                    json!(format!("{source}: the same audio as {original}, which comes first in input order")),
                );
                row.insert("stage".into(), json!(Stage::Gate));
                row.insert("duplicate_of".into(), json!(original));
                return self.reject(row);
            }
            row.insert("duplicate_of".into(), json!(original));
        } else {
            row.insert("duplicate_of".into(), Value::Null);
        }
        self.summary.hours_out += duration_of(&row) / 3600.0;
        self.summary.accepted += 1;
        for key in row.keys() {
            if let Some((name, _)) = OPTIONAL_COLUMN_DOCS.iter().find(|(name, _)| name == key) {
                self.optional_columns.insert(name);
            } else if !COLUMN_DOCS.iter().any(|(name, _)| name == key) && !self.carried_columns.contains(key) {
                self.carried_columns.insert(key.clone());
            }
        }
        if let Some(folder) =
            row.get("source").and_then(Value::as_str).and_then(|source| Path::new(source).parent()?.to_str())
            && !self.source_folders.contains(folder)
        {
            if self.source_folders.len() < CARD_MAX_FOLDERS {
                self.source_folders.insert(folder.to_string());
            } else {
                self.more_folders = true;
            }
        }
        self.manifest.write_line(&row)
    }

    fn reject(&mut self, row: Map<String, Value>) -> Result<(), OutputError> {
        self.summary.rejected += 1;
        let reason = row.get("reason").and_then(Value::as_str).unwrap_or("unknown").to_string();
        if Reason::from_code(&reason).is_some_and(Reason::is_internal) {
            self.summary.internal_failures += 1;
        }
        *self.summary.rejected_by_reason.entry(reason).or_default() += 1;
        self.rejected.write_line(&row)
    }

    /// Puts the manifests in place, writes the Parquet shards from the manifest, `report.json`
    /// and the dataset card, and returns the run's counts.
    ///
    /// # Errors
    ///
    /// [`OutputError::Io`] or [`OutputError::Dataset`] when a file cannot be written.
    pub fn finish(self, facts: &RunFacts) -> Result<Summary, OutputError> {
        let Self {
            out_dir,
            options,
            mut summary,
            manifest,
            rejected,
            carried_columns,
            optional_columns,
            source_folders,
            more_folders,
            ..
        } = self;
        let manifest_path = manifest.commit()?;
        rejected.commit()?;
        let shards = write_parquet_shards_from_jsonl(&out_dir, &manifest_path, &options.parquet)?;
        summary.parquet_shards = shards
            .iter()
            .map(|shard| shard.strip_prefix(&out_dir).unwrap_or(shard).to_string_lossy().into_owned())
            .collect();

        let report = json!({
            "output_schema_version": OUTPUT_SCHEMA_VERSION,
            "speechmill_version": facts.speechmill_version,
            "counts": {
                "clips": summary.clips,
                "accepted": summary.accepted,
                "rejected": summary.rejected,
                "rejected_by_reason": summary.rejected_by_reason,
                "internal_failures": summary.internal_failures,
            },
            "hours_in": summary.hours_in,
            "hours_out": summary.hours_out,
            "wall_time_s": facts.wall_time_s,
            "real_time_factor": if facts.wall_time_s > 0.0 { summary.hours_in * 3600.0 / facts.wall_time_s } else { 0.0 },
            "config": facts.config,
            "config_hash": facts.config_hash,
            "models": facts.models,
            "command": facts.command,
            "parquet_shards": summary.parquet_shards,
        });
        let report_text = serde_json::to_string_pretty(&report).unwrap_or_default() + "\n";
        write_atomic(&out_dir.join("report.json"), report_text.as_bytes())?;
        let columns = CardColumns { optional: &optional_columns, carried: &carried_columns };
        let card = dataset_card(&summary, &columns, &source_folders, more_folders, facts);
        write_atomic(&out_dir.join("README.md"), card.as_bytes())?;
        Ok(summary)
    }
}

/// A file written under a temporary name beside its destination and renamed into place.
struct AtomicFile {
    path: PathBuf,
    temporary: PathBuf,
    writer: std::io::BufWriter<fs::File>,
}

impl AtomicFile {
    fn create(path: &Path) -> Result<Self, OutputError> {
        let file_name = path.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
        let temporary = path.with_file_name(format!(".{file_name}.tmp"));
        let file =
            fs::File::create(&temporary).map_err(|source| OutputError::Io { path: temporary.clone(), source })?;
        Ok(Self { path: path.to_path_buf(), temporary, writer: std::io::BufWriter::new(file) })
    }

    fn write_line(&mut self, row: &Map<String, Value>) -> Result<(), OutputError> {
        let io_error = |source| OutputError::Io { path: self.temporary.clone(), source };
        serde_json::to_writer(&mut self.writer, row).map_err(|err| io_error(std::io::Error::other(err)))?;
        self.writer.write_all(b"\n").map_err(io_error)
    }

    /// Flushes, syncs and renames into place; returns the final path.
    fn commit(self) -> Result<PathBuf, OutputError> {
        let io_error = |source| OutputError::Io { path: self.temporary.clone(), source };
        let file = self.writer.into_inner().map_err(|err| io_error(err.into_error()))?;
        file.sync_data().map_err(io_error)?;
        drop(file);
        fs::rename(&self.temporary, &self.path).map_err(io_error)?;
        Ok(self.path)
    }
}

fn duration_of(row: &Map<String, Value>) -> f64 {
    row.get("duration_s").and_then(Value::as_f64).unwrap_or(0.0)
}

fn remove_if_present(path: &Path) -> Result<(), OutputError> {
    match fs::remove_file(path) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
            Err(OutputError::Io { path: path.to_path_buf(), source: err })
        }
        _ => Ok(()),
    }
}

/// Writes a file under a temporary name in the same folder, syncs it and renames it into place,
/// so a reader (or a killed run) never sees half a file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), OutputError> {
    let io_error = |source| OutputError::Io { path: path.to_path_buf(), source };
    let file_name = path.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
    let temporary = path.with_file_name(format!(".{file_name}.tmp"));
    let mut file = fs::File::create(&temporary).map_err(io_error)?;
    file.write_all(bytes).map_err(io_error)?;
    file.sync_data().map_err(io_error)?;
    drop(file);
    fs::rename(&temporary, path).map_err(io_error)
}

/// Column meanings for the dataset card, in manifest order.
const COLUMN_DOCS: &[(&str, &str)] = &[
    ("audio", "the standardised clip (16-bit FLAC or WAV bytes in the Parquet row; `audio_path` on disk)"),
    ("id", "stable clip id; also the audio file's name"),
    ("source", "the input path as given on the command line or in the input manifest"),
    ("audio_path", "the audio file, relative to this folder"),
    ("duration_s", "decoded duration of the source in seconds, encoder delay and padding removed"),
    ("sample_rate", "sample rate of the output audio in Hz"),
    ("num_samples", "samples in the output audio"),
    ("source_container", "container of the source file"),
    ("source_codec", "codec of the source"),
    ("source_sample_rate", "sample rate of the source in Hz"),
    ("source_channels", "channels of the source (mixed to mono)"),
    ("source_bits_per_sample", "bits per coded sample of the source, where defined"),
    ("peak_dbfs", "sample peak of the source, dBFS"),
    ("rms_dbfs", "RMS level of the source, dBFS"),
    ("loudness_lufs", "integrated loudness of the source, EBU R128, LUFS"),
    ("clipping_ratio", "fraction of source samples at full scale"),
    ("dc_offset", "mean sample value of the source"),
    ("non_finite_samples", "NaN or infinite samples in the source"),
    ("over_full_scale_samples", "source samples above full scale (float formats)"),
    ("downmix_gain_db", "energy of the mono downmix relative to the channels, dB (multichannel sources)"),
    ("leading_silence_s", "seconds before the first speech"),
    ("trailing_silence_s", "seconds after the last speech"),
    ("total_silence_s", "seconds of non-speech in total"),
    ("speech_ratio", "fraction of frames the voice activity detector calls speech"),
    ("snr_db", "estimated speech energy over noise energy across the clip, dB"),
    ("bandwidth_hz", "effective bandwidth of the source, Hz"),
    ("gain_db", "gain applied by loudness normalisation, dB"),
    ("output_loudness_lufs", "integrated loudness of the output audio, LUFS"),
    ("output_peak_dbfs", "sample peak of the output audio, dBFS"),
    ("warnings", "things worth knowing that did not stop the clip"),
    ("content_hash", "hash of the decoded source samples"),
    ("duplicate_of", "id of the earlier clip with the same decoded audio, if any"),
];

/// Meanings of the columns only some runs have (the enhancement stage's, when it is on); the
/// dataset card lists those that appear.
const OPTIONAL_COLUMN_DOCS: &[(&str, &str)] = &[
    (
        "enhancement",
        "what denoising did: `applied` (the audio is denoised), `not_improved` or `failed` (the audio is \
         standardised only; `warnings` says why)",
    ),
    ("snr_enhanced_db", "estimated SNR of the denoised signal, dB (`snr_db` is the input's)"),
];

/// The columns the dataset card lists beside [`COLUMN_DOCS`].
struct CardColumns<'a> {
    /// Columns of [`OPTIONAL_COLUMN_DOCS`] that appear in the manifest.
    optional: &'a BTreeSet<&'static str>,
    /// Columns carried through from input manifests.
    carried: &'a BTreeSet<String>,
}

fn dataset_card(
    summary: &Summary,
    columns: &CardColumns<'_>,
    source_folders: &BTreeSet<String>,
    more_folders: bool,
    facts: &RunFacts,
) -> String {
    let mut card = String::new();
    let target = facts.config.pointer("/standardise/target_lufs").cloned().unwrap_or(Value::Null);
    let rate = facts.config.pointer("/standardise/sample_rate_hz").cloned().unwrap_or(Value::Null);
    card.push_str("---\nconfigs:\n- config_name: default\n  data_files:\n  - split: train\n    path: data/train-*.parquet\n---\n\n");
    card.push_str("# Speech dataset made by speechmill\n\n");
    card.push_str(&format!(
        "{} of {} clips accepted ({:.3} of {:.3} hours of audio); {} rejected (see `rejected.jsonl`).\n\n",
        summary.accepted, summary.clips, summary.hours_out, summary.hours_in, summary.rejected
    ));
    card.push_str(&format!(
        "Every clip is mono, {rate} Hz, 16-bit, loudness-normalised (target {target} LUFS, peak-limited), and measured. \
         Made by speechmill {} with configuration hash `{}` (the full configuration is in `report.json`).\n\n",
        facts.speechmill_version, facts.config_hash
    ));
    card.push_str("## Files\n\n- `data/train-*.parquet`: one row per accepted clip, with the audio bytes in the row \
        (`datasets.load_dataset(\"parquet\", data_files=\"data/*.parquet\")`).\n- `audio/`: the same audio as files.\n\
        - `manifest.jsonl`: one line per accepted clip.\n- `rejected.jsonl`: one line per rejected clip with `reason`, `message` and `stage`.\n\
        - `report.json`: counts, hours, timing and what makes the run reproducible.\n\n");
    if !summary.rejected_by_reason.is_empty() {
        card.push_str("## Rejections\n\n| reason | clips |\n|---|---|\n");
        for (reason, count) in &summary.rejected_by_reason {
            card.push_str(&format!("| `{reason}` | {count} |\n"));
        }
        card.push('\n');
    }
    card.push_str("## Columns\n\n| column | meaning |\n|---|---|\n");
    for (name, meaning) in COLUMN_DOCS {
        card.push_str(&format!("| `{name}` | {meaning} |\n"));
    }
    for (name, meaning) in OPTIONAL_COLUMN_DOCS.iter().filter(|(name, _)| columns.optional.contains(name)) {
        card.push_str(&format!("| `{name}` | {meaning} |\n"));
    }
    for name in columns.carried {
        card.push_str(&format!("| `{name}` | carried through from the input manifest |\n"));
    }
    card.push_str("\n## Where the audio came from\n\nEach row's `source` names the input file. ");
    if !source_folders.is_empty() {
        card.push_str("Input folders:\n\n");
        for source in source_folders {
            card.push_str(&format!("- `{}`\n", if source.is_empty() { "." } else { source }));
        }
        if more_folders {
            card.push_str("- ... and more\n");
        }
    }
    card.push_str("\nThe licences of the source recordings apply to the audio in this dataset.\n");
    card
}
