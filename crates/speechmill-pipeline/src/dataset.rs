//! Dataset writers: Parquet shards that Hugging Face `datasets` loads, with audio bytes in the row.
//!
//! The Parquet files are written with the `parquet` crate's low-level column writers (no Arrow).
//! Their schema is what `datasets` itself writes for an `Audio` column plus `Value` columns:
//!
//! ```text
//! message schema {
//!   optional group audio { optional binary bytes; optional binary path (STRING); }
//!   optional int64 duration_ms;          // all values integers
//!   optional double snr_db;              // numbers, not all integers
//!   optional boolean passed;
//!   optional binary speaker (STRING);    // strings, arrays and objects (as JSON text)
//! }
//! ```
//!
//! and the key-value metadata `huggingface` carries the `datasets` features, which is how
//! `datasets` knows `audio` is `Audio(sampling_rate=R)` rather than a plain struct.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parquet::basic::{Compression, ConvertedType, Repetition, Type as PhysicalType};
use parquet::data_type::{BoolType, ByteArray, ByteArrayType, DoubleType, Int64Type};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::writer::{SerializedColumnWriter, SerializedFileWriter};
use parquet::schema::types::{ColumnPath, Type, TypePtr};
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
    /// A row has a key that names the audio column, which the writer fills itself.
    #[error("row {row}: key `audio` is reserved for the audio column")]
    ReservedKey {
        /// Index of the offending row.
        row: usize,
    },
}

impl From<parquet::errors::ParquetError> for DatasetError {
    fn from(error: parquet::errors::ParquetError) -> Self {
        Self::Parquet(error.to_string())
    }
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

/// The column that holds `{bytes, path}` of each clip.
const AUDIO_COLUMN: &str = "audio";
/// The row key whose file name becomes `audio.path`.
const AUDIO_PATH_KEY: &str = "audio_path";
/// A row group is closed at this many rows (`datasets` and the Hub's viewer read audio datasets
/// one row group at a time, so row groups must stay small enough to hold in memory).
const ROW_GROUP_MAX_ROWS: usize = 1000;
/// A row group is closed once it holds this many bytes of audio. Writing holds one row group,
/// so this (plus the longest clip) bounds the memory of writing a shard.
const ROW_GROUP_MAX_AUDIO_BYTES: usize = 32 << 20;

/// Writes `rows` as Parquet shards `DIR/data/{split}-NNNNN-of-MMMMM.parquet`, one row per clip.
///
/// Every key of every row becomes a column (types inferred from the JSON values: integers as
/// int64, other numbers as float64, booleans, strings; arrays and objects as JSON text; missing as
/// null), in order of first appearance, plus a column `audio` of type
/// `Audio(sampling_rate)` holding `{bytes, path}` where `bytes` comes from `audio(i)` for row `i`
/// and `path` is the row's `audio_path` file name. The files carry the `huggingface` schema
/// metadata so that `datasets` restores the features. Files are written under temporary names
/// and renamed, so a crash never leaves a half-written shard. Returns the shard paths.
///
/// Details: `audio` is the first column. A JSON `null` counts as missing. A key whose values
/// mix kinds (say numbers and strings), or that holds any array or object, becomes a string
/// column with every value as JSON text; a key that is always null becomes a string column.
/// A shard is closed once its audio reaches `max_shard_bytes`, so every shard holds at least one
/// row; with no rows at all one empty shard is written so the split still loads. Shards of the
/// same split left by an earlier run (`{split}-NNNNN-of-MMMMM.parquet`) are removed once the new
/// ones are in place.
///
/// # Errors
///
/// [`DatasetError::ReservedKey`] when a row has a key `audio`; [`DatasetError::Io`] when
/// `audio(i)` fails (with the row's `audio_path`) or a file cannot be written;
/// [`DatasetError::Parquet`] when the Parquet writer fails. Temporary files are removed on error.
pub fn write_parquet_shards(
    out_dir: &Path,
    rows: &[Map<String, Value>],
    audio: &mut dyn FnMut(usize) -> std::io::Result<Vec<u8>>,
    options: &ParquetOptions,
) -> Result<Vec<PathBuf>, DatasetError> {
    let columns = infer_columns(rows)?;
    let mut source = rows.iter().enumerate().map(|(index, row)| {
        audio(index).map(|bytes| (row.clone(), bytes)).map_err(|source| io_error(&row_audio_path(rows, index), source))
    });
    write_shards(out_dir, columns, &mut source, options)
}

/// Writes the rows of a JSON-lines manifest (`manifest.jsonl`) as Parquet shards, like
/// [`write_parquet_shards`], reading the file twice (once for the columns, once for the rows)
/// and each row's audio from its `audio_path` under `out_dir`, so memory does not grow with the
/// number of rows: at most one row group (1,000 rows or 32 MiB of audio) is held.
///
/// # Errors
///
/// As [`write_parquet_shards`], plus [`DatasetError::Io`] when the manifest cannot be read or
/// a line is not a JSON object.
pub fn write_parquet_shards_from_jsonl(
    out_dir: &Path,
    manifest: &Path,
    options: &ParquetOptions,
) -> Result<Vec<PathBuf>, DatasetError> {
    let mut inference = ColumnInference::default();
    for (index, row) in read_jsonl_rows(manifest)?.enumerate() {
        inference.add(index, &row?)?;
    }
    let columns = inference.finish();
    let mut source = read_jsonl_rows(manifest)?.map(|row| {
        let row = row?;
        let relative = row.get(AUDIO_PATH_KEY).and_then(Value::as_str).unwrap_or_default();
        let path = out_dir.join(relative);
        let bytes = fs::read(&path).map_err(|source| io_error(&path, source))?;
        Ok((row, bytes))
    });
    write_shards(out_dir, columns, &mut source, options)
}

/// The rows of a JSON-lines file, one object per line, read lazily.
fn read_jsonl_rows(
    path: &Path,
) -> Result<impl Iterator<Item = Result<Map<String, Value>, DatasetError>> + use<>, DatasetError> {
    let file = File::open(path).map_err(|source| io_error(path, source))?;
    let path = path.to_path_buf();
    Ok(BufReader::new(file).lines().filter(|line| !matches!(line, Ok(text) if text.trim().is_empty())).map(
        move |line| {
            let line = line.map_err(|source| io_error(&path, source))?;
            match serde_json::from_str(&line) {
                Ok(Value::Object(row)) => Ok(row),
                _ => Err(io_error(
                    &path,
                    std::io::Error::new(std::io::ErrorKind::InvalidData, "a line is not a JSON object"),
                )),
            }
        },
    ))
}

/// A row and its encoded audio, in order, for [`write_shards`].
type RowSource<'a> = dyn Iterator<Item = Result<(Map<String, Value>, Vec<u8>), DatasetError>> + 'a;

/// Writes the shards of one split from rows handed out one at a time.
fn write_shards(
    out_dir: &Path,
    columns: Vec<Column>,
    rows: &mut RowSource<'_>,
    options: &ParquetOptions,
) -> Result<Vec<PathBuf>, DatasetError> {
    let layout = ShardLayout {
        schema: build_schema(&columns)?,
        properties: Arc::new(writer_properties(&columns, options.sampling_rate)),
        columns,
        max_shard_bytes: options.max_shard_bytes,
    };
    let data_dir = out_dir.join("data");
    fs::create_dir_all(&data_dir).map_err(|source| io_error(&data_dir, source))?;
    remove_matching(&data_dir, |name| is_temporary_shard_name(name, &options.split))?;

    let mut rows = rows.peekable();
    let mut temporary = TemporaryFiles::default();
    loop {
        let temp_path = data_dir.join(temporary_shard_name(&options.split, temporary.paths.len()));
        temporary.paths.push(temp_path.clone());
        layout.write_shard(&temp_path, &mut rows)?;
        if rows.peek().is_none() {
            break;
        }
    }

    let shard_count = temporary.paths.len();
    let mut shard_paths = Vec::with_capacity(shard_count);
    for (index, temp_path) in temporary.paths.iter().enumerate() {
        let shard_path = data_dir.join(shard_name(&options.split, index, shard_count));
        fs::rename(temp_path, &shard_path).map_err(|source| io_error(&shard_path, source))?;
        shard_paths.push(shard_path);
    }
    temporary.paths.clear();
    sync_dir(&data_dir)?;

    let fresh: HashSet<&std::ffi::OsStr> = shard_paths.iter().filter_map(|p| p.file_name()).collect();
    remove_matching(&data_dir, |name| {
        is_shard_name(name, &options.split) && !fresh.contains(std::ffi::OsStr::new(name))
    })?;
    Ok(shard_paths)
}

/// What a column holds, inferred from the JSON values of one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ColumnKind {
    /// Every value is an integer that fits in i64.
    Int64,
    /// Every value is a number, at least one of them not an i64.
    Double,
    /// Every value is a boolean.
    Boolean,
    /// Every value is a string.
    String,
    /// Arrays, objects, or a mix of kinds: every value is written as JSON text.
    Json,
}

impl ColumnKind {
    /// The kind of one non-null JSON value.
    fn of(value: &Value) -> Option<Self> {
        match value {
            Value::Null => None,
            Value::Bool(_) => Some(Self::Boolean),
            Value::Number(number) if number.is_i64() => Some(Self::Int64),
            Value::Number(_) => Some(Self::Double),
            Value::String(_) => Some(Self::String),
            Value::Array(_) | Value::Object(_) => Some(Self::Json),
        }
    }

    /// The kind of a column holding values of both kinds.
    fn merge(self, other: Self) -> Self {
        match (self, other) {
            (left, right) if left == right => left,
            (Self::Int64 | Self::Double, Self::Int64 | Self::Double) => Self::Double,
            _ => Self::Json,
        }
    }

    /// The `datasets` `Value` dtype of this kind.
    fn hf_dtype(self) -> &'static str {
        match self {
            Self::Int64 => "int64",
            Self::Double => "float64",
            Self::Boolean => "bool",
            Self::String | Self::Json => "string",
        }
    }
}

/// One JSON key and the kind of its column.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Column {
    name: String,
    kind: ColumnKind,
}

/// The JSON columns in order of first appearance, with their kinds.
fn infer_columns(rows: &[Map<String, Value>]) -> Result<Vec<Column>, DatasetError> {
    let mut inference = ColumnInference::default();
    for (index, row) in rows.iter().enumerate() {
        inference.add(index, row)?;
    }
    Ok(inference.finish())
}

/// Column names in order of first appearance and their kinds, gathered row by row.
#[derive(Default)]
struct ColumnInference {
    names: Vec<String>,
    kinds: Vec<Option<ColumnKind>>,
    positions: std::collections::HashMap<String, usize>,
}

impl ColumnInference {
    fn add(&mut self, row_index: usize, row: &Map<String, Value>) -> Result<(), DatasetError> {
        if row.contains_key(AUDIO_COLUMN) {
            return Err(DatasetError::ReservedKey { row: row_index });
        }
        for (name, value) in row {
            let position = match self.positions.get(name.as_str()) {
                Some(&position) => position,
                None => {
                    self.names.push(name.clone());
                    self.kinds.push(None);
                    self.positions.insert(name.clone(), self.names.len() - 1);
                    self.names.len() - 1
                }
            };
            if let Some(kind) = ColumnKind::of(value) {
                self.kinds[position] = Some(self.kinds[position].map_or(kind, |seen| seen.merge(kind)));
            }
        }
        Ok(())
    }

    fn finish(self) -> Vec<Column> {
        self.names
            .into_iter()
            .zip(self.kinds)
            .map(|(name, kind)| Column { name, kind: kind.unwrap_or(ColumnKind::String) })
            .collect()
    }
}

fn build_schema(columns: &[Column]) -> Result<TypePtr, DatasetError> {
    let audio_bytes = Type::primitive_type_builder("bytes", PhysicalType::BYTE_ARRAY)
        .with_repetition(Repetition::OPTIONAL)
        .build()?;
    let audio_path = Type::primitive_type_builder("path", PhysicalType::BYTE_ARRAY)
        .with_repetition(Repetition::OPTIONAL)
        .with_converted_type(ConvertedType::UTF8)
        .build()?;
    let audio = Type::group_type_builder(AUDIO_COLUMN)
        .with_repetition(Repetition::OPTIONAL)
        .with_fields(vec![Arc::new(audio_bytes), Arc::new(audio_path)])
        .build()?;
    let mut fields = vec![Arc::new(audio)];
    for column in columns {
        let (physical, converted) = match column.kind {
            ColumnKind::Int64 => (PhysicalType::INT64, ConvertedType::NONE),
            ColumnKind::Double => (PhysicalType::DOUBLE, ConvertedType::NONE),
            ColumnKind::Boolean => (PhysicalType::BOOLEAN, ConvertedType::NONE),
            ColumnKind::String | ColumnKind::Json => (PhysicalType::BYTE_ARRAY, ConvertedType::UTF8),
        };
        let field = Type::primitive_type_builder(&column.name, physical)
            .with_repetition(Repetition::OPTIONAL)
            .with_converted_type(converted)
            .build()?;
        fields.push(Arc::new(field));
    }
    Ok(Arc::new(Type::group_type_builder("schema").with_fields(fields).build()?))
}

/// The `huggingface` metadata value: `{"info": {"features": {...}}}` with the features in
/// column order.
///
/// Built as text so that the order does not depend on whether `serde_json` preserves the order
/// of object keys.
fn huggingface_metadata(columns: &[Column], sampling_rate: u32) -> String {
    let mut features = format!(r#""{AUDIO_COLUMN}":{{"_type":"Audio","sampling_rate":{sampling_rate}}}"#);
    for column in columns {
        let quoted_name = Value::String(column.name.clone()).to_string();
        let dtype = column.kind.hf_dtype();
        features.push_str(&format!(r#",{quoted_name}:{{"dtype":"{dtype}","_type":"Value"}}"#));
    }
    format!(r#"{{"info":{{"features":{{{features}}}}}}}"#)
}

fn writer_properties(columns: &[Column], sampling_rate: u32) -> WriterProperties {
    let audio_bytes = ColumnPath::new(vec![AUDIO_COLUMN.to_owned(), "bytes".to_owned()]);
    WriterProperties::builder()
        .set_created_by(format!("speechmill {}", env!("CARGO_PKG_VERSION")))
        .set_compression(Compression::SNAPPY)
        // Encoded audio does not compress, is never repeated, and min/max statistics of it
        // are useless: skip the work.
        .set_column_compression(audio_bytes.clone(), Compression::UNCOMPRESSED)
        .set_column_dictionary_enabled(audio_bytes.clone(), false)
        .set_column_statistics_enabled(audio_bytes, EnabledStatistics::None)
        .set_key_value_metadata(Some(vec![KeyValue::new(
            "huggingface".to_owned(),
            huggingface_metadata(columns, sampling_rate),
        )]))
        .build()
}

/// What every shard of one run shares.
struct ShardLayout {
    /// The JSON columns, after `audio`.
    columns: Vec<Column>,
    schema: TypePtr,
    properties: Arc<WriterProperties>,
    /// A shard is closed once its audio reaches this many bytes.
    max_shard_bytes: u64,
}

impl ShardLayout {
    /// Writes rows from `rows` into one shard at `path` until its audio reaches
    /// `max_shard_bytes` or the rows run out.
    fn write_shard(&self, path: &Path, rows: &mut std::iter::Peekable<&mut RowSource<'_>>) -> Result<(), DatasetError> {
        let file = File::create(path).map_err(|source| io_error(path, source))?;
        let mut writer = SerializedFileWriter::new(BufWriter::new(file), self.schema.clone(), self.properties.clone())?;
        let mut shard_audio_bytes: u64 = 0;
        let mut group_rows: Vec<Map<String, Value>> = Vec::new();
        let mut group_audio: Vec<Vec<u8>> = Vec::new();
        let mut group_audio_bytes = 0;
        // `max(1)`: even with a limit of 0 every shard takes a row, so the caller's loop ends.
        while shard_audio_bytes < self.max_shard_bytes.max(1) {
            let Some(next) = rows.next() else { break };
            let (row, bytes) = next?;
            shard_audio_bytes += bytes.len() as u64;
            group_audio_bytes += bytes.len();
            group_rows.push(row);
            group_audio.push(bytes);
            if group_audio.len() >= ROW_GROUP_MAX_ROWS || group_audio_bytes >= ROW_GROUP_MAX_AUDIO_BYTES {
                write_row_group(&mut writer, &group_rows, std::mem::take(&mut group_audio), &self.columns)?;
                group_rows.clear();
                group_audio_bytes = 0;
            }
        }
        if !group_audio.is_empty() {
            write_row_group(&mut writer, &group_rows, group_audio, &self.columns)?;
        }
        let buffered = writer.into_inner()?;
        let file = buffered.into_inner().map_err(|error| io_error(path, error.into_error()))?;
        file.sync_all().map_err(|source| io_error(path, source))?;
        Ok(())
    }
}

/// Writes one row group: `rows[i]` with audio bytes `audio[i]`.
fn write_row_group<W: Write + Send>(
    writer: &mut SerializedFileWriter<W>,
    rows: &[Map<String, Value>],
    audio: Vec<Vec<u8>>,
    columns: &[Column],
) -> Result<(), DatasetError> {
    let mut row_group = writer.next_row_group()?;

    let mut column_writer = next_column(&mut row_group)?;
    // Levels of audio.bytes: 2 = present (the group is always present).
    let audio_levels = vec![2i16; audio.len()];
    let audio_values: Vec<ByteArray> = audio.into_iter().map(ByteArray::from).collect();
    column_writer.typed::<ByteArrayType>().write_batch(&audio_values, Some(&audio_levels), None)?;
    column_writer.close()?;
    drop(audio_values);

    let mut column_writer = next_column(&mut row_group)?;
    let file_names: Vec<Option<String>> = rows.iter().map(audio_file_name).collect();
    let path_levels: Vec<i16> = file_names.iter().map(|name| if name.is_some() { 2 } else { 1 }).collect();
    let path_values: Vec<ByteArray> =
        file_names.into_iter().flatten().map(|name| ByteArray::from(name.into_bytes())).collect();
    column_writer.typed::<ByteArrayType>().write_batch(&path_values, Some(&path_levels), None)?;
    column_writer.close()?;

    for column in columns {
        let mut column_writer = next_column(&mut row_group)?;
        write_json_column(&mut column_writer, rows, column)?;
        column_writer.close()?;
    }
    row_group.close()?;
    Ok(())
}

fn next_column<'a, W: Write + Send>(
    row_group: &'a mut parquet::file::writer::SerializedRowGroupWriter<'_, W>,
) -> Result<SerializedColumnWriter<'a>, DatasetError> {
    row_group.next_column()?.ok_or_else(|| DatasetError::Parquet("fewer columns in the schema than written".to_owned()))
}

/// Writes the values of one JSON key; a missing key or a `null` is a null (level 0).
fn write_json_column(
    column_writer: &mut SerializedColumnWriter<'_>,
    rows: &[Map<String, Value>],
    column: &Column,
) -> Result<(), DatasetError> {
    let values: Vec<Option<&Value>> =
        rows.iter().map(|row| row.get(&column.name).filter(|value| !value.is_null())).collect();
    let levels: Vec<i16> = values.iter().map(|value| i16::from(value.is_some())).collect();
    let present = values.iter().flatten();
    match column.kind {
        ColumnKind::Int64 => {
            let ints: Vec<i64> = present.filter_map(|value| value.as_i64()).collect();
            column_writer.typed::<Int64Type>().write_batch(&ints, Some(&levels), None)?;
        }
        ColumnKind::Double => {
            let doubles: Vec<f64> = present.filter_map(|value| value.as_f64()).collect();
            column_writer.typed::<DoubleType>().write_batch(&doubles, Some(&levels), None)?;
        }
        ColumnKind::Boolean => {
            let bools: Vec<bool> = present.filter_map(|value| value.as_bool()).collect();
            column_writer.typed::<BoolType>().write_batch(&bools, Some(&levels), None)?;
        }
        ColumnKind::String | ColumnKind::Json => {
            let texts: Vec<ByteArray> = present
                .map(|value| match (column.kind, value) {
                    (ColumnKind::String, Value::String(text)) => ByteArray::from(text.as_str()),
                    _ => ByteArray::from(value.to_string().into_bytes()),
                })
                .collect();
            column_writer.typed::<ByteArrayType>().write_batch(&texts, Some(&levels), None)?;
        }
    }
    Ok(())
}

/// The file name of the row's `audio_path`, if it has one.
fn audio_file_name(row: &Map<String, Value>) -> Option<String> {
    let path = row.get(AUDIO_PATH_KEY)?.as_str()?;
    Path::new(path).file_name().map(|name| name.to_string_lossy().into_owned())
}

/// The path to name in an error about row `row`'s audio.
fn row_audio_path(rows: &[Map<String, Value>], row: usize) -> PathBuf {
    rows[row]
        .get(AUDIO_PATH_KEY)
        .and_then(Value::as_str)
        .map_or_else(|| PathBuf::from(format!("row {row}")), PathBuf::from)
}

fn shard_name(split: &str, index: usize, count: usize) -> String {
    format!("{split}-{index:05}-of-{count:05}.parquet")
}

/// A hidden name that does not match `*.parquet`, so a reader never picks up a partial shard.
fn temporary_shard_name(split: &str, index: usize) -> String {
    format!(".{split}-{index:05}.parquet.partial")
}

/// Whether `name` is `{split}-NNNNN-of-MMMMM.parquet` (any number of digits, at least five).
fn is_shard_name(name: &str, split: &str) -> bool {
    let Some(numbers) =
        name.strip_prefix(split).and_then(|rest| rest.strip_prefix('-')).and_then(|rest| rest.strip_suffix(".parquet"))
    else {
        return false;
    };
    let Some((index, count)) = numbers.split_once("-of-") else {
        return false;
    };
    let is_number = |text: &str| text.len() >= 5 && text.bytes().all(|byte| byte.is_ascii_digit());
    is_number(index) && is_number(count)
}

fn is_temporary_shard_name(name: &str, split: &str) -> bool {
    name.strip_prefix('.')
        .and_then(|rest| rest.strip_prefix(split))
        .and_then(|rest| rest.strip_prefix('-'))
        .and_then(|rest| rest.strip_suffix(".parquet.partial"))
        .is_some_and(|index| !index.is_empty() && index.bytes().all(|byte| byte.is_ascii_digit()))
}

/// Removes the files of `dir` whose names satisfy `matches`.
fn remove_matching(dir: &Path, matches: impl Fn(&str) -> bool) -> Result<(), DatasetError> {
    let entries = fs::read_dir(dir).map_err(|source| io_error(dir, source))?;
    for entry in entries {
        let entry = entry.map_err(|source| io_error(dir, source))?;
        let name = entry.file_name();
        if name.to_str().is_some_and(&matches) {
            let path = entry.path();
            fs::remove_file(&path).map_err(|source| io_error(&path, source))?;
        }
    }
    Ok(())
}

/// Makes the renames durable (a directory's entries are flushed by syncing the directory).
#[cfg(unix)]
fn sync_dir(dir: &Path) -> Result<(), DatasetError> {
    File::open(dir).and_then(|handle| handle.sync_all()).map_err(|source| io_error(dir, source))
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> Result<(), DatasetError> {
    Ok(())
}

fn io_error(path: &Path, source: std::io::Error) -> DatasetError {
    DatasetError::Io { path: path.to_owned(), source }
}

/// Temporary shard files, removed when dropped unless they were renamed (and taken out).
#[derive(Default)]
struct TemporaryFiles {
    paths: Vec<PathBuf>,
}

impl Drop for TemporaryFiles {
    fn drop(&mut self) {
        for path in &self.paths {
            // Best effort on an error path: the next run removes leftovers too.
            let _ = fs::remove_file(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => unreachable!("test rows are objects"),
        }
    }

    #[test]
    fn infer_columns_keeps_first_appearance_order_and_types() {
        let rows = [
            row(json!({"id": "a", "n": 1, "x": 1, "ok": true, "tags": ["t"], "mixed": 1})),
            row(json!({"n": 2, "x": 2.5, "late": null, "mixed": "s", "extra": {"k": 1}})),
            row(json!({"id": null})),
        ];
        let columns = infer_columns(&rows).unwrap();
        let summary: Vec<(&str, ColumnKind)> =
            columns.iter().map(|column| (column.name.as_str(), column.kind)).collect();
        assert_eq!(
            summary,
            [
                ("id", ColumnKind::String),
                ("n", ColumnKind::Int64),
                ("x", ColumnKind::Double),
                ("ok", ColumnKind::Boolean),
                ("tags", ColumnKind::Json),
                ("mixed", ColumnKind::Json),
                ("late", ColumnKind::String),
                ("extra", ColumnKind::Json),
            ]
        );
    }

    #[test]
    fn infer_columns_rejects_audio_key() {
        let rows = [row(json!({"id": 1})), row(json!({"audio": "x"}))];
        assert!(matches!(infer_columns(&rows), Err(DatasetError::ReservedKey { row: 1 })));
    }

    #[test]
    fn large_unsigned_integers_are_doubles() {
        let rows = [row(json!({"big": u64::MAX}))];
        assert_eq!(infer_columns(&rows).unwrap()[0].kind, ColumnKind::Double);
    }

    #[test]
    fn huggingface_metadata_lists_features_in_column_order() {
        let columns = [
            Column { name: "z".to_owned(), kind: ColumnKind::Double },
            Column { name: "a \"q\"".to_owned(), kind: ColumnKind::Json },
        ];
        let text = huggingface_metadata(&columns, 16_000);
        assert_eq!(
            text,
            r#"{"info":{"features":{"audio":{"_type":"Audio","sampling_rate":16000},"z":{"dtype":"float64","_type":"Value"},"a \"q\"":{"dtype":"string","_type":"Value"}}}}"#
        );
        serde_json::from_str::<Value>(&text).unwrap();
    }

    #[test]
    fn shard_names_are_recognised_per_split() {
        assert_eq!(shard_name("train", 2, 13), "train-00002-of-00013.parquet");
        assert!(is_shard_name("train-00002-of-00013.parquet", "train"));
        assert!(!is_shard_name("train-clean-00000-of-00001.parquet", "train"));
        assert!(!is_shard_name("train-00000-of-00001.parquet", "test"));
        assert!(!is_shard_name("train-0-of-1.parquet", "train"));
        assert!(is_temporary_shard_name(&temporary_shard_name("train", 7), "train"));
        assert!(!is_temporary_shard_name(&temporary_shard_name("train", 7), "trai"));
    }

    #[test]
    fn audio_file_name_is_the_last_component() {
        assert_eq!(audio_file_name(&row(json!({"audio_path": "in/a/b.wav"}))).as_deref(), Some("b.wav"));
        assert_eq!(audio_file_name(&row(json!({"audio_path": 3}))), None);
        assert_eq!(audio_file_name(&row(json!({}))), None);
    }
}
