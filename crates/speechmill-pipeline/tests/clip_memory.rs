//! Bounded memory: a clip whose standardised signal goes to a scratch file gives exactly the
//! result it gives in memory, and leaves nothing behind.

use std::path::{Path, PathBuf};

use speechmill_pipeline::clip::{ClipInput, EncodedAudio, process_clip};
use speechmill_pipeline::config::{AudioFormat, PipelineConfig};

fn testdata(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata").join(path)
}

fn no_gate() -> PipelineConfig {
    let mut config = PipelineConfig::default();
    config.gate.enabled = false;
    config
}

#[test]
fn a_spilled_clip_gives_the_same_measurements_and_audio_as_one_in_memory() {
    for (file, format) in [
        ("real-speech/derived/librivox0870.flac", AudioFormat::Flac),
        ("real-speech/derived/librivox0870_44k1_stereo_cbr128.mp3", AudioFormat::Wav),
    ] {
        let mut config = no_gate();
        config.standardise.format = format;
        let path = testdata(file);
        let in_memory = process_clip(&ClipInput::new(&path), &config).expect("processes in memory");
        assert!(matches!(in_memory.audio, EncodedAudio::Memory(_)), "{file}: a 7 s clip stays in memory");

        let scratch = tempfile::tempdir().unwrap();
        let input = ClipInput { scratch_dir: Some(scratch.path()), memory_limit_seconds: 0.5, ..ClipInput::new(&path) };
        let spilled = process_clip(&input, &config).expect("processes from the scratch file");
        assert!(matches!(spilled.audio, EncodedAudio::File(_)), "{file}: over the limit, encoded into a file");
        assert_eq!(spilled.measurements, in_memory.measurements, "{file}");
        assert_eq!(spilled.content_hash, in_memory.content_hash, "{file}");

        let destination = scratch.path().join("out.audio");
        spilled.audio.persist(&destination).unwrap();
        let written = std::fs::read(&destination).unwrap();
        assert_eq!(written, in_memory.audio.into_bytes().unwrap(), "{file}: the same encoded bytes");
        // The spilled signal had no name and the encoded file was renamed: only the output is left.
        let left: Vec<_> = std::fs::read_dir(scratch.path()).unwrap().map(|entry| entry.unwrap().file_name()).collect();
        assert_eq!(left, vec![std::ffi::OsString::from("out.audio")], "{file}");
    }
}

#[test]
fn a_clip_the_gate_rejects_is_not_encoded_and_leaves_no_scratch_file() {
    let mut config = PipelineConfig::default();
    config.gate.max_duration_s = Some(1.0);
    let scratch = tempfile::tempdir().unwrap();
    let path = testdata("real-speech/derived/librivox0870.flac");
    let input = ClipInput { scratch_dir: Some(scratch.path()), memory_limit_seconds: 0.5, ..ClipInput::new(&path) };
    let rejection = process_clip(&input, &config).expect_err("too long for the gate");
    assert_eq!(rejection.reason.as_str(), "too_long");
    assert_eq!(rejection.stage, speechmill_pipeline::Stage::Gate);
    assert!(rejection.measurements.gain_db.is_some(), "measured before the gate");
    assert!(rejection.measurements.output_peak_dbfs.is_none(), "not encoded");
    assert_eq!(std::fs::read_dir(scratch.path()).unwrap().count(), 0);
}
