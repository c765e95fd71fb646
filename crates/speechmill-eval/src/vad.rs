//! Speech activity: frame-level F1 against known boundaries, webrtcvad on the same frames, and
//! false-speech rates on noise-only controls.

use anyhow::Result;
use serde_json::{Value, json};
use speechmill_audio::measure::{SpeechAnalyser, VAD_FRAME};

use crate::signals::{
    Rng, energy, load_clip, load_corpus, looped, mix_at_snr, pink_noise, resample, white_noise, write_wav_i16,
};
use crate::tools::Tools;

/// The common grid both detectors are scored on: 10 ms at 16 kHz.
const GRID: usize = 160;
/// webrtcvad frame length.
const WEBRTC_FRAME_MS: usize = 30;
const MODES: [u8; 4] = [0, 1, 2, 3];

/// Reference labels of one clean utterance on the 10 ms grid: a frame is speech when its energy is
/// within 35 dB of the utterance's loudest frame and at least 6 dB above its own noise floor (the
/// 10th percentile of frame energies); gaps up to 150 ms are bridged (stop closures, the
/// detectors' own hangover) and runs under 30 ms dropped.
fn reference_labels(clean: &[f32]) -> Vec<bool> {
    let frames: Vec<f64> = clean.chunks(GRID).map(|chunk| energy(chunk) / chunk.len() as f64).collect();
    let peak = frames.iter().copied().fold(0.0, f64::max);
    let mut sorted = frames.clone();
    sorted.sort_by(f64::total_cmp);
    let floor = sorted[sorted.len() / 10];
    let threshold = (peak * 10f64.powf(-3.5)).max(floor * 10f64.powf(0.6));
    let mut labels: Vec<bool> = frames.iter().map(|&e| e > threshold && e > 0.0).collect();
    bridge(&mut labels, 15);
    drop_short(&mut labels, 3);
    labels
}

fn bridge(labels: &mut [bool], max_gap: usize) {
    let mut last: Option<usize> = None;
    for index in 0..labels.len() {
        if labels[index] {
            if let Some(previous) = last
                && index - previous - 1 <= max_gap
            {
                labels[previous + 1..index].fill(true);
            }
            last = Some(index);
        }
    }
}

fn drop_short(labels: &mut [bool], min_run: usize) {
    let mut start = 0;
    while start < labels.len() {
        if !labels[start] {
            start += 1;
            continue;
        }
        let end = labels[start..].iter().position(|&s| !s).map_or(labels.len(), |o| start + o);
        if end - start < min_run {
            labels[start..end].fill(false);
        }
        start = end;
    }
}

/// A sequence of utterances separated by silence, with its reference labels on the grid.
fn build_sequence(tools: &Tools) -> Result<(Vec<f32>, Vec<bool>)> {
    let corpus = load_corpus(&tools.data)?;
    let mut rng = Rng::new(0x5e9);
    let mut audio = Vec::new();
    let mut labels = Vec::new();
    let pause = |audio: &mut Vec<f32>, labels: &mut Vec<bool>, rng: &mut Rng| {
        let frames = 40 + (rng.uniform() * 110.0) as usize; // 0.4-1.5 s
        audio.extend(std::iter::repeat_n(0.0f32, frames * GRID));
        labels.extend(std::iter::repeat_n(false, frames));
    };
    pause(&mut audio, &mut labels, &mut rng);
    for clip in &corpus {
        let mut speech = resample(&clip.samples, clip.rate, 16000);
        // Every utterance at -26 dBFS RMS, padded to whole grid frames.
        let gain = (10f64.powf(-26.0 / 10.0) / (energy(&speech) / speech.len() as f64)).sqrt() as f32;
        speech.iter_mut().for_each(|x| *x *= gain);
        speech.resize(speech.len().div_ceil(GRID) * GRID, 0.0);
        labels.extend(reference_labels(&speech));
        audio.extend(speech);
        pause(&mut audio, &mut labels, &mut rng);
    }
    Ok((audio, labels))
}

/// Our decisions on the grid: each 10 ms frame takes the decision of the 16 ms frame holding its centre.
fn ours_on_grid(audio: &[f32], grid_frames: usize) -> Vec<bool> {
    let mut analyser = SpeechAnalyser::new();
    analyser.analyse(audio, 16000);
    let frames = analyser.speech_frames();
    (0..grid_frames).map(|g| frames.get((g * GRID + GRID / 2) / VAD_FRAME).copied().unwrap_or(false)).collect()
}

/// webrtcvad's decisions (modes 0-3, 30 ms frames) on the grid.
fn webrtc_on_grid(tools: &Tools, audio: &[f32], grid_frames: usize, name: &str) -> Result<Vec<Vec<bool>>> {
    let file = tools.work_file(&format!("vad-{name}.wav"));
    write_wav_i16(&file, audio, 16000)?;
    let answer = tools.python(&json!({"task": "vad", "file": file, "modes": MODES, "frame_ms": WEBRTC_FRAME_MS}))?;
    let frame = 16 * WEBRTC_FRAME_MS;
    Ok(MODES
        .iter()
        .map(|mode| {
            let decisions: &Vec<Value> = answer["speech"][mode.to_string()].as_array().expect("decisions");
            (0..grid_frames)
                .map(|g| decisions.get((g * GRID + GRID / 2) / frame).and_then(Value::as_i64).unwrap_or(0) == 1)
                .collect()
        })
        .collect())
}

/// `(precision, recall, F1)`.
fn scores(decisions: &[bool], labels: &[bool]) -> (f64, f64, f64) {
    let (mut tp, mut fp, mut fn_) = (0.0, 0.0, 0.0);
    for (&d, &l) in decisions.iter().zip(labels) {
        match (d, l) {
            (true, true) => tp += 1.0,
            (true, false) => fp += 1.0,
            (false, true) => fn_ += 1.0,
            _ => {}
        }
    }
    let precision = if tp + fp > 0.0 { tp / (tp + fp) } else { 0.0 };
    let recall = if tp + fn_ > 0.0 { tp / (tp + fn_) } else { 0.0 };
    let f1 = if precision + recall > 0.0 { 2.0 * precision * recall / (precision + recall) } else { 0.0 };
    (precision, recall, f1)
}

fn ratio(decisions: &[bool]) -> f64 {
    decisions.iter().filter(|&&d| d).count() as f64 / decisions.len().max(1) as f64
}

/// Measures and writes the speech-activity tables.
pub fn run(tools: &Tools) -> Result<String> {
    let (clean, labels) = build_sequence(tools)?;
    let grid_frames = labels.len();
    let recorded = load_clip(&tools.data, "noise", "alsa-utils/Noise.wav")?;
    let recorded_16k = resample(&recorded.samples, 48000, 16000);
    let mut out = String::from("## Speech activity\n\n");
    out.push_str(&format!(
        "Material: the {} human recordings of the corpus at 16 kHz, each at -26 dBFS RMS, in one {:.1} s sequence \
         separated by 0.4–1.5 s pauses of digital silence; then the same sequence with noise added at a true SNR \
         over the whole sequence. Reference labels on a 10 ms grid come from the clean utterances: a frame is speech \
         when its energy is within 35 dB of the utterance's loudest frame and 6 dB above its own floor, with gaps up to \
         150 ms bridged and runs under 30 ms dropped ({:.0} % of frames are speech). Both detectors are scored on the \
         same 10 ms grid: ours (earshot, 16 ms frames, smoothed; `SpeechAnalyser::speech_frames`) and webrtcvad \
         modes 0–3 on 30 ms frames of the same 16-bit audio; each grid frame takes the decision of the frame \
         holding its centre.\n\n\
         | condition | ours precision | ours recall | ours F1 | webrtcvad F1 mode 0 | mode 1 | mode 2 | mode 3 | ours ≥ best webrtcvad |\n\
         |---|---|---|---|---|---|---|---|---|\n",
        crate::signals::SPEECH_FILES.len(),
        clean.len() as f64 / 16000.0,
        100.0 * ratio(&labels),
    ));
    let conditions: [(&str, Option<f64>); 9] = [
        ("clean (digital-silence pauses)", None),
        ("white 20 dB", Some(20.0)),
        ("white 10 dB", Some(10.0)),
        ("white 5 dB", Some(5.0)),
        ("white 0 dB", Some(0.0)),
        ("pink 10 dB", Some(10.0)),
        ("pink 5 dB", Some(5.0)),
        ("recorded 10 dB", Some(10.0)),
        ("recorded 5 dB", Some(5.0)),
    ];
    let mut wins = 0;
    for (index, (name, snr)) in conditions.iter().enumerate() {
        let audio = match snr {
            None => clean.clone(),
            Some(snr) => {
                let noise = if name.starts_with("white") {
                    white_noise(clean.len(), 77 + index as u64)
                } else if name.starts_with("pink") {
                    pink_noise(clean.len(), 77 + index as u64)
                } else {
                    looped(&recorded_16k, index * 3001, clean.len())
                };
                mix_at_snr(&clean, &noise, *snr)
            }
        };
        let ours = ours_on_grid(&audio, grid_frames);
        let (p, r, f1) = scores(&ours, &labels);
        let webrtc: Vec<f64> = webrtc_on_grid(tools, &audio, grid_frames, &format!("seq{index}"))?
            .iter()
            .map(|d| scores(d, &labels).2)
            .collect();
        let best = webrtc.iter().copied().fold(0.0, f64::max);
        wins += usize::from(f1 >= best);
        out.push_str(&format!(
            "| {name} | {p:.3} | {r:.3} | **{f1:.3}** | {:.3} | {:.3} | {:.3} | {:.3} | {} |\n",
            webrtc[0],
            webrtc[1],
            webrtc[2],
            webrtc[3],
            if f1 >= best { "yes" } else { "no" }
        ));
    }
    out.push_str(&format!(
        "\nOurs has an F1 at least that of webrtcvad's best mode in {wins} of {} conditions.\n\n",
        conditions.len()
    ));

    out.push_str(
        "### Noise-only controls (target: under 5 % of frames called speech)\n\n\
         20 s of each noise at three levels (RMS dBFS); share of 10 ms grid frames called speech.\n\n\
         | noise | level dBFS | ours | webrtcvad mode 0 | mode 1 | mode 2 | mode 3 | ours < 5 % |\n|---|---|---|---|---|---|---|---|\n",
    );
    let len = 20 * 16000;
    for (noise_index, noise_name) in ["white", "pink (synthetic)", "recorded (alsa-utils/Noise.wav)"].iter().enumerate()
    {
        let noise = match noise_index {
            0 => white_noise(len, 991),
            1 => pink_noise(len, 992),
            _ => looped(&recorded_16k, 0, len),
        };
        let rms = (energy(&noise) / len as f64).sqrt();
        for level in [-40.0, -30.0, -20.0] {
            let gain = (10f64.powf(level / 20.0) / rms) as f32;
            let audio: Vec<f32> = noise.iter().map(|x| x * gain).collect();
            let grid = len / GRID;
            let ours = ratio(&ours_on_grid(&audio, grid));
            let webrtc: Vec<f64> = webrtc_on_grid(tools, &audio, grid, &format!("control{noise_index}{level}"))?
                .iter()
                .map(|d| ratio(d))
                .collect();
            out.push_str(&format!(
                "| {noise_name} | {level:.0} | **{:.1} %** | {:.1} % | {:.1} % | {:.1} % | {:.1} % | {} |\n",
                100.0 * ours,
                100.0 * webrtc[0],
                100.0 * webrtc[1],
                100.0 * webrtc[2],
                100.0 * webrtc[3],
                if ours < 0.05 { "yes" } else { "**no**" }
            ));
        }
    }

    // WebRTC's own test clip: 8 kHz; no ground truth ships with it, so report agreement.
    let test_clip = crate::signals::read_raw_s16le(&tools.data.join("webrtcvad/test-audio.raw"))?;
    let at_16k = resample(&test_clip, 8000, 16000);
    let grid = at_16k.len() / GRID;
    let ours = ours_on_grid(&at_16k, grid);
    let webrtc = webrtc_on_grid(tools, &at_16k, grid, "webrtc-test-clip")?;
    out.push_str(&format!(
        "\n### WebRTC VAD's own test clip (`webrtcvad/test-audio.raw`, 8 kHz, {:.2} s, resampled to 16 kHz)\n\n\
         Its reference labels are webrtcvad's own outputs, not ground truth, so this reports agreement on the 10 ms grid.\n\n\
         | | ours | mode 0 | mode 1 | mode 2 | mode 3 |\n|---|---|---|---|---|---|\n\
         | speech share | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |\n\
         | agreement with ours | 1.00 | {:.2} | {:.2} | {:.2} | {:.2} |\n\n",
        test_clip.len() as f64 / 8000.0,
        ratio(&ours),
        ratio(&webrtc[0]),
        ratio(&webrtc[1]),
        ratio(&webrtc[2]),
        ratio(&webrtc[3]),
        agreement(&ours, &webrtc[0]),
        agreement(&ours, &webrtc[1]),
        agreement(&ours, &webrtc[2]),
        agreement(&ours, &webrtc[3]),
    ));
    Ok(out)
}

fn agreement(a: &[bool], b: &[bool]) -> f64 {
    a.iter().zip(b).filter(|(x, y)| x == y).count() as f64 / a.len().max(1) as f64
}
