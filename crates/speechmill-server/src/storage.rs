//! Where the service keeps files: uploads, and each job's outputs under deterministic names
//! (`audio/<job id>.<ext>`, `results/<job id>.json`) in the data folder, always written through
//! a temporary file and a rename so a retried job never leaves half a file. Also the confinement
//! of submitted paths to the configured input roots.

use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

use speechmill_pipeline::output::write_atomic;

/// Why a file operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        #[source]
        source: io::Error,
    },
    /// Writing an output failed.
    #[error("{0}")]
    Output(#[from] speechmill_pipeline::output::OutputError),
}

/// Why a submitted path was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PathError {
    /// The service has no input roots, so it takes uploads only.
    #[error("no input roots are configured; submit the file as an upload")]
    NoRoots,
    /// `..` or a similar component.
    #[error("the path {0:?} contains '..'")]
    ParentComponent(String),
    /// No such file under any root.
    #[error("no file {0:?} under the configured input roots")]
    Missing(String),
    /// The path resolves (through symlinks) outside every root.
    #[error("the path {0:?} is outside the configured input roots")]
    Outside(String),
}

/// Input roots, canonicalised once.
#[derive(Debug, Clone, Default)]
pub struct InputRoots {
    /// Canonical root folders.
    roots: Vec<PathBuf>,
}

impl InputRoots {
    /// Canonicalises the roots; a root that does not exist is an error.
    pub fn new(roots: &[PathBuf]) -> io::Result<Self> {
        let roots = roots.iter().map(fs::canonicalize).collect::<io::Result<Vec<_>>>()?;
        Ok(InputRoots { roots })
    }

    /// The canonical roots.
    pub fn roots(&self) -> &[PathBuf] {
        &self.roots
    }

    /// Resolves a submitted path (absolute, or relative to a root, tried in order) to a canonical
    /// file inside a root; symlinks that lead outside are refused.
    pub fn resolve(&self, submitted: &str) -> Result<PathBuf, PathError> {
        if self.roots.is_empty() {
            return Err(PathError::NoRoots);
        }
        let path = Path::new(submitted);
        if path.components().any(|component| matches!(component, Component::ParentDir)) {
            return Err(PathError::ParentComponent(submitted.to_string()));
        }
        let mut found_outside = false;
        for root in &self.roots {
            let candidate = root.join(path);
            let Ok(canonical) = fs::canonicalize(&candidate) else { continue };
            if !is_readable_input(&canonical) {
                continue;
            }
            if self.roots.iter().any(|allowed| canonical.starts_with(allowed)) {
                return Ok(canonical);
            }
            found_outside = true;
        }
        if found_outside {
            Err(PathError::Outside(submitted.to_string()))
        } else {
            Err(PathError::Missing(submitted.to_string()))
        }
    }
}

/// A regular file, or a named pipe (a producer may stream a clip in; the job timeout bounds a
/// pipe nobody writes to). Folders and devices are not inputs.
fn is_readable_input(path: &Path) -> bool {
    let Ok(metadata) = fs::metadata(path) else { return false };
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if metadata.file_type().is_fifo() {
            return true;
        }
    }
    metadata.is_file()
}

/// The service's files on local disk, inside the data folder.
#[derive(Debug, Clone)]
pub struct LocalStorage {
    /// The data folder; everything lives below it.
    data_dir: PathBuf,
}

impl LocalStorage {
    /// Storage in `data_dir`, creating its folders.
    pub fn open(data_dir: &Path) -> Result<Self, StorageError> {
        for folder in ["uploads", "audio", "results", "scratch"] {
            let path = data_dir.join(folder);
            fs::create_dir_all(&path).map_err(|source| StorageError::Io { path, source })?;
        }
        Ok(LocalStorage { data_dir: data_dir.to_path_buf() })
    }

    /// The data folder.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// A fresh path for an upload in progress and the final name it gets once complete.
    pub fn new_upload(&self) -> (PathBuf, String) {
        let name = format!("uploads/{}", uuid::Uuid::now_v7().simple());
        (self.data_dir.join(format!("{name}.part")), name)
    }

    /// Where long clips spill while they are processed (on the outputs' file system, so the
    /// encoded file is renamed into place).
    pub fn scratch_dir(&self) -> PathBuf {
        self.data_dir.join("scratch")
    }

    /// The absolute path of a stored file named relative to the data folder.
    pub fn path_of(&self, relative: &str) -> PathBuf {
        self.data_dir.join(relative)
    }

    /// Moves a finished upload into place.
    pub fn finish_upload(&self, partial: &Path, relative: &str) -> Result<(), StorageError> {
        let target = self.path_of(relative);
        fs::rename(partial, &target).map_err(|source| StorageError::Io { path: target, source })
    }

    /// Deletes a stored file; a missing file is not an error.
    pub fn remove(&self, relative: &str) {
        let _ = fs::remove_file(self.path_of(relative));
    }

    /// The deterministic name of a job's audio output.
    pub fn audio_name(job_id: &str, extension: &str) -> String {
        format!("audio/{job_id}.{extension}")
    }

    /// The deterministic name of a job's result document.
    pub fn result_name(job_id: &str) -> String {
        format!("results/{job_id}.json")
    }

    /// Writes an output atomically under its deterministic name.
    pub fn write(&self, relative: &str, bytes: &[u8]) -> Result<(), StorageError> {
        Ok(write_atomic(&self.path_of(relative), bytes)?)
    }

    /// Checks that the data folder is reachable (readiness).
    pub fn check(&self) -> Result<(), StorageError> {
        let path = self.data_dir.join("results");
        fs::metadata(&path).map(|_| ()).map_err(|source| StorageError::Io { path, source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parent_components_are_refused_before_touching_the_disk() {
        let roots = InputRoots { roots: vec![PathBuf::from("/nonexistent-root")] };
        assert_eq!(roots.resolve("a/../../etc/passwd"), Err(PathError::ParentComponent("a/../../etc/passwd".into())));
    }

    #[test]
    fn without_roots_no_path_is_taken() {
        assert_eq!(InputRoots::default().resolve("/etc/passwd"), Err(PathError::NoRoots));
    }
}
