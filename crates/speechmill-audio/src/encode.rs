//! Encoding standardised mono audio as 16-bit FLAC or WAV bytes.
//!
//! Both encoders quantise the same way ([`quantize_16`]): scale by 32768, round to nearest
//! (ties away from zero), clamp to the 16-bit range. Scaling by 32768 rather than 32767 makes a
//! 16-bit source decoded to `f32` (which divides by 32768) re-encode bit-exactly.
//!
//! An empty clip is not an error: both encoders return a valid file holding 0 samples.

use std::io::Cursor;

use flacenc::component::BitRepr;
use flacenc::error::{SourceError, Verify};
use flacenc::source::{Fill, Source};

/// Why encoding failed.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// The encoder rejected its input or configuration.
    #[error("encoder failed: {0}")]
    Encoder(String),
}

/// FLAC frames hold this many samples (the FLAC reference encoder's default for 16-bit audio at
/// levels 3 to 8; 256 ms at 16 kHz).
const FLAC_BLOCK_SIZE: usize = 4096;

/// Highest order of the fixed predictors tried per frame.
///
/// All fixed orders FLAC defines. On 16 kHz speech orders 3 and 4 save only 0.2% and cost about
/// 10% of the encoding time, but on tonal content (a 440 Hz sine) they halve the size.
const FLAC_MAX_FIXED_ORDER: usize = 4;

/// Converts one sample in [-1, 1] to 16-bit PCM: scale, round to nearest, clamp. NaN becomes 0.
#[inline]
pub fn quantize_16(sample: f32) -> i16 {
    // `as` saturates at the i16 bounds and maps NaN to 0 (Rust reference, "numeric cast").
    (sample * 32768.0).round() as i16
}

/// Encodes mono samples in [-1, 1] as 16-bit FLAC (samples outside are clamped).
///
/// The stream info carries the total sample count and the MD5 of the 16-bit samples, as the
/// FLAC format recommends, so `flac -t` verifies the decoded audio. The encoder uses fixed
/// predictors only (no LPC), like `flac -0`: about 3000 times real time per core on 16 kHz
/// speech, at about 60% of the WAV size (LPC would save another 7% at a third of the speed).
/// An empty `mono` gives a valid FLAC file with 0 samples.
///
/// # Errors
///
/// [`EncodeError::Encoder`] when `sample_rate` is 0 or above what FLAC can declare (655350 Hz).
pub fn encode_flac_16(mono: &[f32], sample_rate: u32) -> Result<Vec<u8>, EncodeError> {
    check_sample_rate(sample_rate)?;
    let config = flac_config()
        .into_verified()
        .map_err(|(_, error)| EncodeError::Encoder(format!("flac configuration: {error}")))?;
    let source = MonoLe16Source::new(mono, sample_rate);
    let mut stream = flacenc::encode_with_fixed_block_size(&config, source, FLAC_BLOCK_SIZE)
        .map_err(|error| EncodeError::Encoder(format!("flac: {error}")))?;
    // flacenc lowers the minimum block size to the last, shorter frame's; the format excludes
    // the last block from that field and forbids values under 16, so a clip ending in a frame
    // of fewer than 16 samples would be rejected by strict decoders (claxon). Declare the
    // fixed block size as the reference encoder does.
    stream
        .stream_info_mut()
        .set_block_sizes(FLAC_BLOCK_SIZE, FLAC_BLOCK_SIZE)
        .map_err(|error| EncodeError::Encoder(format!("flac stream info: {error}")))?;
    let mut sink = flacenc::bitsink::ByteSink::with_capacity(stream.count_bits().div_ceil(8));
    stream.write(&mut sink).map_err(|error| EncodeError::Encoder(format!("flac output: {error}")))?;
    Ok(sink.into_inner())
}

/// Encodes mono samples in [-1, 1] as 16-bit PCM WAV (samples outside are clamped).
///
/// An empty `mono` gives a valid 44-byte WAV file with 0 samples.
///
/// # Errors
///
/// [`EncodeError::Encoder`] when `sample_rate` is 0 or the clip does not fit in a WAV file
/// (4 GiB of samples).
pub fn encode_wav_16(mono: &[f32], sample_rate: u32) -> Result<Vec<u8>, EncodeError> {
    if sample_rate == 0 {
        return Err(EncodeError::Encoder("sample rate must be positive".to_owned()));
    }
    let sample_count = u32::try_from(mono.len())
        .ok()
        .filter(|count| u64::from(*count) * 2 < u64::from(u32::MAX) - 44)
        .ok_or_else(|| EncodeError::Encoder(format!("{} samples do not fit in a wav file", mono.len())))?;
    let spec =
        hound::WavSpec { channels: 1, sample_rate, bits_per_sample: 16, sample_format: hound::SampleFormat::Int };
    let mut cursor = Cursor::new(Vec::with_capacity(44 + mono.len() * 2));
    let mut writer = hound::WavWriter::new(&mut cursor, spec).map_err(wav_error)?;
    {
        let mut sample_writer = writer.get_i16_writer(sample_count);
        for &sample in mono {
            sample_writer.write_sample(quantize_16(sample));
        }
        sample_writer.flush().map_err(wav_error)?;
    }
    writer.finalize().map_err(wav_error)?;
    Ok(cursor.into_inner())
}

fn wav_error(error: hound::Error) -> EncodeError {
    EncodeError::Encoder(format!("wav: {error}"))
}

/// Rejects sample rates that a FLAC stream info cannot carry (20 bits) or that are 0.
fn check_sample_rate(sample_rate: u32) -> Result<(), EncodeError> {
    // Frame headers can encode rates up to 655350 Hz (in tens of Hz); beyond that the stream
    // would be valid only with "get rate from stream info" frames, which flacenc does not emit.
    const MAX_FLAC_SAMPLE_RATE: u32 = 655_350;
    if sample_rate == 0 || sample_rate > MAX_FLAC_SAMPLE_RATE {
        return Err(EncodeError::Encoder(format!("sample rate {sample_rate} is outside 1..={MAX_FLAC_SAMPLE_RATE}")));
    }
    Ok(())
}

/// The flacenc settings: single-threaded (the pipeline parallelises across clips), fixed
/// predictors (orders 0 to 4) only, 4096-sample frames.
///
/// Measured on 20 s of 16 kHz speech from `testdata/real-speech/pocketsphinx-testdata` (release
/// build, one core, medians of 15 runs in one process): flacenc's defaults (LPC order 10)
/// encode about 970x real time at 56.0% of the WAV size; LPC order 8, 1100x at 56.3%; fixed
/// predictors up to order 4, 3000x at 60.5% (about 7x the time of writing the WAV); up to
/// order 2, 3400x at 60.6%. The pipeline as a whole must run above 1000x real time, so LPC is
/// out.
fn flac_config() -> flacenc::config::Encoder {
    let mut config = flacenc::config::Encoder::default();
    config.block_size = FLAC_BLOCK_SIZE;
    config.multithread = false;
    config.subframe_coding.use_lpc = false;
    config.subframe_coding.fixed.max_order = FLAC_MAX_FIXED_ORDER;
    config
}

/// A flacenc [`Source`] over quantised 16-bit little-endian mono samples.
///
/// flacenc's own `MemSource` feeds its MD5 one sample at a time, which costs about a third of
/// the encoding time; handing it little-endian bytes lets the MD5 run over whole blocks.
struct MonoLe16Source {
    /// The quantised samples, two bytes each, little-endian.
    le_bytes: Vec<u8>,
    /// Byte offset of the next unread sample.
    read_offset: usize,
    sample_rate: usize,
}

impl MonoLe16Source {
    fn new(mono: &[f32], sample_rate: u32) -> Self {
        let le_bytes = mono.iter().flat_map(|&sample| quantize_16(sample).to_le_bytes()).collect();
        Self { le_bytes, read_offset: 0, sample_rate: sample_rate as usize }
    }
}

impl Source for MonoLe16Source {
    fn channels(&self) -> usize {
        1
    }

    fn bits_per_sample(&self) -> usize {
        16
    }

    fn sample_rate(&self) -> usize {
        self.sample_rate
    }

    fn read_samples<F: Fill>(&mut self, block_size: usize, dest: &mut F) -> Result<usize, SourceError> {
        let end = self.le_bytes.len().min(self.read_offset + block_size * 2);
        let block = &self.le_bytes[self.read_offset..end];
        if block.is_empty() {
            return Ok(0);
        }
        dest.fill_le_bytes(block, 2)?;
        self.read_offset = end;
        Ok(block.len() / 2)
    }

    fn len_hint(&self) -> Option<usize> {
        Some(self.le_bytes.len() / 2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantize_rounds_to_nearest_and_clamps() {
        assert_eq!(quantize_16(0.0), 0);
        assert_eq!(quantize_16(0.4 / 32768.0), 0);
        assert_eq!(quantize_16(0.6 / 32768.0), 1);
        assert_eq!(quantize_16(-0.6 / 32768.0), -1);
        assert_eq!(quantize_16(1.0), i16::MAX);
        assert_eq!(quantize_16(-1.0), i16::MIN);
        assert_eq!(quantize_16(7.5), i16::MAX);
        assert_eq!(quantize_16(-7.5), i16::MIN);
        assert_eq!(quantize_16(f32::INFINITY), i16::MAX);
        assert_eq!(quantize_16(f32::NAN), 0);
    }

    #[test]
    fn quantize_inverts_16_bit_decoding() {
        for value in [i16::MIN, -12345, -1, 0, 1, 12345, i16::MAX] {
            assert_eq!(quantize_16(f32::from(value) / 32768.0), value);
        }
    }

    #[test]
    fn encode_flac_writes_header_and_stream_info() {
        let mono: Vec<f32> = (0..10_000).map(|n| (n as f32 * 0.01).sin() * 0.5).collect();
        let flac = encode_flac_16(&mono, 16_000).unwrap();
        assert_eq!(&flac[..4], b"fLaC");
        // STREAMINFO: 4-byte block header, then 34 bytes; sample rate (20 bits), channels - 1
        // (3), bits - 1 (5), total samples (36) start at byte 10 of the block body.
        let info = &flac[8..42];
        let rate = (u32::from(info[10]) << 12) | (u32::from(info[11]) << 4) | (u32::from(info[12]) >> 4);
        assert_eq!(rate, 16_000);
        assert_eq!((info[12] >> 1) & 0x7, 0, "mono");
        let bits = (((info[12] & 1) << 4) | (info[13] >> 4)) + 1;
        assert_eq!(bits, 16);
        let total =
            (u64::from(info[13] & 0xF) << 32) | u64::from(u32::from_be_bytes([info[14], info[15], info[16], info[17]]));
        assert_eq!(total, 10_000);
        assert_ne!(&info[18..34], &[0u8; 16], "md5 is set");
    }

    #[test]
    fn encode_flac_accepts_empty_clip() {
        let flac = encode_flac_16(&[], 16_000).unwrap();
        assert_eq!(&flac[..4], b"fLaC");
        assert_eq!(flac.len(), 42, "marker and stream info, no frames");
    }

    #[test]
    fn encode_rejects_zero_sample_rate() {
        assert!(encode_flac_16(&[0.0; 10], 0).is_err());
        assert!(encode_wav_16(&[0.0; 10], 0).is_err());
        assert!(encode_flac_16(&[0.0; 10], 700_000).is_err());
    }

    #[test]
    fn encode_wav_writes_pcm_bytes() {
        let wav = encode_wav_16(&[0.0, 0.5, -1.0, 2.0], 8_000).unwrap();
        assert_eq!(wav.len(), 44 + 8);
        assert_eq!(&wav[..4], b"RIFF");
        assert_eq!(&wav[44..], &[0, 0, 0, 0x40, 0, 0x80, 0xFF, 0x7F]);
    }

    #[test]
    fn encode_wav_accepts_empty_clip() {
        assert_eq!(encode_wav_16(&[], 16_000).unwrap().len(), 44);
    }
}
