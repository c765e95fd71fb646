//! The per-clip pipeline of speechmill: decode, validate, standardise, measure, gate, and the
//! dataset writers.
//!
//! Invariant: processing a clip is pure and synchronous. It reads the input file it is given and
//! returns measurements, a verdict and encoded audio; it does no network or database I/O and knows
//! nothing of HTTP, queues or metrics backends. Only [`output`] and [`dataset`] write files.

pub mod cache;
pub mod clip;
pub mod config;
pub mod dataset;
pub mod gate;
pub mod inputs;
pub mod output;
pub mod reason;
pub mod samples;

pub use clip::{ClipInput, EncodedAudio, Measurements, Processed, Rejection, process_clip, process_clip_cached};
pub use config::PipelineConfig;
pub use reason::{Reason, Stage};
