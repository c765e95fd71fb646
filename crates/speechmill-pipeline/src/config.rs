//! The pipeline's typed configuration: standardisation targets, limits, gate thresholds and the
//! optional enhancement stage.

use serde::{Deserialize, Serialize};

/// How clips are brought to a common level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LoudnessMode {
    /// EBU R128 integrated loudness to `target_lufs`.
    Lufs,
    /// RMS level to `target_rms_dbfs`.
    Rms,
    /// No level change.
    Off,
}

/// The container and codec of the output audio.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AudioFormat {
    /// 16-bit FLAC.
    Flac,
    /// 16-bit PCM WAV.
    Wav,
}

impl AudioFormat {
    /// The file extension.
    pub fn extension(self) -> &'static str {
        match self {
            AudioFormat::Flac => "flac",
            AudioFormat::Wav => "wav",
        }
    }
}

/// What to do with NaN or infinite samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NonFinitePolicy {
    /// Reject the clip as `non_finite_samples`.
    Reject,
    /// Replace them with zero, keep the clip and flag it with a warning.
    Sanitise,
}

/// Standardisation settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StandardiseConfig {
    /// Output sample rate in Hz.
    pub sample_rate_hz: u32,
    /// Level normalisation mode.
    pub loudness_mode: LoudnessMode,
    /// Integrated loudness target for `lufs` mode.
    pub target_lufs: f64,
    /// RMS target for `rms` mode.
    pub target_rms_dbfs: f64,
    /// Normalising never raises the sample peak above this level.
    pub peak_limit_dbfs: f64,
    /// Output audio format.
    pub format: AudioFormat,
    /// NaN and infinite samples.
    pub non_finite: NonFinitePolicy,
    /// A clip taking longer than this is rejected as `timeout`.
    pub clip_timeout_seconds: f64,
}

impl Default for StandardiseConfig {
    fn default() -> Self {
        StandardiseConfig {
            sample_rate_hz: 16_000,
            loudness_mode: LoudnessMode::Lufs,
            target_lufs: -23.0,
            target_rms_dbfs: -20.0,
            peak_limit_dbfs: -1.0,
            format: AudioFormat::Flac,
            non_finite: NonFinitePolicy::Reject,
            clip_timeout_seconds: 300.0,
        }
    }
}

/// Quality gate thresholds. A threshold that is `None` is not applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GateConfig {
    /// When false every valid clip is accepted (duplicates carry `duplicate_of`).
    pub enabled: bool,
    /// Shortest accepted duration.
    pub min_duration_s: Option<f64>,
    /// Longest accepted duration.
    pub max_duration_s: Option<f64>,
    /// Lowest accepted SNR estimate.
    pub min_snr_db: Option<f64>,
    /// Lowest accepted fraction of speech frames.
    pub min_speech_ratio: Option<f64>,
    /// Highest accepted fraction of clipped samples.
    pub max_clipping_ratio: Option<f64>,
    /// Lowest accepted effective bandwidth.
    pub min_bandwidth_hz: Option<f64>,
    /// Reject later exact copies of the same decoded audio.
    pub reject_duplicates: bool,
}

impl Default for GateConfig {
    fn default() -> Self {
        GateConfig {
            enabled: true,
            min_duration_s: Some(0.5),
            max_duration_s: Some(60.0),
            min_snr_db: Some(5.0),
            min_speech_ratio: Some(0.1),
            max_clipping_ratio: Some(0.01),
            min_bandwidth_hz: None,
            reject_duplicates: true,
        }
    }
}

/// How the enhancement stage denoises a clip.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EnhanceMethod {
    /// Spectral (Wiener) filtering driven by the speech-activity detector's noise estimate
    /// (`speechmill_audio::enhance::spectral_denoise`).
    Wiener,
    /// RNNoise through `nnnoiseless` (`speechmill_audio::enhance::denoise`).
    Rnnoise,
}

impl EnhanceMethod {
    /// The configuration value (`wiener`, `rnnoise`).
    pub fn as_str(self) -> &'static str {
        match self {
            EnhanceMethod::Wiener => "wiener",
            EnhanceMethod::Rnnoise => "rnnoise",
        }
    }
}

/// The optional enhancement (denoising) stage, run on clips the gate accepted. It never changes
/// the gate's verdict and never rejects a clip: when it fails or would lower the clip's estimated
/// SNR, the standardised clip is delivered unenhanced and flagged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EnhanceConfig {
    /// Denoise accepted clips (off by default: a dataset is standardised, not altered, unless
    /// asked).
    pub enabled: bool,
    /// The denoiser. The default is `wiener`: in `docs/accuracy.md` it gains more SI-SDR than
    /// RNNoise on every noise at 5 dB SNR (white +6.2 against +3.0 dB, pink +5.0 against +3.3,
    /// recorded +2.9 against +1.6, babble +1.3 against -0.4) and costs far less on cleaner
    /// speech (-0.5 against -7.8 dB at 20 dB SNR).
    pub method: EnhanceMethod,
}

impl Default for EnhanceConfig {
    fn default() -> Self {
        EnhanceConfig { enabled: false, method: EnhanceMethod::Wiener }
    }
}

/// Everything the per-clip pipeline needs to know.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    /// Standardisation.
    pub standardise: StandardiseConfig,
    /// Quality gate.
    pub gate: GateConfig,
    /// Optional enhancement of accepted clips.
    pub enhance: EnhanceConfig,
}

impl PipelineConfig {
    /// Checks values that types cannot: returns every problem found, one message each.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        let standardise = &self.standardise;
        if !(8_000..=192_000).contains(&standardise.sample_rate_hz) {
            problems.push(format!(
                "standardise.sample_rate_hz must be between 8000 and 192000, not {}",
                standardise.sample_rate_hz
            ));
        }
        if !(-70.0..=0.0).contains(&standardise.target_lufs) {
            problems
                .push(format!("standardise.target_lufs must be between -70 and 0, not {}", standardise.target_lufs));
        }
        if !(-70.0..=0.0).contains(&standardise.target_rms_dbfs) {
            problems.push(format!(
                "standardise.target_rms_dbfs must be between -70 and 0, not {}",
                standardise.target_rms_dbfs
            ));
        }
        if !(-40.0..=0.0).contains(&standardise.peak_limit_dbfs) {
            problems.push(format!(
                "standardise.peak_limit_dbfs must be between -40 and 0, not {}",
                standardise.peak_limit_dbfs
            ));
        }
        if !standardise.clip_timeout_seconds.is_finite() || standardise.clip_timeout_seconds <= 0.0 {
            problems.push("standardise.clip_timeout_seconds must be positive".to_string());
        }
        let gate = &self.gate;
        if let (Some(min), Some(max)) = (gate.min_duration_s, gate.max_duration_s)
            && min > max
        {
            problems.push(format!("gate.min_duration_s ({min}) is above gate.max_duration_s ({max})"));
        }
        for (name, value) in
            [("gate.min_speech_ratio", gate.min_speech_ratio), ("gate.max_clipping_ratio", gate.max_clipping_ratio)]
        {
            if let Some(value) = value
                && !(0.0..=1.0).contains(&value)
            {
                problems.push(format!("{name} must be between 0 and 1, not {value}"));
            }
        }
        if problems.is_empty() { Ok(()) } else { Err(problems) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enhancement_is_off_by_default_and_its_method_is_checked() {
        let config = PipelineConfig::default();
        assert_eq!(config.enhance, EnhanceConfig { enabled: false, method: EnhanceMethod::Wiener });
        let parsed: PipelineConfig =
            serde_json::from_value(serde_json::json!({"enhance": {"enabled": true, "method": "rnnoise"}})).unwrap();
        assert_eq!(parsed.enhance, EnhanceConfig { enabled: true, method: EnhanceMethod::Rnnoise });
        assert_eq!(parsed.enhance.method.as_str(), "rnnoise");
        assert!(parsed.validate().is_ok());
        for bad in [serde_json::json!({"method": "spectral"}), serde_json::json!({"strength": 1.0})] {
            let error = serde_json::from_value::<PipelineConfig>(serde_json::json!({ "enhance": bad })).unwrap_err();
            assert!(error.to_string().contains("unknown"), "{error}");
        }
    }
}
