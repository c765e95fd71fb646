//! EBU R128 loudness (via the `ebur128` crate) and the gain that reaches a target.
//!
//! Channel weighting follows ITU-R BS.1770 as `ebur128` applies it by default (the WAVE/SMPTE
//! order): L, R, C (weight 1), LFE (ignored), Ls, Rs (weight 1.41); 4 channels are L, R, Ls, Rs
//! and 5 are L, R, C, Ls, Rs; channels beyond the sixth are ignored. A mono signal counts once,
//! so a mono file reads about 3 dB lower than the same signal played on both stereo channels.

use ebur128::{EbuR128, Mode};

/// Lowest sample rate at which K-weighting is meaningful. The K-weighting shelf sits at about
/// 1.5 kHz and the high-pass at 38 Hz; `ebur128` designs them by bilinear transform, and at a few
/// kHz the shelf lands next to (or beyond) Nyquist and the filter gain explodes (a 1 kHz file
/// reads thousands of LUFS). Below this rate the meter reports `None`.
pub const MIN_LOUDNESS_RATE_HZ: u32 = 8000;

/// Streaming integrated-loudness meter over interleaved samples.
///
/// Non-finite samples are counted as zero. Interleaved input may be split anywhere, even inside
/// a frame. At rates below [`MIN_LOUDNESS_RATE_HZ`], or for a channel count `ebur128` does not
/// accept (0 or more than 64), the meter accepts samples and reports `None`.
pub struct LoudnessMeter {
    /// `None` when loudness is undefined for this format.
    meter: Option<EbuR128>,
    channels: usize,
    /// Samples of an incomplete frame left over from the previous `add`.
    carry: Vec<f32>,
    /// Reused buffer for input that needs cleaning or completes a carried frame.
    scratch: Vec<f32>,
}

impl LoudnessMeter {
    /// A meter for `channels` interleaved channels at `sample_rate` Hz.
    pub fn new(channels: u16, sample_rate: u32) -> Self {
        let meter = if sample_rate >= MIN_LOUDNESS_RATE_HZ {
            EbuR128::new(u32::from(channels), sample_rate, Mode::I).ok()
        } else {
            None
        };
        Self { meter, channels: usize::from(channels).max(1), carry: Vec::new(), scratch: Vec::new() }
    }

    /// Adds interleaved samples.
    pub fn add(&mut self, interleaved: &[f32]) {
        let Some(meter) = self.meter.as_mut() else {
            return;
        };
        let channels = self.channels;
        let mut rest = interleaved;
        if !self.carry.is_empty() {
            let take = (channels - self.carry.len()).min(rest.len());
            self.carry.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.carry.len() < channels {
                return;
            }
            sanitise_into(&self.carry, &mut self.scratch);
            self.carry.clear();
            add_frames(meter, &self.scratch);
        }
        let whole = rest.len() - rest.len() % channels;
        let (frames, tail) = rest.split_at(whole);
        if frames.iter().all(|sample| sample.is_finite()) {
            add_frames(meter, frames);
        } else {
            sanitise_into(frames, &mut self.scratch);
            add_frames(meter, &self.scratch);
        }
        self.carry.extend_from_slice(tail);
    }

    /// Integrated loudness in LUFS, or `None` when undefined (shorter than one 400 ms block, or all gated out).
    pub fn integrated_lufs(&self) -> Option<f64> {
        let lufs = self.meter.as_ref()?.loudness_global().ok()?;
        lufs.is_finite().then_some(lufs)
    }
}

fn add_frames(meter: &mut EbuR128, frames: &[f32]) {
    // The only failure is a length that is not a multiple of the channel count, which `add`
    // rules out; there is nothing useful to do with an error here anyway.
    let _ = meter.add_frames_f32(frames);
}

/// Copies `samples` into `out`, replacing non-finite values with zero.
fn sanitise_into(samples: &[f32], out: &mut Vec<f32>) {
    out.clear();
    out.extend(samples.iter().map(|&sample| if sample.is_finite() { sample } else { 0.0 }));
}

/// Integrated loudness of a mono buffer in LUFS, `None` when undefined.
pub fn integrated_lufs_mono(samples: &[f32], sample_rate: u32) -> Option<f64> {
    let mut meter = LoudnessMeter::new(1, sample_rate);
    meter.add(samples);
    meter.integrated_lufs()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::f64::consts::PI;

    /// `seconds` of a sine at `freq` Hz whose peak is `peak_dbfs`.
    fn sine(freq: f64, rate: u32, seconds: f64, peak_dbfs: f64) -> Vec<f32> {
        let amplitude = 10f64.powf(peak_dbfs / 20.0);
        let len = (seconds * rate as f64).round() as usize;
        (0..len).map(|n| (amplitude * (2.0 * PI * freq * n as f64 / rate as f64).sin()) as f32).collect()
    }

    fn interleave(left: &[f32], right: &[f32]) -> Vec<f32> {
        left.iter().zip(right).flat_map(|(&l, &r)| [l, r]).collect()
    }

    #[test]
    fn stereo_1khz_at_minus_23_dbfs_reads_minus_23_lufs() {
        // EBU Tech 3341 test case 1: stereo 1 kHz sine at -23 dBFS peak per channel -> -23.0 LUFS.
        for rate in [44100, 48000] {
            let tone = sine(1000.0, rate, 20.0, -23.0);
            let mut meter = LoudnessMeter::new(2, rate);
            meter.add(&interleave(&tone, &tone));
            let lufs = meter.integrated_lufs().unwrap();
            assert!((lufs + 23.0).abs() < 0.1, "{rate} Hz: {lufs} LUFS");
        }
    }

    /// A stereo 1 kHz tone sequence of `(seconds, dBFS peak)` segments at 48 kHz.
    fn stereo_sequence(segments: &[(f64, f64)]) -> Vec<f32> {
        let mono: Vec<f32> = segments.iter().flat_map(|&(seconds, dbfs)| sine(1000.0, 48000, seconds, dbfs)).collect();
        interleave(&mono, &mono)
    }

    #[test]
    fn ebu_tech_3341_cases_2_to_5_read_within_a_tenth_of_a_lu() {
        // EBU Tech 3341 (2016) table 1; `speechmill-eval` measured errors of 0.01-0.05 LU here.
        let cases: [(&[(f64, f64)], f64); 4] = [
            (&[(20.0, -33.0)], -33.0),
            (&[(10.0, -36.0), (60.0, -23.0), (10.0, -36.0)], -23.0),
            (&[(10.0, -72.0), (10.0, -36.0), (20.0, -23.0), (10.0, -36.0), (10.0, -72.0)], -23.0),
            (&[(20.0, -26.0), (20.1, -20.0), (20.0, -26.0)], -23.0),
        ];
        for (segments, expected) in cases {
            let mut meter = LoudnessMeter::new(2, 48000);
            meter.add(&stereo_sequence(segments));
            let lufs = meter.integrated_lufs().unwrap();
            assert!((lufs - expected).abs() <= 0.1, "{segments:?}: {lufs} LUFS, expected {expected}");
        }
    }

    #[test]
    fn ebu_tech_3341_case_6_five_channels_weight_the_surrounds() {
        // L, R at -28 dBFS, C at -24, Ls, Rs at -30 (weighted +1.5 dB): -23.0 LUFS.
        let tone = sine(1000.0, 48000, 20.0, 0.0);
        let gains: Vec<f32> =
            [-28.0f64, -28.0, -24.0, -30.0, -30.0].iter().map(|db| 10f64.powf(db / 20.0) as f32).collect();
        let frames: Vec<f32> = tone.iter().flat_map(|&x| gains.iter().map(move |g| x * g)).collect();
        let mut meter = LoudnessMeter::new(5, 48000);
        meter.add(&frames);
        let lufs = meter.integrated_lufs().unwrap();
        assert!((lufs + 23.0).abs() <= 0.1, "{lufs} LUFS");
    }

    #[test]
    fn mono_1khz_at_minus_23_dbfs_reads_three_db_below_stereo() {
        // One channel carries half the power of the stereo case: -23 - 10 log10(2) = -26.01 LUFS.
        let lufs = integrated_lufs_mono(&sine(1000.0, 48000, 20.0, -23.0), 48000).unwrap();
        assert!((lufs + 26.01).abs() < 0.1, "{lufs} LUFS");
    }

    #[test]
    fn speech_rate_16k_reads_like_48k() {
        let at_16k = integrated_lufs_mono(&sine(1000.0, 16000, 10.0, -20.0), 16000).unwrap();
        let at_48k = integrated_lufs_mono(&sine(1000.0, 48000, 10.0, -20.0), 48000).unwrap();
        assert!((at_16k - at_48k).abs() < 0.1, "{at_16k} vs {at_48k}");
    }

    #[test]
    fn stereo_input_split_inside_frames_reads_the_same() {
        let tone = sine(1000.0, 48000, 5.0, -23.0);
        let stereo = interleave(&tone, &tone);
        let mut whole = LoudnessMeter::new(2, 48000);
        whole.add(&stereo);
        let mut split = LoudnessMeter::new(2, 48000);
        for piece in stereo.chunks(777) {
            split.add(piece);
        }
        let (a, b) = (whole.integrated_lufs().unwrap(), split.integrated_lufs().unwrap());
        assert!((a - b).abs() < 1e-9, "{a} vs {b}");
    }

    #[test]
    fn shorter_than_one_block_is_undefined() {
        assert_eq!(integrated_lufs_mono(&sine(1000.0, 48000, 0.3, -20.0), 48000), None);
        assert_eq!(integrated_lufs_mono(&[], 48000), None);
    }

    #[test]
    fn digital_silence_is_undefined() {
        assert_eq!(integrated_lufs_mono(&vec![0.0; 48000 * 3], 48000), None);
    }

    #[test]
    fn non_finite_samples_count_as_silence() {
        let mut tone = sine(1000.0, 48000, 10.0, -23.0);
        let clean = integrated_lufs_mono(&tone, 48000).unwrap();
        tone[1000] = f32::NAN;
        tone[2000] = f32::INFINITY;
        tone[3000] = f32::NEG_INFINITY;
        let dirty = integrated_lufs_mono(&tone, 48000).unwrap();
        assert!((clean - dirty).abs() < 0.01, "{clean} vs {dirty}");
    }

    #[test]
    fn regression_1000_hz_file_is_undefined_not_absurd() {
        // A 1 kHz sample rate once read +2473 LUFS: K-weighting is not meaningful that low.
        assert_eq!(integrated_lufs_mono(&sine(100.0, 1000, 10.0, -20.0), 1000), None);
        assert_eq!(integrated_lufs_mono(&sine(100.0, 7999, 10.0, -20.0), 7999), None);
        let at_8k = integrated_lufs_mono(&sine(1000.0, 8000, 10.0, -20.0), 8000).unwrap();
        assert!((at_8k + 23.0).abs() < 0.5, "{at_8k} LUFS");
    }

    #[test]
    fn unsupported_channel_count_is_undefined() {
        let mut meter = LoudnessMeter::new(0, 48000);
        meter.add(&sine(1000.0, 48000, 1.0, -20.0));
        assert_eq!(meter.integrated_lufs(), None);
    }
}
