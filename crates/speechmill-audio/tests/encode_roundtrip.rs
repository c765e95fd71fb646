//! Round trips through independent decoders: `claxon` for FLAC, `hound` for WAV.
//!
//! Known answers: the decoded 16-bit samples equal the encoder's quantisation of the input,
//! sample for sample; rate, channel count, bit depth and length match; the FLAC stream info
//! carries the sample count and the MD5 of the samples.

use std::io::Cursor;

use md5::{Digest, Md5};
use speechmill_audio::encode::{encode_flac_16, encode_wav_16, quantize_16};

/// A 440 Hz sine at -6 dBFS plus a deterministic pseudo-random noise floor, and a few samples
/// beyond full scale (clamped) and at the edges of the 16-bit range.
fn test_signal(sample_rate: u32, sample_count: usize) -> Vec<f32> {
    let mut state: u32 = 0x1234_5678;
    let mut signal: Vec<f32> = (0..sample_count)
        .map(|n| {
            // xorshift32: a reproducible noise floor so the encoder cannot code silence only.
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            let noise = (state as f32 / u32::MAX as f32 - 0.5) * 0.001;
            let phase = 2.0 * std::f32::consts::PI * 440.0 * n as f32 / sample_rate as f32;
            0.5 * phase.sin() + noise
        })
        .collect();
    let overshoots = [1.0, -1.0, 1.5, -1.5, 32767.0 / 32768.0, f32::NAN];
    for (slot, value) in signal.iter_mut().skip(100).step_by(997).zip(overshoots) {
        *slot = value;
    }
    signal
}

fn expected_i16(signal: &[f32]) -> Vec<i16> {
    signal.iter().map(|&sample| quantize_16(sample)).collect()
}

struct DecodedFlac {
    sample_rate: u32,
    channels: u32,
    bits_per_sample: u32,
    total_samples: Option<u64>,
    md5: [u8; 16],
    samples: Vec<i16>,
}

fn decode_flac(bytes: &[u8]) -> DecodedFlac {
    let mut reader = claxon::FlacReader::new(Cursor::new(bytes)).expect("claxon reads the header");
    let info = reader.streaminfo();
    let samples = reader
        .samples()
        .map(|sample| i16::try_from(sample.expect("claxon decodes the frames")).expect("16-bit"))
        .collect();
    DecodedFlac {
        sample_rate: info.sample_rate,
        channels: info.channels,
        bits_per_sample: info.bits_per_sample,
        total_samples: info.samples,
        md5: info.md5sum,
        samples,
    }
}

fn md5_of_le16(samples: &[i16]) -> [u8; 16] {
    let mut hasher = Md5::new();
    for sample in samples {
        hasher.update(sample.to_le_bytes());
    }
    hasher.finalize().into()
}

#[test]
fn flac_round_trip_is_bit_exact() {
    for (sample_rate, sample_count) in [(16_000, 16_000 * 3 + 123), (8_000, 4096), (44_100, 31)] {
        let signal = test_signal(sample_rate, sample_count);
        let flac = encode_flac_16(&signal, sample_rate).unwrap();
        let decoded = decode_flac(&flac);
        let expected = expected_i16(&signal);
        assert_eq!(decoded.sample_rate, sample_rate);
        assert_eq!(decoded.channels, 1);
        assert_eq!(decoded.bits_per_sample, 16);
        assert_eq!(decoded.total_samples, Some(sample_count as u64));
        assert_eq!(decoded.samples.len(), sample_count);
        assert!(decoded.samples == expected, "decoded samples differ at {sample_rate} Hz");
        assert_eq!(decoded.md5, md5_of_le16(&expected), "stream info md5");
    }
}

/// Regression: flacenc declared the last frame's size as the minimum block size, and claxon
/// rejects a minimum under 16, so clips whose last frame had 1 to 15 samples did not decode.
#[test]
fn flac_of_clip_with_short_last_frame_decodes() {
    for sample_count in [5, 4096 + 1, 2 * 4096 + 15] {
        let signal = test_signal(16_000, sample_count);
        let decoded = decode_flac(&encode_flac_16(&signal, 16_000).unwrap());
        assert_eq!(decoded.total_samples, Some(sample_count as u64));
        assert!(decoded.samples == expected_i16(&signal), "{sample_count} samples");
    }
}

#[test]
fn flac_clamps_out_of_range_samples() {
    let flac = encode_flac_16(&[2.0, -2.0, 1.0, -1.0, f32::NAN], 16_000).unwrap();
    assert_eq!(decode_flac(&flac).samples, [32767, -32768, 32767, -32768, 0]);
}

#[test]
fn flac_of_empty_clip_decodes_to_no_samples() {
    let decoded = decode_flac(&encode_flac_16(&[], 16_000).unwrap());
    assert_eq!(decoded.sample_rate, 16_000);
    // A total of 0 in the stream info means "unknown" in the FLAC format; claxon says None.
    assert_eq!(decoded.total_samples.unwrap_or(0), 0);
    assert!(decoded.samples.is_empty());
}

#[test]
fn flac_of_sine_is_smaller_than_wav() {
    // A 440 Hz sine at -6 dBFS, 16 kHz: the order-4 fixed predictor leaves a residual of
    // 16384 * (2 pi 440 / 16000)^4, about 15, so about 6 bits per sample with Rice coding.
    let signal: Vec<f32> =
        (0..32_000).map(|n| 0.5 * (2.0 * std::f32::consts::PI * 440.0 * n as f32 / 16_000.0).sin()).collect();
    let flac = encode_flac_16(&signal, 16_000).unwrap();
    let wav = encode_wav_16(&signal, 16_000).unwrap();
    assert!(flac.len() * 2 < wav.len(), "flac {} bytes, wav {} bytes", flac.len(), wav.len());
}

#[test]
fn wav_round_trip_is_bit_exact() {
    for (sample_rate, sample_count) in [(16_000, 16_000 + 7), (22_050, 0)] {
        let signal = test_signal(sample_rate, sample_count);
        let wav = encode_wav_16(&signal, sample_rate).unwrap();
        let mut reader = hound::WavReader::new(Cursor::new(&wav)).expect("hound reads the header");
        let spec = reader.spec();
        assert_eq!(spec.sample_rate, sample_rate);
        assert_eq!(spec.channels, 1);
        assert_eq!(spec.bits_per_sample, 16);
        assert_eq!(spec.sample_format, hound::SampleFormat::Int);
        assert_eq!(reader.duration() as usize, sample_count);
        let samples: Vec<i16> = reader.samples::<i16>().map(Result::unwrap).collect();
        assert!(samples == expected_i16(&signal), "decoded samples differ");
    }
}

/// The reference decoder, when installed (Debian package `flac`), tests our streams too: frame
/// CRCs, stream info, and the MD5 of the decoded samples.
#[test]
fn reference_flac_tool_verifies_the_stream() {
    use std::io::Write;
    use std::process::{Command, Stdio};

    let Ok(mut child) =
        Command::new("flac").args(["--test", "--silent", "-"]).stdin(Stdio::piped()).stderr(Stdio::piped()).spawn()
    else {
        eprintln!("skipped: the flac command is not installed (apt-get install flac)");
        return;
    };
    // 4096 * 2 + 7 samples: the last frame is shorter than the others.
    let flac = encode_flac_16(&test_signal(16_000, 4096 * 2 + 7), 16_000).unwrap();
    child.stdin.take().unwrap().write_all(&flac).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "flac --test: {}", String::from_utf8_lossy(&output.stderr));
}
