//! Finding the clips of a run: files, directories (recursive) and manifests (`.jsonl`, `.csv`).

use std::collections::{BTreeMap, HashSet};
use std::ffi::OsStr;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};
use speechmill_audio::decode::RawFormat;

/// Text files that a directory walk passes over: transcripts and metadata sit beside audio.
const SKIPPED_EXTENSIONS: &[&str] =
    &["txt", "md", "json", "jsonl", "csv", "tsv", "lab", "sh", "py", "toml", "yaml", "yml"];

/// Columns of a manifest that speechmill interprets rather than carries through.
const RESERVED_COLUMNS: &[&str] = &["path", "raw_format"];

/// One clip to process.
#[derive(Debug, Clone, PartialEq)]
pub struct InputClip {
    /// Stable id: the manifest's `id`, or one made from the path.
    pub id: String,
    /// The path as the user gave it (on the command line or in the manifest), for display.
    pub source: String,
    /// The file to read.
    pub path: PathBuf,
    /// Raw PCM format for headerless files (`raw_format` column, else the run's default).
    pub raw_format: Option<RawFormat>,
    /// Columns carried through to the manifest (`id`, `transcript`, `speaker`, ...).
    pub columns: Map<String, Value>,
}

/// Why the inputs could not be listed. These are usage errors: the run does not start.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// An input named on the command line does not exist or cannot be read.
    #[error("{path}: {source}")]
    Io {
        /// The input.
        path: String,
        /// What went wrong.
        source: std::io::Error,
    },
    /// A manifest is malformed.
    #[error("{path}:{line}: {message}")]
    Manifest {
        /// The manifest.
        path: String,
        /// 1-based line (for CSV, the record number plus one for the header).
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// Two clips ended up with the same id.
    #[error("two inputs have the same id {id:?}: {first} and {second}")]
    DuplicateId {
        /// The id.
        id: String,
        /// First input.
        first: String,
        /// Second input.
        second: String,
    },
    /// No inputs at all.
    #[error("no input files found")]
    Nothing,
}

/// Lists the clips named by `inputs`, sorted by path so that the order never depends on timing.
///
/// Files are taken as they are (recognised by content later); directories are walked recursively,
/// passing over hidden entries and text files; `.jsonl` and `.csv` files are manifests with a
/// `path` column (relative paths are relative to the manifest's folder).
pub fn discover(inputs: &[PathBuf], default_raw: Option<RawFormat>) -> Result<Vec<InputClip>, InputError> {
    let mut found: Vec<InputClip> = Vec::new();
    for input in inputs {
        let metadata = fs::metadata(input).map_err(|source| InputError::Io { path: display(input), source })?;
        if metadata.is_dir() {
            let mut files = Vec::new();
            walk(input, &mut files)?;
            for file in files {
                found.push(clip_from_path(file, default_raw));
            }
        } else if is_manifest(input) {
            found.extend(read_manifest(input, default_raw)?);
        } else {
            found.push(clip_from_path(input.clone(), default_raw));
        }
    }
    if found.is_empty() {
        return Err(InputError::Nothing);
    }
    found.sort_by(|a, b| a.path.cmp(&b.path).then_with(|| a.source.cmp(&b.source)));
    found.dedup_by(|later, earlier| later.path == earlier.path && later.columns == earlier.columns);
    assign_ids(&mut found)?;
    Ok(found)
}

fn is_manifest(path: &Path) -> bool {
    matches!(extension(path).as_deref(), Some("jsonl") | Some("csv"))
}

fn extension(path: &Path) -> Option<String> {
    path.extension().and_then(OsStr::to_str).map(str::to_ascii_lowercase)
}

/// A path as text: itself when it is UTF-8, else with each byte that is not valid UTF-8 written
/// as `\xNN` (Linux file names are bytes), so the name stays readable and nothing is lost.
pub fn display(path: &Path) -> String {
    if let Some(text) = path.to_str() {
        return text.to_string();
    }
    let bytes = path.as_os_str().as_encoded_bytes();
    let mut text = String::with_capacity(bytes.len() + 8);
    for chunk in bytes.utf8_chunks() {
        text.push_str(chunk.valid());
        for byte in chunk.invalid() {
            text.push_str(&format!("\\x{byte:02X}"));
        }
    }
    text
}

fn is_hidden(name: &OsStr) -> bool {
    name.as_encoded_bytes().first() == Some(&b'.')
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>) -> Result<(), InputError> {
    let entries = fs::read_dir(dir).map_err(|source| InputError::Io { path: display(dir), source })?;
    for entry in entries {
        let entry = entry.map_err(|source| InputError::Io { path: display(dir), source })?;
        if is_hidden(&entry.file_name()) {
            continue;
        }
        let path = entry.path();
        // Follow symlinks: a corpus is often a tree of links into a shared store.
        let Ok(metadata) = fs::metadata(&path) else {
            // A dangling link: keep it, so that the clip is rejected with the reason.
            files.push(path);
            continue;
        };
        if metadata.is_dir() {
            walk(&path, files)?;
        } else if !extension(&path).is_some_and(|ext| SKIPPED_EXTENSIONS.contains(&ext.as_str())) {
            files.push(path);
        }
    }
    Ok(())
}

fn clip_from_path(path: PathBuf, raw_format: Option<RawFormat>) -> InputClip {
    InputClip { id: String::new(), source: display(&path), path, raw_format, columns: Map::new() }
}

fn read_manifest(manifest: &Path, default_raw: Option<RawFormat>) -> Result<Vec<InputClip>, InputError> {
    let base = manifest.parent().unwrap_or(Path::new("")).to_path_buf();
    let name = display(manifest);
    let file = fs::File::open(manifest).map_err(|source| InputError::Io { path: name.clone(), source })?;
    let mut rows: Vec<(usize, Map<String, Value>)> = Vec::new();
    if extension(manifest).as_deref() == Some("jsonl") {
        for (index, line) in BufReader::new(file).lines().enumerate() {
            let line = line.map_err(|source| InputError::Io { path: name.clone(), source })?;
            if line.trim().is_empty() {
                continue;
            }
            let value: Value = serde_json::from_str(&line).map_err(|err| InputError::Manifest {
                path: name.clone(),
                line: index + 1,
                message: format!("not a JSON object: {err}"),
            })?;
            let Value::Object(row) = value else {
                return Err(InputError::Manifest {
                    path: name.clone(),
                    line: index + 1,
                    message: "not a JSON object".into(),
                });
            };
            rows.push((index + 1, row));
        }
    } else {
        let mut reader = csv::Reader::from_reader(file);
        let headers = reader
            .headers()
            .map_err(|err| InputError::Manifest { path: name.clone(), line: 1, message: err.to_string() })?
            .clone();
        for (index, record) in reader.records().enumerate() {
            let record = record.map_err(|err| InputError::Manifest {
                path: name.clone(),
                line: index + 2,
                message: err.to_string(),
            })?;
            let row: Map<String, Value> = headers
                .iter()
                .zip(record.iter())
                .map(|(key, value)| (key.to_string(), Value::String(value.to_string())))
                .collect();
            rows.push((index + 2, row));
        }
    }
    let mut clips = Vec::with_capacity(rows.len());
    for (line, mut row) in rows {
        let manifest_error = |message: String| InputError::Manifest { path: name.clone(), line, message };
        let Some(Value::String(path_text)) = row.get("path").cloned() else {
            return Err(manifest_error("no \"path\" column (a string naming the audio file)".into()));
        };
        let raw_format = match row.get("raw_format") {
            Some(Value::String(text)) if !text.is_empty() => {
                Some(text.parse::<RawFormat>().map_err(|err| manifest_error(format!("raw_format {text:?}: {err}")))?)
            }
            _ => default_raw,
        };
        for column in RESERVED_COLUMNS {
            row.remove(*column);
        }
        let path = base.join(&path_text);
        let id = match row.get("id") {
            Some(Value::String(id)) => {
                validate_id(id).map_err(manifest_error)?;
                id.clone()
            }
            Some(Value::Number(number)) => number.to_string(),
            Some(_) => return Err(manifest_error("\"id\" must be a string".into())),
            None => String::new(),
        };
        clips.push(InputClip { id, source: path_text, path, raw_format, columns: row });
    }
    Ok(clips)
}

fn validate_id(id: &str) -> Result<(), String> {
    let valid = !id.is_empty()
        && id.len() <= 200
        && !id.starts_with('.')
        && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if valid {
        Ok(())
    } else {
        Err(format!("id {id:?} must be 1-200 characters of A-Z a-z 0-9 - _ . and not start with '.'"))
    }
}

/// Makes a file-name-safe id from a path's stem.
fn slug(path: &Path) -> String {
    let stem = path.file_stem().map(|stem| stem.to_string_lossy().into_owned()).unwrap_or_default();
    let mut slug: String =
        stem.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '_' }).collect();
    slug = slug.trim_start_matches('.').to_string();
    slug.truncate(120);
    if slug.is_empty() { "clip".to_string() } else { slug }
}

/// Gives every clip without an id one made from its file name, made unique in input order by the
/// parent folder's name and then a counter; explicit ids must be unique.
fn assign_ids(clips: &mut [InputClip]) -> Result<(), InputError> {
    let mut taken: BTreeMap<String, String> = BTreeMap::new();
    for clip in clips.iter().filter(|clip| !clip.id.is_empty()) {
        if let Some(first) = taken.insert(clip.id.clone(), clip.source.clone()) {
            return Err(InputError::DuplicateId { id: clip.id.clone(), first, second: clip.source.clone() });
        }
    }
    let mut used: HashSet<String> = taken.into_keys().collect();
    for clip in clips.iter_mut().filter(|clip| clip.id.is_empty()) {
        let base = slug(&clip.path);
        let mut candidate = base.clone();
        if used.contains(&candidate)
            && let Some(parent) = clip.path.parent().and_then(Path::file_name)
        {
            candidate = format!("{}-{}", slug(Path::new(parent)), base);
        }
        let mut counter = 2;
        while used.contains(&candidate) {
            candidate = format!("{base}-{counter}");
            counter += 1;
        }
        used.insert(candidate.clone());
        clip.id = candidate;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_are_file_name_safe() {
        assert_eq!(slug(Path::new("a/b/My Clip (1).wav")), "My_Clip__1_");
        assert_eq!(slug(Path::new(".hidden")), "hidden");
        assert_eq!(slug(Path::new("/")), "clip");
    }

    #[test]
    fn colliding_stems_get_their_folder_then_a_counter() {
        let mut clips: Vec<InputClip> =
            ["x/a.wav", "y/a.wav", "y/a.flac"].iter().map(|path| clip_from_path(PathBuf::from(path), None)).collect();
        assign_ids(&mut clips).unwrap();
        let ids: Vec<&str> = clips.iter().map(|clip| clip.id.as_str()).collect();
        assert_eq!(ids, ["a", "y-a", "a-2"]);
    }

    #[test]
    fn explicit_ids_must_be_unique_and_safe() {
        assert!(validate_id("spk1_utt-2.v3").is_ok());
        assert!(validate_id("../etc").is_err());
        assert!(validate_id("").is_err());
        let mut clips = vec![clip_from_path("a.wav".into(), None), clip_from_path("b.wav".into(), None)];
        clips[0].id = "same".into();
        clips[1].id = "same".into();
        assert!(matches!(assign_ids(&mut clips), Err(InputError::DuplicateId { .. })));
    }
}
