//! Encoding standardised mono audio as 16-bit FLAC or WAV bytes.

/// Why encoding failed.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// The encoder rejected its input or configuration.
    #[error("encoder failed: {0}")]
    Encoder(String),
}

/// Encodes mono samples in [-1, 1] as 16-bit FLAC (samples outside are clamped).
pub fn encode_flac_16(mono: &[f32], sample_rate: u32) -> Result<Vec<u8>, EncodeError> {
    let _ = (mono, sample_rate);
    todo!("encode helper")
}

/// Encodes mono samples in [-1, 1] as 16-bit PCM WAV (samples outside are clamped).
pub fn encode_wav_16(mono: &[f32], sample_rate: u32) -> Result<Vec<u8>, EncodeError> {
    let _ = (mono, sample_rate);
    todo!("encode helper")
}
