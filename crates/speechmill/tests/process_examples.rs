//! The README's main job, end to end: the real recordings in `examples/` become a dataset.

mod common;

use std::process::Command;

use common::*;
use serde_json::Value;

#[test]
fn the_example_recordings_become_a_gated_dataset() {
    let out = tempfile::tempdir().unwrap();
    // Without --quiet, as the README runs it: a summary on standard output.
    let output = speechmill()
        .args(["process", "examples/audio", "--out"])
        .arg(out.path())
        .current_dir(repo())
        .output()
        .expect("run speechmill");
    assert_exit(&output, 0);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("11 clips:") && stdout.contains("rejected duplicate: 1"), "summary printed: {stdout}");

    let accepted = read_jsonl(&out.path().join("manifest.jsonl"));
    let rejected = read_jsonl(&out.path().join("rejected.jsonl"));
    assert_eq!(accepted.len() + rejected.len(), 11, "every input has exactly one outcome");

    // The lossless FLAC copy comes first by path, so the WAV it was made from is the duplicate.
    let duplicate = row_by(&rejected, "reason", "duplicate");
    assert_eq!(duplicate["id"], "sense_and_sensibility_01_austen_64kb-0870");
    assert_eq!(duplicate["duplicate_of"], "librivox0870");
    assert!(duplicate["message"].as_str().unwrap().contains("sense_and_sensibility_01_austen_64kb-0870.wav"));

    // Pink noise with no speech is rejected by the gate, with its measurements.
    let noise = row_by(&rejected, "id", "Noise");
    assert_eq!(noise["stage"], "gate");
    assert!(matches!(noise["reason"].as_str(), Some("no_speech") | Some("low_snr")), "{noise:#?}");
    assert!(noise["duration_s"].as_f64().is_some());

    for row in &accepted {
        let audio = out.path().join(row["audio_path"].as_str().unwrap());
        assert!(audio.is_file(), "{} exists", audio.display());
        assert_eq!(row["sample_rate"], 16000);
        for key in [
            "peak_dbfs",
            "rms_dbfs",
            "loudness_lufs",
            "speech_ratio",
            "snr_db",
            "bandwidth_hz",
            "clipping_ratio",
            "dc_offset",
        ] {
            assert!(row[key].is_number(), "{key} measured for {}: {row:#?}", row["id"]);
        }
        let output_loudness = number(row, "output_loudness_lufs");
        assert!((output_loudness + 23.0).abs() < 0.5 || number(row, "output_peak_dbfs") > -1.05, "{row:#?}");
        assert!(number(row, "output_peak_dbfs") <= -0.99, "peak limit holds: {row:#?}");
    }
    // No audio is left behind for rejected clips.
    let audio_files = std::fs::read_dir(out.path().join("audio")).unwrap().count();
    assert_eq!(audio_files, accepted.len());

    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("report.json")).unwrap()).unwrap();
    assert_eq!(report["counts"]["clips"], 11);
    assert_eq!(report["counts"]["accepted"], accepted.len());
    assert_eq!(report["counts"]["rejected_by_reason"]["duplicate"], 1);
    assert!(report["config_hash"].as_str().unwrap().len() == 64);
    assert!(report["hours_in"].as_f64().unwrap() > report["hours_out"].as_f64().unwrap());
    assert!(report["real_time_factor"].as_f64().unwrap() > 0.0);
    assert!(report["speechmill_version"].is_string() && report["output_schema_version"] == 1);
    let card = std::fs::read_to_string(out.path().join("README.md")).unwrap();
    assert!(card.contains("| `snr_db` |") && card.contains(&format!("{} of 11 clips accepted", accepted.len())));

    // Hugging Face `datasets` loads the Parquet shards, and every row decodes to 16 kHz audio of
    // the manifest's length (run when the test script provides a Python with `datasets`).
    match std::env::var_os("SPEECHMILL_PYTHON") {
        Some(python) => {
            let checker = repo().join("crates/speechmill-pipeline/tests/check_hf_dataset.py");
            let status = Command::new(python)
                .arg(checker)
                .arg(out.path())
                .arg(accepted.len().to_string())
                .status()
                .expect("run the Python checker");
            assert!(status.success(), "datasets could not load the output");
        }
        None => eprintln!(
            "SPEECHMILL_PYTHON is not set: skipped loading the Parquet with `datasets` (scripts/test.sh sets it)"
        ),
    }
}

#[test]
fn manifests_carry_their_columns_and_give_raw_formats_per_file() {
    let out = tempfile::tempdir().unwrap();
    let output = process(&["examples/raw/manifest.csv", "--no-gate"], out.path());
    assert_exit(&output, 0);
    let accepted = read_jsonl(&out.path().join("manifest.jsonl"));
    assert_eq!(accepted.len(), 2, "{:?}", String::from_utf8_lossy(&output.stderr));
    let forward = row_by(&accepted, "id", "goforward");
    assert_eq!(forward["transcript"], "go forward ten meters");
    assert_eq!(forward["speaker"], "cmu");
    assert_eq!(forward["source"], "goforward.raw");
    assert_eq!(forward["source_sample_rate"], 16000);
    assert!((number(forward, "duration_s") - 2.786).abs() < 0.02);
    let webrtc = row_by(&accepted, "id", "test-audio");
    assert_eq!(webrtc["source_sample_rate"], 8000);
    assert!((number(webrtc, "duration_s") - 0.906).abs() < 0.02);
}

#[test]
fn headerless_audio_without_a_format_is_rejected_with_advice() {
    let out = tempfile::tempdir().unwrap();
    let output = process(&["examples/raw/goforward.raw"], out.path());
    assert_exit(&output, 0);
    assert!(output.stdout.is_empty(), "--quiet prints no summary: {}", String::from_utf8_lossy(&output.stdout));
    let rejected = read_jsonl(&out.path().join("rejected.jsonl"));
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0]["reason"], "unrecognised_format");
    let message = rejected[0]["message"].as_str().unwrap();
    assert!(message.contains("goforward.raw") && message.contains("--raw-format"), "{message}");
}
