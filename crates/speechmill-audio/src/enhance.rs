//! Optional speech enhancement: RNNoise denoising (the pure-Rust `nnnoiseless` port) of mono clips.
//!
//! RNNoise works on 10 ms frames at 48 kHz, so a clip is resampled to 48 kHz, denoised and
//! resampled back to its own rate. The stage measures its own effect with [`analyse_speech`]: a
//! caller delivers the original clip, flagged, when [`Enhancement::improved`] is false.

use nnnoiseless::DenoiseState;

use crate::measure::analyse_speech;
use crate::resample::MonoResampler;

/// The rate RNNoise runs at.
const RNNOISE_RATE: u32 = 48000;
/// RNNoise's scale: it expects samples in 16-bit units.
const RNNOISE_SCALE: f32 = 32768.0;

/// Why a clip could not be enhanced.
#[derive(Debug, thiserror::Error)]
pub enum EnhanceError {
    /// The clip's rate cannot be converted to and from 48 kHz.
    #[error("cannot denoise audio at {rate} Hz: {detail}")]
    UnsupportedRate {
        /// The clip's rate.
        rate: u32,
        /// Why.
        detail: String,
    },
    /// The denoiser produced NaN or infinite samples.
    #[error("denoising produced non-finite samples")]
    NonFinite,
}

/// A denoised clip with the SNR estimates that judge it.
#[derive(Debug, Clone)]
pub struct Enhancement {
    /// The denoised clip, at the input's rate and of the input's length.
    pub samples: Vec<f32>,
    /// `analyse_speech` SNR of the input, dB.
    pub snr_before_db: Option<f64>,
    /// `analyse_speech` SNR of the output, dB.
    pub snr_after_db: Option<f64>,
    /// Whether the output's estimated SNR is not below the input's: when false, deliver the input.
    pub improved: bool,
}

/// Denoises a mono clip at `sample_rate` Hz with RNNoise; output and input have equal length and
/// are time-aligned.
pub fn denoise(mono: &[f32], sample_rate: u32) -> Result<Vec<f32>, EnhanceError> {
    let unsupported = |error: crate::resample::ResampleError| EnhanceError::UnsupportedRate {
        rate: sample_rate,
        detail: error.to_string(),
    };
    let mut up = MonoResampler::new(sample_rate, RNNOISE_RATE).map_err(unsupported)?;
    let mut at_48k = Vec::with_capacity(mono.len() * RNNOISE_RATE as usize / sample_rate.max(1) as usize + 1);
    up.process(mono, &mut at_48k);
    up.finish(&mut at_48k);
    let frame = DenoiseState::FRAME_SIZE;
    // RNNoise's output lags its input by one frame: feed one frame of silence more and drop the
    // first frame of output.
    let padded_len = at_48k.len().div_ceil(frame) * frame + frame;
    at_48k.resize(padded_len, 0.0);
    let mut state = DenoiseState::new();
    let mut input = vec![0.0f32; frame];
    let mut output = vec![0.0f32; frame];
    let mut denoised = Vec::with_capacity(padded_len);
    for chunk in at_48k.chunks_exact(frame) {
        for (slot, &sample) in input.iter_mut().zip(chunk) {
            *slot = if sample.is_finite() { sample * RNNOISE_SCALE } else { 0.0 };
        }
        state.process_frame(&mut output, &input);
        denoised.extend(output.iter().map(|&sample| sample / RNNOISE_SCALE));
    }
    let original_48k_len = expected_len(mono.len(), sample_rate, RNNOISE_RATE);
    let aligned = &denoised[frame..frame + original_48k_len];
    let mut down = MonoResampler::new(RNNOISE_RATE, sample_rate).map_err(unsupported)?;
    let mut out = Vec::with_capacity(mono.len());
    down.process(aligned, &mut out);
    down.finish(&mut out);
    out.resize(mono.len(), 0.0);
    if out.iter().any(|sample| !sample.is_finite()) {
        return Err(EnhanceError::NonFinite);
    }
    Ok(out)
}

/// STFT length of the spectral denoiser at 16 kHz (32 ms) and its hop (half of it).
const WIENER_FFT: usize = 512;
const WIENER_HOP: usize = WIENER_FFT / 2;
/// Smoothing of the decision-directed a-priori SNR (Ephraim and Malah 1984).
const DD_ALPHA: f64 = 0.98;
/// Lowest gain, -20 dB: deeper suppression turns residual noise into musical noise.
const MIN_GAIN: f64 = 0.1;

/// Spectral (Wiener) denoising of a mono clip, driven by the speech-activity detector's noise
/// estimate: the noise power spectrum is the mean over frames the detector calls non-speech (or,
/// with fewer than 10 of them, the bias-corrected 10th percentile of each bin over the clip);
/// the gain is the Wiener gain of the decision-directed a-priori SNR, floored at -20 dB.
/// Works at 16 kHz (other rates are converted there and back); equal length, time-aligned.
pub fn spectral_denoise(mono: &[f32], sample_rate: u32) -> Result<Vec<f32>, EnhanceError> {
    use realfft::RealFftPlanner;
    let rate = crate::measure::ANALYSIS_RATE;
    let unsupported = |error: crate::resample::ResampleError| EnhanceError::UnsupportedRate {
        rate: sample_rate,
        detail: error.to_string(),
    };
    let signal: Vec<f32> = if sample_rate == rate {
        mono.iter().map(|&x| if x.is_finite() { x } else { 0.0 }).collect()
    } else {
        let mut resampler = MonoResampler::new(sample_rate, rate).map_err(unsupported)?;
        let mut out = Vec::new();
        resampler.process(mono, &mut out);
        resampler.finish(&mut out);
        out
    };
    let mut analyser = crate::measure::SpeechAnalyser::new();
    analyser.analyse(&signal, rate);
    let speech = analyser.speech_frames().to_vec();
    // Frames of the STFT: start at -HOP so that every sample is covered by two frames.
    let padded: Vec<f32> = std::iter::repeat_n(0.0, WIENER_HOP)
        .chain(signal.iter().copied())
        .chain(std::iter::repeat_n(0.0, WIENER_FFT))
        .collect();
    let frames = (signal.len() + WIENER_HOP).div_ceil(WIENER_HOP);
    // sqrt-Hann analysis and synthesis windows: their product, a Hann at 50 % overlap, sums to 1.
    let window: Vec<f32> = (0..WIENER_FFT)
        .map(|n| (0.5 - 0.5 * (2.0 * std::f64::consts::PI * n as f64 / WIENER_FFT as f64).cos()).sqrt() as f32)
        .collect();
    let mut planner = RealFftPlanner::<f32>::new();
    let forward = planner.plan_fft_forward(WIENER_FFT);
    let inverse = planner.plan_fft_inverse(WIENER_FFT);
    let bins = WIENER_FFT / 2 + 1;
    let mut spectra = Vec::with_capacity(frames);
    let mut buffer = vec![0.0f32; WIENER_FFT];
    for frame in 0..frames {
        let start = frame * WIENER_HOP;
        for ((slot, &x), &w) in buffer.iter_mut().zip(&padded[start..start + WIENER_FFT]).zip(&window) {
            *slot = x * w;
        }
        let mut spectrum = forward.make_output_vec();
        forward.process(&mut buffer, &mut spectrum).expect("buffers come from the plan");
        spectra.push(spectrum);
    }
    // Which STFT frames are noise: the VAD frames they overlap (16 ms each) are all non-speech.
    let is_noise = |frame: usize| {
        let first_sample = (frame * WIENER_HOP).saturating_sub(WIENER_HOP);
        let last_sample = frame * WIENER_HOP + WIENER_HOP;
        let (first, last) = (first_sample / crate::measure::VAD_FRAME, last_sample / crate::measure::VAD_FRAME);
        (first..=last.min(speech.len().saturating_sub(1))).all(|j| !speech.get(j).copied().unwrap_or(false))
    };
    let noise_frames: Vec<usize> = (0..frames).filter(|&f| is_noise(f)).collect();
    let mut noise = vec![0.0f64; bins];
    if noise_frames.len() >= 10 {
        for &f in &noise_frames {
            for (total, value) in noise.iter_mut().zip(&spectra[f]) {
                *total += f64::from(value.norm_sqr()) / noise_frames.len() as f64;
            }
        }
    } else {
        for (bin, total) in noise.iter_mut().enumerate() {
            let mut column: Vec<f64> = spectra.iter().map(|s| f64::from(s[bin].norm_sqr())).collect();
            column.sort_by(f64::total_cmp);
            // The 10th percentile of exponential values is 0.105 of their mean.
            *total = column[column.len() / 10] / 0.105;
        }
    }
    let mut previous_clean = vec![0.0f64; bins];
    let mut out = vec![0.0f32; padded.len()];
    let scale = 1.0 / WIENER_FFT as f32;
    for (frame, spectrum) in spectra.iter_mut().enumerate() {
        for (bin, value) in spectrum.iter_mut().enumerate() {
            let power = f64::from(value.norm_sqr());
            let noise_power = noise[bin].max(1e-20);
            let posterior = power / noise_power;
            let prior = DD_ALPHA * previous_clean[bin] / noise_power + (1.0 - DD_ALPHA) * (posterior - 1.0).max(0.0);
            let gain = (prior / (1.0 + prior)).max(MIN_GAIN);
            previous_clean[bin] = gain * gain * power;
            *value *= gain as f32;
        }
        // The DC and Nyquist bins must be real for the inverse transform.
        spectrum[0].im = 0.0;
        spectrum[bins - 1].im = 0.0;
        inverse.process(spectrum, &mut buffer).expect("buffers come from the plan");
        let start = frame * WIENER_HOP;
        for ((slot, &x), &w) in out[start..start + WIENER_FFT].iter_mut().zip(&buffer).zip(&window) {
            *slot += x * w * scale;
        }
    }
    let denoised = &out[WIENER_HOP..WIENER_HOP + signal.len()];
    let mut result = if sample_rate == rate {
        denoised.to_vec()
    } else {
        let mut resampler = MonoResampler::new(rate, sample_rate).map_err(unsupported)?;
        let mut back = Vec::new();
        resampler.process(denoised, &mut back);
        resampler.finish(&mut back);
        back
    };
    result.resize(mono.len(), 0.0);
    if result.iter().any(|x| !x.is_finite()) {
        return Err(EnhanceError::NonFinite);
    }
    Ok(result)
}

/// `round(n * to / from)`, as the resampler computes its output length.
fn expected_len(n: usize, from: u32, to: u32) -> usize {
    ((2 * n as u128 * u128::from(to) + u128::from(from)) / (2 * u128::from(from))) as usize
}

/// Denoises a clip and judges the result by its estimated SNR (see [`Enhancement::improved`]).
pub fn enhance(mono: &[f32], sample_rate: u32) -> Result<Enhancement, EnhanceError> {
    let samples = denoise(mono, sample_rate)?;
    let snr_before_db = analyse_speech(mono, sample_rate).snr_db;
    let snr_after_db = analyse_speech(&samples, sample_rate).snr_db;
    let improved = match (snr_before_db, snr_after_db) {
        (Some(before), Some(after)) => after >= before,
        _ => false,
    };
    Ok(Enhancement { samples, snr_before_db, snr_after_db, improved })
}

/// Scale-invariant signal-to-distortion ratio of `estimate` against `reference`, in dB
/// (Le Roux et al., "SDR – half-baked or well done?", ICASSP 2019); both are made zero-mean.
pub fn si_sdr_db(estimate: &[f32], reference: &[f32]) -> f64 {
    let len = estimate.len().min(reference.len());
    let mean = |x: &[f32]| x[..len].iter().map(|&v| f64::from(v)).sum::<f64>() / len.max(1) as f64;
    let (mean_estimate, mean_reference) = (mean(estimate), mean(reference));
    let (mut dot, mut reference_energy) = (0.0, 0.0);
    for (&e, &r) in estimate[..len].iter().zip(&reference[..len]) {
        let (e, r) = (f64::from(e) - mean_estimate, f64::from(r) - mean_reference);
        dot += e * r;
        reference_energy += r * r;
    }
    let alpha = dot / reference_energy.max(f64::MIN_POSITIVE);
    let (mut target_energy, mut error_energy) = (0.0, 0.0);
    for (&e, &r) in estimate[..len].iter().zip(&reference[..len]) {
        let target = alpha * (f64::from(r) - mean_reference);
        target_energy += target * target;
        error_energy += (f64::from(e) - mean_estimate - target).powi(2);
    }
    10.0 * (target_energy / error_energy.max(f64::MIN_POSITIVE)).log10()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Gaussian-ish white noise (sum of uniforms) from a 64-bit xorshift.
    fn noise(len: usize, seed: u64) -> Vec<f32> {
        let mut state = seed.max(1);
        let mut uniform = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64 - 0.5
        };
        (0..len).map(|_| ((0..4).map(|_| uniform()).sum::<f64>()) as f32).collect()
    }

    #[test]
    fn si_sdr_knows_its_answers() {
        let reference = noise(16000, 3);
        // Scale does not matter; a known error energy gives a known ratio.
        assert!(si_sdr_db(&reference.iter().map(|x| x * 0.3).collect::<Vec<_>>(), &reference) > 100.0);
        let error = noise(16000, 4);
        let gain =
            (reference.iter().map(|x| x * x).sum::<f32>() / error.iter().map(|x| x * x).sum::<f32>() / 100.0).sqrt();
        let mixed: Vec<f32> = reference.iter().zip(&error).map(|(r, e)| r + gain * e).collect();
        let value = si_sdr_db(&mixed, &reference);
        assert!((value - 20.0).abs() < 0.1, "{value}");
    }

    #[test]
    fn denoised_clip_keeps_its_length_and_silence_stays_silent() {
        for rate in [16000, 8000, 48000] {
            let out = denoise(&vec![0.0; rate as usize], rate).unwrap();
            assert_eq!(out.len(), rate as usize);
            assert!(out.iter().all(|x| x.abs() < 1e-6));
        }
        assert!(denoise(&[], 16000).unwrap().is_empty());
    }

    #[test]
    fn wiener_suppresses_noise_alone_to_its_gain_floor() {
        // No speech: every frame is noise, so the gain sits at its floor (-20 dB) nearly everywhere.
        let hiss: Vec<f32> = noise(3 * 16000, 17).iter().map(|x| x * 0.02).collect();
        let out = spectral_denoise(&hiss, 16000).unwrap();
        assert_eq!(out.len(), hiss.len());
        let energy = |x: &[f32]| x.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>();
        let reduction_db = 10.0 * (energy(&hiss) / energy(&out)).log10();
        assert!((15.0..=25.0).contains(&reduction_db), "{reduction_db} dB");
        let silence = spectral_denoise(&vec![0.0; 8000], 16000).unwrap();
        assert!(silence.iter().all(|x| x.abs() < 1e-6));
    }

    #[test]
    fn white_noise_alone_is_attenuated() {
        let input: Vec<f32> = noise(32000, 9).iter().map(|x| x * 0.05).collect();
        let out = denoise(&input, 16000).unwrap();
        let energy = |x: &[f32]| x.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>();
        let reduction_db = 10.0 * (energy(&input) / energy(&out)).log10();
        // Measured 6.5 dB: the noise is band-limited to 8 kHz, and RNNoise keeps a floor.
        assert!(reduction_db > 5.0, "{reduction_db} dB");
    }
}
