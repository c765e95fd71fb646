//! Killing a run at any moment (kill -9) and running the same command again gives the same
//! dataset as an uninterrupted run: nothing missing, nothing twice.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;

/// Builds a corpus of distinct clips from real speech: each file is one recording at its own gain,
/// plus a few exact copies so that duplicate decisions are exercised too.
fn build_corpus(dir: &Path) -> usize {
    let sources = [
        "testdata/real-speech/pocketsphinx-testdata/sense_and_sensibility_01_austen_64kb-0870.wav",
        "testdata/real-speech/pocketsphinx-testdata/sense_and_sensibility_01_austen_64kb-0880.wav",
        "testdata/real-speech/pocketsphinx-testdata/sense_and_sensibility_01_austen_64kb-0890.wav",
        "testdata/real-speech/pocketsphinx-testdata/cards_005.wav",
    ];
    let recordings: Vec<(Vec<f32>, u32)> = sources.iter().map(|source| read_wav(&repo().join(source))).collect();
    let mut count = 0;
    for copy in 0..30 {
        for (index, (samples, rate)) in recordings.iter().enumerate() {
            let gain = 0.3 + 0.02 * copy as f32;
            let scaled: Vec<f32> = samples.iter().map(|sample| sample * gain).collect();
            write_wav(&dir.join(format!("clip_{copy:03}_{index}.wav")), &scaled, *rate, false);
            count += 1;
        }
    }
    for copy in 0..3 {
        std::fs::copy(dir.join("clip_000_0.wav"), dir.join(format!("copy_{copy}.wav"))).unwrap();
        count += 1;
    }
    count
}

fn assert_same_dataset(a: &Path, b: &Path) {
    for file in ["manifest.jsonl", "rejected.jsonl"] {
        let left = std::fs::read_to_string(a.join(file)).unwrap();
        let right = std::fs::read_to_string(b.join(file)).unwrap();
        assert!(left == right, "{file} differs between the resumed and the uninterrupted run");
    }
    let mut names: Vec<_> =
        std::fs::read_dir(a.join("audio")).unwrap().map(|entry| entry.unwrap().file_name()).collect();
    names.sort();
    let mut other: Vec<_> =
        std::fs::read_dir(b.join("audio")).unwrap().map(|entry| entry.unwrap().file_name()).collect();
    other.sort();
    assert_eq!(names, other);
    for name in names {
        assert!(
            std::fs::read(a.join("audio").join(&name)).unwrap() == std::fs::read(b.join("audio").join(&name)).unwrap()
        );
    }
}

#[test]
fn kill_nine_then_resume_gives_the_uninterrupted_result() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus");
    std::fs::create_dir(&corpus).unwrap();
    let clips = build_corpus(&corpus);

    let reference = dir.path().join("reference");
    assert_exit(&process(&[corpus.to_str().unwrap(), "--jobs", "2"], &reference), 0);
    let reference_rows =
        read_jsonl(&reference.join("manifest.jsonl")).len() + read_jsonl(&reference.join("rejected.jsonl")).len();
    assert_eq!(reference_rows, clips);

    let resumed = dir.path().join("resumed");
    let mut kills = 0;
    // Kill twice at different moments, then let the third run finish.
    for wait_for_audio_files in [5, 40] {
        let mut child = speechmill()
            .args(["process", corpus.to_str().unwrap(), "--jobs", "2", "--quiet", "--out"])
            .arg(&resumed)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let written = std::fs::read_dir(resumed.join("audio")).map(|entries| entries.count()).unwrap_or(0);
            if written >= wait_for_audio_files || Instant::now() > deadline {
                break;
            }
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            kills += 1;
        }
        let _ = child.wait();
    }
    assert!(kills >= 1, "the run finished before it could be killed: make the corpus larger");
    assert!(!resumed.join("manifest.jsonl").exists() || kills < 2, "a killed run wrote no final manifest");

    assert_exit(&process(&[corpus.to_str().unwrap(), "--jobs", "2"], &resumed), 0);
    assert_same_dataset(&resumed, &reference);

    // Running a finished run again changes nothing.
    assert_exit(&process(&[corpus.to_str().unwrap(), "--jobs", "1"], &resumed), 0);
    assert_same_dataset(&resumed, &reference);
}

#[test]
fn a_folder_holding_another_run_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    assert_exit(&process(&["examples/audio/cmu"], &out), 0);
    let other_inputs = process(&["examples/audio/alsa"], &out);
    assert_exit(&other_inputs, 2);
    assert!(String::from_utf8_lossy(&other_inputs.stderr).contains("different inputs"));
    let other_config = process(&["examples/audio/cmu", "--min-snr-db", "20"], &out);
    assert_exit(&other_config, 2);
    assert!(String::from_utf8_lossy(&other_config.stderr).contains("different configuration"));
}
