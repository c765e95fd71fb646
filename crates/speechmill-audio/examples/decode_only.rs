//! Decode-only floor for `bench/run`: decodes every file given (folders are walked, one level
//! deep is enough for the benchmark corpora) with speechmill's streaming decoder and nothing
//! else, then prints one JSON line with the file count, the decoded audio seconds and the wall
//! time. Process start-up is included in the figure `bench/run` takes, as for every peer.
//!
//! Usage: `cargo run --release -p speechmill-audio --example decode_only -- PATH...`

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Instant;

use speechmill_audio::decode::StreamDecoder;

fn main() {
    let started = Instant::now();
    let mut files: Vec<PathBuf> = Vec::new();
    for argument in std::env::args_os().skip(1) {
        collect(Path::new(&argument), &mut files);
    }
    files.sort();
    let mut audio_seconds = 0.0f64;
    let mut failed = 0usize;
    let mut checksum = 0.0f64;
    for path in &files {
        match decode(path) {
            Ok((seconds, sum)) => {
                audio_seconds += seconds;
                checksum += sum;
            }
            Err(error) => {
                eprintln!("decode_only: {}: {error}", path.display());
                failed += 1;
            }
        }
    }
    println!(
        "{{\"files\": {}, \"failed\": {failed}, \"audio_seconds\": {audio_seconds:.3}, \"wall_seconds\": {:.3}, \"checksum\": {checksum:.3}}}",
        files.len(),
        started.elapsed().as_secs_f64()
    );
    if failed > 0 {
        std::process::exit(1);
    }
}

fn collect(path: &Path, files: &mut Vec<PathBuf>) {
    if path.is_dir() {
        let Ok(entries) = std::fs::read_dir(path) else { return };
        for entry in entries.flatten() {
            collect(&entry.path(), files);
        }
    } else if path.is_file() {
        files.push(path.to_path_buf());
    }
}

/// Decodes one file to the end; returns its duration and a sum over its samples, which keeps
/// the decoding from being optimised away and costs one add per sample.
fn decode(path: &Path) -> Result<(f64, f64), Box<dyn std::error::Error>> {
    let mut decoder = StreamDecoder::open(Box::new(File::open(path)?), None)?;
    let info = decoder.info().clone();
    let mut samples = 0u64;
    let mut sum = 0.0f32;
    while let Some(block) = decoder.next_block()? {
        samples += block.len() as u64;
        sum += block.iter().sum::<f32>();
    }
    let frames = samples / u64::from(info.channels.max(1));
    Ok((frames as f64 / f64::from(info.sample_rate), f64::from(sum)))
}
