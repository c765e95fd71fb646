//! Criterion micro-benchmarks of the hot kernels of one clip: decode, resample, loudness,
//! levels, bandwidth, voice activity + SNR, and encoding.
//!
//! Every kernel runs on the same 10 s of real speech (testdata/real-speech, LibriVox and ALSA
//! recordings, concatenated), so throughputs read as samples of that signal per second; divide
//! by the rate to get real-time factors. Run with `cargo bench -p speechmill-audio --bench
//! kernels` (add `-- resample` to run one group). Not run in CI; it must only compile there.

use std::hint::black_box;
use std::io::Cursor;
use std::path::PathBuf;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use speechmill_audio::decode::StreamDecoder;
use speechmill_audio::encode::{encode_flac_16, encode_wav_16};
use speechmill_audio::loudness::LoudnessMeter;
use speechmill_audio::measure::{BandwidthMeter, LevelMeter, SpeechAnalyser};
use speechmill_audio::resample::MonoResampler;

/// Length of the benchmark signal.
const SECONDS: usize = 10;

fn speech_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/real-speech")
}

/// Decodes a whole file to mono `f32` with speechmill's own decoder.
fn decode_file(relative: &str) -> (Vec<f32>, u32) {
    let file = std::fs::File::open(speech_dir().join(relative)).expect("testdata file");
    decode_all(Box::new(file))
}

fn decode_all(source: Box<dyn speechmill_audio::MediaSource>) -> (Vec<f32>, u32) {
    let mut decoder = StreamDecoder::open(source, None).expect("decodable");
    let channels = usize::from(decoder.info().channels);
    let rate = decoder.info().sample_rate;
    let mut mono = Vec::new();
    while let Some(block) = decoder.next_block().expect("decodes") {
        mono.extend(block.chunks_exact(channels).map(|frame| frame.iter().sum::<f32>() / channels as f32));
    }
    (mono, rate)
}

fn resample(input: &[f32], from: u32, to: u32) -> Vec<f32> {
    let mut resampler = MonoResampler::new(from, to).expect("supported rates");
    let mut out = Vec::new();
    resampler.process(input, &mut out);
    resampler.finish(&mut out);
    out
}

/// 10 s of real speech at 48 kHz and the same at 16 kHz.
fn speech() -> (Vec<f32>, Vec<f32>) {
    let mut at_48k = Vec::new();
    for name in [
        "pocketsphinx-testdata/sense_and_sensibility_01_austen_64kb-0870.wav",
        "alsa-utils/Front_Center.wav",
        "pocketsphinx-testdata/sense_and_sensibility_01_austen_64kb-0880.wav",
    ] {
        let (mono, rate) = decode_file(name);
        at_48k.extend(if rate == 48_000 { mono } else { resample(&mono, rate, 48_000) });
    }
    at_48k.truncate(SECONDS * 48_000);
    assert_eq!(at_48k.len(), SECONDS * 48_000, "testdata holds at least {SECONDS} s of speech");
    let at_16k = resample(&at_48k, 48_000, 16_000);
    (at_48k, at_16k)
}

fn kernels(c: &mut Criterion) {
    let (at_48k, at_16k) = speech();

    let mut group = c.benchmark_group("resample");
    for (from, input) in [(48_000u32, at_48k.clone()), (44_100, resample(&at_48k, 48_000, 44_100))] {
        group.throughput(Throughput::Elements(input.len() as u64));
        let mut resampler = MonoResampler::new(from, 16_000).unwrap();
        let mut out = Vec::with_capacity(SECONDS * 16_000 + 16);
        group.bench_with_input(BenchmarkId::new("reused", format!("{from}-to-16000")), &input, |b, input| {
            b.iter(|| {
                out.clear();
                for block in input.chunks(4096) {
                    resampler.process(block, &mut out);
                }
                resampler.finish(&mut out);
                black_box(out.len())
            })
        });
        group.bench_with_input(BenchmarkId::new("new-per-clip", format!("{from}-to-16000")), &input, |b, input| {
            b.iter(|| black_box(resample(input, from, 16_000).len()))
        });
    }
    group.finish();

    let mut group = c.benchmark_group("loudness");
    for (rate, input) in [(48_000u32, &at_48k), (16_000, &at_16k)] {
        group.throughput(Throughput::Elements(input.len() as u64));
        group.bench_with_input(BenchmarkId::new("integrated", rate), input, |b, input| {
            b.iter(|| {
                let mut meter = LoudnessMeter::new(1, rate);
                for block in input.chunks(4096) {
                    meter.add(block);
                }
                black_box(meter.integrated_lufs())
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("measure");
    group.throughput(Throughput::Elements(at_48k.len() as u64));
    group.bench_function("levels-48000", |b| {
        b.iter(|| {
            let mut meter = LevelMeter::new(1);
            for block in at_48k.chunks(4096) {
                meter.add(block);
            }
            black_box(meter.finish())
        })
    });
    group.bench_function("bandwidth-48000", |b| {
        b.iter(|| {
            let mut meter = BandwidthMeter::new(48_000);
            for block in at_48k.chunks(4096) {
                meter.add(block);
            }
            black_box(meter.finish())
        })
    });
    group.throughput(Throughput::Elements(at_16k.len() as u64));
    let mut analyser = SpeechAnalyser::new();
    group.bench_function("vad-snr-16000", |b| b.iter(|| black_box(analyser.analyse(&at_16k, 16_000))));
    group.finish();

    let mut group = c.benchmark_group("encode");
    group.throughput(Throughput::Elements(at_16k.len() as u64));
    group.bench_function("flac-16000", |b| b.iter(|| black_box(encode_flac_16(&at_16k, 16_000).unwrap().len())));
    group.bench_function("wav-16000", |b| b.iter(|| black_box(encode_wav_16(&at_16k, 16_000).unwrap().len())));
    group.finish();

    let mut group = c.benchmark_group("decode");
    let wav_48k = encode_wav_16(&at_48k, 48_000).unwrap();
    let flac_16k = encode_flac_16(&at_16k, 16_000).unwrap();
    let mp3_44k = std::fs::read(speech_dir().join("derived/librivox0870_44k1_stereo_cbr128.mp3")).unwrap();
    for (name, bytes) in [("wav-48000", wav_48k), ("flac-16000", flac_16k), ("mp3-44100-stereo", mp3_44k)] {
        let frames = decode_all(Box::new(Cursor::new(bytes.clone()))).0.len();
        group.throughput(Throughput::Elements(frames as u64));
        group.bench_with_input(BenchmarkId::from_parameter(name), &bytes, |b, bytes| {
            b.iter(|| black_box(decode_all(Box::new(Cursor::new(bytes.clone()))).0.len()))
        });
    }
    group.finish();
}

criterion_group!(benches, kernels);
criterion_main!(benches);
