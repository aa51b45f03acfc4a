//! Storage: the relational source of truth (sea-orm on Postgres or SQLite)
//! and the fast path (Redis or in-process). Stores know nothing of the
//! domain or HTTP; they move rows and bytes.

pub mod account;
pub mod admin;
pub mod attempts;
pub mod audit;
pub mod cleanup;
pub mod db;
pub mod devices;
mod error;
pub mod fast;
pub mod keyring;
mod scoped_pool;
pub mod server_setup;
pub mod sessions;
pub mod signing;
pub mod totp;
pub mod users;
pub mod webauthn;

pub use error::StoreError;
pub use fast::{Fast, FastStore, Keys};
