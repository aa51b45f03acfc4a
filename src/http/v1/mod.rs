//! Version 1 of the API.

pub mod account;
pub mod admin;
pub mod auth;
pub mod devices;
pub mod ratelimit;
pub mod sessions;
pub mod tokens;
pub mod totp;
pub mod webauthn;
