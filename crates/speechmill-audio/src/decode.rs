//! Streaming decoding of any supported container and codec into interleaved `f32` blocks.
//!
//! Formats are recognised by content only. Decoding is streaming: one packet (or one block of
//! raw PCM) is held at a time, in a buffer that is reused. Nothing is ever allocated from a size
//! a header declares.
//!
//! Gapless playback: encoder delay and padding are removed where the container declares them.
//! Symphonia's MP3 and Vorbis decoders and the libopus adapter trim from the packets' trim fields
//! (LAME/Xing header, Ogg granule positions, Opus pre-skip) themselves; for every other codec
//! this module applies the packets' trim fields, and for MP4 it reads the edit list (or, failing
//! that, an `iTunSMPB` tag) itself, because symphonia's MP4 reader ignores both.
//!
//! Symphonia's MP3 reader also trims at a length it may only have estimated from the bitrate;
//! without a LAME tag that end trim is ignored, so VBR files without a Xing header are not cut.
//!
//! Lenient WAV: a RIFF size that disagrees with the chunks (placeholders, off-by-8 writers) and
//! RF64/BW64 headers are read as a RIFF of unknown size, to the end of the data, as ffmpeg and
//! libsndfile do; an ADPCM WAV is cut to its `fact` chunk's length. A `data` size of 0 followed
//! by audio (an unfinished recording) is read to the end of the file, and PCM narrower than its
//! containers (12 bits in 16) is read as the container; both are reported in
//! [`SourceInfo::warnings`], as is a data size larger than the file.
//!
//! Tags: an ID3v2 tag at the start that declares more bytes than the file holds is skipped as if
//! empty; ID3v1 and APEv2 tags at the end are hidden from the container readers (the FLAC reader
//! otherwise drops its last frame).
//!
//! Chained streams and mid-stream changes: every link of a chained Ogg stream is decoded and
//! joined (a new track and decoder per link). The first decoded block fixes the output
//! specification; a link (or a stretch of a stream) with another sample rate or channel count is
//! converted to it: channels are mixed (mono to all, several to their mean, then to all) and the
//! rate is converted with the same resampler as standardisation. Multiplexed Ogg (several logical
//! streams at once) decodes one audio stream: the first flagged default with a decoder, else the
//! first (by serial number) with one; the others are skipped.
//!
//! Errors: a packet that fails to decode is skipped and counted
//! ([`StreamDecoder::skipped_packets`]); a stream that ends early (truncated) ends the output
//! without an error unless nothing decoded at all. A panic inside symphonia is caught and
//! reported as [`DecodeError::Corrupt`].

use std::fmt;
use std::io::{self, Read, Seek, SeekFrom};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::str::FromStr;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use symphonia::core::codecs::CodecParameters;
use symphonia::core::codecs::audio::well_known::{
    CODEC_ID_MP1, CODEC_ID_MP2, CODEC_ID_MP3, CODEC_ID_OPUS, CODEC_ID_VORBIS,
};
use symphonia::core::codecs::audio::{AudioCodecId, AudioCodecParameters, AudioDecoder, AudioDecoderOptions};
use symphonia::core::codecs::registry::CodecRegistry;
use symphonia::core::errors::Error as SymphoniaError;
use symphonia::core::formats::probe::Hint;
use symphonia::core::formats::{FormatOptions, FormatReader, Track, TrackFlags};
use symphonia::core::io::{MediaSource, MediaSourceStream};
use symphonia::core::meta::MetadataOptions;
use symphonia::core::units::Duration;

use crate::resample::MonoResampler;

/// The sample encoding of headerless raw PCM, as given by the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RawEncoding {
    /// Unsigned 8-bit, 128 is zero.
    U8,
    /// Signed 8-bit.
    S8,
    /// Signed 16-bit little-endian.
    S16le,
    /// Signed 16-bit big-endian.
    S16be,
    /// Signed 24-bit little-endian, packed in 3 bytes.
    S24le,
    /// Signed 32-bit little-endian.
    S32le,
    /// IEEE float 32-bit little-endian.
    F32le,
    /// IEEE float 64-bit little-endian.
    F64le,
    /// G.711 A-law.
    Alaw,
    /// G.711 mu-law.
    Mulaw,
}

impl RawEncoding {
    /// Every encoding, in the order they are documented.
    pub const ALL: [RawEncoding; 10] = [
        RawEncoding::U8,
        RawEncoding::S8,
        RawEncoding::S16le,
        RawEncoding::S16be,
        RawEncoding::S24le,
        RawEncoding::S32le,
        RawEncoding::F32le,
        RawEncoding::F64le,
        RawEncoding::Alaw,
        RawEncoding::Mulaw,
    ];

    /// Returns the name used on the command line and in `RawFormat`'s text form (`s16le`).
    pub fn as_str(self) -> &'static str {
        match self {
            RawEncoding::U8 => "u8",
            RawEncoding::S8 => "s8",
            RawEncoding::S16le => "s16le",
            RawEncoding::S16be => "s16be",
            RawEncoding::S24le => "s24le",
            RawEncoding::S32le => "s32le",
            RawEncoding::F32le => "f32le",
            RawEncoding::F64le => "f64le",
            RawEncoding::Alaw => "alaw",
            RawEncoding::Mulaw => "mulaw",
        }
    }

    /// Returns the number of bytes one sample of one channel takes.
    pub fn bytes_per_sample(self) -> usize {
        match self {
            RawEncoding::U8 | RawEncoding::S8 | RawEncoding::Alaw | RawEncoding::Mulaw => 1,
            RawEncoding::S16le | RawEncoding::S16be => 2,
            RawEncoding::S24le => 3,
            RawEncoding::S32le | RawEncoding::F32le => 4,
            RawEncoding::F64le => 8,
        }
    }

    /// The codec name reported in [`SourceInfo::codec`] (`pcm_s16le`, `pcm_alaw`, ...).
    fn codec_name(self) -> &'static str {
        match self {
            RawEncoding::U8 => "pcm_u8",
            RawEncoding::S8 => "pcm_s8",
            RawEncoding::S16le => "pcm_s16le",
            RawEncoding::S16be => "pcm_s16be",
            RawEncoding::S24le => "pcm_s24le",
            RawEncoding::S32le => "pcm_s32le",
            RawEncoding::F32le => "pcm_f32le",
            RawEncoding::F64le => "pcm_f64le",
            RawEncoding::Alaw => "pcm_alaw",
            RawEncoding::Mulaw => "pcm_mulaw",
        }
    }
}

impl FromStr for RawEncoding {
    type Err = String;

    /// Parses an encoding name, case-insensitively (`s16le`; `ulaw` is accepted for `mulaw`).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let lower = text.trim().to_ascii_lowercase();
        if lower == "ulaw" {
            return Ok(RawEncoding::Mulaw);
        }
        RawEncoding::ALL.into_iter().find(|encoding| encoding.as_str() == lower).ok_or_else(|| {
            let known: Vec<&str> = RawEncoding::ALL.iter().map(|e| e.as_str()).collect();
            format!("unknown raw sample encoding '{}' (known: {})", text.trim(), known.join(", "))
        })
    }
}

/// The highest sample rate accepted (DXD-class recorders reach 768 kHz). A header declaring
/// more is a lie, and resampling from such a rate would need FFTs of millions of points
/// (fuzzing found a WAV claiming 4.29 GHz that took seconds to set up).
pub const MAX_SAMPLE_RATE_HZ: u32 = 768_000;

/// The lowest sample rate accepted. Nothing below carries speech, and a header declaring, say,
/// 6 Hz turns a 47 KB file into two hours of 16 kHz output (fuzzing found one).
pub const MIN_SAMPLE_RATE_HZ: u32 = 1000;

/// The format of headerless raw PCM: encoding, sample rate and channel count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawFormat {
    /// Sample encoding.
    pub encoding: RawEncoding,
    /// Frames per second (> 0).
    pub sample_rate: u32,
    /// Interleaved channels (> 0).
    pub channels: u16,
}

impl FromStr for RawFormat {
    type Err = String;

    /// Parses `ENCODING,RATE,CHANNELS`, for example `s16le,16000,1`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = text.split(',').map(str::trim).collect();
        let [encoding_text, rate_text, channels_text] = parts.as_slice() else {
            return Err(format!("raw format '{text}' must be ENCODING,RATE,CHANNELS (for example s16le,16000,1)"));
        };
        let encoding = encoding_text.parse::<RawEncoding>()?;
        let sample_rate =
            rate_text.parse::<u32>().map_err(|error| format!("invalid raw sample rate '{rate_text}': {error}"))?;
        if !(MIN_SAMPLE_RATE_HZ..=MAX_SAMPLE_RATE_HZ).contains(&sample_rate) {
            return Err(format!("raw sample rate must be between {MIN_SAMPLE_RATE_HZ} and {MAX_SAMPLE_RATE_HZ} Hz"));
        }
        let channels = channels_text
            .parse::<u16>()
            .map_err(|error| format!("invalid raw channel count '{channels_text}': {error}"))?;
        if channels == 0 {
            return Err("raw channel count must be greater than 0".to_string());
        }
        Ok(RawFormat { encoding, sample_rate, channels })
    }
}

impl fmt::Display for RawFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{},{},{}", self.encoding.as_str(), self.sample_rate, self.channels)
    }
}

/// What the container and codec say about the source, before any processing.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SourceInfo {
    /// Container name, lowercase (`wav`, `flac`, `mp3`, `ogg`, `mp4`, `raw`, ...).
    pub container: String,
    /// Codec name, lowercase (`pcm_s16le`, `pcm_f32le`, `pcm_alaw`, `flac`, `mp3`, `vorbis`, `opus`, `aac`, ...).
    pub codec: String,
    /// Decoded sample rate in Hz (for Opus always 48000).
    pub sample_rate: u32,
    /// Decoded channel count.
    pub channels: u16,
    /// Bits per coded sample where the format has one.
    pub bits_per_sample: Option<u32>,
    /// Header problems that were worked around (a data size of 0, samples narrower than their
    /// containers); empty for a well-formed file.
    pub warnings: Vec<String>,
}

/// Why a source could not be decoded. Every variant is a property of the input (permanent).
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The source has no bytes at all.
    #[error("file is empty (0 bytes)")]
    Empty,
    /// The bytes are not a container or codec we recognise, and no raw format was given.
    #[error("unrecognised format: {detail}")]
    Unrecognised {
        /// What was tried and failed.
        detail: String,
    },
    /// The container is recognised but its codec is not supported.
    #[error("unsupported codec: {codec}")]
    UnsupportedCodec {
        /// The codec name or id.
        codec: String,
    },
    /// The header describes something impossible (zero channels, zero rate, missing format chunk).
    #[error("invalid header: {detail}")]
    InvalidHeader {
        /// What is wrong with it.
        detail: String,
    },
    /// The stream is corrupt beyond recovery.
    #[error("corrupt stream: {detail}")]
    Corrupt {
        /// What was wrong.
        detail: String,
    },
    /// Reading the underlying bytes failed.
    #[error("read error: {0}")]
    Io(#[from] std::io::Error),
}

impl DecodeError {
    /// The stable machine reason code for this error (see docs/reasons.md).
    pub fn reason_code(&self) -> &'static str {
        match self {
            DecodeError::Empty => "empty",
            DecodeError::Unrecognised { .. } => "unrecognised_format",
            DecodeError::UnsupportedCodec { .. } => "unsupported_codec",
            DecodeError::InvalidHeader { .. } => "invalid_header",
            DecodeError::Corrupt { .. } => "decode_error",
            DecodeError::Io(_) => "io_error",
        }
    }
}

/// A streaming decoder: yields blocks of interleaved `f32` samples, memory bounded by one packet.
pub struct StreamDecoder {
    info: SourceInfo,
    /// Where the samples come from.
    backend: Backend,
    /// The current block, interleaved; reused for every block.
    samples: Vec<f32>,
    /// The part of `samples` that is the current block (trimming moves the ends inwards).
    block: std::ops::Range<usize>,
    /// `open` decodes the first block to learn the real output specification; it is handed out
    /// by the first `next_block` call.
    first_block_pending: bool,
    /// Packets that failed to decode and were skipped.
    skipped_packets: u64,
    /// Set once the stream has ended (or stopped at a specification change or an error).
    finished: bool,
}

impl StreamDecoder {
    /// Opens a source, recognising its format by content (never by file name).
    ///
    /// `raw` is used only when the content is not a recognised container. The first packet is
    /// decoded here, so that [`StreamDecoder::info`] describes what the decoder really outputs.
    pub fn open(source: Box<dyn MediaSource>, raw: Option<RawFormat>) -> Result<Self, DecodeError> {
        if source.byte_len() == Some(0) {
            return Err(DecodeError::Empty);
        }
        let shared = SharedSource::new(source);
        let mut header_warnings = shared.with_state(SourceState::hide_tags);
        header_warnings.extend(shared.with_state(SourceState::patch_wav_header));
        let mut probe_result = probe(&shared)?;
        let mut rf64_frames = None;
        if probe_result.is_err() {
            let riff_kind = shared.with_state(SourceState::riff_kind);
            let lenient_retry = match (&probe_result, riff_kind) {
                // Symphonia rejects a WAV whose RIFF size disagrees with its chunks (placeholder
                // sizes from recorders, sizes that omit a chunk: cases W18, W20).
                (Err(ProbeFailure::Rejected(DecodeError::InvalidHeader { .. })), RiffKind::Wave) => true,
                // Symphonia does not know RF64/BW64 (WAV with 64-bit sizes in a `ds64` chunk).
                (Err(ProbeFailure::NotRecognised { .. }), RiffKind::Rf64) => true,
                _ => false,
            };
            if lenient_retry {
                // ffmpeg and libsndfile read such files to the end of the data; so do we, by
                // presenting the header as a RIFF of unknown size ("RIFF", 0xFFFFFFFF, symphonia's
                // value for a streamed file) and probing again.
                shared.with_state(|state| {
                    state.present_as_streamed_riff = true;
                    state.rewind()
                })?;
                let retried = probe(&shared)?;
                match (retried, riff_kind) {
                    (Ok(format), _) => {
                        if riff_kind == RiffKind::Rf64 {
                            rf64_frames = shared.with_state(rf64_sample_count);
                        }
                        probe_result = Ok(format);
                    }
                    // The original complaint about a WAV says more than the lenient attempt's.
                    (Err(_), RiffKind::Wave) => {}
                    (Err(ProbeFailure::Rejected(error)), _) => probe_result = Err(ProbeFailure::Rejected(error)),
                    (Err(ProbeFailure::NotRecognised { detail }), _) => {
                        probe_result = Err(ProbeFailure::Rejected(DecodeError::InvalidHeader {
                            detail: format!("rf64 header could not be read ({detail})"),
                        }));
                    }
                }
            }
        }
        match probe_result {
            Ok(format) => {
                shared.with_state(SourceState::stop_recording);
                let mut decoder = Self::open_container(format, &shared, rf64_frames)?;
                decoder.info.warnings = header_warnings;
                Ok(decoder)
            }
            Err(ProbeFailure::NotRecognised { detail }) => Self::open_unrecognised(shared, raw, detail),
            Err(ProbeFailure::Rejected(error)) => {
                if shared.total_bytes_read() == 0 {
                    return Err(DecodeError::Empty);
                }
                Err(error)
            }
        }
    }

    /// What the source is.
    pub fn info(&self) -> &SourceInfo {
        &self.info
    }

    /// The number of packets that failed to decode and were skipped so far.
    pub fn skipped_packets(&self) -> u64 {
        self.skipped_packets
    }

    /// The next block of interleaved samples (`info().channels` per frame), or `None` at the end.
    ///
    /// Encoder delay and padding are already removed where the container declares them.
    pub fn next_block(&mut self) -> Result<Option<&[f32]>, DecodeError> {
        if self.first_block_pending {
            self.first_block_pending = false;
            return Ok(Some(&self.samples[self.block.clone()]));
        }
        if self.advance()? { Ok(Some(&self.samples[self.block.clone()])) } else { Ok(None) }
    }

    /// Builds the raw PCM decoder for content no container reader recognised.
    fn open_unrecognised(
        shared: SharedSource,
        raw: Option<RawFormat>,
        probe_detail: String,
    ) -> Result<Self, DecodeError> {
        if shared.total_bytes_read() == 0 {
            return Err(DecodeError::Empty);
        }
        let Some(raw_format) = raw else {
            return Err(DecodeError::Unrecognised {
                detail: format!(
                    "no known container or codec found ({probe_detail}); if this is headerless \
                     PCM, pass --raw-format ENCODING,RATE,CHANNELS (for example s16le,16000,1)"
                ),
            });
        };
        let mut state = shared.into_state()?;
        state.present_as_streamed_riff = false;
        state.patches.clear();
        state.end = None;
        state.recording = false;
        state.rewind()?;
        let info = SourceInfo {
            container: "raw".to_string(),
            codec: raw_format.encoding.codec_name().to_string(),
            sample_rate: raw_format.sample_rate,
            channels: raw_format.channels,
            bits_per_sample: Some(8 * raw_format.encoding.bytes_per_sample() as u32),
            warnings: Vec::new(),
        };
        let mut decoder = StreamDecoder {
            info,
            backend: Backend::Raw(RawReader::new(state, raw_format)),
            samples: Vec::new(),
            block: 0..0,
            first_block_pending: false,
            skipped_packets: 0,
            finished: false,
        };
        let has_audio = decoder.advance()?;
        if !has_audio
            && let Backend::Raw(reader) = &decoder.backend
            && reader.total_bytes == 0
        {
            return Err(DecodeError::Empty);
        }
        decoder.first_block_pending = has_audio;
        Ok(decoder)
    }

    /// Picks the audio track, builds its decoder and decodes the first block.
    ///
    /// `rf64_frames` is the frame count of an RF64 file's `ds64` chunk, which caps the length.
    fn open_container(
        format: Box<dyn FormatReader>,
        shared: &SharedSource,
        rf64_frames: Option<u64>,
    ) -> Result<Self, DecodeError> {
        let container = container_name(format.format_info().short_name);
        let registry = codec_registry();
        let (track, params) = select_audio_track(format.as_ref(), registry)?;
        let track_id = track.id;
        let codec = codec_name(registry, params.codec);

        if params.channels.as_ref().is_some_and(|channels| channels.count() == 0) {
            return Err(DecodeError::InvalidHeader { detail: "channel count is 0".to_string() });
        }
        if params.sample_rate == Some(0) {
            return Err(DecodeError::InvalidHeader { detail: "sample rate is 0".to_string() });
        }

        let decoder = guard_panic("creating the decoder", || {
            registry.make_audio_decoder(&params, &AudioDecoderOptions::default().gapless(true))
        })?
        .map_err(|error| match error {
            SymphoniaError::Unsupported(what) => DecodeError::UnsupportedCodec { codec: format!("{codec} ({what})") },
            other => DecodeError::InvalidHeader { detail: format!("{codec}: {other}") },
        })?;

        let self_trimming = is_self_trimming(params.codec);

        // Header-declared output specification; replaced by what the decoder really produces.
        let declared_rate = params.sample_rate.unwrap_or(0);
        let declared_channels = params.channels.as_ref().map_or(0, |channels| channels.count());
        let mut info = SourceInfo {
            container: container.to_string(),
            codec,
            sample_rate: declared_rate,
            channels: u16::try_from(declared_channels).unwrap_or(0),
            bits_per_sample: params.bits_per_coded_sample.or(params.bits_per_sample),
            warnings: Vec::new(),
        };

        let edit = if container == "mp4" && declared_rate > 0 {
            shared.with_state(|state| mp4_gapless_trim(state, track_id, declared_rate))
        } else {
            None
        };

        // Symphonia's MP3 reader trims packets past `num_frames`, which without a LAME tag may
        // be only an estimate from the first frames' bitrate: a VBR file without a Xing header
        // would be cut short (bad-inputs case M04). Only a LAME tag's padding is trusted.
        let is_mpeg_audio = [CODEC_ID_MP1, CODEC_ID_MP2, CODEC_ID_MP3].contains(&params.codec);
        let trust_end_trim = !is_mpeg_audio || track.padding.is_some();

        // ADPCM in WAV pads its last block; the `fact` chunk states the true length (W14).
        // Symphonia overrides the fact length with one computed from the data size, so the
        // chunk is read here.
        let is_adpcm = info.codec.starts_with("adpcm");
        let declared_frames =
            if container == "wav" && is_adpcm { shared.with_state(wav_fact_frames) } else { rf64_frames };

        let stream = SymphoniaStream {
            format,
            decoder,
            track_id,
            apply_packet_trims: !self_trimming,
            trust_end_trim,
            skip_frames: edit.map_or(0, |trim| trim.skip_frames),
            frames_left: edit.and_then(|trim| trim.keep_frames).or(declared_frames),
            decoded_any: false,
            consecutive_demux_errors: 0,
            // Set by the first decoded buffer: some codecs (and headers that do not state a
            // channel count) only reveal the real output specification then.
            expected_spec: None,
            converter: None,
            link_pending: false,
            ended: false,
            pending_tail: None,
            converted: Vec::new(),
        };
        let mut decoder = StreamDecoder {
            info: info.clone(),
            backend: Backend::Symphonia(Box::new(stream)),
            samples: Vec::new(),
            block: 0..0,
            first_block_pending: false,
            skipped_packets: 0,
            finished: false,
        };
        let has_audio = decoder.advance()?;
        if let Backend::Symphonia(stream) = &decoder.backend
            && let Some((rate, channels)) = stream.expected_spec
        {
            info.sample_rate = rate;
            info.channels = channels;
        }
        if info.sample_rate > MAX_SAMPLE_RATE_HZ {
            return Err(DecodeError::InvalidHeader {
                detail: format!(
                    "sample rate {} Hz is beyond any audio format (at most {MAX_SAMPLE_RATE_HZ})",
                    info.sample_rate
                ),
            });
        }
        if info.sample_rate > 0 && info.sample_rate < MIN_SAMPLE_RATE_HZ {
            return Err(DecodeError::InvalidHeader {
                detail: format!(
                    "sample rate {} Hz is below any audio format (at least {MIN_SAMPLE_RATE_HZ})",
                    info.sample_rate
                ),
            });
        }
        if info.sample_rate == 0 {
            return Err(DecodeError::InvalidHeader { detail: "sample rate is 0 or missing".into() });
        }
        if info.channels == 0 {
            return Err(DecodeError::InvalidHeader { detail: "channel count is 0 or missing".into() });
        }
        decoder.info = info;
        decoder.first_block_pending = has_audio;
        Ok(decoder)
    }

    /// Produces the next non-empty block into `self.samples`/`self.block`; `false` at the end.
    fn advance(&mut self) -> Result<bool, DecodeError> {
        if self.finished {
            return Ok(false);
        }
        let step = match &mut self.backend {
            Backend::Symphonia(stream) => stream.next_block(&mut self.samples, &mut self.skipped_packets),
            Backend::Raw(reader) => reader.next_block(&mut self.samples),
        };
        match step {
            Ok(Some(range)) => {
                self.block = range;
                Ok(true)
            }
            Ok(None) => {
                self.finished = true;
                self.block = 0..0;
                Ok(false)
            }
            Err(error) => {
                self.finished = true;
                self.block = 0..0;
                Err(error)
            }
        }
    }
}

/// The two ways samples are produced.
enum Backend {
    /// A container recognised by symphonia.
    Symphonia(Box<SymphoniaStream>),
    /// Headerless PCM in a user-given format.
    Raw(RawReader),
}

/// How many demuxer errors in a row are tolerated (each may be a resync past damage) before the
/// stream is considered to end there.
const MAX_CONSECUTIVE_DEMUX_ERRORS: u32 = 16;

/// A demuxer and decoder for one audio track, plus the gapless trimming state.
struct SymphoniaStream {
    format: Box<dyn FormatReader>,
    decoder: Box<dyn AudioDecoder>,
    track_id: u32,
    /// Whether this module applies the packets' trim fields (the decoder does not).
    apply_packet_trims: bool,
    /// Whether the packets' end trim is trusted (see `open_container`).
    trust_end_trim: bool,
    /// Frames still to drop at the start (MP4 edit list / iTunSMPB delay).
    skip_frames: u64,
    /// Frames still to emit, when the container states the valid length (MP4).
    frames_left: Option<u64>,
    /// Whether any packet decoded successfully.
    decoded_any: bool,
    consecutive_demux_errors: u32,
    /// Output (rate, channels), fixed by the first decoded buffer.
    expected_spec: Option<(u32, u16)>,
    /// Converts a link (or stretch) whose specification differs from `expected_spec`.
    converter: Option<SpecConverter>,
    /// The demuxer announced a new link; it is opened at the next call.
    link_pending: bool,
    /// The demuxer reached the end; only a converter's tail is left to hand out.
    ended: bool,
    /// A finished converter's last samples, handed out before the next block.
    pending_tail: Option<Vec<f32>>,
    /// Reused output buffer of the converter.
    converted: Vec<f32>,
}

/// Whether symphonia's decoder for `codec` applies the packets' trim fields itself.
fn is_self_trimming(codec: AudioCodecId) -> bool {
    [CODEC_ID_MP1, CODEC_ID_MP2, CODEC_ID_MP3, CODEC_ID_VORBIS, CODEC_ID_OPUS].contains(&codec)
}

/// Converts interleaved audio of one (rate, channels) to another: channels first, then rate.
struct SpecConverter {
    from: (u32, u16),
    to: (u32, u16),
    /// One resampler per output channel; empty when the rates agree.
    resamplers: Vec<MonoResampler>,
    /// Reused per-channel buffers.
    planar_in: Vec<Vec<f32>>,
    planar_out: Vec<Vec<f32>>,
}

impl SpecConverter {
    fn new(from: (u32, u16), to: (u32, u16)) -> Result<Self, DecodeError> {
        let channels = usize::from(to.1);
        let resamplers = if from.0 == to.0 {
            Vec::new()
        } else {
            (0..channels).map(|_| MonoResampler::new(from.0, to.0)).collect::<Result<Vec<_>, _>>().map_err(|error| {
                DecodeError::Corrupt { detail: format!("cannot join a link of the stream: {error}") }
            })?
        };
        Ok(Self { from, to, resamplers, planar_in: vec![Vec::new(); channels], planar_out: vec![Vec::new(); channels] })
    }

    /// Converts `input` (interleaved at `from`) and appends the result (interleaved at `to`).
    fn convert(&mut self, input: &[f32], out: &mut Vec<f32>) {
        let (in_channels, out_channels) = (usize::from(self.from.1), usize::from(self.to.1));
        for channel in &mut self.planar_in {
            channel.clear();
        }
        for frame in input.chunks_exact(in_channels) {
            if in_channels == out_channels {
                for (channel, &sample) in self.planar_in.iter_mut().zip(frame) {
                    channel.push(sample);
                }
            } else {
                let mixed = if in_channels == 1 { frame[0] } else { frame.iter().sum::<f32>() / in_channels as f32 };
                for channel in &mut self.planar_in {
                    channel.push(mixed);
                }
            }
        }
        if self.resamplers.is_empty() {
            std::mem::swap(&mut self.planar_in, &mut self.planar_out);
        } else {
            for ((resampler, input), output) in
                self.resamplers.iter_mut().zip(&self.planar_in).zip(&mut self.planar_out)
            {
                output.clear();
                resampler.process(input, output);
            }
        }
        interleave(&self.planar_out, out_channels, out);
    }

    /// Appends what the resamplers still hold, at the end of the link.
    fn finish(&mut self, out: &mut Vec<f32>) {
        if self.resamplers.is_empty() {
            return;
        }
        for (resampler, output) in self.resamplers.iter_mut().zip(&mut self.planar_out) {
            output.clear();
            resampler.finish(output);
        }
        interleave(&self.planar_out, usize::from(self.to.1), out);
    }
}

fn interleave(planar: &[Vec<f32>], channels: usize, out: &mut Vec<f32>) {
    let frames = planar.iter().map(Vec::len).min().unwrap_or(0);
    out.reserve(frames * channels);
    for frame in 0..frames {
        for channel in planar {
            out.push(channel[frame]);
        }
    }
}

impl SymphoniaStream {
    /// Decodes packets until one yields frames; returns the range of `samples` to hand out.
    fn next_block(
        &mut self,
        samples: &mut Vec<f32>,
        skipped_packets: &mut u64,
    ) -> Result<Option<std::ops::Range<usize>>, DecodeError> {
        loop {
            if self.frames_left == Some(0) || self.ended {
                return self.end_of_stream(*skipped_packets);
            }
            if self.link_pending {
                self.link_pending = false;
                if !self.open_next_link() {
                    self.ended = true;
                    return self.end_of_stream(*skipped_packets);
                }
            }
            let format = &mut self.format;
            let packet = match guard_panic("reading a packet", || format.next_packet())? {
                Ok(Some(packet)) => packet,
                Ok(None) => {
                    self.ended = true;
                    if let Some(range) = self.flush_converter(samples) {
                        return Ok(Some(range));
                    }
                    return self.end_of_stream(*skipped_packets);
                }
                // A new chained Ogg link: see the module documentation.
                Err(SymphoniaError::ResetRequired) => {
                    self.link_pending = true;
                    if let Some(range) = self.flush_converter(samples) {
                        return Ok(Some(range));
                    }
                    continue;
                }
                Err(SymphoniaError::IoError(error)) if error.kind() == io::ErrorKind::UnexpectedEof => {
                    // Truncated stream: what was decoded so far is the result.
                    self.ended = true;
                    if let Some(range) = self.flush_converter(samples) {
                        return Ok(Some(range));
                    }
                    return self.end_of_stream(*skipped_packets);
                }
                Err(SymphoniaError::IoError(error)) => return Err(DecodeError::Io(error)),
                Err(error) => {
                    self.consecutive_demux_errors += 1;
                    if self.consecutive_demux_errors > MAX_CONSECUTIVE_DEMUX_ERRORS {
                        if self.decoded_any {
                            return Ok(None);
                        }
                        return Err(DecodeError::Corrupt { detail: format!("container could not be read: {error}") });
                    }
                    continue;
                }
            };
            self.consecutive_demux_errors = 0;
            if packet.track_id != self.track_id {
                continue;
            }
            let mut packet = packet;
            if !self.trust_end_trim {
                packet.trim_end = Duration::ZERO;
            }
            let trim_start = packet.trim_start.get();
            let trim_end = packet.trim_end.get();
            let decoder = &mut self.decoder;
            let decoded = guard_panic("decoding a packet", || match decoder.decode(&packet) {
                Ok(buffer) => {
                    let spec = buffer.spec();
                    let channels = spec.channels().count();
                    let rate = spec.rate();
                    buffer.copy_to_vec_interleaved::<f32>(samples);
                    Ok((rate, channels, buffer.frames()))
                }
                Err(error) => Err(error),
            })?;
            let (rate, channels, frames) = match decoded {
                Ok(decoded) => decoded,
                Err(SymphoniaError::DecodeError(_) | SymphoniaError::IoError(_)) => {
                    *skipped_packets += 1;
                    continue;
                }
                Err(SymphoniaError::ResetRequired) => {
                    self.link_pending = true;
                    if let Some(range) = self.flush_converter(samples) {
                        return Ok(Some(range));
                    }
                    continue;
                }
                Err(error) => {
                    return Err(DecodeError::Corrupt { detail: format!("decoder failed: {error}") });
                }
            };
            if frames == 0 {
                continue;
            }
            let Ok(channels) = u16::try_from(channels) else {
                return Err(DecodeError::InvalidHeader {
                    detail: format!("{channels} channels is more than supported"),
                });
            };
            if channels == 0 || rate == 0 {
                return Err(DecodeError::InvalidHeader {
                    detail: format!("decoder produced {channels} channels at {rate} Hz"),
                });
            }
            let expected = *self.expected_spec.get_or_insert((rate, channels));
            if expected == (rate, channels) {
                if let Some(mut converter) = self.converter.take() {
                    // Back to the output specification: hand out the converter's tail first.
                    let tail_start = samples.len();
                    converter.finish(samples);
                    let tail: Vec<f32> = samples.drain(tail_start..).collect();
                    if !tail.is_empty() {
                        self.pending_tail = Some(tail);
                    }
                }
            } else if self.converter.as_ref().is_none_or(|converter| converter.from != (rate, channels)) {
                // The specification changed (a chained link, or mid-stream): convert to the first.
                let mut tail = Vec::new();
                if let Some(mut previous) = self.converter.take() {
                    previous.finish(&mut tail);
                }
                if !tail.is_empty() {
                    self.pending_tail = Some(tail);
                }
                self.converter = Some(SpecConverter::new((rate, channels), expected)?);
            }
            self.decoded_any = true;

            let mut start = 0u64;
            let mut end = frames as u64;
            if self.apply_packet_trims {
                start = trim_start.min(end);
                end = end.saturating_sub(trim_end).max(start);
            }
            let skip_here = self.skip_frames.min(end - start);
            self.skip_frames -= skip_here;
            start += skip_here;
            if let Some(left) = self.frames_left.as_mut() {
                let keep = (end - start).min(*left);
                *left -= keep;
                end = start + keep;
            }
            let channel_count = usize::from(channels);
            let range = start as usize * channel_count..end as usize * channel_count;
            if let Some(converter) = self.converter.as_mut() {
                self.converted.clear();
                if let Some(tail) = self.pending_tail.take() {
                    self.converted.extend_from_slice(&tail);
                }
                converter.convert(&samples[range], &mut self.converted);
                if self.converted.is_empty() {
                    continue;
                }
                samples.clear();
                samples.extend_from_slice(&self.converted);
                return Ok(Some(0..samples.len()));
            }
            if let Some(tail) = self.pending_tail.take() {
                let mut joined = tail;
                joined.extend_from_slice(&samples[range]);
                samples.clear();
                samples.extend_from_slice(&joined);
                return Ok(Some(0..samples.len()));
            }
            if end == start {
                continue;
            }
            return Ok(Some(range));
        }
    }

    /// Hands out what a converter still holds (its resamplers' tails), if anything.
    fn flush_converter(&mut self, samples: &mut Vec<f32>) -> Option<std::ops::Range<usize>> {
        samples.clear();
        if let Some(tail) = self.pending_tail.take() {
            samples.extend_from_slice(&tail);
        }
        if let Some(mut converter) = self.converter.take() {
            converter.finish(samples);
        }
        (!samples.is_empty()).then_some(0..samples.len())
    }

    /// Opens the audio track of the next chained link with a new decoder; `false` when it has
    /// none that can be decoded (the stream then ends with what came before).
    fn open_next_link(&mut self) -> bool {
        let registry = codec_registry();
        let Ok((track, params)) = select_audio_track(self.format.as_ref(), registry) else {
            return false;
        };
        let made = guard_panic("creating the decoder", || {
            registry.make_audio_decoder(&params, &AudioDecoderOptions::default().gapless(true))
        });
        let Ok(Ok(decoder)) = made else {
            return false;
        };
        self.decoder = decoder;
        self.track_id = track.id;
        self.apply_packet_trims = !is_self_trimming(params.codec);
        self.trust_end_trim = true;
        self.skip_frames = 0;
        self.frames_left = None;
        true
    }

    /// The stream ended: an error only if packets existed and not one of them decoded.
    fn end_of_stream(&self, skipped_packets: u64) -> Result<Option<std::ops::Range<usize>>, DecodeError> {
        if !self.decoded_any && skipped_packets > 0 {
            return Err(DecodeError::Corrupt {
                detail: format!("none of the {skipped_packets} packets could be decoded"),
            });
        }
        Ok(None)
    }
}

/// Bytes of raw input converted per block (rounded down to whole frames, at least one frame).
const RAW_BLOCK_BYTES: usize = 64 * 1024;

/// Reads headerless PCM in blocks and converts it to `f32`.
struct RawReader {
    source: SourceState,
    format: RawFormat,
    /// Reused input buffer, a whole number of frames long.
    bytes: Vec<u8>,
    total_bytes: u64,
    at_eof: bool,
}

impl RawReader {
    fn new(source: SourceState, format: RawFormat) -> Self {
        let bytes_per_frame = format.encoding.bytes_per_sample() * usize::from(format.channels);
        let block_len = (RAW_BLOCK_BYTES / bytes_per_frame).max(1) * bytes_per_frame;
        RawReader { source, format, bytes: vec![0; block_len], total_bytes: 0, at_eof: false }
    }

    /// Reads and converts the next block; a trailing partial frame is dropped.
    fn next_block(&mut self, samples: &mut Vec<f32>) -> Result<Option<std::ops::Range<usize>>, DecodeError> {
        if self.at_eof {
            return Ok(None);
        }
        let mut filled = 0;
        while filled < self.bytes.len() {
            match self.source.read(&mut self.bytes[filled..]) {
                Ok(0) => {
                    self.at_eof = true;
                    break;
                }
                Ok(count) => filled += count,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(DecodeError::Io(error)),
            }
        }
        self.total_bytes += filled as u64;
        let bytes_per_frame = self.format.encoding.bytes_per_sample() * usize::from(self.format.channels);
        let whole = filled - filled % bytes_per_frame;
        if whole == 0 {
            return Ok(None);
        }
        convert_raw(self.format.encoding, &self.bytes[..whole], samples);
        Ok(Some(0..samples.len()))
    }
}

/// Converts raw PCM bytes (a whole number of samples) into `out`, replacing its contents.
///
/// Integers are scaled by 2^(bits-1), so full scale is [-1, 1); G.711 is expanded to 16-bit
/// linear first (ITU-T G.711, as in the reference `g711.c`).
fn convert_raw(encoding: RawEncoding, bytes: &[u8], out: &mut Vec<f32>) {
    out.clear();
    match encoding {
        RawEncoding::U8 => {
            out.extend(bytes.iter().map(|&byte| (f32::from(byte) - 128.0) * (1.0 / 128.0)));
        }
        RawEncoding::S8 => {
            out.extend(bytes.iter().map(|&byte| f32::from(byte as i8) * (1.0 / 128.0)));
        }
        RawEncoding::S16le => {
            out.extend(bytes.chunks_exact(2).map(|b| f32::from(i16::from_le_bytes([b[0], b[1]])) * (1.0 / 32768.0)))
        }
        RawEncoding::S16be => {
            out.extend(bytes.chunks_exact(2).map(|b| f32::from(i16::from_be_bytes([b[0], b[1]])) * (1.0 / 32768.0)))
        }
        RawEncoding::S24le => out.extend(bytes.chunks_exact(3).map(|b| {
            // Place the 24 bits at the top of an i32, then shift down to sign-extend.
            let value = i32::from_le_bytes([0, b[0], b[1], b[2]]) >> 8;
            value as f32 * (1.0 / 8_388_608.0)
        })),
        RawEncoding::S32le => out.extend(
            bytes
                .chunks_exact(4)
                .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f32 * (1.0 / 2_147_483_648.0)),
        ),
        RawEncoding::F32le => out.extend(bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))),
        RawEncoding::F64le => out.extend(
            bytes.chunks_exact(8).map(|b| f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32),
        ),
        RawEncoding::Alaw => {
            out.extend(bytes.iter().map(|&byte| f32::from(ALAW_TO_LINEAR[usize::from(byte)]) * (1.0 / 32768.0)))
        }
        RawEncoding::Mulaw => {
            out.extend(bytes.iter().map(|&byte| f32::from(MULAW_TO_LINEAR[usize::from(byte)]) * (1.0 / 32768.0)))
        }
    }
}

/// G.711 A-law to 16-bit linear, indexed by the coded byte.
static ALAW_TO_LINEAR: [i16; 256] = {
    let mut table = [0i16; 256];
    let mut code = 0;
    while code < 256 {
        let value = (code as u8) ^ 0x55;
        let mantissa = ((value & 0x0f) as i16) << 4;
        let segment = (value & 0x70) >> 4;
        let magnitude = match segment {
            0 => mantissa + 8,
            _ => (mantissa + 0x108) << (segment - 1),
        };
        table[code] = if value & 0x80 != 0 { magnitude } else { -magnitude };
        code += 1;
    }
    table
};

/// G.711 mu-law to 16-bit linear, indexed by the coded byte.
static MULAW_TO_LINEAR: [i16; 256] = {
    const BIAS: i16 = 0x84;
    let mut table = [0i16; 256];
    let mut code = 0;
    while code < 256 {
        let value = !(code as u8);
        let mut magnitude = (((value & 0x0f) as i16) << 3) + BIAS;
        magnitude <<= (value & 0x70) >> 4;
        table[code] = if value & 0x80 != 0 { BIAS - magnitude } else { magnitude - BIAS };
        code += 1;
    }
    table
};

/// Probes the shared source for a container, by content only.
fn probe(shared: &SharedSource) -> Result<Result<Box<dyn FormatReader>, ProbeFailure>, DecodeError> {
    guard_panic("probing the container", || {
        let stream = MediaSourceStream::new(Box::new(shared.clone()), Default::default());
        symphonia::default::get_probe()
            .probe(&Hint::new(), stream, FormatOptions::default(), MetadataOptions::default())
            .map_err(ProbeFailure::from_symphonia)
    })
}

/// Why probing did not produce a format reader.
enum ProbeFailure {
    /// No container marker matched: the bytes may be headerless PCM.
    NotRecognised { detail: String },
    /// A container was recognised but its header could not be used.
    Rejected(DecodeError),
}

impl ProbeFailure {
    fn from_symphonia(error: SymphoniaError) -> Self {
        match error {
            SymphoniaError::Unsupported(what) if what.starts_with("core (probe)") => {
                ProbeFailure::NotRecognised { detail: what.to_string() }
            }
            SymphoniaError::IoError(error) if error.kind() == io::ErrorKind::UnexpectedEof => {
                ProbeFailure::NotRecognised {
                    detail: "the bytes ended before any known header was complete".to_string(),
                }
            }
            SymphoniaError::IoError(error) => ProbeFailure::Rejected(DecodeError::Io(error)),
            SymphoniaError::Unsupported(what) => {
                ProbeFailure::Rejected(DecodeError::UnsupportedCodec { codec: what.to_string() })
            }
            other => ProbeFailure::Rejected(DecodeError::InvalidHeader { detail: other.to_string() }),
        }
    }
}

/// Runs a symphonia call, turning a panic on hostile input into a [`DecodeError::Corrupt`].
///
/// Symphonia's readers and decoders have panicked on malformed input before (slice indexing,
/// arithmetic overflow); one bad file must not take down a worker that processes thousands.
fn guard_panic<T>(stage: &str, call: impl FnOnce() -> T) -> Result<T, DecodeError> {
    catch_unwind(AssertUnwindSafe(call))
        .map_err(|_| DecodeError::Corrupt { detail: format!("decoder panicked while {stage}") })
}

/// The codecs we decode: symphonia's enabled codecs plus libopus for Opus.
fn codec_registry() -> &'static CodecRegistry {
    static REGISTRY: OnceLock<CodecRegistry> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        let mut registry = CodecRegistry::new();
        symphonia::default::register_enabled_codecs(&mut registry);
        registry.register_audio_decoder::<symphonia_adapter_libopus::OpusDecoder>();
        registry
    })
}

/// Our lowercase container names for symphonia's format short names.
fn container_name(symphonia_name: &'static str) -> &'static str {
    match symphonia_name {
        "wave" => "wav",
        "isomp4" => "mp4",
        "matroska" => "mkv",
        other => other,
    }
}

/// The codec's short name (`pcm_s16le`, `aac`), or its id when no decoder knows it.
fn codec_name(registry: &CodecRegistry, codec: AudioCodecId) -> String {
    registry
        .get_audio_decoder(codec)
        .map_or_else(|| format!("codec id {codec}"), |decoder| decoder.codec.info.short_name.into())
}

/// The default audio track: the first flagged default with a decoder, else the first with one.
fn select_audio_track(
    format: &dyn FormatReader,
    registry: &CodecRegistry,
) -> Result<(Track, AudioCodecParameters), DecodeError> {
    let audio_tracks: Vec<_> = format
        .tracks()
        .iter()
        .filter_map(|track| match &track.codec_params {
            Some(CodecParameters::Audio(params)) => Some((track, params)),
            _ => None,
        })
        .collect();
    let decodable = |params: &AudioCodecParameters| registry.get_audio_decoder(params.codec).is_some();
    let chosen = audio_tracks
        .iter()
        .find(|(track, params)| track.flags.contains(TrackFlags::DEFAULT) && decodable(params))
        .or_else(|| audio_tracks.iter().find(|(_, params)| decodable(params)));
    match (chosen, audio_tracks.first()) {
        (Some((track, params)), _) => Ok(((*track).clone(), (*params).clone())),
        (None, Some((_, params))) => Err(DecodeError::UnsupportedCodec { codec: codec_name(registry, params.codec) }),
        (None, None) => Err(DecodeError::InvalidHeader { detail: "the container has no audio track".into() }),
    }
}

/// Most bytes kept from a non-seekable source while probing, so they can be replayed as raw PCM.
const MAX_RECORDED_PROBE_BYTES: usize = 4 * 1024 * 1024;

/// The caller's source, shared between symphonia's reader and this module.
///
/// Symphonia's probe takes the stream by value and drops it on failure; sharing lets the bytes
/// be re-read as raw PCM afterwards, and lets the MP4 edit list be read beside the reader.
#[derive(Clone)]
struct SharedSource(Arc<Mutex<SourceState>>);

impl SharedSource {
    fn new(inner: Box<dyn MediaSource>) -> Self {
        let seekable = inner.is_seekable();
        let byte_len = inner.byte_len();
        SharedSource(Arc::new(Mutex::new(SourceState {
            inner,
            seekable,
            byte_len,
            recorded: if seekable { None } else { Some(Vec::new()) },
            recording: !seekable,
            replay_from: None,
            total_bytes_read: 0,
            position: 0,
            present_as_streamed_riff: false,
            patches: Vec::new(),
            end: None,
        })))
    }

    fn with_state<T>(&self, action: impl FnOnce(&mut SourceState) -> T) -> T {
        action(&mut self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn total_bytes_read(&self) -> u64 {
        self.with_state(|state| state.total_bytes_read)
    }

    /// Takes the source back once symphonia has dropped its handle.
    fn into_state(self) -> Result<SourceState, DecodeError> {
        match Arc::try_unwrap(self.0) {
            Ok(mutex) => Ok(mutex.into_inner().unwrap_or_else(PoisonError::into_inner)),
            Err(_) => {
                Err(DecodeError::Corrupt { detail: "internal: source still held by the container reader".into() })
            }
        }
    }
}

impl Read for SharedSource {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.with_state(|state| state.read(buf))
    }
}

impl Seek for SharedSource {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.with_state(|state| {
            // Seeks from the end count from the logical end (before trailing tags).
            let pos = match (pos, state.end) {
                (SeekFrom::End(offset), Some(end)) => SeekFrom::Start(end.saturating_add_signed(offset)),
                (pos, _) => pos,
            };
            let position = state.inner.seek(pos)?;
            state.position = position;
            Ok(position)
        })
    }
}

impl MediaSource for SharedSource {
    fn is_seekable(&self) -> bool {
        self.with_state(|state| state.seekable)
    }

    fn byte_len(&self) -> Option<u64> {
        self.with_state(|state| state.end.or(state.byte_len))
    }
}

/// The caller's source plus what is needed to read it again from the start.
struct SourceState {
    inner: Box<dyn MediaSource>,
    seekable: bool,
    byte_len: Option<u64>,
    /// Non-seekable sources: the bytes read so far (`None` once more than the limit was read).
    recorded: Option<Vec<u8>>,
    /// Whether bytes read from `inner` are appended to `recorded` (only while probing).
    recording: bool,
    /// While replaying recorded bytes: the position in `recorded`.
    replay_from: Option<usize>,
    total_bytes_read: u64,
    /// Offset of the next byte `read` returns.
    position: u64,
    /// Present the first 8 bytes as `RIFF` with size 0xFFFFFFFF ("unknown").
    present_as_streamed_riff: bool,
    /// Further bytes presented in place of the file's (offset, bytes): lenient headers.
    patches: Vec<(u64, Vec<u8>)>,
    /// Where the audio data ends, when trailing tags follow it (ID3v1, APEv2).
    end: Option<u64>,
}

impl SourceState {
    /// Positions the source at its first byte again.
    fn rewind(&mut self) -> Result<(), DecodeError> {
        self.position = 0;
        if self.seekable {
            self.inner.seek(SeekFrom::Start(0))?;
            return Ok(());
        }
        if self.recorded.is_none() {
            return Err(DecodeError::Unrecognised {
                detail: format!(
                    "no known container found and the unseekable input is longer than {} bytes, \
                     too long to re-read as raw PCM",
                    MAX_RECORDED_PROBE_BYTES
                ),
            });
        }
        self.replay_from = Some(0);
        Ok(())
    }

    /// Stops keeping read bytes for replay (a reader has been chosen); frees them when unused.
    fn stop_recording(&mut self) {
        self.recording = false;
        if self.replay_from.is_none() {
            self.recorded = None;
        }
    }

    /// What kind of RIFF WAVE header the source begins with; leaves the source at its start.
    fn riff_kind(&mut self) -> RiffKind {
        if self.rewind().is_err() {
            return RiffKind::Other;
        }
        let mut header = [0u8; 12];
        let complete = self.read_exact(&mut header).is_ok();
        if self.rewind().is_err() || !complete || &header[8..] != b"WAVE" {
            return RiffKind::Other;
        }
        match &header[..4] {
            b"RIFF" => RiffKind::Wave,
            b"RF64" | b"BW64" => RiffKind::Rf64,
            _ => RiffKind::Other,
        }
    }

    /// Looks through a seekable RIFF WAVE file's chunk headers for two header lies that readers
    /// trip over, and presents corrected bytes in their place; returns what was corrected.
    ///
    /// - A `data` size of 0 with bytes after it: a recorder that never finished its header
    ///   (libsndfile returns zero samples for these). The data is read to the end of the file, as
    ///   for a streamed WAV.
    /// - PCM whose bits per sample are not a whole number of bytes (12 bits in 16-bit containers):
    ///   the samples are left-justified in their containers, so they are read as the container.
    ///
    /// Reads only chunk headers and the `fmt ` body, at most 256 chunks; never allocates from a
    /// declared size. Leaves the source at its start.
    fn patch_wav_header(&mut self) -> Vec<String> {
        let mut warnings = Vec::new();
        let Some(byte_len) = self.byte_len.filter(|_| self.seekable) else {
            return warnings;
        };
        if self.riff_kind() != RiffKind::Wave {
            return warnings;
        }
        let mut position = 12u64;
        for _ in 0..256 {
            if position + 8 > byte_len || self.inner.seek(SeekFrom::Start(position)).is_err() {
                break;
            }
            let mut header = [0u8; 8];
            if self.inner.read_exact(&mut header).is_err() {
                break;
            }
            let size = u64::from(u32::from_le_bytes([header[4], header[5], header[6], header[7]]));
            match &header[..4] {
                b"fmt " if size >= 16 => {
                    let mut fmt = [0u8; 16];
                    if self.inner.read_exact(&mut fmt).is_err() {
                        break;
                    }
                    let tag = u16::from_le_bytes([fmt[0], fmt[1]]);
                    let channels = u16::from_le_bytes([fmt[2], fmt[3]]);
                    let block_align = u16::from_le_bytes([fmt[12], fmt[13]]);
                    let bits = u16::from_le_bytes([fmt[14], fmt[15]]);
                    let container_bits =
                        u32::from(block_align).checked_div(u32::from(channels)).map_or(0, |bytes| bytes * 8);
                    let bits = u32::from(bits);
                    if tag == 1 && bits % 8 != 0 && bits < container_bits && [16, 24, 32].contains(&container_bits) {
                        self.patches.push((position + 8 + 14, (container_bits as u16).to_le_bytes().to_vec()));
                        warnings.push(format!(
                            "{bits}-bit samples in {container_bits}-bit containers were read as {container_bits}-bit"
                        ));
                    }
                }
                b"data" => {
                    if size > byte_len.saturating_sub(position + 8) + 1 {
                        warnings.push(format!(
                            "the wav header declares {size} bytes of audio but the file holds {}; \
                             read what is there",
                            byte_len.saturating_sub(position + 8)
                        ));
                    }
                    if size == 0 && position + 8 < byte_len {
                        self.patches.push((position + 4, vec![0xFF; 4]));
                        self.present_as_streamed_riff = true;
                        warnings.push(
                            "the wav header declares 0 bytes of audio (an unfinished recording?); \
                             the data was read to the end of the file"
                                .to_string(),
                        );
                    }
                    break;
                }
                _ => {}
            }
            position += 8 + size + (size & 1);
        }
        let _ = self.rewind();
        warnings
    }

    /// Finds tags that lie about their size or sit after the audio, and hides them from the
    /// container readers; returns what was done. Seekable sources only; leaves the source at
    /// its start.
    ///
    /// - An ID3v2 tag at the start whose declared size runs past the end of the file: its size
    ///   is presented as 0, so the reader looks for audio right after the tag header.
    /// - ID3v1 (`TAG`, 128 bytes) and APEv2 (`APETAGEX` footer) tags at the end: the audio is
    ///   presented as ending before them (FLAC's reader otherwise loses its last frame).
    fn hide_tags(&mut self) -> Vec<String> {
        let mut warnings = Vec::new();
        let Some(byte_len) = self.byte_len.filter(|_| self.seekable) else {
            return warnings;
        };
        let read_at = |state: &mut Self, at: u64, buf: &mut [u8]| -> bool {
            state.inner.seek(SeekFrom::Start(at)).is_ok() && state.inner.read_exact(buf).is_ok()
        };
        let mut id3 = [0u8; 10];
        if byte_len >= 10 && read_at(self, 0, &mut id3) && &id3[..3] == b"ID3" {
            let size = id3[6..10].iter().fold(0u64, |size, &byte| (size << 7) | u64::from(byte & 0x7F));
            let footer = if id3[5] & 0x10 != 0 { 10 } else { 0 };
            if 10 + size + footer > byte_len {
                self.patches.push((6, vec![0; 4]));
                warnings.push(format!("the ID3v2 tag declares {size} bytes, more than the file holds; it was skipped"));
            }
        }
        let mut end = byte_len;
        let mut tail = [0u8; 3];
        if end >= 128 && read_at(self, end - 128, &mut tail) && &tail == b"TAG" {
            end -= 128;
        }
        let mut ape = [0u8; 32];
        if end >= 32 && read_at(self, end - 32, &mut ape) && &ape[..8] == b"APETAGEX" {
            let size = u64::from(u32::from_le_bytes([ape[12], ape[13], ape[14], ape[15]]));
            let flags = u32::from_le_bytes([ape[20], ape[21], ape[22], ape[23]]);
            let header = if flags & 0x8000_0000 != 0 { 32 } else { 0 };
            end = end.saturating_sub(size + header);
        }
        if end < byte_len {
            self.end = Some(end);
        }
        let _ = self.rewind();
        warnings
    }

    /// Reads without the RIFF size rewrite.
    fn read_unpatched(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let (Some(position), Some(recorded)) = (self.replay_from, self.recorded.as_ref()) {
            let remaining = &recorded[position.min(recorded.len())..];
            if !remaining.is_empty() {
                let count = remaining.len().min(buf.len());
                buf[..count].copy_from_slice(&remaining[..count]);
                self.replay_from = Some(position + count);
                return Ok(count);
            }
            self.replay_from = None;
            if !self.recording {
                self.recorded = None;
            }
        }
        let count = self.inner.read(buf)?;
        self.total_bytes_read += count as u64;
        if !self.recording {
            return Ok(count);
        }
        if let Some(recorded) = self.recorded.as_mut() {
            if recorded.len() + count > MAX_RECORDED_PROBE_BYTES {
                self.recorded = None;
            } else {
                recorded.extend_from_slice(&buf[..count]);
            }
        }
        Ok(count)
    }
}

impl Read for SourceState {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let start = self.position;
        let buf = match self.end {
            Some(end) if start >= end => return Ok(0),
            Some(end) => {
                let room = (end - start).min(buf.len() as u64) as usize;
                &mut buf[..room]
            }
            None => buf,
        };
        let count = self.read_unpatched(buf)?;
        self.position = start + count as u64;
        if self.present_as_streamed_riff && start < 8 {
            const STREAMED_RIFF_HEADER: [u8; 8] = *b"RIFF\xff\xff\xff\xff";
            for (offset, byte) in buf[..count].iter_mut().enumerate() {
                if let Some(&patched) = STREAMED_RIFF_HEADER.get((start + offset as u64) as usize) {
                    *byte = patched;
                }
            }
        }
        let end = start + count as u64;
        for (at, bytes) in &self.patches {
            for (index, &patched) in bytes.iter().enumerate() {
                let offset = at + index as u64;
                if (start..end).contains(&offset) {
                    buf[(offset - start) as usize] = patched;
                }
            }
        }
        Ok(count)
    }
}

/// The kind of header a file starts with, for lenient WAV handling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RiffKind {
    /// `RIFF....WAVE`.
    Wave,
    /// `RF64....WAVE` or `BW64....WAVE`.
    Rf64,
    /// Anything else.
    Other,
}

/// The sample count of an RF64 `ds64` chunk (when it directly follows `WAVE`), if non-zero.
fn rf64_sample_count(state: &mut SourceState) -> Option<u64> {
    if !state.seekable {
        return None;
    }
    let saved = state.inner.stream_position().ok()?;
    let mut chunk = [0u8; 36];
    let read = state.inner.seek(SeekFrom::Start(12)).and_then(|_| state.inner.read_exact(&mut chunk));
    state.inner.seek(SeekFrom::Start(saved)).ok()?;
    read.ok()?;
    // ds64: riff size, data size, sample count (all u64), then a table.
    if &chunk[..4] != b"ds64" {
        return None;
    }
    let sample_count = u64::from_le_bytes(chunk[24..32].try_into().ok()?);
    (sample_count > 0).then_some(sample_count)
}

/// The frame count of a WAV file's `fact` chunk, read beside symphonia's reader.
///
/// Only seekable sources; the position is restored.
fn wav_fact_frames(state: &mut SourceState) -> Option<u64> {
    if !state.seekable {
        return None;
    }
    let saved = state.inner.stream_position().ok()?;
    let frames = find_wav_fact(state.inner.as_mut());
    state.inner.seek(SeekFrom::Start(saved)).ok()?;
    frames
}

/// Walks the RIFF chunk headers after `WAVE` (seeking over bodies) to the `fact` chunk.
fn find_wav_fact(source: &mut dyn MediaSource) -> Option<u64> {
    let mut position = 12u64;
    for _ in 0..256 {
        source.seek(SeekFrom::Start(position)).ok()?;
        let mut header = [0u8; 8];
        source.read_exact(&mut header).ok()?;
        let size = u64::from(u32::from_le_bytes([header[4], header[5], header[6], header[7]]));
        if &header[..4] == b"fact" {
            let mut frames = [0u8; 4];
            source.read_exact(&mut frames).ok()?;
            return Some(u64::from(u32::from_le_bytes(frames)));
        }
        // Chunks are padded to an even length.
        position = position.checked_add(8 + size + (size & 1))?;
    }
    None
}

/// Frames to drop at the start and keep in total, from an MP4 edit list or `iTunSMPB` tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct GaplessTrim {
    skip_frames: u64,
    keep_frames: Option<u64>,
}

/// Most bytes of an MP4 `moov` box read to find the edit list.
const MAX_MOOV_BYTES: u64 = 16 * 1024 * 1024;

/// Reads the gapless trim of one MP4 track beside symphonia's reader, restoring the position.
///
/// Only seekable sources: the `moov` box is often at the end (ffmpeg's default).
fn mp4_gapless_trim(state: &mut SourceState, track_id: u32, out_rate: u32) -> Option<GaplessTrim> {
    if !state.seekable {
        return None;
    }
    let saved = state.inner.stream_position().ok()?;
    let moov = read_top_level_moov(state.inner.as_mut());
    state.inner.seek(SeekFrom::Start(saved)).ok()?;
    let moov = moov?;
    parse_moov_trim(&moov, track_id, out_rate)
}

/// Walks the top-level boxes by their headers (seeking over `mdat`) and reads `moov`.
fn read_top_level_moov(source: &mut dyn MediaSource) -> Option<Vec<u8>> {
    let mut position = 0u64;
    for _ in 0..1024 {
        source.seek(SeekFrom::Start(position)).ok()?;
        let mut header = [0u8; 8];
        source.read_exact(&mut header).ok()?;
        let size32 = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
        let (size, header_len) = match size32 {
            1 => {
                let mut large = [0u8; 8];
                source.read_exact(&mut large).ok()?;
                (u64::from_be_bytes(large), 16)
            }
            0 => (u64::MAX, 8),
            small => (u64::from(small), 8),
        };
        if size < header_len {
            return None;
        }
        if &header[4..8] == b"moov" {
            let mut moov = Vec::new();
            source.take((size - header_len).min(MAX_MOOV_BYTES)).read_to_end(&mut moov).ok()?;
            return Some(moov);
        }
        position = position.checked_add(size)?;
    }
    None
}

/// Iterates the child boxes of a box body: `(type, body)`; stops at the first malformed one.
fn child_boxes(mut data: &[u8]) -> impl Iterator<Item = ([u8; 4], &[u8])> {
    std::iter::from_fn(move || {
        if data.len() < 8 {
            return None;
        }
        let size32 = u32::from_be_bytes([data[0], data[1], data[2], data[3]]) as usize;
        let kind = [data[4], data[5], data[6], data[7]];
        let (size, header_len) = match size32 {
            0 => (data.len(), 8),
            1 => {
                let large = data.get(8..16)?;
                let large = u64::from_be_bytes(large.try_into().ok()?);
                (usize::try_from(large).ok()?, 16)
            }
            small => (small, 8),
        };
        if size < header_len || size > data.len() {
            data = &[];
            return None;
        }
        let body = &data[header_len..size];
        data = &data[size..];
        Some((kind, body))
    })
}

fn find_child<'a>(data: &'a [u8], kind: &[u8; 4]) -> Option<&'a [u8]> {
    child_boxes(data).find(|(child_kind, _)| child_kind == kind).map(|(_, body)| body)
}

fn be_u32(data: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(data.get(at..at + 4)?.try_into().ok()?))
}

fn be_u64(data: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(data.get(at..at + 8)?.try_into().ok()?))
}

/// The timescale of an `mvhd` or `mdhd` body (same layout up to the timescale).
fn header_timescale(body: &[u8]) -> Option<u32> {
    match body.first()? {
        0 => be_u32(body, 12),
        1 => be_u32(body, 20),
        _ => None,
    }
}

/// Rescales `value` ticks of `from` per second into ticks of `to` per second, rounding.
fn rescale(value: u64, from: u32, to: u32) -> Option<u64> {
    if from == 0 {
        return None;
    }
    let scaled = (u128::from(value) * u128::from(to) + u128::from(from) / 2) / u128::from(from);
    u64::try_from(scaled).ok()
}

/// Finds the gapless trim for `track_id` in a `moov` body: edit list first, then `iTunSMPB`.
fn parse_moov_trim(moov: &[u8], track_id: u32, out_rate: u32) -> Option<GaplessTrim> {
    let movie_timescale = find_child(moov, b"mvhd").and_then(header_timescale);
    let trak = child_boxes(moov).filter(|(kind, _)| kind == b"trak").map(|(_, body)| body).find(|trak| {
        let tkhd = find_child(trak, b"tkhd");
        let id = tkhd.and_then(|body| match body.first()? {
            0 => be_u32(body, 12),
            1 => be_u32(body, 20),
            _ => None,
        });
        id == Some(track_id)
    });
    if let (Some(trak), Some(movie_timescale)) = (trak, movie_timescale) {
        let media_timescale =
            find_child(trak, b"mdia").and_then(|mdia| find_child(mdia, b"mdhd")).and_then(header_timescale);
        let elst = find_child(trak, b"edts").and_then(|edts| find_child(edts, b"elst"));
        if let (Some(media_timescale), Some(elst)) = (media_timescale, elst)
            && let Some(trim) = edit_list_trim(elst, movie_timescale, media_timescale, out_rate)
        {
            return Some(trim);
        }
    }
    itunsmpb_trim(moov)
}

/// The first non-empty edit: skip its media start, keep its duration. Empty edits (inserted
/// silence) are ignored, as are further edits.
fn edit_list_trim(elst: &[u8], movie_timescale: u32, media_timescale: u32, out_rate: u32) -> Option<GaplessTrim> {
    let version = *elst.first()?;
    let count = be_u32(elst, 4)?;
    let entry_len = if version == 1 { 20 } else { 12 };
    for index in 0..count.min(64) as usize {
        let at = 8 + index * entry_len;
        let (segment_duration, media_time) = if version == 1 {
            (be_u64(elst, at)?, be_u64(elst, at + 8)? as i64)
        } else {
            (u64::from(be_u32(elst, at)?), i64::from(be_u32(elst, at + 4)? as i32))
        };
        if media_time < 0 {
            continue;
        }
        let skip_frames = rescale(media_time as u64, media_timescale, out_rate)?;
        let keep_frames =
            if segment_duration == 0 { None } else { Some(rescale(segment_duration, movie_timescale, out_rate)?) };
        return Some(GaplessTrim { skip_frames, keep_frames });
    }
    None
}

/// Apple's `iTunSMPB` freeform tag: ` 00000000 DELAY PADDING TOTAL ...` in hexadecimal.
fn itunsmpb_trim(moov: &[u8]) -> Option<GaplessTrim> {
    let meta = find_child(find_child(moov, b"udta")?, b"meta")?;
    // ISO `meta` is a full box (4 bytes of version and flags); QuickTime's is not.
    let meta_children = if meta.get(4..8) == Some(b"hdlr") { meta } else { meta.get(4..)? };
    let ilst = find_child(meta_children, b"ilst")?;
    for (kind, item) in child_boxes(ilst) {
        if &kind != b"----" {
            continue;
        }
        let is_smpb = find_child(item, b"name").and_then(|name| name.get(4..)).is_some_and(|name| name == b"iTunSMPB");
        if !is_smpb {
            continue;
        }
        let text = find_child(item, b"data")?.get(8..)?;
        let text = std::str::from_utf8(text).ok()?;
        let fields: Vec<u64> =
            text.split_whitespace().map(|field| u64::from_str_radix(field, 16)).collect::<Result<_, _>>().ok()?;
        let (&delay, &total) = (fields.get(1)?, fields.get(3)?);
        return Some(GaplessTrim { skip_frames: delay, keep_frames: if total == 0 { None } else { Some(total) } });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_format_parses_and_displays_round_trip() {
        let format: RawFormat = "s16le,16000,1".parse().unwrap();
        assert_eq!(format, RawFormat { encoding: RawEncoding::S16le, sample_rate: 16000, channels: 1 });
        assert_eq!(format.to_string(), "s16le,16000,1");
        for encoding in RawEncoding::ALL {
            let format = RawFormat { encoding, sample_rate: 8000, channels: 2 };
            assert_eq!(format.to_string().parse::<RawFormat>().unwrap(), format);
        }
    }

    #[test]
    fn raw_format_parsing_is_lenient_about_case_and_spaces() {
        let format: RawFormat = " MULAW , 8000 , 2 ".parse().unwrap();
        assert_eq!(format, RawFormat { encoding: RawEncoding::Mulaw, sample_rate: 8000, channels: 2 });
        assert_eq!("ulaw,8000,1".parse::<RawFormat>().unwrap().encoding, RawEncoding::Mulaw);
    }

    #[test]
    fn raw_format_rejects_bad_text() {
        for bad in [
            "",
            "s16le",
            "s16le,16000",
            "s16le,16000,1,2",
            "s17le,16000,1",
            "s16le,0,1",
            "s16le,16000,0",
            "s16le,-5,1",
            "s16le,16000,70000",
            "s16le,abc,1",
        ] {
            assert!(bad.parse::<RawFormat>().is_err(), "{bad:?} should not parse");
        }
        let error = "pcm,16000,1".parse::<RawFormat>().unwrap_err();
        assert!(error.contains("s16le"), "error should list the known encodings: {error}");
    }

    fn convert(encoding: RawEncoding, bytes: &[u8]) -> Vec<f32> {
        let mut out = vec![99.0; 3];
        convert_raw(encoding, bytes, &mut out);
        out
    }

    #[test]
    fn integer_conversions_scale_to_unit_range() {
        assert_eq!(convert(RawEncoding::U8, &[0, 128, 255, 192]), [-1.0, 0.0, 127.0 / 128.0, 0.5]);
        assert_eq!(convert(RawEncoding::S8, &[0x80, 0, 0x7f, 0x40]), [-1.0, 0.0, 127.0 / 128.0, 0.5]);
        assert_eq!(convert(RawEncoding::S16le, &[0x00, 0x80, 0x00, 0x40, 0xff, 0xff]), [-1.0, 0.5, -1.0 / 32768.0]);
        assert_eq!(convert(RawEncoding::S16be, &[0x80, 0x00, 0x40, 0x00]), [-1.0, 0.5]);
        assert_eq!(
            convert(RawEncoding::S24le, &[0x00, 0x00, 0x80, 0x00, 0x00, 0x40, 0xff, 0xff, 0xff]),
            [-1.0, 0.5, -1.0 / 8_388_608.0]
        );
        assert_eq!(convert(RawEncoding::S32le, &[0, 0, 0, 0x80, 0, 0, 0, 0x40]), [-1.0, 0.5]);
    }

    #[test]
    fn float_conversions_pass_values_through_including_non_finite() {
        let mut bytes = Vec::new();
        for value in [0.25f32, -1.5, f32::NAN, f32::INFINITY] {
            bytes.extend_from_slice(&value.to_le_bytes());
        }
        let out = convert(RawEncoding::F32le, &bytes);
        assert_eq!(out[..2], [0.25, -1.5]);
        assert!(out[2].is_nan());
        assert_eq!(out[3], f32::INFINITY);

        let mut bytes = Vec::new();
        for value in [0.5f64, f64::NEG_INFINITY] {
            bytes.extend_from_slice(&value.to_le_bytes());
        }
        assert_eq!(convert(RawEncoding::F64le, &bytes), [0.5, f32::NEG_INFINITY]);
    }

    #[test]
    fn partial_samples_at_the_end_are_ignored() {
        assert_eq!(convert(RawEncoding::S16le, &[0x00, 0x40, 0x12]), [0.5]);
        assert!(convert(RawEncoding::F64le, &[0; 7]).is_empty());
    }

    #[test]
    fn alaw_matches_g711_reference_values() {
        // Known answers from the ITU-T G.711 reference decoder (g711.c alaw2linear).
        let expected: [(u8, i16); 6] = [(0xd5, 8), (0x55, -8), (0xaa, 32256), (0x2a, -32256), (0xd4, 24), (0xc5, 264)];
        for (code, linear) in expected {
            assert_eq!(ALAW_TO_LINEAR[usize::from(code)], linear, "A-law code {code:#04x}");
        }
        assert_eq!(convert(RawEncoding::Alaw, &[0xaa]), [32256.0 / 32768.0]);
    }

    #[test]
    fn mulaw_matches_g711_reference_values() {
        // Known answers from the ITU-T G.711 reference decoder (g711.c ulaw2linear).
        let expected: [(u8, i16); 6] = [(0xff, 0), (0x7f, 0), (0x80, 32124), (0x00, -32124), (0xfe, 8), (0x7e, -8)];
        for (code, linear) in expected {
            assert_eq!(MULAW_TO_LINEAR[usize::from(code)], linear, "mu-law code {code:#04x}");
        }
    }

    #[test]
    fn g711_tables_are_odd_symmetric_and_monotonic_per_sign() {
        for code in 0..128usize {
            assert_eq!(ALAW_TO_LINEAR[code], -ALAW_TO_LINEAR[code | 0x80]);
            assert_eq!(MULAW_TO_LINEAR[code], -MULAW_TO_LINEAR[code | 0x80]);
        }
        // mu-law: codes 0x80..=0xff go from the largest positive value down to zero.
        for code in 0x80..0xffusize {
            assert!(MULAW_TO_LINEAR[code] > MULAW_TO_LINEAR[code + 1]);
        }
    }

    fn mp4_box(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut out = ((body.len() + 8) as u32).to_be_bytes().to_vec();
        out.extend_from_slice(kind);
        out.extend_from_slice(body);
        out
    }

    fn full_box_v0(kind: &[u8; 4], fields: &[u32]) -> Vec<u8> {
        let mut body = vec![0u8; 4];
        for field in fields {
            body.extend_from_slice(&field.to_be_bytes());
        }
        mp4_box(kind, &body)
    }

    #[test]
    fn mp4_edit_list_gives_priming_skip_and_valid_length() {
        // ffmpeg's AAC-in-M4A at 16 kHz: movie timescale 1000, media timescale 16000, one edit
        // that starts 1024 samples into the media and lasts 7.1 s.
        let mvhd = full_box_v0(b"mvhd", &[0, 0, 1000, 7164]);
        let tkhd = full_box_v0(b"tkhd", &[0, 0, 1, 0, 7100]);
        let mdhd = full_box_v0(b"mdhd", &[0, 0, 16000, 114688]);
        let elst = full_box_v0(b"elst", &[1, 7100, 1024, 0x0001_0000]);
        let trak = mp4_box(b"trak", &[tkhd, mp4_box(b"edts", &elst), mp4_box(b"mdia", &mdhd)].concat());
        let moov = [mvhd, trak].concat();
        assert_eq!(
            parse_moov_trim(&moov, 1, 16000),
            Some(GaplessTrim { skip_frames: 1024, keep_frames: Some(113_600) })
        );
        assert_eq!(parse_moov_trim(&moov, 2, 16000), None, "other track ids are not used");
    }

    #[test]
    fn mp4_itunsmpb_is_used_without_an_edit_list() {
        let text = b" 00000000 00000840 000001CA 00000000001BBA36 00000000";
        let mut data_body = vec![0, 0, 0, 1, 0, 0, 0, 0];
        data_body.extend_from_slice(text);
        let mut name_body = vec![0u8; 4];
        name_body.extend_from_slice(b"iTunSMPB");
        let item = mp4_box(b"----", &[mp4_box(b"name", &name_body), mp4_box(b"data", &data_body)].concat());
        let ilst = mp4_box(b"ilst", &item);
        let mut meta_body = vec![0u8; 4];
        meta_body.extend_from_slice(&ilst);
        let moov = mp4_box(b"udta", &mp4_box(b"meta", &meta_body));
        assert_eq!(
            parse_moov_trim(&moov, 1, 44100),
            Some(GaplessTrim { skip_frames: 0x840, keep_frames: Some(0x1B_BA36) })
        );
    }

    #[test]
    fn malformed_mp4_boxes_do_not_panic() {
        for data in [
            &[0u8, 0, 0, 200, b'm', b'v', b'h', b'd'][..],
            &[0, 0, 0, 1, b't', b'r', b'a', b'k', 0xff],
            &[0, 0, 0, 4, 1, 2, 3, 4],
        ] {
            assert_eq!(parse_moov_trim(data, 1, 16000), None);
        }
    }
}
