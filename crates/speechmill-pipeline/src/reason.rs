//! Stable machine reason codes for rejected clips (documented in docs/reasons.md).

use serde::{Deserialize, Serialize};

/// Why a clip was rejected. The string form is stable: scripts and dashboards rely on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// The file could not be read.
    IoError,
    /// The file has no bytes, or decoding yielded no samples.
    Empty,
    /// The content is not a format speechmill recognises (headerless PCM needs `--raw-format`).
    UnrecognisedFormat,
    /// The container is known but its codec is not supported.
    UnsupportedCodec,
    /// The header describes something impossible (zero channels, zero rate, no format).
    InvalidHeader,
    /// The stream is corrupt beyond recovery.
    DecodeError,
    /// Samples are NaN or infinite.
    NonFiniteSamples,
    /// Shorter than 10 ms (validation) or than the configured minimum duration (gate).
    TooShort,
    /// Longer than the configured maximum duration.
    TooLong,
    /// Speech ratio below the configured minimum.
    NoSpeech,
    /// Estimated SNR below the configured minimum.
    LowSnr,
    /// Clipping ratio above the configured maximum.
    Clipped,
    /// Effective bandwidth below the configured minimum.
    Narrowband,
    /// The same decoded audio appeared earlier in input order.
    Duplicate,
    /// speechmill failed on this clip (a bug): the details are logged.
    InternalError,
    /// Processing took longer than the per-clip time limit.
    Timeout,
}

impl Reason {
    /// Every reason, in documentation order.
    pub const ALL: [Reason; 16] = [
        Reason::IoError,
        Reason::Empty,
        Reason::UnrecognisedFormat,
        Reason::UnsupportedCodec,
        Reason::InvalidHeader,
        Reason::DecodeError,
        Reason::NonFiniteSamples,
        Reason::TooShort,
        Reason::TooLong,
        Reason::NoSpeech,
        Reason::LowSnr,
        Reason::Clipped,
        Reason::Narrowband,
        Reason::Duplicate,
        Reason::InternalError,
        Reason::Timeout,
    ];

    /// The stable code.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::IoError => "io_error",
            Reason::Empty => "empty",
            Reason::UnrecognisedFormat => "unrecognised_format",
            Reason::UnsupportedCodec => "unsupported_codec",
            Reason::InvalidHeader => "invalid_header",
            Reason::DecodeError => "decode_error",
            Reason::NonFiniteSamples => "non_finite_samples",
            Reason::TooShort => "too_short",
            Reason::TooLong => "too_long",
            Reason::NoSpeech => "no_speech",
            Reason::LowSnr => "low_snr",
            Reason::Clipped => "clipped",
            Reason::Narrowband => "narrowband",
            Reason::Duplicate => "duplicate",
            Reason::InternalError => "internal_error",
            Reason::Timeout => "timeout",
        }
    }

    /// Whether the reason is a failure of speechmill rather than a property of the clip.
    pub fn is_internal(self) -> bool {
        matches!(self, Reason::InternalError | Reason::Timeout)
    }

    /// Parses a stable code.
    pub fn from_code(code: &str) -> Option<Reason> {
        Reason::ALL.into_iter().find(|reason| reason.as_str() == code)
    }
}

/// The pipeline stage at which a clip was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Reading the file.
    Read,
    /// Decoding its content.
    Decode,
    /// Validation of the decoded samples.
    Validate,
    /// Mono, resampling and loudness.
    Standardise,
    /// Encoding the output.
    Encode,
    /// The quality gate.
    Gate,
    /// Speech activity, SNR, bandwidth and loudness of the standardised signal (no clip is
    /// rejected here; the gate decides).
    Measure,
    /// The optional denoising of an accepted clip (no clip is rejected here: a failed or
    /// unhelpful enhancement delivers the standardised clip, flagged).
    Enhance,
    /// Writing the outputs (by the caller, after the pipeline).
    Write,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for reason in Reason::ALL {
            assert!(seen.insert(reason.as_str()), "duplicate code {}", reason.as_str());
            assert_eq!(Reason::from_code(reason.as_str()), Some(reason));
            let json = serde_json::to_string(&reason).unwrap();
            assert_eq!(json, format!("\"{}\"", reason.as_str()));
        }
    }
}
