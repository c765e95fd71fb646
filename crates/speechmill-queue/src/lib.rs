//! The job model and its stores.
