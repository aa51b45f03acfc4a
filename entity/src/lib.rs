//! SeaORM 2 entity definitions for latchkey's database: one module per table
//! (module name = table name) plus a [`prelude`] re-exporting every `Entity`
//! under a CamelCase alias. This crate holds plain data mappings and the
//! relations between them only, with no business logic; the schema itself is
//! created by the `migration` crate, and the column attributes here (lengths,
//! uniqueness, indexes, defaults) mirror that migration. All timestamps are
//! `timestamp with time zone` mapped to [`sea_orm::prelude::DateTimeUtc`]
//! (`chrono::DateTime<Utc>`), and uuid columns map to [`uuid::Uuid`].

pub mod prelude;

pub mod audit_events;
pub mod data_keys;
pub mod devices;
pub mod keyring;
pub mod opaque_credentials;
pub mod recovery_codes;
pub mod refresh_tokens;
pub mod reset_tokens;
pub mod server_setup;
pub mod sessions;
pub mod signing_keys;
pub mod totp_credentials;
pub mod user_roles;
pub mod users;
pub mod webauthn_credentials;
