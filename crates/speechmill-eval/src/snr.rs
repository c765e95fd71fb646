//! SNR: real speech mixed with white, pink, babble and recorded noise at known true SNRs;
//! speechmill's estimator and WADA-SNR side by side.

use anyhow::Result;
use speechmill_audio::measure::analyse_speech;

use crate::signals::{
    SpeechClip, energy, load_clip, load_corpus, looped, mix_at_snr, pink_noise, resample, white_noise,
};
use crate::tools::Tools;
use crate::wada::Wada;

/// True SNRs mixed, in dB.
fn true_snrs() -> Vec<f64> {
    (0..=14).map(|step| -5.0 + 2.5 * f64::from(step)).collect()
}

/// Noise kinds, in table order.
pub const NOISES: [&str; 4] = ["white", "pink", "recorded", "babble"];

/// One mixture's result.
pub struct Trial {
    pub clip: String,
    pub noise: &'static str,
    pub true_snr_db: f64,
    pub ours_db: f64,
    pub wada_db: f64,
}

/// The recording family of a clip (`librivox`, `cards`, `goforward`, `alsa`): babble for a clip
/// is made only from other families, so it never contains the same voice and text.
fn family(name: &str) -> &str {
    name.split('-').next().unwrap_or(name)
}

/// The evaluation clips: the corpus at 16 kHz (the 48 kHz ones resampled), two at 8 kHz, and two
/// built with long pauses (digital silence between utterances).
pub fn snr_clips(tools: &Tools) -> Result<Vec<SpeechClip>> {
    let corpus = load_corpus(&tools.data)?;
    let at_16k = |clip: &SpeechClip| resample(&clip.samples, clip.rate, 16000);
    let find = |name: &str| corpus.iter().find(|clip| clip.name == name).expect("clip is in the corpus");
    let mut clips: Vec<SpeechClip> = corpus
        .iter()
        .map(|clip| SpeechClip { name: clip.name.clone(), file: clip.file.clone(), samples: at_16k(clip), rate: 16000 })
        .collect();
    for name in ["librivox-0880", "cards-005"] {
        let clip = find(name);
        clips.push(SpeechClip {
            name: format!("{name}@8k"),
            file: clip.file.clone(),
            samples: resample(&clip.samples, clip.rate, 8000),
            rate: 8000,
        });
    }
    let silence = |seconds: f64| vec![0.0f32; (seconds * 16000.0) as usize];
    clips.push(SpeechClip {
        name: "librivox-pauses".to_owned(),
        file: "0880 + 2 s + 0890".to_owned(),
        samples: [at_16k(find("librivox-0880")), silence(2.0), at_16k(find("librivox-0890"))].concat(),
        rate: 16000,
    });
    clips.push(SpeechClip {
        name: "alsa-pauses".to_owned(),
        file: "1.5 s + Front_Left + 2.5 s + Side_Right + 1 s".to_owned(),
        samples: [
            silence(1.5),
            at_16k(find("alsa-front-left")),
            silence(2.5),
            at_16k(find("alsa-side-right")),
            silence(1.0),
        ]
        .concat(),
        rate: 16000,
    });
    Ok(clips)
}

/// Noise of kind `noise` for `target`, `len` samples at `target.rate`, seeded by `seed`.
pub fn make_noise(
    noise: &str,
    target: &SpeechClip,
    others: &[SpeechClip],
    recorded_48k: &[f32],
    len: usize,
    seed: u64,
) -> Vec<f32> {
    match noise {
        "white" => white_noise(len, seed),
        "pink" => pink_noise(len, seed),
        "recorded" => looped(&resample(recorded_48k, 48000, target.rate), seed as usize * 7919, len),
        "babble" => {
            // Four talkers from other recordings, equal energy, each from its own offset.
            let talkers: Vec<&SpeechClip> = others
                .iter()
                .filter(|other| family(&other.name) != family(&target.name) && !other.name.contains('@'))
                .filter(|other| !other.name.ends_with("pauses"))
                .collect();
            let mut babble = vec![0.0f32; len];
            for talker_index in 0..4 {
                let talker = talkers[(seed as usize + talker_index * 3) % talkers.len()];
                let voice = resample(&talker.samples, talker.rate, target.rate);
                let scale = (1.0 / (energy(&voice) / voice.len() as f64)).sqrt() as f32;
                let offset = (seed as usize * 1013 + talker_index * 4001) % voice.len();
                for (slot, sample) in babble.iter_mut().zip(looped(&voice, offset, len)) {
                    *slot += sample * scale;
                }
            }
            babble
        }
        _ => unreachable!("unknown noise {noise}"),
    }
}

/// Runs every mixture.
pub fn trials(tools: &Tools, wada: &Wada) -> Result<(Vec<SpeechClip>, Vec<Trial>)> {
    let clips = snr_clips(tools)?;
    let recorded = load_clip(&tools.data, "noise", "alsa-utils/Noise.wav")?;
    let mut trials = Vec::new();
    for (clip_index, clip) in clips.iter().enumerate() {
        for (noise_index, &noise) in NOISES.iter().enumerate() {
            for (level_index, true_snr_db) in true_snrs().into_iter().enumerate() {
                let seed = 1 + (clip_index * 1000 + noise_index * 100 + level_index) as u64;
                let noise_signal = make_noise(noise, clip, &clips, &recorded.samples, clip.samples.len(), seed);
                let mixed = mix_at_snr(&clip.samples, &noise_signal, true_snr_db);
                let ours_db = analyse_speech(&mixed, clip.rate).snr_db.unwrap_or(f64::NAN);
                trials.push(Trial {
                    clip: clip.name.clone(),
                    noise,
                    true_snr_db,
                    ours_db,
                    wada_db: wada.estimate(&mixed),
                });
            }
        }
    }
    Ok((clips, trials))
}

/// `(bias, MAE, max |error|)` of `errors`.
fn stats(errors: &[f64]) -> (f64, f64, f64) {
    let n = errors.len().max(1) as f64;
    let bias = errors.iter().sum::<f64>() / n;
    let mae = errors.iter().map(|e| e.abs()).sum::<f64>() / n;
    let max = errors.iter().fold(0.0f64, |m, e| m.max(e.abs()));
    (bias, mae, max)
}

/// Own SNR (ours on the clip as recorded) at or above which a recording counts as clean.
const CLEAN_RECORDING_DB: f64 = 30.0;

/// The same errors, true SNR 0-20 dB, where the recordings' own noise cannot spoil them: on the
/// clean recordings alone, and against the mixtures' physical SNR (own noise counted as noise).
fn physical_table(clips: &[SpeechClip], trials: &[Trial]) -> String {
    let own_snr_db: Vec<(String, f64)> = clips
        .iter()
        .map(|clip| (clip.name.clone(), analyse_speech(&clip.samples, clip.rate).snr_db.unwrap_or(f64::INFINITY)))
        .collect();
    let own = |name: &str| own_snr_db.iter().find(|(clip, _)| clip == name).map_or(f64::INFINITY, |(_, snr)| *snr);
    let clean_names: Vec<&str> =
        own_snr_db.iter().filter(|(_, snr)| *snr >= CLEAN_RECORDING_DB).map(|(name, _)| name.as_str()).collect();
    let mut out = format!(
        "\n### What the recordings' own noise costs, true SNR 0–20 dB\n\n\
         The target above counts each recording's own noise as signal (it is part of the clean clip's energy), so \
         a mixture holds more noise than was added, and an estimator that reads the mixture correctly comes out \
         under the true SNR wherever the own noise is not far below the added noise (`ours on clean` in the per-clip \
         table below). \
         Two views that leave that out, for reading the estimator itself (they do not replace the target): the \
         {} recordings whose own SNR reads {CLEAN_RECORDING_DB:.0} dB or more ({}), against the true SNR; and every \
         clip against the mixture's physical SNR, `-10 log10(10^(-true/10) + 10^(-own/10))`, with `own` our \
         estimate on the clip as recorded (so it trusts our estimator on clean speech).\n\n\
         | noise | clean recordings n | ours MAE | ours max | all clips n | ours MAE vs physical | ours max vs physical |\n\
         |---|---|---|---|---|---|---|\n",
        clean_names.len(),
        clean_names.join(", "),
    );
    for noise in NOISES {
        let in_range: Vec<&Trial> =
            trials.iter().filter(|t| t.noise == noise && (0.0..=20.0).contains(&t.true_snr_db)).collect();
        let clean_errors: Vec<f64> = in_range
            .iter()
            .filter(|t| clean_names.contains(&t.clip.as_str()))
            .map(|t| t.ours_db - t.true_snr_db)
            .collect();
        let physical_errors: Vec<f64> = in_range
            .iter()
            .map(|t| {
                let physical = -10.0 * (10f64.powf(-t.true_snr_db / 10.0) + 10f64.powf(-own(&t.clip) / 10.0)).log10();
                t.ours_db - physical
            })
            .collect();
        let (_, clean_mae, clean_max) = stats(&clean_errors);
        let (_, physical_mae, physical_max) = stats(&physical_errors);
        out.push_str(&format!(
            "| {noise} | {} | {clean_mae:.2} | {clean_max:.2} | {} | {physical_mae:.2} | {physical_max:.2} |\n",
            clean_errors.len(),
            physical_errors.len()
        ));
    }
    out
}

/// Measures and writes the SNR tables.
pub fn run(tools: &Tools) -> Result<String> {
    let wada = Wada::new();
    let (clips, trials) = trials(tools, &wada)?;
    // Every mixture, for digging into the summary below.
    let mut tsv = String::from("clip\tnoise\ttrue_snr_db\tours_db\twada_db\n");
    for t in &trials {
        tsv.push_str(&format!("{}\t{}\t{}\t{:.3}\t{:.3}\n", t.clip, t.noise, t.true_snr_db, t.ours_db, t.wada_db));
    }
    std::fs::write(tools.work_file("snr-trials.tsv"), tsv)?;
    let mut out = String::from("## SNR\n\n");
    out.push_str(&format!(
        "Material: {} clips ({} at 16 kHz, including the 48 kHz recordings resampled; two at 8 kHz; two with \
         long pauses of digital silence between utterances), each mixed with white (Gaussian), pink (Gaussian \
         through a -3 dB/octave filter), the recorded pink noise `alsa-utils/Noise.wav` (looped) and babble (four \
         talkers from other recordings, equal level) at true SNRs from -5 to 30 dB in 2.5 dB steps: {} mixtures. \
         True SNR = energy of the clean clip over energy of the added noise, over the whole clip. Ours: \
         `analyse_speech(..).snr_db`. WADA-SNR: Kim and Stern (2008), implemented in `crates/speechmill-eval/src/wada.rs` \
         with its G(SNR) table simulated from the paper's model (Gamma speech amplitudes, shape 0.4; Gaussian noise; \
         G from {:.3} at -20 dB to {:.3} at 100 dB). Error = estimate − true SNR. Bands are [low, low + 5) dB, the \
         last one including 30 dB.\n\n",
        clips.len(),
        clips.iter().filter(|c| c.rate == 16000).count(),
        trials.len(),
        wada.table_ends().0,
        wada.table_ends().1,
    ));
    out.push_str("| noise | band dB | n | ours bias | ours MAE | ours max | WADA bias | WADA MAE | WADA max |\n|---|---|---|---|---|---|---|---|---|\n");
    for noise in NOISES {
        for band in 0..7 {
            let low = -5.0 + 5.0 * f64::from(band);
            let in_band: Vec<&Trial> = trials
                .iter()
                .filter(|t| {
                    t.noise == noise
                        && t.true_snr_db >= low
                        && (t.true_snr_db < low + 5.0 || (band == 6 && t.true_snr_db <= 30.0))
                })
                .collect();
            let ours: Vec<f64> = in_band.iter().map(|t| t.ours_db - t.true_snr_db).collect();
            let wada_errors: Vec<f64> = in_band.iter().map(|t| t.wada_db - t.true_snr_db).collect();
            let (ob, om, ox) = stats(&ours);
            let (wb, wm, wx) = stats(&wada_errors);
            out.push_str(&format!(
                "| {noise} | {low:.0}..{:.0} | {} | {ob:+.2} | {om:.2} | {ox:.2} | {wb:+.2} | {wm:.2} | {wx:.2} |\n",
                low + 5.0,
                in_band.len()
            ));
        }
    }
    out.push_str(
        "\n### Against the targets, true SNR 0–20 dB\n\n\
         Targets: MAE ≤ 1.0 dB and no error above 3 dB for stationary noise (white, pink, recorded); MAE ≤ 2.0 dB for babble.\n\n\
         | noise | n | ours MAE | ours max | WADA MAE | WADA max | target | ours meets it |\n|---|---|---|---|---|---|---|---|\n",
    );
    for noise in NOISES {
        let in_range: Vec<&Trial> =
            trials.iter().filter(|t| t.noise == noise && (0.0..=20.0).contains(&t.true_snr_db)).collect();
        let (_, om, ox) = stats(&in_range.iter().map(|t| t.ours_db - t.true_snr_db).collect::<Vec<_>>());
        let (_, wm, wx) = stats(&in_range.iter().map(|t| t.wada_db - t.true_snr_db).collect::<Vec<_>>());
        let (target, met) = if noise == "babble" {
            ("MAE ≤ 2.0", om <= 2.0)
        } else {
            ("MAE ≤ 1.0, max ≤ 3.0", om <= 1.0 && ox <= 3.0)
        };
        out.push_str(&format!(
            "| {noise} | {} | {om:.2} | {ox:.2} | {wm:.2} | {wx:.2} | {target} | {} |\n",
            in_range.len(),
            if met { "yes" } else { "**no**" }
        ));
    }
    out.push_str(&physical_table(&clips, &trials));
    // Monotonic above 20 dB: per clip and noise, the estimates at 20, 22.5, ..., 30 dB.
    let (mut monotonic, mut series) = (0, 0);
    let mut offenders = Vec::new();
    for clip in &clips {
        for noise in NOISES {
            let values: Vec<f64> = trials
                .iter()
                .filter(|t| t.clip == clip.name && t.noise == noise && t.true_snr_db >= 20.0)
                .map(|t| t.ours_db)
                .collect();
            series += 1;
            if values.windows(2).all(|pair| pair[1] >= pair[0]) {
                monotonic += 1;
            } else {
                offenders.push(format!(
                    "{} + {noise}: {}",
                    clip.name,
                    values.iter().map(|v| format!("{v:.1}")).collect::<Vec<_>>().join(", ")
                ));
            }
        }
    }
    out.push_str(&format!(
        "\nMonotonic above 20 dB (ours non-decreasing over 20, 22.5, 25, 27.5, 30 dB): **{monotonic} of {series}** \
         clip-and-noise series{}\n\n",
        if offenders.is_empty() { ".".to_owned() } else { format!("; not: {}.", offenders.join("; ")) }
    ));
    out.push_str(
        "### Per clip, true SNR 0–20 dB\n\n\
         The clean recordings carry their own noise; `ours on clean` is our estimate on the clip as recorded, which \
         bounds what any estimator can read at high true SNR.\n\n\
         | clip | rate | ours on clean | ours MAE stationary | ours max stationary | ours MAE babble | WADA MAE stationary | WADA MAE babble |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    for clip in &clips {
        let pick = |babble: bool| -> Vec<&Trial> {
            trials
                .iter()
                .filter(|t| {
                    t.clip == clip.name && (t.noise == "babble") == babble && (0.0..=20.0).contains(&t.true_snr_db)
                })
                .collect()
        };
        let ours_err = |set: &[&Trial]| stats(&set.iter().map(|t| t.ours_db - t.true_snr_db).collect::<Vec<_>>());
        let wada_err = |set: &[&Trial]| stats(&set.iter().map(|t| t.wada_db - t.true_snr_db).collect::<Vec<_>>());
        let (stationary, babble) = (pick(false), pick(true));
        let clean = analyse_speech(&clip.samples, clip.rate).snr_db;
        out.push_str(&format!(
            "| {} | {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |\n",
            clip.name,
            clip.rate,
            clean.map_or("-".to_owned(), |v| format!("{v:.1}")),
            ours_err(&stationary).1,
            ours_err(&stationary).2,
            ours_err(&babble).1,
            wada_err(&stationary).1,
            wada_err(&babble).1,
        ));
    }
    out.push('\n');
    Ok(out)
}
