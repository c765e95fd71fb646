//! The per-clip pipeline of speechmill: decode, validate, standardise, measure, gate, and the
//! dataset writers.
//!
//! Invariant: this crate is pure and synchronous per clip. It reads the input bytes it is given and
//! writes only through the dataset writers; it does no network or database I/O and knows nothing of
//! HTTP, queues or metrics backends.

pub mod dataset;
