//! Clip measurements: levels, clipping, DC, speech activity, silence, SNR and bandwidth.

use std::cell::RefCell;
use std::sync::Arc;

use realfft::num_complex::Complex;
use realfft::{RealFftPlanner, RealToComplex};

use crate::resample::MonoResampler;

/// Magnitude at or above which a sample counts as clipped.
const CLIP_LEVEL: f32 = 0.999;

/// Floor of [`Levels::downmix_gain_db`]: channels that cancel exactly read this instead of -inf,
/// which JSON cannot carry.
const DOWNMIX_FLOOR_DB: f64 = -200.0;

/// Level statistics over the decoded source, accumulated block by block.
///
/// Input may be split anywhere, even inside a frame.
pub struct LevelMeter {
    channels: usize,
    /// Samples seen, finite or not.
    samples: u64,
    /// Finite samples seen; the denominator of every average.
    finite_samples: u64,
    non_finite_samples: u64,
    over_full_scale_samples: u64,
    clipped_samples: u64,
    peak: f32,
    sum: f64,
    sum_squares: f64,
    /// Sum over complete, all-finite frames of the squared mean of the channels.
    downmix_energy: f64,
    /// Sum over the same frames of the mean squared channel value.
    channel_energy: f64,
    /// Channel index of the next sample, so a frame may span calls to `add`.
    position_in_frame: usize,
    /// Sum of the current frame's samples so far.
    frame_sum: f64,
    /// Sum of the current frame's squared samples so far.
    frame_squares: f64,
    /// Whether every sample of the current frame so far is finite.
    frame_finite: bool,
}

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
        Self {
            channels: usize::from(channels).max(1),
            samples: 0,
            finite_samples: 0,
            non_finite_samples: 0,
            over_full_scale_samples: 0,
            clipped_samples: 0,
            peak: 0.0,
            sum: 0.0,
            sum_squares: 0.0,
            downmix_energy: 0.0,
            channel_energy: 0.0,
            position_in_frame: 0,
            frame_sum: 0.0,
            frame_squares: 0.0,
            frame_finite: true,
        }
    }

    /// Adds interleaved samples.
    pub fn add(&mut self, interleaved: &[f32]) {
        if self.position_in_frame == 0 {
            let whole = interleaved.len() - interleaved.len() % self.channels;
            let (frames, tail) = interleaved.split_at(whole);
            if frames.iter().all(|sample| sample.is_finite()) {
                self.add_finite_frames(frames);
                self.add_slow(tail);
                return;
            }
        }
        self.add_slow(interleaved);
    }

    /// The common case, whole frames of finite samples: no per-sample finiteness branch and
    /// integer counters per block, so the loop stays tight.
    fn add_finite_frames(&mut self, frames: &[f32]) {
        self.samples += frames.len() as u64;
        self.finite_samples += frames.len() as u64;
        let channels = self.channels;
        let channels_f = channels as f64;
        let (mut peak, mut clipped, mut over) = (self.peak, 0u64, 0u64);
        for frame in frames.chunks_exact(channels) {
            let (mut frame_sum, mut frame_squares) = (0.0f64, 0.0f64);
            for &sample in frame {
                let magnitude = sample.abs();
                peak = peak.max(magnitude);
                clipped += u64::from(magnitude >= CLIP_LEVEL);
                over += u64::from(magnitude > 1.0);
                let value = f64::from(sample);
                frame_sum += value;
                frame_squares += value * value;
            }
            self.sum += frame_sum;
            self.sum_squares += frame_squares;
            let mean = frame_sum / channels_f;
            self.downmix_energy += mean * mean;
            self.channel_energy += frame_squares / channels_f;
        }
        self.peak = peak;
        self.clipped_samples += clipped;
        self.over_full_scale_samples += over;
    }

    /// Sample by sample, for frames split across calls or holding non-finite samples.
    fn add_slow(&mut self, interleaved: &[f32]) {
        self.samples += interleaved.len() as u64;
        let channels = self.channels;
        let channels_f = channels as f64;
        for &sample in interleaved {
            if sample.is_finite() {
                let magnitude = sample.abs();
                let value = f64::from(sample);
                self.finite_samples += 1;
                self.peak = self.peak.max(magnitude);
                self.clipped_samples += u64::from(magnitude >= CLIP_LEVEL);
                self.over_full_scale_samples += u64::from(magnitude > 1.0);
                self.sum += value;
                self.sum_squares += value * value;
                self.frame_sum += value;
                self.frame_squares += value * value;
            } else {
                self.non_finite_samples += 1;
                self.frame_finite = false;
            }
            self.position_in_frame += 1;
            if self.position_in_frame == channels {
                if self.frame_finite {
                    let mean = self.frame_sum / channels_f;
                    self.downmix_energy += mean * mean;
                    self.channel_energy += self.frame_squares / channels_f;
                }
                self.position_in_frame = 0;
                self.frame_sum = 0.0;
                self.frame_squares = 0.0;
                self.frame_finite = true;
            }
        }
    }

    /// The statistics so far.
    pub fn finish(&self) -> Levels {
        let finite = self.finite_samples as f64;
        let silent = self.peak == 0.0;
        let per_finite = |value: f64| if finite > 0.0 { value / finite } else { 0.0 };
        let downmix_gain_db = (self.channels > 1 && self.channel_energy > 0.0).then(|| {
            let ratio = self.downmix_energy / self.channel_energy;
            (10.0 * ratio.log10()).max(DOWNMIX_FLOOR_DB)
        });
        Levels {
            frames: self.samples / self.channels as u64,
            peak_dbfs: (!silent).then(|| 20.0 * f64::from(self.peak).log10()),
            rms_dbfs: (!silent).then(|| 10.0 * per_finite(self.sum_squares).log10()),
            clipping_ratio: per_finite(self.clipped_samples as f64),
            dc_offset: per_finite(self.sum),
            non_finite_samples: self.non_finite_samples,
            over_full_scale_samples: self.over_full_scale_samples,
            downmix_gain_db,
        }
    }
}

/// Frame length of the bandwidth spectrum: the power of two covering 64 ms, so bins are at most
/// 15.6 Hz wide at any rate (1024 at 16 kHz, 4096 at 44.1 and 48 kHz) and the smoothing below
/// blurs a cutoff by the same number of hertz whatever the rate.
fn bandwidth_frame_len(sample_rate: u32) -> usize {
    (sample_rate as usize * 64 / 1000).next_power_of_two().clamp(64, 1 << 16)
}

/// Level below the spectral peak at which the bandwidth edge is read, in dB.
///
/// Speech's long-term spectrum falls by 30 to 45 dB from its peak (300-800 Hz) to 7 kHz, so a
/// threshold nearer the peak would call full-band speech narrow-band; the floor a resampler or
/// codec leaves above its cutoff is 70 dB or more down, and 8-bit or mu-law quantisation noise
/// about 45 to 50 dB down over the band the codec passes. -50 dB sits between the two.
const BANDWIDTH_THRESHOLD_DB: f64 = -50.0;

/// Half-width, in bins, of the moving average that smooths the averaged spectrum. Small, so a
/// steep cutoff is blurred by at most 2 bins (31 Hz).
const BANDWIDTH_SMOOTHING_BINS: usize = 2;

/// Frames whose peak stays below this (about -96 dBFS, one 16-bit step) are digital silence and
/// carry no spectrum.
const SILENT_FRAME_PEAK: f32 = 1.0 / 65536.0;

/// Effective bandwidth estimator over a mono stream at its source rate.
///
/// It averages the power spectrum of 64 ms Hann frames taken back to back (no overlap:
/// a long-term average needs many frames, not overlapping ones, and this halves the cost),
/// skipping frames of digital silence, removing each frame's mean so DC offset does not set the
/// reference; then it smooths the average over 5 bins and reports the highest frequency where
/// it is within 50 dB ([`BANDWIDTH_THRESHOLD_DB`]) of its peak, interpolated between bins and
/// capped at Nyquist. A clip shorter than one frame is analysed as one zero-padded frame.
pub struct BandwidthMeter {
    sample_rate: u32,
    frame_len: usize,
    fft: Arc<dyn RealToComplex<f32>>,
    window: Vec<f32>,
    /// Samples of the frame being filled.
    pending: Vec<f32>,
    /// Reused FFT input, output and scratch.
    frame: Vec<f32>,
    spectrum: Vec<Complex<f32>>,
    scratch: Vec<Complex<f32>>,
    /// Sum of the power spectra of the frames analysed.
    power_sum: Vec<f64>,
    frames: u64,
}

impl BandwidthMeter {
    /// A meter for mono audio at `sample_rate` Hz.
    pub fn new(sample_rate: u32) -> Self {
        let frame_len = bandwidth_frame_len(sample_rate);
        let fft = RealFftPlanner::<f32>::new().plan_fft_forward(frame_len);
        let spectrum = fft.make_output_vec();
        let scratch = fft.make_scratch_vec();
        Self {
            sample_rate,
            frame_len,
            window: hann(frame_len),
            pending: Vec::with_capacity(frame_len),
            frame: vec![0.0; frame_len],
            power_sum: vec![0.0; spectrum.len()],
            spectrum,
            scratch,
            fft,
            frames: 0,
        }
    }

    /// Adds mono samples.
    pub fn add(&mut self, mono: &[f32]) {
        let mut rest = mono;
        while !rest.is_empty() {
            let take = (self.frame_len - self.pending.len()).min(rest.len());
            self.pending.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.pending.len() == self.frame_len {
                let analysed = accumulate_frame(
                    &self.pending,
                    &self.window,
                    &*self.fft,
                    &mut self.frame,
                    &mut self.spectrum,
                    &mut self.scratch,
                    &mut self.power_sum,
                );
                self.frames += u64::from(analysed);
                self.pending.clear();
            }
        }
    }

    /// The highest frequency in Hz that carries signal above the spectral floor, `None` for silence.
    pub fn finish(&self) -> Option<f64> {
        if self.frames > 0 {
            return bandwidth_from_power(&self.power_sum, self.sample_rate);
        }
        // Shorter than one frame: analyse what there is, zero-padded, on local buffers.
        let mut frame = vec![0.0; self.frame_len];
        let mut spectrum = self.fft.make_output_vec();
        let mut scratch = self.fft.make_scratch_vec();
        let mut power_sum = vec![0.0; spectrum.len()];
        let analysed = accumulate_frame(
            &self.pending,
            &self.window,
            &*self.fft,
            &mut frame,
            &mut spectrum,
            &mut scratch,
            &mut power_sum,
        );
        if !analysed {
            return None;
        }
        bandwidth_from_power(&power_sum, self.sample_rate)
    }
}

/// Windows one frame (zero-padded if short) and adds its power spectrum to `power_sum`; returns
/// false, adding nothing, for digital silence.
fn accumulate_frame(
    samples: &[f32],
    window: &[f32],
    fft: &dyn RealToComplex<f32>,
    frame: &mut [f32],
    spectrum: &mut [Complex<f32>],
    scratch: &mut [Complex<f32>],
    power_sum: &mut [f64],
) -> bool {
    let mut peak = 0.0f32;
    let mut sum = 0.0f64;
    let mut finite = 0usize;
    for &sample in samples {
        if sample.is_finite() {
            peak = peak.max(sample.abs());
            sum += f64::from(sample);
            finite += 1;
        }
    }
    if peak < SILENT_FRAME_PEAK {
        return false;
    }
    let mean = (sum / finite as f64) as f32;
    frame.fill(0.0);
    for ((slot, &sample), &weight) in frame.iter_mut().zip(samples).zip(window) {
        let value = if sample.is_finite() { sample - mean } else { 0.0 };
        *slot = value * weight;
    }
    fft.process_with_scratch(frame, spectrum, scratch).expect("buffers come from the plan");
    for (total, bin) in power_sum.iter_mut().zip(spectrum.iter()) {
        *total += f64::from(bin.norm_sqr());
    }
    true
}

/// Reads the bandwidth off an averaged (or summed) one-sided power spectrum.
fn bandwidth_from_power(power: &[f64], sample_rate: u32) -> Option<f64> {
    let bins = power.len();
    let frame_len = 2 * (bins - 1);
    let smoothed: Vec<f64> = (0..bins)
        .map(|k| {
            let low = k.saturating_sub(BANDWIDTH_SMOOTHING_BINS);
            let high = (k + BANDWIDTH_SMOOTHING_BINS).min(bins - 1);
            power[low..=high].iter().sum::<f64>() / (high - low + 1) as f64
        })
        .collect();
    // Bins 0 and 1 still hold what is left of DC and rumble after mean removal.
    let peak = smoothed[2..].iter().copied().fold(0.0, f64::max);
    if peak <= 0.0 {
        return None;
    }
    let threshold = peak * 10f64.powf(BANDWIDTH_THRESHOLD_DB / 10.0);
    let last = (0..bins).rev().find(|&k| smoothed[k] >= threshold)?;
    // Interpolate the crossing between `last` and the next bin on a dB scale.
    let edge_bin = if last + 1 < bins {
        let above = 10.0 * (smoothed[last] / threshold).log10();
        let below = 10.0 * (threshold / smoothed[last + 1].max(f64::MIN_POSITIVE)).log10();
        last as f64 + above / (above + below)
    } else {
        last as f64
    };
    let nyquist = f64::from(sample_rate) / 2.0;
    Some((edge_bin * f64::from(sample_rate) / frame_len as f64).min(nyquist))
}

/// Periodic Hann window of `len` samples.
fn hann(len: usize) -> Vec<f32> {
    (0..len)
        .map(|n| {
            let phase = 2.0 * std::f64::consts::PI * n as f64 / len as f64;
            (0.5 - 0.5 * phase.cos()) as f32
        })
        .collect()
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

/// Rate the voice activity detector and the SNR estimator work at.
pub const ANALYSIS_RATE: u32 = 16000;
/// Samples per VAD frame at [`ANALYSIS_RATE`]: earshot takes exactly 256 samples (16 ms).
pub const VAD_FRAME: usize = 256;
/// Earshot scores the frame it was given together with the two before it (a 768-sample window
/// over three feature frames), so its score describes the audio about two frames back.
const VAD_LATENCY_FRAMES: usize = 2;
/// Frames of time-reversed opening fed to the detector before the clip (256 ms).
const VAD_PREROLL_FRAMES: usize = 16;
/// Score above which a frame is speech (earshot's suggested operating point).
const VAD_THRESHOLD: f32 = 0.5;
/// Gaps between speech frames up to this long (64 ms) are bridged: stop closures and short
/// pauses inside words are speech.
const VAD_BRIDGE_FRAMES: usize = 4;
/// Speech runs shorter than this (32 ms) are dropped as clicks and noise bursts.
const VAD_MIN_SPEECH_FRAMES: usize = 2;
/// Quantile of the clip's frame energies (digital silence left out) taken as its energy floor.
const VAD_FLOOR_QUANTILE: f64 = 0.1;
/// A run of speech frames is kept only if one of its frames stands this far above the energy
/// floor, in dB. Earshot calls loud stationary noise speech (the recorded pink noise of
/// `alsa-utils/Noise.wav` at -30 dBFS: 71 % of frames), but stationary noise barely fluctuates
/// from frame to frame (white noise peaks 1.7 dB above its floor over 20 s of 16 ms frames, the
/// recorded pink noise 6.0 dB), while an utterance's loudest frames stand 10 dB or more above the
/// noise even at 0 dB SNR. Gating whole runs keeps their weak frames.
const VAD_RUN_MARGIN_DB: f64 = 8.0;
/// Frames this close to speech (32 ms) are kept out of the noise estimate: onsets and tails that
/// the VAD calls silence still carry speech energy. Wider guards leave too few pause frames in
/// clips that are 90 % speech; the median below copes with what leaks through.
const NOISE_GUARD_FRAMES: usize = 2;

/// STFT length of the SNR estimator: two VAD frames, 31 Hz bins.
const SNR_FFT: usize = 2 * VAD_FRAME;
/// The noise spectrum is each bin's median over the noise frames (pause frames that are also
/// quiet, else pause frames, else quiet frames) when there are at least this many (0.16 s). The noise power is a sum over 257 bins, so even 10 frames (5 independent
/// ones per bin) pin it to about 0.2 dB for stationary noise; what a short pause risks is
/// being unrepresentative, which the fallback below is worse at.
///
/// No minimum share of the clip is required: audiobook clips of 5-7 s have only 5-8 % pauses
/// (2-4 % at 0 dB SNR, where the VAD widens speech), and on them the pause estimate is within
/// 1 dB where the quantile below is 2-7 dB off.
const MIN_NOISE_FRAMES: usize = 10;
/// Otherwise it is this quantile of each bin's power over all frames, bias-corrected for
/// exponentially distributed power. Speech lifts it wherever it covers most of a bin's frames,
/// so this fallback overestimates the noise (by 0.5-1 dB at 0 dB SNR, more at higher SNRs).
const NOISE_QUANTILE: f64 = 0.05;
/// Bins per band of the quiet-frame selection (500 Hz).
const QUIET_BAND_BINS: usize = 16;
/// Quantile of a band's power over the clip taken as its floor.
const QUIET_FLOOR_QUANTILE: f64 = 0.1;
/// A frame is quiet when every band is at most this far above its floor, in dB.
const QUIET_MARGIN_DB: f64 = 6.0;
/// The STFT keeps at most this many frames (about a minute); longer clips are decimated evenly,
/// which bounds memory and the cost of the quantiles.
const MAX_STFT_FRAMES: usize = 4096;
/// Range the SNR is clamped to, in dB.
const SNR_RANGE_DB: (f64, f64) = (-20.0, 80.0);

/// Reusable state for [`analyse_speech`]: the detector, FFT plan, resampler and buffers.
///
/// [`analyse_speech`] keeps one per thread; own one to control where the buffers live.
pub struct SpeechAnalyser {
    detector: Box<earshot::Detector>,
    /// The last resampler used, kept for the next clip at the same rate.
    resampler: Option<MonoResampler>,
    fft: Arc<dyn RealToComplex<f32>>,
    window: Vec<f32>,
    /// Sum of squares of the window, for Parseval.
    window_energy: f64,
    resampled: Vec<f32>,
    frame: Vec<f32>,
    spectrum: Vec<Complex<f32>>,
    scratch: Vec<Complex<f32>>,
    /// Per-frame VAD decisions.
    speech: Vec<bool>,
    /// Power spectra of the analysed STFT frames, bin-major: `powers[bin * frames + frame]`.
    powers: Vec<f32>,
    /// VAD frame indices of the STFT frames analysed.
    frame_indices: Vec<usize>,
    /// Positions in `frame_indices` of the frames the noise spectrum is averaged over.
    noise_slots: Vec<usize>,
    /// Whitened band powers of the analysed STFT frames, band-major: `band_powers[band * frames + frame]`.
    band_powers: Vec<f32>,
    /// Per STFT frame: whether every band is near its floor.
    quiet: Vec<bool>,
    /// One bin's values across frames, for quantiles.
    column: Vec<f32>,
    /// Energy per sample of each VAD frame.
    frame_energies: Vec<f64>,
    /// Frame energies being ranked, for the energy floor.
    ranked_energies: Vec<f64>,
}

impl Default for SpeechAnalyser {
    fn default() -> Self {
        Self::new()
    }
}

impl SpeechAnalyser {
    /// An analyser with empty buffers.
    pub fn new() -> Self {
        let fft = RealFftPlanner::<f32>::new().plan_fft_forward(SNR_FFT);
        let window = hann(SNR_FFT);
        let window_energy = window.iter().map(|&w| f64::from(w * w)).sum();
        Self {
            detector: earshot::Detector::default_boxed(),
            resampler: None,
            spectrum: fft.make_output_vec(),
            scratch: fft.make_scratch_vec(),
            fft,
            window,
            window_energy,
            resampled: Vec::new(),
            frame: vec![0.0; SNR_FFT],
            speech: Vec::new(),
            powers: Vec::new(),
            frame_indices: Vec::new(),
            noise_slots: Vec::new(),
            band_powers: Vec::new(),
            quiet: Vec::new(),
            column: Vec::new(),
            frame_energies: Vec::new(),
            ranked_energies: Vec::new(),
        }
    }

    /// Runs the voice activity detector and the SNR estimator over a mono clip at `sample_rate` Hz.
    pub fn analyse(&mut self, mono: &[f32], sample_rate: u32) -> SpeechAnalysis {
        let mut resampled = std::mem::take(&mut self.resampled);
        resampled.clear();
        let signal: &[f32] = if sample_rate == ANALYSIS_RATE || sample_rate == 0 {
            mono
        } else {
            self.resample(mono, sample_rate, &mut resampled);
            &resampled
        };
        let analysis = self.analyse_16k(signal);
        self.resampled = resampled;
        analysis
    }

    /// The smoothed speech decisions of the last clip analysed, one per [`VAD_FRAME`] samples
    /// of its 16 kHz version (frame `i` covers 16 ms starting at `i * 16` ms).
    pub fn speech_frames(&self) -> &[bool] {
        &self.speech
    }

    fn resample(&mut self, mono: &[f32], sample_rate: u32, out: &mut Vec<f32>) {
        if self.resampler.as_ref().map(MonoResampler::in_rate) != Some(sample_rate) {
            self.resampler = MonoResampler::new(sample_rate, ANALYSIS_RATE).ok();
        }
        let Some(resampler) = self.resampler.as_mut() else {
            return;
        };
        out.reserve(mono.len() * ANALYSIS_RATE as usize / sample_rate as usize + 1);
        resampler.process(mono, out);
        resampler.finish(out);
    }

    fn analyse_16k(&mut self, signal: &[f32]) -> SpeechAnalysis {
        let duration_s = signal.len() as f64 / f64::from(ANALYSIS_RATE);
        self.detect_speech(signal);
        let frames = self.speech.len();
        let frame_len = |index: usize| {
            let start = index * VAD_FRAME;
            (signal.len().min(start + VAD_FRAME) - start) as f64 / f64::from(ANALYSIS_RATE)
        };
        let first = self.speech.iter().position(|&s| s);
        let last = self.speech.iter().rposition(|&s| s);
        let (leading_silence_s, trailing_silence_s) = match (first, last) {
            (Some(first), Some(last)) => (
                first as f64 * VAD_FRAME as f64 / f64::from(ANALYSIS_RATE),
                (duration_s - (last * VAD_FRAME) as f64 / f64::from(ANALYSIS_RATE) - frame_len(last)).max(0.0),
            ),
            _ => (duration_s, duration_s),
        };
        let speech_frames = self.speech.iter().filter(|&&s| s).count();
        let speech_s: f64 = (0..frames).filter(|&i| self.speech[i]).map(frame_len).sum();
        SpeechAnalysis {
            speech_ratio: if frames == 0 { 0.0 } else { speech_frames as f64 / frames as f64 },
            leading_silence_s,
            trailing_silence_s,
            total_silence_s: (duration_s - speech_s).max(0.0),
            snr_db: self.estimate_snr(signal),
        }
    }

    /// Fills `self.speech` with one smoothed decision per 256-sample frame.
    fn detect_speech(&mut self, signal: &[f32]) {
        self.detector.reset();
        self.speech.clear();
        let mut input = [0.0f32; VAD_FRAME];
        // Pre-roll: the clip's opening, time-reversed, so the detector's recurrent state has
        // settled by sample 0 and meets the clip without a jump (x[P], ..., x[1], then x[0], ...).
        // Started cold, it calls the first 50-150 ms of noise speech.
        let preroll_frames = (signal.len().saturating_sub(1) / VAD_FRAME).min(VAD_PREROLL_FRAMES);
        for frame in 0..preroll_frames {
            let end = (preroll_frames - frame) * VAD_FRAME;
            for (slot, &sample) in input.iter_mut().zip(signal[end - VAD_FRAME + 1..=end].iter().rev()) {
                *slot = vad_sample(sample);
            }
            self.detector.predict_f32(&input);
        }
        let frames = signal.len().div_ceil(VAD_FRAME);
        for call in 0..frames + VAD_LATENCY_FRAMES {
            let start = (call * VAD_FRAME).min(signal.len());
            let end = (start + VAD_FRAME).min(signal.len());
            input.fill(0.0);
            for (slot, &sample) in input.iter_mut().zip(&signal[start..end]) {
                *slot = vad_sample(sample);
            }
            let score = self.detector.predict_f32(&input);
            if call >= VAD_LATENCY_FRAMES {
                self.speech.push(score > VAD_THRESHOLD);
            }
        }
        let floor = self.energy_floor(signal);
        smooth_decisions(&mut self.speech);
        clear_quiet_runs(&mut self.speech, &self.frame_energies, floor * 10f64.powf(VAD_RUN_MARGIN_DB / 10.0));
    }

    /// Fills `self.frame_energies` (energy per sample of each VAD frame) and returns the clip's
    /// energy floor, the [`VAD_FLOOR_QUANTILE`] of the energies of frames that are not digital
    /// silence (0 when all are).
    fn energy_floor(&mut self, signal: &[f32]) -> f64 {
        self.frame_energies.clear();
        self.frame_energies.extend(signal.chunks(VAD_FRAME).map(|frame| {
            frame.iter().filter(|x| x.is_finite()).map(|&x| f64::from(x) * f64::from(x)).sum::<f64>() / VAD_FRAME as f64
        }));
        self.ranked_energies.clear();
        self.ranked_energies.extend(self.frame_energies.iter().copied().filter(|&energy| energy > 0.0));
        if self.ranked_energies.is_empty() {
            return 0.0;
        }
        let index =
            ((VAD_FLOOR_QUANTILE * self.ranked_energies.len() as f64) as usize).min(self.ranked_energies.len() - 1);
        let (_, &mut floor, _) = self.ranked_energies.select_nth_unstable_by(index, f64::total_cmp);
        floor
    }

    /// Speech energy over noise energy of the whole clip, from a noise power spectrum estimate.
    fn estimate_snr(&mut self, signal: &[f32]) -> Option<f64> {
        let total_energy: f64 = signal.iter().filter(|x| x.is_finite()).map(|&x| f64::from(x) * f64::from(x)).sum();
        if total_energy == 0.0 {
            return None;
        }
        let noise_power = self.noise_power_per_sample(signal)?;
        let noise_energy = noise_power * signal.len() as f64;
        if noise_energy <= 0.0 {
            return Some(SNR_RANGE_DB.1);
        }
        let speech_energy = (total_energy - noise_energy).max(0.0);
        let snr_db = 10.0 * (speech_energy / noise_energy).max(1e-12).log10();
        Some(snr_db.clamp(SNR_RANGE_DB.0, SNR_RANGE_DB.1))
    }

    /// Noise power per sample, from the per-bin noise spectrum and Parseval's theorem.
    ///
    /// The noise spectrum is each bin's median over the clip's noise frames: the STFT frames that
    /// the detector leaves far from speech and that are also quiet in every band
    /// ([`Self::mark_quiet_frames`]), which drops the pause frames holding speech the detector
    /// missed (fricatives, breaths, onsets at low SNR). When fewer than [`MIN_NOISE_FRAMES`] are
    /// both, the detector's pauses alone are used, then the quiet frames alone (the detector
    /// calls band-limited noise, and loud noise at low SNR, speech throughout), and only then a
    /// low quantile of every frame.
    fn noise_power_per_sample(&mut self, signal: &[f32]) -> Option<f64> {
        // STFT frame j is centred on VAD frame j: samples [256 j - 128, 256 j + 384). Only frames
        // wholly inside the clip are used.
        let half_hop = VAD_FRAME / 2;
        let first = 1usize;
        let last = (signal.len() + half_hop).checked_sub(SNR_FFT)? / VAD_FRAME;
        if last < first {
            return None;
        }
        let available = last - first + 1;
        let stride = available.div_ceil(MAX_STFT_FRAMES);
        self.frame_indices.clear();
        self.frame_indices.extend((first..last + 1).step_by(stride));
        let count = self.frame_indices.len();
        let bins = self.spectrum.len();
        self.powers.clear();
        self.powers.resize(bins * count, 0.0);
        for (slot, &j) in self.frame_indices.iter().enumerate() {
            let start = j * VAD_FRAME - half_hop;
            for ((out, &sample), &weight) in
                self.frame.iter_mut().zip(&signal[start..start + SNR_FFT]).zip(&self.window)
            {
                *out = if sample.is_finite() { sample * weight } else { 0.0 };
            }
            self.fft
                .process_with_scratch(&mut self.frame, &mut self.spectrum, &mut self.scratch)
                .expect("buffers come from the plan");
            for (bin, value) in self.spectrum.iter().enumerate() {
                self.powers[bin * count + slot] = value.norm_sqr();
            }
        }
        self.select_noise_frames();
        let use_noise_frames = self.noise_slots.len() >= MIN_NOISE_FRAMES;
        let mut weighted_sum = 0.0f64;
        for bin in 0..bins {
            let bin_powers = &self.powers[bin * count..(bin + 1) * count];
            let noise = if use_noise_frames {
                // The median, bias-corrected for exponentially distributed power: breaths and
                // clicks left in a few noise frames cannot drag it up the way they drag a mean.
                self.column.clear();
                self.column.extend(self.noise_slots.iter().map(|&slot| bin_powers[slot]));
                unbiased_quantile_mean(&mut self.column, 0.5)
            } else {
                self.column.clear();
                self.column.extend_from_slice(bin_powers);
                unbiased_quantile_mean(&mut self.column, NOISE_QUANTILE)
            };
            // One-sided spectrum: every bin but DC and Nyquist stands for two.
            let weight = if bin == 0 || bin == bins - 1 { 1.0 } else { 2.0 };
            weighted_sum += weight * noise;
        }
        Some(weighted_sum / (SNR_FFT as f64 * self.window_energy))
    }

    /// Fills `noise_slots` (positions in `frame_indices`) with the frames the noise is averaged
    /// over, in the order of preference of [`Self::noise_power_per_sample`]; fewer than
    /// [`MIN_NOISE_FRAMES`] means none qualified.
    fn select_noise_frames(&mut self) {
        let count = self.frame_indices.len();
        self.mark_quiet_frames();
        // A frame is a pause frame when no VAD frame within the guard is speech.
        let speech = &self.speech;
        let is_pause = |j: usize| {
            let guard_start = j.saturating_sub(NOISE_GUARD_FRAMES);
            let guard_end = (j + NOISE_GUARD_FRAMES + 1).min(speech.len());
            !speech[guard_start..guard_end].iter().any(|&s| s)
        };
        let frame_indices = &self.frame_indices;
        let pauses = || frame_indices.iter().enumerate().filter(|&(_, &j)| is_pause(j)).map(|(slot, _)| slot);
        let quiet = &self.quiet;
        self.noise_slots.clear();
        self.noise_slots.extend(pauses().filter(|&slot| quiet[slot]));
        if self.noise_slots.len() >= MIN_NOISE_FRAMES {
            return;
        }
        self.noise_slots.clear();
        self.noise_slots.extend(pauses());
        if self.noise_slots.len() >= MIN_NOISE_FRAMES {
            return;
        }
        self.noise_slots.clear();
        self.noise_slots.extend((0..count).filter(|&slot| quiet[slot]));
    }

    /// Fills `quiet` with whether each STFT frame stays, in every band of [`QUIET_BAND_BINS`]
    /// bins, within [`QUIET_MARGIN_DB`] of that band's floor over the clip (its
    /// [`QUIET_FLOOR_QUANTILE`]). Bins are whitened first (divided by their own floor), so a
    /// band's sum is as steady as its bin count allows even where the noise is steeply coloured,
    /// and speech standing a few dB above the noise in any one band marks the frame as not quiet.
    fn mark_quiet_frames(&mut self) {
        let count = self.frame_indices.len();
        let bins = self.spectrum.len();
        let bands = (bins / QUIET_BAND_BINS).max(1);
        let floor_index = ((QUIET_FLOOR_QUANTILE * count as f64) as usize).min(count - 1);
        self.band_powers.clear();
        self.band_powers.resize(bands * count, 0.0);
        for bin in 0..bins {
            let bin_powers = &self.powers[bin * count..(bin + 1) * count];
            self.column.clear();
            self.column.extend_from_slice(bin_powers);
            let (_, &mut bin_floor, _) = self.column.select_nth_unstable_by(floor_index, f32::total_cmp);
            if bin_floor <= 0.0 {
                // Digital silence in a tenth of the frames: this bin cannot tell quiet frames.
                continue;
            }
            let band = (bin / QUIET_BAND_BINS).min(bands - 1);
            let row = &mut self.band_powers[band * count..(band + 1) * count];
            for (total, &power) in row.iter_mut().zip(bin_powers) {
                *total += power / bin_floor;
            }
        }
        let margin = 10f32.powf(QUIET_MARGIN_DB as f32 / 10.0);
        self.quiet.clear();
        self.quiet.resize(count, true);
        for band in 0..bands {
            let row = &self.band_powers[band * count..(band + 1) * count];
            self.column.clear();
            self.column.extend_from_slice(row);
            let (_, &mut band_floor, _) = self.column.select_nth_unstable_by(floor_index, f32::total_cmp);
            for (quiet, &power) in self.quiet.iter_mut().zip(row) {
                *quiet &= power <= band_floor * margin;
            }
        }
    }
}

/// Estimates the mean of exponentially distributed `values` (the periodogram of Gaussian noise)
/// from their `quantile`-th order statistic, which speech in a minority of the values cannot
/// drag up the way it drags up the mean.
///
/// The `j`-th smallest of `n` exponential values with mean `m` has expectation
/// `m * sum(1 / i for i in n - j + 1..=n)` (Rényi's representation), so dividing by that sum is
/// unbiased for any `n`, where the asymptotic `-ln(1 - quantile)` is not for small `n`.
fn unbiased_quantile_mean(values: &mut [f32], quantile: f64) -> f64 {
    let n = values.len();
    if n == 0 {
        return 0.0;
    }
    let index = ((quantile * n as f64) as usize).min(n - 1);
    let (_, &mut order_statistic, _) = values.select_nth_unstable_by(index, f32::total_cmp);
    let rank = index + 1;
    let expectation: f64 = (n - rank + 1..=n).map(|i| 1.0 / i as f64).sum();
    f64::from(order_statistic) / expectation
}

/// Earshot wants samples in [-1, 1]; NaN would poison its recurrent state.
fn vad_sample(sample: f32) -> f32 {
    if sample.is_finite() { sample.clamp(-1.0, 1.0) } else { 0.0 }
}

/// Bridges short gaps between speech frames, then drops speech runs too short to be speech.
fn smooth_decisions(speech: &mut [bool]) {
    let mut index = 0;
    let mut last_speech: Option<usize> = None;
    while index < speech.len() {
        if speech[index] {
            if let Some(previous) = last_speech
                && index - previous - 1 <= VAD_BRIDGE_FRAMES
            {
                speech[previous + 1..index].fill(true);
            }
            last_speech = Some(index);
        }
        index += 1;
    }
    let mut start = 0;
    while start < speech.len() {
        if !speech[start] {
            start += 1;
            continue;
        }
        let end = speech[start..].iter().position(|&s| !s).map_or(speech.len(), |offset| start + offset);
        if end - start < VAD_MIN_SPEECH_FRAMES {
            speech[start..end].fill(false);
        }
        start = end;
    }
}

/// Clears every run of speech frames none of whose frames has an energy above `threshold`.
fn clear_quiet_runs(speech: &mut [bool], energies: &[f64], threshold: f64) {
    let mut start = 0;
    while start < speech.len() {
        if !speech[start] {
            start += 1;
            continue;
        }
        let end = speech[start..].iter().position(|&s| !s).map_or(speech.len(), |offset| start + offset);
        if !energies[start..end].iter().any(|&energy| energy > threshold) {
            speech[start..end].fill(false);
        }
        start = end;
    }
}

thread_local! {
    static ANALYSER: RefCell<SpeechAnalyser> = RefCell::new(SpeechAnalyser::new());
}

/// Runs the voice activity detector and the SNR estimator over a mono clip at `sample_rate` Hz.
///
/// Other rates are resampled to 16 kHz first, so the SNR covers 0-8 kHz. Speech activity comes
/// from earshot on 16 ms frames, with 64 ms gaps bridged and 16 ms blips dropped. The SNR is
/// the clip's energy less the estimated noise energy, over the noise energy; the noise spectrum
/// is each bin's median over the frames at least 32 ms from any speech that are also quiet in
/// every 500 Hz band, falling back to the pauses alone, then the quiet frames alone, then a low
/// quantile of each bin over the whole clip (see `SpeechAnalyser::noise_power_per_sample`).
/// Digital silence gives `None`; a clip whose noise is digital silence reads the upper clamp.
pub fn analyse_speech(mono: &[f32], sample_rate: u32) -> SpeechAnalysis {
    ANALYSER.with(|analyser| match analyser.try_borrow_mut() {
        Ok(mut analyser) => analyser.analyse(mono, sample_rate),
        // Re-entered on this thread (cannot happen today): use a fresh analyser.
        Err(_) => SpeechAnalyser::new().analyse(mono, sample_rate),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::f64::consts::PI;

    fn sine(freq: f64, rate: u32, len: usize, peak_dbfs: f64) -> Vec<f32> {
        let amplitude = 10f64.powf(peak_dbfs / 20.0);
        (0..len).map(|n| (amplitude * (2.0 * PI * freq * n as f64 / rate as f64).sin()) as f32).collect()
    }

    /// Uniform white noise in [-1, 1) from a 64-bit xorshift.
    fn white_noise(len: usize, seed: u64) -> Vec<f32> {
        let mut state = seed.max(1);
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                ((state >> 40) as f64 / (1u64 << 23) as f64 - 1.0) as f32
            })
            .collect()
    }

    fn levels(channels: u16, interleaved: &[f32]) -> Levels {
        let mut meter = LevelMeter::new(channels);
        meter.add(interleaved);
        meter.finish()
    }

    #[test]
    fn sine_at_minus_20_dbfs_has_known_peak_and_rms() {
        // 1 kHz at 48 kHz hits its crest exactly; RMS of a sine is 3.0103 dB below its peak.
        let result = levels(1, &sine(1000.0, 48000, 48000, -20.0));
        assert!((result.peak_dbfs.unwrap() + 20.0).abs() < 0.01);
        assert!((result.rms_dbfs.unwrap() + 23.0103).abs() < 0.01);
        assert!(result.dc_offset.abs() < 1e-6);
        assert_eq!(result.clipping_ratio, 0.0);
        assert_eq!(result.frames, 48000);
        assert_eq!(result.downmix_gain_db, None);
    }

    #[test]
    fn digital_silence_has_no_level() {
        let result = levels(2, &[0.0; 2000]);
        assert_eq!(result.peak_dbfs, None);
        assert_eq!(result.rms_dbfs, None);
        assert_eq!(result.downmix_gain_db, None);
        assert_eq!(result.frames, 1000);
    }

    #[test]
    fn clipping_dc_and_over_full_scale_are_counted() {
        let samples = [1.0, -1.0, 0.9995, 1.5, 0.5, 0.5, 0.5, 0.5];
        let result = levels(1, &samples);
        assert_eq!(result.clipping_ratio, 4.0 / 8.0);
        assert_eq!(result.over_full_scale_samples, 1);
        let mean = samples.iter().map(|&x| f64::from(x)).sum::<f64>() / 8.0;
        assert!((result.dc_offset - mean).abs() < 1e-9);
        assert!((result.peak_dbfs.unwrap() - 20.0 * 1.5f64.log10()).abs() < 1e-6);
    }

    #[test]
    fn non_finite_samples_are_counted_and_excluded() {
        let mut samples = sine(1000.0, 48000, 4800, -20.0);
        let clean = levels(1, &samples);
        samples.extend([f32::NAN, f32::INFINITY, f32::NEG_INFINITY]);
        let dirty = levels(1, &samples);
        assert_eq!(dirty.non_finite_samples, 3);
        assert_eq!(dirty.frames, 4803);
        assert_eq!(dirty.peak_dbfs, clean.peak_dbfs);
        assert!((dirty.rms_dbfs.unwrap() - clean.rms_dbfs.unwrap()).abs() < 1e-9);
        assert_eq!(dirty.over_full_scale_samples, 0);
    }

    #[test]
    fn downmix_gain_tells_identical_uncorrelated_and_cancelling_channels() {
        let left = white_noise(48000, 3);
        let right = white_noise(48000, 4);
        let pair = |a: &[f32], b: &[f32]| -> Vec<f32> { a.iter().zip(b).flat_map(|(&x, &y)| [x, y]).collect() };
        let identical = levels(2, &pair(&left, &left)).downmix_gain_db.unwrap();
        assert!(identical.abs() < 1e-6, "{identical}");
        // Independent equal-power channels: the mean has half the power, -3.01 dB.
        let independent = levels(2, &pair(&left, &right)).downmix_gain_db.unwrap();
        assert!((independent + 3.01).abs() < 0.1, "{independent}");
        let inverted: Vec<f32> = left.iter().map(|x| -x).collect();
        let cancelling = levels(2, &pair(&left, &inverted)).downmix_gain_db.unwrap();
        assert!(cancelling <= -100.0, "{cancelling}");
    }

    #[test]
    fn stereo_input_split_inside_frames_gives_the_same_levels() {
        let left = sine(440.0, 48000, 4800, -6.0);
        let right = sine(1000.0, 48000, 4800, -12.0);
        let stereo: Vec<f32> = left.iter().zip(&right).flat_map(|(&l, &r)| [l, r]).collect();
        let whole = levels(2, &stereo);
        let mut meter = LevelMeter::new(2);
        for piece in stereo.chunks(333) {
            meter.add(piece);
        }
        let split = meter.finish();
        assert_eq!(whole.frames, split.frames);
        assert_eq!(whole.peak_dbfs, split.peak_dbfs);
        let (a, b) = (whole.downmix_gain_db.unwrap(), split.downmix_gain_db.unwrap());
        assert!((a - b).abs() < 1e-9);
    }

    fn bandwidth(samples: &[f32], rate: u32) -> Option<f64> {
        let mut meter = BandwidthMeter::new(rate);
        for piece in samples.chunks(1000) {
            meter.add(piece);
        }
        meter.finish()
    }

    #[test]
    fn white_noise_is_full_band() {
        for rate in [16000, 48000] {
            let measured = bandwidth(&white_noise(rate as usize * 2, 5), rate).unwrap();
            let nyquist = f64::from(rate) / 2.0;
            assert!(measured > 0.98 * nyquist && measured <= nyquist, "{rate}: {measured}");
        }
    }

    #[test]
    fn noise_band_limited_at_8k_and_upsampled_reads_below_4k() {
        let mut resampler = MonoResampler::new(8000, 16000).unwrap();
        let mut upsampled = Vec::new();
        resampler.process(&white_noise(16000, 6), &mut upsampled);
        resampler.finish(&mut upsampled);
        // Flat up to the 4 kHz edge, so the -50 dB point falls inside the resampler's transition
        // band, just above 4 kHz (speech, 30 dB down there already, reads 3950-3970 Hz).
        let measured = bandwidth(&upsampled, 16000).unwrap();
        assert!((3900.0..4100.0).contains(&measured), "{measured}");
    }

    #[test]
    fn pure_tone_bandwidth_is_its_frequency() {
        // A Hann-windowed tone spreads over a few bins before falling 50 dB.
        let measured = bandwidth(&sine(1000.0, 16000, 32000, -20.0), 16000).unwrap();
        assert!((1000.0..1100.0).contains(&measured), "{measured}");
    }

    #[test]
    fn silence_has_no_bandwidth_and_dc_is_ignored() {
        assert_eq!(bandwidth(&[0.0; 5000], 16000), None);
        assert_eq!(bandwidth(&[], 16000), None);
        let offset: Vec<f32> = sine(1000.0, 16000, 32000, -20.0).iter().map(|x| x + 0.3).collect();
        let measured = bandwidth(&offset, 16000).unwrap();
        assert!((1000.0..1100.0).contains(&measured), "{measured}");
    }

    #[test]
    fn clip_shorter_than_one_frame_is_still_measured() {
        let measured = bandwidth(&white_noise(500, 8), 16000).unwrap();
        assert!(measured > 7000.0, "{measured}");
    }

    #[test]
    fn quantile_mean_is_unbiased_for_exponential_values() {
        // Exponential values by inversion of the xorshift's uniforms; the median of 15 draws,
        // averaged over many trials, recovers the mean within 2 %.
        let uniforms = white_noise(15 * 4000, 9);
        let mut total = 0.0;
        for trial in uniforms.chunks(15) {
            let mut values: Vec<f32> =
                trial.iter().map(|&u| -(1.0 - (f64::from(u) + 1.0) / 2.0).max(1e-12).ln() as f32 * 3.0).collect();
            total += unbiased_quantile_mean(&mut values, 0.5);
        }
        let estimate = total / 4000.0;
        assert!((estimate - 3.0).abs() < 0.06, "{estimate}");
    }

    #[test]
    fn digital_silence_has_no_snr_and_no_speech() {
        let analysis = analyse_speech(&vec![0.0; 32000], 16000);
        assert_eq!(analysis.snr_db, None);
        assert_eq!(analysis.speech_ratio, 0.0);
        assert!((analysis.leading_silence_s - 2.0).abs() < 1e-9);
        assert!((analysis.trailing_silence_s - 2.0).abs() < 1e-9);
        assert!((analysis.total_silence_s - 2.0).abs() < 1e-9);
    }

    #[test]
    fn empty_and_tiny_clips_do_not_panic() {
        let empty = analyse_speech(&[], 16000);
        assert_eq!(empty.snr_db, None);
        assert_eq!(empty.total_silence_s, 0.0);
        let tiny = analyse_speech(&[0.1, -0.2, f32::NAN], 44100);
        assert!(tiny.speech_ratio <= 1.0);
    }

    #[test]
    fn white_noise_alone_is_noise_at_any_rate() {
        // Pure noise: no speech, and all of the energy is noise, so the SNR sits at the floor.
        // Not at 8 kHz: earshot calls band-limited (0-4 kHz) noise above about -45 dBFS speech.
        for rate in [16000, 48000] {
            let noise: Vec<f32> = white_noise(rate as usize * 3, 10).iter().map(|x| x * 0.1).collect();
            let analysis = analyse_speech(&noise, rate);
            assert!(analysis.speech_ratio < 0.05, "{rate}: {analysis:?}");
            assert_eq!(analysis.snr_db, Some(SNR_RANGE_DB.0), "{rate}: {analysis:?}");
        }
    }

    #[test]
    fn input_beyond_full_scale_is_clamped_for_the_detector() {
        // Earshot asserts its input is within [-1, 1] in debug builds; this must not panic. (It
        // calls full-scale noise speech, so only the SNR is checked.)
        let loud: Vec<f32> = white_noise(16000, 12).iter().map(|x| x * 4.0).collect();
        let analysis = analyse_speech(&loud, 16000);
        assert_eq!(analysis.snr_db, Some(SNR_RANGE_DB.0), "{analysis:?}");
    }
}
