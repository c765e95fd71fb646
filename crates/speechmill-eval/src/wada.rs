//! WADA-SNR: the blind waveform-amplitude-distribution SNR estimator of Kim and Stern,
//! "Robust signal-to-noise ratio estimation based on waveform amplitude distribution analysis",
//! Interspeech 2008.
//!
//! The paper models clean speech amplitudes as Gamma distributed with shape 0.4 and the noise as
//! Gaussian. The statistic `G = ln(E|z|) - E[ln|z|]` of the noisy signal `z` is then a known,
//! monotonic function of the SNR, which the estimator inverts by table look-up. The paper
//! tabulates it by simulation; so does [`Wada::new`], from seeded Gamma and Gaussian draws
//! (common random numbers across the table, so the table is smooth and monotonic), from -20
//! to 100 dB in 1 dB steps as in the paper's implementation.

use crate::signals::Rng;

/// Shape parameter of the Gamma model of speech amplitudes (the paper's value).
const SPEECH_GAMMA_SHAPE: f64 = 0.4;
/// Lowest and highest tabulated SNR in dB.
const TABLE_DB: (i32, i32) = (-20, 100);
/// Draws per table entry.
const DRAWS: usize = 400_000;
/// Magnitudes below this count as this (the paper's implementation floors at 1e-10 likewise),
/// so digital silence does not give ln 0.
const FLOOR: f64 = 1e-10;

/// A WADA-SNR estimator with its G(SNR) table.
pub struct Wada {
    /// `(snr_db, g)` in increasing SNR (and G).
    table: Vec<(f64, f64)>,
}

impl Wada {
    /// Tabulates G(SNR) from the paper's model.
    pub fn new() -> Self {
        let mut rng = Rng::new(0x57ada);
        let speech: Vec<f64> = (0..DRAWS)
            .map(|_| {
                let magnitude = rng.gamma(SPEECH_GAMMA_SHAPE);
                if rng.next_u64() & 1 == 0 { magnitude } else { -magnitude }
            })
            .collect();
        let noise: Vec<f64> = (0..DRAWS).map(|_| rng.normal()).collect();
        // E[x^2] of a Gamma(k, 1) magnitude is k (k + 1).
        let speech_power = SPEECH_GAMMA_SHAPE * (SPEECH_GAMMA_SHAPE + 1.0);
        let table = (TABLE_DB.0..=TABLE_DB.1)
            .map(|snr| {
                let snr_db = f64::from(snr);
                let sigma = (speech_power / 10f64.powf(snr_db / 10.0)).sqrt();
                let (mut sum_abs, mut sum_log) = (0.0, 0.0);
                for (&x, &n) in speech.iter().zip(&noise) {
                    let magnitude = (x + sigma * n).abs().max(FLOOR);
                    sum_abs += magnitude;
                    sum_log += magnitude.ln();
                }
                (snr_db, (sum_abs / DRAWS as f64).ln() - sum_log / DRAWS as f64)
            })
            .collect();
        Self { table }
    }

    /// The estimated SNR of `signal` in dB, clamped to the table's range.
    pub fn estimate(&self, signal: &[f32]) -> f64 {
        let peak = signal.iter().fold(0.0f32, |peak, x| peak.max(x.abs()));
        if peak == 0.0 {
            return self.table[0].0;
        }
        let scale = 1.0 / f64::from(peak);
        let (mut sum_abs, mut sum_log) = (0.0, 0.0);
        for &x in signal {
            let magnitude = (f64::from(x) * scale).abs().max(FLOOR);
            sum_abs += magnitude;
            sum_log += magnitude.ln();
        }
        let count = signal.len() as f64;
        let g = (sum_abs / count).max(FLOOR).ln() - sum_log / count;
        self.invert(g)
    }

    /// The SNR whose G is `g`, interpolated linearly between table entries.
    fn invert(&self, g: f64) -> f64 {
        let (first, last) = (self.table[0], self.table[self.table.len() - 1]);
        if g <= first.1 {
            return first.0;
        }
        if g >= last.1 {
            return last.0;
        }
        let upper = self.table.iter().position(|&(_, value)| value > g).expect("g is below the last entry");
        let (low, high) = (self.table[upper - 1], self.table[upper]);
        low.0 + (g - low.1) / (high.1 - low.1) * (high.0 - low.0)
    }

    /// The table's end points `(G at -20 dB, G at 100 dB)`, for the report.
    pub fn table_ends(&self) -> (f64, f64) {
        (self.table[0].1, self.table[self.table.len() - 1].1)
    }
}
