//! The quality gate: configured thresholds turn measurements into accept or reject-with-reason.

use crate::clip::Measurements;
use crate::config::GateConfig;
use crate::reason::Reason;

/// Checks a clip's measurements against the thresholds; `None` means accepted.
///
/// Thresholds are checked in a fixed order (duration, speech, SNR, clipping, bandwidth) so the
/// reason given for a clip failing several is stable. Duplicates are decided later, in input order.
pub fn check(measurements: &Measurements, gate: &GateConfig) -> Option<(Reason, String)> {
    if !gate.enabled {
        return None;
    }
    if let (Some(min), Some(duration)) = (gate.min_duration_s, measurements.duration_s)
        && duration < min
    {
        return Some((Reason::TooShort, format!("duration {duration:.3} s is below the minimum {min} s")));
    }
    if let (Some(max), Some(duration)) = (gate.max_duration_s, measurements.duration_s)
        && duration > max
    {
        return Some((Reason::TooLong, format!("duration {duration:.3} s is above the maximum {max} s")));
    }
    if let (Some(min), Some(ratio)) = (gate.min_speech_ratio, measurements.speech_ratio)
        && ratio < min
    {
        return Some((Reason::NoSpeech, format!("speech ratio {ratio:.3} is below the minimum {min}")));
    }
    if let Some(min) = gate.min_snr_db {
        match measurements.snr_db {
            Some(snr) if snr < min => {
                return Some((Reason::LowSnr, format!("estimated SNR {snr:.1} dB is below the minimum {min} dB")));
            }
            None => return Some((Reason::LowSnr, "SNR could not be estimated (no signal)".to_string())),
            Some(_) => {}
        }
    }
    if let (Some(max), Some(ratio)) = (gate.max_clipping_ratio, measurements.clipping_ratio)
        && ratio > max
    {
        return Some((
            Reason::Clipped,
            format!("{:.2}% of samples are clipped (maximum {:.2}%)", ratio * 100.0, max * 100.0),
        ));
    }
    if let Some(min) = gate.min_bandwidth_hz {
        match measurements.bandwidth_hz {
            Some(bandwidth) if bandwidth < min => {
                return Some((
                    Reason::Narrowband,
                    format!("effective bandwidth {bandwidth:.0} Hz is below the minimum {min} Hz"),
                ));
            }
            None => return Some((Reason::Narrowband, "bandwidth could not be measured (no signal)".to_string())),
            Some(_) => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> Measurements {
        Measurements {
            duration_s: Some(3.0),
            speech_ratio: Some(0.8),
            snr_db: Some(30.0),
            clipping_ratio: Some(0.0),
            bandwidth_hz: Some(7600.0),
            ..Measurements::default()
        }
    }

    #[test]
    fn a_good_clip_passes_the_default_gate() {
        assert_eq!(check(&good(), &GateConfig::default()), None);
    }

    #[test]
    fn each_threshold_rejects_with_its_own_reason() {
        let gate = GateConfig { min_bandwidth_hz: Some(4000.0), ..GateConfig::default() };
        let cases = [
            (Measurements { duration_s: Some(0.2), ..good() }, Reason::TooShort),
            (Measurements { duration_s: Some(61.0), ..good() }, Reason::TooLong),
            (Measurements { speech_ratio: Some(0.01), ..good() }, Reason::NoSpeech),
            (Measurements { snr_db: Some(2.0), ..good() }, Reason::LowSnr),
            (Measurements { clipping_ratio: Some(0.05), ..good() }, Reason::Clipped),
            (Measurements { bandwidth_hz: Some(3400.0), ..good() }, Reason::Narrowband),
        ];
        for (measurements, reason) in cases {
            let (got, message) = check(&measurements, &gate).expect("rejected");
            assert_eq!(got, reason, "{message}");
            assert!(!message.is_empty());
        }
    }

    #[test]
    fn a_disabled_gate_accepts_everything() {
        let gate = GateConfig { enabled: false, ..GateConfig::default() };
        assert_eq!(check(&Measurements { speech_ratio: Some(0.0), snr_db: None, ..good() }, &gate), None);
    }
}
