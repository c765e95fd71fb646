//! Streaming high-quality sample-rate conversion of mono audio.

/// Why a resampler could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ResampleError {
    /// A rate of zero or a ratio the resampler cannot do.
    #[error("cannot resample from {from} Hz to {to} Hz: {detail}")]
    Unsupported {
        /// Input rate.
        from: u32,
        /// Output rate.
        to: u32,
        /// Why.
        detail: String,
    },
}

/// Converts a mono stream from one fixed rate to another, compensating the filter delay so that
/// output sample `k` lines up with input time `k / out_rate`.
pub struct MonoResampler {}

impl MonoResampler {
    /// Builds a resampler; equal rates pass samples through untouched.
    pub fn new(in_rate: u32, out_rate: u32) -> Result<Self, ResampleError> {
        let _ = (in_rate, out_rate);
        todo!("dsp helper")
    }

    /// Feeds input samples and appends whatever output is ready to `out`.
    pub fn process(&mut self, input: &[f32], out: &mut Vec<f32>) {
        let _ = (input, out);
        todo!("dsp helper")
    }

    /// Flushes the tail: after this the total output is `round(total_in * out_rate / in_rate)` samples.
    pub fn finish(&mut self, out: &mut Vec<f32>) {
        let _ = out;
        todo!("dsp helper")
    }
}
