//! Domain logic: no HTTP, no SQL, no Redis commands. Callers pass the
//! current time in, so expiry, rotation and lockout are testable at any
//! instant.

mod error;
pub mod health;
pub mod keyring;
pub mod opaque;
pub mod server_setup;

pub use error::{Error, Result};
