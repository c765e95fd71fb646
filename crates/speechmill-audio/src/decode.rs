//! Streaming decoding of any supported container and codec into interleaved `f32` blocks.

use std::fmt;
use std::str::FromStr;

use symphonia::core::io::MediaSource;

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
        let _ = text;
        todo!("decode helper")
    }
}

impl fmt::Display for RawFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let _ = f;
        todo!("decode helper")
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
}

impl StreamDecoder {
    /// Opens a source, recognising its format by content (never by file name).
    ///
    /// `raw` is used only when the content is not a recognised container.
    pub fn open(source: Box<dyn MediaSource>, raw: Option<RawFormat>) -> Result<Self, DecodeError> {
        let _ = (source, raw);
        todo!("decode helper")
    }

    /// What the source is.
    pub fn info(&self) -> &SourceInfo {
        &self.info
    }

    /// The next block of interleaved samples (`info().channels` per frame), or `None` at the end.
    ///
    /// Encoder delay and padding are already removed where the container declares them.
    pub fn next_block(&mut self) -> Result<Option<&[f32]>, DecodeError> {
        todo!("decode helper")
    }
}
