//! Known-answer tests through the whole binary: signals whose measurements are known.

mod common;

use common::*;

/// A 1 kHz sine at -20 dBFS peak: peak -20.00 dBFS, RMS -23.01 dBFS, and (EBU Tech 3341: a 1 kHz
/// tone's K-weighted level equals its unweighted level) integrated loudness -23.0 LUFS.
#[test]
fn a_sine_at_a_known_level_measures_what_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let rate = 48_000;
    let amplitude = 0.1f32;
    let samples: Vec<f32> = sine(1000.0, f64::from(amplitude), rate, 3.0);
    write_wav(&dir.path().join("sine.wav"), &samples, rate, true);
    let out = dir.path().join("out");
    let output = process(&[dir.path().join("sine.wav").to_str().unwrap(), "--no-gate"], &out);
    assert_exit(&output, 0);
    let rows = read_jsonl(&out.join("manifest.jsonl"));
    let row = &rows[0];
    assert!((number(row, "peak_dbfs") + 20.0).abs() < 0.01, "{row:#?}");
    assert!((number(row, "rms_dbfs") + 23.01).abs() < 0.01, "{row:#?}");
    assert!((number(row, "loudness_lufs") + 23.0).abs() < 0.1, "{row:#?}");
    assert!((number(row, "duration_s") - 3.0).abs() < 1e-9);
    assert_eq!(row["num_samples"], 48_000);
    assert!(number(row, "dc_offset").abs() < 1e-4);
    assert_eq!(row["clipping_ratio"], 0.0);
}

/// Standardising keeps a tone's frequency and level: a 440 Hz sine at 44.1 kHz comes out at
/// 16 kHz with the same period and, with normalisation off, the same RMS (+-0.05 dB).
#[test]
fn standardising_keeps_frequency_and_level() {
    let dir = tempfile::tempdir().unwrap();
    let rate = 44_100;
    let samples: Vec<f32> = sine(440.0, 0.5, rate, 2.0);
    write_wav(&dir.path().join("tone.wav"), &samples, rate, true);
    let out = dir.path().join("out");
    let output = process(
        &[dir.path().join("tone.wav").to_str().unwrap(), "--no-gate", "--loudness-mode", "off", "--format", "wav"],
        &out,
    );
    assert_exit(&output, 0);
    let (standard, out_rate) = read_wav(&out.join("audio/tone.wav"));
    assert_eq!(out_rate, 16_000);
    assert_eq!(standard.len(), 32_000);
    // Skip the edges, where the resampler's filter sees the clip's start and end.
    let middle = &standard[1600..30_400];
    let rms = (middle.iter().map(|s| f64::from(*s).powi(2)).sum::<f64>() / middle.len() as f64).sqrt();
    let expected = 0.5 / 2f64.sqrt();
    assert!((20.0 * (rms / expected).log10()).abs() < 0.05, "rms {rms} vs {expected}");
    // Frequency: count rising zero crossings over the middle: 440 per second.
    let crossings = middle.windows(2).filter(|pair| pair[0] < 0.0 && pair[1] >= 0.0).count() as f64;
    let seconds = middle.len() as f64 / 16_000.0;
    assert!((crossings / seconds - 440.0).abs() < 1.0, "{} Hz", crossings / seconds);
}

/// A tone above the output's Nyquist frequency (11 kHz at 48 kHz into 16 kHz) must not alias
/// into the band: what comes out is at least 60 dB below what went in.
#[test]
fn resampling_suppresses_what_would_alias() {
    let dir = tempfile::tempdir().unwrap();
    let rate = 48_000;
    let samples: Vec<f32> = sine(11_000.0, 0.5, rate, 2.0);
    write_wav(&dir.path().join("high.wav"), &samples, rate, true);
    let out = dir.path().join("out");
    let output = process(
        &[dir.path().join("high.wav").to_str().unwrap(), "--no-gate", "--loudness-mode", "off", "--format", "wav"],
        &out,
    );
    assert_exit(&output, 0);
    let (standard, _) = read_wav(&out.join("audio/high.wav"));
    let middle = &standard[1600..standard.len() - 1600];
    let peak = middle.iter().fold(0f32, |peak, s| peak.max(s.abs()));
    // 16-bit output: a fully suppressed tone leaves at most a few LSB of rounding.
    assert!(20.0 * (f64::from(peak) / 0.5).log10() < -60.0, "alias peak {peak}");
}
