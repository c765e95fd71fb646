//! The result cache's key and value: what a clip's result depends on, and everything a cache hit
//! needs to give the same manifest row, rejection row and audio bytes as a miss.
//!
//! The key is the SHA-256 of the decoded source (sample rate, channel count and every sample's
//! bits), of the configuration that shapes measurements and audio ([`config_hash`]) and of
//! speechmill's version, so a changed setting or a new release recomputes. The gate's thresholds
//! are not in the key: the measurements taken at the gate are cached and the gate is checked
//! again on a hit, so changing a threshold costs nothing but the clips it newly accepts (whose
//! audio was never encoded). Only results that follow from the content and the configuration are
//! cached: never a timeout, an internal error, a decoding failure or a failed enhancement.
//!
//! This module does no I/O: the store (`speechmill_queue::cache`) is the caller's, reached
//! through [`CacheOptions::lookup`] during [`crate::clip::process_clip_cached`] and written by the
//! caller from the [`CacheUse::Miss`] it gets back.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::clip::Measurements;
use crate::config::PipelineConfig;
use crate::reason::{Reason, Stage};

/// speechmill's version as the cache key uses it (every crate of the workspace shares it).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The layout of [`CachedOutcome`]; part of the key, so a change of layout is a change of key.
const VALUE_LAYOUT: &str = "speechmill-result-cache/1";

/// Which cached result a clip has: the key and the parts it was made from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    /// Hex SHA-256 of the content digest, the configuration hash, the version and the layout.
    pub key: String,
    /// Hex SHA-256 of the decoded source (rate, channels, samples).
    pub content: String,
    /// [`config_hash`] of the configuration.
    pub config_hash: String,
    /// speechmill's version.
    pub version: String,
}

impl CacheKey {
    /// The key of a clip whose decoded content digest is `content`.
    pub fn new(content: &str, config_hash: &str, version: &str) -> CacheKey {
        let mut hasher = Sha256::new();
        for part in [VALUE_LAYOUT, version, config_hash, content] {
            hasher.update((part.len() as u64).to_le_bytes());
            hasher.update(part.as_bytes());
        }
        CacheKey {
            key: hex(&hasher.finalize()),
            content: content.to_string(),
            config_hash: config_hash.to_string(),
            version: version.to_string(),
        }
    }
}

/// SHA-256 of the canonical JSON of the settings that shape a clip's measurements and audio:
/// `[standardise]` without `clip_timeout_seconds` (timeouts are never cached) and `[enhance]`.
/// `[gate]` is left out on purpose: the gate is checked again on every hit.
pub fn config_hash(config: &PipelineConfig) -> String {
    let mut standardise = serde_json::to_value(&config.standardise).unwrap_or_default();
    if let Some(fields) = standardise.as_object_mut() {
        fields.remove("clip_timeout_seconds");
    }
    let canonical = serde_json::json!({ "standardise": standardise, "enhance": config.enhance });
    hex(&Sha256::digest(canonical.to_string().as_bytes()))
}

/// SHA-256 of the decoded source, fed block by block.
pub(crate) struct ContentHasher {
    sha: Sha256,
}

impl ContentHasher {
    /// A hasher for a source of this rate and channel count (both are part of the content: the
    /// same samples at another rate are another signal).
    pub(crate) fn new(sample_rate: u32, channels: u16) -> Self {
        let mut sha = Sha256::new();
        sha.update(sample_rate.to_le_bytes());
        sha.update(channels.to_le_bytes());
        ContentHasher { sha }
    }

    /// Adds the little-endian bytes of a block's samples.
    pub(crate) fn update(&mut self, sample_bytes: &[u8]) {
        self.sha.update(sample_bytes);
    }

    /// The hex digest.
    pub(crate) fn finish(self) -> String {
        hex(&self.sha.finalize())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// SHA-256 of some bytes, hex.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// A stored entry as the store hands it back: the value's JSON and the audio, unchecked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedClip {
    /// [`CachedOutcome`] as JSON.
    pub value: String,
    /// The encoded audio of an accepted clip.
    pub audio: Option<Vec<u8>>,
}

/// An entry to store after a miss.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheEntry {
    /// Its key.
    pub key: CacheKey,
    /// [`CachedOutcome`] as JSON.
    pub value: String,
    /// The encoded audio of an accepted clip.
    pub audio: Option<Vec<u8>>,
}

/// What the cache did for one clip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheUse {
    /// No cache was asked for (or a test hook made the clip uncacheable).
    Off,
    /// The result came from the cache: standardisation, measurement, enhancement and encoding
    /// were skipped.
    Hit,
    /// The clip was processed; `Some` holds the entry to store, `None` a result that is not
    /// cacheable (a timeout, an internal error, a decoding failure).
    Miss(Option<Box<CacheEntry>>),
}

/// What [`crate::clip::process_clip_cached`] needs to use a cache.
pub struct CacheOptions<'a> {
    /// speechmill's version ([`VERSION`]; tests give another to see that it recomputes).
    pub version: &'a str,
    /// [`config_hash`] of the configuration the clip is processed with.
    pub config_hash: &'a str,
    /// Looks a key up in the store; `None` when absent or unreadable (the store warns).
    pub lookup: &'a mut dyn FnMut(&CacheKey) -> Option<CachedClip>,
    /// An accepted clip whose encoded audio is larger than this is not stored (its entry keeps
    /// the measurements only, so a later run recomputes it).
    pub max_audio_bytes: u64,
}

/// The cached result of a clip. Nothing in it names the clip (its id, its file or its run):
/// those are added by the caller, as on a miss. The decoder's own facts (container, codec, bits
/// per sample, header warnings) belong to the file rather than the decoded content, so they are
/// left out and taken from the file decoded on the hit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum CachedOutcome {
    /// Rejected by validation (empty, non-finite samples, too short), which always applies.
    Invalid {
        /// The reason code.
        reason: Reason,
        /// The stage (validate).
        stage: Stage,
        /// The message, without the file's name.
        message: String,
        /// What was measured before.
        measurements: Measurements,
    },
    /// Measured: the measurements the gate judged, and for a clip that was accepted and encoded,
    /// what was delivered.
    Measured {
        /// The measurements at the gate.
        measurements: Measurements,
        /// The delivered clip, when it was accepted and its audio stored.
        delivered: Option<Box<Delivered>>,
    },
}

/// What an accepted clip delivered; its audio is stored beside the value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Delivered {
    /// The final measurements (after enhancement and encoding).
    pub measurements: Measurements,
    /// Hex SHA-256 of the encoded audio, checked on every hit.
    pub audio_sha256: String,
}

/// Removes what belongs to the file rather than its decoded content: the container, codec and
/// bits per sample, and the first `decoder_warnings` warnings (the decoder's header warnings).
pub(crate) fn without_source_facts(measurements: &Measurements, decoder_warnings: usize) -> Measurements {
    let mut stored = measurements.clone();
    stored.source_container = None;
    stored.source_codec = None;
    stored.source_bits_per_sample = None;
    stored.warnings.drain(..decoder_warnings.min(stored.warnings.len()));
    stored
}

/// Puts back the file's own facts, from `fresh` (the measurements of the decode just made).
pub(crate) fn with_source_facts(stored: Measurements, fresh: &Measurements) -> Measurements {
    let mut restored = stored;
    restored.source_container.clone_from(&fresh.source_container);
    restored.source_codec.clone_from(&fresh.source_codec);
    restored.source_bits_per_sample = fresh.source_bits_per_sample;
    let mut warnings = fresh.warnings.clone();
    warnings.append(&mut restored.warnings);
    restored.warnings = warnings;
    restored
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::EnhanceMethod;

    #[test]
    fn the_key_changes_with_content_configuration_and_version_and_nothing_else() {
        let base = CacheKey::new("c1", "h1", "0.1.0");
        assert_eq!(base, CacheKey::new("c1", "h1", "0.1.0"));
        assert_eq!(base.key.len(), 64);
        for other in
            [CacheKey::new("c2", "h1", "0.1.0"), CacheKey::new("c1", "h2", "0.1.0"), CacheKey::new("c1", "h1", "0.1.1")]
        {
            assert_ne!(base.key, other.key);
        }
        // Parts are length-prefixed: moving a character from one part to the next is another key.
        assert_ne!(CacheKey::new("ab", "c", "v").key, CacheKey::new("a", "bc", "v").key);
    }

    #[test]
    fn the_configuration_hash_covers_standardise_and_enhance_but_not_the_gate_or_the_timeout() {
        let base = PipelineConfig::default();
        let hash = config_hash(&base);
        let mut gate = base.clone();
        gate.gate.min_snr_db = Some(20.0);
        gate.gate.enabled = false;
        assert_eq!(config_hash(&gate), hash, "the gate is checked again on a hit");
        let mut timeout = base.clone();
        timeout.standardise.clip_timeout_seconds = 5.0;
        assert_eq!(config_hash(&timeout), hash, "timeouts are never cached");
        let mut target = base.clone();
        target.standardise.target_lufs = -20.0;
        assert_ne!(config_hash(&target), hash);
        let mut enhance = base.clone();
        enhance.enhance.enabled = true;
        assert_ne!(config_hash(&enhance), hash);
        let mut method = enhance.clone();
        method.enhance.method = EnhanceMethod::Rnnoise;
        assert_ne!(config_hash(&method), config_hash(&enhance));
    }

    #[test]
    fn source_facts_are_left_out_and_put_back_from_the_fresh_decode() {
        let measured = Measurements {
            source_container: Some("wav".into()),
            source_codec: Some("pcm_s16le".into()),
            source_bits_per_sample: Some(16),
            duration_s: Some(1.5),
            warnings: vec!["header warning".into(), "peak limit held the gain".into()],
            ..Measurements::default()
        };
        let stored = without_source_facts(&measured, 1);
        assert_eq!(stored.source_container, None);
        assert_eq!(stored.warnings, vec!["peak limit held the gain".to_string()]);
        let fresh = Measurements {
            source_container: Some("flac".into()),
            source_codec: Some("flac".into()),
            source_bits_per_sample: Some(24),
            warnings: vec!["another header warning".into()],
            ..Measurements::default()
        };
        let restored = with_source_facts(stored, &fresh);
        assert_eq!(restored.source_container.as_deref(), Some("flac"));
        assert_eq!(restored.source_bits_per_sample, Some(24));
        assert_eq!(restored.duration_s, Some(1.5));
        assert_eq!(
            restored.warnings,
            vec!["another header warning".to_string(), "peak limit held the gain".to_string()]
        );
    }

    #[test]
    fn a_cached_outcome_reads_back_exactly() {
        let outcome = CachedOutcome::Measured {
            measurements: Measurements {
                snr_db: Some(12.345_678_901_234_567),
                dc_offset: Some(-1.0e-7),
                ..Default::default()
            },
            delivered: Some(Box::new(Delivered {
                measurements: Measurements::default(),
                audio_sha256: sha256_hex(b"flac"),
            })),
        };
        let text = serde_json::to_string(&outcome).unwrap();
        assert_eq!(serde_json::from_str::<CachedOutcome>(&text).unwrap(), outcome);
        assert!(serde_json::from_str::<CachedOutcome>("{\"kind\":\"measured\"}").is_err());
    }
}
