//! Audio for speechmill: decoding, resampling, loudness, measurements, enhancement and encoding.
//!
//! Invariant: this crate does no I/O beyond reading the bytes it is handed (a
//! [`symphonia::core::io::MediaSource`]) and knows nothing of files, HTTP, queues or
//! metrics. Every function here is deterministic for a given input.

pub mod decode;
pub mod encode;
pub mod enhance;
pub mod loudness;
pub mod measure;
pub mod resample;

pub use symphonia::core::io::MediaSource;
