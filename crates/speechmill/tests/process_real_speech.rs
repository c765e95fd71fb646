//! Every real recording in the repository goes through with the right duration, and the same
//! utterance in nine codecs standardises to the same duration and loudness.

mod common;

use std::collections::HashMap;
use std::fs::File;

use common::*;
use speechmill_audio::decode::StreamDecoder;
use speechmill_audio::loudness::LoudnessMeter;

/// Durations from `testdata/real-speech/MANIFEST.tsv` (ffprobe, rounded to 1 ms).
fn manifest_durations() -> HashMap<String, f64> {
    let text = std::fs::read_to_string(repo().join("testdata/real-speech/MANIFEST.tsv")).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split('\t').collect();
    let file = header.iter().position(|name| *name == "file").unwrap();
    let duration = header.iter().position(|name| *name == "duration_s").unwrap();
    lines
        .map(|line| line.split('\t').collect::<Vec<_>>())
        .map(|fields| (fields[file].to_string(), fields[duration].parse().unwrap()))
        .collect()
}

#[test]
fn all_real_speech_goes_through_with_correct_durations() {
    let dir = tempfile::tempdir().unwrap();
    let durations = manifest_durations();
    let base = repo().join("testdata/real-speech");
    let mut manifest = String::new();
    for file in durations.keys() {
        let raw_format = match file.as_str() {
            "pocketsphinx-testdata/goforward.raw" => "s16le,16000,1",
            "webrtcvad/test-audio.raw" => "s16le,8000,1",
            _ => "",
        };
        manifest.push_str(
            &serde_json::json!({ "path": base.join(file), "raw_format": raw_format, "name": file }).to_string(),
        );
        manifest.push('\n');
    }
    let list = dir.path().join("all.jsonl");
    std::fs::write(&list, manifest).unwrap();
    let out = dir.path().join("out");
    assert_exit(&process(&[list.to_str().unwrap(), "--no-gate"], &out), 0);
    let rejected = read_jsonl(&out.join("rejected.jsonl"));
    assert!(rejected.is_empty(), "nothing rejected: {rejected:#?}");
    let accepted = read_jsonl(&out.join("manifest.jsonl"));
    assert_eq!(accepted.len(), durations.len());
    for row in &accepted {
        let name = row["name"].as_str().unwrap();
        // MANIFEST.tsv gives ffprobe's container duration to 1 ms, which for the derived files
        // counts encoder delay and padding (7.2 s for the VBR MP3). Every derived file is the same
        // 7.1 s of speech (2 s for the excerpt), so those are held to the true length.
        let expected = if name.contains("first2s") {
            2.0
        } else if name.starts_with("derived/") {
            7.1
        } else {
            durations[name]
        };
        let duration = number(row, "duration_s");
        assert!((duration - expected).abs() <= 0.02, "{name}: {duration} s, expected {expected} s");
    }
}

/// Integrated loudness of an output file, measured independently of the manifest.
fn measured_loudness(path: &std::path::Path) -> (f64, f64) {
    let mut decoder = StreamDecoder::open(Box::new(File::open(path).unwrap()), None).unwrap();
    let rate = decoder.info().sample_rate;
    let mut meter = LoudnessMeter::new(1, rate);
    let mut frames = 0usize;
    while let Some(block) = decoder.next_block().unwrap() {
        meter.add(block);
        frames += block.len();
    }
    (meter.integrated_lufs().unwrap(), frames as f64 / f64::from(rate))
}

#[test]
fn nine_codecs_of_one_utterance_standardise_alike() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    assert_exit(&process(&["testdata/real-speech/derived", "--no-gate"], &out), 0);
    let accepted = read_jsonl(&out.join("manifest.jsonl"));
    assert_eq!(accepted.len(), 9, "{:#?}", read_jsonl(&out.join("rejected.jsonl")));
    for row in &accepted {
        let id = row["id"].as_str().unwrap();
        let expected = if id.contains("first2s") { 2.0 } else { 7.1 };
        let duration = number(row, "duration_s");
        assert!((duration - expected).abs() <= 0.02, "{id}: decoded duration {duration} s, expected {expected} s");
        let (loudness, seconds) = measured_loudness(&out.join(row["audio_path"].as_str().unwrap()));
        assert!((seconds - duration).abs() <= 0.001, "{id}: output length {seconds} s vs {duration} s");
        assert!((loudness + 23.0).abs() <= 0.5, "{id}: standardised loudness {loudness} LUFS");
    }
}
