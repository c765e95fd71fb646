//! Fuzzes one clip end to end: `speechmill_pipeline::process_clip` (decode, validate, resample,
//! loudness, levels, bandwidth, speech activity, SNR, normalisation, FLAC encoding) on a file
//! holding the input bytes, with the gate's defaults.
//!
//! Any escaping panic, hang, or allocation beyond libFuzzer's limits is a finding; so is an
//! accepted clip with a non-finite measurement.

#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use speechmill_pipeline::clip::{ClipInput, process_clip};
use speechmill_pipeline::config::PipelineConfig;

/// One scratch file per fuzzing process (libFuzzer runs inputs one at a time).
fn scratch_path() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| std::env::temp_dir().join(format!("speechmill-fuzz-{}.bin", std::process::id())))
}

fuzz_target!(
    init: {
        if std::env::var_os("SPEECHMILL_FUZZ_STRICT_PANICS").is_none() {
            // See the decode target: panics the decoder catches are production behaviour.
            std::panic::set_hook(Box::new(|_| {}));
        }
    },
    |data: &[u8]| {
        let path = scratch_path();
        std::fs::write(path, data).expect("write the scratch file");
        let config = PipelineConfig::default();
        let input = ClipInput::new(path);
        if let Ok(processed) = process_clip(&input, &config) {
            let measurements = float_measurements(&processed.measurements);
            for (name, value) in measurements {
                assert!(value.is_finite(), "{name} is {value} for an accepted clip");
            }
        }
    }
);

/// The floating-point measurements of an accepted clip, by name.
fn float_measurements(m: &speechmill_pipeline::Measurements) -> Vec<(&'static str, f64)> {
    [
        ("duration_s", m.duration_s),
        ("peak_dbfs", m.peak_dbfs),
        ("rms_dbfs", m.rms_dbfs),
        ("loudness_lufs", m.loudness_lufs),
        ("clipping_ratio", m.clipping_ratio),
        ("dc_offset", m.dc_offset),
        ("downmix_gain_db", m.downmix_gain_db),
        ("speech_ratio", m.speech_ratio),
        ("snr_db", m.snr_db),
        ("bandwidth_hz", m.bandwidth_hz),
        ("gain_db", m.gain_db),
        ("output_loudness_lufs", m.output_loudness_lufs),
        ("output_peak_dbfs", m.output_peak_dbfs),
    ]
    .into_iter()
    .filter_map(|(name, value)| value.map(|value| (name, value)))
    .collect()
}
