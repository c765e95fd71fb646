//! The result cache of `speechmill process`, through the binary on the real recordings in
//! `examples/audio`: a second run takes every clip from the cache and writes byte-identical
//! outputs; a changed setting recomputes exactly the clips it affects; a new version recomputes;
//! a damaged entry or cache file is a miss with a warning, never a failed clip.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::*;

/// Clips in `examples/audio`.
const CLIPS: u64 = 11;
/// (hits, misses) of a run with an empty cache: one clip is an exact copy of an earlier one
/// (in input order, with one worker), whose entry it finds.
const COLD: (u64, u64) = (1, CLIPS - 1);

/// Runs `speechmill process examples/audio --out OUT --cache-dir CACHE --jobs 1 ARGS...` (with
/// the summary; one worker so that the duplicate's hit is deterministic) and returns its output.
fn run(out: &Path, cache: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = speechmill();
    command
        .arg("process")
        .arg("examples/audio")
        .arg("--out")
        .arg(out)
        .arg("--cache-dir")
        .arg(cache)
        .args(["--jobs", "1"])
        .args(args);
    for (key, value) in env {
        command.env(key, value);
    }
    let output = command.current_dir(repo()).output().expect("run speechmill");
    assert_exit(&output, 0);
    output
}

/// The (hits, misses) the summary reports.
fn cache_counts(output: &Output) -> (u64, u64) {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .find_map(|line| line.trim().strip_prefix("result cache: "))
        .unwrap_or_else(|| panic!("no result cache line in the summary:\n{stdout}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    (words[0].parse().unwrap(), words[2].parse().unwrap())
}

/// Every file of the dataset whose bytes must not depend on the cache (the report and the
/// dataset card hold the wall time and the command).
fn dataset_files(out: &Path) -> Vec<PathBuf> {
    let mut files = vec![PathBuf::from("manifest.jsonl"), PathBuf::from("rejected.jsonl")];
    for folder in ["audio", "data"] {
        let mut names: Vec<PathBuf> = std::fs::read_dir(out.join(folder))
            .unwrap()
            .map(|entry| Path::new(folder).join(entry.unwrap().file_name()))
            .collect();
        names.sort();
        files.extend(names);
    }
    files
}

fn assert_identical_datasets(expected: &Path, actual: &Path) {
    let files = dataset_files(expected);
    assert_eq!(files, dataset_files(actual), "the same files");
    assert!(files.iter().any(|file| file.starts_with("data")), "a Parquet shard");
    assert!(files.iter().any(|file| file.starts_with("audio")), "{files:?}");
    for file in files {
        let (left, right) = (std::fs::read(expected.join(&file)).unwrap(), std::fs::read(actual.join(&file)).unwrap());
        assert!(left == right, "{} differs between {} and {}", file.display(), expected.display(), actual.display());
    }
}

#[test]
fn a_second_run_takes_every_clip_from_the_cache_and_writes_byte_identical_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let uncached = dir.path().join("uncached");
    let output = run(&uncached, &cache, &["--no-cache"], &[]);
    assert!(!String::from_utf8_lossy(&output.stdout).contains("result cache:"));
    assert!(!cache.exists(), "--no-cache neither reads nor writes the cache");

    let first = dir.path().join("first");
    assert_eq!(cache_counts(&run(&first, &cache, &[], &[])), COLD);
    assert!(cache.join("results.sqlite").is_file());
    let second = dir.path().join("second");
    assert_eq!(cache_counts(&run(&second, &cache, &[], &[])), (CLIPS, 0));

    // Hit, miss and no cache at all give the same bytes: rows, rejections, FLAC and Parquet.
    assert_identical_datasets(&uncached, &first);
    assert_identical_datasets(&first, &second);
    let rejected = read_jsonl(&second.join("rejected.jsonl"));
    assert!(rejected.iter().any(|row| row["reason"] == "duplicate"), "duplicates are decided after the cache");
    assert!(rejected.iter().any(|row| row["reason"] == "no_speech"), "gate rejections come from the cache too");

    // `cache stats` sees the entries; `cache clear` empties the cache, and the next run misses.
    let stats = speechmill().args(["cache", "stats", "--cache-dir"]).arg(&cache).output().unwrap();
    assert_exit(&stats, 0);
    let text = String::from_utf8_lossy(&stats.stdout);
    // Ten distinct contents: the eleventh clip is an exact duplicate of another.
    assert!(text.contains("entries: 10"), "{text}");
    assert!(text.contains(&format!("version {}", env!("CARGO_PKG_VERSION"))), "{text}");
    let clear = speechmill().args(["cache", "clear", "--cache-dir"]).arg(&cache).output().unwrap();
    assert_exit(&clear, 0);
    assert!(String::from_utf8_lossy(&clear.stdout).contains("removed 10 entries"));
    assert_eq!(cache_counts(&run(&dir.path().join("third"), &cache, &[], &[])), COLD);
}

#[test]
fn a_changed_setting_recomputes_exactly_the_clips_it_affects() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let out = |name: &str| dir.path().join(name);
    assert_eq!(cache_counts(&run(&out("base"), &cache, &[], &[])), COLD);

    // Another loudness target changes every clip's audio: everything is recomputed (but for the
    // duplicate, which finds its twin's new entry).
    let louder = run(&out("louder"), &cache, &["--target-lufs", "-20"], &[]);
    assert_eq!(cache_counts(&louder), COLD);
    let base_rows = read_jsonl(&out("base").join("manifest.jsonl"));
    let louder_rows = read_jsonl(&out("louder").join("manifest.jsonl"));
    let loudness = |rows: &[serde_json::Map<String, serde_json::Value>]| number(&rows[0], "output_loudness_lufs");
    assert!((loudness(&louder_rows) - loudness(&base_rows) - 3.0).abs() < 0.5, "recomputed, not served stale");

    // A stricter gate is checked again on the cached measurements: nothing is recomputed, and the
    // result is the one a run without the cache gives.
    let strict = run(&out("strict"), &cache, &["--min-snr-db", "25"], &[]);
    assert_eq!(cache_counts(&strict), (CLIPS, 0));
    run(&out("strict-uncached"), &cache, &["--min-snr-db", "25", "--no-cache"], &[]);
    assert_identical_datasets(&out("strict-uncached"), &out("strict"));

    // Without the gate, only the clip it used to reject (no speech) was never encoded: it alone
    // is recomputed.
    let ungated = run(&out("ungated"), &cache, &["--no-gate"], &[]);
    assert_eq!(cache_counts(&ungated), (CLIPS - 1, 1));
    run(&out("ungated-uncached"), &cache, &["--no-gate", "--no-cache"], &[]);
    assert_identical_datasets(&out("ungated-uncached"), &out("ungated"));
}

#[test]
fn a_new_version_recomputes_every_clip() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    assert_eq!(cache_counts(&run(&dir.path().join("a"), &cache, &[], &[])), COLD);
    let next = [("SPEECHMILL_DEBUG_CACHE_VERSION", "99.0.0")];
    assert_eq!(cache_counts(&run(&dir.path().join("b"), &cache, &[], &next)), COLD);
    assert_eq!(cache_counts(&run(&dir.path().join("c"), &cache, &[], &next)), (CLIPS, 0));
    assert_identical_datasets(&dir.path().join("a"), &dir.path().join("c"));
    let stats = speechmill().args(["cache", "stats", "--cache-dir"]).arg(&cache).output().unwrap();
    let text = String::from_utf8_lossy(&stats.stdout);
    assert!(text.contains("version 99.0.0: 10 entries"), "{text}");
    assert!(text.contains("entries: 20"), "{text}");
}

#[test]
fn damaged_entries_and_an_unreadable_cache_file_are_misses_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let reference = dir.path().join("reference");
    assert_eq!(cache_counts(&run(&reference, &cache, &[], &[])), COLD);

    // Damage two entries: one value that is not JSON, one accepted clip's audio cut short.
    let damaged = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
        use sqlx::Connection;
        let url = format!("sqlite://{}", cache.join("results.sqlite").display());
        let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
        let keys: Vec<String> = sqlx::query_scalar("SELECT key FROM result_cache WHERE audio IS NOT NULL ORDER BY key")
            .fetch_all(&mut conn)
            .await
            .unwrap();
        sqlx::query("UPDATE result_cache SET value = '{not json' WHERE key = ?")
            .bind(&keys[0])
            .execute(&mut conn)
            .await
            .unwrap();
        sqlx::query("UPDATE result_cache SET audio = substr(audio, 1, 100) WHERE key = ?")
            .bind(&keys[1])
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
        keys.len()
    });
    assert!(damaged >= 2);
    let again = dir.path().join("again");
    let output = run(&again, &cache, &[], &[]);
    assert_eq!(cache_counts(&output), (CLIPS - 2, 2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("unreadable result cache entry"), "{stderr}");
    assert!(stderr.contains("audio is missing or damaged"), "{stderr}");
    assert_identical_datasets(&reference, &again);
    // The misses stored fresh entries: the next run hits everything.
    assert_eq!(cache_counts(&run(&dir.path().join("healed"), &cache, &[], &[])), (CLIPS, 0));

    // A cache file that is not a database: the run goes on without the cache.
    let broken = dir.path().join("broken-cache");
    std::fs::create_dir(&broken).unwrap();
    std::fs::write(broken.join("results.sqlite"), vec![0x5a; 8192]).unwrap();
    let without = dir.path().join("without");
    let mut command = speechmill();
    command.args(["process", "examples/audio", "--out"]).arg(&without).arg("--cache-dir").arg(&broken);
    let output = command.current_dir(repo()).output().unwrap();
    assert_exit(&output, 0);
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot open the result cache"));
    assert_identical_datasets(&reference, &without);
}
