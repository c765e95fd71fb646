//! One clip, start to finish: decode, validate, standardise, measure, gate, enhance, encode.
//!
//! The gate's thresholds are applied before encoding, so a rejected clip is never encoded;
//! duplicate detection comes afterwards ([`crate::output`]), because exact duplicates can only be
//! decided in input order once every clip has been hashed. The optional enhancement stage runs
//! only on clips the gate accepted and can only change the audio delivered, never the verdict.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufWriter, Cursor, Read, Seek, Write};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use speechmill_audio::decode::{DecodeError, RawFormat, StreamDecoder};
use speechmill_audio::encode::{EncodeError, FlacWriter, WavWriter};
use speechmill_audio::enhance::{denoise, spectral_denoise};
use speechmill_audio::loudness::LoudnessMeter;
use speechmill_audio::measure::{BandwidthMeter, LevelMeter, SpeechAnalysis, analyse_speech};
use speechmill_audio::resample::MonoResampler;
use xxhash_rust::xxh3::Xxh3;

use crate::cache::{
    CacheEntry, CacheKey, CacheOptions, CacheUse, CachedClip, CachedOutcome, ContentHasher, Delivered, sha256_hex,
    with_source_facts, without_source_facts,
};
use crate::config::{AudioFormat, EnhanceMethod, LoudnessMode, NonFinitePolicy, PipelineConfig};
use crate::gate;
use crate::reason::{Reason, Stage};
use crate::samples::SampleStore;

/// Clips shorter than this cannot be measured at all and are rejected by validation.
pub const MIN_MEASURABLE_SECONDS: f64 = 0.010;

/// A downmix this far below the mean channel energy means the channels cancel.
const CANCELLATION_WARNING_DB: f64 = -20.0;

/// Every measurement speechmill makes of a clip. Fields are `None` when the stage that makes
/// them was not reached or the value is undefined (for example the loudness of digital silence).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Measurements {
    /// Container of the source (`wav`, `flac`, `mp3`, `ogg`, `mp4`, `raw`, ...).
    pub source_container: Option<String>,
    /// Codec of the source.
    pub source_codec: Option<String>,
    /// Decoded sample rate of the source in Hz.
    pub source_sample_rate: Option<u32>,
    /// Channels of the source.
    pub source_channels: Option<u16>,
    /// Bits per coded sample of the source, where the format has one.
    pub source_bits_per_sample: Option<u32>,
    /// Decoded duration in seconds, encoder delay and padding removed.
    pub duration_s: Option<f64>,
    /// Sample rate of the output audio in Hz.
    pub sample_rate: Option<u32>,
    /// Samples in the output audio.
    pub num_samples: Option<u64>,
    /// Sample peak of the source over all channels, dBFS.
    pub peak_dbfs: Option<f64>,
    /// RMS level of the source over all channels, dBFS.
    pub rms_dbfs: Option<f64>,
    /// Integrated loudness of the source (EBU R128), LUFS.
    pub loudness_lufs: Option<f64>,
    /// Fraction of source samples at full scale.
    pub clipping_ratio: Option<f64>,
    /// Mean sample value of the source.
    pub dc_offset: Option<f64>,
    /// NaN or infinite samples in the source.
    pub non_finite_samples: Option<u64>,
    /// Source samples above full scale (valid in float formats; brought into range).
    pub over_full_scale_samples: Option<u64>,
    /// Energy of the mono downmix relative to the mean channel energy, dB (multichannel only).
    pub downmix_gain_db: Option<f64>,
    /// Seconds before the first speech.
    pub leading_silence_s: Option<f64>,
    /// Seconds after the last speech.
    pub trailing_silence_s: Option<f64>,
    /// Seconds of non-speech in total.
    pub total_silence_s: Option<f64>,
    /// Fraction of frames with speech.
    pub speech_ratio: Option<f64>,
    /// Estimated speech-to-noise energy ratio across the clip, dB (of the standardised signal,
    /// before any enhancement).
    pub snr_db: Option<f64>,
    /// Effective bandwidth of the source, Hz.
    pub bandwidth_hz: Option<f64>,
    /// Gain applied by loudness normalisation, dB.
    pub gain_db: Option<f64>,
    /// Integrated loudness of the output, LUFS.
    pub output_loudness_lufs: Option<f64>,
    /// Sample peak of the output, dBFS.
    pub output_peak_dbfs: Option<f64>,
    /// What the optional enhancement stage did; absent when it is off or the clip did not reach
    /// it (rejected clips never do).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enhancement: Option<EnhancementOutcome>,
    /// Estimated SNR of the enhanced signal (measured like `snr_db`), dB, whether or not it was
    /// delivered; absent when enhancement did not run to the end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snr_enhanced_db: Option<f64>,
    /// Things worth knowing that did not stop the clip.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// What became of a clip's optional enhancement. Only [`EnhancementOutcome::Applied`] delivers the
/// enhanced signal; the others deliver the standardised one and add a warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EnhancementOutcome {
    /// The enhanced signal was delivered: its estimated SNR is not below the input's.
    Applied,
    /// The enhanced signal's estimated SNR was below the input's, or could not be estimated.
    NotImproved,
    /// Enhancement returned an error, panicked, produced non-finite samples or a signal of
    /// another length, or reached the clip's time limit.
    Failed,
}

impl EnhancementOutcome {
    /// The stable string form (`applied`, `not_improved`, `failed`).
    pub fn as_str(self) -> &'static str {
        match self {
            EnhancementOutcome::Applied => "applied",
            EnhancementOutcome::NotImproved => "not_improved",
            EnhancementOutcome::Failed => "failed",
        }
    }

    /// Whether the clip was delivered standardised instead of enhanced.
    pub fn is_fallback(self) -> bool {
        self != EnhancementOutcome::Applied
    }
}

/// A failure injected into the enhancement stage by [`ClipInput::enhance_fault`] (debug builds
/// only), to test that such a clip is still delivered.
#[cfg(debug_assertions)]
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnhanceFault {
    /// The denoiser returns an error.
    Error,
    /// The denoiser panics.
    Panic,
    /// The denoiser returns NaN samples.
    NonFinite,
}

/// Clips whose standardised signal is longer than this are spilled to a scratch file rather
/// than held in memory (10 minutes at 16 kHz is 38 MB of `f32`).
pub const DEFAULT_MEMORY_LIMIT_SECONDS: f64 = 600.0;

/// Samples handed to the encoder and the analysis per read of a spilled signal.
const CHUNK_SAMPLES: usize = 1 << 16;

/// What to process.
#[derive(Debug, Clone)]
pub struct ClipInput<'a> {
    /// The file.
    pub path: &'a Path,
    /// How to read it if it is headerless PCM.
    pub raw_format: Option<RawFormat>,
    /// Where a clip too long to hold in memory is spilled and encoded; the system's temporary
    /// folder when `None`. Put it on the output's file system so the encoded file can be renamed
    /// into place.
    pub scratch_dir: Option<&'a Path>,
    /// Seconds of standardised audio held in memory; the signal of a longer clip goes to a
    /// scratch file, so memory does not grow with the clip's length. Results do not depend on it.
    pub memory_limit_seconds: f64,
    /// Test hook (debug builds only): makes the enhancement stage fail this way. The library
    /// reads no environment; the binary sets it from `SPEECHMILL_DEBUG_FAIL_ENHANCEMENT_SOURCE`.
    #[cfg(debug_assertions)]
    #[doc(hidden)]
    pub enhance_fault: Option<EnhanceFault>,
}

impl<'a> ClipInput<'a> {
    /// A file to process, with no raw format and the default memory limit.
    pub fn new(path: &'a Path) -> Self {
        Self {
            path,
            raw_format: None,
            scratch_dir: None,
            memory_limit_seconds: DEFAULT_MEMORY_LIMIT_SECONDS,
            #[cfg(debug_assertions)]
            enhance_fault: None,
        }
    }
}

/// The encoded standardised audio of an accepted clip.
#[derive(Debug)]
pub enum EncodedAudio {
    /// A clip short enough to encode in memory.
    Memory(Vec<u8>),
    /// A long clip, encoded into an unnamed-until-persisted scratch file.
    File(tempfile::NamedTempFile),
}

impl EncodedAudio {
    /// Size of the encoded audio in bytes.
    pub fn len(&self) -> u64 {
        match self {
            EncodedAudio::Memory(bytes) => bytes.len() as u64,
            EncodedAudio::File(file) => file.as_file().metadata().map(|meta| meta.len()).unwrap_or(0),
        }
    }

    /// Whether there are no bytes (never true of a finished encoding, which has a header).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes the audio to `dest` atomically: complete or not at all, under its final name.
    ///
    /// # Errors
    ///
    /// The file could not be written, synced or renamed.
    pub fn persist(self, dest: &Path) -> std::io::Result<()> {
        match self {
            EncodedAudio::Memory(bytes) => {
                crate::output::write_atomic(dest, &bytes).map_err(|err| std::io::Error::other(err.to_string()))
            }
            EncodedAudio::File(file) => {
                file.as_file().sync_data()?;
                match file.persist(dest) {
                    Ok(_) => Ok(()),
                    // Another file system: copy beside the destination, then rename.
                    Err(err) => {
                        let mut source = err.file.reopen()?;
                        let mut bytes = Vec::new();
                        source.read_to_end(&mut bytes)?;
                        crate::output::write_atomic(dest, &bytes).map_err(|err| std::io::Error::other(err.to_string()))
                    }
                }
            }
        }
    }

    /// A copy of the encoded bytes (reads a long clip's scratch file whole).
    ///
    /// # Errors
    ///
    /// The scratch file could not be read.
    pub fn to_bytes(&self) -> std::io::Result<Vec<u8>> {
        match self {
            EncodedAudio::Memory(bytes) => Ok(bytes.clone()),
            EncodedAudio::File(file) => {
                let mut bytes = Vec::new();
                file.reopen()?.read_to_end(&mut bytes)?;
                Ok(bytes)
            }
        }
    }

    /// The encoded bytes (reads a long clip's scratch file whole).
    ///
    /// # Errors
    ///
    /// The scratch file could not be read.
    pub fn into_bytes(self) -> std::io::Result<Vec<u8>> {
        match self {
            EncodedAudio::Memory(bytes) => Ok(bytes),
            EncodedAudio::File(file) => {
                let mut bytes = Vec::new();
                file.reopen()?.read_to_end(&mut bytes)?;
                Ok(bytes)
            }
        }
    }
}

/// A clip that went through: its measurements, its content hash and its encoded audio.
#[derive(Debug)]
pub struct Processed {
    /// Every measurement.
    pub measurements: Measurements,
    /// Hash of the decoded source samples (exact-duplicate detection).
    pub content_hash: String,
    /// The standardised audio, encoded.
    pub audio: EncodedAudio,
}

/// A clip that could not go through, with everything measured before it stopped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rejection {
    /// Stable reason code.
    pub reason: Reason,
    /// Human message naming the problem (the caller adds the file).
    pub message: String,
    /// Where it stopped.
    pub stage: Stage,
    /// What was measured before.
    pub measurements: Measurements,
    /// Hash of the decoded samples, when decoding finished.
    pub content_hash: Option<String>,
}

impl Rejection {
    fn new(reason: Reason, stage: Stage, message: impl Into<String>, measurements: Measurements) -> Box<Self> {
        Box::new(Rejection { reason, message: message.into(), stage, measurements, content_hash: None })
    }
}

/// Level statistics of the standardised signal, gathered as it is produced.
#[derive(Default)]
struct OutputLevels {
    peak: f32,
    energy: f64,
    samples: u64,
}

impl OutputLevels {
    fn add(&mut self, samples: &[f32]) {
        for &sample in samples {
            self.peak = self.peak.max(sample.abs());
            self.energy += f64::from(sample) * f64::from(sample);
        }
        self.samples += samples.len() as u64;
    }

    fn rms_dbfs(&self) -> f64 {
        10.0 * (self.energy / self.samples.max(1) as f64).log10()
    }
}

/// Runs one clip through decode, validation, standardisation, measurement, the quality gate's
/// thresholds, the optional enhancement and encoding.
///
/// A clip the gate rejects is not encoded. Enhancement, when enabled, runs only on accepted
/// clips and never rejects one: when it fails or would lower the estimated SNR, the standardised
/// signal is encoded and [`Measurements::enhancement`] says why. Duplicates are not decided here
/// (they need the whole run in input order). Never panics on bad input: every problem with the
/// content comes back as a [`Rejection`]. Memory stays bounded whatever the clip's length: the
/// standardised (and enhanced) signal beyond `input.memory_limit_seconds` is kept in a scratch
/// file, and enhancement works a minute at a time.
pub fn process_clip(input: &ClipInput<'_>, config: &PipelineConfig) -> Result<Processed, Box<Rejection>> {
    process_clip_cached(input, config, None).0
}

/// [`process_clip`] with a result cache: the source is decoded and hashed first, then looked up
/// with `cache.lookup`. On a hit the cached result is returned (the gate's thresholds checked
/// again on the cached measurements) and nothing else runs; on a miss the clip is processed from
/// the decoded blocks kept in memory (up to `input.memory_limit_seconds` worth of samples; a
/// longer source is decoded again rather than held) and the entry to store comes back in
/// [`CacheUse::Miss`]. The result is the same as [`process_clip`]'s, hit or miss. An unreadable
/// entry is a miss, with a warning.
pub fn process_clip_cached(
    input: &ClipInput<'_>,
    config: &PipelineConfig,
    cache: Option<CacheOptions<'_>>,
) -> (Result<Processed, Box<Rejection>>, CacheUse) {
    // A clip with an injected enhancement failure must neither read nor write the cache.
    #[cfg(debug_assertions)]
    let cache = cache.filter(|_| input.enhance_fault.is_none());
    let Some(cache) = cache else {
        return (run_clip(input, config, None, &mut CacheTrace::default()), CacheUse::Off);
    };
    let max_audio_bytes = cache.max_audio_bytes;
    let mut trace = CacheTrace::default();
    let result = run_clip(input, config, Some(cache), &mut trace);
    if trace.hit {
        return (result, CacheUse::Hit);
    }
    let entry = trace.key.take().and_then(|key| cache_entry(key, &result, &trace, max_audio_bytes));
    (result, CacheUse::Miss(entry.map(Box::new)))
}

/// What the cache side of one clip learnt on the way through [`run_clip`].
#[derive(Default)]
struct CacheTrace {
    /// The clip's key, once its source is decoded and hashed (only with a cache).
    key: Option<CacheKey>,
    /// Whether the result came from the cache.
    hit: bool,
    /// The measurements the gate judged (only with a cache).
    at_gate: Option<Measurements>,
    /// How many of the first warnings are the decoder's header warnings.
    decoder_warnings: usize,
}

/// The entry to store for a processed clip, if its result is one the cache may keep.
fn cache_entry(
    key: CacheKey,
    result: &Result<Processed, Box<Rejection>>,
    trace: &CacheTrace,
    max_audio_bytes: u64,
) -> Option<CacheEntry> {
    let stored = |measurements: &Measurements| without_source_facts(measurements, trace.decoder_warnings);
    let (outcome, audio) = match result {
        Err(rejection) if rejection.stage == Stage::Validate => (
            CachedOutcome::Invalid {
                reason: rejection.reason,
                stage: rejection.stage,
                message: rejection.message.clone(),
                measurements: stored(&rejection.measurements),
            },
            None,
        ),
        Err(rejection) if rejection.stage == Stage::Gate => {
            (CachedOutcome::Measured { measurements: stored(&rejection.measurements), delivered: None }, None)
        }
        // Timeouts, internal errors and decoding failures are not the content's doing.
        Err(_) => return None,
        Ok(processed) => {
            let at_gate = trace.at_gate.as_ref()?;
            // A failed enhancement may have been a timeout: not cached, so it is tried again.
            let keep_audio = processed.measurements.enhancement != Some(EnhancementOutcome::Failed)
                && processed.audio.len() <= max_audio_bytes;
            let audio = if keep_audio {
                processed
                    .audio
                    .to_bytes()
                    .map_err(|err| tracing::warn!(error = %err, "cannot read the encoded clip for the cache"))
                    .ok()
            } else {
                None
            };
            let delivered = audio.as_ref().map(|bytes| {
                Box::new(Delivered { measurements: stored(&processed.measurements), audio_sha256: sha256_hex(bytes) })
            });
            (CachedOutcome::Measured { measurements: stored(at_gate), delivered }, audio)
        }
    };
    let value = serde_json::to_string(&outcome).ok()?;
    Some(CacheEntry { key, value, audio })
}

/// The result a cache entry stands for, or `None` when it cannot give one: unreadable or
/// damaged (with a warning), or a clip the gate now accepts whose audio was never encoded.
fn from_cache(
    found: CachedClip,
    fresh: &Measurements,
    config: &PipelineConfig,
    content_hash: &str,
) -> Option<Result<Processed, Box<Rejection>>> {
    let outcome: CachedOutcome = match serde_json::from_str(&found.value) {
        Ok(outcome) => outcome,
        Err(err) => {
            tracing::warn!(error = %err, "unreadable result cache entry; the clip is processed again");
            return None;
        }
    };
    let rejection = |reason, stage, message, measurements| {
        Some(Err(Box::new(Rejection {
            reason,
            message,
            stage,
            measurements: with_source_facts(measurements, fresh),
            content_hash: Some(content_hash.to_string()),
        })))
    };
    match outcome {
        CachedOutcome::Invalid { reason, stage, message, measurements } => {
            rejection(reason, stage, message, measurements)
        }
        CachedOutcome::Measured { measurements, delivered } => {
            if let Some((reason, message)) = gate::check(&measurements, &config.gate) {
                return rejection(reason, Stage::Gate, message, measurements);
            }
            let delivered = delivered?;
            let Some(audio) = found.audio.filter(|audio| sha256_hex(audio) == delivered.audio_sha256) else {
                tracing::warn!("result cache entry's audio is missing or damaged; the clip is processed again");
                return None;
            };
            Some(Ok(Processed {
                measurements: with_source_facts(delivered.measurements, fresh),
                content_hash: content_hash.to_string(),
                audio: EncodedAudio::Memory(audio),
            }))
        }
    }
}

/// Where the standardisation loop gets decoded blocks: straight from the decoder, or from the
/// blocks kept while the source was hashed for a cache lookup.
enum Blocks {
    Live(Box<StreamDecoder>),
    Kept { blocks: VecDeque<Vec<f32>>, current: Option<Vec<f32>> },
}

impl Blocks {
    fn next_block(&mut self) -> Result<Option<&[f32]>, DecodeError> {
        match self {
            Blocks::Live(decoder) => decoder.next_block(),
            Blocks::Kept { blocks, current } => {
                *current = blocks.pop_front();
                Ok(current.as_deref())
            }
        }
    }
}

/// Opens the clip's file and its decoder.
fn open_decoder(input: &ClipInput<'_>) -> Result<StreamDecoder, Box<Rejection>> {
    let file = File::open(input.path).map_err(|err| {
        Rejection::new(Reason::IoError, Stage::Read, format!("cannot open: {err}"), Measurements::default())
    })?;
    StreamDecoder::open(Box::new(file), input.raw_format)
        .map_err(|err| Rejection::new(decode_reason(&err), Stage::Decode, err.to_string(), Measurements::default()))
}

/// The body of [`process_clip_cached`]; `trace` collects what the cache needs.
fn run_clip(
    input: &ClipInput<'_>,
    config: &PipelineConfig,
    cache: Option<CacheOptions<'_>>,
    trace: &mut CacheTrace,
) -> Result<Processed, Box<Rejection>> {
    let started = Instant::now();
    let settings = &config.standardise;
    let mut measurements = Measurements::default();
    let timeout_seconds = settings.clip_timeout_seconds;
    let timed_out = |stage: Stage, measurements: &Measurements| {
        (started.elapsed().as_secs_f64() > timeout_seconds).then(|| {
            Rejection::new(
                Reason::Timeout,
                stage,
                format!("processing took longer than {timeout_seconds} s"),
                measurements.clone(),
            )
        })
    };

    // One span per stage (target `speechmill_pipeline::stage`): the service turns them into
    // trace spans and stage-duration metrics. Decoding and standardising stream block by block,
    // so their spans are entered alternately and measure busy time.
    let decode_span = stage_span(Stage::Decode);
    let standardise_span = stage_span(Stage::Standardise);
    let decoding = decode_span.enter();
    let mut decoder = open_decoder(input)?;

    drop(decoding);
    let info = decoder.info().clone();
    measurements.source_container = Some(info.container.clone());
    measurements.source_codec = Some(info.codec.clone());
    measurements.source_sample_rate = Some(info.sample_rate);
    measurements.source_channels = Some(info.channels);
    measurements.source_bits_per_sample = info.bits_per_sample;
    measurements.warnings.extend(info.warnings.iter().cloned());
    trace.decoder_warnings = info.warnings.len();

    let out_rate = settings.sample_rate_hz;
    let memory_limit = (input.memory_limit_seconds.max(0.0) * f64::from(out_rate)) as usize;
    let mut hasher = Xxh3::new();
    let mut hash_bytes: Vec<u8> = Vec::new();
    let hash_inline = cache.is_none();
    let mut blocks = match cache {
        None => Blocks::Live(Box::new(decoder)),
        Some(cache) => {
            // Decode and hash the whole source before anything else, keeping its blocks (as
            // many samples as the memory limit allows) so that a miss need not decode again.
            let mut content = ContentHasher::new(info.sample_rate, info.channels);
            let mut kept: VecDeque<Vec<f32>> = VecDeque::new();
            let mut kept_samples = 0usize;
            let mut overflowed = false;
            loop {
                if let Some(rejection) = timed_out(Stage::Decode, &measurements) {
                    return Err(rejection);
                }
                let _decoding = decode_span.enter();
                let block = match decoder.next_block() {
                    Ok(Some(block)) => block,
                    Ok(None) => break,
                    Err(err) => {
                        return Err(Rejection::new(decode_reason(&err), Stage::Decode, err.to_string(), measurements));
                    }
                };
                hash_bytes.clear();
                hash_bytes.extend(block.iter().flat_map(|sample| sample.to_bits().to_le_bytes()));
                hasher.update(&hash_bytes);
                content.update(&hash_bytes);
                if !overflowed {
                    if kept_samples + block.len() <= memory_limit {
                        kept.push_back(block.to_vec());
                        kept_samples += block.len();
                    } else {
                        overflowed = true;
                        kept = VecDeque::new();
                    }
                }
            }
            drop(decoder);
            let key = CacheKey::new(&content.finish(), cache.config_hash, cache.version);
            if let Some(found) = (cache.lookup)(&key) {
                let content_hash = format!("{:032x}", hasher.digest128());
                if let Some(result) = from_cache(found, &measurements, config, &content_hash) {
                    trace.hit = true;
                    return result;
                }
            }
            trace.key = Some(key);
            if overflowed {
                // A long source is decoded again rather than held in memory.
                let _decoding = decode_span.enter();
                Blocks::Live(Box::new(open_decoder(input)?))
            } else {
                Blocks::Kept { blocks: kept, current: None }
            }
        }
    };

    let channels = usize::from(info.channels);
    let mut levels = LevelMeter::new(info.channels);
    let mut source_loudness = LoudnessMeter::new(info.channels, info.sample_rate);
    let mut bandwidth = BandwidthMeter::new(info.sample_rate);
    let mut resampler = MonoResampler::new(info.sample_rate, out_rate).map_err(|err| {
        Rejection::new(Reason::InvalidHeader, Stage::Standardise, err.to_string(), measurements.clone())
    })?;
    let mut mono_block: Vec<f32> = Vec::new();
    let mut sanitised_block: Vec<f32> = Vec::new();
    let mut resampled: Vec<f32> = Vec::new();
    let scratch_dir = input.scratch_dir.map_or_else(std::env::temp_dir, Path::to_path_buf);
    let mut standard = SampleStore::new(memory_limit, &scratch_dir);
    let mut standard_loudness = LoudnessMeter::new(1, out_rate);
    let mut standard_levels = OutputLevels::default();
    let scratch_failed = |err: std::io::Error, measurements: &Measurements| {
        Rejection::new(
            Reason::InternalError,
            Stage::Standardise,
            format!("cannot use the scratch folder {}: {err}", scratch_dir.display()),
            measurements.clone(),
        )
    };

    loop {
        if let Some(rejection) = timed_out(Stage::Decode, &measurements) {
            return Err(rejection);
        }
        let decoding = decode_span.enter();
        let block = match blocks.next_block() {
            Ok(Some(block)) => block,
            Ok(None) => break,
            Err(err) => return Err(Rejection::new(decode_reason(&err), Stage::Decode, err.to_string(), measurements)),
        };
        drop(decoding);
        let _standardising = standardise_span.enter();
        if hash_inline {
            hash_bytes.clear();
            hash_bytes.extend(block.iter().flat_map(|sample| sample.to_bits().to_le_bytes()));
            hasher.update(&hash_bytes);
        }
        levels.add(block);

        // Everything downstream sees finite samples; the level meter has counted the others.
        let finite: &[f32] = if block.iter().all(|sample| sample.is_finite()) {
            block
        } else {
            sanitised_block.clear();
            sanitised_block.extend(block.iter().map(|&sample| if sample.is_finite() { sample } else { 0.0 }));
            &sanitised_block
        };
        source_loudness.add(finite);
        mono_block.clear();
        if channels == 1 {
            mono_block.extend_from_slice(finite);
        } else {
            let scale = 1.0 / channels as f32;
            mono_block.extend(finite.chunks_exact(channels).map(|frame| frame.iter().sum::<f32>() * scale));
        }
        bandwidth.add(&mono_block);
        resampled.clear();
        resampler.process(&mono_block, &mut resampled);
        standard_loudness.add(&resampled);
        standard_levels.add(&resampled);
        standard.extend(&resampled).map_err(|err| scratch_failed(err, &measurements))?;
    }
    let standardising = standardise_span.enter();
    resampled.clear();
    resampler.finish(&mut resampled);
    standard_loudness.add(&resampled);
    standard_levels.add(&resampled);
    standard.extend(&resampled).map_err(|err| scratch_failed(err, &measurements))?;

    drop(standardising);
    drop(standardise_span);
    drop(decode_span);
    let measuring = stage_span(Stage::Measure).entered();
    let level_stats = levels.finish();
    let duration_s = level_stats.frames as f64 / f64::from(info.sample_rate);
    measurements.duration_s = Some(duration_s);
    measurements.peak_dbfs = level_stats.peak_dbfs;
    measurements.rms_dbfs = level_stats.rms_dbfs;
    measurements.clipping_ratio = Some(level_stats.clipping_ratio);
    measurements.dc_offset = Some(level_stats.dc_offset);
    measurements.non_finite_samples = Some(level_stats.non_finite_samples);
    measurements.over_full_scale_samples = Some(level_stats.over_full_scale_samples);
    measurements.downmix_gain_db = level_stats.downmix_gain_db;
    measurements.loudness_lufs = source_loudness.integrated_lufs();
    let content_hash = format!("{:032x}", hasher.digest128());

    // Validation: always applies, whatever the gate says.
    let reject = |reason, stage, message: String, measurements: Measurements| {
        let mut rejection = Rejection::new(reason, stage, message, measurements);
        rejection.content_hash = Some(content_hash.clone());
        rejection
    };
    if level_stats.frames == 0 {
        return Err(reject(Reason::Empty, Stage::Validate, "no audio samples decoded".into(), measurements));
    }
    if level_stats.non_finite_samples > 0 {
        match settings.non_finite {
            NonFinitePolicy::Reject => {
                return Err(reject(
                    Reason::NonFiniteSamples,
                    Stage::Validate,
                    format!("{} samples are NaN or infinite", level_stats.non_finite_samples),
                    measurements,
                ));
            }
            NonFinitePolicy::Sanitise => measurements
                .warnings
                .push(format!("{} NaN or infinite samples were replaced with zero", level_stats.non_finite_samples)),
        }
    }
    if duration_s < MIN_MEASURABLE_SECONDS {
        return Err(reject(
            Reason::TooShort,
            Stage::Validate,
            format!("{:.1} ms of audio is too short to measure (minimum 10 ms)", duration_s * 1000.0),
            measurements,
        ));
    }
    if level_stats.over_full_scale_samples > 0 {
        measurements.warnings.push(format!(
            "{} samples above full scale were brought into range by normalisation",
            level_stats.over_full_scale_samples
        ));
    }
    if let Some(gain) = level_stats.downmix_gain_db
        && gain < CANCELLATION_WARNING_DB
    {
        measurements
            .warnings
            .push(format!("channels cancel when mixed to mono (downmix {gain:.1} dB below the channels)"));
    }

    measurements.bandwidth_hz = bandwidth.finish();
    let speech = analyse_store(&mut standard, out_rate).map_err(|err| scratch_failed(err, &measurements))?;
    measurements.speech_ratio = Some(speech.speech_ratio);
    measurements.leading_silence_s = Some(speech.leading_silence_s);
    measurements.trailing_silence_s = Some(speech.trailing_silence_s);
    measurements.total_silence_s = Some(speech.total_silence_s);
    measurements.snr_db = speech.snr_db;

    let (mut gain_db, gain_warnings) =
        normalisation_gain_db(&standard_levels, standard_loudness.integrated_lufs(), config);
    measurements.gain_db = Some(gain_db);
    // Where the normalisation's warnings sit, so that an enhanced signal's can replace them.
    let gain_warnings_at = measurements.warnings.len()..measurements.warnings.len() + gain_warnings.len();
    measurements.warnings.extend(gain_warnings);
    measurements.sample_rate = Some(out_rate);
    measurements.num_samples = Some(standard.len());

    drop(measuring);
    if trace.key.is_some() {
        trace.at_gate = Some(measurements.clone());
    }
    let gating = stage_span(Stage::Gate).entered();
    if let Some((reason, message)) = gate::check(&measurements, &config.gate) {
        return Err(reject(reason, Stage::Gate, message, measurements));
    }
    drop(gating);
    if let Some(rejection) = timed_out(Stage::Encode, &measurements) {
        return Err(rejection);
    }

    let mut delivered = standard;
    if config.enhance.enabled {
        let _enhancing = stage_span(Stage::Enhance).entered();
        let method = config.enhance.method;
        #[cfg(debug_assertions)]
        let fault = input.enhance_fault;
        let mut denoiser = move |segment: &[f32]| {
            #[cfg(debug_assertions)]
            if let Some(fault) = fault {
                return injected_fault(fault, segment);
            }
            denoise_segment(method, segment, out_rate)
        };
        let out_of_time = || started.elapsed().as_secs_f64() > timeout_seconds;
        let segment_len = (ENHANCE_SEGMENT_SECONDS * f64::from(out_rate)) as usize;
        let job =
            EnhanceJob { source: input.path, rate: out_rate, segment_len, memory_limit, out_of_time: &out_of_time };
        if let Some(enhanced) = enhance_accepted(&mut delivered, &job, &mut denoiser, &mut measurements) {
            // Normalise what is delivered: the gain follows the enhanced signal's own loudness
            // and peak, and its warnings replace those of the standardised signal.
            let (enhanced_gain_db, enhanced_warnings) =
                normalisation_gain_db(&enhanced.levels, enhanced.integrated_lufs, config);
            gain_db = enhanced_gain_db;
            measurements.gain_db = Some(gain_db);
            measurements.warnings.splice(gain_warnings_at, enhanced_warnings);
            delivered = enhanced.store;
        }
    }

    let _encoding = stage_span(Stage::Encode).entered();
    let gain = 10f64.powf(gain_db / 20.0) as f32;
    let audio = encode_store(&mut delivered, gain, settings.format, out_rate, &mut measurements)
        .map_err(|message| reject(Reason::InternalError, Stage::Encode, message, measurements.clone()))?;
    Ok(Processed { measurements, content_hash, audio })
}

/// Clips longer than this are denoised in segments of this length (one minute), each with its
/// own noise estimate, so the denoisers' working memory (about 24 bytes per sample for the
/// Wiener filter's STFT, 28 for RNNoise's 48 kHz copies) stays near 25 MB whatever the clip's
/// length. Clips within the gate's default 60 s are denoised whole.
const ENHANCE_SEGMENT_SECONDS: f64 = 60.0;

/// How [`enhance_accepted`] works through a clip.
struct EnhanceJob<'a> {
    /// The clip's file, named in the log when enhancement fails.
    source: &'a Path,
    /// Rate of the standardised signal, Hz.
    rate: u32,
    /// Samples denoised at a time.
    segment_len: usize,
    /// Samples of the enhanced signal held in memory before it spills (as the standardised one).
    memory_limit: usize,
    /// Whether the clip's time limit has passed; checked before each segment.
    out_of_time: &'a dyn Fn() -> bool,
}

/// Denoises one segment of the standardised signal into a segment of the same length.
type Denoiser<'a> = dyn FnMut(&[f32]) -> Result<Vec<f32>, String> + 'a;

/// The enhanced signal of a clip, with what normalising it needs.
struct Enhanced {
    store: SampleStore,
    levels: OutputLevels,
    integrated_lufs: Option<f64>,
}

/// Why an enhancement did not produce a signal to judge.
#[derive(Debug, thiserror::Error)]
enum EnhanceFailure {
    #[error("{0}")]
    Denoiser(String),
    #[error("denoising produced non-finite samples")]
    NonFinite,
    #[error("denoising returned {got} samples for {expected}")]
    Length { expected: usize, got: usize },
    #[error("the clip's time limit was reached")]
    OutOfTime,
    #[error("scratch file: {0}")]
    Io(#[from] std::io::Error),
}

/// Runs the enhancement stage on the standardised signal of an accepted clip, judges it by its
/// estimated SNR (not lower after than before, like `speechmill_audio::enhance::enhance`) and
/// records the outcome in `measurements`. Returns the enhanced signal when it is to be
/// delivered; `None` means deliver `standard` as it is.
///
/// A panic inside the enhancement is caught here: it touches `standard` only by reading it
/// from the start (each read rewinds), so the signal is intact for encoding afterwards.
fn enhance_accepted(
    standard: &mut SampleStore,
    job: &EnhanceJob<'_>,
    denoiser: &mut Denoiser<'_>,
    measurements: &mut Measurements,
) -> Option<Enhanced> {
    let attempt = catch_unwind(AssertUnwindSafe(|| -> Result<(Enhanced, Option<f64>), EnhanceFailure> {
        let mut enhanced = enhance_store(standard, job, denoiser)?;
        let analysis = analyse_store(&mut enhanced.store, job.rate)?;
        Ok((enhanced, analysis.snr_db))
    }));
    let failure = match attempt {
        Ok(Ok((enhanced, snr_after_db))) => {
            measurements.snr_enhanced_db = snr_after_db;
            let snr_before_db = measurements.snr_db;
            if let (Some(before), Some(after)) = (snr_before_db, snr_after_db)
                && after >= before
            {
                measurements.enhancement = Some(EnhancementOutcome::Applied);
                return Some(enhanced);
            }
            let describe = |snr: Option<f64>| snr.map_or_else(|| "undefined".to_string(), |snr| format!("{snr:.1} dB"));
            measurements.enhancement = Some(EnhancementOutcome::NotImproved);
            measurements.warnings.push(format!(
                "enhancement would change the estimated SNR from {} to {}; delivered unenhanced",
                describe(snr_before_db),
                describe(snr_after_db)
            ));
            return None;
        }
        Ok(Err(failure)) => failure.to_string(),
        Err(panic) => format!("panicked: {}", panic_detail(panic.as_ref())),
    };
    tracing::warn!(
        file.path = %job.source.display(),
        error = %failure,
        "enhancement failed; the clip is delivered unenhanced"
    );
    measurements.enhancement = Some(EnhancementOutcome::Failed);
    measurements.warnings.push(format!("enhancement failed ({failure}); delivered unenhanced"));
    None
}

/// Denoises the stored signal segment by segment into a new store, metering the result's level
/// and loudness as it is produced.
fn enhance_store(
    standard: &mut SampleStore,
    job: &EnhanceJob<'_>,
    denoiser: &mut Denoiser<'_>,
) -> Result<Enhanced, EnhanceFailure> {
    let mut store = SampleStore::new(job.memory_limit, standard.scratch_dir());
    let mut levels = OutputLevels::default();
    let mut loudness = LoudnessMeter::new(1, job.rate);
    for_each_segment(standard, job.segment_len, |segment| {
        if (job.out_of_time)() {
            return Err(EnhanceFailure::OutOfTime);
        }
        let denoised = denoiser(segment).map_err(EnhanceFailure::Denoiser)?;
        if denoised.len() != segment.len() {
            return Err(EnhanceFailure::Length { expected: segment.len(), got: denoised.len() });
        }
        if denoised.iter().any(|sample| !sample.is_finite()) {
            return Err(EnhanceFailure::NonFinite);
        }
        levels.add(&denoised);
        loudness.add(&denoised);
        store.extend(&denoised)?;
        Ok(())
    })?;
    Ok(Enhanced { store, levels, integrated_lufs: loudness.integrated_lufs() })
}

/// Denoises one segment with the configured method.
fn denoise_segment(method: EnhanceMethod, segment: &[f32], rate: u32) -> Result<Vec<f32>, String> {
    let denoised = match method {
        EnhanceMethod::Wiener => spectral_denoise(segment, rate),
        EnhanceMethod::Rnnoise => denoise(segment, rate),
    };
    denoised.map_err(|err| err.to_string())
}

/// The failure [`ClipInput::enhance_fault`] asks for, in place of denoising `segment`.
#[cfg(debug_assertions)]
fn injected_fault(fault: EnhanceFault, segment: &[f32]) -> Result<Vec<f32>, String> {
    match fault {
        EnhanceFault::Error => Err("injected failure (test hook)".into()),
        EnhanceFault::Panic => panic!("injected panic (test hook)"),
        EnhanceFault::NonFinite => Ok(vec![f32::NAN; segment.len()]),
    }
}

/// The span of one pipeline stage, named after it, under target `speechmill_pipeline::stage`.
pub fn stage_span(stage: Stage) -> tracing::Span {
    match stage {
        Stage::Read => tracing::info_span!(target: "speechmill_pipeline::stage", "read"),
        Stage::Decode => tracing::info_span!(target: "speechmill_pipeline::stage", "decode"),
        Stage::Validate => tracing::info_span!(target: "speechmill_pipeline::stage", "validate"),
        Stage::Standardise => tracing::info_span!(target: "speechmill_pipeline::stage", "standardise"),
        Stage::Measure => tracing::info_span!(target: "speechmill_pipeline::stage", "measure"),
        Stage::Gate => tracing::info_span!(target: "speechmill_pipeline::stage", "gate"),
        Stage::Enhance => tracing::info_span!(target: "speechmill_pipeline::stage", "enhance"),
        Stage::Encode => tracing::info_span!(target: "speechmill_pipeline::stage", "encode"),
        Stage::Write => tracing::info_span!(target: "speechmill_pipeline::stage", "write"),
    }
}

/// Clips longer than this are analysed for speech in segments of this length (10 minutes),
/// wherever their samples are held, so the results never depend on the memory limit and the
/// analysis holds at most one segment.
const ANALYSIS_SEGMENT_SECONDS: f64 = 600.0;

/// The message of a panic caught around [`process_clip`] (the payload of `catch_unwind`).
pub fn panic_detail(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|text| text.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// Speech activity, silences and SNR of the standardised signal, in segments of
/// [`ANALYSIS_SEGMENT_SECONDS`] whose results are combined.
fn analyse_store(store: &mut SampleStore, rate: u32) -> std::io::Result<SpeechAnalysis> {
    analyse_in_segments(store, rate, (ANALYSIS_SEGMENT_SECONDS * f64::from(rate)) as usize)
}

/// Durations and speech time add up across segments. The SNR is the clip's speech energy over
/// its noise energy, each segment's split of its energy into the two following from its own
/// estimate, so a single segment gives exactly [`analyse_speech`]'s answer.
fn analyse_in_segments(store: &mut SampleStore, rate: u32, segment_len: usize) -> std::io::Result<SpeechAnalysis> {
    if let Some(samples) = store.in_memory()
        && samples.len() <= segment_len.max(1)
    {
        return Ok(analyse_speech(samples, rate));
    }
    let mut combined = SpeechTotals::default();
    for_each_segment(store, segment_len, |segment| {
        combined.add(segment, rate);
        Ok::<(), std::io::Error>(())
    })?;
    Ok(combined.finish())
}

/// Hands the stored signal to `each` in consecutive segments of `segment_len` samples (the last
/// one shorter), holding at most one segment in memory beside the store.
fn for_each_segment<E: From<std::io::Error>>(
    store: &mut SampleStore,
    segment_len: usize,
    mut each: impl FnMut(&[f32]) -> Result<(), E>,
) -> Result<(), E> {
    let segment_len = segment_len.max(1);
    let mut segment: Vec<f32> = Vec::with_capacity(segment_len.min(store.len() as usize) + CHUNK_SAMPLES);
    let mut chunks = store.chunks(CHUNK_SAMPLES)?;
    loop {
        let chunk = chunks.next_chunk()?;
        let at_end = chunk.is_none();
        if let Some(chunk) = chunk {
            segment.extend_from_slice(chunk);
        }
        while segment.len() >= segment_len || (at_end && !segment.is_empty()) {
            let take = segment.len().min(segment_len);
            each(&segment[..take])?;
            segment.drain(..take);
        }
        if at_end {
            return Ok(());
        }
    }
}

/// Running sums of per-segment speech analyses.
#[derive(Default)]
struct SpeechTotals {
    duration_s: f64,
    speech_s: f64,
    silence_s: f64,
    /// Seconds before the first speech, once speech has been seen.
    leading_s: Option<f64>,
    /// Seconds since the last speech.
    trailing_s: f64,
    speech_energy: f64,
    noise_energy: f64,
    /// Whether any segment had an SNR estimate.
    has_snr: bool,
}

impl SpeechTotals {
    fn add(&mut self, segment: &[f32], rate: u32) {
        let analysis = analyse_speech(segment, rate);
        let duration_s = segment.len() as f64 / f64::from(rate);
        let has_speech = analysis.speech_ratio > 0.0;
        if has_speech {
            if self.leading_s.is_none() {
                self.leading_s = Some(self.duration_s + analysis.leading_silence_s);
            }
            self.trailing_s = analysis.trailing_silence_s;
        } else {
            self.trailing_s += duration_s;
        }
        self.duration_s += duration_s;
        self.speech_s += analysis.speech_ratio * duration_s;
        self.silence_s += analysis.total_silence_s;
        if let Some(snr_db) = analysis.snr_db {
            let energy: f64 = segment.iter().map(|&x| f64::from(x) * f64::from(x)).sum();
            let ratio = 10f64.powf(snr_db / 10.0);
            self.noise_energy += energy / (1.0 + ratio);
            self.speech_energy += energy * ratio / (1.0 + ratio);
            self.has_snr = true;
        }
    }

    fn finish(self) -> SpeechAnalysis {
        let snr_db = self.has_snr.then(|| {
            if self.noise_energy <= 0.0 {
                SNR_RANGE_DB.1
            } else {
                (10.0 * (self.speech_energy / self.noise_energy).max(1e-12).log10())
                    .clamp(SNR_RANGE_DB.0, SNR_RANGE_DB.1)
            }
        });
        SpeechAnalysis {
            speech_ratio: if self.duration_s > 0.0 { self.speech_s / self.duration_s } else { 0.0 },
            leading_silence_s: self.leading_s.unwrap_or(self.duration_s),
            trailing_silence_s: if self.leading_s.is_some() { self.trailing_s } else { self.duration_s },
            total_silence_s: self.silence_s,
            snr_db,
        }
    }
}

/// Range [`analyse_speech`] clamps its SNR to, in dB.
const SNR_RANGE_DB: (f64, f64) = (-20.0, 80.0);

/// Applies the gain and encodes, in memory for a clip held in memory and into a scratch file
/// for a spilled one; measures the output's peak and loudness on the way.
fn encode_store(
    store: &mut SampleStore,
    gain: f32,
    format: AudioFormat,
    rate: u32,
    measurements: &mut Measurements,
) -> Result<EncodedAudio, String> {
    let mut peak = 0f32;
    let mut loudness = LoudnessMeter::new(1, rate);
    let mut block: Vec<f32> = Vec::with_capacity(CHUNK_SAMPLES);
    let spilled = store.is_spilled();
    let mut encoder = if spilled {
        let file = tempfile::NamedTempFile::new_in(store.scratch_dir())
            .map_err(|err| format!("cannot make a scratch file in {}: {err}", store.scratch_dir().display()))?;
        let sink = BufWriter::with_capacity(1 << 16, file);
        Encoder::File(StreamEncoder::new(format, sink, rate).map_err(|err| err.to_string())?)
    } else {
        let bytes = Vec::with_capacity(store.len() as usize + 64);
        Encoder::Memory(StreamEncoder::new(format, Cursor::new(bytes), rate).map_err(|err| err.to_string())?)
    };
    let mut chunks = store.chunks(CHUNK_SAMPLES).map_err(|err| format!("cannot read the scratch file: {err}"))?;
    while let Some(chunk) = chunks.next_chunk().map_err(|err| format!("cannot read the scratch file: {err}"))? {
        block.clear();
        block.extend(chunk.iter().map(|&sample| sample * gain));
        for &sample in &block {
            peak = peak.max(sample.abs());
        }
        loudness.add(&block);
        match &mut encoder {
            Encoder::Memory(encoder) => encoder.write(&block),
            Encoder::File(encoder) => encoder.write(&block),
        }
        .map_err(|err| err.to_string())?;
    }
    measurements.output_peak_dbfs = (peak > 0.0).then(|| 20.0 * f64::from(peak).log10());
    measurements.output_loudness_lufs = loudness.integrated_lufs();
    match encoder {
        Encoder::Memory(encoder) => {
            Ok(EncodedAudio::Memory(encoder.finish().map_err(|err| err.to_string())?.into_inner()))
        }
        Encoder::File(encoder) => {
            let sink = encoder.finish().map_err(|err| err.to_string())?;
            let file = sink.into_inner().map_err(|err| format!("cannot write the scratch file: {}", err.error()))?;
            Ok(EncodedAudio::File(file))
        }
    }
}

enum Encoder {
    Memory(StreamEncoder<Cursor<Vec<u8>>>),
    File(StreamEncoder<BufWriter<tempfile::NamedTempFile>>),
}

/// FLAC or WAV, written block by block.
enum StreamEncoder<W: Write + Seek> {
    Flac(Box<FlacWriter<W>>),
    Wav(WavWriter<W>),
}

impl<W: Write + Seek> StreamEncoder<W> {
    fn new(format: AudioFormat, sink: W, rate: u32) -> Result<Self, EncodeError> {
        Ok(match format {
            AudioFormat::Flac => StreamEncoder::Flac(Box::new(FlacWriter::new(sink, rate)?)),
            AudioFormat::Wav => StreamEncoder::Wav(WavWriter::new(sink, rate)?),
        })
    }

    fn write(&mut self, samples: &[f32]) -> Result<(), EncodeError> {
        match self {
            StreamEncoder::Flac(writer) => writer.write(samples),
            StreamEncoder::Wav(writer) => writer.write(samples),
        }
    }

    fn finish(self) -> Result<W, EncodeError> {
        match self {
            StreamEncoder::Flac(writer) => writer.finish(),
            StreamEncoder::Wav(writer) => writer.finish(),
        }
    }
}

/// The gain that brings the clip to its target, lowered so the output peak stays under the
/// limit, with the warnings that go with it.
fn normalisation_gain_db(
    levels: &OutputLevels,
    integrated_lufs: Option<f64>,
    config: &PipelineConfig,
) -> (f64, Vec<String>) {
    let settings = &config.standardise;
    let mut warnings = Vec::new();
    if levels.peak == 0.0 {
        return (0.0, warnings);
    }
    let wanted = match settings.loudness_mode {
        LoudnessMode::Off => return (0.0, warnings),
        LoudnessMode::Rms => settings.target_rms_dbfs - levels.rms_dbfs(),
        LoudnessMode::Lufs => match integrated_lufs {
            Some(lufs) => settings.target_lufs - lufs,
            None => {
                warnings.push(
                    "loudness undefined (clip shorter than 400 ms or too quiet); normalised by RMS instead".into(),
                );
                settings.target_lufs - levels.rms_dbfs()
            }
        },
    };
    let headroom = settings.peak_limit_dbfs - 20.0 * f64::from(levels.peak).log10();
    if wanted > headroom {
        warnings.push(format!("peak limit held the gain {:.1} dB below the loudness target", wanted - headroom));
        return (headroom, warnings);
    }
    (wanted, warnings)
}

fn decode_reason(err: &DecodeError) -> Reason {
    match err {
        DecodeError::Empty => Reason::Empty,
        DecodeError::Unrecognised { .. } => Reason::UnrecognisedFormat,
        DecodeError::UnsupportedCodec { .. } => Reason::UnsupportedCodec,
        DecodeError::InvalidHeader { .. } => Reason::InvalidHeader,
        DecodeError::Corrupt { .. } => Reason::DecodeError,
        DecodeError::Io(_) => Reason::IoError,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 16 kHz signal of `seconds`: bursts of a 300 Hz tone (speech-like energy) every other
    /// second over low white noise.
    fn bursts(seconds: usize) -> Vec<f32> {
        let rate = 16_000;
        let mut state = 0x2545_f491_4f6c_dd1du64;
        (0..seconds * rate)
            .map(|n| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let noise = ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.002;
                let on = (n / rate) % 2 == 1;
                let tone =
                    if on { 0.3 * (2.0 * std::f32::consts::PI * 300.0 * n as f32 / rate as f32).sin() } else { 0.0 };
                tone + noise
            })
            .collect()
    }

    #[test]
    fn segmented_speech_analysis_adds_up_to_the_whole() {
        let signal = bursts(12);
        let dir = tempfile::tempdir().unwrap();
        let mut store = SampleStore::new(usize::MAX, dir.path());
        store.extend(&signal).unwrap();
        let whole = analyse_in_segments(&mut store, 16_000, usize::MAX).unwrap();
        assert_eq!(whole, analyse_speech(&signal, 16_000), "one segment is exactly the plain analysis");
        // Three 4 s segments.
        let parts = analyse_in_segments(&mut store, 16_000, 4 * 16_000).unwrap();
        let silence_sum: f64 =
            signal.chunks(4 * 16_000).map(|segment| analyse_speech(segment, 16_000).total_silence_s).sum();
        assert!((parts.total_silence_s - silence_sum).abs() < 1e-9);
        assert!((parts.speech_ratio - whole.speech_ratio).abs() < 0.05, "{parts:?} vs {whole:?}");
        assert!((parts.leading_silence_s - whole.leading_silence_s).abs() < 0.1, "{parts:?} vs {whole:?}");
        assert!((parts.trailing_silence_s - whole.trailing_silence_s).abs() < 0.1, "{parts:?} vs {whole:?}");
        let (Some(parts_snr), Some(whole_snr)) = (parts.snr_db, whole.snr_db) else {
            panic!("both estimate an SNR: {parts:?} {whole:?}");
        };
        assert!((parts_snr - whole_snr).abs() < 1.0, "{parts_snr} vs {whole_snr}");
    }

    /// The signal in a store held in memory (no scratch file is made).
    fn in_memory(signal: &[f32]) -> SampleStore {
        let mut store = SampleStore::new(usize::MAX, Path::new("unused-scratch"));
        store.extend(signal).unwrap();
        store
    }

    #[test]
    fn a_long_clip_is_denoised_segment_by_segment() {
        let signal = bursts(7);
        let mut store = in_memory(&signal);
        let never = || false;
        let job = EnhanceJob {
            source: Path::new("bursts.wav"),
            rate: 16_000,
            segment_len: 2 * 16_000,
            memory_limit: usize::MAX,
            out_of_time: &never,
        };
        let mut denoiser = |segment: &[f32]| denoise_segment(EnhanceMethod::Wiener, segment, 16_000);
        let mut enhanced = enhance_store(&mut store, &job, &mut denoiser).unwrap();
        // Segments of 2, 2, 2 and 1 s, each denoised on its own.
        let expected: Vec<f32> =
            signal.chunks(2 * 16_000).flat_map(|segment| spectral_denoise(segment, 16_000).unwrap()).collect();
        assert_eq!(enhanced.store.in_memory().unwrap(), expected.as_slice());
        let mut loudness = LoudnessMeter::new(1, 16_000);
        loudness.add(&expected);
        assert_eq!(enhanced.integrated_lufs, loudness.integrated_lufs(), "metered as it was produced");
        let peak = expected.iter().fold(0f32, |peak, sample| peak.max(sample.abs()));
        assert_eq!((enhanced.levels.peak, enhanced.levels.samples), (peak, signal.len() as u64));
        // The standardised signal is untouched, and can be read again for encoding.
        assert_eq!(store.in_memory().unwrap(), signal.as_slice());
        assert_eq!(analyse_store(&mut enhanced.store, 16_000).unwrap(), analyse_speech(&expected, 16_000));
    }

    #[test]
    fn enhancement_gives_up_at_the_clip_time_limit_and_delivers_the_clip() {
        let signal = bursts(3);
        let mut store = in_memory(&signal);
        let always = || true;
        let job = EnhanceJob {
            source: Path::new("bursts.wav"),
            rate: 16_000,
            segment_len: 16_000,
            memory_limit: usize::MAX,
            out_of_time: &always,
        };
        let mut denoiser = |segment: &[f32]| denoise_segment(EnhanceMethod::Wiener, segment, 16_000);
        let mut measurements =
            Measurements { snr_db: analyse_speech(&signal, 16_000).snr_db, ..Measurements::default() };
        assert!(enhance_accepted(&mut store, &job, &mut denoiser, &mut measurements).is_none());
        assert_eq!(measurements.enhancement, Some(EnhancementOutcome::Failed));
        assert_eq!(
            measurements.warnings,
            vec!["enhancement failed (the clip's time limit was reached); delivered unenhanced".to_string()]
        );
        assert_eq!(store.in_memory().unwrap(), signal.as_slice());
    }

    #[test]
    fn enhancement_outcomes_have_stable_names() {
        for outcome in [EnhancementOutcome::Applied, EnhancementOutcome::NotImproved, EnhancementOutcome::Failed] {
            assert_eq!(serde_json::to_value(outcome).unwrap(), serde_json::json!(outcome.as_str()));
        }
        assert!(!EnhancementOutcome::Applied.is_fallback());
        assert!(EnhancementOutcome::NotImproved.is_fallback() && EnhancementOutcome::Failed.is_fallback());
    }

    #[test]
    fn segments_without_speech_count_towards_leading_and_trailing_silence() {
        let mut totals = SpeechTotals::default();
        let quiet = vec![0.0f32; 16_000];
        totals.add(&quiet, 16_000);
        let finished = totals.finish();
        assert_eq!(finished.leading_silence_s, 1.0);
        assert_eq!(finished.trailing_silence_s, 1.0);
        assert_eq!(finished.snr_db, None, "digital silence has no SNR");
    }
}
