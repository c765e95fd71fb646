//! Decodes the real speech files and the bad-input corpus in `testdata/` and checks rate,
//! channels and length against the manifests.

use std::fs::File;
use std::path::{Path, PathBuf};

use speechmill_audio::decode::{DecodeError, RawFormat, SourceInfo, StreamDecoder};

/// Allowed length error for real files, as the brief states it.
const DURATION_TOLERANCE_S: f64 = 0.020;

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata")
}

/// What a full decode produced.
#[derive(Debug)]
struct Decoded {
    info: SourceInfo,
    frames: u64,
    skipped_packets: u64,
}

fn decode_file(path: &Path, raw: Option<RawFormat>) -> Result<Decoded, DecodeError> {
    let file = File::open(path).unwrap_or_else(|error| panic!("open {}: {error}", path.display()));
    let mut decoder = StreamDecoder::open(Box::new(file), raw)?;
    let channels = usize::from(decoder.info().channels);
    let mut samples = 0usize;
    while let Some(block) = decoder.next_block()? {
        assert_eq!(block.len() % channels, 0, "{}: block of partial frames", path.display());
        assert!(!block.is_empty(), "{}: empty block", path.display());
        samples += block.len();
    }
    Ok(Decoded {
        info: decoder.info().clone(),
        frames: (samples / channels) as u64,
        skipped_packets: decoder.skipped_packets(),
    })
}

/// Rows of a tab-separated file with a header line, as maps from column name to value.
fn read_tsv(path: &Path) -> Vec<std::collections::HashMap<String, String>> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split('\t').collect();
    lines
        .filter(|line| !line.trim().is_empty())
        .map(|line| header.iter().zip(line.split('\t')).map(|(k, v)| (k.to_string(), v.to_string())).collect())
        .collect()
}

struct ManifestRow {
    file: String,
    container: String,
    codec: String,
    sample_rate: u32,
    channels: u16,
    duration_s: f64,
}

fn manifest() -> Vec<ManifestRow> {
    read_tsv(&testdata().join("real-speech/MANIFEST.tsv"))
        .into_iter()
        .map(|row| ManifestRow {
            file: row["file"].clone(),
            container: row["container"].clone(),
            codec: row["codec"].clone(),
            sample_rate: row["sample_rate"].parse().unwrap(),
            channels: row["channels"].parse().unwrap(),
            duration_s: row["duration_s"].parse().unwrap(),
        })
        .collect()
}

/// Our container name for the manifest's (ffprobe's) container name.
fn expected_container(manifest_container: &str) -> &str {
    match manifest_container {
        "mov,mp4,m4a,3gp,3g2,mj2" => "mp4",
        other => other,
    }
}

/// The true length of a derived file: they are all the same 7.1 s utterance, except the one cut
/// to its first 2 s. The manifest's duration column is ffprobe's, which for the LAME VBR MP3
/// (7.200 s) and the Opus file (7.106 s) includes encoder delay or padding.
fn true_duration_s(row: &ManifestRow) -> f64 {
    if !row.file.starts_with("derived/") {
        return row.duration_s;
    }
    if row.file.contains("first2s") { 2.0 } else { 7.1 }
}

fn check_manifest_row(row: &ManifestRow) {
    let path = testdata().join("real-speech").join(&row.file);
    let decoded = decode_file(&path, None).unwrap_or_else(|error| panic!("{}: {error}", row.file));
    let duration_s = decoded.frames as f64 / f64::from(decoded.info.sample_rate);
    let expected_s = true_duration_s(row);
    println!(
        "{:<60} {:>5}/{:<10} {:>6} Hz {} ch {:.4} s (expected {:.3} s, skipped {})",
        row.file,
        decoded.info.container,
        decoded.info.codec,
        decoded.info.sample_rate,
        decoded.info.channels,
        duration_s,
        expected_s,
        decoded.skipped_packets
    );
    assert_eq!(decoded.info.sample_rate, row.sample_rate, "{}: sample rate", row.file);
    assert_eq!(decoded.info.channels, row.channels, "{}: channels", row.file);
    assert_eq!(decoded.info.container, expected_container(&row.container), "{}", row.file);
    assert_eq!(decoded.info.codec, row.codec, "{}: codec", row.file);
    assert!(
        (duration_s - expected_s).abs() <= DURATION_TOLERANCE_S,
        "{}: decoded {duration_s:.4} s, expected {expected_s:.3} s",
        row.file
    );
    assert_eq!(decoded.skipped_packets, 0, "{}: skipped packets", row.file);
}

#[test]
fn every_derived_file_decodes_to_the_true_length() {
    let rows = manifest();
    let mut checked = 0;
    for entry in std::fs::read_dir(testdata().join("real-speech/derived")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name.ends_with(".sh") {
            continue;
        }
        let key = format!("derived/{name}");
        let row = rows.iter().find(|row| row.file == key).unwrap_or_else(|| panic!("{key} not in MANIFEST.tsv"));
        check_manifest_row(row);
        checked += 1;
    }
    assert_eq!(checked, 9, "the nine derived files");
}

#[test]
fn real_wav_and_oga_files_match_the_manifest() {
    let rows: Vec<ManifestRow> = manifest()
        .into_iter()
        .filter(|row| !row.file.starts_with("derived/"))
        .filter(|row| row.file.ends_with(".wav") || row.file.ends_with(".oga"))
        .collect();
    assert!(rows.len() >= 13, "expected the manifest's WAV and OGA rows, found {}", rows.len());
    for row in &rows {
        check_manifest_row(row);
    }
}

#[test]
fn headerless_raw_files_need_and_use_an_explicit_format() {
    let cases = [
        ("pocketsphinx-testdata/goforward.raw", "s16le,16000,1", 89160 / 2),
        ("webrtcvad/test-audio.raw", "s16le,8000,1", 14490 / 2),
    ];
    for (file, format, expected_frames) in cases {
        let path = testdata().join("real-speech").join(file);
        let error = decode_file(&path, None).expect_err("headerless PCM must not be guessed");
        assert_eq!(error.reason_code(), "unrecognised_format", "{file}: {error}");
        assert!(error.to_string().contains("--raw-format"), "{file}: hint missing in '{error}'");

        let raw: RawFormat = format.parse().unwrap();
        let decoded = decode_file(&path, Some(raw)).unwrap_or_else(|error| panic!("{file}: {error}"));
        assert_eq!(decoded.info.container, "raw");
        assert_eq!(decoded.info.codec, "pcm_s16le");
        assert_eq!(decoded.info.sample_rate, raw.sample_rate);
        assert_eq!(decoded.info.channels, 1);
        assert_eq!(decoded.frames, expected_frames, "{file}");
    }
}

#[test]
fn raw_pcm_matches_the_same_samples_decoded_from_wav() {
    // A WAV's data chunk reinterpreted as raw must give the samples symphonia gives for the WAV
    // (known answer for our own s16, u8 and G.711 A-law conversions).
    let cases = [
        ("pocketsphinx-testdata/cards_001.wav", "s16le,16000,1"),
        ("derived/librivox0870_8k_u8.wav", "u8,8000,1"),
        ("derived/librivox0870_8k_alaw.wav", "alaw,8000,1"),
    ];
    let collect = |source: Box<dyn speechmill_audio::MediaSource>, raw: Option<RawFormat>| {
        let mut decoder = StreamDecoder::open(source, raw).unwrap();
        let mut all = Vec::new();
        while let Some(block) = decoder.next_block().unwrap() {
            all.extend_from_slice(block);
        }
        all
    };
    for (file, format) in cases {
        let wav_path = testdata().join("real-speech").join(file);
        let bytes = std::fs::read(&wav_path).unwrap();
        let data_at = bytes.windows(4).position(|w| w == b"data").unwrap();
        let data_len = u32::from_le_bytes(bytes[data_at + 4..data_at + 8].try_into().unwrap()) as usize;
        let raw_bytes = bytes[data_at + 8..data_at + 8 + data_len].to_vec();

        let from_wav = collect(Box::new(File::open(&wav_path).unwrap()), None);
        let from_raw = collect(Box::new(std::io::Cursor::new(raw_bytes)), Some(format.parse().unwrap()));
        assert_eq!(from_wav.len(), from_raw.len(), "{file}");
        let max_difference = from_wav.iter().zip(&from_raw).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(max_difference <= 1e-6, "{file}: raw and WAV samples differ by {max_difference}");
    }
}

#[test]
fn empty_input_is_reported_as_empty_even_with_a_raw_format() {
    for raw in [None, Some("s16le,16000,1".parse().unwrap())] {
        let error = StreamDecoder::open(Box::new(std::io::Cursor::new(Vec::<u8>::new())), raw)
            .err()
            .expect("empty input must fail");
        assert_eq!(error.reason_code(), "empty");
    }
}

#[test]
fn truncated_flac_returns_what_was_decoded() {
    // Regression shape: a download cut off mid-stream.
    let bytes = std::fs::read(testdata().join("real-speech/derived/librivox0870.flac")).unwrap();
    let cut = bytes[..bytes.len() / 2].to_vec();
    let mut decoder = StreamDecoder::open(Box::new(std::io::Cursor::new(cut)), None).unwrap();
    let mut frames = 0;
    while let Some(block) = decoder.next_block().expect("truncation is not an error") {
        frames += block.len();
    }
    let seconds = frames as f64 / 16000.0;
    assert!((2.0..6.0).contains(&seconds), "decoded {seconds} s of a half file");
}

/// Outcome of one bad-input case.
#[derive(Debug)]
enum CaseOutcome {
    Pass(String),
    Fail(String),
}

/// Length tolerance for the bad-input cases: 1 % of the expected frames or 20 ms, whichever is
/// larger.
fn frames_close(decoded: u64, expected: u64, rate: u32) -> bool {
    let tolerance = (expected as f64 * 0.01).max(f64::from(rate) * DURATION_TOLERANCE_S);
    (decoded as f64 - expected as f64).abs() <= tolerance
}

fn run_case(row: &std::collections::HashMap<String, String>) -> CaseOutcome {
    let path = testdata().join("bad-inputs").join(&row["file"]);
    let action = row["expected_action"].as_str();
    let result = std::panic::catch_unwind(|| decode_file(&path, None));
    let Ok(result) = result else {
        return CaseOutcome::Fail("panicked".into());
    };
    let describe = |decoded: &Decoded| {
        format!(
            "{}/{} {} Hz {} ch {} frames, skipped {}",
            decoded.info.container,
            decoded.info.codec,
            decoded.info.sample_rate,
            decoded.info.channels,
            decoded.frames,
            decoded.skipped_packets
        )
    };
    let check_decoded = |decoded: &Decoded| -> CaseOutcome {
        let rate: u32 = row["expected_sample_rate"].parse().unwrap();
        let channels: u16 = row["expected_channels"].parse().unwrap();
        let frames: u64 = row["expected_frames_native"].parse().unwrap();
        let ok = decoded.info.sample_rate == rate
            && decoded.info.channels == channels
            && frames_close(decoded.frames, frames, rate);
        let text = format!("{} (expected {rate} Hz {channels} ch {frames} frames)", describe(decoded));
        if ok { CaseOutcome::Pass(text) } else { CaseOutcome::Fail(text) }
    };
    match (action, result) {
        ("decode" | "reject_or_sanitise", Ok(decoded)) => check_decoded(&decoded),
        ("decode", Err(error)) => CaseOutcome::Fail(format!("error {}: {error}", error.reason_code())),
        ("decode_or_reject", Ok(decoded)) => check_decoded(&decoded),
        ("decode_or_reject" | "reject_or_sanitise", Err(error)) => {
            CaseOutcome::Pass(format!("rejected {}: {error}", error.reason_code()))
        }
        ("reject" | "reject_empty", Ok(decoded)) => {
            CaseOutcome::Fail(format!("decoded instead of rejecting: {}", describe(&decoded)))
        }
        ("reject" | "reject_empty", Err(error)) => {
            let sensible = match row["file"].as_str() {
                file if file.contains("empty") => error.reason_code() == "empty",
                _ => matches!(error.reason_code(), "invalid_header" | "unrecognised_format"),
            };
            let text = format!("rejected {}: {error}", error.reason_code());
            if sensible { CaseOutcome::Pass(text) } else { CaseOutcome::Fail(text) }
        }
        (other, _) => CaseOutcome::Fail(format!("unknown expected_action {other}")),
    }
}

/// Cases that are known not to pass yet, with the reason (issue 3 tracks them).
const KNOWN_FAILURES: &[(&str, &str)] = &[];

#[test]
fn bad_inputs_decode_or_reject_as_the_corpus_expects() {
    let rows = read_tsv(&testdata().join("bad-inputs/CASES.tsv"));
    let mut unexpected = Vec::new();
    for row in &rows {
        let case = row["case_id"].as_str();
        if case == "W52" {
            // No file is shipped: it is made at test time with a non-UTF-8 name (a pipeline test).
            continue;
        }
        let outcome = run_case(row);
        let known = KNOWN_FAILURES.iter().find(|(id, _)| *id == case);
        match (&outcome, known) {
            (CaseOutcome::Pass(text), None) => println!("PASS {case} {text}"),
            (CaseOutcome::Fail(text), Some((_, why))) => {
                println!("KNOWN-FAIL {case} {text} ({why})")
            }
            (CaseOutcome::Fail(text), None) => {
                println!("FAIL {case} {text}");
                unexpected.push(format!("{case}: {text}"));
            }
            (CaseOutcome::Pass(text), Some(_)) => {
                println!("FIXED {case} {text}");
                unexpected.push(format!("{case} passes now: remove it from KNOWN_FAILURES"));
            }
        }
    }
    assert!(unexpected.is_empty(), "unexpected outcomes:\n{}", unexpected.join("\n"));
}

/// Decodes from an in-memory copy, optionally hiding seekability, and returns frames or the
/// reason code.
fn decode_bytes(bytes: Vec<u8>, seekable: bool, raw: Option<RawFormat>) -> Result<(SourceInfo, u64), &'static str> {
    let source: Box<dyn speechmill_audio::MediaSource> = if seekable {
        Box::new(std::io::Cursor::new(bytes))
    } else {
        Box::new(symphonia::core::io::ReadOnlySource::new(std::io::Cursor::new(bytes)))
    };
    let mut decoder = StreamDecoder::open(source, raw).map_err(|error| error.reason_code())?;
    let channels = u64::from(decoder.info().channels);
    let mut samples = 0u64;
    while let Some(block) = decoder.next_block().map_err(|error| error.reason_code())? {
        samples += block.len() as u64;
    }
    Ok((decoder.info().clone(), samples / channels))
}

#[test]
fn unseekable_sources_decode_like_seekable_ones() {
    // A pipe gives no length and cannot seek: probing must not lose the bytes it read.
    let real = testdata().join("real-speech");
    for file in ["derived/librivox0870.flac", "derived/librivox0870.opus", "derived/librivox0870_8k_alaw.wav"] {
        let bytes = std::fs::read(real.join(file)).unwrap();
        let seekable = decode_bytes(bytes.clone(), true, None).unwrap();
        let piped = decode_bytes(bytes, false, None).unwrap();
        assert_eq!(seekable.0, piped.0, "{file}");
        assert_eq!(seekable.1, piped.1, "{file}");
    }
    let raw_bytes = std::fs::read(real.join("pocketsphinx-testdata/goforward.raw")).unwrap();
    let raw = Some("s16le,16000,1".parse().unwrap());
    assert_eq!(decode_bytes(raw_bytes.clone(), false, raw).unwrap().1, raw_bytes.len() as u64 / 2);
    assert_eq!(decode_bytes(Vec::new(), false, raw).unwrap_err(), "empty");
    assert_eq!(decode_bytes(Vec::new(), false, None).unwrap_err(), "empty");
}

#[test]
fn truncated_and_corrupted_files_never_panic() {
    // Every derived file cut at several points and with bytes overwritten: decoding must
    // return (audio or an error), never panic or hang.
    let derived = testdata().join("real-speech/derived");
    let mut runs = 0;
    for entry in std::fs::read_dir(&derived).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|ext| ext == "sh") {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        for cut in [1, 4, 12, 44, 100, 1000, bytes.len() / 3, bytes.len() - 1] {
            let cut = cut.min(bytes.len());
            let outcome = std::panic::catch_unwind(|| decode_bytes(bytes[..cut].to_vec(), true, None));
            assert!(outcome.is_ok(), "{} cut at {cut} panicked", path.display());
            runs += 1;
        }
        // Deterministic pseudo-random corruption (xorshift), 1 byte in 97 overwritten.
        let mut state = 0x9e37_79b9_7f4a_7c15u64 ^ bytes.len() as u64;
        let mut corrupted = bytes.clone();
        for (index, byte) in corrupted.iter_mut().enumerate() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            if index > 64 && state.is_multiple_of(97) {
                *byte = (state >> 32) as u8;
            }
        }
        let outcome = std::panic::catch_unwind(|| decode_bytes(corrupted, true, None));
        assert!(outcome.is_ok(), "{} corrupted panicked", path.display());
        runs += 1;
    }
    assert!(runs > 50);
}

#[test]
fn random_bytes_are_unrecognised_or_raw() {
    let mut state = 0x1234_5678_9abc_def0u64;
    let noise: Vec<u8> = (0..50_000)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect();
    // Noise may contain sync-like patterns; it must be rejected or decoded, not crash.
    let outcome = decode_bytes(noise.clone(), true, None);
    if let Err(reason) = outcome {
        assert!(matches!(reason, "unrecognised_format" | "invalid_header" | "decode_error"), "{reason}");
    }
    let (info, frames) = decode_bytes(noise, true, Some("u8,8000,1".parse().unwrap()))
        .expect("noise with a raw format is raw audio unless something recognised it");
    assert!(frames > 0, "{info:?}");
}

#[test]
fn non_finite_float_samples_are_passed_through() {
    // Case W10: NaN at sample 100, +Inf at 200, -Inf at 300 and a 100-sample NaN run at 0.5 s.
    // Counting and rejecting them is the caller's job, so the decoder must not hide them.
    let path = testdata().join("bad-inputs/files/wav_f32_nan_inf.wav");
    let mut decoder = StreamDecoder::open(Box::new(File::open(path).unwrap()), None).unwrap();
    let mut all = Vec::new();
    while let Some(block) = decoder.next_block().unwrap() {
        all.extend_from_slice(block);
    }
    assert_eq!(all.len(), 16000);
    assert!(all[100].is_nan());
    assert_eq!(all[200], f32::INFINITY);
    assert_eq!(all[300], f32::NEG_INFINITY);
    assert_eq!(all.iter().filter(|sample| !sample.is_finite()).count(), 103);
}
