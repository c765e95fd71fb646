//! Where the service keeps files, behind one interface ([`StorageBackend`]) with two
//! implementations: [`LocalStorage`], the data folder (the default), and [`ObjectStorage`], an
//! S3-compatible bucket through the `object_store` crate. Uploads and each job's outputs live
//! under deterministic keys (`uploads/<id>`, `audio/<job id>.<ext>`, `results/<job id>.json`),
//! always stored atomically (a rename on disk, a single PUT or completed multipart upload in a
//! bucket) so a retried job never leaves half a file. [`Storage`] wraps the backend in the
//! storage circuit breaker: every call goes through it. Also the confinement of submitted paths
//! to the configured input roots.
//!
//! Whatever the backend, the data folder holds the local work: uploads being received
//! (`uploads/*.part`) and `scratch/`, where workers fetch inputs and stage outputs.

use std::fmt;
use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{BoxStream, StreamExt, TryStreamExt};
use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use speechmill_pipeline::output::write_atomic;
use tokio::io::AsyncWriteExt;

use crate::breaker::Breaker;

/// Why a storage operation failed.
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
    /// No file or object under this key.
    #[error("no stored object {0:?}")]
    NotFound(String),
    /// The object store refused or failed a call.
    #[error("object store, key {key:?}: {source}")]
    Object {
        /// The key, relative to the configured prefix.
        key: String,
        /// What failed.
        #[source]
        source: object_store::Error,
    },
    /// The storage circuit breaker is open: calls are refused until it lets trial calls through.
    #[error("storage is unavailable (circuit breaker open)")]
    BreakerOpen {
        /// How long until the breaker lets calls through again.
        retry_after: Duration,
    },
    /// A call took longer than the storage timeout.
    #[error("storage call on {0:?} timed out")]
    Timeout(String),
    /// The storage configuration is invalid (a bad `s3://` URL, an invalid endpoint).
    #[error("storage configuration: {0}")]
    Config(String),
}

impl StorageError {
    /// Whether the failure says the storage is unreachable or failing (worth retrying, and
    /// counted by the breaker) rather than about one key (a missing object).
    pub fn is_transient(&self) -> bool {
        match self {
            StorageError::NotFound(_) | StorageError::Config(_) => false,
            StorageError::Object { source, .. } => {
                !matches!(source, object_store::Error::NotFound { .. } | object_store::Error::InvalidPath { .. })
            }
            StorageError::Io { source, .. } => source.kind() != io::ErrorKind::NotFound,
            StorageError::Output(_) | StorageError::BreakerOpen { .. } | StorageError::Timeout(_) => true,
        }
    }
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

/// Why a submitted object key was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    /// Empty, absolute, or with an empty, `.` or `..` segment.
    #[error("the object key {0:?} is not a relative key without '..', '.' or empty segments")]
    Invalid(String),
}

/// Checks a client-supplied object key: relative, no empty, `.` or `..` segments.
pub fn check_object_key(key: &str) -> Result<(), KeyError> {
    let valid = !key.is_empty()
        && !key.starts_with('/')
        && !key.contains('\\')
        && key.split('/').all(|segment| !segment.is_empty() && segment != "." && segment != "..");
    if valid { Ok(()) } else { Err(KeyError::Invalid(key.to_string())) }
}

/// The deterministic key of a job's audio output.
pub fn audio_key(job_id: &str, extension: &str) -> String {
    format!("audio/{job_id}.{extension}")
}

/// The deterministic key of a job's result document.
pub fn result_key(job_id: &str) -> String {
    format!("results/{job_id}.json")
}

/// A stored object's bytes, as a stream.
pub type ByteStream = BoxStream<'static, Result<Bytes, io::Error>>;

/// A fetched input: a local file the pipeline can read.
#[derive(Debug)]
pub struct Fetched {
    /// The local file.
    pub path: PathBuf,
    /// Whether it is a temporary copy in `scratch/` that the caller deletes when done.
    pub temporary: bool,
}

/// One place to keep uploads and outputs under keys; implemented by the data folder and by an
/// S3-compatible bucket. Keys are relative (`audio/<job>.flac`) and checked by the callers.
#[async_trait::async_trait]
pub trait StorageBackend: Send + Sync + fmt::Debug {
    /// Where to write a local file that will then be stored under `key` with
    /// [`StorageBackend::put_file`] (for the data folder: the final place itself).
    fn staging_path(&self, key: &str) -> PathBuf;

    /// Stores the local file `file` under `key` atomically; the local file is consumed (moved
    /// into place or deleted once stored).
    async fn put_file(&self, key: &str, file: &Path) -> Result<(), StorageError>;

    /// Makes the object under `key` readable as a local file, fetching it into `scratch` if
    /// needed.
    async fn fetch(&self, key: &str, scratch: &Path) -> Result<Fetched, StorageError>;

    /// Streams the object under `key`.
    async fn read(&self, key: &str) -> Result<ByteStream, StorageError>;

    /// Whether an object exists under `key`.
    async fn exists(&self, key: &str) -> Result<bool, StorageError>;

    /// Deletes the object under `key`; a missing object is not an error.
    async fn delete(&self, key: &str) -> Result<(), StorageError>;

    /// Checks cheaply that the storage answers (readiness).
    async fn check(&self) -> Result<(), StorageError>;

    /// Whether this is object storage (JSON submissions may then name an `object_key`).
    fn is_object_store(&self) -> bool;

    /// How the storage is named in logs (`local` or `s3://bucket/prefix`); never credentials.
    fn describe(&self) -> String;
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

    /// The absolute path of a stored file named relative to the data folder.
    pub fn path_of(&self, relative: &str) -> PathBuf {
        self.data_dir.join(relative)
    }

    /// Writes an output atomically under its deterministic name.
    pub fn write(&self, relative: &str, bytes: &[u8]) -> Result<(), StorageError> {
        Ok(write_atomic(&self.path_of(relative), bytes)?)
    }
}

#[async_trait::async_trait]
impl StorageBackend for LocalStorage {
    fn staging_path(&self, key: &str) -> PathBuf {
        self.path_of(key)
    }

    async fn put_file(&self, key: &str, file: &Path) -> Result<(), StorageError> {
        let target = self.path_of(key);
        if target == file {
            return Ok(());
        }
        tokio::fs::rename(file, &target).await.map_err(|source| StorageError::Io { path: target, source })
    }

    async fn fetch(&self, key: &str, _scratch: &Path) -> Result<Fetched, StorageError> {
        Ok(Fetched { path: self.path_of(key), temporary: false })
    }

    async fn read(&self, key: &str) -> Result<ByteStream, StorageError> {
        let path = self.path_of(key);
        match tokio::fs::File::open(&path).await {
            Ok(file) => Ok(tokio_util::io::ReaderStream::new(file).boxed()),
            Err(source) if source.kind() == io::ErrorKind::NotFound => Err(StorageError::NotFound(key.to_string())),
            Err(source) => Err(StorageError::Io { path, source }),
        }
    }

    async fn exists(&self, key: &str) -> Result<bool, StorageError> {
        Ok(tokio::fs::try_exists(self.path_of(key)).await.unwrap_or(false))
    }

    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        let _ = tokio::fs::remove_file(self.path_of(key)).await;
        Ok(())
    }

    async fn check(&self) -> Result<(), StorageError> {
        let path = self.data_dir.join("results");
        tokio::fs::metadata(&path).await.map(|_| ()).map_err(|source| StorageError::Io { path, source })
    }

    fn is_object_store(&self) -> bool {
        false
    }

    fn describe(&self) -> String {
        "local".into()
    }
}

/// An S3-compatible bucket, from `s3://BUCKET[/PREFIX]` and the standard AWS settings (read by
/// the binary, never here).
#[derive(Clone, PartialEq, Eq)]
pub struct S3Config {
    /// The bucket.
    pub bucket: String,
    /// A key prefix without leading or trailing `/`; empty for the bucket's root.
    pub prefix: String,
    /// `AWS_ENDPOINT_URL`: an S3-compatible server's URL; `None` for AWS itself.
    pub endpoint: Option<String>,
    /// `AWS_REGION`.
    pub region: Option<String>,
    /// `AWS_ACCESS_KEY_ID`.
    pub access_key_id: Option<String>,
    /// `AWS_SECRET_ACCESS_KEY`; never logged.
    pub secret_access_key: Option<String>,
    /// `AWS_SESSION_TOKEN`; never logged.
    pub session_token: Option<String>,
    /// `AWS_ALLOW_HTTP`: permit a plain `http://` endpoint.
    pub allow_http: bool,
    /// Longest wait for one request (connect included), before the client's retries.
    pub request_timeout: Duration,
    /// Retries of one call on a transient failure (the breaker handles longer outages).
    pub max_retries: usize,
}

impl fmt::Debug for S3Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Config")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &self.secret_access_key.as_ref().map(|_| "<redacted>"))
            .field("session_token", &self.session_token.as_ref().map(|_| "<redacted>"))
            .field("allow_http", &self.allow_http)
            .field("request_timeout", &self.request_timeout)
            .field("max_retries", &self.max_retries)
            .finish()
    }
}

impl S3Config {
    /// Parses `s3://BUCKET[/PREFIX]` into a configuration with no credentials set.
    pub fn from_url(url: &str) -> Result<Self, StorageError> {
        let Some(rest) = url.strip_prefix("s3://") else {
            return Err(StorageError::Config(format!("storage URL {url:?} does not start with s3://")));
        };
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(StorageError::Config(format!("storage URL {url:?} names no bucket")));
        }
        let prefix = prefix.trim_matches('/');
        if !prefix.is_empty() && check_object_key(prefix).is_err() {
            return Err(StorageError::Config(format!("storage URL {url:?} has an invalid prefix")));
        }
        Ok(S3Config {
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
            endpoint: None,
            region: None,
            access_key_id: None,
            secret_access_key: None,
            session_token: None,
            allow_http: false,
            request_timeout: Duration::from_secs(30),
            max_retries: 2,
        })
    }
}

/// Where a node keeps uploads and outputs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum StorageConfig {
    /// The data folder (the default).
    #[default]
    Local,
    /// An S3-compatible bucket.
    S3(S3Config),
}

/// Uploads and outputs as objects in an S3-compatible bucket.
#[derive(Debug, Clone)]
pub struct ObjectStorage {
    /// The client.
    store: Arc<dyn ObjectStore>,
    /// `s3://bucket/prefix`, for logs.
    name: String,
    /// Prepended (with `/`) to every key.
    prefix: String,
    /// The data folder's `scratch/outgoing`, where outputs are staged before their PUT.
    outgoing: PathBuf,
}

/// Files above this size are stored with a multipart upload (still atomic: the object appears
/// only when the upload completes), so no file is read whole into memory.
const MULTIPART_THRESHOLD_BYTES: u64 = 16 << 20;
/// The part size of multipart uploads (S3's minimum is 5 MiB).
const PART_BYTES: usize = 8 << 20;

impl ObjectStorage {
    /// A client for the bucket of `config`, staging outputs in `data_dir/scratch/outgoing`.
    pub fn open(config: &S3Config, data_dir: &Path) -> Result<Self, StorageError> {
        let outgoing = data_dir.join("scratch").join("outgoing");
        fs::create_dir_all(&outgoing).map_err(|source| StorageError::Io { path: outgoing.clone(), source })?;
        let client_options = object_store::ClientOptions::new()
            .with_timeout(config.request_timeout)
            .with_connect_timeout(config.request_timeout.min(Duration::from_secs(5)))
            .with_allow_http(config.allow_http);
        let retry = object_store::RetryConfig {
            max_retries: config.max_retries,
            retry_timeout: config.request_timeout,
            backoff: object_store::BackoffConfig {
                init_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(2),
                base: 2.0,
            },
        };
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&config.bucket)
            .with_region(config.region.clone().unwrap_or_else(|| "us-east-1".into()))
            .with_allow_http(config.allow_http)
            .with_client_options(client_options)
            .with_retry(retry);
        if let Some(endpoint) = &config.endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        if let Some(id) = &config.access_key_id {
            builder = builder.with_access_key_id(id);
        }
        if let Some(secret) = &config.secret_access_key {
            builder = builder.with_secret_access_key(secret);
        }
        if let Some(token) = &config.session_token {
            builder = builder.with_token(token);
        }
        let store = builder.build().map_err(|err| StorageError::Config(err.to_string()))?;
        let name = if config.prefix.is_empty() {
            format!("s3://{}", config.bucket)
        } else {
            format!("s3://{}/{}", config.bucket, config.prefix)
        };
        Ok(ObjectStorage { store: Arc::new(store), name, prefix: config.prefix.clone(), outgoing })
    }

    fn location(&self, key: &str) -> ObjectPath {
        if self.prefix.is_empty() { ObjectPath::from(key) } else { ObjectPath::from(format!("{}/{key}", self.prefix)) }
    }

    fn object_error(key: &str, source: object_store::Error) -> StorageError {
        match source {
            object_store::Error::NotFound { .. } => StorageError::NotFound(key.to_string()),
            source => StorageError::Object { key: key.to_string(), source },
        }
    }

    async fn put_file_inner(&self, key: &str, file: &Path) -> Result<(), StorageError> {
        let io_error = |source| StorageError::Io { path: file.to_path_buf(), source };
        let location = self.location(key);
        let size = tokio::fs::metadata(file).await.map_err(io_error)?.len();
        if size <= MULTIPART_THRESHOLD_BYTES {
            let bytes = tokio::fs::read(file).await.map_err(io_error)?;
            self.store.put(&location, bytes.into()).await.map_err(|err| Self::object_error(key, err))?;
            return Ok(());
        }
        let upload = self.store.put_multipart(&location).await.map_err(|err| Self::object_error(key, err))?;
        let mut writer = object_store::WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
        let mut reader = tokio::fs::File::open(file).await.map_err(io_error)?;
        let mut buffer = vec![0u8; 1 << 20];
        loop {
            let read = tokio::io::AsyncReadExt::read(&mut reader, &mut buffer).await.map_err(io_error)?;
            if read == 0 {
                break;
            }
            if let Err(err) = writer.wait_for_capacity(4).await {
                return Err(Self::object_error(key, err));
            }
            writer.write(&buffer[..read]);
        }
        writer.finish().await.map_err(|err| Self::object_error(key, err))?;
        Ok(())
    }
}

#[async_trait::async_trait]
impl StorageBackend for ObjectStorage {
    fn staging_path(&self, key: &str) -> PathBuf {
        self.outgoing.join(key.replace('/', "_"))
    }

    async fn put_file(&self, key: &str, file: &Path) -> Result<(), StorageError> {
        let stored = self.put_file_inner(key, file).await;
        if stored.is_ok() {
            let _ = tokio::fs::remove_file(file).await;
        }
        stored
    }

    async fn fetch(&self, key: &str, scratch: &Path) -> Result<Fetched, StorageError> {
        let path = scratch.join(format!("fetched-{}", uuid::Uuid::now_v7().simple()));
        let io_error = |source| StorageError::Io { path: path.clone(), source };
        let mut stream = self.read(key).await?;
        let fetched: Result<(), StorageError> = async {
            let mut file = tokio::fs::File::create(&path).await.map_err(io_error)?;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|source| StorageError::Object {
                    key: key.to_string(),
                    source: object_store::Error::Generic { store: "S3", source: Box::new(source) },
                })?;
                file.write_all(&chunk).await.map_err(io_error)?;
            }
            file.flush().await.map_err(io_error)
        }
        .await;
        if let Err(err) = fetched {
            let _ = tokio::fs::remove_file(&path).await;
            return Err(err);
        }
        Ok(Fetched { path, temporary: true })
    }

    async fn read(&self, key: &str) -> Result<ByteStream, StorageError> {
        let result = self.store.get(&self.location(key)).await.map_err(|err| Self::object_error(key, err))?;
        Ok(result.into_stream().map_err(io::Error::other).boxed())
    }

    async fn exists(&self, key: &str) -> Result<bool, StorageError> {
        match self.store.head(&self.location(key)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(source) => Err(StorageError::Object { key: key.to_string(), source }),
        }
    }

    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        match self.store.delete(&self.location(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(source) => Err(StorageError::Object { key: key.to_string(), source }),
        }
    }

    async fn check(&self) -> Result<(), StorageError> {
        // One LIST of at most a page under the prefix: cheap, and it fails on a missing bucket
        // or bad credentials as well as on an unreachable server.
        let prefix = (!self.prefix.is_empty()).then(|| ObjectPath::from(self.prefix.as_str()));
        self.store
            .list_with_delimiter(prefix.as_ref())
            .await
            .map(|_| ())
            .map_err(|source| StorageError::Object { key: self.prefix.clone(), source })
    }

    fn is_object_store(&self) -> bool {
        true
    }

    fn describe(&self) -> String {
        self.name.clone()
    }
}

/// The node's storage: a backend behind the storage circuit breaker, plus the data folder's
/// local work areas (uploads being received, scratch). Cheap to clone.
#[derive(Debug, Clone)]
pub struct Storage {
    /// Where uploads and outputs are kept.
    backend: Arc<dyn StorageBackend>,
    /// Every backend call goes through it; shared with `/v1/breakers` and the metrics.
    breaker: Arc<Breaker>,
    /// The data folder.
    data_dir: PathBuf,
    /// Longest wait for one storage call before it counts as failed.
    timeout: Duration,
}

impl Storage {
    /// Opens the storage of `config` for the data folder `data_dir`, guarded by `breaker`.
    pub fn open(config: &StorageConfig, data_dir: &Path, breaker: Arc<Breaker>) -> Result<Self, StorageError> {
        let local = LocalStorage::open(data_dir)?;
        let (backend, timeout): (Arc<dyn StorageBackend>, Duration) = match config {
            StorageConfig::Local => (Arc::new(local), Duration::from_secs(60)),
            StorageConfig::S3(s3) => {
                // The client retries within one call; the breaker's timeout covers them all.
                let per_call = s3.request_timeout * (s3.max_retries as u32 + 1) + Duration::from_secs(5);
                (Arc::new(ObjectStorage::open(s3, data_dir)?), per_call)
            }
        };
        Ok(Storage { backend, breaker, data_dir: data_dir.to_path_buf(), timeout })
    }

    /// The data folder.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Where long clips spill and object inputs are fetched while they are processed.
    pub fn scratch_dir(&self) -> PathBuf {
        self.data_dir.join("scratch")
    }

    /// A fresh local path for an upload in progress and the key it is stored under once
    /// complete.
    pub fn new_upload(&self) -> (PathBuf, String) {
        let key = format!("uploads/{}", uuid::Uuid::now_v7().simple());
        (self.data_dir.join(format!("{key}.part")), key)
    }

    /// Whether JSON submissions may name an `object_key`.
    pub fn is_object_store(&self) -> bool {
        self.backend.is_object_store()
    }

    /// How the storage is named in logs.
    pub fn describe(&self) -> String {
        self.backend.describe()
    }

    /// How long until the storage breaker lets calls through, when it is open (see
    /// [`Breaker::refusing_for`]).
    pub fn refusing_for(&self) -> Option<Duration> {
        self.breaker.refusing_for()
    }

    /// Where to write a file that [`Storage::put_file`] then stores under `key`.
    pub fn staging_path(&self, key: &str) -> PathBuf {
        self.backend.staging_path(key)
    }

    /// Runs one backend call through the breaker, with a timeout; a missing object is an
    /// answer, not a failure of the storage.
    async fn guarded<T>(
        &self,
        key: &str,
        call: impl std::future::Future<Output = Result<T, StorageError>>,
    ) -> Result<T, StorageError> {
        self.breaker.allow().map_err(|retry_after| StorageError::BreakerOpen { retry_after })?;
        match tokio::time::timeout(self.timeout, call).await {
            Ok(result) => {
                self.breaker.record(!matches!(&result, Err(err) if err.is_transient()));
                result
            }
            Err(_) => {
                self.breaker.record(false);
                Err(StorageError::Timeout(key.to_string()))
            }
        }
    }

    /// Stores a local file under `key` atomically, consuming it.
    pub async fn put_file(&self, key: &str, file: &Path) -> Result<(), StorageError> {
        self.guarded(key, self.backend.put_file(key, file)).await
    }

    /// Makes `key` readable as a local file (fetched into scratch for object storage).
    pub async fn fetch(&self, key: &str) -> Result<Fetched, StorageError> {
        let scratch = self.scratch_dir();
        self.guarded(key, self.backend.fetch(key, &scratch)).await
    }

    /// Streams the object under `key`.
    pub async fn read(&self, key: &str) -> Result<ByteStream, StorageError> {
        self.guarded(key, self.backend.read(key)).await
    }

    /// Whether an object exists under `key`.
    pub async fn exists(&self, key: &str) -> Result<bool, StorageError> {
        self.guarded(key, self.backend.exists(key)).await
    }

    /// Deletes `key`, logging (not returning) a failure: used for clean-up.
    pub async fn remove(&self, key: &str) {
        if let Err(err) = self.guarded(key, self.backend.delete(key)).await {
            tracing::warn!(error = %err, key, "cannot delete a stored object");
        }
    }

    /// Checks that the storage answers (readiness), through the breaker.
    pub async fn check(&self) -> Result<(), StorageError> {
        self.guarded("", self.backend.check()).await
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

    #[test]
    fn object_keys_with_parent_or_empty_segments_are_refused() {
        for bad in ["", "/abs.wav", "a/../b.wav", "..", "a//b.wav", "./a.wav", "a\\..\\b"] {
            assert!(check_object_key(bad).is_err(), "{bad:?} should be refused");
        }
        assert_eq!(check_object_key("incoming/a.wav"), Ok(()));
        assert_eq!(check_object_key("a..b.wav"), Ok(()));
    }

    #[test]
    fn storage_urls_name_a_bucket_and_an_optional_prefix() {
        let bare = S3Config::from_url("s3://clips").unwrap();
        assert_eq!((bare.bucket.as_str(), bare.prefix.as_str()), ("clips", ""));
        let prefixed = S3Config::from_url("s3://clips/team/a/").unwrap();
        assert_eq!((prefixed.bucket.as_str(), prefixed.prefix.as_str()), ("clips", "team/a"));
        assert!(S3Config::from_url("s3:///x").is_err());
        assert!(S3Config::from_url("gs://clips").is_err());
        assert!(S3Config::from_url("s3://clips/a/../b").is_err());
    }

    #[test]
    fn secrets_are_redacted_from_debug_output() {
        let config = S3Config { secret_access_key: Some("hunter2".into()), ..S3Config::from_url("s3://b").unwrap() };
        assert!(!format!("{config:?}").contains("hunter2"));
    }
}
