//! The speechmill service: the HTTP API (axum), workers that run the clip pipeline on a blocking
//! pool, API keys, circuit breakers and graceful shutdown, around the durable queue of
//! `speechmill-queue`.
//!
//! [`Service::open`] wires a configuration into a node; [`Service::run`] takes its listener and a
//! shutdown future, so a test can bind `127.0.0.1:0` and stop it.

pub mod api;
pub mod auth;
pub mod breaker;
pub mod cache;
pub mod callbacks;
pub mod error;
pub mod model;
pub mod service;
pub mod storage;
pub mod telemetry;
pub mod worker;

pub use api::{AppState, Limits, router};
pub use service::{Service, ServiceConfig, ServiceError};
