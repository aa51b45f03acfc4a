//! latchkey: an authentication service. Clients register and log in with
//! OPAQUE (the server never sees a password), add TOTP, and hold session
//! tokens that other services validate.
//!
//! Layers, with dependencies pointing one way:
//! `http` -> `domain` -> `store` -> `entity`. `app` composes them.
#![deny(clippy::unwrap_used)]

pub mod app;
pub mod backup;
pub mod cli;
pub mod client_cli;
pub mod config;
pub mod domain;
pub mod http;
pub mod store;
pub mod telemetry;
