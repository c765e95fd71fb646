//! Test material: seeded noises, tones, mixing at a known SNR, WAV files and the speech corpus.

use std::path::Path;

use anyhow::{Context, Result, bail};
use speechmill_audio::resample::MonoResampler;

/// A seeded generator (SplitMix64): the same seed gives the same material on every machine.
pub struct Rng(u64);

impl Rng {
    /// A generator started from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1).
    pub fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }

    /// Gamma(shape, 1) by Marsaglia and Tsang, boosted for shape < 1.
    pub fn gamma(&mut self, shape: f64) -> f64 {
        if shape < 1.0 {
            let boost = self.uniform().powf(1.0 / shape);
            return self.gamma(shape + 1.0) * boost;
        }
        let d = shape - 1.0 / 3.0;
        let c = 1.0 / (9.0 * d).sqrt();
        loop {
            let x = self.normal();
            let v = (1.0 + c * x).powi(3);
            if v <= 0.0 {
                continue;
            }
            let u = self.uniform();
            if u.ln() < 0.5 * x * x + d - d * v + d * v.ln() {
                return d * v;
            }
        }
    }
}

/// Gaussian white noise with unit variance.
pub fn white_noise(len: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..len).map(|_| rng.normal() as f32).collect()
}

/// Pink (1/f) noise: Gaussian white noise through Paul Kellet's refined pink filter (within
/// 0.05 dB of -3 dB/octave from 10 Hz to Nyquist at 44.1 kHz; at 16 kHz the slope holds above
/// about 5 Hz).
pub fn pink_noise(len: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    let mut b = [0.0f64; 7];
    (0..len)
        .map(|_| {
            let white = rng.normal();
            b[0] = 0.99886 * b[0] + white * 0.0555179;
            b[1] = 0.99332 * b[1] + white * 0.0750759;
            b[2] = 0.96900 * b[2] + white * 0.1538520;
            b[3] = 0.86650 * b[3] + white * 0.3104856;
            b[4] = 0.55000 * b[4] + white * 0.5329522;
            b[5] = -0.7616 * b[5] - white * 0.0168980;
            let pink = b.iter().sum::<f64>() + white * 0.5362;
            b[6] = white * 0.115926;
            pink as f32
        })
        .collect()
}

/// A sine of `seconds` at `freq` Hz with peak `peak_dbfs`.
pub fn sine(freq: f64, rate: u32, seconds: f64, peak_dbfs: f64) -> Vec<f32> {
    let amplitude = 10f64.powf(peak_dbfs / 20.0);
    let len = (seconds * f64::from(rate)).round() as usize;
    (0..len)
        .map(|n| (amplitude * (2.0 * std::f64::consts::PI * freq * n as f64 / f64::from(rate)).sin()) as f32)
        .collect()
}

/// Sum of squares.
pub fn energy(samples: &[f32]) -> f64 {
    samples.iter().map(|&x| f64::from(x) * f64::from(x)).sum()
}

/// `speech + g * noise`, with `g` such that energy(speech) / energy(g * noise) is exactly
/// `snr_db` over the whole clip (the definition of true SNR used throughout).
pub fn mix_at_snr(speech: &[f32], noise: &[f32], snr_db: f64) -> Vec<f32> {
    let noise = &noise[..speech.len()];
    let gain = (energy(speech) / energy(noise) / 10f64.powf(snr_db / 10.0)).sqrt();
    speech.iter().zip(noise).map(|(&s, &n)| (f64::from(s) + gain * f64::from(n)) as f32).collect()
}

/// `samples` repeated (from `offset`) to `len` samples.
pub fn looped(samples: &[f32], offset: usize, len: usize) -> Vec<f32> {
    samples.iter().copied().cycle().skip(offset % samples.len().max(1)).take(len).collect()
}

/// Whole-clip resampling with speechmill's resampler.
pub fn resample(samples: &[f32], from: u32, to: u32) -> Vec<f32> {
    let mut resampler = MonoResampler::new(from, to).expect("evaluation rates are supported");
    let mut out = Vec::with_capacity(samples.len() * to as usize / from as usize + 1);
    resampler.process(samples, &mut out);
    resampler.finish(&mut out);
    out
}

/// Reads a WAV file as interleaved floats, with its channel count and rate.
pub fn read_wav(path: &Path) -> Result<(Vec<f32>, u16, u32)> {
    let mut reader = hound::WavReader::open(path).with_context(|| format!("opening {}", path.display()))?;
    let spec = reader.spec();
    let samples: Vec<f32> = match spec.sample_format {
        hound::SampleFormat::Float => reader.samples::<f32>().collect::<Result<_, _>>()?,
        hound::SampleFormat::Int => {
            let scale = (1u64 << (spec.bits_per_sample - 1)) as f32;
            reader.samples::<i32>().map(|s| s.map(|v| v as f32 / scale)).collect::<Result<_, _>>()?
        }
    };
    Ok((samples, spec.channels, spec.sample_rate))
}

/// Reads headerless signed 16-bit little-endian PCM.
pub fn read_raw_s16le(path: &Path) -> Result<Vec<f32>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(bytes.chunks_exact(2).map(|b| f32::from(i16::from_le_bytes([b[0], b[1]])) / 32768.0).collect())
}

/// Writes interleaved floats as a 32-bit float WAV.
pub fn write_wav_f32(path: &Path, samples: &[f32], channels: u16, rate: u32) -> Result<()> {
    let spec =
        hound::WavSpec { channels, sample_rate: rate, bits_per_sample: 32, sample_format: hound::SampleFormat::Float };
    let mut writer = hound::WavWriter::create(path, spec).with_context(|| format!("creating {}", path.display()))?;
    for &sample in samples {
        writer.write_sample(sample)?;
    }
    writer.finalize()?;
    Ok(())
}

/// Writes mono floats as 16-bit PCM WAV (what webrtcvad reads), clamped to full scale.
pub fn write_wav_i16(path: &Path, samples: &[f32], rate: u32) -> Result<()> {
    let spec =
        hound::WavSpec { channels: 1, sample_rate: rate, bits_per_sample: 16, sample_format: hound::SampleFormat::Int };
    let mut writer = hound::WavWriter::create(path, spec).with_context(|| format!("creating {}", path.display()))?;
    for &sample in samples {
        writer.write_sample((sample.clamp(-1.0, 1.0) * 32767.0).round() as i16)?;
    }
    writer.finalize()?;
    Ok(())
}

/// One real speech recording from `testdata/real-speech`.
pub struct SpeechClip {
    /// Short name used in the tables.
    pub name: String,
    /// Path relative to the data folder.
    pub file: String,
    /// Mono samples at `rate`.
    pub samples: Vec<f32>,
    /// Sample rate in Hz.
    pub rate: u32,
}

/// The human speech recordings of the repository's corpus (MANIFEST.tsv), in a fixed order.
/// The two probably synthesised `pytest-audioeval` clips are left out.
pub const SPEECH_FILES: [(&str, &str); 9] = [
    ("librivox-0870", "pocketsphinx-testdata/sense_and_sensibility_01_austen_64kb-0870.wav"),
    ("librivox-0880", "pocketsphinx-testdata/sense_and_sensibility_01_austen_64kb-0880.wav"),
    ("librivox-0890", "pocketsphinx-testdata/sense_and_sensibility_01_austen_64kb-0890.wav"),
    ("cards-001", "pocketsphinx-testdata/cards_001.wav"),
    ("cards-005", "pocketsphinx-testdata/cards_005.wav"),
    ("goforward", "pocketsphinx-testdata/goforward.raw"),
    ("alsa-front-center", "alsa-utils/Front_Center.wav"),
    ("alsa-front-left", "alsa-utils/Front_Left.wav"),
    ("alsa-side-right", "alsa-utils/Side_Right.wav"),
];

/// Loads one corpus file as mono at its own rate (`goforward.raw` is s16le 16 kHz).
pub fn load_clip(data: &Path, name: &str, file: &str) -> Result<SpeechClip> {
    let path = data.join(file);
    let (samples, rate) = if file.ends_with(".raw") {
        (read_raw_s16le(&path)?, 16000)
    } else {
        let (samples, channels, rate) = read_wav(&path)?;
        if channels != 1 {
            bail!("{} is not mono", path.display());
        }
        (samples, rate)
    };
    Ok(SpeechClip { name: name.to_owned(), file: file.to_owned(), samples, rate })
}

/// Every clip of [`SPEECH_FILES`].
pub fn load_corpus(data: &Path) -> Result<Vec<SpeechClip>> {
    SPEECH_FILES.iter().map(|(name, file)| load_clip(data, name, file)).collect()
}
