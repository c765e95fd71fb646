//! The per-clip time limit and panic isolation: a clip that runs too long is rejected as
//! `timeout`, the run carries on with the others, and exits with code 3.

mod common;

use common::{assert_exit, read_jsonl, repo, speechmill};

fn run_with(env: &[(&str, &str)], inputs: &[&std::path::Path], out: &std::path::Path) -> std::process::Output {
    let mut command = speechmill();
    command.arg("process").args(inputs).arg("--out").arg(out).arg("--quiet").arg("--no-gate");
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().expect("run speechmill")
}

#[test]
fn a_clip_over_the_time_limit_is_rejected_as_timeout_and_exits_3() {
    let dir = tempfile::tempdir().unwrap();
    let input = repo().join("testdata/real-speech/derived/librivox0870.flac");
    let output = run_with(&[("SPEECHMILL_STANDARDISE__CLIP_TIMEOUT_SECONDS", "0.000001")], &[&input], dir.path());
    assert_exit(&output, 3);
    let rejected = read_jsonl(&dir.path().join("rejected.jsonl"));
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0]["reason"], "timeout");
    assert!(rejected[0]["message"].as_str().unwrap().contains("librivox0870.flac"));
}

/// A clip stuck where `process_clip` cannot check the clock (inside one decoder call) is
/// abandoned by the worker's watchdog after the limit plus its grace period; the other clips
/// are processed. The hang is simulated by a debug-build hook.
#[test]
#[cfg(debug_assertions)]
fn a_stuck_clip_is_abandoned_by_the_watchdog_and_the_run_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = dir.path().join("inputs");
    std::fs::create_dir(&inputs).unwrap();
    let clip = repo().join("testdata/real-speech/derived/librivox0870.flac");
    std::fs::copy(&clip, inputs.join("a_stuck.flac")).unwrap();
    std::fs::copy(repo().join("testdata/real-speech/derived/librivox0870.ogg"), inputs.join("b_fine.ogg")).unwrap();
    let out = dir.path().join("out");
    let started = std::time::Instant::now();
    let output = run_with(
        &[
            ("SPEECHMILL_STANDARDISE__CLIP_TIMEOUT_SECONDS", "0.5"),
            ("SPEECHMILL_DEBUG_HANG_SOURCE", "a_stuck"),
            ("SPEECHMILL_RUN__JOBS", "1"),
        ],
        &[&inputs],
        &out,
    );
    assert_exit(&output, 3);
    assert!(started.elapsed().as_secs() < 60, "the run did not wait for the stuck clip");
    let rejected = read_jsonl(&out.join("rejected.jsonl"));
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0]["reason"], "timeout");
    assert!(rejected[0]["source"].as_str().unwrap().ends_with("a_stuck.flac"));
    let accepted = read_jsonl(&out.join("manifest.jsonl"));
    assert_eq!(accepted.len(), 1, "the clip after the stuck one was processed on a new clip thread");
    assert!(accepted[0]["source"].as_str().unwrap().ends_with("b_fine.ogg"));
}

/// Very long files: a clip over `run.memory_limit_seconds` is kept in a scratch file rather than
/// in memory, with exactly the same results and audio; nothing is left in the scratch folder.
#[test]
fn a_clip_over_the_memory_limit_gives_the_same_dataset() {
    let inputs = [
        repo().join("testdata/real-speech/derived/librivox0870.flac"),
        repo().join("testdata/real-speech/derived/librivox0870_first2s_48k_stereo_s24.wav"),
    ];
    let inputs: Vec<&std::path::Path> = inputs.iter().map(|path| path.as_path()).collect();
    let dir = tempfile::tempdir().unwrap();
    let (in_memory, spilled) = (dir.path().join("memory"), dir.path().join("spilled"));
    assert_exit(&run_with(&[], &inputs, &in_memory), 0);
    assert_exit(&run_with(&[("SPEECHMILL_RUN__MEMORY_LIMIT_SECONDS", "0.25")], &inputs, &spilled), 0);
    let rows = |out: &std::path::Path| read_jsonl(&out.join("manifest.jsonl"));
    assert_eq!(rows(&in_memory), rows(&spilled));
    for row in rows(&in_memory) {
        let audio = row["audio_path"].as_str().unwrap();
        assert_eq!(
            std::fs::read(in_memory.join(audio)).unwrap(),
            std::fs::read(spilled.join(audio)).unwrap(),
            "{audio}"
        );
    }
    let scratch = spilled.join(".speechmill/scratch");
    assert_eq!(std::fs::read_dir(&scratch).unwrap().count(), 0, "no scratch file is left behind");
}
