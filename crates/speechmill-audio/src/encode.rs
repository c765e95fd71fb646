//! Encoding standardised mono audio as 16-bit FLAC or WAV bytes.
//!
//! Both encoders quantise the same way ([`quantize_16`]): scale by 32768, round to nearest
//! (ties away from zero), clamp to the 16-bit range. Scaling by 32768 rather than 32767 makes a
//! 16-bit source decoded to `f32` (which divides by 32768) re-encode bit-exactly.
//!
//! An empty clip is not an error: both encoders return a valid file holding 0 samples.

use std::io::{Cursor, Seek, SeekFrom, Write};

use flacenc::bitsink::ByteSink;
use flacenc::component::{BitRepr, StreamInfo};
use flacenc::error::{Verified, Verify};
use flacenc::source::{Context, Fill, FrameBuf};

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
    let mut writer = FlacWriter::new(Cursor::new(Vec::with_capacity(mono.len() + 64)), sample_rate)?;
    writer.write(mono)?;
    Ok(writer.finish()?.into_inner())
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
    let mut writer = WavWriter::new(Cursor::new(Vec::with_capacity(44 + mono.len() * 2)), sample_rate)?;
    writer.write(mono)?;
    Ok(writer.finish()?.into_inner())
}

/// Length in bytes of the `fLaC` marker plus the STREAMINFO block, the only metadata written.
const FLAC_HEADER_BYTES: usize = 4 + 4 + 34;

/// Writes 16-bit mono FLAC block by block, so a clip of any length is encoded in bounded memory.
///
/// The header is written first with placeholder sizes and rewritten by [`FlacWriter::finish`],
/// which seeks back to the start of the stream: the sink must be seekable.
pub struct FlacWriter<W: Write + Seek> {
    sink: W,
    /// Where the stream starts in the sink (the header is rewritten there).
    start: u64,
    config: Verified<flacenc::config::Encoder>,
    stream_info: StreamInfo,
    /// The frame being filled, with flacenc's running MD5 and sample count.
    frame: (FrameBuf, Context),
    /// Quantised samples not yet encoded, two little-endian bytes each (under one block).
    pending: Vec<u8>,
    /// Encoded bytes of one frame, reused.
    frame_bytes: ByteSink,
}

impl<W: Write + Seek> FlacWriter<W> {
    /// Starts a FLAC stream at the sink's current position.
    ///
    /// # Errors
    ///
    /// [`EncodeError::Encoder`] for a sample rate FLAC cannot declare, or when the sink fails.
    pub fn new(mut sink: W, sample_rate: u32) -> Result<Self, EncodeError> {
        check_sample_rate(sample_rate)?;
        let config = flac_config()
            .into_verified()
            .map_err(|(_, error)| EncodeError::Encoder(format!("flac configuration: {error}")))?;
        let mut stream_info = StreamInfo::new(sample_rate as usize, 1, 16)
            .map_err(|error| EncodeError::Encoder(format!("flac stream info: {error}")))?;
        // flacenc lowers the minimum block size to the last, shorter frame's; the format excludes
        // the last block from that field and forbids values under 16, so a clip ending in a frame
        // of fewer than 16 samples would be rejected by strict decoders (claxon). Declare the
        // fixed block size as the reference encoder does.
        stream_info
            .set_block_sizes(FLAC_BLOCK_SIZE, FLAC_BLOCK_SIZE)
            .map_err(|error| EncodeError::Encoder(format!("flac stream info: {error}")))?;
        let start = sink.stream_position().map_err(io_error)?;
        let frame = (
            FrameBuf::with_size(1, FLAC_BLOCK_SIZE).map_err(|error| EncodeError::Encoder(format!("flac: {error}")))?,
            Context::new(16, 1),
        );
        let mut writer = Self {
            sink,
            start,
            config,
            stream_info,
            frame,
            pending: Vec::with_capacity(FLAC_BLOCK_SIZE * 2),
            frame_bytes: ByteSink::new(),
        };
        writer.write_header()?;
        Ok(writer)
    }

    /// Encodes more samples in [-1, 1] (outside is clamped).
    ///
    /// # Errors
    ///
    /// [`EncodeError::Encoder`] when the encoder or the sink fails.
    pub fn write(&mut self, mono: &[f32]) -> Result<(), EncodeError> {
        for &sample in mono {
            self.pending.extend_from_slice(&quantize_16(sample).to_le_bytes());
            if self.pending.len() == FLAC_BLOCK_SIZE * 2 {
                self.encode_pending()?;
            }
        }
        Ok(())
    }

    /// Encodes what is left, rewrites the header with the totals and the MD5, and returns the sink.
    ///
    /// # Errors
    ///
    /// [`EncodeError::Encoder`] when the encoder or the sink fails.
    pub fn finish(mut self) -> Result<W, EncodeError> {
        if !self.pending.is_empty() {
            self.encode_pending()?;
        }
        self.stream_info.set_md5_digest(&self.frame.1.md5_digest());
        self.stream_info
            .set_block_sizes(FLAC_BLOCK_SIZE, FLAC_BLOCK_SIZE)
            .map_err(|error| EncodeError::Encoder(format!("flac stream info: {error}")))?;
        let end = self.sink.stream_position().map_err(io_error)?;
        self.sink.seek(SeekFrom::Start(self.start)).map_err(io_error)?;
        self.write_header()?;
        self.sink.seek(SeekFrom::Start(end)).map_err(io_error)?;
        self.sink.flush().map_err(io_error)?;
        Ok(self.sink)
    }

    fn write_header(&mut self) -> Result<(), EncodeError> {
        let header = flacenc::component::Stream::with_stream_info(self.stream_info.clone());
        let mut bytes = ByteSink::with_capacity(FLAC_HEADER_BYTES);
        header.write(&mut bytes).map_err(|error| EncodeError::Encoder(format!("flac output: {error}")))?;
        debug_assert_eq!(bytes.as_slice().len(), FLAC_HEADER_BYTES);
        self.sink.write_all(bytes.as_slice()).map_err(io_error)
    }

    fn encode_pending(&mut self) -> Result<(), EncodeError> {
        self.frame.fill_le_bytes(&self.pending, 2).map_err(|error| EncodeError::Encoder(format!("flac: {error}")))?;
        self.pending.clear();
        let frame_number = self.frame.1.current_frame_number().unwrap_or(0);
        let frame = flacenc::encode_fixed_size_frame(&self.config, &self.frame.0, frame_number, &self.stream_info)
            .map_err(|error| EncodeError::Encoder(format!("flac: {error}")))?;
        self.stream_info.update_frame_info(&frame);
        self.frame_bytes.clear();
        frame.write(&mut self.frame_bytes).map_err(|error| EncodeError::Encoder(format!("flac output: {error}")))?;
        self.sink.write_all(self.frame_bytes.as_slice()).map_err(io_error)
    }
}

/// Writes 16-bit mono PCM WAV block by block; the sizes are patched by [`WavWriter::finish`].
///
/// The header is the canonical 44-byte PCM one (`RIFF`, `fmt ` with format tag 1, `data`).
pub struct WavWriter<W: Write + Seek> {
    sink: W,
    /// Where the file starts in the sink.
    start: u64,
    /// Samples written so far.
    samples: u64,
    /// Quantised bytes of one block, reused.
    bytes: Vec<u8>,
    sample_rate: u32,
}

/// A WAV file's sizes are 32-bit: the data chunk holds at most this many 16-bit samples.
const WAV_MAX_SAMPLES: u64 = (u32::MAX as u64 - 36) / 2;

impl<W: Write + Seek> WavWriter<W> {
    /// Starts a WAV file at the sink's current position.
    ///
    /// # Errors
    ///
    /// [`EncodeError::Encoder`] when `sample_rate` is 0 or the sink fails.
    pub fn new(mut sink: W, sample_rate: u32) -> Result<Self, EncodeError> {
        if sample_rate == 0 {
            return Err(EncodeError::Encoder("sample rate must be positive".to_owned()));
        }
        let start = sink.stream_position().map_err(io_error)?;
        let mut writer = Self { sink, start, samples: 0, bytes: Vec::new(), sample_rate };
        writer.write_header()?;
        Ok(writer)
    }

    /// Writes more samples in [-1, 1] (outside is clamped).
    ///
    /// # Errors
    ///
    /// [`EncodeError::Encoder`] when the file would pass 4 GiB or the sink fails.
    pub fn write(&mut self, mono: &[f32]) -> Result<(), EncodeError> {
        let total = self.samples + mono.len() as u64;
        if total > WAV_MAX_SAMPLES {
            return Err(EncodeError::Encoder(format!("{total} samples do not fit in a wav file")));
        }
        self.bytes.clear();
        self.bytes.extend(mono.iter().flat_map(|&sample| quantize_16(sample).to_le_bytes()));
        self.sink.write_all(&self.bytes).map_err(io_error)?;
        self.samples = total;
        Ok(())
    }

    /// Patches the header sizes and returns the sink.
    ///
    /// # Errors
    ///
    /// [`EncodeError::Encoder`] when the sink fails.
    pub fn finish(mut self) -> Result<W, EncodeError> {
        let end = self.sink.stream_position().map_err(io_error)?;
        self.sink.seek(SeekFrom::Start(self.start)).map_err(io_error)?;
        self.write_header()?;
        self.sink.seek(SeekFrom::Start(end)).map_err(io_error)?;
        self.sink.flush().map_err(io_error)?;
        Ok(self.sink)
    }

    fn write_header(&mut self) -> Result<(), EncodeError> {
        // Bounded by WAV_MAX_SAMPLES, so both sizes fit in 32 bits.
        let data_bytes = (self.samples * 2) as u32;
        let mut header = Vec::with_capacity(44);
        header.extend_from_slice(b"RIFF");
        header.extend_from_slice(&(36 + data_bytes).to_le_bytes());
        header.extend_from_slice(b"WAVEfmt ");
        header.extend_from_slice(&16u32.to_le_bytes());
        header.extend_from_slice(&1u16.to_le_bytes()); // PCM
        header.extend_from_slice(&1u16.to_le_bytes()); // mono
        header.extend_from_slice(&self.sample_rate.to_le_bytes());
        header.extend_from_slice(&(self.sample_rate.saturating_mul(2)).to_le_bytes()); // bytes per second
        header.extend_from_slice(&2u16.to_le_bytes()); // block align
        header.extend_from_slice(&16u16.to_le_bytes()); // bits per sample
        header.extend_from_slice(b"data");
        header.extend_from_slice(&data_bytes.to_le_bytes());
        self.sink.write_all(&header).map_err(io_error)
    }
}

fn io_error(error: std::io::Error) -> EncodeError {
    EncodeError::Encoder(format!("output: {error}"))
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
