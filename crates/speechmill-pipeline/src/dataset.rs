//! Dataset writers: Parquet shards that Hugging Face `datasets` loads, with audio bytes in the row.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

/// Why writing the dataset failed.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    /// A file could not be written or read.
    #[error("{path}: {source}")]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The Parquet writer failed.
    #[error("parquet: {0}")]
    Parquet(String),
}

/// How the Parquet shards are laid out.
#[derive(Debug, Clone)]
pub struct ParquetOptions {
    /// Sampling rate declared in the `Audio` feature.
    pub sampling_rate: u32,
    /// A new shard starts once the current one holds this many bytes of audio.
    pub max_shard_bytes: u64,
    /// The split name used in shard file names (`train`).
    pub split: String,
}

/// Writes `rows` as Parquet shards `DIR/data/{split}-NNNNN-of-MMMMM.parquet`, one row per clip.
///
/// Every key of every row becomes a column (types inferred from the JSON values: integers as
/// int64, other numbers as float64, booleans, strings; arrays and objects as JSON text; missing as
/// null), in order of first appearance, plus a column `audio` of type
/// `Audio(sampling_rate)` holding `{bytes, path}` where `bytes` comes from `audio(i)` for row `i`
/// and `path` is the row's `audio_path` file name. The files carry the `huggingface` schema
/// metadata so that `datasets` restores the features. Files are written under temporary names
/// and renamed, so a crash never leaves a half-written shard. Returns the shard paths.
pub fn write_parquet_shards(
    out_dir: &Path,
    rows: &[Map<String, Value>],
    audio: &mut dyn FnMut(usize) -> std::io::Result<Vec<u8>>,
    options: &ParquetOptions,
) -> Result<Vec<PathBuf>, DatasetError> {
    let _ = (out_dir, rows, audio, options);
    todo!("dataset helper")
}
