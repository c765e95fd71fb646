//! `speechmill process --enhance` on the example recordings: enhancement changes what is
//! delivered, never which clips are accepted, and a clip whose enhancement fails is delivered.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::*;
use serde_json::{Map, Value};

/// Every clip's verdict: `accepted`, or the rejection's reason.
fn verdicts(out: &Path) -> BTreeMap<String, String> {
    let mut verdicts = BTreeMap::new();
    for row in read_jsonl(&out.join("manifest.jsonl")) {
        verdicts.insert(row["id"].as_str().unwrap().to_string(), "accepted".to_string());
    }
    for row in read_jsonl(&out.join("rejected.jsonl")) {
        verdicts.insert(row["id"].as_str().unwrap().to_string(), row["reason"].as_str().unwrap().to_string());
    }
    verdicts
}

#[test]
fn enhancement_never_changes_the_gates_verdicts() {
    let dir = tempfile::tempdir().unwrap();
    let (plain, enhanced) = (dir.path().join("plain"), dir.path().join("enhanced"));
    assert_exit(&process(&["examples/audio"], &plain), 0);
    assert_exit(&process(&["examples/audio", "--enhance"], &enhanced), 0);

    let verdicts_plain = verdicts(&plain);
    assert_eq!(verdicts_plain.len(), 11);
    assert_eq!(verdicts(&enhanced), verdicts_plain, "the same clips accepted, the same reasons");

    let plain_rows = read_jsonl(&plain.join("manifest.jsonl"));
    let enhanced_rows = read_jsonl(&enhanced.join("manifest.jsonl"));
    assert!(!enhanced_rows.is_empty());
    for enhanced_row in &enhanced_rows {
        let id = enhanced_row["id"].as_str().unwrap();
        let plain_row = row_by(&plain_rows, "id", id);
        assert!(!plain_row.contains_key("enhancement"), "{id}: no enhancement field without --enhance");
        // The example recordings are clean speech: the Wiener filter applies to every one.
        assert_eq!(enhanced_row["enhancement"], "applied", "{id}: {enhanced_row:#?}");
        let (before, after) =
            (enhanced_row["snr_db"].as_f64().unwrap(), enhanced_row["snr_enhanced_db"].as_f64().unwrap());
        assert!(after >= before, "{id}: estimated SNR {before} -> {after} dB");
        for key in ["snr_db", "speech_ratio", "loudness_lufs", "duration_s", "content_hash"] {
            assert_eq!(enhanced_row[key], plain_row[key], "{id}: {key} describes the input");
        }
        // The delivered audio is normalised like any other.
        let output_loudness = enhanced_row["output_loudness_lufs"].as_f64().unwrap();
        let output_peak = enhanced_row["output_peak_dbfs"].as_f64().unwrap();
        assert!((output_loudness + 23.0).abs() < 0.5 || output_peak > -1.05, "{id}: {enhanced_row:#?}");
        assert!(output_peak <= -0.99, "{id}: peak limit holds");
        let (plain_audio, enhanced_audio) = (
            std::fs::read(plain.join(plain_row["audio_path"].as_str().unwrap())).unwrap(),
            std::fs::read(enhanced.join(enhanced_row["audio_path"].as_str().unwrap())).unwrap(),
        );
        assert_ne!(plain_audio, enhanced_audio, "{id}: the enhanced audio is delivered");
    }
    // Clips the gate rejects never reach the stage; duplicates are decided after every clip was
    // processed (in input order), so theirs carry the outcome of the enhancement they had.
    for rejected in read_jsonl(&enhanced.join("rejected.jsonl")) {
        assert_eq!(rejected.contains_key("enhancement"), rejected["reason"] == "duplicate", "{rejected:#?}");
    }
    let report: Value = serde_json::from_str(&std::fs::read_to_string(enhanced.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["config"]["enhance"], serde_json::json!({"enabled": true, "method": "wiener"}));
    let card = std::fs::read_to_string(enhanced.join("README.md")).unwrap();
    assert!(card.contains("| `enhancement` |") && card.contains("| `snr_enhanced_db` |"), "{card}");
    let plain_card = std::fs::read_to_string(plain.join("README.md")).unwrap();
    assert!(!plain_card.contains("| `enhancement` |"), "{plain_card}");
}

/// A clip whose enhancement panics (the debug-build hook) is delivered standardised, flagged
/// `failed`; the run carries on and exits 0, since the clip itself was delivered.
#[test]
#[cfg(debug_assertions)]
fn a_clip_whose_enhancement_fails_is_delivered_and_the_run_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let (plain, enhanced) = (dir.path().join("plain"), dir.path().join("enhanced"));
    assert_exit(&process(&["examples/audio/cmu"], &plain), 0);
    let output = speechmill()
        .args(["process", "examples/audio/cmu", "--enhance", "--quiet", "--out"])
        .arg(&enhanced)
        .env("SPEECHMILL_DEBUG_FAIL_ENHANCEMENT_SOURCE", "cards_001")
        .env("SPEECHMILL_LOG__FORMAT", "json")
        .current_dir(repo())
        .output()
        .expect("run speechmill");
    assert_exit(&output, 0);
    assert_eq!(verdicts(&enhanced), verdicts(&plain));

    let rows = read_jsonl(&enhanced.join("manifest.jsonl"));
    let failed = row_by(&rows, "id", "cards_001");
    assert_eq!(failed["enhancement"], "failed", "{failed:#?}");
    assert!(failed.get("snr_enhanced_db").is_none());
    let warnings: Vec<&str> = failed["warnings"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert!(warnings.iter().any(|warning| warning.contains("injected panic")), "{warnings:?}");
    let plain_rows = read_jsonl(&plain.join("manifest.jsonl"));
    let read =
        |out: &Path, row: &Map<String, Value>| std::fs::read(out.join(row["audio_path"].as_str().unwrap())).unwrap();
    assert_eq!(read(&enhanced, failed), read(&plain, row_by(&plain_rows, "id", "cards_001")), "the standardised audio");
    assert_eq!(row_by(&rows, "id", "cards_005")["enhancement"], "applied");

    let stderr = String::from_utf8_lossy(&output.stderr);
    let logged = stderr.lines().filter_map(|line| serde_json::from_str::<Value>(line).ok()).any(|line| {
        line["message"] == "enhancement failed; the clip is delivered unenhanced" && line["log.level"] == "warn"
    });
    assert!(logged, "a warning is logged: {stderr}");
}

#[test]
fn enhancement_is_configured_by_file_environment_and_flag() {
    let show = |args: &[&str], env: &[(&str, &str)]| {
        let mut command = speechmill();
        command.args(["config", "show", "--as", "json"]).args(args);
        for (key, value) in env {
            command.env(key, value);
        }
        let output = command.output().expect("run speechmill");
        assert_exit(&output, 0);
        serde_json::from_slice::<Value>(&output.stdout).unwrap()["enhance"].clone()
    };
    assert_eq!(show(&[], &[]), serde_json::json!({"enabled": false, "method": "wiener"}));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("speechmill.toml");
    std::fs::write(&file, "[enhance]\nenabled = true\nmethod = \"rnnoise\"\n").unwrap();
    assert_eq!(
        show(&["--config", file.to_str().unwrap()], &[]),
        serde_json::json!({"enabled": true, "method": "rnnoise"})
    );
    assert_eq!(show(&["--enhance"], &[]), serde_json::json!({"enabled": true, "method": "wiener"}));
    assert_eq!(
        show(&[], &[("SPEECHMILL_ENHANCE__ENABLED", "true"), ("SPEECHMILL_ENHANCE__METHOD", "rnnoise")]),
        serde_json::json!({"enabled": true, "method": "rnnoise"})
    );
    let output = speechmill().args(["config", "show"]).env("SPEECHMILL_ENHANCE__METHOD", "spectral").output().unwrap();
    assert_exit(&output, 2);
    assert!(String::from_utf8_lossy(&output.stderr).contains("spectral"), "{output:?}");
}
