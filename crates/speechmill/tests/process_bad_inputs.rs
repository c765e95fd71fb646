//! Ingest that nothing breaks: every kind of file that broke other audio loaders goes through
//! `speechmill process` and is decoded right or rejected with a reason that names the problem.
//!
//! The cases are `testdata/bad-inputs/CASES.tsv` (each a kind, with the behaviour expected) plus
//! kinds made here from real recordings: truncation at many byte offsets, wrong and missing
//! extensions, header-only files, chained and multiplexed Ogg, many channels and a file name that
//! is not UTF-8. One run processes them all (with `--no-gate`, so every decodable file is
//! accepted with its measurements); each test below checks one kind and is named after it.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use common::{assert_exit, process, read_jsonl, repo};
use serde_json::{Map, Value};

/// Length tolerance: 1 % of the expected duration or 20 ms, whichever is larger.
fn duration_close(actual: f64, expected: f64) -> bool {
    (actual - expected).abs() <= (expected * 0.01).max(0.020)
}

/// Where the corpus run left its rows, by input file name.
struct CorpusRun {
    _dir: tempfile::TempDir,
    accepted: HashMap<String, Map<String, Value>>,
    rejected: HashMap<String, Map<String, Value>>,
}

/// The outcome of one input of the corpus run.
enum Outcome<'a> {
    Accepted(&'a Map<String, Value>),
    Rejected(&'a Map<String, Value>),
}

impl CorpusRun {
    fn outcome(&self, file_name: &str) -> Outcome<'_> {
        match (self.accepted.get(file_name), self.rejected.get(file_name)) {
            (Some(row), None) => Outcome::Accepted(row),
            (None, Some(row)) => Outcome::Rejected(row),
            (accepted, rejected) => panic!("{file_name}: accepted {accepted:?}, rejected {rejected:?}"),
        }
    }

    fn accepted(&self, file_name: &str) -> &Map<String, Value> {
        match self.outcome(file_name) {
            Outcome::Accepted(row) => row,
            Outcome::Rejected(row) => panic!("{file_name} was rejected: {row:?}"),
        }
    }

    fn rejected(&self, file_name: &str) -> &Map<String, Value> {
        match self.outcome(file_name) {
            Outcome::Rejected(row) => row,
            Outcome::Accepted(row) => panic!("{file_name} was accepted: {row:?}"),
        }
    }
}

fn f64_of(row: &Map<String, Value>, key: &str) -> Option<f64> {
    row.get(key).and_then(Value::as_f64)
}

fn file_name_of(source: &str) -> String {
    source.rsplit('/').next().unwrap_or(source).to_string()
}

fn cases() -> &'static HashMap<String, HashMap<String, String>> {
    static CASES: OnceLock<HashMap<String, HashMap<String, String>>> = OnceLock::new();
    CASES.get_or_init(|| {
        let text = std::fs::read_to_string(repo().join("testdata/bad-inputs/CASES.tsv")).unwrap();
        let mut lines = text.lines();
        let header: Vec<&str> = lines.next().unwrap().split('\t').collect();
        lines
            .map(|line| {
                let row: HashMap<String, String> =
                    header.iter().zip(line.split('\t')).map(|(k, v)| (k.to_string(), v.to_string())).collect();
                (row["case_id"].clone(), row)
            })
            .collect()
    })
}

fn case_file(case: &str) -> String {
    file_name_of(&cases()[case]["file"])
}

fn real(path: &str) -> PathBuf {
    repo().join("testdata/real-speech").join(path)
}

/// Ogg pages of a file: (serial, is_first_page, bytes).
fn ogg_pages(bytes: &[u8]) -> Vec<(u32, bool, Vec<u8>)> {
    let mut pages = Vec::new();
    let mut at = 0;
    while at + 27 <= bytes.len() {
        assert_eq!(&bytes[at..at + 4], b"OggS", "page boundary");
        let segments = usize::from(bytes[at + 26]);
        let body: usize = bytes[at + 27..at + 27 + segments].iter().map(|&b| usize::from(b)).sum();
        let len = 27 + segments + body;
        let serial = u32::from_le_bytes(bytes[at + 14..at + 18].try_into().unwrap());
        pages.push((serial, bytes[at + 5] & 0x02 != 0, bytes[at..at + len].to_vec()));
        at += len;
    }
    pages
}

/// Two Ogg files multiplexed into one physical stream: both first pages, then the other pages
/// interleaved one by one (the CRCs stay valid: pages are copied whole).
fn multiplex_ogg(first: &[u8], second: &[u8]) -> Vec<u8> {
    let (a, b) = (ogg_pages(first), ogg_pages(second));
    assert_ne!(a[0].0, b[0].0, "the two streams need different serial numbers");
    let mut out = Vec::new();
    out.extend_from_slice(&a[0].2);
    out.extend_from_slice(&b[0].2);
    let (rest_a, rest_b) = (&a[1..], &b[1..]);
    for index in 0..rest_a.len().max(rest_b.len()) {
        for pages in [rest_a, rest_b] {
            if let Some((_, _, page)) = pages.get(index) {
                out.extend_from_slice(page);
            }
        }
    }
    out
}

/// A WAV of `channels` channels of 1 s at 16 kHz, channel k a sine at 250 (k + 1) Hz, peak 0.5.
fn many_channel_wav(path: &Path, channels: u16) {
    let spec =
        hound::WavSpec { channels, sample_rate: 16_000, bits_per_sample: 16, sample_format: hound::SampleFormat::Int };
    let mut writer = hound::WavWriter::create(path, spec).unwrap();
    for n in 0..16_000 {
        for channel in 0..channels {
            let phase = 2.0 * std::f64::consts::PI * 250.0 * f64::from(channel + 1) * f64::from(n) / 16_000.0;
            writer.write_sample((0.5 * phase.sin() * 32767.0) as i16).unwrap();
        }
    }
    writer.finalize().unwrap();
}

/// A float WAV of 1 s at `rate` Hz: a 97 Hz sine whose peak is `peak`.
fn float_wav(path: &Path, rate: u32, peak: f32) {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: rate,
        bits_per_sample: 32,
        sample_format: hound::SampleFormat::Float,
    };
    let mut writer = hound::WavWriter::create(path, spec).unwrap();
    for n in 0..rate {
        let phase = 2.0 * std::f32::consts::PI * 97.0 * n as f32 / rate as f32;
        writer.write_sample(peak * phase.sin()).unwrap();
    }
    writer.finalize().unwrap();
}

/// An ID3v2.3 tag of `size` bytes of padding.
fn id3v2(size: usize) -> Vec<u8> {
    let syncsafe = [(size >> 21) & 0x7F, (size >> 14) & 0x7F, (size >> 7) & 0x7F, size & 0x7F].map(|b| b as u8);
    [b"ID3\x03\x00\x00".to_vec(), syncsafe.to_vec(), vec![0u8; size]].concat()
}

/// An APEv2 tag with one item and a footer but no header.
fn apev2_footer_only() -> Vec<u8> {
    let item = [5u32.to_le_bytes().to_vec(), 0u32.to_le_bytes().to_vec(), b"Title\0hello".to_vec()].concat();
    let size = (item.len() + 32) as u32;
    let footer = [
        b"APETAGEX".to_vec(),
        2000u32.to_le_bytes().to_vec(),
        size.to_le_bytes().to_vec(),
        1u32.to_le_bytes().to_vec(),
        0u32.to_le_bytes().to_vec(),
        vec![0u8; 8],
    ]
    .concat();
    [item, footer].concat()
}

/// Real recordings truncated at these fractions of their length (and one byte in).
const TRUNCATION_POINTS: &[f64] = &[0.0, 0.013, 0.1, 0.37, 0.5, 0.77, 0.999];
const TRUNCATED_SOURCES: &[&str] = &[
    "derived/librivox0870.flac",
    "derived/librivox0870.ogg",
    "derived/librivox0870.opus",
    "derived/librivox0870.m4a",
    "derived/librivox0870_16k_vbr_lame.mp3",
    "derived/librivox0870_44k1_stereo_cbr128.mp3",
    "derived/librivox0870_8k_alaw.wav",
    "derived/librivox0870_first2s_48k_stereo_s24.wav",
];

fn truncated_name(source: &str, point: f64) -> String {
    let stem = source.rsplit('/').next().unwrap().replace('.', "_");
    format!("truncated_{stem}_at_{:03}", (point * 1000.0) as u32)
}

fn corpus_run() -> &'static CorpusRun {
    static RUN: OnceLock<CorpusRun> = OnceLock::new();
    RUN.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let inputs = dir.path().join("inputs");
        std::fs::create_dir(&inputs).unwrap();
        for entry in std::fs::read_dir(repo().join("testdata/bad-inputs/files")).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), inputs.join(entry.file_name())).unwrap();
        }
        for entry in std::fs::read_dir(repo().join("testdata/fuzz-regressions")).unwrap() {
            let entry = entry.unwrap();
            if entry.path().extension().is_some_and(|extension| extension != "md") {
                std::fs::copy(entry.path(), inputs.join(entry.file_name())).unwrap();
            }
        }
        let baseline = std::fs::read(repo().join("testdata/bad-inputs/files/wav_pcm16_16k_mono_baseline.wav")).unwrap();
        // W52: a name that is not UTF-8 (Latin-1 e-acute).
        #[cfg(unix)]
        {
            use std::os::unix::ffi::OsStrExt;
            std::fs::write(inputs.join(std::ffi::OsStr::from_bytes(b"caf\xE9.wav")), &baseline).unwrap();
        }
        std::fs::write(inputs.join("wav_named_as.mp3"), &baseline).unwrap();
        std::fs::write(
            inputs.join("flac_without_extension"),
            std::fs::read(real("derived/librivox0870.flac")).unwrap(),
        )
        .unwrap();
        std::fs::write(
            inputs.join("mp3_named_as.flac"),
            std::fs::read(real("derived/librivox0870_16k_vbr_lame.mp3")).unwrap(),
        )
        .unwrap();
        std::fs::write(inputs.join("header_only.wav"), &baseline[..44]).unwrap();
        // Header fields of the baseline (canonical 44-byte header) set to lies.
        let patched = |edits: &[(usize, &[u8])]| {
            let mut bytes = baseline.clone();
            for (at, value) in edits {
                bytes[*at..*at + value.len()].copy_from_slice(value);
            }
            bytes
        };
        for (name, edits) in [
            ("data_size_0.wav", vec![(40, &[0u8, 0, 0, 0][..])]),
            ("riff_and_data_sizes_0.wav", vec![(4, &[0u8, 0, 0, 0][..]), (40, &[0, 0, 0, 0][..])]),
            ("riff_size_0.wav", vec![(4, &[0u8, 0, 0, 0][..])]),
            ("twelve_bits_in_16.wav", vec![(34, &[12u8, 0][..])]),
            ("channels_0.wav", vec![(22, &[0u8, 0][..])]),
            ("bits_per_sample_0.wav", vec![(34, &[0u8, 0][..])]),
            ("fmt_size_past_the_end.wav", vec![(16, &[0xF0u8, 0xFF, 0xFF, 0xFF][..])]),
        ] {
            std::fs::write(inputs.join(name), patched(&edits)).unwrap();
        }
        // Tags in odd places, with odd sizes.
        let mp3 = std::fs::read(real("derived/librivox0870_16k_vbr_lame.mp3")).unwrap();
        let flac = std::fs::read(repo().join("testdata/bad-inputs/files/flac_baseline_16k.flac")).unwrap();
        let id3v1 = [b"TAG".to_vec(), vec![b'x'; 125]].concat();
        let half = mp3.len() / 2;
        for (name, bytes) in [
            ("mp3_id3v2_appended_at_the_end.mp3", [mp3.clone(), id3v2(2000)].concat()),
            ("mp3_id3v2_between_frames.mp3", [mp3[..half].to_vec(), id3v2(3000), mp3[half..].to_vec()].concat()),
            ("mp3_two_id3v2_tags.mp3", [id3v2(500), id3v2(700), mp3.clone()].concat()),
            ("mp3_junk_before_the_first_frame.mp3", [vec![0u8; 1500], mp3.clone()].concat()),
            ("mp3_id3v2_size_past_the_end.mp3", [b"ID3\x03\x00\x00\x04\x62\x2d\x00".to_vec(), mp3.clone()].concat()),
            ("flac_id3v1_trailer.flac", [flac.clone(), id3v1.clone()].concat()),
            ("flac_apev2_and_id3v1_trailers.flac", [flac.clone(), apev2_footer_only(), id3v1.clone()].concat()),
            ("flac_two_id3v2_prefixes.flac", [id3v2(300), id3v2(300), flac.clone()].concat()),
        ] {
            std::fs::write(inputs.join(name), bytes).unwrap();
        }
        std::fs::write(inputs.join("trailing_bytes.wav"), [baseline.clone(), vec![1u8; 1001]].concat()).unwrap();
        let vorbis_16k = std::fs::read(real("derived/librivox0870.ogg")).unwrap();
        let vorbis_48k = std::fs::read(real("sound-theme-freedesktop/audio-channel-front-center.oga")).unwrap();
        let opus = std::fs::read(real("derived/librivox0870.opus")).unwrap();
        std::fs::write(
            inputs.join("chained_vorbis_16k_then_48k.ogg"),
            [vorbis_16k.clone(), vorbis_48k.clone()].concat(),
        )
        .unwrap();
        std::fs::write(inputs.join("chained_vorbis_then_opus.ogg"), [vorbis_16k.clone(), opus.clone()].concat())
            .unwrap();
        std::fs::write(inputs.join("multiplexed_vorbis_and_opus.ogg"), multiplex_ogg(&vorbis_16k, &opus)).unwrap();
        many_channel_wav(&inputs.join("sixteen_channels.wav"), 16);
        float_wav(&inputs.join("float_near_f32_max.wav"), 1000, 1.0e38);
        for source in TRUNCATED_SOURCES {
            let bytes = std::fs::read(real(source)).unwrap();
            for &point in TRUNCATION_POINTS {
                let cut = ((bytes.len() as f64 * point) as usize).max(1);
                std::fs::write(inputs.join(truncated_name(source, point)), &bytes[..cut]).unwrap();
            }
        }

        let out = dir.path().join("out");
        let output = process(&[inputs.to_str().unwrap(), "--no-gate"], &out);
        // Nothing in this corpus may make speechmill fail on a clip: exit 0, not 3.
        assert_exit(&output, 0);
        let by_name = |file: &str| -> HashMap<String, Map<String, Value>> {
            read_jsonl(&out.join(file))
                .into_iter()
                .map(|row| (file_name_of(row["source"].as_str().unwrap()), row))
                .collect()
        };
        CorpusRun { accepted: by_name("manifest.jsonl"), rejected: by_name("rejected.jsonl"), _dir: dir }
    })
}

/// Checks that a case of CASES.tsv was decoded with the expected rate, channels and length, and
/// (when given) a source peak within 0.2 dB of `peak_dbfs`.
fn assert_decodes_as_expected(case: &str, peak_dbfs: Option<f64>) -> &'static Map<String, Value> {
    let expected = &cases()[case];
    let row = corpus_run().accepted(&case_file(case));
    let rate: f64 = expected["expected_sample_rate"].parse().unwrap();
    let channels: f64 = expected["expected_channels"].parse().unwrap();
    let frames: f64 = expected["expected_frames_native"].parse().unwrap();
    assert_eq!(f64_of(row, "source_sample_rate"), Some(rate), "{case}: {row:?}");
    assert_eq!(f64_of(row, "source_channels"), Some(channels), "{case}: {row:?}");
    let duration = f64_of(row, "duration_s").unwrap();
    assert!(duration_close(duration, frames / rate), "{case}: {duration} s, expected {} s", frames / rate);
    if let Some(peak) = peak_dbfs {
        let measured = f64_of(row, "peak_dbfs").unwrap_or(f64::NEG_INFINITY);
        assert!((measured - peak).abs() <= 0.2, "{case}: peak {measured} dBFS, expected {peak}");
    }
    for key in ["rms_dbfs", "clipping_ratio", "dc_offset", "speech_ratio", "gain_db", "output_peak_dbfs"] {
        if let Some(value) = row.get(key).filter(|value| !value.is_null()) {
            assert!(value.as_f64().is_some_and(f64::is_finite), "{case}: {key} = {value}");
        }
    }
    assert!(!row.contains_key("reason"), "accepted rows carry no rejection reason");
    row
}

/// Checks that a case was rejected with one of `reasons`, at a stage before the gate, with a
/// message naming the file.
fn assert_rejected_with(file_name: &str, reasons: &[&str]) -> &'static Map<String, Value> {
    let row = corpus_run().rejected(file_name);
    let reason = row["reason"].as_str().unwrap();
    assert!(reasons.contains(&reason), "{file_name}: reason {reason}, expected one of {reasons:?}: {row:?}");
    let message = row["message"].as_str().unwrap();
    assert!(message.contains(file_name), "the message names the file: {message}");
    row
}

/// Half-scale (0.5) peak, in dBFS.
const HALF_SCALE_DBFS: f64 = -6.0206;

#[test]
fn control_pcm16_wav_decodes_whole() {
    assert_decodes_as_expected("W01", Some(HALF_SCALE_DBFS));
}

#[test]
fn unsigned_8bit_wav_is_centred_on_128() {
    let row = assert_decodes_as_expected("W02", Some(HALF_SCALE_DBFS));
    assert!(f64_of(row, "dc_offset").unwrap().abs() < 0.01, "no DC from a signed reading: {row:?}");
}

#[test]
fn extensible_24bit_wav_unwraps_its_subformat() {
    assert_decodes_as_expected("W04", Some(HALF_SCALE_DBFS));
}

#[test]
fn int32_wav_is_scaled_by_two_to_the_31() {
    assert_decodes_as_expected("W06", Some(HALF_SCALE_DBFS));
}

#[test]
fn extensible_float_wav_decodes_as_float() {
    assert_decodes_as_expected("W08", Some(HALF_SCALE_DBFS));
}

#[test]
fn non_finite_float_samples_are_rejected_by_default() {
    let row = assert_rejected_with(&case_file("W10"), &["non_finite_samples"]);
    assert_eq!(row["stage"], "validate");
    assert_eq!(f64_of(row, "non_finite_samples"), Some(103.0), "three single samples and a 100-sample run");
}

#[test]
fn non_finite_float_samples_are_zeroed_and_flagged_when_sanitising() {
    let dir = tempfile::tempdir().unwrap();
    let input = repo().join("testdata/bad-inputs/files").join(case_file("W10"));
    let output = common::speechmill()
        .args(["process", input.to_str().unwrap(), "--no-gate", "--quiet", "--out"])
        .arg(dir.path())
        .env("SPEECHMILL_STANDARDISE__NON_FINITE", "sanitise")
        .output()
        .unwrap();
    assert_exit(&output, 0);
    let rows = read_jsonl(&dir.path().join("manifest.jsonl"));
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!(f64_of(row, "non_finite_samples"), Some(103.0));
    assert!(row["warnings"].to_string().contains("NaN or infinite"), "flagged: {row:?}");
    for key in ["peak_dbfs", "rms_dbfs", "loudness_lufs", "snr_db", "output_loudness_lufs", "gain_db"] {
        if let Some(value) = row.get(key).filter(|value| !value.is_null()) {
            assert!(value.as_f64().is_some_and(f64::is_finite), "{key} = {value}");
        }
    }
}

#[test]
fn alaw_wav_is_expanded_and_resampled() {
    let row = assert_decodes_as_expected("W12", Some(-5.75));
    assert_eq!(f64_of(row, "num_samples"), Some(16_000.0), "8 kHz to 16 kHz doubles the length");
}

#[test]
fn ima_adpcm_wav_is_cut_to_its_fact_length() {
    assert_decodes_as_expected("W14", Some(-5.9));
}

#[test]
fn streamed_wav_with_ffffffff_sizes_is_read_to_the_end_of_the_data() {
    assert_decodes_as_expected("W16", Some(HALF_SCALE_DBFS));
}

#[test]
fn placeholder_int32_max_sizes_are_read_to_the_end_of_the_data() {
    assert_decodes_as_expected("W18", Some(HALF_SCALE_DBFS));
}

#[test]
fn riff_size_smaller_than_the_file_trusts_the_data_chunk() {
    assert_decodes_as_expected("W20", Some(HALF_SCALE_DBFS));
}

#[test]
fn chunks_between_fmt_and_data_are_skipped() {
    assert_decodes_as_expected("W22", Some(HALF_SCALE_DBFS));
}

#[test]
fn odd_chunk_without_its_pad_byte_is_recovered_or_rejected_never_shifted() {
    match corpus_run().outcome(&case_file("W24")) {
        Outcome::Accepted(_) => {
            assert_decodes_as_expected("W24", Some(HALF_SCALE_DBFS));
        }
        Outcome::Rejected(_) => {
            assert_rejected_with(&case_file("W24"), &["invalid_header", "decode_error", "unrecognised_format"]);
        }
    }
}

#[test]
fn odd_data_chunk_with_pad_byte_keeps_every_sample() {
    let row = assert_decodes_as_expected("W26", Some(HALF_SCALE_DBFS));
    assert!((f64_of(row, "duration_s").unwrap() - 16_001.0 / 16_000.0).abs() < 1e-9, "exactly 16001 frames");
}

#[test]
fn extensible_sized_fmt_with_pcm_tag_decodes() {
    assert_decodes_as_expected("W28", Some(HALF_SCALE_DBFS));
}

#[test]
fn extensible_stereo_with_channel_mask_zero_decodes() {
    assert_decodes_as_expected("W30", Some(HALF_SCALE_DBFS));
}

#[test]
fn six_channels_without_a_mask_decode_and_mix_down() {
    assert_decodes_as_expected("W32", Some(HALF_SCALE_DBFS));
}

#[test]
fn sixteen_channels_decode_and_mix_down() {
    let row = corpus_run().accepted("sixteen_channels.wav");
    assert_eq!(f64_of(row, "source_channels"), Some(16.0));
    assert!(duration_close(f64_of(row, "duration_s").unwrap(), 1.0));
    assert!((f64_of(row, "peak_dbfs").unwrap() - HALF_SCALE_DBFS).abs() < 0.2);
}

#[test]
fn antiphase_stereo_is_flagged_when_its_channels_cancel() {
    let row = assert_decodes_as_expected("W34", Some(HALF_SCALE_DBFS));
    assert!(row["warnings"].to_string().contains("channels cancel"), "{row:?}");
}

#[test]
fn zero_sample_rate_is_rejected_as_an_invalid_header() {
    let row = assert_rejected_with(&case_file("W36"), &["invalid_header"]);
    assert!(row["message"].as_str().unwrap().contains("sample rate"), "{row:?}");
}

#[test]
fn wrong_byte_rate_does_not_change_the_duration() {
    assert_decodes_as_expected("W38", Some(HALF_SCALE_DBFS));
}

#[test]
fn missing_fmt_chunk_is_rejected() {
    assert_rejected_with(&case_file("W40"), &["invalid_header", "unrecognised_format"]);
}

#[test]
fn zero_byte_file_is_rejected_as_empty() {
    assert_rejected_with(&case_file("W42"), &["empty"]);
}

#[test]
fn header_only_wav_is_rejected_as_empty() {
    let row = assert_rejected_with("header_only.wav", &["empty"]);
    assert!(row["stage"] == "decode" || row["stage"] == "validate");
}

#[test]
fn clip_shorter_than_the_analysis_windows_is_measured_without_loudness() {
    let row = assert_decodes_as_expected("W44", Some(HALF_SCALE_DBFS));
    assert!(row["loudness_lufs"].is_null(), "undefined under 400 ms: {row:?}");
    assert!(row["warnings"].to_string().contains("loudness undefined"), "{row:?}");
}

#[test]
fn quiet_sine_at_a_1_khz_rate_never_reads_positive_loudness() {
    let row = assert_decodes_as_expected("W46", None);
    if let Some(lufs) = f64_of(row, "loudness_lufs") {
        assert!(lufs < -50.0, "{lufs} LUFS");
    }
    if let Some(lufs) = f64_of(row, "output_loudness_lufs") {
        assert!(lufs <= 0.0, "{lufs} LUFS");
    }
}

#[test]
fn resampled_impulses_keep_their_timing_and_the_tail() {
    assert_decodes_as_expected("W48", None);
    let dir = tempfile::tempdir().unwrap();
    let input = repo().join("testdata/bad-inputs/files").join(case_file("W48"));
    let output = process(&[input.to_str().unwrap(), "--no-gate", "--format", "wav"], dir.path());
    assert_exit(&output, 0);
    let rows = read_jsonl(&dir.path().join("manifest.jsonl"));
    let wav = dir.path().join(rows[0]["audio_path"].as_str().unwrap());
    let samples: Vec<i16> = hound::WavReader::open(&wav).unwrap().samples::<i16>().map(Result::unwrap).collect();
    assert!((samples.len() as i64 - 16_000).abs() <= 1, "{} samples", samples.len());
    for expected in [4000usize, 8000, 12000] {
        let window = &samples[expected - 50..expected + 50];
        let (offset, _) = window.iter().enumerate().max_by_key(|(_, sample)| sample.unsigned_abs()).unwrap();
        let position = expected - 50 + offset;
        assert!(position.abs_diff(expected) <= 2, "impulse at {position}, expected {expected}");
    }
}

#[test]
fn rf64_claiming_5_gib_decodes_what_is_present() {
    match corpus_run().outcome(&case_file("W50")) {
        Outcome::Accepted(_) => {
            assert_decodes_as_expected("W50", Some(HALF_SCALE_DBFS));
        }
        Outcome::Rejected(_) => {
            assert_rejected_with(&case_file("W50"), &["invalid_header", "decode_error"]);
        }
    }
}

#[test]
#[cfg(unix)]
fn file_name_that_is_not_utf8_is_processed_and_named_losslessly() {
    let row = corpus_run().accepted("caf\\xE9.wav");
    assert!(row["source"].as_str().unwrap().ends_with("caf\\xE9.wav"), "{row:?}");
    assert!(duration_close(f64_of(row, "duration_s").unwrap(), 1.0));
    let id = row["id"].as_str().unwrap();
    assert!(id.is_ascii(), "the id is a safe file name: {id}");
}

#[test]
fn cbr_mp3_control_decodes_every_frame() {
    assert_decodes_as_expected("M01", None);
}

#[test]
fn mp3_behind_a_large_id3v2_tag_with_false_syncs_keeps_its_rate() {
    assert_decodes_as_expected("M02", None);
}

#[test]
fn vbr_mp3_without_a_xing_header_is_timed_from_its_frames() {
    assert_decodes_as_expected("M04", None);
}

#[test]
fn mp3_with_trailing_apev2_and_id3v1_tags_ignores_them() {
    assert_decodes_as_expected("M06", None);
}

#[test]
fn flac_control_decodes_whole() {
    assert_decodes_as_expected("F01", Some(HALF_SCALE_DBFS));
}

#[test]
fn flac_behind_an_id3v2_prefix_is_decoded_as_flac() {
    match corpus_run().outcome(&case_file("F02")) {
        Outcome::Accepted(row) => {
            assert_eq!(row["source_container"], "flac", "never routed to the MP3 decoder");
            assert_decodes_as_expected("F02", Some(HALF_SCALE_DBFS));
        }
        Outcome::Rejected(_) => {
            assert_rejected_with(&case_file("F02"), &["invalid_header", "unrecognised_format"]);
        }
    }
}

#[test]
fn flac_with_unknown_total_samples_is_measured_by_decoding() {
    assert_decodes_as_expected("F04", Some(HALF_SCALE_DBFS));
}

#[test]
fn opus_header_input_rate_is_informational() {
    let row = assert_decodes_as_expected("O01", None);
    assert!((f64_of(row, "num_samples").unwrap() - 15_896.0).abs() <= 2.0, "pre-skip removed: {row:?}");
}

#[test]
fn wrong_and_missing_extensions_are_ignored() {
    let wav = corpus_run().accepted("wav_named_as.mp3");
    assert_eq!(wav["source_container"], "wav");
    let flac = corpus_run().accepted("flac_without_extension");
    assert_eq!(flac["source_container"], "flac");
    assert!(duration_close(f64_of(flac, "duration_s").unwrap(), 7.1));
    let mp3 = corpus_run().accepted("mp3_named_as.flac");
    assert_eq!(mp3["source_codec"], "mp3");
}

#[test]
fn chained_ogg_links_are_all_decoded_and_joined() {
    // 7.1 s of 16 kHz Vorbis, then 1.428 s of 48 kHz Vorbis resampled to the first link's rate.
    let mixed_rates = corpus_run().accepted("chained_vorbis_16k_then_48k.ogg");
    assert_eq!(f64_of(mixed_rates, "source_sample_rate"), Some(16_000.0));
    let duration = f64_of(mixed_rates, "duration_s").unwrap();
    assert!(duration_close(duration, 7.1 + 1.428), "{duration} s");
    // Vorbis then Opus (48 kHz): both links, each with its own decoder.
    let codecs = corpus_run().accepted("chained_vorbis_then_opus.ogg");
    let duration = f64_of(codecs, "duration_s").unwrap();
    assert!(duration_close(duration, 14.2), "{duration} s");
}

#[test]
fn multiplexed_ogg_decodes_one_stream_by_the_documented_rule() {
    // Two logical streams at once: the first (by serial number) with a decoder is taken whole;
    // the other's packets are skipped, never mixed in.
    let row = corpus_run().accepted("multiplexed_vorbis_and_opus.ogg");
    let duration = f64_of(row, "duration_s").unwrap();
    assert!(duration_close(duration, 7.1), "{duration} s: one stream, not both");
}

#[test]
fn truncation_at_any_byte_keeps_what_was_decoded_or_names_the_problem() {
    let run = corpus_run();
    for source in TRUNCATED_SOURCES {
        let mut previous_duration = 0.0;
        for &point in TRUNCATION_POINTS {
            let name = truncated_name(source, point);
            match run.outcome(&name) {
                Outcome::Accepted(row) => {
                    let duration = f64_of(row, "duration_s").unwrap();
                    // Never longer than the whole file, and a longer prefix never gives less.
                    assert!(duration <= 7.1 + 0.05, "{name}: {duration} s");
                    assert!(duration + 0.1 >= previous_duration, "{name}: {duration} s after {previous_duration} s");
                    previous_duration = duration;
                }
                Outcome::Rejected(row) => {
                    let reason = row["reason"].as_str().unwrap();
                    assert!(
                        [
                            "empty",
                            "decode_error",
                            "invalid_header",
                            "unrecognised_format",
                            "too_short",
                            "unsupported_codec"
                        ]
                        .contains(&reason),
                        "{name}: {reason} is not a content reason: {row:?}"
                    );
                    assert!(row["message"].as_str().unwrap().contains(&name));
                }
            }
        }
    }
}

#[test]
fn float_samples_far_above_full_scale_are_decoded_flagged_and_brought_into_range() {
    // Found by fuzzing (testdata/fuzz-regressions): samples near f32::MAX broke the resampler.
    // That file also holds NaN, so by default it is rejected for those, at validation.
    let found = assert_rejected_with("float_wav_samples_near_f32_max.wav", &["non_finite_samples"]);
    assert_eq!(found["stage"], "validate");
    // The same kind without NaN: a 1 kHz-rate float sine with a peak of 1e38.
    let row = corpus_run().accepted("float_near_f32_max.wav");
    assert!(f64_of(row, "over_full_scale_samples").unwrap() > 0.0, "{row:?}");
    assert!(row["warnings"].to_string().contains("above full scale"), "{row:?}");
    let peak = f64_of(row, "output_peak_dbfs").unwrap();
    assert!(peak <= -1.0 + 1e-6, "normalised under the peak limit: {peak}");
}

#[test]
fn zero_sizes_in_the_header_read_the_data_to_the_end_of_the_file() {
    // Recorders that never finished their header (libsndfile reads these as zero samples).
    for name in ["data_size_0.wav", "riff_and_data_sizes_0.wav"] {
        let row = corpus_run().accepted(name);
        assert!(duration_close(f64_of(row, "duration_s").unwrap(), 1.0), "{name}: {row:?}");
        assert!((f64_of(row, "peak_dbfs").unwrap() - HALF_SCALE_DBFS).abs() < 0.1);
        assert!(row["warnings"].to_string().contains("declares 0 bytes"), "{name}: flagged: {row:?}");
    }
    let row = corpus_run().accepted("riff_size_0.wav");
    assert!(duration_close(f64_of(row, "duration_s").unwrap(), 1.0), "{row:?}");
}

#[test]
fn sizes_larger_than_the_file_are_flagged_and_read_to_what_is_there() {
    let row = assert_decodes_as_expected("W16", Some(HALF_SCALE_DBFS));
    assert!(row["warnings"].to_string().contains("declares"), "the placeholder is reported: {row:?}");
}

#[test]
fn samples_narrower_than_their_containers_are_read_as_the_container() {
    let row = corpus_run().accepted("twelve_bits_in_16.wav");
    assert!(duration_close(f64_of(row, "duration_s").unwrap(), 1.0));
    assert!((f64_of(row, "peak_dbfs").unwrap() - HALF_SCALE_DBFS).abs() < 0.1, "left-justified: {row:?}");
    assert!(row["warnings"].to_string().contains("12-bit samples"), "{row:?}");
}

#[test]
fn impossible_formats_are_rejected_as_invalid_headers() {
    for name in ["channels_0.wav", "bits_per_sample_0.wav"] {
        assert_rejected_with(name, &["invalid_header"]);
    }
}

#[test]
fn chunk_sizes_past_the_end_of_the_file_are_rejected_not_allocated() {
    assert_rejected_with("fmt_size_past_the_end.wav", &["invalid_header"]);
}

#[test]
fn trailing_bytes_after_the_data_chunk_are_ignored() {
    let row = corpus_run().accepted("trailing_bytes.wav");
    assert!(duration_close(f64_of(row, "duration_s").unwrap(), 1.0));
}

#[test]
fn mp3_tags_anywhere_and_of_any_size_do_not_change_the_audio() {
    for name in [
        "mp3_id3v2_appended_at_the_end.mp3",
        "mp3_id3v2_between_frames.mp3",
        "mp3_two_id3v2_tags.mp3",
        "mp3_junk_before_the_first_frame.mp3",
        "mp3_id3v2_size_past_the_end.mp3",
    ] {
        let row = corpus_run().accepted(name);
        assert_eq!(f64_of(row, "source_sample_rate"), Some(16_000.0), "{name}");
        let duration = f64_of(row, "duration_s").unwrap();
        assert!(duration_close(duration, 7.1), "{name}: {duration} s");
    }
    let lying = corpus_run().accepted("mp3_id3v2_size_past_the_end.mp3");
    assert!(lying["warnings"].to_string().contains("ID3v2 tag declares"), "{lying:?}");
}

#[test]
fn flac_with_tags_before_or_after_keeps_every_frame() {
    for name in ["flac_id3v1_trailer.flac", "flac_apev2_and_id3v1_trailers.flac", "flac_two_id3v2_prefixes.flac"] {
        let row = corpus_run().accepted(name);
        assert_eq!(row["source_container"], "flac", "{name}");
        let duration = f64_of(row, "duration_s").unwrap();
        assert!((duration - 1.0).abs() < 1e-9, "{name}: {duration} s, every frame kept");
    }
}

#[test]
fn sample_rates_beyond_any_audio_format_are_rejected_as_invalid_headers() {
    // Found by fuzzing (testdata/fuzz-regressions): 4.29 GHz made resampler set-up take seconds.
    let row = assert_rejected_with("wav_sample_rate_4_ghz.wav", &["invalid_header"]);
    assert!(row["message"].as_str().unwrap().contains("sample rate"), "{row:?}");
}

#[test]
fn sample_rates_below_any_audio_format_are_rejected_as_invalid_headers() {
    // Found by fuzzing (testdata/fuzz-regressions): a 47 KB WAV declaring 6 Hz would have been
    // resampled into two hours of 16 kHz audio.
    let row = assert_rejected_with("wav_sample_rate_6_hz.wav", &["invalid_header"]);
    assert!(row["message"].as_str().unwrap().contains("6 Hz"), "{row:?}");
}
