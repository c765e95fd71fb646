//! The result cache as `speechmill process` and the service workers use it: a clip runs through
//! `speechmill_pipeline::clip::process_clip_cached`, whose lookups and (after a miss) whose
//! entry go to a [`ResultCacheStore`] through the async runtime.
//!
//! The cache never fails a clip: a store that cannot be reached, or answers slowly, is a miss
//! with a warning, and an entry that cannot be stored is only a warning.

use std::sync::Arc;
use std::time::Duration;

use speechmill_pipeline::PipelineConfig;
use speechmill_pipeline::cache::{CacheKey, CacheOptions, CacheUse, CachedClip, config_hash};
use speechmill_pipeline::clip::{ClipInput, Processed, Rejection, process_clip_cached};
use speechmill_queue::{CacheRecord, ResultCacheStore};

use crate::telemetry::metrics::CACHE_LOOKUPS;

/// A cache call taking longer than this is given up: the clip is processed (or not stored).
const CACHE_CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Encoded audio larger than this is not cached (about 15 minutes of 16 kHz FLAC); the clip's
/// measurements are, so a rerun decodes and recomputes only such long clips.
pub const DEFAULT_MAX_AUDIO_BYTES: u64 = 32 * 1024 * 1024;

/// A result cache for clips processed on blocking threads. Cheap to clone.
#[derive(Clone)]
pub struct ClipCache {
    /// Where entries live.
    store: Arc<dyn ResultCacheStore>,
    /// The runtime the store's calls run on (blocking threads wait on it; they are never inside
    /// an async task).
    runtime: tokio::runtime::Handle,
    /// speechmill's version, part of every key.
    version: String,
    /// [`config_hash`] of the configuration, part of every key.
    config_hash: String,
    /// Audio larger than this is not stored.
    max_audio_bytes: u64,
}

impl std::fmt::Debug for ClipCache {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ClipCache")
            .field("version", &self.version)
            .field("config_hash", &self.config_hash)
            .field("max_audio_bytes", &self.max_audio_bytes)
            .finish_non_exhaustive()
    }
}

impl ClipCache {
    /// A cache in `store` for clips processed with `config` by this `version` of speechmill.
    pub fn new(
        store: Arc<dyn ResultCacheStore>,
        runtime: tokio::runtime::Handle,
        config: &PipelineConfig,
        version: &str,
    ) -> Self {
        ClipCache {
            store,
            runtime,
            version: version.to_string(),
            config_hash: config_hash(config),
            max_audio_bytes: DEFAULT_MAX_AUDIO_BYTES,
        }
    }

    /// Processes one clip through the cache: decodes and hashes it, returns the cached result
    /// on a hit, otherwise processes it and stores the entry. Blocks; call it on a blocking
    /// thread, never inside an async task.
    pub fn process(
        &self,
        input: &ClipInput<'_>,
        config: &PipelineConfig,
    ) -> (Result<Processed, Box<Rejection>>, CacheUse) {
        let mut lookup = |key: &CacheKey| self.lookup(key);
        let options = CacheOptions {
            version: &self.version,
            config_hash: &self.config_hash,
            lookup: &mut lookup,
            max_audio_bytes: self.max_audio_bytes,
        };
        let (result, used) = process_clip_cached(input, config, Some(options));
        match used {
            CacheUse::Off => (result, CacheUse::Off),
            CacheUse::Hit => {
                metrics::counter!(CACHE_LOOKUPS, "result" => "hit").increment(1);
                (result, CacheUse::Hit)
            }
            CacheUse::Miss(entry) => {
                metrics::counter!(CACHE_LOOKUPS, "result" => "miss").increment(1);
                if let Some(entry) = entry {
                    let record = CacheRecord {
                        key: entry.key.key,
                        version: entry.key.version,
                        config_hash: entry.key.config_hash,
                        value: entry.value,
                        audio: entry.audio,
                    };
                    self.store(&record);
                }
                (result, CacheUse::Miss(None))
            }
        }
    }

    fn lookup(&self, key: &CacheKey) -> Option<CachedClip> {
        // The timeout is made inside the runtime: a clip thread of `process` is not in its context.
        let found = self
            .runtime
            .block_on(async { tokio::time::timeout(CACHE_CALL_TIMEOUT, self.store.cache_get(&key.key)).await });
        match found {
            Ok(Ok(found)) => found.map(|hit| CachedClip { value: hit.value, audio: hit.audio }),
            Ok(Err(err)) => {
                tracing::warn!(error = %err, "cannot read the result cache; the clip is processed");
                None
            }
            Err(_) => {
                tracing::warn!(
                    timeout_s = CACHE_CALL_TIMEOUT.as_secs_f64(),
                    "the result cache did not answer in time; the clip is processed"
                );
                None
            }
        }
    }

    fn store(&self, record: &CacheRecord) {
        let stored = self
            .runtime
            .block_on(async { tokio::time::timeout(CACHE_CALL_TIMEOUT, self.store.cache_put(record)).await });
        match stored {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::warn!(error = %err, "cannot store a result in the result cache"),
            Err(_) => tracing::warn!(
                timeout_s = CACHE_CALL_TIMEOUT.as_secs_f64(),
                "the result cache did not answer in time; the result is not cached"
            ),
        }
    }
}
