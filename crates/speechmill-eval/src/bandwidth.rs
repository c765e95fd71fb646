//! Bandwidth: telephone-band speech must read as narrow-band, full-band speech must not.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};
use speechmill_audio::measure::BandwidthMeter;

use crate::signals::{load_corpus, read_wav, resample, write_wav_f32};
use crate::tools::Tools;

/// A clip is called narrow-band when its bandwidth reads below this (what
/// `gate.min_bandwidth_hz = 5000` would reject).
const NARROWBAND_BELOW_HZ: f64 = 5000.0;

fn bandwidth(samples: &[f32], rate: u32) -> Option<f64> {
    let mut meter = BandwidthMeter::new(rate);
    meter.add(samples);
    meter.finish()
}

/// Converts `input` to a mono float WAV at `rate` with ffmpeg's default resampler.
fn ffmpeg_to(input: &Path, output: &Path, rate: u32) -> Result<(Vec<f32>, u32)> {
    let status = Command::new("ffmpeg")
        .args(["-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-i"])
        .arg(input)
        .args(["-ac", "1", "-ar", &rate.to_string(), "-c:a", "pcm_f32le"])
        .arg(output)
        .status()
        .context("running ffmpeg")?;
    if !status.success() {
        bail!("ffmpeg could not convert {}", input.display());
    }
    let (samples, _, rate) = read_wav(output)?;
    Ok((samples, rate))
}

/// Measures and writes the bandwidth table.
pub fn run(tools: &Tools) -> Result<String> {
    let corpus = load_corpus(&tools.data)?;
    // (material, path, rate, bandwidth)
    let mut narrow: Vec<(String, String, u32, Option<f64>)> = Vec::new();
    let mut full: Vec<(String, String, u32, Option<f64>)> = Vec::new();
    for clip in &corpus {
        full.push((clip.name.clone(), "as recorded".to_owned(), clip.rate, bandwidth(&clip.samples, clip.rate)));
        if clip.rate != 16000 {
            let at_16k = resample(&clip.samples, clip.rate, 16000);
            full.push((clip.name.clone(), "ours to 16 kHz".to_owned(), 16000, bandwidth(&at_16k, 16000)));
        }
        let at_8k = resample(&clip.samples, clip.rate, 8000);
        let file_8k = tools.work_file(&format!("bandwidth-{}-8k.wav", clip.name));
        write_wav_f32(&file_8k, &at_8k, 1, 8000)?;
        for rate in [16000, 48000] {
            let up = resample(&at_8k, 8000, rate);
            narrow.push((clip.name.clone(), "8 kHz, ours up".to_owned(), rate, bandwidth(&up, rate)));
            let (up, _) =
                ffmpeg_to(&file_8k, &tools.work_file(&format!("bandwidth-{}-8k-{rate}.wav", clip.name)), rate)?;
            narrow.push((clip.name.clone(), "8 kHz, ffmpeg up".to_owned(), rate, bandwidth(&up, rate)));
        }
    }
    for (name, file) in [
        ("librivox-0870 G.711 A-law", "derived/librivox0870_8k_alaw.wav"),
        ("librivox-0870 8-bit", "derived/librivox0870_8k_u8.wav"),
    ] {
        for rate in [16000, 48000] {
            let output = tools.work_file(&format!("bandwidth-{}-{rate}.wav", name.replace(' ', "_")));
            let (up, _) = ffmpeg_to(&tools.data.join(file), &output, rate)?;
            narrow.push((name.to_owned(), "8 kHz file, ffmpeg up".to_owned(), rate, bandwidth(&up, rate)));
        }
    }
    let is_narrow = |value: &Option<f64>| value.is_some_and(|hz| hz < NARROWBAND_BELOW_HZ);
    let narrow_hits = narrow.iter().filter(|row| is_narrow(&row.3)).count();
    let full_misses = full.iter().filter(|row| is_narrow(&row.3)).count();
    let mut out = String::from("## Bandwidth\n\n");
    out.push_str(&format!(
        "Ours: `BandwidthMeter` (highest frequency within 50 dB of the long-term spectral peak). A clip is called \
         narrow-band when it reads below {NARROWBAND_BELOW_HZ:.0} Hz. Telephone-band material: every human recording \
         downsampled to 8 kHz by our resampler, then upsampled to 16 and 48 kHz by ours and by ffmpeg's default \
         resampler, plus the corpus's G.711 A-law and 8-bit 8 kHz files upsampled by ffmpeg.\n\n\
         **Telephone-band speech read as narrow-band: {narrow_hits} of {} ({:.0} %; target ≥ 95 %). Full-band speech \
         read as narrow-band: {full_misses} of {} (target: none).**\n\n\
         | material | path | rate | bandwidth Hz | narrow-band |\n|---|---|---|---|---|\n",
        narrow.len(),
        100.0 * narrow_hits as f64 / narrow.len() as f64,
        full.len(),
    ));
    for (name, path, rate, value) in narrow.iter().chain(&full) {
        out.push_str(&format!(
            "| {name} | {path} | {rate} | {} | {} |\n",
            value.map_or("-".to_owned(), |v| format!("{v:.0}")),
            if is_narrow(value) { "yes" } else { "no" }
        ));
    }
    out.push('\n');
    Ok(out)
}
