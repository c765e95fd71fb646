//! Helpers shared by the end-to-end tests of the `speechmill` binary.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{Map, Value};

pub mod node;

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("repository root")
}

/// A command running the built binary, with no inherited `SPEECHMILL_*` configuration and a
/// result cache of its own (an empty `XDG_CACHE_HOME`), so no run depends on another's cache
/// and none touches the user's. Tests of the cache name theirs with `--cache-dir`.
pub fn speechmill() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_speechmill"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("SPEECHMILL_") {
            command.env_remove(key);
        }
    }
    command.env("XDG_CACHE_HOME", fresh_cache_home());
    command
}

/// A new folder under this test binary's part of the target's temporary folder; the binary's
/// folders from earlier runs are removed on first use.
fn fresh_cache_home() -> PathBuf {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let root = ROOT.get_or_init(|| {
        let binary = std::env::current_exe().ok().and_then(|exe| exe.file_stem().map(|stem| stem.to_owned()));
        let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("xdg-cache").join(binary.unwrap_or_default());
        let _ = std::fs::remove_dir_all(&root);
        root
    });
    root.join(NEXT.fetch_add(1, Ordering::SeqCst).to_string())
}

/// Runs `speechmill process ARGS... --out OUT --quiet` and returns its output.
pub fn process(args: &[&str], out: &Path) -> Output {
    speechmill()
        .arg("process")
        .args(args)
        .arg("--out")
        .arg(out)
        .arg("--quiet")
        .current_dir(repo())
        .output()
        .expect("run speechmill")
}

/// Panics with the process's output unless it exited with `code`.
pub fn assert_exit(output: &Output, code: i32) {
    assert_eq!(
        output.status.code(),
        Some(code),
        "exit status {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Reads a JSON-lines file into objects.
pub fn read_jsonl(path: &Path) -> Vec<Map<String, Value>> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
    text.lines()
        .map(|line| match serde_json::from_str(line) {
            Ok(Value::Object(row)) => row,
            other => panic!("{}: not an object: {other:?}", path.display()),
        })
        .collect()
}

/// Writes mono 16-bit or float WAV.
pub fn write_wav(path: &Path, samples: &[f32], rate: u32, float: bool) {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: rate,
        bits_per_sample: if float { 32 } else { 16 },
        sample_format: if float { hound::SampleFormat::Float } else { hound::SampleFormat::Int },
    };
    let mut writer = hound::WavWriter::create(path, spec).expect("create wav");
    for &sample in samples {
        if float {
            writer.write_sample(sample).expect("write");
        } else {
            writer.write_sample((sample * 32767.0).round().clamp(-32768.0, 32767.0) as i16).expect("write");
        }
    }
    writer.finalize().expect("finalize wav");
}

/// `seconds` of a sine at `frequency_hz` with peak `amplitude`. The phase is computed in f64: in f32
/// `2 pi f n` loses whole radians after a few seconds and the "sine" turns into phase noise.
pub fn sine(frequency_hz: f64, amplitude: f64, rate: u32, seconds: f64) -> Vec<f32> {
    let frames = (seconds * f64::from(rate)).round() as u32;
    (0..frames)
        .map(|n| (amplitude * (std::f64::consts::TAU * frequency_hz * f64::from(n) / f64::from(rate)).sin()) as f32)
        .collect()
}

/// Reads a 16-bit mono WAV as floats.
pub fn read_wav(path: &Path) -> (Vec<f32>, u32) {
    let mut reader = hound::WavReader::open(path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
    let rate = reader.spec().sample_rate;
    let samples = match reader.spec().sample_format {
        hound::SampleFormat::Int => {
            reader.samples::<i16>().map(|sample| f32::from(sample.unwrap()) / 32768.0).collect()
        }
        hound::SampleFormat::Float => reader.samples::<f32>().map(Result::unwrap).collect(),
    };
    (samples, rate)
}

/// The row whose `key` equals `value`.
pub fn row_by<'a>(rows: &'a [Map<String, Value>], key: &str, value: &str) -> &'a Map<String, Value> {
    rows.iter()
        .find(|row| row.get(key).and_then(Value::as_str) == Some(value))
        .unwrap_or_else(|| panic!("no row with {key} = {value}: {rows:#?}"))
}

/// A numeric field.
pub fn number(row: &Map<String, Value>, key: &str) -> f64 {
    row.get(key).and_then(Value::as_f64).unwrap_or_else(|| panic!("{key} missing or not a number in {row:#?}"))
}
