//! EBU R128 loudness (via the `ebur128` crate) and the gain that reaches a target.

/// Streaming integrated-loudness meter over interleaved samples.
pub struct LoudnessMeter {}

impl LoudnessMeter {
    /// A meter for `channels` interleaved channels at `sample_rate` Hz.
    pub fn new(channels: u16, sample_rate: u32) -> Self {
        let _ = (channels, sample_rate);
        todo!("dsp helper")
    }

    /// Adds interleaved samples.
    pub fn add(&mut self, interleaved: &[f32]) {
        let _ = interleaved;
        todo!("dsp helper")
    }

    /// Integrated loudness in LUFS, or `None` when undefined (shorter than one 400 ms block, or all gated out).
    pub fn integrated_lufs(&self) -> Option<f64> {
        todo!("dsp helper")
    }
}

/// Integrated loudness of a mono buffer in LUFS, `None` when undefined.
pub fn integrated_lufs_mono(samples: &[f32], sample_rate: u32) -> Option<f64> {
    let mut meter = LoudnessMeter::new(1, sample_rate);
    meter.add(samples);
    meter.integrated_lufs()
}
