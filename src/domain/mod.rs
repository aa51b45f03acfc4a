//! Domain logic: no HTTP, no SQL, no Redis commands. Callers pass the
//! current time in, so expiry, rotation and lockout are testable at any
//! instant.

pub mod admin;
pub mod audit;
pub mod audit_chain;
pub mod core;
pub mod devices;
mod error;
pub mod health;
pub mod keyring;
pub mod lockout;
pub mod login;
pub mod messages;
pub mod opaque;
pub mod ratelimit;
pub mod registration;
pub mod server_setup;
pub mod sessions;
pub mod tokens;
pub mod totp;
pub mod username;

pub use error::{Error, Result};
