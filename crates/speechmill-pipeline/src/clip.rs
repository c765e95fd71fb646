//! One clip, start to finish: decode, validate, standardise, measure, encode.
//!
//! The gate and duplicate detection are applied afterwards ([`crate::gate`]), because exact
//! duplicates can only be decided in input order once every clip has been hashed.

use std::fs::File;
use std::path::Path;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use speechmill_audio::decode::{DecodeError, RawFormat, StreamDecoder};
use speechmill_audio::encode;
use speechmill_audio::loudness::{LoudnessMeter, integrated_lufs_mono};
use speechmill_audio::measure::{BandwidthMeter, LevelMeter, analyse_speech};
use speechmill_audio::resample::MonoResampler;
use xxhash_rust::xxh3::Xxh3;

use crate::config::{AudioFormat, LoudnessMode, NonFinitePolicy, PipelineConfig};
use crate::reason::{Reason, Stage};

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
    /// Estimated speech-to-noise energy ratio across the clip, dB.
    pub snr_db: Option<f64>,
    /// Effective bandwidth of the source, Hz.
    pub bandwidth_hz: Option<f64>,
    /// Gain applied by loudness normalisation, dB.
    pub gain_db: Option<f64>,
    /// Integrated loudness of the output, LUFS.
    pub output_loudness_lufs: Option<f64>,
    /// Sample peak of the output, dBFS.
    pub output_peak_dbfs: Option<f64>,
    /// Things worth knowing that did not stop the clip.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// What to process.
#[derive(Debug, Clone)]
pub struct ClipInput<'a> {
    /// The file.
    pub path: &'a Path,
    /// How to read it if it is headerless PCM.
    pub raw_format: Option<RawFormat>,
}

/// A clip that went through: its measurements, its content hash and its encoded audio.
#[derive(Debug, Clone)]
pub struct Processed {
    /// Every measurement.
    pub measurements: Measurements,
    /// Hash of the decoded source samples (exact-duplicate detection).
    pub content_hash: String,
    /// The standardised audio, encoded.
    pub audio: Vec<u8>,
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

/// Runs one clip through decode, validation, standardisation, measurement and encoding.
///
/// Never panics on bad input: every problem with the content comes back as a [`Rejection`].
pub fn process_clip(input: &ClipInput<'_>, config: &PipelineConfig) -> Result<Processed, Box<Rejection>> {
    let started = Instant::now();
    let settings = &config.standardise;
    let mut measurements = Measurements::default();

    let file = File::open(input.path).map_err(|err| {
        Rejection::new(Reason::IoError, Stage::Read, format!("cannot open: {err}"), Measurements::default())
    })?;
    let mut decoder = StreamDecoder::open(Box::new(file), input.raw_format)
        .map_err(|err| Rejection::new(decode_reason(&err), Stage::Decode, err.to_string(), Measurements::default()))?;

    let info = decoder.info().clone();
    measurements.source_container = Some(info.container.clone());
    measurements.source_codec = Some(info.codec.clone());
    measurements.source_sample_rate = Some(info.sample_rate);
    measurements.source_channels = Some(info.channels);
    measurements.source_bits_per_sample = info.bits_per_sample;

    let channels = usize::from(info.channels);
    let mut levels = LevelMeter::new(info.channels);
    let mut source_loudness = LoudnessMeter::new(info.channels, info.sample_rate);
    let mut bandwidth = BandwidthMeter::new(info.sample_rate);
    let mut resampler = MonoResampler::new(info.sample_rate, settings.sample_rate_hz).map_err(|err| {
        Rejection::new(Reason::InvalidHeader, Stage::Standardise, err.to_string(), measurements.clone())
    })?;
    let mut hasher = Xxh3::new();
    let mut mono_block: Vec<f32> = Vec::new();
    let mut sanitised_block: Vec<f32> = Vec::new();
    let mut hash_bytes: Vec<u8> = Vec::new();
    let mut standard: Vec<f32> = Vec::new();
    let timeout_seconds = settings.clip_timeout_seconds;

    loop {
        if started.elapsed().as_secs_f64() > timeout_seconds {
            return Err(Rejection::new(
                Reason::Timeout,
                Stage::Decode,
                format!("processing took longer than {timeout_seconds} s"),
                measurements,
            ));
        }
        let block = match decoder.next_block() {
            Ok(Some(block)) => block,
            Ok(None) => break,
            Err(err) => return Err(Rejection::new(decode_reason(&err), Stage::Decode, err.to_string(), measurements)),
        };
        hash_bytes.clear();
        hash_bytes.extend(block.iter().flat_map(|sample| sample.to_bits().to_le_bytes()));
        hasher.update(&hash_bytes);
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
        resampler.process(&mono_block, &mut standard);
    }
    resampler.finish(&mut standard);

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
    let speech = analyse_speech(&standard, settings.sample_rate_hz);
    measurements.speech_ratio = Some(speech.speech_ratio);
    measurements.leading_silence_s = Some(speech.leading_silence_s);
    measurements.trailing_silence_s = Some(speech.trailing_silence_s);
    measurements.total_silence_s = Some(speech.total_silence_s);
    measurements.snr_db = speech.snr_db;

    let gain_db = normalisation_gain_db(&standard, config, &mut measurements);
    let gain = 10f64.powf(gain_db / 20.0) as f32;
    let mut peak = 0f32;
    for sample in &mut standard {
        *sample *= gain;
        peak = peak.max(sample.abs());
    }
    measurements.gain_db = Some(gain_db);
    measurements.output_peak_dbfs = (peak > 0.0).then(|| 20.0 * f64::from(peak).log10());
    measurements.output_loudness_lufs = integrated_lufs_mono(&standard, settings.sample_rate_hz);
    measurements.sample_rate = Some(settings.sample_rate_hz);
    measurements.num_samples = Some(standard.len() as u64);

    let encoded = match settings.format {
        AudioFormat::Flac => encode::encode_flac_16(&standard, settings.sample_rate_hz),
        AudioFormat::Wav => encode::encode_wav_16(&standard, settings.sample_rate_hz),
    };
    let audio =
        encoded.map_err(|err| reject(Reason::InternalError, Stage::Encode, err.to_string(), measurements.clone()))?;
    Ok(Processed { measurements, content_hash, audio })
}

/// The gain that brings the clip to its target, lowered so the output peak stays under the limit.
fn normalisation_gain_db(standard: &[f32], config: &PipelineConfig, measurements: &mut Measurements) -> f64 {
    let settings = &config.standardise;
    let peak = standard.iter().fold(0f32, |peak, sample| peak.max(sample.abs()));
    if peak == 0.0 {
        return 0.0;
    }
    let rms_dbfs = || {
        let energy: f64 = standard.iter().map(|&sample| f64::from(sample) * f64::from(sample)).sum();
        10.0 * (energy / standard.len() as f64).log10()
    };
    let wanted = match settings.loudness_mode {
        LoudnessMode::Off => return 0.0,
        LoudnessMode::Rms => settings.target_rms_dbfs - rms_dbfs(),
        LoudnessMode::Lufs => match integrated_lufs_mono(standard, settings.sample_rate_hz) {
            Some(lufs) => settings.target_lufs - lufs,
            None => {
                measurements.warnings.push(
                    "loudness undefined (clip shorter than 400 ms or too quiet); normalised by RMS instead".into(),
                );
                settings.target_lufs - rms_dbfs()
            }
        },
    };
    let headroom = settings.peak_limit_dbfs - 20.0 * f64::from(peak).log10();
    if wanted > headroom {
        measurements
            .warnings
            .push(format!("peak limit held the gain {:.1} dB below the loudness target", wanted - headroom));
        return headroom;
    }
    wanted
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
