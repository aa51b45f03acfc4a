//! The OPAQUE (RFC 9807) cipher suite latchkey speaks: defined once, in the
//! client crate, so that the service and its Rust clients cannot disagree
//! on it (see `latchkey_client::suite`).

pub use latchkey_client::suite::{Argon2idKsf, Suite};

pub type ServerSetup = opaque_ke::ServerSetup<Suite>;
