//! Streaming high-quality sample-rate conversion of mono audio.
//!
//! Built on rubato's synchronous FFT resampler ([`rubato::Fft`]) with a fixed input chunk. Rubato
//! delays its output by half an output FFT block; [`MonoResampler`] drops that many leading output
//! samples and, on [`MonoResampler::finish`], pumps silence through until the output reaches
//! exactly `round(n_in * out_rate / in_rate)` samples, so the result is time-aligned with the
//! input and has the length a caller expects.

use std::cell::RefCell;

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Indexing, Resampler, WindowFunction};

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

/// Input samples per FFT block we aim for. About 1024 keeps the anti-aliasing transition band
/// narrow (cutoff about 0.98 of the lower Nyquist frequency) at a modest cost per sample.
const TARGET_BLOCK_IN: usize = 1024;

/// Converts a mono stream from one fixed rate to another, compensating the filter delay so that
/// output sample `k` lines up with input time `k / out_rate`.
///
/// Non-finite input samples are replaced by zero: one NaN would otherwise smear over a whole FFT
/// block of output. Finite samples beyond 120 dB above full scale are clamped to it. After [`MonoResampler::finish`] the resampler is reset and can take a new
/// stream at the same rates.
pub struct MonoResampler {
    in_rate: u32,
    out_rate: u32,
    /// `None` when the rates are equal and samples pass through.
    fft: Option<Box<FftStage>>,
}

/// The state of a real (non pass-through) conversion.
struct FftStage {
    resampler: Fft<f32>,
    /// Input frames per call to rubato (one FFT block).
    chunk_in: usize,
    /// Output frames per call to rubato.
    chunk_out: usize,
    /// Input collected until a whole chunk is available; capacity `chunk_in`.
    pending: Vec<f32>,
    /// Rubato's output for one chunk; length `chunk_out`.
    scratch_out: Vec<f32>,
    /// Leading output samples still to drop to undo the resampler delay.
    delay_left: usize,
    /// Input samples accepted since the start of the stream.
    total_in: u64,
    /// Output samples handed out since the start of the stream.
    total_out: u64,
}

impl MonoResampler {
    /// Builds a resampler; equal rates pass samples through untouched.
    pub fn new(in_rate: u32, out_rate: u32) -> Result<Self, ResampleError> {
        let unsupported = |detail: String| ResampleError::Unsupported { from: in_rate, to: out_rate, detail };
        if in_rate == 0 || out_rate == 0 {
            return Err(unsupported("sample rates must be positive".to_owned()));
        }
        if in_rate > crate::decode::MAX_SAMPLE_RATE_HZ || out_rate > crate::decode::MAX_SAMPLE_RATE_HZ {
            return Err(unsupported(format!("rates above {} Hz are not audio", crate::decode::MAX_SAMPLE_RATE_HZ)));
        }
        if in_rate == out_rate {
            return Ok(Self { in_rate, out_rate, fft: None });
        }
        if let Some(stage) = take_idle_stage(in_rate, out_rate) {
            return Ok(Self { in_rate, out_rate, fft: Some(stage) });
        }
        let gcd = gcd(in_rate as usize, out_rate as usize);
        let min_block_in = in_rate as usize / gcd;
        // A power-of-two number (at least 2) of minimum blocks: even, so both FFT block sizes are
        // even and rubato's delay of `fft_size_out / 2` output samples is exact (its filter is
        // centred on `fft_size_in / 2`); and a power of two, so the FFT lengths add no prime
        // factors beyond the rates' own (48k -> 16k: 1536 in, not 1026 = 2 * 27 * 19).
        let blocks = TARGET_BLOCK_IN.div_ceil(min_block_in).next_power_of_two().max(2);
        let chunk_hint = blocks * min_block_in;
        let resampler = Fft::<f32>::new_custom(
            in_rate as usize,
            out_rate as usize,
            chunk_hint,
            1,
            1,
            WindowFunction::BlackmanHarris2,
            FixedSync::Both,
        )
        .map_err(|error| unsupported(error.to_string()))?;
        let chunk_in = resampler.input_frames_next();
        let chunk_out = resampler.output_frames_next();
        let delay_left = resampler.output_delay();
        Ok(Self {
            in_rate,
            out_rate,
            fft: Some(Box::new(FftStage {
                resampler,
                chunk_in,
                chunk_out,
                pending: Vec::with_capacity(chunk_in),
                scratch_out: vec![0.0; chunk_out],
                delay_left,
                total_in: 0,
                total_out: 0,
            })),
        })
    }

    /// The input rate in Hz.
    pub fn in_rate(&self) -> u32 {
        self.in_rate
    }

    /// The output rate in Hz.
    pub fn out_rate(&self) -> u32 {
        self.out_rate
    }

    /// Feeds input samples and appends whatever output is ready to `out`.
    pub fn process(&mut self, input: &[f32], out: &mut Vec<f32>) {
        let Some(stage) = self.fft.as_deref_mut() else {
            out.extend(input.iter().map(|&sample| finite_or_zero(sample)));
            return;
        };
        stage.total_in += input.len() as u64;
        let mut rest = input;
        while !rest.is_empty() {
            let take = (stage.chunk_in - stage.pending.len()).min(rest.len());
            let (head, tail) = rest.split_at(take);
            stage.pending.extend(head.iter().map(|&sample| finite_or_zero(sample)));
            rest = tail;
            if stage.pending.len() == stage.chunk_in {
                stage.run_chunk(stage.chunk_in, u64::MAX, out);
                stage.pending.clear();
            }
        }
    }

    /// Flushes the tail: after this the total output is `round(total_in * out_rate / in_rate)` samples.
    pub fn finish(&mut self, out: &mut Vec<f32>) {
        let (in_rate, out_rate) = (self.in_rate, self.out_rate);
        let Some(stage) = self.fft.as_deref_mut() else {
            return;
        };
        let expected = expected_output_len(stage.total_in, in_rate, out_rate);
        if !stage.pending.is_empty() {
            let valid = stage.pending.len();
            stage.run_chunk(valid, expected, out);
        }
        // Rubato treats frames beyond `partial_len` as silence, so this pumps zeros through.
        while stage.total_out < expected {
            stage.run_chunk(0, expected, out);
        }
        stage.reset();
    }
}

/// Planning rubato's FFTs and filter costs about as much as resampling half a second of 48 kHz
/// audio, so each thread keeps the stages of dropped resamplers (reset) and hands them to the
/// next resampler at the same rates: a worker going through clips at a few common rates plans
/// each conversion once.
const MAX_IDLE_STAGES: usize = 4;

thread_local! {
    /// Reset stages of dropped resamplers on this thread, with their (input, output) rates,
    /// most recently dropped last.
    static IDLE_STAGES: RefCell<Vec<(u32, u32, Box<FftStage>)>> = const { RefCell::new(Vec::new()) };
}

fn take_idle_stage(in_rate: u32, out_rate: u32) -> Option<Box<FftStage>> {
    IDLE_STAGES
        .try_with(|idle| {
            let mut idle = idle.try_borrow_mut().ok()?;
            let index = idle.iter().rposition(|(from, to, _)| (*from, *to) == (in_rate, out_rate))?;
            Some(idle.remove(index).2)
        })
        .ok()
        .flatten()
}

impl Drop for MonoResampler {
    fn drop(&mut self) {
        let Some(mut stage) = self.fft.take() else {
            return;
        };
        stage.reset();
        let rates = (self.in_rate, self.out_rate);
        // During thread teardown the pool may be gone already; the stage is then just dropped.
        let _ = IDLE_STAGES.try_with(|idle| {
            if let Ok(mut idle) = idle.try_borrow_mut() {
                if idle.len() == MAX_IDLE_STAGES {
                    idle.remove(0);
                }
                idle.push((rates.0, rates.1, stage));
            }
        });
    }
}

impl FftStage {
    /// Resamples `pending[..valid]` (zero-padded to a whole chunk) and appends the output after
    /// the start-up delay, never letting the stream's output exceed `limit` samples.
    fn run_chunk(&mut self, valid: usize, limit: u64, out: &mut Vec<f32>) {
        let input = InterleavedSlice::new(&self.pending[..], 1, self.pending.len())
            .expect("a mono slice is always a valid adapter");
        let mut output = InterleavedSlice::new_mut(&mut self.scratch_out[..], 1, self.chunk_out)
            .expect("the scratch buffer holds one output chunk");
        let indexing = Indexing { partial_len: (valid < self.chunk_in).then_some(valid), ..Indexing::default() };
        let (_, produced) = self
            .resampler
            .process_into_buffer(&input, &mut output, Some(&indexing))
            .expect("buffers are sized from the resampler's own chunk sizes");
        let skip = self.delay_left.min(produced);
        self.delay_left -= skip;
        let room = limit.saturating_sub(self.total_out);
        let emit = ((produced - skip) as u64).min(room) as usize;
        out.extend_from_slice(&self.scratch_out[skip..skip + emit]);
        self.total_out += emit as u64;
    }

    fn reset(&mut self) {
        self.resampler.reset();
        self.pending.clear();
        self.delay_left = self.resampler.output_delay();
        self.total_in = 0;
        self.total_out = 0;
    }
}

/// `round(n_in * out_rate / in_rate)`, halves rounded up, in exact integer arithmetic.
fn expected_output_len(n_in: u64, in_rate: u32, out_rate: u32) -> u64 {
    let numerator = 2 * n_in as u128 * out_rate as u128 + in_rate as u128;
    (numerator / (2 * in_rate as u128)) as u64
}

/// Largest magnitude handed to the FFT resampler: 120 dB above full scale.
///
/// Float files can hold any finite value; a block of samples near `f32::MAX` overflows the FFT
/// to infinity, and rubato's inverse transform then panics ("imaginary part of first value was
/// non-zero"; fuzzing found it). Nothing that loud is audio, and normalisation brings whatever
/// is left into range.
const MAX_MAGNITUDE: f32 = 1.0e6;

fn finite_or_zero(sample: f32) -> f32 {
    if sample.is_finite() { sample.clamp(-MAX_MAGNITUDE, MAX_MAGNITUDE) } else { 0.0 }
}

fn gcd(mut a: usize, mut b: usize) -> usize {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

#[cfg(test)]
mod tests {
    /// Fuzzing regression: a float WAV whose samples are near `f32::MAX` made rubato panic.
    #[test]
    fn float_samples_far_above_full_scale_do_not_break_the_resampler() {
        let mut resampler = MonoResampler::new(1000, 16_000).unwrap();
        let input: Vec<f32> = (0..400).map(|n| if n % 3 == 0 { 3.0e38 } else { -2.5e38 }).collect();
        let mut out = Vec::new();
        resampler.process(&input, &mut out);
        resampler.finish(&mut out);
        assert_eq!(out.len(), 6400);
        assert!(out.iter().all(|sample| sample.is_finite()));
    }

    use super::*;
    use std::f64::consts::PI;

    fn sine(freq: f64, rate: u32, len: usize, amplitude: f64) -> Vec<f32> {
        (0..len).map(|n| (amplitude * (2.0 * PI * freq * n as f64 / rate as f64).sin()) as f32).collect()
    }

    fn resample_all(input: &[f32], from: u32, to: u32, block: usize) -> Vec<f32> {
        let mut resampler = MonoResampler::new(from, to).unwrap();
        let mut out = Vec::new();
        for piece in input.chunks(block.max(1)) {
            resampler.process(piece, &mut out);
        }
        resampler.finish(&mut out);
        out
    }

    fn rms(samples: &[f32]) -> f64 {
        (samples.iter().map(|&x| x as f64 * x as f64).sum::<f64>() / samples.len() as f64).sqrt()
    }

    /// Frequency of the strongest bin of a Hann-windowed spectrum, refined by parabolic
    /// interpolation of the log magnitudes.
    fn peak_frequency(samples: &[f32], rate: u32) -> f64 {
        let n = samples.len();
        let mut planner = realfft::RealFftPlanner::<f64>::new();
        let fft = planner.plan_fft_forward(n);
        let mut input: Vec<f64> = samples
            .iter()
            .enumerate()
            .map(|(i, &x)| x as f64 * (0.5 - 0.5 * (2.0 * PI * i as f64 / n as f64).cos()))
            .collect();
        let mut spectrum = fft.make_output_vec();
        fft.process(&mut input, &mut spectrum).unwrap();
        let mags: Vec<f64> = spectrum.iter().map(|c| c.norm().max(1e-300).ln()).collect();
        let k = (1..mags.len() - 1).max_by(|&a, &b| mags[a].total_cmp(&mags[b])).unwrap();
        let (a, b, c) = (mags[k - 1], mags[k], mags[k + 1]);
        let offset = 0.5 * (a - c) / (a - 2.0 * b + c);
        (k as f64 + offset) * rate as f64 / n as f64
    }

    /// Gain in dB of a resampled tone, by least-squares sine fit over the middle 60 % (whole tone
    /// cycles do not matter for a fit at the known frequency).
    fn tone_gain_db(output: &[f32], rate: u32, freq: f64, amplitude: f64) -> f64 {
        let (start, end) = (output.len() / 5, output.len() * 4 / 5);
        let (mut ss, mut cc, mut sc, mut ys, mut yc) = (0.0, 0.0, 0.0, 0.0, 0.0);
        for (n, &y) in output.iter().enumerate().take(end).skip(start) {
            let phase = 2.0 * PI * freq * n as f64 / rate as f64;
            let (s, c, y) = (phase.sin(), phase.cos(), f64::from(y));
            (ss, cc, sc, ys, yc) = (ss + s * s, cc + c * c, sc + s * c, ys + y * s, yc + y * c);
        }
        let det = ss * cc - sc * sc;
        let (a, b) = ((ys * cc - yc * sc) / det, (yc * ss - ys * sc) / det);
        20.0 * ((a * a + b * b).sqrt() / amplitude).log10()
    }

    #[test]
    fn passband_is_flat_and_stopband_deep_48k_to_16k() {
        // `speechmill-eval` measured, on 24 tones up to 7.2 kHz, a ripple below 0.0001 dB and
        // aliases at -143 dB (soxr VHQ: -156 dB); pinned here with margin on a few tones.
        for freq in [100.0, 1000.0, 4000.0, 7200.0] {
            let gain =
                tone_gain_db(&resample_all(&sine(freq, 48000, 24000, 0.5), 48000, 16000, 4096), 16000, freq, 0.5);
            assert!(gain.abs() < 0.01, "{freq} Hz: {gain} dB");
        }
        for freq in [8800.0, 12000.0, 20000.0, 23500.0] {
            let output = resample_all(&sine(freq, 48000, 24000, 0.5), 48000, 16000, 4096);
            let level_db = 20.0 * (rms(&output[1600..6400]) / (0.5 / 2f64.sqrt())).log10();
            assert!(level_db < -100.0, "{freq} Hz: alias at {level_db} dB");
        }
    }

    #[test]
    fn rejects_zero_rates() {
        assert!(MonoResampler::new(0, 16000).is_err());
        assert!(MonoResampler::new(16000, 0).is_err());
    }

    #[test]
    fn equal_rates_pass_through_untouched() {
        let input = sine(440.0, 16000, 1000, 0.5);
        assert_eq!(resample_all(&input, 16000, 16000, 333), input);
    }

    #[test]
    fn lengths_are_exact_for_many_rate_pairs_and_lengths() {
        let rates = [1000, 8000, 11025, 16000, 22050, 32000, 44100, 48000, 96000];
        let lengths = [0usize, 1, 2, 3, 7, 100, 1023, 1024, 1025, 4410, 20000];
        for &from in &rates {
            for &to in &rates {
                // One resampler per pair, reused: `finish` resets it for the next stream.
                let mut resampler = MonoResampler::new(from, to).unwrap();
                for &len in &lengths {
                    let mut out = Vec::new();
                    for piece in vec![0.25f32; len].chunks(1000) {
                        resampler.process(piece, &mut out);
                    }
                    resampler.finish(&mut out);
                    let expected = expected_output_len(len as u64, from, to) as usize;
                    assert_eq!(out.len(), expected, "{from} -> {to}, {len} samples");
                }
            }
        }
    }

    #[test]
    fn output_does_not_depend_on_how_input_is_split() {
        let input = sine(440.0, 44100, 30000, 0.5);
        let whole = resample_all(&input, 44100, 16000, input.len());
        let pieces = resample_all(&input, 44100, 16000, 77);
        assert_eq!(whole.len(), pieces.len());
        for (a, b) in whole.iter().zip(&pieces) {
            assert!((a - b).abs() < 1e-6);
        }
    }

    #[test]
    fn a_recycled_stage_gives_the_same_output_even_after_an_unfinished_stream() {
        let input = sine(440.0, 44100, 30000, 0.5);
        let fresh = resample_all(&input, 44100, 16000, 1000);
        // Dropped mid-stream: its stage goes back to this thread's pool, reset.
        let mut abandoned = MonoResampler::new(44100, 16000).unwrap();
        let mut ignored = Vec::new();
        abandoned.process(&input[..12345], &mut ignored);
        drop(abandoned);
        let recycled = resample_all(&input, 44100, 16000, 1000);
        assert_eq!(fresh, recycled);
        // Many rate pairs at once: the pool stays bounded and every pair still works.
        for from in [8000, 11025, 22050, 32000, 44100, 48000, 96000] {
            assert_eq!(
                resample_all(&input[..9000], from, 16000, 777).len(),
                expected_output_len(9000, from, 16000) as usize
            );
        }
        IDLE_STAGES.with(|idle| assert!(idle.borrow().len() <= MAX_IDLE_STAGES));
    }

    #[test]
    fn resampler_is_reusable_after_finish() {
        let input = sine(440.0, 48000, 10000, 0.5);
        let mut resampler = MonoResampler::new(48000, 16000).unwrap();
        let mut first = Vec::new();
        resampler.process(&input, &mut first);
        resampler.finish(&mut first);
        let mut second = Vec::new();
        resampler.process(&input, &mut second);
        resampler.finish(&mut second);
        assert_eq!(first, second);
    }

    #[test]
    fn tone_keeps_frequency_and_level_48k_to_16k() {
        let input = sine(440.0, 48000, 48000, 0.5);
        let out = resample_all(&input, 48000, 16000, 4096);
        assert_eq!(out.len(), 16000);
        // Skip the edges, where the tone starts and stops abruptly.
        let middle = &out[2000..14000];
        let freq = peak_frequency(middle, 16000);
        assert!((freq - 440.0).abs() < 0.5, "peak at {freq} Hz");
        let level_change_db = 20.0 * (rms(middle) / (0.5 / 2f64.sqrt())).log10();
        assert!(level_change_db.abs() < 0.1, "level changed by {level_change_db} dB");
    }

    #[test]
    fn tone_keeps_level_when_upsampling_8k_to_48k() {
        let input = sine(1000.0, 8000, 8000, 0.5);
        let out = resample_all(&input, 8000, 48000, 500);
        let middle = &out[6000..42000];
        let level_change_db = 20.0 * (rms(middle) / (0.5 / 2f64.sqrt())).log10();
        assert!(level_change_db.abs() < 0.1, "level changed by {level_change_db} dB");
        let freq = peak_frequency(middle, 48000);
        assert!((freq - 1000.0).abs() < 0.5, "peak at {freq} Hz");
    }

    #[test]
    fn tone_above_new_nyquist_is_suppressed_48k_to_16k() {
        let input = sine(11000.0, 48000, 48000, 0.5);
        let out = resample_all(&input, 48000, 16000, 4096);
        // Away from the edges: switching a tone on or off is itself broadband.
        let middle = &out[2000..14000];
        let attenuation_db = 20.0 * (rms(middle) / (0.5 / 2f64.sqrt())).log10();
        assert!(attenuation_db < -60.0, "only {attenuation_db} dB down");
    }

    #[test]
    fn output_is_time_aligned_with_input() {
        // A single click at input sample 4800 (0.1 s) must peak at output sample 1600.
        let mut input = vec![0.0f32; 48000];
        input[4800] = 1.0;
        let out = resample_all(&input, 48000, 16000, 1000);
        let peak = (0..out.len()).max_by(|&a, &b| out[a].abs().total_cmp(&out[b].abs())).unwrap();
        assert_eq!(peak, 1600);

        // And for an awkward ratio: a click at 0.5 s of 44.1 kHz lands at 0.5 s of 16 kHz.
        let mut input = vec![0.0f32; 44100];
        input[22050] = 1.0;
        let out = resample_all(&input, 44100, 16000, 1000);
        let peak = (0..out.len()).max_by(|&a, &b| out[a].abs().total_cmp(&out[b].abs())).unwrap();
        assert_eq!(peak, 8000);
    }

    #[test]
    fn one_sample_input_is_resampled_to_the_rounded_length() {
        let out = resample_all(&[0.5], 8000, 48000, 1);
        assert_eq!(out.len(), 6);
        assert!(out.iter().all(|x| x.is_finite()));
    }

    #[test]
    fn non_finite_input_is_zeroed_not_spread() {
        let mut input = sine(440.0, 48000, 9600, 0.5);
        input[5000] = f32::NAN;
        input[6000] = f32::INFINITY;
        let out = resample_all(&input, 48000, 16000, 1000);
        assert!(out.iter().all(|x| x.is_finite()));
    }
}
