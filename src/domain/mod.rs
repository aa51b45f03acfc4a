//! Domain logic: no HTTP, no SQL, no Redis commands. Callers pass the
//! current time in, so expiry, rotation and lockout are testable at any
//! instant.
//!
//! Every operation is a method of [`core::Core`], written in the module
//! named for its feature (`login`, `sessions`, `totp`, ...). Core's parts
//! are private to this module; the helpers features share are parts of it:
//! the audit builder ([`audit::Auditor`]), the session cache
//! ([`session_cache::SessionCache`]), the keyring and the limiter. States
//! are types ([`states::Trust`], [`states::Aal`]), never strings. What the
//! HTTP layer receives is owned or re-exported here, so `http` never
//! imports `store`.

pub mod account;
pub mod admin;
pub mod audit;
pub mod audit_chain;
pub mod cleanup;
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
pub mod sealing;
pub mod server_setup;
pub mod session_cache;
pub mod sessions;
pub mod signing;
pub mod states;
pub mod tokens;
pub mod totp;
pub mod username;
pub mod webauthn;

pub use error::{Error, Result};
