//! Clip measurements: levels, clipping, DC, speech activity, silence, SNR and bandwidth.

/// Level statistics over the decoded source, accumulated block by block.
pub struct LevelMeter {}

/// The result of a [`LevelMeter`].
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Levels {
    /// Frames seen.
    pub frames: u64,
    /// Sample peak over all channels in dBFS (`None` for digital silence).
    pub peak_dbfs: Option<f64>,
    /// RMS over all channels in dBFS (`None` for digital silence).
    pub rms_dbfs: Option<f64>,
    /// Fraction of samples at or above full scale (|x| >= 0.999).
    pub clipping_ratio: f64,
    /// Mean sample value over all channels.
    pub dc_offset: f64,
    /// Samples that are NaN or infinite (they are excluded from every other figure).
    pub non_finite_samples: u64,
    /// Samples whose magnitude exceeds full scale (|x| > 1.0), valid in float formats.
    pub over_full_scale_samples: u64,
    /// For two or more channels: energy of the mean downmix relative to the mean channel energy, in dB
    /// (about -inf when the channels cancel, 0 when they are identical). `None` for mono.
    pub downmix_gain_db: Option<f64>,
}

impl LevelMeter {
    /// A meter for `channels` interleaved channels.
    pub fn new(channels: u16) -> Self {
        let _ = channels;
        todo!("dsp helper")
    }

    /// Adds interleaved samples.
    pub fn add(&mut self, interleaved: &[f32]) {
        let _ = interleaved;
        todo!("dsp helper")
    }

    /// The statistics so far.
    pub fn finish(&self) -> Levels {
        todo!("dsp helper")
    }
}

/// Effective bandwidth estimator over a mono stream at its source rate.
pub struct BandwidthMeter {}

impl BandwidthMeter {
    /// A meter for mono audio at `sample_rate` Hz.
    pub fn new(sample_rate: u32) -> Self {
        let _ = sample_rate;
        todo!("dsp helper")
    }

    /// Adds mono samples.
    pub fn add(&mut self, mono: &[f32]) {
        let _ = mono;
        todo!("dsp helper")
    }

    /// The highest frequency in Hz that carries signal above the spectral floor, `None` for silence.
    pub fn finish(&self) -> Option<f64> {
        todo!("dsp helper")
    }
}

/// Speech activity, silence and SNR of a mono clip.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SpeechAnalysis {
    /// Fraction of the clip's frames the voice activity detector calls speech.
    pub speech_ratio: f64,
    /// Seconds before the first speech frame (the whole clip when there is none).
    pub leading_silence_s: f64,
    /// Seconds after the last speech frame (the whole clip when there is none).
    pub trailing_silence_s: f64,
    /// Seconds of non-speech in the whole clip.
    pub total_silence_s: f64,
    /// Speech energy over noise energy across the clip, in dB; `None` when it cannot be estimated.
    pub snr_db: Option<f64>,
}

/// Runs the voice activity detector and the SNR estimator over a mono clip at `sample_rate` Hz.
pub fn analyse_speech(mono: &[f32], sample_rate: u32) -> SpeechAnalysis {
    let _ = (mono, sample_rate);
    todo!("dsp helper")
}
