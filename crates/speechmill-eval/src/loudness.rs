//! Loudness: EBU Tech 3341 test signals (synthesised) and real speech, against ffmpeg and
//! pyloudnorm.

use anyhow::Result;
use serde_json::json;
use speechmill_audio::loudness::LoudnessMeter;

use crate::signals::{load_corpus, sine, write_wav_f32};
use crate::tools::{Tools, fmt, fmt_signed};

/// One synthesised case: name, channels, rate, interleaved samples, expected LUFS.
struct Case {
    name: String,
    channels: u16,
    rate: u32,
    samples: Vec<f32>,
    expected: f64,
}

/// A 1 kHz tone sequence `(seconds, dBFS peak)` on every one of `channels` channels, with per
/// channel offsets in dB.
fn tone_sequence(rate: u32, segments: &[(f64, f64)], channel_offsets_db: &[f64]) -> Vec<f32> {
    let mut mono_parts: Vec<Vec<f32>> = Vec::new();
    for &(seconds, dbfs) in segments {
        mono_parts.push(sine(1000.0, rate, seconds, dbfs));
    }
    let mono: Vec<f32> = mono_parts.concat();
    let gains: Vec<f32> = channel_offsets_db.iter().map(|db| 10f64.powf(db / 20.0) as f32).collect();
    mono.iter().flat_map(|&x| gains.iter().map(move |g| x * g)).collect()
}

/// EBU Tech 3341 (v4, 2016) table 1, cases 1-6 (7 and 8 are programme files we do not have),
/// plus the mono case, at 48 kHz and at speechmill's 16 kHz.
fn cases() -> Vec<Case> {
    let stereo = [0.0, 0.0];
    let mut cases = Vec::new();
    for rate in [48000, 16000] {
        let mut push = |name: &str, channels: u16, samples: Vec<f32>, expected: f64| {
            cases.push(Case { name: format!("{name} @ {} kHz", rate / 1000), channels, rate, samples, expected });
        };
        push("3341 #1: stereo 1 kHz -23 dBFS, 20 s", 2, tone_sequence(rate, &[(20.0, -23.0)], &stereo), -23.0);
        push("3341 #2: stereo 1 kHz -33 dBFS, 20 s", 2, tone_sequence(rate, &[(20.0, -33.0)], &stereo), -33.0);
        push(
            "3341 #3: -36/-23/-36 dBFS, 10/60/10 s",
            2,
            tone_sequence(rate, &[(10.0, -36.0), (60.0, -23.0), (10.0, -36.0)], &stereo),
            -23.0,
        );
        push(
            "3341 #4: -72/-36/-23/-36/-72 dBFS",
            2,
            tone_sequence(rate, &[(10.0, -72.0), (10.0, -36.0), (20.0, -23.0), (10.0, -36.0), (10.0, -72.0)], &stereo),
            -23.0,
        );
        push(
            "3341 #5: -26/-20/-26 dBFS, 20/20.1/20 s",
            2,
            tone_sequence(rate, &[(20.0, -26.0), (20.1, -20.0), (20.0, -26.0)], &stereo),
            -23.0,
        );
        // L, R at -28 dBFS, C at -24, Ls, Rs at -30 (weighted 1.41): -23.0 LUFS.
        push(
            "3341 #6: 5.0 channels L,R -28 C -24 Ls,Rs -30",
            5,
            tone_sequence(rate, &[(20.0, 0.0)], &[-28.0, -28.0, -24.0, -30.0, -30.0]),
            -23.0,
        );
        push("mono 1 kHz -23 dBFS (counted once)", 1, tone_sequence(rate, &[(20.0, -23.0)], &[0.0]), -26.0103);
    }
    cases
}

fn ours(samples: &[f32], channels: u16, rate: u32) -> Option<f64> {
    let mut meter = LoudnessMeter::new(channels, rate);
    meter.add(samples);
    meter.integrated_lufs()
}

/// Measures and writes the loudness tables.
pub fn run(tools: &Tools) -> Result<String> {
    let mut out = String::from("## Loudness (EBU R128 / ITU-R BS.1770 integrated loudness)\n\n");
    out.push_str(
        "Ours: `speechmill_audio::loudness::LoudnessMeter` (the `ebur128` crate). ffmpeg `ebur128` prints\n\
         0.1 LU, so its column carries up to 0.05 LU of rounding. In case 6 ffmpeg has to guess the layout of a\n\
         5-channel WAV without a channel mask and does not weight the surround pair, hence its -23.6/-23.7.\n\n\
         ### Synthesised EBU Tech 3341 cases (target: within ±0.1 LU of the expected value)\n\n\
         | case | expected LUFS | ours | ours − expected | ffmpeg ebur128 | pyloudnorm |\n|---|---|---|---|---|---|\n",
    );
    let cases = cases();
    let mut files = Vec::new();
    for (index, case) in cases.iter().enumerate() {
        let file = tools.work_file(&format!("loudness-case-{index}.wav"));
        write_wav_f32(&file, &case.samples, case.channels, case.rate)?;
        files.push(file);
    }
    let pyloudnorm = tools.python(&json!({"task": "loudness", "files": files}))?;
    let mut worst = 0.0f64;
    for (index, case) in cases.iter().enumerate() {
        let value = ours(&case.samples, case.channels, case.rate);
        let error = value.map(|v| v - case.expected);
        worst = worst.max(error.map_or(f64::INFINITY, f64::abs));
        out.push_str(&format!(
            "| {} | {:.2} | {} | {} | {} | {} |\n",
            case.name,
            case.expected,
            fmt(value, 2),
            fmt_signed(error, 2),
            fmt(tools.ffmpeg_ebur128(&files[index])?, 1),
            fmt(pyloudnorm["lufs"][index].as_f64(), 2),
        ));
    }
    out.push_str(&format!(
        "\nLargest |ours − expected|: **{worst:.3} LU** ({}).\n\n",
        if worst <= 0.1 { "target met" } else { "target missed" }
    ));

    out.push_str(
        "### Real speech (target: within ±0.1 LU of libebur128 and pyloudnorm)\n\n\
         Each recording at its own rate, mono, as the same 32-bit float WAV given to every tool. pyloudnorm \
         counts `round((T - 0.4) / 0.1) + 1` gating blocks, so when that rounds up its last block runs past the \
         end and is averaged as if zero-padded, which lowers short clips' loudness; the last two columns measure \
         each clip cut to a whole number of 100 ms hops, where that block does not arise.\n\n\
         | recording | rate | ours | ffmpeg ebur128 | ours − ebur128 | pyloudnorm | ours − pyloudnorm | ours − pyloudnorm, cut |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    let corpus = load_corpus(&tools.data)?;
    let mut files = Vec::new();
    let mut cut_files = Vec::new();
    for clip in &corpus {
        let file = tools.work_file(&format!("loudness-{}.wav", clip.name));
        write_wav_f32(&file, &clip.samples, 1, clip.rate)?;
        files.push(file);
        let file = tools.work_file(&format!("loudness-{}-cut.wav", clip.name));
        write_wav_f32(&file, cut(&clip.samples, clip.rate), 1, clip.rate)?;
        cut_files.push(file);
    }
    let pyloudnorm = tools.python(&json!({"task": "loudness", "files": files}))?;
    let pyloudnorm_cut = tools.python(&json!({"task": "loudness", "files": cut_files}))?;
    let (mut worst_ebur, mut worst_py, mut worst_cut) = (0.0f64, 0.0f64, 0.0f64);
    let track = |worst: &mut f64, d: Option<f64>| *worst = worst.max(d.map_or(f64::INFINITY, f64::abs));
    for (index, clip) in corpus.iter().enumerate() {
        let value = ours(&clip.samples, 1, clip.rate);
        let ebur = tools.ffmpeg_ebur128(&files[index])?;
        let py = pyloudnorm["lufs"][index].as_f64();
        let diff = |a: Option<f64>, b: Option<f64>| a.zip(b).map(|(a, b)| a - b);
        let cut_diff = diff(ours(cut(&clip.samples, clip.rate), 1, clip.rate), pyloudnorm_cut["lufs"][index].as_f64());
        track(&mut worst_ebur, diff(value, ebur));
        track(&mut worst_py, diff(value, py));
        track(&mut worst_cut, cut_diff);
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
            clip.name,
            clip.rate,
            fmt(value, 2),
            fmt(ebur, 1),
            fmt_signed(diff(value, ebur), 2),
            fmt(py, 2),
            fmt_signed(diff(value, py), 2),
            fmt_signed(cut_diff, 2),
        ));
    }
    out.push_str(&format!(
        "\nLargest difference: **{worst_ebur:.2} LU against ffmpeg ebur128** (which prints 0.1 LU), {worst_py:.2} LU \
         against pyloudnorm on the clips as they are, **{worst_cut:.2} LU against pyloudnorm on whole hops**.\n\n"
    ));
    Ok(out)
}

/// The clip cut to a whole number of 100 ms hops.
fn cut(samples: &[f32], rate: u32) -> &[f32] {
    let hop = rate as usize / 10;
    &samples[..samples.len() / hop * hop]
}
