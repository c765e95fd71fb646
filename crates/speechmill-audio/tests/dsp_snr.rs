//! Known-answer tests of the SNR estimator and the voice activity detector on real speech mixed
//! with real pink noise and with seeded white noise at known signal-to-noise ratios.

use std::path::PathBuf;

use speechmill_audio::measure::{BandwidthMeter, SpeechAnalyser, analyse_speech};
use speechmill_audio::resample::MonoResampler;

const SPEECH_FILES: [&str; 2] = [
    "pocketsphinx-testdata/sense_and_sensibility_01_austen_64kb-0870.wav",
    "pocketsphinx-testdata/sense_and_sensibility_01_austen_64kb-0890.wav",
];
const NOISE_FILE: &str = "alsa-utils/Noise.wav";
const TRUE_SNRS_DB: [f64; 4] = [0.0, 5.0, 10.0, 20.0];

fn testdata(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/real-speech").join(relative)
}

/// Reads a mono 16-bit WAV as floats in [-1, 1) with its rate.
fn read_wav(relative: &str) -> (Vec<f32>, u32) {
    let mut reader = hound::WavReader::open(testdata(relative)).expect("test file opens");
    let spec = reader.spec();
    assert_eq!(spec.channels, 1, "{relative} is mono");
    assert_eq!(spec.bits_per_sample, 16, "{relative} is 16-bit");
    let samples = reader.samples::<i16>().map(|s| f32::from(s.expect("sample decodes")) / 32768.0).collect();
    (samples, spec.sample_rate)
}

fn resample(samples: &[f32], from: u32, to: u32) -> Vec<f32> {
    let mut resampler = MonoResampler::new(from, to).expect("rates are supported");
    let mut out = Vec::new();
    resampler.process(samples, &mut out);
    resampler.finish(&mut out);
    out
}

/// Real pink noise at 16 kHz, looped to `len` samples.
fn pink_noise(len: usize) -> Vec<f32> {
    let (noise, rate) = read_wav(NOISE_FILE);
    let noise = resample(&noise, rate, 16000);
    noise.iter().copied().cycle().take(len).collect()
}

/// Deterministic white noise, uniform in [-1, 1), from a 64-bit xorshift.
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

fn energy(samples: &[f32]) -> f64 {
    samples.iter().map(|&x| f64::from(x) * f64::from(x)).sum()
}

/// `speech + g * noise` with `g` chosen so that energy(speech) / energy(g * noise) is `snr_db`.
fn mix(speech: &[f32], noise: &[f32], snr_db: f64) -> Vec<f32> {
    let gain = (energy(speech) / energy(noise) / 10f64.powf(snr_db / 10.0)).sqrt() as f32;
    speech.iter().zip(noise).map(|(&s, &n)| s + gain * n).collect()
}

struct Condition {
    label: String,
    true_snr_db: f64,
    /// The true SNR with the clean recording's own noise counted as noise too.
    reference_snr_db: f64,
    measured_snr_db: f64,
}

/// Mixes each speech file with each noise at each true SNR and measures it.
fn run_conditions() -> Vec<Condition> {
    let mut conditions = Vec::new();
    for (file_index, file) in SPEECH_FILES.iter().enumerate() {
        let (speech, rate) = read_wav(file);
        assert_eq!(rate, 16000);
        // The "clean" audiobook recordings carry room and codec noise 21-25 dB below the speech
        // (their pauses sit at -44 to -53 dBFS against -24 dBFS overall). It adds to the noise we
        // mix in, so at a true 20 dB the mixture really is 17.5-19 dB.
        let clean_snr_db = analyse_speech(&speech, rate).snr_db.expect("speech has an SNR");
        let noises =
            [("pink", pink_noise(speech.len())), ("white", white_noise(speech.len(), 0x9e37_79b9 + file_index as u64))];
        for (noise_name, noise) in &noises {
            for true_snr_db in TRUE_SNRS_DB {
                let mixed = mix(&speech, noise, true_snr_db);
                let measured = analyse_speech(&mixed, 16000).snr_db.expect("noisy speech has an SNR");
                let reference_snr_db =
                    -10.0 * (10f64.powf(-true_snr_db / 10.0) + 10f64.powf(-clean_snr_db / 10.0)).log10();
                conditions.push(Condition {
                    label: format!("{} + {noise_name} @ {true_snr_db} dB", &file[file.len() - 8..]),
                    true_snr_db,
                    reference_snr_db,
                    measured_snr_db: measured,
                });
            }
        }
    }
    conditions
}

/// Mean and largest absolute error.
fn error_stats(errors: &[f64]) -> (f64, f64) {
    let mean = errors.iter().map(|e| e.abs()).sum::<f64>() / errors.len() as f64;
    let worst = errors.iter().fold(0.0f64, |worst, e| worst.max(e.abs()));
    (mean, worst)
}

// Tolerances. Against the true SNR (the brief's definition: clean-file energy over added-noise
// energy): mean absolute error <= 0.75 dB and no error above 3.0 dB; measured 0.62 / 2.56 dB (0.87
// / 2.70 dB before the noise frames had to be quiet in every band), the worst cases being the
// 20 dB mixtures, where the recordings' own noise (19 and 27 dB down as the estimator reads the
// clean files) is up to half of the noise. Against the reference that counts the recordings' own
// noise: mean <= 0.45 dB, worst <= 1.1 dB; measured 0.35 / 0.92 dB (0.46 / 1.24 dB before). The
// residual errors come from the pauses being 0.2-0.5 s of non-stationary room noise.
#[test]
fn snr_of_real_speech_in_real_and_white_noise() {
    let conditions = run_conditions();
    for condition in &conditions {
        println!(
            "{:<28} measured {:6.2} dB, error {:+.2} dB (vs reference {:.2} dB: {:+.2} dB)",
            condition.label,
            condition.measured_snr_db,
            condition.measured_snr_db - condition.true_snr_db,
            condition.reference_snr_db,
            condition.measured_snr_db - condition.reference_snr_db,
        );
    }
    let true_errors: Vec<f64> = conditions.iter().map(|c| c.measured_snr_db - c.true_snr_db).collect();
    let reference_errors: Vec<f64> = conditions.iter().map(|c| c.measured_snr_db - c.reference_snr_db).collect();
    let (true_mean, true_worst) = error_stats(&true_errors);
    let (reference_mean, reference_worst) = error_stats(&reference_errors);
    println!("vs true SNR: mean absolute error {true_mean:.2} dB, worst {true_worst:.2} dB");
    println!("vs reference: mean absolute error {reference_mean:.2} dB, worst {reference_worst:.2} dB");
    assert!(true_mean <= 0.75, "mean absolute error {true_mean:.2} dB");
    assert!(true_worst <= 3.0, "worst error {true_worst:.2} dB");
    assert!(reference_mean <= 0.45, "mean absolute error {reference_mean:.2} dB");
    assert!(reference_worst <= 1.1, "worst error {reference_worst:.2} dB");
}

/// Measures `speech` (at `rate`) mixed with `noise` at each true SNR; returns the errors.
fn errors_at(label: &str, speech: &[f32], noise: &[f32], rate: u32, true_snrs_db: &[f64]) -> Vec<f64> {
    true_snrs_db
        .iter()
        .map(|&true_snr_db| {
            let measured =
                analyse_speech(&mix(speech, noise, true_snr_db), rate).snr_db.expect("noisy speech has an SNR");
            println!("{label} @ {true_snr_db} dB: measured {measured:6.2} dB, error {:+.2} dB", measured - true_snr_db);
            measured - true_snr_db
        })
        .collect()
}

#[test]
fn regression_short_studio_clips_in_loud_recorded_noise() {
    // The alsa-utils prompts (1.4-1.5 s, 48 kHz, pauses of digital silence, so the true SNR is
    // the physical one) in the recorded pink noise at 0-5 dB: the detector called nearly every
    // frame speech, the estimator fell back to a low quantile of every frame, and speech in the
    // low bins lifted it: mean absolute error 1.47 dB, worst 3.00 dB on these nine mixtures.
    // Quiet frames found band by band now serve: measured 0.68 dB, worst 1.74 dB.
    let (noise, noise_rate) = read_wav(NOISE_FILE);
    let mut errors = Vec::new();
    for file in ["alsa-utils/Front_Left.wav", "alsa-utils/Side_Right.wav", "alsa-utils/Front_Center.wav"] {
        let (speech, rate) = read_wav(file);
        assert_eq!(rate, noise_rate);
        let looped: Vec<f32> = noise.iter().copied().cycle().skip(7919).take(speech.len()).collect();
        errors.extend(errors_at(file, &speech, &looped, rate, &[0.0, 2.5, 5.0]));
    }
    let (mean, worst) = error_stats(&errors);
    println!("mean absolute error {mean:.2} dB, worst {worst:.2} dB");
    assert!(mean <= 1.0, "mean absolute error {mean:.2} dB");
    assert!(worst <= 2.0, "worst error {worst:.2} dB");
}

#[test]
fn regression_telephone_band_speech_in_white_noise() {
    // Audiobook speech at 8 kHz with white noise over its 0-4 kHz band, at 0-10 dB: the detector
    // calls band-limited noise speech, so there were no pauses and the low-quantile fallback
    // overestimated the noise: mean absolute error 1.81 dB, worst 2.37 dB on these six mixtures.
    // Measured now: 0.46 dB, worst 0.87 dB (the recordings' own noise, about 20 dB down, is
    // part of that at 10 dB).
    let mut errors = Vec::new();
    for (file_index, file) in SPEECH_FILES.iter().enumerate() {
        let (speech, rate) = read_wav(file);
        let telephone = resample(&speech, rate, 8000);
        let noise = white_noise(telephone.len(), 0x5eed + file_index as u64);
        errors.extend(errors_at(file, &telephone, &noise, 8000, &[0.0, 5.0, 10.0]));
    }
    let (mean, worst) = error_stats(&errors);
    println!("mean absolute error {mean:.2} dB, worst {worst:.2} dB");
    assert!(mean <= 0.75, "mean absolute error {mean:.2} dB");
    assert!(worst <= 1.5, "worst error {worst:.2} dB");
}

#[test]
fn clean_recordings_read_their_own_noise_floor() {
    // Pauses at -44 to -53 dBFS against speech at -24 dBFS: 19-28 dB, whichever pause one trusts.
    for file in SPEECH_FILES {
        let (speech, rate) = read_wav(file);
        let snr_db = analyse_speech(&speech, rate).snr_db.unwrap();
        println!("{file}: clean SNR {snr_db:.2} dB");
        assert!((19.0..=28.0).contains(&snr_db), "{file}: {snr_db} dB");
    }
}

#[test]
fn snr_is_the_same_through_the_internal_resampler() {
    // The same mixture delivered at 48 kHz is resampled to 16 kHz before analysis.
    let (speech, rate) = read_wav(SPEECH_FILES[0]);
    let mixed = mix(&speech, &pink_noise(speech.len()), 10.0);
    let at_16k = analyse_speech(&mixed, rate).snr_db.unwrap();
    let at_48k = analyse_speech(&resample(&mixed, rate, 48000), 48000).snr_db.unwrap();
    assert!((at_16k - at_48k).abs() < 0.5, "{at_16k} vs {at_48k} dB");
}

#[test]
fn vad_calls_noise_alone_non_speech() {
    let (noise, rate) = read_wav(NOISE_FILE);
    let pink = analyse_speech(&noise, rate);
    println!("Noise.wav: {pink:?}");
    assert!(pink.speech_ratio < 0.05, "pink noise: {pink:?}");
    let white: Vec<f32> = white_noise(16000 * 5, 7).iter().map(|x| x * 0.3).collect();
    let white = analyse_speech(&white, 16000);
    println!("white noise: {white:?}");
    assert!(white.speech_ratio < 0.05, "white noise: {white:?}");
}

#[test]
fn vad_speech_ratio_of_clean_speech_is_plausible() {
    for file in SPEECH_FILES {
        let (speech, rate) = read_wav(file);
        let analysis = analyse_speech(&speech, rate);
        println!("{file}: {analysis:?}");
        assert!((0.6..=0.95).contains(&analysis.speech_ratio), "{file}: {analysis:?}");
    }
}

fn bandwidth(samples: &[f32], rate: u32) -> f64 {
    let mut meter = BandwidthMeter::new(rate);
    for block in samples.chunks(4096) {
        meter.add(block);
    }
    meter.finish().expect("speech is not silence")
}

#[test]
fn bandwidth_of_full_band_and_telephone_speech() {
    for file in SPEECH_FILES {
        let (speech, rate) = read_wav(file);
        let full_band = bandwidth(&speech, rate);
        println!("{file}: full band {full_band:.0} Hz");
        assert!(full_band > 6500.0, "{file}: full band reads {full_band} Hz");
        // Telephone speech: down to 8 kHz, then back up to the rates such speech arrives at.
        let telephone = resample(&speech, rate, 8000);
        for up_rate in [16000, 44100, 48000] {
            let narrow = bandwidth(&resample(&telephone, 8000, up_rate), up_rate);
            println!("{file}: telephone at {up_rate} Hz {narrow:.0} Hz");
            assert!((3500.0..4000.0).contains(&narrow), "{file} at {up_rate} Hz: {narrow} Hz");
        }
    }
}

#[test]
fn known_silences_around_speech_are_measured() {
    // 1 s of faint noise (-60 dBFS) before the speech and 0.5 s after it; the recording itself
    // opens with 0.26 s and closes with 0.2-0.3 s of pause (as the detector reads the clean file).
    for file in SPEECH_FILES {
        let (speech, rate) = read_wav(file);
        let clean = analyse_speech(&speech, rate);
        let faint: Vec<f32> = white_noise(rate as usize * 2, 11).iter().map(|x| x * 0.0017).collect();
        let padded: Vec<f32> = faint[..rate as usize]
            .iter()
            .chain(&speech)
            .chain(&faint[rate as usize..rate as usize * 3 / 2])
            .copied()
            .collect();
        let analysis = analyse_speech(&padded, rate);
        println!("{file}: clean {clean:?}\npadded {analysis:?}");
        let lead_error = analysis.leading_silence_s - (clean.leading_silence_s + 1.0);
        let trail_error = analysis.trailing_silence_s - (clean.trailing_silence_s + 0.5);
        let total_error = analysis.total_silence_s - (clean.total_silence_s + 1.5);
        // One 16 ms frame either way, and a little more for the total (the pause frames the
        // detector bridges may differ once the noise floor changes).
        assert!(lead_error.abs() <= 0.033, "{file}: leading off by {lead_error} s");
        assert!(trail_error.abs() <= 0.033, "{file}: trailing off by {trail_error} s");
        assert!(total_error.abs() <= 0.1, "{file}: total off by {total_error} s");
    }
}

#[test]
fn speech_whose_pauses_are_digital_silence_reads_very_high_snr() {
    // Gate the recording: 10 ms blocks quieter than -40 dBFS become exact zeros, and 0.5 s of
    // zeros go on each end. The only noise left is none at all.
    let (speech, rate) = read_wav(SPEECH_FILES[0]);
    let mut gated: Vec<f32> = vec![0.0; rate as usize / 2];
    for block in speech.chunks(rate as usize / 100) {
        let block_energy = energy(block) / block.len() as f64;
        if block_energy < 1e-4 {
            gated.extend(std::iter::repeat_n(0.0, block.len()));
        } else {
            gated.extend_from_slice(block);
        }
    }
    gated.extend(std::iter::repeat_n(0.0, rate as usize / 2));
    let snr_db = analyse_speech(&gated, rate).snr_db.unwrap();
    assert!(snr_db >= 40.0, "{snr_db} dB");
}

#[test]
fn regression_loud_recorded_pink_noise_is_not_speech() {
    // The detector alone called 71 % of Noise.wav's frames speech at -30 dBFS and all of them at
    // -20 dBFS (20 s looped, as `speechmill-eval`'s noise-only control plays it); runs that never
    // rise 8 dB above the clip's energy floor are now cleared.
    let (noise, rate) = read_wav(NOISE_FILE);
    let noise = resample(&noise, rate, 16000);
    let looped: Vec<f32> = noise.iter().copied().cycle().take(16000 * 20).collect();
    let rms = (energy(&looped) / looped.len() as f64).sqrt();
    for level_dbfs in [-30.0, -20.0] {
        let gain = (10f64.powf(level_dbfs / 20.0) / rms) as f32;
        let scaled: Vec<f32> = looped.iter().map(|x| x * gain).collect();
        let analysis = analyse_speech(&scaled, 16000);
        println!("Noise.wav at {level_dbfs} dBFS: {analysis:?}");
        assert!(analysis.speech_ratio < 0.05, "{level_dbfs} dBFS: {analysis:?}");
    }
}

/// Reference labels per 16 ms frame of a clean utterance: energy within 35 dB of its loudest
/// frame and 6 dB above its 10th-percentile frame, gaps up to 160 ms bridged (the rule
/// `speechmill-eval` uses on its 10 ms grid).
fn reference_labels(clean: &[f32]) -> Vec<bool> {
    let energies: Vec<f64> = clean.chunks(256).map(|c| energy(c) / c.len() as f64).collect();
    let peak = energies.iter().copied().fold(0.0, f64::max);
    let mut sorted = energies.clone();
    sorted.sort_by(f64::total_cmp);
    let threshold = (peak * 10f64.powf(-3.5)).max(sorted[sorted.len() / 10] * 10f64.powf(0.6));
    let mut labels: Vec<bool> = energies.iter().map(|&e| e > threshold).collect();
    let mut last: Option<usize> = None;
    for index in 0..labels.len() {
        if labels[index] {
            if let Some(previous) = last
                && index - previous - 1 <= 10
            {
                labels[previous + 1..index].fill(true);
            }
            last = Some(index);
        }
    }
    labels
}

#[test]
fn vad_f1_on_speech_with_known_boundaries_in_white_noise() {
    // Two utterances at -26 dBFS between pauses of digital silence, then white noise at a true
    // SNR of 10 and 0 dB over the whole sequence. Measured F1: 0.986 clean, 0.964 at 10 dB,
    // 0.888 at 0 dB (webrtcvad's best mode on the evaluation's longer sequence: 0.93 and 0.84).
    let mut clean = Vec::new();
    let mut labels = Vec::new();
    for file in SPEECH_FILES {
        let (mut speech, _) = read_wav(file);
        let gain = (10f64.powf(-2.6) / (energy(&speech) / speech.len() as f64)).sqrt() as f32;
        speech.iter_mut().for_each(|x| *x *= gain);
        speech.resize(speech.len().div_ceil(256) * 256, 0.0);
        clean.extend(std::iter::repeat_n(0.0f32, 256 * 60));
        labels.extend(std::iter::repeat_n(false, 60));
        labels.extend(reference_labels(&speech));
        clean.extend(speech);
    }
    clean.extend(std::iter::repeat_n(0.0f32, 256 * 60));
    labels.extend(std::iter::repeat_n(false, 60));
    for (snr_db, min_f1) in [(None, 0.92), (Some(10.0), 0.90), (Some(0.0), 0.85)] {
        let audio = match snr_db {
            None => clean.clone(),
            Some(snr_db) => mix(&clean, &white_noise(clean.len(), 21), snr_db),
        };
        let mut analyser = SpeechAnalyser::new();
        analyser.analyse(&audio, 16000);
        let decisions = analyser.speech_frames();
        assert_eq!(decisions.len(), labels.len());
        let (mut tp, mut fp, mut fn_) = (0.0, 0.0, 0.0);
        for (&d, &l) in decisions.iter().zip(&labels) {
            tp += f64::from(u8::from(d && l));
            fp += f64::from(u8::from(d && !l));
            fn_ += f64::from(u8::from(!d && l));
        }
        let f1 = 2.0 * tp / (2.0 * tp + fp + fn_);
        println!("white noise at {snr_db:?} dB: F1 {f1:.3}");
        assert!(f1 >= min_f1, "{snr_db:?} dB: F1 {f1:.3}");
    }
}
